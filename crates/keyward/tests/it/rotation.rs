#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]
//! Key rotation without a restart, end to end: hot reload of the config file (by edit and
//! by `SIGHUP`), an invalid config rejected while serving continues, and the rotation
//! drill under steady traffic.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::*;
use keyward_sim::Behaviour;

const OLD: &str = "sk-ant-rotation-old-0001";
const NEW: &str = "sk-ant-rotation-new-0002";

/// Replaces the config file the way editors and deploy tools do: write aside, rename over.
fn write_config(h: &Harness, text: &str) {
    let tmp = h.dir.join("keyward.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, h.dir.join("keyward.toml")).unwrap();
}

fn read_config(h: &Harness) -> String {
    std::fs::read_to_string(h.dir.join("keyward.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rotation_drill_under_steady_traffic() {
    let h = Arc::new(
        start(
            "rotation",
            ANTHROPIC,
            &[Cred::new("k-old", OLD)],
            &route("claude", "anthropic", "claude-x", &["k-old"]),
            "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
        )
        .await,
    );
    // `keyward status`, as the operator runs it (over the admin API).
    let status_line = |h: &Harness, id: &str| -> Option<String> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["status", "--admin-url", &h.url, "--config"])
            .arg(&h.config)
            .envs(h.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        h.check_no_secret(&text);
        text.lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .map(str::to_owned)
    };
    // Steady traffic from two callers, streaming and not, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, errors) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let mut callers = Vec::new();
    for c in 0..2 {
        let (h, stop, ok, errors) = (h.clone(), stop.clone(), ok.clone(), errors.clone());
        callers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let stream = (i + c).is_multiple_of(2);
                let r = h.messages("claude", stream).await;
                if r.status == 200 && (!stream || r.body.contains("message_stop")) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("{}: {}", r.status, r.body));
                }
                i += 1;
            }
        }));
    }
    let served = |n: usize| {
        let ok = ok.clone();
        move || ok.load(Ordering::Relaxed) >= n
    };
    h.eventually("traffic on the old key", served(20)).await;

    // 1. The operator adds the new key (its secret in a file) by editing the config.
    std::fs::write(h.dir.join("new.key"), NEW).unwrap();
    let text = read_config(&h).replace(
        "credentials = [\"k-old\"]",
        "credentials = [\"k-old\", \"k-new\"]",
    );
    let text = format!("{text}\n[[credentials]]\nid = \"k-new\"\nendpoint = \"anthropic\"\nsecret = \"file:new.key\"\n");
    write_config(&h, &text);
    h.eventually("the config reloaded", || {
        h.logs().contains("config reloaded")
    })
    .await;
    h.eventually("traffic on the new key", || h.sim.counts(NEW).requests >= 5)
        .await;

    // 2. The operator revokes the old key at the provider.
    h.sim.set(OLD, Behaviour::Revoked);
    h.eventually("the old key disabled", || {
        h.state_of("credential/k-old") == "disabled"
    })
    .await;
    let before = ok.load(Ordering::Relaxed);
    h.eventually("traffic after the disable", served(before + 20))
        .await;
    let line = status_line(&h, "k-old").expect("k-old listed");
    assert!(
        line.contains("disabled")
            && line.contains("auth_permanent")
            && line.contains("confirmed by probe"),
        "{line}"
    );

    // 3. ... and removes it from the config.
    let text = read_config(&h).replace(
        "credentials = [\"k-old\", \"k-new\"]",
        "credentials = [\"k-new\"]",
    );
    let start = text.find("[[credentials]]\nid = \"k-old\"").unwrap();
    let end = start + text[start..].find("\n\n").unwrap() + 2;
    let text = format!("{}{}", &text[..start], &text[end..]);
    write_config(&h, &text);
    h.eventually("the second reload", || {
        h.logs().matches("config reloaded").count() >= 2
    })
    .await;
    let before = ok.load(Ordering::Relaxed);
    h.eventually("traffic after the removal", served(before + 20))
        .await;
    assert_eq!(status_line(&h, "k-old"), None, "gone from the status");
    assert!(status_line(&h, "k-new").is_some_and(|l| l.contains("healthy")));
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }

    let errors = errors.lock().unwrap();
    assert!(errors.is_empty(), "callers saw errors: {errors:?}");
    // The revoked key got only what was in flight on it (two callers) and one probe.
    let old: Vec<_> = h
        .sim
        .attempts(OLD)
        .into_iter()
        .filter(|a| a.outcome == "revoked")
        .collect();
    let requests = old.iter().filter(|a| !a.probe).count();
    let probes = old.iter().filter(|a| a.probe).count();
    assert!(requests <= 2, "in-flight requests only: {old:?}");
    assert_eq!(probes, 1, "exactly one confirmation probe: {old:?}");
    // The state file says why.
    let status = h.status();
    let entry = status["not_healthy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scope"] == "credential/k-old")
        .cloned()
        .unwrap();
    assert_eq!(entry["health"]["class"], "auth_permanent", "{entry}");
    h.check_no_secret(&h.logs());
    h.check_no_secret(&status.to_string());
    assert!(
        !h.logs().contains(NEW),
        "the file secret never appears in a log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_rejected_while_serving_continues_and_sighup_reloads() {
    let h = start(
        "reload",
        ANTHROPIC,
        &[
            Cred::new("a", "sk-ant-reload-0001"),
            Cred::new("b", "sk-ant-reload-0002"),
        ],
        &route("claude", "anthropic", "claude-x", &["a"]),
        "",
    )
    .await;
    assert_eq!(
        h.messages("claude", false)
            .await
            .header("x-keyward-credential"),
        "a"
    );
    // An invalid edit: every problem reported, the old config kept.
    let good = read_config(&h);
    write_config(
        &h,
        &good.replace("credentials = [\"a\"]", "credentials = [\"a\", \"ghost\"]"),
    );
    h.eventually("the rejection reported", || {
        h.logs().contains("config rejected")
    })
    .await;
    assert!(
        h.logs()
            .contains("routes.claude.targets[0].credentials[1]: unknown credential"),
        "the problem is named: {}",
        h.logs()
    );
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "still serving: {}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "a");
    // SIGHUP applies the file as it is now.
    std::fs::write(
        h.dir.join("keyward.toml"),
        good.replace("credentials = [\"a\"]", "credentials = [\"b\"]"),
    )
    .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &h.gateway.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    h.eventually("the reload", || h.logs().contains("config reloaded"))
        .await;
    assert!(h.logs().contains("SIGHUP: reloading the config"));
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "b");
    // The gateway is the same process throughout.
    assert!(h.logs().matches("keyward listening").count() <= 1);
}
