//! What the engine is told: credentials, targets and routes (with their cached slots), and
//! what a request asks of selection.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A credential as the engine knows it: names and metadata, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSpec {
    /// The operator's id (`anthropic-team-2`).
    pub id: Arc<str>,
    /// Its provider (incident detection groups by provider).
    pub provider: Provider,
    /// The endpoint it is used against.
    pub endpoint: Arc<str>,
    /// The quota bucket (org, project, workspace) it belongs to, if declared.
    pub bucket: Option<Arc<str>>,
    /// A short hash identifying the exact secret (for OAuth, the grant as imported).
    pub fingerprint: Arc<str>,
    /// Higher is preferred.
    pub priority: i32,
    /// Upstream models it may serve (`None`: any).
    pub models: Option<Vec<Arc<str>>>,
}

/// One target of a route: an endpoint and upstream model with a pool of credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub endpoint: Arc<str>,
    pub model: Arc<str>,
    /// Credential ids, resolved against the loaded configuration.
    pub credentials: Vec<Arc<str>>,
}

/// A route: targets in order (primary first, then fallbacks).
///
/// Build one per configuration and keep it: selection resolves its credential ids to the
/// engine's slots once per configuration generation and caches them here, so a request
/// looks up no id. Do not change `targets` of a spec already used for selection; build a
/// new one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteSpec {
    pub targets: Vec<TargetSpec>,
    pub(super) slots: SlotCache,
}

impl RouteSpec {
    /// A route over `targets`.
    pub fn new(targets: Vec<TargetSpec>) -> RouteSpec {
        RouteSpec {
            targets,
            slots: SlotCache::default(),
        }
    }
}

/// A route's targets resolved to one engine's slots (see [`RouteSpec`]). Clones start
/// empty and every cache compares equal: it is derived data, not part of the route.
#[derive(Debug, Default)]
pub(super) struct SlotCache(Mutex<Option<Arc<RouteSlots>>>);

impl Clone for SlotCache {
    fn clone(&self) -> Self {
        SlotCache::default()
    }
}

impl PartialEq for SlotCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SlotCache {}

#[derive(Debug)]
pub(super) struct RouteSlots {
    /// The engine and configuration generation the slots belong to.
    pub(super) engine: u64,
    pub(super) generation: u64,
    pub(super) targets: Vec<TargetSlots>,
}

#[derive(Debug)]
pub(super) struct TargetSlots {
    /// The endpoint's slot; `None` when it is not configured.
    pub(super) endpoint: Option<u32>,
    /// (position in the target's list, credential slot) of each configured credential.
    pub(super) creds: Vec<(u32, u32)>,
}

impl SlotCache {
    /// The slots of `route` in `inner` (engine `engine`), resolved now if the cache holds
    /// another engine's or generation's.
    pub(super) fn get(&self, route: &RouteSpec, engine: u64, inner: &Inner) -> Arc<RouteSlots> {
        let mut cached = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = cached.as_ref() {
            if s.engine == engine
                && s.generation == inner.generation
                && s.targets.len() == route.targets.len()
            {
                return s.clone();
            }
        }
        let slots = Arc::new(RouteSlots {
            engine,
            generation: inner.generation,
            targets: route
                .targets
                .iter()
                .map(|t| TargetSlots {
                    endpoint: inner.by_endpoint.get(&t.endpoint).copied(),
                    creds: t
                        .credentials
                        .iter()
                        .enumerate()
                        .filter_map(|(pos, id)| Some((pos as u32, *inner.by_id.get(id)?)))
                        .collect(),
                })
                .collect(),
        });
        *cached = Some(slots.clone());
        slots
    }
}

/// What a request asks of selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestSpec {
    /// A caller's session key (prompt-cache affinity). A success records the credential
    /// that served it.
    pub session: Option<u64>,
    /// The session is known to be under way (a session header, or a conversation past its
    /// first turn): prefer the credential that last served it while it is usable (else
    /// the one the session's key ranks highest). Without it the session is only recorded,
    /// so identical one-off requests still spread over the keys.
    pub sticky: bool,
    /// The request is bound to one account (a `previous_response_id`, uploaded files):
    /// only credentials of this bucket.
    pub bucket: Option<Arc<str>>,
    /// At most this many candidates are wanted (the request's attempt cap: it never tries
    /// more). Selection then orders and returns only that many, and stops at the target
    /// that fills them. `None`: every usable candidate.
    pub limit: Option<usize>,
}

/// Rate-limit headroom reported by a successful response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    /// Requests (or tokens) remaining in the current window.
    pub remaining: u64,
    /// The window's limit, when known.
    pub limit: Option<u64>,
    /// When the window resets.
    pub reset_at: Option<Timestamp>,
}

/// One candidate for an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Index into the route's targets.
    pub target: usize,
    pub(super) cred: u32,
    pub(super) endpoint: u32,
    /// Its position in the target's credential list, and the configuration generation
    /// `cred` and `endpoint` index into: a reload between selection and admission moves
    /// the slots, and the candidate is then found again by id.
    pub(super) pos: u32,
    pub(super) generation: u64,
}
