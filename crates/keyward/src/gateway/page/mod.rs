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

mod render;
use render::*;

const COOKIE: &str = "keyward_admin";
/// The request header a cookie-authenticated state change must carry.
pub const CSRF_HEADER: &str = "x-keyward-csrf";
const SESSION_LIFE: Duration = Duration::from_secs(8 * 3600);
const CODE_LIFE: Duration = Duration::from_secs(60);
const MAX_SESSIONS: usize = 64;
const MAX_CODES: usize = 16;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

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
