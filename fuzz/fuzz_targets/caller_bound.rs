//! The caller-bound response path on arbitrary upstream bodies, with configured secrets
//! and an OAuth token spliced in where the input says: it never panics, it never emits a
//! secret, and what it sends for a JSON API is valid JSON — or the body is refused (a
//! success becomes a failover; an error becomes Keyward's own valid error).
#![no_main]

use bytes::Bytes;
use keyward::gateway::caller_bound::{
    error_body, quoted_message, success_body, BodyDefect, Read, SecretMask,
};
use libfuzzer_sys::fuzz_target;

const SECRETS: [&str; 3] = [
    "sk-ant-fuzz-secret-0001",
    "AIzaFuzzSecretKey000002",
    "kw-fuzz-gateway-key-0003",
];
const TOKEN: &str = "fuzz-oauth-access-token-0004";

fn leaks(out: &[u8]) -> Option<&'static str> {
    SECRETS
        .iter()
        .chain([&TOKEN])
        .find(|s| memchr::memmem::find(out, s.as_bytes()).is_some())
        .copied()
}

fn is_json(b: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&splice, rest)) = rest.split_first() else {
        return;
    };
    // Splice a secret (or the token) into the body at a position the input picks.
    let mut body = rest.to_vec();
    if splice & 0x80 != 0 {
        let what = [SECRETS[0], SECRETS[1], SECRETS[2], TOKEN][usize::from(splice & 3)];
        let at = usize::from(splice >> 2 & 0x1f) * body.len() / 32;
        body.splice(at..at, what.bytes());
    }
    // Built once, as the gateway builds it once per configuration.
    static MASK: std::sync::OnceLock<SecretMask> = std::sync::OnceLock::new();
    let mask = MASK.get_or_init(|| SecretMask::new(SECRETS));
    let token = (flags & 1 != 0).then_some(TOKEN);
    let content_type = match flags >> 1 & 3 {
        0 => None,
        1 => Some("application/json"),
        2 => Some("text/html; charset=utf-8"),
        _ => Some("text/plain"),
    };
    let defect = match flags >> 3 & 3 {
        0 | 1 => None,
        2 => Some(BodyDefect::Cut { received: body.len() }),
        _ => Some(BodyDefect::TooLarge { limit: body.len() }),
    };
    let read = Read {
        body: Bytes::from(body),
        defect,
    };
    // With the token only when the attempt used it: otherwise it is not a secret here.
    let check = |out: &[u8], what: &str| {
        if let Some(s) = leaks(out) {
            assert!(
                s == TOKEN && token.is_none(),
                "{what} leaked a configured secret"
            );
        }
    };
    if flags & 0x20 != 0 {
        if let Ok(out) = success_body(mask, token, 200, content_type, &read) {
            assert!(is_json(&out), "a success sent as invalid JSON");
            check(&out, "a success body");
        }
    } else {
        match error_body(mask, token, 400, content_type, &read) {
            Ok(out) => {
                assert!(is_json(&out), "an error passed on as invalid JSON");
                check(&out, "a passed-on error body");
            }
            Err(e) => {
                assert!(is_json(&e.json_object()), "a substitute error that is not JSON");
                check(e.message.as_bytes(), "a substitute error");
            }
        }
    }
    let q = quoted_message(mask, token, &read.body);
    assert!(q.chars().count() <= 201);
    check(q.as_bytes(), "a quoted message");
});
