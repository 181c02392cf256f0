//! What reaches a caller from an upstream body (issue 23, items 2, 3, 4, 10 and the low
//! ones): every probe replayed against the real binary and keyward-sim. A provider key
//! echoed by an upstream reaches no caller, log line, metric or admin answer; a truncated,
//! stalled, oversized or HTML "success" is never a 200 — it fails over to a sibling that
//! answers whole, or ends in a clear error in the caller's format; a dripping upstream is
//! bounded by the request deadline; an upstream error too large to pass on is replaced by
//! a valid one; a caller's megabyte model name is not echoed back.

use std::time::{Duration, Instant};

use keyward_sim::Behaviour;
use serde_json::{json, Value};

use crate::support::{route, start, Cred, Harness, ADMIN_TOKEN, ANTHROPIC, GATEWAY_KEY};

const OPENAI: &[(&str, &str, &str)] = &[("openai", "openai", "/v1")];

/// A distinctive provider key: if it shows anywhere, it leaked.
const CANARY: &str = "sk-proj-CANARY-bodies-7d1e4f0a9b3c";
/// A key of no known shape (no provider prefix, too short for the long-token rule): only
/// the configuration's own mask can catch it.
const PLAIN: &str = "plainkey-Canary-0042";

const ADMIN: &str = "\n[admin]\ntoken = \"env:KW_ADMIN\"\n";

/// Every surface an operator or a caller can read, checked for every configured secret.
async fn assert_no_secret_anywhere(h: &Harness) {
    h.check_no_secret(&h.logs());
    for path in [
        "/metrics",
        "/admin/credentials",
        "/admin/credentials/canary",
        "/admin/credentials/canary/history",
        "/admin/config",
    ] {
        let (status, body) = h.get_text(path, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200, "{path}: {body}");
        h.check_no_secret(&body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_key_echoed_by_an_upstream_reaches_no_caller_log_metric_or_admin_answer() {
    let h = start(
        "bodies-canary",
        OPENAI,
        &[
            Cred::new("canary", CANARY)
                .on("openai")
                .with("priority = 10"),
            Cred::new("b", "sk-proj-bodies-sibling-02").on("openai"),
            Cred::new("plain", PLAIN).on("openai"),
        ],
        &format!(
            "{}{}",
            route("gpt", "openai", "gpt-4o", &["canary", "b"]),
            route("solo", "openai", "gpt-4o-mini", &["plain"])
        ),
        ADMIN,
    )
    .await;
    assert!(h.secrets.iter().any(|s| s == CANARY));

    // A success that quotes the key: masked in the body and in every stream event.
    // (`post` fails the test if any configured secret is in the headers or body.)
    h.sim.set(CANARY, Behaviour::EchoKeyInAnswer);
    let r = h.chat("gpt", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "canary");
    let text = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(text, "Your key is …[masked].");
    let r = h.chat("gpt", true).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("tok0 …[masked] "), "{}", r.body);
    assert!(r.body.contains("[DONE]"), "{}", r.body);

    // A 400 that quotes the key is the caller's answer: passed on, masked, still JSON.
    h.sim.set(CANARY, Behaviour::EchoKey { status: 400 });
    let r = h.chat("gpt", false).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let v = r.json();
    assert_eq!(v["error"]["code"], "invalid_value");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("…[masked]")),
        "{v}"
    );

    // An OpenAI-style 401 that quotes the key: failed over, and the key is in no log line
    // (the classifier's explanation quotes the message, masked).
    h.sim.set(CANARY, Behaviour::EchoKey { status: 401 });
    let r = h.chat("gpt", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "b");
    h.eventually("the 401 in the decision log", || {
        h.logs().contains("Incorrect API key provided")
    })
    .await;

    // The same 401 for a key of no known shape, with nothing to fail over to: the
    // caller's error quotes the verdict, masked.
    h.sim.set(PLAIN, Behaviour::EchoKey { status: 401 });
    let r = h.chat("solo", false).await;
    assert!(r.status >= 500, "{}: {}", r.status, r.body);
    assert!(
        r.body.contains("Incorrect API key provided: …[masked]"),
        "{}",
        r.body
    );
    h.eventually("the plain key's attempt in the log", || {
        h.logs().contains("\"credential\":\"plain\"")
    })
    .await;
    let (_, plain) = h
        .get_text("/admin/credentials/plain/history", Some(ADMIN_TOKEN))
        .await;
    h.check_no_secret(&plain);
    assert_no_secret_anywhere(&h).await;
}

/// A gateway with two routes on one endpoint: `pair` (the hostile key `a` first, then the
/// healthy `b`) and `solo` (only the hostile key `c`, on another model).
async fn hostile(name: &str, b: Behaviour, extra: &str) -> Harness {
    const A: &str = "sk-ant-bodies-hostile-01";
    const B: &str = "sk-ant-bodies-healthy-02";
    const C: &str = "sk-ant-bodies-hostile-03";
    let h = start(
        name,
        ANTHROPIC,
        &[
            Cred::new("a", A).with("priority = 10"),
            Cred::new("b", B),
            Cred::new("c", C),
        ],
        &format!(
            "{}{}",
            route("pair", "anthropic", "claude-pair", &["a", "b"]),
            route("solo", "anthropic", "claude-solo", &["c"])
        ),
        extra,
    )
    .await;
    h.sim.set(A, b.clone());
    h.sim.set(C, b);
    h
}

/// With a sibling: 200 with the sibling's whole answer. Alone: a non-200 error in the
/// caller's format whose message says what was wrong (`why`), never a partial body.
async fn refused_and_failed_over(name: &str, b: Behaviour, extra: &str, why: &str) {
    let h = hostile(name, b.clone(), extra).await;
    let r = h.messages("pair", false).await;
    assert_eq!(r.status, 200, "{b:?}: {}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "b", "{b:?}");
    let v = r.json();
    assert_eq!(
        v["content"][0]["text"], "Hello from keyward-sim.",
        "{b:?}: {v}"
    );
    assert_eq!(v["stop_reason"], "end_turn");
    // The gateway's stderr is collected by a thread: wait for the line.
    h.eventually(
        &format!("{b:?}: the failed attempt logged with its cause ({why:?})"),
        || h.logs().contains(why),
    )
    .await;

    let r = h.messages("solo", false).await;
    assert_ne!(r.status, 200, "{b:?}: {}", r.body);
    assert!(
        r.status >= 500,
        "{b:?}: an upstream fault, not the caller's: {}",
        r.status
    );
    let v = r.json();
    assert_eq!(v["type"], "error", "{b:?}: Anthropic's error shape: {v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "{b:?}: {message}");
    assert!(
        !r.body.contains("Hello from keyward-sim"),
        "{b:?}: {}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_is_never_a_success() {
    refused_and_failed_over(
        "bodies-short",
        Behaviour::ShortBody { bytes: 60 },
        "",
        "truncated answer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_mid_way_is_never_a_success() {
    refused_and_failed_over(
        "bodies-stall",
        Behaviour::DripBody { ms: 1_500 },
        "[timeouts]\nidle = \"400ms\"\n",
        "the upstream body stalled",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_never_cut_into_a_success() {
    refused_and_failed_over(
        "bodies-huge",
        Behaviour::HugeBody { bytes: 50 << 20 },
        "",
        "larger than 33554432 bytes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_page_is_not_an_api_answer() {
    refused_and_failed_over("bodies-html", Behaviour::Html, "", "not JSON").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_upstream_is_bounded_by_the_request_deadline() {
    // A byte every 300 ms, each well inside the idle limit: about 70 s for the whole body.
    let h = hostile(
        "bodies-drip",
        Behaviour::DripBody { ms: 300 },
        "[timeouts]\nidle = \"5s\"\nrequest = \"2s\"\n",
    )
    .await;
    let t = Instant::now();
    let r = h.messages("solo", false).await;
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the 2 s request deadline bounds the body too, took {took:?}"
    );
    assert_ne!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert!(!r.body.contains("Hello from keyward-sim"), "{}", r.body);
    h.eventually("the cause logged", || h.logs().contains("request deadline"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_error_too_large_to_pass_on_becomes_a_valid_error_in_the_callers_format() {
    let h = hostile(
        "bodies-huge-error",
        Behaviour::HugeError { bytes: 10 << 20 },
        "",
    )
    .await;
    // Anthropic's caller.
    let r = h.messages("solo", false).await;
    assert_eq!(r.status, 400, "the upstream's status is kept: {}", r.body);
    assert!(r.body.len() < 4096, "{} bytes", r.body.len());
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("too large"), "{message}");
    assert!(
        message.contains("messages: roles must alternate"),
        "the start of the upstream's message: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_model_name_is_not_echoed_back() {
    let h = start(
        "bodies-model-name",
        ANTHROPIC,
        &[Cred::new("a", "sk-ant-bodies-model-01")],
        &route("claude", "anthropic", "claude-x", &["a"]),
        "",
    )
    .await;
    let model = "m".repeat(1 << 20);
    let r = h
        .post(
            "/v1/messages",
            json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", &r.body[..r.body.len().min(300)]);
    assert!(r.body.len() < 1024, "{} bytes echoed", r.body.len());
    let v: Value = r.json();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("mmm…") && m.contains("claude")),
        "{v}"
    );
    // The same for a Gemini method name in the path.
    let path = format!("/v1beta/models/gemini-x:{}", "y".repeat(20_000));
    let r = h.post_raw(&path, "{}".into(), Some(GATEWAY_KEY)).await;
    assert_eq!(r.status, 400, "{}", &r.body[..r.body.len().min(300)]);
    assert!(r.body.len() < 1024, "{} bytes echoed", r.body.len());
    assert!(r.body.contains("yyy…"), "{}", r.body);
}

/// An OAuth credential's tokens rotate, so they are not in the configuration's mask: the
/// access token an attempt sent is masked on its own — the refreshed one included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_access_token_echoed_by_an_upstream_is_masked_after_a_refresh_too() {
    const OAUTH: &str = "kind = \"oauth\"\nsubscription = true\n[credentials.oauth]\ntoken_url = \"{sim}/v1/oauth/token\"\nclient_id = \"keyward-tests\"\n";
    let h = crate::support::start_prepared(
        "bodies-oauth",
        ANTHROPIC,
        &[Cred::new("claude-max", "").with(OAUTH)],
        &route("claude", "anthropic", "claude-x", &["claude-max"]),
        ADMIN,
        "full",
        |sim, cfg, env| {
            let t = sim.oauth_grant("echo", Duration::from_secs(3600));
            let file = cfg.with_file_name("echo-tokens.json");
            std::fs::write(
                &file,
                json!({"access_token": t.access_token, "refresh_token": t.refresh_token, "expires_in": 3600}).to_string(),
            )
            .unwrap();
            let (ok, text) = crate::support::keyward_cli(
                cfg,
                env,
                &["credentials", "import", "claude-max", file.to_str().unwrap()],
            );
            assert!(ok, "{text}");
            std::fs::remove_file(&file).unwrap();
        },
    )
    .await;
    // The sim names its tokens `sim-at-GRANT-GENERATION`.
    let tokens = ["sim-at-echo-1", "sim-at-echo-2"];
    let clean = |text: &str| {
        for t in tokens {
            assert!(!text.contains(t), "the OAuth token {t} leaked into {text}");
        }
    };
    h.sim.set("echo", Behaviour::EchoKeyInAnswer);
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["content"][0]["text"], "Your key is …[masked].");
    clean(&r.body);
    // The provider expires the token: refreshed (a new one), retried, echoed, masked.
    h.sim.expire_access("echo");
    let r = h.messages("claude", true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        h.sim.refreshes("echo"),
        1,
        "the retry used a refreshed token"
    );
    assert!(r.body.contains("tok0 …[masked] "), "{}", r.body);
    clean(&r.body);
    let r = h.messages("claude", false).await;
    assert_eq!(r.json()["content"][0]["text"], "Your key is …[masked].");
    clean(&format!("{:?}{}", r.headers, r.body));
}
