//! RFC 9180's DHKEM(X25519, HKDF-SHA256) and base-mode key schedule (HKDF-SHA256, for
//! every suite's AEAD), written once over the HKDF a backend supplies. Each step sits
//! under the RFC's own pseudo-code.
//!
//! The backends differ only in where X25519, HMAC-SHA256 and the AEADs come from; the
//! labels, lengths and the order of the steps live here. X-Wing's KEM is in
//! [`crate::xwing`]; its shared secret enters the same key schedule.

use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::suite::{Kem, Suite};

/// `suite_id = concat("KEM", I2OSP(kem_id, 2))` of DHKEM(X25519, HKDF-SHA256).
const KEM_SUITE_ID: &[u8] = &Kem::X25519HkdfSha256.suite_id();

/// HKDF-SHA256 as a backend provides it. Inputs come in parts so that labels are
/// never concatenated into a temporary buffer.
pub(super) trait Hkdf {
    /// `Extract(salt, concat(ikm...))`.
    fn extract(salt: &[u8], ikm: &[&[u8]]) -> Zeroizing<[u8; 32]>;
    /// `Expand(prk, concat(info...), N)` for `N` at most `HashLen` (32): the first
    /// block `T(1) = HMAC(prk, info || 0x01)`, truncated. Every HPKE output of this
    /// suite (keys, nonces, secrets) fits one block, and [`labeled_expand`] refuses a
    /// longer `N` at compile time, so the one-block form is exact, not a shortcut.
    fn expand<const N: usize>(prk: &[u8; 32], info: &[&[u8]], out: &mut [u8; N]);
}

// RFC 9180 §4
// def LabeledExtract(salt, label, ikm):
//   labeled_ikm = concat("HPKE-v1", suite_id, label, ikm)
//   return Extract(salt, labeled_ikm)
fn labeled_extract<H: Hkdf>(
    suite: &[u8],
    salt: &[u8],
    label: &[u8],
    ikm: &[u8],
) -> Zeroizing<[u8; 32]> {
    H::extract(salt, &[b"HPKE-v1", suite, label, ikm])
}

// RFC 9180 §4
// def LabeledExpand(prk, label, info, L):
//   labeled_info = concat(I2OSP(L, 2), "HPKE-v1", suite_id, label, info)
//   return Expand(prk, labeled_info, L)
fn labeled_expand<H: Hkdf, const N: usize>(
    suite: &[u8],
    prk: &[u8; 32],
    label: &[u8],
    info: &[u8],
    out: &mut [u8; N],
) {
    const { assert!(N <= 32, "HKDF-Expand here is one HashLen block") };
    let len = (N as u16).to_be_bytes();
    H::expand(prk, &[&len, b"HPKE-v1", suite, label, info], out);
}

// RFC 9180 §7.1.3
// def DeriveKeyPair(ikm):
//   dkp_prk = LabeledExtract("", "dkp_prk", ikm)
//   sk = LabeledExpand(dkp_prk, "sk", "", Nsk)
/// The private key of `DeriveKeyPair(ikm)`, clamped (RFC 7748 §5).
pub(super) fn derive_secret<H: Hkdf>(ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let prk = labeled_extract::<H>(KEM_SUITE_ID, b"", b"dkp_prk", ikm);
    let mut sk = Zeroizing::new([0u8; 32]);
    labeled_expand::<H, 32>(KEM_SUITE_ID, &prk, b"sk", b"", &mut sk);
    clamp(sk)
}

/// RFC 7748 §5 clamping. A clamped scalar is the same X25519 key as the unclamped one.
pub(super) fn clamp(mut k: Zeroizing<[u8; 32]>) -> Zeroizing<[u8; 32]> {
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    k
}

// RFC 9180 §4.1
// def ExtractAndExpand(dh, kem_context):
//   eae_prk = LabeledExtract("", "eae_prk", dh)
//   shared_secret = LabeledExpand(eae_prk, "shared_secret", kem_context, Nsecret)
/// The KEM's shared secret; `kem_context = concat(enc, pkR)` for both Encap and Decap.
fn extract_and_expand<H: Hkdf>(
    dh: &[u8; 32],
    enc: &[u8; 32],
    pk_r: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    let prk = labeled_extract::<H>(KEM_SUITE_ID, b"", b"eae_prk", dh);
    let mut kem_context = [0u8; 64];
    kem_context[..32].copy_from_slice(enc);
    kem_context[32..].copy_from_slice(pk_r);
    let mut shared = Zeroizing::new([0u8; 32]);
    labeled_expand::<H, 32>(
        KEM_SUITE_ID,
        &prk,
        b"shared_secret",
        &kem_context,
        &mut shared,
    );
    shared
}

/// X25519 as a backend provides it.
pub(super) trait Dh: Sized {
    /// `DeriveKeyPair(ikm)`'s private key.
    fn derive(ikm: &[u8]) -> Self;
    /// The public key.
    fn public(&self) -> [u8; 32];
    /// `DH(sk, pk)`, refusing an all-zero result (a small-order peer, RFC 9180 §7.1.4).
    fn dh(&self, peer: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, ()>;
}

// RFC 9180 §4.1
// def Encap(pkR):
//   skE, pkE = GenerateKeyPair()
//   dh = DH(skE, pkR)
//   enc = SerializePublicKey(pkE)
//   kem_context = concat(enc, SerializePublicKey(pkR))
//   shared_secret = ExtractAndExpand(dh, kem_context)
//   return shared_secret, enc
/// `enc` and the shared secret. GenerateKeyPair is DeriveKeyPair(random(Nsk)), as
/// rust-hpke does it: a published vector's ikmE then reproduces its enc.
pub(super) fn encap<H: Hkdf, K: Dh>(
    recipient: &[u8; 32],
    rng: &mut impl CryptoRng,
) -> Result<([u8; 32], Zeroizing<[u8; 32]>), ()> {
    let mut ikm = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut *ikm);
    let ephemeral = K::derive(&*ikm);
    let enc = ephemeral.public();
    let dh = ephemeral.dh(recipient)?;
    Ok((enc, extract_and_expand::<H>(&dh, &enc, recipient)))
}

/// [`encap`] with a given ephemeral key instead of a random one: for published examples
/// that give `skE` rather than `ikmE` (RFC 9458 Appendix A).
pub(super) fn encap_with<H: Hkdf, K: Dh>(
    ephemeral: &K,
    recipient: &[u8; 32],
) -> Result<([u8; 32], Zeroizing<[u8; 32]>), ()> {
    let enc = ephemeral.public();
    let dh = ephemeral.dh(recipient)?;
    Ok((enc, extract_and_expand::<H>(&dh, &enc, recipient)))
}

// RFC 9180 §4.1
// def Decap(enc, skR):
//   pkE = DeserializePublicKey(enc)
//   dh = DH(skR, pkE)
//   kem_context = concat(enc, SerializePublicKey(pk(skR)))
//   shared_secret = ExtractAndExpand(dh, kem_context)
/// The shared secret. `own_public` is `pk(skR)`, computed once when the key was loaded.
pub(super) fn decap<H: Hkdf, K: Dh>(
    key: &K,
    own_public: &[u8; 32],
    enc: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, ()> {
    let dh = key.dh(enc)?;
    Ok(extract_and_expand::<H>(&dh, enc, own_public))
}

// RFC 9180 §5.1
// def KeySchedule<ROLE>(mode, shared_secret, info, psk, psk_id):
//   psk_id_hash = LabeledExtract("", "psk_id_hash", psk_id)
//   info_hash = LabeledExtract("", "info_hash", info)
//   key_schedule_context = concat(mode, psk_id_hash, info_hash)
//   secret = LabeledExtract(shared_secret, "secret", psk)
//   key = LabeledExpand(secret, "key", key_schedule_context, Nk)
//   base_nonce = LabeledExpand(secret, "base_nonce", key_schedule_context, Nn)
/// Base mode (`mode_base` = 0, empty psk and psk_id): the AEAD key (its first
/// `Nk` bytes; the rest are zero) and its nonces.
pub(super) fn key_schedule<H: Hkdf>(
    suite: Suite,
    shared_secret: &[u8; 32],
    info: &[u8],
) -> (Zeroizing<[u8; 32]>, Nonces) {
    key_schedule_with::<H>(suite, shared_secret, info, None)
}

// RFC 9180 §5.1
//   exporter_secret = LabeledExpand(secret, "exp", key_schedule_context, Nh)
/// [`key_schedule`] and the context's exporter secret (RFC 9180 §5.3), for a context
/// that exports (Oblivious HTTP's response key). The Tink-format envelope exports
/// nothing, so its contexts skip this expansion.
pub(super) fn key_schedule_exporting<H: Hkdf>(
    suite: Suite,
    shared_secret: &[u8; 32],
    info: &[u8],
) -> (Zeroizing<[u8; 32]>, Nonces, Zeroizing<[u8; 32]>) {
    let mut exporter = Zeroizing::new([0u8; 32]);
    let (key, nonces) = key_schedule_with::<H>(suite, shared_secret, info, Some(&mut exporter));
    (key, nonces, exporter)
}

// RFC 9180 §5.3
// def Context.Export(exporter_context, L):
//   return LabeledExpand(self.exporter_secret, "sec", exporter_context, L)
/// A secret exported from a context: `N` bytes, at most `Nh` (32; every use here).
pub(super) fn export<H: Hkdf, const N: usize>(
    suite: Suite,
    exporter_secret: &[u8; 32],
    exporter_context: &[u8],
) -> Zeroizing<[u8; N]> {
    let mut out = Zeroizing::new([0u8; N]);
    labeled_expand::<H, N>(
        &suite.hpke_suite_id(),
        exporter_secret,
        b"sec",
        exporter_context,
        &mut out,
    );
    out
}

fn key_schedule_with<H: Hkdf>(
    suite: Suite,
    shared_secret: &[u8; 32],
    info: &[u8],
    exporter: Option<&mut [u8; 32]>,
) -> (Zeroizing<[u8; 32]>, Nonces) {
    let suite_id = &suite.hpke_suite_id();
    let psk_id_hash = labeled_extract::<H>(suite_id, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract::<H>(suite_id, b"", b"info_hash", info);
    let mut ks_context = [0u8; 65];
    ks_context[1..33].copy_from_slice(&*psk_id_hash);
    ks_context[33..].copy_from_slice(&*info_hash);
    let secret = labeled_extract::<H>(suite_id, shared_secret, b"secret", b"");
    let mut key = Zeroizing::new([0u8; 32]);
    // `L` is part of the label, so each key length is its own expansion.
    if suite.aead.key_len() == 16 {
        let (short, _) = key.split_at_mut(16);
        if let Ok(short) = <&mut [u8; 16]>::try_from(short) {
            labeled_expand::<H, 16>(suite_id, &secret, b"key", &ks_context, short);
        }
    } else {
        labeled_expand::<H, 32>(suite_id, &secret, b"key", &ks_context, &mut key);
    }
    // Expanded straight into its wiped-on-drop home: no copy of the base nonce is left
    // on the stack.
    let mut nonces = Nonces {
        base: [0u8; 12],
        seq: 0,
    };
    labeled_expand::<H, 12>(
        suite_id,
        &secret,
        b"base_nonce",
        &ks_context,
        &mut nonces.base,
    );
    if let Some(exporter) = exporter {
        labeled_expand::<H, 32>(suite_id, &secret, b"exp", &ks_context, exporter);
    }
    (key, nonces)
}

/// A context's base nonce and sequence number (RFC 9180 §5.2), wiped on drop: the base
/// nonce is derived from the shared secret, as rust-hpke treats it.
pub(super) struct Nonces {
    base: [u8; 12],
    seq: u64,
}

impl Zeroize for Nonces {
    fn zeroize(&mut self) {
        self.base.zeroize();
        self.seq.zeroize();
    }
}

impl Drop for Nonces {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for Nonces {}

impl Nonces {
    /// A context's nonces from a base nonce derived elsewhere (Oblivious HTTP's response
    /// nonce), starting at sequence number 0: the first nonce is the base nonce itself.
    pub(super) fn from_base(base: [u8; 12]) -> Self {
        Self { base, seq: 0 }
    }

    // RFC 9180 §5.2
    // def ComputeNonce(self, seq):
    //   seq_bytes = I2OSP(seq, Nn)
    //   return xor(self.base_nonce, seq_bytes)
    /// The nonce for the current sequence number; the number advances. Errs once the
    /// sequence is exhausted (RFC 9180 §5.2, `MessageLimitReachedError`).
    pub(super) fn next(&mut self) -> Result<Zeroizing<[u8; 12]>, ()> {
        let mut nonce = Zeroizing::new([0u8; 12]);
        nonce.copy_from_slice(&self.base);
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or(())?;
        Ok(nonce)
    }

    /// Takes back the last [`Nonces::next`]: a receiver's sequence number only advances
    /// when a message opens (RFC 9180 §5.2, `ContextR.Open`).
    pub(super) fn undo(&mut self) {
        self.seq -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed-output HKDF stand-in: every expand writes 0xAA bytes.
    struct Fill;

    impl Hkdf for Fill {
        fn extract(_salt: &[u8], _ikm: &[&[u8]]) -> Zeroizing<[u8; 32]> {
            Zeroizing::new([0x11; 32])
        }

        fn expand<const N: usize>(_prk: &[u8; 32], _info: &[&[u8]], out: &mut [u8; N]) {
            out.fill(0xAA);
        }
    }

    #[test]
    fn nonces_wipe_clears_the_base_nonce_and_sequence() {
        let (_, mut nonces) = key_schedule::<Fill>(Suite::X25519_AES_256_GCM, &[7u8; 32], b"info");
        assert_eq!(nonces.base, [0xAA; 12]);
        nonces.next().unwrap();
        nonces.zeroize();
        assert_eq!(nonces.base, [0u8; 12]);
        assert_eq!(nonces.seq, 0);
    }

    #[test]
    fn nonces_are_xor_of_base_and_sequence() {
        let (_, mut nonces) = key_schedule::<Fill>(Suite::X25519_AES_256_GCM, &[7u8; 32], b"info");
        assert_eq!(*nonces.next().unwrap(), [0xAA; 12]);
        let mut second = [0xAA; 12];
        second[11] ^= 1;
        assert_eq!(*nonces.next().unwrap(), second);
    }

    /// Compile-time: each type that holds key-schedule secrets is wiped when dropped.
    #[test]
    fn secret_holders_zeroize_on_drop() {
        fn wipes<T: ZeroizeOnDrop>() {}
        wipes::<Nonces>();
    }
}
