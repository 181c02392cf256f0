//! Bounds on retrying: a per-request attempt cap and deadline, and a gateway-wide retry
//! budget so that a failure storm cannot multiply load on a struggling provider.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::Timestamp;

/// Per-request bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBudget {
    attempts: u32,
    max_attempts: u32,
    deadline: Timestamp,
}

impl RequestBudget {
    /// At most `max_attempts` upstream attempts, none started after `deadline`.
    pub fn new(max_attempts: u32, deadline: Timestamp) -> Self {
        RequestBudget {
            attempts: 0,
            max_attempts,
            deadline,
        }
    }

    /// Takes one attempt if the cap and deadline allow it.
    pub fn take(&mut self, now: Timestamp) -> bool {
        if self.attempts >= self.max_attempts || now >= self.deadline {
            return false;
        }
        self.attempts += 1;
        true
    }

    /// Attempts taken so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The deadline.
    pub fn deadline(&self) -> Timestamp {
        self.deadline
    }
}

/// Configuration of the gateway-wide retry budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetConfig {
    /// Retries allowed as a fraction of requests in the window (0.2 = one retry per five
    /// requests).
    pub ratio: f64,
    /// Retries always allowed per second, so a quiet gateway can still retry.
    pub min_per_second: f64,
    /// The sliding window, in whole seconds.
    pub window_secs: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.2,
            min_per_second: 10.0,
            window_secs: 10,
        }
    }
}

/// Retries of the same target, and failovers caused by transient classes, spend from this
/// budget; moving away from a dead credential does not. Sliding window of one-second
/// buckets.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    /// (second, requests, retries) per bucket.
    buckets: Vec<(u64, u64, u64)>,
}

impl RetryBudget {
    /// An empty budget.
    pub fn new(config: RetryBudgetConfig) -> Self {
        let n = config.window_secs.max(1) as usize;
        RetryBudget {
            config,
            buckets: vec![(u64::MAX, 0, 0); n],
        }
    }

    fn bucket(&mut self, now: Timestamp) -> &mut (u64, u64, u64) {
        let sec = now.0 / 1000;
        let n = self.buckets.len();
        let slot = &mut self.buckets[(sec % n as u64) as usize];
        if slot.0 != sec {
            *slot = (sec, 0, 0);
        }
        slot
    }

    fn totals(&self, now: Timestamp) -> (u64, u64) {
        let sec = now.0 / 1000;
        let n = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|(s, _, _)| *s != u64::MAX && *s <= sec && sec - *s < n)
            .fold((0, 0), |(r, t), (_, req, ret)| (r + req, t + ret))
    }

    /// Counts a request.
    pub fn on_request(&mut self, now: Timestamp) {
        self.bucket(now).1 += 1;
    }

    /// Spends one retry if the budget allows it.
    pub fn try_spend(&mut self, now: Timestamp) -> bool {
        let (requests, retries) = self.totals(now);
        let window = f64::from(self.config.window_secs.max(1));
        let allowed = self.config.min_per_second * window + self.config.ratio * requests as f64;
        if (retries as f64) + 1.0 > allowed {
            return false;
        }
        self.bucket(now).2 += 1;
        true
    }

    /// The window, for reporting.
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.window_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_budget_caps_attempts_and_honours_deadline() {
        let mut b = RequestBudget::new(3, Timestamp(10_000));
        assert!(b.take(Timestamp(0)));
        assert!(b.take(Timestamp(1)));
        assert!(b.take(Timestamp(2)));
        assert!(!b.take(Timestamp(3)));
        let mut b = RequestBudget::new(10, Timestamp(10_000));
        assert!(!b.take(Timestamp(10_000)));
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn retry_budget_is_a_fraction_of_recent_requests_plus_a_floor() {
        let cfg = RetryBudgetConfig {
            ratio: 0.1,
            min_per_second: 0.5,
            window_secs: 10,
        };
        let mut b = RetryBudget::new(cfg);
        let t = Timestamp(1_000_000);
        // Floor: 0.5/s × 10 s = 5 retries with no traffic.
        for _ in 0..5 {
            assert!(b.try_spend(t));
        }
        assert!(!b.try_spend(t));
        // 100 requests add 10 more.
        for _ in 0..100 {
            b.on_request(t);
        }
        for _ in 0..10 {
            assert!(b.try_spend(t));
        }
        assert!(!b.try_spend(t));
        // Eleven seconds later the window has moved on.
        let later = Timestamp(t.0 + 11_000);
        for _ in 0..5 {
            assert!(b.try_spend(later));
        }
        assert!(!b.try_spend(later));
    }
}
