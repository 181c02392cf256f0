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
