//! [`Operator`]: what the operator's commands (`keyward status`, `history`, `reset`,
//! `disable`, `credentials`) need from a config file to reach the running gateway — its
//! admin API's address and token, and where the state lives — read without resolving
//! any provider secret, so they work in a shell that has only the admin token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{ConfigError, ConfigProblem, Secret};

/// The gateway's operator-facing settings.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The proxy listener (`listen`).
    pub listen: SocketAddr,
    /// `[admin]`: its token (or why it could not be read) and its own listener.
    pub admin: Option<OperatorAdmin>,
    /// The state file (relative paths resolved against the config's folder); meaningless
    /// in fleet mode.
    pub state: PathBuf,
    /// `state` names Redis (fleet mode).
    pub fleet: bool,
}

/// `[admin]` as the operator's commands read it.
#[derive(Debug, Clone)]
pub struct OperatorAdmin {
    /// The admin token, or what is wrong with its reference (an unset variable).
    pub token: Result<Secret, String>,
    pub listen: Option<SocketAddr>,
}

impl Operator {
    /// Reads `path` leniently: only `listen`, `state` and `[admin]` are looked at.
    pub fn load(path: &Path) -> Result<Operator, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Operator::parse(&text, base, &|v| std::env::var(v).ok()).map_err(|problems| {
            ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            }
        })
    }

    /// [`Operator::load`] on text.
    pub fn parse(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Operator, Vec<ConfigProblem>> {
        let problem = |path: &str, message: String| ConfigProblem {
            path: path.into(),
            message,
        };
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| vec![problem("", e.to_string().trim().replace('\n', " "))])?;
        let addr = |v: Option<&toml::Value>, path: &str, default: &str| {
            let s = v.and_then(toml::Value::as_str).unwrap_or(default);
            s.parse::<SocketAddr>().map_err(|_| {
                vec![problem(
                    path,
                    format!("{s:?} is not an address like {default}"),
                )]
            })
        };
        let listen = addr(table.get("listen"), "listen", "127.0.0.1:8080")?;
        let admin = match table.get("admin").and_then(toml::Value::as_table) {
            None => None,
            Some(a) => Some(OperatorAdmin {
                token: match a.get("token").and_then(toml::Value::as_str) {
                    Some(r) => resolve(r, base, env),
                    None => Err("[admin] has no token".into()),
                },
                listen: match a.get("listen") {
                    None => None,
                    Some(v) => Some(addr(Some(v), "admin.listen", "127.0.0.1:9091")?),
                },
            }),
        };
        let state = table
            .get("state")
            .and_then(toml::Value::as_str)
            .unwrap_or("keyward-state.db");
        let fleet = state.starts_with("redis://")
            || state.starts_with("rediss://")
            || state.starts_with("env:")
            || state.starts_with("file:");
        Ok(Operator {
            listen,
            admin,
            state: base.join(state),
            fleet,
        })
    }

    /// The admin API's base URL: its own listener, or the proxy's (an unspecified
    /// address is reached on loopback).
    pub fn admin_url(&self) -> String {
        let mut addr = self
            .admin
            .as_ref()
            .and_then(|a| a.listen)
            .unwrap_or(self.listen);
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }
}

/// An `env:VAR` or `file:PATH` reference's value, or what is wrong with it.
fn resolve(
    reference: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, String> {
    if let Some(var) = reference.strip_prefix("env:") {
        return env(var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| Secret(v.trim().into()))
            .ok_or_else(|| format!("environment variable {var} (the [admin] token) is not set"));
    }
    if let Some(file) = reference.strip_prefix("file:") {
        let full = base.join(file);
        return std::fs::read_to_string(&full)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| Secret(v.trim().into()))
            .ok_or_else(|| {
                format!(
                    "the [admin] token file {} cannot be read (or is empty)",
                    full.display()
                )
            });
    }
    Err("the [admin] token must be referenced as \"env:VAR\" or \"file:PATH\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_admin_token_is_resolved_and_the_admin_listener_wins() {
        // Provider secrets whose variables are unset do not matter here.
        let text = "listen = \"0.0.0.0:8080\"\nstate = \"data/state.db\"\n[admin]\ntoken = \"env:ADMIN\"\nlisten = \"127.0.0.1:9091\"\n[[credentials]]\nid = \"a\"\nendpoint = \"x\"\nsecret = \"env:UNSET_PROVIDER_KEY\"\n";
        let op = Operator::parse(text, Path::new("/etc/keyward"), &|v| {
            (v == "ADMIN").then(|| "admin-token-0123456789".to_owned())
        })
        .unwrap();
        assert_eq!(op.admin_url(), "http://127.0.0.1:9091");
        assert_eq!(
            op.admin.as_ref().unwrap().token.as_ref().unwrap().expose(),
            "admin-token-0123456789"
        );
        assert_eq!(op.state, Path::new("/etc/keyward/data/state.db"));
        assert!(!op.fleet);
        // Without the variable: a message that names it, not a failure to read the file.
        let op = Operator::parse(text, Path::new("."), &|_| None).unwrap();
        let err = op.admin.unwrap().token.unwrap_err();
        assert!(err.contains("ADMIN"), "{err}");
        // No [admin] listener: the proxy's, on loopback.
        let op = Operator::parse(
            "listen = \"0.0.0.0:8181\"\nstate = \"redis://r:6379\"\n",
            Path::new("."),
            &|_| None,
        )
        .unwrap();
        assert_eq!(op.admin_url(), "http://127.0.0.1:8181");
        assert!(op.fleet && op.admin.is_none());
    }
}
