//! Stream bodies: SSE events read for an in-band error (`event: error`,
//! `response.failed`, an error chunk), a finish reason, or nothing but keep-alives.

use std::borrow::Cow;

use super::{BodyKind, Signals};

/// How many SSE events of a stream body are looked at for an in-band error.
const MAX_SSE_EVENTS: usize = 64;

impl<'a> Signals<'a> {
    /// An SSE body: the first event that carries an error decides; failing that, a
    /// content-filter finish reason.
    pub(super) fn read_sse(&mut self, text: &'a str) {
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

pub(super) fn is_sse(t: &str) -> bool {
    t.starts_with("event:")
        || t.starts_with("data:")
        || t.starts_with(": ")
        || t.starts_with("id:")
        || t.starts_with("retry:")
}

#[cfg(test)]
mod tests {
    use super::super::{BodyKind, Signals};
    use super::keepalive_or_preamble;

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
