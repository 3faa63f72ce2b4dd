//! Wiring: the router `serve` runs, and running it until a shutdown signal.

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;
use tower::Layer as _;

use crate::config::Config;
use crate::error::Error;
use crate::middleware::{HpkeLayer, HpkeState};
use crate::proxy::Proxy;

/// The gateway's router: the HPKE middleware in front of the proxy to the upstream.
pub fn app(config: Config) -> Result<Router, Error> {
    let proxy = Proxy::new(
        &config.upstream,
        config.upstream_connect_timeout,
        config.upstream_timeout,
    )?;
    let service = HpkeLayer::new(HpkeState::from_config(config)).layer(proxy);
    Ok(Router::new().fallback_service(service))
}

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the configured listener and serves until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), crate::BoxError> {
    let listen = config.listen;
    let accounts = config.accounts.len();
    let keys = config.server_keys.iter().count();
    let upstream = config.upstream.to_string();
    let app = app(config)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, %upstream, server_keys = keys, accounts, "hpke-gateway listening");
    serve(listener, app, shutdown_signal()).await?;
    tracing::info!("hpke-gateway stopped");
    Ok(())
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
