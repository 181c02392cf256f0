#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// End-to-end tests may assert generous wall-clock bounds (the real binary keeps real time).
#![allow(clippy::disallowed_methods)]
//! Health under real mixed traffic (issue 15): the real `keyward serve` binary on 127.0.0.1
//! port 0 against `keyward-sim`, several routes over two Anthropic endpoints (two servers
//! of one sim: distinct base URLs) and an OpenAI one, keys revoked while concurrent callers
//! stream and not; a whole endpoint revoked at once; an auth outage that heals; the
//! official SDKs; and the access log and metrics of a gateway-built error.
//!
//! Policy times are low (`auth_confirm_delay` 1 s, `incident_cooldown` 1 s, `incident_max`
//! 4 s) so the whole binary runs in well under two minutes. Waits are bounded polls of a
//! condition, never sleeps standing in for synchronisation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_sim::{Attempt, Behaviour};
use serde_json::Value;

use crate::support::*;

/// Concurrent callers in the mixed-traffic test.
const CALLERS: usize = 12;
/// Requests each caller sends (CALLERS × this in all).
const PER_CALLER: usize = 30;

/// Anthropic's wording of a revoked key as a 403.
fn revoked_403() -> Behaviour {
    Behaviour::Rejected {
        status: 403,
        error_type: "permission_error".into(),
        message: "Your API key has been revoked.".into(),
        code: None,
    }
}

/// `GET path` on the admin API as JSON.
async fn admin_get(h: &Harness, path: &str) -> Value {
    let (status, text) = h.get_text(path, Some(ADMIN_TOKEN)).await;
    h.check_no_secret(&text);
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
}

/// Every credential's health as the admin API reports it: id → its `health` object.
async fn healths(h: &Harness) -> (Vec<(String, Value)>, Value) {
    let v = admin_get(h, "/admin/credentials").await;
    let list = v["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_owned(), c["health"].clone()))
        .collect();
    (list, v)
}

/// Polls (bounded, `secs`) until `f` holds on the admin API's credential list.
async fn until_admin(h: &Harness, what: &str, secs: u64, f: impl Fn(&[(String, Value)]) -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let (list, raw) = healths(h).await;
        if f(&list) {
            return;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}: {raw}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state(list: &[(String, Value)], id: &str) -> String {
    list.iter()
        .find(|(c, _)| c == id)
        .map(|(_, h)| h["state"].as_str().unwrap_or("?").to_owned())
        .unwrap_or_else(|| panic!("{id} not listed"))
}

/// Upstream inference requests (not probes) a key got that were not answered normally.
fn failed_requests(attempts: &[Attempt]) -> usize {
    attempts
        .iter()
        .filter(|a| !a.probe && a.outcome != "ok")
        .count()
}

fn probes(attempts: &[Attempt]) -> usize {
    attempts.iter().filter(|a| a.probe).count()
}

/// Whether a 200 answer is complete: the terminal event of a stream, the stop reason of a
/// whole answer, in the caller's API.
fn complete(chat: bool, stream: bool, body: &str) -> bool {
    match (chat, stream) {
        (false, true) => body.contains("event: message_stop"),
        (false, false) => body.contains("\"stop_reason\":\"end_turn\""),
        (true, true) => {
            body.contains("\"finish_reason\":\"stop\"") && body.contains("data: [DONE]")
        }
        (true, false) => body.contains("\"finish_reason\":\"stop\""),
    }
}

// ---------------------------------------------------------------------------------------
// 1. Mixed traffic, three keys revoked across routes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_revocations_under_mixed_traffic_cost_callers_nothing_and_disable_only_the_dead_keys()
{
    // Endpoint `anth-a`: five keys over two routes (a3 in both); `anth-b`: the same
    // provider kind at another base URL; `openai`: another API, one key in two routes.
    let h = Arc::new(
        start_policy(
            "mixed",
            &[
                ("anth-a", "anthropic", ""),
                ("anth-b", "anthropic", "@2"),
                ("openai", "openai", "/v1"),
            ],
            &[
                Cred::new("a1", "sk-ant-mix-a1-0001").on("anth-a"),
                Cred::new("a2", "sk-ant-mix-a2-0002").on("anth-a"),
                Cred::new("a3", "sk-ant-mix-a3-0003").on("anth-a"),
                Cred::new("a4", "sk-ant-mix-a4-0004").on("anth-a"),
                Cred::new("a5", "sk-ant-mix-a5-0005").on("anth-a"),
                Cred::new("b1", "sk-ant-mix-b1-0006").on("anth-b"),
                Cred::new("b2", "sk-ant-mix-b2-0007").on("anth-b"),
                Cred::new("o1", "sk-proj-mix-o1-0008").on("openai"),
                Cred::new("o2", "sk-proj-mix-o2-0009").on("openai"),
                Cred::new("o3", "sk-proj-mix-o3-0010").on("openai"),
            ],
            &[
                route("claude-1", "anth-a", "claude-x", &["a1", "a2", "a3"]),
                route("claude-2", "anth-a", "claude-y", &["a3", "a4", "a5"]),
                route("claude-b", "anth-b", "claude-x", &["b1", "b2"]),
                route("gpt", "openai", "gpt-4o", &["o1", "o2"]),
                route("gpt-mini", "openai", "gpt-4o-mini", &["o2", "o3"]),
            ]
            .concat(),
            "auth_confirm_delay = \"1s\"\nincident_cooldown = \"1s\"\n",
            "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
        )
        .await,
    );
    // (route, Chat Completions?)
    const ROUTES: [(&str, bool); 5] = [
        ("claude-1", false),
        ("claude-2", false),
        ("claude-b", false),
        ("gpt", true),
        ("gpt-mini", true),
    ];
    // The three dead keys, all on `anth-a`, across both of its routes: a 403, a 401, a 403.
    let dead: [(&str, &str, Behaviour); 3] = [
        ("a2", "sk-ant-mix-a2-0002", revoked_403()),
        ("a4", "sk-ant-mix-a4-0004", Behaviour::Revoked),
        ("a3", "sk-ant-mix-a3-0003", revoked_403()),
    ];
    let served = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..CALLERS {
        let (h, served, errors) = (h.clone(), served.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_CALLER {
                let (name, chat) = ROUTES[(w + i) % ROUTES.len()];
                let stream = (w + i / ROUTES.len()).is_multiple_of(2);
                // Each request its own conversation, as many agents' traffic is (one
                // conversation stays on one credential while it is usable).
                let text = format!("caller {w} request {i}");
                let r = if chat {
                    h.chat_about(name, stream, &text).await
                } else {
                    h.messages_about(name, stream, &text).await
                };
                if r.status != 200 || !complete(chat, stream, &r.body) {
                    let mut b = r.body.clone();
                    b.truncate(400);
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("{name} stream={stream}: {} {b}", r.status));
                }
                served.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Revoke the three keys while traffic runs: after 60, 100 and 140 answered requests
    // (within about a second of each other on this machine, well within incident_window).
    let total = CALLERS * PER_CALLER;
    for ((_, secret, behaviour), after) in dead.iter().zip([60, 100, 140]) {
        let until = Instant::now() + Duration::from_secs(60);
        while served.load(Ordering::SeqCst) < after {
            assert!(Instant::now() < until, "traffic stalled at {served:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        h.sim.set(secret, behaviour.clone());
    }
    let revoked_at = served.load(Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} of {total} callers saw an error (the last revocation at request {revoked_at}); first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // After the confirmation delay: exactly the dead keys disabled, with class and
    // evidence; every other key healthy; no incident and nothing else out of rotation.
    until_admin(&h, "the three dead keys disabled", 15, |l| {
        dead.iter().all(|(id, _, _)| state(l, id) == "disabled")
    })
    .await;
    let (list, raw) = healths(&h).await;
    for (id, health) in &list {
        if let Some((_, _, b)) = dead.iter().find(|(d, _, _)| d == id) {
            assert_eq!(health["class"], "auth_permanent", "{id}: {health}");
            let evidence = health["evidence"].as_str().unwrap_or("");
            let status = if *b == Behaviour::Revoked {
                "401"
            } else {
                "403"
            };
            assert!(evidence.contains(status), "{id}: evidence {evidence:?}");
        } else {
            assert_eq!(health["state"], "healthy", "{id} should be healthy: {raw}");
        }
    }
    assert_eq!(
        raw["other_scopes"].as_array().map(Vec::len),
        Some(0),
        "no incident, no endpoint out of rotation: {raw}"
    );
    assert_eq!(
        raw.get("incidents")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
        0,
        "no auth incident: {raw}"
    );
    // Each dead key cost what was in flight on it when it first failed (at most one per
    // caller) plus its one confirmation probe; never a stream of retries.
    for (id, secret, _) in &dead {
        let a = h.sim.attempts(secret);
        let failed = failed_requests(&a);
        eprintln!(
            "mixed: {id}: {failed} failed upstream requests, {} probe(s); {total} callers, 0 errors",
            probes(&a)
        );
        assert!(
            (1..=CALLERS).contains(&failed) && probes(&a) == 1,
            "{id}: {failed} failed requests (≤ {CALLERS} in flight) and {} probes (1): {a:?}",
            probes(&a)
        );
    }
    h.check_no_secret(&h.logs());
}

// ---------------------------------------------------------------------------------------
// 2. Every key of an endpoint revoked at once

/// The whole-endpoint policy: incidents end or resolve within seconds.
const INCIDENT_POLICY: &str = "auth_confirm_delay = \"1s\"\nincident_cooldown = \"1s\"\nincident_max = \"4s\"\nincident_recheck = \"1h\"\n";

/// The error's message, in the caller's own format (Anthropic or OpenAI).
fn message_of(chat: bool, r: &Reply) -> String {
    let v = r.json();
    if chat {
        assert!(v.get("type").is_none(), "an OpenAI-shaped error: {v}");
    } else {
        assert_eq!(v["type"], "error", "an Anthropic-shaped error: {v}");
    }
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message: {v}"))
        .to_owned()
}

/// Whether `text` says `phrase` about endpoint `ep` (any case; the id plain or quoted in
/// backticks).
fn names_endpoint(text: &str, phrase: &str, ep: &str) -> bool {
    let text = text.to_lowercase();
    text.contains(&format!("{phrase} {ep}")) || text.contains(&format!("{phrase} `{ep}`"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_an_endpoint_revoked_is_an_incident_then_disabled_with_a_final_error() {
    let keys = [
        (
            "anthropic",
            false,
            [
                ("r1", "sk-ant-all-r1-0001"),
                ("r2", "sk-ant-all-r2-0002"),
                ("r3", "sk-ant-all-r3-0003"),
            ],
            "claude",
        ),
        (
            "openai",
            true,
            [
                ("s1", "sk-proj-all-s1-0004"),
                ("s2", "sk-proj-all-s2-0005"),
                ("s3", "sk-proj-all-s3-0006"),
            ],
            "gpt",
        ),
    ];
    let creds: Vec<Cred<'_>> = keys
        .iter()
        .flat_map(|(ep, _, ks, _)| ks.iter().map(move |(id, s)| Cred::new(id, s).on(ep)))
        .collect();
    let h = start_policy(
        "whole-endpoint",
        &[("anthropic", "anthropic", ""), ("openai", "openai", "/v1")],
        &creds,
        &[
            route("claude", "anthropic", "claude-x", &["r1", "r2", "r3"]),
            route("gpt", "openai", "gpt-4o", &["s1", "s2", "s3"]),
        ]
        .concat(),
        INCIDENT_POLICY,
        "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
    )
    .await;
    for (_, _, ks, _) in &keys {
        for (_, secret) in ks {
            h.sim.set(secret, Behaviour::Revoked);
        }
    }
    let first_failure = Instant::now();
    let ask = |chat: bool, model: &'static str| {
        let h = &h;
        async move {
            if chat {
                h.chat(model, false).await
            } else {
                h.messages(model, false).await
            }
        }
    };
    // From the first failure on, until incident_max: an auth incident, nothing disabled,
    // retryable with an honest retry-after; then the final, non-retryable error.
    let mut incident_seen = [false; 2];
    let mut final_at = [None::<Duration>; 2];
    let until = Instant::now() + Duration::from_secs(20);
    while final_at.iter().any(Option::is_none) {
        assert!(
            Instant::now() < until,
            "no final error within 20 s: {final_at:?}"
        );
        for (n, (ep, chat, ks, model)) in keys.iter().enumerate() {
            if final_at[n].is_some() {
                continue;
            }
            let r = ask(*chat, model).await;
            assert_eq!(r.status, 503, "{ep}: {}", r.body);
            let msg = message_of(*chat, &r);
            for (id, _) in ks {
                assert!(msg.contains(id), "{ep}: {id} not named in {msg}");
            }
            assert!(msg.contains("401"), "{ep}: the evidence (401) in {msg}");
            if r.header("x-should-retry") == "false" {
                // Final: past incident_max, every key disabled with its evidence.
                assert_eq!(
                    r.header("retry-after"),
                    "",
                    "{ep}: no retry-after on a final error"
                );
                assert!(msg.contains("disabled"), "{ep}: {msg}");
                final_at[n] = Some(first_failure.elapsed());
            } else if msg.contains("outlasted its bound") {
                // The moment past incident_max while each key gets its last probe:
                // retryable, briefly (the probes answer within a second here).
                assert_eq!(r.header("x-should-retry"), "true", "{ep}: {msg}");
            } else {
                if !incident_seen[n] {
                    // The admin view shows the incident on this endpoint, with its keys.
                    let (_, raw) = healths(&h).await;
                    let incident = raw["incidents"]
                        .as_array()
                        .and_then(|l| l.iter().find(|i| i["endpoint"] == *ep))
                        .unwrap_or_else(|| panic!("{ep}: no incident listed: {raw}"));
                    for (id, _) in ks {
                        assert!(
                            incident["credentials"].to_string().contains(id),
                            "{ep}: {id} not in {incident}"
                        );
                    }
                }
                incident_seen[n] = true;
                assert_eq!(r.header("x-should-retry"), "true", "{ep}: {msg}");
                let ra: u64 = r.header("retry-after").parse().unwrap_or_else(|_| {
                    panic!(
                        "{ep}: an honest retry-after during the incident: {:?}",
                        r.headers
                    )
                });
                assert!(
                    (1..=5).contains(&ra),
                    "{ep}: retry-after {ra} s (incident_cooldown 1 s, incident_max 4 s)"
                );
                assert!(
                    names_endpoint(&msg, "auth incident on endpoint", ep)
                        && msg.contains("nothing disabled"),
                    "{ep}: {msg}"
                );
                assert!(msg.contains("suspect"), "{ep}: the keys' state in {msg}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("whole endpoint: final (not retryable) error after {final_at:?}");
    assert_eq!(
        incident_seen,
        [true, true],
        "an incident before the disable"
    );
    for (n, (ep, ..)) in keys.iter().enumerate() {
        let at = final_at[n].unwrap();
        assert!(
            at >= Duration::from_millis(3500),
            "{ep}: disabled after {at:?}, before incident_max (4 s)"
        );
    }
    // The admin view: every key disabled, its evidence saying why.
    let (list, raw) = healths(&h).await;
    for (ep, _, ks, _) in &keys {
        for (id, _) in ks {
            assert_eq!(state(&list, id), "disabled", "{raw}");
            let health = &list.iter().find(|(c, _)| c == id).unwrap().1;
            let evidence = health["evidence"].as_str().unwrap_or("");
            assert!(
                names_endpoint(evidence, "every key of endpoint", ep),
                "{id}: evidence {evidence:?}"
            );
        }
    }
    // Bounded upstream: one request per key from the first caller, then one incident
    // check (a probe or a trial request) per incident_cooldown while it lasts
    // (≤ 4 s / 1 s, + 2 for the edges).
    let mut upstream = Vec::new();
    for (ep, _, ks, _) in &keys {
        let calls: usize = ks.iter().map(|(_, s)| h.sim.attempts(s).len()).sum();
        assert!(
            calls <= 3 + 6,
            "{ep}: {calls} upstream calls in all: {:?}",
            ks.map(|(_, s)| h.sim.attempts(s))
        );
        eprintln!("whole endpoint: {ep}: {calls} upstream calls");
        upstream.push(calls);
    }
    // Once final, nothing reaches the provider.
    for (_, chat, _, model) in &keys {
        for _ in 0..3 {
            let r = ask(*chat, model).await;
            assert_eq!(
                (r.status, r.header("x-should-retry")),
                (503, "false".into())
            );
        }
    }
    for ((ep, _, ks, _), before) in keys.iter().zip(upstream) {
        let calls: usize = ks.iter().map(|(_, s)| h.sim.attempts(s).len()).sum();
        assert_eq!(calls, before, "{ep}: upstream calls after the final error");
    }
}

// ---------------------------------------------------------------------------------------
// 3. A provider auth outage that heals

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_outage_that_heals_disables_nothing_and_traffic_resumes_within_the_cooldown() {
    let keys = [
        ("h1", "sk-ant-heal-h1-0001"),
        ("h2", "sk-ant-heal-h2-0002"),
        ("h3", "sk-ant-heal-h3-0003"),
    ];
    let creds: Vec<Cred<'_>> = keys.iter().map(|(id, s)| Cred::new(id, s)).collect();
    let h = start_policy(
        "heals",
        ANTHROPIC,
        &creds,
        &route("claude", "anthropic", "claude-x", &["h1", "h2", "h3"]),
        "auth_confirm_delay = \"1s\"\nincident_cooldown = \"1s\"\nincident_max = \"30s\"\n",
        "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
    )
    .await;
    assert_eq!(h.messages("claude", false).await.status, 200);
    // Every key of the endpoint gets a 401, for a while (shorter than incident_max).
    for (_, s) in &keys {
        h.sim.set(s, Behaviour::Revoked);
    }
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.header("x-should-retry"),
        "true",
        "an incident is retryable: {}",
        r.body
    );
    // The outage lasts until the gateway has checked the endpoint twice more (a probe or a
    // trial request; about two incident_cooldowns).
    let calls = || {
        keys.iter()
            .map(|(_, s)| h.sim.attempts(s).len())
            .sum::<usize>()
    };
    let at_outage = calls();
    let until = Instant::now() + Duration::from_secs(15);
    while calls() < at_outage + 2 {
        assert!(
            Instant::now() < until,
            "the endpoint not checked during the outage: {:?}",
            keys.map(|(_, s)| h.sim.attempts(s))
        );
        let r = h.messages("claude", true).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert_ne!(
            r.header("x-should-retry"),
            "false",
            "never final during an incident: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (list, raw) = healths(&h).await;
    assert!(list.iter().all(|(_, h)| h["state"] != "disabled"), "{raw}");
    // Heal: a 200 within incident_cooldown (1 s) + a margin.
    for (_, s) in &keys {
        h.sim.set(s, Behaviour::Ok);
    }
    let healed = Instant::now();
    loop {
        let r = h.messages("claude", false).await;
        if r.status == 200 {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_millis(2500),
            "traffic not back {:?} after the heal: {}",
            healed.elapsed(),
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("heal: traffic back {:?} after the heal", healed.elapsed());
    // Nothing was disabled, ever; every key back in rotation.
    until_admin(&h, "every key healthy", 10, |l| {
        l.iter().all(|(_, h)| h["state"] == "healthy")
    })
    .await;
    for (id, _) in &keys {
        let v = admin_get(&h, &format!("/admin/credentials/{id}/history")).await;
        assert!(
            !v.to_string().contains("\"disabled\""),
            "{id} was disabled during the outage: {v}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. The official SDKs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_stop_after_one_attempt_on_revoked_keys_and_retry_a_rate_limit() {
    let h = start_policy(
        "sdk-mixed",
        &[("anthropic", "anthropic", ""), ("openai", "openai", "/v1")],
        &[
            Cred::new("a-1", "sk-ant-sdkm-a1-0001"),
            Cred::new("a-2", "sk-ant-sdkm-a2-0002"),
            Cred::new("o-1", "sk-proj-sdkm-o1-0003").on("openai"),
            Cred::new("o-2", "sk-proj-sdkm-o2-0004").on("openai"),
            Cred::new("a-rl", "sk-ant-sdkm-rl-0005"),
            Cred::new("o-rl", "sk-proj-sdkm-rl-0006").on("openai"),
        ],
        &[
            route("claude", "anthropic", "claude-x", &["a-1", "a-2"]),
            route("gpt", "openai", "gpt-4o", &["o-1", "o-2"]),
            route("claude-rl", "anthropic", "claude-x", &["a-rl"]),
            route("gpt-rl", "openai", "gpt-4o", &["o-rl"]),
        ]
        .concat(),
        // The default confirmation delay: the SDKs meet the keys while they are suspect.
        "auth_confirm_delay = \"15s\"\nincident_cooldown = \"1s\"\n",
        "",
    )
    .await;
    // Every key of a route revoked (high-confidence invalid-key 401s), met first by the SDK.
    for s in [
        "sk-ant-sdkm-a1-0001",
        "sk-ant-sdkm-a2-0002",
        "sk-proj-sdkm-o1-0003",
        "sk-proj-sdkm-o2-0004",
    ] {
        h.sim.set(s, Behaviour::Revoked);
    }
    // Rate limited for 12 s: longer than the gateway waits itself (10 s), so the SDK
    // retries after its retry-after. Each key heals once the sim has rate-limited it once
    // (a condition, not a timer: the SDK's import alone can take seconds).
    for s in ["sk-ant-sdkm-rl-0005", "sk-proj-sdkm-rl-0006"] {
        h.sim.set(
            s,
            Behaviour::RateLimited {
                retry_after: Some(12),
            },
        );
        let sim = h.sim.clone();
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(60);
            while !sim.attempts(s).iter().any(|a| a.outcome == "rate_limited")
                && Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sim.set(s, Behaviour::Ok);
        });
    }
    let (a, o, ar, or) = tokio::join!(
        run_sdk(
            &h,
            "anthropic_revoked",
            &[("KEYWARD_MODEL", "claude"), ("KEYWARD_EXPECT", "a-1,a-2")]
        ),
        run_sdk(
            &h,
            "openai_revoked",
            &[("KEYWARD_MODEL", "gpt"), ("KEYWARD_EXPECT", "o-1,o-2")]
        ),
        run_sdk(&h, "anthropic_transient", &[("KEYWARD_MODEL", "claude-rl")]),
        run_sdk(&h, "openai_transient", &[("KEYWARD_MODEL", "gpt-rl")]),
    );
    for v in [&a, &o, &ar, &or] {
        eprintln!("sdk: {v}");
    }
    for v in [&a, &o] {
        assert_eq!(v["attempts"], 1, "one attempt, the SDK's retries on: {v}");
        assert!(v["seconds"].as_f64().unwrap() < 10.0, "{v}");
    }
    for s in [
        "sk-ant-sdkm-a1-0001",
        "sk-ant-sdkm-a2-0002",
        "sk-proj-sdkm-o1-0003",
        "sk-proj-sdkm-o2-0004",
    ] {
        assert_eq!(
            failed_requests(&h.sim.attempts(s)),
            1,
            "{s}: {:?}",
            h.sim.attempts(s)
        );
    }
    for (v, s) in [(&ar, "sk-ant-sdkm-rl-0005"), (&or, "sk-proj-sdkm-rl-0006")] {
        assert!(v["attempts"].as_u64().unwrap() >= 2, "{v}");
        let secs = v["seconds"].as_f64().unwrap();
        assert!(
            (10.0..40.0).contains(&secs),
            "retried after the retry-after: {v}"
        );
        let outcomes: Vec<_> = h
            .sim
            .attempts(s)
            .into_iter()
            .filter(|a| !a.probe)
            .map(|a| a.outcome)
            .collect();
        assert_eq!(
            outcomes.first().map(String::as_str),
            Some("rate_limited"),
            "{s}: {outcomes:?}"
        );
        assert_eq!(
            outcomes.last().map(String::as_str),
            Some("ok"),
            "{s}: {outcomes:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 5. The access log and metrics of a gateway-built error

/// `keyward_attempts_per_request` `_count` and `_sum` for `route` from a scrape.
fn attempts_metric(text: &str, route: &str) -> (f64, f64) {
    let get = |suffix: &str| {
        let prefix = format!("keyward_attempts_per_request_{suffix}{{route=\"{route}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    (get("count"), get("sum"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_built_error_after_attempts_is_logged_and_counted_with_them() {
    let h = start(
        "error-log",
        ANTHROPIC,
        &[
            Cred::new("k1", "sk-ant-elog-k1-0001"),
            Cred::new("k2", "sk-ant-elog-k2-0002"),
        ],
        &route("claude", "anthropic", "claude-x", &["k1", "k2"]),
        "",
    )
    .await;
    let (_, before) = h.get_text("/metrics", None).await;
    let (count0, sum0) = attempts_metric(&before, "claude");
    h.sim.set("sk-ant-elog-k1-0001", Behaviour::Revoked);
    h.sim.set("sk-ant-elog-k2-0002", Behaviour::Revoked);
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let attempts = ["sk-ant-elog-k1-0001", "sk-ant-elog-k2-0002"]
        .iter()
        .map(|s| h.sim.attempts(s).iter().filter(|a| !a.probe).count())
        .sum::<usize>();
    assert_eq!(attempts, 2, "both keys tried upstream");
    let id = r.header("x-keyward-request-id");
    assert!(!id.is_empty(), "{:?}", r.headers);
    h.eventually("the access log line", || {
        h.logs()
            .lines()
            .any(|l| l.contains(&id) && l.contains("request answered"))
    })
    .await;
    let logs = h.logs();
    let line = logs
        .lines()
        .find(|l| l.contains(&id) && l.contains("request answered"))
        .unwrap();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let fields = &v["fields"];
    assert_eq!(fields["status"], 503, "{line}");
    let logged = fields["attempts"]
        .as_str()
        .map(|s| s.to_owned())
        .unwrap_or_else(|| fields["attempts"].to_string());
    assert_eq!(logged, "2", "the real attempt count: {line}");
    let cred = fields["credential"].as_str().unwrap_or("");
    assert!(
        cred.contains("k1") || cred.contains("k2"),
        "the credential tried: {line}"
    );
    let (_, after) = h.get_text("/metrics", None).await;
    let (count1, sum1) = attempts_metric(&after, "claude");
    assert_eq!(
        (count1 - count0, sum1 - sum0),
        (1.0, 2.0),
        "keyward_attempts_per_request counts the error with its 2 attempts:\n{}",
        after
            .lines()
            .filter(|l| l.contains("attempts_per_request"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
