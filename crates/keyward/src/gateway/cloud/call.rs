//! The token issuers' HTTP: one reqwest client (the issuers are not on the request
//! path), form posts retried with backoff on transient failures, and the issuer's answer
//! as status and body. Nothing here logs a request body: they carry secrets.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;

use keyward_core::health::Timestamp;
use secrecy::SecretString;

use super::{FetchError, Fetched, Material};

/// One issuer call's limit.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// An issuer's answer.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Bytes,
}

impl Answer {
    pub(super) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// 5xx and 429: the issuer's trouble, not the credential's.
    pub(super) fn issuer_trouble(&self) -> bool {
        self.status >= 500 || self.status == 429
    }
}

/// Posts `fields` as a form to `url`, accepting `accept` (STS answers JSON when asked
/// for it; its XML is what the query protocol documents); transport failures and issuer
/// trouble (5xx, 429) are retried twice with backoff (about a second in all), then
/// reported transient.
pub(super) async fn post_form(
    client: &reqwest::Client,
    url: &str,
    accept: &'static str,
    fields: &[(&str, &str)],
) -> Result<Answer, FetchError> {
    let once = || async {
        let resp = client
            .post(url)
            .header("accept", accept)
            .form(fields)
            .send()
            .await
            .map_err(|e| {
                FetchError::Transient(if e.is_timeout() {
                    format!("the token endpoint {} timed out", host(url))
                } else {
                    format!("cannot connect to the token endpoint {}", host(url))
                })
            })?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|_| FetchError::Transient(format!("the answer of {} broke off", host(url))))?;
        let a = Answer { status, body };
        if a.issuer_trouble() {
            return Err(FetchError::Transient(format!(
                "the token endpoint {} answered {status}",
                host(url)
            )));
        }
        Ok(a)
    };
    once.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(2)
            .with_jitter(),
    )
    .when(|e| matches!(e, FetchError::Transient(_)))
    .await
}

/// The host of `url`, for messages (never its query, which may hold a token).
pub(super) fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// An OAuth token response's access token and lifetime.
#[derive(serde::Deserialize)]
pub(super) struct TokenResponse {
    pub(super) access_token: String,
    #[serde(default)]
    pub(super) expires_in: Option<serde_json::Value>,
}

impl TokenResponse {
    /// Seconds until expiry (Entra sends a number, some issuers a string).
    pub(super) fn lifetime(&self) -> Option<Duration> {
        let s = match &self.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(serde_json::Value::String(s)) => s.parse::<f64>().ok(),
            _ => None,
        }?;
        (s.is_finite() && s > 0.0)
            .then(|| Duration::try_from_secs_f64(s.min(86_400.0)).ok())
            .flatten()
    }
}

/// An OAuth token endpoint's success (`issuer` names it in the error when the answer has
/// no token): the bearer token, and when it expires (an hour from `now` when not said).
pub(super) fn bearer(answer: &Answer, now: Timestamp, issuer: &str) -> Result<Fetched, FetchError> {
    let t: TokenResponse = serde_json::from_slice(&answer.body).map_err(|_| {
        FetchError::Transient(format!(
            "{issuer} answered {} without an access_token",
            answer.status
        ))
    })?;
    let lifetime = t.lifetime().unwrap_or(Duration::from_secs(3600));
    Ok(Fetched {
        material: Material::Bearer(SecretString::from(t.access_token)),
        expires_at: Some(now.plus(lifetime)),
    })
}

/// An RFC 6749 §5.2 error answer: `error` and `error_description`.
pub(super) fn oauth_error(body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        error: String,
        #[serde(default)]
        error_description: String,
    }
    serde_json::from_slice::<E>(body)
        .map(|e| (e.error, e.error_description))
        .unwrap_or_default()
}

/// `text` cut to a sentence or two for evidence.
pub(super) fn short(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default().trim();
    let mut out: String = first.chars().take(200).collect();
    if first.chars().count() > 200 {
        out.push('…');
    }
    out
}
