//! The budget of request-body bytes held in memory at once, across all requests
//! (`limits.max_buffered_body_bytes`).
//!
//! Every body is buffered whole so it can be replayed to the next candidate; each is
//! bounded by `limits.max_body_bytes`, but without a global bound eight concurrent 30 MB
//! uploads held 349 MB. A request reserves its `content-length` (or `max_body_bytes` when
//! it declares none) before reading a byte, all at once — never piecemeal, so requests
//! holding part of what they need cannot starve each other. One that cannot get its bytes
//! within `limits.body_wait` is answered 503 with `retry-after`, in its own API's format,
//! and its body is never read. The reservation is released when the request is answered.
//!
//! A semaphore of kibibytes (tokio's permits are counted in `u32` per acquisition).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const UNIT: usize = 1024;

/// Bytes of request bodies that may be held at once.
#[derive(Debug)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total_units: u32,
}

/// A reservation; returned to the budget when dropped.
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] OwnedSemaphorePermit);

impl BodyBudget {
    pub fn new(total_bytes: usize) -> BodyBudget {
        let total_units = u32::try_from(total_bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        BodyBudget {
            units: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    /// Reserves `bytes` (at least one unit, at most the whole budget), waiting at most
    /// `wait`; `None` when the budget stayed too full.
    pub async fn reserve(&self, bytes: usize, wait: Duration) -> Option<Held> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1))
            .unwrap_or(u32::MAX)
            .min(self.total_units);
        if let Ok(p) = self.units.clone().try_acquire_many_owned(units) {
            return Some(Held(p));
        }
        if wait.is_zero() {
            return None;
        }
        match tokio::time::timeout(wait, self.units.clone().acquire_many_owned(units)).await {
            Ok(Ok(p)) => Some(Held(p)),
            _ => None,
        }
    }

    /// Bytes free now (for tests and the admin view).
    pub fn available_bytes(&self) -> usize {
        self.units.available_permits() * UNIT
    }
}

/// The body size a request declares in `content-length`, if it does.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<usize> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_budget_refuses_after_the_wait_and_frees_on_drop() {
        let b = BodyBudget::new(10 * UNIT);
        let first = b.reserve(6 * UNIT, Duration::ZERO).await;
        assert!(first.is_some());
        // 4 KiB left: a 6 KiB body cannot be read now, nor after a short wait.
        assert!(b.reserve(6 * UNIT, Duration::ZERO).await.is_none());
        assert!(b
            .reserve(6 * UNIT, Duration::from_millis(20))
            .await
            .is_none());
        // A small one fits beside it.
        let small = b.reserve(100, Duration::ZERO).await;
        assert!(small.is_some());
        assert_eq!(b.available_bytes(), 3 * UNIT);
        drop(first);
        drop(small);
        assert_eq!(b.available_bytes(), 10 * UNIT);
        // A waiting request gets its bytes as soon as they are released.
        let held = b.reserve(10 * UNIT, Duration::ZERO).await;
        let waiter = b.reserve(8 * UNIT, Duration::from_secs(30));
        let release = async move {
            tokio::task::yield_now().await;
            drop(held);
        };
        let (got, ()) = tokio::join!(waiter, release);
        assert!(got.is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_larger_than_the_budget_takes_all_of_it_rather_than_never() {
        let b = BodyBudget::new(4 * UNIT);
        let all = b.reserve(1 << 30, Duration::ZERO).await;
        assert!(all.is_some());
        assert_eq!(b.available_bytes(), 0);
    }

    #[test]
    fn the_declared_length_is_read_from_content_length() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(declared_length(&h), None);
        h.insert("content-length", "1234".parse().unwrap());
        assert_eq!(declared_length(&h), Some(1234));
        h.insert("content-length", "many".parse().unwrap());
        assert_eq!(declared_length(&h), None);
    }
}
