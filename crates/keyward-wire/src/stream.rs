//! What each stream event means, per API. A stream is held until its first **content**
//! event (text, thinking or tool-use delta); until then a failover is invisible to the
//! caller. A stream is complete only at its **terminal** event:
//!
//! | API | content | terminal | in-band error |
//! |---|---|---|---|
//! | Anthropic Messages | `content_block_delta` | `message_stop` | `event: error` |
//! | Chat Completions | a delta with `content`, `tool_calls` or reasoning | a chunk with `finish_reason` (then `[DONE]`) | `data: {"error": …}` |
//! | Responses | `response.*.delta` (output text, reasoning, function-call arguments) | `response.completed` / `response.incomplete` | `response.failed`, `error` |
//! | Gemini | a candidate part with `text`, `functionCall` or a thought | a candidate with `finishReason` | an `error` object |
//!
//! `message_start`, pings, role-only chunks, usage-only chunks and keep-alive comments are
//! neither content nor terminal.

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::sse::SseEvent;

/// The inbound (and upstream) API of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// OpenAI `POST /v1/chat/completions` (and every OpenAI-compatible provider).
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Gemini `:streamGenerateContent` (SSE with `alt=sse`, else a JSON array).
    Gemini,
}

/// What one event means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Neither content nor terminal (`message_start`, pings, role-only chunks, usage).
    Other,
    /// The first (or a further) piece of content: once forwarded, the response is committed.
    Content,
    /// The event that completes the stream.
    Terminal,
    /// Chat Completions' `[DONE]` sentinel after the terminal chunk.
    Done,
    /// An error reported inside the stream.
    Error,
    /// Not valid for this API (invalid JSON): dropped and counted.
    Malformed,
}

/// Classifies one SSE event of `api`.
pub fn inspect_sse(api: Api, ev: &SseEvent) -> EventKind {
    if ev.comment_only || (!ev.has_data && ev.event.is_none()) {
        return EventKind::Other;
    }
    match api {
        Api::Messages => messages(ev),
        Api::ChatCompletions => chat(ev),
        Api::Responses => responses(ev),
        Api::Gemini => {
            if ev.event.as_deref() == Some("error") {
                return EventKind::Error;
            }
            gemini_element(&ev.data)
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Typed<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<&'a str>,
    delta: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
}

fn messages(ev: &SseEvent) -> EventKind {
    let parsed: Result<Typed<'_>, _> = serde_json::from_slice(&ev.data);
    let name = ev.event.as_deref();
    let Ok(t) = parsed else {
        // An event name alone (no JSON) is still meaningful for the terminal and errors.
        return match name {
            Some("message_stop") => EventKind::Terminal,
            Some("error") => EventKind::Error,
            Some("ping") => EventKind::Other,
            _ => EventKind::Malformed,
        };
    };
    match t.ty.or(name) {
        Some("content_block_delta") => EventKind::Content,
        Some("message_stop") => EventKind::Terminal,
        Some("error") => EventKind::Error,
        _ if t.error.is_some() => EventKind::Error,
        _ => EventKind::Other,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatChunk<'a> {
    #[serde(borrow)]
    choices: Vec<ChatChoice<'a>>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatChoice<'a> {
    #[serde(borrow)]
    delta: Option<ChatDelta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatDelta<'a> {
    #[serde(borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    tool_calls: Option<Vec<IgnoredAny>>,
    #[serde(borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    reasoning: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<std::borrow::Cow<'a, str>>,
}

fn chat(ev: &SseEvent) -> EventKind {
    let data = trim(&ev.data);
    if data == b"[DONE]" {
        return EventKind::Done;
    }
    let Ok(chunk) = serde_json::from_slice::<ChatChunk<'_>>(data) else {
        return EventKind::Malformed;
    };
    if chunk.error.is_some() {
        return EventKind::Error;
    }
    if chunk
        .choices
        .iter()
        .any(|c| c.finish_reason.is_some_and(|r| !r.is_empty()))
    {
        return EventKind::Terminal;
    }
    let content = chunk.choices.iter().any(|c| {
        c.delta.as_ref().is_some_and(|d| {
            d.content.as_deref().is_some_and(|s| !s.is_empty())
                || d.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                || d.reasoning_content
                    .as_deref()
                    .is_some_and(|s| !s.is_empty())
                || d.reasoning.as_deref().is_some_and(|s| !s.is_empty())
                || d.refusal.as_deref().is_some_and(|s| !s.is_empty())
        })
    });
    if content {
        EventKind::Content
    } else {
        EventKind::Other
    }
}

fn responses(ev: &SseEvent) -> EventKind {
    let parsed: Result<Typed<'_>, _> = serde_json::from_slice(&ev.data);
    let ty = match (&parsed, ev.event.as_deref()) {
        (Ok(t), name) => t.ty.or(name),
        (Err(_), Some(name)) => Some(name),
        (Err(_), None) => return EventKind::Malformed,
    };
    match ty {
        Some("response.completed" | "response.incomplete") => EventKind::Terminal,
        Some("response.failed" | "error" | "response.error") => EventKind::Error,
        Some(t) if t.ends_with(".delta") && is_content_delta(t) => EventKind::Content,
        _ if parsed.is_err() => EventKind::Malformed,
        _ => EventKind::Other,
    }
}

fn is_content_delta(t: &str) -> bool {
    t.starts_with("response.output_text")
        || t.starts_with("response.reasoning")
        || t.starts_with("response.function_call_arguments")
        || t.starts_with("response.refusal")
        || t.starts_with("response.custom_tool_call_input")
        || t.starts_with("response.audio")
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GeminiChunk {
    candidates: Vec<GeminiCandidate>,
    error: Option<IgnoredAny>,
    #[serde(rename = "promptFeedback")]
    prompt_feedback: Option<GeminiFeedback>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GeminiFeedback {
    #[serde(rename = "blockReason")]
    block_reason: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GeminiCandidate {
    content: Option<GeminiContent>,
    #[serde(rename = "finishReason")]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GeminiContent {
    parts: Vec<GeminiPart>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GeminiPart {
    text: Option<String>,
    #[serde(rename = "functionCall")]
    function_call: Option<IgnoredAny>,
    #[serde(rename = "inlineData")]
    inline_data: Option<IgnoredAny>,
}

/// Classifies one element of a Gemini stream (an SSE `data` or a JSON-array element).
pub fn gemini_element(data: &[u8]) -> EventKind {
    let Ok(chunk) = serde_json::from_slice::<GeminiChunk>(trim(data)) else {
        return EventKind::Malformed;
    };
    if chunk.error.is_some() {
        return EventKind::Error;
    }
    if chunk
        .candidates
        .iter()
        .any(|c| c.finish_reason.as_deref().is_some_and(|r| !r.is_empty()))
        || chunk
            .prompt_feedback
            .is_some_and(|f| f.block_reason.is_some())
    {
        return EventKind::Terminal;
    }
    let content = chunk.candidates.iter().any(|c| {
        c.content.as_ref().is_some_and(|ct| {
            ct.parts.iter().any(|p| {
                p.text.as_deref().is_some_and(|t| !t.is_empty())
                    || p.function_call.is_some()
                    || p.inline_data.is_some()
            })
        })
    });
    if content {
        EventKind::Content
    } else {
        EventKind::Other
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::parse_event;

    fn ev(raw: &str) -> SseEvent {
        parse_event(raw.as_bytes().to_vec())
    }

    #[test]
    fn anthropic_messages() {
        use EventKind::*;
        let cases = [
            ("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n", Other),
            ("event: ping\ndata: {\"type\": \"ping\"}\n\n", Other),
            ("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\"}}\n\n", Other),
            ("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\"}}\n\n", Content),
            ("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}\n\n", Content),
            ("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n", Other),
            ("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", Terminal),
            ("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n", Error),
            ("event: content_block_delta\ndata: {not json\n\n", Malformed),
            (": keep-alive\n\n", Other),
        ];
        for (raw, want) in cases {
            assert_eq!(inspect_sse(Api::Messages, &ev(raw)), want, "{raw}");
        }
    }

    #[test]
    fn chat_completions() {
        use EventKind::*;
        let cases = [
            ("data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n", Other),
            ("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n", Content),
            ("data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n", Content),
            ("data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"think\"}}]}\n\n", Content),
            ("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n", Terminal),
            ("data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n", Other),
            ("data: [DONE]\n\n", Done),
            ("data: {\"error\":{\"message\":\"boom\"}}\n\n", Error),
            ("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}\n\n", Malformed),
        ];
        for (raw, want) in cases {
            assert_eq!(inspect_sse(Api::ChatCompletions, &ev(raw)), want, "{raw}");
        }
    }

    #[test]
    fn responses_api() {
        use EventKind::*;
        let cases = [
            ("event: response.created\ndata: {\"type\":\"response.created\"}\n\n", Other),
            ("event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n", Content),
            ("event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"delta\":\"{\"}\n\n", Content),
            ("event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{}}\n\n", Terminal),
            ("event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{}}}\n\n", Error),
        ];
        for (raw, want) in cases {
            assert_eq!(inspect_sse(Api::Responses, &ev(raw)), want, "{raw}");
        }
    }

    #[test]
    fn gemini() {
        use EventKind::*;
        assert_eq!(
            gemini_element(
                br#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"}}]}"#
            ),
            Content
        );
        assert_eq!(
            gemini_element(
                br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f"}}]}}]}"#
            ),
            Content
        );
        assert_eq!(
            gemini_element(br#"{"candidates":[{"content":{"parts":[{"text":""}]}}]}"#),
            Other
        );
        assert_eq!(gemini_element(br#"{"candidates":[{"content":{"parts":[{"text":"."}]},"finishReason":"STOP"}],"usageMetadata":{}}"#), Terminal);
        assert_eq!(
            gemini_element(br#"{"promptFeedback":{"blockReason":"SAFETY"}}"#),
            Terminal
        );
        assert_eq!(
            gemini_element(br#"{"error":{"code":503,"status":"UNAVAILABLE"}}"#),
            Error
        );
        assert_eq!(gemini_element(b"{oops"), Malformed);
        assert_eq!(inspect_sse(Api::Gemini, &ev("data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\r\n\r\n")), Content);
    }
}
