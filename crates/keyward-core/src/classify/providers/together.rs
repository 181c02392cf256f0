//! Together AI: the OpenAI envelope; documented 402 "Credit limit exceeded", 429 with
//! `retry-after`, 503 "Engine Overloaded", 404 "Unable to access model".

use super::super::{Class, Cx, EvidenceKind, Rule, Scope};
use super::openai;

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    match cx.status {
        Some(402) => Some(Rule::high(
            Class::Billing,
            Scope::QuotaBucket,
            EvidenceKind::Status,
            "402 credit limit",
        )),
        _ => openai::family(cx),
    }
}
