//! # keyward-sim
//!
//! Scripted fake LLM providers for Keyward's tests, benchmarks and `keyward demo`. One
//! server speaks the Anthropic Messages, OpenAI (Chat Completions, Responses, Embeddings),
//! Azure OpenAI (deployment URLs with `api-version` and the `api-key` header) and Gemini
//! shapes, streaming and not, plus the cheap endpoints probes use
//! (`/v1/messages/count_tokens`, `/v1/models`).
//! Each API key has a [`Behaviour`] that can change while traffic runs; every request is
//! counted per key and outcome.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use keyward_sim::{Behaviour, Sim};
//!
//! let sim = Sim::new();
//! let server = sim.clone().serve("127.0.0.1:0".parse().unwrap()).await?;
//! sim.set("sk-ant-team-2", Behaviour::Revoked);
//! println!("sim on {}", server.addr());
//! # Ok(()) }
//! ```
//!
//! People drive it over HTTP too: `POST /_sim/keys/{key}` with a behaviour as JSON
//! (`{"kind":"revoked"}`), `POST /_sim/incident` (`{"on":true}`), `GET /_sim/counts`.

pub mod redis_server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How the provider answers one key's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Behaviour {
    /// A normal answer.
    #[default]
    Ok,
    /// The key was revoked: 401 on every request, probes included.
    Revoked,
    /// The key is rejected with this status and error (the Anthropic body's `error.type`
    /// and `error.message`; OpenAI's `error.type`, `error.message` and `code`) on every
    /// request, probes included: a revocation as a given provider words it (Anthropic 403
    /// `permission_error` "API key has been revoked", say).
    Rejected {
        status: u16,
        error_type: String,
        message: String,
        #[serde(default)]
        code: Option<String>,
    },
    /// An expired OAuth access token: 401 "token has expired".
    ExpiredToken,
    /// No credit left (Anthropic 400 credit balance; OpenAI 429 insufficient_quota).
    NoCredit,
    /// Rate limited; `retry_after` seconds in `retry-after` when set.
    RateLimited { retry_after: Option<u64> },
    /// Rate limited, the reset given in one provider's style: `retry-after-ms`,
    /// `openai` (`x-ratelimit-reset-requests: 1s`), `anthropic`
    /// (`anthropic-ratelimit-requests-reset`, RFC 3339), `x-ratelimit-reset` (epoch),
    /// or `none`.
    RateLimitedReset { style: String, secs: u64 },
    /// The stream carries an invalid JSON event at this position.
    MalformedChunk { at: usize },
    /// A normal answer whose stream events each carry this many bytes of text (large
    /// events, e.g. images or long tool arguments).
    BigEvents { bytes: usize },
    /// Overloaded (Anthropic 529, OpenAI 503).
    Overloaded,
    /// A plain 500.
    ServerError,
    /// Wait this long before the response headers.
    SlowHeaders { ms: u64 },
    /// Close the connection before any response byte (a reset as the caller sees it).
    ConnectionReset,
    /// Headers at once, the first content after this long (streams).
    SlowFirstToken { ms: u64 },
    /// Cut the stream after this many content events, with no terminal event.
    StreamCut { after: usize },
    /// Go silent after this many content events, for this long, then end cleanly.
    StreamStall { after: usize, ms: u64 },
    /// The stream ends after its last content but without its terminal event.
    MissingTerminal,
    /// The stream's terminal event comes (Chat Completions: the `finish_reason` chunk with
    /// usage) but no `[DONE]`, and the connection stays open this long before closing.
    NoDone { hold_ms: u64 },
    /// An in-band error event after this many content events.
    MidStreamError { after: usize },
    /// The prompt is too long for this model.
    ContextOverflow,
    /// The model does not exist for this key.
    ModelNotFound,
    /// The safety system refuses the prompt.
    ContentFilter,
    /// The caller's request is invalid.
    BadRequest,
    /// Answers normally, but rejects a conversation ending in an assistant turn (no
    /// assistant prefill), as some models do.
    RejectsPrefill,
    /// A non-streaming 200 whose `content-length` promises the whole answer, but whose
    /// body stops after `bytes` bytes and the connection closes (a truncated success).
    ShortBody { bytes: usize },
    /// A non-streaming 200 whose body arrives one byte every `ms` milliseconds (each
    /// read within any idle limit, the whole far beyond a request deadline).
    DripBody { ms: u64 },
    /// A non-streaming 200 whose body is a valid JSON answer of about `bytes` bytes.
    HugeBody { bytes: usize },
    /// A `200 text/html` page (a captive portal, a misrouted proxy) instead of the API.
    Html,
    /// An error body that quotes the API key the request was made with: `status` 401
    /// (OpenAI-style `invalid_api_key`) or 400 (`invalid_request_error`).
    EchoKey { status: u16 },
    /// A 400 `invalid_request_error` whose body (a valid JSON object) is about `bytes`
    /// bytes long.
    HugeError { bytes: usize },
    /// A normal answer whose text quotes the API key the request was made with (in the
    /// non-streaming body, and in every content event of a stream).
    EchoKeyInAnswer,
}

/// Per-key request counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Inference requests (messages, chat completions).
    pub requests: u64,
    /// Probe-style requests (count_tokens, models).
    pub probes: u64,
    /// Outcomes by name (`ok`, `revoked`, …).
    pub outcomes: HashMap<String, u64>,
}

/// One request the sim answered, for timeline assertions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// When, from the sim's creation.
    pub at: Duration,
    /// The behaviour's name (`ok`, `rate_limited`, …), or `incident`.
    pub outcome: String,
    /// A probe-style request (`count_tokens`, models).
    pub probe: bool,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<String, Behaviour>,
    /// Behaviours each used once, in order, before the key's own behaviour applies again.
    scripts: HashMap<String, std::collections::VecDeque<Behaviour>>,
    log: HashMap<String, Vec<Attempt>>,
    started: Option<std::time::Instant>,
    default: Behaviour,
    incident: bool,
    counts: HashMap<String, Counts>,
    content_events: usize,
    oauth: OAuthSim,
}

/// The sim's OAuth authorization server: grants whose refresh tokens rotate on every use.
#[derive(Debug, Default)]
struct OAuthSim {
    grants: HashMap<String, Grant>,
    /// Access token → (grant, generation).
    access: HashMap<String, (String, u64)>,
    /// Refresh token → (grant, generation); a token older than its grant's generation has
    /// been consumed.
    refresh: HashMap<String, (String, u64)>,
    mode: TokenEndpoint,
    log: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct Grant {
    generation: u64,
    ttl: Duration,
    /// When each generation's access token expires.
    expires: HashMap<u64, std::time::Instant>,
    revoked: bool,
}

/// How the sim's token endpoint (`POST /v1/oauth/token`, `POST /oauth/token`) answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpoint {
    /// Refreshes normally.
    #[default]
    Ok,
    /// 503 on every call (the credential must be kept).
    Unavailable,
}

/// Tokens of a new grant, as a login would hand them out. `Debug` hides them.
#[derive(Clone, Serialize)]
pub struct SimTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

impl std::fmt::Debug for SimTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimTokens(expires_in={})", self.expires_in)
    }
}

/// A scripted provider. Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct Sim {
    inner: Arc<Mutex<Inner>>,
    /// Content events handed to a connection (Messages and Chat streams), all keys.
    emitted: Arc<std::sync::atomic::AtomicUsize>,
}

/// A running sim server.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SimServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Sim {
    /// A sim where every key answers normally.
    pub fn new() -> Sim {
        let sim = Sim::default();
        let mut inner = sim.lock();
        inner.content_events = 8;
        inner.started = Some(wall_instant());
        drop(inner);
        sim
    }

    /// Scripts `key`: its next requests get these behaviours, one each, in order; then its
    /// own behaviour (see [`Sim::set`]) applies again. Probes see the next scripted
    /// behaviour without using it.
    pub fn script(&self, key: &str, behaviours: impl IntoIterator<Item = Behaviour>) {
        self.lock()
            .scripts
            .insert(key.to_owned(), behaviours.into_iter().collect());
    }

    /// Every request `key` received so far, in order, with when and how it was answered.
    pub fn attempts(&self, key: &str) -> Vec<Attempt> {
        self.lock().log.get(key).cloned().unwrap_or_default()
    }

    /// Content events of Messages and Chat Completions streams handed to a connection so
    /// far, all keys together. A stream's producer waits while its reader does not read, so
    /// this shows how far ahead of a slow caller the gateway lets upstream run.
    pub fn emitted_events(&self) -> usize {
        self.emitted.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets one key's behaviour.
    pub fn set(&self, key: &str, behaviour: Behaviour) {
        self.lock().keys.insert(key.to_owned(), behaviour);
    }

    /// Sets the behaviour of keys without their own.
    pub fn set_default(&self, behaviour: Behaviour) {
        self.lock().default = behaviour;
    }

    /// A provider-wide auth incident: every key gets a spurious 401 while on.
    pub fn incident(&self, on: bool) {
        self.lock().incident = on;
    }

    /// How many content events a stream carries (default 8).
    pub fn set_stream_length(&self, events: usize) {
        self.lock().content_events = events.max(1);
    }

    /// A new OAuth grant named `grant` whose access tokens live `ttl`: the tokens a login
    /// would give. Requests with its access tokens are counted under `grant`.
    pub fn oauth_grant(&self, grant: &str, ttl: Duration) -> SimTokens {
        let mut inner = self.lock();
        let now = wall_instant();
        let mut g = Grant {
            generation: 1,
            ttl,
            expires: HashMap::new(),
            revoked: false,
        };
        g.expires.insert(1, now + ttl);
        let access = format!("sim-at-{grant}-1");
        let refresh = format!("sim-rt-{grant}-1");
        inner.oauth.grants.insert(grant.to_owned(), g);
        inner
            .oauth
            .access
            .insert(access.clone(), (grant.to_owned(), 1));
        inner
            .oauth
            .refresh
            .insert(refresh.clone(), (grant.to_owned(), 1));
        SimTokens {
            access_token: access,
            refresh_token: refresh,
            expires_in: ttl.as_secs(),
        }
    }

    /// Sets how the token endpoint answers.
    pub fn set_token_endpoint(&self, mode: TokenEndpoint) {
        self.lock().oauth.mode = mode;
    }

    /// Revokes a grant: its access and refresh tokens stop working.
    pub fn revoke_grant(&self, grant: &str) {
        if let Some(g) = self.lock().oauth.grants.get_mut(grant) {
            g.revoked = true;
        }
    }

    /// Expires the grant's current access token now (the provider's clock says so).
    pub fn expire_access(&self, grant: &str) {
        let now = wall_instant();
        if let Some(g) = self.lock().oauth.grants.get_mut(grant) {
            for e in g.expires.values_mut() {
                *e = now;
            }
        }
    }

    /// Every token endpoint call for `grant`, in order: `ok`, `reused` (a consumed refresh
    /// token: the grant is revoked), `revoked`, `unavailable`.
    pub fn token_calls(&self, grant: &str) -> Vec<String> {
        self.lock()
            .oauth
            .log
            .iter()
            .filter(|(g, _)| g == grant)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Successful refreshes of `grant`.
    pub fn refreshes(&self, grant: &str) -> usize {
        self.token_calls(grant)
            .iter()
            .filter(|o| o.as_str() == "ok")
            .count()
    }

    /// One token endpoint call.
    fn token_call(&self, refresh_token: &str) -> Result<SimTokens, (u16, Value)> {
        let mut inner = self.lock();
        let now = wall_instant();
        let invalid = |why: &str| {
            (
                400,
                json!({"error": "invalid_grant", "error_description": why}),
            )
        };
        let Some((grant, generation)) = inner.oauth.refresh.get(refresh_token).cloned() else {
            return Err(invalid("Invalid refresh token"));
        };
        if inner.oauth.mode == TokenEndpoint::Unavailable {
            inner.oauth.log.push((grant, "unavailable".into()));
            return Err((
                503,
                json!({"error": "temporarily_unavailable", "error_description": "The authorization server is temporarily unavailable"}),
            ));
        }
        let Some(g) = inner.oauth.grants.get_mut(&grant) else {
            return Err(invalid("Invalid refresh token"));
        };
        if g.revoked {
            inner.oauth.log.push((grant, "revoked".into()));
            return Err(invalid("Refresh token has been revoked"));
        }
        if generation < g.generation {
            // Reuse of a rotated refresh token: the whole grant is revoked (RFC 9700).
            g.revoked = true;
            inner.oauth.log.push((grant, "reused".into()));
            return Err(invalid("Refresh token has already been used"));
        }
        g.generation += 1;
        let next = g.generation;
        let ttl = g.ttl;
        g.expires.insert(next, now + ttl);
        let access = format!("sim-at-{grant}-{next}");
        let refresh = format!("sim-rt-{grant}-{next}");
        inner
            .oauth
            .access
            .insert(access.clone(), (grant.clone(), next));
        inner
            .oauth
            .refresh
            .insert(refresh.clone(), (grant.clone(), next));
        inner.oauth.log.push((grant, "ok".into()));
        Ok(SimTokens {
            access_token: access,
            refresh_token: refresh,
            expires_in: ttl.as_secs(),
        })
    }

    /// One key's counts.
    pub fn counts(&self, key: &str) -> Counts {
        self.lock().counts.get(key).cloned().unwrap_or_default()
    }

    /// Every key's counts.
    pub fn all_counts(&self) -> HashMap<String, Counts> {
        self.lock().counts.clone()
    }

    /// Serves on `addr` (port 0 picks a free port) until the returned server is dropped.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<SimServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = self.router();
        // Like a real provider's edge: small stream events go out at once.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
        });
        Ok(SimServer {
            addr,
            stop: Some(stop_tx),
        })
    }

    /// The sim's routes (for embedding).
    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/messages", post(anthropic_messages))
            .route("/v1/messages/count_tokens", post(anthropic_count_tokens))
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/responses", post(openai_responses))
            .route("/v1/embeddings", post(openai_embeddings))
            .route("/v1/models", get(models))
            .route("/v1beta/models/{model_action}", post(gemini))
            .route(
                "/openai/deployments/{deployment}/chat/completions",
                post(azure_chat),
            )
            .route(
                "/openai/deployments/{deployment}/embeddings",
                post(azure_embeddings),
            )
            .route("/openai/models", get(azure_models))
            .route("/_sim/keys/{key}", post(control_key))
            .route("/_sim/incident", post(control_incident))
            .route("/_sim/counts", get(control_counts))
            .route("/v1/oauth/token", post(token_endpoint))
            .route("/oauth/token", post(token_endpoint))
            .route("/_sim/oauth/{grant}", post(control_grant))
            .with_state(self)
    }

    /// Decides the behaviour for a request and counts it.
    fn take(&self, key: &str, probe: bool) -> (Behaviour, bool, usize) {
        let mut inner = self.lock();
        // An OAuth access token: counted under its grant, answered by the grant's state.
        let mut forced = None;
        let mut grant_key = None;
        if key.starts_with("sim-at-") {
            forced = Some(Behaviour::Revoked);
            if let Some((grant, generation)) = inner.oauth.access.get(key).cloned() {
                if let Some(g) = inner.oauth.grants.get(&grant) {
                    let expired = g
                        .expires
                        .get(&generation)
                        .is_none_or(|e| wall_instant() >= *e);
                    forced = if g.revoked {
                        Some(Behaviour::Revoked)
                    } else if expired {
                        Some(Behaviour::ExpiredToken)
                    } else {
                        None
                    };
                }
                grant_key = Some(grant);
            }
        }
        let key = grant_key.as_deref().unwrap_or(key);
        let scripted = match inner.scripts.get_mut(key) {
            // A probe sees what the next request would, without using it up.
            Some(q) if probe => q.front().cloned(),
            Some(q) => q.pop_front(),
            None => None,
        };
        let behaviour = forced.or(scripted).unwrap_or_else(|| {
            inner
                .keys
                .get(key)
                .cloned()
                .unwrap_or_else(|| inner.default.clone())
        });
        let incident = inner.incident;
        let outcome = if incident {
            "incident".to_owned()
        } else {
            behaviour_name(&behaviour)
        };
        let events = inner.content_events;
        let c = inner.counts.entry(key.to_owned()).or_default();
        if probe {
            c.probes += 1;
        } else {
            c.requests += 1;
        }
        *c.outcomes.entry(outcome.clone()).or_default() += 1;
        let at = inner
            .started
            .map(|s| wall_instant().saturating_duration_since(s))
            .unwrap_or_default();
        inner
            .log
            .entry(key.to_owned())
            .or_default()
            .push(Attempt { at, outcome, probe });
        (behaviour, incident, events)
    }
}

/// The sim plays a real provider in real time: its timeline is wall-clock.
#[allow(clippy::disallowed_methods)]
fn wall_instant() -> std::time::Instant {
    std::time::Instant::now()
}

/// A rate-limit reset `secs` from now, in one provider's header style.
fn reset_headers(style: &str, secs: u64) -> Vec<(&'static str, String)> {
    #[allow(clippy::disallowed_methods)] // the sim plays a real provider: wall-clock resets
    let now = std::time::SystemTime::now();
    let at = now + Duration::from_secs(secs);
    let epoch = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match style {
        "retry-after-ms" => vec![("retry-after-ms", (secs * 1000).to_string())],
        "openai" => vec![
            ("x-ratelimit-remaining-requests", "0".into()),
            ("x-ratelimit-reset-requests", format!("{secs}s")),
        ],
        "anthropic" => {
            // RFC 3339, second precision, rounded up.
            let t = std::time::UNIX_EPOCH + Duration::from_secs(epoch + 1);
            vec![
                ("anthropic-ratelimit-requests-remaining", "0".into()),
                ("anthropic-ratelimit-requests-reset", rfc3339(t)),
            ]
        }
        "x-ratelimit-reset" => vec![("x-ratelimit-reset", (epoch + 1).to_string())],
        _ => vec![],
    }
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn behaviour_name(b: &Behaviour) -> String {
    serde_json::to_value(b)
        .ok()
        .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "ok".into())
}

fn key_of(headers: &HeaderMap) -> String {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return k.to_owned();
    }
    if let Some(k) = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) {
        return k.to_owned();
    }
    if let Some(k) = headers.get("api-key").and_then(|v| v.to_str().ok()) {
        return k.to_owned();
    }
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned()
}

fn json_response(status: StatusCode, body: Value, extra: &[(&str, String)]) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    for (k, v) in extra {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(*k),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(name, value);
        }
    }
    r
}

fn anthropic_error(
    status: u16,
    ty: &str,
    message: &str,
    extra: &[(&str, String)],
) -> Response<Body> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({"type":"error","error":{"type":ty,"message":message},"request_id":"req_sim"}),
        extra,
    )
}

fn openai_error(
    status: u16,
    ty: &str,
    code: Option<&str>,
    message: &str,
    extra: &[(&str, String)],
) -> Response<Body> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({"error":{"message":message,"type":ty,"param":null,"code":code}}),
        extra,
    )
}

/// The error response a behaviour gives before any content, if it is an error one.
fn early_error(shape: Shape, b: &Behaviour, incident: bool) -> Option<Response<Body>> {
    if incident {
        return Some(match shape {
            Shape::Anthropic => {
                anthropic_error(401, "authentication_error", "invalid x-api-key", &[])
            }
            Shape::OpenAi => openai_error(
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
                "Incorrect API key provided.",
                &[],
            ),
        });
    }
    let retry = |s: &Option<u64>| {
        s.map(|s| vec![("retry-after", s.to_string())])
            .unwrap_or_default()
    };
    Some(match (shape, b) {
        (Shape::Anthropic, Behaviour::Revoked) => anthropic_error(401, "authentication_error", "invalid x-api-key", &[]),
        (Shape::Anthropic, Behaviour::Rejected { status, error_type, message, .. }) => anthropic_error(*status, error_type, message, &[]),
        (Shape::OpenAi, Behaviour::Rejected { status, error_type, message, code }) => openai_error(*status, error_type, code.as_deref(), message, &[]),
        (Shape::OpenAi, Behaviour::Revoked) => {
            openai_error(401, "invalid_request_error", Some("invalid_api_key"), "Incorrect API key provided: sk-***. You can find your API key at https://platform.openai.com/account/api-keys.", &[])
        }
        (Shape::Anthropic, Behaviour::ExpiredToken) => {
            anthropic_error(401, "authentication_error", "OAuth token has expired. Please obtain a new token or refresh your existing token.", &[])
        }
        (Shape::OpenAi, Behaviour::ExpiredToken) => openai_error(401, "invalid_request_error", Some("token_expired"), "Provided authentication token is expired.", &[]),
        (Shape::Anthropic, Behaviour::NoCredit) => anthropic_error(
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
            &[],
        ),
        (Shape::OpenAi, Behaviour::NoCredit) => openai_error(
            429,
            "insufficient_quota",
            Some("insufficient_quota"),
            "You exceeded your current quota, please check your plan and billing details.",
            &[],
        ),
        (Shape::Anthropic, Behaviour::RateLimited { retry_after }) => {
            anthropic_error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", &retry(retry_after))
        }
        (Shape::OpenAi, Behaviour::RateLimited { retry_after }) => {
            openai_error(429, "requests", Some("rate_limit_exceeded"), "Rate limit reached for requests per min (RPM).", &retry(retry_after))
        }
        (shape, Behaviour::RateLimitedReset { style, secs }) => {
            let headers = reset_headers(style, *secs);
            match shape {
                Shape::Anthropic => anthropic_error(429, "rate_limit_error", "Number of requests has exceeded your per-minute rate limit", &headers),
                Shape::OpenAi => openai_error(429, "requests", Some("rate_limit_exceeded"), "Rate limit reached for requests per min (RPM).", &headers),
            }
        }
        (Shape::Anthropic, Behaviour::Overloaded) => anthropic_error(529, "overloaded_error", "Overloaded", &[]),
        (Shape::OpenAi, Behaviour::Overloaded) => openai_error(503, "server_error", None, "The engine is currently overloaded, please try again later", &[]),
        (Shape::Anthropic, Behaviour::ServerError) => anthropic_error(500, "api_error", "Internal server error", &[]),
        (Shape::OpenAi, Behaviour::ServerError) => openai_error(500, "server_error", None, "The server had an error while processing your request.", &[]),
        (Shape::Anthropic, Behaviour::ContextOverflow) => {
            anthropic_error(400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum", &[])
        }
        (Shape::OpenAi, Behaviour::ContextOverflow) => openai_error(
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
            "This model's maximum context length is 128000 tokens.",
            &[],
        ),
        (Shape::Anthropic, Behaviour::ModelNotFound) => anthropic_error(404, "not_found_error", "model: not-a-model", &[]),
        (Shape::Anthropic, Behaviour::ContentFilter) => anthropic_error(
            400,
            "invalid_request_error",
            "Output blocked by content filtering policy",
            &[],
        ),
        (Shape::OpenAi, Behaviour::ContentFilter) => openai_error(
            400,
            "invalid_request_error",
            Some("content_policy_violation"),
            "Your request was rejected as a result of our safety system.",
            &[],
        ),
        (Shape::Anthropic, Behaviour::BadRequest) => {
            anthropic_error(400, "invalid_request_error", "messages: roles must alternate between \"user\" and \"assistant\"", &[])
        }
        (Shape::OpenAi, Behaviour::BadRequest) => openai_error(
            400,
            "invalid_request_error",
            Some("invalid_value"),
            "Invalid value for 'messages[0].role'.",
            &[],
        ),
        (Shape::OpenAi, Behaviour::ModelNotFound) => {
            openai_error(404, "invalid_request_error", Some("model_not_found"), "The model does not exist or you do not have access to it.", &[])
        }
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Anthropic,
    OpenAi,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct ChatRequest {
    model: String,
    stream: bool,
    messages: Vec<Value>,
}

async fn anthropic_messages(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    inference(sim, Shape::Anthropic, &headers, &body).await
}

async fn openai_chat(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response<Body> {
    inference(sim, Shape::OpenAi, &headers, &body).await
}

async fn inference(sim: Sim, shape: Shape, headers: &HeaderMap, body: &[u8]) -> Response<Body> {
    let key = key_of(headers);
    let (behaviour, incident, events) = sim.take(&key, false);
    let Ok(req) = serde_json::from_slice::<ChatRequest>(body) else {
        return match shape {
            Shape::Anthropic => {
                anthropic_error(400, "invalid_request_error", "invalid JSON body", &[])
            }
            Shape::OpenAi => {
                openai_error(400, "invalid_request_error", None, "invalid JSON body", &[])
            }
        };
    };
    if let Behaviour::SlowHeaders { ms } = behaviour {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if behaviour == Behaviour::ConnectionReset && !incident {
        return connection_reset();
    }
    if behaviour == Behaviour::RejectsPrefill
        && req
            .messages
            .last()
            .and_then(|m| m.get("role"))
            .and_then(Value::as_str)
            == Some("assistant")
    {
        let msg = "This model does not support assistant message prefill. The conversation must end with a user message.";
        return match shape {
            Shape::Anthropic => anthropic_error(400, "invalid_request_error", msg, &[]),
            Shape::OpenAi => openai_error(400, "invalid_request_error", None, msg, &[]),
        };
    }
    if let Some(r) = early_error(shape, &behaviour, incident) {
        return r;
    }
    if let Some(r) = hostile_body(shape, &behaviour, &key, &req.model, req.stream) {
        return r;
    }
    if !req.stream {
        return match shape {
            Shape::Anthropic => json_response(
                StatusCode::OK,
                json!({"id":"msg_sim","type":"message","role":"assistant","model":req.model,
                       "content":[{"type":"text","text":"Hello from keyward-sim."}],
                       "stop_reason":"end_turn","stop_sequence":null,
                       "usage":{"input_tokens":12,"output_tokens":6}}),
                &[
                    ("anthropic-ratelimit-requests-remaining", "999".into()),
                    ("anthropic-ratelimit-requests-limit", "1000".into()),
                ],
            ),
            Shape::OpenAi => json_response(
                StatusCode::OK,
                json!({"id":"chatcmpl-sim","object":"chat.completion","created":1,"model":req.model,
                       "choices":[{"index":0,"message":{"role":"assistant","content":"Hello from keyward-sim."},"finish_reason":"stop"}],
                       "usage":{"prompt_tokens":12,"completion_tokens":6,"total_tokens":18}}),
                &[
                    ("x-ratelimit-remaining-requests", "999".into()),
                    ("x-ratelimit-limit-requests", "1000".into()),
                ],
            ),
        };
    }
    let emitted = sim.emitted.clone();
    let echo = (behaviour == Behaviour::EchoKeyInAnswer).then_some(key);
    stream_response(shape, req.model, behaviour, events, emitted, echo)
}

/// The answer of a behaviour that misbehaves in its body (truncated, dripping, huge,
/// HTML, echoing the key), if it is one. The body ones apply to non-streaming requests.
fn hostile_body(
    shape: Shape,
    b: &Behaviour,
    key: &str,
    model: &str,
    stream: bool,
) -> Option<Response<Body>> {
    let success = || {
        match shape {
        Shape::Anthropic => json!({"id":"msg_sim","type":"message","role":"assistant","model":model,
               "content":[{"type":"text","text":"Hello from keyward-sim."}],
               "stop_reason":"end_turn","stop_sequence":null,
               "usage":{"input_tokens":12,"output_tokens":6}}),
        Shape::OpenAi => json!({"id":"chatcmpl-sim","object":"chat.completion","created":1,"model":model,
               "choices":[{"index":0,"message":{"role":"assistant","content":"Hello from keyward-sim."},"finish_reason":"stop"}],
               "usage":{"prompt_tokens":12,"completion_tokens":6,"total_tokens":18}}),
    }
    .to_string()
    .into_bytes()
    };
    let with_length = |body: Body, len: usize, ty: &'static str| {
        let mut r = Response::new(body);
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static(ty));
        r.headers_mut()
            .insert("content-length", HeaderValue::from(len));
        r
    };
    match b {
        Behaviour::EchoKey { status } => {
            let (status, ty, code, message) = if *status == 401 {
                (401, "invalid_request_error", "invalid_api_key", format!("Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys."))
            } else {
                (
                    400,
                    "invalid_request_error",
                    "invalid_value",
                    format!(
                        "Invalid request made with API key {key}: messages[0].role is invalid."
                    ),
                )
            };
            Some(match shape {
                Shape::Anthropic => anthropic_error(status, ty, &message, &[]),
                Shape::OpenAi => openai_error(status, ty, Some(code), &message, &[]),
            })
        }
        Behaviour::HugeError { bytes } => {
            let message = format!(
                "messages: roles must alternate between \"user\" and \"assistant\". {}",
                "x".repeat(*bytes)
            );
            Some(match shape {
                Shape::Anthropic => anthropic_error(400, "invalid_request_error", &message, &[]),
                Shape::OpenAi => openai_error(
                    400,
                    "invalid_request_error",
                    Some("invalid_value"),
                    &message,
                    &[],
                ),
            })
        }
        _ if stream => None,
        Behaviour::EchoKeyInAnswer => {
            let mut v: Value = serde_json::from_slice(&success()).unwrap_or_default();
            let text = format!("Your key is {key}.");
            match shape {
                Shape::Anthropic => v["content"][0]["text"] = json!(text),
                Shape::OpenAi => v["choices"][0]["message"]["content"] = json!(text),
            }
            Some(json_response(StatusCode::OK, v, &[]))
        }
        Behaviour::ShortBody { bytes } => {
            let body = success();
            let len = body.len();
            let cut = Bytes::from(body).slice(..(*bytes).min(len.saturating_sub(1)));
            // The headers and the first bytes go out; then the stream ends before the
            // promised length, and hyper closes the connection.
            let s = futures_util::stream::unfold(Some(cut), |cut| async move {
                match cut {
                    Some(c) => Some((Ok::<Bytes, std::io::Error>(c), None)),
                    None => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        None
                    }
                }
            });
            Some(with_length(Body::from_stream(s), len, "application/json"))
        }
        Behaviour::DripBody { ms } => {
            let body = success();
            let len = body.len();
            let every = Duration::from_millis(*ms);
            let s = futures_util::stream::unfold(0usize, move |i| {
                let byte = body.get(i).copied();
                async move {
                    let byte = byte?;
                    if i > 0 {
                        tokio::time::sleep(every).await;
                    }
                    Some((Ok::<Bytes, std::io::Error>(Bytes::from(vec![byte])), i + 1))
                }
            });
            Some(with_length(Body::from_stream(s), len, "application/json"))
        }
        Behaviour::HugeBody { bytes } => {
            // `{"…success…","padding":"xxxx…"}` in 64 KiB pieces.
            let mut head = success();
            head.pop();
            head.extend_from_slice(b",\"padding\":\"");
            let pad = bytes.saturating_sub(head.len() + 2);
            let len = head.len() + pad + 2;
            const PIECE: usize = 64 * 1024;
            let pieces = pad.div_ceil(PIECE);
            let s = futures_util::stream::iter(
                std::iter::once(Bytes::from(head))
                    .chain(
                        (0..pieces)
                            .map(move |i| Bytes::from(vec![b'x'; PIECE.min(pad - i * PIECE)])),
                    )
                    .chain(std::iter::once(Bytes::from_static(b"\"}")))
                    .map(Ok::<Bytes, std::io::Error>),
            );
            Some(with_length(Body::from_stream(s), len, "application/json"))
        }
        Behaviour::Html => {
            let page = b"<!DOCTYPE html><html><head><title>Sign in to the Wi-Fi</title></head><body><form action=\"/login\">Accept the terms to continue</form></body></html>";
            Some(with_length(
                Body::from(&page[..]),
                page.len(),
                "text/html; charset=utf-8",
            ))
        }
        _ => None,
    }
}

/// A response whose body fails on its first poll: hyper then closes the connection
/// without writing the status line, so the caller sees the connection drop before any
/// response byte.
fn connection_reset() -> Response<Body> {
    let failed = futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "keyward-sim: scripted connection reset",
        ))
    });
    Response::new(Body::from_stream(failed))
}

fn stream_response(
    shape: Shape,
    model: String,
    behaviour: Behaviour,
    events: usize,
    emitted: Arc<std::sync::atomic::AtomicUsize>,
    echo: Option<String>,
) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let send = |s: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(s))).await.is_ok() }
        };
        let pre = match shape {
            Shape::Anthropic => format!(
                "event: message_start\ndata: {}\n\nevent: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\nevent: ping\ndata: {{\"type\": \"ping\"}}\n\n",
                json!({"type":"message_start","message":{"id":"msg_sim","type":"message","role":"assistant","model":model,"content":[],"stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}})
            ),
            Shape::OpenAi => format!(
                "data: {}\n\n",
                json!({"id":"chatcmpl-sim","object":"chat.completion.chunk","model":model,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]})
            ),
        };
        if !send(pre).await {
            return;
        }
        if let Behaviour::SlowFirstToken { ms } = behaviour {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        for i in 0..events {
            match behaviour {
                Behaviour::StreamCut { after } if i == after => return,
                Behaviour::StreamStall { after, ms } if i == after => {
                    tokio::time::sleep(Duration::from_millis(ms)).await
                }
                Behaviour::MidStreamError { after } if i == after => {
                    let err = match shape {
                        Shape::Anthropic => "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".to_owned(),
                        Shape::OpenAi => "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\"}}\n\n".to_owned(),
                    };
                    let _ = send(err).await;
                    return;
                }
                _ => {}
            }
            if let Behaviour::MalformedChunk { at } = behaviour {
                if i == at {
                    let bad = match shape {
                        Shape::Anthropic => "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\n\n".to_owned(),
                        Shape::OpenAi => "data: {\"choices\":[{\"delta\":{\"content\":\n\n".to_owned(),
                    };
                    if !send(bad).await {
                        return;
                    }
                }
            }
            let word = match behaviour {
                Behaviour::BigEvents { bytes } => format!("tok{i} {}", "x".repeat(bytes)),
                _ if echo.is_some() => format!("tok{i} {} ", echo.as_deref().unwrap_or("")),
                _ => format!("tok{i} "),
            };
            let ev = match shape {
                Shape::Anthropic => format!(
                    "event: content_block_delta\ndata: {}\n\n",
                    json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":word}})
                ),
                Shape::OpenAi => format!(
                    "data: {}\n\n",
                    json!({"id":"chatcmpl-sim","object":"chat.completion.chunk","model":model,"choices":[{"index":0,"delta":{"content":word},"finish_reason":null}]})
                ),
            };
            if !send(ev).await {
                return;
            }
            emitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if behaviour == Behaviour::MissingTerminal {
            return;
        }
        let end = match shape {
            Shape::Anthropic => "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":8}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_owned(),
            Shape::OpenAi => format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({"id":"chatcmpl-sim","object":"chat.completion.chunk","model":model,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}})
            ),
        };
        if let Behaviour::NoDone { hold_ms } = behaviour {
            let end = match shape {
                Shape::Anthropic => end,
                Shape::OpenAi => end.replace("data: [DONE]\n\n", ""),
            };
            if send(end).await {
                tokio::time::sleep(Duration::from_millis(hold_ms)).await;
            }
            return;
        }
        let _ = send(end).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    sse_response(Body::from_stream(stream))
}

/// An SSE response with `body`.
fn sse_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

async fn openai_responses(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let key = key_of(&headers);
    let (behaviour, incident, events) = sim.take(&key, false);
    let req: ChatRequest = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(r) = early_error(Shape::OpenAi, &behaviour, incident) {
        return r;
    }
    let done = json!({"id":"resp_sim","object":"response","status":"completed","model":req.model,
                      "output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello from keyward-sim."}]}],
                      "usage":{"input_tokens":12,"output_tokens":6,"total_tokens":18}});
    if !req.stream {
        return json_response(StatusCode::OK, done, &[]);
    }
    let mut text = format!(
        "event: response.created\ndata: {}\n\n",
        json!({"type":"response.created","response":{"id":"resp_sim","status":"in_progress"}})
    );
    for i in 0..events {
        if let Behaviour::StreamCut { after } = behaviour {
            if i == after {
                return sse_response(Body::from(text));
            }
        }
        text.push_str(&format!(
            "event: response.output_text.delta\ndata: {}\n\n",
            json!({"type":"response.output_text.delta","delta":format!("tok{i} ")})
        ));
    }
    text.push_str(&format!(
        "event: response.completed\ndata: {}\n\n",
        json!({"type":"response.completed","response":done})
    ));
    sse_response(Body::from(text))
}

/// Azure OpenAI: the deployment is in the path, `api-version` is required, the key comes
/// in `api-key`, and an invalid or revoked key gets Azure's own 401 shape. Everything
/// else is OpenAI-shaped, as Azure serves it.
async fn azure_chat(
    State(sim): State<Sim>,
    Path(_deployment): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Some(r) = azure_front(&sim, query.as_deref(), &headers, false) {
        return r;
    }
    inference(sim, Shape::OpenAi, &headers, &body).await
}

async fn azure_embeddings(
    State(sim): State<Sim>,
    Path(_deployment): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Some(r) = azure_front(&sim, query.as_deref(), &headers, false) {
        return r;
    }
    openai_embeddings(State(sim), headers, body).await
}

/// Azure's model list, the key-validity probe's endpoint.
async fn azure_models(
    State(sim): State<Sim>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response<Body> {
    if let Some(r) = azure_front(&sim, query.as_deref(), &headers, true) {
        return r;
    }
    models(State(sim), headers).await
}

/// Azure's answers that differ from OpenAI's: a missing `api-version`, and a key that is
/// not accepted (revoked, or a provider-wide incident).
fn azure_front(
    sim: &Sim,
    query: Option<&str>,
    headers: &HeaderMap,
    probe: bool,
) -> Option<Response<Body>> {
    if !query
        .unwrap_or("")
        .split('&')
        .any(|p| p.starts_with("api-version="))
    {
        return Some(json_response(
            StatusCode::NOT_FOUND,
            json!({"error":{"code":"404","message":"Resource not found"}}),
            &[],
        ));
    }
    let key = key_of(headers);
    let (rejected, incident) = {
        let inner = sim.lock();
        let b = inner.keys.get(&key).unwrap_or(&inner.default);
        (*b == Behaviour::Revoked, inner.incident)
    };
    if !(rejected || incident) {
        return None;
    }
    let _ = sim.take(&key, probe);
    Some(json_response(
        StatusCode::UNAUTHORIZED,
        json!({"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}),
        &[],
    ))
}

async fn openai_embeddings(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let key = key_of(&headers);
    let (behaviour, incident, _) = sim.take(&key, false);
    let req: ChatRequest = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(r) = early_error(Shape::OpenAi, &behaviour, incident) {
        return r;
    }
    json_response(
        StatusCode::OK,
        json!({"object":"list","model":req.model,"data":[{"object":"embedding","index":0,"embedding":[0.25,-0.5,0.125]}],"usage":{"prompt_tokens":3,"total_tokens":3}}),
        &[],
    )
}

fn google_error(
    status: u16,
    gstatus: &str,
    message: &str,
    details: Value,
    extra: &[(&str, String)],
) -> Response<Body> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({"error":{"code":status,"message":message,"status":gstatus,"details":details}}),
        extra,
    )
}

#[derive(Deserialize, Default)]
struct GeminiQuery {
    alt: Option<String>,
    key: Option<String>,
}

async fn gemini(
    State(sim): State<Sim>,
    Path(model_action): Path<String>,
    axum::extract::Query(q): axum::extract::Query<GeminiQuery>,
    headers: HeaderMap,
) -> Response<Body> {
    let key = q.key.clone().unwrap_or_else(|| key_of(&headers));
    let (behaviour, incident, events) = sim.take(&key, false);
    let (model, action) = model_action
        .split_once(':')
        .unwrap_or((model_action.as_str(), "generateContent"));
    let info = |reason: &str| json!([{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":reason,"domain":"googleapis.com"}]);
    let err = if incident {
        Some(google_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            info("API_KEY_INVALID"),
            &[],
        ))
    } else {
        match &behaviour {
            Behaviour::Revoked => Some(google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", info("API_KEY_INVALID"), &[])),
            Behaviour::ExpiredToken => Some(google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", info("ACCESS_TOKEN_EXPIRED"), &[])),
            Behaviour::NoCredit => Some(google_error(402, "RESOURCE_EXHAUSTED", "Your prepayment credits are depleted.", json!([]), &[])),
            Behaviour::RateLimited { retry_after } => Some(google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                json!([{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel","quotaValue":"10"}]},
                       {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":format!("{}s", retry_after.unwrap_or(1))}]),
                &[],
            )),
            Behaviour::Overloaded => Some(google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", json!([]), &[])),
            Behaviour::ServerError => Some(google_error(500, "INTERNAL", "An internal error has occurred.", json!([]), &[])),
            Behaviour::ContextOverflow => Some(google_error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
                json!([]),
                &[],
            )),
            Behaviour::ModelNotFound => Some(google_error(404, "NOT_FOUND", &format!("models/{model} is not found for API version v1beta"), json!([]), &[])),
            Behaviour::BadRequest => Some(google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unknown name \"foo\".", json!([]), &[])),
            Behaviour::ContentFilter => Some(json_response(StatusCode::OK, json!({"promptFeedback":{"blockReason":"SAFETY"}}), &[])),
            _ => None,
        }
    };
    if let Some(r) = err {
        return r;
    }
    let part = |text: String, finish: bool| {
        let mut cand = json!({"content":{"parts":[{"text":text}],"role":"model"},"index":0});
        if finish {
            cand["finishReason"] = json!("STOP");
        }
        json!({"candidates":[cand],"modelVersion":model,"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":4,"totalTokenCount":7}})
    };
    if action != "streamGenerateContent" {
        return json_response(
            StatusCode::OK,
            part("Hello from keyward-sim.".into(), true),
            &[],
        );
    }
    let sse = q.alt.as_deref() == Some("sse");
    let mut elements: Vec<String> = Vec::new();
    for i in 0..events {
        if let Behaviour::StreamCut { after } = behaviour {
            if i == after {
                break;
            }
        }
        let last = i + 1 == events;
        elements.push(
            part(
                format!("tok{i} "),
                last && behaviour != Behaviour::MissingTerminal,
            )
            .to_string(),
        );
    }
    let cut = matches!(behaviour, Behaviour::StreamCut { after } if after < events);
    let body = if sse {
        elements
            .iter()
            .map(|e| format!("data: {e}\r\n\r\n"))
            .collect::<String>()
    } else if cut {
        format!("[{}", elements.join(",\r\n"))
    } else {
        format!("[{}]", elements.join(",\r\n"))
    };
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static(if sse {
            "text/event-stream"
        } else {
            "application/json"
        }),
    );
    r
}

async fn anthropic_count_tokens(State(sim): State<Sim>, headers: HeaderMap) -> Response<Body> {
    let key = key_of(&headers);
    let (behaviour, incident, _) = sim.take(&key, true);
    match early_error(Shape::Anthropic, &behaviour, incident) {
        // Credit and model problems do not show on count_tokens: it is free.
        Some(r)
            if matches!(
                behaviour,
                Behaviour::Revoked | Behaviour::ExpiredToken | Behaviour::Rejected { .. }
            ) || incident =>
        {
            r
        }
        _ => json_response(StatusCode::OK, json!({"input_tokens": 12}), &[]),
    }
}

async fn models(State(sim): State<Sim>, headers: HeaderMap) -> Response<Body> {
    let key = key_of(&headers);
    let (behaviour, incident, _) = sim.take(&key, true);
    let shape = if headers.contains_key("x-api-key") {
        Shape::Anthropic
    } else {
        Shape::OpenAi
    };
    match early_error(shape, &behaviour, incident) {
        Some(r)
            if matches!(
                behaviour,
                Behaviour::Revoked | Behaviour::ExpiredToken | Behaviour::Rejected { .. }
            ) || incident =>
        {
            r
        }
        _ => json_response(
            StatusCode::OK,
            json!({"object":"list","data":[{"id":"sim-model","object":"model"}]}),
            &[],
        ),
    }
}

async fn control_key(
    State(sim): State<Sim>,
    Path(key): Path<String>,
    Json(b): Json<Behaviour>,
) -> StatusCode {
    sim.set(&key, b);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct IncidentBody {
    on: bool,
}

async fn control_incident(State(sim): State<Sim>, Json(b): Json<IncidentBody>) -> StatusCode {
    sim.incident(b.on);
    StatusCode::NO_CONTENT
}

/// The token endpoint: a `refresh_token` grant as JSON or form fields.
async fn token_endpoint(State(sim): State<Sim>, body: Bytes) -> Response<Body> {
    let fields: HashMap<String, String> = serde_json::from_slice(&body)
        .ok()
        .unwrap_or_else(|| form_fields(&body));
    if fields.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type"}),
            &[],
        );
    }
    let Some(rt) = fields.get("refresh_token") else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": "refresh_token is missing"}),
            &[],
        );
    };
    match sim.token_call(rt) {
        Ok(t) => json_response(
            StatusCode::OK,
            json!({"access_token": t.access_token, "refresh_token": t.refresh_token, "expires_in": t.expires_in, "token_type": "Bearer"}),
            &[],
        ),
        Err((status, body)) => json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            body,
            &[],
        ),
    }
}

fn form_fields(body: &[u8]) -> HashMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

#[derive(Debug, Deserialize)]
struct GrantBody {
    #[serde(default = "default_ttl")]
    ttl_s: u64,
}

fn default_ttl() -> u64 {
    3600
}

/// `POST /_sim/oauth/{grant}` with `{"ttl_s": 3600}`: a new grant's tokens.
async fn control_grant(
    State(sim): State<Sim>,
    Path(grant): Path<String>,
    Json(b): Json<GrantBody>,
) -> Json<SimTokens> {
    Json(sim.oauth_grant(&grant, Duration::from_secs(b.ttl_s)))
}

async fn control_counts(State(sim): State<Sim>) -> Json<HashMap<String, Counts>> {
    Json(sim.all_counts())
}
