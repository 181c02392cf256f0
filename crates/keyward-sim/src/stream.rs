//! Streamed answers: Anthropic Messages and Chat Completions SSE streams, produced as the
//! reader reads, with the stream-borne behaviours (cuts, stalls, in-band errors,
//! malformed chunks, missing terminal events).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response};
use bytes::Bytes;
use serde_json::json;

use crate::errors::Shape;
use crate::{Behaviour, TOOL_ARGS};

/// What a streamed answer holds: `text` tokens, then a tool call if `tool`; a prefilled
/// request starts at token `start`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    pub(crate) text: usize,
    pub(crate) tool: bool,
    pub(crate) start: usize,
}

impl Answer {
    /// Content events in all: the text tokens, then the tool call's argument pieces.
    fn pieces(self) -> std::ops::Range<usize> {
        let tool = if self.tool { TOOL_ARGS.len() } else { 0 };
        self.start.min(self.text)..self.text + tool
    }

    /// Whether this response opens a text block (it has text left to say, or no tool).
    fn has_text(self) -> bool {
        self.start < self.text || !self.tool
    }
}

/// The events of tool-argument piece `j` (the call's start with the first).
fn tool_piece(shape: Shape, model: &str, j: usize, index: usize, text_open: bool) -> String {
    let piece = TOOL_ARGS.get(j).copied().unwrap_or_default();
    match shape {
        Shape::Anthropic => {
            let mut out = String::new();
            if j == 0 {
                if text_open {
                    out.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
                }
                out.push_str(&format!(
                    "event: content_block_start\ndata: {}\n\n",
                    json!({"type":"content_block_start","index":index,"content_block":{"type":"tool_use","id":"toolu_sim","name":"get_weather","input":{}}})
                ));
            }
            out.push_str(&format!(
                "event: content_block_delta\ndata: {}\n\n",
                json!({"type":"content_block_delta","index":index,"delta":{"type":"input_json_delta","partial_json":piece}})
            ));
            out
        }
        Shape::OpenAi => {
            let call = if j == 0 {
                json!({"index":0,"id":"call_sim","type":"function","function":{"name":"get_weather","arguments":piece}})
            } else {
                json!({"index":0,"function":{"arguments":piece}})
            };
            format!(
                "data: {}\n\n",
                json!({"id":"chatcmpl-sim","object":"chat.completion.chunk","model":model,"choices":[{"index":0,"delta":{"tool_calls":[call]},"finish_reason":null}]})
            )
        }
    }
}

/// The end of an answer whose last content was a tool call at block `index`.
fn tool_end(shape: Shape, model: &str, index: usize) -> String {
    match shape {
        Shape::Anthropic => format!(
            "event: content_block_stop\ndata: {}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"tool_use\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":12}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n",
            json!({"type":"content_block_stop","index":index})
        ),
        Shape::OpenAi => format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"id":"chatcmpl-sim","object":"chat.completion.chunk","model":model,"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":12,"completion_tokens":12,"total_tokens":24}})
        ),
    }
}

pub(crate) fn stream_response(
    shape: Shape,
    model: String,
    behaviour: Behaviour,
    answer: Answer,
    emitted: Arc<std::sync::atomic::AtomicUsize>,
    echo: Option<String>,
) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let send = |s: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(s))).await.is_ok() }
        };
        let text_block = if answer.has_text() {
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        } else {
            ""
        };
        let pre = match shape {
            Shape::Anthropic => format!(
                "event: message_start\ndata: {}\n\n{text_block}event: ping\ndata: {{\"type\": \"ping\"}}\n\n",
                json!({"type":"message_start","message":{"id":"msg_sim","type":"message","role":"assistant","model":model,"content":[],"stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}})
            ),
            Shape::OpenAi => format!(
                "data: {}\n\n",
                json!({"id":"chatcmpl-sim","object":"chat.completion.chunk","model":model,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]})
            ),
        };
        if !send(pre).await {
            return;
        }
        if let Behaviour::SlowFirstToken { ms } = behaviour {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        // Faults count the events of this response (a continuation's too).
        let tool_index = usize::from(answer.has_text());
        for (n, i) in answer.pieces().enumerate() {
            match behaviour {
                Behaviour::StreamCut { after } if n == after => return,
                Behaviour::StreamStall { after, ms } if n == after => {
                    tokio::time::sleep(Duration::from_millis(ms)).await
                }
                Behaviour::PingStall { after, ms } if n == after => {
                    let ping = match shape {
                        Shape::Anthropic => "event: ping\ndata: {\"type\": \"ping\"}\n\n",
                        Shape::OpenAi => ": keep-alive\n\n",
                    };
                    for _ in 0..ms / 200 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if !send(ping.to_owned()).await {
                            return;
                        }
                    }
                }
                Behaviour::MidStreamError { after } if n == after => {
                    let err = match shape {
                        Shape::Anthropic => "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".to_owned(),
                        Shape::OpenAi => "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\"}}\n\n".to_owned(),
                    };
                    let _ = send(err).await;
                    return;
                }
                _ => {}
            }
            if let Behaviour::MalformedChunk { at } = behaviour {
                if n == at {
                    let bad = match shape {
                        Shape::Anthropic => "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\n\n".to_owned(),
                        Shape::OpenAi => "data: {\"choices\":[{\"delta\":{\"content\":\n\n".to_owned(),
                    };
                    if !send(bad).await {
                        return;
                    }
                }
            }
            if i >= answer.text {
                let ev = tool_piece(
                    shape,
                    &model,
                    i - answer.text,
                    tool_index,
                    answer.has_text(),
                );
                if !send(ev).await {
                    return;
                }
                emitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let word = match behaviour {
                Behaviour::BigEvents { bytes } => format!("tok{i} {}", "x".repeat(bytes)),
                _ if echo.is_some() => format!("tok{i} {} ", echo.as_deref().unwrap_or("")),
                _ => format!("tok{i} "),
            };
            let ev = match shape {
                Shape::Anthropic => format!(
                    "event: content_block_delta\ndata: {}\n\n",
                    json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":word}})
                ),
                Shape::OpenAi => format!(
                    "data: {}\n\n",
                    json!({"id":"chatcmpl-sim","object":"chat.completion.chunk","model":model,"choices":[{"index":0,"delta":{"content":word},"finish_reason":null}]})
                ),
            };
            if !send(ev).await {
                return;
            }
            emitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if behaviour == Behaviour::MissingTerminal {
            return;
        }
        if answer.tool {
            let _ = send(tool_end(shape, &model, tool_index)).await;
            return;
        }
        let end = match shape {
            Shape::Anthropic => "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":8}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_owned(),
            Shape::OpenAi => format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({"id":"chatcmpl-sim","object":"chat.completion.chunk","model":model,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}})
            ),
        };
        if let Behaviour::NoDone { hold_ms } = behaviour {
            let end = match shape {
                Shape::Anthropic => end,
                Shape::OpenAi => end.replace("data: [DONE]\n\n", ""),
            };
            if send(end).await {
                tokio::time::sleep(Duration::from_millis(hold_ms)).await;
            }
            return;
        }
        let _ = send(end).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    sse_response(Body::from_stream(stream))
}

/// An SSE response with `body`.
pub(crate) fn sse_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    r
}
