//! OpenAI Responses: requests (input items), answers (output items) and stream events,
//! read into and written from the neutral form. A translated request is never stored at
//! the target (`store: false`): a caller of another API cannot continue it by id.

use serde_json::{json, Map, Value};

use super::anthropic::merge;
use super::chat::{function_tool, image_of_url, push_turn, tool_choice_word, url_of_image};
use super::ir::{
    Effort, Event, JsonOutput, Part, Reasoning, Request, Response, Role, Stop, ToolChoice, Usage,
};
use super::json::{f64_of, has, str_of, u64_of};
use super::{malformed, Losses, Options, TranslateError};
use crate::stream::Api;

const API: Api = Api::Responses;

fn content_parts(content: Option<&Value>, losses: &mut Losses) -> Vec<Part> {
    match content {
        Some(Value::String(s)) => vec![Part::Text(s.clone())],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match str_of(p, "type") {
                Some("input_text" | "output_text" | "text" | "refusal") => str_of(p, "text")
                    .or_else(|| str_of(p, "refusal"))
                    .map(|t| Part::Text(t.to_owned())),
                Some("input_image") => match str_of(p, "image_url") {
                    Some(u) => Some(Part::Image(image_of_url(u))),
                    None => {
                        losses.drop("file references");
                        None
                    }
                },
                _ => {
                    losses.drop("files");
                    None
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn read_request(
    v: &Map<String, Value>,
    losses: &mut Losses,
) -> Result<Request, TranslateError> {
    let v = Value::Object(v.clone());
    let mut r = Request::default();
    if let Some(i) = str_of(&v, "instructions") {
        r.system.push(i.to_owned());
    }
    match v.get("input") {
        Some(Value::String(s)) => r.messages.push(super::ir::Message {
            role: Role::User,
            parts: vec![Part::Text(s.clone())],
        }),
        Some(Value::Array(items)) => {
            for item in items {
                read_item(item, &mut r, losses);
            }
        }
        _ => return Err(malformed(API, "no `input`")),
    }
    for t in v
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match (str_of(t, "type"), str_of(t, "name")) {
            (Some("function"), Some(name)) => r.tools.push(function_tool(t, name)),
            _ => losses.drop("built-in tools"),
        }
    }
    r.tool_choice = match v.get("tool_choice") {
        Some(Value::String(s)) => tool_choice_word(s),
        Some(o @ Value::Object(_)) if str_of(o, "type") == Some("function") => {
            str_of(o, "name").map(|n| ToolChoice::Named(n.to_owned()))
        }
        _ => None,
    };
    r.parallel_tool_calls = v.get("parallel_tool_calls").and_then(Value::as_bool);
    r.max_tokens = u64_of(&v, "max_output_tokens");
    r.temperature = f64_of(&v, "temperature");
    r.top_p = f64_of(&v, "top_p");
    r.user = str_of(&v, "user")
        .or_else(|| str_of(&v, "safety_identifier"))
        .map(str::to_owned);
    r.reasoning = v
        .get("reasoning")
        .and_then(|re| str_of(re, "effort"))
        .and_then(Effort::parse)
        .map(Reasoning::Effort);
    if let Some(f) = v.get("text").and_then(|t| t.get("format")) {
        r.json = match str_of(f, "type") {
            Some("json_schema") => Some(JsonOutput {
                name: str_of(f, "name").unwrap_or("output").to_owned(),
                schema: f.get("schema").cloned(),
                strict: f.get("strict").and_then(Value::as_bool),
            }),
            Some("json_object") => Some(JsonOutput {
                name: "output".into(),
                schema: None,
                strict: None,
            }),
            _ => None,
        };
    }
    for (key, feature) in [
        ("previous_response_id", "previous_response_id"),
        ("conversation", "conversation"),
        ("prompt", "stored prompts"),
        ("background", "background"),
    ] {
        if has(&v, key) && v.get(key) != Some(&Value::Bool(false)) {
            losses.refuse(feature);
        }
    }
    for (key, feature) in [
        ("top_logprobs", "logprobs"),
        ("include", "include"),
        ("truncation", "truncation"),
        ("service_tier", "service_tier"),
    ] {
        if has(&v, key) {
            losses.drop(feature);
        }
    }
    Ok(r)
}

fn read_item(item: &Value, r: &mut Request, losses: &mut Losses) {
    match str_of(item, "type") {
        Some("message") | None => match str_of(item, "role") {
            Some("system" | "developer") => {
                let text: String = content_parts(item.get("content"), losses)
                    .into_iter()
                    .filter_map(|p| match p {
                        Part::Text(t) => Some(t),
                        _ => None,
                    })
                    .collect();
                r.system.push(text);
            }
            Some("assistant") => {
                let parts = content_parts(item.get("content"), losses);
                push_turn(&mut r.messages, Role::Assistant, parts);
            }
            _ => {
                let parts = content_parts(item.get("content"), losses);
                push_turn(&mut r.messages, Role::User, parts);
            }
        },
        Some("function_call") => {
            let part = Part::ToolCall {
                id: str_of(item, "call_id").unwrap_or_default().to_owned(),
                name: str_of(item, "name").unwrap_or_default().to_owned(),
                arguments: str_of(item, "arguments").unwrap_or("{}").to_owned(),
            };
            push_turn(&mut r.messages, Role::Assistant, vec![part]);
        }
        Some("function_call_output") => {
            let content = match item.get("output") {
                Some(Value::String(s)) => vec![Part::Text(s.clone())],
                other => content_parts(other, losses),
            };
            let part = Part::ToolResult {
                id: str_of(item, "call_id").unwrap_or_default().to_owned(),
                name: None,
                content,
                is_error: false,
            };
            push_turn(&mut r.messages, Role::User, vec![part]);
        }
        Some("reasoning") => losses.drop("reasoning items"),
        Some("item_reference") => losses.refuse("item references"),
        Some(_) => losses.drop("built-in tools"),
    }
}

pub(crate) fn write_request(
    r: &super::ir::Request,
    model: &str,
    stream: bool,
    losses: &mut Losses,
) -> Result<Value, TranslateError> {
    let mut input = Vec::new();
    for m in &r.messages {
        let mut content = Vec::new();
        for p in &m.parts {
            match (m.role, p) {
                (_, Part::Text(t)) if t.is_empty() => {}
                (Role::User, Part::Text(t)) => {
                    content.push(json!({"type": "input_text", "text": t}))
                }
                (Role::Assistant, Part::Text(t)) => {
                    content.push(json!({"type": "output_text", "text": t}))
                }
                (Role::User, Part::Image(i)) => {
                    content.push(json!({"type": "input_image", "image_url": url_of_image(i)}))
                }
                (
                    _,
                    Part::ToolCall {
                        id,
                        name,
                        arguments,
                    },
                ) => {
                    flush(&mut input, m.role, &mut content);
                    input.push(json!({"type": "function_call", "call_id": id, "name": name, "arguments": arguments}));
                }
                (
                    _,
                    Part::ToolResult {
                        id,
                        content: inner,
                        is_error,
                        ..
                    },
                ) => {
                    let mut text = String::new();
                    if *is_error {
                        losses.note("tool error flag", "written into the result text");
                        text.push_str("Error: ");
                    }
                    for c in inner {
                        match c {
                            Part::Text(t) => text.push_str(t),
                            _ => losses.drop("images in tool results"),
                        }
                    }
                    input.push(
                        json!({"type": "function_call_output", "call_id": id, "output": text}),
                    );
                }
                (_, Part::Thinking { .. }) => losses.drop("reasoning history"),
                (Role::Assistant, Part::Image(_)) => {}
            }
        }
        flush(&mut input, m.role, &mut content);
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let system: Vec<&str> = r
        .system
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if !system.is_empty() {
        out.insert("instructions".into(), json!(system.join("\n\n")));
    }
    out.insert("input".into(), Value::Array(input));
    if !r.tools.is_empty() {
        let tools: Vec<Value> = r
            .tools
            .iter()
            .map(|t| {
                // Strict mode would reject schemas written for other providers.
                let mut o = json!({"type": "function", "name": t.name, "parameters": t.schema, "strict": false});
                if let Some(d) = &t.description {
                    o["description"] = json!(d);
                }
                o
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
                    ToolChoice::Named(n) => json!({"type": "function", "name": n}),
                },
            );
        }
        if let Some(p) = r.parallel_tool_calls {
            out.insert("parallel_tool_calls".into(), json!(p));
        }
    }
    if let Some(n) = r.max_tokens {
        out.insert("max_output_tokens".into(), json!(n));
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
        losses.drop("stop sequences");
    }
    if let Some(u) = &r.user {
        out.insert("user".into(), json!(u));
    }
    if let Some(re) = r.reasoning {
        out.insert("reasoning".into(), json!({"effort": re.effort().as_str()}));
    }
    if let Some(j) = &r.json {
        let f = match &j.schema {
            Some(schema) => {
                let mut f = json!({"type": "json_schema", "name": j.name, "schema": schema});
                if let Some(strict) = j.strict {
                    f["strict"] = json!(strict);
                }
                f
            }
            None => json!({"type": "json_object"}),
        };
        out.insert("text".into(), json!({"format": f}));
    }
    out.insert("store".into(), json!(false));
    if stream {
        out.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(out))
}

/// Ends a message item of `role` with the content gathered so far.
fn flush(input: &mut Vec<Value>, role: Role, content: &mut Vec<Value>) {
    if content.is_empty() {
        return;
    }
    let role = match role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    input.push(json!({"type": "message", "role": role, "content": std::mem::take(content)}));
}

fn usage_of(u: &Value) -> Usage {
    Usage {
        input: u64_of(u, "input_tokens").unwrap_or(0),
        output: u64_of(u, "output_tokens").unwrap_or(0),
        cached: u
            .get("input_tokens_details")
            .and_then(|d| u64_of(d, "cached_tokens"))
            .unwrap_or(0),
    }
}

fn usage_json(u: Usage) -> Value {
    json!({"input_tokens": u.input, "output_tokens": u.output, "total_tokens": u.input + u.output,
           "input_tokens_details": {"cached_tokens": u.cached}, "output_tokens_details": {"reasoning_tokens": 0}})
}

/// Why a response stopped, from its status and output.
fn stop_of(resp: &Value, called: bool) -> Stop {
    let reason = resp
        .get("incomplete_details")
        .and_then(|d| str_of(d, "reason"));
    match (str_of(resp, "status"), reason) {
        (Some("incomplete"), Some("max_output_tokens")) => Stop::MaxTokens,
        (Some("incomplete"), Some("content_filter")) => Stop::ContentFilter,
        _ if called => Stop::ToolUse,
        _ => Stop::End,
    }
}

pub(crate) fn read_response(v: &Map<String, Value>) -> Result<Response, TranslateError> {
    let v = Value::Object(v.clone());
    let Some(Value::Array(output)) = v.get("output") else {
        return Err(malformed(API, "an answer without `output`"));
    };
    let mut parts = Vec::new();
    let mut refused = false;
    for item in output {
        match str_of(item, "type") {
            Some("message") => {
                for c in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = str_of(c, "text") {
                        parts.push(Part::Text(t.to_owned()));
                    } else if let Some(t) = str_of(c, "refusal") {
                        refused = true;
                        parts.push(Part::Text(t.to_owned()));
                    }
                }
            }
            Some("function_call") => parts.push(Part::ToolCall {
                id: str_of(item, "call_id").unwrap_or_default().to_owned(),
                name: str_of(item, "name").unwrap_or_default().to_owned(),
                arguments: str_of(item, "arguments").unwrap_or("{}").to_owned(),
            }),
            Some("reasoning") => {
                let text: String = item
                    .get("summary")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| str_of(s, "text"))
                    .collect();
                if !text.is_empty() {
                    parts.push(Part::Thinking {
                        text,
                        signature: None,
                    });
                }
            }
            _ => {}
        }
    }
    let called = parts.iter().any(|p| matches!(p, Part::ToolCall { .. }));
    Ok(Response {
        id: str_of(&v, "id").unwrap_or("resp_keyward").to_owned(),
        model: str_of(&v, "model").unwrap_or_default().to_owned(),
        stop: if refused {
            Stop::ContentFilter
        } else {
            stop_of(&v, called)
        },
        parts,
        usage: v.get("usage").map(usage_of).unwrap_or_default(),
    })
}

fn message_item(id: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "status": "completed", "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": "completed"})
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [{"type": "summary_text", "text": text}]})
}

/// The response object: `output` items, status after `stop`.
fn response_json(
    id: &str,
    model: &str,
    created: u64,
    output: Vec<Value>,
    stop: &Stop,
    usage: Usage,
) -> Value {
    let (status, incomplete) = match stop {
        Stop::MaxTokens => ("incomplete", json!({"reason": "max_output_tokens"})),
        Stop::ContentFilter => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    };
    json!({"id": id, "object": "response", "created_at": created, "status": status, "model": model,
           "output": output, "usage": usage_json(usage), "incomplete_details": incomplete, "error": null,
           "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "store": false})
}

pub(crate) fn write_response(r: &Response, opts: &Options) -> Value {
    let mut output = Vec::new();
    for (i, p) in r.parts.iter().enumerate() {
        match p {
            Part::Text(t) => output.push(message_item(&format!("msg_{i}"), t)),
            Part::Thinking { text, .. } => output.push(reasoning_item(&format!("rs_{i}"), text)),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => output.push(call_item(&format!("fc_{i}"), id, name, arguments)),
            Part::Image(_) | Part::ToolResult { .. } => {}
        }
    }
    response_json(&r.id, &r.model, opts.created, output, &r.stop, r.usage)
}

/// Reads Responses stream events.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    ended: bool,
}

impl Reader {
    pub(crate) fn read(&mut self, name: Option<&str>, v: &Value, out: &mut Vec<Event>) {
        if self.ended {
            return;
        }
        let slot = u64_of(v, "output_index").unwrap_or(0);
        let delta = || str_of(v, "delta").unwrap_or_default().to_owned();
        match str_of(v, "type").or(name).unwrap_or_default() {
            "response.created" => {
                let r = v.get("response").unwrap_or(&Value::Null);
                out.push(Event::Start {
                    id: str_of(r, "id").unwrap_or("resp_keyward").to_owned(),
                    model: str_of(r, "model").unwrap_or_default().to_owned(),
                });
            }
            "response.output_item.added" => {
                let item = v.get("item").unwrap_or(&Value::Null);
                if str_of(item, "type") == Some("function_call") {
                    out.push(Event::ToolStart {
                        slot,
                        id: str_of(item, "call_id").unwrap_or_default().to_owned(),
                        name: str_of(item, "name").unwrap_or_default().to_owned(),
                    });
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                out.push(Event::Text(delta()))
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                out.push(Event::Thinking(delta()));
            }
            "response.function_call_arguments.delta" => out.push(Event::ToolArgs {
                slot,
                json: delta(),
            }),
            "response.completed" | "response.incomplete" => {
                let r = v.get("response").unwrap_or(&Value::Null);
                let called = r
                    .get("output")
                    .and_then(Value::as_array)
                    .is_some_and(|o| o.iter().any(|i| str_of(i, "type") == Some("function_call")));
                if let Some(u) = r.get("usage") {
                    out.push(Event::Usage(usage_of(u)));
                }
                out.push(Event::Stop(stop_of(r, called)));
                out.push(Event::End);
                self.ended = true;
            }
            "response.failed" | "error" => {
                let e = v.get("response").and_then(|r| r.get("error")).unwrap_or(v);
                out.push(Event::Error {
                    kind: str_of(e, "code")
                        .or_else(|| str_of(e, "type"))
                        .unwrap_or("server_error")
                        .to_owned(),
                    message: str_of(e, "message").unwrap_or_default().to_owned(),
                });
                self.ended = true;
            }
            _ => {}
        }
    }
}

/// The output item being written.
#[derive(Debug)]
enum Open {
    Message {
        id: String,
        text: String,
    },
    Reasoning {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        args: String,
        slot: u64,
    },
}

/// Writes neutral stream events as Responses events, for a Responses caller. The
/// terminal `response.completed` carries the whole response, as the API defines.
#[derive(Debug)]
pub(crate) struct Writer {
    created: u64,
    id: String,
    model: String,
    seq: u64,
    started: bool,
    ended: bool,
    open: Option<Open>,
    output: Vec<Value>,
    stop: Option<Stop>,
    usage: Usage,
}

impl Writer {
    pub(crate) fn new(created: u64) -> Writer {
        Writer {
            created,
            id: "resp_keyward".into(),
            model: String::new(),
            seq: 0,
            started: false,
            ended: false,
            open: None,
            output: Vec::new(),
            stop: None,
            usage: Usage::default(),
        }
    }

    fn event(&mut self, ty: &str, mut data: Value, out: &mut Vec<u8>) {
        data["type"] = json!(ty);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.extend_from_slice(format!("event: {ty}\ndata: {data}\n\n").as_bytes());
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let mut r = response_json(
            &self.id,
            &self.model,
            self.created,
            Vec::new(),
            &Stop::End,
            Usage::default(),
        );
        r["status"] = json!("in_progress");
        self.event("response.created", json!({"response": r.clone()}), out);
        self.event("response.in_progress", json!({"response": r}), out);
    }

    fn index(&self) -> usize {
        self.output.len()
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let index = self.index();
        let item = match self.open.take() {
            None => return,
            Some(Open::Message { id, text }) => {
                self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                    out,
                );
                self.event("response.content_part.done", json!({"item_id": id, "output_index": index, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}), out);
                message_item(&id, &text)
            }
            Some(Open::Reasoning { id, text }) => {
                self.event(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                    out,
                );
                reasoning_item(&id, &text)
            }
            Some(Open::Call {
                id,
                call_id,
                name,
                args,
                ..
            }) => {
                self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": args}),
                    out,
                );
                call_item(&id, &call_id, &name, &args)
            }
        };
        self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item.clone()}),
            out,
        );
        self.output.push(item);
    }

    pub(crate) fn write(&mut self, ev: Event, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if let Event::Start { id, model } = &ev {
            self.id.clone_from(id);
            self.model.clone_from(model);
        }
        if !matches!(ev, Event::Usage(_) | Event::Error { .. }) {
            self.start(out);
        }
        let index = self.index();
        match ev {
            Event::Start { .. } | Event::Signature(_) => {}
            Event::Text(t) if t.is_empty() => {}
            Event::Text(t) => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    self.close(out);
                    let id = format!("msg_{}", self.index());
                    let index = self.index();
                    self.event("response.output_item.added", json!({"output_index": index, "item": {"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}}), out);
                    self.event("response.content_part.added", json!({"item_id": id, "output_index": index, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}), out);
                    self.open = Some(Open::Message {
                        id,
                        text: String::new(),
                    });
                }
                let index = self.index();
                if let Some(Open::Message { id, text }) = &mut self.open {
                    text.push_str(&t);
                    let id = id.clone();
                    self.event("response.output_text.delta", json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t}), out);
                }
            }
            Event::Thinking(t) => {
                if !matches!(self.open, Some(Open::Reasoning { .. })) {
                    self.close(out);
                    let id = format!("rs_{}", self.index());
                    let index = self.index();
                    self.event("response.output_item.added", json!({"output_index": index, "item": {"type": "reasoning", "id": id, "summary": []}}), out);
                    self.open = Some(Open::Reasoning {
                        id,
                        text: String::new(),
                    });
                }
                let index = self.index();
                if let Some(Open::Reasoning { id, text }) = &mut self.open {
                    text.push_str(&t);
                    let id = id.clone();
                    self.event("response.reasoning_summary_text.delta", json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": t}), out);
                }
            }
            Event::ToolStart {
                slot,
                id: call_id,
                name,
            } => {
                self.close(out);
                let index = self.index();
                let id = format!("fc_{index}");
                self.event("response.output_item.added", json!({"output_index": index, "item": {"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": "", "status": "in_progress"}}), out);
                self.open = Some(Open::Call {
                    id,
                    call_id,
                    name,
                    args: String::new(),
                    slot,
                });
            }
            Event::ToolArgs { slot, json } => {
                if let Some(Open::Call {
                    id, args, slot: s, ..
                }) = &mut self.open
                {
                    if *s == slot && !json.is_empty() {
                        args.push_str(&json);
                        let id = id.clone();
                        self.event(
                            "response.function_call_arguments.delta",
                            json!({"item_id": id, "output_index": index, "delta": json}),
                            out,
                        );
                    }
                }
            }
            Event::Stop(s) => self.stop = Some(s),
            Event::Usage(u) => self.usage = merge(self.usage, u),
            Event::Error { kind, message } => {
                self.ended = true;
                let mut r = response_json(
                    &self.id,
                    &self.model,
                    self.created,
                    Vec::new(),
                    &Stop::End,
                    self.usage,
                );
                r["status"] = json!("failed");
                r["error"] = json!({"code": kind, "message": message});
                self.event("response.failed", json!({"response": r}), out);
            }
            Event::End => self.end(out),
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.close(out);
        self.ended = true;
        let stop = self.stop.clone().unwrap_or_default();
        let output = std::mem::take(&mut self.output);
        let r = response_json(
            &self.id,
            &self.model,
            self.created,
            output,
            &stop,
            self.usage,
        );
        let ty = if r["status"] == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.event(ty, json!({"response": r}), out);
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.ended && self.stop.is_some() {
            self.end(out);
        }
    }
}
