//! Durations as the file writes them (`"15s"`, `"500ms"`, `"5m"`, `"7d"`), zero timeouts
//! refused, and a route's or target's timeout overrides.

use std::time::Duration;

use super::Timeouts;

pub(super) fn zero_timeout() -> String {
    "a zero timeout fails every request at once (or, for a server limit, disables nothing and closes everything); give a duration like \"10s\", or leave it out for the default".into()
}

/// Applies a route's or a target's `first_token_timeout`, `idle_timeout` and
/// `headers_timeout` over `t`, reporting values that are not durations.
pub(super) fn override_timeouts(
    t: &mut Timeouts,
    path: &str,
    [first_token, idle, headers]: [&Option<String>; 3],
    problem: &mut impl FnMut(String, String),
) {
    for (field, value, slot) in [
        ("first_token_timeout", first_token, &mut t.first_token),
        ("idle_timeout", idle, &mut t.idle),
        ("headers_timeout", headers, &mut t.headers),
    ] {
        if let Some(v) = value {
            match humantime_duration(v) {
                Some(d) if d.is_zero() => problem(format!("{path}.{field}"), zero_timeout()),
                Some(d) => *slot = d,
                None => problem(
                    format!("{path}.{field}"),
                    format!("{v:?} is not a duration like \"15s\""),
                ),
            }
        }
    }
}

/// Applies a `retry_after_wait` setting over `t` (zero allowed: never wait).
pub(super) fn retry_after_wait(
    t: &mut Timeouts,
    path: &str,
    value: &Option<String>,
    problem: &mut impl FnMut(String, String),
) {
    let Some(v) = value else {
        return;
    };
    match humantime_duration(v) {
        // Longer than a minute is no longer "short": a request would sit that long.
        Some(d) if d <= std::time::Duration::from_secs(60) => t.retry_after_wait = d,
        Some(_) => problem(
            path.into(),
            format!(
                "{v:?} is too long to hold a request; give at most \"60s\" (\"0s\" never waits)"
            ),
        ),
        None => problem(
            path.into(),
            format!("{v:?} is not a duration like \"5s\" (\"0s\" never waits)"),
        ),
    }
}

pub(super) fn humantime_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 1e-3,
        "s" | "" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    let secs = n * scale;
    // Anything beyond a year is a typo (and beyond Duration's range, a panic): refused.
    (secs.is_finite() && (0.0..=365.0 * 86_400.0).contains(&secs))
        .then(|| Duration::try_from_secs_f64(secs).ok())
        .flatten()
}
