//! Delivering queued alert messages: POST, signed; removed on a 2xx answer, retried with
//! exponential backoff otherwise, given up after `alerts.give_up_after`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use keyward_core::health::Timestamp;
use keyward_store::{OutboxRow, StoreError};
use tracing::{info, warn};

use super::queue::{Counted, Queue};
use super::{Alerts, WebhookLabel};
use crate::config::{Alerts as Settings, Webhook};
use crate::gateway::Live;

/// How often the queue is looked at when nothing wakes the loop earlier.
const POLL: Duration = Duration::from_millis(500);
/// Without webhooks, one pass in this many polls (30 s).
const IDLE_EVERY: u32 = 60;
/// Messages taken per pass.
const BATCH: usize = 32;

/// Delivers queued alerts until aborted.
pub async fn deliver(live: Arc<Live>) {
    let alerts = live.current().alerts.clone();
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e.without_url(), "cannot build the alerts' HTTP client: no alert will be delivered");
            return;
        }
    };
    let counted = Counted::default();
    let mut blocked = Blocked::new();
    let mut idle_polls: u32 = 0;
    loop {
        // Without webhooks the outbox is looked at only now and then (for messages a
        // previous configuration left), not twice a second.
        let configured = !alerts.rules.get().settings.webhooks.is_empty();
        idle_polls = if configured {
            0
        } else {
            idle_polls.wrapping_add(1)
        };
        if configured || idle_polls % IDLE_EVERY == 1 {
            let now = live.current().engine.now();
            pass(&alerts, &client, &counted, &mut blocked, now).await;
        }
        tokio::select! {
            () = alerts.wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Runs `f` on the queue on a blocking thread.
async fn on_queue<T: Send + 'static>(
    alerts: &Arc<Alerts>,
    f: impl FnOnce(&Queue) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let a = alerts.clone();
    tokio::task::spawn_blocking(move || f(&a.queue))
        .await
        .unwrap_or(Err(StoreError::Stopped))
}

/// Per webhook: not tried again before this (after a failed delivery), so a webhook that
/// is down gets one attempt per backoff step, however many messages wait for it.
type Blocked = HashMap<Arc<str>, Timestamp>;

/// One pass: drops what no webhook takes or what waited too long, then delivers each
/// webhook's due messages, webhooks side by side.
async fn pass(
    alerts: &Arc<Alerts>,
    client: &reqwest::Client,
    counted: &Counted,
    blocked: &mut Blocked,
    now: Timestamp,
) {
    let metrics = &alerts.metrics.alerts;
    let set = alerts.rules.get();
    let settings = &set.settings;
    let keep: Vec<String> = settings
        .webhooks
        .iter()
        .map(|w| w.name.to_string())
        .collect();
    let give_up = u64::try_from(settings.give_up_after.as_millis()).unwrap_or(u64::MAX);
    let before = Timestamp(now.0.saturating_sub(give_up));
    match on_queue(alerts, move |q| q.prune(keep, before)).await {
        Ok((unknown, expired)) => {
            if unknown > 0 {
                warn!(
                    dropped = unknown,
                    "alerts dropped: their webhook is no longer in the config"
                );
            }
            if expired > 0 {
                warn!(
                    dropped = expired,
                    "alerts dropped: undelivered for alerts.give_up_after"
                );
            }
            metrics.drop_reason("unknown_webhook", unknown);
            metrics.drop_reason("expired", expired);
        }
        Err(e) => {
            warn!(error = %e, "cannot read the alert outbox; retrying");
            return;
        }
    }
    let ready: Vec<&Webhook> = settings
        .webhooks
        .iter()
        .filter(|w| blocked.get(&w.name).is_none_or(|until| *until <= now))
        .collect();
    let results = futures_util::future::join_all(
        ready
            .iter()
            .map(|w| drain(alerts, client, w, settings, now)),
    )
    .await;
    for (w, until) in ready.iter().zip(results) {
        match until {
            Some(t) => blocked.insert(w.name.clone(), t),
            None => blocked.remove(&w.name),
        };
    }
    if let Ok((len, dropped)) = on_queue(alerts, |q| Ok((q.len()?, q.dropped()))).await {
        metrics.pending.set(i64::try_from(len).unwrap_or(i64::MAX));
        metrics.drop_reason("full", counted.new_since(dropped));
    }
}

/// Delivers `hook`'s due messages in order, stopping at the first failure: then, until
/// when the webhook is left alone.
async fn drain(
    alerts: &Arc<Alerts>,
    client: &reqwest::Client,
    hook: &Webhook,
    settings: &Settings,
    now: Timestamp,
) -> Option<Timestamp> {
    let metrics = &alerts.metrics.alerts;
    let name = hook.name.to_string();
    let rows = match on_queue(alerts, move |q| q.due(now, &name, BATCH)).await {
        Ok(rows) => rows,
        Err(e) => {
            warn!(webhook = %hook.name, error = %e, "cannot read the alert outbox; retrying");
            return None;
        }
    };
    let label = WebhookLabel {
        webhook: hook.name.clone(),
    };
    for row in rows {
        let id = row.id;
        match send(client, hook, &row, now, settings.timeout).await {
            Ok(()) => {
                info!(webhook = %hook.name, event = %row.event, attempts = row.attempts + 1, "alert delivered");
                metrics.delivered.get_or_create(&label).inc();
                let _ = on_queue(alerts, move |q| q.remove(id)).await;
            }
            Err(why) => {
                let delay = backoff(settings, &row);
                warn!(webhook = %hook.name, event = %row.event, attempt = row.attempts + 1, error = %why, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "alert delivery failed; retrying later");
                metrics.failed.get_or_create(&label).inc();
                let next = now.plus(delay);
                let _ = on_queue(alerts, move |q| q.retry_at(id, next)).await;
                return Some(next);
            }
        }
    }
    None
}

/// The delay before the next attempt at `row`: exponential from `retry_min`, doubling, at
/// most `retry_max`, with jitter so many messages do not retry in step.
fn backoff(settings: &Settings, row: &OutboxRow) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(settings.retry_min)
        .with_max_delay(settings.retry_max)
        .with_factor(2.0)
        .with_jitter_seed(row.id.unsigned_abs() ^ u64::from(row.attempts))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(row.attempts as usize)
        .unwrap_or(settings.retry_max)
        .min(settings.retry_max)
}

/// POSTs one message. Errors never name the URL (it may be a secret).
async fn send(
    client: &reqwest::Client,
    hook: &Webhook,
    row: &OutboxRow,
    now: Timestamp,
    timeout: Duration,
) -> Result<(), String> {
    let mut req = client
        .post(hook.url.expose())
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("user-agent", concat!("keyward/", env!("CARGO_PKG_VERSION")))
        .header("x-keyward-event", &row.event)
        .header("x-keyward-delivery", delivery_id(row));
    if let Some(secret) = &hook.secret {
        let ts = (now.0 / 1000).to_string();
        req = req
            .header("x-keyward-timestamp", &ts)
            .header("x-keyward-signature", sign(secret.expose(), &ts, &row.body));
    }
    match req.body(row.body.clone()).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("the webhook answered HTTP {}", r.status().as_u16())),
        Err(e) => Err(e.without_url().to_string()),
    }
}

/// `sha256=` and the hex HMAC-SHA256, keyed with `secret`, of `"{timestamp}.{body}"`.
pub(crate) fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.as_bytes());
    ctx.update(b".");
    ctx.update(body.as_bytes());
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The same for every attempt at one message: receivers de-duplicate with it.
fn delivery_id(row: &OutboxRow) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(row.destination.as_bytes());
    ctx.update(b"\n");
    ctx.update(row.body.as_bytes());
    ctx.finish()
        .as_ref()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

    /// A receiver on 127.0.0.1 answering `status`, counting requests per path.
    async fn receiver(status: Arc<AtomicU16>, hits: Arc<[AtomicUsize; 2]>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (s1, h1) = (status.clone(), hits.clone());
        let app = axum::Router::new()
            .route(
                "/down",
                axum::routing::post(move || {
                    let (s, h) = (s1.clone(), h1.clone());
                    async move {
                        h[0].fetch_add(1, Ordering::SeqCst);
                        axum::http::StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap()
                    }
                }),
            )
            .route(
                "/up",
                axum::routing::post(move || {
                    let h = hits.clone();
                    async move {
                        h[1].fetch_add(1, Ordering::SeqCst);
                        axum::http::StatusCode::OK
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    #[tokio::test]
    async fn a_webhook_that_is_down_gets_one_attempt_per_backoff_step_and_holds_up_no_other() {
        let status = Arc::new(AtomicU16::new(503));
        let hits = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let port = receiver(status.clone(), hits.clone()).await;
        let text = format!(
            "[[gateway_keys]]\nname = \"k\"\nkey = \"env:GW\"\n[alerts]\nretry_min = \"10s\"\nretry_max = \"10s\"\n[[alerts.webhooks]]\nname = \"down\"\nurl = \"http://127.0.0.1:{port}/down\"\n[[alerts.webhooks]]\nname = \"up\"\nurl = \"http://127.0.0.1:{port}/up\"\n"
        );
        let cfg = crate::config::Config::parse(&text, std::path::Path::new("."), &|_| {
            Some("gateway-key-0123456789".into())
        })
        .unwrap();
        let metrics = Arc::new(crate::gateway::metrics::Metrics::new());
        let alerts = Alerts::new(Queue::memory(), metrics);
        alerts.configure(&cfg, crate::gateway::caller_bound::SecretMask::default());
        let t0 = Timestamp(1_764_000_000_000);
        for _ in 0..5 {
            let entries = alerts
                .rules
                .entries_of(&super::super::payload::oauth_refresh_failed(
                    "c",
                    "token endpoint 503",
                    false,
                    t0,
                ));
            alerts.push(entries, t0);
        }
        let client = reqwest::Client::new();
        let counted = Counted::default();
        let mut blocked = Blocked::new();
        let down = || hits[0].load(Ordering::SeqCst);
        let up = || hits[1].load(Ordering::SeqCst);
        // First pass: one attempt at the webhook that is down; the other gets all five.
        pass(&alerts, &client, &counted, &mut blocked, t0).await;
        assert_eq!((down(), up()), (1, 5));
        // Within the backoff: nothing more, though four more messages wait for it.
        pass(
            &alerts,
            &client,
            &counted,
            &mut blocked,
            t0.plus(Duration::from_secs(5)),
        )
        .await;
        assert_eq!(down(), 1);
        // The backoff over (10 s, jitter up to as much again): one attempt more.
        let later = t0.plus(Duration::from_secs(21));
        pass(&alerts, &client, &counted, &mut blocked, later).await;
        assert_eq!(down(), 2);
        // It answers again: everything waiting goes at the next step.
        status.store(200, Ordering::SeqCst);
        pass(
            &alerts,
            &client,
            &counted,
            &mut blocked,
            later.plus(Duration::from_secs(21)),
        )
        .await;
        assert_eq!(down(), 2 + 5);
        assert_eq!(alerts.queue.len().unwrap(), 0);
    }

    #[test]
    fn the_signature_is_the_documented_hmac() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'whsec-test' -hex
        assert_eq!(
            sign("whsec-test", "1700000000", "{\"a\":1}"),
            "sha256=fed7a1a6c799a6367d73724d76bc70c16678908a32a879cd1ded6565ac05cece"
        );
    }

    #[test]
    fn retries_back_off_exponentially_within_the_bounds() {
        let settings = Settings {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            ..Settings::default()
        };
        let row = |attempts| OutboxRow {
            id: 7,
            destination: "ops".into(),
            event: "credential.disabled".into(),
            body: "{}".into(),
            created: Timestamp(0),
            attempts,
        };
        let first = backoff(&settings, &row(0));
        assert!(
            first >= Duration::from_secs(1) && first <= Duration::from_secs(2),
            "{first:?}"
        );
        let fourth = backoff(&settings, &row(3));
        assert!(fourth >= Duration::from_secs(8), "{fourth:?}");
        assert_eq!(backoff(&settings, &row(40)), Duration::from_secs(60));
    }
}
