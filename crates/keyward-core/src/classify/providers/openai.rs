//! OpenAI (platform API keys, and ChatGPT/Codex OAuth tokens on the ChatGPT backend), and
//! the OpenAI error envelope `{"error":{"message","type","param","code"}}` that every
//! OpenAI-compatible provider reuses ([`family`]).
//!
//! OpenAI puts most facts in `error.code`: `invalid_api_key` (401, type
//! `invalid_request_error`), `insufficient_quota` (429, shared with rate limits),
//! `rate_limit_exceeded` (429, with type `requests`/`tokens`), `context_length_exceeded`,
//! `model_not_found`, `content_policy_violation`/`invalid_prompt`,
//! `unsupported_country_region_territory` (403, type `request_forbidden`),
//! `account_deactivated`, `token_expired` (ChatGPT backend: refresh). Responses streams
//! carry the same in `response.failed`.

use super::super::body::find_ascii_ci;
use super::super::cues::Cue;
use super::super::generic;
use super::super::{Class, Cx, EvidenceKind, Rule, Scope};
use super::{by_code, by_type};

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    // "Missing scopes": a valid key restricted for this endpoint.
    if cx.is_status(401) && cx.msg().has(Cue::Permission) && cx.message().contains("scopes") {
        return Some(
            Rule::high(
                Class::AuthPermanent,
                Scope::Credential,
                EvidenceKind::Phrase,
                "missing scopes",
            )
            .what("the key is restricted and lacks a permission this endpoint needs"),
        );
    }
    family(cx)
}

/// The OpenAI envelope's codes and types, for every OpenAI-compatible provider.
#[allow(clippy::too_many_lines)] // a table: one arm per documented error shape, in the order they are checked
pub(crate) fn family(cx: &Cx<'_, '_>) -> Option<Rule> {
    let code = cx.code();
    let ty = cx.ty();
    let any = |names: &[&str]| names.contains(&code) || names.contains(&ty);

    if any(&[
        "content_filter",
        "content_policy_violation",
        "invalid_prompt",
        "ResponsibleAIPolicyViolation",
    ]) {
        return Some(by(cx, Class::ContentFilter, Scope::Request));
    }
    if any(&[
        "context_length_exceeded",
        "model_max_prompt_tokens_exceeded",
        "exceed_context_size_error",
        "context_window_exceeded",
    ]) {
        return Some(by(cx, Class::ContextOverflow, Scope::Request));
    }
    if any(&[
        "insufficient_quota",
        "billing_hard_limit_reached",
        "billing_not_active",
        "credit_balance_exhausted",
        "insufficient_balance",
        "account_balance_error",
        "payment_required",
    ]) {
        return Some(by(cx, Class::Billing, Scope::QuotaBucket));
    }
    if code == "token_expired" || code == "access_token_expired" {
        return Some(if cx.refreshable() {
            by_code(cx, Class::AuthTransient, Scope::Credential)
        } else {
            by_code(cx, Class::AuthPermanent, Scope::Credential)
                .what("the API key has expired (API keys cannot be refreshed)")
        });
    }
    if any(&[
        "account_deactivated",
        "access_terminated",
        "no_organization",
        "organization_restricted",
        "organization_deactivated",
        "deactivated_workspace",
    ]) {
        return Some(by(cx, Class::AuthPermanent, Scope::QuotaBucket));
    }
    if code == "unsupported_country_region_territory" || ty == "request_forbidden" {
        return Some(by(cx, Class::AuthPermanent, Scope::Endpoint).what(
            "the provider refuses requests from this gateway's region; the key is valid elsewhere",
        ));
    }
    if any(&[
        "invalid_api_key",
        "invalid_authentication",
        "authentication_error",
        "UNAUTHORIZED",
        "unauthorized",
        "invalid_token",
    ]) {
        if cx.cue(Cue::MissingKey) {
            return Some(by(cx, Class::AuthPermanent, Scope::Credential)
                .what("no usable credential reached the provider (missing or empty key: a configuration error)"));
        }
        if cx.refreshable() && !cx.cue(Cue::Revoked) {
            return Some(
                by(cx, Class::AuthTransient, Scope::Credential)
                    .what("the access token was not accepted; it is refreshed once"),
            );
        }
        return Some(by(cx, Class::AuthPermanent, Scope::Credential));
    }
    if any(&[
        "insufficient_permissions",
        "permission_denied",
        "PermissionDenied",
    ]) {
        return Some(
            by(cx, Class::AuthPermanent, Scope::Credential)
                .what("the key lacks a permission this request needs"),
        );
    }
    if any(&[
        "model_decommissioned",
        "model_is_deactivated",
        "model_deprecated",
    ]) {
        return Some(by(cx, Class::ModelNotFound, Scope::ProviderModel));
    }
    if any(&[
        "model_not_found",
        "DeploymentNotFound",
        "model_not_available",
        "model_not_supported",
    ]) {
        return Some(by(cx, Class::ModelNotFound, Scope::CredentialModel));
    }
    if any(&[
        "rate_limit_exceeded",
        "rate_limit_reached",
        "rate_limit_error",
        "requests",
        "tokens",
        "rate_limit",
        "too_many_requests",
    ]) {
        if cx.cue(Cue::RequestTooLarge) {
            return Some(by(cx, Class::BadRequest, Scope::Request)
                .what("one request is larger than the whole per-minute token budget; retrying never succeeds"));
        }
        if cx.cue(Cue::BillingStrong) {
            return Some(cx.by_cue(Cue::BillingStrong, Class::Billing, Scope::QuotaBucket));
        }
        if cx.cue(Cue::Overloaded)
            || cx.cue(Cue::SharedCapacity)
            || ty == "tokens" && cx.code() == "capacity_exceeded"
        {
            return Some(by(cx, Class::Overloaded, Scope::ProviderModel));
        }
        if cx.cue(Cue::CloudBilling) {
            return Some(cx.by_cue(Cue::CloudBilling, Class::Billing, Scope::QuotaBucket));
        }
        if let Some(r) = generic::trial_cap(cx) {
            return Some(r);
        }
        let scope = if generic::names_model(cx.message()) {
            Scope::CredentialModel
        } else {
            Scope::Credential
        };
        return Some(by(cx, Class::RateLimit, scope));
    }
    if any(&[
        "engine_overloaded",
        "overloaded",
        "overloaded_error",
        "server_overloaded",
        "capacity_exceeded",
        "service_tier_capacity_exceeded",
        "resource_unavailable",
        "model_overloaded",
    ]) {
        return Some(by(cx, Class::Overloaded, Scope::ProviderModel));
    }
    if any(&[
        "server_error",
        "internal_server_error",
        "internal_error",
        "api_error",
    ]) {
        // A generic server code under a 4xx status contradicts it: the status is specific.
        if cx.status.is_some_and(|s| (400..500).contains(&s)) {
            return None;
        }
        if cx.cue(Cue::Overloaded) {
            return Some(cx.by_cue(Cue::Overloaded, Class::Overloaded, Scope::ProviderModel));
        }
        if cx.cue(Cue::Timeout) {
            return Some(cx.by_cue(Cue::Timeout, Class::Timeout, Scope::ProviderModel));
        }
        return Some(by(cx, Class::ServerError, Scope::ProviderModel));
    }
    // A documented invalid-request type whose message names a missing model ("Model Not
    // Exist", "The model `x` does not exist", "The chatCompletion operation does not work
    // with the specified model"): the type plus the documented message decide.
    if (ty == "invalid_request_error"
        || code == "invalid_request_error"
        || code == "OperationNotSupported")
        && cx.model_missing()
        && (find_ascii_ci(cx.message(), "model").is_some()
            || find_ascii_ci(cx.message(), "deployment").is_some())
        && !matches!(cx.status, Some(401 | 403 | 429))
        && !cx.is_5xx()
    {
        let phrase = cx.msg().phrase(Cue::ModelMissing);
        let field = if ty.is_empty() { code } else { ty };
        return Some(Rule::high(
            Class::ModelNotFound,
            Scope::CredentialModel,
            EvidenceKind::ErrorType,
            format!("{field} + \"{phrase}\""),
        ));
    }
    if any(&["timeout", "request_timeout"]) {
        return Some(by(cx, Class::Timeout, Scope::ProviderModel));
    }
    if any(&[
        "unsupported_parameter",
        "unknown_parameter",
        "invalid_value",
        "invalid_type",
        "missing_required_parameter",
        "unsupported_value",
    ]) {
        // A parameter the *target* rejects is still the request's shape; the gateway's
        // failover decides whether another target accepts it.
        return Some(by(cx, Class::BadRequest, Scope::Request));
    }
    None
}

/// `error.code` evidence when the code is a name, else `error.type`.
#[track_caller]
fn by(cx: &Cx<'_, '_>, class: Class, scope: Scope) -> Rule {
    let code = cx.code();
    if !code.is_empty() && code.parse::<u16>().is_err() {
        by_code(cx, class, scope)
    } else {
        by_type(cx, class, scope)
    }
}
