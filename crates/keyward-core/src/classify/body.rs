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

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// How many bytes of a body the classifier examines. Every provider's error shape fits
/// (the largest documented ones, Azure content-filter results and Google details lists, are
/// under 3 KiB); the rest of a larger body is never read.
pub const MAX_EXAMINED: usize = 8 * 1024;

/// How many SSE events of a stream body are looked at for an in-band error.
const MAX_SSE_EVENTS: usize = 64;

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
    pub fn has_error(&self) -> bool {
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
    pub fn silent_stream(&self) -> bool {
        self.kind == BodyKind::Sse
            && self.sse_content_events == 0
            && !self.has_error()
            && self.finish.is_none()
    }

    /// Whether the body carried an error code or type (a message alone may be a success
    /// body's own `message` object, as in Cohere's chat responses).
    pub fn has_error_code(&self) -> bool {
        self.ty.is_some()
            || self.code.is_some()
            || self.gstatus.is_some()
            || self.error_str.is_some()
            || self.aws_type.is_some()
            || self.reason.is_some()
    }

    /// Reads `text` (already cut to [`MAX_EXAMINED`] bytes).
    pub fn read(text: &'a str) -> Signals<'a> {
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

    /// Strict parse of the first JSON value in `json`; trailing text is allowed.
    fn read_json(&mut self, json: &'a str) -> bool {
        let mut de = serde_json::Deserializer::from_str(json);
        match Doc::deserialize(&mut de) {
            Ok(doc) => {
                self.structured = true;
                self.absorb(doc.0);
                true
            }
            Err(_) => false,
        }
    }

    fn absorb(&mut self, env: Envelope<'a>) {
        let Envelope {
            error,
            message,
            message_upper,
            ty,
            code,
            status,
            error_description,
            aws_type,
            detail,
            response,
            choices,
            candidates,
            prompt_feedback,
            stop_reason,
            error_details,
            details,
            metadata,
            stop_reason_camel,
            finish_reason,
            incomplete_details,
            delta,
            message_stop,
            guardrail_action,
            internal_server_exception,
            model_stream_error_exception,
            throttling_exception,
            validation_exception,
            service_unavailable_exception,
            model_timeout_exception,
        } = env;
        // Bedrock ConverseStream exceptions arrive as `{"throttlingException":{"message":…}}`.
        for (name, exc) in [
            ("internalServerException", internal_server_exception),
            ("modelStreamErrorException", model_stream_error_exception),
            ("throttlingException", throttling_exception),
            ("validationException", validation_exception),
            ("serviceUnavailableException", service_unavailable_exception),
            ("modelTimeoutException", model_timeout_exception),
        ] {
            if let Some(e) = exc {
                if self.aws_type.is_none() {
                    self.aws_type = Some(Cow::Borrowed(name));
                    if let Some(m) = e.message.or(e.message_upper) {
                        self.message.get_or_insert(m.0);
                    }
                }
            }
        }
        let top_type_error = ty.as_ref().and_then(|t| t.0.as_deref()) == Some("error");
        match error {
            Some(ErrorField::Obj(obj)) => {
                self.typed_envelope |= top_type_error;
                self.absorb_error(*obj);
            }
            Some(ErrorField::Str(s)) => self.error_str = Some(s),
            _ => {}
        }
        if let Some(resp) = response {
            if let Some(ErrorField::Obj(obj)) = resp.error {
                self.absorb_error(*obj);
            }
            if let Some(r) = resp
                .incomplete_details
                .and_then(|d| d.reason)
                .and_then(|r| r.0)
            {
                self.finish.get_or_insert(r);
            }
            if let Some(st) = resp.status.and_then(|s| s.0) {
                if st == "failed" && self.ty.is_none() && self.code.is_none() {
                    self.ty = Some(Cow::Borrowed("response.failed"));
                }
            }
        }
        let top_msg = message
            .or(message_upper)
            .or(detail)
            .or(error_description)
            .map(|t| t.0);
        if self.message.is_none() {
            self.message = top_msg;
        }
        // A top-level `type` is an error type only in error envelopes (Mistral's
        // `{"object":"error","type":…}`); success bodies carry `"type":"message"` etc.
        let has_top_message = self.message.is_some();
        if let Some(t) = ty.and_then(|t| t.0) {
            if t != "error" && self.ty.is_none() && (t.contains("error") || has_top_message) {
                self.ty = Some(t);
            }
        }
        if let Some(c) = code.and_then(|c| c.0) {
            if let Ok(n) = c.parse::<u16>() {
                self.num_code.get_or_insert(n);
            }
            if self.code.is_none() {
                self.code = Some(c);
            }
        }
        if let Some(st) = status.and_then(|s| s.0) {
            match st.parse::<u16>() {
                Ok(n) => {
                    self.num_code.get_or_insert(n);
                }
                // A canonical code (`RESOURCE_EXHAUSTED`), not a Responses object's own
                // lifecycle status (`incomplete`, `failed`).
                Err(_) if !st.bytes().any(|b| b.is_ascii_lowercase()) => {
                    self.gstatus.get_or_insert(st);
                }
                Err(_) => {}
            }
        }
        // A Responses API object: `incomplete_details.reason` (`content_filter`).
        if let Some(r) = incomplete_details.and_then(|d| d.reason).and_then(|r| r.0) {
            self.finish.get_or_insert(r);
        }
        if let Some(a) = aws_type.and_then(|a| a.0) {
            self.aws_type = Some(a);
        }
        if let Some(d) = details {
            self.absorb_details(d);
        }
        if let Some(m) = metadata {
            self.absorb_metadata(m);
        }
        if let Some(gd) = error_details {
            if let Some(id) = gd.notification_id.and_then(|n| n.0) {
                self.detail_code.get_or_insert(id);
            }
        }
        // Bedrock InvokeModel with a guardrail: `"amazon-bedrock-guardrailAction":
        // "INTERVENED"` beside the model's own body (whose stop_reason may be end_turn).
        let guardrail = guardrail_action
            .and_then(|g| g.0)
            .filter(|g| g == "INTERVENED")
            .map(|_| Cow::Borrowed("guardrail_intervened"));
        let finish = guardrail
            .or_else(|| choices.and_then(|c| c.0))
            .or_else(|| candidates.and_then(|c| c.0))
            .or_else(|| {
                prompt_feedback
                    .and_then(|p| p.block_reason)
                    .and_then(|b| b.0)
            })
            .or_else(|| stop_reason.and_then(|s| s.0))
            .or_else(|| stop_reason_camel.and_then(|s| s.0))
            .or_else(|| finish_reason.and_then(|s| s.0))
            .or_else(|| delta.and_then(|d| d.stop_reason).and_then(|s| s.0))
            .or_else(|| message_stop.and_then(|m| m.stop_reason).and_then(|s| s.0));
        if let Some(f) = finish {
            self.finish.get_or_insert(f);
        }
    }

    fn absorb_error(&mut self, e: ErrorObj<'a>) {
        if let Some(t) = e.ty.and_then(|t| t.0) {
            if t != "error" || self.ty.is_none() {
                self.ty = Some(t);
            }
        }
        if let Some(c) = e.code.and_then(|c| c.0) {
            if let Ok(n) = c.parse::<u16>() {
                self.num_code = Some(n);
            }
            self.code = Some(c);
        }
        if let Some(st) = e.status.and_then(|s| s.0) {
            match st.parse::<u16>() {
                Ok(n) => {
                    self.num_code.get_or_insert(n);
                }
                Err(_) => self.gstatus = Some(st),
            }
        }
        if let Some(m) = e.message {
            self.message = Some(m.0);
        } else if let Some(inner) = e.error {
            self.message = Some(inner.0);
        }
        if let Some(p) = e.param.and_then(|p| p.0) {
            self.param = Some(p);
        }
        if let Some(d) = e.details {
            self.absorb_details(d);
        }
        if let Some(inner) = e.innererror.and_then(|i| i.code).and_then(|c| c.0) {
            self.detail_code = Some(inner);
        }
        if let Some(m) = e.metadata {
            self.absorb_metadata(m);
        }
    }

    fn absorb_details(&mut self, d: Details<'a>) {
        match d {
            Details::Google(g) => {
                if g.reason.is_some() {
                    self.reason = g.reason;
                }
                if g.retry_delay.is_some() {
                    self.retry_delay = g.retry_delay;
                }
                self.quota_failure |= g.quota_failure;
                self.quota_zero |= g.quota_zero;
                self.quota_free_tier |= g.quota_free_tier;
            }
            Details::Code(c) => self.detail_code = Some(c),
            Details::None => {}
        }
    }

    fn absorb_metadata(&mut self, m: Metadata<'a>) {
        if m.raw.is_some() || m.provider_name.is_some() {
            self.upstream = true;
        }
        if m.reasons.is_some() || m.flagged_input.is_some() {
            self.flagged = true;
        }
        if let Some(raw) = m.raw {
            // The upstream's own body: keep it as the message if there is none better.
            if self.message.as_deref().is_none_or(|msg| msg.len() < 40) {
                self.message = Some(raw.0);
            }
        }
    }

    /// A truncated or invalid JSON body: pick `"key": "value"` pairs by key.
    fn read_loose(&mut self, json: &'a str) {
        let mut found = false;
        for (key, value) in LoosePairs::new(json) {
            found = true;
            match key {
                "type" if value != "error" => {
                    self.ty.get_or_insert(Cow::Borrowed(value));
                }
                "code" => {
                    if let Ok(n) = value.parse::<u16>() {
                        self.num_code.get_or_insert(n);
                    }
                    self.code.get_or_insert(Cow::Borrowed(value));
                }
                "status" => match value.parse::<u16>() {
                    Ok(n) => {
                        self.num_code.get_or_insert(n);
                    }
                    Err(_) => {
                        self.gstatus.get_or_insert(Cow::Borrowed(value));
                    }
                },
                "message" | "Message" | "error_description" | "detail" => {
                    self.message.get_or_insert(Cow::Borrowed(value));
                }
                "error" => {
                    self.error_str.get_or_insert(Cow::Borrowed(value));
                }
                "reason" => {
                    self.reason.get_or_insert(Cow::Borrowed(value));
                }
                "__type" => {
                    self.aws_type.get_or_insert(Cow::Borrowed(value));
                }
                "error_code" => {
                    self.detail_code.get_or_insert(Cow::Borrowed(value));
                }
                "finish_reason" | "finishReason" | "blockReason" | "stop_reason" | "stopReason" => {
                    self.finish.get_or_insert(Cow::Borrowed(value));
                }
                _ => {}
            }
        }
        self.structured = found;
    }

    /// An SSE body: the first event that carries an error decides; failing that, a
    /// content-filter finish reason.
    fn read_sse(&mut self, text: &'a str) {
        let mut event_name: Option<&'a str> = None;
        let mut data: Option<&'a str> = None;
        let mut seen = 0usize;
        let mut lines = text.split('\n').peekable();
        loop {
            let line = lines.next();
            let line_trim = line.map(|l| l.strip_suffix('\r').unwrap_or(l));
            match line_trim {
                Some(l) if !l.is_empty() => {
                    if let Some(v) = l.strip_prefix("event:") {
                        event_name = Some(v.trim());
                    } else if let Some(v) = l.strip_prefix("data:") {
                        // Multi-line data is rare in error events; the first line decides.
                        data.get_or_insert(v.trim());
                    }
                    continue;
                }
                _ => {}
            }
            // Blank line or end of text: dispatch.
            if event_name.is_some() || data.is_some() {
                seen += 1;
                self.sse_events += 1;
                // Keep-alives and preambles carry neither content nor an error.
                if !keepalive_or_preamble(event_name, data) {
                    self.sse_content_events += 1;
                    if self.sse_event(event_name, data) {
                        return;
                    }
                }
            }
            event_name = None;
            data = None;
            if line.is_none() || seen >= MAX_SSE_EVENTS {
                return;
            }
        }
    }

    /// Looks at one event; returns true when it carried an error.
    fn sse_event(&mut self, name: Option<&'a str>, data: Option<&'a str>) -> bool {
        let named_error = name.is_some_and(|n| {
            n == "error" || n.ends_with(".failed") || n == "response.error" || n.ends_with(".error")
        });
        let Some(data) = data else {
            return false;
        };
        let interesting = named_error
            || data.contains("\"error\"")
            || data.contains("filter")
            || data.contains("finishReason")
            || data.contains("incomplete")
            || data.contains("refusal")
            || data.contains("stop_reason")
            || data.contains("stopReason")
            || data.contains("Exception\"");
        if !interesting || !data.starts_with(['{', '[']) {
            return false;
        }
        let mut probe = Signals {
            text: data,
            ..Signals::default()
        };
        if !probe.read_json(data) {
            probe.read_loose(data);
        }
        let is_error = named_error || probe.has_error();
        if is_error {
            let finish = self.finish.take();
            *self = Signals {
                kind: BodyKind::Sse,
                event: name.map(Cow::Borrowed),
                text: self.text,
                sse_events: self.sse_events,
                sse_content_events: self.sse_content_events,
                ..probe
            };
            if self.finish.is_none() {
                self.finish = finish;
            }
            return true;
        }
        if let Some(f) = probe.finish {
            self.finish = Some(f);
        }
        false
    }
}

/// Whether an SSE event is a keep-alive or a preamble rather than content: a ping, an
/// empty data line, Anthropic `message_start`, Responses `response.created` /
/// `response.in_progress`, or a Chat Completions chunk whose delta carries only the role.
fn keepalive_or_preamble(name: Option<&str>, data: Option<&str>) -> bool {
    if matches!(
        name,
        Some(
            "ping"
                | "keep-alive"
                | "keepalive"
                | "message_start"
                | "response.created"
                | "response.in_progress"
        )
    ) {
        return true;
    }
    let Some(d) = data.map(str::trim) else {
        return true;
    };
    if d.is_empty() || d == "{}" {
        return true;
    }
    // Anything that mentions an error is read, whatever else it carries.
    if d.contains("\"error\"") {
        return false;
    }
    const PREAMBLE: [&str; 8] = [
        "\"type\":\"ping\"",
        "\"type\": \"ping\"",
        "\"type\":\"message_start\"",
        "\"type\": \"message_start\"",
        "\"type\":\"response.created\"",
        "\"type\": \"response.created\"",
        "\"type\":\"response.in_progress\"",
        "\"type\": \"response.in_progress\"",
    ];
    if PREAMBLE.iter().any(|p| d.contains(p)) {
        return true;
    }
    // A role-only chat chunk: `"delta":{"role":"assistant"}` or with empty content.
    d.contains("\"role\"")
        && !d.contains("tool_calls")
        && !d.contains("finish_reason\":\"")
        && !d.contains("finish_reason\": \"")
        && (d.contains("\"content\":\"\"")
            || d.contains("\"content\": \"\"")
            || d.contains("\"content\":null")
            || d.contains("\"content\": null")
            || !d.contains("\"content\""))
}

fn is_sse(t: &str) -> bool {
    t.starts_with("event:")
        || t.starts_with("data:")
        || t.starts_with(": ")
        || t.starts_with("id:")
        || t.starts_with("retry:")
}

fn html_title(html: &str) -> Option<&str> {
    let lower_at = find_ascii_ci(html, "<title")?;
    let after = &html[lower_at..];
    let open_end = after.find('>')? + 1;
    let rest = &after[open_end..];
    let close = find_ascii_ci(rest, "</title").unwrap_or(rest.len().min(200));
    let t = rest.get(..close)?.trim();
    (!t.is_empty()).then_some(t)
}

/// Case-insensitive ASCII substring search: memchr finds the candidates for the first
/// byte (either case), only those are compared.
pub(crate) fn find_ascii_ci(hay: &str, needle: &str) -> Option<usize> {
    let h = hay.as_bytes();
    let n = needle.as_bytes();
    let (&first, rest) = n.split_first()?;
    if h.len() < n.len() {
        return None;
    }
    let last_start = h.len() - n.len();
    let search = &h[..=last_start];
    memchr::memchr2_iter(
        first.to_ascii_lowercase(),
        first.to_ascii_uppercase(),
        search,
    )
    .find(|&i| h[i + 1..i + n.len()].eq_ignore_ascii_case(rest))
}

/// Iterates `"key": "value"` (or `"key": 123`) pairs anywhere in a JSON-ish text,
/// without regard to nesting. Used only when strict parsing fails.
struct LoosePairs<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> LoosePairs<'a> {
    fn new(s: &'a str) -> Self {
        LoosePairs { s, pos: 0 }
    }

    /// Reads a JSON string starting at `at` (which is a `"`); returns its raw contents
    /// (escapes left as they are) and the index after the closing quote.
    fn string_at(&self, at: usize) -> Option<(&'a str, usize)> {
        let b = self.s.as_bytes();
        let mut i = at + 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return Some((self.s.get(at + 1..i)?, i + 1)),
                _ => i += 1,
            }
        }
        None
    }
}

impl<'a> Iterator for LoosePairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.s.as_bytes();
        while self.pos < b.len() {
            let q = self.s[self.pos..].find('"')? + self.pos;
            let (key, after) = self.string_at(q)?;
            self.pos = after;
            let mut i = after;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= b.len() || b[i] != b':' {
                continue;
            }
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= b.len() {
                return None;
            }
            if b[i] == b'"' {
                let (value, end) = self.string_at(i)?;
                self.pos = end;
                return Some((key, value));
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'-') {
                i += 1;
            }
            if i > start {
                self.pos = i;
                return Some((key, self.s.get(start..i)?));
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------
// Typed, borrowing shapes. Every field is optional and tolerant of the wrong JSON type.
// ---------------------------------------------------------------------------------------

/// The top-level document: an object, or the first error-bearing object of an array.
struct Doc<'a>(Envelope<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Doc<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Doc<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object or array")
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Doc<'a>, M::Error> {
                Envelope::deserialize(de::value::MapAccessDeserializer::new(map)).map(Doc)
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Doc<'a>, S::Error> {
                let mut chosen: Option<Envelope<'a>> = None;
                let mut n = 0usize;
                while let Some(item) = seq.next_element::<Option<Doc<'a>>>()? {
                    n += 1;
                    let Some(Doc(env)) = item else { continue };
                    let better = match &chosen {
                        None => true,
                        Some(c) => !c.carries_error() && (env.carries_error() || n < 64),
                    };
                    if better {
                        chosen = Some(env);
                    }
                }
                Ok(Doc(chosen.unwrap_or_default()))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Envelope<'a> {
    #[serde(borrow)]
    error: Option<ErrorField<'a>>,
    #[serde(borrow)]
    message: Option<Text<'a>>,
    #[serde(borrow, rename = "Message")]
    message_upper: Option<Text<'a>>,
    #[serde(borrow, rename = "type")]
    ty: Option<Scalar<'a>>,
    #[serde(borrow)]
    code: Option<Scalar<'a>>,
    #[serde(borrow)]
    status: Option<Scalar<'a>>,
    #[serde(borrow)]
    error_description: Option<Text<'a>>,
    #[serde(borrow, rename = "__type")]
    aws_type: Option<Scalar<'a>>,
    #[serde(borrow)]
    detail: Option<Text<'a>>,
    #[serde(borrow)]
    response: Option<ResponseObj<'a>>,
    #[serde(borrow)]
    choices: Option<FirstReason<'a>>,
    #[serde(borrow)]
    candidates: Option<FirstReason<'a>>,
    #[serde(borrow, rename = "promptFeedback")]
    prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(borrow)]
    stop_reason: Option<Scalar<'a>>,
    #[serde(borrow)]
    error_details: Option<GithubDetails<'a>>,
    #[serde(borrow)]
    details: Option<Details<'a>>,
    #[serde(borrow)]
    metadata: Option<Metadata<'a>>,
    /// A Responses API object's `incomplete_details` (non-streaming).
    #[serde(borrow)]
    incomplete_details: Option<IncompleteDetails<'a>>,
    /// Cohere v2 chat: a top-level `finish_reason` (`ERROR_TOXIC`).
    #[serde(borrow)]
    finish_reason: Option<Scalar<'a>>,
    /// Bedrock Converse `stopReason` (`guardrail_intervened`, `content_filtered`).
    #[serde(borrow, rename = "stopReason")]
    stop_reason_camel: Option<Scalar<'a>>,
    /// Anthropic `message_delta` events: `delta.stop_reason` (`refusal`).
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    /// Bedrock ConverseStream `messageStop.stopReason`.
    #[serde(borrow, rename = "messageStop")]
    message_stop: Option<MessageStop<'a>>,
    #[serde(borrow, rename = "amazon-bedrock-guardrailAction")]
    guardrail_action: Option<Scalar<'a>>,
    #[serde(borrow, rename = "internalServerException")]
    internal_server_exception: Option<AwsStreamError<'a>>,
    #[serde(borrow, rename = "modelStreamErrorException")]
    model_stream_error_exception: Option<AwsStreamError<'a>>,
    #[serde(borrow, rename = "throttlingException")]
    throttling_exception: Option<AwsStreamError<'a>>,
    #[serde(borrow, rename = "validationException")]
    validation_exception: Option<AwsStreamError<'a>>,
    #[serde(borrow, rename = "serviceUnavailableException")]
    service_unavailable_exception: Option<AwsStreamError<'a>>,
    #[serde(borrow, rename = "modelTimeoutException")]
    model_timeout_exception: Option<AwsStreamError<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Delta<'a> {
    #[serde(borrow)]
    stop_reason: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageStop<'a> {
    #[serde(borrow, rename = "stopReason")]
    stop_reason: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AwsStreamError<'a> {
    #[serde(borrow)]
    message: Option<Text<'a>>,
    #[serde(borrow, rename = "Message")]
    message_upper: Option<Text<'a>>,
}

impl Envelope<'_> {
    fn carries_error(&self) -> bool {
        self.error
            .as_ref()
            .is_some_and(|e| !matches!(e, ErrorField::Other))
            || self.message.is_some()
            || self.message_upper.is_some()
            || self.aws_type.is_some()
            || self.internal_server_exception.is_some()
            || self.model_stream_error_exception.is_some()
            || self.throttling_exception.is_some()
            || self.validation_exception.is_some()
            || self.service_unavailable_exception.is_some()
            || self.model_timeout_exception.is_some()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorObj<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<Scalar<'a>>,
    #[serde(borrow)]
    code: Option<Scalar<'a>>,
    #[serde(borrow)]
    status: Option<Scalar<'a>>,
    #[serde(borrow)]
    message: Option<Text<'a>>,
    #[serde(borrow)]
    error: Option<Text<'a>>,
    #[serde(borrow)]
    param: Option<Scalar<'a>>,
    #[serde(borrow)]
    details: Option<Details<'a>>,
    #[serde(borrow)]
    innererror: Option<InnerError<'a>>,
    #[serde(borrow)]
    metadata: Option<Metadata<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InnerError<'a> {
    #[serde(borrow)]
    code: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Metadata<'a> {
    #[serde(borrow)]
    raw: Option<Text<'a>>,
    #[serde(borrow)]
    provider_name: Option<Scalar<'a>>,
    reasons: Option<IgnoredAny>,
    flagged_input: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GithubDetails<'a> {
    #[serde(borrow)]
    notification_id: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponseObj<'a> {
    #[serde(borrow)]
    status: Option<Scalar<'a>>,
    #[serde(borrow)]
    error: Option<ErrorField<'a>>,
    #[serde(borrow)]
    incomplete_details: Option<IncompleteDetails<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IncompleteDetails<'a> {
    #[serde(borrow)]
    reason: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PromptFeedback<'a> {
    #[serde(borrow, rename = "blockReason")]
    block_reason: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChoiceLike<'a> {
    #[serde(borrow)]
    finish_reason: Option<Scalar<'a>>,
    #[serde(borrow, rename = "finishReason")]
    finish_reason_camel: Option<Scalar<'a>>,
}

/// The first non-null finish reason of a `choices` / `candidates` list.
struct FirstReason<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for FirstReason<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FirstReason<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                let mut out = None;
                while let Some(c) = seq.next_element::<Option<ChoiceLike<'a>>>()? {
                    if out.is_none() {
                        if let Some(c) = c {
                            out = c
                                .finish_reason
                                .and_then(|s| s.0)
                                .or(c.finish_reason_camel.and_then(|s| s.0));
                        }
                    }
                }
                Ok(FirstReason(out))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(FirstReason(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(FirstReason(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(FirstReason(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(FirstReason(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(FirstReason(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(FirstReason(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(FirstReason(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `error`: an object, a string (RFC 6749 code or free text), or anything else.
enum ErrorField<'a> {
    Obj(Box<ErrorObj<'a>>),
    Str(Cow<'a, str>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for ErrorField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ErrorField<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an error object or string")
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                ErrorObj::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|o| ErrorField::Obj(Box::new(o)))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                let mut out = ErrorField::Other;
                while let Some(item) = seq.next_element::<ErrorField<'a>>()? {
                    if matches!(out, ErrorField::Other) {
                        out = item;
                    }
                }
                Ok(out)
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(ErrorField::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ErrorField::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(ErrorField::Str(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ErrorField::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ErrorField::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ErrorField::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ErrorField::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ErrorField::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A scalar as text: strings borrow; numbers and booleans are rendered; objects, arrays
/// and null give `None`.
struct Scalar<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Borrowed(if v {
                    "true"
                } else {
                    "false"
                }))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar(None))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Message text: a string, or (Mistral/FastAPI validation errors) an object or list
/// rendered compactly so its words can still be read.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("text")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed("")))
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                let v = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, seq: S) -> Result<Self::Value, S::Error> {
                let v = serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `details`: Google's typed list, Anthropic's object with `error_code`, or other.
enum Details<'a> {
    Google(GoogleDetails<'a>),
    Code(Cow<'a, str>),
    None,
}

#[derive(Default)]
struct GoogleDetails<'a> {
    reason: Option<Cow<'a, str>>,
    retry_delay: Option<Duration>,
    quota_failure: bool,
    quota_zero: bool,
    quota_free_tier: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DetailItem<'a> {
    #[serde(borrow, rename = "@type")]
    ty: Option<Scalar<'a>>,
    #[serde(borrow)]
    reason: Option<Scalar<'a>>,
    #[serde(borrow, rename = "retryDelay")]
    retry_delay: Option<Scalar<'a>>,
    #[serde(borrow)]
    violations: Option<Vec<Violation<'a>>>,
    #[serde(borrow)]
    error_code: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Violation<'a> {
    #[serde(borrow, rename = "quotaId")]
    quota_id: Option<Scalar<'a>>,
    #[serde(borrow, rename = "quotaValue")]
    quota_value: Option<Scalar<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Details<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Details<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("error details")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                let mut g = GoogleDetails::default();
                while let Some(item) = seq.next_element::<Option<DetailItem<'a>>>()? {
                    let Some(item) = item else { continue };
                    let ty = item.ty.and_then(|t| t.0).unwrap_or_default();
                    if let Some(r) = item.reason.and_then(|r| r.0) {
                        g.reason.get_or_insert(r);
                    }
                    if let Some(delay) = item.retry_delay.and_then(|r| r.0) {
                        g.retry_delay = parse_proto_duration(&delay);
                    }
                    if let Some(vs) = item.violations {
                        if ty.ends_with("QuotaFailure") {
                            g.quota_failure = true;
                        }
                        for v in vs {
                            let id = v.quota_id.and_then(|q| q.0).unwrap_or_default();
                            if id.contains("FreeTier") {
                                g.quota_free_tier = true;
                            }
                            if v.quota_value.and_then(|q| q.0).is_some_and(|q| q == "0") {
                                g.quota_zero = true;
                            }
                        }
                    }
                    if let Some(code) = item.error_code.and_then(|c| c.0) {
                        g.reason.get_or_insert(code);
                    }
                }
                Ok(Details::Google(g))
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                let item = DetailItem::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match item.error_code.and_then(|c| c.0) {
                    Some(c) => Details::Code(c),
                    None => Details::None,
                })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Details::None)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Details::None)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Details::None)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Details::None)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Details::None)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Details::None)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Parses a protobuf JSON `Duration` (`"38s"`, `"51.221432117s"`).
pub(crate) fn parse_proto_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.trim().strip_suffix('s')?.parse().ok()?;
    (0.0..1e9)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openai_envelope() {
        let s = Signals::read(
            r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        );
        assert_eq!(s.kind, BodyKind::Json);
        assert_eq!(s.code.as_deref(), Some("invalid_api_key"));
        assert_eq!(s.ty.as_deref(), Some("invalid_request_error"));
        assert_eq!(s.message.as_deref(), Some("Incorrect API key"));
    }

    #[test]
    fn reads_google_details() {
        let s = Signals::read(
            r#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaValue":"0"}]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"38.5s"},
            {"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"RATE_LIMIT_EXCEEDED"}]}}]"#,
        );
        assert_eq!(s.num_code, Some(429));
        assert_eq!(s.gstatus.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(s.reason.as_deref(), Some("RATE_LIMIT_EXCEEDED"));
        assert_eq!(s.retry_delay, Some(Duration::from_millis(38_500)));
        assert!(s.quota_zero && s.quota_free_tier && s.quota_failure);
    }

    #[test]
    fn reads_sse_error_event_after_content() {
        let s = Signals::read(
            "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
        );
        assert_eq!(s.kind, BodyKind::Sse);
        assert_eq!(s.event.as_deref(), Some("error"));
        assert_eq!(s.ty.as_deref(), Some("overloaded_error"));
    }

    #[test]
    fn reads_responses_failed_event() {
        let s = Signals::read(
            "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"x\"}}}\n\n",
        );
        assert_eq!(s.code.as_deref(), Some("server_error"));
        assert_eq!(s.event.as_deref(), Some("response.failed"));
    }

    #[test]
    fn reads_string_error_and_object_message() {
        let s = Signals::read(r#"{"error":"invalid_grant","error_description":"Bad Request"}"#);
        assert_eq!(s.error_str.as_deref(), Some("invalid_grant"));
        assert_eq!(s.message.as_deref(), Some("Bad Request"));
        let s = Signals::read(
            r#"{"object":"error","message":{"detail":[{"msg":"Input should be less"}]},"type":"invalid_request_error"}"#,
        );
        assert!(s
            .message
            .as_deref()
            .is_some_and(|m| m.contains("Input should be less")));
        assert_eq!(s.ty.as_deref(), Some("invalid_request_error"));
    }

    #[test]
    fn truncated_json_is_read_loosely() {
        let s = Signals::read(r#"{"error":{"type":"rate_limit_error","message":"Number of requ"#);
        assert!(s.structured);
        assert_eq!(s.ty.as_deref(), Some("rate_limit_error"));
    }

    #[test]
    fn html_title_and_embedded_json() {
        let s = Signals::read("<html><head><TITLE> 502 Bad Gateway </TITLE></head></html>");
        assert_eq!(s.kind, BodyKind::Html);
        assert_eq!(s.title, Some("502 Bad Gateway"));
        let s = Signals::read("HTTP 429: {\"error\":{\"type\":\"rate_limit_error\"}} trailing");
        assert_eq!(s.kind, BodyKind::Text);
        assert_eq!(s.ty.as_deref(), Some("rate_limit_error"));
    }

    #[test]
    fn content_filter_finish_reasons() {
        let s = Signals::read(r#"{"choices":[{"index":0,"finish_reason":"content_filter"}]}"#);
        assert_eq!(s.finish.as_deref(), Some("content_filter"));
        let s = Signals::read(r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#);
        assert_eq!(s.finish.as_deref(), Some("SAFETY"));
    }
}

#[cfg(test)]
mod find_tests {
    use super::find_ascii_ci;

    #[test]
    fn finds_case_insensitively() {
        assert_eq!(
            find_ascii_ci("Rate limit reached for GPT", "reached FOR "),
            Some(11)
        );
        assert_eq!(find_ascii_ci("MODEL", "model"), Some(0));
        assert_eq!(find_ascii_ci("abc", "abcd"), None);
        assert_eq!(find_ascii_ci("abc", ""), None);
        assert_eq!(find_ascii_ci("xxmodelxx", "model"), Some(2));
        assert_eq!(find_ascii_ci("modeL", "model"), Some(0));
        assert_eq!(find_ascii_ci("mode", "model"), None);
        assert_eq!(find_ascii_ci("héllo model", "model"), Some(7));
    }
}

#[cfg(test)]
mod stream_tests {
    use super::{keepalive_or_preamble, BodyKind, Signals};

    #[test]
    fn keep_alives_and_preambles_are_not_content() {
        assert!(keepalive_or_preamble(
            Some("ping"),
            Some("{\"type\": \"ping\"}")
        ));
        assert!(keepalive_or_preamble(
            Some("message_start"),
            Some("{\"type\":\"message_start\",\"message\":{\"content\":[]}}")
        ));
        assert!(keepalive_or_preamble(
            None,
            Some("{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}")
        ));
        assert!(!keepalive_or_preamble(
            None,
            Some("{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"}}]}")
        ));
        // An error chunk that also carries a role-only delta (OpenRouter mid-stream errors)
        // is read, not skipped.
        assert!(!keepalive_or_preamble(
            None,
            Some("{\"error\":{\"code\":\"server_error\",\"message\":\"Provider disconnected\"},\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":\"error\"}]}")
        ));
    }

    #[test]
    fn a_stream_of_pings_is_silent_and_one_with_content_is_not() {
        let silent = Signals::read(": keep-alive\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n");
        assert_eq!(silent.kind, BodyKind::Sse);
        assert!(silent.silent_stream());
        let spoke = Signals::read(
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n",
        );
        assert!(!spoke.silent_stream());
        assert_eq!(spoke.sse_content_events, 1);
    }

    #[test]
    fn stop_reasons_are_read_wherever_providers_put_them() {
        let delta = Signals::read(
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"refusal\"}}\n\n",
        );
        assert_eq!(delta.finish.as_deref(), Some("refusal"));
        let converse = Signals::read("{\"stopReason\":\"guardrail_intervened\",\"output\":{}}");
        assert_eq!(converse.finish.as_deref(), Some("guardrail_intervened"));
        let invoke = Signals::read(
            "{\"stop_reason\":\"end_turn\",\"amazon-bedrock-guardrailAction\":\"INTERVENED\"}",
        );
        assert_eq!(invoke.finish.as_deref(), Some("guardrail_intervened"));
        let exc = Signals::read("{\"throttlingException\":{\"message\":\"Too many requests\"}}");
        assert_eq!(exc.aws_type.as_deref(), Some("throttlingException"));
        assert_eq!(exc.message.as_deref(), Some("Too many requests"));
    }
}
