//! The encrypted file intake: customers upload OpenPGP-encrypted CSV or JSON files with
//! a manifest over SFTP (OpenSSH's `internal-sftp`, chrooted per customer); the intake
//! finds them in the upload directories sshd writes, decrypts them to a download
//! directory the SFTP side cannot see, maps their columns and sends the records to the
//! upstream's upload API in batches, and tells the customer by email (and webhook) at
//! pickup, success and failure.
//!
//! - [`manifest`]: the manifest (JSON or YAML) and its checks.
//! - [`pgp`]: keys and streaming decryption (rPGP).
//! - [`ingest`]: CSV/JSON to upload records.
//! - [`journal`]: what was picked up and how far it got, across restarts.
//! - [`notify`]: email and webhook notices.
//! - [`settings`]: the `[intake]` configuration.
//!
//! A file is processed when its manifest is complete and the file the manifest names is
//! complete (neither changed for `settle_ms`). Afterwards both move out of the upload
//! directory, to `state_dir/<account>/processed/` or, with a `.error.json` beside them,
//! to `state_dir/<account>/failed/`; a file uploaded again under the same name is a new
//! job.

pub mod ingest;
pub mod journal;
pub mod manifest;
pub mod notify;
pub mod pgp;
pub mod settings;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use axum::body::Body;
use http::{HeaderValue, Request};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use crate::error::ErrorCode;
use crate::proxy::Proxy;
use ingest::{BadRow, Item};
use journal::Journal;
use manifest::Manifest;
use notify::{Notice, Notifier, Stage};
use settings::{IntakeAccount, IntakeConfig};

/// The intake configuration a reload replaces.
pub type SharedIntake = Arc<ArcSwap<IntakeConfig>>;

/// Most skipped rows listed in a notice.
const LISTED_BAD_ROWS: usize = 100;
/// Largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// True if `name` is a manifest's name.
pub fn is_manifest(name: &str) -> bool {
    [
        ".manifest",
        ".manifest.json",
        ".manifest.yaml",
        ".manifest.yml",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

/// The decrypted file's name: `.asc` or `.pgp` (or `.gpg`) removed.
pub fn decrypted_name(name: &str) -> &str {
    for suffix in [".asc", ".pgp", ".gpg"] {
        if let Some(stem) = name.strip_suffix(suffix)
            && !stem.is_empty()
        {
            return stem;
        }
    }
    name
}

/// Runs the intake.
#[derive(Debug)]
pub struct Intake {
    config: SharedIntake,
    proxy: Proxy,
    journal: Journal,
    notifier: Notifier,
    warned: HashSet<PathBuf>,
}

/// How one job ended.
#[derive(Debug)]
struct Outcome {
    uploaded: u64,
    skipped: u64,
    bad_rows: Vec<BadRow>,
}

/// A failure, with what was counted before it.
#[derive(Debug)]
struct Failure {
    reason: String,
    skipped: u64,
    bad_rows: Vec<BadRow>,
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self {
            reason,
            skipped: 0,
            bad_rows: Vec::new(),
        }
    }
}

impl Intake {
    /// Opens the journal under `state_dir` (created 0700) and sets up notifications.
    pub fn new(config: SharedIntake, proxy: Proxy) -> Result<Self, String> {
        let current = config.load();
        create_private_dir(&current.state_dir)?;
        let journal = Journal::open(&current.state_dir.join("journal.jsonl"))
            .map_err(|e| format!("intake journal: {e}"))?;
        let notifier = Notifier::new(current.smtp.as_ref(), current.webhook_url.as_ref())?;
        drop(current);
        Ok(Self {
            config,
            proxy,
            journal,
            notifier,
            warned: HashSet::new(),
        })
    }

    /// Scans and processes until `stop` completes; a job in progress finishes first.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            self.scan().await;
            let poll = self.config.load().poll;
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One pass over every account's upload directory.
    pub async fn scan(&mut self) {
        let config = self.config.load_full();
        for account in &config.accounts {
            let manifests = match self.manifests(account) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(account = %account.id, error = %e, "cannot list the upload directory");
                    continue;
                }
            };
            for name in manifests {
                self.consider(&config, account, &name).await;
            }
        }
    }

    /// The manifests in the upload directory; symlinks are never followed (and reported
    /// once).
    fn manifests(&mut self, account: &IntakeAccount) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&account.upload_dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                if self.warned.insert(entry.path()) {
                    tracing::warn!(account = %account.id, file = %name, "a symlink in the upload directory is ignored");
                }
                continue;
            }
            if kind.is_file() && is_manifest(&name) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Looks at one manifest: waits while it or its file is incomplete, else runs the job.
    async fn consider(
        &mut self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        manifest_name: &str,
    ) {
        let dir = &account.upload_dir;
        let manifest_path = dir.join(manifest_name);
        let Ok(manifest_meta) = std::fs::symlink_metadata(&manifest_path) else {
            return;
        };
        if !settled(&manifest_meta, config.settle) {
            return;
        }
        let text = match read_small(&manifest_path) {
            Ok(t) => t,
            Err(e) => {
                self.fail_early(
                    config,
                    account,
                    manifest_name,
                    None,
                    &format!("manifest: {e}"),
                    None,
                )
                .await;
                return;
            }
        };
        let manifest = match manifest::parse(&text) {
            Ok(m) => m,
            Err(problems) => {
                let reason = format!(
                    "the manifest has {} problem(s): {}",
                    problems.len(),
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                let to = lenient_email(&text);
                self.fail_early(config, account, manifest_name, None, &reason, to)
                    .await;
                return;
            }
        };
        let file_path = dir.join(&manifest.file_name);
        let file_meta = match std::fs::symlink_metadata(&file_path) {
            Ok(m) => m,
            Err(_) => {
                let waited = manifest_meta
                    .modified()
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .unwrap_or_default();
                if waited >= config.missing_file_timeout {
                    let reason = format!(
                        "the manifest names {:?}, which was not uploaded within {} s",
                        manifest.file_name,
                        config.missing_file_timeout.as_secs()
                    );
                    let to = Some(manifest.client_email.clone());
                    self.fail_early(config, account, manifest_name, None, &reason, to)
                        .await;
                }
                return;
            }
        };
        if !file_meta.file_type().is_file() {
            let reason = format!(
                "{:?} is not a regular file (symlinks are not followed)",
                manifest.file_name
            );
            let to = Some(manifest.client_email.clone());
            self.fail_early(config, account, manifest_name, None, &reason, to)
                .await;
            return;
        }
        if !settled(&file_meta, config.settle) {
            return;
        }
        let job = journal::job_id(&account.id, manifest_name, &manifest.file_name, &file_meta);
        let state = self.journal.state(&job);
        if let Some(finished) = state.finished {
            // Finished before a crash, but the files were not moved yet.
            move_out(
                config,
                account,
                manifest_name,
                &manifest.file_name,
                finished.as_ref().err(),
            );
            return;
        }
        let mut notice = Notice {
            stage: Stage::Pickup,
            account: account.id.clone(),
            file: manifest.file_name.clone(),
            manifest: manifest_name.to_owned(),
            uploaded: 0,
            skipped: 0,
            error: None,
            bad_rows: Vec::new(),
            to: Some(manifest.client_email.clone()),
        };
        if !state.picked {
            if let Err(e) = self.journal.picked(&job, &account.id, &manifest.file_name) {
                tracing::error!(error = %e, "cannot write the intake journal; not processing");
                return;
            }
            tracing::info!(account = %account.id, file = %manifest.file_name, %job, "picked up");
            self.notifier.send(&notice).await;
        } else {
            tracing::info!(account = %account.id, file = %manifest.file_name, %job, batches_done = state.batches, "resuming");
        }
        let result = self
            .process(
                config,
                account,
                &manifest,
                &file_path,
                &file_meta,
                &job,
                state.batches,
            )
            .await;
        match result {
            Ok(outcome) => {
                if let Err(e) = self.journal.done(&job, outcome.uploaded, outcome.skipped) {
                    tracing::error!(error = %e, "cannot write the intake journal");
                    return;
                }
                tracing::info!(account = %account.id, file = %manifest.file_name, %job,
                    uploaded = outcome.uploaded, skipped = outcome.skipped, "imported");
                move_out(config, account, manifest_name, &manifest.file_name, None);
                notice.stage = Stage::Success;
                notice.uploaded = outcome.uploaded;
                notice.skipped = outcome.skipped;
                notice.bad_rows = outcome.bad_rows;
                self.notifier.send(&notice).await;
            }
            Err(failure) => {
                if let Err(e) = self.journal.failed(&job, &failure.reason) {
                    tracing::error!(error = %e, "cannot write the intake journal");
                    return;
                }
                tracing::warn!(account = %account.id, file = %manifest.file_name, %job, reason = %failure.reason, "import failed");
                move_out(
                    config,
                    account,
                    manifest_name,
                    &manifest.file_name,
                    Some(&failure.reason),
                );
                notice.stage = Stage::Failure;
                notice.error = Some(failure.reason);
                notice.skipped = failure.skipped;
                notice.bad_rows = failure.bad_rows;
                self.notifier.send(&notice).await;
            }
        }
    }

    /// A failure found before a job could start (a bad manifest, a missing file): the
    /// manifest moves to `failed/` with the reason, and the customer hears of it when
    /// the manifest gave an address.
    async fn fail_early(
        &mut self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        manifest_name: &str,
        file: Option<&str>,
        reason: &str,
        to: Option<String>,
    ) {
        tracing::warn!(account = %account.id, manifest = %manifest_name, %reason, "upload refused");
        let failed = config.state_dir.join(&account.id).join("failed");
        let stamp = stamp();
        if create_private_dir(&failed).is_ok() {
            let target = failed.join(format!("{stamp}-{manifest_name}"));
            let _ = move_file(&account.upload_dir.join(manifest_name), &target);
            let _ = write_error(&failed, &stamp, manifest_name, reason);
        }
        let notice = Notice {
            stage: Stage::Failure,
            account: account.id.clone(),
            file: file.unwrap_or("-").to_owned(),
            manifest: manifest_name.to_owned(),
            uploaded: 0,
            skipped: 0,
            error: Some(reason.to_owned()),
            bad_rows: Vec::new(),
            to,
        };
        self.notifier.send(&notice).await;
    }

    /// Decrypts and ingests one file.
    #[allow(clippy::too_many_arguments)]
    async fn process(
        &mut self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        manifest: &Manifest,
        file_path: &Path,
        file_meta: &std::fs::Metadata,
        job: &str,
        batches_done: u64,
    ) -> Result<Outcome, Failure> {
        if file_meta.len() > config.max_encrypted_file_bytes {
            return Err(format!(
                "the file is {} bytes, over the limit of {} bytes; split it into smaller files",
                file_meta.len(),
                config.max_encrypted_file_bytes
            )
            .into());
        }
        let now = SystemTime::now();
        let key = account
            .keys
            .iter()
            .find(|k| k.id() == manifest.key_id)
            .ok_or_else(|| format!("keyId {:?} is not a key of this account", manifest.key_id))?;
        if !key.valid_at(now) {
            return Err(format!(
                "keyId {:?} is no longer valid (past its rotation overlap)",
                manifest.key_id
            )
            .into());
        }
        create_private_dir(&account.download_dir)?;
        let out_name = decrypted_name(&manifest.file_name).to_owned();
        let out_path = account.download_dir.join(&out_name);
        let limit = config.max_decrypted_bytes.min(
            file_meta
                .len()
                .max(1)
                .saturating_mul(config.max_expansion_ratio),
        );
        let encrypted = out_name != manifest.file_name;
        if !encrypted && account.require_encryption {
            return Err(format!(
                "{:?} is not an encrypted file (.asc or .pgp), and this upload requires encryption",
                manifest.file_name
            )
            .into());
        }
        // Decrypt on a blocking thread into a private temporary file beside the target.
        let (src, dst_dir) = (file_path.to_path_buf(), account.download_dir.clone());
        let key_index = account.keys.iter().position(|k| k.id() == key.id());
        let shared = self.config.load_full();
        let account_id = account.id.clone();
        let written = tokio::task::spawn_blocking(
            move || -> Result<(tempfile::NamedTempFile, u64), String> {
                let account = shared
                    .accounts
                    .iter()
                    .find(|a| a.id == account_id)
                    .ok_or("the account was removed by a reload")?;
                let key = key_index
                    .and_then(|i| account.keys.get(i))
                    .ok_or("the key was removed by a reload")?;
                let mut tmp = tempfile::Builder::new()
                    .prefix(".decrypting-")
                    .tempfile_in(&dst_dir)
                    .map_err(|e| format!("cannot create a file in the download directory: {e}"))?;
                let input = std::fs::File::open(&src)
                    .map_err(|e| format!("cannot read the upload: {e}"))?;
                let n = if encrypted {
                    let mut writer = std::io::BufWriter::new(tmp.as_file_mut());
                    let n = pgp::decrypt_stream(&[key], input, &mut writer, limit)
                        .map_err(|e| e.to_string())?;
                    std::io::Write::flush(&mut writer).map_err(|e| e.to_string())?;
                    n
                } else {
                    let mut input = std::io::Read::take(input, limit + 1);
                    let n =
                        std::io::copy(&mut input, tmp.as_file_mut()).map_err(|e| e.to_string())?;
                    if n > limit {
                        return Err(format!(
                            "the file is larger than the limit of {limit} bytes"
                        ));
                    }
                    n
                };
                tmp.as_file().sync_all().map_err(|e| e.to_string())?;
                Ok((tmp, n))
            },
        )
        .await
        .map_err(|e| format!("decryption stopped: {e}"))??;
        let (tmp, decrypted_bytes) = written;
        tmp.persist(&out_path)
            .map_err(|e| format!("cannot write the decrypted file: {}", e.error))?;
        tracing::info!(account = %account.id, file = %out_name, bytes = decrypted_bytes, "decrypted");
        let ingested = self
            .ingest(
                config,
                account,
                manifest,
                &out_path,
                &out_name,
                job,
                batches_done,
                limit,
            )
            .await;
        if ingested.is_err() {
            // The download path holds what was imported; a failed file stays, encrypted,
            // in failed/ with its error.
            let _ = std::fs::remove_file(&out_path);
        }
        ingested
    }

    /// Reads the decrypted file and uploads its records in batches, skipping batches the
    /// journal says the upstream already acknowledged.
    #[allow(clippy::too_many_arguments)]
    async fn ingest(
        &mut self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        manifest: &Manifest,
        path: &Path,
        name: &str,
        job: &str,
        batches_done: u64,
        limit: u64,
    ) -> Result<Outcome, Failure> {
        // A first pass finds structural problems (a missing column, malformed CSV or
        // JSON) before anything is uploaded, so such a file is never half imported.
        if batches_done == 0 {
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let reader = ingest::spawn_reader(path, name, manifest.clone(), limit, tx);
            let mut failure = None;
            while let Some(item) = rx.recv().await {
                if let Err(e) = item {
                    failure = Some(e);
                }
            }
            let _ = reader.join();
            if let Some(reason) = failure {
                return Err(reason.into());
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(config.batch_size.min(10_000) * 2);
        let reader = ingest::spawn_reader(path, name, manifest.clone(), limit, tx);
        let mut batch = Vec::with_capacity(config.batch_size);
        let (mut uploaded, mut skipped, mut good) = (0u64, 0u64, 0u64);
        let mut bad_rows = Vec::new();
        let mut batch_no = 0u64;
        let mut structural = None;
        loop {
            let item = rx.recv().await;
            let end = item.is_none();
            match item {
                Some(Ok(Item::Good(record))) => {
                    good += 1;
                    batch.push(record);
                }
                Some(Ok(Item::Bad(row))) => {
                    skipped += 1;
                    if bad_rows.len() < LISTED_BAD_ROWS {
                        bad_rows.push(row);
                    }
                }
                Some(Err(e)) => {
                    structural = Some(e);
                    break;
                }
                None => {}
            }
            if batch.len() >= config.batch_size || (end && !batch.is_empty()) {
                batch_no += 1;
                let records = std::mem::take(&mut batch);
                let count = records.len() as u64;
                if batch_no > batches_done {
                    if let Err(reason) = self.upload(config, account, job, batch_no, records).await
                    {
                        drop(rx);
                        let _ = reader.join();
                        return Err(Failure {
                            reason: format!(
                                "batch {batch_no} was not accepted by the upload API: {reason}"
                            ),
                            skipped,
                            bad_rows,
                        });
                    }
                    self.journal
                        .batch(job, batch_no)
                        .map_err(|e| format!("cannot write the intake journal: {e}"))?;
                }
                uploaded += count;
            }
            if end {
                break;
            }
        }
        drop(rx);
        let _ = reader.join();
        if let Some(reason) = structural {
            return Err(Failure {
                reason,
                skipped,
                bad_rows,
            });
        }
        if good == 0 {
            return Err(Failure {
                reason: if skipped == 0 {
                    "the file has no records".into()
                } else {
                    format!("none of the {skipped} rows could be imported")
                },
                skipped,
                bad_rows,
            });
        }
        Ok(Outcome {
            uploaded,
            skipped,
            bad_rows,
        })
    }

    /// Sends one batch to the upstream's upload API.
    async fn upload(
        &self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        job: &str,
        batch_no: u64,
        records: Vec<serde_json::Value>,
    ) -> Result<(), String> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "d": records })).map_err(|e| e.to_string())?;
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
            }
            let request = Request::post(config.upload_path.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("x-clevertap-account-id", account.id.as_str())
                .header(
                    "x-clevertap-passcode",
                    HeaderValue::from_str(&account.passcode).map_err(|e| e.to_string())?,
                )
                .header("idempotency-key", format!("{job}-{batch_no}"))
                .body(Body::from(body.clone()))
                .map_err(|e| e.to_string())?;
            let Ok(response) = self.proxy.clone().oneshot(request).await;
            let status = response.status();
            let gateway_error = response.extensions().get::<ErrorCode>().is_some();
            let text = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                return Ok(());
            }
            last = format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&text[..text.len().min(300)])
            );
            // Retry what may pass on a second try: the upstream down or overloaded.
            if !(gateway_error
                || status.is_server_error()
                || status == http::StatusCode::TOO_MANY_REQUESTS)
            {
                break;
            }
        }
        Err(last)
    }
}

/// Unchanged for `settle`: sshd writes uploads in place, so a file still growing has a
/// recent modification time.
fn settled(meta: &std::fs::Metadata, settle: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age >= settle)
}

fn read_small(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!("larger than {MAX_MANIFEST_BYTES} bytes"));
    }
    Ok(text)
}

/// The `clientEmail` of a manifest that did not pass its checks, if it has a usable one.
fn lenient_email(text: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(text)
        .ok()
        .or_else(|| serde_norway::from_slice(text).ok())?;
    let email = value.get("clientEmail")?.as_str()?.trim().to_owned();
    email.parse::<lettre::Address>().ok().map(|_| email)
}

fn stamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "")
}

fn create_private_dir(path: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn write_error(dir: &Path, stamp: &str, name: &str, reason: &str) -> std::io::Result<()> {
    let body = serde_json::json!({ "file": name, "error": reason, "at": stamp });
    std::fs::write(
        dir.join(format!("{stamp}-{name}.error.json")),
        serde_json::to_vec_pretty(&body).unwrap_or_default(),
    )
}

/// Renames, or copies and removes when `to` is on another file system.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            std::fs::copy(from, to)?;
            std::fs::remove_file(from)
        }
        other => other,
    }
}

/// Moves a finished job's manifest and file out of the upload directory.
fn move_out(
    config: &IntakeConfig,
    account: &IntakeAccount,
    manifest_name: &str,
    file_name: &str,
    failure: Option<&String>,
) {
    let folder = if failure.is_some() {
        "failed"
    } else {
        "processed"
    };
    let target = config.state_dir.join(&account.id).join(folder);
    if let Err(e) = create_private_dir(&target) {
        tracing::error!(error = %e, "cannot move a finished upload");
        return;
    }
    let stamp = stamp();
    for name in [manifest_name, file_name] {
        let from = account.upload_dir.join(name);
        if let Err(e) = move_file(&from, &target.join(format!("{stamp}-{name}")))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(file = %name, error = %e, "cannot move a finished upload");
        }
    }
    if let Some(reason) = failure {
        let _ = write_error(&target, &stamp, file_name, reason);
    }
}
