//! Azure OpenAI: deployment URLs with `api-version`, the `api-key` header, and Azure's own
//! 404 and 401 answers in front of the OpenAI-shaped handlers.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Response, StatusCode};
use bytes::Bytes;
use serde_json::json;

use crate::errors::Shape;
use crate::inference::inference;
use crate::openai::openai_embeddings;
use crate::probes::models;
use crate::respond::{json_response, key_of};
use crate::{Behaviour, Sim};

/// Azure OpenAI: the deployment is in the path, `api-version` is required, the key comes
/// in `api-key`, and an invalid or revoked key gets Azure's own 401 shape. Everything
/// else is OpenAI-shaped, as Azure serves it.
pub(crate) async fn azure_chat(
    State(sim): State<Sim>,
    Path(_deployment): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Some(r) = azure_front(&sim, query.as_deref(), &headers, false) {
        return r;
    }
    inference(sim, Shape::OpenAi, &headers, &body).await
}

pub(crate) async fn azure_embeddings(
    State(sim): State<Sim>,
    Path(_deployment): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Some(r) = azure_front(&sim, query.as_deref(), &headers, false) {
        return r;
    }
    openai_embeddings(State(sim), headers, body).await
}

/// Azure's model list, the key-validity probe's endpoint.
pub(crate) async fn azure_models(
    State(sim): State<Sim>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response<Body> {
    if let Some(r) = azure_front(&sim, query.as_deref(), &headers, true) {
        return r;
    }
    models(State(sim), headers).await
}

/// Azure's answers that differ from OpenAI's: a missing `api-version`, and a key that is
/// not accepted (revoked, or a provider-wide incident).
fn azure_front(
    sim: &Sim,
    query: Option<&str>,
    headers: &HeaderMap,
    probe: bool,
) -> Option<Response<Body>> {
    if !query
        .unwrap_or("")
        .split('&')
        .any(|p| p.starts_with("api-version="))
    {
        return Some(json_response(
            StatusCode::NOT_FOUND,
            json!({"error":{"code":"404","message":"Resource not found"}}),
            &[],
        ));
    }
    let key = key_of(headers);
    let (rejected, incident) = {
        let inner = sim.lock();
        let b = inner.keys.get(&key).unwrap_or(&inner.default);
        (*b == Behaviour::Revoked, inner.incident)
    };
    if !(rejected || incident) {
        return None;
    }
    let _ = sim.take(&key, probe);
    Some(json_response(
        StatusCode::UNAUTHORIZED,
        json!({"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}),
        &[],
    ))
}
