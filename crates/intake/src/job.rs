//! The job: decryption, ingestion in batches, and how a job ends (imported, failed,
//! put off until the upstream is back), with the notices each end sends.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::files::*;
use crate::ingest::{self, BadRow, FileError, Item};
use crate::manifest::{Manifest, ManifestProblem};
use crate::notify::{Notice, Stage};
use crate::settings::{IntakeAccount, IntakeConfig};
use crate::{Intake, LISTED_BAD_ROWS, decrypted_name};

/// How one job ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) uploaded: u64,
    pub(crate) skipped: u64,
    pub(crate) bad_rows: Vec<BadRow>,
}

/// A failure, with what was counted before it.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Why: its `reason` is what the log and the journal get; the customer's notice and
    /// `error.json` get its `detail` too (the file's header row, the upstream's answer).
    pub(crate) error: FileError,
    pub(crate) uploaded: u64,
    pub(crate) skipped: u64,
    pub(crate) bad_rows: Vec<BadRow>,
    /// What becomes of the job.
    pub(crate) then: Then,
}

/// What becomes of a job that did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// It failed: the customer is told, the files go to `failed/`.
    Fail,
    /// The upstream is unreachable, failing or overloaded: the job is kept and tried
    /// again later.
    RetryLater,
}

impl From<FileError> for Failure {
    fn from(error: FileError) -> Self {
        Self {
            error,
            uploaded: 0,
            skipped: 0,
            bad_rows: Vec::new(),
            then: Then::Fail,
        }
    }
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        FileError::from(reason).into()
    }
}

/// A job taken into its private work directory.
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) work: PathBuf,
    pub(crate) manifest_name: String,
    pub(crate) manifest: Manifest,
}

impl Intake {
    /// Runs (or resumes) a job in its work directory, to its end or until the upstream
    /// is back.
    pub(crate) async fn run_job(
        &mut self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        job: Job,
    ) {
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
            Err(failure) if failure.then == Then::RetryLater => {
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
    pub(crate) async fn finish(
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
        let outcome = match &result {
            Ok(o) => format!(
                "imported: {} records, {} rows skipped",
                o.uploaded, o.skipped
            ),
            Err(f) => format!("failed: {}", f.error),
        };
        for name in [&job.manifest_name, &job.manifest.file_name] {
            let path = account.upload_dir.join(name);
            if self.pulled.delivered.contains(&path) {
                self.pulled.ended.insert(path, outcome.clone());
            }
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
    pub(crate) async fn fail_early(
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
        self.pulled.fresh.remove(&source);
        if self.pulled.delivered.contains(&source) {
            self.pulled
                .ended
                .insert(source.clone(), format!("failed: {reason}"));
        }
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
    pub(crate) async fn process(
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
                    let n = crate::pgp::decrypt_stream(&[&*key], input, &mut writer, limit)
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
        if ingested.as_ref().is_err_and(|f| f.then == Then::Fail) {
            // The download path holds what was imported; a failed file stays, encrypted,
            // in failed/ with its error.
            let _ = std::fs::remove_file(&out_path);
        }
        ingested
    }

    /// Reads the decrypted file and uploads its records in batches, skipping batches the
    /// journal says the upstream already acknowledged.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn ingest(
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
                    if let Err((refusal, then)) = self
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
                            then,
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
                then: Then::Fail,
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
                then: Then::Fail,
            });
        }
        Ok(Outcome {
            uploaded,
            skipped,
            bad_rows,
        })
    }
}

/// A notice about `job` at `stage`, without counts.
pub(crate) fn notice(stage: Stage, account: &IntakeAccount, job: &Job) -> Notice {
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
pub(crate) enum Tell {
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
pub(crate) fn unreadable_summary(problems: &[ManifestProblem]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;

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
}
