//! Wiring: the routers, and running them until a shutdown signal.
//!
//! `run` serves with one single-threaded runtime per core, each with its own listening
//! socket on the same address (`SO_REUSEPORT`: the kernel spreads connections) and its own
//! upstream connection pool, as nginx runs one worker per core. A request then stays on
//! one thread from accept to upstream and back, with no cross-thread wake-ups. The keys
//! and accounts are shared and swapped whole by a reload; the metrics and the
//! concurrency budget are shared by all workers. The main thread runs the admin
//! listener, the reloader and the signal handlers.

mod accept;
mod signals;
mod workers;

pub use accept::{
    ConnectionLimits, ConnectionTimeouts, MAX_HEADER_FIELDS, MIN_READ_BUFFER, serve_connections,
};
pub use signals::shutdown_signal;
pub(crate) use signals::shutdown_signal_installed;
pub use workers::run;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::routing::get;
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
    ohttp: Option<crate::config::Ohttp>,
    replay: Arc<crate::replay::Store>,
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
        let ohttp = config.ohttp.clone();
        let replay = Arc::new(crate::replay::Store::from_config(&config.replay));
        let shared = Arc::new(ArcSwap::from_pointee(LiveState::from_config(config)));
        Ok(Self {
            shared,
            metrics,
            limits,
            admission,
            proxy,
            tls,
            intake,
            ohttp,
            replay,
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
        let ohttp_gateway = self.ohttp.as_ref().map(|ohttp| {
            Router::new()
                .route(&ohttp.path, axum::routing::post(crate::ohttp::gateway))
                .with_state(crate::ohttp::Resource {
                    shared: self.shared.clone(),
                    proxy: tower::util::BoxCloneSyncService::new(proxy.clone()),
                    allowed: ohttp.allowed_targets.clone().into(),
                    replay: crate::replay::window::Replay::new(
                        ohttp.replay_window,
                        ohttp.require_date,
                        self.replay.clone(),
                    ),
                    metrics: Some(self.metrics.clone()),
                    admission: self.admission.clone(),
                })
        });
        let hpke = HpkeLayer::from_shared(
            self.shared.clone(),
            self.metrics.clone(),
            self.admission.clone(),
        )
        .with_replay_store(self.replay.clone())
        .layer(proxy);
        let pgp_keys = Router::new()
            .route(publish::PGP_PATH, get(publish::pgp_keys))
            .with_state(PgpKeysState {
                intake: self.intake.clone(),
                shared: self.shared.clone(),
            });
        let mut routes = Router::new().route(publish::PATH, get(publish::hpke_keys));
        if self.ohttp.is_some() {
            routes = routes.route(crate::ohttp::KEYS_PATH, get(crate::ohttp::keys));
        }
        let routes = routes
            .fallback_service(hpke)
            .with_state(self.shared.clone())
            .merge(pgp_keys);
        let routes = match ohttp_gateway {
            Some(gateway) => routes.merge(gateway),
            None => routes,
        };
        let guarded = self.limits.layer(routes);
        Router::new().fallback_service(
            AccessLogLayer::new(self.shared.clone(), self.metrics.clone()).layer(guarded),
        )
    }

    /// The admin router (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_router(
        &self,
        config_upstream: &http::Uri,
        connect_timeout: Duration,
        intake_runs: Option<crate::intake::RunSender>,
    ) -> Router {
        admin::router(Admin {
            shared: self.shared.clone(),
            metrics: self.metrics.clone(),
            upstream: config_upstream.clone(),
            connect_timeout,
            intake_runs,
        })
    }
}

/// The gateway's public router for a configuration, for tests and embedding.
pub fn app(config: Config) -> Result<Router, StartError> {
    Ok(Gateway::new(config)?.router())
}
