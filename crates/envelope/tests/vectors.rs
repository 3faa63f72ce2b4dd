//! Published test vectors through the project's own code: RFC 9180's official HPKE
//! vectors (Appendix A), Wycheproof's X25519 and AES-GCM vectors. The files are copied
//! into tests/vectors/ with their provenance (tests/vectors/README.md) and read with
//! `include_str!`, so a missing file fails the build instead of skipping.

use hpke_envelope::formats as keys;
use hpke_envelope::{
    self as envelope, OpenError, Prefix, PrivateKey, PublicKey, PublicKeyError, SenderContext,
    Suite,
};

/// `Nenc` of DHKEM(X25519).
const ENC_LEN: usize = 32;
use serde_json::Value;

const RFC9180: &str = include_str!("vectors/hpke/rfc9180-x25519-sha256.json");
const HPKE_PQ_XWING: &str = include_str!("vectors/hpke-pq-xwing.json");
const WYCHEPROOF_X25519: &str = include_str!("vectors/wycheproof/x25519_test.json");
const WYCHEPROOF_AES_GCM: &str = include_str!("vectors/wycheproof/aes_gcm_test.json");

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// RFC 7748 clamping. The vectors print DeriveKeyPair's scalar as derived; the key
/// type (rust-hpke) keeps and serializes it clamped, which is the same X25519 key.
fn clamp(mut k: Vec<u8>) -> Vec<u8> {
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    k
}

/// An RNG that yields fixed bytes: with `ikmE` it makes the sender's ephemeral key
/// exactly `DeriveKeyPair(ikmE)`, as the vectors do.
struct FixedRng(Vec<u8>);

impl hpke::rand_core::TryRng for FixedRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        unreachable!("the KEM asks for bytes")
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        unreachable!("the KEM asks for bytes")
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        assert!(
            dst.len() <= self.0.len(),
            "asked for more randomness than ikmE"
        );
        let rest = self.0.split_off(dst.len());
        dst.copy_from_slice(&self.0);
        self.0 = rest;
        Ok(())
    }
}
impl hpke::rand_core::TryCryptoRng for FixedRng {}

/// Base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, and the suite's AEAD.
fn suite_vectors(suite: Suite) -> Vec<Value> {
    let all: Vec<Value> = serde_json::from_str(RFC9180).unwrap();
    assert_eq!(all.len(), 16, "the filtered file has 16 entries");
    all.into_iter()
        .filter(|v| {
            v["mode"] == 0
                && v["kem_id"] == 32
                && v["kdf_id"] == 1
                && v["aead_id"] == u64::from(suite.aead.id())
        })
        .collect()
}

/// The default suite's vectors.
fn gateway_suite_vectors() -> Vec<Value> {
    suite_vectors(Suite::X25519_AES_256_GCM)
}

/// RFC 9180 has one base-mode vector for each X25519 suite the gateway offers: every one
/// of its 257 encryptions, both ways.
#[test]
fn rfc9180_base_x25519_every_aead_every_encryption() {
    for suite in [
        Suite::X25519_AES_256_GCM,
        Suite::X25519_AES_128_GCM,
        Suite::X25519_CHACHA20_POLY1305,
    ] {
        let vectors = suite_vectors(suite);
        assert_eq!(vectors.len(), 1, "one base-mode vector for {suite}");
        assert_eq!(check_rfc9180_vector(suite, &vectors[0]), 257, "{suite}");
    }
}

fn check_rfc9180_vector(suite: Suite, v: &Value) -> usize {
    let mut checked = 0;
    {
        // Keys from the vector's ikm (RFC 9180 §7.1.3 DeriveKeyPair).
        let sk_r = PrivateKey::derive_for(suite, &hex(&v["ikmR"]));
        assert_eq!(sk_r.to_bytes().as_slice(), clamp(hex(&v["skRm"])));
        let pk_r = sk_r.public_key();
        assert_eq!(pk_r.to_bytes().to_vec(), hex(&v["pkRm"]));
        let sk_e = PrivateKey::derive_for(suite, &hex(&v["ikmE"]));
        assert_eq!(sk_e.to_bytes().as_slice(), clamp(hex(&v["skEm"])));
        assert_eq!(sk_e.public_key().to_bytes().to_vec(), hex(&v["pkEm"]));
        let info = hex(&v["info"]);

        // Sender: the encapsulated key and every ciphertext, in sequence.
        let (enc, mut sender): (_, SenderContext) =
            envelope::setup_sender_with_rng(&pk_r, &info, &mut FixedRng(hex(&v["ikmE"]))).unwrap();
        assert_eq!(enc.to_vec(), hex(&v["enc"]));
        let encryptions = v["encryptions"].as_array().unwrap();
        assert_eq!(encryptions.len(), 257);
        for e in encryptions {
            let ct = sender.seal(&hex(&e["aad"]), &hex(&e["pt"])).unwrap();
            assert_eq!(ct, hex(&e["ct"]), "seal, aad {}", e["aad"]);
        }

        // Receiver: open every ciphertext, in sequence.
        let mut receiver = envelope::setup_receiver(&sk_r, &enc, &info).unwrap();
        for e in encryptions {
            let pt = receiver.open(&hex(&e["aad"]), &hex(&e["ct"])).unwrap();
            assert_eq!(pt, hex(&e["pt"]));
            checked += 1;
        }

        // The single-shot envelope with the vector's keys: sequence 0, Tink framing.
        let sealed = envelope::seal_with_rng(
            &pk_r,
            Prefix::Tink(7),
            &info,
            b"gateway",
            &mut FixedRng(hex(&v["ikmE"])),
        )
        .unwrap();
        assert_eq!(&sealed[5..5 + ENC_LEN], hex(&v["enc"]).as_slice());
        let first = &encryptions[0];
        let mut sender0 =
            envelope::setup_sender_with_rng(&pk_r, &info, &mut FixedRng(hex(&v["ikmE"])))
                .unwrap()
                .1;
        assert_eq!(
            &sealed[5 + ENC_LEN..],
            sender0.seal(&[], b"gateway").unwrap().as_slice()
        );
        let mut ct0 = hex(&first["ct"]);
        let mut r0 = envelope::setup_receiver(&sk_r, &enc, &info).unwrap();
        assert_eq!(
            r0.open_in_place(&hex(&first["aad"]), &mut ct0).unwrap(),
            hex(&first["pt"]).as_slice()
        );
        assert_eq!(
            envelope::open(&sk_r, &info, &sealed[5..]).unwrap(),
            b"gateway"
        );
    }
    checked
}

/// draft-ietf-hpke-pq's vector for X-Wing, HKDF-SHA256, ChaCha20-Poly1305 (base mode;
/// the only X-Wing suite with HKDF-SHA256 it publishes: there is no published X-Wing +
/// AES-256-GCM vector, which Tink and hpke-js cover instead): `ikmR` gives `skRm`
/// (the seed) and `pkRm`; `ikmE` is the encapsulation randomness (X-Wing's 64-byte
/// `eseed`) and gives `enc`; all 10 encryptions seal and open in sequence.
#[test]
fn hpke_pq_xwing_chacha20poly1305_every_encryption() {
    let all: Vec<Value> = serde_json::from_str(HPKE_PQ_XWING).unwrap();
    assert_eq!(all.len(), 1);
    let v = &all[0];
    assert_eq!(
        (v["mode"].as_u64(), v["kem_id"].as_u64()),
        (Some(0), Some(0x647a))
    );
    assert_eq!(
        (v["kdf_id"].as_u64(), v["aead_id"].as_u64()),
        (Some(1), Some(3))
    );
    let suite = Suite::XWING_AES_256_GCM.with_aead(hpke_envelope::Aead::ChaCha20Poly1305);
    let sk_r = PrivateKey::derive_for(suite, &hex(&v["ikmR"]));
    assert_eq!(sk_r.to_bytes().to_vec(), hex(&v["skRm"]));
    let pk_r = sk_r.public_key();
    assert_eq!(pk_r.to_bytes(), hex(&v["pkRm"]));
    let info = hex(&v["info"]);
    let eseed: [u8; 64] = hex(&v["ikmE"]).try_into().unwrap();
    let (enc, mut sender) = envelope::setup_sender_xwing_derand(&pk_r, &info, &eseed).unwrap();
    assert_eq!(enc, hex(&v["enc"]));
    let encryptions = v["encryptions"].as_array().unwrap();
    assert_eq!(encryptions.len(), 10);
    let mut receiver = envelope::setup_receiver(&sk_r, &enc, &info).unwrap();
    for e in encryptions {
        let ct = sender.seal(&hex(&e["aad"]), &hex(&e["pt"])).unwrap();
        assert_eq!(ct, hex(&e["ct"]));
        assert_eq!(receiver.open(&hex(&e["aad"]), &ct).unwrap(), hex(&e["pt"]));
    }
    // The same key in the offered suite (AES-256-GCM) does not open ChaCha20 ciphertexts.
    let aes = sk_r.with_suite(Suite::XWING_AES_256_GCM).unwrap();
    let mut wrong = envelope::setup_receiver(&aes, &enc, &info).unwrap();
    let e0 = &encryptions[0];
    assert!(wrong.open(&hex(&e0["aad"]), &hex(&e0["ct"])).is_err());
}

/// RFC 9180 §5.3 exports: every exported value of every base-mode X25519 vector, from
/// both a sender and a receiver context; a context set up without its exporter refuses.
#[test]
fn rfc9180_exports_from_sender_and_receiver() {
    let mut checked = 0;
    for suite in [
        Suite::X25519_AES_128_GCM,
        Suite::X25519_AES_256_GCM,
        Suite::X25519_CHACHA20_POLY1305,
    ] {
        for v in suite_vectors(suite) {
            let sk_r = PrivateKey::from_bytes_for(suite, &hex(&v["skRm"])).unwrap();
            let pk_r = sk_r.public_key();
            let info = hex(&v["info"]);
            let (enc, sender) = envelope::setup_sender_exporting_with_rng(
                &pk_r,
                suite,
                &info,
                &mut FixedRng(hex(&v["ikmE"])),
            )
            .unwrap();
            assert_eq!(enc, hex(&v["enc"]));
            let receiver = envelope::setup_receiver_exporting(&sk_r, suite, &enc, &info).unwrap();
            for e in v["exports"].as_array().unwrap() {
                assert_eq!(e["L"], 32);
                let context = hex(&e["exporter_context"]);
                let expected = hex(&e["exported_value"]);
                assert_eq!(sender.export::<32>(&context).unwrap().to_vec(), expected);
                assert_eq!(receiver.export::<32>(&context).unwrap().to_vec(), expected);
                checked += 1;
            }
            let plain = envelope::setup_receiver(&sk_r, &enc, &info).unwrap();
            assert_eq!(plain.export::<32>(b""), Err(envelope::ExportError));
        }
    }
    assert_eq!(checked, 9, "three exports in each of three vectors");
}

#[test]
fn rfc9180_vectors_fail_with_a_wrong_info_or_order() {
    let v = &gateway_suite_vectors()[0];
    let sk_r = PrivateKey::derive(&hex(&v["ikmR"]));
    let enc = hex(&v["enc"]);
    let e1 = &v["encryptions"][1];
    // Skipping message 0 breaks the sequence: message 1 does not open as message 0.
    let mut r = envelope::setup_receiver(&sk_r, &enc, &hex(&v["info"])).unwrap();
    assert_eq!(
        r.open(&hex(&e1["aad"]), &hex(&e1["ct"])),
        Err(OpenError::Authentication)
    );
    let e0 = &v["encryptions"][0];
    let mut r = envelope::setup_receiver(&sk_r, &enc, b"another info").unwrap();
    assert_eq!(
        r.open(&hex(&e0["aad"]), &hex(&e0["ct"])),
        Err(OpenError::Authentication)
    );
}

// === Wycheproof X25519 ===

/// tcIds of the Wycheproof X25519 tests whose shared secret is all zeros (the vectors'
/// README lists them: 32, 33, 63-86, 117, 118, 154, 165, 166).
fn expected_zero_shared_ids() -> Vec<u64> {
    let mut ids = vec![32, 33];
    ids.extend(63..=86);
    ids.extend([117, 118, 154, 165, 166]);
    ids
}

#[test]
fn wycheproof_low_order_public_keys_are_refused_everywhere() {
    let file: Value = serde_json::from_str(WYCHEPROOF_X25519).unwrap();
    let tests: Vec<&Value> = file["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["tests"].as_array().unwrap())
        .collect();
    assert_eq!(tests.len(), 518);
    let mut refused = Vec::new();
    let mut accepted = 0;
    for t in tests {
        let id = t["tcId"].as_u64().unwrap();
        let public = hex(&t["public"]);
        let private = PrivateKey::from_bytes(&hex(&t["private"])).unwrap();
        let flags: Vec<&str> = t["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        let zero = hex(&t["shared"]).iter().all(|&b| b == 0);
        assert_eq!(
            zero,
            flags.contains(&"ZeroSharedSecret") || flags.contains(&"LowOrderPublic"),
            "tcId {id}: flags and shared secret agree"
        );
        // As an encapsulated key in an envelope addressed with the test's private key.
        let mut envelope = public.clone();
        envelope.extend_from_slice(&[0u8; 32]);
        let opened = envelope::open(&private, b"ACCT", &envelope);
        // As a customer public key, raw and in base64 through the key loader.
        let loaded = PublicKey::from_bytes(&public);
        let b64 = base64_encode(&public);
        let parsed = keys::parse_public_key(b64.as_bytes());
        if zero {
            assert_eq!(opened, Err(OpenError::Decap), "tcId {id}");
            assert_eq!(loaded, Err(PublicKeyError::LowOrder), "tcId {id}");
            let err = parsed.unwrap_err().to_string();
            assert!(err.contains("small order"), "tcId {id}: {err}");
            refused.push(id);
        } else {
            // The DH succeeds; only the (random) tag fails.
            assert_eq!(opened, Err(OpenError::Authentication), "tcId {id}");
            assert!(loaded.is_ok() && parsed.is_ok(), "tcId {id}");
            accepted += 1;
        }
    }
    assert_eq!(refused, expected_zero_shared_ids());
    assert_eq!((refused.len(), accepted), (31, 487));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// === Wycheproof AES-GCM, through the aes-gcm crate the envelope uses ===

#[test]
fn wycheproof_aes_gcm_96_bit_iv_128_and_256_bit_keys() {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use aes_gcm::{Aes128Gcm, Aes256Gcm};

    let file: Value = serde_json::from_str(WYCHEPROOF_AES_GCM).unwrap();
    let (mut valid, mut invalid) = ([0usize; 2], [0usize; 2]);
    for group in file["testGroups"].as_array().unwrap() {
        let (iv, key_size, tag) = (
            group["ivSize"].as_u64(),
            group["keySize"].as_u64(),
            group["tagSize"].as_u64(),
        );
        if iv != Some(96) || tag != Some(128) || !matches!(key_size, Some(128 | 256)) {
            continue; // RustCrypto's AES-GCM types take 96-bit nonces only; no 192-bit keys in HPKE.
        }
        let k = usize::from(key_size == Some(256));
        for t in group["tests"].as_array().unwrap() {
            let (key, nonce, aad, msg) = (
                hex(&t["key"]),
                hex(&t["iv"]),
                hex(&t["aad"]),
                hex(&t["msg"]),
            );
            let mut ct_tag = hex(&t["ct"]);
            ct_tag.extend(hex(&t["tag"]));
            let nonce = nonce.as_slice().try_into().unwrap();
            let seal = |m: &[u8]| -> Vec<u8> {
                if k == 1 {
                    Aes256Gcm::new_from_slice(&key)
                        .unwrap()
                        .encrypt(nonce, Payload { msg: m, aad: &aad })
                        .unwrap()
                } else {
                    Aes128Gcm::new_from_slice(&key)
                        .unwrap()
                        .encrypt(nonce, Payload { msg: m, aad: &aad })
                        .unwrap()
                }
            };
            let open = |c: &[u8]| {
                if k == 1 {
                    Aes256Gcm::new_from_slice(&key)
                        .unwrap()
                        .decrypt(nonce, Payload { msg: c, aad: &aad })
                } else {
                    Aes128Gcm::new_from_slice(&key)
                        .unwrap()
                        .decrypt(nonce, Payload { msg: c, aad: &aad })
                }
            };
            match t["result"].as_str().unwrap() {
                "valid" => {
                    assert_eq!(seal(&msg), ct_tag, "tcId {}", t["tcId"]);
                    assert_eq!(open(&ct_tag).unwrap(), msg, "tcId {}", t["tcId"]);
                    valid[k] += 1;
                }
                "invalid" => {
                    assert!(open(&ct_tag).is_err(), "tcId {}", t["tcId"]);
                    invalid[k] += 1;
                }
                other => panic!("unexpected result {other}"),
            }
        }
    }
    // Counts from tests/vectors/README.md: AES-128 40 valid / 27 invalid, AES-256 39 / 27.
    assert_eq!((valid, invalid), ([40, 39], [27, 27]));
}
