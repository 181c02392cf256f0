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
    }
}

/// One round of every active incident: an incident past `incident_max` disables the
/// auth suspects of its endpoint (every key was rejected all along: revoked at once);
/// otherwise, when its next probe is due, one of its suspects is leased and probed (the
/// request goes to `out`). Returns the steps taken.
pub(super) fn incident_round(
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
