//! File system steps: atomic moves, the settle check, small reads, owner-only
//! directories, error files, pruning of finished jobs, and putting back an
//! interrupted pickup.
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::MAX_MANIFEST_BYTES;

/// Prefix of a decrypted file being written.
pub(crate) const TEMP_PREFIX: &str = ".decrypting-";

/// Removes decrypted files left half-written by a crash (the intake runs one job at a
/// time, so none is being written now).
pub(crate) fn remove_stale_temporaries(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The same file (device and inode), as seen before and after a move.
pub(crate) fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
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
pub(crate) fn settled(meta: &std::fs::Metadata, settle: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age >= settle)
}

pub(crate) fn read_small(path: &Path) -> Result<Vec<u8>, String> {
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
pub(crate) fn lenient_email(text: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(text)
        .ok()
        .or_else(|| serde_norway::from_slice(text).ok())?;
    let email = value.get("clientEmail")?.as_str()?.trim().to_owned();
    email.parse::<lettre::Address>().ok().map(|_| email)
}

/// How often `processed/` and `failed/` are checked for jobs past `keep_finished_days`.
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Removes the job directories in `dir` last modified longer than `keep` ago. Entries
/// that are not directories (nothing the intake writes) are left alone.
pub(crate) fn prune(dir: &Path, keep: Duration) -> usize {
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

pub(crate) fn stamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "")
}

pub(crate) fn create_private_dir(path: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Writes `name.error.json` into `dir`: the reason a file was not imported.
pub(crate) fn write_error(dir: &Path, name: &str, reason: &str) -> std::io::Result<()> {
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
pub(crate) fn recover_pickup(
    work: &Path,
    upload_dir: &Path,
    failed_dir: &Path,
) -> Result<(), String> {
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
pub(crate) fn same_path_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Renames, or copies and removes when `to` is on another file system.
pub(crate) fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
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
