//! The end-to-end harness: the real `keyward serve` binary on 127.0.0.1 port 0, against
//! `keyward-sim` in the test process. Shared by the end-to-end suites.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_sim::{Sim, SimServer};
use serde_json::{json, Value};

/// A credential in a test config, built by name: `Cred::new(id, secret).on(endpoint).with(toml)`.
pub(crate) struct Cred<'a> {
    pub(crate) id: &'a str,
    /// The key; empty for no `secret` line (an OAuth grant imported into the state file).
    pub(crate) secret: &'a str,
    /// The endpoint's id in the test config.
    pub(crate) endpoint: &'a str,
    /// More TOML lines for the credential's table (`priority = 10`, an OAuth table).
    pub(crate) extra: &'a str,
}

impl<'a> Cred<'a> {
    /// Credential `id` with `secret`, on the `anthropic` endpoint.
    pub(crate) fn new(id: &'a str, secret: &'a str) -> Cred<'a> {
        Cred {
            id,
            secret,
            endpoint: "anthropic",
            extra: "",
        }
    }

    /// On endpoint `endpoint` instead.
    pub(crate) fn on(self, endpoint: &'a str) -> Cred<'a> {
        Cred { endpoint, ..self }
    }

    /// With more TOML lines for its table.
    pub(crate) fn with(self, extra: &'a str) -> Cred<'a> {
        Cred { extra, ..self }
    }
}

pub(crate) struct Harness {
    pub sim: Sim,
    pub _server: SimServer,
    /// A second server of the same sim (same keys and counts, another base URL), for
    /// endpoints declared with a suffix starting `@2` (see [`start_policy`]).
    pub _server2: Option<SimServer>,
    pub gateway: Child,
    pub url: String,
    pub dir: PathBuf,
    pub logs: Arc<Mutex<String>>,
    pub secrets: Vec<String>,
    pub client: reqwest::Client,
    /// The config file and the environment the gateway runs with (for restarts).
    pub config: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.gateway.kill();
        let _ = self.gateway.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) const GATEWAY_KEY: &str = "kw-test-gateway-key-7f3a";
/// The admin token every test gateway has in `KW_ADMIN` (used when its config enables
/// the admin API with `token = "env:KW_ADMIN"`).
pub(crate) const ADMIN_TOKEN: &str = "kw-test-admin-token-91c2";

/// Starts a sim and a gateway. `endpoints` are (id, provider, path suffix); `routes` is raw
/// TOML for the routes; `extra` is raw TOML appended (policy, limits).
pub(crate) async fn start(
    name: &str,
    endpoints: &[(&str, &str, &str)],
    creds: &[Cred<'_>],
    routes: &str,
    extra: &str,
) -> Harness {
    start_with(name, endpoints, creds, routes, extra, "full").await
}

/// [`start`] with the gateway key's error detail level.
pub(crate) async fn start_with(
    name: &str,
    endpoints: &[(&str, &str, &str)],
    creds: &[Cred<'_>],
    routes: &str,
    extra: &str,
    detail: &str,
) -> Harness {
    start_prepared(name, endpoints, creds, routes, extra, detail, |_, _, _| {}).await
}

/// [`start_with`], running `prepare` with the sim and the written config file before the
/// gateway starts (to import OAuth tokens, say), with the gateway's environment. A credential whose secret is empty gets
/// no `secret` line.
pub(crate) async fn start_prepared(
    name: &str,
    endpoints: &[(&str, &str, &str)],
    creds: &[Cred<'_>],
    routes: &str,
    extra: &str,
    detail: &str,
    prepare: impl FnOnce(&Sim, &std::path::Path, &[(String, String)]),
) -> Harness {
    start_inner(
        name,
        endpoints,
        creds,
        routes,
        DEFAULT_POLICY,
        extra,
        detail,
        prepare,
    )
    .await
}

/// The `[policy]` lines every [`start`] gateway gets: short confirmation and incident delays.
pub(crate) const DEFAULT_POLICY: &str =
    "auth_confirm_delay = \"200ms\"\nincident_cooldown = \"1s\"\n";

/// [`start`] with the `[policy]` table's lines given (instead of [`DEFAULT_POLICY`]). An
/// endpoint whose suffix starts with `@2` is served by a second server of the same sim, so
/// two endpoints of one provider kind have distinct base URLs (`@2` is dropped from the
/// suffix).
pub(crate) async fn start_policy(
    name: &str,
    endpoints: &[(&str, &str, &str)],
    creds: &[Cred<'_>],
    routes: &str,
    policy: &str,
    extra: &str,
) -> Harness {
    start_inner(
        name,
        endpoints,
        creds,
        routes,
        policy,
        extra,
        "full",
        |_, _, _| {},
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn start_inner(
    name: &str,
    endpoints: &[(&str, &str, &str)],
    creds: &[Cred<'_>],
    routes: &str,
    policy: &str,
    extra: &str,
    detail: &str,
    prepare: impl FnOnce(&Sim, &std::path::Path, &[(String, String)]),
) -> Harness {
    let sim = Sim::new();
    sim.set_stream_length(4);
    let server = sim
        .clone()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("keyward-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut toml = format!("listen = \"127.0.0.1:0\"\nstate = \"state.db\"\n\n[[gateway_keys]]\nname = \"tests\"\nkey = \"env:KW_GATEWAY\"\ndetail = \"{detail}\"\n\n");
    let server2 = if endpoints.iter().any(|e| e.2.starts_with("@2")) {
        Some(
            sim.clone()
                .serve("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        )
    } else {
        None
    };
    for (id, provider, suffix) in endpoints {
        let (base, suffix) = match (suffix.strip_prefix("@2"), &server2) {
            (Some(rest), Some(s2)) => (s2.url(), rest),
            _ => (server.url(), *suffix),
        };
        toml.push_str(&format!(
            "[endpoints.{id}]\nprovider = \"{provider}\"\nbase_url = \"{base}{suffix}\"\n"
        ));
        if *provider == "azure-openai" {
            toml.push_str("api_version = \"2024-10-21\"\n");
        }
        if *provider == "bedrock" {
            toml.push_str("region = \"us-east-1\"\n");
        }
        if *provider == "vertex-ai" {
            toml.push_str("region = \"us-east5\"\nproject = \"keyward-test\"\n");
        }
        toml.push('\n');
    }
    let mut env: Vec<(String, String)> = vec![
        ("KW_GATEWAY".into(), GATEWAY_KEY.into()),
        ("KW_ADMIN".into(), ADMIN_TOKEN.into()),
        ("KEYWARD_LOG".into(), "info".into()),
    ];
    for Cred {
        id,
        secret,
        endpoint,
        extra: more,
    } in creds
    {
        let more = more.replace("{sim}", &server.url());
        if secret.is_empty() {
            toml.push_str(&format!(
                "[[credentials]]\nid = \"{id}\"\nendpoint = \"{endpoint}\"\n{more}\n\n"
            ));
            continue;
        }
        let var = format!("KW_SECRET_{}", id.replace('-', "_").to_uppercase());
        toml.push_str(&format!("[[credentials]]\nid = \"{id}\"\nendpoint = \"{endpoint}\"\nsecret = \"env:{var}\"\n{more}\n\n"));
        env.push((var, (*secret).to_owned()));
    }
    toml.push_str(routes);
    toml.push_str("\n[policy]\n");
    toml.push_str(policy);
    toml.push_str(extra);
    let cfg = dir.join("keyward.toml");
    std::fs::write(&cfg, toml).unwrap();
    prepare(&sim, &cfg, &env);
    let logs = Arc::new(Mutex::new(String::new()));
    let (gateway, url) = spawn_gateway(&cfg, &env, &[], &logs);
    let secrets = creds
        .iter()
        .filter(|c| !c.secret.is_empty())
        .map(|c| c.secret.to_owned())
        .chain([GATEWAY_KEY.to_owned(), ADMIN_TOKEN.to_owned()])
        .collect();
    Harness {
        sim,
        _server: server,
        _server2: server2,
        gateway,
        url,
        dir,
        logs,
        secrets,
        client: reqwest::Client::new(),
        config: cfg,
        env,
    }
}

/// Starts `keyward serve` on `cfg`; its stderr is appended to `logs`. Returns the child
/// and its URL.
pub(crate) fn spawn_gateway(
    cfg: &std::path::Path,
    env: &[(String, String)],
    more_env: &[(&str, &str)],
    logs: &Arc<Mutex<String>>,
) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    for (k, v) in more_env {
        cmd.env(k, v);
    }
    let mut gateway = cmd
        .args(["serve", "--config"])
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(gateway.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("keyward listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let mut stderr = gateway.stderr.take().unwrap();
    let sink = logs.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (gateway, url)
}

pub(crate) struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Gateway time from `server-timing`, in ms.
    pub(crate) fn gateway_ms(&self) -> f64 {
        let st = self.header("server-timing");
        st.split(',')
            .find_map(|p| p.trim().strip_prefix("gateway;dur="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no gateway time in {st:?}"))
    }
}

impl Harness {
    pub(crate) async fn post(&self, path: &str, body: Value) -> Reply {
        self.post_raw(path, body.to_string(), Some(GATEWAY_KEY))
            .await
    }

    pub(crate) async fn post_raw(&self, path: &str, body: String, key: Option<&str>) -> Reply {
        let mut rb = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01");
        if let Some(k) = key {
            rb = rb.header("x-api-key", k);
        }
        let r = rb.body(body).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap();
        let reply = Reply {
            status,
            headers,
            body,
        };
        self.check_no_secret(&format!("{:?}\n{}", reply.headers, reply.body));
        reply
    }

    pub(crate) async fn messages(&self, model: &str, stream: bool) -> Reply {
        self.post("/v1/messages", json!({"model": model, "max_tokens": 16, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})).await
    }

    /// [`Harness::messages`] with this first user turn: a conversation of its own (the
    /// gateway keeps one conversation on one credential while it is usable).
    pub(crate) async fn messages_about(&self, model: &str, stream: bool, text: &str) -> Reply {
        self.post("/v1/messages", json!({"model": model, "max_tokens": 16, "stream": stream, "messages": [{"role": "user", "content": text}]})).await
    }

    /// [`Harness::chat`] with this first user turn: a conversation of its own.
    pub(crate) async fn chat_about(&self, model: &str, stream: bool, text: &str) -> Reply {
        self.post("/v1/chat/completions", json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]})).await
    }

    pub(crate) async fn chat(&self, model: &str, stream: bool) -> Reply {
        self.post("/v1/chat/completions", json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})).await
    }

    pub(crate) fn check_no_secret(&self, text: &str) {
        for s in &self.secrets {
            assert!(!text.contains(s.as_str()), "a secret leaked into {text}");
        }
    }

    /// The state file's view, through `keyward status --json`.
    pub(crate) fn status(&self) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["status", "--json", "--state"])
            .arg(self.dir.join("state.db"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        self.check_no_secret(&text);
        serde_json::from_str(&text).unwrap()
    }

    pub(crate) fn state_of(&self, scope: &str) -> String {
        self.status()["not_healthy"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["scope"] == scope)
            .map_or("healthy".into(), |s| {
                s["health"]["state"].as_str().unwrap_or("?").to_owned()
            })
    }

    /// Waits (bounded: 30 s, generous for a loaded CI machine) until `f` holds.
    pub(crate) async fn eventually(&self, what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(30);
        while !f() {
            if Instant::now() >= until {
                let tail = {
                    let logs = self.logs.lock().unwrap();
                    let tail: Vec<&str> = logs.lines().rev().take(60).collect();
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                };
                panic!("timed out waiting for {what}; the gateway's last log lines:\n{tail}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` on the gateway, with an optional bearer token: status and body text.
    pub(crate) async fn get_text(&self, path: &str, bearer: Option<&str>) -> (u16, String) {
        let mut rb = self.client.get(format!("{}{path}", self.url));
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// Kills the gateway with SIGKILL (no chance to clean up) and starts it again on the
    /// same config and state file, with `more_env` added.
    pub(crate) fn kill_and_restart(&mut self, more_env: &[(&str, &str)]) {
        let _ = self.gateway.kill();
        let _ = self.gateway.wait();
        let (child, url) = spawn_gateway(&self.config, &self.env, more_env, &self.logs);
        self.gateway = child;
        self.url = url;
    }

    pub(crate) fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }
}

pub(crate) const ANTHROPIC: &[(&str, &str, &str)] = &[("anthropic", "anthropic", "")];

/// Runs `keyward ARGS --config CFG` with the gateway's environment: whether it succeeded,
/// and its stdout and stderr together.
pub(crate) fn keyward_cli(
    cfg: &std::path::Path,
    env: &[(String, String)],
    args: &[&str],
) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .arg("--config")
        .arg(cfg)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub(crate) fn route(name: &str, endpoint: &str, model: &str, creds: &[&str]) -> String {
    let list = creds
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[routes.{name}]\ntargets = [{{ endpoint = \"{endpoint}\", model = \"{model}\", credentials = [{list}] }}]\n")
}

/// Runs one scenario of `tests/sdk/scenarios.py` with the official SDKs against `h`, with
/// `env` added. The SDKs are installed by the test command (`scripts/test.sh`); without
/// them this fails loudly rather than skipping.
pub(crate) async fn run_sdk(h: &Harness, scenario: &str, env: &[(&str, &str)]) -> Value {
    let python = std::env::var("KEYWARD_PYTHON").unwrap_or_else(|_| {
        panic!("the SDK tests need the official Python SDKs: run ./scripts/test.sh (it installs them), or set KEYWARD_PYTHON to a python with tests/sdk/requirements.txt installed")
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk/scenarios.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(scenario)
        .env("KEYWARD_URL", &h.url)
        .env("KEYWARD_KEY", GATEWAY_KEY)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    h.check_no_secret(&stdout);
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{scenario}: no output; stderr: {stderr}"));
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|_| panic!("{scenario}: {stdout}\n{stderr}"));
    assert!(
        out.status.success() && v["ok"] == true,
        "{scenario} failed: {v}\n{stderr}"
    );
    v
}
