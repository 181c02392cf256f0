//! The SQLite implementation of the state store.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use keyward_core::health::{
    Ack, Health, ScopeKey, SinkError, Timestamp, Transition, TransitionSink,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

/// Errors of the state store. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (a second gateway) holds the state file's lock. Stop the other
    /// gateway, or give this one its own `state` path. Label: `locked`.
    #[error("state file {path} is in use by another keyward process (lock {lock} is held); stop it or use a different state path")]
    Locked { path: PathBuf, lock: PathBuf },
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

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
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

enum Cmd {
    Write(Box<Transition>, SyncSender<Result<(), SinkError>>),
    Barrier(SyncSender<()>),
}

/// The SQLite state store: the health engine's [`TransitionSink`].
#[derive(Debug)]
pub struct SqliteStore {
    tx: Sender<Cmd>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
    _lock: File,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Write(t, _) => write!(f, "Write({})", t.scope),
            Cmd::Barrier(_) => f.write_str("Barrier"),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the state file at `path`, takes its lock, and loads what
    /// it holds.
    pub fn open(path: &Path) -> Result<(SqliteStore, Loaded), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let lock_path = lock_path(path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.to_owned(),
                    lock: lock_path,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let conn = open_database(path)?;
        let sql = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let loaded = load(&conn).map_err(sql)?;
        let (tx, rx) = mpsc::channel();
        let writer_path = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("keyward-state-writer".into())
            .spawn(move || writer_loop(conn, rx, writer_path))
            .map_err(io)?;
        Ok((
            SqliteStore {
                tx,
                writer: Some(writer),
                path: path.to_owned(),
                _lock: lock,
            },
            loaded,
        ))
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens (creating with mode 0600 if needed) the database at `path` in WAL mode, with the
/// current schema. The caller decides about the lock.
pub(crate) fn open_database(path: &Path) -> Result<Connection, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // Create the database with owner-only permissions before SQLite touches it.
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let sql = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(sql)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    conn.execute_batch(SCHEMA).map_err(sql)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sql)?;
    Ok(conn)
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
        drop(std::mem::replace(&mut self.tx, dead_tx));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    path.with_file_name(name)
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

fn writer_loop(mut conn: Connection, rx: Receiver<Cmd>, path: PathBuf) {
    let mut commits: u64 = 0;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let durable = batch
            .iter()
            .any(|c| matches!(c, Cmd::Write(t, _) if t.durable));
        let result = commit(&mut conn, &batch, durable);
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
            }
        }
    }
}

fn commit(conn: &mut Connection, batch: &[Cmd], durable: bool) -> Result<(), String> {
    let run = |conn: &mut Connection| -> rusqlite::Result<()> {
        if durable {
            conn.pragma_update(None, "synchronous", "FULL")?;
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for cmd in batch {
            let Cmd::Write(t, _) = cmd else { continue };
            write_one(&tx, t)?;
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
    if let (ScopeKey::Credential(id), Some(fp)) = (&t.scope, &t.fingerprint) {
        match &t.to {
            Health::Disabled {
                class: keyward_core::classify::Class::AuthPermanent,
                by_operator: false,
                evidence,
                ..
            } => {
                tx.execute(
                    "INSERT OR REPLACE INTO denylist (fingerprint, credential, reason, since_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![&**fp, &**id, format!("revoked ({evidence})"), at],
                )?;
            }
            Health::Healthy if t.actor == keyward_core::health::Actor::Operator => {
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
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> Result<StoreReader, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
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
