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
//! - [`host`]: what the process running the intake provides (upload API, metrics, TLS).
//!
//! A file is processed when its manifest is complete and the file the manifest names is
//! complete (neither changed for `settle_ms`). Afterwards both move out of the upload
//! directory, to `state_dir/<account>/processed/` or, with a `.error.json` beside them,
//! to `state_dir/<account>/failed/`; a file uploaded again under the same name is a new
//! job.

#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod ingest;
pub mod journal;
pub mod manifest;
pub mod notify;
pub mod pgp;
pub mod settings;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request};

use host::{IntakeMetrics, UploadApi, WebhookTls};
use ingest::{BadRow, FileError, Item};
use journal::Journal;
use manifest::{Manifest, ManifestProblem};
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
    upload_api: Arc<dyn UploadApi>,
    metrics: Arc<dyn IntakeMetrics>,
    /// Held while this intake runs: no second intake on the same storage.
    _lock: journal::StorageLock,
    journal: Journal,
    notifier: Notifier,
    /// The state directory the journal lives in (a reload cannot move it).
    state_dir: PathBuf,
    warned: HashSet<PathBuf>,
    /// Manifests already refused (path, modification time), in case they cannot be moved.
    refused: HashSet<(PathBuf, Option<SystemTime>)>,
    /// Jobs waiting for the upstream to come back, and when to try again.
    not_before: HashMap<String, (Instant, u32)>,
    /// When `processed/` and `failed/` were last pruned.
    pruned: Option<Instant>,
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
    /// Why: its `reason` is what the log and the journal get; the customer's notice and
    /// `error.json` get its `detail` too (the file's header row, the upstream's answer).
    error: FileError,
    uploaded: u64,
    skipped: u64,
    bad_rows: Vec<BadRow>,
    /// The upstream is unreachable or failing: keep the job and try again later.
    retry_later: bool,
}

impl From<FileError> for Failure {
    fn from(error: FileError) -> Self {
        Self {
            error,
            uploaded: 0,
            skipped: 0,
            bad_rows: Vec::new(),
            retry_later: false,
        }
    }
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        FileError::from(reason).into()
    }
}

/// A job taken into its private work directory.
struct Job {
    id: String,
    work: PathBuf,
    manifest_name: String,
    manifest: Manifest,
}

impl Intake {
    /// Opens the journal under `state_dir` (created 0700) and sets up notifications.
    pub fn new(
        config: SharedIntake,
        upload_api: Arc<dyn UploadApi>,
        metrics: Arc<dyn IntakeMetrics>,
        webhook_tls: WebhookTls,
    ) -> Result<Self, String> {
        let current = config.load();
        create_private_dir(&current.state_dir)?;
        let lock = journal::StorageLock::acquire(&current.state_dir)?;
        let journal = Journal::open(&current.state_dir.join("journal.jsonl"))
            .map_err(|e| format!("intake journal: {e}"))?;
        let notifier = Notifier::new(
            current.smtp.as_ref(),
            current.webhook_url.as_ref(),
            webhook_tls,
        )?;
        let state_dir = current.state_dir.clone();
        drop(current);
        Ok(Self {
            config,
            upload_api,
            metrics,
            _lock: lock,
            journal,
            notifier,
            state_dir,
            warned: HashSet::new(),
            refused: HashSet::new(),
            not_before: HashMap::new(),
            pruned: None,
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

    fn account_dir(&self, account: &IntakeAccount, folder: &str) -> PathBuf {
        self.state_dir.join(&account.id).join(folder)
    }

    /// One pass: jobs in progress first (after a restart, or waiting for the upstream),
    /// then new uploads.
    pub async fn scan(&mut self) {
        let config = self.config.load_full();
        if let Some(keep) = config.keep_finished
            && self.pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY)
        {
            self.pruned = Some(Instant::now());
            for account in &config.accounts {
                for folder in ["processed", "failed"] {
                    prune(&self.account_dir(account, folder), keep);
                }
            }
        }
        for account in &config.accounts {
            for job in self.jobs_in_progress(account) {
                if let Some((at, _)) = self.not_before.get(&job.id)
                    && Instant::now() < *at
                {
                    continue;
                }
                self.run_job(&config, account, job).await;
            }
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

    /// The jobs under `work/`: each a directory named by its job id, holding the
    /// manifest and the file.
    fn jobs_in_progress(&self, account: &IntakeAccount) -> Vec<Job> {
        let Ok(dirs) = std::fs::read_dir(self.account_dir(account, "work")) else {
            return Vec::new();
        };
        let mut jobs = Vec::new();
        for dir in dirs.flatten() {
            let (Ok(id), work) = (dir.file_name().into_string(), dir.path()) else {
                continue;
            };
            let manifest_name = std::fs::read_dir(&work).ok().and_then(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .find(|n| is_manifest(n))
            });
            let Some(manifest_name) = manifest_name else {
                // A pickup cut short between taking the file and taking its manifest.
                let failed = self.account_dir(account, "failed");
                match recover_pickup(&work, &account.upload_dir, &failed) {
                    Ok(()) => {
                        tracing::info!(account = %account.id, job = %id, "an interrupted pickup was undone");
                    }
                    Err(e) => {
                        tracing::error!(account = %account.id, job = %id, error = %e, "cannot undo an interrupted pickup");
                    }
                }
                continue;
            };
            let Ok(manifest) = read_small(&work.join(&manifest_name))
                .and_then(|t| manifest::parse(&t).map_err(|_| "unparsable".to_owned()))
            else {
                continue;
            };
            jobs.push(Job {
                id,
                work,
                manifest_name,
                manifest,
            });
        }
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        jobs
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

    /// Looks at one manifest in the upload directory: waits while it or its file is
    /// incomplete, else takes both into a private work directory and runs the job.
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
        if !manifest_meta.file_type().is_file() || !settled(&manifest_meta, config.settle) {
            return;
        }
        if self
            .refused
            .contains(&(manifest_path.clone(), manifest_meta.modified().ok()))
        {
            return;
        }
        let text = match read_small(&manifest_path) {
            Ok(t) => t,
            Err(e) => {
                // An I/O error or the size limit: nothing from the manifest is quoted.
                let reason = format!("manifest: {e}");
                let tell = Tell::Nobody {
                    summary: reason.clone(),
                };
                self.fail_early(
                    account,
                    manifest_name,
                    manifest_name,
                    &manifest_meta,
                    &reason,
                    tell,
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
                let tell = match lenient_email(&text) {
                    Some(to) => Tell::Customer(to),
                    None => Tell::Nobody {
                        summary: unreadable_summary(&problems),
                    },
                };
                // Its fileName is unknown (or one of the problems): the notice names the
                // manifest.
                self.fail_early(
                    account,
                    manifest_name,
                    manifest_name,
                    &manifest_meta,
                    &reason,
                    tell,
                )
                .await;
                return;
            }
        };
        let file_path = dir.join(&manifest.file_name);
        let to = || Tell::Customer(manifest.client_email.clone());
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
                    let file = &manifest.file_name;
                    self.fail_early(account, manifest_name, file, &manifest_meta, &reason, to())
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
            let file = &manifest.file_name;
            self.fail_early(account, manifest_name, file, &manifest_meta, &reason, to())
                .await;
            return;
        }
        if !settled(&file_meta, config.settle) {
            return;
        }
        let id = journal::job_id(&account.id, manifest_name, &manifest.file_name, &file_meta);
        // Take both into a private directory first: from here on the customer can no
        // longer change, replace or re-upload them under the job's feet (a new upload
        // with the same name is a new job).
        let work = self.account_dir(account, "work").join(&id);
        if let Err(e) = create_private_dir(&work) {
            tracing::error!(error = %e, "cannot create the intake work directory");
            return;
        }
        let taken_file = work.join(&manifest.file_name);
        if let Err(e) = move_file(&file_path, &taken_file) {
            tracing::error!(file = %manifest.file_name, error = %e, "cannot take the upload");
            return;
        }
        // A crash here leaves the file in work/ without its manifest: the next scan
        // (also the first after a restart) puts it back (see `recover_pickup`).
        if let Err(e) = move_file(&manifest_path, &work.join(manifest_name)) {
            tracing::error!(file = %manifest_name, error = %e, "cannot take the manifest");
            let failed = self.account_dir(account, "failed");
            if let Err(e) = recover_pickup(&work, &account.upload_dir, &failed) {
                tracing::error!(file = %manifest.file_name, error = %e, "cannot put the upload back");
            }
            return;
        }
        let job = Job {
            id,
            work,
            manifest_name: manifest_name.to_owned(),
            manifest,
        };
        // What was moved must still be the regular file that was checked.
        let same = std::fs::symlink_metadata(&taken_file)
            .is_ok_and(|m| m.file_type().is_file() && same_file(&m, &file_meta));
        if !same {
            let failure = Failure::from(format!(
                "{:?} changed while it was being picked up; upload it again",
                job.manifest.file_name
            ));
            self.finish(account, &job, Err(failure)).await;
            return;
        }
        self.run_job(config, account, job).await;
    }

    /// Runs (or resumes) a job in its work directory, to its end or until the upstream
    /// is back.
    async fn run_job(&mut self, config: &IntakeConfig, account: &IntakeAccount, job: Job) {
        let state = self.journal.state(&job.id);
        match state.finished.clone() {
            // Finished before a crash, but not moved or notified.
            Some(Ok((uploaded, skipped))) => {
                let outcome = Outcome {
                    uploaded,
                    skipped,
                    bad_rows: Vec::new(),
                };
                self.finish(account, &job, Ok(outcome)).await;
                return;
            }
            Some(Err(reason)) => {
                self.finish(account, &job, Err(Failure::from(reason))).await;
                return;
            }
            None => {}
        }
        let batch_size = state.batch_size.unwrap_or(config.batch_size);
        if !state.picked {
            let picked =
                self.journal
                    .picked(&job.id, &account.id, &job.manifest.file_name, batch_size);
            if let Err(e) = picked {
                tracing::error!(error = %e, "cannot write the intake journal; not processing");
                return;
            }
            tracing::info!(account = %account.id, file = %job.manifest.file_name, job = %job.id, "picked up");
            self.notifier
                .send(&notice(Stage::Pickup, account, &job))
                .await;
        } else {
            tracing::info!(account = %account.id, file = %job.manifest.file_name, job = %job.id,
                batches_done = state.batches, "resuming");
        }
        let result = self
            .process(config, account, &job, batch_size, state.batches)
            .await;
        match result {
            Err(failure) if failure.retry_later => {
                let tries = self.not_before.get(&job.id).map_or(0, |(_, n)| *n) + 1;
                let wait = Duration::from_secs(5u64.saturating_mul(1 << tries.min(8)));
                tracing::warn!(account = %account.id, file = %job.manifest.file_name, job = %job.id,
                    reason = %failure.error.reason, retry_in_s = wait.as_secs(), "upstream unavailable; the job will resume");
                self.not_before
                    .insert(job.id.clone(), (Instant::now() + wait, tries));
                self.metrics.deferred();
            }
            Ok(outcome) => {
                self.not_before.remove(&job.id);
                if let Err(e) = self
                    .journal
                    .done(&job.id, outcome.uploaded, outcome.skipped)
                {
                    tracing::error!(error = %e, "cannot write the intake journal");
                    return;
                }
                tracing::info!(account = %account.id, file = %job.manifest.file_name, job = %job.id,
                    uploaded = outcome.uploaded, skipped = outcome.skipped, "imported");
                self.finish(account, &job, Ok(outcome)).await;
            }
            Err(failure) => {
                self.not_before.remove(&job.id);
                if let Err(e) = self.journal.failed(&job.id, &failure.error.reason) {
                    tracing::error!(error = %e, "cannot write the intake journal");
                    return;
                }
                tracing::warn!(account = %account.id, file = %job.manifest.file_name, job = %job.id,
                    reason = %failure.error.reason, "import failed");
                self.finish(account, &job, Err(failure)).await;
            }
        }
    }

    /// Moves a finished job's work directory to `processed/` or `failed/` (with an
    /// `error.json`), then tells the customer.
    async fn finish(
        &mut self,
        account: &IntakeAccount,
        job: &Job,
        result: Result<Outcome, Failure>,
    ) {
        let (folder, stage) = match &result {
            Ok(_) => ("processed", Stage::Success),
            Err(_) => ("failed", Stage::Failure),
        };
        let target_dir = self.account_dir(account, folder);
        let target = target_dir.join(format!("{}-{}", stamp(), job.id));
        if let Err(e) = &result {
            let _ = write_error(&job.work, &job.manifest.file_name, &e.error.to_string());
        }
        let moved = create_private_dir(&target_dir)
            .and_then(|()| std::fs::rename(&job.work, &target).map_err(|e| e.to_string()));
        match moved {
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "cannot move a finished job out of work/");
            }
            // Counted once: a job that could not move is finished again on a later scan.
            Ok(()) => match &result {
                Ok(o) => self.metrics.file("imported", o.uploaded, o.skipped),
                Err(f) => self.metrics.file("failed", f.uploaded, f.skipped),
            },
        }
        let mut n = notice(stage, account, job);
        match result {
            Ok(outcome) => {
                n.uploaded = outcome.uploaded;
                n.skipped = outcome.skipped;
                n.bad_rows = outcome.bad_rows;
            }
            Err(failure) => {
                n.uploaded = failure.uploaded;
                n.skipped = failure.skipped;
                n.error = Some(failure.error.to_string());
                n.bad_rows = failure.bad_rows;
            }
        }
        self.notifier.send(&n).await;
    }

    /// A failure found before a job could start (a bad manifest, a missing file): the
    /// manifest moves to `failed/` with the reason, and the customer hears of it when
    /// the manifest gave an address; when it gave none, the account's
    /// `failure_contact` does. Each manifest is refused once. `file` is what the notice
    /// is about: the manifest's `fileName`, or the manifest itself when that is not
    /// known.
    async fn fail_early(
        &mut self,
        account: &IntakeAccount,
        manifest_name: &str,
        file: &str,
        manifest_meta: &std::fs::Metadata,
        reason: &str,
        tell: Tell,
    ) {
        tracing::warn!(account = %account.id, manifest = %manifest_name, %reason, "upload refused");
        self.metrics.file("refused", 0, 0);
        let source = account.upload_dir.join(manifest_name);
        self.refused
            .insert((source.clone(), manifest_meta.modified().ok()));
        let failed = self
            .account_dir(account, "failed")
            .join(format!("{}-{manifest_name}", stamp()));
        if create_private_dir(&failed).is_ok() {
            let _ = move_file(&source, &failed.join(manifest_name));
            let _ = write_error(&failed, manifest_name, reason);
        }
        let notice = Notice {
            stage: Stage::Failure,
            account: account.id.clone(),
            file: file.to_owned(),
            manifest: manifest_name.to_owned(),
            uploaded: 0,
            skipped: 0,
            error: Some(reason.to_owned()),
            bad_rows: Vec::new(),
            to: None,
            manifest_unreadable: false,
        };
        match tell {
            Tell::Customer(to) => {
                let notice = Notice {
                    to: Some(to),
                    ..notice
                };
                self.notifier.send(&notice).await;
            }
            Tell::Nobody { summary } => {
                // The webhook gets the full notice, as for every failure; the contact
                // an email that quotes nothing from the manifest.
                self.notifier.send(&notice).await;
                if let Some(contact) = &account.failure_contact {
                    let notice = Notice {
                        to: Some(contact.clone()),
                        error: Some(summary),
                        manifest_unreadable: true,
                        ..notice
                    };
                    self.notifier.send_email(&notice).await;
                }
            }
        }
    }

    /// Decrypts and ingests one job's file.
    async fn process(
        &mut self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        job: &Job,
        batch_size: usize,
        batches_done: u64,
    ) -> Result<Outcome, Failure> {
        let manifest = &job.manifest;
        let file_path = job.work.join(&manifest.file_name);
        let file_len = std::fs::symlink_metadata(&file_path)
            .map_err(|e| format!("cannot read the upload: {e}"))?
            .len();
        if file_len > config.max_encrypted_file_bytes {
            return Err(format!(
                "the file is {file_len} bytes, over the limit of {} bytes; split it into smaller files",
                config.max_encrypted_file_bytes
            )
            .into());
        }
        let key = account
            .keys
            .iter()
            .find(|k| k.id() == manifest.key_id)
            .cloned()
            .ok_or_else(|| format!("keyId {:?} is not a key of this account", manifest.key_id))?;
        if !key.valid_at(SystemTime::now()) {
            return Err(format!(
                "keyId {:?} is no longer valid (past its rotation overlap)",
                manifest.key_id
            )
            .into());
        }
        create_private_dir(&account.download_dir)?;
        remove_stale_temporaries(&account.download_dir);
        let out_name = decrypted_name(&manifest.file_name).to_owned();
        let out_path = account.download_dir.join(&out_name);
        let limit = config
            .max_decrypted_bytes
            .min(file_len.max(1).saturating_mul(config.max_expansion_ratio));
        let encrypted = out_name != manifest.file_name;
        if !encrypted && account.require_encryption {
            return Err(format!(
                "{:?} is not an encrypted file (.asc or .pgp), and this upload requires encryption",
                manifest.file_name
            )
            .into());
        }
        // Decrypt on a blocking thread into a private temporary file beside the target.
        let dst_dir = account.download_dir.clone();
        let written = tokio::task::spawn_blocking(
            move || -> Result<(tempfile::NamedTempFile, u64), String> {
                let mut tmp = tempfile::Builder::new()
                    .prefix(TEMP_PREFIX)
                    .tempfile_in(&dst_dir)
                    .map_err(|e| format!("cannot create the decrypted file: {}", e.kind()))?;
                let input = std::fs::File::open(&file_path)
                    .map_err(|e| format!("cannot read the upload: {}", e.kind()))?;
                let n = if encrypted {
                    let mut writer = std::io::BufWriter::new(tmp.as_file_mut());
                    let n = pgp::decrypt_stream(&[&*key], input, &mut writer, limit)
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
            .map_err(|e| format!("cannot write the decrypted file: {}", e.error.kind()))?;
        tracing::info!(account = %account.id, file = %out_name, bytes = decrypted_bytes, "decrypted");
        let ingested = self
            .ingest(
                config,
                account,
                job,
                &out_path,
                &out_name,
                batch_size,
                batches_done,
                limit,
            )
            .await;
        if ingested.as_ref().is_err_and(|f| !f.retry_later) {
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
        job: &Job,
        path: &Path,
        name: &str,
        batch_size: usize,
        batches_done: u64,
        limit: u64,
    ) -> Result<Outcome, Failure> {
        let manifest = &job.manifest;
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
        let (tx, mut rx) = tokio::sync::mpsc::channel(batch_size.min(10_000) * 2);
        let reader = ingest::spawn_reader(path, name, manifest.clone(), limit, tx);
        let mut batch = Vec::with_capacity(batch_size.min(10_000));
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
            if batch.len() >= batch_size || (end && !batch.is_empty()) {
                batch_no += 1;
                let records = std::mem::take(&mut batch);
                let count = records.len() as u64;
                if batch_no > batches_done {
                    if let Err((refusal, retry)) = self
                        .upload(config, account, &job.id, batch_no, records)
                        .await
                    {
                        drop(rx);
                        let _ = reader.join();
                        return Err(Failure {
                            error: FileError {
                                reason: format!(
                                    "batch {batch_no} was not accepted by the upload API: {}",
                                    refusal.reason
                                ),
                                detail: refusal.detail,
                            },
                            uploaded,
                            skipped,
                            bad_rows,
                            retry_later: retry,
                        });
                    }
                    self.journal
                        .batch(&job.id, batch_no)
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
        if let Some(e) = structural {
            return Err(Failure {
                error: e,
                uploaded,
                skipped,
                bad_rows,
                retry_later: false,
            });
        }
        if good == 0 {
            return Err(Failure {
                error: FileError::from(if skipped == 0 {
                    "the file has no records".to_owned()
                } else {
                    format!("none of the {skipped} rows could be imported")
                }),
                uploaded,
                skipped,
                bad_rows,
                retry_later: false,
            });
        }
        Ok(Outcome {
            uploaded,
            skipped,
            bad_rows,
        })
    }

    /// Sends one batch to the upstream's upload API. The error is why (the status as its
    /// reason, fit for the log; the upstream's answer as its detail, for the customer
    /// only), and whether to try the job again later (the upstream down, failing or
    /// overloaded) or to fail it (the upstream refused the batch).
    async fn upload(
        &self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        job: &str,
        batch_no: u64,
        records: Vec<serde_json::Value>,
    ) -> Result<(), (FileError, bool)> {
        let fail = |reason: String| (FileError::from(reason), false);
        let body = Bytes::from(
            serde_json::to_vec(&serde_json::json!({ "d": records }))
                .map_err(|e| fail(e.to_string()))?,
        );
        let passcode = HeaderValue::from_str(&account.passcode)
            .map_err(|_| fail("the passcode is not a valid header value".to_owned()))?;
        let mut last = fail(String::new());
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
            }
            let request = Request::post(config.upload_path.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("x-clevertap-account-id", account.id.as_str())
                .header("x-clevertap-passcode", passcode.clone())
                .header("idempotency-key", format!("{job}-{batch_no}"))
                .body(body.clone())
                .map_err(|e| fail(e.to_string()))?;
            let answer = self.upload_api.send(request).await;
            let (status, gateway_error, text) = (answer.status, answer.from_gateway, answer.body);
            if status.is_success() {
                return Ok(());
            }
            // Retry what may pass on a second try: the upstream down or overloaded.
            let retry = gateway_error
                || status.is_server_error()
                || status == http::StatusCode::TOO_MANY_REQUESTS;
            let answer = String::from_utf8_lossy(&text[..text.len().min(300)])
                .trim()
                .to_owned();
            last = (
                FileError {
                    reason: format!("HTTP {status}"),
                    detail: (!answer.is_empty())
                        .then(|| format!("the upload API answered: {answer}")),
                },
                retry,
            );
            if !retry {
                break;
            }
        }
        Err(last)
    }
}

/// A notice about `job` at `stage`, without counts.
fn notice(stage: Stage, account: &IntakeAccount, job: &Job) -> Notice {
    Notice {
        stage,
        account: account.id.clone(),
        file: job.manifest.file_name.clone(),
        manifest: job.manifest_name.clone(),
        uploaded: 0,
        skipped: 0,
        error: None,
        bad_rows: Vec::new(),
        to: Some(job.manifest.client_email.clone()),
        manifest_unreadable: false,
    }
}

/// Who is told of a failure found before a job could start.
enum Tell {
    /// The customer, at the address the manifest gave.
    Customer(String),
    /// Nobody the manifest names: the account's `failure_contact`, if set, with
    /// `summary` as the reason (it quotes nothing from the manifest).
    Nobody {
        /// The reason, told without the manifest's values.
        summary: String,
    },
}

/// The reason the failure contact is given for a manifest that could not be read. A
/// manifest may name the encrypted file's columns, and a YAML parser's complaint may
/// quote a value, so this keeps only what quotes nothing: the JSON parser's complaint
/// (position and kind of the syntax error), the first words of any other complaint
/// about the manifest as a whole, and the names of the top-level fields with problems.
fn unreadable_summary(problems: &[ManifestProblem]) -> String {
    const FIELDS: [&str; 5] = ["fileName", "type", "columns", "clientEmail", "keyId"];
    let mut parts = Vec::new();
    let mut fields = Vec::new();
    for p in problems {
        if p.field == "manifest" {
            let said = if p.reason.starts_with("is not valid JSON:") {
                p.reason.as_str()
            } else {
                p.reason.split(':').next().unwrap_or_default()
            };
            parts.push(format!("the manifest {said}"));
        } else {
            let top = p.field.split('.').next().unwrap_or_default();
            let name = FIELDS
                .iter()
                .find(|f| **f == top)
                .unwrap_or(&"other fields");
            if !fields.contains(name) {
                fields.push(*name);
            }
        }
    }
    if !fields.is_empty() {
        parts.push(format!("problems in {}", fields.join(", ")));
    }
    parts.push("it gives no usable clientEmail".into());
    parts.join("; ")
}

/// Prefix of a decrypted file being written.
const TEMP_PREFIX: &str = ".decrypting-";

/// Removes decrypted files left half-written by a crash (the intake runs one job at a
/// time, so none is being written now).
fn remove_stale_temporaries(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The same file (device and inode), as seen before and after a move.
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        (a.dev(), a.ino(), a.len()) == (b.dev(), b.ino(), b.len())
            || a.len() == b.len() && a.dev() != b.dev()
    }
    #[cfg(not(unix))]
    {
        a.len() == b.len()
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

/// How often `processed/` and `failed/` are checked for jobs past `keep_finished_days`.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Removes the job directories in `dir` last modified longer than `keep` ago. Entries
/// that are not directories (nothing the intake writes) are left alone.
fn prune(dir: &Path, keep: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > keep);
        if meta.is_dir() && old {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a finished job");
                }
            }
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed finished jobs past keep_finished_days");
    }
    removed
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

/// Writes `name.error.json` into `dir`: the reason a file was not imported.
fn write_error(dir: &Path, name: &str, reason: &str) -> std::io::Result<()> {
    let body = serde_json::json!({ "file": name, "error": reason, "at": stamp() });
    std::fs::write(
        dir.join(format!("{name}.error.json")),
        serde_json::to_vec_pretty(&body).unwrap_or_default(),
    )
}

/// Undoes a pickup that took the file into `work` but not its manifest (a crash between
/// the two moves, or a manifest that could not be moved): the file goes back to
/// `upload_dir`, beside its manifest, and is picked up again with it; the emptied work
/// directory is removed. If the customer has uploaded a file of the same name since,
/// theirs stays, and the one taken moves to `failed_dir` with an `error.json`.
fn recover_pickup(work: &Path, upload_dir: &Path, failed_dir: &Path) -> Result<(), String> {
    // Only job directories are pickups; anything else in `work` is not ours to move.
    if !std::fs::symlink_metadata(work).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let entries = std::fs::read_dir(work).map_err(|e| e.to_string())?;
    let mut superseded = Vec::new();
    for entry in entries.flatten() {
        let from = entry.path();
        let to = upload_dir.join(entry.file_name());
        // Never replace what is in the upload directory now.
        let back = match std::fs::hard_link(&from, &to) {
            Ok(()) => std::fs::remove_file(&from).map(|()| true),
            // A crash between the link and the removal left the same file in both
            // places: finish the move.
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists && same_path_file(&from, &to) =>
            {
                std::fs::remove_file(&from).map(|()| true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                if std::fs::symlink_metadata(&to).is_ok() {
                    Ok(false)
                } else {
                    move_file(&from, &to).map(|()| true)
                }
            }
            Err(e) => Err(e),
        };
        match back {
            Ok(true) => {}
            Ok(false) => superseded.push(entry.file_name()),
            Err(e) => return Err(format!("{}: {e}", from.display())),
        }
    }
    if superseded.is_empty() {
        return std::fs::remove_dir(work).map_err(|e| e.to_string());
    }
    let id = work
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = failed_dir.join(format!("{}-{id}", stamp()));
    for name in &superseded {
        let _ = write_error(
            work,
            &name.to_string_lossy(),
            "the pickup was interrupted and a file of the same name was uploaded since; \
             this one was not imported",
        );
    }
    create_private_dir(failed_dir)?;
    std::fs::rename(work, &target).map_err(|e| e.to_string())
}

/// Whether two paths are links to one file (the same inode on the same device).
fn same_path_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(field: &str, reason: &str) -> ManifestProblem {
        ManifestProblem {
            field: field.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn the_contacts_reason_quotes_nothing_from_the_manifest() {
        let cut = manifest::parse(br#"{"fileName":"a.csv.asc","columns":{"hdr_secret":{"da"#)
            .unwrap_err();
        let said = unreadable_summary(&cut);
        assert!(
            said.starts_with("the manifest is not valid JSON: "),
            "{said}"
        );
        assert!(said.ends_with("; it gives no usable clientEmail"), "{said}");
        assert!(
            !said.contains("hdr_secret") && !said.contains("a.csv.asc"),
            "{said}"
        );

        let said = unreadable_summary(&[
            problem(
                "columns.hdr_secret.dataType",
                "\"Bogus\" is not a data type",
            ),
            problem("clientEmail", "is required"),
            problem("hdr_other", "is not a manifest field"),
            problem(
                "manifest",
                "is neither JSON nor valid YAML: invalid type: string \"cell\"",
            ),
        ]);
        assert_eq!(
            said,
            "the manifest is neither JSON nor valid YAML; problems in columns, clientEmail, \
             other fields; it gives no usable clientEmail"
        );
    }

    #[test]
    fn an_interrupted_pickup_puts_the_file_back_beside_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let (upload, failed) = (dir.path().join("upload"), dir.path().join("failed"));
        let work = dir.path().join("work").join("job-1");
        std::fs::create_dir_all(&upload).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        // The crash came after the file moved and before the manifest did.
        std::fs::write(upload.join("file.manifest"), b"{}").unwrap();
        std::fs::write(work.join("file.csv.asc"), b"ciphertext").unwrap();
        let mtime = std::fs::metadata(work.join("file.csv.asc"))
            .unwrap()
            .modified()
            .unwrap();
        recover_pickup(&work, &upload, &failed).unwrap();
        assert_eq!(
            std::fs::read(upload.join("file.csv.asc")).unwrap(),
            b"ciphertext"
        );
        // Unchanged, so it settles and gets the same job id again.
        let back = std::fs::metadata(upload.join("file.csv.asc")).unwrap();
        assert_eq!(back.modified().unwrap(), mtime);
        assert!(!work.exists(), "the emptied work directory is removed");
        assert!(!failed.exists());

        // A file of the same name uploaded since is not replaced.
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(work.join("file.csv.asc"), b"older").unwrap();
        recover_pickup(&work, &upload, &failed).unwrap();
        assert_eq!(
            std::fs::read(upload.join("file.csv.asc")).unwrap(),
            b"ciphertext"
        );
        assert!(!work.exists());
        let kept: Vec<_> = std::fs::read_dir(&failed).unwrap().flatten().collect();
        assert_eq!(kept.len(), 1);
        let job = kept[0].path();
        assert_eq!(std::fs::read(job.join("file.csv.asc")).unwrap(), b"older");
        assert!(job.join("file.csv.asc.error.json").exists());

        // A crash inside the move back itself (linked, not yet removed) finishes the move
        // rather than taking the file for a newer upload.
        std::fs::remove_dir_all(&failed).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        std::fs::hard_link(upload.join("file.csv.asc"), work.join("file.csv.asc")).unwrap();
        recover_pickup(&work, &upload, &failed).unwrap();
        assert_eq!(
            std::fs::read(upload.join("file.csv.asc")).unwrap(),
            b"ciphertext"
        );
        assert!(!work.exists());
        assert!(!failed.exists(), "nothing was superseded");

        // A stray file in work/ is not a pickup and is left alone.
        let stray = dir.path().join("work").join("stray.txt");
        std::fs::write(&stray, b"x").unwrap();
        recover_pickup(&stray, &upload, &failed).unwrap();
        assert!(stray.exists());
    }

    #[test]
    fn prune_removes_only_old_job_directories() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("2026-01-01T000000Z-old");
        let new = dir.path().join("2026-11-25T000000Z-new");
        for d in [&old, &new] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("file.csv.asc"), b"x").unwrap();
        }
        let stray = dir.path().join("not-a-job");
        std::fs::write(&stray, b"x").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(40 * 86_400);
        for p in [&old, &stray] {
            std::fs::File::open(p)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        assert_eq!(prune(dir.path(), Duration::from_secs(30 * 86_400)), 1);
        assert!(!old.exists());
        assert!(new.join("file.csv.asc").exists());
        assert!(stray.exists(), "only job directories are removed");
        assert_eq!(prune(&dir.path().join("missing"), Duration::ZERO), 0);
    }
}
