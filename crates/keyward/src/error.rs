//! Errors the command line reports. Each says what went wrong and what to do.

use std::path::PathBuf;

/// A failure of a `keyward` command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// A file named on the command line could not be read. Check the path and its
    /// permissions. Label: `io`.
    #[error("cannot read {path}: {source} (check the path and its permissions)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the output failed (a closed pipe, a full disk). Label: `io`.
    #[error("cannot write output: {0}")]
    Write(#[source] std::io::Error),
    /// The state file could not be read (missing, locked by an incompatible version,
    /// corrupt). The message names the file and what to do. Label: `state`.
    #[error(transparent)]
    State(#[from] keyward_store::StoreError),
    /// The config file has problems; each is listed with its path. Fix them and run
    /// `keyward config check`. Label: `config`.
    #[error("{0}")]
    Config(String),
    /// An argument had a value the command cannot use. The message names the argument
    /// and the accepted values. Label: `usage`.
    #[error("{0}")]
    Usage(String),
    /// Traces were configured but their exporter could not start; the message says what
    /// to fix. Label: `config`.
    #[error(transparent)]
    Telemetry(#[from] keyward::telemetry::TelemetryError),
}

impl CliError {
    /// The process exit code: 2 for usage errors (as clap does), 1 otherwise.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Read { .. }
            | CliError::Write(_)
            | CliError::State(_)
            | CliError::Config(_)
            | CliError::Telemetry(_) => 1,
        }
    }
}
