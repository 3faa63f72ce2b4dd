//! Upstream connections: a set of idle HTTP/1 connections per worker, built on
//! `hyper::client::conn::http1`.
//!
//! Each worker thread has a pool of its own (`Proxy::fresh_pool`), so a checkout takes an
//! uncontended lock and the connection's task runs on the thread that uses it. A
//! connection goes back to the pool when its answer's body ends (read to the end, or
//! known empty); an answer dropped before its end takes its connection with it. The
//! most recently returned connection is used first; connections idle for longer than
//! [`IDLE_TIMEOUT`] are closed at the next checkout or return, and a worker keeps at
//! most [`MAX_IDLE`] of them.
//!
//! A request that a reused connection refused before writing a byte (the upstream
//! closed it while it sat idle) is sent again on a new connection, once, as hyper-util's
//! pooled client does; a request on a new connection is never repeated.
//!
//! Issue 14 measured this against hyper-util's pooled client (a pool shared by every
//! thread, a task per request to watch the connection go idle): see docs/performance.md.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::ServiceExt as _;

/// An idle connection is closed after this long (hyper-util's pooled client: 90 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections kept per worker; beyond this the oldest is closed.
pub const MAX_IDLE: usize = 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One worker's upstream connections.
pub(crate) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/` of the upstream: what the connector dials.
    target: Uri,
    /// Oldest at the front, most recently returned at the back.
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("idle", &self.idle.lock().map_or(0, |idle| idle.len()))
            .finish_non_exhaustive()
    }
}

/// An upstream connection in use; [`Pool::give_back`] or drop.
pub(crate) struct Connection(SendRequest<Body>);

impl Pool {
    pub(crate) fn new(connector: HttpsConnector<HttpConnector>, target: Uri) -> Self {
        Self {
            connector,
            target,
            idle: Mutex::default(),
        }
    }

    /// Sends `req` (origin form, `Host` set) on an idle connection or a new one.
    pub(crate) async fn send(
        &self,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, Connection), BoxError> {
        loop {
            let (mut sender, reused) = match self.ready_idle().await {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(response) => return Ok((response, Connection(sender))),
                Err(mut e) => match e.take_message() {
                    // Refused before a byte was written: the upstream closed the idle
                    // connection. The request is intact; a new connection gets it.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// Puts a connection whose answer ended back for the next request.
    pub(crate) fn give_back(&self, connection: Connection) {
        if connection.0.is_closed() {
            return;
        }
        let now = Instant::now();
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        expire(&mut idle, now);
        if idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back(Idle {
            sender: connection.0,
            since: now,
        });
    }

    /// The most recently returned connection that is ready for a request. A connection
    /// comes back when its answer's last frame is read, a moment before its task marks it
    /// ready: one that is not ready yet gets one turn of the scheduler, never a wait.
    async fn ready_idle(&self) -> Option<SendRequest<Body>> {
        let mut not_yet = Vec::new();
        {
            let mut idle = self.idle.lock().ok()?;
            expire(&mut idle, Instant::now());
            while let Some(mut candidate) = idle.pop_back() {
                match poll_ready_once(&mut candidate.sender) {
                    Poll::Ready(Ok(())) => {
                        idle.extend(not_yet.into_iter().rev());
                        return Some(candidate.sender);
                    }
                    Poll::Ready(Err(_)) => {}
                    Poll::Pending => not_yet.push(candidate),
                }
            }
        }
        if not_yet.is_empty() {
            return None;
        }
        tokio::task::yield_now().await;
        let mut found = None;
        let mut still = Vec::new();
        for mut candidate in not_yet {
            if found.is_none() {
                match poll_ready_once(&mut candidate.sender) {
                    Poll::Ready(Ok(())) => {
                        found = Some(candidate.sender);
                        continue;
                    }
                    Poll::Ready(Err(_)) => continue,
                    Poll::Pending => {}
                }
            }
            still.push(candidate);
        }
        if let Ok(mut idle) = self.idle.lock() {
            // Back in their order: the first taken (the newest) goes last.
            idle.extend(still.into_iter().rev());
        }
        found
    }

    async fn connect(&self) -> Result<SendRequest<Body>, BoxError> {
        let io = self.connector.clone().oneshot(self.target.clone()).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// Drops the connections idle for longer than [`IDLE_TIMEOUT`] (the oldest are first).
fn expire(idle: &mut VecDeque<Idle>, now: Instant) {
    while idle
        .front()
        .is_some_and(|oldest| now.duration_since(oldest.since) > IDLE_TIMEOUT)
    {
        idle.pop_front();
    }
}

/// Polls a connection's readiness once, asking for no wake-up: a checkout never waits.
fn poll_ready_once(sender: &mut SendRequest<Body>) -> Poll<hyper::Result<()>> {
    sender.poll_ready(&mut Context::from_waker(std::task::Waker::noop()))
}

/// The upstream's answer body: its connection goes back to the pool at the end.
pub(crate) struct ReturnOnEnd {
    body: Incoming,
    connection: Option<Connection>,
    pool: Arc<Pool>,
}

impl ReturnOnEnd {
    pub(crate) fn new(body: Incoming, connection: Connection, pool: Arc<Pool>) -> Self {
        Self {
            body,
            connection: Some(connection),
            pool,
        }
    }

    fn give_back(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.give_back(connection);
        }
    }
}

/// hyper's server drops a body that says it has ended without polling it (an empty
/// answer, a known length read in full): its connection is reusable. A body dropped
/// before its end takes its connection with it.
impl Drop for ReturnOnEnd {
    fn drop(&mut self) {
        if http_body::Body::is_end_stream(&self.body) {
            self.give_back();
        }
    }
}

impl http_body::Body for ReturnOnEnd {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || self.body.is_end_stream() {
            self.give_back();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// An upstream that answers `ok` to one request per connection, counting connections.
    async fn upstream() -> (Uri, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = tcp.read(&mut buf).await;
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                });
            }
        });
        (format!("http://{addr}/").parse().unwrap(), accepted)
    }

    fn pool_for(target: Uri) -> Pool {
        let tls = crate::tls::upstream_client_config_for_http().unwrap();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(HttpConnector::new());
        Pool::new(connector, target)
    }

    fn get() -> Request<Body> {
        Request::get("/")
            .header(http::header::HOST, "upstream")
            .body(Body::empty())
            .unwrap()
    }

    /// The race a keep-alive client cannot avoid: the upstream closes an idle connection
    /// after the checkout found it ready, before the request was written. The request
    /// comes back unsent and goes out again on a new connection.
    #[tokio::test]
    async fn a_request_refused_by_a_reused_connection_goes_out_on_a_new_one() {
        let (target, accepted) = upstream().await;
        let pool = pool_for(target);
        let (client_io, server_io) = tokio::io::duplex(4096);
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(client_io))
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.ready().await.unwrap();
        pool.give_back(Connection(sender));
        // Closed by the peer; the connection's task has not run since, so the checkout
        // still finds the connection ready.
        drop(server_io);
        let (response, _) = pool.send(get()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A request that fails on a new connection is never sent twice.
    #[tokio::test]
    async fn a_request_that_fails_on_a_new_connection_is_not_repeated() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                drop(tcp);
            }
        });
        let pool = pool_for(format!("http://{addr}/").parse().unwrap());
        assert!(pool.send(get()).await.is_err());
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn idle_connections_expire_and_are_capped() {
        let (target, _) = upstream().await;
        let pool = pool_for(target);
        let mut keep = Vec::new();
        for _ in 0..MAX_IDLE + 3 {
            let (client_io, server_io) = tokio::io::duplex(64);
            let (sender, connection) =
                hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(client_io))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            keep.push(server_io);
            pool.give_back(Connection(sender));
        }
        assert_eq!(pool.idle.lock().unwrap().len(), MAX_IDLE);
        let long_ago = Instant::now() - IDLE_TIMEOUT - Duration::from_secs(1);
        for idle in pool.idle.lock().unwrap().iter_mut().take(10) {
            idle.since = long_ago;
        }
        let mut idle = pool.idle.lock().unwrap();
        expire(&mut idle, Instant::now());
        assert_eq!(idle.len(), MAX_IDLE - 10);
    }
}
