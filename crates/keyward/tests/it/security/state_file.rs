//! The state file under concurrent CLI use, SIGKILL, a second gateway, and files that are
//! not Keyward's (issue 23, items 1 and 7). `docs/security.md`, "The state file".

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

const A: &str = "sk-ant-state-a-0001";
const B: &str = "sk-ant-state-b-0002";

async fn gateway(name: &str) -> Harness {
    start(
        name,
        ANTHROPIC,
        &[Cred::new("a", A), Cred::new("b", B)],
        &route("claude", "anthropic", "claude-x", &["a", "b"]),
        "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
    )
    .await
}

fn side(path: &Path, suffix: &str) -> PathBuf {
    let mut n = path.file_name().unwrap().to_os_string();
    n.push(suffix);
    path.with_file_name(n)
}

async fn admin_post(h: &Harness, path: &str, body: Value) -> (u16, Value) {
    let r = h
        .client
        .post(format!("{}{path}", h.url))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    h.check_no_secret(&text);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Runs `keyward ARGS` with the gateway's environment until it exits (bounded: a command
/// that is still running after 20 s is killed and reported as `None`), with its stdout and
/// stderr.
fn run_until_exit(env: &[(String, String)], args: &[&str]) -> (Option<ExitStatus>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    (status, text)
}

/// The review's repro, replayed: a CLI read beside the running gateway used to delete the
/// live `-wal`; a disable acknowledged after that went to a deleted file and was lost at
/// SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_disable_survives_a_cli_read_beside_the_gateway_and_sigkill() {
    let mut h = gateway("state-wal").await;
    let db = h.dir.join("state.db");
    let wal = side(&db, "-wal");
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(wal.exists(), "the running gateway has no -wal");
    // The CLI beside the running gateway: every reading command.
    let (ok, text) = keyward_cli(&h.config, &h.env, &["credentials", "list"]);
    assert!(ok, "{text}");
    assert!(
        wal.exists(),
        "`keyward credentials list` deleted the live -wal: {text}"
    );
    assert_eq!(h.state_of("credential/a"), "healthy");
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["history", "a", "--state"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        wal.exists(),
        "`keyward history --state` deleted the live -wal"
    );
    // The operator disables a through the admin API: acknowledged.
    let (s, v) = admin_post(
        &h,
        "/admin/credentials/a/disable",
        json!({"reason": "state file test"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["health"]["state"], "disabled", "{v}");
    // The gateway's own history reads the file it writes.
    let (s, text) = h
        .get_text("/admin/credentials/a/history", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("state file test"), "{text}");
    // SIGKILL: no chance to flush or checkpoint.
    h.gateway.kill().unwrap();
    h.gateway.wait().unwrap();
    assert_eq!(
        h.state_of("credential/a"),
        "disabled",
        "the acknowledged disable was lost"
    );
    // And the next start has it.
    h.kill_and_restart(&[]);
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_and_cli_writes_are_refused_while_a_gateway_holds_the_file() {
    let h = gateway("state-second").await;
    let db = h.dir.join("state.db");
    let cfg = h.config.to_str().unwrap().to_owned();
    let (status, text) = run_until_exit(
        &h.env,
        &["serve", "--config", &cfg, "--listen", "127.0.0.1:0"],
    );
    let status =
        status.unwrap_or_else(|| panic!("a second gateway ran on the same state file: {text}"));
    assert!(!status.success(), "{text}");
    assert!(text.contains(&db.display().to_string()), "{text}");
    assert!(text.contains("in use by another Keyward process"), "{text}");
    assert!(
        text.contains(&format!("pid {}", h.gateway.id())),
        "the refusal does not name the holder's pid: {text}"
    );
    assert!(text.contains("admin API"), "{text}");
    h.check_no_secret(&text);
    // A config without the admin API cannot ask the gateway: its writes are refused, the
    // file is left alone.
    let no_admin = h.dir.join("no-admin.toml");
    let full = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &no_admin,
        full.replace("[admin]\ntoken = \"env:KW_ADMIN\"\n", ""),
    )
    .unwrap();
    for args in [
        vec!["disable", "a", "--reason", "from the CLI"],
        vec!["credentials", "remove", "a"],
    ] {
        let (ok, text) = keyward_cli(&no_admin, &h.env, &args);
        assert!(
            !ok,
            "`keyward {}` wrote beside the gateway: {text}",
            args.join(" ")
        );
        assert!(
            text.contains("in use by another Keyward process") && text.contains("stop"),
            "{text}"
        );
        h.check_no_secret(&text);
    }
    assert_eq!(h.state_of("credential/a"), "healthy");
    // The first gateway is unharmed.
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_foreign_state_file_is_refused_and_init_state_moves_it_aside() {
    let mut h = gateway("state-foreign").await;
    h.gateway.kill().unwrap();
    h.gateway.wait().unwrap();
    let db = h.dir.join("state.db");
    let cfg = h.config.to_str().unwrap().to_owned();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(side(&db, suffix));
    }
    let foreign = b"PRAGMA but not a database: someone's notes\n".repeat(100);
    for (content, expect) in [
        (&b""[..], "is empty (0 bytes)"),
        (&foreign[..], "is not a Keyward state file"),
    ] {
        std::fs::write(&db, content).unwrap();
        let (status, text) = run_until_exit(
            &h.env,
            &["serve", "--config", &cfg, "--listen", "127.0.0.1:0"],
        );
        let status = status.unwrap_or_else(|| panic!("started on an unusable state file: {text}"));
        assert!(!status.success(), "{text}");
        assert!(text.contains(expect), "{text}");
        assert!(text.contains("--init-state"), "{text}");
        assert!(text.contains(&db.display().to_string()), "{text}");
        assert_eq!(
            std::fs::read(&db).unwrap(),
            content,
            "a refused file was changed"
        );
        // The CLI's read path refuses it too, rather than showing an empty state.
        let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["status", "--state"])
            .arg(&db)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{out:?}");
    }
    // --init-state: the foreign file is moved aside, the gateway starts empty.
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "serve",
            "--init-state",
            "--config",
            &cfg,
            "--listen",
            "127.0.0.1:0",
        ])
        .envs(h.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    h.url = line
        .trim()
        .strip_prefix("keyward listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    h.gateway = child;
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        std::fs::read(side(&db, ".unrecognised")).unwrap(),
        foreign,
        "the foreign file was not kept aside"
    );
    let (s, v) = admin_post(
        &h,
        "/admin/credentials/a/disable",
        json!({"reason": "after init"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    h.gateway.kill().unwrap();
    h.gateway.wait().unwrap();
    assert_eq!(h.state_of("credential/a"), "disabled");
}

const CLAUDE: &str = "kind = \"oauth\"\nsubscription = true\n[credentials.oauth]\ntoken_url = \"{sim}/v1/oauth/token\"\nclient_id = \"keyward-tests\"\n";

/// `keyward check` beside a running gateway reads the OAuth tokens but never refreshes
/// them: the provider would rotate the refresh token, and this process could not store it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyward_check_beside_a_gateway_never_refreshes_the_oauth_tokens_it_holds() {
    let h = start_prepared(
        "state-check",
        ANTHROPIC,
        &[Cred::new("a", A)],
        &route("claude", "anthropic", "claude-x", &["a"]),
        "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
        "full",
        |sim, cfg, env| {
            // A second config on the same state file with an OAuth credential the gateway
            // does not serve (so only `check` could refresh it), its token already expired.
            let text = std::fs::read_to_string(cfg).unwrap();
            let sim_url = text
                .split("base_url = \"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap()
                .to_owned();
            std::fs::write(
                cfg.with_file_name("with-oauth.toml"),
                format!(
                    "{text}\n[[credentials]]\nid = \"claude-max\"\nendpoint = \"anthropic\"\n{}",
                    CLAUDE.replace("{sim}", &sim_url)
                ),
            )
            .unwrap();
            let t = sim.oauth_grant("claude", Duration::ZERO);
            let file = cfg.with_file_name("tokens.json");
            std::fs::write(
                &file,
                json!({"access_token": t.access_token, "refresh_token": t.refresh_token, "expires_in": 0}).to_string(),
            )
            .unwrap();
            let (ok, out) = keyward_cli(
                &cfg.with_file_name("with-oauth.toml"),
                env,
                &["credentials", "import", "claude-max", file.to_str().unwrap()],
            );
            assert!(ok, "{out}");
        },
    )
    .await;
    let (_, text) = keyward_cli(&h.dir.join("with-oauth.toml"), &h.env, &["check", "--json"]);
    let rows: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let claude = rows
        .iter()
        .find(|r| r["credential"] == "claude-max")
        .unwrap_or_else(|| panic!("no row for claude-max: {text}"));
    assert!(
        claude["detail"]
            .as_str()
            .unwrap_or("")
            .contains("running gateway holds the state file"),
        "{claude}"
    );
    assert!(
        h.sim.token_calls("claude").is_empty(),
        "check refreshed the gateway's tokens: {:?}",
        h.sim.token_calls("claude")
    );
    assert!(
        rows.iter()
            .any(|r| r["credential"] == "a" && r["usable"] == true),
        "{text}"
    );
    h.check_no_secret(&text);
}

fn write_grant(sim: &keyward_sim::Sim, cfg: &Path, grant: &str) -> PathBuf {
    let t = sim.oauth_grant(grant, Duration::from_secs(3600));
    let file = cfg.with_file_name(format!("{grant}-tokens.json"));
    std::fs::write(
        &file,
        json!({"access_token": t.access_token, "refresh_token": t.refresh_token, "expires_in": 3600}).to_string(),
    )
    .unwrap();
    file
}

/// The OAuth commands beside a running gateway: `list` reads the file, `import` and
/// `remove` are done by the gateway (admin API), which stores durably and reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_commands_beside_a_gateway_go_through_it() {
    let h = start_prepared(
        "state-oauth",
        ANTHROPIC,
        &[Cred::new("claude-max", "").with(CLAUDE)],
        &route("claude", "anthropic", "claude-x", &["claude-max"]),
        "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
        "full",
        |sim, cfg, env| {
            let file = write_grant(sim, cfg, "claude");
            let (ok, out) = keyward_cli(
                cfg,
                env,
                &[
                    "credentials",
                    "import",
                    "claude-max",
                    file.to_str().unwrap(),
                ],
            );
            assert!(ok && out.contains("no gateway"), "{out}");
        },
    )
    .await;
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The CLI reaches the gateway at the config's `listen`: point it at the real port.
    let addr = h.url.trim_start_matches("http://");
    let text = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &h.config,
        text.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\"")),
    )
    .unwrap();
    let wal = side(&h.dir.join("state.db"), "-wal");
    let (ok, out) = keyward_cli(&h.config, &h.env, &["credentials", "list"]);
    assert!(ok && out.contains("claude-max"), "{out}");
    let (ok, out) = keyward_cli(&h.config, &h.env, &["credentials", "remove", "claude-max"]);
    assert!(ok, "{out}");
    assert!(out.contains("through the running gateway"), "{out}");
    let (ok, out) = keyward_cli(&h.config, &h.env, &["credentials", "list"]);
    assert!(ok && !out.contains("claude-max"), "{out}");
    let file = write_grant(&h.sim, &h.config, "claude-2");
    let (ok, out) = keyward_cli(
        &h.config,
        &h.env,
        &[
            "credentials",
            "import",
            "claude-max",
            file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("imported OAuth tokens for claude-max")
            && out.contains("by the running gateway")
            && out.contains("reloaded and uses them now"),
        "{out}"
    );
    h.check_no_secret(&out);
    assert!(wal.exists(), "the -wal went away beside the gateway");
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(h.sim.counts("claude-2").requests >= 1);
}
