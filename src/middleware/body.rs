//! Reading bodies: peeking at a request body's first bytes, collecting a body whole
//! within a size limit and the buffer budget, and bounding the wait for each frame.
//!
//! Two clocks bound a request body the gateway reads: the whole body must arrive within
//! `request_body_timeout_ms`, and no more than `request_body_idle_timeout_ms` may pass
//! between two frames (nginx's `client_body_timeout`). A body streamed on to the
//! upstream keeps the second clock ([`IdleTimeout`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt as _, BodyStream, StreamBody};
use tokio::time::Sleep;

use crate::envelope::TAG_LEN;
use crate::error::Error;
use crate::limits::{Admission, Reservation};

/// The next frame, or `timed_out` after `idle` without one.
async fn next_frame(
    body: &mut Body,
    idle: Duration,
    timed_out: &impl Fn() -> Error,
) -> Result<Option<Result<Frame<Bytes>, axum::Error>>, Error> {
    tokio::time::timeout(idle, body.frame())
        .await
        .map_err(|_| timed_out())
}

/// The first bytes of a body, and the body with those bytes put back in front.
pub(crate) struct Peeked {
    /// At least `want` bytes, or the whole body if it is shorter.
    pub(crate) head: Bytes,
    /// True if `head` is the whole body.
    pub(crate) complete: bool,
    /// The whole body again, for forwarding.
    pub(crate) body: Body,
}

/// Reads frames until `want` bytes are seen or the body ends, without reading further;
/// 408 when a frame takes longer than `idle`.
pub(crate) async fn peek(mut body: Body, want: usize, idle: Duration) -> Result<Peeked, Error> {
    if body.is_end_stream() {
        return Ok(Peeked {
            head: Bytes::new(),
            complete: true,
            body,
        });
    }
    let mut frames = Vec::new();
    let mut seen = 0;
    let mut complete = false;
    while seen < want {
        match next_frame(&mut body, idle, &|| Error::RequestTimeout).await? {
            None => {
                complete = true;
                break;
            }
            Some(Ok(frame)) => {
                seen += frame.data_ref().map_or(0, Bytes::len);
                frames.push(frame);
            }
            Some(Err(_)) => return Err(Error::BadRequestBody),
        }
    }
    let complete = complete || body.is_end_stream();
    // The bytes seen, without a copy when one frame held them all (the usual case).
    let data: Vec<&Bytes> = frames.iter().filter_map(Frame::data_ref).collect();
    let head = match data.as_slice() {
        [] => Bytes::new(),
        [one] => Bytes::clone(one),
        many => {
            let mut head = BytesMut::with_capacity(seen);
            for d in many {
                head.extend_from_slice(d);
            }
            head.freeze()
        }
    };
    let body = if complete && frames.iter().all(Frame::is_data) {
        // A whole body goes on as one buffer of known length.
        Body::from(head.clone())
    } else {
        let replay = futures_util::stream::iter(frames.into_iter().map(Ok));
        if complete {
            Body::new(StreamBody::new(replay))
        } else {
            Body::new(StreamBody::new(
                replay.chain(BodyStream::new(IdleTimeout::new(body, idle))),
            ))
        }
    };
    Ok(Peeked {
        head,
        complete,
        body,
    })
}

/// How [`collect_limited`] reads: its limits and the errors it answers with.
pub(crate) struct Collect<E, R, T> {
    /// Most body bytes accepted.
    pub(crate) limit: u64,
    /// Zero bytes put before the body (room for an envelope header).
    pub(crate) headroom: usize,
    /// Most time between two frames.
    pub(crate) idle: Duration,
    /// The error past `limit`.
    pub(crate) too_large: E,
    /// The error for a body that fails to read.
    pub(crate) read_error: R,
    /// The error when a frame is late.
    pub(crate) timed_out: T,
}

/// How much more budget a body of unknown length takes at a time.
const BUDGET_STEP: u64 = 64 * 1024;

/// Reads a whole body into one buffer after `headroom` zero bytes (so sealing needs no
/// second copy), failing past `limit` body bytes. The bytes are first reserved in
/// `held` from the buffer budget: all at once when the length is known, in steps when
/// it is not. Capacity for a tag is reserved too.
pub(crate) async fn collect_limited<E, R, T>(
    mut body: Body,
    how: Collect<E, R, T>,
    admission: &Admission,
    held: &mut Reservation,
) -> Result<Vec<u8>, Error>
where
    E: Fn() -> Error,
    R: Fn(axum::Error) -> Error,
    T: Fn() -> Error,
{
    let hint = body.size_hint();
    if hint.lower() > how.limit {
        return Err((how.too_large)());
    }
    let expected = hint.exact().unwrap_or(hint.lower()).min(how.limit);
    if expected > held.bytes() {
        admission.grow(held, expected - held.bytes()).await?;
    }
    let capacity = usize::try_from(expected).unwrap_or(0);
    let mut buf = Vec::with_capacity(how.headroom + capacity + TAG_LEN);
    buf.resize(how.headroom, 0);
    while let Some(frame) = next_frame(&mut body, how.idle, &how.timed_out).await? {
        let frame = frame.map_err(&how.read_error)?;
        if let Some(data) = frame.data_ref() {
            let total = (buf.len() - how.headroom + data.len()) as u64;
            if total > how.limit {
                return Err((how.too_large)());
            }
            if total > held.bytes() {
                let step = (total - held.bytes()).max(BUDGET_STEP);
                let step = step.min(how.limit.saturating_sub(held.bytes())).max(1);
                admission.grow(held, step).await?;
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(buf)
}

/// A body whose frames must each come within `idle` of the previous one; a late frame
/// ends it with an error (the request to the upstream is then abandoned).
pub(crate) struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<B> IdleTimeout<B> {
    pub(crate) fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes, Error = axum::Error> + Unpin,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            let deadline = tokio::time::Instant::now() + this.idle;
            this.sleep.as_mut().reset(deadline);
            return Poll::Ready(frame);
        }
        ready!(this.sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(axum::Error::new(Error::RequestTimeout))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that keeps a reservation of the buffer budget until it is dropped: the
/// bytes count until hyper has sent them and let go of the buffer.
pub(crate) struct Held<B> {
    inner: B,
    _reservation: Reservation,
}

impl<B> Held<B> {
    pub(crate) fn new(inner: B, reservation: Reservation) -> Self {
        Self {
            inner,
            _reservation: reservation,
        }
    }
}

impl<B: HttpBody + Unpin> HttpBody for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A whole buffer as a body that holds its reservation until sent.
pub(crate) fn held_buffer(data: impl Into<Bytes>, reservation: Reservation) -> Body {
    Body::new(Held::new(
        http_body_util::Full::new(data.into()),
        reservation,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::classify::SNIFF_LEN;

    const IDLE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn peek_puts_bytes_back() {
        let chunks: Vec<Result<_, std::io::Error>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"hello "))),
            Ok(http_body::Frame::data(Bytes::from_static(b"world, "))),
            Ok(http_body::Frame::data(Bytes::from_static(b"and more"))),
        ];
        let body = Body::new(StreamBody::new(futures_util::stream::iter(chunks)));
        let p = peek(body, 8, IDLE).await.unwrap();
        assert_eq!(&p.head[..], b"hello world, ");
        assert!(!p.complete);
        let all = p.body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"hello world, and more");
    }

    #[tokio::test]
    async fn peek_of_a_one_frame_body_keeps_its_length_and_bytes() {
        let data = Bytes::from(vec![b'x'; 1000]);
        let p = peek(Body::from(data.clone()), SNIFF_LEN, IDLE)
            .await
            .unwrap();
        assert!(p.complete);
        assert_eq!(p.head, data);
        // No copy: the head is the frame itself.
        assert_eq!(p.head.as_ptr(), data.as_ptr());
        assert_eq!(http_body::Body::size_hint(&p.body).exact(), Some(1000));
        assert_eq!(p.body.collect().await.unwrap().to_bytes(), data);
        // A short body and an empty one.
        let p = peek(Body::from("ab"), SNIFF_LEN, IDLE).await.unwrap();
        assert!(p.complete);
        assert_eq!(&p.head[..], b"ab");
        assert_eq!(p.body.collect().await.unwrap().to_bytes(), "ab");
        let p = peek(Body::empty(), SNIFF_LEN, IDLE).await.unwrap();
        assert!(p.complete && p.head.is_empty());
    }

    #[tokio::test]
    async fn a_body_that_stops_sending_times_out_between_frames() {
        let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(
            Bytes::from_static(b"{"),
        ))])
        .chain(futures_util::stream::pending());
        let body = Body::new(StreamBody::new(stalled));
        assert!(matches!(
            peek(body, SNIFF_LEN, Duration::from_millis(100)).await,
            Err(Error::RequestTimeout)
        ));
    }
}
