//! Reads a bounded prefix of an error body into [`Signals`]: the structured fields every
//! provider's rules look at, whatever envelope carried them.
//!
//! Hand-written on top of `serde_json` because the shapes are the domain: providers put the
//! same facts in `error.type`, `error.code` (string or number), Google's `details[]`,
//! Anthropic's `error.details.error_code`, AWS's `__type`, an RFC 6749 `error` string, an
//! SSE `event: error`, a Responses `response.failed`, an array around the object, or JSON
//! embedded in an SDK's formatted message. Typed, borrowing deserialisation keeps a typical
//! body well under a microsecond; only [`MAX_EXAMINED`] bytes are ever read, so a
//! multi-megabyte body costs the same as a small one.
//!
//! The reading is split by what it reads:
//! - [`envelope`]: a strictly parsed JSON document, its typed borrowing shapes, and how
//!   their fields become signals (error objects, Responses objects, finish reasons,
//!   Bedrock stream exceptions);
//! - [`details`]: Google's `details[]` (`ErrorInfo`, `RetryInfo`, `QuotaFailure`) and
//!   Anthropic's `details.error_code`;
//! - [`scalar`]: leaf values tolerant of the wrong JSON type;
//! - [`loose`]: `"key": "value"` pairs of a truncated or invalid JSON body;
//! - [`sse`]: stream bodies, their in-band error events and keep-alives;
//! - [`text`]: case-insensitive search and the `<title>` of an HTML page.

mod details;
mod envelope;
mod loose;
mod scalar;
mod sse;
mod text;

use std::borrow::Cow;
use std::time::Duration;

pub(crate) use text::find_ascii_ci;

use sse::is_sse;
use text::html_title;

/// How many bytes of a body the classifier examines. Every provider's error shape fits
/// (the largest documented ones, Azure content-filter results and Google details lists, are
/// under 3 KiB); the rest of a larger body is never read.
pub const MAX_EXAMINED: usize = 8 * 1024;

/// What the body looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum BodyKind {
    #[default]
    Empty,
    Json,
    Sse,
    Html,
    Text,
}

/// The structured facts found in a body. Strings borrow from the examined prefix.
#[derive(Debug, Default)]
pub(crate) struct Signals<'a> {
    pub kind: BodyKind,
    /// A JSON document was parsed (strictly, or loosely from a truncated/invalid one).
    pub structured: bool,
    /// `error.type` (or a top-level `type` other than `"error"`).
    pub ty: Option<Cow<'a, str>>,
    /// `error.code` as text (numbers included).
    pub code: Option<Cow<'a, str>>,
    /// Google's `error.status` enum (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`, …).
    pub gstatus: Option<Cow<'a, str>>,
    /// A numeric code inside the error object (Google `error.code`, OpenRouter `code`,
    /// a top-level `status`): the status the upstream meant, even inside a 200.
    pub num_code: Option<u16>,
    /// The human message.
    pub message: Option<Cow<'a, str>>,
    /// A top-level `error` that is a string: an RFC 6749 code, or free text (Ollama, xAI).
    pub error_str: Option<Cow<'a, str>>,
    /// AWS `__type`.
    pub aws_type: Option<Cow<'a, str>>,
    /// Google `ErrorInfo.reason` (first one).
    pub reason: Option<Cow<'a, str>>,
    /// Google `RetryInfo.retryDelay`.
    pub retry_delay: Option<Duration>,
    /// A Google `QuotaFailure` violation with a zero quota, or a free-tier quota id.
    pub quota_zero: bool,
    pub quota_free_tier: bool,
    /// A Google `QuotaFailure` was present at all.
    pub quota_failure: bool,
    /// Anthropic `error.details.error_code`, Azure `innererror.code`, GitHub
    /// `error_details.notification_id`.
    pub detail_code: Option<Cow<'a, str>>,
    /// OpenRouter `metadata.raw` / `provider_name`: the error came from an upstream pool.
    pub upstream: bool,
    /// OpenRouter moderation metadata (`reasons`, `flagged_input`).
    pub flagged: bool,
    /// OpenAI `param`.
    pub param: Option<Cow<'a, str>>,
    /// A success-shaped body's finish/stop/block reason (`content_filter`, `SAFETY`, …).
    pub finish: Option<Cow<'a, str>>,
    /// The SSE event name that carried the error (`error`, `response.failed`).
    pub event: Option<Cow<'a, str>>,
    /// HTML `<title>`.
    pub title: Option<&'a str>,
    /// The body had a top-level `"type": "error"` around an error object (Anthropic's
    /// envelope, also relayed by Vertex AI, Bedrock and Anthropic-compatible proxies).
    pub typed_envelope: bool,
    /// The examined text (for phrase search when nothing structured says enough).
    pub text: &'a str,
    /// SSE events seen (comments not counted).
    pub sse_events: usize,
    /// SSE events that carried content (not pings, `message_start`, role-only chunks,
    /// `response.created`/`in_progress`, empty data).
    pub sse_content_events: usize,
}

impl<'a> Signals<'a> {
    /// Whether the body carried an error object, code or message at all.
    pub(crate) fn has_error(&self) -> bool {
        self.ty.is_some()
            || self.code.is_some()
            || self.gstatus.is_some()
            || self.error_str.is_some()
            || self.aws_type.is_some()
            || self.reason.is_some()
            || self.message.is_some()
    }

    /// A stream that carried nothing but keep-alives (pings, comments, `message_start`,
    /// role-only chunks): no content, no error, no finish reason.
    pub(crate) fn silent_stream(&self) -> bool {
        self.kind == BodyKind::Sse
            && self.sse_content_events == 0
            && !self.has_error()
            && self.finish.is_none()
    }

    /// Whether the body carried an error code or type (a message alone may be a success
    /// body's own `message` object, as in Cohere's chat responses).
    pub(crate) fn has_error_code(&self) -> bool {
        self.ty.is_some()
            || self.code.is_some()
            || self.gstatus.is_some()
            || self.error_str.is_some()
            || self.aws_type.is_some()
            || self.reason.is_some()
    }

    /// Reads `text` (already cut to [`MAX_EXAMINED`] bytes).
    pub(crate) fn read(text: &'a str) -> Signals<'a> {
        let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        let mut s = Signals {
            text,
            ..Signals::default()
        };
        if trimmed.is_empty() {
            return s;
        }
        let first = trimmed.as_bytes()[0];
        if first == b'{' || first == b'[' {
            s.kind = BodyKind::Json;
            if !s.read_json(trimmed) {
                s.read_loose(trimmed);
            }
        } else if is_sse(trimmed) {
            s.kind = BodyKind::Sse;
            s.read_sse(trimmed);
        } else if first == b'<' {
            s.kind = BodyKind::Html;
            s.title = html_title(trimmed);
            // An HTML error page may still embed a JSON error (some proxies do).
        } else {
            s.kind = BodyKind::Text;
            // SDK-formatted messages often embed the provider's JSON after a prefix.
            if let Some(at) = trimmed.find('{') {
                let tail = &trimmed[at..];
                if !s.read_json(tail) {
                    s.read_loose(tail);
                }
                if !s.has_error() {
                    s.structured = false;
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_title_and_embedded_json() {
        let s = Signals::read("<html><head><TITLE> 502 Bad Gateway </TITLE></head></html>");
        assert_eq!(s.kind, BodyKind::Html);
        assert_eq!(s.title, Some("502 Bad Gateway"));
        let s = Signals::read("HTTP 429: {\"error\":{\"type\":\"rate_limit_error\"}} trailing");
        assert_eq!(s.kind, BodyKind::Text);
        assert_eq!(s.ty.as_deref(), Some("rate_limit_error"));
    }
}
