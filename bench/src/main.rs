//! `keyward-bench`: what the gateway adds to a request, and how many it carries.
//!
//! It starts the simulated provider (`keyward-sim`) and a real gateway (the same
//! `keyward::serve` the binary runs, with its SQLite state file) in one process on
//! 127.0.0.1, then drives the same requests twice: straight to the simulator, and through
//! the gateway to it. The difference is the gateway's added latency; the `Server-Timing`
//! header gives the gateway's own accounting of it. Nothing leaves 127.0.0.1.
//!
//! Phases:
//! 1. sequential non-streaming `/v1/messages`, one request at a time: p50/p90/p99/max;
//! 2. sequential streaming: time to the first byte and to the terminal event;
//! 3. throughput: `--concurrency` callers for `--seconds`, non-streaming: requests per
//!    second and latency under load.
//!
//! The servers run on their own multi-thread runtime; the load generator on a separate
//! single-thread runtime, so it does not steal the servers' workers (on a 2-core machine
//! they still share the CPUs: read the throughput figure as "with the load generator on
//! the same box").
//!
//! Run: `cargo run --release -p keyward-bench -- --requests 5000 --concurrency 32 --seconds 10`

#![allow(clippy::print_stdout, clippy::disallowed_methods)]

use std::error::Error;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(about = "Keyward's added latency and throughput against direct calls to the simulator")]
struct Args {
    /// Sequential requests per path (non-streaming); a quarter as many streams.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Concurrent callers in the throughput phase.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Length of each throughput run, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Content events per simulated stream.
    #[arg(long, default_value_t = 16)]
    stream_events: usize,
    /// Worker threads for the servers (simulator and gateway).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
}

const GATEWAY_KEY: &str = "kw-bench-gateway-key";
const KEYS: [&str; 4] = [
    "sk-ant-bench-key-0001",
    "sk-ant-bench-key-0002",
    "sk-ant-bench-key-0003",
    "sk-ant-bench-key-0004",
];

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .enable_all()
        .build()?;
    let (sim, gw_addr) = servers.block_on(start(args.stream_events))?;
    let sim_addr = sim.addr();
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = client_rt.block_on(run(&args, sim_addr, gw_addr));
    drop(sim);
    drop(servers);
    result
}

/// Starts the simulator and a gateway in front of it; returns the simulator (it stops when
/// dropped) and the gateway's address.
async fn start(stream_events: usize) -> Result<(keyward_sim::SimServer, SocketAddr), BoxError> {
    let sim = keyward_sim::Sim::new();
    sim.set_stream_length(stream_events);
    let server = sim.serve("127.0.0.1:0".parse()?).await?;
    let sim_addr = server.addr();
    let dir = std::env::temp_dir().join(format!("keyward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let state = dir.join("state.db");
    let _ = std::fs::remove_file(&state);
    let _ = std::fs::remove_file(dir.join("state.db.lock"));
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\nstate = \"{}\"\n\n[[gateway_keys]]\nname = \"bench\"\nkey = \"env:GW\"\n\n[endpoints.anthropic]\nprovider = \"anthropic\"\nbase_url = \"http://{sim_addr}\"\n\n",
        state.display()
    );
    for i in 0..KEYS.len() {
        toml.push_str(&format!(
            "[[credentials]]\nid = \"k{i}\"\nendpoint = \"anthropic\"\nsecret = \"env:K{i}\"\n\n"
        ));
    }
    toml.push_str("[routes.claude]\ntargets = [{ endpoint = \"anthropic\", model = \"claude-bench\", credentials = [\"k0\", \"k1\", \"k2\", \"k3\"] }]\n");
    let env = |v: &str| -> Option<String> {
        if v == "GW" {
            return Some(GATEWAY_KEY.to_owned());
        }
        v.strip_prefix('K')
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| KEYS.get(i))
            .map(|k| (*k).to_owned())
    };
    let cfg = keyward::config::Config::parse(&toml, &dir, &env)
        .map_err(|p| format!("bench config: {p:?}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gw_addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = keyward::serve(cfg, listener, std::future::pending()).await {
            println!("gateway stopped: {e}");
        }
    });
    Ok((server, gw_addr))
}

/// One path under test: where to send, with which key.
#[derive(Clone)]
struct Path {
    name: &'static str,
    url: String,
    key: &'static str,
    model: &'static str,
}

async fn run(args: &Args, sim: SocketAddr, gw: SocketAddr) -> Result<(), BoxError> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(1) * 2)
        .build()?;
    let direct = Path {
        name: "direct",
        url: format!("http://{sim}/v1/messages"),
        key: KEYS[0],
        model: "claude-bench",
    };
    let gateway = Path {
        name: "gateway",
        url: format!("http://{gw}/v1/messages"),
        key: GATEWAY_KEY,
        model: "claude",
    };
    println!(
        "keyward-bench: {} sequential requests, {} streams of {} events, {} callers for {} s; server threads {}",
        args.requests,
        args.requests / 4,
        args.stream_events,
        args.concurrency,
        args.seconds,
        args.server_threads
    );
    // Warm both paths (connections, allocators, SQLite page cache).
    for p in [&direct, &gateway] {
        for _ in 0..200 {
            one(&client, p, false).await?;
        }
    }

    println!("\n1. sequential, non-streaming (ms)");
    println!("{}", Stats::header());
    let mut seq = Vec::new();
    for p in [&direct, &gateway] {
        let mut lat = Vec::with_capacity(args.requests);
        let mut own = Vec::new();
        for _ in 0..args.requests {
            let r = one(&client, p, false).await?;
            lat.push(r.total);
            if let Some(g) = r.gateway_ms {
                own.push(Duration::from_secs_f64(g / 1000.0));
            }
        }
        let s = Stats::of(&mut lat);
        println!("{}", s.row(p.name));
        if !own.is_empty() {
            println!(
                "{}",
                Stats::of(&mut own).row("  gateway's own (Server-Timing)")
            );
        }
        seq.push(s);
    }
    if let [d, g] = seq.as_slice() {
        println!(
            "   added by the gateway: p50 {:.3} ms, p99 {:.3} ms",
            g.p50 - d.p50,
            g.p99 - d.p99
        );
    }

    println!("\n2. sequential, streaming: first byte / terminal event (ms)");
    println!("{}", Stats::header());
    for p in [&direct, &gateway] {
        let mut first = Vec::new();
        let mut total = Vec::new();
        for _ in 0..(args.requests / 4).max(1) {
            let r = one(&client, p, true).await?;
            first.push(r.first_byte);
            total.push(r.total);
        }
        println!(
            "{}",
            Stats::of(&mut first).row(&format!("{} first byte", p.name))
        );
        println!(
            "{}",
            Stats::of(&mut total).row(&format!("{} complete", p.name))
        );
    }

    println!(
        "\n3. throughput, {} concurrent callers, non-streaming",
        args.concurrency
    );
    println!("{}", Stats::header());
    for p in [&direct, &gateway] {
        let (done, mut lat) = load(&client, p, args.concurrency, args.seconds).await?;
        let s = Stats::of(&mut lat);
        println!(
            "{}   {:>8.0} req/s",
            s.row(p.name),
            done as f64 / args.seconds as f64
        );
    }
    Ok(())
}

/// What one request measured.
struct Sample {
    first_byte: Duration,
    total: Duration,
    gateway_ms: Option<f64>,
}

async fn one(client: &reqwest::Client, p: &Path, stream: bool) -> Result<Sample, BoxError> {
    let body = serde_json::json!({
        "model": p.model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "Summarise the plot of Hamlet in one line."}],
    })
    .to_string();
    let start = Instant::now();
    let mut resp = client
        .post(&p.url)
        .header("x-api-key", p.key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let gateway_ms = resp
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("gateway;dur="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<f64>().ok());
    let mut first_byte = None;
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        first_byte.get_or_insert_with(|| start.elapsed());
        bytes.extend_from_slice(&chunk);
    }
    let total = start.elapsed();
    let text = String::from_utf8_lossy(&bytes);
    let complete = if stream {
        text.contains("message_stop")
    } else {
        text.contains("\"stop_reason\"")
    };
    if !status.is_success() || !complete {
        return Err(format!("{} answered {status}: {text}", p.name).into());
    }
    Ok(Sample {
        first_byte: first_byte.unwrap_or(total),
        total,
        gateway_ms,
    })
}

/// `callers` loops for `seconds`; returns completed requests and their latencies.
async fn load(
    client: &reqwest::Client,
    p: &Path,
    callers: usize,
    seconds: u64,
) -> Result<(usize, Vec<Duration>), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers.max(1) {
        let client = client.clone();
        let p = p.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                lat.push(one(&client, &p, false).await?.total);
            }
            Ok::<_, BoxError>(lat)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    Ok((all.len(), all))
}

/// Percentiles of a set of durations, in milliseconds.
struct Stats {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Stats {
    fn of(v: &mut [Duration]) -> Stats {
        v.sort_unstable();
        let at = |q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((v.len() as f64 - 1.0) * q).round() as usize;
            v[i.min(v.len() - 1)].as_secs_f64() * 1000.0
        };
        Stats {
            n: v.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }

    fn header() -> String {
        format!(
            "   {:<32} {:>7} {:>8} {:>8} {:>8} {:>8}",
            "path", "n", "p50", "p90", "p99", "max"
        )
    }

    fn row(&self, name: &str) -> String {
        format!(
            "   {:<32} {:>7} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            name, self.n, self.p50, self.p90, self.p99, self.max
        )
    }
}
