//! [`Secret`]: a secret (a key, a token, a Redis URL with a password) held only in memory;
//! `Debug` never shows it.

use std::fmt;
use std::sync::Arc;

/// A secret, held only in memory. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) Arc<str>);

impl Secret {
    /// The secret itself, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret, shared (for a request that outlives the configuration snapshot).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    /// A short fingerprint: the first 12 hex characters of the secret's SHA-256. It tells
    /// "this exact key" apart without revealing anything about it.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes());
        digest
            .as_ref()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}
