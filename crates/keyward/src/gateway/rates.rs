//! Per-credential attempt and error counts for the last hour, a minute at a time, for the
//! status page's charts.
//!
//! Each credential has a ring of 60 one-minute slots. Recording an attempt is a read lock
//! on the credential map (uncontended once the credential has its ring) and one or two
//! relaxed atomic increments; a slot left over from an earlier hour is cleared by the first
//! attempt that lands in it. That clearing races with a concurrent increment at a minute
//! boundary, so a count can be off by the few attempts in flight at that instant: good
//! enough for a chart, which is all this is (Prometheus has the exact counters).
//!
//! Memory is bounded by the configuration: one ring (60 × 24 bytes) per credential id the
//! gateway has ever attempted, and credentials are few.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use keyward_core::health::{Clock, Timestamp};
use rustc_hash::FxHashMap;

/// Minutes kept.
pub const MINUTES: usize = 60;

#[derive(Debug, Default)]
struct Slot {
    /// The minute (since the Unix epoch) these counts belong to.
    minute: AtomicU64,
    attempts: AtomicU64,
    errors: AtomicU64,
}

#[derive(Debug)]
struct Ring {
    slots: [Slot; MINUTES],
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }
}

impl Ring {
    fn record(&self, minute: u64, failed: bool) {
        let slot = &self.slots[index(minute)];
        let seen = slot.minute.load(Ordering::Relaxed);
        if seen != minute
            && slot
                .minute
                .compare_exchange(seen, minute, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.attempts.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
        }
        slot.attempts.fetch_add(1, Ordering::Relaxed);
        if failed {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count(&self, minute: u64) -> Minute {
        let slot = &self.slots[index(minute)];
        if slot.minute.load(Ordering::Relaxed) != minute {
            return Minute::default();
        }
        Minute {
            attempts: slot.attempts.load(Ordering::Relaxed),
            errors: slot.errors.load(Ordering::Relaxed),
        }
    }
}

fn index(minute: u64) -> usize {
    // MINUTES fits a u64 and the remainder fits a usize.
    usize::try_from(minute % MINUTES as u64).unwrap_or(0)
}

/// One minute's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Minute {
    pub attempts: u64,
    /// Failed attempts (any failure class).
    pub errors: u64,
}

/// Every credential's last hour; shared across reloads with the rest of the metrics.
#[derive(Debug)]
pub struct Rates {
    rings: RwLock<FxHashMap<Arc<str>, Arc<Ring>>>,
    clock: Arc<dyn Clock>,
}

impl Rates {
    /// Rates on `clock` (the gateway's wall clock; a manual one in tests).
    pub fn new(clock: Arc<dyn Clock>) -> Rates {
        Rates {
            rings: RwLock::new(FxHashMap::default()),
            clock,
        }
    }

    /// Counts one upstream attempt of `credential` now.
    pub fn record(&self, credential: &Arc<str>, failed: bool) {
        let minute = self.clock.now().0 / 60_000;
        let ring = match self.rings.read() {
            Ok(r) => r.get(credential).cloned(),
            Err(poisoned) => poisoned.into_inner().get(credential).cloned(),
        };
        let ring = ring.unwrap_or_else(|| {
            let mut w = match self.rings.write() {
                Ok(w) => w,
                Err(poisoned) => poisoned.into_inner(),
            };
            w.entry(credential.clone()).or_default().clone()
        });
        ring.record(minute, failed);
    }

    /// The last [`MINUTES`] minutes of `credential`, oldest first, ending with the
    /// current (partial) minute; zeros for a credential never attempted.
    pub fn last_hour(&self, credential: &str) -> Vec<Minute> {
        let now = self.clock.now().0 / 60_000;
        let ring = match self.rings.read() {
            Ok(r) => r.get(credential).cloned(),
            Err(poisoned) => poisoned.into_inner().get(credential).cloned(),
        };
        (0..MINUTES as u64)
            .rev()
            .map(|back| {
                ring.as_ref()
                    .filter(|_| now >= back)
                    .map_or_else(Minute::default, |r| r.count(now - back))
            })
            .collect()
    }

    /// The current time on the rates' clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::health::ManualClock;
    use std::time::Duration;

    fn total(v: &[Minute]) -> (u64, u64) {
        v.iter()
            .fold((0, 0), |(a, e), m| (a + m.attempts, e + m.errors))
    }

    #[test]
    fn counts_per_minute_and_forgets_after_an_hour() {
        let clock = ManualClock::at(Timestamp(1_700_000_000_000));
        let rates = Rates::new(Arc::new(clock.clone()));
        let a: Arc<str> = Arc::from("a");
        for _ in 0..5 {
            rates.record(&a, false);
        }
        rates.record(&a, true);
        let hour = rates.last_hour("a");
        assert_eq!(hour.len(), MINUTES);
        assert_eq!(
            hour[MINUTES - 1],
            Minute {
                attempts: 6,
                errors: 1
            }
        );
        clock.advance(Duration::from_secs(60));
        rates.record(&a, true);
        let hour = rates.last_hour("a");
        assert_eq!(hour[MINUTES - 2].attempts, 6);
        assert_eq!(
            hour[MINUTES - 1],
            Minute {
                attempts: 1,
                errors: 1
            }
        );
        assert_eq!(total(&rates.last_hour("b")), (0, 0), "never attempted");
        // An hour later the old minutes are gone, even though their slots were not
        // reused yet; the slot reused by a new minute starts from zero.
        clock.advance(Duration::from_secs(60 * 60));
        assert_eq!(total(&rates.last_hour("a")), (0, 0));
        rates.record(&a, false);
        assert_eq!(total(&rates.last_hour("a")), (1, 0));
    }
}
