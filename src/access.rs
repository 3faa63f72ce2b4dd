//! One log line per request, and a request id that follows the request upstream.
//!
//! The id is the client's `X-Request-Id` when it sends a usable one, otherwise 32 fresh
//! hex digits; the upstream sees it, and the response carries it back. The line
//! (target `hpke_gateway::access`, level info) names the request id, method, path (never
//! the query, which may hold personal data such as an email), account, status, the
//! gateway's error code if it answered itself, the duration to the response head (`ms`),
//! and the stages that ran within it: `decrypt_ms`, `upstream_ms` (to the upstream's
//! response head) and `encrypt_ms`. No body, key or header value other than the account
//! id is ever logged. For an Oblivious HTTP request, a second line at debug level names
//! the inner request's method and path (never at info: an OHTTP client expects the
//! gateway to keep little of what it sees).
//!
//! The same layer counts the request in the [`Metrics`] and the body bytes both ways.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::error::ErrorCode;
use crate::metrics::{Counted, Metrics, Mode};
use crate::middleware::{KnownAccount, Timings};
use crate::state::SharedState;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds [`AccessLog`] around a service.
#[derive(Debug, Clone)]
pub struct AccessLogLayer {
    state: SharedState,
    metrics: Arc<Metrics>,
}

impl AccessLogLayer {
    /// A layer that logs the account id found in the live state's account header (so a
    /// reload that renames it applies here too) and counts each request in `metrics`.
    pub fn new(state: SharedState, metrics: Arc<Metrics>) -> Self {
        Self { state, metrics }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog {
            inner,
            state: self.state.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The access log service. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
    state: SharedState,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request<Body>> for AccessLog<S>
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
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let (parts, body) = req.into_parts();
        let body = Body::new(Counted::new(body, metrics.request_bytes()));
        let mut req = Request::from_parts(parts, body);
        let id = request_id(&req);
        req.headers_mut().insert(REQUEST_ID, id.clone());
        // The line's fields are copied only when the line will be written.
        let logged =
            tracing::enabled!(target: "hpke_gateway::access", tracing::Level::INFO).then(|| {
                let account = req
                    .headers()
                    .get(self.state.load().account_header())
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| crate::config::valid_account_id(v))
                    .unwrap_or("-")
                    .to_owned();
                (req.method().clone(), req.uri().path().to_owned(), account)
            });
        let future = self.inner.call(req);
        Box::pin(async move {
            let Ok(response) = future.await;
            let code = response.extensions().get::<ErrorCode>().map_or(0, |c| c.0);
            let mode = response
                .extensions()
                .get::<Mode>()
                .copied()
                .unwrap_or(Mode::Plaintext);
            let elapsed = started.elapsed();
            let status = response.status().as_u16();
            metrics.request(
                mode,
                status,
                code,
                Some(
                    response
                        .extensions()
                        .get::<KnownAccount>()
                        .map_or("other", |a| a.0.as_str()),
                ),
                elapsed,
            );
            let (parts, body) = response.into_parts();
            let body = Body::new(Counted::new(body, metrics.response_bytes()));
            let mut response = Response::from_parts(parts, body);
            if let Some((method, path, account)) = logged {
                let timings = response
                    .extensions()
                    .get::<Timings>()
                    .copied()
                    .unwrap_or_default();
                let ms = |d: Option<Duration>| d.map(millis);
                tracing::info!(
                    target: "hpke_gateway::access",
                    request_id = id.to_str().unwrap_or("-"),
                    %method,
                    path,
                    account,
                    status,
                    code,
                    ms = millis(elapsed),
                    decrypt_ms = ms(timings.decrypt),
                    upstream_ms = ms(timings.upstream),
                    encrypt_ms = ms(timings.encrypt),
                );
                // Oblivious HTTP: what the inner request asked for, at debug level only.
                if let Some(inner) = response.extensions().get::<crate::ohttp::InnerTarget>() {
                    tracing::debug!(
                        target: "hpke_gateway::access",
                        request_id = id.to_str().unwrap_or("-"),
                        inner_method = %inner.method,
                        inner_path = inner.path,
                        "oblivious request forwarded",
                    );
                }
            }
            response.headers_mut().insert(REQUEST_ID, id);
            Ok(response)
        })
    }
}

/// A duration in milliseconds, rounded to the microsecond: `ms=0.419`, not
/// `ms=0.41863300000000003` (the shortest form of the rounded value is what is printed).
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The client's id if it is short visible ASCII, else a fresh one.
fn request_id(req: &Request<Body>) -> HeaderValue {
    if let Some(v) = req.headers().get(&REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(u8::is_ascii_graphic)
    {
        return v.clone();
    }
    fresh_id()
}

/// 128 random bits in 32 hex digits, from `rand`'s thread-local ChaCha generator (seeded
/// from the OS, no system call per request): ids reveal nothing about other requests.
fn fresh_id() -> HeaderValue {
    use rand::Rng as _;
    let id: u128 = rand::thread_rng().r#gen();
    HeaderValue::from_str(&format!("{id:032x}")).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_32_hex_digits_and_distinct() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| fresh_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let s = id.to_str().unwrap();
            assert_eq!(s.len(), 32, "{s}");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
    }

    #[test]
    fn durations_are_logged_to_three_decimals() {
        assert_eq!(millis(Duration::from_nanos(418_633)).to_string(), "0.419");
        assert_eq!(
            millis(Duration::from_nanos(1_234_567_890)).to_string(),
            "1234.568"
        );
        assert_eq!(millis(Duration::from_millis(3)).to_string(), "3");
        assert_eq!(millis(Duration::from_nanos(400)).to_string(), "0");
    }

    #[test]
    fn a_usable_client_id_is_kept_and_a_bad_one_replaced() {
        let req = |v: &'static str| {
            Request::builder()
                .header(REQUEST_ID, v)
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(request_id(&req("abc-123")), "abc-123");
        assert_ne!(request_id(&req("has space")), "has space");
        assert_eq!(request_id(&req("has space")).len(), 32);
    }
}
