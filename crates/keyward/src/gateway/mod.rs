//! The HTTP gateway.
//!
//! Request path, top to bottom (keep this list true):
//! 0. [`listener::serve`] accepts the connection under `[server]`'s limits (connection
//!    cap, header-read and idle timeouts) and tags each request with its peer address;
//! 1. [`router`] picks the inbound API by path, and its handler (`inbound.rs`) takes it
//!    from there through step 4 (`/v1/messages`, `/v1/chat/completions`);
//! 2. [`authenticate`] finds the caller's gateway key wherever its SDK puts it
//!    (`x-api-key`, `Authorization: Bearer`, `x-goog-api-key`, `?key=`) → 401 in the
//!    caller's format if absent;
//! 3. the body's bytes are reserved in the gateway-wide [`body_budget`] (503 when it stays
//!    full for `limits.body_wait`), then it is read once, bounded (`limits.max_body_bytes`,
//!    413 beyond; 408 if it has not arrived within `timeouts.request`), and the model
//!    and `stream` flag are read without re-encoding it (400 if it is not valid JSON);
//! 4. the model's route is resolved (404 listing the routes if unknown); refused keys
//!    and unrouted models are counted and logged by [`refusals`];
//! 5. [`failover::serve`] runs the failover loop: candidates from the health engine, each
//!    attempt admitted, sent with only its `model` spliced, classified, recorded; streams
//!    are held until their first content event, then pumped to the terminal event;
//!    every upstream body reaches the caller only through [`caller_bound`]: read whole
//!    within the request deadline, refused (and failed over) when truncated, oversized or
//!    not JSON, and with every configured secret masked;
//! 6. every response carries `x-keyward-credential`, `x-keyward-target`,
//!    `x-keyward-attempts` and `server-timing` (gateway time excluding upstream time).
//!
//! Paths no route matches answer 404 (405 for a wrong method) in the caller's format,
//! naming the endpoints served. A panic inside one request becomes a 500 for that request
//! only.

pub mod admin;
pub mod alerts;
pub mod answer;
mod attempt;
pub mod body_budget;
pub mod caller_bound;
pub mod caller_error;
pub(crate) mod cloud;
mod continuation;
mod crossing;
pub mod failover;
mod inbound;
pub mod listener;
pub mod metrics;
pub mod oauth;
pub mod page;
pub mod prober;
pub mod rates;
pub mod refusals;
pub mod reload;
mod stream;
mod telemetry;
pub mod upstream;
mod verdict;

use rustc_hash::FxHashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use keyward_core::health::budget::{RetryBudget, RetryBudgetConfig};
use keyward_core::health::{CredentialSpec, HealthEngine, RouteSpec, TargetSpec, TransitionSink};
use keyward_wire::stream::Api;

use crate::config::{Config, Credential, Route};
use caller_error::CallerError;
pub(crate) use inbound::constant_time_eq;
pub use inbound::{authenticate, bearer, presented_key, run_guarded};
use inbound::{chat, count_tokens, embeddings, gemini, messages, models, ready, responses};
pub use reload::Live;
use upstream::Inbound;

/// Everything a request needs, shared.
#[derive(Debug)]
pub struct Gateway {
    pub cfg: Arc<Config>,
    /// Shared across reloads (a reload hands the old snapshot's on).
    pub metrics: Arc<metrics::Metrics>,
    /// OAuth access tokens; shared across reloads like the metrics.
    pub oauth: Arc<oauth::OAuth>,
    /// Fleet mode's Redis store (leases, fleet status, the fleet log); shared across
    /// reloads.
    pub fleet: Option<keyward_store::RedisStore>,
    pub engine: HealthEngine,
    pub client: upstream::Client,
    /// Request-body bytes held at once (`limits.max_buffered_body_bytes`); a reload
    /// hands the running one on.
    pub body_budget: Arc<body_budget::BodyBudget>,
    /// Every secret of this configuration, masked in whatever reaches a caller.
    pub mask: caller_bound::SecretMask,
    /// Alerts (webhooks); shared across reloads like the metrics.
    pub alerts: Arc<alerts::Alerts>,
    // Looked up on every request: FxHash, not SipHash (the keys come from the config).
    creds: FxHashMap<Arc<str>, Arc<Credential>>,
    routes: FxHashMap<String, Arc<Route>>,
    specs: FxHashMap<String, Arc<RouteSpec>>,
    /// Each route target's upstream URL per inbound API (by [`upstream::Inbound::slot`]),
    /// parsed once per configuration instead of once per request.
    urls: FxHashMap<String, Vec<[Option<axum::http::Uri>; upstream::URL_SLOTS]>>,
    retry_budget: Mutex<RetryBudget>,
}

/// A request read and checked, ready for the failover loop.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub route: Arc<Route>,
    /// The caller's gateway key name (for per-key metrics).
    pub gateway_key: Arc<str>,
    pub body: Bytes,
    /// Where the body's `model` value is (to rewrite it per target); `None` for Gemini,
    /// which names the model in the URL.
    pub model_at: Option<std::ops::Range<usize>>,
    pub stream: bool,
    /// The conversation's hash (its system prompt and first turn), for session affinity
    /// when the caller sends no session header, and whether it is past its first turn.
    pub conversation: Option<u64>,
    pub continued: bool,
}

impl Gateway {
    /// Builds the gateway: the engine is configured from `cfg`, its transitions go to
    /// `sink`.
    pub fn new(cfg: Config, engine: HealthEngine) -> Result<Gateway, upstream::ClientError> {
        let metrics = Arc::new(metrics::Metrics::new());
        let oauth = Arc::new(oauth::OAuth::new(None, metrics.clone()));
        Gateway::build(cfg, engine, metrics, oauth)
    }

    /// [`Gateway::new`] with the metrics and OAuth tokens of a running gateway (a reload,
    /// or a start with a state file).
    pub fn build(
        cfg: Config,
        engine: HealthEngine,
        metrics: Arc<metrics::Metrics>,
        oauth: Arc<oauth::OAuth>,
    ) -> Result<Gateway, upstream::ClientError> {
        // Never follows a redirect, and no system proxy: upstreams are configured
        // explicitly.
        let client = upstream::Client::new(cfg.timeouts.connect)?;
        engine.set_policy(cfg.policy.clone());
        engine.set_retention(cfg.removed_credential_retention);
        engine.configure(
            cfg.credentials
                .iter()
                .map(|c| CredentialSpec {
                    id: c.id.clone(),
                    provider: cfg
                        .endpoints
                        .get(&c.endpoint)
                        .map_or(keyward_core::classify::Provider::Unknown, |e| e.provider),
                    endpoint: c.endpoint.clone(),
                    bucket: c.bucket.clone(),
                    fingerprint: fingerprint(c, &oauth).into(),
                    priority: c.priority,
                    models: c.models.clone(),
                })
                .collect(),
        );
        let creds = cfg
            .credentials
            .iter()
            .map(|c| (c.id.clone(), Arc::new(c.clone())))
            .collect();
        let specs = cfg
            .routes
            .iter()
            .map(|(name, r)| {
                (
                    name.clone(),
                    Arc::new(RouteSpec::new(
                        r.targets
                            .iter()
                            .map(|t| TargetSpec {
                                endpoint: t.endpoint.clone(),
                                model: t.model.clone(),
                                credentials: t.credentials.clone(),
                            })
                            .collect(),
                    )),
                )
            })
            .collect();
        let routes = cfg
            .routes
            .iter()
            .map(|(name, r)| (name.clone(), Arc::new(r.clone())))
            .collect();
        let urls = cfg
            .routes
            .iter()
            .map(|(name, r)| {
                let per_target = r
                    .targets
                    .iter()
                    .map(|t| {
                        let mut slots: [Option<axum::http::Uri>; upstream::URL_SLOTS] =
                            Default::default();
                        if let Some(ep) = cfg.endpoints.get(&t.endpoint) {
                            for inbound in upstream::Inbound::CACHED {
                                if let (Some(i), Some(u)) = (
                                    inbound.slot(),
                                    upstream::parse(&upstream::url(inbound, ep, &t.model)),
                                ) {
                                    slots[i] = Some(u);
                                }
                            }
                        }
                        slots
                    })
                    .collect();
                (name.clone(), per_target)
            })
            .collect();
        oauth.cloud.retain(&cfg.credentials);
        let mask = caller_bound::SecretMask::new(
            cfg.credentials
                .iter()
                .filter_map(|c| c.secret.as_ref().map(crate::config::Secret::expose))
                .chain(
                    cfg.credentials
                        .iter()
                        .filter_map(|c| c.cloud.as_ref())
                        .flat_map(crate::config::CloudAuth::secrets),
                )
                .chain(cfg.gateway_keys.iter().map(|k| k.key.expose()))
                .chain(cfg.admin.iter().map(|a| a.token.expose())),
        );
        Ok(Gateway {
            alerts: alerts::Alerts::off(metrics.clone()),
            body_budget: Arc::new(body_budget::BodyBudget::new(
                cfg.limits.max_buffered_body_bytes,
            )),
            mask,
            metrics,
            oauth,
            fleet: None,
            cfg: Arc::new(cfg),
            engine,
            client,
            creds,
            routes,
            specs,
            urls,
            retry_budget: Mutex::new(RetryBudget::new(RetryBudgetConfig::default())),
        })
    }

    /// The secret to send with `cred` now: its key, or its current OAuth access token
    /// (refreshed first when it is about to expire).
    pub async fn auth(&self, cred: &Credential) -> Result<Arc<str>, oauth::AccessError> {
        if let Some(auth) = &cred.cloud {
            return self.oauth.cloud.access(cred, auth, &self.engine).await;
        }
        match (&cred.secret, &cred.oauth) {
            (Some(s), _) => Ok(s.shared()),
            (None, Some(cfg)) => self.oauth.access(cred, cfg, &self.engine).await,
            (None, None) => Err(oauth::AccessError::NotImported(cred.id.to_string())),
        }
    }

    /// What identifies `cred`'s secret in status views and the denylist: the key's
    /// fingerprint, or an OAuth grant's as imported.
    pub fn fingerprint(&self, cred: &Credential) -> String {
        self.engine
            .fingerprint(&cred.id)
            .unwrap_or_else(|| fingerprint(cred, &self.oauth))
    }

    pub fn credential(&self, id: &str) -> Option<Arc<Credential>> {
        self.creds.get(id).cloned()
    }

    pub fn route(&self, name: &str) -> Option<Arc<Route>> {
        self.routes.get(name).cloned()
    }

    pub fn route_spec(&self, name: &str) -> Arc<RouteSpec> {
        self.specs.get(name).cloned().unwrap_or_default()
    }

    /// The upstream URL of `route`'s target `target` for `inbound` (cached when the
    /// configuration was built; parsed now for the rare uncached ones).
    pub fn upstream_url(
        &self,
        route: &str,
        target: usize,
        inbound: Inbound,
        endpoint: &crate::config::Endpoint,
        model: &str,
    ) -> Option<axum::http::Uri> {
        let cached = inbound
            .slot()
            .and_then(|i| self.urls.get(route)?.get(target)?[i].clone());
        cached.or_else(|| upstream::parse(&upstream::url(inbound, endpoint, model)))
    }

    /// Spends one retry from the gateway-wide budget.
    pub fn spend_retry(&self) -> bool {
        let now = self.engine.now();
        self.retry_budget
            .lock()
            .map(|mut b| b.try_spend(now))
            .unwrap_or(false)
    }
}

/// `cred`'s fingerprint when a configuration is built: the key's, or the OAuth grant's as
/// imported (`none` before an import).
fn fingerprint(cred: &Credential, oauth: &oauth::OAuth) -> String {
    if let Some(auth) = &cred.cloud {
        return auth.fingerprint();
    }
    match &cred.secret {
        Some(s) => s.fingerprint(),
        None => oauth
            .grant_fingerprint(&cred.id)
            .unwrap_or_else(|| "none".into()),
    }
}

/// The snapshot of the gateway a request runs on, taken when it starts.
#[derive(Debug)]
pub struct Snapshot(pub Arc<Gateway>);

impl axum::extract::FromRequestParts<Arc<Live>> for Snapshot {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        _parts: &mut axum::http::request::Parts,
        live: &Arc<Live>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Snapshot(live.current()))
    }
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The callers' APIs, and the admin API and `/metrics` too unless they have a
    /// listener of their own (`admin = false`).
    Proxy { admin: bool },
    /// The admin listener (`[admin] listen`): the admin API, `/metrics` and `/healthz`.
    Admin,
}

impl Surface {
    /// One listener for everything (no `[admin] listen`).
    pub const COMBINED: Surface = Surface::Proxy { admin: true };
}

/// What the proxy listener serves, for 404/405 answers.
const CALLER_ENDPOINTS: &str = "POST /v1/messages, POST /v1/messages/count_tokens, POST /v1/chat/completions, POST /v1/responses, POST /v1/embeddings, POST /v1beta/models/{model}:generateContent, POST /v1beta/models/{model}:streamGenerateContent, GET /v1/models, GET /healthz, GET /readyz";
const ADMIN_ENDPOINTS: &str = "GET /admin/credentials, GET /admin/credentials/{id}, GET /admin/credentials/{id}/history, POST /admin/credentials/{id}/reset, POST /admin/credentials/{id}/disable, POST /admin/credentials/{id}/probe, POST /admin/reload, GET /admin/config, GET /metrics, GET /healthz";

/// The router of a single listener serving everything.
pub fn router(live: Arc<Live>) -> Router {
    router_for(live, Surface::COMBINED)
}

/// The router of one listener.
pub fn router_for(live: Arc<Live>, surface: Surface) -> Router {
    let callers = || {
        Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/responses", post(responses))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1beta/models/{model_action}", post(gemini))
            .route("/v1/models", get(models))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
    };
    let routes = match surface {
        Surface::Proxy { admin: true } => callers().merge(admin::routes()),
        Surface::Proxy { admin: false } => callers(),
        Surface::Admin => admin::routes().route("/healthz", get(|| async { "ok" })),
    };
    routes
        .fallback(move |req: Request<Body>| async move { unmatched(&req, surface, false) })
        .method_not_allowed_fallback(move |req: Request<Body>| async move {
            unmatched(&req, surface, true)
        })
        .layer(axum::Extension(surface))
        .with_state(live)
}

/// A 404 (or 405) in the caller's format, naming the path and what is served here.
fn unmatched(req: &Request<Body>, surface: Surface, wrong_method: bool) -> Response<Body> {
    let path: String = req.uri().path().chars().take(200).collect();
    let api = if path.starts_with("/v1beta") {
        Api::Gemini
    } else if path.starts_with("/v1/messages") {
        Api::Messages
    } else {
        Api::ChatCompletions
    };
    let mut served = match surface {
        Surface::Admin => ADMIN_ENDPOINTS.to_owned(),
        Surface::Proxy { admin: true } => format!("{CALLER_ENDPOINTS}, {ADMIN_ENDPOINTS}"),
        Surface::Proxy { admin: false } => CALLER_ENDPOINTS.to_owned(),
    };
    if surface == (Surface::Proxy { admin: false })
        && (path.starts_with("/admin") || path == "/metrics")
    {
        served.push_str("; the admin API and /metrics are on the admin listener ([admin] listen)");
    }
    let (status, what) = if wrong_method {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} is not served at", req.method()),
        )
    } else {
        (StatusCode::NOT_FOUND, "no endpoint at".to_owned())
    };
    CallerError::new(
        status,
        "not_found_error",
        "not_found",
        format!("keyward: {what} `{path}`; this listener serves {served}"),
    )
    .response(api)
}

/// How long in-flight requests and streams may drain after a shutdown signal.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves on `listener` until `shutdown` resolves; then stops accepting and lets in-flight
/// requests and streams finish, for at most [`DRAIN_LIMIT`].
pub async fn run(
    gw: Arc<Live>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with_drain(gw, listener, shutdown, DRAIN_LIMIT).await
}

/// [`run`] with an explicit drain limit.
pub async fn run_with_drain(
    gw: Arc<Live>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: std::time::Duration,
) -> std::io::Result<()> {
    run_listeners(gw, listener, None, shutdown, drain).await
}

/// The admin listener's connection cap (operators and a scraper, not callers).
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// Serves the callers' APIs on `proxy` and, when `admin` is given, the admin API and
/// `/metrics` there instead of on `proxy`; until `shutdown` resolves, then drains both
/// for at most `drain`.
pub async fn run_listeners(
    gw: Arc<Live>,
    proxy: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: std::time::Duration,
) -> std::io::Result<()> {
    let prober = tokio::spawn(prober::run(gw.clone()));
    let refresher = tokio::spawn(refresh_ahead(gw.clone()));
    let watcher = tokio::spawn(gw.clone().watch());
    let alerts = tokio::spawn(alerts::deliver(gw.clone()));
    let now = gw.current();
    let limits = listener::ConnLimits::from_config(&now.cfg.server);
    let metrics = now.metrics.clone();
    drop(now);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let forward = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let surface = Surface::Proxy {
        admin: admin.is_none(),
    };
    let proxy = listener::serve(
        proxy,
        router_for(gw.clone(), surface),
        limits,
        metrics.clone(),
        signal(stop_rx.clone()),
        drain,
    );
    let result = match admin {
        None => proxy.await,
        Some(admin) => {
            let admin = listener::serve(
                admin,
                router_for(gw.clone(), Surface::Admin),
                listener::ConnLimits {
                    max_connections: limits.max_connections.min(ADMIN_MAX_CONNECTIONS),
                    ..limits
                },
                metrics,
                signal(stop_rx),
                drain,
            );
            let (p, a) = tokio::join!(proxy, admin);
            p.and(a)
        }
    };
    forward.abort();
    prober.abort();
    refresher.abort();
    watcher.abort();
    alerts.abort();
    result
}

/// Refreshes OAuth tokens ahead of their expiry, in the background.
async fn refresh_ahead(live: Arc<Live>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let gw = live.current();
        if gw.cfg.credentials.iter().any(|c| c.oauth.is_some()) {
            gw.oauth.refresh_due(&gw.cfg.credentials, &gw.engine);
        }
        if gw.cfg.credentials.iter().any(|c| c.cloud.is_some()) {
            gw.oauth.cloud.refresh_due(&gw.cfg.credentials, &gw.engine);
        }
    }
}

/// A sink that does nothing (a gateway run without state, in tests).
pub fn null_sink() -> Arc<dyn TransitionSink> {
    Arc::new(keyward_core::health::NullSink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in ["Bearer kw-1", "bearer kw-1", "BEARER kw-1", "Bearer  kw-1"] {
            assert_eq!(bearer(v), Some("kw-1"), "{v}");
        }
        assert_eq!(bearer("Basic kw-1"), None);
        assert_eq!(bearer("Bearerkw-1"), None);
    }

    #[tokio::test]
    async fn a_panic_in_one_request_is_a_500_for_that_request_only() {
        let r = run_guarded(Inbound::Messages, async { panic!("boom") }).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "api_error");
        // The next request is served normally.
        let ok = run_guarded(Inbound::Chat, async { Response::new(Body::from("fine")) }).await;
        assert_eq!(ok.status(), StatusCode::OK);
        let r = run_guarded(Inbound::Chat, async { panic!("again") }).await;
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v["error"]["message"].is_string(),
            "OpenAI shape for an OpenAI caller"
        );
    }
}
