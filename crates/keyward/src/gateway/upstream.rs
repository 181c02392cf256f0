//! Requests to upstream providers: URL, auth, and the headers that pass. The only module
//! that holds a `reqwest::Client`.

use axum::http::HeaderMap;
use keyward_core::classify::{CredentialKind, Provider};
use keyward_wire::stream::Api;

use crate::config::Endpoint;

/// Caller headers that pass upstream unchanged (protocol headers). Everything else is
/// dropped: the caller's own identity and auth never reach the provider, and
/// `OpenAI-Organization`/`OpenAI-Project` would clash with Keyward's credential.
const PASS: &[&str] = &[
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
    "accept",
    "idempotency-key",
];

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
            Inbound::Messages | Inbound::CountTokens => provider == Provider::Anthropic,
            Inbound::Chat | Inbound::Embeddings => {
                provider.speaks_openai() || provider == Provider::Gemini
            }
            Inbound::Responses => matches!(
                provider,
                Provider::OpenAi | Provider::AzureOpenAi | Provider::OpenAiCompatible
            ),
            Inbound::Gemini(_) => provider == Provider::Gemini,
        }
    }
}

/// The upstream URL for `inbound` at `endpoint`, for upstream model `model`.
pub fn url(inbound: Inbound, endpoint: &Endpoint, model: &str) -> String {
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

/// Builds an upstream request carrying `body`.
pub fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: impl reqwest::IntoUrl,
    endpoint: &Endpoint,
    (kind, secret): (CredentialKind, &str),
    caller: Option<&HeaderMap>,
    body: Option<Vec<u8>>,
) -> reqwest::RequestBuilder {
    let mut rb = client.request(method, url);
    if let Some(h) = caller {
        for name in PASS {
            if let Some(v) = h.get(*name) {
                rb = rb.header(*name, v.as_bytes());
            }
        }
    }
    rb = match (endpoint.provider, kind) {
        (Provider::Anthropic, CredentialKind::OAuth) => rb
            .header("authorization", format!("Bearer {secret}"))
            .header("anthropic-beta", "oauth-2025-04-20"),
        (Provider::Anthropic, _) => rb.header("x-api-key", secret),
        (Provider::AzureOpenAi, CredentialKind::ApiKey) => rb.header("api-key", secret),
        (Provider::Gemini, CredentialKind::ApiKey) => rb.header("x-goog-api-key", secret),
        _ => rb.bearer_auth(secret),
    };
    if endpoint.provider == Provider::Anthropic
        && caller.is_none_or(|h| !h.contains_key("anthropic-version"))
    {
        rb = rb.header("anthropic-version", "2023-06-01");
    }
    if let Some(b) = body {
        rb = rb.header("content-type", "application/json").body(b);
    }
    rb
}
