//! # keyward
//!
//! The gateway binary's library: configuration, the HTTP gateway, and the commands that
//! wire them. `main.rs` parses arguments and calls into here.

pub mod config;
#[cfg(feature = "sim")]
pub mod demo;
pub mod gateway;

pub mod clock;
pub mod telemetry;

pub use clock::SystemClock;

/// Starts a gateway for `cfg` on `listener`, with its state file. Returns when `shutdown`
/// resolves.
pub async fn serve(
    cfg: config::Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_reloadable(cfg, None, listener, shutdown).await
}

/// [`serve`], reloading the configuration from `source` on `SIGHUP` and when the file
/// changes (see [`gateway::live`]). Binds the admin listener when the config has one.
pub async fn serve_reloadable(
    cfg: config::Config,
    source: Option<std::path::PathBuf>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let admin = bind_admin(&cfg).await?;
    // Boxed: opening the state (a Redis connection in fleet mode) is a large future, and
    // it runs once.
    let live = Box::pin(open(cfg, source, keyward_store::Init::Refuse)).await?;
    run(live, listener, admin, shutdown).await
}

/// Serves an opened gateway on its listeners until `shutdown` resolves.
pub async fn run(
    live: std::sync::Arc<gateway::Live>,
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    gateway::run_listeners(live, listener, admin, shutdown, gateway::DRAIN_LIMIT)
        .await
        .map_err(ServeError::Io)
}

/// Binds `addr`, saying what to do when it cannot.
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    let err = move |source| ServeError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    // As tokio's TcpListener::bind does: a restarted gateway rebinds at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)
}

/// Connections the kernel may queue before the gateway accepts them. tokio's default
/// (1,024) overflowed while 10,000 streams opened at once in the benchmark (a dropped SYN
/// is retried after a second: the p99 time to first byte was 1.1 s); the kernel caps it
/// at `net.core.somaxconn` (4,096 by default on current Linux).
const LISTEN_BACKLOG: u32 = 8192;

/// The admin API's own listener, when the config has `[admin] listen`.
pub async fn bind_admin(
    cfg: &config::Config,
) -> Result<Option<tokio::net::TcpListener>, ServeError> {
    match cfg.admin.as_ref().and_then(|a| a.listen) {
        Some(addr) => bind(addr).await.map(Some),
        None => Ok(None),
    }
}

/// Opens the state (file or fleet) and builds the gateway for `cfg`; `init` says what to
/// do with a state file that is empty or not Keyward's (`keyward serve --init-state`:
/// [`keyward_store::Init::MoveAside`]).
///
/// Single node: the state file is locked for the gateway's whole life (a second gateway
/// or a writing CLI command is refused) and opened once, through SQLite only; the health
/// store and the OAuth tokens share the lock.
pub async fn open(
    cfg: config::Config,
    source: Option<std::path::PathBuf>,
    init: keyward_store::Init,
) -> Result<std::sync::Arc<gateway::Live>, ServeError> {
    let metrics = std::sync::Arc::new(gateway::metrics::Metrics::new());
    let mask = gateway::caller_bound::SecretMask::default();
    let (tokens, engine, fleet, alerts) = match &cfg.fleet {
        None => {
            let state = keyward_store::StateFile::lock(&cfg.state, init)?;
            if let Some(aside) = state.moved_aside() {
                tracing::warn!(state = %cfg.state.display(), moved_to = %aside.display(), "the state file was not a Keyward state file: moved aside (--init-state); starting with an empty state");
            }
            let tokens = std::sync::Arc::new(state.tokens(sealer(&cfg)?)?);
            let (store, loaded) = state.store()?;
            // The alert rules are in place before the first transition (restore may
            // make some), so none is written without its alerts.
            let alerts = gateway::alerts::Alerts::new(
                gateway::alerts::Queue::Durable(store.outbox()),
                metrics.clone(),
            );
            alerts.configure(&cfg, mask.clone());
            let engine = keyward_core::health::HealthEngine::new(
                cfg.policy.clone(),
                std::sync::Arc::new(SystemClock),
                std::sync::Arc::new(store),
                seed(),
            );
            engine.restore(loaded.records, loaded.denylist);
            // The state file is this gateway's alone: its leases died with the last process.
            engine.release_stale_leases();
            (tokens, engine, None, alerts)
        }
        Some(f) => {
            let tokens = token_store(&cfg)?;
            let replica = f.replica.clone().unwrap_or_else(default_replica);
            let (store, loaded) = keyward_store::RedisStore::connect(keyward_store::FleetConfig {
                url: f.url.expose().to_owned(),
                prefix: f.prefix.clone(),
                replica: replica.clone(),
                timeout: f.timeout,
                ca_pem: f.ca_pem().map_err(ServeError::Io)?,
            })
            .await?;
            // Fleet mode: this replica's alerts wait in its memory (there is no state
            // file); it queues those of the transitions it performs.
            let alerts =
                gateway::alerts::Alerts::new(gateway::alerts::Queue::memory(), metrics.clone());
            alerts.configure(&cfg, mask.clone());
            let engine = keyward_core::health::HealthEngine::new(
                cfg.policy.clone(),
                std::sync::Arc::new(SystemClock),
                std::sync::Arc::new(gateway::alerts::AlertingSink::new(
                    std::sync::Arc::new(store.clone()),
                    alerts.clone(),
                )),
                seed(),
            );
            engine.restore(loaded.records, loaded.denylist);
            store.attach(engine.clone());
            tracing::info!(replica = %replica, redis = %f.display_url(), prefix = %f.prefix, "fleet mode: state shared through Redis");
            (tokens, engine, Some(store), alerts)
        }
    };
    let oauth = std::sync::Arc::new(gateway::oauth::OAuth::new(Some(tokens), metrics.clone()));
    oauth.set_alerts(alerts.clone());
    let mut gw =
        gateway::Gateway::build(cfg, engine, metrics, oauth).map_err(ServeError::Client)?;
    // Now with the configuration's secrets to mask in what alerts say.
    alerts.configure(&gw.cfg, gw.mask.clone());
    gw.alerts = alerts;
    if let Some(f) = &fleet {
        gw.oauth.set_fleet(f.clone());
    }
    gw.fleet = fleet;
    Ok(gateway::Live::new(gw, source))
}

/// The sealer of `cfg`'s OAuth tokens: its `state_key`, or plain text.
fn sealer(cfg: &config::Config) -> Result<keyward_store::Sealer, keyward_store::TokenError> {
    Ok(match &cfg.state_key {
        Some(k) => keyward_store::Sealer::from_hex(k.expose())?,
        None => keyward_store::Sealer::plain(),
    })
}

/// The OAuth tokens of `cfg`'s state file, read-only: no lock, safe beside a running
/// gateway (it never writes, checkpoints or deletes the `-wal`). In fleet mode, the
/// fleet's Redis, as [`token_store`].
pub fn token_store_read_only(
    cfg: &config::Config,
) -> Result<std::sync::Arc<keyward_store::TokenStore>, keyward_store::TokenError> {
    if cfg.fleet.is_some() {
        return token_store(cfg);
    }
    Ok(std::sync::Arc::new(
        keyward_store::TokenStore::open_read_only(&cfg.state, sealer(cfg)?)?,
    ))
}

/// The OAuth tokens of `cfg`'s state file (or its fleet's Redis), sealed with its
/// `state_key` if it has one, for writing: a state file is locked, so this is refused
/// ([`keyward_store::StoreError::Locked`]) while a gateway runs on it.
pub fn token_store(
    cfg: &config::Config,
) -> Result<std::sync::Arc<keyward_store::TokenStore>, keyward_store::TokenError> {
    let sealer = sealer(cfg)?;
    Ok(std::sync::Arc::new(match &cfg.fleet {
        Some(f) => keyward_store::TokenStore::open_redis(
            f.url.expose(),
            &f.prefix,
            f.ca_pem()
                .map_err(|e| {
                    keyward_store::TokenError::Store(keyward_store::StoreError::Io {
                        path: f.ca_file.clone().unwrap_or_default(),
                        source: e,
                    })
                })?
                .as_deref(),
            sealer,
        )?,
        None => keyward_store::TokenStore::open(&cfg.state, sealer)?,
    }))
}

/// A replica's default name in the fleet log: `$KEYWARD_REPLICA`, or the host name and
/// the process id.
fn default_replica() -> String {
    if let Some(r) = std::env::var("KEYWARD_REPLICA")
        .ok()
        .filter(|r| !r.trim().is_empty() && r.len() <= 64)
    {
        return r.trim().to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "keyward".into());
    format!("{host}:{}", std::process::id())
}

pub(crate) use clock::seed;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The state file could not be opened (locked by another gateway, unreadable). The
    /// message says what to do. Label: `state`.
    #[error(transparent)]
    State(#[from] keyward_store::StoreError),
    /// The OAuth tokens could not be opened (a bad state key). Label: `tokens`.
    #[error(transparent)]
    Tokens(#[from] keyward_store::TokenError),
    /// Fleet mode's Redis URL is unusable. Label: `fleet`.
    #[error(transparent)]
    Fleet(#[from] keyward_store::FleetError),
    /// The HTTP client could not be built (TLS roots). Label: `client`.
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(#[source] gateway::upstream::ClientError),
    /// An address to listen on could not be bound. Label: `bind`.
    #[error("cannot listen on {addr}: {source}; {}", bind_advice(source))]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Serving failed (the listener broke). Label: `io`.
    #[error("serving failed: {0}")]
    Io(#[source] std::io::Error),
}

/// What to do when an address cannot be bound.
fn bind_advice(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "the address is in use (another keyward, or another server): stop it, or choose another port with `listen` in the config or --listen",
        std::io::ErrorKind::PermissionDenied => "ports below 1024 need privileges: choose a port above 1024",
        std::io::ErrorKind::AddrNotAvailable => "no interface of this host has that address: use 127.0.0.1, 0.0.0.0 or one of this host's addresses",
        _ => "check the address in `listen` (or --listen)",
    }
}
