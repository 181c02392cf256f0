//! Anthropic Messages API: `{"type":"error","error":{"type":…,"message":…}}` with the
//! documented types `invalid_request_error` (400), `authentication_error` (401),
//! `billing_error` (402), `permission_error` (403), `not_found_error` (404),
//! `request_too_large` (413), `rate_limit_error` (429), `api_error` (500),
//! `timeout_error` (504), `overloaded_error` (529), the same inside SSE `event: error`,
//! and `error.details.error_code` on newer bodies. Claude on Vertex AI relays these shapes.
//!
//! Anthropic reports some account facts as a 400 `invalid_request_error` whose message is
//! the only signal ("credit balance is too low", "This organization has been disabled.");
//! paired with the documented type, those messages decide with high confidence.

use super::super::cues::Cue;
use super::super::{Class, Cx, EvidenceKind, Rule, Scope};
use super::by_type;

/// Whether the body is Anthropic-shaped: `{"type":"error","error":{"type":"…_error"}}`.
pub(crate) fn looks_anthropic(cx: &Cx<'_, '_>) -> bool {
    cx.sig.typed_envelope
        && cx.sig.gstatus.is_none()
        && matches!(
            cx.ty(),
            "invalid_request_error"
                | "authentication_error"
                | "billing_error"
                | "permission_error"
                | "not_found_error"
                | "request_too_large"
                | "rate_limit_error"
                | "api_error"
                | "timeout_error"
                | "overloaded_error"
        )
        && cx.sig.code.is_none()
}

/// A message-decided rule under a documented type: high confidence.
#[track_caller]
fn typed(cx: &Cx<'_, '_>, cue: Cue, class: Class, scope: Scope) -> Rule {
    let r = cx.by_cue(cue, class, scope);
    Rule {
        confidence: super::super::Confidence::High,
        kind: EvidenceKind::ErrorType,
        value: format!("{} + \"{}\"", cx.ty(), r.value).into(),
        ..r
    }
}

#[allow(clippy::too_many_lines)] // a table: one arm per documented error shape, in the order they are checked
pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    let detail = cx.sig.detail_code.as_deref().unwrap_or("");
    if detail.contains("spend_limit") || detail.contains("credit") || detail.contains("billing") {
        return Some(
            Rule::high(
                Class::Billing,
                Scope::QuotaBucket,
                EvidenceKind::Field,
                format!("details.error_code={detail}"),
            )
            .what("the organization's spend limit or credit is exhausted"),
        );
    }
    let ty = cx.ty();
    let oauth = cx.refreshable();
    let r = match ty {
        "authentication_error" => {
            if cx.cue(Cue::OAuthUnsupported) {
                typed(
                    cx,
                    Cue::OAuthUnsupported,
                    Class::BadRequest,
                    Scope::Endpoint,
                )
                .what("this endpoint does not accept this credential's auth mode")
            } else if cx.cue(Cue::Revoked) {
                typed(cx, Cue::Revoked, Class::AuthPermanent, Scope::Credential)
                    .what("the credential was revoked")
            } else if cx.cue(Cue::ExpiredToken) && oauth {
                typed(
                    cx,
                    Cue::ExpiredToken,
                    Class::AuthTransient,
                    Scope::Credential,
                )
            } else if cx.cue(Cue::MissingKey) {
                typed(cx, Cue::MissingKey, Class::AuthPermanent, Scope::Credential)
                    .what("no usable credential reached the provider (missing or empty key: a configuration error)")
            } else if oauth {
                by_type(cx, Class::AuthTransient, Scope::Credential)
                    .what("the OAuth access token was not accepted; it is refreshed once")
            } else {
                by_type(cx, Class::AuthPermanent, Scope::Credential)
                    .what("the API key was rejected as invalid, revoked or deleted")
            }
        }
        "permission_error" => {
            if cx.cue(Cue::OrgPolicy) {
                typed(cx, Cue::OrgPolicy, Class::AuthPermanent, Scope::QuotaBucket)
                    .what("the organization does not allow this auth mode")
            } else if cx.cue(Cue::Revoked) {
                typed(cx, Cue::Revoked, Class::AuthPermanent, Scope::Credential)
                    .what("the credential was revoked")
            } else if cx.cue(Cue::BillingStrong) {
                typed(cx, Cue::BillingStrong, Class::Billing, Scope::QuotaBucket)
            } else if cx.cue(Cue::ModelAccess) || cx.cue(Cue::ModelMissing) {
                let c = if cx.cue(Cue::ModelAccess) {
                    Cue::ModelAccess
                } else {
                    Cue::ModelMissing
                };
                typed(cx, c, Class::ModelNotFound, Scope::CredentialModel)
            } else if cx.cue(Cue::RegionBlock) {
                typed(cx, Cue::RegionBlock, Class::AuthPermanent, Scope::Endpoint)
            } else {
                // Permission to *something*: could be the model, a beta, or the key.
                let r = by_type(cx, Class::AuthPermanent, Scope::Credential)
                    .what("the credential lacks permission for this request");
                Rule {
                    confidence: super::super::Confidence::Low,
                    ..r
                }
            }
        }
        "billing_error" => by_type(cx, Class::Billing, Scope::QuotaBucket),
        "rate_limit_error" => {
            if cx.cue(Cue::BillingStrong) || cx.cue(Cue::PlanGate) {
                let c = if cx.cue(Cue::BillingStrong) {
                    Cue::BillingStrong
                } else {
                    Cue::PlanGate
                };
                typed(cx, c, Class::Billing, Scope::QuotaBucket).what(
                    "a spend limit or usage entitlement, not a rate limit, refused the request",
                )
            } else if cx.cue(Cue::RequestTooLarge) {
                typed(cx, Cue::RequestTooLarge, Class::BadRequest, Scope::Request)
            } else if cx.cue(Cue::Overloaded) {
                // Capacity reported under the rate-limit type ("peak load", "high
                // demand"): the model's, not this organization's limit.
                typed(cx, Cue::Overloaded, Class::Overloaded, Scope::ProviderModel)
            } else {
                // Anthropic limits are per organization and model class.
                by_type(cx, Class::RateLimit, Scope::CredentialModel)
            }
        }
        "overloaded_error" => by_type(cx, Class::Overloaded, Scope::ProviderModel),
        "api_error" => {
            // The generic type: without a 5xx behind it, the message is more specific.
            if !cx.is_5xx() {
                if let Some(r) = super::super::generic::by_cues(cx) {
                    return Some(r);
                }
            }
            if cx.cue(Cue::Overloaded) {
                typed(cx, Cue::Overloaded, Class::Overloaded, Scope::ProviderModel)
            } else {
                by_type(cx, Class::ServerError, Scope::ProviderModel)
            }
        }
        "timeout_error" => by_type(cx, Class::Timeout, Scope::ProviderModel),
        "request_too_large" => by_type(cx, Class::BadRequest, Scope::Request)
            .what("the request body exceeds the API's size limit"),
        "not_found_error" => {
            let msg = cx.message();
            if msg.starts_with("model:") || cx.cue(Cue::ModelMissing) {
                by_type(cx, Class::ModelNotFound, Scope::CredentialModel)
            } else {
                by_type(cx, Class::BadRequest, Scope::Endpoint)
                    .what("the endpoint path or resource does not exist")
            }
        }
        "invalid_request_error" => {
            if cx.cue(Cue::ContextOverflow) {
                typed(
                    cx,
                    Cue::ContextOverflow,
                    Class::ContextOverflow,
                    Scope::Request,
                )
            } else if cx.cue(Cue::BillingStrong) || cx.cue(Cue::PlanGate) {
                let c = if cx.cue(Cue::BillingStrong) {
                    Cue::BillingStrong
                } else {
                    Cue::PlanGate
                };
                typed(cx, c, Class::Billing, Scope::QuotaBucket)
            } else if cx.cue(Cue::ContentFilter) {
                typed(cx, Cue::ContentFilter, Class::ContentFilter, Scope::Request)
            } else if cx.cue(Cue::OrgDisabled) {
                typed(
                    cx,
                    Cue::OrgDisabled,
                    Class::AuthPermanent,
                    Scope::QuotaBucket,
                )
            } else if cx.cue(Cue::OAuthUnsupported) {
                typed(
                    cx,
                    Cue::OAuthUnsupported,
                    Class::BadRequest,
                    Scope::Endpoint,
                )
                .what("this credential may only be used by its own product, not this endpoint")
            } else if cx.cue(Cue::ModelMissing) || cx.cue(Cue::ModelRetired) {
                typed(
                    cx,
                    Cue::ModelMissing,
                    Class::ModelNotFound,
                    Scope::CredentialModel,
                )
            } else {
                by_type(cx, Class::BadRequest, Scope::Request)
            }
        }
        _ => return None,
    };
    Some(r)
}
