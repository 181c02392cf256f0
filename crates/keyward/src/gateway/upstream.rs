//! Requests to upstream providers: URL, auth, and the headers that pass. The only module
//! that holds a `reqwest::Client`.

use axum::http::HeaderMap;
use keyward_core::classify::{CredentialKind, Provider};
use keyward_wire::stream::Api;

use crate::config::{Credential, Endpoint};

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

/// The upstream URL for `api` at `endpoint`.
pub fn url(api: Api, endpoint: &Endpoint) -> String {
    let base = &endpoint.base_url;
    match api {
        Api::Messages => format!("{base}/v1/messages"),
        Api::ChatCompletions => format!("{base}/v1/chat/completions"),
        Api::Responses => format!("{base}/v1/responses"),
        Api::Gemini => format!("{base}/v1beta/models"),
    }
}

/// Builds an upstream request carrying `body`.
pub fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    endpoint: &Endpoint,
    cred: &Credential,
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
    let secret = cred.secret.expose();
    rb = match (endpoint.provider, cred.kind) {
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
