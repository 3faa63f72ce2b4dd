//! Wiring: the router `serve` runs, and running it until a shutdown signal.
//!
//! `run` serves with one single-threaded runtime per core, each with its own listening
//! socket on the same address (`SO_REUSEPORT`: the kernel spreads connections) and its own
//! upstream connection pool, as nginx runs one worker per core. A request then stays on
//! one thread from accept to upstream and back, with no cross-thread wake-ups; the keys
//! and accounts are shared, read-only.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tower::Layer as _;

use crate::access::AccessLogLayer;
use crate::config::Config;
use crate::error::Error;
use crate::middleware::{HpkeLayer, HpkeState};
use crate::proxy::Proxy;
use http::HeaderName;

/// The gateway's router: the HPKE middleware in front of the proxy to the upstream.
pub fn app(config: Config) -> Result<Router, Error> {
    let proxy = proxy_for(&config)?;
    let header = config.account_header.clone();
    Ok(router(
        Arc::new(HpkeState::from_config(config)),
        proxy,
        header,
    ))
}

fn proxy_for(config: &Config) -> Result<Proxy, Error> {
    Proxy::new(
        &config.upstream,
        config.upstream_connect_timeout,
        config.upstream_timeout,
    )
}

fn router(state: Arc<HpkeState>, proxy: Proxy, account_header: HeaderName) -> Router {
    let hpke = HpkeLayer::from_shared(state).layer(proxy);
    Router::new().fallback_service(AccessLogLayer::new(account_header).layer(hpke))
}

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // Small responses go out at once: no Nagle delay on accepted connections.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the configured listener and serves until SIGINT or SIGTERM, with one worker
/// thread per core (see the module docs).
pub fn run(config: Config) -> Result<(), crate::BoxError> {
    let listen = config.listen;
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let proxy = proxy_for(&config)?;
    let account_header = config.account_header.clone();
    let state_upstream = config.upstream.clone();
    let key_count = config.server_keys.iter().count();
    let account_count = config.accounts.len();
    let state = Arc::new(HpkeState::from_config(config));
    // Bind every socket before serving, so a bad address fails at once.
    let sockets = (0..workers)
        .map(|_| reuseport_socket(listen))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(
        %listen,
        upstream = %state_upstream,
        server_keys = key_count,
        accounts = account_count,
        workers,
        "hpke-gateway listening"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let threads: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let (state, proxy, mut stop) = (state.clone(), proxy.clone(), stop_rx.clone());
            let account_header = account_header.clone();
            std::thread::Builder::new()
                .name(format!("hpke-gateway-{i}"))
                .spawn(move || -> std::io::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(socket)?;
                        // A fresh client per worker: its pooled connections live on this thread.
                        let proxy = proxy.fresh_pool();
                        let shutdown = async move {
                            let _ = stop.wait_for(|stopped| *stopped).await;
                        };
                        serve(listener, router(state, proxy, account_header), shutdown).await
                    })
                })
        })
        .collect::<Result<_, _>>()?;
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    signals.block_on(shutdown_signal());
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    for t in threads {
        t.join().map_err(|_| "a worker thread panicked")??;
    }
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
