//! `keyward serve`, `keyward config check`, `keyward sim`, `keyward demo`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use keyward::config::{Config, ConfigError};

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config file.
    #[arg(long, default_value = "keyward.toml")]
    config: PathBuf,
    /// Listen here instead of the config's `listen` (port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file: every problem, with its path in the file.
    Check {
        /// The config file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Where the simulated provider listens.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many requests to send.
    #[arg(long, default_value_t = 12)]
    requests: usize,
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Write)
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let cfg = load(&args.config)?;
    init_logs();
    for w in &cfg.warnings {
        tracing::warn!(config = %args.config.display(), warning = %w, "risky config");
    }
    let rt = runtime()?;
    rt.block_on(async move {
        // Bind first (a port in use is reported as such), then open the state, and only
        // then say where the gateway listens: what is printed is what serves.
        let addr = args.listen.unwrap_or(cfg.listen);
        let fail = |e: keyward::ServeError| CliError::Usage(e.to_string());
        let listener = keyward::bind(addr).await.map_err(fail)?;
        let admin = keyward::bind_admin(&cfg).await.map_err(fail)?;
        let bound = listener.local_addr().map_err(CliError::Write)?;
        let admin_bound = admin
            .as_ref()
            .map(tokio::net::TcpListener::local_addr)
            .transpose()
            .map_err(CliError::Write)?;
        let live = keyward::open(cfg, Some(args.config.clone()))
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
    })?;
    Ok(ExitCode::SUCCESS)
}

fn load(path: &std::path::Path) -> Result<Config, CliError> {
    Config::load(path).map_err(|e| match e {
        ConfigError::Read { .. } => CliError::Usage(e.to_string()),
        ConfigError::Invalid { .. } => CliError::Config(e.to_string()),
    })
}

pub fn config(cmd: ConfigCommand) -> Result<ExitCode, CliError> {
    match cmd {
        ConfigCommand::Check { file } => {
            let cfg = load(&file)?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{} is valid: {} endpoint(s), {} credential(s), {} route(s), {} gateway key(s); state in {}",
                file.display(),
                cfg.endpoints.len(),
                cfg.credentials.len(),
                cfg.routes.len(),
                cfg.gateway_keys.len(),
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

pub fn sim(args: SimArgs) -> Result<ExitCode, CliError> {
    let rt = runtime()?;
    rt.block_on(async move {
        let sim = keyward_sim::Sim::new();
        let server = sim.serve(args.listen).await.map_err(CliError::Write)?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "keyward-sim listening on {} (POST /_sim/keys/KEY {{\"kind\":\"revoked\"}}, GET /_sim/counts)", server.url()).map_err(CliError::Write)?;
            out.flush().map_err(CliError::Write)?;
        }
        let _ = tokio::signal::ctrl_c().await;
        drop(server);
        Ok::<(), CliError>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn demo(args: DemoArgs) -> Result<ExitCode, CliError> {
    let rt = runtime()?;
    let report = rt
        .block_on(keyward::demo::run(args.requests.max(6)))
        .map_err(|e| CliError::Usage(format!("demo failed: {e}")))?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", report.text).map_err(CliError::Write)?;
    Ok(if report.failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
