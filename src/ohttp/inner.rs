//! The inner exchange of an Oblivious HTTP request: its Binary HTTP request (RFC 9292)
//! checked and forwarded to the upstream through the proxy, and the answer (the
//! upstream's, or the gateway's own JSON error) encoded back as a Binary HTTP response.
//!
//! The inner request's fields go to the upstream as they are (authentication and account
//! headers included): the Tink-format header matrix does not apply inside OHTTP, whose
//! encapsulation is its own encryption. Hop-by-hop fields, `Host`, `Content-Length` and
//! `Transfer-Encoding` are the gateway's to set.

use std::io::Cursor;

use axum::body::Body;
use bhttp::Message;
use http::{HeaderName, HeaderValue, Method, Request, Response, Version, header};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::Resource;
use crate::error::Error;
use crate::proxy::UpstreamTimeout;
use crate::state::LiveState;

/// Fields an inner message never carries through: the hop's own, and framing.
fn is_hop_field(name: &HeaderName) -> bool {
    crate::middleware::ingress::HOP_BY_HOP.contains(name)
        || name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
}

/// Forwards the inner request; `Err` is the gateway's own answer (malformed, refused
/// target), `Ok` the upstream's or the proxy's. Both are Binary HTTP responses.
pub(super) async fn forward(
    resource: &Resource,
    state: &LiveState,
    inner: &[u8],
) -> Result<Message, Message> {
    let request = to_request(resource, state, inner).map_err(error_message)?;
    let response = match resource.proxy.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    to_message(response, state).await.map_err(error_message)
}

/// The Binary HTTP request as an HTTP request to the upstream, if it is one to forward.
fn to_request(
    resource: &Resource,
    state: &LiveState,
    inner: &[u8],
) -> Result<Request<Body>, Error> {
    let message =
        Message::read_bhttp(&mut Cursor::new(inner)).map_err(|_| Error::BadInnerRequest)?;
    let control = message.control();
    let (Some(method), Some(scheme), Some(authority), Some(path)) = (
        control.method(),
        control.scheme(),
        control.authority(),
        control.path(),
    ) else {
        return Err(Error::BadInnerRequest);
    };
    // The target: an empty authority means the `Host` field's, as in HTTP/1.1.
    let host = message.header().get(b"host").unwrap_or_default();
    let authority = if authority.is_empty() {
        host
    } else {
        authority
    };
    let origin = format!(
        "{}://{}",
        String::from_utf8_lossy(scheme).to_ascii_lowercase(),
        String::from_utf8_lossy(authority).to_ascii_lowercase()
    );
    if !resource.allowed.contains(&origin) {
        return Err(Error::TargetNotAllowed);
    }
    if !path.starts_with(b"/") {
        return Err(Error::BadInnerRequest);
    }
    let method = Method::from_bytes(method).map_err(|_| Error::BadInnerRequest)?;
    if method == Method::CONNECT {
        return Err(Error::BadInnerRequest);
    }
    let uri = http::Uri::try_from(path).map_err(|_| Error::BadInnerRequest)?;
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .version(Version::HTTP_11)
        .body(Body::from(message.content().to_vec()))
        .map_err(|_| Error::BadInnerRequest)?;
    let headers = request.headers_mut();
    for field in message.header().iter() {
        let name = HeaderName::from_bytes(field.name()).map_err(|_| Error::BadInnerRequest)?;
        let value = HeaderValue::from_bytes(field.value()).map_err(|_| Error::BadInnerRequest)?;
        if !is_hop_field(&name) {
            headers.append(name, value);
        }
    }
    request
        .extensions_mut()
        .insert(UpstreamTimeout(state.upstream_timeout()));
    Ok(request)
}

/// An HTTP response as a Binary HTTP response, its body read whole (up to
/// `max_response_body_bytes`, within the upstream timeout).
async fn to_message(response: Response<Body>, state: &LiveState) -> Result<Message, Error> {
    let (parts, body) = response.into_parts();
    let limit = usize::try_from(state.max_response_body_bytes).unwrap_or(usize::MAX);
    let read = tokio::time::timeout(
        state.upstream_timeout(),
        http_body_util::Limited::new(body, limit).collect(),
    )
    .await;
    let content = match read {
        Err(_) => return Err(Error::UpstreamTimeout),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(Error::BadUpstreamResponse(
                format!("the answer is larger than max_response_body_bytes ({limit})").into(),
            ));
        }
        Ok(Err(e)) => return Err(Error::BadUpstreamResponse(e)),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let status = bhttp::StatusCode::try_from(parts.status.as_u16())
        .map_err(|_| Error::BadUpstreamResponse("an impossible status".into()))?;
    let mut message = Message::response(status);
    for (name, value) in &parts.headers {
        if !is_hop_field(name) {
            message.put_header(name.as_str(), value.as_bytes());
        }
    }
    message.write_content(&content);
    Ok(message)
}

/// The gateway's own answer (its JSON error, as `Error` answers in the clear) as a
/// Binary HTTP response.
fn error_message(error: Error) -> Message {
    let code = error.code();
    tracing::debug!(code, error = %error, "oblivious request refused");
    let status = bhttp::StatusCode::try_from(error.status().as_u16())
        .or_else(|_| bhttp::StatusCode::try_from(500u16));
    let mut message = match status {
        Ok(status) => Message::response(status),
        Err(_) => unreachable!("500 is a final status"),
    };
    message.put_header("content-type", "application/json");
    message.write_content(
        serde_json::json!({ "status": "fail", "error": error.to_string(), "code": code })
            .to_string(),
    );
    message
}
