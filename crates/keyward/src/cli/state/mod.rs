//! The operator's commands: `keyward status`, `history`, `reset` and `disable`.
//!
//! Each talks to the running gateway's admin API (address and token from the config's
//! `listen` and `[admin]`, read without resolving any provider secret: see
//! [`keyward::config::Operator`]; or `--admin-url` and `$KEYWARD_ADMIN_TOKEN` without a
//! config), which knows everything live: in-flight counts, last success, OAuth grants. When no gateway answers they fall back to the state file: `status` and
//! `history` read it read-only (safe beside a running gateway: no lock, never a
//! checkpoint), `reset` and `disable` take the state file's lock and apply the transition
//! through the same health engine, for the next start — refused while a gateway holds it.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use std::time::Duration;

use keyward::config::{Config, Operator};
use keyward_store::StoreReader;
use serde_json::{json, Value};

use crate::error::CliError;

mod print;

use print::{print_live_history, print_live_status, print_loaded};

/// Where the gateway is: its config (for the admin API's address and token, and the
/// state file's path).
#[derive(Debug, Args)]
pub(super) struct Target {
    /// The gateway's config file (default: ./keyward.toml). Only `listen`, `state` and
    /// `[admin]` are read to reach a running gateway: provider secrets need not be set.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Read this state file directly instead of asking the gateway.
    #[arg(long)]
    state: Option<PathBuf>,
    /// The admin API's base URL, if not the config's (`[admin] listen`, else `listen`).
    /// Without a config, the token comes from $KEYWARD_ADMIN_TOKEN.
    #[arg(long)]
    admin_url: Option<String>,
}

/// The admin token's variable when no config names one.
const TOKEN_ENV: &str = "KEYWARD_ADMIN_TOKEN";

impl Target {
    /// The config file's path: `--config`, or `keyward.toml` when it exists.
    fn config_path(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| {
            let default = PathBuf::from("keyward.toml");
            default.exists().then_some(default)
        })
    }
}

#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// JSON for scripts instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct HistoryArgs {
    /// The credential id.
    credential: String,
    #[command(flatten)]
    target: Target,
    /// How many transitions, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// JSON for scripts instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct ResetArgs {
    /// The credential id.
    credential: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(super) struct RecheckArgs {
    /// The credential id.
    credential: String,
    /// Send a one-token request to this upstream model instead of the key-validity call.
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    target: Target,
    /// JSON for scripts instead of a line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct DisableArgs {
    /// The credential id.
    credential: String,
    /// Why (recorded in the transition log and shown by `status`).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    target: Target,
}

/// The admin API of a configured gateway.
pub(super) struct Admin {
    pub(super) base: String,
    token: String,
}

/// What an admin call got.
pub(super) enum Called {
    Ok(Value),
    /// The gateway answered with an error (its message).
    Refused(u16, String),
    /// No gateway answered.
    Unreachable,
}

impl Admin {
    /// The admin API of a fully loaded config (its own listener, else `listen`).
    pub(super) fn from(cfg: &Config, url: Option<&str>) -> Option<Admin> {
        let admin = cfg.admin.as_ref()?;
        let base = match url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let mut addr = admin.listen.unwrap_or(cfg.listen);
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
        };
        Some(Admin {
            base,
            token: admin.token.expose().to_owned(),
        })
    }

    /// The admin API to ask: from the config's `[admin]` (its token resolved, nothing
    /// else), or `--admin-url` with `$KEYWARD_ADMIN_TOKEN`. `None`: there is no admin API
    /// to ask (read the state instead).
    fn of(op: Option<&Operator>, url: Option<&str>) -> Result<Option<Admin>, CliError> {
        let url = url.map(|u| u.trim_end_matches('/').to_owned());
        let admin = op.and_then(|o| o.admin.as_ref());
        let token = match admin {
            Some(a) => match &a.token {
                Ok(t) => t.expose().to_owned(),
                Err(why) => {
                    return Err(CliError::Usage(format!(
                        "{why}: the admin API needs it; run with the gateway's environment (e.g. `set -a; . /etc/keyward/keyward.env; set +a`), or read the state file instead with --state FILE"
                    )))
                }
            },
            None => match (&url, std::env::var(TOKEN_ENV)) {
                (Some(_), Ok(t)) if !t.trim().is_empty() => t.trim().to_owned(),
                (Some(u), _) => {
                    return Err(CliError::Usage(format!(
                        "--admin-url {u} needs the admin token: set {TOKEN_ENV}, or pass --config with the gateway's config (its [admin] token)"
                    )))
                }
                (None, _) => return Ok(None),
            },
        };
        let base = match (url, op) {
            (Some(u), _) => u,
            (None, Some(o)) => o.admin_url(),
            (None, None) => return Ok(None),
        };
        Ok(Some(Admin { base, token }))
    }

    /// The admin API's refusal, with what to do next.
    fn refused(&self, code: u16, message: &str) -> CliError {
        let next = match code {
            401 => format!(" — the token is not the running gateway's: check the [admin] token's variable (the gateway at {} was started with its own value)", self.base),
            403 => " — the admin API answers only local peers: run this on the gateway's host, or set `allow_remote = true` in [admin]".to_owned(),
            404 if !message.contains("lists") => {
                " — `keyward status` lists the credentials the gateway knows".to_owned()
            }
            _ => String::new(),
        };
        CliError::Usage(format!("the admin API refused ({code}): {message}{next}"))
    }

    pub(super) fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Called {
        let url = format!("{}{path}", self.base);
        let token = self.token.clone();
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return Called::Unreachable;
        };
        rt.block_on(async move {
            let Ok(client) = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
            else {
                return Called::Unreachable;
            };
            let mut rb = client.request(method, url).bearer_auth(token);
            if let Some(b) = body {
                rb = rb
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let Ok(r) = rb.send().await else {
                return Called::Unreachable;
            };
            let status = r.status().as_u16();
            let bytes = r.bytes().await.unwrap_or_default();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if (200..300).contains(&status) {
                Called::Ok(v)
            } else {
                let m = v["error"]["message"]
                    .as_str()
                    .map_or_else(|| v.to_string(), str::to_owned);
                Called::Refused(status, m)
            }
        })
    }
}

/// What the config says about reaching the gateway (no provider secret resolved), or
/// `None` without a config file.
fn operator(t: &Target) -> Result<Option<Operator>, CliError> {
    let Some(path) = t.config_path() else {
        return Ok(None);
    };
    if !path.exists() {
        return Err(CliError::Usage(format!(
            "no config at {}: pass --config with the gateway's config file, --admin-url with the running gateway's address, or --state with its state file",
            path.display()
        )));
    }
    Operator::load(&path)
        .map(Some)
        .map_err(|e| CliError::Config(e.to_string()))
}

/// The whole config (provider secrets resolved): for what needs more than the admin API
/// (the fleet's Redis, writing the state file).
fn config(t: &Target) -> Result<Option<Config>, CliError> {
    let Some(path) = t.config_path().filter(|p| p.exists()) else {
        return Ok(None);
    };
    Config::load(&path)
        .map(Some)
        .map_err(|e| CliError::Config(format!("{e}\n(no gateway answered, so this command reads the state itself, which needs the whole config: run it with the gateway's environment, or start the gateway)")))
}

fn state_path(t: &Target, op: Option<&Operator>) -> PathBuf {
    t.state
        .clone()
        .or_else(|| op.map(|c| c.state.clone()))
        .unwrap_or_else(|| PathBuf::from("keyward-state.db"))
}

fn note_fallback(admin: &Admin, state: &std::path::Path) {
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "no gateway answered at {}; showing the state file {} instead",
        admin.base,
        state.display()
    );
}

pub(super) fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    if let Some(state) = &args.target.state {
        return status_from_file(state, args.json);
    }
    let op = operator(&args.target)?;
    if let Some(admin) = Admin::of(op.as_ref(), args.target.admin_url.as_deref())? {
        match admin.call(reqwest::Method::GET, "/admin/credentials", None) {
            Called::Ok(v) => return print_live_status(&v, args.json),
            Called::Refused(code, m) => return Err(admin.refused(code, &m)),
            Called::Unreachable => {
                if op.as_ref().is_some_and(|o| o.fleet) {
                    let mut err = io::stderr().lock();
                    let _ = writeln!(
                        err,
                        "no gateway answered at {}; showing the fleet state in Redis instead",
                        admin.base
                    );
                } else {
                    note_fallback(&admin, &state_path(&args.target, op.as_ref()));
                }
            }
        }
    }
    if op.as_ref().is_some_and(|o| o.fleet) {
        if let Some(fleet) = config(&args.target)?.and_then(|c| c.fleet) {
            return status_from_fleet(&fleet, args.json);
        }
    }
    let path = state_path(&args.target, op.as_ref());
    match status_from_file(&path, args.json) {
        Err(CliError::State(keyward_store::StoreError::Missing { .. })) if op.is_none() => {
            Err(CliError::Usage(format!(
                "no keyward.toml here and no state file at {}: pass --config with the gateway's config file, --admin-url with a running gateway's address, or --state with its state file",
                path.display()
            )))
        }
        other => other,
    }
}

/// Fleet mode without a gateway answering: the fleet's state read from Redis.
fn status_from_fleet(fleet: &keyward::config::Fleet, json: bool) -> Result<ExitCode, CliError> {
    let loaded = fleet_runtime()?.block_on(async { fleet_member(fleet).await.map(|(_, l)| l) })?;
    print_loaded(
        &format!(
            "the fleet state in {} ({})",
            fleet.display_url(),
            fleet.prefix
        ),
        &loaded,
        json,
    )
}

fn status_from_file(state: &std::path::Path, json: bool) -> Result<ExitCode, CliError> {
    let reader = StoreReader::open(state)?;
    let loaded = reader.load()?;
    print_loaded(&state.display().to_string(), &loaded, json)
}

pub(super) fn history(args: HistoryArgs) -> Result<ExitCode, CliError> {
    let mut state = args.target.state.clone();
    if state.is_none() {
        let op = operator(&args.target)?;
        let path = state_path(&args.target, op.as_ref());
        if let Some(admin) = Admin::of(op.as_ref(), args.target.admin_url.as_deref())? {
            let p = format!(
                "/admin/credentials/{}/history?limit={}",
                args.credential, args.limit
            );
            match admin.call(reqwest::Method::GET, &p, None) {
                Called::Ok(v) => return print_live_history(&args.credential, &v, args.json),
                Called::Refused(code, m) => return Err(admin.refused(code, &m)),
                Called::Unreachable => {
                    if !op.as_ref().is_some_and(|o| o.fleet) {
                        note_fallback(&admin, &path);
                    }
                }
            }
        }
        let fleet = match op.as_ref().is_some_and(|o| o.fleet) {
            true => config(&args.target)?.and_then(|c| c.fleet),
            false => None,
        };
        if let Some(fleet) = &fleet {
            let rt = fleet_runtime()?;
            let rows = rt.block_on(async {
                let (store, _) = fleet_member(fleet).await?;
                store
                    .history(Some(&args.credential), args.limit)
                    .await
                    .map_err(|e| CliError::Usage(e.to_string()))
            })?;
            let v = json!({"transitions": rows.iter().map(|t| {
                let state = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(json!(s));
                json!({"at": t.at.rfc3339(), "scope": t.scope, "from": state(&t.from), "to": state(&t.to),
                       "actor": t.actor, "why": t.why, "replica": t.replica})
            }).collect::<Vec<_>>()});
            return print_live_history(&args.credential, &v, args.json);
        }
        state = Some(path);
    }
    let state = state.unwrap_or_default();
    let reader = StoreReader::open(&state)?;
    let rows = reader.history(&args.credential, args.limit)?;
    let mut out = io::stdout().lock();
    if args.json {
        let items: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"seq": r.seq, "at": r.at.rfc3339(), "scope": r.scope, "actor": r.actor, "why": r.why,
                       "from": serde_json::from_str::<serde_json::Value>(&r.from).unwrap_or_default(),
                       "to": serde_json::from_str::<serde_json::Value>(&r.to).unwrap_or_default()})
            })
            .collect();
        writeln!(out, "{:#}", serde_json::Value::Array(items)).map_err(CliError::Write)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(out, "no transitions recorded for {}", args.credential)
            .map_err(CliError::Write)?;
    }
    for r in rows {
        let name = |s: &str| {
            serde_json::from_str::<serde_json::Value>(s)
                .ok()
                .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "?".into())
        };
        writeln!(
            out,
            "{}  {:<36} {:>8} → {:<8} [{}] {}",
            r.at.rfc3339(),
            r.scope,
            name(&r.from),
            name(&r.to),
            r.actor,
            r.why
        )
        .map_err(CliError::Write)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `keyward reset` / `keyward disable`: through the gateway, or the state file when it
/// is down.
pub(super) fn operate(
    credential: &str,
    target: &Target,
    disable: Option<&str>,
) -> Result<ExitCode, CliError> {
    let op = operator(target)?;
    let verb = if disable.is_some() {
        "disabled"
    } else {
        "reset"
    };
    let mut out = io::stdout().lock();
    let admin = Admin::of(op.as_ref(), target.admin_url.as_deref())?;
    if let Some(admin) = &admin {
        let (path, body) = match disable {
            Some(reason) => (
                format!("/admin/credentials/{credential}/disable"),
                Some(json!({"reason": reason})),
            ),
            None => (format!("/admin/credentials/{credential}/reset"), None),
        };
        match admin.call(reqwest::Method::POST, &path, body) {
            Called::Ok(v) => {
                let state = v["health"]["state"].as_str().unwrap_or("?");
                writeln!(
                    out,
                    "{verb} {credential} in the running gateway: now {state}"
                )
                .map_err(CliError::Write)?;
                return Ok(ExitCode::SUCCESS);
            }
            Called::Refused(code, m) => return Err(admin.refused(code, &m)),
            Called::Unreachable => {}
        }
    }
    // No gateway answered: the state itself is changed, which needs the whole config.
    let Some(cfg) = config(target)? else {
        return Err(CliError::Usage(match &admin {
            Some(a) => format!("no gateway answered at {}, and without a config the state cannot be changed instead: start the gateway, or pass --config with its config file", a.base),
            None => "no config: pass --config with the gateway's config file (or --admin-url with the running gateway's address)".into(),
        }));
    };
    if !cfg.credentials.iter().any(|c| &*c.id == credential) {
        return Err(CliError::Usage(format!(
            "no credential {credential:?} in the config: `keyward status` lists the credentials"
        )));
    }
    if let Some(fleet) = cfg.fleet.clone() {
        return operate_fleet(cfg, &fleet, credential, disable, verb);
    }
    // No gateway: apply the transition to the state file through the engine itself.
    let (store, loaded) = keyward_store::SqliteStore::open(&cfg.state)
        .map_err(|e| refused_beside_gateway(e, admin.as_ref()))?;
    // The change's alerts go into the state file's outbox with it: the gateway delivers
    // them when it starts.
    let alerts = keyward::gateway::alerts::Alerts::new(
        keyward::gateway::alerts::Queue::Durable(store.outbox()),
        std::sync::Arc::new(keyward::gateway::metrics::Metrics::new()),
    );
    alerts.configure(&cfg, keyward::gateway::caller_bound::SecretMask::default());
    let engine = keyward_core::health::HealthEngine::new(
        cfg.policy.clone(),
        std::sync::Arc::new(keyward::SystemClock),
        std::sync::Arc::new(store),
        1,
    );
    engine.restore(loaded.records, loaded.denylist);
    let path = cfg.state.clone();
    let gw = keyward::gateway::Gateway::new(cfg, engine)
        .map_err(|e| CliError::Usage(format!("cannot build the gateway: {e}")))?;
    let ack = match disable {
        Some(reason) => gw.engine.disable(credential, reason),
        None => gw.engine.reset(credential),
    };
    if let Some(ack) = ack {
        ack.wait()
            .map_err(|e| CliError::Usage(format!("not written to the state file: {e}")))?;
    }
    writeln!(
        out,
        "{verb} {credential} in the state file {} (no gateway answered); it applies when the gateway starts",
        path.display()
    )
    .map_err(CliError::Write)?;
    Ok(ExitCode::SUCCESS)
}

/// A write to the state file refused because a gateway holds it: the store's message
/// (the file, the holder's pid, what to do) and why the gateway could not be asked
/// instead. Other errors pass through.
pub(super) fn refused_beside_gateway(
    e: keyward_store::StoreError,
    admin: Option<&Admin>,
) -> CliError {
    if !matches!(e, keyward_store::StoreError::Locked { .. }) {
        return CliError::State(e);
    }
    CliError::Usage(match admin {
        Some(a) => format!(
            "{e}. No gateway answered at {} (the config's `listen`, or --admin-url): check that address, or stop the gateway and retry",
            a.base
        ),
        None => format!(
            "{e}. This config has no [admin] table, so the gateway cannot be asked: add one (and restart the gateway), or stop the gateway and retry"
        ),
    })
}

/// Connects to the fleet's Redis as a short-lived member named `keyward-cli`.
async fn fleet_member(
    fleet: &keyward::config::Fleet,
) -> Result<(keyward_store::RedisStore, keyward_store::Loaded), CliError> {
    let (store, loaded) = keyward_store::RedisStore::connect(keyward_store::FleetConfig {
        url: fleet.url.expose().to_owned(),
        prefix: fleet.prefix.clone(),
        replica: "keyward-cli".into(),
        timeout: fleet.timeout,
        ca_pem: fleet.ca_pem().map_err(CliError::Write)?,
    })
    .await
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let status = store.status();
    if !status.loaded {
        return Err(CliError::Usage(format!(
            "no gateway answered and the fleet's Redis at {} cannot be read either: {}",
            fleet.display_url(),
            status.last_error.unwrap_or_default()
        )));
    }
    Ok((store, loaded))
}

fn fleet_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Write)
}

/// `reset` / `disable` with no replica answering: the operator's transition is written
/// to the fleet state in Redis (an operator's action wins over any version), and every
/// running replica applies it from the fleet log.
fn operate_fleet(
    cfg: Config,
    fleet: &keyward::config::Fleet,
    credential: &str,
    disable: Option<&str>,
    verb: &str,
) -> Result<ExitCode, CliError> {
    let rt = fleet_runtime()?;
    rt.block_on(async {
        let (store, loaded) = fleet_member(fleet).await?;
        let engine = keyward_core::health::HealthEngine::new(
            cfg.policy.clone(),
            std::sync::Arc::new(keyward::SystemClock),
            std::sync::Arc::new(store.clone()),
            1,
        );
        engine.restore(loaded.records, loaded.denylist);
        store.attach(engine.clone());
        let gw = keyward::gateway::Gateway::new(cfg, engine)
            .map_err(|e| CliError::Usage(format!("cannot build the gateway: {e}")))?;
        let ack = match disable {
            Some(reason) => gw.engine.disable(credential, reason),
            None => gw.engine.reset(credential),
        };
        if let Some(ack) = ack {
            tokio::task::spawn_blocking(move || ack.wait())
                .await
                .map_err(|e| CliError::Usage(e.to_string()))?
                .map_err(|e| CliError::Usage(format!("not written to Redis: {e}")))?;
        }
        store.flush().await;
        if store.status().pending > 0 {
            return Err(CliError::Usage(format!(
                "Redis at {} stopped answering: the {verb} was not written",
                fleet.display_url()
            )));
        }
        Ok(())
    })?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{verb} {credential} in the fleet state in Redis {} (prefix {}); running replicas apply it at once",
        fleet.display_url(),
        fleet.prefix
    )
    .map_err(CliError::Write)?;
    Ok(ExitCode::SUCCESS)
}

/// `keyward recheck`: the running gateway probes a credential now (the status page's
/// Re-check). Health is left as it is; exits 1 unless the probe succeeded.
pub(super) fn recheck(args: RecheckArgs) -> Result<ExitCode, CliError> {
    if args.target.state.is_some() {
        return Err(CliError::Usage(
            "recheck asks the running gateway to probe; --state cannot do that: drop it".into(),
        ));
    }
    let op = operator(&args.target)?;
    let Some(admin) = Admin::of(op.as_ref(), args.target.admin_url.as_deref())? else {
        return Err(CliError::Usage(
            "recheck asks the running gateway: pass --config with its config (an [admin] table), or --admin-url with $KEYWARD_ADMIN_TOKEN; `keyward check --config FILE` probes without a gateway".into(),
        ));
    };
    let mut path = format!("/admin/credentials/{}/probe", args.credential);
    if let Some(m) = &args.model {
        let encoded: String = m
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        path.push_str(&format!("?model={encoded}"));
    }
    let v = match admin.call(reqwest::Method::POST, &path, None) {
        Called::Ok(v) => v,
        Called::Refused(code, m) => return Err(admin.refused(code, &m)),
        Called::Unreachable => {
            return Err(CliError::Usage(format!(
                "no gateway answered at {}: recheck asks the running gateway; start it, or run `keyward check --config FILE`, which probes without one",
                admin.base
            )))
        }
    };
    let ok = v["result"] == "ok";
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{v:#}").map_err(CliError::Write)?;
    } else {
        let result = v["result"].as_str().unwrap_or("?");
        let mut line = format!(
            "{} {}: {result}",
            args.credential,
            v["check"].as_str().unwrap_or("key")
        );
        if let Some(class) = v["class"].as_str() {
            line.push_str(&format!(" ({class})"));
        }
        if let Some(detail) = v["detail"].as_str().filter(|d| !d.is_empty()) {
            line.push_str(&format!(": {detail}"));
        }
        if ok {
            line.push_str(&format!(
                "; health is unchanged (`keyward reset {}` puts it back if it is out)",
                args.credential
            ));
        }
        writeln!(out, "{line}").map_err(CliError::Write)?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) fn reset(args: ResetArgs) -> Result<ExitCode, CliError> {
    operate(&args.credential, &args.target, None)
}

pub(super) fn disable(args: DisableArgs) -> Result<ExitCode, CliError> {
    if args.reason.trim().is_empty() {
        return Err(CliError::Usage(
            "--reason must say why (it is recorded with the disable)".into(),
        ));
    }
    operate(&args.credential, &args.target, Some(&args.reason))
}
