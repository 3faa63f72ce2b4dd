//! Key formats: parsing and writing the files operators and clients use, as bytes.
//! No file I/O: the caller reads the file (and checks its permissions).
//!
//! Private keys: PKCS#8 PEM as `openssl genpkey -algorithm X25519` writes it (for X-Wing:
//! the draft's OID `1.3.6.1.4.1.62253.25722` with the 32-byte seed as the private key
//! octets), passphrase-encrypted PKCS#8 PEM (`-----BEGIN ENCRYPTED PRIVATE KEY-----`), a
//! cleartext Tink private keyset JSON. Never raw bytes: 32 of them are also a valid
//! X25519 public key, and a tool that accepts both could print a private key as public.
//!
//! Public keys: SPKI PEM, the raw bytes in base64 (32 for X25519, 1216 for X-Wing), or a
//! Tink public keyset JSON.
//!
//! A Tink keyset names its suite. PEM and raw keys name only their KEM: the suite is the
//! one declared by the caller (configuration, `--suite`), else the KEM's default
//! (`x25519-aes-256-gcm`, `xwing-aes-256-gcm`).

mod tink;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use der::asn1::{BitStringRef, OctetStringRef};
use der::{Decode as _, Encode as _, EncodePem as _, pem::LineEnding};
use pkcs8::{EncryptedPrivateKeyInfoRef, PrivateKeyInfoRef};
use spki::{AlgorithmIdentifierRef, ObjectIdentifier, SubjectPublicKeyInfoRef};
use zeroize::Zeroizing;

pub use tink::{private_keyset_json, public_keyset_json, public_keyset_json_of};

use crate::{Kem, Prefix, PrivateKey, PublicKey, PublicKeyError, Suite};

/// `id-X25519` (RFC 8410).
const X25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
/// X-Wing's OID (draft-connolly-cfrg-xwing-kem-06 §6).
const XWING_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.62253.25722");

impl Kem {
    fn oid(self) -> ObjectIdentifier {
        match self {
            Kem::X25519HkdfSha256 => X25519_OID,
            Kem::XWing => XWING_OID,
        }
    }

    fn of_oid(oid: ObjectIdentifier) -> Result<Kem, FormatError> {
        match oid {
            X25519_OID => Ok(Kem::X25519HkdfSha256),
            XWING_OID => Ok(Kem::XWing),
            other => Err(FormatError::WrongAlgorithm(other.to_string())),
        }
    }
}

/// The suite of a key of `kem` when the caller declared `declared`: it must be of the
/// same KEM.
fn suite_for(kem: Kem, declared: Option<Suite>) -> Result<Suite, FormatError> {
    match declared {
        None => Ok(kem.default_suite()),
        Some(s) if s.kem == kem => Ok(s),
        Some(s) => Err(FormatError::SuiteMismatch {
            file: kem.name().into(),
            declared: s,
        }),
    }
}

/// A key read with a suite declared for it: a Tink keyset's own suite must be that one.
fn check_declared(found: Suite, declared: Option<Suite>) -> Result<(), FormatError> {
    match declared {
        Some(s) if s != found => Err(FormatError::SuiteMismatch {
            file: found.name().into(),
            declared: s,
        }),
        _ => Ok(()),
    }
}

/// Why key bytes could not be used. Messages name the problem, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// None of the accepted formats.
    #[error("unrecognised key format (expected {expected})")]
    Format {
        /// The formats that would have been accepted.
        expected: &'static str,
    },
    /// PEM or DER that does not decode.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// A key for another algorithm.
    #[error("the key is neither an X25519 nor an X-Wing key (algorithm {0})")]
    WrongAlgorithm(String),
    /// The file's key is of another suite than the one declared for it.
    #[error("the key file holds a key of {file}, but suite {declared} is declared for it")]
    SuiteMismatch {
        /// What the file holds (a suite for a Tink keyset, else a KEM).
        file: String,
        /// The suite declared by the configuration or the command line.
        declared: Suite,
    },
    /// An encrypted private key and no passphrase configured.
    #[error("the private key is encrypted; configure passphrase_env or passphrase_file for it")]
    PassphraseRequired,
    /// The passphrase did not decrypt the key.
    #[error(
        "the passphrase does not decrypt the private key (or its encryption scheme is not supported)"
    )]
    BadPassphrase,
    /// A bad public key value.
    #[error(transparent)]
    PublicKey(#[from] PublicKeyError),
    /// A Tink keyset problem.
    #[error("Tink keyset: {0}")]
    Tink(String),
    /// A Tink key for another HPKE suite.
    #[error("unsupported HPKE parameters: {0}")]
    UnsupportedParameters(String),
}

const PRIVATE_FORMATS: &str = "PKCS#8 PEM, encrypted PKCS#8 PEM, a Tink private keyset JSON, or 32 raw bytes in base64 with a declared suite";
const PUBLIC_FORMATS: &str =
    "SPKI PEM, raw bytes in base64 (32 for X25519, 1216 for X-Wing), or a Tink public keyset JSON";

// === private keys ===

/// A private key as read from a file, with the Tink prefix its keyset declares (if any).
#[derive(Debug)]
pub struct LoadedPrivateKey {
    /// The key.
    pub key: PrivateKey,
    /// For a Tink keyset: its output prefix. `None` for PEM files, which carry no id.
    pub tink_prefix: Option<Prefix>,
}

/// Parses a private key in any accepted format, with its KEM's default suite unless it
/// names its own. `passphrase` is used only for encrypted PKCS#8.
pub fn parse_private_key(
    text: &[u8],
    passphrase: Option<&[u8]>,
) -> Result<LoadedPrivateKey, FormatError> {
    parse_private_key_for(text, passphrase, None)
}

/// [`parse_private_key`] with a declared suite: a Tink keyset must name that suite, a
/// PEM key must be of its KEM.
pub fn parse_private_key_for(
    text: &[u8],
    passphrase: Option<&[u8]>,
    suite: Option<Suite>,
) -> Result<LoadedPrivateKey, FormatError> {
    let trimmed = text.trim_ascii();
    if trimmed.starts_with(b"{") {
        let (key, prefix) = tink::parse_private_keyset(trimmed)?;
        check_declared(key.suite(), suite)?;
        return Ok(LoadedPrivateKey {
            key,
            tink_prefix: Some(prefix),
        });
    }
    let pem = std::str::from_utf8(trimmed).map_err(|_| FormatError::Format {
        expected: PRIVATE_FORMATS,
    })?;
    let (label, doc) = pkcs8::SecretDocument::from_pem(pem).map_err(|_| FormatError::Format {
        expected: PRIVATE_FORMATS,
    })?;
    let key = match label {
        "PRIVATE KEY" => private_key_from_pkcs8(doc.as_bytes(), suite)?,
        "ENCRYPTED PRIVATE KEY" => {
            let passphrase = passphrase.ok_or(FormatError::PassphraseRequired)?;
            let encrypted = EncryptedPrivateKeyInfoRef::try_from(doc.as_bytes()).map_err(|e| {
                FormatError::Malformed {
                    what: "encrypted PKCS#8",
                    detail: e.to_string(),
                }
            })?;
            check_kdf_cost(&encrypted.encryption_algorithm)?;
            let plain = encrypted
                .decrypt(passphrase)
                .map_err(|_| FormatError::BadPassphrase)?;
            private_key_from_pkcs8(plain.as_bytes(), suite)?
        }
        _ => {
            return Err(FormatError::Format {
                expected: PRIVATE_FORMATS,
            });
        }
    };
    Ok(LoadedPrivateKey {
        key,
        tink_prefix: None,
    })
}

/// The most key derivation work an encrypted private key file may ask for. OpenSSL and
/// [`private_key_encrypted_pem`] write PBKDF2 with 2048 iterations or scrypt with
/// N = 2^14, r = 8, p = 1 (16 MiB); OpenSSL itself refuses scrypt above 32 MiB.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
/// scrypt's memory, `128 * r * N` bytes.
const MAX_SCRYPT_MEMORY: u64 = 256 << 20;
/// scrypt's work, `128 * r * N * p`.
const MAX_SCRYPT_WORK: u64 = 1 << 30;

/// Refuses an encrypted PKCS#8 file whose key derivation parameters would take minutes
/// and gigabytes before the passphrase is even checked (scrypt's r and p go to 65535).
/// Found by the `key_files` fuzz target; input kept in `fuzz/regressions/key_files/`.
fn check_kdf_cost(scheme: &pkcs8::pkcs5::EncryptionScheme) -> Result<(), FormatError> {
    use pkcs8::pkcs5::{EncryptionScheme, pbes2::Kdf};
    let EncryptionScheme::Pbes2(params) = scheme else {
        return Ok(());
    };
    let within = match &params.kdf {
        Kdf::Pbkdf2(p) => p.iteration_count <= MAX_PBKDF2_ITERATIONS,
        Kdf::Scrypt(s) => {
            let memory = 128u64
                .saturating_mul(u64::from(s.block_size))
                .saturating_mul(s.cost_parameter);
            memory <= MAX_SCRYPT_MEMORY
                && memory.saturating_mul(u64::from(s.parallelization)) <= MAX_SCRYPT_WORK
        }
        _ => true,
    };
    if within {
        Ok(())
    } else {
        Err(FormatError::Malformed {
            what: "encrypted PKCS#8",
            detail: format!(
                "its key derivation asks for more than {MAX_PBKDF2_ITERATIONS} PBKDF2 iterations or {} MiB of scrypt memory; re-encrypt it with the defaults of openssl pkcs8 -topk8",
                MAX_SCRYPT_MEMORY >> 20
            ),
        })
    }
}

fn private_key_from_pkcs8(der: &[u8], suite: Option<Suite>) -> Result<PrivateKey, FormatError> {
    let info = PrivateKeyInfoRef::try_from(der).map_err(|e| FormatError::Malformed {
        what: "PKCS#8",
        detail: e.to_string(),
    })?;
    let kem = Kem::of_oid(info.algorithm.oid)?;
    let suite = suite_for(kem, suite)?;
    let key_bytes = match kem {
        // RFC 8410 §7: CurvePrivateKey ::= OCTET STRING, inside the PKCS#8 privateKey OCTET STRING.
        Kem::X25519HkdfSha256 => <&OctetStringRef>::from_der(info.private_key.as_bytes())
            .map_err(|e| FormatError::Malformed {
                what: "X25519 private key",
                detail: e.to_string(),
            })?
            .as_bytes(),
        // X-Wing: the 32-byte seed itself.
        Kem::XWing => info.private_key.as_bytes(),
    };
    let key = PrivateKey::from_bytes_for(suite, key_bytes).map_err(|e| FormatError::Malformed {
        what: "private key",
        detail: e.to_string(),
    })?;
    if let Some(public) = info.public_key {
        // PKCS#8 v2 (OneAsymmetricKey) may carry the public key: it must match.
        if public.as_bytes() != Some(key.public_key().to_bytes().as_slice()) {
            return Err(FormatError::Malformed {
                what: "PKCS#8",
                detail: "the embedded public key does not match the private key".into(),
            });
        }
    }
    Ok(key)
}

/// Writes a private key as unencrypted PKCS#8 PEM, the form `openssl genpkey -algorithm
/// X25519` writes (X-Wing: its OID and the seed). The suite's AEAD is not recorded.
pub fn private_key_pem(key: &PrivateKey) -> Result<Zeroizing<String>, FormatError> {
    with_private_key_info(key, |info| {
        info.to_pem(LineEnding::LF)
            .map(Zeroizing::new)
            .map_err(der_error)
    })
}

/// Writes a private key as encrypted PKCS#8 PEM (PBES2: scrypt and AES-256-CBC), which
/// `openssl pkey -passin` reads.
pub fn private_key_encrypted_pem(
    key: &PrivateKey,
    passphrase: &[u8],
) -> Result<Zeroizing<String>, FormatError> {
    with_private_key_info(key, |info| {
        let doc = info
            .encrypt(passphrase)
            .map_err(|e| FormatError::Malformed {
                what: "encrypted PKCS#8",
                detail: e.to_string(),
            })?;
        doc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
            .map_err(der_error)
    })
}

fn with_private_key_info<T>(
    key: &PrivateKey,
    f: impl FnOnce(PrivateKeyInfoRef<'_>) -> Result<T, FormatError>,
) -> Result<T, FormatError> {
    let scalar = key.to_bytes();
    let kem = key.suite().kem;
    let inner = Zeroizing::new(match kem {
        Kem::X25519HkdfSha256 => OctetStringRef::new(scalar.as_slice())
            .and_then(|o| o.to_der())
            .map_err(der_error)?,
        Kem::XWing => scalar.to_vec(),
    });
    f(PrivateKeyInfoRef::new(
        AlgorithmIdentifierRef {
            oid: kem.oid(),
            parameters: None,
        },
        OctetStringRef::new(&inner).map_err(der_error)?,
    ))
}

fn der_error(e: der::Error) -> FormatError {
    FormatError::Malformed {
        what: "DER",
        detail: e.to_string(),
    }
}

// === public keys ===

/// Parses a public key in any accepted format, with its KEM's default suite unless it
/// names its own. The prefix is `Raw` unless the key is a Tink keyset of output prefix `TINK`.
pub fn parse_public_key(text: &[u8]) -> Result<(PublicKey, Prefix), FormatError> {
    parse_public_key_for(text, None)
}

/// [`parse_public_key`] with a declared suite: a Tink keyset must name that suite, a PEM
/// or raw key must be of its KEM.
pub fn parse_public_key_for(
    text: &[u8],
    suite: Option<Suite>,
) -> Result<(PublicKey, Prefix), FormatError> {
    let trimmed = text.trim_ascii();
    if trimmed.starts_with(b"{") {
        let (key, prefix) = tink::parse_public_keyset(trimmed)?;
        check_declared(key.suite(), suite)?;
        return Ok((key, prefix));
    }
    if trimmed.starts_with(b"-----BEGIN") {
        let pem = std::str::from_utf8(trimmed).map_err(|_| FormatError::Format {
            expected: PUBLIC_FORMATS,
        })?;
        let (label, doc) = der::Document::from_pem(pem).map_err(|e| FormatError::Malformed {
            what: "PEM",
            detail: e.to_string(),
        })?;
        if label != "PUBLIC KEY" {
            return Err(FormatError::Format {
                expected: PUBLIC_FORMATS,
            });
        }
        let spki = SubjectPublicKeyInfoRef::try_from(doc.as_bytes()).map_err(|e| {
            FormatError::Malformed {
                what: "SPKI",
                detail: e.to_string(),
            }
        })?;
        let suite = suite_for(Kem::of_oid(spki.algorithm.oid)?, suite)?;
        let bytes = spki
            .subject_public_key
            .as_bytes()
            .ok_or(FormatError::Malformed {
                what: "SPKI",
                detail: "the public key bit string has unused bits".into(),
            })?;
        return Ok((PublicKey::from_bytes_for(suite, bytes)?, Prefix::Raw));
    }
    let text = std::str::from_utf8(trimmed).map_err(|_| FormatError::Format {
        expected: PUBLIC_FORMATS,
    })?;
    let raw = STANDARD.decode(text).map_err(|_| FormatError::Format {
        expected: PUBLIC_FORMATS,
    })?;
    // The length names the KEM; a declared suite must agree with it.
    let kem = if raw.len() == Kem::XWing.public_key_len() {
        Kem::XWing
    } else {
        Kem::X25519HkdfSha256
    };
    let suite = suite_for(kem, suite)?;
    Ok((PublicKey::from_bytes_for(suite, &raw)?, Prefix::Raw))
}

/// Writes a public key as SPKI PEM.
pub fn public_key_pem(key: &PublicKey) -> Result<String, FormatError> {
    let bytes = key.to_bytes();
    let spki = SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: key.suite().kem.oid(),
            parameters: None,
        },
        subject_public_key: BitStringRef::from_bytes(&bytes).map_err(der_error)?,
    };
    spki.to_pem(LineEnding::LF).map_err(der_error)
}

/// Writes a public key as base64 of its raw bytes.
pub fn public_key_raw_base64(key: &PublicKey) -> String {
    STANDARD.encode(key.to_bytes())
}

// === the server keyring ===

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs8_round_trip() {
        let key = PrivateKey::generate();
        let pem = private_key_pem(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let loaded = parse_private_key(pem.as_bytes(), None).unwrap();
        assert_eq!(loaded.key.public_key(), key.public_key());
        assert_eq!(loaded.tink_prefix, None);
    }

    #[test]
    fn encrypted_pkcs8_round_trip() {
        let key = PrivateKey::generate();
        let pem = private_key_encrypted_pem(&key, b"pass phrase").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
        let loaded = parse_private_key(pem.as_bytes(), Some(b"pass phrase")).unwrap();
        assert_eq!(loaded.key.public_key(), key.public_key());
        assert!(parse_private_key(pem.as_bytes(), Some(b"other")).is_err());
        assert!(parse_private_key(pem.as_bytes(), None).is_err());
    }

    #[test]
    fn spki_and_raw_round_trip() {
        let pk = PrivateKey::generate().public_key();
        let pem = public_key_pem(&pk).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(
            parse_public_key(pem.as_bytes()).unwrap(),
            (pk.clone(), Prefix::Raw)
        );
        let raw = public_key_raw_base64(&pk);
        assert_eq!(parse_public_key(raw.as_bytes()).unwrap(), (pk, Prefix::Raw));
    }

    #[test]
    fn every_suite_round_trips_through_pem_and_raw_with_its_suite_declared() {
        for suite in Suite::ALL {
            let key = PrivateKey::generate_for(*suite);
            let pem = private_key_pem(&key).unwrap();
            let loaded = parse_private_key_for(pem.as_bytes(), None, Some(*suite)).unwrap();
            assert_eq!(loaded.key.public_key(), key.public_key(), "{suite}");
            // Raw private bytes are not a private key format (they read as a public key).
            let raw = Zeroizing::new(STANDARD.encode(*key.to_bytes()));
            assert!(matches!(
                parse_private_key_for(raw.as_bytes(), None, Some(*suite)),
                Err(FormatError::Format { .. })
            ));
            let pk = key.public_key();
            for text in [public_key_pem(&pk).unwrap(), public_key_raw_base64(&pk)] {
                let (got, _) = parse_public_key_for(text.as_bytes(), Some(*suite)).unwrap();
                assert_eq!(got, pk, "{suite}");
            }
        }
        // A key of one KEM declared as another's, and a Tink keyset naming another suite.
        let xwing = PrivateKey::generate_for(Suite::XWING_AES_256_GCM);
        let pem = private_key_pem(&xwing).unwrap();
        let err = parse_private_key_for(pem.as_bytes(), None, Some(Suite::X25519_AES_256_GCM))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("xwing") && err.contains("x25519-aes-256-gcm"),
            "{err}"
        );
        let tink = public_keyset_json(&PrivateKey::generate().public_key(), Prefix::Raw, 1);
        let err = parse_public_key_for(tink.as_bytes(), Some(Suite::X25519_CHACHA20_POLY1305))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x25519-aes-256-gcm"), "{err}");
    }

    #[test]
    fn garbage_is_refused_with_the_formats_named() {
        let err = parse_public_key(b"hello").unwrap_err().to_string();
        assert!(err.contains("SPKI PEM"), "{err}");
        let err = parse_private_key(b"hello", None).unwrap_err().to_string();
        assert!(err.contains("PKCS#8"), "{err}");
        let low = STANDARD.encode([0u8; 32]);
        assert!(matches!(
            parse_public_key(low.as_bytes()),
            Err(FormatError::PublicKey(PublicKeyError::LowOrder))
        ));
    }
}
