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
//!    streamed to `pull/<name>.part` (constant memory, the size limit checked before
//!    and during the transfer, SHA-256 computed on the way), synced and renamed to
//!    `pull/<name>`; the journal records name, size, time and hash; then the file is
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

/// Suffix of a transfer in progress in the staging directory.
const PART: &str = ".part";
/// Suffix of the note beside a partial transfer: the remote size and time it belongs to.
const PART_NOTE: &str = ".part.json";

/// A remote file name the intake fetches: a plain name (no `/` or `\\`, no control
/// characters, not starting with `.`, at most 255 bytes). The server chooses the
/// names it lists, and they become local file names.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
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
        create_private_dir(&staging).map_err(RemoteError::Local)?;
        self.deliver_leftovers(account, &staging)?;
        let remote = Remote::connect(&pull.endpoint).await?;
        let result = self
            .pull_with(config, account, pull, &remote, &staging, report)
            .await;
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
        let first = remote.list(dir).await?;
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
        for f in stable {
            if self
                .journal
                .fetched(&account.id, &f.name)
                .is_some_and(|r| r.size == f.size && r.mtime == f.mtime)
            {
                report.already_fetched += 1;
                // Recorded but still there: a disposal cut short (or `keep`).
                self.dispose(remote, pull, &f.name).await?;
                continue;
            }
            let limit = if is_manifest(&f.name) {
                MAX_MANIFEST_BYTES
            } else {
                config.max_encrypted_file_bytes
            };
            if f.size > limit {
                // Recorded, so it is reported once and not tried again until it changes.
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
            let Some((sha256, bytes)) = download(remote, dir, &f, staging, limit).await? else {
                // It changed during the transfer: still being written.
                report.changing.push(f.name);
                continue;
            };
            self.journal
                .record_fetch(&account.id, &f.name, f.size, f.mtime, &sha256)
                .map_err(|e| RemoteError::Local(format!("journal: {e}")))?;
            let delivered = deliver(&staging.join(&f.name), &account.upload_dir, &f.name)
                .map_err(|e| RemoteError::Local(format!("cannot deliver {:?}: {e}", f.name)))?;
            self.pulled.fresh.insert(delivered);
            tracing::info!(account = %account.id, file = %f.name, bytes, sha256 = %sha256, "fetched");
            report.fetched.push(FetchedFile {
                name: f.name.clone(),
                bytes,
                sha256,
                outcome: String::new(),
            });
            self.dispose(remote, pull, &f.name).await?;
        }
        Ok(())
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

    /// Finishes what a crash left in `staging`: recorded complete files are delivered,
    /// complete files the journal does not know are removed (fetched again), partial
    /// transfers stay for [`download`] to resume or restart.
    fn deliver_leftovers(
        &mut self,
        account: &IntakeAccount,
        staging: &Path,
    ) -> Result<(), RemoteError> {
        let entries = std::fs::read_dir(staging).map_err(|e| RemoteError::Local(e.to_string()))?;
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.ends_with(PART) || name.ends_with(PART_NOTE) {
                continue;
            }
            let path = entry.path();
            let recorded = self
                .journal
                .fetched(&account.id, &name)
                .and_then(|r| r.sha256.clone());
            match (recorded, sha256_file(&path)) {
                (Some(want), Ok(have)) if want == have => {
                    let delivered = deliver(&path, &account.upload_dir, &name)
                        .map_err(|e| RemoteError::Local(format!("cannot deliver {name:?}: {e}")))?;
                    tracing::info!(account = %account.id, file = %name, "a fetched file was delivered after a restart");
                    self.pulled.fresh.insert(delivered);
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }
}

/// Removes partial transfers of files no longer on the server.
fn forget_vanished_parts(staging: &Path, stable: &[RemoteFile], changing: &[String]) {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(base) = name
            .strip_suffix(PART_NOTE)
            .or_else(|| name.strip_suffix(PART))
        else {
            continue;
        };
        let listed = stable.iter().any(|f| f.name == base) || changing.iter().any(|n| n == base);
        if !listed {
            let _ = std::fs::remove_file(entry.path());
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

/// Streams `dir/f` into `staging/<name>.part`, resuming a partial transfer of the same
/// remote file, then syncs it and renames it to `staging/<name>`. Returns its SHA-256
/// and size, or `None` when the remote file changed during the transfer.
async fn download(
    remote: &Remote,
    dir: &str,
    f: &RemoteFile,
    staging: &Path,
    limit: u64,
) -> Result<Option<(String, u64)>, RemoteError> {
    let local = |e: std::io::Error| RemoteError::Local(e.to_string());
    let part = staging.join(format!("{}{PART}", f.name));
    let note_path = staging.join(format!("{}{PART_NOTE}", f.name));
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
    let done = staging.join(&f.name);
    std::fs::rename(&part, &done).map_err(local)?;
    let _ = std::fs::remove_file(&note_path);
    sync_dir(staging);
    Ok(Some((hex(&hash.finalize()), total)))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Moves a complete staged file into the upload directory under `name`, atomically:
/// a rename, or across file systems a copy to a hidden name, synced, then renamed.
/// Returns the path it has there.
fn deliver(staged: &Path, upload_dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let target = upload_dir.join(name);
    match std::fs::rename(staged, &target) {
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            let hidden = upload_dir.join(format!(".{name}.pulling"));
            std::fs::copy(staged, &hidden)?;
            std::fs::File::open(&hidden)?.sync_all()?;
            std::fs::rename(&hidden, &target)?;
            std::fs::remove_file(staged)?;
        }
        other => other?,
    }
    sync_dir(upload_dir);
    Ok(target)
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
        let long = "a".repeat(256);
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
