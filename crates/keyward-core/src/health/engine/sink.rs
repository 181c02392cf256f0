//! Transitions and where they go: the [`TransitionSink`] (the state store) and the
//! acknowledgement of a durable write.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A recorded state change.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Order of transitions in this engine.
    pub seq: u64,
    pub at: Timestamp,
    pub scope: ScopeKey,
    pub from: Health,
    pub to: Health,
    pub why: String,
    pub actor: Actor,
    /// The fingerprint of the credential's secret at the time, when the scope has one.
    pub fingerprint: Option<Arc<str>>,
    /// Must be on disk before anyone acts on it (disables, operator actions).
    pub durable: bool,
    /// The revoked-secret denylist changes with this transition: `Some(true)` adds the
    /// fingerprint (a revocation a probe confirmed), `Some(false)` removes it (an operator's
    /// reset, a re-check that found the secret working). Stores follow it, so what they
    /// restore is what the engine decided.
    pub deny: Option<bool>,
}

/// Failure to persist a transition. The store names the cause and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError(pub String);

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "health state was not persisted: {}", self.0)
    }
}

impl std::error::Error for SinkError {}

/// Where transitions go (the state store). `enqueue` must not block; the returned [`Ack`]
/// completes when the transition is persisted (synced to disk when `durable`).
pub trait TransitionSink: Send + Sync + fmt::Debug {
    fn enqueue(&self, t: Transition) -> Ack;
}

/// Completion of a persisted transition.
#[derive(Debug)]
pub struct Ack(Option<mpsc::Receiver<Result<(), SinkError>>>);

impl Ack {
    /// Already complete.
    pub fn done() -> Ack {
        Ack(None)
    }

    /// A pending completion and the sender that completes it.
    pub fn pending() -> (Ack, mpsc::SyncSender<Result<(), SinkError>>) {
        let (tx, rx) = mpsc::sync_channel(1);
        (Ack(Some(rx)), tx)
    }

    /// Blocks until persisted. (Async callers wait on a blocking thread.)
    pub fn wait(self) -> Result<(), SinkError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx
                .recv()
                .unwrap_or_else(|_| Err(SinkError("the store's writer stopped".into()))),
        }
    }
}

/// A sink that keeps nothing (tests, or a gateway run without state).
#[derive(Debug, Default)]
pub struct NullSink;

impl TransitionSink for NullSink {
    fn enqueue(&self, _t: Transition) -> Ack {
        Ack::done()
    }
}
