//! Lingering close, as nginx does it: when the gateway closes a client connection
//! (after an early answer such as 413, or any close), it first half-closes its side so
//! the client sees the whole answer, then keeps reading and discarding what the client
//! still sends, for at most [`LINGER_TOTAL`] and [`LINGER_IDLE`] between reads, before
//! it lets go of the socket.
//!
//! Without it, a client that writes its whole body before it reads (Python's
//! `http.client`, Java's `HttpClient`) gets a connection reset instead of the answer:
//! closing a socket with unread data makes the kernel send RST, and the client's write
//! fails before it ever reads the 413.
//!
//! The same wrapper bounds how long a write may wait on a client that does not read
//! (nginx's `send_timeout`): a connection whose writes make no progress for the send
//! timeout fails, hyper drops it, and the answer's buffer (and its share of the buffer
//! budget) goes with it.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

/// The longest a closing connection is read and discarded (nginx's `lingering_time`).
pub const LINGER_TOTAL: Duration = Duration::from_secs(30);
/// The longest a closing connection waits for more bytes (nginx's `lingering_timeout`).
pub const LINGER_IDLE: Duration = Duration::from_secs(5);

/// A client connection that lingers when dropped, holding its connection slot until
/// the socket is really closed.
#[derive(Debug)]
pub struct Lingering {
    stream: Option<TcpStream>,
    slot: Option<OwnedSemaphorePermit>,
    send_timeout: Duration,
    /// Armed while a write waits for the client to read.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Lingering {
    /// Wraps an accepted connection and the slot it holds among `max_connections`;
    /// a write that cannot progress for `send_timeout` fails.
    pub fn new(stream: TcpStream, slot: OwnedSemaphorePermit, send_timeout: Duration) -> Self {
        Self {
            stream: Some(stream),
            slot: Some(slot),
            send_timeout,
            stalled: None,
        }
    }

    /// After a write was polled: progress disarms the timer, a wait arms it, and a
    /// wait past the send timeout becomes an error.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.send_timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(stream), Ok(handle)) =
            (self.stream.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let slot = self.slot.take();
        handle.spawn(async move {
            linger(stream).await;
            drop(slot);
        });
    }
}

/// Half-closes, then reads and discards until the client closes or the time is up.
async fn linger(mut stream: TcpStream) {
    // Already done when hyper shut the connection down itself; then this fails harmlessly.
    let _ = stream.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER_TOTAL;
    let mut sink = [0u8; 4096];
    loop {
        let until = deadline.min(tokio::time::Instant::now() + LINGER_IDLE);
        match tokio::time::timeout_at(until, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => break,
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = match self.stream() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => return Poll::Ready(Err(e)),
        };
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = match self.stream() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => return Poll::Ready(Err(e)),
        };
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
