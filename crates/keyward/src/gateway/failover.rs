//! One request through the gateway: the failover loop.
//!
//! Data flows one way: the request (already parsed into [`Prepared`]) → selection (the
//! health engine orders the route's candidates) → one attempt per candidate
//! ([`Failover::attempt`], in `attempt.rs`: send, read, classify, record) whose [`Step`]
//! tells this loop what to do next → the answer (`answer.rs`). Failover is invisible to
//! the caller until the first content byte, and bounded everywhere: an attempt cap and a
//! deadline per request, the gateway's retry budget across requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response};
use keyward_core::classify::{Class, Failure};
use keyward_core::health::budget::RequestBudget;
use keyward_core::health::{RequestSpec, RouteSpec, Selection, Timestamp, Unavailable};
use keyward_wire::stream::Api;
use tracing::{info, Instrument as _};

use super::telemetry;

use super::answer::{self, with_attempts, SERVER_TIMING};
use super::continuation::{Committed, Resuming};
use super::upstream::Inbound;
use super::{Gateway, Prepared};
use crate::clock::stopwatch;
use crate::config::{Detail, Route};

/// How long a request may wait for a cooling candidate to recover before answering.
const MAX_WAIT_FOR_RECOVERY: Duration = Duration::from_secs(10);

/// How long a request may wait for another request's trial (the one that ends a
/// cooldown) to decide, polling every [`TRIAL_POLL`].
const MAX_WAIT_FOR_TRIAL: Duration = Duration::from_secs(1);
const TRIAL_POLL: Duration = Duration::from_millis(20);

/// Headers agents send to name their session (prompt-cache affinity).
const SESSION_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("x-session-id"),
    HeaderName::from_static("session_id"),
    HeaderName::from_static("x-keyward-session"),
    HeaderName::from_static("x-claude-code-session-id"),
];

/// A failed attempt, kept for the caller's error.
#[derive(Clone)]
pub(super) struct Tried {
    pub(super) failure: Failure,
    pub(super) credential: Arc<str>,
}

/// What the failover loop does after an attempt.
pub(super) enum Step {
    /// Try the same candidate again (a refreshed token, or the policy's one retry).
    Again,
    /// Go on to the next candidate.
    Next,
    /// Stop failing over (the retry budget is spent): answer with what failed.
    Stop,
    /// Start over on another route (the larger-context fallback).
    Reroute(Arc<Route>),
    /// A short `Retry-After` worth waiting out on this candidate: the loop goes on to the
    /// next candidate if it is another credential of the same target, else waits this
    /// long and tries the same one again.
    Wait(Duration),
    /// A stream committed: the caller's answer, which the failover state may follow (to
    /// continue the stream if it breaks).
    Commit(Box<Committed>),
    /// The caller's answer: a success, a committed stream, or the caller's own error.
    Answer(Response<Body>),
}

/// One request's failover state.
pub(super) struct Failover {
    pub(super) gw: Arc<Gateway>,
    pub(super) inbound: Inbound,
    pub(super) api: Api,
    pub(super) prep: Prepared,
    /// The caller's headers (only those that pass upstream for a stream:
    /// [`super::upstream::passed_headers`]).
    pub(super) caller: HeaderMap,
    detail: Detail,
    pub(super) started: Instant,
    /// Time spent waiting on upstreams (the rest is the gateway's own).
    pub(super) upstream_time: Duration,
    pub(super) route: Arc<Route>,
    pub(super) switched_for_context: bool,
    deadline: Timestamp,
    /// The same deadline for an attempt's I/O: headers and a non-streaming body are read
    /// before it, however slowly an upstream drips.
    pub(super) deadline_at: tokio::time::Instant,
    budget: RequestBudget,
    pub(super) req_spec: RequestSpec,
    /// The first failure (the real cause, kept for the caller even when fallbacks fail
    /// for reasons of their own) and the latest.
    first: Option<Tried>,
    last: Option<Tried>,
    waited: bool,
    /// Waited for another request's trial to decide (once per request).
    waited_trial: bool,
    /// Within one selection: the same candidate was retried once; a token refreshed once.
    pub(super) retried_same: bool,
    pub(super) refreshed: bool,
    /// A `Retry-After` was waited out (once per request).
    pub(super) waited_retry_after: bool,
    /// When the first stream was held: the first-content budget runs from there.
    pub(super) first_content_since: Option<tokio::time::Instant>,
    /// Set while a committed stream is being continued (`continuation.rs`).
    pub(super) resuming: Option<Resuming>,
}

/// Serves one inbound request.
pub async fn serve(
    gw: Arc<Gateway>,
    inbound: Inbound,
    prep: Prepared,
    caller: HeaderMap,
    detail: Detail,
) -> Response<Body> {
    let started = stopwatch();
    let mut r = Box::pin(Failover::new(gw, inbound, prep, caller, detail, started).run()).await;
    // Responses the gateway produced itself (errors) carry their timing too.
    if !r.headers().contains_key(SERVER_TIMING) {
        let gateway_ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Ok(v) = HeaderValue::from_str(&format!("gateway;dur={gateway_ms:.3}")) {
            r.headers_mut().insert(SERVER_TIMING, v);
        }
    }
    r
}

impl Failover {
    fn new(
        gw: Arc<Gateway>,
        inbound: Inbound,
        prep: Prepared,
        caller: HeaderMap,
        detail: Detail,
        started: Instant,
    ) -> Failover {
        let route = prep.route.clone();
        let now = gw.engine.now();
        let deadline = now.plus(route.timeouts.request);
        let deadline_at = tokio::time::Instant::now() + route.timeouts.request;
        let budget = RequestBudget::new(gw.cfg.limits.max_attempts, deadline);
        gw.retry_budget.lock().map(|mut b| b.on_request(now)).ok();
        // Session affinity: the caller's session header, else the conversation's hash; a
        // header or a conversation past its first turn prefers its credential so far.
        let header_session = session_header(&caller);
        let req_spec = RequestSpec {
            session: header_session.or(prep.conversation),
            sticky: header_session.is_some() || prep.continued,
            bucket: None,
            // Each candidate tried costs an attempt: never more are wanted.
            limit: usize::try_from(gw.cfg.limits.max_attempts).ok(),
        };
        // A stream may live for minutes: it keeps only the headers that pass upstream, in
        // storage of their own, not the request head and the read buffer under it. A whole
        // answer is over within the request: copying would only cost (~2,000 instructions).
        let caller = if prep.stream {
            super::upstream::passed_headers(&caller)
        } else {
            caller
        };
        Failover {
            api: inbound.api(),
            gw,
            inbound,
            prep,
            caller,
            detail,
            started,
            upstream_time: Duration::ZERO,
            route,
            switched_for_context: false,
            deadline,
            deadline_at,
            budget,
            req_spec,
            first: None,
            last: None,
            waited: false,
            waited_trial: false,
            retried_same: false,
            refreshed: false,
            waited_retry_after: false,
            first_content_since: None,
            resuming: None,
        }
    }

    /// The loop: select, try the candidates in order, select again once; answer.
    async fn run(mut self) -> Response<Body> {
        'route: loop {
            let spec = self.gw.route_spec(&self.route.name);
            let candidates = match self.select(&spec) {
                Selection::Candidates(c) => c,
                Selection::Unavailable(u) => {
                    // A transient cause that ends soon is worth waiting for, once.
                    if self.wait_for(&spec, &u).await {
                        continue 'route;
                    }
                    return self.unavailable(&u);
                }
            };
            (self.retried_same, self.refreshed) = (false, false);
            let mut i = 0;
            while let Some(&cand) = candidates.get(i) {
                if !self.budget.take(self.gw.engine.now()) {
                    break 'route;
                }
                let attempt_no = self.budget.attempts();
                let span =
                    telemetry::attempt_span(&self.gw, self.inbound, &spec, cand.target, attempt_no);
                match self.attempt(&spec, cand, attempt_no).instrument(span).await {
                    Step::Again => {}
                    Step::Next => i += 1,
                    // Another credential of the same target answers now; else the reset
                    // is waited out.
                    Step::Wait(_)
                        if candidates
                            .get(i + 1)
                            .is_some_and(|c| c.target == cand.target) =>
                    {
                        i += 1;
                    }
                    Step::Wait(d) => tokio::time::sleep(d).await,
                    Step::Commit(c) => return self.commit(*c, cand),
                    Step::Stop => break 'route,
                    Step::Reroute(route) => {
                        self.route = route;
                        continue 'route;
                    }
                    Step::Answer(r) => return r,
                }
            }
            // Every candidate was tried: select again, once (cooldowns may have ended).
            if self.last.is_none() || self.waited {
                break;
            }
            let room = self.budget.attempts() < self.gw.cfg.limits.max_attempts;
            match self.gw.engine.select(&spec, &self.req_spec) {
                Selection::Candidates(_) if room => {
                    self.waited = true;
                    continue 'route;
                }
                Selection::Unavailable(u) => {
                    // (`wait_for` marks the request as having waited.)
                    if room && self.wait_for(&spec, &u).await {
                        continue 'route;
                    }
                    return self.unavailable(&u);
                }
                Selection::Candidates(_) => break,
            }
        }
        self.exhausted()
    }

    /// The route's candidates in order. The decision lines are written at info; below
    /// that level their text (a line per skipped candidate, with timestamps) is not built
    /// at all — it was over a quarter of the request path's instructions with 10 of 100
    /// keys disabled.
    fn select(&self, spec: &RouteSpec) -> Selection {
        if !tracing::enabled!(tracing::Level::INFO) {
            return self.gw.engine.select(spec, &self.req_spec);
        }
        let (selection, skipped) = self.gw.engine.select_explained(spec, &self.req_spec);
        for s in &skipped {
            info!(route = %self.route.name, credential = %s.credential, decision = %format_args!("skipped `{}`: {}", s.credential, s.reason), "candidate skipped");
        }
        selection
    }

    /// Waits for the earliest transient recovery when it comes soon enough (within
    /// [`MAX_WAIT_FOR_RECOVERY`] and before the deadline), once; then, once, for another
    /// request's trial to decide. Returns whether it waited.
    async fn wait_for(&mut self, spec: &RouteSpec, u: &Unavailable) -> bool {
        // Only a transient cause is worth waiting for (a revocation's probe is not).
        let Some(at) = u.retry_at() else {
            return false;
        };
        let wait = at.since(self.gw.engine.now());
        if !self.waited && wait <= MAX_WAIT_FOR_RECOVERY && at < self.deadline {
            self.waited = true;
            tokio::time::sleep(wait + Duration::from_millis(5)).await;
            return true;
        }
        // The cooldown ended and another request took its one trial (requests waiting for
        // the same cooldown wake together): the trial decides within moments, and a
        // success puts the scope back. Wait for it, briefly, rather than answer 503 for a
        // scope that may be healthy again.
        let on_trial = u.candidates.iter().any(|c| {
            c.state == "probing" && !c.permanent && c.class.is_some_and(Class::is_transient)
        });
        if self.waited_trial || !on_trial {
            return false;
        }
        self.waited_trial = true;
        let until = (tokio::time::Instant::now() + MAX_WAIT_FOR_TRIAL).min(self.deadline_at);
        while tokio::time::Instant::now() + TRIAL_POLL < until {
            tokio::time::sleep(TRIAL_POLL).await;
            if matches!(
                self.gw.engine.select(spec, &self.req_spec),
                Selection::Candidates(_)
            ) {
                return true;
            }
        }
        false
    }

    /// Takes one attempt from the request's budget (cap and deadline).
    pub(super) fn budget_take(&mut self) -> bool {
        self.budget.take(self.gw.engine.now())
    }

    /// Attempts made so far.
    pub(super) fn attempts(&self) -> u32 {
        self.budget.attempts()
    }

    /// Keeps the first failure (the real cause) and the latest.
    pub(super) fn note(&mut self, failure: Failure, credential: &Arc<str>) {
        telemetry::failed(&failure);
        let t = Tried {
            failure,
            credential: credential.clone(),
        };
        if self.first.is_none() {
            self.first = Some(t.clone());
        }
        self.last = Some(t);
    }

    /// Whether an earlier attempt of this request failed (the caller's own error is then
    /// not passed on as the answer: the real cause was another).
    pub(super) fn failed_before(&self) -> bool {
        self.first.is_some()
    }

    /// Nothing usable: every candidate named, retry signals after the cause.
    fn unavailable(&self, u: &Unavailable) -> Response<Body> {
        let cause = self.first.as_ref().or(self.last.as_ref());
        with_attempts(
            answer::unavailable(&self.gw, self.api, &self.route.name, u, cause, self.detail),
            self.budget.attempts(),
            self.last.as_ref(),
        )
    }

    /// Attempts ran out (cap, deadline or retry budget) with the last failure in hand.
    fn exhausted(&self) -> Response<Body> {
        with_attempts(
            answer::exhausted(
                self.api,
                &self.route.name,
                self.first.as_ref(),
                self.last.as_ref(),
                self.detail,
                &self.gw,
                &self.req_spec,
            ),
            self.budget.attempts(),
            self.last.as_ref(),
        )
    }
}

/// A stable hash of the caller's session header, if it sent one.
fn session_header(caller: &HeaderMap) -> Option<u64> {
    use std::hash::Hasher as _;
    let v = SESSION_HEADERS.iter().find_map(|h| caller.get(h))?;
    let mut h = std::hash::DefaultHasher::new();
    h.write(v.as_bytes());
    Some(h.finish())
}
