//! What the intake needs from the process it runs in: the upload API to send records
//! to, counters to bump, TLS settings for webhooks, and where `print_mail` prints. The
//! gateway provides them (its proxy, its Prometheus metrics, its rustls setup, its
//! standard output); tests may provide stubs.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{Request, StatusCode};

/// The upstream's answer to one upload request.
#[derive(Debug)]
pub struct UploadAnswer {
    /// The status the client would have seen.
    pub status: StatusCode,
    /// The start of the body (the intake quotes at most 300 bytes of it).
    pub body: Bytes,
    /// The gateway answered itself (the upstream unreachable, timing out or
    /// overloaded), so the same request may pass later.
    pub from_gateway: bool,
}

/// A future an [`UploadApi`] returns.
pub type UploadFuture<'a> = Pin<Box<dyn Future<Output = UploadAnswer> + Send + 'a>>;

/// Where batches of records go: `POST upload_path` with the account's headers.
pub trait UploadApi: Send + Sync + std::fmt::Debug {
    /// Sends one request and returns its answer; never fails (a transport failure is
    /// an answer with `from_gateway` set).
    fn send(&self, request: Request<Bytes>) -> UploadFuture<'_>;
}

/// The counters the intake keeps.
pub trait IntakeMetrics: Send + Sync + std::fmt::Debug {
    /// A file finished with `result` (`imported`, `failed`, `refused`) after uploading
    /// and skipping these many records.
    fn file(&self, result: &'static str, uploaded: u64, skipped: u64);
    /// A job was put off until the upstream is back.
    fn deferred(&self);
    /// A scheduled pull of `account` ended: `Ok((files, bytes))` fetched, or `Err(reason)`
    /// (`host_key`, `login`, `unreachable`, `transfer`, `too_large`, `local`), after
    /// `consecutive_failures` failed pulls in a row (0 after a success).
    fn pull(
        &self,
        account: &str,
        result: Result<(u64, u64), &'static str>,
        consecutive_failures: u32,
    ) {
        let _ = (account, result, consecutive_failures);
    }
}

/// Builds the rustls client configuration for a webhook: `true` for an `https` URL
/// (verifying against the system's roots), `false` for plain `http`.
pub type WebhookTls = fn(https: bool) -> Result<rustls::ClientConfig, String>;

/// Writes one mail that `print_mail` prints instead of sending (the whole text, ending
/// in a newline); the gateway writes it to standard output. An error is logged.
pub type PrintMail = fn(&str) -> Result<(), String>;
