//! Fireworks AI: `{"error":{"object":"error","type":…,"message":…}}` or
//! `{"error":{"message","param","code":"UNAUTHORIZED","type":"error"}}` (upper-case codes,
//! `type` literally "error"), `{"error":"Too Many Requests","message":…}` for 429, 402 for billing,
//! 412 for a suspended account (or a LoRA that failed to load), `NOT_FOUND` "Path not found" for a wrong base URL.

use super::super::cues::Cue;
use super::super::{Class, Cx, EvidenceKind, Rule, Scope};
use super::{by_code, openai};

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    match cx.code() {
        "UNAUTHORIZED" => return Some(by_code(cx, Class::AuthPermanent, Scope::Credential)),
        "NOT_FOUND" if cx.cue(Cue::EndpointConfig) => {
            return Some(
                by_code(cx, Class::BadRequest, Scope::Endpoint)
                    .what("the target's base URL or path is wrong"),
            )
        }
        "NOT_FOUND" => return Some(by_code(cx, Class::ModelNotFound, Scope::CredentialModel)),
        _ => {}
    }
    if cx.is_status(412) {
        if cx.cue(Cue::ModelMissing)
            || cx.message().contains("LoRA")
            || cx.message().contains("model")
        {
            return Some(Rule::high(
                Class::ModelNotFound,
                Scope::CredentialModel,
                EvidenceKind::Status,
                "412 model failed to load",
            ));
        }
        return Some(
            Rule::high(
                Class::Billing,
                Scope::QuotaBucket,
                EvidenceKind::Status,
                "412 account suspended",
            )
            .what("the account is suspended or its billing status blocks use"),
        );
    }
    if cx.ty() == "NotFoundError" && cx.cue(Cue::ModelMissing) {
        return Some(super::by_type(
            cx,
            Class::ModelNotFound,
            Scope::CredentialModel,
        ));
    }
    openai::family(cx)
}
