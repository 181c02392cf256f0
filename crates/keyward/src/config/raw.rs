//! The file as written: `keyward.toml` deserialised strictly (unknown keys are errors),
//! before any validation. Only `parse` and `sections` read these.

use std::collections::BTreeMap;

use keyward_core::health::Policy;
use serde::Deserialize;

use super::Detail;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default = "default_listen")]
    pub(super) listen: String,
    #[serde(default = "default_state")]
    pub(super) state: String,
    #[serde(default)]
    pub(super) gateway_keys: Vec<RawGatewayKey>,
    #[serde(default)]
    pub(super) endpoints: BTreeMap<String, RawEndpoint>,
    #[serde(default)]
    pub(super) credentials: Vec<RawCredential>,
    #[serde(default)]
    pub(super) routes: BTreeMap<String, RawRoute>,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) policy: Option<Policy>,
    #[serde(default)]
    pub(super) admin: Option<RawAdmin>,
    /// The key that encrypts OAuth tokens in the state file (`env:VAR` or `file:PATH`, 64
    /// hex characters).
    #[serde(default)]
    pub(super) state_key: Option<String>,
    /// How long the health of a credential removed from the config is kept (so it comes
    /// back with its history if re-added), e.g. "7d".
    #[serde(default)]
    pub(super) removed_credential_retention: Option<String>,
    /// Fleet mode's settings (with `state = "redis://…"`).
    #[serde(default)]
    pub(super) fleet: Option<RawFleet>,
    /// `[alerts]` and its `[[alerts.webhooks]]`.
    #[serde(default)]
    pub(super) alerts: Option<super::alerts::RawAlerts>,
    /// `[telemetry]`: OpenTelemetry traces.
    #[serde(default)]
    pub(super) telemetry: Option<super::telemetry::RawTelemetry>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub(super) prefix: Option<String>,
    pub(super) replica: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) token: String,
    #[serde(default)]
    pub(super) allow_remote: bool,
    /// A listener of its own for the admin API and `/metrics`.
    #[serde(default)]
    pub(super) listen: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) header_read_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) reverse_proxy: Option<bool>,
    pub(super) trust_loopback: Option<bool>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_state() -> String {
    "keyward-state.db".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGatewayKey {
    pub(super) name: String,
    pub(super) key: String,
    #[serde(default)]
    pub(super) detail: Detail,
    /// The status of the "every credential is dead" error for this key's callers.
    #[serde(default)]
    pub(super) dead_keys_status: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub(super) provider: String,
    /// Optional for Bedrock and Vertex AI, whose URL follows from `region`.
    #[serde(default)]
    pub(super) base_url: Option<String>,
    #[serde(default)]
    pub(super) api_version: Option<String>,
    /// Bedrock's and Vertex AI's region (`us-east-1`, `europe-west1`, `global`).
    #[serde(default)]
    pub(super) region: Option<String>,
    /// Vertex AI's Google Cloud project id.
    #[serde(default)]
    pub(super) project: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    pub(super) id: String,
    pub(super) endpoint: String,
    #[serde(default)]
    pub(super) secret: Option<String>,
    #[serde(default)]
    pub(super) kind: Option<String>,
    /// Refreshing OAuth: tokens come from the state file (`keyward credentials import`).
    #[serde(default)]
    pub(super) oauth: Option<RawOAuth>,
    /// Cloud credentials (`kind = "cloud"`): one of these tables.
    #[serde(default)]
    pub(super) aws: Option<super::cloud::RawAws>,
    #[serde(default)]
    pub(super) google: Option<super::cloud::RawGoogle>,
    #[serde(default)]
    pub(super) entra: Option<super::cloud::RawEntra>,
    /// Opt-in for consumer subscription tokens (Claude, ChatGPT/Codex).
    #[serde(default)]
    pub(super) subscription: bool,
    #[serde(default)]
    pub(super) bucket: Option<String>,
    #[serde(default)]
    pub(super) priority: i32,
    #[serde(default)]
    pub(super) models: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth {
    pub(super) token_url: Option<String>,
    pub(super) client_id: String,
    #[serde(default)]
    pub(super) scopes: Vec<String>,
    #[serde(default)]
    pub(super) style: Option<String>,
    #[serde(default)]
    pub(super) refresh_ahead: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) endpoint: String,
    pub(super) model: String,
    pub(super) credentials: Vec<String>,
    #[serde(default)]
    pub(super) apis: Option<Vec<String>>,
    #[serde(default)]
    pub(super) first_token_timeout: Option<String>,
    #[serde(default)]
    pub(super) idle_timeout: Option<String>,
    #[serde(default)]
    pub(super) headers_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) targets: Vec<RawTarget>,
    #[serde(default)]
    pub(super) fallbacks: Vec<RawTarget>,
    #[serde(default)]
    pub(super) context_fallback: Option<String>,
    #[serde(default)]
    pub(super) lossy_translation: Option<bool>,
    #[serde(default)]
    pub(super) default_max_tokens: Option<u64>,
    #[serde(default)]
    pub(super) first_token_timeout: Option<String>,
    #[serde(default)]
    pub(super) idle_timeout: Option<String>,
    #[serde(default)]
    pub(super) headers_timeout: Option<String>,
    #[serde(default)]
    pub(super) first_content_budget: Option<String>,
    #[serde(default)]
    pub(super) retry_after_wait: Option<String>,
    #[serde(default)]
    pub(super) continue_streams: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) connect: Option<String>,
    pub(super) headers: Option<String>,
    pub(super) first_token: Option<String>,
    pub(super) first_content_budget: Option<String>,
    pub(super) idle: Option<String>,
    pub(super) request: Option<String>,
    pub(super) retry_after_wait: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_body_bytes: Option<usize>,
    pub(super) max_event_bytes: Option<usize>,
    pub(super) max_attempts: Option<u32>,
    pub(super) max_continuations: Option<u32>,
    pub(super) max_buffered_body_bytes: Option<usize>,
    pub(super) body_wait: Option<String>,
}
