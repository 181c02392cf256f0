//! The accept loop: connection limits that `axum::serve` does not have.
//!
//! Hand-written around hyper-util's connection builder because these limits are about
//! connections, not requests, and no middleware sees a connection that never completes a
//! request head:
//! - **header-read timeout** (`server.header_read_timeout`): hyper's own, for HTTP/1; a
//!   connection that has not sent a whole request head in time is closed (slowloris).
//!   Hyper also runs it while a kept-alive connection waits for its next request.
//! - **idle timeout** (`server.idle_timeout`): a connection with no request in flight and
//!   none started for this long is shut down gracefully (HTTP/1 and HTTP/2);
//! - **connection cap** (`server.max_connections`): a connection accepted beyond it is
//!   closed at once, and counted in `keyward_connections_refused_total`.
//!
//! The protocol is told by the connection's first bytes, peeked rather than read: the HTTP/2
//! connection preface means HTTP/2 with prior knowledge, anything else HTTP/1.1. hyper-util's
//! `auto` builder reads those bytes into a buffer of its own and hands them back through a
//! wrapper, so hyper's HTTP/1 read buffer starts with them and its first full read outgrows
//! it: 16 KB of read buffer per connection instead of 8 KB, about 3.4 KB more resident memory
//! per open stream (measured with 2,000 streams open).
//!
//! Each connection's requests carry `ConnectInfo<SocketAddr>` as `axum::serve` would add
//! it. On shutdown the loop stops accepting, asks every connection to finish its
//! in-flight requests and streams, and waits for them at most the drain limit.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::Router;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::metrics::Metrics;

/// The connection limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl ConnLimits {
    pub fn from_config(s: &crate::config::Server) -> ConnLimits {
        ConnLimits {
            header_read_timeout: s.header_read_timeout,
            idle_timeout: s.idle_timeout,
            max_connections: s.max_connections,
        }
    }
}

/// When a connection last started or finished a request, and how many are in flight.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut l) = self.last.lock() {
            *l = Instant::now();
        }
    }

    /// When the connection becomes idle too long, if nothing happens before.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        let last = self
            .last
            .lock()
            .map(|l| *l)
            .unwrap_or_else(|_| Instant::now());
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // Busy: look again a whole idle period from now.
            Instant::now() + idle
        } else {
            last + idle
        }
    }
}

/// Counts a request in flight until its response body is dropped.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        a.touch();
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then drains for at
/// most `drain`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let max = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new());
    let builder = Arc::new((h1, h2));
    let (stop_tx, stop_rx) = watch::channel(false);
    let service = TowerToHyperService::new(app);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: not
                    // fatal. A short pause keeps an EMFILE storm from spinning.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.connections_refused.inc();
            drop(tcp);
            continue;
        };
        // Streams are many small writes: without TCP_NODELAY each event after the first
        // waits for the caller's delayed ACK (up to 40 ms on Linux).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a caller connection");
        }
        metrics.connections_open.inc();
        let metrics = metrics.clone();
        let builder = builder.clone();
        let service = service.clone();
        let mut stop = stop_rx.clone();
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let activity = Arc::new(Activity {
                in_flight: AtomicUsize::new(0),
                last: Mutex::new(Instant::now()),
            });
            let per_request = {
                let activity = activity.clone();
                hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let guard = InFlight::start(&activity);
                    let call = hyper::service::Service::call(&service, req.map(Body::new));
                    async move {
                        let r: Response<Body> = call.await?;
                        Ok::<_, std::convert::Infallible>(r.map(|b| {
                            Body::new(b.map_frame(move |f| {
                                let _held = &guard;
                                f
                            }))
                        }))
                    }
                })
            };
            // Until its first bytes, a connection is idle: shutdown and the idle limit
            // close it, as they would an idle connection.
            let deadline = activity.idle_deadline(idle);
            let h2 = tokio::select! {
                h2 = speaks_h2(&tcp, limits.header_read_timeout) => Some(h2),
                _ = stop.changed() => None,
                () = tokio::time::sleep_until(deadline) => None,
            };
            match h2 {
                Some(true) => {
                    // Boxed: HTTP/2 with prior knowledge is rare, and its connection state
                    // would otherwise size every connection's task.
                    let conn = builder.1.serve_connection(TokioIo::new(tcp), per_request);
                    Box::pin(drive(conn, &activity, &mut stop, idle)).await;
                }
                Some(false) => {
                    let conn = builder
                        .0
                        .serve_connection(TokioIo::new(tcp), per_request)
                        .with_upgrades();
                    drive(conn, &activity, &mut stop, idle).await;
                }
                None => {}
            }
            metrics.connections_open.dec();
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: all slots back means all drained.
    if tokio::time::timeout(drain, slots.acquire_many(max))
        .await
        .is_err()
    {
        tracing::warn!(
            drain_secs = drain.as_secs(),
            "drain limit reached: closing the remaining connections"
        );
    }
    Ok(())
}

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a caller's connection opens with the HTTP/2 preface. Its first bytes are peeked,
/// not read, so the connection's own reader sees them. A preface that arrives in pieces is
/// waited for (peeked again every few milliseconds) at most `limit`; past that it is served
/// as HTTP/1.1, whose header-read timeout then closes it.
async fn speaks_h2(tcp: &TcpStream, limit: Duration) -> bool {
    let give_up = Instant::now() + limit;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = match tcp.peek(&mut buf).await {
            Ok(n) => n,
            // The connection's own reader meets the error too.
            Err(_) => return false,
        };
        match (buf.get(..n), H2_PREFACE.get(..n)) {
            (Some(got), Some(want)) if n > 0 && got == want => {
                if n == H2_PREFACE.len() {
                    return true;
                }
            }
            // Anything else, or the end of the stream: HTTP/1.1.
            _ => return false,
        }
        // A prefix of the preface so far: the rest is on its way.
        if Instant::now() >= give_up {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A caller connection that can be asked to finish its in-flight requests and close.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<S> Graceful for http1::UpgradeableConnection<TokioIo<TcpStream>, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<S> Graceful for http2::Connection<TokioIo<TcpStream>, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serves a connection until it ends: shut down gracefully when the listener stops, or
/// when it has had no request in flight for the idle limit.
async fn drive(
    conn: impl Graceful,
    activity: &Activity,
    stop: &mut watch::Receiver<bool>,
    idle: Duration,
) {
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let deadline = activity.idle_deadline(idle);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "caller connection ended with an error");
                }
                break;
            }
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful();
                closing = true;
            }
            () = tokio::time::sleep_until(deadline), if !closing => {
                if activity.in_flight.load(Ordering::Acquire) == 0
                    && Instant::now() >= activity.idle_deadline(idle)
                {
                    conn.as_mut().graceful();
                    closing = true;
                }
            }
        }
    }
}
