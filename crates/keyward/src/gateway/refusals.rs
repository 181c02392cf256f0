//! Refused callers, made visible: a wrong or missing gateway key and a request for a model
//! no route serves are counted (`keyward_caller_auth_failures_total`,
//! `keyward_unrouted_requests_total`) and logged at WARN.
//!
//! Hand-written because it is small and ours: a brute force on the gateway key must show,
//! yet one line per refused request would let the same flood fill the disk. So each kind
//! writes at most one line per [`LOG_PERIOD`], carrying how many were suppressed since
//! the previous one. The presented key never appears: at most its short fingerprint (the
//! same 12 hex characters of its SHA-256 that identify configured secrets), which tells
//! one guessed key from many without revealing any of them.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::metrics::{ApiLabel, AuthFailureLabel, Metrics};

/// At most one WARN line per kind this often.
pub const LOG_PERIOD: Duration = Duration::from_secs(1);

/// Lets one line through per period and counts the others.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            state: Mutex::new(ThrottleState::default()),
        }
    }

    /// `Some(suppressed)` when a line may be written at `now` (with how many were held
    /// back since the last one); `None` when this one is to be suppressed.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        match s.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

/// The throttles of each kind of refusal; shared across reloads with the metrics.
#[derive(Debug)]
pub struct Refusals {
    auth: Throttle,
    unrouted: Throttle,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            auth: Throttle::new(LOG_PERIOD),
            unrouted: Throttle::new(LOG_PERIOD),
        }
    }
}

/// Why a caller's gateway key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No key where any SDK puts one.
    Missing,
    /// A key that is no configured gateway key.
    Invalid,
}

impl AuthFailure {
    fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
        }
    }
}

/// The short fingerprint of a presented key: 12 hex characters of its SHA-256.
pub fn fingerprint(presented: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, presented.trim().as_bytes());
    digest
        .as_ref()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Refusals {
    /// Counts a refused gateway key and logs it (throttled).
    pub fn auth_failed(
        &self,
        metrics: &Metrics,
        reason: AuthFailure,
        presented: Option<&str>,
        peer: Option<SocketAddr>,
        api: &'static str,
    ) {
        metrics
            .caller_auth_failures
            .get_or_create(&AuthFailureLabel {
                reason: reason.label(),
            })
            .inc();
        if let Some(suppressed) = self.auth.admit(Instant::now()) {
            let key = presented.map_or_else(|| "-".to_owned(), fingerprint);
            let peer = peer.map_or_else(|| "-".to_owned(), |p| p.ip().to_string());
            tracing::warn!(
                reason = reason.label(),
                key_fingerprint = %key,
                peer = %peer,
                api,
                suppressed,
                "caller refused: missing or invalid gateway key (further refusals this second are counted, not logged)"
            );
        }
    }

    /// Counts a request for an unrouted model and logs it (throttled). The model name the
    /// caller typed is logged, clipped, but never a metric label.
    pub fn unrouted(&self, metrics: &Metrics, api: &'static str, gateway_key: &str, model: &str) {
        metrics
            .unrouted_requests
            .get_or_create(&ApiLabel { api })
            .inc();
        if let Some(suppressed) = self.unrouted.admit(Instant::now()) {
            let model: String = model.chars().take(64).collect();
            tracing::warn!(
                api,
                gateway_key,
                model = ?model,
                suppressed,
                "request for a model no route serves (further ones this second are counted, not logged)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_of_the_others() {
        let t = Throttle::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(t.admit(start), Some(0));
        for _ in 0..999 {
            assert_eq!(t.admit(start + Duration::from_millis(500)), None);
        }
        assert_eq!(t.admit(start + Duration::from_millis(1000)), Some(999));
        assert_eq!(t.admit(start + Duration::from_millis(1500)), None);
        assert_eq!(t.admit(start + Duration::from_secs(5)), Some(1));
    }

    #[test]
    fn a_fingerprint_does_not_reveal_the_key() {
        let f = fingerprint("kw-guess-0001");
        assert_eq!(f.len(), 12);
        assert!(!f.contains("guess"));
        assert_ne!(f, fingerprint("kw-guess-0002"));
        assert_eq!(f, fingerprint(" kw-guess-0001 "));
    }

    #[test]
    fn every_refusal_is_counted() {
        let m = Metrics::new();
        let r = Refusals::default();
        for i in 0..50 {
            let key = format!("guess-{i}");
            r.auth_failed(&m, AuthFailure::Invalid, Some(&key), None, "chat");
        }
        r.auth_failed(&m, AuthFailure::Missing, None, None, "messages");
        r.unrouted(&m, "chat", "agents", "no-such-model");
        let text = m.render(&[], &[]);
        assert!(
            text.contains("keyward_caller_auth_failures_total{reason=\"invalid\"} 50"),
            "{text}"
        );
        assert!(text.contains("keyward_caller_auth_failures_total{reason=\"missing\"} 1"));
        assert!(text.contains("keyward_unrouted_requests_total{api=\"chat\"} 1"));
        assert!(!text.contains("guess-"));
    }
}
