//! `keyward status` and `keyward history` over the state file (read-only).

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use keyward_core::health::Health;
use keyward_store::StoreReader;
use serde_json::json;

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The state file (the `state` path of keyward.toml).
    #[arg(long, default_value = "keyward-state.db")]
    state: PathBuf,
    /// JSON for scripts instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The credential id.
    credential: String,
    /// The state file.
    #[arg(long, default_value = "keyward-state.db")]
    state: PathBuf,
    /// How many transitions, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// JSON for scripts instead of lines.
    #[arg(long)]
    json: bool,
}

pub fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    let reader = StoreReader::open(&args.state)?;
    let loaded = reader.load()?;
    let mut out = io::stdout().lock();
    if args.json {
        let scopes: Vec<_> = loaded
            .records
            .iter()
            .map(
                |(k, h, since)| json!({"scope": k.to_key(), "since": since.rfc3339(), "health": h}),
            )
            .collect();
        let doc = json!({"state_file": args.state, "not_healthy": scopes, "revoked_fingerprints": loaded.denylist.len()});
        writeln!(out, "{doc:#}").map_err(CliError::Write)?;
        return Ok(ExitCode::SUCCESS);
    }
    let colour = io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if loaded.records.is_empty() {
        writeln!(out, "every scope in {} is healthy", args.state.display())
            .map_err(CliError::Write)?;
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

fn describe(h: &Health) -> (String, &'static str) {
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

pub fn history(args: HistoryArgs) -> Result<ExitCode, CliError> {
    let reader = StoreReader::open(&args.state)?;
    let rows = reader.history(&args.credential, args.limit)?;
    let mut out = io::stdout().lock();
    if args.json {
        let items: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"seq": r.seq, "at": r.at.rfc3339(), "scope": r.scope, "actor": r.actor, "why": r.why,
                       "from": serde_json::from_str::<serde_json::Value>(&r.from).unwrap_or_default(),
                       "to": serde_json::from_str::<serde_json::Value>(&r.to).unwrap_or_default()})
            })
            .collect();
        writeln!(out, "{:#}", serde_json::Value::Array(items)).map_err(CliError::Write)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(out, "no transitions recorded for {}", args.credential)
            .map_err(CliError::Write)?;
    }
    for r in rows {
        let name = |s: &str| {
            serde_json::from_str::<serde_json::Value>(s)
                .ok()
                .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "?".into())
        };
        writeln!(
            out,
            "{}  {:<36} {:>8} → {:<8} [{}] {}",
            r.at.rfc3339(),
            r.scope,
            name(&r.from),
            name(&r.to),
            r.actor,
            r.why
        )
        .map_err(CliError::Write)?;
    }
    Ok(ExitCode::SUCCESS)
}
