//! The command line: `serve`, `demo`, `keygen`, `public-key`, `seal` and `open`.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::BytesMut;
use clap::{Parser, Subcommand, ValueEnum};
use sha2::Digest as _;
use zeroize::Zeroizing;

use crate::BoxError;
use crate::config::Config;
use crate::envelope::{self, Prefix, PrivateKey, PublicKey, Suite};
use crate::keys::{self, ServerKey, ServerKeys};

/// Exit code for a bad configuration (EX_CONFIG would be 78; 64 is EX_USAGE, as linkerd does).
pub const EXIT_BAD_CONFIG: u8 = 64;
/// Exit code of `open` when its input is the gateway's JSON error body rather than an
/// envelope: the request failed, the decryption did not (1 stays "decryption failed").
pub const EXIT_GATEWAY_ERROR: u8 = 3;
/// Exit status when standard output's reader went away (`hpke-gateway demo | head -1`):
/// 128 + SIGPIPE, what a shell reports for `yes | head -1`, so pipelines (and `pipefail`)
/// treat the gateway like any other tool, and `seal | ...` cut short is not a success.
/// Nothing is printed.
pub const EXIT_BROKEN_PIPE: u8 = 141;

/// Standard output's reader went away: the command stops quietly with [`EXIT_BROKEN_PIPE`].
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// Writes one line to standard output, like `println!` but returning the error:
/// [`StdoutClosed`] when the reader went away, instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::print_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// What [`say!`] calls.
pub(crate) fn print_line(args: std::fmt::Arguments<'_>) -> Result<(), BoxError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{args}")
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Writes bytes to standard output; see [`say!`].
pub(crate) fn write_stdout(bytes: &[u8]) -> Result<(), BoxError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

fn stdout_error(e: std::io::Error) -> BoxError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        e.into()
    }
}

/// `hpke-gateway`: HPKE payload encryption in front of an existing HTTP API.
#[derive(Debug, Parser)]
#[command(name = "hpke-gateway", version, about)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway with a configuration file.
    Serve {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a self-contained demo: fresh keys, a sample upstream, the gateway, and one
    /// encrypted round trip.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Exit after the round trip instead of serving until Ctrl-C (with --intake: after
        /// one sample file went through the intake).
        #[arg(long)]
        once: bool,
        /// Demonstrate the file intake instead: an intake key, a watched folder, the gpg
        /// and manifest commands a customer runs, and the mails it would send, printed.
        #[arg(long)]
        intake: bool,
    },
    /// The file intake: pull an account's files from the customer's SFTP server now.
    Intake {
        /// What to do.
        #[command(subcommand)]
        command: IntakeCommand,
    },
    /// Manage the server keys of a configuration.
    Keys {
        /// What to do.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Generate a private key as PKCS#8 PEM (mode 0600): X25519, or X-Wing's 32-byte seed
    /// under the X-Wing draft's OID.
    Keygen {
        /// The file to create; an existing file is not overwritten.
        #[arg(long)]
        out: PathBuf,
        /// The suite: x25519-aes-256-gcm (default), x25519-aes-128-gcm,
        /// x25519-chacha20-poly1305 or xwing-aes-256-gcm. PEM records only the KEM:
        /// declare the suite where the key is used.
        #[arg(long)]
        suite: Option<Suite>,
    },
    /// Print the public key of a private key file (or re-encode a public key file).
    PublicKey {
        /// A private key (PKCS#8 PEM, encrypted PKCS#8, Tink private keyset) or public key file.
        #[arg(long)]
        key: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = KeyFormat::Pem)]
        format: KeyFormat,
        /// With tink-json: write a TINK-prefixed keyset with this key id (default: RAW).
        #[arg(long)]
        key_id: Option<u32>,
        /// The key's suite, for PEM and raw keys (a Tink keyset names its own, which must
        /// agree).
        #[arg(long)]
        suite: Option<Suite>,
        /// Passphrase of an encrypted private key.
        #[command(flatten)]
        passphrase: Passphrase,
    },
    /// Encrypt standard input to a public key; the envelope goes to standard output.
    Seal {
        /// The recipient's public key (SPKI PEM, raw base64, or Tink public keyset JSON).
        #[arg(long)]
        recipient: PathBuf,
        /// The HPKE info: the account id.
        #[arg(long)]
        info: String,
        /// The recipient key's suite, for PEM and raw keys (a Tink keyset names its own).
        #[arg(long)]
        suite: Option<Suite>,
    },
    /// Decrypt an envelope (RAW or TINK-prefixed) from standard input to standard output.
    #[command(
        after_help = "Exit status: 0 decrypted; 1 decryption failed (or another error); \
        3 the input is the gateway's JSON error body ({\"status\":\"fail\",...,\"code\":N}), \
        printed to standard error."
    )]
    Open {
        /// The private key.
        #[arg(long)]
        key: PathBuf,
        /// The HPKE info: the account id.
        #[arg(long)]
        info: String,
        /// The key's suite, for PEM and raw keys (a Tink keyset names its own).
        #[arg(long)]
        suite: Option<Suite>,
        /// Passphrase of an encrypted private key.
        #[command(flatten)]
        passphrase: Passphrase,
    },
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new primary server key and demote the current one to decrypt-only until
    /// the overlap ends. A running gateway picks the change up on its own.
    Rotate {
        /// The TOML configuration file (edited in place).
        #[arg(long, short)]
        config: PathBuf,
        /// Days the previous key keeps decrypting.
        #[arg(long, default_value_t = 30)]
        overlap_days: u64,
    },
}

/// `intake` subcommands.
#[derive(Debug, Subcommand)]
pub enum IntakeCommand {
    /// Pull one account from its `[intake.accounts.pull]` server now, and print what was
    /// fetched and how each file ended. Goes through the running gateway's admin
    /// listener (so the journal has one writer); runs in this process when none answers.
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The intake account id.
        #[arg(long)]
        account: String,
        /// The running gateway's admin listener (default: `admin_listen` of the config).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where the passphrase of an encrypted private key comes from.
#[derive(Debug, clap::Args)]
pub struct Passphrase {
    /// Environment variable holding the private key's passphrase.
    #[arg(long)]
    passphrase_env: Option<String>,
    /// File holding the private key's passphrase.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

/// Public key output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyFormat {
    /// SPKI PEM.
    Pem,
    /// The 32 raw bytes in base64.
    Raw,
    /// A Tink public keyset (JSON).
    TinkJson,
}

/// Runs the command line and returns the process exit code.
pub fn main(args: Args) -> ExitCode {
    let result = match args.command {
        Command::Serve { config } => serve(&config),
        Command::Demo {
            listen,
            once,
            intake,
        } => runtime().and_then(|rt| rt.block_on(crate::demo::run(listen, once, intake))),
        Command::Intake {
            command:
                IntakeCommand::Run {
                    config,
                    account,
                    admin,
                    json,
                },
        } => runtime().and_then(|rt| rt.block_on(intake_run(&config, account, admin, json))),
        Command::Keys {
            command:
                KeysCommand::Rotate {
                    config,
                    overlap_days,
                },
        } => rotate(&config, overlap_days),
        Command::Keygen { out, suite } => keygen(&out, suite.unwrap_or_default()),
        Command::PublicKey {
            key,
            format,
            key_id,
            suite,
            passphrase,
        } => public_key(&key, format, key_id, suite, &passphrase),
        Command::Seal {
            recipient,
            info,
            suite,
        } => seal(&recipient, &info, suite),
        Command::Open {
            key,
            info,
            suite,
            passphrase,
        } => open(&key, &info, suite, &passphrase),
    };
    match result {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => ExitCode::from(EXIT_BROKEN_PIPE),
        Err(e) => {
            eprintln!("hpke-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, BoxError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn intake_run(
    path: &Path,
    account: String,
    admin: Option<SocketAddr>,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hpke-gateway: {e}");
            return Ok(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    let report = crate::intake::run_now(config, account, admin).await?;
    if json {
        write_stdout(format!("{report}\n").as_bytes())?;
    } else {
        write_stdout(crate::intake::describe_report(&report).as_bytes())?;
    }
    let file_failed = report["fetched"].as_array().into_iter().flatten().any(|f| {
        f["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("failed"))
    });
    Ok(if report["error"].is_null() && !file_failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn serve(path: &Path) -> Result<ExitCode, BoxError> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hpke-gateway: {e}");
            return Ok(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    crate::server::run(config, path)?;
    Ok(ExitCode::SUCCESS)
}

fn rotate(config: &Path, overlap_days: u64) -> Result<ExitCode, BoxError> {
    let overlap = std::time::Duration::from_secs(overlap_days.saturating_mul(86_400));
    let r = crate::rotate::rotate(config, overlap)?;
    eprintln!(
        "new primary key id {} in {} (owner and mode of the previous key); key id {} decrypts until {} (decrypt-only).\n\
         A running gateway reloads on its next file check or on SIGHUP.",
        r.new_id,
        r.new_key_file.display(),
        r.old_id,
        humantime::format_rfc3339_seconds(r.old_not_after),
    );
    Ok(ExitCode::SUCCESS)
}

fn keygen(out: &Path, suite: Suite) -> Result<ExitCode, BoxError> {
    let key = PrivateKey::generate_for(suite);
    let pem = keys::private_key_pem(&key)?;
    keys::write_secret_file(out, pem.as_bytes())
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    if suite == Suite::default() {
        eprintln!("wrote {} (mode 0600)", out.display());
    } else {
        eprintln!(
            "wrote {} (mode 0600), a key of suite {suite}: declare --suite {suite} (or suite = \"{suite}\") wherever it is used",
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn public_key(
    path: &Path,
    format: KeyFormat,
    key_id: Option<u32>,
    suite: Option<Suite>,
    passphrase: &Passphrase,
) -> Result<ExitCode, BoxError> {
    let text = Zeroizing::new(read_file(path)?);
    let (public, tink_prefix) = match keys::parse_public_key_for(&text, suite) {
        Ok((pk, prefix)) => (pk, Some(prefix)),
        Err(_) => {
            let pass = passphrase.read()?;
            let loaded =
                keys::parse_private_key_for(&text, pass.as_deref().map(Vec::as_slice), suite)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            (loaded.key.public_key(), loaded.tink_prefix)
        }
    };
    let out = match format {
        KeyFormat::Pem => keys::public_key_pem(&public)?,
        KeyFormat::Raw => format!("{}\n", keys::public_key_raw_base64(&public)),
        KeyFormat::TinkJson => {
            let prefix = match (key_id, tink_prefix) {
                (Some(id), _) => Prefix::Tink(id),
                (None, Some(Prefix::Tink(id))) => Prefix::Tink(id),
                (None, _) => Prefix::Raw,
            };
            format!(
                "{}\n",
                keys::public_keyset_json(&public, prefix, raw_key_id(&public))
            )
        }
    };
    write_stdout(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// A stable key id for a RAW keyset (Tink requires one even when no prefix carries it).
fn raw_key_id(public: &PublicKey) -> u32 {
    let digest = sha2::Sha256::digest(public.to_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn seal(recipient: &Path, info: &str, suite: Option<Suite>) -> Result<ExitCode, BoxError> {
    let text = read_file(recipient)?;
    let (public, prefix) = keys::parse_public_key_for(&text, suite)
        .map_err(|e| format!("{}: {e}", recipient.display()))?;
    let plaintext = Zeroizing::new(read_stdin()?);
    let sealed = envelope::seal(&public, prefix, info.as_bytes(), &plaintext)?;
    write_stdout(&sealed)?;
    Ok(ExitCode::SUCCESS)
}

fn open(
    key: &Path,
    info: &str,
    suite: Option<Suite>,
    passphrase: &Passphrase,
) -> Result<ExitCode, BoxError> {
    let text = Zeroizing::new(read_file(key)?);
    let pass = passphrase.read()?;
    let loaded = keys::parse_private_key_for(&text, pass.as_deref().map(Vec::as_slice), suite)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let id = match loaded.tink_prefix {
        Some(Prefix::Tink(id)) => Some(id),
        _ => None,
    };
    let ring = ServerKeys::new(vec![ServerKey::new(id, loaded.key)]);
    let input = read_stdin()?;
    let plaintext = match ring.open(info.as_bytes(), BytesMut::from(&input[..])) {
        Ok(plaintext) => plaintext,
        Err(e) => {
            // `curl ... | open` hands over whatever the gateway answered: say so when
            // that was an error body (an envelope is never such JSON, and it was tried first).
            if let Some(message) = gateway_error(&input) {
                eprintln!("hpke-gateway: the gateway answered with an error: {message}");
                return Ok(ExitCode::from(EXIT_GATEWAY_ERROR));
            }
            return Err(e.into());
        }
    };
    write_stdout(&plaintext)?;
    Ok(ExitCode::SUCCESS)
}

/// `code N: message` when `input` is a gateway error body such as
/// `{"status":"fail","error":"decryption failed","code":4008}`.
fn gateway_error(input: &[u8]) -> Option<String> {
    let serde_json::Value::Object(body) = serde_json::from_slice(input).ok()? else {
        return None;
    };
    let code = body.get("code").and_then(serde_json::Value::as_u64);
    let failed = body.get("status").and_then(serde_json::Value::as_str) == Some("fail");
    if code.is_none() && !failed {
        return None;
    }
    let error = body
        .get("error")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("(no message)");
    Some(match code {
        Some(code) => format!("code {code}: {error}"),
        None => error.to_owned(),
    })
}

impl Passphrase {
    fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>, BoxError> {
        Ok(keys::read_passphrase(
            self.passphrase_env.as_deref(),
            self.passphrase_file.as_deref(),
        )?)
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, BoxError> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()).into())
}

fn read_stdin() -> Result<Vec<u8>, BoxError> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf)?;
    Ok(buf)
}
