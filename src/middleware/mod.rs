//! The HPKE middleware: a tower [`Layer`] that decrypts encrypted request bodies,
//! hands the plaintext to the inner service, and encrypts its responses to the
//! account's own public key.
//!
//! | encryption headers | encryption enabled | body encrypted | result |
//! |---|---|---|---|
//! | yes | yes | yes | decrypted, forwarded, response encrypted |
//! | yes | yes | no  | 400 `body not encrypted` (4006) |
//! | yes | no  | any | 403 `encryption not enabled` (4005) |
//! | no  | any | yes | 400 `encrypted body without headers` (4007) |
//! | no  | any | no  | passed through untouched |
//!
//! ```
//! use std::convert::Infallible;
//! use axum::body::Body;
//! use http::{Request, Response};
//! use hpke_gateway::middleware::{HpkeLayer, LiveState};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let state = LiveState::new(Default::default(), Default::default());
//! let echo = service_fn(|req: Request<Body>| async move {
//!     Ok::<_, Infallible>(Response::new(req.into_body()))
//! });
//! let svc = HpkeLayer::new(state).layer(echo);
//! // Plaintext passes through untouched.
//! let res = svc.oneshot(Request::new(Body::from("{}"))).await.unwrap();
//! assert_eq!(res.status(), 200);
//! # }
//! ```

pub(crate) mod body;
pub(crate) mod classify;
mod coding;
pub(crate) mod ingress;

pub use ingress::UpgradeRequest;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::IntoResponse as _;
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use crate::HPKE_MEDIA_TYPE;
use crate::accounts::ResponseSealer;
use crate::config;
use crate::envelope::{Kem, TINK_PREFIX_LEN};
use crate::error::{Error, ErrorCode};
use crate::limits::Admission;
use crate::metrics::{Metrics, Mode};
use crate::replay::{Store, Verdict};
pub use crate::state::{KnownAccount, LiveState, SharedState};

use classify::{Negotiation, SNIFF_LEN};

/// The most bytes before a Tink-format ciphertext that hold its encapsulated key: a Tink
/// prefix and X-Wing's `enc`, the longest.
const REPLAY_HEAD_MAX: usize = TINK_PREFIX_LEN + Kem::XWing.enc_len();

impl LiveState {
    /// The sealer for an account that may use encryption.
    fn sealer(&self, account_id: &str) -> Result<ResponseSealer, Error> {
        self.accounts
            .get(account_id)
            .and_then(|a| a.response_sealer())
            .ok_or(Error::EncryptionNotEnabled)
    }

    /// Reading from the client, bounded by the request body timeout.
    async fn receiving<T>(&self, read: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        tokio::time::timeout(self.request_body_timeout, read)
            .await
            .map_err(|_| Error::RequestTimeout)?
    }

    fn sealer_for(&self, req: &Request<Body>) -> Result<ResponseSealer, Error> {
        let id = classify::account_id(
            req.headers(),
            &self.account_header,
            &self.account_header_spelling,
        )?;
        self.sealer(id)
    }
}

// === impl HpkeLayer ===

/// Wraps a service in [`Hpke`].
#[derive(Debug, Clone)]
pub struct HpkeLayer {
    state: SharedState,
    metrics: Arc<Metrics>,
    admission: Arc<Admission>,
    replay: Arc<Store>,
}

impl HpkeLayer {
    /// A layer over the given state, with the default concurrency limit and buffer
    /// budget.
    pub fn new(state: LiveState) -> Self {
        let metrics = Arc::new(Metrics::default());
        let ops = config::Ops::default();
        let admission = Arc::new(Admission::new(
            ops.max_concurrent_requests,
            ops.buffer_budget_bytes,
            ops.buffer_wait,
            metrics.clone(),
        ));
        Self::from_shared(Arc::new(ArcSwap::from_pointee(state)), metrics, admission)
    }

    /// A layer over state shared with other layers (one per worker thread) and
    /// replaced by reloads, recording into `metrics` and drawing on `admission`'s
    /// concurrency slots and buffer budget.
    pub fn from_shared(
        state: SharedState,
        metrics: Arc<Metrics>,
        admission: Arc<Admission>,
    ) -> Self {
        Self {
            state,
            metrics,
            admission,
            replay: Arc::new(Store::memory()),
        }
    }

    /// Keeps the encapsulated keys of accounts with `replay_window_s` in `store` (by
    /// default: in memory, for this layer alone).
    #[must_use]
    pub fn with_replay_store(mut self, store: Arc<Store>) -> Self {
        self.replay = store;
        self
    }
}

impl<S> Layer<S> for HpkeLayer {
    type Service = Hpke<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Hpke {
            inner,
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            admission: self.admission.clone(),
            replay: self.replay.clone(),
        }
    }
}

// === impl Hpke ===

/// The middleware service. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Hpke<S> {
    inner: S,
    state: SharedState,
    metrics: Arc<Metrics>,
    admission: Arc<Admission>,
    replay: Arc<Store>,
}

impl<S> Service<Request<Body>> for Hpke<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The clone is the one left for the next call; this call uses the ready one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.load_full();
        req.extensions_mut()
            .insert(crate::proxy::UpstreamTimeout(state.upstream_timeout));
        let metrics = self.metrics.clone();
        let admission = self.admission.clone();
        // Hop-by-hop fields, underscores, CONNECT and dot segments, once, before
        // anything below reads a header.
        let admitted = ingress::admit(
            &mut req,
            &state.account_header,
            state.underscores_in_headers,
        )
        .map(|(admitted, dropped)| {
            if dropped > 0 {
                metrics.underscore_headers_dropped(dropped);
            }
            admitted
        });
        // The account id, if it is one of the configured accounts (for metric labels:
        // an arbitrary header value must not create a series).
        let known = metrics
            .account_labels()
            .then(|| {
                classify::account_id(
                    req.headers(),
                    &state.account_header,
                    &state.account_header_spelling,
                )
                .ok()
            })
            .flatten()
            .filter(|id| state.accounts.get(id).is_some())
            .map(str::to_owned);
        let negotiation = Negotiation::from_headers(req.headers());
        let mode = if negotiation.encrypted_body || negotiation.encrypted_response {
            Mode::Encrypted
        } else {
            Mode::Plaintext
        };
        let refused = match admitted {
            Err(e) => Some(e),
            Ok(a) if a.upgrade && mode == Mode::Encrypted => Some(Error::UpgradeNotEncryptable),
            Ok(_) => None,
        };
        if let Some(e) = refused {
            let response = labelled(e.into_response(), mode, known, Timings::default());
            return Box::pin(std::future::ready(Ok(response)));
        }
        // Plaintext, the common case, gets a future of its own: `handle`'s holds every
        // encrypted path's state too, and a smaller future is cheaper to allocate and move.
        if mode == Mode::Plaintext {
            return Box::pin(async move {
                let clock = StageClock::default();
                let cx = Cx {
                    state: &state,
                    metrics: &metrics,
                    admission: &admission,
                    replay: None,
                    clock: &clock,
                };
                let response = plaintext_request(cx, inner, req)
                    .await
                    .unwrap_or_else(|e| e.into_response());
                Ok(labelled(response, mode, known, clock.timings()))
            });
        }
        let replay = self.replay.clone();
        Box::pin(async move {
            let clock = StageClock::default();
            let cx = Cx {
                state: &state,
                metrics: &metrics,
                admission: &admission,
                replay: Some(&replay),
                clock: &clock,
            };
            let response = handle(cx, negotiation, inner, req)
                .await
                .unwrap_or_else(|e| e.into_response());
            Ok(labelled(response, mode, known, clock.timings()))
        })
    }
}

/// The response with what the access log and the metrics read from it.
fn labelled(
    mut response: Response<Body>,
    mode: Mode,
    known: Option<String>,
    timings: Timings,
) -> Response<Body> {
    response.extensions_mut().insert(mode);
    response.extensions_mut().insert(timings);
    if let Some(account) = known {
        response.extensions_mut().insert(KnownAccount(account));
    }
    response
}

/// What one request's handling reads: the state it started with, the metrics, and the
/// clock its stages are timed on.
#[derive(Clone, Copy)]
struct Cx<'a> {
    state: &'a LiveState,
    metrics: &'a Metrics,
    admission: &'a Admission,
    /// The seen-key store (none on the plaintext path, which never reads it).
    replay: Option<&'a Store>,
    clock: &'a StageClock,
}

/// Where one request's time went, as a response extension for the access log: each
/// stage that ran, `None` for those that did not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Opening the request envelope.
    pub decrypt: Option<Duration>,
    /// The upstream, to its response head.
    pub upstream: Option<Duration>,
    /// Sealing the response (after its body was collected).
    pub encrypt: Option<Duration>,
}

/// [`Timings`] as they are taken (atomics only because the future must be `Send`).
#[derive(Debug, Default)]
struct StageClock {
    decrypt: StageTime,
    upstream: StageTime,
    encrypt: StageTime,
}

impl StageClock {
    fn timings(&self) -> Timings {
        Timings {
            decrypt: self.decrypt.get(),
            upstream: self.upstream.get(),
            encrypt: self.encrypt.get(),
        }
    }
}

/// One stage's duration in nanoseconds; 0 until it has run.
#[derive(Debug, Default)]
struct StageTime(AtomicU64);

impl StageTime {
    fn record(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.0.store(nanos, Ordering::Relaxed);
    }

    fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

impl std::ops::Deref for Cx<'_> {
    type Target = LiveState;

    fn deref(&self) -> &LiveState {
        self.state
    }
}

impl Cx<'_> {
    /// Calls the upstream service, timing it to the response head.
    async fn forward<S>(&self, mut inner: S, req: Request<Body>) -> Response<Body>
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    {
        let started = Instant::now();
        let response = match inner.call(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let code = response.extensions().get::<ErrorCode>().map(|c| c.0);
        let took = started.elapsed();
        self.metrics.upstream(took, code);
        self.clock.upstream.record(took);
        response
    }
}

async fn handle<S>(
    state: Cx<'_>,
    negotiation: Negotiation,
    inner: S,
    req: Request<Body>,
) -> Result<Response<Body>, Error>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    match (negotiation.encrypted_body, negotiation.encrypted_response) {
        (true, false) => Err(Error::MissingAcceptHeader),
        (true, true) => encrypted_request(state, inner, req).await,
        (false, true) => {
            let sealer = state.sealer_for(&req)?;
            let (parts, body) = req.into_parts();
            let mut held = state.admission.empty_reservation();
            let peeked = state
                .receiving(body::peek(
                    body,
                    1,
                    state.request_body_idle_timeout,
                    state.admission,
                    &mut held,
                ))
                .await?;
            if !peeked.head.is_empty() {
                return Err(Error::MissingContentTypeHeader);
            }
            let req = Request::from_parts(parts, peeked.body);
            forward_for_encrypted_response(state, inner, req, sealer, None).await
        }
        (false, false) => plaintext_request(state, inner, req).await,
    }
}

/// Both headers: decrypt, forward, encrypt the answer.
async fn encrypted_request<S>(
    state: Cx<'_>,
    inner: S,
    req: Request<Body>,
) -> Result<Response<Body>, Error>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let sealer = state.sealer_for(&req)?;
    let limit = state.max_encrypted_body_bytes;
    if content_length(req.headers()).is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge { limit });
    }
    let (mut parts, body) = req.into_parts();
    // The budget is held from the first byte read until hyper has sent the plaintext on.
    let mut held = state.admission.empty_reservation();
    let how = body::client_body(limit, state.request_body_idle_timeout);
    let sealed = state
        .receiving(body::collect_limited(body, how, state.admission, &mut held))
        .await?;
    // Vec -> Bytes -> BytesMut takes over the allocation without copying.
    let sealed = Bytes::from(sealed)
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));

    // With a replay window, the slot is taken before the request enters the store, so
    // that a request the gateway refuses for want of one never enters it (its retry
    // is not a replay, and the refused bytes stay refusable).
    let mut slot = None;
    let plaintext = if sealed.is_empty() {
        if !is_bodyless_method(&parts.method) {
            return Err(Error::BodyNotEncrypted);
        }
        Bytes::new()
    } else {
        if classify::looks_like_text(&sealed[..sealed.len().min(SNIFF_LEN)]) {
            return Err(Error::BodyNotEncrypted);
        }
        // With a replay window, the encapsulated key (after a Tink prefix, if any) is in
        // the body's first bytes; they are kept before the open consumes the body.
        let sealed_len = sealed.len();
        let head = sealer
            .replay_window()
            .map(|_| Bytes::copy_from_slice(&sealed[..sealed_len.min(REPLAY_HEAD_MAX)]));
        let started = Instant::now();
        let opened = state
            .server_keys
            .open_with_suite(sealer.info(), sealed)
            .map_err(|e| {
                tracing::debug!(reason = ?e, "request envelope did not open");
                Error::DecryptionFailed
            });
        let took = started.elapsed();
        state.metrics.decrypted(took);
        state.clock.decrypt.record(took);
        let (plaintext, suite) = opened?;
        // The account's policy: a body sealed with another suite is refused, not
        // forwarded (its plaintext is wiped as the `Bytes` drops).
        if !sealer.allows_request_suite(suite) {
            return Err(Error::SuiteNotAllowed { suite });
        }
        if let (Some(window), Some(head), Some(store)) =
            (sealer.replay_window(), head, state.replay)
        {
            // Only a request that opened gets here: a forgery cannot take a real
            // request's place in the store.
            // Exactly `enc`, wherever the envelope started: the Tink prefix is not bound
            // into HPKE, so a copy with the prefix added or stripped opens too and must
            // be the same entry. The envelope is `enc || ct || tag` to the end.
            let enc_len = suite.kem.enc_len();
            let offset = sealed_len
                .checked_sub(plaintext.len() + suite.aead.tag_len() + enc_len)
                .ok_or(Error::DecryptionFailed)?;
            let enc = head
                .get(offset..offset + enc_len)
                .ok_or(Error::DecryptionFailed)?;
            let scope = format!("tink:{}", String::from_utf8_lossy(sealer.info()));
            slot = Some(state.admission.request_slot()?);
            match store.enter(&scope, enc, window, &parts.method).await {
                Verdict::Fresh | Verdict::Unchecked => {}
                Verdict::Replayed => return Err(Error::Replayed),
                Verdict::StoreUnavailable => return Err(Error::ReplayStoreUnavailable),
                Verdict::Full | Verdict::DateOutside => return Err(Error::ReplayCacheFull),
            }
        }
        plaintext
    };

    parts
        .headers
        .insert(header::CONTENT_TYPE, state.plaintext_content_type.clone());
    parts
        .headers
        .insert(header::CONTENT_LENGTH, plaintext.len().into());
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.remove(header::CONTENT_ENCODING);
    let req = Request::from_parts(parts, body::held_buffer(plaintext, held));
    forward_for_encrypted_response(state, inner, req, sealer, slot).await
}

/// Forwards a request whose answer is to be encrypted, and encrypts it.
async fn forward_for_encrypted_response<S>(
    state: Cx<'_>,
    inner: S,
    mut req: Request<Body>,
    sealer: ResponseSealer,
    slot: Option<crate::limits::Slot>,
) -> Result<Response<Body>, Error>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    // Held through sealing: the slot bounds the work in flight, not only the upstream's.
    // (Taken already when the request had to hold it to enter the replay store.)
    let _slot = match slot {
        Some(slot) => slot,
        None => state.admission.request_slot()?,
    };
    let headers = req.headers_mut();
    headers.insert(header::ACCEPT, state.plaintext_content_type.clone());
    // The body is encrypted whole; ask for it unencoded and entire, so the client gets
    // exactly what it decrypts.
    headers.remove(header::ACCEPT_ENCODING);
    headers.remove(header::RANGE);
    headers.remove(header::IF_RANGE);
    let head = req.method() == Method::HEAD;
    let response = state.forward(inner, req).await;
    if response.extensions().get::<ErrorCode>().is_some() {
        // The gateway's own answer (upstream down, timeout...): plaintext JSON.
        return Ok(response);
    }
    seal_response(state, response, &sealer, head).await
}

/// Seals an upstream answer for a client that asked for encryption. No byte of the
/// upstream's body reaches the client unsealed, whatever the status: a status that
/// carries no body (204, 205, 304) goes out without one (a body the upstream sent
/// anyway is dropped and counted), an interim or switching answer (1xx, 101) is a 502,
/// and everything else is sealed or refused with the gateway's own JSON error.
async fn seal_response(
    state: Cx<'_>,
    response: Response<Body>,
    sealer: &ResponseSealer,
    head: bool,
) -> Result<Response<Body>, Error> {
    let (mut parts, body) = response.into_parts();
    let status = parts.status;
    if status.is_informational() {
        return Err(Error::BadUpstreamResponse(
            format!("the upstream answered {status}, which cannot be encrypted").into(),
        ));
    }
    // Read before the headers go; checked only where a body is sealed (a 304 or a HEAD
    // answer may well name a coding the gateway cannot decode: it sends no body).
    let codings = coding::codings(&parts.headers);
    let headers = &mut parts.headers;
    // These describe the plaintext representation, not the envelope the client receives.
    for name in [
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
        header::ETAG,
        HeaderName::from_static("digest"),
        HeaderName::from_static("content-md5"),
    ] {
        headers.remove(name);
    }
    headers.append(header::VARY, HeaderValue::from_static("Accept"));
    if matches!(
        status,
        StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT | StatusCode::NOT_MODIFIED
    ) {
        if !http_body::Body::is_end_stream(&body)
            && http_body::Body::size_hint(&body).exact() != Some(0)
        {
            tracing::debug!(%status, "dropped a body the upstream sent with a bodyless status");
            state.metrics.upstream_body_dropped();
        }
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        if status == StatusCode::RESET_CONTENT {
            // RFC 9110 §15.3.6: a 205 says it has no content with a zero length.
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    if head {
        // What a GET would answer: the envelope's type and length, without the body.
        let plain_len = if codings.as_ref().is_ok_and(Vec::is_empty) {
            content_length(headers)
        } else {
            // The decoded length is unknown without the body.
            None
        };
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(HPKE_MEDIA_TYPE),
        );
        headers.remove(header::CONTENT_LENGTH);
        if let Some(n) = plain_len {
            let sealed = n
                .checked_add(sealer.header_len() as u64 + crate::envelope::TAG_LEN as u64)
                .ok_or_else(|| {
                    Error::BadUpstreamResponse(
                        format!("impossible Content-Length {n} on a HEAD answer").into(),
                    )
                })?;
            headers.insert(header::CONTENT_LENGTH, sealed.into());
        }
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let codings = codings?;
    let limit = state.max_response_body_bytes;
    let mut held = state.admission.empty_reservation();
    let how = body::answer_body(limit, state.upstream_timeout, sealer.header_len());
    let collect = body::collect_limited(body, how, state.admission, &mut held);
    let mut sealed = tokio::time::timeout(state.upstream_timeout, collect)
        .await
        .map_err(|_| Error::UpstreamTimeout)?
        .map_err(answer_not_buffered)?;
    if !codings.is_empty() {
        let mut decoded_held = state.admission.empty_reservation();
        sealed = coding::decode(
            &codings,
            sealed,
            sealer.header_len(),
            limit,
            state.admission,
            &mut decoded_held,
        )
        .await
        .map_err(answer_not_buffered)?;
        // The compressed buffer is gone; the decoded one is what stays counted.
        held = decoded_held;
    }
    let started = Instant::now();
    sealer
        .seal_in_place(&mut sealed)
        .map_err(|e| Error::Internal(e.into()))?;
    let took = started.elapsed();
    state.metrics.encrypted(took);
    state.clock.encrypt.record(took);
    let headers = &mut parts.headers;
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(HPKE_MEDIA_TYPE),
    );
    headers.insert(header::CONTENT_LENGTH, sealed.len().into());
    Ok(Response::from_parts(parts, body::held_buffer(sealed, held)))
}

/// The upstream has already acted on the request when its answer cannot be buffered:
/// a 503 with `Retry-After` would invite a client to send a POST again. A 502 says the
/// answer was lost.
fn answer_not_buffered(e: Error) -> Error {
    match e {
        Error::BufferBudgetExhausted => {
            Error::BadUpstreamResponse("no buffer budget left for the upstream's answer".into())
        }
        other => other,
    }
}

/// No encryption headers: refuse an envelope, pass anything else through untouched.
///
/// A body of up to `request_buffer_bytes` is received whole before the request takes
/// a concurrency slot, so a client that sends slowly holds no slot; a larger one is
/// streamed on once its first `request_buffer_bytes` are in, each further frame within
/// the idle timeout.
async fn plaintext_request<S>(
    state: Cx<'_>,
    inner: S,
    req: Request<Body>,
) -> Result<Response<Body>, Error>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let (parts, body) = req.into_parts();
    let want = usize::try_from(state.request_buffer_bytes)
        .unwrap_or(usize::MAX)
        .max(SNIFF_LEN);
    let mut held = state.admission.empty_reservation();
    let peeked = state
        .receiving(body::peek(
            body,
            want,
            state.request_body_idle_timeout,
            state.admission,
            &mut held,
        ))
        .await?;
    let total_at_least = if peeked.complete {
        peeked.head.len()
    } else {
        let declared = content_length(&parts.headers).unwrap_or(0);
        peeked
            .head
            .len()
            .max(usize::try_from(declared).unwrap_or(usize::MAX))
    };
    if classify::looks_encrypted(
        &peeked.head[..peeked.head.len().min(SNIFF_LEN)],
        total_at_least,
        &parts.headers,
        &state.server_keys,
    ) {
        return Err(Error::EncryptedBodyWithoutHeaders);
    }
    let _slot = state.admission.request_slot()?;
    let body = if held.bytes() == 0 {
        peeked.body
    } else {
        Body::new(body::Held::new(peeked.body, held))
    };
    let req = Request::from_parts(parts, body);
    Ok(state.forward(inner, req).await)
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Methods whose requests normally carry no body: with both headers and an empty body
/// they are treated as asking only for an encrypted response.
fn is_bodyless_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
    )
}
