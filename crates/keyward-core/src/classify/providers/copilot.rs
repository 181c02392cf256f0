//! GitHub Copilot's chat API, reached with a short-lived Copilot token minted from a GitHub
//! OAuth token: a 401 means the Copilot token expired (mint a new one and retry), unless the
//! text says the GitHub grant itself is gone. Errors use the OpenAI envelope with Copilot
//! codes (`model_max_prompt_tokens_exceeded`, `content_filter`, `quota_exceeded`).

use super::super::cues::Cue;
use super::super::{Class, Cx, EvidenceKind, Rule, Scope};
use super::openai;

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    if cx.is_status(401) && !cx.cue(Cue::Revoked) && !cx.cue(Cue::RefreshDead) {
        return Some(Rule::high(Class::AuthTransient, Scope::Credential, EvidenceKind::Status, "401 copilot token")
            .what("the short-lived Copilot token expired; a new one is minted and the request retried"));
    }
    if cx.code() == "quota_exceeded" && cx.is_status(402) {
        return Some(super::by_code(cx, Class::Billing, Scope::QuotaBucket));
    }
    openai::family(cx)
}
