//! Scheduled imports: the intake fetches an account's files and manifests from the
//! customer's own SFTP server and hands them to the same pipeline as pushed uploads.
//!
//! One run, for one account:
//!
//! 1. Files left in `state_dir/<account>/pull/` by a crash are finished: a complete
//!    file the journal recorded as fetched is delivered; anything else is a partial
//!    transfer, resumed below if the remote file is unchanged, else restarted.
//! 2. Connect (the host key must be the pinned one), list `remote_dir`, wait `settle_ms`,
//!    list again: a file whose size or modification time changed between the two is
//!    still being written and is left for the next run.
//! 3. Each complete file the journal has not recorded with the same size and time is
//!    streamed to `pull/partial/<name>` (constant memory, the size limit checked
//!    before and during the transfer, SHA-256 computed on the way), synced and renamed
//!    to `pull/done/<name>`; the journal records name, size, time and hash; then the file is
//!    moved into the account's upload directory, where the scanner takes it as it takes
//!    a pushed file. Data files go before manifests.
//! 4. The remote file is kept, moved to `remote_dir/processed/`, or deleted (`after`).
//!
//! The journal line is the commit point: before it, a crash leaves a partial or
//! unrecorded file that is fetched again; after it, the recorded file is delivered by
//! the next run and never fetched again while its size and time stay the same. So a
//! file is imported exactly once however often the schedule runs or the process dies.

mod remote;
mod schedule;

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use zeroize::Zeroizing;

pub use remote::{Endpoint, HostKeyPin, Remote, RemoteError, RemoteFile, fingerprint};
pub use schedule::Schedule;

use crate::files::create_private_dir;
use crate::notify::{Notice, Stage};
use crate::settings::{After, IntakeAccount, IntakeConfig, Pull};
use crate::{Intake, MAX_MANIFEST_BYTES, is_manifest};

/// Staging subdirectory of transfers in progress.
const PARTIAL: &str = "partial";
/// Staging subdirectory of the notes of transfers: the remote size and time each
/// belongs to, kept until its fetch is recorded.
const NOTES: &str = "notes";
/// Staging subdirectory of complete transfers.
const DONE: &str = "done";
/// Suffix of a copy into the upload directory across file systems (after a `.`).
const PULLING: &str = ".pulling";

/// A remote file name the intake fetches: a plain name (no `/` or `\\`, no control
/// characters, not starting with `.`, at most 240 bytes so that the staging names
/// derived from it fit the file system). The server chooses the
/// names it lists, and they become local file names.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 240
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

/// Loads the login key: an OpenSSH private key file (owner-only), decrypted with the
/// passphrase when it has one.
pub fn load_login_key(
    path: &Path,
    passphrase: Option<Zeroizing<Vec<u8>>>,
) -> Result<Arc<russh::keys::PrivateKey>, String> {
    let text = hpke_keyfiles::read_secret_file(path)
        .map_err(|e| format!("ssh_key {}: {e}", path.display()))?;
    let text = std::str::from_utf8(&text)
        .map_err(|_| format!("ssh_key {}: not an OpenSSH private key", path.display()))?;
    let passphrase = match passphrase.as_deref().map(|p| std::str::from_utf8(p)) {
        Some(Ok(p)) => Some(Zeroizing::new(p.trim_end_matches(['\r', '\n']).to_owned())),
        Some(Err(_)) => return Err("the ssh_key passphrase is not UTF-8".into()),
        None => None,
    };
    russh::keys::decode_secret_key(text, passphrase.as_deref().map(String::as_str))
        .map(Arc::new)
        .map_err(|e| {
            let hint = match e {
                russh::keys::Error::KeyIsEncrypted => {
                    "it is passphrase-protected: set ssh_key_passphrase_env or ssh_key_passphrase_file"
                        .to_owned()
                }
                other => other.to_string(),
            };
            format!("ssh_key {}: {hint}", path.display())
        })
}

/// How one fetched file ended, as `intake run` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FetchedFile {
    /// Its name on the remote.
    pub name: String,
    /// Bytes fetched.
    pub bytes: u64,
    /// SHA-256 of its content, hex.
    pub sha256: String,
    /// What became of it: `imported: …`, `failed: …`, or still waiting.
    pub outcome: String,
}

/// What one pull did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PullReport {
    /// The account.
    pub account: String,
    /// The server, as `sftp://user@host:port/dir`.
    pub server: String,
    /// Files fetched in this run, in order.
    pub fetched: Vec<FetchedFile>,
    /// Files still being written on the remote, left for the next run.
    pub changing: Vec<String>,
    /// Files already fetched before (same name, size and time).
    pub already_fetched: usize,
    /// Files that could not be pulled in this run (too large, unreadable, not
    /// disposable), each with its reason; the others went on.
    pub problems: Vec<String>,
    /// Why the run failed, if it did (files fetched before the failure stay fetched).
    pub error: Option<String>,
}

/// A request to pull one account now (`intake run`), answered when its files ended.
#[derive(Debug)]
pub struct RunRequest {
    /// The account id.
    pub account: String,
    /// Where the report goes.
    pub reply: tokio::sync::oneshot::Sender<Result<PullReport, String>>,
}

/// Per-account schedule state.
#[derive(Debug, Default)]
pub(crate) struct PullState {
    /// When the next scheduled run is due (`None`: not yet computed).
    next: Option<SystemTime>,
    /// Consecutive failed runs.
    failures: u32,
    /// The reason of the last failure, and how many runs in a row failed with it.
    streak: Option<(&'static str, u32)>,
    /// The failure reason already mailed in this streak of failures.
    mailed: Option<&'static str>,
}

/// What the scanner needs to know of pulled files.
#[derive(Debug, Default)]
pub(crate) struct Pulled {
    /// Delivered into an upload directory and complete: no settle wait.
    pub(crate) fresh: HashSet<PathBuf>,
    /// The files the current pull delivered: only their outcomes are kept.
    pub(crate) delivered: HashSet<PathBuf>,
    /// How each delivered file ended (path in the upload directory → outcome).
    pub(crate) ended: HashMap<PathBuf, String>,
    pub(crate) states: HashMap<String, PullState>,
}

impl Intake {
    /// Runs the pulls whose schedule is due.
    pub(crate) async fn pull_due(&mut self) {
        let config = self.config.load_full();
        let now = SystemTime::now();
        for account in &config.accounts {
            let Some(pull) = &account.pull else {
                continue;
            };
            let state = self.pulled.states.entry(account.id.clone()).or_default();
            // The first run after a start is at once: files waiting since the last run
            // should not wait a whole interval more.
            if state.next.is_some_and(|next| next > now) {
                continue;
            }
            self.pull(&config, account, pull).await;
            let next = pull.schedule.next_after(SystemTime::now());
            if let Some(state) = self.pulled.states.get_mut(&account.id) {
                state.next = Some(next);
            }
        }
    }

    /// Pulls `account` now, processes what was fetched, and reports how each file ended.
    pub async fn pull_now(&mut self, account: &str) -> Result<PullReport, String> {
        let config = self.config.load_full();
        let acct = config
            .accounts
            .iter()
            .find(|a| a.id == account)
            .ok_or_else(|| format!("no intake account {account:?}"))?;
        let pull = acct
            .pull
            .as_ref()
            .ok_or_else(|| format!("intake account {account:?} has no [intake.accounts.pull]"))?;
        let mut report = self.pull(&config, acct, pull).await;
        self.scan_account(&config, acct).await;
        for f in &mut report.fetched {
            let path = acct.upload_dir.join(&f.name);
            f.outcome = match self.pulled.ended.remove(&path) {
                Some(outcome) => outcome,
                None if is_manifest(&f.name) => {
                    "waiting: its file has not arrived, or the upstream is unavailable (retried)"
                        .to_owned()
                }
                None => {
                    "waiting: for its manifest, or the upstream is unavailable (retried)".to_owned()
                }
            };
        }
        Ok(report)
    }

    /// One pull of `account`: fetches, delivers, disposes; mails and counts failures.
    async fn pull(
        &mut self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        pull: &Pull,
    ) -> PullReport {
        self.pulled.ended.clear();
        self.pulled.delivered.clear();
        let mut report = PullReport {
            account: account.id.clone(),
            server: format!("{}{}", pull.endpoint.url(), absolute(&pull.remote_dir)),
            ..Default::default()
        };
        let result = self.pull_files(config, account, pull, &mut report).await;
        let state = self.pulled.states.entry(account.id.clone()).or_default();
        match result {
            Ok(()) => {
                let bytes = report.fetched.iter().map(|f| f.bytes).sum();
                tracing::info!(
                    account = %account.id, server = %report.server,
                    fetched = report.fetched.len(), bytes,
                    changing = report.changing.len(),
                    "pull finished"
                );
                state.failures = 0;
                state.streak = None;
                self.metrics
                    .pull(&account.id, Ok((report.fetched.len() as u64, bytes)), 0);
                state.mailed = None;
            }
            Err(e) => {
                state.failures += 1;
                let failures = state.failures;
                let same = match state.streak {
                    Some((reason, n)) if reason == e.reason() => n + 1,
                    _ => 1,
                };
                state.streak = Some((e.reason(), same));
                tracing::warn!(
                    account = %account.id, server = %report.server,
                    reason = e.reason(), failures, error = %e,
                    "pull failed"
                );
                self.metrics.pull(&account.id, Err(e.reason()), failures);
                // A changed host key or a refused login needs a person at once; an
                // unreachable server after `report_after_failures` runs in a row that
                // failed for that reason. Each once per streak.
                let due = match e {
                    RemoteError::Unreachable(_)
                    | RemoteError::Transfer(_)
                    | RemoteError::Local(_) => same >= pull.report_after_failures,
                    _ => true,
                };
                if due && state.mailed != Some(e.reason()) {
                    state.mailed = Some(e.reason());
                    self.mail_pull_failure(account, pull, &report.server, &e, same)
                        .await;
                }
                report.error = Some(e.to_string());
            }
        }
        report
    }

    async fn mail_pull_failure(
        &self,
        account: &IntakeAccount,
        pull: &Pull,
        server: &str,
        error: &RemoteError,
        failures: u32,
    ) {
        let mut reason = error.to_string();
        if matches!(
            error,
            RemoteError::Unreachable(_) | RemoteError::Transfer(_)
        ) {
            reason.push_str(&format!(
                " ({failures} scheduled runs in a row have failed; the intake keeps trying on schedule)"
            ));
        }
        let notice = Notice {
            stage: Stage::PullFailure,
            account: account.id.clone(),
            file: server.to_owned(),
            manifest: String::new(),
            uploaded: 0,
            skipped: 0,
            error: Some(reason),
            bad_rows: Vec::new(),
            to: None,
            manifest_unreadable: false,
        };
        // The webhook once, each address once.
        self.notifier.post_webhook(&notice).await;
        let mut sent = HashSet::new();
        for to in [&pull.contact, &account.failure_contact]
            .into_iter()
            .flatten()
        {
            if sent.insert(to.clone()) {
                let n = Notice {
                    to: Some(to.clone()),
                    ..notice.clone()
                };
                self.notifier.send_email(&n).await;
            }
        }
    }

    async fn pull_files(
        &mut self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        pull: &Pull,
        report: &mut PullReport,
    ) -> Result<(), RemoteError> {
        let staging = self.account_dir(account, "pull");
        for sub in [PARTIAL, NOTES, DONE] {
            create_private_dir(&staging.join(sub)).map_err(RemoteError::Local)?;
        }
        self.deliver_leftovers(account, &staging)?;
        let remote = Remote::connect(&pull.endpoint).await?;
        // One deadline for the whole run: a server that answers slowly, or lists without
        // end, cannot hold the intake. A transfer cut here resumes next run.
        let result = tokio::time::timeout(
            pull.max_run,
            self.pull_with(config, account, pull, &remote, &staging, report),
        )
        .await
        .unwrap_or_else(|_| {
            Err(RemoteError::Transfer(format!(
                "the run took longer than max_run_s ({} s); it goes on at the next run",
                pull.max_run.as_secs()
            )))
        });
        remote.close().await;
        result
    }

    async fn pull_with(
        &mut self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        pull: &Pull,
        remote: &Remote,
        staging: &Path,
        report: &mut PullReport,
    ) -> Result<(), RemoteError> {
        let dir = &pull.remote_dir;
        let first: HashSet<RemoteFile> = remote.list(dir).await?.into_iter().collect();
        tokio::time::sleep(pull.settle).await;
        let second = remote.list(dir).await?;
        let mut stable: Vec<RemoteFile> = Vec::new();
        for f in second {
            if first.contains(&f) {
                stable.push(f);
            } else {
                report.changing.push(f.name);
            }
        }
        forget_vanished_parts(staging, &stable, &report.changing);
        // Data files first: a manifest arrives with its file already in place.
        stable.sort_by_key(|f| (is_manifest(&f.name), f.name.clone()));
        // A problem with one file is reported and the others go on; the run counts as
        // failed with the first problem.
        let mut first_problem = None;
        for f in stable {
            if let Err(e) = self
                .pull_one(config, account, pull, remote, staging, report, &f)
                .await
            {
                if matches!(e, RemoteError::Local(_)) {
                    // The disk or the journal: nothing else will go better.
                    return Err(e);
                }
                tracing::warn!(account = %account.id, file = %f.name, reason = e.reason(), error = %e, "a file could not be pulled");
                report.problems.push(e.to_string());
                first_problem.get_or_insert(e);
            }
        }
        first_problem.map_or(Ok(()), Err)
    }

    #[allow(clippy::too_many_arguments)]
    async fn pull_one(
        &mut self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        pull: &Pull,
        remote: &Remote,
        staging: &Path,
        report: &mut PullReport,
        f: &RemoteFile,
    ) -> Result<(), RemoteError> {
        let dir = &pull.remote_dir;
        if let Some(r) = self.journal.fetched(&account.id, &f.name)
            && r.size == f.size
            && r.mtime == f.mtime
        {
            if r.sha256.is_none() {
                // Refused before (too large): left alone on the server, not reported
                // again until it changes.
                return Ok(());
            }
            report.already_fetched += 1;
            // Recorded but still there: a disposal cut short (or `keep`).
            return self.dispose(remote, pull, &f.name).await;
        }
        let limit = if is_manifest(&f.name) {
            MAX_MANIFEST_BYTES
        } else {
            config.max_encrypted_file_bytes
        };
        if f.size > limit {
            // Recorded, so it is reported once and not tried again until it changes;
            // never disposed of, so raising the limit fetches it.
            let e = RemoteError::TooLarge {
                name: f.name.clone(),
                size: f.size,
                limit,
            };
            self.journal
                .fetch_refused(&account.id, &f.name, f.size, f.mtime, &e.to_string())
                .map_err(|e| RemoteError::Local(format!("journal: {e}")))?;
            return Err(e);
        }
        let Some((sha256, bytes)) = download(remote, dir, f, staging, limit).await? else {
            // It changed during the transfer: still being written.
            report.changing.push(f.name.clone());
            return Ok(());
        };
        self.journal
            .record_fetch(&account.id, &f.name, f.size, f.mtime, &sha256)
            .map_err(|e| RemoteError::Local(format!("journal: {e}")))?;
        // The commit point is passed: from here the file is delivered exactly once.
        let _ = std::fs::remove_file(staging.join(NOTES).join(&f.name));
        tracing::info!(account = %account.id, file = %f.name, bytes, sha256 = %sha256, "fetched");
        report.fetched.push(FetchedFile {
            name: f.name.clone(),
            bytes,
            sha256,
            outcome: String::new(),
        });
        self.deliver_done(account, staging, &f.name)?;
        self.dispose(remote, pull, &f.name).await
    }

    /// Moves `done/<name>` into the upload directory, unless a file of that name waits
    /// there (an upload, or an earlier pulled file not yet taken): then it stays staged
    /// and the next run delivers it.
    fn deliver_done(
        &mut self,
        account: &IntakeAccount,
        staging: &Path,
        name: &str,
    ) -> Result<(), RemoteError> {
        let staged = staging.join(DONE).join(name);
        match deliver(&staged, &account.upload_dir, name) {
            Ok(Some(delivered)) => {
                self.pulled.delivered.insert(delivered.clone());
                self.pulled.fresh.insert(delivered);
                Ok(())
            }
            Ok(None) => {
                tracing::warn!(account = %account.id, file = %name, "a file of the same name waits in the upload directory: the pulled one is delivered by a later run");
                Ok(())
            }
            Err(e) => Err(RemoteError::Local(format!("cannot deliver {name:?}: {e}"))),
        }
    }

    async fn dispose(&self, remote: &Remote, pull: &Pull, name: &str) -> Result<(), RemoteError> {
        let dir = &pull.remote_dir;
        match pull.after {
            After::Keep => Ok(()),
            After::Delete => remote.remove(&format!("{dir}/{name}")).await,
            After::Move => {
                remote
                    .rename(dir, name, &format!("{dir}/processed"), name)
                    .await
            }
        }
    }

    /// Finishes what a crash left: in `done/`, a file the journal recorded with its size,
    /// time (its note in `notes/`, kept until the record is written) and hash is
    /// delivered; any other is removed and fetched again. A copy across file systems cut
    /// short (`.<name>.pulling` in the upload directory) is finished the same way.
    /// Partial transfers in `partial/` stay for [`download`] to resume or restart.
    fn deliver_leftovers(
        &mut self,
        account: &IntakeAccount,
        staging: &Path,
    ) -> Result<(), RemoteError> {
        let recorded = |journal: &crate::journal::Journal, name: &str, path: &Path| {
            let Some(r) = journal.fetched(&account.id, name) else {
                return false;
            };
            // A note left means the record was not written for this file: an older
            // record of the same name and content is not this fetch.
            let note = std::fs::read(staging.join(NOTES).join(name))
                .ok()
                .and_then(|t| serde_json::from_slice::<PartNote>(&t).ok());
            note.is_none_or(|n| n.size == r.size && n.mtime == r.mtime)
                && r.sha256.is_some()
                && sha256_file(path).ok() == r.sha256
        };
        // Copies across file systems cut short after the staged file was removed.
        if let Ok(entries) = std::fs::read_dir(&account.upload_dir) {
            for entry in entries.flatten() {
                let Ok(file) = entry.file_name().into_string() else {
                    continue;
                };
                let Some(name) = file.strip_prefix('.').and_then(|n| n.strip_suffix(PULLING))
                else {
                    continue;
                };
                let target = account.upload_dir.join(name);
                if recorded(&self.journal, name, &entry.path()) && !target.exists() {
                    std::fs::rename(entry.path(), &target)
                        .map_err(|e| RemoteError::Local(e.to_string()))?;
                    self.pulled.fresh.insert(target);
                } else {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let done = staging.join(DONE);
        let entries = std::fs::read_dir(&done).map_err(|e| RemoteError::Local(e.to_string()))?;
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if recorded(&self.journal, &name, &entry.path()) {
                let _ = std::fs::remove_file(staging.join(NOTES).join(&name));
                tracing::info!(account = %account.id, file = %name, "a fetched file is delivered after a restart");
                self.deliver_done(account, staging, &name)?;
            } else {
                let _ = std::fs::remove_file(entry.path());
                let _ = std::fs::remove_file(staging.join(NOTES).join(&name));
            }
        }
        Ok(())
    }
}

/// Removes partial transfers (and their notes) of files no longer on the server.
fn forget_vanished_parts(staging: &Path, stable: &[RemoteFile], changing: &[String]) {
    let listed: HashSet<&str> = stable
        .iter()
        .map(|f| f.name.as_str())
        .chain(changing.iter().map(String::as_str))
        .collect();
    for sub in [PARTIAL, NOTES] {
        let Ok(entries) = std::fs::read_dir(staging.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // A note of a file in done/ stays until that file is recorded or removed.
            let done = sub == NOTES && staging.join(DONE).join(name.as_ref()).exists();
            if !listed.contains(name.as_ref()) && !done {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn absolute(dir: &str) -> String {
    if dir.starts_with('/') {
        dir.to_owned()
    } else {
        format!("/~/{dir}")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex(&hash.finalize()))
}

/// The size and time a partial transfer belongs to.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
struct PartNote {
    size: u64,
    mtime: u64,
}

/// Streams `dir/f` into `staging/partial/<name>`, resuming a partial transfer of the
/// same remote file, then syncs it and renames it to `staging/done/<name>`. Returns its SHA-256
/// and size, or `None` when the remote file changed during the transfer.
async fn download(
    remote: &Remote,
    dir: &str,
    f: &RemoteFile,
    staging: &Path,
    limit: u64,
) -> Result<Option<(String, u64)>, RemoteError> {
    let local = |e: std::io::Error| RemoteError::Local(e.to_string());
    let part = staging.join(PARTIAL).join(&f.name);
    let note_path = staging.join(NOTES).join(&f.name);
    let note = PartNote {
        size: f.size,
        mtime: f.mtime,
    };
    let same_remote = std::fs::read(&note_path)
        .ok()
        .and_then(|t| serde_json::from_slice::<PartNote>(&t).ok())
        .is_some_and(|n| n == note);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&part).map_err(local)?;
    let mut hash = sha2::Sha256::new();
    let mut offset = 0;
    if same_remote {
        // Resume: hash what is there (no more than the remote file holds).
        let have = file.metadata().map_err(local)?.len().min(f.size);
        file.set_len(have).map_err(local)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = have;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = file.read(&mut buf[..want]).map_err(local)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            left -= n as u64;
        }
        offset = have - left;
        file.set_len(offset).map_err(local)?;
        file.seek(std::io::SeekFrom::Start(offset)).map_err(local)?;
        if offset > 0 {
            tracing::info!(file = %f.name, offset, "resuming a partial transfer");
        }
    } else {
        file.set_len(0).map_err(local)?;
        std::fs::write(&note_path, serde_json::to_vec(&note).unwrap_or_default()).map_err(local)?;
    }
    let mut source = remote.open(&format!("{dir}/{}", f.name)).await?;
    if offset > 0 {
        source
            .seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| RemoteError::Transfer(e.to_string()))?;
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = offset;
    loop {
        let n = source
            .read(&mut buf)
            .await
            .map_err(|e| RemoteError::Transfer(e.to_string()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            return Err(RemoteError::TooLarge {
                name: f.name.clone(),
                size: total,
                limit,
            });
        }
        if total > f.size {
            break;
        }
        hash.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(local)?;
    }
    // Closes the remote handle.
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut source).await;
    if total != f.size {
        // Grew or shrank since the listing: not the file that was listed.
        let _ = std::fs::remove_file(&part);
        let _ = std::fs::remove_file(&note_path);
        return Ok(None);
    }
    file.sync_all().map_err(local)?;
    drop(file);
    // Into done/ with its note kept: the note goes once the journal has the record.
    std::fs::rename(&part, staging.join(DONE).join(&f.name)).map_err(local)?;
    sync_dir(&staging.join(DONE));
    Ok(Some((hex(&hash.finalize()), total)))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Moves a complete staged file into the upload directory under `name`, atomically
/// and never over a file already there: a hard link and an unlink (the same file
/// system), or a copy to a hidden name, synced, then renamed. Returns the path it has
/// there, or `None` when a file of that name exists (it then stays staged).
fn deliver(staged: &Path, upload_dir: &Path, name: &str) -> std::io::Result<Option<PathBuf>> {
    let target = upload_dir.join(name);
    if target.exists() {
        return Ok(None);
    }
    match std::fs::hard_link(staged, &target) {
        Ok(()) => std::fs::remove_file(staged)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(_) => {
            // Another file system (or no hard links): the copy is complete and synced
            // before the staged file goes; a crash between the two is finished by the
            // next run (`deliver_leftovers`).
            let hidden = upload_dir.join(format!(".{name}{PULLING}"));
            std::fs::copy(staged, &hidden)?;
            std::fs::File::open(&hidden)?.sync_all()?;
            std::fs::remove_file(staged)?;
            std::fs::rename(&hidden, &target)?;
        }
    }
    sync_dir(upload_dir);
    Ok(Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_from_the_server_become_local_files() {
        for ok in [
            "daily.csv.pgp",
            "a b.manifest.json",
            "ünïcode.csv.asc",
            "x..y",
        ] {
            assert!(plain_name(ok), "{ok:?}");
        }
        let long = "a".repeat(241);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "nul\0x",
            "line\nbreak",
            &long,
        ] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }
}
