//! Real OpenPGP tools for the encrypted-file-intake tests: GnuPG (`gpg`) in a private
//! home directory, and openpgp.js under Node (`tests/interop/js/pgp_encrypt.mjs`).
//!
//! Keys are generated, exported and used exactly as a customer does it with GnuPG,
//! only unattended: `--batch --no-tty`, and the passphrase handed over with
//! `--pinentry-mode loopback --passphrase-file` instead of typed into a pinentry.
//! Nothing here writes PGP bytes by hand.
//!
//! Use it from a test crate with
//!
//! ```ignore
//! #[path = "support/gpg.rs"]
//! mod gpg;
//! ```
//!
//! Every command that fails panics with its command line and stderr.
//!
//! Needs `gpg` and `gpgconf` (Debian: `apt-get install -y gnupg`); the openpgp.js helpers
//! need `node` and the packages of `tests/interop/js` (`npm ci` there, which
//! [`openpgp_js_encrypt`] runs itself when `openpgp` is missing).
#![allow(dead_code)]

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::{NamedTempFile, TempDir};

/// Which key a customer generates, in the shapes `gpg --full-generate-key` makes.
///
/// Both are a certify+sign primary key `[SC]` with one encryption subkey `[E]`, never
/// expiring. They are generated from an explicit `--generate-key` parameter file, so
/// the shape does not depend on the GnuPG version (`--quick-generate-key ... default`
/// means RSA in GnuPG 2.2 but Curve25519 in 2.3+, and `rsa3072 default` gives no
/// encryption subkey at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Menu choice "RSA and RSA", 3072 bits: `rsa3072 [SC]` + `rsa3072 [E]`.
    Rsa3072,
    /// The default ECC key ("ECC and ECC", Curve 25519; the default of GnuPG 2.3+):
    /// `ed25519 [SC]` (EdDSA) + `cv25519 [E]` (ECDH).
    EccDefault,
}

impl KeyKind {
    /// The key-type lines of the `gpg --batch --generate-key` parameter file.
    fn parameters(self) -> &'static str {
        match self {
            KeyKind::Rsa3072 => {
                "Key-Type: RSA\nKey-Length: 3072\nKey-Usage: sign\n\
                 Subkey-Type: RSA\nSubkey-Length: 3072\nSubkey-Usage: encrypt\n"
            }
            KeyKind::EccDefault => {
                "Key-Type: EDDSA\nKey-Curve: ed25519\nKey-Usage: sign\n\
                 Subkey-Type: ECDH\nSubkey-Curve: cv25519\nSubkey-Usage: encrypt\n"
            }
        }
    }
}

/// Which compression `gpg --encrypt` applies to the file before encrypting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    /// No `--compress-algo`: GnuPG's own choice from the key's preferences (ZLIB for
    /// keys GnuPG made; it skips compression for input that looks compressed already).
    Default,
    /// `--compress-algo none`: a literal data packet straight inside the encryption.
    None,
    /// `--compress-algo zlib` (compressed data packet, algorithm 2).
    Zlib,
    /// `--compress-algo zip` (raw deflate, algorithm 1).
    Zip,
    /// `--compress-algo bzip2` (algorithm 3).
    Bzip2,
}

impl Compress {
    /// The value given to `--compress-algo`, or `None` for GnuPG's default.
    pub fn gpg_name(self) -> Option<&'static str> {
        match self {
            Compress::Default => None,
            Compress::None => Some("none"),
            Compress::Zlib => Some("zlib"),
            Compress::Zip => Some("zip"),
            Compress::Bzip2 => Some("bzip2"),
        }
    }

    /// Every variant, for tests that cover them all.
    pub const ALL: [Compress; 5] = [
        Compress::Default,
        Compress::None,
        Compress::Zlib,
        Compress::Zip,
        Compress::Bzip2,
    ];
}

/// A key pair that [`Gpg::generate`] made, as the customer hands it over.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// The primary key's fingerprint: 40 upper-case hex digits (v4 key).
    pub fingerprint: String,
    /// Exactly what `gpg --export-secret-key -a <fingerprint>` writes: an armored
    /// `PGP PRIVATE KEY BLOCK` with the primary key and the encryption subkey, both
    /// still protected by the passphrase.
    pub secret_armored: String,
    /// Exactly what `gpg --export -a <fingerprint>` writes: the armored
    /// `PGP PUBLIC KEY BLOCK`.
    pub public_armored: String,
}

/// GnuPG in a private, temporary home directory (`GNUPGHOME`, mode 0700).
///
/// The home's `gpg-agent.conf` allows loopback pinentry and caches no passphrase
/// (`default-cache-ttl 0`, `max-cache-ttl 0`), so every operation on a secret key
/// really checks the passphrase it is given. Dropping the `Gpg` stops the agent that
/// home started (`gpgconf --kill all`) and deletes the directory.
///
/// Each `Gpg` is independent, so tests may run in parallel; within one home, use each
/// e-mail address for one key only (`encrypt` picks the recipient by address).
pub struct Gpg {
    home: TempDir,
}

impl Gpg {
    /// Creates an empty GnuPG home. Panics, saying how to install GnuPG, if `gpg` is
    /// not on the PATH.
    pub fn new() -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("gnupg-")
            .tempdir()
            .expect("create a temporary GNUPGHOME");
        fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700))
            .expect("chmod 0700 GNUPGHOME");
        fs::write(
            home.path().join("gpg-agent.conf"),
            "allow-loopback-pinentry\ndefault-cache-ttl 0\nmax-cache-ttl 0\n",
        )
        .expect("write gpg-agent.conf");
        let gpg = Gpg { home };
        if let Err(e) = gpg.command().arg("--version").output() {
            panic!("cannot run gpg ({e}): install GnuPG, e.g. `apt-get install -y gnupg`");
        }
        gpg
    }

    /// The home directory (`GNUPGHOME`).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// A `gpg` command on this home with `--batch --no-tty`, for anything the helpers
    /// here do not cover. Run it with [`Gpg::run`] to get the same failure reports.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", self.home())
            .env_remove("GPG_AGENT_INFO")
            .args(["--batch", "--no-tty"])
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cmd` and returns its stdout; panics with the command line, exit status
    /// and stderr if it cannot start or exits unsuccessfully.
    pub fn run(&self, cmd: &mut Command) -> Vec<u8> {
        let out = output(cmd);
        check(cmd, &out);
        out.stdout
    }

    /// The first line of `gpg --version`, e.g. `gpg (GnuPG) 2.2.40`.
    pub fn gpg_version(&self) -> String {
        let out = self.run(self.command().arg("--version"));
        String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Generates a key pair of `kind` for `Name <email>`, protected by `passphrase`,
    /// never expiring, and exports it as the customer does:
    ///
    /// ```text
    /// gpg --batch --no-tty --pinentry-mode loopback --passphrase-file PW --status-fd 1 --generate-key PARAMS
    /// gpg --batch --no-tty --pinentry-mode loopback --passphrase-file PW --armor --export-secret-key FPR
    /// gpg --batch --no-tty --armor --export FPR
    /// ```
    ///
    /// The fingerprint comes from the `KEY_CREATED` status line. `passphrase` must not
    /// be empty or contain a line break.
    pub fn generate(
        &self,
        kind: KeyKind,
        name: &str,
        email: &str,
        passphrase: &str,
    ) -> GeneratedKey {
        for (what, value) in [("name", name), ("email", email)] {
            assert!(
                !value.contains(['\n', '\r']),
                "{what} must be one line: {value:?}"
            );
        }
        let mut params = self.secret_file();
        write!(
            params,
            "{}Name-Real: {name}\nName-Email: {email}\nExpire-Date: 0\n%commit\n",
            kind.parameters()
        )
        .expect("write the key parameters");
        let pw = self.passphrase_file(passphrase);

        let status = self.run(
            self.command()
                .args(["--pinentry-mode", "loopback", "--passphrase-file"])
                .arg(pw.path())
                .args(["--status-fd", "1", "--generate-key"])
                .arg(params.path()),
        );
        let status = String::from_utf8_lossy(&status);
        let fingerprint = status
            .lines()
            .find_map(|l| l.strip_prefix("[GNUPG:] KEY_CREATED "))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no KEY_CREATED status from gpg --generate-key:\n{status}"))
            .to_string();

        // On a loaded machine gpg-agent has been seen to answer the export of a key it
        // has just written with "Corrupted protection" (CI, 2026-12-02, 1 run in 4 while
        // fuzzers shared the cores); the key is fine, and the next export reads it.
        let mut tries = 0;
        let secret = loop {
            let mut cmd = self.command();
            cmd.args(["--pinentry-mode", "loopback", "--passphrase-file"])
                .arg(pw.path())
                .args(["--armor", "--export-secret-key", &fingerprint]);
            let out = output(&mut cmd);
            tries += 1;
            if tries < 3 && String::from_utf8_lossy(&out.stderr).contains("Corrupted protection") {
                std::thread::sleep(std::time::Duration::from_millis(500));
                continue;
            }
            check(&cmd, &out);
            break out.stdout;
        };
        let secret_armored = String::from_utf8(secret).expect("armored secret key is UTF-8");
        // gpg exits 0 with no output when the agent refused to hand the key over.
        assert!(
            secret_armored.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"),
            "gpg --export-secret-key {fingerprint} wrote no private key block:\n{secret_armored}"
        );

        let public = self.run(self.command().args(["--armor", "--export", &fingerprint]));
        let public_armored = String::from_utf8(public).expect("armored public key is UTF-8");
        assert!(
            public_armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
            "gpg --export {fingerprint} wrote no public key block:\n{public_armored}"
        );

        GeneratedKey {
            fingerprint,
            secret_armored,
            public_armored,
        }
    }

    /// Imports an armored key (public, or secret as `gpg --export-secret-key -a` wrote
    /// it) into this home, as the receiving side would:
    ///
    /// ```text
    /// gpg --batch --no-tty --pinentry-mode loopback --passphrase-file PW --import FILE
    /// ```
    ///
    /// `passphrase` may be empty for a public key.
    pub fn import(&self, armored: &str, passphrase: &str) {
        let mut file = self.secret_file();
        file.write_all(armored.as_bytes())
            .expect("write the key to import");
        let mut cmd = self.command();
        cmd.args(["--pinentry-mode", "loopback"]);
        let pw;
        if !passphrase.is_empty() {
            pw = self.passphrase_file(passphrase);
            cmd.arg("--passphrase-file").arg(pw.path());
        }
        self.run(cmd.arg("--import").arg(file.path()));
    }

    /// Encrypts `input` to `recipient_email` into `output` (overwritten), as the
    /// vendor's documentation does:
    ///
    /// ```text
    /// gpg --batch --no-tty --yes --trust-model always --encrypt [--armor] --recipient EMAIL [--compress-algo ALGO] --output OUTPUT INPUT
    /// ```
    ///
    /// `armor` gives the `file.csv.asc` form (`-----BEGIN PGP MESSAGE-----`), otherwise
    /// binary packets (`file.csv.pgp`). The recipient's public key must be in this home.
    pub fn encrypt(
        &self,
        input: &Path,
        output: &Path,
        recipient_email: &str,
        armor: bool,
        compress: Compress,
    ) {
        let mut cmd = self.command();
        cmd.args(["--yes", "--trust-model", "always", "--encrypt"]);
        if armor {
            cmd.arg("--armor");
        }
        cmd.args(["--recipient", recipient_email]);
        if let Some(algo) = compress.gpg_name() {
            cmd.args(["--compress-algo", algo]);
        }
        cmd.arg("--output").arg(output).arg(input);
        self.run(&mut cmd);
    }

    /// Decrypts `input` (armored or binary) with the secret key in this home unlocked
    /// by `passphrase`; returns the plaintext, or gpg's stderr if it fails:
    ///
    /// ```text
    /// gpg --batch --no-tty --pinentry-mode loopback --passphrase-file PW --decrypt --output - INPUT
    /// ```
    ///
    /// Fails for a wrong passphrase (the agent caches none) and for a message whose
    /// integrity check fails.
    pub fn try_decrypt(&self, input: &Path, passphrase: &str) -> Result<Vec<u8>, String> {
        let pw = self.passphrase_file(passphrase);
        let mut cmd = self.command();
        cmd.args(["--pinentry-mode", "loopback", "--passphrase-file"])
            .arg(pw.path())
            .args(["--decrypt", "--output", "-"])
            .arg(input);
        let out = output(&mut cmd);
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// [`Gpg::try_decrypt`], panicking with gpg's stderr on failure.
    pub fn decrypt(&self, input: &Path, passphrase: &str) -> Vec<u8> {
        self.try_decrypt(input, passphrase)
            .unwrap_or_else(|e| panic!("gpg --decrypt {} failed:\n{e}", input.display()))
    }

    /// `gpg --list-packets` of `input`, decrypting with `passphrase` so that the
    /// packets inside the encryption (compressed, literal data) are listed too:
    ///
    /// ```text
    /// gpg --batch --no-tty --pinentry-mode loopback --passphrase-file PW --list-packets INPUT
    /// ```
    ///
    /// An SEIPD v1 packet (tag 18) shows as `:encrypted data packet:` with
    /// `mdc_method: 2`; GnuPG's OCB packet (tag 20) as `:aead encrypted packet:`.
    pub fn list_packets(&self, input: &Path, passphrase: &str) -> String {
        let pw = self.passphrase_file(passphrase);
        let out = self.run(
            self.command()
                .args(["--pinentry-mode", "loopback", "--passphrase-file"])
                .arg(pw.path())
                .arg("--list-packets")
                .arg(input),
        );
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `gpg --list-secret-keys --with-subkey-fingerprints`: what a person reads to see
    /// the keys' algorithms, usages (`[SC]`, `[E]`) and fingerprints.
    pub fn list_secret_keys(&self) -> String {
        let out = self.run(
            self.command()
                .args(["--list-secret-keys", "--with-subkey-fingerprints"]),
        );
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A file inside the home, mode 0600, deleted when dropped.
    fn secret_file(&self) -> NamedTempFile {
        NamedTempFile::new_in(self.home()).expect("create a file in GNUPGHOME")
    }

    /// A `--passphrase-file` (gpg reads its first line).
    fn passphrase_file(&self, passphrase: &str) -> NamedTempFile {
        assert!(
            !passphrase.is_empty() && !passphrase.contains(['\n', '\r']),
            "the passphrase must be one non-empty line"
        );
        let mut file = self.secret_file();
        writeln!(file, "{passphrase}").expect("write the passphrase file");
        file
    }
}

impl Default for Gpg {
    fn default() -> Self {
        Gpg::new()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        // Stops gpg-agent (and any other daemon, e.g. keyboxd on GnuPG 2.4) of this
        // home before the directory goes. Errors are ignored: nothing to panic about.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home())
            .args(["--kill", "all"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The directory of the Node interop clients, `tests/interop/js`.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/js")
}

/// `openpgp` from the pinned packages of `tests/interop/js` must be installed
/// (`bash .ci/test` runs `npm ci` there); panics, saying what to run, when it is not.
pub fn ensure_openpgp_js() {
    let ready = || js_dir().join("node_modules/openpgp/package.json").exists();
    assert!(
        ready(),
        "openpgp.js is not installed: run (cd tests/interop/js && npm ci)"
    );
}

/// The installed openpgp.js version (from its package.json), e.g. `6.3.2`.
pub fn openpgp_js_version() -> String {
    ensure_openpgp_js();
    let mut cmd = Command::new("node");
    cmd.args([
        "-p",
        "JSON.parse(require('fs').readFileSync('node_modules/openpgp/package.json','utf8')).version",
    ])
    .current_dir(js_dir())
    .stdin(Stdio::null());
    let out = output(&mut cmd);
    check(&cmd, &out);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Encrypts `input` to the armored public key in `public_key` (as `gpg --export -a`
/// writes it) with openpgp.js, streaming, into `output`; armored if `armor`:
///
/// ```text
/// node tests/interop/js/pgp_encrypt.mjs PUBLIC_KEY INPUT OUTPUT [--armor]
/// ```
pub fn openpgp_js_encrypt(public_key: &Path, input: &Path, output_path: &Path, armor: bool) {
    ensure_openpgp_js();
    let mut cmd = Command::new("node");
    cmd.arg(js_dir().join("pgp_encrypt.mjs"))
        .arg(public_key)
        .arg(input)
        .arg(output_path)
        .stdin(Stdio::null());
    if armor {
        cmd.arg("--armor");
    }
    let out = output(&mut cmd);
    check(&cmd, &out);
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn check(cmd: &Command, out: &Output) {
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
