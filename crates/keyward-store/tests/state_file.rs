#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]
//! The state file's rules (issue 23, items 1 and 7): one writer process holds the lock for
//! its life and keeps SQLite's own locks (so another process closing the file cannot delete
//! the live `-wal`), readers never disturb it, and an empty or foreign file is refused
//! unless the operator asks to move it aside.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use keyward_core::classify::Provider;
use keyward_core::health::{
    CredentialSpec, Health, HealthEngine, ManualClock, Policy, ScopeKey, Timestamp,
};
use keyward_store::{Init, Sealer, SqliteStore, StateFile, StoreError, StoreReader, TokenStore};

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keyward-statefile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wal(path: &Path) -> PathBuf {
    let mut n = path.file_name().unwrap().to_os_string();
    n.push("-wal");
    path.with_file_name(n)
}

fn engine(store: SqliteStore) -> HealthEngine {
    let clock = ManualClock::at(Timestamp(1_751_278_440_000));
    let engine = HealthEngine::new(Policy::default(), Arc::new(clock), Arc::new(store), 1);
    engine.configure(
        ["k0", "k1"]
            .iter()
            .map(|id| CredentialSpec {
                id: (*id).into(),
                provider: Provider::Anthropic,
                endpoint: "anthropic".into(),
                bucket: None,
                fingerprint: format!("fp-{id}").into(),
                priority: 0,
                models: None,
            })
            .collect(),
    );
    engine
}

const CHILD_ENV: &str = "KEYWARD_STATEFILE_CHILD";

/// The child half of the WAL test: another process that opens the database the way any
/// SQLite tool (or the old CLI) does, read-write, and closes it.
#[test]
#[ignore = "run by another_process_closing_the_file_cannot_delete_the_live_wal as a child"]
fn open_and_close_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM health", [], |r| r.get(0))
        .unwrap();
    println!("child saw {n} rows");
    drop(conn);
}

fn run_child(path: &Path) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "open_and_close_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn another_process_closing_the_file_cannot_delete_the_live_wal() {
    let dir = tempdir("wal");
    let path = dir.join("state.db");
    // The gateway's order: the OAuth tokens, then the health store, from one lock.
    let state = StateFile::lock(&path, Init::Refuse).unwrap();
    let tokens = state.tokens(Sealer::plain()).unwrap();
    let (store, _) = state.store().unwrap();
    let engine = engine(store);
    engine
        .disable("k0", "before the other process")
        .unwrap()
        .wait()
        .unwrap();
    assert!(wal(&path).exists(), "WAL mode writes a -wal");
    run_child(&path);
    assert!(
        wal(&path).exists(),
        "another process's close deleted the live -wal: this process lost SQLite's locks"
    );
    // A write acknowledged after that is in the file a reader opens.
    engine
        .disable("k1", "after the other process")
        .unwrap()
        .wait()
        .unwrap();
    let loaded = StoreReader::open(&path).unwrap().load().unwrap();
    assert!(
        loaded
            .records
            .iter()
            .any(|(k, h, _)| *k == ScopeKey::Credential("k1".into())
                && matches!(h, Health::Disabled { .. })),
        "the acknowledged disable is not visible to a reader: {:?}",
        loaded.records
    );
    drop(tokens);
}

#[test]
fn readers_never_checkpoint_or_delete_the_wal() {
    let dir = tempdir("reader");
    let path = dir.join("state.db");
    let (store, _) = SqliteStore::open(&path).unwrap();
    let engine = engine(store);
    engine.disable("k0", "x").unwrap().wait().unwrap();
    for _ in 0..3 {
        let r = StoreReader::open(&path).unwrap();
        assert_eq!(r.load().unwrap().records.len(), 1);
        let t = TokenStore::open_read_only(&path, Sealer::plain()).unwrap();
        assert!(t.list().unwrap().is_empty());
        // A read-only token store cannot write.
        assert!(t.import("c", "a", "r", None, Timestamp(1)).is_err());
    }
    assert!(wal(&path).exists(), "a reader's close removed the -wal");
}

#[test]
fn a_second_writer_is_refused_with_the_holders_pid_and_what_to_do() {
    let dir = tempdir("second");
    let path = dir.join("state.db");
    let (_store, _) = SqliteStore::open(&path).unwrap();
    for refused in [
        SqliteStore::open(&path).err(),
        TokenStore::open(&path, Sealer::plain())
            .err()
            .map(|e| match e {
                keyward_store::TokenError::Store(s) => s,
                other => panic!("expected a store error, got {other:?}"),
            }),
    ] {
        let e = refused.expect("a second writer was let in");
        assert!(
            matches!(&e, StoreError::Locked { pid: Some(p), .. } if *p == std::process::id()),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(m.contains(&path.display().to_string()), "{m}");
        assert!(m.contains(&format!("pid {}", std::process::id())), "{m}");
        assert!(m.contains("admin API") && m.contains("stop"), "{m}");
    }
}

#[test]
fn a_new_file_is_created_owner_only_and_marked_as_keywards() {
    let dir = tempdir("new");
    let path = dir.join("sub").join("state.db");
    let (store, loaded) = SqliteStore::open(&path).unwrap();
    assert!(loaded.records.is_empty());
    // The header is in the file itself (not only in the -wal), so a gateway killed right
    // after its first start leaves a file that is recognised, never an empty one.
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
    for f in [path.clone(), wal(&path)] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} mode {mode:o}", f.display());
    }
    drop(store);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "state file mode {mode:o}");
    // An existing file keeps the mode its operator gave it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    drop(SqliteStore::open(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!(app, 0x4B57_5354);
}

#[test]
fn a_file_written_before_the_application_id_is_still_recognised() {
    let dir = tempdir("legacy");
    let path = dir.join("state.db");
    {
        let (store, _) = SqliteStore::open(&path).unwrap();
        engine(store).disable("k0", "kept").unwrap().wait().unwrap();
    }
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "application_id", 0)
        .unwrap();
    let (_store, loaded) = SqliteStore::open(&path).unwrap();
    assert_eq!(loaded.records.len(), 1, "{:?}", loaded.records);
}

#[test]
fn an_empty_file_is_refused_everywhere_until_moved_aside() {
    let dir = tempdir("empty");
    let path = dir.join("state.db");
    std::fs::write(&path, b"").unwrap();
    let e = SqliteStore::open(&path).expect_err("an empty file was accepted");
    assert!(matches!(e, StoreError::Empty { .. }), "{e:?}");
    let m = e.to_string();
    assert!(m.contains("empty") && m.contains("--init-state"), "{m}");
    assert!(matches!(
        StoreReader::open(&path).err(),
        Some(StoreError::Empty { .. })
    ));
    // Refused, and left as it was.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    let state = StateFile::lock(&path, Init::MoveAside).unwrap();
    let aside = state.moved_aside().unwrap().to_owned();
    assert_eq!(aside, dir.join("state.db.unrecognised"));
    assert!(aside.exists());
    let (store, loaded) = state.store().unwrap();
    assert!(loaded.records.is_empty());
    drop((store, state));
    // Now a Keyward state file: opened without asking.
    SqliteStore::open(&path).unwrap();
}

#[test]
fn a_foreign_file_is_refused_and_moving_it_aside_keeps_it() {
    let dir = tempdir("foreign");
    // Not SQLite at all.
    let text = dir.join("notes.db");
    std::fs::write(
        &text,
        b"these are someone's notes, not a database\n".repeat(200),
    )
    .unwrap();
    // SQLite, but another program's.
    let other = dir.join("other.db");
    {
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO photos (name) VALUES ('cat');")
            .unwrap();
    }
    for path in [&text, &other] {
        let before = std::fs::read(path).unwrap();
        let e = SqliteStore::open(path).expect_err("a foreign file was accepted");
        assert!(matches!(e, StoreError::NotKeyward { .. }), "{e:?}");
        assert!(e.to_string().contains("--init-state"), "{e}");
        assert!(matches!(
            StoreReader::open(path).err(),
            Some(StoreError::NotKeyward { .. })
        ));
        assert_eq!(
            std::fs::read(path).unwrap(),
            before,
            "a refused file was changed"
        );
        let state = StateFile::lock(path, Init::MoveAside).unwrap();
        let aside = state.moved_aside().unwrap().to_owned();
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            before,
            "moved aside changed"
        );
        let (_store, loaded) = state.store().unwrap();
        assert!(loaded.records.is_empty());
    }
}
