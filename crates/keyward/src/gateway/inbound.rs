//! The callers' side of a request, up to the failover loop: each inbound API's handler,
//! the gateway key wherever the caller's SDK puts it, the body read once (bounded, within
//! the body budget and the request deadline), the model, `stream` flag and conversation
//! found in one pass, the route resolved — then [`super::failover::serve`], and the access
//! line and request metrics of the answer. A panic inside one request becomes a 500 for
//! that request only.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderMap, Request, Response, StatusCode};

use futures_util::FutureExt;
use keyward_wire::splice;
use keyward_wire::stream::Api;
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument as _;

use super::caller_error::{self, CallerError};
use super::telemetry;
use super::upstream::{GeminiCall, Inbound};
use super::{answer, body_budget, failover, refusals, Gateway, Prepared, Snapshot};
use crate::config::{Config, Detail};

#[derive(Debug, Deserialize, Default)]
pub(super) struct KeyQuery {
    key: Option<String>,
}

pub(super) async fn messages(
    Snapshot(gw): Snapshot,
    Query(q): Query<KeyQuery>,
    req: Request<Body>,
) -> Response<Body> {
    guarded(gw, Inbound::Messages, q, req).await
}

pub(super) async fn count_tokens(
    Snapshot(gw): Snapshot,
    Query(q): Query<KeyQuery>,
    req: Request<Body>,
) -> Response<Body> {
    guarded(gw, Inbound::CountTokens, q, req).await
}

pub(super) async fn responses(
    Snapshot(gw): Snapshot,
    Query(q): Query<KeyQuery>,
    req: Request<Body>,
) -> Response<Body> {
    guarded(gw, Inbound::Responses, q, req).await
}

pub(super) async fn embeddings(
    Snapshot(gw): Snapshot,
    Query(q): Query<KeyQuery>,
    req: Request<Body>,
) -> Response<Body> {
    guarded(gw, Inbound::Embeddings, q, req).await
}

pub(super) async fn chat(
    Snapshot(gw): Snapshot,
    Query(q): Query<KeyQuery>,
    req: Request<Body>,
) -> Response<Body> {
    guarded(gw, Inbound::Chat, q, req).await
}

pub(super) async fn gemini(
    Snapshot(gw): Snapshot,
    axum::extract::Path(model_action): axum::extract::Path<String>,
    Query(q): Query<GeminiQuery>,
    req: Request<Body>,
) -> Response<Body> {
    let (model, action) = model_action
        .split_once(':')
        .unwrap_or((model_action.as_str(), ""));
    let call = match action {
        "generateContent" => GeminiCall {
            stream: false,
            sse: false,
        },
        "streamGenerateContent" => GeminiCall {
            stream: true,
            sse: q.alt.as_deref() == Some("sse"),
        },
        other => {
            return CallerError::bad_request(format!(
                "keyward: unsupported Gemini method {:?}; use generateContent or streamGenerateContent",
                caller_error::bounded(other, caller_error::MAX_QUOTED_CHARS)
            ))
            .response(Api::Gemini);
        }
    };
    let model = model.to_owned();
    let key = KeyQuery { key: q.key };
    run_guarded(
        Inbound::Gemini(call),
        handle(gw, Inbound::Gemini(call), key, req, Some(model)),
    )
    .await
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct GeminiQuery {
    key: Option<String>,
    alt: Option<String>,
}

/// One request; a panic inside becomes a 500 for this request only.
async fn guarded(
    gw: Arc<Gateway>,
    inbound: Inbound,
    q: KeyQuery,
    req: Request<Body>,
) -> Response<Body> {
    run_guarded(inbound, handle(gw, inbound, q, req, None)).await
}

/// Runs one request's future; a panic inside becomes a 500 in the caller's format for this
/// request only, and the gateway keeps serving.
///
/// Not an `async fn`: one would hold `fut` twice in its state (as the argument and as the
/// awaited future), doubling every request's future.
pub fn run_guarded(
    inbound: Inbound,
    fut: impl Future<Output = Response<Body>>,
) -> impl Future<Output = Response<Body>> {
    std::panic::AssertUnwindSafe(fut)
        .catch_unwind()
        .map(move |r| match r {
            Ok(r) => r,
            Err(_) => {
                tracing::error!("a request panicked; answered 500 and kept serving");
                CallerError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "api_error",
                    "internal_error",
                    "keyward: internal error while handling this request",
                )
                .response(inbound.api())
            }
        })
}

async fn handle(
    gw: Arc<Gateway>,
    inbound: Inbound,
    q: KeyQuery,
    req: Request<Body>,
    path_model: Option<String>,
) -> Response<Body> {
    let api = inbound.api();
    let (parts, body) = req.into_parts();
    let (key_name, detail) = match authenticate(&gw.cfg, &parts.headers, q.key.as_deref()) {
        Ok(k) => k,
        Err(why) => {
            refused(&gw, why, &parts, q.key.as_deref(), inbound.name());
            return CallerError::unauthenticated().response(api);
        }
    };
    let limit = gw.cfg.limits.max_body_bytes;
    let declared = body_budget::declared_length(&parts.headers);
    if declared.is_some_and(|n| n > limit) {
        return CallerError::too_large(limit).response(api);
    }
    // Held until the request is answered: the body stays in memory for replays.
    let Some(_held) = gw
        .body_budget
        .reserve(declared.unwrap_or(limit), gw.cfg.limits.body_wait)
        .await
    else {
        gw.metrics.body_budget_rejections.inc();
        tracing::debug!(
            budget_bytes = gw.cfg.limits.max_buffered_body_bytes,
            "request body budget full: answered 503 (limits.max_buffered_body_bytes)"
        );
        return CallerError::busy().response(api);
    };
    // A body that trickles in would hold its reservation: it must arrive within the
    // request deadline.
    let deadline = gw.cfg.timeouts.request;
    let body = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return CallerError::too_large(limit).response(api),
        Err(_) => return CallerError::body_too_slow(deadline).response(api),
    };
    // One pass over the body finds the model (to route, and to rewrite per target) and
    // the stream flag.
    let (model, model_at, stream, conversation) = match (path_model, inbound) {
        // Gemini names the model in the path (the body has none) and streams by method.
        (Some(m), Inbound::Gemini(call)) => (
            m,
            None,
            call.stream,
            splice::top_level(&body)
                .ok()
                .map(|t| (t.conversation, t.continued)),
        ),
        (Some(m), _) => (m, None, false, None),
        (None, _) => {
            let top = match splice::top_level(&body) {
                Ok(top) => top,
                Err(e) => return CallerError::bad_request(format!("keyward: {e}")).response(api),
            };
            let Some(at) = top.model else {
                return CallerError::bad_request("keyward: the request body has no `model`")
                    .response(api);
            };
            match splice::decode_model(&body, at.clone()) {
                Ok(m) => (
                    m,
                    Some(at),
                    top.stream,
                    Some((top.conversation, top.continued)),
                ),
                Err(e) => return CallerError::bad_request(format!("keyward: {e}")).response(api),
            }
        }
    };
    let Some(route) = gw.route(&model) else {
        gw.metrics
            .refusals
            .unrouted(&gw.metrics, inbound.name(), &key_name, &model);
        let names: Vec<&str> = gw.cfg.routes.keys().map(String::as_str).collect();
        return CallerError::unknown_model(&model, &names).response(api);
    };
    let servable = route.targets.iter().any(|t| {
        gw.cfg
            .endpoints
            .get(&t.endpoint)
            .is_some_and(|e| super::crossing::reachable(inbound, e.provider))
    });
    if !servable {
        return CallerError::bad_request(format!(
            "keyward: model `{model}` is routed to endpoints that do not speak this API ({}); call it through its own API or route it to a compatible endpoint",
            inbound.name()
        ))
        .response(api);
    }
    let stream = stream
        && matches!(
            inbound,
            Inbound::Messages | Inbound::Chat | Inbound::Responses | Inbound::Gemini(_)
        );
    let route_name = route.name.clone();
    let id = request_id();
    // The trace's request span (disabled unless traces are on) is the log span's parent,
    // so a stream's end, which outlives this handler, still ends inside it; both are
    // entered, so the attempts' spans find it as their parent.
    let traced = telemetry::request_span(&id, inbound, &model, &route_name, &key_name);
    let span = traced.in_scope(
        || tracing::info_span!("request", id = %id, route = %route_name, gateway_key = %key_name),
    );
    let r = failover::serve(
        gw.clone(),
        inbound,
        Prepared {
            route,
            gateway_key: key_name.clone(),
            body,
            model_at,
            stream,
            conversation: conversation.and_then(|(c, _)| c),
            continued: conversation.is_some_and(|(_, c)| c),
        },
        parts.headers,
        detail,
    )
    .instrument(span.clone())
    .instrument(traced.clone())
    .await;
    let mut r = answer::for_key(&gw.cfg, &key_name, api, r);
    count_request(&gw, &route_name, &key_name, &r);
    telemetry::answered(&traced, &r);
    // The line's fields are built only when it is written (not at the default level).
    if tracing::enabled!(tracing::Level::INFO) {
        span.in_scope(|| log_answered(&r, stream));
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        r.headers_mut().insert(answer::X_KEYWARD_REQUEST_ID, v);
    }
    r
}

/// The request's one line at info: status, attempts, credential, timing.
fn log_answered(r: &Response<Body>, stream: bool) {
    let header = |name: axum::http::HeaderName| r.headers().get(name).and_then(|v| v.to_str().ok());
    // An answer the gateway built itself carries its cost as an extension.
    let built = r.extensions().get::<answer::AttemptInfo>();
    let attempts = built.map_or_else(
        || header(answer::X_KEYWARD_ATTEMPTS).unwrap_or("0").to_owned(),
        |b| b.attempts.to_string(),
    );
    let credential = built
        .and_then(|b| b.credential.as_deref())
        .or_else(|| header(answer::X_KEYWARD_CREDENTIAL))
        .unwrap_or("-");
    tracing::info!(
        status = r.status().as_u16(),
        attempts = %attempts,
        credential = %credential,
        timing = header(answer::SERVER_TIMING).unwrap_or("-"),
        stream,
        "request answered"
    );
}

/// A request id: unique within the process and unlikely to repeat across restarts
/// (a counter mixed with the start time through SplitMix64).
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(crate::seed);
    let mut z = base.wrapping_add(
        NEXT.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    id_text(z ^ (z >> 31))
}

/// `kw-` and `z` in 16 lowercase hex digits, written by hand (no `core::fmt` per request).
fn id_text(z: u64) -> String {
    let mut id = String::with_capacity(19);
    id.push_str("kw-");
    for shift in (0..16).rev() {
        id.push(char::from(
            b"0123456789abcdef"[(z >> (shift * 4)) as usize & 0xf],
        ));
    }
    id
}

/// Request metrics from the response the caller gets.
fn count_request(gw: &Gateway, route: &Arc<str>, key: &Arc<str>, r: &Response<Body>) {
    let m = &gw.metrics;
    let status = match r.status().as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    m.request(route, key, status);
    let header = |name: axum::http::HeaderName| r.headers().get(name).and_then(|v| v.to_str().ok());
    let attempts = match r.extensions().get::<answer::AttemptInfo>() {
        Some(b) => Some(b.attempts),
        None => header(answer::X_KEYWARD_ATTEMPTS).and_then(|v| v.parse::<u32>().ok()),
    };
    if let Some(n) = attempts {
        m.attempts_taken(route, n, r.status().is_success());
    }
    if let Some(ms) = header(answer::SERVER_TIMING)
        .and_then(|v| v.strip_prefix("gateway;dur="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| millis(v.trim()))
    {
        m.gateway_added(route, ms / 1000.0);
    }
}

/// `server-timing`'s milliseconds as a float. The gateway writes them with three
/// decimals ([`answer::decorate`]): those are read as integer microseconds, and
/// `micros / 1000` is the float `str::parse` gives (both are the value correctly
/// rounded); anything else goes through `str::parse`.
fn millis(v: &str) -> Option<f64> {
    let micros = match v.split_once('.') {
        Some((whole, fraction))
            if (1..=15).contains(&whole.len())
                && fraction.len() == 3
                && whole
                    .bytes()
                    .chain(fraction.bytes())
                    .all(|b| b.is_ascii_digit()) =>
        {
            whole
                .bytes()
                .chain(fraction.bytes())
                .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'))
        }
        _ => return v.parse::<f64>().ok(),
    };
    // At most 18 digits: exact in a u64; below 2^53 (16 digits), exact as a float too.
    if micros < 1 << 53 {
        #[allow(clippy::cast_precision_loss)] // below 2^53: exact
        Some(micros as f64 / 1000.0)
    } else {
        v.parse::<f64>().ok()
    }
}

/// The gateway key a caller presented, wherever its SDK puts it.
pub fn presented_key<'a>(headers: &'a HeaderMap, query_key: Option<&'a str>) -> Option<&'a str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(bearer)
        })
        .or_else(|| headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()))
        .or(query_key)
}

/// The token of an `Authorization: Bearer …` value. HTTP auth schemes are
/// case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` are accepted too.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// The caller's gateway key, wherever its SDK puts it; compared in constant time.
pub fn authenticate(
    cfg: &Config,
    headers: &HeaderMap,
    query_key: Option<&str>,
) -> Result<(Arc<str>, Detail), refusals::AuthFailure> {
    let presented = presented_key(headers, query_key).ok_or(refusals::AuthFailure::Missing)?;
    cfg.gateway_keys
        .iter()
        .find(|k| constant_time_eq(k.key.expose().as_bytes(), presented.trim().as_bytes()))
        .map(|k| (k.name.clone(), k.detail))
        .ok_or(refusals::AuthFailure::Invalid)
}

/// Counts and logs (throttled) a refused gateway key; the key itself is never logged.
fn refused(
    gw: &Gateway,
    why: refusals::AuthFailure,
    parts: &axum::http::request::Parts,
    query_key: Option<&str>,
    api: &'static str,
) {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    gw.metrics.refusals.auth_failed(
        &gw.metrics,
        why,
        presented_key(&parts.headers, query_key),
        peer,
        api,
    );
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) async fn models(
    Snapshot(gw): Snapshot,
    Query(q): Query<KeyQuery>,
    req: Request<Body>,
) -> Response<Body> {
    let (parts, _) = req.into_parts();
    if let Err(why) = authenticate(&gw.cfg, &parts.headers, q.key.as_deref()) {
        refused(&gw, why, &parts, q.key.as_deref(), "models");
        return CallerError::unauthenticated().response(Api::ChatCompletions);
    }
    let data: Vec<_> = gw
        .cfg
        .routes
        .keys()
        .map(|name| json!({"id": name, "object": "model", "owned_by": "keyward"}))
        .collect();
    let mut r = Response::new(Body::from(
        json!({"object": "list", "data": data}).to_string(),
    ));
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) async fn ready(Snapshot(gw): Snapshot) -> Response<Body> {
    let mut body = json!({"ready": true, "routes": gw.cfg.routes.len(), "credentials": gw.cfg.credentials.len()});
    let mut status = StatusCode::OK;
    if let Some(fleet) = &gw.fleet {
        // Not ready until the fleet state was loaded once: a replica that never saw it
        // would send traffic to keys the fleet already knows are dead. Once loaded, a
        // Redis outage is reported, not a reason to stop taking traffic.
        let s = fleet.status();
        if !s.loaded {
            body["ready"] = json!(false);
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
        body["fleet"] = json!({
            "replica": s.replica,
            "state": if !s.loaded { "loading" } else if s.degraded_since.is_some() { "degraded" } else { "connected" },
            "pending_transitions": s.pending,
            "last_error": s.last_error,
        });
    }
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sixteen_hex_digits() {
        for z in [0, 1, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert_eq!(id_text(z), format!("kw-{z:016x}"));
        }
        assert_ne!(request_id(), request_id());
    }

    #[test]
    fn millis_reads_what_parse_reads() {
        let mut micros: u64 = 0;
        while micros < 10_000_000_000_000 {
            for n in [micros, micros + 1, micros + 7, micros * 3 + 1] {
                let text = format!("{}.{:03}", n / 1000, n % 1000);
                assert_eq!(
                    millis(&text).map(f64::to_bits),
                    text.parse::<f64>().ok().map(f64::to_bits),
                    "{text}"
                );
            }
            micros = micros * 2 + 13;
        }
        for text in [
            "0.1", "12", "1e3", "-1.000", "1.0000", "", ".123", "x.123", "nan",
        ] {
            assert_eq!(
                millis(text).map(f64::to_bits),
                text.parse::<f64>().ok().map(f64::to_bits),
                "{text}"
            );
        }
    }
}
