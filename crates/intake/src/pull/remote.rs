//! The customer's SFTP server, reached with a pure-Rust SSH client (`russh`, with
//! `russh-sftp` for the file protocol): host-key pinning, public-key login, listing,
//! streamed reads, and what to do with a fetched file (keep, move, delete).
//!
//! The server's key is checked against the pinned one before anything is sent: a full
//! key (an `ssh-ed25519 AAAA…` line, the type the server must present; the client
//! offers only that type) or its `SHA256:` fingerprint. There is no trust on first use.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::SftpSession;

/// The pinned host key.
#[derive(Debug, Clone)]
pub enum HostKeyPin {
    /// The whole key: the server must present exactly this one.
    Key(Box<PublicKey>),
    /// Its SHA-256 fingerprint as `ssh-keygen -lf` prints it (`SHA256:…`).
    Fingerprint(String),
}

impl HostKeyPin {
    /// Parses `ssh-ed25519 AAAA… [comment]`, a known_hosts line (`host ssh-ed25519
    /// AAAA…`), or `SHA256:<43 base64 characters>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(b64) = text.strip_prefix("SHA256:") {
            let valid = b64.len() == 43
                && b64
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
            if !valid {
                return Err(format!(
                    "host_key {text:?} is not a SHA256 fingerprint as `ssh-keygen -lf` prints it \
                     (SHA256: and 43 base64 characters)"
                ));
            }
            return Ok(Self::Fingerprint(text.to_owned()));
        }
        let tokens: Vec<&str> = text.split_whitespace().collect();
        // A known_hosts line starts with the host pattern; a public key line with the
        // key type.
        let start = usize::from(
            tokens.len() >= 3 && !tokens[0].starts_with("ssh-") && !tokens[0].starts_with("ecdsa-"),
        );
        let line = tokens.get(start..).unwrap_or_default().join(" ");
        PublicKey::from_openssh(&line)
            .map(|k| Self::Key(Box::new(k)))
            .map_err(|e| {
                format!(
                    "host_key is neither an OpenSSH public key line (ssh-ed25519 AAAA…, as in the \
                     server's ssh_host_ed25519_key.pub or `ssh-keyscan` output) nor a SHA256: \
                     fingerprint: {e}"
                )
            })
    }

    fn matches(&self, key: &PublicKey) -> bool {
        match self {
            Self::Key(pinned) => pinned.key_data() == key.key_data(),
            Self::Fingerprint(f) => fingerprint(key) == *f,
        }
    }

    /// What the pin is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Key(k) => fingerprint(k),
            Self::Fingerprint(f) => f.clone(),
        }
    }
}

/// `SHA256:…` of a key, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login name.
    pub user: String,
    /// The private key (ssh-key zeroizes it on drop).
    pub key: Arc<PrivateKey>,
    /// The server's pinned key.
    pub host_key: HostKeyPin,
    /// Connection, login and per-request timeout.
    pub timeout: Duration,
}

impl Endpoint {
    /// `sftp://user@host:port`, for logs and mails.
    pub fn url(&self) -> String {
        format!("sftp://{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Why a pull failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteError {
    /// The server presented another key than the pinned one: nothing was sent.
    HostKey {
        /// The presented key's fingerprint.
        presented: String,
        /// The pinned one.
        pinned: String,
    },
    /// The server refused the login key.
    Login,
    /// No connection (refused, unreachable, timed out).
    Unreachable(String),
    /// An SSH or SFTP error after login (a listing, a read, a rename).
    Transfer(String),
    /// A remote file over the size limit.
    TooLarge {
        /// Its name.
        name: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A local problem (disk full, journal).
    Local(String),
}

impl RemoteError {
    /// The `reason` label of the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::HostKey { .. } => "host_key",
            Self::Login => "login",
            Self::Unreachable(_) => "unreachable",
            Self::Transfer(_) => "transfer",
            Self::TooLarge { .. } => "too_large",
            Self::Local(_) => "local",
        }
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HostKey { presented, pinned } => write!(
                f,
                "the server's host key {presented} is not the pinned key {pinned}; nothing was \
                 fetched (if the server's key was changed on purpose, pin the new one)"
            ),
            Self::Login => write!(f, "the server refused the login key"),
            Self::Unreachable(e) => write!(f, "cannot reach the server: {e}"),
            Self::Transfer(e) => write!(f, "SFTP error: {e}"),
            Self::TooLarge { name, size, limit } => write!(
                f,
                "{name:?} is {size} bytes, over the limit of {limit} bytes; it was not fetched"
            ),
            Self::Local(e) => write!(f, "local error: {e}"),
        }
    }
}

fn transfer(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Transfer(e.to_string())
}

/// Checks the server's key and remembers the one presented.
struct Checker {
    pin: HostKeyPin,
    presented: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            // A certificate is judged by the key it certifies, like a bare key.
            russh::keys::PublicKeyOrCertificate::Certificate(c) => {
                PublicKey::from(c.public_key().clone())
            }
        };
        if let Ok(mut presented) = self.presented.lock() {
            *presented = Some(fingerprint(&key));
        }
        Ok(self.pin.matches(&key))
    }
}

/// One file in the remote directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteFile {
    /// Its name (no directory).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch (SFTP v3 resolution).
    pub mtime: u64,
}

/// A logged-in SFTP session.
pub struct Remote {
    handle: client::Handle<Checker>,
    sftp: SftpSession,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Remote")
    }
}

impl Remote {
    /// Connects, checks the host key, logs in and starts SFTP, all within the timeout.
    pub async fn connect(ep: &Endpoint) -> Result<Self, RemoteError> {
        tokio::time::timeout(ep.timeout, Self::connect_inner(ep))
            .await
            .unwrap_or_else(|_| {
                Err(RemoteError::Unreachable(format!(
                    "no SSH session within {} s",
                    ep.timeout.as_secs_f64()
                )))
            })
    }

    async fn connect_inner(ep: &Endpoint) -> Result<Self, RemoteError> {
        let mut config = client::Config {
            inactivity_timeout: Some(ep.timeout.max(Duration::from_secs(5)) * 2),
            keepalive_interval: Some(ep.timeout.max(Duration::from_secs(5))),
            ..Default::default()
        };
        if let HostKeyPin::Key(pinned) = &ep.host_key {
            // Offer only the pinned key's type, so a server with several host keys
            // presents that one.
            let alg = pinned.algorithm();
            let keep: Vec<_> = russh::Preferred::DEFAULT
                .key
                .iter()
                .filter(|a| {
                    if matches!(alg, russh::keys::Algorithm::Rsa { .. }) {
                        // rsa-sha2-512/256 only: no SHA-1 signatures.
                        matches!(a, russh::keys::Algorithm::Rsa { hash: Some(_) })
                    } else {
                        **a == alg
                    }
                })
                .cloned()
                .collect();
            if !keep.is_empty() {
                config.preferred.key = Cow::Owned(keep);
            }
        }
        let presented = Arc::new(Mutex::new(None));
        let checker = Checker {
            pin: ep.host_key.clone(),
            presented: presented.clone(),
        };
        let addr = (ep.host.as_str(), ep.port);
        let mut handle = match client::connect(Arc::new(config), addr, checker).await {
            Ok(h) => h,
            Err(e) => {
                let seen = presented.lock().ok().and_then(|p| p.clone());
                return Err(match (e, seen) {
                    (russh::Error::UnknownKey, Some(presented)) => RemoteError::HostKey {
                        presented,
                        pinned: ep.host_key.describe(),
                    },
                    (russh::Error::IO(e), _) => RemoteError::Unreachable(e.to_string()),
                    (e, _) => RemoteError::Unreachable(e.to_string()),
                });
            }
        };
        let hash = if matches!(ep.key.algorithm(), russh::keys::Algorithm::Rsa { .. }) {
            handle
                .best_supported_rsa_hash()
                .await
                .map_err(transfer)?
                .flatten()
        } else {
            None
        };
        let auth = handle
            .authenticate_publickey(
                ep.user.clone(),
                PrivateKeyWithHashAlg::new(ep.key.clone(), hash),
            )
            .await
            .map_err(transfer)?;
        if !auth.success() {
            return Err(RemoteError::Login);
        }
        let channel = handle.channel_open_session().await.map_err(transfer)?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(transfer)?;
        let sftp_config = russh_sftp::client::Config {
            request_timeout_secs: ep.timeout.as_secs().max(1),
            ..Default::default()
        };
        let sftp = SftpSession::new_with_config(channel.into_stream(), sftp_config)
            .await
            .map_err(transfer)?;
        Ok(Self { handle, sftp })
    }

    /// The regular files in `dir` (not dot files, directories or symlinks), by name.
    pub async fn list(&self, dir: &str) -> Result<Vec<RemoteFile>, RemoteError> {
        let mut files = Vec::new();
        let entries = self
            .sftp
            .read_dir(dir)
            .await
            .map_err(|e| RemoteError::Transfer(format!("cannot list {dir}: {e}")))?;
        for entry in entries {
            let name = entry.file_name();
            let meta = entry.metadata();
            if !meta.is_regular() || !super::plain_name(&name) {
                // Directories, symlinks, dot files, and names a hostile server could use
                // to reach outside the staging and upload directories.
                continue;
            }
            files.push(RemoteFile {
                name,
                size: meta.size.unwrap_or(0),
                mtime: u64::from(meta.mtime.unwrap_or(0)),
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Opens `path` for reading.
    pub async fn open(&self, path: &str) -> Result<russh_sftp::client::fs::File, RemoteError> {
        self.sftp
            .open(path)
            .await
            .map_err(|e| RemoteError::Transfer(format!("cannot read {path}: {e}")))
    }

    /// Moves `from` to `to` (creating `to`'s directory, `remote_dir/processed`, when
    /// needed); an existing `to` is replaced.
    pub async fn rename(
        &self,
        dir: &str,
        from: &str,
        to_dir: &str,
        to: &str,
    ) -> Result<(), RemoteError> {
        if !self.sftp.try_exists(to_dir).await.map_err(transfer)? {
            self.sftp.create_dir(to_dir).await.map_err(transfer)?;
        }
        let target = format!("{to_dir}/{to}");
        // SFTP v3 rename fails if the target exists: a file processed before under the
        // same name is replaced.
        if self
            .sftp
            .try_exists(target.clone())
            .await
            .map_err(transfer)?
        {
            self.sftp
                .remove_file(target.clone())
                .await
                .map_err(transfer)?;
        }
        self.sftp
            .rename(format!("{dir}/{from}"), target.clone())
            .await
            .map_err(|e| {
                RemoteError::Transfer(format!("cannot move {dir}/{from} to {target}: {e}"))
            })
    }

    /// Deletes `path`.
    pub async fn remove(&self, path: &str) -> Result<(), RemoteError> {
        self.sftp
            .remove_file(path)
            .await
            .map_err(|e| RemoteError::Transfer(format!("cannot delete {path}: {e}")))
    }

    /// Ends the session politely.
    pub async fn close(self) {
        let _ = self.sftp.close().await;
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `ssh-keygen -t ed25519`; `ssh-keygen -lf` printed FINGERPRINT for it.
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOdRSLADXhqS++MVIuGECAMxGmwYyl3qDusVy4InQiH/ test";
    const FINGERPRINT: &str = "SHA256:7pQWpo0+bQwHrOLWUb+ctGVXPM0MvzOesWempQmJF08";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC47E4Bte+TRzmQfJ++QrF63Bf462eyOVsEOsxQopzNJ other";

    #[test]
    fn pins_parse_from_every_form_match_ssh_keygen_and_refuse_garbage() {
        let HostKeyPin::Key(k) = HostKeyPin::parse(KEY).unwrap() else {
            panic!("a key line is a key pin")
        };
        assert_eq!(fingerprint(&k), FINGERPRINT);
        let other = PublicKey::from_openssh(OTHER).unwrap();
        for pin in [
            KEY.to_owned(),
            format!("[127.0.0.1]:2222 {KEY}"),
            FINGERPRINT.to_owned(),
        ] {
            let pin = HostKeyPin::parse(&pin).unwrap();
            assert!(pin.matches(&k), "{pin:?}");
            assert!(!pin.matches(&other), "{pin:?}");
            assert_eq!(pin.describe(), FINGERPRINT);
        }
        for bad in [
            "",
            "SHA256:short",
            "ssh-ed25519 AAAA",
            "MD5:aa:bb",
            "ssh-ed25519",
        ] {
            assert!(HostKeyPin::parse(bad).is_err(), "{bad:?}");
        }
    }
}
