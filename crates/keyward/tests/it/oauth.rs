#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]
//! OAuth credentials end to end: the real binary, tokens imported with
//! `keyward credentials import`, refreshed against the sim's token endpoint (which rotates
//! refresh tokens and revokes a grant whose consumed refresh token is reused).

use std::time::{Duration, Instant};

use crate::support::{route, start_prepared, Cred, Harness, ANTHROPIC};
use keyward_sim::{Sim, TokenEndpoint};
use serde_json::json;

pub(crate) const CLAUDE: &str = "kind = \"oauth\"\nsubscription = true\n[credentials.oauth]\ntoken_url = \"{sim}/v1/oauth/token\"\nclient_id = \"keyward-tests\"\n";

/// Imports `grant`'s fresh tokens (lifetime `ttl`) for credential `id` through the CLI, as
/// an operator would, checking that nothing secret is printed.
pub(crate) fn import(
    sim: &Sim,
    cfg: &std::path::Path,
    env: &[(String, String)],
    id: &str,
    grant: &str,
    ttl: Duration,
) {
    let t = sim.oauth_grant(grant, ttl);
    let file = cfg.with_file_name(format!("{id}-tokens.json"));
    // Claude Code's own file shape.
    let expires_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + ttl.as_millis() as u64;
    std::fs::write(
        &file,
        json!({"claudeAiOauth": {"accessToken": t.access_token, "refreshToken": t.refresh_token, "expiresAt": expires_at_ms}}).to_string(),
    )
    .unwrap();
    let (ok, text) = crate::support::keyward_cli(
        cfg,
        env,
        &["credentials", "import", id, file.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("imported OAuth tokens for {id}")),
        "{text}"
    );
    assert!(
        !text.contains(&t.access_token) && !text.contains(&t.refresh_token),
        "import printed a token: {text}"
    );
    std::fs::remove_file(&file).unwrap();
}

/// [`import`] of an hour-long `claude` grant for credential `claude-max`, as
/// `start_prepared` takes it.
fn import_claude_max(sim: &Sim, cfg: &std::path::Path, env: &[(String, String)]) {
    import(
        sim,
        cfg,
        env,
        "claude-max",
        "claude",
        Duration::from_secs(3600),
    );
}

async fn gateway(name: &str, ttl: Duration, extra_cred: &str) -> Harness {
    let more = format!("{CLAUDE}{extra_cred}");
    let h = start_prepared(
        name,
        ANTHROPIC,
        &[Cred::new("claude-max", "").with(&more)],
        &route("claude", "anthropic", "claude-x", &["claude-max"]),
        "",
        "full",
        |sim, cfg, env| import(sim, cfg, env, "claude-max", "claude", ttl),
    )
    .await;
    h
}

/// No token the sim issued for `grant` appears in the gateway's logs, the state file's
/// status output, or the admin API.
async fn assert_no_token_leaked(h: &Harness, grant: &str) {
    let mut seen = h.logs();
    seen.push_str(&h.status().to_string());
    seen.push_str(
        &h.get_text("/admin/credentials", Some(crate::support::ADMIN_TOKEN))
            .await
            .1,
    );
    seen.push_str(
        &h.get_text("/metrics", Some(crate::support::ADMIN_TOKEN))
            .await
            .1,
    );
    assert!(
        !seen.contains(&format!("sim-at-{grant}-")) && !seen.contains(&format!("sim-rt-{grant}-")),
        "a token leaked"
    );
}

const ADMIN: &str = "\n[admin]\ntoken = \"env:KW_ADMIN\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refreshed_ahead_of_its_expiry_and_no_request_sees_it_expire() {
    let h = start_prepared(
        "oauth-ahead",
        ANTHROPIC,
        &[Cred::new("claude-max", "").with(&format!("{CLAUDE}refresh_ahead = \"3s\"\n"))],
        &format!(
            "{}{ADMIN}",
            route("claude", "anthropic", "claude-x", &["claude-max"])
        ),
        "",
        "full",
        |sim, cfg, env| {
            import(
                sim,
                cfg,
                env,
                "claude-max",
                "claude",
                Duration::from_secs(5),
            )
        },
    )
    .await;
    let started = Instant::now();
    // Steady traffic across the first token's whole life and beyond.
    while started.elapsed() < Duration::from_secs(8) {
        let r = h.messages("claude", false).await;
        assert_eq!(r.status, 200, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcomes = h.sim.counts("claude").outcomes;
    assert!(
        h.sim.refreshes("claude") >= 1,
        "no refresh: {:?}",
        h.sim.token_calls("claude")
    );
    assert_eq!(
        outcomes.get("expired_token"),
        None,
        "a request reached the provider with an expired token: {outcomes:?}"
    );
    assert!(outcomes["ok"] >= 40, "{outcomes:?}");
    h.eventually("the refresh's log line", || {
        h.logs().contains("OAuth token refreshed and stored")
    })
    .await;
    let metrics = h
        .get_text("/metrics", Some(crate::support::ADMIN_TOKEN))
        .await
        .1;
    assert!(
        metrics.contains("keyward_oauth_refreshes_total{credential=\"claude-max\",outcome=\"ok\"}"),
        "{metrics}"
    );
    assert_no_token_leaked(&h, "claude").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_on_an_expired_token_cause_one_refresh_and_no_error() {
    let h = gateway("oauth-fifty", Duration::from_secs(3600), "").await;
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The provider expires the access token early (its clock, a revocation of the
    // session): every request in flight gets 401 "token expired".
    h.sim.expire_access("claude");
    let replies =
        futures_util::future::join_all((0..50).map(|_| h.messages("claude", false))).await;
    for r in &replies {
        assert_eq!(r.status, 200, "a caller saw the refresh: {}", r.body);
        assert_eq!(r.header("x-keyward-credential"), "claude-max");
    }
    assert_eq!(
        h.sim.token_calls("claude"),
        ["ok"],
        "one refresh for fifty requests"
    );
    // Invisible to health: the credential never left rotation.
    assert_eq!(h.state_of("credential/claude-max"), "healthy");
    // Streams too, after another early expiry.
    h.sim.expire_access("claude");
    let r = h.messages("claude", true).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("message_stop"), "{}", r.body);
    assert_eq!(h.sim.refreshes("claude"), 2);
    assert_no_token_leaked(&h, "claude").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_survives_sigkill_right_after_it_is_stored() {
    let mut h = gateway("oauth-sigkill", Duration::from_secs(3600), "").await;
    // The next refresh stops the gateway right after the rotated tokens are committed,
    // before it uses them: the worst moment to die.
    h.kill_and_restart(&[("KEYWARD_FAILPOINT", "after-token-store")]);
    h.sim.expire_access("claude");
    let pending = {
        let client = h.client.clone();
        let url = format!("{}/v1/messages", h.url);
        tokio::spawn(async move {
            client
                .post(url)
                .header("x-api-key", crate::support::GATEWAY_KEY)
                .header("content-type", "application/json")
                .body(json!({"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}).to_string())
                .send()
                .await
        })
    };
    h.eventually("the failpoint", || {
        h.logs().contains("failpoint after-token-store reached")
    })
    .await;
    assert_eq!(h.sim.token_calls("claude"), ["ok"]);
    // SIGKILL: no shutdown code runs.
    h.kill_and_restart(&[]);
    let _ = pending.await;
    // The restarted gateway must hold the rotated refresh token: its next refresh is
    // accepted (reusing the consumed one would revoke the whole grant).
    h.sim.expire_access("claude");
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        h.sim.token_calls("claude"),
        ["ok", "ok"],
        "the restarted gateway used a consumed refresh token"
    );
    assert_no_token_leaked(&h, "claude").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_disables_with_a_log_in_again_remedy() {
    let h = gateway("oauth-invalid-grant", Duration::from_secs(3600), "").await;
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200);
    h.sim.revoke_grant("claude");
    let r = h.messages("claude", false).await;
    // Nothing usable is left: the caller gets 503 in its own format, saying what to do.
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["type"], "error", "{}", r.body);
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("invalid_grant") && message.contains("log in again"),
        "{message}"
    );
    h.eventually("the disable on disk", || {
        h.state_of("credential/claude-max") == "disabled"
    })
    .await;
    let scope = h.status()["not_healthy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scope"] == "credential/claude-max")
        .cloned()
        .unwrap();
    let evidence = scope["health"]["evidence"].as_str().unwrap().to_owned();
    assert!(evidence.contains("invalid_grant"), "{evidence}");
    assert!(
        evidence.contains("log in again")
            && evidence.contains("keyward credentials import claude-max"),
        "{evidence}"
    );
    // One token endpoint call: a dead grant is not hammered.
    assert_eq!(h.sim.token_calls("claude"), ["revoked"]);
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(h.sim.token_calls("claude"), ["revoked"]);
    assert_no_token_leaked(&h, "claude").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_again_brings_a_revoked_grant_back_without_a_restart() {
    let h = start_prepared(
        "oauth-relogin",
        ANTHROPIC,
        &[Cred::new("claude-max", "").with(CLAUDE)],
        &format!(
            "{}{ADMIN}",
            route("claude", "anthropic", "claude-x", &["claude-max"])
        ),
        "",
        "full",
        import_claude_max,
    )
    .await;
    h.sim.revoke_grant("claude");
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 503, "{}", r.body);
    h.eventually("the disable", || {
        h.state_of("credential/claude-max") == "disabled"
    })
    .await;
    // The operator logs in again and imports the new grant; the CLI tells the running
    // gateway (admin API reload), which reads the new grant from the state file.
    let cfg_text = std::fs::read_to_string(&h.config).unwrap();
    // The CLI reaches the gateway at the config's `listen`; the test gateway listens on
    // port 0, so point the config at its real address first.
    let addr = h.url.trim_start_matches("http://");
    std::fs::write(
        &h.config,
        cfg_text.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\"")),
    )
    .unwrap();
    import(
        &h.sim,
        &h.config,
        &h.env,
        "claude-max",
        "claude-2",
        Duration::from_secs(3600),
    );
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "claude-max");
    assert!(h.sim.counts("claude-2").requests >= 1);
    assert_eq!(h.state_of("credential/claude-max"), "healthy");
    // The old grant was never refreshed again.
    assert_eq!(h.sim.token_calls("claude"), ["revoked"]);
    assert_no_token_leaked(&h, "claude-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_disables_nothing_and_the_refresh_succeeds_when_it_returns() {
    let h = start_prepared(
        "oauth-503",
        ANTHROPIC,
        &[
            Cred::new("claude-max", "").with(CLAUDE),
            Cred::new("team-key", "sk-ant-team-key-1"),
        ],
        &format!(
            "{}{ADMIN}",
            route(
                "claude",
                "anthropic",
                "claude-x",
                &["claude-max", "team-key"]
            )
        ),
        "",
        "full",
        import_claude_max,
    )
    .await;
    h.sim.set_token_endpoint(TokenEndpoint::Unavailable);
    h.sim.expire_access("claude");
    // Requests keep being answered (by the API key) while the token endpoint is down.
    for _ in 0..10 {
        let r = h.messages("claude", false).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let calls = h.sim.token_calls("claude");
    assert!(
        calls.iter().all(|c| c == "unavailable") && !calls.is_empty(),
        "{calls:?}"
    );
    // Bounded: retried with backoff, then left alone for a while, not once per request.
    assert!(
        calls.len() <= 6,
        "the token endpoint was hammered: {calls:?}"
    );
    assert_eq!(h.state_of("credential/claude-max"), "healthy");
    h.sim.set_token_endpoint(TokenEndpoint::Ok);
    // The next request that picks the credential after its pause refreshes it.
    let until = Instant::now() + Duration::from_secs(20);
    while h.sim.refreshes("claude") == 0 {
        assert!(
            Instant::now() < until,
            "no refresh after the endpoint returned"
        );
        let r = h.messages("claude", false).await;
        assert_eq!(r.status, 200, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.sim.refreshes("claude"), 1);
    let before = h
        .sim
        .counts("claude")
        .outcomes
        .get("ok")
        .copied()
        .unwrap_or(0);
    for _ in 0..4 {
        let r = h.messages("claude", false).await;
        assert_eq!(r.status, 200);
    }
    let after = h
        .sim
        .counts("claude")
        .outcomes
        .get("ok")
        .copied()
        .unwrap_or(0);
    assert!(after > before, "the OAuth credential is back in use");
    assert_no_token_leaked(&h, "claude").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codex_token_serves_only_the_responses_api_and_other_callers_through_it() {
    let more = "kind = \"oauth\"\nsubscription = true\n[credentials.oauth]\ntoken_url = \"{sim}/oauth/token\"\nclient_id = \"keyward-tests\"\n";
    let h = start_prepared(
        "oauth-codex",
        &[("openai", "openai", "/v1")],
        &[Cred::new("codex", "").on("openai").with(more)],
        &route("gpt", "openai", "gpt-x", &["codex"]),
        "",
        "full",
        |sim, cfg, env| import(sim, cfg, env, "codex", "codex", Duration::from_secs(3600)),
    )
    .await;
    let r = h
        .post("/v1/responses", json!({"model": "gpt", "input": "hi"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "codex");
    // A Chat caller is served through the Responses API (translated, docs/translation.md):
    // the Codex token never reaches Chat Completions.
    let r = h.chat("gpt", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["object"], "chat.completion", "{}", r.body);
    let sent = h.sim.received("codex");
    assert!(!sent.is_empty());
    for body in &sent {
        assert!(
            body.get("input").is_some() && body.get("messages").is_none(),
            "a Codex token was sent to Chat Completions: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspect_whose_token_is_refused_is_refreshed_by_its_probe_and_back_in_rotation() {
    let h = start_prepared(
        "oauth-probe-refresh",
        ANTHROPIC,
        &[
            Cred::new("claude-max", "").with(CLAUDE),
            Cred::new("team-key", "sk-ant-team-key-2"),
        ],
        &route(
            "claude",
            "anthropic",
            "claude-x",
            &["claude-max", "team-key"],
        ),
        "",
        "full",
        import_claude_max,
    )
    .await;
    // Every token the provider issues is refused as it arrives: refreshing does not help,
    // and after three refused fresh tokens the credential is suspect (never disabled).
    h.sim.set_grant_ttl("claude", Duration::ZERO);
    h.sim.expire_access("claude");
    let until = Instant::now() + Duration::from_secs(20);
    while h.state_of("credential/claude-max") == "healthy" {
        assert!(
            Instant::now() < until,
            "the refused token never made it suspect"
        );
        let r = h.messages("claude", false).await;
        assert_eq!(r.status, 200, "the API key answers meanwhile: {}", r.body);
    }
    // The provider issues good tokens again, but the credential's current one stays
    // refused: its probe must renew it, as a request would, or it never serves again.
    h.sim.set_grant_ttl("claude", Duration::from_secs(3600));
    let until = Instant::now() + Duration::from_secs(20);
    while h.state_of("credential/claude-max") != "healthy" {
        assert!(
            Instant::now() < until,
            "still {} after 20 s: the probe kept the refused token\n{}",
            h.state_of("credential/claude-max"),
            h.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h
        .logs()
        .contains("probe's token rejected: refreshed, probing again"));
    assert_ne!(h.state_of("credential/claude-max"), "disabled");
    assert_no_token_leaked(&h, "claude").await;
}
