//! The intake's keys and settings are checked at load, with clear messages, and the
//! account's public keys are published for clients that fetch them before each upload.

#[path = "support/gpg.rs"]
mod gpg;
mod support;

use std::path::Path;

use gpg::{Gpg, KeyKind};
use hpke_gateway::config::Config;
use support::write_secret;
use tower::ServiceExt as _;

const PASS: &str = "intake key passphrase";

/// A config dir with a server key, a passcode, a passphrase file and an upload dir;
/// `keys` is the `[[intake.accounts.keys]]` part.
fn load(dir: &Path, account_extra: &str, keys: &str) -> Result<Config, String> {
    let server = dir.join("server-1.pem");
    if !server.exists() {
        hpke_gateway::keys::write_secret_file(
            &server,
            hpke_gateway::keys::private_key_pem(&hpke_gateway::envelope::PrivateKey::generate())
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        write_secret(&dir.join("passcode"), b"code");
        write_secret(&dir.join("pass"), PASS.as_bytes());
        std::fs::create_dir_all(dir.join("upload")).unwrap();
    }
    let text = format!(
        r#"listen = "127.0.0.1:0"
upstream = "http://127.0.0.1:9"
[[server_keys]]
id = 1
private_key = "server-1.pem"
[intake]
state_dir = "state"
[[intake.accounts]]
id = "ACCT-1"
passcode_file = "passcode"
upload_dir = "upload"
download_dir = "decrypted"
{account_extra}
{keys}
"#
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).map_err(|e| e.to_string())
}

fn key_entry(id: &str, file: &str, extra: &str) -> String {
    format!(
        "[[intake.accounts.keys]]\nid = \"{id}\"\nprivate_key = \"{file}\"\npassphrase_file = \"pass\"\n{extra}\n"
    )
}

#[test]
#[ignore = "needs gpg: run bash .ci/test"]
fn keys_are_checked_when_loaded() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ecc = gpg.generate(KeyKind::EccDefault, "Cust", "cust@example.com", PASS);
    write_secret(&d.join("ecc.asc"), ecc.secret_armored.as_bytes());
    load(d, "", &key_entry("k1", "ecc.asc", "")).unwrap();

    // The wrong passphrase.
    write_secret(&d.join("pass"), b"not the passphrase");
    let err = load(d, "", &key_entry("k1", "ecc.asc", "")).unwrap_err();
    assert!(err.contains("passphrase does not unlock"), "{err}");
    assert!(
        !err.contains("not the passphrase"),
        "the passphrase is never printed: {err}"
    );
    write_secret(&d.join("pass"), PASS.as_bytes());

    // A key that cannot encrypt: a signing-only key, as `gpg --quick-generate-key ... sign`
    // makes it.
    let signing = Gpg::new();
    std::fs::write(signing.home().join("pw"), PASS).unwrap();
    signing.run(
        signing
            .command()
            .args(["--pinentry-mode", "loopback", "--passphrase-file"])
            .arg(signing.home().join("pw"))
            .args([
                "--quick-generate-key",
                "Signer <signer@example.com>",
                "ed25519",
                "sign",
                "never",
            ]),
    );
    let exported = signing.run(
        signing
            .command()
            .args(["--pinentry-mode", "loopback", "--passphrase-file"])
            .arg(signing.home().join("pw"))
            .args(["--armor", "--export-secret-key", "signer@example.com"]),
    );
    write_secret(&d.join("signing.asc"), &exported);
    let err = load(d, "", &key_entry("k2", "signing.asc", "")).unwrap_err();
    assert!(err.contains("no encryption-capable subkey"), "{err}");

    // Not a key at all; a public key instead of a secret one.
    write_secret(&d.join("junk.asc"), b"hello");
    let err = load(d, "", &key_entry("k3", "junk.asc", "")).unwrap_err();
    assert!(err.contains("not an armored OpenPGP secret key"), "{err}");
    write_secret(&d.join("public.asc"), ecc.public_armored.as_bytes());
    let err = load(d, "", &key_entry("k4", "public.asc", "")).unwrap_err();
    assert!(err.contains("not an armored OpenPGP secret key"), "{err}");

    // Key files readable by others are refused like every private key file.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(d.join("ecc.asc"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load(d, "", &key_entry("k1", "ecc.asc", "")).unwrap_err();
    assert!(err.contains("readable by group or others"), "{err}");
}

#[test]
#[ignore = "needs gpg: run bash .ci/test"]
fn at_most_twenty_keys_and_other_account_rules() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ecc = gpg.generate(KeyKind::EccDefault, "Cust", "cust@example.com", PASS);
    write_secret(&d.join("ecc.asc"), ecc.secret_armored.as_bytes());
    let keys = |n: usize| -> String {
        (0..n)
            .map(|i| key_entry(&format!("k{i}"), "ecc.asc", ""))
            .collect()
    };
    load(d, "", &keys(20)).unwrap();
    let err = load(d, "", &keys(21)).unwrap_err();
    assert!(err.contains("21 keys, at most 20 are allowed"), "{err}");
    let err = load(d, "", &(keys(1) + &key_entry("k0", "ecc.asc", ""))).unwrap_err();
    assert!(err.contains("key id \"k0\" appears twice"), "{err}");
    let err = load(
        d,
        "",
        &key_entry("k1", "ecc.asc", "not_after = \"next year\""),
    )
    .unwrap_err();
    assert!(err.contains("not an RFC 3339 time"), "{err}");
    // The SFTP side must never see decrypted files.
    std::fs::create_dir_all(d.join("upload/inside")).unwrap();
    let err = load(d, "", &keys(1))
        .and_then(|_| {
            let path = d.join("gateway.toml");
            let t = std::fs::read_to_string(&path).unwrap().replace(
                "download_dir = \"decrypted\"",
                "download_dir = \"upload/inside\"",
            );
            std::fs::write(&path, t).unwrap();
            Config::load(&path).map_err(|e| e.to_string())
        })
        .unwrap_err();
    assert!(
        err.contains("download_dir must not be inside upload_dir"),
        "{err}"
    );
    // No passcode, no keys.
    let err = load(d, "", "").unwrap_err();
    assert!(
        err.contains("no keys, but require_encryption is on"),
        "{err}"
    );
}

#[test]
fn the_failure_contact_is_an_address_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = "require_encryption = false";
    load(d, plain, "").unwrap();
    let config = load(
        d,
        &format!("{plain}\nfailure_contact = \"ops@platform.example\""),
        "",
    )
    .unwrap();
    let intake = config.intake.as_ref().unwrap();
    assert_eq!(
        intake.accounts[0].failure_contact.as_deref(),
        Some("ops@platform.example")
    );
    let err = load(
        d,
        &format!("{plain}\nfailure_contact = \"ops at example\""),
        "",
    )
    .unwrap_err();
    assert!(
        err.contains("failure_contact \"ops at example\" is not an email address"),
        "{err}"
    );
}

#[tokio::test]
#[ignore = "needs gpg: run bash .ci/test"]
async fn the_public_keys_are_published_and_gpg_encrypts_to_them() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let new = gpg.generate(KeyKind::EccDefault, "New", "new@example.com", PASS);
    let old = gpg.generate(KeyKind::EccDefault, "Old", "old@example.com", PASS);
    let gone = gpg.generate(KeyKind::EccDefault, "Gone", "gone@example.com", PASS);
    write_secret(&d.join("new.asc"), new.secret_armored.as_bytes());
    write_secret(&d.join("old.asc"), old.secret_armored.as_bytes());
    write_secret(&d.join("gone.asc"), gone.secret_armored.as_bytes());
    // A rotation's overlap: the old key works for a month, the one before has ended.
    let month = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(30 * 86_400),
    );
    let keys = key_entry("new", "new.asc", "")
        + &key_entry("old", "old.asc", &format!("not_after = \"{month}\""))
        + &key_entry("gone", "gone.asc", "not_after = \"2020-01-01T00:00:00Z\"");
    let app = hpke_gateway::app(load(d, "", &keys).unwrap()).unwrap();
    let get = |uri: &str| {
        let app = app.clone();
        let uri = uri.to_owned();
        async move {
            let res = app
                .oneshot(
                    http::Request::get(uri)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = res.status();
            let cache = res
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, cache, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let (status, cache, armored) = get("/.well-known/pgp-keys/ACCT-1").await;
    assert_eq!(status, 200);
    assert_eq!(
        armored
            .matches("-----BEGIN PGP PUBLIC KEY BLOCK-----")
            .count(),
        2
    );
    let max_age: u64 = cache
        .unwrap()
        .strip_prefix("public, max-age=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age <= 3600 && max_age > 0, "{max_age}");
    let (status, _, only_new) = get("/.well-known/pgp-keys/ACCT-1?keyId=new").await;
    assert_eq!(status, 200);
    assert_eq!(only_new.matches("BEGIN PGP PUBLIC KEY BLOCK").count(), 1);
    assert_eq!(get("/.well-known/pgp-keys/ACCT-1?keyId=gone").await.0, 404);
    assert_eq!(get("/.well-known/pgp-keys/ACCT-9").await.0, 404);

    // What a client does before each upload: import the published key into an empty
    // GnuPG home and encrypt to it; the customer's own GnuPG (with the secret key)
    // decrypts it.
    let client = Gpg::new();
    std::fs::write(d.join("published.asc"), &only_new).unwrap();
    client.run(
        client
            .command()
            .arg("--import")
            .arg(d.join("published.asc")),
    );
    std::fs::write(d.join("data.csv"), "email\nuser@example.com\n").unwrap();
    client.encrypt(
        &d.join("data.csv"),
        &d.join("data.csv.asc"),
        "new@example.com",
        true,
        gpg::Compress::Default,
    );
    assert_eq!(
        gpg.decrypt(&d.join("data.csv.asc"), PASS),
        b"email\nuser@example.com\n"
    );
}
