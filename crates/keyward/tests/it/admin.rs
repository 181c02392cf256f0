#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]
//! The admin API end to end: access control, the credential view, history, reset,
//! disable, reload and config status; never a secret.

use crate::support::*;
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
        &[Cred::new("a", A).with("priority = 10"), Cred::new("b", B)],
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
    // The list carries each credential's latest transitions too.
    let (_, list) = admin(&h, "GET", "/admin/credentials", Some(ADMIN_TOKEN), None).await;
    assert!(
        cred(&list, "a")["recent_transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["to"]["state"] == "disabled"),
        "{list}"
    );
    assert!(cred(&list, "b")["recent_transitions"]
        .as_array()
        .unwrap()
        .is_empty());
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
        &[Cred::new("a", A)],
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
            Cred::new("a", A),
            Cred::new("o", "sk-proj-admin-o-0003").on("openai"),
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
                "keyward_tokens_total{{credential=\"{cred}\",route=\"{route}\",gateway_key=\"tests\",kind=\"{kind}\"}} {n}"
            );
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
    }
}

/// Runs `keyward ARGS --config CFG` with the gateway's environment: (exit code, stdout,
/// stderr), none of which may hold a secret.
fn keyward(h: &Harness, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .arg("--config")
        .arg(&h.config)
        .envs(h.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    h.check_no_secret(&format!("{stdout}{stderr}"));
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cli_works_over_the_admin_api_and_over_the_state_file_when_down() {
    let mut h = start(
        "admin-cli",
        ANTHROPIC,
        &[Cred::new("team-1", A), Cred::new("team-2", B)],
        &route("claude", "anthropic", "claude-x", &["team-1", "team-2"]),
        "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
    )
    .await;
    assert_eq!(h.messages("claude", false).await.status, 200);
    let url = h.url.clone();
    let live = ["--admin-url", url.as_str()];
    // One line per credential, read at a glance; the last success is known live.
    let (code, out, _) = keyward(&h, &[&["status"][..], &live].concat());
    assert_eq!(code, 0, "{out}");
    let line = |out: &str, id: &str| {
        out.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no line for {id}: {out}"))
            .to_owned()
    };
    assert!(out.starts_with("CREDENTIAL"), "{out}");
    assert!(line(&out, "team-1").contains("healthy"), "{out}");
    assert!(out.contains("2 credential(s), 2 usable"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "no colour when piped (and with NO_COLOR)"
    );
    // Disable needs a reason, then shows it.
    let (code, _, err) = keyward(
        &h,
        &[&["disable", "team-2", "--reason", " "][..], &live].concat(),
    );
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = keyward(
        &h,
        &[
            &["disable", "team-2", "--reason", "rotating it out"][..],
            &live,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("disabled team-2 in the running gateway: now disabled"),
        "{out}"
    );
    let (_, out, _) = keyward(&h, &[&["status"][..], &live].concat());
    let l = line(&out, "team-2");
    assert!(
        l.contains("disabled") && l.contains("operator: rotating it out"),
        "{l}"
    );
    assert!(out.contains("2 credential(s), 1 usable"), "{out}");
    for _ in 0..4 {
        let r = h.messages("claude", false).await;
        assert_eq!(r.header("x-keyward-credential"), "team-1");
    }
    let (_, out, _) = keyward(&h, &[&["history", "team-2"][..], &live].concat());
    assert!(
        out.lines()
            .next()
            .unwrap_or("")
            .contains("→ disabled [operator] disabled by an operator: rotating it out"),
        "{out}"
    );
    let (_, out, _) = keyward(&h, &[&["status", "--json"][..], &live].concat());
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cred(&v, "team-2")["health"]["state"], "disabled");
    assert!(cred(&v, "team-1")["last_success"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let (code, out, _) = keyward(&h, &[&["reset", "team-2"][..], &live].concat());
    assert_eq!(code, 0);
    assert!(out.contains("now healthy"), "{out}");

    // The gateway goes down: status and history read the state file, disable writes it,
    // and the restarted gateway starts with it.
    let _ = h.gateway.kill();
    let _ = h.gateway.wait();
    let (code, out, err) = keyward(&h, &[&["status"][..], &live].concat());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no gateway answered"), "{err}");
    assert!(
        out.contains("every scope") || out.contains("SCOPE"),
        "{out}"
    );
    let (code, out, err) = keyward(
        &h,
        &[
            &["disable", "team-1", "--reason", "offline change"][..],
            &live,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("in the state file"), "{out}");
    h.kill_and_restart(&[]);
    for _ in 0..3 {
        let r = h.messages("claude", false).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-keyward-credential"), "team-2");
    }
    assert_eq!(h.state_of("credential/team-1"), "disabled");
}
