//! The caller-bound response path: every upstream body, success or error, whole or one
//! stream event at a time, passes here before a caller sees a byte of it.
//!
//! Why one module: the promises about what reaches a caller ("no provider secret", "no
//! truncated success", "valid JSON in the caller's format") were each kept in some places
//! and not others — the logs masked keys that error bodies passed through verbatim, streams
//! refused to end as a false success while a non-streaming body cut after 60 of 231
//! bytes went out as a `200`. Here each promise is one function, and the proxy cannot send
//! an upstream body without going through them:
//!
//! - [`read_body`] reads a body whole under three bounds (size, idle gap, the request's
//!   deadline) and reports what went wrong as a [`BodyDefect`] — a body shorter than its
//!   `content-length`, a connection cut or stalled mid-body, a body over the limit;
//! - [`success_body`] refuses a success body that is not one complete JSON value (an HTML
//!   captive portal, a body cut without a declared length) and masks secrets in it; the
//!   refusal becomes a classified failure ([`BodyDefect::failure`]) that fails over before
//!   anything is sent;
//! - [`error_body`] passes an upstream error through only when it is complete, valid JSON
//!   (masked); anything else becomes a valid error in the caller's own format that says
//!   what the upstream sent;
//! - [`SecretMask`] replaces every configured secret (provider keys, gateway keys, the
//!   admin token, and the OAuth access token an attempt used) with [`MASK`]: one matcher
//!   per configuration (SIMD screens that say "no secret here" in tens of nanoseconds, an
//!   Aho-Corasick automaton that rewrites the rare body that has one), and no allocation
//!   or copy when nothing matches — it sits on every request. Error bodies are
//!   additionally scanned for known key shapes (`sk-…`, `AIza…`, JWTs, bearer tokens)
//!   with the classifier's redactor; success bodies are not, because a model's answer
//!   may legitimately contain such text (and base64 payloads look like long tokens).

use std::borrow::Cow;
use std::time::Duration;

use aho_corasick::{AhoCorasick, MatchKind};
use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyDataStream;
use keyward_core::classify::{
    classify, mask_secrets, Attempt, CredentialKind, Failure, Phase, Provider, TransportError,
};
use keyward_wire::usage::{self, Usage};

use super::caller_error::{bounded, CallerError};

/// What a masked secret becomes in a caller-bound body: nothing of the secret is kept.
pub const MASK: &str = "…[masked]";

/// Secrets shorter than this are not masked: a string that short would match ordinary
/// prose, and is no real secret anyway.
pub const MIN_MASKED_LEN: usize = 8;

/// How much of a body that announced itself over the limit is still read (to classify
/// it, and to quote its message): enough for every provider's error shape.
const PREFIX_OF_REFUSED: usize = 64 * 1024;

/// How many characters of an upstream error's message a substitute error quotes.
const QUOTED_CHARS: usize = 200;

/// Most patterns one SIMD screen takes (the packed "Teddy" searcher's limit).
const SCREEN_PATTERNS: usize = 64;

/// Every secret of one configuration, found in one pass.
///
/// The usual answer is "no secret here", so that case is made cheap: SIMD screens
/// (aho-corasick's packed searchers, up to 64 secrets each) say whether any secret occurs
/// at all, at a few tens of nanoseconds per body; only a body that has one is rewritten,
/// by the automaton. Measured on a 369-byte Messages answer with 102 secrets: ~0.4 µs per
/// body for the automaton's own search, ~0.05 µs for the screens.
#[derive(Debug, Clone, Default)]
pub struct SecretMask {
    matcher: Option<AhoCorasick>,
    /// Cover every secret when `Some` (the CPU has the SIMD they need); otherwise the
    /// automaton screens too.
    screens: Option<Vec<aho_corasick::packed::Searcher>>,
}

impl SecretMask {
    /// A mask for `secrets` (those shorter than [`MIN_MASKED_LEN`] are skipped). A secret
    /// with characters JSON escapes (`"`, a backslash, and `/`, which some encoders escape — AWS
    /// secret keys have slashes) is also matched as it appears inside a JSON string.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> SecretMask {
        let mut patterns: Vec<String> = Vec::new();
        for s in secrets.into_iter().filter(|s| s.len() >= MIN_MASKED_LEN) {
            patterns.push(s.to_owned());
            if s.contains(['"', '\\', '/']) {
                let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
                patterns.push(escaped.replace('/', "\\/"));
                patterns.push(escaped);
            }
        }
        patterns.sort_unstable();
        patterns.dedup();
        if patterns.is_empty() {
            return SecretMask::default();
        }
        // Leftmost-longest: a key that contains another key is masked whole.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns);
        let screens = patterns
            .chunks(SCREEN_PATTERNS)
            .map(|group| {
                aho_corasick::packed::Config::new()
                    .builder()
                    .extend(group)
                    .build()
            })
            .collect::<Option<Vec<_>>>();
        match matcher {
            Ok(m) => SecretMask {
                matcher: Some(m),
                screens,
            },
            Err(e) => {
                // Only an absurd number of secrets exceeds the automaton's limits; the
                // gateway must not start without its mask, so fall back to the slow
                // path that always builds.
                tracing::warn!(error = %e, secrets = patterns.len(), "the secret matcher could not be built as one automaton; using the per-secret fallback");
                SecretMask {
                    matcher: AhoCorasick::builder()
                        .match_kind(MatchKind::LeftmostLongest)
                        .kind(Some(aho_corasick::AhoCorasickKind::NoncontiguousNFA))
                        .build(&patterns)
                        .ok(),
                    screens,
                }
            }
        }
    }

    /// `body` with every configured secret, and `token` (an OAuth access token this
    /// attempt used, which rotates and so is not in the automaton), replaced by [`MASK`].
    /// Borrowed — no allocation, no copy — when there is nothing to mask.
    pub fn mask<'b>(&self, body: &'b [u8], token: Option<&str>) -> Cow<'b, [u8]> {
        let mut out: Cow<'b, [u8]> = Cow::Borrowed(body);
        if let Some(m) = &self.matcher {
            if self.any(m, body) {
                let mut o = Vec::with_capacity(body.len());
                m.replace_all_with_bytes(body, &mut o, |_, _, dst| {
                    dst.extend_from_slice(MASK.as_bytes());
                    true
                });
                out = Cow::Owned(o);
            }
        }
        if let Some(t) = token.filter(|t| t.len() >= MIN_MASKED_LEN) {
            let finder = memchr::memmem::Finder::new(t.as_bytes());
            if finder.find(&out).is_some() {
                let mut o = Vec::with_capacity(out.len());
                let mut last = 0;
                for at in finder.find_iter(&out) {
                    if at < last {
                        continue;
                    }
                    o.extend_from_slice(&out[last..at]);
                    o.extend_from_slice(MASK.as_bytes());
                    last = at + t.len();
                }
                o.extend_from_slice(&out[last..]);
                out = Cow::Owned(o);
            }
        }
        out
    }

    /// [`SecretMask::mask`] on an owned buffer (a stream chunk): the same buffer back when
    /// there is nothing to mask.
    pub fn mask_owned(&self, body: Vec<u8>, token: Option<&str>) -> Vec<u8> {
        match self.mask(&body, token) {
            Cow::Borrowed(_) => body,
            Cow::Owned(o) => o,
        }
    }

    /// Masks the configured secrets (and `token`) in what a verdict quotes from the
    /// upstream — its explanation, evidence and provider code — which reaches the logs, the
    /// health history the admin API shows, and the caller's error. The classifier already
    /// masks known key shapes; a key of no known shape is caught here.
    pub fn scrub(&self, failure: &mut Failure, token: Option<&str>) {
        let clean = |text: &mut String| {
            if let Cow::Owned(o) = self.mask(text.as_bytes(), token) {
                *text = String::from_utf8_lossy(&o).into_owned();
            }
        };
        clean(&mut failure.explanation);
        clean(&mut failure.evidence.value);
        if let Some(code) = failure.provider_code.as_mut() {
            clean(code);
        }
    }

    /// Whether any configured secret occurs in `hay`.
    fn any(&self, m: &AhoCorasick, hay: &[u8]) -> bool {
        match &self.screens {
            Some(screens) => screens.iter().any(|s| s.find(hay).is_some()),
            None => m.find(hay).is_some(),
        }
    }

    /// Whether `text` contains a configured secret or `token` (for header values).
    pub fn contains_secret(&self, text: &[u8], token: Option<&str>) -> bool {
        self.matcher.as_ref().is_some_and(|m| self.any(m, text))
            || token
                .filter(|t| t.len() >= MIN_MASKED_LEN)
                .is_some_and(|t| memchr::memmem::find(text, t.as_bytes()).is_some())
    }
}

/// What was wrong with an upstream body, found before anything was sent. Each becomes a
/// classified failure of the attempt (label: the failure's class) and the request fails
/// over; the caller sees it only when no other candidate answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyDefect {
    /// The connection closed before the `content-length` it promised.
    #[error("the upstream body ended after {received} of the {declared} bytes its content-length promised (a truncated answer); if this repeats, check the endpoint's network path")]
    Short { declared: u64, received: usize },
    /// The connection failed mid-body (reset, or closed without the end of a chunked body).
    #[error("the upstream connection was cut after {received} bytes of the body (a truncated answer); if this repeats, check the endpoint's network path")]
    Cut { received: usize },
    /// No bytes within the idle limit.
    #[error("the upstream body stalled after {received} bytes (nothing within the idle limit of {idle:?})")]
    Stalled { received: usize, idle: Duration },
    /// The request's deadline passed while the body was still arriving.
    #[error("the upstream body was still arriving at the request deadline ({received} bytes so far); raise `timeouts.request` if answers this slow are expected")]
    Deadline { received: usize },
    /// More bytes than the limit.
    #[error("the upstream body is larger than {limit} bytes (limits.max_body_bytes); raise the limit if answers this large are expected")]
    TooLarge { limit: usize },
    /// A page of another kind where the API answers JSON.
    #[error("the upstream answered {status} with `{content_type}`, not JSON (a captive portal or a misrouted proxy?); check the endpoint's base_url and network path")]
    NotJson { status: u16, content_type: String },
    /// Not one complete JSON value.
    #[error("the upstream answered {status} with a body that is not complete JSON ({why}); if this repeats, check the endpoint's network path")]
    BadJson { status: u16, why: &'static str },
}

impl BodyDefect {
    /// The classified failure of an attempt whose body had this defect: a transport class
    /// for a cut or stalled body, a server error for a body that is too large or not the
    /// API's answer — never a credential verdict (nothing here says the key is bad).
    pub fn failure(&self, provider: Provider, kind: CredentialKind) -> Failure {
        let mut f = match self {
            BodyDefect::Short { .. } | BodyDefect::Cut { .. } => classify(
                &Attempt::transport(provider, TransportError::Reset, Phase::MidStream)
                    .credential(kind),
            ),
            BodyDefect::Stalled { .. } | BodyDefect::Deadline { .. } => classify(
                &Attempt::transport(provider, TransportError::Timeout, Phase::MidStream)
                    .credential(kind),
            ),
            BodyDefect::TooLarge { .. }
            | BodyDefect::NotJson { .. }
            | BodyDefect::BadJson { .. } => {
                classify(&Attempt::response(provider, 502, b"").credential(kind))
            }
        };
        f.explanation = self.to_string();
        f
    }
}

/// An upstream body as read: the bytes (at most the limit), and what was wrong, if
/// anything.
#[derive(Debug, Clone, Default)]
pub struct Read {
    pub body: Bytes,
    pub defect: Option<BodyDefect>,
}

/// Reads `resp`'s body whole: at most `limit` bytes, each piece within `idle` of the last,
/// all of it before `deadline`. A body that arrives in one piece is kept as it came (no
/// copy).
pub async fn read_body<B>(
    resp: axum::http::Response<B>,
    limit: usize,
    idle: Duration,
    deadline: tokio::time::Instant,
) -> Read
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let declared = resp
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // A body that announces itself too large is refused, but its start is still read
    // (a bounded prefix) to classify it and to quote its message.
    let announced_too_large = declared.is_some_and(|d| d > limit as u64);
    let reported_limit = limit;
    let limit = if announced_too_large {
        limit.min(PREFIX_OF_REFUSED)
    } else {
        limit
    };
    let mut stream = BodyDataStream::new(resp.into_body());
    let mut one: Option<Bytes> = None;
    let mut many: Vec<u8> = Vec::new();
    let mut len = 0usize;
    let defect = loop {
        let wait = tokio::time::Instant::now() + idle;
        let next = tokio::time::timeout_at(wait.min(deadline), stream.next()).await;
        let chunk = match next {
            Err(_) if tokio::time::Instant::now() >= deadline => {
                break Some(BodyDefect::Deadline { received: len })
            }
            Err(_) => {
                break Some(BodyDefect::Stalled {
                    received: len,
                    idle,
                })
            }
            Ok(None) => break None,
            Ok(Some(Err(_))) => break Some(BodyDefect::Cut { received: len }),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let room = limit.saturating_sub(len);
        let over = chunk.len() > room;
        let chunk = if over { chunk.slice(..room) } else { chunk };
        len += chunk.len();
        match (one.take(), many.is_empty()) {
            (None, true) => one = Some(chunk),
            (first, _) => {
                if let Some(f) = first {
                    let want = declared
                        .map_or(0, |d| usize::try_from(d).unwrap_or(usize::MAX))
                        .min(limit);
                    many.reserve(want.max(f.len() + chunk.len()));
                    many.extend_from_slice(&f);
                }
                many.extend_from_slice(&chunk);
            }
        }
        if over || (announced_too_large && len >= limit) {
            break Some(BodyDefect::TooLarge {
                limit: reported_limit,
            });
        }
    };
    let defect = defect.map(|d| match d {
        // However the read of a refused body's prefix ended, it was refused for its size.
        _ if announced_too_large => BodyDefect::TooLarge {
            limit: reported_limit,
        },
        d => d,
    });
    let defect = defect.or_else(|| {
        if announced_too_large {
            return Some(BodyDefect::TooLarge {
                limit: reported_limit,
            });
        }
        declared
            .filter(|&d| d != len as u64)
            .map(|declared| BodyDefect::Short {
                declared,
                received: len,
            })
    });
    Read {
        body: one.unwrap_or_else(|| Bytes::from(many)),
        defect,
    }
}

/// Whether `body` is one complete JSON value (nothing after it but whitespace). Allocates
/// nothing: every value is skipped, not built.
pub fn json_defect(status: u16, content_type: Option<&str>, body: &[u8]) -> Option<BodyDefect> {
    if let Some(ct) = content_type.filter(|ct| ct.trim_start().starts_with("text/html")) {
        return Some(BodyDefect::NotJson {
            status,
            content_type: bounded(ct, 60).into_owned(),
        });
    }
    // The common case in one structural pass (a whole object or array); the full parser
    // only for what fails it, to say why.
    if keyward_wire::splice::is_complete_container(body) {
        return None;
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) => None,
        Err(e) => match content_type {
            Some(ct) if !ct.contains("json") => Some(BodyDefect::NotJson {
                status,
                content_type: bounded(ct, 60).into_owned(),
            }),
            _ => Some(BodyDefect::BadJson {
                status,
                why: if e.is_eof() {
                    "it ends in the middle of a value: truncated"
                } else {
                    "it is not valid JSON"
                },
            }),
        },
    }
}

/// The success body to send, masked; or why it must not be sent.
pub fn success_body<'b>(
    mask: &SecretMask,
    token: Option<&str>,
    status: u16,
    content_type: Option<&str>,
    read: &'b Read,
) -> Result<Cow<'b, [u8]>, BodyDefect> {
    success(mask, token, status, content_type, read).map(|s| s.body)
}

/// A success body fit for the caller, and the usage it reports.
#[derive(Debug)]
pub struct Success<'b> {
    pub body: Cow<'b, [u8]>,
    pub usage: Option<Usage>,
}

/// [`success_body`], with the answer's usage read in the same pass over the body that
/// checks it is whole (the common case: one JSON object).
pub fn success<'b>(
    mask: &SecretMask,
    token: Option<&str>,
    status: u16,
    content_type: Option<&str>,
    read: &'b Read,
) -> Result<Success<'b>, BodyDefect> {
    if let Some(d) = &read.defect {
        return Err(d.clone());
    }
    let whole = usage::of_whole_object(&read.body);
    let html = content_type.is_some_and(|ct| ct.trim_start().starts_with("text/html"));
    if whole.is_none() || html {
        if let Some(d) = json_defect(status, content_type, &read.body) {
            return Err(d);
        }
    }
    let out = mask.mask(&read.body, token);
    // A secret where JSON expects a number or a name: masking it must not send broken
    // JSON (checked only when something was masked).
    if let Cow::Owned(o) = &out {
        if let Some(d) = json_defect(status, content_type, o) {
            return Err(d);
        }
    }
    Ok(Success {
        body: out,
        usage: whole.flatten(),
    })
}

/// An upstream error body for the caller: passed through when it is complete JSON (with
/// secrets and key shapes masked); otherwise a valid error in the caller's format, with
/// the same status, saying what the upstream sent and quoting the start of its message
/// (rendered in the caller's wire format by [`CallerError::response`]).
pub fn error_body(
    mask: &SecretMask,
    token: Option<&str>,
    status: u16,
    content_type: Option<&str>,
    read: &Read,
) -> Result<Bytes, CallerError> {
    let defect = read
        .defect
        .clone()
        .or_else(|| json_defect(status, content_type, &read.body));
    let Some(defect) = defect else {
        let exact = mask.mask(&read.body, token);
        // Valid JSON is valid UTF-8.
        let text = std::str::from_utf8(&exact).unwrap_or("");
        let masked = mask_secrets(text);
        let changed = matches!(exact, Cow::Owned(_)) || matches!(masked, Cow::Owned(_));
        if !changed {
            return Ok(read.body.clone());
        }
        if json_defect(status, content_type, masked.as_bytes()).is_none() {
            return Ok(Bytes::from(masked.into_owned()));
        }
        return Err(substitute(
            mask,
            token,
            status,
            &read.body,
            "unreadable once its secrets were masked",
        ));
    };
    let what = match defect {
        BodyDefect::TooLarge { .. } => "too large to pass on",
        BodyDefect::NotJson { .. } => "not JSON",
        BodyDefect::Short { .. } | BodyDefect::Cut { .. } => "truncated",
        BodyDefect::Stalled { .. } | BodyDefect::Deadline { .. } => "incomplete (it stalled)",
        BodyDefect::BadJson { .. } => "not complete JSON",
    };
    Err(substitute(mask, token, status, &read.body, what))
}

/// The caller's own error, standing in for an upstream error body that cannot be passed
/// on.
fn substitute(
    mask: &SecretMask,
    token: Option<&str>,
    status: u16,
    body: &[u8],
    what: &str,
) -> CallerError {
    let quoted = quoted_message(mask, token, body);
    let message = if quoted.is_empty() {
        format!("keyward: the upstream answered {status} with an error body that was {what}")
    } else {
        format!("keyward: the upstream answered {status} with an error body that was {what}; it began: \"{quoted}\"")
    };
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let (kind, code) = match status.as_u16() {
        404 => ("not_found_error", "upstream_error_unreadable"),
        413 => ("request_too_large", "upstream_error_unreadable"),
        429 => ("rate_limit_error", "upstream_error_unreadable"),
        400..=499 => ("invalid_request_error", "upstream_error_unreadable"),
        _ => ("api_error", "upstream_error_unreadable"),
    };
    CallerError::new(status, kind, code, message)
}

/// The start of an error body's `"message"` value (or of the body itself), masked and
/// bounded: safe to quote in a caller's error however the body was cut.
pub fn quoted_message(mask: &SecretMask, token: Option<&str>, body: &[u8]) -> String {
    let head = &body[..body.len().min(4096)];
    let start = memchr::memmem::find(head, b"\"message\"")
        .and_then(|at| {
            let rest = &head[at + 9..];
            let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
            (rest[colon] == b':').then_some(())?;
            let after = &rest[colon + 1..];
            let q = after.iter().position(|b| !b.is_ascii_whitespace())?;
            (after[q] == b'"').then(|| &after[q + 1..])
        })
        .unwrap_or(head);
    // Up to the closing quote (an escaped one does not close it).
    let in_string = start.len() != head.len();
    let mut end = start.len();
    let mut escaped = false;
    for (i, &b) in start.iter().enumerate() {
        match b {
            b'\\' if !escaped => escaped = true,
            b'"' if !escaped && in_string => {
                end = i;
                break;
            }
            _ => escaped = false,
        }
    }
    let raw = &start[..end.min(QUOTED_CHARS * 4)];
    let text = String::from_utf8_lossy(raw);
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    let shapes = mask_secrets(&text);
    // The exact mask comes last: removing a control character can join the halves of
    // a secret that the raw bytes kept apart (a fuzzing finding).
    let exact = mask.mask(shapes.as_bytes(), token);
    let masked = String::from_utf8_lossy(&exact);
    bounded(masked.trim(), QUOTED_CHARS).into_owned()
}

#[cfg(test)]
mod tests;
