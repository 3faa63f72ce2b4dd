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

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

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
}

impl Lingering {
    /// Wraps an accepted connection and the slot it holds among `max_connections`.
    pub fn new(stream: TcpStream, slot: OwnedSemaphorePermit) -> Self {
        Self {
            stream: Some(stream),
            slot: Some(slot),
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
        match self.stream() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
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
