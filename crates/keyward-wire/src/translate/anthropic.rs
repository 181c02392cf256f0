//! Anthropic Messages: requests, answers and stream events, read into and written from
//! the neutral form.

use serde_json::{json, Map, Value};

use super::ir::{
    Event, Image, JsonOutput, Message, Part, Reasoning, Request, Response, Role, Stop, Tool,
    ToolChoice, Usage,
};
use super::json::{args_value, f64_of, has, safe_id, str_of, strings, u64_of};
use super::{malformed, Losses, Options, TranslateError};
use crate::stream::Api;

const API: Api = Api::Messages;

pub(crate) fn read_request(
    v: &Map<String, Value>,
    losses: &mut Losses,
) -> Result<Request, TranslateError> {
    let mut r = Request::default();
    match v.get("system") {
        Some(Value::String(s)) => r.system.push(s.clone()),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                if has(b, "cache_control") {
                    losses.drop("cache_control");
                }
                if let Some(t) = str_of(b, "text") {
                    r.system.push(t.to_owned());
                }
            }
        }
        _ => {}
    }
    let Some(Value::Array(messages)) = v.get("messages") else {
        return Err(malformed(API, "no `messages` list"));
    };
    for m in messages {
        let role = match str_of(m, "role") {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            other => return Err(super::bad_role(API, other)),
        };
        let parts = match m.get("content") {
            Some(Value::String(s)) => vec![Part::Text(s.clone())],
            Some(Value::Array(blocks)) => blocks
                .iter()
                .filter_map(|b| read_block(b, losses))
                .collect(),
            _ => return Err(malformed(API, "a message has no `content`")),
        };
        r.messages.push(Message { role, parts });
    }
    if let Some(Value::Array(tools)) = v.get("tools") {
        for t in tools {
            if has(t, "cache_control") {
                losses.drop("cache_control");
            }
            let custom = str_of(t, "type").is_none_or(|ty| ty == "custom");
            match (custom, str_of(t, "name"), t.get("input_schema")) {
                (true, Some(name), Some(schema)) => r.tools.push(Tool {
                    name: name.to_owned(),
                    description: str_of(t, "description").map(str::to_owned),
                    schema: schema.clone(),
                }),
                _ => losses.drop("built-in tools"),
            }
        }
    }
    if let Some(tc) = v.get("tool_choice") {
        r.tool_choice = match str_of(tc, "type") {
            Some("auto") => Some(ToolChoice::Auto),
            Some("any") => Some(ToolChoice::Any),
            Some("none") => Some(ToolChoice::None),
            Some("tool") => str_of(tc, "name").map(|n| ToolChoice::Named(n.to_owned())),
            _ => None,
        };
        if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            r.parallel_tool_calls = Some(false);
        }
    }
    let v = Value::Object(v.clone());
    r.max_tokens = u64_of(&v, "max_tokens");
    r.temperature = f64_of(&v, "temperature");
    r.top_p = f64_of(&v, "top_p");
    r.top_k = u64_of(&v, "top_k");
    r.stop = strings(v.get("stop_sequences"));
    r.user = v
        .get("metadata")
        .and_then(|m| str_of(m, "user_id"))
        .map(str::to_owned);
    if let Some(t) = v.get("thinking") {
        if str_of(t, "type") == Some("enabled") {
            r.reasoning = u64_of(t, "budget_tokens").map(Reasoning::Budget);
        }
    }
    if let Some(f) = v.get("output_format") {
        if str_of(f, "type") == Some("json_schema") {
            r.json = Some(JsonOutput {
                name: "output".into(),
                schema: f.get("schema").cloned(),
                strict: Some(true),
            });
        }
    }
    for (key, feature) in [
        ("service_tier", "service_tier"),
        ("container", "container"),
        ("mcp_servers", "mcp_servers"),
        ("context_management", "context_management"),
    ] {
        if has(&v, key) {
            losses.drop(feature);
        }
    }
    Ok(r)
}

fn read_block(b: &Value, losses: &mut Losses) -> Option<Part> {
    if has(b, "cache_control") {
        losses.drop("cache_control");
    }
    match str_of(b, "type")? {
        "text" => {
            if has(b, "citations") {
                losses.drop("citations");
            }
            Some(Part::Text(str_of(b, "text")?.to_owned()))
        }
        "image" => read_image(b.get("source")?, losses).map(Part::Image),
        "tool_use" | "server_tool_use" => Some(Part::ToolCall {
            id: str_of(b, "id")?.to_owned(),
            name: str_of(b, "name")?.to_owned(),
            arguments: b.get("input").map_or_else(|| "{}".into(), Value::to_string),
        }),
        "tool_result" => {
            let content = match b.get("content") {
                Some(Value::String(s)) => vec![Part::Text(s.clone())],
                Some(Value::Array(inner)) => {
                    inner.iter().filter_map(|x| read_block(x, losses)).collect()
                }
                _ => Vec::new(),
            };
            Some(Part::ToolResult {
                id: str_of(b, "tool_use_id")?.to_owned(),
                name: None,
                content,
                is_error: b.get("is_error").and_then(Value::as_bool) == Some(true),
            })
        }
        "thinking" => Some(Part::Thinking {
            text: str_of(b, "thinking").unwrap_or_default().to_owned(),
            // An empty signature (reasoning from another provider, shown to an
            // Anthropic caller) proves nothing.
            signature: str_of(b, "signature")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        }),
        "redacted_thinking" => {
            losses.drop("redacted_thinking");
            None
        }
        "document" => {
            losses.drop("documents");
            None
        }
        _ => {
            losses.drop("other content blocks");
            None
        }
    }
}

fn read_image(src: &Value, losses: &mut Losses) -> Option<Image> {
    match str_of(src, "type")? {
        "base64" => Some(Image::Base64 {
            media_type: str_of(src, "media_type")?.to_owned(),
            data: str_of(src, "data")?.to_owned(),
        }),
        "url" => Some(Image::Url(str_of(src, "url")?.to_owned())),
        _ => {
            losses.drop("file references");
            None
        }
    }
}

pub(crate) fn write_request(
    r: &Request,
    model: &str,
    stream: bool,
    opts: &Options,
    losses: &mut Losses,
) -> Result<Value, TranslateError> {
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let mut max_tokens = r.max_tokens.unwrap_or(opts.default_max_tokens);
    if !r.system.is_empty() {
        let blocks: Vec<Value> = r
            .system
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| json!({"type": "text", "text": s}))
            .collect();
        out.insert("system".into(), Value::Array(blocks));
    }
    let mut messages: Vec<Value> = Vec::new();
    for m in &r.messages {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let blocks: Vec<Value> = m
            .parts
            .iter()
            .filter_map(|p| write_block(p, losses))
            .collect();
        if blocks.is_empty() {
            continue;
        }
        // Consecutive turns of one role become one (tool results after several calls).
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(Value::Array(c)) = last.get_mut("content") {
                    c.extend(blocks);
                }
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if !r.tools.is_empty() {
        let tools: Vec<Value> = r
            .tools
            .iter()
            .map(|t| {
                let mut schema = t.schema.clone();
                if !schema.is_object() {
                    schema = json!({"type": "object", "properties": {}});
                }
                let mut o = json!({"name": t.name, "input_schema": schema});
                if let Some(d) = &t.description {
                    o["description"] = json!(d);
                }
                o
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = match &r.tool_choice {
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::Any) => Some(json!({"type": "any"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Named(n)) => Some(json!({"type": "tool", "name": n})),
        None => None,
    };
    if r.parallel_tool_calls == Some(false) && !r.tools.is_empty() {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let (Some(c), false) = (choice, r.tools.is_empty()) {
        out.insert("tool_choice".into(), c);
    }
    let thinking = r.reasoning.map(|re| re.budget().max(1024));
    if let Some(t) = r.temperature {
        if thinking.is_some() {
            losses.drop("temperature with reasoning");
        } else if t > 1.0 {
            losses.note("temperature above 1", "clamped to 1");
            out.insert("temperature".into(), json!(1.0));
        } else {
            out.insert("temperature".into(), json!(t));
        }
    }
    if let Some(p) = r.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if let Some(k) = r.top_k {
        if thinking.is_some() {
            losses.drop("top_k with reasoning");
        } else {
            out.insert("top_k".into(), json!(k));
        }
    }
    if !r.stop.is_empty() {
        out.insert("stop_sequences".into(), json!(r.stop));
    }
    if let Some(u) = &r.user {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    if let Some(budget) = thinking {
        // The budget counts within max_tokens.
        if max_tokens <= budget {
            max_tokens = budget + max_tokens.max(1024);
        }
        out.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    }
    if r.json.is_some() {
        losses.drop("response_format");
    }
    out.insert("max_tokens".into(), json!(max_tokens));
    if stream {
        out.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(out))
}

fn write_block(p: &Part, losses: &mut Losses) -> Option<Value> {
    Some(match p {
        // Anthropic refuses blank text blocks.
        Part::Text(t) if t.trim().is_empty() => return None,
        Part::Text(t) => json!({"type": "text", "text": t}),
        Part::Image(Image::Base64 { media_type, data }) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        }
        Part::Image(Image::Url(url)) => {
            json!({"type": "image", "source": {"type": "url", "url": url}})
        }
        Part::ToolCall {
            id,
            name,
            arguments,
        } => {
            json!({"type": "tool_use", "id": safe_id(id), "name": name, "input": args_value(arguments)})
        }
        Part::ToolResult {
            id,
            content,
            is_error,
            ..
        } => {
            let inner: Vec<Value> = content
                .iter()
                .filter_map(|c| write_block(c, losses))
                .collect();
            let mut o =
                json!({"type": "tool_result", "tool_use_id": safe_id(id), "content": inner});
            if *is_error {
                o["is_error"] = json!(true);
            }
            o
        }
        Part::Thinking {
            text,
            signature: Some(sig),
        } => json!({"type": "thinking", "thinking": text, "signature": sig}),
        Part::Thinking {
            signature: None, ..
        } => {
            // Anthropic refuses reasoning it cannot verify.
            losses.drop("reasoning from another provider");
            return None;
        }
    })
}

fn stop_of(reason: Option<&str>, seq: Option<&str>) -> Stop {
    match reason {
        Some("max_tokens" | "model_context_window_exceeded") => Stop::MaxTokens,
        Some("stop_sequence") => Stop::Sequence(seq.map(str::to_owned)),
        Some("tool_use") => Stop::ToolUse,
        Some("refusal") => Stop::ContentFilter,
        _ => Stop::End,
    }
}

fn stop_str(s: &Stop) -> (&'static str, Value) {
    match s {
        Stop::End => ("end_turn", Value::Null),
        Stop::MaxTokens => ("max_tokens", Value::Null),
        Stop::Sequence(seq) => ("stop_sequence", json!(seq)),
        Stop::ToolUse => ("tool_use", Value::Null),
        Stop::ContentFilter => ("refusal", Value::Null),
    }
}

fn usage_of(u: &Value) -> Usage {
    let cached = u64_of(u, "cache_read_input_tokens").unwrap_or(0);
    let created = u64_of(u, "cache_creation_input_tokens").unwrap_or(0);
    Usage {
        input: u64_of(u, "input_tokens").unwrap_or(0) + cached + created,
        output: u64_of(u, "output_tokens").unwrap_or(0),
        cached,
    }
}

fn usage_json(u: Usage) -> Value {
    let mut o =
        json!({"input_tokens": u.input.saturating_sub(u.cached), "output_tokens": u.output});
    if u.cached > 0 {
        o["cache_read_input_tokens"] = json!(u.cached);
    }
    o
}

pub(crate) fn read_response(v: &Map<String, Value>) -> Result<Response, TranslateError> {
    let Some(Value::Array(content)) = v.get("content") else {
        return Err(malformed(API, "an answer without `content`"));
    };
    let mut losses = Losses::default();
    let parts = content
        .iter()
        .filter_map(|b| read_block(b, &mut losses))
        .collect();
    let v = Value::Object(v.clone());
    Ok(Response {
        id: str_of(&v, "id").unwrap_or("msg_keyward").to_owned(),
        model: str_of(&v, "model").unwrap_or_default().to_owned(),
        parts,
        stop: stop_of(str_of(&v, "stop_reason"), str_of(&v, "stop_sequence")),
        usage: v.get("usage").map(usage_of).unwrap_or_default(),
    })
}

pub(crate) fn write_response(r: &Response) -> Value {
    let mut losses = Losses::default();
    let content: Vec<Value> = r
        .parts
        .iter()
        .filter_map(|p| match p {
            // An answer's reasoning is shown even without a signature.
            Part::Thinking { text, signature } => Some(
                json!({"type": "thinking", "thinking": text, "signature": signature.clone().unwrap_or_default()}),
            ),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => Some(json!({"type": "tool_use", "id": id, "name": name, "input": args_value(arguments)})),
            other => write_block(other, &mut losses),
        })
        .collect();
    let (stop_reason, stop_sequence) = stop_str(&r.stop);
    json!({
        "id": r.id, "type": "message", "role": "assistant", "model": r.model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
        "usage": usage_json(r.usage),
    })
}

/// Reads one upstream stream event.
pub(crate) fn read_event(name: Option<&str>, data: &Value, out: &mut Vec<Event>) {
    let ty = str_of(data, "type").or(name).unwrap_or_default();
    match ty {
        "message_start" => {
            let m = data.get("message").unwrap_or(&Value::Null);
            out.push(Event::Start {
                id: str_of(m, "id").unwrap_or("msg_keyward").to_owned(),
                model: str_of(m, "model").unwrap_or_default().to_owned(),
            });
            if let Some(u) = m.get("usage") {
                out.push(Event::Usage(usage_of(u)));
            }
        }
        "content_block_start" => {
            let b = data.get("content_block").unwrap_or(&Value::Null);
            let slot = u64_of(data, "index").unwrap_or(0);
            match str_of(b, "type") {
                Some("tool_use" | "server_tool_use") => out.push(Event::ToolStart {
                    slot,
                    id: str_of(b, "id").unwrap_or_default().to_owned(),
                    name: str_of(b, "name").unwrap_or_default().to_owned(),
                }),
                Some("text") => {
                    if let Some(t) = str_of(b, "text").filter(|t| !t.is_empty()) {
                        out.push(Event::Text(t.to_owned()));
                    }
                }
                _ => {}
            }
        }
        "content_block_delta" => {
            let d = data.get("delta").unwrap_or(&Value::Null);
            let slot = u64_of(data, "index").unwrap_or(0);
            match str_of(d, "type") {
                Some("text_delta") => out.push(Event::Text(
                    str_of(d, "text").unwrap_or_default().to_owned(),
                )),
                Some("input_json_delta") => out.push(Event::ToolArgs {
                    slot,
                    json: str_of(d, "partial_json").unwrap_or_default().to_owned(),
                }),
                Some("thinking_delta") => out.push(Event::Thinking(
                    str_of(d, "thinking").unwrap_or_default().to_owned(),
                )),
                Some("signature_delta") => out.push(Event::Signature(
                    str_of(d, "signature").unwrap_or_default().to_owned(),
                )),
                _ => {}
            }
        }
        "message_delta" => {
            let d = data.get("delta").unwrap_or(&Value::Null);
            if let Some(reason) = str_of(d, "stop_reason") {
                out.push(Event::Stop(stop_of(
                    Some(reason),
                    str_of(d, "stop_sequence"),
                )));
            }
            if let Some(u) = data.get("usage") {
                out.push(Event::Usage(usage_of(u)));
            }
        }
        "message_stop" => out.push(Event::End),
        "error" => {
            let e = data.get("error").unwrap_or(&Value::Null);
            out.push(Event::Error {
                kind: str_of(e, "type").unwrap_or("api_error").to_owned(),
                message: str_of(e, "message").unwrap_or_default().to_owned(),
            });
        }
        _ => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    Tool(u64),
}

/// Writes neutral stream events as Anthropic's, for an Anthropic caller.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    started: bool,
    ended: bool,
    open: Option<(u64, Block)>,
    next: u64,
    stop: Option<Stop>,
    usage: Usage,
}

fn sse(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(format!("event: {name}\ndata: {data}\n\n").as_bytes());
}

impl Writer {
    fn start(&mut self, id: &str, model: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        sse(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.usage.input, "output_tokens": 0}}}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            sse(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open(&mut self, block: Block, start: Value, out: &mut Vec<u8>) -> u64 {
        if let Some((index, b)) = self.open {
            if b == block {
                return index;
            }
        }
        self.close(out);
        let index = self.next;
        self.next += 1;
        self.open = Some((index, block));
        sse(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
        index
    }

    pub(crate) fn write(&mut self, ev: Event, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if !self.started
            && !matches!(
                ev,
                Event::Start { .. } | Event::Usage(_) | Event::Error { .. }
            )
        {
            self.start("msg_keyward", "", out);
        }
        match ev {
            Event::Start { id, model } => self.start(&id, &model, out),
            Event::Text(t) if t.is_empty() => {}
            Event::Text(t) => {
                let index = self.open(Block::Text, json!({"type": "text", "text": ""}), out);
                sse(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}),
                );
            }
            Event::Thinking(t) => {
                let index = self.open(
                    Block::Thinking,
                    json!({"type": "thinking", "thinking": ""}),
                    out,
                );
                sse(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": t}}),
                );
            }
            Event::Signature(s) => {
                if let Some((index, Block::Thinking)) = self.open {
                    sse(
                        out,
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": s}}),
                    );
                }
            }
            Event::ToolStart { slot, id, name } => {
                self.close(out);
                self.open(
                    Block::Tool(slot),
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
            }
            Event::ToolArgs { slot, json } => {
                if let Some((index, Block::Tool(s))) = self.open {
                    if s == slot && !json.is_empty() {
                        sse(
                            out,
                            "content_block_delta",
                            &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": json}}),
                        );
                    }
                }
            }
            Event::Stop(s) => self.stop = Some(s),
            Event::Usage(u) => self.usage = merge(self.usage, u),
            Event::Error { kind, message } => {
                self.ended = true;
                sse(
                    out,
                    "error",
                    &json!({"type": "error", "error": {"type": error_type(&kind), "message": message}}),
                );
            }
            Event::End => self.end(out),
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.close(out);
        self.ended = true;
        let (reason, seq) = stop_str(self.stop.as_ref().unwrap_or(&Stop::End));
        sse(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": seq}, "usage": usage_json(self.usage)}),
        );
        sse(out, "message_stop", &json!({"type": "message_stop"}));
    }

    /// At the end of the upstream stream: the terminal events if the answer had stopped.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.ended && self.stop.is_some() {
            self.end(out);
        }
    }
}

/// Cumulative counts: the larger of each.
pub(crate) fn merge(a: Usage, b: Usage) -> Usage {
    Usage {
        input: a.input.max(b.input),
        output: a.output.max(b.output),
        cached: a.cached.max(b.cached),
    }
}

/// An error type an Anthropic SDK knows, from any provider's type or status.
pub(crate) fn error_type(kind: &str) -> &'static str {
    match kind {
        "invalid_request_error"
        | "INVALID_ARGUMENT"
        | "FAILED_PRECONDITION"
        | "invalid_request" => "invalid_request_error",
        "authentication_error" | "UNAUTHENTICATED" => "authentication_error",
        "permission_error" | "PERMISSION_DENIED" => "permission_error",
        "not_found_error" | "NOT_FOUND" => "not_found_error",
        "rate_limit_error"
        | "rate_limit_exceeded"
        | "RESOURCE_EXHAUSTED"
        | "insufficient_quota" => "rate_limit_error",
        "overloaded_error" | "UNAVAILABLE" => "overloaded_error",
        _ => "api_error",
    }
}
