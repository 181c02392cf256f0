//! OpenRouter: `{"error":{"code":<status>,"message":…,"metadata":{…}}}`. Documented:
//! 401 bad or missing key, 402 insufficient credits, 403 moderation (`metadata.reasons`,
//! `flagged_input`) or a key's own spend limit ("Key limit exceeded"), 404 "No endpoints
//! found" for a model, 408 timeout, 429 — from the key, or from a shared upstream pool
//! when `metadata.raw`/`provider_name` relay the upstream's answer — 502 an upstream
//! provider's error, 503 no provider available. Streams end with `finish_reason: error`
//! or an in-band `{"error":…}` chunk.

use super::super::cues::Cue;
use super::super::{Class, Cx, EvidenceKind, Rule, Scope};
use super::openai;

pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    let st = cx.status;
    let r = match st {
        Some(402) => Rule::high(
            Class::Billing,
            Scope::QuotaBucket,
            EvidenceKind::ErrorCode,
            "402",
        ),
        Some(403) if cx.sig.flagged || cx.cue(Cue::ContentFilter) => Rule::high(
            Class::ContentFilter,
            Scope::Request,
            EvidenceKind::Field,
            "moderation metadata",
        ),
        Some(401 | 403) if cx.cue(Cue::BillingStrong) => cx
            .by_cue(Cue::BillingStrong, Class::Billing, Scope::Credential)
            .what("this key's own spending limit is reached"),
        Some(429) if cx.sig.upstream || cx.cue(Cue::SharedCapacity) => Rule::high(
            Class::Overloaded,
            Scope::ProviderModel,
            EvidenceKind::Field,
            "upstream provider metadata",
        )
        .what("the upstream provider's shared pool is rate limited, not this key"),
        Some(404) if cx.cue(Cue::ModelMissing) => cx.by_cue(
            Cue::ModelMissing,
            Class::ModelNotFound,
            Scope::CredentialModel,
        ),
        Some(408) => Rule::high(
            Class::Timeout,
            Scope::ProviderModel,
            EvidenceKind::ErrorCode,
            "408",
        ),
        Some(503) if cx.cue(Cue::Overloaded) => {
            cx.by_cue(Cue::Overloaded, Class::Overloaded, Scope::ProviderModel)
        }
        Some(502) => Rule::high(
            Class::ServerError,
            Scope::ProviderModel,
            EvidenceKind::ErrorCode,
            "502 upstream error",
        )
        .what("the upstream provider behind OpenRouter failed"),
        _ => return openai::family(cx),
    };
    Some(r)
}
