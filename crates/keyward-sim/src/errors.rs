//! Each behaviour's error answer before any content, in the Anthropic and OpenAI shapes
//! (status, `error.type`, `code`, message and rate-limit headers as each provider words
//! them).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Response, StatusCode};
use serde_json::json;

use crate::respond::json_response;
use crate::Behaviour;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Anthropic,
    OpenAi,
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

pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
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

pub(crate) fn anthropic_error(
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

pub(crate) fn openai_error(
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
pub(crate) fn early_error(shape: Shape, b: &Behaviour, incident: bool) -> Option<Response<Body>> {
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
