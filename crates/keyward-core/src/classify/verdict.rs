//! The vocabulary of a verdict: what failed ([`Class`]), what it touches ([`Scope`]),
//! how sure we are ([`Confidence`]) and what decided it ([`Evidence`]).

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// What kind of failure one upstream attempt had. Exactly one per attempt.
///
/// The class decides the *action* (retry, refresh, fail over, return); the [`Scope`]
/// decides which health record the failure touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// A refreshable credential is not valid right now (expired OAuth access token, expired
    /// cloud session token, stale request signature). Refresh once and retry.
    AuthTransient,
    /// The credential is revoked, deleted, invalid or deactivated, a refresh token was
    /// rejected, or an org/region block applies. Fail over, confirm with a probe, disable.
    AuthPermanent,
    /// Credit or quota exhausted, spend limit reached, payment required, entitlement gate.
    Billing,
    /// A per-key or per-bucket rate limit. Cool until it resets.
    RateLimit,
    /// The provider is out of capacity (not your quota). Fail over; short cooldown.
    Overloaded,
    /// No headers, no first content, or a stalled stream within the limits.
    Timeout,
    /// Connect refused, reset, TLS or DNS failure before a response.
    Network,
    /// A 5xx that is none of the above.
    ServerError,
    /// The request is wrong: the caller's (scope `request`) or the target's own
    /// misconfiguration (scope `endpoint`).
    BadRequest,
    /// The prompt does not fit this model's context window.
    ContextOverflow,
    /// The model is unknown, retired, or not enabled for this credential.
    ModelNotFound,
    /// The provider's safety system refused the request or the output.
    ContentFilter,
}

impl Class {
    /// Every class, in declaration order.
    pub const ALL: [Class; 12] = [
        Class::AuthTransient,
        Class::AuthPermanent,
        Class::Billing,
        Class::RateLimit,
        Class::Overloaded,
        Class::Timeout,
        Class::Network,
        Class::ServerError,
        Class::BadRequest,
        Class::ContextOverflow,
        Class::ModelNotFound,
        Class::ContentFilter,
    ];

    /// A passing condition of the provider or the path to it (overload, server error,
    /// timeout, network, rate limit): worth a retry later, the classes that cool.
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            Class::Overloaded
                | Class::ServerError
                | Class::Timeout
                | Class::Network
                | Class::RateLimit
        )
    }

    /// The stable snake_case name used in config, logs, metrics and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Class::AuthTransient => "auth_transient",
            Class::AuthPermanent => "auth_permanent",
            Class::Billing => "billing",
            Class::RateLimit => "rate_limit",
            Class::Overloaded => "overloaded",
            Class::Timeout => "timeout",
            Class::Network => "network",
            Class::ServerError => "server_error",
            Class::BadRequest => "bad_request",
            Class::ContextOverflow => "context_overflow",
            Class::ModelNotFound => "model_not_found",
            Class::ContentFilter => "content_filter",
        }
    }

    /// Parses [`Class::as_str`] names.
    pub fn parse(name: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether the default action may send the same request with the same credential again
    /// (after a wait or a refresh). `auth_permanent` and `billing` must never be in this set.
    pub const fn retries_same_credential(self) -> bool {
        matches!(
            self,
            Class::AuthTransient
                | Class::RateLimit
                | Class::Overloaded
                | Class::Timeout
                | Class::Network
                | Class::ServerError
        )
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Class {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which health record a failure touches. The effect follows the scope, not the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The caller's own request is at fault; no health record changes.
    Request,
    /// This credential for this model only (a per-model rate limit, model access).
    CredentialModel,
    /// This credential for everything.
    Credential,
    /// Every credential that shares the quota bucket (org, project, workspace).
    QuotaBucket,
    /// This model at this provider, for every credential (capacity, retirement).
    ProviderModel,
    /// The endpoint itself: its URL, region, path or the gateway's configuration of it.
    Endpoint,
}

impl Scope {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Request => "request",
            Scope::CredentialModel => "credential_model",
            Scope::Credential => "credential",
            Scope::QuotaBucket => "quota_bucket",
            Scope::ProviderModel => "provider_model",
            Scope::Endpoint => "endpoint",
        }
    }
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 6] = [
        Scope::Request,
        Scope::CredentialModel,
        Scope::Credential,
        Scope::QuotaBucket,
        Scope::ProviderModel,
        Scope::Endpoint,
    ];

    /// Parses [`Scope::as_str`] names.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Scope::parse(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown scope {name:?}; use one of request, credential_model, credential, quota_bucket, provider_model, endpoint"
            ))
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How the verdict was reached. Low confidence never disables anything by itself: it
/// makes the scope suspect and asks for a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Confidence {
    /// Only a bare status, a phrase in free text, or a status read out of a message.
    Low,
    /// Structured evidence decided: a status with a provider's error type or code, a
    /// Google `ErrorInfo.reason`, an AWS error type header, an RFC 6749 error code.
    High,
}

impl Confidence {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::High => "high",
        }
    }
}

impl Serialize for Confidence {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What kind of signal decided a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvidenceKind {
    /// A transport error before any response.
    Transport,
    /// The provider's error `type` field.
    ErrorType,
    /// The provider's error `code` field (string or number).
    ErrorCode,
    /// A Google `google.rpc.ErrorInfo.reason` or the `error.status` enum.
    GoogleReason,
    /// An AWS error type (`x-amzn-errortype` header or `__type` field).
    AwsErrorType,
    /// An RFC 6749 §5.2 `error` code from a token endpoint.
    OAuthError,
    /// A structured field other than the above (content-filter finish reason, details code,
    /// quota violation, upstream provider metadata).
    Field,
    /// A phrase in the message text.
    Phrase,
    /// Nothing but the HTTP status.
    Status,
}

impl EvidenceKind {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Transport => "transport",
            EvidenceKind::ErrorType => "error_type",
            EvidenceKind::ErrorCode => "error_code",
            EvidenceKind::GoogleReason => "google_reason",
            EvidenceKind::AwsErrorType => "aws_error_type",
            EvidenceKind::OAuthError => "oauth_error",
            EvidenceKind::Field => "field",
            EvidenceKind::Phrase => "phrase",
            EvidenceKind::Status => "status",
        }
    }
}

impl Serialize for EvidenceKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The evidence a verdict rests on. Values are masked: they never carry a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The HTTP status of the attempt (or one read out of a message), if any.
    pub status: Option<u16>,
    /// Whether `status` was read out of free text rather than given.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub status_from_text: bool,
    /// The kind of signal that decided.
    pub kind: EvidenceKind,
    /// The signal itself: the type/code value, the header, or the phrase that matched.
    pub value: String,
    /// Where a retry-after came from (header name, `RetryInfo`, or message text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_source: Option<&'static str>,
}

/// The classifier's verdict on one failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What failed.
    pub class: Class,
    /// What the failure touches.
    pub scope: Scope,
    /// How the verdict was reached.
    pub confidence: Confidence,
    /// When the provider (or its message) says a retry may succeed, measured from the
    /// attempt's `now`.
    #[serde(rename = "retry_after_ms", serialize_with = "ser_ms")]
    pub retry_after: Option<Duration>,
    /// The signal that decided, with the status.
    pub evidence: Evidence,
    /// The provider's own error code or type, when it sent one (masked).
    pub provider_code: Option<String>,
    /// One line for a person: what happened, the evidence, and what to do (masked).
    pub explanation: String,
    /// Which rule decided: the classifier source file and line of the rule, e.g.
    /// `providers/openai.rs:140`, so an operator who disagrees can find it.
    pub rule: String,
    /// The fields of the response the classifier read, in the order it weighs them
    /// (`status=429`, `error.type=rate_limit_error`, `ErrorInfo.reason=…`, `phrase="…"`);
    /// values are masked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<String>,
    /// Why the verdict has its confidence: what kind of signal decided, and what would
    /// have made it surer (a low-confidence verdict never disables anything by itself).
    pub why: String,
}

fn ser_ms<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}
