//! `hpke-gateway demo --intake`: the file intake on one machine, without root, system
//! users, sshd or an SMTP server. In a temporary folder it makes an intake key for a
//! demo account (in-process, with rPGP), an upload folder the intake watches (where sshd
//! would put SFTP uploads), a state folder and a configuration with `print_mail`, so
//! each mail is printed instead of sent. The sample upstream is the upload API.
//!
//! Serving, it prints the commands a customer runs (`gpg --import`, the CSV and its
//! manifest, `gpg --encrypt`, and a copy into the watched folder instead of
//! `sftp put`), then watches the folder until Ctrl-C. With `--once` it does the
//! customer's part itself (no gpg needed), waits for the import and exits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hpke_intake::host::IntakeMetrics;

use super::{DEMO_ACCOUNT, DEMO_PASSCODE, Running, write_keys};
use crate::BoxError;
use crate::cli::say;

/// The demo account's key id, the `keyId` its manifests name (operators choose a UUID).
pub const KEY_ID: &str = "3f6c2a9e-5b1d-4c8e-9a7f-0d2e4b6c8a10";
/// Who the demo customer is: the key's user id and the manifest's `clientEmail`.
pub const CUSTOMER: &str = "Demo customer <customer@example.com>";
/// Where the notices go.
pub const CLIENT_EMAIL: &str = "customer@example.com";
/// The sample file: four profiles, one with an age that is not a number (skipped and
/// listed in the mail).
pub const SAMPLE_CSV: &str = "email,name,age
ada@example.com,Ada Lovelace,36
alan@example.com,Alan Turing,41
grace@example.com,Grace Hopper,85
edsger@example.com,Edsger Dijkstra,seventy-two
";
/// Records of [`SAMPLE_CSV`] the intake uploads.
pub const SAMPLE_RECORDS: u64 = 3;
/// How long `--once` waits for the sample file's import.
const ONCE_DEADLINE: Duration = Duration::from_secs(120);

/// The sample file's name, and the encrypted file's.
const CSV_NAME: &str = "users.csv";
const ENCRYPTED_NAME: &str = "users.csv.gpg";
const MANIFEST_NAME: &str = "users.csv.manifest";

/// The folders and files of the intake demo, in the demo's temporary folder.
struct IntakeFiles {
    /// The intake's public key, for the customer.
    public_key: PathBuf,
    fingerprint: String,
    /// The watched folder.
    upload: PathBuf,
    state: PathBuf,
    decrypted: PathBuf,
    /// The customer's working folder, and its GnuPG home.
    customer: PathBuf,
    gnupg_home: PathBuf,
}

/// Runs the intake demo; see the module's documentation.
pub async fn run(listen: SocketAddr, once: bool) -> Result<std::process::ExitCode, BoxError> {
    let dir = tempfile::Builder::new()
        .prefix("hpke-gateway-demo-")
        .tempdir()?;
    // The gateway's own keys: the demo gateway serves HPKE too (and the PGP key).
    write_keys(dir.path())?;
    let files = write_intake_files(dir.path())?;
    let running = Running::start(dir.path(), listen, &intake_table()).await?;
    let shared = running
        .gateway
        .intake()
        .cloned()
        .ok_or("the demo configuration has no [intake]")?;
    let tally = Arc::new(Tally::default());
    let mut intake = crate::intake::runner(shared, running.gateway.fresh_proxy(), tally.clone())?;

    say!("hpke-gateway demo --intake")?;
    say!(
        "  keys, config and folders in {}  (removed when the demo ends)",
        dir.path().display()
    )?;
    say!(
        "  intake key        {}  (public key for the customer; keyId {KEY_ID})",
        files.public_key.display()
    )?;
    say!(
        "  watched folder    {}  (where sshd would put SFTP uploads)",
        files.upload.display()
    )?;
    say!("  state             {}", files.state.display())?;
    say!(
        "  upload API        http://{}/1/upload  (the sample upstream; account {DEMO_ACCOUNT})",
        running.upstream
    )?;
    say!(
        "  gateway           http://{}  (the key also at /.well-known/pgp-keys/{DEMO_ACCOUNT})",
        running.listen
    )?;
    say!("  mails             printed here (print_mail = true), not sent\n")?;

    if once {
        say!("What a customer runs (done here in-process with rPGP; by hand it is gpg):\n")?;
        print_customer_commands(&files)?;
        customer_upload(&files)?;
        say!(
            "\nThe customer's part is done: {ENCRYPTED_NAME} and {MANIFEST_NAME} are in the watched folder."
        )?;
        say!("The intake picks them up once unchanged for settle_ms; its mails follow.\n")?;
        let deadline = Instant::now() + ONCE_DEADLINE;
        let finished = loop {
            intake.scan().await;
            if let Some(finished) = tally.finished() {
                break finished;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the sample file was not imported within {} s",
                    ONCE_DEADLINE.as_secs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        drop(intake);
        running.stop().await?;
        if finished.result != "imported" {
            return Err(format!(
                "the sample file was not imported ({}): the mail above says why",
                finished.result
            )
            .into());
        }
        say!(
            "\nDone: the intake decrypted {ENCRYPTED_NAME} and uploaded {} records to the sample upstream ({} skipped, listed in the mail).",
            finished.uploaded,
            finished.skipped
        )?;
        say!("Run the demo without --once to follow the same steps by hand with gpg.")?;
    } else {
        // The handlers are in place before the line that invites Ctrl-C.
        let stopping = crate::server::shutdown_signal_installed();
        say!("Try it as a customer would (in another terminal while the demo runs; needs gpg):\n")?;
        print_customer_commands(&files)?;
        say!(
            "\nWatching {} until Ctrl-C; the mails the intake would send are printed below.\n",
            files.upload.display()
        )?;
        intake.run(stopping).await;
        running.stop().await?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The `[intake]` table appended to the demo's `gateway.toml` (paths relative to it).
fn intake_table() -> String {
    format!(
        r#"
[intake]
state_dir = "intake-state"
poll_ms = 250
settle_ms = 1000
print_mail = true

[[intake.accounts]]
id = "{DEMO_ACCOUNT}"
passcode_file = "intake-passcode"
upload_dir = "upload"
download_dir = "intake-decrypted"

[[intake.accounts.keys]]
id = "{KEY_ID}"
private_key = "intake-key.asc"
passphrase_file = "intake-key.pass"
"#
    )
}

fn write_intake_files(dir: &Path) -> Result<IntakeFiles, BoxError> {
    let passphrase: String = rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key = hpke_intake::demo::generate_key(CUSTOMER, &passphrase)?;
    crate::keys::write_secret_file(&dir.join("intake-key.asc"), key.secret_armored.as_bytes())?;
    crate::keys::write_secret_file(&dir.join("intake-key.pass"), passphrase.as_bytes())?;
    crate::keys::write_secret_file(&dir.join("intake-passcode"), DEMO_PASSCODE.as_bytes())?;
    let public_key = dir.join("intake-key.pub.asc");
    std::fs::write(&public_key, &key.public_armored)?;
    let customer = dir.join("customer");
    let gnupg_home = customer.join("gnupg");
    let files = IntakeFiles {
        public_key,
        fingerprint: key.fingerprint,
        upload: dir.join("upload"),
        state: dir.join("intake-state"),
        decrypted: dir.join("intake-decrypted"),
        customer,
        gnupg_home,
    };
    for folder in [
        &files.upload,
        &files.decrypted,
        &files.customer,
        &files.gnupg_home,
    ] {
        private_dir(folder)?;
    }
    Ok(files)
}

/// Creates `path` with mode 0700 (GnuPG wants its home so).
fn private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

fn manifest_text() -> String {
    format!(
        r#"{{
  "fileName": "{ENCRYPTED_NAME}",
  "type": "profile",
  "columns": {{
    "email": {{"ctName": "identity", "dataType": "String"}},
    "name": {{"ctName": "Name", "dataType": "String"}},
    "age": {{"dataType": "Integer"}}
  }},
  "clientEmail": "{CLIENT_EMAIL}",
  "keyId": "{KEY_ID}"
}}
"#
    )
}

fn print_customer_commands(files: &IntakeFiles) -> Result<(), BoxError> {
    let IntakeFiles {
        public_key,
        fingerprint,
        upload,
        customer,
        gnupg_home,
        ..
    } = files;
    let (public_key, upload) = (public_key.display(), upload.display());
    say!(
        "cd {}\nexport GNUPGHOME={}   # a keyring of its own, removed with the demo\n",
        customer.display(),
        gnupg_home.display()
    )?;
    say!("# 1. Import the intake's public key (once; a customer fetches it before each upload).")?;
    say!("gpg --batch --import {public_key}\n")?;
    say!("# 2. The file, and its manifest (docs/intake-customers.md): which key, which columns.")?;
    say!("cat > {CSV_NAME} <<'CSV'\n{SAMPLE_CSV}CSV")?;
    say!("cat > {MANIFEST_NAME} <<'JSON'\n{}JSON\n", manifest_text())?;
    say!("# 3. Encrypt it to the intake's key (named by its fingerprint).")?;
    say!(
        "gpg --batch --yes --trust-model always --encrypt --recipient {fingerprint} --output {ENCRYPTED_NAME} {CSV_NAME}\n"
    )?;
    say!("# 4. Upload: the file first, then its manifest (in production: sftp put).")?;
    say!("cp {ENCRYPTED_NAME} {upload}/ && cp {MANIFEST_NAME} {upload}/")?;
    Ok(())
}

/// The customer's part of `--once`, in-process: the commands above, with rPGP for gpg.
fn customer_upload(files: &IntakeFiles) -> Result<(), BoxError> {
    let public = std::fs::read(&files.public_key)?;
    let encrypted = hpke_intake::demo::encrypt(&public, CSV_NAME, SAMPLE_CSV.as_bytes())?;
    let local = |name: &str| files.customer.join(name);
    std::fs::write(local(CSV_NAME), SAMPLE_CSV)?;
    std::fs::write(local(MANIFEST_NAME), manifest_text())?;
    std::fs::write(local(ENCRYPTED_NAME), encrypted)?;
    for name in [ENCRYPTED_NAME, MANIFEST_NAME] {
        std::fs::copy(local(name), files.upload.join(name))?;
    }
    Ok(())
}

/// How the demo's one file ended, as the intake counts it.
#[derive(Debug, Clone, Copy)]
struct Finished {
    result: &'static str,
    uploaded: u64,
    skipped: u64,
}

/// The intake's counters in the demo: the first file that finished (its notices are
/// sent before [`hpke_intake::Intake::scan`] returns).
#[derive(Debug, Default)]
struct Tally(Mutex<Option<Finished>>);

impl Tally {
    fn finished(&self) -> Option<Finished> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl IntakeMetrics for Tally {
    fn file(&self, result: &'static str, uploaded: u64, skipped: u64) {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(Finished {
            result,
            uploaded,
            skipped,
        });
    }

    fn deferred(&self) {}
}
