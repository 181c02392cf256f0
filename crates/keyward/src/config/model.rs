//! The validated configuration: [`Config`] and the parts the gateway reads (gateway keys,
//! endpoints, credentials, routes and targets, timeouts, limits, the server's limits, the
//! admin API and fleet mode), with their defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::classify::{CredentialKind, Provider};
use keyward_core::health::Policy;

use super::{ConfigProblem, Detail, Secret};

/// A gateway key callers present.
#[derive(Debug, Clone)]
pub struct GatewayKey {
    pub name: Arc<str>,
    pub key: Secret,
    pub detail: Detail,
    /// The HTTP status of the error its callers get when every credential of a route is
    /// out for a permanent cause (revoked, no credit), instead of 503: for a client that
    /// retries every 5xx whatever `x-should-retry` says (docs/clients.md). `None`: 503.
    pub dead_keys_status: Option<u16>,
}

/// An upstream endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: Arc<str>,
    pub provider: Provider,
    /// As the provider's SDK takes it: Anthropic without `/v1`; OpenAI-compatible ones with
    /// their version path (`https://api.openai.com/v1`); Azure the resource URL.
    pub base_url: String,
    /// Azure OpenAI's `api-version`.
    pub api_version: Option<String>,
    /// Bedrock's and Vertex AI's region.
    pub region: Option<String>,
    /// Vertex AI's project id.
    pub project: Option<String>,
}

/// An upstream credential.
#[derive(Debug, Clone)]
pub struct Credential {
    pub id: Arc<str>,
    pub endpoint: Arc<str>,
    /// The key (or a static bearer token). `None` for a refreshing OAuth credential, whose
    /// tokens live in the state file.
    pub secret: Option<Secret>,
    pub kind: CredentialKind,
    /// How to refresh this credential's OAuth tokens.
    pub oauth: Option<OAuthConfig>,
    /// A cloud credential's keys or key file (`kind = "cloud"`).
    pub cloud: Option<super::CloudAuth>,
    pub bucket: Option<Arc<str>>,
    pub priority: i32,
    pub models: Option<Vec<Arc<str>>>,
}

/// A refreshing OAuth credential's token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    pub token_url: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    /// The refresh request's body: JSON (Anthropic's and OpenAI's auth servers) or
    /// `application/x-www-form-urlencoded` (RFC 6749).
    pub style: TokenStyle,
    /// Refresh this long before the access token expires.
    pub refresh_ahead: Duration,
}

/// The body format of a token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStyle {
    Json,
    Form,
}

/// The inbound APIs, by the names `apis` uses in the config.
pub const API_NAMES: &[&str] = &["messages", "chat", "responses", "embeddings", "gemini"];

/// One target of a route.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: Arc<str>,
    pub model: Arc<str>,
    pub credentials: Vec<Arc<str>>,
    /// The inbound APIs this target serves (names from [`API_NAMES`]); `None`: every API
    /// its provider speaks. A ChatGPT/Codex token serves only `responses`.
    pub apis: Option<Vec<&'static str>>,
    /// The route's timeouts with this target's own overrides (a slow reasoning model's
    /// longer first-content limit, say).
    pub timeouts: Timeouts,
}

/// A client-facing model name and where it goes.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    /// Targets then fallbacks, in order.
    pub targets: Vec<Target>,
    /// The route to use when the prompt is too long for this one.
    pub context_fallback: Option<String>,
    pub timeouts: Timeouts,
    /// How targets of another API than the caller's are served.
    pub translation: Translation,
    /// Whether a committed stream that is cut or stalls is continued on the same or the
    /// next target (the text already delivered sent as the start of the answer), rather
    /// than ended with the in-band error. `continue_streams` in the config; on by default.
    pub continue_streams: bool,
}

/// How a route's targets of another wire family are served (docs/translation.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Whether a translation that drops a feature of the request may be sent
    /// (`lossy_translation`); when not, such a target is skipped.
    pub lossy: bool,
    /// `max_tokens` for a target that requires it (Anthropic) when the caller gave none.
    pub default_max_tokens: u64,
}

impl Default for Translation {
    fn default() -> Self {
        Translation {
            lossy: true,
            default_max_tokens: 4096,
        }
    }
}

/// Timeouts. Never one total deadline on a stream: headers, first content, then an idle
/// limit between reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub headers: Duration,
    /// One attempt's first-content limit.
    pub first_token: Duration,
    /// The request's first-content budget, across its attempts: from the first time a
    /// stream is held, the caller's first content is due within this; an attempt's own
    /// limit is cut to what remains, so a fallback after a slow primary still answers
    /// inside it.
    pub first_content_budget: Duration,
    pub idle: Duration,
    /// A request's deadline for starting attempts (not for an established stream).
    pub request: Duration,
    /// A 429 whose `Retry-After` is at most this is waited out on the same target (when
    /// no other credential of that target is next) instead of failing over to another
    /// model; zero never waits.
    pub retry_after_wait: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            headers: Duration::from_secs(30),
            first_token: Duration::from_secs(10),
            first_content_budget: Duration::from_secs(15),
            // Providers send keep-alives (Anthropic pings, SSE comments) well inside this;
            // a stream silent for 20 s has stalled.
            idle: Duration::from_secs(20),
            request: Duration::from_secs(90),
            // Rate limiters ask for a second or two; waiting that long keeps the model
            // the caller asked for (and its prompt cache) instead of switching models.
            retry_after_wait: Duration::from_secs(5),
        }
    }
}

/// Size and retry limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_event_bytes: usize,
    pub max_attempts: u32,
    /// Continuations of one committed stream at most (each a new upstream attempt).
    pub max_continuations: u32,
    /// Request bodies held in memory at once, across all requests (a body reserves its
    /// `content-length`, or `max_body_bytes` when it has none, before it is read).
    pub max_buffered_body_bytes: usize,
    /// How long a request waits for room in that budget before it is answered 503.
    pub body_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 32 << 20,
            max_event_bytes: 16 << 20,
            max_attempts: 6,
            max_continuations: 2,
            max_buffered_body_bytes: 256 << 20,
            body_wait: Duration::from_secs(2),
        }
    }
}

/// The caller-facing listener's connection limits and whom it trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server {
    /// A connection must send a request's whole head within this (slowloris); hyper also
    /// runs it while a kept-alive connection waits for its next request.
    pub header_read_timeout: Duration,
    /// A connection with no request for this long is closed (HTTP/1 and HTTP/2).
    pub idle_timeout: Duration,
    /// Open caller connections at most; further ones are closed as soon as accepted.
    pub max_connections: usize,
    /// A reverse proxy on this host forwards callers to the proxy listener: loopback
    /// peers are then anyone.
    pub reverse_proxy: bool,
    /// Whether a loopback peer of the proxy listener counts as local (for `/metrics`
    /// without an `[admin]` table, and for the admin API without `allow_remote`). Off by
    /// default when a reverse proxy is declared or the admin API has its own listener.
    pub trust_loopback: bool,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 4096,
            reverse_proxy: false,
            trust_loopback: true,
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub state: PathBuf,
    pub gateway_keys: Vec<GatewayKey>,
    pub endpoints: BTreeMap<Arc<str>, Endpoint>,
    pub credentials: Vec<Credential>,
    pub routes: BTreeMap<String, Route>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// The caller-facing listener's limits.
    pub server: Server,
    pub policy: Policy,
    /// The admin API (`/admin/...`); absent when the config has no `[admin]` table.
    pub admin: Option<Admin>,
    /// Encrypts OAuth tokens at rest (64 hex characters).
    pub state_key: Option<Secret>,
    /// How long a removed credential's health is kept (default 7 days).
    pub removed_credential_retention: Duration,
    /// Fleet mode: the state is shared through Redis (`state = "redis://…"`); `state`
    /// then holds no file.
    pub fleet: Option<Fleet>,
    /// Alerts: webhooks and their outbox's limits.
    pub alerts: super::Alerts,
    /// OpenTelemetry traces (read at start).
    pub telemetry: super::Telemetry,
    /// What is accepted but risky (a remote admin API on a public address, …): printed by
    /// `keyward config check` and logged by `serve` at start and on reload.
    pub warnings: Vec<ConfigProblem>,
}

/// Fleet mode: several replicas share health, the transition log, the denylist and
/// OAuth tokens through one Redis.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// `redis://…` or `rediss://…` (TLS); may hold a password, so it is a secret.
    pub url: Secret,
    /// Namespaces several fleets in one Redis.
    pub prefix: String,
    /// This replica's name in the fleet log (`None`: host name and process id).
    pub replica: Option<String>,
    /// A Redis command slower than this counts as Redis trouble (the replica serves on).
    pub timeout: Duration,
    /// PEM roots that verify a `rediss://` server signed by a private CA (read when the
    /// config is loaded); `None`: the public web roots.
    pub ca_file: Option<PathBuf>,
}

impl Fleet {
    /// The CA roots' PEM, when `ca_file` is set. Read again at each use, so a renewed CA
    /// applies at the next connection.
    pub fn ca_pem(&self) -> std::io::Result<Option<Vec<u8>>> {
        self.ca_file.as_deref().map(std::fs::read).transpose()
    }
}

impl Config {
    /// Where the state lives, for messages: the state file, or the fleet's Redis (without
    /// its password) and prefix.
    pub fn state_label(&self) -> String {
        match &self.fleet {
            Some(f) => format!("Redis {} (prefix {})", f.display_url(), f.prefix),
            None => self.state.display().to_string(),
        }
    }
}

impl Fleet {
    /// The URL without its password, for messages.
    pub fn display_url(&self) -> String {
        keyward_store::redact_url(self.url.expose())
    }
}

/// The admin API's access: a bearer token, and loopback peers only unless allowed.
#[derive(Debug, Clone)]
pub struct Admin {
    pub token: Secret,
    pub allow_remote: bool,
    /// The admin API's and `/metrics`' own listener; they are then not served on the
    /// proxy listener. Applies at start.
    pub listen: Option<SocketAddr>,
}
