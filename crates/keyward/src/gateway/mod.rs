//! The HTTP gateway.
//!
//! Request path, top to bottom (keep this list true):
//! 0. [`listener::serve`] accepts the connection under `[server]`'s limits (connection
//!    cap, header-read and idle timeouts) and tags each request with its peer address;
//! 1. `route` picks the inbound API by path (`/v1/messages`, `/v1/chat/completions`);
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
pub mod answer;
mod attempt;
pub mod body_budget;
pub mod caller_bound;
pub mod caller_error;
pub mod failover;
pub mod listener;
pub mod metrics;
pub mod oauth;
pub mod page;
pub mod prober;
pub mod rates;
pub mod refusals;
pub mod reload;
mod stream;
pub mod upstream;
mod verdict;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::FutureExt;
use keyward_core::health::budget::{RetryBudget, RetryBudgetConfig};
use keyward_core::health::{CredentialSpec, HealthEngine, RouteSpec, TargetSpec, TransitionSink};
use keyward_wire::splice;
use keyward_wire::stream::Api;
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument as _;

use crate::config::{Config, Credential, Detail, Route};
use caller_error::CallerError;
pub use reload::Live;
use upstream::{GeminiCall, Inbound};

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
    creds: HashMap<Arc<str>, Arc<Credential>>,
    routes: HashMap<String, Arc<Route>>,
    specs: HashMap<String, Arc<RouteSpec>>,
    /// Each route target's upstream URL per inbound API (by [`upstream::Inbound::slot`]),
    /// parsed once per configuration instead of once per request.
    urls: HashMap<String, Vec<[Option<axum::http::Uri>; upstream::URL_SLOTS]>>,
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
        let mask = caller_bound::SecretMask::new(
            cfg.credentials
                .iter()
                .filter_map(|c| c.secret.as_ref().map(crate::config::Secret::expose))
                .chain(cfg.gateway_keys.iter().map(|k| k.key.expose()))
                .chain(cfg.admin.iter().map(|a| a.token.expose())),
        );
        Ok(Gateway {
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
    }
}

#[derive(Debug, Deserialize, Default)]
struct KeyQuery {
    key: Option<String>,
}

async fn messages(
    Snapshot(gw): Snapshot,
    Query(q): Query<KeyQuery>,
    req: Request<Body>,
) -> Response<Body> {
    guarded(gw, Inbound::Messages, q, req).await
}

async fn count_tokens(
    Snapshot(gw): Snapshot,
    Query(q): Query<KeyQuery>,
    req: Request<Body>,
) -> Response<Body> {
    guarded(gw, Inbound::CountTokens, q, req).await
}

async fn responses(
    Snapshot(gw): Snapshot,
    Query(q): Query<KeyQuery>,
    req: Request<Body>,
) -> Response<Body> {
    guarded(gw, Inbound::Responses, q, req).await
}

async fn embeddings(
    Snapshot(gw): Snapshot,
    Query(q): Query<KeyQuery>,
    req: Request<Body>,
) -> Response<Body> {
    guarded(gw, Inbound::Embeddings, q, req).await
}

async fn chat(
    Snapshot(gw): Snapshot,
    Query(q): Query<KeyQuery>,
    req: Request<Body>,
) -> Response<Body> {
    guarded(gw, Inbound::Chat, q, req).await
}

async fn gemini(
    Snapshot(gw): Snapshot,
    axum::extract::Path(model_action): axum::extract::Path<String>,
    Query(q): Query<GeminiQuery>,
    req: Request<Body>,
) -> Response<Body> {
    let (model, action) = model_action
        .split_once(':')
        .unwrap_or((model_action.as_str(), ""));
    let call = match action {
        "generateContent" => GeminiCall {
            stream: false,
            sse: false,
        },
        "streamGenerateContent" => GeminiCall {
            stream: true,
            sse: q.alt.as_deref() == Some("sse"),
        },
        other => {
            return CallerError::bad_request(format!(
                "keyward: unsupported Gemini method {:?}; use generateContent or streamGenerateContent",
                caller_error::bounded(other, caller_error::MAX_QUOTED_CHARS)
            ))
            .response(Api::Gemini);
        }
    };
    let model = model.to_owned();
    let key = KeyQuery { key: q.key };
    run_guarded(
        Inbound::Gemini(call),
        handle(gw, Inbound::Gemini(call), key, req, Some(model)),
    )
    .await
}

#[derive(Debug, Deserialize, Default)]
struct GeminiQuery {
    key: Option<String>,
    alt: Option<String>,
}

/// One request; a panic inside becomes a 500 for this request only.
async fn guarded(
    gw: Arc<Gateway>,
    inbound: Inbound,
    q: KeyQuery,
    req: Request<Body>,
) -> Response<Body> {
    run_guarded(inbound, handle(gw, inbound, q, req, None)).await
}

/// Runs one request's future; a panic inside becomes a 500 in the caller's format for this
/// request only, and the gateway keeps serving.
///
/// Not an `async fn`: one would hold `fut` twice in its state (as the argument and as the
/// awaited future), doubling every request's future.
pub fn run_guarded(
    inbound: Inbound,
    fut: impl Future<Output = Response<Body>>,
) -> impl Future<Output = Response<Body>> {
    std::panic::AssertUnwindSafe(fut)
        .catch_unwind()
        .map(move |r| match r {
            Ok(r) => r,
            Err(_) => {
                tracing::error!("a request panicked; answered 500 and kept serving");
                CallerError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "api_error",
                    "internal_error",
                    "keyward: internal error while handling this request",
                )
                .response(inbound.api())
            }
        })
}

async fn handle(
    gw: Arc<Gateway>,
    inbound: Inbound,
    q: KeyQuery,
    req: Request<Body>,
    path_model: Option<String>,
) -> Response<Body> {
    let api = inbound.api();
    let (parts, body) = req.into_parts();
    let (key_name, detail) = match authenticate(&gw.cfg, &parts.headers, q.key.as_deref()) {
        Ok(k) => k,
        Err(why) => {
            refused(&gw, why, &parts, q.key.as_deref(), inbound.name());
            return CallerError::unauthenticated().response(api);
        }
    };
    let limit = gw.cfg.limits.max_body_bytes;
    let declared = body_budget::declared_length(&parts.headers);
    if declared.is_some_and(|n| n > limit) {
        return CallerError::too_large(limit).response(api);
    }
    // Held until the request is answered: the body stays in memory for replays.
    let Some(_held) = gw
        .body_budget
        .reserve(declared.unwrap_or(limit), gw.cfg.limits.body_wait)
        .await
    else {
        gw.metrics.body_budget_rejections.inc();
        tracing::debug!(
            budget_bytes = gw.cfg.limits.max_buffered_body_bytes,
            "request body budget full: answered 503 (limits.max_buffered_body_bytes)"
        );
        return CallerError::busy().response(api);
    };
    // A body that trickles in would hold its reservation: it must arrive within the
    // request deadline.
    let deadline = gw.cfg.timeouts.request;
    let body = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return CallerError::too_large(limit).response(api),
        Err(_) => return CallerError::body_too_slow(deadline).response(api),
    };
    // One pass over the body finds the model (to route, and to rewrite per target) and
    // the stream flag.
    let (model, model_at, stream, conversation) = match (path_model, inbound) {
        // Gemini names the model in the path (the body has none) and streams by method.
        (Some(m), Inbound::Gemini(call)) => (
            m,
            None,
            call.stream,
            splice::top_level(&body)
                .ok()
                .map(|t| (t.conversation, t.continued)),
        ),
        (Some(m), _) => (m, None, false, None),
        (None, _) => {
            let top = match splice::top_level(&body) {
                Ok(top) => top,
                Err(e) => return CallerError::bad_request(format!("keyward: {e}")).response(api),
            };
            let Some(at) = top.model else {
                return CallerError::bad_request("keyward: the request body has no `model`")
                    .response(api);
            };
            match splice::decode_model(&body, at.clone()) {
                Ok(m) => (
                    m,
                    Some(at),
                    top.stream,
                    Some((top.conversation, top.continued)),
                ),
                Err(e) => return CallerError::bad_request(format!("keyward: {e}")).response(api),
            }
        }
    };
    let Some(route) = gw.route(&model) else {
        gw.metrics
            .refusals
            .unrouted(&gw.metrics, inbound.name(), &key_name, &model);
        let names: Vec<&str> = gw.cfg.routes.keys().map(String::as_str).collect();
        return CallerError::unknown_model(&model, &names).response(api);
    };
    let servable = route.targets.iter().any(|t| {
        gw.cfg
            .endpoints
            .get(&t.endpoint)
            .is_some_and(|e| inbound.served_by(e.provider))
    });
    if !servable {
        return CallerError::bad_request(format!(
            "keyward: model `{model}` is routed to endpoints that do not speak this API ({}); call it through its own API or route it to a compatible endpoint",
            inbound.name()
        ))
        .response(api);
    }
    let stream = stream
        && matches!(
            inbound,
            Inbound::Messages | Inbound::Chat | Inbound::Responses | Inbound::Gemini(_)
        );
    let route_name = route.name.clone();
    let id = request_id();
    let span =
        tracing::info_span!("request", id = %id, route = %route_name, gateway_key = %key_name);
    let mut r = failover::serve(
        gw.clone(),
        inbound,
        Prepared {
            route,
            gateway_key: key_name.clone(),
            body,
            model_at,
            stream,
            conversation: conversation.and_then(|(c, _)| c),
            continued: conversation.is_some_and(|(_, c)| c),
        },
        parts.headers,
        detail,
    )
    .instrument(span.clone())
    .await;
    count_request(&gw, &route_name, &key_name, &r);
    span.in_scope(|| {
        let header =
            |name: axum::http::HeaderName| r.headers().get(name).and_then(|v| v.to_str().ok());
        // An answer the gateway built itself carries its cost as an extension.
        let built = r.extensions().get::<answer::AttemptInfo>();
        let attempts = built.map_or_else(
            || header(answer::X_KEYWARD_ATTEMPTS).unwrap_or("0").to_owned(),
            |b| b.attempts.to_string(),
        );
        let credential = built
            .and_then(|b| b.credential.as_deref())
            .or_else(|| header(answer::X_KEYWARD_CREDENTIAL))
            .unwrap_or("-");
        tracing::info!(
            status = r.status().as_u16(),
            attempts = %attempts,
            credential = %credential,
            timing = header(answer::SERVER_TIMING).unwrap_or("-"),
            stream,
            "request answered"
        );
    });
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        r.headers_mut().insert(answer::X_KEYWARD_REQUEST_ID, v);
    }
    r
}

/// A request id: unique within the process and unlikely to repeat across restarts
/// (a counter mixed with the start time through SplitMix64).
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(crate::seed);
    let mut z = base.wrapping_add(
        NEXT.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    format!("kw-{:016x}", z ^ (z >> 31))
}

/// Request metrics from the response the caller gets.
fn count_request(gw: &Gateway, route: &Arc<str>, key: &Arc<str>, r: &Response<Body>) {
    let m = &gw.metrics;
    let status = match r.status().as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    m.requests
        .get_or_create(&metrics::RouteKey {
            route: route.clone(),
            gateway_key: key.clone(),
            status,
        })
        .inc();
    let header = |name: axum::http::HeaderName| r.headers().get(name).and_then(|v| v.to_str().ok());
    let label = m.route(route);
    let attempts = match r.extensions().get::<answer::AttemptInfo>() {
        Some(b) => Some(f64::from(b.attempts)),
        None => header(answer::X_KEYWARD_ATTEMPTS).and_then(|v| v.parse::<f64>().ok()),
    };
    if let Some(n) = attempts {
        m.attempts_per_request.get_or_create(&label).observe(n);
        if n > 1.0 && r.status().is_success() {
            m.failovers.get_or_create(&label).inc();
        }
    }
    if let Some(ms) = header(answer::SERVER_TIMING)
        .and_then(|v| v.strip_prefix("gateway;dur="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        m.gateway_seconds.get_or_create(&label).observe(ms / 1000.0);
    }
}

/// The gateway key a caller presented, wherever its SDK puts it.
pub fn presented_key<'a>(headers: &'a HeaderMap, query_key: Option<&'a str>) -> Option<&'a str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(bearer)
        })
        .or_else(|| headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()))
        .or(query_key)
}

/// The token of an `Authorization: Bearer …` value. HTTP auth schemes are
/// case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` are accepted too.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// The caller's gateway key, wherever its SDK puts it; compared in constant time.
pub fn authenticate(
    cfg: &Config,
    headers: &HeaderMap,
    query_key: Option<&str>,
) -> Result<(Arc<str>, Detail), refusals::AuthFailure> {
    let presented = presented_key(headers, query_key).ok_or(refusals::AuthFailure::Missing)?;
    cfg.gateway_keys
        .iter()
        .find(|k| constant_time_eq(k.key.expose().as_bytes(), presented.trim().as_bytes()))
        .map(|k| (k.name.clone(), k.detail))
        .ok_or(refusals::AuthFailure::Invalid)
}

/// Counts and logs (throttled) a refused gateway key; the key itself is never logged.
fn refused(
    gw: &Gateway,
    why: refusals::AuthFailure,
    parts: &axum::http::request::Parts,
    query_key: Option<&str>,
    api: &'static str,
) {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    gw.metrics.refusals.auth_failed(
        &gw.metrics,
        why,
        presented_key(&parts.headers, query_key),
        peer,
        api,
    );
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn models(
    Snapshot(gw): Snapshot,
    Query(q): Query<KeyQuery>,
    req: Request<Body>,
) -> Response<Body> {
    let (parts, _) = req.into_parts();
    if let Err(why) = authenticate(&gw.cfg, &parts.headers, q.key.as_deref()) {
        refused(&gw, why, &parts, q.key.as_deref(), "models");
        return CallerError::unauthenticated().response(Api::ChatCompletions);
    }
    let data: Vec<_> = gw
        .cfg
        .routes
        .keys()
        .map(|name| json!({"id": name, "object": "model", "owned_by": "keyward"}))
        .collect();
    let mut r = Response::new(Body::from(
        json!({"object": "list", "data": data}).to_string(),
    ));
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn ready(Snapshot(gw): Snapshot) -> Response<Body> {
    let mut body = json!({"ready": true, "routes": gw.cfg.routes.len(), "credentials": gw.cfg.credentials.len()});
    let mut status = StatusCode::OK;
    if let Some(fleet) = &gw.fleet {
        // Not ready until the fleet state was loaded once: a replica that never saw it
        // would send traffic to keys the fleet already knows are dead. Once loaded, a
        // Redis outage is reported, not a reason to stop taking traffic.
        let s = fleet.status();
        if !s.loaded {
            body["ready"] = json!(false);
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
        body["fleet"] = json!({
            "replica": s.replica,
            "state": if !s.loaded { "loading" } else if s.degraded_since.is_some() { "degraded" } else { "connected" },
            "pending_transitions": s.pending,
            "last_error": s.last_error,
        });
    }
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r
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
