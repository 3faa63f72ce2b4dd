//! The default backend: X25519 from x25519-dalek, HKDF-SHA256 from the `hkdf` and `sha2`
//! crates, AES-GCM from `aes-gcm` and ChaCha20-Poly1305 from `chacha20poly1305`
//! (RustCrypto), under the RFC 9180 KEM and key schedule in [`super::schedule`].
//!
//! Why not rust-hpke's `setup_receiver`: its Decap recomputes the recipient's public key
//! from the private key on every message, a fixed-base scalar multiplication that costs
//! about a quarter of an open. Here the public key is computed once, when the key is
//! loaded. rust-hpke stays in the tests and benches as an independent implementation to
//! check this one against.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Tag};
use chacha20poly1305::ChaCha20Poly1305;
use rand_core::CryptoRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize as _, ZeroizeOnDrop, Zeroizing};

use super::schedule::{self, Nonces};
use crate::suite::{Aead, Suite};

/// The backend's name, for benches and logs.
pub(super) const NAME: &str = "rustcrypto";
/// AES-GCM in RustCrypto checks the tag before it decrypts: a failed open leaves the
/// buffer as it was.
pub(super) const OPEN_KEEPS_INPUT_ON_FAILURE: bool = true;

/// HKDF-SHA256 from the `hkdf` crate.
pub(super) struct RustCryptoHkdf;

/// The backend's HKDF-SHA256, for exports.
pub(super) type Hkdf = RustCryptoHkdf;

impl schedule::Hkdf for RustCryptoHkdf {
    fn extract(salt: &[u8], ikm: &[&[u8]]) -> Zeroizing<[u8; 32]> {
        let mut extract = hkdf::HkdfExtract::<Sha256>::new(Some(salt));
        for part in ikm {
            extract.input_ikm(part);
        }
        // The second half, an `Hkdf` keyed with the PRK, wipes its HMAC state on drop
        // (the `hmac` crate's `zeroize` feature); the PRK itself is a plain array.
        let (mut prk, _) = extract.finalize();
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&prk);
        prk.as_mut_slice().zeroize();
        out
    }

    fn expand<const N: usize>(prk: &[u8; 32], info: &[&[u8]], out: &mut [u8; N]) {
        // N is at most HashLen (checked at compile time in the schedule), so HKDF-Expand
        // is its first block, T(1) = HMAC(prk, info || 0x01), the block `hkdf` itself
        // computes; `Hkdf::from_prk(..).expand_multi_info` would return the same bytes
        // through a `Result` that cannot fail here. HMAC takes a
        // key shorter than its 64-byte block zero-padded to the block (RFC 2104 §2), so
        // the padded PRK is the same key, and a fixed-size key cannot be refused.
        use hkdf::hmac::{KeyInit, Mac};
        let mut key = Zeroizing::new([0u8; 64]);
        key[..32].copy_from_slice(prk);
        // A reference conversion: the padded key is not copied out of its wrapper.
        let mut mac = <hkdf::hmac::Hmac<Sha256> as KeyInit>::new((&*key).into());
        for part in info {
            mac.update(part);
        }
        mac.update(&[1u8]);
        // T(1) is the output itself (an AEAD key, a base nonce, a shared secret).
        let mut block = mac.finalize().into_bytes();
        out.copy_from_slice(&block[..N]);
        block.as_mut_slice().zeroize();
    }
}

/// A clamped X25519 scalar (x25519-dalek's `StaticSecret`: zeroized on drop).
#[derive(Clone)]
pub(super) struct SecretKey(StaticSecret);

// The one field is x25519-dalek's `StaticSecret`, which wipes itself on drop.
impl ZeroizeOnDrop for SecretKey {}

impl SecretKey {
    /// Moves a clamped scalar into x25519-dalek's wiped-on-drop `StaticSecret`.
    ///
    /// A copy remains: `StaticSecret` is built only from a `[u8; 32]` by value
    /// (`From<[u8; 32]>`; no constructor takes a reference or fills in place), so the
    /// scalar passes through an argument temporary on the stack that safe code cannot
    /// wipe. `scalar` itself is wiped when it drops here; in optimized builds the move
    /// is usually written straight into the result.
    fn from_scalar(scalar: Zeroizing<[u8; 32]>) -> Self {
        Self(StaticSecret::from(*scalar))
    }

    pub(super) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self::from_array(bytes.try_into().ok()?))
    }

    /// The (clamped) key of a 32-byte scalar.
    pub(super) fn from_array(bytes: &[u8; 32]) -> Self {
        Self::from_scalar(schedule::clamp(Zeroizing::new(*bytes)))
    }

    pub(super) fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        // Copied from a reference: `StaticSecret::to_bytes` would return an unwiped copy.
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(self.0.as_bytes());
        out
    }
}

/// X25519 for the shared KEM steps in [`super::schedule`].
impl schedule::Dh for SecretKey {
    fn derive(ikm: &[u8]) -> Self {
        Self::from_scalar(schedule::derive_secret::<RustCryptoHkdf>(ikm))
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
        // `SharedSecret` wipes itself on drop; copied from a reference, not `to_bytes`.
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(shared.as_bytes());
        Ok(out)
    }
}

/// One of the suites' AEADs, keyed.
enum Cipher {
    Aes128(Aes128Gcm),
    Aes256(Aes256Gcm),
    ChaCha(ChaCha20Poly1305),
}

impl Cipher {
    fn new(aead: Aead, key: &[u8; 32]) -> Self {
        // Reference conversions: the key is not copied out of its wiped wrapper.
        match aead {
            Aead::Aes128Gcm => {
                let (short, _) = key.split_first_chunk::<16>().unwrap_or((&[0; 16], &[]));
                Cipher::Aes128(Aes128Gcm::new(short.into()))
            }
            Aead::Aes256Gcm => Cipher::Aes256(Aes256Gcm::new(key.into())),
            Aead::ChaCha20Poly1305 => Cipher::ChaCha(ChaCha20Poly1305::new(key.into())),
        }
    }

    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16], ()> {
        let tag = match self {
            Cipher::Aes128(c) => c.encrypt_inout_detached(nonce.into(), aad, buf.into()),
            Cipher::Aes256(c) => c.encrypt_inout_detached(nonce.into(), aad, buf.into()),
            Cipher::ChaCha(c) => c.encrypt_inout_detached(nonce.into(), aad, buf.into()),
        }
        .map_err(drop)?;
        Ok(tag.into())
    }

    fn open(&self, nonce: &[u8; 12], aad: &[u8], body: &mut [u8], tag: &Tag) -> Result<(), ()> {
        match self {
            Cipher::Aes128(c) => c.decrypt_inout_detached(nonce.into(), aad, body.into(), tag),
            Cipher::Aes256(c) => c.decrypt_inout_detached(nonce.into(), aad, body.into(), tag),
            Cipher::ChaCha(c) => c.decrypt_inout_detached(nonce.into(), aad, body.into(), tag),
        }
        .map_err(drop)
    }
}

/// The AEAD half of a context.
struct Context {
    cipher: Cipher,
    nonces: Nonces,
}

// `Aes128Gcm`/`Aes256Gcm` wipe their round keys and GHASH key on drop (aes-gcm's
// `zeroize` feature), `ChaCha20Poly1305` its key (chacha20poly1305's `zeroize`
// feature); `Nonces` wipes the base nonce.
impl ZeroizeOnDrop for Context {}

impl Context {
    fn new(suite: Suite, shared: &[u8; 32], info: &[u8]) -> Self {
        let (key, nonces) = schedule::key_schedule::<RustCryptoHkdf>(suite, shared, info);
        Self::from_schedule(suite, &key, nonces)
    }

    fn from_schedule(suite: Suite, key: &[u8; 32], nonces: Nonces) -> Self {
        Self {
            cipher: Cipher::new(suite.aead, key),
            nonces,
        }
    }
}

pub(super) struct Sender(Context);
pub(super) struct Receiver(Context);

impl ZeroizeOnDrop for Sender {}
impl ZeroizeOnDrop for Receiver {}

/// Compile-time: every field these markers vouch for does wipe itself.
const _: () = {
    fn wipes<T: ZeroizeOnDrop>() {}
    let _ = wipes::<StaticSecret>;
    let _ = wipes::<Aes128Gcm>;
    let _ = wipes::<Aes256Gcm>;
    let _ = wipes::<ChaCha20Poly1305>;
    let _ = wipes::<Nonces>;
};

/// DHKEM(X25519) `Encap`: `enc` and the shared secret.
pub(super) fn encap(
    recipient: &[u8; 32],
    rng: &mut impl CryptoRng,
) -> Result<([u8; 32], Zeroizing<[u8; 32]>), ()> {
    schedule::encap::<RustCryptoHkdf, SecretKey>(recipient, rng)
}

/// DHKEM(X25519) `Encap` with a given ephemeral key (published examples only).
pub(super) fn encap_with(
    ephemeral: &SecretKey,
    recipient: &[u8; 32],
) -> Result<([u8; 32], Zeroizing<[u8; 32]>), ()> {
    schedule::encap_with::<RustCryptoHkdf, SecretKey>(ephemeral, recipient)
}

/// DHKEM(X25519) `Decap`.
pub(super) fn decap(
    key: &SecretKey,
    own_public: &[u8; 32],
    enc: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, ()> {
    schedule::decap::<RustCryptoHkdf, SecretKey>(key, own_public, enc)
}

/// The constructors both roles share: from the key schedule, with its exporter secret,
/// and from a key and nonce derived elsewhere (Oblivious HTTP's response, RFC 9458 §4.4;
/// the key's first `Nk` bytes count).
macro_rules! constructors {
    ($($role:ident),*) => {$(
        impl $role {
            pub(super) fn new(suite: Suite, shared: &[u8; 32], info: &[u8]) -> Result<Self, ()> {
                Ok(Self(Context::new(suite, shared, info)))
            }

            pub(super) fn exporting(
                suite: Suite,
                shared: &[u8; 32],
                info: &[u8],
            ) -> Result<(Self, Zeroizing<[u8; 32]>), ()> {
                let (key, nonces, exporter) =
                    schedule::key_schedule_exporting::<RustCryptoHkdf>(suite, shared, info);
                Ok((Self(Context::from_schedule(suite, &key, nonces)), exporter))
            }

            pub(super) fn from_key(
                suite: Suite,
                key: &[u8; 32],
                nonce: &[u8; 12],
            ) -> Result<Self, ()> {
                Ok(Self(Context::from_schedule(suite, key, Nonces::from_base(*nonce))))
            }
        }
    )*};
}

constructors!(Sender, Receiver);

impl Sender {
    pub(super) fn seal_in_place(&mut self, aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16], ()> {
        let nonce = self.0.nonces.next()?;
        self.0.cipher.seal(&nonce, aad, buf)
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
        let nonce = self.0.nonces.next()?;
        self.0
            .cipher
            .open(&nonce, aad, body, &tag)
            .map_err(|()| self.0.nonces.undo())
    }
}
