//! The strict reading of a JSON error body: the typed, borrowing shapes of the envelopes
//! providers use, and how their fields become [`Signals`].
//!
//! Hand-written because the shapes are the domain (see the parent module): which field
//! wins when an `error` object, a top-level `message`, a Responses `response.error`, a
//! Bedrock stream exception and a finish reason all appear is a classification decision.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::details::Details;
use super::scalar::{FirstReason, Scalar, Text};
use super::Signals;

impl<'a> Signals<'a> {
    /// Strict parse of the first JSON value in `json`; trailing text is allowed.
    pub(super) fn read_json(&mut self, json: &'a str) -> bool {
        let mut de = serde_json::Deserializer::from_str(json);
        match Doc::deserialize(&mut de) {
            Ok(doc) => {
                self.structured = true;
                self.absorb(doc.0);
                true
            }
            Err(_) => false,
        }
    }

    fn absorb(&mut self, env: Envelope<'a>) {
        let Envelope {
            error,
            message,
            message_upper,
            ty,
            code,
            status,
            error_description,
            aws_type,
            detail,
            response,
            choices,
            candidates,
            prompt_feedback,
            stop_reason,
            error_details,
            details,
            metadata,
            stop_reason_camel,
            finish_reason,
            incomplete_details,
            delta,
            message_stop,
            guardrail_action,
            internal_server_exception,
            model_stream_error_exception,
            throttling_exception,
            validation_exception,
            service_unavailable_exception,
            model_timeout_exception,
        } = env;
        // Bedrock ConverseStream exceptions arrive as `{"throttlingException":{"message":…}}`.
        for (name, exc) in [
            ("internalServerException", internal_server_exception),
            ("modelStreamErrorException", model_stream_error_exception),
            ("throttlingException", throttling_exception),
            ("validationException", validation_exception),
            ("serviceUnavailableException", service_unavailable_exception),
            ("modelTimeoutException", model_timeout_exception),
        ] {
            if let Some(e) = exc {
                if self.aws_type.is_none() {
                    self.aws_type = Some(Cow::Borrowed(name));
                    if let Some(m) = e.message.or(e.message_upper) {
                        self.message.get_or_insert(m.0);
                    }
                }
            }
        }
        let top_type_error = ty.as_ref().and_then(|t| t.0.as_deref()) == Some("error");
        match error {
            Some(ErrorField::Obj(obj)) => {
                self.typed_envelope |= top_type_error;
                self.absorb_error(*obj);
            }
            Some(ErrorField::Str(s)) => self.error_str = Some(s),
            _ => {}
        }
        if let Some(resp) = response {
            if let Some(ErrorField::Obj(obj)) = resp.error {
                self.absorb_error(*obj);
            }
            if let Some(r) = resp
                .incomplete_details
                .and_then(|d| d.reason)
                .and_then(|r| r.0)
            {
                self.finish.get_or_insert(r);
            }
            if let Some(st) = resp.status.and_then(|s| s.0) {
                if st == "failed" && self.ty.is_none() && self.code.is_none() {
                    self.ty = Some(Cow::Borrowed("response.failed"));
                }
            }
        }
        let top_msg = message
            .or(message_upper)
            .or(detail)
            .or(error_description)
            .map(|t| t.0);
        if self.message.is_none() {
            self.message = top_msg;
        }
        // A top-level `type` is an error type only in error envelopes (Mistral's
        // `{"object":"error","type":…}`); success bodies carry `"type":"message"` etc.
        let has_top_message = self.message.is_some();
        if let Some(t) = ty.and_then(|t| t.0) {
            if t != "error" && self.ty.is_none() && (t.contains("error") || has_top_message) {
                self.ty = Some(t);
            }
        }
        if let Some(c) = code.and_then(|c| c.0) {
            if let Ok(n) = c.parse::<u16>() {
                self.num_code.get_or_insert(n);
            }
            if self.code.is_none() {
                self.code = Some(c);
            }
        }
        if let Some(st) = status.and_then(|s| s.0) {
            match st.parse::<u16>() {
                Ok(n) => {
                    self.num_code.get_or_insert(n);
                }
                // A canonical code (`RESOURCE_EXHAUSTED`), not a Responses object's own
                // lifecycle status (`incomplete`, `failed`).
                Err(_) if !st.bytes().any(|b| b.is_ascii_lowercase()) => {
                    self.gstatus.get_or_insert(st);
                }
                Err(_) => {}
            }
        }
        // A Responses API object: `incomplete_details.reason` (`content_filter`).
        if let Some(r) = incomplete_details.and_then(|d| d.reason).and_then(|r| r.0) {
            self.finish.get_or_insert(r);
        }
        if let Some(a) = aws_type.and_then(|a| a.0) {
            self.aws_type = Some(a);
        }
        if let Some(d) = details {
            self.absorb_details(d);
        }
        if let Some(m) = metadata {
            self.absorb_metadata(m);
        }
        if let Some(gd) = error_details {
            if let Some(id) = gd.notification_id.and_then(|n| n.0) {
                self.detail_code.get_or_insert(id);
            }
        }
        // Bedrock InvokeModel with a guardrail: `"amazon-bedrock-guardrailAction":
        // "INTERVENED"` beside the model's own body (whose stop_reason may be end_turn).
        let guardrail = guardrail_action
            .and_then(|g| g.0)
            .filter(|g| g == "INTERVENED")
            .map(|_| Cow::Borrowed("guardrail_intervened"));
        let finish = guardrail
            .or_else(|| choices.and_then(|c| c.0))
            .or_else(|| candidates.and_then(|c| c.0))
            .or_else(|| {
                prompt_feedback
                    .and_then(|p| p.block_reason)
                    .and_then(|b| b.0)
            })
            .or_else(|| stop_reason.and_then(|s| s.0))
            .or_else(|| stop_reason_camel.and_then(|s| s.0))
            .or_else(|| finish_reason.and_then(|s| s.0))
            .or_else(|| delta.and_then(|d| d.stop_reason).and_then(|s| s.0))
            .or_else(|| message_stop.and_then(|m| m.stop_reason).and_then(|s| s.0));
        if let Some(f) = finish {
            self.finish.get_or_insert(f);
        }
    }

    fn absorb_error(&mut self, e: ErrorObj<'a>) {
        if let Some(t) = e.ty.and_then(|t| t.0) {
            if t != "error" || self.ty.is_none() {
                self.ty = Some(t);
            }
        }
        if let Some(c) = e.code.and_then(|c| c.0) {
            if let Ok(n) = c.parse::<u16>() {
                self.num_code = Some(n);
            }
            self.code = Some(c);
        }
        if let Some(st) = e.status.and_then(|s| s.0) {
            match st.parse::<u16>() {
                Ok(n) => {
                    self.num_code.get_or_insert(n);
                }
                Err(_) => self.gstatus = Some(st),
            }
        }
        if let Some(m) = e.message {
            self.message = Some(m.0);
        } else if let Some(inner) = e.error {
            self.message = Some(inner.0);
        }
        if let Some(p) = e.param.and_then(|p| p.0) {
            self.param = Some(p);
        }
        if let Some(d) = e.details {
            self.absorb_details(d);
        }
        if let Some(inner) = e.innererror.and_then(|i| i.code).and_then(|c| c.0) {
            self.detail_code = Some(inner);
        }
        if let Some(m) = e.metadata {
            self.absorb_metadata(m);
        }
    }

    fn absorb_details(&mut self, d: Details<'a>) {
        match d {
            Details::Google(g) => {
                if g.reason.is_some() {
                    self.reason = g.reason;
                }
                if g.retry_delay.is_some() {
                    self.retry_delay = g.retry_delay;
                }
                self.quota_failure |= g.quota_failure;
                self.quota_zero |= g.quota_zero;
                self.quota_free_tier |= g.quota_free_tier;
            }
            Details::Code(c) => self.detail_code = Some(c),
            Details::None => {}
        }
    }

    fn absorb_metadata(&mut self, m: Metadata<'a>) {
        if m.raw.is_some() || m.provider_name.is_some() {
            self.upstream = true;
        }
        if m.reasons.is_some() || m.flagged_input.is_some() {
            self.flagged = true;
        }
        if let Some(raw) = m.raw {
            // The upstream's own body: keep it as the message if there is none better.
            if self.message.as_deref().is_none_or(|msg| msg.len() < 40) {
                self.message = Some(raw.0);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Typed, borrowing shapes. Every field is optional and tolerant of the wrong JSON type.
// ---------------------------------------------------------------------------------------

/// The top-level document: an object, or the first error-bearing object of an array.
struct Doc<'a>(Envelope<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Doc<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Doc<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object or array")
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Doc<'a>, M::Error> {
                Envelope::deserialize(de::value::MapAccessDeserializer::new(map)).map(Doc)
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Doc<'a>, S::Error> {
                let mut chosen: Option<Envelope<'a>> = None;
                let mut n = 0usize;
                while let Some(item) = seq.next_element::<Option<Doc<'a>>>()? {
                    n += 1;
                    let Some(Doc(env)) = item else { continue };
                    let better = match &chosen {
                        None => true,
                        Some(c) => !c.carries_error() && (env.carries_error() || n < 64),
                    };
                    if better {
                        chosen = Some(env);
                    }
                }
                Ok(Doc(chosen.unwrap_or_default()))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Envelope<'a> {
    #[serde(borrow)]
    error: Option<ErrorField<'a>>,
    #[serde(borrow)]
    message: Option<Text<'a>>,
    #[serde(borrow, rename = "Message")]
    message_upper: Option<Text<'a>>,
    #[serde(borrow, rename = "type")]
    ty: Option<Scalar<'a>>,
    #[serde(borrow)]
    code: Option<Scalar<'a>>,
    #[serde(borrow)]
    status: Option<Scalar<'a>>,
    #[serde(borrow)]
    error_description: Option<Text<'a>>,
    #[serde(borrow, rename = "__type")]
    aws_type: Option<Scalar<'a>>,
    #[serde(borrow)]
    detail: Option<Text<'a>>,
    #[serde(borrow)]
    response: Option<ResponseObj<'a>>,
    #[serde(borrow)]
    choices: Option<FirstReason<'a>>,
    #[serde(borrow)]
    candidates: Option<FirstReason<'a>>,
    #[serde(borrow, rename = "promptFeedback")]
    prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(borrow)]
    stop_reason: Option<Scalar<'a>>,
    #[serde(borrow)]
    error_details: Option<GithubDetails<'a>>,
    #[serde(borrow)]
    details: Option<Details<'a>>,
    #[serde(borrow)]
    metadata: Option<Metadata<'a>>,
    /// A Responses API object's `incomplete_details` (non-streaming).
    #[serde(borrow)]
    incomplete_details: Option<IncompleteDetails<'a>>,
    /// Cohere v2 chat: a top-level `finish_reason` (`ERROR_TOXIC`).
    #[serde(borrow)]
    finish_reason: Option<Scalar<'a>>,
    /// Bedrock Converse `stopReason` (`guardrail_intervened`, `content_filtered`).
    #[serde(borrow, rename = "stopReason")]
    stop_reason_camel: Option<Scalar<'a>>,
    /// Anthropic `message_delta` events: `delta.stop_reason` (`refusal`).
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    /// Bedrock ConverseStream `messageStop.stopReason`.
    #[serde(borrow, rename = "messageStop")]
    message_stop: Option<MessageStop<'a>>,
    #[serde(borrow, rename = "amazon-bedrock-guardrailAction")]
    guardrail_action: Option<Scalar<'a>>,
    #[serde(borrow, rename = "internalServerException")]
    internal_server_exception: Option<AwsStreamError<'a>>,
    #[serde(borrow, rename = "modelStreamErrorException")]
    model_stream_error_exception: Option<AwsStreamError<'a>>,
    #[serde(borrow, rename = "throttlingException")]
    throttling_exception: Option<AwsStreamError<'a>>,
    #[serde(borrow, rename = "validationException")]
    validation_exception: Option<AwsStreamError<'a>>,
    #[serde(borrow, rename = "serviceUnavailableException")]
    service_unavailable_exception: Option<AwsStreamError<'a>>,
    #[serde(borrow, rename = "modelTimeoutException")]
    model_timeout_exception: Option<AwsStreamError<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Delta<'a> {
    #[serde(borrow)]
    stop_reason: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageStop<'a> {
    #[serde(borrow, rename = "stopReason")]
    stop_reason: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AwsStreamError<'a> {
    #[serde(borrow)]
    message: Option<Text<'a>>,
    #[serde(borrow, rename = "Message")]
    message_upper: Option<Text<'a>>,
}

impl Envelope<'_> {
    fn carries_error(&self) -> bool {
        self.error
            .as_ref()
            .is_some_and(|e| !matches!(e, ErrorField::Other))
            || self.message.is_some()
            || self.message_upper.is_some()
            || self.aws_type.is_some()
            || self.internal_server_exception.is_some()
            || self.model_stream_error_exception.is_some()
            || self.throttling_exception.is_some()
            || self.validation_exception.is_some()
            || self.service_unavailable_exception.is_some()
            || self.model_timeout_exception.is_some()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorObj<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<Scalar<'a>>,
    #[serde(borrow)]
    code: Option<Scalar<'a>>,
    #[serde(borrow)]
    status: Option<Scalar<'a>>,
    #[serde(borrow)]
    message: Option<Text<'a>>,
    #[serde(borrow)]
    error: Option<Text<'a>>,
    #[serde(borrow)]
    param: Option<Scalar<'a>>,
    #[serde(borrow)]
    details: Option<Details<'a>>,
    #[serde(borrow)]
    innererror: Option<InnerError<'a>>,
    #[serde(borrow)]
    metadata: Option<Metadata<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InnerError<'a> {
    #[serde(borrow)]
    code: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Metadata<'a> {
    #[serde(borrow)]
    raw: Option<Text<'a>>,
    #[serde(borrow)]
    provider_name: Option<Scalar<'a>>,
    reasons: Option<IgnoredAny>,
    flagged_input: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GithubDetails<'a> {
    #[serde(borrow)]
    notification_id: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponseObj<'a> {
    #[serde(borrow)]
    status: Option<Scalar<'a>>,
    #[serde(borrow)]
    error: Option<ErrorField<'a>>,
    #[serde(borrow)]
    incomplete_details: Option<IncompleteDetails<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IncompleteDetails<'a> {
    #[serde(borrow)]
    reason: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PromptFeedback<'a> {
    #[serde(borrow, rename = "blockReason")]
    block_reason: Option<Scalar<'a>>,
}

/// `error`: an object, a string (RFC 6749 code or free text), or anything else.
enum ErrorField<'a> {
    Obj(Box<ErrorObj<'a>>),
    Str(Cow<'a, str>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for ErrorField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ErrorField<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an error object or string")
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                ErrorObj::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|o| ErrorField::Obj(Box::new(o)))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                let mut out = ErrorField::Other;
                while let Some(item) = seq.next_element::<ErrorField<'a>>()? {
                    if matches!(out, ErrorField::Other) {
                        out = item;
                    }
                }
                Ok(out)
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(ErrorField::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ErrorField::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(ErrorField::Str(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ErrorField::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ErrorField::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ErrorField::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ErrorField::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ErrorField::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BodyKind, Signals};

    #[test]
    fn reads_openai_envelope() {
        let s = Signals::read(
            r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        );
        assert_eq!(s.kind, BodyKind::Json);
        assert_eq!(s.code.as_deref(), Some("invalid_api_key"));
        assert_eq!(s.ty.as_deref(), Some("invalid_request_error"));
        assert_eq!(s.message.as_deref(), Some("Incorrect API key"));
    }

    #[test]
    fn reads_string_error_and_object_message() {
        let s = Signals::read(r#"{"error":"invalid_grant","error_description":"Bad Request"}"#);
        assert_eq!(s.error_str.as_deref(), Some("invalid_grant"));
        assert_eq!(s.message.as_deref(), Some("Bad Request"));
        let s = Signals::read(
            r#"{"object":"error","message":{"detail":[{"msg":"Input should be less"}]},"type":"invalid_request_error"}"#,
        );
        assert!(s
            .message
            .as_deref()
            .is_some_and(|m| m.contains("Input should be less")));
        assert_eq!(s.ty.as_deref(), Some("invalid_request_error"));
    }

    #[test]
    fn content_filter_finish_reasons() {
        let s = Signals::read(r#"{"choices":[{"index":0,"finish_reason":"content_filter"}]}"#);
        assert_eq!(s.finish.as_deref(), Some("content_filter"));
        let s = Signals::read(r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#);
        assert_eq!(s.finish.as_deref(), Some("SAFETY"));
    }
}
