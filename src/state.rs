//! The gateway's state, in two types: [`LiveState`], what a reload replaces (keys,
//! accounts, the account header, body limits, timeouts), read by every request from
//! [`SharedState`]; and [`Fixed`], what only a restart changes (listeners, the upstream
//! and its TLS, connection and concurrency limits), which a reload compares and keeps.
//!
//! Whatever reads a reloadable setting reads it from the live state of the request it
//! serves (the middleware, the access log, the proxy's response timeout), so a reload
//! applies to every part at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, Uri};

use crate::accounts::Accounts;
use crate::config::{self, Config};
use crate::keys::ServerKeys;

/// What a reload replaces: keys, accounts, the account header, body limits and
/// timeouts. Every request reads the one it started with to the end.
#[derive(Debug)]
pub struct LiveState {
    pub(crate) server_keys: ServerKeys,
    pub(crate) accounts: Accounts,
    pub(crate) account_header: HeaderName,
    pub(crate) account_header_spelling: Box<str>,
    pub(crate) max_encrypted_body_bytes: u64,
    pub(crate) max_response_body_bytes: u64,
    pub(crate) request_body_timeout: Duration,
    pub(crate) request_body_idle_timeout: Duration,
    pub(crate) request_buffer_bytes: u64,
    pub(crate) underscores_in_headers: bool,
    pub(crate) upstream_timeout: Duration,
    pub(crate) plaintext_content_type: HeaderValue,
    pub(crate) keys_max_age: Duration,
}

/// A response extension naming the request's account when it is a configured one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownAccount(pub String);

/// The state all workers read, swapped whole by a reload: a request keeps the state it
/// started with to the end.
pub type SharedState = Arc<ArcSwap<LiveState>>;

impl LiveState {
    /// State with the default header, limits and plaintext content type.
    pub fn new(server_keys: ServerKeys, accounts: Accounts) -> Self {
        Self {
            server_keys,
            accounts,
            // `config::DEFAULT_ACCOUNT_HEADER`, lowercased as `HeaderName` holds names.
            account_header: HeaderName::from_static("x-clevertap-account-id"),
            account_header_spelling: config::DEFAULT_ACCOUNT_HEADER.into(),
            max_encrypted_body_bytes: config::DEFAULT_MAX_ENCRYPTED_BODY_BYTES,
            max_response_body_bytes: config::DEFAULT_MAX_RESPONSE_BODY_BYTES,
            request_body_timeout: Duration::from_millis(config::DEFAULT_REQUEST_BODY_TIMEOUT_MS),
            request_body_idle_timeout: Duration::from_millis(
                config::DEFAULT_REQUEST_BODY_IDLE_TIMEOUT_MS,
            ),
            request_buffer_bytes: config::DEFAULT_REQUEST_BUFFER_BYTES,
            underscores_in_headers: false,
            upstream_timeout: Duration::from_millis(config::DEFAULT_UPSTREAM_TIMEOUT_MS),
            plaintext_content_type: HeaderValue::from_static(
                config::DEFAULT_PLAINTEXT_CONTENT_TYPE,
            ),
            keys_max_age: Duration::from_secs(config::DEFAULT_KEYS_MAX_AGE_S),
        }
    }

    /// State from a checked configuration.
    pub fn from_config(config: Config) -> Self {
        Self {
            server_keys: config.server_keys,
            accounts: config.accounts,
            account_header: config.account_header,
            account_header_spelling: config.account_header_spelling.into(),
            max_encrypted_body_bytes: config.max_encrypted_body_bytes,
            max_response_body_bytes: config.max_response_body_bytes,
            request_body_timeout: config.request_body_timeout,
            request_body_idle_timeout: config.request_body_idle_timeout,
            request_buffer_bytes: config.request_buffer_bytes,
            underscores_in_headers: config.underscores_in_headers,
            upstream_timeout: config.upstream_timeout,
            plaintext_content_type: config.plaintext_content_type,
            keys_max_age: config.ops.keys_max_age,
        }
    }

    /// The gateway's private keys.
    pub fn server_keys(&self) -> &ServerKeys {
        &self.server_keys
    }

    /// The accounts.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Upper bound of `Cache-Control: max-age` on the published keys.
    pub fn keys_max_age(&self) -> Duration {
        self.keys_max_age
    }

    /// The header that names the account (also HPKE `info`).
    pub fn account_header(&self) -> &HeaderName {
        &self.account_header
    }

    /// How long the upstream may take to answer a request's head.
    pub fn upstream_timeout(&self) -> Duration {
        self.upstream_timeout
    }
}

/// What only a restart changes. A reload compares the new file's values with the
/// running ones and, where they differ, logs which keep their running value.
#[derive(Debug, Clone, PartialEq)]
pub struct Fixed {
    listen: SocketAddr,
    upstream: Uri,
    upstream_connect_timeout: Duration,
    admin_listen: Option<SocketAddr>,
    max_header_bytes: usize,
    header_timeout: Duration,
    max_concurrent_requests: usize,
    buffer_budget_bytes: u64,
    buffer_wait: Duration,
    max_connections: usize,
    send_timeout: Duration,
    shutdown_grace: Duration,
    reload_poll: Option<Duration>,
    metrics_account_labels: bool,
    tls: bool,
    upstream_tls: bool,
    intake: Option<String>,
    ohttp: Option<crate::config::Ohttp>,
    replay: crate::config::ReplayStore,
}

impl Fixed {
    /// The restart-only settings of `config`.
    pub fn of(config: &Config) -> Self {
        let ops = &config.ops;
        Self {
            listen: config.listen,
            upstream: config.upstream.clone(),
            upstream_connect_timeout: config.upstream_connect_timeout,
            admin_listen: ops.admin_listen,
            max_header_bytes: ops.max_header_bytes,
            header_timeout: ops.header_timeout,
            max_concurrent_requests: ops.max_concurrent_requests,
            buffer_budget_bytes: ops.buffer_budget_bytes,
            buffer_wait: ops.buffer_wait,
            max_connections: ops.max_connections,
            send_timeout: ops.send_timeout,
            shutdown_grace: ops.shutdown_grace,
            reload_poll: ops.reload_poll,
            metrics_account_labels: ops.metrics_account_labels,
            tls: config.tls.is_some(),
            upstream_tls: config.upstream_tls.is_some(),
            intake: config.intake.as_ref().map(crate::intake::fixed_summary),
            ohttp: config.ohttp.clone(),
            replay: config.replay.clone(),
        }
    }

    /// The configuration keys whose values differ between `self` and `other`.
    pub fn differences(&self, other: &Fixed) -> Vec<&'static str> {
        let mut names = Vec::new();
        macro_rules! compare {
            ($($field:ident => $name:literal),* $(,)?) => {
                $(if self.$field != other.$field { names.push($name); })*
            };
        }
        compare!(
            listen => "listen",
            upstream => "upstream",
            upstream_connect_timeout => "upstream_connect_timeout_ms",
            admin_listen => "admin_listen",
            max_header_bytes => "max_header_bytes",
            header_timeout => "header_timeout_ms",
            max_concurrent_requests => "max_concurrent_requests",
            buffer_budget_bytes => "buffer_budget_bytes",
            buffer_wait => "buffer_wait_ms",
            max_connections => "max_connections",
            send_timeout => "send_timeout_ms",
            shutdown_grace => "shutdown_grace_ms",
            reload_poll => "reload_poll_ms",
            metrics_account_labels => "metrics_account_labels",
            tls => "tls (on or off; a new certificate reloads)",
            upstream_tls => "upstream_tls",
            intake => "intake (state_dir, smtp, print_mail, webhook_url)",
            ohttp => "ohttp (enabled, path)",
            replay => "replay (store, store_timeout_ms, store_unavailable, key_prefix)",
        );
        names
    }
}
