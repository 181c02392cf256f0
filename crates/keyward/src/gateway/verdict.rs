//! From an upstream's answer to the classifier's input: the one adapter between HTTP
//! (status, headers, body, transport errors) and `keyward_core::classify`, and the reads of
//! a response's headers the request path needs (rate-limit headroom, content type). The
//! classifier is pure; this is where the wall clock it needs for HTTP dates is read.

use std::time::Duration;

use axum::http::HeaderMap;
use futures_util::StreamExt;
use http_body_util::BodyDataStream;
use keyward_core::classify::{
    classify, Attempt, CredentialKind, Failure, Phase, Provider, TransportError,
};
use keyward_core::health::Headroom;

use super::caller_bound::SecretMask;
use super::upstream;
use crate::clock::wall_clock;

/// Classifies one attempt's failure on a credential: everything the classifier needs but
/// the answer itself, and the mask its verdict's quotes pass through.
pub(super) struct Verdicts<'a> {
    pub(super) mask: &'a SecretMask,
    pub(super) provider: Provider,
    pub(super) credential: CredentialKind,
    /// A rotating OAuth access token is not in the configuration's mask: the one this
    /// attempt sent is masked on its own.
    pub(super) token: Option<&'a str>,
}

impl Verdicts<'_> {
    /// The verdict on an answer (`status`, `headers`, `body`) or a transport failure, in
    /// `phase`. Its quotes of the upstream's words go into logs, health history and the
    /// caller's error: the configured secrets are masked there.
    pub(super) fn of(
        &self,
        status: Option<u16>,
        headers: &[(String, String)],
        body: &[u8],
        transport: Option<TransportError>,
        phase: Phase,
    ) -> Failure {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut failure = classify(&Attempt {
            provider: self.provider,
            credential: self.credential,
            endpoint: keyward_core::classify::EndpointKind::Inference,
            phase,
            transport,
            status,
            headers: &h,
            body,
            now: wall_clock(),
        });
        self.mask.scrub(&mut failure, self.token);
        failure
    }

    /// The verdict on a transport failure before any header arrived.
    pub(super) fn transport(&self, e: TransportError) -> Failure {
        self.of(None, &[], b"", Some(e), Phase::BeforeHeaders)
    }
}

/// What kind of transport failure `e` is: from the I/O and TLS errors in its source chain
/// first, then from the connector's own words (hyper-util's resolver reports "dns error").
pub(super) fn transport_kind(e: &upstream::SendError) -> TransportError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return TransportError::Tls;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::TimedOut => return TransportError::Timeout,
                std::io::ErrorKind::ConnectionRefused => return TransportError::ConnectRefused,
                _ => {}
            }
            // An I/O error's `source` skips the error it wraps (the TLS connector wraps
            // rustls's in two layers): descend into it.
            if let Some(inner) = io.get_ref() {
                source = Some(inner);
                continue;
            }
        }
        source = s.source();
    }
    let text = format!("{e:?}").to_ascii_lowercase();
    if text.contains("dns") || text.contains("resolve") {
        TransportError::Dns
    } else if text.contains("refused") {
        TransportError::ConnectRefused
    } else if text.contains("tls") || text.contains("certificate") {
        TransportError::Tls
    } else {
        TransportError::Reset
    }
}

pub(super) fn header_pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect()
}

pub(super) fn headroom(headers: &[(String, String)]) -> Option<Headroom> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
    };
    let remaining = get("anthropic-ratelimit-requests-remaining")
        .or_else(|| get("x-ratelimit-remaining-requests"))?;
    let limit =
        get("anthropic-ratelimit-requests-limit").or_else(|| get("x-ratelimit-limit-requests"));
    Some(Headroom {
        remaining,
        limit,
        reset_at: None,
    })
}

/// Whether a 2xx JSON body is really an error (`{"error": …}` or `{"type":"error"}`).
pub(super) fn carries_error(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(default)]
        error: Option<serde::de::IgnoredAny>,
        #[serde(default, borrow, rename = "type")]
        ty: Option<&'a str>,
    }
    // Both signs contain the word; a success body without it is not parsed at all.
    memchr::memmem::find(body, b"error").is_some()
        && serde_json::from_slice::<Probe<'_>>(body)
            .is_ok_and(|p| p.error.is_some() || p.ty == Some("error"))
}

/// The response's `content-type`, if it sent one.
pub(super) fn content_type(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str())
}

/// Reads `resp`'s body, up to `limit` bytes, while each piece comes within `idle`; a body
/// cut short gives what arrived.
pub(super) async fn read_limited(
    resp: upstream::Response,
    limit: usize,
    idle: Duration,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = BodyDataStream::new(resp.into_body());
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(idle, stream.next()).await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    async fn send_error(url: &str) -> upstream::SendError {
        let client = upstream::Client::new(Duration::from_secs(5)).unwrap();
        let req = axum::http::Request::get(url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        client.send(req).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_closed_port_is_a_refused_connection() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = send_error(&format!("http://127.0.0.1:{port}/")).await;
        assert_eq!(transport_kind(&e), TransportError::ConnectRefused);
    }

    #[tokio::test]
    async fn a_server_that_does_not_speak_tls_is_a_tls_failure() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let e = send_error(&format!("https://127.0.0.1:{port}/")).await;
        assert_eq!(transport_kind(&e), TransportError::Tls);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_closed_before_any_answer_is_a_reset() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            drop(s);
        });
        let e = send_error(&format!("http://127.0.0.1:{port}/")).await;
        assert_eq!(transport_kind(&e), TransportError::Reset);
        server.await.unwrap();
    }
}
