//! The default backend: the `hpke` crate (rust-hpke) over x25519-dalek and RustCrypto
//! AES-GCM.

use hpke::aead::{AeadCtxR, AeadCtxS, AeadTag, AesGcm256};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::rand_core::CryptoRng;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

type Kem = X25519HkdfSha256;
type KemPrivateKey = <Kem as hpke::Kem>::PrivateKey;
type KemPublicKey = <Kem as hpke::Kem>::PublicKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// The backend's name, for benches and logs.
pub(super) const NAME: &str = "rust-hpke";
/// AES-GCM in RustCrypto checks the tag before it decrypts: a failed open leaves the
/// buffer as it was.
pub(super) const OPEN_KEEPS_INPUT_ON_FAILURE: bool = true;

/// A private key (x25519-dalek's `StaticSecret` inside: zeroized on drop).
#[derive(Clone)]
pub(super) struct SecretKey(KemPrivateKey);

impl SecretKey {
    pub(super) fn derive(ikm: &[u8]) -> Self {
        Self(Kem::derive_keypair(ikm).0)
    }

    pub(super) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        KemPrivateKey::from_bytes(bytes).ok().map(Self)
    }

    pub(super) fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        let mut scalar = self.0.to_bytes();
        out.copy_from_slice(&scalar);
        zeroize::Zeroize::zeroize(scalar.as_mut_slice());
        out
    }

    pub(super) fn public(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&Kem::sk_to_pk(&self.0).to_bytes());
        out
    }
}

pub(super) struct Sender(AeadCtxS<AesGcm256, HkdfSha256, Kem>);
pub(super) struct Receiver(AeadCtxR<AesGcm256, HkdfSha256, Kem>);

pub(super) fn setup_sender(
    recipient: &[u8; 32],
    info: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<([u8; 32], Sender), ()> {
    let pk = KemPublicKey::from_bytes(recipient).map_err(drop)?;
    let (enc, ctx) =
        hpke::setup_sender_with_rng::<AesGcm256, HkdfSha256, Kem>(&OpModeS::Base, &pk, info, rng)
            .map_err(drop)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&enc.to_bytes());
    Ok((out, Sender(ctx)))
}

/// `_own_public` is unused: rust-hpke recomputes the recipient's public key itself.
pub(super) fn setup_receiver(
    key: &SecretKey,
    _own_public: &[u8; 32],
    enc: &[u8; 32],
    info: &[u8],
) -> Result<Receiver, ()> {
    let enc = EncappedKey::from_bytes(enc).map_err(drop)?;
    hpke::setup_receiver::<AesGcm256, HkdfSha256, Kem>(&OpModeR::Base, &key.0, &enc, info)
        .map(Receiver)
        .map_err(drop)
}

impl Sender {
    pub(super) fn seal_in_place(&mut self, aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16], ()> {
        let tag = self.0.seal_inout_detached(buf.into(), aad).map_err(drop)?;
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.to_bytes());
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
        let tag = AeadTag::<AesGcm256>::from_bytes(tag).map_err(drop)?;
        self.0
            .open_inout_detached(body.into(), aad, &tag)
            .map_err(drop)
    }
}
