//! The wire envelope: HPKE (RFC 9180) base mode in the four suites of Google Tink's HPKE
//! templates ([`Suite::ALL`]: DHKEM(X25519) or X-Wing, HKDF-SHA256, AES-128-GCM,
//! AES-256-GCM or ChaCha20-Poly1305), framed exactly as Tink's `HybridEncrypt` frames it.
//!
//! ```text
//! ciphertext = [0x01 || key_id (u32, big-endian)]   only for Tink keys of output prefix TINK
//!              || enc (Nenc bytes: 32 for X25519, 1120 for X-Wing)
//!              || AEAD ciphertext || AEAD tag (16 bytes)
//! ```
//!
//! A key carries its suite (as a Tink key carries its `HpkeParams`): [`seal`] uses the
//! recipient's, [`open`] the private key's.
//!
//! The AEAD's associated data is always empty and `info` is the account id, as
//! Tink's `HybridEncrypt::encrypt(plaintext, contextInfo)` does.
//!
//! This module is pure: bytes in, bytes out, no I/O and no HTTP types, so test
//! vectors and fuzzers can call it directly.
//!
//! ```
//! use hpke_envelope::{self as envelope, Prefix, PrivateKey};
//!
//! let sk = PrivateKey::generate();
//! let pk = sk.public_key();
//! let sealed = envelope::seal(&pk, Prefix::Tink(7), b"ACCT-1", b"{\"d\":[]}").unwrap();
//! let (prefix, rest) = envelope::split_prefix(&sealed);
//! assert_eq!(prefix, Prefix::Tink(7));
//! let mut buf = rest.to_vec();
//! let plaintext = envelope::open_in_place(&sk, b"ACCT-1", &mut buf).unwrap();
//! assert_eq!(plaintext, b"{\"d\":[]}");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::fmt;

use rand_core::CryptoRng;
use zeroize::ZeroizeOnDrop;

pub mod formats;
pub mod ohttp;
mod schedule;
pub mod suite;
mod xwing;
use schedule::Dh as _;

pub use suite::{Aead, Kem, Suite};

// The one seam between the wire format and the primitives: a backend provides a
// private key type, base-mode sender/receiver setup (RFC 9180 §5.1) over the shared
// key schedule, and in-place AEAD.
#[cfg(feature = "aws-lc")]
#[path = "aws_lc.rs"]
mod backend;
#[cfg(not(feature = "aws-lc"))]
#[path = "rustcrypto.rs"]
mod backend;

/// The crypto backend this build uses: `rustcrypto` (x25519-dalek, hkdf, aes-gcm; this
/// crate's default) or `aws-lc` (cargo feature, which the gateway turns on by default).
pub const BACKEND: &str = backend::NAME;
/// Whether a failed open leaves the buffer as it was (so another key may be tried on it).
pub const OPEN_KEEPS_INPUT_ON_FAILURE: bool = backend::OPEN_KEEPS_INPUT_ON_FAILURE;

/// Length of the AEAD tag (`Nt`, RFC 9180 §7.3): 16 bytes for every AEAD here.
pub const TAG_LEN: usize = 16;
const _: () = {
    assert!(Aead::Aes128Gcm.tag_len() == TAG_LEN);
    assert!(Aead::Aes256Gcm.tag_len() == TAG_LEN);
    assert!(Aead::ChaCha20Poly1305.tag_len() == TAG_LEN);
};
/// Length of a Tink `TINK` output prefix: one version byte and a big-endian key id.
pub const TINK_PREFIX_LEN: usize = 5;
/// The first byte of a Tink `TINK` output prefix.
pub const TINK_START_BYTE: u8 = 0x01;
/// The shortest possible envelope without a prefix in any suite: an X25519 `enc` and a
/// tag around an empty plaintext. ([`Suite::min_sealed_len`] is a suite's own.)
pub const MIN_SEALED_LEN: usize = Kem::X25519HkdfSha256.enc_len() + TAG_LEN;
/// The longest `info` accepted. RFC 9180 puts `info` inside a 2-byte length, and the
/// gateway's `info` is an account id; anything near this is not one.
pub const MAX_INFO_LEN: usize = 4096;

/// The Tink output prefix carried in front of an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// No prefix (Tink output prefix type `RAW`, and plain RFC 9180 clients).
    Raw,
    /// `0x01 || key_id` (Tink output prefix type `TINK`).
    Tink(u32),
}

impl Prefix {
    /// Number of bytes this prefix takes on the wire.
    pub fn len(self) -> usize {
        match self {
            Prefix::Raw => 0,
            Prefix::Tink(_) => TINK_PREFIX_LEN,
        }
    }

    /// True for [`Prefix::Raw`].
    pub fn is_empty(self) -> bool {
        self == Prefix::Raw
    }

    /// Writes the prefix into `out`, exactly [`Prefix::len`] bytes.
    fn write_into(self, out: &mut [u8]) {
        if let Prefix::Tink(id) = self {
            out[0] = TINK_START_BYTE;
            out[1..5].copy_from_slice(&id.to_be_bytes());
        }
    }
}

/// Splits a Tink `TINK` prefix off a ciphertext, if it has the shape of one.
///
/// A RAW ciphertext whose first byte happens to be `0x01` also looks prefixed;
/// callers that accept both (as Tink's keyset primitive does) try the prefixed
/// reading first and fall back to the whole input.
pub fn split_prefix(ciphertext: &[u8]) -> (Prefix, &[u8]) {
    match ciphertext {
        [TINK_START_BYTE, a, b, c, d, rest @ ..] => {
            (Prefix::Tink(u32::from_be_bytes([*a, *b, *c, *d])), rest)
        }
        _ => (Prefix::Raw, ciphertext),
    }
}

// === impl PrivateKey ===

/// The secret half of a key pair, per KEM.
#[derive(Clone)]
enum Secret {
    /// A clamped scalar, with its public key computed once.
    X25519 {
        sk: backend::SecretKey,
        public: [u8; 32],
    },
    /// A seed, expanded once.
    XWing(Box<xwing::SecretKey>),
}

/// A private key of one suite, with its public key computed once. Zeroized on drop;
/// never printed.
#[derive(Clone)]
pub struct PrivateKey {
    suite: Suite,
    secret: Secret,
}

impl PrivateKey {
    fn x25519(suite: Suite, sk: backend::SecretKey) -> Self {
        let public = sk.public();
        Self {
            suite,
            secret: Secret::X25519 { sk, public },
        }
    }

    fn xwing(suite: Suite, sk: xwing::SecretKey) -> Self {
        Self {
            suite,
            secret: Secret::XWing(Box::new(sk)),
        }
    }

    /// Generates a fresh key of the default suite from the operating system's random source.
    pub fn generate() -> Self {
        Self::generate_for(Suite::default())
    }

    /// Generates a fresh key of `suite`.
    pub fn generate_for(suite: Suite) -> Self {
        let mut ikm = zeroize::Zeroizing::new([0u8; 32]);
        rand_core::Rng::fill_bytes(&mut rand_core::UnwrapErr(getrandom::SysRng), &mut *ikm);
        match suite.kem {
            Kem::X25519HkdfSha256 => Self::derive_for(suite, &*ikm),
            // X-Wing's private key is its 32-byte random seed (draft §5.2 GenerateKeyPair).
            Kem::XWing => Self::xwing(suite, xwing::SecretKey::from_seed(&ikm)),
        }
    }

    /// Deterministically derives a key pair of the default suite from input keying
    /// material (RFC 9180 §7.1.3 `DeriveKeyPair`).
    pub fn derive(ikm: &[u8]) -> Self {
        Self::derive_for(Suite::default(), ikm)
    }

    /// `DeriveKeyPair(ikm)` of `suite`'s KEM (RFC 9180 §7.1.3; draft-ietf-hpke-pq for X-Wing).
    pub fn derive_for(suite: Suite, ikm: &[u8]) -> Self {
        match suite.kem {
            Kem::X25519HkdfSha256 => Self::x25519(suite, backend::SecretKey::derive(ikm)),
            Kem::XWing => Self::xwing(suite, xwing::SecretKey::derive(ikm)),
        }
    }

    /// Reads a 32-byte X25519 scalar (clamped as RFC 7748 requires) for the default suite.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyLengthError> {
        Self::from_bytes_for(Suite::default(), bytes)
    }

    /// Reads a private key of `suite`: a 32-byte X25519 scalar, or X-Wing's 32-byte seed.
    pub fn from_bytes_for(suite: Suite, bytes: &[u8]) -> Result<Self, KeyLengthError> {
        let error = KeyLengthError {
            kem: suite.kem,
            len: bytes.len(),
        };
        match suite.kem {
            Kem::X25519HkdfSha256 => backend::SecretKey::from_bytes(bytes)
                .map(|sk| Self::x25519(suite, sk))
                .ok_or(error),
            Kem::XWing => {
                let seed: &[u8; 32] = bytes.try_into().map_err(|_| error)?;
                Ok(Self::xwing(suite, xwing::SecretKey::from_seed(seed)))
            }
        }
    }

    /// The 32 private key bytes (a clamped X25519 scalar, or X-Wing's seed), in a buffer
    /// that is zeroized on drop.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        match &self.secret {
            Secret::X25519 { sk, .. } => sk.to_bytes(),
            Secret::XWing(sk) => sk.seed(),
        }
    }

    /// The suite this key is used with.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The same key material for another suite of the same KEM (another AEAD).
    pub fn with_suite(mut self, suite: Suite) -> Result<Self, SuiteMismatch> {
        same_kem(self.suite, suite)?;
        self.suite = suite;
        Ok(self)
    }

    /// The matching public key (of the same suite).
    pub fn public_key(&self) -> PublicKey {
        let key = match &self.secret {
            Secret::X25519 { public, .. } => Public::X25519(*public),
            Secret::XWing(sk) => Public::XWing(Box::new(sk.public().clone())),
        };
        PublicKey {
            suite: self.suite,
            key,
        }
    }
}

// The X25519 scalar lives in the backend's `SecretKey`, the X-Wing seed and its expansion
// in `xwing::SecretKey`; both wipe themselves. The rest is public.
impl ZeroizeOnDrop for PrivateKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// Keys change suite only within their KEM (another AEAD).
fn same_kem(key: Suite, wanted: Suite) -> Result<(), SuiteMismatch> {
    if key.kem == wanted.kem {
        Ok(())
    } else {
        Err(SuiteMismatch { key, wanted })
    }
}

/// A key of one suite asked to serve a suite of another KEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key of suite {key} cannot be used with suite {wanted} (another KEM)")]
pub struct SuiteMismatch {
    /// The key's suite.
    pub key: Suite,
    /// The suite asked for.
    pub wanted: Suite,
}

// === impl PublicKey ===

#[derive(Clone, PartialEq, Eq, Debug)]
enum Public {
    X25519([u8; 32]),
    XWing(Box<xwing::PublicKey>),
}

/// A public key of one suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    suite: Suite,
    key: Public,
}

impl PublicKey {
    /// Reads a 32-byte X25519 public key for the default suite, refusing keys of small
    /// order (those for which every Diffie-Hellman result is all zeros, RFC 9180 §7.1.4).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PublicKeyError> {
        Self::from_bytes_for(Suite::default(), bytes)
    }

    /// Reads a public key of `suite`: 32 X25519 bytes (not of small order), or X-Wing's
    /// 1216 bytes (an ML-KEM-768 key that passes FIPS 203's check, and an X25519 key not
    /// of small order).
    pub fn from_bytes_for(suite: Suite, bytes: &[u8]) -> Result<Self, PublicKeyError> {
        let want = suite.kem.public_key_len();
        if bytes.len() != want {
            return Err(PublicKeyError::Length {
                kem: suite.kem,
                len: bytes.len(),
            });
        }
        let key = match suite.kem {
            Kem::X25519HkdfSha256 => {
                let mut pk = [0u8; 32];
                pk.copy_from_slice(bytes);
                if x25519_is_low_order(&pk) {
                    return Err(PublicKeyError::LowOrder);
                }
                Public::X25519(pk)
            }
            Kem::XWing => Public::XWing(Box::new(
                xwing::PublicKey::from_bytes(bytes).map_err(|()| PublicKeyError::Invalid)?,
            )),
        };
        Ok(Self { suite, key })
    }

    /// The public key bytes (`Npk` of the suite's KEM).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.key {
            Public::X25519(pk) => pk,
            Public::XWing(pk) => pk.as_bytes(),
        }
    }

    /// The public key bytes, copied.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    /// The suite this key is used with.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The same key for another suite of the same KEM (another AEAD).
    pub fn with_suite(mut self, suite: Suite) -> Result<Self, SuiteMismatch> {
        same_kem(self.suite, suite)?;
        self.suite = suite;
        Ok(self)
    }

    /// How many bytes [`seal_in_place`] needs reserved in front of the plaintext for
    /// this recipient: the prefix and `enc`.
    pub fn header_len(&self, prefix: Prefix) -> usize {
        prefix.len() + self.suite.kem.enc_len()
    }
}

/// A point of small order gives an all-zero shared secret with every private key.
/// Checking with one fixed scalar is enough: X25519 clamping clears the low three
/// bits, so any clamped scalar multiplies a point of order dividing 8 to zero, and
/// no other point maps to zero.
pub(crate) fn x25519_is_low_order(pk: &[u8; 32]) -> bool {
    let probe = x25519_dalek::StaticSecret::from([0x55u8; 32]);
    let point = x25519_dalek::PublicKey::from(*pk);
    !probe.diffie_hellman(&point).was_contributory()
}

/// A private key of the wrong length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a private key of {} is {} bytes, got {len}", kem.name(), kem.private_key_len())]
pub struct KeyLengthError {
    /// The key's KEM.
    pub kem: Kem,
    /// The length given.
    pub len: usize,
}

/// Why a public key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    /// Not `Npk` bytes.
    #[error("a public key of {} is {} bytes, got {len}", kem.name(), kem.public_key_len())]
    Length {
        /// The key's KEM.
        kem: Kem,
        /// The length given.
        len: usize,
    },
    /// A point of small order: every shared secret with it is all zeros.
    #[error("the X25519 public key is a point of small order (all-zero shared secret)")]
    LowOrder,
    /// An X-Wing key whose ML-KEM half fails FIPS 203's check or whose X25519 half is of
    /// small order.
    #[error(
        "the X-Wing public key is invalid (ML-KEM-768 key check or X25519 point of small order)"
    )]
    Invalid,
}

// === seal ===

/// Why sealing failed. Sealing only fails on inputs no caller should pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// `info` is longer than [`MAX_INFO_LEN`].
    #[error("info is longer than {MAX_INFO_LEN} bytes")]
    InfoTooLong,
    /// Encapsulation failed (the recipient key gives an all-zero shared secret).
    #[error("encapsulation to the recipient key failed")]
    Encap,
    /// [`seal_in_place`] was given fewer reserved bytes than [`header_len`].
    #[error("no room reserved for the envelope header")]
    NoHeaderRoom,
    /// The AEAD refused the message (longer than AES-GCM allows).
    #[error("the message is too long to seal")]
    Aead,
}

// RFC 9180 §6.1
// def SealBase(pkR, info, aad, pt):
//   enc, ctx = SetupBaseS(pkR, info)
//   ct = ctx.Seal(aad, pt)
//   return enc, ct
/// Seals `plaintext` to `recipient` with `info`, empty AAD, and the given prefix, in
/// the recipient key's suite.
pub fn seal(
    recipient: &PublicKey,
    prefix: Prefix,
    info: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    seal_with_rng(
        recipient,
        prefix,
        info,
        plaintext,
        &mut rand_core::UnwrapErr(getrandom::SysRng),
    )
}

/// [`seal`] with a caller-supplied random source for the ephemeral key (for tests
/// against published vectors).
pub fn seal_with_rng(
    recipient: &PublicKey,
    prefix: Prefix,
    info: &[u8],
    plaintext: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, SealError> {
    let header = recipient.header_len(prefix);
    let mut buf = Vec::with_capacity(header + plaintext.len() + TAG_LEN);
    buf.resize(header, 0);
    buf.extend_from_slice(plaintext);
    seal_in_place_with_rng(recipient, prefix, info, &mut buf, rng)?;
    Ok(buf)
}

/// Seals without copying the body: `buf` holds [`PublicKey::header_len`] reserved bytes
/// followed by the plaintext, and becomes the envelope (header written, body encrypted in
/// place, tag appended; reserve `TAG_LEN` more capacity to avoid a reallocation).
pub fn seal_in_place(
    recipient: &PublicKey,
    prefix: Prefix,
    info: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), SealError> {
    seal_in_place_with_rng(
        recipient,
        prefix,
        info,
        buf,
        &mut rand_core::UnwrapErr(getrandom::SysRng),
    )
}

fn seal_in_place_with_rng(
    recipient: &PublicKey,
    prefix: Prefix,
    info: &[u8],
    buf: &mut Vec<u8>,
    rng: &mut impl CryptoRng,
) -> Result<(), SealError> {
    let body_start = recipient.header_len(prefix);
    if buf.len() < body_start {
        return Err(SealError::NoHeaderRoom);
    }
    let (head, body) = buf.split_at_mut(body_start);
    let (prefix_bytes, enc) = head.split_at_mut(prefix.len());
    let mut ctx = setup_sender_into(recipient, info, rng, enc)?;
    prefix.write_into(prefix_bytes);
    let tag = ctx.seal_in_place(&[], body)?;
    buf.extend_from_slice(&tag);
    Ok(())
}

// RFC 9180 §5.1.1
// def SetupBaseS(pkR, info):
//   shared_secret, enc = Encap(pkR)
//   return enc, KeyScheduleS(mode_base, shared_secret, info,
//                            default_psk, default_psk_id)
/// Sets up a base-mode sender context (RFC 9180 §5.1.1) in the recipient key's suite and
/// returns the encapsulated key with it. The gateway seals one message per context; the
/// context type exists so that published multi-message vectors run through this module.
pub fn setup_sender_with_rng(
    recipient: &PublicKey,
    info: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<(Vec<u8>, SenderContext), SealError> {
    let mut enc = vec![0u8; recipient.suite.kem.enc_len()];
    let ctx = setup_sender_into(recipient, info, rng, &mut enc)?;
    Ok((enc, ctx))
}

/// [`setup_sender_with_rng`] with X-Wing's derandomized encapsulation: `eseed` is the
/// draft's 64 bytes (for published vectors only; never reuse an `eseed`).
#[doc(hidden)]
pub fn setup_sender_xwing_derand(
    recipient: &PublicKey,
    info: &[u8],
    eseed: &[u8; 64],
) -> Result<(Vec<u8>, SenderContext), SealError> {
    let Public::XWing(pk) = &recipient.key else {
        return Err(SealError::Encap);
    };
    if info.len() > MAX_INFO_LEN {
        return Err(SealError::InfoTooLong);
    }
    let mut enc = vec![0u8; xwing::ENC_LEN];
    let shared = xwing::encap_derand(pk, eseed, &mut enc).map_err(|()| SealError::Encap)?;
    let ctx =
        backend::Sender::new(recipient.suite, &shared, info).map_err(|()| SealError::Encap)?;
    Ok((
        enc,
        SenderContext {
            ctx,
            exporter: None,
        },
    ))
}

/// [`setup_sender_with_rng`] for a context that also exports secrets
/// ([`SenderContext::export`], RFC 9180 §5.3), in `suite`: the recipient's KEM with any
/// AEAD.
pub fn setup_sender_exporting_with_rng(
    recipient: &PublicKey,
    suite: Suite,
    info: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<(Vec<u8>, SenderContext), SealError> {
    if suite.kem != recipient.suite.kem {
        return Err(SealError::Encap);
    }
    let mut enc = vec![0u8; suite.kem.enc_len()];
    let shared = encapsulate(recipient, info, rng, &mut enc)?;
    let (ctx, exporter) =
        backend::Sender::exporting(suite, &shared, info).map_err(|()| SealError::Encap)?;
    Ok((
        enc,
        SenderContext {
            ctx,
            exporter: Some(Exporter {
                suite,
                secret: exporter,
            }),
        },
    ))
}

/// [`setup_sender_exporting_with_rng`] with a given X25519 ephemeral key: for published
/// examples that give `skE` (RFC 9458 Appendix A). Never use a fixed ephemeral key.
#[doc(hidden)]
pub fn setup_sender_exporting_with_ephemeral(
    recipient: &PublicKey,
    suite: Suite,
    info: &[u8],
    ephemeral: &PrivateKey,
) -> Result<(Vec<u8>, SenderContext), SealError> {
    let (Public::X25519(pk), Secret::X25519 { sk, .. }) = (&recipient.key, &ephemeral.secret)
    else {
        return Err(SealError::Encap);
    };
    if suite.kem != Kem::X25519HkdfSha256 || info.len() > MAX_INFO_LEN {
        return Err(SealError::Encap);
    }
    let (enc, shared) = backend::encap_with(sk, pk).map_err(|()| SealError::Encap)?;
    let (ctx, exporter) =
        backend::Sender::exporting(suite, &shared, info).map_err(|()| SealError::Encap)?;
    Ok((
        enc.to_vec(),
        SenderContext {
            ctx,
            exporter: Some(Exporter {
                suite,
                secret: exporter,
            }),
        },
    ))
}

/// Encapsulates to `recipient`, writing `enc` into `enc_out` (exactly `Nenc` bytes).
fn setup_sender_into(
    recipient: &PublicKey,
    info: &[u8],
    rng: &mut impl CryptoRng,
    enc_out: &mut [u8],
) -> Result<SenderContext, SealError> {
    let shared = encapsulate(recipient, info, rng, enc_out)?;
    let ctx =
        backend::Sender::new(recipient.suite, &shared, info).map_err(|()| SealError::Encap)?;
    Ok(SenderContext {
        ctx,
        exporter: None,
    })
}

/// The KEM's shared secret, writing `enc` into `enc_out` (exactly `Nenc` bytes).
fn encapsulate(
    recipient: &PublicKey,
    info: &[u8],
    rng: &mut impl CryptoRng,
    enc_out: &mut [u8],
) -> Result<zeroize::Zeroizing<[u8; 32]>, SealError> {
    if info.len() > MAX_INFO_LEN {
        return Err(SealError::InfoTooLong);
    }
    let shared = match &recipient.key {
        Public::X25519(pk) => {
            let (enc, shared) = backend::encap(pk, rng).map_err(|()| SealError::Encap)?;
            if enc_out.len() != enc.len() {
                return Err(SealError::NoHeaderRoom);
            }
            enc_out.copy_from_slice(&enc);
            shared
        }
        Public::XWing(pk) => xwing::encap(pk, rng, enc_out).map_err(|()| SealError::Encap)?,
    };
    Ok(shared)
}

/// An HPKE sender context: seals messages in sequence (RFC 9180 §5.2).
pub struct SenderContext {
    ctx: backend::Sender,
    exporter: Option<Exporter>,
}

impl SenderContext {
    /// `Export(exporter_context, N)` (RFC 9180 §5.3), for a context from
    /// [`setup_sender_exporting_with_rng`]; `N` at most 32 (checked when it compiles).
    pub fn export<const N: usize>(
        &self,
        exporter_context: &[u8],
    ) -> Result<zeroize::Zeroizing<[u8; N]>, ExportError> {
        self.exporter
            .as_ref()
            .ok_or(ExportError)?
            .export(exporter_context)
    }

    /// Encrypts `buffer` in place with the next sequence number and returns the tag.
    pub fn seal_in_place(
        &mut self,
        aad: &[u8],
        buffer: &mut [u8],
    ) -> Result<[u8; TAG_LEN], SealError> {
        self.ctx
            .seal_in_place(aad, buffer)
            .map_err(|()| SealError::Aead)
    }

    /// Returns `ciphertext || tag` for the next message.
    pub fn seal(&mut self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        out.extend_from_slice(plaintext);
        let tag = self.seal_in_place(aad, &mut out)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }
}

// The backend's sender holds the AEAD key and base nonce and wipes them on drop.
impl ZeroizeOnDrop for SenderContext {}

impl fmt::Debug for SenderContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SenderContext(<redacted>)")
    }
}

// === open ===

/// Why opening failed. Every variant displays the same text, "decryption failed":
/// the variant is for tests and for the operator's debugging, never for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than an encapsulated key plus a tag.
    #[error("decryption failed")]
    Truncated,
    /// The encapsulated key gives an all-zero shared secret (small-order point).
    #[error("decryption failed")]
    Decap,
    /// Tag mismatch: wrong key, wrong info, or a modified byte.
    #[error("decryption failed")]
    Authentication,
    /// `info` is longer than [`MAX_INFO_LEN`].
    #[error("decryption failed")]
    InfoTooLong,
}

// RFC 9180 §6.1
// def OpenBase(enc, skR, info, aad, ct):
//   ctx = SetupBaseR(enc, skR, info)
//   return ctx.Open(aad, ct)
/// Opens an unprefixed envelope (`enc || ct || tag`) in place with the key's suite and
/// returns the plaintext, a sub-slice of `sealed`.
///
/// On failure `sealed` is left as it was if [`OPEN_KEEPS_INPUT_ON_FAILURE`] (the
/// default backend's AEADs check the tag before they decrypt).
pub fn open_in_place<'a>(
    key: &PrivateKey,
    info: &[u8],
    sealed: &'a mut [u8],
) -> Result<&'a mut [u8], OpenError> {
    if sealed.len() < key.suite.min_sealed_len() {
        return Err(OpenError::Truncated);
    }
    let (enc, rest) = sealed.split_at_mut(key.suite.kem.enc_len());
    let mut ctx = setup_receiver(key, enc, info)?;
    ctx.open_in_place(&[], rest)
}

// RFC 9180 §5.1.1
// def SetupBaseR(enc, skR, info):
//   shared_secret = Decap(enc, skR)
//   return KeyScheduleR(mode_base, shared_secret, info,
//                       default_psk, default_psk_id)
/// Sets up a base-mode receiver context from an encapsulated key (RFC 9180 §5.1.1) in
/// the key's suite. An `enc` of the wrong length, or one whose X25519 part is of small
/// order (an all-zero secret), is refused here, before any context exists.
pub fn setup_receiver(
    key: &PrivateKey,
    enc: &[u8],
    info: &[u8],
) -> Result<ReceiverContext, OpenError> {
    let shared = decapsulate(key, enc, info)?;
    let ctx = backend::Receiver::new(key.suite, &shared, info).map_err(|()| OpenError::Decap)?;
    Ok(ReceiverContext {
        ctx,
        exporter: None,
    })
}

/// [`setup_receiver`] for a context that also exports secrets ([`ReceiverContext::export`],
/// RFC 9180 §5.3), in `suite`: the key's KEM with any AEAD (an Oblivious HTTP request names
/// its own).
pub fn setup_receiver_exporting(
    key: &PrivateKey,
    suite: Suite,
    enc: &[u8],
    info: &[u8],
) -> Result<ReceiverContext, OpenError> {
    if suite.kem != key.suite.kem {
        return Err(OpenError::Decap);
    }
    let shared = decapsulate(key, enc, info)?;
    let (ctx, exporter) =
        backend::Receiver::exporting(suite, &shared, info).map_err(|()| OpenError::Decap)?;
    Ok(ReceiverContext {
        ctx,
        exporter: Some(Exporter {
            suite,
            secret: exporter,
        }),
    })
}

/// The KEM's shared secret for `enc`.
fn decapsulate(
    key: &PrivateKey,
    enc: &[u8],
    info: &[u8],
) -> Result<zeroize::Zeroizing<[u8; 32]>, OpenError> {
    if info.len() > MAX_INFO_LEN {
        return Err(OpenError::InfoTooLong);
    }
    let shared = match &key.secret {
        Secret::X25519 { sk, public } => {
            let enc: &[u8; 32] = enc.try_into().map_err(|_| OpenError::Truncated)?;
            backend::decap(sk, public, enc).map_err(|()| OpenError::Decap)?
        }
        Secret::XWing(sk) => {
            if enc.len() != xwing::ENC_LEN {
                return Err(OpenError::Truncated);
            }
            xwing::decap(sk, enc).map_err(|()| OpenError::Decap)?
        }
    };
    Ok(shared)
}

/// A context's exporter secret and the suite whose KDF expands it.
struct Exporter {
    suite: Suite,
    secret: zeroize::Zeroizing<[u8; 32]>,
}

impl Exporter {
    // RFC 9180 §5.3: Context.Export(exporter_context, L)
    fn export<const N: usize>(
        &self,
        exporter_context: &[u8],
    ) -> Result<zeroize::Zeroizing<[u8; N]>, ExportError> {
        Ok(schedule::export::<backend::Hkdf, N>(
            self.suite,
            &self.secret,
            exporter_context,
        ))
    }
}

/// The context was set up without its exporter secret. (`L` above 32 bytes does not
/// compile.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this context exports no secret of that length")]
pub struct ExportError;

/// An HPKE receiver context: opens messages in sequence (RFC 9180 §5.2).
pub struct ReceiverContext {
    ctx: backend::Receiver,
    exporter: Option<Exporter>,
}

impl ReceiverContext {
    /// `Export(exporter_context, N)` (RFC 9180 §5.3), for a context from
    /// [`setup_receiver_exporting`]; `N` at most 32 (checked when it compiles).
    pub fn export<const N: usize>(
        &self,
        exporter_context: &[u8],
    ) -> Result<zeroize::Zeroizing<[u8; N]>, ExportError> {
        self.exporter
            .as_ref()
            .ok_or(ExportError)?
            .export(exporter_context)
    }

    /// Decrypts `ciphertext || tag` in place with the next sequence number and returns
    /// the plaintext, a sub-slice of `sealed`. On failure `sealed` is unchanged if
    /// [`OPEN_KEEPS_INPUT_ON_FAILURE`].
    pub fn open_in_place<'a>(
        &mut self,
        aad: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], OpenError> {
        if sealed.len() < TAG_LEN {
            return Err(OpenError::Truncated);
        }
        let (body, tag) = sealed.split_at_mut(sealed.len() - TAG_LEN);
        self.ctx
            .open_in_place(aad, body, tag)
            .map_err(|()| OpenError::Authentication)?;
        Ok(body)
    }

    /// Decrypts `ciphertext || tag` into a new buffer.
    pub fn open(&mut self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buf = sealed.to_vec();
        let len = self.open_in_place(aad, &mut buf)?.len();
        buf.truncate(len);
        Ok(buf)
    }
}

// The backend's receiver holds the AEAD key and base nonce and wipes them on drop.
impl ZeroizeOnDrop for ReceiverContext {}

impl fmt::Debug for ReceiverContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReceiverContext(<redacted>)")
    }
}

/// Opens an unprefixed envelope into a new buffer.
pub fn open(key: &PrivateKey, info: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    let enc_len = key.suite.kem.enc_len();
    let mut buf = sealed.to_vec();
    let len = open_in_place(key, info, &mut buf)?.len();
    buf.truncate(enc_len + len);
    buf.drain(..enc_len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Nenc` of the default suite's KEM.
    const ENC_LEN: usize = 32;

    fn pair() -> (PrivateKey, PublicKey) {
        let sk = PrivateKey::generate();
        let pk = sk.public_key();
        (sk, pk)
    }

    fn open_prefixed(sk: &PrivateKey, info: &[u8], ct: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (_, rest) = split_prefix(ct);
        open(sk, info, rest)
    }

    #[test]
    fn round_trip_raw_and_tink() {
        let (sk, pk) = pair();
        for prefix in [Prefix::Raw, Prefix::Tink(0xdead_beef)] {
            for len in [0usize, 1, 15, 16, 17, 1000, 65_536] {
                let pt: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let ct = seal(&pk, prefix, b"ACCT", &pt).unwrap();
                assert_eq!(ct.len(), prefix.len() + ENC_LEN + len + TAG_LEN);
                let (got_prefix, rest) = split_prefix(&ct);
                if prefix != Prefix::Raw {
                    assert_eq!(got_prefix, prefix);
                    assert_eq!(&ct[..5], &[1, 0xde, 0xad, 0xbe, 0xef]);
                }
                let body = if prefix == Prefix::Raw { &ct[..] } else { rest };
                assert_eq!(open(&sk, b"ACCT", body).unwrap(), pt);
            }
        }
    }

    #[test]
    fn wrong_info_wrong_key_tamper_fail() {
        let (sk, pk) = pair();
        let (other, _) = pair();
        let ct = seal(&pk, Prefix::Raw, b"A", b"hello world").unwrap();
        assert_eq!(open(&sk, b"B", &ct), Err(OpenError::Authentication));
        assert_eq!(open(&other, b"A", &ct), Err(OpenError::Authentication));
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert!(
                open(&sk, b"A", &bad).is_err(),
                "flipped byte {i} still opened"
            );
        }
    }

    #[test]
    fn every_truncation_fails_without_panic() {
        let (sk, pk) = pair();
        let ct = seal(&pk, Prefix::Tink(3), b"A", b"some payload").unwrap();
        for n in 0..ct.len() {
            assert!(
                open_prefixed(&sk, b"A", &ct[..n]).is_err(),
                "prefix {n} opened"
            );
        }
        assert_eq!(open(&sk, b"A", &[]), Err(OpenError::Truncated));
        assert_eq!(open(&sk, b"A", &[0u8; 47]), Err(OpenError::Truncated));
    }

    #[test]
    fn failed_open_leaves_buffer_untouched() {
        let (sk, pk) = pair();
        let (other, _) = pair();
        let ct = seal(&pk, Prefix::Raw, b"A", b"payload bytes").unwrap();
        let mut buf = ct.clone();
        assert!(open_in_place(&other, b"A", &mut buf).is_err());
        if OPEN_KEEPS_INPUT_ON_FAILURE {
            assert_eq!(buf, ct);
        } else {
            buf.copy_from_slice(&ct);
        }
        assert_eq!(
            open_in_place(&sk, b"A", &mut buf).unwrap(),
            b"payload bytes"
        );
    }

    #[test]
    fn all_zero_encapsulated_key_is_refused() {
        let (sk, _) = pair();
        let mut sealed = vec![0u8; MIN_SEALED_LEN + 10];
        assert_eq!(open_in_place(&sk, b"A", &mut sealed), Err(OpenError::Decap));
    }

    #[test]
    fn low_order_public_keys_are_refused() {
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(
            PublicKey::from_bytes(&[0u8; 32]),
            Err(PublicKeyError::LowOrder)
        );
        assert_eq!(PublicKey::from_bytes(&one), Err(PublicKeyError::LowOrder));
        assert_eq!(
            PublicKey::from_bytes(&[9u8; 31]),
            Err(PublicKeyError::Length {
                kem: Kem::X25519HkdfSha256,
                len: 31
            })
        );
        let (_, pk) = pair();
        assert!(PublicKey::from_bytes(&pk.to_bytes()).is_ok());
    }

    #[test]
    fn long_info_is_an_error_not_a_panic() {
        let (sk, pk) = pair();
        let info = vec![b'a'; MAX_INFO_LEN + 1];
        assert_eq!(
            seal(&pk, Prefix::Raw, &info, b"x"),
            Err(SealError::InfoTooLong)
        );
        assert_eq!(open(&sk, &info, &[0u8; 64]), Err(OpenError::InfoTooLong));
    }

    #[test]
    fn seal_in_place_needs_its_header_room_and_opens() {
        let (sk, pk) = pair();
        let mut short = vec![0u8; ENC_LEN];
        assert_eq!(
            seal_in_place(&pk, Prefix::Tink(9), b"A", &mut short),
            Err(SealError::NoHeaderRoom)
        );
        let mut buf = vec![0u8; pk.header_len(Prefix::Tink(9))];
        buf.extend_from_slice(b"in place");
        seal_in_place(&pk, Prefix::Tink(9), b"A", &mut buf).unwrap();
        assert_eq!(&buf[..5], &[1, 0, 0, 0, 9]);
        assert_eq!(open(&sk, b"A", &buf[5..]).unwrap(), b"in place");
    }

    /// rust-hpke (rozbb/rust-hpke), an implementation nobody here wrote (its X-Wing is
    /// RustCrypto's `x-wing` crate), derives the same keys from the same ikm, opens what
    /// this crate seals and seals what it opens, in every suite, across sizes and infos.
    fn agrees_with_rust_hpke<A: hpke::aead::Aead, K: hpke::Kem>(suite: Suite) {
        use hpke::kdf::HkdfSha256;
        use hpke::{Deserializable, OpModeR, OpModeS, Serializable};

        let enc_len = suite.kem.enc_len();
        for (i, len) in [0usize, 1, 15, 16, 17, 1024, 70_000]
            .into_iter()
            .enumerate()
        {
            let ikm = [i as u8 + 1; 32];
            let ours = PrivateKey::derive_for(suite, &ikm);
            let (their_sk, their_pk) = K::derive_keypair(&ikm);
            assert_eq!(ours.public_key().as_bytes(), their_pk.to_bytes().as_slice());
            assert_eq!(ours.to_bytes().as_slice(), their_sk.to_bytes().as_slice());
            let info = format!("ACCT-{i}");
            let pt: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();

            // Ours seals, rust-hpke opens.
            let sealed = seal(&ours.public_key(), Prefix::Raw, info.as_bytes(), &pt).unwrap();
            assert_eq!(sealed.len(), enc_len + len + TAG_LEN);
            let enc = K::EncappedKey::from_bytes(&sealed[..enc_len]).unwrap();
            let mut ctx = hpke::setup_receiver::<A, HkdfSha256, K>(
                &OpModeR::Base,
                &their_sk,
                &enc,
                info.as_bytes(),
            )
            .unwrap();
            assert_eq!(
                ctx.open(&sealed[enc_len..], b"").unwrap(),
                pt,
                "{suite} len {len}"
            );

            // rust-hpke seals, ours opens.
            let (enc, mut ctx) =
                hpke::setup_sender::<A, HkdfSha256, K>(&OpModeS::Base, &their_pk, info.as_bytes())
                    .unwrap();
            let mut theirs = enc.to_bytes().to_vec();
            theirs.extend_from_slice(&ctx.seal(&pt, b"").unwrap());
            assert_eq!(
                open(&ours, info.as_bytes(), &theirs).unwrap(),
                pt,
                "{suite} len {len}"
            );
            assert_eq!(
                open(&ours, b"another account", &theirs),
                Err(OpenError::Authentication)
            );
            // The same key material with another AEAD does not open it.
            let other = if suite.aead == Aead::Aes256Gcm {
                Aead::ChaCha20Poly1305
            } else {
                Aead::Aes256Gcm
            };
            let wrong = ours.clone().with_suite(suite.with_aead(other)).unwrap();
            assert!(open(&wrong, info.as_bytes(), &theirs).is_err());
        }
    }

    #[test]
    fn agrees_with_rust_hpke_in_every_suite() {
        use hpke::aead::{AesGcm128, AesGcm256, ChaCha20Poly1305};
        use hpke::kem::{X25519HkdfSha256, XWing};
        agrees_with_rust_hpke::<AesGcm256, X25519HkdfSha256>(Suite::X25519_AES_256_GCM);
        agrees_with_rust_hpke::<AesGcm128, X25519HkdfSha256>(Suite::X25519_AES_128_GCM);
        agrees_with_rust_hpke::<ChaCha20Poly1305, X25519HkdfSha256>(
            Suite::X25519_CHACHA20_POLY1305,
        );
        agrees_with_rust_hpke::<AesGcm256, XWing>(Suite::XWING_AES_256_GCM);
        // Not offered by name, but the published X-Wing HPKE vectors use it.
        agrees_with_rust_hpke::<ChaCha20Poly1305, XWing>(
            Suite::XWING_AES_256_GCM.with_aead(Aead::ChaCha20Poly1305),
        );
    }

    #[test]
    fn xwing_envelopes_round_trip_and_every_truncation_fails() {
        let sk = PrivateKey::generate_for(Suite::XWING_AES_256_GCM);
        let pk = sk.public_key();
        assert_eq!(pk.as_bytes().len(), 1216);
        let ct = seal(&pk, Prefix::Tink(9), b"ACCT-PQ", b"hello").unwrap();
        // Tink's figure for a 5-byte message: 5 + 1120 + 5 + 16 = 1146 with a TINK
        // prefix, 1141 RAW.
        assert_eq!(ct.len(), 1146);
        let (prefix, rest) = split_prefix(&ct);
        assert_eq!(prefix, Prefix::Tink(9));
        assert_eq!(open(&sk, b"ACCT-PQ", rest).unwrap(), b"hello");
        for n in 0..rest.len() {
            assert!(
                open(&sk, b"ACCT-PQ", &rest[..n]).is_err(),
                "length {n} opened"
            );
        }
        // A wrong-length encapsulation: an X25519 envelope to an X-Wing key.
        let classical = seal(
            &PrivateKey::generate().public_key(),
            Prefix::Raw,
            b"ACCT-PQ",
            b"hello",
        )
        .unwrap();
        assert!(open(&sk, b"ACCT-PQ", &classical).is_err());
        // An X-Wing envelope to an X25519 key.
        assert!(open(&PrivateKey::generate(), b"ACCT-PQ", rest).is_err());
        // A flipped bit in the ML-KEM half, in the X25519 half, in the body.
        for i in [0, 500, 1087, 1088, 1119, 1121] {
            let mut bad = rest.to_vec();
            bad[i] ^= 1;
            assert_eq!(
                open(&sk, b"ACCT-PQ", &bad),
                Err(OpenError::Authentication),
                "byte {i}"
            );
        }
        // An all-zero X25519 half is refused before the AEAD.
        let mut zero = rest.to_vec();
        zero[1088..1120].fill(0);
        assert_eq!(open(&sk, b"ACCT-PQ", &zero), Err(OpenError::Decap));
    }

    #[test]
    fn xwing_public_keys_are_checked() {
        let pk = PrivateKey::generate_for(Suite::XWING_AES_256_GCM).public_key();
        let s = Suite::XWING_AES_256_GCM;
        assert!(PublicKey::from_bytes_for(s, pk.as_bytes()).is_ok());
        assert!(matches!(
            PublicKey::from_bytes_for(s, &pk.as_bytes()[..1215]),
            Err(PublicKeyError::Length { len: 1215, .. })
        ));
        // An ML-KEM coefficient out of range (FIPS 203 §7.2 modulus check): 0xFFF > q.
        let mut bad = pk.to_bytes();
        bad[0] = 0xff;
        bad[1] |= 0x0f;
        assert_eq!(
            PublicKey::from_bytes_for(s, &bad),
            Err(PublicKeyError::Invalid)
        );
        // A small-order X25519 half.
        let mut low = pk.to_bytes();
        low[1184..].fill(0);
        assert_eq!(
            PublicKey::from_bytes_for(s, &low),
            Err(PublicKeyError::Invalid)
        );
        // Keys of one KEM do not change suite to another KEM.
        assert!(pk.with_suite(Suite::X25519_AES_256_GCM).is_err());
    }

    /// RFC 9180 §5.2: the receiver's sequence number advances only when a message opens.
    #[test]
    fn a_failed_open_does_not_advance_the_sequence() {
        let (sk, pk) = pair();
        let (enc, mut sender) =
            setup_sender_with_rng(&pk, b"A", &mut rand_core::UnwrapErr(getrandom::SysRng)).unwrap();
        let m0 = sender.seal(b"", b"zero").unwrap();
        let m1 = sender.seal(b"", b"one").unwrap();
        let mut receiver = setup_receiver(&sk, &enc, b"A").unwrap();
        // Message 1 first: the receiver expects sequence 0, so it fails and stays at 0.
        assert_eq!(receiver.open(b"", &m1), Err(OpenError::Authentication));
        assert_eq!(receiver.open(b"", &m0).unwrap(), b"zero");
        assert_eq!(receiver.open(b"", &m1).unwrap(), b"one");
        assert_eq!(receiver.open(b"", &m1), Err(OpenError::Authentication));
    }

    /// Compile-time: every type that holds a private key, an AEAD key or a base nonce
    /// is wiped when dropped (on both backends).
    #[test]
    fn secret_holders_zeroize_on_drop() {
        fn wipes<T: ZeroizeOnDrop>() {}
        wipes::<PrivateKey>();
        wipes::<SenderContext>();
        wipes::<ReceiverContext>();
        wipes::<backend::SecretKey>();
        wipes::<xwing::SecretKey>();
        wipes::<xwing::MlKemSecret>();
        wipes::<backend::Sender>();
        wipes::<backend::Receiver>();
        wipes::<schedule::Nonces>();
    }

    #[test]
    fn private_key_debug_is_redacted() {
        let sk = PrivateKey::derive(&[7u8; 32]);
        assert_eq!(format!("{sk:?}"), "PrivateKey(<redacted>)");
    }
}
