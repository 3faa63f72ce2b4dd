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
/// 408 when a frame takes longer than `idle`. A body that comes in one frame (the usual
/// case) is kept as it came; more frames are gathered into one buffer as they arrive
/// (so a body sent in one-byte chunks costs its bytes, not a frame's bookkeeping each),
/// and those bytes are reserved in `held` from the buffer budget.
pub(crate) async fn peek(
    mut body: Body,
    want: usize,
    idle: Duration,
    admission: &Admission,
    held: &mut Reservation,
) -> Result<Peeked, Error> {
    if body.is_end_stream() {
        return Ok(Peeked {
            head: Bytes::new(),
            complete: true,
            body,
        });
    }
    let mut first: Option<Bytes> = None;
    let mut gathered = BytesMut::new();
    let mut trailers = None;
    let mut complete = false;
    // Once a second frame came, `gathered` holds the first one too.
    let seen = |first: &Option<Bytes>, gathered: &BytesMut| {
        if gathered.is_empty() {
            first.as_ref().map_or(0, Bytes::len)
        } else {
            gathered.len()
        }
    };
    while seen(&first, &gathered) < want {
        match next_frame(&mut body, idle, &|| Error::RequestTimeout).await? {
            None => {
                complete = true;
                break;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => match &first {
                    None => first = Some(data),
                    Some(one) => {
                        let total = (seen(&first, &gathered) + data.len()) as u64;
                        if total > held.bytes() {
                            let step = (total - held.bytes()).max(BUDGET_STEP);
                            admission.grow(held, step).await?;
                        }
                        if gathered.is_empty() {
                            gathered.extend_from_slice(one);
                        }
                        gathered.extend_from_slice(&data);
                    }
                },
                Err(frame) => {
                    // Trailers end the body.
                    trailers = frame.into_trailers().ok();
                    complete = true;
                    break;
                }
            },
            Some(Err(_)) => return Err(Error::BadRequestBody),
        }
    }
    let complete = complete || body.is_end_stream();
    let head = if gathered.is_empty() {
        first.unwrap_or_default()
    } else {
        gathered.freeze()
    };
    let body = match (complete, trailers) {
        // A whole body goes on as one buffer of known length.
        (true, None) => Body::from(head.clone()),
        (true, Some(trailers)) => {
            let frames = [Frame::data(head.clone()), Frame::trailers(trailers)];
            Body::new(StreamBody::new(futures_util::stream::iter(
                frames.map(Ok::<_, axum::Error>),
            )))
        }
        (false, _) => {
            let replay = futures_util::stream::iter([Ok(Frame::data(head.clone()))]);
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
    /// How long to wait for buffer budget.
    pub(crate) budget_wait: BudgetWait,
}

/// How a body waits for buffer budget.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BudgetWait {
    /// A client's body: its first step waits up to `buffer_wait_ms` (it holds nothing
    /// yet), later ones not at all. Under overload a body that cannot grow gives its
    /// bytes back at once with a 503, so the others finish, instead of all of them
    /// creeping on a step at a time until the request deadline.
    Request,
    /// An upstream's answer, which the upstream has already spent its work on: every
    /// step may wait this long.
    Answer(Duration),
}

/// How a client's encrypted body is read whole: at most `limit` bytes (413 past it),
/// `idle` between frames (408), waiting for budget as a new request does.
pub(crate) fn client_body(
    limit: u64,
    idle: Duration,
) -> Collect<impl Fn() -> Error, impl Fn(axum::Error) -> Error, impl Fn() -> Error> {
    Collect {
        limit,
        headroom: 0,
        idle,
        too_large: move || Error::PayloadTooLarge { limit },
        read_error: |_: axum::Error| Error::BadRequestBody,
        timed_out: || Error::RequestTimeout,
        budget_wait: BudgetWait::Request,
    }
}

/// How an upstream's answer is read whole to seal it: at most `limit` bytes (a bad
/// upstream answer past it), `idle` between frames, after `headroom` bytes for an
/// envelope header; it waits for budget up to `idle` at each step (the upstream has done
/// its work, while a new request waits only `buffer_wait_ms`).
pub(crate) fn answer_body(
    limit: u64,
    idle: Duration,
    headroom: usize,
) -> Collect<impl Fn() -> Error, impl Fn(axum::Error) -> Error, impl Fn() -> Error> {
    Collect {
        limit,
        headroom,
        idle,
        too_large: move || {
            Error::BadUpstreamResponse(format!("response body larger than {limit} bytes").into())
        },
        read_error: |e: axum::Error| Error::BadUpstreamResponse(e.into()),
        timed_out: || Error::UpstreamTimeout,
        budget_wait: BudgetWait::Answer(idle),
    }
}

/// How much more budget a body of unknown length takes at a time.
const BUDGET_STEP: u64 = 64 * 1024;

/// Reads a whole body into one buffer after `headroom` zero bytes (so sealing needs no
/// second copy), failing past `limit` body bytes. Bytes are reserved in `held` from the
/// buffer budget as they arrive, in steps of [`BUDGET_STEP`]: a declared length sizes
/// the buffer (untouched capacity costs no memory) but reserves nothing, so a client
/// cannot hold budget with a `Content-Length` it never sends. Capacity for a tag is
/// reserved too.
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
                match how.budget_wait {
                    BudgetWait::Request if held.bytes() == 0 => admission.grow(held, step).await?,
                    BudgetWait::Request => {
                        admission.grow_waiting(held, step, Duration::ZERO).await?;
                    }
                    BudgetWait::Answer(wait) => admission.grow_waiting(held, step, wait).await?,
                }
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

/// How much of a held buffer is handed to hyper at a time.
const SLICE: usize = 64 * 1024;

/// A whole buffer as a body that holds its reservation until the last of it is taken.
/// It goes out in [`SLICE`]s (views, no copies): hyper takes the next one only when its
/// write queue has room, so the buffer stays counted in the budget while a slow reader
/// keeps it waiting (given whole, hyper would queue it all and drop the body at once).
pub(crate) fn held_buffer(data: impl Into<Bytes>, reservation: Reservation) -> Body {
    let data: Bytes = data.into();
    if data.len() <= SLICE {
        return Body::new(Held::new(http_body_util::Full::new(data), reservation));
    }
    Body::new(Held::new(Sliced(data), reservation))
}

/// A buffer handed out in [`SLICE`]s.
struct Sliced(Bytes);

impl HttpBody for Sliced {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.0.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.0.len().min(SLICE);
        Poll::Ready(Some(Ok(Frame::data(self.0.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::classify::SNIFF_LEN;

    const IDLE: Duration = Duration::from_secs(5);

    fn admission() -> Admission {
        Admission::new(
            8,
            1 << 20,
            Duration::from_secs(1),
            std::sync::Arc::new(crate::metrics::Metrics::default()),
        )
    }

    async fn peek(body: Body, want: usize, idle: Duration) -> Result<Peeked, Error> {
        let admission = admission();
        let mut held = admission.empty_reservation();
        super::peek(body, want, idle, &admission, &mut held).await
    }

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
        // Three frames are needed to see 14 bytes: all three are gathered.
        let chunks: Vec<Result<_, std::io::Error>> = ["hello ", "world, ", "and more"]
            .into_iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        let body = Body::new(StreamBody::new(futures_util::stream::iter(chunks)));
        let p = peek(body, 14, IDLE).await.unwrap();
        assert_eq!(&p.head[..], b"hello world, and more");
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

#[cfg(test)]
mod budget_tests {
    use super::*;

    fn one_mib_budget() -> Admission {
        Admission::new(
            8,
            1 << 20,
            Duration::from_secs(1),
            std::sync::Arc::new(crate::metrics::Metrics::default()),
        )
    }

    /// A body that declares a length it may never send.
    struct Declared<B>(B, u64);

    impl<B: HttpBody + Unpin> HttpBody for Declared<B> {
        type Data = B::Data;
        type Error = B::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
            Pin::new(&mut self.0).poll_frame(cx)
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.1)
        }
    }

    #[tokio::test]
    async fn many_small_frames_are_gathered_and_counted_in_the_budget() {
        let admission = one_mib_budget();
        let mut held = admission.empty_reservation();
        let frames =
            (0..1000).map(|_| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x"))));
        let body = Body::new(StreamBody::new(futures_util::stream::iter(frames)));
        let p = peek(body, 4096, Duration::from_secs(5), &admission, &mut held)
            .await
            .unwrap();
        assert!(p.complete);
        assert_eq!(p.head.len(), 1000);
        assert!(held.bytes() >= 1000, "gathered bytes are reserved");
        assert_eq!(p.body.collect().await.unwrap().to_bytes().len(), 1000);
    }

    #[tokio::test]
    async fn a_declared_length_reserves_nothing_until_bytes_arrive() {
        let admission = one_mib_budget();
        let mut held = admission.empty_reservation();
        // Claims 1 MiB (the whole budget), sends 10 bytes, then stalls.
        let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(
            Bytes::from_static(b"0123456789"),
        ))])
        .chain(futures_util::stream::pending());
        let body = Body::new(Declared(StreamBody::new(stalled), 1 << 20));
        let how = Collect {
            limit: 1 << 20,
            headroom: 0,
            idle: Duration::from_millis(200),
            too_large: || Error::PayloadTooLarge { limit: 1 },
            read_error: |_: axum::Error| Error::BadRequestBody,
            timed_out: || Error::RequestTimeout,
            budget_wait: BudgetWait::Request,
        };
        let collecting = collect_limited(body, how, &admission, &mut held);
        let other = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Another request can still have most of the budget meanwhile.
            let mut mine = admission.empty_reservation();
            admission.grow(&mut mine, 900 * 1024).await
        };
        let (collected, other) = tokio::join!(collecting, other);
        assert!(matches!(collected, Err(Error::RequestTimeout)));
        assert!(other.is_ok());
    }

    #[tokio::test]
    async fn a_held_buffer_goes_out_in_slices_and_keeps_its_reservation_until_the_last() {
        let admission = one_mib_budget();
        let mut held = admission.empty_reservation();
        admission.grow(&mut held, 200 * 1024).await.unwrap();
        let mut body = held_buffer(vec![7u8; 200 * 1024], held);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(200 * 1024));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), SLICE);
        // The rest is still reserved: only 1 MiB - 200 KiB is free.
        let mut other = admission.empty_reservation();
        assert!(admission.grow(&mut other, 900 * 1024).await.is_err());
        drop(body);
        assert!(admission.grow(&mut other, 900 * 1024).await.is_ok());
    }
}
