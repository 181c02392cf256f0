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
//! they are hand-written here; the Redis protocol, connection management and reconnects
//! are the `redis` crate's.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use keyward_core::health::{
    Ack, Actor, Health, HealthEngine, ScopeKey, SinkError, Timestamp, Transition, TransitionSink,
};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use crate::sqlite::{actor_name, Loaded, TransitionRow};

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

/// The fleet's Redis keys.
#[derive(Debug, Clone)]
struct Keys {
    ver: String,
    health: String,
    log: String,
    deny: String,
    epoch: String,
    lease: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            ver: format!("{prefix}:ver"),
            health: format!("{prefix}:health"),
            log: format!("{prefix}:log"),
            deny: format!("{prefix}:deny"),
            epoch: format!("{prefix}:epoch"),
            lease: format!("{prefix}:lease:"),
        }
    }
}

/// A Stream entry as read: its id and its flat field/value list.
type LogEntry = (String, Vec<String>);
/// XREAD's reply: per stream, its entries.
type XreadReply = Vec<(String, Vec<LogEntry>)>;
/// Versions, states and the denylist by key, and the epoch.
type FullState = (
    HashMap<String, u64>,
    HashMap<String, String>,
    HashMap<String, String>,
    Option<String>,
);

/// How many log entries the Stream keeps (approximately).
const LOG_MAX: usize = 100_000;
/// How long the follower blocks on the Stream per read.
const FOLLOW_BLOCK: Duration = Duration::from_secs(2);

/// Compare-and-set of one scope's state. KEYS: ver, health, log, deny. ARGV: scope,
/// expected version, state JSON ("" when healthy), force ("1": an operator's action),
/// denylist op ("add" | "del" | ""), fingerprint, denylist JSON, log max length, then
/// the log entry's field/value pairs.
/// Returns {1, new version, entry id} or {0, current version, current state JSON}.
const CAS: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if ARGV[4] ~= '1' and cur ~= tonumber(ARGV[2]) then
  return {0, cur, redis.call('HGET', KEYS[2], ARGV[1]) or ''}
end
local v = cur + 1
redis.call('HSET', KEYS[1], ARGV[1], v)
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
if ARGV[5] == 'add' then
  redis.call('HSET', KEYS[4], ARGV[6], ARGV[7])
elseif ARGV[5] == 'del' then
  redis.call('HDEL', KEYS[4], ARGV[6])
end
local entry = {'XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'scope', ARGV[1], 'v', tostring(v), 'state', ARGV[3]}
for i = 9, #ARGV do entry[#entry + 1] = ARGV[i] end
local id = redis.call(unpack(entry))
return {1, v, id}
"#;

/// Releases a lease only if this holder still has it. KEYS: lease. ARGV: token.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Puts a state back at a version only if Redis holds an older one. KEYS: ver, health.
/// ARGV: scope, version, state JSON ("" when healthy).
const RAISE: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if cur >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '' then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
return 1
"#;

/// A scope's state as stored: its health and since when.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Stored {
    #[serde(rename = "h")]
    health: Health,
    since: u64,
}

fn encode(health: &Health, since: Timestamp) -> String {
    if *health == Health::Healthy {
        return String::new();
    }
    serde_json::to_string(&Stored {
        health: health.clone(),
        since: since.0,
    })
    .unwrap_or_default()
}

fn decode(s: &str) -> Option<(Health, Timestamp)> {
    if s.is_empty() {
        return Some((Health::Healthy, Timestamp(0)));
    }
    serde_json::from_str::<Stored>(s)
        .ok()
        .map(|st| (st.health, Timestamp(st.since)))
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

impl Drop for Shared {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}

/// One entry of the fleet log.
#[derive(Debug, Clone)]
struct Entry {
    scope: String,
    version: u64,
    state: String,
    kind: String,
    from: String,
    why: String,
    actor: String,
    replica: String,
    at: u64,
    seq: u64,
    /// An operator's reset: the credential's revoked fingerprint leaves the denylist.
    reset: bool,
}

impl Entry {
    fn parse(fields: &[String]) -> Option<Entry> {
        let mut m: HashMap<&str, &str> = HashMap::new();
        for pair in fields.chunks(2) {
            if let [k, v] = pair {
                m.insert(k.as_str(), v.as_str());
            }
        }
        let get = |k: &str| m.get(k).map(|s| (*s).to_owned()).unwrap_or_default();
        Some(Entry {
            reset: m.get("reset") == Some(&"1"),
            scope: m.get("scope")?.to_string(),
            version: m.get("v")?.parse().ok()?,
            state: get("state"),
            kind: get("kind"),
            from: get("from"),
            why: get("why"),
            actor: get("actor"),
            replica: get("replica"),
            at: get("at").parse().unwrap_or(0),
            seq: get("seq").parse().unwrap_or(0),
        })
    }

    fn row(&self) -> TransitionRow {
        let to = decode(&self.state).map_or_else(
            || "?".to_owned(),
            |(h, _)| serde_json::to_string(&h).unwrap_or_default(),
        );
        let why = if self.kind == "absorbed" {
            format!("(absorbed: the fleet had moved on) {}", self.why)
        } else {
            self.why.clone()
        };
        TransitionRow {
            seq: self.seq,
            at: Timestamp(self.at),
            scope: self.scope.clone(),
            from: self.from.clone(),
            to,
            why,
            actor: self.actor.clone(),
            replica: Some(self.replica.clone()),
        }
    }
}

impl Shared {
    fn err(&self, source: redis::RedisError) -> FleetError {
        FleetError::Redis {
            target: self.target.clone(),
            source,
        }
    }

    fn mark_degraded(&self, e: &dyn std::fmt::Display) {
        let mut s = lock(&self.status);
        if s.degraded_since.is_none() {
            tracing::warn!(redis = %self.target, error = %e, "fleet state degraded: Redis is unreachable; serving on this replica's view and recording transitions locally until it returns");
            s.degraded_since = Some(now_ms());
        }
        s.connected = false;
        s.last_error = Some(e.to_string());
    }

    fn mark_ok(&self) {
        let mut s = lock(&self.status);
        if let Some(since) = s.degraded_since.take() {
            tracing::info!(redis = %self.target, degraded_ms = now_ms().saturating_sub(since), "fleet state restored: Redis answers again");
        }
        s.connected = true;
        s.loaded = true;
        s.last_error = None;
    }

    /// Loads the whole fleet state: the log position first, so the follower replays
    /// everything written after it (versions make the overlap harmless).
    async fn load(&self) -> Result<Loaded, FleetError> {
        let mut conn = self.conn.clone();
        let last: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
            .arg(&self.keys.log)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|s| self.err(s))?;
        let (versions, states, deny, epoch): FullState = redis::pipe()
            .cmd("HGETALL")
            .arg(&self.keys.ver)
            .cmd("HGETALL")
            .arg(&self.keys.health)
            .cmd("HGETALL")
            .arg(&self.keys.deny)
            .cmd("GET")
            .arg(&self.keys.epoch)
            .query_async(&mut conn)
            .await
            .map_err(|s| self.err(s))?;
        let epoch = match epoch {
            Some(e) => e,
            None => {
                let fresh = format!("{}:{}", self.cfg.replica, now_ms());
                let set: Option<String> = redis::cmd("SET")
                    .arg(&self.keys.epoch)
                    .arg(&fresh)
                    .arg("NX")
                    .query_async(&mut conn)
                    .await
                    .map_err(|s| self.err(s))?;
                if set.is_some() {
                    fresh
                } else {
                    redis::cmd("GET")
                        .arg(&self.keys.epoch)
                        .query_async::<Option<String>>(&mut conn)
                        .await
                        .map_err(|s| self.err(s))?
                        .unwrap_or(fresh)
                }
            }
        };
        *lock(&self.epoch) = Some(epoch);
        let mut loaded = Loaded::default();
        let mut known = lock(&self.known);
        for (scope, v) in &versions {
            let (health, since) = states
                .get(scope)
                .and_then(|s| decode(s))
                .unwrap_or((Health::Healthy, Timestamp(0)));
            if let Some(key) = ScopeKey::parse(scope) {
                if health != Health::Healthy {
                    loaded.records.push((key.clone(), health.clone(), since));
                }
            }
            let newer = known.get(scope).is_none_or(|(kv, _)| kv < v);
            if newer {
                known.insert(scope.clone(), (*v, health));
            }
        }
        drop(known);
        for (fp, json) in deny {
            let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
            let cred = v["credential"].as_str().unwrap_or("?").to_owned();
            let reason = v["reason"].as_str().unwrap_or("revoked").to_owned();
            loaded.denylist.push((fp, cred, reason));
        }
        *lock(&self.last_id) = last
            .first()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone());
        Ok(loaded)
    }

    /// Applies a state read from Redis to the known map and the engine, if newer.
    fn apply(&self, scope: &str, version: u64, state: &str, from_me: bool, reset: bool) {
        let Some((health, since)) = decode(state) else {
            return;
        };
        let mut known = lock(&self.known);
        if known.get(scope).is_some_and(|(v, _)| *v >= version) {
            return;
        }
        known.insert(scope.to_owned(), (version, health.clone()));
        if from_me {
            return;
        }
        if let (Some(engine), Some(key)) = (self.engine.get(), ScopeKey::parse(scope)) {
            let since = if since.0 == 0 { engine.now() } else { since };
            engine.apply_remote(&key, health, since, reset);
        }
    }

    /// Writes one local transition, merging with a newer fleet state when there is one.
    async fn write(&self, t: &Transition) -> Result<(), redis::RedisError> {
        let scope = t.scope.to_key();
        let force = t.actor == Actor::Operator;
        for _ in 0..16 {
            let (version, current) = lock(&self.known)
                .get(&scope)
                .cloned()
                .unwrap_or((0, Health::Healthy));
            let proposal = if force || same_state(&t.from, &current) {
                Some(t.to.clone())
            } else {
                merge(t, &current)
            };
            let Some(to) = proposal else {
                return self.absorbed(t, &scope, version).await;
            };
            let state = encode(&to, t.at);
            let (deny_op, deny_fp, deny_json) = deny_change(t, &to);
            let mut inv = self.cas.prepare_invoke();
            inv.key(&self.keys.ver)
                .key(&self.keys.health)
                .key(&self.keys.log)
                .key(&self.keys.deny)
                .arg(&scope)
                .arg(version)
                .arg(&state)
                .arg(if force { "1" } else { "0" })
                .arg(deny_op)
                .arg(deny_fp)
                .arg(deny_json)
                .arg(LOG_MAX);
            for (k, v) in self.entry_fields(t, "transition") {
                inv.arg(k).arg(v);
            }
            let mut conn = self.conn.clone();
            let r: redis::Value = inv.invoke_async(&mut conn).await?;
            match parse_cas(&r) {
                Some(CasReply::Applied(v)) => {
                    let mut known = lock(&self.known);
                    if known.get(&scope).is_none_or(|(kv, _)| *kv < v) {
                        known.insert(scope.clone(), (v, to.clone()));
                    }
                    drop(known);
                    if to != t.to {
                        // The merge changed what this replica had (a longer cooldown).
                        if let Some(engine) = self.engine.get() {
                            engine.apply_remote(&t.scope, to, t.at, false);
                        }
                    }
                    return Ok(());
                }
                Some(CasReply::Conflict(v, state)) => {
                    self.apply(&scope, v, &state, false, false);
                }
                None => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "unexpected reply from the transition script",
                    )))
                }
            }
        }
        let version = lock(&self.known).get(&scope).map_or(0, |(v, _)| *v);
        self.absorbed(t, &scope, version).await
    }

    /// Logs a transition the fleet had already moved past (nothing is dropped silently).
    async fn absorbed(
        &self,
        t: &Transition,
        scope: &str,
        version: u64,
    ) -> Result<(), redis::RedisError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.keys.log)
            .arg("MAXLEN")
            .arg("~")
            .arg(LOG_MAX)
            .arg("*")
            .arg("scope")
            .arg(scope)
            .arg("v")
            .arg(version)
            .arg("state")
            .arg(encode(&t.to, t.at));
        for (k, v) in self.entry_fields(t, "absorbed") {
            cmd.arg(k).arg(v);
        }
        let mut conn = self.conn.clone();
        cmd.query_async::<String>(&mut conn).await.map(|_| ())
    }

    fn entry_fields(&self, t: &Transition, kind: &str) -> Vec<(&'static str, String)> {
        vec![
            ("kind", kind.to_owned()),
            ("from", serde_json::to_string(&t.from).unwrap_or_default()),
            ("why", t.why.clone()),
            ("actor", actor_name(t.actor).to_owned()),
            ("replica", self.cfg.replica.clone()),
            ("at", t.at.0.to_string()),
            ("seq", t.seq.to_string()),
            (
                "reset",
                if t.actor == Actor::Operator && t.to == Health::Healthy {
                    "1".into()
                } else {
                    "0".into()
                },
            ),
        ]
    }

    /// After a reconnect: puts back every state this replica knows at a newer version
    /// than Redis holds (all of them, when Redis restarted without its data). Versions
    /// only rise, so replicas re-seeding at once converge on the newest each knew.
    /// Returns whether anything was put back.
    async fn reseed(&self) -> Result<bool, FleetError> {
        let mut conn = self.conn.clone();
        let (versions, epoch): (HashMap<String, u64>, Option<String>) = redis::pipe()
            .cmd("HGETALL")
            .arg(&self.keys.ver)
            .cmd("GET")
            .arg(&self.keys.epoch)
            .query_async(&mut conn)
            .await
            .map_err(|s| self.err(s))?;
        let known = lock(&self.known).clone();
        let behind: Vec<(&String, &(u64, Health))> = known
            .iter()
            .filter(|(scope, (v, _))| versions.get(*scope).is_none_or(|rv| rv < v))
            .collect();
        let lost = epoch.is_none();
        if lost {
            let mine = lock(&self.epoch)
                .clone()
                .unwrap_or_else(|| now_ms().to_string());
            let _: Option<String> = redis::cmd("SET")
                .arg(&self.keys.epoch)
                .arg(mine)
                .arg("NX")
                .query_async(&mut conn)
                .await
                .map_err(|s| self.err(s))?;
            // The log restarted with the data: follow the new one from its start.
            *lock(&self.last_id) = "0-0".into();
        }
        if behind.is_empty() {
            return Ok(lost);
        }
        // One script call per scope (invoke_async loads the script into a Redis that
        // restarted without it).
        for (scope, (v, health)) in &behind {
            let _: i64 = self
                .raise
                .key(&self.keys.ver)
                .key(&self.keys.health)
                .arg(scope.as_str())
                .arg(*v)
                .arg(encode(health, Timestamp(now_ms())))
                .invoke_async(&mut conn)
                .await
                .map_err(|s| self.err(s))?;
        }
        lock(&self.status).reseeds += 1;
        tracing::warn!(redis = %self.target, scopes = behind.len(), "Redis held older fleet state than this replica (restarted without persistence?): put back {} scope(s); enable appendonly in redis.conf", behind.len());
        Ok(true)
    }
}

/// Two states are "the same" for a transition's precondition when they are the same
/// kind of state (a renewed lease or a moved deadline does not invalidate it).
fn same_state(a: &Health, b: &Health) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn severity(h: &Health) -> u8 {
    match h {
        Health::Healthy => 0,
        Health::Cooling { .. } => 1,
        Health::Suspect { .. } => 2,
        Health::Probing { .. } => 3,
        Health::Disabled { .. } => 4,
    }
}

/// A transition computed from a state the fleet has since left: new evidence is kept
/// when it outranks the fleet's state (a cooldown ending later outranks an earlier one);
/// anything else is absorbed (`None`).
fn merge(t: &Transition, theirs: &Health) -> Option<Health> {
    if matches!(
        theirs,
        Health::Disabled {
            by_operator: true,
            ..
        }
    ) {
        return None;
    }
    let evidence = matches!(
        t.to,
        Health::Cooling { .. } | Health::Suspect { .. } | Health::Disabled { .. }
    );
    if !evidence {
        return None;
    }
    match severity(&t.to).cmp(&severity(theirs)) {
        std::cmp::Ordering::Greater => Some(t.to.clone()),
        std::cmp::Ordering::Equal => match (&t.to, theirs) {
            (Health::Cooling { until: mine, .. }, Health::Cooling { until: other, .. })
                if mine > other =>
            {
                Some(t.to.clone())
            }
            _ => None,
        },
        std::cmp::Ordering::Less => None,
    }
}

/// The denylist change a transition makes: a confirmed revocation adds the secret's
/// fingerprint, an operator's reset removes it.
fn deny_change(t: &Transition, to: &Health) -> (&'static str, String, String) {
    let (ScopeKey::Credential(id), Some(fp)) = (&t.scope, &t.fingerprint) else {
        return ("", String::new(), String::new());
    };
    // As the engine decided (`Transition::deny`).
    match (t.deny, to) {
        (Some(true), Health::Disabled { evidence, .. }) => (
            "add",
            fp.to_string(),
            serde_json::json!({"credential": &**id, "reason": format!("revoked ({evidence})")})
                .to_string(),
        ),
        (Some(false), _) => ("del", fp.to_string(), String::new()),
        _ => ("", String::new(), String::new()),
    }
}

enum CasReply {
    Applied(u64),
    Conflict(u64, String),
}

fn parse_cas(v: &redis::Value) -> Option<CasReply> {
    let redis::Value::Array(items) = v else {
        return None;
    };
    let int = |v: &redis::Value| match v {
        redis::Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match (items.first().and_then(int), items.get(1).and_then(int)) {
        (Some(1), Some(v)) => Some(CasReply::Applied(v)),
        (Some(0), Some(v)) => Some(CasReply::Conflict(
            v,
            items.get(2).and_then(text).unwrap_or_default(),
        )),
        _ => None,
    }
}

/// Writes local transitions in order. While Redis is unreachable they wait here (each
/// acknowledged at once: the engine has acted on it and must not stall), and are written,
/// merged by version, when it returns.
async fn writer(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut flushes: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    let mut delay = Duration::from_millis(100);
    loop {
        // Take everything waiting.
        if queue.is_empty() && flushes.is_empty() {
            match rx.recv().await {
                Some(cmd) => take(cmd, &mut queue, &mut flushes, false),
                None => return,
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            take(cmd, &mut queue, &mut flushes, false);
        }
        lock(&shared.status).pending = queue.len();
        while let Some((t, _)) = queue.front() {
            match shared.write(t).await {
                Ok(()) => {
                    if let Some((_, Some(ack))) = queue.pop_front() {
                        let _ = ack.try_send(Ok(()));
                    }
                    delay = Duration::from_millis(100);
                }
                Err(e) => {
                    shared.mark_degraded(&e);
                    // Kept here in order; whoever waits is released now: the engine acts
                    // on the transition already, and Redis may be gone for long.
                    for (_, ack) in queue.iter_mut() {
                        if let Some(ack) = ack.take() {
                            let _ = ack.try_send(Ok(()));
                        }
                    }
                    break;
                }
            }
        }
        lock(&shared.status).pending = queue.len();
        if queue.is_empty() {
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
            continue;
        }
        // A flush does not wait for Redis to return: the rest is kept here.
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
        // Redis is unreachable: wait, taking new transitions meanwhile.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => take(cmd, &mut queue, &mut flushes, true),
                    None => break,
                },
            }
        }
        delay = (delay * 2).min(Duration::from_secs(2));
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// A transition waiting to be written, with whoever waits for it.
type Queued = (
    Transition,
    Option<std::sync::mpsc::SyncSender<Result<(), SinkError>>>,
);

fn take(
    cmd: Cmd,
    queue: &mut VecDeque<Queued>,
    flushes: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    degraded: bool,
) {
    match cmd {
        Cmd::Write(t, ack) => {
            if degraded {
                // Redis is away: kept here, and the waiter is not held up.
                let _ = ack.try_send(Ok(()));
                queue.push_back((*t, None));
            } else {
                queue.push_back((*t, Some(ack)));
            }
        }
        Cmd::Flush(f) => flushes.push(f),
    }
}

/// Follows the fleet log and applies other replicas' transitions; on a reconnect,
/// re-seeds a Redis that lost the data, then resumes from the last applied id.
async fn follower(shared: Arc<Shared>) {
    let mut delay = Duration::from_millis(100);
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut need_check = false;
    loop {
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(shared.cfg.timeout))
                    .set_response_timeout(Some(FOLLOW_BLOCK + shared.cfg.timeout));
                match shared
                    .client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                {
                    Ok(c) => {
                        if need_check || !lock(&shared.status).loaded {
                            if let Err(e) = resync(&shared).await {
                                shared.mark_degraded(&e);
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(Duration::from_secs(2));
                                continue;
                            }
                            need_check = false;
                        }
                        shared.mark_ok();
                        delay = Duration::from_millis(100);
                        conn.insert(c)
                    }
                    Err(e) => {
                        shared.mark_degraded(&e);
                        need_check = true;
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            }
        };
        let last = lock(&shared.last_id).clone();
        let r: redis::RedisResult<Option<XreadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(512)
            .arg("BLOCK")
            .arg(u64::try_from(FOLLOW_BLOCK.as_millis()).unwrap_or(2000))
            .arg("STREAMS")
            .arg(&shared.keys.log)
            .arg(&last)
            .query_async(c)
            .await;
        match r {
            Ok(reply) => {
                for (_, entries) in reply.unwrap_or_default() {
                    for (id, fields) in entries {
                        if let Some(e) = Entry::parse(&fields) {
                            if e.kind != "absorbed" {
                                let from_me = e.replica == shared.cfg.replica;
                                shared.apply(&e.scope, e.version, &e.state, from_me, e.reset);
                            }
                        }
                        *lock(&shared.last_id) = id;
                    }
                }
            }
            Err(e) => {
                shared.mark_degraded(&e);
                conn = None;
                need_check = true;
            }
        }
    }
}

/// After a reconnect (or a start without Redis): re-seed a Redis that lost the data,
/// then load the fleet state (the follower resumes from the loaded position).
async fn resync(shared: &Arc<Shared>) -> Result<(), FleetError> {
    if lock(&shared.status).loaded {
        // Keep following from the last applied id (the entries written while this
        // replica was away are replayed in order), after putting back what Redis lost.
        shared.reseed().await?;
        return Ok(());
    }
    let loaded = shared.load().await?;
    if let Some(engine) = shared.engine.get() {
        engine.restore(loaded.records, loaded.denylist);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::classify::Class;

    fn t(from: Health, to: Health, actor: Actor) -> Transition {
        Transition {
            seq: 1,
            at: Timestamp(1_000),
            scope: ScopeKey::Credential("k".into()),
            from,
            to,
            why: "test".into(),
            actor,
            fingerprint: Some("fp".into()),
            durable: false,
            deny: None,
        }
    }

    fn cooling(until: u64) -> Health {
        Health::Cooling {
            until: Timestamp(until),
            class: Class::RateLimit,
        }
    }

    fn disabled(by_operator: bool) -> Health {
        Health::Disabled {
            class: Class::AuthPermanent,
            since: Timestamp(1),
            evidence: "401".into(),
            fingerprint: Some("fp".into()),
            recheck_at: None,
            by_operator,
        }
    }

    #[test]
    fn a_cooldown_is_never_shortened() {
        let mine = t(Health::Healthy, cooling(5_000), Actor::Traffic);
        assert_eq!(merge(&mine, &cooling(9_000)), None);
        assert_eq!(merge(&mine, &cooling(2_000)), Some(cooling(5_000)));
        assert_eq!(merge(&mine, &Health::Healthy), Some(cooling(5_000)));
    }

    #[test]
    fn stronger_evidence_wins_and_progress_from_a_stale_state_is_absorbed() {
        let disable = t(cooling(1), disabled(false), Actor::Probe);
        assert_eq!(merge(&disable, &cooling(9_000)), Some(disabled(false)));
        let recovery = t(cooling(1), Health::Healthy, Actor::Traffic);
        assert_eq!(merge(&recovery, &disabled(false)), None);
        assert_eq!(merge(&recovery, &Health::Healthy), None);
        let suspect = Health::Suspect {
            class: Class::AuthPermanent,
            since: Timestamp(1),
            evidence: "401".into(),
            probe_at: Timestamp(2),
        };
        let lease = t(
            suspect.clone(),
            Health::Probing {
                class: Class::AuthPermanent,
                since: Timestamp(1),
                evidence: "401".into(),
                lease_until: Timestamp(3),
                trial: false,
            },
            Actor::Probe,
        );
        assert_eq!(merge(&lease, &Health::Healthy), None);
        assert!(same_state(&lease.from, &suspect));
    }

    #[test]
    fn nothing_automatic_overrides_an_operator_disable() {
        let mine = t(Health::Healthy, disabled(false), Actor::Probe);
        assert_eq!(merge(&mine, &disabled(true)), None);
    }

    #[test]
    fn states_round_trip_and_healthy_is_empty() {
        assert_eq!(encode(&Health::Healthy, Timestamp(5)), "");
        let s = encode(&cooling(7), Timestamp(5));
        assert_eq!(decode(&s), Some((cooling(7), Timestamp(5))));
        assert_eq!(decode("not json"), None);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://…@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
