//! A streamed answer: held until its first content event (failover stays invisible until
//! then), then pumped to the caller event by event, with the idle limit, usage counted at
//! the end, and an in-band error in the caller's format — never a silent truncation — if
//! the upstream stream is cut, stalls or ends without its terminal event.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyDataStream;
use keyward_core::classify::{CredentialKind, Phase, TransportError};
use keyward_core::health::{AttemptScope, Headroom};
use keyward_wire::continuation::{Splice, ToolHold, Transcript};
use keyward_wire::events::EventFramer;
use keyward_wire::stream::{Api, EventKind};
use tracing::Instrument as _;
use tracing::{info, warn};

use super::attempt::record_failure;
use super::caller_error::CallerError;
use super::continuation::Continuation;
use super::upstream::{self, Inbound};
use super::verdict::Verdicts;
use super::Gateway;

/// The framer for `inbound`'s stream: a Gemini JSON-array stream, or SSE.
pub(super) fn framer_for(
    inbound: Inbound,
    provider: keyward_core::classify::Provider,
    max_event: usize,
) -> EventFramer {
    if let Some(f) = super::cloud::request::framer(inbound, provider, max_event) {
        return f;
    }
    match inbound {
        Inbound::Gemini(call) if !call.sse => EventFramer::json_array(max_event),
        _ => EventFramer::sse(max_event),
    }
}

/// An upstream body's remaining bytes, as they arrive.
pub(super) type Rest = futures_util::stream::BoxStream<'static, Result<Bytes, hyper::Error>>;

pub(super) enum Held {
    /// The stream committed: its held bytes (preamble and first content) and the rest.
    Committed {
        prefix: Vec<u8>,
        terminal: bool,
        rest: Rest,
        framer: EventFramer,
    },
    /// It failed before any content: what to classify.
    Failed {
        status_hint: Option<u16>,
        bytes: Vec<u8>,
        transport: Option<TransportError>,
        phase: Phase,
    },
}

/// Reads a stream until its first content event, under the time-to-first-content limit.
/// Preamble events (`message_start`, pings, role-only chunks) are held, not sent.
pub(super) async fn hold_stream(
    resp: upstream::Response,
    api: Api,
    framer: EventFramer,
    first_token: Duration,
) -> Held {
    hold_body(
        BodyDataStream::new(resp.into_body()).boxed(),
        api,
        framer,
        first_token,
    )
    .await
}

/// [`hold_stream`] on a body's bytes (a stream translated from another API's).
pub(super) async fn hold_body(
    mut rest: Rest,
    api: Api,
    mut framer: EventFramer,
    first_token: Duration,
) -> Held {
    let mut held: Vec<u8> = Vec::new();
    let limit = tokio::time::Instant::now() + first_token;
    loop {
        let next = match tokio::time::timeout_at(limit, rest.next()).await {
            Err(_) => {
                return Held::Failed {
                    status_hint: None,
                    bytes: Vec::new(),
                    transport: Some(TransportError::Timeout),
                    phase: Phase::Headers,
                }
            }
            Ok(n) => n,
        };
        match next {
            None | Some(Err(_)) => {
                // Ended (or cut) before any content.
                held.extend(framer.finish());
                let transport = if matches!(next, Some(Err(_))) {
                    Some(TransportError::Reset)
                } else {
                    None
                };
                return Held::Failed {
                    status_hint: None,
                    bytes: held,
                    transport,
                    phase: Phase::MidStream,
                };
            }
            Some(Ok(chunk)) => {
                framer.push(&chunk);
                while let Some(piece) = framer.next(api) {
                    let Ok(piece) = piece else {
                        return Held::Failed {
                            status_hint: None,
                            bytes: held,
                            transport: Some(TransportError::Reset),
                            phase: Phase::MidStream,
                        };
                    };
                    match piece.kind {
                        EventKind::Content | EventKind::Terminal => {
                            let terminal = piece.kind == EventKind::Terminal;
                            held.extend_from_slice(&piece.out);
                            return Held::Committed {
                                prefix: held,
                                terminal,
                                rest,
                                framer,
                            };
                        }
                        EventKind::Error => {
                            let bytes = if framer.is_array() {
                                piece.out.get(1..).map(<[u8]>::to_vec).unwrap_or_default()
                            } else {
                                piece.out
                            };
                            return Held::Failed {
                                status_hint: None,
                                bytes,
                                transport: None,
                                phase: Phase::MidStream,
                            };
                        }
                        // An array that closed before any content.
                        EventKind::Done if framer.is_array() => {
                            return Held::Failed {
                                status_hint: None,
                                bytes: held,
                                transport: None,
                                phase: Phase::MidStream,
                            };
                        }
                        EventKind::Malformed => {}
                        EventKind::Other | EventKind::Done => held.extend_from_slice(&piece.out),
                    }
                }
            }
        }
    }
}

/// How long a stream whose terminal event came may keep its connection open for trailers
/// (a usage chunk, `[DONE]`) before the gateway completes it itself.
const TERMINAL_GRACE: Duration = Duration::from_secs(2);

/// The upstream side of a committed stream: one attempt's bytes, its framer and its
/// verdict. A continued stream swaps it for the continuation's.
pub(super) struct Upstream {
    pub(super) gw: Arc<Gateway>,
    pub(super) rest: Rest,
    pub(super) framer: EventFramer,
    pub(super) attempt: Option<AttemptScope>,
    pub(super) headroom: Option<Headroom>,
    /// Its terminal event came.
    pub(super) terminal: bool,
    pub(super) route: Arc<str>,
    pub(super) gateway_key: Arc<str>,
    pub(super) provider: keyward_core::classify::Provider,
    pub(super) kind: CredentialKind,
    pub(super) credential: Arc<str>,
    /// The OAuth access token the stream was opened with (masked like the configured
    /// secrets, which the gateway's mask holds).
    pub(super) token: Option<Arc<str>>,
}

impl Drop for Upstream {
    /// However the attempt ended (complete, broken, continued elsewhere, or the caller
    /// gone), the tokens its events reported were used, on its own credential.
    fn drop(&mut self) {
        self.gw.metrics.tokens(
            &self.credential,
            &self.route,
            &self.gateway_key,
            self.framer.usage(),
        );
    }
}

/// A committed stream: forwarded event by event, judged by its terminal event. It reads
/// upstream only when the caller's connection takes more bytes: a slow reader gets
/// backpressure, never an unbounded buffer.
pub(super) struct Pump {
    pub(super) gw: Arc<Gateway>,
    pub(super) api: Api,
    pub(super) prefix: Option<Vec<u8>>,
    pub(super) up: Upstream,
    pub(super) idle: Duration,
    pub(super) done_sent: bool,
    pub(super) finished: bool,
    pub(super) route: Arc<str>,
    /// How to continue the stream if it is cut or stalls (`None`: end it with the
    /// in-band error), what the caller has been sent, and the continuation's splice.
    pub(super) resume: Option<Box<Continuation>>,
    pub(super) transcript: Option<Transcript>,
    pub(super) splice: Option<Splice>,
    /// With continuation on: a tool call's events held until the call is whole.
    pub(super) hold: Option<ToolHold>,
}

/// How a break of the upstream stream ended.
enum Broken {
    /// With the in-band error: these are the caller's last bytes.
    Ended(Vec<u8>),
    /// Continued on a new attempt: these bytes follow (possibly none yet).
    Continued(Vec<u8>),
}

impl Pump {
    /// The next bytes for the caller, or `None` at the end: whole events (a secret is
    /// never split between two of them), masked.
    async fn next_bytes(&mut self) -> Option<Vec<u8>> {
        let out = self.next_events().await?;
        Some(self.gw.mask.mask_owned(out, self.up.token.as_deref()))
    }

    /// The next framed events, as the caller is to receive them.
    async fn next_events(&mut self) -> Option<Vec<u8>> {
        if let Some(p) = self.prefix.take() {
            // Events already framed with the held ones may be waiting.
            let mut out = self.for_caller(p);
            if !self.finished {
                out.extend(self.drain_events());
            }
            return Some(out);
        }
        if self.finished {
            return None;
        }
        loop {
            // After the terminal event only trailers may follow (a usage chunk, `[DONE]`):
            // an upstream that keeps the connection open is not allowed to hold a complete
            // answer hostage for the whole idle limit.
            let wait = if self.up.terminal {
                self.idle.min(TERMINAL_GRACE)
            } else {
                self.idle
            };
            let broken = match tokio::time::timeout(wait, self.up.rest.next()).await {
                Err(_) if self.up.terminal => return self.finish_complete(),
                Err(_) => {
                    self.broken(
                        TransportError::Timeout,
                        "the upstream stream stalled past the idle limit and its connection was closed (connection closed)",
                    )
                    .await
                }
                Ok(Some(Ok(chunk))) => {
                    self.up.framer.push(&chunk);
                    let out = self.drain_events();
                    if self.finished || !out.is_empty() {
                        return Some(out);
                    }
                    continue;
                }
                Ok(Some(Err(_))) => {
                    self.broken(
                        TransportError::Reset,
                        "the upstream connection closed before the answer was complete (stream closed)",
                    )
                    .await
                }
                Ok(None) if self.up.terminal => return self.finish_complete(),
                Ok(None) => {
                    self.broken(
                        TransportError::Reset,
                        "the upstream connection closed before the answer was complete (stream closed)",
                    )
                    .await
                }
            };
            match broken {
                Broken::Ended(out) => return Some(out),
                Broken::Continued(out) if !out.is_empty() || self.finished => return Some(out),
                Broken::Continued(_) => {}
            }
        }
    }

    /// Ends a stream whose terminal event came: the wire format's closing bytes (Chat
    /// Completions' `[DONE]` when upstream left it out), and a success for the attempt.
    fn finish_complete(&mut self) -> Option<Vec<u8>> {
        self.finished = true;
        let out = self.up.framer.closing(self.api, self.done_sent);
        self.record_success();
        (!out.is_empty()).then_some(out)
    }

    fn record_success(&mut self) {
        if let Some(a) = self.up.attempt.take() {
            self.gw.metrics.attempt(&self.up.credential, "ok");
            self.gw.engine.record_success(a, self.up.headroom);
        }
    }

    /// Events of the current attempt as the caller receives them: through the
    /// continuation's splice when there is one, and followed by the transcript. A
    /// continuation that does not repeat what the caller has ends the stream.
    fn for_caller(&mut self, events: Vec<u8>) -> Vec<u8> {
        let out = match self.splice.as_mut().map(|s| s.events(&events)) {
            None => events,
            Some(Ok(out)) => out,
            Some(Err(e)) => {
                warn!(route = %self.route, reason = %e, "continued stream diverged");
                // Not the target's fault: its attempt ends without a verdict.
                self.up.attempt.take();
                return self.error_event(
                    "the upstream stream was interrupted and its continuation did not match the text already sent (stream closed)",
                );
            }
        };
        let out = match self.hold.as_mut() {
            Some(h) => h.feed(&out),
            None => out,
        };
        if let Some(t) = self.transcript.as_mut() {
            t.observe(&out);
        }
        out
    }

    fn drain_events(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(piece) = self.up.framer.next(self.api) {
            let Ok(piece) = piece else {
                out.extend(self.end_broken(
                    TransportError::Reset,
                    "an upstream stream event exceeded the size limit",
                ));
                return out;
            };
            match piece.kind {
                EventKind::Malformed => {
                    warn!(route = %self.route, "dropped a malformed stream event");
                    let label = self.gw.metrics.route(&self.route);
                    self.gw.metrics.dropped_events.get_or_create(&label).inc();
                    continue;
                }
                EventKind::Terminal => self.up.terminal = true,
                EventKind::Done => {
                    if self.up.framer.is_array() && !self.up.terminal {
                        // The array closed without a terminal element: incomplete.
                        out.extend(self.end_broken(
                            TransportError::Reset,
                            "the upstream connection closed before the answer was complete (stream closed)",
                        ));
                        return out;
                    }
                    self.done_sent = true;
                }
                EventKind::Error => {
                    // The provider's own in-band error, already in the caller's format;
                    // key shapes masked as in error bodies.
                    let text = String::from_utf8_lossy(&piece.out);
                    out.extend_from_slice(keyward_core::classify::mask_secrets(&text).as_bytes());
                    if self.up.framer.is_array() {
                        out.push(b']');
                    }
                    let failure =
                        self.verdicts()
                            .of(Some(200), &[], &piece.out, None, Phase::MidStream);
                    if let Some(a) = self.up.attempt.take() {
                        record_failure(&self.gw, a, &failure, &self.route);
                    }
                    self.finished = true;
                    return out;
                }
                EventKind::Content | EventKind::Other => {}
            }
            out.extend(self.for_caller(piece.out));
            if self.finished {
                return out;
            }
            if self.done_sent {
                self.finished = true;
                self.record_success();
                return out;
            }
        }
        out
    }

    /// The classifier adapter for this stream's credential.
    fn verdicts(&self) -> Verdicts<'_> {
        Verdicts {
            mask: &self.gw.mask,
            provider: self.up.provider,
            credential: self.up.kind,
            token: self.up.token.as_deref(),
        }
    }

    /// Records a break of the upstream stream against its attempt; returns whether the
    /// policy allows the same target again.
    fn record_break(&mut self, t: TransportError) -> bool {
        let label = self.gw.metrics.route(&self.route);
        self.gw.metrics.broken_streams.get_or_create(&label).inc();
        let failure = self
            .verdicts()
            .of(None, &[], b"", Some(t), Phase::MidStream);
        self.up
            .attempt
            .take()
            .is_some_and(|a| record_failure(&self.gw, a, &failure, &self.route).retry_same)
    }

    /// The upstream stream was cut or stalled: continued on a new attempt when the route
    /// allows it and the caller's stream can be, else ended with the in-band error.
    async fn broken(&mut self, t: TransportError, message: &str) -> Broken {
        let retry_same = self.record_break(t);
        let point = self.transcript.as_ref().and_then(Transcript::point);
        if let (Some(point), Some(c)) = (point, self.resume.as_mut()) {
            if let Some(next) = Box::pin(c.resume(&point, retry_same)).await {
                info!(route = %self.route, credential = %next.pump.up.credential, delivered = point.text.len(), "stream continued on a new attempt");
                let Pump { prefix, up, .. } = next.pump;
                // The broken attempt's usage is recorded as it is dropped; a tool call it
                // had begun was never sent, and comes whole from the continuation.
                self.up = up;
                self.splice = Some(next.splice);
                self.hold = Some(ToolHold::new(self.api));
                let mut out = self.for_caller(prefix.unwrap_or_default());
                if !self.finished {
                    out.extend(self.drain_events());
                }
                return Broken::Continued(out);
            }
        }
        Broken::Ended(self.error_event(message))
    }

    /// Ends a committed stream that broke where it cannot be continued (an oversized
    /// event, a Gemini array closed early).
    fn end_broken(&mut self, t: TransportError, message: &str) -> Vec<u8> {
        self.record_break(t);
        self.error_event(message)
    }

    /// The caller's native in-band error, worded as the closed stream it is so agents
    /// retry it — never a silent truncation presented as success.
    fn error_event(&mut self, message: &str) -> Vec<u8> {
        self.finished = true;
        let mut e = CallerError::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "stream_interrupted",
            format!("keyward: {message}; the response is incomplete, retry the request"),
        );
        e.should_retry = Some(true);
        self.up
            .framer
            .error_tail(e.stream_event(self.api), e.json_object())
    }
}

pub(super) fn stream_response(pump: Pump) -> Response<Body> {
    let content_type = if pump.up.framer.is_array() {
        "application/json"
    } else {
        "text/event-stream"
    };
    // The body is polled after the handler returned: carry the request's span along, so
    // the stream's log lines keep its request id.
    let span = tracing::Span::current();
    let stream = futures_util::stream::unfold(pump, move |mut p| {
        let span = span.clone();
        async move {
            p.next_bytes()
                .await
                .map(|b| (Ok::<Bytes, std::io::Error>(Bytes::from(b)), p))
        }
        .instrument(span)
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}
