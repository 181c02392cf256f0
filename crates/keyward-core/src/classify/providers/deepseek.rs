//! DeepSeek: the OpenAI envelope with its own documented statuses — 402 "Insufficient
//! Balance", 422 invalid parameters, 429 rate limit, 503 "Server Overloaded" — and
//! `type: authentication_error` with an unhelpful `code: invalid_request_error` for bad keys.

use super::super::{Class, Cx, EvidenceKind, Rule, Scope};
use super::openai;

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    if cx.is_status(402) {
        return Some(Rule::high(
            Class::Billing,
            Scope::QuotaBucket,
            EvidenceKind::Status,
            "402 insufficient balance",
        ));
    }
    if cx.ty() == "authentication_error" {
        return Some(super::by_type(cx, Class::AuthPermanent, Scope::Credential));
    }
    if cx.is_status(503) {
        return Some(Rule::high(
            Class::Overloaded,
            Scope::ProviderModel,
            EvidenceKind::Status,
            "503 server overloaded",
        ));
    }
    openai::family(cx)
}
