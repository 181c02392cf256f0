//! Cohere: `{"message": …}` (v1) or `{"id":…, "message":…}` (v2) bodies. Cohere documents
//! 498 as "blocked input or output" (a content block, unlike Groq's 498) and 499 as a
//! cancelled request; 402 is billing; "too many tokens: total number of tokens … cannot
//! exceed" is context overflow; "invalid api token" a bad key.

use super::super::cues::Cue;
use super::super::{Class, Cx, EvidenceKind, Rule, Scope};
use super::openai;

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    if cx.is_status(498) {
        return Some(
            Rule::high(
                Class::ContentFilter,
                Scope::Request,
                EvidenceKind::Status,
                "498 blocked input or output",
            )
            .what("Cohere's safety filter blocked the input or output"),
        );
    }
    if cx.is_status(499) {
        return Some(Rule::high(
            Class::Timeout,
            Scope::ProviderModel,
            EvidenceKind::Status,
            "499 request cancelled",
        ));
    }
    if cx.is_status(402) {
        return Some(Rule::high(
            Class::Billing,
            Scope::QuotaBucket,
            EvidenceKind::Status,
            "402 payment required",
        ));
    }
    if cx.is_status(400)
        && cx.message().contains("too many tokens")
        && cx.message().contains("max tokens")
    {
        return Some(
            Rule::high(
                Class::BadRequest,
                Scope::Request,
                EvidenceKind::Phrase,
                "max tokens",
            )
            .what("max_tokens exceeds the model's maximum output"),
        );
    }
    if cx.is_status(400) && cx.message().contains("too many tokens") {
        return Some(Rule::high(
            Class::ContextOverflow,
            Scope::Request,
            EvidenceKind::Phrase,
            "too many tokens",
        ));
    }
    if cx.is_status(401) && cx.cue(Cue::InvalidKey) {
        return Some(cx.by_cue(Cue::InvalidKey, Class::AuthPermanent, Scope::Credential));
    }
    openai::family(cx)
}
