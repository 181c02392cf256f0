//! The failure classifier: one failed upstream attempt in, one [`Failure`] out.
//!
//! Hand-written because it *is* the domain: no crate knows that Anthropic reports an
//! exhausted credit balance as a 400, that OpenAI's `token_expired` means "refresh" on the
//! API but "log in again" on the token endpoint, or that Groq's 498 is capacity while
//! Cohere's 498 is a content block.
//!
//! The order of evidence, for every provider:
//! 1. a transport error (no response at all);
//! 2. the token endpoint's RFC 6749 §5.2 answer, when the attempt was a refresh;
//! 3. the provider's own structured fields: status with `error.type`/`error.code`, Google
//!    `ErrorInfo.reason`/`error.status`/`QuotaFailure`, AWS error types, Anthropic
//!    `details.error_code`, finish reasons of success-shaped bodies, in-band SSE errors;
//! 4. phrases in the message ([`cues`]), which only ever yield low confidence unless a
//!    provider module pairs a documented message with its structured type;
//! 5. the bare status, low confidence.
//!
//! Only [`body::MAX_EXAMINED`] bytes of a body are read, so the cost is bounded whatever
//! arrives; any bytes at all (invalid UTF-8, HTML, megabytes) get a verdict without panic.

mod body;
mod cues;
mod generic;
pub mod headers;
mod provider;
mod providers;
mod redact;
mod verdict;

use std::borrow::Cow;
use std::cell::OnceCell;
use std::panic::Location;
use std::time::SystemTime;

pub use body::MAX_EXAMINED;
pub use provider::{CatalogueName, CredentialKind, EndpointKind, Phase, Provider, TransportError};
pub use redact::mask_secrets;
pub use verdict::{Class, Confidence, Evidence, EvidenceKind, Failure, Scope};

use body::Signals;
use cues::{Cue, Cues};

/// One failed attempt, as the classifier sees it. Borrowed: nothing is copied.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// Who answered.
    pub provider: Provider,
    /// The kind of secret used.
    pub credential: CredentialKind,
    /// Inference API or OAuth token endpoint.
    pub endpoint: EndpointKind,
    /// How far the attempt got.
    pub phase: Phase,
    /// A transport error instead of a response, if that is what happened.
    pub transport: Option<TransportError>,
    /// The HTTP status, if a response arrived (for in-band errors, the 200).
    pub status: Option<u16>,
    /// Response headers, in any case.
    pub headers: &'a [(&'a str, &'a str)],
    /// The response body (or the failing SSE event); only a bounded prefix is examined.
    pub body: &'a [u8],
    /// The wall-clock time of the response, for HTTP-date and RFC 3339 reset headers.
    pub now: SystemTime,
}

impl<'a> Attempt<'a> {
    /// A response from `provider` with an API key on an inference endpoint; adjust the
    /// other fields with the builder methods.
    pub fn response(provider: Provider, status: u16, body: &'a [u8]) -> Self {
        Attempt {
            provider,
            credential: CredentialKind::ApiKey,
            endpoint: EndpointKind::Inference,
            phase: Phase::Headers,
            transport: None,
            status: Some(status),
            headers: &[],
            body,
            now: SystemTime::UNIX_EPOCH,
        }
    }

    /// A transport failure talking to `provider`.
    pub fn transport(provider: Provider, error: TransportError, phase: Phase) -> Self {
        Attempt {
            provider,
            credential: CredentialKind::ApiKey,
            endpoint: EndpointKind::Inference,
            phase,
            transport: Some(error),
            status: None,
            headers: &[],
            body: &[],
            now: SystemTime::UNIX_EPOCH,
        }
    }

    /// Sets the credential kind.
    pub fn credential(mut self, kind: CredentialKind) -> Self {
        self.credential = kind;
        self
    }

    /// Sets the endpoint kind.
    pub fn endpoint(mut self, kind: EndpointKind) -> Self {
        self.endpoint = kind;
        self
    }

    /// Sets the response headers.
    pub fn headers(mut self, headers: &'a [(&'a str, &'a str)]) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the phase.
    pub fn phase(mut self, phase: Phase) -> Self {
        self.phase = phase;
        self
    }

    /// Sets the time the response arrived.
    pub fn at(mut self, now: SystemTime) -> Self {
        self.now = now;
        self
    }
}

/// What one rule decided, before the common finishing (retry-after, explanation).
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub class: Class,
    pub scope: Scope,
    pub confidence: Confidence,
    pub kind: EvidenceKind,
    pub value: Cow<'static, str>,
    /// A more specific account of what happened than the class's default.
    pub what: Option<&'static str>,
    /// Where the rule is written (for `keyward classify --explain`).
    pub site: &'static Location<'static>,
    /// Why a high-confidence rule was demoted, when it was.
    pub demoted: Option<&'static str>,
    /// A more specific remedy than the class's default.
    pub remedy: Option<&'static str>,
}

impl Rule {
    #[track_caller]
    pub(crate) fn high(
        class: Class,
        scope: Scope,
        kind: EvidenceKind,
        value: impl Into<Cow<'static, str>>,
    ) -> Rule {
        Rule {
            class,
            scope,
            confidence: Confidence::High,
            kind,
            value: value.into(),
            what: None,
            site: Location::caller(),
            demoted: None,
            remedy: None,
        }
    }

    #[track_caller]
    pub(crate) fn low(
        class: Class,
        scope: Scope,
        kind: EvidenceKind,
        value: impl Into<Cow<'static, str>>,
    ) -> Rule {
        Rule {
            confidence: Confidence::Low,
            ..Rule::high(class, scope, kind, value)
        }
    }

    pub(crate) fn what(mut self, what: &'static str) -> Rule {
        self.what = Some(what);
        self
    }

    pub(crate) fn remedy(mut self, remedy: &'static str) -> Rule {
        self.remedy = Some(remedy);
        self
    }
}

/// Everything a rule may look at.
#[derive(Debug)]
pub(crate) struct Cx<'s, 'a> {
    pub provider: Provider,
    pub credential: CredentialKind,
    pub phase: Phase,
    /// The status the rules reason about: the HTTP status when it is an error, else one the
    /// body states (Google `error.code` inside a 200), else one read out of the text.
    pub status: Option<u16>,
    /// The HTTP status as received.
    pub http_status: Option<u16>,
    pub sig: &'s Signals<'a>,
    /// Cues from the human-readable message, title or text: scanned on first use.
    msg: OnceCell<Cues>,
    /// The examined text, for the message cues of a body without structure.
    text: &'s str,
    /// Cues from structured fields (type, code, reason, AWS type, finish reason).
    pub codes: Cues,
    pub headers: &'s [(&'s str, &'s str)],
}

impl Cx<'_, '_> {
    /// Cues from the human-readable parts: message, title, free-text `error`, or the head
    /// of a body with no structure at all.
    pub(crate) fn msg(&self) -> &Cues {
        self.msg.get_or_init(|| {
            let sig = self.sig;
            let mut msg = Cues::default();
            if let Some(m) = sig.message.as_deref() {
                msg.scan(m);
            }
            if let Some(t) = sig.title {
                msg.scan(t);
            }
            for field in [
                &sig.error_str,
                &sig.ty,
                &sig.code,
                &sig.gstatus,
                &sig.reason,
                &sig.aws_type,
                &sig.detail_code,
            ]
            .into_iter()
            .flatten()
            .filter(|f| !is_code_like(f))
            {
                msg.scan(field);
            }
            if !sig.structured && sig.message.is_none() {
                let head = self
                    .text
                    .get(..self.text.len().min(2048))
                    .unwrap_or(self.text);
                msg.scan(head);
            }
            msg
        })
    }

    /// Any cue, from structure or message.
    pub(crate) fn cue(&self, c: Cue) -> bool {
        self.codes.has(c) || self.msg().has(c)
    }

    /// The rule for a cue: high confidence when a structured field raised it.
    #[track_caller]
    pub(crate) fn by_cue(&self, c: Cue, class: Class, scope: Scope) -> Rule {
        if self.codes.has(c) {
            Rule::high(class, scope, EvidenceKind::ErrorCode, self.codes.phrase(c))
        } else {
            Rule::low(class, scope, EvidenceKind::Phrase, self.msg().phrase(c))
        }
    }

    /// A missing-model cue that is about a model: the generic "does not exist" counts only
    /// when the message names a model or deployment (not a file, guardrail or assistant).
    pub(crate) fn model_missing(&self) -> bool {
        if !self.cue(Cue::ModelMissing) {
            return false;
        }
        let generic = !self.codes.has(Cue::ModelMissing)
            && self.msg().phrase(Cue::ModelMissing) == "does not exist";
        !generic
            || body::find_ascii_ci(self.message(), "model").is_some()
            || body::find_ascii_ci(self.message(), "deployment").is_some()
    }

    pub(crate) fn ty(&self) -> &str {
        self.sig.ty.as_deref().unwrap_or("")
    }

    pub(crate) fn code(&self) -> &str {
        self.sig.code.as_deref().unwrap_or("")
    }

    /// The human message: the message field, an HTML title, or the head of a text body.
    pub(crate) fn message(&self) -> &str {
        if let Some(m) = self.sig.message.as_deref().or(self.sig.title) {
            return m;
        }
        // A free-text top-level `error` (TGI, Ollama, xAI) is the message.
        if let Some(e) = self.sig.error_str.as_deref().filter(|e| !is_code_like(e)) {
            return e;
        }
        if self.sig.kind == body::BodyKind::Text {
            let t = self.sig.text.trim();
            return t.get(..t.len().min(512)).unwrap_or(t);
        }
        ""
    }

    pub(crate) fn is_status(&self, s: u16) -> bool {
        self.status == Some(s)
    }

    pub(crate) fn is_5xx(&self) -> bool {
        self.status.is_some_and(|s| (500..600).contains(&s))
    }

    /// Whether the credential can be refreshed (OAuth, cloud session).
    pub(crate) fn refreshable(&self) -> bool {
        self.credential.refreshable()
    }
}

/// Classifies one failed attempt.
///
/// ```
/// use keyward_core::classify::{classify, Attempt, Class, Provider, Scope};
///
/// let body = br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
/// let failure = classify(&Attempt::response(Provider::Anthropic, 401, body));
/// assert_eq!(failure.class, Class::AuthPermanent);
/// assert_eq!(failure.scope, Scope::Credential);
/// ```
pub fn classify(attempt: &Attempt<'_>) -> Failure {
    let prefix = &attempt.body[..attempt.body.len().min(MAX_EXAMINED)];
    let text: Cow<'_, str> = match std::str::from_utf8(prefix) {
        Ok(s) => Cow::Borrowed(s),
        // A cut in the middle of a character at the end of the prefix is not an error.
        Err(e) if e.error_len().is_none() => {
            Cow::Borrowed(std::str::from_utf8(&prefix[..e.valid_up_to()]).unwrap_or(""))
        }
        Err(_) => String::from_utf8_lossy(prefix),
    };
    let sig = Signals::read(&text);
    if let Some(t) = attempt.transport {
        // A stream that sent only keep-alives before it was cut or timed out never
        // produced content: that is a timeout, however long it stayed open.
        let rule = if matches!(t, TransportError::Timeout | TransportError::Reset)
            && sig.kind == body::BodyKind::Sse
            && sig.silent_stream()
        {
            generic::silent_stream()
        } else {
            generic::transport(t, attempt.phase)
        };
        return finish(attempt, None, &sig, rule, None, false);
    }

    // Structured fields are scanned now (they are short); the message only when a rule
    // first asks for a phrase, since structure usually decides without it.
    let mut codes = Cues::default();
    for field in [
        &sig.ty,
        &sig.code,
        &sig.gstatus,
        &sig.reason,
        &sig.aws_type,
        &sig.detail_code,
        &sig.error_str,
    ]
    .into_iter()
    .flatten()
    .filter(|f| is_code_like(f))
    {
        codes.scan(field);
    }

    let http_status = attempt.status;
    let mut status_from_text = false;
    let status = match http_status {
        Some(s) if s >= 400 => Some(s),
        _ => match sig.num_code.filter(|c| (400..600).contains(c)) {
            Some(c) => Some(c),
            None if http_status.is_none() => {
                let sniffed = generic::sniff_status(&text);
                status_from_text = sniffed.is_some();
                sniffed
            }
            None => None,
        },
    };

    let cx = Cx {
        provider: attempt.provider,
        credential: attempt.credential,
        phase: attempt.phase,
        status,
        http_status,
        sig: &sig,
        msg: OnceCell::new(),
        text: &text,
        codes,
        headers: attempt.headers,
    };

    let rule = if attempt.endpoint == EndpointKind::Token {
        providers::oauth_token::classify(&cx)
    } else {
        providers::classify(&cx)
    };
    let rule = demote_ambiguous_auth(&cx, rule);
    finish(attempt, Some(&cx), &sig, rule, status, status_from_text)
}

/// An auth message that names several causes at once ("missing, invalid, or expired")
/// does not say which property failed: never a high-confidence permanent verdict on its
/// own (a specific Google `ErrorInfo.reason` or RFC 6749 code still decides).
fn demote_ambiguous_auth(cx: &Cx<'_, '_>, rule: Rule) -> Rule {
    let specific = matches!(rule.kind, EvidenceKind::OAuthError)
        || rule.kind == EvidenceKind::GoogleReason && cx.sig.reason.is_some();
    if rule.class != Class::AuthPermanent
        || rule.confidence != Confidence::High
        || specific
        || !ambiguous_auth(cx.message())
    {
        return rule;
    }
    Rule {
        confidence: Confidence::Low,
        demoted: Some(
            "the message names several possible causes (missing, invalid or expired) and no structured field picks one; a probe decides",
        ),
        ..rule
    }
}

/// Whether an auth message hedges between causes: two or more of missing / invalid /
/// expired / revoked joined by "or" or a comma.
pub(crate) fn ambiguous_auth(msg: &str) -> bool {
    let words = [
        "missing",
        "invalid",
        "expired",
        "revoked",
        "not provided",
        "wrong",
    ];
    let n = words
        .iter()
        .filter(|w| body::find_ascii_ci(msg, w).is_some())
        .count();
    n >= 2 && (body::find_ascii_ci(msg, " or ").is_some() || msg.contains(", "))
}

/// A code-like field (`invalid_api_key`, `RESOURCE_EXHAUSTED`) rather than prose.
fn is_code_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && !s.contains(' ')
}

fn finish(
    attempt: &Attempt<'_>,
    cx: Option<&Cx<'_, '_>>,
    sig: &Signals<'_>,
    rule: Rule,
    status: Option<u16>,
    status_from_text: bool,
) -> Failure {
    let (retry_after, source) =
        match headers::retry_after_from_headers(attempt.headers, attempt.now) {
            Some((d, src)) => (Some(d), Some(src)),
            None => match sig.retry_delay {
                Some(d) => (Some(d), Some("RetryInfo.retryDelay")),
                None => {
                    let wants = matches!(
                        rule.class,
                        Class::RateLimit | Class::Overloaded | Class::ServerError
                    );
                    match cx
                        .map(|c| c.message())
                        .filter(|_| wants)
                        .and_then(headers::retry_after_from_text)
                    {
                        Some(d) => (Some(d), Some("message")),
                        None => (None, None),
                    }
                }
            },
        };
    let provider_code = [
        &sig.detail_code,
        &sig.code,
        &sig.ty,
        &sig.reason,
        &sig.aws_type,
    ]
    .into_iter()
    .flatten()
    .map(|c| c.as_ref())
    .chain(sig.error_str.as_deref().filter(|e| is_code_like(e)))
    .chain(sig.gstatus.as_deref())
    .find(|c| !c.is_empty() && *c != "error" && *c != "null")
    .map(|c| clean(c, 80));
    let evidence = Evidence {
        status: status.or(attempt.status),
        status_from_text,
        kind: rule.kind,
        value: clean(&rule.value, 120),
        retry_after_source: source,
    };
    let excerpt = cx
        .map(|c| c.message())
        .filter(|m| !m.is_empty())
        .or_else(|| {
            let t = sig.text.trim();
            (!t.is_empty() && sig.kind != body::BodyKind::Json).then_some(t)
        });
    let explanation = explain(
        attempt.provider,
        &rule,
        &evidence,
        sig.event.as_deref(),
        excerpt,
    );
    let read = fields_read(attempt, sig, &rule, status, status_from_text, source);
    Failure {
        class: rule.class,
        scope: rule.scope,
        confidence: rule.confidence,
        retry_after,
        evidence,
        provider_code,
        explanation,
        rule: rule_site(rule.site),
        read,
        why: why(&rule).to_owned(),
    }
}

/// `providers/openai.rs:140`: the rule's place in the classifier's source.
fn rule_site(site: &Location<'_>) -> String {
    let file = site.file().replace('\\', "/");
    let short = file
        .rsplit_once("classify/")
        .map_or(file.as_str(), |(_, rest)| rest);
    format!("{short}:{}", site.line())
}

/// The fields of the response the classifier read, masked and clipped.
fn fields_read(
    attempt: &Attempt<'_>,
    sig: &Signals<'_>,
    rule: &Rule,
    status: Option<u16>,
    status_from_text: bool,
    retry_source: Option<&'static str>,
) -> Vec<String> {
    let mut read = Vec::new();
    let mut push = |name: &str, value: &str| {
        let mut s = String::with_capacity(name.len() + value.len().min(80) + 1);
        s.push_str(name);
        s.push('=');
        redact::push_clean(&mut s, value, 80);
        read.push(s);
    };
    if let Some(t) = attempt.transport {
        push("transport", t.as_str());
        push(
            "phase",
            match attempt.phase {
                Phase::BeforeHeaders => "before_headers",
                Phase::Headers => "headers",
                Phase::MidStream => "mid_stream",
            },
        );
    }
    if let Some(s) = attempt.status {
        push("http_status", &s.to_string());
    }
    if let Some(s) = status.filter(|s| Some(*s) != attempt.status) {
        push(
            if status_from_text {
                "status_in_text"
            } else {
                "status_in_body"
            },
            &s.to_string(),
        );
    }
    if attempt.endpoint == EndpointKind::Token {
        push("endpoint", "token");
    }
    if let Some(e) = sig.event.as_deref() {
        push("sse_event", e);
    }
    let fields: [(&str, &Option<Cow<'_, str>>); 8] = [
        ("error.type", &sig.ty),
        ("error.code", &sig.code),
        ("error.status", &sig.gstatus),
        ("ErrorInfo.reason", &sig.reason),
        ("aws_error_type", &sig.aws_type),
        ("details.code", &sig.detail_code),
        ("error", &sig.error_str),
        ("finish_reason", &sig.finish),
    ];
    for (name, value) in fields {
        if let Some(v) = value.as_deref() {
            push(name, v);
        }
    }
    if let Some(h) = headers::header(attempt.headers, "x-amzn-errortype") {
        push("header.x-amzn-errortype", h);
    }
    if sig.quota_failure {
        push(
            "QuotaFailure",
            if sig.quota_zero { "limit 0" } else { "present" },
        );
    }
    if sig.upstream {
        push("metadata", "upstream provider");
    }
    if sig.flagged {
        push("metadata", "moderation");
    }
    if sig.kind == body::BodyKind::Sse {
        push(
            "stream",
            &format!(
                "{} events, {} with content",
                sig.sse_events, sig.sse_content_events
            ),
        );
    }
    if rule.kind == EvidenceKind::Phrase {
        push("phrase", &rule.value);
    }
    if let Some(src) = retry_source {
        push("retry_after_from", src);
    }
    read
}

/// Why the verdict has its confidence.
fn why(rule: &Rule) -> &'static str {
    if let Some(d) = rule.demoted {
        return d;
    }
    match (rule.confidence, rule.kind) {
        (Confidence::High, EvidenceKind::Transport) => {
            "a transport error: there is no response to misread"
        }
        (Confidence::High, EvidenceKind::Phrase | EvidenceKind::Status) => {
            "the status or message this provider documents for exactly this case"
        }
        (Confidence::High, _) => "a structured field this provider documents decided",
        (Confidence::Low, EvidenceKind::Status) => {
            "only the HTTP status: nothing is disabled on this alone (a probe or a retry decides)"
        }
        (Confidence::Low, EvidenceKind::Phrase) => {
            "only a phrase in free text: nothing is disabled on this alone (a probe decides)"
        }
        (Confidence::Low, _) => {
            "a structured field that does not say which property failed: nothing is disabled on this alone (a probe decides)"
        }
    }
}

/// `text` clipped to `max` characters, whitespace folded, secrets masked.
fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 4);
    redact::push_clean(&mut out, text, max);
    out
}

fn explain(
    provider: Provider,
    rule: &Rule,
    ev: &Evidence,
    in_band: Option<&str>,
    excerpt: Option<&str>,
) -> String {
    use std::fmt::Write;
    let what = rule
        .what
        .unwrap_or_else(|| default_what(rule.class, rule.scope));
    let mut s = String::with_capacity(200);
    let _ = write!(s, "{provider}: {what} (");
    if let Some(event) = in_band {
        s.push_str("in-band event `");
        redact::push_clean(&mut s, event, 40);
        s.push_str("`, ");
    }
    if let Some(st) = ev.status {
        let _ = write!(
            s,
            "{st}{} ",
            if ev.status_from_text {
                " read from text"
            } else {
                ""
            }
        );
    }
    let _ = write!(s, "{}={}", ev.kind.as_str(), ev.value);
    if let Some(x) = excerpt
        .map(str::trim)
        .filter(|x| !x.is_empty() && *x != ev.value)
    {
        s.push_str(", \"");
        redact::push_clean(&mut s, x, 140);
        s.push('"');
    }
    let _ = write!(
        s,
        "; {} confidence). {}",
        rule.confidence.as_str(),
        rule.remedy
            .unwrap_or_else(|| remedy(rule.class, rule.scope))
    );
    s
}

fn default_what(class: Class, scope: Scope) -> &'static str {
    match (class, scope) {
        (Class::AuthTransient, _) => "the access token or session credential has expired",
        (Class::AuthPermanent, Scope::QuotaBucket) => {
            "the organization or account behind this credential is disabled"
        }
        (Class::AuthPermanent, Scope::Endpoint) => {
            "the endpoint refuses this gateway (region, network or client configuration)"
        }
        (Class::AuthPermanent, _) => {
            "the credential was rejected as invalid, revoked or deactivated"
        }
        (Class::Billing, Scope::CredentialModel) => {
            "this model is not included in the account's plan"
        }
        (Class::Billing, _) => "credit or quota is exhausted",
        (Class::RateLimit, _) => "rate limited",
        (Class::Overloaded, _) => "the provider is out of capacity",
        (Class::Timeout, _) => "no response, or no progress, within the time limit",
        (Class::Network, _) => "the connection failed before a complete response",
        (Class::ServerError, _) => "the provider failed with a server error",
        (Class::BadRequest, Scope::Endpoint) => {
            "the target is misconfigured (path, API version, auth mode or a parameter it rejects)"
        }
        (Class::BadRequest, _) => "the request was rejected as invalid",
        (Class::ContextOverflow, _) => "the prompt exceeds the model's context window",
        (Class::ModelNotFound, Scope::ProviderModel) => "the model is retired or no longer served",
        (Class::ModelNotFound, _) => "the model is unknown or not enabled for this credential",
        (Class::ContentFilter, _) => "the provider's safety system refused the request or output",
    }
}

fn remedy(class: Class, scope: Scope) -> &'static str {
    match (class, scope) {
        (Class::AuthTransient, _) => {
            "Refresh the credential (where it can be refreshed) and retry once; if it fails again, the credential is suspected and probed."
        }
        (Class::AuthPermanent, Scope::QuotaBucket) => {
            "Every key of that organization is affected: contact the provider or move traffic to another account."
        }
        (Class::AuthPermanent, Scope::Endpoint) => {
            "Route through another region or endpoint, or fix the client configuration; the key itself may be fine."
        }
        (Class::AuthPermanent, _) => {
            "Replace the secret in keyward.toml (or log in again for OAuth); a probe confirms before the key is disabled."
        }
        (Class::Billing, _) => {
            "Add credit, raise the spend limit or upgrade the plan at the provider; Keyward re-probes and resumes when it works."
        }
        (Class::RateLimit, _) => {
            "Wait for the reset, spread load over more keys, or raise the limit with the provider."
        }
        (Class::Overloaded, _) => "Transient: fail over to another target and retry shortly.",
        (Class::Timeout, _) => {
            "Fail over; if it repeats for a slow model, raise that route's timeouts."
        }
        (Class::Network, _) => {
            "Check connectivity (DNS, TLS, proxy) to the endpoint; Keyward retries or fails over."
        }
        (Class::ServerError, _) => "Transient: retry once, then fail over.",
        (Class::BadRequest, Scope::Endpoint) => {
            "Fix this target's configuration in keyward.toml; other targets keep serving."
        }
        (Class::BadRequest, _) => "Fix the request; sending it again unchanged fails the same way.",
        (Class::ContextOverflow, _) => {
            "Shorten the conversation or route to a larger-context model."
        }
        (Class::ModelNotFound, _) => {
            "Use an available model or enable access for this account; configured fallbacks serve meanwhile."
        }
        (Class::ContentFilter, _) => {
            "Change the prompt; the request is not retried elsewhere."
        }
    }
}
