//! bare-proxy with Keyward's HTTP stack put back one layer at a time, to tell what each
//! layer costs per open stream (issue 21). Each layer is switched on by a word among the
//! arguments; with none it is bare-proxy.
//!
//! ```text
//! stack-proxy LISTEN UPSTREAM [auto] [tls] [full] [wrap]
//! stack-proxy 127.0.0.1:19587 http://127.0.0.1:19582 auto tls full wrap
//! ```
//!
//! - `auto`: hyper-util's `auto` server builder (HTTP/1.1 or HTTP/2 by the first bytes) with
//!   timers and a header-read timeout, served with upgrades, as `gateway/listener.rs` does;
//!   without it, hyper's HTTP/1 builder;
//! - `tls`: the upstream client on hyper-rustls's connector (HTTP/1.1 and HTTP/2 by ALPN)
//!   with the pool's timers, as `gateway/upstream.rs` builds it;
//! - `full`: the request body read whole and sent as `Full<Bytes>` (Keyward reads it once
//!   for routing and failover), not streamed through;
//! - `wrap`: the answer re-chunked through a boxed stream with a per-chunk timeout, as
//!   Keyward pumps a committed stream.
//!
//! Run it in place of bare-proxy in the streams part of `bench/scale.sh` to read its memory
//! per stream. One Tokio worker and mimalloc, as Keyward runs in the benchmark.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyDataStream, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, Error>;

#[derive(Debug, Clone, Copy)]
struct Layers {
    auto: bool,
    tls: bool,
    full: bool,
    wrap: bool,
}

/// The upstream client: one per body type and connector.
#[derive(Debug, Clone)]
enum Upstream {
    Plain(
        Client<HttpConnector, Incoming>,
        Client<HttpConnector, Full<Bytes>>,
    ),
    Tls(
        Client<HttpsConnector<HttpConnector>, Incoming>,
        Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    ),
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        return Err("usage: stack-proxy LISTEN UPSTREAM [auto] [tls] [full] [wrap]".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let base = upstream.trim_end_matches('/').to_owned();
    let on = |w: &str| args.iter().skip(3).any(|a| a == w);
    let layers = Layers {
        auto: on("auto"),
        tls: on("tls"),
        full: on("full"),
        wrap: on("wrap"),
    };
    let mut b = Client::builder(TokioExecutor::new());
    if layers.tls {
        b.pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90));
    }
    let client = if layers.tls {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        Upstream::Tls(b.build(https.clone()), b.build(https))
    } else {
        Upstream::Plain(b.build_http(), b.build_http())
    };
    let mut auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    auto.http2().timer(TokioTimer::new());
    let auto = std::sync::Arc::new(auto);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            let (client, base, auto) = (client.clone(), base.clone(), auto.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (client, base) = (client.clone(), base.clone());
                    async move { Ok::<_, Infallible>(forward(&client, &base, layers, req).await) }
                });
                if layers.auto {
                    let _ = auto
                        .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                }
            });
        }
    })
}

fn bad(e: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(e))
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
    r
}

/// The answer as it came, or re-chunked through a boxed stream with an idle limit.
fn answer(resp: Response<Incoming>, wrap: bool) -> Response<Body> {
    if !wrap {
        return resp.map(|b| b.map_err(Into::into).boxed_unsync());
    }
    let (parts, body) = resp.into_parts();
    let rest = BodyDataStream::new(body).boxed();
    let chunks = futures_util::stream::unfold(rest, |mut rest| async move {
        match tokio::time::timeout(Duration::from_secs(300), rest.next()).await {
            Ok(Some(Ok(b))) => Some((Ok::<_, Error>(Frame::data(Bytes::from(b.to_vec()))), rest)),
            _ => None,
        }
    });
    Response::from_parts(parts, StreamBody::new(chunks).boxed_unsync())
}

async fn forward(
    up: &Upstream,
    base: &str,
    layers: Layers,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let (mut parts, body) = req.into_parts();
    parts.uri = match format!("{base}{path}").parse() {
        Ok(u) => u,
        Err(e) => return bad(format!("{e}")),
    };
    parts.headers.remove(hyper::header::HOST);
    let sent = if layers.full {
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return bad(e.to_string()),
        };
        let req = Request::from_parts(parts, Full::new(bytes));
        match up {
            Upstream::Plain(_, c) => c.request(req).await,
            Upstream::Tls(_, c) => c.request(req).await,
        }
    } else {
        let req = Request::from_parts(parts, body);
        match up {
            Upstream::Plain(c, _) => c.request(req).await,
            Upstream::Tls(c, _) => c.request(req).await,
        }
    };
    match sent {
        Ok(resp) => answer(resp, layers.wrap),
        Err(e) => bad(e.to_string()),
    }
}
