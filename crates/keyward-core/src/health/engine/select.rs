//! Selection and admission: which candidates a request may try, in which order, and — when
//! none — every candidate's state and evidence for the caller. [`HealthEngine::admit`] is the
//! atomic step that re-checks a candidate under the lock that records verdicts.

#[allow(clippy::wildcard_imports)]
use super::*;

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

impl HealthEngine {
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
        let limit = req.limit.unwrap_or(usize::MAX);
        for ((ti, target), ts) in route.targets.iter().enumerate().zip(&slots.targets) {
            if out.len() >= limit {
                break;
            }
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
                let verdict = if endpoint_ok && plainly_usable(&inner, c, ep, req) {
                    Ok(())
                } else {
                    usable_given(&inner, c, ep, &target.model, req, now, endpoint_ok, explain)
                };
                match verdict {
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
            if let (Some(session), true) = (req.session, req.sticky) {
                let last = inner
                    .affinity
                    .get(&session)
                    .filter(|(generation, _)| *generation == inner.generation)
                    .map(|&(_, c)| c);
                let pick = match last.and_then(|l| eligible.iter().position(|(c, _, _)| *c == l)) {
                    Some(i) => Some(i),
                    None => eligible
                        .iter()
                        .enumerate()
                        .max_by_key(|(_, (c, _, _))| {
                            rendezvous(session, inner.creds[*c as usize].id_hash)
                        })
                        .map(|(i, _)| i),
                };
                if let Some(i) = pick {
                    eligible[i].2 &= !(1u64 << 62);
                }
            }
            // Requests almost always succeed on their first candidate and never try more
            // than `max_attempts`: order the best few exactly, leave the rest unsorted (or
            // out, past the request's limit).
            const ORDERED: usize = 16;
            let wanted = limit - out.len();
            if eligible.len() > wanted {
                eligible.select_nth_unstable_by_key(wanted, |&(_, _, k)| k);
                eligible.truncate(wanted);
            }
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
            explain_unavailable(&inner, route, &slots, req, now, &mut unavailable);
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
            session: req.session,
            trial,
            done: false,
        })
    }
}

pub(super) enum Block {
    Waiting(Timestamp),
    Disabled(DisabledInfo),
    /// Disabled, without the details (asked for with `explain: false`: building them
    /// allocates, and a selection that finds candidates throws them away).
    DisabledUnexplained,
    NotServed,
}

/// Whether candidate `c` at endpoint `ep` for `model` may take traffic now.
pub(super) fn usable(
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
pub(super) fn endpoint_admits(inner: &Inner, ep: u32, model: &str, now: Timestamp) -> bool {
    let endpoint = &inner.endpoints[ep as usize];
    endpoint.rec.admits(now)
        && endpoint
            .models
            .iter()
            .find(|(m, _)| &**m == model)
            .is_none_or(|(_, r)| r.admits(now))
}

/// The common case of [`usable_given`] in a few loads, inlined into selection's loop over
/// every credential of a route: a credential with no model list and every scope it touches
/// healthy (the endpoint's scopes already known to admit traffic). `false` means "look
/// closer", not "unusable".
#[inline(always)]
fn plainly_usable(inner: &Inner, c: u32, ep: u32, req: &RequestSpec) -> bool {
    let Some(slot) = inner.creds.get(c as usize) else {
        return false;
    };
    slot.endpoint == ep
        && slot.spec.models.is_none()
        && req.bucket.is_none()
        && slot.bucket.is_none()
        && matches!(slot.rec.health, Health::Healthy)
        && slot
            .models
            .iter()
            .all(|(_, r)| matches!(r.health, Health::Healthy))
}

/// [`usable`]; `endpoint_ok`: the endpoint-wide scopes are known to admit traffic (skip
/// them); `explain`: a disabled candidate's details are wanted.
#[allow(clippy::too_many_arguments)]
pub(super) fn usable_given(
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
    // A disabled credential, its details not wanted: the first record below would say so.
    if !explain && matches!(slot.rec.health, Health::Disabled { .. }) {
        return Err(Block::DisabledUnexplained);
    }
    let endpoint = &inner.endpoints[ep as usize];
    let mut records = records_of(inner, slot, endpoint, model);
    if endpoint_ok {
        // Checked once for the whole target.
        records[3].0 = None;
        records[4].0 = None;
    }
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
                    scope: name.to_string(),
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
pub(super) fn candidate_state(
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
    let records = records_of(inner, slot, endpoint, model);
    let mut worst: Option<CandidateState> = None;
    for (rec, scope) in records {
        let Some(rec) = rec else { continue };
        if rec.admits(now) {
            continue;
        }
        let credential_scope = scope.is_credential();
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
            scope: scope.to_string(),
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

/// The rank of a credential (by its id's hash) for a session: SplitMix64's finaliser over
/// both, a few multiplications per candidate.
pub(super) fn rendezvous(session: u64, id_hash: u64) -> u64 {
    let mut z = session ^ id_hash.rotate_left(29);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// Every candidate of `route` (resolved to `slots`) with the state that keeps it out and
/// its evidence, and the incidents of their endpoints: what the caller is told when
/// nothing is usable.
fn explain_unavailable(
    inner: &Inner,
    route: &RouteSpec,
    slots: &spec::RouteSlots,
    req: &RequestSpec,
    now: Timestamp,
    unavailable: &mut Unavailable,
) {
    for (target, ts) in route.targets.iter().zip(&slots.targets) {
        let Some(ep) = ts.endpoint else {
            continue;
        };
        for &(_, c) in &ts.creds {
            if usable(inner, c, ep, &target.model, req, now)
                .is_err_and(|b| matches!(b, Block::NotServed))
            {
                continue;
            }
            if let Some(state) = candidate_state(inner, c, ep, &target.model, now) {
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
}

/// The scope of one record a candidate touches, named only when a name is needed.
#[derive(Debug, Clone, Copy)]
pub(super) enum ScopeName<'a> {
    Credential(&'a str),
    CredentialModel(&'a str, &'a str),
    Bucket(&'a str),
    Endpoint(&'a str),
    ProviderModel(&'a str, &'a str),
}

impl ScopeName<'_> {
    /// The credential's own scopes (the credential, credential×model).
    fn is_credential(self) -> bool {
        matches!(
            self,
            ScopeName::Credential(_) | ScopeName::CredentialModel(..)
        )
    }
}

impl fmt::Display for ScopeName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeName::Credential(id) => write!(f, "credential/{id}"),
            ScopeName::CredentialModel(id, m) => write!(f, "credential_model/{id}/{m}"),
            ScopeName::Bucket(b) => write!(f, "quota_bucket/{b}"),
            ScopeName::Endpoint(e) => write!(f, "endpoint/{e}"),
            ScopeName::ProviderModel(e, m) => write!(f, "provider_model/{e}/{m}"),
        }
    }
}

/// Every record candidate `slot` on `endpoint` touches for `model`, with its scope: the
/// credential, credential×model, its quota bucket, the endpoint, provider×model (`None`
/// where no record exists). The one list that admission and the caller's error read.
fn records_of<'a>(
    inner: &'a Inner,
    slot: &'a CredSlot,
    endpoint: &'a EndpointSlot,
    model: &'a str,
) -> [(Option<&'a Record>, ScopeName<'a>); 5] {
    let id = &*slot.spec.id;
    let of_model = |models: &'a [(Arc<str>, Record)]| {
        models.iter().find(|(m, _)| &**m == model).map(|(_, r)| r)
    };
    [
        (Some(&slot.rec), ScopeName::Credential(id)),
        (
            of_model(&slot.models),
            ScopeName::CredentialModel(id, model),
        ),
        (
            slot.bucket
                .and_then(|b| inner.buckets.get(b as usize))
                .map(|b| &b.rec),
            ScopeName::Bucket(slot.spec.bucket.as_deref().unwrap_or("?")),
        ),
        (Some(&endpoint.rec), ScopeName::Endpoint(&endpoint.id)),
        (
            of_model(&endpoint.models),
            ScopeName::ProviderModel(&endpoint.id, model),
        ),
    ]
}
