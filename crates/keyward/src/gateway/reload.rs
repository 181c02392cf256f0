//! Hot reload: the gateway as it is now, a snapshot a reload replaces.
//!
//! A request takes the snapshot current when it starts and finishes on it, so a reload
//! never changes a request half-way. Health lives in the [`HealthEngine`], outside the
//! snapshots, keyed by credential id and secret fingerprint: a reload keeps every other
//! key's health, a new secret for an existing id starts healthy (unless it was revoked
//! before), and removed credentials' records are kept for the retention period.
//!
//! Triggers: `SIGHUP`, and a watch on the config file. The watch polls the file's bytes
//! once a second (reading through symlinks, so a swapped symlink — the way Kubernetes
//! updates a mounted ConfigMap — is seen like an edit) and waits until two reads agree
//! before reloading, so a half-written file is never loaded. Polling one small file needs
//! no platform notification API and behaves the same on every filesystem, including the
//! network and overlay ones where inotify misses changes.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tracing::{error, info, warn};

use super::Gateway;
use crate::config::{Config, ConfigError};

/// The running configuration, replaceable.
#[derive(Debug)]
pub struct Live {
    current: RwLock<Arc<Gateway>>,
    source: Option<PathBuf>,
    status: Mutex<ReloadStatus>,
    /// One reload at a time: a reload reads the config and the state file (OAuth grant
    /// fingerprints), reconfigures the engine and swaps the snapshot. Two interleaved
    /// (the file watcher's and `keyward credentials import`'s admin call) could apply the
    /// older read last — putting back a revoked grant's fingerprint, so a credential just
    /// logged in again went back to disabled.
    reloading: Mutex<()>,
    /// The status page's browser sessions (see [`super::page`]).
    pub sessions: super::page::Sessions,
}

/// What the last reload did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Configurations applied so far (1 = the one loaded at start).
    pub generation: u64,
    /// The problems of the last rejected configuration, if the last attempt failed.
    pub rejected: Vec<String>,
}

/// Why a reload was not applied; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway was started without a config file (tests, the demo).
    #[error("this gateway has no config file to reload")]
    NoSource,
    /// The new file is unreadable or invalid: every problem is listed.
    #[error("config not reloaded; still serving the previous one: {0}")]
    Config(#[from] ConfigError),
    /// The upstream HTTP client could not be built.
    #[error("config not reloaded; cannot build the upstream client: {0}")]
    Client(#[from] super::upstream::ClientError),
}

impl Live {
    /// A live gateway; `source` is the config file reloads read.
    pub fn new(gw: Gateway, source: Option<PathBuf>) -> Arc<Live> {
        Arc::new(Live {
            current: RwLock::new(Arc::new(gw)),
            source,
            status: Mutex::new(ReloadStatus {
                generation: 1,
                rejected: Vec::new(),
            }),
            reloading: Mutex::new(()),
            sessions: super::page::Sessions::default(),
        })
    }

    /// The snapshot new requests use.
    pub fn current(&self) -> Arc<Gateway> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// What the last reload did.
    pub fn status(&self) -> ReloadStatus {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the config file again and, if it is valid, makes it current. On any problem
    /// the running configuration stays and every problem is logged and kept in
    /// [`Live::status`].
    pub fn reload(&self) -> Result<u64, ReloadError> {
        let path = self.source.as_deref().ok_or(ReloadError::NoSource)?;
        let _one_at_a_time = match self.reloading.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let result = self.try_reload(path);
        let mut status = match self.status.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let outcome = if result.is_ok() {
            "applied"
        } else {
            "rejected"
        };
        self.current()
            .metrics
            .reloads
            .get_or_create(&super::metrics::ReloadLabel { result: outcome })
            .inc();
        match &result {
            Ok(()) => {
                status.generation += 1;
                status.rejected.clear();
                info!(generation = status.generation, config = %path.display(), "config reloaded");
                Ok(status.generation)
            }
            Err(e) => {
                status.rejected = match e {
                    ReloadError::Config(ConfigError::Invalid { problems, .. }) => {
                        problems.iter().map(ToString::to_string).collect()
                    }
                    other => vec![other.to_string()],
                };
                for p in &status.rejected {
                    error!(config = %path.display(), problem = %p, "config rejected; still serving the previous one");
                }
                drop(status);
                result.map(|()| 0)
            }
        }
    }

    fn try_reload(&self, path: &Path) -> Result<(), ReloadError> {
        let cfg = Config::load(path)?;
        let old = self.current();
        if cfg.listen != old.cfg.listen {
            warn!("the listen address changed in the config; it applies at the next restart");
        }
        if cfg.state != old.cfg.state {
            warn!("the state file path changed in the config; it applies at the next restart");
        }
        if cfg.fleet.as_ref().map(|f| (f.url.expose(), &f.prefix))
            != old.cfg.fleet.as_ref().map(|f| (f.url.expose(), &f.prefix))
        {
            warn!("the fleet state (Redis URL or prefix) changed in the config; it applies at the next restart");
        }
        if cfg.server != old.cfg.server
            || cfg.limits.max_buffered_body_bytes != old.cfg.limits.max_buffered_body_bytes
            || cfg.admin.as_ref().and_then(|a| a.listen)
                != old.cfg.admin.as_ref().and_then(|a| a.listen)
        {
            warn!("[server] limits, limits.max_buffered_body_bytes or admin.listen changed in the config; they apply at the next restart");
        }
        for w in &cfg.warnings {
            warn!(config = %path.display(), warning = %w, "risky config");
        }
        let mut gw = Gateway::build(
            cfg,
            old.engine.clone(),
            old.metrics.clone(),
            old.oauth.clone(),
        )?;
        gw.fleet = old.fleet.clone();
        gw.body_budget = old.body_budget.clone();
        gw.alerts = old.alerts.clone();
        gw.alerts.configure(&gw.cfg, gw.mask.clone());
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(gw),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(gw),
        }
        Ok(())
    }

    /// Reloads on `SIGHUP` and when the config file's contents change, until aborted.
    pub async fn watch(self: Arc<Live>) {
        let Some(path) = self.source.clone() else {
            return;
        };
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = digest(&path);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hup_fired = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup_fired = std::future::pending::<bool>();
            tokio::select! {
                fired = hup_fired => {
                    if fired {
                        info!("SIGHUP: reloading the config");
                        seen = digest(&path);
                        let live = self.clone();
                        let _ = tokio::task::spawn_blocking(move || live.reload()).await;
                    }
                }
                _ = tick.tick() => {
                    let now = digest(&path);
                    if now.is_some() && now != seen {
                        // Settle: reload only once two reads a moment apart agree.
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        if digest(&path) != now {
                            continue;
                        }
                        info!(config = %path.display(), "the config file changed: reloading");
                        seen = now;
                        let live = self.clone();
                        let _ = tokio::task::spawn_blocking(move || live.reload()).await;
                    }
                }
            }
        }
    }
}

/// A digest of the file's bytes, through symlinks; `None` while it cannot be read.
fn digest(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}
