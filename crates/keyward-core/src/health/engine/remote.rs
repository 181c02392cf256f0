//! State from outside this process: the state file at start ([`HealthEngine::restore`]) and
//! other replicas' transitions in fleet mode ([`HealthEngine::apply_remote`]).

#[allow(clippy::wildcard_imports)]
use super::*;

impl HealthEngine {
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

    /// Releases every trial and probe lease in the restored state: called once at start
    /// when the state file was this gateway's alone, so every lease in it belonged to the
    /// process that stopped (a SIGKILL mid-trial leaves one). A trial goes back to a due
    /// cooldown (the next request takes it), a probe back to due (the prober runs it now);
    /// otherwise the scope would stay out of rotation for the rest of a lease nobody
    /// holds (`probe_lease`, 30 s by default). Each change is a logged transition. Not in
    /// fleet mode: there another replica may hold the lease, and a lapse frees it.
    pub fn release_stale_leases(&self) {
        let now = self.shared.clock.now();
        let mut inner = self.shared.lock();
        let mut steps: Vec<(ScopeKey, Step, Option<Arc<str>>)> = Vec::new();
        let mut release = |key: ScopeKey, rec: &mut Record, fp: Option<Arc<str>>| {
            let Health::Probing {
                class,
                since,
                evidence,
                trial,
                ..
            } = rec.health.clone()
            else {
                return;
            };
            let before = rec.health.clone();
            rec.health = if trial {
                Health::Cooling { until: now, class }
            } else {
                Health::Suspect {
                    class,
                    since,
                    evidence,
                    probe_at: now,
                }
            };
            let why = if trial {
                "restarted: the trial's request ended with the previous process; the next request takes it"
            } else {
                "restarted: the probe ended with the previous process; probing again"
            };
            steps.push((
                key,
                Step {
                    from: Some(before),
                    why: why.to_owned(),
                    wants_probe: !trial,
                },
                fp,
            ));
        };
        let Inner {
            creds,
            buckets,
            endpoints,
            ..
        } = &mut *inner;
        for c in creds.iter_mut() {
            let fp = Some(c.spec.fingerprint.clone());
            release(
                ScopeKey::Credential(c.spec.id.clone()),
                &mut c.rec,
                fp.clone(),
            );
            for (m, r) in &mut c.models {
                let key = ScopeKey::CredentialModel(c.spec.id.clone(), m.clone());
                release(key, r, fp.clone());
            }
        }
        for b in buckets.iter_mut() {
            release(ScopeKey::QuotaBucket(b.id.clone()), &mut b.rec, None);
        }
        for e in endpoints.iter_mut() {
            release(ScopeKey::Endpoint(e.id.clone()), &mut e.rec, None);
            for (m, r) in &mut e.models {
                release(ScopeKey::ProviderModel(e.id.clone(), m.clone()), r, None);
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
}

/// The record of `key` among the configured scopes (a per-model record is created on
/// demand), or `None` when no configured credential or endpoint owns it.
pub(super) fn remote_record<'a>(inner: &'a mut Inner, key: &ScopeKey) -> Option<&'a mut Record> {
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
