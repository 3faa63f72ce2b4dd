//! Upstream connections: a set of idle HTTP/1 connections per worker, built on
//! `hyper::client::conn::http1`.
//!
//! Each worker thread has a pool of its own (`Proxy::fresh_pool`), so a checkout takes an
//! uncontended lock and the connection's task runs on the thread that uses it. A
//! connection goes back to the pool when its answer's body ends (read to the end, or
//! known empty); an answer dropped before its end takes its connection with it. A
//! connection is handed out only when hyper says it is ready for a request (its last
//! answer and request both complete). The most recently returned connection is used
//! first; connections idle for longer than [`IDLE_TIMEOUT`] are closed (at a checkout, a
//! return, or by the worker's reaper task every third of that time), and a worker keeps at
//! most [`MAX_IDLE`] of them.
//!
//! A request that a reused connection refused before writing a byte (the upstream
//! closed it while it sat idle) goes out again on another connection, as hyper-util's
//! pooled client does: each stale connection costs one more try, the last on a new
//! connection. A request refused by a new connection is not sent again, and none whose
//! bytes went out is ever sent twice.
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
    /// Whether the task that closes expired connections of a quiet worker runs.
    reaping: std::sync::atomic::AtomicBool,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("idle", &self.lock().len())
            .finish_non_exhaustive()
    }
}

/// What a look through the idle connections found.
enum Taken {
    Ready(SendRequest<Body>),
    /// Some are busy finishing their last answer.
    NotYet,
    None,
}

/// An upstream connection in use; [`Pool::give_back`] or drop.
pub(crate) struct Connection(SendRequest<Body>);

impl Pool {
    pub(crate) fn new(connector: HttpsConnector<HttpConnector>, target: Uri) -> Self {
        Self {
            connector,
            target,
            idle: Mutex::default(),
            reaping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sends `req` (origin form, `Host` set) on an idle connection or a new one.
    pub(crate) async fn send(
        self: &Arc<Self>,
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
        let mut idle = self.lock();
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
    /// ready: when none is ready yet, the connections get one turn of the scheduler, never
    /// a wait. The others stay where they are (a cancelled checkout loses none).
    async fn ready_idle(&self) -> Option<SendRequest<Body>> {
        match self.take_ready() {
            Taken::Ready(sender) => Some(sender),
            Taken::None => None,
            Taken::NotYet => {
                tokio::task::yield_now().await;
                match self.take_ready() {
                    Taken::Ready(sender) => Some(sender),
                    Taken::None | Taken::NotYet => None,
                }
            }
        }
    }

    /// Takes the newest ready connection, dropping closed and expired ones on the way.
    fn take_ready(&self) -> Taken {
        let mut idle = self.lock();
        expire(&mut idle, Instant::now());
        let mut not_yet = false;
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            match poll_ready_once(&mut idle[i].sender) {
                Poll::Ready(Ok(())) => {
                    return idle
                        .remove(i)
                        .map_or(Taken::None, |c| Taken::Ready(c.sender));
                }
                Poll::Ready(Err(_)) => {
                    idle.remove(i);
                }
                Poll::Pending => not_yet = true,
            }
        }
        if not_yet { Taken::NotYet } else { Taken::None }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // Nothing panics under this lock; were it poisoned, the set is still whole.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// From the first connection on, a task on this worker closes expired connections
    /// every third of [`IDLE_TIMEOUT`], so that a worker gone quiet does not hold them
    /// open; it ends with the pool.
    fn start_reaping(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.reaping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(IDLE_TIMEOUT / 3);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                expire(&mut pool.lock(), Instant::now());
            }
        });
    }

    async fn connect(self: &Arc<Self>) -> Result<SendRequest<Body>, BoxError> {
        self.start_reaping();
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

    fn pool_for(target: Uri) -> Arc<Pool> {
        let tls = crate::tls::upstream_client_config_for_http().unwrap();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(HttpConnector::new());
        Arc::new(Pool::new(connector, target))
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
        assert_eq!(pool.lock().len(), MAX_IDLE);
        let Some(long_ago) = Instant::now().checked_sub(IDLE_TIMEOUT + Duration::from_secs(1))
        else {
            return; // a machine up for less than 91 s: nothing can be that old
        };
        for idle in pool.lock().iter_mut().take(10) {
            idle.since = long_ago;
        }
        // A checkout closes the expired ones (the rest are not ready: no task runs them).
        assert!(matches!(pool.take_ready(), Taken::NotYet));
        assert_eq!(pool.lock().len(), MAX_IDLE - 10);
    }

    /// Connections still finishing their last answer stay in the set, in their order,
    /// whatever happens to the checkout that looked at them.
    #[tokio::test]
    async fn a_checkout_that_finds_none_ready_or_is_dropped_keeps_them_all() {
        let (target, _) = upstream().await;
        let pool = pool_for(target);
        let mut keep = Vec::new();
        for _ in 0..3 {
            let (client_io, server_io) = tokio::io::duplex(64);
            // The connection's task is never run, so it never becomes ready.
            let (sender, connection) =
                hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(client_io))
                    .await
                    .unwrap();
            keep.push((server_io, connection));
            pool.give_back(Connection(sender));
        }
        let before: Vec<Instant> = pool.lock().iter().map(|i| i.since).collect();
        assert!(pool.ready_idle().await.is_none());
        let mut checkout = Box::pin(pool.ready_idle());
        let waker = std::task::Waker::noop();
        // First poll: none ready, so it yields; then it is dropped mid-way.
        assert!(
            checkout
                .as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_pending()
        );
        drop(checkout);
        let after: Vec<Instant> = pool.lock().iter().map(|i| i.since).collect();
        assert_eq!(before, after);
    }
}
