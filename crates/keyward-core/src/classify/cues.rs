//! Phrases as evidence of last resort.
//!
//! Every phrase any rule may look for is compiled once into one Aho–Corasick automaton
//! (ASCII case-insensitive); one linear pass over a message yields a [`Cues`] bitset and
//! the first phrase that raised each cue (for the evidence line). The cost does not grow
//! with the number of phrases, and a message is scanned once however many rules ask.
//!
//! Phrases are grouped by meaning ([`Cue`]), not by provider: providers reuse each other's
//! wording, and the held-out catalogue rewards generalising over memorising.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

/// A meaning that one or more phrases signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Cue {
    ContextOverflow,
    MaxTokensParam,
    ContentFilter,
    RequestTooLarge,
    BillingStrong,
    BillingWeak,
    PlanGate,
    ExpiredToken,
    InvalidKey,
    MissingKey,
    Revoked,
    OrgDisabled,
    RefreshDead,
    AuthGeneric,
    Permission,
    RegionBlock,
    OAuthUnsupported,
    OrgPolicy,
    ModelMissing,
    ModelRetired,
    ModelAccess,
    RateLimit,
    QuotaWord,
    LongWindow,
    SharedCapacity,
    Overloaded,
    Timeout,
    Network,
    StreamCut,
    ServerError,
    EndpointConfig,
    BadRequest,
    Unavailable,
    ResetHint,
    PaymentRequired,
    BadParam,
    NotFound,
}

const N_CUES: usize = Cue::NotFound as usize + 1;

/// The phrase table. Lower case; matching ignores ASCII case.
const PHRASES: &[(&str, Cue)] = &[
    // --- context overflow
    ("context length", Cue::ContextOverflow),
    ("context_length", Cue::ContextOverflow),
    ("context window", Cue::ContextOverflow),
    ("context_window", Cue::ContextOverflow),
    ("context size", Cue::ContextOverflow),
    ("context limit", Cue::ContextOverflow),
    ("context budget", Cue::ContextOverflow),
    ("maximum context", Cue::ContextOverflow),
    ("context overflow", Cue::ContextOverflow),
    ("exceed_context", Cue::ContextOverflow),
    ("prompt is too long", Cue::ContextOverflow),
    ("prompt too long", Cue::ContextOverflow),
    ("input is too long", Cue::ContextOverflow),
    ("input too long", Cue::ContextOverflow),
    ("maximum prompt length", Cue::ContextOverflow),
    ("max_prompt_tokens", Cue::ContextOverflow),
    ("prompt token count", Cue::ContextOverflow),
    ("input token count", Cue::ContextOverflow),
    ("maximum number of tokens", Cue::ContextOverflow),
    ("maximum number of input tokens", Cue::ContextOverflow),
    ("total number of tokens", Cue::ContextOverflow),
    ("model token limit", Cue::ContextOverflow),
    ("tokens exceeds the model", Cue::ContextOverflow),
    ("exceeds the model limit", Cue::ContextOverflow),
    ("exceeds the model's maximum", Cue::ContextOverflow),
    ("reduce the length of the messages", Cue::ContextOverflow),
    ("ran out of room", Cue::ContextOverflow),
    ("must have less than", Cue::ContextOverflow),
    ("input length", Cue::ContextOverflow),
    ("上下文", Cue::ContextOverflow),
    // --- output-token cap (a request error, not overflow)
    ("maximum tokens you requested", Cue::MaxTokensParam),
    ("max_tokens is too large", Cue::MaxTokensParam),
    ("max_tokens: ", Cue::MaxTokensParam),
    // --- content filter
    ("content_filter", Cue::ContentFilter),
    ("content filter", Cue::ContentFilter),
    ("content management policy", Cue::ContentFilter),
    ("content_policy", Cue::ContentFilter),
    ("content policy", Cue::ContentFilter),
    ("responsibleaipolicyviolation", Cue::ContentFilter),
    ("usage guidelines", Cue::ContentFilter),
    ("violating our usage policy", Cue::ContentFilter),
    ("violation of our usage", Cue::ContentFilter),
    ("flagged as potentially", Cue::ContentFilter),
    ("input was flagged", Cue::ContentFilter),
    ("output was flagged", Cue::ContentFilter),
    ("was flagged by", Cue::ContentFilter),
    ("filtered by responsible ai", Cue::ContentFilter),
    ("safety system", Cue::ContentFilter),
    ("blocked output", Cue::ContentFilter),
    ("blocked input", Cue::ContentFilter),
    ("prohibited content", Cue::ContentFilter),
    ("invalid_prompt", Cue::ContentFilter),
    ("moderation", Cue::ContentFilter),
    // --- request too large
    ("request too large", Cue::RequestTooLarge),
    ("request entity too large", Cue::RequestTooLarge),
    ("payload too large", Cue::RequestTooLarge),
    ("payload size exceeds", Cue::RequestTooLarge),
    ("request_too_large", Cue::RequestTooLarge),
    ("request exceeds the maximum size", Cue::RequestTooLarge),
    ("request size exceeds", Cue::RequestTooLarge),
    // --- billing
    ("credit balance", Cue::BillingStrong),
    ("insufficient credit", Cue::BillingStrong),
    ("insufficient_credit", Cue::BillingStrong),
    ("insufficient balance", Cue::BillingStrong),
    ("insufficient_balance", Cue::BillingStrong),
    ("insufficient account balance", Cue::BillingStrong),
    ("insufficient quota", Cue::BillingStrong),
    ("insufficient_quota", Cue::BillingStrong),
    ("insufficient funds", Cue::BillingStrong),
    ("balance is too low", Cue::BillingStrong),
    ("balance too low", Cue::BillingStrong),
    ("no available balance", Cue::BillingStrong),
    ("mbt balance", Cue::BillingStrong),
    ("diem balance", Cue::BillingStrong),
    ("payment required", Cue::PaymentRequired),
    ("payment_required", Cue::PaymentRequired),
    ("any credits", Cue::BillingStrong),
    ("credits or licenses", Cue::BillingStrong),
    ("spend limit", Cue::BillingStrong),
    ("spending limit", Cue::BillingStrong),
    ("spend_limit", Cue::BillingStrong),
    ("billing hard limit", Cue::BillingStrong),
    ("billing_hard_limit", Cue::BillingStrong),
    ("billing_not_active", Cue::BillingStrong),
    ("billing_error", Cue::BillingStrong),
    ("issue with your account's billing", Cue::BillingStrong),
    ("out of credits", Cue::BillingStrong),
    ("run out of credits", Cue::BillingStrong),
    ("all available credits", Cue::BillingStrong),
    ("no credits", Cue::BillingStrong),
    ("credits are depleted", Cue::BillingStrong),
    ("credits remaining", Cue::BillingStrong),
    ("credit_balance", Cue::BillingStrong),
    ("more credits", Cue::BillingStrong),
    ("purchase credits", Cue::BillingStrong),
    ("add credits", Cue::BillingStrong),
    ("credit limit", Cue::BillingStrong),
    ("top up", Cue::BillingStrong),
    ("recharge", Cue::BillingStrong),
    ("extra usage", Cue::BillingStrong),
    ("api usage limits", Cue::BillingStrong),
    ("regain access on", Cue::BillingStrong),
    ("out of budget", Cue::BillingStrong),
    ("quota is exhausted", Cue::BillingStrong),
    ("quota exhausted", Cue::BillingStrong),
    ("free usage is exhausted", Cue::BillingStrong),
    ("usage is unavailable for this account", Cue::BillingStrong),
    ("used up your points", Cue::BillingStrong),
    ("key limit exceeded", Cue::BillingStrong),
    ("budget limit", Cue::BillingStrong),
    ("prepaid", Cue::BillingStrong),
    ("account_balance", Cue::BillingStrong),
    ("余额不足", Cue::BillingStrong),
    ("欠费", Cue::BillingStrong),
    ("billing", Cue::BillingWeak),
    ("payment method", Cue::BillingWeak),
    ("upgrade your plan", Cue::BillingWeak),
    ("upgrade to", Cue::BillingWeak),
    ("purchase", Cue::BillingWeak),
    ("subscription", Cue::BillingWeak),
    ("credits", Cue::BillingWeak),
    ("limit exhausted", Cue::QuotaWord),
    ("not available in your current plan", Cue::PlanGate),
    ("not on plan", Cue::PlanGate),
    ("does not yet include access", Cue::PlanGate),
    ("valid codingplan subscription", Cue::PlanGate),
    ("valid coding plan subscription", Cue::PlanGate),
    ("subscription has expired", Cue::PlanGate),
    ("no available asset for api access", Cue::PlanGate),
    ("need a grok subscription", Cue::PlanGate),
    ("plans & billing", Cue::PlanGate),
    // --- auth
    ("token has expired", Cue::ExpiredToken),
    ("token is expired", Cue::ExpiredToken),
    ("token expired", Cue::ExpiredToken),
    ("token_expired", Cue::ExpiredToken),
    ("expired token", Cue::ExpiredToken),
    ("expired_token", Cue::ExpiredToken),
    ("access_token_expired", Cue::ExpiredToken),
    ("included in the request is expired", Cue::ExpiredToken),
    ("signature expired", Cue::ExpiredToken),
    ("session expired", Cue::ExpiredToken),
    ("session has expired", Cue::ExpiredToken),
    ("invalid api key", Cue::InvalidKey),
    ("invalid api-key", Cue::InvalidKey),
    ("invalid_api_key", Cue::InvalidKey),
    ("invalid x-api-key", Cue::InvalidKey),
    ("incorrect api key", Cue::InvalidKey),
    ("api key not valid", Cue::InvalidKey),
    ("api key is invalid", Cue::InvalidKey),
    ("api key you provided is invalid", Cue::InvalidKey),
    ("api_key_invalid", Cue::InvalidKey),
    ("api key not found", Cue::InvalidKey),
    ("api key expired", Cue::InvalidKey),
    ("invalid key", Cue::InvalidKey),
    ("key is invalid", Cue::InvalidKey),
    ("invalid subscription key", Cue::InvalidKey),
    ("invalid api token", Cue::InvalidKey),
    ("invalid token", Cue::InvalidKey),
    ("invalid bearer token", Cue::InvalidKey),
    ("invalid authentication", Cue::InvalidKey),
    ("invalid credentials", Cue::InvalidKey),
    ("invalid api endpoint or credentials", Cue::InvalidKey),
    ("bad credentials", Cue::InvalidKey),
    (
        "security token included in the request is invalid",
        Cue::InvalidKey,
    ),
    ("signature we calculated does not match", Cue::InvalidKey),
    ("密钥无效", Cue::InvalidKey),
    ("no api key", Cue::MissingKey),
    ("api key is required", Cue::MissingKey),
    ("header is required", Cue::MissingKey),
    ("missing api key", Cue::MissingKey),
    ("missing authentication", Cue::MissingKey),
    ("missing bearer", Cue::MissingKey),
    ("no auth credentials", Cue::MissingKey),
    ("no credentials found", Cue::MissingKey),
    ("didn't provide an api key", Cue::MissingKey),
    ("did not provide an api key", Cue::MissingKey),
    ("authentication required", Cue::MissingKey),
    ("credentials_missing", Cue::MissingKey),
    ("revoked", Cue::Revoked),
    ("api_key_deleted", Cue::Revoked),
    ("key has been deleted", Cue::Revoked),
    ("key was deleted", Cue::Revoked),
    ("key has been disabled", Cue::Revoked),
    ("key is disabled", Cue::Revoked),
    ("api key deactivated", Cue::Revoked),
    ("key has been deactivated", Cue::Revoked),
    ("reported as leaked", Cue::Revoked),
    ("has been suspended", Cue::Revoked),
    ("been banned", Cue::Revoked),
    ("access was terminated", Cue::OrgDisabled),
    ("access_terminated", Cue::OrgDisabled),
    ("organization has been disabled", Cue::OrgDisabled),
    ("organization is disabled", Cue::OrgDisabled),
    ("account has been disabled", Cue::OrgDisabled),
    ("account has been deactivated", Cue::OrgDisabled),
    ("deactivated account", Cue::OrgDisabled),
    ("account_deactivated", Cue::OrgDisabled),
    ("deactivated workspace", Cue::OrgDisabled),
    ("deactivated_workspace", Cue::OrgDisabled),
    ("account is suspended", Cue::OrgDisabled),
    ("member of an organization", Cue::OrgDisabled),
    ("no_organization", Cue::OrgDisabled),
    ("organization has been restricted", Cue::OrgDisabled),
    ("organization_restricted", Cue::OrgDisabled),
    ("consumer_suspended", Cue::OrgDisabled),
    ("invalid_grant", Cue::RefreshDead),
    ("refresh token", Cue::RefreshDead),
    ("refresh_token", Cue::RefreshDead),
    ("sign in again", Cue::RefreshDead),
    ("signing in again", Cue::RefreshDead),
    ("log in again", Cue::RefreshDead),
    ("login again", Cue::RefreshDead),
    ("log out and sign in", Cue::RefreshDead),
    ("re-authenticate", Cue::RefreshDead),
    ("reauthenticate", Cue::RefreshDead),
    ("not logged in", Cue::RefreshDead),
    ("could not be refreshed", Cue::RefreshDead),
    ("unauthorized", Cue::AuthGeneric),
    ("unauthenticated", Cue::AuthGeneric),
    ("authentication failed", Cue::AuthGeneric),
    ("authentication fails", Cue::AuthGeneric),
    ("authentication_error", Cue::AuthGeneric),
    ("failed to authenticate", Cue::AuthGeneric),
    ("could not authenticate", Cue::AuthGeneric),
    ("could not validate", Cue::AuthGeneric),
    ("invalid authentication credentials", Cue::AuthGeneric),
    ("认证失败", Cue::AuthGeneric),
    ("鉴权失败", Cue::AuthGeneric),
    ("permission denied", Cue::Permission),
    ("permission_denied", Cue::Permission),
    ("permission_error", Cue::Permission),
    ("does not have permission", Cue::Permission),
    ("insufficient permissions", Cue::Permission),
    ("insufficient_permissions", Cue::Permission),
    ("missing scopes", Cue::Permission),
    ("forbidden", Cue::Permission),
    ("access denied", Cue::Permission),
    ("not authorized", Cue::Permission),
    ("not accessible by integration", Cue::Permission),
    ("no access to", Cue::Permission),
    ("operation not allowed", Cue::Permission),
    ("无权", Cue::Permission),
    ("country, region, or territory", Cue::RegionBlock),
    ("unsupported_country", Cue::RegionBlock),
    ("user location is not supported", Cue::RegionBlock),
    ("not available in your region", Cue::RegionBlock),
    ("not available in your country", Cue::RegionBlock),
    (
        "oauth authentication is currently not supported",
        Cue::OAuthUnsupported,
    ),
    (
        "only authorized for use with claude code",
        Cue::OAuthUnsupported,
    ),
    (
        "oauth authentication is currently not allowed",
        Cue::OrgPolicy,
    ),
    // --- model
    ("model not found", Cue::ModelMissing),
    ("model_not_found", Cue::ModelMissing),
    ("unknown model", Cue::ModelMissing),
    ("invalid model", Cue::ModelMissing),
    ("no such model", Cue::ModelMissing),
    ("model does not exist", Cue::ModelMissing),
    ("does not exist", Cue::ModelMissing),
    ("is not found for api version", Cue::ModelMissing),
    ("not supported for generatecontent", Cue::ModelMissing),
    ("deploymentnotfound", Cue::ModelMissing),
    (
        "deployment for this resource does not exist",
        Cue::ModelMissing,
    ),
    ("model identifier is invalid", Cue::ModelMissing),
    ("publisher model", Cue::ModelMissing),
    ("no endpoints found", Cue::ModelMissing),
    ("try pulling it first", Cue::ModelMissing),
    ("param incorrect", Cue::ModelMissing),
    ("not a valid model", Cue::ModelMissing),
    ("model is not supported", Cue::ModelMissing),
    ("decommissioned", Cue::ModelRetired),
    ("model_decommissioned", Cue::ModelRetired),
    ("was retired", Cue::ModelRetired),
    ("been retired", Cue::ModelRetired),
    ("has been deprecated", Cue::ModelRetired),
    ("model_is_deactivated", Cue::ModelRetired),
    ("model has been deactivated", Cue::ModelRetired),
    ("no longer supported", Cue::ModelRetired),
    ("no longer available", Cue::ModelRetired),
    ("access to the model", Cue::ModelAccess),
    ("access to model", Cue::ModelAccess),
    ("not have access to it", Cue::ModelAccess),
    ("model access", Cue::ModelAccess),
    ("无权访问该模型", Cue::ModelAccess),
    // --- rate limits and quotas
    ("rate limit", Cue::RateLimit),
    ("rate_limit", Cue::RateLimit),
    ("ratelimit", Cue::RateLimit),
    ("rate-limit", Cue::RateLimit),
    ("rate exceeded", Cue::RateLimit),
    ("too many requests", Cue::RateLimit),
    ("too_many_requests", Cue::RateLimit),
    ("throttl", Cue::RateLimit),
    ("requests per min", Cue::RateLimit),
    ("tokens per min", Cue::RateLimit),
    ("per minute", Cue::RateLimit),
    ("tokens per day", Cue::RateLimit),
    ("requests per day", Cue::RateLimit),
    ("too many concurrent", Cue::RateLimit),
    ("concurrency limit", Cue::RateLimit),
    ("please wait before trying again", Cue::RateLimit),
    ("slow down", Cue::RateLimit),
    ("request limit", Cue::RateLimit),
    ("cooling down", Cue::RateLimit),
    ("请求过于频繁", Cue::RateLimit),
    ("频率", Cue::RateLimit),
    ("quota exceeded", Cue::QuotaWord),
    ("quota_exceeded", Cue::QuotaWord),
    ("exceeded your current quota", Cue::QuotaWord),
    ("quota limit", Cue::QuotaWord),
    ("allocated quota", Cue::QuotaWord),
    ("resource exhausted", Cue::QuotaWord),
    ("resource_exhausted", Cue::QuotaWord),
    ("resource has been exhausted", Cue::QuotaWord),
    ("resourceexhausted", Cue::QuotaWord),
    ("usage limit", Cue::QuotaWord),
    ("limit reached", Cue::QuotaWord),
    ("limit exceeded", Cue::QuotaWord),
    ("exceeded limit", Cue::QuotaWord),
    ("额度已用尽", Cue::QuotaWord),
    ("配额已用尽", Cue::QuotaWord),
    ("daily", Cue::LongWindow),
    ("per day", Cue::LongWindow),
    ("weekly", Cue::LongWindow),
    ("monthly", Cue::LongWindow),
    ("(tpd)", Cue::LongWindow),
    ("(rpd)", Cue::LongWindow),
    ("temporarily rate-limited upstream", Cue::SharedCapacity),
    ("rate-limited upstream", Cue::SharedCapacity),
    ("shared capacity", Cue::SharedCapacity),
    // --- capacity
    ("overloaded", Cue::Overloaded),
    ("over capacity", Cue::Overloaded),
    ("at capacity", Cue::Overloaded),
    ("capacity exceeded", Cue::Overloaded),
    ("capacity_exceeded", Cue::Overloaded),
    ("capacity limits", Cue::Overloaded),
    ("capacity exhausted", Cue::Overloaded),
    ("high demand", Cue::Overloaded),
    ("high load", Cue::Overloaded),
    ("high volume", Cue::Overloaded),
    ("server is busy", Cue::Overloaded),
    ("api is busy", Cue::Overloaded),
    ("model is not ready", Cue::Overloaded),
    ("no instances available", Cue::Overloaded),
    ("no allowed providers are available", Cue::Overloaded),
    ("no available provider", Cue::Overloaded),
    ("负载", Cue::Overloaded),
    ("过载", Cue::Overloaded),
    ("访问量过大", Cue::Overloaded),
    ("繁忙", Cue::Overloaded),
    ("service unavailable", Cue::Unavailable),
    ("service_unavailable", Cue::Unavailable),
    ("serviceunavailable", Cue::Unavailable),
    ("temporarily unavailable", Cue::Unavailable),
    ("temporarily unable", Cue::Unavailable),
    ("暂时不可用", Cue::Unavailable),
    // --- transport
    ("timed out", Cue::Timeout),
    ("timeout", Cue::Timeout),
    ("time-out", Cue::Timeout),
    ("deadline exceeded", Cue::Timeout),
    ("deadline expired", Cue::Timeout),
    ("deadline_exceeded", Cue::Timeout),
    ("took too long", Cue::Timeout),
    ("超时", Cue::Timeout),
    ("connection reset", Cue::Network),
    ("connection refused", Cue::Network),
    ("connection error", Cue::Network),
    ("connection closed", Cue::Network),
    ("connection failure", Cue::Network),
    ("econnrefused", Cue::Network),
    ("econnreset", Cue::Network),
    ("enotfound", Cue::Network),
    ("eai_again", Cue::Network),
    ("ehostunreach", Cue::Network),
    ("ehostdown", Cue::Network),
    ("enetunreach", Cue::Network),
    ("enetreset", Cue::Network),
    ("epipe", Cue::Network),
    ("esockettimedout", Cue::Timeout),
    ("etimedout", Cue::Timeout),
    ("socket hang up", Cue::Network),
    ("und_err_socket", Cue::Network),
    ("other side closed", Cue::Network),
    ("no such host", Cue::Network),
    ("name or service not known", Cue::Network),
    ("dns", Cue::Network),
    ("tls handshake", Cue::Network),
    ("certificate verify", Cue::Network),
    ("peer certificate", Cue::Network),
    ("self signed certificate", Cue::Network),
    ("ssl handshake", Cue::Network),
    ("fetch failed", Cue::Network),
    ("network error", Cue::Network),
    ("network_error", Cue::Network),
    ("upstream connect error", Cue::Network),
    ("reset before headers", Cue::Network),
    ("网络", Cue::Network),
    ("连接错误", Cue::Network),
    ("stream ended", Cue::StreamCut),
    ("ended before", Cue::StreamCut),
    ("ended without", Cue::StreamCut),
    ("stream closed", Cue::StreamCut),
    ("stream was closed", Cue::StreamCut),
    ("stream aborted", Cue::StreamCut),
    ("stream was aborted", Cue::StreamCut),
    ("stream_read_error", Cue::StreamCut),
    ("without sending any chunks", Cue::StreamCut),
    ("malformed_response", Cue::StreamCut),
    ("premature close", Cue::StreamCut),
    ("terminated", Cue::StreamCut),
    ("abort", Cue::StreamCut),
    ("und_err", Cue::StreamCut),
    // --- server
    ("internal server error", Cue::ServerError),
    ("internal error", Cue::ServerError),
    ("internal_error", Cue::ServerError),
    ("internal_server_error", Cue::ServerError),
    ("server_error", Cue::ServerError),
    ("server error", Cue::ServerError),
    ("bad gateway", Cue::ServerError),
    ("unexpected error", Cue::ServerError),
    ("error occurred while processing", Cue::ServerError),
    ("error while processing", Cue::ServerError),
    ("failed due to an error", Cue::ServerError),
    ("unknown error", Cue::ServerError),
    ("upstream failure", Cue::ServerError),
    ("database error", Cue::ServerError),
    ("web server is", Cue::ServerError),
    ("request failed", Cue::ServerError),
    ("finish_reason: error", Cue::ServerError),
    ("stop reason: error", Cue::ServerError),
    ("model failed to generate", Cue::ServerError),
    ("内部错误", Cue::ServerError),
    ("服务器", Cue::ServerError),
    ("系统异常", Cue::ServerError),
    ("系统错误", Cue::ServerError),
    // --- the target's own misconfiguration
    ("page not found", Cue::EndpointConfig),
    ("path not found", Cue::EndpointConfig),
    ("unknown url", Cue::EndpointConfig),
    ("invalid url", Cue::EndpointConfig),
    ("unrecognized request url", Cue::EndpointConfig),
    ("no route", Cue::EndpointConfig),
    ("api version", Cue::EndpointConfig),
    ("api-version", Cue::EndpointConfig),
    ("method not allowed", Cue::EndpointConfig),
    ("endpoint not found", Cue::EndpointConfig),
    ("invalid client secret", Cue::EndpointConfig),
    ("inference profile", Cue::EndpointConfig),
    ("on-demand throughput", Cue::EndpointConfig),
    ("private endpoint", Cue::EndpointConfig),
    // --- limits that reset by themselves
    ("try again later", Cue::ResetHint),
    ("try again after", Cue::ResetHint),
    ("try again in", Cue::ResetHint),
    ("will reset", Cue::ResetHint),
    ("resets ", Cue::ResetHint),
    ("reset at", Cue::ResetHint),
    ("rolling", Cue::ResetHint),
    ("quota refresh", Cue::ResetHint),
    ("wait for", Cue::ResetHint),
    ("tomorrow", Cue::ResetHint),
    ("not found", Cue::NotFound),
    // --- the caller's request
    ("unsupported parameter", Cue::BadParam),
    ("unknown parameter", Cue::BadParam),
    ("unrecognized parameter", Cue::BadParam),
    ("unsupported_parameter", Cue::BadParam),
    ("unknown_parameter", Cue::BadParam),
    ("invalid parameter", Cue::BadRequest),
    ("invalid_parameter", Cue::BadRequest),
    ("invalid request", Cue::BadRequest),
    ("invalid value", Cue::BadRequest),
    ("invalid type", Cue::BadRequest),
    ("validation error", Cue::BadRequest),
    ("validationerror", Cue::BadRequest),
    ("input validation", Cue::BadRequest),
    ("unprocessable", Cue::BadRequest),
    ("should match pattern", Cue::BadRequest),
    ("should be less than", Cue::BadRequest),
    ("input should be", Cue::BadRequest),
    ("must be less than", Cue::BadRequest),
    ("prefill", Cue::BadRequest),
    ("must end with a user message", Cue::BadRequest),
    ("thinking blocks", Cue::BadRequest),
    ("in `thinking` block", Cue::BadRequest),
    ("malformed", Cue::BadRequest),
    ("invalid json", Cue::BadRequest),
    ("expected value", Cue::BadRequest),
    ("is mandatory", Cue::BadRequest),
    ("is required", Cue::BadRequest),
    ("not supported with this model", Cue::BadRequest),
    ("does not support", Cue::BadRequest),
    ("image dimensions", Cue::BadRequest),
    ("request format", Cue::BadRequest),
    ("parameter error", Cue::BadRequest),
    ("bad request", Cue::BadRequest),
    ("certificate field", Cue::BadRequest),
];

static AUTOMATON: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        // A DFA: one table lookup per byte, overlapping matches included (~2 MB, once).
        .kind(Some(AhoCorasickKind::DFA))
        .build(PHRASES.iter().map(|(p, _)| *p))
        .ok()
});

/// The cues raised in one or more texts, with the first phrase that raised each.
#[derive(Clone, Copy)]
pub(crate) struct Cues {
    bits: u64,
    first: [u16; N_CUES],
}

impl std::fmt::Debug for Cues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for (i, (p, c)) in PHRASES.iter().enumerate() {
            if self.has(*c) && usize::from(self.first[*c as usize]) == i {
                l.entry(&(c, p));
            }
        }
        l.finish()
    }
}

impl Default for Cues {
    fn default() -> Self {
        Cues {
            bits: 0,
            first: [u16::MAX; N_CUES],
        }
    }
}

impl Cues {
    /// Scans `text` and adds its cues.
    pub fn scan(&mut self, text: &str) {
        let Some(ac) = AUTOMATON.as_ref() else {
            return;
        };
        for m in ac.find_overlapping_iter(text) {
            let idx = m.pattern().as_usize();
            let Some((_, cue)) = PHRASES.get(idx) else {
                continue;
            };
            let bit = 1u64 << (*cue as u8);
            if self.bits & bit == 0 {
                self.bits |= bit;
                self.first[*cue as usize] = u16::try_from(idx).unwrap_or(u16::MAX);
            }
        }
    }

    /// Whether `cue` was raised.
    pub fn has(&self, cue: Cue) -> bool {
        self.bits & (1u64 << (cue as u8)) != 0
    }

    /// The phrase that first raised `cue`.
    pub fn phrase(&self, cue: Cue) -> &'static str {
        PHRASES
            .get(usize::from(self.first[cue as usize]))
            .map_or("", |(p, _)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automaton_builds_and_scans() {
        assert!(AUTOMATON.is_some());
        let mut c = Cues::default();
        c.scan("Your Credit Balance is too low to access the API");
        assert!(c.has(Cue::BillingStrong));
        assert_eq!(c.phrase(Cue::BillingStrong), "credit balance");
        assert!(!c.has(Cue::RateLimit));
        c.scan("请求过于频繁，请稍后重试");
        assert!(c.has(Cue::RateLimit));
    }

    #[test]
    fn every_phrase_is_lower_case_and_fits() {
        assert!(PHRASES.len() < usize::from(u16::MAX));
        const { assert!(N_CUES <= 64) };
        for (p, _) in PHRASES {
            assert_eq!(*p, p.to_lowercase(), "phrase {p:?} must be lower case");
        }
    }
}
