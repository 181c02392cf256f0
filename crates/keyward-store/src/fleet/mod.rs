//! Fleet mode: the state store on Redis, shared by every replica of a gateway.
//!
//! Redis holds the truth about every scope; each replica holds a copy in its health
//! engine, so the request path reads memory and never Redis.
//!
//! - **Versioned transitions.** Each scope has a version (`{prefix}:ver`) beside its state
//!   (`{prefix}:health`). A replica writes a transition with a Lua script that checks the
//!   version it last saw and, in the same step, bumps it and appends the transition to the
//!   fleet's log, a Redis Stream (`{prefix}:log`). Versions, not clocks, order states.
//! - **Conflicts** (another replica changed the scope first) are merged here, not dropped:
//!   new evidence (a cooldown, a suspect, a disable) is written on top of the newer state
//!   when it is more severe, and a cooldown is never shortened (the later end wins);
//!   progress that was computed from a state that no longer holds (taking a probe lease,
//!   a recovery) is not applied, and the log says it was absorbed. An operator's action is
//!   written whatever the version, and automatic transitions never override an operator's
//!   disable.
//! - **Propagation** is the log itself: every replica follows the Stream from the id it
//!   had when it loaded the full state, so nothing falls between loading and following,
//!   and a reconnect resumes from the last id it applied (pub/sub would lose messages
//!   sent while disconnected).
//! - **Leases** (`SET NX PX`) make probes and OAuth refreshes single-flight across the
//!   fleet; a holder that dies blocks the others for the lease time at most.
//! - **Degradation.** When Redis cannot be reached, transitions are kept in memory in
//!   order (the local engine already acts on them) and written, merged by version, when
//!   it returns; the replica reports the degradation once per change of state. A Redis
//!   that returns without the fleet's data (restarted without persistence: its epoch key
//!   is gone) is re-seeded from this replica's view.
//!
//! The merge rules are Keyward's own domain logic (which evidence outranks which), so
//! they are hand-written (in `merge`); the Redis protocol, connection management and reconnects
//! are the `redis` crate's.
//!
//! The parts, one concept each: `scripts` (the keys, the Lua compare-and-set scripts and
//! their replies, a scope's state as stored), `store` ([`RedisStore`]'s API: connecting,
//! leases, status, history, and the engine's sink), `sync` (loading, applying, writing by
//! compare-and-set, degraded mode and re-seeding), `writer` (the pending queue), `follow`
//! (following the fleet log), `merge` (the conflict rules).

mod follow;
mod merge;
mod scripts;
mod store;
mod sync;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use keyward_core::health::{Health, HealthEngine, SinkError, Transition};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use scripts::Keys;

/// Errors of fleet mode. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The `state` URL is not a Redis URL the client understands. Label: `url`.
    #[error("state = {url:?} is not a usable Redis URL ({source}); use redis://[user:password@]host:port[/db] or rediss:// for TLS")]
    Url {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// Redis refused or failed a command. Label: `redis`.
    #[error("Redis at {target}: {source} (check that it is running and reachable; replicas keep serving on their local view meanwhile)")]
    Redis {
        target: String,
        #[source]
        source: redis::RedisError,
    },
}

/// How a replica joins a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// `redis://…` or `rediss://…` (TLS), with the password in the URL if any.
    pub url: String,
    /// Namespaces several fleets in one Redis (`keyward` by default).
    pub prefix: String,
    /// This replica's name in the log (`host:pid` by default).
    pub replica: String,
    /// Redis commands slower than this count as Redis trouble.
    pub timeout: Duration,
    /// PEM roots to verify a `rediss://` server with (a private CA), instead of the
    /// public web roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// A Redis client for `url`, verifying TLS against `ca_pem` when given.
pub(crate) fn client(url: &str, ca_pem: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
    // rustls needs a process-wide crypto provider for `rediss://`; without one chosen it
    // panics on the first TLS connection when the build does not settle it by features.
    // ring, as everywhere else in Keyward (an already installed one is kept).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match ca_pem {
        None => redis::Client::open(url),
        Some(pem) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        ),
    }
}

/// What a lease request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This replica holds it; release with the token.
    Held(String),
    /// Another replica holds it: wait for its published result.
    Taken,
    /// Redis cannot be reached: act locally (degraded).
    Unavailable,
}

/// The fleet's health as this replica sees it, for status views.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FleetStatus {
    pub replica: String,
    pub prefix: String,
    /// Redis answers and this replica follows the log.
    pub connected: bool,
    /// The fleet state was loaded from Redis at least once.
    pub loaded: bool,
    /// Since when Redis has been unreachable (ms since the epoch), when it is.
    pub degraded_since: Option<u64>,
    /// The last Redis error, when degraded.
    pub last_error: Option<String>,
    /// Transitions recorded locally, waiting for Redis.
    pub pending: usize,
    /// Times the fleet state was re-seeded into a Redis that had lost it.
    pub reseeds: u64,
}

#[derive(Debug)]
struct Shared {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    cfg: FleetConfig,
    target: String,
    cas: redis::Script,
    release: redis::Script,
    raise: redis::Script,
    /// Each scope's last known (version, state) in Redis.
    known: Mutex<HashMap<String, (u64, Health)>>,
    engine: OnceLock<HealthEngine>,
    status: Mutex<FleetStatus>,
    /// The last log id this replica applied.
    last_id: Mutex<String>,
    /// The epoch of the data this replica loaded (a Redis without it lost the data).
    epoch: Mutex<Option<String>>,
    stopping: AtomicBool,
}

enum Cmd {
    Write(
        Box<Transition>,
        std::sync::mpsc::SyncSender<Result<(), SinkError>>,
    ),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The Redis state store: the health engine's [`TransitionSink`] in fleet mode.
#[derive(Debug, Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Write(t, _) => write!(f, "Write({})", t.scope),
            Cmd::Flush(_) => f.write_str("Flush"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A Redis URL without its credentials, for messages (`redis://…@host:port/db`).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}
