//! # keyward-wire
//!
//! The wire formats Keyward speaks, without I/O: bytes in, events out.
//!
//! - [`sse::SseFramer`] splits a Server-Sent Events byte stream into events, keeping each
//!   event's exact bytes so they can be forwarded unchanged, with a bound on event size
//!   that fits multi-megabyte image events.
//! - [`json_stream::JsonArrayFramer`] does the same for Gemini's `streamGenerateContent`
//!   without `alt=sse` (one JSON array, elements arriving over time).
//! - [`stream`] knows, per API, which event is the first *content* (text, thinking or
//!   tool-use delta — not `message_start`, pings, role-only chunks or keep-alives), which
//!   is *terminal*, and which is an in-band *error*: a stream is complete only at its
//!   terminal event.
//! - [`eventstream::EventStreamToSse`] turns Bedrock's AWS event-stream framing into the
//!   Anthropic Messages SSE it carries (the binary framing decoded by
//!   `aws-smithy-eventstream`).
//! - [`splice`] rewrites only the `model` value of a request body, by splicing its bytes;
//!   everything else goes upstream byte for byte.
//!
//! Hand-written because they are the domain: a generic SSE client hides the raw bytes and
//! the event boundaries Keyward must forward and judge, and a JSON parser would re-encode
//! the body it must not touch.
//!
//! ```
//! use keyward_wire::sse::SseFramer;
//! use keyward_wire::stream::{Api, EventKind, inspect_sse};
//!
//! let mut framer = SseFramer::new(1 << 20);
//! framer.push(b"event: ping\ndata: {\"type\": \"ping\"}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n");
//! let ping = framer.next_event().unwrap().unwrap();
//! assert_eq!(inspect_sse(Api::Messages, &ping), EventKind::Other);
//! let delta = framer.next_event().unwrap().unwrap();
//! assert_eq!(inspect_sse(Api::Messages, &delta), EventKind::Content);
//! ```

pub mod continuation;
pub mod events;
pub mod eventstream;
pub mod json_stream;
pub mod splice;
pub mod sse;
pub mod stream;
pub mod translate;
pub mod usage;
