//! Cloud credentials end to end: the real binary against the sim's Bedrock (SigV4
//! verified with aws-sigv4, STS session keys that expire), Vertex AI (service account
//! JWT-bearer grant) and Azure OpenAI with Entra ID (client-credentials grant).

use std::time::{Duration, Instant};

use crate::support::{start_prepared, Cred, Harness, ADMIN_TOKEN};
use keyward_sim::TokenEndpoint;

const BEDROCK: &[(&str, &str, &str)] = &[("bedrock", "bedrock", "")];
const ROLE: &str = "arn:aws:iam::123456789012:role/keyward";
const MODEL: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
const ADMIN: &str = "\n[admin]\ntoken = \"env:KW_ADMIN\"\n";

/// A static access key credential (`secret` written to a file beside the config).
fn static_key(id: &str, key_id: &str, secret_file: &str) -> String {
    let _ = id;
    format!("kind = \"cloud\"\n[credentials.aws]\naccess_key_id = \"{key_id}\"\nsecret_access_key = \"file:{secret_file}\"\n")
}

fn bedrock_route(name: &str, creds: &[&str]) -> String {
    let list = creds
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[routes.{name}]\ntargets = [{{ endpoint = \"bedrock\", model = \"{MODEL}\", credentials = [{list}] }}]\n")
}

/// Everything the gateway shows (logs, status, admin API, metrics): no secret in it.
async fn assert_nothing_leaked(h: &Harness, secrets: &[&str]) {
    let mut seen = h.logs();
    seen.push_str(&h.status().to_string());
    seen.push_str(&h.get_text("/admin/credentials", Some(ADMIN_TOKEN)).await.1);
    seen.push_str(&h.get_text("/metrics", Some(ADMIN_TOKEN)).await.1);
    for s in secrets {
        assert!(!seen.contains(s), "secret {s:?} leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bedrock_session_expiring_mid_traffic_is_refreshed_with_no_caller_error() {
    let h = start_prepared(
        "cloud-sts",
        BEDROCK,
        &[Cred::new("bedrock-role", "").on("bedrock").with(&format!(
            "kind = \"cloud\"\n[credentials.aws]\nweb_identity_token_file = \"web-identity\"\nrole_arn = \"{ROLE}\"\nsts_endpoint = \"{{sim}}\"\nrefresh_ahead = \"2s\"\n"
        ))],
        &format!("{}{ADMIN}", bedrock_route("claude", &["bedrock-role"])),
        "",
        "full",
        |sim, cfg, _| {
            // Session keys that live 4 s: several generations during the traffic.
            sim.aws_web_identity("wit-oidc-token-1", ROLE, "role-a", Duration::from_secs(4));
            std::fs::write(cfg.with_file_name("web-identity"), "wit-oidc-token-1\n").unwrap();
        },
    )
    .await;
    let started = Instant::now();
    let mut n = 0;
    let mut expired_early = false;
    while started.elapsed() < Duration::from_secs(9) {
        if !expired_early && started.elapsed() > Duration::from_secs(5) {
            // AWS ends the session early (a revoked session, a clock): the next request
            // is rejected with ExpiredTokenException, refreshed and retried.
            h.sim.aws_expire_sessions();
            expired_early = true;
        }
        let stream = n % 2 == 1;
        let r = h.messages("claude", stream).await;
        assert_eq!(r.status, 200, "request {n}: {}", r.body);
        if stream {
            assert!(r.body.contains("event: message_stop"), "{}", r.body);
            assert!(r.body.contains("content_block_delta"), "{}", r.body);
        } else {
            assert_eq!(r.json()["type"], "message", "{}", r.body);
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = h.sim.sts_calls("role-a");
    assert!(
        calls.iter().filter(|c| *c == "ok").count() >= 3,
        "expected several STS sessions: {calls:?}"
    );
    assert_eq!(h.state_of("credential/bedrock-role"), "healthy");
    let logs = h.logs();
    assert!(
        logs.contains("cloud credential refreshed"),
        "no refresh logged"
    );
    // The early expiry was met by a rejection, a refresh and a retry — not an error.
    assert!(
        logs.contains("access token rejected as expired: refreshed, retrying"),
        "the expired session was never rejected and retried"
    );
    assert_nothing_leaked(&h, &["sim-secret-", "sim-session-", "wit-oidc-token-1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_access_key_is_disabled_after_its_probe_naming_the_key_not_the_secret() {
    let h = start_prepared(
        "cloud-unknown-key",
        BEDROCK,
        &[
            Cred::new("bedrock-gone", "").on("bedrock").with(&format!(
                "priority = 10\n{}",
                static_key("bedrock-gone", "AKIAGONE000000000001", "gone-secret")
            )),
            Cred::new("bedrock-wrong", "").on("bedrock").with(&format!(
                "priority = 5\n{}",
                static_key("bedrock-wrong", "AKIAWRONG00000000002", "wrong-secret")
            )),
            Cred::new("bedrock-ok", "").on("bedrock").with(&static_key(
                "bedrock-ok",
                "AKIAGOOD000000000003",
                "ok-secret",
            )),
        ],
        &format!(
            "{}{ADMIN}",
            bedrock_route("claude", &["bedrock-gone", "bedrock-wrong", "bedrock-ok"])
        ),
        "",
        "full",
        |sim, cfg, _| {
            // AWS knows the good key and the second key (with another secret), not the
            // first.
            sim.aws_key("AKIAGOOD000000000003", "good-secret-value-3");
            sim.aws_key("AKIAWRONG00000000002", "the-real-secret-value-2");
            for (file, secret) in [
                ("gone-secret", "deleted-secret-value-1"),
                ("wrong-secret", "a-stale-secret-value-2"),
                ("ok-secret", "good-secret-value-3"),
            ] {
                std::fs::write(cfg.with_file_name(file), secret).unwrap();
            }
        },
    )
    .await;
    for i in 0..6 {
        let r = h.messages("claude", i % 2 == 1).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-credential"), "bedrock-ok");
    }
    h.eventually("the unknown key disabled", || {
        h.state_of("credential/bedrock-gone") == "disabled"
    })
    .await;
    h.eventually("the wrong secret disabled", || {
        h.state_of("credential/bedrock-wrong") == "disabled"
    })
    .await;
    let status = h.status().to_string();
    assert!(status.contains("UnrecognizedClientException"), "{status}");
    assert!(
        status.contains("AWS does not know access key AKIAGONE000000000001"),
        "{status}"
    );
    assert!(status.contains("create a new access key"), "{status}");
    assert!(
        status.contains("the secret access key does not match access key AKIAWRONG00000000002"),
        "{status}"
    );
    // The probe ran once per key; after the disable, no more requests reach them.
    let before = h.sim.counts("AKIAGOOD000000000003").requests;
    for _ in 0..3 {
        assert_eq!(h.messages("claude", false).await.status, 200);
    }
    assert_eq!(h.sim.counts("AKIAGOOD000000000003").requests, before + 3);
    assert_eq!(h.state_of("credential/bedrock-ok"), "healthy");
    assert_nothing_leaked(
        &h,
        &[
            "deleted-secret-value-1",
            "a-stale-secret-value-2",
            "good-secret-value-3",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_denied_on_one_bedrock_key_moves_that_model_only() {
    let other = "anthropic.claude-3-5-haiku-20241022-v1:0";
    let routes = format!(
        "{}[routes.haiku]\ntargets = [{{ endpoint = \"bedrock\", model = \"{other}\", credentials = [\"key-a\", \"key-b\"] }}]\n{ADMIN}",
        bedrock_route("claude", &["key-a", "key-b"])
    );
    let h = start_prepared(
        "cloud-model-denied",
        BEDROCK,
        &[
            Cred::new("key-a", "").on("bedrock").with(&format!(
                "priority = 10\n{}",
                static_key("key-a", "AKIAKEYA000000000001", "a-secret")
            )),
            Cred::new("key-b", "").on("bedrock").with(&static_key(
                "key-b",
                "AKIAKEYB000000000002",
                "b-secret",
            )),
        ],
        &routes,
        "",
        "full",
        |sim, cfg, _| {
            sim.aws_key("AKIAKEYA000000000001", "secret-a-value-1");
            sim.aws_key("AKIAKEYB000000000002", "secret-b-value-2");
            sim.aws_deny_model("AKIAKEYA000000000001", MODEL);
            std::fs::write(cfg.with_file_name("a-secret"), "secret-a-value-1").unwrap();
            std::fs::write(cfg.with_file_name("b-secret"), "secret-b-value-2").unwrap();
        },
    )
    .await;
    for _ in 0..4 {
        let r = h.messages("claude", false).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-credential"), "key-b");
    }
    h.eventually("key-a × the denied model out of rotation", || {
        let s = h.state_of(&format!("credential_model/key-a/{MODEL}"));
        s == "disabled" || s == "suspect" || s == "probing"
    })
    .await;
    // The other model still goes to key-a, which stays healthy.
    for _ in 0..3 {
        let r = h.messages("haiku", false).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-credential"), "key-a");
    }
    assert_eq!(h.state_of("credential/key-a"), "healthy");
    let status = h.status().to_string();
    assert!(status.contains("AccessDeniedException"), "{status}");
    assert_nothing_leaked(&h, &["secret-a-value-1", "secret-b-value-2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sts_disables_nothing_and_traffic_fails_over() {
    let h = start_prepared(
        "cloud-sts-down",
        BEDROCK,
        &[
            Cred::new("bedrock-role", "").on("bedrock").with(&format!(
                "priority = 10\nkind = \"cloud\"\n[credentials.aws]\nweb_identity_token_file = \"web-identity\"\nrole_arn = \"{ROLE}\"\nsts_endpoint = \"{{sim}}\"\n"
            )),
            Cred::new("bedrock-key", "")
                .on("bedrock")
                .with(&static_key("bedrock-key", "AKIAKEY0000000000001", "k-secret")),
        ],
        &format!("{}{ADMIN}", bedrock_route("claude", &["bedrock-role", "bedrock-key"])),
        "",
        "full",
        |sim, cfg, _| {
            sim.aws_web_identity("wit-2", ROLE, "role-b", Duration::from_secs(3600));
            sim.set_sts(TokenEndpoint::Unavailable);
            sim.aws_key("AKIAKEY0000000000001", "key-secret-value-1");
            std::fs::write(cfg.with_file_name("web-identity"), "wit-2").unwrap();
            std::fs::write(cfg.with_file_name("k-secret"), "key-secret-value-1").unwrap();
        },
    )
    .await;
    for _ in 0..6 {
        let r = h.messages("claude", false).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-credential"), "bedrock-key");
    }
    assert_eq!(h.state_of("credential/bedrock-role"), "healthy");
    h.sim.set_sts(TokenEndpoint::Ok);
    h.eventually("the role's session fetched once STS is back", || {
        h.sim.sts_calls("role-b").contains(&"ok".to_owned())
    })
    .await;
    assert_eq!(h.state_of("credential/bedrock-role"), "healthy");
}
