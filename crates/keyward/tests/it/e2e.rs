#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// End-to-end tests may assert generous wall-clock bounds (the real binary keeps real time).
#![allow(clippy::disallowed_methods)]
//! End to end: the real `keyward serve` binary on 127.0.0.1 port 0, against `keyward-sim`
//! in this process. Each test has its own sim, gateway and state file. Wall-clock bounds
//! are generous; precise figures belong to the benchmarks.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_sim::Behaviour;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_from_the_start_is_invisible_then_probed_once_then_disabled() {
    let h = start(
        "revoked-start",
        ANTHROPIC,
        &[
            Cred::new("k1", "sk-ant-e2e-revoked-0001").with("priority = 10"),
            Cred::new("k2", "sk-ant-e2e-good-0002"),
        ],
        &route("claude", "anthropic", "claude-x", &["k1", "k2"]),
        "",
    )
    .await;
    h.sim.set("sk-ant-e2e-revoked-0001", Behaviour::Revoked);
    let mut ids = Vec::new();
    for i in 0..6 {
        let r = h.messages("claude", i % 2 == 1).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-credential"), "k2");
        ids.push(r.header("x-keyward-request-id"));
        if i % 2 == 1 {
            assert!(
                r.body.contains("message_stop"),
                "a whole stream: {}",
                r.body
            );
        } else {
            assert_eq!(
                r.json()["model"],
                "claude-x",
                "the response names the model that answered"
            );
        }
    }
    h.eventually("one confirmation probe", || {
        h.sim.counts("sk-ant-e2e-revoked-0001").probes >= 1
    })
    .await;
    h.eventually("the key disabled", || {
        h.state_of("credential/k1") == "disabled"
    })
    .await;
    for _ in 0..4 {
        assert_eq!(h.messages("claude", false).await.status, 200);
    }
    let c = h.sim.counts("sk-ant-e2e-revoked-0001");
    assert_eq!(
        c.requests, 1,
        "the revoked key got only its first request: {c:?}"
    );
    assert_eq!(c.probes, 1, "and exactly one probe: {c:?}");
    h.check_no_secret(&h.logs());
    // The first request's decision line carries its request id; every request has its own.
    let first = ids[0].clone();
    assert!(first.starts_with("kw-") && first.len() == 19, "{first}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "unique request ids");
    h.eventually(
        "a decision line per failed candidate, with the request id",
        || {
            h.logs()
                .lines()
                .any(|l| l.contains("candidate failed") && l.contains(&first))
        },
    )
    .await;
    h.eventually("an access line per request", || {
        h.logs().matches("request answered").count() >= 10
    })
    .await;
    // Once disabled, each request says why the key was left out.
    let logs = h.logs();
    let skipped = logs
        .lines()
        .find(|l| {
            l.contains("candidate skipped")
                && l.contains("skipped `k1`: disabled, auth_permanent since")
        })
        .unwrap_or_else(|| panic!("no decision line for the disabled key:\n{logs}"));
    assert!(skipped.contains("confirmed by probe"), "{skipped}");
    assert!(
        skipped.contains("\"id\":\"kw-"),
        "the request id: {skipped}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_mid_traffic_costs_only_what_was_in_flight() {
    let h = Arc::new(
        start(
            "revoked-mid",
            ANTHROPIC,
            &[
                Cred::new("k1", "sk-ant-e2e-mid-0001"),
                Cred::new("k2", "sk-ant-e2e-mid-0002"),
                Cred::new("k3", "sk-ant-e2e-mid-0003"),
            ],
            &route("claude", "anthropic", "claude-x", &["k1", "k2", "k3"]),
            "",
        )
        .await,
    );
    const WORKERS: usize = 8;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (h, stop, errors, served) = (h.clone(), stop.clone(), errors.clone(), served.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = h.messages("claude", (w + i) % 2 == 0).await;
                if r.status != 200
                    || !(r.body.contains("message_stop") || r.body.contains("stop_reason"))
                {
                    errors.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.sim.set("sk-ant-e2e-mid-0002", Behaviour::Revoked);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        errors.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "callers saw no error"
    );
    assert!(served.load(std::sync::atomic::Ordering::SeqCst) > 20);
    h.eventually("the revoked key disabled", || {
        h.state_of("credential/k2") == "disabled"
    })
    .await;
    let c = h.sim.counts("sk-ant-e2e-mid-0002");
    let after = c.outcomes.get("revoked").copied().unwrap_or(0) - c.probes;
    assert!(
        after >= 1 && after <= WORKERS as u64,
        "requests after revocation {after} (≤ {WORKERS} in flight): {c:?}"
    );
    assert_eq!(c.probes, 1, "one confirmation probe: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_key_is_revoked_the_error_is_fast_final_and_actionable() {
    let h = start(
        "all-revoked",
        ANTHROPIC,
        &[
            Cred::new("team-1", "sk-ant-e2e-all-0001"),
            Cred::new("team-2", "sk-ant-e2e-all-0002"),
        ],
        &route("claude", "anthropic", "claude-x", &["team-1", "team-2"]),
        "",
    )
    .await;
    h.sim.set("sk-ant-e2e-all-0001", Behaviour::Revoked);
    h.sim.set("sk-ant-e2e-all-0002", Behaviour::Revoked);
    let first = h.messages("claude", false).await;
    assert_eq!(first.status, 503, "{}", first.body);
    assert_ne!(first.status, 401);
    h.eventually("both disabled", || {
        h.state_of("credential/team-1") == "disabled"
            && h.state_of("credential/team-2") == "disabled"
    })
    .await;
    let before = (
        h.sim.counts("sk-ant-e2e-all-0001"),
        h.sim.counts("sk-ant-e2e-all-0002"),
    );
    for stream in [false, true] {
        let r = h.messages("claude", stream).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.header("x-should-retry"), "false");
        assert!(r.gateway_ms() < 50.0, "gateway time {} ms", r.gateway_ms());
        let v = r.json();
        assert_eq!(v["type"], "error");
        let msg = v["error"]["message"].as_str().unwrap();
        for needle in [
            "team-1",
            "team-2",
            "auth_permanent",
            "replace it in keyward.toml",
            "keyward reset",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg}");
        }
    }
    // The same in the OpenAI format for an OpenAI-format caller would be checked by the
    // OpenAI tests; here: no upstream call once disabled.
    assert_eq!(
        (
            h.sim.counts("sk-ant-e2e-all-0001"),
            h.sim.counts("sk-ant-e2e-all-0002")
        ),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_oauth_token_never_disables_the_credential() {
    let h = start(
        "oauth",
        ANTHROPIC,
        &[
            Cred::new("oauth-1", "sk-ant-oat-e2e-0001")
                .with("kind = \"oauth\"\nsubscription = true\npriority = 10"),
            Cred::new("key-2", "sk-ant-e2e-oauth-0002"),
        ],
        &route("claude", "anthropic", "claude-x", &["oauth-1", "key-2"]),
        "",
    )
    .await;
    h.sim.set("sk-ant-oat-e2e-0001", Behaviour::ExpiredToken);
    for _ in 0..8 {
        let r = h.messages("claude", false).await;
        assert_eq!(r.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_ne!(
        h.state_of("credential/oauth-1"),
        "disabled",
        "an auth_transient verdict never disables"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_wide_auth_incident_disables_nothing() {
    let secrets: Vec<String> = ["i-1", "i-2", "i-3", "i-4"]
        .iter()
        .map(|id| format!("sk-ant-incident-secret-{id}"))
        .collect();
    let creds: Vec<Cred<'_>> = ["i-1", "i-2", "i-3", "i-4"]
        .iter()
        .zip(&secrets)
        .map(|(id, s)| Cred::new(id, s))
        .collect();
    let names = ["i-1", "i-2", "i-3", "i-4"];
    let h = start(
        "incident",
        ANTHROPIC,
        &creds,
        &route("claude", "anthropic", "claude-x", &names),
        "",
    )
    .await;
    h.sim.incident(true);
    let _ = &secrets;
    for _ in 0..3 {
        let r = h.messages("claude", false).await;
        assert!(r.status >= 500 && r.status != 501, "{}", r.status);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.sim.incident(false);
    for id in names {
        assert_ne!(
            h.state_of(&format!("credential/{id}")),
            "disabled",
            "{id} disabled by an incident"
        );
    }
    // Traffic comes back once the incident's next probe answers (incident_cooldown is 1 s
    // in the tests' policy); bounded, generous for a loaded machine.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let r = h.messages("claude", false).await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < until,
            "traffic never came back: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in names {
        assert_ne!(h.state_of(&format!("credential/{id}")), "disabled", "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_credit_is_confirmed_with_a_real_request_and_disabled() {
    let h = start(
        "billing",
        ANTHROPIC,
        &[
            Cred::new("broke", "sk-ant-e2e-broke-01").with("priority = 10"),
            Cred::new("funded", "sk-ant-e2e-funded-02"),
        ],
        &route("claude", "anthropic", "claude-x", &["broke", "funded"]),
        "",
    )
    .await;
    h.sim.set("sk-ant-e2e-broke-01", Behaviour::NoCredit);
    assert_eq!(h.messages("claude", false).await.status, 200);
    h.eventually("billing disabled", || {
        h.state_of("credential/broke") == "disabled"
    })
    .await;
    let c = h.sim.counts("sk-ant-e2e-broke-01");
    // count_tokens is free and cannot show credit: the probe is a one-token request.
    assert_eq!(c.probes, 0, "{c:?}");
    assert_eq!(
        c.requests, 2,
        "the failed request and the minimal probe request: {c:?}"
    );
    let s = h.status();
    let rec = s["not_healthy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scope"] == "credential/broke")
        .unwrap()
        .clone();
    assert_eq!(rec["health"]["class"], "billing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_honoured_then_the_request_succeeds() {
    let h = start(
        "ratelimit",
        ANTHROPIC,
        &[Cred::new("only", "sk-ant-e2e-rl-0001")],
        &route("claude", "anthropic", "claude-x", &["only"]),
        "",
    )
    .await;
    h.sim.set(
        "sk-ant-e2e-rl-0001",
        Behaviour::RateLimited {
            retry_after: Some(1),
        },
    );
    let sim = h.sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sim.set("sk-ant-e2e-rl-0001", Behaviour::Ok);
    });
    let t = Instant::now();
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-attempts"), "2");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "retry-after honoured: {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_falls_over_to_the_fallback_target() {
    let h = start(
        "overload",
        &[("primary", "anthropic", ""), ("secondary", "anthropic", "")],
        &[Cred::new("p1", "sk-ant-e2e-ov-01").on("primary"), Cred::new("s1", "sk-ant-e2e-ov-02").on("secondary")],
        "[routes.claude]\ntargets = [{ endpoint = \"primary\", model = \"claude-big\", credentials = [\"p1\"] }]\nfallbacks = [{ endpoint = \"secondary\", model = \"claude-small\", credentials = [\"s1\"] }]\n",
        "",
    )
    .await;
    h.sim.set("sk-ant-e2e-ov-01", Behaviour::Overloaded);
    for stream in [false, true, false] {
        let r = h.messages("claude", stream).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-target"), "secondary/claude-small");
    }
    assert_ne!(
        h.state_of("credential/p1"),
        "disabled",
        "overload never touches the credential"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_overflow_goes_to_the_larger_context_route() {
    let h = start(
        "context",
        ANTHROPIC,
        &[
            Cred::new("small-key", "sk-ant-e2e-ctx-01"),
            Cred::new("big-key", "sk-ant-e2e-ctx-02"),
        ],
        &format!(
            "{}context_fallback = \"claude-1m\"\n{}",
            route("claude", "anthropic", "claude-200k", &["small-key"]),
            route("claude-1m", "anthropic", "claude-1m-model", &["big-key"])
        ),
        "",
    )
    .await;
    h.sim.set("sk-ant-e2e-ctx-01", Behaviour::ContextOverflow);
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-target"), "anthropic/claude-1m-model");
    assert_eq!(h.state_of("credential/small-key"), "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_filter_and_the_callers_bad_request_come_back_as_they_are() {
    let h = start(
        "asis",
        ANTHROPIC,
        &[
            Cred::new("k", "sk-ant-e2e-asis-01"),
            Cred::new("k2", "sk-ant-e2e-asis-02"),
        ],
        &route("claude", "anthropic", "claude-x", &["k", "k2"]),
        "",
    )
    .await;
    h.sim.set_default(Behaviour::ContentFilter);
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("content filtering"), "{}", r.body);
    assert_eq!(
        r.header("x-keyward-attempts"),
        "1",
        "no retry of a content filter"
    );
    h.sim.set_default(Behaviour::BadRequest);
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("roles must alternate"), "{}", r.body);
    assert_eq!(r.header("x-keyward-attempts"), "1");
    assert!(
        h.status()["not_healthy"].as_array().unwrap().is_empty(),
        "the caller's errors touch no health"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_target_fails_over_to_a_working_one() {
    let h = start(
        "misconfig",
        &[("broken", "anthropic", "/wrong-prefix"), ("working", "anthropic", "")],
        &[Cred::new("b1", "sk-ant-e2e-mc-01").on("broken"), Cred::new("w1", "sk-ant-e2e-mc-02").on("working")],
        "[routes.claude]\ntargets = [{ endpoint = \"broken\", model = \"claude-x\", credentials = [\"b1\"] }, { endpoint = \"working\", model = \"claude-x\", credentials = [\"w1\"] }]\n",
        "",
    )
    .await;
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "w1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_in_the_callers_format() {
    let h = start(
        "badinput",
        ANTHROPIC,
        &[Cred::new("k", "sk-ant-e2e-bad-01")],
        &route("claude", "anthropic", "claude-x", &["k"]),
        "\n[limits]\nmax_body_bytes = 2048\n",
    )
    .await;
    let body = json!({"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    // No gateway key: 401, Anthropic shape and OpenAI shape.
    let r = h.post_raw("/v1/messages", body.clone(), None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = h
        .post_raw("/v1/chat/completions", body.clone(), Some("wrong-key"))
        .await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"]["message"].is_string());
    // Malformed JSON.
    let r = h
        .post_raw(
            "/v1/messages",
            "{\"model\": \"claude\", ".into(),
            Some(GATEWAY_KEY),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    // Unknown model: 404 listing the routes.
    let r = h.messages("gpt-17", false).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("claude"));
    // Too large.
    let big =
        json!({"model": "claude", "messages": [{"role": "user", "content": "x".repeat(4096)}]})
            .to_string();
    let r = h.post_raw("/v1/messages", big, Some(GATEWAY_KEY)).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["type"], "error");
    // The gateway is still up.
    assert_eq!(h.messages("claude", false).await.status, 200);
    h.check_no_secret(&h.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_chat_completions_fail_over_and_stream_whole() {
    let h = start(
        "openai",
        &[("openai", "openai", "/v1")],
        &[
            Cred::new("o1", "sk-proj-e2e-openai-01")
                .on("openai")
                .with("priority = 10"),
            Cred::new("o2", "sk-proj-e2e-openai-02").on("openai"),
        ],
        &route("gpt", "openai", "gpt-4o", &["o1", "o2"]),
        "",
    )
    .await;
    h.sim.set("sk-proj-e2e-openai-01", Behaviour::Revoked);
    let r = h.chat("gpt", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from keyward-sim."
    );
    let r = h.chat("gpt", true).await;
    assert_eq!(r.status, 200);
    assert!(r.body.trim_end().ends_with("data: [DONE]"), "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "o2");
    // The missing [DONE] is added when the terminal chunk came.
    h.sim.set("sk-proj-e2e-openai-02", Behaviour::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_after_content_ends_with_the_native_error_never_a_false_success() {
    let h = start(
        "cut",
        ANTHROPIC,
        &[Cred::new("k", "sk-ant-e2e-cut-01")],
        &route("claude", "anthropic", "claude-x", &["k"]),
        "",
    )
    .await;
    // Cut after two tokens on every attempt, and one key: continued on it once (two more
    // tokens), cut again, nowhere else to go.
    h.sim.set_stream_length(20);
    h.sim
        .set("sk-ant-e2e-cut-01", Behaviour::StreamCut { after: 2 });
    let r = h.messages("claude", true).await;
    assert_eq!(r.status, 200, "committed after the first content");
    assert!(r.body.contains("tok0") && r.body.contains("tok3") && !r.body.contains("tok4"));
    assert_eq!(
        r.body.matches("\"text\":\"tok1 \"").count(),
        1,
        "nothing twice: {}",
        r.body
    );
    assert!(
        r.body.contains("stream closed") && r.body.contains("\"type\":\"api_error\""),
        "an error agents retry: {}",
        r.body
    );
    assert!(!r.body.contains("message_stop"), "no fabricated completion");
    assert!(
        r.body.contains("event: error"),
        "ends with Anthropic's in-band error: {}",
        r.body
    );
    // Before any content, the same cut is invisible: fail over.
    let h2 = start(
        "cut-early",
        ANTHROPIC,
        &[
            Cred::new("a", "sk-ant-e2e-cut-02").with("priority = 10"),
            Cred::new("b", "sk-ant-e2e-cut-03"),
        ],
        &route("claude", "anthropic", "claude-x", &["a", "b"]),
        "",
    )
    .await;
    h2.sim
        .set("sk-ant-e2e-cut-02", Behaviour::StreamCut { after: 0 });
    let r = h2.messages("claude", true).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("message_stop"), "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_embeddings_and_count_tokens_are_served_with_failover() {
    let h = start(
        "more-apis",
        &[("openai", "openai", "/v1"), ("anthropic", "anthropic", "")],
        &[
            Cred::new("o1", "sk-proj-e2e-more-01").on("openai").with("priority = 10"),
            Cred::new("o2", "sk-proj-e2e-more-02").on("openai"),
            Cred::new("a1", "sk-ant-e2e-more-03"),
        ],
        &format!(
            "{}{}{}",
            route("gpt", "openai", "gpt-4o", &["o1", "o2"]),
            "[routes.embed]\ntargets = [{ endpoint = \"openai\", model = \"text-embedding-3-small\", credentials = [\"o1\"] }]\nfallbacks = [{ endpoint = \"openai\", model = \"text-embedding-3-large\", credentials = [\"o2\"] }]\n",
            route("claude", "anthropic", "claude-x", &["a1"]),
        ),
        "",
    )
    .await;
    h.sim.set("sk-proj-e2e-more-01", Behaviour::Revoked);
    // Responses: whole, and streamed to its terminal event.
    let r = h
        .post("/v1/responses", json!({"model": "gpt", "input": "hi"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "completed");
    let r = h
        .post(
            "/v1/responses",
            json!({"model": "gpt", "input": "hi", "stream": true}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("response.completed"), "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "o2");
    // Embeddings never fall back to another model: o1 is revoked and the only credential
    // for the primary model, so the caller gets an error, not vectors of another model.
    let r = h
        .post("/v1/embeddings", json!({"model": "embed", "input": "hi"}))
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.json()["error"]["message"].is_string());
    assert_eq!(
        h.sim
            .counts("sk-proj-e2e-more-02")
            .outcomes
            .get("ok")
            .copied()
            .unwrap_or(0),
        2,
        "o2 served only the two responses"
    );
    // count_tokens passes through to Anthropic.
    let r = h
        .post(
            "/v1/messages/count_tokens",
            json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["input_tokens"], 12);
    // A Messages caller of an OpenAI route is answered by OpenAI in Anthropic's format
    // (translated, docs/translation.md); counting tokens is never translated.
    let r = h.messages("gpt", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["type"], "message", "{}", r.body);
    let r = h
        .post(
            "/v1/messages/count_tokens",
            json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("do not speak this API"));
}

/// Runs one scenario of `tests/sdk/scenarios.py` with the official SDKs against `h`.
/// The SDKs are installed by the test command (`scripts/test.sh`); without them this fails
/// loudly rather than skipping.
async fn sdk(h: &Harness, scenario: &str) -> Value {
    run_sdk(h, scenario, &[]).await
}

fn sdk_endpoints() -> &'static [(&'static str, &'static str, &'static str)] {
    &[("anthropic", "anthropic", ""), ("openai", "openai", "/v1")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_succeed_fail_over_and_stop_on_exhaustion() {
    let h = start(
        "sdk-permanent",
        sdk_endpoints(),
        &[
            Cred::new("a-revoked", "sk-ant-sdk-revoked-01").with("priority = 10"),
            Cred::new("a-good", "sk-ant-sdk-good-02"),
            Cred::new("o-revoked", "sk-proj-sdk-revoked-03")
                .on("openai")
                .with("priority = 10"),
            Cred::new("o-good", "sk-proj-sdk-good-04").on("openai"),
        ],
        &format!(
            "{}{}",
            route("claude", "anthropic", "claude-x", &["a-revoked", "a-good"]),
            route("gpt", "openai", "gpt-4o", &["o-revoked", "o-good"])
        ),
        "",
    )
    .await;
    h.sim.set("sk-ant-sdk-revoked-01", Behaviour::Revoked);
    h.sim.set("sk-proj-sdk-revoked-03", Behaviour::Revoked);
    // Success, streaming success, and the failover the SDK never sees.
    let (a, o) = tokio::join!(sdk(&h, "anthropic_ok"), sdk(&h, "openai_ok"));
    assert_eq!(a["stop"], "end_turn");
    assert_eq!(o["finish"], "stop");
    // Permanent exhaustion: every key revoked and confirmed.
    h.sim.set("sk-ant-sdk-good-02", Behaviour::Revoked);
    h.sim.set("sk-proj-sdk-good-04", Behaviour::Revoked);
    let _ = h.messages("claude", false).await;
    let _ = h.chat("gpt", false).await;
    h.eventually("all four disabled", || {
        ["a-revoked", "a-good", "o-revoked", "o-good"]
            .iter()
            .all(|c| h.state_of(&format!("credential/{c}")) == "disabled")
    })
    .await;
    let (a, o) = tokio::join!(sdk(&h, "anthropic_exhausted"), sdk(&h, "openai_exhausted"));
    assert_eq!(
        a["attempts"], 1,
        "x-should-retry: false stops the SDK's retries: {a}"
    );
    assert_eq!(o["attempts"], 1, "{o}");
}

/// A continued stream, read by the official SDKs' own stream accumulation, is one normal
/// answer: the text whole and once, a tool call complete and once, one stop reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_read_a_continued_stream_as_one_answer() {
    let h = start(
        "sdk-continued",
        sdk_endpoints(),
        &[
            Cred::new("a-cut", "sk-ant-sdk-cut-01").with("priority = 10"),
            Cred::new("a-ok", "sk-ant-sdk-ok-02"),
            Cred::new("o-cut", "sk-proj-sdk-cut-03")
                .on("openai")
                .with("priority = 10"),
            Cred::new("o-ok", "sk-proj-sdk-ok-04").on("openai"),
        ],
        &format!(
            "{}{}",
            route("claude", "anthropic", "claude-x", &["a-cut", "a-ok"]),
            route("gpt", "openai", "gpt-4o", &["o-cut", "o-ok"])
        ),
        "",
    )
    .await;
    h.sim.set_stream_length(12);
    let text: String = (0..12).map(|i| format!("tok{i} ")).collect();
    let tool = r#"{"city": "Paris"}"#;
    // (what, the cut, a tool call at the end)
    let cases = [
        ("text cut mid-answer", 5, false),
        ("text cut, the tool call from the continuation", 5, true),
        ("tool call cut mid-arguments", 12 + 1, true),
    ];
    for (what, after, with_tool) in cases {
        h.sim.set_tool_call(with_tool);
        // Every attempt on the first key is cut: the stream is continued there once,
        // then on the second key.
        h.sim
            .set("sk-ant-sdk-cut-01", Behaviour::StreamCut { after });
        h.sim
            .set("sk-proj-sdk-cut-03", Behaviour::StreamCut { after });
        let mut env = vec![("KEYWARD_EXPECT_TEXT", text.as_str())];
        if with_tool {
            env.push(("KEYWARD_EXPECT_TOOL", tool));
        }
        let (a, o) = tokio::join!(
            run_sdk(&h, "anthropic_stream", &env),
            run_sdk(&h, "openai_stream", &env)
        );
        eprintln!("{what}: anthropic {a}; openai {o}");
    }
    h.eventually("continuations logged", || {
        h.logs()
            .matches("stream continued on a new attempt")
            .count()
            >= 6
    })
    .await;
}

/// Where a stream cannot be continued, the official SDKs raise their own error for the
/// in-band event, worded as the closed stream agents retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_raise_a_broken_stream_as_a_closed_stream() {
    let off = |r: String| format!("{r}continue_streams = false\n");
    let h = start(
        "sdk-broken",
        sdk_endpoints(),
        &[
            Cred::new("a", "sk-ant-sdk-broken-01"),
            Cred::new("o", "sk-proj-sdk-broken-02").on("openai"),
        ],
        &format!(
            "{}{}",
            off(route("claude", "anthropic", "claude-x", &["a"])),
            off(route("gpt", "openai", "gpt-4o", &["o"]))
        ),
        "",
    )
    .await;
    h.sim.set_stream_length(12);
    h.sim
        .set("sk-ant-sdk-broken-01", Behaviour::StreamCut { after: 3 });
    h.sim
        .set("sk-proj-sdk-broken-02", Behaviour::StreamCut { after: 3 });
    let (a, o) = tokio::join!(sdk(&h, "anthropic_broken"), sdk(&h, "openai_broken"));
    eprintln!("anthropic {a}; openai {o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_retry_a_transient_exhaustion_and_succeed() {
    let h = start(
        "sdk-transient",
        sdk_endpoints(),
        &[
            Cred::new("a1", "sk-ant-sdk-rl-01"),
            Cred::new("o1", "sk-proj-sdk-rl-02").on("openai"),
        ],
        &format!(
            "{}{}",
            route("claude", "anthropic", "claude-x", &["a1"]),
            route("gpt", "openai", "gpt-4o", &["o1"])
        ),
        "",
    )
    .await;
    // Limited for 12 s: longer than the gateway waits itself (10 s), within what SDKs honour (60 s).
    h.sim.set(
        "sk-ant-sdk-rl-01",
        Behaviour::RateLimited {
            retry_after: Some(12),
        },
    );
    h.sim.set(
        "sk-proj-sdk-rl-02",
        Behaviour::RateLimited {
            retry_after: Some(12),
        },
    );
    // Each key heals once the sim has rate-limited it once: a condition, not a timer. (A
    // 3 s timer raced the SDK's start: importing `anthropic` alone takes 0.8–3.6 s on a busy
    // machine, so its first request could arrive after the heal and succeed at once —
    // "1 attempt, not ok".)
    for key in ["sk-ant-sdk-rl-01", "sk-proj-sdk-rl-02"] {
        let sim = h.sim.clone();
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(60);
            while !sim
                .attempts(key)
                .iter()
                .any(|a| a.outcome == "rate_limited")
                && Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sim.set(key, Behaviour::Ok);
        });
    }
    let (a, o) = tokio::join!(sdk(&h, "anthropic_transient"), sdk(&h, "openai_transient"));
    for v in [&a, &o] {
        assert!(v["attempts"].as_u64().unwrap() >= 2, "{v}");
        let secs = v["seconds"].as_f64().unwrap();
        assert!(
            (10.0..40.0).contains(&secs),
            "retried after the retry-after: {v}"
        );
    }
    for key in ["sk-ant-sdk-rl-01", "sk-proj-sdk-rl-02"] {
        let outcomes: Vec<_> = h
            .sim
            .attempts(key)
            .into_iter()
            .filter(|a| !a.probe)
            .map(|a| a.outcome)
            .collect();
        assert_eq!(
            (
                outcomes.first().map(String::as_str),
                outcomes.last().map(String::as_str)
            ),
            (Some("rate_limited"), Some("ok")),
            "{key}: rate-limited first, then served: {outcomes:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_generate_and_both_stream_forms_with_failover() {
    let h = start(
        "gemini",
        &[("gemini", "gemini", "")],
        &[
            Cred::new("g1", "AIzaE2EGeminiRevoked000000001")
                .on("gemini")
                .with("priority = 10"),
            Cred::new("g2", "AIzaE2EGeminiGood00000000002").on("gemini"),
        ],
        &route("flash", "gemini", "gemini-2.5-flash", &["g1", "g2"]),
        "",
    )
    .await;
    h.sim
        .set("AIzaE2EGeminiRevoked000000001", Behaviour::Revoked);
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).to_string();
    let call = |path: &str, by_header: bool| {
        let mut rb = h
            .client
            .post(format!("{}{path}", h.url))
            .header("content-type", "application/json")
            .body(body.clone());
        rb = if by_header {
            rb.header("x-goog-api-key", GATEWAY_KEY)
        } else {
            rb.query(&[("key", GATEWAY_KEY)])
        };
        rb
    };
    let r = call("/v1beta/models/flash:generateContent", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-keyward-credential"], "g2");
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    // alt=sse.
    let r = call("/v1beta/models/flash:streamGenerateContent?alt=sse", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["cache-control"],
        "no-cache",
        "streamed through the stream pump"
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("\"finishReason\":\"STOP\""), "{text}");
    // The JSON-array stream is valid JSON, whole.
    let r = call("/v1beta/models/flash:streamGenerateContent", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["cache-control"],
        "no-cache",
        "streamed through the stream pump"
    );
    let text = r.text().await.unwrap();
    let arr: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(arr.last().unwrap()["candidates"][0]["finishReason"], "STOP");
    h.check_no_secret(&text);
    // A cut after content ends with an error element, still valid JSON, never a success.
    h.sim.set(
        "AIzaE2EGeminiGood00000000002",
        Behaviour::StreamCut { after: 2 },
    );
    let r = call("/v1beta/models/flash:streamGenerateContent", true)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let arr: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        arr.last().unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("incomplete"),
        "{text}"
    );
    assert!(arr
        .iter()
        .all(|e| e["candidates"][0]["finishReason"].is_null()));
    // Unauthenticated: 401 in Google's shape.
    let r = h
        .client
        .post(format!("{}/v1beta/models/flash:generateContent", h.url))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reset_header_style_is_honoured() {
    for (style, endpoints, model, is_openai) in [
        ("retry-after-ms", ANTHROPIC, "claude", false),
        ("anthropic", ANTHROPIC, "claude", false),
        (
            "openai",
            &[("anthropic", "openai", "/v1")][..],
            "claude",
            true,
        ),
        (
            "x-ratelimit-reset",
            &[("anthropic", "openai", "/v1")][..],
            "claude",
            true,
        ),
    ] {
        let h = start(
            &format!("reset-{style}"),
            endpoints,
            &[Cred::new("k", "sk-e2e-reset-style-01")],
            &route("claude", "anthropic", "m", &["k"]),
            "",
        )
        .await;
        h.sim.set(
            "sk-e2e-reset-style-01",
            Behaviour::RateLimitedReset {
                style: style.into(),
                secs: 1,
            },
        );
        let sim = h.sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sim.set("sk-e2e-reset-style-01", Behaviour::Ok);
        });
        let t = Instant::now();
        let r = if is_openai {
            h.chat(model, false).await
        } else {
            h.messages(model, false).await
        };
        assert_eq!(r.status, 200, "{style}: {}", r.body);
        assert_eq!(r.header("x-keyward-attempts"), "2", "{style}");
        assert!(
            t.elapsed() >= Duration::from_millis(700),
            "{style}: waited only {:?}",
            t.elapsed()
        );
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "{style}: {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_event_is_dropped_and_the_stream_completes() {
    let h = start(
        "malformed",
        ANTHROPIC,
        &[Cred::new("k", "sk-ant-e2e-mal-01")],
        &route("claude", "anthropic", "claude-x", &["k"]),
        "",
    )
    .await;
    h.sim
        .set("sk-ant-e2e-mal-01", Behaviour::MalformedChunk { at: 2 });
    let r = h.messages("claude", true).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("message_stop"), "{}", r.body);
    assert!(
        !r.body.contains("\"delta\":{\n"),
        "the malformed event was dropped: {}",
        r.body
    );
    for i in 0..4 {
        assert!(r.body.contains(&format!("tok{i}")), "tok{i} missing");
    }
    // The log line is read from the gateway's stderr by another thread: wait for it. It
    // is written while the body streams, after the handler returned, and still carries
    // the request's id.
    let id = r.header("x-keyward-request-id");
    h.eventually("the drop logged with the request id", || {
        h.logs()
            .lines()
            .any(|l| l.contains("dropped a malformed stream event") && l.contains(&id))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_streams_then_exits() {
    let mut h = start(
        "drain",
        ANTHROPIC,
        &[Cred::new("k", "sk-ant-e2e-drain-01")],
        &route("claude", "anthropic", "claude-x", &["k"]),
        "",
    )
    .await;
    h.sim.set(
        "sk-ant-e2e-drain-01",
        Behaviour::StreamStall { after: 1, ms: 1500 },
    );
    let url = h.url.clone();
    let client = h.client.clone();
    let inflight = tokio::spawn(async move {
        let r = client
            .post(format!("{url}/v1/messages"))
            .header("x-api-key", GATEWAY_KEY)
            .header("content-type", "application/json")
            .body(json!({"model": "claude", "max_tokens": 8, "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string())
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = h.gateway.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let body = inflight.await.unwrap();
    assert!(
        body.contains("message_stop"),
        "the in-flight stream finished: {body}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = h.gateway.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_detail_callers_learn_nothing_of_the_inventory() {
    let h = start_with(
        "minimal",
        ANTHROPIC,
        &[Cred::new("secret-team-name", "sk-ant-e2e-min-01")],
        &route("claude", "anthropic", "claude-x", &["secret-team-name"]),
        "",
        "minimal",
    )
    .await;
    h.sim.set("sk-ant-e2e-min-01", Behaviour::Revoked);
    let _ = h.messages("claude", false).await;
    h.eventually("disabled", || {
        h.state_of("credential/secret-team-name") == "disabled"
    })
    .await;
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-should-retry"), "false");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        !msg.contains("secret-team-name")
            && !msg.contains("auth_permanent")
            && !msg.contains(" of "),
        "{msg}"
    );
    assert!(msg.contains("do not retry"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_before_headers_fails_over_and_disables_nothing() {
    // The default network cooldown starts at 1 s: on a loaded machine it could end
    // before the state file is read. A minute-long one holds whatever the machine's speed.
    let h = start_policy(
        "reset",
        &[("primary", "anthropic", ""), ("secondary", "anthropic", "")],
        &[Cred::new("p1", "sk-ant-e2e-rs-01").on("primary"), Cred::new("s1", "sk-ant-e2e-rs-02").on("secondary")],
        "[routes.claude]\ntargets = [{ endpoint = \"primary\", model = \"claude-x\", credentials = [\"p1\"] }, { endpoint = \"secondary\", model = \"claude-x\", credentials = [\"s1\"] }]\n",
        &format!(
            "{DEFAULT_POLICY}[policy.network]\neffect = \"cool\"\nthreshold = 3\nretry_same = true\nhonour_retry_after = true\nbackoff = {{ base = \"60s\", max = \"60s\", jitter = 0.0 }}\n"
        ),
        "",
    )
    .await;
    h.sim.set("sk-ant-e2e-rs-01", Behaviour::ConnectionReset);
    for stream in [false, true, false, true] {
        let r = h.messages("claude", stream).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-credential"), "s1");
        if stream {
            assert!(r.body.contains("message_stop"), "{}", r.body);
        }
    }
    // The reset is the endpoint's problem: it cools (bounded), later requests go straight
    // to the secondary, and the key itself is untouched.
    let resets = h.sim.counts("sk-ant-e2e-rs-01").outcomes["connection_reset"];
    assert_eq!(
        resets, 3,
        "the endpoint cools at its third consecutive network failure (policy) and gets no more"
    );
    // The state file follows the engine through a background writer: read it until the
    // cooldown is there (the test's minute-long one cannot have ended).
    h.eventually("the endpoint's cooldown in the state file", || {
        h.state_of("endpoint/primary") == "cooling"
    })
    .await;
    assert_eq!(
        h.state_of("credential/p1"),
        "healthy",
        "a reset is never the key's fault"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_openai_deployments_fail_over_and_a_revoked_key_is_confirmed() {
    let h = start(
        "azure",
        &[("azure", "azure-openai", "")],
        &[
            Cred::new("z1", "azure-e2e-key-0000000000000001")
                .on("azure")
                .with("priority = 10"),
            Cred::new("z2", "azure-e2e-key-0000000000000002").on("azure"),
        ],
        &route("gpt", "azure", "gpt-4o-deployment", &["z1", "z2"]),
        "",
    )
    .await;
    h.sim
        .set("azure-e2e-key-0000000000000001", Behaviour::Revoked);
    for stream in [false, true] {
        let r = h.chat("gpt", stream).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-credential"), "z2");
        assert_eq!(r.header("x-keyward-target"), "azure/gpt-4o-deployment");
        if stream {
            assert!(r.body.trim_end().ends_with("data: [DONE]"), "{}", r.body);
        }
    }
    let r = h
        .post("/v1/embeddings", json!({"model": "gpt", "input": "hello"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "z2");
    // Azure's own 401 shape is a permanent auth verdict: one probe (Azure's model list,
    // with the api-version) confirms it.
    h.eventually("the revoked Azure key disabled", || {
        h.state_of("credential/z1") == "disabled"
    })
    .await;
    let c = h.sim.counts("azure-e2e-key-0000000000000001");
    assert_eq!(c.requests, 1, "{c:?}");
    assert_eq!(c.probes, 1, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_backpressure_not_a_growing_buffer() {
    const EVENTS: usize = 1000;
    const BYTES: usize = 64 * 1024;
    let h = start(
        "backpressure",
        ANTHROPIC,
        &[Cred::new("b1", "sk-ant-e2e-bp-0001")],
        &route("claude", "anthropic", "claude-x", &["b1"]),
        "",
    )
    .await;
    h.sim.set_stream_length(EVENTS);
    h.sim
        .set("sk-ant-e2e-bp-0001", Behaviour::BigEvents { bytes: BYTES });
    let mut resp = h
        .client
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(json!({"model": "claude", "max_tokens": 16, "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The caller now reads nothing. Upstream must stop once the buffers between (the
    // sockets' and a bounded few events in the gateway) are full: wait, bounded, until
    // the simulator has produced nothing new for half a second.
    let until = Instant::now() + Duration::from_secs(30);
    let (mut last, mut quiet) = (usize::MAX, 0);
    while quiet < 5 {
        let now = h.sim.emitted_events();
        if now == last {
            quiet += 1;
        } else {
            (last, quiet) = (now, 0);
        }
        assert!(
            Instant::now() < until,
            "upstream never stopped: {now} events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("upstream stopped {last} events of 64 KiB ahead of a caller that read nothing");
    assert!(
        last < EVENTS / 2,
        "upstream ran {last} of {EVENTS} events of 64 KiB ahead of a caller that read nothing"
    );
    // Reading resumes: the whole stream arrives, nothing lost.
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("message_stop"), "the terminal event arrived");
    assert_eq!(text.matches("content_block_delta").count(), EVENTS * 2);
    assert_eq!(h.sim.emitted_events(), EVENTS);
}

/// A gateway with short timeouts and two keys on one endpoint, `k-a` tried first.
async fn short_timeouts(name: &str, keys: [&'static str; 2]) -> Harness {
    start(
        name,
        ANTHROPIC,
        &[
            Cred::new("k-a", keys[0]).with("priority = 10"),
            Cred::new("k-b", keys[1]),
        ],
        &route("claude", "anthropic", "claude-x", &["k-a", "k-b"]),
        "[timeouts]\nheaders = \"300ms\"\nfirst_token = \"300ms\"\nidle = \"300ms\"\n",
    )
    .await
}

/// [`short_timeouts`] with streams never continued.
async fn short_timeouts_no_continuation(name: &str, keys: [&'static str; 2]) -> Harness {
    start(
        name,
        ANTHROPIC,
        &[
            Cred::new("k-a", keys[0]).with("priority = 10"),
            Cred::new("k-b", keys[1]),
        ],
        &format!(
            "{}continue_streams = false\n",
            route("claude", "anthropic", "claude-x", &["k-a", "k-b"])
        ),
        "[timeouts]\nheaders = \"300ms\"\nfirst_token = \"300ms\"\nidle = \"300ms\"\n",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_stream_that_stalls_or_ends_badly_is_continued_into_one_answer() {
    for (name, behaviour, what) in [
        (
            "cont-stall",
            Behaviour::StreamStall {
                after: 3,
                ms: 5_000,
            },
            "idle timeout",
        ),
        (
            "cont-no-terminal",
            Behaviour::MissingTerminal,
            "missing terminal event",
        ),
        ("cont-cut", Behaviour::StreamCut { after: 3 }, "cut"),
    ] {
        let h = short_timeouts(name, ["sk-ant-e2e-cont-01", "sk-ant-e2e-cont-02"]).await;
        h.sim.set_stream_length(10);
        h.sim.set("sk-ant-e2e-cont-01", behaviour);
        let started = Instant::now();
        let r = h.messages("claude", true).await;
        assert_eq!(r.status, 200, "{what}");
        assert!(
            r.body
                .trim_end()
                .ends_with("data: {\"type\":\"message_stop\"}"),
            "{what}: one whole answer: {}",
            r.body
        );
        assert!(!r.body.contains("event: error"), "{what}: {}", r.body);
        for i in 0..10 {
            assert_eq!(
                r.body.matches(&format!("\"text\":\"tok{i} \"")).count(),
                1,
                "{what}: tok{i} exactly once: {}",
                r.body
            );
        }
        assert_eq!(r.body.matches("event: message_stop").count(), 1, "{what}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: bounded"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_and_a_slow_first_token_fail_over_within_their_timeouts() {
    // Silence before the headers.
    let h = short_timeouts("silent", ["sk-ant-e2e-to-01", "sk-ant-e2e-to-02"]).await;
    h.sim
        .set("sk-ant-e2e-to-01", Behaviour::SlowHeaders { ms: 5_000 });
    for stream in [false, true] {
        let started = Instant::now();
        let r = h.messages("claude", stream).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-credential"), "k-b");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "bounded by the headers timeout"
        );
    }
    assert_eq!(
        h.state_of("credential/k-a"),
        "healthy",
        "a timeout never disables a key"
    );
    // Headers at once, then nothing: nothing was sent to the caller, so it fails over too.
    let h = short_timeouts("first-token", ["sk-ant-e2e-to-03", "sk-ant-e2e-to-04"]).await;
    h.sim
        .set("sk-ant-e2e-to-03", Behaviour::SlowFirstToken { ms: 5_000 });
    let started = Instant::now();
    let r = h.messages("claude", true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "k-b");
    assert!(r.body.contains("message_stop"), "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the first-token timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_not_continued_a_broken_stream_ends_with_the_native_error() {
    for (name, behaviour, what) in [
        (
            "stall",
            Behaviour::StreamStall {
                after: 1,
                ms: 5_000,
            },
            "idle timeout",
        ),
        (
            "no-terminal",
            Behaviour::MissingTerminal,
            "missing terminal event",
        ),
        (
            "mid-error",
            Behaviour::MidStreamError { after: 1 },
            "in-band error",
        ),
    ] {
        let h =
            short_timeouts_no_continuation(name, ["sk-ant-e2e-end-01", "sk-ant-e2e-end-02"]).await;
        h.sim.set("sk-ant-e2e-end-01", behaviour);
        let started = Instant::now();
        let r = h.messages("claude", true).await;
        assert_eq!(r.status, 200, "{what}: committed after the first content");
        assert_eq!(r.header("x-keyward-credential"), "k-a", "{what}");
        assert!(
            r.body.contains("tok0"),
            "{what}: content forwarded: {}",
            r.body
        );
        assert!(
            !r.body.contains("message_stop"),
            "{what}: no fabricated completion"
        );
        assert!(
            r.body.trim_end().ends_with('}') && r.body.contains("event: error"),
            "{what}: ends with Anthropic's in-band error: {}",
            r.body
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what}: bounded"
        );
    }
    // OpenAI Chat Completions: no `[DONE]` is ever invented for a stream that lacked its
    // finishing chunk; it ends with OpenAI's in-band error instead.
    for (name, behaviour) in [
        (
            "oai-stall",
            Behaviour::StreamStall {
                after: 1,
                ms: 5_000,
            },
        ),
        ("oai-no-terminal", Behaviour::MissingTerminal),
        ("oai-cut", Behaviour::StreamCut { after: 2 }),
    ] {
        let h = start(
            name,
            &[("openai", "openai", "/v1")],
            &[Cred::new("o", "sk-proj-e2e-end-01").on("openai")],
            &format!(
                "{}continue_streams = false\n",
                route("gpt", "openai", "gpt-4o", &["o"])
            ),
            "[timeouts]\nidle = \"300ms\"\n",
        )
        .await;
        h.sim.set("sk-proj-e2e-end-01", behaviour);
        let r = h.chat("gpt", true).await;
        assert_eq!(r.status, 200, "{name}");
        assert!(r.body.contains("tok0"), "{name}: {}", r.body);
        assert!(
            !r.body.contains("[DONE]"),
            "{name}: no fabricated [DONE]: {}",
            r.body
        );
        let last = r.body.trim_end().rsplit("\n\n").next().unwrap_or("");
        assert!(
            last.starts_with("data: {\"error\""),
            "{name}: ends with OpenAI's in-band error: {}",
            r.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_and_readiness_answer() {
    let h = start(
        "probes",
        ANTHROPIC,
        &[Cred::new("k", "sk-ant-e2e-hz-01")],
        &route("claude", "anthropic", "claude-x", &["k"]),
        "",
    )
    .await;
    for path in ["/healthz", "/readyz"] {
        let r = h
            .client
            .get(format!("{}{path}", h.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

/// Session affinity: a conversation past its first turn, or a caller's session header,
/// stays on the credential that served it while that credential is usable; identical
/// one-off requests still spread over the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_stays_on_its_credential_and_one_off_requests_spread() {
    let h = start(
        "affinity",
        ANTHROPIC,
        &[
            Cred::new("k1", "sk-ant-e2e-aff-0001"),
            Cred::new("k2", "sk-ant-e2e-aff-0002"),
            Cred::new("k3", "sk-ant-e2e-aff-0003"),
        ],
        &route("claude", "anthropic", "claude-x", &["k1", "k2", "k3"]),
        "",
    )
    .await;
    let turn = |n: usize| {
        let mut messages = vec![json!({"role": "user", "content": "plan my trip"})];
        for i in 1..n {
            messages.push(json!({"role": "assistant", "content": format!("step {i}")}));
            messages.push(json!({"role": "user", "content": format!("and then {i}?")}));
        }
        json!({"model": "claude", "max_tokens": 16, "system": "you are a travel agent", "messages": messages})
    };
    // The first turn goes where rotation sends it; every later turn follows it there.
    let first = h.post("/v1/messages", turn(1)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let home = first.header("x-keyward-credential");
    for n in 2..8 {
        let r = h.post("/v1/messages", turn(n)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-credential"), home, "turn {n}");
    }
    // Its credential is revoked: the conversation moves once, and stays where it moved.
    let secret = format!("sk-ant-e2e-aff-000{}", &home[1..]);
    h.sim.set(&secret, Behaviour::Revoked);
    let moved = h.post("/v1/messages", turn(8)).await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    let new_home = moved.header("x-keyward-credential");
    assert_ne!(new_home, home);
    for n in 9..12 {
        let r = h.post("/v1/messages", turn(n)).await;
        assert_eq!(r.header("x-keyward-credential"), new_home, "turn {n}");
    }
    // A session header pins without a conversation.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let r = h
            .client
            .post(format!("{}/v1/messages", h.url))
            .header("x-api-key", GATEWAY_KEY)
            .header("anthropic-version", "2023-06-01")
            .header("x-session-id", "agent-session-42")
            .header("content-type", "application/json")
            .body(json!({"model": "claude", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        seen.insert(
            r.headers()["x-keyward-credential"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    // Identical one-off requests (no session, first turn only) rotate over the usable keys.
    let mut spread = std::collections::HashSet::new();
    for _ in 0..6 {
        let r = h.messages("claude", false).await;
        assert_eq!(r.status, 200, "{}", r.body);
        spread.insert(r.header("x-keyward-credential"));
    }
    assert_eq!(spread.len(), 2, "{spread:?}");
}
