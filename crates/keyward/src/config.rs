//! `keyward.toml`: parsed strictly (unknown keys are errors), validated whole (every
//! problem reported with its path), secrets referenced (`env:VAR`, `file:PATH`) and never
//! printed.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyward_core::classify::{CredentialKind, Provider};
use keyward_core::health::Policy;
use serde::Deserialize;

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The path in the file (`routes."claude".targets[0].credentials[1]`).
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. Check the path. Label: `io`.
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file has problems; each is listed with its path. Label: `invalid`.
    #[error("{} has {} problem(s):\n{}", path.display(), problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

/// How much a caller's error message may say about Keyward's upstream credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    /// Credential aliases, classes, times, counts and remedies.
    #[default]
    Full,
    /// Only that the upstream is unavailable and whether to retry.
    Minimal,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_state")]
    state: String,
    #[serde(default)]
    gateway_keys: Vec<RawGatewayKey>,
    #[serde(default)]
    endpoints: BTreeMap<String, RawEndpoint>,
    #[serde(default)]
    credentials: Vec<RawCredential>,
    #[serde(default)]
    routes: BTreeMap<String, RawRoute>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    policy: Option<Policy>,
    #[serde(default)]
    admin: Option<RawAdmin>,
    /// The key that encrypts OAuth tokens in the state file (`env:VAR` or `file:PATH`, 64
    /// hex characters).
    #[serde(default)]
    state_key: Option<String>,
    /// How long the health of a credential removed from the config is kept (so it comes
    /// back with its history if re-added), e.g. "7d".
    #[serde(default)]
    removed_credential_retention: Option<String>,
    /// Fleet mode's settings (with `state = "redis://…"`).
    #[serde(default)]
    fleet: Option<RawFleet>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    prefix: Option<String>,
    replica: Option<String>,
    timeout: Option<String>,
    ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token: String,
    #[serde(default)]
    allow_remote: bool,
    /// A listener of its own for the admin API and `/metrics`.
    #[serde(default)]
    listen: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    header_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
    reverse_proxy: Option<bool>,
    trust_loopback: Option<bool>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_state() -> String {
    "keyward-state.db".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGatewayKey {
    name: String,
    key: String,
    #[serde(default)]
    detail: Detail,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    provider: String,
    base_url: String,
    #[serde(default)]
    api_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    id: String,
    endpoint: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    /// Refreshing OAuth: tokens come from the state file (`keyward credentials import`).
    #[serde(default)]
    oauth: Option<RawOAuth>,
    /// Opt-in for consumer subscription tokens (Claude, ChatGPT/Codex).
    #[serde(default)]
    subscription: bool,
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    models: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth {
    token_url: Option<String>,
    client_id: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    style: Option<String>,
    #[serde(default)]
    refresh_ahead: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    endpoint: String,
    model: String,
    credentials: Vec<String>,
    #[serde(default)]
    apis: Option<Vec<String>>,
    #[serde(default)]
    first_token_timeout: Option<String>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    headers_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    targets: Vec<RawTarget>,
    #[serde(default)]
    fallbacks: Vec<RawTarget>,
    #[serde(default)]
    context_fallback: Option<String>,
    #[serde(default)]
    first_token_timeout: Option<String>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    headers_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<String>,
    headers: Option<String>,
    first_token: Option<String>,
    idle: Option<String>,
    request: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<usize>,
    max_event_bytes: Option<usize>,
    max_attempts: Option<u32>,
    max_buffered_body_bytes: Option<usize>,
    body_wait: Option<String>,
}

/// A secret, held only in memory. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// The secret itself, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret, shared (for a request that outlives the configuration snapshot).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    /// A short fingerprint: the first 12 hex characters of the secret's SHA-256. It tells
    /// "this exact key" apart without revealing anything about it.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes());
        digest
            .as_ref()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A gateway key callers present.
#[derive(Debug, Clone)]
pub struct GatewayKey {
    pub name: Arc<str>,
    pub key: Secret,
    pub detail: Detail,
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
}

/// Timeouts. Never one total deadline on a stream: headers, first content, then an idle
/// limit between reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub headers: Duration,
    pub first_token: Duration,
    pub idle: Duration,
    /// A request's deadline for starting attempts (not for an established stream).
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            headers: Duration::from_secs(30),
            first_token: Duration::from_secs(15),
            // Providers send keep-alives (Anthropic pings, SSE comments) well inside this;
            // a stream silent for 20 s has stalled.
            idle: Duration::from_secs(20),
            request: Duration::from_secs(90),
        }
    }
}

/// Size and retry limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_event_bytes: usize,
    pub max_attempts: u32,
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

impl Config {
    /// Loads and validates `path`, resolving secrets from the environment and files.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base, &|v| std::env::var(v).ok()).map_err(|problems| {
            ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            }
        })
    }

    /// Parses and validates config text. `env` looks up environment variables; relative
    /// paths are resolved against `base`.
    pub fn parse(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigProblem>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            vec![ConfigProblem {
                path: String::new(),
                message: e.to_string().trim().replace('\n', " "),
            }]
        })?;
        let mut p = Vec::new();
        let mut problem = |path: String, message: String| p.push(ConfigProblem { path, message });
        let listen = raw.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
            problem(
                "listen".into(),
                format!("{:?} is not an address like 127.0.0.1:8080", raw.listen),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let resolve = |path: &str,
                       reference: &str,
                       problem: &mut dyn FnMut(String, String)|
         -> Option<Secret> {
            if let Some(var) = reference.strip_prefix("env:") {
                match env(var) {
                    Some(v) if !v.trim().is_empty() => Some(Secret(v.trim().into())),
                    _ => {
                        problem(
                            path.into(),
                            format!("environment variable {var} is not set (or empty)"),
                        );
                        None
                    }
                }
            } else if let Some(file) = reference.strip_prefix("file:") {
                let full = base.join(file);
                match std::fs::read_to_string(&full) {
                    Ok(v) if !v.trim().is_empty() => Some(Secret(v.trim().into())),
                    Ok(_) => {
                        problem(
                            path.into(),
                            format!("secret file {} is empty", full.display()),
                        );
                        None
                    }
                    Err(e) => {
                        problem(
                            path.into(),
                            format!("cannot read secret file {}: {e}", full.display()),
                        );
                        None
                    }
                }
            } else {
                problem(path.into(), "secrets must be referenced as \"env:VAR\" or \"file:PATH\", never written in the config".into());
                None
            }
        };
        let mut gateway_keys = Vec::new();
        for (i, k) in raw.gateway_keys.iter().enumerate() {
            if let Some(key) = resolve(&format!("gateway_keys[{i}].key"), &k.key, &mut problem) {
                gateway_keys.push(GatewayKey {
                    name: k.name.as_str().into(),
                    key,
                    detail: k.detail,
                });
            }
        }
        let admin_listen = raw.admin.as_ref().and_then(|a| {
            a.listen
                .as_deref()
                .and_then(|l| match l.parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        problem(
                            "admin.listen".into(),
                            format!("{l:?} is not an address like 127.0.0.1:9091"),
                        );
                        None
                    }
                })
        });
        let admin = raw.admin.as_ref().and_then(|a| {
            resolve("admin.token", &a.token, &mut problem).map(|token| Admin {
                token,
                allow_remote: a.allow_remote,
                listen: admin_listen,
            })
        });
        if let Some(a) = &admin {
            if a.token.expose().chars().count() < MIN_ADMIN_TOKEN_CHARS {
                problem(
                    "admin.token".into(),
                    format!("the admin token is shorter than {MIN_ADMIN_TOKEN_CHARS} characters and can be guessed; generate one with `openssl rand -hex 32`"),
                );
            }
            if let Some(k) = gateway_keys.iter().find(|k| k.key == a.token) {
                problem(
                    "admin.token".into(),
                    format!("the admin token is also gateway key {:?}: every caller with that key would be an admin; give the admin API a token of its own", k.name),
                );
            }
            if a.listen.is_some_and(|l| l == listen && l.port() != 0) {
                problem(
                    "admin.listen".into(),
                    "the admin listener must differ from `listen`; pick another port (e.g. 127.0.0.1:9091)".into(),
                );
            }
        }
        if raw.gateway_keys.is_empty() {
            problem(
                "gateway_keys".into(),
                "at least one gateway key is needed: callers authenticate with it".into(),
            );
        }
        let mut endpoints = BTreeMap::new();
        for (id, e) in &raw.endpoints {
            let path = format!("endpoints.{}", quote(id));
            let provider = Provider::parse(&e.provider).unwrap_or_else(|| {
                problem(
                    format!("{path}.provider"),
                    format!(
                        "unknown provider {:?}; known: {}",
                        e.provider,
                        Provider::ALL.map(Provider::as_str).join(", ")
                    ),
                );
                Provider::Unknown
            });
            if !(e.base_url.starts_with("http://") || e.base_url.starts_with("https://")) {
                problem(
                    format!("{path}.base_url"),
                    format!("{:?} must start with http:// or https://", e.base_url),
                );
            }
            if provider == Provider::AzureOpenAi && e.api_version.is_none() {
                problem(
                    format!("{path}.api_version"),
                    "Azure OpenAI needs an api_version, e.g. \"2024-10-21\"".into(),
                );
            }
            let id: Arc<str> = id.as_str().into();
            endpoints.insert(
                id.clone(),
                Endpoint {
                    id,
                    provider,
                    base_url: e.base_url.trim_end_matches('/').to_owned(),
                    api_version: e.api_version.clone(),
                },
            );
        }
        let mut credentials = Vec::new();
        let mut ids = HashSet::new();
        for (i, c) in raw.credentials.iter().enumerate() {
            let path = format!("credentials[{i}]");
            if !ids.insert(c.id.clone()) {
                problem(
                    format!("{path}.id"),
                    format!("duplicate credential id {:?}", c.id),
                );
            }
            if c.id.is_empty() || c.id.contains('/') {
                problem(
                    format!("{path}.id"),
                    "a credential id must be non-empty and contain no '/'".into(),
                );
            }
            if !raw.endpoints.contains_key(&c.endpoint) {
                problem(
                    format!("{path}.endpoint"),
                    format!("unknown endpoint {:?}", c.endpoint),
                );
            }
            let kind = match c.kind.as_deref() {
                None => CredentialKind::ApiKey,
                Some(k) => CredentialKind::parse(k).unwrap_or_else(|| {
                    problem(
                        format!("{path}.kind"),
                        format!("{k:?} is not one of api_key, oauth, cloud"),
                    );
                    CredentialKind::ApiKey
                }),
            };
            let provider = raw
                .endpoints
                .get(&c.endpoint)
                .and_then(|e| Provider::parse(&e.provider));
            let oauth = c
                .oauth
                .as_ref()
                .and_then(|o| oauth_config(&path, o, kind, provider, &mut problem));
            let subscription_provider =
                matches!(provider, Some(Provider::Anthropic | Provider::OpenAi));
            if kind == CredentialKind::OAuth && subscription_provider && !c.subscription {
                problem(
                    format!("{path}.subscription"),
                    "OAuth tokens of a Claude or ChatGPT subscription are opt-in: set subscription = true on this credential once you have checked that your plan's terms allow it".into(),
                );
            }
            let secret = match (&c.secret, &oauth) {
                (Some(_), Some(_)) => {
                    problem(
                        format!("{path}.secret"),
                        "a refreshing OAuth credential takes no secret in the config: import its tokens with `keyward credentials import`".into(),
                    );
                    None
                }
                (None, Some(_)) => None,
                (Some(s), None) => match resolve(&format!("{path}.secret"), s, &mut problem) {
                    Some(s) => Some(s),
                    None => continue,
                },
                (None, None) => {
                    problem(
                        format!("{path}.secret"),
                        "missing: reference the key as \"env:VAR\" or \"file:PATH\" (or, for kind = \"oauth\", add an [credentials.oauth] table and import its tokens)".into(),
                    );
                    continue;
                }
            };
            {
                credentials.push(Credential {
                    id: c.id.as_str().into(),
                    endpoint: c.endpoint.as_str().into(),
                    secret,
                    kind,
                    oauth,
                    bucket: c.bucket.as_deref().map(Into::into),
                    priority: c.priority,
                    models: c
                        .models
                        .as_ref()
                        .map(|m| m.iter().map(|s| Arc::from(s.as_str())).collect()),
                });
            }
        }
        for (j, c) in credentials.iter().enumerate() {
            let Some(secret) = &c.secret else { continue };
            if let Some(first) = credentials[..j]
                .iter()
                .find(|o| o.secret.as_ref() == Some(secret))
            {
                let i = raw
                    .credentials
                    .iter()
                    .position(|rc| rc.id == *c.id)
                    .unwrap_or(j);
                problem(
                    format!("credentials[{i}].secret"),
                    format!(
                        "credential {:?} holds the same secret as {:?}: one key under two ids doubles its share of the traffic and splits its health; keep one id per key",
                        c.id, first.id
                    ),
                );
            }
        }
        let mut timeouts = Timeouts::default();
        let t = &raw.timeouts;
        for (name, value, slot) in [
            ("connect", &t.connect, &mut timeouts.connect),
            ("headers", &t.headers, &mut timeouts.headers),
            ("first_token", &t.first_token, &mut timeouts.first_token),
            ("idle", &t.idle, &mut timeouts.idle),
            ("request", &t.request, &mut timeouts.request),
        ] {
            if let Some(v) = value {
                match humantime_duration(v) {
                    Some(d) if d.is_zero() => problem(format!("timeouts.{name}"), zero_timeout()),
                    Some(d) => *slot = d,
                    None => problem(
                        format!("timeouts.{name}"),
                        format!("{v:?} is not a duration like \"15s\" or \"2m\""),
                    ),
                }
            }
        }
        let mut routes = BTreeMap::new();
        for (name, r) in &raw.routes {
            let path = format!("routes.{}", quote(name));
            if r.targets.is_empty() {
                problem(
                    format!("{path}.targets"),
                    "a route needs at least one target".into(),
                );
            }
            let mut rt = timeouts;
            override_timeouts(
                &mut rt,
                &path,
                [&r.first_token_timeout, &r.idle_timeout, &r.headers_timeout],
                &mut problem,
            );
            let mut targets = Vec::new();
            for (kind, list) in [("targets", &r.targets), ("fallbacks", &r.fallbacks)] {
                for (i, t) in list.iter().enumerate() {
                    let tp = format!("{path}.{kind}[{i}]");
                    if !raw.endpoints.contains_key(&t.endpoint) {
                        problem(
                            format!("{tp}.endpoint"),
                            format!("unknown endpoint {:?}", t.endpoint),
                        );
                    }
                    if t.credentials.is_empty() {
                        problem(
                            format!("{tp}.credentials"),
                            "a target needs at least one credential".into(),
                        );
                    }
                    for (j, c) in t.credentials.iter().enumerate() {
                        match raw.credentials.iter().find(|rc| rc.id == *c) {
                            None => problem(
                                format!("{tp}.credentials[{j}]"),
                                format!("unknown credential {c:?}"),
                            ),
                            Some(rc) if rc.endpoint != t.endpoint => problem(
                                format!("{tp}.credentials[{j}]"),
                                format!(
                                    "credential {c:?} belongs to endpoint {:?}, not {:?}",
                                    rc.endpoint, t.endpoint
                                ),
                            ),
                            Some(_) => {}
                        }
                    }
                    let mut tt = rt;
                    override_timeouts(
                        &mut tt,
                        &tp,
                        [&t.first_token_timeout, &t.idle_timeout, &t.headers_timeout],
                        &mut problem,
                    );
                    let mut apis = None;
                    if let Some(list) = &t.apis {
                        let mut names = Vec::new();
                        for (j, a) in list.iter().enumerate() {
                            match API_NAMES.iter().find(|n| **n == a.as_str()) {
                                Some(n) => names.push(*n),
                                None => problem(
                                    format!("{tp}.apis[{j}]"),
                                    format!("{a:?} is not one of {}", API_NAMES.join(", ")),
                                ),
                            }
                        }
                        apis = Some(names);
                    } else {
                        // A ChatGPT/Codex token is accepted by the Responses API only.
                        let codex_only = !t.credentials.is_empty()
                            && t.credentials.iter().all(|c| {
                                raw.credentials.iter().any(|rc| {
                                    rc.id == *c
                                        && rc.kind.as_deref() == Some("oauth")
                                        && raw
                                            .endpoints
                                            .get(&rc.endpoint)
                                            .and_then(|e| Provider::parse(&e.provider))
                                            == Some(Provider::OpenAi)
                                })
                            });
                        if codex_only {
                            apis = Some(vec!["responses"]);
                        }
                    }
                    targets.push(Target {
                        apis,
                        timeouts: tt,
                        endpoint: t.endpoint.as_str().into(),
                        model: t.model.as_str().into(),
                        credentials: t
                            .credentials
                            .iter()
                            .map(|c| Arc::from(c.as_str()))
                            .collect(),
                    });
                }
            }
            if let Some(cf) = &r.context_fallback {
                if !raw.routes.contains_key(cf) {
                    problem(
                        format!("{path}.context_fallback"),
                        format!("unknown route {cf:?}"),
                    );
                }
            }
            routes.insert(
                name.clone(),
                Route {
                    name: name.as_str().into(),
                    targets,
                    context_fallback: r.context_fallback.clone(),
                    timeouts: rt,
                },
            );
        }
        let limits = limits(&raw.limits, &mut problem);
        let server = server(&raw, admin.as_ref(), &mut problem);
        let (state, fleet) = fleet_state(&raw, base, &resolve, &mut problem);
        let removed_credential_retention = match raw.removed_credential_retention.as_deref() {
            None => Duration::from_secs(7 * 86_400),
            Some(v) => humantime_duration(v).unwrap_or_else(|| {
                problem(
                    "removed_credential_retention".into(),
                    format!("{v:?} is not a duration like \"7d\" or \"12h\""),
                );
                Duration::from_secs(7 * 86_400)
            }),
        };
        let state_key = raw
            .state_key
            .as_deref()
            .and_then(|k| resolve("state_key", k, &mut problem));
        if let Some(k) = &state_key {
            if keyward_store::Sealer::from_hex(k.expose()).is_err() {
                problem(
                    "state_key".into(),
                    "the key must be 64 hex characters (32 bytes); generate one with `openssl rand -hex 32`".into(),
                );
            }
        }
        if !p.is_empty() {
            return Err(p);
        }
        let warnings = warnings(listen, &server, admin.as_ref());
        Ok(Config {
            warnings,
            server,
            listen,
            state,
            gateway_keys,
            endpoints,
            credentials,
            routes,
            timeouts,
            limits,
            policy: raw.policy.unwrap_or_default(),
            admin,
            state_key,
            removed_credential_retention,
            fleet,
        })
    }
}

/// The shortest admin token accepted: shorter ones can be guessed online.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

fn zero_timeout() -> String {
    "a zero timeout fails every request at once (or, for a server limit, disables nothing and closes everything); give a duration like \"10s\", or leave it out for the default".into()
}

/// `[limits]`, refusing zeros (a zero body limit refuses every request; zero attempts
/// never call upstream) and a body budget smaller than one body.
fn limits(raw: &RawLimits, problem: &mut dyn FnMut(String, String)) -> Limits {
    let d = Limits::default();
    let mut nonzero = |name: &str, v: Option<usize>, default: usize, what: &str| match v {
        Some(0) => {
            problem(
                format!("limits.{name}"),
                format!("0 {what}; raise it, or leave it out for the default ({default})"),
            );
            default
        }
        Some(v) => v,
        None => default,
    };
    let max_body_bytes = nonzero(
        "max_body_bytes",
        raw.max_body_bytes,
        d.max_body_bytes,
        "refuses every request body",
    );
    let max_event_bytes = nonzero(
        "max_event_bytes",
        raw.max_event_bytes,
        d.max_event_bytes,
        "fails every stream",
    );
    let max_attempts = nonzero(
        "max_attempts",
        raw.max_attempts.map(|a| a as usize),
        d.max_attempts as usize,
        "attempts never call upstream",
    );
    let max_buffered_body_bytes = nonzero(
        "max_buffered_body_bytes",
        raw.max_buffered_body_bytes,
        d.max_buffered_body_bytes.max(max_body_bytes),
        "refuses every request body",
    );
    if max_buffered_body_bytes < max_body_bytes {
        problem(
            "limits.max_buffered_body_bytes".into(),
            format!("{max_buffered_body_bytes} is smaller than limits.max_body_bytes ({max_body_bytes}): the largest allowed body could never be read; raise it"),
        );
    }
    let body_wait = match raw.body_wait.as_deref() {
        None => d.body_wait,
        Some(v) => match humantime_duration(v) {
            Some(w) => w,
            None => {
                problem(
                    "limits.body_wait".into(),
                    format!("{v:?} is not a duration like \"2s\" (0s answers 503 at once when the budget is full)"),
                );
                d.body_wait
            }
        },
    };
    Limits {
        max_body_bytes,
        max_event_bytes,
        max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX).min(50),
        max_buffered_body_bytes,
        body_wait,
    }
}

/// `[server]`: the caller-facing listener's limits and loopback trust.
fn server(
    raw: &RawConfig,
    admin: Option<&Admin>,
    problem: &mut dyn FnMut(String, String),
) -> Server {
    let d = Server::default();
    let r = &raw.server;
    let mut duration = |name: &str, v: &Option<String>, default: Duration| match v.as_deref() {
        None => default,
        Some(v) => match humantime_duration(v) {
            Some(t) if t.is_zero() => {
                problem(format!("server.{name}"), zero_timeout());
                default
            }
            Some(t) => t,
            None => {
                problem(
                    format!("server.{name}"),
                    format!("{v:?} is not a duration like \"10s\""),
                );
                default
            }
        },
    };
    let header_read_timeout = duration(
        "header_read_timeout",
        &r.header_read_timeout,
        d.header_read_timeout,
    );
    let idle_timeout = duration("idle_timeout", &r.idle_timeout, d.idle_timeout);
    let max_connections = match r.max_connections {
        Some(0) => {
            problem(
                "server.max_connections".into(),
                format!(
                    "0 refuses every connection; raise it, or leave it out for the default ({})",
                    d.max_connections
                ),
            );
            d.max_connections
        }
        Some(n) => n,
        None => d.max_connections,
    };
    let reverse_proxy = r.reverse_proxy.unwrap_or(false);
    let admin_elsewhere = admin.is_some_and(|a| a.listen.is_some());
    let trust_loopback = r
        .trust_loopback
        .unwrap_or(!(reverse_proxy || admin_elsewhere));
    Server {
        header_read_timeout,
        idle_timeout,
        max_connections,
        reverse_proxy,
        trust_loopback,
    }
}

/// What is accepted but risky.
fn warnings(listen: SocketAddr, server: &Server, admin: Option<&Admin>) -> Vec<ConfigProblem> {
    let mut w = Vec::new();
    if let Some(a) = admin {
        let admin_at = a.listen.unwrap_or(listen);
        if a.allow_remote && !admin_at.ip().is_loopback() {
            w.push(ConfigProblem {
                path: if a.listen.is_some() { "admin.listen" } else { "listen" }.into(),
                message: format!("the admin API and /metrics answer any host that reaches {admin_at} (admin.allow_remote = true on a non-loopback address): only the token protects them; prefer [admin] listen = \"127.0.0.1:9091\" or a private interface"),
            });
        }
        if a.listen.is_none() && server.reverse_proxy && server.trust_loopback {
            w.push(ConfigProblem {
                path: "server.trust_loopback".into(),
                message: "a reverse proxy is declared yet loopback peers are trusted: every caller it forwards looks local; remove trust_loopback or give the admin API its own listener".into(),
            });
        }
    }
    if admin.is_none() && server.reverse_proxy && server.trust_loopback {
        w.push(ConfigProblem {
            path: "server.trust_loopback".into(),
            message: "a reverse proxy is declared yet loopback peers are trusted: /metrics answers every caller it forwards; remove trust_loopback or add an [admin] table with a token".into(),
        });
    }
    w
}

fn is_redis_url(s: &str) -> bool {
    s.starts_with("redis://") || s.starts_with("rediss://")
}

type Resolve<'a> = dyn Fn(&str, &str, &mut dyn FnMut(String, String)) -> Option<Secret> + 'a;

/// `state`: a file path (single node), or a Redis URL (fleet mode) written plainly when it
/// has no password, or referenced as `env:VAR` / `file:PATH`.
fn fleet_state(
    raw: &RawConfig,
    base: &Path,
    resolve: &Resolve<'_>,
    problem: &mut dyn FnMut(String, String),
) -> (PathBuf, Option<Fleet>) {
    let url = if is_redis_url(&raw.state) {
        if raw.state.contains('@') {
            problem(
                "state".into(),
                "a Redis URL with a password is a secret: reference it as \"env:VAR\" or \"file:PATH\"".into(),
            );
            None
        } else {
            Some(Secret(raw.state.as_str().into()))
        }
    } else if raw.state.starts_with("env:") || raw.state.starts_with("file:") {
        let s = resolve("state", &raw.state, problem);
        match s {
            Some(s) if is_redis_url(s.expose()) => Some(s),
            Some(_) => {
                problem(
                    "state".into(),
                    "a referenced state must be a Redis URL (redis://… or rediss://…); write a state file's path plainly".into(),
                );
                None
            }
            None => None,
        }
    } else {
        if raw.fleet.is_some() {
            problem(
                "fleet".into(),
                "[fleet] applies only with state = \"redis://…\" (fleet mode)".into(),
            );
        }
        return (base.join(&raw.state), None);
    };
    let f = raw.fleet.as_ref();
    let prefix = f
        .and_then(|f| f.prefix.clone())
        .unwrap_or_else(|| "keyward".into());
    if prefix.is_empty()
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        problem(
            "fleet.prefix".into(),
            format!("{prefix:?}: use letters, digits and - _ . : only"),
        );
    }
    let replica = f.and_then(|f| f.replica.clone());
    if replica
        .as_deref()
        .is_some_and(|r| r.is_empty() || r.len() > 64 || r.chars().any(char::is_whitespace))
    {
        problem(
            "fleet.replica".into(),
            "a replica name is 1–64 characters without spaces".into(),
        );
    }
    let timeout = match f.and_then(|f| f.timeout.as_deref()) {
        None => Duration::from_secs(1),
        Some(v) => humantime_duration(v)
            .filter(|d| !d.is_zero())
            .unwrap_or_else(|| {
                problem(
                    "fleet.timeout".into(),
                    format!("{v:?} is not a duration like \"1s\" or \"500ms\""),
                );
                Duration::from_secs(1)
            }),
    };
    let ca_file = f.and_then(|f| f.ca_file.as_deref()).map(|c| base.join(c));
    if let Some(path) = &ca_file {
        match std::fs::read_to_string(path) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {}
            Ok(_) => problem(
                "fleet.ca_file".into(),
                format!("{} holds no PEM certificate", path.display()),
            ),
            Err(e) => problem(
                "fleet.ca_file".into(),
                format!("cannot read {}: {e}", path.display()),
            ),
        }
        if url
            .as_ref()
            .is_some_and(|u| !u.expose().starts_with("rediss://"))
        {
            problem(
                "fleet.ca_file".into(),
                "a CA applies to TLS: use a rediss:// URL".into(),
            );
        }
    }
    (
        PathBuf::new(),
        url.map(|url| Fleet {
            url,
            prefix,
            replica,
            timeout,
            ca_file,
        }),
    )
}

/// Validates a credential's `[credentials.oauth]` table.
fn oauth_config(
    path: &str,
    o: &RawOAuth,
    kind: CredentialKind,
    provider: Option<Provider>,
    problem: &mut impl FnMut(String, String),
) -> Option<OAuthConfig> {
    let mut ok = true;
    if kind != CredentialKind::OAuth {
        problem(
            format!("{path}.oauth"),
            "an [oauth] table needs kind = \"oauth\"".into(),
        );
        ok = false;
    }
    let Some(token_url) = o.token_url.clone() else {
        problem(
            format!("{path}.oauth.token_url"),
            "missing: the token endpoint that refreshes this grant (Anthropic: https://console.anthropic.com/v1/oauth/token, OpenAI: https://auth.openai.com/oauth/token)".into(),
        );
        return None;
    };
    if !(token_url.starts_with("https://") || token_url.starts_with("http://")) {
        problem(
            format!("{path}.oauth.token_url"),
            format!("{token_url:?} is not an http(s) URL"),
        );
        ok = false;
    }
    if o.client_id.trim().is_empty() {
        problem(
            format!("{path}.oauth.client_id"),
            "empty: use the client id of the application that issued the tokens".into(),
        );
        ok = false;
    }
    let style = match o.style.as_deref() {
        None if matches!(provider, Some(Provider::Anthropic | Provider::OpenAi)) => {
            TokenStyle::Json
        }
        None | Some("form") => TokenStyle::Form,
        Some("json") => TokenStyle::Json,
        Some(other) => {
            problem(
                format!("{path}.oauth.style"),
                format!("{other:?} is not one of json, form"),
            );
            ok = false;
            TokenStyle::Form
        }
    };
    let refresh_ahead = match o.refresh_ahead.as_deref() {
        None => Duration::from_secs(300),
        Some(v) => humantime_duration(v).unwrap_or_else(|| {
            problem(
                format!("{path}.oauth.refresh_ahead"),
                format!("{v:?} is not a duration like \"5m\""),
            );
            ok = false;
            Duration::from_secs(300)
        }),
    };
    ok.then(|| OAuthConfig {
        token_url,
        client_id: o.client_id.clone(),
        scopes: o.scopes.clone(),
        style,
        refresh_ahead,
    })
}

fn quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        s.to_owned()
    } else {
        format!("{s:?}")
    }
}

/// Applies a route's or a target's `first_token_timeout`, `idle_timeout` and
/// `headers_timeout` over `t`, reporting values that are not durations.
fn override_timeouts(
    t: &mut Timeouts,
    path: &str,
    [first_token, idle, headers]: [&Option<String>; 3],
    problem: &mut impl FnMut(String, String),
) {
    for (field, value, slot) in [
        ("first_token_timeout", first_token, &mut t.first_token),
        ("idle_timeout", idle, &mut t.idle),
        ("headers_timeout", headers, &mut t.headers),
    ] {
        if let Some(v) = value {
            match humantime_duration(v) {
                Some(d) if d.is_zero() => problem(format!("{path}.{field}"), zero_timeout()),
                Some(d) => *slot = d,
                None => problem(
                    format!("{path}.{field}"),
                    format!("{v:?} is not a duration like \"15s\""),
                ),
            }
        }
    }
}

fn humantime_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 1e-3,
        "s" | "" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    let secs = n * scale;
    // Anything beyond a year is a typo (and beyond Duration's range, a panic): refused.
    (secs.is_finite() && (0.0..=365.0 * 86_400.0).contains(&secs))
        .then(|| Duration::try_from_secs_f64(secs).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:0"
state = "state.db"

[[gateway_keys]]
name = "agents"
key = "env:GW_KEY"

[endpoints.anthropic]
provider = "anthropic"
base_url = "http://127.0.0.1:9/"

[[credentials]]
id = "team-1"
endpoint = "anthropic"
secret = "env:K1"

[routes.claude]
targets = [{ endpoint = "anthropic", model = "claude-x", credentials = ["team-1"] }]
first_token_timeout = "20s"
"#;

    fn env(v: &str) -> Option<String> {
        match v {
            "GW_KEY" => Some("gw-secret".into()),
            "K1" => Some("sk-ant-secret-1".into()),
            "REDIS" => Some("redis://:hunter2@10.0.0.5:6379/2".into()),
            _ => None,
        }
    }

    fn with_state(state: &str, more: &str) -> String {
        format!(
            "{}{more}",
            GOOD.replace("state = \"state.db\"", &format!("state = \"{state}\""))
        )
    }

    #[test]
    fn a_redis_state_selects_fleet_mode() {
        let text = with_state(
            "redis://127.0.0.1:6379",
            "\n[fleet]\nprefix = \"team-a\"\nreplica = \"gw-1\"\ntimeout = \"250ms\"\n",
        );
        let c = Config::parse(&text, Path::new("/etc/keyward"), &env).unwrap();
        let f = c.fleet.as_ref().unwrap();
        assert_eq!(f.url.expose(), "redis://127.0.0.1:6379");
        assert_eq!(f.prefix, "team-a");
        assert_eq!(f.replica.as_deref(), Some("gw-1"));
        assert_eq!(f.timeout, Duration::from_millis(250));
        assert_eq!(
            c.state_label(),
            "Redis redis://127.0.0.1:6379 (prefix team-a)"
        );
        // Defaults, and a URL with a password from the environment, never shown.
        let c = Config::parse(
            &with_state("env:REDIS", ""),
            Path::new("/etc/keyward"),
            &env,
        )
        .unwrap();
        let f = c.fleet.as_ref().unwrap();
        assert_eq!((f.prefix.as_str(), f.replica.clone()), ("keyward", None));
        assert!(!c.state_label().contains("hunter2"), "{}", c.state_label());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn the_examples_are_valid() {
        let any = |v: &str| -> Option<String> {
            Some(match v {
                "KEYWARD_REDIS_URL" => "redis://:pw@127.0.0.1:6379/0".into(),
                "KEYWARD_STATE_KEY" => "ab".repeat(32),
                _ => format!("example-{}", v.to_lowercase()),
            })
        };
        for (name, text) in [
            (
                "keyward.toml",
                include_str!("../../../examples/keyward.toml"),
            ),
            ("fleet.toml", include_str!("../../../examples/fleet.toml")),
        ] {
            match Config::parse(text, Path::new("/etc/keyward"), &any) {
                Ok(c) => assert_eq!(c.fleet.is_some(), name == "fleet.toml"),
                // keyward.toml shows a secret read from a file that is not here.
                Err(p) => assert!(
                    p.iter()
                        .all(|p| p.message.starts_with("cannot read secret file")),
                    "{name}: {p:?}"
                ),
            }
        }
    }

    #[test]
    fn fleet_settings_are_checked() {
        let p = problems(&with_state("redis://:pw@127.0.0.1:6379", ""));
        assert!(p.iter().any(|p| p.contains("reference it as")), "{p:?}");
        let p = problems(&with_state("state.db", "\n[fleet]\nprefix = \"x\"\n"));
        assert!(p.iter().any(|p| p.starts_with("fleet:")), "{p:?}");
        let p = problems(&with_state(
            "redis://127.0.0.1:6379",
            "\n[fleet]\nprefix = \"a b\"\ntimeout = \"soon\"\n",
        ));
        assert!(p.iter().any(|p| p.starts_with("fleet.prefix")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("fleet.timeout")), "{p:?}");
        let p = problems(&with_state("env:K1", ""));
        assert!(p.iter().any(|p| p.contains("must be a Redis URL")), "{p:?}");
        let p = problems(&with_state(
            "redis://127.0.0.1:6379",
            "\n[fleet]\nca_file = \"missing-ca.pem\"\n",
        ));
        assert!(
            p.iter()
                .any(|p| p.starts_with("fleet.ca_file") && p.contains("cannot read")),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.contains("use a rediss:// URL")), "{p:?}");
    }

    const OAUTH: &str = r#"
[endpoints.openai]
provider = "openai"
base_url = "http://127.0.0.1:9/v1"

[[credentials]]
id = "claude-max"
endpoint = "anthropic"
kind = "oauth"
subscription = true
[credentials.oauth]
token_url = "http://127.0.0.1:9/v1/oauth/token"
client_id = "client-1"
refresh_ahead = "2m"

[[credentials]]
id = "codex"
endpoint = "openai"
kind = "oauth"
subscription = true
oauth = { token_url = "http://127.0.0.1:9/oauth/token", client_id = "client-2", scopes = ["openid", "offline_access"] }

[routes.codex]
targets = [{ endpoint = "openai", model = "gpt-x", credentials = ["codex"] }]
"#;

    fn problems(text: &str) -> Vec<String> {
        Config::parse(text, Path::new("/etc/keyward"), &env)
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn oauth_credentials_take_no_secret_and_codex_tokens_serve_responses_only() {
        let c = Config::parse(&format!("{GOOD}{OAUTH}"), Path::new("/etc/keyward"), &env).unwrap();
        let claude = c
            .credentials
            .iter()
            .find(|c| &*c.id == "claude-max")
            .unwrap();
        assert!(claude.secret.is_none());
        let o = claude.oauth.as_ref().unwrap();
        assert_eq!(
            o.style,
            TokenStyle::Json,
            "Anthropic's token endpoint takes JSON"
        );
        assert_eq!(o.refresh_ahead, Duration::from_secs(120));
        let codex = c.credentials.iter().find(|c| &*c.id == "codex").unwrap();
        assert_eq!(
            codex.oauth.as_ref().unwrap().scopes,
            ["openid", "offline_access"]
        );
        assert_eq!(c.routes["codex"].targets[0].apis, Some(vec!["responses"]));
        assert_eq!(c.routes["claude"].targets[0].apis, None);
    }

    #[test]
    fn subscription_tokens_are_opt_in_and_oauth_mistakes_are_reported() {
        let p = problems(&format!(
            "{GOOD}{}",
            OAUTH.replace("subscription = true\n", "")
        ));
        assert!(
            p.iter().any(|p| p.starts_with("credentials[1].subscription: OAuth tokens of a Claude or ChatGPT subscription are opt-in")),
            "{p:?}"
        );
        let p = problems(&format!(
            "{GOOD}{}",
            OAUTH.replace(
                "kind = \"oauth\"\nsubscription = true\n[credentials.oauth]",
                "secret = \"env:K1\"\n[credentials.oauth]"
            )
        ));
        assert!(
            p.iter().any(|p| p.contains("needs kind = \"oauth\"")),
            "{p:?}"
        );
        let p = problems(&format!(
            "{GOOD}{}\n[routes.x]\ntargets = [{{ endpoint = \"anthropic\", model = \"m\", credentials = [\"team-1\"], apis = [\"smtp\"] }}]\n",
            OAUTH
        ));
        assert!(
            p.iter()
                .any(|p| p.starts_with("routes.x.targets[0].apis[0]: \"smtp\" is not one of")),
            "{p:?}"
        );
        let p = problems(&format!("state_key = \"env:K1\"\n{GOOD}"));
        assert!(
            p.iter()
                .any(|p| p.starts_with("state_key: the key must be 64 hex")),
            "{p:?}"
        );
        assert!(
            !p.join(" ").contains("sk-ant-secret-1"),
            "a key must never be printed"
        );
    }

    #[test]
    fn a_huge_duration_is_a_problem_not_a_panic() {
        // Found by the config fuzzer: a 100-digit number of seconds panicked.
        let text = GOOD.replace(
            "first_token_timeout = \"20s\"",
            &format!("first_token_timeout = \"{}s\"", "6".repeat(100)),
        );
        let p = problems(&text);
        assert!(p.iter().any(|p| p.contains("first_token_timeout")), "{p:?}");
        assert_eq!(humantime_duration("1e400s"), None);
        assert_eq!(humantime_duration("366d"), None);
        assert_eq!(humantime_duration("2d"), Some(Duration::from_secs(172_800)));
    }

    #[test]
    fn a_good_config_loads() {
        let c = Config::parse(GOOD, Path::new("/etc/keyward"), &env).unwrap();
        assert_eq!(
            c.routes["claude"].timeouts.first_token,
            Duration::from_secs(20)
        );
        assert_eq!(c.endpoints["anthropic"].base_url, "http://127.0.0.1:9");
        assert_eq!(c.state, PathBuf::from("/etc/keyward/state.db"));
        assert_eq!(format!("{:?}", c.credentials[0].secret), "Some(Secret(…))");
        assert!(
            !format!("{c:?}").contains("sk-ant-secret-1"),
            "Debug must not print secrets"
        );
    }

    #[test]
    fn a_target_overrides_its_routes_timeouts() {
        let text = GOOD.replace(
            "credentials = [\"team-1\"] }]",
            "credentials = [\"team-1\"], first_token_timeout = \"2m\", idle_timeout = \"45s\" }]",
        );
        let c = Config::parse(&text, Path::new("."), &env).unwrap();
        let t = &c.routes["claude"].targets[0].timeouts;
        assert_eq!(t.first_token, Duration::from_secs(120), "the target's own");
        assert_eq!(t.idle, Duration::from_secs(45));
        assert_eq!(t.headers, Timeouts::default().headers, "the rest inherited");
        assert_eq!(
            c.routes["claude"].timeouts.first_token,
            Duration::from_secs(20),
            "the route keeps its own"
        );
        let bad = GOOD.replace(
            "credentials = [\"team-1\"] }]",
            "credentials = [\"team-1\"], idle_timeout = \"later\" }]",
        );
        let problems = Config::parse(&bad, Path::new("."), &env).unwrap_err();
        assert!(
            problems.iter().any(|p| p
                .to_string()
                .starts_with("routes.claude.targets[0].idle_timeout")),
            "{problems:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let bad = GOOD
            .replace("env:K1", "sk-literal-secret")
            .replace(
                "credentials = [\"team-1\"]",
                "credentials = [\"team-1\", \"ghost\"]",
            )
            .replace(
                "first_token_timeout = \"20s\"",
                "first_token_timeout = \"soon\"\ncontext_fallback = \"nowhere\"",
            );
        let problems = Config::parse(&bad, Path::new("."), &env).unwrap_err();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|p| p.starts_with("credentials[0].secret: secrets must be referenced")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|p| p
                    == "routes.claude.targets[0].credentials[1]: unknown credential \"ghost\""),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|p| p.starts_with("routes.claude.first_token_timeout")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|p| p.starts_with("routes.claude.context_fallback")),
            "{text:?}"
        );
        assert!(
            !text.join("\n").contains("sk-literal-secret"),
            "a secret must never be printed"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let problems = Config::parse(
            &GOOD.replace("listen =", "lisen = \"x\"\nlisten ="),
            Path::new("."),
            &env,
        )
        .unwrap_err();
        assert!(
            problems[0].message.contains("unknown field `lisen`"),
            "{problems:?}"
        );
    }

    #[test]
    fn fingerprints_identify_without_revealing() {
        let a = Secret("sk-ant-api03-abcdef".into());
        let b = Secret("sk-ant-api03-abcdeg".into());
        assert_eq!(a.fingerprint().len(), 12);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(a.fingerprint().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    fn env_more(v: &str) -> Option<String> {
        match v {
            "ADMIN" => Some("adm-0123456789abcdef".into()),
            "SHORT" => Some("hunter2".into()),
            "K1_AGAIN" => Some("sk-ant-secret-1".into()),
            _ => env(v),
        }
    }

    fn problems_with(text: &str) -> Vec<String> {
        Config::parse(text, Path::new("/etc/keyward"), &env_more)
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn dangerous_settings_are_refused_with_what_to_do() {
        for (more, path, words) in [
            ("\n[limits]\nmax_body_bytes = 0\n", "limits.max_body_bytes", "refuses every request body"),
            ("\n[limits]\nmax_attempts = 0\n", "limits.max_attempts", "never call upstream"),
            ("\n[limits]\nmax_event_bytes = 0\n", "limits.max_event_bytes", "raise it"),
            ("\n[limits]\nmax_buffered_body_bytes = 1024\n", "limits.max_buffered_body_bytes", "smaller than limits.max_body_bytes"),
            ("\n[timeouts]\nrequest = \"0s\"\n", "timeouts.request", "zero timeout"),
            ("\n[timeouts]\nconnect = \"0ms\"\n", "timeouts.connect", "zero timeout"),
            ("\n[server]\nheader_read_timeout = \"0s\"\n", "server.header_read_timeout", "zero timeout"),
            ("\n[server]\nidle_timeout = \"0s\"\n", "server.idle_timeout", "zero timeout"),
            ("\n[server]\nmax_connections = 0\n", "server.max_connections", "refuses every connection"),
            ("\n[admin]\ntoken = \"env:SHORT\"\n", "admin.token", "shorter than 16 characters"),
            ("\n[admin]\ntoken = \"env:GW_KEY\"\n", "admin.token", "also gateway key \"agents\""),
            (
                "\n[admin]\ntoken = \"env:ADMIN\"\nlisten = \"127.0.0.1:8080\"\n",
                "admin.listen",
                "must differ",
            ),
            (
                "\n[[credentials]]\nid = \"team-1-again\"\nendpoint = \"anthropic\"\nsecret = \"env:K1_AGAIN\"\n",
                "credentials[1].secret",
                "the same secret as \"team-1\"",
            ),
        ] {
            let text = format!("{}{more}", GOOD.replace("127.0.0.1:0", "127.0.0.1:8080"));
            let p = problems_with(&text);
            assert!(
                p.iter().any(|p| p.starts_with(path) && p.contains(words)),
                "{more}: {p:?}"
            );
            for shown in &p {
                for secret in ["gw-secret", "hunter2", "sk-ant-secret-1"] {
                    assert!(!shown.contains(secret), "a secret in {shown}");
                }
            }
        }
        // A route's zero override too.
        let text = GOOD.replace(
            "first_token_timeout = \"20s\"",
            "first_token_timeout = \"0s\"",
        );
        let p = problems_with(&text);
        assert!(
            p.iter()
                .any(|p| p.starts_with("routes.claude.first_token_timeout")
                    && p.contains("zero timeout")),
            "{p:?}"
        );
    }

    #[test]
    fn risky_settings_load_with_a_warning_and_loopback_trust_follows_the_listeners() {
        let remote = format!(
            "{}\n[admin]\ntoken = \"env:ADMIN\"\nallow_remote = true\n",
            GOOD.replace("127.0.0.1:0", "0.0.0.0:8080")
        );
        let c = Config::parse(&remote, Path::new("/etc/keyward"), &env_more).unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.path == "listen" && w.message.contains("only the token protects them")),
            "{:?}",
            c.warnings
        );
        assert!(c.server.trust_loopback);
        // The defaults warn about nothing.
        let c = Config::parse(GOOD, Path::new("/etc/keyward"), &env_more).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.server, Server::default());
        assert_eq!(c.limits, Limits::default());
        // An admin listener of its own, or a declared reverse proxy: no loopback trust on
        // the proxy listener.
        let own = format!("{GOOD}\n[admin]\ntoken = \"env:ADMIN\"\nlisten = \"127.0.0.1:9091\"\n");
        let c = Config::parse(&own, Path::new("/etc/keyward"), &env_more).unwrap();
        assert_eq!(
            c.admin.as_ref().and_then(|a| a.listen),
            Some("127.0.0.1:9091".parse().unwrap())
        );
        assert!(!c.server.trust_loopback);
        let proxied = format!("{GOOD}\n[server]\nreverse_proxy = true\n");
        let c = Config::parse(&proxied, Path::new("/etc/keyward"), &env_more).unwrap();
        assert!(!c.server.trust_loopback);
        let forced = format!("{GOOD}\n[server]\nreverse_proxy = true\ntrust_loopback = true\n");
        let c = Config::parse(&forced, Path::new("/etc/keyward"), &env_more).unwrap();
        assert!(
            c.warnings.iter().any(|w| w.path == "server.trust_loopback"),
            "{:?}",
            c.warnings
        );
    }
}
