//! The floor for any proxy built on hyper, as Keyward is: a reverse proxy that does nothing
//! but forward each request to one upstream and stream the answer back — no routing, no
//! credentials, no classification. `bench/run.sh` measures it beside nginx and Keyward, so
//! the gap between Keyward and nginx can be split into what the HTTP stack costs and what
//! Keyward adds.
//!
//! ```text
//! bare-proxy LISTEN UPSTREAM [hyper|reqwest]
//! bare-proxy 127.0.0.1:18489 http://127.0.0.1:18481 hyper
//! ```
//!
//! `hyper`: hyper-util's pooled client (what Keyward's provider calls use, and what reqwest
//! is built on); `reqwest`: reqwest, as Keyward's provider calls used it until 2026-11-29.
//! One Tokio worker and the same allocator (mimalloc), as Keyward runs in the benchmark.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone)]
enum Upstream {
    Hyper(Box<Client<hyper_util::client::legacy::connect::HttpConnector, Incoming>>),
    Reqwest(reqwest::Client),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        return Err("usage: bare-proxy LISTEN UPSTREAM [hyper|reqwest]".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let base = upstream.trim_end_matches('/').to_owned();
    let client = match args.get(3).map(String::as_str) {
        Some("reqwest") => Upstream::Reqwest(
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()?,
        ),
        _ => Upstream::Hyper(Box::new(Client::builder(TokioExecutor::new()).build_http())),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (client, base) = (client.clone(), base.clone());
                    async move { Ok::<_, Infallible>(forward(&client, &base, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

async fn forward(client: &Upstream, base: &str, req: Request<Incoming>) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let url = format!("{base}{path}");
    let bad = |e: String| {
        let mut r = Response::new(
            http_body_util::Full::new(Bytes::from(e))
                .map_err(|never| match never {})
                .boxed(),
        );
        *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
        r
    };
    match client {
        Upstream::Hyper(c) => {
            let (mut parts, body) = req.into_parts();
            parts.uri = match url.parse() {
                Ok(u) => u,
                Err(e) => return bad(format!("{e}")),
            };
            parts.headers.remove(hyper::header::HOST);
            match c.request(Request::from_parts(parts, body)).await {
                Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed()),
                Err(e) => bad(e.to_string()),
            }
        }
        Upstream::Reqwest(c) => {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return bad(e.to_string()),
            };
            let mut headers = parts.headers;
            headers.remove(hyper::header::HOST);
            match c
                .request(parts.method, url)
                .headers(headers)
                .body(body)
                .send()
                .await
            {
                Ok(resp) => {
                    let mut r = Response::builder().status(resp.status());
                    if let Some(h) = r.headers_mut() {
                        *h = resp.headers().clone();
                    }
                    let stream = http_body_util::StreamBody::new(futures_util::StreamExt::map(
                        resp.bytes_stream(),
                        |c| {
                            c.map(hyper::body::Frame::data).map_err(|e| {
                                Box::new(e) as Box<dyn std::error::Error + Send + Sync>
                            })
                        },
                    ));
                    r.body(BodyExt::boxed(stream))
                        .unwrap_or_else(|e| bad(e.to_string()))
                }
                Err(e) => bad(e.to_string()),
            }
        }
    }
}
