//! What a request's trace says: one span per request (`keyward.request`, kind server) and a
//! child per upstream attempt (`keyward.attempt`, kind client), with the OpenTelemetry
//! GenAI attributes (`gen_ai.operation.name`, `gen_ai.provider.name`, the requested and
//! answering models, token usage) and Keyward's own (route, credential id, verdict class
//! and scope, failover reason, attempt number, status). See docs/telemetry.md.
//!
//! The spans have their own target ([`crate::telemetry::TARGET`]): with telemetry off they
//! are disabled at their call sites (the log does not change) and every `record` here
//! returns at its first check.
//! Nothing here reads a secret: credentials are named by id, and a failure's explanation
//! has been through the secret mask before it is recorded.

use keyward_core::classify::{Failure, Provider};
use keyward_core::health::RouteSpec;
use keyward_wire::usage::Usage;
use tracing::field::Empty;
use tracing::Span;

use super::upstream::Inbound;
use super::Gateway;
use crate::telemetry::{enabled, TARGET};

/// The GenAI operation an inbound API performs.
fn operation(inbound: Inbound) -> &'static str {
    match inbound {
        Inbound::Messages | Inbound::Chat | Inbound::Responses => "chat",
        Inbound::CountTokens => "count_tokens",
        Inbound::Embeddings => "embeddings",
        Inbound::Gemini(_) => "generate_content",
    }
}

/// `gen_ai.provider.name`: the semantic conventions' well-known values where one exists.
fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::Anthropic => "anthropic",
        Provider::OpenAi => "openai",
        Provider::AzureOpenAi => "azure.ai.openai",
        Provider::Gemini => "gcp.gemini",
        Provider::VertexAi => "gcp.vertex_ai",
        Provider::Bedrock => "aws.bedrock",
        Provider::Mistral => "mistral_ai",
        Provider::DeepSeek => "deepseek",
        other => other.as_str(),
    }
}

/// The request's span (disabled, and free, when telemetry is off).
pub(super) fn request_span(
    id: &str,
    inbound: Inbound,
    model: &str,
    route: &str,
    gateway_key: &str,
) -> Span {
    let op = operation(inbound);
    tracing::info_span!(
        target: TARGET,
        "keyward.request",
        otel.name = %format_args!("{op} {model}"),
        otel.kind = "server",
        otel.status_code = Empty,
        gen_ai.operation.name = op,
        gen_ai.request.model = model,
        keyward.request_id = id,
        keyward.route = route,
        keyward.gateway_key = gateway_key,
        keyward.attempts = Empty,
        keyward.credential = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// The span of the request's `attempt_no`th attempt, on target `target` of `spec`; its
/// credential, status, verdict and usage are recorded as they become known.
pub(super) fn attempt_span(
    gw: &Gateway,
    inbound: Inbound,
    spec: &RouteSpec,
    target: usize,
    attempt_no: u32,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let (endpoint, model) = spec
        .targets
        .get(target)
        .map_or(("-", "-"), |t| (&*t.endpoint, &*t.model));
    let provider = gw
        .cfg
        .endpoints
        .get(endpoint)
        .map_or("-", |e| provider_name(e.provider));
    let op = operation(inbound);
    tracing::info_span!(
        target: TARGET,
        "keyward.attempt",
        otel.name = %format_args!("{op} {model}"),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = op,
        gen_ai.provider.name = provider,
        gen_ai.system = provider,
        gen_ai.request.model = model,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        keyward.endpoint = endpoint,
        keyward.attempt = i64::from(attempt_no),
        keyward.credential = Empty,
        keyward.verdict_class = Empty,
        keyward.verdict_scope = Empty,
        keyward.failover_reason = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// An OTLP integer: the OpenTelemetry bridge exports only signed integers as numbers (an
/// unsigned one would arrive as text).
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The current attempt's span, when traces are on.
fn current() -> Option<Span> {
    enabled().then(Span::current).filter(|s| !s.is_disabled())
}

/// The credential (its id, never its secret) the current attempt uses.
pub(super) fn credential(id: &str) {
    if let Some(s) = current() {
        s.record("keyward.credential", id);
    }
}

/// The upstream's HTTP status for the current attempt.
pub(super) fn upstream_status(status: u16) {
    if let Some(s) = current() {
        s.record("http.response.status_code", i64::from(status));
    }
}

/// The current attempt failed: its verdict, and why the request moved on.
pub(super) fn failed(f: &Failure) {
    if let Some(s) = current() {
        s.record("keyward.verdict_class", f.class.as_str());
        s.record("keyward.verdict_scope", f.scope.as_str());
        s.record("error.type", f.class.as_str());
        s.record("otel.status_code", "ERROR");
        s.record(
            "keyward.failover_reason",
            &*super::caller_error::bounded(&f.explanation, 300),
        );
    }
}

/// The model that answered the current attempt.
pub(super) fn answered_by(model: &str) {
    if let Some(s) = current() {
        s.record("gen_ai.response.model", model);
    }
}

/// The tokens the answer reports (a stream's once it ends).
pub(super) fn usage(u: Usage) {
    if let Some(s) = current() {
        s.record("gen_ai.usage.input_tokens", int(u.input));
        s.record("gen_ai.usage.output_tokens", int(u.output));
    }
}

/// The request's answer: its status, attempts and the credential that answered (or
/// failed last).
pub(super) fn answered(span: &Span, r: &axum::response::Response) {
    if span.is_disabled() {
        return;
    }
    let status = r.status().as_u16();
    span.record("http.response.status_code", i64::from(status));
    let header = |name: axum::http::HeaderName| r.headers().get(name).and_then(|v| v.to_str().ok());
    let built = r.extensions().get::<super::answer::AttemptInfo>();
    match built {
        Some(b) => span.record("keyward.attempts", i64::from(b.attempts)),
        None => span.record(
            "keyward.attempts",
            header(super::answer::X_KEYWARD_ATTEMPTS)
                .and_then(|a| a.parse::<i64>().ok())
                .unwrap_or(0),
        ),
    };
    if let Some(c) = built
        .and_then(|b| b.credential.as_deref())
        .or_else(|| header(super::answer::X_KEYWARD_CREDENTIAL))
    {
        span.record("keyward.credential", c);
    }
    if status >= 400 {
        span.record("error.type", status.to_string());
    }
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}
