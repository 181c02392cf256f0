//! The header and delay parsers on arbitrary text: total, and never beyond MAX_DELAY.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use keyward_core::classify::headers;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_751_278_440);
    let parsed = [
        headers::parse_retry_after(text, now),
        headers::parse_retry_after_ms(text),
        headers::parse_seconds(text),
        headers::parse_go_duration(text),
        headers::parse_rfc3339_delay(text, now),
        headers::parse_reset_epoch_or_delta(text, now),
        headers::retry_after_from_text(text),
    ];
    for d in parsed.into_iter().flatten() {
        assert!(d <= headers::MAX_DELAY);
    }
    // As a header list: "name: value" lines.
    let pairs: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .collect();
    if let Some((d, _)) = headers::retry_after_from_headers(&pairs, now) {
        assert!(d <= headers::MAX_DELAY);
    }
});
