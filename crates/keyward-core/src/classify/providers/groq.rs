//! Groq: the OpenAI envelope, plus its non-standard 498 "Flex Tier Capacity Exceeded"
//! (`capacity_exceeded`), 503 "over capacity" bodies typed `internal_server_error`,
//! `model_decommissioned` as a 400, and 413/429 "Request too large … on tokens per minute"
//! for a single request above the whole budget.

use super::super::cues::Cue;
use super::super::{Class, Cx, EvidenceKind, Rule, Scope};
use super::{by_code, openai};

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    if cx.is_status(498) || cx.code() == "capacity_exceeded" {
        return Some(
            Rule::high(
                Class::Overloaded,
                Scope::ProviderModel,
                EvidenceKind::ErrorCode,
                "498 capacity_exceeded",
            )
            .what("the flex tier is at capacity for this model"),
        );
    }
    if cx.code() == "model_decommissioned" {
        return Some(by_code(cx, Class::ModelNotFound, Scope::ProviderModel));
    }
    if cx.is_status(413) || cx.cue(Cue::RequestTooLarge) && cx.is_status(429) {
        return Some(Rule::high(Class::BadRequest, Scope::Request, EvidenceKind::Status, "request too large for the token budget")
            .what("one request is larger than the whole per-minute token budget; retrying never succeeds"));
    }
    if cx.is_status(503) && cx.cue(Cue::Overloaded) {
        return Some(cx.by_cue(Cue::Overloaded, Class::Overloaded, Scope::ProviderModel));
    }
    openai::family(cx)
}
