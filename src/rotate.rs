//! `hpke-gateway keys rotate`: a new primary server key, with an overlap.
//!
//! 1. The configuration must load as it is (a broken one is not edited).
//! 2. A new X25519 key is written next to the current primary's file, as
//!    `server-<id>.pem` (never overwriting; the owner, group and mode of the current
//!    primary's file, at most 0640), with the next free key id. If the
//!    current primary is passphrase-protected, the new key is encrypted with the same
//!    passphrase (PKCS#8, scrypt) and its entry names the same passphrase source.
//! 3. The current primary becomes `decrypt-only` with `not_after` = now + the overlap;
//!    the new key is appended with `state = "primary"`. Comments and layout of the file
//!    are kept (toml_edit).
//! 4. The edited configuration is checked by loading it from a temporary file beside
//!    the original, then renamed over it (atomic on one file system). A running gateway
//!    picks it up on its next file check or on SIGHUP.

use std::path::{Path, PathBuf};

use crate::config::resolve;
use std::time::{Duration, SystemTime};

use toml_edit::{DocumentMut, Item, Table, value};

use crate::BoxError;
use crate::config::Config;
use crate::envelope::PrivateKey;
use crate::keys::{self, KeyState};

/// What a rotation did.
#[derive(Debug)]
pub struct Rotation {
    /// The new primary key's id.
    pub new_id: u32,
    /// Its private key file.
    pub new_key_file: PathBuf,
    /// The previous primary's id.
    pub old_id: u32,
    /// When the previous primary stops decrypting.
    pub old_not_after: SystemTime,
}

/// Rotates the server key of the configuration at `path` with an overlap of `overlap`.
pub fn rotate(path: &Path, overlap: Duration) -> Result<Rotation, BoxError> {
    Config::load(path)?;
    let text = std::fs::read_to_string(path)?;
    let mut doc: DocumentMut = text.parse()?;
    let base = path.parent().unwrap_or(Path::new("."));

    let entries = doc
        .get_mut("server_keys")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or("the configuration has no [[server_keys]]")?;
    let state_of = |t: &Table| t.get("state").and_then(Item::as_str).map(str::to_owned);
    let id_of = |t: &Table| {
        t.get("id")
            .and_then(Item::as_integer)
            .and_then(|i| u32::try_from(i).ok())
    };
    let primary_index = entries
        .iter()
        .position(|t| state_of(t).as_deref() == Some(KeyState::Primary.as_str()))
        .or_else(|| {
            entries
                .iter()
                .position(|t| state_of(t).as_deref() != Some(KeyState::Retired.as_str()))
        })
        .ok_or("no primary server key")?;
    let new_id = entries
        .iter()
        .filter_map(id_of)
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or("no free key id")?;

    let old = entries
        .get_mut(primary_index)
        .ok_or("no primary server key")?;
    let old_id = id_of(old).ok_or("the primary key has no id")?;
    let old_file = old
        .get("private_key")
        .and_then(Item::as_str)
        .ok_or("the primary key has no private_key")?
        .to_owned();
    let passphrase_env = old
        .get("passphrase_env")
        .and_then(Item::as_str)
        .map(str::to_owned);
    let passphrase_file = old
        .get("passphrase_file")
        .and_then(Item::as_str)
        .map(str::to_owned);
    // The new key is of the old primary's suite: a rotation never changes it.
    let suite_name = old.get("suite").and_then(Item::as_str).map(str::to_owned);
    let suite: crate::envelope::Suite = match &suite_name {
        Some(name) => name.parse().map_err(|e| format!("suite: {e}"))?,
        None => crate::envelope::Suite::default(),
    };
    let old_not_after = SystemTime::now() + overlap;
    old["state"] = value(KeyState::DecryptOnly.as_str());
    old["not_after"] = value(humantime::format_rfc3339_seconds(old_not_after).to_string());

    // The new key, beside the old one.
    let relative = Path::new(&old_file)
        .parent()
        .unwrap_or(Path::new(""))
        .join(format!("server-{new_id}.pem"));
    let new_key_file = resolve(base, &relative);
    let passphrase = keys::read_passphrase(
        passphrase_env.as_deref(),
        passphrase_file
            .as_deref()
            .map(|f| resolve(base, Path::new(f)))
            .as_deref(),
    )?;
    let key = PrivateKey::generate_for(suite);
    let pem = match &passphrase {
        Some(p) => keys::private_key_encrypted_pem(&key, p)?,
        None => keys::private_key_pem(&key)?,
    };
    keys::write_secret_file(&new_key_file, pem.as_bytes())
        .map_err(|e| format!("cannot create {}: {e}", new_key_file.display()))?;
    if let Err(e) = same_access(&resolve(base, Path::new(&old_file)), &new_key_file, 0o640) {
        let _ = std::fs::remove_file(&new_key_file);
        return Err(e);
    }

    let mut entry = Table::new();
    entry["id"] = value(i64::from(new_id));
    entry["private_key"] = value(relative.to_string_lossy().into_owned());
    if let Some(name) = suite_name {
        entry["suite"] = value(name);
    }
    if let Some(env) = passphrase_env {
        entry["passphrase_env"] = value(env);
    }
    if let Some(file) = passphrase_file {
        entry["passphrase_file"] = value(file);
    }
    entry["state"] = value(KeyState::Primary.as_str());
    entries.push(entry);

    let written = write_checked(path, &doc.to_string());
    if written.is_err() {
        let _ = std::fs::remove_file(&new_key_file);
    }
    written?;
    Ok(Rotation {
        new_id,
        new_key_file,
        old_id,
        old_not_after,
    })
}

/// Gives `new` the owner, group and mode (at most `max_mode`) of `old`, so a gateway
/// running as another user than the one rotating can read it.
#[cfg(unix)]
fn same_access(old: &Path, new: &Path, max_mode: u32) -> Result<(), BoxError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let (old_meta, new_meta) = (std::fs::metadata(old)?, std::fs::metadata(new)?);
    if (old_meta.uid(), old_meta.gid()) != (new_meta.uid(), new_meta.gid()) {
        std::os::unix::fs::chown(new, Some(old_meta.uid()), Some(old_meta.gid())).map_err(|e| {
            format!(
                "cannot give {} the owner of {} ({e}); run keys rotate as root or as the key's owner",
                new.display(),
                old.display()
            )
        })?;
    }
    let mode = old_meta.permissions().mode() & max_mode;
    std::fs::set_permissions(new, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(not(unix))]
fn same_access(_old: &Path, _new: &Path, _max_mode: u32) -> Result<(), BoxError> {
    Ok(())
}

/// Writes `text` beside `path`, checks that it loads, then renames it over `path`,
/// keeping the original's permissions.
fn write_checked(path: &Path, text: &str) -> Result<(), BoxError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".hpke-gateway-rotate")
        .suffix(".toml")
        .tempfile_in(dir)?;
    std::fs::write(tmp.path(), text)?;
    // The edited file keeps the original's owner, group and mode, so a gateway running
    // as another user still reads it.
    same_access(path, tmp.path(), 0o777)?;
    Config::load(tmp.path())
        .map_err(|e| format!("the rotated configuration does not load: {e}"))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
