//! A slow Anthropic-format upstream for the streams-at-scale benchmark: every
//! `POST …/v1/messages` answers a stream that sends its first content event at once and
//! then one more a second, `EVENTS` content events in all, then ends cleanly
//! (`content_block_stop`, `message_delta`, `message_stop`). Thousands of such streams
//! cost it one timer and a few hundred bytes each.
//!
//! ```text
//! slow-sse LISTEN [EVENTS] [INTERVAL_MS]
//! slow-sse 127.0.0.1:18491 30 1000
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = BoxBody<Bytes, Infallible>;

const HEAD: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_slow\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-bench\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
const DELTA: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"tick \"}}\n\n";
const TAIL: &str = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":8}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(listen) = args.get(1) else {
        return Err("usage: slow-sse LISTEN [EVENTS] [INTERVAL_MS]".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let events: usize = args.get(2).map_or(Ok(30), |s| s.parse())?;
    let interval = Duration::from_millis(args.get(3).map_or(Ok(1000), |s| s.parse())?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                // Out of file descriptors for a moment: wait rather than exit.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(req, events, interval))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

fn answer(_req: Request<Incoming>, events: usize, interval: Duration) -> Response<Body> {
    let stream = futures_util::stream::unfold(0usize, move |i| async move {
        let chunk = match i {
            0 => format!("{HEAD}{DELTA}"),
            i if i < events => {
                tokio::time::sleep(interval).await;
                DELTA.to_owned()
            }
            i if i == events => {
                tokio::time::sleep(interval).await;
                TAIL.to_owned()
            }
            _ => return None,
        };
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))), i + 1))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    r
}
