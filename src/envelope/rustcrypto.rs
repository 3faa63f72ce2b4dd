//! The default backend: X25519 from x25519-dalek, HKDF-SHA256 from the `hkdf` and `sha2`
//! crates and AES-256-GCM from `aes-gcm` (RustCrypto), under the RFC 9180 KEM and key
//! schedule in [`super::schedule`].
//!
//! Why not rust-hpke's `setup_receiver`: its Decap recomputes the recipient's public key
//! from the private key on every message, a fixed-base scalar multiplication that costs
//! about a quarter of an open. Here the public key is computed once, when the key is
//! loaded. rust-hpke stays in the tests and benches as an independent implementation to
//! check this one against.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand_core::CryptoRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::schedule::{self, Nonces};

/// The backend's name, for benches and logs.
pub(super) const NAME: &str = "rustcrypto";
/// AES-GCM in RustCrypto checks the tag before it decrypts: a failed open leaves the
/// buffer as it was.
pub(super) const OPEN_KEEPS_INPUT_ON_FAILURE: bool = true;

/// HKDF-SHA256 from the `hkdf` crate.
struct RustCryptoHkdf;

impl schedule::Hkdf for RustCryptoHkdf {
    fn extract(salt: &[u8], ikm: &[&[u8]]) -> Zeroizing<[u8; 32]> {
        let mut extract = hkdf::HkdfExtract::<Sha256>::new(Some(salt));
        for part in ikm {
            extract.input_ikm(part);
        }
        let (prk, _) = extract.finalize();
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&prk);
        out
    }

    fn expand(prk: &[u8; 32], info: &[&[u8]], out: &mut [u8]) {
        // Every output here is at most HashLen, so HKDF-Expand is its first block,
        // T(1) = HMAC(prk, info || 0x01), the block `hkdf` itself computes. HMAC takes a
        // key shorter than its 64-byte block zero-padded to the block (RFC 2104 §2), so
        // the padded PRK is the same key, and a fixed-size key cannot be refused.
        use hkdf::hmac::{KeyInit, Mac};
        debug_assert!(out.len() <= 32);
        let mut key = Zeroizing::new([0u8; 64]);
        key[..32].copy_from_slice(prk);
        let mut mac = <hkdf::hmac::Hmac<Sha256> as KeyInit>::new(&(*key).into());
        for part in info {
            mac.update(part);
        }
        mac.update(&[1u8]);
        let block = mac.finalize().into_bytes();
        out.copy_from_slice(&block[..out.len()]);
    }
}

/// A clamped X25519 scalar (x25519-dalek's `StaticSecret`: zeroized on drop).
#[derive(Clone)]
pub(super) struct SecretKey(StaticSecret);

impl SecretKey {
    pub(super) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut sk = Zeroizing::new([0u8; 32]);
        sk.copy_from_slice(bytes.get(..32).filter(|_| bytes.len() == 32)?);
        Some(Self(StaticSecret::from(*schedule::clamp(sk))))
    }

    pub(super) fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }
}

/// X25519 for the shared KEM steps in [`super::schedule`].
impl schedule::Dh for SecretKey {
    fn derive(ikm: &[u8]) -> Self {
        Self(StaticSecret::from(
            *schedule::derive_secret::<RustCryptoHkdf>(ikm),
        ))
    }

    fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }

    fn dh(&self, peer: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, ()> {
        let shared = self.0.diffie_hellman(&PublicKey::from(*peer));
        // RFC 9180 §7.1.4: an all-zero shared secret (a small-order peer) must be refused.
        if !shared.was_contributory() {
            return Err(());
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

/// The AEAD half of a context.
struct Context {
    aead: Aes256Gcm,
    nonces: Nonces,
}

impl Context {
    fn new(shared: &[u8; 32], info: &[u8]) -> Self {
        let (key, nonces) = schedule::key_schedule::<RustCryptoHkdf>(shared, info);
        let aead = Aes256Gcm::new(&(*key).into());
        Self { aead, nonces }
    }
}

pub(super) struct Sender(Context);
pub(super) struct Receiver(Context);

pub(super) fn setup_sender(
    recipient: &[u8; 32],
    info: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<([u8; 32], Sender), ()> {
    let (enc, shared) = schedule::encap::<RustCryptoHkdf, SecretKey>(recipient, rng)?;
    Ok((enc, Sender(Context::new(&shared, info))))
}

pub(super) fn setup_receiver(
    key: &SecretKey,
    own_public: &[u8; 32],
    enc: &[u8; 32],
    info: &[u8],
) -> Result<Receiver, ()> {
    let shared = schedule::decap::<RustCryptoHkdf, SecretKey>(key, own_public, enc)?;
    Ok(Receiver(Context::new(&shared, info)))
}

impl Sender {
    pub(super) fn seal_in_place(&mut self, aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16], ()> {
        let nonce = Nonce::from(self.0.nonces.next()?);
        let tag = self
            .0
            .aead
            .encrypt_inout_detached(&nonce, aad, buf.into())
            .map_err(drop)?;
        Ok(tag.into())
    }
}

impl Receiver {
    pub(super) fn open_in_place(
        &mut self,
        aad: &[u8],
        body: &mut [u8],
        tag: &[u8],
    ) -> Result<(), ()> {
        let tag = Tag::try_from(tag).map_err(drop)?;
        let nonce = Nonce::from(self.0.nonces.next()?);
        self.0
            .aead
            .decrypt_inout_detached(&nonce, aad, body.into(), &tag)
            .map_err(|_| self.0.nonces.undo())
    }
}
