//! The alert outbox: messages waiting to be delivered (webhooks), kept in the state file.
//!
//! Why here: an alert about a transition is written in the same SQLite transaction as the
//! transition itself, so a crash can lose neither one without the other — a disable that
//! is on disk always has its alert on disk. The store does not know what an alert looks
//! like: an [`OutboxRule`] (the gateway's alert configuration) turns each transition into
//! zero or more [`OutboxEntry`]s. The gateway then reads due rows ([`Outbox::due`]),
//! delivers them and removes them ([`Outbox::remove`]), or puts them back for later
//! ([`Outbox::retry_at`]).
//!
//! The outbox is bounded: past `capacity` rows, the oldest are dropped and counted
//! ([`Outbox::dropped`]), so a receiver that is down for days cannot grow the state file
//! without limit.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::{Arc, RwLock, Weak};

use keyward_core::health::{Timestamp, Transition};
use rusqlite::params;

use crate::sqlite::{Cmd, StoreError};

/// The outbox table (created with the rest of the schema; an older file gains it).
pub(crate) const OUTBOX_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    event       TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(destination, next_ms, id);
";

/// Rows kept when no capacity was set.
const DEFAULT_CAPACITY: usize = 1_000;

/// A message to enqueue: for one destination (a webhook's name), an event name and the
/// body to send (never a secret: the store keeps it as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub destination: String,
    pub event: String,
    pub body: String,
}

/// A queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub destination: String,
    pub event: String,
    pub body: String,
    /// When it was enqueued.
    pub created: Timestamp,
    /// Failed deliveries so far.
    pub attempts: u32,
}

/// Turns a transition into the messages it causes (none for most). Called on the state
/// writer's thread inside the transition's own database transaction: it must be quick and
/// must not call back into the store.
pub trait OutboxRule: Send + Sync + fmt::Debug {
    fn entries(&self, t: &Transition) -> Vec<OutboxEntry>;
}

/// What the writer thread and the [`Outbox`] handles share.
#[derive(Debug, Default)]
pub(crate) struct OutboxShared {
    rule: RwLock<Option<Arc<dyn OutboxRule>>>,
    capacity: AtomicUsize,
    dropped: AtomicU64,
}

/// The outbox's commands, run by the state writer in order with the transitions.
pub(crate) enum OutboxCmd {
    Enqueue(Vec<OutboxEntry>, Timestamp, SyncSender<Result<(), String>>),
    Due(
        Timestamp,
        String,
        usize,
        SyncSender<Result<Vec<OutboxRow>, String>>,
    ),
    Prune(
        Vec<String>,
        Timestamp,
        SyncSender<Result<(u64, u64), String>>,
    ),
    Remove(i64, SyncSender<Result<(), String>>),
    Retry(i64, Timestamp, SyncSender<Result<(), String>>),
    Len(SyncSender<Result<u64, String>>),
}

/// A handle on the state file's outbox. It does not keep the state writer alive: once the
/// store is dropped, every call answers [`StoreError::Stopped`].
#[derive(Debug, Clone)]
pub struct Outbox {
    pub(crate) tx: Weak<Sender<Cmd>>,
    pub(crate) shared: Arc<OutboxShared>,
}

impl Outbox {
    /// Sets the rule that turns transitions into messages, and the most rows kept.
    pub fn set_rule(&self, rule: Arc<dyn OutboxRule>, capacity: usize) {
        self.shared
            .capacity
            .store(capacity.max(1), Ordering::Relaxed);
        match self.shared.rule.write() {
            Ok(mut r) => *r = Some(rule),
            Err(poisoned) => *poisoned.into_inner() = Some(rule),
        }
    }

    /// Enqueues messages that no transition carries (an OAuth refresh failure, an
    /// incident); returns once they are committed.
    pub fn enqueue(&self, entries: Vec<OutboxEntry>, at: Timestamp) -> Result<(), StoreError> {
        self.call(|done| OutboxCmd::Enqueue(entries, at, done))
    }

    /// Up to `limit` of `destination`'s rows due at `now`, oldest first.
    pub fn due(
        &self,
        now: Timestamp,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let destination = destination.to_owned();
        self.call(|done| OutboxCmd::Due(now, destination, limit, done))
    }

    /// Removes the rows for a destination not in `keep`, and those created before
    /// `created_before`: how many of each.
    pub fn prune(
        &self,
        keep: Vec<String>,
        created_before: Timestamp,
    ) -> Result<(u64, u64), StoreError> {
        self.call(|done| OutboxCmd::Prune(keep, created_before, done))
    }

    /// Removes a row (delivered, or given up on).
    pub fn remove(&self, id: i64) -> Result<(), StoreError> {
        self.call(|done| OutboxCmd::Remove(id, done))
    }

    /// Counts a failed delivery of a row and makes it due again at `at`.
    pub fn retry_at(&self, id: i64, at: Timestamp) -> Result<(), StoreError> {
        self.call(|done| OutboxCmd::Retry(id, at, done))
    }

    /// Rows queued now.
    pub fn len(&self) -> Result<u64, StoreError> {
        self.call(OutboxCmd::Len)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        self.len().map(|n| n == 0)
    }

    /// Rows dropped so far because the outbox was full (oldest first).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn call<T>(
        &self,
        cmd: impl FnOnce(SyncSender<Result<T, String>>) -> OutboxCmd,
    ) -> Result<T, StoreError> {
        let tx = self.tx.upgrade().ok_or(StoreError::Stopped)?;
        let (done, rx) = mpsc::sync_channel(1);
        tx.send(Cmd::Outbox(cmd(done)))
            .map_err(|_| StoreError::Stopped)?;
        drop(tx);
        rx.recv()
            .map_err(|_| StoreError::Stopped)?
            .map_err(StoreError::Outbox)
    }
}

impl OutboxShared {
    /// The rule's messages for `t` (none without a rule).
    pub(crate) fn entries(&self, t: &Transition) -> Vec<OutboxEntry> {
        let rule = match self.rule.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        rule.map(|r| r.entries(t)).unwrap_or_default()
    }

    fn capacity(&self) -> usize {
        match self.capacity.load(Ordering::Relaxed) {
            0 => DEFAULT_CAPACITY,
            n => n,
        }
    }
}

/// Inserts `entries` (inside the caller's transaction).
pub(crate) fn insert(
    tx: &rusqlite::Transaction<'_>,
    entries: &[OutboxEntry],
    at: Timestamp,
) -> rusqlite::Result<()> {
    let at = i64::try_from(at.0).unwrap_or(i64::MAX);
    for e in entries {
        tx.execute(
            "INSERT INTO outbox (destination, event, body, created_ms, attempts, next_ms)
             VALUES (?1, ?2, ?3, ?4, 0, ?4)",
            params![e.destination, e.event, e.body, at],
        )?;
    }
    Ok(())
}

/// Drops the oldest rows past the capacity (inside the caller's transaction).
pub(crate) fn trim(tx: &rusqlite::Transaction<'_>, shared: &OutboxShared) -> rusqlite::Result<()> {
    let count: i64 = tx.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
    let cap = i64::try_from(shared.capacity()).unwrap_or(i64::MAX);
    if count > cap {
        let over = count - cap;
        tx.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?1)",
            params![over],
        )?;
        shared
            .dropped
            .fetch_add(u64::try_from(over).unwrap_or(0), Ordering::Relaxed);
    }
    Ok(())
}

/// Runs one outbox command on the writer's connection.
pub(crate) fn run(conn: &mut rusqlite::Connection, cmd: OutboxCmd, shared: &OutboxShared) {
    let text = |e: rusqlite::Error| e.to_string();
    match cmd {
        OutboxCmd::Enqueue(entries, at, done) => {
            let result = (|| {
                let tx = conn.transaction()?;
                insert(&tx, &entries, at)?;
                trim(&tx, shared)?;
                tx.commit()
            })();
            let _ = done.try_send(result.map_err(text));
        }
        OutboxCmd::Due(now, destination, limit, done) => {
            let _ = done.try_send(due(conn, now, &destination, limit).map_err(text));
        }
        OutboxCmd::Prune(keep, before, done) => {
            let _ = done.try_send(prune(conn, &keep, before).map_err(text));
        }
        OutboxCmd::Remove(id, done) => {
            let result = conn
                .execute("DELETE FROM outbox WHERE id = ?1", params![id])
                .map(drop);
            let _ = done.try_send(result.map_err(text));
        }
        OutboxCmd::Retry(id, at, done) => {
            let result = conn
                .execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_ms = ?2 WHERE id = ?1",
                    params![id, i64::try_from(at.0).unwrap_or(i64::MAX)],
                )
                .map(drop);
            let _ = done.try_send(result.map_err(text));
        }
        OutboxCmd::Len(done) => {
            let result = conn
                .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0));
            let _ = done.try_send(result.map_err(text));
        }
    }
}

/// Removes rows for destinations not in `keep`, then rows created before `before`.
fn prune(
    conn: &mut rusqlite::Connection,
    keep: &[String],
    before: Timestamp,
) -> rusqlite::Result<(u64, u64)> {
    let tx = conn.transaction()?;
    let mut unknown = 0;
    {
        let mut stmt = tx.prepare("SELECT DISTINCT destination FROM outbox")?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        for name in names.iter().filter(|n| !keep.contains(n)) {
            unknown += tx.execute("DELETE FROM outbox WHERE destination = ?1", params![name])?;
        }
    }
    let expired = tx.execute(
        "DELETE FROM outbox WHERE created_ms < ?1",
        params![i64::try_from(before.0).unwrap_or(i64::MAX)],
    )?;
    tx.commit()?;
    Ok((unknown as u64, expired as u64))
}

fn due(
    conn: &rusqlite::Connection,
    now: Timestamp,
    destination: &str,
    limit: usize,
) -> rusqlite::Result<Vec<OutboxRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, destination, event, body, created_ms, attempts FROM outbox
         WHERE next_ms <= ?1 AND destination = ?2 ORDER BY next_ms, id LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![
            i64::try_from(now.0).unwrap_or(i64::MAX),
            destination,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        |r| {
            Ok(OutboxRow {
                id: r.get(0)?,
                destination: r.get(1)?,
                event: r.get(2)?,
                body: r.get(3)?,
                created: Timestamp(u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0)),
                attempts: u32::try_from(r.get::<_, i64>(5)?).unwrap_or(u32::MAX),
            })
        },
    )?;
    rows.collect()
}
