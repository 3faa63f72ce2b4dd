//! The accept loop: connection limits, head and send timeouts, HTTP/1 and HTTP/2 on
//! one listener, lingering close, and a graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// How long a connection may sit without making progress before the gateway closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// HTTP/1.1: how long a client has to send a request head, counted from the moment
    /// the connection waits for one (so an idle keep-alive connection closes after it
    /// too). TLS: how long the handshake may take.
    pub head: Duration,
    /// HTTP/2: how long a connection may be quiet before it is pinged.
    pub h2_ping_interval: Duration,
    /// HTTP/2: how long a ping may go unanswered before the connection is closed.
    pub h2_ping_timeout: Duration,
    /// How long a write to the client may wait without progress (a client that stops
    /// reading) before the connection is closed.
    pub send: Duration,
}

impl Default for ConnectionTimeouts {
    /// 30 s for a head or handshake; an HTTP/2 ping after 30 s of quiet, answered within
    /// 20 s; 60 s for a write the client does not read (nginx's `send_timeout`).
    fn default() -> Self {
        Self {
            head: Duration::from_secs(30),
            h2_ping_interval: Duration::from_secs(30),
            h2_ping_timeout: Duration::from_secs(20),
            send: Duration::from_secs(60),
        }
    }
}

/// How many connections a listener holds open at once, shared by the workers that
/// accept on it, and where connection errors are counted.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    slots: Arc<tokio::sync::Semaphore>,
    metrics: Option<Arc<Metrics>>,
    read_buffer: usize,
}

impl ConnectionLimits {
    /// At most `max_connections` open at once; beyond, the listener stops accepting
    /// (new connections wait in the kernel's queue) until one closes.
    pub fn new(max_connections: usize, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(
                max_connections.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
            metrics,
            read_buffer: MIN_READ_BUFFER,
        }
    }

    /// Room in each HTTP/1.1 connection's read buffer for a request head of
    /// `max_header_bytes` (and the request line) besides the minimum.
    pub fn with_head_room(mut self, max_header_bytes: usize) -> Self {
        self.read_buffer = MIN_READ_BUFFER.max(max_header_bytes.saturating_add(8 * 1024));
        self
    }
}

/// The smallest read buffer an HTTP/1.1 connection gets. hyper's default grows to about
/// 400 KiB per connection while a body streams in; with thousands of connections that
/// is memory no budget sees. A head must fit in it: one that does not gets hyper's bare
/// 431 (see [`MAX_HEADER_FIELDS`]).
pub const MIN_READ_BUFFER: usize = 64 * 1024;

impl Default for ConnectionLimits {
    /// `max_connections`' default, uncounted.
    fn default() -> Self {
        Self::new(crate::config::DEFAULT_MAX_CONNECTIONS as usize, None)
    }
}

/// Counts a connection that hyper closed with an error of its own: a head over its
/// hard bounds (it answered a bare 431 itself), a malformed head, a head timeout.
fn count_connection_error(metrics: Option<&Metrics>, error: &(dyn std::error::Error + 'static)) {
    let (Some(metrics), Some(e)) = (metrics, error.downcast_ref::<hyper::Error>()) else {
        return;
    };
    let kind = if e.is_parse_too_large() {
        "head_too_large"
    } else if e.is_parse() {
        "malformed_head"
    } else if e.is_timeout() {
        "head_timeout"
    } else {
        return;
    };
    metrics.protocol_error(kind);
}

/// hyper's own bound: more header fields than this in one request head and hyper
/// answers a bare 431 itself, before the gateway sees the request (counted in
/// `hpke_gateway_http_protocol_errors{kind="head_too_large"}`); below it,
/// `max_header_bytes` answers 431 with the JSON body. Left at hyper's default: setting
/// it makes hyper size its header arrays for every request head it parses.
pub const MAX_HEADER_FIELDS: usize = 100;

/// Serves `router` on `listener`, over TLS when `tls` is given (HTTP/2 or HTTP/1.1 by
/// ALPN; plain connections speak HTTP/1.1, or HTTP/2 with prior knowledge), until
/// `shutdown` completes; then stops accepting and waits for open connections to finish
/// their requests. Each connection lingers when it closes (see [`crate::linger`]).
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timeouts: ConnectionTimeouts,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.head)
        .max_buf_size(limits.read_buffer);
    // A peer that stops answering pings (gone, or holding the connection open without
    // reading) is dropped; a live idle client answers them and keeps its connection.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.h2_ping_interval)
        .keep_alive_timeout(timeouts.h2_ping_timeout);
    let builder = Arc::new(builder);
    let service =
        TowerToHyperService::new(router.map_request(
            |req: http::Request<hyper::body::Incoming>| req.map(axum::body::Body::new),
        ));
    tokio::pin!(shutdown);
    loop {
        // A free connection slot first: at max_connections, stop accepting.
        let slot = tokio::select! {
            slot = limits.slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let io = crate::linger::Lingering::new(tcp, slot, timeouts.send);
        let (builder, service) = (builder.clone(), service.clone());
        let metrics = limits.metrics.clone();
        match &tls {
            None => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        count_connection_error(metrics.as_deref(), &*e);
                    }
                });
            }
            Some(acceptor) => {
                let handshake = tokio::time::timeout(timeouts.head, acceptor.accept(io));
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let Ok(Ok(stream)) = handshake.await else {
                        return;
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        count_connection_error(metrics.as_deref(), &*e);
                    }
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
