//! The state file on disk: who may write it, how it is opened, and what is refused.
//!
//! Why this is hand-written: SQLite's own locks are POSIX record locks, which belong to the
//! *process* and vanish when the process closes *any* descriptor of the file. A gateway that
//! opened and dropped a plain `File` on its database (to create it with mode 0600) lost its
//! locks; the next CLI that opened and closed the file believed itself the last user,
//! checkpointed and deleted the live `-wal`, and every later acknowledged write went to a
//! deleted file. So the rules here are:
//!
//! - The database path is only ever opened by SQLite. Nothing in this crate opens, reads or
//!   closes it as a plain file (`metadata` and `rename` by path do not open a descriptor).
//!   A new file is created by SQLite and then restricted to 0600 by path, before anything
//!   is written to it (its `-wal` and `-shm` inherit the mode).
//! - A writer first takes an exclusive advisory lock on a sidecar file, `<state>.lock`
//!   (`flock`, std's [`File::try_lock`]), and holds it for as long as any of its stores
//!   lives; the lock file names the holder's pid for the refusal message. A second writer
//!   (another `keyward serve`, a CLI command that would write) is refused with
//!   [`StoreError::Locked`].
//! - Readers ([`open_read_only`]) open with `SQLITE_OPEN_READ_ONLY` and with checkpoint-on-
//!   close turned off, so closing them can never checkpoint, truncate or delete the `-wal`
//!   under a running writer. They take no lock and never disturb the writer.
//! - A file that is empty, not SQLite, or SQLite without Keyward's schema is refused (a
//!   state file that silently started empty would lose every disable and the revoked-key
//!   denylist) unless the operator asks for [`Init::MoveAside`], which renames it (and its
//!   `-wal`/`-shm`) to `<state>.unrecognised[.N]` and starts a new one. A path where nothing
//!   exists yet is created: that is a first start.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use crate::sqlite::{StoreError, SCHEMA, SCHEMA_VERSION};

/// `PRAGMA application_id` of a Keyward state file ("KWST"). Files written before it was
/// set carry 0 and are recognised by their tables.
pub(crate) const APPLICATION_ID: i32 = 0x4B57_5354;

/// What to do when the state path holds something that is not a Keyward state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Init {
    /// Refuse to start ([`StoreError::Empty`] or [`StoreError::NotKeyward`]): the default.
    #[default]
    Refuse,
    /// Rename it (and its `-wal`/`-shm`) aside to `<state>.unrecognised[.N]` and start with
    /// an empty state (`keyward serve --init-state`).
    MoveAside,
}

/// The held lock of a state file; released when the last store opened under it drops.
#[derive(Debug)]
pub(crate) struct Held {
    _file: File,
}

/// A state file opened for writing by this process: the lock is held, the file is a
/// Keyward state database with the current schema. Open the health store with
/// [`StateFile::store`] and the OAuth tokens with [`StateFile::tokens`]; both keep the
/// lock alive.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    held: Arc<Held>,
    /// Set when an unrecognised file was moved aside: where it went.
    moved_aside: Option<PathBuf>,
}

impl StateFile {
    /// Takes the state file's lock (refusing if another process holds it), then opens
    /// the database, creating it (mode 0600) if nothing exists at `path`, and checks that
    /// it is a Keyward state file (see [`Init`]).
    pub fn lock(path: &Path, init: Init) -> Result<StateFile, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let held = Arc::new(take_lock(path)?);
        let mut moved_aside = None;
        let exists = match recognise_path(path) {
            Ok(exists) => exists,
            Err(refusal) => match init {
                Init::Refuse => return Err(refusal),
                Init::MoveAside => {
                    moved_aside = Some(move_aside(path)?);
                    false
                }
            },
        };
        // Creates (if missing), migrates and marks the file; dropped at once: each store
        // opens its own connection (SQLite shares its locks between connections of one
        // process).
        initialise(path, !exists)?;
        Ok(StateFile {
            path: path.to_owned(),
            held,
            moved_aside,
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where an unrecognised file was moved by [`Init::MoveAside`], if it was.
    pub fn moved_aside(&self) -> Option<&Path> {
        self.moved_aside.as_deref()
    }

    /// A read-write connection (the file exists and has the schema: [`StateFile::lock`]
    /// made sure).
    pub(crate) fn connect(&self) -> Result<Connection, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        Ok(conn)
    }

    pub(crate) fn held(&self) -> Arc<Held> {
        self.held.clone()
    }
}

/// The sidecar lock file of a state file: `<state>.lock`.
pub(crate) fn lock_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    path.with_file_name(name)
}

fn take_lock(path: &Path) -> Result<Held, StoreError> {
    let lock = lock_path(path);
    let io = |source| StoreError::Io {
        path: lock.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&lock)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse::<u32>().ok());
            return Err(StoreError::Locked {
                path: path.to_owned(),
                lock,
                pid,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    // The holder's pid, for the message a second process gets.
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(Held { _file: file })
}

/// Whether the file at `path` is a Keyward state file: `Ok(false)` if nothing is there
/// yet, `Ok(true)` if it is one, the refusal otherwise. Opens it read-only through SQLite.
fn recognise_path(path: &Path) -> Result<bool, StoreError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source,
            })
        }
        Ok(m) if m.len() == 0 => {
            return Err(StoreError::Empty {
                path: path.to_owned(),
            })
        }
        Ok(_) => {}
    }
    open_read_only(path).map(|_| true)
}

/// Why the database behind `conn` is not a Keyward state file, if it is not.
fn foreign(conn: &Connection) -> Option<String> {
    let app: i32 = match conn.pragma_query_value(None, "application_id", |r| r.get(0)) {
        Ok(a) => a,
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            return Some("not an SQLite database".into())
        }
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    if app == APPLICATION_ID {
        return None;
    }
    if app != 0 {
        return Some(format!(
            "an SQLite database of another program (application_id {app:#x})"
        ));
    }
    // Written before the application_id was set: recognised by its tables.
    let tables: Result<Vec<String>, _> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        });
    match tables {
        Ok(t)
            if ["health", "transitions", "denylist"]
                .iter()
                .all(|n| t.iter().any(|x| x == n)) =>
        {
            None
        }
        Ok(t) if t.is_empty() => Some("an SQLite database with no tables".into()),
        Ok(_) => Some("an SQLite database without Keyward's tables".into()),
        Err(e) => Some(format!("unreadable: {e}")),
    }
}

/// Opens the state file read-only, for the CLI and the admin history: it can never write,
/// checkpoint, truncate or delete the `-wal` of a running writer, and takes no lock.
/// Refuses a missing, empty or foreign file.
pub(crate) fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let sql = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            })
        }
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source,
            })
        }
        Ok(m) if m.len() == 0 => {
            return Err(StoreError::Empty {
                path: path.to_owned(),
            })
        }
        Ok(_) => {}
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    if let Some(what) = foreign(&conn) {
        return Err(StoreError::NotKeyward {
            path: path.to_owned(),
            what,
        });
    }
    Ok(conn)
}

/// Creates the database if missing (`create`: restricted to 0600 before anything is
/// written; an existing file keeps the mode its operator gave it), switches it to WAL,
/// brings the schema up to date and marks it as Keyward's. The caller holds the lock and
/// has checked the file.
fn initialise(path: &Path, create: bool) -> Result<(), StoreError> {
    let sql = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(sql)?;
    if create {
        // SQLite created the file (empty) with the default mode; restrict it by path
        // before the first write. The -wal and -shm take the database's mode when SQLite
        // creates them.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| StoreError::Io {
                path: path.to_owned(),
                source,
            },
        )?;
    }
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql)?;
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
    conn.execute_batch(crate::outbox::OUTBOX_SCHEMA)
        .map_err(sql)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sql)?;
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(sql)?;
    Ok(())
}

/// Renames an unrecognised file (and its `-wal`, `-shm`) to `<state>.unrecognised[.N]`,
/// the first name free. Returns the new path.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let aside = (0..10_000)
        .map(|n| {
            path.with_file_name(if n == 0 {
                format!("{name}.unrecognised")
            } else {
                format!("{name}.unrecognised.{n}")
            })
        })
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .ok_or_else(|| {
            io(std::io::Error::other(
                "too many .unrecognised copies beside it; remove old ones",
            ))
        })?;
    for suffix in ["-wal", "-shm"] {
        let side = sibling(path, suffix);
        if std::fs::symlink_metadata(&side).is_ok() {
            std::fs::rename(&side, sibling(&aside, suffix)).map_err(io)?;
        }
    }
    std::fs::rename(path, &aside).map_err(io)?;
    Ok(aside)
}

/// `path` with `suffix` appended to its file name (`state.db` → `state.db-wal`).
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}
