//! # keyward-store
//!
//! Keyward's durable state on one SQLite file: the health of every scope, an append-only
//! transition log, the denylist of revoked fingerprints, and OAuth tokens. In fleet mode
//! ([`RedisStore`]), the health, the log and the denylist are shared by every replica
//! through Redis.
//!
//! - One writer thread owns the connection and batches commits, so the async runtime never
//!   blocks on disk. Each [`keyward_core::health::Transition`] is acknowledged once
//!   committed; a batch holding a disable (or an operator action) is committed with
//!   `synchronous=FULL`, so it is on disk before anyone acts on it.
//! - WAL mode: the CLI reads the file ([`StoreReader`]) while the gateway writes.
//! - A lock file (`<state>.lock`, held with an OS file lock) keeps a second gateway off the
//!   same state; the database and lock are created with mode 0600.
//!
//! ```no_run
//! use std::sync::Arc;
//! use keyward_store::SqliteStore;
//!
//! let (store, loaded) = SqliteStore::open("keyward-state.db".as_ref())?;
//! let store = Arc::new(store);
//! // engine.restore(loaded.records, loaded.denylist); the engine's sink is `store`.
//! # let _ = (store, loaded);
//! # Ok::<(), keyward_store::StoreError>(())
//! ```

mod fleet;
mod fleet_tokens;
mod sqlite;
mod tokens;

pub use fleet::{redact_url, FleetConfig, FleetError, FleetStatus, Lease, RedisStore};

pub use sqlite::{Loaded, SqliteStore, StoreError, StoreReader, TransitionRow};
pub use tokens::{
    grant_fingerprint, Committed, OAuthTokens, Sealer, TokenError, TokenInfo, TokenStore,
};
