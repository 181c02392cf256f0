//! Command-line grammar and dispatch.

mod check;
mod classify;
mod credentials;
mod gateway;
mod state;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

/// Keyward: the LLM gateway that keeps agents running through revoked keys, expired
/// tokens, exhausted credit and provider faults.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Classify a failed upstream response: what failed, what it touches, what to do.
    Classify(classify::ClassifyArgs),
    /// Show every credential scope that is not healthy, from the state file (read-only;
    /// works while a gateway is running).
    Status(state::StatusArgs),
    /// Show a credential's recent health transitions, from the state file.
    History(state::HistoryArgs),
    /// Run the gateway.
    Serve(gateway::ServeArgs),
    /// Probe every configured credential now and print what each can do; exits 1 if any
    /// is unusable (a deploy gate). `--deep` adds a one-token request per routed model.
    Check(check::CheckArgs),
    /// Store, list or remove OAuth tokens in the state file (never printed).
    #[command(subcommand)]
    Credentials(credentials::CredentialsCommand),
    /// Work with config files.
    #[command(subcommand)]
    Config(gateway::ConfigCommand),
    /// Run the simulated provider (for trying Keyward without real keys).
    Sim(gateway::SimArgs),
    /// Run the gateway against its simulated provider, revoke a key mid-traffic, and show
    /// what happened.
    Demo(gateway::DemoArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Classify(args) => classify::run(args),
        Command::Status(args) => state::status(args),
        Command::History(args) => state::history(args),
        Command::Serve(args) => gateway::serve(args),
        Command::Check(args) => check::run(args),
        Command::Config(cmd) => gateway::config(cmd),
        Command::Credentials(cmd) => credentials::run(cmd),
        Command::Sim(args) => gateway::sim(args),
        Command::Demo(args) => gateway::demo(args),
    }
}
