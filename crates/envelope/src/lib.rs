//! The wire envelope: HPKE (RFC 9180) base mode with DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256 and AES-256-GCM, framed exactly as Google Tink's `HybridEncrypt`
//! frames it.
//!
//! ```text
//! ciphertext = [0x01 || key_id (u32, big-endian)]   only for Tink keys of output prefix TINK
//!              || enc (32 bytes, the encapsulated X25519 public key)
//!              || AEAD ciphertext || AEAD tag (16 bytes)
//! ```
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
mod schedule;
pub mod suite;
use schedule::Dh as _;

pub use suite::Suite;

// The one seam between the wire format and the primitives: a backend provides a
// private key type, base-mode sender/receiver setup (RFC 9180 §5.1) over the shared
// key schedule, and in-place AEAD.
#[cfg(feature = "aws-lc")]
#[path = "aws_lc.rs"]
mod backend;
#[cfg(not(feature = "aws-lc"))]
#[path = "rustcrypto.rs"]
mod backend;

/// The crypto backend this build uses: `rustcrypto` (default: x25519-dalek, hkdf,
/// aes-gcm) or `aws-lc` (cargo feature).
pub const BACKEND: &str = backend::NAME;
/// Whether a failed open leaves the buffer as it was (so another key may be tried on it).
pub const OPEN_KEEPS_INPUT_ON_FAILURE: bool = backend::OPEN_KEEPS_INPUT_ON_FAILURE;

/// The suite [`seal`] and [`open`] use.
pub const SUITE: Suite = Suite::X25519_AES_256_GCM;
/// Length of the encapsulated key (`Nenc` of [`SUITE`]'s KEM, RFC 9180 §7.1).
pub const ENC_LEN: usize = SUITE.kem.enc_len();
/// Length of the AEAD tag (`Nt` of [`SUITE`]'s AEAD, RFC 9180 §7.3).
pub const TAG_LEN: usize = SUITE.aead.tag_len();
/// Length of a Tink `TINK` output prefix: one version byte and a big-endian key id.
pub const TINK_PREFIX_LEN: usize = 5;
/// The first byte of a Tink `TINK` output prefix.
pub const TINK_START_BYTE: u8 = 0x01;
/// The shortest possible envelope without a prefix: `enc` and a tag around an empty plaintext.
pub const MIN_SEALED_LEN: usize = ENC_LEN + TAG_LEN;
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

    fn write(self, out: &mut Vec<u8>) {
        if let Prefix::Tink(id) = self {
            out.push(TINK_START_BYTE);
            out.extend_from_slice(&id.to_be_bytes());
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

/// An X25519 private key, with its public key computed once. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct PrivateKey {
    sk: backend::SecretKey,
    public: [u8; 32],
}

impl PrivateKey {
    fn from_secret(sk: backend::SecretKey) -> Self {
        let public = sk.public();
        Self { sk, public }
    }

    /// Generates a fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut ikm = zeroize::Zeroizing::new([0u8; 32]);
        rand_core::Rng::fill_bytes(&mut rand_core::UnwrapErr(getrandom::SysRng), &mut *ikm);
        Self::derive(&*ikm)
    }

    /// Deterministically derives a key pair from input keying material
    /// (RFC 9180 §7.1.3 `DeriveKeyPair`).
    pub fn derive(ikm: &[u8]) -> Self {
        Self::from_secret(backend::SecretKey::derive(ikm))
    }

    /// Reads a 32-byte X25519 scalar (clamped as RFC 7748 requires).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyLengthError> {
        backend::SecretKey::from_bytes(bytes)
            .map(Self::from_secret)
            .ok_or(KeyLengthError(bytes.len()))
    }

    /// The 32 scalar bytes (clamped), in a buffer that is zeroized on drop.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        self.sk.to_bytes()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey { pk: self.public }
    }
}

// The scalar lives in the backend's `SecretKey`, which wipes itself; the rest is public.
impl ZeroizeOnDrop for PrivateKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

// === impl PublicKey ===

/// An X25519 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pk: [u8; 32],
}

impl PublicKey {
    /// Reads a 32-byte X25519 public key, refusing keys of small order
    /// (those for which every Diffie-Hellman result is all zeros, RFC 9180 §7.1.4).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PublicKeyError> {
        let pk: [u8; 32] = bytes
            .try_into()
            .map_err(|_| PublicKeyError::Length(bytes.len()))?;
        let key = Self { pk };
        if key.is_low_order() {
            return Err(PublicKeyError::LowOrder);
        }
        Ok(key)
    }

    /// The 32 public key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.pk
    }

    /// A point of small order gives an all-zero shared secret with every private key.
    /// Checking with one fixed scalar is enough: X25519 clamping clears the low three
    /// bits, so any clamped scalar multiplies a point of order dividing 8 to zero, and
    /// no other point maps to zero.
    fn is_low_order(&self) -> bool {
        let probe = x25519_dalek::StaticSecret::from([0x55u8; 32]);
        let point = x25519_dalek::PublicKey::from(self.pk);
        !probe.diffie_hellman(&point).was_contributory()
    }
}

/// A private key of the wrong length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an X25519 private key is 32 bytes, got {0}")]
pub struct KeyLengthError(pub usize);

/// Why a public key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    /// Not 32 bytes.
    #[error("an X25519 public key is 32 bytes, got {0}")]
    Length(usize),
    /// A point of small order: every shared secret with it is all zeros.
    #[error("the X25519 public key is a point of small order (all-zero shared secret)")]
    LowOrder,
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
/// Seals `plaintext` to `recipient` with `info`, empty AAD, and the given prefix.
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
    let mut buf = Vec::with_capacity(header_len(prefix) + plaintext.len() + TAG_LEN);
    buf.resize(header_len(prefix), 0);
    buf.extend_from_slice(plaintext);
    seal_in_place_with_rng(recipient, prefix, info, &mut buf, rng)?;
    Ok(buf)
}

/// How many bytes [`seal_in_place`] needs reserved in front of the plaintext.
pub fn header_len(prefix: Prefix) -> usize {
    prefix.len() + ENC_LEN
}

/// Seals without copying the body: `buf` holds [`header_len`] reserved bytes followed
/// by the plaintext, and becomes the envelope (header written, body encrypted in place,
/// tag appended; reserve `TAG_LEN` more capacity to avoid a reallocation).
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
    let body_start = header_len(prefix);
    if buf.len() < body_start {
        return Err(SealError::NoHeaderRoom);
    }
    let (enc, mut ctx) = setup_sender_with_rng(recipient, info, rng)?;
    let mut header = Vec::with_capacity(body_start);
    prefix.write(&mut header);
    header.extend_from_slice(&enc);
    buf[..body_start].copy_from_slice(&header);
    let tag = ctx.seal_in_place(&[], &mut buf[body_start..])?;
    buf.extend_from_slice(&tag);
    Ok(())
}

// RFC 9180 §5.1.1
// def SetupBaseS(pkR, info):
//   shared_secret, enc = Encap(pkR)
//   return enc, KeyScheduleS(mode_base, shared_secret, info,
//                            default_psk, default_psk_id)
/// Sets up a base-mode sender context (RFC 9180 §5.1.1) and returns the encapsulated
/// key with it. The gateway seals one message per context; the context type exists so
/// that published multi-message vectors run through this module.
pub fn setup_sender_with_rng(
    recipient: &PublicKey,
    info: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<([u8; ENC_LEN], SenderContext), SealError> {
    if info.len() > MAX_INFO_LEN {
        return Err(SealError::InfoTooLong);
    }
    let (enc, ctx) =
        backend::setup_sender(&recipient.pk, info, rng).map_err(|()| SealError::Encap)?;
    Ok((enc, SenderContext { ctx }))
}

/// An HPKE sender context: seals messages in sequence (RFC 9180 §5.2).
pub struct SenderContext {
    ctx: backend::Sender,
}

impl SenderContext {
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
/// Opens an unprefixed envelope (`enc || ct || tag`) in place and returns the
/// plaintext, a sub-slice of `sealed`.
///
/// On failure `sealed` is left as it was if [`OPEN_KEEPS_INPUT_ON_FAILURE`] (the
/// default backend's AES-GCM checks the tag before it decrypts).
pub fn open_in_place<'a>(
    key: &PrivateKey,
    info: &[u8],
    sealed: &'a mut [u8],
) -> Result<&'a mut [u8], OpenError> {
    if sealed.len() < MIN_SEALED_LEN {
        return Err(OpenError::Truncated);
    }
    let (enc, rest) = sealed.split_at_mut(ENC_LEN);
    let mut ctx = setup_receiver(key, enc, info)?;
    ctx.open_in_place(&[], rest)
}

// RFC 9180 §5.1.1
// def SetupBaseR(enc, skR, info):
//   shared_secret = Decap(enc, skR)
//   return KeyScheduleR(mode_base, shared_secret, info,
//                       default_psk, default_psk_id)
/// Sets up a base-mode receiver context from an encapsulated key (RFC 9180 §5.1.1).
/// An `enc` of small order (all-zero shared secret) is refused here, before any context exists.
pub fn setup_receiver(
    key: &PrivateKey,
    enc: &[u8],
    info: &[u8],
) -> Result<ReceiverContext, OpenError> {
    if info.len() > MAX_INFO_LEN {
        return Err(OpenError::InfoTooLong);
    }
    let enc: &[u8; ENC_LEN] = enc.try_into().map_err(|_| OpenError::Truncated)?;
    let ctx =
        backend::setup_receiver(&key.sk, &key.public, enc, info).map_err(|()| OpenError::Decap)?;
    Ok(ReceiverContext { ctx })
}

/// An HPKE receiver context: opens messages in sequence (RFC 9180 §5.2).
pub struct ReceiverContext {
    ctx: backend::Receiver,
}

impl ReceiverContext {
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
    let mut buf = sealed.to_vec();
    let len = open_in_place(key, info, &mut buf)?.len();
    buf.truncate(ENC_LEN + len);
    buf.drain(..ENC_LEN);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(PublicKeyError::Length(31))
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
        let mut buf = vec![0u8; header_len(Prefix::Tink(9))];
        buf.extend_from_slice(b"in place");
        seal_in_place(&pk, Prefix::Tink(9), b"A", &mut buf).unwrap();
        assert_eq!(&buf[..5], &[1, 0, 0, 0, 9]);
        assert_eq!(open(&sk, b"A", &buf[5..]).unwrap(), b"in place");
    }

    /// rust-hpke (rozbb/rust-hpke), an implementation nobody here wrote, opens what this
    /// backend seals and seals what it opens, across sizes, infos and derived keys.
    #[test]
    fn agrees_with_rust_hpke_both_ways() {
        use hpke::aead::AesGcm256;
        use hpke::kdf::HkdfSha256;
        use hpke::kem::X25519HkdfSha256 as Kem;
        use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};

        for (i, len) in [0usize, 1, 15, 16, 17, 1024, 70_000]
            .into_iter()
            .enumerate()
        {
            let ikm = [i as u8 + 1; 32];
            let ours = PrivateKey::derive(&ikm);
            let (their_sk, their_pk) = Kem::derive_keypair(&ikm);
            assert_eq!(
                ours.public_key().to_bytes().as_slice(),
                their_pk.to_bytes().as_slice()
            );
            assert_eq!(ours.to_bytes().as_slice(), their_sk.to_bytes().as_slice());
            let info = format!("ACCT-{i}");
            let pt: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();

            // Ours seals, rust-hpke opens.
            let sealed = seal(&ours.public_key(), Prefix::Raw, info.as_bytes(), &pt).unwrap();
            let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed[..ENC_LEN]).unwrap();
            let mut ctx = hpke::setup_receiver::<AesGcm256, HkdfSha256, Kem>(
                &OpModeR::Base,
                &their_sk,
                &enc,
                info.as_bytes(),
            )
            .unwrap();
            assert_eq!(ctx.open(&sealed[ENC_LEN..], b"").unwrap(), pt, "len {len}");

            // rust-hpke seals, ours opens.
            let (enc, mut ctx) = hpke::setup_sender::<AesGcm256, HkdfSha256, Kem>(
                &OpModeS::Base,
                &their_pk,
                info.as_bytes(),
            )
            .unwrap();
            let mut theirs = enc.to_bytes().to_vec();
            theirs.extend_from_slice(&ctx.seal(&pt, b"").unwrap());
            assert_eq!(
                open(&ours, info.as_bytes(), &theirs).unwrap(),
                pt,
                "len {len}"
            );
            assert_eq!(
                open(&ours, b"another account", &theirs),
                Err(OpenError::Authentication)
            );
        }
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
