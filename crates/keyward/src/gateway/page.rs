//! The status page at `GET /admin/`: every route's targets and credentials with their
//! health and why, active auth incidents, the transition history, the last hour of
//! attempts and errors per credential, and the operator's actions (re-check, disable,
//! reset) behind a confirmation dialog.
//!
//! Server-rendered HTML; the stylesheet and a small plain script are embedded in the
//! binary (`include_str!`, no build step). The script polls `GET /admin/live` (the same
//! rendering of the page's main part) every 5 seconds and swaps it in, so one renderer
//! serves the first load and the live updates, and the page works without JavaScript
//! (minus the live updates and the actions).
//!
//! Access is the admin API's: the `[admin]` table must exist, the peer must be loopback
//! unless `allow_remote`, and the caller must hold the admin token. A browser logs in by
//! POSTing the token to `/admin/login` and gets a session cookie (`HttpOnly`,
//! `SameSite=Strict`, path `/admin`, 8 hours) — the token is never put in a URL, a page or
//! a cookie. The admin API accepts that cookie too; a state-changing request made with it
//! must also carry the session's CSRF token in `x-keyward-csrf` (the page reads it from a
//! `<meta>` tag), on top of `SameSite=Strict`. Sessions are held in memory, bounded, tied
//! to the admin token they were opened with (changing the token ends them), and gone on
//! restart.
//!
//! `POST /admin/login-link` (admin token required) returns a one-time login path,
//! `/admin/login?code=…`: usable once, within 60 seconds, and exchanged for a session and
//! a redirect to `/admin/`, so the code leaves the address bar. It lets a tool that holds
//! the token open the page in a browser (the tests' headless Chromium does) without
//! putting the token anywhere a browser keeps it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use keyward_core::health::{Health, ScopeKey, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::Authorised;
use super::rates::Minute;
use super::{constant_time_eq, Gateway, Live};

const COOKIE: &str = "keyward_admin";
/// The request header a cookie-authenticated state change must carry.
pub const CSRF_HEADER: &str = "x-keyward-csrf";
const SESSION_LIFE: Duration = Duration::from_secs(8 * 3600);
const CODE_LIFE: Duration = Duration::from_secs(60);
const MAX_SESSIONS: usize = 64;
const MAX_CODES: usize = 16;
/// Transitions shown in the history table.
const HISTORY_ROWS: usize = 100;

const STYLE: &str = include_str!("page/page.css");
const SCRIPT: &str = include_str!("page/page.js");

/// Why the page could not open a session.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The operating system's random source failed, so no session id could be made.
    /// Nothing was created; retry, and check the host's entropy source (`/dev/urandom`).
    #[error("cannot make a session id: the system's random source failed; retry")]
    Random,
}

type Digest = [u8; 32];

fn sha256(bytes: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn random_hex() -> Result<String, PageError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PageError::Random)?;
    Ok(bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

struct Session {
    csrf: String,
    expires: Timestamp,
    /// The SHA-256 of the admin token it was opened with.
    token: Digest,
}

struct Code {
    expires: Timestamp,
    token: Digest,
}

#[derive(Default)]
struct Store {
    /// By the SHA-256 of the session id (a lookup's timing says nothing about live ids).
    sessions: HashMap<Digest, Session>,
    codes: HashMap<Digest, Code>,
}

/// The status page's browser sessions and one-time login codes; in memory, bounded,
/// shared across reloads (held by [`Live`]).
#[derive(Default)]
pub struct Sessions {
    store: Mutex<Store>,
}

impl std::fmt::Debug for Sessions {
    // Counts only: a CSRF token is not for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (sessions, codes) = self.with(|s| (s.sessions.len(), s.codes.len()));
        f.debug_struct("Sessions")
            .field("sessions", &sessions)
            .field("codes", &codes)
            .finish()
    }
}

impl Sessions {
    fn with<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        match self.store.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Opens a session: its id (for the cookie) and its CSRF token.
    fn open(&self, now: Timestamp, token: Digest) -> Result<(String, String), PageError> {
        let id = random_hex()?;
        let csrf = random_hex()?;
        self.with(|s| {
            s.sessions.retain(|_, v| v.expires > now);
            while s.sessions.len() >= MAX_SESSIONS {
                let oldest = s
                    .sessions
                    .iter()
                    .min_by_key(|(_, v)| v.expires)
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) => s.sessions.remove(&k),
                    None => break,
                };
            }
            s.sessions.insert(
                sha256(id.as_bytes()),
                Session {
                    csrf: csrf.clone(),
                    expires: now.plus(SESSION_LIFE),
                    token,
                },
            );
        });
        Ok((id, csrf))
    }

    /// The session's CSRF token, if `id` is a live session opened with `token`.
    fn check(&self, id: &str, now: Timestamp, token: Digest) -> Option<String> {
        self.with(|s| {
            let key = sha256(id.as_bytes());
            let live = s
                .sessions
                .get(&key)
                .filter(|v| v.expires > now && constant_time_eq(&v.token, &token))
                .map(|v| v.csrf.clone());
            if live.is_none() {
                s.sessions.remove(&key);
            }
            live
        })
    }

    fn close(&self, id: &str) {
        self.with(|s| s.sessions.remove(&sha256(id.as_bytes())));
    }

    /// A one-time login code.
    fn code(&self, now: Timestamp, token: Digest) -> Result<String, PageError> {
        let code = random_hex()?;
        self.with(|s| {
            s.codes.retain(|_, v| v.expires > now);
            if s.codes.len() >= MAX_CODES {
                s.codes.clear();
            }
            s.codes.insert(
                sha256(code.as_bytes()),
                Code {
                    expires: now.plus(CODE_LIFE),
                    token,
                },
            );
        });
        Ok(code)
    }

    /// Spends a one-time code: true if it was live (it is gone either way).
    fn redeem(&self, code: &str, now: Timestamp, token: Digest) -> bool {
        self.with(|s| {
            s.codes
                .remove(&sha256(code.as_bytes()))
                .is_some_and(|c| c.expires > now && constant_time_eq(&c.token, &token))
        })
    }
}

/// The page's routes, merged into the admin routes.
pub fn routes() -> Router<Arc<Live>> {
    Router::new()
        .route("/admin", get(|| async { redirect("/admin/") }))
        .route("/admin/", get(page))
        .route("/admin/live", get(fragment))
        .route("/admin/login", get(login_get).post(login_post))
        .route("/admin/logout", post(logout))
        .route("/admin/login-link", post(login_link))
        .route(
            "/admin/assets/page.css",
            get(|| async { asset(STYLE, "text/css") }),
        )
        .route(
            "/admin/assets/page.js",
            get(|| async { asset(SCRIPT, "text/javascript") }),
        )
}

fn secured(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secured(r)
}

fn asset(text: &'static str, kind: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    secured(r)
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    secured(r)
}

fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(message.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secured(r)
}

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Where the page may be served: the snapshot and the admin token's digest, or the
/// refusal (404 without an `[admin]` table, 403 for a remote peer).
fn gate(live: &Live, peer: SocketAddr) -> Result<(Arc<Gateway>, Digest), Box<Response<Body>>> {
    let gw = live.current();
    let Some(admin) = gw.cfg.admin.as_ref() else {
        return Err(Box::new(plain(
            StatusCode::NOT_FOUND,
            "the admin API is off: add an [admin] table with a token to the config",
        )));
    };
    if !admin.allow_remote && !peer.ip().is_loopback() {
        return Err(Box::new(plain(
            StatusCode::FORBIDDEN,
            "the admin API answers loopback peers only; set admin.allow_remote = true to change that",
        )));
    }
    let token = sha256(admin.token.expose().as_bytes());
    Ok((gw, token))
}

/// The admin API's second way in: a status-page session cookie. `None` when the request
/// carries no session cookie (the caller's bearer-token refusal stands); otherwise the
/// snapshot, or the refusal (an expired session; a state change without the session's
/// CSRF header).
pub(super) fn from_session(
    live: &Live,
    peer: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Result<Arc<Gateway>, Response<Body>>> {
    let id = cookie_value(headers, COOKIE)?;
    let (gw, token) = match gate(live, peer) {
        Ok(g) => g,
        Err(r) => return Some(Err(*r)),
    };
    let Some(csrf) = live.sessions.check(id, gw.engine.now(), token) else {
        return Some(Err(plain(
            StatusCode::UNAUTHORIZED,
            "the status-page session ended; log in again at /admin/",
        )));
    };
    if !matches!(*method, Method::GET | Method::HEAD) {
        let sent = headers
            .get(CSRF_HEADER)
            .map_or(&[][..], HeaderValue::as_bytes);
        if !constant_time_eq(sent, csrf.as_bytes()) {
            return Some(Err(plain(
                StatusCode::FORBIDDEN,
                "a change made with the status-page session needs its x-keyward-csrf header",
            )));
        }
    }
    Some(Ok(gw))
}

/// The page's session for this request: the snapshot and the CSRF token.
fn session(
    live: &Live,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(Arc<Gateway>, String), Box<Response<Body>>> {
    let (gw, token) = gate(live, peer)?;
    cookie_value(headers, COOKIE)
        .and_then(|id| live.sessions.check(id, gw.engine.now(), token))
        .map(|csrf| (gw, csrf))
        .ok_or_else(|| Box::new(login_form(StatusCode::OK, None)))
}

#[derive(Debug, Default, Deserialize)]
struct Filter {
    credential: Option<String>,
    state: Option<String>,
    actor: Option<String>,
}

impl Filter {
    fn get(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.is_empty())
    }
}

async fn page(
    State(live): State<Arc<Live>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response<Body> {
    let (gw, csrf) = match session(&live, peer, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let main = render_main(&gw, &live, &filter).await;
    html(StatusCode::OK, document(&main, &csrf))
}

async fn fragment(
    State(live): State<Arc<Live>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response<Body> {
    let (gw, token) = match gate(&live, peer) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let ok = cookie_value(&headers, COOKIE)
        .and_then(|id| live.sessions.check(id, gw.engine.now(), token))
        .is_some();
    if !ok {
        return plain(
            StatusCode::UNAUTHORIZED,
            "the status-page session ended; log in again at /admin/",
        );
    }
    html(StatusCode::OK, render_main(&gw, &live, &filter).await)
}

fn login_form(status: StatusCode, problem: Option<&str>) -> Response<Body> {
    let problem = problem.map_or_else(String::new, |p| {
        format!("<p class=\"problem\" role=\"alert\">{}</p>", esc(p))
    });
    html(
        status,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Keyward — log in</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<link rel=\"stylesheet\" href=\"/admin/assets/page.css\"></head>\
<body class=\"login\"><main class=\"card\"><h1><span class=\"logo\">◆</span> Keyward</h1>\
<p class=\"muted\">Status page. Log in with the admin token (<code>admin.token</code> in the config).</p>{problem}\
<form method=\"post\" action=\"/admin/login\" id=\"login\"><label for=\"token\">Admin token</label>\
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required autofocus>\
<button type=\"submit\" class=\"primary\">Log in</button></form>\
<p class=\"muted small\">The session is a cookie for this page only; the token is not stored in the browser.</p>\
</main></body></html>"
        ),
    )
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    code: Option<String>,
}

fn session_cookie(id: &str, max_age: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .ok()
}

/// A session opened: the cookie and a redirect to the page.
fn logged_in(live: &Live, gw: &Gateway, token: Digest) -> Response<Body> {
    let (id, _) = match live.sessions.open(gw.engine.now(), token) {
        Ok(s) => s,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut r = redirect("/admin/");
    if let Some(c) = session_cookie(&id, SESSION_LIFE.as_secs()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    tracing::info!("status page: operator logged in");
    r
}

async fn login_get(
    State(live): State<Arc<Live>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<LoginQuery>,
) -> Response<Body> {
    let (gw, token) = match gate(&live, peer) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    match q.code {
        Some(code) if live.sessions.redeem(&code, gw.engine.now(), token) => {
            logged_in(&live, &gw, token)
        }
        Some(_) => login_form(
            StatusCode::UNAUTHORIZED,
            Some("That login link was used already or has expired; log in with the token."),
        ),
        None => login_form(StatusCode::OK, None),
    }
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let raw = text.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A request from another site: its `Origin` names a different host than the one it was
/// sent to.
fn cross_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_none_or(|(_, rest)| rest != host)
}

async fn login_post(
    State(live): State<Arc<Live>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let (gw, token) = match gate(&live, peer) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    if cross_site(&headers) {
        return plain(StatusCode::FORBIDDEN, "log in from the status page itself");
    }
    let presented = form_field(&body, "token").unwrap_or_default();
    if !constant_time_eq(&sha256(presented.trim().as_bytes()), &token) {
        tracing::warn!("status page: a login with a wrong admin token");
        return login_form(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
        );
    }
    logged_in(&live, &gw, token)
}

async fn logout(
    State(live): State<Arc<Live>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response<Body> {
    if let Some(Err(r)) = from_session(&live, peer, &Method::POST, &headers) {
        return r;
    }
    if let Some(id) = cookie_value(&headers, COOKIE) {
        live.sessions.close(id);
    }
    let mut r = plain(StatusCode::OK, "logged out");
    if let Some(c) = session_cookie("", 0) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// A one-time login path for a browser, for a caller holding the admin token.
async fn login_link(Authorised(gw): Authorised, State(live): State<Arc<Live>>) -> Response<Body> {
    let Some(admin) = gw.cfg.admin.as_ref() else {
        return plain(StatusCode::NOT_FOUND, "the admin API is off");
    };
    let token = sha256(admin.token.expose().as_bytes());
    match live.sessions.code(gw.engine.now(), token) {
        Ok(code) => {
            let mut r = Response::new(Body::from(
                json!({"path": format!("/admin/login?code={code}"), "expires_in_s": CODE_LIFE.as_secs(),
                       "detail": "open this path on the gateway's address once, within the minute"})
                .to_string(),
            ));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            secured(r)
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The whole document around the main part.
fn document(main: &str, csrf: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Keyward status</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"keyward-csrf\" content=\"{csrf}\">\
<link rel=\"stylesheet\" href=\"/admin/assets/page.css\"></head><body>\
<header class=\"top\"><div class=\"brand\"><span class=\"logo\">◆</span> Keyward <span class=\"muted\">status</span></div>\
<div class=\"conn\" id=\"conn\" role=\"status\">live · every 5 s</div>\
<button type=\"button\" id=\"logout\" class=\"quiet\">Log out</button></header>\
<main id=\"live\">{main}</main>\
<dialog id=\"confirm\"><form method=\"dialog\" id=\"confirm-form\"><h2 id=\"confirm-title\">Confirm</h2>\
<p id=\"confirm-text\"></p><div id=\"reason-row\" hidden><label for=\"reason\">Reason (recorded in the history)</label>\
<input id=\"reason\" name=\"reason\" maxlength=\"200\" autocomplete=\"off\"></div>\
<div class=\"buttons\"><button value=\"cancel\" type=\"submit\" class=\"quiet\">Cancel</button>\
<button value=\"ok\" type=\"submit\" id=\"confirm-ok\" class=\"primary\">Confirm</button></div></form></dialog>\
<div id=\"toast\" role=\"status\" hidden></div>\
<script src=\"/admin/assets/page.js\"></script></body></html>",
        csrf = esc(csrf),
    )
}

/// A duration for people: `45s`, `12m`, `3h 5m`, `2d 4h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn ago(now: Timestamp, t: Timestamp) -> String {
    format!(
        "<time datetime=\"{r}\" title=\"{r}\">{} ago</time>",
        human(now.since(t)),
        r = t.rfc3339()
    )
}

fn until(now: Timestamp, t: Timestamp) -> String {
    let when = if t > now {
        format!("in {}", human(t.since(now)))
    } else {
        "due now".to_owned()
    };
    format!(
        "<time datetime=\"{r}\" title=\"{r}\">{when}</time>",
        r = t.rfc3339()
    )
}

fn evidence(h: &Health) -> &str {
    match h {
        Health::Suspect { evidence, .. }
        | Health::Probing { evidence, .. }
        | Health::Disabled { evidence, .. } => evidence,
        Health::Healthy | Health::Cooling { .. } => "",
    }
}

/// What happens next without anyone acting.
fn next_check(now: Timestamp, h: &Health) -> String {
    match h {
        Health::Healthy => "—".to_owned(),
        Health::Cooling { until: t, .. } => format!("trial {}", until(now, *t)),
        Health::Suspect { probe_at, .. } => format!("probe {}", until(now, *probe_at)),
        Health::Probing { trial, .. } => if *trial {
            "trial request now"
        } else {
            "probe running"
        }
        .to_owned(),
        Health::Disabled {
            recheck_at: Some(t),
            ..
        } => format!("re-check {}", until(now, *t)),
        Health::Disabled {
            recheck_at: None, ..
        } => "none: reset to return".to_owned(),
    }
}

/// What the operator should do.
fn remedy(h: &Health) -> &'static str {
    use keyward_core::classify::Class;
    match h {
        Health::Healthy => "",
        Health::Cooling { class, .. } if *class == Class::RateLimit => {
            "none: back in rotation after the cooldown"
        }
        Health::Cooling { .. } => "none: a trial request follows the cooldown",
        Health::Suspect { .. } | Health::Probing { .. } => "none yet: a confirmation probe decides",
        Health::Disabled {
            by_operator: true, ..
        } => "reset it when it should serve again",
        Health::Disabled { class, .. } => match class {
            Class::AuthPermanent => "replace the key in the config (or reset it if it works again)",
            Class::Billing => "add credit or raise the spend limit, then reset",
            Class::ModelNotFound => "enable the model for this key, or change the route",
            _ => "fix the cause in the evidence, then reset",
        },
    }
}

/// The last hour as a small bar chart: attempts in blue, failed ones in red.
fn chart(hour: &[Minute]) -> String {
    const W: usize = 2;
    const H: u64 = 28;
    let (att, err) = hour
        .iter()
        .fold((0, 0), |(a, e), m| (a + m.attempts, e + m.errors));
    let max = hour.iter().map(|m| m.attempts).max().unwrap_or(0).max(1);
    let mut svg = format!(
        "<svg class=\"chart\" width=\"{w}\" height=\"{H}\" viewBox=\"0 0 {w} {H}\" role=\"img\" aria-label=\"last hour: {att} attempts, {err} failed\">\
<title>last hour, per minute: {att} attempts, {err} failed</title><rect class=\"bg\" x=\"0\" y=\"0\" width=\"{w}\" height=\"{H}\"/>",
        w = W * hour.len()
    );
    for (i, m) in hour.iter().enumerate() {
        if m.attempts == 0 {
            continue;
        }
        let x = i * W;
        let h = (m.attempts * (H - 2)).div_ceil(max).max(1);
        let _ = write!(
            svg,
            "<rect class=\"ok\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{h}\"/>",
            H - h,
            W
        );
        if m.errors > 0 {
            let e = (m.errors * (H - 2)).div_ceil(max).max(1);
            let _ = write!(
                svg,
                "<rect class=\"err\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{e}\"/>",
                H - e,
                W
            );
        }
    }
    svg.push_str("</svg>");
    let rate = if err > 0 {
        format!("<span class=\"bad\">{err} failed</span>")
    } else {
        "0 failed".to_owned()
    };
    format!("<div class=\"rates\">{svg}<div class=\"small\">{att} attempts · {rate}</div></div>")
}

fn badge(state: &str) -> String {
    format!("<span class=\"badge s-{s}\">{s}</span>", s = esc(state))
}

struct Counts {
    total: usize,
    healthy: usize,
    out: usize,
    disabled: usize,
}

/// The main part of the page (also what `/admin/live` returns).
#[allow(clippy::too_many_lines)] // the page top to bottom, one section after another
async fn render_main(gw: &Gateway, live: &Live, filter: &Filter) -> String {
    let now = gw.engine.now();
    let snapshot = gw.engine.snapshot();
    let incidents = gw.engine.incidents();
    let health_of = |id: &str| -> (Health, Option<Timestamp>) {
        snapshot
            .iter()
            .find_map(|(k, h, since)| match k {
                ScopeKey::Credential(c) if &**c == id => Some((h.clone(), Some(*since))),
                _ => None,
            })
            .unwrap_or((Health::Healthy, None))
    };
    let mut counts = Counts {
        total: gw.cfg.credentials.len(),
        healthy: 0,
        out: 0,
        disabled: 0,
    };
    let (mut attempts, mut errors) = (0, 0);
    let mut hours = HashMap::new();
    for c in &gw.cfg.credentials {
        match health_of(&c.id).0 {
            Health::Healthy => counts.healthy += 1,
            Health::Disabled { .. } => counts.disabled += 1,
            _ => counts.out += 1,
        }
        let hour = gw.metrics.rates.last_hour(&c.id);
        for m in &hour {
            attempts += m.attempts;
            errors += m.errors;
        }
        hours.insert(c.id.clone(), hour);
    }
    let mut out = String::new();

    // The header's counts.
    let generation = live.status().generation;
    let fleet = gw.fleet.as_ref().map_or_else(String::new, |f| {
        let s = f.status();
        let (cls, word) = if !s.loaded {
            ("warn", "loading")
        } else if s.degraded_since.is_some() {
            ("bad", "degraded (serving on local state)")
        } else {
            ("good", "connected")
        };
        format!(
            "<div class=\"stat\"><div class=\"n {cls} word\">{}</div><div class=\"label\">fleet · replica {}</div></div>",
            esc(word),
            esc(&s.replica.to_string())
        )
    });
    let stat = |n: usize, label: &str, cls: &str| {
        format!("<div class=\"stat\"><div class=\"n {cls}\">{n}</div><div class=\"label\">{label}</div></div>")
    };
    let _ = write!(
        out,
        "<section class=\"stats\">{}{}{}{}{}{}<div class=\"stat\"><div class=\"n\">{attempts}</div><div class=\"label\">attempts, last hour</div></div>\
<div class=\"stat\"><div class=\"n{}\">{errors}</div><div class=\"label\">failed, last hour</div></div>{fleet}\
<div class=\"stamp small muted\">config generation {generation} · updated <time datetime=\"{t}\">{t}</time></div></section>",
        stat(counts.total, "credentials", ""),
        stat(counts.healthy, "healthy", "good"),
        stat(counts.out, "out of rotation", if counts.out > 0 { "warn" } else { "" }),
        stat(counts.disabled, "disabled", if counts.disabled > 0 { "bad" } else { "" }),
        stat(incidents.len(), "auth incidents", if incidents.is_empty() { "" } else { "warn" }),
        stat(gw.cfg.routes.len(), "routes", ""),
        if errors > 0 { " bad" } else { "" },
        t = now.rfc3339(),
    );

    // Incidents.
    if !incidents.is_empty() {
        out.push_str("<section class=\"incidents\"><h2>Active auth incidents</h2>");
        for i in &incidents {
            let _ = write!(
                out,
                "<div class=\"incident\"><strong>{}</strong>: {} credential(s) rejected at once ({}), since {}. \
Nothing is disabled while it lasts: next probe {}, its keys are disabled {} if every probe is still rejected.</div>",
                esc(&i.endpoint),
                i.credentials.len(),
                esc(&i.credentials.iter().map(|c| &**c).collect::<Vec<_>>().join(", ")),
                ago(now, i.since),
                until(now, i.next_probe),
                until(now, i.disables_at),
            );
        }
        out.push_str("</section>");
    }

    // Routes, targets, credentials.
    out.push_str("<section><h2>Routes</h2><div class=\"scroll\"><table class=\"routes\"><thead><tr><th>route / target</th><th>credential</th><th>state</th><th>evidence</th><th>since</th><th>next check</th><th>remedy</th><th>last hour</th><th>actions</th></tr></thead><tbody>");
    let mut routed = std::collections::HashSet::new();
    for (name, route) in &gw.cfg.routes {
        let _ = write!(
            out,
            "<tr class=\"route\"><th colspan=\"9\">{}</th></tr>",
            esc(name)
        );
        for (n, t) in route.targets.iter().enumerate() {
            for (j, cid) in t.credentials.iter().enumerate() {
                routed.insert(cid.clone());
                let target = if j == 0 {
                    format!(
                        "<span class=\"muted\">{}.</span> {} <span class=\"muted\">·</span> <code>{}</code>",
                        n + 1,
                        esc(&t.endpoint),
                        esc(&t.model)
                    )
                } else {
                    String::new()
                };
                credential_row(
                    &mut out, gw, now, &target, cid, &health_of, &hours, &snapshot, &incidents,
                );
            }
        }
    }
    let unrouted: Vec<_> = gw
        .cfg
        .credentials
        .iter()
        .filter(|c| !routed.contains(&c.id))
        .collect();
    if !unrouted.is_empty() {
        out.push_str("<tr class=\"route\"><th colspan=\"9\">on no route</th></tr>");
        for c in unrouted {
            credential_row(
                &mut out, gw, now, "", &c.id, &health_of, &hours, &snapshot, &incidents,
            );
        }
    }
    out.push_str("</tbody></table></div></section>");

    // Other scopes that are not healthy.
    let others: Vec<_> = snapshot
        .iter()
        .filter(|(k, h, _)| {
            !matches!(k, ScopeKey::Credential(_) | ScopeKey::CredentialModel(..))
                && *h != Health::Healthy
        })
        .collect();
    if !others.is_empty() {
        out.push_str("<section><h2>Other scopes not healthy</h2><table><thead><tr><th>scope</th><th>state</th><th>class</th><th>evidence</th><th>since</th><th>next check</th></tr></thead><tbody>");
        for (k, h, since) in others {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"evidence\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&k.to_key()),
                badge(h.name()),
                h.class().map_or("", |c| c.as_str()),
                esc(evidence(h)),
                ago(now, *since),
                next_check(now, h),
            );
        }
        out.push_str("</tbody></table></section>");
    }

    history(&mut out, gw, filter).await;
    out
}

#[allow(clippy::too_many_arguments)]
fn credential_row(
    out: &mut String,
    gw: &Gateway,
    now: Timestamp,
    target: &str,
    id: &Arc<str>,
    health_of: &dyn Fn(&str) -> (Health, Option<Timestamp>),
    hours: &HashMap<Arc<str>, Vec<Minute>>,
    snapshot: &[(ScopeKey, Health, Timestamp)],
    incidents: &[keyward_core::health::IncidentInfo],
) {
    let (h, since) = health_of(id);
    let fingerprint = gw
        .credential(id)
        .map_or_else(|| "not configured".to_owned(), |c| gw.fingerprint(&c));
    let kind = gw.credential(id).map_or("", |c| c.kind.as_str());
    let in_incident = incidents.iter().any(|i| i.credentials.contains(id));
    let mut ev = esc(evidence(&h));
    for (k, mh, _) in snapshot {
        if let ScopeKey::CredentialModel(c, model) = k {
            if c == id && *mh != Health::Healthy {
                let _ = write!(
                    ev,
                    "<div class=\"model\">model <code>{}</code>: {} {}</div>",
                    esc(model),
                    badge(mh.name()),
                    esc(mh.class().map_or("", |c| c.as_str()))
                );
            }
        }
    }
    if in_incident {
        ev.push_str("<div class=\"model\"><span class=\"badge s-cooling\">incident</span> rejected with its endpoint's other keys</div>");
    }
    let empty = Vec::new();
    let hour = hours.get(id).unwrap_or(&empty);
    let state = h.name();
    let eid = esc(id);
    let _ = write!(
        out,
        "<tr class=\"cred row-{state}\" data-credential=\"{eid}\"><td class=\"target\">{target}</td>\
<td><strong>{eid}</strong><div class=\"small muted\">{} · <code>{}</code></div></td><td>{}<div class=\"small\">{}</div></td><td class=\"evidence\">{ev}</td>\
<td class=\"since\">{}</td><td class=\"next\">{}</td><td class=\"remedy\">{}</td><td>{}</td>\
<td class=\"actions\"><button type=\"button\" data-action=\"probe\" data-id=\"{eid}\">Re-check</button>\
<button type=\"button\" data-action=\"disable\" data-id=\"{eid}\"{}>Disable</button>\
<button type=\"button\" data-action=\"reset\" data-id=\"{eid}\"{}>Reset</button></td></tr>",
        esc(kind),
        esc(&fingerprint),
        badge(state),
        h.class().map_or("", |c| c.as_str()),
        // A scope never recorded has no meaningful time (the epoch).
        since
            .filter(|t| t.0 > 0)
            .map_or_else(|| "—".to_owned(), |t| ago(now, t)),
        next_check(now, &h),
        remedy(&h),
        chart(hour),
        if matches!(h, Health::Disabled { .. }) { " disabled" } else { "" },
        if h == Health::Healthy { " disabled" } else { "" },
    );
}

/// The transition history, newest first, filtered.
async fn history(out: &mut String, gw: &Gateway, filter: &Filter) {
    let cred = Filter::get(&filter.credential);
    let state = Filter::get(&filter.state);
    let actor = Filter::get(&filter.actor);
    let ids: Vec<String> = gw
        .cfg
        .credentials
        .iter()
        .map(|c| c.id.to_string())
        .filter(|id| cred.is_none_or(|c| c == id))
        .collect();
    let rows = super::admin::transitions_of(gw, ids, HISTORY_ROWS).await;
    let option = |value: &str, chosen: Option<&str>| {
        format!(
            "<option value=\"{v}\"{}>{}</option>",
            if chosen == Some(value) {
                " selected"
            } else {
                ""
            },
            if value.is_empty() {
                "all".to_owned()
            } else {
                esc(value)
            },
            v = esc(value)
        )
    };
    let _ = write!(
        out,
        "<section><h2>History</h2><form class=\"filters\" method=\"get\" action=\"/admin/\">\
<label>credential <select name=\"credential\">{}{}</select></label>\
<label>state <select name=\"state\">{}</select></label>\
<label>actor <select name=\"actor\">{}</select></label><button type=\"submit\">Filter</button></form>",
        option("", cred),
        gw.cfg
            .credentials
            .iter()
            .map(|c| option(&c.id, cred))
            .collect::<String>(),
        ["", "healthy", "cooling", "suspect", "probing", "disabled"]
            .iter()
            .map(|s| option(s, state))
            .collect::<String>(),
        ["", "traffic", "probe", "operator"]
            .iter()
            .map(|s| option(s, actor))
            .collect::<String>(),
    );
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"problem\">Cannot read the history: {}</p></section>",
                esc(&e)
            );
            return;
        }
    };
    let mut all: Vec<Value> = rows.into_iter().flatten().collect();
    let name = |v: &Value| v["state"].as_str().unwrap_or("?").to_owned();
    all.retain(|t| {
        state.is_none_or(|s| name(&t["to"]) == s) && actor.is_none_or(|a| t["actor"] == a)
    });
    all.sort_by(|a, b| {
        b["at"]
            .as_str()
            .cmp(&a["at"].as_str())
            .then(b["seq"].as_i64().cmp(&a["seq"].as_i64()))
    });
    all.truncate(HISTORY_ROWS);
    if all.is_empty() {
        out.push_str("<p class=\"muted\">No transitions match.</p></section>");
        return;
    }
    out.push_str("<table class=\"history\"><thead><tr><th>at</th><th>scope</th><th>change</th><th>actor</th><th>why</th></tr></thead><tbody>");
    for t in &all {
        let _ = write!(
            out,
            "<tr><td><time>{}</time></td><td><code>{}</code></td><td>{} → {}</td><td>{}{}</td><td class=\"evidence\">{}</td></tr>",
            esc(t["at"].as_str().unwrap_or("")),
            esc(t["scope"].as_str().unwrap_or("")),
            badge(&name(&t["from"])),
            badge(&name(&t["to"])),
            esc(t["actor"].as_str().unwrap_or("")),
            t["replica"]
                .as_str()
                .map_or_else(String::new, |r| format!(" <span class=\"muted small\">({})</span>", esc(r))),
            esc(t["why"].as_str().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_a_provider_could_send() {
        assert_eq!(
            esc("<img src=x onerror='a'>&\""),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;"
        );
    }

    #[test]
    fn reads_a_form_field() {
        assert_eq!(
            form_field(b"a=1&token=kw%2Dtok+en%21", "token").as_deref(),
            Some("kw-tok en!")
        );
        assert_eq!(form_field(b"token=%zz", "token"), None);
        assert_eq!(form_field(b"other=1", "token"), None);
    }

    #[test]
    fn sessions_expire_end_with_the_token_and_codes_work_once() {
        let s = Sessions::default();
        let t = sha256(b"token");
        let now = Timestamp(1_000_000);
        let (id, csrf) = s.open(now, t).unwrap();
        assert_eq!(s.check(&id, now, t).as_deref(), Some(csrf.as_str()));
        assert_eq!(
            s.check(&id, now, sha256(b"new token")),
            None,
            "token changed"
        );
        let (id, _) = s.open(now, t).unwrap();
        assert_eq!(s.check(&id, now.plus(SESSION_LIFE), t), None, "expired");
        let code = s.code(now, t).unwrap();
        assert!(s.redeem(&code, now, t));
        assert!(!s.redeem(&code, now, t), "a code works once");
        let code = s.code(now, t).unwrap();
        assert!(!s.redeem(&code, now.plus(CODE_LIFE), t), "a code expires");
    }

    #[test]
    fn the_session_store_is_bounded() {
        let s = Sessions::default();
        let t = sha256(b"token");
        for i in 0..(MAX_SESSIONS as u64 + 10) {
            s.open(Timestamp(i), t).unwrap();
        }
        assert_eq!(s.with(|s| s.sessions.len()), MAX_SESSIONS);
    }
}
