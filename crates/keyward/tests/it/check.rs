#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keyward check` against the simulated provider, as an operator runs it before a deploy.

use keyward_sim::{Behaviour, Sim};

const OK: &str = "sk-ant-check-ok-0001";
const REVOKED: &str = "sk-ant-check-revoked-0002";
const BROKE: &str = "sk-ant-check-broke-0003";

async fn run(dir: &std::path::Path, deep: bool, json: bool) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
    cmd.arg("check")
        .arg("--config")
        .arg(dir.join("keyward.toml"))
        .env("KW_GW", "kw-check-gateway-key")
        .env("K_OK", OK)
        .env("K_REVOKED", REVOKED)
        .env("K_BROKE", BROKE);
    if deep {
        cmd.arg("--deep");
    }
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for s in [OK, REVOKED, BROKE] {
        assert!(!text.contains(s), "a secret leaked: {text}");
    }
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tells_usable_from_unusable_and_deep_finds_exhausted_credit() {
    let sim = Sim::new();
    let server = sim
        .clone()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    sim.set(REVOKED, Behaviour::Revoked);
    sim.set(BROKE, Behaviour::NoCredit);
    let dir = std::env::temp_dir().join(format!("keyward-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut toml = format!(
        "[[gateway_keys]]\nname = \"t\"\nkey = \"env:KW_GW\"\n\n[endpoints.anthropic]\nprovider = \"anthropic\"\nbase_url = \"{}\"\n\n",
        server.url()
    );
    for (id, var) in [
        ("team-ok", "K_OK"),
        ("team-revoked", "K_REVOKED"),
        ("team-broke", "K_BROKE"),
    ] {
        toml.push_str(&format!(
            "[[credentials]]\nid = \"{id}\"\nendpoint = \"anthropic\"\nsecret = \"env:{var}\"\n\n"
        ));
    }
    toml.push_str("[routes.claude]\ntargets = [{ endpoint = \"anthropic\", model = \"claude-x\", credentials = [\"team-ok\", \"team-revoked\", \"team-broke\"] }]\n");
    std::fs::write(dir.join("keyward.toml"), toml).unwrap();

    // The quick check: key validity. The revoked key fails it; the out-of-credit key
    // passes (a models list or count_tokens cannot show credit).
    let (code, text) = run(&dir, false, false).await;
    assert_eq!(code, 1, "an unusable key fails the gate:\n{text}");
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} missing:\n{text}"))
            .to_owned()
    };
    assert!(line("team-ok ").contains(" ok "), "{text}");
    assert!(line("team-revoked").contains("revoked"), "{text}");
    assert!(line("team-broke").contains(" ok "), "{text}");
    assert!(text.contains("3 check(s): 2 usable, 1 unusable"), "{text}");
    println!("{text}");

    // --deep: a one-token request per routed model finds the exhausted credit.
    let (code, text) = run(&dir, true, true).await;
    assert_eq!(code, 1);
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let deep = |id: &str| {
        rows.iter()
            .find(|r| r["credential"] == id && r["check"] == "1-token claude-x")
            .unwrap_or_else(|| panic!("{id}: {text}"))
    };
    assert_eq!(deep("team-broke")["result"], "billing", "{text}");
    assert_eq!(deep("team-ok")["result"], "ok");
    assert_eq!(rows.len(), 6, "{text}");

    // All usable: exit 0.
    sim.set(REVOKED, Behaviour::Ok);
    sim.set(BROKE, Behaviour::Ok);
    let (code, text) = run(&dir, true, false).await;
    assert_eq!(code, 0, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
