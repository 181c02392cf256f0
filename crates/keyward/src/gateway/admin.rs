//! The admin API, under `/admin` on the gateway's listener (or on its own, with `[admin]
//! listen`): every credential's health and why, one credential's transition history,
//! reset, disable, reload, OAuth token import and removal, and the config's status. JSON
//! in and out.
//!
//! OAuth tokens are imported here while a gateway runs (`keyward credentials import` calls
//! it): the gateway holds the state file's lock, so no other process may write the file.
//!
//! Access needs the `[admin]` table in the config: a bearer token (`Authorization: Bearer
//! …`, compared in constant time) and, unless `allow_remote = true`, a local peer.
//! Without the table every `/admin` path answers 404, so the API does not exist. Secrets
//! never appear: credentials are shown by id and fingerprint.
//!
//! "Local" is explicit ([`peer_is_local`]): a loopback peer of the admin listener is
//! local; one of the proxy listener only while `server.trust_loopback` holds, which is off
//! by default when a reverse proxy is declared (every caller it forwards arrives from
//! loopback) or when the admin API has a listener of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use axum::routing::{get, post, put};
use axum::Router;
use bytes::Bytes;
use keyward_core::health::{Health, ScopeKey};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{constant_time_eq, Gateway, Live};

/// The admin routes, to be merged into the gateway's router.
pub fn routes() -> Router<Arc<Live>> {
    Router::new()
        .route("/admin/credentials", get(list))
        .route("/admin/credentials/{id}", get(one))
        .route("/admin/credentials/{id}/history", get(history))
        .route("/admin/credentials/{id}/reset", post(reset))
        .route("/admin/credentials/{id}/disable", post(disable))
        .route("/admin/credentials/{id}/probe", post(probe_now))
        .route(
            "/admin/credentials/{id}/oauth",
            put(import_tokens).delete(remove_tokens),
        )
        .route("/admin/reload", post(reload))
        .route("/admin/config", get(config_status))
        .route("/metrics", get(metrics))
        .merge(super::page::routes())
}

/// Prometheus exposition. With an `[admin]` table it needs the admin token (Prometheus
/// sends it with `authorization: {credentials: …}`); without one, loopback peers only.
async fn metrics(
    State(live): State<Arc<Live>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    surface: Option<axum::Extension<super::Surface>>,
    headers: HeaderMap,
) -> Response<Body> {
    let gw = live.current();
    let surface = surface.map_or(super::Surface::COMBINED, |s| s.0);
    if gw.cfg.admin.is_some() {
        if let Err(r) = authorise(&live, peer, surface, &headers) {
            return *r;
        }
    } else if !peer_is_local(peer, surface, &gw.cfg) {
        return error(
            StatusCode::FORBIDDEN,
            "metrics answer local peers only without an [admin] table (loopback, and not through a declared reverse proxy: server.trust_loopback); add an [admin] table with a token to scrape remotely",
        );
    }
    if let Some(fleet) = &gw.fleet {
        let s = fleet.status();
        gw.metrics.fleet_connected.set(i64::from(s.connected));
        gw.metrics
            .fleet_pending
            .set(i64::try_from(s.pending).unwrap_or(i64::MAX));
        gw.metrics
            .fleet_reseeds
            .set(i64::try_from(s.reseeds).unwrap_or(i64::MAX));
    }
    let ids: Vec<Arc<str>> = gw.cfg.credentials.iter().map(|c| c.id.clone()).collect();
    let text = gw.metrics.render(&ids, &gw.engine.snapshot());
    let mut r = Response::new(Body::from(text));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

fn reply(status: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    reply(status, &json!({"error": {"message": message}}))
}

/// Whether `peer` counts as on this host: a loopback peer of the admin listener, or of
/// the proxy listener while `server.trust_loopback` holds.
pub fn peer_is_local(
    peer: SocketAddr,
    surface: super::Surface,
    cfg: &crate::config::Config,
) -> bool {
    peer.ip().is_loopback()
        && match surface {
            super::Surface::Admin => true,
            super::Surface::Proxy { .. } => cfg.server.trust_loopback,
        }
}

/// The snapshot, if the caller may use the admin API; otherwise the refusal.
fn authorise(
    live: &Live,
    peer: SocketAddr,
    surface: super::Surface,
    headers: &HeaderMap,
) -> Result<Arc<Gateway>, Box<Response<Body>>> {
    let gw = live.current();
    let Some(admin) = gw.cfg.admin.clone() else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "the admin API is off: add an [admin] table with a token to the config",
        )));
    };
    if !admin.allow_remote && !peer_is_local(peer, surface, &gw.cfg) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "the admin API answers local peers only (loopback, and not through a declared reverse proxy); use the admin listener ([admin] listen) or set admin.allow_remote = true",
        )));
    }
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(super::bearer)
        .unwrap_or("");
    if !constant_time_eq(admin.token.expose().as_bytes(), presented.trim().as_bytes()) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "send the admin token as `Authorization: Bearer <token>` (admin.token in the config)",
        )));
    }
    Ok(gw)
}

/// An admin request that passed [`authorise`] (or came with a status-page session, see
/// [`super::page`]): the snapshot it runs on.
pub(super) struct Authorised(pub(super) Arc<Gateway>);

impl axum::extract::FromRequestParts<Arc<Live>> for Authorised {
    type Rejection = Response<Body>;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        live: &Arc<Live>,
    ) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned()
        else {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the admin API needs the peer address; serve the router with connect info",
            ));
        };
        let surface = parts
            .extensions
            .get::<super::Surface>()
            .copied()
            .unwrap_or(super::Surface::COMBINED);
        match authorise(live, peer, surface, &parts.headers) {
            Ok(gw) => Ok(Authorised(gw)),
            // No valid bearer token: a status-page session cookie may stand in for it.
            Err(refused) => {
                match super::page::from_session(live, peer, &parts.method, &parts.headers) {
                    Some(session) => session.map(Authorised),
                    None => Err(*refused),
                }
            }
        }
    }
}

fn health_json(h: &Health, since: keyward_core::health::Timestamp) -> Value {
    json!({"health": h, "since": since.rfc3339()})
}

/// One credential's view: config facts, health of the credential and of its models.
fn describe(gw: &Gateway, id: &str) -> Option<Value> {
    let c = gw.cfg.credentials.iter().find(|c| &*c.id == id)?;
    let provider = gw
        .cfg
        .endpoints
        .get(&c.endpoint)
        .map_or("unknown", |e| e.provider.as_str());
    let mut health = json!({"health": {"state": "healthy"}});
    let mut models = Vec::new();
    for (key, h, since) in gw.engine.snapshot() {
        match &key {
            ScopeKey::Credential(cid) if &**cid == id => health = health_json(&h, since),
            ScopeKey::CredentialModel(cid, model) if &**cid == id && h != Health::Healthy => {
                let mut v = health_json(&h, since);
                v["model"] = json!(&**model);
                models.push(v);
            }
            _ => {}
        }
    }
    let mut v = json!({
        "id": id,
        "provider": provider,
        "endpoint": &*c.endpoint,
        "fingerprint": gw.fingerprint(c),
        "kind": c.kind.as_str(),
        "identity": c.cloud.as_ref().map(crate::config::CloudAuth::identity),
        "last_success": gw.engine.last_success(id).map(|t| t.rfc3339()),
        "bucket": c.bucket.as_deref(),
        "priority": c.priority,
        "in_flight": gw.engine.inflight(id),
        "models": models,
    });
    if let (Some(o), Some(h)) = (v.as_object_mut(), health.as_object()) {
        for (k, val) in h {
            o.insert(k.clone(), val.clone());
        }
    }
    Some(v)
}

async fn list(Authorised(gw): Authorised) -> Response<Body> {
    let mut creds: Vec<Value> = gw
        .cfg
        .credentials
        .iter()
        .filter_map(|c| describe(&gw, &c.id))
        .collect();
    // The last few transitions of each, so a list says why without a second call (one
    // read of the state file for all of them).
    let ids = creds
        .iter()
        .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    if let Ok(all) = transitions_of(&gw, ids, 3).await {
        for (v, t) in creds.iter_mut().zip(all) {
            v["recent_transitions"] = json!(t);
        }
    }
    let others: Vec<Value> = gw
        .engine
        .snapshot()
        .into_iter()
        .filter(|(k, h, _)| {
            !matches!(k, ScopeKey::Credential(_) | ScopeKey::CredentialModel(..))
                && *h != Health::Healthy
        })
        .map(|(k, h, since)| {
            let mut v = health_json(&h, since);
            v["scope"] = json!(k.to_key());
            v
        })
        .collect();
    let incidents: Vec<Value> = gw
        .engine
        .incidents()
        .into_iter()
        .map(|i| {
            json!({"endpoint": &*i.endpoint, "since": i.since.rfc3339(),
                "credentials": i.credentials.iter().map(|c| &**c).collect::<Vec<_>>(),
                "next_probe": i.next_probe.rfc3339(), "disables_at": i.disables_at.rfc3339(),
                "detail": "provider-wide auth incident: these credentials were rejected at once and none of the endpoint's answered since; nothing is disabled while it lasts"})
        })
        .collect();
    let mut body = json!({"credentials": creds, "other_scopes": others, "incidents": incidents});
    if let Some(fleet) = &gw.fleet {
        body["fleet"] = json!(fleet.status());
    }
    reply(StatusCode::OK, &body)
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

fn unknown(id: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        &format!("no credential {id:?} in the running config; GET /admin/credentials lists them"),
    )
}

async fn transitions(gw: &Gateway, id: &str, limit: usize) -> Result<Vec<Value>, String> {
    let mut all = transitions_of(gw, vec![id.to_owned()], limit).await?;
    Ok(all.pop().unwrap_or_default())
}

/// The latest `limit` transitions of each of `ids`, in order, read with one connection.
pub(super) async fn transitions_of(
    gw: &Gateway,
    ids: Vec<String>,
    limit: usize,
) -> Result<Vec<Vec<Value>>, String> {
    let row_json = |t: keyward_store::TransitionRow| {
        // States are stored as JSON; show them as objects, not strings in strings.
        let state = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(json!(s));
        let mut v = json!({"seq": t.seq, "at": t.at.rfc3339(), "scope": t.scope,
               "from": state(&t.from), "to": state(&t.to), "why": t.why, "actor": t.actor});
        if let Some(r) = t.replica {
            v["replica"] = json!(r);
        }
        v
    };
    if let Some(fleet) = &gw.fleet {
        // Fleet mode: the fleet log, with the replica that recorded each transition.
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            let rows = fleet
                .history(Some(id), limit)
                .await
                .map_err(|e| e.to_string())?;
            out.push(rows.into_iter().map(row_json).collect());
        }
        return Ok(out);
    }
    let state = gw.cfg.state.clone();
    tokio::task::spawn_blocking(move || {
        let reader = keyward_store::StoreReader::open(&state).map_err(|e| e.to_string())?;
        ids.iter()
            .map(|id| {
                let rows = reader.history(id, limit).map_err(|e| e.to_string())?;
                Ok(rows.into_iter().map(row_json).collect())
            })
            .collect()
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn one(Authorised(gw): Authorised, Path(id): Path<String>) -> Response<Body> {
    let Some(mut v) = describe(&gw, &id) else {
        return unknown(&id);
    };
    match transitions(&gw, &id, 10).await {
        Ok(t) => v["recent_transitions"] = json!(t),
        Err(e) => v["recent_transitions_error"] = json!(e),
    }
    reply(StatusCode::OK, &v)
}

async fn history(
    Authorised(gw): Authorised,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response<Body> {
    match transitions(&gw, &id, q.limit.unwrap_or(100).min(10_000)).await {
        Ok(t) => reply(StatusCode::OK, &json!({"id": id, "transitions": t})),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot read the state file: {e}"),
        ),
    }
}

async fn reset(Authorised(gw): Authorised, Path(id): Path<String>) -> Response<Body> {
    let Some(ack) = gw.engine.reset(&id) else {
        return unknown(&id);
    };
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || ack.wait()).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("reset applied but not persisted: {e}"),
        );
    }
    tracing::info!(credential = %id, "operator reset the credential");
    reply(StatusCode::OK, &describe(&gw, &id).unwrap_or(Value::Null))
}

#[derive(Debug, Deserialize)]
struct DisableBody {
    reason: String,
}

async fn disable(
    Authorised(gw): Authorised,
    Path(id): Path<String>,
    body: Bytes,
) -> Response<Body> {
    let reason = match serde_json::from_slice::<DisableBody>(&body) {
        Ok(b) if !b.reason.trim().is_empty() => b.reason,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "send {\"reason\": \"why\"}: a disable records who and why",
            )
        }
    };
    let Some(ack) = gw.engine.disable(&id, &reason) else {
        return unknown(&id);
    };
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || ack.wait()).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("disable applied but not persisted: {e}"),
        );
    }
    tracing::info!(credential = %id, "operator disabled the credential");
    reply(StatusCode::OK, &describe(&gw, &id).unwrap_or(Value::Null))
}

/// The body of an OAuth import: the tokens (never echoed or logged).
#[derive(Deserialize)]
struct ImportBody {
    access_token: String,
    refresh_token: String,
    /// When the access token expires, in milliseconds since the epoch.
    expires_at_ms: Option<u64>,
}

/// The token store of an OAuth credential of the running config, or the refusal.
fn oauth_store(
    gw: &Gateway,
    id: &str,
) -> Result<Arc<keyward_store::TokenStore>, Box<Response<Body>>> {
    let Some(c) = gw.credential(id) else {
        return Err(Box::new(unknown(id)));
    };
    if c.oauth.is_none() {
        return Err(Box::new(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("credential {id:?} is not a refreshing OAuth credential: give it kind = \"oauth\" and an [credentials.oauth] table (token_url, client_id)"),
        )));
    }
    gw.oauth.tokens().cloned().ok_or_else(|| {
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this gateway has no token store (it runs without a state file)",
        ))
    })
}

/// Reloads after a token change (the credential's grant fingerprint, hence its health
/// scope, follows the stored grant); the JSON to add to the answer.
async fn reload_after_tokens(live: &Arc<Live>) -> Value {
    let l = live.clone();
    match tokio::task::spawn_blocking(move || l.reload()).await {
        Ok(Ok(generation)) => json!({"reloaded": true, "generation": generation}),
        Ok(Err(e)) => json!({"reloaded": false, "reload_error": e.to_string()}),
        Err(e) => json!({"reloaded": false, "reload_error": e.to_string()}),
    }
}

/// Stores a credential's OAuth grant, as imported by an operator (durable before the
/// answer), and reloads so that it is used at once.
async fn import_tokens(
    Authorised(gw): Authorised,
    State(live): State<Arc<Live>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response<Body> {
    let store = match oauth_store(&gw, &id) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Ok(b) = serde_json::from_slice::<ImportBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "send {\"access_token\": …, \"refresh_token\": …, \"expires_at_ms\": optional}",
        );
    };
    if b.access_token.is_empty() || b.refresh_token.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "access_token and refresh_token must not be empty",
        );
    }
    let now = gw.engine.now();
    let key = id.clone();
    let stored = tokio::task::spawn_blocking(move || {
        store.import(
            &key,
            &b.access_token,
            &b.refresh_token,
            b.expires_at_ms.map(keyward_core::health::Timestamp),
            now,
        )
    })
    .await;
    let row = match stored {
        Ok(Ok(row)) => row,
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("not stored: {e}"),
            )
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("not stored: {e}"),
            )
        }
    };
    gw.oauth.forget(&id);
    tracing::info!(credential = %id, grant = %row.grant_fingerprint, version = row.version, "operator imported an OAuth grant");
    let mut v = json!({
        "id": id,
        "grant": row.grant_fingerprint,
        "version": row.version,
        "expires_at": row.expires_at.map(|e| e.rfc3339()),
        "encrypted": gw.cfg.state_key.is_some(),
        "stored_in": gw.cfg.state_label(),
    });
    if let (Value::Object(m), Value::Object(r)) = (&mut v, reload_after_tokens(&live).await) {
        m.extend(r);
    }
    reply(StatusCode::OK, &v)
}

/// Forgets a credential's stored OAuth tokens and reloads.
async fn remove_tokens(
    Authorised(gw): Authorised,
    State(live): State<Arc<Live>>,
    Path(id): Path<String>,
) -> Response<Body> {
    let store = match oauth_store(&gw, &id) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let key = id.clone();
    let removed = match tokio::task::spawn_blocking(move || store.remove(&key)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("not removed: {e}"),
            )
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("not removed: {e}"),
            )
        }
    };
    gw.oauth.forget(&id);
    tracing::info!(credential = %id, removed, "operator removed OAuth tokens");
    let mut v = json!({"id": id, "removed": removed});
    if removed {
        if let (Value::Object(m), Value::Object(r)) = (&mut v, reload_after_tokens(&live).await) {
            m.extend(r);
        }
    }
    reply(StatusCode::OK, &v)
}

#[derive(Debug, Deserialize, Default)]
struct ProbeQuery {
    /// A one-token request to this model instead of the key-validity call.
    model: Option<String>,
}

/// Probes a credential now with the cheap call its confirmation probes use (or a
/// one-token request with `?model=`) and says what it showed. Health is left as it is: a
/// key that works again is put back with `reset`.
async fn probe_now(
    Authorised(gw): Authorised,
    Path(id): Path<String>,
    Query(q): Query<ProbeQuery>,
) -> Response<Body> {
    if gw.credential(&id).is_none() {
        return unknown(&id);
    }
    let (kind, model) = match q.model {
        Some(m) => (
            keyward_core::health::ProbeKind::MinimalRequest,
            Some(Arc::<str>::from(m)),
        ),
        None => (keyward_core::health::ProbeKind::KeyValidity, None),
    };
    let checked = super::prober::check(&gw, &id, model.clone(), kind).await;
    let (result, class, detail) = match &checked {
        super::prober::Check::Ok => ("ok", None, String::new()),
        super::prober::Check::Failed(f) => {
            ("failed", Some(f.class.as_str()), f.explanation.clone())
        }
        super::prober::Check::Unreachable(why) => ("unreachable", None, why.clone()),
        super::prober::Check::Unknown(why) => ("unknown", None, why.clone()),
    };
    tracing::info!(credential = %id, result, "operator probe");
    reply(
        StatusCode::OK,
        &json!({"id": id, "check": model.map_or_else(|| "key".to_owned(), |m| format!("1-token {m}")),
                "result": result, "class": class, "detail": detail}),
    )
}

async fn reload(_: Authorised, State(live): State<Arc<Live>>) -> Response<Body> {
    let l = live.clone();
    let result = tokio::task::spawn_blocking(move || l.reload()).await;
    let status = live.status();
    match result {
        Ok(Ok(generation)) => reply(StatusCode::OK, &json!({"generation": generation})),
        Ok(Err(e)) => reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"error": {"message": e.to_string(), "problems": status.rejected}, "generation": status.generation}),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("reload failed: {e}"),
        ),
    }
}

async fn config_status(
    Authorised(gw): Authorised,
    State(live): State<Arc<Live>>,
) -> Response<Body> {
    let status = live.status();
    reply(
        StatusCode::OK,
        &json!({
            "generation": status.generation,
            "last_reload_rejected": status.rejected,
            "routes": gw.cfg.routes.keys().collect::<Vec<_>>(),
            "credentials": gw.cfg.credentials.len(),
            "endpoints": gw.cfg.endpoints.keys().map(|k| &**k).collect::<Vec<_>>(),
            "state_file": gw.cfg.fleet.is_none().then(|| gw.cfg.state.clone()),
            "fleet": gw.cfg.fleet.as_ref().map(|f| json!({"redis": f.display_url(), "prefix": f.prefix, "status": gw.fleet.as_ref().map(keyward_store::RedisStore::status)})),
            "alerts": gw.alerts.describe(&gw.cfg),
        }),
    )
}
