//! One request through the gateway: candidates in order, each attempt classified, health
//! updated, failover invisible until the first content byte, bounded everywhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyDataStream;
use keyward_core::classify::{
    classify, Attempt, Class, CredentialKind, Failure, Phase, Scope, TransportError,
};
use keyward_core::health::budget::RequestBudget;
use keyward_core::health::{AttemptScope, Headroom, RequestSpec, Selection, Unavailable};
use keyward_wire::json_stream::{JsonArrayFramer, JsonItem};
use keyward_wire::splice;
use keyward_wire::sse::SseFramer;
use keyward_wire::stream::{gemini_element, inspect_sse, Api, EventKind};
use keyward_wire::usage::{self, Usage};
use tracing::Instrument as _;
use tracing::{info, warn};

use super::caller_bound::{self, SecretMask};
use super::native::CallerError;

/// Which credential served the request (its id, never its secret).
pub const X_KEYWARD_CREDENTIAL: HeaderName = HeaderName::from_static("x-keyward-credential");
/// The endpoint and upstream model that served it (`endpoint/model`).
pub const X_KEYWARD_TARGET: HeaderName = HeaderName::from_static("x-keyward-target");
/// How many upstream attempts the request took.
pub const X_KEYWARD_ATTEMPTS: HeaderName = HeaderName::from_static("x-keyward-attempts");
/// The request's id in the gateway's logs.
pub const X_KEYWARD_REQUEST_ID: HeaderName = HeaderName::from_static("x-keyward-request-id");
/// `gateway;dur=…, upstream;dur=…` in milliseconds.
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
use super::upstream::Inbound;
use super::{upstream, Gateway, Prepared};
use crate::config::Detail;

/// Most bytes of an upstream error body read, to classify it and to pass it on (a larger
/// one is replaced by Keyward's own error, quoting its start).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How long a request may wait for a cooling candidate to recover before answering.
const MAX_WAIT_FOR_RECOVERY: Duration = Duration::from_secs(10);

/// How long to wait for the earliest cooldown to end, when it ends soon enough (within
/// [`MAX_WAIT_FOR_RECOVERY`] and before the request's deadline) to be worth waiting for.
fn recovery_wait(
    gw: &Gateway,
    u: &keyward_core::health::Unavailable,
    deadline: keyward_core::health::Timestamp,
) -> Option<Duration> {
    // Only a transient cause is worth waiting for (a revocation's probe is not).
    let at = u.retry_at()?;
    let wait = at.since(gw.engine.now());
    (wait <= MAX_WAIT_FOR_RECOVERY && at < deadline).then(|| wait + Duration::from_millis(5))
}

#[derive(Clone)]
struct Tried {
    failure: Failure,
    credential: Arc<str>,
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
    let mut r = serve_inner(gw, inbound, prep, caller, detail, started).await;
    // Responses the gateway produced itself (errors) carry their timing too.
    if !r.headers().contains_key(SERVER_TIMING) {
        let gateway_ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Ok(v) = HeaderValue::from_str(&format!("gateway;dur={gateway_ms:.3}")) {
            r.headers_mut().insert(SERVER_TIMING, v);
        }
    }
    r
}

async fn serve_inner(
    gw: Arc<Gateway>,
    inbound: Inbound,
    prep: Prepared,
    caller: HeaderMap,
    detail: Detail,
    started: Instant,
) -> Response<Body> {
    let api = inbound.api();
    let mut upstream_time = Duration::ZERO;
    let mut route = prep.route.clone();
    let mut switched_for_context = false;
    let deadline = gw.engine.now().plus(route.timeouts.request);
    // The same deadline for the I/O of an attempt: headers and a non-streaming body are
    // read before it, however slowly an upstream drips.
    let deadline_at = tokio::time::Instant::now() + route.timeouts.request;
    let mut budget = RequestBudget::new(gw.cfg.limits.max_attempts, deadline);
    gw.retry_budget
        .lock()
        .map(|mut b| b.on_request(gw.engine.now()))
        .ok();
    // Session affinity: the caller's session header, else the conversation's hash; a
    // header or a conversation past its first turn prefers its credential so far.
    let header_session = session_header(&caller);
    let req_spec = RequestSpec {
        session: header_session.or(prep.conversation),
        sticky: header_session.is_some() || prep.continued,
        bucket: None,
    };
    let mut last: Option<Tried> = None;
    // The first failure: the real cause, kept for the caller even when fallbacks fail
    // for reasons of their own.
    let mut first: Option<Tried> = None;
    let mut waited = false;
    'route: loop {
        let spec = gw.route_spec(&route.name);
        // The decision lines are written at info; below that level their text (a line
        // per skipped candidate, with timestamps) is not built at all — it was over a
        // quarter of the request path's instructions with 10 of 100 keys disabled.
        let selection = if tracing::enabled!(tracing::Level::INFO) {
            let (selection, skipped) = gw.engine.select_explained(&spec, &req_spec);
            for s in &skipped {
                info!(route = %route.name, credential = %s.credential, decision = %format_args!("skipped `{}`: {}", s.credential, s.reason), "candidate skipped");
            }
            selection
        } else {
            gw.engine.select(&spec, &req_spec)
        };
        let candidates = match selection {
            Selection::Candidates(c) => c,
            Selection::Unavailable(u) => {
                // A cooldown that ends soon is worth waiting for, once, within the deadline.
                if let Some(wait) = recovery_wait(&gw, &u, deadline).filter(|_| !waited) {
                    waited = true;
                    tokio::time::sleep(wait).await;
                    continue 'route;
                }
                return with_attempts(
                    unavailable(
                        &gw,
                        api,
                        &route.name,
                        &u,
                        first.as_ref().or(last.as_ref()),
                        detail,
                    ),
                    budget.attempts(),
                    last.as_ref(),
                );
            }
        };
        let mut retried_same = false;
        let mut refreshed = false;
        let mut i = 0;
        while i < candidates.len() {
            let cand = candidates[i];
            if !budget.take(gw.engine.now()) {
                break 'route;
            }
            let Some(attempt) = gw.engine.admit(&spec, &cand, &req_spec) else {
                i += 1;
                continue;
            };
            let target = &spec.targets[cand.target];
            // The health spec is built from the route's targets in order.
            let timeouts = route
                .targets
                .get(cand.target)
                .map_or(route.timeouts, |t| t.timeouts);
            // Embeddings never fall back to another model (vectors would not compare).
            if inbound == Inbound::Embeddings
                && spec
                    .targets
                    .first()
                    .is_some_and(|t| t.model != target.model)
            {
                drop(attempt);
                i += 1;
                continue;
            }
            let Some(cred) = gw.credential(&attempt.credential()) else {
                i += 1;
                continue;
            };
            let Some(endpoint) = gw.cfg.endpoints.get(&target.endpoint) else {
                i += 1;
                continue;
            };
            // A target serves only the inbound APIs its provider speaks, and those its
            // configuration allows (a Codex token: the Responses API only).
            let allowed = route
                .targets
                .get(cand.target)
                .and_then(|t| t.apis.as_ref())
                .is_none_or(|apis| apis.contains(&inbound.name()));
            if !inbound.served_by(endpoint.provider) || !allowed {
                info!(credential = %cred.id, target = %target.endpoint, api = inbound.name(), "skipped candidate: its target does not serve this API");
                drop(attempt);
                i += 1;
                continue;
            }
            // A key needs no await; an OAuth token's lookup (and refresh) is boxed so its
            // large state is not part of every request's future.
            let secret = match &cred.secret {
                Some(s) => Ok(s.shared()),
                None => Box::pin(gw.auth(&cred)).await,
            };
            let secret = match secret {
                Ok(s) => s,
                Err(e) => {
                    warn!(credential = %cred.id, reason = %e, "skipped candidate: no usable OAuth token");
                    drop(attempt);
                    i += 1;
                    continue;
                }
            };
            // Only the `model` value is rewritten (Gemini names it in the URL instead).
            let body = match &prep.model_at {
                Some(at) => splice::replace_at(&prep.body, at.clone(), &target.model)
                    .unwrap_or_else(|_| prep.body.to_vec()),
                None => prep.body.to_vec(),
            };
            let Some(url) =
                gw.upstream_url(&route.name, cand.target, inbound, endpoint, &target.model)
            else {
                warn!(credential = %cred.id, target = %target.endpoint, "skipped candidate: its upstream URL does not parse");
                drop(attempt);
                i += 1;
                continue;
            };
            let req = match upstream::request(
                axum::http::Method::POST,
                url,
                endpoint,
                (cred.kind, &secret),
                Some(&caller),
                Some(body),
            ) {
                Ok(req) => req,
                Err(e) => {
                    warn!(credential = %cred.id, reason = %e, "skipped candidate");
                    drop(attempt);
                    i += 1;
                    continue;
                }
            };
            let attempt_no = budget.attempts();
            let sent = stopwatch();
            let headers_by = (tokio::time::Instant::now() + timeouts.headers).min(deadline_at);
            let outcome = tokio::time::timeout_at(headers_by, gw.client.send(req)).await;
            // A rotating OAuth access token is not in the configuration's mask: the one
            // this attempt sent is masked on its own.
            let token = cred.secret.is_none().then_some(&*secret);
            let classify_ctx = |status: Option<u16>,
                                headers: &[(&str, &str)],
                                body: &[u8],
                                transport: Option<TransportError>,
                                phase: Phase| {
                let mut failure = classify(&Attempt {
                    provider: endpoint.provider,
                    credential: cred.kind,
                    endpoint: keyward_core::classify::EndpointKind::Inference,
                    phase,
                    transport,
                    status,
                    headers,
                    body,
                    now: wall_clock(),
                });
                // The verdict quotes the upstream's words into logs, health history and
                // the caller's error: the configured secrets are masked there too.
                gw.mask.scrub(&mut failure, token);
                failure
            };
            let resp = match outcome {
                Err(_) => Err(classify_ctx(
                    None,
                    &[],
                    b"",
                    Some(TransportError::Timeout),
                    Phase::BeforeHeaders,
                )),
                Ok(Err(e)) => Err(classify_ctx(
                    None,
                    &[],
                    b"",
                    Some(transport_kind(&e)),
                    Phase::BeforeHeaders,
                )),
                Ok(Ok(r)) => Ok(r),
            };
            let resp = match resp {
                Err(failure) => {
                    upstream_time += sent.elapsed();
                    let advice = record_failure(&gw, attempt, &failure, &route.name);
                    note(&mut first, &mut last, failure, &cred.id);
                    if advice.retry_same && !retried_same && gw.spend_retry() {
                        retried_same = true;
                        continue;
                    }
                    i += 1;
                    continue;
                }
                Ok(r) => r,
            };
            let status = resp.status().as_u16();
            let headers = header_pairs(resp.headers());
            if status >= 400 {
                let read =
                    caller_bound::read_body(resp, MAX_ERROR_BODY, timeouts.idle, deadline_at).await;
                let body = &read.body;
                upstream_time += sent.elapsed();
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let failure = classify_ctx(Some(status), &h, body, None, Phase::Headers);
                // An OAuth access token the provider rejects (expired, or revoked with
                // its session): no verdict yet. Refresh (once per request; one refresh per
                // credential however many requests see it) and retry on the same
                // credential. The token endpoint's answer is definitive for the grant
                // (`invalid_grant` disables it with a "log in again" remedy); only a
                // rejection of a freshly refreshed token counts against the credential.
                if let (Some(cfg), Class::AuthTransient | Class::AuthPermanent, false, true) = (
                    &cred.oauth,
                    failure.class,
                    refreshed,
                    // "Expired" is always worth one refresh per token; any other rejection
                    // of a token issued moments ago is a verdict (or an incident).
                    failure.class == Class::AuthTransient
                        || gw
                            .oauth
                            .worth_refreshing(&cred.id, &secret, gw.engine.now()),
                ) {
                    refreshed = true;
                    gw.metrics.attempt(&cred.id, failure.class.as_str());
                    drop(attempt);
                    // Still evidence for a provider-wide incident; during one, refreshing
                    // is pointless: fail over.
                    if gw.engine.note_auth_rejection(&cred.id) {
                        info!(credential = %cred.id, "access token rejected during a provider auth incident: failing over without a refresh");
                        note(&mut first, &mut last, failure, &cred.id);
                        i += 1;
                        continue;
                    }
                    let outcome = Box::pin(
                        gw.oauth
                            .refresh_after_rejection(&cred, cfg, &gw.engine, &secret),
                    )
                    .await;
                    note(&mut first, &mut last, failure, &cred.id);
                    match outcome {
                        Ok(_) => {
                            info!(credential = %cred.id, "access token rejected as expired: refreshed, retrying");
                        }
                        Err(e) => {
                            warn!(credential = %cred.id, reason = %e, "access token rejected and the refresh failed: failing over");
                            i += 1;
                        }
                    }
                    continue;
                }
                let advice = record_failure(&gw, attempt, &failure, &route.name);
                match (failure.class, failure.scope) {
                    // The caller's own request: return the provider's answer as it is.
                    (Class::BadRequest, Scope::Request) | (Class::ContentFilter, _)
                        if first.is_none() =>
                    {
                        return pass_on_error(
                            api,
                            status,
                            &headers,
                            &read,
                            &Sent {
                                mask: &gw.mask,
                                token,
                                credential: &cred.id,
                                endpoint: &target.endpoint,
                                model: &target.model,
                                attempts: attempt_no,
                                started,
                                upstream: upstream_time,
                            },
                        );
                    }
                    (Class::ContextOverflow, _) => {
                        if let (Some(next), false) =
                            (route.context_fallback.clone(), switched_for_context)
                        {
                            if let Some(r) = gw.route(&next) {
                                info!(route = %route.name, fallback = %next, "context overflow: routing to the larger-context fallback");
                                route = r;
                                switched_for_context = true;
                                note(&mut first, &mut last, failure, &cred.id);
                                continue 'route;
                            }
                        }
                        return pass_on_error(
                            api,
                            status,
                            &headers,
                            &read,
                            &Sent {
                                mask: &gw.mask,
                                token,
                                credential: &cred.id,
                                endpoint: &target.endpoint,
                                model: &target.model,
                                attempts: attempt_no,
                                started,
                                upstream: upstream_time,
                            },
                        );
                    }
                    _ => {}
                }
                let transient = matches!(
                    failure.class,
                    Class::Overloaded
                        | Class::ServerError
                        | Class::Timeout
                        | Class::Network
                        | Class::RateLimit
                );
                note(&mut first, &mut last, failure, &cred.id);
                if advice.retry_same && !retried_same && gw.spend_retry() {
                    retried_same = true;
                    continue;
                }
                if transient && !gw.spend_retry() {
                    warn!(route = %route.name, "retry budget exhausted: not failing over further");
                    break 'route;
                }
                i += 1;
                continue;
            }
            // A success status.
            let headroom = headroom(&headers);
            if !prep.stream {
                let read = caller_bound::read_body(
                    resp,
                    gw.cfg.limits.max_body_bytes,
                    timeouts.idle,
                    deadline_at,
                )
                .await;
                upstream_time += sent.elapsed();
                // Nothing is sent unless the body is whole, JSON, and masked: a truncated,
                // stalled, oversized or HTML "success" is a failure of this attempt.
                let body = match caller_bound::success_body(
                    &gw.mask,
                    token,
                    status,
                    content_type(&headers),
                    &read,
                ) {
                    Ok(std::borrow::Cow::Borrowed(_)) => read.body.clone(),
                    Ok(std::borrow::Cow::Owned(masked)) => Bytes::from(masked),
                    Err(defect) => {
                        let failure = defect.failure(endpoint.provider, cred.kind);
                        record_failure(&gw, attempt, &failure, &route.name);
                        note(&mut first, &mut last, failure, &cred.id);
                        i += 1;
                        continue;
                    }
                };
                if carries_error(&body) {
                    let h: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let failure = classify_ctx(Some(status), &h, &body, None, Phase::Headers);
                    record_failure(&gw, attempt, &failure, &route.name);
                    note(&mut first, &mut last, failure, &cred.id);
                    i += 1;
                    continue;
                }
                gw.metrics.attempt(&cred.id, "ok");
                if let Some(u) = usage::usage(&body) {
                    gw.metrics
                        .tokens(&cred.id, &route.name, &prep.gateway_key, u);
                }
                gw.engine.record_success(attempt, headroom);
                return passthrough(
                    status,
                    &headers,
                    body,
                    &Sent {
                        mask: &gw.mask,
                        token,
                        credential: &cred.id,
                        endpoint: &target.endpoint,
                        model: &target.model,
                        attempts: attempt_no,
                        started,
                        upstream: upstream_time,
                    },
                );
            }
            // A stream: hold it until its first content event.
            match hold_stream(
                resp,
                api,
                Framer::for_inbound(inbound, gw.cfg.limits.max_event_bytes),
                timeouts.first_token,
            )
            .await
            {
                Held::Failed {
                    status_hint,
                    bytes,
                    transport,
                    phase,
                } => {
                    upstream_time += sent.elapsed();
                    let h: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let failure =
                        classify_ctx(status_hint.or(Some(status)), &h, &bytes, transport, phase);
                    record_failure(&gw, attempt, &failure, &route.name);
                    note(&mut first, &mut last, failure, &cred.id);
                    i += 1;
                    continue;
                }
                Held::Committed {
                    prefix,
                    terminal,
                    rest,
                    framer,
                } => {
                    upstream_time += sent.elapsed();
                    let mut r = stream_response(Pump {
                        gw: gw.clone(),
                        api,
                        prefix: Some(prefix),
                        rest,
                        framer,
                        idle: timeouts.idle,
                        attempt: Some(attempt),
                        headroom,
                        terminal,
                        done_sent: false,
                        finished: false,
                        route: route.name.clone(),
                        gateway_key: prep.gateway_key.clone(),
                        provider: endpoint.provider,
                        kind: cred.kind,
                        credential: cred.id.clone(),
                        token: cred.secret.is_none().then(|| secret.clone()),
                    });
                    decorate(
                        r.headers_mut(),
                        &cred.id,
                        &target.endpoint,
                        &target.model,
                        attempt_no,
                        started,
                        upstream_time,
                    );
                    return r;
                }
            }
        }
        // Every candidate of this selection was tried: select again (cooldowns may end).
        if last.is_none() || waited {
            break;
        }
        let spec = gw.route_spec(&route.name);
        match gw.engine.select(&spec, &req_spec) {
            Selection::Candidates(_) if budget.attempts() < gw.cfg.limits.max_attempts => {
                waited = true;
                continue 'route;
            }
            Selection::Unavailable(u) => {
                if let Some(wait) = recovery_wait(&gw, &u, deadline)
                    .filter(|_| budget.attempts() < gw.cfg.limits.max_attempts)
                {
                    waited = true;
                    tokio::time::sleep(wait).await;
                    continue 'route;
                }
                return with_attempts(
                    unavailable(
                        &gw,
                        api,
                        &route.name,
                        &u,
                        first.as_ref().or(last.as_ref()),
                        detail,
                    ),
                    budget.attempts(),
                    last.as_ref(),
                );
            }
            _ => break,
        }
    }
    with_attempts(
        exhausted(
            api,
            &route.name,
            first.as_ref(),
            last.as_ref(),
            detail,
            &gw,
            &req_spec,
        ),
        budget.attempts(),
        last.as_ref(),
    )
}

/// What an answer the gateway built itself cost upstream, for the access log and the
/// attempts metric (a response extension: never sent to the caller).
#[derive(Debug, Clone)]
pub struct AttemptInfo {
    pub attempts: u32,
    /// The credential of the last failed attempt.
    pub credential: Option<Arc<str>>,
}

fn with_attempts(mut r: Response<Body>, attempts: u32, last: Option<&Tried>) -> Response<Body> {
    r.extensions_mut().insert(AttemptInfo {
        attempts,
        credential: last.map(|t| t.credential.clone()),
    });
    r
}

/// Headers agents send to name their session (prompt-cache affinity).
const SESSION_HEADERS: [&str; 4] = [
    "x-session-id",
    "session_id",
    "x-keyward-session",
    "x-claude-code-session-id",
];

/// A stable hash of the caller's session header, if it sent one.
fn session_header(caller: &HeaderMap) -> Option<u64> {
    use std::hash::Hasher as _;
    let v = SESSION_HEADERS.iter().find_map(|h| caller.get(*h))?;
    let mut h = std::hash::DefaultHasher::new();
    h.write(v.as_bytes());
    Some(h.finish())
}

/// Keeps the first failure (the real cause) and the latest.
fn note(
    first: &mut Option<Tried>,
    last: &mut Option<Tried>,
    failure: Failure,
    credential: &Arc<str>,
) {
    let t = Tried {
        failure,
        credential: credential.clone(),
    };
    if first.is_none() {
        *first = Some(t.clone());
    }
    *last = Some(t);
}

fn record_failure(
    gw: &Gateway,
    attempt: AttemptScope,
    failure: &Failure,
    route: &str,
) -> keyward_core::health::engine::FailureAdvice {
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

/// What kind of transport failure `e` is: from the I/O and TLS errors in its source chain
/// first, then from the connector's own words (hyper-util's resolver reports "dns error").
fn transport_kind(e: &upstream::SendError) -> TransportError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return TransportError::Tls;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::TimedOut => return TransportError::Timeout,
                std::io::ErrorKind::ConnectionRefused => return TransportError::ConnectRefused,
                _ => {}
            }
            // An I/O error's `source` skips the error it wraps (the TLS connector wraps
            // rustls's in two layers): descend into it.
            if let Some(inner) = io.get_ref() {
                source = Some(inner);
                continue;
            }
        }
        source = s.source();
    }
    let text = format!("{e:?}").to_ascii_lowercase();
    if text.contains("dns") || text.contains("resolve") {
        TransportError::Dns
    } else if text.contains("refused") {
        TransportError::ConnectRefused
    } else if text.contains("tls") || text.contains("certificate") {
        TransportError::Tls
    } else {
        TransportError::Reset
    }
}

/// A monotonic start time for `Server-Timing`: measurement at the edge, never a decision
/// (decisions read the health engine's injected clock).
#[allow(clippy::disallowed_methods)]
fn stopwatch() -> Instant {
    Instant::now()
}

/// The wall clock at the edge, for the classifier's HTTP-date parsing.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

fn header_pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect()
}

fn headroom(headers: &[(String, String)]) -> Option<Headroom> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
    };
    let remaining = get("anthropic-ratelimit-requests-remaining")
        .or_else(|| get("x-ratelimit-remaining-requests"))?;
    let limit =
        get("anthropic-ratelimit-requests-limit").or_else(|| get("x-ratelimit-limit-requests"));
    Some(Headroom {
        remaining,
        limit,
        reset_at: None,
    })
}

/// Reads `resp`'s body, up to `limit` bytes, while each piece comes within `idle`; a body
/// cut short gives what arrived.
pub(super) async fn read_limited(
    resp: upstream::Response,
    limit: usize,
    idle: Duration,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = BodyDataStream::new(resp.into_body());
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(idle, stream.next()).await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// Whether a 2xx JSON body is really an error (`{"error": …}` or `{"type":"error"}`).
fn carries_error(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(default)]
        error: Option<serde::de::IgnoredAny>,
        #[serde(default, borrow, rename = "type")]
        ty: Option<&'a str>,
    }
    // Both signs contain the word; a success body without it is not parsed at all.
    memchr::memmem::find(body, b"error").is_some()
        && serde_json::from_slice::<Probe<'_>>(body)
            .is_ok_and(|p| p.error.is_some() || p.ty == Some("error"))
}

/// Where a passed-through answer came from, for its headers; and the mask its headers
/// pass.
struct Sent<'a> {
    mask: &'a SecretMask,
    token: Option<&'a str>,
    credential: &'a str,
    endpoint: &'a str,
    model: &'a str,
    attempts: u32,
    started: Instant,
    upstream: Duration,
}

impl Sent<'_> {
    fn decorate(&self, h: &mut HeaderMap) {
        decorate(
            h,
            self.credential,
            self.endpoint,
            self.model,
            self.attempts,
            self.started,
            self.upstream,
        );
    }
}

/// The response's `content-type`, if it sent one.
fn content_type(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str())
}

/// An upstream error that is the caller's answer (its own bad request, a content filter,
/// a context overflow with no fallback): passed on when it is complete JSON (masked),
/// otherwise Keyward's own valid error with the same status.
fn pass_on_error(
    api: Api,
    status: u16,
    headers: &[(String, String)],
    read: &caller_bound::Read,
    sent: &Sent<'_>,
) -> Response<Body> {
    match caller_bound::error_body(sent.mask, sent.token, status, content_type(headers), read) {
        Ok(body) => passthrough(status, headers, body, sent),
        Err(e) => {
            warn!(credential = %sent.credential, status, "the upstream error body could not be passed on as it was (too large, cut or not JSON): answered with keyward's own error");
            let mut r = e.response(api);
            sent.decorate(r.headers_mut());
            r
        }
    }
}

/// An upstream answer for the caller: `body` has been through [`caller_bound`] (complete,
/// JSON, masked); of the headers only a few pass, and none that carries a secret.
fn passthrough(
    status: u16,
    headers: &[(String, String)],
    body: Bytes,
    sent: &Sent<'_>,
) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    const KEPT: [HeaderName; 5] = [
        axum::http::header::CONTENT_TYPE,
        axum::http::header::RETRY_AFTER,
        HeaderName::from_static("x-should-retry"),
        HeaderName::from_static("request-id"),
        HeaderName::from_static("x-request-id"),
    ];
    for (k, v) in headers {
        if let Some(name) = KEPT.iter().find(|n| n.as_str().eq_ignore_ascii_case(k)) {
            if sent.mask.contains_secret(v.as_bytes(), sent.token) {
                continue;
            }
            if let Ok(value) = HeaderValue::from_str(v) {
                r.headers_mut().insert(name.clone(), value);
            }
        }
    }
    sent.decorate(r.headers_mut());
    r
}

fn decorate(
    h: &mut axum::http::HeaderMap,
    credential: &str,
    endpoint: &str,
    model: &str,
    attempts: u32,
    started: Instant,
    upstream: Duration,
) {
    use std::fmt::Write as _;
    let gateway = started.elapsed().saturating_sub(upstream);
    if let Ok(v) = HeaderValue::from_str(credential) {
        h.insert(X_KEYWARD_CREDENTIAL, v);
    }
    let mut target = String::with_capacity(endpoint.len() + model.len() + 1);
    target.push_str(endpoint);
    target.push('/');
    target.push_str(model);
    if let Ok(v) = HeaderValue::from_str(&target) {
        h.insert(X_KEYWARD_TARGET, v);
    }
    h.insert(X_KEYWARD_ATTEMPTS, HeaderValue::from(attempts));
    // Milliseconds with three decimals, from integer microseconds (no float formatting on
    // every response).
    let mut timing = String::with_capacity(48);
    let _ = write!(
        timing,
        "gateway;dur={}, upstream;dur={}",
        Millis(gateway),
        Millis(upstream)
    );
    if let Ok(v) = HeaderValue::from_str(&timing) {
        h.insert(SERVER_TIMING, v);
    }
}

/// A duration shown as milliseconds with three decimals (`0.123`).
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = self.0.as_micros();
        write!(f, "{}.{:03}", us / 1000, us % 1000)
    }
}

/// Splits an upstream stream into events: SSE events, or the elements of a Gemini
/// JSON-array stream (whose brackets and commas are rebuilt on the way out).
/// A stream's framer, and the token usage its events reported so far.
struct Framer {
    kind: FramerKind,
    usage: Usage,
}

enum FramerKind {
    Sse(SseFramer),
    Array {
        framer: JsonArrayFramer,
        started: bool,
        closed: bool,
    },
}

/// One framed piece: the bytes to forward and what it means.
struct Piece {
    out: Vec<u8>,
    kind: EventKind,
}

impl Framer {
    fn for_inbound(inbound: Inbound, max_event: usize) -> Framer {
        match inbound {
            Inbound::Gemini(call) if !call.sse => Framer {
                kind: FramerKind::Array {
                    framer: JsonArrayFramer::new(max_event),
                    started: false,
                    closed: false,
                },
                usage: Usage::default(),
            },
            _ => Framer {
                kind: FramerKind::Sse(SseFramer::new(max_event)),
                usage: Usage::default(),
            },
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        match &mut self.kind {
            FramerKind::Sse(f) => f.push(chunk),
            FramerKind::Array { framer, .. } => framer.push(chunk),
        }
    }

    /// The next piece; `Err` when an event exceeds its size bound.
    fn next(&mut self, api: Api) -> Option<Result<Piece, ()>> {
        let usage = &mut self.usage;
        match &mut self.kind {
            FramerKind::Sse(f) => f.next_event().map(|e| {
                e.map(|ev| {
                    if let Some(u) = usage::usage(&ev.data) {
                        *usage = usage.max(u);
                    }
                    Piece {
                        kind: inspect_sse(api, &ev),
                        out: ev.raw,
                    }
                })
                .map_err(|_| ())
            }),
            FramerKind::Array {
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
                Err(_) => Err(()),
            }),
        }
    }

    /// What an unfinished stream left behind (for classification).
    fn finish(&mut self) -> Vec<u8> {
        match &mut self.kind {
            FramerKind::Sse(f) => f.finish().unwrap_or_default(),
            FramerKind::Array { framer, .. } => framer.finish().unwrap_or_default(),
        }
    }

    /// The caller's native in-band error, completing the wire format.
    fn error_tail(&self, e: &CallerError, api: Api) -> Vec<u8> {
        match &self.kind {
            FramerKind::Sse(_) => e.stream_event(api),
            FramerKind::Array { started, .. } => {
                let mut out = if *started {
                    b",\r\n".to_vec()
                } else {
                    b"[".to_vec()
                };
                out.extend(e.json_object());
                out.push(b']');
                out
            }
        }
    }

    /// What completes a stream whose terminal event came but whose wire format did not
    /// close (`[DONE]` for Chat Completions, `]` for a Gemini array).
    fn closing(&self, api: Api, done_sent: bool) -> Vec<u8> {
        match &self.kind {
            FramerKind::Array { closed: false, .. } => b"]".to_vec(),
            FramerKind::Sse(_) if api == Api::ChatCompletions && !done_sent => {
                b"data: [DONE]\n\n".to_vec()
            }
            _ => Vec::new(),
        }
    }

    fn is_array(&self) -> bool {
        matches!(self.kind, FramerKind::Array { .. })
    }
}

/// An upstream body's remaining bytes, as they arrive.
type Rest = futures_util::stream::BoxStream<'static, Result<Bytes, hyper::Error>>;

enum Held {
    /// The stream committed: its held bytes (preamble and first content) and the rest.
    Committed {
        prefix: Vec<u8>,
        terminal: bool,
        rest: Rest,
        framer: Framer,
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
async fn hold_stream(
    resp: upstream::Response,
    api: Api,
    mut framer: Framer,
    first_token: Duration,
) -> Held {
    let mut rest: Rest = BodyDataStream::new(resp.into_body()).boxed();
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

/// A committed stream: forwarded event by event, judged by its terminal event. It reads
/// upstream only when the caller's connection takes more bytes: a slow reader gets
/// backpressure, never an unbounded buffer.
struct Pump {
    gw: Arc<Gateway>,
    api: Api,
    prefix: Option<Vec<u8>>,
    rest: Rest,
    framer: Framer,
    idle: Duration,
    attempt: Option<AttemptScope>,
    headroom: Option<Headroom>,
    terminal: bool,
    done_sent: bool,
    finished: bool,
    route: Arc<str>,
    gateway_key: Arc<str>,
    provider: keyward_core::classify::Provider,
    kind: CredentialKind,
    credential: Arc<str>,
    /// The OAuth access token the stream was opened with (masked like the configured
    /// secrets, which the gateway's mask holds).
    token: Option<Arc<str>>,
}

impl Drop for Pump {
    /// However the stream ended (complete, broken, or the caller gone), the tokens its
    /// events reported were used.
    fn drop(&mut self) {
        self.gw.metrics.tokens(
            &self.credential,
            &self.route,
            &self.gateway_key,
            self.framer.usage,
        );
    }
}

impl Pump {
    /// The next bytes for the caller, or `None` at the end: whole events (a secret is
    /// never split between two of them), masked.
    async fn next_bytes(&mut self) -> Option<Vec<u8>> {
        let out = self.next_events().await?;
        Some(self.gw.mask.mask_owned(out, self.token.as_deref()))
    }

    /// The next framed events, as upstream sent them.
    async fn next_events(&mut self) -> Option<Vec<u8>> {
        if let Some(p) = self.prefix.take() {
            // Events already framed with the held ones may be waiting.
            let mut out = p;
            out.extend(self.drain_events());
            return Some(out);
        }
        if self.finished {
            return None;
        }
        loop {
            // After the terminal event only trailers may follow (a usage chunk, `[DONE]`):
            // an upstream that keeps the connection open is not allowed to hold a complete
            // answer hostage for the whole idle limit.
            let wait = if self.terminal {
                self.idle.min(TERMINAL_GRACE)
            } else {
                self.idle
            };
            match tokio::time::timeout(wait, self.rest.next()).await {
                Err(_) if self.terminal => return self.finish_complete(),
                Err(_) => {
                    return Some(self.end_broken(
                        TransportError::Timeout,
                        "the upstream stream stalled (no bytes within the idle limit)",
                    ))
                }
                Ok(Some(Ok(chunk))) => {
                    self.framer.push(&chunk);
                    let out = self.drain_events();
                    if self.finished || !out.is_empty() {
                        return Some(out);
                    }
                }
                Ok(Some(Err(_))) => {
                    return Some(self.end_broken(
                        TransportError::Reset,
                        "the upstream stream was cut before its terminal event",
                    ))
                }
                Ok(None) => {
                    if self.terminal {
                        return self.finish_complete();
                    }
                    return Some(self.end_broken(
                        TransportError::Reset,
                        "the upstream stream ended before its terminal event",
                    ));
                }
            }
        }
    }

    /// Ends a stream whose terminal event came: the wire format's closing bytes (Chat
    /// Completions' `[DONE]` when upstream left it out), and a success for the attempt.
    fn finish_complete(&mut self) -> Option<Vec<u8>> {
        self.finished = true;
        let out = self.framer.closing(self.api, self.done_sent);
        if let Some(a) = self.attempt.take() {
            self.gw.metrics.attempt(&self.credential, "ok");
            self.gw.engine.record_success(a, self.headroom);
        }
        (!out.is_empty()).then_some(out)
    }

    fn drain_events(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(piece) = self.framer.next(self.api) {
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
                EventKind::Terminal => self.terminal = true,
                EventKind::Done => {
                    if self.framer.is_array() && !self.terminal {
                        // The array closed without a terminal element: incomplete.
                        out.extend(self.end_broken(
                            TransportError::Reset,
                            "the upstream stream ended before its terminal event",
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
                    if self.framer.is_array() {
                        out.push(b']');
                    }
                    let mut failure = classify(&Attempt {
                        provider: self.provider,
                        credential: self.kind,
                        endpoint: keyward_core::classify::EndpointKind::Inference,
                        phase: Phase::MidStream,
                        transport: None,
                        status: Some(200),
                        headers: &[],
                        body: &piece.out,
                        now: wall_clock(),
                    });
                    self.gw.mask.scrub(&mut failure, self.token.as_deref());
                    if let Some(a) = self.attempt.take() {
                        record_failure(&self.gw, a, &failure, &self.route);
                    }
                    self.finished = true;
                    return out;
                }
                EventKind::Content | EventKind::Other => {}
            }
            out.extend_from_slice(&piece.out);
            if self.done_sent {
                self.finished = true;
                if let Some(a) = self.attempt.take() {
                    self.gw.metrics.attempt(&self.credential, "ok");
                    self.gw.engine.record_success(a, self.headroom);
                }
                return out;
            }
        }
        out
    }

    /// Ends a committed stream that broke: the caller's native in-band error, never a
    /// silent truncation presented as success.
    fn end_broken(&mut self, t: TransportError, message: &str) -> Vec<u8> {
        self.finished = true;
        let label = self.gw.metrics.route(&self.route);
        self.gw.metrics.broken_streams.get_or_create(&label).inc();
        let failure =
            classify(&Attempt::transport(self.provider, t, Phase::MidStream).credential(self.kind));
        if let Some(a) = self.attempt.take() {
            record_failure(&self.gw, a, &failure, &self.route);
        }
        let mut e = CallerError::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "stream_interrupted",
            format!("keyward: {message}; the response is incomplete"),
        );
        e.should_retry = Some(true);
        self.framer.error_tail(&e, self.api)
    }
}

fn stream_response(pump: Pump) -> Response<Body> {
    let content_type = if pump.framer.is_array() {
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

/// Nothing usable: fast, actionable, in the caller's format; never 401/403. The message
/// names every candidate with its state, evidence and next check (at the full detail
/// level); the retry signals follow the cause (docs/health.md, "What the caller is told"):
/// retryable with an honest `retry-after` only when some candidate is out for a transient
/// cause, otherwise `x-should-retry: false` and no `retry-after`.
fn unavailable(
    gw: &Gateway,
    api: Api,
    route: &str,
    u: &Unavailable,
    last: Option<&Tried>,
    detail: Detail,
) -> Response<Body> {
    let now = gw.engine.now();
    let retry_in = u.retry_at().map(|at| at.since(now).as_secs().max(1));
    let message = match (detail, retry_in) {
        (Detail::Minimal, Some(secs)) => {
            format!("keyward: the upstream is temporarily unavailable; retry in {secs}s")
        }
        (Detail::Minimal, None) => "keyward: the upstream credentials for this model are exhausted; do not retry until an operator acts".to_owned(),
        (Detail::Full, _) => unavailable_message(route, u, last, retry_in),
    };
    let mut e = match retry_in {
        Some(secs) => {
            let mut e = CallerError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded_error",
                "upstream_unavailable",
                message,
            );
            e.retry_after = Some(secs);
            e
        }
        None => CallerError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "upstream_credentials_exhausted",
            message,
        ),
    };
    e.should_retry = Some(retry_in.is_some());
    e.response(api)
}

/// The full-detail text of [`unavailable`]: the incidents first (they explain the rest),
/// then every candidate, then what to do.
fn unavailable_message(
    route: &str,
    u: &Unavailable,
    last: Option<&Tried>,
    retry_in: Option<u64>,
) -> String {
    use std::fmt::Write as _;
    let n = u.candidates.len().max(u.total);
    let mut m = match retry_in {
        Some(_) => {
            format!(
                "keyward: no upstream credential can serve model `{route}` now (0 of {n} usable)."
            )
        }
        None => format!(
            "keyward: the upstream credentials for model `{route}` are exhausted (0 of {n} usable)."
        ),
    };
    for i in &u.incidents {
        let names: Vec<String> = i.credentials.iter().map(|c| format!("`{c}`")).collect();
        if i.expiring {
            let _ = write!(
                m,
                " The auth incident on endpoint `{}` since {} outlasted its bound ({} credentials rejected at once: {}): each is being probed once more, and those still rejected are disabled as revoked.",
                i.endpoint,
                i.since.rfc3339(),
                i.credentials.len(),
                names.join(", "),
            );
            continue;
        }
        let _ = write!(
            m,
            " Auth incident on endpoint `{}` since {}: {} credentials rejected at once ({}); nothing disabled; the next check is at {}. If these keys were revoked, replace them in keyward.toml; if every check is still rejected at {}, they are disabled.",
            i.endpoint,
            i.since.rfc3339(),
            i.credentials.len(),
            names.join(", "),
            i.next_probe.rfc3339(),
            i.disables_at.rfc3339(),
        );
    }
    for c in &u.candidates {
        let class = c.class.map_or("-", |c| c.as_str());
        let _ = write!(m, " `{}` {} ({class}", c.credential, c.state);
        if !c.scope.starts_with("credential/") {
            let _ = write!(m, " on {}", c.scope);
        }
        let _ = write!(m, ") since {}", c.since.rfc3339());
        if !c.evidence.is_empty() {
            let _ = write!(m, ": {}", clause(&c.evidence));
        }
        if let Some(t) = last.filter(|t| t.credential == c.credential) {
            // What happened, with the provider's words; the remedy is said once, below.
            let what = match t.failure.explanation.split_once("). ") {
                Some((what, _)) => format!("{what})"),
                None => clause(&t.failure.explanation).to_owned(),
            };
            let _ = write!(m, " — {what}");
        }
        match (c.state, c.next_check) {
            ("disabled", Some(at)) => {
                let _ = write!(m, "; re-checked at {}", at.rfc3339());
            }
            ("suspect" | "probing", Some(at)) if !c.incident => {
                let _ = write!(m, "; its confirmation probe runs at {}", at.rfc3339());
            }
            ("cooling", Some(at)) => {
                let _ = write!(m, "; back at {}", at.rfc3339());
            }
            _ => {}
        }
        // The remedy, per credential: an OAuth grant's evidence carries its own (log in
        // again); a rejected key is replaced or, once fixed at the provider, reset.
        if c.permanent && !c.evidence.contains("keyward credentials import") {
            let _ = write!(
                m,
                "; replace it in keyward.toml or reset it with `keyward reset {}`",
                c.credential
            );
        }
        m.push('.');
    }
    if u.candidates.is_empty() {
        if let Some(t) = last {
            let _ = write!(
                m,
                " Last failure: `{}` {} — {}",
                t.credential, t.failure.class, t.failure.explanation
            );
        }
    }
    match retry_in {
        Some(secs) => {
            let _ = write!(m, " Retry in {secs}s.");
        }
        None => m.push_str(" Retrying will not help until an operator acts."),
    }
    m
}

/// `text` as a clause inside a sentence: without its closing full stop.
fn clause(text: &str) -> &str {
    text.trim_end().trim_end_matches('.')
}

/// Attempts ran out (cap, deadline or retry budget) with the last failure in hand.
fn exhausted(
    api: Api,
    route: &str,
    first: Option<&Tried>,
    last: Option<&Tried>,
    detail: Detail,
    gw: &Gateway,
    spec: &RequestSpec,
) -> Response<Body> {
    if let Selection::Unavailable(u) = gw.engine.select(&gw.route_spec(route), spec) {
        return unavailable(gw, api, route, &u, first.or(last), detail);
    }
    let describe = |t: &Tried| {
        format!(
            "`{}` {} — {}",
            t.credential, t.failure.class, t.failure.explanation
        )
    };
    let message = match (detail, first, last) {
        (Detail::Full, Some(f), Some(l)) if f.failure != l.failure => format!(
            "keyward: no upstream answered for model `{route}` within the attempt limits; first failure (the real cause): {}; last: {}",
            describe(f),
            describe(l)
        ),
        (Detail::Full, Some(f), _) => format!("keyward: no upstream answered for model `{route}` within the attempt limits: {}", describe(f)),
        _ => "keyward: the upstream is temporarily unavailable".to_owned(),
    };
    let retry_after = last.or(first).and_then(|t| t.failure.retry_after);
    let mut e = CallerError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded_error",
        "upstream_unavailable",
        message,
    );
    e.retry_after = Some(retry_after.map_or(1, |d| d.as_secs().clamp(1, 60)));
    e.should_retry = Some(true);
    e.response(api)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    async fn send_error(url: &str) -> upstream::SendError {
        let client = upstream::Client::new(Duration::from_secs(5)).unwrap();
        let req = axum::http::Request::get(url)
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        client.send(req).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_closed_port_is_a_refused_connection() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = send_error(&format!("http://127.0.0.1:{port}/")).await;
        assert_eq!(transport_kind(&e), TransportError::ConnectRefused);
    }

    #[tokio::test]
    async fn a_server_that_does_not_speak_tls_is_a_tls_failure() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let e = send_error(&format!("https://127.0.0.1:{port}/")).await;
        assert_eq!(transport_kind(&e), TransportError::Tls);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_closed_before_any_answer_is_a_reset() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            drop(s);
        });
        let e = send_error(&format!("http://127.0.0.1:{port}/")).await;
        assert_eq!(transport_kind(&e), TransportError::Reset);
        server.await.unwrap();
    }
}
