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
//! - The alert outbox ([`Outbox`]): an [`OutboxRule`] turns a transition into webhook
//!   messages, written in the transition's own database transaction, so a disable on disk
//!   always has its alert on disk; the gateway delivers and removes them.
//! - WAL mode: the CLI reads the file ([`StoreReader`], read-only, never checkpointing)
//!   while the gateway writes.
//! - One writer process: [`StateFile::lock`] takes `<state>.lock` (an OS file lock) for the
//!   writer's life, so a second gateway, or a CLI command that would write, is refused;
//!   the database is only ever opened through SQLite (see `state_file` for why), and
//!   created with mode 0600. A file that is empty or not Keyward's is refused unless the
//!   operator asks to move it aside ([`Init::MoveAside`], `keyward serve --init-state`).
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
mod outbox;
mod sqlite;
mod state_file;
mod tokens;

pub use fleet::{redact_url, FleetConfig, FleetError, FleetStatus, Lease, RedisStore};

pub use outbox::{Outbox, OutboxEntry, OutboxRow, OutboxRule};
pub use sqlite::{Loaded, SqliteStore, StoreError, StoreReader, TransitionRow};
pub use state_file::{Init, StateFile};
pub use tokens::{
    grant_fingerprint, Committed, OAuthTokens, Sealer, TokenError, TokenInfo, TokenStore,
};
