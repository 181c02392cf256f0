//! Errors in the caller's own wire format, so the official SDKs raise their usual
//! exception types. Never a 401/403 for a problem with Keyward's upstream credentials:
//! callers would blame their own key.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode};
use keyward_wire::stream::Api;
use serde_json::json;

/// Most characters of a caller-supplied string (a model name) quoted in an error.
pub const MAX_QUOTED_CHARS: usize = 200;

/// `text` cut to `max_chars` characters, with `…` when cut; borrowed when it fits. Any
/// string a caller or an upstream supplied is quoted through this in an error message.
pub fn bounded(text: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..at])),
    }
}

/// An error to send to a caller.
#[derive(Debug, Clone)]
pub struct CallerError {
    pub status: StatusCode,
    /// Anthropic `error.type` / OpenAI `error.type`.
    pub kind: &'static str,
    /// OpenAI `error.code`.
    pub code: &'static str,
    pub message: String,
    /// Seconds, for `retry-after`.
    pub retry_after: Option<u64>,
    /// `x-should-retry` (honoured by the Anthropic and OpenAI SDKs).
    pub should_retry: Option<bool>,
}

impl CallerError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        CallerError {
            status,
            kind,
            code,
            message: message.into(),
            retry_after: None,
            should_retry: None,
        }
    }

    /// The caller's gateway key is missing or wrong.
    pub fn unauthenticated() -> Self {
        CallerError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "keyward: missing or invalid gateway key; send it as x-api-key, Authorization: Bearer, x-goog-api-key or ?key=",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        CallerError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }

    pub fn too_large(limit: usize) -> Self {
        CallerError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "request_too_large",
            format!("keyward: the request body is larger than {limit} bytes"),
        )
    }

    /// Too many request bodies are held at once (`limits.max_buffered_body_bytes`):
    /// retryable, soon.
    pub fn busy() -> Self {
        let mut e = CallerError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded_error",
            "server_busy",
            "keyward: the gateway is reading too many large request bodies at once (limits.max_buffered_body_bytes); retry in a moment",
        );
        e.retry_after = Some(1);
        e.should_retry = Some(true);
        e
    }

    /// The request body did not arrive within `timeouts.request` (a stalled or
    /// trickling upload, which would otherwise hold its share of the body budget).
    pub fn body_too_slow(deadline: std::time::Duration) -> Self {
        CallerError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            format!(
                "keyward: the request body did not arrive within {} s; send it whole, without pauses",
                deadline.as_secs()
            ),
        )
    }

    /// No route for `model`. The caller's model name is quoted bounded (a megabyte of
    /// name is not echoed back).
    pub fn unknown_model(model: &str, routes: &[&str]) -> Self {
        CallerError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "model_not_found",
            format!(
                "keyward: no route for model {:?}; configured routes: {}",
                bounded(model, MAX_QUOTED_CHARS),
                routes.join(", ")
            ),
        )
    }

    /// The same error under `status`, with the native error type that status has (a 400
    /// is an `invalid_request_error`; a 5xx an `api_error`).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self.kind = if status.is_client_error() {
            "invalid_request_error"
        } else {
            "api_error"
        };
        self
    }

    /// Renders the error for `api`.
    pub fn response(&self, api: Api) -> Response<Body> {
        let body = match api {
            Api::Messages => {
                json!({"type": "error", "error": {"type": self.kind, "message": self.message}})
            }
            Api::ChatCompletions | Api::Responses => {
                json!({"error": {"message": self.message, "type": openai_type(self.kind), "param": null, "code": self.code}})
            }
            Api::Gemini => {
                json!({"error": {"code": self.status.as_u16(), "message": self.message, "status": google_status(self.status)}})
            }
        };
        let mut r = Response::new(Body::from(body.to_string()));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                h.insert("retry-after", v);
            }
        }
        if let Some(retry) = self.should_retry {
            h.insert(
                "x-should-retry",
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        r
    }

    /// The bare JSON error object (an element of a Gemini JSON-array stream).
    pub fn json_object(&self) -> Vec<u8> {
        json!({"error": {"code": self.status.as_u16(), "message": self.message, "status": google_status(self.status)}})
            .to_string()
            .into_bytes()
    }

    /// The same error as an in-band stream event (after bytes were committed).
    pub fn stream_event(&self, api: Api) -> Vec<u8> {
        match api {
            Api::Messages => format!(
                "event: error\ndata: {}\n\n",
                json!({"type": "error", "error": {"type": self.kind, "message": self.message}})
            ),
            Api::ChatCompletions => format!(
                "data: {}\n\n",
                json!({"error": {"message": self.message, "type": openai_type(self.kind), "param": null, "code": self.code}})
            ),
            Api::Responses => format!(
                "event: response.failed\ndata: {}\n\n",
                json!({"type": "response.failed", "response": {"status": "failed", "error": {"code": self.code, "message": self.message}}})
            ),
            Api::Gemini => format!(
                "data: {}\n\n",
                json!({"error": {"code": self.status.as_u16(), "message": self.message, "status": google_status(self.status)}})
            ),
        }
        .into_bytes()
    }
}

fn openai_type(kind: &'static str) -> &'static str {
    match kind {
        "api_error" | "overloaded_error" => "server_error",
        "not_found_error" | "request_too_large" => "invalid_request_error",
        other => other,
    }
}

fn google_status(s: StatusCode) -> &'static str {
    match s.as_u16() {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        404 => "NOT_FOUND",
        408 => "DEADLINE_EXCEEDED",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_supplied_name_is_quoted_bounded() {
        assert_eq!(bounded("claude", 200), "claude");
        assert_eq!(bounded("ééééé", 3), "ééé…");
        let huge = "m".repeat(1 << 20);
        let e = CallerError::unknown_model(&huge, &["claude"]);
        assert!(e.message.len() < 400, "{} bytes", e.message.len());
        assert!(e.message.contains("mmm…"));
    }
}
