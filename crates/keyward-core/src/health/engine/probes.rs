//! Confirmation probes, background re-checks and incident probes: which are due (each taking
//! its scope's lease) and what their outcomes do.

#[allow(clippy::wildcard_imports)]
use super::*;

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

impl HealthEngine {
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
        if probe.incident {
            note_incident_probe(&mut inner, ep, &outcome, now);
        }
        // A probe that answered is a success on its endpoint: it ends an incident there.
        if outcome == ProbeOutcome::Refuted {
            note_endpoint_success(&mut inner, ep, now, || {
                format!("a probe of `{}` succeeded", probe.credential)
            });
        }
        let in_incident = endpoint_in_incident(&inner, ep);
        // Past `incident_max` the incident's sweep probes decide, key by key.
        let swept = probe.incident && incident_expiring(&inner, ep);
        let outcome = match outcome {
            ProbeOutcome::Confirmed { .. }
                if in_incident
                    && !swept
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
        let disabled_now = matches!(rec.health, Health::Disabled { .. });
        let slot = &mut inner.creds[c as usize];
        if matches!(probe.scope, ScopeKey::Credential(_)) {
            slot.incident_disabled = recheck_of_incident_disable && disabled_now;
            if swept && disabled_now {
                disable_swept(&mut inner, c, now);
            }
            if swept {
                finish_sweep(&mut inner, ep);
            }
        }
        let to = inner.creds[c as usize].rec.health.clone();
        let slot = &mut inner.creds[c as usize];
        let incident_disabled = slot.incident_disabled;
        // A confirmed revocation's secret is remembered (it stays out if it comes back);
        // a re-check that finds it working forgets it.
        let mut deny = None;
        if let ScopeKey::Credential(id) = &probe.scope {
            match (&to, incident_disabled) {
                (
                    Health::Disabled {
                        class: Class::AuthPermanent,
                        ..
                    },
                    false,
                ) => {
                    inner.denylist.insert(
                        fp.clone(),
                        (id.clone(), "revoked (confirmed by probe)".into()),
                    );
                    deny = Some(true);
                }
                (Health::Healthy, _) if inner.denylist.remove(&fp).is_some() => {
                    deny = Some(false);
                }
                _ => {}
            }
        }
        let mut pending = finish_steps(
            &mut inner,
            vec![(probe.scope.clone(), step, Some(fp))],
            now,
            Actor::Probe,
        );
        for t in &mut pending {
            t.deny = deny;
        }
        drop(inner);
        let mut last = Ack::done();
        for t in pending {
            last = self.shared.sink.enqueue(t);
        }
        last
    }
}
