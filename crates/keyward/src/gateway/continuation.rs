//! Continuing a committed stream that is cut or stalls, so the caller still gets its
//! whole answer as one stream.
//!
//! When a stream commits, the request's failover state moves into the stream
//! ([`Failover::commit`]) and stays there until the stream ends. If the upstream stream
//! then breaks (`stream.rs` records the break first), [`Continuation::resume`] runs a
//! short failover of its own: the same target first when the policy allows a retry of it,
//! then the route's other candidates in the health engine's order; each is sent the
//! caller's request with the text already delivered as the start of the assistant's
//! answer (`keyward_wire::continuation::prefill`). A target that refuses prefill is
//! recognised by its error (it counts against nothing: a capability, not a fault) and
//! asked for the whole answer again instead, which must repeat the delivered text
//! (`Mode::Replay`). The continuation is held until its first content like any attempt;
//! the stream then carries on through a `Splice`, one answer with one terminal event.
//! Bounded: `limits.max_continuations` per request, within its attempt cap and deadline;
//! off for a route with `continue_streams = false`.

use axum::body::Body;
use axum::http::{HeaderMap, Response};
use bytes::Bytes;
use keyward_core::health::{Candidate, Selection};
use keyward_wire::continuation::{prefill, Mode, ResumePoint, Splice, ToolHold, Transcript};
use tracing::info;

use super::failover::{Failover, Step};
use super::stream::{stream_response, Pump};

/// A stream committed by an attempt: the pump, and the headers that name the attempt.
pub(super) struct Committed {
    pub(super) pump: Pump,
    pub(super) headers: HeaderMap,
    /// The attempt's span: the stream is pumped in it (its usage and end are the
    /// attempt's), though it is answered from the failover loop.
    pub(super) span: tracing::Span,
}

/// A committed stream's way to continue.
pub(super) struct Continuation {
    failover: Failover,
    /// The candidate streaming now.
    cand: Candidate,
    /// Continuations left.
    left: u32,
    /// The same target was already tried again once for this stream.
    retried_same: bool,
}

/// A continuation that committed: its stream, and the splice into the caller's.
pub(super) struct Resumed {
    pub(super) pump: Pump,
    pub(super) splice: Splice,
}

/// How a continuation attempt is being asked for (set on the failover state while a
/// continuation runs; `attempt.rs` reads it).
pub(super) struct Resuming {
    /// The prefilled request body.
    prefilled: Bytes,
    /// The caller's own body (for a replay).
    original: Bytes,
    pub(super) mode: Mode,
    /// A replay may be spliced at this point.
    replayable: bool,
}

impl Resuming {
    /// The body to send for the current mode.
    pub(super) fn body(&self) -> &Bytes {
        match self.mode {
            Mode::Prefill { .. } => &self.prefilled,
            Mode::Replay => &self.original,
        }
    }

    /// A target refused prefill: ask for the whole answer instead, if it can be spliced.
    /// Returns whether that is possible.
    pub(super) fn replay_instead(&mut self) -> bool {
        if self.replayable && matches!(self.mode, Mode::Prefill { .. }) {
            self.mode = Mode::Replay;
            return true;
        }
        false
    }
}

impl Failover {
    /// The caller's response for a committed stream. The failover state goes with the
    /// stream when the route continues broken streams.
    pub(super) fn commit(self, c: Committed, cand: Candidate) -> Response<Body> {
        let Committed {
            mut pump,
            headers,
            span,
        } = c;
        let left = self.gw.cfg.limits.max_continuations;
        if self.route.continue_streams && left > 0 {
            pump.transcript = Transcript::new(self.api);
            if pump.transcript.is_some() {
                pump.hold = Some(ToolHold::new(self.api));
                // Kept for the stream's whole life: the caller's body in an allocation of
                // its own, not a slice of the caller connection's read buffer, which would
                // then stay allocated beside the buffer hyper reads the connection into.
                let mut failover = self;
                failover.prep.body = Bytes::copy_from_slice(&failover.prep.body);
                pump.resume = Some(Box::new(Continuation {
                    failover,
                    cand,
                    left,
                    retried_same: false,
                }));
            }
        }
        let mut r = span.in_scope(|| stream_response(pump));
        r.headers_mut().extend(headers);
        r
    }
}

impl Continuation {
    /// Continues the stream from `point` on a new attempt; `None` when no candidate could
    /// (the caller then gets the in-band error).
    pub(super) async fn resume(
        &mut self,
        point: &ResumePoint,
        retry_same: bool,
    ) -> Option<Resumed> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let f = &mut self.failover;
        let original = f.prep.body.clone();
        let api = f.api;
        let (mode, prefilled) = if point.text.is_empty() {
            (Mode::Replay, original.clone())
        } else {
            let (body, trimmed) = prefill(&original, &point.text).ok()?;
            (Mode::Prefill { trimmed }, Bytes::from(body))
        };
        f.resuming = Some(Resuming {
            prefilled,
            original,
            mode,
            replayable: Splice::replayable(api, point),
        });
        let spec = f.gw.route_spec(&f.route.name);
        let mut order: Vec<Candidate> = match f.gw.engine.select(&spec, &f.req_spec) {
            Selection::Candidates(c) => c.into_iter().filter(|c| *c != self.cand).collect(),
            Selection::Unavailable(_) => Vec::new(),
        };
        // The same target once (a cut that the policy may retry); a target that breaks
        // again is not given the stream a third time.
        if retry_same && !self.retried_same {
            order.insert(0, self.cand);
        }
        (f.retried_same, f.refreshed) = (false, false);
        let mut i = 0;
        let resumed = loop {
            let Some(&cand) = order.get(i) else {
                break None;
            };
            if !f.budget_take() {
                break None;
            }
            let attempt_no = f.attempts();
            match Box::pin(f.attempt(&spec, cand, attempt_no)).await {
                Step::Commit(c) => {
                    self.retried_same |= cand == self.cand;
                    self.cand = cand;
                    break Some(c.pump);
                }
                Step::Again => {}
                Step::Next | Step::Wait(_) => i += 1,
                Step::Stop | Step::Reroute(_) | Step::Answer(_) => break None,
            }
        };
        let resuming = f.resuming.take()?;
        let pump = resumed?;
        info!(route = %f.route.name, mode = ?resuming.mode, "continuation committed");
        Some(Resumed {
            pump,
            splice: Splice::new(api, point, resuming.mode),
        })
    }
}
