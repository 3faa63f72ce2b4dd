//! A minimal, fast upstream for the load harness (bench/load.py): plain hyper, HTTP/1.1
//! keep-alive, one fixed JSON-shaped reply per request. The request body is read and
//! dropped; the reply is `size` bytes (query `?size=N`, default 1024) and echoes nothing.
//!
//! `cargo run --release --example bench_upstream -- 127.0.0.1:9000`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn reply(size: usize) -> Bytes {
    let mut body = br#"{"status":"success","processed":1,"unprocessed":[],"pad":""#.to_vec();
    while body.len() + 2 < size {
        body.push(b'x');
    }
    body.extend_from_slice(b"\"}");
    body.truncate(size.max(2));
    Bytes::from(body)
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let size = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("size=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024);
    // Drain the request body frame by frame without keeping it.
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    let mut res = Response::new(Full::new(reply(size)));
    res.headers_mut()
        .insert("content-type", "application/json".parse().expect("static"));
    Ok(res)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into())
        .parse()
        .expect("usage: bench_upstream IP:PORT");
    let listener = TcpListener::bind(addr).await?;
    eprintln!("bench upstream on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}
