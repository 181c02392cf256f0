//! vLLM's OpenAI-compatible server: `{"object":"error","message":…,"type":"BadRequestError"
//! | "NotFoundError" | …,"param":…,"code":<status>}`; context overflow is a
//! `BadRequestError` saying "maximum context length is N tokens".

use super::super::cues::Cue;
use super::super::{Class, Cx, Rule, Scope};
use super::{by_type, openai};

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    match cx.ty() {
        "NotFoundError" => Some(by_type(cx, Class::ModelNotFound, Scope::CredentialModel)),
        "BadRequestError" if cx.cue(Cue::ContextOverflow) => {
            Some(by_type(cx, Class::ContextOverflow, Scope::Request))
        }
        "BadRequestError" => Some(by_type(cx, Class::BadRequest, Scope::Request)),
        "AuthenticationError" => Some(by_type(cx, Class::AuthPermanent, Scope::Credential)),
        _ => openai::family(cx),
    }
}
