//! Key and passphrase files: secrets are read only from files their owner alone can
//! read, written to new owner-only files, and held in wiped-on-drop buffers. Shared by
//! the gateway's server keys and the intake's OpenPGP keys.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Why a key or passphrase file could not be used. Messages name the file, never its bytes.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A private key or passphrase file that group or others can read (group read is
    /// accepted when root owns the file).
    #[error(
        "{path} is readable by group or others (mode {mode:o}); run: chmod 600 {path} (or, owned by root, 640)"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A passphrase environment variable that is not set.
    #[error("environment variable {0} is not set")]
    PassphraseEnvUnset(String),
    /// Both an environment variable and a file were given for one passphrase.
    #[error("give the passphrase in an environment variable or a file, not both")]
    PassphraseTwoSources,
}

// === reading files ===

/// Reads a file that holds a secret, refusing it if group or others may read it.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, FileError> {
    check_private_permissions(path)?;
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| io_error(path, source))
}

/// Reads a public, non-secret file.
pub fn read_public_file(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|source| io_error(path, source))
}

fn io_error(path: &Path, source: std::io::Error) -> FileError {
    FileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a secret to a new file readable by its owner only (mode 0600). Refuses to
/// overwrite an existing file.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Reads a private key's passphrase from an environment variable or an owner-only file
/// (trailing newlines dropped); `None` when neither is given.
pub fn read_passphrase(
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Zeroizing<Vec<u8>>>, FileError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(FileError::PassphraseTwoSources),
        (Some(var), None) => std::env::var_os(var)
            .map(|v| Some(Zeroizing::new(v.into_encoded_bytes())))
            .ok_or_else(|| FileError::PassphraseEnvUnset(var.to_owned())),
        (None, Some(path)) => {
            let mut bytes = read_secret_file(path)?;
            while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                bytes.pop();
            }
            Ok(Some(bytes))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(unix)]
fn check_private_permissions(path: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| io_error(path, source))?;
    let mode = meta.permissions().mode() & 0o777;
    // As PostgreSQL accepts for its keys: owner-only, or also group-readable when root
    // owns the file (a Kubernetes Secret volume with fsGroup is 0440 root:<fsGroup>).
    let allowed = if meta.uid() == 0 { 0o040 } else { 0 };
    if mode & 0o077 & !allowed != 0 {
        return Err(FileError::Permissions {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_permissions(_path: &Path) -> Result<(), FileError> {
    Ok(())
}

/// `path`, or `base/path` when it is relative: how every path in a configuration file
/// resolves (`base` is the file's directory).
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}
