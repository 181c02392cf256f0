//! Tool-calling turns, as a real model plays them: a request offering tools whose
//! conversation does not end in a tool result gets a call of the first tool; one that
//! ends in a tool result gets text quoting it. Whole or streamed, in the Anthropic and
//! Chat Completions shapes.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::errors::Shape;
use crate::respond::json_response;
use crate::stream::sse_response;

/// The arguments every sim tool call carries.
pub const TOOL_ARGUMENTS: &str = r#"{"city":"Paris","days":2}"#;

/// What the sim answers a request that offers tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Call the tool of this name.
    Call { name: String, id: String },
    /// Answer with text quoting the tool's result.
    Answer(String),
}

/// The turn for `req` (`None`: no tools offered and no tool result: an ordinary answer).
pub(crate) fn turn(shape: Shape, req: &Value, n: u64) -> Option<Turn> {
    let last = req.get("messages")?.as_array()?.last()?;
    let result = match shape {
        Shape::Anthropic => last
            .get("content")
            .and_then(Value::as_array)
            .and_then(|blocks| blocks.iter().find(|b| b["type"] == "tool_result"))
            .map(|b| match &b["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<String>(),
                _ => String::new(),
            }),
        Shape::OpenAi => (last["role"] == "tool").then(|| match &last["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<String>(),
            _ => String::new(),
        }),
    };
    if let Some(r) = result {
        return Some(Turn::Answer(format!("The tool said: {r}")));
    }
    let first = req.get("tools")?.as_array()?.first()?;
    let name = match shape {
        Shape::Anthropic => first["name"].as_str()?,
        Shape::OpenAi => first["function"]["name"].as_str()?,
    };
    let id = match shape {
        Shape::Anthropic => format!("toolu_sim_{n}"),
        Shape::OpenAi => format!("call_sim_{n}"),
    };
    Some(Turn::Call {
        name: name.to_owned(),
        id,
    })
}

/// The answer to a tool turn.
pub(crate) fn respond(shape: Shape, model: &str, stream: bool, turn: &Turn) -> Response<Body> {
    if stream {
        return sse_response(Body::from(streamed(shape, model, turn)));
    }
    let body = match (shape, turn) {
        (Shape::Anthropic, Turn::Call { name, id }) => json!({
            "id": "msg_sim_tool", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": id, "name": name, "input": serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap_or_default()}],
            "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 30, "output_tokens": 12}}),
        (Shape::Anthropic, Turn::Answer(text)) => json!({
            "id": "msg_sim_tool", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 40, "output_tokens": 8}}),
        (Shape::OpenAi, Turn::Call { name, id }) => json!({
            "id": "chatcmpl-sim-tool", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": TOOL_ARGUMENTS}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}}),
        (Shape::OpenAi, Turn::Answer(text)) => json!({
            "id": "chatcmpl-sim-tool", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}}),
    };
    json_response(StatusCode::OK, body, &[])
}

fn streamed(shape: Shape, model: &str, turn: &Turn) -> String {
    let (a, b) = TOOL_ARGUMENTS.split_at(TOOL_ARGUMENTS.len() / 2);
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-sim-tool", "object": "chat.completion.chunk", "created": 1, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut out = String::new();
    match shape {
        Shape::Anthropic => {
            out.push_str(&ev("message_start", json!({"type": "message_start", "message": {"id": "msg_sim_tool", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 30, "output_tokens": 1}}})));
            let stop = match turn {
                Turn::Call { name, id } => {
                    out.push_str(&ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})));
                    for piece in [a, b] {
                        out.push_str(&ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}})));
                    }
                    "tool_use"
                }
                Turn::Answer(text) => {
                    out.push_str(&ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
                    for word in text.split_inclusive(' ') {
                        out.push_str(&ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}})));
                    }
                    "end_turn"
                }
            };
            out.push_str(&ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            out.push_str(&ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 12}})));
            out.push_str(&ev("message_stop", json!({"type": "message_stop"})));
        }
        Shape::OpenAi => {
            out.push_str(&chunk(
                json!({"role": "assistant", "content": null}),
                Value::Null,
            ));
            let finish = match turn {
                Turn::Call { name, id } => {
                    out.push_str(&chunk(json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null));
                    for piece in [a, b] {
                        out.push_str(&chunk(
                            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                            Value::Null,
                        ));
                    }
                    "tool_calls"
                }
                Turn::Answer(text) => {
                    for word in text.split_inclusive(' ') {
                        out.push_str(&chunk(json!({"content": word}), Value::Null));
                    }
                    "stop"
                }
            };
            out.push_str(&chunk(json!({}), json!(finish)));
            out.push_str(&format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({"id": "chatcmpl-sim-tool", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [],
                       "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}})
            ));
        }
    }
    out
}
