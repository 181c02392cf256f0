//! When may the request be tried again? Every provider says it differently: `retry-after`
//! (seconds or an HTTP-date), `retry-after-ms`, OpenAI's `x-ratelimit-reset-*` Go-style
//! durations (`6m0s`, `20ms`), Anthropic's `anthropic-ratelimit-*-reset` RFC 3339 instants,
//! `x-ratelimit-reset` (an epoch or a delta), Google's `RetryInfo.retryDelay` in the body,
//! and, last, the message text ("Please try again in 20s").
//!
//! All parsers are total: any input gives `Some` sane duration or `None`, never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest delay any parser reports; longer values are clamped (a policy caps further).
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Case-insensitive lookup in a header list.
pub fn header<'h>(headers: &[(&'h str, &'h str)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// `retry-after`: delta-seconds (integer or decimal) or an HTTP-date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Some(d) = parse_seconds(v) {
        return Some(d);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(clamp(at.duration_since(now).unwrap_or(Duration::ZERO)))
}

/// `retry-after-ms`: milliseconds, integer or decimal.
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let ms: f64 = value.trim().parse().ok()?;
    finite_secs(ms / 1000.0)
}

/// Plain (possibly fractional) seconds.
pub fn parse_seconds(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    finite_secs(v.parse().ok()?)
}

/// Go-style durations as OpenAI sends them: `6m0s`, `1s`, `20ms`, `1h2m3.5s`, `9m38.016s`,
/// `150us`, `2.5h`.
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let s = value.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total = 0f64;
    while i < b.len() {
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        if start == i {
            return None;
        }
        let n: f64 = s.get(start..i)?.parse().ok()?;
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() || (i < b.len() && b[i] == 0xc2) {
            i += 1;
        }
        // Allow "µs" (two bytes in UTF-8).
        if i < b.len() && b[i] == 0xb5 {
            i += 1;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
        }
        let unit = s.get(ustart..i)?;
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "\u{3bc}s" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * scale;
    }
    finite_secs(total)
}

/// An RFC 3339 instant (Anthropic's `anthropic-ratelimit-*-reset`) as a delay from `now`.
pub fn parse_rfc3339_delay(value: &str, now: SystemTime) -> Option<Duration> {
    let at = humantime::parse_rfc3339_weak(value.trim()).ok()?;
    Some(clamp(at.duration_since(now).unwrap_or(Duration::ZERO)))
}

/// `x-ratelimit-reset`: an epoch (seconds, or milliseconds when very large) if it lies
/// after 2001, else a delta in seconds; Go-style durations are accepted too.
pub fn parse_reset_epoch_or_delta(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(n) = v.parse::<f64>() {
        if !n.is_finite() || n < 0.0 {
            return None;
        }
        let now_s = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
        let epoch = if n > 1e12 { n / 1000.0 } else { n };
        if epoch > 1e9 {
            return finite_secs((epoch - now_s).max(0.0));
        }
        return finite_secs(n);
    }
    parse_go_duration(v).or_else(|| parse_rfc3339_delay(v, now))
}

/// The retry delay the headers give, with the header it came from. Order: `retry-after-ms`,
/// `retry-after`, the provider reset headers of exhausted limits, `x-ratelimit-reset`.
/// The header list is walked once.
pub fn retry_after_from_headers(
    headers: &[(&str, &str)],
    now: SystemTime,
) -> Option<(Duration, &'static str)> {
    const ANTHROPIC_KINDS: [&str; 4] = ["requests", "tokens", "input-tokens", "output-tokens"];
    let mut retry_after_ms = None;
    let mut retry_after = None;
    let mut ratelimit_reset = None;
    // (reset, remaining): OpenAI requests and tokens; Anthropic per kind.
    let mut openai: [(Option<&str>, Option<&str>); 2] = [(None, None); 2];
    let mut anthropic: [(Option<&str>, Option<&str>); 4] = [(None, None); 4];
    for (name, value) in headers {
        let name = name.trim();
        if name.len() > 64 {
            continue;
        }
        let mut buf = [0u8; 64];
        let lower = &mut buf[..name.len()];
        lower.copy_from_slice(name.as_bytes());
        lower.make_ascii_lowercase();
        let Ok(lower) = std::str::from_utf8(lower) else {
            continue;
        };
        let v = Some(value.trim());
        match lower {
            "retry-after-ms" => retry_after_ms = v,
            "retry-after" => retry_after = v,
            "x-ratelimit-reset" => ratelimit_reset = v,
            "x-ratelimit-reset-requests" => openai[0].0 = v,
            "x-ratelimit-remaining-requests" => openai[0].1 = v,
            "x-ratelimit-reset-tokens" => openai[1].0 = v,
            "x-ratelimit-remaining-tokens" => openai[1].1 = v,
            _ => {
                let Some(rest) = lower.strip_prefix("anthropic-ratelimit-") else {
                    continue;
                };
                for (k, kind) in ANTHROPIC_KINDS.iter().enumerate() {
                    match rest.strip_prefix(kind) {
                        Some("-reset") => anthropic[k].0 = v,
                        Some("-remaining") => anthropic[k].1 = v,
                        _ => {}
                    }
                }
            }
        }
    }
    if let Some(d) = retry_after_ms.and_then(parse_retry_after_ms) {
        return Some((d, "retry-after-ms"));
    }
    if let Some(d) = retry_after.and_then(|v| parse_retry_after(v, now)) {
        return Some((d, "retry-after"));
    }
    if let Some(d) = latest_exhausted(&openai, parse_go_duration) {
        return Some((d, "x-ratelimit-reset-*"));
    }
    if let Some(d) = latest_exhausted(&anthropic, |v| parse_rfc3339_delay(v, now)) {
        return Some((d, "anthropic-ratelimit-*-reset"));
    }
    if let Some(d) = ratelimit_reset.and_then(|v| parse_reset_epoch_or_delta(v, now)) {
        return Some((d, "x-ratelimit-reset"));
    }
    None
}

/// The latest reset among the limits that are exhausted (remaining `0`); when none is
/// known to be exhausted, the latest reset of all.
fn latest_exhausted(
    limits: &[(Option<&str>, Option<&str>)],
    parse: impl Fn(&str) -> Option<Duration>,
) -> Option<Duration> {
    let mut exhausted: Option<Duration> = None;
    let mut any: Option<Duration> = None;
    for (reset, remaining) in limits {
        let Some(d) = reset.and_then(&parse) else {
            continue;
        };
        any = Some(any.map_or(d, |a| a.max(d)));
        if remaining.is_some_and(|r| r == "0") {
            exhausted = Some(exhausted.map_or(d, |e| e.max(d)));
        }
    }
    exhausted.or(any)
}

/// A delay stated in a message: "Please try again in 20s", "retry in 51.2s", "Please retry
/// after 2 seconds", "Retry-After: 120 seconds", "try again in 24 hours". Low confidence.
pub fn retry_after_from_text(msg: &str) -> Option<Duration> {
    const LEADS: [&str; 6] = [
        "try again in ",
        "retry in ",
        "retry after ",
        "retry-after: ",
        "retry-after ",
        "try again after ",
    ];
    let bytes = msg.as_bytes();
    for lead in LEADS {
        let mut from = 0;
        while let Some(rel) = crate::classify::body::find_ascii_ci(msg.get(from..)?, lead) {
            let at = from + rel + lead.len();
            from = at;
            let rest = msg.get(at..)?;
            if let Some(d) = duration_words(rest) {
                return Some(d);
            }
            if from >= bytes.len() {
                break;
            }
        }
    }
    None
}

/// Parses "20s", "9m38.016s", "2 seconds", "90 minutes", "24 hours", "1 day" at the start.
fn duration_words(rest: &str) -> Option<Duration> {
    let token_end = rest
        .find(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ')')
        .unwrap_or(rest.len());
    let token = rest.get(..token_end)?.trim_end_matches('.');
    if let Some(d) = parse_go_duration(token) {
        return Some(d);
    }
    let n: f64 = token.parse().ok()?;
    let unit = rest.get(token_end..)?.trim_start();
    let unit_word: String = unit
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    let scale = match unit_word.as_str() {
        "ms" | "millisecond" | "milliseconds" => 1e-3,
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        _ => return None,
    };
    finite_secs(n * scale)
}

fn finite_secs(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(clamp(Duration::from_secs_f64(
        secs.min(MAX_DELAY.as_secs_f64()),
    )))
}

fn clamp(d: Duration) -> Duration {
    d.min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        // 2025-06-30T10:14:00Z
        UNIX_EPOCH + Duration::from_secs(1_751_278_440)
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(
            parse_retry_after("23", now()),
            Some(Duration::from_secs(23))
        );
        assert_eq!(
            parse_retry_after("1.5", now()),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Mon, 30 Jun 2025 10:14:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Mon, 30 Jun 2025 10:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(
            parse_retry_after_ms("1500"),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_go_duration("9m38.016s"),
            Some(Duration::from_millis(578_016))
        );
        assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("150us"), Some(Duration::from_micros(150)));
        assert_eq!(parse_go_duration("µs"), None);
        assert_eq!(parse_go_duration("12"), None);
        assert_eq!(parse_go_duration("3x"), None);
        assert_eq!(parse_go_duration("99999999h"), Some(MAX_DELAY));
    }

    #[test]
    fn epoch_or_delta() {
        assert_eq!(
            parse_reset_epoch_or_delta("30", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_reset_epoch_or_delta("1751278500", now()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_reset_epoch_or_delta("1751278500000", now()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_reset_epoch_or_delta("1751270000", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn header_precedence() {
        let h = [("Retry-After", "7"), ("retry-after-ms", "2500")];
        assert_eq!(
            retry_after_from_headers(&h, now()),
            Some((Duration::from_millis(2500), "retry-after-ms"))
        );
        let h = [
            ("x-ratelimit-remaining-requests", "5"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(
            retry_after_from_headers(&h, now()).map(|x| x.0),
            Some(Duration::from_secs(360))
        );
        let h = [
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2025-06-30T10:15:32Z",
            ),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2025-06-30T10:14:10Z"),
        ];
        assert_eq!(
            retry_after_from_headers(&h, now()),
            Some((Duration::from_secs(92), "anthropic-ratelimit-*-reset"))
        );
        let h = [("x-ratelimit-reset", "12")];
        assert_eq!(
            retry_after_from_headers(&h, now()).map(|x| x.0),
            Some(Duration::from_secs(12))
        );
        assert_eq!(retry_after_from_headers(&[], now()), None);
    }

    #[test]
    fn delays_in_text() {
        assert_eq!(
            retry_after_from_text("Limit 3, Used 3. Please try again in 20s. Visit"),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            retry_after_from_text("Please retry in 51.221432117s."),
            Some(Duration::from_secs_f64(51.221432117))
        );
        assert_eq!(
            retry_after_from_text("Please retry after 2 seconds."),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after_from_text("429 RPM limit exceeded; Retry-After: 2 hours"),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(retry_after_from_text("try again after 11:34 AM."), None);
        assert_eq!(retry_after_from_text("no delay here"), None);
    }
}
