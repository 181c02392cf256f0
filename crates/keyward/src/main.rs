//! `keyward`: the command-line entry point. It parses arguments, wires the library
//! pieces together and reports errors; it decides nothing itself.

mod cli;
mod error;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "keyward: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
