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
use tower::ServiceExt as _;

use super::Resource;
use crate::error::Error;
use crate::proxy::UpstreamTimeout;
use crate::replay::Verdict;
use crate::state::LiveState;

/// Most fields an inner request may have (as `max_header_bytes` bounds its bytes).
pub(super) const MAX_FIELDS: usize = 100;

/// A field's value by name, whatever the case the client wrote it in (the `bhttp` crate
/// compares names byte for byte).
fn field<'a>(message: &'a Message, name: &str) -> Option<&'a [u8]> {
    message
        .header()
        .iter()
        .find(|f| f.name().eq_ignore_ascii_case(name.as_bytes()))
        .map(bhttp::Field::value)
}

/// Fields an inner message never carries through: the hop's own, and framing.
pub(super) fn is_hop_field(name: &HeaderName) -> bool {
    crate::middleware::ingress::HOP_BY_HOP.contains(name)
        || name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
}

/// Forwards the inner request: the answer (the upstream's, the proxy's, or the gateway's
/// own: malformed, replayed, refused target) as a Binary HTTP response, and the outcome.
pub(super) async fn forward(
    resource: &Resource,
    state: &LiveState,
    inner: &[u8],
    enc: &[u8],
) -> Forwarded {
    let mut target = None;
    let mut held = resource.admission.empty_reservation();
    let (answer, outcome) =
        match exchange(resource, state, inner, enc, &mut target, &mut held).await {
            Ok(answer) => (answer, "forwarded"),
            Err((answer, outcome)) => (answer, outcome),
        };
    Forwarded {
        answer,
        outcome,
        target,
        held,
    }
}

/// What [`forward`] returns: the answer, the outcome, the inner target if it was
/// forwarded, and the buffer budget its body holds (to keep until it is sent).
pub(super) struct Forwarded {
    pub(super) answer: Message,
    pub(super) outcome: &'static str,
    pub(super) target: Option<super::InnerTarget>,
    pub(super) held: crate::limits::Reservation,
}

async fn exchange(
    resource: &Resource,
    state: &LiveState,
    inner: &[u8],
    enc: &[u8],
    target: &mut Option<super::InnerTarget>,
    held: &mut crate::limits::Reservation,
) -> Result<Message, (Message, &'static str)> {
    let message = read_request(inner)
        .ok_or_else(|| (error_message(Error::BadInnerRequest), "bad_inner_request"))?;
    let request = admit(resource, state, &message, enc).await?;
    *target = Some(super::InnerTarget::of(&request));
    let response = match resource.proxy.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // The upstream answered (or the proxy did, for it): forwarded, whatever came back.
    to_message(response, state, &resource.admission, held)
        .await
        .map_err(|e| (error_message(e), "forwarded"))
}

/// The inner request as the request to forward, once it has passed the allowlist, the
/// ingress rules and the replay defence; or the answer that refuses it, and the outcome.
/// Its body is `message`'s content (none for a chunked request, whose content follows).
pub(super) async fn admit(
    resource: &Resource,
    state: &LiveState,
    message: &Message,
    enc: &[u8],
) -> Result<Request<Body>, (Message, &'static str)> {
    let refused = |e: Error, outcome: &'static str| (error_message(e), outcome);
    let request = to_request(resource, state, message).map_err(|e| {
        let outcome = if matches!(e, Error::TargetNotAllowed) {
            "target_not_allowed"
        } else {
            "bad_inner_request"
        };
        refused(e, outcome)
    })?;
    // RFC 9458 §6.5: only a request that decrypted, and that would be forwarded, gets
    // here, so only it enters the cache (a refused one costs the cache nothing).
    let now = std::time::SystemTime::now();
    let verdict = resource
        .replay
        .check(field(message, "date"), enc, request.method(), now)
        .await;
    match verdict {
        Verdict::Fresh | Verdict::Unchecked => Ok(request),
        Verdict::Replayed => Err(refused(Error::Replayed, "replayed")),
        Verdict::Full => Err(refused(Error::ReplayCacheFull, "replay_cache_full")),
        Verdict::StoreUnavailable => Err(refused(
            Error::ReplayStoreUnavailable,
            "replay_store_unavailable",
        )),
        Verdict::DateOutside => Err((date_problem(now), "date_outside")),
    }
}

/// Reads a Binary HTTP request. RFC 9292 §3.8 lets a message end early where its last
/// sections are empty; the `bhttp` crate accepts that for known-length messages only. An
/// indeterminate-length message cut short is completed with the terminators it lacks:
/// one (the trailer's) always, as its content was terminated; two or three (content and
/// trailer, or fields too) only when that leaves the content empty, so that a message
/// cut inside its content is never taken for a complete one.
fn read_request(inner: &[u8]) -> Option<Message> {
    let read = |bytes: &[u8]| Message::read_bhttp(&mut Cursor::new(bytes)).ok();
    if let Some(message) = read(inner) {
        return Some(message);
    }
    if inner.first() != Some(&2) {
        return None;
    }
    let mut completed = inner.to_vec();
    for added in 1..=3 {
        completed.push(0);
        if let Some(message) = read(&completed) {
            // Three terminators mean the field section ended at the cut: only an empty
            // one may have (a cut between fields would pass for a complete section).
            let whole = match added {
                1 => true,
                2 => message.content().is_empty(),
                _ => message.content().is_empty() && message.header().is_empty(),
            };
            return whole.then_some(message);
        }
    }
    None
}

/// The Binary HTTP request as an HTTP request to the upstream, if it is one to forward.
fn to_request(
    resource: &Resource,
    state: &LiveState,
    message: &Message,
) -> Result<Request<Body>, Error> {
    let control = message.control();
    let (Some(method), Some(scheme), Some(path)) =
        (control.method(), control.scheme(), control.path())
    else {
        return Err(Error::BadInnerRequest);
    };
    // The target: an empty authority (which the `bhttp` crate reports as none) means the
    // `Host` field's, as in HTTP/1.1 (RFC 9292 §3.5).
    let authority = control
        .authority()
        .filter(|a| !a.is_empty())
        .or_else(|| field(message, "host"))
        .unwrap_or_default();
    let origin = std::str::from_utf8(scheme)
        .ok()
        .zip(std::str::from_utf8(authority).ok())
        .and_then(|(scheme, authority)| {
            crate::config::origin(&format!("{scheme}://{authority}").parse().ok()?)
        })
        .ok_or(Error::TargetNotAllowed)?;
    if !resource.allowed.contains(&origin) {
        return Err(Error::TargetNotAllowed);
    }
    if !path.starts_with(b"/") {
        return Err(Error::BadInnerRequest);
    }
    let method = Method::from_bytes(method).map_err(|_| Error::BadInnerRequest)?;
    // RFC 9458 §5.1: the gateway cannot forward a request that expects an interim answer.
    if field(message, "expect").is_some() {
        return Err(Error::BadInnerRequest);
    }
    // The same bounds as an outer request's head.
    let fields = message.header().fields();
    let bytes: usize = fields
        .iter()
        .map(|f| f.name().len() + f.value().len() + 4)
        .sum();
    if fields.len() > MAX_FIELDS || bytes > crate::config::DEFAULT_MAX_HEADER_BYTES as usize {
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
    for field in fields {
        let name = HeaderName::from_bytes(field.name()).map_err(|_| Error::BadInnerRequest)?;
        let value = HeaderValue::from_bytes(field.value()).map_err(|_| Error::BadInnerRequest)?;
        if !is_hop_field(&name) || name == header::CONNECTION {
            headers
                .try_append(name, value)
                .map_err(|_| Error::BadInnerRequest)?;
        }
    }
    // The Tink path's ingress, as for any request from outside: CONNECT, dot segments in
    // any spelling, underscored names, hop-by-hop fields and those `Connection` names.
    let (admitted, _) = crate::middleware::ingress::admit(
        &mut request,
        state.account_header(),
        state.underscores_in_headers,
    )?;
    if admitted.upgrade {
        return Err(Error::BadInnerRequest);
    }
    request
        .extensions_mut()
        .insert(UpstreamTimeout(state.upstream_timeout()));
    Ok(request)
}

/// An HTTP response as a Binary HTTP response, its body read whole (up to
/// `max_response_body_bytes`, within the upstream timeout, drawing on the buffer budget
/// while it is read, as the Tink format's answers do).
async fn to_message(
    response: Response<Body>,
    state: &LiveState,
    admission: &crate::limits::Admission,
    held: &mut crate::limits::Reservation,
) -> Result<Message, Error> {
    use crate::middleware::body::{answer_body, collect_limited};
    let (parts, body) = response.into_parts();
    let idle = state.upstream_timeout();
    let how = answer_body(state.max_response_body_bytes, idle, 0);
    let content = tokio::time::timeout(idle, collect_limited(body, how, admission, held))
        .await
        .map_err(|_| Error::UpstreamTimeout)??;
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

/// RFC 9458 §6.5.2: a `Date` outside the window gets 400 with the `date` problem type
/// and the gateway's own `Date`, so that the client can correct its clock and retry once
/// (with a fresh encapsulation).
fn date_problem(now: std::time::SystemTime) -> Message {
    let mut message = match bhttp::StatusCode::try_from(400u16) {
        Ok(status) => Message::response(status),
        Err(_) => unreachable!("400 is a final status"),
    };
    message.put_header("date", httpdate::fmt_http_date(now));
    message.put_header("content-type", "application/problem+json");
    message.write_content(
        serde_json::json!({
            "type": super::DATE_PROBLEM,
            "title": "date field in request outside of acceptable range",
        })
        .to_string(),
    );
    message
}

/// The gateway's own answer (its JSON error, as `Error` answers in the clear) as a
/// Binary HTTP response.
pub(super) fn error_message(error: Error) -> Message {
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
