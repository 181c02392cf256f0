//! What the caller gets: an upstream answer passed on (through the caller-bound checks),
//! with Keyward's headers; or, when nothing could serve it, Keyward's own error in the
//! caller's wire format — every candidate named with its state and evidence, and retry
//! signals that follow the cause (docs/health.md, "What the caller is told").

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use keyward_core::health::{RequestSpec, Selection, Unavailable};
use keyward_wire::stream::Api;
use tracing::warn;

use super::caller_bound::{self, SecretMask};
use super::caller_error::CallerError;
use super::failover::Tried;
use super::verdict::content_type;
use super::Gateway;
use crate::config::Detail;

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

/// What an answer the gateway built itself cost upstream, for the access log and the
/// attempts metric (a response extension: never sent to the caller).
#[derive(Debug, Clone)]
pub struct AttemptInfo {
    pub attempts: u32,
    /// The credential of the last failed attempt.
    pub credential: Option<Arc<str>>,
}

pub(super) fn with_attempts(
    mut r: Response<Body>,
    attempts: u32,
    last: Option<&Tried>,
) -> Response<Body> {
    r.extensions_mut().insert(AttemptInfo {
        attempts,
        credential: last.map(|t| t.credential.clone()),
    });
    r
}

/// Where a passed-through answer came from, for its headers; and the mask its headers
/// pass.
pub(super) struct Sent<'a> {
    pub(super) mask: &'a SecretMask,
    pub(super) token: Option<&'a str>,
    pub(super) credential: &'a str,
    pub(super) endpoint: &'a str,
    pub(super) model: &'a str,
    pub(super) attempts: u32,
    pub(super) started: Instant,
    pub(super) upstream: Duration,
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

/// An upstream error that is the caller's answer (its own bad request, a content filter,
/// a context overflow with no fallback): passed on when it is complete JSON (masked),
/// otherwise Keyward's own valid error with the same status.
pub(super) fn pass_on_error(
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
pub(super) fn passthrough(
    status: u16,
    headers: &[(String, String)],
    body: Bytes,
    sent: &Sent<'_>,
) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    // A static, not a const: a const array would be built and dropped for every header.
    static KEPT: [HeaderName; 5] = [
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

pub(super) fn decorate(
    h: &mut axum::http::HeaderMap,
    credential: &str,
    endpoint: &str,
    model: &str,
    attempts: u32,
    started: Instant,
    upstream: Duration,
) {
    super::telemetry::answered_by(model);
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
    let mut timing = String::with_capacity(48);
    timing.push_str("gateway;dur=");
    push_millis(&mut timing, gateway);
    timing.push_str(", upstream;dur=");
    push_millis(&mut timing, upstream);
    if let Ok(v) = HeaderValue::from_str(&timing) {
        h.insert(SERVER_TIMING, v);
    }
}

/// Appends a duration as milliseconds with three decimals (`0.123`, `1520.007`), from
/// integer microseconds, digit by digit: no float and no `core::fmt` on every response.
fn push_millis(out: &mut String, d: Duration) {
    let mut n = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    // Written from the end: three decimals, the point, then at least one digit. u64::MAX
    // has 20 digits: 21 bytes with the point.
    let mut text = [b'0'; 21];
    let mut start = text.len();
    let mut digit = |start: &mut usize, n: &mut u64| {
        *start -= 1;
        text[*start] = b'0' + (*n % 10) as u8;
        *n /= 10;
    };
    for _ in 0..3 {
        digit(&mut start, &mut n);
    }
    start -= 1;
    let point = start;
    loop {
        digit(&mut start, &mut n);
        if n == 0 {
            break;
        }
    }
    text[point] = b'.';
    // ASCII digits and a point: always UTF-8.
    out.push_str(std::str::from_utf8(&text[start..]).unwrap_or_default());
}

/// Nothing usable: fast, actionable, in the caller's format; never 401/403. The message
/// names every candidate with its state, evidence and next check (at the full detail
/// level); the retry signals follow the cause (docs/health.md, "What the caller is told"):
/// retryable with an honest `retry-after` only when some candidate is out for a transient
/// cause, otherwise `x-should-retry: false` and no `retry-after`.
pub(super) fn unavailable(
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
    let mut r = e.response(api);
    if retry_in.is_none() {
        // A gateway key may ask for another status for this answer ([`for_key`]).
        r.extensions_mut().insert(DeadKeys(e));
    }
    r
}

/// The "every credential is out for a permanent cause" error of [`unavailable`], kept
/// on its response (an extension, never sent) so [`for_key`] can restate it.
#[derive(Debug, Clone)]
pub struct DeadKeys(CallerError);

/// `r` as the caller's gateway key wants it: when it is the dead-keys error and the key
/// sets `dead_keys_status` (for a client that retries every 5xx whatever
/// `x-should-retry` says, docs/clients.md), the same message and retry signals under
/// that status and its native error type; any other answer as it is.
pub(super) fn for_key(
    cfg: &crate::config::Config,
    gateway_key: &str,
    api: Api,
    r: Response<Body>,
) -> Response<Body> {
    let Some(DeadKeys(e)) = r.extensions().get::<DeadKeys>() else {
        return r;
    };
    let status = cfg
        .gateway_keys
        .iter()
        .find(|k| &*k.name == gateway_key)
        .and_then(|k| k.dead_keys_status)
        .and_then(|s| StatusCode::from_u16(s).ok());
    let Some(status) = status.filter(|s| *s != e.status) else {
        return r;
    };
    let restated = e.clone().with_status(status).response(api);
    let (mut parts, _) = r.into_parts();
    let (fresh, body) = restated.into_parts();
    parts.status = fresh.status;
    parts.headers.extend(fresh.headers);
    Response::from_parts(parts, body)
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
pub(super) fn exhausted(
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

    #[test]
    fn millis_have_three_decimals() {
        let shown = |us: u64| {
            let mut s = String::new();
            push_millis(&mut s, Duration::from_micros(us));
            s
        };
        assert_eq!(shown(0), "0.000");
        assert_eq!(shown(7), "0.007");
        assert_eq!(shown(123), "0.123");
        assert_eq!(shown(1_000), "1.000");
        assert_eq!(shown(1_520_007), "1520.007");
        assert_eq!(shown(u64::MAX), "18446744073709551.615");
        let mut s = String::new();
        push_millis(&mut s, Duration::MAX);
        assert_eq!(s, "18446744073709551.615");
    }
}
