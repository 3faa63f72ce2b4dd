//! Request limits the gateway enforces before any other work: the size of the header
//! section (431, code 4012) and the number of requests in flight across all workers
//! (503 with `Retry-After`, code 5004). A refused request costs no upstream call.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::IntoResponse as _;
use http::{HeaderMap, Request, Response};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::error::Error;
use crate::metrics::Metrics;

/// Adds [`Limits`] around a service. Clones share one concurrency budget.
#[derive(Debug, Clone)]
pub struct LimitsLayer {
    max_header_bytes: usize,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl LimitsLayer {
    /// At most `max_header_bytes` of headers (see [`header_bytes`]) and
    /// `max_concurrent_requests` requests in flight.
    pub fn new(
        max_header_bytes: usize,
        max_concurrent_requests: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            max_header_bytes,
            permits: Arc::new(Semaphore::new(
                max_concurrent_requests.min(Semaphore::MAX_PERMITS),
            )),
            metrics,
        }
    }
}

impl<S> Layer<S> for LimitsLayer {
    type Service = Limits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limits {
            inner,
            layer: self.clone(),
        }
    }
}

/// The limits service. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Limits<S> {
    inner: S,
    layer: LimitsLayer,
}

/// Bytes of a header section as sent in HTTP/1.1: each field's name and value plus
/// `": "` and CRLF.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

impl<S> Service<Request<Body>> for Limits<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let limit = self.layer.max_header_bytes;
        if header_bytes(req.headers()) > limit {
            let response = Error::HeadersTooLarge { limit }.into_response();
            return Box::pin(async move { Ok(response) });
        }
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            self.layer.metrics.overloaded();
            let response = Error::Overloaded.into_response();
            return Box::pin(async move { Ok(response) });
        };
        let in_flight = InFlight::new(self.layer.metrics.in_flight().clone());
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await;
            // Also on a dropped future (the client went away): the guard counts down.
            drop((in_flight, permit));
            response
        })
    }
}

/// Counts a request in the in-flight gauge for as long as it lives.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
