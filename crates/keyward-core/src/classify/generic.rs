//! Rules that hold for every provider: transport errors, phrases weighed against the
//! status, and the bare status as the last resort.

use super::cues::Cue;
use super::{Class, Cx, EvidenceKind, Phase, Provider, Rule, Scope, TransportError};

/// A transport error: no response to read.
pub(crate) fn transport(t: TransportError, phase: Phase) -> Rule {
    let (class, scope, what) = match (t, phase) {
        (TransportError::Timeout, Phase::BeforeHeaders) => (
            Class::Timeout,
            Scope::Endpoint,
            "no response headers within the time limit",
        ),
        (TransportError::Timeout, Phase::Headers) => (
            Class::Timeout,
            Scope::ProviderModel,
            "no first content within the time-to-first-token limit",
        ),
        (TransportError::Timeout, Phase::MidStream) => (
            Class::Timeout,
            Scope::ProviderModel,
            "the stream stalled: no bytes within the idle limit",
        ),
        (TransportError::Reset, Phase::MidStream) => (
            Class::Network,
            Scope::ProviderModel,
            "the stream was cut before its terminal event",
        ),
        (TransportError::Reset, _) => (Class::Network, Scope::Endpoint, "the connection was reset"),
        (TransportError::ConnectRefused, _) => (
            Class::Network,
            Scope::Endpoint,
            "the connection was refused",
        ),
        (TransportError::Tls, _) => (Class::Network, Scope::Endpoint, "the TLS handshake failed"),
        (TransportError::Dns, _) => (
            Class::Network,
            Scope::Endpoint,
            "the host name did not resolve",
        ),
    };
    Rule::high(class, scope, EvidenceKind::Transport, t.as_str()).what(what)
}

/// A stream that sent only keep-alives (pings, comments, `message_start`, role-only
/// chunks) and no content: a timeout however long it stayed open, since pings prove only
/// that the connection lives, not that the model makes progress.
#[track_caller]
pub(crate) fn silent_stream() -> Rule {
    Rule::high(
        Class::Timeout,
        Scope::ProviderModel,
        EvidenceKind::Field,
        "stream with keep-alives only",
    )
    .what("the stream sent only keep-alive pings and no content")
}

/// The token budget reported as a `max_tokens` validation error: the remaining budget
/// negative (`max_tokens must be at least 1, got -7584`, vLLM/SGLang computing
/// context − input), or inputs plus requested new tokens above the model's limit (TGI
/// "`inputs` tokens + `max_new_tokens` must be <= 32768", vLLM "your request has 5000
/// input tokens (4096 > 8192 - 5000)", Anthropic "input length and `max_tokens` exceed
/// context limit: 197626 + 8192 > 200000"). A cap on output alone ("max_tokens: 64000 >
/// 8192, which is the maximum allowed number of output tokens") is not overflow.
pub(crate) fn budget_overflow(msg: &str) -> bool {
    use super::body::find_ascii_ci;
    const PARAMS: [&str; 7] = [
        "max_tokens",
        "max_new_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "maxoutputtokens",
        "max tokens",
        "max_tokens_to_sample",
    ];
    if !PARAMS.iter().any(|p| find_ascii_ci(msg, p).is_some()) {
        return false;
    }
    if negative_number(msg) {
        return true;
    }
    let names_input = ["input", "prompt", "messages"]
        .iter()
        .any(|w| find_ascii_ci(msg, w).is_some());
    let names_total = ["context", "total", "<=", " + ", " - "]
        .iter()
        .any(|w| find_ascii_ci(msg, w).is_some());
    names_input && names_total
}

/// A negative integer in the text (`got -7584`, `"input":-223`, `(-12)`).
fn negative_number(msg: &str) -> bool {
    let b = msg.as_bytes();
    b.windows(3).any(|w| {
        matches!(w[0], b' ' | b':' | b'(' | b'=' | b'[') && w[1] == b'-' && w[2].is_ascii_digit()
    })
}

/// A status stated at the start of a formatted message ("HTTP 402: …", "429 Too Many
/// Requests", "OpenAI API error (401): …", "status: 402", "error code 402", "returned
/// 402"). Only 4xx and 5xx count.
pub(crate) fn sniff_status(text: &str) -> Option<u16> {
    let head = text.get(..text.len().min(96)).unwrap_or(text).trim_start();
    let lower = head.to_ascii_lowercase();
    let b = lower.as_bytes();
    const LEADS: [&str; 13] = [
        "http ",
        "http/1.1 ",
        "error: ",
        "status: ",
        "status=",
        "status code ",
        "status code: ",
        "error code ",
        "error code: ",
        "error (",
        "returned ",
        "got a ",
        "received a ",
    ];
    for i in 0..b.len().saturating_sub(2) {
        if !(b[i].is_ascii_digit() && b[i + 1].is_ascii_digit() && b[i + 2].is_ascii_digit()) {
            continue;
        }
        if i > 0 && b[i - 1].is_ascii_digit() {
            continue;
        }
        if b.get(i + 3)
            .is_some_and(|c| c.is_ascii_digit() || c.is_ascii_alphabetic())
        {
            continue;
        }
        let n = u16::from(b[i] - b'0') * 100
            + u16::from(b[i + 1] - b'0') * 10
            + u16::from(b[i + 2] - b'0');
        if !(400..600).contains(&n) {
            continue;
        }
        let before = &lower[..i];
        let at_start = before.trim_start_matches("error: ").trim().is_empty();
        let led = LEADS.iter().any(|l| before.ends_with(l))
            || before.ends_with('(') && before.contains("error");
        if at_start || led {
            return Some(n);
        }
    }
    None
}

/// Cue-driven decision. The status rules some cues out: a 5xx is never an auth or billing
/// verdict, a 429 never an auth one, and a specific status (503, 504, 529) outranks a
/// generic "server error" phrase. A limit that resets by itself is a rate limit, however
/// long its window; one that needs money or a person is billing.
#[allow(clippy::too_many_lines)] // a table: one arm per cue, in the order they are weighed
pub(crate) fn by_cues(cx: &Cx<'_, '_>) -> Option<Rule> {
    let st = cx.status;
    let server = cx.is_5xx();
    // A generic 500/502 often wraps an upstream 4xx (proxies, SDK wrappers).
    let generic_server = matches!(st, Some(500 | 502));
    let no_error_status = st.is_none() || cx.http_status.is_some_and(|s| s < 400) && !server;
    let authish = matches!(
        st,
        None | Some(400 | 401 | 403 | 404 | 407 | 410 | 412 | 422)
    );

    // Never 413: a body too large is `bad_request` for every provider, however worded.
    if !server && !matches!(st, Some(401 | 403 | 413 | 429)) && budget_overflow(cx.message()) {
        return Some(
            Rule::low(
                Class::ContextOverflow,
                Scope::Request,
                EvidenceKind::Phrase,
                "max_tokens beyond the remaining context",
            )
            .what("the prompt leaves no room for the requested output tokens within the model's context"),
        );
    }
    if cx.cue(Cue::BadParam) && (!server || generic_server) && !matches!(st, Some(401 | 403 | 429))
    {
        return Some(
            cx.by_cue(Cue::BadParam, Class::BadRequest, Scope::Request)
                .what("the request carries a parameter the target does not accept"),
        );
    }
    if cx.cue(Cue::MaxTokensParam) && !server {
        return Some(
            cx.by_cue(Cue::MaxTokensParam, Class::BadRequest, Scope::Request)
                .what("max_tokens exceeds what the model allows"),
        );
    }
    if cx.cue(Cue::ContextOverflow)
        && !cx.cue(Cue::RateLimit)
        && !matches!(st, Some(401 | 403 | 429))
    {
        return Some(cx.by_cue(Cue::ContextOverflow, Class::ContextOverflow, Scope::Request));
    }
    if cx.cue(Cue::ContentFilter) && !server {
        return Some(cx.by_cue(Cue::ContentFilter, Class::ContentFilter, Scope::Request));
    }
    if cx.cue(Cue::CloudBilling) && !server {
        return Some(
            cx.by_cue(Cue::CloudBilling, Class::Billing, Scope::QuotaBucket)
                .what("the cloud account's payment instrument or marketplace subscription blocks this model"),
        );
    }
    if let Some(r) = trial_cap(cx) {
        return Some(r);
    }
    if cx.cue(Cue::PlanGate) && !server {
        return Some(cx.by_cue(Cue::PlanGate, Class::Billing, Scope::CredentialModel));
    }
    if cx.cue(Cue::BillingStrong) && !server {
        return Some(cx.by_cue(Cue::BillingStrong, Class::Billing, Scope::QuotaBucket));
    }
    if cx.cue(Cue::RequestTooLarge) && !server {
        return Some(
            cx.by_cue(Cue::RequestTooLarge, Class::BadRequest, Scope::Request)
                .what("the request is larger than this credential or model accepts in one call"),
        );
    }
    if cx.cue(Cue::OAuthUnsupported) && !server {
        return Some(
            cx.by_cue(Cue::OAuthUnsupported, Class::BadRequest, Scope::Endpoint)
                .what("this endpoint does not accept this credential's auth mode"),
        );
    }
    if cx.cue(Cue::RegionBlock) && !server {
        return Some(
            cx.by_cue(Cue::RegionBlock, Class::AuthPermanent, Scope::Endpoint)
                .what("the provider refuses requests from this gateway's region"),
        );
    }
    if authish {
        if let Some(r) = auth_cues(cx) {
            return Some(r);
        }
    }
    let model_named_missing = cx.msg().has(Cue::NotFound) && names_model(cx.message());
    if (cx.model_missing()
        || cx.cue(Cue::ModelRetired)
        || cx.cue(Cue::ModelAccess)
        || model_named_missing)
        && !server
        && st != Some(429)
    {
        if cx.cue(Cue::EndpointConfig) && !cx.cue(Cue::ModelMissing) {
            return Some(cx.by_cue(Cue::EndpointConfig, Class::BadRequest, Scope::Endpoint));
        }
        if cx.cue(Cue::ModelRetired) {
            return Some(cx.by_cue(
                Cue::ModelRetired,
                Class::ModelNotFound,
                Scope::ProviderModel,
            ));
        }
        let c = if cx.model_missing() {
            Cue::ModelMissing
        } else if cx.cue(Cue::ModelAccess) {
            Cue::ModelAccess
        } else {
            Cue::NotFound
        };
        return Some(cx.by_cue(c, Class::ModelNotFound, Scope::CredentialModel));
    }
    if cx.cue(Cue::ModelMissing) && !server && !matches!(st, Some(401 | 403 | 407 | 429)) {
        // "The file `file-abc` does not exist": something the request names, not the model.
        return Some(
            cx.by_cue(Cue::ModelMissing, Class::BadRequest, Scope::Request)
                .what("the request refers to something that does not exist (not the model)"),
        );
    }
    if cx.cue(Cue::SharedCapacity) {
        return Some(
            cx.by_cue(Cue::SharedCapacity, Class::Overloaded, Scope::ProviderModel)
                .what("the provider's shared pool for this model is rate limited, not this key"),
        );
    }
    if cx.cue(Cue::Overloaded) && (no_error_status || server || st == Some(429)) {
        return Some(cx.by_cue(Cue::Overloaded, Class::Overloaded, Scope::ProviderModel));
    }
    if cx.cue(Cue::RateLimit) && !server {
        return Some(rate_limit(cx, Cue::RateLimit));
    }
    if cx.cue(Cue::QuotaWord) && !server {
        if cx.cue(Cue::ResetHint) || cx.cue(Cue::LongWindow) {
            return Some(rate_limit(cx, Cue::QuotaWord));
        }
        if cx.cue(Cue::BillingWeak) && st != Some(429)
            || cx.cue(Cue::PaymentRequired)
            || st == Some(402)
        {
            return Some(cx.by_cue(Cue::QuotaWord, Class::Billing, Scope::QuotaBucket));
        }
        return Some(rate_limit(cx, Cue::QuotaWord));
    }
    if cx.cue(Cue::PaymentRequired) && !server {
        return Some(cx.by_cue(Cue::PaymentRequired, Class::Billing, Scope::QuotaBucket));
    }
    if cx.cue(Cue::Timeout) && (!matches!(st, Some(400..=499)) || st == Some(408)) {
        return Some(cx.by_cue(Cue::Timeout, Class::Timeout, Scope::ProviderModel));
    }
    if cx.cue(Cue::Unavailable) && (no_error_status || server) {
        if generic_server && cx.cue(Cue::ServerError) {
            return Some(cx.by_cue(Cue::ServerError, Class::ServerError, Scope::ProviderModel));
        }
        return Some(cx.by_cue(Cue::Unavailable, Class::Overloaded, Scope::ProviderModel));
    }
    if cx.cue(Cue::Network) || cx.cue(Cue::StreamCut) {
        let c = if cx.cue(Cue::Network) {
            Cue::Network
        } else {
            Cue::StreamCut
        };
        if no_error_status {
            return Some(cx.by_cue(c, Class::Network, Scope::Endpoint));
        }
        if generic_server || st == Some(503) {
            // A response did arrive: it is the provider's edge that could not reach its
            // own backend, a server error on their side.
            return Some(
                cx.by_cue(c, Class::ServerError, Scope::ProviderModel)
                    .what("the provider's edge could not reach its own backend"),
            );
        }
    }
    if cx.cue(Cue::EndpointConfig) && !server {
        return Some(cx.by_cue(Cue::EndpointConfig, Class::BadRequest, Scope::Endpoint));
    }
    if cx.cue(Cue::ServerError) && (no_error_status || generic_server) {
        return Some(cx.by_cue(Cue::ServerError, Class::ServerError, Scope::ProviderModel));
    }
    if cx.cue(Cue::BadRequest) && !server && !matches!(st, Some(401 | 402 | 403 | 429)) {
        return Some(cx.by_cue(Cue::BadRequest, Class::BadRequest, Scope::Request));
    }
    if cx.cue(Cue::BillingWeak) && matches!(st, None | Some(402 | 403)) {
        return Some(cx.by_cue(Cue::BillingWeak, Class::Billing, Scope::QuotaBucket));
    }
    None
}

/// A trial key's monthly cap: it arrives as a 429 but waiting minutes does not clear it;
/// it needs a production key (billing). A trial key's per-minute limit stays a rate limit.
pub(crate) fn trial_cap(cx: &Cx<'_, '_>) -> Option<Rule> {
    if !cx.cue(Cue::TrialKey) || cx.is_5xx() {
        return None;
    }
    let monthly =
        cx.cue(Cue::LongWindow) || super::body::find_ascii_ci(cx.message(), "month").is_some();
    monthly.then(|| {
        cx.by_cue(Cue::TrialKey, Class::Billing, Scope::QuotaBucket)
            .what("a trial key's monthly cap is used up: it needs a production key, not a wait")
    })
}

/// A rate limit, scoped to the model when the message names one.
#[track_caller]
pub(crate) fn rate_limit(cx: &Cx<'_, '_>, cue: Cue) -> Rule {
    let scope = if names_model(cx.message()) {
        Scope::CredentialModel
    } else {
        Scope::Credential
    };
    let r = cx.by_cue(cue, Class::RateLimit, scope);
    if cx.cue(Cue::LongWindow) {
        r.what("rate limited on a daily or longer window")
    } else {
        r
    }
}

/// Whether a rate-limit message names the model it applies to.
pub(crate) fn names_model(msg: &str) -> bool {
    let m = msg.as_bytes();
    super::body::find_ascii_ci(msg, "model").is_some()
        || super::body::find_ascii_ci(msg, "reached for ").is_some()
        || m.contains(&b'`')
}

/// Auth cues, in order of specificity.
fn auth_cues(cx: &Cx<'_, '_>) -> Option<Rule> {
    if cx.cue(Cue::OrgPolicy) {
        return Some(
            cx.by_cue(Cue::OrgPolicy, Class::AuthPermanent, Scope::QuotaBucket)
                .what("the organization does not allow this auth mode"),
        );
    }
    if cx.cue(Cue::RefreshDead) {
        return Some(cx.by_cue(Cue::RefreshDead, Class::AuthPermanent, Scope::Credential)
            .what("the login behind this credential is gone (refresh token rejected or signed out)"));
    }
    if cx.cue(Cue::OrgDisabled) {
        return Some(cx.by_cue(Cue::OrgDisabled, Class::AuthPermanent, Scope::QuotaBucket));
    }
    if cx.cue(Cue::Revoked) {
        return Some(
            cx.by_cue(Cue::Revoked, Class::AuthPermanent, Scope::Credential)
                .what("the credential was revoked, deleted or disabled"),
        );
    }
    if cx.cue(Cue::ExpiredToken) {
        return Some(if cx.refreshable() {
            cx.by_cue(Cue::ExpiredToken, Class::AuthTransient, Scope::Credential)
        } else {
            // An API key cannot be refreshed: "expired" is as final as "revoked".
            cx.by_cue(Cue::ExpiredToken, Class::AuthPermanent, Scope::Credential)
                .what("the API key has expired (API keys cannot be refreshed)")
        });
    }
    if cx.cue(Cue::InvalidKey) || cx.cue(Cue::MissingKey) {
        let c = if cx.cue(Cue::InvalidKey) {
            Cue::InvalidKey
        } else {
            Cue::MissingKey
        };
        if cx.refreshable() && cx.cue(Cue::InvalidKey) && !cx.cue(Cue::MissingKey) {
            let r = cx.by_cue(c, Class::AuthTransient, Scope::Credential);
            return Some(r.what("the access token was not accepted; a refresh may fix it"));
        }
        let r = cx.by_cue(c, Class::AuthPermanent, Scope::Credential);
        return Some(if c == Cue::MissingKey {
            r.what("no usable credential reached the provider (missing or empty key: a configuration error)")
        } else {
            r
        });
    }
    if cx.cue(Cue::AuthGeneric) && !matches!(cx.status, Some(404 | 412 | 422)) {
        return Some(bare_auth(cx, Some(Cue::AuthGeneric)));
    }
    if cx.cue(Cue::Permission) && matches!(cx.status, None | Some(401 | 403)) {
        if cx.cue(Cue::ModelAccess) || cx.cue(Cue::ModelMissing) {
            return None;
        }
        if cx.provider == Provider::Unknown {
            return Some(bare_auth(cx, Some(Cue::Permission)));
        }
        let r = cx
            .by_cue(Cue::Permission, Class::AuthPermanent, Scope::Credential)
            .what("the credential lacks permission for this operation");
        return Some(Rule {
            confidence: super::Confidence::Low,
            ..r
        });
    }
    None
}

/// A 401/403 with nothing else to go on: refreshable credentials get one refresh; API
/// keys of a known provider are suspect (low confidence: a probe decides). For a provider
/// we know nothing about, a bare 401/403 is as likely a WAF, quota or rate gate as a dead
/// key, and a probe would meet the same gate and "confirm" it: one bounded retry
/// (`auth_transient`) costs less, and repeats escalate in the health engine.
#[track_caller]
pub(crate) fn bare_auth(cx: &Cx<'_, '_>, cue: Option<Cue>) -> Rule {
    let (kind, value): (EvidenceKind, std::borrow::Cow<'static, str>) = match cue {
        Some(c) if cx.codes.has(c) => (EvidenceKind::ErrorCode, cx.codes.phrase(c).into()),
        Some(c) => (EvidenceKind::Phrase, cx.msg().phrase(c).into()),
        None => (EvidenceKind::Status, "bare auth status".into()),
    };
    if cx.refreshable() {
        Rule::low(Class::AuthTransient, Scope::Credential, kind, value)
            .what("authentication failed with no further signal; a refreshable credential is refreshed once")
    } else if cx.provider == Provider::Unknown {
        Rule::low(Class::AuthTransient, Scope::Credential, kind, value)
            .what("an unknown provider refused the request with no further signal; retried once before the key is suspected")
    } else {
        Rule::low(Class::AuthPermanent, Scope::Credential, kind, value)
            .what("authentication failed with no further signal; the key is suspect until a probe confirms")
    }
}

/// The bare status, low confidence.
pub(crate) fn by_status(cx: &Cx<'_, '_>) -> Rule {
    let ev = |class, scope| Rule::low(class, scope, EvidenceKind::Status, status_word(cx.status));
    let Some(st) = cx.status else {
        if cx.sig.silent_stream() {
            return silent_stream();
        }
        if cx.phase == Phase::MidStream || cx.sig.kind == super::body::BodyKind::Sse {
            return Rule::low(
                Class::Network,
                Scope::ProviderModel,
                EvidenceKind::Field,
                "no terminal event",
            )
            .what("the stream ended before its terminal event");
        }
        if cx.http_status.is_some_and(|s| s < 400) {
            return Rule::low(
                Class::ServerError,
                Scope::ProviderModel,
                EvidenceKind::Status,
                "success status without a usable result",
            )
            .what("the response carried neither a result nor a recognisable error");
        }
        if cx.sig.text.trim().is_empty() {
            return Rule::low(
                Class::Network,
                Scope::Endpoint,
                EvidenceKind::Transport,
                "no response",
            )
            .what("no response arrived (a transport failure)");
        }
        return Rule::low(
            Class::ServerError,
            Scope::ProviderModel,
            EvidenceKind::Phrase,
            "unrecognised error text",
        )
        .what("an error with no status and no recognisable signal");
    };
    match st {
        401 | 403 | 407 => bare_auth(cx, None),
        402 => ev(Class::Billing, Scope::QuotaBucket),
        404 => ev(Class::ModelNotFound, Scope::CredentialModel),
        405 | 501 => ev(Class::BadRequest, Scope::Endpoint),
        408 | 499 | 504 | 522 | 524 => ev(Class::Timeout, Scope::ProviderModel),
        410 => Rule::low(Class::Network, Scope::Endpoint, EvidenceKind::Status, "410 Gone without detail")
            .what("the upstream answered 410 Gone with no detail (typically a proxy's closed session); treated as transient"),
        412 => ev(Class::Billing, Scope::QuotaBucket),
        413 => ev(Class::BadRequest, Scope::Request),
        429 => ev(Class::RateLimit, Scope::Credential),
        503 | 529 => ev(Class::Overloaded, Scope::ProviderModel),
        500..=599 => ev(Class::ServerError, Scope::ProviderModel),
        _ => ev(Class::BadRequest, Scope::Request),
    }
}

fn status_word(st: Option<u16>) -> &'static str {
    match st {
        Some(400) => "400 Bad Request",
        Some(401) => "401 Unauthorized",
        Some(402) => "402 Payment Required",
        Some(403) => "403 Forbidden",
        Some(404) => "404 Not Found",
        Some(408) => "408 Request Timeout",
        Some(410) => "410 Gone",
        Some(413) => "413 Payload Too Large",
        Some(422) => "422 Unprocessable Entity",
        Some(429) => "429 Too Many Requests",
        Some(500) => "500 Internal Server Error",
        Some(502) => "502 Bad Gateway",
        Some(503) => "503 Service Unavailable",
        Some(504) => "504 Gateway Timeout",
        Some(529) => "529 Overloaded",
        Some(_) => "HTTP status",
        None => "no status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_status_from_formatted_messages() {
        assert_eq!(sniff_status("HTTP 402: Payment required"), Some(402));
        assert_eq!(sniff_status("429 Too Many Requests"), Some(429));
        assert_eq!(sniff_status("Error: 401 <!doctype html>"), Some(401));
        assert_eq!(sniff_status("OpenAI API error (401): Invalid"), Some(401));
        assert_eq!(sniff_status("status: 402"), Some(402));
        assert_eq!(sniff_status("got a 402 from the API"), Some(402));
        assert_eq!(sniff_status("request (13392 tokens) exceeds 8192"), None);
        assert_eq!(sniff_status("LLM error 1310: limit"), None);
        assert_eq!(sniff_status("200 OK"), None);
        assert_eq!(sniff_status("4295 tokens"), None);
    }

    #[test]
    fn budget_overflow_needs_the_input_side_or_a_negative_budget() {
        assert!(budget_overflow("max_tokens must be at least 1, got -7584."));
        assert!(budget_overflow(
            "`inputs` tokens + `max_new_tokens` must be <= 4096. Given: 3900 `inputs` tokens"
        ));
        assert!(budget_overflow(
            "input length and `max_tokens` exceed context limit: 197626 + 8192 > 200000"
        ));
        // A cap on output alone is the request's own parameter, not overflow.
        assert!(!budget_overflow(
            "max_tokens: 64000 > 8192, which is the maximum allowed number of output tokens"
        ));
        assert!(!budget_overflow(
            "max_tokens is too large: 50000. This model supports at most 16384 completion tokens"
        ));
        assert!(!budget_overflow("temperature must be at least 0, got -1"));
        assert!(!budget_overflow("max-tokens-2024 is not a model"));
    }

    #[test]
    fn ambiguous_auth_wording_is_recognised() {
        use super::super::ambiguous_auth;
        assert!(ambiguous_auth(
            "The API key is missing, invalid, or expired."
        ));
        assert!(ambiguous_auth("invalid access token or token expired"));
        assert!(!ambiguous_auth("invalid x-api-key"));
        assert!(!ambiguous_auth(
            "API key expired. Please renew the API key."
        ));
        assert!(!ambiguous_auth(
            "Incorrect API key provided: sk-abc. You can find your API key at https://x."
        ));
    }
}
