//! The file intake inside the gateway process: the `hpke-intake` crate (OpenPGP over
//! SFTP, in `crates/intake`) given the gateway's proxy as its upload API, the gateway's
//! metrics and rustls setup, and a thread of its own.
//!
//! Built without the `intake` feature, the same names exist with nothing behind them:
//! [`IntakeConfig`] has no values, and a configuration with an `[intake]` table is
//! refused with a message saying so. The rest of the gateway needs no `cfg`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

#[cfg(feature = "intake")]
pub use imp::runner;
pub use imp::{IntakeConfig, RawIntake, RunSender, load, run_pull, spawn};

/// `intake run`: asks the gateway on `admin` (default: the config's admin listener) to
/// pull `account` now; when nothing listens there, pulls in this process (which needs
/// the intake's storage lock, so it fails while another intake runs elsewhere). Returns
/// the report as JSON.
pub async fn run_now(
    config: crate::config::Config,
    account: String,
    admin: Option<std::net::SocketAddr>,
) -> Result<serde_json::Value, crate::BoxError> {
    let admin = admin.or(config.ops.admin_listen.filter(|a| a.port() != 0));
    if let Some(admin) = admin {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(2))
            .build()?;
        let sent = client
            .post(format!("http://{admin}/intake/run"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "account": account }).to_string())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
                if status.is_success() {
                    return Ok(body);
                }
                let message = body["error"].as_str().unwrap_or("no reason given");
                return Err(format!("the gateway at {admin} answered {status}: {message}").into());
            }
            Err(e) if e.is_connect() => {
                tracing::info!(%admin, "no gateway answers on the admin listener: pulling in this process");
            }
            Err(e) => return Err(format!("the gateway at {admin}: {e}").into()),
        }
    }
    imp::run_here(config, account).await
}

/// The report of `intake run` as lines for a person.
pub fn describe_report(report: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let fetched = report["fetched"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "pulled {} from {}: {} file(s) fetched\n",
        text(&report["account"]),
        text(&report["server"]),
        fetched.len()
    );
    for f in &fetched {
        out.push_str(&format!(
            "  {}  {} bytes  sha256 {}  {}\n",
            text(&f["name"]),
            f["bytes"],
            text(&f["sha256"]),
            text(&f["outcome"])
        ));
    }
    if let Some(n) = report["already_fetched"].as_u64().filter(|n| *n > 0) {
        out.push_str(&format!(
            "  {n} file(s) fetched before and unchanged: not fetched again\n"
        ));
    }
    for name in report["changing"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}  still changing on the server: left for the next run\n",
            text(name)
        ));
    }
    for p in report["problems"].as_array().into_iter().flatten() {
        out.push_str(&format!("  not pulled: {}\n", text(p)));
    }
    if let Some(e) = report["error"].as_str() {
        out.push_str(&format!("pull failed: {e}\n"));
    }
    out
}

/// The intake configuration a reload replaces.
pub type SharedIntake = Arc<ArcSwap<IntakeConfig>>;

/// Runs the intake on a thread of its own until `stop` turns true.
pub type StopSignal = tokio::sync::watch::Receiver<bool>;

/// The paths a running intake must not change under it without a restart, and where
/// its mail and webhook go: what [`crate::reload::fixed_settings`] compares.
pub fn fixed_summary(config: &IntakeConfig) -> String {
    imp::fixed_summary(config)
}

/// The files the intake's configuration reads (keys, passphrases): watched for reload.
pub fn files(raw: &RawIntake, base: &Path) -> Vec<PathBuf> {
    imp::files(raw, base)
}

/// One published OpenPGP key: its armored text and the end of its validity.
pub type ArmoredKey = (String, Option<SystemTime>);

/// The armored OpenPGP public keys customers of `account` encrypt to, valid at `now`
/// (only the key `key_id` when given), each with its `not_after`; `None` when the
/// account has no such key.
pub fn armored_keys(
    config: &IntakeConfig,
    account: &str,
    key_id: Option<&str>,
    now: SystemTime,
) -> Option<Result<Vec<ArmoredKey>, String>> {
    imp::armored_keys(config, account, key_id, now)
}

/// How many intake accounts a configuration has.
pub fn account_count(config: &IntakeConfig) -> usize {
    imp::account_count(config)
}

/// Where the intake keeps its journal and finished jobs.
pub fn state_dir(config: &IntakeConfig) -> &Path {
    imp::state_dir(config)
}

#[cfg(feature = "intake")]
mod imp {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use axum::body::Body;
    use bytes::Bytes;
    use hpke_intake::host::{IntakeMetrics, UploadAnswer, UploadApi, UploadFuture};
    use http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::{SharedIntake, StopSignal};
    use crate::error::ErrorCode;
    use crate::metrics::Metrics;
    use crate::proxy::Proxy;

    pub use hpke_intake::settings::{IntakeConfig, RawIntake};

    /// How long an upstream answer's body may take.
    const UPLOAD_BODY_TIMEOUT: Duration = Duration::from_secs(60);

    /// Checks `[intake]` and loads its keys.
    pub fn load(raw: &RawIntake, base: &Path) -> Result<IntakeConfig, Vec<String>> {
        hpke_intake::settings::load(raw, base)
    }

    pub(super) fn files(raw: &RawIntake, base: &Path) -> Vec<PathBuf> {
        hpke_intake::settings::files(raw, base)
    }

    pub(super) fn fixed_summary(i: &IntakeConfig) -> String {
        format!(
            "{:?}",
            (
                &i.state_dir,
                i.smtp.as_ref().map(|s| (&s.host, s.port)),
                i.print_mail,
                &i.webhook_url
            )
        )
    }

    pub(super) fn account_count(i: &IntakeConfig) -> usize {
        i.accounts.len()
    }

    pub(super) fn state_dir(i: &IntakeConfig) -> &Path {
        &i.state_dir
    }

    pub(super) fn armored_keys(
        config: &IntakeConfig,
        account: &str,
        key_id: Option<&str>,
        now: SystemTime,
    ) -> Option<Result<Vec<super::ArmoredKey>, String>> {
        let account = config.accounts.iter().find(|a| a.id == account)?;
        let keys: Vec<_> = account
            .keys
            .iter()
            .filter(|k| k.valid_at(now))
            .filter(|k| key_id.is_none_or(|id| k.id() == id))
            .collect();
        if keys.is_empty() {
            return None;
        }
        Some(
            keys.iter()
                .map(|k| k.public_armored().map(|text| (text, k.not_after())))
                .collect(),
        )
    }

    /// The gateway's proxy as the intake's upload API: the request goes through the
    /// same upstream client, timeouts and TLS as client traffic.
    #[derive(Debug)]
    struct ProxyUpload(Proxy);

    impl UploadApi for ProxyUpload {
        fn send(&self, request: Request<Bytes>) -> UploadFuture<'_> {
            let proxy = self.0.clone();
            Box::pin(async move {
                let Ok(response) = proxy.oneshot(request.map(Body::from)).await;
                let status = response.status();
                let from_gateway = response.extensions().get::<ErrorCode>().is_some();
                let body =
                    tokio::time::timeout(UPLOAD_BODY_TIMEOUT, response.into_body().collect())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                UploadAnswer {
                    status,
                    body,
                    from_gateway,
                }
            })
        }
    }

    impl IntakeMetrics for Metrics {
        fn file(&self, result: &'static str, uploaded: u64, skipped: u64) {
            self.intake_file(result, uploaded, skipped);
        }

        fn deferred(&self) {
            self.intake_deferred();
        }

        fn pull(
            &self,
            account: &str,
            result: Result<(u64, u64), &'static str>,
            consecutive_failures: u32,
        ) {
            self.intake_pull(account, result, consecutive_failures);
        }
    }

    fn webhook_tls(https: bool) -> Result<rustls::ClientConfig, String> {
        if https {
            crate::tls::upstream_client_config(None, None)
        } else {
            crate::tls::upstream_client_config_for_http()
        }
    }

    /// `print_mail`: each mail to standard output, as one write.
    fn print_mail(text: &str) -> Result<(), String> {
        crate::cli::write_stdout(text.as_bytes()).map_err(|e| e.to_string())
    }

    /// The intake, sending its records through `proxy` and counting into `metrics`, not
    /// yet running (`spawn` runs it; the demo drives it itself).
    pub fn runner(
        intake: SharedIntake,
        proxy: Proxy,
        metrics: Arc<dyn IntakeMetrics>,
    ) -> Result<hpke_intake::Intake, crate::StartError> {
        hpke_intake::Intake::new(
            intake,
            Arc::new(ProxyUpload(proxy)),
            metrics,
            webhook_tls,
            print_mail,
        )
        .map_err(crate::StartError::Intake)
    }

    /// Where `intake run` requests go: the running intake answers them between scans,
    /// so its journal keeps one writer.
    pub type RunSender = tokio::sync::mpsc::Sender<hpke_intake::pull::RunRequest>;

    /// Asks the running intake to pull `account` now; the JSON report, or the status
    /// and reason it could not run.
    pub async fn run_pull(
        runs: &RunSender,
        account: String,
    ) -> Result<String, (http::StatusCode, String)> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = hpke_intake::pull::RunRequest { account, reply };
        let stopped = || {
            (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "the intake is not running".to_owned(),
            )
        };
        runs.send(request).await.map_err(|_| stopped())?;
        match answer.await.map_err(|_| stopped())? {
            Ok(report) => serde_json::to_string(&report)
                .map_err(|e| (http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
            Err(e) => Err((http::StatusCode::NOT_FOUND, e)),
        }
    }

    /// `intake run` without a running gateway: the intake of `config`, in this process.
    pub(super) async fn run_here(
        config: crate::config::Config,
        account: String,
    ) -> Result<serde_json::Value, crate::BoxError> {
        let gateway = crate::server::Gateway::new(config)?;
        let shared = gateway
            .intake()
            .cloned()
            .ok_or("the configuration has no [intake]")?;
        let mut intake = runner(shared, gateway.fresh_proxy(), gateway.metrics().clone())?;
        let report = intake.pull_now(&account).await?;
        Ok(serde_json::to_value(report)?)
    }

    /// Starts the intake on a thread of its own, with a current-thread runtime, until
    /// `stop` turns true; returns the thread and where `intake run` requests go.
    pub fn spawn(
        intake: SharedIntake,
        proxy: Proxy,
        metrics: Arc<Metrics>,
        mut stop: StopSignal,
    ) -> Result<(std::thread::JoinHandle<()>, RunSender), crate::StartError> {
        let mut runner = runner(intake, proxy, metrics)?;
        let runs = runner.run_requests();
        let thread = std::thread::Builder::new()
            .name("hpke-gateway-intake".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "the intake cannot start");
                        return;
                    }
                };
                rt.block_on(runner.run(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                }));
            })?;
        Ok((thread, runs))
    }
}

#[cfg(not(feature = "intake"))]
mod imp {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::{SharedIntake, StopSignal};
    use crate::metrics::Metrics;
    use crate::proxy::Proxy;

    /// No intake in this build: a configuration cannot hold one.
    #[derive(Debug)]
    pub enum IntakeConfig {}

    /// An `[intake]` table, which this build refuses.
    #[derive(Debug)]
    pub enum RawIntake {}

    impl<'de> serde::Deserialize<'de> for RawIntake {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Err(serde::de::Error::custom(
                "this hpke-gateway was built without the file intake (cargo feature `intake`)",
            ))
        }
    }

    /// Never called: there is no [`RawIntake`] value.
    pub fn load(raw: &RawIntake, _: &Path) -> Result<IntakeConfig, Vec<String>> {
        match *raw {}
    }

    pub(super) fn files(raw: &RawIntake, _: &Path) -> Vec<PathBuf> {
        match *raw {}
    }

    pub(super) fn fixed_summary(config: &IntakeConfig) -> String {
        match *config {}
    }

    pub(super) fn account_count(config: &IntakeConfig) -> usize {
        match *config {}
    }

    pub(super) fn state_dir(config: &IntakeConfig) -> &Path {
        match *config {}
    }

    pub(super) fn armored_keys(
        config: &IntakeConfig,
        _: &str,
        _: Option<&str>,
        _: SystemTime,
    ) -> Option<Result<Vec<super::ArmoredKey>, String>> {
        match *config {}
    }

    /// This build has no intake to run.
    pub(super) async fn run_here(
        _: crate::config::Config,
        _: String,
    ) -> Result<serde_json::Value, crate::BoxError> {
        Err("this hpke-gateway was built without the file intake (cargo feature `intake`)".into())
    }

    /// No intake runs, so no request can be sent.
    #[derive(Debug, Clone)]
    pub enum RunSender {}

    /// Never called: there is no [`RunSender`] value.
    pub async fn run_pull(
        runs: &RunSender,
        _: String,
    ) -> Result<String, (http::StatusCode, String)> {
        match *runs {}
    }

    /// Never called: there is no [`IntakeConfig`] value to run.
    pub fn spawn(
        intake: SharedIntake,
        _: Proxy,
        _: Arc<Metrics>,
        _: StopSignal,
    ) -> Result<(std::thread::JoinHandle<()>, RunSender), crate::StartError> {
        match **intake.load() {}
    }
}
