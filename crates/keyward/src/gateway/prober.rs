//! Runs the confirmation probes and re-checks the health engine asks for, in the
//! background. A probe tests the property that failed, on the same endpoint and auth mode:
//! key validity with the cheapest authenticated call (Anthropic `count_tokens`, which is
//! free; a models list elsewhere), credit and model access with a one-token request.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::classify::{classify, Attempt, Class, EndpointKind, Phase, Provider};
use keyward_core::health::{ProbeKind, ProbeOutcome, ProbeRequest};
use serde_json::json;
use tracing::{info, warn};

use super::{upstream, Gateway, Live};
use crate::clock::wall_clock;

/// Fleet mode: a probe's lease outlives the probe and its control call.
const PROBE_LEASE: Duration = Duration::from_secs(30);

/// How much of a probe's error body is read for the classifier.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// Polls for due probes until the task is aborted. Each round uses the current
/// configuration (a reload may have changed a credential's secret or endpoint).
pub async fn run(live: Arc<Live>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let gw = live.current();
        report_incidents(&gw);
        for probe in gw.engine.due_probes() {
            let gw = gw.clone();
            tokio::spawn(async move {
                // Fleet mode: one replica probes a scope; the others apply its published
                // verdict (their own claim on the probe lapses with its local lease).
                let lease = match &gw.fleet {
                    None => None,
                    Some(fleet) => {
                        let name = format!("probe:{}", probe.scope);
                        match fleet.lease(&name, PROBE_LEASE).await {
                            keyward_store::Lease::Held(token) => Some((fleet.clone(), name, token)),
                            keyward_store::Lease::Taken => {
                                info!(credential = %probe.credential, scope = %probe.scope, "another replica is probing this scope: waiting for its verdict");
                                return;
                            }
                            // Redis away: probe locally (degraded).
                            keyward_store::Lease::Unavailable => None,
                        }
                    }
                };
                let outcome = probe_once(&gw, &probe).await;
                let name = match &outcome {
                    ProbeOutcome::Confirmed { .. } => "confirmed",
                    ProbeOutcome::Refuted => "refuted",
                    ProbeOutcome::Inconclusive { .. } => "inconclusive",
                };
                gw.metrics
                    .probes
                    .get_or_create(&super::metrics::CredentialOutcome {
                        credential: probe.credential.clone(),
                        outcome: name,
                    })
                    .inc();
                info!(credential = %probe.credential, scope = %probe.scope, class = probe.class.as_str(), outcome = ?outcome, "probe finished");
                let ack = gw.engine.record_probe(&probe, outcome);
                // A disable is on disk (or in Redis) before it is reported.
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || ack.wait()).await {
                    warn!(error = %e, "a health transition was not persisted");
                }
                if let Some((fleet, name, token)) = lease {
                    fleet.release(&name, &token).await;
                }
            });
        }
    }
}

/// Logs (WARN) and counts the auth incidents that started, ended or expired since the last
/// round, and keeps the per-endpoint gauge current.
fn report_incidents(gw: &Gateway) {
    use super::metrics::{EndpointLabel, EndpointOutcome};
    use keyward_core::health::IncidentEvent;
    for event in gw.engine.take_incident_events() {
        gw.alerts.incident(&event, gw.engine.now());
        let (endpoint, outcome, active) = match &event {
            IncidentEvent::Started(i) => {
                let names: Vec<&str> = i.credentials.iter().map(|c| &**c).collect();
                warn!(endpoint = %i.endpoint, credentials = %names.join(","), since = %i.since.rfc3339(), disables_at = %i.disables_at.rfc3339(), "provider-wide auth incident: {} credentials of endpoint `{}` rejected at once and none answering; nothing is disabled while it lasts; one of them is probed every incident_cooldown", i.credentials.len(), i.endpoint);
                (i.endpoint.clone(), "started", 1)
            }
            IncidentEvent::Ended {
                endpoint,
                since,
                why,
            } => {
                warn!(endpoint = %endpoint, since = %since.rfc3339(), "provider-wide auth incident over: {why}; its suspects are now probed one by one");
                (endpoint.clone(), "ended", 0)
            }
            IncidentEvent::Expired {
                endpoint,
                since,
                disabled,
            } => {
                let names: Vec<&str> = disabled.iter().map(|c| &**c).collect();
                warn!(endpoint = %endpoint, since = %since.rfc3339(), disabled = %names.join(","), "auth incident outlasted incident_max with every key still rejected: treated as revoked at once and disabled (re-checked every incident_recheck); replace the keys if they were revoked");
                (endpoint.clone(), "expired", 0)
            }
        };
        gw.metrics
            .auth_incidents
            .get_or_create(&EndpointOutcome {
                endpoint: endpoint.clone(),
                outcome,
            })
            .inc();
        gw.metrics
            .auth_incident_active
            .get_or_create(&EndpointLabel { endpoint })
            .set(active);
    }
}

/// What one cheap authenticated call with a credential showed.
#[derive(Debug)]
pub enum Check {
    /// It answered: the credential works for this call.
    Ok,
    /// It failed, classified.
    Failed(Box<keyward_core::classify::Failure>),
    /// No answer (timeout, connection refused, TLS, DNS).
    Unreachable(String),
    /// The credential or its endpoint is not in the configuration.
    Unknown(String),
}

/// One probe: its outcome. An auth verdict the probe confirms is checked against a
/// control: the same call with a healthy sibling credential of the same endpoint. If the
/// sibling fails it too, the provider's auth is failing for everyone (an incident the
/// request traffic was too thin or too gated to show): inconclusive, nothing disabled.
pub async fn probe_once(gw: &Gateway, probe: &ProbeRequest) -> ProbeOutcome {
    let outcome = probe_alone(gw, probe).await;
    let auth = matches!(probe.class, Class::AuthPermanent | Class::AuthTransient);
    // An incident's probe has no control: every sibling is failing too.
    if probe.incident || !(auth && matches!(outcome, ProbeOutcome::Confirmed { .. })) {
        return outcome;
    }
    let Some(sibling) = control_credential(gw, &probe.credential) else {
        return outcome;
    };
    match check(gw, &sibling, None, ProbeKind::KeyValidity).await {
        Check::Failed(f) if matches!(f.class, Class::AuthPermanent | Class::AuthTransient) => {
            gw.engine.note_auth_rejection(&sibling);
            warn!(credential = %probe.credential, control = %sibling, "the control probe on a healthy sibling failed auth too: provider-wide auth trouble, not a revocation");
            ProbeOutcome::Inconclusive {
                why: format!(
                    "the control probe on healthy `{sibling}` failed auth too: provider-wide auth trouble, not a revocation"
                ),
            }
        }
        Check::Unreachable(what) => ProbeOutcome::Inconclusive {
            why: format!("the control probe on `{sibling}` {what}"),
        },
        _ => outcome,
    }
}

/// A healthy credential of the same endpoint and kind as `credential`, the one that
/// answered most recently.
fn control_credential(gw: &Gateway, credential: &str) -> Option<Arc<str>> {
    let me = gw.credential(credential)?;
    let healthy: std::collections::HashSet<Arc<str>> = gw
        .engine
        .snapshot()
        .into_iter()
        .filter_map(|(k, h, _)| match k {
            keyward_core::health::ScopeKey::Credential(id)
                if h == keyward_core::health::Health::Healthy =>
            {
                Some(id)
            }
            _ => None,
        })
        .collect();
    gw.cfg
        .credentials
        .iter()
        .filter(|c| {
            c.id != me.id
                && c.endpoint == me.endpoint
                && c.kind == me.kind
                && healthy.contains(&c.id)
        })
        .max_by_key(|c| gw.engine.last_success(&c.id))
        .map(|c| c.id.clone())
}

async fn probe_alone(gw: &Gateway, probe: &ProbeRequest) -> ProbeOutcome {
    let mut checked = check(gw, &probe.credential, probe.model.clone(), probe.kind).await;
    // A short-lived token the provider no longer accepts is renewed, as a request would
    // renew it, and the probe asked again once: otherwise a credential suspected while its
    // token was rejected (during an auth incident, say) would be probed with the dead
    // token until it expired by itself, inconclusive every time, and never serve again.
    // Not during an incident: every token is refused then, a new one would be too.
    if !probe.incident && matches!(&checked, Check::Failed(f) if f.class == Class::AuthTransient) {
        if let Some(cred) = gw
            .credential(&probe.credential)
            .filter(|c| gw.refreshable(c))
        {
            if let Ok(rejected) = gw.auth(&cred).await {
                match gw.refresh_after_rejection(&cred, &rejected).await {
                    Ok(_) => {
                        info!(credential = %probe.credential, "probe's token rejected: refreshed, probing again");
                        checked =
                            check(gw, &probe.credential, probe.model.clone(), probe.kind).await;
                    }
                    Err(e) => {
                        warn!(credential = %probe.credential, reason = %e, "probe's token rejected and the refresh failed");
                    }
                }
            }
        }
    }
    match checked {
        Check::Ok => ProbeOutcome::Refuted,
        Check::Unreachable(what) => ProbeOutcome::Inconclusive {
            why: format!("probe {what}"),
        },
        Check::Unknown(what) => ProbeOutcome::Inconclusive { why: what },
        Check::Failed(f) => {
            // An expired token is fixed by a refresh, never confirmed into a disable.
            let same = (f.class == probe.class && f.class != Class::AuthTransient)
                || (probe.class == Class::AuthTransient && f.class == Class::AuthPermanent);
            if same {
                let status = f
                    .evidence
                    .status
                    .map(|s| format!("{s} "))
                    .unwrap_or_default();
                let remedy = gw
                    .credential(&probe.credential)
                    .and_then(|c| super::cloud::probe::remedy(gw, &c, &f))
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                ProbeOutcome::Confirmed {
                    evidence: format!(
                        "confirmed by probe: {status}{}={}{remedy}",
                        f.evidence.kind.as_str(),
                        f.evidence.value
                    ),
                }
            } else {
                ProbeOutcome::Inconclusive {
                    why: format!("probe got {} instead", f.class),
                }
            }
        }
    }
}

/// Makes the cheapest call that tests `kind` with `credential`: key validity with a free
/// authenticated call (Anthropic `count_tokens`, a models list elsewhere), credit and
/// model access with a one-token request to `model` (or the first model routed to it).
pub async fn check(
    gw: &Gateway,
    credential: &str,
    model: Option<Arc<str>>,
    kind: ProbeKind,
) -> Check {
    let Some(cred) = gw.credential(credential) else {
        return Check::Unknown("credential no longer configured".into());
    };
    let Some(endpoint) = gw.cfg.endpoints.get(&cred.endpoint).cloned() else {
        return Check::Unknown("endpoint no longer configured".into());
    };
    let model = model.clone().or_else(|| {
        gw.cfg
            .routes
            .values()
            .flat_map(|r| r.targets.iter())
            .find(|t| t.credentials.contains(&cred.id))
            .map(|t| t.model.clone())
    });
    let model = model.as_deref().unwrap_or("probe");
    let secret = match gw.auth(&cred).await {
        Ok(s) => s,
        Err(e) => return Check::Unknown(e.to_string()),
    };
    if let Some(built) = super::cloud::probe::request(gw, &cred, &endpoint, model, &secret, kind) {
        return match built {
            Ok(req) => send(gw, &endpoint, &cred, req).await,
            Err(e) => Check::Unknown(e.to_string()),
        };
    }
    let base = &endpoint.base_url;
    let (method, url, body) = match (endpoint.provider, kind) {
        (Provider::Anthropic, ProbeKind::KeyValidity) => (
            axum::http::Method::POST,
            format!("{base}/v1/messages/count_tokens"),
            Some(json!({"model": model, "messages": [{"role": "user", "content": "ping"}]})),
        ),
        (Provider::Anthropic, ProbeKind::MinimalRequest) => (
            axum::http::Method::POST,
            format!("{base}/v1/messages"),
            Some(
                json!({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}),
            ),
        ),
        (Provider::AzureOpenAi, ProbeKind::KeyValidity) => (
            axum::http::Method::GET,
            format!(
                "{base}/openai/models?api-version={}",
                endpoint.api_version.as_deref().unwrap_or("2024-10-21")
            ),
            None,
        ),
        (_, ProbeKind::KeyValidity) => (axum::http::Method::GET, format!("{base}/models"), None),
        (_, ProbeKind::MinimalRequest) => (
            axum::http::Method::POST,
            upstream::url(upstream::Inbound::Chat, &endpoint, model),
            Some(
                json!({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}),
            ),
        ),
    };
    let Some(url) = upstream::parse(&url) else {
        return Check::Unknown(format!(
            "the endpoint's probe URL does not parse (base_url {base:?}); fix the endpoint's base_url"
        ));
    };
    let req = match upstream::request(
        method,
        url,
        &endpoint,
        (cred.kind, &secret),
        None,
        body.map(|b| b.to_string().into_bytes()),
    ) {
        Ok(req) => req,
        Err(e) => return Check::Unknown(e.to_string()),
    };
    send(gw, &endpoint, &cred, req).await
}

/// Sends a probe's request and classifies what came back.
async fn send(
    gw: &Gateway,
    endpoint: &crate::config::Endpoint,
    cred: &crate::config::Credential,
    req: axum::http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Check {
    let resp = match tokio::time::timeout(gw.cfg.timeouts.headers, gw.client.send(req)).await {
        Err(_) => return Check::Unreachable("timed out".into()),
        Ok(Err(e)) => {
            let what = if e.is_connect() {
                "could not connect"
            } else {
                "transport error"
            };
            return Check::Unreachable(what.into());
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        return Check::Ok;
    }
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let body = super::verdict::read_limited(resp, MAX_PROBE_BODY, gw.cfg.timeouts.idle).await;
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Check::Failed(Box::new(classify(&Attempt {
        provider: endpoint.provider,
        credential: cred.kind,
        endpoint: EndpointKind::Inference,
        phase: Phase::Headers,
        transport: None,
        status: Some(status),
        headers: &h,
        body: &body,
        now: wall_clock(),
    })))
}
