//! Azure OpenAI: the OpenAI envelope, with Azure's own codes — `DeploymentNotFound` (the
//! "model" is a deployment in the URL), `"401"` for a wrong key or regional endpoint (or,
//! for an Entra ID bearer, an expired token), `AuthenticationTypeDisabled` when the
//! resource takes Entra ID only, `"429"` rate limits per deployment with `retry-after`, `content_filter` with
//! `innererror.code = ResponsibleAIPolicyViolation`, `OperationNotSupported` — and a bare
//! `{"error":{"code":"404","message":"Resource not found"}}` for a deployment, path or
//! api-version it does not know.

use super::super::cues::Cue;
use super::super::{Class, Confidence, Cx, Rule, Scope};
use super::{by_code, openai};

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    let code = cx.code();
    let detail = cx.sig.detail_code.as_deref().unwrap_or("");
    if detail == "ResponsibleAIPolicyViolation" || code == "content_filter" {
        return Some(by_code(cx, Class::ContentFilter, Scope::Request));
    }
    let r = match code {
        "DeploymentNotFound" => by_code(cx, Class::ModelNotFound, Scope::CredentialModel).what(
            "the deployment named by this target does not exist (or was created minutes ago)",
        ),
        // A bearer token (Entra ID) the resource does not accept: "Access token is
        // missing, invalid, audience is incorrect (…), or have expired." Refreshable.
        "401" if cx.refreshable() && cx.message().contains("Access token") => {
            by_code(cx, Class::AuthTransient, Scope::Credential)
                .what("the Entra ID access token expired, or is for another audience")
        }
        // `disableLocalAuth` on the resource: no api-key works, Entra ID is required.
        "AuthenticationTypeDisabled" => by_code(cx, Class::AuthPermanent, Scope::Endpoint)
            .what("the resource refuses api-keys (key-based authentication is disabled): use an Entra ID credential"),
        "401" | "InvalidSubscriptionKey" | "AuthenticationFailed" => {
            by_code(cx, Class::AuthPermanent, Scope::Credential).what(
                "the api-key is invalid for this resource (or the regional endpoint is wrong)",
            )
        }
        "InvalidAuthenticationToken" | "ExpiredAuthenticationToken" if cx.refreshable() => {
            by_code(cx, Class::AuthTransient, Scope::Credential)
        }
        "PermissionDenied" | "AuthorizationFailed" | "403" => {
            if cx.message().contains("network")
                || cx.message().contains("Public access")
                || cx.cue(Cue::EndpointConfig)
            {
                by_code(cx, Class::AuthPermanent, Scope::Endpoint)
                    .what("the resource's network rules refuse this gateway")
            } else {
                by_code(cx, Class::AuthPermanent, Scope::Credential)
            }
        }
        "429" | "RateLimitExceeded" | "TooManyRequests" if cx.cue(Cue::Overloaded) => {
            cx.by_cue(Cue::Overloaded, Class::Overloaded, Scope::ProviderModel)
        }
        "429" | "RateLimitExceeded" | "TooManyRequests" => {
            by_code(cx, Class::RateLimit, Scope::CredentialModel)
        }
        "InsufficientQuota" | "QuotaExceeded" if !cx.cue(Cue::RateLimit) => {
            by_code(cx, Class::Billing, Scope::QuotaBucket)
        }
        "OperationNotSupported" if cx.cue(Cue::ModelMissing) => {
            by_code(cx, Class::ModelNotFound, Scope::CredentialModel)
                .what("the deployment's model does not support this operation (e.g. chat on an embeddings model)")
        }
        "OperationNotSupported" | "UnsupportedApiVersion" => {
            by_code(cx, Class::BadRequest, Scope::Endpoint)
                .what("the deployment or api-version does not support this operation")
        }
        "404" => {
            if cx.cue(Cue::EndpointConfig) && !cx.message().contains("Resource not found") {
                by_code(cx, Class::BadRequest, Scope::Endpoint)
            } else {
                // Most often the deployment name in the URL; a probe confirms.
                Rule { confidence: Confidence::Low, ..by_code(cx, Class::ModelNotFound, Scope::CredentialModel) }
                    .what("the resource was not found: usually the deployment name, path or api-version of this target")
            }
        }
        _ => return openai::family(cx),
    };
    Some(r)
}
