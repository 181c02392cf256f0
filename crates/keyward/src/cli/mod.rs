//! Command-line grammar and dispatch.

mod check;
mod classify;
mod credentials;
mod serve;
#[cfg(feature = "sim")]
mod simulated;
mod state;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::error::CliError;

/// Keyward: the LLM gateway that keeps agents running through revoked keys, expired
/// tokens, exhausted credit and provider faults.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Classify a failed upstream response: what failed, what it touches, what to do.
    Classify(classify::ClassifyArgs),
    /// One line per credential: state, class, since, last success, why. Asks the running
    /// gateway (admin API); reads the state file when none answers (or with --state).
    Status(state::StatusArgs),
    /// A credential's recent health transitions, newest first.
    History(state::HistoryArgs),
    /// Put a credential back in rotation (clears a disable, forgets its revoked
    /// fingerprint).
    Reset(state::ResetArgs),
    /// Take a credential out of rotation until it is reset.
    Disable(state::DisableArgs),
    /// Ask the running gateway to probe a credential now (health is left as it is);
    /// exits 1 unless the probe succeeded.
    Recheck(state::RecheckArgs),
    /// Run the gateway.
    Serve(serve::ServeArgs),
    /// Probe every configured credential now and print what each can do; exits 1 if any
    /// is unusable (a deploy gate). `--deep` adds a one-token request per routed model.
    Check(check::CheckArgs),
    /// Store, list or remove OAuth tokens in the state file (never printed).
    #[command(subcommand)]
    Credentials(credentials::CredentialsCommand),
    /// Work with config files.
    #[command(subcommand)]
    Config(serve::ConfigCommand),
    /// Print a shell completion script: `keyward completions bash > /etc/bash_completion.d/keyward`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Run the simulated provider (for trying Keyward without real keys).
    #[cfg(feature = "sim")]
    Sim(simulated::SimArgs),
    /// Run the gateway against its simulated provider, revoke a key mid-traffic, and show
    /// what happened.
    #[cfg(feature = "sim")]
    Demo(simulated::DemoArgs),
}

/// Runs the parsed command.
pub(crate) fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Classify(args) => classify::run(args),
        Command::Status(args) => state::status(args),
        Command::History(args) => state::history(args),
        Command::Reset(args) => state::reset(args),
        Command::Disable(args) => state::disable(args),
        Command::Recheck(args) => state::recheck(args),
        Command::Serve(args) => serve::serve(args),
        Command::Check(args) => check::run(args),
        Command::Config(cmd) => serve::config(cmd),
        Command::Credentials(cmd) => credentials::run(cmd),
        Command::Completions { shell } => {
            // Into memory first: a closed pipe is then an error to report, not a panic.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "keyward", &mut script);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &script)
                .map_err(CliError::Write)?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "sim")]
        Command::Sim(args) => simulated::sim(args),
        #[cfg(feature = "sim")]
        Command::Demo(args) => simulated::demo(args),
    }
}
