//! The admin listener (default `127.0.0.1:9181`, never the public port):
//!
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 when a server key is valid now and the upstream accepts a TCP
//!   connection within the connect timeout, else 503; the JSON body names each check.
//! - `GET /metrics`: Prometheus text format (see [`crate::metrics`]).
//! - `POST /intake/run` with `{"account": "ID"}`: pull that intake account from the
//!   customer's SFTP server now and answer, once its files ended, with what was fetched
//!   and how each file ended (what `hpke-gateway intake run` prints). 404 names an
//!   unknown account or one without `[intake.accounts.pull]`; 503 when no intake runs.

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
    /// Where `intake run` requests go, when an intake runs.
    pub intake_runs: Option<crate::intake::RunSender>,
}

/// The admin router.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/intake/run", axum::routing::post(intake_run))
        .with_state(admin)
}

/// The body of `POST /intake/run`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    account: String,
}

async fn intake_run(State(admin): State<Admin>, body: axum::body::Bytes) -> Response {
    let problem = |status: StatusCode, message: String| {
        json(status, serde_json::json!({ "error": message }).to_string())
    };
    let Ok(RunBody { account }) = serde_json::from_slice(&body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            r#"the body must be {"account": "<intake account id>"}"#.to_owned(),
        );
    };
    let Some(runs) = &admin.intake_runs else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "this gateway runs no file intake".to_owned(),
        );
    };
    match crate::intake::run_pull(runs, account).await {
        Ok(report) => json(StatusCode::OK, report),
        Err((status, message)) => problem(status, message),
    }
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
