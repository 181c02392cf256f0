//! AWS shared credentials and config files (`~/.aws/credentials`, `~/.aws/config`): a
//! profile's keys, read the way the AWS CLI reads them.

use std::path::Path;

use secrecy::SecretString;

/// Keys read from a shared credentials file's profile.
#[derive(Debug)]
pub struct ProfileKeys {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

/// Why a profile's keys cannot be read. None quotes a secret.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The credentials file cannot be read: check the path and permissions.
    #[error("cannot read the AWS credentials file {path}: {why}")]
    Unreadable { path: String, why: String },
    /// No such profile in either file.
    #[error("profile {name:?} is in neither {file} nor {config}; add it (aws configure --profile {name})")]
    NoProfile {
        name: String,
        file: String,
        config: String,
    },
    /// The profile lacks its keys (an SSO or credential_process profile, which Keyward
    /// does not run).
    #[error("profile {0:?} has no aws_access_key_id and aws_secret_access_key; Keyward reads static or session keys from the file (run `aws configure export-credentials` into it for SSO profiles)")]
    NoKeys(String),
}

/// Reads `name`'s keys from the shared credentials file, then the config file
/// (`[profile NAME]`, or `[default]`).
pub fn read_profile(file: &Path, config: &Path, name: &str) -> Result<ProfileKeys, ProfileError> {
    let creds = match std::fs::read_to_string(file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(ProfileError::Unreadable {
                path: file.display().to_string(),
                why: e.to_string(),
            })
        }
    };
    let conf = std::fs::read_to_string(config).ok();
    let from_creds = creds.as_deref().and_then(|t| ini_section(t, name));
    let config_name = if name == "default" {
        "default".to_owned()
    } else {
        format!("profile {name}")
    };
    let from_config = conf.as_deref().and_then(|t| ini_section(t, &config_name));
    if from_creds.is_none() && from_config.is_none() {
        if creds.is_none() && conf.is_none() {
            return Err(ProfileError::Unreadable {
                path: file.display().to_string(),
                why: "no such file".into(),
            });
        }
        return Err(ProfileError::NoProfile {
            name: name.to_owned(),
            file: file.display().to_string(),
            config: config.display().to_string(),
        });
    }
    let get = |k: &str| {
        from_creds
            .as_ref()
            .and_then(|s| s.iter().find(|(key, _)| key == k))
            .or_else(|| {
                from_config
                    .as_ref()
                    .and_then(|s| s.iter().find(|(key, _)| key == k))
            })
            .map(|(_, v)| v.clone())
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok(ProfileKeys {
            access_key_id: id,
            secret_access_key: SecretString::from(secret),
            session_token: get("aws_session_token")
                .filter(|t| !t.is_empty())
                .map(SecretString::from),
        }),
        _ => Err(ProfileError::NoKeys(name.to_owned())),
    }
}

/// The `key = value` pairs of INI section `[name]`.
fn ini_section(text: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut found = None;
    let mut current = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = section.trim() == name;
            if current && found.is_none() {
                found = Some(Vec::new());
            }
            continue;
        }
        if current {
            if let (Some(pairs), Some((k, v))) = (found.as_mut(), line.split_once('=')) {
                let pairs: &mut Vec<(String, String)> = pairs;
                pairs.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    found
}
