#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]
//! The admin API end to end: access control, the credential view, history, reset,
//! disable, reload and config status; never a secret.

mod common;

use common::*;
use keyward_sim::Behaviour;
use serde_json::{json, Value};

const A: &str = "sk-ant-admin-a-0001";
const B: &str = "sk-ant-admin-b-0002";

async fn admin(
    h: &Harness,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", h.url);
    let mut rb = match method {
        "POST" => h.client.post(url),
        _ => h.client.get(url),
    };
    if let Some(t) = token {
        rb = rb.header("authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        rb = rb
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = format!("{:?}", r.headers());
    let text = r.text().await.unwrap();
    h.check_no_secret(&format!("{headers}\n{text}"));
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

fn cred<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_shows_why_and_lets_an_operator_act() {
    let h = start(
        "admin",
        ANTHROPIC,
        &[
            Cred("a", A, "anthropic", "priority = 10"),
            Cred("b", B, "anthropic", ""),
        ],
        &route("claude", "anthropic", "claude-x", &["a", "b"]),
        "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
    )
    .await;
    // Access control.
    let (s, v) = admin(&h, "GET", "/admin/credentials", None, None).await;
    assert_eq!(s, 401, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("Bearer"));
    let (s, _) = admin(&h, "GET", "/admin/credentials", Some("wrong"), None).await;
    assert_eq!(s, 401);
    let (s, _) = admin(&h, "GET", "/admin/credentials", Some(GATEWAY_KEY), None).await;
    assert_eq!(s, 401, "a gateway key is not an admin token");

    // Every credential, healthy, by id and fingerprint.
    let (s, v) = admin(&h, "GET", "/admin/credentials", Some(ADMIN_TOKEN), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(cred(&v, "a")["health"]["state"], "healthy");
    assert_eq!(cred(&v, "a")["fingerprint"].as_str().unwrap().len(), 12);
    assert_eq!(cred(&v, "b")["provider"], "anthropic");

    // A revoked key: disabled, and the view says why.
    h.sim.set(A, Behaviour::Revoked);
    assert_eq!(h.messages("claude", false).await.status, 200);
    h.eventually("a disabled", || h.state_of("credential/a") == "disabled")
        .await;
    let (_, v) = admin(&h, "GET", "/admin/credentials/a", Some(ADMIN_TOKEN), None).await;
    assert_eq!(v["health"]["state"], "disabled", "{v}");
    assert_eq!(v["health"]["class"], "auth_permanent", "{v}");
    assert!(v["since"].as_str().unwrap().ends_with('Z'));
    let recent = v["recent_transitions"].as_array().unwrap();
    assert!(
        recent
            .iter()
            .any(|t| t["to"]["state"] == "disabled" && t["actor"] == "probe"),
        "{v}"
    );
    let (s, v) = admin(
        &h,
        "GET",
        "/admin/credentials/a/history?limit=5",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(!v["transitions"].as_array().unwrap().is_empty(), "{v}");

    // Probe now: the revoked key still fails, with its class; health is left alone.
    let (s, v) = admin(
        &h,
        "POST",
        "/admin/credentials/a/probe",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["result"].as_str(), v["class"].as_str()),
        (Some("failed"), Some("auth_permanent")),
        "{v}"
    );
    let (_, v) = admin(
        &h,
        "POST",
        "/admin/credentials/b/probe?model=claude-x",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(v["result"], "ok", "{v}");
    assert_eq!(v["check"], "1-token claude-x");
    assert_eq!(
        h.state_of("credential/a"),
        "disabled",
        "a probe now changes nothing"
    );

    // The operator disables b (with a reason), then resets both.
    let (s, v) = admin(
        &h,
        "POST",
        "/admin/credentials/b/disable",
        Some(ADMIN_TOKEN),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 400, "a reason is required: {v}");
    let (s, v) = admin(
        &h,
        "POST",
        "/admin/credentials/b/disable",
        Some(ADMIN_TOKEN),
        Some(json!({"reason": "leaked in a CI log"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["health"]["state"], "disabled");
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 503, "nothing usable: {}", r.body);
    let (s, v) = admin(
        &h,
        "POST",
        "/admin/credentials/b/reset",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["health"]["state"], "healthy");
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "b");
    let (s, _) = admin(
        &h,
        "POST",
        "/admin/credentials/ghost/reset",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (_, v) = admin(
        &h,
        "GET",
        "/admin/credentials/b/history",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    let whys: Vec<_> = v["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["actor"].clone(), t["why"].clone()))
        .collect();
    assert!(
        format!("{whys:?}").contains("leaked in a CI log"),
        "{whys:?}"
    );

    // Metrics: behind the admin token; states, attempts by class, probes, requests by
    // gateway key; never a secret.
    assert_eq!(h.get_text("/metrics", None).await.0, 401);
    let (_, text) = h.get_text("/metrics", Some(ADMIN_TOKEN)).await;
    h.check_no_secret(&text);
    for line in [
        "keyward_credential_state{credential=\"a\",state=\"disabled\"} 1",
        "keyward_credential_state{credential=\"b\",state=\"healthy\"} 1",
        "keyward_upstream_attempts_total{credential=\"a\",outcome=\"auth_permanent\"} 1",
        "keyward_probes_total{credential=\"a\",outcome=\"confirmed\"} 1",
        "keyward_requests_total{route=\"claude\",gateway_key=\"tests\",status=\"5xx\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(
        text.contains("keyward_gateway_added_seconds_bucket"),
        "{text}"
    );

    // Reload: a valid file applies; an invalid one is refused with its problems.
    let (s, v) = admin(&h, "POST", "/admin/reload", Some(ADMIN_TOKEN), None).await;
    assert_eq!((s, v["generation"].as_u64()), (200, Some(2)), "{v}");
    let cfg = h.dir.join("keyward.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        good.replace("[routes.claude]", "[routes.claude]\nbogus = 1"),
    )
    .unwrap();
    let (s, v) = admin(&h, "POST", "/admin/reload", Some(ADMIN_TOKEN), None).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"]["problems"].to_string().contains("bogus"), "{v}");
    let (s, v) = admin(&h, "GET", "/admin/config", Some(ADMIN_TOKEN), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["generation"], 2);
    assert!(!v["last_reload_rejected"].as_array().unwrap().is_empty());
    assert_eq!(
        h.messages("claude", false).await.status,
        200,
        "still serving"
    );
    h.check_no_secret(&h.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_table_there_is_no_admin_api() {
    let h = start(
        "no-admin",
        ANTHROPIC,
        &[Cred("a", A, "anthropic", "")],
        &route("claude", "anthropic", "claude-x", &["a"]),
        "",
    )
    .await;
    let (s, v) = admin(&h, "GET", "/admin/credentials", Some(ADMIN_TOKEN), None).await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_usage_is_counted_from_bodies_and_streams() {
    let h = start(
        "tokens",
        &[("anthropic", "anthropic", ""), ("openai", "openai", "/v1")],
        &[
            Cred("a", A, "anthropic", ""),
            Cred("o", "sk-proj-admin-o-0003", "openai", ""),
        ],
        &format!(
            "{}{}",
            route("claude", "anthropic", "claude-x", &["a"]),
            route("gpt", "openai", "gpt-x", &["o"])
        ),
        "",
    )
    .await;
    // The sim reports 12 in / 6 out for a whole answer, 12 in / 8 out for a stream (the
    // stream's counts are cumulative: Anthropic's message_start says 1 out, its
    // message_delta 8).
    for stream in [false, false, true] {
        assert_eq!(h.messages("claude", stream).await.status, 200);
        assert_eq!(h.chat("gpt", stream).await.status, 200);
    }
    let (status, text) = h.get_text("/metrics", None).await;
    assert_eq!(status, 200, "loopback may scrape without an [admin] table");
    h.check_no_secret(&text);
    for (cred, route) in [("a", "claude"), ("o", "gpt")] {
        for (kind, n) in [("input", 36), ("output", 20)] {
            let line = format!(
                "keyward_tokens_total{{credential=\"{cred}\",route=\"{route}\",kind=\"{kind}\"}} {n}"
            );
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
    }
}
