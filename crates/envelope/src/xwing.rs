//! The X-Wing KEM (draft-connolly-cfrg-xwing-kem-06: ML-KEM-768 and X25519 under a
//! SHA3-256 combiner) as HPKE's KEM `0x647a` (draft-ietf-hpke-pq), on both backends.
//!
//! Why not the `x-wing` crate's key type: its `decapsulate` expands the 32-byte seed
//! again on every message (SHAKE256, an ML-KEM key generation and an X25519 base-point
//! multiplication), which would more than double the cost of an open. Here the seed is
//! expanded once, when the key is loaded, and the draft's few lines of combiner sit over
//! `libcrux-ml-kem` (Cryspen's ML-KEM, whose portable and AVX2 code is formally
//! verified; AVX2 chosen at run time on x86-64, NEON on aarch64) and the backend's X25519
//! (aws-lc's, or x25519-dalek in the pure-Rust build). Why libcrux and not RustCrypto's `ml-kem`: an
//! encapsulation plus a decapsulation cost about 50 µs instead of about 310 µs on the
//! project's machine (docs/performance.md). The `x-wing` crate (through rust-hpke, on
//! RustCrypto's `ml-kem`), RustCrypto's `ml-kem` itself and the draft's own vectors
//! check this module in the tests.

use libcrux_ml_kem::mlkem768::{self, MlKem768Ciphertext, MlKem768PrivateKey, MlKem768PublicKey};
use rand_core::CryptoRng;
use sha3::Digest;
use sha3::digest::Update as _;
use shake::{ExtendableOutput as _, Shake256, XofReader as _};
use zeroize::{Zeroize as _, ZeroizeOnDrop, Zeroizing};

use crate::backend::SecretKey as X25519Secret;
use crate::schedule::Dh as _;
use crate::suite::Kem;

/// `Npk`: an ML-KEM-768 encapsulation key (1184 bytes) and an X25519 public key.
pub(crate) const PUBLIC_LEN: usize = 1216;
/// `Nenc`: an ML-KEM-768 ciphertext (1088 bytes) and an X25519 public key.
pub(crate) const ENC_LEN: usize = 1120;
const ML_KEM_PUBLIC_LEN: usize = 1184;
const ML_KEM_CT_LEN: usize = 1088;
/// `XWingLabel`, the draft's six ASCII bytes `\.//^\`.
const LABEL: &[u8; 6] = br"\.//^\";

/// libcrux's ML-KEM-768 decapsulation key (its 2,400-byte packed form), boxed so it
/// stays in one place, and wiped on drop (libcrux's type does not wipe itself).
#[derive(Clone)]
pub(crate) struct MlKemSecret(Box<MlKem768PrivateKey>);

impl Drop for MlKemSecret {
    fn drop(&mut self) {
        self.0[0..].zeroize();
    }
}

impl ZeroizeOnDrop for MlKemSecret {}

/// An X-Wing private key: the draft's 32-byte seed, with what it expands to.
#[derive(Clone)]
pub(crate) struct SecretKey {
    seed: Zeroizing<[u8; 32]>,
    sk_m: MlKemSecret,
    sk_x: X25519Secret,
    public: PublicKey,
}

// The seed is in `Zeroizing`, the ML-KEM key in `MlKemSecret` (wiped on drop), the
// backend's X25519 key wipes itself; the public key is public.
impl ZeroizeOnDrop for SecretKey {}

/// An X-Wing public key, checked once.
#[derive(Clone)]
pub(crate) struct PublicKey {
    pk_m: Box<MlKem768PublicKey>,
    bytes: Box<[u8; PUBLIC_LEN]>,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "XWingPublicKey({:02x?}..)", &self.bytes[..8])
    }
}

impl SecretKey {
    // draft-connolly-cfrg-xwing-kem-06 §5.2
    // def expandDecapsulationKey(sk):
    //   expanded = SHAKE256(sk, 96)
    //   (pk_M, sk_M) = ML-KEM-768.KeyGen_internal(expanded[0:32], expanded[32:64])
    //   sk_X = expanded[64:96]
    //   pk_X = X25519(sk_X, X25519_BASE)
    //   return (sk_M, sk_X, pk_M, pk_X)
    /// The key of a 32-byte seed.
    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        let mut xof = Shake256::default();
        xof.update(seed);
        let mut reader = xof.finalize_xof();
        let mut d_z = Zeroizing::new([0u8; 64]);
        reader.read(&mut *d_z);
        let mut x = Zeroizing::new([0u8; 32]);
        reader.read(&mut *x);
        // `generate_key_pair` takes its input by value and libcrux returns the key pair
        // by value: such temporaries may stay on the stack (as for X25519 keys, see the
        // backends).
        let (sk_m, pk_m) = mlkem768::generate_key_pair(*d_z).into_parts();
        let sk_m = MlKemSecret(Box::new(sk_m));
        // X25519 clamps the scalar itself (RFC 7748 §5): the clamped key is the same key.
        let sk_x = X25519Secret::from_array(&x);
        let mut bytes = Box::new([0u8; PUBLIC_LEN]);
        bytes[..ML_KEM_PUBLIC_LEN].copy_from_slice(pk_m.as_slice());
        bytes[ML_KEM_PUBLIC_LEN..].copy_from_slice(&sk_x.public());
        let public = PublicKey {
            pk_m: Box::new(pk_m),
            bytes,
        };
        Self {
            seed: Zeroizing::new(*seed),
            sk_m,
            sk_x,
            public,
        }
    }

    // draft-ietf-hpke-pq §4 (the KEM's DeriveKeyPair for HPKE)
    // def DeriveKeyPair(ikm):
    //   seed = SHAKE256.LabeledDerive(ikm, "DeriveKeyPair", "", 32)
    //   return KEM.DeriveKeyPair(seed)
    /// `DeriveKeyPair(ikm)`.
    pub(crate) fn derive(ikm: &[u8]) -> Self {
        let suite_id = Kem::XWing.suite_id();
        let mut xof = Shake256::default();
        xof.update(ikm);
        xof.update(b"HPKE-v1");
        xof.update(&suite_id);
        xof.update(&(b"DeriveKeyPair".len() as u16).to_be_bytes());
        xof.update(b"DeriveKeyPair");
        xof.update(&32u16.to_be_bytes());
        let mut seed = Zeroizing::new([0u8; 32]);
        xof.finalize_xof().read(&mut *seed);
        Self::from_seed(&seed)
    }

    /// The 32-byte seed, in a buffer wiped on drop.
    pub(crate) fn seed(&self) -> Zeroizing<[u8; 32]> {
        self.seed.clone()
    }

    pub(crate) fn public(&self) -> &PublicKey {
        &self.public
    }
}

impl PublicKey {
    /// Parses an encapsulation key: 1184 bytes of ML-KEM-768 key (checked as FIPS 203
    /// §7.2 requires) and an X25519 key that is not of small order.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, ()> {
        let bytes: &[u8; PUBLIC_LEN] = bytes.try_into().map_err(drop)?;
        let pk_m = MlKem768PublicKey::try_from(&bytes[..ML_KEM_PUBLIC_LEN]).map_err(drop)?;
        if !mlkem768::validate_public_key(&pk_m) {
            return Err(());
        }
        let pk_x: [u8; 32] = bytes[ML_KEM_PUBLIC_LEN..].try_into().map_err(drop)?;
        if crate::x25519_is_low_order(&pk_x) {
            return Err(());
        }
        Ok(Self {
            pk_m: Box::new(pk_m),
            bytes: Box::new(*bytes),
        })
    }

    pub(crate) fn as_bytes(&self) -> &[u8; PUBLIC_LEN] {
        &self.bytes
    }

    fn pk_x(&self) -> [u8; 32] {
        let mut pk_x = [0u8; 32];
        pk_x.copy_from_slice(&self.bytes[ML_KEM_PUBLIC_LEN..]);
        pk_x
    }
}

// draft-connolly-cfrg-xwing-kem-06 §5.3
// def Combiner(ss_M, ss_X, ct_X, pk_X):
//   return SHA3-256(concat(ss_M, ss_X, ct_X, pk_X, XWingLabel))
fn combiner(ss_m: &[u8], ss_x: &[u8], ct_x: &[u8], pk_x: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut h = sha3::Sha3_256::new();
    for part in [ss_m, ss_x, ct_x, pk_x, &LABEL[..]] {
        Digest::update(&mut h, part);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&h.finalize());
    out
}

/// `Encapsulate(pk)`: writes `enc` (1120 bytes) into `enc_out` and returns the shared
/// secret.
pub(crate) fn encap(
    pk: &PublicKey,
    rng: &mut impl CryptoRng,
    enc_out: &mut [u8],
) -> Result<Zeroizing<[u8; 32]>, ()> {
    let mut eseed = Zeroizing::new([0u8; 64]);
    rng.fill_bytes(&mut *eseed);
    encap_derand(pk, &eseed, enc_out)
}

// draft-connolly-cfrg-xwing-kem-06 §5.4
// def EncapsulateDerand(pk, eseed):
//   pk_M = pk[0:1184]; pk_X = pk[1184:1216]
//   ek_X = eseed[32:64]
//   ct_X = X25519(ek_X, X25519_BASE)
//   ss_X = X25519(ek_X, pk_X)
//   (ss_M, ct_M) = ML-KEM-768.EncapsDerand(pk_M, eseed[0:32])
//   ss = Combiner(ss_M, ss_X, ct_X, pk_X)
//   ct = concat(ct_M, ct_X)
//   return (ss, ct)
/// `EncapsulateDerand(pk, eseed)`, for published vectors and [`encap`].
pub(crate) fn encap_derand(
    pk: &PublicKey,
    eseed: &[u8; 64],
    enc_out: &mut [u8],
) -> Result<Zeroizing<[u8; 32]>, ()> {
    if enc_out.len() != ENC_LEN {
        return Err(());
    }
    let pk_x = pk.pk_x();
    let mut ek_x = Zeroizing::new([0u8; 32]);
    ek_x.copy_from_slice(&eseed[32..]);
    let ek_x = X25519Secret::from_array(&ek_x);
    let ct_x = ek_x.public();
    // Refuses an all-zero secret (a small-order `pk_X`), as the backends' DHKEM does.
    let ss_x = ek_x.dh(&pk_x)?;
    let mut m = Zeroizing::new([0u8; 32]);
    m.copy_from_slice(&eseed[..32]);
    // libcrux takes `m` by value: that argument copy may stay on the stack, unwiped.
    let (ct_m, ss_m) = mlkem768::encapsulate(&pk.pk_m, *m);
    let ss_m = Zeroizing::new(ss_m);
    enc_out[..ML_KEM_CT_LEN].copy_from_slice(ct_m.as_slice());
    enc_out[ML_KEM_CT_LEN..].copy_from_slice(&ct_x);
    Ok(combiner(&*ss_m, &*ss_x, &ct_x, &pk_x))
}

// draft-connolly-cfrg-xwing-kem-06 §5.5
// def Decapsulate(ct, sk):
//   (sk_M, sk_X, pk_M, pk_X) = expandDecapsulationKey(sk)
//   ct_M = ct[0:1088]; ct_X = ct[1088:1120]
//   ss_M = ML-KEM-768.Decapsulate(sk_M, ct_M)
//   ss_X = X25519(sk_X, ct_X)
//   return Combiner(ss_M, ss_X, ct_X, pk_X)
/// `Decapsulate(ct, sk)`. An X25519 half that gives an all-zero secret (a small-order
/// `ct_X`) is refused, as RFC 9180 refuses it in DHKEM; an honest sender never makes one.
pub(crate) fn decap(sk: &SecretKey, enc: &[u8]) -> Result<Zeroizing<[u8; 32]>, ()> {
    if enc.len() != ENC_LEN {
        return Err(());
    }
    let ct_m = MlKem768Ciphertext::try_from(&enc[..ML_KEM_CT_LEN]).map_err(drop)?;
    let ct_x: [u8; 32] = enc[ML_KEM_CT_LEN..].try_into().map_err(drop)?;
    let ss_x = sk.sk_x.dh(&ct_x)?;
    let ss_m = Zeroizing::new(mlkem768::decapsulate(&sk.sk_m.0, &ct_m));
    Ok(combiner(&*ss_m, &*ss_x, &ct_x, &sk.public.pk_x()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &serde_json::Value) -> Vec<u8> {
        let s = s.as_str().unwrap();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The X-Wing draft's own vectors (spec/test-vectors.json, unchanged from draft 05 to
    /// 10; tests/vectors/PROVENANCE-pq.md): the seed gives `pk`, `eseed` gives `ct` and
    /// `ss`, and decapsulating `ct` gives `ss`.
    #[test]
    fn the_drafts_kem_vectors() {
        let all: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../tests/vectors/xwing-kem.json")).unwrap();
        assert_eq!(all.len(), 3);
        for v in &all {
            let seed: [u8; 32] = hex(&v["seed"]).try_into().unwrap();
            let sk = SecretKey::from_seed(&seed);
            assert_eq!(sk.public().as_bytes().to_vec(), hex(&v["pk"]));
            let pk = PublicKey::from_bytes(&hex(&v["pk"])).unwrap();
            let eseed: [u8; 64] = hex(&v["eseed"]).try_into().unwrap();
            let mut ct = vec![0u8; ENC_LEN];
            let ss = encap_derand(&pk, &eseed, &mut ct).unwrap();
            assert_eq!(ct, hex(&v["ct"]));
            assert_eq!(ss.to_vec(), hex(&v["ss"]));
            assert_eq!(decap(&sk, &ct).unwrap().to_vec(), hex(&v["ss"]));
        }
    }

    /// libcrux's ML-KEM-768 against RustCrypto's, an independent implementation: the
    /// same seed gives the same encapsulation key, the same message the same ciphertext
    /// and secret, RustCrypto decapsulates libcrux's ciphertext, and a tampered
    /// ciphertext gives both the same implicit-rejection secret. The same for libcrux's
    /// portable code, which runs where the CPU has no AVX2 (CI's has).
    #[test]
    fn ml_kem_agrees_with_rustcrypto() {
        use ml_kem::array::Array;
        use ml_kem::{B32, Decapsulate as _, KeyExport as _, ml_kem_768};
        for i in 0..16u8 {
            let mut d_z = [0u8; 64];
            let mut xof = Shake256::default();
            xof.update(&[i]);
            xof.finalize_xof().read(&mut d_z);
            let theirs = ml_kem_768::DecapsulationKey::from_seed(Array(d_z));
            let (ours_sk, ours_pk) = mlkem768::generate_key_pair(d_z).into_parts();
            let ek = theirs.encapsulation_key();
            assert_eq!(&ek.to_bytes()[..], &ours_pk.as_slice()[..]);
            let m = [i ^ 0x5a; 32];
            let (their_ct, their_ss) = ek.encapsulate_deterministic(&B32::from(m));
            let (our_ct, our_ss) = mlkem768::encapsulate(&ours_pk, m);
            assert_eq!(&their_ct[..], &our_ct.as_slice()[..]);
            assert_eq!(&their_ss[..], &our_ss[..]);
            assert_eq!(
                &theirs.decapsulate(&Array::try_from(&our_ct.as_slice()[..]).unwrap())[..],
                &our_ss[..]
            );
            // libcrux's portable code gives the same.
            let (p_sk, p_pk) = mlkem768::portable::generate_key_pair(d_z).into_parts();
            assert_eq!(p_pk.as_slice(), ours_pk.as_slice());
            assert_eq!(p_sk.as_slice(), ours_sk.as_slice());
            let (p_ct, p_ss) = mlkem768::portable::encapsulate(&p_pk, m);
            assert_eq!((p_ct.as_slice(), p_ss), (our_ct.as_slice(), our_ss));
            assert_eq!(mlkem768::portable::decapsulate(&p_sk, &p_ct), our_ss);
            let mut bad = our_ct.as_slice().to_vec();
            bad[i as usize * 7] ^= 1;
            let bad_ct = MlKem768Ciphertext::try_from(&bad[..]).unwrap();
            let ours = mlkem768::decapsulate(&ours_sk, &bad_ct);
            let theirs_ss = theirs.decapsulate(&Array::try_from(&bad[..]).unwrap());
            assert_eq!(&ours[..], &theirs_ss[..], "implicit rejection");
            assert_eq!(mlkem768::portable::decapsulate(&p_sk, &bad_ct), ours);
            assert_ne!(ours, our_ss);
        }
    }
}
