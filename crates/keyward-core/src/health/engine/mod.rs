//! The health engine: every scope's [`Record`], fed by verdicts, successes and probe
//! outcomes, and the one place that decides which credentials a request may use.
//!
//! A revoked key, end to end — the request path selects, admits, records; the prober asks
//! for due probes and records their outcomes:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use keyward_core::classify::{classify, Attempt, Provider};
//! use keyward_core::health::{
//!     CredentialSpec, Health, HealthEngine, ManualClock, NullSink, Policy, ProbeOutcome,
//!     RequestSpec, RouteSpec, ScopeKey, Selection, TargetSpec, Timestamp,
//! };
//!
//! let clock = ManualClock::at(Timestamp(1_750_000_000_000));
//! let engine = HealthEngine::new(Policy::default(), Arc::new(clock.clone()), Arc::new(NullSink), 1);
//! let key = |id: &str| CredentialSpec {
//!     id: id.into(), provider: Provider::Anthropic, endpoint: "anthropic".into(),
//!     bucket: None, fingerprint: format!("fp-{id}").into(), priority: 0, models: None,
//! };
//! engine.configure(vec![key("team-1"), key("team-2")]);
//! let route = RouteSpec::new(vec![TargetSpec {
//!     endpoint: "anthropic".into(), model: "claude-x".into(),
//!     credentials: vec!["team-1".into(), "team-2".into()],
//! }]);
//! let req = RequestSpec::default();
//!
//! // A request: candidates in order; the first is admitted and fails with a revoked key.
//! let Selection::Candidates(c) = engine.select(&route, &req) else { unreachable!() };
//! let attempt = engine.admit(&route, &c[0], &req).unwrap();
//! let revoked = attempt.credential();
//! let body = br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
//! engine.record_failure(attempt, &classify(&Attempt::response(Provider::Anthropic, 401, body)));
//!
//! // It is out of rotation at once (suspect): the next request only sees its sibling.
//! let Selection::Candidates(c) = engine.select(&route, &req) else { unreachable!() };
//! assert_eq!(c.len(), 1);
//!
//! // After `auth_confirm_delay` its one probe is due; confirmed, the key is disabled.
//! clock.advance(Duration::from_secs(15));
//! let probes = engine.due_probes();
//! assert_eq!(probes.len(), 1);
//! engine.record_probe(&probes[0], ProbeOutcome::Confirmed { evidence: "401 again".into() });
//! let health = engine.health(&ScopeKey::Credential(revoked)).unwrap();
//! assert!(matches!(health, Health::Disabled { .. }));
//! ```
//!
//! Where each decision lives: `spec` (inputs: credentials, routes, requests);
//! `select` (selection, admission, the caller's view of unusable candidates); `record`
//! (failures and successes); `incident` (provider-wide auth incidents per endpoint);
//! `probes` (confirmation probes, re-checks, incident probes); `reconfigure` (reloads);
//! `remote` (the state file at start, fleet replicas); `sink` (transitions to the store).
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
use super::policy::{Effect, Policy};
use super::scope::ScopeKey;
use super::state::{Actor, Event, Health, ProbeOutcome, Record, Step, Strikers};
use crate::classify::{Class, Confidence, Failure, Provider, Scope};

mod incident;
mod probes;
mod reconfigure;
mod record;
mod remote;
mod select;
mod sink;
mod spec;

pub use incident::{IncidentEvent, IncidentInfo};
pub use probes::{ProbeKind, ProbeRequest};
pub use select::{CandidateState, DisabledInfo, Selection, Skipped, Unavailable};
pub use sink::{Ack, NullSink, SinkError, Transition, TransitionSink};
pub use spec::{Candidate, CredentialSpec, Headroom, RequestSpec, RouteSpec, TargetSpec};
#[allow(clippy::wildcard_imports)]
use {incident::*, reconfigure::*, record::*, select::*};

#[derive(Debug)]
struct CredSlot {
    spec: CredentialSpec,
    endpoint: u32,
    bucket: Option<u32>,
    rec: Record,
    models: Vec<(Arc<str>, Record)>,
    inflight: u32,
    headroom: Option<Headroom>,
    /// A hash of the id, for session affinity (rendezvous).
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
    /// An incident probe sent at `.0` is out until `.1` (its lease).
    probe_out: Option<(Timestamp, Timestamp)>,
    /// Past `incident_max`: every suspect gets its own probe (`swept`), and each one still
    /// rejected is disabled (`disabled`).
    expiring: bool,
    swept: Vec<Arc<str>>,
    disabled: Vec<Arc<str>>,
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
    /// The credential (configuration generation, slot) that last served each session;
    /// bounded by [`MAX_SESSIONS`].
    affinity: FxHashMap<u64, (u64, u32)>,
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

/// Sessions remembered for affinity (a few hundred kilobytes at most).
const MAX_SESSIONS: usize = 16_384;

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
    /// The request's session, recorded with the credential on success.
    session: Option<u64>,
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
                    affinity: FxHashMap::default(),
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
        let mut pending = finish_steps(&mut inner, steps, now, actor);
        if matches!(event, Event::Reset) {
            for t in &mut pending {
                if matches!(t.scope, ScopeKey::Credential(_)) {
                    t.deny = Some(false);
                }
            }
        }
        drop(inner);
        let mut last = Ack::done();
        for t in pending {
            last = self.shared.sink.enqueue(t);
        }
        Some(last)
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
