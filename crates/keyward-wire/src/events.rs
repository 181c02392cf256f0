//! A stream's events, whatever its framing: SSE events, or the elements of a Gemini
//! JSON-array stream (whose brackets and commas are rebuilt on the way out), each with what
//! it means for the stream (content, terminal, error, …) and the token usage reported so
//! far. Sans-IO: bytes in, events out; the gateway decides what to forward when.

use crate::eventstream::EventStreamToSse;
use crate::json_stream::{JsonArrayFramer, JsonItem};
use crate::sse::SseFramer;
use crate::stream::{gemini_element, inspect_sse, Api, EventKind};
use crate::usage::{self, Usage};

/// A stream's framer, and the token usage its events reported so far.
#[derive(Debug)]
pub struct EventFramer {
    kind: Kind,
    usage: Usage,
    /// Bedrock's AWS event stream, decoded into the SSE the framer reads.
    aws: Option<EventStreamToSse>,
}

#[derive(Debug)]
enum Kind {
    Sse(SseFramer),
    Array {
        framer: JsonArrayFramer,
        started: bool,
        closed: bool,
    },
}

/// One framed piece: the bytes to forward and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub out: Vec<u8>,
    pub kind: EventKind,
}

/// An event larger than the framer's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge;

impl EventFramer {
    /// An SSE stream, events up to `max_event` bytes.
    pub fn sse(max_event: usize) -> EventFramer {
        EventFramer {
            kind: Kind::Sse(SseFramer::new(max_event)),
            usage: Usage::default(),
            aws: None,
        }
    }

    /// Bedrock's AWS event stream (`InvokeModelWithResponseStream`), read and forwarded
    /// as the Anthropic Messages SSE it carries; messages up to `max_event` bytes.
    pub fn aws_event_stream(max_event: usize) -> EventFramer {
        EventFramer {
            aws: Some(EventStreamToSse::new(max_event)),
            ..EventFramer::sse(max_event)
        }
    }

    /// A Gemini JSON-array stream, elements up to `max_event` bytes.
    pub fn json_array(max_event: usize) -> EventFramer {
        EventFramer {
            kind: Kind::Array {
                framer: JsonArrayFramer::new(max_event),
                started: false,
                closed: false,
            },
            usage: Usage::default(),
            aws: None,
        }
    }

    /// Feeds bytes as they arrive.
    pub fn push(&mut self, chunk: &[u8]) {
        if let (Some(aws), Kind::Sse(f)) = (&mut self.aws, &mut self.kind) {
            f.push(&aws.push(chunk));
            return;
        }
        match &mut self.kind {
            Kind::Sse(f) => f.push(chunk),
            Kind::Array { framer, .. } => framer.push(chunk),
        }
    }

    /// The next piece, read as `api`'s events; `Err` when an event exceeds its bound.
    pub fn next(&mut self, api: Api) -> Option<Result<Piece, EventTooLarge>> {
        let usage = &mut self.usage;
        match &mut self.kind {
            Kind::Sse(f) => f.next_event().map(|e| {
                e.map(|ev| {
                    if let Some(u) = usage::usage(&ev.data) {
                        *usage = usage.max(u);
                    }
                    Piece {
                        kind: inspect_sse(api, &ev),
                        out: ev.raw,
                    }
                })
                .map_err(|_| EventTooLarge)
            }),
            Kind::Array {
                framer,
                started,
                closed,
            } => framer.next_item().map(|item| match item {
                Ok(JsonItem::Element(el)) => {
                    if let Some(u) = usage::usage(&el) {
                        *usage = usage.max(u);
                    }
                    let kind = gemini_element(&el);
                    let mut out = if *started {
                        b",\r\n".to_vec()
                    } else {
                        b"[".to_vec()
                    };
                    *started = true;
                    out.extend_from_slice(&el);
                    Ok(Piece { out, kind })
                }
                Ok(JsonItem::End) => {
                    *closed = true;
                    let out = if *started {
                        b"]".to_vec()
                    } else {
                        b"[]".to_vec()
                    };
                    *started = true;
                    Ok(Piece {
                        out,
                        kind: EventKind::Done,
                    })
                }
                Err(_) => Err(EventTooLarge),
            }),
        }
    }

    /// What an unfinished stream left behind (for classification).
    pub fn finish(&mut self) -> Vec<u8> {
        match &mut self.kind {
            Kind::Sse(f) => f.finish().unwrap_or_default(),
            Kind::Array { framer, .. } => framer.finish().unwrap_or_default(),
        }
    }

    /// An error that ends the stream, completing the wire format: `sse_event` as it is for
    /// an SSE stream; `json_object` as the array's last element for a JSON-array stream.
    pub fn error_tail(&self, sse_event: Vec<u8>, json_object: Vec<u8>) -> Vec<u8> {
        match &self.kind {
            Kind::Sse(_) => sse_event,
            Kind::Array { started, .. } => {
                let mut out = if *started {
                    b",\r\n".to_vec()
                } else {
                    b"[".to_vec()
                };
                out.extend(json_object);
                out.push(b']');
                out
            }
        }
    }

    /// What completes a stream whose terminal event came but whose wire format did not
    /// close (`[DONE]` for Chat Completions, `]` for a Gemini array).
    pub fn closing(&self, api: Api, done_sent: bool) -> Vec<u8> {
        match &self.kind {
            Kind::Array { closed: false, .. } => b"]".to_vec(),
            Kind::Sse(_) if api == Api::ChatCompletions && !done_sent => {
                b"data: [DONE]\n\n".to_vec()
            }
            _ => Vec::new(),
        }
    }

    /// Whether this is a JSON-array stream.
    pub fn is_array(&self) -> bool {
        matches!(self.kind, Kind::Array { .. })
    }

    /// The largest usage the stream's events reported so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gemini_array_is_rebuilt_element_by_element_and_an_error_closes_it() {
        let mut f = EventFramer::json_array(1 << 20);
        f.push(br#"[{"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}"#);
        f.push(b",\r\n");
        let first = f.next(Api::Gemini).unwrap().unwrap();
        assert!(first.out.starts_with(b"["));
        assert_eq!(first.kind, EventKind::Content);
        assert!(f.next(Api::Gemini).is_none());
        let tail = f.error_tail(b"unused".to_vec(), br#"{"error":{}}"#.to_vec());
        assert_eq!(tail, b",\r\n{\"error\":{}}]".to_vec());
        assert_eq!(f.closing(Api::Gemini, false), b"]".to_vec());
        assert!(f.is_array());
    }

    #[test]
    fn chat_completions_get_their_done_line_and_sse_errors_pass_as_given() {
        let mut f = EventFramer::sse(1 << 20);
        f.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n");
        let p = f.next(Api::ChatCompletions).unwrap().unwrap();
        assert_eq!(p.kind, EventKind::Content);
        assert_eq!(
            f.closing(Api::ChatCompletions, false),
            b"data: [DONE]\n\n".to_vec()
        );
        assert!(f.closing(Api::ChatCompletions, true).is_empty());
        assert_eq!(
            f.error_tail(b"event: error\n\n".to_vec(), Vec::new()),
            b"event: error\n\n".to_vec()
        );
    }
}
