//! hpke-gateway: a reverse proxy that adds end-to-end HPKE payload encryption
//! (RFC 9180, in Google Tink's wire format) in front of an existing HTTP API.
//!
//! - [`envelope`]: the wire format and key formats, pure bytes in and out (the
//!   `hpke-envelope` crate in `crates/envelope`, re-exported).
//! - [`keys`]: key files (PKCS#8, SPKI, raw, Tink keysets) and the server keyring.
//! - [`accounts`]: which accounts use encryption, and their response keys.
//! - [`config`]: the TOML file, checked once into a [`config::Config`].
//! - [`middleware`]: the tower layer that decrypts requests and encrypts responses.
//! - [`proxy`]: forwarding to the upstream.
//! - [`error`]: the one place where failures become responses.
//! - [`access`]: the per-request log line and request id.
//! - [`limits`]: header size, concurrency and buffer budget limits; [`linger`]: lingering close.
//! - [`metrics`]: Prometheus metrics; [`admin`]: the health, readiness and metrics listener.
//! - [`publish`]: the published keys at `/.well-known/hpke-keys`.
//! - [`reload`]: swapping in a changed configuration while serving; [`rotate`]: `keys rotate`.
//! - [`state`]: what a reload replaces ([`state::LiveState`]) and what needs a restart
//!   ([`state::Fixed`]).
//! - [`server`]: the routers and the listeners; [`tls`]: rustls on both sides.
//! - [`intake`]: the PGP-encrypted file intake (SFTP uploads, manifests, ingestion).
//! - [`sample_upstream`] and [`demo`]: the embedded default.
//! - `fuzzing`: the fuzz targets' bodies (hidden, not an API; see `docs/fuzzing.md`).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod accounts;
pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod intake;
pub mod keys;
pub mod limits;
pub mod linger;
pub mod logging;
pub mod metrics;
pub mod middleware;
pub mod ohttp;
pub mod proxy;
pub mod publish;
pub mod reload;
pub mod replay;
pub mod rotate;
pub mod sample_upstream;
pub mod server;
pub mod state;
pub mod tls;

pub use hpke_envelope as envelope;
pub use server::{app, run};

/// The media type that marks an encrypted body (`Content-Type`) or asks for an
/// encrypted response (`Accept`).
pub const HPKE_MEDIA_TYPE: &str = "application/octet-stream+hpke";

pub use error::{BoxError, StartError};
