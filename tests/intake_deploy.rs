//! The shipped sshd snippet (deploy/sftp/hpke-gateway-intake.conf) is valid for the
//! installed OpenSSH and confines customers as the README says.

#[path = "support/sshd.rs"]
mod sshd;

use std::process::Command;

const SNIPPET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/sftp/hpke-gateway-intake.conf"
);

#[test]
#[ignore = "needs sshd: run bash .ci/test"]
fn the_sshd_snippet_passes_sshd_t() {
    let dir = tempfile::tempdir().unwrap();
    let host_key = dir.path().join("host_key");
    sshd::generate_key(&host_key);
    std::fs::create_dir_all(sshd::PRIVSEP_DIR).unwrap();
    // A main config as Debian ships it, with the Subsystem line the snippet asks for.
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "HostKey {}\nListenAddress 127.0.0.1\nPort 2222\nSubsystem sftp internal-sftp\nInclude {SNIPPET}\n",
            host_key.display()
        ),
    )
    .unwrap();
    let out = Command::new(sshd::SSHD)
        .args(["-t", "-f"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sshd -t refused the snippet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What sshd resolves for a customer: SFTP only, chrooted, keys only. `sshd -T`
    // cannot pretend a group membership, so this copy matches the user instead.
    let by_user = dir.path().join("by-user.conf");
    std::fs::write(
        &by_user,
        std::fs::read_to_string(SNIPPET)
            .unwrap()
            .replace("Match Group sftp-customers", "Match User cust1"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(SNIPPET, by_user.to_str().unwrap());
    std::fs::write(&config, text).unwrap();
    let out = Command::new(sshd::SSHD)
        .args(["-T", "-f"])
        .arg(&config)
        .args(["-C", "user=cust1,host=client.example,addr=192.0.2.1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "chrootdirectory /srv/sftp/%u",
        "forcecommand internal-sftp -d /upload -u 0007 -p symlink,hardlink@openssh.com",
        "authenticationmethods publickey",
        "passwordauthentication no",
        "allowtcpforwarding no",
        "x11forwarding no",
        "permittty no",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == line),
            "{line:?} not in sshd -T:\n{text}"
        );
    }
}
