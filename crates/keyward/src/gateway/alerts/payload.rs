//! What an alert says: built from a transition, an incident event or an OAuth refresh
//! failure, and rendered as Keyward's JSON or as a Slack message. Never a secret: the
//! credential by id and fingerprint, and the evidence masked with the configuration's
//! secrets before it is rendered.

use keyward_core::classify::Class;
use keyward_core::health::{Health, IncidentEvent, ScopeKey, Timestamp, Transition};
use serde_json::{json, Map, Value};

use crate::config::{AlertEvent, WebhookFormat};

/// One alert, before it is rendered for a webhook.
#[derive(Debug, Clone)]
pub(crate) struct Alert {
    pub(crate) event: AlertEvent,
    pub(crate) at: Timestamp,
    /// One line for people (Slack's `text`).
    pub(crate) summary: String,
    pub(crate) evidence: String,
    pub(crate) remedy: String,
    /// The event's own fields (credential, class, …).
    pub(crate) fields: Map<String, Value>,
}

/// What a credential's configuration adds to its alerts.
#[derive(Debug, Clone)]
pub(crate) struct CredentialInfo {
    pub(crate) provider: &'static str,
    pub(crate) endpoint: String,
}

/// The alert a transition causes, if any: a credential (or credential×model) disabled, or
/// back from disabled.
pub(crate) fn from_transition(t: &Transition, info: Option<&CredentialInfo>) -> Option<Alert> {
    let (credential, model) = match &t.scope {
        ScopeKey::Credential(c) => (c, None),
        ScopeKey::CredentialModel(c, m) => (c, Some(m)),
        _ => return None,
    };
    let was_disabled = matches!(t.from, Health::Disabled { .. });
    let (event, class, evidence, remedy) = match (&t.to, was_disabled) {
        (
            Health::Disabled {
                class,
                evidence,
                by_operator,
                ..
            },
            false,
        ) => (
            AlertEvent::CredentialDisabled,
            Some(*class),
            evidence.clone(),
            disabled_remedy(credential, *class, *by_operator),
        ),
        (Health::Healthy, true) => (
            AlertEvent::CredentialRecovered,
            t.from.class(),
            t.why.clone(),
            "none: it is back in rotation".to_owned(),
        ),
        _ => return None,
    };
    let what = match model {
        Some(m) => format!("credential `{credential}` for model `{m}`"),
        None => format!("credential `{credential}`"),
    };
    let class_name = class.map(Class::as_str);
    let summary = match event {
        AlertEvent::CredentialDisabled => format!(
            "Keyward: {what} disabled ({})",
            class_name.unwrap_or("operator")
        ),
        _ => format!("Keyward: {what} recovered: back in rotation"),
    };
    let mut fields = Map::new();
    fields.insert("credential".into(), json!(&**credential));
    fields.insert("model".into(), json!(model.map(|m| &**m)));
    if let Some(i) = info {
        fields.insert("provider".into(), json!(i.provider));
        fields.insert("endpoint".into(), json!(i.endpoint));
    }
    fields.insert("fingerprint".into(), json!(t.fingerprint.as_deref()));
    fields.insert("class".into(), json!(class_name));
    fields.insert("from".into(), json!(t.from.name()));
    fields.insert("to".into(), json!(t.to.name()));
    fields.insert("actor".into(), json!(t.actor));
    fields.insert("why".into(), json!(t.why));
    fields.insert("scope".into(), json!(t.scope.to_key()));
    Some(Alert {
        event,
        at: t.at,
        summary,
        evidence,
        remedy,
        fields,
    })
}

/// What to do about a disable.
fn disabled_remedy(credential: &str, class: Class, by_operator: bool) -> String {
    if by_operator {
        return format!(
            "disabled by an operator: `keyward reset {credential}` when it should serve again"
        );
    }
    match class {
        Class::AuthPermanent => format!("replace the key in the config, or `keyward reset {credential}` if it works again (a re-check runs by itself)"),
        Class::Billing => format!("add credit or raise the spend limit, then `keyward reset {credential}`"),
        Class::ModelNotFound => "enable the model for this key, or change the route".to_owned(),
        _ => format!("fix the cause in the evidence, then `keyward reset {credential}`"),
    }
}

/// The alert of an incident event (started, ended, expired).
pub(crate) fn from_incident(e: &IncidentEvent, now: Timestamp) -> Alert {
    let mut fields = Map::new();
    match e {
        IncidentEvent::Started(i) => {
            let names: Vec<&str> = i.credentials.iter().map(|c| &**c).collect();
            fields.insert("endpoint".into(), json!(&*i.endpoint));
            fields.insert("credentials".into(), json!(names));
            fields.insert("since".into(), json!(i.since.rfc3339()));
            fields.insert("disables_at".into(), json!(i.disables_at.rfc3339()));
            Alert {
                event: AlertEvent::IncidentStarted,
                at: now,
                summary: format!(
                    "Keyward: provider-wide auth incident on endpoint `{}`: {} credentials rejected at once",
                    i.endpoint,
                    names.len()
                ),
                evidence: format!("rejected at once: {}", names.join(", ")),
                remedy: format!("none yet: nothing is disabled while it lasts (until {}); check the provider's status page", i.disables_at.rfc3339()),
                fields,
            }
        }
        IncidentEvent::Ended {
            endpoint,
            since,
            why,
        } => {
            fields.insert("endpoint".into(), json!(&**endpoint));
            fields.insert("since".into(), json!(since.rfc3339()));
            fields.insert("outcome".into(), json!("healed"));
            Alert {
                event: AlertEvent::IncidentEnded,
                at: now,
                summary: format!("Keyward: auth incident on endpoint `{endpoint}` is over"),
                evidence: why.clone(),
                remedy: "none: its credentials are probed back into rotation one by one".into(),
                fields,
            }
        }
        IncidentEvent::Expired {
            endpoint,
            since,
            disabled,
        } => {
            let names: Vec<&str> = disabled.iter().map(|c| &**c).collect();
            fields.insert("endpoint".into(), json!(&**endpoint));
            fields.insert("since".into(), json!(since.rfc3339()));
            fields.insert("outcome".into(), json!("expired"));
            fields.insert("disabled".into(), json!(names));
            Alert {
                event: AlertEvent::IncidentEnded,
                at: now,
                summary: format!(
                    "Keyward: auth incident on endpoint `{endpoint}` outlasted incident_max: {} credentials disabled",
                    names.len()
                ),
                evidence: format!("still rejected: {}", names.join(", ")),
                remedy: "replace the keys if they were revoked; they are re-checked by themselves"
                    .into(),
                fields,
            }
        }
    }
}

/// The alert of a failed OAuth refresh: `dead` when the grant itself was rejected.
pub(crate) fn oauth_refresh_failed(
    credential: &str,
    why: &str,
    dead: bool,
    now: Timestamp,
) -> Alert {
    let mut fields = Map::new();
    fields.insert("credential".into(), json!(credential));
    fields.insert(
        "class".into(),
        json!(if dead {
            "auth_permanent"
        } else {
            "unavailable"
        }),
    );
    let (summary, remedy) = if dead {
        (
            format!(
                "Keyward: OAuth grant of credential `{credential}` rejected: credential disabled"
            ),
            format!("log in again and run `keyward credentials import {credential}`"),
        )
    } else {
        (
            format!("Keyward: OAuth token endpoint failing for credential `{credential}`"),
            "none yet: the refresh is retried; requests fail over meanwhile".to_owned(),
        )
    };
    Alert {
        event: AlertEvent::OAuthRefreshFailed,
        at: now,
        summary,
        evidence: why.to_owned(),
        remedy,
        fields,
    }
}

impl Alert {
    /// A stable id for this alert (the same on every retry), for receivers to
    /// de-duplicate: deliveries are at least once.
    pub(crate) fn id(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(self.event.name().as_bytes());
        ctx.update(&self.at.0.to_be_bytes());
        ctx.update(Value::Object(self.fields.clone()).to_string().as_bytes());
        ctx.finish()
            .as_ref()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The body for a webhook of `format`.
    pub(crate) fn render(&self, format: WebhookFormat) -> String {
        match format {
            WebhookFormat::Json => self.json().to_string(),
            WebhookFormat::Slack => self.slack().to_string(),
        }
    }

    fn json(&self) -> Value {
        let mut v = Map::new();
        v.insert("type".into(), json!(self.event.name()));
        v.insert("id".into(), json!(self.id()));
        v.insert("at".into(), json!(self.at.rfc3339()));
        for (k, f) in &self.fields {
            v.insert(k.clone(), f.clone());
        }
        v.insert("summary".into(), json!(self.summary));
        v.insert("evidence".into(), json!(self.evidence));
        v.insert("remedy".into(), json!(self.remedy));
        Value::Object(v)
    }

    /// Slack's incoming-webhook message: `text` (the notification) and `blocks`.
    fn slack(&self) -> Value {
        let detail = format!(
            "*{}*\n*Evidence:* {}\n*Remedy:* {}",
            slack_escape(&self.summary),
            slack_escape(clip(&self.evidence, 1_500)),
            slack_escape(&self.remedy)
        );
        json!({
            "text": slack_escape(&self.summary),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": detail}},
                {"type": "context", "elements": [
                    {"type": "mrkdwn", "text": format!("{} · {} · id {}", self.event.name(), self.at.rfc3339(), self.id())}
                ]}
            ]
        })
    }
}

/// At most `max` bytes of `s`, cut at a character boundary (Slack refuses a section text
/// over 3,000 characters).
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Slack's three control characters in message text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::health::Actor;
    use std::sync::Arc;

    fn disable() -> Transition {
        Transition {
            seq: 3,
            at: Timestamp(1_764_000_000_000),
            scope: ScopeKey::Credential("team-2".into()),
            from: Health::Healthy,
            to: Health::Disabled {
                class: Class::AuthPermanent,
                since: Timestamp(1_764_000_000_000),
                evidence: "confirmed by probe: 401 <invalid x-api-key>".into(),
                fingerprint: Some("fd4507ba4417".into()),
                recheck_at: None,
                by_operator: false,
            },
            why: "auth_permanent confirmed by probe".into(),
            actor: Actor::Probe,
            fingerprint: Some(Arc::from("fd4507ba4417")),
            durable: true,
            deny: Some(true),
        }
    }

    #[test]
    fn a_disable_is_an_alert_with_class_evidence_and_remedy() {
        let a = from_transition(&disable(), None).unwrap();
        assert_eq!(a.event, AlertEvent::CredentialDisabled);
        let v: Value = serde_json::from_str(&a.render(WebhookFormat::Json)).unwrap();
        assert_eq!(v["type"], "credential.disabled");
        assert_eq!(v["credential"], "team-2");
        assert_eq!(v["class"], "auth_permanent");
        assert_eq!(v["actor"], "probe");
        assert!(v["remedy"]
            .as_str()
            .unwrap()
            .contains("keyward reset team-2"));
        assert_eq!(v["id"].as_str().unwrap().len(), 24);
        // The id is the same however often it is rendered (retries de-duplicate).
        assert_eq!(a.id(), from_transition(&disable(), None).unwrap().id());
    }

    #[test]
    fn slack_gets_text_and_blocks_with_its_control_characters_escaped() {
        let a = from_transition(&disable(), None).unwrap();
        let v: Value = serde_json::from_str(&a.render(WebhookFormat::Slack)).unwrap();
        assert!(v["text"].as_str().unwrap().contains("`team-2` disabled"));
        let detail = v["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(detail.contains("&lt;invalid x-api-key&gt;"), "{detail}");
        assert!(!detail.contains('<'), "{detail}");
    }

    #[test]
    fn only_disables_and_recoveries_of_credentials_alert() {
        let mut t = disable();
        // Back from disabled: recovered.
        t.from = t.to.clone();
        t.to = Health::Healthy;
        assert_eq!(
            from_transition(&t, None).map(|a| a.event),
            Some(AlertEvent::CredentialRecovered)
        );
        // A cooldown ending: nothing.
        t.from = Health::Cooling {
            until: Timestamp(1),
            class: Class::RateLimit,
        };
        assert!(from_transition(&t, None).is_none());
        // An endpoint's scope: nothing.
        let mut e = disable();
        e.scope = ScopeKey::Endpoint("anthropic".into());
        assert!(from_transition(&e, None).is_none());
    }
}

#[cfg(test)]
mod incident_tests {
    use super::*;
    use keyward_core::health::IncidentInfo;

    #[test]
    fn an_incident_starts_and_ends_with_its_endpoint_and_credentials() {
        let started = from_incident(
            &IncidentEvent::Started(IncidentInfo {
                endpoint: "anthropic".into(),
                since: Timestamp(1_000),
                credentials: vec!["a".into(), "b".into()],
                next_probe: Timestamp(2_000),
                disables_at: Timestamp(9_000),
                expiring: false,
            }),
            Timestamp(1_000),
        );
        let v: Value = serde_json::from_str(&started.render(WebhookFormat::Json)).unwrap();
        assert_eq!(v["type"], "incident.started");
        assert_eq!(v["endpoint"], "anthropic");
        assert_eq!(v["credentials"], json!(["a", "b"]));
        let expired = from_incident(
            &IncidentEvent::Expired {
                endpoint: "anthropic".into(),
                since: Timestamp(1_000),
                disabled: vec!["a".into()],
            },
            Timestamp(9_000),
        );
        let v: Value = serde_json::from_str(&expired.render(WebhookFormat::Json)).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["outcome"].as_str()),
            (Some("incident.ended"), Some("expired"))
        );
        let dead = oauth_refresh_failed("pro", "invalid_grant", true, Timestamp(5));
        assert!(dead.remedy.contains("keyward credentials import pro"));
        assert_eq!(dead.fields["class"], "auth_permanent");
    }
}
