//! Provider-wide auth incidents, per endpoint: declared from evidence (several credentials
//! rejected, none of the endpoint's answering since), ended by any success, bounded by
//! `incident_max` (then its credentials are disabled as revoked at once).

#[allow(clippy::wildcard_imports)]
use super::*;

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
    /// Past `disables_at`: each of its credentials is being probed once more, and those
    /// still rejected are disabled.
    pub expiring: bool,
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

impl HealthEngine {
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
}

/// Notes an auth failure of credential `c` on its endpoint. Returns whether the endpoint
/// is (now) in a provider-wide auth incident: `incident_credentials` distinct credentials
/// of the endpoint failed auth within `incident_window`, and none of the endpoint's
/// credentials answered since the first of those failures. A sibling that answers is proof
/// that the provider's auth works: its failing siblings are revocations, each confirmed
/// by its own probe, however many fail at once.
pub(super) fn note_auth_failure(inner: &mut Inner, c: u32, now: Timestamp) -> bool {
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
        probe_out: None,
        expiring: false,
        swept: Vec::new(),
        disabled: Vec::new(),
    };
    let info = IncidentInfo {
        endpoint: ep_id,
        since: now,
        credentials: active.credentials.clone(),
        next_probe: active.next_probe,
        disables_at: now.plus(max),
        expiring: false,
    };
    incident.active = Some(active);
    inner.incident_marked = true;
    inner.incident_events.push(IncidentEvent::Started(info));
    true
}

/// A credential of endpoint `ep` answered (traffic or a probe): auth works there, so an
/// incident on it ends.
pub(super) fn note_endpoint_success(
    inner: &mut Inner,
    ep: u32,
    now: Timestamp,
    why: impl FnOnce() -> String,
) {
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
pub(super) fn endpoint_in_incident(inner: &Inner, ep: u32) -> bool {
    inner.incident_marked
        && inner
            .endpoints
            .get(ep as usize)
            .and_then(|e| inner.incidents.get(&e.id))
            .is_some_and(|i| i.active.is_some())
}

pub(super) fn incident_info(
    endpoint: &Arc<str>,
    a: &ActiveIncident,
    policy: &Policy,
) -> IncidentInfo {
    IncidentInfo {
        endpoint: endpoint.clone(),
        since: a.since,
        credentials: a.credentials.clone(),
        next_probe: a.next_probe,
        disables_at: a.since.plus(policy.incident_max),
        expiring: a.expiring,
    }
}

type StepOf = (ScopeKey, Step, Option<Arc<str>>);
type Steps = Vec<StepOf>;

/// One round of every active incident: an incident past `incident_max` disables the
/// auth suspects of its endpoint (every key was rejected all along: revoked at once);
/// otherwise, when its next probe is due, one of its suspects is leased and probed (the
/// request goes to `out`). Returns the steps taken.
pub(super) fn incident_round(
    inner: &mut Inner,
    now: Timestamp,
    out: &mut Vec<ProbeRequest>,
) -> Steps {
    let mut steps = Vec::new();
    if !inner.incident_marked {
        return steps;
    }
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
        let max = inner.policy.incident_max;
        let Some(active) = inner
            .incidents
            .get_mut(&ep_id)
            .and_then(|i| i.active.as_mut())
        else {
            continue;
        };
        if active.probe_out.is_some_and(|(_, until)| until > now) {
            // Its probe is out: its answer decides.
            continue;
        }
        if now.since(active.since) >= max {
            // Past the bound, every suspect gets its own probe: each one still rejected
            // is disabled as revoked at once, and any answer ends the incident (the
            // others then get their usual confirmation).
            active.expiring = true;
        }
        if active.expiring {
            steps.extend(sweep(inner, &ep_id, ep, now, out));
            continue;
        }
        if let Some((step, probe)) = incident_probe(inner, &ep_id, ep, now) {
            steps.push(step);
            out.push(probe);
        }
    }
    inner.incident_marked = inner.incidents.values().any(|i| i.active.is_some());
    steps
}

fn is_auth_suspect(h: &Health) -> bool {
    matches!(h, Health::Suspect { class, .. } | Health::Probing { class, trial: false, .. }
        if matches!(class, Class::AuthPermanent | Class::AuthTransient))
}

/// The incident on `ep_id` outlasted `incident_max`: every auth suspect of the endpoint
/// not yet probed since is leased and probed (the requests go to `out`); a suspect whose
/// sweep probe was inconclusive is probed again when its own retry is due. When none is
/// left, the incident is over.
fn sweep(
    inner: &mut Inner,
    ep_id: &Arc<str>,
    ep: u32,
    now: Timestamp,
    out: &mut Vec<ProbeRequest>,
) -> Steps {
    let mut steps = Vec::new();
    let Inner {
        incidents,
        creds,
        policy,
        incident_events,
        ..
    } = inner;
    let Some(incident) = incidents.get_mut(ep_id) else {
        return steps;
    };
    let Some(active) = incident.active.as_mut() else {
        return steps;
    };
    let mut unresolved = false;
    for slot in creds.iter_mut().filter(|s| s.endpoint == ep) {
        if !is_auth_suspect(&slot.rec.health) {
            continue;
        }
        unresolved = true;
        let Health::Suspect {
            class,
            since,
            evidence,
            probe_at,
        } = slot.rec.health.clone()
        else {
            continue; // its probe is out
        };
        let first = !active.swept.contains(&slot.spec.id);
        if !first && probe_at > now {
            continue;
        }
        if first {
            active.swept.push(slot.spec.id.clone());
        }
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
                why: format!(
                    "auth incident on `{ep_id}` outlasted {}: probing each of its keys",
                    humantime::format_duration(policy.incident_max)
                ),
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
    if !unresolved {
        if let Some(active) = incident.active.take() {
            incident.recent.clear();
            incident_events.push(IncidentEvent::Expired {
                endpoint: ep_id.clone(),
                since: active.since,
                disabled: active.disabled,
            });
        }
    }
    steps
}

/// After a sweep probe's answer: when no auth suspect of endpoint slot `ep` is left, the
/// expired incident is over.
pub(super) fn finish_sweep(inner: &mut Inner, ep: u32) {
    let unresolved = inner
        .creds
        .iter()
        .any(|s| s.endpoint == ep && is_auth_suspect(&s.rec.health));
    let Some(e) = inner.endpoints.get(ep as usize) else {
        return;
    };
    let Some(incident) = inner.incidents.get_mut(&e.id) else {
        return;
    };
    if unresolved || !incident.active.as_ref().is_some_and(|a| a.expiring) {
        return;
    }
    if let Some(active) = incident.active.take() {
        incident.recent.clear();
        inner.incident_events.push(IncidentEvent::Expired {
            endpoint: e.id.clone(),
            since: active.since,
            disabled: active.disabled,
        });
    }
    inner.incident_marked = inner.incidents.values().any(|i| i.active.is_some());
}

/// Whether endpoint slot `ep` is in an incident past `incident_max` (its sweep).
pub(super) fn incident_expiring(inner: &Inner, ep: u32) -> bool {
    inner
        .endpoints
        .get(ep as usize)
        .and_then(|e| inner.incidents.get(&e.id))
        .and_then(|i| i.active.as_ref())
        .is_some_and(|a| a.expiring)
}

/// A sweep probe confirmed credential slot `c` still rejected past `incident_max`: its
/// disable is an incident's (the faster `incident_recheck` curve, no denylist), with the
/// "every key was rejected" remedy.
pub(super) fn disable_swept(inner: &mut Inner, c: u32, now: Timestamp) {
    let Inner {
        incidents,
        creds,
        endpoints,
        policy,
        ..
    } = inner;
    let Some(slot) = creds.get_mut(c as usize) else {
        return;
    };
    let Some(e) = endpoints.get(slot.endpoint as usize) else {
        return;
    };
    let Some(active) = incidents.get_mut(&e.id).and_then(|i| i.active.as_mut()) else {
        return;
    };
    let of_endpoint = active.credentials.len();
    let lasted = humantime::format_duration(Duration::from_secs(now.since(active.since).as_secs()));
    if let Health::Disabled {
        evidence,
        recheck_at,
        ..
    } = &mut slot.rec.health
    {
        evidence.push_str(&format!(
            "; every key of endpoint `{}` ({of_endpoint} rejected at once) was still rejected after {lasted}: revoked at once, or a provider auth outage — replace the keys if they were revoked; otherwise they come back at their re-check",
            e.id
        ));
        *recheck_at = Some(now.plus(policy.incident_recheck));
        slot.rec.rechecks = 0;
        slot.incident_disabled = true;
        active.disabled.push(slot.spec.id.clone());
    }
}

/// When the incident on `ep_id` is due for its probe: the next of its credentials that is
/// still a suspect (not already probing), leased, and the probe to run.
fn incident_probe(
    inner: &mut Inner,
    ep_id: &Arc<str>,
    ep: u32,
    now: Timestamp,
) -> Option<(StepOf, ProbeRequest)> {
    let (cooldown, lease) = (inner.policy.incident_cooldown, inner.policy.probe_lease);
    let active = inner.incidents.get_mut(ep_id)?.active.as_mut()?;
    if now < active.next_probe {
        return None;
    }
    active.next_probe = now.plus(cooldown);
    active.probe_out = Some((now, now.plus(lease)));
    let candidates = active.credentials.clone();
    let turn = active.turn;
    active.turn = active.turn.wrapping_add(1);
    let n = candidates.len();
    // Its suspects take turns.
    let c = (0..n)
        .map(|k| &candidates[(turn + k) % n])
        .filter_map(|id| inner.by_id.get(id).copied())
        .find(|&c| {
            inner.creds[c as usize].endpoint == ep
                && matches!(&inner.creds[c as usize].rec.health, Health::Suspect { class, .. }
                    if matches!(class, Class::AuthPermanent | Class::AuthTransient))
        })?;
    let slot = &mut inner.creds[c as usize];
    let Health::Suspect {
        class,
        since,
        evidence,
        ..
    } = slot.rec.health.clone()
    else {
        return None;
    };
    let from = std::mem::replace(
        &mut slot.rec.health,
        Health::Probing {
            class,
            since,
            evidence,
            lease_until: now.plus(lease),
            trial: false,
        },
    );
    let step = (
        ScopeKey::Credential(slot.spec.id.clone()),
        Step {
            from: Some(from),
            why: format!("auth incident on `{ep_id}`: probing one of its keys"),
            wants_probe: false,
        },
        Some(slot.spec.fingerprint.clone()),
    );
    let probe = ProbeRequest {
        scope: ScopeKey::Credential(slot.spec.id.clone()),
        credential: slot.spec.id.clone(),
        endpoint: ep_id.clone(),
        model: None,
        class,
        kind: ProbeKind::KeyValidity,
        recheck: false,
        incident: true,
    };
    Some((step, probe))
}

/// An incident probe's answer: it is back (no longer out); a rejection is the incident's
/// latest evidence; an inconclusive one (a 5xx, a timeout) is retried soon, not after a
/// whole cooldown. (A success ends the incident through [`note_endpoint_success`].)
pub(super) fn note_incident_probe(
    inner: &mut Inner,
    ep: u32,
    outcome: &ProbeOutcome,
    now: Timestamp,
) {
    let retry = inner.policy.probe_retry.min(inner.policy.incident_cooldown);
    let Some(e) = inner.endpoints.get(ep as usize) else {
        return;
    };
    let Some(active) = inner
        .incidents
        .get_mut(&e.id)
        .and_then(|i| i.active.as_mut())
    else {
        return;
    };
    active.probe_out = None;
    match outcome {
        ProbeOutcome::Confirmed { .. } => {}
        ProbeOutcome::Inconclusive { .. } => {
            active.next_probe = active.next_probe.min(now.plus(retry));
        }
        ProbeOutcome::Refuted => {}
    }
}
