//! Log output, off the request path: a line is formatted on the thread that logs it and
//! queued for a writer thread (tracing-appender's non-blocking writer), which writes
//! what has queued up to stderr in one buffered write and flushes. A request's thread
//! never waits on stderr.
//!
//! The queue holds [`QUEUE_LINES`] lines. Under overload (lines logged faster than stderr
//! takes them: a slow terminal, a stalled log collector) new lines are dropped, not
//! waited for, and counted: `hpke_gateway_log_lines_dropped_total`. A line stderr refuses
//! (a closed pipe) is counted there too and otherwise ignored, so the writer keeps
//! answering. At a graceful stop the [`LogGuard`] that `main` holds is dropped last: the
//! writer writes what is queued, and tracing-appender waits for it up to one second. A
//! queue still full at that point (stderr stalled) is not written.

use std::io::{BufWriter, IsTerminal as _, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// How many lines may wait for the writer thread before new ones are dropped.
pub const QUEUE_LINES: usize = 65_536;

/// The writer's buffer: what one batch of queued lines is written with.
const BUFFER_BYTES: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();
/// Writes stderr refused.
static FAILED: AtomicU64 = AtomicU64::new(0);

/// Buffered stderr whose write errors are counted and swallowed: tracing-appender's
/// writer thread ignores an error but then stops answering the shutdown handshake, which
/// would make every stop wait its full second.
struct Stderr(BufWriter<std::io::Stderr>);

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.write(buf) {
            Ok(n) => Ok(n),
            Err(_) => {
                FAILED.fetch_add(1, Ordering::Relaxed);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.0.flush().is_err() {
            FAILED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Keeps the writer thread; dropping it writes out every queued line.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _worker: WorkerGuard,
}

/// Installs the global subscriber: `RUST_LOG` (default `info`), the text or JSON format,
/// the non-blocking writer to stderr.
pub fn init(format: LogFormat) -> LogGuard {
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("hpke-gateway-log")
        .finish(Stderr(BufWriter::with_capacity(
            BUFFER_BYTES,
            std::io::stderr(),
        )));
    let _ = DROPPED.set(writer.error_counter());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    LogGuard { _worker: worker }
}

/// Lines dropped so far because the queue was full, plus writes stderr refused (0 before
/// [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
        .saturating_add(FAILED.load(Ordering::Relaxed))
}
