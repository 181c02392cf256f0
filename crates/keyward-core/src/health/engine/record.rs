//! Recording what happened to an admitted attempt: a classified failure or a success, applied
//! to the scope the policy and the classifier chose.

#[allow(clippy::wildcard_imports)]
use super::*;

impl HealthEngine {
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
        let scope = if class_policy.effect == Effect::Cool {
            shared_or_own(
                &mut inner,
                (cred, endpoint, &attempt.model),
                scope,
                class_policy.threshold,
            )
        } else {
            scope
        };
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
        if let Some(session) = attempt.session {
            if inner.affinity.len() >= MAX_SESSIONS {
                // Bounded memory: forget every session at once (each then starts over on
                // its rendezvous credential).
                inner.affinity.clear();
            }
            let generation = inner.generation;
            inner.affinity.insert(session, (generation, cred));
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
}

pub(super) type ScopeRef<'a> = (ScopeKey, &'a mut Record, Option<Arc<str>>);

/// Every existing record an attempt touches (creating none).
pub(super) fn scopes_of<'a>(
    inner: &'a mut Inner,
    c: u32,
    ep: u32,
    model: &str,
) -> Vec<ScopeRef<'a>> {
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

/// The scope a cooling failure strikes: whether a failure of a shared scope's class (a
/// server error, an overload, a timeout on the endpoint or the provider×model) speaks for
/// the provider or only for the key it came from.
///
/// A shared scope counts consecutive failures of every credential (any success resets the
/// count) and remembers whose they were. When the failure that would trip it comes from
/// the one credential every strike came from, while the endpoint has other credentials,
/// that credential cools for the model instead, on the shared scope's curve: one key
/// answering 500 (and the policy's retry of the same key) no longer cools every sibling
/// (a soak answered 1.8 % of its requests 503 with five healthy keys). The shared count
/// keeps the strike, so a different credential failing next, with no success between,
/// trips the shared scope as before: a provider-wide failure costs no more attempts. Each
/// key also counts its own consecutive failures (reset only by its own success): when they
/// reach the threshold while the shared run does not — its siblings' successes keep
/// resetting that — the key cools for the model. A failed trial of that credential's own
/// cooldown cools it again at once, longer each time, until it answers. An endpoint with
/// one credential is its provider: unchanged.
fn shared_or_own(
    inner: &mut Inner,
    (cred, endpoint, model): (u32, u32, &str),
    scope: Scope,
    threshold: u32,
) -> Scope {
    if !matches!(scope, Scope::Endpoint | Scope::ProviderModel) {
        return scope;
    }
    let Some(id) = inner.creds.get(cred as usize).map(|c| c.spec.id.clone()) else {
        return scope;
    };
    let siblings = inner
        .creds
        .iter()
        .enumerate()
        .any(|(i, c)| c.endpoint == endpoint && i != cred as usize);
    if !siblings {
        return scope;
    }
    let (own_trial, own_strikes) = inner
        .creds
        .get(cred as usize)
        .and_then(|c| c.models.iter().find(|(m, _)| &**m == model))
        .map_or((false, 0), |(_, r)| {
            (
                matches!(r.health, Health::Probing { trial: true, .. }),
                r.strikes,
            )
        });
    let Some((_, shared, _)) = scope_record(inner, cred, endpoint, model, scope) else {
        return scope;
    };
    // The shared scope already cooling (or on its trial): its own machine decides.
    if shared.health != Health::Healthy {
        return scope;
    }
    if shared.strikes == 0 {
        shared.strikers = Strikers::None;
    }
    shared.strikers.add(&id);
    let alone = shared.strikers == Strikers::One(id);
    let shared_trips = shared.strikes.saturating_add(1) >= threshold;
    let own_run = own_strikes.saturating_add(1) >= threshold;
    let own = (alone && (own_trial || shared_trips)) || (own_run && !shared_trips);
    if own {
        // The shared count keeps the strike: another key failing next trips it.
        shared.strikes = shared.strikes.saturating_add(1);
    }
    let Some((_, rec, _)) = scope_record(inner, cred, endpoint, model, Scope::CredentialModel)
    else {
        return scope;
    };
    if !own {
        // Counted on the key too (its own run resets only on its own success).
        rec.strikes = rec.strikes.saturating_add(1);
        return scope;
    }
    // The credential's own record trips now, and further along its curve each time.
    rec.strikes = rec.strikes.max(threshold.saturating_sub(1));
    Scope::CredentialModel
}

/// The record a failure's scope points at, created on demand.
pub(super) fn scope_record<'a>(
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
pub(super) fn hand_back_trials(
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

pub(super) fn finish_steps(
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
            deny: None,
        });
    }
    out
}

pub(super) fn current_health(inner: &Inner, key: &ScopeKey) -> Option<Health> {
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

pub(super) fn evidence_text(f: &Failure) -> String {
    let status = f
        .evidence
        .status
        .map(|s| format!("{s} "))
        .unwrap_or_default();
    format!("{status}{}={}", f.evidence.kind.as_str(), f.evidence.value)
}

pub(super) fn next_roll(inner: &mut Inner) -> f64 {
    // xorshift64*: jitter only, not security.
    let mut x = inner.rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    inner.rng = x;
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}
