//! `keyward.toml`: parsed strictly (unknown keys are errors), validated whole (every
//! problem reported with its path), secrets referenced (`env:VAR`, `file:PATH`) and never
//! printed.
//!
//! The parts, one concept each:
//! - `raw`: the file as written, deserialised strictly;
//! - `secret`: [`Secret`], a value held only in memory and never printed;
//! - `model`: the validated configuration the gateway reads;
//! - `parse`: [`Config::load`] and [`Config::parse`], which turn the one into the other;
//! - `sections`: the `[limits]`, `[server]`, `state`/`[fleet]` and `[credentials.oauth]`
//!   tables' validation, and the warnings;
//! - `cloud`: `kind = "cloud"` credentials' `[aws]`, `[google]` and `[entra]` tables;
//! - `durations`: durations as written (`"15s"`, `"5m"`) and timeout overrides.

mod alerts;
mod cloud;
mod durations;
mod model;
mod operator;
mod parse;
mod raw;
mod secret;
mod sections;
mod telemetry;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

pub use alerts::{AlertEvent, Alerts, Webhook, WebhookFormat};
pub use cloud::{
    read_profile, AwsAuth, AwsSource, CloudAuth, EntraAuth, GoogleAuth, ProfileError, ProfileKeys,
    ServiceAccount, ServiceAccountError,
};
pub use model::{
    Admin, Config, Credential, Endpoint, Fleet, GatewayKey, Limits, OAuthConfig, Route, Server,
    Target, Timeouts, TokenStyle, Translation, API_NAMES,
};
pub use operator::{Operator, OperatorAdmin};
pub use parse::MIN_ADMIN_TOKEN_CHARS;
pub use secret::Secret;
pub use telemetry::Telemetry;

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The path in the file (`routes."claude".targets[0].credentials[1]`).
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. Check the path. Label: `io`.
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file has problems; each is listed with its path. Label: `invalid`.
    #[error("{} has {} problem(s):\n{}", path.display(), problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

/// How much a caller's error message may say about Keyward's upstream credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    /// Credential aliases, classes, times, counts and remedies.
    #[default]
    Full,
    /// Only that the upstream is unavailable and whether to retry.
    Minimal,
}
