//! The OpenPGP test harness (tests/support/gpg.rs) against the real tools: GnuPG keys
//! of both kinds a customer makes, exported with `gpg --export-secret-key -a`, files
//! encrypted by `gpg --encrypt` (armored, binary, every compression) and by openpgp.js
//! (streaming, binary and armored), each decrypted back by GnuPG in a second home that
//! only imported the exported private key, and unlocked only by its passphrase.

#[path = "support/gpg.rs"]
mod gpg;

use std::fs;
use std::path::PathBuf;

use gpg::{Compress, GeneratedKey, Gpg, KeyKind};

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

fn check_key(gpg: &Gpg, kind: KeyKind, key: &GeneratedKey) {
    assert_eq!(key.fingerprint.len(), 40, "{}", key.fingerprint);
    assert!(key.fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(
        key.secret_armored
            .starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"),
        "{}",
        key.secret_armored
    );
    assert!(
        key.secret_armored
            .trim_end()
            .ends_with("-----END PGP PRIVATE KEY BLOCK-----")
    );
    assert!(
        key.public_armored
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    );

    // The shape of `gpg --full-generate-key`: primary [SC] + encryption subkey [E].
    let listing = gpg.list_secret_keys();
    println!("{kind:?} key:\n{listing}");
    let (primary, sub) = match kind {
        KeyKind::Rsa3072 => ("rsa3072", "rsa3072"),
        KeyKind::EccDefault => ("ed25519", "cv25519"),
    };
    let has = |prefix: &str, algo: &str, usage: &str| {
        listing.lines().any(|l| {
            l.starts_with(prefix)
                && l.split_whitespace().nth(1) == Some(algo)
                && l.trim_end().ends_with(usage)
        })
    };
    assert!(has("sec ", primary, "[SC]"), "{listing}");
    assert!(has("ssb ", sub, "[E]"), "{listing}");
    assert_eq!(listing.matches("\nssb ").count(), 1, "{listing}");
    assert!(listing.contains(&key.fingerprint), "{listing}");
}

fn round_trip(kind: KeyKind, email: &str) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("file.csv");
    fs::write(&input, CSV).unwrap();

    // The customer's side: generate, export, encrypt.
    let customer = Gpg::new();
    let key = customer.generate(kind, "Intake Test", email, PASSPHRASE);
    check_key(&customer, kind, &key);
    let public_key = dir.path().join("public.asc");
    fs::write(&public_key, &key.public_armored).unwrap();
    fs::write(dir.path().join("private.key"), &key.secret_armored).unwrap();

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

    // Our side: a fresh home that has only the exported private key.
    let intake = Gpg::new();
    intake.import(&key.secret_armored, PASSPHRASE);
    for case in &cases {
        let bytes = fs::read(&case.path).unwrap();
        assert_eq!(
            bytes.starts_with(ARMORED_MESSAGE.as_bytes()),
            case.armored,
            "{}: armored?",
            case.name
        );
        assert_eq!(
            intake.decrypt(&case.path, PASSPHRASE),
            CSV,
            "{}: plaintext",
            case.name
        );
    }

    // The passphrase is really checked (the agent caches none).
    let err = intake
        .try_decrypt(&cases[0].path, "not the passphrase")
        .expect_err("a wrong passphrase must not decrypt");
    assert!(err.contains("Bad passphrase"), "{err}");

    // What is inside: the packet types, and the compression each flag asked for.
    for case in &cases {
        let packets = intake.list_packets(&case.path, PASSPHRASE);
        let summary = summarize(&packets);
        println!("{kind:?} {}: {summary}", case.name);
        assert!(
            summary.starts_with("pubkey-enc "),
            "{}: {packets}",
            case.name
        );
        assert!(
            summary.contains("SEIPDv1+MDC") || summary.contains("AEAD"),
            "{}: {packets}",
            case.name
        );
        assert!(summary.ends_with("literal"), "{}: {packets}", case.name);
        let expect = match case.name.rsplit_once("compress=").map(|(_, c)| c) {
            Some("None") => Some("literal"),
            Some("Zlib") => Some("compressed(algo=2)"),
            Some("Zip") => Some("compressed(algo=1)"),
            Some("Bzip2") => Some("compressed(algo=3)"),
            _ => None,
        };
        if let Some(expect) = expect {
            let inner = summary.split(' ').nth(2).unwrap_or_default();
            assert_eq!(inner, expect, "{}: {packets}", case.name);
        }
    }
}

/// One word per packet of a `gpg --list-packets` listing, in order, from the
/// `# off=.. tag=N` line gpg prints before each packet (tag 1 public-key encrypted
/// session key, 18 SEIPD, 20 GnuPG's OCB-encrypted data, 8 compressed, 11 literal).
fn summarize(listing: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for line in listing.lines() {
        let line = line.trim();
        if let Some(tag) = line
            .strip_prefix("# off=")
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("tag=")))
        {
            out.push(match tag {
                "1" => "pubkey-enc".to_string(),
                "18" => "SEIPD".to_string(),
                "20" => "AEAD(tag20)".to_string(),
                "8" => "compressed".to_string(),
                "11" => "literal".to_string(),
                other => format!("tag{other}"),
            });
        } else if let Some(last) = out.last_mut() {
            if last == "SEIPD" && line == "mdc_method: 2" {
                *last = "SEIPDv1+MDC".to_string();
            } else if last == "compressed"
                && let Some(algo) = line.strip_prefix(":compressed packet: ")
            {
                *last = format!("compressed({algo})");
            }
        }
    }
    out.join(" ")
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

#[test]
#[ignore = "needs gpg and node: run bash .ci/test"]
fn tool_versions() {
    let gpg = Gpg::new();
    let version = gpg.gpg_version();
    println!("{version}");
    assert!(version.starts_with("gpg (GnuPG) "), "{version}");
    let js = gpg::openpgp_js_version();
    println!("openpgp.js {js}");
    assert!(js.split('.').count() == 3, "{js}");
}

#[test]
#[ignore = "needs gpg and node: run bash .ci/test"]
fn same_home_holds_keys_of_both_kinds() {
    // A customer may have both kinds in one keyring; each recipient gets its own key.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("file.json");
    fs::write(&input, br#"{"rows":[{"id":1}]}"#).unwrap();
    let gpg = Gpg::new();
    for (kind, email, pk_algo) in [
        (KeyKind::Rsa3072, "both-rsa@example.com", "algo 1,"),
        (KeyKind::EccDefault, "both-ecc@example.com", "algo 18,"),
    ] {
        gpg.generate(kind, "Both Kinds", email, PASSPHRASE);
        let out = dir.path().join(format!("{email}.pgp"));
        gpg.encrypt(&input, &out, email, false, Compress::Default);
        assert_eq!(gpg.decrypt(&out, PASSPHRASE), fs::read(&input).unwrap());
        // RSA (1) for the RSA key, ECDH (18) for the Curve25519 one.
        let packets = gpg.list_packets(&out, PASSPHRASE);
        assert!(packets.contains(pk_algo), "{email}: {packets}");
    }
}
