//! Prometheus metrics, served as text on the admin listener's `/metrics`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hpke_gateway_requests_total` | counter | `mode` (encrypted / plaintext), `status`, `code` (the gateway's error code, `0` when the upstream answered), `account` (only with `metrics_account_labels = true`) |
//! | `hpke_gateway_request_duration_seconds` | histogram | `mode` |
//! | `hpke_gateway_decrypt_duration_seconds` | histogram | |
//! | `hpke_gateway_encrypt_duration_seconds` | histogram | |
//! | `hpke_gateway_upstream_duration_seconds` | histogram | (time to the upstream's response head) |
//! | `hpke_gateway_upstream_errors_total` | counter | `code` (5001 unreachable, 5002 timeout, 5003 bad response) |
//! | `hpke_gateway_request_bytes_total`, `hpke_gateway_response_bytes_total` | counter | (body bytes from and to clients) |
//! | `hpke_gateway_in_flight_requests` | gauge | |
//! | `hpke_gateway_overload_rejections_total` | counter | (503s at `max_concurrent_requests`) |
//! | `hpke_gateway_log_lines_dropped_total` | counter | (log lines dropped because the log writer's queue was full; see `logging`) |
//! | `hpke_gateway_server_key_age_seconds` | gauge | `key_id`, `state` (since the key file was written: for a key `keys rotate` made, its age) |
//! | `hpke_gateway_server_key_not_after_seconds` | gauge | `key_id` (Unix time; only keys with a `not_after`) |
//! | `hpke_gateway_reloads_total` | counter | `result` (ok / failed) |
//! | `hpke_gateway_intake_files_total` | counter | `result` (imported / failed / refused: a manifest refused before its job started) |
//! | `hpke_gateway_intake_records_total` | counter | `result` (uploaded / skipped: bad rows) |
//! | `hpke_gateway_intake_deferrals_total` | counter | (jobs put off because the upstream was unavailable) |
//! | `hpke_gateway_intake_pull_last_success_timestamp_seconds` | gauge | `account` (Unix time of the last pull from the customer's server that succeeded; 0 before the first) |
//! | `hpke_gateway_intake_pull_consecutive_failures` | gauge | `account` (failed pulls since the last success) |
//! | `hpke_gateway_intake_pull_files_total`, `hpke_gateway_intake_pull_bytes_total` | counter | `account` (files and bytes fetched) |
//! | `hpke_gateway_intake_pull_failures_total` | counter | `account`, `reason` (host_key / login / unreachable / transfer / too_large / local) |
//!
//! Account ids are labels only when the operator opts in: each account is a series of
//! its own, so a gateway with many accounts would otherwise flood Prometheus. The pull
//! series are the exception: they exist only for intake accounts with
//! `[intake.accounts.pull]`, a handful the operator configured, and an alert must say
//! which customer's server fails. Each account's series appear at its first pull (at
//! start), every failure reason at 0.
//!
//! The series of `reloads`, `upstream_errors`, `intake_files` and `intake_records` exist
//! from the start at 0, one per label value listed above: a series that first appears
//! at 1 shows no `increase()`, so an alert on the first failed reload or intake file
//! after a start would not fire, and a family without series is not in `/metrics` at all.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Buf as _;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::encoding::{EncodeLabel as _, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::keys::ServerKeys;

/// Whether a request used the encryption headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `Content-Type` or `Accept` named the HPKE media type.
    Encrypted,
    /// Neither did.
    Plaintext,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Encrypted => "encrypted",
            Mode::Plaintext => "plaintext",
        }
    }
}

/// `mode`, `status`, `code`, and `account` only when account labels are on (the
/// derived encoding would print `account=""`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RequestLabels {
    mode: &'static str,
    status: u16,
    code: u16,
    account: Option<String>,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("mode", self.mode).encode(encoder.encode_label())?;
        ("status", u64::from(self.status)).encode(encoder.encode_label())?;
        ("code", u64::from(self.code)).encode(encoder.encode_label())?;
        if let Some(account) = &self.account {
            ("account", account.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KeyLabels {
    key_id: String,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KeyIdLabel {
    key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AccountLabel {
    account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PullFailureLabels {
    account: String,
    reason: &'static str,
}

/// The reasons a pull fails, as `hpke_intake::pull::RemoteError::reason` names them.
const PULL_FAILURE_REASONS: [&str; 6] = [
    "host_key",
    "login",
    "unreachable",
    "transfer",
    "too_large",
    "local",
];

/// The scheduled-pull series.
#[derive(Debug, Default)]
struct PullMetrics {
    last_success: Family<AccountLabel, Gauge>,
    consecutive_failures: Family<AccountLabel, Gauge>,
    files: Family<AccountLabel, Counter>,
    bytes: Family<AccountLabel, Counter>,
    failures: Family<PullFailureLabels, Counter>,
}

impl PullMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "intake_pull_last_success_timestamp_seconds",
            "Unix time of the last successful pull from the customer's SFTP server",
            self.last_success.clone(),
        );
        r.register(
            "intake_pull_consecutive_failures",
            "Failed pulls since the last successful one",
            self.consecutive_failures.clone(),
        );
        r.register(
            "intake_pull_files",
            "Files fetched from customers' SFTP servers",
            self.files.clone(),
        );
        r.register(
            "intake_pull_bytes",
            "Bytes fetched from customers' SFTP servers",
            self.bytes.clone(),
        );
        r.register(
            "intake_pull_failures",
            "Failed pulls from customers' SFTP servers, by reason",
            self.failures.clone(),
        );
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 10 µs to about 84 s.
    Histogram::new(exponential_buckets(1e-5, 2.0, 24))
}

/// Every metric the gateway keeps. One instance lives for the whole process, across
/// reloads.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    account_labels: bool,
    requests: Family<RequestLabels, Counter>,
    /// The family's two histograms, created up front: no label lookup per request.
    request_duration: [Histogram; 2],
    decrypt: Histogram,
    encrypt: Histogram,
    upstream: Histogram,
    upstream_errors: Family<CodeLabel, Counter>,
    request_bytes: Counter,
    response_bytes: Counter,
    in_flight: Gauge,
    overloaded: Counter,
    key_age: Family<KeyLabels, Gauge>,
    key_not_after: Family<KeyIdLabel, Gauge>,
    reloads: Family<ResultLabel, Counter>,
    intake_files: Family<ResultLabel, Counter>,
    intake_records: Family<ResultLabel, Counter>,
    intake_deferrals: Counter,
    intake_pulls: std::sync::Arc<PullMetrics>,
    upstream_bodies_dropped: Counter,
    underscore_headers_dropped: Counter,
    buffer_budget_rejections: Counter,
    buffered_body_bytes: Gauge,
    protocol_errors: Family<KindLabel, Counter>,
    ohttp: Family<OutcomeLabel, Counter>,
    log_lines_dropped: Counter,
    log_lines_sync: std::sync::Mutex<()>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Metrics {
    /// A fresh set of metrics; `account_labels` adds the account id to request counts.
    pub fn new(account_labels: bool) -> Self {
        let mut registry = Registry::with_prefix("hpke_gateway");
        let requests = Family::default();
        let request_duration: HistogramFamily<ModeLabel> =
            Family::new_with_constructor(latency_histogram);
        let (decrypt, encrypt, upstream) = (
            latency_histogram(),
            latency_histogram(),
            latency_histogram(),
        );
        let upstream_errors = Family::default();
        let (request_bytes, response_bytes, overloaded) =
            (Counter::default(), Counter::default(), Counter::default());
        let in_flight = Gauge::default();
        let key_age = Family::default();
        let key_not_after = Family::default();
        let reloads = Family::default();
        let (intake_files, intake_records) = (Family::default(), Family::default());
        let intake_deferrals = Counter::default();
        let intake_pulls = std::sync::Arc::new(PullMetrics::default());
        let (upstream_bodies_dropped, underscore_headers_dropped, buffer_budget_rejections) =
            (Counter::default(), Counter::default(), Counter::default());
        let buffered_body_bytes = Gauge::default();
        let protocol_errors = Family::default();
        let ohttp = Family::default();
        let r = &mut registry;
        r.register(
            "ohttp_requests",
            "Oblivious HTTP requests by outcome: forwarded, or refused as bad_media_type, too_large, malformed, unknown_key, decryption_failed, bad_inner_request, target_not_allowed, replayed, date_outside, replay_cache_full, replay_store_unavailable, truncated, overloaded",
            ohttp.clone(),
        );
        r.register(
            "upstream_bodies_dropped",
            "Bodies an upstream sent with 204, 205 or 304 to a request that asked for encryption, dropped unsent",
            upstream_bodies_dropped.clone(),
        );
        r.register(
            "underscore_headers_dropped",
            "Request header fields dropped because their name has an underscore",
            underscore_headers_dropped.clone(),
        );
        r.register(
            "buffer_budget_rejections",
            "Requests refused with 503 because the memory budget for buffered bodies was spent",
            buffer_budget_rejections.clone(),
        );
        r.register(
            "buffered_body_bytes",
            "Bytes of request and response bodies held in memory for decryption and encryption",
            buffered_body_bytes.clone(),
        );
        r.register(
            "http_protocol_errors",
            "Connections closed by the HTTP layer itself, by kind (head_too_large: hyper answered a bare 431)",
            protocol_errors.clone(),
        );
        r.register(
            "requests",
            "Requests answered, by mode, status and gateway error code (0: the upstream answered)",
            requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request head to response head",
            request_duration.clone(),
        );
        r.register(
            "decrypt_duration_seconds",
            "Time to open a request envelope",
            decrypt.clone(),
        );
        r.register(
            "encrypt_duration_seconds",
            "Time to seal a response envelope",
            encrypt.clone(),
        );
        r.register(
            "upstream_duration_seconds",
            "Time from forwarding to the upstream's response head",
            upstream.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream failures by gateway error code",
            upstream_errors.clone(),
        );
        r.register(
            "request_bytes",
            "Request body bytes received from clients",
            request_bytes.clone(),
        );
        r.register(
            "response_bytes",
            "Response body bytes sent to clients",
            response_bytes.clone(),
        );
        r.register(
            "in_flight_requests",
            "Requests in flight",
            in_flight.clone(),
        );
        r.register(
            "overload_rejections",
            "Requests refused with 503 at max_concurrent_requests",
            overloaded.clone(),
        );
        let log_lines_dropped = Counter::default();
        r.register(
            "log_lines_dropped",
            "Log lines dropped because the log writer's queue was full",
            log_lines_dropped.clone(),
        );
        r.register(
            "server_key_age_seconds",
            "Seconds since each server key's file was last written",
            key_age.clone(),
        );
        r.register(
            "server_key_not_after_seconds",
            "End of validity of each server key that has one, Unix time",
            key_not_after.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads by result",
            reloads.clone(),
        );
        r.register(
            "intake_files",
            "Files the intake finished, by result",
            intake_files.clone(),
        );
        r.register(
            "intake_records",
            "Records the intake uploaded or skipped",
            intake_records.clone(),
        );
        r.register(
            "intake_deferrals",
            "Intake jobs put off because the upstream was unavailable",
            intake_deferrals.clone(),
        );
        intake_pulls.register(r);
        for result in ["ok", "failed"] {
            reloads.get_or_create_owned(&ResultLabel { result });
        }
        for code in [5001, 5002, 5003] {
            upstream_errors.get_or_create_owned(&CodeLabel { code });
        }
        for result in ["imported", "failed", "refused"] {
            intake_files.get_or_create_owned(&ResultLabel { result });
        }
        for result in ["uploaded", "skipped"] {
            intake_records.get_or_create_owned(&ResultLabel { result });
        }
        let request_duration = [Mode::Encrypted, Mode::Plaintext].map(|mode| {
            request_duration
                .get_or_create(&ModeLabel {
                    mode: mode.as_str(),
                })
                .clone()
        });
        Self {
            registry,
            account_labels,
            requests,
            request_duration,
            decrypt,
            encrypt,
            upstream,
            upstream_errors,
            request_bytes,
            response_bytes,
            in_flight,
            overloaded,
            log_lines_dropped,
            log_lines_sync: std::sync::Mutex::new(()),
            key_age,
            key_not_after,
            reloads,
            intake_files,
            intake_records,
            intake_deferrals,
            intake_pulls,
            upstream_bodies_dropped,
            underscore_headers_dropped,
            buffer_budget_rejections,
            buffered_body_bytes,
            protocol_errors,
            ohttp,
        }
    }

    /// Counts an Oblivious HTTP request's outcome.
    pub fn ohttp(&self, outcome: &'static str) {
        self.ohttp.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts an upstream body dropped because its status carries none.
    pub fn upstream_body_dropped(&self) {
        self.upstream_bodies_dropped.inc();
    }

    /// Counts request header fields dropped for an underscore in their name.
    pub fn underscore_headers_dropped(&self, n: u64) {
        self.underscore_headers_dropped.inc_by(n);
    }

    /// Counts a request refused because the buffer budget was spent.
    pub fn buffer_budget_rejected(&self) {
        self.buffer_budget_rejections.inc();
    }

    /// The gauge of buffered body bytes.
    pub fn buffered_body_bytes(&self) -> &Gauge {
        &self.buffered_body_bytes
    }

    /// Counts a connection the HTTP layer closed with an error of `kind`.
    pub fn protocol_error(&self, kind: &'static str) {
        self.protocol_errors
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// Whether request counts carry the account id.
    pub fn account_labels(&self) -> bool {
        self.account_labels
    }

    /// Counts an answered request.
    pub fn request(
        &self,
        mode: Mode,
        status: u16,
        code: u16,
        account: Option<&str>,
        elapsed: Duration,
    ) {
        let labels = RequestLabels {
            mode: mode.as_str(),
            status,
            code,
            account: account.filter(|_| self.account_labels).map(str::to_owned),
        };
        self.requests.get_or_create(&labels).inc();
        let histogram = match mode {
            Mode::Encrypted => &self.request_duration[0],
            Mode::Plaintext => &self.request_duration[1],
        };
        histogram.observe(elapsed.as_secs_f64());
    }

    /// Records the time an envelope took to open.
    pub fn decrypted(&self, elapsed: Duration) {
        self.decrypt.observe(elapsed.as_secs_f64());
    }

    /// Records the time an envelope took to seal.
    pub fn encrypted(&self, elapsed: Duration) {
        self.encrypt.observe(elapsed.as_secs_f64());
    }

    /// Records an upstream round trip to the response head; `error_code` when it failed.
    pub fn upstream(&self, elapsed: Duration, error_code: Option<u16>) {
        self.upstream.observe(elapsed.as_secs_f64());
        if let Some(code) = error_code {
            self.upstream_errors
                .get_or_create(&CodeLabel { code })
                .inc();
        }
    }

    /// Counts a request refused at the concurrency limit.
    pub fn overloaded(&self) {
        self.overloaded.inc();
    }

    /// The in-flight gauge.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// Counts a reload.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }
    /// Counts a file the intake finished (`imported`, `failed`) or refused before its
    /// job started (`refused`), with the records it uploaded and skipped.
    pub fn intake_file(&self, result: &'static str, uploaded: u64, skipped: u64) {
        // Records first: a reader that sees the file counted sees its records too.
        for (result, n) in [("uploaded", uploaded), ("skipped", skipped)] {
            self.intake_records
                .get_or_create(&ResultLabel { result })
                .inc_by(n);
        }
        self.intake_files
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts an intake job put off until the upstream is back.
    pub fn intake_deferred(&self) {
        self.intake_deferrals.inc();
    }

    /// Counts one pull of `account`: `Ok((files, bytes))` or `Err(reason)`, with the
    /// failed pulls since the last success.
    pub fn intake_pull(
        &self,
        account: &str,
        result: Result<(u64, u64), &'static str>,
        consecutive_failures: u32,
    ) {
        let p = &self.intake_pulls;
        let label = AccountLabel {
            account: account.to_owned(),
        };
        // Every series of the account exists from its first pull.
        for reason in PULL_FAILURE_REASONS {
            let _ = p.failures.get_or_create(&PullFailureLabels {
                account: account.to_owned(),
                reason,
            });
        }
        let _ = p.last_success.get_or_create(&label);
        match result {
            Ok((files, bytes)) => {
                p.files.get_or_create(&label).inc_by(files);
                p.bytes.get_or_create(&label).inc_by(bytes);
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                p.last_success
                    .get_or_create(&label)
                    .set(i64::try_from(now).unwrap_or(i64::MAX));
            }
            Err(reason) => {
                let _ = p.files.get_or_create(&label);
                let _ = p.bytes.get_or_create(&label);
                p.failures
                    .get_or_create(&PullFailureLabels {
                        account: account.to_owned(),
                        reason,
                    })
                    .inc();
            }
        }
        p.consecutive_failures
            .get_or_create(&label)
            .set(i64::from(consecutive_failures));
    }

    /// The counter for request body bytes.
    pub fn request_bytes(&self) -> Counter {
        self.request_bytes.clone()
    }

    /// The counter for response body bytes.
    pub fn response_bytes(&self) -> Counter {
        self.response_bytes.clone()
    }

    /// The text exposition of every metric, with the key gauges taken from `keys` now.
    pub fn render(&self, keys: &ServerKeys) -> String {
        self.key_age.clear();
        self.key_not_after.clear();
        let now = SystemTime::now();
        for key in keys.iter() {
            let key_id = key.id().map_or_else(|| "-".into(), |id| id.to_string());
            let age = now.duration_since(key.written_at()).unwrap_or_default();
            self.key_age
                .get_or_create(&KeyLabels {
                    key_id: key_id.clone(),
                    state: key.state().as_str(),
                })
                .set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
            if let Some(end) = key.not_after() {
                let unix = end
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                self.key_not_after
                    .get_or_create(&KeyIdLabel { key_id })
                    .set(i64::try_from(unix.as_secs()).unwrap_or(i64::MAX));
            }
        }
        {
            // One render at a time brings the counter up to the logger's count.
            let _one = self
                .log_lines_sync
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let dropped = crate::logging::dropped_lines();
            if let Some(more) = dropped.checked_sub(self.log_lines_dropped.get())
                && more > 0
            {
                self.log_lines_dropped.inc_by(more);
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A body that adds the length of each data frame to a counter.
#[derive(Debug)]
pub struct Counted<B> {
    inner: B,
    counter: Counter,
}

impl<B> Counted<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, counter: Counter) -> Self {
        Self { inner, counter }
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.remaining() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
