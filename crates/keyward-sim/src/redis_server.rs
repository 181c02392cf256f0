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
}

impl RedisServer {
    /// Starts one on a free loopback port and waits (at most 10 s) until it answers PING.
    pub fn start() -> Result<RedisServer, String> {
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
        };
        server.restart()?;
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
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
            if self.command("PING").is_ok_and(|r| r.starts_with("+PONG")) {
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
