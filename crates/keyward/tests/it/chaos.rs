#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::print_stderr)]
//! The chaos suite: steady traffic through the real gateway (four workers, Anthropic
//! Messages and Chat Completions, streaming and not) while faults are injected in turn. After
//! each one: the gateway is up; no caller got a truncated success (judged by each API's
//! terminal event, not by whether the client raised); upstream attempts per request stayed
//! within the cap; the transition log is one unbroken chain per scope (nothing lost, even
//! across a SIGKILL); no healthy key was disabled; the revoked key was not used again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use keyward_sim::{Behaviour, Sim, TokenEndpoint};
use serde_json::{json, Value};

const K1: &str = "sk-ant-chaos-k1-0001";
const K2: &str = "sk-ant-chaos-k2-0002";
const K3: &str = "sk-ant-chaos-k3-0003";
const K4: &str = "sk-ant-chaos-k4-0004";
const O1: &str = "sk-chaos-openai-o1-0005";
const O2: &str = "sk-chaos-openai-o2-0006";
const O3: &str = "sk-chaos-openai-o3-0007";
const MAX_ATTEMPTS: u32 = 4;

#[derive(Debug, Clone)]
struct Outcome {
    api: &'static str,
    status: u16,
    /// The start of a non-200 body (for the phase summary).
    error: String,
    /// The API's terminal event arrived (Messages `message_stop`, Chat `[DONE]` after a
    /// `finish_reason`), or a whole JSON body with content.
    complete: bool,
    /// An error was reported in-band (a stream broken after it was committed).
    in_band_error: bool,
    attempts: u32,
    /// The connection failed under the client (no HTTP answer, or a body cut).
    transport: Option<String>,
}

impl Outcome {
    fn truncated_success(&self) -> bool {
        self.status == 200 && !self.complete && !self.in_band_error && self.transport.is_none()
    }
}

struct Traffic {
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
    url: Arc<Mutex<String>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

fn judge(api: &'static str, stream: bool, status: u16, body: &str) -> (bool, bool) {
    if status != 200 {
        return (false, false);
    }
    match (api, stream) {
        ("messages", true) => (
            body.contains("event: message_stop"),
            body.contains("event: error"),
        ),
        ("chat", true) => {
            let error = body
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .any(|v| v.get("error").is_some());
            (
                body.contains("\"finish_reason\":\"stop\"") && body.contains("data: [DONE]"),
                error,
            )
        }
        ("messages", false) => (
            serde_json::from_str::<Value>(body)
                .is_ok_and(|v| v["content"][0]["text"].is_string() && v["stop_reason"].is_string()),
            false,
        ),
        _ => (
            serde_json::from_str::<Value>(body).is_ok_and(|v| {
                v["choices"][0]["message"]["content"].is_string()
                    && v["choices"][0]["finish_reason"].is_string()
            }),
            false,
        ),
    }
}

impl Traffic {
    fn start(url: String) -> Traffic {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let url = Arc::new(Mutex::new(url));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let workers = (0..4)
            .map(|w| {
                let (outcomes, stop, url, client) =
                    (outcomes.clone(), stop.clone(), url.clone(), client.clone());
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let api: &'static str = if (n + w).is_multiple_of(2) {
                            "messages"
                        } else {
                            "chat"
                        };
                        let stream = (n / 2 + w).is_multiple_of(2);
                        let base = url.lock().unwrap().clone();
                        // Each request its own conversation (as many callers' would be):
                        // session affinity spreads them over the keys.
                        let content = format!("hi from worker {w}, conversation {n}");
                        let (path, body) = if api == "messages" {
                            ("/v1/messages", json!({"model": "claude", "max_tokens": 16, "stream": stream, "messages": [{"role": "user", "content": content}]}))
                        } else {
                            ("/v1/chat/completions", json!({"model": "gpt", "stream": stream, "messages": [{"role": "user", "content": content}]}))
                        };
                        let sent = client
                            .post(format!("{base}{path}"))
                            .header("x-api-key", GATEWAY_KEY)
                            .header("content-type", "application/json")
                            .body(body.to_string())
                            .send()
                            .await;
                        let outcome = match sent {
                            Err(e) => Outcome {
                                api,
                                error: String::new(),
                                status: 0,
                                complete: false,
                                in_band_error: false,
                                attempts: 0,
                                transport: Some(e.to_string()),
                            },
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let attempts = r
                                    .headers()
                                    .get("x-keyward-attempts")
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|v| v.parse().ok())
                                    .unwrap_or(0);
                                match r.text().await {
                                    Ok(text) => {
                                        let (complete, in_band_error) =
                                            judge(api, stream, status, &text);
                                        Outcome {
                                            api,
                                            error: if status == 200 {
                                                String::new()
                                            } else {
                                                text.chars().take(300).collect()
                                            },
                                            status,
                                            complete,
                                            in_band_error,
                                            attempts,
                                            transport: None,
                                        }
                                    }
                                    Err(e) => Outcome {
                                        api,
                                        error: String::new(),
                                        status,
                                        complete: false,
                                        in_band_error: false,
                                        attempts,
                                        transport: Some(format!("body: {e}")),
                                    },
                                }
                            }
                        };
                        outcomes.lock().unwrap().push(outcome);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        Traffic {
            outcomes,
            stop,
            url,
            workers,
        }
    }

    /// The outcomes since the last call.
    fn take(&self) -> Vec<Outcome> {
        std::mem::take(&mut *self.outcomes.lock().unwrap())
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
    }
}

/// Every transition in the state file.
fn transitions(h: &Harness) -> Vec<keyward_store::TransitionRow> {
    keyward_store::StoreReader::open(&h.dir.join("state.db"))
        .unwrap()
        .all_transitions()
        .unwrap()
}

fn state_name(json: &str) -> String {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

struct Checker {
    /// Sim requests (not probes) on the revoked key when it was disabled.
    revoked_requests_at_disable: Option<u64>,
}

impl Checker {
    /// The invariants, after phase `phase` whose outcomes are `out`.
    async fn check(&mut self, h: &Harness, phase: &str, out: &[Outcome], transport_ok: bool) {
        assert!(!out.is_empty(), "{phase}: no traffic ran");
        let (status, _) = h.get_text("/healthz", None).await;
        assert_eq!(status, 200, "{phase}: the gateway is down");
        let truncated: Vec<&Outcome> = out
            .iter()
            .filter(|o| o.truncated_success())
            .take(5)
            .collect();
        assert!(
            truncated.is_empty(),
            "{phase}: truncated successes: {truncated:?}"
        );
        let over: Vec<&Outcome> = out
            .iter()
            .filter(|o| o.attempts > MAX_ATTEMPTS)
            .take(5)
            .collect();
        assert!(over.is_empty(), "{phase}: over the attempt cap: {over:?}");
        if !transport_ok {
            let broken: Vec<&Outcome> = out
                .iter()
                .filter(|o| o.transport.is_some())
                .take(5)
                .collect();
            assert!(broken.is_empty(), "{phase}: connections failed: {broken:?}");
        }
        // The log is one chain per scope: each transition starts where the last ended.
        let mut last: HashMap<String, String> = HashMap::new();
        for t in transitions(h) {
            if let Some(prev) = last.get(&t.scope) {
                assert_eq!(
                    prev,
                    &state_name(&t.from),
                    "{phase}: a transition of {} was lost ({} → {} follows one ending in {prev})",
                    t.scope,
                    state_name(&t.from),
                    state_name(&t.to)
                );
            }
            // No healthy key (k1–k3, the OAuth grant) is ever disabled.
            if state_name(&t.to) == "disabled" && t.scope != "credential/k4" {
                let logs: Vec<String> = h
                    .logs()
                    .lines()
                    .filter(|l| {
                        !l.contains("candidate skipped")
                            && (l.contains("incident")
                                || l.contains("claude-max")
                                || l.contains("probe finished")
                                || (l.contains("candidate failed") && l.contains("auth")))
                    })
                    .map(|l| l.chars().take(400).collect())
                    .collect();
                panic!(
                    "{phase}: a healthy key was disabled: {t:?}\n{}",
                    logs.join("\n")
                );
            }
            last.insert(t.scope.clone(), state_name(&t.to));
        }
        // The revoked key is not used again after its disable.
        if let Some(n) = self.revoked_requests_at_disable {
            assert_eq!(
                h.sim.counts(K4).requests,
                n,
                "{phase}: the revoked key was used after it was disabled: {:?}\n{:?}",
                h.sim.attempts(K4),
                transitions(h)
                    .iter()
                    .filter(|t| t.scope.contains("k4"))
                    .map(|t| format!("{} → {} {}", state_name(&t.from), state_name(&t.to), t.why))
                    .collect::<Vec<_>>()
            );
        }
        let ok = out.iter().filter(|o| o.status == 200 && o.complete).count();
        let mut statuses: Vec<u16> = out
            .iter()
            .filter(|o| o.status != 200 && o.transport.is_none())
            .map(|o| o.status)
            .collect();
        statuses.sort_unstable();
        eprintln!(
            "chaos {phase}: {} requests, {ok} complete successes, {} in-band errors, other statuses {statuses:?}, {} transport errors",
            out.len(),
            out.iter().filter(|o| o.in_band_error).count(),
            out.iter().filter(|o| o.transport.is_some()).count()
        );
        if let Some(o) = out
            .iter()
            .find(|o| o.status != 200 && o.transport.is_none())
        {
            eprintln!("  e.g. {} {}: {}", o.api, o.status, o.error);
        }
        if std::env::var_os("CHAOS_DEBUG").is_some() {
            for t in transitions(h) {
                eprintln!(
                    "    {} {} {} → {} [{}] {}",
                    t.at.0 % 100_000,
                    t.scope,
                    state_name(&t.from),
                    state_name(&t.to),
                    t.actor,
                    t.why
                );
            }
        }
    }
}

fn import_grant(sim: &Sim, cfg: &std::path::Path, env: &[(String, String)]) {
    let t = sim.oauth_grant("claude", Duration::from_secs(3600));
    let file = cfg.with_file_name("tokens.json");
    std::fs::write(
        &file,
        json!({"access_token": t.access_token, "refresh_token": t.refresh_token, "expires_in": t.expires_in}).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["credentials", "import", "claude-max"])
        .arg(&file)
        .arg("--config")
        .arg(cfg)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The first few outcomes that are not complete successes (for assertion messages).
fn first_bad(out: &[Outcome]) -> Vec<&Outcome> {
    out.iter()
        .filter(|o| !(o.status == 200 && o.complete))
        .take(5)
        .collect()
}

async fn run_phase(traffic: &Traffic, for_: Duration) -> Vec<Outcome> {
    let _ = traffic.take();
    tokio::time::sleep(for_).await;
    // Requests that wait out a short cooldown may all be in flight at the end: wait
    // (bounded) for some to finish.
    let until = Instant::now() + Duration::from_secs(20);
    while traffic.outcomes.lock().unwrap().len() < 4 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    traffic.take()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_survives_every_fault_in_turn() {
    let oauth = "kind = \"oauth\"\nsubscription = true\n[credentials.oauth]\ntoken_url = \"{sim}/v1/oauth/token\"\nclient_id = \"chaos\"\n";
    let mut h = start_prepared(
        "chaos",
        &[("anthropic", "anthropic", ""), ("openai", "openai", "/v1")],
        &[
            Cred::new("o1", O1).on("openai"),
            Cred::new("o2", O2).on("openai"),
            Cred::new("o3", O3).on("openai"),
            Cred::new("k1", K1),
            Cred::new("k2", K2),
            Cred::new("k3", K3),
            Cred::new("k4", K4),
            Cred::new("claude-max", "").with(oauth),
        ],
        "[routes.claude]\ntargets = [{ endpoint = \"anthropic\", model = \"claude-x\", credentials = [\"k1\", \"k2\", \"k3\", \"k4\", \"claude-max\"] }]\nheaders_timeout = \"1s\"\nfirst_token_timeout = \"1s\"\nidle_timeout = \"1s\"\n\n[routes.gpt]\ntargets = [{ endpoint = \"openai\", model = \"gpt-x\", credentials = [\"o1\", \"o2\", \"o3\"] }]\nheaders_timeout = \"1s\"\nfirst_token_timeout = \"1s\"\nidle_timeout = \"1s\"\n\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
        &format!("\n[limits]\nmax_attempts = {MAX_ATTEMPTS}\n"),
        "full",
        import_grant,
    )
    .await;
    let started = Instant::now();
    let traffic = Traffic::start(h.url.clone());
    let mut checker = Checker {
        revoked_requests_at_disable: None,
    };
    let out = run_phase(&traffic, Duration::from_secs(1)).await;
    checker.check(&h, "warm-up", &out, false).await;
    assert!(
        out.iter().all(|o| o.status == 200 && o.complete),
        "{:?}",
        first_bad(&out)
    );

    // 1. A key revoked at the provider.
    let before = h.sim.counts(K4);
    h.sim.set(K4, Behaviour::Revoked);
    let _ = traffic.take();
    h.eventually("k4 disabled", || h.state_of("credential/k4") == "disabled")
        .await;
    let out = traffic.take();
    let c = h.sim.counts(K4);
    checker.revoked_requests_at_disable = Some(c.requests);
    assert!(
        c.requests - before.requests <= 4,
        "the revoked key got more than the requests in flight on it: {c:?}"
    );
    assert_eq!(c.probes - before.probes, 1, "one confirmation probe: {c:?}");
    checker.check(&h, "revoked key", &out, false).await;
    assert!(
        out.iter().all(|o| o.status == 200),
        "callers saw the revocation: {:?}",
        first_bad(&out)
    );

    // 2. A storm of 529s on two keys.
    h.sim.set(K1, Behaviour::Overloaded);
    h.sim.set(K2, Behaviour::Overloaded);
    let out = run_phase(&traffic, Duration::from_secs(3)).await;
    h.sim.set(K1, Behaviour::Ok);
    h.sim.set(K2, Behaviour::Ok);
    checker.check(&h, "529 storm", &out, false).await;

    // 3. A provider-wide auth incident: every key answers 401 for two seconds.
    h.sim.incident(true);
    let out = run_phase(&traffic, Duration::from_secs(2)).await;
    h.sim.incident(false);
    checker.check(&h, "auth incident", &out, false).await;

    // 4. Connection resets on one key.
    h.sim.set(K2, Behaviour::ConnectionReset);
    let out = run_phase(&traffic, Duration::from_secs(2)).await;
    h.sim.set(K2, Behaviour::Ok);
    checker.check(&h, "connection resets", &out, false).await;

    // 5. A silent upstream: no headers within the limit.
    h.sim.set(K3, Behaviour::SlowHeaders { ms: 5_000 });
    let out = run_phase(&traffic, Duration::from_secs(3)).await;
    h.sim.set(K3, Behaviour::Ok);
    checker.check(&h, "silent upstream", &out, false).await;

    // 6. Streams cut and stalled after they were committed.
    h.sim.set(K1, Behaviour::StreamCut { after: 1 });
    h.sim.set(
        K2,
        Behaviour::StreamStall {
            after: 1,
            ms: 3_000,
        },
    );
    h.sim.set(O1, Behaviour::StreamCut { after: 1 });
    h.sim.set(
        O2,
        Behaviour::StreamStall {
            after: 1,
            ms: 3_000,
        },
    );
    let out = run_phase(&traffic, Duration::from_secs(3)).await;
    for k in [K1, K2, O1, O2] {
        h.sim.set(k, Behaviour::Ok);
    }
    // Each broken stream is continued on another key (a whole answer) or, when that
    // breaks too, ends with the in-band error; never a truncated success (the checker).
    assert!(
        h.logs().contains("stream continued on a new attempt"),
        "cut and stalled streams were continued"
    );
    checker
        .check(&h, "cut and stalled streams", &out, false)
        .await;

    // 7. SIGKILL mid-traffic, with a token refresh just done; restart.
    h.sim.expire_access("claude");
    h.eventually("a refresh under traffic", || h.sim.refreshes("claude") >= 1)
        .await;
    let _ = traffic.take();
    h.kill_and_restart(&[]);
    *traffic.url.lock().unwrap() = h.url.clone();
    let out = run_phase(&traffic, Duration::from_secs(2)).await;
    checker.check(&h, "SIGKILL and restart", &out, true).await;
    assert_eq!(
        h.state_of("credential/k4"),
        "disabled",
        "the revoked key's disable survived the SIGKILL"
    );
    h.sim.expire_access("claude");
    let before = h.sim.refreshes("claude");
    h.eventually("a refresh after the restart", || {
        h.sim.refreshes("claude") > before
    })
    .await;
    assert!(
        h.sim.token_calls("claude").iter().all(|c| c == "ok"),
        "the rotated refresh token survived: {:?}",
        h.sim.token_calls("claude")
    );

    // 8. A config reload with an invalid file: refused, serving continues.
    let good = std::fs::read_to_string(&h.config).unwrap();
    let tmp = h.config.with_extension("tmp");
    std::fs::write(
        &tmp,
        good.replace("[routes.claude]", "[routes.claude]\nbogus = 1"),
    )
    .unwrap();
    std::fs::rename(&tmp, &h.config).unwrap();
    let _ = traffic.take();
    h.eventually("the invalid config rejected", || {
        h.logs()
            .contains("config rejected; still serving the previous one")
    })
    .await;
    let out = run_phase(&traffic, Duration::from_secs(1)).await;
    checker.check(&h, "invalid config", &out, false).await;
    assert!(out.iter().all(|o| o.status == 200), "{:?}", first_bad(&out));
    std::fs::write(&tmp, &good).unwrap();
    std::fs::rename(&tmp, &h.config).unwrap();

    // Recovery: back to complete successes on the healthy keys.
    h.sim.set_token_endpoint(TokenEndpoint::Ok);
    let out = run_phase(&traffic, Duration::from_secs(1)).await;
    checker.check(&h, "recovered", &out, false).await;
    traffic.finish().await;
    h.check_no_secret(&h.logs());
    eprintln!("chaos suite: {:.1} s", started.elapsed().as_secs_f64());
}
