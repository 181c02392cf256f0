//! The classifier on arbitrary bytes. The first bytes choose the provider, credential,
//! endpoint, phase and status; the rest is the body. Besides "no panic", it checks the
//! invariants the gateway relies on: determinism, bounded work (bytes past the examined
//! prefix never change the verdict) and no secret in the output.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use keyward_core::classify::{
    classify, Attempt, CredentialKind, EndpointKind, Phase, Provider, MAX_EXAMINED,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let provider = Provider::ALL[usize::from(data[0]) % Provider::ALL.len()];
    let credential = [CredentialKind::ApiKey, CredentialKind::OAuth, CredentialKind::Cloud]
        [usize::from(data[1] % 3)];
    let endpoint = if data[1] & 0x80 != 0 { EndpointKind::Token } else { EndpointKind::Inference };
    let phase = [Phase::BeforeHeaders, Phase::Headers, Phase::MidStream][usize::from(data[2] % 3)];
    let status = match data[3] {
        0 => None,
        s => Some(u16::from(s) + 300),
    };
    let body = &data[4..];
    let headers = [("retry-after", "7"), ("x-ratelimit-reset-tokens", "1m2s")];
    let now = UNIX_EPOCH + Duration::from_secs(1_751_278_440);
    let attempt = Attempt {
        provider,
        credential,
        endpoint,
        phase,
        transport: None,
        status,
        headers: if data[2] & 0x80 != 0 { &headers } else { &[] },
        body,
        now,
    };
    let a = classify(&attempt);
    assert_eq!(a, classify(&attempt), "not deterministic");
    if body.len() > MAX_EXAMINED {
        let cut = Attempt { body: &body[..MAX_EXAMINED], ..attempt };
        assert_eq!(a, classify(&cut), "bytes past the examined prefix changed the verdict");
    }
    assert!(!a.explanation.is_empty());
});
