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
