//! Crossing wire families: an attempt on a target that does not speak the caller's API
//! (an Anthropic route's OpenAI fallback, say) has its request translated for the target,
//! and its answer — whole, streamed event by event, or an error — translated back, all
//! before the first byte is committed to the caller. The gateway's only file that knows
//! two families meet; the translation itself is `keyward_wire::translate` (pure).
//!
//! The target's API is the first its provider speaks natively that its configuration
//! allows (Anthropic: Messages; Gemini: `generateContent`, streamed as SSE; OpenAI and
//! compatible providers: Chat Completions, or Responses for a Codex token). Counting
//! tokens and embeddings are never translated.

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::BodyDataStream;
use keyward_core::classify::{classify, Attempt, CredentialKind, Failure, Provider};
use keyward_wire::stream::Api;
use keyward_wire::translate::{self, Options, StreamTranslator, TranslateError};
use tracing::info;

use super::caller_bound::Read;
use super::caller_error::CallerError;
use super::stream::Rest;
use super::upstream::{self, GeminiCall, Inbound};
use crate::clock::wall_clock;
use crate::config::Route;

/// A number unique to one translated answer in this process, and unlikely to repeat
/// across restarts (the tool call ids invented for Gemini's calls carry it).
fn nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (crate::seed() ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) & 0xffff_ffff_ffff
}

/// An answer that does not translate: a failure of the attempt (the upstream's answer
/// is not what its API defines), classified as a bad gateway.
pub(super) fn untranslatable(
    e: &TranslateError,
    provider: Provider,
    kind: CredentialKind,
) -> Failure {
    let mut f = classify(&Attempt::response(provider, 502, b"").credential(kind));
    f.explanation = format!("the answer could not be translated for the caller: {e}");
    f
}

/// One attempt's crossing: the caller's family and the target's API.
#[derive(Debug, Clone)]
pub(super) struct Crossing {
    pub(super) upstream: Inbound,
    caller: Api,
    opts: Options,
}

/// Why a translated request is not sent.
pub(super) enum Refused {
    /// The target cannot serve it (a feature it lacks, or a lossy translation the route
    /// forbids): the next candidate is tried.
    Skip,
    /// The caller's body is not what its own API defines: its 400.
    Caller(CallerError),
}

/// The APIs a provider speaks natively that a translation can reach, preferred first.
fn native_apis(provider: Provider, stream: bool) -> &'static [Inbound] {
    const GEMINI: [Inbound; 2] = [
        Inbound::Gemini(GeminiCall {
            stream: false,
            sse: true,
        }),
        Inbound::Gemini(GeminiCall {
            stream: true,
            sse: true,
        }),
    ];
    match provider {
        Provider::Anthropic => &[Inbound::Messages],
        Provider::Gemini if stream => &GEMINI[1..],
        Provider::Gemini => &GEMINI[..1],
        p if p.speaks_openai() => &[Inbound::Chat, Inbound::Responses],
        _ => &[],
    }
}

/// Whether `inbound` is a family translations start from.
fn translatable(inbound: Inbound) -> bool {
    matches!(
        inbound,
        Inbound::Messages | Inbound::Chat | Inbound::Responses | Inbound::Gemini(_)
    )
}

/// Whether a target of `provider` can serve `inbound` at all, natively or translated.
pub(super) fn reachable(inbound: Inbound, provider: Provider) -> bool {
    inbound.served_by(provider)
        || (translatable(inbound) && !native_apis(provider, false).is_empty())
}

impl Crossing {
    /// How a target of `provider` serves `inbound` when it does not natively (or its
    /// `apis` list does not allow it to): the first of its own APIs its configuration
    /// allows. `None`: it cannot.
    pub(super) fn plan(
        inbound: Inbound,
        provider: Provider,
        apis: Option<&[&'static str]>,
        stream: bool,
        route: &Route,
    ) -> Option<Crossing> {
        if !translatable(inbound) {
            return None;
        }
        let upstream = native_apis(provider, stream)
            .iter()
            .copied()
            .find(|a| apis.is_none_or(|list| list.contains(&a.name())))?;
        Some(Crossing {
            upstream,
            caller: inbound.api(),
            opts: Options {
                default_max_tokens: route.translation.default_max_tokens,
                created: wall_clock()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                nonce: nonce(),
                compatible_chat: !matches!(provider, Provider::OpenAi | Provider::AzureOpenAi),
            },
        })
    }

    /// The caller's body for the target's API, for upstream `model`. A loss the route
    /// forbids, or a feature the target lacks, skips the target (logged).
    pub(super) fn request(
        &self,
        body: &[u8],
        model: &str,
        stream: bool,
        route: &Route,
        credential: &str,
    ) -> Result<Vec<u8>, Refused> {
        let to = self.upstream.api();
        match translate::request(self.caller, to, body, model, stream, &self.opts) {
            Ok(t) if t.losses.is_empty() => Ok(t.body),
            Ok(t) => {
                let lost = t
                    .losses
                    .iter()
                    .map(|l| format!("{} ({})", l.feature, l.effect))
                    .collect::<Vec<_>>()
                    .join(", ");
                if route.translation.lossy {
                    info!(credential, to = ?to, lost = %lost, "translated for a target of another API, with losses");
                    Ok(t.body)
                } else {
                    info!(credential, to = ?to, lost = %lost, "skipped candidate: its translation would lose features and the route forbids lossy translation (lossy_translation = false)");
                    Err(Refused::Skip)
                }
            }
            Err(e @ TranslateError::Unservable { .. }) => {
                info!(credential, reason = %e, "skipped candidate");
                Err(Refused::Skip)
            }
            Err(e) => Err(Refused::Caller(CallerError::bad_request(format!(
                "keyward: {e}"
            )))),
        }
    }

    /// A whole answer in the caller's format.
    pub(super) fn answer(&self, body: &[u8]) -> Result<Bytes, TranslateError> {
        translate::response(self.upstream.api(), self.caller, body, &self.opts).map(Bytes::from)
    }

    /// An upstream error body in the caller's format (kept as it was when it is not an
    /// error of a known shape).
    pub(super) fn error(&self, read: Read, status: u16) -> Read {
        match translate::error_body(self.upstream.api(), self.caller, status, &read.body) {
            Some(body) => Read {
                body: Bytes::from(body),
                defect: read.defect,
            },
            None => read,
        }
    }

    /// The upstream stream's bytes as the caller's events, translated as they arrive.
    /// `array`: the caller reads a Gemini JSON array.
    pub(super) fn stream(&self, resp: upstream::Response, array: bool, max_event: usize) -> Rest {
        let t = StreamTranslator::new(
            self.upstream.api(),
            self.caller,
            array,
            max_event,
            &self.opts,
        );
        let body = BodyDataStream::new(resp.into_body());
        futures_util::stream::unfold(Some((body, t)), |state| async move {
            let (mut body, mut t) = state?;
            match body.next().await {
                // Upstream bytes that translate to nothing (a ping, a role-only chunk) still
                // pass, as an empty chunk: the idle limit is reset by any bytes.
                Some(Ok(chunk)) => match t.push(&chunk) {
                    Ok(out) => Some((Ok(Bytes::from(out)), Some((body, t)))),
                    // An oversized event: the stream ends here, reported as broken.
                    Err(_) => None,
                },
                Some(Err(e)) => Some((Err(e), None)),
                None => {
                    let out = t.finish();
                    (!out.is_empty()).then(|| (Ok(Bytes::from(out)), None))
                }
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Timeouts, Translation};

    fn route() -> Route {
        Route {
            name: "r".into(),
            targets: Vec::new(),
            context_fallback: None,
            timeouts: Timeouts::default(),
            translation: Translation::default(),
            continue_streams: true,
        }
    }

    fn plan(
        inbound: Inbound,
        provider: Provider,
        apis: Option<&[&'static str]>,
        stream: bool,
    ) -> Option<Inbound> {
        Crossing::plan(inbound, provider, apis, stream, &route()).map(|c| c.upstream)
    }

    #[test]
    fn a_target_is_called_with_its_own_api_that_its_configuration_allows() {
        assert_eq!(
            plan(Inbound::Messages, Provider::OpenAi, None, false),
            Some(Inbound::Chat)
        );
        assert_eq!(
            plan(Inbound::Messages, Provider::Groq, None, true),
            Some(Inbound::Chat)
        );
        assert_eq!(
            plan(
                Inbound::Messages,
                Provider::OpenAi,
                Some(&["responses"]),
                false
            ),
            Some(Inbound::Responses)
        );
        assert_eq!(
            plan(Inbound::Chat, Provider::OpenAi, Some(&["responses"]), true),
            Some(Inbound::Responses)
        );
        assert_eq!(
            plan(Inbound::Chat, Provider::Anthropic, None, false),
            Some(Inbound::Messages)
        );
        assert_eq!(
            plan(Inbound::Messages, Provider::Gemini, None, true),
            Some(Inbound::Gemini(GeminiCall {
                stream: true,
                sse: true
            }))
        );
        assert_eq!(
            plan(Inbound::Responses, Provider::Gemini, None, false),
            Some(Inbound::Gemini(GeminiCall {
                stream: false,
                sse: true
            }))
        );
        // Never translated: counting tokens, embeddings; never translated to: Bedrock.
        assert_eq!(
            plan(Inbound::CountTokens, Provider::OpenAi, None, false),
            None
        );
        assert_eq!(
            plan(Inbound::Embeddings, Provider::Anthropic, None, false),
            None
        );
        assert_eq!(
            plan(Inbound::Messages, Provider::Bedrock, None, false),
            None
        );
        // A target whose list allows none of its own APIs cannot serve.
        assert_eq!(
            plan(
                Inbound::Messages,
                Provider::OpenAi,
                Some(&["embeddings"]),
                false
            ),
            None
        );
        assert!(reachable(Inbound::Messages, Provider::OpenAi));
        assert!(!reachable(Inbound::CountTokens, Provider::OpenAi));
        // Bedrock serves Chat callers natively (its OpenAI-compatible endpoint) and is
        // never translated to: a Gemini caller cannot reach it.
        assert!(reachable(Inbound::Chat, Provider::Bedrock));
        assert!(!reachable(
            Inbound::Gemini(GeminiCall {
                stream: false,
                sse: false
            }),
            Provider::Bedrock
        ));
    }
}
