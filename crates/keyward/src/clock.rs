//! The binary's clocks: the one place that reads them. Decisions read the health engine's
//! injected [`Clock`] (this module's [`SystemClock`] in production, a manual one in tests);
//! the rest is measurement at the edges — a monotonic stopwatch for `Server-Timing`, the
//! wall clock the classifier needs to read HTTP dates, and a seed for jitter and ids.
#![allow(clippy::disallowed_methods)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use keyward_core::health::{Clock, Timestamp};

/// The wall clock, as the health engine's [`Clock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A monotonic start time: measurement, never a decision.
pub fn stopwatch() -> Instant {
    Instant::now()
}

/// The wall clock, for the classifier's HTTP-date parsing (`retry-after` as a date).
pub fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// A seed from the time: for backoff jitter and request ids, not for secrets.
pub(crate) fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
