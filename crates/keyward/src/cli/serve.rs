//! `keyward serve` and `keyward config check`: loading a config and running the gateway on it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use keyward::config::{Config, ConfigError};

use crate::error::CliError;

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// The config file.
    #[arg(long, default_value = "keyward.toml")]
    config: PathBuf,
    /// Listen here instead of the config's `listen` (port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// If the state file is empty (0 bytes) or not a Keyward state file, move it aside to
    /// `<state>.unrecognised` and start with an empty state, instead of refusing to start.
    /// A missing state file is always created; a Keyward one is never touched.
    #[arg(long)]
    init_state: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum ConfigCommand {
    /// Check a config file: every problem, with its path in the file.
    Check {
        /// The config file (or --config; default: ./keyward.toml).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// The config file.
        #[arg(long, conflicts_with = "file")]
        config: Option<PathBuf>,
        /// JSON for scripts: `valid`, the counts and warnings, or every problem.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Write)
}

/// The JSON log on stderr (`KEYWARD_LOG`, default `info`), and the traces' layer when
/// `traces` is on (it sees only the trace spans). With traces off, the trace spans are
/// off for the log too (disabled where they are opened); with traces on, the log's lines
/// carry them as well (a stream's lines are written inside its attempt's span).
fn init_logs(traces: Option<&keyward::telemetry::Traces>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let filter = match format!("{}=off", keyward::telemetry::TARGET).parse() {
        Ok(d) if traces.is_none() => filter.add_directive(d),
        _ => filter,
    };
    let log = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    // The trace spans' call sites get the interest "sometimes", so each span's creation
    // asks the filters again. With "always" the per-layer filter state is not reset, and
    // a `tracing::enabled!` check just before a span (the failover loop has one) leaves
    // that span disabled for this layer (its attempt then missing from the trace).
    let spans = traces.map(|t| {
        let ours = |m: &tracing::Metadata<'_>| m.target() == keyward::telemetry::TARGET;
        let filter = tracing_subscriber::filter::dynamic_filter_fn(move |m, _| ours(m))
            .with_callsite_filter(move |m| {
                if ours(m) {
                    tracing::subscriber::Interest::sometimes()
                } else {
                    tracing::subscriber::Interest::never()
                }
            });
        t.layer().with_filter(filter)
    });
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(spans)
        .try_init();
}

pub(super) fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let cfg = load(&args.config)?;
    // Before the runtime: the exporter's HTTP client has a runtime of its own.
    let traces = keyward::telemetry::Traces::start(&cfg.telemetry)?;
    init_logs(traces.as_ref());
    if let Some(t) = &traces {
        tracing::info!(url = %t.url, sampling_ratio = cfg.telemetry.sampling_ratio, "exporting traces over OTLP/HTTP");
    }
    for w in &cfg.warnings {
        tracing::warn!(config = %args.config.display(), warning = %w, "risky config");
    }
    let rt = runtime()?;
    let served = rt.block_on(async move {
        // Bind first (a port in use is reported as such), then open the state, and only
        // then say where the gateway listens: what is printed is what serves.
        let addr = args.listen.unwrap_or(cfg.listen);
        let fail = |e: keyward::ServeError| match e {
            keyward::ServeError::State(s) => CliError::State(s),
            other => CliError::Usage(other.to_string()),
        };
        let listener = keyward::bind(addr).await.map_err(fail)?;
        let admin = keyward::bind_admin(&cfg).await.map_err(fail)?;
        let bound = listener.local_addr().map_err(CliError::Write)?;
        let admin_bound = admin
            .as_ref()
            .map(tokio::net::TcpListener::local_addr)
            .transpose()
            .map_err(CliError::Write)?;
        let init = if args.init_state {
            keyward_store::Init::MoveAside
        } else {
            keyward_store::Init::Refuse
        };
        let live = keyward::open(cfg, Some(args.config.clone()), init)
            .await
            .map_err(fail)?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "keyward listening on http://{bound}").map_err(CliError::Write)?;
            out.flush().map_err(CliError::Write)?;
        }
        // Logged, not printed: scripts read the first line of stdout for the address.
        if let Some(a) = admin_bound {
            tracing::info!(admin_listen = %a, "admin API and /metrics listening on their own address (not on the proxy listener)");
        }
        let shutdown = async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(t) => t,
                        Err(_) => {
                            let _ = ctrl_c.await;
                            return;
                        }
                    };
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
        };
        keyward::run(live, listener, admin, shutdown)
            .await
            .map_err(fail)
    });
    // After the runtime (the exporter blocks while it sends what is buffered).
    drop(rt);
    if let Some(t) = traces {
        t.shutdown();
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

fn load(path: &std::path::Path) -> Result<Config, CliError> {
    Config::load(path).map_err(|e| match e {
        ConfigError::Read { .. } => CliError::Usage(format!(
            "{e}: pass the config file with --config FILE (examples/keyward.toml is a commented one to start from)"
        )),
        ConfigError::Invalid { .. } => CliError::Config(e.to_string()),
    })
}

pub(super) fn config(cmd: ConfigCommand) -> Result<ExitCode, CliError> {
    match cmd {
        ConfigCommand::Check { file, config, json } => {
            let file = file
                .or(config)
                .unwrap_or_else(|| PathBuf::from("keyward.toml"));
            if json {
                return check_json(&file);
            }
            let cfg = load(&file)?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{} is valid: {} endpoint(s), {} credential(s), {} route(s), {} gateway key(s), {} webhook(s); state in {}",
                file.display(),
                cfg.endpoints.len(),
                cfg.credentials.len(),
                cfg.routes.len(),
                cfg.gateway_keys.len(),
                cfg.alerts.webhooks.len(),
                cfg.state_label()
            )
            .map_err(CliError::Write)?;
            for w in &cfg.warnings {
                writeln!(out, "  warning: {w}").map_err(CliError::Write)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `keyward config check --json`: one object on stdout, valid or not (exit 1 when not).
fn check_json(file: &std::path::Path) -> Result<ExitCode, CliError> {
    let problem = |p: &keyward::config::ConfigProblem| serde_json::json!({"path": p.path, "message": p.message});
    let (doc, code) = match Config::load(file) {
        Ok(cfg) => (
            serde_json::json!({
                "file": file.display().to_string(),
                "valid": true,
                "endpoints": cfg.endpoints.len(),
                "credentials": cfg.credentials.len(),
                "routes": cfg.routes.len(),
                "gateway_keys": cfg.gateway_keys.len(),
                "webhooks": cfg.alerts.webhooks.len(),
                "state": cfg.state_label(),
                "warnings": cfg.warnings.iter().map(problem).collect::<Vec<_>>(),
            }),
            ExitCode::SUCCESS,
        ),
        Err(ConfigError::Invalid { problems, .. }) => (
            serde_json::json!({
                "file": file.display().to_string(),
                "valid": false,
                "problems": problems.iter().map(problem).collect::<Vec<_>>(),
            }),
            ExitCode::FAILURE,
        ),
        Err(e @ ConfigError::Read { .. }) => {
            return Err(CliError::Usage(format!(
                "{e}: pass the config file as `keyward config check FILE`"
            )))
        }
    };
    writeln!(std::io::stdout().lock(), "{doc:#}").map_err(CliError::Write)?;
    Ok(code)
}
