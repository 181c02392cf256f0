//! `keyward demo`: the gateway against its own simulated provider, with traffic that
//! revokes a key mid-run, then an Anthropic overload answered by the route's OpenAI
//! fallback in the caller's format, and a report of what happened. Nothing leaves
//! 127.0.0.1.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::health::{Health, HealthEngine, ScopeKey};
use keyward_sim::{Behaviour, Sim};

use crate::config::Config;
use crate::gateway::{self, Gateway};
use crate::SystemClock;

/// The demo's outcome.
#[derive(Debug)]
pub struct DemoReport {
    pub text: String,
    pub failures: usize,
}

/// The route's OpenAI fallback key.
const OPENAI_KEY: &str = "sk-oai-demo-fallback-0004";

const KEYS: [(&str, &str); 3] = [
    ("team-1", "sk-ant-demo-team-1-0001"),
    ("team-2", "sk-ant-demo-team-2-0002"),
    ("team-3", "sk-ant-demo-team-3-0003"),
];

/// Runs the demo: `requests` requests, key `team-2` revoked after a third of them.
pub async fn run(requests: usize) -> Result<DemoReport, Box<dyn std::error::Error + Send + Sync>> {
    let sim = Sim::new();
    sim.set_stream_length(4);
    let server = sim.clone().serve("127.0.0.1:0".parse()?).await?;
    let dir = std::env::temp_dir().join(format!("keyward-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\nstate = \"{}\"\n\n[[gateway_keys]]\nname = \"demo\"\nkey = \"env:KEYWARD_DEMO_GATEWAY_KEY\"\n\n[endpoints.anthropic]\nprovider = \"anthropic\"\nbase_url = \"{}\"\n\n[endpoints.openai]\nprovider = \"openai\"\nbase_url = \"{}/v1\"\n\n[[credentials]]\nid = \"openai-1\"\nendpoint = \"openai\"\nsecret = \"env:DEMO_OPENAI\"\n\n",
        dir.join("state.db").display(),
        server.url(),
        server.url()
    );
    for (id, _) in KEYS {
        let _ = write!(toml, "[[credentials]]\nid = \"{id}\"\nendpoint = \"anthropic\"\nsecret = \"env:DEMO_{}\"\n\n", id.replace('-', "_").to_uppercase());
    }
    toml.push_str("[routes.claude]\ntargets = [{ endpoint = \"anthropic\", model = \"claude-sonnet-demo\", credentials = [\"team-1\", \"team-2\", \"team-3\"] }]\nfallbacks = [{ endpoint = \"openai\", model = \"gpt-demo\", credentials = [\"openai-1\"] }]\n\n");
    // A short settle delay before the confirmation probe, so the demo is quick.
    toml.push_str("[policy]\nauth_confirm_delay = \"2s\"\n");
    let env = |v: &str| -> Option<String> {
        if v == "KEYWARD_DEMO_GATEWAY_KEY" {
            return Some("kw-demo-gateway-key".into());
        }
        if v == "DEMO_OPENAI" {
            return Some(OPENAI_KEY.into());
        }
        KEYS.iter()
            .find(|(id, _)| format!("DEMO_{}", id.replace('-', "_").to_uppercase()) == v)
            .map(|(_, k)| (*k).to_owned())
    };
    let cfg = Config::parse(&toml, &dir, &env).map_err(|p| format!("demo config: {p:?}"))?;
    let _ = std::fs::remove_file(dir.join("state.db"));
    let _ = std::fs::remove_file(dir.join("state.db.lock"));
    let (store, _) = keyward_store::SqliteStore::open(&cfg.state)?;
    let engine = HealthEngine::new(
        cfg.policy.clone(),
        Arc::new(SystemClock),
        Arc::new(store),
        7,
    );
    let gw = gateway::Live::new(Gateway::new(cfg, engine.clone())?, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(gateway::run(gw, listener, async move {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::new();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "keyward demo: gateway on http://{addr}, simulated Anthropic on {}",
        server.url()
    );
    let _ = writeln!(out, "3 keys (team-1, team-2, team-3) behind route `claude`; team-2 is revoked at the provider after request {}.\n", requests / 3);
    let mut failures = 0;
    for i in 1..=requests {
        if i == requests / 3 + 1 {
            sim.set(KEYS[1].1, Behaviour::Revoked);
            let _ = writeln!(out, "   -- the provider revokes team-2 --");
        }
        let stream = i % 2 == 0;
        let (status, cred, attempts, complete) = ask(&client, addr, stream).await?;
        if status != 200 || !complete {
            failures += 1;
        }
        let _ = writeln!(
            out,
            "request {i:>2} {:<6} → {} via {cred:<6} attempts {attempts}{}",
            if stream { "stream" } else { "json" },
            status,
            if complete { "" } else { "  (INCOMPLETE)" }
        );
        if i == requests / 3 + 3 {
            // Let the confirmation probe (after its settle delay) run.
            let _ = writeln!(out, "   -- (waiting 3 s: team-2 is out of rotation; its one confirmation probe runs) --");
            tokio::time::sleep(Duration::from_millis(3_000)).await;
        }
    }
    failures += overload(&sim, &client, addr, &mut out).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let counts = sim.counts(KEYS[1].1);
    let _ = writeln!(
        out,
        "\nwhat the provider saw for team-2 after its revocation: {} request(s) and {} probe(s)",
        counts
            .outcomes
            .get("revoked")
            .copied()
            .unwrap_or(0)
            .saturating_sub(counts.probes),
        counts.probes
    );
    let _ = writeln!(
        out,
        "callers that saw an error: {failures} of {}\n",
        requests + 2
    );
    let _ = writeln!(out, "health now:");
    for (key, health, since) in engine.snapshot() {
        if let ScopeKey::Credential(id) = &key {
            let line = match &health {
                Health::Healthy => "healthy".to_owned(),
                Health::Disabled {
                    class, evidence, ..
                } => format!("disabled since {since}: {class}; {evidence}"),
                other => format!(
                    "{} ({})",
                    other.name(),
                    other.class().map_or("-", |c| c.as_str())
                ),
            };
            let _ = writeln!(out, "  {id:<7} {line}");
        }
    }
    let _ = stop_tx.send(());
    let _ = serving.await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(DemoReport {
        text: out,
        failures,
    })
}

/// One Anthropic Messages request through the gateway: its status, the credential and the
/// attempts that served it, and whether the answer was complete.
async fn ask(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    stream: bool,
) -> Result<(u16, String, String, bool), reqwest::Error> {
    let resp = client
        .post(format!("http://{addr}/v1/messages"))
        .header("x-api-key", "kw-demo-gateway-key")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(serde_json::json!({"model": "claude", "max_tokens": 32, "stream": stream, "messages": [{"role": "user", "content": "hello"}]}).to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let (cred, attempts) = (header("x-keyward-credential"), header("x-keyward-attempts"));
    let body = resp.text().await.unwrap_or_default();
    let complete = if stream {
        body.contains("message_stop")
    } else {
        body.contains("\"stop_reason\"")
    };
    Ok((status, cred, attempts, complete))
}

/// Anthropic overloaded for every key: the route's OpenAI fallback answers the Anthropic
/// caller, translated (whole and streamed). Returns how many callers saw an error.
async fn overload(
    sim: &Sim,
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    out: &mut String,
) -> Result<usize, reqwest::Error> {
    for (_, key) in KEYS {
        sim.set(key, Behaviour::Overloaded);
    }
    let _ = writeln!(
        out,
        "   -- Anthropic is overloaded for every key; the route's fallback is an OpenAI model --"
    );
    let mut failures = 0;
    for stream in [false, true] {
        let (status, cred, attempts, complete) = ask(client, addr, stream).await?;
        if status != 200 || !complete {
            failures += 1;
        }
        let _ = writeln!(
            out,
            "request  + {:<6} → {status} via {cred:<8} attempts {attempts}  (OpenAI's answer, in Anthropic's format){}",
            if stream { "stream" } else { "json" },
            if complete { "" } else { "  (INCOMPLETE)" }
        );
    }
    let _ = writeln!(
        out,
        "what the OpenAI fallback received: {} Chat Completions request(s)",
        sim.received(OPENAI_KEY).len()
    );
    for (i, (_, key)) in KEYS.iter().enumerate() {
        // team-2 stays revoked.
        sim.set(
            key,
            if i == 1 {
                Behaviour::Revoked
            } else {
                Behaviour::Ok
            },
        );
    }
    Ok(failures)
}
