//! Anthropic Messages and OpenAI Chat Completions (also served for Azure deployments):
//! one request decided by its key's behaviour, answered whole or streamed.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::errors::{anthropic_error, early_error, openai_error, Shape};
use crate::hostile::{connection_reset, hostile_body};
use crate::respond::{json_response, key_of};
use crate::stream::{stream_response, Answer};
use crate::tools;
use crate::{Behaviour, Sim};

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct ChatRequest {
    pub(crate) model: String,
    pub(crate) stream: bool,
    messages: Vec<Value>,
}

pub(crate) async fn anthropic_messages(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    inference(sim, Shape::Anthropic, &headers, &body).await
}

pub(crate) async fn openai_chat(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    inference(sim, Shape::OpenAi, &headers, &body).await
}

pub(crate) async fn inference(
    sim: Sim,
    shape: Shape,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<Body> {
    let key = key_of(headers);
    let n = sim.record(&key, body);
    let (behaviour, incident, events) = sim.take(&key, false);
    let Ok(req) = serde_json::from_slice::<ChatRequest>(body) else {
        return match shape {
            Shape::Anthropic => {
                anthropic_error(400, "invalid_request_error", "invalid JSON body", &[])
            }
            Shape::OpenAi => {
                openai_error(400, "invalid_request_error", None, "invalid JSON body", &[])
            }
        };
    };
    if let Behaviour::SlowHeaders { ms } = behaviour {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if behaviour == Behaviour::ConnectionReset && !incident {
        return connection_reset();
    }
    if behaviour == Behaviour::RejectsPrefill
        && req
            .messages
            .last()
            .and_then(|m| m.get("role"))
            .and_then(Value::as_str)
            == Some("assistant")
    {
        let msg = "This model does not support assistant message prefill. The conversation must end with a user message.";
        return match shape {
            Shape::Anthropic => anthropic_error(400, "invalid_request_error", msg, &[]),
            Shape::OpenAi => openai_error(400, "invalid_request_error", None, msg, &[]),
        };
    }
    if let Some(r) = early_error(shape, &behaviour, incident) {
        return r;
    }
    if let Some(r) = hostile_body(shape, &behaviour, &key, &req.model, req.stream) {
        return r;
    }
    if let Some(turn) = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| tools::turn(shape, &v, n))
    {
        return tools::respond(shape, &req.model, req.stream, &turn);
    }
    if !req.stream {
        return match shape {
            Shape::Anthropic => json_response(
                StatusCode::OK,
                json!({"id":"msg_sim","type":"message","role":"assistant","model":req.model,
                       "content":[{"type":"text","text":"Hello from keyward-sim."}],
                       "stop_reason":"end_turn","stop_sequence":null,
                       "usage":{"input_tokens":12,"output_tokens":6}}),
                &[
                    ("anthropic-ratelimit-requests-remaining", "999".into()),
                    ("anthropic-ratelimit-requests-limit", "1000".into()),
                ],
            ),
            Shape::OpenAi => json_response(
                StatusCode::OK,
                json!({"id":"chatcmpl-sim","object":"chat.completion","created":1,"model":req.model,
                       "choices":[{"index":0,"message":{"role":"assistant","content":"Hello from keyward-sim."},"finish_reason":"stop"}],
                       "usage":{"prompt_tokens":12,"completion_tokens":6,"total_tokens":18}}),
                &[
                    ("x-ratelimit-remaining-requests", "999".into()),
                    ("x-ratelimit-limit-requests", "1000".into()),
                ],
            ),
        };
    }
    let emitted = sim.emitted.clone();
    let echo = (behaviour == Behaviour::EchoKeyInAnswer).then_some(key);
    let start = prefilled_tokens(&req.messages);
    let answer = Answer {
        text: events,
        tool: sim.tool_call(),
        start,
    };
    stream_response(shape, req.model, behaviour, answer, emitted, echo)
}

/// How many tokens of the simulated answer (`tok0 tok1 …`) a final assistant turn
/// already holds: a prefilled request is answered with the rest, as a provider continues
/// an assistant prefill. Anything else starts from the beginning.
fn prefilled_tokens(messages: &[Value]) -> usize {
    let Some(last) = messages
        .last()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
    else {
        return 0;
    };
    let text = match last.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => return 0,
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let ours = words
        .iter()
        .enumerate()
        .all(|(i, w)| *w == format!("tok{i}"));
    if ours {
        words.len()
    } else {
        0
    }
}
