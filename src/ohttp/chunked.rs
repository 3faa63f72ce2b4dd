//! Chunked Oblivious HTTP (draft-ietf-ohai-chunked-ohttp) at the gateway resource: a
//! `message/ohttp-chunked-req` is opened chunk by chunk, its Binary HTTP request read as
//! it arrives ([`super::incremental`]) and its content streamed to the upstream; the
//! upstream's answer streams back as `message/ohttp-chunked-res`, one sealed chunk per
//! piece of its body. Memory is bounded by the chunk size, not the body size.
//!
//! Only a request whose final chunk opened is complete. One that ends without it (or
//! whose Binary HTTP ends inside its content) has its upstream body aborted, so the
//! upstream never takes it for a whole request; a response cut short the same way
//! reaches the client without its final chunk, which the client detects.

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderValue, StatusCode, header};
use tower::ServiceExt as _;

use super::incremental::{Content, HeadReader};
use super::{Resource, inner, outer_problem, unknown_key};
use crate::envelope::ohttp::chunked::{
    self, Deframer, RequestOpener, ResponseSealer, SEAL_CHUNK_LEN, write_varint,
};
use crate::envelope::ohttp::{self as envelope_ohttp, HEADER_LEN};
use crate::limits::Slot;

/// The most bytes a chunked request may take, outer framing included.
pub(super) const MAX_REQUEST_BYTES: u64 = 1 << 34;

/// Why reading the request stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No byte came within the idle timeout.
    Timeout,
    /// More than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// The client's body failed (the connection went).
    Body,
    /// The stream ended before its final chunk.
    Truncated,
    /// Framing that cannot be read.
    Malformed,
    /// A chunk did not open.
    Decryption,
}

impl Failure {
    /// The answer in the clear, before anything was forwarded.
    fn outer(self) -> (Response, &'static str) {
        let (status, title, outcome) = match self {
            Failure::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request body timeout",
                "timeout",
            ),
            Failure::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request too large",
                "too_large",
            ),
            Failure::Body => (StatusCode::BAD_REQUEST, "request body failed", "malformed"),
            Failure::Truncated => (StatusCode::BAD_REQUEST, "truncated request", "truncated"),
            Failure::Malformed => (
                StatusCode::BAD_REQUEST,
                "malformed encapsulation",
                "malformed",
            ),
            Failure::Decryption => (
                StatusCode::BAD_REQUEST,
                "decryption failed",
                "decryption_failed",
            ),
        };
        (outer_problem(status, None, title), outcome)
    }
}

impl From<envelope_ohttp::Error> for Failure {
    fn from(e: envelope_ohttp::Error) -> Self {
        match e {
            envelope_ohttp::Error::Truncated => Failure::Truncated,
            envelope_ohttp::Error::Decryption => Failure::Decryption,
            _ => Failure::Malformed,
        }
    }
}

/// The client's body, read with an idle timeout, and until the inner head is whole
/// within `request_body_timeout` too (a head sent a byte per idle period must not hold
/// a connection and a slot for days).
struct Outer {
    body: http_body_util::BodyDataStream<Body>,
    idle: Duration,
    deadline: Option<tokio::time::Instant>,
    read: u64,
}

impl Outer {
    /// The next bytes, `None` at the end.
    async fn next(&mut self) -> Result<Option<Bytes>, Failure> {
        let mut until = tokio::time::Instant::now() + self.idle;
        if let Some(deadline) = self.deadline {
            until = until.min(deadline);
        }
        match tokio::time::timeout_at(until, self.body.next()).await {
            Err(_) => Err(Failure::Timeout),
            Ok(None) => Ok(None),
            Ok(Some(Err(_))) => Err(Failure::Body),
            Ok(Some(Ok(bytes))) => {
                self.read += bytes.len() as u64;
                if self.read > MAX_REQUEST_BYTES {
                    return Err(Failure::TooLarge);
                }
                Ok(Some(bytes))
            }
        }
    }
}

/// The request's plaintext, chunk by chunk.
struct Chunks {
    outer: Outer,
    deframer: Deframer,
    opener: RequestOpener,
    finished: bool,
}

impl Chunks {
    /// The next chunk's plaintext, `None` after the final chunk.
    async fn next(&mut self) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, Failure> {
        loop {
            if self.finished {
                return Ok(None);
            }
            if let Some(sealed) = self.deframer.next_chunk()? {
                return Ok(Some(self.opener.open_chunk(&sealed, false)?));
            }
            match self.outer.next().await? {
                Some(bytes) => self.deframer.push(&bytes)?,
                None => {
                    let last = std::mem::take(&mut self.deframer).finish()?;
                    let plain = self.opener.open_chunk(&last, true)?;
                    self.finished = true;
                    return Ok(Some(plain));
                }
            }
        }
    }
}

/// Answers a `message/ohttp-chunked-req`, and the outcome.
pub(super) async fn answer(
    resource: &Resource,
    req: http::Request<Body>,
    slot: Slot,
) -> (Response, &'static str) {
    let state = resource.shared.load_full();
    let mut outer = Outer {
        body: http_body_util::BodyExt::into_data_stream(req.into_body()),
        idle: state.request_body_idle_timeout,
        deadline: Some(tokio::time::Instant::now() + state.request_body_timeout),
        read: 0,
    };
    // The header and `enc`, in the clear; whatever follows them starts the chunks.
    let mut start = Vec::new();
    let (opener, rest) = loop {
        if start.len() >= HEADER_LEN {
            let header = match chunked::parse_request_header(&start) {
                Ok(header) => header,
                Err(envelope_ohttp::Error::Unsupported) => return unknown_key(),
                Err(e) => return Failure::from(e).outer(),
            };
            let need = chunked::request_header_len(&header);
            if start.len() >= need {
                let Some(key) = state
                    .server_keys()
                    .by_ohttp_key_id(header.key_id, std::time::SystemTime::now())
                else {
                    return unknown_key();
                };
                match RequestOpener::new(key.private_key(), &start[..need]) {
                    Ok(opener) => break (opener, start.split_off(need)),
                    Err(envelope_ohttp::Error::Unsupported) => return unknown_key(),
                    Err(e) => return Failure::from(e).outer(),
                }
            }
        }
        match outer.next().await {
            Ok(Some(bytes)) => start.extend_from_slice(&bytes),
            Ok(None) => return Failure::Malformed.outer(),
            Err(failure) => return failure.outer(),
        }
    };
    let mut deframer = Deframer::new();
    if let Err(e) = deframer.push(&rest) {
        return Failure::from(e).outer();
    }
    let sealer = match opener.response() {
        Ok((nonce, sealer)) => (nonce, sealer),
        Err(_) => return Failure::Malformed.outer(),
    };
    let enc = opener.enc().to_vec();
    let mut chunks = Chunks {
        outer,
        deframer,
        opener,
        finished: false,
    };
    // The head: read until it is whole. Failures so far are answered in the clear, as
    // for a request that does not open (the RFC's answer to a bad encapsulation).
    let mut pending = Vec::new();
    let mut head = HeadReader::default();
    let (message, content) = loop {
        match chunks.next().await {
            Ok(Some(plain)) => pending.extend_from_slice(&plain),
            Ok(None) => {
                let refusal = inner::error_message(crate::error::Error::BadInnerRequest);
                return (sealed_whole(sealer, &refusal), "bad_inner_request");
            }
            Err(failure) => return failure.outer(),
        }
        match head.read(&pending) {
            Ok(Some((message, content, used))) => {
                pending.drain(..used);
                break (message, content);
            }
            Ok(None) => {}
            Err(_) => {
                let refusal = inner::error_message(crate::error::Error::BadInnerRequest);
                return (sealed_whole(sealer, &refusal), "bad_inner_request");
            }
        }
    };
    let request = match inner::admit(resource, &state, &message, &enc).await {
        Ok(request) => request,
        Err((refusal, outcome)) => return (sealed_whole(sealer, &refusal), outcome),
    };
    // The head is whole: from here the content streams, each read within the idle
    // timeout (a large upload may take longer than `request_body_timeout`).
    chunks.outer.deadline = None;
    let target = super::InnerTarget::of(&request);
    let (parts, _) = request.into_parts();
    let body = if chunks.finished {
        // The whole request came already (a small one): forwarded whole, with its length.
        match whole_content(content, &pending) {
            Ok(body) => Body::from(body),
            Err(()) => {
                let refusal = inner::error_message(crate::error::Error::BadInnerRequest);
                return (sealed_whole(sealer, &refusal), "bad_inner_request");
            }
        }
    } else {
        streamed_content(chunks, content, pending)
    };
    let response = match resource
        .proxy
        .clone()
        .oneshot(http::Request::from_parts(parts, body))
        .await
    {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // The slot bounds requests with the upstream: let go once its answer has begun, as
    // for plaintext streams (a client that reads slowly, or an HTTP/2 peer that grants
    // no window, must not hold it while the answer trickles out).
    drop(slot);
    let mut response = sealed_stream(sealer, response, state.upstream_timeout());
    response.extensions_mut().insert(target);
    (response, "forwarded")
}

/// The content of a request whose every chunk has come.
fn whole_content(mut content: Content, pending: &[u8]) -> Result<Bytes, ()> {
    let mut out = Vec::new();
    let used = content.read(pending, &mut out).map_err(drop)?;
    content.finish(&pending[used..]).map_err(drop)?;
    Ok(out.concat().into())
}

/// The content as it arrives; an error (which aborts the upstream request) if the
/// request turns out cut short, tampered with or malformed.
fn streamed_content(chunks: Chunks, content: Content, pending: Vec<u8>) -> Body {
    let stream = futures_util::stream::try_unfold(
        (chunks, content, pending),
        |(mut chunks, mut content, mut pending)| async move {
            loop {
                let mut out = Vec::new();
                let used = content
                    .read(&pending, &mut out)
                    .map_err(|_| bad("malformed content"))?;
                pending.drain(..used);
                if !out.is_empty() {
                    let data: Bytes = out.concat().into();
                    return Ok(Some((data, (chunks, content, pending))));
                }
                match chunks.next().await {
                    Ok(Some(plain)) => pending.extend_from_slice(&plain),
                    Ok(None) => {
                        content
                            .finish(&pending)
                            .map_err(|_| bad("the message ends inside its content"))?;
                        return Ok(None);
                    }
                    Err(failure) => return Err(bad(&format!("{failure:?}"))),
                }
            }
        },
    );
    Body::from_stream(stream)
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::other(format!("chunked oblivious request: {what}"))
}

/// A response with the chunked media type.
fn chunked_response(body: Body) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(chunked::RESPONSE_MEDIA_TYPE),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The gateway's own answer, whole, as one final chunk.
fn sealed_whole(
    (nonce, mut sealer): (Vec<u8>, ResponseSealer),
    message: &bhttp::Message,
) -> Response {
    let mut encoded = Vec::new();
    let sealed = message
        .write_bhttp(bhttp::Mode::IndeterminateLength, &mut encoded)
        .ok()
        .and_then(|()| sealer.seal_chunk(&encoded, true).ok());
    match sealed {
        Some(chunk) => {
            let mut out = nonce;
            out.extend_from_slice(&chunk);
            chunked_response(Body::from(out))
        }
        None => outer_problem(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error"),
    }
}

/// The upstream's answer as sealed chunks: the nonce and the Binary HTTP head, one chunk
/// per piece of the body, then the final chunk (the content's and the trailer's
/// terminators). An upstream body that fails ends the stream without its final chunk.
fn sealed_stream(
    (nonce, mut sealer): (Vec<u8>, ResponseSealer),
    response: http::Response<Body>,
    idle: Duration,
) -> Response {
    let (parts, body) = response.into_parts();
    let status = bhttp::StatusCode::try_from(parts.status.as_u16())
        .or_else(|_| bhttp::StatusCode::try_from(502u16));
    let Ok(status) = status else {
        return outer_problem(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error");
    };
    let mut head = bhttp::Message::response(status);
    for (name, value) in &parts.headers {
        if !inner::is_hop_field(name) {
            head.put_header(name.as_str(), value.as_bytes());
        }
    }
    // Indeterminate-length with no content and no trailer ends with the two
    // terminators; without them it is the head.
    let mut encoded = Vec::new();
    let first = head
        .write_bhttp(bhttp::Mode::IndeterminateLength, &mut encoded)
        .ok()
        .filter(|()| encoded.ends_with(&[0, 0]))
        .and_then(|()| {
            encoded.truncate(encoded.len() - 2);
            sealer.seal_chunk(&encoded, false).ok()
        });
    let Some(first) = first else {
        return outer_problem(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error");
    };
    let mut opening = nonce;
    opening.extend_from_slice(&first);
    let data = http_body_util::BodyExt::into_data_stream(body);
    let stream = futures_util::stream::try_unfold(
        (Some(Bytes::from(opening)), data, sealer, false),
        move |(opening, mut data, mut sealer, done)| async move {
            if let Some(opening) = opening {
                return Ok(Some((opening, (None, data, sealer, false))));
            }
            if done {
                return Ok(None);
            }
            loop {
                // An upstream that stops sending ends the answer without its final
                // chunk (the client sees it cut short), as `upstream_timeout` bounds a
                // whole answer elsewhere.
                let next = tokio::time::timeout(idle, data.next())
                    .await
                    .map_err(|_| bad("the upstream's body stalled"))?;
                match next {
                    Some(Ok(bytes)) if bytes.is_empty() => {}
                    Some(Ok(bytes)) => {
                        let mut sealed = Vec::new();
                        // A Binary HTTP content chunk (length, bytes) per sealed chunk.
                        for piece in bytes.chunks(SEAL_CHUNK_LEN - 8) {
                            let mut plain = Vec::with_capacity(piece.len() + 8);
                            write_varint(&mut plain, piece.len() as u64);
                            plain.extend_from_slice(piece);
                            let chunk =
                                sealer.seal_chunk(&plain, false).map_err(|_| bad("seal"))?;
                            sealed.extend_from_slice(&chunk);
                        }
                        return Ok(Some((Bytes::from(sealed), (None, data, sealer, false))));
                    }
                    Some(Err(e)) => return Err(std::io::Error::other(e)),
                    None => {
                        let last = sealer.seal_chunk(&[0, 0], true).map_err(|_| bad("seal"))?;
                        return Ok(Some((Bytes::from(last), (None, data, sealer, true))));
                    }
                }
            }
        },
    );
    chunked_response(Body::from_stream(stream))
}
