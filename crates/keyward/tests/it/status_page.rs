#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]
//! The status page at `/admin/` end to end: the real gateway against keyward-sim with one
//! key revoked, the login (form and one-time link), the session cookie and its CSRF
//! header, the rendered page, and headless Chromium's view of it (the DOM and a
//! screenshot). Chromium is required: `scripts/test.sh` installs it, and this test fails
//! without it rather than skip.
//!
//! Set `KEYWARD_SCREENSHOT=docs/images/status-page.png` (relative to the repository) to
//! keep the screenshot.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use keyward_sim::Behaviour;

const A: &str = "sk-ant-page-a-0001";
const B: &str = "sk-ant-page-b-0002";
const C: &str = "sk-ant-page-c-0003";

const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

fn spawn_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::NotFound {
        panic!("chromium is not installed: this test needs it (apt-get install chromium; scripts/test.sh does)")
    }
    panic!("cannot start chromium: {e}")
}

/// Runs headless Chromium with `args` (bounded: killed after 90 s); its stdout.
fn chromium(dir: &Path, profile: &str, args: &[String]) -> String {
    let out = dir.join(format!("chromium-{profile}-{}.out", args.len()));
    let err = dir.join(format!("chromium-{profile}-{}.err", args.len()));
    let mut cmd = Command::new("chromium");
    cmd.args(CHROMIUM_FLAGS)
        .arg(format!(
            "--user-data-dir={}",
            dir.join(format!("profile-{profile}")).display()
        ))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().unwrap_or_else(|e| spawn_failed(e));
    let until = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within 90 s: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "chromium failed ({status}): {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    std::fs::read_to_string(&out).unwrap()
}

/// The `<tr>` of credential `id` in the page.
fn row<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("data-credential=\"{id}\""))
        .unwrap_or_else(|| panic!("no row for {id} in {page}"));
    let end = page[start..].find("</tr>").unwrap() + start;
    &page[start..end]
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A one-time login path, made with the admin token.
async fn login_link(h: &Harness) -> String {
    let r = h
        .client
        .post(format!("{}/admin/login-link", h.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let path = v["path"].as_str().unwrap().to_owned();
    assert!(path.starts_with("/admin/login?code="), "{v}");
    h.check_no_secret(&path);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_revoked_key_and_lets_an_operator_act() {
    let h = start(
        "status-page",
        ANTHROPIC,
        &[
            Cred::new("team-1", A).with("priority = 10"),
            Cred::new("team-2", B),
            Cred::new("team-3", C),
        ],
        &format!(
            "{}\n{}",
            route("claude", "anthropic", "claude-x", &["team-1", "team-2"]),
            route("claude-small", "anthropic", "claude-y", &["team-3"])
        ),
        "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
    )
    .await;
    // Traffic, then a revoked key; callers never notice.
    for _ in 0..6 {
        assert_eq!(h.messages("claude", false).await.status, 200);
        assert_eq!(h.messages("claude-small", false).await.status, 200);
    }
    h.sim.set(A, Behaviour::Revoked);
    for _ in 0..4 {
        assert_eq!(h.messages("claude", false).await.status, 200);
    }
    h.eventually("team-1 disabled", || {
        h.state_of("credential/team-1") == "disabled"
    })
    .await;

    let client = no_redirects();
    let url = |p: &str| format!("{}{p}", h.url);

    // Without a session: the login form, and nothing about the credentials.
    let r = client.get(url("/admin/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let text = r.text().await.unwrap();
    assert!(text.contains("name=\"token\"") && text.contains("action=\"/admin/login\""));
    assert!(!text.contains("team-1"), "{text}");
    let r = client.get(url("/admin/live")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A wrong token: refused, no cookie.
    let r = client
        .post(url("/admin/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    // A form posted from another site: refused.
    let r = client
        .post(url("/admin/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "http://evil.example")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The right token: a session cookie, HttpOnly and SameSite=Strict, that is not the
    // token; then a redirect to the page.
    let r = client
        .post(url("/admin/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/admin/");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    h.check_no_secret(&set);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();

    // The page: the revoked key disabled, with its evidence, next check and remedy; the
    // others healthy; the last hour's counts; the history.
    let r = client
        .get(url("/admin/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    h.check_no_secret(&page);
    let a = row(&page, "team-1");
    assert!(a.contains("badge s-disabled\">disabled"), "{a}");
    assert!(a.contains("auth_permanent"), "{a}");
    assert!(a.contains("confirmed by probe"), "{a}");
    assert!(a.contains("re-check <time"), "{a}");
    assert!(a.contains("replace the key"), "{a}");
    assert!(
        a.contains("class=\"err\""),
        "a's failed attempts are charted: {a}"
    );
    let b = row(&page, "team-2");
    assert!(b.contains("badge s-healthy\">healthy"), "{b}");
    assert!(b.contains("class=\"ok\""), "b's attempts are charted: {b}");
    assert!(!b.contains("failed</span>"), "{b}");
    assert!(page.contains("claude-small"), "every route is listed");
    assert!(page.contains("<div class=\"n bad\">1</div><div class=\"label\">disabled"));
    let csrf = page
        .split("name=\"keyward-csrf\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 64);

    // History filters: team-1's probe transitions only.
    let filtered = client
        .get(url(
            "/admin/live?credential=team-1&actor=probe&state=disabled",
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let history = filtered.split("<table class=\"history\">").nth(1).unwrap();
    assert!(history.contains("credential/team-1"), "{history}");
    assert!(!history.contains("credential/team-2"), "{history}");
    assert!(!history.contains("<td>traffic"), "{history}");

    // Actions through the admin API with the cookie: refused without the CSRF header,
    // done with it.
    let r = client
        .post(url("/admin/credentials/team-2/disable"))
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .body(r#"{"reason":"page test"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no CSRF header");
    let r = client
        .post(url("/admin/credentials/team-2/disable"))
        .header("cookie", &cookie)
        .header("x-keyward-csrf", "0".repeat(64))
        .header("content-type", "application/json")
        .body(r#"{"reason":"page test"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a wrong CSRF header");
    assert_eq!(
        h.state_of("credential/team-2"),
        "healthy",
        "nothing changed"
    );
    let r = client
        .post(url("/admin/credentials/team-2/disable"))
        .header("cookie", &cookie)
        .header("x-keyward-csrf", &csrf)
        .header("content-type", "application/json")
        .body(r#"{"reason":"page test"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let live = client
        .get(url("/admin/live"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        row(&live, "team-2").contains("s-disabled"),
        "the live part follows"
    );
    let r = client
        .post(url("/admin/credentials/team-2/reset"))
        .header("cookie", &cookie)
        .header("x-keyward-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(url("/admin/credentials/team-2/probe"))
        .header("cookie", &cookie)
        .header("x-keyward-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A made-up cookie is not a session.
    let r = client
        .get(url("/admin/credentials"))
        .header("cookie", format!("keyward_admin={}", "ab".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Logging out ends the session.
    let r = client
        .post(url("/admin/logout"))
        .header("cookie", &cookie)
        .header("x-keyward-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(url("/admin/live"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Headless Chromium: the login page renders its form.
    let dir = h.dir.clone();
    let dom = chromium(&dir, "anon", &["--dump-dom".into(), url("/admin/")]);
    assert!(
        dom.contains("<form method=\"post\" action=\"/admin/login\""),
        "{dom}"
    );
    assert!(dom.contains("type=\"password\""), "{dom}");
    assert!(!dom.contains("team-1"), "{dom}");

    // A one-time login link: works once, leaves the address bar, and Chromium renders
    // the page with the revoked key disabled and its evidence.
    let link = login_link(&h).await;
    // Virtual time lets the page's script run its 5-second poll of /admin/live with the
    // session cookie before the DOM is dumped.
    let dom = chromium(
        &dir,
        "dom",
        &[
            "--virtual-time-budget=12000".into(),
            "--dump-dom".into(),
            url(&link),
        ],
    );
    h.check_no_secret(&dom);
    assert!(
        dom.contains("live · updated"),
        "the script polled /admin/live and swapped it in: {dom}"
    );
    let a = row(&dom, "team-1");
    assert!(a.contains(">disabled<"), "{a}");
    assert!(a.contains("confirmed by probe"), "{a}");
    assert!(dom.contains("<svg class=\"chart\""), "charts render");
    let r = client.get(url(&link)).send().await.unwrap();
    assert_eq!(r.status(), 401, "a used link is spent");
    assert!(r.headers().get("set-cookie").is_none());

    // The screenshot.
    let link = login_link(&h).await;
    let png: PathBuf = dir.join("status-page.png");
    chromium(
        &dir,
        "shot",
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1400,900".into(),
            "--hide-scrollbars".into(),
            url(&link),
        ],
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    assert!(
        bytes.len() > 20_000,
        "not a blank page: {} bytes",
        bytes.len()
    );
    if let Ok(keep) = std::env::var("KEYWARD_SCREENSHOT") {
        let to = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(keep);
        std::fs::copy(&png, &to).unwrap();
    }
    h.check_no_secret(&h.logs());
}

/// Headless Chromium driven through the DevTools protocol (a minimal WebSocket client:
/// unfragmented text frames, which is what Chromium sends), to use the page as an
/// operator does: type the token into the form, click, confirm.
struct Browser {
    child: std::process::Child,
    ws: tokio::net::TcpStream,
    buf: Vec<u8>,
    next: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    async fn start(dir: &Path) -> Browser {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let profile = dir.join("profile-devtools");
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new("chromium")
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--remote-debugging-port=0")
            .arg("--window-size=1400,900")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("chromium-devtools.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| spawn_failed(e));
        // Chromium writes the port it chose to DevToolsActivePort.
        let until = Instant::now() + Duration::from_secs(30);
        let port = loop {
            let text =
                std::fs::read_to_string(profile.join("DevToolsActivePort")).unwrap_or_default();
            if let Some(p) = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<u16>().ok())
            {
                break p;
            }
            assert!(
                Instant::now() < until,
                "chromium wrote no DevToolsActivePort"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let list: serde_json::Value = serde_json::from_str(
            &reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        let ws_url = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target: {list}"))
            .to_owned();
        let path = ws_url.split_once(&format!(":{port}")).unwrap().1.to_owned();
        let mut ws = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        ws.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2V5d2FyZC10ZXN0LWtleQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = ws.read(&mut chunk).await.unwrap();
            assert!(n > 0, "devtools closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert!(
            buf.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
        buf.drain(..end);
        Browser {
            child,
            ws,
            buf,
            next: 0,
        }
    }

    async fn fill(&mut self, n: usize) {
        use tokio::io::AsyncReadExt;
        while self.buf.len() < n {
            let mut chunk = vec![0u8; 65536];
            let got = self.ws.read(&mut chunk).await.unwrap();
            assert!(got > 0, "devtools closed the connection");
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }

    async fn message(&mut self) -> serde_json::Value {
        self.fill(2).await;
        let (op, short) = (self.buf[0] & 0x0f, usize::from(self.buf[1] & 0x7f));
        let (len, head) = match short {
            126 => {
                self.fill(4).await;
                (
                    usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                    4,
                )
            }
            127 => {
                self.fill(10).await;
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (usize::try_from(u64::from_be_bytes(b)).unwrap(), 10)
            }
            n => (n, 2),
        };
        self.fill(head + len).await;
        let payload: Vec<u8> = self.buf.drain(..head + len).skip(head).collect();
        assert_eq!(op, 1, "a text frame");
        serde_json::from_slice(&payload).unwrap()
    }

    async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use tokio::io::AsyncWriteExt;
        self.next += 1;
        let id = self.next;
        let data = serde_json::json!({"id": id, "method": method, "params": params}).to_string();
        let mask = [0x13u8, 0x57, 0x9b, 0xdf];
        let mut frame = vec![0x81u8];
        match data.len() {
            n if n < 126 => frame.push(0x80 | u8::try_from(n).unwrap()),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(data.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.ws.write_all(&frame).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let m = self.message().await;
                if m["id"] == id {
                    return m;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("devtools did not answer {method}"));
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply
    }

    /// Evaluates `expr` in the page (awaiting a promise): its value.
    async fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        assert!(r["result"].get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["result"]["value"].clone()
    }

    /// Waits (bounded: generous, a loaded CI machine renders slowly) until `expr` is true
    /// in the page.
    async fn until(&mut self, what: &str, expr: &str) {
        let until = Instant::now() + Duration::from_secs(45);
        loop {
            if self
                .eval(&format!(
                    "(() => {{ try {{ return !!({expr}); }} catch (e) {{ return false; }} }})()"
                ))
                .await
                == true
            {
                return;
            }
            if Instant::now() >= until {
                let body = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!("timed out waiting for {what}; the page shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_with_the_form_and_acts_through_the_dialog() {
    let h = start(
        "status-page-browser",
        ANTHROPIC,
        &[
            Cred::new("team-1", A).with("priority = 10"),
            Cred::new("team-2", B),
        ],
        &route("claude", "anthropic", "claude-x", &["team-1", "team-2"]),
        "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
    )
    .await;
    h.sim.set(A, Behaviour::Revoked);
    assert_eq!(h.messages("claude", false).await.status, 200);
    h.eventually("team-1 disabled", || {
        h.state_of("credential/team-1") == "disabled"
    })
    .await;

    let mut b = Browser::start(&h.dir).await;
    b.call("Page.enable", serde_json::json!({})).await;
    b.call(
        "Page.navigate",
        serde_json::json!({"url": format!("{}/admin/", h.url)}),
    )
    .await;
    b.until("the login form", "document.getElementById('login')")
        .await;
    // A wrong token: the form again, saying so.
    b.eval("document.getElementById('token').value = 'not-it'; document.getElementById('login').requestSubmit(); 1")
        .await;
    b.until(
        "the refusal",
        "document.body.innerText.includes('That is not the admin token')",
    )
    .await;
    // The token, typed into the form and submitted as a browser does.
    b.eval(&format!("document.getElementById('token').value = '{ADMIN_TOKEN}'; document.getElementById('login').requestSubmit(); 1"))
        .await;
    b.until(
        "the page after login",
        "document.querySelector('tr[data-credential=\"team-1\"]')",
    )
    .await;
    assert_eq!(b.eval("location.pathname").await, "/admin/");
    assert_eq!(
        b.eval("document.cookie").await,
        "",
        "the session cookie is HttpOnly"
    );
    let row = b
        .eval("document.querySelector('tr[data-credential=\"team-1\"]').innerText")
        .await;
    let row = row.as_str().unwrap();
    assert!(
        row.contains("disabled") && row.contains("confirmed by probe"),
        "{row}"
    );
    h.check_no_secret(
        b.eval("document.documentElement.outerHTML")
            .await
            .as_str()
            .unwrap(),
    );

    // Disable team-2 through the dialog: cancel first (nothing happens), then confirm with
    // a reason.
    let button = "document.querySelector('button[data-action=\"disable\"][data-id=\"team-2\"]')";
    b.eval(&format!("{button}.click(); 1")).await;
    b.until("the dialog", "document.getElementById('confirm').open")
        .await;
    b.eval("document.querySelector('#confirm button[value=\"cancel\"]').click(); 1")
        .await;
    b.until(
        "the dialog closed",
        "!document.getElementById('confirm').open",
    )
    .await;
    assert_eq!(h.state_of("credential/team-2"), "healthy", "cancelled");
    b.eval(&format!("{button}.click(); 1")).await;
    b.until("the dialog", "document.getElementById('confirm').open")
        .await;
    b.eval("document.getElementById('reason').value = 'rotating it'; document.getElementById('confirm-ok').click(); 1")
        .await;
    b.until(
        "team-2 disabled on the page",
        "document.querySelector('tr[data-credential=\"team-2\"] .badge').textContent === 'disabled'",
    )
    .await;
    assert_eq!(h.state_of("credential/team-2"), "disabled");
    let history = b
        .eval("document.querySelector('table.history').innerText")
        .await;
    assert!(
        history.as_str().unwrap().contains("rotating it"),
        "{history}"
    );
    // Reset it the same way.
    b.eval(
        "document.querySelector('button[data-action=\"reset\"][data-id=\"team-2\"]').click(); 1",
    )
    .await;
    b.until("the dialog", "document.getElementById('confirm').open")
        .await;
    b.eval("document.getElementById('confirm-ok').click(); 1")
        .await;
    b.until(
        "team-2 healthy on the page",
        "document.querySelector('tr[data-credential=\"team-2\"] .badge').textContent === 'healthy'",
    )
    .await;
    assert_eq!(h.state_of("credential/team-2"), "healthy");

    // Log out: back to the form, and the session no longer opens the page.
    b.eval("document.getElementById('logout').click(); 1").await;
    b.until("the login form", "document.getElementById('login')")
        .await;
    b.call(
        "Page.navigate",
        serde_json::json!({"url": format!("{}/admin/", h.url)}),
    )
    .await;
    b.until("the login form", "document.getElementById('login')")
        .await;
    h.check_no_secret(&h.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_wide_auth_incident_is_on_the_page() {
    let names = ["i-1", "i-2", "i-3"];
    let secrets: Vec<String> = names
        .iter()
        .map(|id| format!("sk-ant-page-incident-{id}"))
        .collect();
    let creds: Vec<Cred<'_>> = names
        .iter()
        .zip(&secrets)
        .map(|(id, s)| Cred::new(id, s))
        .collect();
    let h = start(
        "status-page-incident",
        ANTHROPIC,
        &creds,
        &route("claude", "anthropic", "claude-x", &names),
        "\n[admin]\ntoken = \"env:KW_ADMIN\"\n",
    )
    .await;
    let client = no_redirects();
    let r = client
        .post(format!("{}/admin/login", h.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    h.sim.incident(true);
    for _ in 0..3 {
        let r = h.messages("claude", false).await;
        assert!(r.status >= 500, "{}", r.status);
    }
    let until = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = client
            .get(format!("{}/admin/live", h.url))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if page.contains("Active auth incidents") {
            break page;
        }
        assert!(Instant::now() < until, "no incident on the page: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    h.check_no_secret(&page);
    let incident = page
        .split("<section class=\"incidents\">")
        .nth(1)
        .and_then(|s| s.split("</section>").next())
        .unwrap();
    assert!(
        incident.contains("<strong>anthropic</strong>"),
        "{incident}"
    );
    assert!(incident.contains("Nothing is disabled"), "{incident}");
    assert!(
        names.iter().filter(|n| incident.contains(*n)).count() >= 2,
        "the rejected credentials are named: {incident}"
    );
    assert!(
        page.contains("<div class=\"n warn\">1</div><div class=\"label\">auth incidents"),
        "the header counts it"
    );
    assert!(
        !page.contains("s-disabled\">disabled"),
        "nothing disabled: {page}"
    );
    h.sim.incident(false);
}
