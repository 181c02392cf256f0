//! The validation of single tables: `[limits]`, `[server]`, `state` with `[fleet]`, and a
//! credential's `[credentials.oauth]`; and the warnings (what is accepted but risky).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyward_core::classify::{CredentialKind, Provider};
use keyward_wire::stream::Api;

use super::durations::{humantime_duration, zero_timeout};
use super::raw::{RawConfig, RawLimits, RawOAuth};
use super::{
    Admin, ConfigProblem, Endpoint, Fleet, Limits, OAuthConfig, Secret, Server, Target, TokenStyle,
    Translation,
};

/// `[limits]`, refusing zeros (a zero body limit refuses every request; zero attempts
/// never call upstream) and a body budget smaller than one body.
pub(super) fn limits(raw: &RawLimits, problem: &mut dyn FnMut(String, String)) -> Limits {
    let d = Limits::default();
    let mut nonzero = |name: &str, v: Option<usize>, default: usize, what: &str| match v {
        Some(0) => {
            problem(
                format!("limits.{name}"),
                format!("0 {what}; raise it, or leave it out for the default ({default})"),
            );
            default
        }
        Some(v) => v,
        None => default,
    };
    let max_body_bytes = nonzero(
        "max_body_bytes",
        raw.max_body_bytes,
        d.max_body_bytes,
        "refuses every request body",
    );
    let max_event_bytes = nonzero(
        "max_event_bytes",
        raw.max_event_bytes,
        d.max_event_bytes,
        "fails every stream",
    );
    let max_attempts = nonzero(
        "max_attempts",
        raw.max_attempts.map(|a| a as usize),
        d.max_attempts as usize,
        "attempts never call upstream",
    );
    let max_buffered_body_bytes = nonzero(
        "max_buffered_body_bytes",
        raw.max_buffered_body_bytes,
        d.max_buffered_body_bytes.max(max_body_bytes),
        "refuses every request body",
    );
    if max_buffered_body_bytes < max_body_bytes {
        problem(
            "limits.max_buffered_body_bytes".into(),
            format!("{max_buffered_body_bytes} is smaller than limits.max_body_bytes ({max_body_bytes}): the largest allowed body could never be read; raise it"),
        );
    }
    let body_wait = match raw.body_wait.as_deref() {
        None => d.body_wait,
        Some(v) => match humantime_duration(v) {
            Some(w) => w,
            None => {
                problem(
                    "limits.body_wait".into(),
                    format!("{v:?} is not a duration like \"2s\" (0s answers 503 at once when the budget is full)"),
                );
                d.body_wait
            }
        },
    };
    Limits {
        max_body_bytes,
        max_event_bytes,
        max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX).min(50),
        max_buffered_body_bytes,
        body_wait,
        // Zero turns continuation off everywhere.
        max_continuations: raw.max_continuations.unwrap_or(d.max_continuations).min(10),
    }
}

/// `[server]`: the caller-facing listener's limits and loopback trust.
pub(super) fn server(
    raw: &RawConfig,
    admin: Option<&Admin>,
    problem: &mut dyn FnMut(String, String),
) -> Server {
    let d = Server::default();
    let r = &raw.server;
    let mut duration = |name: &str, v: &Option<String>, default: Duration| match v.as_deref() {
        None => default,
        Some(v) => match humantime_duration(v) {
            Some(t) if t.is_zero() => {
                problem(format!("server.{name}"), zero_timeout());
                default
            }
            Some(t) => t,
            None => {
                problem(
                    format!("server.{name}"),
                    format!("{v:?} is not a duration like \"10s\""),
                );
                default
            }
        },
    };
    let header_read_timeout = duration(
        "header_read_timeout",
        &r.header_read_timeout,
        d.header_read_timeout,
    );
    let idle_timeout = duration("idle_timeout", &r.idle_timeout, d.idle_timeout);
    let max_connections = match r.max_connections {
        Some(0) => {
            problem(
                "server.max_connections".into(),
                format!(
                    "0 refuses every connection; raise it, or leave it out for the default ({})",
                    d.max_connections
                ),
            );
            d.max_connections
        }
        Some(n) => n,
        None => d.max_connections,
    };
    let reverse_proxy = r.reverse_proxy.unwrap_or(false);
    let admin_elsewhere = admin.is_some_and(|a| a.listen.is_some());
    let trust_loopback = r
        .trust_loopback
        .unwrap_or(!(reverse_proxy || admin_elsewhere));
    Server {
        header_read_timeout,
        idle_timeout,
        max_connections,
        reverse_proxy,
        trust_loopback,
    }
}

/// What is accepted but risky.
pub(super) fn warnings(
    listen: SocketAddr,
    server: &Server,
    admin: Option<&Admin>,
) -> Vec<ConfigProblem> {
    let mut w = Vec::new();
    if let Some(a) = admin {
        let admin_at = a.listen.unwrap_or(listen);
        if a.allow_remote && !admin_at.ip().is_loopback() {
            w.push(ConfigProblem {
                path: if a.listen.is_some() { "admin.listen" } else { "listen" }.into(),
                message: format!("the admin API and /metrics answer any host that reaches {admin_at} (admin.allow_remote = true on a non-loopback address): only the token protects them; prefer [admin] listen = \"127.0.0.1:9091\" or a private interface"),
            });
        }
        if a.listen.is_none() && server.reverse_proxy && server.trust_loopback {
            w.push(ConfigProblem {
                path: "server.trust_loopback".into(),
                message: "a reverse proxy is declared yet loopback peers are trusted: every caller it forwards looks local; remove trust_loopback or give the admin API its own listener".into(),
            });
        }
    }
    if admin.is_none() && server.reverse_proxy && server.trust_loopback {
        w.push(ConfigProblem {
            path: "server.trust_loopback".into(),
            message: "a reverse proxy is declared yet loopback peers are trusted: /metrics answers every caller it forwards; remove trust_loopback or add an [admin] table with a token".into(),
        });
    }
    w
}

fn is_redis_url(s: &str) -> bool {
    s.starts_with("redis://") || s.starts_with("rediss://")
}

pub(super) type Resolve<'a> =
    dyn Fn(&str, &str, &mut dyn FnMut(String, String)) -> Option<Secret> + 'a;

/// `state`: a file path (single node), or a Redis URL (fleet mode) written plainly when it
/// has no password, or referenced as `env:VAR` / `file:PATH`.
pub(super) fn fleet_state(
    raw: &RawConfig,
    base: &Path,
    resolve: &Resolve<'_>,
    problem: &mut dyn FnMut(String, String),
) -> (PathBuf, Option<Fleet>) {
    let url = if is_redis_url(&raw.state) {
        if raw.state.contains('@') {
            problem(
                "state".into(),
                "a Redis URL with a password is a secret: reference it as \"env:VAR\" or \"file:PATH\"".into(),
            );
            None
        } else {
            Some(Secret(raw.state.as_str().into()))
        }
    } else if raw.state.starts_with("env:") || raw.state.starts_with("file:") {
        let s = resolve("state", &raw.state, problem);
        match s {
            Some(s) if is_redis_url(s.expose()) => Some(s),
            Some(_) => {
                problem(
                    "state".into(),
                    "a referenced state must be a Redis URL (redis://… or rediss://…); write a state file's path plainly".into(),
                );
                None
            }
            None => None,
        }
    } else {
        if raw.fleet.is_some() {
            problem(
                "fleet".into(),
                "[fleet] applies only with state = \"redis://…\" (fleet mode)".into(),
            );
        }
        return (base.join(&raw.state), None);
    };
    let f = raw.fleet.as_ref();
    let prefix = f
        .and_then(|f| f.prefix.clone())
        .unwrap_or_else(|| "keyward".into());
    if prefix.is_empty()
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        problem(
            "fleet.prefix".into(),
            format!("{prefix:?}: use letters, digits and - _ . : only"),
        );
    }
    let replica = f.and_then(|f| f.replica.clone());
    if replica
        .as_deref()
        .is_some_and(|r| r.is_empty() || r.len() > 64 || r.chars().any(char::is_whitespace))
    {
        problem(
            "fleet.replica".into(),
            "a replica name is 1–64 characters without spaces".into(),
        );
    }
    let timeout = match f.and_then(|f| f.timeout.as_deref()) {
        None => Duration::from_secs(1),
        Some(v) => humantime_duration(v)
            .filter(|d| !d.is_zero())
            .unwrap_or_else(|| {
                problem(
                    "fleet.timeout".into(),
                    format!("{v:?} is not a duration like \"1s\" or \"500ms\""),
                );
                Duration::from_secs(1)
            }),
    };
    let ca_file = f.and_then(|f| f.ca_file.as_deref()).map(|c| base.join(c));
    if let Some(path) = &ca_file {
        match std::fs::read_to_string(path) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {}
            Ok(_) => problem(
                "fleet.ca_file".into(),
                format!("{} holds no PEM certificate", path.display()),
            ),
            Err(e) => problem(
                "fleet.ca_file".into(),
                format!("cannot read {}: {e}", path.display()),
            ),
        }
        if url
            .as_ref()
            .is_some_and(|u| !u.expose().starts_with("rediss://"))
        {
            problem(
                "fleet.ca_file".into(),
                "a CA applies to TLS: use a rediss:// URL".into(),
            );
        }
    }
    (
        PathBuf::new(),
        url.map(|url| Fleet {
            url,
            prefix,
            replica,
            timeout,
            ca_file,
        }),
    )
}

/// Validates a credential's `[credentials.oauth]` table.
pub(super) fn oauth_config(
    path: &str,
    o: &RawOAuth,
    kind: CredentialKind,
    provider: Option<Provider>,
    problem: &mut impl FnMut(String, String),
) -> Option<OAuthConfig> {
    let mut ok = true;
    if kind != CredentialKind::OAuth {
        problem(
            format!("{path}.oauth"),
            "an [oauth] table needs kind = \"oauth\"".into(),
        );
        ok = false;
    }
    let Some(token_url) = o.token_url.clone() else {
        problem(
            format!("{path}.oauth.token_url"),
            "missing: the token endpoint that refreshes this grant (Anthropic: https://console.anthropic.com/v1/oauth/token, OpenAI: https://auth.openai.com/oauth/token)".into(),
        );
        return None;
    };
    if !(token_url.starts_with("https://") || token_url.starts_with("http://")) {
        problem(
            format!("{path}.oauth.token_url"),
            format!("{token_url:?} is not an http(s) URL"),
        );
        ok = false;
    }
    if o.client_id.trim().is_empty() {
        problem(
            format!("{path}.oauth.client_id"),
            "empty: use the client id of the application that issued the tokens".into(),
        );
        ok = false;
    }
    let style = match o.style.as_deref() {
        None if matches!(provider, Some(Provider::Anthropic | Provider::OpenAi)) => {
            TokenStyle::Json
        }
        None | Some("form") => TokenStyle::Form,
        Some("json") => TokenStyle::Json,
        Some(other) => {
            problem(
                format!("{path}.oauth.style"),
                format!("{other:?} is not one of json, form"),
            );
            ok = false;
            TokenStyle::Form
        }
    };
    let refresh_ahead = match o.refresh_ahead.as_deref() {
        None => Duration::from_secs(300),
        Some(v) => humantime_duration(v).unwrap_or_else(|| {
            problem(
                format!("{path}.oauth.refresh_ahead"),
                format!("{v:?} is not a duration like \"5m\""),
            );
            ok = false;
            Duration::from_secs(300)
        }),
    };
    ok.then(|| OAuthConfig {
        token_url,
        client_id: o.client_id.clone(),
        scopes: o.scopes.clone(),
        style,
        refresh_ahead,
    })
}

/// The wire family a target is called with (`None`: a provider requests are never
/// translated to, and whose family the gateway does not name).
fn family(target: &Target, endpoints: &BTreeMap<Arc<str>, Endpoint>) -> Option<Api> {
    let provider = endpoints.get(&target.endpoint)?.provider;
    match provider {
        Provider::Anthropic => Some(Api::Messages),
        Provider::Gemini => Some(Api::Gemini),
        p if p.speaks_openai() => Some(match target.apis.as_deref() {
            Some(["responses"]) => Api::Responses,
            _ => Api::ChatCompletions,
        }),
        _ => None,
    }
}

fn family_name(api: Api) -> &'static str {
    match api {
        Api::Messages => "Anthropic Messages",
        Api::ChatCompletions => "OpenAI Chat Completions",
        Api::Responses => "OpenAI Responses",
        Api::Gemini => "Gemini generateContent",
    }
}

/// A route's targets of another wire family than its first: served translated, with a
/// warning naming what is lost; refused when they can never serve (the first target serves
/// only embeddings, or the provider is one requests are never translated to).
pub(super) fn families(
    path: &str,
    primaries: usize,
    targets: &[Target],
    endpoints: &BTreeMap<Arc<str>, Endpoint>,
    translation: Translation,
    problem: &mut dyn FnMut(String, String),
    warnings: &mut Vec<ConfigProblem>,
) {
    let Some(first) = targets.first() else {
        return;
    };
    let first_family = family(first, endpoints);
    let embeddings_only = first.apis.as_deref() == Some(&["embeddings"]);
    for (i, t) in targets.iter().enumerate().skip(1) {
        let tp = if i < primaries {
            format!("{path}.targets[{i}]")
        } else {
            format!("{path}.fallbacks[{}]", i - primaries)
        };
        let theirs = family(t, endpoints);
        if theirs == first_family {
            continue;
        }
        let Some(from) = first_family else {
            continue;
        };
        let Some(to) = theirs else {
            problem(tp, format!("its provider is not one requests are translated to: it can never serve this route's {} callers; route it to a target of their API", family_name(from)));
            continue;
        };
        if embeddings_only {
            problem(tp, format!("the route's first target serves embeddings only, which are never translated (nor served by another model): this {} target can never serve it; remove it", family_name(to)));
            continue;
        }
        let lost = keyward_wire::translate::losses_between(from, to).join(", ");
        let skip = if translation.lossy {
            ""
        } else {
            "; lossy_translation = false: a request that uses any of them skips this target"
        };
        warnings.push(ConfigProblem {
            path: tp,
            message: format!("speaks {} where the route's first target speaks {}: requests are translated (docs/translation.md), losing {lost}{skip}", family_name(to), family_name(from)),
        });
    }
}
