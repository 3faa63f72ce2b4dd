//! The TOML configuration: parsed into [`RawConfig`], then checked once into [`Config`],
//! with every key file loaded and validated, before any port is bound.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! upstream = "http://127.0.0.1:9000"
//! account_header = "X-CleverTap-Account-Id"
//! max_encrypted_body_bytes = 10485760
//!
//! [[server_keys]]
//! id = 1
//! private_key = "keys/server-1.pem"
//!
//! [[accounts]]
//! id = "ACCT-1"
//! encryption = true
//! public_keys = ["keys/acct-1.pub.json"]
//! ```

mod parse;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::accounts::{Account, Accounts, MAX_PUBLIC_KEYS, RecipientKey};
use crate::keys::{self, KeyState, ServerKey, ServerKeys};

/// Default account header, as the vendor's API names it.
pub const DEFAULT_ACCOUNT_HEADER: &str = "X-CleverTap-Account-Id";
/// Default limit on an encrypted request body (10 MiB).
pub const DEFAULT_MAX_ENCRYPTED_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Default limit on an upstream response that is to be encrypted (64 MiB).
pub const DEFAULT_MAX_RESPONSE_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Default upstream connect timeout.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default time to wait for the upstream's response head.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 30_000;
/// Default time to receive a whole request body that must be buffered (encrypted).
pub const DEFAULT_REQUEST_BODY_TIMEOUT_MS: u64 = 30_000;
/// Default most time between two reads of a request body (nginx's `client_body_timeout`).
pub const DEFAULT_REQUEST_BODY_IDLE_TIMEOUT_MS: u64 = 10_000;
/// Default size up to which a plaintext request body is received whole before the
/// request takes one of `max_concurrent_requests` (nginx buffers every body).
pub const DEFAULT_REQUEST_BUFFER_BYTES: u64 = 64 * 1024;
/// The buffer budget's floor when derived from the body limits.
pub const MIN_DEFAULT_BUFFER_BUDGET_BYTES: u64 = 256 * 1024 * 1024;
/// Default wait for buffer budget to come free before answering 503.
pub const DEFAULT_BUFFER_WAIT_MS: u64 = 1_000;
/// Default most time a write to a client may wait without progress (nginx's
/// `send_timeout`).
pub const DEFAULT_SEND_TIMEOUT_MS: u64 = 60_000;
/// Default most open client connections per process (public and admin listeners
/// each); beyond, the listener stops accepting until one closes.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;
/// Default media type of a decrypted body as the upstream sees it.
pub const DEFAULT_PLAINTEXT_CONTENT_TYPE: &str = "application/json";
/// Default limit on a request's header section (names, values and line overhead).
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 16 * 1024;
/// Default `header_timeout_ms`: time for a request head (HTTP/1.1) or a TLS handshake.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 30_000;
/// Default limit on requests in flight, all workers together.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: u64 = 1024;
/// Default time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;
/// Default interval between checks of the config and key files for changes.
pub const DEFAULT_RELOAD_POLL_MS: u64 = 2_000;
/// Default upper bound of `Cache-Control: max-age` on the published keys.
pub const DEFAULT_KEYS_MAX_AGE_S: u64 = 3_600;
/// Default admin listener (health, readiness, metrics).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9181";

/// The configuration file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Public listener address.
    pub listen: String,
    /// Base URL of the protected API.
    pub upstream: String,
    /// Header carrying the account id.
    #[serde(default)]
    pub account_header: Option<String>,
    /// Largest encrypted request body accepted.
    #[serde(default)]
    pub max_encrypted_body_bytes: Option<u64>,
    /// Largest upstream response the gateway will buffer to encrypt.
    #[serde(default)]
    pub max_response_body_bytes: Option<u64>,
    /// Upstream TCP connect timeout in milliseconds.
    #[serde(default)]
    pub upstream_connect_timeout_ms: Option<u64>,
    /// Time to wait for the upstream's response head, in milliseconds.
    #[serde(default)]
    pub upstream_timeout_ms: Option<u64>,
    /// Time to receive a request body the gateway must buffer, in milliseconds.
    #[serde(default)]
    pub request_body_timeout_ms: Option<u64>,
    /// Most time between two reads of a request body, in milliseconds.
    #[serde(default)]
    pub request_body_idle_timeout_ms: Option<u64>,
    /// Plaintext bodies up to this size are received whole before going upstream.
    #[serde(default)]
    pub request_buffer_bytes: Option<u64>,
    /// Keep request header fields whose name has an underscore (dropped by default).
    #[serde(default)]
    pub underscores_in_headers: bool,
    /// Most bytes of bodies held in memory for decryption and encryption at once.
    #[serde(default)]
    pub buffer_budget_bytes: Option<u64>,
    /// How long a request waits for buffer budget before 503, in milliseconds.
    #[serde(default)]
    pub buffer_wait_ms: Option<u64>,
    /// Most open client connections per listener.
    #[serde(default)]
    pub max_connections: Option<u64>,
    /// Most time a write to a client may wait without progress, in milliseconds.
    #[serde(default)]
    pub send_timeout_ms: Option<u64>,
    /// `Content-Type` (and `Accept`) the upstream sees on a decrypted request.
    #[serde(default)]
    pub plaintext_content_type: Option<String>,
    /// Largest request header section accepted.
    #[serde(default)]
    pub max_header_bytes: Option<u64>,
    /// Time a client has to send a request head (HTTP/1.1, also an idle keep-alive
    /// connection's lifetime) or to finish a TLS handshake, in milliseconds.
    #[serde(default)]
    pub header_timeout_ms: Option<u64>,
    /// Most requests in flight at once; beyond, 503 with `Retry-After`.
    #[serde(default)]
    pub max_concurrent_requests: Option<u64>,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT, in milliseconds.
    #[serde(default)]
    pub shutdown_grace_ms: Option<u64>,
    /// Interval between checks of the config and key files for changes, in
    /// milliseconds; 0 reloads on SIGHUP only.
    #[serde(default)]
    pub reload_poll_ms: Option<u64>,
    /// Upper bound of `Cache-Control: max-age` on `/.well-known/hpke-keys`, in seconds.
    #[serde(default)]
    pub keys_max_age_s: Option<u64>,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`); `"off"` disables it.
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// Label request metrics with the account id (one series per account).
    #[serde(default)]
    pub metrics_account_labels: bool,
    /// TLS on the public listener.
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// TLS settings for an `https://` upstream.
    #[serde(default)]
    pub upstream_tls: Option<RawUpstreamTls>,
    /// The encrypted file intake.
    #[serde(default)]
    pub intake: Option<crate::intake::RawIntake>,
    /// Oblivious HTTP (RFC 9458).
    #[serde(default)]
    pub ohttp: Option<RawOhttp>,
    /// Where the replay defence keeps seen requests.
    #[serde(default)]
    pub replay: Option<RawReplay>,
    /// The gateway's private keys.
    #[serde(default)]
    pub server_keys: Vec<RawServerKey>,
    /// Accounts.
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
}

/// The `[tls]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key of the leaf certificate (owner-only file).
    pub private_key: PathBuf,
}

/// The `[ohttp]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOhttp {
    /// Serve Oblivious HTTP: the key configurations at `/.well-known/ohttp-keys`.
    #[serde(default)]
    pub enabled: bool,
    /// The gateway resource's path (default `/.well-known/ohttp-gateway`).
    #[serde(default)]
    pub path: Option<String>,
    /// The origins (`https://api.example.com`) an inner request may name (default: the
    /// upstream's).
    #[serde(default)]
    pub allowed_targets: Option<Vec<String>>,
    /// How far an inner request's `Date` may be from the gateway's clock, each way, in
    /// seconds (default 30, at least 2); the replay cache keeps twice this.
    #[serde(default)]
    pub replay_window_s: Option<u64>,
    /// Refuse inner requests without a `Date` (default false: accepted, and their replay
    /// caught only within twice the window).
    #[serde(default)]
    pub require_date: bool,
}

/// The `[replay]` table: where seen encapsulated keys are kept, for Oblivious HTTP and
/// for accounts with `replay_window_s`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplay {
    /// `"memory"` (default: this replica only), or a `redis://[user:password@]host[:port][/db]`
    /// (or `unix://`) URL of a Valkey or Redis server every replica shares.
    #[serde(default)]
    pub store: Option<String>,
    /// How long one request waits for the shared store (default 250 ms).
    #[serde(default)]
    pub store_timeout_ms: Option<u64>,
    /// When the shared store does not answer in time: `"allow_idempotent"` (default:
    /// GET, HEAD, OPTIONS, TRACE, PUT and DELETE go on unchecked, other methods get 503
    /// with code 5007), `"refuse"` (every request gets the 503) or `"allow"`.
    #[serde(default)]
    pub store_unavailable: Option<String>,
    /// Prefix of the keys in the shared store (default `"hpke-gateway:replay:"`).
    #[serde(default)]
    pub key_prefix: Option<String>,
}

/// A Valkey/Redis URL, which may hold a password: its `Debug` shows only the scheme and
/// the host.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(pub String);

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only what a URL parser reads as scheme and host (or, for a Unix socket, its
        // path): never user info, query or fragment. A URL that does not parse shows its
        // scheme alone, as where it would be cut is not known.
        match url::Url::parse(&self.0) {
            Ok(u) => match u.host_str().filter(|h| !h.is_empty()) {
                Some(host) => match u.port() {
                    Some(port) => write!(f, "{}://{host}:{port}", u.scheme()),
                    None => write!(f, "{}://{host}", u.scheme()),
                },
                None => write!(f, "{}://{}", u.scheme(), u.path()),
            },
            Err(_) => {
                let scheme = self
                    .0
                    .split_once("://")
                    .map_or("", |(s, _)| s)
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                    .collect::<String>();
                if scheme.is_empty() {
                    f.write_str("<unparsed>")
                } else {
                    write!(f, "{scheme}://<unparsed>")
                }
            }
        }
    }
}

/// The checked `[replay]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayStore {
    /// The shared store; `None`: in memory.
    pub url: Option<StoreUrl>,
    /// How long one request waits for it.
    pub timeout: Duration,
    /// What happens when it does not answer.
    pub unavailable: crate::replay::Unavailable,
    /// Prefix of its keys.
    pub key_prefix: String,
}

impl Default for ReplayStore {
    fn default() -> Self {
        Self {
            url: None,
            timeout: Duration::from_millis(DEFAULT_REPLAY_STORE_TIMEOUT_MS),
            unavailable: crate::replay::Unavailable::default(),
            key_prefix: DEFAULT_REPLAY_KEY_PREFIX.to_owned(),
        }
    }
}

/// The default wait for the shared replay store.
pub const DEFAULT_REPLAY_STORE_TIMEOUT_MS: u64 = 250;
/// The default prefix of the shared replay store's keys.
pub const DEFAULT_REPLAY_KEY_PREFIX: &str = "hpke-gateway:replay:";

/// Oblivious HTTP, when `[ohttp] enabled = true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ohttp {
    /// The gateway resource's path.
    pub path: String,
    /// The origins an inner request may name, `scheme://authority` in lower case.
    pub allowed_targets: Vec<String>,
    /// The replay window, each side of the gateway's clock.
    pub replay_window: Duration,
    /// Refuse inner requests without a `Date`.
    pub require_date: bool,
}

/// The default replay window of Oblivious HTTP, each way.
pub const DEFAULT_OHTTP_REPLAY_WINDOW_S: u64 = 30;
/// The smallest replay window accepted.
pub const MIN_OHTTP_REPLAY_WINDOW_S: u64 = 2;
/// The largest replay window accepted: the cache keeps twice the window, and its bound
/// divided by that time is the request rate it can hold.
pub const MAX_OHTTP_REPLAY_WINDOW_S: u64 = 600;

/// The default path of the Oblivious HTTP gateway resource.
pub const DEFAULT_OHTTP_PATH: &str = "/.well-known/ohttp-gateway";

/// The `[upstream_tls]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM CA certificates to verify the upstream with, instead of the system roots.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// PEM client certificate chain, for mutual TLS.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    /// PEM private key of the client certificate (owner-only file).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// One `[[server_keys]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerKey {
    /// The Tink key id (matched against a ciphertext's 5-byte prefix).
    pub id: u32,
    /// Path of the private key file.
    pub private_key: PathBuf,
    /// Name of an environment variable holding the passphrase of an encrypted key.
    #[serde(default)]
    pub passphrase_env: Option<String>,
    /// Path of a file holding the passphrase of an encrypted key.
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// Where the key is in its rotation (default: the first non-retired key is primary).
    #[serde(default)]
    pub state: Option<KeyState>,
    /// End of validity, RFC 3339 (`2027-12-01T00:00:00Z`).
    #[serde(default)]
    pub not_after: Option<String>,
    /// The key's HPKE suite (default `x25519-aes-256-gcm`); a Tink keyset must name the
    /// same one.
    #[serde(default)]
    pub suite: Option<String>,
    /// The key's id in Oblivious HTTP key configurations, 0-255 (default: the low eight
    /// bits of `id`); unique among keys that are not retired.
    #[serde(default)]
    pub ohttp_key_id: Option<u8>,
}

/// One `[[accounts]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    /// The account id (the value of the account header, and the HPKE info).
    pub id: String,
    /// Whether encrypted traffic is accepted.
    #[serde(default)]
    pub encryption: bool,
    /// The customer's public key files; the first seals responses.
    #[serde(default)]
    pub public_keys: Vec<PathBuf>,
    /// The suite of the PEM and raw files in `public_keys` (a Tink keyset names its
    /// own); default: the KEM's (`x25519-aes-256-gcm`, `xwing-aes-256-gcm`).
    #[serde(default)]
    pub public_key_suite: Option<String>,
    /// The suites a request may be sealed with (default: any server key's); a request
    /// sealed with another is refused with code 4020.
    #[serde(default)]
    pub request_suites: Option<Vec<String>>,
    /// Refuse a Tink-format request whose encapsulated key was seen within this many
    /// seconds (default: off; 2..=3600).
    #[serde(default)]
    pub replay_window_s: Option<u64>,
}

/// A checked configuration with every key loaded.
#[derive(Debug)]
pub struct Config {
    /// Public listener address.
    pub listen: SocketAddr,
    /// Base URL of the protected API.
    pub upstream: Uri,
    /// Header carrying the account id.
    pub account_header: HeaderName,
    /// The account header as the configuration spells it (`HeaderName` lowercases), for
    /// messages.
    pub account_header_spelling: String,
    /// Largest encrypted request body accepted.
    pub max_encrypted_body_bytes: u64,
    /// Largest upstream response the gateway will buffer to encrypt.
    pub max_response_body_bytes: u64,
    /// Upstream TCP connect timeout.
    pub upstream_connect_timeout: Duration,
    /// Time to wait for the upstream's response head, and for a response body to encrypt.
    pub upstream_timeout: Duration,
    /// Time to receive a request body the gateway must buffer.
    pub request_body_timeout: Duration,
    /// Most time between two reads of a request body.
    pub request_body_idle_timeout: Duration,
    /// Plaintext bodies up to this size are received whole before going upstream.
    pub request_buffer_bytes: u64,
    /// Keep request header fields whose name has an underscore.
    pub underscores_in_headers: bool,
    /// `Content-Type` (and `Accept`) the upstream sees on a decrypted request.
    pub plaintext_content_type: HeaderValue,
    /// Operational settings: limits, shutdown, reload, admin listener.
    pub ops: Ops,
    /// The public listener's certificate, when it terminates TLS.
    pub tls: Option<Arc<CertifiedKey>>,
    /// The TLS client settings for an `https://` upstream.
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// The encrypted file intake, when configured.
    pub intake: Option<crate::intake::IntakeConfig>,
    /// Oblivious HTTP, when enabled.
    pub ohttp: Option<Ohttp>,
    /// Where the replay defence keeps seen requests.
    pub replay: ReplayStore,
    /// The gateway's private keys.
    pub server_keys: ServerKeys,
    /// Accounts.
    pub accounts: Accounts,
    /// Every file the configuration was read from (itself, keys, passphrases), for
    /// change detection.
    pub files: Vec<PathBuf>,
}

/// Operational settings.
#[derive(Debug, Clone)]
pub struct Ops {
    /// Largest request header section accepted (431 beyond).
    pub max_header_bytes: usize,
    /// Time for a request head (HTTP/1.1) or a TLS handshake; the connection closes after.
    pub header_timeout: Duration,
    /// Most requests in flight at once (503 beyond).
    pub max_concurrent_requests: usize,
    /// Most bytes of bodies held in memory at once (503 beyond).
    pub buffer_budget_bytes: u64,
    /// How long a request waits for buffer budget before 503.
    pub buffer_wait: Duration,
    /// Most open client connections per listener.
    pub max_connections: usize,
    /// Most time a write to a client may wait without progress.
    pub send_timeout: Duration,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Interval between checks of [`Config::files`]; `None`: SIGHUP only.
    pub reload_poll: Option<Duration>,
    /// Upper bound of `Cache-Control: max-age` on the published keys.
    pub keys_max_age: Duration,
    /// The admin listener, if any.
    pub admin_listen: Option<SocketAddr>,
    /// Label request metrics with the account id.
    pub metrics_account_labels: bool,
}

impl Default for Ops {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES as usize,
            header_timeout: Duration::from_millis(DEFAULT_HEADER_TIMEOUT_MS),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS as usize,
            buffer_budget_bytes: default_buffer_budget(
                DEFAULT_MAX_ENCRYPTED_BODY_BYTES,
                DEFAULT_MAX_RESPONSE_BODY_BYTES,
            ),
            buffer_wait: Duration::from_millis(DEFAULT_BUFFER_WAIT_MS),
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            send_timeout: Duration::from_millis(DEFAULT_SEND_TIMEOUT_MS),
            shutdown_grace: Duration::from_millis(DEFAULT_SHUTDOWN_GRACE_MS),
            reload_poll: Some(Duration::from_millis(DEFAULT_RELOAD_POLL_MS)),
            keys_max_age: Duration::from_secs(DEFAULT_KEYS_MAX_AGE_S),
            admin_listen: None,
            metrics_account_labels: false,
        }
    }
}

/// Everything wrong with a configuration, one problem per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration {path}:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    /// The configuration file.
    pub path: String,
    /// Each problem found.
    pub problems: Vec<String>,
}

impl Config {
    /// Reads, parses and checks a configuration file. Relative paths in it resolve
    /// against the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let fail = |problem: String| ConfigError {
            path: path.display().to_string(),
            problems: vec![problem],
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let (raw, mut problems) = parse::parse(&text);
        let base = path.parent().unwrap_or(Path::new("."));
        // The semantic problems of what parsed, in the same report as the unknown keys.
        let config = raw.map(|raw| Self::from_raw(raw, base));
        let mut config = match config {
            Some(Ok(config)) if problems.is_empty() => config,
            Some(Err(more)) => {
                problems.extend(more);
                return Err(ConfigError {
                    path: path.display().to_string(),
                    problems,
                });
            }
            _ => {
                return Err(ConfigError {
                    path: path.display().to_string(),
                    problems,
                });
            }
        };
        config.files.insert(0, path.to_path_buf());
        Ok(config)
    }

    /// Checks a parsed configuration, loading keys relative to `base`. Returns every
    /// problem found, not just the first.
    pub fn from_raw(raw: RawConfig, base: &Path) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let p = &mut problems;
        let listen = take(
            p,
            raw.listen
                .parse::<SocketAddr>()
                .map_err(|e| format!("listen {:?}: {e}", raw.listen)),
        );
        let upstream = take(p, parse_upstream(&raw.upstream));
        let header = raw
            .account_header
            .as_deref()
            .unwrap_or(DEFAULT_ACCOUNT_HEADER);
        let account_header = take(
            p,
            header
                .parse::<HeaderName>()
                .map_err(|_| format!("account_header {header:?} is not a valid header name")),
        );
        let plaintext_content_type = take(
            p,
            HeaderValue::from_str(
                raw.plaintext_content_type
                    .as_deref()
                    .unwrap_or(DEFAULT_PLAINTEXT_CONTENT_TYPE),
            )
            .map_err(|_| "plaintext_content_type is not a valid header value".to_string()),
        );
        let max_encrypted_body_bytes = take(
            p,
            positive(
                "max_encrypted_body_bytes",
                raw.max_encrypted_body_bytes
                    .unwrap_or(DEFAULT_MAX_ENCRYPTED_BODY_BYTES),
            ),
        );
        let max_response_body_bytes = take(
            p,
            positive(
                "max_response_body_bytes",
                raw.max_response_body_bytes
                    .unwrap_or(DEFAULT_MAX_RESPONSE_BODY_BYTES),
            ),
        );
        let connect_ms = take(
            p,
            bounded_timeout(
                "upstream_connect_timeout_ms",
                raw.upstream_connect_timeout_ms
                    .unwrap_or(DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS),
            ),
        );
        let timeout_ms = take(
            p,
            bounded_timeout(
                "upstream_timeout_ms",
                raw.upstream_timeout_ms
                    .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_MS),
            ),
        );
        let body_timeout_ms = take(
            p,
            bounded_timeout(
                "request_body_timeout_ms",
                raw.request_body_timeout_ms
                    .unwrap_or(DEFAULT_REQUEST_BODY_TIMEOUT_MS),
            ),
        );
        let idle_ms = take(
            p,
            bounded_timeout(
                "request_body_idle_timeout_ms",
                raw.request_body_idle_timeout_ms
                    .unwrap_or(DEFAULT_REQUEST_BODY_IDLE_TIMEOUT_MS),
            ),
        );
        let request_buffer_bytes = raw
            .request_buffer_bytes
            .unwrap_or(DEFAULT_REQUEST_BUFFER_BYTES);
        if account_header
            .as_ref()
            .is_some_and(|h| h.as_str().contains('_'))
            && !raw.underscores_in_headers
        {
            p.push(format!(
                "account_header {header:?} has an underscore, and such fields are dropped: rename it, or set underscores_in_headers = true"
            ));
        }
        let ops = take_all(
            p,
            ops(
                &raw,
                max_encrypted_body_bytes.unwrap_or(DEFAULT_MAX_ENCRYPTED_BODY_BYTES),
                max_response_body_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BODY_BYTES),
            ),
        );
        let tls = take(
            p,
            raw.tls
                .as_ref()
                .map(|t| {
                    crate::tls::load_certified_key(
                        &resolve(base, &t.certificate),
                        &resolve(base, &t.private_key),
                    )
                    .map_err(|e| format!("tls: {e}"))
                })
                .transpose(),
        );
        let upstream_tls = take(p, upstream_tls(&raw, base));
        let intake = take_all(
            p,
            raw.intake
                .as_ref()
                .map(|i| crate::intake::load(i, base))
                .transpose(),
        );
        let server_keys = take_all(p, load_server_keys(&raw.server_keys, base));
        let accounts = take_all(p, load_accounts(&raw.accounts, base));

        let (
            Some(listen),
            Some(upstream),
            Some(account_header),
            Some(plaintext_content_type),
            Some(max_encrypted_body_bytes),
            Some(max_response_body_bytes),
            Some(connect_ms),
            Some(timeout_ms),
            Some(body_timeout_ms),
            Some(idle_ms),
            Some(ops),
            Some(tls),
            Some(upstream_tls),
            Some(intake),
            Some(server_keys),
            Some(accounts),
        ) = (
            listen,
            upstream,
            account_header,
            plaintext_content_type,
            max_encrypted_body_bytes,
            max_response_body_bytes,
            connect_ms,
            timeout_ms,
            body_timeout_ms,
            idle_ms,
            ops,
            tls,
            upstream_tls,
            intake,
            server_keys,
            accounts,
        )
        else {
            return Err(problems);
        };
        problems.extend(suites_without_server_keys(&raw.accounts, &server_keys));
        let ohttp = ohttp(raw.ohttp.as_ref(), &upstream, &mut problems);
        let replay = replay_store(raw.replay.as_ref(), &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Config {
            listen,
            upstream,
            account_header,
            account_header_spelling: header.to_owned(),
            max_encrypted_body_bytes,
            max_response_body_bytes,
            upstream_connect_timeout: Duration::from_millis(connect_ms),
            upstream_timeout: Duration::from_millis(timeout_ms),
            request_body_timeout: Duration::from_millis(body_timeout_ms),
            request_body_idle_timeout: Duration::from_millis(idle_ms),
            request_buffer_bytes,
            underscores_in_headers: raw.underscores_in_headers,
            plaintext_content_type,
            ops,
            tls,
            upstream_tls,
            intake,
            ohttp,
            replay,
            server_keys,
            accounts,
            files: referenced_files(&raw, base),
        })
    }
}

/// `[replay]`: the store URL must parse (no connection is made: a store down at start
/// is handled like one down later), the policy must be one of three.
fn replay_store(raw: Option<&RawReplay>, problems: &mut Vec<String>) -> ReplayStore {
    let mut checked = ReplayStore::default();
    let Some(raw) = raw else {
        return checked;
    };
    match raw.store.as_deref() {
        None | Some("memory") => {}
        Some(url) if url.starts_with("rediss://") || url.starts_with("valkeys://") => {
            problems.push(format!(
                "replay.store: {:?}: TLS to the store is not built in; use redis:// on a private network or unix://",
                StoreUrl(url.to_owned())
            ));
        }
        Some(url) => {
            use redis::IntoConnectionInfo as _;
            match url.into_connection_info() {
                Ok(_) => checked.url = Some(StoreUrl(url.to_owned())),
                // The parser's message may quote the URL, password and all: not shown.
                Err(_) => problems.push(format!(
                    "replay.store: {:?} is neither \"memory\" nor a usable redis://, valkey:// or unix:// URL (rediss:// is not built in)",
                    StoreUrl(url.to_owned()),
                )),            }
        }
    }
    if let Some(ms) = raw.store_timeout_ms {
        if !(1..=10_000).contains(&ms) {
            problems.push(format!(
                "replay.store_timeout_ms: {ms} is outside 1..=10000"
            ));
        }
        checked.timeout = Duration::from_millis(ms);
    }
    if let Some(policy) = raw.store_unavailable.as_deref() {
        match crate::replay::Unavailable::parse(policy) {
            Some(p) => checked.unavailable = p,
            None => problems.push(format!(
                "replay.store_unavailable: {policy:?} is not \"allow_idempotent\", \"refuse\" or \"allow\""
            )),
        }
    }
    if let Some(prefix) = &raw.key_prefix {
        checked.key_prefix.clone_from(prefix);
    }
    checked
}

/// `[ohttp]`: `None` unless enabled; the gateway path must be an absolute path of its own,
/// each allowed target an origin.
fn ohttp(
    raw: Option<&RawOhttp>,
    upstream: &http::Uri,
    problems: &mut Vec<String>,
) -> Option<Ohttp> {
    let raw = raw.filter(|o| o.enabled)?;
    let path = raw.path.as_deref().unwrap_or(DEFAULT_OHTTP_PATH);
    let reserved = [crate::publish::PATH, crate::ohttp::KEYS_PATH];
    if !path.starts_with('/')
        || path.contains(['?', '#', '{', '}', '*'])
        || http::uri::PathAndQuery::try_from(path).is_err()
    {
        problems.push(format!("ohttp.path: {path:?} is not an absolute path"));
    } else if reserved.contains(&path) {
        problems.push(format!("ohttp.path: {path} is already the gateway's"));
    }
    let allowed_targets = match &raw.allowed_targets {
        None => origin(upstream).into_iter().collect(),
        Some(targets) => targets
            .iter()
            .filter_map(|t| {
                let parsed = http::Uri::try_from(t.as_str()).ok();
                let origin = parsed
                    .as_ref()
                    .filter(|u| matches!(u.path(), "" | "/") && u.query().is_none())
                    .and_then(origin);
                if origin.is_none() {
                    problems.push(format!(
                        "ohttp.allowed_targets: {t:?} is not an origin (https://host[:port])"
                    ));
                }
                origin
            })
            .collect(),
    };
    let window = raw.replay_window_s.unwrap_or(DEFAULT_OHTTP_REPLAY_WINDOW_S);
    if !(MIN_OHTTP_REPLAY_WINDOW_S..=MAX_OHTTP_REPLAY_WINDOW_S).contains(&window) {
        problems.push(format!(
            "ohttp.replay_window_s: {window} is outside {MIN_OHTTP_REPLAY_WINDOW_S}..={MAX_OHTTP_REPLAY_WINDOW_S}"
        ));
    }
    Some(Ohttp {
        path: path.to_owned(),
        allowed_targets,
        replay_window: Duration::from_secs(window),
        require_date: raw.require_date,
    })
}

/// `scheme://host[:port]` in lower case, the port only when not the scheme's default: how
/// an allowed target and an inner request's target are compared.
pub(crate) fn origin(uri: &http::Uri) -> Option<String> {
    let scheme = uri
        .scheme_str()
        .map(str::to_ascii_lowercase)
        .filter(|s| matches!(s.as_str(), "http" | "https"))?;
    let authority = uri.authority()?;
    let default = if scheme == "https" { 443 } else { 80 };
    let host = match authority.port_u16() {
        Some(port) if port != default => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// The buffer budget when none is set: room for two of the largest requests with their
/// largest responses, and at least [`MIN_DEFAULT_BUFFER_BUDGET_BYTES`].
pub fn default_buffer_budget(max_encrypted_body_bytes: u64, max_response_body_bytes: u64) -> u64 {
    max_encrypted_body_bytes
        .saturating_add(max_response_body_bytes)
        .saturating_mul(2)
        .max(MIN_DEFAULT_BUFFER_BUDGET_BYTES)
}

fn ops(
    raw: &RawConfig,
    max_encrypted_body_bytes: u64,
    max_response_body_bytes: u64,
) -> Result<Ops, Vec<String>> {
    let mut problems = Vec::new();
    let p = &mut problems;
    let max_header_bytes = take(
        p,
        positive(
            "max_header_bytes",
            raw.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        ),
    );
    let header_timeout_ms = take(
        p,
        bounded_timeout(
            "header_timeout_ms",
            raw.header_timeout_ms.unwrap_or(DEFAULT_HEADER_TIMEOUT_MS),
        ),
    );
    let shutdown_grace_ms = take(
        p,
        at_most_a_day(
            "shutdown_grace_ms",
            raw.shutdown_grace_ms.unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS),
        ),
    );
    let max_concurrent_requests = take(
        p,
        positive(
            "max_concurrent_requests",
            raw.max_concurrent_requests
                .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS),
        ),
    );
    let one_exchange = max_encrypted_body_bytes.saturating_add(max_response_body_bytes);
    let buffer_budget_bytes = raw.buffer_budget_bytes.unwrap_or_else(|| {
        default_buffer_budget(max_encrypted_body_bytes, max_response_body_bytes)
    });
    if buffer_budget_bytes < one_exchange {
        p.push(format!(
            "buffer_budget_bytes ({buffer_budget_bytes}) must hold at least one largest request and response: max_encrypted_body_bytes + max_response_body_bytes = {one_exchange}"
        ));
    }
    let buffer_wait_ms = take(
        p,
        at_most_a_day(
            "buffer_wait_ms",
            raw.buffer_wait_ms.unwrap_or(DEFAULT_BUFFER_WAIT_MS),
        ),
    );
    let max_connections = take(
        p,
        positive(
            "max_connections",
            raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        ),
    );
    let send_timeout_ms = take(
        p,
        bounded_timeout(
            "send_timeout_ms",
            raw.send_timeout_ms.unwrap_or(DEFAULT_SEND_TIMEOUT_MS),
        ),
    );
    let admin = raw.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
    let admin_listen = match admin {
        "off" => Some(None),
        text => take(
            p,
            text.parse::<SocketAddr>()
                .map(Some)
                .map_err(|e| format!("admin_listen {text:?}: {e} (or \"off\")")),
        ),
    };
    let (
        Some(max_header_bytes),
        Some(header_timeout_ms),
        Some(shutdown_grace_ms),
        Some(max_concurrent_requests),
        Some(admin_listen),
        Some(buffer_wait_ms),
        Some(max_connections),
        Some(send_timeout_ms),
    ) = (
        max_header_bytes,
        header_timeout_ms,
        shutdown_grace_ms,
        max_concurrent_requests,
        admin_listen,
        buffer_wait_ms,
        max_connections,
        send_timeout_ms,
    )
    else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let usize_of = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    Ok(Ops {
        max_header_bytes: usize_of(max_header_bytes),
        header_timeout: Duration::from_millis(header_timeout_ms),
        max_concurrent_requests: usize_of(max_concurrent_requests),
        buffer_budget_bytes,
        buffer_wait: Duration::from_millis(buffer_wait_ms),
        max_connections: usize_of(max_connections),
        send_timeout: Duration::from_millis(send_timeout_ms),
        shutdown_grace: Duration::from_millis(shutdown_grace_ms),
        reload_poll: match raw.reload_poll_ms.unwrap_or(DEFAULT_RELOAD_POLL_MS) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
        keys_max_age: Duration::from_secs(raw.keys_max_age_s.unwrap_or(DEFAULT_KEYS_MAX_AGE_S)),
        admin_listen,
        metrics_account_labels: raw.metrics_account_labels,
    })
}

fn upstream_tls(raw: &RawConfig, base: &Path) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    let https = raw.upstream.starts_with("https://");
    let settings = raw.upstream_tls.as_ref();
    if !https {
        return match settings {
            Some(_) => Err("upstream_tls is set but the upstream is not https://".into()),
            None => Ok(None),
        };
    }
    let ca = settings
        .and_then(|t| t.ca_bundle.as_deref())
        .map(|f| resolve(base, f));
    let client = match settings.map(|t| (&t.client_certificate, &t.client_key)) {
        Some((Some(cert), Some(key))) => Some((resolve(base, cert), resolve(base, key))),
        Some((None, None)) | None => None,
        Some(_) => {
            return Err("upstream_tls: client_certificate and client_key go together".into());
        }
    };
    crate::tls::upstream_client_config(
        ca.as_deref(),
        client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .map(|c| Some(Arc::new(c)))
    .map_err(|e| format!("upstream_tls: {e}"))
}

/// The key and passphrase files a configuration names, resolved.
fn referenced_files(raw: &RawConfig, base: &Path) -> Vec<PathBuf> {
    let keys = raw
        .server_keys
        .iter()
        .filter(|k| k.state != Some(KeyState::Retired))
        .flat_map(|k| std::iter::once(&k.private_key).chain(k.passphrase_file.as_ref()));
    let accounts = raw.accounts.iter().flat_map(|a| a.public_keys.iter());
    let tls = raw
        .tls
        .iter()
        .flat_map(|t| [&t.certificate, &t.private_key]);
    let mut files: Vec<PathBuf> = keys
        .chain(accounts)
        .chain(tls)
        .map(|f| resolve(base, f))
        .collect();
    if let Some(intake) = &raw.intake {
        files.extend(crate::intake::files(intake, base));
    }
    files
}

/// Keeps a value, or records its problem.
fn take<T>(problems: &mut Vec<String>, r: Result<T, String>) -> Option<T> {
    r.map_err(|e| problems.push(e)).ok()
}

/// Keeps a value, or records all its problems.
fn take_all<T>(problems: &mut Vec<String>, r: Result<T, Vec<String>>) -> Option<T> {
    r.map_err(|e| problems.extend(e)).ok()
}

/// The longest any timeout may be: a day (far beyond any sane setting, and far from
/// overflowing a clock).
const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// A timeout in milliseconds: more than 0 and at most [`MAX_TIMEOUT_MS`].
fn bounded_timeout(name: &str, value: u64) -> Result<u64, String> {
    at_most_a_day(name, positive(name, value)?)
}

/// A duration in milliseconds of at most [`MAX_TIMEOUT_MS`].
fn at_most_a_day(name: &str, value: u64) -> Result<u64, String> {
    if value > MAX_TIMEOUT_MS {
        return Err(format!(
            "{name} must be at most {MAX_TIMEOUT_MS} (a day), not {value}"
        ));
    }
    Ok(value)
}

fn positive(name: &str, value: u64) -> Result<u64, String> {
    if value == 0 {
        Err(format!("{name} must be greater than 0"))
    } else {
        Ok(value)
    }
}

fn parse_upstream(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("upstream {text:?}: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "upstream {text:?}: the upstream must be an http:// or https:// URL"
        ));
    }
    if uri.host().is_none() {
        return Err(format!("upstream {text:?}: no host"));
    }
    if uri.query().is_some() {
        return Err(format!("upstream {text:?}: a base URL has no query"));
    }
    Ok(uri)
}

pub(crate) use hpke_keyfiles::resolve;

fn load_server_keys(raw: &[RawServerKey], base: &Path) -> Result<ServerKeys, Vec<String>> {
    let mut problems = Vec::new();
    if raw.is_empty() {
        problems.push("server_keys: at least one [[server_keys]] entry is required".into());
    }
    let mut ids = HashSet::new();
    let mut keys = Vec::new();
    let marked_primary = raw
        .iter()
        .filter(|k| k.state == Some(KeyState::Primary))
        .count();
    if marked_primary > 1 {
        problems.push(format!(
            "server_keys: {marked_primary} keys have state = \"primary\", at most one may"
        ));
    }
    // With no key marked primary, the first one not retired is.
    let implicit_primary = (marked_primary == 0)
        .then(|| raw.iter().position(|k| k.state != Some(KeyState::Retired)))
        .flatten();
    if raw.iter().all(|k| k.state == Some(KeyState::Retired)) && !raw.is_empty() {
        problems.push("server_keys: every key is retired; one must be primary".into());
    }
    for (i, entry) in raw.iter().enumerate() {
        if !ids.insert(entry.id) {
            problems.push(format!("server_keys: id {} appears twice", entry.id));
        }
        let state = match entry.state {
            Some(state) => state,
            None if implicit_primary == Some(i) => KeyState::Primary,
            None => KeyState::DecryptOnly,
        };
        let not_after = match entry.not_after.as_deref().map(parse_time).transpose() {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("server_keys id {}: not_after: {e}", entry.id));
                continue;
            }
        };
        // A retired key is a record only: its file need not exist any more.
        if state == KeyState::Retired {
            continue;
        }
        match load_server_key(entry, base) {
            Ok(key) => keys.push(
                key.with_lifecycle(state, not_after).with_ohttp_key_id(
                    entry
                        .ohttp_key_id
                        .unwrap_or(keys::default_ohttp_key_id(Some(entry.id))),
                ),
            ),
            Err(p) => problems.push(format!("server_keys id {}: {p}", entry.id)),
        }
    }
    // An OHTTP request names its key by an 8-bit id: two keys that may decrypt must not
    // share one.
    let mut ohttp_ids: HashMap<u8, u32> = HashMap::new();
    for entry in raw.iter().filter(|k| k.state != Some(KeyState::Retired)) {
        let ohttp_id = entry
            .ohttp_key_id
            .unwrap_or(keys::default_ohttp_key_id(Some(entry.id)));
        if let Some(other) = ohttp_ids.insert(ohttp_id, entry.id) {
            problems.push(format!(
                "server_keys: ids {other} and {} have the same ohttp_key_id {ohttp_id} (by default the low eight bits of id); set ohttp_key_id on one of them",
                entry.id
            ));
        }
    }
    // Keys past their `not_after` are never tried again, so only the others count.
    let now = std::time::SystemTime::now();
    for kem in [
        crate::envelope::Kem::X25519HkdfSha256,
        crate::envelope::Kem::XWing,
    ] {
        let live = keys
            .iter()
            .filter(|k| k.valid_at(now) && k.public_key().suite().kem == kem)
            .count();
        if live > keys::RAW_TRIALS_PER_KEM {
            problems.push(format!(
                "server_keys: {live} keys of KEM {} are live (neither retired nor past not_after); at most {} may be (a RAW envelope is tried against each): retire the oldest",
                kem.name(),
                keys::RAW_TRIALS_PER_KEM
            ));
        }
    }
    if problems.is_empty() {
        Ok(ServerKeys::new(keys))
    } else {
        Err(problems)
    }
}

/// An account's `request_suites` naming a suite no live server key has: no request
/// could ever use it, so the entry is a mistake (a missing `suite` on a key, a typo).
fn suites_without_server_keys(accounts: &[RawAccount], server_keys: &ServerKeys) -> Vec<String> {
    let now = std::time::SystemTime::now();
    let have: Vec<crate::envelope::Suite> = server_keys
        .iter()
        .filter(|k| k.valid_at(now))
        .map(|k| k.public_key().suite())
        .collect();
    let mut problems = Vec::new();
    for entry in accounts {
        for name in entry.request_suites.iter().flatten() {
            if let Ok(suite) = name.parse::<crate::envelope::Suite>()
                && !have.contains(&suite)
            {
                problems.push(format!(
                    "accounts {:?}: request_suites names {suite}, but no live [[server_keys]] entry has that suite",
                    entry.id
                ));
            }
        }
    }
    problems
}

/// Parses an RFC 3339 instant such as `2027-12-01T00:00:00Z`.
pub fn parse_time(text: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2027-12-01T00:00:00Z ({e})"))
}

fn load_server_key(entry: &RawServerKey, base: &Path) -> Result<ServerKey, String> {
    let path = resolve(base, &entry.private_key);
    let passphrase = read_passphrase(entry, base)?;
    let suite = match &entry.suite {
        None => crate::envelope::Suite::default(),
        Some(name) => name.parse().map_err(|e| format!("suite: {e}"))?,
    };
    let text = keys::read_secret_file(&path).map_err(|e| e.to_string())?;
    let loaded =
        keys::parse_private_key_for(&text, passphrase.as_deref().map(Vec::as_slice), Some(suite))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(crate::envelope::Prefix::Tink(tink_id)) = loaded.tink_prefix
        && tink_id != entry.id
    {
        return Err(format!(
            "{}: the Tink keyset's key id is {tink_id}, not {}",
            path.display(),
            entry.id
        ));
    }
    let key = ServerKey::new(Some(entry.id), loaded.key);
    Ok(match std::fs::metadata(&path).and_then(|m| m.modified()) {
        Ok(written_at) => key.with_written_at(written_at),
        Err(_) => key,
    })
}

fn read_passphrase(
    entry: &RawServerKey,
    base: &Path,
) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    let file = entry.passphrase_file.as_deref().map(|f| resolve(base, f));
    keys::read_passphrase(entry.passphrase_env.as_deref(), file.as_deref())
        .map_err(|e| format!("passphrase: {e}"))
}

fn load_accounts(raw: &[RawAccount], base: &Path) -> Result<Accounts, Vec<String>> {
    let mut problems = Vec::new();
    let mut ids = HashSet::new();
    let mut accounts = Vec::new();
    for entry in raw {
        let id = &entry.id;
        if !ids.insert(id.clone()) {
            problems.push(format!("accounts: id {id:?} appears twice"));
        }
        if !valid_account_id(id) {
            problems.push(format!(
                "accounts: id {id:?} must be 1 to {MAX_ACCOUNT_ID_LEN} visible ASCII characters"
            ));
        }
        if entry.public_keys.len() > MAX_PUBLIC_KEYS {
            problems.push(format!(
                "accounts {id:?}: {} public keys, at most {MAX_PUBLIC_KEYS} are allowed",
                entry.public_keys.len()
            ));
        }
        if entry.encryption && entry.public_keys.is_empty() {
            problems.push(format!(
                "accounts {id:?}: encryption is on but no public_keys are given to encrypt responses"
            ));
        }
        let declared = match entry.public_key_suite.as_deref().map(str::parse) {
            None => None,
            Some(Ok(suite)) => Some(suite),
            Some(Err(e)) => {
                problems.push(format!("accounts {id:?}: public_key_suite: {e}"));
                None
            }
        };
        let mut keys = Vec::new();
        for file in &entry.public_keys {
            let path = resolve(base, file);
            match keys::read_public_file(&path)
                .map_err(keys::KeyError::from)
                .and_then(|t| Ok(keys::parse_public_key_for(&t, declared)?))
            {
                Ok((key, prefix)) => keys.push(RecipientKey { key, prefix }),
                Err(e) => problems.push(format!("accounts {id:?}: {}: {e}", path.display())),
            }
        }
        let mut account = Account::new(id.clone(), entry.encryption, keys);
        if let Some(names) = &entry.request_suites {
            let mut suites = Vec::new();
            for name in names {
                match name.parse() {
                    Ok(suite) => suites.push(suite),
                    Err(e) => problems.push(format!("accounts {id:?}: request_suites: {e}")),
                }
            }
            if names.is_empty() {
                problems.push(format!(
                    "accounts {id:?}: request_suites is empty (leave it out to accept any server key's suite)"
                ));
            }
            account = account.with_request_suites(suites);
        }
        if let Some(window) = entry.replay_window_s {
            if !(2..=3600).contains(&window) {
                problems.push(format!(
                    "accounts {id:?}: replay_window_s: {window} is outside 2..=3600"
                ));
            }
            account = account.with_replay_window(Duration::from_secs(window));
        }
        accounts.push(account);
    }
    if problems.is_empty() {
        Ok(Accounts::new(accounts))
    } else {
        Err(problems)
    }
}

/// The longest account id accepted, in bytes.
pub const MAX_ACCOUNT_ID_LEN: usize = 256;

/// An account id is 1 to [`MAX_ACCOUNT_ID_LEN`] visible ASCII characters.
pub fn valid_account_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ACCOUNT_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}
