//! Interop with key files and ciphertexts written by code this project did not write:
//! Python Tink 1.16.1, the OpenSSL 3 CLI and PyPI `pyhpke` 0.6.5.
//!
//! The fixtures live in `tests/fixtures/interop/`; `generate.sh` there rebuilds them and
//! its `README.md` says how each one was made. Every file is read with `include_bytes!`,
//! so a missing fixture fails the build instead of skipping a test. Key ids and keys are
//! read from the files, never hard-coded, so regenerating the fixtures needs no edit here.

use bytes::BytesMut;
use hpke_gateway::envelope::{self, OpenError, Prefix, PrivateKey, PublicKey};
use hpke_gateway::keys::{FormatError, ServerKey, ServerKeys, parse_private_key, parse_public_key};

const PLAINTEXT: &[u8] = include_bytes!("fixtures/interop/plaintext.json");
const TINK_INFO: &[u8] = b"ACCT-TINK";
const PEM_INFO: &[u8] = b"ACCT-PEM";
const OTHER_INFO: &[u8] = b"ACCT-OTHER";

const TINK_PRIVATE: &[u8] = include_bytes!("fixtures/interop/tink-tink-private.json");
const TINK_PUBLIC: &[u8] = include_bytes!("fixtures/interop/tink-tink-public.json");
const TINK_CT: &[u8] = include_bytes!("fixtures/interop/tink-tink-ciphertext.bin");

const RAW_PRIVATE: &[u8] = include_bytes!("fixtures/interop/tink-raw-private.json");
const RAW_PUBLIC: &[u8] = include_bytes!("fixtures/interop/tink-raw-public.json");
const RAW_CT: &[u8] = include_bytes!("fixtures/interop/tink-raw-ciphertext.bin");
const RAW_CT_EMPTY: &[u8] = include_bytes!("fixtures/interop/tink-raw-ciphertext-empty.bin");

const AES128_PUBLIC: &[u8] = include_bytes!("fixtures/interop/tink-aes128-public.json");

const OPENSSL_PEM: &[u8] = include_bytes!("fixtures/interop/openssl-x25519.pem");
const OPENSSL_PUB_PEM: &[u8] = include_bytes!("fixtures/interop/openssl-x25519.pub.pem");
const OPENSSL_PUB_B64: &[u8] = include_bytes!("fixtures/interop/openssl-x25519.pub.b64");
const OPENSSL_ENCRYPTED: &[u8] = include_bytes!("fixtures/interop/openssl-x25519-encrypted.pem");
const OPENSSL_ENCRYPTED_SCRYPT: &[u8] =
    include_bytes!("fixtures/interop/openssl-x25519-encrypted-scrypt.pem");
const OPENSSL_ED25519: &[u8] = include_bytes!("fixtures/interop/openssl-ed25519.pem");

const PYHPKE_CT: &[u8] = include_bytes!("fixtures/interop/pyhpke-to-openssl-key.bin");

const PASSPHRASE: &[u8] = b"correct-horse";

/// The `primaryKeyId` of a Tink JSON keyset, as the unsigned 32-bit id Tink uses.
fn primary_key_id(keyset: &[u8]) -> u32 {
    let json: serde_json::Value = serde_json::from_slice(keyset).expect("keyset is JSON");
    let id = json["primaryKeyId"]
        .as_i64()
        .expect("primaryKeyId is a number");
    // Tink writes ids as unsigned; accept a signed spelling too.
    u32::try_from(id).unwrap_or(id as i32 as u32)
}

fn keyring(id: Option<u32>, key: PrivateKey) -> ServerKeys {
    ServerKeys::new(vec![ServerKey::new(id, key)])
}

fn open_with(ring: &ServerKeys, info: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    ring.open(info, BytesMut::from(sealed)).map(|b| b.to_vec())
}

fn private(text: &[u8], passphrase: Option<&[u8]>) -> PrivateKey {
    parse_private_key(text, passphrase)
        .unwrap_or_else(|e| panic!("private key refused: {e}"))
        .key
}

fn public(text: &[u8]) -> (PublicKey, Prefix) {
    parse_public_key(text).unwrap_or_else(|e| panic!("public key refused: {e}"))
}

// === Tink, output prefix TINK ===

#[test]
fn tink_prefix_private_keyset_loads_with_its_key_id() {
    let id = primary_key_id(TINK_PRIVATE);
    let loaded = parse_private_key(TINK_PRIVATE, None).unwrap();
    assert_eq!(loaded.tink_prefix, Some(Prefix::Tink(id)));

    assert_eq!(primary_key_id(TINK_PUBLIC), id);
    let (pk, prefix) = public(TINK_PUBLIC);
    assert_eq!(prefix, Prefix::Tink(id));
    assert_eq!(loaded.key.public_key(), pk);
}

#[test]
fn tink_prefix_ciphertext_carries_the_key_id() {
    let id = primary_key_id(TINK_PRIVATE);
    let mut expected = vec![0x01];
    expected.extend_from_slice(&id.to_be_bytes());
    assert_eq!(&TINK_CT[..5], expected.as_slice());
    assert_eq!(TINK_CT.len(), 5 + 32 + PLAINTEXT.len() + 16);

    let (prefix, rest) = envelope::split_prefix(TINK_CT);
    assert_eq!(prefix, Prefix::Tink(id));
    assert_eq!(rest, &TINK_CT[5..]);
}

#[test]
fn tink_prefix_ciphertext_decrypts() {
    let id = primary_key_id(TINK_PRIVATE);
    let key = private(TINK_PRIVATE, None);

    // Through the keyring, which strips the prefix and picks the key by id.
    let ring = keyring(Some(id), key.clone());
    assert_eq!(open_with(&ring, TINK_INFO, TINK_CT).unwrap(), PLAINTEXT);
    // A key registered without an id accepts any prefix id.
    let any = keyring(None, key.clone());
    assert_eq!(open_with(&any, TINK_INFO, TINK_CT).unwrap(), PLAINTEXT);

    // Through the bare envelope, after the prefix is split off.
    let (_, body) = envelope::split_prefix(TINK_CT);
    assert_eq!(envelope::open(&key, TINK_INFO, body).unwrap(), PLAINTEXT);
}

#[test]
fn tink_prefix_ciphertext_fails_with_other_info_or_id() {
    let id = primary_key_id(TINK_PRIVATE);
    let key = private(TINK_PRIVATE, None);
    let ring = keyring(Some(id), key.clone());
    assert_eq!(
        open_with(&ring, OTHER_INFO, TINK_CT),
        Err(OpenError::Authentication)
    );
    let (_, body) = envelope::split_prefix(TINK_CT);
    assert_eq!(
        envelope::open(&key, OTHER_INFO, body),
        Err(OpenError::Authentication)
    );
    // The right key registered under another id: the prefix names no key, and the
    // whole ciphertext read as RAW does not open.
    let wrong_id = keyring(Some(id ^ 1), key);
    assert!(open_with(&wrong_id, TINK_INFO, TINK_CT).is_err());
}

// === Tink, output prefix RAW ===

#[test]
fn raw_private_keyset_loads() {
    let loaded = parse_private_key(RAW_PRIVATE, None).unwrap();
    assert_eq!(loaded.tink_prefix, Some(Prefix::Raw));
    let (pk, prefix) = public(RAW_PUBLIC);
    assert_eq!(prefix, Prefix::Raw);
    assert_eq!(loaded.key.public_key(), pk);
    // The two Tink keysets hold different keys.
    assert_ne!(pk, private(TINK_PRIVATE, None).public_key());
}

#[test]
fn raw_ciphertext_has_no_prefix_and_decrypts() {
    assert_eq!(RAW_CT.len(), 32 + PLAINTEXT.len() + 16);
    let key = private(RAW_PRIVATE, None);

    // The whole file is enc || ct || tag.
    assert_eq!(envelope::open(&key, TINK_INFO, RAW_CT).unwrap(), PLAINTEXT);
    let ring = keyring(Some(primary_key_id(RAW_PRIVATE)), key.clone());
    assert_eq!(open_with(&ring, TINK_INFO, RAW_CT).unwrap(), PLAINTEXT);

    assert_eq!(
        envelope::open(&key, OTHER_INFO, RAW_CT),
        Err(OpenError::Authentication)
    );
    assert!(open_with(&ring, OTHER_INFO, RAW_CT).is_err());
    // Another key does not open it.
    let tink_key = private(TINK_PRIVATE, None);
    assert_eq!(
        envelope::open(&tink_key, TINK_INFO, RAW_CT),
        Err(OpenError::Authentication)
    );
}

#[test]
fn raw_empty_plaintext_decrypts_to_empty() {
    assert_eq!(RAW_CT_EMPTY.len(), 32 + 16);
    let key = private(RAW_PRIVATE, None);
    assert_eq!(envelope::open(&key, TINK_INFO, RAW_CT_EMPTY).unwrap(), b"");
    let ring = keyring(None, key.clone());
    assert_eq!(open_with(&ring, TINK_INFO, RAW_CT_EMPTY).unwrap(), b"");
    assert_eq!(
        envelope::open(&key, OTHER_INFO, RAW_CT_EMPTY),
        Err(OpenError::Authentication)
    );
}

// === Tink, another HPKE suite ===

/// A keyset Tink made with `DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_128_GCM` is read with
/// its suite; one of a suite not offered (P-256 here, by editing its params) is refused
/// by name.
#[test]
fn aes128_keyset_is_read_with_its_suite_and_other_kems_are_refused_by_name() {
    let (pk, _) = parse_public_key(AES128_PUBLIC).unwrap();
    assert_eq!(
        pk.suite(),
        hpke_gateway::envelope::Suite::X25519_AES_128_GCM
    );
    let err = parse_public_key(b"{\"key\": [{\"keyData\": {\"typeUrl\": \"type.googleapis.com/google.crypto.tink.HpkePublicKey\", \"value\": \"EgYIAhABGAIaIAkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJ\", \"keyMaterialType\": \"ASYMMETRIC_PUBLIC\"}, \"status\": \"ENABLED\", \"keyId\": 1, \"outputPrefixType\": \"RAW\"}]}")
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("DHKEM_P256_HKDF_SHA256"), "{msg}");
    assert!(
        matches!(err, FormatError::UnsupportedParameters(_)),
        "{err:?}"
    );
}

// === OpenSSL ===

#[test]
fn openssl_pem_private_key_matches_its_public_forms() {
    let loaded = parse_private_key(OPENSSL_PEM, None).unwrap();
    assert_eq!(loaded.tink_prefix, None);
    let pk = loaded.key.public_key();

    let (spki, prefix) = public(OPENSSL_PUB_PEM);
    assert_eq!(prefix, Prefix::Raw);
    assert_eq!(spki, pk);

    let (raw, prefix) = public(OPENSSL_PUB_B64);
    assert_eq!(prefix, Prefix::Raw);
    assert_eq!(raw, pk);
    assert_eq!(raw.to_bytes(), pk.to_bytes());
}

fn check_encrypted(text: &[u8]) {
    let expected = private(OPENSSL_PEM, None).public_key();

    let loaded = parse_private_key(text, Some(PASSPHRASE)).unwrap();
    assert_eq!(loaded.tink_prefix, None);
    assert_eq!(loaded.key.public_key(), expected);

    let wrong = parse_private_key(text, Some(b"battery-staple")).unwrap_err();
    assert!(matches!(wrong, FormatError::BadPassphrase), "{wrong:?}");
    let wrong = wrong.to_string();
    assert!(wrong.contains("passphrase"), "{wrong}");

    let missing = parse_private_key(text, None).unwrap_err();
    assert!(
        matches!(missing, FormatError::PassphraseRequired),
        "{missing:?}"
    );
    let missing = missing.to_string();
    assert!(missing.contains("encrypted"), "{missing}");
    assert!(missing.contains("passphrase"), "{missing}");

    assert_ne!(wrong, missing);
}

#[test]
fn openssl_encrypted_pkcs8_pbkdf2_loads_with_its_passphrase() {
    check_encrypted(OPENSSL_ENCRYPTED);
}

#[test]
fn openssl_encrypted_pkcs8_scrypt_loads_with_its_passphrase() {
    check_encrypted(OPENSSL_ENCRYPTED_SCRYPT);
}

#[test]
fn openssl_ed25519_key_is_refused() {
    let err = parse_private_key(OPENSSL_ED25519, None).unwrap_err();
    let msg = err.to_string();
    // id-Ed25519 is 1.3.101.112.
    assert!(
        matches!(&err, FormatError::WrongAlgorithm(oid) if oid == "1.3.101.112"),
        "{err:?}"
    );
    assert!(msg.contains("neither an X25519 nor an X-Wing key"), "{msg}");
}

// === pyhpke, an independent RFC 9180 implementation ===

#[test]
fn pyhpke_ciphertext_decrypts_with_the_openssl_key() {
    assert_eq!(PYHPKE_CT.len(), 32 + PLAINTEXT.len() + 16);
    let key = private(OPENSSL_PEM, None);
    assert_eq!(
        envelope::open(&key, PEM_INFO, PYHPKE_CT).unwrap(),
        PLAINTEXT
    );

    let ring = keyring(None, key.clone());
    assert_eq!(open_with(&ring, PEM_INFO, PYHPKE_CT).unwrap(), PLAINTEXT);

    assert_eq!(
        envelope::open(&key, OTHER_INFO, PYHPKE_CT),
        Err(OpenError::Authentication)
    );
    // The key read from the encrypted copy opens it too.
    let decrypted = private(OPENSSL_ENCRYPTED, Some(PASSPHRASE));
    assert_eq!(
        envelope::open(&decrypted, PEM_INFO, PYHPKE_CT).unwrap(),
        PLAINTEXT
    );
}

// === our seal, to Tink's public keys ===

#[test]
fn seal_to_tink_public_keysets_opens_with_tink_private_keysets() {
    for (public_json, private_json) in [(TINK_PUBLIC, TINK_PRIVATE), (RAW_PUBLIC, RAW_PRIVATE)] {
        let (pk, prefix) = public(public_json);
        let loaded = parse_private_key(private_json, None).unwrap();
        assert_eq!(loaded.tink_prefix, Some(prefix));

        let sealed = envelope::seal(&pk, prefix, TINK_INFO, PLAINTEXT).unwrap();
        assert_eq!(sealed.len(), prefix.len() + 32 + PLAINTEXT.len() + 16);
        if let Prefix::Tink(id) = prefix {
            assert_eq!(sealed[0], 0x01);
            assert_eq!(sealed[1..5], id.to_be_bytes());
        }

        let ring = keyring(Some(primary_key_id(private_json)), loaded.key);
        assert_eq!(open_with(&ring, TINK_INFO, &sealed).unwrap(), PLAINTEXT);
        assert!(open_with(&ring, OTHER_INFO, &sealed).is_err());
    }
}
