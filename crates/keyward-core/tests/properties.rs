#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Properties of the classifier over arbitrary input: it never panics, it is
//! deterministic, its work is bounded (bytes past the examined prefix never change a
//! verdict), free text never yields a high-confidence `auth_permanent`, and a secret in a
//! body never comes back out.

use std::time::{Duration, UNIX_EPOCH};

use keyward_core::classify::{
    classify, headers, Attempt, Class, Confidence, CredentialKind, EndpointKind, Phase, Provider,
    TransportError, MAX_EXAMINED,
};
use proptest::prelude::*;

fn provider() -> impl Strategy<Value = Provider> {
    prop::sample::select(Provider::ALL.to_vec())
}

fn credential() -> impl Strategy<Value = CredentialKind> {
    prop::sample::select(vec![
        CredentialKind::ApiKey,
        CredentialKind::OAuth,
        CredentialKind::Cloud,
    ])
}

fn endpoint() -> impl Strategy<Value = EndpointKind> {
    prop::sample::select(vec![EndpointKind::Inference, EndpointKind::Token])
}

fn status() -> impl Strategy<Value = Option<u16>> {
    prop_oneof![
        Just(None),
        prop::sample::select(vec![
            200u16, 400, 401, 402, 403, 404, 408, 410, 412, 413, 422, 429, 498, 499, 500, 502, 503,
            504, 520, 529
        ])
        .prop_map(Some),
        (100u16..1000).prop_map(Some),
    ]
}

/// Fragments that steer bodies into the structured paths (JSON envelopes, SSE, HTML).
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{\"error\":{".to_owned()),
        Just("\"type\":\"".to_owned()),
        Just("\"code\":".to_owned()),
        Just("\"message\":\"".to_owned()),
        Just("\"status\":\"RESOURCE_EXHAUSTED\"".to_owned()),
        Just(
            "\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":\""
                .to_owned()
        ),
        Just("\"retryDelay\":\"".to_owned()),
        Just("event: error\ndata: ".to_owned()),
        Just("data: {\"choices\":[{\"finish_reason\":\"".to_owned()),
        Just("<html><title>".to_owned()),
        Just("invalid api key".to_owned()),
        Just("credit balance is too low".to_owned()),
        Just("rate limit".to_owned()),
        Just("overloaded".to_owned()),
        Just("revoked".to_owned()),
        Just("token expired".to_owned()),
        Just("HTTP 402: ".to_owned()),
        Just("\\u00e9\\ud83d".to_owned()),
        Just("}".to_owned()),
        Just("]".to_owned()),
        Just("\"".to_owned()),
        Just(",".to_owned()),
        "[a-z_ ]{0,12}",
        "[0-9]{1,4}",
        "\\PC{0,8}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        prop::collection::vec(fragment(), 0..40).prop_map(|f| f.concat().into_bytes()),
    ]
}

fn header_list() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop::sample::select(vec![
        "retry-after",
        "retry-after-ms",
        "x-ratelimit-reset-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-tokens-remaining",
        "x-ratelimit-reset",
        "x-amzn-errortype",
        "content-type",
    ]);
    let value = prop_oneof![
        "[0-9]{1,12}",
        "[0-9]{1,3}(\\.[0-9]{1,3})?(h|m|s|ms|us)([0-9]{1,2}s)?",
        Just("Mon, 30 Jun 2025 10:14:30 GMT".to_owned()),
        Just("2025-06-30T10:15:32Z".to_owned()),
        Just("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/".to_owned()),
        "\\PC{0,20}",
    ];
    prop::collection::vec((name.prop_map(str::to_owned), value), 0..6)
}

#[derive(Debug, Clone)]
struct Input {
    provider: Provider,
    credential: CredentialKind,
    endpoint: EndpointKind,
    status: Option<u16>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn input() -> impl Strategy<Value = Input> {
    (
        provider(),
        credential(),
        endpoint(),
        status(),
        header_list(),
        body(),
    )
        .prop_map(
            |(provider, credential, endpoint, status, headers, body)| Input {
                provider,
                credential,
                endpoint,
                status,
                headers,
                body,
            },
        )
}

fn run(i: &Input, body: &[u8]) -> keyward_core::classify::Failure {
    let h: Vec<(&str, &str)> = i
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    classify(&Attempt {
        provider: i.provider,
        credential: i.credential,
        endpoint: i.endpoint,
        phase: Phase::Headers,
        transport: None,
        status: i.status,
        headers: &h,
        body,
        now: UNIX_EPOCH + Duration::from_secs(1_751_278_440),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_and_is_deterministic(i in input()) {
        let a = run(&i, &i.body);
        let b = run(&i, &i.body);
        prop_assert_eq!(&a, &b);
        prop_assert!(!a.explanation.is_empty());
        prop_assert!(a.retry_after.is_none_or(|d| d <= headers::MAX_DELAY));
    }

    #[test]
    fn bytes_past_the_examined_prefix_never_matter(i in input(), tail in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut long = i.body.clone();
        long.resize(MAX_EXAMINED, b' ');
        let base = run(&i, &long);
        long.extend_from_slice(&tail);
        long.extend(std::iter::repeat_n(b'x', 100_000));
        prop_assert_eq!(base, run(&i, &long));
    }

    #[test]
    fn free_text_never_yields_high_confidence_auth_permanent(
        p in provider(), c in credential(), st in status(),
        words in prop::collection::vec(fragment().prop_filter("no JSON", |f| !f.contains(['{', '[', '<'])), 0..20),
    ) {
        let text = words.concat();
        let i = Input { provider: p, credential: c, endpoint: EndpointKind::Inference, status: st, headers: vec![], body: text.clone().into_bytes() };
        let f = run(&i, text.as_bytes());
        prop_assert!(
            !(f.class == Class::AuthPermanent && f.confidence == Confidence::High),
            "free text {:?} gave a high-confidence auth_permanent: {}", text, f.explanation
        );
    }

    #[test]
    fn secrets_in_bodies_never_come_back(
        i in input(),
        prefix in prop::sample::select(vec!["sk-proj-", "sk-ant-api03-", "AIza", "xai-", "gsk_", "ghp_"]),
        key in "[A-Za-z0-9]{24,48}",
        shape in 0..4usize,
    ) {
        let secret = format!("{prefix}{key}");
        let body = match shape {
            0 => format!("{{\"error\":{{\"message\":\"Incorrect API key provided: {secret}.\",\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}}}"),
            1 => format!("invalid api key {secret}"),
            2 => format!("{{\"error\":\"{secret}\",\"code\":\"{secret}\"}}"),
            _ => format!("event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{secret}\",\"message\":\"key {secret} revoked\"}}}}\n\n"),
        };
        let f = run(&i, body.as_bytes());
        let out = serde_json::to_string(&f).unwrap();
        prop_assert!(!out.contains(&key[..16]), "secret leaked: {}", out);
    }

    #[test]
    fn header_parsers_are_total(v in "\\PC{0,64}") {
        let now = UNIX_EPOCH + Duration::from_secs(1_751_278_440);
        for d in [
            headers::parse_retry_after(&v, now),
            headers::parse_retry_after_ms(&v),
            headers::parse_go_duration(&v),
            headers::parse_rfc3339_delay(&v, now),
            headers::parse_reset_epoch_or_delta(&v, now),
            headers::retry_after_from_text(&v),
        ].into_iter().flatten() {
            prop_assert!(d <= headers::MAX_DELAY);
        }
    }

    #[test]
    fn transport_errors_are_transient(p in provider(), t in prop::sample::select(vec![
        TransportError::ConnectRefused, TransportError::Reset, TransportError::Tls, TransportError::Dns, TransportError::Timeout,
    ]), phase in prop::sample::select(vec![Phase::BeforeHeaders, Phase::Headers, Phase::MidStream])) {
        let f = classify(&Attempt::transport(p, t, phase));
        prop_assert!(matches!(f.class, Class::Network | Class::Timeout));
        prop_assert!(f.class.retries_same_credential());
    }
}
