//! `serve`: one worker thread per core with its own listening socket, the admin
//! listener, the intake thread, reloads, and the drain on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use tokio::net::TcpListener;

use super::*;
use crate::config::Config;
use crate::error::StartError;
use crate::reload::Reloader;

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
    let (intake_thread, intake_runs) = match gateway.intake() {
        Some(intake) => {
            let (thread, runs) = crate::intake::spawn(
                intake.clone(),
                gateway.proxy.fresh_pool(),
                gateway.metrics().clone(),
                stop_rx.clone(),
            )?;
            (Some(thread), Some(runs))
        }
        None => (None, None),
    };
    main_rt.block_on(async {
        // Both handlers are in place before "listening" is logged.
        let stopping = shutdown_signal_installed();
        let watch = reloader.watch(ops.reload_poll);
        let admin = match admin_socket {
            Some(socket) => {
                let listener = TcpListener::from_std(socket)?;
                let router = gateway.admin_router(&upstream, connect_timeout, intake_runs);
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
