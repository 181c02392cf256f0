//! The health engine: every scope's [`Record`], fed by verdicts, successes and probe
//! outcomes, and the one place that decides which credentials a request may use.
//!
//! Scopes are interned into slots when the configuration is loaded, so selection and
//! bookkeeping on the request path are index lookups under one short lock — no string
//! hashing, no allocation per healthy candidate, and no store write unless a state changes.
//!
//! Admission is the atomic step: [`HealthEngine::admit`] re-checks every scope a candidate
//! touches under the same lock that records verdicts, so once the first failure of a
//! revoked key is recorded, no new attempt is admitted on it (only its probe).

use std::collections::{HashMap, VecDeque};

// The hot path looks credentials and endpoints up by id on every selection: FxHash (not
// SipHash) there; the keys are the operator's own ids, not attacker-chosen.
use rustc_hash::FxHashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::clock::{Clock, Timestamp};
use super::policy::Policy;
use super::scope::ScopeKey;
use super::state::{Actor, Event, Health, ProbeOutcome, Record, Step};
use crate::classify::{Class, Confidence, Failure, Provider, Scope};

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
    slots: SlotCache,
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
struct SlotCache(Mutex<Option<Arc<RouteSlots>>>);

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
struct RouteSlots {
    /// The engine and configuration generation the slots belong to.
    engine: u64,
    generation: u64,
    targets: Vec<TargetSlots>,
}

#[derive(Debug)]
struct TargetSlots {
    /// The endpoint's slot; `None` when it is not configured.
    endpoint: Option<u32>,
    /// (position in the target's list, credential slot) of each configured credential.
    creds: Vec<(u32, u32)>,
}

impl SlotCache {
    /// The slots of `route` in `inner` (engine `engine`), resolved now if the cache holds
    /// another engine's or generation's.
    fn get(&self, route: &RouteSpec, engine: u64, inner: &Inner) -> Arc<RouteSlots> {
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
    /// A caller's session key (prompt-cache affinity): the same credential while healthy.
    pub session: Option<u64>,
    /// The request is bound to one account (a `previous_response_id`, uploaded files):
    /// only credentials of this bucket.
    pub bucket: Option<Arc<str>>,
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
    cred: u32,
    endpoint: u32,
    /// Its position in the target's credential list, and the configuration generation
    /// `cred` and `endpoint` index into: a reload between selection and admission moves
    /// the slots, and the candidate is then found again by id.
    pos: u32,
    generation: u64,
}

/// A disabled credential, for the caller's error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledInfo {
    pub credential: Arc<str>,
    pub scope: String,
    pub class: Class,
    pub since: Timestamp,
    pub evidence: String,
}

/// Why nothing is usable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unavailable {
    /// The earliest time some candidate may take traffic again, if any will by itself.
    pub earliest_recovery: Option<Timestamp>,
    /// Candidates out until an operator, a re-check or a new secret (each with its reason).
    pub disabled: Vec<DisabledInfo>,
    /// Candidates cooling or awaiting a probe.
    pub waiting: usize,
    /// Candidates considered.
    pub total: usize,
    /// Every candidate considered, with the state that keeps it out and its evidence.
    pub candidates: Vec<CandidateState>,
    /// Provider-wide auth incidents on the endpoints of these candidates.
    pub incidents: Vec<IncidentInfo>,
}

impl Unavailable {
    /// Whether waiting can help: some candidate is out for a transient cause (a cooldown,
    /// a low-confidence suspicion, an auth incident). `false` when every candidate stands
    /// rejected by a permanent verdict (disabled, or suspect after a high-confidence
    /// revocation, credit or model-access failure): only an operator or a new secret helps,
    /// and a caller retrying would only wait for the same answer.
    pub fn retryable(&self) -> bool {
        self.candidates.iter().any(|c| !c.permanent)
    }

    /// When a retry may find a candidate: the earliest next check of a candidate out for a
    /// transient cause (`None` when none is, see [`Unavailable::retryable`]).
    pub fn retry_at(&self) -> Option<Timestamp> {
        self.candidates
            .iter()
            .filter(|c| !c.permanent)
            .filter_map(|c| c.next_check)
            .min()
    }
}

/// One candidate that cannot take traffic now, and why (for the caller's error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateState {
    pub credential: Arc<str>,
    /// The scope that keeps it out (`credential/k1`, `provider_model/anthropic/claude-x`).
    pub scope: String,
    /// `cooling`, `suspect`, `probing` or `disabled`.
    pub state: &'static str,
    pub class: Option<Class>,
    /// Since when the scope is in this state.
    pub since: Timestamp,
    /// The evidence of the failure that put it there (status, error type, phrase).
    pub evidence: String,
    /// When it is next checked: the end of a cooldown, the confirmation probe, the
    /// incident's next probe, a disable's background re-check.
    pub next_check: Option<Timestamp>,
    /// Rejected by a permanent verdict (disabled, or suspect after a high-confidence
    /// revocation / credit / model-access failure, outside any incident).
    pub permanent: bool,
    /// Its endpoint is in a provider-wide auth incident that covers it.
    pub incident: bool,
}

/// A provider-wide auth incident on one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentInfo {
    pub endpoint: Arc<str>,
    pub since: Timestamp,
    /// The credentials rejected at once.
    pub credentials: Vec<Arc<str>>,
    /// When one of them is probed next (a success ends the incident).
    pub next_probe: Timestamp,
    /// When its credentials are disabled if every probe is still rejected.
    pub disables_at: Timestamp,
}

/// An incident started, ended or expired: for the gateway's logs and metrics
/// ([`HealthEngine::take_incident_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentEvent {
    Started(IncidentInfo),
    /// A success on the endpoint (traffic or a probe) showed its auth working.
    Ended {
        endpoint: Arc<str>,
        since: Timestamp,
        why: String,
    },
    /// It outlasted `incident_max`: its credentials were disabled.
    Expired {
        endpoint: Arc<str>,
        since: Timestamp,
        disabled: Vec<Arc<str>>,
    },
}

/// A candidate selection left out, and why (for the request's decision lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub credential: Arc<str>,
    /// "disabled, auth_permanent since 2026-…Z, confirmed by probe: 401 …", or "out of
    /// rotation until …".
    pub reason: String,
}

/// The outcome of selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Candidates in the order to try them.
    Candidates(Vec<Candidate>),
    /// None is usable.
    Unavailable(Unavailable),
}

/// What a probe must test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Key validity: the cheapest authenticated call on the same endpoint and auth mode.
    KeyValidity,
    /// Credit or model access: a minimal real request (one output token).
    MinimalRequest,
}

/// A probe the engine asks for. It holds the scope's lease until its outcome is recorded
/// or the lease lapses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRequest {
    pub scope: ScopeKey,
    /// The credential to probe with.
    pub credential: Arc<str>,
    pub endpoint: Arc<str>,
    /// The model to probe (for credit and model access).
    pub model: Option<Arc<str>>,
    /// The class being confirmed.
    pub class: Class,
    pub kind: ProbeKind,
    /// A background re-check of a disable rather than a confirmation.
    pub recheck: bool,
    /// The probe of a provider-wide auth incident: every sibling is failing too, so no
    /// control call can tell anything (a success ends the incident).
    pub incident: bool,
}

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

#[derive(Debug)]
struct CredSlot {
    spec: CredentialSpec,
    endpoint: u32,
    bucket: Option<u32>,
    rec: Record,
    models: Vec<(Arc<str>, Record)>,
    inflight: u32,
    headroom: Option<Headroom>,
    /// A hash of the id, for session affinity.
    id_hash: u64,
    /// The class and confidence of its last failure (in memory: after a restart a
    /// restored suspicion counts as low confidence).
    last_failure: Option<(Class, Confidence)>,
    /// Its disable came from an incident that outlasted `incident_max` (re-checked on the
    /// faster `incident_recheck` curve, never added to the denylist).
    incident_disabled: bool,
}

#[derive(Debug)]
struct EndpointSlot {
    id: Arc<str>,
    rec: Record,
    models: Vec<(Arc<str>, Record)>,
    /// When a credential of this endpoint last answered (traffic or probe).
    last_success: Option<Timestamp>,
    /// Auth failures are recorded in its incident entry since its last success (which
    /// clears them: failures before an answer cannot be a provider-wide incident).
    auth_failures: bool,
}

#[derive(Debug)]
struct BucketSlot {
    id: Arc<str>,
    rec: Record,
}

/// Auth failures on one endpoint, and the incident they make when they are one.
#[derive(Debug, Default)]
struct Incident {
    /// Recent auth failures: (when, credential id).
    recent: VecDeque<(Timestamp, Arc<str>)>,
    active: Option<ActiveIncident>,
}

#[derive(Debug)]
struct ActiveIncident {
    since: Timestamp,
    credentials: Vec<Arc<str>>,
    next_probe: Timestamp,
    /// Round robin over `credentials` for the incident probe.
    turn: usize,
}

#[derive(Debug)]
struct Inner {
    policy: Policy,
    creds: Vec<CredSlot>,
    by_id: FxHashMap<Arc<str>, u32>,
    endpoints: Vec<EndpointSlot>,
    by_endpoint: FxHashMap<Arc<str>, u32>,
    buckets: Vec<BucketSlot>,
    by_bucket: HashMap<Arc<str>, u32>,
    /// Records without a configured owner: loaded from the store before the config, or
    /// left by a removed credential (kept until `retention` after removal).
    detached: HashMap<ScopeKey, (Record, Option<Timestamp>)>,
    /// Fingerprints of confirmed-revoked secrets: if one comes back, it stays out.
    denylist: HashMap<Arc<str>, (Arc<str>, String)>,
    /// Some endpoint is in an incident (the success path checks this one flag before
    /// touching the incidents).
    incident_marked: bool,
    /// Bumped by every `configure`: slot indices handed out before belong to an older one.
    generation: u64,
    /// The last fingerprint configured for each credential id.
    fingerprints: HashMap<Arc<str>, Arc<str>>,
    /// Auth failures and incidents by endpoint id.
    incidents: HashMap<Arc<str>, Incident>,
    incident_events: Vec<IncidentEvent>,
    seq: u64,
    rng: u64,
    rotate: u64,
    retention: Duration,
}

/// The health engine. Cheap to share (`Arc` inside); all methods take `&self`.
#[derive(Debug, Clone)]
pub struct HealthEngine {
    shared: Arc<Shared>,
}

/// Engine identities, for [`SlotCache`]: slots of one engine mean nothing to another.
static ENGINE_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Debug)]
struct Shared {
    id: u64,
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn TransitionSink>,
}

/// An admitted attempt: the candidate's scopes were usable and its in-flight count is held
/// until a verdict, a success or a drop.
#[derive(Debug)]
pub struct AttemptScope {
    shared: Arc<Shared>,
    /// The credential's id, as admitted.
    id: Arc<str>,
    /// The configuration generation `cred` and `endpoint` index into.
    generation: u64,
    cred: u32,
    endpoint: u32,
    model: Arc<str>,
    /// This attempt is the one trial after a cooldown.
    pub trial: bool,
    done: bool,
}

impl AttemptScope {
    /// The credential's id.
    pub fn credential(&self) -> Arc<str> {
        self.id.clone()
    }

    /// The upstream model.
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl AttemptScope {
    /// The attempt's credential and endpoint slots in the current configuration: its own
    /// if no reload happened since admission, else its credential found again by id
    /// (`None`: the reload removed it). A verdict always lands on the credential it was
    /// made on, however a reload moved the slots.
    fn slots(&self, inner: &Inner) -> Option<(u32, u32)> {
        if self.generation == inner.generation {
            return Some((self.cred, self.endpoint));
        }
        let c = *inner.by_id.get(&self.id)?;
        Some((c, inner.creds.get(c as usize)?.endpoint))
    }
}

impl Drop for AttemptScope {
    fn drop(&mut self) {
        if !self.done {
            // Cancelled: release the in-flight count, and hand a trial lease back so the
            // next request can take the trial at once.
            let mut inner = self.shared.lock();
            let Some((cred, endpoint)) = self.slots(&inner) else {
                return;
            };
            if let Some(c) = inner.creds.get_mut(cred as usize) {
                c.inflight = c.inflight.saturating_sub(1);
            }
            if self.trial {
                let now = self.shared.clock.now();
                let pending = hand_back_trials(
                    &mut inner,
                    (cred, endpoint, &self.model),
                    None,
                    now,
                    "trial cancelled (the caller went away): the next request takes it",
                );
                drop(inner);
                for t in pending {
                    drop(self.shared.sink.enqueue(t));
                }
            }
        }
    }
}

/// What the request should do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureAdvice {
    /// The policy allows trying the same credential again (after a wait or refresh).
    pub retry_same: bool,
    /// The endpoint is in a provider-wide auth incident (nothing is disabled while it
    /// lasts).
    pub incident: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock must not take health down with it: the data is
        // a set of independent records, each left in a valid state by every step.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl HealthEngine {
    /// An engine with `policy`, reading time from `clock` and persisting to `sink`.
    /// `seed` seeds the backoff jitter.
    pub fn new(
        policy: Policy,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn TransitionSink>,
        seed: u64,
    ) -> Self {
        HealthEngine {
            shared: Arc::new(Shared {
                id: ENGINE_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                inner: Mutex::new(Inner {
                    policy,
                    creds: Vec::new(),
                    by_id: FxHashMap::default(),
                    endpoints: Vec::new(),
                    by_endpoint: FxHashMap::default(),
                    buckets: Vec::new(),
                    by_bucket: HashMap::new(),
                    detached: HashMap::new(),
                    denylist: HashMap::new(),
                    incident_marked: false,
                    generation: 0,
                    fingerprints: HashMap::new(),
                    incidents: HashMap::new(),
                    incident_events: Vec::new(),
                    seq: 0,
                    rng: seed | 1,
                    rotate: 0,
                    retention: Duration::from_secs(7 * 24 * 3600),
                }),
                clock,
                sink,
            }),
        }
    }

    /// The current time on the engine's clock.
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// Replaces the policy (config reload).
    pub fn set_policy(&self, policy: Policy) {
        self.shared.lock().policy = policy;
    }

    /// How long the records of removed credentials are kept (default 7 days).
    pub fn set_retention(&self, retention: Duration) {
        self.shared.lock().retention = retention;
    }

    /// Loads persisted state (before or after [`HealthEngine::configure`]): records by
    /// scope and the denylist of revoked fingerprints.
    pub fn restore(
        &self,
        records: Vec<(ScopeKey, Health, Timestamp)>,
        denylist: Vec<(String, String, String)>,
    ) {
        let mut inner = self.shared.lock();
        for (fp, cred, reason) in denylist {
            inner.denylist.insert(fp.into(), (cred.into(), reason));
        }
        for (key, health, since) in records {
            // A configured scope takes the record in place (reconfiguring below would
            // otherwise detach the configured slot's record over it).
            match remote_record(&mut inner, &key) {
                Some(rec) => *rec = Record::new(health, since),
                None => {
                    inner
                        .detached
                        .insert(key, (Record::new(health, since), None));
                }
            }
        }
        let specs: Vec<CredentialSpec> = inner.creds.iter().map(|c| c.spec.clone()).collect();
        let now = self.shared.clock.now();
        let pending = reconfigure(&mut inner, specs, now);
        let acks: Vec<Ack> = pending
            .into_iter()
            .map(|t| self.shared.sink.enqueue(t))
            .collect();
        drop(inner);
        drop(acks);
    }

    /// Loads (or reloads) the credentials. Health is keyed by credential id and
    /// fingerprint: other credentials keep their health; a new secret for an existing id
    /// starts healthy (unless its fingerprint was revoked before); removed credentials'
    /// records are kept for the retention period.
    pub fn configure(&self, creds: Vec<CredentialSpec>) {
        let now = self.shared.clock.now();
        let mut inner = self.shared.lock();
        let pending = reconfigure(&mut inner, creds, now);
        for t in pending {
            drop(self.shared.sink.enqueue(t));
        }
    }

    /// Orders the route's usable candidates: targets in route order; within a target the
    /// session's credential first, then credentials with rate-limit headroom, then
    /// priority, then fewest in flight (ties rotate). Reads only; [`HealthEngine::admit`]
    /// makes the decision final.
    pub fn select(&self, route: &RouteSpec, req: &RequestSpec) -> Selection {
        self.select_into(route, req, None)
    }

    /// [`HealthEngine::select`], also saying which candidates were left out and why.
    pub fn select_explained(
        &self,
        route: &RouteSpec,
        req: &RequestSpec,
    ) -> (Selection, Vec<Skipped>) {
        let mut skipped = Vec::new();
        let s = self.select_into(route, req, Some(&mut skipped));
        (s, skipped)
    }

    fn select_into(
        &self,
        route: &RouteSpec,
        req: &RequestSpec,
        mut skipped: Option<&mut Vec<Skipped>>,
    ) -> Selection {
        let now = self.shared.clock.now();
        let mut inner = self.shared.lock();
        inner.rotate = inner.rotate.wrapping_add(1);
        let rotate = inner.rotate;
        let mut out: Vec<Candidate> = Vec::new();
        let mut unavailable = Unavailable::default();
        let explain = skipped.is_some();
        // Disabled candidates found without details: (target, slot), explained only if
        // nothing is usable.
        let mut unexplained: Vec<(usize, u32, u32)> = Vec::new();
        let slots = route.slots.get(route, self.shared.id, &inner);
        for ((ti, target), ts) in route.targets.iter().enumerate().zip(&slots.targets) {
            let Some(ep) = ts.endpoint else {
                continue;
            };
            let endpoint_ok = endpoint_admits(&inner, ep, &target.model, now);
            let mut eligible: Vec<(u32, u32, u64)> = Vec::with_capacity(ts.creds.len());
            // Ties rotate: a per-request offset into the target's list (one division per
            // target, not one per candidate).
            let len = target.credentials.len().max(1) as u64;
            let offset = rotate % len;
            for &(pos, c) in &ts.creds {
                let Some(id) = target.credentials.get(pos as usize) else {
                    continue;
                };
                unavailable.total += 1;
                match usable_given(&inner, c, ep, &target.model, req, now, endpoint_ok, explain) {
                    Ok(()) => {
                        let slot = &inner.creds[c as usize];
                        let headroom_rank: u64 = match slot.headroom {
                            Some(h) if h.remaining == 0 && h.reset_at.is_some_and(|r| r > now) => 2,
                            Some(Headroom {
                                remaining,
                                limit: Some(limit),
                                ..
                            }) if remaining * 10 < limit => 1,
                            _ => 0,
                        };
                        // The session's credential is chosen below, among the eligible.
                        let aff: u64 = 1;
                        let prio = (i64::from(i32::MAX) - i64::from(slot.spec.priority)) as u64;
                        let spread = match u64::from(pos) + offset {
                            s if s >= len => s - len,
                            s => s,
                        };
                        let key = (aff << 62)
                            | (headroom_rank << 60)
                            | ((prio & 0xFFFF_FFFF) << 24)
                            | (u64::from(slot.inflight.min(0xFFF)) << 12)
                            | (spread & 0xFFF);
                        eligible.push((c, pos, key));
                    }
                    Err(block) => match block {
                        Block::Waiting(at) => {
                            if let Some(s) = skipped.as_deref_mut() {
                                s.push(Skipped {
                                    credential: id.clone(),
                                    reason: format!(
                                        "out of rotation until {} (cooling, or awaiting its probe)",
                                        at.rfc3339()
                                    ),
                                });
                            }
                            unavailable.waiting += 1;
                            unavailable.earliest_recovery = Some(
                                unavailable
                                    .earliest_recovery
                                    .map_or(at, |e: Timestamp| e.min(at)),
                            );
                        }
                        Block::Disabled(info) => {
                            if let Some(s) = skipped.as_deref_mut() {
                                s.push(Skipped {
                                    credential: id.clone(),
                                    reason: format!(
                                        "disabled, {} since {}, {}",
                                        info.class,
                                        info.since.rfc3339(),
                                        info.evidence
                                    ),
                                });
                            }
                            unavailable.disabled.push(info);
                        }
                        Block::DisabledUnexplained => unexplained.push((ti, c, ep)),
                        Block::NotServed => unavailable.total -= 1,
                    },
                }
            }
            // Session affinity: of the usable credentials, the one the session's key ranks
            // highest (rendezvous hashing: stable while it stays usable, and the same on
            // every replica of a fleet) goes first.
            if let Some(session) = req.session {
                if let Some(best) = eligible
                    .iter_mut()
                    .max_by_key(|(c, _, _)| rendezvous(session, inner.creds[*c as usize].id_hash))
                {
                    best.2 &= !(1u64 << 62);
                }
            }
            // Requests almost always succeed on their first candidate and never try more
            // than `max_attempts`: order the best few exactly, leave the rest unsorted.
            const ORDERED: usize = 16;
            if eligible.len() > ORDERED {
                eligible.select_nth_unstable_by_key(ORDERED, |&(_, _, k)| k);
                eligible[..ORDERED].sort_by_key(|&(_, _, k)| k);
            } else {
                eligible.sort_by_key(|&(_, _, k)| k);
            }
            let generation = inner.generation;
            out.extend(eligible.into_iter().map(|(c, pos, _)| Candidate {
                target: ti,
                cred: c,
                endpoint: ep,
                pos,
                generation,
            }));
        }
        if out.is_empty() {
            for (ti, c, ep) in unexplained {
                let model = &route.targets[ti].model;
                if let Err(Block::Disabled(info)) =
                    usable_given(&inner, c, ep, model, req, now, false, true)
                {
                    unavailable.disabled.push(info);
                }
            }
            // Nothing is usable: every candidate's state and evidence, for the caller.
            for ((ti, target), ts) in route.targets.iter().enumerate().zip(&slots.targets) {
                let Some(ep) = ts.endpoint else {
                    continue;
                };
                for &(_, c) in &ts.creds {
                    if usable(&inner, c, ep, &target.model, req, now)
                        .is_err_and(|b| matches!(b, Block::NotServed))
                    {
                        continue;
                    }
                    if let Some(state) =
                        candidate_state(&inner, c, ep, &route.targets[ti].model, now)
                    {
                        if !unavailable
                            .candidates
                            .iter()
                            .any(|s| s.credential == state.credential && s.scope == state.scope)
                        {
                            unavailable.candidates.push(state);
                        }
                    }
                }
                if let Some(e) = inner.endpoints.get(ep as usize) {
                    if let Some(a) = inner.incidents.get(&e.id).and_then(|i| i.active.as_ref()) {
                        if !unavailable.incidents.iter().any(|i| i.endpoint == e.id) {
                            unavailable
                                .incidents
                                .push(incident_info(&e.id, a, &inner.policy));
                        }
                    }
                }
            }
            return Selection::Unavailable(unavailable);
        }
        Selection::Candidates(out)
    }

    /// Admits an attempt on `cand` if every scope it touches still takes traffic. A due
    /// cooldown admits exactly one trial (under a lease); otherwise `None`.
    pub fn admit(
        &self,
        route: &RouteSpec,
        cand: &Candidate,
        req: &RequestSpec,
    ) -> Option<AttemptScope> {
        let now = self.shared.clock.now();
        let target = route.targets.get(cand.target)?;
        let mut inner = self.shared.lock();
        let (cred, endpoint) = if cand.generation == inner.generation {
            (cand.cred, cand.endpoint)
        } else {
            // The configuration changed since selection: find the credential again by id.
            let id = target.credentials.get(cand.pos as usize)?;
            (
                *inner.by_id.get(id)?,
                *inner.by_endpoint.get(&target.endpoint)?,
            )
        };
        usable(&inner, cred, endpoint, &target.model, req, now).ok()?;
        // Any cooled scope that is due turns this attempt into its one trial.
        let mut trial = false;
        let policy = inner.policy.clone();
        let mut steps: Vec<(ScopeKey, Step, Option<Arc<str>>)> = Vec::new();
        for r in scopes_of(&mut inner, cred, endpoint, &target.model) {
            let (key, rec, fp) = r;
            if matches!(rec.health, Health::Cooling { .. }) {
                if let Some(step) = rec.apply(&Event::LeaseTaken, &policy, now, fp.as_deref(), 0.0)
                {
                    trial = true;
                    steps.push((key, step, fp));
                }
            }
        }
        let slot = inner.creds.get_mut(cred as usize)?;
        slot.inflight = slot.inflight.saturating_add(1);
        let id = slot.spec.id.clone();
        let generation = inner.generation;
        let pending = finish_steps(&mut inner, steps, now, Actor::Traffic);
        drop(inner);
        for t in pending {
            drop(self.shared.sink.enqueue(t));
        }
        Some(AttemptScope {
            shared: self.shared.clone(),
            id,
            generation,
            cred,
            endpoint,
            model: target.model.clone(),
            trial,
            done: false,
        })
    }

    /// Records a classified failure of an admitted attempt.
    pub fn record_failure(&self, mut attempt: AttemptScope, failure: &Failure) -> FailureAdvice {
        attempt.done = true;
        let now = self.shared.clock.now();
        let mut inner = self.shared.lock();
        let Some((cred, endpoint)) = attempt.slots(&inner) else {
            // Its credential left the configuration meanwhile: nothing to record it on.
            return FailureAdvice {
                retry_same: false,
                incident: false,
            };
        };
        if let Some(c) = inner.creds.get_mut(cred as usize) {
            c.inflight = c.inflight.saturating_sub(1);
        }
        let policy = inner.policy.clone();
        let class_policy = policy.for_class(failure.class);
        let retry_same = class_policy.retry_same;
        // The policy may choose the scope a class touches; otherwise the classifier's.
        let scope = class_policy.scope.unwrap_or(failure.scope);
        let mut advice = FailureAdvice {
            retry_same,
            incident: false,
        };
        let failing_key =
            scope_record(&mut inner, cred, endpoint, &attempt.model, scope).map(|(k, _, _)| k);
        // A trial this attempt held on another scope tested nothing there: hand it back
        // (logged), or that scope would wait out the whole lease.
        let mut pending = if attempt.trial {
            hand_back_trials(
                &mut inner,
                (cred, endpoint, &attempt.model),
                failing_key.as_ref().filter(|_| scope != Scope::Request),
                now,
                "the trial failed for a reason of another scope: the next request takes it",
            )
        } else {
            Vec::new()
        };
        if scope == Scope::Request {
            drop(inner);
            for t in pending {
                drop(self.shared.sink.enqueue(t));
            }
            return advice;
        }
        if let Some(c) = inner.creds.get_mut(cred as usize) {
            c.last_failure = Some((failure.class, failure.confidence));
        }
        // An auth failure always takes the credential out of rotation (suspect, until its
        // probe); whether it is part of a provider-wide incident decides only what the
        // probe may conclude and what the caller is told.
        let auth = matches!(failure.class, Class::AuthPermanent | Class::AuthTransient)
            && matches!(scope, Scope::Credential);
        if auth {
            advice.incident = note_auth_failure(&mut inner, cred, now);
        }
        let roll = next_roll(&mut inner);
        let event = Event::Failure {
            class: failure.class,
            confidence: failure.confidence,
            retry_after: failure.retry_after,
            evidence: &failure.evidence.value,
        };
        let evidence_line = evidence_text(failure);
        let event = match event {
            Event::Failure {
                class,
                confidence,
                retry_after,
                ..
            } => Event::Failure {
                class,
                confidence,
                retry_after,
                evidence: &evidence_line,
            },
            other => other,
        };
        if let Some((key, rec, fp)) =
            scope_record(&mut inner, cred, endpoint, &attempt.model, scope)
        {
            if let Some(step) = rec.apply(&event, &policy, now, fp.as_deref(), roll) {
                pending.extend(finish_steps(
                    &mut inner,
                    vec![(key, step, fp)],
                    now,
                    Actor::Traffic,
                ));
            }
        }
        drop(inner);
        for t in pending {
            drop(self.shared.sink.enqueue(t));
        }
        advice
    }

    /// Records a success of an admitted attempt (and the headroom it reported). No store
    /// write happens unless a scope changes state.
    pub fn record_success(&self, mut attempt: AttemptScope, headroom: Option<Headroom>) {
        attempt.done = true;
        let now = self.shared.clock.now();
        let mut inner = self.shared.lock();
        let Some((cred, endpoint)) = attempt.slots(&inner) else {
            return;
        };
        let policy = inner.policy.clone();
        if let Some(c) = inner.creds.get_mut(cred as usize) {
            c.inflight = c.inflight.saturating_sub(1);
            if headroom.is_some() {
                c.headroom = headroom;
            }
        }
        // A success on an endpoint refutes an incident there: its auth works, and auth
        // failures before it no longer count towards one (a key revoked afterwards is a
        // revocation, not more of the incident).
        note_endpoint_success(&mut inner, endpoint, now, || {
            format!("`{}` answered a request", attempt.id)
        });
        let mut steps = Vec::new();
        for (key, rec, fp) in scopes_of(&mut inner, cred, endpoint, &attempt.model) {
            if rec.health == Health::Healthy && rec.strikes == 0 && rec.refresh_strikes == 0 {
                rec.last_success = Some(now);
                continue;
            }
            if let Some(step) = rec.apply(&Event::Success, &policy, now, fp.as_deref(), 0.0) {
                steps.push((key, step, fp));
            }
        }
        if steps.is_empty() {
            return;
        }
        let pending = finish_steps(&mut inner, steps, now, Actor::Traffic);
        drop(inner);
        for t in pending {
            drop(self.shared.sink.enqueue(t));
        }
    }

    /// Probes that are due, each now holding its scope's lease. Confirmation probes of
    /// suspect scopes, lapsed leases, and background re-checks of disables. During an
    /// endpoint's auth incident its auth probes wait, except the incident's own probe
    /// (one of its credentials every `incident_cooldown`); an incident older than
    /// `incident_max` is ended here by disabling its credentials.
    pub fn due_probes(&self) -> Vec<ProbeRequest> {
        let now = self.shared.clock.now();
        let mut inner = self.shared.lock();
        let policy = inner.policy.clone();
        let mut out = Vec::new();
        let mut steps = Vec::new();
        let incident_steps = incident_round(&mut inner, now, &mut out);
        let n = inner.creds.len();
        for c in 0..n {
            let ep_id = inner.creds[c].endpoint;
            let in_incident = endpoint_in_incident(&inner, ep_id);
            let slot = &mut inner.creds[c];
            let id = slot.spec.id.clone();
            let fp = slot.spec.fingerprint.clone();
            let mut records: Vec<(ScopeKey, Option<Arc<str>>, &mut Record)> = Vec::new();
            records.push((ScopeKey::Credential(id.clone()), None, &mut slot.rec));
            for (m, r) in slot.models.iter_mut() {
                records.push((
                    ScopeKey::CredentialModel(id.clone(), m.clone()),
                    Some(m.clone()),
                    r,
                ));
            }
            let mut due = Vec::new();
            for (key, model, rec) in records {
                let class = rec.health.class();
                let is_auth = matches!(class, Some(Class::AuthPermanent | Class::AuthTransient));
                if in_incident && is_auth {
                    continue;
                }
                let recheck = matches!(rec.health, Health::Disabled { by_operator: false, recheck_at: Some(at), .. } if at <= now)
                    && rec.recheck_lease.is_none_or(|l| l <= now);
                let confirm = matches!(&rec.health, Health::Suspect { probe_at, .. } if *probe_at <= now)
                    || matches!(&rec.health, Health::Probing { trial: false, lease_until, .. } if *lease_until <= now);
                if !(recheck || confirm) {
                    continue;
                }
                if let Some(step) = rec.apply(&Event::LeaseTaken, &policy, now, Some(&fp), 0.0) {
                    steps.push((key.clone(), step, Some(fp.clone())));
                }
                let class = rec.health.class().unwrap_or(Class::AuthPermanent);
                due.push((key, model, class, recheck));
            }
            for (key, model, class, recheck) in due {
                let kind = match class {
                    Class::AuthPermanent | Class::AuthTransient => ProbeKind::KeyValidity,
                    _ => ProbeKind::MinimalRequest,
                };
                out.push(ProbeRequest {
                    scope: key,
                    credential: id.clone(),
                    endpoint: inner
                        .endpoints
                        .get(ep_id as usize)
                        .map(|e| e.id.clone())
                        .unwrap_or_else(|| Arc::from("?")),
                    model,
                    class,
                    kind,
                    recheck,
                    incident: false,
                });
            }
        }
        let mut pending = finish_steps(&mut inner, incident_steps, now, Actor::Incident);
        pending.extend(finish_steps(&mut inner, steps, now, Actor::Probe));
        drop(inner);
        for t in pending {
            drop(self.shared.sink.enqueue(t));
        }
        out
    }

    /// Records a probe's outcome. Returns the acknowledgement of the resulting transition:
    /// a disable is on disk when it completes. During a provider incident, a confirmation
    /// of an auth failure counts as inconclusive.
    pub fn record_probe(&self, probe: &ProbeRequest, outcome: ProbeOutcome) -> Ack {
        let now = self.shared.clock.now();
        let mut inner = self.shared.lock();
        let policy = inner.policy.clone();
        let Some(&c) = inner.by_id.get(&probe.credential) else {
            return Ack::done();
        };
        let ep = inner.creds[c as usize].endpoint;
        // A probe that answered is a success on its endpoint: it ends an incident there.
        if outcome == ProbeOutcome::Refuted {
            note_endpoint_success(&mut inner, ep, now, || {
                format!("a probe of `{}` succeeded", probe.credential)
            });
        }
        let in_incident = endpoint_in_incident(&inner, ep);
        let outcome = match outcome {
            ProbeOutcome::Confirmed { .. }
                if in_incident
                    && matches!(probe.class, Class::AuthPermanent | Class::AuthTransient) =>
            {
                ProbeOutcome::Inconclusive {
                    why: "provider-wide auth incident on this endpoint in progress".into(),
                }
            }
            o => o,
        };
        let fp = inner.creds[c as usize].spec.fingerprint.clone();
        let slot = &mut inner.creds[c as usize];
        let incident_disable = slot.incident_disabled;
        let rec = match &probe.scope {
            ScopeKey::Credential(_) => Some(&mut slot.rec),
            ScopeKey::CredentialModel(_, m) => slot
                .models
                .iter_mut()
                .find(|(mm, _)| mm == m)
                .map(|(_, r)| r),
            _ => None,
        };
        let Some(rec) = rec else {
            return Ack::done();
        };
        let recheck_of_incident_disable = incident_disable
            && matches!(probe.scope, ScopeKey::Credential(_))
            && matches!(rec.health, Health::Disabled { .. });
        let Some(step) = rec.apply(&Event::Probe(outcome), &policy, now, Some(&fp), 0.0) else {
            return Ack::done();
        };
        // An incident's disable is re-checked on its own, faster curve.
        if recheck_of_incident_disable {
            if let Health::Disabled {
                recheck_at: Some(at),
                by_operator: false,
                ..
            } = &mut rec.health
            {
                let faster = policy
                    .incident_recheck
                    .saturating_mul(1u32 << rec.rechecks.min(16))
                    .min(policy.auth_recheck_max);
                *at = now.plus(faster);
            }
        }
        let to = rec.health.clone();
        let slot = &mut inner.creds[c as usize];
        if matches!(probe.scope, ScopeKey::Credential(_)) {
            slot.incident_disabled =
                recheck_of_incident_disable && matches!(to, Health::Disabled { .. });
        }
        let incident_disabled = slot.incident_disabled;
        if let (
            Health::Disabled {
                class: Class::AuthPermanent,
                ..
            },
            ScopeKey::Credential(id),
            false,
        ) = (&to, &probe.scope, incident_disabled)
        {
            inner.denylist.insert(
                fp.clone(),
                (id.clone(), "revoked (confirmed by probe)".into()),
            );
        }
        let pending = finish_steps(
            &mut inner,
            vec![(probe.scope.clone(), step, Some(fp))],
            now,
            Actor::Probe,
        );
        drop(inner);
        let mut last = Ack::done();
        for t in pending {
            last = self.shared.sink.enqueue(t);
        }
        last
    }

    /// An operator puts a credential (all its scopes) back in rotation.
    pub fn reset(&self, credential: &str) -> Option<Ack> {
        self.operator(credential, &Event::Reset, Actor::Operator)
    }

    /// The token endpoint rejected `credential`'s OAuth grant for good: it leaves rotation
    /// with `evidence` (which says to log in again) until a new grant is imported.
    pub fn revoke_grant(&self, credential: &str, evidence: &str) -> Option<Ack> {
        self.operator(credential, &Event::GrantRevoked { evidence }, Actor::Probe)
    }

    /// An operator takes a credential out of rotation.
    pub fn disable(&self, credential: &str, reason: &str) -> Option<Ack> {
        self.operator(credential, &Event::Disable { reason }, Actor::Operator)
    }

    fn operator(&self, credential: &str, event: &Event<'_>, actor: Actor) -> Option<Ack> {
        let now = self.shared.clock.now();
        let mut inner = self.shared.lock();
        let policy = inner.policy.clone();
        let c = *inner.by_id.get(credential)?;
        let fp = inner.creds[c as usize].spec.fingerprint.clone();
        let id = inner.creds[c as usize].spec.id.clone();
        let mut steps = Vec::new();
        let slot = &mut inner.creds[c as usize];
        if let Some(step) = slot.rec.apply(event, &policy, now, Some(&fp), 0.0) {
            steps.push((ScopeKey::Credential(id.clone()), step, Some(fp.clone())));
        }
        if matches!(event, Event::Reset) {
            for (m, r) in slot.models.iter_mut() {
                if let Some(step) = r.apply(event, &policy, now, Some(&fp), 0.0) {
                    steps.push((
                        ScopeKey::CredentialModel(id.clone(), m.clone()),
                        step,
                        Some(fp.clone()),
                    ));
                }
            }
            inner.denylist.remove(&fp);
        }
        let pending = finish_steps(&mut inner, steps, now, actor);
        drop(inner);
        let mut last = Ack::done();
        for t in pending {
            last = self.shared.sink.enqueue(t);
        }
        Some(last)
    }

    /// Applies a state another replica stored (fleet mode): `key` takes `health` as of
    /// `since`, without going back to the sink (it is stored already). A scope this engine
    /// does not know yet is kept detached until its owner is configured. A confirmed
    /// revocation adds the secret's fingerprint to the denylist; an operator's reset
    /// (`health` healthy with `clears_denylist`) removes it. Returns whether anything changed.
    pub fn apply_remote(
        &self,
        key: &ScopeKey,
        health: Health,
        since: Timestamp,
        clears_denylist: bool,
    ) -> bool {
        let mut inner = self.shared.lock();
        if let (
            ScopeKey::Credential(id),
            Health::Disabled {
                class: Class::AuthPermanent,
                fingerprint: Some(fp),
                by_operator: false,
                ..
            },
        ) = (key, &health)
        {
            inner.denylist.insert(
                Arc::from(fp.as_str()),
                (
                    id.clone(),
                    "revoked (confirmed by another replica's probe)".into(),
                ),
            );
        }
        if clears_denylist && health == Health::Healthy {
            if let ScopeKey::Credential(id) = key {
                inner.denylist.retain(|_, (c, _)| c != id);
            }
        }
        let Some(rec) = remote_record(&mut inner, key) else {
            let changed = inner
                .detached
                .get(key)
                .is_none_or(|(r, _)| r.health != health);
            inner
                .detached
                .insert(key.clone(), (Record::new(health, since), None));
            return changed;
        };
        if rec.health == health {
            return false;
        }
        let last_success = rec.last_success;
        *rec = Record::new(health, since);
        rec.last_success = last_success;
        true
    }

    /// Every scope that is not healthy, and every credential, for status views.
    pub fn snapshot(&self) -> Vec<(ScopeKey, Health, Timestamp)> {
        let inner = self.shared.lock();
        let mut out = Vec::new();
        for c in &inner.creds {
            out.push((
                ScopeKey::Credential(c.spec.id.clone()),
                c.rec.health.clone(),
                c.rec.since,
            ));
            for (m, r) in &c.models {
                out.push((
                    ScopeKey::CredentialModel(c.spec.id.clone(), m.clone()),
                    r.health.clone(),
                    r.since,
                ));
            }
        }
        for b in &inner.buckets {
            if b.rec.health != Health::Healthy {
                out.push((
                    ScopeKey::QuotaBucket(b.id.clone()),
                    b.rec.health.clone(),
                    b.rec.since,
                ));
            }
        }
        for e in &inner.endpoints {
            if e.rec.health != Health::Healthy {
                out.push((
                    ScopeKey::Endpoint(e.id.clone()),
                    e.rec.health.clone(),
                    e.rec.since,
                ));
            }
            for (m, r) in &e.models {
                out.push((
                    ScopeKey::ProviderModel(e.id.clone(), m.clone()),
                    r.health.clone(),
                    r.since,
                ));
            }
        }
        out
    }

    /// The health of one scope.
    pub fn health(&self, key: &ScopeKey) -> Option<Health> {
        self.snapshot()
            .into_iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, h, _)| h)
    }

    /// Whether a provider-wide auth incident is active on `endpoint`.
    pub fn incident_active(&self, endpoint: &str) -> bool {
        self.shared
            .lock()
            .incidents
            .get(endpoint)
            .is_some_and(|i| i.active.is_some())
    }

    /// The active provider-wide auth incidents, for status views.
    pub fn incidents(&self) -> Vec<IncidentInfo> {
        let inner = self.shared.lock();
        let policy = &inner.policy;
        let mut out: Vec<IncidentInfo> = inner
            .incidents
            .iter()
            .filter_map(|(ep, i)| Some(incident_info(ep, i.active.as_ref()?, policy)))
            .collect();
        out.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        out
    }

    /// Incidents started, ended or expired since the last call (for logs and metrics).
    pub fn take_incident_events(&self) -> Vec<IncidentEvent> {
        std::mem::take(&mut self.shared.lock().incident_events)
    }

    /// An auth rejection that is not (yet) a verdict on the credential — an OAuth access
    /// token rejected before its refresh — still counts towards provider-incident
    /// detection. Returns whether the provider is in an incident (then a refresh is
    /// pointless: fail over instead).
    pub fn note_auth_rejection(&self, credential: &str) -> bool {
        let now = self.shared.clock.now();
        let mut inner = self.shared.lock();
        let Some(&c) = inner.by_id.get(credential) else {
            return false;
        };
        note_auth_failure(&mut inner, c, now)
    }

    /// When a credential last answered a request successfully (since this process
    /// started).
    pub fn last_success(&self, credential: &str) -> Option<Timestamp> {
        let inner = self.shared.lock();
        inner
            .by_id
            .get(credential)
            .and_then(|&c| inner.creds[c as usize].rec.last_success)
    }

    /// The fingerprint a credential is configured with.
    pub fn fingerprint(&self, credential: &str) -> Option<String> {
        let inner = self.shared.lock();
        inner
            .by_id
            .get(credential)
            .map(|&c| inner.creds[c as usize].spec.fingerprint.to_string())
    }

    /// In-flight attempts on a credential.
    pub fn inflight(&self, credential: &str) -> u32 {
        let inner = self.shared.lock();
        inner
            .by_id
            .get(credential)
            .map_or(0, |&c| inner.creds[c as usize].inflight)
    }
}

enum Block {
    Waiting(Timestamp),
    Disabled(DisabledInfo),
    /// Disabled, without the details (asked for with `explain: false`: building them
    /// allocates, and a selection that finds candidates throws them away).
    DisabledUnexplained,
    NotServed,
}

/// Whether candidate `c` at endpoint `ep` for `model` may take traffic now.
fn usable(
    inner: &Inner,
    c: u32,
    ep: u32,
    model: &str,
    req: &RequestSpec,
    now: Timestamp,
) -> Result<(), Block> {
    usable_given(inner, c, ep, model, req, now, false, false)
}

/// Whether the endpoint-wide scopes of `ep` (the endpoint, the provider×model) admit
/// traffic for `model` now: checked once per target, not once per credential.
fn endpoint_admits(inner: &Inner, ep: u32, model: &str, now: Timestamp) -> bool {
    let endpoint = &inner.endpoints[ep as usize];
    endpoint.rec.admits(now)
        && endpoint
            .models
            .iter()
            .find(|(m, _)| &**m == model)
            .is_none_or(|(_, r)| r.admits(now))
}

/// [`usable`]; `endpoint_ok`: the endpoint-wide scopes are known to admit traffic (skip
/// them); `explain`: a disabled candidate's details are wanted.
#[allow(clippy::too_many_arguments)]
fn usable_given(
    inner: &Inner,
    c: u32,
    ep: u32,
    model: &str,
    req: &RequestSpec,
    now: Timestamp,
    endpoint_ok: bool,
    explain: bool,
) -> Result<(), Block> {
    let Some(slot) = inner.creds.get(c as usize) else {
        return Err(Block::NotServed);
    };
    if slot.endpoint != ep {
        return Err(Block::NotServed);
    }
    if let Some(models) = &slot.spec.models {
        if !models.iter().any(|m| &**m == model) {
            return Err(Block::NotServed);
        }
    }
    if let Some(b) = &req.bucket {
        if slot.spec.bucket.as_ref() != Some(b) {
            return Err(Block::NotServed);
        }
    }
    // The common case, cheaply: every scope the credential touches is healthy.
    let healthy = |r: &Record| matches!(r.health, Health::Healthy);
    if endpoint_ok
        && healthy(&slot.rec)
        && slot.models.iter().all(|(_, r)| healthy(r))
        && slot.bucket.is_none_or(|b| {
            inner
                .buckets
                .get(b as usize)
                .is_none_or(|b| healthy(&b.rec))
        })
    {
        return Ok(());
    }
    let endpoint = &inner.endpoints[ep as usize];
    let records: [(Option<&Record>, &dyn Fn() -> String); 5] = [
        (Some(&slot.rec), &|| format!("credential/{}", slot.spec.id)),
        (
            slot.models
                .iter()
                .find(|(m, _)| &**m == model)
                .map(|(_, r)| r),
            &|| format!("credential_model/{}/{model}", slot.spec.id),
        ),
        (
            slot.bucket
                .and_then(|b| inner.buckets.get(b as usize))
                .map(|b| &b.rec),
            &|| {
                format!(
                    "quota_bucket/{}",
                    slot.spec.bucket.as_deref().unwrap_or("?")
                )
            },
        ),
        (Some(&endpoint.rec).filter(|_| !endpoint_ok), &|| {
            format!("endpoint/{}", endpoint.id)
        }),
        (
            endpoint
                .models
                .iter()
                .find(|(m, _)| &**m == model && !endpoint_ok)
                .map(|(_, r)| r),
            &|| format!("provider_model/{}/{model}", endpoint.id),
        ),
    ];
    let mut waiting: Option<Timestamp> = None;
    for (rec, name) in records {
        let Some(rec) = rec else { continue };
        if rec.admits(now) {
            continue;
        }
        match &rec.health {
            Health::Disabled { .. } if !explain => return Err(Block::DisabledUnexplained),
            Health::Disabled {
                class,
                since,
                evidence,
                ..
            } => {
                return Err(Block::Disabled(DisabledInfo {
                    credential: slot.spec.id.clone(),
                    scope: name(),
                    class: *class,
                    since: *since,
                    evidence: evidence.clone(),
                }));
            }
            h => {
                let at = h.recovers_at().unwrap_or(now);
                waiting = Some(waiting.map_or(at, |w| w.max(at)));
            }
        }
    }
    match waiting {
        Some(at) => Err(Block::Waiting(at)),
        None => Ok(()),
    }
}

/// Why candidate `c` at endpoint `ep` cannot take traffic for `model`: the state of the
/// scope that keeps it out longest (a disable over any wait), with its evidence, its next
/// check, and whether the verdict is permanent. `None` if it could take traffic.
fn candidate_state(
    inner: &Inner,
    c: u32,
    ep: u32,
    model: &str,
    now: Timestamp,
) -> Option<CandidateState> {
    let slot = inner.creds.get(c as usize)?;
    let endpoint = inner.endpoints.get(ep as usize)?;
    let incident = endpoint_in_incident(inner, ep);
    let id = &slot.spec.id;
    let records: [(Option<&Record>, String); 5] = [
        (Some(&slot.rec), format!("credential/{id}")),
        (
            slot.models
                .iter()
                .find(|(m, _)| &**m == model)
                .map(|(_, r)| r),
            format!("credential_model/{id}/{model}"),
        ),
        (
            slot.bucket
                .and_then(|b| inner.buckets.get(b as usize))
                .map(|b| &b.rec),
            format!(
                "quota_bucket/{}",
                slot.spec.bucket.as_deref().unwrap_or("?")
            ),
        ),
        (Some(&endpoint.rec), format!("endpoint/{}", endpoint.id)),
        (
            endpoint
                .models
                .iter()
                .find(|(m, _)| &**m == model)
                .map(|(_, r)| r),
            format!("provider_model/{}/{model}", endpoint.id),
        ),
    ];
    let mut worst: Option<CandidateState> = None;
    for (rec, scope) in records {
        let Some(rec) = rec else { continue };
        if rec.admits(now) {
            continue;
        }
        let credential_scope = scope.starts_with("credential");
        let (since, evidence, next_check, permanent, in_incident) = match &rec.health {
            Health::Healthy => continue,
            Health::Cooling { until, .. } => (rec.since, String::new(), Some(*until), false, false),
            Health::Suspect {
                class,
                since,
                evidence,
                probe_at,
            }
            | Health::Probing {
                class,
                since,
                evidence,
                lease_until: probe_at,
                ..
            } => {
                let auth = matches!(class, Class::AuthPermanent | Class::AuthTransient);
                let in_incident = incident && auth && credential_scope;
                let confident = credential_scope
                    && slot.last_failure == Some((*class, Confidence::High))
                    && matches!(
                        class,
                        Class::AuthPermanent | Class::Billing | Class::ModelNotFound
                    );
                let next = if in_incident {
                    inner
                        .incidents
                        .get(&endpoint.id)
                        .and_then(|i| i.active.as_ref())
                        .map_or(*probe_at, |a| a.next_probe)
                } else {
                    *probe_at
                };
                (
                    *since,
                    evidence.clone(),
                    Some(next),
                    confident && !in_incident,
                    in_incident,
                )
            }
            Health::Disabled {
                since,
                evidence,
                recheck_at,
                ..
            } => (*since, evidence.clone(), *recheck_at, true, false),
        };
        let state = CandidateState {
            credential: id.clone(),
            scope,
            state: rec.health.name(),
            class: rec.health.class(),
            since,
            evidence,
            next_check,
            permanent,
            incident: in_incident,
        };
        // A disable outranks any wait; among waits, the one that ends last.
        let replace = match &worst {
            None => true,
            Some(w) => match (w.state == "disabled", state.state == "disabled") {
                (false, true) => true,
                (true, _) => false,
                (false, false) => state.next_check > w.next_check,
            },
        };
        if replace {
            worst = Some(state);
        }
    }
    worst
}

type ScopeRef<'a> = (ScopeKey, &'a mut Record, Option<Arc<str>>);

/// Every existing record an attempt touches (creating none).
fn scopes_of<'a>(inner: &'a mut Inner, c: u32, ep: u32, model: &str) -> Vec<ScopeRef<'a>> {
    let mut out = Vec::with_capacity(5);
    let Inner {
        creds,
        buckets,
        endpoints,
        ..
    } = inner;
    let Some(slot) = creds.get_mut(c as usize) else {
        return out;
    };
    let fp = Some(slot.spec.fingerprint.clone());
    let id = slot.spec.id.clone();
    let bucket = slot.bucket;
    out.push((ScopeKey::Credential(id.clone()), &mut slot.rec, fp.clone()));
    if let Some((m, r)) = slot.models.iter_mut().find(|(m, _)| &**m == model) {
        out.push((ScopeKey::CredentialModel(id, m.clone()), r, fp));
    }
    if let Some(b) = bucket.and_then(|b| buckets.get_mut(b as usize)) {
        out.push((ScopeKey::QuotaBucket(b.id.clone()), &mut b.rec, None));
    }
    if let Some(e) = endpoints.get_mut(ep as usize) {
        let eid = e.id.clone();
        out.push((ScopeKey::Endpoint(eid.clone()), &mut e.rec, None));
        if let Some((m, r)) = e.models.iter_mut().find(|(m, _)| &**m == model) {
            out.push((ScopeKey::ProviderModel(eid, m.clone()), r, None));
        }
    }
    out
}

/// The record a failure's scope points at, created on demand.
fn scope_record<'a>(
    inner: &'a mut Inner,
    c: u32,
    ep: u32,
    model: &str,
    scope: Scope,
) -> Option<ScopeRef<'a>> {
    let Inner {
        creds,
        buckets,
        endpoints,
        ..
    } = inner;
    let slot = creds.get_mut(c as usize)?;
    let fp = Some(slot.spec.fingerprint.clone());
    let id = slot.spec.id.clone();
    match scope {
        Scope::Request => None,
        Scope::Credential => Some((ScopeKey::Credential(id), &mut slot.rec, fp)),
        Scope::QuotaBucket => match slot.bucket.and_then(|b| buckets.get_mut(b as usize)) {
            Some(b) => Some((ScopeKey::QuotaBucket(b.id.clone()), &mut b.rec, None)),
            // No bucket declared: the credential is its own bucket.
            None => Some((ScopeKey::Credential(id), &mut slot.rec, fp)),
        },
        Scope::CredentialModel => {
            let i = match slot.models.iter().position(|(m, _)| &**m == model) {
                Some(i) => i,
                None => {
                    slot.models.push((Arc::from(model), Record::default()));
                    slot.models.len() - 1
                }
            };
            let (m, r) = &mut slot.models[i];
            Some((ScopeKey::CredentialModel(id, m.clone()), r, fp))
        }
        Scope::Endpoint => {
            let e = endpoints.get_mut(ep as usize)?;
            Some((ScopeKey::Endpoint(e.id.clone()), &mut e.rec, None))
        }
        Scope::ProviderModel => {
            let e = endpoints.get_mut(ep as usize)?;
            let i = match e.models.iter().position(|(m, _)| &**m == model) {
                Some(i) => i,
                None => {
                    e.models.push((Arc::from(model), Record::default()));
                    e.models.len() - 1
                }
            };
            let eid = e.id.clone();
            let (m, r) = &mut e.models[i];
            Some((ScopeKey::ProviderModel(eid, m.clone()), r, None))
        }
    }
}

/// Turns steps into numbered transitions (to enqueue in this order, under the lock's
/// ordering), and drops healthy per-model records that are no longer needed.
/// Hands every trial lease the attempt on (credential, endpoint, model) holds back, except
/// on `except`: the scope goes back to a due cooldown, so the next request takes the
/// trial. Returns the transitions (each change is logged).
fn hand_back_trials(
    inner: &mut Inner,
    (cred, endpoint, model): (u32, u32, &str),
    except: Option<&ScopeKey>,
    now: Timestamp,
    why: &str,
) -> Vec<Transition> {
    let mut steps = Vec::new();
    for (key, rec, fp) in scopes_of(inner, cred, endpoint, model) {
        if except == Some(&key) {
            continue;
        }
        if let Health::Probing {
            class, trial: true, ..
        } = rec.health
        {
            let before = rec.health.clone();
            rec.health = Health::Cooling {
                until: rec.since,
                class,
            };
            steps.push((
                key,
                Step {
                    from: Some(before),
                    why: why.to_owned(),
                    wants_probe: false,
                },
                fp,
            ));
        }
    }
    finish_steps(inner, steps, now, Actor::Traffic)
}

fn finish_steps(
    inner: &mut Inner,
    steps: Vec<(ScopeKey, Step, Option<Arc<str>>)>,
    now: Timestamp,
    actor: Actor,
) -> Vec<Transition> {
    let mut out = Vec::with_capacity(steps.len());
    for (scope, step, fingerprint) in steps {
        let to = current_health(inner, &scope).unwrap_or(Health::Healthy);
        inner.seq += 1;
        let durable = matches!(to, Health::Disabled { .. }) || actor == Actor::Operator;
        out.push(Transition {
            seq: inner.seq,
            at: now,
            scope,
            from: step.from.unwrap_or(Health::Healthy),
            to,
            why: step.why,
            actor,
            fingerprint,
            durable,
        });
    }
    out
}

/// The record of `key` among the configured scopes (a per-model record is created on
/// demand), or `None` when no configured credential or endpoint owns it.
fn remote_record<'a>(inner: &'a mut Inner, key: &ScopeKey) -> Option<&'a mut Record> {
    fn model_rec<'b>(models: &'b mut Vec<(Arc<str>, Record)>, m: &Arc<str>) -> &'b mut Record {
        let i = match models.iter().position(|(mm, _)| mm == m) {
            Some(i) => i,
            None => {
                models.push((m.clone(), Record::default()));
                models.len() - 1
            }
        };
        &mut models[i].1
    }
    match key {
        ScopeKey::Credential(id) => {
            let c = *inner.by_id.get(id)?;
            Some(&mut inner.creds[c as usize].rec)
        }
        ScopeKey::CredentialModel(id, m) => {
            let c = *inner.by_id.get(id)?;
            Some(model_rec(&mut inner.creds[c as usize].models, m))
        }
        ScopeKey::QuotaBucket(b) => {
            let i = *inner.by_bucket.get(b)?;
            Some(&mut inner.buckets[i as usize].rec)
        }
        ScopeKey::Endpoint(e) => {
            let i = *inner.by_endpoint.get(e)?;
            Some(&mut inner.endpoints[i as usize].rec)
        }
        ScopeKey::ProviderModel(e, m) => {
            let i = *inner.by_endpoint.get(e)?;
            Some(model_rec(&mut inner.endpoints[i as usize].models, m))
        }
    }
}

fn current_health(inner: &Inner, key: &ScopeKey) -> Option<Health> {
    match key {
        ScopeKey::Credential(id) => inner
            .by_id
            .get(id)
            .map(|&c| inner.creds[c as usize].rec.health.clone()),
        ScopeKey::CredentialModel(id, m) => {
            let c = *inner.by_id.get(id)?;
            inner.creds[c as usize]
                .models
                .iter()
                .find(|(mm, _)| mm == m)
                .map(|(_, r)| r.health.clone())
        }
        ScopeKey::QuotaBucket(b) => inner
            .by_bucket
            .get(b)
            .map(|&i| inner.buckets[i as usize].rec.health.clone()),
        ScopeKey::Endpoint(e) => inner
            .by_endpoint
            .get(e)
            .map(|&i| inner.endpoints[i as usize].rec.health.clone()),
        ScopeKey::ProviderModel(e, m) => {
            let i = *inner.by_endpoint.get(e)?;
            inner.endpoints[i as usize]
                .models
                .iter()
                .find(|(mm, _)| mm == m)
                .map(|(_, r)| r.health.clone())
        }
    }
}

/// Notes an auth failure of credential `c` on its endpoint. Returns whether the endpoint
/// is (now) in a provider-wide auth incident: `incident_credentials` distinct credentials
/// of the endpoint failed auth within `incident_window`, and none of the endpoint's
/// credentials answered since the first of those failures. A sibling that answers is proof
/// that the provider's auth works: its failing siblings are revocations, each confirmed
/// by its own probe, however many fail at once.
fn note_auth_failure(inner: &mut Inner, c: u32, now: Timestamp) -> bool {
    let Some(slot) = inner.creds.get(c as usize) else {
        return false;
    };
    let id = slot.spec.id.clone();
    let Some(endpoint) = inner.endpoints.get(slot.endpoint as usize) else {
        return false;
    };
    let ep_id = endpoint.id.clone();
    inner.endpoints[slot.endpoint as usize].auth_failures = true;
    let policy = &inner.policy;
    let window_start = Timestamp(
        now.0
            .saturating_sub(u64::try_from(policy.incident_window.as_millis()).unwrap_or(u64::MAX)),
    );
    let threshold = policy.incident_credentials.max(1) as usize;
    let (cooldown, max) = (policy.incident_cooldown, policy.incident_max);
    let incident = inner.incidents.entry(ep_id.clone()).or_default();
    while incident
        .recent
        .front()
        .is_some_and(|(t, _)| *t < window_start)
    {
        incident.recent.pop_front();
    }
    incident.recent.push_back((now, id.clone()));
    if incident.recent.len() > 1024 {
        incident.recent.pop_front();
    }
    if let Some(active) = &mut incident.active {
        if !active.credentials.contains(&id) {
            active.credentials.push(id);
        }
        return true;
    }
    let mut distinct: Vec<Arc<str>> = incident.recent.iter().map(|(_, c)| c.clone()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < threshold {
        return false;
    }
    let active = ActiveIncident {
        since: now,
        credentials: distinct,
        next_probe: now.plus(cooldown),
        turn: 0,
    };
    let info = IncidentInfo {
        endpoint: ep_id,
        since: now,
        credentials: active.credentials.clone(),
        next_probe: active.next_probe,
        disables_at: now.plus(max),
    };
    incident.active = Some(active);
    inner.incident_marked = true;
    inner.incident_events.push(IncidentEvent::Started(info));
    true
}

/// A credential of endpoint `ep` answered (traffic or a probe): auth works there, so an
/// incident on it ends.
fn note_endpoint_success(inner: &mut Inner, ep: u32, now: Timestamp, why: impl FnOnce() -> String) {
    let Some(e) = inner.endpoints.get_mut(ep as usize) else {
        return;
    };
    e.last_success = Some(now);
    if !e.auth_failures {
        return;
    }
    e.auth_failures = false;
    let ep_id = e.id.clone();
    let Some(incident) = inner.incidents.get_mut(&ep_id) else {
        return;
    };
    incident.recent.clear();
    if let Some(active) = incident.active.take() {
        inner.incident_events.push(IncidentEvent::Ended {
            endpoint: ep_id,
            since: active.since,
            why: why(),
        });
    }
    inner.incident_marked = inner.incidents.values().any(|i| i.active.is_some());
}

/// Whether endpoint slot `ep` is in an auth incident.
fn endpoint_in_incident(inner: &Inner, ep: u32) -> bool {
    inner.incident_marked
        && inner
            .endpoints
            .get(ep as usize)
            .and_then(|e| inner.incidents.get(&e.id))
            .is_some_and(|i| i.active.is_some())
}

fn incident_info(endpoint: &Arc<str>, a: &ActiveIncident, policy: &Policy) -> IncidentInfo {
    IncidentInfo {
        endpoint: endpoint.clone(),
        since: a.since,
        credentials: a.credentials.clone(),
        next_probe: a.next_probe,
        disables_at: a.since.plus(policy.incident_max),
    }
}

/// One round of every active incident: an incident past `incident_max` disables the
/// auth suspects of its endpoint (every key was rejected all along: revoked at once);
/// otherwise, when its next probe is due, one of its suspects is leased and probed (the
/// request goes to `out`). Returns the steps taken.
fn incident_round(
    inner: &mut Inner,
    now: Timestamp,
    out: &mut Vec<ProbeRequest>,
) -> Vec<(ScopeKey, Step, Option<Arc<str>>)> {
    let mut steps = Vec::new();
    if !inner.incident_marked {
        return steps;
    }
    let policy = inner.policy.clone();
    let active: Vec<Arc<str>> = inner
        .incidents
        .iter()
        .filter(|(_, i)| i.active.is_some())
        .map(|(ep, _)| ep.clone())
        .collect();
    for ep_id in active {
        let Some(&ep) = inner.by_endpoint.get(&ep_id) else {
            // Its endpoint left the configuration.
            if let Some(i) = inner.incidents.get_mut(&ep_id) {
                i.active = None;
            }
            continue;
        };
        let Some(incident) = inner.incidents.get_mut(&ep_id) else {
            continue;
        };
        let Some(active) = incident.active.as_mut() else {
            continue;
        };
        let is_auth_suspect = |h: &Health| {
            matches!(h, Health::Suspect { class, .. } | Health::Probing { class, trial: false, .. }
                if matches!(class, Class::AuthPermanent | Class::AuthTransient))
        };
        if now.since(active.since) >= policy.incident_max {
            let since = active.since;
            incident.active = None;
            incident.recent.clear();
            let lasted =
                humantime::format_duration(Duration::from_secs(now.since(since).as_secs()));
            let mut disabled = Vec::new();
            let of_endpoint = inner.creds.iter().filter(|s| s.endpoint == ep).count();
            for slot in inner.creds.iter_mut().filter(|s| s.endpoint == ep) {
                if !is_auth_suspect(&slot.rec.health) {
                    continue;
                }
                let (class, evidence) = match &slot.rec.health {
                    Health::Suspect {
                        class, evidence, ..
                    }
                    | Health::Probing {
                        class, evidence, ..
                    } => (*class, evidence.clone()),
                    _ => continue,
                };
                let class = if class == Class::AuthTransient {
                    Class::AuthPermanent
                } else {
                    class
                };
                let from = std::mem::replace(
                    &mut slot.rec.health,
                    Health::Disabled {
                        class,
                        since: now,
                        evidence: format!(
                            "{evidence}; every key of endpoint `{ep_id}` ({of_endpoint}) was rejected for {lasted}: revoked at once, or a provider auth outage — replace the keys if they were revoked; otherwise they come back at their re-check"
                        ),
                        fingerprint: Some(slot.spec.fingerprint.to_string()),
                        recheck_at: Some(now.plus(policy.incident_recheck)),
                        by_operator: false,
                    },
                );
                slot.rec.since = now;
                slot.rec.rechecks = 0;
                slot.rec.recheck_lease = None;
                slot.incident_disabled = true;
                disabled.push(slot.spec.id.clone());
                steps.push((
                    ScopeKey::Credential(slot.spec.id.clone()),
                    Step {
                        from: Some(from),
                        why: format!(
                            "auth incident on `{ep_id}` outlasted {}: every key rejected, disabled",
                            humantime::format_duration(policy.incident_max)
                        ),
                        wants_probe: false,
                    },
                    Some(slot.spec.fingerprint.clone()),
                ));
            }
            inner.incident_events.push(IncidentEvent::Expired {
                endpoint: ep_id.clone(),
                since,
                disabled,
            });
            continue;
        }
        if now < active.next_probe {
            continue;
        }
        active.next_probe = now.plus(policy.incident_cooldown);
        let candidates = active.credentials.clone();
        let turn = active.turn;
        active.turn = active.turn.wrapping_add(1);
        // The next of its credentials that is still a suspect (not already probing).
        let n = candidates.len();
        let pick = (0..n)
            .map(|k| &candidates[(turn + k) % n])
            .filter_map(|id| inner.by_id.get(id).copied())
            .find(|&c| {
                inner.creds[c as usize].endpoint == ep
                    && matches!(&inner.creds[c as usize].rec.health, Health::Suspect { class, .. }
                        if matches!(class, Class::AuthPermanent | Class::AuthTransient))
            });
        let Some(c) = pick else {
            continue;
        };
        let slot = &mut inner.creds[c as usize];
        let Health::Suspect {
            class,
            since,
            evidence,
            ..
        } = slot.rec.health.clone()
        else {
            continue;
        };
        let from = std::mem::replace(
            &mut slot.rec.health,
            Health::Probing {
                class,
                since,
                evidence,
                lease_until: now.plus(policy.probe_lease),
                trial: false,
            },
        );
        steps.push((
            ScopeKey::Credential(slot.spec.id.clone()),
            Step {
                from: Some(from),
                why: format!("auth incident on `{ep_id}`: probing one of its keys"),
                wants_probe: false,
            },
            Some(slot.spec.fingerprint.clone()),
        ));
        out.push(ProbeRequest {
            scope: ScopeKey::Credential(slot.spec.id.clone()),
            credential: slot.spec.id.clone(),
            endpoint: ep_id.clone(),
            model: None,
            class,
            kind: ProbeKind::KeyValidity,
            recheck: false,
            incident: true,
        });
    }
    inner.incident_marked = inner.incidents.values().any(|i| i.active.is_some());
    steps
}

/// Rebuilds the slots for `creds`, carrying health over by id and fingerprint.
fn reconfigure(inner: &mut Inner, creds: Vec<CredentialSpec>, now: Timestamp) -> Vec<Transition> {
    inner.generation = inner.generation.wrapping_add(1);
    // Detach everything the old slots held.
    for slot in inner.creds.drain(..) {
        inner.detached.insert(
            ScopeKey::Credential(slot.spec.id.clone()),
            (slot.rec, Some(now)),
        );
        for (m, r) in slot.models {
            inner.detached.insert(
                ScopeKey::CredentialModel(slot.spec.id.clone(), m),
                (r, Some(now)),
            );
        }
        inner
            .fingerprints
            .insert(slot.spec.id.clone(), slot.spec.fingerprint.clone());
    }
    let mut last_successes: HashMap<Arc<str>, Timestamp> = HashMap::new();
    for e in inner.endpoints.drain(..) {
        if let Some(t) = e.last_success {
            last_successes.insert(e.id.clone(), t);
        }
        inner
            .detached
            .insert(ScopeKey::Endpoint(e.id.clone()), (e.rec, Some(now)));
        for (m, r) in e.models {
            inner
                .detached
                .insert(ScopeKey::ProviderModel(e.id.clone(), m), (r, Some(now)));
        }
    }
    for b in inner.buckets.drain(..) {
        inner
            .detached
            .insert(ScopeKey::QuotaBucket(b.id.clone()), (b.rec, Some(now)));
    }
    inner.by_id.clear();
    inner.by_endpoint.clear();
    inner.by_bucket.clear();
    let policy = inner.policy.clone();
    let mut steps = Vec::new();
    for spec in creds {
        let ep = *inner
            .by_endpoint
            .entry(spec.endpoint.clone())
            .or_insert_with(|| {
                inner.endpoints.push(EndpointSlot {
                    id: spec.endpoint.clone(),
                    rec: Record::default(),
                    models: Vec::new(),
                    last_success: last_successes.get(&spec.endpoint).copied(),
                    auth_failures: true,
                });
                (inner.endpoints.len() - 1) as u32
            });
        let bucket = spec.bucket.clone().map(|b| {
            *inner.by_bucket.entry(b.clone()).or_insert_with(|| {
                inner.buckets.push(BucketSlot {
                    id: b,
                    rec: Record::default(),
                });
                (inner.buckets.len() - 1) as u32
            })
        });
        let key = ScopeKey::Credential(spec.id.clone());
        let new_secret = inner
            .fingerprints
            .get(&spec.id)
            .is_some_and(|old| *old != spec.fingerprint);
        inner
            .fingerprints
            .insert(spec.id.clone(), spec.fingerprint.clone());
        let mut rec = inner
            .detached
            .remove(&key)
            .map(|(r, _)| r)
            .unwrap_or_default();
        let mut models = Vec::new();
        let model_keys: Vec<ScopeKey> = inner
            .detached
            .keys()
            .filter(|k| matches!(k, ScopeKey::CredentialModel(id, _) if *id == spec.id))
            .cloned()
            .collect();
        for k in model_keys {
            if let (ScopeKey::CredentialModel(_, m), Some((r, _))) = (&k, inner.detached.remove(&k))
            {
                models.push((m.clone(), r));
            }
        }
        // A restored disable names its fingerprint; a different secret starts healthy.
        let restored_other_secret = matches!(&rec.health, Health::Disabled { fingerprint: Some(fp), .. } if **fp != *spec.fingerprint);
        if new_secret || restored_other_secret {
            if let Some(step) = rec.apply(
                &Event::NewSecret {
                    fingerprint: &spec.fingerprint,
                },
                &policy,
                now,
                Some(&spec.fingerprint),
                0.0,
            ) {
                steps.push((key.clone(), step, Some(spec.fingerprint.clone())));
            }
            for (m, r) in models.iter_mut() {
                if let Some(step) = r.apply(
                    &Event::NewSecret {
                        fingerprint: &spec.fingerprint,
                    },
                    &policy,
                    now,
                    Some(&spec.fingerprint),
                    0.0,
                ) {
                    steps.push((
                        ScopeKey::CredentialModel(spec.id.clone(), m.clone()),
                        step,
                        Some(spec.fingerprint.clone()),
                    ));
                }
            }
        }
        // A revoked secret that comes back stays out.
        if let Some((old_id, reason)) = inner.denylist.get(&spec.fingerprint).cloned() {
            if !matches!(rec.health, Health::Disabled { .. }) {
                let from = std::mem::replace(
                    &mut rec.health,
                    Health::Disabled {
                        class: Class::AuthPermanent,
                        since: now,
                        evidence: format!("this secret was {reason} as `{old_id}`"),
                        fingerprint: Some(spec.fingerprint.to_string()),
                        recheck_at: Some(now.plus(policy.auth_recheck_min)),
                        by_operator: false,
                    },
                );
                rec.since = now;
                steps.push((
                    key.clone(),
                    Step {
                        from: Some(from),
                        why: "a revoked secret was configured again".into(),
                        wants_probe: false,
                    },
                    Some(spec.fingerprint.clone()),
                ));
            }
        }
        inner
            .by_id
            .insert(spec.id.clone(), inner.creds.len() as u32);
        let id_hash = id_hash(&spec.id);
        inner.creds.push(CredSlot {
            spec,
            endpoint: ep,
            bucket,
            rec,
            models,
            inflight: 0,
            headroom: None,
            id_hash,
            last_failure: None,
            incident_disabled: false,
        });
    }
    // Endpoint, provider-model and bucket records come back by id.
    for i in 0..inner.endpoints.len() {
        let id = inner.endpoints[i].id.clone();
        if let Some((r, _)) = inner.detached.remove(&ScopeKey::Endpoint(id.clone())) {
            inner.endpoints[i].rec = r;
        }
        let keys: Vec<ScopeKey> = inner
            .detached
            .keys()
            .filter(|k| matches!(k, ScopeKey::ProviderModel(e, _) if *e == id))
            .cloned()
            .collect();
        for k in keys {
            if let (ScopeKey::ProviderModel(_, m), Some((r, _))) = (&k, inner.detached.remove(&k)) {
                inner.endpoints[i].models.push((m.clone(), r));
            }
        }
    }
    for i in 0..inner.buckets.len() {
        let id = inner.buckets[i].id.clone();
        if let Some((r, _)) = inner.detached.remove(&ScopeKey::QuotaBucket(id)) {
            inner.buckets[i].rec = r;
        }
    }
    // Forget what has been detached for longer than the retention period.
    let retention = inner.retention;
    inner
        .detached
        .retain(|_, (_, removed)| removed.is_none_or(|at| now.since(at) < retention));
    finish_steps(inner, steps, now, Actor::Config)
}

fn evidence_text(f: &Failure) -> String {
    let status = f
        .evidence
        .status
        .map(|s| format!("{s} "))
        .unwrap_or_default();
    format!("{status}{}={}", f.evidence.kind.as_str(), f.evidence.value)
}

fn next_roll(inner: &mut Inner) -> f64 {
    // xorshift64*: jitter only, not security.
    let mut x = inner.rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    inner.rng = x;
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

/// The rank of a credential (by its id's hash) for a session: SplitMix64's finaliser over
/// both, a few multiplications per candidate.
fn rendezvous(session: u64, id_hash: u64) -> u64 {
    let mut z = session ^ id_hash.rotate_left(29);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}
