#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The `keyward` binary as a person or a script uses it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use keyward_core::classify::Provider;
use keyward_core::health::{CredentialSpec, HealthEngine, ManualClock, Policy, Timestamp};
use keyward_store::SqliteStore;

fn keyward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keyward-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn classify_explains_a_revoked_oauth_token() {
    let dir = tempdir("explain");
    let body = dir.join("body.json");
    std::fs::write(&body, r#"{"type":"error","error":{"type":"permission_error","message":"OAuth token has been revoked. Please obtain a new token."}}"#).unwrap();
    let out = keyward()
        .args([
            "classify",
            "--provider",
            "anthropic",
            "--credential",
            "oauth",
            "--status",
            "403",
            "--explain",
            "--body-file",
        ])
        .arg(&body)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("class        auth_permanent"), "{text}");
    assert!(text.contains("retries same credential: no"), "{text}");
    // Which rule decided, which fields it read, and why it is this sure.
    assert!(
        text.contains("rule         providers/anthropic.rs:"),
        "{text}"
    );
    assert!(text.contains("read         http_status=403"), "{text}");
    assert!(text.contains("error.type=permission_error"), "{text}");
    assert!(text.contains("why          a structured field"), "{text}");
}

#[test]
fn classify_json_adds_rule_read_and_why_and_keeps_the_old_fields() {
    let dir = tempdir("explain-json");
    let body = dir.join("body.json");
    std::fs::write(
        &body,
        r#"{"error":{"message":"The API key is missing, invalid, or expired.","type":"authentication_error","code":"invalid_api_key"}}"#,
    )
    .unwrap();
    let out = keyward()
        .args([
            "classify",
            "--provider",
            "openai-compatible",
            "--status",
            "401",
            "--body-file",
        ])
        .arg(&body)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for old in [
        "class",
        "scope",
        "confidence",
        "retry_after_ms",
        "evidence",
        "provider_code",
        "explanation",
    ] {
        assert!(v.get(old).is_some(), "field {old} missing: {v}");
    }
    assert_eq!(v["class"], "auth_permanent");
    // Hedged wording never yields a high-confidence permanent verdict on its own.
    assert_eq!(v["confidence"], "low");
    assert!(
        v["rule"]
            .as_str()
            .unwrap()
            .starts_with("providers/openai.rs:"),
        "{v}"
    );
    let read: Vec<&str> = v["read"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(read.contains(&"error.code=invalid_api_key"), "{read:?}");
    assert!(
        v["why"]
            .as_str()
            .unwrap()
            .contains("several possible causes"),
        "{v}"
    );
}

#[test]
fn classify_jsonl_answers_line_for_line_and_never_echoes_a_secret() {
    let secret = "sk-proj-Zq9vT3xW8yB2nM5kL7pR4sD6fG1hJ0aQ";
    let input = format!(
        "{}\n{}\nnot json\n",
        serde_json::json!({"provider":"openai","status":401,"headers":{},"body":format!("{{\"error\":{{\"message\":\"Incorrect API key provided: {secret}.\",\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}}}")}),
        serde_json::json!({"provider":"gemini","status":429,"headers":{},"body":"{\"error\":{\"code\":429,\"message\":\"quota\",\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"38s\"}]}}"}),
    );
    let mut child = keyward()
        .args(["classify", "--jsonl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("Zq9vT3xW8yB2"), "secret echoed: {text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["class"], "auth_permanent");
    assert_eq!(lines[1]["class"], "rate_limit");
    assert_eq!(lines[1]["retry_after_ms"], 38_000);
    assert!(lines[2]["error"].is_string());
}

#[test]
fn bad_arguments_get_a_clear_error_and_exit_code_two() {
    let out = keyward()
        .args([
            "classify",
            "--provider",
            "openai",
            "--status",
            "401",
            "--credential",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--credential \"nope\" is not one of: api_key, oauth, cloud"),
        "{err}"
    );
}

#[test]
fn status_and_history_read_the_state_file_while_a_gateway_holds_it() {
    let dir = tempdir("status");
    let path = dir.join("state.db");
    let (store, _) = SqliteStore::open(&path).unwrap();
    let clock = ManualClock::at(Timestamp(1_751_278_440_000));
    let engine = HealthEngine::new(Policy::default(), Arc::new(clock), Arc::new(store), 1);
    engine.configure(vec![CredentialSpec {
        id: "anthropic-team-2".into(),
        provider: Provider::Anthropic,
        endpoint: "anthropic".into(),
        bucket: None,
        fingerprint: "3f9a1c".into(),
        priority: 0,
        models: None,
    }]);
    engine
        .disable("anthropic-team-2", "key leaked in a CI log")
        .unwrap()
        .wait()
        .unwrap();
    // The "gateway" (engine + store) is still running here.
    let out = keyward()
        .args(["status", "--state"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("credential/anthropic-team-2"), "{text}");
    assert!(text.contains("disabled"), "{text}");
    assert!(text.contains("key leaked in a CI log"), "{text}");
    assert!(!text.contains("\u{1b}["), "no colour when piped");
    let out = keyward()
        .args(["status", "--json", "--state"])
        .arg(&path)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["not_healthy"][0]["health"]["state"], "disabled");
    let out = keyward()
        .args(["history", "anthropic-team-2", "--state"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("healthy → disabled") && text.contains("[operator]"),
        "{text}"
    );
    let out = keyward()
        .args(["status", "--state"])
        .arg(dir.join("missing.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("no state file at"));
}

/// `keyward ARGS` with nothing in its environment but `env`, run in `cwd`.
fn bare(args: &[&str], env: &[(&str, &str)], cwd: &std::path::Path) -> (i32, String, String) {
    let out = keyward()
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_reach_a_running_gateway_with_only_its_admin_token() {
    use crate::support::*;
    const A: &str = "sk-ant-cli-op-a-0001";
    const B: &str = "sk-ant-cli-op-b-0002";
    let h = start(
        "cli-operator",
        ANTHROPIC,
        &[Cred::new("a", A), Cred::new("b", B)],
        &route("claude", "anthropic", "claude-x", &["a", "b"]),
        "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
    )
    .await;
    let cfg = h.config.to_str().unwrap().to_owned();
    let token = [("KW_ADMIN", ADMIN_TOKEN)];
    // The test config listens on port 0: the address the gateway got is given with
    // --admin-url; the token still comes from the config's [admin] table.
    let url = h.url.clone();
    let at = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|a| (*a).to_owned())
            .chain([
                "--config".to_owned(),
                cfg.clone(),
                "--admin-url".to_owned(),
                url.clone(),
            ])
            .collect()
    };
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let args = at(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bare(&args, env, &h.dir)
    };
    // The provider keys' variables are not set: the commands need only the admin token.
    let (code, out, err) = run(&["status"], &token);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 credential(s), 2 usable"), "{out}");
    let (code, out, _) = run(&["status", "--json"], &token);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["credentials"].as_array().unwrap().len(), 2, "{v}");
    let (code, out, err) = run(&["disable", "a", "--reason", "rotating"], &token);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("now disabled"), "{out}");
    let (code, out, _) = run(&["history", "a", "--json"], &token);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["to"]["state"], "disabled", "{v}");
    let (code, out, _) = run(&["reset", "a"], &token);
    assert_eq!(code, 0);
    assert!(out.contains("now healthy"), "{out}");
    // Re-check: the gateway probes now; the exit code says whether the key works.
    let (code, out, err) = run(&["recheck", "b"], &token);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("b key: ok"), "{out}");
    h.sim.set(A, keyward_sim::Behaviour::Revoked);
    let (code, out, _) = run(&["recheck", "a", "--json"], &token);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["result"].as_str(), v["class"].as_str()),
        (Some("failed"), Some("auth_permanent")),
        "{v}"
    );
    // Without a config: the address and $KEYWARD_ADMIN_TOKEN.
    let elsewhere = tempdir("cli-operator-elsewhere");
    let (code, out, err) = bare(
        &["status", "--admin-url", &h.url],
        &[("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN)],
        &elsewhere,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 credential(s)"), "{out}");
    // What goes wrong says what to do next, and never shows a secret.
    let (code, out, err) = run(&["status"], &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("environment variable KW_ADMIN (the [admin] token) is not set")
            && err.contains("--state"),
        "{err}"
    );
    let (code, _, err) = bare(&["status", "--admin-url", &h.url], &[], &elsewhere);
    assert_eq!(code, 2);
    assert!(err.contains("set KEYWARD_ADMIN_TOKEN"), "{err}");
    let (code, _, err) = run(&["status"], &[("KW_ADMIN", "not-the-gateways-token-123")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("refused (401)") && err.contains("not the running gateway's"),
        "{err}"
    );
    let (code, _, err) = run(&["reset", "nope"], &token);
    assert_eq!(code, 2);
    assert!(
        err.contains("refused (404)") && err.contains("no credential") && err.contains("lists"),
        "{err}"
    );
    let (code, _, err) = bare(&["status", "--config", "missing.toml"], &token, &h.dir);
    assert_eq!(code, 2);
    assert!(
        err.contains("no config at missing.toml: pass --config"),
        "{err}"
    );
    for text in [out, err] {
        for s in [A, B, ADMIN_TOKEN] {
            assert!(!text.contains(s), "a secret in {text}");
        }
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    let dir = tempdir("completions");
    for (shell, marker) in [
        ("bash", "_keyward()"),
        ("zsh", "#compdef keyward"),
        ("fish", "complete -c keyward"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[keyward]"),
    ] {
        let (code, out, err) = bare(&["completions", shell], &[], &dir);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(out.contains("status") && out.contains("config"), "{shell}");
    }
    let (code, _, err) = bare(&["completions", "tcsh"], &[], &dir);
    assert_eq!(code, 2);
    assert!(err.contains("possible values"), "{err}");
}

#[test]
fn config_check_takes_the_file_either_way_and_speaks_json() {
    let dir = tempdir("config-check");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[gateway_keys]]\nname = \"k\"\nkey = \"env:KW_GW\"\n[[alerts.webhooks]]\nname = \"ops\"\nurl = \"https://hooks.example/x\"\n",
    )
    .unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[gateway_keys]]\nname = \"k\"\nkey = \"env:UNSET_GW\"\n",
    )
    .unwrap();
    let env = [("KW_GW", "gateway-key-0123456789")];
    let g = good.to_str().unwrap();
    for args in [
        vec!["config", "check", g],
        vec!["config", "check", "--config", g],
    ] {
        let (code, out, err) = bare(&args, &env, &dir);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("is valid") && out.contains("1 webhook(s)"),
            "{out}"
        );
    }
    let (code, out, _) = bare(&["config", "check", "--json", g], &env, &dir);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["webhooks"].as_u64()),
        (Some(true), Some(1)),
        "{v}"
    );
    let (code, out, _) = bare(
        &[
            "config",
            "check",
            "--json",
            "--config",
            bad.to_str().unwrap(),
        ],
        &env,
        &dir,
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"][0]["path"], "gateway_keys[0].key", "{v}");
    // Both at once is a usage error; neither looks for ./keyward.toml and says how to pass one.
    let (code, _, _) = bare(&["config", "check", g, "--config", g], &env, &dir);
    assert_eq!(code, 2);
    let (code, _, err) = bare(&["config", "check"], &env, &dir);
    assert_eq!(code, 2);
    assert!(
        err.contains("keyward.toml") && err.contains("--config FILE"),
        "{err}"
    );
}

#[test]
fn every_read_command_has_json_and_every_config_reader_has_config() {
    let dir = tempdir("cli-flags");
    let help = |args: &[&str]| {
        let (code, out, err) = bare(&[args, &["--help"][..]].concat(), &[], &dir);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    for read in [
        &["status"][..],
        &["history"],
        &["check"],
        &["credentials", "list"],
        &["config", "check"],
    ] {
        assert!(help(read).contains("--json"), "{read:?} has no --json");
    }
    for reads_config in [
        &["status"][..],
        &["history"],
        &["reset"],
        &["disable"],
        &["recheck"],
        &["serve"],
        &["check"],
        &["credentials", "import"],
        &["credentials", "list"],
        &["credentials", "remove"],
        &["config", "check"],
    ] {
        assert!(
            help(reads_config).contains("--config"),
            "{reads_config:?} has no --config"
        );
    }
}
