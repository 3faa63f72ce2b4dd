//! The one place where a failure becomes an HTTP response.
//!
//! Every answer the gateway itself gives (as opposed to what the upstream answers)
//! is built here, in the body shape the vendor's API already uses:
//!
//! ```json
//! {"status":"fail","error":"decryption failed","code":4008}
//! ```
//!
//! Codes are API: they are never renamed or reused. The README's error table lists
//! them. Upstream and internal detail goes to the log, never into the body.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::HPKE_MEDIA_TYPE;

/// A failure the gateway answers itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An encryption header was sent without the account id header.
    #[error("missing {header} header")]
    MissingAccountId {
        /// The account header's name, as the configuration spells it.
        header: String,
    },
    /// The account id header is not a usable account id.
    #[error("invalid {header} header")]
    InvalidAccountId {
        /// The account header's name, as the configuration spells it.
        header: String,
    },
    /// `Content-Type: application/octet-stream+hpke` without `Accept: application/octet-stream+hpke`.
    #[error("missing header Accept: {HPKE_MEDIA_TYPE} (required with an encrypted body)")]
    MissingAcceptHeader,
    /// `Accept: application/octet-stream+hpke` on a request with a body, without the matching Content-Type.
    #[error(
        "missing header Content-Type: {HPKE_MEDIA_TYPE} (required with Accept: {HPKE_MEDIA_TYPE} on a request with a body)"
    )]
    MissingContentTypeHeader,
    /// Encryption headers sent, but encryption is not enabled for this account.
    #[error("encryption is not enabled for this account")]
    EncryptionNotEnabled,
    /// Encryption headers sent with a body that is not encrypted.
    #[error("the request body is not encrypted")]
    BodyNotEncrypted,
    /// An encrypted body sent without the encryption headers.
    #[error("the request body is encrypted but the encryption headers are missing")]
    EncryptedBodyWithoutHeaders,
    /// The envelope did not open. One message for every cause.
    #[error("decryption failed")]
    DecryptionFailed,
    /// The encrypted body is larger than the configured limit.
    #[error("the encrypted request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request body could not be read from the client.
    #[error("the request body could not be read")]
    BadRequestBody,
    /// The client did not send the body in time.
    #[error("the request body was not received in time")]
    RequestTimeout,
    /// The request's header section is larger than the configured limit.
    #[error("the request headers are larger than {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The gateway is at its concurrent request limit; the client should retry later.
    #[error("too many concurrent requests, retry later")]
    Overloaded,
    /// The gateway's memory budget for buffered bodies is spent; the client should
    /// retry later.
    #[error("the gateway is busy buffering other requests, retry later")]
    BufferBudgetExhausted,
    /// The `Connection` header names an end-to-end header the gateway acts on.
    #[error("the Connection header may not name {name}")]
    ConnectionNamesEndToEnd {
        /// The header named.
        name: http::HeaderName,
    },
    /// A method the gateway does not forward (CONNECT).
    #[error("method {method} is not allowed")]
    MethodNotAllowed {
        /// The method refused.
        method: http::Method,
    },
    /// A `Connection` header that is not a list of field names.
    #[error("invalid Connection header")]
    BadConnectionHeader,
    /// A protocol upgrade (WebSocket...) asked together with encryption: a tunnel
    /// cannot be sealed.
    #[error("a protocol upgrade cannot be encrypted")]
    UpgradeNotEncryptable,
    /// A request path with dot segments (raw or percent-encoded) or otherwise unusable.
    #[error("invalid request path")]
    InvalidPath,
    /// The upstream could not be reached.
    #[error("upstream unavailable")]
    UpstreamUnavailable {
        /// The upstream as `scheme://host:port`: logged, never sent to the client.
        upstream: String,
        /// Why, for the log.
        #[source]
        source: BoxError,
    },
    /// The upstream did not answer in time.
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// The upstream's response could not be read or was larger than the limit for an
    /// encrypted response.
    #[error("invalid upstream response")]
    BadUpstreamResponse(#[source] BoxError),
    /// `/.well-known/hpke-keys?format=` names no format the gateway publishes (pem and
    /// raw only when every published key is of its KEM's default suite, or with
    /// `?suite=`), or `?suite=` names no suite.
    #[error(
        "format must be tink-json, pem or raw (tink-json or ?suite= when a key's suite is not its KEM's default); suite must be a suite name"
    )]
    UnknownKeyFormat,
    /// A published-key request for an account or key id that has none.
    #[error("no such account or key")]
    NoSuchKey,
    /// The request opened, but with a suite the account's `request_suites` does not allow.
    #[error("this account does not accept requests sealed with suite {suite}")]
    SuiteNotAllowed {
        /// The suite the request was sealed with.
        suite: crate::envelope::Suite,
    },
    /// An Oblivious HTTP request's inner Binary HTTP request is malformed or not one the
    /// gateway can forward (answered inside the encapsulation).
    #[error("malformed inner request")]
    BadInnerRequest,
    /// An Oblivious HTTP request names a target outside `[ohttp] allowed_targets`
    /// (answered inside the encapsulation, never forwarded).
    #[error("target not allowed")]
    TargetNotAllowed,
    /// A request answered before within the replay window: an Oblivious HTTP one
    /// (answered inside the encapsulation), or a Tink-format one to an account with
    /// `replay_window_s`. Never forwarded again.
    #[error("replayed request")]
    Replayed,
    /// The Oblivious HTTP replay cache is full of live entries: new requests are refused
    /// rather than forwarded unchecked.
    #[error("replay cache full")]
    ReplayCacheFull,
    /// The shared replay store (Valkey/Redis) did not answer in time, and
    /// `store_unavailable` refuses this request rather than forward it unchecked.
    #[error("replay store unavailable, retry later")]
    ReplayStoreUnavailable,
    /// A bug or an impossible state. The body says only "Something went wrong".
    #[error("Something went wrong")]
    Internal(#[source] BoxError),
}

/// A boxed error for causes the client never sees.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the gateway could not start once its configuration was accepted (a refused
/// configuration is a [`crate::config::ConfigError`]). Start-up never answers a client,
/// so it never borrows the request-time [`Error`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {what} {addr}: {source}")]
    Listen {
        /// Which listener (`listen`, `admin_listen`).
        what: &'static str,
        /// Its address.
        addr: std::net::SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The upstream URL or its TLS settings cannot be used.
    #[error("upstream: {0}")]
    Upstream(String),
    /// The public listener's TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// The file intake could not start.
    #[error("the intake cannot start: {0}")]
    Intake(String),
    /// The operating system refused a thread, a runtime or a signal handler.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The stable code of a gateway answer, carried as a response extension so that
/// layers above (logging, the middleware) can tell a gateway answer from an upstream one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub u16);

impl Error {
    /// The HTTP status for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::MissingAccountId { .. }
            | Error::InvalidAccountId { .. }
            | Error::MissingAcceptHeader
            | Error::MissingContentTypeHeader
            | Error::BodyNotEncrypted
            | Error::EncryptedBodyWithoutHeaders
            | Error::DecryptionFailed
            | Error::BadRequestBody
            | Error::BadInnerRequest
            | Error::Replayed => StatusCode::BAD_REQUEST,
            Error::EncryptionNotEnabled
            | Error::SuiteNotAllowed { .. }
            | Error::TargetNotAllowed => StatusCode::FORBIDDEN,
            Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::Overloaded
            | Error::BufferBudgetExhausted
            | Error::ReplayCacheFull
            | Error::ReplayStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Error::ConnectionNamesEndToEnd { .. }
            | Error::BadConnectionHeader
            | Error::UpgradeNotEncryptable
            | Error::InvalidPath
            | Error::UnknownKeyFormat => StatusCode::BAD_REQUEST,
            Error::NoSuchKey => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::UpstreamUnavailable { .. } | Error::BadUpstreamResponse(_) => {
                StatusCode::BAD_GATEWAY
            }
            Error::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable numeric code for this failure (see the README's error table).
    pub fn code(&self) -> u16 {
        match self {
            Error::MissingAccountId { .. } => 4001,
            Error::InvalidAccountId { .. } => 4002,
            Error::MissingAcceptHeader => 4003,
            Error::MissingContentTypeHeader => 4004,
            Error::EncryptionNotEnabled => 4005,
            Error::BodyNotEncrypted => 4006,
            Error::EncryptedBodyWithoutHeaders => 4007,
            Error::DecryptionFailed => 4008,
            Error::PayloadTooLarge { .. } => 4009,
            Error::BadRequestBody => 4010,
            Error::RequestTimeout => 4011,
            Error::HeadersTooLarge { .. } => 4012,
            Error::ConnectionNamesEndToEnd { .. } => 4013,
            Error::MethodNotAllowed { .. } => 4014,
            Error::UpgradeNotEncryptable => 4015,
            Error::InvalidPath => 4016,
            Error::BadConnectionHeader => 4017,
            Error::UnknownKeyFormat => 4018,
            Error::NoSuchKey => 4019,
            Error::SuiteNotAllowed { .. } => 4020,
            Error::BadInnerRequest => 4021,
            Error::TargetNotAllowed => 4022,
            Error::Replayed => 4023,
            Error::ReplayCacheFull => 5006,
            Error::ReplayStoreUnavailable => 5007,
            Error::Overloaded => 5004,
            Error::BufferBudgetExhausted => 5005,
            Error::UpstreamUnavailable { .. } => 5001,
            Error::UpstreamTimeout => 5002,
            Error::BadUpstreamResponse(_) => 5003,
            Error::Internal(_) => 5000,
        }
    }
}

/// The JSON body, fields in the vendor's order.
#[derive(serde::Serialize)]
struct ErrorBody {
    status: &'static str,
    error: String,
    code: u16,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        if status.is_server_error() {
            // The cause chain names no key, body or passcode: only I/O and protocol errors.
            let cause = causes(&self);
            let upstream = match &self {
                Error::UpstreamUnavailable { upstream, .. } => {
                    Some(tracing::field::display(upstream.as_str()))
                }
                _ => None,
            };
            tracing::warn!(code, %status, error = %self, upstream, cause = %cause, "gateway error");
        } else {
            tracing::debug!(code, %status, error = %self, "request refused");
        }
        let body = serde_json::to_string(&ErrorBody {
            status: "fail",
            error: self.to_string(),
            code,
        })
        .unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(ErrorCode(code));
        response
    }
}

/// Every cause below `e`, outermost first, joined with ": " (`client error (Connect): tcp
/// connect error: Connection refused (os error 111)`). A cause whose text its parent
/// already ends with is not repeated.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique() {
        let all = [
            Error::MissingAccountId { header: "X".into() },
            Error::InvalidAccountId { header: "X".into() },
            Error::MissingAcceptHeader,
            Error::MissingContentTypeHeader,
            Error::EncryptionNotEnabled,
            Error::BodyNotEncrypted,
            Error::EncryptedBodyWithoutHeaders,
            Error::DecryptionFailed,
            Error::PayloadTooLarge { limit: 1 },
            Error::BadRequestBody,
            Error::RequestTimeout,
            Error::HeadersTooLarge { limit: 1 },
            Error::Overloaded,
            Error::BufferBudgetExhausted,
            Error::ConnectionNamesEndToEnd {
                name: http::header::HOST,
            },
            Error::MethodNotAllowed {
                method: http::Method::CONNECT,
            },
            Error::UpgradeNotEncryptable,
            Error::SuiteNotAllowed {
                suite: crate::envelope::Suite::default(),
            },
            Error::InvalidPath,
            Error::BadConnectionHeader,
            Error::UpstreamUnavailable {
                upstream: "http://x:80".into(),
                source: "x".into(),
            },
            Error::UpstreamTimeout,
            Error::BadUpstreamResponse("x".into()),
            Error::Internal("x".into()),
        ];
        let mut codes: Vec<u16> = all.iter().map(Error::code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn internal_detail_stays_out_of_the_body() {
        let r = Error::UpstreamUnavailable {
            upstream: "http://10.0.0.1:80".into(),
            source: "connection refused to 10.0.0.1".into(),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.extensions().get::<ErrorCode>(), Some(&ErrorCode(5001)));
    }

    #[test]
    fn the_logged_cause_is_the_whole_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        let e = Error::UpstreamUnavailable {
            upstream: "http://127.0.0.1:9".into(),
            source: Box::new(Outer(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "Connection refused (os error 111)",
            ))),
        };
        assert_eq!(
            causes(&e),
            "client error (Connect): Connection refused (os error 111)"
        );
    }
}
