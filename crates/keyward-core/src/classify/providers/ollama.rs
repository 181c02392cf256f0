//! Ollama: `{"error": "<text>"}` bodies. "model 'x' not found, try pulling it first" (404)
//! is a missing model; a plain-text "404 page not found" is a wrong base path; 410 is a
//! retired cloud model; "requires more system memory" (500) is the host, not the request.

use super::super::cues::Cue;
use super::super::{Class, Cx, EvidenceKind, Rule, Scope};
use super::openai;

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    if cx.is_status(404)
        && cx.sig.kind == super::super::body::BodyKind::Text
        && cx.cue(Cue::EndpointConfig)
    {
        return Some(
            cx.by_cue(Cue::EndpointConfig, Class::BadRequest, Scope::Endpoint)
                .what("the target's base path is wrong (e.g. a missing /v1)"),
        );
    }
    if cx.is_status(410) {
        return Some(
            Rule::high(
                Class::ModelNotFound,
                Scope::ProviderModel,
                EvidenceKind::Status,
                "410 gone",
            )
            .what("the model was retired"),
        );
    }
    if cx.is_5xx() && cx.message().contains("memory") {
        return Some(
            Rule::high(
                Class::ServerError,
                Scope::ProviderModel,
                EvidenceKind::Phrase,
                "requires more system memory",
            )
            .what("the host lacks memory for this model; retrying the same host will not help"),
        );
    }
    openai::family(cx)
}
