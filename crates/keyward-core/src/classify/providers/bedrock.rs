//! AWS Bedrock (InvokeModel, Converse, streaming, and the OpenAI-compatible "mantle"
//! endpoint). The error type travels in the `x-amzn-errortype` header
//! (`ThrottlingException:http://internal.amazon.com/…`) or a JSON `__type`; the body is
//! `{"message": …}` (or `{"Message": …}`). Documented types: `AccessDeniedException` (403),
//! `UnrecognizedClientException`, `InvalidSignatureException`, `ExpiredTokenException`,
//! `ThrottlingException` (429), `ServiceQuotaExceededException`, `ModelNotReadyException`,
//! `ServiceUnavailableException` (503), `InternalServerException` (500),
//! `ModelTimeoutException` (408), `ModelErrorException` (424),
//! `ModelStreamErrorException`, `ResourceNotFoundException` (404), `ValidationException`
//! (400, which also carries account restrictions and wrapped Anthropic errors).

use super::super::cues::Cue;
use super::super::headers::header;
use super::super::{Class, Confidence, Cx, EvidenceKind, Rule, Scope};
use super::openai;

/// The AWS error type, without namespace or the header's `:http://…` suffix.
fn aws_type<'s>(cx: &'s Cx<'_, '_>) -> Option<&'s str> {
    let raw = header(cx.headers, "x-amzn-errortype").or(cx.sig.aws_type.as_deref())?;
    let t = raw.split(':').next().unwrap_or(raw);
    let t = t.rsplit('#').next().unwrap_or(t).trim();
    // Event streams name exceptions in lower camel case (`throttlingException`).
    Some(t)
}

#[track_caller]
fn typed(t: &str, class: Class, scope: Scope) -> Rule {
    Rule::high(class, scope, EvidenceKind::AwsErrorType, t.to_owned())
}

#[track_caller]
fn typed_cue(cx: &Cx<'_, '_>, t: &str, cue: Cue, class: Class, scope: Scope) -> Rule {
    Rule::high(
        class,
        scope,
        EvidenceKind::AwsErrorType,
        format!("{t} + \"{}\"", cx.msg().phrase(cue)),
    )
}

#[allow(clippy::too_many_lines)] // a table: one arm per documented error shape, in the order they are checked
pub(crate) fn classify(cx: &Cx<'_, '_>) -> Option<Rule> {
    let Some(t) = aws_type(cx) else {
        // The mantle endpoint speaks the OpenAI envelope.
        return openai::family(cx);
    };
    let mut upper = t.to_owned();
    if let Some(first) = upper.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    let t = upper.as_str();
    let r = match t {
        "AccessDeniedException" => {
            if cx.cue(Cue::CloudBilling) {
                // "Model access is denied due to INVALID_PAYMENT_INSTRUMENT: A valid payment
                // instrument must be provided", "Your AWS Marketplace subscription for this
                // model cannot be completed": the account's billing, not the key.
                typed_cue(cx, t, Cue::CloudBilling, Class::Billing, Scope::QuotaBucket)
                    .what("the AWS account's payment instrument or Marketplace subscription blocks this model")
            } else if cx.cue(Cue::ModelAccess) || cx.cue(Cue::ModelMissing) {
                let c = if cx.cue(Cue::ModelAccess) {
                    Cue::ModelAccess
                } else {
                    Cue::ModelMissing
                };
                typed_cue(cx, t, c, Class::ModelNotFound, Scope::CredentialModel)
                    .what("this account has no access to this model in this region")
            } else if cx.cue(Cue::BillingStrong)
                || cx.message().contains("INVALID_PAYMENT_INSTRUMENT")
            {
                typed(t, Class::Billing, Scope::QuotaBucket)
            } else if cx.cue(Cue::InvalidKey) || cx.cue(Cue::AuthGeneric) {
                let c = if cx.cue(Cue::InvalidKey) {
                    Cue::InvalidKey
                } else {
                    Cue::AuthGeneric
                };
                typed_cue(cx, t, c, Class::AuthPermanent, Scope::Credential)
            } else {
                Rule {
                    confidence: Confidence::Low,
                    ..typed(t, Class::AuthPermanent, Scope::Credential)
                }
                .what("access denied (IAM policy or account restriction)")
            }
        }
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "IncompleteSignatureException"
        | "MissingAuthenticationTokenException"
        | "MissingAuthenticationToken" => typed(t, Class::AuthPermanent, Scope::Credential),
        "InvalidSignatureException" | "SignatureDoesNotMatch" => {
            if cx.cue(Cue::ExpiredToken) {
                typed_cue(cx, t, Cue::ExpiredToken, Class::AuthTransient, Scope::Credential)
                    .what("the request signature expired (clock skew or a request signed long ago): re-sign and retry")
            } else {
                typed(t, Class::AuthPermanent, Scope::Credential)
                    .what("the request signature does not match: the secret key is wrong")
            }
        }
        "ExpiredTokenException" | "ExpiredToken" | "TokenRefreshRequired" => {
            typed(t, Class::AuthTransient, Scope::Credential)
        }
        "ThrottlingException" | "TooManyRequestsException" => {
            if cx.cue(Cue::BillingStrong) {
                typed_cue(
                    cx,
                    t,
                    Cue::BillingStrong,
                    Class::Billing,
                    Scope::QuotaBucket,
                )
            } else if cx.cue(Cue::Overloaded) {
                typed_cue(
                    cx,
                    t,
                    Cue::Overloaded,
                    Class::Overloaded,
                    Scope::ProviderModel,
                )
            } else {
                typed(t, Class::RateLimit, Scope::CredentialModel)
            }
        }
        "ServiceQuotaExceededException" => typed(t, Class::RateLimit, Scope::CredentialModel),
        "ModelNotReadyException" => typed(t, Class::Overloaded, Scope::ProviderModel),
        "ServiceUnavailableException" | "ServiceUnavailable" => {
            typed(t, Class::Overloaded, Scope::ProviderModel)
        }
        "InternalServerException" | "InternalFailure" => {
            typed(t, Class::ServerError, Scope::ProviderModel)
        }
        "ModelTimeoutException" | "RequestTimeout" => {
            typed(t, Class::Timeout, Scope::ProviderModel)
        }
        "ModelErrorException" => typed(t, Class::ServerError, Scope::ProviderModel),
        "ModelStreamErrorException" => {
            if cx.cue(Cue::ContextOverflow) {
                typed_cue(
                    cx,
                    t,
                    Cue::ContextOverflow,
                    Class::ContextOverflow,
                    Scope::Request,
                )
            } else {
                typed(t, Class::ServerError, Scope::ProviderModel)
            }
        }
        "ResourceNotFoundException" => typed(t, Class::ModelNotFound, Scope::CredentialModel),
        "ValidationException" => {
            if cx.cue(Cue::EndpointConfig) {
                typed_cue(
                    cx,
                    t,
                    Cue::EndpointConfig,
                    Class::BadRequest,
                    Scope::Endpoint,
                )
                .what("this target must call the model through an inference profile or another ID")
            } else if cx.cue(Cue::MaxTokensParam) {
                typed_cue(
                    cx,
                    t,
                    Cue::MaxTokensParam,
                    Class::BadRequest,
                    Scope::Request,
                )
            } else if cx.cue(Cue::ContextOverflow) {
                typed_cue(
                    cx,
                    t,
                    Cue::ContextOverflow,
                    Class::ContextOverflow,
                    Scope::Request,
                )
            } else if cx.model_missing() || cx.cue(Cue::ModelRetired) || cx.cue(Cue::ModelAccess) {
                let c = if cx.model_missing() {
                    Cue::ModelMissing
                } else if cx.cue(Cue::ModelRetired) {
                    Cue::ModelRetired
                } else {
                    Cue::ModelAccess
                };
                typed_cue(cx, t, c, Class::ModelNotFound, Scope::CredentialModel)
            } else if cx.cue(Cue::Permission) {
                // "Operation not allowed": an account-level restriction, not a bad request.
                Rule {
                    confidence: Confidence::Low,
                    ..typed_cue(
                        cx,
                        t,
                        Cue::Permission,
                        Class::AuthPermanent,
                        Scope::QuotaBucket,
                    )
                }
                .what("the account is restricted from this operation")
            } else if cx.cue(Cue::ContentFilter) {
                typed_cue(
                    cx,
                    t,
                    Cue::ContentFilter,
                    Class::ContentFilter,
                    Scope::Request,
                )
            } else {
                typed(t, Class::BadRequest, Scope::Request)
            }
        }
        "ConflictException" | "SerializationException" => {
            typed(t, Class::BadRequest, Scope::Request)
        }
        _ => return None,
    };
    Some(r)
}
