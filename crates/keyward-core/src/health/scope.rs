//! What a verdict touches: a credential, a credential for one model, a quota bucket, a
//! model at a provider endpoint, or an endpoint.

use std::fmt;
use std::sync::Arc;

/// The key of one health record. Ids are the operator's names from the config
/// (`anthropic-team-2`), never secrets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeKey {
    /// One credential, for everything.
    Credential(Arc<str>),
    /// One credential for one upstream model.
    CredentialModel(Arc<str>, Arc<str>),
    /// Every credential sharing a quota bucket (org, project, workspace).
    QuotaBucket(Arc<str>),
    /// One upstream model at one endpoint, for every credential.
    ProviderModel(Arc<str>, Arc<str>),
    /// One endpoint.
    Endpoint(Arc<str>),
}

impl ScopeKey {
    /// The credential this scope belongs to, if it belongs to one.
    pub fn credential(&self) -> Option<&str> {
        match self {
            ScopeKey::Credential(c) | ScopeKey::CredentialModel(c, _) => Some(c),
            _ => None,
        }
    }

    /// The stable text form used in storage and the admin API:
    /// `credential/ID`, `credential_model/ID/MODEL`, `quota_bucket/ID`,
    /// `provider_model/ENDPOINT/MODEL`, `endpoint/ID`.
    pub fn to_key(&self) -> String {
        self.to_string()
    }

    /// Parses [`ScopeKey::to_key`]. Model names may contain `/`.
    pub fn parse(s: &str) -> Option<ScopeKey> {
        let (kind, rest) = s.split_once('/')?;
        let two = |r: &str| -> Option<(Arc<str>, Arc<str>)> {
            let (a, b) = r.split_once('/')?;
            (!a.is_empty() && !b.is_empty()).then(|| (Arc::from(a), Arc::from(b)))
        };
        if rest.is_empty() {
            return None;
        }
        Some(match kind {
            "credential" => ScopeKey::Credential(rest.into()),
            "credential_model" => {
                let (a, b) = two(rest)?;
                ScopeKey::CredentialModel(a, b)
            }
            "quota_bucket" => ScopeKey::QuotaBucket(rest.into()),
            "provider_model" => {
                let (a, b) = two(rest)?;
                ScopeKey::ProviderModel(a, b)
            }
            "endpoint" => ScopeKey::Endpoint(rest.into()),
            _ => return None,
        })
    }
}

impl fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeKey::Credential(c) => write!(f, "credential/{c}"),
            ScopeKey::CredentialModel(c, m) => write!(f, "credential_model/{c}/{m}"),
            ScopeKey::QuotaBucket(b) => write!(f, "quota_bucket/{b}"),
            ScopeKey::ProviderModel(e, m) => write!(f, "provider_model/{e}/{m}"),
            ScopeKey::Endpoint(e) => write!(f, "endpoint/{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for k in [
            ScopeKey::Credential("anthropic-team-2".into()),
            ScopeKey::CredentialModel("k".into(), "accounts/x/models/y".into()),
            ScopeKey::QuotaBucket("org-1".into()),
            ScopeKey::ProviderModel("openai".into(), "gpt-4o".into()),
            ScopeKey::Endpoint("azure-east".into()),
        ] {
            assert_eq!(ScopeKey::parse(&k.to_key()), Some(k));
        }
        assert_eq!(ScopeKey::parse("credential/"), None);
        assert_eq!(ScopeKey::parse("nope/x"), None);
        assert_eq!(ScopeKey::parse("credential_model/x"), None);
    }
}
