//! Request limits: the size of the header section (431, code 4012), checked before any
//! other work; the number of requests with the upstream across all workers (503 with
//! `Retry-After`, code 5004); and the memory budget for buffered bodies (503 with
//! `Retry-After`, code 5005). A refused request costs no upstream call.
//!
//! A request takes its concurrency slot ([`Admission::request_slot`]) only once it is
//! ready for the upstream: after its body has arrived when the gateway buffers it. A
//! client that sends its body slowly therefore holds a connection and a timer, never a
//! slot that other clients need (the `request_body_*` timeouts bound how long).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::IntoResponse as _;
use http::{HeaderMap, Request, Response};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::error::Error;
use crate::metrics::Metrics;

/// Adds [`Limits`] (the header section's size) around a service.
#[derive(Debug, Clone)]
pub struct LimitsLayer {
    max_header_bytes: usize,
}

impl LimitsLayer {
    /// At most `max_header_bytes` of headers (see [`header_bytes`]).
    pub fn new(max_header_bytes: usize) -> Self {
        Self { max_header_bytes }
    }
}

/// The budgets requests draw from, shared by all workers: slots for requests with the
/// upstream, and bytes of bodies held in memory.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    /// The buffer budget in KiB units (a semaphore counts at most `u32` per acquire).
    budget: Arc<Semaphore>,
    budget_kib: u64,
    budget_wait: Duration,
    metrics: Arc<Metrics>,
}

/// A request's place among `max_concurrent_requests`, and its count in the in-flight
/// gauge, until dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _in_flight: InFlight,
}

/// Bytes of the buffer budget held until dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
    gauge: Gauge,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn absorb(&mut self, mut other: Reservation) {
        if let Some(p) = other.permit.take() {
            match &mut self.permit {
                Some(mine) => mine.merge(p),
                None => self.permit = Some(p),
            }
        }
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gauge
            .dec_by(i64::try_from(self.bytes).unwrap_or(i64::MAX));
    }
}

const KIB: u64 = 1024;

impl Admission {
    /// `max_concurrent_requests` slots and `budget_bytes` of buffer budget; a
    /// reservation waits at most `budget_wait` for bytes to come free.
    pub fn new(
        max_concurrent_requests: usize,
        budget_bytes: u64,
        budget_wait: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let budget_kib = budget_bytes
            .div_ceil(KIB)
            .min(Semaphore::MAX_PERMITS as u64);
        Self {
            slots: Arc::new(Semaphore::new(
                max_concurrent_requests.min(Semaphore::MAX_PERMITS),
            )),
            budget: Arc::new(Semaphore::new(usize::try_from(budget_kib).unwrap_or(0))),
            budget_kib,
            budget_wait,
            metrics,
        }
    }

    /// A slot for a request going to the upstream, or 503/5004 at the limit.
    pub fn request_slot(&self) -> Result<Slot, Error> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.metrics.overloaded();
            return Err(Error::Overloaded);
        };
        Ok(Slot {
            _permit: permit,
            _in_flight: InFlight::new(self.metrics.in_flight().clone()),
        })
    }

    /// An empty reservation, to grow with [`Admission::grow`].
    pub fn empty_reservation(&self) -> Reservation {
        Reservation {
            permit: None,
            bytes: 0,
            gauge: self.metrics.buffered_body_bytes().clone(),
        }
    }

    /// Grows `held` by `bytes`, waiting up to the configured time for them to come
    /// free; 503/5005 if they do not (or can never: more than the whole budget).
    pub async fn grow(&self, held: &mut Reservation, bytes: u64) -> Result<(), Error> {
        self.grow_waiting(held, bytes, self.budget_wait).await
    }

    /// [`Admission::grow`], waiting up to `wait` instead of the configured time: an
    /// upstream's answer, which the upstream has already spent work on, may wait longer
    /// for bytes to come free than a new request.
    pub async fn grow_waiting(
        &self,
        held: &mut Reservation,
        bytes: u64,
        wait: Duration,
    ) -> Result<(), Error> {
        if bytes == 0 {
            return Ok(());
        }
        let kib = bytes.div_ceil(KIB);
        let refuse = || {
            self.metrics.buffer_budget_rejected();
            Error::BufferBudgetExhausted
        };
        if kib + held.bytes.div_ceil(KIB) > self.budget_kib {
            return Err(refuse());
        }
        let kib = u32::try_from(kib).map_err(|_| refuse())?;
        let permit = match self.budget.clone().try_acquire_many_owned(kib) {
            Ok(p) => p,
            Err(_) => tokio::time::timeout(wait, self.budget.clone().acquire_many_owned(kib))
                .await
                .map_err(|_| refuse())?
                .map_err(|_| refuse())?,
        };
        self.metrics
            .buffered_body_bytes()
            .inc_by(i64::try_from(bytes).unwrap_or(i64::MAX));
        held.absorb(Reservation {
            permit: Some(permit),
            bytes,
            gauge: self.metrics.buffered_body_bytes().clone(),
        });
        Ok(())
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
        Box::pin(self.inner.call(req))
    }
}

/// Counts a request in the in-flight gauge for as long as it lives.
#[derive(Debug)]
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
