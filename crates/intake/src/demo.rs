//! What `hpke-gateway demo --intake` makes in-process, so that trying the intake needs
//! no GnuPG: an account's key pair (as a customer would make with
//! `gpg --full-generate-key` and hand over), and a file encrypted to its public key (as
//! `gpg --encrypt` would).
//!
//! The key is GnuPG's default kind: Ed25519 primary key, Cv25519 encryption subkey,
//! both locked with the passphrase. Production keys come from the customer, never from
//! here.

use pgp::composed::{
    ArmorOptions, Deserializable as _, EncryptionCaps, KeyType, SecretKeyParamsBuilder,
    SignedPublicKey, SubkeyParamsBuilder,
};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::types::KeyDetails as _;

/// A key pair made by [`generate_key`].
#[derive(Debug)]
pub struct DemoKey {
    /// The armored secret key, as `gpg --export-secret-key -a` writes it.
    pub secret_armored: String,
    /// The armored public key, as `gpg --export -a` writes it: what customers import.
    pub public_armored: String,
    /// The primary key's fingerprint, hex.
    pub fingerprint: String,
}

/// Makes a key pair for `user_id` (`Name <email>`), locked with `passphrase`.
pub fn generate_key(user_id: &str, passphrase: &str) -> Result<DemoKey, String> {
    let subkey = SubkeyParamsBuilder::default()
        .key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
        .can_encrypt(EncryptionCaps::All)
        .passphrase(Some(passphrase.to_owned()))
        .build()
        .map_err(|e| format!("subkey parameters: {e}"))?;
    let params = SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(user_id.to_owned())
        .passphrase(Some(passphrase.to_owned()))
        .subkeys(vec![subkey])
        .build()
        .map_err(|e| format!("key parameters: {e}"))?;
    let key = params
        .generate(rand::thread_rng())
        .map_err(|e| format!("key generation: {e}"))?;
    let public_armored = key
        .to_public_key()
        .to_armored_string(ArmorOptions::default())
        .map_err(|e| format!("armor: {e}"))?;
    // rPGP 0.21 logs a warning when it writes a key it locked with a passphrase: the
    // packet header it kept is the unlocked key's length. It writes the right header;
    // the warning would only alarm the demo's user, so it goes nowhere.
    let secret_armored =
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            key.to_armored_string(ArmorOptions::default())
        })
        .map_err(|e| format!("armor: {e}"))?;
    Ok(DemoKey {
        secret_armored,
        public_armored,
        fingerprint: key.primary_key.fingerprint().to_string(),
    })
}

/// Encrypts `data` to every encryption subkey of the armored public key, as a binary
/// OpenPGP message (SEIPDv1, AES-256: what GnuPG 2.2 writes); `name` is the literal
/// data's file name.
pub fn encrypt(public_armored: &[u8], name: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let (public, _) = SignedPublicKey::from_armor_single(public_armored)
        .map_err(|e| format!("not an armored OpenPGP public key ({e})"))?;
    crate::pgp::encrypt_to_subkeys(&public, name, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgp::{PgpKey, decrypt_stream};

    #[test]
    fn a_generated_key_loads_and_decrypts_what_encrypt_wrote() {
        let key = generate_key("Demo <demo@example.com>", "demo pass").unwrap();
        assert!(key.secret_armored.contains("PRIVATE KEY BLOCK"));
        assert_eq!(key.fingerprint.len(), 40);
        let loaded = PgpKey::load(
            "k".into(),
            key.secret_armored.as_bytes(),
            zeroize::Zeroizing::new(b"demo pass".to_vec()),
            None,
        )
        .unwrap();
        let sealed = encrypt(key.public_armored.as_bytes(), "a.csv", b"email\na@b.c\n").unwrap();
        let mut out = Vec::new();
        decrypt_stream(&[&loaded], &sealed[..], &mut out, 1 << 20).unwrap();
        assert_eq!(out, b"email\na@b.c\n");
    }
}
