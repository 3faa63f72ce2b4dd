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
//! - [`pull`]: scheduled imports from the customer's own SFTP server.
//! - [`settings`]: the `[intake]` configuration.
//! - [`host`]: what the process running the intake provides (upload API, metrics, TLS).
//! - [`demo`]: a key and an encrypted file made in-process, for `demo --intake`.
//!
//! A file is processed when its manifest is complete and the file the manifest names is
//! complete (neither changed for `settle_ms`). Afterwards both move out of the upload
//! directory, to `state_dir/<account>/processed/` or, with a `.error.json` beside them,
//! to `state_dir/<account>/failed/`; a file uploaded again under the same name is a new
//! job.

pub mod demo;
mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod ingest;
mod job;
pub mod journal;
pub mod manifest;
pub mod notify;
pub mod pgp;
pub mod pull;
mod scan;
pub mod settings;
mod upload;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;

use host::{IntakeMetrics, UploadApi};
use journal::Journal;
use notify::Notifier;
use settings::IntakeConfig;

/// The intake configuration a reload replaces.
pub type SharedIntake = Arc<ArcSwap<IntakeConfig>>;

/// Most skipped rows listed in a notice.
pub(crate) const LISTED_BAD_ROWS: usize = 100;
/// Largest manifest read.
pub(crate) const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

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
    /// Scheduled pulls: their state, and the files they delivered.
    pulled: pull::Pulled,
    /// `intake run` requests from the admin listener.
    requests: Option<tokio::sync::mpsc::Receiver<pull::RunRequest>>,
}
