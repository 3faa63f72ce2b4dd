//! Scanning: the upload directories read every `poll_ms`, interrupted pickups put
//! back, and a manifest with its file taken into a private work directory as a job.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::files::*;
use crate::host::{IntakeMetrics, PrintMail, UploadApi, WebhookTls};
use crate::job::*;
use crate::journal::{self, Journal};
use crate::manifest::{self};
use crate::notify::Notifier;
use crate::settings::{IntakeAccount, IntakeConfig};
use crate::{Intake, SharedIntake, is_manifest};

impl Intake {
    /// Opens the journal under `state_dir` (created 0700) and sets up notifications;
    /// with `print_mail` on, mails go to `print_mail` instead of SMTP.
    pub fn new(
        config: SharedIntake,
        upload_api: Arc<dyn UploadApi>,
        metrics: Arc<dyn IntakeMetrics>,
        webhook_tls: WebhookTls,
        print_mail: PrintMail,
    ) -> Result<Self, String> {
        let current = config.load();
        create_private_dir(&current.state_dir)?;
        let lock = journal::StorageLock::acquire(&current.state_dir)?;
        let journal = Journal::open(&current.state_dir.join("journal.jsonl"))
            .map_err(|e| format!("intake journal: {e}"))?;
        let notifier = Notifier::new(
            current.smtp.as_ref(),
            current.print_mail.then_some(print_mail),
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
            pulled: crate::pull::Pulled::default(),
            requests: None,
        })
    }

    /// A sender for `intake run` requests, answered by [`Intake::run`] between scans.
    pub fn run_requests(&mut self) -> tokio::sync::mpsc::Sender<crate::pull::RunRequest> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        self.requests = Some(rx);
        tx
    }

    /// Scans and processes until `stop` completes; a job in progress finishes first.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut requests = self.requests.take();
        loop {
            self.pull_due().await;
            self.scan().await;
            let poll = self.config.load().poll;
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(poll) => {}
                Some(request) = async {
                    match requests.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let report = self.pull_now(&request.account).await;
                    let _ = request.reply.send(report);
                }
            }
        }
    }

    pub(crate) fn account_dir(&self, account: &IntakeAccount, folder: &str) -> PathBuf {
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
            self.scan_account(&config, account).await;
        }
    }

    /// One pass over one account.
    pub(crate) async fn scan_account(&mut self, config: &IntakeConfig, account: &IntakeAccount) {
        for job in self.jobs_in_progress(account) {
            if let Some((at, _)) = self.not_before.get(&job.id)
                && Instant::now() < *at
            {
                continue;
            }
            self.run_job(config, account, job).await;
        }
        let manifests = match self.manifests(account) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(account = %account.id, error = %e, "cannot list the upload directory");
                return;
            }
        };
        for name in manifests {
            self.consider(config, account, &name).await;
        }
    }

    /// The jobs under `work/`: each a directory named by its job id, holding the
    /// manifest and the file.
    pub(crate) fn jobs_in_progress(&self, account: &IntakeAccount) -> Vec<Job> {
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
    pub(crate) fn manifests(&mut self, account: &IntakeAccount) -> std::io::Result<Vec<String>> {
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
    pub(crate) async fn consider(
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
        // A pulled file is complete when delivered; an upload when it stopped changing.
        let complete =
            |path: &std::path::Path, meta: &std::fs::Metadata, pulled: &crate::pull::Pulled| {
                pulled.fresh.contains(path) || settled(meta, config.settle)
            };
        if !manifest_meta.file_type().is_file()
            || !complete(&manifest_path, &manifest_meta, &self.pulled)
        {
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
        if !complete(&file_path, &file_meta, &self.pulled) {
            return;
        }
        self.pulled.fresh.remove(&file_path);
        self.pulled.fresh.remove(&manifest_path);
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
}
