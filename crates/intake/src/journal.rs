//! The intake's durable journal: one JSON line per step, appended and synced to disk
//! before the step's effect is relied on.
//!
//! A job is one (manifest, encrypted file) pair as uploaded, identified by a hash of the
//! account, both names, and the file's size, modification time and inode: the same
//! upload seen again after a restart is the same job, while a file uploaded again under
//! the same name (recurring uploads) is a new one.
//!
//! After a crash the journal tells which jobs were picked up and how many batches of
//! each the upstream acknowledged: a restarted intake resumes after the last
//! acknowledged batch, so no record is uploaded twice (each batch also carries an
//! `Idempotency-Key` for the rare crash between the upstream's answer and the journal
//! line).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobState {
    /// Picked up (the pickup notice went out).
    pub picked: bool,
    /// The batch size the job started with (batch numbers count in it, across restarts).
    pub batch_size: Option<usize>,
    /// Batches the upstream acknowledged.
    pub batches: u64,
    /// Finished: `Some(Ok((uploaded, skipped)))` ingested, `Some(Err(reason))` failed.
    pub finished: Option<Result<(u64, u64), String>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line {
    Picked {
        job: String,
        account: String,
        file: String,
        #[serde(default)]
        batch_size: Option<usize>,
        at: String,
    },
    Batch {
        job: String,
        n: u64,
    },
    Done {
        job: String,
        uploaded: u64,
        skipped: u64,
        at: String,
    },
    Failed {
        job: String,
        error: String,
        at: String,
    },
    /// A file fetched from a customer's server (scheduled pull); `sha256` is absent
    /// when it was refused unfetched (too large), with the reason in `refused`.
    Fetched {
        account: String,
        name: String,
        size: u64,
        mtime: u64,
        #[serde(default)]
        sha256: Option<String>,
        #[serde(default)]
        refused: Option<String>,
        at: String,
    },
}

/// What the journal recorded of one remote file (the last fetch under its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRecord {
    /// Size when fetched.
    pub size: u64,
    /// Remote modification time, seconds since the epoch.
    pub mtime: u64,
    /// SHA-256 of what was fetched, hex; `None` if it was refused unfetched.
    pub sha256: Option<String>,
}

/// The compaction key of a fetch line: only the last one per account and name counts.
fn fetch_key(account: &str, name: &str) -> String {
    format!("fetched\0{account}\0{name}")
}

impl Line {
    fn job(&self) -> &str {
        match self {
            Line::Picked { job, .. }
            | Line::Batch { job, .. }
            | Line::Done { job, .. }
            | Line::Failed { job, .. } => job,
            Line::Fetched { .. } => "",
        }
    }
}

/// Replaces the journal with `lines`, atomically: a temp file beside it (owner-only, as
/// `tempfile` creates them), synced, renamed over it, and the directory synced.
fn rewrite<'a>(path: &Path, lines: impl Iterator<Item = &'a [u8]>) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    for line in lines {
        tmp.write_all(line)?;
        tmp.write_all(b"\n")?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// The journal file and what it says.
#[derive(Debug)]
pub struct Journal {
    file: File,
    jobs: HashMap<String, JobState>,
    fetched: HashMap<(String, String), FetchRecord>,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Journal {
    /// Opens (or creates, mode 0600) the journal at `path` and reads it. A torn last line
    /// (a crash during a write) is ignored.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut jobs: HashMap<String, JobState> = HashMap::new();
        let mut fetched: HashMap<(String, String), FetchRecord> = HashMap::new();
        // Fetch lines superseded by a later one of the same file (by line index).
        let mut superseded: HashSet<usize> = HashSet::new();
        let mut last_fetch: HashMap<String, usize> = HashMap::new();
        // Each line as read, with its job, and each job's account: for compaction.
        let mut lines: Vec<(String, Vec<u8>)> = Vec::new();
        let mut accounts: HashMap<String, String> = HashMap::new();
        if let Ok(existing) = File::open(path) {
            // Byte lines, so a torn line (even cut inside a UTF-8 character) is skipped
            // rather than failing the whole journal.
            for raw in BufReader::new(existing).split(b'\n') {
                let raw = raw?;
                let Ok(line) = serde_json::from_slice::<Line>(&raw) else {
                    continue;
                };
                let key = match &line {
                    Line::Fetched { account, name, .. } => fetch_key(account, name),
                    other => other.job().to_owned(),
                };
                if let Line::Fetched { .. } = line
                    && let Some(earlier) = last_fetch.insert(key.clone(), lines.len())
                {
                    superseded.insert(earlier);
                }
                lines.push((key, raw));
                match line {
                    Line::Fetched {
                        account,
                        name,
                        size,
                        mtime,
                        sha256,
                        ..
                    } => {
                        fetched.insert(
                            (account, name),
                            FetchRecord {
                                size,
                                mtime,
                                sha256,
                            },
                        );
                    }
                    Line::Picked {
                        job,
                        account,
                        batch_size,
                        ..
                    } => {
                        accounts.insert(job.clone(), account);
                        let s = jobs.entry(job).or_default();
                        s.picked = true;
                        s.batch_size = batch_size;
                    }
                    Line::Batch { job, n } => {
                        let s = jobs.entry(job).or_default();
                        s.batches = s.batches.max(n);
                    }
                    Line::Done {
                        job,
                        uploaded,
                        skipped,
                        ..
                    } => jobs.entry(job).or_default().finished = Some(Ok((uploaded, skipped))),
                    Line::Failed { job, error, .. } => {
                        jobs.entry(job).or_default().finished = Some(Err(error));
                    }
                }
            }
            // A job that finished and left work/ needs no more remembering: its upload
            // has moved to processed/ or failed/ and cannot be picked up again.
            let state_dir = path.parent().unwrap_or(Path::new("."));
            let gone: HashSet<String> = jobs
                .iter()
                .filter(|(job, state)| {
                    state.finished.is_some()
                        && accounts.get(*job).is_some_and(|account| {
                            !state_dir.join(account).join("work").join(job).exists()
                        })
                })
                .map(|(job, _)| job.clone())
                .collect();
            if !gone.is_empty() || !superseded.is_empty() {
                jobs.retain(|job, _| !gone.contains(job));
                let kept = lines
                    .iter()
                    .enumerate()
                    .filter(|(i, (job, _))| !gone.contains(job) && !superseded.contains(i))
                    .map(|(_, (_, raw))| raw.as_slice());
                rewrite(path, kept)?;
            }
            // Cut a torn last line (no newline): the next line starts clean.
            let text = std::fs::read(path)?;
            if text.last().is_some_and(|&b| b != b'\n') {
                let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                OpenOptions::new()
                    .write(true)
                    .open(path)?
                    .set_len(keep as u64)?;
            }
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options.open(path)?;
        Ok(Self {
            file,
            jobs,
            fetched,
        })
    }

    /// The last fetch recorded of `name` from `account`'s server.
    pub fn fetched(&self, account: &str, name: &str) -> Option<&FetchRecord> {
        self.fetched.get(&(account.to_owned(), name.to_owned()))
    }

    /// Records a fetched file: from here on it is delivered, never fetched again while
    /// its size and time stay the same.
    pub fn record_fetch(
        &mut self,
        account: &str,
        name: &str,
        size: u64,
        mtime: u64,
        sha256: &str,
    ) -> std::io::Result<()> {
        self.append_fetch(account, name, size, mtime, Some(sha256.to_owned()), None)
    }

    /// Records a file refused without fetching it (too large): reported once, not tried
    /// again while its size and time stay the same.
    pub fn fetch_refused(
        &mut self,
        account: &str,
        name: &str,
        size: u64,
        mtime: u64,
        reason: &str,
    ) -> std::io::Result<()> {
        self.append_fetch(account, name, size, mtime, None, Some(reason.to_owned()))
    }

    fn append_fetch(
        &mut self,
        account: &str,
        name: &str,
        size: u64,
        mtime: u64,
        sha256: Option<String>,
        refused: Option<String>,
    ) -> std::io::Result<()> {
        self.append(&Line::Fetched {
            account: account.into(),
            name: name.into(),
            size,
            mtime,
            sha256: sha256.clone(),
            refused,
            at: now(),
        })?;
        self.fetched.insert(
            (account.into(), name.into()),
            FetchRecord {
                size,
                mtime,
                sha256,
            },
        );
        Ok(())
    }

    /// What the journal knows of `job`.
    pub fn state(&self, job: &str) -> JobState {
        self.jobs.get(job).cloned().unwrap_or_default()
    }

    fn append(&mut self, line: &Line) -> std::io::Result<()> {
        let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
        text.push('\n');
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()
    }

    /// Records a pickup.
    pub fn picked(
        &mut self,
        job: &str,
        account: &str,
        file: &str,
        batch_size: usize,
    ) -> std::io::Result<()> {
        self.append(&Line::Picked {
            job: job.into(),
            account: account.into(),
            file: file.into(),
            batch_size: Some(batch_size),
            at: now(),
        })?;
        let s = self.jobs.entry(job.into()).or_default();
        s.picked = true;
        s.batch_size = Some(batch_size);
        Ok(())
    }

    /// Records that the upstream acknowledged batch `n` (1-based).
    pub fn batch(&mut self, job: &str, n: u64) -> std::io::Result<()> {
        self.append(&Line::Batch { job: job.into(), n })?;
        self.jobs.entry(job.into()).or_default().batches = n;
        Ok(())
    }

    /// Records success.
    pub fn done(&mut self, job: &str, uploaded: u64, skipped: u64) -> std::io::Result<()> {
        self.append(&Line::Done {
            job: job.into(),
            uploaded,
            skipped,
            at: now(),
        })?;
        self.jobs.entry(job.into()).or_default().finished = Some(Ok((uploaded, skipped)));
        Ok(())
    }

    /// Records failure.
    pub fn failed(&mut self, job: &str, error: &str) -> std::io::Result<()> {
        self.append(&Line::Failed {
            job: job.into(),
            error: error.into(),
            at: now(),
        })?;
        self.jobs.entry(job.into()).or_default().finished = Some(Err(error.into()));
        Ok(())
    }
}

/// The id of a job: a hash of what identifies one upload.
pub fn job_id(account: &str, manifest: &str, file: &str, meta: &std::fs::Metadata) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for part in [account, manifest, file] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(meta.len().to_be_bytes());
    if let Ok(m) = meta.modified()
        && let Ok(d) = m.duration_since(std::time::UNIX_EPOCH)
    {
        h.update(d.as_nanos().to_be_bytes());
    }
    #[cfg(unix)]
    h.update(std::os::unix::fs::MetadataExt::ino(meta).to_be_bytes());
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The one-intake-per-storage lock: an exclusive `flock` on `state_dir/intake.lock`,
/// held for as long as the intake runs and released by the kernel when the process
/// ends, however it ends. A second intake on the same storage (another replica, a
/// restarted pod overlapping the old one) fails to take it and refuses to start, so no
/// file is picked up twice. The lock file is not the journal itself because the
/// journal is compacted by renaming a new file over it, which a lock would not follow.
/// Shared storage must support `flock` (local disks, NFSv4 and most CSI volumes do).
#[derive(Debug)]
pub struct StorageLock {
    _file: std::fs::File,
}

impl StorageLock {
    /// Takes the lock in `state_dir`, or says who holds it.
    pub fn acquire(state_dir: &Path) -> Result<Self, String> {
        use std::io::{Read as _, Seek as _};
        let path = state_dir.join("intake.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(format!(
                    "another intake is running on this storage ({} is locked by {}); only one intake may run per state_dir",
                    path.display(),
                    holder.trim().chars().take(100).collect::<String>()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()));
            }
        }
        // Who holds it, for the message a second intake prints.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "pid {}", std::process::id()));
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_reopen_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        // b finishes but is still in work/ (not yet moved): the journal keeps it.
        std::fs::create_dir_all(dir.path().join("ACCT/work/b")).unwrap();
        {
            let mut j = Journal::open(&path).unwrap();
            j.picked("a", "ACCT", "f.csv.asc", 100).unwrap();
            j.batch("a", 1).unwrap();
            j.batch("a", 2).unwrap();
            j.picked("b", "ACCT", "g.csv.asc", 100).unwrap();
            j.failed("b", "bad").unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"event\":\"batch\",\"job\":\"\xc3")
            .unwrap();
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(
            j.state("a"),
            JobState {
                picked: true,
                batch_size: Some(100),
                batches: 2,
                finished: None
            }
        );
        // The torn line was cut, so the next line is whole.
        j.batch("a", 3).unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.state("a").batches, 3);
        assert_eq!(j.state("b").finished, Some(Err("bad".into())));
        assert_eq!(j.state("c"), JobState::default());
    }

    #[test]
    fn reopening_forgets_jobs_that_finished_and_left_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        std::fs::create_dir_all(dir.path().join("ACCT/work/moving")).unwrap();
        {
            let mut j = Journal::open(&path).unwrap();
            j.picked("done", "ACCT", "a.csv.asc", 10).unwrap();
            j.batch("done", 1).unwrap();
            j.done("done", 10, 0).unwrap();
            j.picked("running", "ACCT", "b.csv.asc", 10).unwrap();
            j.batch("running", 1).unwrap();
            j.picked("moving", "ACCT", "c.csv.asc", 10).unwrap();
            j.failed("moving", "bad").unwrap();
        }
        let before = std::fs::read_to_string(&path).unwrap().lines().count();
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.state("done"), JobState::default(), "forgotten");
        assert_eq!(j.state("running").batches, 1);
        assert_eq!(j.state("moving").finished, Some(Err("bad".into())));
        drop(j);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), before - 3, "{text}");
        assert!(!text.contains("\"done\""), "{text}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        // Reopening again changes nothing.
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.state("running").batches, 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn fetch_records_survive_a_reopen_and_only_the_last_per_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let mut j = Journal::open(&path).unwrap();
            j.record_fetch("ACCT", "daily.csv.pgp", 10, 1000, "aa")
                .unwrap();
            j.record_fetch("ACCT", "daily.csv.pgp", 12, 2000, "bb")
                .unwrap();
            j.record_fetch("OTHER", "daily.csv.pgp", 5, 1000, "cc")
                .unwrap();
            j.fetch_refused("ACCT", "huge.csv.pgp", 9, 3000, "too large")
                .unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let want = |size, mtime, sha: Option<&str>| FetchRecord {
            size,
            mtime,
            sha256: sha.map(str::to_owned),
        };
        assert_eq!(
            j.fetched("ACCT", "daily.csv.pgp"),
            Some(&want(12, 2000, Some("bb")))
        );
        assert_eq!(
            j.fetched("OTHER", "daily.csv.pgp"),
            Some(&want(5, 1000, Some("cc")))
        );
        assert_eq!(
            j.fetched("ACCT", "huge.csv.pgp"),
            Some(&want(9, 3000, None))
        );
        assert_eq!(j.fetched("ACCT", "nope"), None);
        drop(j);
        // The superseded line was compacted away.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(!text.contains("\"aa\""), "{text}");
    }

    #[test]
    fn a_second_lock_on_the_same_storage_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StorageLock::acquire(dir.path()).unwrap();
        let err = StorageLock::acquire(dir.path()).unwrap_err();
        assert!(err.contains("another intake is running"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        StorageLock::acquire(dir.path()).unwrap();
    }
}
