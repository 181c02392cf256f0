//! Answers that misbehave in their body rather than their status: truncated, dripping,
//! huge, HTML, echoing the key, or a connection reset before any byte.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::errors::{anthropic_error, openai_error, Shape};
use crate::respond::json_response;
use crate::Behaviour;

/// The answer of a behaviour that misbehaves in its body (truncated, dripping, huge,
/// HTML, echoing the key), if it is one. The body ones apply to non-streaming requests.
pub(crate) fn hostile_body(
    shape: Shape,
    b: &Behaviour,
    key: &str,
    model: &str,
    stream: bool,
) -> Option<Response<Body>> {
    let success = || {
        match shape {
        Shape::Anthropic => json!({"id":"msg_sim","type":"message","role":"assistant","model":model,
               "content":[{"type":"text","text":"Hello from keyward-sim."}],
               "stop_reason":"end_turn","stop_sequence":null,
               "usage":{"input_tokens":12,"output_tokens":6}}),
        Shape::OpenAi => json!({"id":"chatcmpl-sim","object":"chat.completion","created":1,"model":model,
               "choices":[{"index":0,"message":{"role":"assistant","content":"Hello from keyward-sim."},"finish_reason":"stop"}],
               "usage":{"prompt_tokens":12,"completion_tokens":6,"total_tokens":18}}),
    }
    .to_string()
    .into_bytes()
    };
    let with_length = |body: Body, len: usize, ty: &'static str| {
        let mut r = Response::new(body);
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static(ty));
        r.headers_mut()
            .insert("content-length", HeaderValue::from(len));
        r
    };
    match b {
        Behaviour::EchoKey { status } => {
            let (status, ty, code, message) = if *status == 401 {
                (401, "invalid_request_error", "invalid_api_key", format!("Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys."))
            } else {
                (
                    400,
                    "invalid_request_error",
                    "invalid_value",
                    format!(
                        "Invalid request made with API key {key}: messages[0].role is invalid."
                    ),
                )
            };
            Some(match shape {
                Shape::Anthropic => anthropic_error(status, ty, &message, &[]),
                Shape::OpenAi => openai_error(status, ty, Some(code), &message, &[]),
            })
        }
        Behaviour::HugeError { bytes } => {
            let message = format!(
                "messages: roles must alternate between \"user\" and \"assistant\". {}",
                "x".repeat(*bytes)
            );
            Some(match shape {
                Shape::Anthropic => anthropic_error(400, "invalid_request_error", &message, &[]),
                Shape::OpenAi => openai_error(
                    400,
                    "invalid_request_error",
                    Some("invalid_value"),
                    &message,
                    &[],
                ),
            })
        }
        _ if stream => None,
        Behaviour::EchoKeyInAnswer => {
            let mut v: Value = serde_json::from_slice(&success()).unwrap_or_default();
            let text = format!("Your key is {key}.");
            match shape {
                Shape::Anthropic => v["content"][0]["text"] = json!(text),
                Shape::OpenAi => v["choices"][0]["message"]["content"] = json!(text),
            }
            Some(json_response(StatusCode::OK, v, &[]))
        }
        Behaviour::ShortBody { bytes } => {
            let body = success();
            let len = body.len();
            let cut = Bytes::from(body).slice(..(*bytes).min(len.saturating_sub(1)));
            // The headers and the first bytes go out; then the stream ends before the
            // promised length, and hyper closes the connection.
            let s = futures_util::stream::unfold(Some(cut), |cut| async move {
                match cut {
                    Some(c) => Some((Ok::<Bytes, std::io::Error>(c), None)),
                    None => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        None
                    }
                }
            });
            Some(with_length(Body::from_stream(s), len, "application/json"))
        }
        Behaviour::DripBody { ms } => {
            let body = success();
            let len = body.len();
            let every = Duration::from_millis(*ms);
            let s = futures_util::stream::unfold(0usize, move |i| {
                let byte = body.get(i).copied();
                async move {
                    let byte = byte?;
                    if i > 0 {
                        tokio::time::sleep(every).await;
                    }
                    Some((Ok::<Bytes, std::io::Error>(Bytes::from(vec![byte])), i + 1))
                }
            });
            Some(with_length(Body::from_stream(s), len, "application/json"))
        }
        Behaviour::HugeBody { bytes } => {
            // `{"…success…","padding":"xxxx…"}` in 64 KiB pieces.
            let mut head = success();
            head.pop();
            head.extend_from_slice(b",\"padding\":\"");
            let pad = bytes.saturating_sub(head.len() + 2);
            let len = head.len() + pad + 2;
            const PIECE: usize = 64 * 1024;
            let pieces = pad.div_ceil(PIECE);
            let s = futures_util::stream::iter(
                std::iter::once(Bytes::from(head))
                    .chain(
                        (0..pieces)
                            .map(move |i| Bytes::from(vec![b'x'; PIECE.min(pad - i * PIECE)])),
                    )
                    .chain(std::iter::once(Bytes::from_static(b"\"}")))
                    .map(Ok::<Bytes, std::io::Error>),
            );
            Some(with_length(Body::from_stream(s), len, "application/json"))
        }
        Behaviour::Html => {
            let page = b"<!DOCTYPE html><html><head><title>Sign in to the Wi-Fi</title></head><body><form action=\"/login\">Accept the terms to continue</form></body></html>";
            Some(with_length(
                Body::from(&page[..]),
                page.len(),
                "text/html; charset=utf-8",
            ))
        }
        _ => None,
    }
}

/// A response whose body fails on its first poll: hyper then closes the connection
/// without writing the status line, so the caller sees the connection drop before any
/// response byte.
pub(crate) fn connection_reset() -> Response<Body> {
    let failed = futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "keyward-sim: scripted connection reset",
        ))
    });
    Response::new(Body::from_stream(failed))
}
