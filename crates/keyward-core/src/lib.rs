//! # keyward-core
//!
//! The pure core of Keyward, the LLM gateway that keeps agents running through revoked
//! keys, expired tokens, exhausted credit and provider faults. No sockets, and no clock but
//! an injected one.
//!
//! Two parts:
//! - [`classify`]: the failure classifier — one failed attempt in, a verdict out (class,
//!   scope, confidence, retry-after, evidence, the rule that decided). Usable on its own by
//!   any Rust agent that talks to LLM providers and wants to know what a failure *means*
//!   (below).
//! - [`health`]: the health engine — every credential's, endpoint's and model's state,
//!   fed by verdicts, successes and probes; selection and admission of candidates;
//!   provider-wide auth incidents; retry budgets. Its module doc walks a revoked key
//!   through it.
//!
//!
//! ```
//! use keyward_core::classify::{classify, Attempt, Class, CredentialKind, Provider, Scope};
//!
//! // OpenAI answers 429 — but this 429 is exhausted credit, not a rate limit.
//! let body = br#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
//! let failure = classify(&Attempt::response(Provider::OpenAi, 429, body));
//! assert_eq!(failure.class, Class::Billing);
//! assert_eq!(failure.scope, Scope::QuotaBucket);
//! assert!(!failure.class.retries_same_credential());
//!
//! // Gemini says "expired" — but API keys cannot be refreshed: permanent.
//! let body = br#"{"error":{"code":400,"message":"API key expired. Please renew the API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
//! let failure = classify(&Attempt::response(Provider::Gemini, 400, body));
//! assert_eq!(failure.class, Class::AuthPermanent);
//!
//! // The same words from an OAuth token's API: refresh once and retry.
//! let body = br#"{"error":{"message":"Provided authentication token is expired.","type":null,"code":"token_expired"}}"#;
//! let failure = classify(&Attempt::response(Provider::OpenAi, 401, body).credential(CredentialKind::OAuth));
//! assert_eq!(failure.class, Class::AuthTransient);
//! println!("{}", failure.explanation);
//! ```

pub mod classify;
pub mod health;
