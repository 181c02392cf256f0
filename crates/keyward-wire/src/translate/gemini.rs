//! Gemini `generateContent` / `streamGenerateContent`: requests, answers and stream
//! chunks, read into and written from the neutral form. Gemini pairs a function's call and
//! its response by name and position: ids are invented for callers that need them
//! (`call_<nonce>_<n>`), and names found from the ids for Gemini.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::anthropic::merge;
use super::ir::{
    Event, Image, JsonOutput, Part, Reasoning, Request, Response, Role, Stop, Tool, ToolChoice,
    Usage,
};
use super::json::{args_value, f64_of, has, str_of, strings, u64_of};
use super::{malformed, Losses, Options, TranslateError};
use crate::stream::Api;

const API: Api = Api::Gemini;

/// Gemini takes at most this many stop sequences.
const MAX_STOP: usize = 5;

/// The thought signature Google documents for function calls made by another model.
const FOREIGN_CALL_SIGNATURE: &str = "skip_thought_signature_validator";

/// A field by its camelCase or snake_case name (the REST API takes both).
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn text_parts(v: Option<&Value>) -> Vec<String> {
    v.and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| str_of(p, "text").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A function response's content as text: its `result`/`output`/`content` when a string,
/// else the whole response as JSON.
fn response_text(r: Option<&Value>) -> String {
    let Some(r) = r else {
        return String::new();
    };
    for key in ["result", "output", "content"] {
        if let Some(s) = str_of(r, key) {
            return s.to_owned();
        }
    }
    r.to_string()
}

pub(crate) fn read_request(
    v: &Map<String, Value>,
    losses: &mut Losses,
) -> Result<Request, TranslateError> {
    let v = Value::Object(v.clone());
    let mut r = Request {
        system: text_parts(field(&v, "systemInstruction", "system_instruction")),
        ..Request::default()
    };
    let Some(Value::Array(contents)) = v.get("contents") else {
        return Err(malformed(API, "no `contents` list"));
    };
    read_contents(contents, &mut r, losses);
    read_tools(&v, &mut r, losses);
    if let Some(g) = field(&v, "generationConfig", "generation_config") {
        read_generation(g, &mut r, losses);
    }
    if field(&v, "safetySettings", "safety_settings").is_some() {
        losses.drop("safetySettings");
    }
    if field(&v, "cachedContent", "cached_content").is_some() {
        losses.refuse("cachedContent");
    }
    Ok(r)
}

/// The turns, ids invented for calls that have none and paired with their responses.
fn read_contents(contents: &[Value], r: &mut Request, losses: &mut Losses) {
    // Calls not yet answered, by name: a response without an id answers the oldest.
    let mut open: HashMap<String, Vec<String>> = HashMap::new();
    let mut n = 0;
    for c in contents {
        let role = match str_of(c, "role") {
            Some("model") => Role::Assistant,
            _ => Role::User,
        };
        let mut parts = Vec::new();
        for p in c
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = str_of(p, "text") {
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    parts.push(Part::Thinking {
                        text: t.to_owned(),
                        signature: None,
                    });
                } else {
                    parts.push(Part::Text(t.to_owned()));
                }
            } else if let Some(d) = field(p, "inlineData", "inline_data") {
                let media_type = field(d, "mimeType", "mime_type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match (media_type.starts_with("image/"), str_of(d, "data")) {
                    (true, Some(data)) => parts.push(Part::Image(Image::Base64 {
                        media_type: media_type.to_owned(),
                        data: data.to_owned(),
                    })),
                    _ => losses.drop("inline data other than images"),
                }
            } else if let Some(f) = field(p, "fileData", "file_data") {
                let media_type = field(f, "mimeType", "mime_type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match (
                    media_type.starts_with("image/"),
                    field(f, "fileUri", "file_uri").and_then(Value::as_str),
                ) {
                    (true, Some(uri)) if uri.starts_with("http") => {
                        parts.push(Part::Image(Image::Url(uri.to_owned())))
                    }
                    _ => losses.drop("fileData"),
                }
            } else if let Some(call) = field(p, "functionCall", "function_call") {
                let name = str_of(call, "name").unwrap_or_default().to_owned();
                let id = str_of(call, "id").map_or_else(
                    || {
                        n += 1;
                        format!("call_{n}_{name}")
                    },
                    str::to_owned,
                );
                open.entry(name.clone()).or_default().push(id.clone());
                parts.push(Part::ToolCall {
                    id,
                    name,
                    arguments: call
                        .get("args")
                        .map_or_else(|| "{}".into(), Value::to_string),
                });
            } else if let Some(resp) = field(p, "functionResponse", "function_response") {
                let name = str_of(resp, "name").unwrap_or_default().to_owned();
                let pending = open.entry(name.clone()).or_default();
                let id = match str_of(resp, "id") {
                    Some(id) => {
                        pending.retain(|x| x != id);
                        id.to_owned()
                    }
                    None if !pending.is_empty() => pending.remove(0),
                    None => {
                        n += 1;
                        format!("call_{n}_{name}")
                    }
                };
                let body = resp.get("response");
                parts.push(Part::ToolResult {
                    id,
                    name: Some(name),
                    content: vec![Part::Text(response_text(body))],
                    is_error: body.is_some_and(|b| has(b, "error")),
                });
            } else {
                losses.drop("other parts");
            }
        }
        super::chat::push_turn(&mut r.messages, role, parts);
    }
}

/// The function declarations (built-in tools are lost) and the tool config.
fn read_tools(v: &Value, r: &mut Request, losses: &mut Losses) {
    for t in v
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let decls =
            field(t, "functionDeclarations", "function_declarations").and_then(Value::as_array);
        let Some(decls) = decls else {
            losses.drop("built-in tools");
            continue;
        };
        for d in decls {
            let Some(name) = str_of(d, "name") else {
                continue;
            };
            r.tools.push(Tool {
                name: name.to_owned(),
                description: str_of(d, "description").map(str::to_owned),
                schema: field(d, "parametersJsonSchema", "parameters_json_schema")
                    .or_else(|| d.get("parameters"))
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
        }
    }
    if let Some(fc) = field(v, "toolConfig", "tool_config")
        .and_then(|t| field(t, "functionCallingConfig", "function_calling_config"))
    {
        let allowed = strings(field(fc, "allowedFunctionNames", "allowed_function_names"));
        r.tool_choice = match str_of(fc, "mode") {
            Some("ANY" | "VALIDATED") if allowed.len() == 1 => {
                allowed.into_iter().next().map(ToolChoice::Named)
            }
            Some("ANY") => Some(ToolChoice::Any),
            Some("NONE") => Some(ToolChoice::None),
            Some("AUTO" | "VALIDATED") => Some(ToolChoice::Auto),
            _ => None,
        };
    }
}

/// The generation config: length, sampling, stops, JSON output, thinking.
fn read_generation(g: &Value, r: &mut Request, losses: &mut Losses) {
    r.max_tokens = field(g, "maxOutputTokens", "max_output_tokens").and_then(Value::as_u64);
    r.temperature = f64_of(g, "temperature");
    r.top_p = field(g, "topP", "top_p").and_then(Value::as_f64);
    r.top_k = field(g, "topK", "top_k").and_then(Value::as_u64);
    r.stop = strings(field(g, "stopSequences", "stop_sequences"));
    if field(g, "candidateCount", "candidate_count")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        losses.refuse("candidateCount>1");
    }
    let modalities = strings(field(g, "responseModalities", "response_modalities"));
    if modalities.iter().any(|m| m != "TEXT") {
        losses.refuse("audio or image output");
    }
    let mime = field(g, "responseMimeType", "response_mime_type").and_then(Value::as_str);
    if mime == Some("application/json") {
        r.json = Some(JsonOutput {
            name: "output".into(),
            schema: field(g, "responseJsonSchema", "response_json_schema")
                .or_else(|| field(g, "responseSchema", "response_schema"))
                .cloned(),
            strict: None,
        });
    }
    if let Some(t) = field(g, "thinkingConfig", "thinking_config") {
        r.reasoning = field(t, "thinkingBudget", "thinking_budget")
            .and_then(Value::as_i64)
            .and_then(|b| u64::try_from(b).ok())
            .filter(|b| *b > 0)
            .map(Reasoning::Budget);
    }
    for (camel, snake, feature) in [
        ("presencePenalty", "presence_penalty", "penalties"),
        ("frequencyPenalty", "frequency_penalty", "penalties"),
        ("seed", "seed", "seed"),
        ("responseLogprobs", "response_logprobs", "logprobs"),
    ] {
        if field(g, camel, snake).is_some() {
            losses.drop(feature);
        }
    }
}

pub(crate) fn write_request(
    r: &Request,
    stream: bool,
    losses: &mut Losses,
) -> Result<Value, TranslateError> {
    let _ = stream; // Gemini streams by method, not by a body field.
    let mut names: HashMap<&str, &str> = HashMap::new();
    for m in &r.messages {
        for p in &m.parts {
            if let Part::ToolCall { id, name, .. } = p {
                names.insert(id, name);
            }
        }
    }
    let mut contents: Vec<Value> = Vec::new();
    for m in &r.messages {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        let mut parts = Vec::new();
        for p in &m.parts {
            match p {
                Part::Text(t) if t.is_empty() => {}
                Part::Text(t) => parts.push(json!({"text": t})),
                Part::Image(Image::Base64 { media_type, data }) => {
                    parts.push(json!({"inlineData": {"mimeType": media_type, "data": data}}));
                }
                Part::Image(Image::Url(_)) => losses.drop("image URLs"),
                Part::ToolCall {
                    name, arguments, ..
                } => parts.push(json!({
                    "functionCall": {"name": name, "args": args_value(arguments)},
                    "thoughtSignature": FOREIGN_CALL_SIGNATURE})),
                Part::ToolResult {
                    id,
                    name,
                    content,
                    is_error,
                } => {
                    let name = name
                        .as_deref()
                        .or_else(|| names.get(id.as_str()).copied())
                        .unwrap_or("tool");
                    let text: String = content
                        .iter()
                        .filter_map(|c| match c {
                            Part::Text(t) => Some(t.as_str()),
                            _ => None,
                        })
                        .collect();
                    if content.iter().any(|c| matches!(c, Part::Image(_))) {
                        losses.drop("images in tool results");
                    }
                    let key = if *is_error { "error" } else { "result" };
                    parts
                        .push(json!({"functionResponse": {"name": name, "response": {key: text}}}));
                }
                Part::Thinking { .. } => losses.drop("reasoning history"),
            }
        }
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(Value::Array(p)) = last.get_mut("parts") {
                    p.extend(parts);
                }
            }
            _ => contents.push(json!({"role": role, "parts": parts})),
        }
    }
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    let system: Vec<Value> = r
        .system
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| json!({"text": s}))
        .collect();
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    if !r.tools.is_empty() {
        let decls: Vec<Value> = r
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name, "parametersJsonSchema": t.schema});
                if let Some(desc) = &t.description {
                    d["description"] = json!(desc);
                }
                d
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        if let Some(c) = &r.tool_choice {
            let fc = match c {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::Any => json!({"mode": "ANY"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Named(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
            };
            out.insert("toolConfig".into(), json!({"functionCallingConfig": fc}));
        }
        if r.parallel_tool_calls == Some(false) {
            losses.drop("parallel_tool_calls");
        }
    }
    let mut g = Map::new();
    if let Some(n) = r.max_tokens {
        g.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(t) = r.temperature {
        g.insert("temperature".into(), json!(t));
    }
    if let Some(p) = r.top_p {
        g.insert("topP".into(), json!(p));
    }
    if let Some(k) = r.top_k {
        g.insert("topK".into(), json!(k));
    }
    if !r.stop.is_empty() {
        if r.stop.len() > MAX_STOP {
            losses.note("stop sequences beyond 5", "dropped");
        }
        g.insert(
            "stopSequences".into(),
            json!(r.stop.iter().take(MAX_STOP).collect::<Vec<_>>()),
        );
    }
    if let Some(j) = &r.json {
        g.insert("responseMimeType".into(), json!("application/json"));
        if let Some(schema) = &j.schema {
            g.insert("responseJsonSchema".into(), schema.clone());
        }
    }
    if let Some(re) = r.reasoning {
        g.insert(
            "thinkingConfig".into(),
            json!({"thinkingBudget": re.budget(), "includeThoughts": true}),
        );
    }
    if !g.is_empty() {
        out.insert("generationConfig".into(), Value::Object(g));
    }
    if r.user.is_some() {
        losses.drop("user");
    }
    Ok(Value::Object(out))
}

fn stop_of(reason: &str, called: bool) -> Stop {
    match reason {
        "MAX_TOKENS" => Stop::MaxTokens,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            Stop::ContentFilter
        }
        _ if called => Stop::ToolUse,
        _ => Stop::End,
    }
}

fn stop_str(s: &Stop) -> &'static str {
    match s {
        Stop::MaxTokens => "MAX_TOKENS",
        Stop::ContentFilter => "SAFETY",
        Stop::End | Stop::Sequence(_) | Stop::ToolUse => "STOP",
    }
}

fn usage_of(u: &Value) -> Usage {
    Usage {
        input: u64_of(u, "promptTokenCount").unwrap_or(0),
        output: u64_of(u, "candidatesTokenCount").unwrap_or(0)
            + u64_of(u, "thoughtsTokenCount").unwrap_or(0),
        cached: u64_of(u, "cachedContentTokenCount").unwrap_or(0),
    }
}

fn usage_json(u: Usage) -> Value {
    let mut o = json!({"promptTokenCount": u.input, "candidatesTokenCount": u.output, "totalTokenCount": u.input + u.output});
    if u.cached > 0 {
        o["cachedContentTokenCount"] = json!(u.cached);
    }
    o
}

/// The parts of a candidate's content, ids invented for calls that have none.
fn read_parts(cand: &Value, nonce: u64, calls: &mut u64, out: &mut Vec<Part>) {
    for p in cand
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(t) = str_of(p, "text") {
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                out.push(Part::Thinking {
                    text: t.to_owned(),
                    signature: None,
                });
            } else if !t.is_empty() {
                out.push(Part::Text(t.to_owned()));
            }
        } else if let Some(call) = p.get("functionCall") {
            *calls += 1;
            out.push(Part::ToolCall {
                id: str_of(call, "id")
                    .map_or_else(|| format!("call_{nonce:x}_{calls}"), str::to_owned),
                name: str_of(call, "name").unwrap_or_default().to_owned(),
                arguments: call
                    .get("args")
                    .map_or_else(|| "{}".into(), Value::to_string),
            });
        }
    }
}

pub(crate) fn read_response(
    v: &Map<String, Value>,
    opts: &Options,
) -> Result<Response, TranslateError> {
    let v = Value::Object(v.clone());
    let cand = v
        .get("candidates")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let blocked = v
        .get("promptFeedback")
        .is_some_and(|f| has(f, "blockReason"));
    let Some(cand) = cand else {
        if blocked {
            return Ok(Response {
                id: str_of(&v, "responseId")
                    .unwrap_or("gemini-keyward")
                    .to_owned(),
                model: str_of(&v, "modelVersion").unwrap_or_default().to_owned(),
                parts: Vec::new(),
                stop: Stop::ContentFilter,
                usage: v.get("usageMetadata").map(usage_of).unwrap_or_default(),
            });
        }
        return Err(malformed(API, "an answer without `candidates`"));
    };
    let mut parts = Vec::new();
    let mut calls = 0;
    read_parts(cand, opts.nonce, &mut calls, &mut parts);
    Ok(Response {
        id: str_of(&v, "responseId")
            .unwrap_or("gemini-keyward")
            .to_owned(),
        model: str_of(&v, "modelVersion").unwrap_or_default().to_owned(),
        parts,
        stop: stop_of(str_of(cand, "finishReason").unwrap_or("STOP"), calls > 0),
        usage: v.get("usageMetadata").map(usage_of).unwrap_or_default(),
    })
}

fn part_json(p: &Part) -> Option<Value> {
    match p {
        Part::Text(t) => Some(json!({"text": t})),
        Part::Thinking { text, .. } => Some(json!({"text": text, "thought": true})),
        Part::ToolCall {
            id,
            name,
            arguments,
        } => Some(json!({"functionCall": {"id": id, "name": name, "args": args_value(arguments)}})),
        Part::Image(_) | Part::ToolResult { .. } => None,
    }
}

pub(crate) fn write_response(r: &Response) -> Value {
    let mut parts: Vec<Value> = r.parts.iter().filter_map(part_json).collect();
    if parts.is_empty() {
        parts.push(json!({"text": ""}));
    }
    json!({
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": stop_str(&r.stop), "index": 0}],
        "usageMetadata": usage_json(r.usage),
        "modelVersion": r.model,
        "responseId": r.id,
    })
}

/// Reads Gemini stream chunks.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    nonce: u64,
    started: bool,
    calls: u64,
    ended: bool,
}

impl Reader {
    pub(crate) fn new(nonce: u64) -> Reader {
        Reader {
            nonce,
            ..Reader::default()
        }
    }

    pub(crate) fn read(&mut self, v: &Value, out: &mut Vec<Event>) {
        if self.ended {
            return;
        }
        if let Some(e) = v.get("error") {
            out.push(Event::Error {
                kind: str_of(e, "status").unwrap_or("INTERNAL").to_owned(),
                message: str_of(e, "message").unwrap_or_default().to_owned(),
            });
            self.ended = true;
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: str_of(v, "responseId")
                    .unwrap_or("gemini-keyward")
                    .to_owned(),
                model: str_of(v, "modelVersion").unwrap_or_default().to_owned(),
            });
        }
        let cand = v
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        let mut stop = None;
        if let Some(c) = cand {
            let mut parts = Vec::new();
            read_parts(c, self.nonce, &mut self.calls, &mut parts);
            for p in parts {
                match p {
                    Part::Text(t) => out.push(Event::Text(t)),
                    Part::Thinking { text, .. } => out.push(Event::Thinking(text)),
                    Part::ToolCall {
                        id,
                        name,
                        arguments,
                    } => {
                        let slot = self.calls;
                        out.push(Event::ToolStart { slot, id, name });
                        out.push(Event::ToolArgs {
                            slot,
                            json: arguments,
                        });
                    }
                    Part::Image(_) | Part::ToolResult { .. } => {}
                }
            }
            stop = str_of(c, "finishReason").map(|r| stop_of(r, self.calls > 0));
        }
        if v.get("promptFeedback")
            .is_some_and(|f| has(f, "blockReason"))
        {
            stop = Some(Stop::ContentFilter);
        }
        if let Some(u) = v.get("usageMetadata") {
            out.push(Event::Usage(usage_of(u)));
        }
        if let Some(s) = stop {
            out.push(Event::Stop(s));
            out.push(Event::End);
            self.ended = true;
        }
    }
}

/// Writes neutral stream events as Gemini chunks (SSE, or the elements of a JSON array),
/// for a Gemini caller. A function call is sent whole, as Gemini does, when its
/// arguments are complete.
#[derive(Debug)]
pub(crate) struct Writer {
    array: bool,
    started: bool,
    ended: bool,
    model: String,
    id: String,
    /// The call being received: its id, name and arguments so far.
    call: Option<(String, String, String)>,
    stop: Option<Stop>,
    usage: Usage,
}

impl Writer {
    pub(crate) fn new(array: bool) -> Writer {
        Writer {
            array,
            started: false,
            ended: false,
            model: String::new(),
            id: "gemini-keyward".into(),
            call: None,
            stop: None,
            usage: Usage::default(),
        }
    }

    fn element(&mut self, v: &Value, out: &mut Vec<u8>) {
        if self.array {
            out.extend_from_slice(if self.started { b",\r\n" } else { b"[" });
            out.extend_from_slice(v.to_string().as_bytes());
        } else {
            out.extend_from_slice(format!("data: {v}\r\n\r\n").as_bytes());
        }
        self.started = true;
    }

    fn parts(&mut self, parts: Vec<Value>, out: &mut Vec<u8>) {
        let c = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
                       "modelVersion": self.model, "responseId": self.id});
        self.element(&c, out);
    }

    fn flush_call(&mut self, out: &mut Vec<u8>) {
        if let Some((id, name, args)) = self.call.take() {
            self.parts(
                vec![json!({"functionCall": {"id": id, "name": name, "args": args_value(&args)}})],
                out,
            );
        }
    }

    pub(crate) fn write(&mut self, ev: Event, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match ev {
            Event::Start { id, model } => {
                self.id = id;
                self.model = model;
            }
            Event::Text(t) if t.is_empty() => {}
            Event::Text(t) => {
                self.flush_call(out);
                self.parts(vec![json!({"text": t})], out);
            }
            Event::Thinking(t) => {
                self.flush_call(out);
                self.parts(vec![json!({"text": t, "thought": true})], out);
            }
            Event::Signature(_) => {}
            Event::ToolStart { id, name, .. } => {
                self.flush_call(out);
                self.call = Some((id, name, String::new()));
            }
            Event::ToolArgs { json, .. } => {
                if let Some((_, _, args)) = &mut self.call {
                    args.push_str(&json);
                }
            }
            Event::Stop(s) => self.stop = Some(s),
            Event::Usage(u) => self.usage = merge(self.usage, u),
            Event::Error { kind, message } => {
                self.ended = true;
                let status = match super::anthropic::error_type(&kind) {
                    "invalid_request_error" => (400, "INVALID_ARGUMENT"),
                    "rate_limit_error" => (429, "RESOURCE_EXHAUSTED"),
                    "overloaded_error" => (503, "UNAVAILABLE"),
                    _ => (500, "INTERNAL"),
                };
                let e =
                    json!({"error": {"code": status.0, "message": message, "status": status.1}});
                self.element(&e, out);
                if self.array {
                    out.push(b']');
                }
            }
            Event::End => self.end(out),
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.flush_call(out);
        self.ended = true;
        let finish = stop_str(self.stop.as_ref().unwrap_or(&Stop::End));
        let c = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": finish, "index": 0}],
                       "usageMetadata": usage_json(self.usage), "modelVersion": self.model, "responseId": self.id});
        self.element(&c, out);
        if self.array {
            out.push(b']');
        }
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.ended && self.stop.is_some() {
            self.end(out);
        }
    }
}
