//! Google APIs: the Gemini API (native, and its OpenAI-compatible endpoint, which wraps the
//! same body in an array) and Vertex AI. Shape: `{"error":{"code","message","status",
//! "details":[…]}}` where `status` is the canonical gRPC code name and `details` may hold
//! `google.rpc.ErrorInfo` (`reason`: `API_KEY_INVALID`, `ACCESS_TOKEN_EXPIRED`,
//! `SERVICE_DISABLED`, …), `RetryInfo` (`retryDelay`) and `QuotaFailure` (violations with
//! `quotaId` and `quotaValue`).
//!
//! Two traps: Gemini reports an expired *API key* as `API_KEY_INVALID` with the text "API
//! key expired" (permanent: API keys do not refresh), and a 429 whose quota is `0` (or a
//! free-tier quota on a model the free tier lacks) is a billing gate that never clears by
//! waiting. On Vertex AI a 429 without quota details is Dynamic Shared Quota: shared
//! capacity, not this project's quota.

use super::super::cues::Cue;
use super::super::generic;
use super::super::{Class, Confidence, Cx, EvidenceKind, Provider, Rule, Scope};
use super::anthropic;

#[track_caller]
fn reason_rule(cx: &Cx<'_, '_>, class: Class, scope: Scope) -> Rule {
    let reason = cx.sig.reason.as_deref().unwrap_or("");
    Rule::high(class, scope, EvidenceKind::GoogleReason, reason.to_owned())
}

#[track_caller]
fn status_rule(cx: &Cx<'_, '_>, class: Class, scope: Scope) -> Rule {
    let st = cx.sig.gstatus.as_deref().unwrap_or("");
    Rule::high(class, scope, EvidenceKind::GoogleReason, st.to_owned())
}

/// A status-decided rule whose class a message phrase refined.
#[track_caller]
fn status_and_cue(cx: &Cx<'_, '_>, cue: Cue, class: Class, scope: Scope) -> Rule {
    let st = cx.sig.gstatus.as_deref().unwrap_or("");
    Rule::high(
        class,
        scope,
        EvidenceKind::GoogleReason,
        format!("{st} + \"{}\"", cx.msg().phrase(cue)),
    )
}

/// "limit: 0" in a quota message: the quota for this model is zero on this plan.
fn zero_limit(msg: &str) -> bool {
    let mut rest = msg;
    while let Some(i) = rest.find("limit: 0") {
        let after = rest.as_bytes().get(i + "limit: 0".len());
        if !after.is_some_and(u8::is_ascii_digit) {
            return true;
        }
        rest = &rest[i + 1..];
    }
    false
}

#[allow(clippy::too_many_lines)] // a table: one arm per documented error shape, in the order they are checked
pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    if anthropic::looks_anthropic(cx) {
        return anthropic::classify(cx);
    }
    let reason = cx.sig.reason.as_deref().unwrap_or("");
    match reason {
        "API_KEY_INVALID" | "API_KEY_EXPIRED" => {
            return Some(
                reason_rule(cx, Class::AuthPermanent, Scope::Credential).what(
                    "the API key is invalid, deleted or expired (API keys cannot be refreshed)",
                ),
            );
        }
        "API_KEY_SERVICE_BLOCKED"
        | "API_KEY_HTTP_REFERRER_BLOCKED"
        | "API_KEY_IP_ADDRESS_BLOCKED"
        | "API_KEY_ANDROID_APP_BLOCKED"
        | "API_KEY_IOS_APP_BLOCKED" => {
            return Some(
                reason_rule(cx, Class::AuthPermanent, Scope::Credential)
                    .what("the API key's restrictions block this API or this gateway"),
            );
        }
        "ACCESS_TOKEN_EXPIRED" | "ACCESS_TOKEN_TYPE_UNSUPPORTED" if cx.refreshable() => {
            return Some(reason_rule(cx, Class::AuthTransient, Scope::Credential));
        }
        "ACCESS_TOKEN_EXPIRED" => {
            return Some(
                reason_rule(cx, Class::AuthPermanent, Scope::Credential)
                    .what("an expired access token was configured as a static key"),
            );
        }
        "CREDENTIALS_MISSING" if cx.cue(Cue::OAuthUnsupported) => {
            // An API key sent to an API that takes only OAuth / service accounts.
            return Some(
                reason_rule(cx, Class::BadRequest, Scope::Endpoint)
                    .what("this API does not accept this kind of credential (an API key where OAuth or a service account is required)"),
            );
        }
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT" | "IAM_PERMISSION_DENIED" | "CREDENTIALS_MISSING" => {
            return Some(reason_rule(cx, Class::AuthPermanent, Scope::Credential));
        }
        "SERVICE_DISABLED" | "CONSUMER_SUSPENDED" | "USER_PROJECT_DENIED" | "CONSUMER_INVALID" => {
            return Some(reason_rule(cx, Class::AuthPermanent, Scope::QuotaBucket)
                .what("the Google Cloud project behind this credential cannot use the API (disabled or suspended)"));
        }
        "BILLING_DISABLED" => return Some(reason_rule(cx, Class::Billing, Scope::QuotaBucket)),
        "LOCATION_NOT_SUPPORTED" | "LOCATION_POLICY_VIOLATED" => {
            return Some(reason_rule(cx, Class::AuthPermanent, Scope::Endpoint));
        }
        _ => {}
    }
    if let Some(r) = interactions_code(cx) {
        return Some(r);
    }
    let st = cx.sig.gstatus.as_deref().unwrap_or("");
    let msg = cx.message();
    if cx.is_status(402) {
        return Some(
            Rule::high(
                Class::Billing,
                Scope::QuotaBucket,
                EvidenceKind::Status,
                "402 prepayment credits depleted",
            )
            .what("the project's prepaid credits are depleted: top up or enable auto-reload"),
        );
    }
    let quota = st == "RESOURCE_EXHAUSTED"
        || reason == "RATE_LIMIT_EXCEEDED"
        || reason == "RESOURCE_EXHAUSTED"
        || cx.sig.quota_failure;
    if quota {
        if cx.sig.quota_zero || zero_limit(msg) {
            return Some(Rule::high(Class::Billing, Scope::CredentialModel, EvidenceKind::Field, "QuotaFailure limit 0")
                .what("this model has no quota on the account's plan (free tier limit 0): enable billing or use another model"));
        }
        if cx.cue(Cue::Overloaded) && !cx.sig.quota_failure {
            // "This model is currently experiencing high demand", "model is overloaded"
            // under RESOURCE_EXHAUSTED: the model's capacity, not this project's quota.
            return Some(status_and_cue(
                cx,
                Cue::Overloaded,
                Class::Overloaded,
                Scope::ProviderModel,
            ));
        }
        if cx.sig.quota_failure {
            // A QuotaFailure names the quota that ran out: structure decides.
            return Some(status_rule(cx, Class::RateLimit, Scope::CredentialModel));
        }
        if cx.cue(Cue::BillingStrong) {
            return Some(status_and_cue(
                cx,
                Cue::BillingStrong,
                Class::Billing,
                Scope::QuotaBucket,
            ));
        }
        let has_details =
            cx.sig.quota_failure || cx.sig.retry_delay.is_some() || !reason.is_empty();
        // Shared capacity (Vertex AI's Dynamic Shared Quota, also behind Gemini Code
        // Assist): "Resource exhausted. Please try again later." with no quota named.
        let names_quota = super::super::body::find_ascii_ci(msg, "quota").is_some();
        if (cx.provider == Provider::VertexAi || !names_quota)
            && !has_details
            && !msg.contains("Quota exceeded for")
        {
            return Some(status_rule(cx, Class::Overloaded, Scope::ProviderModel)
                .what("Vertex AI's shared capacity for this model is exhausted (not this project's quota)"));
        }
        return Some(status_rule(cx, Class::RateLimit, Scope::CredentialModel));
    }
    let r = match st {
        "UNAUTHENTICATED" => {
            if cx.cue(Cue::OAuthUnsupported) {
                // "API keys are not supported by this API. Expected OAuth2 access token":
                // the target needs another kind of credential; the key itself may be fine.
                status_and_cue(cx, Cue::OAuthUnsupported, Class::BadRequest, Scope::Endpoint)
                    .what("this API does not accept this kind of credential (an API key where OAuth or a service account is required)")
            } else if cx.refreshable() {
                status_rule(cx, Class::AuthTransient, Scope::Credential)
            } else {
                // Google reports a bad API key with an ErrorInfo reason (API_KEY_INVALID,
                // decided above); the bare status does not say which property failed.
                Rule {
                    confidence: Confidence::Low,
                    ..status_rule(cx, Class::AuthPermanent, Scope::Credential)
                }
                .what("the request's credentials were not accepted (wrong or missing key)")
            }
        }
        "PERMISSION_DENIED" => {
            if cx.cue(Cue::BillingStrong) {
                status_and_cue(cx, Cue::BillingStrong, Class::Billing, Scope::QuotaBucket)
            } else if cx.cue(Cue::ModelAccess) || cx.cue(Cue::ModelMissing) {
                status_and_cue(
                    cx,
                    Cue::ModelAccess,
                    Class::ModelNotFound,
                    Scope::CredentialModel,
                )
            } else if cx.cue(Cue::RegionBlock) {
                status_and_cue(cx, Cue::RegionBlock, Class::AuthPermanent, Scope::Endpoint)
            } else if cx.cue(Cue::Revoked) {
                status_and_cue(cx, Cue::Revoked, Class::AuthPermanent, Scope::Credential)
                    .what("the key was revoked or disabled (e.g. reported as leaked)")
            } else if msg.contains("has not been used in project") || msg.contains("it is disabled")
            {
                status_rule(cx, Class::AuthPermanent, Scope::QuotaBucket)
                    .what("the API is not enabled for this Google Cloud project")
            } else {
                Rule {
                    confidence: Confidence::Low,
                    ..status_rule(cx, Class::AuthPermanent, Scope::Credential)
                }
            }
        }
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => {
            if cx.cue(Cue::ContextOverflow) {
                status_and_cue(
                    cx,
                    Cue::ContextOverflow,
                    Class::ContextOverflow,
                    Scope::Request,
                )
            } else if cx.cue(Cue::InvalidKey) {
                status_and_cue(cx, Cue::InvalidKey, Class::AuthPermanent, Scope::Credential)
            } else if cx.cue(Cue::BillingStrong)
                || cx.cue(Cue::BillingWeak) && st == "FAILED_PRECONDITION"
            {
                // "Free tier is not available in your country. Please enable billing":
                // billing fixes it, so it is billing even though a region is named.
                let c = if cx.cue(Cue::BillingStrong) {
                    Cue::BillingStrong
                } else {
                    Cue::BillingWeak
                };
                status_and_cue(cx, c, Class::Billing, Scope::QuotaBucket)
            } else if cx.cue(Cue::RegionBlock) {
                status_and_cue(cx, Cue::RegionBlock, Class::AuthPermanent, Scope::Endpoint)
            } else if cx.cue(Cue::ContentFilter) {
                status_and_cue(cx, Cue::ContentFilter, Class::ContentFilter, Scope::Request)
            } else if cx.cue(Cue::ModelMissing) {
                status_and_cue(
                    cx,
                    Cue::ModelMissing,
                    Class::ModelNotFound,
                    Scope::CredentialModel,
                )
            } else {
                status_rule(cx, Class::BadRequest, Scope::Request)
            }
        }
        "NOT_FOUND" => {
            if cx.cue(Cue::ModelMissing) || msg.contains("models/") || msg.contains("odel") {
                status_rule(cx, Class::ModelNotFound, Scope::CredentialModel)
            } else if cx.cue(Cue::EndpointConfig) {
                status_rule(cx, Class::BadRequest, Scope::Endpoint)
                    .what("the endpoint path or resource does not exist")
            } else {
                // On a model route, the entity that is missing is most often the model
                // (or a tuned model); a probe confirms before anything is disabled.
                Rule {
                    confidence: Confidence::Low,
                    ..status_rule(cx, Class::ModelNotFound, Scope::CredentialModel)
                }
            }
        }
        "UNAVAILABLE" => {
            if cx.cue(Cue::Timeout) {
                status_and_cue(cx, Cue::Timeout, Class::Timeout, Scope::ProviderModel)
                    .what("the provider's own deadline expired before the generation finished")
            } else {
                status_rule(cx, Class::Overloaded, Scope::ProviderModel)
            }
        }
        "DEADLINE_EXCEEDED" | "CANCELLED" => status_rule(cx, Class::Timeout, Scope::ProviderModel),
        "INTERNAL" | "UNKNOWN" | "ABORTED" | "DATA_LOSS" => {
            if cx.cue(Cue::Overloaded) {
                status_and_cue(cx, Cue::Overloaded, Class::Overloaded, Scope::ProviderModel)
            } else {
                status_rule(cx, Class::ServerError, Scope::ProviderModel)
            }
        }
        "UNIMPLEMENTED" => status_rule(cx, Class::BadRequest, Scope::Endpoint),
        // No Google status: Gemini's and Vertex AI's OpenAI-compatible endpoints answer
        // in OpenAI's envelope.
        _ => return super::openai::family(cx).or_else(|| generic::by_cues(cx)),
    };
    Some(r)
}

/// The Gemini Interactions API's string codes (`{"error":{"code":"quota_exceeded",…}}`),
/// including its generation-blocked codes.
fn interactions_code(cx: &Cx<'_, '_>) -> Option<Rule> {
    let code = cx.code();
    let (class, scope) = match code {
        "authentication" => {
            if cx.refreshable() {
                (Class::AuthTransient, Scope::Credential)
            } else {
                (Class::AuthPermanent, Scope::Credential)
            }
        }
        "permission_denied" => (Class::AuthPermanent, Scope::Credential),
        "payment_required" => (Class::Billing, Scope::QuotaBucket),
        "model_not_found" => (Class::ModelNotFound, Scope::CredentialModel),
        "not_found" | "unimplemented" => (Class::BadRequest, Scope::Endpoint),
        "rate_limit_exceeded" | "too_many_requests" => (Class::RateLimit, Scope::CredentialModel),
        "quota_exceeded" => (Class::RateLimit, Scope::CredentialModel),
        "cancelled" | "deadline_exceeded" => (Class::Timeout, Scope::ProviderModel),
        "api_error" | "aborted" => (Class::ServerError, Scope::ProviderModel),
        "service_unavailable" => (Class::Overloaded, Scope::ProviderModel),
        "invalid_request" | "parameter_unknown" | "out_of_range" | "already_exists" => {
            if cx.cue(Cue::ContextOverflow) {
                (Class::ContextOverflow, Scope::Request)
            } else {
                (Class::BadRequest, Scope::Request)
            }
        }
        "failed_precondition" if cx.cue(Cue::BillingWeak) || cx.cue(Cue::BillingStrong) => {
            (Class::Billing, Scope::QuotaBucket)
        }
        "failed_precondition" => (Class::BadRequest, Scope::Request),
        "safety"
        | "recitation"
        | "language"
        | "prohibited_content"
        | "spii"
        | "blocklist"
        | "image_safety"
        | "image_prohibited_content"
        | "image_recitation"
        | "image_other"
        | "content_blocked" => (Class::ContentFilter, Scope::Request),
        _ => return None,
    };
    Some(Rule::high(
        class,
        scope,
        EvidenceKind::ErrorCode,
        code.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::zero_limit;

    #[test]
    fn zero_limit_is_exact() {
        assert!(zero_limit("requests, limit: 0, model: gemini-2.5-pro"));
        assert!(zero_limit("limit: 0"));
        assert!(!zero_limit("limit: 10, model"));
        assert!(!zero_limit("limit: 05"));
    }
}
