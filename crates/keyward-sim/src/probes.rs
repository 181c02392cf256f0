//! The cheap endpoints probes use: Anthropic `count_tokens` and the models list. They
//! show a rejected key, not credit or model problems.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode};
use serde_json::json;

use crate::errors::{early_error, Shape};
use crate::respond::{json_response, key_of};
use crate::{Behaviour, Sim};

pub(crate) async fn anthropic_count_tokens(
    State(sim): State<Sim>,
    headers: HeaderMap,
) -> Response<Body> {
    let key = key_of(&headers);
    let (behaviour, incident, _) = sim.take(&key, true);
    match early_error(Shape::Anthropic, &behaviour, incident) {
        // Credit and model problems do not show on count_tokens: it is free.
        Some(r)
            if matches!(
                behaviour,
                Behaviour::Revoked | Behaviour::ExpiredToken | Behaviour::Rejected { .. }
            ) || incident =>
        {
            r
        }
        _ => json_response(StatusCode::OK, json!({"input_tokens": 12}), &[]),
    }
}

pub(crate) async fn models(State(sim): State<Sim>, headers: HeaderMap) -> Response<Body> {
    let key = key_of(&headers);
    let (behaviour, incident, _) = sim.take(&key, true);
    let shape = if headers.contains_key("x-api-key") {
        Shape::Anthropic
    } else {
        Shape::OpenAi
    };
    match early_error(shape, &behaviour, incident) {
        Some(r)
            if matches!(
                behaviour,
                Behaviour::Revoked | Behaviour::ExpiredToken | Behaviour::Rejected { .. }
            ) || incident =>
        {
            r
        }
        _ => json_response(
            StatusCode::OK,
            json!({"object":"list","data":[{"id":"sim-model","object":"model"}]}),
            &[],
        ),
    }
}
