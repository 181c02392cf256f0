//! [`Config::load`] and [`Config::parse`]: the raw file validated whole into a [`Config`],
//! every problem reported with its path, secrets resolved from `env:VAR` and `file:PATH`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::classify::{CredentialKind, Provider};

use super::durations::{humantime_duration, override_timeouts, retry_after_wait, zero_timeout};
use super::raw::RawConfig;
use super::sections::{families, fleet_state, limits, oauth_config, server, warnings};
use super::{
    Admin, Config, ConfigError, ConfigProblem, Credential, Endpoint, GatewayKey, Route, Secret,
    Target, Timeouts, Translation, API_NAMES,
};

/// What a derived first-content budget leaves a fallback after the slowest target's own
/// limit.
const FALLBACK_SHARE: Duration = Duration::from_secs(5);

impl Config {
    /// Loads and validates `path`, resolving secrets from the environment and files.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base, &|v| std::env::var(v).ok()).map_err(|problems| {
            ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            }
        })
    }

    /// Parses and validates config text. `env` looks up environment variables; relative
    /// paths are resolved against `base`.
    #[allow(clippy::too_many_lines)] // independent checks in file order, so problems are reported as the file reads
    pub fn parse(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigProblem>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            vec![ConfigProblem {
                path: String::new(),
                message: e.to_string().trim().replace('\n', " "),
            }]
        })?;
        let mut p = Vec::new();
        let mut problem = |path: String, message: String| p.push(ConfigProblem { path, message });
        let listen = raw.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
            problem(
                "listen".into(),
                format!("{:?} is not an address like 127.0.0.1:8080", raw.listen),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let resolve = |path: &str,
                       reference: &str,
                       problem: &mut dyn FnMut(String, String)|
         -> Option<Secret> {
            if let Some(var) = reference.strip_prefix("env:") {
                match env(var) {
                    Some(v) if !v.trim().is_empty() => Some(Secret(v.trim().into())),
                    _ => {
                        problem(
                            path.into(),
                            format!("environment variable {var} is not set (or empty)"),
                        );
                        None
                    }
                }
            } else if let Some(file) = reference.strip_prefix("file:") {
                let full = base.join(file);
                match std::fs::read_to_string(&full) {
                    Ok(v) if !v.trim().is_empty() => Some(Secret(v.trim().into())),
                    Ok(_) => {
                        problem(
                            path.into(),
                            format!("secret file {} is empty", full.display()),
                        );
                        None
                    }
                    Err(e) => {
                        problem(
                            path.into(),
                            format!("cannot read secret file {}: {e}", full.display()),
                        );
                        None
                    }
                }
            } else {
                problem(path.into(), "secrets must be referenced as \"env:VAR\" or \"file:PATH\", never written in the config".into());
                None
            }
        };
        let mut gateway_keys = Vec::new();
        for (i, k) in raw.gateway_keys.iter().enumerate() {
            if let Some(s) = k
                .dead_keys_status
                .filter(|s| !DEAD_KEYS_STATUSES.contains(s))
            {
                problem(
                    format!("gateway_keys[{i}].dead_keys_status"),
                    format!("{s} is not offered: use 400 (for clients that retry every 5xx), 500, 502 or 503 (the default); never 401/403 (a client blames its own key) or 429 (a client retries it)"),
                );
            }
            if let Some(key) = resolve(&format!("gateway_keys[{i}].key"), &k.key, &mut problem) {
                gateway_keys.push(GatewayKey {
                    name: k.name.as_str().into(),
                    key,
                    detail: k.detail,
                    dead_keys_status: k.dead_keys_status,
                });
            }
        }
        let admin_listen = raw.admin.as_ref().and_then(|a| {
            a.listen
                .as_deref()
                .and_then(|l| match l.parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        problem(
                            "admin.listen".into(),
                            format!("{l:?} is not an address like 127.0.0.1:9091"),
                        );
                        None
                    }
                })
        });
        let admin = raw.admin.as_ref().and_then(|a| {
            resolve("admin.token", &a.token, &mut problem).map(|token| Admin {
                token,
                allow_remote: a.allow_remote,
                listen: admin_listen,
            })
        });
        if let Some(a) = &admin {
            if a.token.expose().chars().count() < MIN_ADMIN_TOKEN_CHARS {
                problem(
                    "admin.token".into(),
                    format!("the admin token is shorter than {MIN_ADMIN_TOKEN_CHARS} characters and can be guessed; generate one with `openssl rand -hex 32`"),
                );
            }
            if let Some(k) = gateway_keys.iter().find(|k| k.key == a.token) {
                problem(
                    "admin.token".into(),
                    format!("the admin token is also gateway key {:?}: every caller with that key would be an admin; give the admin API a token of its own", k.name),
                );
            }
            if a.listen.is_some_and(|l| l == listen && l.port() != 0) {
                problem(
                    "admin.listen".into(),
                    "the admin listener must differ from `listen`; pick another port (e.g. 127.0.0.1:9091)".into(),
                );
            }
        }
        if raw.gateway_keys.is_empty() {
            problem(
                "gateway_keys".into(),
                "at least one gateway key is needed: callers authenticate with it".into(),
            );
        }
        let mut endpoints = BTreeMap::new();
        for (id, e) in &raw.endpoints {
            let path = format!("endpoints.{}", quote(id));
            let provider = Provider::parse(&e.provider).unwrap_or_else(|| {
                problem(
                    format!("{path}.provider"),
                    format!(
                        "unknown provider {:?}; known: {}",
                        e.provider,
                        Provider::ALL.map(Provider::as_str).join(", ")
                    ),
                );
                Provider::Unknown
            });
            let base_url = super::cloud::endpoint_base_url(&path, e, provider, &mut problem);
            if provider == Provider::AzureOpenAi && e.api_version.is_none() {
                problem(
                    format!("{path}.api_version"),
                    "Azure OpenAI needs an api_version, e.g. \"2024-10-21\"".into(),
                );
            }
            let id: Arc<str> = id.as_str().into();
            endpoints.insert(
                id.clone(),
                Endpoint {
                    id,
                    provider,
                    base_url,
                    api_version: e.api_version.clone(),
                    region: e.region.clone(),
                    project: e.project.clone(),
                },
            );
        }
        let mut credentials = Vec::new();
        let mut ids = HashSet::new();
        for (i, c) in raw.credentials.iter().enumerate() {
            let path = format!("credentials[{i}]");
            if !ids.insert(c.id.clone()) {
                problem(
                    format!("{path}.id"),
                    format!("duplicate credential id {:?}", c.id),
                );
            }
            if c.id.is_empty() || c.id.contains('/') {
                problem(
                    format!("{path}.id"),
                    "a credential id must be non-empty and contain no '/'".into(),
                );
            }
            if !raw.endpoints.contains_key(&c.endpoint) {
                problem(
                    format!("{path}.endpoint"),
                    format!("unknown endpoint {:?}", c.endpoint),
                );
            }
            let kind = match c.kind.as_deref() {
                None => CredentialKind::ApiKey,
                Some(k) => CredentialKind::parse(k).unwrap_or_else(|| {
                    problem(
                        format!("{path}.kind"),
                        format!("{k:?} is not one of api_key, oauth, cloud"),
                    );
                    CredentialKind::ApiKey
                }),
            };
            let provider = raw
                .endpoints
                .get(&c.endpoint)
                .and_then(|e| Provider::parse(&e.provider));
            let oauth = c
                .oauth
                .as_ref()
                .and_then(|o| oauth_config(&path, o, kind, provider, &mut problem));
            let cloud = super::cloud::cloud_auth(
                &super::cloud::Cx {
                    path: &path,
                    kind,
                    provider,
                    base,
                    env,
                    resolve: &resolve,
                },
                c.aws.as_ref(),
                c.google.as_ref(),
                c.entra.as_ref(),
                &mut problem,
            );
            let subscription_provider =
                matches!(provider, Some(Provider::Anthropic | Provider::OpenAi));
            if kind == CredentialKind::OAuth && subscription_provider && !c.subscription {
                problem(
                    format!("{path}.subscription"),
                    "OAuth tokens of a Claude or ChatGPT subscription are opt-in: set subscription = true on this credential once you have checked that your plan's terms allow it".into(),
                );
            }
            let secret = match (&c.secret, &oauth) {
                (Some(_), _) if kind == CredentialKind::Cloud => {
                    problem(
                        format!("{path}.secret"),
                        "a cloud credential takes its keys from its [aws], [google] or [entra] table, not a secret".into(),
                    );
                    continue;
                }
                (None, None) if kind == CredentialKind::Cloud => match cloud {
                    Some(_) => None,
                    None => continue,
                },
                (Some(_), Some(_)) => {
                    problem(
                        format!("{path}.secret"),
                        "a refreshing OAuth credential takes no secret in the config: import its tokens with `keyward credentials import`".into(),
                    );
                    None
                }
                (None, Some(_)) => None,
                (Some(s), None) => match resolve(&format!("{path}.secret"), s, &mut problem) {
                    Some(s) => Some(s),
                    None => continue,
                },
                (None, None) => {
                    problem(
                        format!("{path}.secret"),
                        "missing: reference the key as \"env:VAR\" or \"file:PATH\" (or, for kind = \"oauth\", add an [credentials.oauth] table and import its tokens)".into(),
                    );
                    continue;
                }
            };
            {
                credentials.push(Credential {
                    id: c.id.as_str().into(),
                    endpoint: c.endpoint.as_str().into(),
                    secret,
                    kind,
                    oauth,
                    cloud,
                    bucket: c.bucket.as_deref().map(Into::into),
                    priority: c.priority,
                    models: c
                        .models
                        .as_ref()
                        .map(|m| m.iter().map(|s| Arc::from(s.as_str())).collect()),
                });
            }
        }
        for (j, c) in credentials.iter().enumerate() {
            let Some(secret) = &c.secret else { continue };
            if let Some(first) = credentials[..j]
                .iter()
                .find(|o| o.secret.as_ref() == Some(secret))
            {
                let i = raw
                    .credentials
                    .iter()
                    .position(|rc| rc.id == *c.id)
                    .unwrap_or(j);
                problem(
                    format!("credentials[{i}].secret"),
                    format!(
                        "credential {:?} holds the same secret as {:?}: one key under two ids doubles its share of the traffic and splits its health; keep one id per key",
                        c.id, first.id
                    ),
                );
            }
        }
        let mut timeouts = Timeouts::default();
        let t = &raw.timeouts;
        for (name, value, slot) in [
            ("connect", &t.connect, &mut timeouts.connect),
            ("headers", &t.headers, &mut timeouts.headers),
            ("first_token", &t.first_token, &mut timeouts.first_token),
            (
                "first_content_budget",
                &t.first_content_budget,
                &mut timeouts.first_content_budget,
            ),
            ("idle", &t.idle, &mut timeouts.idle),
            ("request", &t.request, &mut timeouts.request),
        ] {
            if let Some(v) = value {
                match humantime_duration(v) {
                    Some(d) if d.is_zero() => problem(format!("timeouts.{name}"), zero_timeout()),
                    Some(d) => *slot = d,
                    None => problem(
                        format!("timeouts.{name}"),
                        format!("{v:?} is not a duration like \"15s\" or \"2m\""),
                    ),
                }
            }
        }
        retry_after_wait(
            &mut timeouts,
            "timeouts.retry_after_wait",
            &t.retry_after_wait,
            &mut problem,
        );
        let mut routes = BTreeMap::new();
        let mut route_warnings = Vec::new();
        for (name, r) in &raw.routes {
            let path = format!("routes.{}", quote(name));
            if r.targets.is_empty() {
                problem(
                    format!("{path}.targets"),
                    "a route needs at least one target".into(),
                );
            }
            let mut rt = timeouts;
            override_timeouts(
                &mut rt,
                &path,
                [&r.first_token_timeout, &r.idle_timeout, &r.headers_timeout],
                &mut problem,
            );
            if let Some(v) = &r.first_content_budget {
                match humantime_duration(v) {
                    Some(d) if d.is_zero() => {
                        problem(format!("{path}.first_content_budget"), zero_timeout());
                    }
                    Some(d) => rt.first_content_budget = d,
                    None => problem(
                        format!("{path}.first_content_budget"),
                        format!("{v:?} is not a duration like \"15s\""),
                    ),
                }
            }
            retry_after_wait(
                &mut rt,
                &format!("{path}.retry_after_wait"),
                &r.retry_after_wait,
                &mut problem,
            );
            let mut targets = Vec::new();
            for (kind, list) in [("targets", &r.targets), ("fallbacks", &r.fallbacks)] {
                for (i, t) in list.iter().enumerate() {
                    let tp = format!("{path}.{kind}[{i}]");
                    if !raw.endpoints.contains_key(&t.endpoint) {
                        problem(
                            format!("{tp}.endpoint"),
                            format!("unknown endpoint {:?}", t.endpoint),
                        );
                    }
                    if t.credentials.is_empty() {
                        problem(
                            format!("{tp}.credentials"),
                            "a target needs at least one credential".into(),
                        );
                    }
                    for (j, c) in t.credentials.iter().enumerate() {
                        match raw.credentials.iter().find(|rc| rc.id == *c) {
                            None => problem(
                                format!("{tp}.credentials[{j}]"),
                                format!("unknown credential {c:?}"),
                            ),
                            Some(rc) if rc.endpoint != t.endpoint => problem(
                                format!("{tp}.credentials[{j}]"),
                                format!(
                                    "credential {c:?} belongs to endpoint {:?}, not {:?}",
                                    rc.endpoint, t.endpoint
                                ),
                            ),
                            Some(_) => {}
                        }
                    }
                    let mut tt = rt;
                    override_timeouts(
                        &mut tt,
                        &tp,
                        [&t.first_token_timeout, &t.idle_timeout, &t.headers_timeout],
                        &mut problem,
                    );
                    let mut apis = None;
                    if let Some(list) = &t.apis {
                        let mut names = Vec::new();
                        for (j, a) in list.iter().enumerate() {
                            match API_NAMES.iter().find(|n| **n == a.as_str()) {
                                Some(n) => names.push(*n),
                                None => problem(
                                    format!("{tp}.apis[{j}]"),
                                    format!("{a:?} is not one of {}", API_NAMES.join(", ")),
                                ),
                            }
                        }
                        apis = Some(names);
                    } else {
                        // A ChatGPT/Codex token is accepted by the Responses API only.
                        let codex_only = !t.credentials.is_empty()
                            && t.credentials.iter().all(|c| {
                                raw.credentials.iter().any(|rc| {
                                    rc.id == *c
                                        && rc.kind.as_deref() == Some("oauth")
                                        && raw
                                            .endpoints
                                            .get(&rc.endpoint)
                                            .and_then(|e| Provider::parse(&e.provider))
                                            == Some(Provider::OpenAi)
                                })
                            });
                        if codex_only {
                            apis = Some(vec!["responses"]);
                        }
                    }
                    targets.push(Target {
                        apis,
                        timeouts: tt,
                        endpoint: t.endpoint.as_str().into(),
                        model: t.model.as_str().into(),
                        credentials: t
                            .credentials
                            .iter()
                            .map(|c| Arc::from(c.as_str()))
                            .collect(),
                    });
                }
            }
            let translation = Translation {
                lossy: r.lossy_translation.unwrap_or(true),
                default_max_tokens: match r.default_max_tokens {
                    Some(0) => {
                        problem(
                            format!("{path}.default_max_tokens"),
                            "must be at least 1 (it is the answer's length when a caller of another API gives none)".into(),
                        );
                        1
                    }
                    Some(n) => n,
                    None => Translation::default().default_max_tokens,
                },
            };
            families(
                &path,
                r.targets.len(),
                &targets,
                &endpoints,
                translation,
                &mut problem,
                &mut route_warnings,
            );
            if let Some(cf) = &r.context_fallback {
                if !raw.routes.contains_key(cf) {
                    problem(
                        format!("{path}.context_fallback"),
                        format!("unknown route {cf:?}"),
                    );
                }
            }
            // Unless a budget is set, a route whose targets wait longer for their first
            // content (slow reasoning models) gets a budget that still leaves a fallback
            // a few seconds after the slowest one's limit.
            if r.first_content_budget.is_none() && t.first_content_budget.is_none() {
                let slowest = targets.iter().map(|t| t.timeouts.first_token).max();
                if let Some(s) = slowest {
                    rt.first_content_budget = rt.first_content_budget.max(s + FALLBACK_SHARE);
                }
            }
            routes.insert(
                name.clone(),
                Route {
                    name: name.as_str().into(),
                    targets,
                    context_fallback: r.context_fallback.clone(),
                    timeouts: rt,
                    translation,
                    continue_streams: r.continue_streams.unwrap_or(true),
                },
            );
        }
        let limits = limits(&raw.limits, &mut problem);
        let server = server(&raw, admin.as_ref(), &mut problem);
        let (state, fleet) = fleet_state(&raw, base, &resolve, &mut problem);
        let alerts = super::alerts::alerts(raw.alerts.as_ref(), &resolve, &mut problem);
        let telemetry = super::telemetry::telemetry(raw.telemetry.as_ref(), &mut problem);
        let removed_credential_retention = match raw.removed_credential_retention.as_deref() {
            None => Duration::from_secs(7 * 86_400),
            Some(v) => humantime_duration(v).unwrap_or_else(|| {
                problem(
                    "removed_credential_retention".into(),
                    format!("{v:?} is not a duration like \"7d\" or \"12h\""),
                );
                Duration::from_secs(7 * 86_400)
            }),
        };
        let state_key = raw
            .state_key
            .as_deref()
            .and_then(|k| resolve("state_key", k, &mut problem));
        if let Some(k) = &state_key {
            if keyward_store::Sealer::from_hex(k.expose()).is_err() {
                problem(
                    "state_key".into(),
                    "the key must be 64 hex characters (32 bytes); generate one with `openssl rand -hex 32`".into(),
                );
            }
        }
        if !p.is_empty() {
            return Err(p);
        }
        let mut warnings = warnings(listen, &server, admin.as_ref());
        warnings.extend(super::alerts::warnings(&alerts));
        warnings.extend(route_warnings);
        Ok(Config {
            warnings,
            server,
            listen,
            state,
            gateway_keys,
            endpoints,
            credentials,
            routes,
            timeouts,
            limits,
            policy: raw.policy.unwrap_or_default(),
            admin,
            state_key,
            removed_credential_retention,
            fleet,
            alerts,
            telemetry,
        })
    }
}

/// The statuses a gateway key's `dead_keys_status` may choose.
pub(super) const DEAD_KEYS_STATUSES: [u16; 4] = [400, 500, 502, 503];

/// The shortest admin token accepted: shorter ones can be guessed online.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

fn quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        s.to_owned()
    } else {
        format!("{s:?}")
    }
}
