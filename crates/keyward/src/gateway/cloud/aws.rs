//! AWS keys: where they come from (a static access key, a shared credentials-file
//! profile read again when it expires, or STS `AssumeRoleWithWebIdentity`), and SigV4
//! signing with `aws-sigv4` (never hand-written).
//!
//! STS answers in the query protocol's XML: `<Credentials>` with `AccessKeyId`,
//! `SecretAccessKey`, `SessionToken` and `Expiration`, or an `<Error>` with a `<Code>`.
//! Documented codes for this call: `InvalidIdentityToken`, `IDPRejectedClaim`,
//! `AccessDenied` (the role's trust policy), `MalformedPolicyDocument`,
//! `PackedPolicyTooLarge`, `RegionDisabledException` — permanent until an operator acts;
//! `ExpiredTokenException` (the web-identity token in the file expired: the file is
//! rewritten by its issuer, read again next time), `IDPCommunicationError`, throttling
//! and 5xx — transient.

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use axum::http::Request;
use bytes::Bytes;
use http_body_util::Full;
use keyward_core::health::Timestamp;
use secrecy::{ExposeSecret, SecretString};

use super::call::{host, post_form, short};
use super::{FetchError, Fetched, Material};
use crate::config::{read_profile, AwsAuth, AwsSource};

/// How long STS keys are asked for.
const SESSION: Duration = Duration::from_secs(3600);

/// AWS signing keys. `Debug` shows the access key id only.
pub(crate) struct AwsKeys {
    pub(crate) access_key_id: String,
    secret_access_key: Arc<SecretString>,
    session_token: Option<Arc<SecretString>>,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Why a request could not be signed. Never quotes a key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignError {
    /// aws-sigv4 refused the request (a URL or header it cannot canonicalise).
    #[error("cannot SigV4-sign the request for access key {access_key_id}: {why}; check the endpoint's base_url and region")]
    Refused { access_key_id: String, why: String },
}

impl AwsKeys {
    /// Signs `req` (whose body is `body`) for `service` in `region` at `now`.
    pub(crate) fn sign(
        &self,
        req: &mut Request<Full<Bytes>>,
        body: &[u8],
        region: &str,
        service: &str,
        now: std::time::SystemTime,
    ) -> Result<(), SignError> {
        let refused = |why: String| SignError::Refused {
            access_key_id: self.access_key_id.clone(),
            why,
        };
        let identity = Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose_secret().to_owned(),
            self.session_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            None,
            "keyward",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| refused(e.to_string()))?
            .into();
        let uri = req.uri().to_string();
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(
            req.method().as_str(),
            uri,
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| refused(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| refused(e.to_string()))?
            .into_parts();
        instructions.apply_to_request_http1x(req);
        for name in ["authorization", "x-amz-security-token"] {
            if let Some(v) = req.headers_mut().get_mut(name) {
                v.set_sensitive(true);
            }
        }
        Ok(())
    }
}

/// Fetches `auth`'s keys now.
pub(super) async fn fetch(
    client: &reqwest::Client,
    auth: &AwsAuth,
    credential: &str,
    now: Timestamp,
) -> Result<Fetched, FetchError> {
    match &auth.source {
        AwsSource::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => Ok(Fetched {
            material: Material::Aws(AwsKeys {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.clone(),
                session_token: session_token.clone(),
            }),
            expires_at: None,
        }),
        AwsSource::Profile {
            name,
            file,
            config_file,
        } => {
            let path = file.clone();
            let config = config_file.clone();
            let name = name.clone();
            let keys = tokio::task::spawn_blocking(move || read_profile(&path, &config, &name))
                .await
                .map_err(|e| FetchError::Transient(e.to_string()))?
                .map_err(|e| FetchError::Transient(e.to_string()))?;
            Ok(Fetched {
                material: Material::Aws(AwsKeys {
                    access_key_id: keys.access_key_id,
                    secret_access_key: Arc::new(keys.secret_access_key),
                    session_token: keys.session_token.map(Arc::new),
                }),
                // A profile's session keys carry no expiry in the file: they are read
                // again when AWS says they expired.
                expires_at: None,
            })
        }
        AwsSource::WebIdentity {
            token_file,
            role_arn,
            session_name,
            sts_url,
        } => {
            let path = token_file.clone();
            let token = tokio::task::spawn_blocking(move || std::fs::read_to_string(&path))
                .await
                .map_err(|e| FetchError::Transient(e.to_string()))?
                .map_err(|e| {
                    FetchError::Transient(format!(
                        "cannot read the web-identity token file {}: {e}",
                        token_file.display()
                    ))
                })?;
            assume_role(
                client,
                sts_url,
                role_arn,
                session_name,
                token.trim(),
                credential,
                now,
            )
            .await
        }
    }
}

async fn assume_role(
    client: &reqwest::Client,
    sts_url: &str,
    role_arn: &str,
    session_name: &str,
    token: &str,
    credential: &str,
    now: Timestamp,
) -> Result<Fetched, FetchError> {
    let duration = SESSION.as_secs().to_string();
    let answer = post_form(
        client,
        &format!("{sts_url}/"),
        "text/xml",
        &[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role_arn),
            ("RoleSessionName", session_name),
            ("WebIdentityToken", token),
            ("DurationSeconds", &duration),
        ],
    )
    .await?;
    let text = String::from_utf8_lossy(&answer.body);
    if !answer.ok() {
        let code = tag(&text, "Code").unwrap_or("no error code");
        let message = short(tag(&text, "Message").unwrap_or_default());
        let why = format!(
            "STS AssumeRoleWithWebIdentity for {role_arn} refused ({} {code}: {message})",
            answer.status
        );
        return Err(match code {
            "ExpiredTokenException" | "IDPCommunicationError" | "Throttling" => {
                FetchError::Transient(why)
            }
            "InvalidIdentityToken" | "IDPRejectedClaim" => FetchError::Dead(format!(
                "{why}: the web-identity token is not accepted for this role; check the role's OIDC provider and the token file, then `keyward reset {credential}`"
            )),
            "AccessDenied" => FetchError::Dead(format!(
                "{why}: the role's trust policy does not allow this identity; fix the trust policy, then `keyward reset {credential}`"
            )),
            _ if answer.status == 400 || answer.status == 403 => FetchError::Dead(format!(
                "{why}: fix the role or its policies, then `keyward reset {credential}`"
            )),
            _ => FetchError::Transient(why),
        });
    }
    let (Some(id), Some(secret), Some(session)) = (
        tag(&text, "AccessKeyId"),
        tag(&text, "SecretAccessKey"),
        tag(&text, "SessionToken"),
    ) else {
        return Err(FetchError::Transient(format!(
            "STS ({}) answered {} without credentials",
            host(sts_url),
            answer.status
        )));
    };
    let expires_at = tag(&text, "Expiration")
        .and_then(|e| humantime::parse_rfc3339(e).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Timestamp(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
        .unwrap_or_else(|| now.plus(SESSION));
    Ok(Fetched {
        material: Material::Aws(AwsKeys {
            access_key_id: id.to_owned(),
            secret_access_key: Arc::new(SecretString::from(secret.to_owned())),
            session_token: Some(Arc::new(SecretString::from(session.to_owned()))),
        }),
        expires_at: Some(expires_at),
    })
}

/// The text of the first `<name>…</name>` element (STS's XML is flat enough for this;
/// no value we read contains markup).
fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(xml[start..start + len].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_answers_are_read_by_their_elements() {
        let ok = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId><SecretAccessKey>s3cr3t</SecretAccessKey><SessionToken>tok</SessionToken><Expiration>2026-12-03T13:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        assert_eq!(tag(ok, "AccessKeyId"), Some("ASIAEXAMPLE"));
        assert_eq!(tag(ok, "Expiration"), Some("2026-12-03T13:00:00Z"));
        assert_eq!(tag(ok, "Code"), None);
    }

    #[test]
    fn keys_debug_shows_the_access_key_id_only() {
        let k = AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Arc::new(SecretString::from("wJalrXUtnFEMI".to_owned())),
            session_token: Some(Arc::new(SecretString::from("sessiontok".to_owned()))),
        };
        let d = format!("{k:?}");
        assert!(d.contains("AKIDEXAMPLE"));
        assert!(!d.contains("wJalr") && !d.contains("sessiontok"));
    }

    #[test]
    fn a_signed_request_carries_sigv4_auth_marked_sensitive() {
        let k = AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Arc::new(SecretString::from("wJalrXUtnFEMI".to_owned())),
            session_token: Some(Arc::new(SecretString::from("sessiontok".to_owned()))),
        };
        let mut req = Request::new(Full::new(Bytes::from_static(b"{}")));
        *req.method_mut() = axum::http::Method::POST;
        *req.uri_mut() = axum::http::Uri::from_static(
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/invoke",
        );
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_764_763_200);
        k.sign(&mut req, b"{}", "us-east-1", "bedrock", t).unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20251203/us-east-1/bedrock/aws4_request"
            ),
            "{auth}"
        );
        assert!(req.headers()["authorization"].is_sensitive());
        assert!(req.headers()["x-amz-security-token"].is_sensitive());
        assert!(!auth.contains("wJalr"));
    }
}
