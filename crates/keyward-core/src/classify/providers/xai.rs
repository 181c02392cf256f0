//! xAI: `{"code": "<gRPC status text>", "error": "<message>"}`. The `code` is the gRPC
//! status in words ("Some resource has been exhausted", "The caller does not have
//! permission to execute the specified operation", "Some requested entity was not
//! found"); the decisive facts are in `error`. Billing arrives as 403 or 429 ("used all
//! available credits or reached its monthly spending limit"); a bad key as 400 "Incorrect
//! API key provided".

use super::super::cues::Cue;
use super::super::{Class, Cx, Rule, Scope};
use super::openai;

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    let grpc = cx.code();
    if cx.cue(Cue::BillingStrong) || cx.cue(Cue::PlanGate) {
        let c = if cx.cue(Cue::BillingStrong) {
            Cue::BillingStrong
        } else {
            Cue::PlanGate
        };
        return Some(cx.by_cue(c, Class::Billing, Scope::QuotaBucket));
    }
    if cx.cue(Cue::InvalidKey) && !cx.is_5xx() {
        return Some(cx.by_cue(Cue::InvalidKey, Class::AuthPermanent, Scope::Credential));
    }
    if grpc.contains("requested entity was not found")
        && (cx.cue(Cue::ModelMissing) || cx.cue(Cue::ModelAccess))
    {
        return Some(cx.by_cue(
            Cue::ModelMissing,
            Class::ModelNotFound,
            Scope::CredentialModel,
        ));
    }
    if grpc.contains("resource has been exhausted") && !cx.cue(Cue::BillingWeak) {
        return Some(cx.by_cue(Cue::QuotaWord, Class::RateLimit, Scope::Credential));
    }
    openai::family(cx)
}
