//! The sim's Google and Microsoft identity platforms, and Vertex AI's routes:
//!
//! - Google's token endpoint (`POST /token`) answers the JWT-bearer grant of a service
//!   account whose key it knows: it verifies the assertion's RS256 signature with that
//!   key's public half, its audience and its time window (against the sim's clock, which
//!   can be skewed); a deleted key gets `invalid_grant` "Invalid JWT Signature.".
//! - Entra's (`POST /{tenant}/oauth2/v2.0/token`) answers the client-credentials grant of
//!   an app whose secret it knows; a wrong or expired secret gets `invalid_client`.
//! - Vertex AI (`/v1/projects/{p}/locations/{l}/publishers/{anthropic|google}/models/…`)
//!   takes the access tokens Google issued, and answers as Claude (`rawPredict`,
//!   `streamRawPredict`) or Gemini.
//!
//! Access tokens expire; requests with them are counted under the account's or app's
//! name. Either token endpoint can be made unavailable (503).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::errors::Shape;
use crate::inference::inference;
use crate::oauth::{form_fields, TokenEndpoint};
use crate::respond::json_response;
use crate::{wall_instant, Sim};

/// The sim's identity platforms.
#[derive(Debug, Default)]
pub(crate) struct CloudTokens {
    /// Issued access tokens → (name, expiry).
    pub(crate) bearer: HashMap<String, (String, Instant)>,
    /// Google service accounts: client email → (key id, public key DER, token lifetime,
    /// deleted).
    accounts: HashMap<String, (String, Vec<u8>, Duration, bool)>,
    /// Entra apps: (tenant, client id) → (secret, token lifetime).
    apps: HashMap<(String, String), (String, Duration)>,
    google_mode: TokenEndpoint,
    entra_mode: TokenEndpoint,
    skew_secs: i64,
    /// Token endpoint calls: (name, outcome).
    log: Vec<(String, String)>,
    issued: u64,
}

impl Sim {
    /// A Google service account whose key (PKCS#8 DER of its private key, as in its JSON
    /// key file) the sim knows; its access tokens live `ttl`; counted under its email.
    pub fn google_service_account(&self, email: &str, key_id: &str, pkcs8: &[u8], ttl: Duration) {
        let public = ring::signature::RsaKeyPair::from_pkcs8(pkcs8)
            .map(|k| ring::signature::KeyPair::public_key(&k).as_ref().to_vec())
            .unwrap_or_default();
        self.lock()
            .cloud
            .accounts
            .insert(email.to_owned(), (key_id.to_owned(), public, ttl, false));
    }

    /// Deletes the service account's key: its assertions fail `invalid_grant` from now
    /// on (access tokens already issued work until they expire, as at Google).
    pub fn google_delete_key(&self, email: &str) {
        if let Some(a) = self.lock().cloud.accounts.get_mut(email) {
            a.3 = true;
        }
    }

    /// An Entra app registration with a client secret; its tokens live `ttl`; counted
    /// under the client id.
    pub fn entra_app(&self, tenant: &str, client_id: &str, secret: &str, ttl: Duration) {
        self.lock().cloud.apps.insert(
            (tenant.to_owned(), client_id.to_owned()),
            (secret.to_owned(), ttl),
        );
    }

    /// How Google's token endpoint answers.
    pub fn set_google_token_endpoint(&self, mode: TokenEndpoint) {
        self.lock().cloud.google_mode = mode;
    }

    /// How Entra's token endpoint answers.
    pub fn set_entra_token_endpoint(&self, mode: TokenEndpoint) {
        self.lock().cloud.entra_mode = mode;
    }

    /// Sets the Google token endpoint's clock `secs` off the wall clock.
    pub fn google_skew(&self, secs: i64) {
        self.lock().cloud.skew_secs = secs;
    }

    /// Expires every access token Google and Entra issued so far.
    pub fn expire_cloud_tokens(&self) {
        let now = wall_instant();
        for (_, e) in self.lock().cloud.bearer.values_mut() {
            *e = now;
        }
    }

    /// Token endpoint calls for `name` (an account's email or an app's client id): `ok`,
    /// `unavailable`, `refused`, `skewed`.
    pub fn cloud_token_calls(&self, name: &str) -> Vec<String> {
        self.lock()
            .cloud
            .log
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, o)| o.clone())
            .collect()
    }

    fn issue(&self, name: &str, ttl: Duration) -> (String, u64) {
        let mut inner = self.lock();
        inner.cloud.issued += 1;
        let token = format!("sim-cat-{}-{name}", inner.cloud.issued);
        inner
            .cloud
            .bearer
            .insert(token.clone(), (name.to_owned(), wall_instant() + ttl));
        inner.cloud.log.push((name.to_owned(), "ok".into()));
        (token, ttl.as_secs())
    }

    fn log_token(&self, name: &str, outcome: &str) {
        self.lock()
            .cloud
            .log
            .push((name.to_owned(), outcome.to_owned()));
    }
}

fn oauth_err(status: u16, error: &str, description: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        json!({"error": error, "error_description": description}),
        &[],
    )
}

/// Google's token endpoint: the JWT-bearer grant.
pub(crate) async fn google_token(State(sim): State<Sim>, body: Bytes) -> Response<Body> {
    let f = form_fields(&body);
    if f.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth_err(400, "unsupported_grant_type", "Invalid grant_type");
    }
    let jwt = f.get("assertion").cloned().unwrap_or_default();
    let parts: Vec<&str> = jwt.split('.').collect();
    let claims: Value = parts
        .get(1)
        .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
        .and_then(|c| serde_json::from_slice(&c).ok())
        .unwrap_or(Value::Null);
    let email = claims["iss"].as_str().unwrap_or_default().to_owned();
    let (account, mode, skew) = {
        let inner = sim.lock();
        (
            inner.cloud.accounts.get(&email).cloned(),
            inner.cloud.google_mode,
            inner.cloud.skew_secs,
        )
    };
    if mode == TokenEndpoint::Unavailable {
        sim.log_token(&email, "unavailable");
        return oauth_err(
            503,
            "temporarily_unavailable",
            "The service is currently unavailable.",
        );
    }
    let Some((_, public, ttl, deleted)) = account else {
        sim.log_token(&email, "refused");
        return oauth_err(400, "invalid_grant", "Invalid grant: account not found");
    };
    let signed = format!(
        "{}.{}",
        parts.first().unwrap_or(&""),
        parts.get(1).unwrap_or(&"")
    );
    let sig = parts
        .get(2)
        .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
        .unwrap_or_default();
    let valid = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &public,
    )
    .verify(signed.as_bytes(), &sig)
    .is_ok();
    if deleted || !valid {
        sim.log_token(&email, "refused");
        return oauth_err(400, "invalid_grant", "Invalid JWT Signature.");
    }
    let now = crate::wall_unix_secs() as i64 + skew;
    let iat = claims["iat"].as_i64().unwrap_or(0);
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if (iat - now).abs() > 300 || exp <= now || exp - iat > 3600 {
        sim.log_token(&email, "skewed");
        return oauth_err(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.");
    }
    let (token, expires_in) = sim.issue(&email, ttl);
    json_response(
        StatusCode::OK,
        json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}),
        &[],
    )
}

/// Entra's token endpoint: the client-credentials grant.
pub(crate) async fn entra_token(
    State(sim): State<Sim>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response<Body> {
    let f = form_fields(&body);
    let client = f.get("client_id").cloned().unwrap_or_default();
    let (app, mode) = {
        let inner = sim.lock();
        (
            inner
                .cloud
                .apps
                .get(&(tenant.clone(), client.clone()))
                .cloned(),
            inner.cloud.entra_mode,
        )
    };
    if mode == TokenEndpoint::Unavailable {
        sim.log_token(&client, "unavailable");
        return oauth_err(
            503,
            "temporarily_unavailable",
            "AADSTS50196: The server is temporarily unavailable.",
        );
    }
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_err(
            400,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    let Some((secret, ttl)) = app else {
        sim.log_token(&client, "refused");
        return oauth_err(400, "unauthorized_client", &format!("AADSTS700016: Application with identifier '{client}' was not found in the directory '{tenant}'."));
    };
    if f.get("client_secret") != Some(&secret) {
        sim.log_token(&client, "refused");
        return oauth_err(401, "invalid_client", &format!("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client}'."));
    }
    let (token, expires_in) = sim.issue(&client, ttl);
    json_response(
        StatusCode::OK,
        json!({"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in, "access_token": token}),
        &[],
    )
}

/// A Google API error.
fn google_error(status: u16, code: &str, message: &str, reason: Option<&str>) -> Response<Body> {
    let details = reason.map_or(json!([]), |r| {
        json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": r, "domain": "googleapis.com"}])
    });
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED),
        json!({"error": {"code": status, "message": message, "status": code, "details": details}}),
        &[],
    )
}

/// Vertex AI's publisher models: Claude (`rawPredict`, `streamRawPredict`) and Gemini.
pub(crate) async fn vertex(
    State(sim): State<Sim>,
    Path((_project, _location, publisher, model_action)): Path<(String, String, String, String)>,
    query: Query<crate::gemini::GeminiQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let known = sim.lock().cloud.bearer.get(&token).cloned();
    match known {
        None => {
            return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", Some("ACCESS_TOKEN_TYPE_UNSUPPORTED"));
        }
        Some((_, expires)) if wall_instant() >= expires => {
            return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", Some("ACCESS_TOKEN_EXPIRED"));
        }
        Some(_) => {}
    }
    let (model, action) = model_action
        .split_once(':')
        .map_or((model_action.clone(), String::new()), |(m, a)| {
            (m.to_owned(), a.to_owned())
        });
    if publisher == "google" {
        return crate::gemini::gemini(State(sim), Path(model_action), query, headers, body).await;
    }
    let stream = match action.as_str() {
        "rawPredict" => false,
        "streamRawPredict" => true,
        _ => return google_error(404, "NOT_FOUND", "Method not found.", None),
    };
    let Ok(Value::Object(mut req)) = serde_json::from_slice::<Value>(&body) else {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
            None,
        );
    };
    if req.contains_key("model")
        || req.get("anthropic_version").and_then(Value::as_str) != Some("vertex-2023-10-16")
    {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"type":"error","error":{"type":"invalid_request_error","message":"anthropic_version: vertex-2023-10-16 is required and model must not be in the body"}}),
            &[],
        );
    }
    req.insert("model".into(), Value::String(model));
    req.insert("stream".into(), Value::Bool(stream));
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
        h.insert("authorization", v);
    }
    inference(
        sim,
        Shape::Anthropic,
        &h,
        Value::Object(req).to_string().as_bytes(),
    )
    .await
}
