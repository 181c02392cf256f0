//! The simulated provider and the demo (built with the `sim` feature: a production
//! `keyward serve` does not link the simulator).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;

use super::serve::runtime;
use crate::error::CliError;

#[derive(Debug, Args)]
pub(super) struct SimArgs {
    /// Where the simulated provider listens.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
}

#[derive(Debug, Args)]
pub(super) struct DemoArgs {
    /// How many requests to send.
    #[arg(long, default_value_t = 12)]
    requests: usize,
}

pub(super) fn sim(args: SimArgs) -> Result<ExitCode, CliError> {
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

pub(super) fn demo(args: DemoArgs) -> Result<ExitCode, CliError> {
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
