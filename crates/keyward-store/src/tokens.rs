//! OAuth tokens in the state file, optionally encrypted at rest.
//!
//! One row per credential: the access token, the refresh token, when the access token
//! expires, the fingerprint of the grant as it was imported, and a version that every
//! write bumps. The gateway keeps its own connection for these rows (apart from the
//! transition writer), because a refresh must be on disk *before* the new access token is
//! used: [`TokenStore::commit_refresh`] commits with `synchronous=FULL` and returns only
//! then. Only the process holding the state file's lock writes here ([`StateFile::tokens`]):
//! while a gateway runs, `keyward credentials import` goes through its admin API, and
//! `keyward credentials list` reads through [`TokenStore::open_read_only`].
//!
//! Encryption: with a [`Sealer`] holding a 256-bit key, both tokens are sealed with
//! ChaCha20-Poly1305 (ring), a random nonce per value, the credential id as associated data
//! (a sealed token moved to another row does not open). Without a key they are stored as
//! plain text behind the file's 0600 mode. A file written with a key cannot be read without
//! it; the error says so.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use keyward_core::health::Timestamp;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, Connection, OptionalExtension};

use crate::state_file::{open_read_only, Held, Init, StateFile};
use crate::StoreError;

/// Marks a plain-text value.
const PLAIN: &[u8] = b"kw0:";
/// Marks a sealed value: `kw1:` + nonce + ciphertext and tag.
const SEALED: &[u8] = b"kw1:";

/// Seals and opens token values. `Debug` never shows the key.
pub struct Sealer {
    key: Option<LessSafeKey>,
    rng: SystemRandom,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.key.is_some() {
            "Sealer(encrypting)"
        } else {
            "Sealer(plain)"
        })
    }
}

/// Errors of token storage. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The key is not 64 hex characters. Label: `bad_key`.
    #[error("the state encryption key must be 64 hex characters (32 bytes); generate one with `openssl rand -hex 32`")]
    BadKey,
    /// A stored token is sealed and no key was given. Label: `key_needed`.
    #[error("the OAuth tokens of {credential} are encrypted: set the state key (state_key in keyward.toml, or KEYWARD_STATE_KEY) to the key they were written with")]
    KeyNeeded { credential: String },
    /// A stored token does not open with this key (another key, or a damaged row).
    /// Label: `wrong_key`.
    #[error("the OAuth tokens of {credential} do not decrypt with this state key; use the key they were written with, or import the credential again")]
    WrongKey { credential: String },
    /// Sealing failed (no system randomness). Label: `seal`.
    #[error("cannot encrypt a token: the system random source failed")]
    Seal,
    /// The database refused. Label: `store`.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Fleet mode: Redis refused or could not be reached. Label: `redis`.
    #[error(
        "OAuth tokens in Redis at {target}: {source} (check that Redis is running and reachable)"
    )]
    Redis {
        target: String,
        #[source]
        source: redis::RedisError,
    },
}

impl Sealer {
    /// Stores tokens as plain text (protected by the file's mode only).
    pub fn plain() -> Sealer {
        Sealer {
            key: None,
            rng: SystemRandom::new(),
        }
    }

    /// Encrypts with `hex`, a 256-bit key as 64 hex characters (surrounding whitespace is
    /// ignored, so a key file may end in a newline).
    pub fn from_hex(hex: &str) -> Result<Sealer, TokenError> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::BadKey);
        }
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| TokenError::BadKey)?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| TokenError::BadKey)?;
        Ok(Sealer {
            key: Some(LessSafeKey::new(key)),
            rng: SystemRandom::new(),
        })
    }

    /// Whether values are encrypted.
    pub fn encrypts(&self) -> bool {
        self.key.is_some()
    }

    pub(crate) fn seal(&self, credential: &str, plain: &str) -> Result<Vec<u8>, TokenError> {
        let Some(key) = &self.key else {
            let mut out = PLAIN.to_vec();
            out.extend_from_slice(plain.as_bytes());
            return Ok(out);
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| TokenError::Seal)?;
        let mut data = plain.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(credential.as_bytes()),
            &mut data,
        )
        .map_err(|_| TokenError::Seal)?;
        let mut out = SEALED.to_vec();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(out)
    }

    pub(crate) fn open(&self, credential: &str, blob: &[u8]) -> Result<String, TokenError> {
        let wrong = || TokenError::WrongKey {
            credential: credential.to_owned(),
        };
        if let Some(plain) = blob.strip_prefix(PLAIN) {
            return String::from_utf8(plain.to_vec()).map_err(|_| wrong());
        }
        let Some(sealed) = blob.strip_prefix(SEALED) else {
            return Err(wrong());
        };
        let Some(key) = &self.key else {
            return Err(TokenError::KeyNeeded {
                credential: credential.to_owned(),
            });
        };
        if sealed.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut data = data.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(credential.as_bytes()), &mut data)
            .map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong())
    }
}

/// One credential's OAuth tokens. `Debug` shows neither token.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// When the access token expires, if the grant said.
    pub expires_at: Option<Timestamp>,
    /// The fingerprint of the grant as imported (of its first refresh token); it stays
    /// through refreshes, so routine rotation keeps the credential's health.
    pub grant_fingerprint: String,
    /// Bumped by every write; a refresh commits against the version it read.
    pub version: i64,
}

impl fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("access_token", &"…")
            .field("refresh_token", &"…")
            .field("expires_at", &self.expires_at)
            .field("grant_fingerprint", &self.grant_fingerprint)
            .field("version", &self.version)
            .finish()
    }
}

/// What a refresh's commit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Written as the next version of the row it read.
    Written { version: i64 },
    /// Another writer refreshed the same grant meanwhile; this refresh was written anyway
    /// (a successful refresh is never dropped: its refresh token is the newest the
    /// provider issued).
    WrittenOverConcurrent { version: i64 },
    /// The credential was imported again (another grant) meanwhile: the stored tokens are
    /// the operator's newer ones and were kept.
    Superseded(OAuthTokens),
}

/// A credential's token row without the tokens, for status views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub credential: String,
    pub grant_fingerprint: String,
    pub expires_at: Option<Timestamp>,
    pub version: i64,
    pub updated: Timestamp,
}

/// Tokens shared by the replicas of a fleet (the Redis backend in `fleet_tokens`
/// implements it): the same contract as the state file's rows — an import bumps the
/// version; a refresh commits against the version it read and is never dropped. The
/// token store names no fleet implementation, only this.
pub(crate) trait SharedTokens: Send + Sync + fmt::Debug {
    fn load(&self, sealer: &Sealer, credential: &str) -> Result<Option<OAuthTokens>, TokenError>;
    fn import(
        &self,
        sealer: &Sealer,
        credential: &str,
        tokens: (&str, &str),
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<OAuthTokens, TokenError>;
    fn commit_refresh(
        &self,
        sealer: &Sealer,
        credential: &str,
        read_version: i64,
        fresh: &OAuthTokens,
        now: Timestamp,
    ) -> Result<Committed, TokenError>;
    fn remove(&self, credential: &str) -> Result<bool, TokenError>;
    fn list(&self) -> Result<Vec<TokenInfo>, TokenError>;
}

/// The tokens table of one state file.
#[derive(Debug)]
pub struct TokenStore {
    /// SQLite's connection (single node); `None` in fleet mode.
    conn: Option<Mutex<Connection>>,
    /// Fleet mode: the tokens live in Redis, shared by every replica.
    redis: Option<Box<dyn SharedTokens>>,
    path: PathBuf,
    sealer: Sealer,
    /// The state file's lock, for a writable SQLite token store.
    _held: Option<Arc<Held>>,
}

/// The grant fingerprint of a refresh token as imported: 12 hex characters of its SHA-256.
pub fn grant_fingerprint(refresh_token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, refresh_token.as_bytes());
    digest
        .as_ref()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

fn ts(v: i64) -> Timestamp {
    Timestamp(u64::try_from(v).unwrap_or(0))
}

impl TokenStore {
    /// Opens the tokens of the state file at `path` (created with mode 0600 if missing)
    /// for writing: takes the state file's lock, so it is refused
    /// ([`StoreError::Locked`]) while a gateway runs on the file.
    pub fn open(path: &Path, sealer: Sealer) -> Result<TokenStore, TokenError> {
        Ok(StateFile::lock(path, Init::Refuse)?.tokens(sealer)?)
    }

    /// Opens the tokens of the state file at `path` read-only (no lock; safe beside a
    /// running gateway: it never writes, checkpoints or deletes its `-wal`). Writes fail.
    pub fn open_read_only(path: &Path, sealer: Sealer) -> Result<TokenStore, TokenError> {
        Ok(TokenStore {
            conn: Some(Mutex::new(open_read_only(path)?)),
            redis: None,
            path: path.to_owned(),
            sealer,
            _held: None,
        })
    }

    /// Whether this store may write (a read-only view of a state file another process
    /// holds may not: a refresh could not be stored, so it must not be made).
    pub fn writable(&self) -> bool {
        self.redis.is_some() || self._held.is_some()
    }

    fn sql(&self, source: rusqlite::Error) -> TokenError {
        TokenError::Store(StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, TokenError> {
        self.conn
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            .ok_or(TokenError::Store(StoreError::Stopped))
    }

    /// The tokens of a fleet, kept by `shared` (named `name` in errors).
    pub(crate) fn shared(shared: Box<dyn SharedTokens>, name: &str, sealer: Sealer) -> TokenStore {
        TokenStore {
            conn: None,
            redis: Some(shared),
            path: PathBuf::from(name),
            sealer,
            _held: None,
        }
    }

    /// The stored tokens of `credential`.
    pub fn load(&self, credential: &str) -> Result<Option<OAuthTokens>, TokenError> {
        if let Some(r) = &self.redis {
            return r.load(&self.sealer, credential);
        }
        let conn = self.conn()?;
        self.read(&conn, credential)
    }

    fn read(&self, conn: &Connection, credential: &str) -> Result<Option<OAuthTokens>, TokenError> {
        let row = conn
            .query_row(
                "SELECT grant_fingerprint, access_token, refresh_token, expires_at_ms, version
                 FROM oauth_tokens WHERE credential = ?1",
                params![credential],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<Vec<u8>>>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        let Some((grant, access, refresh, expires, version)) = row else {
            return Ok(None);
        };
        Ok(Some(OAuthTokens {
            access_token: self.sealer.open(credential, &access.unwrap_or_default())?,
            refresh_token: self.sealer.open(credential, &refresh.unwrap_or_default())?,
            expires_at: expires.map(ts),
            grant_fingerprint: grant,
            version,
        }))
    }

    fn write(
        &self,
        conn: &Connection,
        credential: &str,
        t: &OAuthTokens,
        version: i64,
        now: Timestamp,
    ) -> Result<(), TokenError> {
        let access = self.sealer.seal(credential, &t.access_token)?;
        let refresh = self.sealer.seal(credential, &t.refresh_token)?;
        conn.execute(
            "INSERT INTO oauth_tokens (credential, grant_fingerprint, access_token, refresh_token, expires_at_ms, version, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(credential) DO UPDATE SET grant_fingerprint = excluded.grant_fingerprint,
                 access_token = excluded.access_token, refresh_token = excluded.refresh_token,
                 expires_at_ms = excluded.expires_at_ms, version = excluded.version,
                 updated_ms = excluded.updated_ms",
            params![
                credential,
                t.grant_fingerprint,
                access,
                refresh,
                t.expires_at.map(ms),
                version,
                ms(now)
            ],
        )
        .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Runs `f` in an immediate transaction committed with `synchronous=FULL`: on disk
    /// when this returns.
    fn durably<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        let mut conn = self.conn()?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.sql(e))?;
        let result = (|| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| self.sql(e))?;
            let out = f(&tx)?;
            tx.commit().map_err(|e| self.sql(e))?;
            Ok(out)
        })();
        let _ = conn.pragma_update(None, "synchronous", "NORMAL");
        result
    }

    /// Stores a grant as imported by an operator: a new grant fingerprint (from its
    /// refresh token), the next version. Returns the stored row.
    pub fn import(
        &self,
        credential: &str,
        access_token: &str,
        refresh_token: &str,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<OAuthTokens, TokenError> {
        if let Some(r) = &self.redis {
            return r.import(
                &self.sealer,
                credential,
                (access_token, refresh_token),
                expires_at,
                now,
            );
        }
        self.durably(|conn| {
            let version = self
                .read(conn, credential)
                .ok()
                .flatten()
                .map_or(0, |t| t.version)
                + 1;
            let row = OAuthTokens {
                access_token: access_token.to_owned(),
                refresh_token: refresh_token.to_owned(),
                expires_at,
                grant_fingerprint: grant_fingerprint(refresh_token),
                version,
            };
            self.write(conn, credential, &row, version, now)?;
            Ok(row)
        })
    }

    /// Commits a refresh that consumed the row at `read_version`: `fresh` carries the
    /// provider's new tokens (its grant fingerprint is the consumed row's). Durable when it
    /// returns — only then may the new access token be used.
    pub fn commit_refresh(
        &self,
        credential: &str,
        read_version: i64,
        fresh: &OAuthTokens,
        now: Timestamp,
    ) -> Result<Committed, TokenError> {
        if let Some(r) = &self.redis {
            return r.commit_refresh(&self.sealer, credential, read_version, fresh, now);
        }
        self.durably(|conn| {
            let current = self.read(conn, credential).ok().flatten();
            if let Some(cur) = &current {
                if cur.grant_fingerprint != fresh.grant_fingerprint {
                    return Ok(Committed::Superseded(cur.clone()));
                }
            }
            let current_version = current.as_ref().map_or(0, |c| c.version);
            let version = current_version.max(read_version) + 1;
            self.write(conn, credential, fresh, version, now)?;
            Ok(if current_version == read_version {
                Committed::Written { version }
            } else {
                Committed::WrittenOverConcurrent { version }
            })
        })
    }

    /// Forgets a credential's tokens.
    pub fn remove(&self, credential: &str) -> Result<bool, TokenError> {
        if let Some(r) = &self.redis {
            return r.remove(credential);
        }
        self.durably(|conn| {
            conn.execute(
                "DELETE FROM oauth_tokens WHERE credential = ?1",
                params![credential],
            )
            .map(|n| n > 0)
            .map_err(|e| self.sql(e))
        })
    }

    /// Every stored grant, without its tokens.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        if let Some(r) = &self.redis {
            return r.list();
        }
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT credential, grant_fingerprint, expires_at_ms, version, updated_ms
                 FROM oauth_tokens ORDER BY credential",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TokenInfo {
                    credential: r.get(0)?,
                    grant_fingerprint: r.get(1)?,
                    expires_at: r.get::<_, Option<i64>>(2)?.map(ts),
                    version: r.get(3)?,
                    updated: ts(r.get(4)?),
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }
}

impl StateFile {
    /// The OAuth tokens of this state file, writable. They keep the lock.
    pub fn tokens(&self, sealer: Sealer) -> Result<TokenStore, StoreError> {
        Ok(TokenStore {
            conn: Some(Mutex::new(self.connect()?)),
            redis: None,
            path: self.path().to_owned(),
            sealer,
            _held: Some(self.held()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> (tempdir::Dir, PathBuf) {
        let d = tempdir::Dir::new();
        let p = d.0.join("state.db");
        (d, p)
    }

    mod tempdir {
        pub(super) struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub(super) fn new() -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "kw-tokens-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn import_then_refresh_keeps_the_grant_and_bumps_the_version() {
        let (_d, path) = temp();
        let s = TokenStore::open(&path, Sealer::plain()).unwrap();
        let row = s
            .import("c", "at-1", "rt-1", Some(Timestamp(5_000)), Timestamp(1))
            .unwrap();
        assert_eq!(row.version, 1);
        assert_eq!(row.grant_fingerprint, grant_fingerprint("rt-1"));
        let fresh = OAuthTokens {
            access_token: "at-2".into(),
            refresh_token: "rt-2".into(),
            expires_at: Some(Timestamp(9_000)),
            grant_fingerprint: row.grant_fingerprint.clone(),
            version: 0,
        };
        assert_eq!(
            s.commit_refresh("c", 1, &fresh, Timestamp(2)).unwrap(),
            Committed::Written { version: 2 }
        );
        // A second holder that read version 1 too: its refresh is still written.
        assert_eq!(
            s.commit_refresh("c", 1, &fresh, Timestamp(3)).unwrap(),
            Committed::WrittenOverConcurrent { version: 3 }
        );
        let back = s.load("c").unwrap().unwrap();
        assert_eq!(back.refresh_token, "rt-2");
        assert_eq!(back.grant_fingerprint, grant_fingerprint("rt-1"));
        assert_eq!(back.expires_at, Some(Timestamp(9_000)));
    }

    #[test]
    fn a_reimport_supersedes_an_older_grants_refresh() {
        let (_d, path) = temp();
        let s = TokenStore::open(&path, Sealer::plain()).unwrap();
        let old = s.import("c", "at-1", "rt-1", None, Timestamp(1)).unwrap();
        s.import("c", "at-new", "rt-new", None, Timestamp(2))
            .unwrap();
        let fresh = OAuthTokens {
            access_token: "at-2".into(),
            refresh_token: "rt-2".into(),
            expires_at: None,
            grant_fingerprint: old.grant_fingerprint,
            version: 0,
        };
        match s.commit_refresh("c", 1, &fresh, Timestamp(3)).unwrap() {
            Committed::Superseded(cur) => assert_eq!(cur.refresh_token, "rt-new"),
            other => panic!("expected superseded, got {other:?}"),
        }
    }

    #[test]
    fn sealed_tokens_are_not_in_the_file_and_need_the_key() {
        let (_d, path) = temp();
        {
            let s = TokenStore::open(&path, Sealer::from_hex(KEY).unwrap()).unwrap();
            s.import(
                "c",
                "at-secret-value",
                "rt-secret-value",
                None,
                Timestamp(1),
            )
            .unwrap();
            assert_eq!(
                s.load("c").unwrap().unwrap().access_token,
                "at-secret-value"
            );
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
            bytes.extend(wal);
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("secret-value"), "tokens stored in the clear");
        let plain = TokenStore::open(&path, Sealer::plain()).unwrap();
        assert!(matches!(plain.load("c"), Err(TokenError::KeyNeeded { .. })));
        drop(plain);
        let other =
            TokenStore::open(&path, Sealer::from_hex(&KEY.replace("1f", "ff")).unwrap()).unwrap();
        assert!(matches!(other.load("c"), Err(TokenError::WrongKey { .. })));
        assert!(matches!(Sealer::from_hex("abc"), Err(TokenError::BadKey)));
    }

    #[test]
    fn the_state_file_is_owner_only_and_debug_hides_tokens() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, path) = temp();
        let s = TokenStore::open(&path, Sealer::plain()).unwrap();
        let row = s.import("c", "at-x", "rt-x", None, Timestamp(1)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dbg = format!("{row:?} {:?}", s.list().unwrap());
        assert!(!dbg.contains("at-x") && !dbg.contains("rt-x"), "{dbg}");
        assert!(s.remove("c").unwrap());
        assert!(s.load("c").unwrap().is_none());
    }
}
