//! Upstream requests of cloud credentials: Bedrock's and Vertex AI's URLs and request
//! bodies, and the auth each needs — a SigV4 signature for Bedrock, the access token as
//! a bearer for Vertex AI and Azure OpenAI with Entra ID. Other credentials go through
//! [`upstream::request`] unchanged.
//!
//! - Bedrock, Anthropic Messages callers: `POST /model/{model}/invoke` (or
//!   `/invoke-with-response-stream`, answered in AWS event-stream framing that the
//!   stream's framer decodes); the body without `model` and `stream`, with
//!   `anthropic_version: "bedrock-2023-05-31"`. OpenAI-format callers: Bedrock's
//!   OpenAI-compatible `POST /openai/v1/chat/completions`, the body as sent. Signed for the
//!   endpoint's region, service `bedrock`.
//! - Vertex AI, Anthropic callers: `…/publishers/anthropic/models/{model}:rawPredict` (or
//!   `:streamRawPredict`, plain SSE), the body without `model`, with
//!   `anthropic_version: "vertex-2023-10-16"`; Gemini callers:
//!   `…/publishers/google/models/{model}:generateContent` (or
//!   `:streamGenerateContent?alt=sse`), the body as sent.

use std::sync::Arc;

use axum::http::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use axum::http::{HeaderMap, Method, Request, Uri};
use bytes::Bytes;
use http_body_util::Full;
use keyward_core::classify::Provider;
use keyward_wire::events::EventFramer;
use serde_json::Value;

use super::{system_time, Material};
use crate::config::{Credential, Endpoint};
use crate::gateway::upstream::{self, Inbound};
use crate::gateway::Gateway;

/// Why a cloud request could not be built. None quotes a secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// The secret is not a valid header value.
    #[error(transparent)]
    Secret(#[from] upstream::BadSecret),
    /// The signing keys are not loaded (a refresh is under way or failed).
    #[error("no AWS keys loaded for {0} yet; the credential is refreshed and retried")]
    NoKeys(String),
    /// The endpoint has no region to sign for.
    #[error(
        "endpoint {0} has no region: add region = \"us-east-1\" (or the region the model is in)"
    )]
    NoRegion(String),
    /// SigV4 signing failed.
    #[error(transparent)]
    Sign(#[from] super::aws::SignError),
    /// The stream URL does not parse.
    #[error("the streaming URL of endpoint {0} does not parse; check its base_url")]
    Url(String),
}

/// One upstream call's particulars.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) inbound: Inbound,
    pub(crate) stream: bool,
    pub(crate) endpoint: &'a Endpoint,
    pub(crate) cred: &'a Credential,
    /// The key, the bearer token, or the AWS keys' handle.
    pub(crate) secret: &'a Arc<str>,
}

/// Builds the upstream request of `call` at `url` with `body` (its model already
/// spliced), signing it when the credential is an AWS one.
pub(crate) fn build(
    gw: &Gateway,
    call: Call<'_>,
    url: Uri,
    caller: Option<&HeaderMap>,
    body: Vec<u8>,
) -> Result<Request<Full<Bytes>>, BuildError> {
    let provider = call.endpoint.provider;
    let cloud_shape = matches!(provider, Provider::Bedrock | Provider::VertexAi);
    if !cloud_shape && call.cred.cloud.is_none() {
        return Ok(upstream::request(
            Method::POST,
            url,
            call.endpoint,
            (call.cred.kind, call.secret),
            caller,
            Some(body),
        )?);
    }
    let (url, body) = if cloud_shape {
        (
            stream_url(url, call)?,
            adapt_body(provider, call.inbound, body, &betas(provider, caller)),
        )
    } else {
        (url, body)
    };
    finish(gw, call, Method::POST, url, caller, body)
}

/// The request with its auth: the bearer or key (through [`upstream::request`]), or a
/// SigV4 signature with the credential's current AWS keys.
pub(crate) fn finish(
    gw: &Gateway,
    call: Call<'_>,
    method: Method,
    url: Uri,
    caller: Option<&HeaderMap>,
    body: Vec<u8>,
) -> Result<Request<Full<Bytes>>, BuildError> {
    let (cred, endpoint) = (call.cred, call.endpoint);
    if endpoint.provider != Provider::Bedrock || cred.cloud.is_none() {
        return Ok(upstream::request(
            method,
            url,
            endpoint,
            (cred.kind, call.secret),
            caller,
            Some(body),
        )?);
    }
    let material = gw.oauth.cloud.material(&cred.id);
    let Some(Material::Aws(keys)) = material.as_deref() else {
        return Err(BuildError::NoKeys(cred.id.to_string()));
    };
    let Some(region) = endpoint.region.as_deref() else {
        return Err(BuildError::NoRegion(endpoint.id.to_string()));
    };
    let signed = body.clone();
    let mut req = upstream::request(method, url, endpoint, (cred.kind, ""), caller, Some(body))?;
    let h = req.headers_mut();
    h.remove(AUTHORIZATION);
    h.insert(
        ACCEPT,
        HeaderValue::from_static(if call.stream {
            "application/vnd.amazon.eventstream"
        } else {
            "application/json"
        }),
    );
    keys.sign(
        &mut req,
        &signed,
        region,
        "bedrock",
        system_time(gw.engine.now()),
    )?;
    Ok(req)
}

/// The streaming variant of a cached non-streaming URL.
fn stream_url(url: Uri, call: Call<'_>) -> Result<Uri, BuildError> {
    if !call.stream || call.inbound != Inbound::Messages {
        return Ok(url);
    }
    let s = url.to_string();
    let streamed = match call.endpoint.provider {
        Provider::Bedrock => s
            .strip_suffix("/invoke")
            .map(|b| format!("{b}/invoke-with-response-stream")),
        Provider::VertexAi => s
            .strip_suffix(":rawPredict")
            .map(|b| format!("{b}:streamRawPredict")),
        _ => None,
    };
    match streamed {
        Some(u) => upstream::parse(&u).ok_or_else(|| BuildError::Url(call.endpoint.id.to_string())),
        None => Ok(url),
    }
}

/// The caller's `anthropic-beta` flags, which Bedrock takes in the body
/// (`anthropic_beta`), not as a header; Vertex AI takes the header as it is.
fn betas(provider: Provider, caller: Option<&HeaderMap>) -> Vec<String> {
    if provider != Provider::Bedrock {
        return Vec::new();
    }
    caller
        .map(|h| {
            h.get_all("anthropic-beta")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// An Anthropic Messages body as Bedrock's and Vertex AI's Claude take it: no `model`
/// (it is in the URL), their `anthropic_version`, and for Bedrock no `stream` (the URL
/// says it) and the caller's beta flags as `anthropic_beta`. Anything else is sent as it
/// came.
pub(crate) fn adapt_body(
    provider: Provider,
    inbound: Inbound,
    body: Vec<u8>,
    betas: &[String],
) -> Vec<u8> {
    if !matches!(inbound, Inbound::Messages | Inbound::CountTokens) {
        return body;
    }
    let Ok(Value::Object(mut o)) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    o.remove("model");
    let version = match provider {
        Provider::Bedrock => {
            o.remove("stream");
            "bedrock-2023-05-31"
        }
        _ => "vertex-2023-10-16",
    };
    o.entry("anthropic_version")
        .or_insert_with(|| Value::String(version.into()));
    if !betas.is_empty() && !o.contains_key("anthropic_beta") {
        o.insert(
            "anthropic_beta".into(),
            Value::Array(betas.iter().cloned().map(Value::String).collect()),
        );
    }
    serde_json::to_vec(&Value::Object(o)).unwrap_or(body)
}

/// The model as a URL path segment (Bedrock model ids hold `:`, inference profile ARNs
/// `:` and `/`).
pub(crate) fn path_segment(model: &str) -> String {
    let mut out = String::with_capacity(model.len());
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The upstream URL of `inbound` at a Bedrock or Vertex AI endpoint (non-streaming form
/// for Messages; [`build`] switches a stream's).
pub(crate) fn url(inbound: Inbound, endpoint: &Endpoint, model: &str) -> Option<String> {
    let base = &endpoint.base_url;
    match endpoint.provider {
        Provider::Bedrock => match inbound {
            Inbound::Messages => Some(format!("{base}/model/{}/invoke", path_segment(model))),
            Inbound::Chat => Some(format!("{base}/openai/v1/chat/completions")),
            _ => None,
        },
        Provider::VertexAi => {
            let project = endpoint.project.as_deref().unwrap_or_default();
            let region = endpoint.region.as_deref().unwrap_or_default();
            let prefix = format!("{base}/v1/projects/{project}/locations/{region}/publishers");
            match inbound {
                Inbound::Messages => Some(format!(
                    "{prefix}/anthropic/models/{}:rawPredict",
                    path_segment(model)
                )),
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
                    Some(format!(
                        "{prefix}/google/models/{}:{action}{alt}",
                        path_segment(model)
                    ))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The framer a stream of `provider` needs: Bedrock's Messages streams come in AWS
/// event-stream framing.
pub(crate) fn framer(
    inbound: Inbound,
    provider: Provider,
    max_event: usize,
) -> Option<EventFramer> {
    (provider == Provider::Bedrock && inbound == Inbound::Messages)
        .then(|| EventFramer::aws_event_stream(max_event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_bodies_lose_model_and_gain_the_cloud_version() {
        let body = br#"{"model":"claude","stream":true,"max_tokens":5,"messages":[]}"#.to_vec();
        let b: Value = serde_json::from_slice(&adapt_body(
            Provider::Bedrock,
            Inbound::Messages,
            body.clone(),
            &["tools-1".into()],
        ))
        .unwrap();
        assert!(b.get("model").is_none() && b.get("stream").is_none());
        assert_eq!(b["anthropic_version"], "bedrock-2023-05-31");
        assert_eq!(b["anthropic_beta"], serde_json::json!(["tools-1"]));
        let v: Value = serde_json::from_slice(&adapt_body(
            Provider::VertexAi,
            Inbound::Messages,
            body.clone(),
            &[],
        ))
        .unwrap();
        assert!(v.get("model").is_none());
        assert_eq!(v["stream"], true);
        assert_eq!(v["anthropic_version"], "vertex-2023-10-16");
        assert_eq!(
            adapt_body(Provider::Bedrock, Inbound::Chat, body.clone(), &[]),
            body
        );
    }

    #[test]
    fn model_ids_are_one_path_segment() {
        assert_eq!(
            path_segment("anthropic.claude-3-5-sonnet-20241022-v2:0"),
            "anthropic.claude-3-5-sonnet-20241022-v2%3A0"
        );
        assert_eq!(
            path_segment("arn:aws:bedrock:us-east-1:1:inference-profile/us.x"),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x"
        );
    }
}
