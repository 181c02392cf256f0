//! One module per provider, each written from that provider's documented error shapes.
//!
//! Every module answers only what its structure decides and returns `None` otherwise; the
//! dispatcher then tries the shapes any provider may relay (Anthropic-shaped bodies from
//! Vertex or proxies, Google-shaped bodies, the OpenAI envelope), then phrases, then the
//! bare status.

pub(crate) mod anthropic;
pub(crate) mod azure;
pub(crate) mod bedrock;
pub(crate) mod cohere;
pub(crate) mod copilot;
pub(crate) mod deepseek;
pub(crate) mod fireworks;
pub(crate) mod google;
pub(crate) mod groq;
pub(crate) mod mistral;
pub(crate) mod oauth_token;
pub(crate) mod ollama;
pub(crate) mod openai;
pub(crate) mod openrouter;
pub(crate) mod together;
pub(crate) mod vllm;
pub(crate) mod xai;

use super::generic;
use super::{Class, Cx, EvidenceKind, Provider, Rule, Scope};

/// Classifies an inference-endpoint response. Always gives a verdict.
pub(crate) fn classify(cx: &Cx<'_, '_>) -> Rule {
    if let Some(r) = success_shaped(cx) {
        return r;
    }
    if cx.status.is_none() && cx.sig.silent_stream() {
        return generic::silent_stream();
    }
    if let Some(r) = token_budget(cx) {
        return r;
    }
    if let Some(r) = foreign_envelope(cx) {
        return r;
    }
    let specific = match cx.provider {
        Provider::Anthropic => anthropic::classify(cx),
        Provider::OpenAi => openai::classify(cx),
        Provider::AzureOpenAi => azure::classify(cx),
        Provider::Gemini | Provider::VertexAi => google::classify(cx),
        Provider::Bedrock => bedrock::classify(cx),
        Provider::Mistral => mistral::classify(cx),
        Provider::Groq => groq::classify(cx),
        Provider::Cohere => cohere::classify(cx),
        Provider::DeepSeek => deepseek::classify(cx),
        Provider::Xai => xai::classify(cx),
        Provider::OpenRouter => openrouter::classify(cx),
        Provider::Together => together::classify(cx),
        Provider::Fireworks => fireworks::classify(cx),
        Provider::Ollama => ollama::classify(cx),
        Provider::Vllm => vllm::classify(cx),
        Provider::GithubCopilot => copilot::classify(cx),
        Provider::OpenAiCompatible | Provider::Unknown => None,
    };
    if cx.is_status(413) {
        // A 413 is the request's fault whoever sends it: no provider documents a 413 that
        // is about the key (Groq's "request too large … tokens per minute" is one request
        // above the whole budget; Anthropic's `request_too_large` is the body's size).
        // Phrases in a plain-text 413 ("length limit exceeded") must not make it a rate
        // limit: one caller's oversized bodies would cool every key of a route.
        return specific
            .filter(|r| r.class == Class::BadRequest && r.scope == Scope::Request)
            .unwrap_or_else(too_large);
    }
    if let Some(r) = specific {
        return r;
    }
    // Shapes that travel: Claude on Vertex/Bedrock and Anthropic-compatible proxies send
    // Anthropic bodies; Gemini's OpenAI endpoint and proxies send Google bodies.
    let relayed = if anthropic::looks_anthropic(cx) {
        anthropic::classify(cx)
    } else if cx.sig.gstatus.is_some() || cx.sig.reason.is_some() {
        google::classify(cx)
    } else {
        None
    };
    relayed
        .or_else(|| openai::family(cx))
        .or_else(|| generic::by_cues(cx))
        .or_else(|| structured_fallback(cx))
        .unwrap_or_else(|| generic::by_status(cx))
}

/// A 413: the request is larger than the upstream accepts. It touches no health.
fn too_large() -> Rule {
    Rule::high(
        Class::BadRequest,
        Scope::Request,
        EvidenceKind::Status,
        "413 Payload Too Large",
    )
    .what("the request is larger than the upstream accepts; retrying it elsewhere does not help")
}

/// The token budget reported as a validation error on `max_tokens` (negative remaining
/// budget, or inputs plus requested output above the model's limit): context overflow,
/// whichever provider's validator worded it. Never for a 413 (always `bad_request`).
fn token_budget(cx: &Cx<'_, '_>) -> Option<Rule> {
    if !matches!(cx.status, None | Some(400 | 422)) || !generic::budget_overflow(cx.message()) {
        return None;
    }
    let structured = cx.sig.ty.is_some()
        || cx.sig.code.is_some()
        || cx.sig.gstatus.is_some()
        || cx.sig.aws_type.is_some();
    let r = if structured && cx.status.is_some() {
        Rule::high(
            Class::ContextOverflow,
            Scope::Request,
            EvidenceKind::Field,
            "validation error: max_tokens beyond the remaining context",
        )
    } else {
        Rule::low(
            Class::ContextOverflow,
            Scope::Request,
            EvidenceKind::Phrase,
            "max_tokens beyond the remaining context",
        )
    };
    Some(r.what(
        "the prompt leaves no room for the requested output tokens within the model's context",
    ))
}

/// A body in another provider's envelope than the configured provider's: a cloud's
/// OpenAI-compatible endpoint (Vertex AI, Bedrock's mantle, Anthropic's compatibility
/// layer) answers in OpenAI's shape, `{"error":{"message","type","param","code"}}` with a
/// named `code`. The shape decides, not only the configured provider.
fn foreign_envelope(cx: &Cx<'_, '_>) -> Option<Rule> {
    let openai_shaped = !cx.sig.typed_envelope
        && cx.sig.gstatus.is_none()
        && cx.sig.reason.is_none()
        && cx.sig.aws_type.is_none()
        && cx
            .sig
            .code
            .as_deref()
            .is_some_and(|c| c.parse::<u16>().is_err());
    match cx.provider {
        // Google's and Bedrock's modules fall back to the OpenAI envelope themselves.
        Provider::Anthropic if openai_shaped => openai::family(cx),
        _ => None,
    }
}

/// A 200 whose body is a success shape but refused or broke: content filters
/// (`finish_reason: content_filter`, Gemini `SAFETY`/`PROHIBITED_CONTENT`/`blockReason`,
/// Anthropic `stop_reason: refusal`, Responses `incomplete_details.reason`).
fn success_shaped(cx: &Cx<'_, '_>) -> Option<Rule> {
    if cx.sig.has_error_code() {
        return None;
    }
    let f = cx.sig.finish.as_deref()?;
    let filtered = matches!(
        f,
        "content_filter"
            | "SAFETY"
            | "PROHIBITED_CONTENT"
            | "BLOCKLIST"
            | "SPII"
            | "RECITATION"
            | "IMAGE_SAFETY"
            | "refusal"
            | "OTHER"
            | "guardrail_intervened"
            | "content_filtered"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION"
            | "ERROR_TOXIC"
    );
    if filtered {
        return Some(
            Rule::high(
                Class::ContentFilter,
                Scope::Request,
                EvidenceKind::Field,
                format!("finish reason {f}"),
            )
            .what("the provider's safety system stopped the response"),
        );
    }
    if f == "error" {
        return Some(
            Rule::low(
                Class::ServerError,
                Scope::ProviderModel,
                EvidenceKind::Field,
                "finish_reason error",
            )
            .what("the provider ended the response with an error finish reason"),
        );
    }
    None
}

/// An invalid-request type with a 4xx and no other signal: the caller's request.
fn structured_fallback(cx: &Cx<'_, '_>) -> Option<Rule> {
    let ty = cx.ty();
    let bad = matches!(
        ty,
        "invalid_request_error"
            | "BadRequestError"
            | "invalid_request"
            | "validation_error"
            | "UnprocessableEntityError"
    );
    if bad && matches!(cx.status, Some(400 | 422)) {
        return Some(Rule::high(
            Class::BadRequest,
            Scope::Request,
            EvidenceKind::ErrorType,
            ty.to_owned(),
        ));
    }
    None
}

/// `error.type` evidence with high confidence.
#[track_caller]
pub(crate) fn by_type(cx: &Cx<'_, '_>, class: Class, scope: Scope) -> Rule {
    Rule::high(class, scope, EvidenceKind::ErrorType, cx.ty().to_owned())
}

/// `error.code` evidence with high confidence.
#[track_caller]
pub(crate) fn by_code(cx: &Cx<'_, '_>, class: Class, scope: Scope) -> Rule {
    Rule::high(class, scope, EvidenceKind::ErrorCode, cx.code().to_owned())
}

#[cfg(test)]
mod tests {
    use crate::classify::{classify, Attempt, Class, CredentialKind, Provider, Scope};

    /// 413 bodies as they arrive: a server's plain text, a proxy's HTML page, each
    /// provider family's own envelope (some carrying rate-limit words).
    const BODIES: &[&str] = &[
        "length limit exceeded",
        "<html><head><title>413 Request Entity Too Large</title></head><body><center><h1>413 Request Entity Too Large</h1></center><hr><center>nginx</center></body></html>",
        r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#,
        r#"{"error":{"message":"Request too large for model `gpt-4o` on tokens per minute (TPM): Limit 30000, Requested 90000.","type":"tokens","code":"rate_limit_exceeded"}}"#,
        r#"{"error":{"code":413,"message":"Request payload size exceeds the limit: 20971520 bytes.","status":"INVALID_ARGUMENT"}}"#,
        r#"{"error":"request body too large, rate limit exceeded"}"#,
        "",
    ];

    #[test]
    fn a_413_is_the_requests_fault_for_every_provider() {
        for provider in Provider::ALL {
            for kind in [CredentialKind::ApiKey, CredentialKind::OAuth] {
                for body in BODIES {
                    let f = classify(
                        &Attempt::response(provider, 413, body.as_bytes()).credential(kind),
                    );
                    assert_eq!(
                        (f.class, f.scope),
                        (Class::BadRequest, Scope::Request),
                        "{provider:?} ({kind:?}) 413 {body:?}: {f:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_same_words_under_a_429_are_still_a_rate_limit() {
        let body = br#"{"error":{"message":"Rate limit exceeded","type":"requests","code":"rate_limit_exceeded"}}"#;
        let f = classify(&Attempt::response(Provider::OpenAi, 429, body));
        assert_eq!(f.class, Class::RateLimit, "{f:?}");
    }
}
