//! TLS with rustls (the *ring* provider): termination on the public listener, and
//! HTTPS to the upstream.
//!
//! - Public listener: the certificate chain and private key come from PEM files
//!   (`[tls] certificate`, `private_key`); ALPN offers HTTP/2 and HTTP/1.1. A reload
//!   swaps the certificate in place ([`CertResolver`]): new handshakes use the new one.
//! - Upstream: `https://` upstreams are verified against the system roots, or against
//!   `[upstream_tls] ca_bundle` when given; `client_certificate` and `client_key` add a
//!   client certificate for mutual TLS.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::keys;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = keys::read_secret_file(path).map_err(|e| e.to_string())?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: no usable PEM private key ({e})", path.display()))
}

/// Loads a certificate chain and its private key (owner-only file) and checks that
/// they belong together.
pub fn load_certified_key(certificate: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let certs = certificates(certificate)?;
    let key = private_key(key)?;
    let certified = CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| format!("{}: {e}", certificate.display()))?;
    Ok(Arc::new(certified))
}

/// The public listener's certificate, replaceable while serving.
#[derive(Debug)]
pub struct CertResolver(ArcSwap<CertifiedKey>);

impl CertResolver {
    /// A resolver serving `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self(ArcSwap::new(key))
    }

    /// Serves `key` from the next handshake on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.0.store(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The rustls server configuration of the public listener: ALPN `h2`, `http/1.1`.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The rustls client configuration for an HTTPS upstream: the system roots or
/// `ca_bundle`, and an optional client certificate.
pub fn upstream_client_config(
    ca_bundle: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_bundle {
        Some(path) => {
            for cert in certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system store may hold a few certificates rustls cannot use.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system root certificates found; set upstream_tls.ca_bundle".into());
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    // No ALPN here: the connector (hyper-rustls) sets it, and refuses a preset one.
    match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| format!("{}: {e}", cert.display())),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A client configuration that trusts nothing, for connectors that must have one but
/// only ever make `http://` connections.
pub fn upstream_client_config_for_http() -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}
