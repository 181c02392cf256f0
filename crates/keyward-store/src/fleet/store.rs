//! [`RedisStore`]'s API: connecting and loading, attaching the engine, status, leases
//! (single-flight probes and refreshes across the fleet), stored health, flushing,
//! history; and the health engine's [`TransitionSink`].

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use keyward_core::health::{
    Ack, Health, HealthEngine, ScopeKey, SinkError, Transition, TransitionSink,
};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use crate::sqlite::{Loaded, TransitionRow};

use super::follow::{follower, Entry};
use super::scripts::{decode, Keys, CAS, RAISE, RELEASE};
use super::writer::writer;
use super::{
    client, lock, now_ms, redact_url, Cmd, FleetConfig, FleetError, FleetStatus, Lease, RedisStore,
    Shared,
};

impl RedisStore {
    /// Connects to the fleet's Redis and loads its state. When Redis cannot be reached,
    /// the replica starts on an empty view, degraded, and loads the state when Redis
    /// answers. Must be called within a Tokio runtime.
    pub async fn connect(cfg: FleetConfig) -> Result<(RedisStore, Loaded), FleetError> {
        let target = redact_url(&cfg.url);
        let client = client(&cfg.url, cfg.ca_pem.as_deref()).map_err(|source| FleetError::Url {
            url: target.clone(),
            source,
        })?;
        let mgr_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        // Lazy: the manager exists even when Redis is down at start, and (re)connects on
        // use.
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), mgr_cfg).map_err(|source| {
                FleetError::Redis {
                    target: target.clone(),
                    source,
                }
            })?;
        let shared = Arc::new(Shared {
            keys: Keys::new(&cfg.prefix),
            target,
            client,
            conn,
            cas: redis::Script::new(CAS),
            release: redis::Script::new(RELEASE),
            raise: redis::Script::new(RAISE),
            known: Mutex::new(HashMap::new()),
            engine: OnceLock::new(),
            status: Mutex::new(FleetStatus {
                replica: cfg.replica.clone(),
                prefix: cfg.prefix.clone(),
                connected: false,
                loaded: false,
                degraded_since: None,
                last_error: None,
                pending: 0,
                reseeds: 0,
            }),
            last_id: Mutex::new("0-0".into()),
            epoch: Mutex::new(None),
            stopping: AtomicBool::new(false),
            cfg,
        });
        let loaded = match shared.load().await {
            Ok(l) => {
                shared.mark_ok();
                l
            }
            Err(e) => {
                shared.mark_degraded(&e);
                Loaded::default()
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(shared.clone(), rx));
        tokio::spawn(follower(shared.clone()));
        Ok((RedisStore { shared, tx }, loaded))
    }

    /// Hands the store the engine it keeps in step with the fleet (transitions of other
    /// replicas are applied to it). Call once, right after building the engine.
    pub fn attach(&self, engine: HealthEngine) {
        let _ = self.shared.engine.set(engine);
    }

    /// The connection state, for `/readyz`, the admin API and metrics.
    pub fn status(&self) -> FleetStatus {
        lock(&self.shared.status).clone()
    }

    /// Takes the lease `name` for `ttl` if no replica holds it.
    pub async fn lease(&self, name: &str, ttl: Duration) -> Lease {
        let token = format!("{}:{}", self.shared.cfg.replica, now_ms());
        let key = format!("{}{name}", self.shared.keys.lease);
        let mut conn = self.shared.conn.clone();
        let r: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut conn)
            .await;
        match r {
            Ok(Some(_)) => Lease::Held(token),
            Ok(None) => Lease::Taken,
            Err(e) => {
                self.shared.mark_degraded(&e);
                Lease::Unavailable
            }
        }
    }

    /// Releases a lease this replica holds (a lapsed or taken-over lease is left alone).
    pub async fn release(&self, name: &str, token: &str) {
        let key = format!("{}{name}", self.shared.keys.lease);
        let mut conn = self.shared.conn.clone();
        let r: redis::RedisResult<i64> = self
            .shared
            .release
            .key(key)
            .arg(token)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "lease release failed; it lapses by itself");
        }
    }

    /// The state of `key` in Redis now (not this replica's view), when Redis answers.
    pub async fn stored_health(&self, key: &ScopeKey) -> Option<Health> {
        let mut conn = self.shared.conn.clone();
        let state: Option<String> = redis::cmd("HGET")
            .arg(&self.shared.keys.health)
            .arg(key.to_key())
            .query_async(&mut conn)
            .await
            .ok()?;
        Some(decode(&state.unwrap_or_default())?.0)
    }

    /// Waits until every transition enqueued so far was written (or kept for later when
    /// Redis is unreachable).
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Cmd::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The fleet's latest transitions, newest first: of `credential` (all its scopes), or
    /// of every scope when `None`; at most `limit`.
    pub async fn history(
        &self,
        credential: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TransitionRow>, FleetError> {
        let mut conn = self.shared.conn.clone();
        let mut out = Vec::new();
        let mut end = "+".to_owned();
        // Page back through the log until enough rows match.
        for _ in 0..50 {
            let page: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
                .arg(&self.shared.keys.log)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(|source| self.shared.err(source))?;
            let n = page.len();
            for (_, fields) in &page {
                let Some(e) = Entry::parse(fields) else {
                    continue;
                };
                let matches = credential.is_none_or(|c| {
                    ScopeKey::parse(&e.scope).is_some_and(|k| k.credential() == Some(c))
                });
                if matches {
                    out.push(e.row());
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            match page.last() {
                Some((id, _)) if n == 500 => end = format!("({id}"),
                _ => break,
            }
        }
        Ok(out)
    }
}

impl TransitionSink for RedisStore {
    fn enqueue(&self, t: Transition) -> Ack {
        let (ack, done) = Ack::pending();
        if let Err(mpsc::error::SendError(Cmd::Write(_, done))) =
            self.tx.send(Cmd::Write(Box::new(t), done))
        {
            let _ = done.try_send(Err(SinkError("the fleet writer has stopped".into())));
        }
        ack
    }
}
