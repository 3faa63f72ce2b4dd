//! Log output, off the request path: a line is formatted on the thread that logs it and
//! queued for a writer thread (tracing-appender's non-blocking writer), which writes
//! what has queued up to stderr in one buffered write and flushes. A request's thread
//! never waits on stderr.
//!
//! The queue holds [`QUEUE_LINES`] lines. Under overload (lines logged faster than stderr
//! takes them: a slow terminal, a stalled log collector) new lines are dropped, not
//! waited for, and counted: `hpke_gateway_log_lines_dropped_total`. At a graceful stop
//! the [`LogGuard`] that `main` holds is dropped last, and everything queued is written
//! before the process exits (tracing-appender waits up to one second for the writer).

use std::io::{BufWriter, IsTerminal as _};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// How many lines may wait for the writer thread before new ones are dropped.
pub const QUEUE_LINES: usize = 65_536;

/// The writer's buffer: what one batch of queued lines is written with.
const BUFFER_BYTES: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

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
        .finish(BufWriter::with_capacity(BUFFER_BYTES, std::io::stderr()));
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

/// Lines dropped so far because the queue was full (0 before [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
}
