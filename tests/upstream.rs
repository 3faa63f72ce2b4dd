//! The upstream side of the proxy: connections are reused, requests arrive in origin
//! form with the upstream's `Host`, an upstream that closes idle connections loses no
//! request, and an answer cut short never leaves its connection behind for the next one.
//!
//! The upstream here is a scripted HTTP/1.1 server on a raw socket that counts the
//! connections it accepts.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Gateway, Options, open_with, read_http_message as read_message};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// One request as the upstream read it.
#[derive(Debug, Clone)]
struct Seen {
    connection: usize,
    request_line: String,
    host: String,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Scripted {
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    /// Answers on keep-alive connections by path:
    /// - `/chunked`: a chunked body;
    /// - `/empty`: 204;
    /// - `/close-silently`: echoes the body, then closes the connection without saying so;
    /// - `/cut`: announces a megabyte, sends ten bytes, then nothing for 10 s;
    /// - anything else: echoes the body with a `Content-Length` (`HEAD`: the length only).
    async fn start() -> (Self, SocketAddr) {
        let scripted = Scripted::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = scripted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let connection = s.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(s.clone().serve(tcp, connection));
            }
        });
        (scripted, addr)
    }

    async fn serve(self, mut tcp: TcpStream, connection: usize) {
        while let Some((head, body)) = read_message(&mut tcp).await {
            let request_line = head.lines().next().unwrap_or_default().to_owned();
            let host = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("host: ")
                        .or_else(|| l.strip_prefix("Host: "))
                })
                .unwrap_or_default()
                .to_owned();
            self.seen.lock().unwrap().push(Seen {
                connection,
                request_line: request_line.clone(),
                host,
                body: body.clone(),
            });
            let mut words = request_line.split(' ');
            let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let path = target.split('?').next().unwrap_or("");
            let answer: Vec<u8> = match (method, path) {
                (_, "/chunked") => {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec()
                }
                (_, "/empty") => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
                (_, "/cut") => {
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n0123456789")
                        .await;
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    return;
                }
                ("HEAD", _) => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
                _ => [
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes(),
                    body,
                ]
                .concat(),
            };
            if tcp.write_all(&answer).await.is_err() {
                return;
            }
            if path == "/close-silently" {
                let _ = tcp.shutdown().await;
                return;
            }
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn gateway_in_front_of(addr: SocketAddr) -> Gateway {
    Gateway::start_with(Options {
        upstream: Some(addr),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection_in_origin_form() {
    let (upstream, addr) = Scripted::start().await;
    let gw = gateway_in_front_of(addr).await;
    let url = |p: &str| format!("{}{p}", gw.url);

    let res = gw.client.get(url("/a?x=1&y=%2F")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = gw.client.head(url("/head")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "5");
    let res = gw.client.get(url("/empty")).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let res = gw.client.get(url("/chunked")).send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap(), "hello world");
    let res = gw
        .client
        .post(url("/p"))
        .body("plain body")
        .send()
        .await
        .unwrap();
    assert_eq!(res.bytes().await.unwrap(), "plain body");
    // An encrypted round trip: the middleware reads the answer to its end itself.
    let pt = br#"{"d":[1]}"#;
    let res = gw
        .encrypted_post("/1/upload", "ACCT-1", gw.seal(1, true, "ACCT-1", pt))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.bytes().await.unwrap();
    assert_eq!(open_with(&gw.keys.acct1, "ACCT-1", &body), pt);

    let seen = upstream.seen();
    let lines: Vec<&str> = seen.iter().map(|s| s.request_line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "GET /a?x=1&y=%2F HTTP/1.1",
            "HEAD /head HTTP/1.1",
            "GET /empty HTTP/1.1",
            "GET /chunked HTTP/1.1",
            "POST /p HTTP/1.1",
            "POST /1/upload HTTP/1.1",
        ]
    );
    assert!(seen.iter().all(|s| s.host == addr.to_string()), "{seen:?}");
    assert_eq!(seen[5].body, pt);
    assert_eq!(
        upstream.accepted(),
        1,
        "every answer ended, so one connection carried them all: {seen:?}"
    );
}

#[tokio::test]
async fn an_upstream_that_closes_idle_connections_loses_and_repeats_no_request() {
    let (upstream, addr) = Scripted::start().await;
    let gw = gateway_in_front_of(addr).await;
    for i in 0..40 {
        let body = format!("{{\"n\":{i}}}");
        let res = gw
            .client
            .post(format!("{}/close-silently", gw.url))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "request {i}");
        assert_eq!(res.bytes().await.unwrap(), body);
    }
    let seen = upstream.seen();
    let bodies: Vec<String> = seen
        .iter()
        .map(|s| String::from_utf8(s.body.clone()).unwrap())
        .collect();
    let expected: Vec<String> = (0..40).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(
        bodies, expected,
        "each request reached the upstream once, in order"
    );
    assert_eq!(upstream.accepted(), 40);
    assert!(seen.iter().enumerate().all(|(i, s)| s.connection == i + 1));
}

/// The connection of an answer the client abandoned is busy (its body still unread): the
/// next request must neither wait for it nor get its bytes.
#[tokio::test]
async fn an_answer_cut_short_takes_its_connection_with_it() {
    let (upstream, addr) = Scripted::start().await;
    let gw = gateway_in_front_of(addr).await;
    let port = gw.url.rsplit(':').next().unwrap().to_owned();

    // A client that reads the head of an answer whose body never completes, then leaves.
    let mut tcp = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    tcp.write_all(b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(10).any(|w| w == b"0123456789") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk))
            .await
            .expect("the head and the first bytes arrive")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    drop(tcp);

    // The next request gets a whole answer on a connection of its own.
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        gw.client
            .post(format!("{}/after", gw.url))
            .body("next")
            .send(),
    )
    .await
    .expect("no wait for the cut connection")
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), "next");
    assert_eq!(upstream.accepted(), 2);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].connection, 2);
}
