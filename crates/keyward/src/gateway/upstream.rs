//! Requests to upstream providers: the HTTP client, URLs, auth, and the headers that
//! pass. The only module that builds provider requests.
//!
//! The client is hyper-util's pooled client over a rustls connector (HTTP/1.1, and HTTP/2
//! where the provider offers it by ALPN), not reqwest: on the request path reqwest's layers
//! — its own URL type re-parsed into a URI per request, redirect and retry policies we turn
//! off anyway, a boxed future per layer — cost about 6.7 µs of CPU per request in the
//! benchmark (a reverse proxy on reqwest against the same proxy on hyper-util's client).
//! reqwest stays for the OAuth token endpoint and the CLI, where its form and JSON helpers
//! earn their cost.

use std::time::Duration;

use axum::http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, Request, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use keyward_core::classify::{CredentialKind, Provider};
use keyward_wire::stream::Api;

use crate::config::Endpoint;

/// Caller headers that pass upstream unchanged (protocol headers). Everything else is
/// dropped: the caller's own identity and auth never reach the provider, and
/// `OpenAI-Organization`/`OpenAI-Project` would clash with Keyward's credential.
const PASS: [HeaderName; 5] = [
    ANTHROPIC_VERSION,
    ANTHROPIC_BETA,
    HeaderName::from_static("openai-beta"),
    HeaderName::from_static("accept"),
    HeaderName::from_static("idempotency-key"),
];

const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const API_KEY: HeaderName = HeaderName::from_static("api-key");
const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

/// An upstream response; its body streams as it arrives.
pub type Response = axum::http::Response<hyper::body::Incoming>;

/// Why an upstream request failed before a response (connect, TLS, I/O).
pub type SendError = hyper_util::client::legacy::Error;

/// The pooled HTTP client every provider call goes through (inference and probes).
#[derive(Debug, Clone)]
pub struct Client(hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>);

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot set up TLS for upstream connections: {0} (ring does not offer rustls's default protocol versions: a build problem, not a configuration one; report it)")]
    Tls(#[from] rustls::Error),
}

/// A credential's secret that cannot be sent as an HTTP header value (a control character
/// or a line break in the key file, say). The secret itself is never in the message.
#[derive(Debug, thiserror::Error)]
#[error("the credential's secret is not a valid HTTP header value (a line break or control character in it?); fix the key file or variable")]
pub struct BadSecret;

impl Client {
    /// A client that connects within `connect_timeout`, speaks HTTP/1.1, keeps idle
    /// connections for 90 s, and verifies servers against the public web PKI roots.
    pub fn new(connect_timeout: Duration) -> Result<Client, ClientError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            // HTTP/1.1 only, never HTTP/2 through ALPN: hyper-util's pool shares one HTTP/2
            // connection per host and does not open another when the provider's
            // SETTINGS_MAX_CONCURRENT_STREAMS (often 100-256) is reached; requests past it
            // wait in h2's queue behind long-lived streams (hyperium/hyper#2197, #3623,
            // hyperium/h2#848). With many streams open to one provider, new requests would
            // burn their deadlines there, and failing over to a sibling credential would
            // not escape the queue (same host, same connection). HTTP/1.1 connections are
            // pooled and kept 90 s, so a stream costs a connection, never a wait.
            .enable_http1()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Ok(Client(client))
    }

    /// Sends `req`; resolves when the response's headers have arrived. Redirects are never
    /// followed (one would carry the credential to another host; the caller sees the 3xx).
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response, SendError> {
        self.0.request(req).await
    }
}

/// Parses an upstream URL.
pub fn parse(url: &str) -> Option<Uri> {
    Uri::try_from(url).ok()
}

/// How many inbound APIs have cached upstream URLs.
pub const URL_SLOTS: usize = 5;

/// An inbound API (what the caller called).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI `POST /v1/chat/completions`.
    Chat,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// Gemini `POST /v1beta/models/{model}:generateContent` / `:streamGenerateContent`.
    Gemini(GeminiCall),
}

/// Which Gemini call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeminiCall {
    /// `streamGenerateContent` rather than `generateContent`.
    pub stream: bool,
    /// `alt=sse` (SSE) rather than a streamed JSON array.
    pub sse: bool,
}

impl Inbound {
    /// The wire family: error format and stream rules.
    pub fn api(self) -> Api {
        match self {
            Inbound::Messages | Inbound::CountTokens => Api::Messages,
            Inbound::Chat | Inbound::Embeddings => Api::ChatCompletions,
            Inbound::Responses => Api::Responses,
            Inbound::Gemini(_) => Api::Gemini,
        }
    }

    /// The inbound APIs whose upstream URLs are cached per route target.
    pub const CACHED: [Inbound; URL_SLOTS] = [
        Inbound::Messages,
        Inbound::CountTokens,
        Inbound::Chat,
        Inbound::Responses,
        Inbound::Embeddings,
    ];

    /// Its index in a route target's URL cache (Gemini's URLs vary by call: not cached).
    pub fn slot(self) -> Option<usize> {
        match self {
            Inbound::Messages => Some(0),
            Inbound::CountTokens => Some(1),
            Inbound::Chat => Some(2),
            Inbound::Responses => Some(3),
            Inbound::Embeddings => Some(4),
            Inbound::Gemini(_) => None,
        }
    }

    /// The API's name in the config's `apis` lists.
    pub fn name(self) -> &'static str {
        match self {
            Inbound::Messages | Inbound::CountTokens => "messages",
            Inbound::Chat => "chat",
            Inbound::Responses => "responses",
            Inbound::Embeddings => "embeddings",
            Inbound::Gemini(_) => "gemini",
        }
    }

    /// Whether an endpoint of `provider` speaks this API.
    pub fn served_by(self, provider: Provider) -> bool {
        match self {
            Inbound::Messages => matches!(
                provider,
                Provider::Anthropic | Provider::Bedrock | Provider::VertexAi
            ),
            Inbound::CountTokens => provider == Provider::Anthropic,
            Inbound::Chat => {
                provider.speaks_openai() || matches!(provider, Provider::Gemini | Provider::Bedrock)
            }
            Inbound::Embeddings => provider.speaks_openai() || provider == Provider::Gemini,
            Inbound::Responses => matches!(
                provider,
                Provider::OpenAi | Provider::AzureOpenAi | Provider::OpenAiCompatible
            ),
            Inbound::Gemini(_) => matches!(provider, Provider::Gemini | Provider::VertexAi),
        }
    }
}

/// The upstream URL for `inbound` at `endpoint`, for upstream model `model`.
pub fn url(inbound: Inbound, endpoint: &Endpoint, model: &str) -> String {
    if let Some(u) = super::cloud::request::url(inbound, endpoint, model) {
        return u;
    }
    let base = &endpoint.base_url;
    let tail = match inbound {
        Inbound::Messages => return format!("{base}/v1/messages"),
        Inbound::CountTokens => return format!("{base}/v1/messages/count_tokens"),
        Inbound::Chat => "chat/completions",
        Inbound::Responses => "responses",
        Inbound::Embeddings => "embeddings",
        Inbound::Gemini(call) => {
            let action = if call.stream {
                "streamGenerateContent"
            } else {
                "generateContent"
            };
            let alt = if call.stream && call.sse {
                "?alt=sse"
            } else {
                ""
            };
            return format!("{base}/v1beta/models/{model}:{action}{alt}");
        }
    };
    if endpoint.provider == Provider::AzureOpenAi {
        let version = endpoint.api_version.as_deref().unwrap_or("2024-10-21");
        if inbound == Inbound::Responses {
            return format!("{base}/openai/responses?api-version={version}");
        }
        return format!("{base}/openai/deployments/{model}/{tail}?api-version={version}");
    }
    format!("{base}/{tail}")
}

/// The caller's headers that pass upstream ([`PASS`]), copied into storage of their own.
/// A request's parsed headers share the caller connection's read buffer: a failover state
/// that outlives the request head (a committed stream keeps it to continue) holds only
/// these, not the whole head and the buffer under it.
pub fn passed_headers(caller: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in PASS {
        for v in caller.get_all(&name) {
            if let Ok(mut owned) = HeaderValue::from_bytes(v.as_bytes()) {
                owned.set_sensitive(v.is_sensitive());
                out.append(name.clone(), owned);
            }
        }
    }
    out
}

/// Builds an upstream request carrying `body`.
pub fn request(
    method: Method,
    uri: Uri,
    endpoint: &Endpoint,
    (kind, secret): (CredentialKind, &str),
    caller: Option<&HeaderMap>,
    body: Option<Vec<u8>>,
) -> Result<Request<Full<Bytes>>, BadSecret> {
    let mut headers = HeaderMap::with_capacity(8);
    if let Some(h) = caller {
        for name in PASS {
            if let Some(v) = h.get(&name) {
                headers.append(name, v.clone());
            }
        }
    }
    let sensitive = |v: String| -> Result<HeaderValue, BadSecret> {
        let mut v = HeaderValue::try_from(v).map_err(|_| BadSecret)?;
        v.set_sensitive(true);
        Ok(v)
    };
    match (endpoint.provider, kind) {
        (Provider::Anthropic, CredentialKind::OAuth) => {
            headers.append(AUTHORIZATION, sensitive(format!("Bearer {secret}"))?);
            headers.append(ANTHROPIC_BETA, HeaderValue::from_static("oauth-2025-04-20"));
        }
        (Provider::Anthropic, _) => {
            headers.append(X_API_KEY, sensitive(secret.to_owned())?);
        }
        (Provider::AzureOpenAi, CredentialKind::ApiKey) => {
            headers.append(API_KEY, sensitive(secret.to_owned())?);
        }
        (Provider::Gemini, CredentialKind::ApiKey) => {
            headers.append(X_GOOG_API_KEY, sensitive(secret.to_owned())?);
        }
        _ => {
            headers.append(AUTHORIZATION, sensitive(format!("Bearer {secret}"))?);
        }
    }
    if endpoint.provider == Provider::Anthropic && !headers.contains_key(ANTHROPIC_VERSION) {
        headers.insert(ANTHROPIC_VERSION, HeaderValue::from_static("2023-06-01"));
    }
    let body = match body {
        Some(b) => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Bytes::from(b)
        }
        None => Bytes::new(),
    };
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(provider: Provider) -> Endpoint {
        Endpoint {
            id: "e".into(),
            provider,
            base_url: "https://api.example.test".into(),
            api_version: None,
            region: None,
            project: None,
        }
    }

    fn uri() -> Uri {
        Uri::from_static("https://api.example.test/v1/messages")
    }

    #[test]
    fn auth_goes_where_each_provider_expects_it_and_is_marked_sensitive() {
        let cases = [
            (
                Provider::Anthropic,
                CredentialKind::ApiKey,
                "x-api-key",
                "sk-1",
            ),
            (
                Provider::Anthropic,
                CredentialKind::OAuth,
                "authorization",
                "Bearer sk-1",
            ),
            (
                Provider::AzureOpenAi,
                CredentialKind::ApiKey,
                "api-key",
                "sk-1",
            ),
            (
                Provider::Gemini,
                CredentialKind::ApiKey,
                "x-goog-api-key",
                "sk-1",
            ),
            (
                Provider::OpenAi,
                CredentialKind::ApiKey,
                "authorization",
                "Bearer sk-1",
            ),
        ];
        for (provider, kind, header, value) in cases {
            let req = request(
                Method::POST,
                uri(),
                &endpoint(provider),
                (kind, "sk-1"),
                None,
                Some(b"{}".to_vec()),
            )
            .unwrap();
            let v = req.headers().get(header).unwrap();
            assert_eq!(v, value, "{provider:?} {kind:?}");
            assert!(v.is_sensitive(), "{provider:?} {kind:?}: not sensitive");
            assert_eq!(req.headers()["content-type"], "application/json");
            assert_eq!(
                req.headers().contains_key("anthropic-version"),
                provider == Provider::Anthropic
            );
        }
    }

    #[test]
    fn only_protocol_headers_of_the_caller_pass() {
        let mut caller = HeaderMap::new();
        caller.insert("anthropic-version", HeaderValue::from_static("2024-01-01"));
        caller.insert("anthropic-beta", HeaderValue::from_static("tools-1"));
        caller.insert("x-api-key", HeaderValue::from_static("caller-own-key"));
        caller.insert("authorization", HeaderValue::from_static("Bearer caller"));
        caller.insert("openai-organization", HeaderValue::from_static("org-1"));
        caller.insert("idempotency-key", HeaderValue::from_static("idem-1"));
        let req = request(
            Method::POST,
            uri(),
            &endpoint(Provider::Anthropic),
            (CredentialKind::OAuth, "tok"),
            Some(&caller),
            None,
        )
        .unwrap();
        let h = req.headers();
        // The caller's version wins over the default; its beta flags stay beside OAuth's.
        assert_eq!(h["anthropic-version"], "2024-01-01");
        let betas: Vec<_> = h.get_all("anthropic-beta").iter().collect();
        assert_eq!(betas, ["tools-1", "oauth-2025-04-20"]);
        assert_eq!(h["idempotency-key"], "idem-1");
        assert_eq!(h["authorization"], "Bearer tok");
        assert_eq!(h.get_all("authorization").iter().count(), 1);
        assert!(h.get("x-api-key").is_none());
        assert!(h.get("openai-organization").is_none());
        assert!(h.get("content-type").is_none());
    }

    #[test]
    fn a_secret_with_a_line_break_is_refused_without_echoing_it() {
        let e = request(
            Method::POST,
            uri(),
            &endpoint(Provider::Anthropic),
            (CredentialKind::ApiKey, "sk-secret-value\n"),
            None,
            None,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("sk-secret-value"));
    }
}
