//! Bedrock's `InvokeModelWithResponseStream` answer, as the caller's SSE: the AWS
//! event-stream binary framing (`application/vnd.amazon.eventstream`; decoded, CRCs
//! checked, by `aws-smithy-eventstream`) turned into the Anthropic Messages events it
//! carries. A `chunk` event's payload is `{"bytes": "<base64 of one Messages event>"}`;
//! that event goes out as `event: <type>` / `data: <json>`. An exception message
//! (`:message-type: exception`, `:exception-type: throttlingException`, payload
//! `{"message": …}`) goes out as an Anthropic `error` event that also carries the AWS
//! exception by name (`{"throttlingException": {"message": …}}`), which the classifier
//! reads as Bedrock's.
//!
//! Sans-IO like the other framers: bytes in, SSE bytes out, bounded by `max_event`.

use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::{HeaderValue, Message};
use serde_json::{json, Value};

/// The prelude (total length, headers length, prelude CRC) and the message CRC.
const OVERHEAD: usize = 16;

/// Decodes an AWS event stream into SSE bytes.
#[derive(Debug)]
pub struct EventStreamToSse {
    buf: Vec<u8>,
    max_event: usize,
    broken: bool,
}

impl EventStreamToSse {
    /// Messages up to `max_event` bytes.
    pub fn new(max_event: usize) -> EventStreamToSse {
        EventStreamToSse {
            buf: Vec::new(),
            max_event,
            broken: false,
        }
    }

    /// Feeds bytes as they arrive; returns the SSE bytes of every message they complete.
    /// A malformed or oversized message yields one SSE error event, then nothing more.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.broken {
            return out;
        }
        self.buf.extend_from_slice(chunk);
        while let Some(prelude) = self.buf.get(..4) {
            let total =
                u32::from_be_bytes([prelude[0], prelude[1], prelude[2], prelude[3]]) as usize;
            if total < OVERHEAD || total > self.max_event.saturating_add(OVERHEAD) {
                self.fail(&mut out, "a message length out of bounds");
                return out;
            }
            if self.buf.len() < total {
                break;
            }
            let frame: Vec<u8> = self.buf.drain(..total).collect();
            match read_message_from(&frame[..]) {
                Ok(m) => out.extend(to_sse(&m)),
                Err(_) => {
                    self.fail(&mut out, "a malformed message (bad CRC or headers)");
                    return out;
                }
            }
        }
        out
    }

    fn fail(&mut self, out: &mut Vec<u8>, what: &str) {
        self.broken = true;
        self.buf.clear();
        out.extend(error_event(
            "internalServerException",
            &format!("Bedrock's event stream carried {what}"),
        ));
    }
}

fn header<'m>(m: &'m Message, name: &str) -> Option<&'m str> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

/// One message as SSE.
fn to_sse(m: &Message) -> Vec<u8> {
    let payload: Value = serde_json::from_slice(m.payload()).unwrap_or(Value::Null);
    match header(m, ":message-type") {
        Some("event") => {
            let inner = payload
                .get("bytes")
                .and_then(Value::as_str)
                .and_then(|b| aws_smithy_types::base64::decode(b).ok());
            let Some(inner) = inner else {
                // `chunk` is the only event InvokeModelWithResponseStream sends with data.
                return Vec::new();
            };
            let kind = serde_json::from_slice::<Value>(&inner)
                .ok()
                .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "message".into());
            let mut out = format!("event: {kind}\ndata: ").into_bytes();
            // One event per line: the inner JSON is compact (Bedrock's is; a newline in
            // it would end the SSE field early, so any is escaped by re-encoding).
            if inner.contains(&b'\n') {
                let v: Value = serde_json::from_slice(&inner).unwrap_or(Value::Null);
                out.extend(v.to_string().into_bytes());
            } else {
                out.extend_from_slice(&inner);
            }
            out.extend_from_slice(b"\n\n");
            out
        }
        Some("exception") | Some("error") => {
            let t = header(m, ":exception-type")
                .or_else(|| header(m, ":error-code"))
                .unwrap_or("internalServerException");
            let msg = payload
                .get("message")
                .or_else(|| payload.get("Message"))
                .and_then(Value::as_str)
                .or_else(|| header(m, ":error-message"))
                .unwrap_or("Bedrock ended the stream with an error");
            error_event(t, msg)
        }
        _ => Vec::new(),
    }
}

/// An Anthropic `error` event carrying the AWS exception by name.
fn error_event(aws_type: &str, message: &str) -> Vec<u8> {
    let anthropic = match aws_type {
        "throttlingException" => "rate_limit_error",
        "serviceUnavailableException" | "modelNotReadyException" => "overloaded_error",
        "validationException" => "invalid_request_error",
        _ => "api_error",
    };
    let mut data = json!({"type": "error", "error": {"type": anthropic, "message": message}});
    if let Some(o) = data.as_object_mut() {
        o.insert(aws_type.to_owned(), json!({ "message": message }));
    }
    format!("event: error\ndata: {data}\n\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::Header;

    fn chunk(event: &str) -> Vec<u8> {
        let payload = json!({"bytes": aws_smithy_types::base64::encode(event)}).to_string();
        let m = Message::new(payload.into_bytes())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String("chunk".into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ));
        let mut out = Vec::new();
        write_message_to(&m, &mut out).unwrap();
        out
    }

    #[test]
    fn chunks_become_messages_events_whatever_the_read_boundaries() {
        let mut wire = chunk(r#"{"type":"message_start","message":{"id":"m"}}"#);
        wire.extend(chunk(
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"}}"#,
        ));
        for split in [1, 3, 7, 64, wire.len()] {
            let mut d = EventStreamToSse::new(1 << 20);
            let mut out = Vec::new();
            for piece in wire.chunks(split) {
                out.extend(d.push(piece));
            }
            let text = String::from_utf8(out).unwrap();
            assert_eq!(
                text,
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
                "split {split}"
            );
        }
    }

    #[test]
    fn an_exception_becomes_an_error_event_naming_it() {
        let m = Message::new(br#"{"message":"Too many requests, please wait"}"#.to_vec())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("exception".into()),
            ))
            .add_header(Header::new(
                ":exception-type",
                HeaderValue::String("throttlingException".into()),
            ));
        let mut wire = Vec::new();
        write_message_to(&m, &mut wire).unwrap();
        let out = String::from_utf8(EventStreamToSse::new(1 << 20).push(&wire)).unwrap();
        assert!(out.starts_with("event: error\ndata: "), "{out}");
        assert!(
            out.contains("\"throttlingException\":{\"message\":\"Too many requests"),
            "{out}"
        );
        assert!(out.contains("rate_limit_error"), "{out}");
    }

    #[test]
    fn a_corrupt_or_oversized_message_ends_with_one_error() {
        let mut wire = chunk(r#"{"type":"ping"}"#);
        let last = wire.len() - 1;
        wire[last] ^= 0xff;
        let mut d = EventStreamToSse::new(1 << 20);
        let out = String::from_utf8(d.push(&wire)).unwrap();
        assert!(out.starts_with("event: error"), "{out}");
        assert!(d.push(&chunk(r#"{"type":"ping"}"#)).is_empty());
        let mut small = EventStreamToSse::new(8);
        assert!(String::from_utf8(small.push(&chunk(r#"{"type":"ping"}"#)))
            .unwrap()
            .contains("out of bounds"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever bytes arrive, however split: no panic, at most one error event, and
        /// nothing after it; the output is bounded by the input (plus one error event).
        #[test]
        fn arbitrary_bytes_never_panic_and_end_in_at_most_one_error(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            split in 1usize..64,
        ) {
            let mut d = EventStreamToSse::new(1024);
            let mut out = Vec::new();
            for piece in bytes.chunks(split) {
                out.extend(d.push(piece));
            }
            let text = String::from_utf8_lossy(&out);
            prop_assert!(text.matches("event: error").count() <= 1);
            prop_assert!(out.len() <= bytes.len() * 2 + 512);
        }
    }
}
