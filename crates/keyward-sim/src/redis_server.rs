//! A real `redis-server` process on a loopback port, for fleet-mode tests: started with
//! persistence off, killed and restarted on the same port on demand, stopped on drop.
//!
//! The binary is `$KEYWARD_REDIS_SERVER` or `redis-server` on `PATH` (Debian's
//! `redis-server` package; `scripts/test.sh` installs it). A missing binary is an error
//! that says so: fleet tests never skip silently.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    binary: String,
    /// TLS only (no plain port), with a certificate from a throwaway CA.
    tls: bool,
}

impl RedisServer {
    /// Starts one on a free loopback port and waits (at most 10 s) until it answers PING.
    pub fn start() -> Result<RedisServer, String> {
        RedisServer::start_with(false)
    }

    /// Starts one that speaks TLS only, its certificate (for 127.0.0.1) signed by a CA made
    /// for it with `openssl`; [`RedisServer::ca_file`] is that CA.
    pub fn start_tls() -> Result<RedisServer, String> {
        RedisServer::start_with(true)
    }

    /// The CA that signed a TLS server's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn start_with(tls: bool) -> Result<RedisServer, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let dir = std::env::temp_dir().join(format!("keyward-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let binary =
            std::env::var("KEYWARD_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            binary,
            tls,
        };
        if tls {
            server.make_certificates()?;
        }
        server.restart()?;
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn make_certificates(&self) -> Result<(), String> {
        let openssl = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&self.dir)
                .output()
                .map_err(|e| {
                    format!("cannot run openssl (install it: apt-get install openssl): {e}")
                })?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        std::fs::write(self.dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n")
            .map_err(|e| e.to_string())?;
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=keyward-test-ca",
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ])
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it (SIGKILL): clients see their connections drop.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (without persistence: empty) and waits until it
    /// answers.
    // A real process starting: a wall-clock deadline, not the gateway's clock.
    #[allow(clippy::disallowed_methods)]
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let mut cmd = Command::new(&self.binary);
        if self.tls {
            let path = |f: &str| self.dir.join(f).to_string_lossy().into_owned();
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-cert-file", &path("server.crt")])
                .args(["--tls-key-file", &path("server.key")])
                .args(["--tls-ca-cert-file", &path("ca.crt")])
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {:?}: {e}; install Debian's redis-server package (scripts/test.sh does) or set KEYWARD_REDIS_SERVER",
                    self.binary
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let up = if self.tls {
                // No TLS client here: the port accepting is enough.
                TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], self.port)),
                    Duration::from_millis(200),
                )
                .is_ok()
            } else {
                self.command("PING").is_ok_and(|r| r.starts_with("+PONG"))
            };
            if up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis-server on port {} did not answer within 10 s",
            self.port
        ))
    }

    /// Sends one inline command and returns the raw reply (enough for PING, INFO,
    /// DBSIZE, CLIENT KILL).
    pub fn command(&self, line: &str) -> Result<String, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        s.write_all(format!("{line}\r\nQUIT\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        // Drop QUIT's "+OK".
        Ok(out
            .trim_end()
            .strip_suffix("+OK")
            .unwrap_or(&out)
            .to_owned())
    }

    /// Calls per command from `INFO commandstats` (`get` → 12).
    pub fn command_calls(&self) -> Result<std::collections::BTreeMap<String, u64>, String> {
        let info = self.command("INFO commandstats")?;
        let mut out = std::collections::BTreeMap::new();
        for line in info.lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, stats)) = rest.split_once(':') else {
                continue;
            };
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            out.insert(name.to_owned(), calls);
        }
        Ok(out)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
