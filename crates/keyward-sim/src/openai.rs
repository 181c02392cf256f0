//! The OpenAI endpoints besides Chat Completions: the Responses API (whole or as its
//! SSE events) and Embeddings.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode};
use bytes::Bytes;
use serde_json::json;

use crate::errors::{early_error, Shape};
use crate::inference::ChatRequest;
use crate::respond::{json_response, key_of};
use crate::stream::sse_response;
use crate::{Behaviour, Sim};

pub(crate) async fn openai_responses(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let key = key_of(&headers);
    sim.record(&key, &body);
    let (behaviour, incident, events) = sim.take(&key, false);
    let req: ChatRequest = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(r) = early_error(Shape::OpenAi, &behaviour, incident) {
        return r;
    }
    if let Some(r) = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| responses_tool_turn(&v, &req.model, req.stream))
    {
        return r;
    }
    let done = json!({"id":"resp_sim","object":"response","status":"completed","model":req.model,
                      "output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello from keyward-sim."}]}],
                      "usage":{"input_tokens":12,"output_tokens":6,"total_tokens":18}});
    if !req.stream {
        return json_response(StatusCode::OK, done, &[]);
    }
    let mut text = format!(
        "event: response.created\ndata: {}\n\n",
        json!({"type":"response.created","response":{"id":"resp_sim","status":"in_progress"}})
    );
    for i in 0..events {
        if let Behaviour::StreamCut { after } = behaviour {
            if i == after {
                return sse_response(Body::from(text));
            }
        }
        text.push_str(&format!(
            "event: response.output_text.delta\ndata: {}\n\n",
            json!({"type":"response.output_text.delta","delta":format!("tok{i} ")})
        ));
    }
    text.push_str(&format!(
        "event: response.completed\ndata: {}\n\n",
        json!({"type":"response.completed","response":done})
    ));
    sse_response(Body::from(text))
}

pub(crate) async fn openai_embeddings(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let key = key_of(&headers);
    let (behaviour, incident, _) = sim.take(&key, false);
    let req: ChatRequest = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(r) = early_error(Shape::OpenAi, &behaviour, incident) {
        return r;
    }
    json_response(
        StatusCode::OK,
        json!({"object":"list","model":req.model,"data":[{"object":"embedding","index":0,"embedding":[0.25,-0.5,0.125]}],"usage":{"prompt_tokens":3,"total_tokens":3}}),
        &[],
    )
}

/// A tool-calling turn in the Responses shape: input ending in a function call's output
/// gets text quoting it; a request offering functions gets a call of the first.
fn responses_tool_turn(
    req: &serde_json::Value,
    model: &str,
    stream: bool,
) -> Option<Response<Body>> {
    let last = req.get("input")?.as_array()?.last()?;
    let item = if last["type"] == "function_call_output" {
        let text = format!(
            "The tool said: {}",
            last["output"].as_str().unwrap_or_default()
        );
        json!({"type": "message", "id": "msg_sim", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": text, "annotations": []}]})
    } else {
        let name = req["tools"][0]["name"].as_str()?;
        json!({"type": "function_call", "id": "fc_sim", "call_id": "call_sim_resp", "name": name,
               "arguments": crate::TOOL_ARGUMENTS, "status": "completed"})
    };
    let done = json!({"id": "resp_sim_tool", "object": "response", "status": "completed", "model": model,
                      "output": [item.clone()], "usage": {"input_tokens": 30, "output_tokens": 10, "total_tokens": 40}});
    if !stream {
        return Some(json_response(StatusCode::OK, done, &[]));
    }
    let ev = |data: serde_json::Value| {
        format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap_or_default()
        )
    };
    let mut text = ev(
        json!({"type": "response.created", "response": {"id": "resp_sim_tool", "model": model, "status": "in_progress", "output": []}}),
    );
    if item["type"] == "function_call" {
        let mut added = item.clone();
        added["arguments"] = json!("");
        text.push_str(&ev(
            json!({"type": "response.output_item.added", "output_index": 0, "item": added}),
        ));
        let (a, b) = crate::TOOL_ARGUMENTS.split_at(crate::TOOL_ARGUMENTS.len() / 2);
        for piece in [a, b] {
            text.push_str(&ev(json!({"type": "response.function_call_arguments.delta", "item_id": "fc_sim", "output_index": 0, "delta": piece})));
        }
    } else {
        text.push_str(&ev(json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "id": "msg_sim", "role": "assistant", "content": []}})));
        for word in item["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .split_inclusive(' ')
        {
            text.push_str(&ev(json!({"type": "response.output_text.delta", "item_id": "msg_sim", "output_index": 0, "content_index": 0, "delta": word})));
        }
    }
    text.push_str(&ev(
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
    ));
    text.push_str(&ev(json!({"type": "response.completed", "response": done})));
    Some(sse_response(Body::from(text)))
}
