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
    const RETRIED: &str = "access token rejected as expired: refreshed, retrying";
    let retried = || h.logs().contains(RETRIED);
    // Past 5 s, AWS ends the session early (a revoked session, a clock): the next request
    // is rejected with ExpiredTokenException, refreshed and retried. Ended again before
    // each request until that is seen: a refresh ahead of expiry may replace an ended
    // session before any request meets it.
    while started.elapsed() < Duration::from_secs(9)
        || (!retried() && started.elapsed() < Duration::from_secs(40))
    {
        if started.elapsed() > Duration::from_secs(5) && !retried() {
            h.sim.aws_expire_sessions();
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
        logs.contains(RETRIED),
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
    // The admin API says which key each credential is, never its secret.
    let (_, admin) = h.get_text("/admin/credentials", Some(ADMIN_TOKEN)).await;
    assert!(
        admin.contains("aws access key AKIAGONE000000000001"),
        "{admin}"
    );
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

const AZURE: &[(&str, &str, &str)] = &[("azure", "azure-openai", "")];

fn entra(tenant: &str, client: &str, secret_file: &str) -> String {
    format!("kind = \"cloud\"\n[credentials.entra]\ntenant_id = \"{tenant}\"\nclient_id = \"{client}\"\nclient_secret = \"file:{secret_file}\"\nauthority = \"{{sim}}\"\n")
}

/// An Azure route over an Entra ID credential (preferred) and an api-key one, with the
/// app registered at the sim's token endpoint and its client secret written to a file.
struct EntraSetup {
    app: &'static str,
    /// The client secret the sim's tenant knows.
    registered_secret: &'static str,
    /// The client secret the gateway is given.
    written_secret: &'static str,
    api_key: &'static str,
    token_endpoint: TokenEndpoint,
}

async fn start_entra(name: &str, e: EntraSetup) -> Harness {
    start_prepared(
        name,
        AZURE,
        &[
            Cred::new("azure-entra", "").on("azure").with(&format!(
                "priority = 10\n{}",
                entra("tenant-1", e.app, "entra-secret")
            )),
            Cred::new("azure-key", e.api_key).on("azure"),
        ],
        &format!(
            "{}{ADMIN}",
            crate::support::route("gpt", "azure", "gpt-4o", &["azure-entra", "azure-key"])
        ),
        "",
        "full",
        |sim, cfg, _| {
            sim.entra_app(
                "tenant-1",
                e.app,
                e.registered_secret,
                Duration::from_secs(3600),
            );
            sim.set_entra_token_endpoint(e.token_endpoint);
            std::fs::write(cfg.with_file_name("entra-secret"), e.written_secret).unwrap();
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entra_token_endpoint_outage_disables_nothing() {
    let h = start_entra(
        "cloud-entra-down",
        EntraSetup {
            app: "app-1",
            registered_secret: "entra-client-secret-1",
            written_secret: "entra-client-secret-1",
            api_key: "azure-api-key-value-1",
            token_endpoint: TokenEndpoint::Unavailable,
        },
    )
    .await;
    for _ in 0..10 {
        let r = h.chat("gpt", false).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-credential"), "azure-key");
    }
    assert_eq!(h.state_of("credential/azure-entra"), "healthy");
    let calls = h.sim.cloud_token_calls("app-1");
    assert!(
        !calls.is_empty() && calls.len() <= 9,
        "the token endpoint was hammered or never called: {calls:?}"
    );
    assert!(calls.iter().all(|c| c == "unavailable"), "{calls:?}");
    // The endpoint comes back: the app's token is fetched and traffic returns to it.
    h.sim.set_entra_token_endpoint(TokenEndpoint::Ok);
    h.eventually("an Entra token issued", || {
        h.sim.cloud_token_calls("app-1").contains(&"ok".to_owned())
    })
    .await;
    let r = h.chat("gpt", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "azure-entra");
    // A token the provider expires early is refreshed and retried, invisibly.
    h.sim.expire_cloud_tokens();
    let r = h.chat("gpt", true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "azure-entra");
    assert_eq!(h.state_of("credential/azure-entra"), "healthy");
    assert_nothing_leaked(&h, &["entra-client-secret-1", "sim-cat-"]).await;
}

const VERTEX: &[(&str, &str, &str)] = &[("vertex", "vertex-ai", "")];
const CLAUDE_VERTEX: &str = "claude-sonnet-4@20250514";

/// Writes the test service account's key file (its token endpoint the sim's) as `file`,
/// registers the key with the sim as `email`'s.
fn service_account(sim: &keyward_sim::Sim, cfg: &std::path::Path, file: &str, email: &str) {
    use base64::Engine as _;
    let text = include_str!("fixtures/service-account.json");
    let mut sa: serde_json::Value = serde_json::from_str(text).unwrap();
    sa["client_email"] = email.into();
    sa["token_uri"] = format!("{}/token", sim_url(cfg)).into();
    let pem = sa["private_key"].as_str().unwrap().to_owned();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    sim.google_service_account(
        email,
        sa["private_key_id"].as_str().unwrap(),
        &der,
        Duration::from_secs(3600),
    );
    std::fs::write(cfg.with_file_name(file), sa.to_string()).unwrap();
}

/// The sim's URL, as the harness wrote it into the config.
fn sim_url(cfg: &std::path::Path) -> String {
    let text = std::fs::read_to_string(cfg).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("base_url = \""))
        .map(|l| l.trim_end_matches('"').to_owned())
        .unwrap()
}

fn google(file: &str) -> String {
    format!("kind = \"cloud\"\n[credentials.google]\nservice_account_file = \"{file}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_vertex_service_account_key_disables_with_create_a_new_key() {
    let routes = format!(
        "[routes.claude]\ntargets = [{{ endpoint = \"vertex\", model = \"{CLAUDE_VERTEX}\", credentials = [\"sa-old\", \"sa-new\"] }}]\n[routes.gemini-pro]\ntargets = [{{ endpoint = \"vertex\", model = \"gemini-2.5-pro\", credentials = [\"sa-new\"] }}]\n{ADMIN}"
    );
    let h = start_prepared(
        "cloud-vertex",
        VERTEX,
        &[
            Cred::new("sa-old", "")
                .on("vertex")
                .with(&format!("priority = 10\n{}", google("sa-old.json"))),
            Cred::new("sa-new", "")
                .on("vertex")
                .with(&google("sa-new.json")),
        ],
        &routes,
        "",
        "full",
        |sim, cfg, _| {
            service_account(sim, cfg, "sa-old.json", "old@p.iam.gserviceaccount.com");
            service_account(sim, cfg, "sa-new.json", "new@p.iam.gserviceaccount.com");
        },
    )
    .await;
    // Claude on Vertex, whole and streamed, and Gemini on Vertex.
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "sa-old");
    assert_eq!(r.json()["type"], "message");
    let r = h.messages("claude", true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("event: message_stop"), "{}", r.body);
    let r = h
        .post(
            "/v1beta/models/gemini-pro:generateContent",
            serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("candidates"), "{}", r.body);
    // The old key is deleted; its access token runs out; the next refresh is refused.
    h.sim.google_delete_key("old@p.iam.gserviceaccount.com");
    h.sim.expire_cloud_tokens();
    for _ in 0..3 {
        let r = h.messages("claude", false).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-credential"), "sa-new");
    }
    assert_eq!(h.state_of("credential/sa-old"), "disabled");
    let status = h.status().to_string();
    assert!(status.contains("create a new key"), "{status}");
    assert!(status.contains("old@p.iam.gserviceaccount.com"), "{status}");
    assert_eq!(
        h.sim
            .cloud_token_calls("old@p.iam.gserviceaccount.com")
            .iter()
            .filter(|c| *c == "refused")
            .count(),
        1,
        "the refused key was asked again"
    );
    assert_eq!(h.state_of("credential/sa-new"), "healthy");
    let key: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/service-account.json")).unwrap();
    let key_line = key["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(3)
        .unwrap()
        .to_owned();
    assert_nothing_leaked(&h, &["sim-cat-", "PRIVATE KEY", &key_line]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_is_read_again_when_its_session_expires() {
    let h = start_prepared(
        "cloud-profile",
        BEDROCK,
        &[Cred::new("bedrock-profile", "").on("bedrock").with(
            "kind = \"cloud\"\n[credentials.aws]\nprofile = \"bedrock\"\ncredentials_file = \"aws-credentials\"\n",
        )],
        &format!("{}{ADMIN}", bedrock_route("claude", &["bedrock-profile"])),
        "",
        "full",
        |sim, cfg, _| {
            sim.aws_session_key("ASIAFIRST00000000001", "first-secret-value", "first-session-token", Duration::from_secs(3600));
            std::fs::write(
                cfg.with_file_name("aws-credentials"),
                "[bedrock]\naws_access_key_id = ASIAFIRST00000000001\naws_secret_access_key = first-secret-value\naws_session_token = first-session-token\n",
            )
            .unwrap();
        },
    )
    .await;
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // AWS ends the old session; a tool renews the file with the next one.
    h.sim.aws_expire_sessions();
    std::fs::write(
        h.dir.join("aws-credentials"),
        "[bedrock]\naws_access_key_id = ASIASECOND0000000002\naws_secret_access_key = second-secret-value\naws_session_token = second-session-token\n",
    )
    .unwrap();
    h.sim.aws_session_key(
        "ASIASECOND0000000002",
        "second-secret-value",
        "second-session-token",
        Duration::from_secs(3600),
    );
    for stream in [false, true] {
        let r = h.messages("claude", stream).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(h.sim.counts("ASIASECOND0000000002").requests, 2);
    assert_eq!(h.state_of("credential/bedrock-profile"), "healthy");
    assert_nothing_leaked(
        &h,
        &[
            "first-secret-value",
            "first-session-token",
            "second-secret-value",
            "second-session-token",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock_disables_no_key() {
    let h = start_prepared(
        "cloud-skew",
        BEDROCK,
        &[Cred::new("bedrock-key", "").on("bedrock").with(&static_key(
            "bedrock-key",
            "AKIASKEW000000000001",
            "k-secret",
        ))],
        &format!("{}{ADMIN}", bedrock_route("claude", &["bedrock-key"])),
        // Inconclusive probes retried quickly, so recovery shows within the wait.
        "probe_retry = \"300ms\"\nprobe_retry_max = \"1s\"\n",
        "full",
        |sim, cfg, _| {
            sim.aws_key("AKIASKEW000000000001", "skew-secret-value-1");
            std::fs::write(cfg.with_file_name("k-secret"), "skew-secret-value-1").unwrap();
        },
    )
    .await;
    // AWS's clock is 10 minutes ahead of this host's: every signature is "expired".
    h.sim.aws_skew(600);
    for _ in 0..4 {
        let r = h.messages("claude", false).await;
        assert!(r.status >= 500, "{}", r.body);
        assert!(!r.body.contains("skew-secret-value-1"));
    }
    // Its probe sees the same: never confirmed into a disable.
    h.eventually("the key's probe", || {
        h.logs()
            .lines()
            .any(|l| l.contains("probe finished") && l.contains("bedrock-key"))
    })
    .await;
    assert_ne!(h.state_of("credential/bedrock-key"), "disabled");
    assert!(
        h.logs().contains("Signature expired"),
        "the skew was never seen"
    );
    h.sim.aws_skew(0);
    h.eventually("the key serves again once the clocks agree", || {
        h.state_of("credential/bedrock-key") == "healthy"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_format_callers_reach_bedrocks_openai_endpoint_signed() {
    let h = start_prepared(
        "cloud-bedrock-chat",
        BEDROCK,
        &[Cred::new("bedrock-key", "")
            .on("bedrock")
            .with(&static_key("bedrock-key", "AKIACHAT000000000001", "k-secret"))],
        &format!(
            "[routes.gpt-oss]\ntargets = [{{ endpoint = \"bedrock\", model = \"openai.gpt-oss-120b-1:0\", credentials = [\"bedrock-key\"] }}]\n{ADMIN}"
        ),
        "",
        "full",
        |sim, cfg, _| {
            sim.aws_key("AKIACHAT000000000001", "chat-secret-value-1");
            std::fs::write(cfg.with_file_name("k-secret"), "chat-secret-value-1").unwrap();
        },
    )
    .await;
    let r = h.chat("gpt-oss", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["object"], "chat.completion");
    let r = h.chat("gpt-oss", true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("data: [DONE]"), "{}", r.body);
    assert_eq!(h.sim.counts("AKIACHAT000000000001").requests, 2);
    // Anthropic's count_tokens is not Bedrock's: such a request is not sent there.
    let r = h
        .post(
            "/v1/messages/count_tokens",
            serde_json::json!({"model": "gpt-oss", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_ne!(r.status, 200, "{}", r.body);
    assert_eq!(h.sim.counts("AKIACHAT000000000001").requests, 2);
    // `keyward check` probes the key the way the gateway's probes do: signed, and fine.
    let (ok, text) = crate::support::keyward_cli(&h.config, &h.env, &["check"]);
    assert!(ok, "{text}");
    assert!(text.contains("bedrock-key"), "{text}");
    assert!(!text.contains("chat-secret-value-1"), "{text}");
    assert_eq!(
        h.sim.counts("AKIACHAT000000000001").probes + h.sim.counts("AKIACHAT000000000001").requests,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_on_an_expired_session_cause_one_sts_call() {
    let h = start_prepared(
        "cloud-sts-single-flight",
        BEDROCK,
        &[Cred::new("bedrock-role", "").on("bedrock").with(&format!(
            "kind = \"cloud\"\n[credentials.aws]\nweb_identity_token_file = \"web-identity\"\nrole_arn = \"{ROLE}\"\nsts_endpoint = \"{{sim}}\"\n"
        ))],
        &format!("{}{ADMIN}", bedrock_route("claude", &["bedrock-role"])),
        "",
        "full",
        |sim, cfg, _| {
            sim.aws_web_identity("wit-3", ROLE, "role-c", Duration::from_secs(3600));
            std::fs::write(cfg.with_file_name("web-identity"), "wit-3").unwrap();
        },
    )
    .await;
    assert_eq!(h.messages("claude", false).await.status, 200);
    assert_eq!(h.sim.sts_calls("role-c"), ["ok"]);
    h.sim.aws_expire_sessions();
    let replies =
        futures_util::future::join_all((0..20).map(|i| h.messages("claude", i % 2 == 0))).await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(
        h.sim.sts_calls("role-c"),
        ["ok", "ok"],
        "one refresh for all"
    );
    assert_eq!(h.state_of("credential/bedrock-role"), "healthy");
}

#[test]
fn config_check_explains_cloud_mistakes_without_printing_a_secret() {
    let dir = std::env::temp_dir().join(format!("keyward-cloud-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("sa.json"),
        "{\"type\": \"service_account\", \"client_email\": \"x\"",
    )
    .unwrap();
    std::fs::write(dir.join("aws-secret"), "aws-secret-value-not-to-print").unwrap();
    let cfg = dir.join("keyward.toml");
    std::fs::write(
        &cfg,
        "[[gateway_keys]]\nname = \"t\"\nkey = \"env:KW_GW\"\n\n\
         [endpoints.bedrock]\nprovider = \"bedrock\"\n\n\
         [endpoints.vertex]\nprovider = \"vertex-ai\"\nregion = \"us-east5\"\nproject = \"p\"\n\n\
         [[credentials]]\nid = \"b\"\nendpoint = \"bedrock\"\nkind = \"cloud\"\n[credentials.aws]\naccess_key_id = \"AKIAEXAMPLE\"\nsecret_access_key = \"file:aws-secret\"\n\n\
         [[credentials]]\nid = \"v\"\nendpoint = \"vertex\"\nkind = \"cloud\"\n[credentials.google]\nservice_account_file = \"sa.json\"\n\n\
         [[credentials]]\nid = \"v2\"\nendpoint = \"vertex\"\nkind = \"cloud\"\n[credentials.google]\nservice_account_file = \"missing.json\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["config", "check"])
        .arg(&cfg)
        .env("KW_GW", "kw-gateway-key-value")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    for want in [
        "endpoints.bedrock.region: missing: Bedrock requests are signed for a region",
        "credentials[1].google.service_account_file:",
        "is not JSON (line 1, column",
        "credentials[2].google.service_account_file: cannot read the service account key",
    ] {
        assert!(text.contains(want), "wanted {want:?} in:\n{text}");
    }
    assert!(!text.contains("aws-secret-value-not-to-print"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_entra_client_secret_disables_at_once_with_create_a_new_secret() {
    let h = start_entra(
        "cloud-entra-wrong",
        EntraSetup {
            app: "app-2",
            registered_secret: "the-current-secret-2",
            written_secret: "a-deleted-secret-2",
            api_key: "azure-api-key-value-2",
            token_endpoint: TokenEndpoint::Ok,
        },
    )
    .await;
    for _ in 0..4 {
        let r = h.chat("gpt", false).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-keyward-credential"), "azure-key");
    }
    h.eventually("the Entra credential disabled", || {
        h.state_of("credential/azure-entra") == "disabled"
    })
    .await;
    let status = h.status().to_string();
    assert!(status.contains("AADSTS7000215"), "{status}");
    assert!(status.contains("create a new client secret"), "{status}");
    assert_eq!(
        h.sim.cloud_token_calls("app-2"),
        ["refused"],
        "a refused secret is not tried again"
    );
    assert_nothing_leaked(&h, &["a-deleted-secret-2", "the-current-secret-2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock_at_googles_token_endpoint_says_fix_the_clock_and_disables_nothing() {
    let h = start_prepared(
        "cloud-vertex-skew",
        VERTEX,
        &[Cred::new("sa", "").on("vertex").with(&google("sa.json"))],
        &format!(
            "[routes.claude]\ntargets = [{{ endpoint = \"vertex\", model = \"{CLAUDE_VERTEX}\", credentials = [\"sa\"] }}]\n{ADMIN}"
        ),
        "",
        "full",
        |sim, cfg, _| {
            // Google's clock is 10 minutes ahead before the gateway asks for a token.
            sim.google_skew(600);
            service_account(sim, cfg, "sa.json", "skew@p.iam.gserviceaccount.com");
        },
    )
    .await;
    let r = h.messages("claude", false).await;
    assert!(r.status >= 500, "{}", r.body);
    h.eventually("the skew reported", || {
        h.logs().contains("fix the clock (NTP), not the key")
    })
    .await;
    assert_ne!(h.state_of("credential/sa"), "disabled");
    assert!(h
        .sim
        .cloud_token_calls("skew@p.iam.gserviceaccount.com")
        .iter()
        .all(|c| c == "skewed"));
    h.sim.google_skew(0);
    h.eventually("a token once the clocks agree", || {
        h.sim
            .cloud_token_calls("skew@p.iam.gserviceaccount.com")
            .contains(&"ok".to_owned())
    })
    .await;
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(h.state_of("credential/sa"), "disabled");
}
