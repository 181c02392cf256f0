//! Microsoft Entra ID: the client-credentials grant (tenant, client id, client secret)
//! for Azure OpenAI's `https://cognitiveservices.azure.com/.default` scope. Tokens last
//! about an hour and are refreshed ahead.
//!
//! Its refusals (AADSTS codes in `error_description`): `invalid_client` AADSTS7000215
//! (wrong secret) and AADSTS7000222 (expired secret) — create a new client secret;
//! `unauthorized_client` AADSTS700016 (no such app in the tenant) and `invalid_request`
//! AADSTS90002 (no such tenant) — fix the ids; `invalid_scope` — fix the scope. All
//! permanent. 5xx, 429 and timeouts are the endpoint's trouble: transient, nothing
//! disabled.

use keyward_core::health::Timestamp;
use secrecy::ExposeSecret;

use super::call::{bearer, oauth_error, post_form, short};
use super::{FetchError, Fetched};
use crate::config::EntraAuth;

pub(super) async fn fetch(
    client: &reqwest::Client,
    auth: &EntraAuth,
    now: Timestamp,
) -> Result<Fetched, FetchError> {
    let answer = post_form(
        client,
        &auth.token_url(),
        "application/json",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &auth.client_id),
            ("client_secret", auth.client_secret.expose_secret()),
            ("scope", &auth.scope),
        ],
    )
    .await?;
    if answer.ok() {
        return bearer(&answer, now, "Entra");
    }
    let (error, description) = oauth_error(&answer.body);
    Err(refusal(auth, answer.status, &error, &description))
}

fn refusal(auth: &EntraAuth, status: u16, error: &str, description: &str) -> FetchError {
    let who = format!("app {} in tenant {}", auth.client_id, auth.tenant_id);
    let what = format!("{status} {error}: {}", short(description));
    let code = |c: &str| description.contains(c);
    if code("AADSTS7000222") {
        return FetchError::Dead(format!(
            "Entra refused the client secret of {who} as expired ({what}): create a new client secret (App registrations → Certificates & secrets) and update [credentials.entra] client_secret"
        ));
    }
    if code("AADSTS7000215") || error == "invalid_client" {
        return FetchError::Dead(format!(
            "Entra refused the client secret of {who} ({what}): it is wrong or was deleted; create a new client secret and update [credentials.entra] client_secret"
        ));
    }
    if code("AADSTS700016") || code("AADSTS90002") || error == "unauthorized_client" {
        return FetchError::Dead(format!(
            "Entra does not know {who} ({what}): fix tenant_id and client_id in [credentials.entra]"
        ));
    }
    match error {
        "invalid_scope" | "invalid_request" => FetchError::Dead(format!(
            "Entra refused the request for {who} ({what}): fix [credentials.entra]"
        )),
        _ => FetchError::Transient(format!("Entra refused {who} ({what})")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;

    fn auth() -> EntraAuth {
        EntraAuth {
            tenant_id: "t1".into(),
            client_id: "c1".into(),
            client_secret: std::sync::Arc::new(SecretString::from("shh-secret".to_owned())),
            authority: "https://login.microsoftonline.com".into(),
            scope: "https://cognitiveservices.azure.com/.default".into(),
            refresh_ahead: Duration::from_secs(300),
        }
    }

    #[test]
    fn entra_refusals_say_what_to_do_and_never_quote_the_secret() {
        for (error, d, want) in [
            ("invalid_client", "AADSTS7000222: The provided client secret keys for app 'c1' are expired.", "create a new client secret"),
            ("invalid_client", "AADSTS7000215: Invalid client secret provided.", "create a new client secret"),
            ("unauthorized_client", "AADSTS700016: Application with identifier 'c1' was not found in the directory 't1'.", "fix tenant_id and client_id"),
        ] {
            let FetchError::Dead(why) = refusal(&auth(), 401, error, d) else {
                panic!("{d}: permanent")
            };
            assert!(why.contains(want), "{why}");
            assert!(!why.contains("shh-secret"));
        }
    }
}
