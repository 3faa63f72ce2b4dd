//! Proves the real-sshd harness (tests/support/sshd.rs): a customer's `sftp -b` upload
//! lands in the upload directory, the chroot holds, and an unknown key is refused.
//!
//! Needs root and the `openssh-server` / `openssh-client` Debian packages.

#[path = "support/sshd.rs"]
mod sshd;

use std::fs;

use sshd::{Sshd, generate_key, scratch_root};

const CIPHERTEXT: &[u8] =
    b"-----BEGIN PGP MESSAGE-----\n\nhQEMA0xyz\x00\x01\x02\xff\n-----END PGP MESSAGE-----\n";
const MANIFEST: &str = r#"{"file":"data.csv.asc","sha256":"00","size":64}"#;

/// Writes the customer's two files into a fresh local directory.
fn customer_files() -> tempfile::TempDir {
    let local = tempfile::tempdir().unwrap();
    fs::write(local.path().join("data.csv.asc"), CIPHERTEXT).unwrap();
    fs::write(local.path().join("data.manifest"), MANIFEST).unwrap();
    local
}

/// Formats an sftp run and the server log for an assertion message.
fn describe(out: &std::process::Output, sshd: &Sshd) -> String {
    format!(
        "sftp {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- sshd.log (tail) ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sshd.log_tail()
    )
}

#[test]
#[ignore = "needs root and sshd: run bash .ci/test"]
fn sftp_put_lands_in_upload_dir() {
    let root = scratch_root();
    let sshd = Sshd::start(root.path());
    let local = customer_files();

    let out = sshd.sftp_batch(local.path(), "put data.csv.asc\nput data.manifest\n");
    assert!(out.status.success(), "{}", describe(&out, &sshd));

    let upload = sshd.upload_dir();
    assert_eq!(fs::read(upload.join("data.csv.asc")).unwrap(), CIPHERTEXT);
    assert_eq!(
        fs::read_to_string(upload.join("data.manifest")).unwrap(),
        MANIFEST
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(upload.join("data.manifest")).unwrap()).unwrap();
    assert_eq!(manifest["file"], "data.csv.asc");
    // Nothing escaped the chroot's upload directory.
    let mut names: Vec<_> = fs::read_dir(&upload)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["data.csv.asc", "data.manifest"]);
}

#[test]
#[ignore = "needs root and sshd: run bash .ci/test"]
fn chroot_holds_and_unknown_key_is_refused() {
    let root = scratch_root();
    let sshd = Sshd::start(root.path());
    let local = customer_files();

    // Inside the chroot there is no /etc: neither cd nor get can reach the host's.
    let out = sshd.sftp_batch(local.path(), "cd /etc\n");
    assert!(
        !out.status.success(),
        "cd /etc worked: {}",
        describe(&out, &sshd)
    );
    let out = sshd.sftp_batch(local.path(), "get /etc/passwd\n");
    assert!(
        !out.status.success(),
        "get /etc/passwd worked: {}",
        describe(&out, &sshd)
    );
    assert!(!local.path().join("passwd").exists());
    // `..` from the chroot's top is still the chroot: / lists only upload.
    let out = sshd.sftp_batch(local.path(), "cd ../../..\nls -1 /\n");
    assert!(out.status.success(), "{}", describe(&out, &sshd));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("upload"), "{}", describe(&out, &sshd));
    assert!(!listing.contains("etc"), "{}", describe(&out, &sshd));

    // The session did log in (so the failures above are the chroot, not auth).
    assert!(
        fs::read_to_string(sshd.log_path())
            .unwrap()
            .contains("Accepted publickey"),
        "{}",
        sshd.log_tail()
    );

    // A key that is not in authorized_keys is refused before any SFTP happens.
    let stranger = root.path().join("stranger_ed25519");
    generate_key(&stranger);
    let out = sshd.sftp_batch_with_key(local.path(), "put data.csv.asc\n", &stranger);
    assert!(
        !out.status.success(),
        "stranger got in: {}",
        describe(&out, &sshd)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        describe(&out, &sshd)
    );
    assert!(!sshd.upload_dir().join("data.csv.asc").exists());
}
