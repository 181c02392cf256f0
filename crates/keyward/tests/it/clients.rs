//! Real clients against a dead route (docs/clients.md): a gateway key's `dead_keys_status`
//! changes the status of the "every credential is dead" error, and keeps its message and
//! its `x-should-retry: false`; the official SDKs stop at once and show the message.

use keyward_sim::Behaviour;
use serde_json::json;

use crate::support::*;

/// A second gateway key, for a client that retries every 5xx: `dead_keys_status = 400`.
/// Its key is the harness's admin token (this config has no admin API).
const CLAW_KEY: &str = ADMIN_TOKEN;

async fn dead_route(name: &str) -> Harness {
    let h = start(
        name,
        &[("anthropic", "anthropic", ""), ("openai", "openai", "/v1")],
        &[
            Cred::new("a-dead", "sk-ant-clients-dead-01"),
            Cred::new("o-dead", "sk-proj-clients-dead-02").on("openai"),
        ],
        &format!(
            "{}{}",
            route("claude", "anthropic", "claude-x", &["a-dead"]),
            route("gpt", "openai", "gpt-4o", &["o-dead"])
        ),
        "\n[[gateway_keys]]\nname = \"openclaw\"\nkey = \"env:KW_ADMIN\"\ndead_keys_status = 400\n",
    )
    .await;
    h.sim.set("sk-ant-clients-dead-01", Behaviour::Revoked);
    h.sim.set("sk-proj-clients-dead-02", Behaviour::Revoked);
    // Each key's first request meets the revocation; once confirmed, it is disabled.
    for (path, model) in [("/v1/messages", "claude"), ("/v1/chat/completions", "gpt")] {
        h.post(path, json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
    }
    h.eventually("both keys disabled", || {
        h.state_of("credential/a-dead") == "disabled"
            && h.state_of("credential/o-dead") == "disabled"
    })
    .await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_keys_dead_keys_status_changes_the_status_and_keeps_the_message() {
    let h = dead_route("clients-status").await;
    for (path, model, cred) in [
        ("/v1/messages", "claude", "a-dead"),
        ("/v1/chat/completions", "gpt", "o-dead"),
    ] {
        let body = json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let default = h.post_raw(path, body.clone(), Some(GATEWAY_KEY)).await;
        let claw = h.post_raw(path, body, Some(CLAW_KEY)).await;
        assert_eq!(default.status, 503, "{}", default.body);
        assert_eq!(claw.status, 400, "{}", claw.body);
        for r in [&default, &claw] {
            assert_eq!(r.header("x-should-retry"), "false", "{path}");
            assert_eq!(r.header("retry-after"), "", "{path}");
            let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(
                message.contains("exhausted")
                    && message.contains(cred)
                    && message.contains("keyward reset"),
                "the actionable message: {message}"
            );
        }
        assert_eq!(
            default.json()["error"]["message"],
            claw.json()["error"]["message"],
            "the same message under either status"
        );
        // The native type of a 400 in both formats (Anthropic and OpenAI name it alike).
        assert_eq!(
            claw.json()["error"]["type"],
            "invalid_request_error",
            "{}",
            claw.body
        );
        if path == "/v1/chat/completions" {
            assert_eq!(
                claw.json()["error"]["code"],
                "upstream_credentials_exhausted"
            );
        }
    }
    h.check_no_secret(&h.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_stop_at_once_and_show_the_message_under_either_status() {
    let h = dead_route("clients-sdk").await;
    for (scenario, model, cred) in [
        ("anthropic_revoked", "claude", "a-dead"),
        ("openai_revoked", "gpt", "o-dead"),
    ] {
        for (key, status) in [(GATEWAY_KEY, "503"), (CLAW_KEY, "400")] {
            let v = run_sdk(
                &h,
                scenario,
                &[
                    ("KEYWARD_KEY", key),
                    ("KEYWARD_MODEL", model),
                    ("KEYWARD_EXPECT", cred),
                    ("KEYWARD_STATUS", status),
                ],
            )
            .await;
            assert_eq!(v["attempts"], 1, "{v}");
            assert!(v["message"].as_str().unwrap().contains("exhausted"), "{v}");
        }
    }
}
