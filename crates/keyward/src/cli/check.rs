//! `keyward check`: probe every configured credential now, with the same cheap
//! authenticated calls the gateway's confirmation probes use, and print what each one can
//! do. `--deep` adds a one-token request per credential and routed model, which catches
//! exhausted credit and missing model access that a models list cannot show. The exit
//! status is non-zero when any credential is unusable, so it can gate a deploy.
//!
//! It never opens the gateway's state file (a running gateway holds it) and never prints
//! a secret: credentials are named by id and fingerprint.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use futures_util::StreamExt;
use keyward::gateway::prober::{check, Check};
use keyward::gateway::{null_sink, Gateway};
use keyward_core::classify::Class;
use keyward_core::health::{HealthEngine, ProbeKind};
use serde_json::json;

use crate::error::CliError;

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// The gateway's config file.
    #[arg(long, default_value = "keyward.toml")]
    config: PathBuf,
    /// Also send a one-token request per credential and routed model.
    #[arg(long)]
    deep: bool,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// One check's row.
struct Row {
    credential: String,
    fingerprint: String,
    what: String,
    result: &'static str,
    usable: bool,
    detail: String,
}

fn verdict(c: &Check) -> (&'static str, bool, String) {
    match c {
        Check::Ok => ("ok", true, String::new()),
        Check::Unreachable(why) => ("unreachable", false, format!("no answer: {why}")),
        Check::Unknown(why) => ("unknown", false, why.clone()),
        Check::Failed(f) => {
            let (label, usable) = match f.class {
                Class::AuthPermanent => ("revoked", false),
                Class::AuthTransient => ("auth expired", false),
                Class::Billing => ("billing", false),
                Class::ModelNotFound => ("no model access", false),
                Class::RateLimit => ("rate limited", true),
                Class::Overloaded | Class::ServerError | Class::Timeout | Class::Network => {
                    ("provider error", true)
                }
                Class::BadRequest | Class::ContextOverflow | Class::ContentFilter => {
                    ("rejected", false)
                }
            };
            (label, usable, f.explanation.clone())
        }
    }
}

pub(super) fn run(args: CheckArgs) -> Result<ExitCode, CliError> {
    let cfg =
        keyward::config::Config::load(&args.config).map_err(|e| {
            CliError::Config(format!(
                "{e}\n(`keyward check` calls the providers itself, so it needs every secret the config names: run it with the gateway's environment; `keyward status` asks the running gateway with only the admin token)"
            ))
        })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Write)?;
    let rows = rt.block_on(async move {
        let engine = HealthEngine::new(
            cfg.policy.clone(),
            Arc::new(keyward::SystemClock),
            null_sink(),
            1,
        );
        // OAuth credentials are checked with their stored tokens (a refresh, if one is
        // due, is committed to the state file like the gateway's own). While a gateway
        // holds the state file they are read-only: its tokens are used, never refreshed
        // from here (the provider would rotate the gateway's refresh token).
        let store = if cfg.credentials.iter().any(|c| c.oauth.is_some()) {
            Some(match keyward::token_store(&cfg) {
                Ok(s) => s,
                Err(keyward_store::TokenError::Store(keyward_store::StoreError::Locked {
                    ..
                })) => keyward::token_store_read_only(&cfg)
                    .map_err(|e| CliError::Usage(e.to_string()))?,
                Err(e) => return Err(CliError::Usage(e.to_string())),
            })
        } else {
            None
        };
        let metrics = Arc::new(keyward::gateway::metrics::Metrics::new());
        let oauth = Arc::new(keyward::gateway::oauth::OAuth::new(store, metrics.clone()));
        let gw = Arc::new(
            Gateway::build(cfg, engine, metrics, oauth)
                .map_err(|e| CliError::Usage(format!("cannot build the HTTP client: {e}")))?,
        );
        let mut jobs = Vec::new();
        for c in &gw.cfg.credentials {
            jobs.push((c.id.clone(), None, ProbeKind::KeyValidity));
            if args.deep {
                let mut models: Vec<Arc<str>> = gw
                    .cfg
                    .routes
                    .values()
                    .flat_map(|r| r.targets.iter())
                    .filter(|t| t.credentials.contains(&c.id))
                    .map(|t| t.model.clone())
                    .collect();
                models.sort();
                models.dedup();
                for m in models {
                    jobs.push((c.id.clone(), Some(m), ProbeKind::MinimalRequest));
                }
            }
        }
        let total = jobs.len();
        let progress = std::io::stderr().is_terminal() && !args.json;
        let mut done = 0usize;
        let mut rows = Vec::with_capacity(total);
        let mut results = futures_util::stream::iter(jobs.into_iter().map(|(id, model, kind)| {
            let gw = gw.clone();
            async move {
                let c = check(&gw, &id, model.clone(), kind).await;
                (id, model, c)
            }
        }))
        .buffered(8);
        while let Some((id, model, c)) = results.next().await {
            done += 1;
            if progress {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\rchecking {done}/{total} …");
                let _ = err.flush();
            }
            let fingerprint = gw
                .credential(&id)
                .map(|c| gw.fingerprint(&c))
                .unwrap_or_default();
            let (result, usable, detail) = verdict(&c);
            rows.push(Row {
                credential: id.to_string(),
                fingerprint,
                what: model.map_or_else(|| "key".to_owned(), |m| format!("1-token {m}")),
                result,
                usable,
                detail,
            });
        }
        if progress {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{:<40}\r", "");
        }
        Ok::<_, CliError>(rows)
    })?;
    let mut out = std::io::stdout().lock();
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if args.json {
        for r in &rows {
            let line = json!({"credential": r.credential, "fingerprint": r.fingerprint, "check": r.what,
                              "result": r.result, "usable": r.usable, "detail": r.detail});
            writeln!(out, "{line}").map_err(CliError::Write)?;
        }
    } else {
        writeln!(
            out,
            "{:<24} {:<13} {:<28} {:<16} detail",
            "CREDENTIAL", "FINGERPRINT", "CHECK", "RESULT"
        )
        .map_err(CliError::Write)?;
        for r in &rows {
            let result = if colour {
                let paint = match (r.usable, r.result) {
                    (true, "ok") => "32",
                    (true, _) => "33",
                    _ => "31",
                };
                format!("\u{1b}[{paint}m{:<16}\u{1b}[0m", r.result)
            } else {
                format!("{:<16}", r.result)
            };
            writeln!(
                out,
                "{:<24} {:<13} {:<28} {result} {}",
                r.credential, r.fingerprint, r.what, r.detail
            )
            .map_err(CliError::Write)?;
        }
        let bad = rows.iter().filter(|r| !r.usable).count();
        writeln!(
            out,
            "\n{} check(s): {} usable, {bad} unusable",
            rows.len(),
            rows.len() - bad
        )
        .map_err(CliError::Write)?;
    }
    Ok(if rows.iter().all(|r| r.usable) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
