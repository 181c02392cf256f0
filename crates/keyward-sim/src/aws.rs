//! The sim's AWS: Bedrock Runtime (`InvokeModel`, `InvokeModelWithResponseStream` in
//! AWS event-stream framing, and the OpenAI-compatible chat endpoint) behind real SigV4
//! verification — the signature is recomputed with `aws-sigv4` from the secret the sim
//! holds for the access key, so a wrong secret fails as AWS would — and STS
//! `AssumeRoleWithWebIdentity`, which issues session keys that expire. It can be told to
//! expire sessions, deny a model to a key, skew its clock, or fail STS.
//!
//! Keys are counted under their name: a static key's access key id, or for STS-issued
//! keys the name given with [`Sim::aws_web_identity`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue as EsHeader, Message};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use crate::errors::{rfc3339, Shape};
use crate::inference::inference;
use crate::oauth::TokenEndpoint;
use crate::{wall_instant, wall_time, Sim};

/// One access key the sim knows.
#[derive(Debug, Clone)]
struct Key {
    secret: String,
    session_token: Option<String>,
    expires: Option<Instant>,
    name: String,
}

/// The sim's AWS state.
#[derive(Debug, Default)]
pub(crate) struct AwsSim {
    keys: HashMap<String, Key>,
    /// (key name, model) pairs IAM denies.
    denied: HashSet<(String, String)>,
    /// Seconds the sim's clock is ahead of the wall clock (negative: behind).
    skew_secs: i64,
    /// Web-identity token → (role ARN, key name, session lifetime).
    identities: HashMap<String, (String, String, Duration)>,
    sts_mode: TokenEndpoint,
    /// Every STS call: (key name or "unknown", outcome).
    sts_log: Vec<(String, String)>,
    issued: u64,
}

impl Sim {
    /// A long-term access key, counted under its id.
    pub fn aws_key(&self, access_key_id: &str, secret: &str) {
        self.lock().aws.keys.insert(
            access_key_id.to_owned(),
            Key {
                secret: secret.to_owned(),
                session_token: None,
                expires: None,
                name: access_key_id.to_owned(),
            },
        );
    }

    /// Temporary keys (an `ASIA…` id with its session token) that expire after `ttl`.
    pub fn aws_session_key(&self, access_key_id: &str, secret: &str, token: &str, ttl: Duration) {
        self.lock().aws.keys.insert(
            access_key_id.to_owned(),
            Key {
                secret: secret.to_owned(),
                session_token: Some(token.to_owned()),
                expires: Some(wall_instant() + ttl),
                name: access_key_id.to_owned(),
            },
        );
    }

    /// A web-identity token STS accepts for `role_arn`, issuing keys that last `ttl`,
    /// counted under `name`.
    pub fn aws_web_identity(&self, token: &str, role_arn: &str, name: &str, ttl: Duration) {
        self.lock().aws.identities.insert(
            token.to_owned(),
            (role_arn.to_owned(), name.to_owned(), ttl),
        );
    }

    /// Expires every session key issued so far (AWS says `ExpiredTokenException`).
    pub fn aws_expire_sessions(&self) {
        let now = wall_instant();
        for k in self.lock().aws.keys.values_mut() {
            if k.session_token.is_some() {
                k.expires = Some(now);
            }
        }
    }

    /// IAM denies `model` to the key named `name` (`AccessDeniedException`).
    pub fn aws_deny_model(&self, name: &str, model: &str) {
        self.lock()
            .aws
            .denied
            .insert((name.to_owned(), model.to_owned()));
    }

    /// Sets the sim's clock `secs` ahead of the wall clock (negative: behind): requests
    /// signed more than 5 minutes off fail with "Signature expired".
    pub fn aws_skew(&self, secs: i64) {
        self.lock().aws.skew_secs = secs;
    }

    /// How STS answers.
    pub fn set_sts(&self, mode: TokenEndpoint) {
        self.lock().aws.sts_mode = mode;
    }

    /// STS calls for key name `name`: `ok`, `unavailable`, `refused`.
    pub fn sts_calls(&self, name: &str) -> Vec<String> {
        self.lock()
            .aws
            .sts_log
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Checks a request's SigV4 signature: the key's name, or AWS's refusal.
    fn verify_sigv4(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<String, Refusal> {
        let auth = header(headers, "authorization").unwrap_or_default();
        let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
            return Err(refusal(
                403,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ));
        };
        let field = |name: &str| {
            rest.split(',')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(name))
                .unwrap_or_default()
                .to_owned()
        };
        let scope = field("Credential=");
        let signed_headers = field("SignedHeaders=");
        let signature = field("Signature=");
        let mut parts = scope.split('/');
        let (akid, _date, region, service) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let (key, skew) = {
            let inner = self.lock();
            (inner.aws.keys.get(akid).cloned(), inner.aws.skew_secs)
        };
        let invalid = || {
            refusal(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        };
        let Some(key) = key else {
            return Err(invalid());
        };
        let token = header(headers, "x-amz-security-token");
        if key.session_token.as_deref() != token {
            return Err(invalid());
        }
        if key.expires.is_some_and(|e| wall_instant() >= e) {
            return Err(refusal(
                403,
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ));
        }
        let amz_date = header(headers, "x-amz-date").unwrap_or_default();
        let Some(signed_at) = parse_amz_date(amz_date) else {
            return Err(refusal(
                400,
                "IncompleteSignatureException",
                "Date must be in ISO-8601 'basic format'.",
            ));
        };
        let now = skewed(wall_time(), skew);
        let window = Duration::from_secs(300);
        if signed_at + window < now {
            return Err(refusal(
                403,
                "InvalidSignatureException",
                &format!(
                    "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
                    amz(now - window),
                    amz(now)
                ),
            ));
        }
        if signed_at > now + window {
            return Err(refusal(
                403,
                "InvalidSignatureException",
                &format!(
                    "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
                    amz(now + window),
                    amz(now)
                ),
            ));
        }
        let host = header(headers, "host").unwrap_or_default();
        let full = format!(
            "http://{host}{}",
            uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let listed: Vec<&str> = signed_headers.split(';').collect();
        let pass: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| {
                listed.contains(&k.as_str())
                    && !matches!(k.as_str(), "x-amz-date" | "x-amz-security-token")
            })
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let identity = Credentials::new(
            akid,
            key.secret.clone(),
            key.session_token.clone(),
            None,
            "sim",
        )
        .into();
        let recomputed = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(signed_at)
            .settings(SigningSettings::default())
            .build()
            .ok()
            .and_then(|params| {
                let req = SignableRequest::new(
                    method.as_str(),
                    full,
                    pass.into_iter(),
                    SignableBody::Bytes(body),
                )
                .ok()?;
                sign(req, &params.into()).ok().map(|o| o.into_parts().1)
            });
        if recomputed.as_deref() != Some(signature.as_str()) {
            return Err(refusal(403, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."));
        }
        Ok(key.name)
    }

    /// One STS call: issues session keys for a known web-identity token.
    fn assume_role(&self, fields: &HashMap<String, String>) -> Response<Body> {
        let mut inner = self.lock();
        let token = fields.get("WebIdentityToken").cloned().unwrap_or_default();
        let Some((role, name, ttl)) = inner.aws.identities.get(&token).cloned() else {
            inner.aws.sts_log.push(("unknown".into(), "refused".into()));
            return sts_error(400, "InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements");
        };
        if inner.aws.sts_mode == TokenEndpoint::Unavailable {
            inner.aws.sts_log.push((name, "unavailable".into()));
            return sts_error(503, "ServiceUnavailable", "Service unavailable");
        }
        if fields.get("RoleArn") != Some(&role) {
            inner.aws.sts_log.push((name, "refused".into()));
            return sts_error(
                403,
                "AccessDenied",
                "Not authorized to perform sts:AssumeRoleWithWebIdentity",
            );
        }
        inner.aws.issued += 1;
        let n = inner.aws.issued;
        let akid = format!("ASIASIM{n:013}");
        let secret = format!("sim-secret-{n}-{name}");
        let session = format!("sim-session-{n}-{name}");
        inner.aws.keys.insert(
            akid.clone(),
            Key {
                secret: secret.clone(),
                session_token: Some(session.clone()),
                expires: Some(wall_instant() + ttl),
                name: name.clone(),
            },
        );
        inner.aws.sts_log.push((name, "ok".into()));
        let expiration = rfc3339(wall_time() + ttl);
        let xml = format!("<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{akid}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey><SessionToken>{session}</SessionToken><Expiration>{expiration}</Expiration></Credentials><AssumedRoleUser><Arn>{role}/keyward</Arn></AssumedRoleUser></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>sim</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>");
        xml_response(200, xml)
    }
}

/// AWS's refusal of a request: status, error type, message.
type Refusal = (u16, &'static str, String);

fn refusal(status: u16, ty: &'static str, message: &str) -> Refusal {
    (status, ty, message.to_owned())
}

fn refused((status, ty, message): Refusal) -> Response<Body> {
    aws_error(status, ty, &message)
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn skewed(t: SystemTime, secs: i64) -> SystemTime {
    if secs >= 0 {
        t + Duration::from_secs(secs.unsigned_abs())
    } else {
        t - Duration::from_secs(secs.unsigned_abs())
    }
}

/// `20261203T123456Z` → a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    if s.len() != 16 {
        return None;
    }
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        s.get(0..4)?,
        s.get(4..6)?,
        s.get(6..8)?,
        s.get(9..11)?,
        s.get(11..13)?,
        s.get(13..15)?
    );
    humantime::parse_rfc3339(&rfc).ok()
}

fn amz(t: SystemTime) -> String {
    rfc3339(t).replace(['-', ':'], "")
}

/// A Bedrock (REST-JSON) error: the type in `x-amzn-errortype`, `{"message": …}`.
fn aws_error(status: u16, ty: &str, message: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(json!({ "message": message }).to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{ty}:http://internal.amazon.com/coral/com.amazon.coral.service/"
    )) {
        h.insert("x-amzn-errortype", v);
    }
    r
}

fn xml_response(status: u16, xml: String) -> Response<Body> {
    let mut r = Response::new(Body::from(xml));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/xml"));
    r
}

/// An STS (query protocol) error.
fn sts_error(status: u16, code: &str, message: &str) -> Response<Body> {
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    xml_response(status, format!("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>sim</RequestId></ErrorResponse>"))
}

/// `POST /` with `Action=AssumeRoleWithWebIdentity`.
/// Like STS, it answers JSON (credentials with an epoch `Expiration`) to a caller that
/// accepts only `application/json`, and the documented XML otherwise.
pub(crate) async fn sts(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response<Body> {
    let fields = crate::oauth::form_fields(&body);
    if fields.get("Action").map(String::as_str) != Some("AssumeRoleWithWebIdentity") {
        return sts_error(400, "InvalidAction", "Could not find operation");
    }
    let r = sim.assume_role(&fields);
    if header(&headers, "accept") != Some("application/json") || r.status() != StatusCode::OK {
        return r;
    }
    let xml = axum::body::to_bytes(r.into_body(), 1 << 16)
        .await
        .unwrap_or_default();
    let xml = String::from_utf8_lossy(&xml);
    let tag = |name: &str| {
        xml.split(&format!("<{name}>"))
            .nth(1)
            .and_then(|t| t.split(&format!("</{name}>")).next())
            .unwrap_or_default()
            .to_owned()
    };
    let expiration = humantime::parse_rfc3339(&tag("Expiration"))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    crate::respond::json_response(
        StatusCode::OK,
        json!({"AssumeRoleWithWebIdentityResponse": {"AssumeRoleWithWebIdentityResult": {"Credentials": {
            "AccessKeyId": tag("AccessKeyId"), "SecretAccessKey": tag("SecretAccessKey"),
            "SessionToken": tag("SessionToken"), "Expiration": expiration}}}}),
        &[],
    )
}

pub(crate) async fn invoke(
    State(sim): State<Sim>,
    Path(model): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    bedrock(sim, model, false, method, uri, headers, body).await
}

pub(crate) async fn invoke_stream(
    State(sim): State<Sim>,
    Path(model): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    bedrock(sim, model, true, method, uri, headers, body).await
}

/// Bedrock's OpenAI-compatible Chat Completions, SigV4-signed.
pub(crate) async fn openai_chat(
    State(sim): State<Sim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let name = match sim.verify_sigv4(&method, &uri, &headers, &body) {
        Ok(n) => n,
        Err(r) => return refused(r),
    };
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {name}")) {
        h.insert("authorization", v);
    }
    inference(sim, Shape::OpenAi, &h, &body).await
}

async fn bedrock(
    sim: Sim,
    model: String,
    stream: bool,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let name = match sim.verify_sigv4(&method, &uri, &headers, &body) {
        Ok(n) => n,
        Err(r) => return refused(r),
    };
    if sim
        .lock()
        .aws
        .denied
        .contains(&(name.clone(), model.clone()))
    {
        return aws_error(
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        );
    }
    let Ok(Value::Object(mut req)) = serde_json::from_slice::<Value>(&body) else {
        return aws_error(
            400,
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        );
    };
    if req.contains_key("model") || req.contains_key("stream") {
        return aws_error(400, "ValidationException", "Malformed input request: extraneous key [model] is not permitted, please reformat your input and try again.");
    }
    if req.get("anthropic_version").and_then(Value::as_str) != Some("bedrock-2023-05-31") {
        return aws_error(400, "ValidationException", "Malformed input request: #: required key [anthropic_version] not found, please reformat your input and try again.");
    }
    req.insert("model".into(), Value::String(model));
    req.insert("stream".into(), Value::Bool(stream));
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert("x-api-key", v);
    }
    let inner = inference(
        sim,
        Shape::Anthropic,
        &h,
        Value::Object(req).to_string().as_bytes(),
    )
    .await;
    to_bedrock(inner, stream).await
}

/// An Anthropic answer as Bedrock gives it: errors in AWS's shape, a stream in AWS
/// event-stream framing.
async fn to_bedrock(r: Response<Body>, stream: bool) -> Response<Body> {
    let status = r.status().as_u16();
    if status >= 400 {
        let body = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let msg = v["error"]["message"].as_str().unwrap_or("error").to_owned();
        let ty = match status {
            429 => "ThrottlingException",
            503 | 529 => "ServiceUnavailableException",
            400 | 413 => "ValidationException",
            401 | 403 => "AccessDeniedException",
            404 => "ResourceNotFoundException",
            _ => "InternalServerException",
        };
        let status = match status {
            529 => 503,
            401 => 403,
            s => s,
        };
        return aws_error(status, ty, &msg);
    }
    if !stream {
        return r;
    }
    let mut sse = r.into_body().into_data_stream();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::new();
        while let Some(Ok(chunk)) = sse.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(end) = find(&buf, b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                let Some(frame) = frame_of(&event) else {
                    continue;
                };
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut out = Response::new(Body::from_stream(tokio_stream(rx)));
    out.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    out
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One SSE event as an event-stream message: a `chunk`, or an exception.
fn frame_of(event: &[u8]) -> Option<Bytes> {
    let text = std::str::from_utf8(event).ok()?;
    let data: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    if data.is_empty() {
        return None;
    }
    let v: Value = serde_json::from_str(&data).ok()?;
    let string = |s: &str| EsHeader::String(s.to_owned().into());
    let message = if v["type"] == "error" {
        let ty = match v["error"]["type"].as_str() {
            Some("overloaded_error") => "serviceUnavailableException",
            Some("rate_limit_error") => "throttlingException",
            _ => "internalServerException",
        };
        Message::new(
            json!({"message": v["error"]["message"]})
                .to_string()
                .into_bytes(),
        )
        .add_header(Header::new(":message-type", string("exception")))
        .add_header(Header::new(":exception-type", string(ty)))
        .add_header(Header::new(":content-type", string("application/json")))
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data.as_bytes());
        Message::new(json!({"bytes": b64}).to_string().into_bytes())
            .add_header(Header::new(":message-type", string("event")))
            .add_header(Header::new(":event-type", string("chunk")))
            .add_header(Header::new(":content-type", string("application/json")))
    };
    let mut out = Vec::new();
    write_message_to(&message, &mut out).ok()?;
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn amz_dates_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_765_296);
        assert_eq!(parse_amz_date(&amz(t)), Some(t));
    }
}
