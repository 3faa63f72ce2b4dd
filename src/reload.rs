//! Reloading the configuration and keys while serving, on SIGHUP and when a file it
//! names changes (checked every `reload_poll_ms`; a Kubernetes Secret update swaps the
//! files under a mounted volume, which this notices).
//!
//! A reload is atomic: the new configuration is loaded and checked completely, then
//! swapped in whole. Requests already running finish with the state they started with;
//! new ones use the new state. An invalid configuration is refused with a log line,
//! and the old one keeps serving.
//!
//! What reloads is [`LiveState`] (keys, accounts, the account header, body limits and
//! timeouts, the published keys' cache bound), the public listener's TLS certificate
//! and key (new handshakes use them) and the intake's accounts. What needs a restart is
//! [`Fixed`]: a reload that changes any of it logs which settings keep their running
//! values.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::intake::SharedIntake;
use crate::metrics::Metrics;
use crate::state::{Fixed, LiveState, SharedState};
use crate::tls::CertResolver;

/// Watches one configuration file and swaps the shared state when it changes.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    shared: SharedState,
    metrics: Arc<Metrics>,
    files: Vec<PathBuf>,
    stamp: Vec<Option<FileStamp>>,
    fixed: Fixed,
    tls: Option<Arc<CertResolver>>,
    intake: Option<SharedIntake>,
}

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

impl Reloader {
    /// A reloader for the configuration at `path`.
    /// `files` and `fixed` come from the running configuration ([`Config::files`],
    /// [`Fixed::of`]).
    pub fn new(
        path: PathBuf,
        files: Vec<PathBuf>,
        fixed: Fixed,
        shared: SharedState,
        metrics: Arc<Metrics>,
        tls: Option<Arc<CertResolver>>,
        intake: Option<SharedIntake>,
    ) -> Self {
        let stamp = files.iter().map(|f| stamp(f)).collect();
        Self {
            path,
            shared,
            metrics,
            files,
            stamp,
            fixed,
            tls,
            intake,
        }
    }

    /// True if a file of the running configuration changed since the last load.
    pub fn changed(&self) -> bool {
        self.files
            .iter()
            .zip(&self.stamp)
            .any(|(f, old)| stamp(f) != *old)
    }

    /// Loads the configuration again and swaps it in if it is valid. Returns whether
    /// the new configuration is now serving.
    pub fn reload(&mut self, reason: &str) -> bool {
        // Stamp before reading, so a change during the load is seen next time.
        let files_before: Vec<_> = self.files.iter().map(|f| stamp(f)).collect();
        match Config::load(&self.path) {
            Ok(mut config) => {
                let changed = self.fixed.differences(&Fixed::of(&config));
                if !changed.is_empty() {
                    tracing::warn!(
                        settings = %changed.join(", "),
                        "reload: these settings need a restart; their running values stay"
                    );
                }
                let keys = config.server_keys.iter().count();
                let accounts = config.accounts.len();
                self.stamp = if config.files == self.files {
                    files_before
                } else {
                    config.files.iter().map(|f| stamp(f)).collect()
                };
                self.files = config.files.clone();
                if let (Some(resolver), Some(key)) = (&self.tls, &config.tls) {
                    resolver.replace(key.clone());
                }
                if let (Some(shared), Some(intake)) = (&self.intake, config.intake.take()) {
                    shared.store(Arc::new(intake));
                }
                self.shared.store(Arc::new(LiveState::from_config(config)));
                self.metrics.reloaded(true);
                tracing::info!(
                    reason,
                    server_keys = keys,
                    accounts,
                    "configuration reloaded"
                );
                true
            }
            Err(e) => {
                // Keep watching from here: the same broken files are not retried until
                // they change again.
                self.stamp = files_before;
                self.metrics.reloaded(false);
                tracing::error!(reason, error = %e, "reload refused; the previous configuration keeps serving");
                false
            }
        }
    }

    /// Reloads on SIGHUP, and every `poll` when a file changed, until the future is
    /// dropped. The SIGHUP handler is installed when this is called (inside a runtime),
    /// so from then on SIGHUP no longer ends the process.
    pub fn watch(mut self, poll: Option<Duration>) -> impl std::future::Future<Output = ()> {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        async move {
            let mut tick = poll.map(tokio::time::interval);
            loop {
                let sighup = async {
                    #[cfg(unix)]
                    if let Some(h) = hup.as_mut() {
                        h.recv().await;
                        return;
                    }
                    std::future::pending::<()>().await;
                };
                let polled = async {
                    match tick.as_mut() {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = sighup => {
                        self.reload("SIGHUP");
                    }
                    () = polled => {
                        if self.changed() {
                            self.reload("file changed");
                        }
                    }
                }
            }
        }
    }
}
