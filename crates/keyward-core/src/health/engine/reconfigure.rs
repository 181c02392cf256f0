//! Loading and reloading credentials: slots rebuilt, health carried over by id and
//! fingerprint, revoked secrets kept out, removed credentials' records retained.

#[allow(clippy::wildcard_imports)]
use super::*;

impl HealthEngine {
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
}

/// Rebuilds the slots for `creds`, carrying health over by id and fingerprint.
pub(super) fn reconfigure(
    inner: &mut Inner,
    creds: Vec<CredentialSpec>,
    now: Timestamp,
) -> Vec<Transition> {
    let carried = detach_all(inner, now);
    let mut steps = Vec::new();
    for spec in creds {
        attach(inner, spec, &carried, now, &mut steps);
    }
    reattach_shared(inner, now);
    finish_steps(inner, steps, now, Actor::Config)
}

/// What a reload carries over besides the records: each endpoint's last success, and each
/// credential's in-flight attempts (they finish on the new slot) and, for the same secret,
/// what its last failures taught.
#[derive(Default)]
struct Carried {
    last_successes: HashMap<Arc<str>, Timestamp>,
    creds: HashMap<Arc<str>, CredCarry>,
}

struct CredCarry {
    fingerprint: Arc<str>,
    inflight: u32,
    headroom: Option<Headroom>,
    last_failure: Option<(Class, Confidence)>,
    incident_disabled: bool,
}

/// Moves every slot's records to the detached map (by scope key) and forgets the slots;
/// returns what else carries over.
fn detach_all(inner: &mut Inner, now: Timestamp) -> Carried {
    inner.generation = inner.generation.wrapping_add(1);
    let mut carried = Carried::default();
    // Detach everything the old slots held.
    for slot in inner.creds.drain(..) {
        carried.creds.insert(
            slot.spec.id.clone(),
            CredCarry {
                fingerprint: slot.spec.fingerprint.clone(),
                inflight: slot.inflight,
                headroom: slot.headroom,
                last_failure: slot.last_failure,
                incident_disabled: slot.incident_disabled,
            },
        );
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
    for e in inner.endpoints.drain(..) {
        if let Some(t) = e.last_success {
            carried.last_successes.insert(e.id.clone(), t);
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
    carried
}

/// Configures one credential: its endpoint and bucket slots (created on first use), its
/// records taken back from the detached map, a new secret starting healthy, a revoked
/// secret kept out.
fn attach(
    inner: &mut Inner,
    spec: CredentialSpec,
    carried: &Carried,
    now: Timestamp,
    steps: &mut Vec<(ScopeKey, Step, Option<Arc<str>>)>,
) {
    let policy = inner.policy.clone();
    let ep = *inner
        .by_endpoint
        .entry(spec.endpoint.clone())
        .or_insert_with(|| {
            inner.endpoints.push(EndpointSlot {
                id: spec.endpoint.clone(),
                rec: Record::default(),
                models: Vec::new(),
                last_success: carried.last_successes.get(&spec.endpoint).copied(),
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
        if let (ScopeKey::CredentialModel(_, m), Some((r, _))) = (&k, inner.detached.remove(&k)) {
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
    let mut slot = CredSlot {
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
    };
    if let Some(c) = carried.creds.get(&slot.spec.id) {
        slot.inflight = c.inflight;
        if c.fingerprint == slot.spec.fingerprint {
            slot.headroom = c.headroom;
            slot.last_failure = c.last_failure;
            slot.incident_disabled = c.incident_disabled;
        }
    }
    inner.creds.push(slot);
}

/// Endpoint, provider-model and bucket records come back by id; what stayed detached
/// longer than the retention period is forgotten.
fn reattach_shared(inner: &mut Inner, now: Timestamp) {
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
}
