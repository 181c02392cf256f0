//! The SQLite implementation of the state store.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use keyward_core::health::{
    Ack, Health, ScopeKey, SinkError, Timestamp, Transition, TransitionSink,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::outbox::{self, Outbox, OutboxCmd, OutboxShared};
use crate::state_file::{open_read_only, Held, Init, StateFile};

/// Errors of the state store. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (a running gateway, or a CLI command writing) holds the state
    /// file's lock. Stop that process, or make the change through the running gateway's
    /// admin API; a second gateway needs its own `state` path. Label: `locked`.
    #[error("state file {path} is in use by another Keyward process{} holding {lock}: stop that process, or make the change through the running gateway's admin API (`keyward reset`, `disable` and `credentials import/remove` use it when the config has an [admin] table); a second gateway needs its own `state` path", held_by(*.pid))]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        /// The holder's process id, as it wrote it in the lock file.
        pid: Option<u32>,
    },
    /// The state file exists but is empty (0 bytes): whatever it held (disables, the
    /// revoked-key denylist, OAuth tokens) is gone, or it was never written. Restore it
    /// from a backup, or start once with `keyward serve --init-state` to move it aside and
    /// begin with an empty state. Label: `empty`.
    #[error("state file {path} is empty (0 bytes): its disables, revoked-key denylist and OAuth tokens are gone; restore it from a backup, or run `keyward serve --init-state` once to move it aside and start with an empty state")]
    Empty { path: PathBuf },
    /// The file at the state path is not a Keyward state file (not SQLite, or SQLite of
    /// another program). Check the `state` path in the config, or start once with
    /// `keyward serve --init-state` to move it aside. Label: `foreign`.
    #[error("{path} is not a Keyward state file ({what}): check the `state` path in keyward.toml, or run `keyward serve --init-state` once to move it aside (to {path}.unrecognised) and start with an empty state")]
    NotKeyward { path: PathBuf, what: String },
    /// The state file or its folder could not be created or opened. Check the path and
    /// permissions. Label: `io`.
    #[error("cannot open state file {path}: {source} ({})", io_advice(source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused an operation (a corrupt or foreign file, a full disk). Label:
    /// `sqlite`.
    #[error("state file {path}: {source} ({})", sqlite_advice(source))]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer keyward. Upgrade keyward or use another file.
    /// Label: `version`.
    #[error("state file {path} has schema version {found}, newer than this keyward understands ({supported}); upgrade keyward")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// There is no state file at the path yet. Start keyward (it creates the file), or pass
    /// the right `--state` path. Label: `missing`.
    #[error("no state file at {path}: start keyward (it creates one) or pass --state with the path from keyward.toml")]
    Missing { path: PathBuf },
    /// The writer thread has stopped (after a previous error or at shutdown). Label:
    /// `stopped`.
    #[error("the state writer has stopped; restart keyward")]
    Stopped,
    /// The alert outbox could not be read or written (a full disk, a failing one).
    /// Alerts wait in memory until it works again. Label: `outbox`.
    #[error("the alert outbox in the state file failed: {0} (check that the disk holding the state file is not full or failing)")]
    Outbox(String),
}

/// The holder's pid for [`StoreError::Locked`]'s message.
fn held_by(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// What to do about an I/O error on the state file.
fn io_advice(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::StorageFull => "the disk holding it is full: free space there",
        _ => "check that the folder exists and is writable",
    }
}

/// What to do about a SQLite error: a full disk is not a corrupt file.
fn sqlite_advice(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => {
            "the disk holding it is full: free space there; the file itself is fine"
        }
        Some(rusqlite::ErrorCode::SystemIoFailure) => {
            "the disk failed a read or write: check that it is not full or failing"
        }
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::PermissionDenied) => {
            "keyward cannot write it: check the file's and the folder's permissions"
        }
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            "it is corrupt or not a keyward state file: move it aside; keyward starts with empty state"
        }
        _ => "if the file is corrupt, move it aside; keyward starts with empty state",
    }
}

pub(crate) const SCHEMA_VERSION: i64 = 1;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS health (
    scope       TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    since_ms    INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    seq         INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    scope       TEXT NOT NULL,
    from_state  TEXT NOT NULL,
    to_state    TEXT NOT NULL,
    why         TEXT NOT NULL,
    actor       TEXT NOT NULL,
    fingerprint TEXT
);
CREATE INDEX IF NOT EXISTS transitions_by_scope ON transitions(scope, id);
CREATE TABLE IF NOT EXISTS denylist (
    fingerprint TEXT PRIMARY KEY,
    credential  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    since_ms    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS oauth_tokens (
    credential        TEXT PRIMARY KEY,
    grant_fingerprint TEXT NOT NULL,
    access_token      BLOB,
    refresh_token     BLOB,
    expires_at_ms     INTEGER,
    version           INTEGER NOT NULL DEFAULT 0,
    updated_ms        INTEGER NOT NULL
);
";

/// Longest batch the writer commits at once.
const MAX_BATCH: usize = 512;

/// Transition log retention: rows older than this are pruned…
const LOG_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// …and at most this many rows are kept.
const LOG_MAX_ROWS: i64 = 200_000;

/// What the store held when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every scope that is not healthy, with the time it entered its state.
    pub records: Vec<(ScopeKey, Health, Timestamp)>,
    /// Revoked fingerprints: (fingerprint, credential id, reason).
    pub denylist: Vec<(String, String, String)>,
}

/// One row of the transition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRow {
    pub seq: u64,
    pub at: Timestamp,
    pub scope: String,
    pub from: String,
    pub to: String,
    pub why: String,
    pub actor: String,
    /// The replica that recorded it (fleet mode).
    pub replica: Option<String>,
}

pub(crate) enum Cmd {
    Write(Box<Transition>, SyncSender<Result<(), SinkError>>),
    Barrier(SyncSender<()>),
    Outbox(OutboxCmd),
}

/// The SQLite state store: the health engine's [`TransitionSink`].
#[derive(Debug)]
pub struct SqliteStore {
    /// The only strong reference: [`Outbox`] handles hold weak ones, so dropping the store
    /// still ends the writer.
    tx: Arc<Sender<Cmd>>,
    outbox: Arc<OutboxShared>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
    _held: Arc<Held>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Write(t, _) => write!(f, "Write({})", t.scope),
            Cmd::Barrier(_) => f.write_str("Barrier"),
            Cmd::Outbox(_) => f.write_str("Outbox"),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the state file at `path`, takes its lock, and loads what
    /// it holds. A file that is not a Keyward state file is refused (see
    /// [`StateFile::lock`] to choose otherwise).
    pub fn open(path: &Path) -> Result<(SqliteStore, Loaded), StoreError> {
        StateFile::lock(path, Init::Refuse)?.store()
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The alert outbox in this state file.
    pub fn outbox(&self) -> Outbox {
        Outbox {
            tx: Arc::downgrade(&self.tx),
            shared: self.outbox.clone(),
        }
    }
}

impl StateFile {
    /// The health store of this state file, with what it holds. It keeps the lock.
    pub fn store(&self) -> Result<(SqliteStore, Loaded), StoreError> {
        let path = self.path();
        let conn = self.connect()?;
        let loaded = load(&conn).map_err(|source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        })?;
        let (tx, rx) = mpsc::channel();
        let writer_path = path.to_owned();
        let shared = Arc::new(OutboxShared::default());
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("keyward-state-writer".into())
            .spawn(move || writer_loop(conn, rx, writer_path, &writer_shared))
            .map_err(|source| StoreError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok((
            SqliteStore {
                tx: Arc::new(tx),
                outbox: shared,
                writer: Some(writer),
                path: path.to_owned(),
                _held: self.held(),
            },
            loaded,
        ))
    }
}

impl SqliteStore {
    /// Waits until everything enqueued so far is committed.
    pub fn flush(&self) -> Result<(), StoreError> {
        // A write of nothing: the writer handles commands in order.
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        self.tx
            .send(Cmd::Barrier(ack_tx))
            .map_err(|_| StoreError::Stopped)?;
        ack_rx.recv().map_err(|_| StoreError::Stopped)
    }
}

impl TransitionSink for SqliteStore {
    fn enqueue(&self, t: Transition) -> Ack {
        let (ack, done) = Ack::pending();
        if let Err(mpsc::SendError(Cmd::Write(_, done))) =
            self.tx.send(Cmd::Write(Box::new(t), done))
        {
            let _ = done.try_send(Err(SinkError("the state writer has stopped".into())));
        }
        ack
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.tx.send(Cmd::Barrier(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
        // Closing the channel ends the writer after it drained everything.
        let (dead_tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, Arc::new(dead_tx)));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut stmt = conn.prepare("SELECT scope, state, since_ms FROM health")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (scope, state, since) = row?;
        // A row this version cannot read is skipped, not fatal: health re-learns.
        if let (Some(key), Ok(health)) = (
            ScopeKey::parse(&scope),
            serde_json::from_str::<Health>(&state),
        ) {
            loaded
                .records
                .push((key, health, Timestamp(u64::try_from(since).unwrap_or(0))));
        }
    }
    let mut stmt = conn.prepare("SELECT fingerprint, credential, reason FROM denylist")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    for row in rows {
        loaded.denylist.push(row?);
    }
    Ok(loaded)
}

fn writer_loop(mut conn: Connection, rx: Receiver<Cmd>, path: PathBuf, outbox: &OutboxShared) {
    let mut commits: u64 = 0;
    while let Ok(first) = rx.recv() {
        // Outbox commands run on their own, in order with the transitions.
        let first = match first {
            Cmd::Outbox(cmd) => {
                outbox::run(&mut conn, cmd, outbox);
                continue;
            }
            other => other,
        };
        let mut batch = vec![first];
        let mut after = None;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Cmd::Outbox(cmd)) => {
                    after = Some(cmd);
                    break;
                }
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let durable = batch
            .iter()
            .any(|c| matches!(c, Cmd::Write(t, _) if t.durable));
        let result = commit(&mut conn, &batch, durable, outbox);
        commits += 1;
        if commits.is_multiple_of(256) {
            let _ = prune(&conn);
        }
        for cmd in batch {
            match cmd {
                Cmd::Write(_, done) => {
                    let _ = done.try_send(
                        result
                            .clone()
                            .map_err(|e| SinkError(format!("{}: {e}", path.display()))),
                    );
                }
                Cmd::Barrier(done) => {
                    let _ = done.try_send(());
                }
                Cmd::Outbox(cmd) => outbox::run(&mut conn, cmd, outbox),
            }
        }
        if let Some(cmd) = after {
            outbox::run(&mut conn, cmd, outbox);
        }
    }
}

fn commit(
    conn: &mut Connection,
    batch: &[Cmd],
    durable: bool,
    outbox: &OutboxShared,
) -> Result<(), String> {
    let run = |conn: &mut Connection| -> rusqlite::Result<()> {
        if durable {
            conn.pragma_update(None, "synchronous", "FULL")?;
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut queued = false;
        for cmd in batch {
            let Cmd::Write(t, _) = cmd else { continue };
            write_one(&tx, t)?;
            // The transition's alerts, in its own database transaction: on disk together.
            let entries = outbox.entries(t);
            if !entries.is_empty() {
                outbox::insert(&tx, &entries, t.at)?;
                queued = true;
            }
        }
        if queued {
            outbox::trim(&tx, outbox)?;
        }
        tx.commit()?;
        if durable {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        Ok(())
    };
    run(conn).map_err(|e| e.to_string())
}

fn write_one(tx: &rusqlite::Transaction<'_>, t: &Transition) -> rusqlite::Result<()> {
    let scope = t.scope.to_key();
    let to = serde_json::to_string(&t.to).unwrap_or_else(|_| "{}".into());
    let from = serde_json::to_string(&t.from).unwrap_or_else(|_| "{}".into());
    let at = i64::try_from(t.at.0).unwrap_or(i64::MAX);
    let seq = i64::try_from(t.seq).unwrap_or(i64::MAX);
    if t.to == Health::Healthy {
        tx.execute("DELETE FROM health WHERE scope = ?1", params![scope])?;
    } else {
        tx.execute(
            "INSERT INTO health (scope, state, since_ms, seq, updated_ms) VALUES (?1, ?2, ?3, ?4, ?3)
             ON CONFLICT(scope) DO UPDATE SET state = excluded.state, since_ms = excluded.since_ms,
                 seq = excluded.seq, updated_ms = excluded.updated_ms",
            params![scope, to, at, seq],
        )?;
    }
    tx.execute(
        "INSERT INTO transitions (seq, at_ms, scope, from_state, to_state, why, actor, fingerprint)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            seq,
            at,
            scope,
            from,
            to,
            t.why,
            actor_name(t.actor),
            t.fingerprint.as_deref()
        ],
    )?;
    // The denylist remembers revoked secrets even after their credential is removed.
    // It changes as the engine decided (`Transition::deny`), so a restart restores the
    // engine's own list.
    if let (ScopeKey::Credential(id), Some(fp)) = (&t.scope, &t.fingerprint) {
        match (t.deny, &t.to) {
            (Some(true), Health::Disabled { evidence, .. }) => {
                tx.execute(
                    "INSERT OR REPLACE INTO denylist (fingerprint, credential, reason, since_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![&**fp, &**id, format!("revoked ({evidence})"), at],
                )?;
            }
            (Some(false), _) => {
                tx.execute(
                    "DELETE FROM denylist WHERE fingerprint = ?1",
                    params![&**fp],
                )?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn prune(conn: &Connection) -> rusqlite::Result<()> {
    let newest: Option<i64> = conn
        .query_row("SELECT MAX(at_ms) FROM transitions", [], |r| r.get(0))
        .optional()?
        .flatten();
    if let Some(newest) = newest {
        let cutoff = newest - i64::try_from(LOG_RETENTION.as_millis()).unwrap_or(i64::MAX);
        conn.execute("DELETE FROM transitions WHERE at_ms < ?1", params![cutoff])?;
    }
    conn.execute(
        "DELETE FROM transitions WHERE id <= (SELECT MAX(id) FROM transitions) - ?1",
        params![LOG_MAX_ROWS],
    )?;
    Ok(())
}

pub(crate) fn actor_name(a: keyward_core::health::Actor) -> &'static str {
    use keyward_core::health::Actor;
    match a {
        Actor::Traffic => "traffic",
        Actor::Probe => "probe",
        Actor::Incident => "incident",
        Actor::Operator => "operator",
        Actor::Config => "config",
    }
}

/// A read-only view of a state file, usable while a gateway writes it (WAL).
#[derive(Debug)]
pub struct StoreReader {
    conn: Connection,
    path: PathBuf,
}

impl StoreReader {
    /// Opens `path` read-only: it takes no lock, and closing it never checkpoints or
    /// deletes the `-wal` of a running gateway. A missing, empty or foreign file is
    /// refused.
    pub fn open(path: &Path) -> Result<StoreReader, StoreError> {
        let conn = open_read_only(path)?;
        Ok(StoreReader {
            conn,
            path: path.to_owned(),
        })
    }

    /// Everything [`SqliteStore::open`] would load.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        load(&self.conn).map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// The latest `limit` transitions of a credential (all its scopes), newest first.
    pub fn history(
        &self,
        credential: &str,
        limit: usize,
    ) -> Result<Vec<TransitionRow>, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, at_ms, scope, from_state, to_state, why, actor FROM transitions
                 WHERE scope = ?1 OR scope LIKE ?2 ESCAPE '\\' ORDER BY id DESC LIMIT ?3",
            )
            .map_err(sql)?;
        let escaped = credential
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let rows = stmt
            .query_map(
                params![
                    format!("credential/{credential}"),
                    format!("credential\\_model/{escaped}/%"),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok(TransitionRow {
                        seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        at: Timestamp(u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)),
                        scope: r.get(2)?,
                        from: r.get(3)?,
                        to: r.get(4)?,
                        why: r.get(5)?,
                        actor: r.get(6)?,
                        replica: None,
                    })
                },
            )
            .map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }

    /// Every transition in order (for audits and tests).
    pub fn all_transitions(&self) -> Result<Vec<TransitionRow>, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at_ms, scope, from_state, to_state, why, actor FROM transitions ORDER BY id")
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TransitionRow {
                    seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    at: Timestamp(u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)),
                    scope: r.get(2)?,
                    from: r.get(3)?,
                    to: r.get(4)?,
                    why: r.get(5)?,
                    actor: r.get(6)?,
                    replica: None,
                })
            })
            .map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }
}

#[cfg(test)]
mod advice_tests {
    use super::*;

    fn sqlite(code: std::os::raw::c_int) -> String {
        StoreError::Sqlite {
            path: PathBuf::from("/var/lib/keyward/state.db"),
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        }
        .to_string()
    }

    #[test]
    fn a_full_disk_is_reported_as_a_full_disk_not_a_corrupt_file() {
        let full = sqlite(rusqlite::ffi::SQLITE_FULL);
        assert!(full.contains("disk holding it is full"), "{full}");
        assert!(!full.contains("move it aside"), "{full}");
        let corrupt = sqlite(rusqlite::ffi::SQLITE_CORRUPT);
        assert!(corrupt.contains("move it aside"), "{corrupt}");
        let io = StoreError::Io {
            path: PathBuf::from("/var/lib/keyward/state.db"),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        }
        .to_string();
        assert!(io.contains("full: free space"), "{io}");
    }
}
