//! Command-line grammar and dispatch.

mod classify;

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
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Classify(args) => classify::run(args),
    }
}
