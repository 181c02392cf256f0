//! Where alert messages wait: the state file's outbox (single node, durable) or this
//! replica's memory (fleet mode). Every call may block on disk: run it on a blocking
//! thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use keyward_core::health::Timestamp;
use keyward_store::{Outbox, OutboxEntry, OutboxRow, StoreError};

/// The queue of alert messages.
#[derive(Debug)]
pub enum Queue {
    /// Alerts are off (no state).
    Off,
    /// The state file's outbox.
    Durable(Outbox),
    /// Fleet mode: this replica's memory, bounded.
    Memory(Mutex<Memory>),
}

/// Fleet mode's queue.
#[derive(Debug, Default)]
pub struct Memory {
    rows: VecDeque<OutboxRow>,
    next_id: i64,
    /// When each row is due (by id).
    due: std::collections::HashMap<i64, Timestamp>,
    capacity: usize,
    dropped: u64,
}

impl Queue {
    /// A fleet replica's queue.
    pub fn memory() -> Queue {
        Queue::Memory(Mutex::new(Memory {
            capacity: crate::config::Alerts::default().max_queued,
            ..Memory::default()
        }))
    }

    fn mem(m: &Mutex<Memory>) -> std::sync::MutexGuard<'_, Memory> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn set_capacity(&self, capacity: usize) {
        if let Queue::Memory(m) = self {
            Queue::mem(m).capacity = capacity.max(1);
        }
    }

    pub(super) fn enqueue(
        &self,
        entries: Vec<OutboxEntry>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        match self {
            Queue::Off => Ok(()),
            Queue::Durable(o) => o.enqueue(entries, at),
            Queue::Memory(m) => {
                let mut m = Queue::mem(m);
                for e in entries {
                    m.next_id += 1;
                    let id = m.next_id;
                    m.due.insert(id, at);
                    m.rows.push_back(OutboxRow {
                        id,
                        destination: e.destination,
                        event: e.event,
                        body: e.body,
                        created: at,
                        attempts: 0,
                    });
                }
                while m.rows.len() > m.capacity {
                    if let Some(old) = m.rows.pop_front() {
                        m.due.remove(&old.id);
                        m.dropped += 1;
                    }
                }
                Ok(())
            }
        }
    }

    pub(super) fn due(
        &self,
        now: Timestamp,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        match self {
            Queue::Off => Ok(Vec::new()),
            Queue::Durable(o) => o.due(now, destination, limit),
            Queue::Memory(m) => {
                let m = Queue::mem(m);
                let mut due: Vec<OutboxRow> = m
                    .rows
                    .iter()
                    .filter(|r| {
                        r.destination == destination && m.due.get(&r.id).is_some_and(|t| *t <= now)
                    })
                    .cloned()
                    .collect();
                due.sort_by_key(|r| (m.due.get(&r.id).copied(), r.id));
                due.truncate(limit);
                Ok(due)
            }
        }
    }

    /// Drops the messages for webhooks not in `keep` and those created before `before`:
    /// how many of each.
    pub(super) fn prune(
        &self,
        keep: Vec<String>,
        before: Timestamp,
    ) -> Result<(u64, u64), StoreError> {
        match self {
            Queue::Off => Ok((0, 0)),
            Queue::Durable(o) => o.prune(keep, before),
            Queue::Memory(m) => {
                let mut m = Queue::mem(m);
                let (mut unknown, mut expired) = (0, 0);
                let mut gone = Vec::new();
                m.rows.retain(|r| {
                    let keep_it = if !keep.contains(&r.destination) {
                        unknown += 1;
                        false
                    } else if r.created < before {
                        expired += 1;
                        false
                    } else {
                        true
                    };
                    if !keep_it {
                        gone.push(r.id);
                    }
                    keep_it
                });
                for id in gone {
                    m.due.remove(&id);
                }
                Ok((unknown, expired))
            }
        }
    }

    pub(super) fn remove(&self, id: i64) -> Result<(), StoreError> {
        match self {
            Queue::Off => Ok(()),
            Queue::Durable(o) => o.remove(id),
            Queue::Memory(m) => {
                let mut m = Queue::mem(m);
                m.rows.retain(|r| r.id != id);
                m.due.remove(&id);
                Ok(())
            }
        }
    }

    pub(super) fn retry_at(&self, id: i64, at: Timestamp) -> Result<(), StoreError> {
        match self {
            Queue::Off => Ok(()),
            Queue::Durable(o) => o.retry_at(id, at),
            Queue::Memory(m) => {
                let mut m = Queue::mem(m);
                if let Some(r) = m.rows.iter_mut().find(|r| r.id == id) {
                    r.attempts += 1;
                }
                if let Some(t) = m.due.get_mut(&id) {
                    *t = at;
                }
                Ok(())
            }
        }
    }

    pub(super) fn len(&self) -> Result<u64, StoreError> {
        match self {
            Queue::Off => Ok(0),
            Queue::Durable(o) => o.len(),
            Queue::Memory(m) => Ok(Queue::mem(m).rows.len() as u64),
        }
    }

    /// Messages dropped so far because the queue was full.
    pub(super) fn dropped(&self) -> u64 {
        match self {
            Queue::Off => 0,
            Queue::Durable(o) => o.dropped(),
            Queue::Memory(m) => Queue::mem(m).dropped,
        }
    }
}

/// How many of [`Queue::dropped`] the metrics have counted.
#[derive(Debug, Default)]
pub(super) struct Counted(AtomicU64);

impl Counted {
    /// The drops not counted yet (and marks them counted).
    pub(super) fn new_since(&self, total: u64) -> u64 {
        let before = self.0.swap(total, Ordering::Relaxed);
        total.saturating_sub(before)
    }
}
