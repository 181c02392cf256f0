//! One attempt on one candidate, for the failover loop: admitted by the health engine,
//! sent upstream, its answer read (whole and checked for a body, held until the first
//! content event for a stream) and classified, the verdict recorded — and a [`Step`] that
//! says what the loop does next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bytes::Bytes;
use keyward_core::classify::{Class, Failure, Phase, Scope, TransportError};
use keyward_core::health::engine::FailureAdvice;
use keyward_core::health::{AttemptScope, Candidate, RouteSpec, TargetSpec};
use keyward_wire::continuation::rejects_prefill;
use keyward_wire::splice;
use tracing::{info, warn};

use super::answer::{decorate, pass_on_error, passthrough, Sent};
use super::caller_bound;
use super::continuation::Committed;
use super::crossing::{untranslatable, Crossing, Refused};
use super::failover::{Failover, Step};
use super::stream::{framer_for, hold_body, hold_stream, Held, Pump, Upstream};
use super::telemetry;
use super::upstream::{self, Inbound};
use super::verdict::{
    carries_error, content_type, header_pairs, headroom, transport_kind, Verdicts,
};
use super::Gateway;
use crate::clock::stopwatch;
use crate::config::{Credential, Endpoint, Timeouts};

/// How far past a waited-out `Retry-After` the retry goes.
const RESET_MARGIN: Duration = Duration::from_millis(50);

/// Most bytes of an upstream error body read for classification.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The body an attempt sends, and the API it calls.
struct Outgoing {
    api: Inbound,
    body: Vec<u8>,
}

/// An attempt on its way: what it was sent with.
struct Sending<'a> {
    gw: &'a Gateway,
    cred: &'a Credential,
    /// The key, or the OAuth access token this attempt sent.
    secret: &'a Arc<str>,
    target: &'a TargetSpec,
    endpoint: &'a Endpoint,
    timeouts: Timeouts,
    attempt_no: u32,
    sent: Instant,
    /// The translation to and from the target's API, when it is not the caller's.
    crossing: Option<Crossing>,
}

impl<'a> Sending<'a> {
    fn verdicts(&self) -> Verdicts<'a> {
        Verdicts {
            mask: &self.gw.mask,
            provider: self.endpoint.provider,
            credential: self.cred.kind,
            token: self.token(),
        }
    }

    /// A rotating OAuth access token (not in the configuration's mask).
    fn token(&self) -> Option<&'a str> {
        let secret: &'a Arc<str> = self.secret;
        self.cred.secret.is_none().then_some(&**secret)
    }

    fn answer<'s>(&'s self, f: &'s Failover) -> Sent<'s> {
        Sent {
            mask: &self.gw.mask,
            token: self.token(),
            credential: &self.cred.id,
            endpoint: &self.target.endpoint,
            model: &self.target.model,
            attempts: self.attempt_no,
            started: f.started,
            upstream: f.upstream_time,
        }
    }
}

impl Failover {
    /// Tries candidate `cand` of `spec` (the request's `attempt_no`th attempt).
    pub(super) async fn attempt(
        &mut self,
        spec: &RouteSpec,
        cand: Candidate,
        attempt_no: u32,
    ) -> Step {
        let gw = self.gw.clone();
        let Some(attempt) = gw.engine.admit(spec, &cand, &self.req_spec) else {
            return Step::Next;
        };
        let target = &spec.targets[cand.target];
        let Some((cred, endpoint, crossing)) = self.servable(&gw, spec, cand.target, &attempt)
        else {
            return Step::Next;
        };
        telemetry::credential(&cred.id);
        // A key needs no await; an OAuth token's lookup (and refresh) is boxed so its
        // large state is not part of every request's future.
        let secret = match &cred.secret {
            Some(s) => Ok(s.shared()),
            None => Box::pin(gw.auth(&cred)).await,
        };
        let secret = match secret {
            Ok(s) => s,
            Err(e) => {
                warn!(credential = %cred.id, reason = %e, "skipped candidate: no usable token (OAuth or cloud)");
                return Step::Next;
            }
        };
        let out = match self.outgoing(target, crossing.as_ref(), &cred.id) {
            Ok(out) => out,
            Err(Refused::Skip) => return Step::Next,
            Err(Refused::Caller(e)) => return Step::Answer(e.response(self.api)),
        };
        let Some(req) = self.request(cand.target, target, endpoint, &cred, &secret, out) else {
            return Step::Next;
        };
        // The health spec is built from the route's targets in order.
        let timeouts = self
            .route
            .targets
            .get(cand.target)
            .map_or(self.route.timeouts, |t| t.timeouts);
        let s = Sending {
            gw: &gw,
            cred: &cred,
            secret: &secret,
            target,
            endpoint,
            timeouts,
            attempt_no,
            sent: stopwatch(),
            crossing,
        };
        let headers_by = (tokio::time::Instant::now() + timeouts.headers).min(self.deadline_at);
        let resp = match tokio::time::timeout_at(headers_by, gw.client.send(req)).await {
            Ok(Ok(r)) => r,
            outcome => {
                let e = match outcome {
                    Ok(Err(e)) => transport_kind(&e),
                    _ => TransportError::Timeout,
                };
                self.upstream_time += s.sent.elapsed();
                let failure = s.verdicts().transport(e);
                return self.retry_or_fail_over(&s, attempt, failure, false);
            }
        };
        let status = resp.status().as_u16();
        telemetry::upstream_status(status);
        let headers = header_pairs(resp.headers());
        if status >= 400 {
            self.on_error_status(&s, attempt, resp, status, &headers)
                .await
        } else if !self.prep.stream {
            self.on_body(&s, attempt, resp, status, &headers).await
        } else {
            self.on_stream(&s, attempt, resp, status, &headers).await
        }
    }

    /// The admitted candidate's credential and endpoint, if its target may serve this
    /// request — natively, or translated for its own API; `None` skips it (the attempt is
    /// handed back when dropped).
    fn servable<'g>(
        &self,
        gw: &'g Gateway,
        spec: &RouteSpec,
        target_index: usize,
        attempt: &AttemptScope,
    ) -> Option<(Arc<Credential>, &'g Endpoint, Option<Crossing>)> {
        let target = spec.targets.get(target_index)?;
        // Embeddings never fall back to another model (vectors would not compare).
        if self.inbound == Inbound::Embeddings
            && spec
                .targets
                .first()
                .is_some_and(|t| t.model != target.model)
        {
            return None;
        }
        let cred = gw.credential(&attempt.credential())?;
        let endpoint = gw.cfg.endpoints.get(&target.endpoint)?;
        // A target serves the inbound APIs its provider speaks and its configuration
        // allows (a Codex token: the Responses API only); another API, translated.
        let apis = self
            .route
            .targets
            .get(target_index)
            .and_then(|t| t.apis.as_deref());
        let allowed = apis.is_none_or(|apis| apis.contains(&self.inbound.name()));
        if self.inbound.served_by(endpoint.provider) && allowed {
            return Some((cred, endpoint, None));
        }
        let crossing = Crossing::plan(
            self.inbound,
            endpoint.provider,
            apis,
            self.prep.stream,
            &self.route,
        );
        if crossing.is_none() {
            info!(credential = %cred.id, target = %target.endpoint, api = self.inbound.name(), "skipped candidate: its target does not serve this API");
        }
        // A continuation does not cross families: the text already delivered, sent as the
        // start of the answer, is a prefill only where the target's API has one, and a
        // fresh answer spliced after it would repeat or contradict it.
        if crossing.is_some() && self.resuming.is_some() {
            info!(credential = %cred.id, target = %target.endpoint, "skipped candidate: a stream is not continued on a target of another API family");
            return None;
        }
        Some((cred, endpoint, Some(crossing?)))
    }

    /// The body for `target` and the API it goes to: the caller's with only its `model`
    /// value rewritten (Gemini names it in the URL instead), or translated for the
    /// target's own API. `Err`: why not (the target is skipped, or the caller gets its 400).
    fn outgoing(
        &self,
        target: &TargetSpec,
        crossing: Option<&Crossing>,
        credential: &str,
    ) -> Result<Outgoing, Refused> {
        let Some(c) = crossing else {
            let body = match (&self.resuming, &self.prep.model_at) {
                // A continuation's body was rewritten: its model is found again.
                (Some(r), Some(_)) => splice::replace_model(r.body(), &target.model)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| r.body().to_vec()),
                (Some(r), None) => r.body().to_vec(),
                (None, Some(at)) => splice::replace_at(&self.prep.body, at.clone(), &target.model)
                    .unwrap_or_else(|_| self.prep.body.to_vec()),
                (None, None) => self.prep.body.to_vec(),
            };
            return Ok(Outgoing {
                api: self.inbound,
                body,
            });
        };
        // A continuation (the caller's request with the text already delivered as the
        // start of the answer) is translated like the first request.
        let body = self
            .resuming
            .as_ref()
            .map_or(&self.prep.body[..], |r| r.body());
        let (model, stream) = (&target.model, self.prep.stream);
        let body = c.request(body, model, stream, &self.route, credential)?;
        Ok(Outgoing {
            api: c.upstream,
            body,
        })
    }

    /// The upstream request for this candidate: `out`'s body to its API, the credential's
    /// auth, the caller's protocol headers. `None` (logged) skips the candidate.
    fn request(
        &self,
        target_index: usize,
        target: &TargetSpec,
        endpoint: &Endpoint,
        cred: &Credential,
        secret: &Arc<str>,
        out: Outgoing,
    ) -> Option<axum::http::Request<http_body_util::Full<Bytes>>> {
        let Outgoing { api, body } = out;
        let Some(url) =
            self.gw
                .upstream_url(&self.route.name, target_index, api, endpoint, &target.model)
        else {
            warn!(credential = %cred.id, target = %target.endpoint, "skipped candidate: its upstream URL does not parse");
            return None;
        };
        let call = super::cloud::request::Call {
            // The API the target is called with (the caller's, or a crossing's).
            inbound: api,
            stream: self.prep.stream,
            endpoint,
            cred,
            secret,
        };
        match super::cloud::request::build(&self.gw, call, url, Some(&self.caller), body) {
            Ok(req) => Some(req),
            Err(e) => {
                warn!(credential = %cred.id, reason = %e, "skipped candidate");
                None
            }
        }
    }

    /// An error status. An OAuth access token the provider rejects gets one refresh and
    /// a retry; the caller's own error (and a content filter) is the answer; a context
    /// overflow goes to the larger-context route if there is one; anything else fails
    /// over (after the policy's one retry of the same target, within the retry budget).
    async fn on_error_status(
        &mut self,
        s: &Sending<'_>,
        attempt: AttemptScope,
        resp: upstream::Response,
        status: u16,
        headers: &[(String, String)],
    ) -> Step {
        let read =
            caller_bound::read_body(resp, MAX_ERROR_BODY, s.timeouts.idle, self.deadline_at).await;
        self.upstream_time += s.sent.elapsed();
        // A continuation the target refuses as prefill: a capability, not a fault (no
        // verdict, and never the caller's error); the whole answer is asked for instead.
        if let Some(r) = self.resuming.as_mut() {
            if rejects_prefill(status, &read.body) {
                drop(attempt);
                info!(credential = %s.cred.id, "the target refuses assistant prefill: asking for the whole answer to splice");
                return if r.replay_instead() {
                    Step::Again
                } else {
                    Step::Next
                };
            }
        }
        let failure = s
            .verdicts()
            .of(Some(status), headers, &read.body, None, Phase::Headers);
        // Passed on, an error is in the caller's format.
        let read = match &s.crossing {
            Some(c) => c.error(read, status),
            None => read,
        };
        let (attempt, failure) = match self.refresh_rejected_token(s, attempt, failure).await {
            Ok(step) => return step,
            Err(not_a_token_case) => not_a_token_case,
        };
        let advice = record_failure(s.gw, attempt, &failure, &self.route.name);
        match (failure.class, failure.scope) {
            // The caller's own request: return the provider's answer as it is.
            (Class::BadRequest, Scope::Request) | (Class::ContentFilter, _)
                if !self.failed_before() =>
            {
                return Step::Answer(pass_on_error(
                    self.api,
                    status,
                    headers,
                    &read,
                    &s.answer(self),
                ));
            }
            (Class::ContextOverflow, _) => {
                if let (Some(next), false) = (
                    self.route.context_fallback.clone(),
                    self.switched_for_context,
                ) {
                    if let Some(r) = s.gw.route(&next) {
                        info!(route = %self.route.name, fallback = %next, "context overflow: routing to the larger-context fallback");
                        self.switched_for_context = true;
                        self.note(failure, &s.cred.id);
                        return Step::Reroute(r);
                    }
                }
                return Step::Answer(pass_on_error(
                    self.api,
                    status,
                    headers,
                    &read,
                    &s.answer(self),
                ));
            }
            _ => {}
        }
        self.after_failure(s, advice, failure, true)
    }

    /// An OAuth access token or a cloud credential's short-lived token (STS keys, a Google
    /// or Entra token) the provider rejects (expired, or revoked with its session):
    /// no verdict yet. Refresh (once per request; one refresh per credential however many
    /// requests see it) and retry on the same credential. The token endpoint's answer is
    /// definitive for the grant (`invalid_grant` disables it with a "log in again"
    /// remedy); only a rejection of a freshly refreshed token counts against the
    /// credential. Not such a case: the attempt and its failure are handed back.
    async fn refresh_rejected_token(
        &mut self,
        s: &Sending<'_>,
        attempt: AttemptScope,
        failure: Failure,
    ) -> Result<Step, (AttemptScope, Failure)> {
        let (gw, cred) = (s.gw, s.cred);
        if !gw.refreshable(cred) {
            return Err((attempt, failure));
        }
        // "Expired" is always worth one refresh per token; any other rejection of a token
        // issued moments ago is a verdict (or an incident).
        let worth = failure.class == Class::AuthTransient
            || gw.worth_refreshing(cred, s.secret, gw.engine.now());
        if !matches!(failure.class, Class::AuthTransient | Class::AuthPermanent)
            || self.refreshed
            || !worth
        {
            return Err((attempt, failure));
        }
        self.refreshed = true;
        gw.metrics.attempt(&cred.id, failure.class.as_str());
        // No verdict on the credential: its attempt ends here, before the refresh.
        drop(attempt);
        // Still evidence for a provider-wide incident; during one, refreshing is
        // pointless: fail over.
        if gw.engine.note_auth_rejection(&cred.id) {
            info!(credential = %cred.id, "access token rejected during a provider auth incident: failing over without a refresh");
            self.note(failure, &cred.id);
            return Ok(Step::Next);
        }
        let outcome = Box::pin(gw.refresh_after_rejection(cred, s.secret)).await;
        self.note(failure, &cred.id);
        Ok(match outcome {
            Ok(_) => {
                info!(credential = %cred.id, "access token rejected as expired: refreshed, retrying");
                Step::Again
            }
            Err(e) => {
                warn!(credential = %cred.id, reason = %e, "access token rejected and the refresh failed: failing over");
                Step::Next
            }
        })
    }

    /// A success status, not streamed: nothing is sent unless the body is whole, JSON,
    /// masked, and not an error in disguise.
    async fn on_body(
        &mut self,
        s: &Sending<'_>,
        attempt: AttemptScope,
        resp: upstream::Response,
        status: u16,
        headers: &[(String, String)],
    ) -> Step {
        let headroom = headroom(headers);
        let read = caller_bound::read_body(
            resp,
            s.gw.cfg.limits.max_body_bytes,
            s.timeouts.idle,
            self.deadline_at,
        )
        .await;
        self.upstream_time += s.sent.elapsed();
        // A truncated, stalled, oversized or HTML "success" is a failure of this attempt.
        let (body, usage) = match caller_bound::success(
            &s.gw.mask,
            s.token(),
            status,
            content_type(headers),
            &read,
        ) {
            Ok(ok) => match ok.body {
                std::borrow::Cow::Borrowed(_) => (read.body.clone(), ok.usage),
                std::borrow::Cow::Owned(masked) => (Bytes::from(masked), ok.usage),
            },
            Err(defect) => {
                let failure = defect.failure(s.endpoint.provider, s.cred.kind);
                return self.fail_over(s, attempt, failure);
            }
        };
        if carries_error(&body) {
            let failure = s
                .verdicts()
                .of(Some(status), headers, &body, None, Phase::Headers);
            return self.fail_over(s, attempt, failure);
        }
        let body = match &s.crossing {
            None => body,
            Some(c) => match c.answer(&body) {
                Ok(translated) => translated,
                Err(e) => {
                    let failure = untranslatable(&e, s.endpoint.provider, s.cred.kind);
                    return self.fail_over(s, attempt, failure);
                }
            },
        };
        s.gw.metrics.attempt(&s.cred.id, "ok");
        if let Some(u) = usage {
            s.gw.metrics
                .tokens(&s.cred.id, &self.route.name, &self.prep.gateway_key, u);
        }
        s.gw.engine.record_success(attempt, headroom);
        Step::Answer(passthrough(status, headers, body, &s.answer(self)))
    }

    /// A success status, streamed: held until its first content event (failover is
    /// invisible until then), then committed.
    async fn on_stream(
        &mut self,
        s: &Sending<'_>,
        attempt: AttemptScope,
        resp: upstream::Response,
        status: u16,
        headers: &[(String, String)],
    ) -> Step {
        let headroom = headroom(headers);
        let max_event = s.gw.cfg.limits.max_event_bytes;
        let framer = framer_for(self.inbound, s.endpoint.provider, max_event);
        let Some(first_token) = self.first_content_limit(s.timeouts.first_token) else {
            // The request's first-content budget is spent: no verdict on this candidate.
            info!(route = %self.route.name, "first-content budget spent: not trying further candidates");
            drop(attempt);
            return Step::Stop;
        };
        let held = match &s.crossing {
            // Translated as it arrives: held and committed by the caller's own rules
            // (never a Bedrock or Vertex target: configuration refuses those crossings).
            Some(c) => {
                let rest = c.stream(resp, framer.is_array(), max_event);
                hold_body(rest, self.api, framer, first_token).await
            }
            None => hold_stream(resp, self.api, framer, first_token).await,
        };
        match held {
            Held::Failed {
                status_hint,
                bytes,
                transport,
                phase,
            } => {
                self.upstream_time += s.sent.elapsed();
                let failure = s.verdicts().of(
                    status_hint.or(Some(status)),
                    headers,
                    &bytes,
                    transport,
                    phase,
                );
                self.fail_over(s, attempt, failure)
            }
            Held::Committed {
                prefix,
                terminal,
                rest,
                framer,
            } => {
                self.upstream_time += s.sent.elapsed();
                let pump = Pump {
                    gw: self.gw.clone(),
                    api: self.api,
                    prefix: Some(prefix),
                    up: Upstream {
                        gw: self.gw.clone(),
                        rest,
                        framer,
                        attempt: Some(attempt),
                        headroom,
                        terminal,
                        route: self.route.name.clone(),
                        gateway_key: self.prep.gateway_key.clone(),
                        provider: s.endpoint.provider,
                        kind: s.cred.kind,
                        credential: s.cred.id.clone(),
                        token: s.cred.secret.is_none().then(|| s.secret.clone()),
                    },
                    idle: s.timeouts.idle,
                    done_sent: false,
                    finished: false,
                    route: self.route.name.clone(),
                    resume: None,
                    transcript: None,
                    splice: None,
                    hold: None,
                };
                let mut headers = HeaderMap::new();
                decorate(
                    &mut headers,
                    &s.cred.id,
                    &s.target.endpoint,
                    &s.target.model,
                    s.attempt_no,
                    self.started,
                    self.upstream_time,
                );
                Step::Commit(Box::new(Committed {
                    pump,
                    headers,
                    span: tracing::Span::current(),
                }))
            }
        }
    }

    /// A failure that moves on to the next candidate.
    fn fail_over(&mut self, s: &Sending<'_>, attempt: AttemptScope, failure: Failure) -> Step {
        record_failure(s.gw, attempt, &failure, &self.route.name);
        self.note(failure, &s.cred.id);
        Step::Next
    }

    /// A failure after which the policy may allow one retry of the same target.
    fn retry_or_fail_over(
        &mut self,
        s: &Sending<'_>,
        attempt: AttemptScope,
        failure: Failure,
        spend_on_transient: bool,
    ) -> Step {
        let advice = record_failure(s.gw, attempt, &failure, &self.route.name);
        self.after_failure(s, advice, failure, spend_on_transient)
    }

    /// The policy's one retry of the same target (within the gateway's retry budget);
    /// otherwise the next candidate — unless a transient failure finds the retry budget
    /// spent, which stops failing over (a storm must not multiply load).
    fn after_failure(
        &mut self,
        s: &Sending<'_>,
        advice: FailureAdvice,
        failure: Failure,
        spend_on_transient: bool,
    ) -> Step {
        let transient = failure.class.is_transient();
        let wait = self.worth_waiting(s, &failure);
        self.note(failure, &s.cred.id);
        if let Some(wait) = wait {
            return Step::Wait(wait);
        }
        if advice.retry_same && !self.retried_same && s.gw.spend_retry() {
            self.retried_same = true;
            return Step::Again;
        }
        if spend_on_transient && transient && !s.gw.spend_retry() {
            warn!(route = %self.route.name, "retry budget exhausted: not failing over further");
            return Step::Stop;
        }
        Step::Next
    }
}

impl Failover {
    /// A rate limit whose `Retry-After` is short enough to wait out on the same target
    /// (the route's `retry_after_wait`, once per request, before the deadline, within
    /// the retry budget): keeping the model the caller asked for beats switching models
    /// for a second or two.
    fn worth_waiting(&mut self, s: &Sending<'_>, failure: &Failure) -> Option<Duration> {
        let after = failure.retry_after?;
        if failure.class != Class::RateLimit
            || after > s.timeouts.retry_after_wait
            || self.waited_retry_after
            || self.resuming.is_some()
            || tokio::time::Instant::now() + after >= self.deadline_at
            || !s.gw.spend_retry()
        {
            return None;
        }
        self.waited_retry_after = true;
        info!(route = %self.route.name, credential = %s.cred.id, wait_ms = after.as_millis() as u64, "rate limited with a short Retry-After: waiting it out on the same target");
        // Past the reset, so the cooldown it set has ended.
        Some(after + RESET_MARGIN)
    }

    /// This attempt's first-content limit: its own, cut to what remains of the request's
    /// first-content budget (which starts when the first stream is held). A continuation
    /// has its own limit: the budget was for the caller's first content, long delivered.
    fn first_content_limit(&mut self, own: Duration) -> Option<Duration> {
        if self.resuming.is_some() {
            return Some(own);
        }
        let now = tokio::time::Instant::now();
        let since = *self.first_content_since.get_or_insert(now);
        let left = self
            .route
            .timeouts
            .first_content_budget
            .checked_sub(now - since)
            .filter(|d| !d.is_zero())?;
        Some(own.min(left))
    }
}

/// Records a failed attempt: the metric, the decision line, the health engine's verdict.
pub(super) fn record_failure(
    gw: &Gateway,
    attempt: AttemptScope,
    failure: &Failure,
    route: &str,
) -> FailureAdvice {
    let credential = attempt.credential();
    gw.metrics.attempt(&credential, failure.class.as_str());
    info!(
        route,
        credential = %credential,
        class = failure.class.as_str(),
        scope = failure.scope.as_str(),
        confidence = failure.confidence.as_str(),
        status = failure.evidence.status,
        why = %failure.explanation,
        "candidate failed"
    );
    gw.engine.record_failure(attempt, failure)
}
