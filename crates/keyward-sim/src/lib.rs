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
//!
//! The crate by concept: this file holds the public API ([`Sim`], [`SimServer`],
//! [`Behaviour`], [`Counts`], [`Attempt`]) and the per-key state every request is decided
//! and counted against; the handlers live beside it, one module per provider API
//! (`inference` for Anthropic Messages and OpenAI Chat Completions, `openai`, `azure`,
//! `gemini`), with `stream` (SSE answers), `hostile` (bodies that misbehave), `errors`
//! (each behaviour's error in each provider's shape), `respond` (the request's key, JSON
//! responses), `probes` (the cheap endpoints), `control` (`/_sim/…`), `oauth` (the
//! token endpoint and its grants), `aws` (Bedrock behind SigV4 verification, and STS) and
//! `cloud_tokens` (Google's and Entra's token endpoints, and Vertex AI).

pub mod redis_server;

mod aws;
mod azure;
mod cloud_tokens;
mod control;
mod errors;
mod gemini;
mod hostile;
mod inference;
mod oauth;
mod openai;
mod probes;
mod respond;
mod stream;
mod tools;

pub use tools::TOOL_ARGUMENTS;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use oauth::{SimTokens, TokenEndpoint};

use azure::{azure_chat, azure_embeddings, azure_models};
use control::{control_counts, control_incident, control_key};
use gemini::gemini;
use inference::{anthropic_messages, openai_chat};
use oauth::{control_grant, token_endpoint, OAuthSim};
use openai::{openai_embeddings, openai_responses};
use probes::{anthropic_count_tokens, models};

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
    /// Pause this long after this many content events, sending a keep-alive every 200 ms
    /// (an Anthropic `ping` event, an SSE comment for Chat Completions), then go on.
    PingStall { after: usize, ms: u64 },
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
    /// Streamed answers end with a tool call (its arguments in [`TOOL_ARGS`] pieces).
    tool_call: bool,
    oauth: OAuthSim,
    aws: aws::AwsSim,
    cloud: cloud_tokens::CloudTokens,
    /// The request bodies each key received, in order (inference requests).
    received: HashMap<String, Vec<Value>>,
}

/// The simulated tool call's arguments, as streamed in pieces (their concatenation is
/// `{"city": "Paris"}`).
pub const TOOL_ARGS: [&str; 3] = ["{\"city\"", ": \"Par", "is\"}"];

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

    /// The inference request bodies `key` received so far, in order (what the gateway
    /// sent upstream: a translated request's shape, say).
    pub fn received(&self, key: &str) -> Vec<Value> {
        self.lock().received.get(key).cloned().unwrap_or_default()
    }

    /// Records an inference request body `key` received; returns how many it has.
    fn record(&self, key: &str, body: &[u8]) -> u64 {
        let v = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut inner = self.lock();
        // An OAuth access token's requests are kept under its grant, as they are counted.
        let key = inner
            .oauth
            .access
            .get(key)
            .map_or_else(|| key.to_owned(), |(grant, _)| grant.clone());
        let list = inner.received.entry(key).or_default();
        list.push(v);
        list.len() as u64
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

    /// Whether streamed answers (Messages, Chat) end with a tool call after their text:
    /// a `get_weather` call whose arguments come in [`TOOL_ARGS`] pieces. Stream faults
    /// count those pieces as content events after the text's.
    pub fn set_tool_call(&self, on: bool) {
        self.lock().tool_call = on;
    }

    pub(crate) fn tool_call(&self) -> bool {
        self.lock().tool_call
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
            .route("/", post(aws::sts))
            .route("/token", post(cloud_tokens::google_token))
            .route("/{tenant}/oauth2/v2.0/token", post(cloud_tokens::entra_token))
            .route(
                "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model_action}",
                post(cloud_tokens::vertex),
            )
            .route("/model/{model}/invoke", post(aws::invoke))
            .route(
                "/model/{model}/invoke-with-response-stream",
                post(aws::invoke_stream),
            )
            .route("/openai/v1/chat/completions", post(aws::openai_chat))
            .with_state(self)
            // Like a provider's front door: a body over the limit is read to its end, then
            // refused with a plain-text 413 (axum's own limit answers before the body is
            // read, and a client still sending sees its connection reset instead, by
            // timing).
            .layer(axum::extract::DefaultBodyLimit::disable())
            .layer(axum::middleware::from_fn(read_whole_then_limit))
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
        // A cloud access token (Google, Entra): counted under its account or app.
        if let Some((name, expires)) = inner.cloud.bearer.get(key).cloned() {
            if wall_instant() >= expires {
                forced = Some(Behaviour::ExpiredToken);
            }
            grant_key = Some(name);
        } else if key.starts_with("sim-cat-") {
            forced = Some(Behaviour::Revoked);
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

/// The wall clock's date (AWS and Google check request times against it).
#[allow(clippy::disallowed_methods)]
fn wall_time() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// Seconds since the Unix epoch, by the wall clock.
fn wall_unix_secs() -> u64 {
    wall_time()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn behaviour_name(b: &Behaviour) -> String {
    serde_json::to_value(b)
        .ok()
        .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "ok".into())
}

/// The most request body the sim accepts (axum's default).
const MAX_BODY: usize = 2 << 20;

/// Reads a request's whole body, then answers 413 `length limit exceeded` when it is over
/// [`MAX_BODY`]; otherwise passes it on.
async fn read_whole_then_limit(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "body could not be read",
        )
            .into_response();
    };
    if bytes.len() > MAX_BODY {
        return (
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "length limit exceeded",
        )
            .into_response();
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}
