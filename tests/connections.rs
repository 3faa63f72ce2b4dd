//! The accept loop's connection timeouts, with short values: a silent HTTP/1.1 client and
//! an idle keep-alive connection are closed after the head timeout; an HTTP/2 peer that
//! never answers pings is dropped; a live HTTP/2 client that answers them keeps its
//! connection while idle.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hpke_gateway::server::{ConnectionLimits, ConnectionTimeouts, serve_connections};
use http_body_util::{BodyExt as _, Empty};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUTS: ConnectionTimeouts = ConnectionTimeouts {
    head: Duration::from_millis(400),
    h2_ping_interval: Duration::from_millis(300),
    h2_ping_timeout: Duration::from_millis(300),
    send: Duration::from_millis(500),
};

/// Closing must happen well within this; a hang fails the test instead of blocking it.
const PATIENCE: Duration = Duration::from_secs(10);

async fn serve() -> SocketAddr {
    serve_with(TIMEOUTS).await
}

async fn serve_with(timeouts: ConnectionTimeouts) -> SocketAddr {
    serve_limited(timeouts, ConnectionLimits::default()).await
}

async fn serve_limited(timeouts: ConnectionTimeouts, limits: ConnectionLimits) -> SocketAddr {
    let app = axum::Router::new().fallback(|| async { "ok" });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_connections(
        listener,
        app,
        None,
        timeouts,
        limits,
        std::future::pending(),
    ));
    addr
}

/// Everything the server sends until it closes the connection, and how long that took.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept the connection open for {PATIENCE:?}"
    );
    (got, started.elapsed())
}

#[tokio::test]
async fn a_silent_http1_client_is_closed_after_the_head_timeout() {
    let addr = serve().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap(); // never finished
    let (got, took) = read_until_closed(&mut stream).await;
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    // hyper answers a timed-out head with 408 or simply closes; either way no 200.
    assert!(!String::from_utf8_lossy(&got).contains(" 200 "), "{got:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_head_timeout() {
    let addr = serve().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (got, took) = read_until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("ok"), "{text}");
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
}

#[tokio::test]
async fn an_http2_peer_that_never_answers_pings_is_dropped() {
    let addr = serve().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The client preface (RFC 9113 §3.4) and an empty SETTINGS frame, then silence: no
    // SETTINGS or PING acknowledgement.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (got, took) = read_until_closed(&mut stream).await;
    // Walk the frames the server sent (9-byte headers, RFC 9113 §4.1).
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        frames.push((got[at + 3], got[at + 4])); // type, flags
        at += 9 + len;
    }
    assert!(
        frames
            .iter()
            .any(|&(kind, flags)| kind == 0x6 && flags & 0x1 == 0),
        "no PING before the close: {frames:?}"
    );
    assert!(took >= Duration::from_millis(500), "closed after {took:?}");
}

#[tokio::test]
async fn a_live_http2_client_keeps_its_idle_connection() {
    // A roomy ping timeout, so a loaded machine that is slow to read the client's
    // acknowledgement does not end the connection; the idle rounds outlast it.
    let addr = serve_with(ConnectionTimeouts {
        h2_ping_timeout: Duration::from_secs(2),
        ..TIMEOUTS
    })
    .await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    for round in 0..2 {
        let req = http::Request::get(format!("http://{addr}/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200, "round {round}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        // Idle for several ping intervals and longer than interval + timeout: without
        // acknowledgements the connection would be gone by now.
        tokio::time::sleep(Duration::from_millis(2800)).await;
    }
    assert!(!conn.is_finished(), "the connection was closed while idle");
}

#[tokio::test]
async fn at_max_connections_the_listener_waits_until_one_closes() {
    let timeouts = ConnectionTimeouts {
        head: Duration::from_secs(30),
        ..TIMEOUTS
    };
    let addr = serve_limited(timeouts, ConnectionLimits::new(2, None)).await;
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s); // kept open (keep-alive)
    }
    // The third connects (the kernel queues it) but is not served while two are open.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond max_connections");
    // One closes (and finishes lingering, which the client's close ends at once).
    drop(held.pop());
    let n = tokio::time::timeout(PATIENCE, third.read(&mut buf))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}
