//! The `aws-lc` backend: X25519, HMAC-SHA256, AES-GCM and ChaCha20-Poly1305 from aws-lc-rs, under the
//! RFC 9180 KEM and key schedule in [`super::schedule`]. The recipient's public key is
//! computed once, when the key is loaded, not per request.

use aws_lc_rs::aead::{
    AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey,
};
use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519};
use aws_lc_rs::hmac;
use rand_core::CryptoRng;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use super::schedule::{self, Nonces};
use crate::suite::{Aead, Suite};

/// The backend's name, for benches and logs.
pub(super) const NAME: &str = "aws-lc";
/// AWS-LC may have written into the buffer when a tag does not verify.
pub(super) const OPEN_KEEPS_INPUT_ON_FAILURE: bool = false;

/// A clamped X25519 scalar, zeroized on drop, and AWS-LC's key parsed from it once.
///
/// Parsing computes the public key (a fixed-base multiplication: AWS-LC's
/// `x25519_set_priv_raw`), so it happens when the key is made, not per operation: an
/// ephemeral key costs one parse and one agreement, a server key one agreement.
pub(super) struct SecretKey {
    scalar: Zeroizing<[u8; 32]>,
    /// `None` only if AWS-LC refused a 32-byte scalar, which it does not; every use
    /// then fails closed (`dh`) or falls back to x25519-dalek (`public`).
    parsed: Option<agreement::PrivateKey>,
}

// The scalar is in `Zeroizing`; AWS-LC's key lives in memory AWS-LC allocated, and its
// `OPENSSL_free` wipes every allocation before it frees it (crypto/mem.c).
impl ZeroizeOnDrop for SecretKey {}

impl Clone for SecretKey {
    fn clone(&self) -> Self {
        Self::new(self.scalar.clone())
    }
}

impl SecretKey {
    fn new(scalar: Zeroizing<[u8; 32]>) -> Self {
        let parsed = agreement::PrivateKey::from_private_key(&X25519, &*scalar).ok();
        Self { scalar, parsed }
    }

    pub(super) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self::from_array(bytes.try_into().ok()?))
    }

    /// The (clamped) key of a 32-byte scalar.
    pub(super) fn from_array(bytes: &[u8; 32]) -> Self {
        Self::new(schedule::clamp(Zeroizing::new(*bytes)))
    }

    pub(super) fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.scalar.clone()
    }
}

/// X25519 for the shared KEM steps in [`super::schedule`].
impl schedule::Dh for SecretKey {
    fn derive(ikm: &[u8]) -> Self {
        Self::new(schedule::derive_secret::<AwsLcHkdf>(ikm))
    }

    fn public(&self) -> [u8; 32] {
        let aws = self
            .parsed
            .as_ref()
            .map(agreement::PrivateKey::compute_public_key);
        match aws {
            Some(Ok(pk)) if pk.as_ref().len() == 32 => {
                let mut out = [0u8; 32];
                out.copy_from_slice(pk.as_ref());
                out
            }
            // Any valid scalar has a public key; x25519-dalek computes the same one.
            // (Not reached in practice. `StaticSecret` takes the scalar only by value, so
            // an argument temporary may stay on the stack; the `StaticSecret` is wiped.)
            _ => *x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*self.scalar))
                .as_bytes(),
        }
    }

    fn dh(&self, peer: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, ()> {
        let me = self.parsed.as_ref().ok_or(())?;
        // The slice `agree` hands over is aws-lc-rs's own buffer, which it does not wipe
        // and this code cannot reach; the copy taken here is wiped.
        let shared = agreement::agree(me, UnparsedPublicKey::new(&X25519, peer), (), |z| {
            let mut out = Zeroizing::new([0u8; 32]);
            out.copy_from_slice(z);
            Ok(out)
        })?;
        // RFC 9180 §7.1.4: an all-zero shared secret must be refused.
        if shared.iter().all(|&b| b == 0) {
            return Err(());
        }
        Ok(shared)
    }
}

/// HKDF-SHA256 as HMAC-SHA256 from aws-lc-rs.
///
/// A copy remains in each step: aws-lc-rs returns an HMAC result as `hmac::Tag`, a
/// `Copy` struct with a private array and no `Drop`, which safe code cannot wipe; it
/// stays on this function's stack frame until later calls overwrite it. (aws-lc-rs's
/// `hkdf::Prk` is wiped, but it hides the PRK bytes the shared key schedule needs and
/// would cost an allocation per step.) The HMAC keys themselves live in AWS-LC's
/// `HMAC_CTX`, which AWS-LC cleanses when freed.
pub(super) struct AwsLcHkdf;

/// The backend's HKDF-SHA256, for exports.
pub(super) type Hkdf = AwsLcHkdf;

impl schedule::Hkdf for AwsLcHkdf {
    fn extract(salt: &[u8], ikm: &[&[u8]]) -> Zeroizing<[u8; 32]> {
        // HKDF-Extract(salt, ikm) = HMAC(salt, ikm); an empty salt is HashLen zero bytes,
        // which HMAC pads to the same key.
        let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
        let mut ctx = hmac::Context::with_key(&key);
        for part in ikm {
            ctx.update(part);
        }
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn expand<const N: usize>(prk: &[u8; 32], info: &[&[u8]], out: &mut [u8; N]) {
        // N is at most HashLen (checked at compile time in the schedule): HKDF-Expand is
        // one block, HMAC(prk, info || 0x01). aws-lc-rs's `hkdf::Prk` hides the PRK the
        // shared schedule passes around (see above).
        let key = hmac::Key::new(hmac::HMAC_SHA256, prk);
        let mut ctx = hmac::Context::with_key(&key);
        for part in info {
            ctx.update(part);
        }
        ctx.update(&[1u8]);
        let tag = ctx.sign();
        out.copy_from_slice(&tag.as_ref()[..N]);
    }
}

/// The AEAD half of a context.
struct Context {
    key: LessSafeKey,
    nonces: Nonces,
}

// `LessSafeKey` holds its AES key schedule in AWS-LC memory, which AWS-LC cleanses when
// it frees it (`OPENSSL_free`); `Nonces` wipes the base nonce.
impl ZeroizeOnDrop for Context {}

impl Context {
    fn new(suite: Suite, shared: &[u8; 32], info: &[u8]) -> Result<Self, ()> {
        let (key, nonces) = schedule::key_schedule::<AwsLcHkdf>(suite, shared, info);
        Self::from_schedule(suite, &key, nonces)
    }

    fn from_schedule(suite: Suite, key: &[u8; 32], nonces: Nonces) -> Result<Self, ()> {
        let algorithm = match suite.aead {
            Aead::Aes128Gcm => &AES_128_GCM,
            Aead::Aes256Gcm => &AES_256_GCM,
            Aead::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        };
        let key_bytes = key.get(..suite.aead.key_len()).ok_or(())?;
        let key = LessSafeKey::new(UnboundKey::new(algorithm, key_bytes).map_err(drop)?);
        Ok(Self { key, nonces })
    }

    fn next_nonce(&mut self) -> Result<Nonce, ()> {
        // A copy remains: aws-lc-rs's `Nonce` takes the nonce by value and does not wipe
        // it. The per-message nonce is derived from the base nonce, which is wiped.
        Ok(Nonce::assume_unique_for_key(*self.nonces.next()?))
    }
}

pub(super) struct Sender(Context);
pub(super) struct Receiver(Context);

impl ZeroizeOnDrop for Sender {}
impl ZeroizeOnDrop for Receiver {}

/// Compile-time: the Rust-side secrets these markers vouch for do wipe themselves.
const _: () = {
    fn wipes<T: ZeroizeOnDrop>() {}
    let _ = wipes::<Zeroizing<[u8; 32]>>;
    let _ = wipes::<Nonces>;
};

/// DHKEM(X25519) `Encap`: `enc` and the shared secret.
pub(super) fn encap(
    recipient: &[u8; 32],
    rng: &mut impl CryptoRng,
) -> Result<([u8; 32], Zeroizing<[u8; 32]>), ()> {
    schedule::encap::<AwsLcHkdf, SecretKey>(recipient, rng)
}

/// DHKEM(X25519) `Encap` with a given ephemeral key (published examples only).
pub(super) fn encap_with(
    ephemeral: &SecretKey,
    recipient: &[u8; 32],
) -> Result<([u8; 32], Zeroizing<[u8; 32]>), ()> {
    schedule::encap_with::<AwsLcHkdf, SecretKey>(ephemeral, recipient)
}

/// DHKEM(X25519) `Decap`.
pub(super) fn decap(
    key: &SecretKey,
    own_public: &[u8; 32],
    enc: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, ()> {
    schedule::decap::<AwsLcHkdf, SecretKey>(key, own_public, enc)
}

/// The constructors both roles share: from the key schedule, with its exporter secret,
/// and from a key and nonce derived elsewhere (Oblivious HTTP's response, RFC 9458 §4.4;
/// the key's first `Nk` bytes count).
macro_rules! constructors {
    ($($role:ident),*) => {$(
        impl $role {
            pub(super) fn new(suite: Suite, shared: &[u8; 32], info: &[u8]) -> Result<Self, ()> {
                Ok(Self(Context::new(suite, shared, info)?))
            }

            pub(super) fn exporting(
                suite: Suite,
                shared: &[u8; 32],
                info: &[u8],
            ) -> Result<(Self, Zeroizing<[u8; 32]>), ()> {
                let (key, nonces, exporter) =
                    schedule::key_schedule_exporting::<AwsLcHkdf>(suite, shared, info);
                Ok((Self(Context::from_schedule(suite, &key, nonces)?), exporter))
            }

            pub(super) fn from_key(
                suite: Suite,
                key: &[u8; 32],
                nonce: &[u8; 12],
            ) -> Result<Self, ()> {
                Ok(Self(Context::from_schedule(suite, key, Nonces::from_base(*nonce))?))
            }
        }
    )*};
}

constructors!(Sender, Receiver);

impl Sender {
    pub(super) fn seal_in_place(&mut self, aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16], ()> {
        let nonce = self.0.next_nonce()?;
        let tag = self
            .0
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), buf)
            .map_err(drop)?;
        let mut out = [0u8; 16];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }
}

impl Receiver {
    pub(super) fn open_in_place(
        &mut self,
        aad: &[u8],
        body: &mut [u8],
        tag: &[u8],
    ) -> Result<(), ()> {
        let nonce = self.0.next_nonce()?;
        match self
            .0
            .key
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, body)
        {
            Ok(_) => Ok(()),
            Err(_) => {
                self.0.nonces.undo();
                Err(())
            }
        }
    }
}
