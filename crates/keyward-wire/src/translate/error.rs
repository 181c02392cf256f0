//! Upstream error bodies in the caller's format: the type (or status) and message kept,
//! the envelope the caller's SDK parses.

use serde_json::{json, Value};

use super::anthropic::error_type;
use super::json::str_of;
use crate::stream::Api;

/// An OpenAI error type from any provider's type or status.
pub(crate) fn openai_type(kind: &str) -> &'static str {
    match error_type(kind) {
        "invalid_request_error" | "not_found_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_error" => "rate_limit_error",
        _ => "server_error",
    }
}

/// A Google status from an HTTP status.
pub(crate) fn google_status(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 | 529 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// The upstream error body `body` (of family `from`, with HTTP `status`) rewritten for a
/// caller of family `to`; `None` when it is not an error body of a known shape.
pub fn error_body(from: Api, to: Api, status: u16, body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let (kind, message) = match e {
        Value::String(s) => ("api_error".to_owned(), s.clone()),
        _ => (
            str_of(e, "type")
                .or_else(|| str_of(e, "status"))
                .or_else(|| str_of(e, "code"))
                .unwrap_or("api_error")
                .to_owned(),
            str_of(e, "message").unwrap_or_default().to_owned(),
        ),
    };
    if from == to {
        return Some(body.to_vec());
    }
    let out = match to {
        Api::Messages => {
            json!({"type": "error", "error": {"type": error_type(&kind), "message": message}})
        }
        Api::ChatCompletions | Api::Responses => {
            json!({"error": {"message": message, "type": openai_type(&kind), "param": null, "code": e.get("code").filter(|c| c.is_string()).cloned().unwrap_or(Value::Null)}})
        }
        Api::Gemini => {
            json!({"error": {"code": status, "message": message, "status": google_status(status)}})
        }
    };
    Some(out.to_string().into_bytes())
}
