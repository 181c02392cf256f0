//! Alerts end to end: the real gateway, a revoked key in the simulator, and a webhook
//! receiver in the test on 127.0.0.1. One signed `credential.disabled` per disable, its
//! HMAC verifies, no secret in it; a receiver that fails is retried; a message queued
//! while the receiver is down survives a gateway restart (the state file's outbox).

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use keyward_sim::Behaviour;
use serde_json::Value;

use crate::support::*;

const A: &str = "sk-ant-alerts-a-0001";
const B: &str = "sk-ant-alerts-b-0002";
const HOOK_SECRET: &str = "whsec-alerts-test-5d1e";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    headers: HeaderMap,
    body: String,
}

/// A webhook receiver: records every request, answers with `status`.
struct Receiver {
    hits: Mutex<Vec<Hit>>,
    status: AtomicU16,
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

/// Serves a receiver on `listener`.
fn serve_receiver(listener: tokio::net::TcpListener) -> Arc<Receiver> {
    let rx = Arc::new(Receiver {
        hits: Mutex::new(Vec::new()),
        status: AtomicU16::new(200),
    });
    let state = rx.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                state.hits.lock().unwrap().push(Hit {
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    rx
}

/// The config lines for one JSON webhook on `port`, signed with the secret in
/// `hook.secret` (written by [`write_secret`]), retried quickly.
fn alerts_toml(port: u16) -> String {
    alerts_toml_for(port, "\"credential.disabled\", \"credential.recovered\"")
}

/// [`alerts_toml`] for the events listed (quoted, comma-separated).
fn alerts_toml_for(port: u16, events: &str) -> String {
    format!(
        "\n[admin]\ntoken = \"env:KW_ADMIN\"\n\n[alerts]\nretry_min = \"100ms\"\nretry_max = \"400ms\"\n\n[[alerts.webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"file:hook.secret\"\nevents = [{events}]\n"
    )
}

fn write_secret(cfg: &std::path::Path) {
    std::fs::write(cfg.parent().unwrap().join("hook.secret"), HOOK_SECRET).unwrap();
}

/// What a receiver does: recompute the HMAC over "{timestamp}.{body}" and compare.
fn verify(hit: &Hit) {
    let ts = hit.headers["x-keyward-timestamp"].to_str().unwrap();
    let sig = hit.headers["x-keyward-signature"].to_str().unwrap();
    let hex = sig.strip_prefix("sha256=").expect("sha256= prefix");
    let tag: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HOOK_SECRET.as_bytes());
    ring::hmac::verify(&key, format!("{ts}.{}", hit.body).as_bytes(), &tag)
        .expect("the signature verifies with the shared secret");
    // A tampered body does not.
    assert!(ring::hmac::verify(&key, format!("{ts}.{} ", hit.body).as_bytes(), &tag).is_err());
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .abs_diff(ts.parse::<u64>().unwrap());
    assert!(age < 300, "timestamp {ts} is {age} s off");
}

fn no_secret(h: &Harness, hit: &Hit) {
    let all = format!("{:?}\n{}", hit.headers, hit.body);
    h.check_no_secret(&all);
    for s in [A, B, HOOK_SECRET, ADMIN_TOKEN, GATEWAY_KEY] {
        assert!(!all.contains(s), "a secret reached the webhook: {all}");
    }
}

/// `keyward_alerts_<name>`'s total over its label sets, from `/metrics`.
async fn metric(h: &Harness, name: &str) -> f64 {
    let (status, text) = h.get_text("/metrics", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    h.check_no_secret(&text);
    text.lines()
        .filter(|l| {
            l.starts_with(&format!("keyward_alerts_{name}"))
                && l[format!("keyward_alerts_{name}").len()..].starts_with(['{', ' ', '_'])
                && !l.contains("_created")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls (bounded) until `f` holds.
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn disabled_hits(rx: &Receiver) -> Vec<Hit> {
    rx.hits()
        .into_iter()
        .filter(|h| h.headers["x-keyward-event"] == "credential.disabled")
        .collect()
}

/// A gateway over keys `a` (preferred) and `b` on one route, with the alerts in `alerts`
/// and the webhook secret written beside its config.
async fn start_two_keys(name: &str, alerts: &str) -> Harness {
    start_prepared(
        name,
        ANTHROPIC,
        &[Cred::new("a", A).with("priority = 10"), Cred::new("b", B)],
        &route("claude", "anthropic", "claude-x", &["a", "b"]),
        alerts,
        "full",
        |_, cfg, _| write_secret(cfg),
    )
    .await
}

async fn revoke_a(h: &Harness) {
    h.sim.set(A, Behaviour::Revoked);
    assert_eq!(h.messages("claude", false).await.status, 200);
    h.eventually("a disabled", || h.state_of("credential/a") == "disabled")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_sends_one_signed_alert_and_a_reset_another() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx = serve_receiver(listener);
    // And a Slack webhook for disables only (unsigned), to the same receiver.
    let slack = format!(
        "{}\n[[alerts.webhooks]]\nname = \"chat\"\nurl = \"http://127.0.0.1:{port}/hook?slack\"\nformat = \"slack\"\nevents = [\"credential.disabled\"]\n",
        alerts_toml(port)
    );
    let h = start_two_keys("alerts-signed", &slack).await;
    revoke_a(&h).await;
    until("the disable's alerts", || async {
        disabled_hits(&rx).len() >= 2
    })
    .await;
    until("the outbox drained", || async {
        metric(&h, "delivered").await >= 2.0 && metric(&h, "pending").await == 0.0
    })
    .await;
    let (slack, hits): (Vec<Hit>, Vec<Hit>) = disabled_hits(&rx)
        .into_iter()
        .partition(|h| h.body.contains("\"blocks\""));
    assert_eq!(hits.len(), 1, "exactly one JSON delivery: {hits:?}");
    assert_eq!(slack.len(), 1, "exactly one Slack delivery: {slack:?}");
    no_secret(&h, &slack[0]);
    assert!(
        !slack[0].headers.contains_key("x-keyward-signature"),
        "no secret, no signature"
    );
    let s: Value = serde_json::from_str(&slack[0].body).unwrap();
    assert!(
        s["text"]
            .as_str()
            .unwrap()
            .contains("credential `a` disabled"),
        "{s}"
    );
    let hit = &hits[0];
    verify(hit);
    no_secret(&h, hit);
    assert_eq!(hit.headers["content-type"], "application/json");
    assert!(!hit.headers["x-keyward-delivery"].is_empty());
    let v: Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(v["type"], "credential.disabled", "{v}");
    assert_eq!(v["credential"], "a", "{v}");
    assert_eq!(v["class"], "auth_permanent", "{v}");
    assert_eq!(v["provider"], "anthropic", "{v}");
    assert_eq!(v["fingerprint"].as_str().unwrap().len(), 12, "{v}");
    assert!(v["evidence"].as_str().unwrap().contains("401"), "{v}");
    assert!(
        v["remedy"].as_str().unwrap().contains("keyward reset a"),
        "{v}"
    );
    assert!(v["at"].as_str().unwrap().ends_with('Z'), "{v}");

    // The admin API names the webhooks, never their URLs or secrets.
    let (status, text) = h.get_text("/admin/config", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    let cfg: Value = serde_json::from_str(&text).unwrap();
    let hooks = &cfg["alerts"]["webhooks"];
    assert_eq!(
        (hooks[0]["name"].as_str(), hooks[0]["signed"].as_bool()),
        (Some("ops"), Some(true)),
        "{cfg}"
    );
    assert_eq!(
        (hooks[1]["name"].as_str(), hooks[1]["format"].as_str()),
        (Some("chat"), Some("slack")),
        "{cfg}"
    );
    assert_eq!(cfg["alerts"]["durable"], true, "{cfg}");
    assert!(
        !text.contains(&format!("127.0.0.1:{port}")) && !text.contains(HOOK_SECRET),
        "{text}"
    );

    // An operator's reset: `credential.recovered`.
    let r = h
        .client
        .post(format!("{}/admin/credentials/a/reset", h.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    until("the recovery's alert", || async {
        rx.hits()
            .iter()
            .any(|h| h.headers["x-keyward-event"] == "credential.recovered")
    })
    .await;
    let rec = rx
        .hits()
        .into_iter()
        .find(|h| h.headers["x-keyward-event"] == "credential.recovered")
        .unwrap();
    verify(&rec);
    no_secret(&h, &rec);
    let v: Value = serde_json::from_str(&rec.body).unwrap();
    assert_eq!(
        (v["credential"].as_str(), v["actor"].as_str()),
        (Some("a"), Some("operator")),
        "{v}"
    );
    assert_eq!(
        disabled_hits(&rx).len(),
        2,
        "still one disable alert per webhook"
    );
    assert!(
        !rx.hits()
            .iter()
            .any(|h| h.body.contains("blocks")
                && h.headers["x-keyward-event"] == "credential.recovered"),
        "the Slack webhook takes only disables"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_alert_once_it_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx = serve_receiver(listener);
    rx.status.store(503, Ordering::SeqCst);
    let h = start_two_keys("alerts-retry", &alerts_toml(port)).await;
    revoke_a(&h).await;
    // Refused twice at least (retried with backoff), then accepted.
    until("two failed deliveries", || async {
        disabled_hits(&rx).len() >= 2
    })
    .await;
    assert!(metric(&h, "failed_deliveries").await >= 2.0);
    assert_eq!(metric(&h, "delivered").await, 0.0);
    rx.status.store(200, Ordering::SeqCst);
    until("the alert delivered", || async {
        metric(&h, "delivered").await == 1.0 && metric(&h, "pending").await == 0.0
    })
    .await;
    let hits = disabled_hits(&rx);
    // Every attempt carried the same message and delivery id, each signed afresh.
    for hit in &hits {
        verify(hit);
        no_secret(&h, hit);
        assert_eq!(hit.body, hits[0].body);
        assert_eq!(
            hit.headers["x-keyward-delivery"],
            hits[0].headers["x-keyward-delivery"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_queued_while_the_receiver_is_down_survives_a_restart() {
    // A port with nothing listening: connections are refused until the receiver starts.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut h = start_two_keys("alerts-durable", &alerts_toml(port)).await;
    revoke_a(&h).await;
    until("a failed delivery", || async {
        metric(&h, "failed_deliveries").await >= 1.0
    })
    .await;
    assert_eq!(metric(&h, "pending").await, 1.0);
    // SIGKILL: nothing is flushed on the way out.
    h.kill_and_restart(&[]);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let rx = serve_receiver(listener);
    until("the alert delivered after the restart", || async {
        !disabled_hits(&rx).is_empty()
    })
    .await;
    until("the outbox drained", || async {
        metric(&h, "pending").await == 0.0
    })
    .await;
    let hits = disabled_hits(&rx);
    assert_eq!(hits.len(), 1, "{hits:?}");
    verify(&hits[0]);
    no_secret(&h, &hits[0]);
    let v: Value = serde_json::from_str(&hits[0].body).unwrap();
    assert_eq!(v["credential"], "a");
}

fn hits_of(rx: &Receiver, event: &str) -> Vec<Value> {
    rx.hits()
        .into_iter()
        .filter(|h| h.headers["x-keyward-event"] == event)
        .map(|h| {
            verify(&h);
            serde_json::from_str(&h.body).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_incident_alerts_when_it_starts_and_when_it_ends() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx = serve_receiver(listener);
    let names = ["i-1", "i-2", "i-3", "i-4"];
    let secrets: Vec<String> = names
        .iter()
        .map(|id| format!("sk-ant-alert-incident-{id}"))
        .collect();
    let creds: Vec<Cred<'_>> = names
        .iter()
        .zip(&secrets)
        .map(|(id, s)| Cred::new(id, s))
        .collect();
    let h = start_prepared(
        "alerts-incident",
        ANTHROPIC,
        &creds,
        &route("claude", "anthropic", "claude-x", &names),
        &alerts_toml_for(
            port,
            "\"incident.started\", \"incident.ended\", \"credential.disabled\"",
        ),
        "full",
        |_, cfg, _| write_secret(cfg),
    )
    .await;
    h.sim.incident(true);
    for _ in 0..3 {
        let r = h.messages("claude", false).await;
        assert!(r.status >= 500, "{}", r.status);
    }
    until("incident.started", || async {
        !hits_of(&rx, "incident.started").is_empty()
    })
    .await;
    let started = &hits_of(&rx, "incident.started")[0];
    assert_eq!(started["endpoint"], "anthropic", "{started}");
    assert!(
        started["credentials"].as_array().unwrap().len() >= 2,
        "{started}"
    );
    assert!(
        started["remedy"]
            .as_str()
            .unwrap()
            .contains("nothing is disabled"),
        "{started}"
    );
    h.sim.incident(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while hits_of(&rx, "incident.ended").is_empty() {
        assert!(Instant::now() < deadline, "the incident never ended");
        let _ = h.messages("claude", false).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ended = &hits_of(&rx, "incident.ended")[0];
    assert_eq!(
        (ended["endpoint"].as_str(), ended["outcome"].as_str()),
        (Some("anthropic"), Some("healed")),
        "{ended}"
    );
    assert!(
        hits_of(&rx, "credential.disabled").is_empty(),
        "an incident disables nothing"
    );
    for hit in rx.hits() {
        no_secret(&h, &hit);
        for s in &secrets {
            assert!(!hit.body.contains(s.as_str()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_only_the_replica_that_disables_a_key_sends_its_alert() {
    let redis = keyward_sim::redis_server::RedisServer::start()
        .expect("redis-server (scripts/test.sh installs it)");
    let redis_url = redis.url();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx = serve_receiver(listener);
    let h = start_prepared(
        "alerts-fleet",
        ANTHROPIC,
        &[Cred::new("a", A).with("priority = 10"), Cred::new("b", B)],
        &route("claude", "anthropic", "claude-x", &["a", "b"]),
        &alerts_toml(port),
        "full",
        |_, cfg, _| {
            write_secret(cfg);
            let text = std::fs::read_to_string(cfg).unwrap().replace(
                "state = \"state.db\"",
                &format!("state = \"{redis_url}\"\n\n[fleet]\nprefix = \"alerts\"\ntimeout = \"300ms\"\n"),
            );
            std::fs::write(cfg, text).unwrap();
        },
    )
    .await;
    let (mut second, second_url) = spawn_gateway(&h.config, &h.env, &[], &h.logs);
    let state_on = |url: String| {
        let client = h.client.clone();
        async move {
            let r = client
                .get(format!("{url}/admin/credentials/a"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await;
            match r {
                Ok(r) => serde_json::from_str::<Value>(&r.text().await.unwrap_or_default())
                    .map_or("?".into(), |v| {
                        v["health"]["state"].as_str().unwrap_or("?").to_owned()
                    }),
                Err(_) => "?".into(),
            }
        }
    };
    until("the second replica ready", || async {
        state_on(second_url.clone()).await == "healthy"
    })
    .await;
    h.sim.set(A, Behaviour::Revoked);
    assert_eq!(h.messages("claude", false).await.status, 200);
    until("a disabled on both replicas", || async {
        state_on(h.url.clone()).await == "disabled"
            && state_on(second_url.clone()).await == "disabled"
    })
    .await;
    until("the alert delivered", || async {
        !disabled_hits(&rx).is_empty()
    })
    .await;
    // Both replicas know the disable now; only the one that performed it queued an alert.
    let sum_on = |url: String, name: &'static str| {
        let client = h.client.clone();
        async move {
            let text = client
                .get(format!("{url}/metrics"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    let fleet_sum = |name: &'static str| {
        let (one, two) = (h.url.clone(), second_url.clone());
        async move { sum_on(one, name).await + sum_on(two, name).await }
    };
    assert_eq!(
        fleet_sum("keyward_alerts_queued_total{").await,
        1.0,
        "one alert for the fleet"
    );
    until("the alert delivered", || async {
        fleet_sum("keyward_alerts_delivered_total{").await == 1.0
    })
    .await;
    let hits = disabled_hits(&rx);
    assert_eq!(hits.len(), 1, "{hits:?}");
    verify(&hits[0]);
    no_secret(&h, &hits[0]);
    let _ = second.kill();
    let _ = second.wait();
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_oauth_grant_alerts_with_the_log_in_again_remedy_and_no_token() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx = serve_receiver(listener);
    let h = start_prepared(
        "alerts-oauth",
        ANTHROPIC,
        &[Cred::new("claude-max", "").with(crate::oauth::CLAUDE)],
        &route("claude", "anthropic", "claude-x", &["claude-max"]),
        &alerts_toml_for(port, "\"oauth.refresh_failed\", \"credential.disabled\""),
        "full",
        |sim, cfg, env| {
            write_secret(cfg);
            crate::oauth::import(
                sim,
                cfg,
                env,
                "claude-max",
                "claude",
                Duration::from_secs(3600),
            );
        },
    )
    .await;
    assert_eq!(h.messages("claude", false).await.status, 200);
    h.sim.revoke_grant("claude");
    assert_eq!(h.messages("claude", false).await.status, 503);
    until("the refresh failure's and the disable's alerts", || async {
        !hits_of(&rx, "oauth.refresh_failed").is_empty()
            && !hits_of(&rx, "credential.disabled").is_empty()
    })
    .await;
    let failed = &hits_of(&rx, "oauth.refresh_failed")[0];
    assert_eq!(
        (failed["credential"].as_str(), failed["class"].as_str()),
        (Some("claude-max"), Some("auth_permanent")),
        "{failed}"
    );
    assert!(
        failed["evidence"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{failed}"
    );
    assert!(
        failed["remedy"]
            .as_str()
            .unwrap()
            .contains("keyward credentials import claude-max"),
        "{failed}"
    );
    for hit in rx.hits() {
        no_secret(&h, &hit);
        assert!(
            !hit.body.contains("sim-at-claude-") && !hit.body.contains("sim-rt-claude-"),
            "a token reached the webhook: {}",
            hit.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disable_written_to_the_state_file_while_the_gateway_is_down_alerts_when_it_starts() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx = serve_receiver(listener);
    let mut h = start_prepared(
        "alerts-offline",
        ANTHROPIC,
        &[Cred::new("a", A), Cred::new("b", B)],
        &route("claude", "anthropic", "claude-x", &["a", "b"]),
        &alerts_toml(port),
        "full",
        |_, cfg, _| write_secret(cfg),
    )
    .await;
    let _ = h.gateway.kill();
    let _ = h.gateway.wait();
    let (ok, text) = keyward_cli(
        &h.config,
        &h.env,
        &[
            "disable",
            "a",
            "--reason",
            "leaked in a CI log",
            "--admin-url",
            "http://127.0.0.1:9",
        ],
    );
    assert!(ok && text.contains("in the state file"), "{text}");
    assert!(
        rx.hits().is_empty(),
        "nothing is sent while the gateway is down"
    );
    h.kill_and_restart(&[]);
    until("the offline disable's alert", || async {
        !disabled_hits(&rx).is_empty()
    })
    .await;
    let v: Value = serde_json::from_str(&disabled_hits(&rx)[0].body).unwrap();
    assert_eq!(
        (v["credential"].as_str(), v["actor"].as_str()),
        (Some("a"), Some("operator")),
        "{v}"
    );
    assert!(
        v["evidence"]
            .as_str()
            .unwrap()
            .contains("leaked in a CI log"),
        "{v}"
    );
    verify(&disabled_hits(&rx)[0]);
}
