//! The intake's OpenPGP code (hpke_intake::pgp) against what customers' tools make:
//! GnuPG keys of both kinds a customer makes, exported with `gpg --export-secret-key -a`,
//! and files encrypted to them by `gpg --encrypt` (armored, binary, every compression)
//! and by openpgp.js (streaming, binary and armored). The intake loads the exported key,
//! unlocked only by its passphrase, and decrypts every file back to the bytes that went in.

#[path = "support/gpg.rs"]
mod gpg;

use std::fs;
use std::path::PathBuf;

use gpg::{Compress, Gpg, KeyKind};
use hpke_intake::pgp::{PgpKey, decrypt_stream};
use zeroize::Zeroizing;

const PASSPHRASE: &str = "intake: correct horse battery staple";
/// A small CSV with what text-mode conversions would mangle: CRLF, a lone LF, a
/// quoted comma, UTF-8, and no final line break.
const CSV: &[u8] =
    b"id,email,amount\r\n1,ann@example.com,12.50\r\n2,\"Bo, Jr.\",7\n3,zo\xc3\xab@example.com,0";

const ARMORED_MESSAGE: &str = "-----BEGIN PGP MESSAGE-----";

/// What one ciphertext is and who made it.
struct Case {
    name: String,
    path: PathBuf,
    armored: bool,
}

fn load_key(armored: &str, passphrase: &str) -> Result<PgpKey, String> {
    let passphrase = Zeroizing::new(passphrase.as_bytes().to_vec());
    PgpKey::load("key".to_owned(), armored.as_bytes(), passphrase, None)
}

fn round_trip(kind: KeyKind, email: &str) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("file.csv");
    fs::write(&input, CSV).unwrap();

    // The customer's side: generate, export, encrypt.
    let customer = Gpg::new();
    let key = customer.generate(kind, "Intake Test", email, PASSPHRASE);
    let public_key = dir.path().join("public.asc");
    fs::write(&public_key, &key.public_armored).unwrap();

    let mut cases = Vec::new();
    for armor in [true, false] {
        for compress in Compress::ALL {
            let ext = if armor { "asc" } else { "pgp" };
            let path = dir.path().join(format!("gpg-{compress:?}.csv.{ext}"));
            customer.encrypt(&input, &path, email, armor, compress);
            cases.push(Case {
                name: format!("gpg armor={armor} compress={compress:?}"),
                path,
                armored: armor,
            });
        }
        let path = dir.path().join(format!(
            "openpgp-js.csv.{}",
            if armor { "asc" } else { "pgp" }
        ));
        gpg::openpgp_js_encrypt(&public_key, &input, &path, armor);
        cases.push(Case {
            name: format!("openpgp.js armor={armor}"),
            path,
            armored: armor,
        });
    }

    // Our side: the exported private key, which only its passphrase unlocks.
    let err = load_key(&key.secret_armored, "not the passphrase")
        .expect_err("a wrong passphrase must not unlock the exported key");
    println!("{kind:?}, wrong passphrase: {err}");
    let intake = load_key(&key.secret_armored, PASSPHRASE)
        .unwrap_or_else(|e| panic!("{kind:?}: the exported key does not load: {e}"));
    assert!(
        intake.fingerprint().eq_ignore_ascii_case(&key.fingerprint),
        "{kind:?}: loaded {}, GnuPG made {}",
        intake.fingerprint(),
        key.fingerprint
    );
    for case in &cases {
        let bytes = fs::read(&case.path).unwrap();
        assert_eq!(
            bytes.starts_with(ARMORED_MESSAGE.as_bytes()),
            case.armored,
            "{}: armored?",
            case.name
        );
        let mut plaintext = Vec::new();
        decrypt_stream(&[&intake], bytes.as_slice(), &mut plaintext, 1 << 20)
            .unwrap_or_else(|e| panic!("{kind:?} {}: {e}", case.name));
        assert_eq!(plaintext, CSV, "{kind:?} {}: plaintext", case.name);
    }
}

#[test]
#[ignore = "needs gpg and node: run bash .ci/test"]
fn rsa3072_keys_round_trip_through_gpg_and_openpgp_js() {
    round_trip(KeyKind::Rsa3072, "intake-rsa@example.com");
}

#[test]
#[ignore = "needs gpg and node: run bash .ci/test"]
fn ecc_default_keys_round_trip_through_gpg_and_openpgp_js() {
    round_trip(KeyKind::EccDefault, "intake-ecc@example.com");
}
