//! `keyward credentials import|list|remove`: OAuth tokens in the state file.
//!
//! Tokens never go in the config file and are never printed: `import` reads them from a
//! file or stdin (the JSON a login tool wrote, or a plain token response), stores them
//! (sealed when the config has a `state_key`), and prints only the grant's fingerprint and
//! expiry.
//!
//! A running gateway holds the state file's lock, and is the only process that may write
//! it: `import` and `remove` go through its admin API (`PUT`/`DELETE
//! /admin/credentials/ID/oauth`), which stores the grant and reloads so it is used at once.
//! When no gateway answers they write the file themselves, under its lock — refused, with
//! what to do, if a gateway holds it anyway. `list` reads the file read-only (no lock,
//! never a checkpoint), which is safe beside a running gateway. In fleet mode the tokens
//! live in Redis, shared by every replica, and are written there directly.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use keyward::config::Config;
use keyward_core::health::{Clock, Timestamp};
use serde_json::Value;

use crate::cli::state::{refused_beside_gateway, Admin, Called};
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub(super) enum CredentialsCommand {
    /// Store a credential's OAuth tokens from a JSON file (or `-` for stdin). Accepts
    /// Claude Code's `.credentials.json`, Codex's `auth.json`, or a token response
    /// (`access_token`, `refresh_token`, `expires_in` or `expires_at`).
    Import {
        /// The credential id (a `kind = "oauth"` credential with an `[credentials.oauth]`
        /// table in the config).
        id: String,
        /// The JSON file, or `-` for stdin.
        #[arg(default_value = "-")]
        file: String,
        #[arg(long, default_value = "keyward.toml")]
        config: PathBuf,
    },
    /// List the stored OAuth grants (fingerprints and expiry; never the tokens).
    List {
        #[arg(long, default_value = "keyward.toml")]
        config: PathBuf,
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget a credential's stored OAuth tokens.
    Remove {
        id: String,
        #[arg(long, default_value = "keyward.toml")]
        config: PathBuf,
    },
}

/// Tokens as read from an import file.
struct Imported {
    access: String,
    refresh: String,
    expires_at: Option<Timestamp>,
}

fn str_at<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

/// Reads the token JSON a login tool writes, in any of the shapes we know.
fn parse_tokens(text: &str, now: Timestamp) -> Result<Imported, CliError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        CliError::Usage(format!(
            "the tokens are not valid JSON ({}); pass the file your login tool wrote",
            e.to_string().split(" at line").next().unwrap_or("invalid")
        ))
    })?;
    // Claude Code (`claudeAiOauth`), Codex (`tokens`), or the object itself.
    let inner = doc
        .get("claudeAiOauth")
        .or_else(|| doc.get("tokens"))
        .unwrap_or(&doc);
    let access = str_at(inner, &["access_token", "accessToken"]);
    let refresh = str_at(inner, &["refresh_token", "refreshToken"]);
    let (Some(access), Some(refresh)) = (access, refresh) else {
        return Err(CliError::Usage(
            "no access_token and refresh_token found: pass a token response, Claude Code's .credentials.json or Codex's auth.json".into(),
        ));
    };
    let num = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| inner.get(*k).and_then(Value::as_f64))
    };
    let expires_at = if let Some(ms) = num(&["expiresAt"]) {
        Some(Timestamp(ms as u64))
    } else if let Some(at) = num(&["expires_at"]) {
        // Seconds since the epoch (milliseconds if it is that large).
        Some(Timestamp(if at > 1e12 {
            at as u64
        } else {
            (at * 1000.0) as u64
        }))
    } else {
        num(&["expires_in"])
            .and_then(|s| Duration::try_from_secs_f64(s.clamp(0.0, 10.0 * 365.0 * 86_400.0)).ok())
            .map(|d| now.plus(d))
    };
    Ok(Imported {
        access: access.to_owned(),
        refresh: refresh.to_owned(),
        expires_at,
    })
}

fn load_config(path: &std::path::Path) -> Result<Config, CliError> {
    Config::load(path).map_err(|e| CliError::Config(e.to_string()))
}

pub(super) fn run(cmd: CredentialsCommand) -> Result<ExitCode, CliError> {
    match cmd {
        CredentialsCommand::Import { id, file, config } => import(&id, &file, &config),
        CredentialsCommand::List { config, json } => list(&config, json),
        CredentialsCommand::Remove { id, config } => remove(&id, &config),
    }
}

/// The running gateway's admin API, for a single-node config that has one.
fn admin(cfg: &Config) -> Option<Admin> {
    if cfg.fleet.is_some() {
        return None;
    }
    Admin::from(cfg, None)
}

/// The token store for writing; a state file held by a gateway is refused with what to do.
fn writable_store(
    cfg: &Config,
    admin: Option<&Admin>,
) -> Result<std::sync::Arc<keyward_store::TokenStore>, CliError> {
    keyward::token_store(cfg).map_err(|e| match e {
        keyward_store::TokenError::Store(store) => refused_beside_gateway(store, admin),
        other => CliError::Usage(other.to_string()),
    })
}

fn remove(id: &str, config: &std::path::Path) -> Result<ExitCode, CliError> {
    let cfg = load_config(config)?;
    let admin = admin(&cfg);
    let mut out = io::stdout().lock();
    if let Some(a) = &admin {
        match a.call(
            reqwest::Method::DELETE,
            &format!("/admin/credentials/{id}/oauth"),
            None,
        ) {
            Called::Ok(v) => {
                if v["removed"].as_bool() == Some(true) {
                    writeln!(
                        out,
                        "removed the OAuth tokens of {id} through the running gateway at {}",
                        a.base
                    )
                    .map_err(CliError::Write)?;
                    reloaded_line(&v, &a.base, &mut out)?;
                } else {
                    writeln!(out, "{id} had no stored OAuth tokens").map_err(CliError::Write)?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            Called::Refused(code, m) => {
                return Err(CliError::Usage(format!(
                    "the gateway at {} refused ({code}): {m}",
                    a.base
                )))
            }
            Called::Unreachable => {}
        }
    }
    let store = writable_store(&cfg, admin.as_ref())?;
    let removed = store
        .remove(id)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if removed {
        writeln!(out, "removed the OAuth tokens of {id}").map_err(CliError::Write)?;
        tell_gateway(&cfg, &mut out)?;
    } else {
        writeln!(out, "{id} had no stored OAuth tokens").map_err(CliError::Write)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Says whether the gateway reloaded after a token change made through it.
fn reloaded_line(v: &Value, base: &str, out: &mut impl Write) -> Result<(), CliError> {
    let line = if v["reloaded"].as_bool() == Some(true) {
        format!("the gateway at {base} reloaded and uses them now")
    } else {
        format!(
            "the gateway at {base} stored them but could not reload ({}); run `kill -HUP` on it or restart it",
            v["reload_error"].as_str().unwrap_or("unknown error")
        )
    };
    writeln!(out, "{line}").map_err(CliError::Write)
}

fn expiry_text(expires_at: Option<Timestamp>, now: Timestamp) -> String {
    match expires_at {
        Some(e) if e > now => format!(
            "the access token expires {} (in {})",
            e.rfc3339(),
            human(Duration::from_millis(e.0 - now.0))
        ),
        Some(e) => format!(
            "the access token expired {}; the gateway refreshes it first",
            e.rfc3339()
        ),
        None => "no expiry given; the gateway refreshes when the provider says".into(),
    }
}

fn encryption_text(cfg: &Config) -> &'static str {
    if cfg.state_key.is_some() {
        "encrypted"
    } else {
        "not encrypted: set state_key to encrypt tokens at rest"
    }
}

fn import(id: &str, file: &str, config: &std::path::Path) -> Result<ExitCode, CliError> {
    let cfg = load_config(config)?;
    match cfg.credentials.iter().find(|c| &*c.id == id) {
        None => {
            return Err(CliError::Usage(format!(
                "no credential {id:?} in {}: add it (kind = \"oauth\" with an [credentials.oauth] table) first",
                config.display()
            )))
        }
        Some(c) if c.oauth.is_none() => {
            return Err(CliError::Usage(format!(
                "credential {id:?} is not a refreshing OAuth credential: give it kind = \"oauth\" and an [credentials.oauth] table (token_url, client_id) in {}",
                config.display()
            )))
        }
        Some(_) => {}
    }
    let mut text = String::new();
    if file == "-" {
        io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| CliError::Read {
                path: "stdin".into(),
                source,
            })?;
    } else {
        text = std::fs::read_to_string(file).map_err(|source| CliError::Read {
            path: file.into(),
            source,
        })?;
    }
    let now = keyward::SystemClock.now();
    let t = parse_tokens(&text, now)?;
    drop(text);
    let admin = admin(&cfg);
    let mut out = io::stdout().lock();
    if let Some(a) = &admin {
        let body = serde_json::json!({
            "access_token": t.access,
            "refresh_token": t.refresh,
            "expires_at_ms": t.expires_at.map(|e| e.0),
        });
        match a.call(
            reqwest::Method::PUT,
            &format!("/admin/credentials/{id}/oauth"),
            Some(body),
        ) {
            Called::Ok(v) => {
                writeln!(
                    out,
                    "imported OAuth tokens for {id}: grant {}, {}; stored in {} ({}) by the running gateway at {}",
                    v["grant"].as_str().unwrap_or("?"),
                    expiry_text(t.expires_at, now),
                    cfg.state_label(),
                    encryption_text(&cfg),
                    a.base
                )
                .map_err(CliError::Write)?;
                reloaded_line(&v, &a.base, &mut out)?;
                return Ok(ExitCode::SUCCESS);
            }
            Called::Refused(code, m) => {
                return Err(CliError::Usage(format!(
                    "the gateway at {} refused the import ({code}): {m}",
                    a.base
                )))
            }
            Called::Unreachable => {}
        }
    }
    let store = writable_store(&cfg, admin.as_ref())?;
    let row = store
        .import(id, &t.access, &t.refresh, t.expires_at, now)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    writeln!(
        out,
        "imported OAuth tokens for {id}: grant {}, {}; stored in {} ({})",
        row.grant_fingerprint,
        expiry_text(row.expires_at, now),
        cfg.state_label(),
        encryption_text(&cfg)
    )
    .map_err(CliError::Write)?;
    tell_gateway(&cfg, &mut out)?;
    Ok(ExitCode::SUCCESS)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

/// After writing the tokens directly: a single node's gateway is not running (this
/// process held the lock), so it reads them at start; a fleet's replicas are asked to
/// reload. Says what happened.
fn tell_gateway(cfg: &Config, out: &mut impl Write) -> Result<(), CliError> {
    if cfg.fleet.is_none() {
        return writeln!(
            out,
            "no gateway is running on {}; it reads the tokens when it starts",
            cfg.state_label()
        )
        .map_err(CliError::Write);
    }
    let Some(admin) = &cfg.admin else {
        writeln!(
            out,
            "a running gateway reads the tokens at its next reload (SIGHUP) or start"
        )
        .map_err(CliError::Write)?;
        return Ok(());
    };
    let url = format!("http://{}/admin/reload", cfg.listen);
    let token = admin.token.expose().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Write)?;
    let answered = rt.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let r = client.post(&url).bearer_auth(token).send().await.ok()?;
        Some(r.status().is_success())
    });
    let line = match answered {
        Some(true) => format!("the gateway at {} reloaded and uses them now", cfg.listen),
        Some(false) => format!(
            "the gateway at {} refused the reload; run `kill -HUP` on it or restart it",
            cfg.listen
        ),
        None => format!(
            "no gateway answered at {}; it reads the tokens when it starts",
            cfg.listen
        ),
    };
    writeln!(out, "{line}").map_err(CliError::Write)
}

fn list(config: &std::path::Path, json: bool) -> Result<ExitCode, CliError> {
    let cfg = load_config(config)?;
    // Read-only: safe beside a running gateway (no lock, never a checkpoint).
    let store = match keyward::token_store_read_only(&cfg) {
        Ok(s) => s,
        Err(keyward_store::TokenError::Store(keyward_store::StoreError::Missing { .. }))
            if json =>
        {
            writeln!(io::stdout().lock(), "[]").map_err(CliError::Write)?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(keyward_store::TokenError::Store(keyward_store::StoreError::Missing { .. })) => {
            writeln!(
                io::stdout().lock(),
                "no OAuth tokens stored: there is no state file at {} yet",
                cfg.state_label()
            )
            .map_err(CliError::Write)?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(CliError::Usage(e.to_string())),
    };
    let rows = store.list().map_err(|e| CliError::Usage(e.to_string()))?;
    let now = keyward::SystemClock.now();
    let mut out = io::stdout().lock();
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "credential": r.credential,
                    "grant": r.grant_fingerprint,
                    "version": r.version,
                    "expires_at": r.expires_at.map(|e| e.rfc3339()),
                    "expired": r.expires_at.is_some_and(|e| e <= now),
                    "updated": r.updated.rfc3339(),
                })
            })
            .collect();
        writeln!(out, "{:#}", serde_json::Value::Array(items)).map_err(CliError::Write)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(out, "no OAuth tokens stored in {}", cfg.state_label())
            .map_err(CliError::Write)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<24} {:<14} {:<8} {:<22} UPDATED",
        "CREDENTIAL", "GRANT", "VERSION", "ACCESS TOKEN EXPIRES"
    )
    .map_err(CliError::Write)?;
    for r in rows {
        let expires = match r.expires_at {
            Some(e) if e > now => format!("{} ", e.rfc3339()),
            Some(_) => "expired".into(),
            None => "-".into(),
        };
        writeln!(
            out,
            "{:<24} {:<14} {:<8} {:<22} {}",
            r.credential,
            r.grant_fingerprint,
            r.version,
            expires,
            r.updated.rfc3339()
        )
        .map_err(CliError::Write)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_shapes_login_tools_write() {
        let now = Timestamp(1_000_000);
        let claude = r#"{"claudeAiOauth":{"accessToken":"a1","refreshToken":"r1","expiresAt":5000000,"scopes":["user:inference"]}}"#;
        let t = parse_tokens(claude, now).unwrap();
        assert_eq!((t.access.as_str(), t.refresh.as_str()), ("a1", "r1"));
        assert_eq!(t.expires_at, Some(Timestamp(5_000_000)));
        let codex = r#"{"OPENAI_API_KEY":null,"tokens":{"id_token":"x","access_token":"a2","refresh_token":"r2","account_id":"acc"},"last_refresh":"2026-01-01T00:00:00Z"}"#;
        let t = parse_tokens(codex, now).unwrap();
        assert_eq!((t.access.as_str(), t.refresh.as_str()), ("a2", "r2"));
        assert_eq!(t.expires_at, None);
        let plain = r#"{"access_token":"a3","refresh_token":"r3","expires_in":60}"#;
        let t = parse_tokens(plain, now).unwrap();
        assert_eq!(t.expires_at, Some(Timestamp(1_060_000)));
        // A nonsense lifetime is capped, never a panic.
        let huge = r#"{"access_token":"a5","refresh_token":"r5","expires_in":1e300}"#;
        assert!(parse_tokens(huge, now).unwrap().expires_at.is_some());
        let at = r#"{"access_token":"a4","refresh_token":"r4","expires_at":2000}"#;
        assert_eq!(
            parse_tokens(at, now).unwrap().expires_at,
            Some(Timestamp(2_000_000))
        );
    }

    #[test]
    fn bad_input_says_what_to_pass_without_echoing_it() {
        let now = Timestamp(0);
        let e = parse_tokens(r#"{"access_token":"only-access-secret"}"#, now)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("refresh_token"), "{e}");
        assert!(!e.contains("only-access-secret"), "{e}");
        let e = parse_tokens("not json sk-secret", now)
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("sk-secret"), "{e}");
    }
}
