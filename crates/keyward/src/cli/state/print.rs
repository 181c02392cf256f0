//! How `status` and `history` print: a line per credential (or JSON), from the admin
//! API's answer or from a loaded state.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use keyward_core::health::Health;

use serde_json::{json, Value};

use crate::error::CliError;

/// One line per credential from the admin API's list.
pub(super) fn print_live_status(v: &Value, json: bool) -> Result<ExitCode, CliError> {
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{v:#}").map_err(CliError::Write)?;
        return Ok(ExitCode::SUCCESS);
    }
    let colour = io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    writeln!(
        out,
        "{:<22} {:<10} {:<13} {:<9} {:<16} {:<21} {:<21} DETAIL",
        "CREDENTIAL", "PROVIDER", "FINGERPRINT", "STATE", "CLASS", "SINCE", "LAST SUCCESS"
    )
    .map_err(CliError::Write)?;
    let empty = Vec::new();
    let creds = v["credentials"].as_array().unwrap_or(&empty);
    let mut unusable = 0;
    for c in creds {
        let health: Health = serde_json::from_value(c["health"].clone()).unwrap_or_default();
        let (mut detail, paint) = describe(&health);
        let models = c["models"].as_array().map_or(0, Vec::len);
        if models > 0 {
            if !detail.is_empty() {
                detail.push_str("; ");
            }
            detail.push_str(&format!("{models} model scope(s) out of rotation"));
        }
        if matches!(health, Health::Disabled { .. }) {
            unusable += 1;
        }
        // Fleet mode: which replica recorded the state in force.
        if let (false, Some(r)) = (
            health == Health::Healthy,
            c["recent_transitions"][0]["replica"].as_str(),
        ) {
            detail.push_str(&format!(" [recorded by {r}]"));
        }
        let state = if colour {
            format!("\u{1b}[{paint}m{:<9}\u{1b}[0m", health.name())
        } else {
            format!("{:<9}", health.name())
        };
        let since = if health == Health::Healthy {
            "-".to_owned()
        } else {
            c["since"].as_str().unwrap_or("-").to_owned()
        };
        writeln!(
            out,
            "{:<22} {:<10} {:<13} {state} {:<16} {:<21} {:<21} {detail}",
            c["id"].as_str().unwrap_or("?"),
            c["provider"].as_str().unwrap_or("?"),
            c["fingerprint"].as_str().unwrap_or("?"),
            health.class().map_or("-", |c| c.as_str()),
            since,
            c["last_success"].as_str().unwrap_or("-"),
        )
        .map_err(CliError::Write)?;
    }
    for o in v["other_scopes"].as_array().unwrap_or(&empty) {
        let health: Health = serde_json::from_value(o["health"].clone()).unwrap_or_default();
        let (detail, _) = describe(&health);
        writeln!(
            out,
            "scope {}: {} since {} {detail}",
            o["scope"].as_str().unwrap_or("?"),
            health.name(),
            o["since"].as_str().unwrap_or("-")
        )
        .map_err(CliError::Write)?;
    }
    for i in v["incidents"].as_array().unwrap_or(&empty) {
        let names: Vec<&str> = i["credentials"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(Value::as_str)
            .collect();
        writeln!(
            out,
            "AUTH INCIDENT on endpoint {} since {}: {} rejected at once ({}); nothing disabled; next probe {}; disabled at {} if still rejected",
            i["endpoint"].as_str().unwrap_or("?"),
            i["since"].as_str().unwrap_or("-"),
            names.len(),
            names.join(", "),
            i["next_probe"].as_str().unwrap_or("-"),
            i["disables_at"].as_str().unwrap_or("-"),
        )
        .map_err(CliError::Write)?;
    }
    writeln!(
        out,
        "{} credential(s), {} usable",
        creds.len(),
        creds.len() - unusable
    )
    .map_err(CliError::Write)?;
    let f = &v["fleet"];
    if f.is_object() {
        let state = if f["degraded_since"].is_u64() {
            format!(
                "DEGRADED (Redis unreachable: {}; serving on this replica's view, {} transition(s) waiting)",
                f["last_error"].as_str().unwrap_or("?"),
                f["pending"]
            )
        } else {
            "connected".to_owned()
        };
        writeln!(
            out,
            "fleet: answered by replica {} (prefix {}), {state}",
            f["replica"].as_str().unwrap_or("?"),
            f["prefix"].as_str().unwrap_or("?"),
        )
        .map_err(CliError::Write)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn print_loaded(
    state: &str,
    loaded: &keyward_store::Loaded,
    json: bool,
) -> Result<ExitCode, CliError> {
    let mut out = io::stdout().lock();
    if json {
        let scopes: Vec<_> = loaded
            .records
            .iter()
            .map(
                |(k, h, since)| json!({"scope": k.to_key(), "since": since.rfc3339(), "health": h}),
            )
            .collect();
        let doc = json!({"state_file": state, "not_healthy": scopes, "revoked_fingerprints": loaded.denylist.len()});
        writeln!(out, "{doc:#}").map_err(CliError::Write)?;
        return Ok(ExitCode::SUCCESS);
    }
    let colour = io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if loaded.records.is_empty() {
        writeln!(out, "every scope in {state} is healthy").map_err(CliError::Write)?;
    } else {
        writeln!(
            out,
            "{:<44} {:<9} {:<16} {:<20} detail",
            "SCOPE", "STATE", "CLASS", "SINCE"
        )
        .map_err(CliError::Write)?;
        let mut rows = loaded.records.clone();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, health, since) in rows {
            let (detail, paint) = describe(&health);
            let state = if colour {
                format!("\u{1b}[{paint}m{:<9}\u{1b}[0m", health.name())
            } else {
                format!("{:<9}", health.name())
            };
            writeln!(
                out,
                "{:<44} {state} {:<16} {:<20} {detail}",
                key.to_key(),
                health.class().map_or("-", |c| c.as_str()),
                since.rfc3339()
            )
            .map_err(CliError::Write)?;
        }
    }
    if !loaded.denylist.is_empty() {
        writeln!(
            out,
            "{} revoked secret(s) remembered (they stay out if configured again)",
            loaded.denylist.len()
        )
        .map_err(CliError::Write)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn describe(h: &Health) -> (String, &'static str) {
    match h {
        Health::Healthy => (String::new(), "32"),
        Health::Cooling { until, .. } => (format!("cooling until {}", until.rfc3339()), "33"),
        Health::Suspect {
            evidence, probe_at, ..
        } => (
            format!("probe due {}; {evidence}", probe_at.rfc3339()),
            "33",
        ),
        Health::Probing { evidence, .. } => (format!("probe in flight; {evidence}"), "33"),
        Health::Disabled {
            evidence,
            recheck_at,
            by_operator,
            ..
        } => {
            let when = match (by_operator, recheck_at) {
                (true, _) => "until an operator resets it".to_owned(),
                (false, Some(at)) => format!("re-check {}", at.rfc3339()),
                (false, None) => "no re-check".to_owned(),
            };
            (format!("{evidence}; {when}"), "31")
        }
    }
}

pub(super) fn print_live_history(id: &str, v: &Value, json: bool) -> Result<ExitCode, CliError> {
    let mut out = io::stdout().lock();
    let empty = Vec::new();
    let rows = v["transitions"].as_array().unwrap_or(&empty);
    if json {
        writeln!(out, "{:#}", Value::Array(rows.clone())).map_err(CliError::Write)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(out, "no transitions recorded for {id}").map_err(CliError::Write)?;
    }
    for r in rows {
        writeln!(
            out,
            "{}  {:<36} {:>8} → {:<8} [{}{}] {}",
            r["at"].as_str().unwrap_or("?"),
            r["scope"].as_str().unwrap_or("?"),
            r["from"]["state"].as_str().unwrap_or("?"),
            r["to"]["state"].as_str().unwrap_or("?"),
            r["actor"].as_str().unwrap_or("?"),
            r["replica"]
                .as_str()
                .map(|x| format!(" by {x}"))
                .unwrap_or_default(),
            r["why"].as_str().unwrap_or("")
        )
        .map_err(CliError::Write)?;
    }
    Ok(ExitCode::SUCCESS)
}
