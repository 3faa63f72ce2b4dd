//! Wiring: the routers, and running them until a shutdown signal.
//!
//! `run` serves with one single-threaded runtime per core, each with its own listening
//! socket on the same address (`SO_REUSEPORT`: the kernel spreads connections) and its own
//! upstream connection pool, as nginx runs one worker per core. A request then stays on
//! one thread from accept to upstream and back, with no cross-thread wake-ups. The keys
//! and accounts are shared and swapped whole by a reload; the metrics and the
//! concurrency budget are shared by all workers. The main thread runs the admin
//! listener, the reloader and the signal handlers.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tower::Layer as _;

use crate::access::AccessLogLayer;
use crate::admin::{self, Admin};
use crate::config::Config;
use crate::error::StartError;
use crate::intake::SharedIntake;
use crate::limits::{Admission, LimitsLayer};
use crate::metrics::Metrics;
use crate::middleware::HpkeLayer;
use crate::proxy::Proxy;
use crate::publish::{self, PgpKeysState};
use crate::reload::Reloader;
use crate::state::{LiveState, SharedState};
use crate::tls::CertResolver;

/// Everything the public routers of all workers share.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: SharedState,
    metrics: Arc<Metrics>,
    limits: LimitsLayer,
    admission: Arc<Admission>,
    proxy: Proxy,
    tls: Option<Arc<CertResolver>>,
    intake: Option<SharedIntake>,
}

impl Gateway {
    /// The gateway for a checked configuration.
    pub fn new(mut config: Config) -> Result<Self, StartError> {
        let proxy = Proxy::new(
            &config.upstream,
            config.upstream_connect_timeout,
            config.upstream_timeout,
            config.upstream_tls.clone(),
        )?;
        let tls = config
            .tls
            .clone()
            .map(|key| Arc::new(CertResolver::new(key)));
        let intake = config
            .intake
            .take()
            .map(|i| Arc::new(ArcSwap::from_pointee(i)));
        let metrics = Arc::new(Metrics::new(config.ops.metrics_account_labels));
        let limits = LimitsLayer::new(config.ops.max_header_bytes);
        let admission = Arc::new(Admission::new(
            config.ops.max_concurrent_requests,
            config.ops.buffer_budget_bytes,
            config.ops.buffer_wait,
            metrics.clone(),
        ));
        let shared = Arc::new(ArcSwap::from_pointee(LiveState::from_config(config)));
        Ok(Self {
            shared,
            metrics,
            limits,
            admission,
            proxy,
            tls,
            intake,
        })
    }

    /// The file intake's live configuration, when it is configured.
    pub fn intake(&self) -> Option<&SharedIntake> {
        self.intake.as_ref()
    }

    /// A proxy to the upstream with a connection pool of its own (the intake's).
    #[cfg(feature = "intake")]
    pub(crate) fn fresh_proxy(&self) -> Proxy {
        self.proxy.fresh_pool()
    }

    /// The public listener's certificate, when it terminates TLS.
    pub fn tls(&self) -> Option<&Arc<CertResolver>> {
        self.tls.as_ref()
    }

    /// The live state a reload replaces.
    pub fn shared(&self) -> &SharedState {
        &self.shared
    }

    /// The metrics all routers record into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The public router: the published keys, and everything else through the HPKE
    /// middleware to the upstream, under the limits and the access log.
    pub fn router(&self) -> Router {
        self.router_with(self.proxy.clone())
    }

    fn router_with(&self, proxy: Proxy) -> Router {
        let hpke = HpkeLayer::from_shared(
            self.shared.clone(),
            self.metrics.clone(),
            self.admission.clone(),
        )
        .layer(proxy);
        let pgp_keys = Router::new()
            .route(publish::PGP_PATH, get(publish::pgp_keys))
            .with_state(PgpKeysState {
                intake: self.intake.clone(),
                shared: self.shared.clone(),
            });
        let routes = Router::new()
            .route(publish::PATH, get(publish::hpke_keys))
            .fallback_service(hpke)
            .with_state(self.shared.clone())
            .merge(pgp_keys);
        let guarded = self.limits.layer(routes);
        Router::new().fallback_service(
            AccessLogLayer::new(self.shared.clone(), self.metrics.clone()).layer(guarded),
        )
    }

    /// The admin router (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_router(&self, config_upstream: &http::Uri, connect_timeout: Duration) -> Router {
        admin::router(Admin {
            shared: self.shared.clone(),
            metrics: self.metrics.clone(),
            upstream: config_upstream.clone(),
            connect_timeout,
        })
    }
}

/// The gateway's public router for a configuration, for tests and embedding.
pub fn app(config: Config) -> Result<Router, StartError> {
    Ok(Gateway::new(config)?.router())
}

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

/// Binds the configured listeners and serves until SIGINT or SIGTERM, with one worker
/// thread per core (see the module docs). `path` is the configuration file, reloaded on
/// SIGHUP and when it or a key file changes.
pub fn run(config: Config, path: &Path) -> Result<(), StartError> {
    let listen = config.listen;
    let ops = config.ops.clone();
    let upstream = config.upstream.clone();
    let connect_timeout = config.upstream_connect_timeout;
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let key_count = config.server_keys.iter().count();
    let account_count = config.accounts.len();
    let (files, fixed) = (config.files.clone(), crate::state::Fixed::of(&config));
    let gateway = Gateway::new(config)?;
    // Bind every socket before serving, so a bad address fails at once. Port 0 means
    // "any free port": the first socket picks it, the others join it, and the start-up
    // line reports it (tests bind this way instead of guessing a free port).
    let bind_error = |source| StartError::Listen {
        what: "listen",
        addr: listen,
        source,
    };
    let first = reuseport_socket(listen).map_err(bind_error)?;
    let listen = first.local_addr().map_err(bind_error)?;
    let sockets = std::iter::once(Ok(first))
        .chain((1..workers).map(|_| reuseport_socket(listen)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bind_error)?;
    let admin_socket = ops
        .admin_listen
        .map(|addr| {
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| StartError::Listen {
                    what: "admin_listen",
                    addr,
                    source,
                })
        })
        .transpose()?;
    let admin_addr = admin_socket
        .as_ref()
        .map(std::net::TcpListener::local_addr)
        .transpose()?;
    let main_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reloader = Reloader::new(
        path.to_path_buf(),
        files,
        fixed,
        gateway.shared().clone(),
        gateway.metrics().clone(),
        gateway.tls().cloned(),
        gateway.intake().cloned(),
    );
    let tls_config = gateway
        .tls()
        .map(|resolver| crate::tls::server_config(resolver.clone()))
        .transpose()
        .map_err(StartError::Tls)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // One connection budget for all workers.
    let connection_limits =
        ConnectionLimits::new(ops.max_connections, Some(gateway.metrics().clone()))
            .with_head_room(ops.max_header_bytes);
    let threads: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let (gateway, mut stop, done) = (gateway.clone(), stop_rx.clone(), done_tx.clone());
            let limits = connection_limits.clone();
            let (header_timeout, send_timeout) = (ops.header_timeout, ops.send_timeout);
            let tls = tls_config.clone().map(tokio_rustls::TlsAcceptor::from);
            std::thread::Builder::new()
                .name(format!("hpke-gateway-{i}"))
                .spawn(move || -> std::io::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let served = rt.block_on(async move {
                        let listener = TcpListener::from_std(socket)?;
                        // A fresh client per worker: its pooled connections live on this thread.
                        let router = gateway.router_with(gateway.proxy.fresh_pool());
                        let shutdown = async move {
                            let _ = stop.wait_for(|stopped| *stopped).await;
                        };
                        let timeouts = ConnectionTimeouts {
                            head: header_timeout,
                            send: send_timeout,
                            ..ConnectionTimeouts::default()
                        };
                        serve_connections(listener, router, tls, timeouts, limits, shutdown).await
                    });
                    let _ = done.send(());
                    served
                })
        })
        .collect::<Result<_, _>>()?;
    drop(done_tx);
    let intake_thread = match gateway.intake() {
        Some(intake) => Some(crate::intake::spawn(
            intake.clone(),
            gateway.proxy.fresh_pool(),
            gateway.metrics().clone(),
            stop_rx.clone(),
        )?),
        None => None,
    };
    main_rt.block_on(async {
        // Both handlers are in place before "listening" is logged.
        let stopping = shutdown_signal_installed();
        let watch = reloader.watch(ops.reload_poll);
        let admin = match admin_socket {
            Some(socket) => {
                let listener = TcpListener::from_std(socket)?;
                let router = gateway.admin_router(&upstream, connect_timeout);
                // The same head timeout and connection limit as the public listener: the
                // admin port may face a network (the Kubernetes manifests bind 0.0.0.0).
                let timeouts = ConnectionTimeouts {
                    head: ops.header_timeout,
                    send: ops.send_timeout,
                    ..ConnectionTimeouts::default()
                };
                let limits = ConnectionLimits::new(ops.max_connections, None)
                    .with_head_room(ops.max_header_bytes);
                Some(tokio::spawn(async move {
                    let serving = serve_connections(
                        listener,
                        router,
                        None,
                        timeouts,
                        limits,
                        std::future::pending(),
                    );
                    if let Err(e) = serving.await {
                        tracing::error!(error = %e, "admin listener failed");
                    }
                }))
            }
            None => None,
        };
        // `accounts` are the HTTP API's; the file intake has accounts of its own.
        let intake = gateway.intake().map(|i| i.load_full());
        let intake_state = if intake.is_some() { "on" } else { "off" };
        tracing::info!(
            %listen,
            tls = tls_config.is_some(),
            admin = %admin_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            upstream = %upstream,
            server_keys = key_count,
            accounts = account_count,
            workers,
            intake = %intake_state,
            intake_accounts = intake.as_ref().map(|i| crate::intake::account_count(i)),
            intake_state_dir = intake
                .as_ref()
                .map(|i| tracing::field::display(crate::intake::state_dir(i).display())),
            "hpke-gateway listening"
        );
        tokio::select! {
            () = watch => {},
            () = stopping => {},
        }
        if let Some(admin) = admin {
            admin.abort();
        }
        Ok::<_, std::io::Error>(())
    })?;
    tracing::info!(
        grace_ms = ops.shutdown_grace.as_millis() as u64,
        "shutting down: no new connections, draining in-flight requests"
    );
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + ops.shutdown_grace;
    let mut finished = 0;
    while finished < threads.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => finished += 1,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    workers_still_busy = threads.len() - finished,
                    "grace period over: closing the connections still open"
                );
                return Ok(());
            }
        }
    }
    for t in threads {
        t.join()
            .map_err(|_| std::io::Error::other("a worker thread panicked"))??;
    }
    // The intake stops between jobs; a job still running is cut here and resumed from
    // the journal at the next start.
    drop(intake_thread);
    tracing::info!("hpke-gateway stopped");
    Ok(())
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Installs the SIGINT and SIGTERM handlers now; the future completes on either.
pub(crate) fn shutdown_signal_installed() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt()).ok();
        let term = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(int) => {},
                () = wait(term) => {},
            }
        }
    }
    #[cfg(not(unix))]
    shutdown_signal()
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
