//! The `aws-lc` backend: X25519, HMAC-SHA256 and AES-256-GCM from aws-lc-rs, with the
//! RFC 9180 KEM and key schedule written out below (each step under the RFC's own
//! pseudo-code). The recipient's public key is computed once, when the key is loaded,
//! not per request.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519};
use aws_lc_rs::hmac;
use hpke::rand_core::CryptoRng;
use zeroize::Zeroizing;

/// The backend's name, for benches and logs.
pub(super) const NAME: &str = "aws-lc";
/// AWS-LC may have written into the buffer when a tag does not verify.
pub(super) const OPEN_KEEPS_INPUT_ON_FAILURE: bool = false;

const KEM_SUITE_ID: &[u8] = b"KEM\x00\x20";
const HPKE_SUITE_ID: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x02";

/// A clamped X25519 scalar, zeroized on drop.
#[derive(Clone)]
pub(super) struct SecretKey(Zeroizing<[u8; 32]>);

impl SecretKey {
    // RFC 9180 §7.1.3
    // def DeriveKeyPair(ikm):
    //   dkp_prk = LabeledExtract("", "dkp_prk", ikm)
    //   sk = LabeledExpand(dkp_prk, "sk", "", Nsk)
    pub(super) fn derive(ikm: &[u8]) -> Self {
        let prk = labeled_extract(KEM_SUITE_ID, b"", b"dkp_prk", ikm);
        let mut sk = Zeroizing::new([0u8; 32]);
        labeled_expand(KEM_SUITE_ID, &prk, b"sk", b"", &mut *sk);
        Self(clamp(sk))
    }

    pub(super) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut sk = Zeroizing::new([0u8; 32]);
        sk.copy_from_slice(bytes.get(..32).filter(|_| bytes.len() == 32)?);
        Some(Self(clamp(sk)))
    }

    pub(super) fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.0.clone()
    }

    pub(super) fn public(&self) -> [u8; 32] {
        let aws = agreement::PrivateKey::from_private_key(&X25519, &*self.0)
            .and_then(|k| k.compute_public_key().map_err(Into::into));
        match aws {
            Ok(pk) if pk.as_ref().len() == 32 => {
                let mut out = [0u8; 32];
                out.copy_from_slice(pk.as_ref());
                out
            }
            // Any valid scalar has a public key; x25519-dalek computes the same one.
            _ => *x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*self.0))
                .as_bytes(),
        }
    }

    fn dh(&self, peer: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, ()> {
        let me = agreement::PrivateKey::from_private_key(&X25519, &*self.0).map_err(drop)?;
        let shared = agreement::agree(&me, UnparsedPublicKey::new(&X25519, peer), (), |z| {
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

fn clamp(mut k: Zeroizing<[u8; 32]>) -> Zeroizing<[u8; 32]> {
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    k
}

// RFC 9180 §4
// def LabeledExtract(salt, label, ikm):
//   labeled_ikm = concat("HPKE-v1", suite_id, label, ikm)
//   return Extract(salt, labeled_ikm)
fn labeled_extract(suite: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    // HKDF-Extract(salt, ikm) = HMAC(salt, ikm); an empty salt is HashLen zero bytes,
    // which HMAC pads to the same key.
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let mut ctx = hmac::Context::with_key(&key);
    for part in [b"HPKE-v1".as_slice(), suite, label, ikm] {
        ctx.update(part);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

// RFC 9180 §4
// def LabeledExpand(prk, label, info, L):
//   labeled_info = concat(I2OSP(L, 2), "HPKE-v1", suite_id, label, info)
//   return Expand(prk, labeled_info, L)
fn labeled_expand(suite: &[u8], prk: &[u8; 32], label: &[u8], info: &[u8], out: &mut [u8]) {
    // Every output here is at most HashLen: HKDF-Expand is one block, HMAC(prk, info || 0x01).
    debug_assert!(out.len() <= 32);
    let key = hmac::Key::new(hmac::HMAC_SHA256, prk);
    let mut ctx = hmac::Context::with_key(&key);
    let len = (out.len() as u16).to_be_bytes();
    for part in [len.as_slice(), b"HPKE-v1", suite, label, info, &[1u8]] {
        ctx.update(part);
    }
    let tag = ctx.sign();
    out.copy_from_slice(&tag.as_ref()[..out.len()]);
}

// RFC 9180 §4.1
// def ExtractAndExpand(dh, kem_context):
//   eae_prk = LabeledExtract("", "eae_prk", dh)
//   shared_secret = LabeledExpand(eae_prk, "shared_secret", kem_context, Nsecret)
fn extract_and_expand(dh: &[u8; 32], enc: &[u8; 32], pk_r: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let prk = labeled_extract(KEM_SUITE_ID, b"", b"eae_prk", dh);
    let mut kem_context = [0u8; 64];
    kem_context[..32].copy_from_slice(enc);
    kem_context[32..].copy_from_slice(pk_r);
    let mut shared = Zeroizing::new([0u8; 32]);
    labeled_expand(
        KEM_SUITE_ID,
        &prk,
        b"shared_secret",
        &kem_context,
        &mut *shared,
    );
    shared
}

/// The AEAD half of a context: key, base nonce, sequence number.
struct Context {
    key: LessSafeKey,
    base_nonce: [u8; 12],
    seq: u64,
}

// RFC 9180 §5.1
// def KeySchedule<ROLE>(mode, shared_secret, info, psk, psk_id):
//   psk_id_hash = LabeledExtract("", "psk_id_hash", psk_id)
//   info_hash = LabeledExtract("", "info_hash", info)
//   key_schedule_context = concat(mode, psk_id_hash, info_hash)
//   secret = LabeledExtract(shared_secret, "secret", psk)
//   key = LabeledExpand(secret, "key", key_schedule_context, Nk)
//   base_nonce = LabeledExpand(secret, "base_nonce", key_schedule_context, Nn)
fn key_schedule(shared_secret: &[u8; 32], info: &[u8]) -> Result<Context, ()> {
    let psk_id_hash = labeled_extract(HPKE_SUITE_ID, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(HPKE_SUITE_ID, b"", b"info_hash", info);
    let mut ks_context = [0u8; 65];
    ks_context[1..33].copy_from_slice(&*psk_id_hash);
    ks_context[33..].copy_from_slice(&*info_hash);
    let secret = labeled_extract(HPKE_SUITE_ID, shared_secret, b"secret", b"");
    let mut key = Zeroizing::new([0u8; 32]);
    labeled_expand(HPKE_SUITE_ID, &secret, b"key", &ks_context, &mut *key);
    let mut base_nonce = [0u8; 12];
    labeled_expand(
        HPKE_SUITE_ID,
        &secret,
        b"base_nonce",
        &ks_context,
        &mut base_nonce,
    );
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &*key).map_err(drop)?);
    Ok(Context {
        key,
        base_nonce,
        seq: 0,
    })
}

impl Context {
    // RFC 9180 §5.2
    // def ComputeNonce(self, seq):
    //   seq_bytes = I2OSP(seq, Nn)
    //   return xor(self.base_nonce, seq_bytes)
    fn next_nonce(&mut self) -> Result<Nonce, ()> {
        let mut nonce = self.base_nonce;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or(())?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

pub(super) struct Sender(Context);
pub(super) struct Receiver(Context);

// RFC 9180 §4.1
// def Encap(pkR):
//   skE, pkE = GenerateKeyPair()
//   dh = DH(skE, pkR)
//   enc = SerializePublicKey(pkE)
//   kem_context = concat(enc, SerializePublicKey(pkR))
//   shared_secret = ExtractAndExpand(dh, kem_context)
pub(super) fn setup_sender(
    recipient: &[u8; 32],
    info: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<([u8; 32], Sender), ()> {
    // GenerateKeyPair as DeriveKeyPair(random(Nsk)), as rust-hpke does.
    let mut ikm = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut *ikm);
    let ephemeral = SecretKey::derive(&*ikm);
    let enc = ephemeral.public();
    let dh = ephemeral.dh(recipient)?;
    let shared = extract_and_expand(&dh, &enc, recipient);
    Ok((enc, Sender(key_schedule(&shared, info)?)))
}

// RFC 9180 §4.1
// def Decap(enc, skR):
//   pkE = DeserializePublicKey(enc)
//   dh = DH(skR, pkE)
//   kem_context = concat(enc, SerializePublicKey(pk(skR)))
//   shared_secret = ExtractAndExpand(dh, kem_context)
pub(super) fn setup_receiver(
    key: &SecretKey,
    own_public: &[u8; 32],
    enc: &[u8; 32],
    info: &[u8],
) -> Result<Receiver, ()> {
    let dh = key.dh(enc)?;
    let shared = extract_and_expand(&dh, enc, own_public);
    Ok(Receiver(key_schedule(&shared, info)?))
}

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
        // The sequence number only advances on success (RFC 9180 §5.2, ContextR.Open).
        let seq = self.0.seq;
        let nonce = self.0.next_nonce()?;
        match self
            .0
            .key
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, body)
        {
            Ok(_) => Ok(()),
            Err(_) => {
                self.0.seq = seq;
                Err(())
            }
        }
    }
}
