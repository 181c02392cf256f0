//! OpenAI Chat Completions (and every OpenAI-compatible provider): requests, answers and
//! stream chunks, read into and written from the neutral form.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::anthropic::merge;
use super::ir::{
    Effort, Event, Image, JsonOutput, Message, Part, Reasoning, Request, Response, Role, Stop,
    Tool, ToolChoice, Usage,
};
use super::json::{f64_of, has, str_of, strings, u64_of};
use super::{malformed, Losses, Options, TranslateError};
use crate::stream::Api;

const API: Api = Api::ChatCompletions;

/// OpenAI takes at most this many stop sequences.
const MAX_STOP: usize = 4;

/// Text of a content that is a string or a list of text parts.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| str_of(p, "text"))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// An image URL as an image: a `data:` URL is inline data.
pub(crate) fn image_of_url(url: &str) -> Image {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((media_type, data)) = rest.split_once(";base64,") {
            return Image::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            };
        }
    }
    Image::Url(url.to_owned())
}

/// An image as a URL (inline data as a `data:` URL).
pub(crate) fn url_of_image(i: &Image) -> String {
    match i {
        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        Image::Url(u) => u.clone(),
    }
}

fn user_parts(content: Option<&Value>, losses: &mut Losses) -> Vec<Part> {
    match content {
        Some(Value::String(s)) => vec![Part::Text(s.clone())],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match str_of(p, "type") {
                Some("text") => str_of(p, "text").map(|t| Part::Text(t.to_owned())),
                Some("image_url") => p
                    .get("image_url")
                    .and_then(|i| str_of(i, "url").or_else(|| i.as_str()))
                    .map(|u| Part::Image(image_of_url(u))),
                Some("input_audio") => {
                    losses.refuse("audio input");
                    None
                }
                _ => {
                    losses.drop("files");
                    None
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Appends a turn, joining it to the last one when the role is the same.
pub(crate) fn push_turn(messages: &mut Vec<Message>, role: Role, parts: Vec<Part>) {
    match messages.last_mut() {
        Some(last) if last.role == role => last.parts.extend(parts),
        _ => messages.push(Message { role, parts }),
    }
}

/// A function tool from its OpenAI spec (`description`, `parameters`): the Chat
/// `function` object, or a Responses tool itself.
pub(crate) fn function_tool(spec: &Value, name: &str) -> Tool {
    Tool {
        name: name.to_owned(),
        description: str_of(spec, "description").map(str::to_owned),
        schema: spec
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    }
}

/// A `tool_choice` word, the same in both OpenAI APIs.
pub(crate) fn tool_choice_word(word: &str) -> Option<ToolChoice> {
    match word {
        "auto" => Some(ToolChoice::Auto),
        "required" => Some(ToolChoice::Any),
        "none" => Some(ToolChoice::None),
        _ => None,
    }
}

pub(crate) fn read_request(
    v: &Map<String, Value>,
    losses: &mut Losses,
) -> Result<Request, TranslateError> {
    let mut r = Request::default();
    let Some(Value::Array(messages)) = v.get("messages") else {
        return Err(malformed(API, "no `messages` list"));
    };
    let mut names: HashMap<String, String> = HashMap::new();
    for m in messages {
        match str_of(m, "role") {
            Some("system" | "developer") => r.system.push(text_of(m.get("content"))),
            Some("user") => {
                let parts = user_parts(m.get("content"), losses);
                push_turn(&mut r.messages, Role::User, parts);
            }
            Some("assistant") => {
                let mut parts = Vec::new();
                if let Some(t) = str_of(m, "reasoning_content").filter(|t| !t.is_empty()) {
                    parts.push(Part::Thinking {
                        text: t.to_owned(),
                        signature: None,
                    });
                }
                let text = text_of(m.get("content"));
                if !text.is_empty() {
                    parts.push(Part::Text(text));
                }
                if let Some(Value::Array(calls)) = m.get("tool_calls") {
                    for c in calls {
                        let f = c.get("function").unwrap_or(&Value::Null);
                        let (Some(id), Some(name)) = (str_of(c, "id"), str_of(f, "name")) else {
                            continue;
                        };
                        names.insert(id.to_owned(), name.to_owned());
                        parts.push(Part::ToolCall {
                            id: id.to_owned(),
                            name: name.to_owned(),
                            arguments: str_of(f, "arguments").unwrap_or("{}").to_owned(),
                        });
                    }
                }
                push_turn(&mut r.messages, Role::Assistant, parts);
            }
            Some("tool") => {
                let id = str_of(m, "tool_call_id").unwrap_or_default().to_owned();
                let part = Part::ToolResult {
                    name: names.get(&id).cloned(),
                    id,
                    content: vec![Part::Text(text_of(m.get("content")))],
                    is_error: false,
                };
                push_turn(&mut r.messages, Role::User, vec![part]);
            }
            Some("function") => losses.drop("legacy function messages"),
            other => return Err(super::bad_role(API, other)),
        }
    }
    if let Some(Value::Array(tools)) = v.get("tools") {
        for t in tools {
            let f = t.get("function");
            match (str_of(t, "type"), f.and_then(|f| str_of(f, "name"))) {
                (Some("function"), Some(name)) => {
                    r.tools.push(function_tool(f.unwrap_or(&Value::Null), name));
                }
                _ => losses.drop("built-in tools"),
            }
        }
    }
    r.tool_choice = match v.get("tool_choice") {
        Some(Value::String(s)) => tool_choice_word(s),
        Some(o @ Value::Object(_)) => o
            .get("function")
            .and_then(|f| str_of(f, "name"))
            .map(|n| ToolChoice::Named(n.to_owned())),
        _ => None,
    };
    let v = Value::Object(v.clone());
    r.parallel_tool_calls = v.get("parallel_tool_calls").and_then(Value::as_bool);
    r.max_tokens = u64_of(&v, "max_completion_tokens").or_else(|| u64_of(&v, "max_tokens"));
    r.temperature = f64_of(&v, "temperature");
    r.top_p = f64_of(&v, "top_p");
    r.stop = strings(v.get("stop"));
    r.user = str_of(&v, "user").map(str::to_owned);
    r.reasoning = str_of(&v, "reasoning_effort")
        .and_then(Effort::parse)
        .map(Reasoning::Effort);
    if let Some(f) = v.get("response_format") {
        r.json = match str_of(f, "type") {
            Some("json_schema") => {
                let s = f.get("json_schema").unwrap_or(&Value::Null);
                Some(JsonOutput {
                    name: str_of(s, "name").unwrap_or("output").to_owned(),
                    schema: s.get("schema").cloned(),
                    strict: s.get("strict").and_then(Value::as_bool),
                })
            }
            Some("json_object") => Some(JsonOutput {
                name: "output".into(),
                schema: None,
                strict: None,
            }),
            _ => None,
        };
    }
    if u64_of(&v, "n").is_some_and(|n| n > 1) {
        losses.refuse("n>1");
    }
    let audio_out = v
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x == "audio"));
    if audio_out || has(&v, "audio") {
        losses.refuse("audio output");
    }
    for (key, feature) in [
        ("logprobs", "logprobs"),
        ("top_logprobs", "logprobs"),
        ("seed", "seed"),
        ("presence_penalty", "penalties"),
        ("frequency_penalty", "penalties"),
        ("logit_bias", "logit_bias"),
        ("prediction", "prediction"),
        ("web_search_options", "built-in tools"),
        ("service_tier", "service_tier"),
    ] {
        if has(&v, key) && v.get(key) != Some(&Value::Bool(false)) {
            losses.drop(feature);
        }
    }
    Ok(r)
}

fn content_parts(parts: &[Part]) -> Value {
    let only_text = parts.iter().all(|p| matches!(p, Part::Text(_)));
    if only_text {
        return json!(parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(""));
    }
    Value::Array(
        parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(json!({"type": "text", "text": t})),
                Part::Image(i) => {
                    Some(json!({"type": "image_url", "image_url": {"url": url_of_image(i)}}))
                }
                _ => None,
            })
            .collect(),
    )
}

pub(crate) fn write_request(
    r: &Request,
    model: &str,
    stream: bool,
    opts: &Options,
    losses: &mut Losses,
) -> Result<Value, TranslateError> {
    let mut messages = Vec::new();
    let system: Vec<&str> = r
        .system
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system.join("\n\n")}));
    }
    for m in &r.messages {
        match m.role {
            Role::User => {
                let mut rest = Vec::new();
                for p in &m.parts {
                    match p {
                        Part::ToolResult {
                            id,
                            content,
                            is_error,
                            ..
                        } => {
                            if content.iter().any(|c| matches!(c, Part::Image(_))) {
                                losses.drop("images in tool results");
                            }
                            let mut text = String::new();
                            if *is_error {
                                losses.note("tool error flag", "written into the result text");
                                text.push_str("Error: ");
                            }
                            for c in content {
                                if let Part::Text(t) = c {
                                    text.push_str(t);
                                }
                            }
                            messages
                                .push(json!({"role": "tool", "tool_call_id": id, "content": text}));
                        }
                        Part::Text(_) | Part::Image(_) => rest.push(p.clone()),
                        Part::ToolCall { .. } | Part::Thinking { .. } => {}
                    }
                }
                if !rest.is_empty() {
                    messages.push(json!({"role": "user", "content": content_parts(&rest)}));
                }
            }
            Role::Assistant => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for p in &m.parts {
                    match p {
                        Part::Text(t) => text.push_str(t),
                        Part::ToolCall {
                            id,
                            name,
                            arguments,
                        } => calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})),
                        Part::Thinking { .. } => losses.drop("reasoning history"),
                        Part::Image(_) | Part::ToolResult { .. } => {}
                    }
                }
                let mut o = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
                if !calls.is_empty() {
                    o["tool_calls"] = Value::Array(calls);
                }
                messages.push(o);
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    if !r.tools.is_empty() {
        let tools: Vec<Value> = r
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "parameters": t.schema});
                if let Some(d) = &t.description {
                    f["description"] = json!(d);
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
        if let Some(c) = &r.tool_choice {
            out.insert(
                "tool_choice".into(),
                match c {
                    ToolChoice::Auto => json!("auto"),
                    ToolChoice::Any => json!("required"),
                    ToolChoice::None => json!("none"),
                    ToolChoice::Named(n) => json!({"type": "function", "function": {"name": n}}),
                },
            );
        }
        if let Some(p) = r.parallel_tool_calls {
            out.insert("parallel_tool_calls".into(), json!(p));
        }
    }
    if let Some(n) = r.max_tokens {
        let field = if opts.compatible_chat {
            "max_tokens"
        } else {
            "max_completion_tokens"
        };
        out.insert(field.into(), json!(n));
    }
    if let Some(t) = r.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = r.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if r.top_k.is_some() {
        losses.drop("top_k");
    }
    if !r.stop.is_empty() {
        if r.stop.len() > MAX_STOP {
            losses.note("stop sequences beyond 4", "dropped");
        }
        let stop: Vec<&String> = r.stop.iter().take(MAX_STOP).collect();
        out.insert("stop".into(), json!(stop));
    }
    if let Some(u) = &r.user {
        out.insert("user".into(), json!(u));
    }
    if let Some(re) = r.reasoning {
        out.insert("reasoning_effort".into(), json!(re.effort().as_str()));
    }
    if let Some(j) = &r.json {
        let f = match &j.schema {
            Some(schema) => {
                let mut s = json!({"name": j.name, "schema": schema});
                if let Some(strict) = j.strict {
                    s["strict"] = json!(strict);
                }
                json!({"type": "json_schema", "json_schema": s})
            }
            None => json!({"type": "json_object"}),
        };
        out.insert("response_format".into(), f);
    }
    if stream {
        out.insert("stream".into(), json!(true));
        if !opts.compatible_chat {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    Ok(Value::Object(out))
}

fn stop_of(reason: &str) -> Stop {
    match reason {
        "length" => Stop::MaxTokens,
        "tool_calls" | "function_call" => Stop::ToolUse,
        "content_filter" => Stop::ContentFilter,
        _ => Stop::End,
    }
}

fn stop_str(s: &Stop) -> &'static str {
    match s {
        Stop::End | Stop::Sequence(_) => "stop",
        Stop::MaxTokens => "length",
        Stop::ToolUse => "tool_calls",
        Stop::ContentFilter => "content_filter",
    }
}

fn usage_of(u: &Value) -> Usage {
    Usage {
        input: u64_of(u, "prompt_tokens").unwrap_or(0),
        output: u64_of(u, "completion_tokens").unwrap_or(0),
        cached: u
            .get("prompt_tokens_details")
            .and_then(|d| u64_of(d, "cached_tokens"))
            .unwrap_or(0),
    }
}

fn usage_json(u: Usage) -> Value {
    json!({"prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.input + u.output,
           "prompt_tokens_details": {"cached_tokens": u.cached}})
}

pub(crate) fn read_response(v: &Map<String, Value>) -> Result<Response, TranslateError> {
    let v = Value::Object(v.clone());
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| malformed(API, "an answer without `choices`"))?;
    let m = choice.get("message").unwrap_or(&Value::Null);
    let mut parts = Vec::new();
    if let Some(t) = str_of(m, "reasoning_content")
        .or_else(|| str_of(m, "reasoning"))
        .filter(|t| !t.is_empty())
    {
        parts.push(Part::Thinking {
            text: t.to_owned(),
            signature: None,
        });
    }
    let text = text_of(m.get("content"));
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    let mut stop = stop_of(str_of(choice, "finish_reason").unwrap_or("stop"));
    if let Some(r) = str_of(m, "refusal").filter(|r| !r.is_empty()) {
        parts.push(Part::Text(r.to_owned()));
        stop = Stop::ContentFilter;
    }
    if let Some(Value::Array(calls)) = m.get("tool_calls") {
        for c in calls {
            let f = c.get("function").unwrap_or(&Value::Null);
            parts.push(Part::ToolCall {
                id: str_of(c, "id").unwrap_or_default().to_owned(),
                name: str_of(f, "name").unwrap_or_default().to_owned(),
                arguments: str_of(f, "arguments").unwrap_or("{}").to_owned(),
            });
        }
    }
    Ok(Response {
        id: str_of(&v, "id").unwrap_or("chatcmpl-keyward").to_owned(),
        model: str_of(&v, "model").unwrap_or_default().to_owned(),
        parts,
        stop,
        usage: v.get("usage").map(usage_of).unwrap_or_default(),
    })
}

pub(crate) fn write_response(r: &Response, opts: &Options) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for p in &r.parts {
        match p {
            Part::Text(t) => text.push_str(t),
            Part::Thinking { text: t, .. } => reasoning.push_str(t),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})),
            Part::Image(_) | Part::ToolResult { .. } => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    json!({
        "id": r.id, "object": "chat.completion", "created": opts.created, "model": r.model,
        "choices": [{"index": 0, "message": message, "finish_reason": stop_str(&r.stop), "logprobs": null}],
        "usage": usage_json(r.usage),
    })
}

/// Reads Chat Completions chunks.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    started: bool,
    tools: Vec<u64>,
    stopped: bool,
    usage: bool,
    ended: bool,
}

impl Reader {
    pub(crate) fn read(&mut self, data: &[u8], out: &mut Vec<Event>) {
        if self.ended {
            return;
        }
        if data.trim_ascii() == b"[DONE]" {
            self.ended = true;
            out.push(Event::End);
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        if let Some(e) = v.get("error") {
            out.push(Event::Error {
                kind: str_of(e, "type")
                    .or_else(|| str_of(e, "code"))
                    .unwrap_or("api_error")
                    .to_owned(),
                message: str_of(e, "message").unwrap_or_default().to_owned(),
            });
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: str_of(&v, "id").unwrap_or("chatcmpl-keyward").to_owned(),
                model: str_of(&v, "model").unwrap_or_default().to_owned(),
            });
        }
        let choice = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        if let Some(c) = choice {
            let d = c.get("delta").unwrap_or(&Value::Null);
            if let Some(t) = str_of(d, "reasoning_content").or_else(|| str_of(d, "reasoning")) {
                if !t.is_empty() {
                    out.push(Event::Thinking(t.to_owned()));
                }
            }
            if let Some(t) = str_of(d, "content").filter(|t| !t.is_empty()) {
                out.push(Event::Text(t.to_owned()));
            }
            if let Some(t) = str_of(d, "refusal").filter(|t| !t.is_empty()) {
                out.push(Event::Text(t.to_owned()));
            }
            if let Some(Value::Array(calls)) = d.get("tool_calls") {
                for call in calls {
                    let slot = u64_of(call, "index").unwrap_or(0);
                    let f = call.get("function").unwrap_or(&Value::Null);
                    if !self.tools.contains(&slot) {
                        self.tools.push(slot);
                        out.push(Event::ToolStart {
                            slot,
                            id: str_of(call, "id").unwrap_or_default().to_owned(),
                            name: str_of(f, "name").unwrap_or_default().to_owned(),
                        });
                    }
                    if let Some(a) = str_of(f, "arguments").filter(|a| !a.is_empty()) {
                        out.push(Event::ToolArgs {
                            slot,
                            json: a.to_owned(),
                        });
                    }
                }
            }
            if let Some(r) = str_of(c, "finish_reason").filter(|r| !r.is_empty()) {
                self.stopped = true;
                out.push(Event::Stop(stop_of(r)));
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = true;
            out.push(Event::Usage(usage_of(u)));
        }
        // The answer is whole once it stopped and reported its usage (`[DONE]` may not
        // come, and the usage may not either: the end of the stream then closes it).
        if self.stopped && self.usage {
            self.ended = true;
            out.push(Event::End);
        }
    }
}

/// Writes neutral stream events as Chat Completions chunks, for a Chat caller.
#[derive(Debug)]
pub(crate) struct Writer {
    id: String,
    model: String,
    created: u64,
    started: bool,
    ended: bool,
    /// Upstream tool slots, in the order their calls began (the caller's indexes).
    tools: Vec<u64>,
    stop: Option<Stop>,
    usage: Usage,
}

impl Writer {
    pub(crate) fn new(created: u64) -> Writer {
        Writer {
            id: "chatcmpl-keyward".into(),
            model: String::new(),
            created,
            started: false,
            ended: false,
            tools: Vec::new(),
            stop: None,
            usage: Usage::default(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        out.extend_from_slice(format!("data: {c}\n\n").as_bytes());
    }

    pub(crate) fn write(&mut self, ev: Event, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if let Event::Start { id, model } = &ev {
            self.id.clone_from(id);
            self.model.clone_from(model);
        }
        if !self.started && !matches!(ev, Event::Usage(_) | Event::Error { .. }) {
            self.started = true;
            self.chunk(json!({"role": "assistant", "content": ""}), None, out);
        }
        match ev {
            Event::Start { .. } | Event::Signature(_) => {}
            Event::Text(t) if t.is_empty() => {}
            Event::Text(t) => self.chunk(json!({"content": t}), None, out),
            Event::Thinking(t) => self.chunk(json!({"reasoning_content": t}), None, out),
            Event::ToolStart { slot, id, name } => {
                let index = self.tools.len();
                self.tools.push(slot);
                self.chunk(json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}), None, out);
            }
            Event::ToolArgs { slot, json } => {
                if let Some(index) = self.tools.iter().position(|s| *s == slot) {
                    self.chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": json}}]}),
                        None,
                        out,
                    );
                }
            }
            Event::Stop(s) => self.stop = Some(s),
            Event::Usage(u) => self.usage = merge(self.usage, u),
            Event::Error { kind, message } => {
                self.ended = true;
                let e = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
                out.extend_from_slice(format!("data: {e}\n\n").as_bytes());
            }
            Event::End => self.end(out),
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.ended = true;
        let finish = stop_str(self.stop.as_ref().unwrap_or(&Stop::End));
        let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                       "choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": usage_json(self.usage)});
        out.extend_from_slice(format!("data: {c}\n\ndata: [DONE]\n\n").as_bytes());
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.ended && self.stop.is_some() {
            self.end(out);
        }
    }
}
