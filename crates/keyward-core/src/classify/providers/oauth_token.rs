//! OAuth 2.0 token endpoints answering a refresh: RFC 6749 §5.2 errors
//! (`{"error":"invalid_grant","error_description":…}`), plus the OpenAI-envelope variant
//! of auth.openai.com (`error.code`: `refresh_token_reused`, `refresh_token_expired`,
//! `token_expired`), Microsoft Entra's `AADSTS…` descriptions, and GitHub's Copilot token
//! endpoint (`error_details.notification_id`).
//!
//! The token endpoint's own answer decides whether a refresh failure is permanent:
//! `invalid_grant` and its relatives mean the grant is gone (log in again; but re-read the
//! store first, another holder may have rotated it); `invalid_client` and
//! `unauthorized_client` are the gateway's client configuration (scope `endpoint`); 5xx,
//! 429 and transport errors are transient and keep the credential.

use super::super::cues::Cue;
use super::super::generic;
use super::super::{Class, Confidence, Cx, EvidenceKind, Rule, Scope};

const TRANSIENT_REFRESH: &str = "Nothing to fix on the credential: the refresh is retried with backoff and the grant is never disabled for this; if it persists, check the provider's status page.";

const LOG_IN_AGAIN: &str =
    "the refresh token was rejected (expired, revoked, or already used by another holder)";

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Rule {
    let code = cx
        .sig
        .error_str
        .as_deref()
        .filter(|e| !e.contains(' '))
        .or(cx.sig.code.as_deref())
        .unwrap_or("");
    let oauth = |class, scope| Rule::high(class, scope, EvidenceKind::OAuthError, code.to_owned());
    // A 429 or 5xx from the token endpoint says nothing about the grant: the endpoint is
    // throttling or failing. The refresh is retried later and the grant is never disabled
    // for it, whatever the body says (only a 4xx RFC 6749 answer judges the grant).
    if let Some(st) = cx.status.filter(|s| *s == 429 || *s >= 500) {
        let what = if st == 429 {
            "the token endpoint is throttling refreshes; the grant is kept and the refresh retried later"
        } else {
            "the token endpoint failed; the grant is kept and the refresh retried later"
        };
        return Rule::high(
            Class::AuthTransient,
            Scope::Credential,
            EvidenceKind::Status,
            format!("{st} from token endpoint"),
        )
        .what(what)
        .remedy(TRANSIENT_REFRESH);
    }
    match code {
        "invalid_grant"
        | "bad_refresh_token"
        | "refresh_token_expired"
        | "refresh_token_reused"
        | "refresh_token_invalidated"
        | "refresh_token_revoked"
        | "token_expired"
        | "invalid_token"
        | "expired_token"
        | "token_revoked" => {
            return oauth(Class::AuthPermanent, Scope::Credential).what(LOG_IN_AGAIN);
        }
        "invalid_client"
        | "unauthorized_client"
        | "unsupported_grant_type"
        | "incorrect_client_credentials" => {
            return oauth(Class::AuthPermanent, Scope::Endpoint).what(
                "the token endpoint rejects the gateway's OAuth client (id, secret or grant type)",
            );
        }
        "invalid_scope" => {
            return oauth(Class::AuthPermanent, Scope::Credential)
                .what("the refresh asked for a scope the grant does not include");
        }
        "access_denied" | "consent_required" | "interaction_required" | "login_required" => {
            return oauth(Class::AuthPermanent, Scope::Credential).what(LOG_IN_AGAIN);
        }
        "temporarily_unavailable" | "server_error" | "slow_down" => {
            return oauth(Class::AuthTransient, Scope::Credential)
                .what("the token endpoint is unavailable or throttling; the grant is kept and the refresh retried later")
                .remedy(TRANSIENT_REFRESH);
        }
        "invalid_request" => {
            if cx.cue(Cue::RefreshDead) || cx.cue(Cue::ExpiredToken) {
                let c = if cx.cue(Cue::RefreshDead) {
                    Cue::RefreshDead
                } else {
                    Cue::ExpiredToken
                };
                return Rule {
                    kind: EvidenceKind::OAuthError,
                    ..cx.by_cue(c, Class::AuthPermanent, Scope::Credential)
                }
                .what(LOG_IN_AGAIN);
            }
            return oauth(Class::BadRequest, Scope::Endpoint).what(
                "the refresh request is malformed (a gateway or client configuration problem)",
            );
        }
        _ => {}
    }
    if let Some(id) = cx.sig.detail_code.as_deref() {
        if cx.status.is_some_and(|s| (400..500).contains(&s)) && s_is_access(id) {
            return Rule::high(
                Class::AuthPermanent,
                Scope::Credential,
                EvidenceKind::Field,
                id.to_owned(),
            )
            .what("the account has no access to this product (no seat or subscription)");
        }
    }
    match cx.status {
        None => generic::by_cues(cx).unwrap_or_else(|| generic::by_status(cx)),
        Some(429) => Rule::high(
            Class::RateLimit,
            Scope::Endpoint,
            EvidenceKind::Status,
            "429 from token endpoint",
        ),
        Some(503) => Rule::high(
            Class::Overloaded,
            Scope::Endpoint,
            EvidenceKind::Status,
            "503 from token endpoint",
        ),
        Some(504) => Rule::high(
            Class::Timeout,
            Scope::Endpoint,
            EvidenceKind::Status,
            "504 from token endpoint",
        ),
        Some(s) if s >= 500 => Rule::high(
            Class::ServerError,
            Scope::Endpoint,
            EvidenceKind::Status,
            "5xx from token endpoint",
        ),
        Some(_) => {
            // A 4xx without an RFC 6749 code: most likely the grant, but unproven.
            if cx.cue(Cue::RefreshDead)
                || cx.cue(Cue::Revoked)
                || cx.cue(Cue::InvalidKey)
                || cx.cue(Cue::AuthGeneric)
                || cx.cue(Cue::Permission)
            {
                let c = [
                    Cue::RefreshDead,
                    Cue::Revoked,
                    Cue::InvalidKey,
                    Cue::AuthGeneric,
                    Cue::Permission,
                ]
                .into_iter()
                .find(|c| cx.cue(*c))
                .unwrap_or(Cue::AuthGeneric);
                let r = cx
                    .by_cue(c, Class::AuthPermanent, Scope::Credential)
                    .what(LOG_IN_AGAIN);
                return Rule {
                    confidence: Confidence::Low,
                    ..r
                };
            }
            Rule::low(
                Class::AuthPermanent,
                Scope::Credential,
                EvidenceKind::Status,
                "4xx from token endpoint",
            )
            .what(
                "the token endpoint refused the refresh without an RFC 6749 code; a probe confirms",
            )
        }
    }
}

fn s_is_access(id: &str) -> bool {
    id.contains("access") || id.contains("seat") || id.contains("subscription")
}
