//! The sim's OAuth authorization server: grants whose access tokens expire and whose
//! refresh tokens rotate on every use (a reused one revokes the grant, RFC 9700), the
//! token endpoint that answers RFC 6749 refresh grants as JSON or form fields, and
//! `POST /_sim/oauth/{grant}` that hands out a new grant's tokens.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Response, StatusCode};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::respond::json_response;
use crate::{wall_instant, Sim};

/// The sim's OAuth authorization server: grants whose refresh tokens rotate on every use.
#[derive(Debug, Default)]
pub(crate) struct OAuthSim {
    pub(crate) grants: HashMap<String, Grant>,
    /// Access token → (grant, generation).
    pub(crate) access: HashMap<String, (String, u64)>,
    /// Refresh token → (grant, generation); a token older than its grant's generation has
    /// been consumed.
    refresh: HashMap<String, (String, u64)>,
    mode: TokenEndpoint,
    log: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Grant {
    generation: u64,
    ttl: Duration,
    /// When each generation's access token expires.
    pub(crate) expires: HashMap<u64, std::time::Instant>,
    pub(crate) revoked: bool,
}

/// How the sim's token endpoint (`POST /v1/oauth/token`, `POST /oauth/token`) answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpoint {
    /// Refreshes normally.
    #[default]
    Ok,
    /// 503 on every call (the credential must be kept).
    Unavailable,
}

/// Tokens of a new grant, as a login would hand them out. `Debug` hides them.
#[derive(Clone, Serialize)]
pub struct SimTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

impl std::fmt::Debug for SimTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimTokens(expires_in={})", self.expires_in)
    }
}

impl Sim {
    /// A new OAuth grant named `grant` whose access tokens live `ttl`: the tokens a login
    /// would give. Requests with its access tokens are counted under `grant`.
    pub fn oauth_grant(&self, grant: &str, ttl: Duration) -> SimTokens {
        let mut inner = self.lock();
        let now = wall_instant();
        let mut g = Grant {
            generation: 1,
            ttl,
            expires: HashMap::new(),
            revoked: false,
        };
        g.expires.insert(1, now + ttl);
        let access = format!("sim-at-{grant}-1");
        let refresh = format!("sim-rt-{grant}-1");
        inner.oauth.grants.insert(grant.to_owned(), g);
        inner
            .oauth
            .access
            .insert(access.clone(), (grant.to_owned(), 1));
        inner
            .oauth
            .refresh
            .insert(refresh.clone(), (grant.to_owned(), 1));
        SimTokens {
            access_token: access,
            refresh_token: refresh,
            expires_in: ttl.as_secs(),
        }
    }

    /// Sets how the token endpoint answers.
    pub fn set_token_endpoint(&self, mode: TokenEndpoint) {
        self.lock().oauth.mode = mode;
    }

    /// Revokes a grant: its access and refresh tokens stop working.
    pub fn revoke_grant(&self, grant: &str) {
        if let Some(g) = self.lock().oauth.grants.get_mut(grant) {
            g.revoked = true;
        }
    }

    /// Sets the lifetime of the access tokens the grant's next refreshes issue (zero: every
    /// new token is already expired, so the provider rejects it as it arrives).
    pub fn set_grant_ttl(&self, grant: &str, ttl: Duration) {
        if let Some(g) = self.lock().oauth.grants.get_mut(grant) {
            g.ttl = ttl;
        }
    }

    /// Expires the grant's current access token now (the provider's clock says so).
    pub fn expire_access(&self, grant: &str) {
        let now = wall_instant();
        if let Some(g) = self.lock().oauth.grants.get_mut(grant) {
            for e in g.expires.values_mut() {
                *e = now;
            }
        }
    }

    /// Every token endpoint call for `grant`, in order: `ok`, `reused` (a consumed refresh
    /// token: the grant is revoked), `revoked`, `unavailable`.
    pub fn token_calls(&self, grant: &str) -> Vec<String> {
        self.lock()
            .oauth
            .log
            .iter()
            .filter(|(g, _)| g == grant)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Successful refreshes of `grant`.
    pub fn refreshes(&self, grant: &str) -> usize {
        self.token_calls(grant)
            .iter()
            .filter(|o| o.as_str() == "ok")
            .count()
    }

    /// One token endpoint call.
    fn token_call(&self, refresh_token: &str) -> Result<SimTokens, (u16, Value)> {
        let mut inner = self.lock();
        let now = wall_instant();
        let invalid = |why: &str| {
            (
                400,
                json!({"error": "invalid_grant", "error_description": why}),
            )
        };
        let Some((grant, generation)) = inner.oauth.refresh.get(refresh_token).cloned() else {
            return Err(invalid("Invalid refresh token"));
        };
        if inner.oauth.mode == TokenEndpoint::Unavailable {
            inner.oauth.log.push((grant, "unavailable".into()));
            return Err((
                503,
                json!({"error": "temporarily_unavailable", "error_description": "The authorization server is temporarily unavailable"}),
            ));
        }
        let Some(g) = inner.oauth.grants.get_mut(&grant) else {
            return Err(invalid("Invalid refresh token"));
        };
        if g.revoked {
            inner.oauth.log.push((grant, "revoked".into()));
            return Err(invalid("Refresh token has been revoked"));
        }
        if generation < g.generation {
            // Reuse of a rotated refresh token: the whole grant is revoked (RFC 9700).
            g.revoked = true;
            inner.oauth.log.push((grant, "reused".into()));
            return Err(invalid("Refresh token has already been used"));
        }
        g.generation += 1;
        let next = g.generation;
        let ttl = g.ttl;
        g.expires.insert(next, now + ttl);
        let access = format!("sim-at-{grant}-{next}");
        let refresh = format!("sim-rt-{grant}-{next}");
        inner
            .oauth
            .access
            .insert(access.clone(), (grant.clone(), next));
        inner
            .oauth
            .refresh
            .insert(refresh.clone(), (grant.clone(), next));
        inner.oauth.log.push((grant, "ok".into()));
        Ok(SimTokens {
            access_token: access,
            refresh_token: refresh,
            expires_in: ttl.as_secs(),
        })
    }
}

/// The token endpoint: a `refresh_token` grant as JSON or form fields.
pub(crate) async fn token_endpoint(State(sim): State<Sim>, body: Bytes) -> Response<Body> {
    let fields: HashMap<String, String> = serde_json::from_slice(&body)
        .ok()
        .unwrap_or_else(|| form_fields(&body));
    if fields.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type"}),
            &[],
        );
    }
    let Some(rt) = fields.get("refresh_token") else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": "refresh_token is missing"}),
            &[],
        );
    };
    match sim.token_call(rt) {
        Ok(t) => json_response(
            StatusCode::OK,
            json!({"access_token": t.access_token, "refresh_token": t.refresh_token, "expires_in": t.expires_in, "token_type": "Bearer"}),
            &[],
        ),
        Err((status, body)) => json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            body,
            &[],
        ),
    }
}

pub(crate) fn form_fields(body: &[u8]) -> HashMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

#[derive(Debug, Deserialize)]
pub(crate) struct GrantBody {
    #[serde(default = "default_ttl")]
    ttl_s: u64,
}

fn default_ttl() -> u64 {
    3600
}

/// `POST /_sim/oauth/{grant}` with `{"ttl_s": 3600}`: a new grant's tokens.
pub(crate) async fn control_grant(
    State(sim): State<Sim>,
    Path(grant): Path<String>,
    Json(b): Json<GrantBody>,
) -> Json<SimTokens> {
    Json(sim.oauth_grant(&grant, Duration::from_secs(b.ttl_s)))
}
