//! `[alerts]` and `[[alerts.webhooks]]`: where the gateway sends a message when a
//! credential is disabled or recovers, an auth incident starts or ends, or an OAuth
//! refresh fails (see docs/alerts.md).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::durations::humantime_duration;
use super::sections::Resolve;
use super::Secret;

/// The alerts' settings; no webhook means no alerts.
#[derive(Debug, Clone)]
pub struct Alerts {
    pub webhooks: Vec<Webhook>,
    /// The most messages kept waiting in the outbox (the oldest are dropped past it).
    pub max_queued: usize,
    /// The first retry's delay; each next one doubles, up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// A message still undelivered this long after it was queued is dropped.
    pub give_up_after: Duration,
    /// One delivery's time limit.
    pub timeout: Duration,
}

impl Default for Alerts {
    fn default() -> Alerts {
        Alerts {
            webhooks: Vec::new(),
            max_queued: 1_000,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}

/// One receiver of alerts.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Its name in metrics and logs, and in the outbox (messages for a renamed webhook
    /// are dropped).
    pub name: Arc<str>,
    /// Where to POST. A secret: a Slack incoming-webhook URL is its own credential.
    pub url: Secret,
    pub format: WebhookFormat,
    /// Signs every delivery (HMAC-SHA256); `None`: unsigned.
    pub secret: Option<Secret>,
    /// The events it receives (all when the config lists none).
    pub events: Vec<AlertEvent>,
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// Keyward's own JSON object (docs/alerts.md).
    Json,
    /// A Slack incoming webhook's `text` and `blocks`.
    Slack,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertEvent {
    /// A credential (or one of its models) was disabled.
    CredentialDisabled,
    /// A disabled credential (or model) is back in rotation.
    CredentialRecovered,
    /// A provider-wide auth incident started on an endpoint.
    IncidentStarted,
    /// It ended: the endpoint's auth answers again, or it outlasted `incident_max`.
    IncidentEnded,
    /// An OAuth refresh failed: the grant is dead, or the token endpoint is failing.
    OAuthRefreshFailed,
}

impl AlertEvent {
    pub const ALL: [AlertEvent; 5] = [
        AlertEvent::CredentialDisabled,
        AlertEvent::CredentialRecovered,
        AlertEvent::IncidentStarted,
        AlertEvent::IncidentEnded,
        AlertEvent::OAuthRefreshFailed,
    ];

    /// The event's name in the config, the payload and the `x-keyward-event` header.
    pub fn name(self) -> &'static str {
        match self {
            AlertEvent::CredentialDisabled => "credential.disabled",
            AlertEvent::CredentialRecovered => "credential.recovered",
            AlertEvent::IncidentStarted => "incident.started",
            AlertEvent::IncidentEnded => "incident.ended",
            AlertEvent::OAuthRefreshFailed => "oauth.refresh_failed",
        }
    }

    pub fn parse(s: &str) -> Option<AlertEvent> {
        AlertEvent::ALL.into_iter().find(|e| e.name() == s)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    max_queued: Option<usize>,
    retry_min: Option<String>,
    retry_max: Option<String>,
    give_up_after: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: String,
    url: String,
    #[serde(default = "json_format")]
    format: WebhookFormat,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
}

fn json_format() -> WebhookFormat {
    WebhookFormat::Json
}

/// Validates `[alerts]`.
pub(super) fn alerts(
    raw: Option<&RawAlerts>,
    resolve: &Resolve<'_>,
    problem: &mut dyn FnMut(String, String),
) -> Alerts {
    let mut out = Alerts::default();
    let Some(raw) = raw else { return out };
    out.retry_min = duration(
        "retry_min",
        raw.retry_min.as_deref(),
        out.retry_min,
        problem,
    );
    out.retry_max = duration(
        "retry_max",
        raw.retry_max.as_deref(),
        out.retry_max,
        problem,
    );
    out.give_up_after = duration(
        "give_up_after",
        raw.give_up_after.as_deref(),
        out.give_up_after,
        problem,
    );
    out.timeout = duration("timeout", raw.timeout.as_deref(), out.timeout, problem);
    if out.retry_max < out.retry_min {
        problem(
            "alerts.retry_max".into(),
            "retry_max is shorter than retry_min: make it at least as long".into(),
        );
    }
    match raw.max_queued {
        Some(0) => problem(
            "alerts.max_queued".into(),
            "at least 1: the outbox must hold the alert it is about to send".into(),
        ),
        Some(n) => out.max_queued = n,
        None => {}
    }
    let mut names = std::collections::HashSet::new();
    for (i, w) in raw.webhooks.iter().enumerate() {
        let at = format!("alerts.webhooks[{i}]");
        if w.name.trim().is_empty() || !names.insert(w.name.as_str()) {
            problem(
                format!("{at}.name"),
                "each webhook needs a name of its own (it labels metrics and queued messages)"
                    .into(),
            );
        }
        let url = if w.url.starts_with("env:") || w.url.starts_with("file:") {
            resolve(&format!("{at}.url"), &w.url, problem)
        } else {
            Some(Secret(w.url.as_str().into()))
        };
        if let Some(u) = &url {
            if !(u.expose().starts_with("https://") || u.expose().starts_with("http://")) {
                problem(
                    format!("{at}.url"),
                    "the URL must start with https:// (or http:// for a receiver on this host)"
                        .into(),
                );
            }
        }
        let secret = w
            .secret
            .as_deref()
            .and_then(|s| resolve(&format!("{at}.secret"), s, problem));
        let mut events = Vec::new();
        for e in w.events.iter().flatten() {
            match AlertEvent::parse(e) {
                Some(ev) => events.push(ev),
                None => problem(
                    format!("{at}.events"),
                    format!(
                        "unknown event {e:?}; the events are {}",
                        AlertEvent::ALL.map(AlertEvent::name).join(", ")
                    ),
                ),
            }
        }
        if w.events.is_none() {
            events = AlertEvent::ALL.to_vec();
        }
        if let Some(url) = url {
            out.webhooks.push(Webhook {
                name: w.name.as_str().into(),
                url,
                format: w.format,
                secret,
                events,
            });
        }
    }
    out
}

/// What is accepted in `[alerts]` but risky: an unsigned JSON webhook, a webhook reached
/// in clear text off this host.
pub(super) fn warnings(alerts: &Alerts) -> Vec<super::ConfigProblem> {
    let mut out = Vec::new();
    for (i, w) in alerts.webhooks.iter().enumerate() {
        if w.format == WebhookFormat::Json && w.secret.is_none() {
            out.push(super::ConfigProblem {
                path: format!("alerts.webhooks[{i}].secret"),
                message: "deliveries are unsigned, so the receiver cannot tell them from forged ones: set `secret = \"env:VAR\"` (docs/alerts.md shows how to verify)".into(),
            });
        }
        if let Some(rest) = w.url.expose().strip_prefix("http://") {
            let host = rest.split(['/', '?']).next().unwrap_or("");
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            let loopback = host.starts_with("127.")
                || host.starts_with("localhost")
                || host.starts_with("[::1]");
            if !loopback {
                out.push(super::ConfigProblem {
                    path: format!("alerts.webhooks[{i}].url"),
                    message: "alerts (credential ids, evidence, the signature) travel in clear text to another host: use https://".into(),
                });
            }
        }
    }
    out
}

/// `alerts.NAME`'s duration, or `default` (with a problem when it is not one).
fn duration(
    name: &str,
    value: Option<&str>,
    default: Duration,
    problem: &mut dyn FnMut(String, String),
) -> Duration {
    let Some(v) = value else { return default };
    humantime_duration(v)
        .filter(|d| !d.is_zero())
        .unwrap_or_else(|| {
            problem(
                format!("alerts.{name}"),
                format!("{v:?} is not a duration like \"1s\", \"10m\" or \"24h\""),
            );
            default
        })
}

#[cfg(test)]
mod tests {
    use crate::config::{AlertEvent, Config, WebhookFormat};
    use std::path::Path;

    fn parse(alerts: &str) -> Result<Config, Vec<String>> {
        let text = format!("[[gateway_keys]]\nname = \"k\"\nkey = \"env:GW\"\n{alerts}");
        Config::parse(&text, Path::new("."), &|v| match v {
            "GW" => Some("gateway-key-0123456789".into()),
            "HOOK_SECRET" => Some("whsec-0123".into()),
            _ => None,
        })
        .map_err(|p| p.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn webhooks_take_every_event_unless_told_and_json_by_default() {
        let cfg = parse(
            "[alerts]\nretry_min = \"2s\"\n[[alerts.webhooks]]\nname = \"ops\"\nurl = \"https://hooks.example/x\"\nsecret = \"env:HOOK_SECRET\"\n[[alerts.webhooks]]\nname = \"chat\"\nurl = \"https://hooks.example/y\"\nformat = \"slack\"\nevents = [\"credential.disabled\"]\n",
        )
        .unwrap();
        let hooks = &cfg.alerts.webhooks;
        assert_eq!(hooks[0].format, WebhookFormat::Json);
        assert_eq!(hooks[0].events, AlertEvent::ALL.to_vec());
        assert_eq!(
            hooks[0].secret.as_ref().map(|s| s.expose()),
            Some("whsec-0123")
        );
        assert_eq!(hooks[1].format, WebhookFormat::Slack);
        assert_eq!(hooks[1].events, [AlertEvent::CredentialDisabled]);
        assert_eq!(cfg.alerts.retry_min, std::time::Duration::from_secs(2));
        // Without [alerts]: no webhook.
        assert!(parse("").unwrap().alerts.webhooks.is_empty());
        // An unsigned JSON webhook in clear text to another host: accepted, with warnings.
        let cfg =
            parse("[[alerts.webhooks]]\nname = \"ops\"\nurl = \"http://10.0.0.9/hook\"\n").unwrap();
        let warnings: Vec<String> = cfg.warnings.iter().map(ToString::to_string).collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("alerts.webhooks[0].secret: deliveries are unsigned")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("alerts.webhooks[0].url: alerts") && w.contains("https://")),
            "{warnings:?}"
        );
        let cfg = parse("[[alerts.webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"env:HOOK_SECRET\"\n").unwrap();
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn every_mistake_is_reported_with_its_path() {
        let problems = parse(
            "[alerts]\nretry_min = \"soon\"\n[[alerts.webhooks]]\nname = \"ops\"\nurl = \"ftp://x\"\nsecret = \"env:MISSING\"\nevents = [\"credential.deleted\"]\n[[alerts.webhooks]]\nname = \"ops\"\nurl = \"env:NOPE\"\n",
        )
        .unwrap_err()
        .join("\n");
        for want in [
            "alerts.retry_min: \"soon\" is not a duration",
            "alerts.webhooks[0].url: the URL must start with https://",
            "alerts.webhooks[0].secret: environment variable MISSING is not set",
            "alerts.webhooks[0].events: unknown event \"credential.deleted\"; the events are credential.disabled",
            "alerts.webhooks[1].name: each webhook needs a name of its own",
            "alerts.webhooks[1].url: environment variable NOPE is not set",
        ] {
            assert!(problems.contains(want), "missing {want:?} in:\n{problems}");
        }
    }
}
