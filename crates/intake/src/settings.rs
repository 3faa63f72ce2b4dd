//! The `[intake]` part of the configuration file, checked into [`IntakeConfig`] with
//! every PGP key loaded and validated.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use std::time::Duration;

use hpke_keyfiles::resolve;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::pgp::PgpKey;

/// The most PGP keys one account may hold.
pub const MAX_PGP_KEYS: usize = 20;
/// Default limit on an encrypted upload (1 GB, the vendor's limit).
pub const DEFAULT_MAX_ENCRYPTED_FILE_BYTES: u64 = 1_000_000_000;

/// `[intake]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntake {
    /// Journal, processed and failed uploads.
    pub state_dir: PathBuf,
    /// Interval between scans of the upload directories, ms (default 1000).
    #[serde(default)]
    pub poll_ms: Option<u64>,
    /// A file is complete once unchanged for this long, ms (default 5000).
    #[serde(default)]
    pub settle_ms: Option<u64>,
    /// A manifest whose file has not arrived after this long fails, s (default 3600).
    #[serde(default)]
    pub missing_file_timeout_s: Option<u64>,
    /// Largest encrypted file accepted (default 1 GB).
    #[serde(default)]
    pub max_encrypted_file_bytes: Option<u64>,
    /// Largest decrypted (and decompressed) content, bytes (default 10 GiB).
    #[serde(default)]
    pub max_decrypted_bytes: Option<u64>,
    /// Largest ratio of decrypted to encrypted size (default 100): bounds decompression.
    #[serde(default)]
    pub max_expansion_ratio: Option<u64>,
    /// Records per upload request (default 1000, the vendor's limit).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Path of the upload API on the upstream (default `/1/upload`).
    #[serde(default)]
    pub upload_path: Option<String>,
    /// Days to keep finished jobs in `processed/` and `failed/` (default 30; 0 keeps them).
    #[serde(default)]
    pub keep_finished_days: Option<u64>,
    /// Email notifications.
    #[serde(default)]
    pub smtp: Option<RawSmtp>,
    /// Print each notification email instead of sending it (demos and tests; excludes
    /// `[intake.smtp]`).
    #[serde(default)]
    pub print_mail: Option<bool>,
    /// A URL that gets every notification as JSON.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Accounts that upload files.
    #[serde(default)]
    pub accounts: Vec<RawIntakeAccount>,
}

/// `[intake.smtp]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    /// Server host name.
    pub host: String,
    /// Port (default 587 with STARTTLS, 465 with TLS, 25 without).
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub tls: Option<String>,
    /// The sender address.
    pub from: String,
    /// Login name, if the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable with the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File with the password (owner-only).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// One `[[intake.accounts]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntakeAccount {
    /// The account id the records are uploaded for.
    pub id: String,
    /// Environment variable with the account's API passcode.
    #[serde(default)]
    pub passcode_env: Option<String>,
    /// File with the account's API passcode (owner-only).
    #[serde(default)]
    pub passcode_file: Option<PathBuf>,
    /// Where sshd puts this account's uploads (inside its SFTP chroot).
    pub upload_dir: PathBuf,
    /// Where decrypted files go (outside the chroot).
    pub download_dir: PathBuf,
    /// Refuse files that are not encrypted (default true).
    #[serde(default)]
    pub require_encryption: Option<bool>,
    /// The operator's address for failures no customer can be told of: a manifest that
    /// cannot be read (cut-off JSON, no valid `clientEmail`).
    #[serde(default)]
    pub failure_contact: Option<String>,
    /// The account's OpenPGP keys.
    #[serde(default)]
    pub keys: Vec<RawPgpKey>,
    /// Scheduled imports from the customer's own SFTP server.
    #[serde(default)]
    pub pull: Option<RawPull>,
}

/// `[intake.accounts.pull]`: fetch the account's files from the customer's SFTP server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPull {
    /// The server's host name or address.
    pub host: String,
    /// Its SSH port (default 22).
    #[serde(default)]
    pub port: Option<u16>,
    /// The login name.
    pub user: String,
    /// The directory holding the files and manifests.
    pub remote_dir: String,
    /// The login key: an OpenSSH private key file (owner-only).
    pub ssh_key: PathBuf,
    /// Environment variable with the key's passphrase.
    #[serde(default)]
    pub ssh_key_passphrase_env: Option<String>,
    /// File with the key's passphrase (owner-only).
    #[serde(default)]
    pub ssh_key_passphrase_file: Option<PathBuf>,
    /// The server's pinned key: `ssh-ed25519 AAAA…` or `SHA256:…`.
    pub host_key: String,
    /// `every 5m` or a 5-field cron expression (UTC).
    pub schedule: String,
    /// What happens to a fetched file on the server: `keep` (default), `move` (to
    /// `remote_dir/processed/`) or `delete`.
    #[serde(default)]
    pub after: Option<String>,
    /// Who hears of a failed pull (the customer); the account's `failure_contact` too.
    #[serde(default)]
    pub contact: Option<String>,
    /// Time between the two listings that show a file complete, ms (default 2000).
    #[serde(default)]
    pub settle_ms: Option<u64>,
    /// Connection, login and per-request timeout, s (default 30).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Consecutive failed runs before the server being unreachable is mailed
    /// (default 3; a changed host key or a refused login is mailed at once).
    #[serde(default)]
    pub report_after_failures: Option<u32>,
    /// Longest one run may take, s (default 3600); a transfer cut resumes next run.
    #[serde(default)]
    pub max_run_s: Option<u64>,
}

/// One `[[intake.accounts.keys]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPgpKey {
    /// The id manifests give as `keyId`.
    pub id: String,
    /// The armored secret key, as `gpg --export-secret-key -a` writes it (owner-only).
    pub private_key: PathBuf,
    /// Environment variable with the key's passphrase.
    #[serde(default)]
    pub passphrase_env: Option<String>,
    /// File with the key's passphrase (owner-only).
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// End of the key's validity (RFC 3339): the end of a rotation's overlap.
    #[serde(default)]
    pub not_after: Option<String>,
}

/// How to reach the SMTP server.
#[derive(Debug, Clone)]
pub struct Smtp {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: SmtpTls,
    /// Sender.
    pub from: lettre::message::Mailbox,
    /// Login and password.
    pub credentials: Option<(String, Zeroizing<String>)>,
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the same host or network).
    None,
    /// STARTTLS, required.
    StartTls,
    /// TLS from the first byte.
    Tls,
}

/// One account of the intake.
#[derive(Debug)]
pub struct IntakeAccount {
    /// The account id.
    pub id: String,
    /// Its API passcode.
    pub passcode: Zeroizing<String>,
    /// Where uploads arrive.
    pub upload_dir: PathBuf,
    /// Where decrypted files go.
    pub download_dir: PathBuf,
    /// Refuse unencrypted files.
    pub require_encryption: bool,
    /// Who hears of a failure whose manifest names nobody to tell (a checked address).
    pub failure_contact: Option<String>,
    /// Its keys, by `keyId` (shared, so a job keeps its key across a reload).
    pub keys: Vec<std::sync::Arc<PgpKey>>,
    /// Scheduled imports from the customer's server.
    pub pull: Option<Pull>,
}

/// What happens to a fetched file on the customer's server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Left where it is (the journal keeps it from being fetched again).
    Keep,
    /// Moved to `remote_dir/processed/`.
    Move,
    /// Deleted.
    Delete,
}

/// The checked `[intake.accounts.pull]`.
#[derive(Debug, Clone)]
pub struct Pull {
    /// Where and how to log in.
    pub endpoint: crate::pull::Endpoint,
    /// The remote directory.
    pub remote_dir: String,
    /// When to run.
    pub schedule: crate::pull::Schedule,
    /// What happens to a fetched file.
    pub after: After,
    /// The customer's address for failed pulls.
    pub contact: Option<String>,
    /// Time between the two listings.
    pub settle: Duration,
    /// Consecutive unreachable runs before a mail.
    pub report_after_failures: u32,
    /// Longest one run may take.
    pub max_run: Duration,
}

/// The checked `[intake]` table.
#[derive(Debug)]
pub struct IntakeConfig {
    /// Journal, processed and failed uploads.
    pub state_dir: PathBuf,
    /// Scan interval.
    pub poll: Duration,
    /// Time a file must stay unchanged to count as complete.
    pub settle: Duration,
    /// Time after which a manifest without its file fails.
    pub missing_file_timeout: Duration,
    /// Largest encrypted file.
    pub max_encrypted_file_bytes: u64,
    /// Largest decrypted content.
    pub max_decrypted_bytes: u64,
    /// Largest decrypted/encrypted ratio.
    pub max_expansion_ratio: u64,
    /// Records per upload.
    pub batch_size: usize,
    /// Upload API path.
    pub upload_path: String,
    /// How long finished jobs stay in `processed/` and `failed/`; `None` keeps them.
    pub keep_finished: Option<Duration>,
    /// Email notifications.
    pub smtp: Option<Smtp>,
    /// Mails are printed (by the host) instead of sent.
    pub print_mail: bool,
    /// Webhook notifications.
    pub webhook_url: Option<http::Uri>,
    /// The accounts.
    pub accounts: Vec<IntakeAccount>,
}

fn secret_text(
    what: &str,
    env: Option<&str>,
    file: Option<&Path>,
    base: &Path,
) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    let file = file.map(|f| resolve(base, f));
    hpke_keyfiles::read_passphrase(env, file.as_deref()).map_err(|e| format!("{what}: {e}"))
}

/// The files `[intake]` names (for change detection).
pub fn files(raw: &RawIntake, base: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for a in &raw.accounts {
        out.extend(a.passcode_file.iter().map(|f| resolve(base, f)));
        if let Some(p) = &a.pull {
            out.push(resolve(base, &p.ssh_key));
            out.extend(p.ssh_key_passphrase_file.iter().map(|f| resolve(base, f)));
        }
        for k in &a.keys {
            out.push(resolve(base, &k.private_key));
            out.extend(k.passphrase_file.iter().map(|f| resolve(base, f)));
        }
    }
    if let Some(s) = &raw.smtp {
        out.extend(s.password_file.iter().map(|f| resolve(base, f)));
    }
    out
}

/// Checks `[intake]`, loading every key. Returns every problem found.
pub fn load(raw: &RawIntake, base: &Path) -> Result<IntakeConfig, Vec<String>> {
    let mut problems = Vec::new();
    let positive = |name: &str, v: u64, problems: &mut Vec<String>| {
        if v == 0 {
            problems.push(format!("intake.{name} must be greater than 0"));
        }
        v
    };
    let poll = positive("poll_ms", raw.poll_ms.unwrap_or(1000), &mut problems);
    let settle = positive("settle_ms", raw.settle_ms.unwrap_or(5000), &mut problems);
    let missing = positive(
        "missing_file_timeout_s",
        raw.missing_file_timeout_s.unwrap_or(3600),
        &mut problems,
    );
    let max_encrypted = positive(
        "max_encrypted_file_bytes",
        raw.max_encrypted_file_bytes
            .unwrap_or(DEFAULT_MAX_ENCRYPTED_FILE_BYTES),
        &mut problems,
    );
    let max_decrypted = positive(
        "max_decrypted_bytes",
        raw.max_decrypted_bytes.unwrap_or(10 << 30),
        &mut problems,
    );
    let ratio = positive(
        "max_expansion_ratio",
        raw.max_expansion_ratio.unwrap_or(100),
        &mut problems,
    );
    let batch_size = raw.batch_size.unwrap_or(1000);
    if batch_size == 0 {
        problems.push("intake.batch_size must be greater than 0".into());
    }
    let upload_path = raw
        .upload_path
        .clone()
        .unwrap_or_else(|| "/1/upload".into());
    if !upload_path.starts_with('/') {
        problems.push(format!(
            "intake.upload_path {upload_path:?} must start with /"
        ));
    }
    let smtp = raw.smtp.as_ref().and_then(|s| match smtp(s, base) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(format!("intake.smtp: {e}"));
            None
        }
    });
    let print_mail = raw.print_mail.unwrap_or(false);
    if print_mail && raw.smtp.is_some() {
        problems.push(
            "intake.print_mail prints the mails instead of sending them: remove it or [intake.smtp]"
                .into(),
        );
    }
    let webhook_url = raw
        .webhook_url
        .as_deref()
        .and_then(|u| match u.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() =>
            {
                Some(uri)
            }
            _ => {
                problems.push(format!("intake.webhook_url {u:?} is not an http(s) URL"));
                None
            }
        });
    let mut ids = HashSet::new();
    let mut accounts = Vec::new();
    for a in &raw.accounts {
        if !ids.insert(a.id.clone()) {
            problems.push(format!("intake.accounts: id {:?} appears twice", a.id));
        }
        match account(a, base) {
            Ok(acct) => accounts.push(acct),
            Err(p) => problems.extend(
                p.into_iter()
                    .map(|p| format!("intake.accounts {:?}: {p}", a.id)),
            ),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(IntakeConfig {
        state_dir: resolve(base, &raw.state_dir),
        poll: Duration::from_millis(poll),
        settle: Duration::from_millis(settle),
        missing_file_timeout: Duration::from_secs(missing),
        max_encrypted_file_bytes: max_encrypted,
        max_decrypted_bytes: max_decrypted,
        max_expansion_ratio: ratio,
        batch_size,
        upload_path,
        keep_finished: match raw.keep_finished_days.unwrap_or(30) {
            0 => None,
            days => Some(Duration::from_secs(days.saturating_mul(86_400))),
        },
        smtp,
        print_mail,
        webhook_url,
        accounts,
    })
}

fn smtp(raw: &RawSmtp, base: &Path) -> Result<Smtp, String> {
    let tls = match raw.tls.as_deref().unwrap_or("starttls") {
        "none" => SmtpTls::None,
        "starttls" => SmtpTls::StartTls,
        "tls" => SmtpTls::Tls,
        other => return Err(format!("tls {other:?} is not none, starttls or tls")),
    };
    let port = raw.port.unwrap_or(match tls {
        SmtpTls::None => 25,
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
    });
    let from = raw
        .from
        .parse()
        .map_err(|e| format!("from {:?}: {e}", raw.from))?;
    let password = secret_text(
        "password",
        raw.password_env.as_deref(),
        raw.password_file.as_deref(),
        base,
    )?;
    let credentials = match (&raw.username, password) {
        (Some(user), Some(pass)) => Some((
            user.clone(),
            Zeroizing::new(
                String::from_utf8(pass.to_vec()).map_err(|_| "the password is not UTF-8")?,
            ),
        )),
        (None, None) => None,
        _ => return Err("username and password_env/password_file go together".into()),
    };
    Ok(Smtp {
        host: raw.host.clone(),
        port,
        tls,
        from,
        credentials,
    })
}

fn account(raw: &RawIntakeAccount, base: &Path) -> Result<IntakeAccount, Vec<String>> {
    let mut problems = Vec::new();
    if !valid_account_id(&raw.id) {
        problems.push("the id must be 1 to 256 visible ASCII characters".into());
    }
    let passcode = match secret_text(
        "passcode",
        raw.passcode_env.as_deref(),
        raw.passcode_file.as_deref(),
        base,
    ) {
        Ok(Some(p)) => match String::from_utf8(p.to_vec()) {
            Ok(s) if http::HeaderValue::from_str(&s).is_ok() => Some(Zeroizing::new(s)),
            _ => {
                problems.push("the passcode is not a valid header value".into());
                None
            }
        },
        Ok(None) => {
            problems.push("passcode_env or passcode_file is required".into());
            None
        }
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let failure_contact = raw.failure_contact.as_deref().map(str::trim);
    if let Some(contact) = failure_contact
        && let Err(e) = contact.parse::<lettre::Address>()
    {
        problems.push(format!(
            "failure_contact {contact:?} is not an email address: {e}"
        ));
    }
    let upload_dir = resolve(base, &raw.upload_dir);
    let download_dir = resolve(base, &raw.download_dir);
    if !upload_dir.is_dir() {
        problems.push(format!(
            "upload_dir {} is not a directory",
            upload_dir.display()
        ));
    }
    if download_dir.starts_with(&upload_dir) {
        problems.push("download_dir must not be inside upload_dir (the SFTP side must never see decrypted files)".into());
    }
    if raw.keys.len() > MAX_PGP_KEYS {
        problems.push(format!(
            "{} keys, at most {MAX_PGP_KEYS} are allowed",
            raw.keys.len()
        ));
    }
    let mut keys = Vec::new();
    let mut key_ids = HashSet::new();
    // Too many keys: refused before spending time unlocking any of them.
    let to_load = if raw.keys.len() > MAX_PGP_KEYS {
        &raw.keys[..0]
    } else {
        &raw.keys[..]
    };
    for k in to_load {
        if !key_ids.insert(k.id.clone()) {
            problems.push(format!("key id {:?} appears twice", k.id));
        }
        match pgp_key(k, base) {
            Ok(key) => keys.push(std::sync::Arc::new(key)),
            Err(e) => problems.push(format!("key {:?}: {e}", k.id)),
        }
    }
    let require_encryption = raw.require_encryption.unwrap_or(true);
    if require_encryption && raw.keys.is_empty() {
        problems.push("no keys, but require_encryption is on".into());
    }
    let pull = raw.pull.as_ref().and_then(|p| match pull(p, base) {
        Ok(p) => Some(p),
        Err(e) => {
            problems.extend(e.into_iter().map(|e| format!("pull: {e}")));
            None
        }
    });
    match (passcode, problems.is_empty()) {
        (Some(passcode), true) => Ok(IntakeAccount {
            id: raw.id.clone(),
            passcode,
            upload_dir,
            download_dir,
            require_encryption,
            failure_contact: failure_contact.map(str::to_owned),
            keys,
            pull,
        }),
        _ => Err(problems),
    }
}

fn pull(raw: &RawPull, base: &Path) -> Result<Pull, Vec<String>> {
    let mut problems = Vec::new();
    if raw.host.trim().is_empty() {
        problems.push("host is empty".to_owned());
    }
    if raw.user.is_empty() {
        problems.push("user is empty".to_owned());
    }
    let remote_dir = raw.remote_dir.trim_end_matches('/');
    let remote_dir = if remote_dir.is_empty() && raw.remote_dir.starts_with('/') {
        "/"
    } else {
        remote_dir
    };
    if remote_dir.is_empty() {
        problems.push("remote_dir is empty".to_owned());
    }
    let host_key = crate::pull::HostKeyPin::parse(&raw.host_key)
        .map_err(|e| problems.push(e))
        .ok();
    let schedule = crate::pull::Schedule::parse(&raw.schedule)
        .map_err(|e| problems.push(e))
        .ok();
    let after = match raw.after.as_deref().unwrap_or("keep") {
        "keep" => After::Keep,
        "move" => After::Move,
        "delete" => After::Delete,
        other => {
            problems.push(format!("after {other:?} is not keep, move or delete"));
            After::Keep
        }
    };
    let contact = raw.contact.as_deref().map(str::trim);
    if let Some(c) = contact
        && let Err(e) = c.parse::<lettre::Address>()
    {
        problems.push(format!("contact {c:?} is not an email address: {e}"));
    }
    let settle = raw.settle_ms.unwrap_or(2000);
    if settle > 600_000 {
        problems.push("settle_ms must be at most 600000 (10 minutes)".to_owned());
    }
    let timeout = raw.timeout_s.unwrap_or(30);
    if !(1..=3600).contains(&timeout) {
        problems.push("timeout_s must be from 1 to 3600".to_owned());
    }
    let max_run = raw.max_run_s.unwrap_or(3600);
    if !(1..=7 * 86_400).contains(&max_run) {
        problems.push("max_run_s must be from 1 to 604800 (a week)".to_owned());
    }
    let report_after_failures = raw.report_after_failures.unwrap_or(3);
    if report_after_failures == 0 {
        problems.push("report_after_failures must be greater than 0".to_owned());
    }
    let key = crate::pull::load_login_key(
        &resolve(base, &raw.ssh_key),
        secret_text(
            "ssh_key passphrase",
            raw.ssh_key_passphrase_env.as_deref(),
            raw.ssh_key_passphrase_file.as_deref(),
            base,
        )
        .map_err(|e| vec![e])?,
    )
    .map_err(|e| problems.push(e))
    .ok();
    match (host_key, schedule, key) {
        (Some(host_key), Some(schedule), Some(key)) if problems.is_empty() => Ok(Pull {
            endpoint: crate::pull::Endpoint {
                host: raw.host.trim().to_owned(),
                port: raw.port.unwrap_or(22),
                user: raw.user.clone(),
                key,
                host_key,
                timeout: Duration::from_secs(timeout),
            },
            remote_dir: remote_dir.to_owned(),
            schedule,
            after,
            contact: contact.map(str::to_owned),
            settle: Duration::from_millis(settle),
            report_after_failures,
            max_run: Duration::from_secs(max_run),
        }),
        _ => Err(problems),
    }
}

fn pgp_key(raw: &RawPgpKey, base: &Path) -> Result<PgpKey, String> {
    let path = resolve(base, &raw.private_key);
    let armored = super::pgp::read_key_file(&path)?;
    let passphrase = secret_text(
        "passphrase",
        raw.passphrase_env.as_deref(),
        raw.passphrase_file.as_deref(),
        base,
    )?
    .ok_or(
        "passphrase_env or passphrase_file is required (exported keys are passphrase-protected)",
    )?;
    let not_after = raw.not_after.as_deref().map(parse_time).transpose()?;
    PgpKey::load(raw.id.clone(), &armored, passphrase, not_after)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The longest account id. The same rule as the gateway's `config::valid_account_id`
/// (an id is sent as a header and used as HPKE `info`); the intake cannot import it
/// without depending on the gateway.
pub const MAX_ACCOUNT_ID_LEN: usize = 256;

/// An account id the gateway accepts: 1 to [`MAX_ACCOUNT_ID_LEN`] visible ASCII bytes.
pub fn valid_account_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ACCOUNT_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// An RFC 3339 time such as `2027-12-01T00:00:00Z`.
pub fn parse_time(text: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2027-12-01T00:00:00Z ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: serde_json::Value) -> RawIntake {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn print_mail_excludes_smtp() {
        let base = Path::new("/nonexistent");
        let both = raw(serde_json::json!({
            "state_dir": "state", "print_mail": true,
            "smtp": {"host": "smtp.example.com", "from": "imports@example.com"}
        }));
        let problems = load(&both, base).unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("intake.print_mail")),
            "{problems:?}"
        );
        let printed = load(
            &raw(serde_json::json!({"state_dir": "state", "print_mail": true})),
            base,
        )
        .unwrap();
        assert!(printed.print_mail && printed.smtp.is_none());
        let default = load(&raw(serde_json::json!({"state_dir": "state"})), base).unwrap();
        assert!(!default.print_mail);
    }
}
