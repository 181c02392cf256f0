//! Continuing a committed stream on a new upstream attempt, so the caller reads one
//! answer: no text twice, none missing, one terminal event.
//!
//! Three pieces, for Anthropic Messages and Chat Completions SSE streams:
//!
//! - [`Transcript`] follows what the caller has been sent: the answer's text so far, the
//!   content block it is in, and whether the stream can be continued at all (a tool call,
//!   a thinking block or a second choice already sent cannot be: a prefill carries text
//!   only, and half a tool call is never completed by guesswork).
//! - [`prefill`] writes the continuation request: the caller's request with the text
//!   already delivered as the start of the assistant's answer (a final assistant message:
//!   Anthropic's documented prefill; OpenAI-compatible servers continue it the same way).
//!   Trailing whitespace is left out (Anthropic refuses a final assistant turn that ends
//!   with it) and swallowed again if the continuation repeats it.
//! - [`Splice`] turns the continuation's events into events of the caller's stream: the
//!   new preamble dropped (`message_start`, the role chunk, the reopening of the block
//!   the caller is in), block indices shifted to follow the caller's, and text already
//!   delivered swallowed. A target that refuses prefill is asked for the whole answer
//!   again instead ([`Mode::Replay`]): the replay must start with exactly the text
//!   delivered, which is swallowed; a replay that says anything else is [`Diverged`] and
//!   the stream ends with the in-band error — never a spliced answer that does not read
//!   as one.
//!
//! Hand-written: the splice is the domain, and it must keep every other byte of the
//! events as the provider sent them apart from the fields it rewrites.

use serde_json::{Map, Value};
use thiserror::Error;

use crate::sse::{parse_event, SseFramer};
use crate::stream::Api;

/// The continuation request could not be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PrefillError {
    /// The request body is not a JSON object with a `messages` array (it was forwarded
    /// as the caller sent it, so the caller's format is the cause): the stream ends with
    /// the in-band error. Label: `prefill_unwritable`.
    #[error("the request has no messages array to continue")]
    NoMessages,
}

/// A continuation said something other than the text the caller already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the continued answer does not repeat the text already delivered; the stream ends with the in-band error")]
pub struct Diverged;

/// What the caller has been sent of a stream, as far as continuing it goes.
#[derive(Debug, Clone)]
pub struct Transcript {
    api: Api,
    text: String,
    /// A tool call, thinking, another choice, or the answer's end was sent.
    closed: bool,
    /// Anthropic: the index of the open text block, and the next block's index.
    open_block: Option<u64>,
    next_block: u64,
}

/// Where a stream stands when it is continued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The answer's text delivered so far.
    pub text: String,
    /// Anthropic: the caller's open text block, and the index a new block gets.
    pub open_block: Option<u64>,
    pub next_block: u64,
}

impl Transcript {
    /// A transcript for `api`'s stream; `None` when Keyward does not continue that API's
    /// streams (Responses, Gemini).
    pub fn new(api: Api) -> Option<Transcript> {
        matches!(api, Api::Messages | Api::ChatCompletions).then(|| Transcript {
            api,
            text: String::new(),
            closed: false,
            open_block: None,
            next_block: 0,
        })
    }

    /// Follows one or more whole SSE events as the caller receives them.
    pub fn observe(&mut self, events: &[u8]) {
        for raw in split_events(events) {
            self.observe_event(&raw);
        }
    }

    fn observe_event(&mut self, raw: &[u8]) {
        let ev = parse_event(raw.to_vec());
        if !ev.has_data || ev.data.starts_with(b"[DONE]") {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&ev.data) else {
            return;
        };
        match self.api {
            Api::Messages => self.observe_messages(&v),
            _ => self.observe_chat(&v),
        }
    }

    fn observe_messages(&mut self, v: &Value) {
        let index = v.get("index").and_then(Value::as_u64);
        match v.get("type").and_then(Value::as_str) {
            Some("content_block_start") => {
                let kind = v
                    .pointer("/content_block/type")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if kind != "text" {
                    self.closed = true;
                }
                self.open_block = index;
                if let Some(i) = index {
                    self.next_block = self.next_block.max(i + 1);
                }
            }
            Some("content_block_delta") => match v.pointer("/delta/text").and_then(Value::as_str) {
                Some(t)
                    if v.pointer("/delta/type").and_then(Value::as_str) == Some("text_delta") =>
                {
                    self.text.push_str(t);
                }
                _ => self.closed = true,
            },
            Some("content_block_stop") => self.open_block = None,
            Some("message_delta" | "message_stop" | "error") => self.closed = true,
            _ => {}
        }
    }

    fn observe_chat(&mut self, v: &Value) {
        if v.get("error").is_some() {
            self.closed = true;
            return;
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return;
        };
        for c in choices {
            if c.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                self.closed = true;
            }
            if c.get("finish_reason").is_some_and(|f| !f.is_null()) {
                self.closed = true;
            }
            let Some(d) = c.get("delta") else { continue };
            if d.get("tool_calls").is_some_and(|t| !t.is_null())
                || d.get("function_call").is_some_and(|t| !t.is_null())
                || d.get("reasoning_content").is_some_and(|t| !t.is_null())
                || d.get("reasoning").is_some_and(|t| !t.is_null())
            {
                self.closed = true;
            }
            if let Some(t) = d.get("content").and_then(Value::as_str) {
                self.text.push_str(t);
            }
        }
    }

    /// Where to continue from, or `None` when the stream cannot be continued.
    pub fn point(&self) -> Option<ResumePoint> {
        (!self.closed).then(|| ResumePoint {
            text: self.text.clone(),
            open_block: self.open_block,
            next_block: self.next_block,
        })
    }
}

/// Whole SSE events, one by one, from bytes that hold only whole events.
pub fn split_events(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut f = SseFramer::new(bytes.len().saturating_add(1));
    f.push(bytes);
    let mut out = Vec::new();
    while let Some(Ok(ev)) = f.next_event() {
        out.push(ev.raw);
    }
    if let Some(rest) = f.finish() {
        out.push(rest);
    }
    out
}

/// The continuation request: `body` with `text` as the start of the assistant's answer
/// (appended to the caller's own final assistant turn if it ended with one). Returns the
/// body and the trailing whitespace left out of the prefill.
pub fn prefill(body: &[u8], text: &str) -> Result<(Vec<u8>, String), PrefillError> {
    let mut v: Value = serde_json::from_slice(body).map_err(|_| PrefillError::NoMessages)?;
    let messages = v
        .get_mut("messages")
        .and_then(Value::as_array_mut)
        .ok_or(PrefillError::NoMessages)?;
    let kept = text.trim_end();
    let trimmed = text[kept.len()..].to_owned();
    let last_is_assistant = messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        == Some("assistant");
    match messages.last_mut() {
        Some(last) if last_is_assistant => append_text(last, kept),
        _ => {
            let mut m = Map::new();
            m.insert("role".into(), Value::from("assistant"));
            m.insert("content".into(), Value::from(kept));
            messages.push(Value::Object(m));
        }
    }
    let out = serde_json::to_vec(&v).map_err(|_| PrefillError::NoMessages)?;
    Ok((out, trimmed))
}

/// Appends `text` to an assistant message's content (a string, or a list of blocks
/// whose last text block it extends).
fn append_text(message: &mut Value, text: &str) {
    let Some(content) = message.get_mut("content") else {
        return;
    };
    match content {
        Value::String(s) => *s = format!("{}{text}", s.trim_end()),
        Value::Array(blocks) => {
            let last_text = blocks
                .last_mut()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .and_then(|b| b.get_mut("text"));
            match last_text {
                Some(Value::String(s)) => *s = format!("{}{text}", s.trim_end()),
                _ => {
                    let mut b = Map::new();
                    b.insert("type".into(), Value::from("text"));
                    b.insert("text".into(), Value::from(text));
                    blocks.push(Value::Object(b));
                }
            }
        }
        other => *other = Value::from(text),
    }
}

/// Whether an error answer is a target refusing assistant prefill (a conversation that
/// ends with an assistant turn) — a capability, not the caller's mistake.
pub fn rejects_prefill(status: u16, body: &[u8]) -> bool {
    if !matches!(status, 400 | 422) {
        return false;
    }
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    text.contains("prefill")
        || (text.contains("assistant")
            && (text.contains("must end with")
                || text.contains("last message")
                || text.contains("final message")))
}

/// How a continuation was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The delivered text was sent as the start of the answer; this trailing whitespace
    /// was left out of it and is swallowed if the continuation repeats it.
    Prefill { trimmed: String },
    /// The whole answer was asked for again (the target refuses prefill, or nothing had
    /// been delivered): it must repeat the delivered text, which is swallowed.
    Replay,
}

/// Rewrites a continuation's events into the caller's stream.
#[derive(Debug, Clone)]
pub struct Splice {
    api: Api,
    /// Text the continuation must (replay) or may (prefill whitespace) repeat first.
    expect: String,
    strict: bool,
    /// The caller's open text block (Anthropic), continued by the new block 0.
    open_block: Option<u64>,
    /// Added to the continuation's block indices.
    offset: u64,
    /// The continuation's first content was forwarded.
    started: bool,
}

impl Splice {
    /// A splice for a continuation from `point`, asked for as `mode`.
    pub fn new(api: Api, point: &ResumePoint, mode: Mode) -> Splice {
        let (expect, strict) = match mode {
            Mode::Prefill { trimmed } => (trimmed, false),
            Mode::Replay => (point.text.clone(), true),
        };
        Splice {
            api,
            expect,
            strict,
            open_block: point.open_block,
            offset: point.open_block.unwrap_or(point.next_block),
            started: false,
        }
    }

    /// Whether a replay can be spliced at `point` (Anthropic: the text must all be in the
    /// one block still open; a replay restarts at block 0).
    pub fn replayable(api: Api, point: &ResumePoint) -> bool {
        api == Api::ChatCompletions || (point.open_block == Some(0) && point.next_block <= 1)
    }

    /// One or more whole events of the continuation, as the caller is to receive them.
    pub fn events(&mut self, bytes: &[u8]) -> Result<Vec<u8>, Diverged> {
        let mut out = Vec::new();
        for raw in split_events(bytes) {
            out.extend(self.event(&raw)?);
        }
        Ok(out)
    }

    /// One event of the continuation: the bytes to send (possibly none).
    pub fn event(&mut self, raw: &[u8]) -> Result<Vec<u8>, Diverged> {
        let ev = parse_event(raw.to_vec());
        if !ev.has_data || ev.data.starts_with(b"[DONE]") {
            // Keep-alives pass once the continuation is under way; `[DONE]` always.
            return Ok(if self.started || ev.data.starts_with(b"[DONE]") {
                raw.to_vec()
            } else {
                Vec::new()
            });
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(&ev.data) else {
            // Malformed events were dropped before this; anything else passes unchanged.
            return Ok(raw.to_vec());
        };
        let keep = match self.api {
            Api::Messages => self.messages(&mut v)?,
            _ => self.chat(&mut v)?,
        };
        if !keep {
            return Ok(Vec::new());
        }
        let data = serde_json::to_string(&v).map_err(|_| Diverged)?;
        Ok(match ev.event {
            Some(name) => format!("event: {name}\ndata: {data}\n\n").into_bytes(),
            None => format!("data: {data}\n\n").into_bytes(),
        })
    }

    /// Swallows what the continuation repeats of the expected text from `text`; returns
    /// what is left of `text`.
    fn swallow(&mut self, text: &str) -> Result<String, Diverged> {
        if self.expect.is_empty() || text.is_empty() {
            return Ok(text.to_owned());
        }
        let common: usize = self
            .expect
            .chars()
            .zip(text.chars())
            .take_while(|(a, b)| a == b)
            .map(|(a, _)| a.len_utf8())
            .sum();
        if self.strict {
            if common < self.expect.len() && common < text.len() {
                return Err(Diverged);
            }
            self.expect.drain(..common);
        } else {
            // Whitespace the prefill left out: repeated or not, either reads the same.
            self.expect.clear();
        }
        Ok(text[common..].to_owned())
    }

    fn messages(&mut self, v: &mut Value) -> Result<bool, Diverged> {
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let index = v.get("index").and_then(Value::as_u64);
        match ty.as_str() {
            "message_start" => return Ok(false),
            "ping" => return Ok(self.started),
            "content_block_start" if index == Some(0) && self.open_block.is_some() => {
                return Ok(false)
            }
            "message_delta" | "message_stop" if self.strict && !self.expect.is_empty() => {
                // The replay ended before repeating what the caller has.
                return Err(Diverged);
            }
            _ => {}
        }
        if let (Some(i), Some(slot)) = (index, v.get_mut("index")) {
            *slot = Value::from(i + self.offset);
        }
        if ty == "content_block_delta" {
            if index == Some(0) {
                if let Some(Value::String(t)) = v.pointer_mut("/delta/text") {
                    let left = self.swallow(t)?;
                    if left.is_empty() && !self.expect.is_empty() {
                        return Ok(false);
                    }
                    if left.is_empty() && !self.started {
                        return Ok(false);
                    }
                    *t = left;
                }
            } else if self.strict && !self.expect.is_empty() {
                return Err(Diverged);
            }
            self.started = true;
        } else if !self.started
            && self.strict
            && !self.expect.is_empty()
            && ty != "content_block_start"
        {
            // Anything else before the replay caught up is dropped (its preamble).
            return Ok(false);
        }
        Ok(true)
    }

    fn chat(&mut self, v: &mut Value) -> Result<bool, Diverged> {
        if v.get("error").is_some() {
            return Ok(true);
        }
        let has_usage = v.get("usage").is_some_and(|u| !u.is_null());
        let Some(choice) = v
            .get_mut("choices")
            .and_then(Value::as_array_mut)
            .and_then(|c| c.first_mut())
        else {
            // A usage-only chunk (or another choiceless chunk).
            if self.strict && !self.expect.is_empty() && has_usage {
                return Err(Diverged);
            }
            return Ok(self.started || has_usage);
        };
        let finished = choice.get("finish_reason").is_some_and(|f| !f.is_null());
        let tools = choice
            .pointer("/delta/tool_calls")
            .is_some_and(|t| !t.is_null());
        if let Some(Value::String(t)) = choice.pointer_mut("/delta/content") {
            let left = self.swallow(t)?;
            *t = left;
        }
        if self.strict && !self.expect.is_empty() && (finished || tools) {
            return Err(Diverged);
        }
        let content = choice
            .pointer("/delta/content")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty());
        if !(content || finished || tools || has_usage || self.started) {
            // The role chunk, empty deltas, and text swallowed whole.
            return Ok(false);
        }
        if let Some(d) = choice.get_mut("delta").and_then(Value::as_object_mut) {
            // The caller already had the role chunk.
            d.remove("role");
        }
        self.started = true;
        Ok(true)
    }
}

/// Holds a tool call's events until the call is whole, so a stream cut in the middle of
/// its arguments has sent the caller nothing of it: the continuation asks for it again and
/// the caller gets the complete call after the text it already has — never half a call.
/// Anthropic: a `tool_use` block, from its start to its stop. Chat Completions: the
/// `tool_calls` deltas, until the chunk with the `finish_reason` (a call is complete
/// only there).
#[derive(Debug, Clone)]
pub struct ToolHold {
    api: Api,
    held: Vec<u8>,
    /// Anthropic: the index of the tool block being held.
    block: Option<u64>,
}

impl ToolHold {
    /// A hold for `api`'s stream.
    pub fn new(api: Api) -> ToolHold {
        ToolHold {
            api,
            held: Vec::new(),
            block: None,
        }
    }

    /// Whether part of a tool call is held back.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// One or more whole events for the caller: what may be sent now.
    pub fn feed(&mut self, events: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for raw in split_events(events) {
            self.event(raw, &mut out);
        }
        out
    }

    fn event(&mut self, raw: Vec<u8>, out: &mut Vec<u8>) {
        let ev = parse_event(raw.clone());
        let v = serde_json::from_slice::<Value>(&ev.data).ok();
        let (start, end) = match (self.api, &v) {
            (Api::Messages, Some(v)) => {
                let index = v.get("index").and_then(Value::as_u64);
                match v.get("type").and_then(Value::as_str) {
                    Some("content_block_start")
                        if v.pointer("/content_block/type").and_then(Value::as_str)
                            == Some("tool_use") =>
                    {
                        self.block = index;
                        (true, false)
                    }
                    Some("content_block_stop") if index.is_some() && index == self.block => {
                        self.block = None;
                        (false, true)
                    }
                    // Anything else ends a hold too (never sit on a stream's tail).
                    Some("message_delta" | "message_stop" | "error") => (false, true),
                    _ => (false, false),
                }
            }
            (Api::ChatCompletions, Some(v)) => {
                let choice = v.pointer("/choices/0");
                let tools = choice
                    .and_then(|c| c.pointer("/delta/tool_calls"))
                    .is_some_and(|t| !t.is_null());
                let finished = choice
                    .and_then(|c| c.get("finish_reason"))
                    .is_some_and(|f| !f.is_null());
                (tools && !finished, finished || v.get("error").is_some())
            }
            _ => (false, !self.held.is_empty()),
        };
        if start || (self.holding() && !end) {
            self.held.extend(raw);
            return;
        }
        out.append(&mut self.held);
        out.extend(raw);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn chat_chunk(content: &str) -> String {
        format!(
            "data: {}\n\n",
            serde_json::json!({"id":"c2","choices":[{"index":0,"delta":{"content":content},"finish_reason":null}]})
        )
    }

    fn anth_delta(i: u64, text: &str) -> String {
        format!(
            "event: content_block_delta\ndata: {}\n\n",
            serde_json::json!({"type":"content_block_delta","index":i,"delta":{"type":"text_delta","text":text}})
        )
    }

    /// The text a caller's Chat Completions stream carries.
    fn chat_text(bytes: &[u8]) -> String {
        let mut t = Transcript::new(Api::ChatCompletions).unwrap();
        t.observe(bytes);
        t.text
    }

    #[test]
    fn a_transcript_follows_text_and_closes_on_a_tool_call() {
        let mut t = Transcript::new(Api::ChatCompletions).unwrap();
        t.observe(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
        t.observe(chat_chunk("Hello ").as_bytes());
        t.observe(chat_chunk("world").as_bytes());
        assert_eq!(t.point().unwrap().text, "Hello world");
        t.observe(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\"}}]}}]}\n\n");
        assert_eq!(t.point(), None, "half a tool call is never continued");
        assert!(Transcript::new(Api::Responses).is_none());
    }

    #[test]
    fn an_anthropic_transcript_knows_its_open_block_and_refuses_thinking() {
        let mut t = Transcript::new(Api::Messages).unwrap();
        t.observe(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        t.observe(anth_delta(0, "Hi there").as_bytes());
        let p = t.point().unwrap();
        assert_eq!(
            (p.text.as_str(), p.open_block, p.next_block),
            ("Hi there", Some(0), 1)
        );
        t.observe(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n");
        assert_eq!(t.point(), None);
    }

    #[test]
    fn prefill_appends_an_assistant_turn_without_trailing_whitespace() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let (out, trimmed) = prefill(body, "tok0 tok1 ").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["messages"][1]["role"], "assistant");
        assert_eq!(v["messages"][1]["content"], "tok0 tok1");
        assert_eq!(trimmed, " ");
        assert_eq!(v["stream"], true);
        // The caller's own prefill is extended, not doubled.
        let body = br#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"text","text":"Sure:"}]}]}"#;
        let (out, _) = prefill(body, " one two").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
        assert_eq!(v["messages"][1]["content"][0]["text"], "Sure: one two");
        assert_eq!(prefill(b"[1]", "x"), Err(PrefillError::NoMessages));
    }

    #[test]
    fn prefill_rejections_are_recognised_and_other_400s_are_not() {
        assert!(rejects_prefill(400, br#"{"error":{"message":"This model does not support assistant message prefill. The conversation must end with a user message."}}"#));
        assert!(rejects_prefill(
            400,
            br#"{"error":{"message":"The last message must be a user message, not assistant"}}"#
        ));
        assert!(!rejects_prefill(
            400,
            br#"{"error":{"message":"max_tokens: field required"}}"#
        ));
        assert!(!rejects_prefill(500, br#"prefill"#));
    }

    #[test]
    fn a_chat_continuation_drops_its_role_chunk_and_repeated_whitespace() {
        let point = ResumePoint {
            text: "tok0 tok1 ".into(),
            open_block: None,
            next_block: 0,
        };
        let mut s = Splice::new(
            Api::ChatCompletions,
            &point,
            Mode::Prefill {
                trimmed: " ".into(),
            },
        );
        let cont = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}}}}]}}\n\n{}{}data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: [DONE]\n\n",
            chat_chunk(" tok2"),
            chat_chunk(" tok3")
        );
        let out = s.events(cont.as_bytes()).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains("\"role\""), "{text}");
        assert_eq!(chat_text(&out), "tok2 tok3");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert_eq!(text.matches("finish_reason\":\"stop").count(), 1);
    }

    #[test]
    fn a_replay_swallows_the_delivered_text_across_chunks() {
        let point = ResumePoint {
            text: "The quick brown".into(),
            open_block: None,
            next_block: 0,
        };
        let mut s = Splice::new(Api::ChatCompletions, &point, Mode::Replay);
        let mut out = Vec::new();
        for piece in ["The", " quick", " bro", "wn fox", " jumps"] {
            out.extend(s.event(chat_chunk(piece).as_bytes()).unwrap());
        }
        assert_eq!(chat_text(&out), " fox jumps");
    }

    #[test]
    fn a_replay_that_says_something_else_diverges() {
        let point = ResumePoint {
            text: "The quick brown".into(),
            open_block: None,
            next_block: 0,
        };
        let mut s = Splice::new(Api::ChatCompletions, &point, Mode::Replay);
        assert!(s.event(chat_chunk("The").as_bytes()).unwrap().is_empty());
        assert_eq!(s.event(chat_chunk(" slow").as_bytes()), Err(Diverged));
        // A replay that ends early diverges too.
        let mut s = Splice::new(Api::ChatCompletions, &point, Mode::Replay);
        let end = "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        assert_eq!(s.event(end.as_bytes()), Err(Diverged));
    }

    #[test]
    fn an_anthropic_continuation_keeps_the_open_block_and_shifts_later_ones() {
        let point = ResumePoint {
            text: "a b".into(),
            open_block: Some(2),
            next_block: 3,
        };
        let mut s = Splice::new(
            Api::Messages,
            &point,
            Mode::Prefill {
                trimmed: String::new(),
            },
        );
        let cont = format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"usage\":{{\"input_tokens\":9}}}}}}\n\nevent: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\nevent: ping\ndata: {{\"type\":\"ping\"}}\n\n{}event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{{}}}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n",
            anth_delta(0, " c")
        );
        let out = String::from_utf8(s.events(cont.as_bytes()).unwrap()).unwrap();
        assert!(!out.contains("message_start"), "{out}");
        assert!(!out.contains("ping"), "{out}");
        assert!(
            out.contains("\"index\":2,\"type\":\"content_block_delta\"")
                || out.contains("\"index\":2"),
            "{out}"
        );
        assert!(
            out.contains("content_block_stop\ndata: {\"index\":2"),
            "{out}"
        );
        assert!(
            out.contains("\"index\":3"),
            "the tool call follows the caller's blocks: {out}"
        );
        assert_eq!(
            out.matches("message_stop").count(),
            2,
            "one terminal event (name and type): {out}"
        );
        assert_eq!(
            out.matches("content_block_start").count(),
            2,
            "only the new block starts: {out}"
        );
    }

    #[test]
    fn an_anthropic_replay_is_only_spliced_into_a_single_open_block() {
        let one = ResumePoint {
            text: "x".into(),
            open_block: Some(0),
            next_block: 1,
        };
        assert!(Splice::replayable(Api::Messages, &one));
        let two = ResumePoint {
            open_block: Some(1),
            next_block: 2,
            ..one
        };
        assert!(!Splice::replayable(Api::Messages, &two));
    }

    #[test]
    fn a_tool_call_is_held_until_it_is_whole() {
        let mut h = ToolHold::new(Api::Messages);
        let text = anth_delta(0, "Let me look.");
        assert_eq!(
            h.feed(text.as_bytes()),
            text.as_bytes(),
            "text passes at once"
        );
        let start = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}}}\n\n";
        let args = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\"}}\n\n";
        let stop =
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n";
        assert!(h.feed(start.as_bytes()).is_empty());
        assert!(h.feed(args.as_bytes()).is_empty());
        assert!(h.holding());
        let out = String::from_utf8(h.feed(stop.as_bytes())).unwrap();
        assert_eq!(
            out,
            format!("{start}{args}{stop}"),
            "the whole call at once, in order"
        );
        assert!(!h.holding());

        let mut h = ToolHold::new(Api::ChatCompletions);
        let call = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n";
        let more = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n";
        let fin =
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n";
        assert!(h.feed(call.as_bytes()).is_empty());
        assert!(h.feed(more.as_bytes()).is_empty());
        let out = String::from_utf8(h.feed(fin.as_bytes())).unwrap();
        assert_eq!(out, format!("{call}{more}{fin}"));
    }
}
