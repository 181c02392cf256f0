//! Gemini `generateContent` / `streamGenerateContent` (a JSON array, or SSE with
//! `alt=sse`), with Google's error envelope (`error.status`, `details[]`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::respond::{json_response, key_of};
use crate::{Behaviour, Sim};

fn google_error(
    status: u16,
    gstatus: &str,
    message: &str,
    details: Value,
    extra: &[(&str, String)],
) -> Response<Body> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({"error":{"code":status,"message":message,"status":gstatus,"details":details}}),
        extra,
    )
}

#[derive(Deserialize, Default)]
pub(crate) struct GeminiQuery {
    pub(crate) alt: Option<String>,
    pub(crate) key: Option<String>,
}

pub(crate) async fn gemini(
    State(sim): State<Sim>,
    Path(model_action): Path<String>,
    axum::extract::Query(q): axum::extract::Query<GeminiQuery>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response<Body> {
    let key = q.key.clone().unwrap_or_else(|| key_of(&headers));
    sim.record(&key, &body);
    let (behaviour, incident, events) = sim.take(&key, false);
    let (model, action) = model_action
        .split_once(':')
        .unwrap_or((model_action.as_str(), "generateContent"));
    let info = |reason: &str| json!([{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":reason,"domain":"googleapis.com"}]);
    let err = if incident {
        Some(google_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            info("API_KEY_INVALID"),
            &[],
        ))
    } else {
        match &behaviour {
            Behaviour::Revoked => Some(google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", info("API_KEY_INVALID"), &[])),
            Behaviour::ExpiredToken => Some(google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", info("ACCESS_TOKEN_EXPIRED"), &[])),
            Behaviour::NoCredit => Some(google_error(402, "RESOURCE_EXHAUSTED", "Your prepayment credits are depleted.", json!([]), &[])),
            Behaviour::RateLimited { retry_after } => Some(google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                json!([{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel","quotaValue":"10"}]},
                       {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":format!("{}s", retry_after.unwrap_or(1))}]),
                &[],
            )),
            Behaviour::Overloaded => Some(google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", json!([]), &[])),
            Behaviour::ServerError => Some(google_error(500, "INTERNAL", "An internal error has occurred.", json!([]), &[])),
            Behaviour::ContextOverflow => Some(google_error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
                json!([]),
                &[],
            )),
            Behaviour::ModelNotFound => Some(google_error(404, "NOT_FOUND", &format!("models/{model} is not found for API version v1beta"), json!([]), &[])),
            Behaviour::BadRequest => Some(google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unknown name \"foo\".", json!([]), &[])),
            Behaviour::ContentFilter => Some(json_response(StatusCode::OK, json!({"promptFeedback":{"blockReason":"SAFETY"}}), &[])),
            _ => None,
        }
    };
    if let Some(r) = err {
        return r;
    }
    let part = |text: String, finish: bool| {
        let mut cand = json!({"content":{"parts":[{"text":text}],"role":"model"},"index":0});
        if finish {
            cand["finishReason"] = json!("STOP");
        }
        json!({"candidates":[cand],"modelVersion":model,"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":4,"totalTokenCount":7}})
    };
    let sse = q.alt.as_deref() == Some("sse");
    let stream = action == "streamGenerateContent";
    if let Some(answer) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|req| tool_turn(&req, model))
    {
        return match (stream, sse) {
            (false, _) => json_response(StatusCode::OK, answer, &[]),
            (true, true) => {
                crate::stream::sse_response(Body::from(format!("data: {answer}\r\n\r\n")))
            }
            (true, false) => json_response(StatusCode::OK, json!([answer]), &[]),
        };
    }
    if !stream {
        return json_response(
            StatusCode::OK,
            part("Hello from keyward-sim.".into(), true),
            &[],
        );
    }
    let mut elements: Vec<String> = Vec::new();
    for i in 0..events {
        if let Behaviour::StreamCut { after } = behaviour {
            if i == after {
                break;
            }
        }
        let last = i + 1 == events;
        elements.push(
            part(
                format!("tok{i} "),
                last && behaviour != Behaviour::MissingTerminal,
            )
            .to_string(),
        );
    }
    let cut = matches!(behaviour, Behaviour::StreamCut { after } if after < events);
    let body = if sse {
        elements
            .iter()
            .map(|e| format!("data: {e}\r\n\r\n"))
            .collect::<String>()
    } else if cut {
        format!("[{}", elements.join(",\r\n"))
    } else {
        format!("[{}]", elements.join(",\r\n"))
    };
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static(if sse {
            "text/event-stream"
        } else {
            "application/json"
        }),
    );
    r
}

/// A tool-calling turn in Gemini's shape: a request whose last turn answers a function
/// gets text quoting the answer; one offering functions gets a call of the first, whole,
/// in one chunk (as Gemini streams calls).
fn tool_turn(req: &Value, model: &str) -> Option<Value> {
    let last = req.get("contents")?.as_array()?.last()?;
    let answered = last["parts"].as_array().and_then(|parts| {
        parts
            .iter()
            .find_map(|p| p.get("functionResponse"))
            .map(|r| match &r["response"]["result"] {
                Value::String(s) => s.clone(),
                _ => r["response"].to_string(),
            })
    });
    let part = match answered {
        Some(text) => json!({"text": format!("The tool said: {text}")}),
        None => {
            let name = req["tools"][0]["functionDeclarations"][0]["name"].as_str()?;
            let args: Value = serde_json::from_str(crate::TOOL_ARGUMENTS).unwrap_or_default();
            json!({"functionCall": {"name": name, "args": args}})
        }
    };
    Some(
        json!({"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 10, "totalTokenCount": 40},
                "modelVersion": model}),
    )
}
