//! Oblivious HTTP (RFC 9458), on the same server keys as the Tink-format envelope.
//!
//! With `[ohttp] enabled = true`, `GET /.well-known/ohttp-keys` serves the key
//! configurations (RFC 9540, `application/ohttp-keys`): one per server key that decrypts
//! now, the primary first, each under its `ohttp_key_id` and offering HKDF-SHA256 with
//! every AEAD the envelope has (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305), X-Wing keys
//! included. Its `Cache-Control` follows `/.well-known/hpke-keys`'s rule: `keys_max_age_s`
//! or, if sooner, the first published key's `not_after`, so rotation and overlap work as
//! for the envelope. The encapsulation itself is `hpke_envelope::ohttp`.

use std::time::SystemTime;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

mod chunked;
pub(crate) mod incremental;
mod inner;

use crate::envelope::ohttp;
use crate::error::Error;
use crate::state::SharedState;

/// The path of the key configurations (RFC 9540 §3).
pub const KEYS_PATH: &str = "/.well-known/ohttp-keys";

/// The handler for [`KEYS_PATH`].
pub async fn keys(State(shared): State<SharedState>) -> Response {
    let state = shared.load();
    let now = SystemTime::now();
    let published = state.server_keys().published(now);
    if published.is_empty() {
        return Error::Internal("no server key is valid now: nothing to publish".into())
            .into_response();
    }
    let configs: Vec<Vec<u8>> = published
        .iter()
        .map(|k| ohttp::key_config(k.ohttp_key_id(), &k.public_key(), &ohttp::AEADS))
        .collect();
    let max_age = crate::publish::max_age(state.keys_max_age(), &published, now);
    let mut response = ohttp::key_configs(&configs).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(ohttp::KEYS_MEDIA_TYPE),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
            .unwrap_or(HeaderValue::from_static("no-cache")),
    );
    response
}

/// The service inner requests go to: the proxy to the upstream (an in-memory one in the
/// benches).
pub type Upstream = tower::util::BoxCloneSyncService<
    http::Request<axum::body::Body>,
    http::Response<axum::body::Body>,
    std::convert::Infallible,
>;

/// What the gateway resource needs: the live state and a proxy to the upstream.
#[derive(Clone)]
pub struct Resource {
    pub(crate) shared: SharedState,
    pub(crate) proxy: Upstream,
    /// `scheme://authority` origins an inner request may name (default: the upstream's).
    pub(crate) allowed: std::sync::Arc<[String]>,
    /// The replay defence all workers share.
    pub(crate) replay: crate::replay::window::Replay,
    /// Where outcomes are counted (none in benches).
    pub(crate) metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// The concurrency slots and buffer budget requests draw from (the gateway's, shared
    /// with the Tink-format path).
    pub(crate) admission: std::sync::Arc<crate::limits::Admission>,
}

impl Resource {
    /// The resource over `upstream`, accepting inner requests for `allowed` origins
    /// (`scheme://host[:port]`, lower case, no default port) with `replay`'s defence.
    pub fn new(
        shared: SharedState,
        upstream: Upstream,
        allowed: Vec<String>,
        replay: crate::replay::window::Replay,
    ) -> Self {
        let ops = crate::config::Ops::default();
        let admission = crate::limits::Admission::new(
            ops.max_concurrent_requests,
            ops.buffer_budget_bytes,
            ops.buffer_wait,
            std::sync::Arc::default(),
        );
        Self {
            shared,
            proxy: upstream,
            allowed: allowed.into(),
            replay,
            metrics: None,
            admission: std::sync::Arc::new(admission),
        }
    }
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

/// The method and path (without its query) of a forwarded inner request, as a response
/// extension: the access log writes them at debug level only (an OHTTP client expects
/// the gateway to keep little of what it sees).
#[derive(Debug, Clone)]
pub struct InnerTarget {
    /// The inner request's method.
    pub method: http::Method,
    /// Its path, without the query.
    pub path: String,
}

impl InnerTarget {
    fn of<B>(request: &http::Request<B>) -> Self {
        Self {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
        }
    }
}

/// RFC 9458 §6.5.2's problem type for a `Date` outside the replay window.
pub const DATE_PROBLEM: &str = "https://iana.org/assignments/http-problem-types#date";

/// RFC 9458 §5.3's problem type for an unknown key id or unsupported algorithms.
pub const KEY_PROBLEM: &str = "https://iana.org/assignments/http-problem-types#ohttp-key";

/// An answer outside the encapsulation (the request could not be decapsulated):
/// `application/problem+json` (RFC 9457), saying no more than RFC 9458 §5.2 asks.
fn outer_problem(status: http::StatusCode, problem_type: Option<&str>, title: &str) -> Response {
    let body = match problem_type {
        Some(t) => serde_json::json!({ "type": t, "title": title }),
        None => serde_json::json!({ "title": title }),
    };
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// RFC 9458 §5.3: an unknown key id or unsupported algorithms, one answer for all.
fn unknown_key() -> (Response, &'static str) {
    (
        outer_problem(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            Some(KEY_PROBLEM),
            "unsupported key or algorithms",
        ),
        "unknown_key",
    )
}

/// The gateway resource: `POST` of `message/ohttp-req`. Failures before the request is
/// decapsulated are answered in the clear (400, 415, 413, 422 with RFC 9458's key problem
/// type); every answer after it, the upstream's and the gateway's own (a target outside
/// the allowlist is a 403), is a Binary HTTP response sealed to the client.
pub async fn gateway(
    State(resource): State<Resource>,
    req: http::Request<axum::body::Body>,
) -> Response {
    let (response, outcome) = answer(&resource, req).await;
    if let Some(metrics) = &resource.metrics {
        metrics.ohttp(outcome);
    }
    response
}

/// The answer to one request, and its outcome for `hpke_gateway_ohttp_requests_total`.
async fn answer(
    resource: &Resource,
    req: http::Request<axum::body::Body>,
) -> (Response, &'static str) {
    use crate::middleware::body::{client_body, collect_limited};
    use http::StatusCode;
    let media = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    let is = |want: &str| media.is_some_and(|m| m.eq_ignore_ascii_case(want));
    let chunked = is(ohttp::chunked::REQUEST_MEDIA_TYPE);
    if !chunked && !is(ohttp::REQUEST_MEDIA_TYPE) {
        return (
            outer_problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                "an encapsulated request is message/ohttp-req or message/ohttp-chunked-req",
            ),
            "bad_media_type",
        );
    }
    // A slot among `max_concurrent_requests`, as for the Tink format, held until the
    // answer is sealed (for a chunked one, until its last chunk is sent).
    let Ok(slot) = resource.admission.request_slot() else {
        let mut busy = outer_problem(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "too many concurrent requests, retry later",
        );
        busy.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return (busy, "overloaded");
    };
    if chunked {
        return chunked::answer(resource, req, slot).await;
    }
    let state = resource.shared.load_full();
    // The body is held whole: it draws on the buffer budget like a Tink-format body.
    let limit = state.max_encrypted_body_bytes;
    let mut held = resource.admission.empty_reservation();
    let how = client_body(limit, state.request_body_idle_timeout);
    let read = tokio::time::timeout(
        state.request_body_timeout,
        collect_limited(req.into_body(), how, &resource.admission, &mut held),
    )
    .await
    .unwrap_or(Err(Error::RequestTimeout));
    let body = match read {
        Ok(body) => body,
        Err(Error::RequestTimeout) => {
            return (
                outer_problem(StatusCode::REQUEST_TIMEOUT, None, "request body timeout"),
                "timeout",
            );
        }
        Err(Error::PayloadTooLarge { .. }) => {
            return (
                outer_problem(StatusCode::PAYLOAD_TOO_LARGE, None, "request too large"),
                "too_large",
            );
        }
        Err(Error::BufferBudgetExhausted) => {
            let mut busy = outer_problem(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "the gateway is busy buffering other requests, retry later",
            );
            busy.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return (busy, "overloaded");
        }
        Err(_) => {
            return (
                outer_problem(StatusCode::BAD_REQUEST, None, "request body failed"),
                "malformed",
            );
        }
    };
    let header = match ohttp::parse_header(&body) {
        Ok(header) => header,
        Err(ohttp::Error::Unsupported) => {
            return unknown_key();
        }
        Err(_) => {
            return (
                outer_problem(StatusCode::BAD_REQUEST, None, "malformed encapsulation"),
                "malformed",
            );
        }
    };
    let Some(key) = state
        .server_keys()
        .by_ohttp_key_id(header.key_id, SystemTime::now())
    else {
        return unknown_key();
    };
    let (inner, response_key) = match ohttp::open_request(key.private_key(), &body) {
        Ok(opened) => opened,
        Err(ohttp::Error::Unsupported) => {
            return unknown_key();
        }
        Err(ohttp::Error::Malformed) => {
            return (
                outer_problem(StatusCode::BAD_REQUEST, None, "malformed encapsulation"),
                "malformed",
            );
        }
        Err(_) => {
            return (
                outer_problem(StatusCode::BAD_REQUEST, None, "decryption failed"),
                "decryption_failed",
            );
        }
    };
    let inner::Forwarded {
        answer,
        outcome,
        target,
        held: answer_held,
    } = inner::forward(resource, &state, &inner, response_key.enc()).await;
    drop((held, slot));
    let mut encoded = Vec::new();
    let sealed = answer
        .write_bhttp(bhttp::Mode::KnownLength, &mut encoded)
        .ok()
        .and_then(|()| response_key.seal(&encoded).ok());
    let Some(sealed) = sealed else {
        return (
            outer_problem(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error"),
            "internal",
        );
    };
    // The answer's budget stays held until its sealed copy has been sent.
    let mut response = crate::middleware::body::held_buffer(sealed, answer_held).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(ohttp::RESPONSE_MEDIA_TYPE),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(target) = target {
        response.extensions_mut().insert(target);
    }
    (response, outcome)
}
