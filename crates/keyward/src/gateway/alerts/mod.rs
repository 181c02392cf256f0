//! Alerts: a signed webhook message when a credential is disabled or recovers, an auth
//! incident starts or ends, or an OAuth refresh fails (docs/alerts.md).
//!
//! - **Durable.** Single node: a transition's alerts are written into the state file's
//!   outbox in the same SQLite transaction as the transition ([`Rules`] is the store's
//!   [`OutboxRule`]), so a disable that is on disk has its alert on disk, and a restart
//!   delivers what was queued. Incident and OAuth alerts are enqueued the same way,
//!   committed before they count as raised.
//! - **Fleet mode** has no state file: the replica that performs a transition (or sees
//!   the incident, or fails the refresh) queues its alerts in memory ([`AlertingSink`]);
//!   other replicas only follow it, so each alert is sent once — but a replica that
//!   stops loses what it had not delivered.
//! - **Delivery** ([`deliver`]): due messages are POSTed one by one, signed with
//!   HMAC-SHA256 over `"{timestamp}.{body}"`; a failure is retried with exponential
//!   backoff (backon's, with jitter) until `give_up_after`; delivered rows are removed.
//!   Receivers de-duplicate by the message's `id`: delivery is at least once.

mod deliver;
mod payload;
mod queue;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use keyward_core::health::{Ack, IncidentEvent, Timestamp, Transition, TransitionSink};
use keyward_store::{OutboxEntry, OutboxRule};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use deliver::deliver;
pub(crate) use payload::Alert;
use payload::CredentialInfo;
pub use queue::Queue;

use crate::config::{Alerts as Settings, Config};

use super::caller_bound::SecretMask;

/// The alert metrics (`keyward_alerts_*`).
#[derive(Debug, Default)]
pub struct AlertMetrics {
    /// Messages queued, by webhook and event.
    pub queued: Family<WebhookEvent, Counter>,
    /// Messages delivered (a 2xx answer), by webhook.
    pub delivered: Family<WebhookLabel, Counter>,
    /// Delivery attempts that failed (retried later), by webhook.
    pub failed: Family<WebhookLabel, Counter>,
    /// Messages given up on, by reason: `full` (the outbox was full), `expired`
    /// (undelivered for `give_up_after`), `unknown_webhook` (its webhook left the config),
    /// `store` (the outbox could not be written).
    pub dropped: Family<ReasonLabel, Counter>,
    /// Messages waiting now.
    pub pending: Gauge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookEvent {
    pub webhook: Arc<str>,
    pub event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    pub webhook: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

impl AlertMetrics {
    /// Registers them (under `keyward_alerts_…`).
    pub fn register(registry: &mut Registry) -> AlertMetrics {
        let m = AlertMetrics::default();
        registry.register(
            "alerts_queued",
            "Alert messages queued in the outbox, by webhook and event",
            m.queued.clone(),
        );
        registry.register(
            "alerts_delivered",
            "Alert messages delivered (the webhook answered 2xx), by webhook",
            m.delivered.clone(),
        );
        registry.register(
            "alerts_failed_deliveries",
            "Alert delivery attempts that failed and will be retried, by webhook",
            m.failed.clone(),
        );
        registry.register(
            "alerts_dropped",
            "Alert messages given up on, by reason (full, expired, unknown_webhook, store)",
            m.dropped.clone(),
        );
        registry.register(
            "alerts_pending",
            "Alert messages waiting in the outbox",
            m.pending.clone(),
        );
        m
    }

    fn drop_reason(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.dropped
                .get_or_create(&ReasonLabel { reason })
                .inc_by(n);
        }
    }
}

/// What turns events into messages: the current configuration's webhooks. Swapped on
/// reload; the state writer reads it for every transition.
#[derive(Debug)]
pub struct Rules {
    current: RwLock<Arc<RuleSet>>,
    metrics: Arc<super::metrics::Metrics>,
}

#[derive(Debug, Default)]
struct RuleSet {
    settings: Settings,
    creds: HashMap<Arc<str>, CredentialInfo>,
    mask: Option<SecretMask>,
}

impl Rules {
    fn set(&self, cfg: &Config, mask: SecretMask) {
        let creds = cfg
            .credentials
            .iter()
            .map(|c| {
                let provider = cfg
                    .endpoints
                    .get(&c.endpoint)
                    .map_or("unknown", |e| e.provider.as_str());
                (
                    c.id.clone(),
                    CredentialInfo {
                        provider,
                        endpoint: c.endpoint.to_string(),
                    },
                )
            })
            .collect();
        let set = Arc::new(RuleSet {
            settings: cfg.alerts.clone(),
            creds,
            mask: Some(mask),
        });
        match self.current.write() {
            Ok(mut c) => *c = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    fn get(&self) -> Arc<RuleSet> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The messages of `alert`, one per webhook that takes its event.
    fn entries_of(&self, alert: &Alert) -> Vec<OutboxEntry> {
        let set = self.get();
        let mut alert = alert.clone();
        if let Some(mask) = &set.mask {
            alert.evidence = masked(mask, &alert.evidence);
            alert.summary = masked(mask, &alert.summary);
        }
        set.settings
            .webhooks
            .iter()
            .filter(|w| w.events.contains(&alert.event))
            .map(|w| {
                self.metrics
                    .alerts
                    .queued
                    .get_or_create(&WebhookEvent {
                        webhook: w.name.clone(),
                        event: alert.event.name(),
                    })
                    .inc();
                OutboxEntry {
                    destination: w.name.to_string(),
                    event: alert.event.name().to_owned(),
                    body: alert.render(w.format),
                }
            })
            .collect()
    }
}

/// `text` with every configured secret masked.
fn masked(mask: &SecretMask, text: &str) -> String {
    String::from_utf8_lossy(&mask.mask_owned(text.as_bytes().to_vec(), None)).into_owned()
}

impl OutboxRule for Rules {
    fn entries(&self, t: &Transition) -> Vec<OutboxEntry> {
        let set = self.get();
        if set.settings.webhooks.is_empty() {
            return Vec::new();
        }
        let info = t.scope.credential().and_then(|c| set.creds.get(c));
        match payload::from_transition(t, info) {
            Some(alert) => self.entries_of(&alert),
            None => Vec::new(),
        }
    }
}

/// The gateway's alerts: the rules, the queue they fill, and what wakes delivery.
#[derive(Debug)]
pub struct Alerts {
    rules: Arc<Rules>,
    queue: Queue,
    wake: tokio::sync::Notify,
    metrics: Arc<super::metrics::Metrics>,
}

impl Alerts {
    /// Alerts queued in `queue`; [`Alerts::configure`] gives them their webhooks.
    pub fn new(queue: Queue, metrics: Arc<super::metrics::Metrics>) -> Arc<Alerts> {
        let rules = Arc::new(Rules {
            current: RwLock::new(Arc::default()),
            metrics: metrics.clone(),
        });
        if let Queue::Durable(outbox) = &queue {
            outbox.set_rule(rules.clone(), Settings::default().max_queued);
        }
        Arc::new(Alerts {
            rules,
            queue,
            wake: tokio::sync::Notify::new(),
            metrics,
        })
    }

    /// No queue: alerts are off (a gateway built without state, as in unit tests).
    pub fn off(metrics: Arc<super::metrics::Metrics>) -> Arc<Alerts> {
        Alerts::new(Queue::Off, metrics)
    }

    /// Takes `cfg`'s webhooks (at start and on every reload).
    pub fn configure(&self, cfg: &Config, mask: SecretMask) {
        self.rules.set(cfg, mask);
        if let Queue::Durable(outbox) = &self.queue {
            outbox.set_rule(self.rules.clone(), cfg.alerts.max_queued);
        }
        self.queue.set_capacity(cfg.alerts.max_queued);
    }

    /// For `GET /admin/config`: each webhook by name, format, events and whether it signs
    /// (never its URL or secret), and the messages waiting (from the last delivery pass).
    pub fn describe(&self, cfg: &Config) -> serde_json::Value {
        let hooks: Vec<serde_json::Value> = cfg
            .alerts
            .webhooks
            .iter()
            .map(|w| {
                serde_json::json!({
                    "name": &*w.name,
                    "format": match w.format {
                        crate::config::WebhookFormat::Json => "json",
                        crate::config::WebhookFormat::Slack => "slack",
                    },
                    "events": w.events.iter().map(|e| e.name()).collect::<Vec<_>>(),
                    "signed": w.secret.is_some(),
                })
            })
            .collect();
        serde_json::json!({
            "webhooks": hooks,
            "pending": self.metrics.alerts.pending.get(),
            "durable": matches!(self.queue, Queue::Durable(_)),
        })
    }

    /// The incident events' alerts, queued (on a blocking thread: the outbox commits).
    pub fn incident(self: &Arc<Self>, event: &IncidentEvent, now: Timestamp) {
        self.raise(&payload::from_incident(event, now), now);
    }

    /// A failed OAuth refresh's alert (`dead`: the grant was rejected).
    pub fn oauth_refresh_failed(
        self: &Arc<Self>,
        credential: &str,
        why: &str,
        dead: bool,
        now: Timestamp,
    ) {
        self.raise(
            &payload::oauth_refresh_failed(credential, why, dead, now),
            now,
        );
    }

    fn raise(self: &Arc<Self>, alert: &Alert, now: Timestamp) {
        let entries = self.rules.entries_of(alert);
        if entries.is_empty() {
            return;
        }
        let me = self.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            me.push(entries, now);
            return;
        };
        drop(handle.spawn_blocking(move || me.push(entries, now)));
    }

    /// Queues `entries` now (blocking: the durable outbox commits them).
    fn push(&self, entries: Vec<OutboxEntry>, now: Timestamp) {
        let n = entries.len() as u64;
        match self.queue.enqueue(entries, now) {
            Ok(()) => self.wake.notify_one(),
            Err(e) => {
                tracing::error!(error = %e, "alerts could not be queued: they are lost");
                self.metrics.alerts.drop_reason("store", n);
            }
        }
    }
}

/// Fleet mode's sink: the fleet store, plus this replica's alerts for the transitions it
/// performs (other replicas' transitions reach the engine without passing here).
#[derive(Debug)]
pub struct AlertingSink {
    inner: Arc<dyn TransitionSink>,
    alerts: Arc<Alerts>,
}

impl AlertingSink {
    pub fn new(inner: Arc<dyn TransitionSink>, alerts: Arc<Alerts>) -> AlertingSink {
        AlertingSink { inner, alerts }
    }
}

impl TransitionSink for AlertingSink {
    fn enqueue(&self, t: Transition) -> Ack {
        let entries = self.alerts.rules.entries(&t);
        let at = t.at;
        let ack = self.inner.enqueue(t);
        if !entries.is_empty() {
            self.alerts.push(entries, at);
        }
        ack
    }
}
