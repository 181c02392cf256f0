//! Translation between the wire families — Anthropic Messages, OpenAI Chat Completions,
//! OpenAI Responses and Gemini `generateContent` — so a route's fallback of another family
//! can serve a caller: the request on its way up, the answer (whole or streamed, event by
//! event) and the errors on their way back, always before the first byte is committed.
//!
//! Each format is read into one neutral form (`ir`) and written from it, so no format
//! knows another. What does not map is recorded as a [`Loss`] (the gateway logs it, and a
//! route may forbid lossy translation), or refused with [`TranslateError::Unservable`] when
//! the target could never honour it (the gateway then skips the target). The table of
//! what maps is `docs/translation.md`.
//!
//! Hand-written because it is the domain: which field means what across providers, and
//! what is lost, is exactly what Keyward must decide and document. Pure: no I/O, no clock
//! (the caller passes the time a Chat Completions answer reports as `created`).
//!
//! ```
//! use keyward_wire::stream::Api;
//! use keyward_wire::translate::{self, Options};
//!
//! let body = br#"{"model":"claude","max_tokens":64,"system":"Be brief.",
//!                 "messages":[{"role":"user","content":"hi"}]}"#;
//! let up = translate::request(Api::Messages, Api::ChatCompletions, body, "gpt-4o", false, &Options::default()).unwrap();
//! let v: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
//! assert_eq!(v["model"], "gpt-4o");
//! assert_eq!(v["messages"][0]["role"], "system");
//! assert!(up.losses.is_empty());
//! ```

mod anthropic;
mod chat;
mod error;
mod gemini;
mod ir;
mod responses;
mod stream;

use serde_json::Value;

use crate::stream::Api;

pub use error::error_body;
pub use stream::StreamTranslator;

/// How requests are completed for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `max_tokens` when the caller gave none and the target requires one (Anthropic).
    pub default_max_tokens: u64,
    /// Unix seconds, for the `created` field of Chat Completions and Responses answers.
    pub created: u64,
    /// Unique per answer: the tool call ids invented for a provider that gives none
    /// (Gemini) are `call_<nonce>_<n>`, so a conversation never holds one id twice.
    pub nonce: u64,
    /// A Chat Completions target that is not OpenAI's own (Mistral, Groq, a local
    /// server…): sent the older `max_tokens` rather than `max_completion_tokens`, and no
    /// `stream_options` (some refuse fields they do not know).
    pub compatible_chat: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_max_tokens: 4096,
            created: 0,
            nonce: 0,
            compatible_chat: false,
        }
    }
}

/// A feature of the caller's request the target does not get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// The feature, as `docs/translation.md` names it (`cache_control`, `top_k`, …).
    pub feature: &'static str,
    /// What became of it.
    pub effect: &'static str,
}

/// A translated request.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub body: Vec<u8>,
    /// What the target does not get (empty: nothing lost).
    pub losses: Vec<Loss>,
}

/// Why a request or answer could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The body is not JSON of the expected shape. For a request: the caller's own error
    /// (the gateway answers 400); for an answer: the upstream's (the attempt failed).
    /// Label: `malformed`.
    #[error("the {api:?} body is not what the API defines: {what}")]
    Malformed { api: Api, what: String },
    /// The request asks for something the target family can never do (several choices,
    /// audio output, a stored previous response, …): the target is skipped, the next
    /// one tried. Label: `unservable`.
    #[error("the request uses {feature}, which {target:?} cannot serve; the target is skipped (route it to a target of the caller's own API)")]
    Unservable { feature: &'static str, target: Api },
}

impl TranslateError {
    /// Its low-cardinality label.
    pub fn label(&self) -> &'static str {
        match self {
            TranslateError::Malformed { .. } => "malformed",
            TranslateError::Unservable { .. } => "unservable",
        }
    }
}

/// Records losses while a request is read and written, and the first feature that no
/// target of another family can serve.
#[derive(Debug, Default)]
pub(crate) struct Losses(Vec<Loss>, Option<&'static str>);

impl Losses {
    /// A feature no other family serves: the target will be skipped.
    pub(crate) fn refuse(&mut self, feature: &'static str) {
        self.1.get_or_insert(feature);
    }

    pub(crate) fn drop(&mut self, feature: &'static str) {
        self.note(feature, "dropped");
    }

    pub(crate) fn note(&mut self, feature: &'static str, effect: &'static str) {
        if !self.0.iter().any(|l| l.feature == feature) {
            self.0.push(Loss { feature, effect });
        }
    }
}

pub(crate) fn malformed(api: Api, what: impl Into<String>) -> TranslateError {
    TranslateError::Malformed {
        api,
        what: what.into(),
    }
}

/// A message whose role is missing or unknown (quoted bounded: it is the caller's text).
pub(crate) fn bad_role(api: Api, role: Option<&str>) -> TranslateError {
    match role {
        Some(r) => malformed(api, format!("a message's role is {:?}", json::bounded(r))),
        None => malformed(api, "a message has no role"),
    }
}

fn parse_object(api: Api, body: &[u8]) -> Result<serde_json::Map<String, Value>, TranslateError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(malformed(api, "not a JSON object")),
        Err(e) => Err(malformed(api, format!("not JSON ({e})"))),
    }
}

/// Translates a request body of the caller's `from` family into the `to` family, for
/// upstream model `model` (Gemini names it in the URL instead), streamed or not.
pub fn request(
    from: Api,
    to: Api,
    body: &[u8],
    model: &str,
    stream: bool,
    opts: &Options,
) -> Result<Translated, TranslateError> {
    let v = parse_object(from, body)?;
    let mut losses = Losses::default();
    let ir = match from {
        Api::Messages => anthropic::read_request(&v, &mut losses)?,
        Api::ChatCompletions => chat::read_request(&v, &mut losses)?,
        Api::Responses => responses::read_request(&v, &mut losses)?,
        Api::Gemini => gemini::read_request(&v, &mut losses)?,
    };
    if let Some(feature) = losses.1 {
        return Err(TranslateError::Unservable {
            feature,
            target: to,
        });
    }
    let out = match to {
        Api::Messages => anthropic::write_request(&ir, model, stream, opts, &mut losses)?,
        Api::ChatCompletions => chat::write_request(&ir, model, stream, opts, &mut losses)?,
        Api::Responses => responses::write_request(&ir, model, stream, &mut losses)?,
        Api::Gemini => gemini::write_request(&ir, stream, &mut losses)?,
    };
    Ok(Translated {
        body: out.to_string().into_bytes(),
        losses: losses.0,
    })
}

/// Translates a whole (non-streamed) answer of the upstream's `from` family into the
/// caller's `to` family.
pub fn response(
    from: Api,
    to: Api,
    body: &[u8],
    opts: &Options,
) -> Result<Vec<u8>, TranslateError> {
    let v = parse_object(from, body)?;
    let ir = match from {
        Api::Messages => anthropic::read_response(&v)?,
        Api::ChatCompletions => chat::read_response(&v)?,
        Api::Responses => responses::read_response(&v)?,
        Api::Gemini => gemini::read_response(&v, opts)?,
    };
    let out = match to {
        Api::Messages => anthropic::write_response(&ir),
        Api::ChatCompletions => chat::write_response(&ir, opts),
        Api::Responses => responses::write_response(&ir, opts),
        Api::Gemini => gemini::write_response(&ir),
    };
    Ok(out.to_string().into_bytes())
}

/// The features a caller of `from` may use that a target of `to` never gets, for
/// `keyward config check` (each dropped with a logged decision, or the target skipped).
pub fn losses_between(from: Api, to: Api) -> &'static [&'static str] {
    match (from, to) {
        (a, b) if a == b => &[],
        (Api::Messages, Api::Gemini) => &[
            "cache_control",
            "citations",
            "documents",
            "thinking signatures",
            "top_k only approximately",
        ],
        (Api::Messages, _) => &[
            "cache_control",
            "citations",
            "documents",
            "thinking signatures",
            "top_k",
        ],
        (Api::ChatCompletions, Api::Messages) => &[
            "n>1 (target skipped)",
            "logprobs",
            "audio (target skipped)",
            "seed",
            "penalties",
            "logit_bias",
            "response_format",
        ],
        (Api::ChatCompletions, _) => &[
            "n>1 (target skipped)",
            "logprobs",
            "audio (target skipped)",
            "seed",
            "penalties",
            "logit_bias",
        ],
        (Api::Responses, Api::Messages) => &[
            "previous_response_id (target skipped)",
            "built-in tools",
            "store",
            "text.format",
        ],
        (Api::Responses, _) => &[
            "previous_response_id (target skipped)",
            "built-in tools",
            "store",
        ],
        (Api::Gemini, Api::Messages) => &[
            "safetySettings",
            "candidateCount>1 (target skipped)",
            "responseSchema",
            "fileData",
        ],
        (Api::Gemini, _) => &[
            "safetySettings",
            "candidateCount>1 (target skipped)",
            "fileData",
        ],
    }
}

/// Small JSON helpers shared by the formats.
pub(crate) mod json {
    use serde_json::Value;

    pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
        v.get(key).and_then(Value::as_str)
    }

    pub(crate) fn u64_of(v: &Value, key: &str) -> Option<u64> {
        v.get(key).and_then(Value::as_u64)
    }

    pub(crate) fn f64_of(v: &Value, key: &str) -> Option<f64> {
        v.get(key).and_then(Value::as_f64)
    }

    /// A string or a list of strings (`stop`).
    pub(crate) fn strings(v: Option<&Value>) -> Vec<String> {
        match v {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A caller-supplied string quoted in an error: at most 40 characters.
    pub(crate) fn bounded(s: &str) -> String {
        match s.char_indices().nth(40) {
            None => s.to_owned(),
            Some((at, _)) => format!("{}…", &s[..at]),
        }
    }

    /// Whether `v` has `key` set to something other than null.
    pub(crate) fn has(v: &Value, key: &str) -> bool {
        v.get(key).is_some_and(|x| !x.is_null())
    }

    /// A JSON text as a value (a tool call's arguments); an object when it does not parse.
    pub(crate) fn args_value(text: &str) -> Value {
        if text.trim().is_empty() {
            return Value::Object(serde_json::Map::new());
        }
        serde_json::from_str(text).unwrap_or_else(|_| serde_json::json!({ "_raw": text }))
    }

    /// A tool call id as Anthropic accepts it (`^[a-zA-Z0-9_-]+$`): the same id always
    /// becomes the same, so a call and its result still pair up.
    pub(crate) fn safe_id(id: &str) -> String {
        let s: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if s.is_empty() {
            "call_0".into()
        } else {
            s
        }
    }
}
