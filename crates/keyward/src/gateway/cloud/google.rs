//! Google service accounts: the JWT-bearer grant (RFC 7523, Google's
//! `urn:ietf:params:oauth:grant-type:jwt-bearer`). The assertion is three base64url
//! segments signed RS256 with `ring` (already the TLS stack's crypto), so no JWT crate
//! is needed; the token endpoint answers an access token that lasts an hour.
//!
//! Its refusals (RFC 6749 §5.2, as Google words them): `invalid_grant` "Invalid JWT
//! Signature." — the key was deleted or disabled: permanent, create a new key;
//! `invalid_grant` "Invalid JWT: Token must be a short-lived token … in a reasonable
//! timeframe. Check your iat and exp values" — this host's clock is off: transient, fix
//! the clock, not the key; `invalid_grant` "Invalid grant: account not found" and
//! `invalid_client` / `unauthorized_client` — the service account is deleted or disabled:
//! permanent.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyward_core::health::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::call::{bearer, oauth_error, post_form, short};
use super::{FetchError, Fetched};
use crate::config::GoogleAuth;

/// How long an assertion is valid (Google's maximum is an hour).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

/// The signed assertion for `auth` at `now`.
pub(super) fn assertion(auth: &GoogleAuth, now: Timestamp) -> Result<SecretString, FetchError> {
    let iat = now.0 / 1000;
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": auth.account.private_key_id});
    let claims = json!({
        "iss": auth.account.client_email,
        "scope": auth.scopes.join(" "),
        "aud": auth.token_url,
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME.as_secs(),
    });
    let mut signing_input = URL_SAFE_NO_PAD.encode(header.to_string());
    signing_input.push('.');
    signing_input.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let key = ring::signature::RsaKeyPair::from_pkcs8(auth.account.key.expose_secret())
        .map_err(|_| {
            FetchError::Dead(format!(
                "the private key in {} cannot sign: create a new key for {} and point service_account_file at it",
                auth.key_file.display(),
                auth.account.client_email
            ))
        })?;
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| FetchError::Transient("signing the service account assertion failed".into()))?;
    signing_input.push('.');
    signing_input.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(SecretString::from(signing_input))
}

pub(super) async fn fetch(
    client: &reqwest::Client,
    auth: &GoogleAuth,
    now: Timestamp,
) -> Result<Fetched, FetchError> {
    let jwt = assertion(auth, now)?;
    let answer = post_form(
        client,
        &auth.token_url,
        "application/json",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", jwt.expose_secret()),
        ],
    )
    .await?;
    if answer.ok() {
        return bearer(&answer, now, "the token endpoint");
    }
    let (error, description) = oauth_error(&answer.body);
    Err(refusal(auth, answer.status, &error, &description))
}

/// What Google's refusal means, with what to do.
fn refusal(auth: &GoogleAuth, status: u16, error: &str, description: &str) -> FetchError {
    let who = format!(
        "service account {} (key {})",
        auth.account.client_email, auth.account.private_key_id
    );
    let what = format!("{status} {error}: {}", short(description));
    let d = description.to_ascii_lowercase();
    if d.contains("timeframe") || d.contains("iat") || d.contains("not yet valid") {
        return FetchError::Transient(format!(
            "Google refused the assertion of {who} as outside its time window ({what}): this host's clock is off; fix the clock (NTP), not the key"
        ));
    }
    match error {
        "invalid_grant" if d.contains("account not found") => FetchError::Dead(format!(
            "Google refused {who} ({what}): the service account was deleted; create a service account and a new key, and point service_account_file at it"
        )),
        "invalid_grant" | "invalid_client" | "unauthorized_client" => FetchError::Dead(format!(
            "Google refused {who} ({what}): the key was deleted or disabled; create a new key (IAM → Service accounts → Keys → Add key → JSON) and point service_account_file at it"
        )),
        "invalid_scope" => FetchError::Dead(format!(
            "Google refused the scopes of {who} ({what}): fix [credentials.google] scopes"
        )),
        _ => FetchError::Transient(format!("Google's token endpoint refused {who} ({what})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_key_says_create_a_new_key_and_a_skewed_clock_says_fix_the_clock() {
        let auth = test_auth();
        let FetchError::Dead(why) = refusal(&auth, 400, "invalid_grant", "Invalid JWT Signature.")
        else {
            panic!("a bad signature is permanent")
        };
        assert!(why.contains("create a new key"), "{why}");
        assert!(why.contains("sa@p.iam.gserviceaccount.com"), "{why}");
        let FetchError::Transient(why) = refusal(&auth, 400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.") else {
            panic!("clock skew is not the key's fault")
        };
        assert!(why.contains("fix the clock"), "{why}");
    }

    fn test_auth() -> GoogleAuth {
        let text = include_str!("../../../tests/it/fixtures/service-account.json");
        GoogleAuth {
            account: std::sync::Arc::new(crate::config::ServiceAccount::parse(text).unwrap()),
            key_file: "sa.json".into(),
            token_url: "https://oauth2.googleapis.com/token".into(),
            scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            refresh_ahead: Duration::from_secs(300),
        }
    }

    #[test]
    fn the_assertion_is_rs256_over_header_and_claims() {
        let auth = test_auth();
        let jwt = assertion(&auth, Timestamp(1_764_763_200_000)).unwrap();
        let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            3600
        );
        let key =
            ring::signature::RsaKeyPair::from_pkcs8(auth.account.key.expose_secret()).unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            ring::signature::KeyPair::public_key(&key).as_ref().to_vec(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            )
            .unwrap();
    }
}
