//! The admin listener (default `127.0.0.1:9181`, never the public port):
//!
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 when a server key is valid now and the upstream accepts a TCP
//!   connection within the connect timeout, else 503; the JSON body names each check.
//! - `GET /metrics`: Prometheus text format (see [`crate::metrics`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, Uri, header};

use crate::metrics::Metrics;
use crate::state::SharedState;

/// What the admin endpoints read.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The live keys and accounts.
    pub shared: SharedState,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// The upstream base URL, for the readiness check.
    pub upstream: Uri,
    /// How long the readiness check waits for a TCP connection.
    pub connect_timeout: Duration,
}

/// The admin router.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

async fn healthz() -> Response {
    json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned())
}

async fn readyz(State(admin): State<Admin>) -> Response {
    let keys = !admin
        .shared
        .load()
        .server_keys()
        .published(SystemTime::now())
        .is_empty();
    let upstream = upstream_reachable(&admin.upstream, admin.connect_timeout).await;
    let status = if keys && upstream {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "fail" };
    json(
        status,
        format!(
            r#"{{"status":"{}","checks":{{"server_keys":"{}","upstream":"{}"}}}}"#,
            word(keys && upstream),
            word(keys),
            word(upstream)
        ),
    )
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let text = admin.metrics.render(admin.shared.load().server_keys());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn upstream_reachable(upstream: &Uri, timeout: Duration) -> bool {
    let Some(host) = upstream.host() else {
        return false;
    };
    let port = upstream
        .port_u16()
        .unwrap_or(if upstream.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}
