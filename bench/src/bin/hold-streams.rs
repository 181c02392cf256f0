//! The caller side of the streams-at-scale benchmark: opens N streaming Anthropic
//! requests (HTTP/1.1, one connection each, `RAMP` new ones a second), reads every one to
//! its end, and reports per stream: time to the first content event, content events
//! received, the longest gap between two of them, and whether `message_stop` came.
//!
//! ```text
//! hold-streams ADDR PATH N KEY MODEL [RAMP_PER_SEC]
//! hold-streams 127.0.0.1:18483 /v1/messages 10000 "$KEY" claude-slow 2000
//! ```
//!
//! Prints `open N` on stderr once every stream has its first content event (the moment to
//! read the proxy's memory), then one JSON object on stdout when all have ended.

// A measuring tool: it reads the real clock and reports on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Default, Clone)]
struct Outcome {
    ttfb: Option<Duration>,
    events: usize,
    max_gap: Duration,
    stopped: bool,
    error: Option<String>,
}

const EVENT: &[u8] = b"event: content_block_delta";
const STOP: &[u8] = b"message_stop";

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

async fn one(addr: String, request: Arc<Vec<u8>>, first: Arc<AtomicUsize>) -> Outcome {
    let mut out = Outcome::default();
    let start = Instant::now();
    let mut tcp = match TcpStream::connect(&addr).await {
        Ok(t) => t,
        Err(e) => {
            out.error = Some(format!("connect: {e}"));
            return out;
        }
    };
    let _ = tcp.set_nodelay(true);
    if let Err(e) = tcp.write_all(&request).await {
        out.error = Some(format!("write: {e}"));
        return out;
    }
    let mut buf = vec![0u8; 16 * 1024];
    // The last bytes of the previous read, so a marker split across reads is still seen.
    let mut carry: Vec<u8> = Vec::new();
    let mut last = Instant::now();
    let mut head_checked = false;
    loop {
        let n = match tcp.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                out.error = Some(format!("read: {e}"));
                break;
            }
        };
        let mut hay = std::mem::take(&mut carry);
        hay.extend_from_slice(&buf[..n]);
        if !head_checked && hay.len() >= 12 {
            head_checked = true;
            if !hay.starts_with(b"HTTP/1.1 200") {
                let shown = String::from_utf8_lossy(&hay[..hay.len().min(120)]).into_owned();
                out.error = Some(format!("status: {shown}"));
                break;
            }
        }
        let got = count(&hay, EVENT);
        if got > 0 {
            let now = Instant::now();
            if out.events == 0 {
                out.ttfb = Some(now - start);
                first.fetch_add(1, Ordering::Relaxed);
            } else {
                out.max_gap = out.max_gap.max(now - last);
            }
            last = now;
            out.events += got;
        }
        if count(&hay, STOP) > 0 {
            out.stopped = true;
            break;
        }
        let keep = hay.len().min(EVENT.len() - 1);
        carry = hay[hay.len() - keep..].to_vec();
    }
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        return Err("usage: hold-streams ADDR PATH N KEY MODEL [RAMP_PER_SEC]".into());
    }
    let (addr, path, key, model) = (
        args[1].clone(),
        args[2].clone(),
        args[4].clone(),
        args[5].clone(),
    );
    let n: usize = args[3].parse()?;
    let ramp: usize = args.get(6).map_or(Ok(2000), |s| s.parse())?;
    let body = format!(
        "{{\"model\":\"{model}\",\"max_tokens\":64,\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}"
    );
    let request = Arc::new(
        format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nx-api-key: {key}\r\nanthropic-version: 2023-06-01\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let outcomes = rt.block_on(async move {
        let first = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(n);
        let batch = (ramp / 10).max(1);
        let began = Instant::now();
        for i in 0..n {
            if i > 0 && i % batch == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tasks.push(tokio::spawn(one(
                addr.clone(),
                request.clone(),
                first.clone(),
            )));
        }
        let watch = first.clone();
        let reporter = tokio::spawn(async move {
            loop {
                if watch.load(Ordering::Relaxed) >= n {
                    eprintln!("open {n} after {:.1} s", began.elapsed().as_secs_f64());
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let mut outs = Vec::with_capacity(n);
        for t in tasks {
            outs.push(t.await.unwrap_or_else(|e| Outcome {
                error: Some(format!("task: {e}")),
                ..Outcome::default()
            }));
        }
        reporter.abort();
        outs
    });
    let mut ttfb: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.ttfb.map(|d| d.as_secs_f64() * 1000.0))
        .collect();
    ttfb.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.events > 1)
        .map(|o| o.max_gap.as_secs_f64() * 1000.0)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let events: Vec<usize> = outcomes.iter().map(|o| o.events).collect();
    let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    let first_error = errors
        .first()
        .map_or(String::new(), |e| e.replace('"', "'"));
    println!(
        "{{\"streams\": {n}, \"with_first_event\": {}, \"completed\": {}, \"errors\": {}, \"first_error\": \"{}\", \"events_min\": {}, \"events_max\": {}, \"ttfb_ms_p50\": {:.1}, \"ttfb_ms_p99\": {:.1}, \"ttfb_ms_max\": {:.1}, \"max_gap_ms_p50\": {:.0}, \"max_gap_ms_p99\": {:.0}, \"max_gap_ms_max\": {:.0}}}",
        ttfb.len(),
        outcomes.iter().filter(|o| o.stopped).count(),
        errors.len(),
        first_error.escape_default(),
        events.iter().min().copied().unwrap_or(0),
        events.iter().max().copied().unwrap_or(0),
        pct(&ttfb, 0.5),
        pct(&ttfb, 0.99),
        ttfb.last().copied().unwrap_or(0.0),
        pct(&gaps, 0.5),
        pct(&gaps, 0.99),
        gaps.last().copied().unwrap_or(0.0),
    );
    Ok(())
}
