//! The binary itself: key commands, seal/open over pipes, `serve` with real and bad
//! configurations, and the demo.

mod support;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hpke_gateway::envelope::Prefix;
use hpke_gateway::keys;
use support::served::{Served, bin};

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before reading its input closes the pipe: that is its answer.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn keygen(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    ok(&["keygen", "--out", path.to_str().unwrap()], b"");
    path.to_str().unwrap().to_owned()
}

#[test]
fn keygen_writes_an_owner_only_pkcs8_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = keygen(dir.path(), "k.pem");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read(&path).unwrap();
    assert!(text.starts_with(b"-----BEGIN PRIVATE KEY-----\n"));
    assert!(keys::parse_private_key(&text, None).is_ok());
    let out = run(&["keygen", "--out", &path], b"");
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        text,
        "existing key untouched"
    );
}

#[test]
#[ignore = "needs the openssl command: run bash .ci/test"]
fn keygen_output_is_what_openssl_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = keygen(dir.path(), "k.pem");
    let openssl = Command::new("openssl")
        .args(["pkey", "-in", &path, "-pubout"])
        .output()
        .expect("openssl is installed by .ci/run");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    let ours = ok(&["public-key", "--key", &path, "--format", "pem"], b"");
    assert_eq!(
        ours, openssl.stdout,
        "our SPKI PEM is byte-identical to OpenSSL's"
    );
}

#[test]
fn public_key_formats_read_back_as_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = keygen(dir.path(), "k.pem");
    let expected = keys::parse_private_key(&std::fs::read(&path).unwrap(), None)
        .unwrap()
        .key
        .public_key();
    for (format, key_id, prefix) in [
        ("pem", None, Prefix::Raw),
        ("raw", None, Prefix::Raw),
        ("tink-json", None, Prefix::Raw),
        ("tink-json", Some("9"), Prefix::Tink(9)),
    ] {
        let mut args = vec!["public-key", "--key", &path, "--format", format];
        if let Some(id) = key_id {
            args.extend(["--key-id", id]);
        }
        let out = ok(&args, b"");
        let (pk, got_prefix) = keys::parse_public_key(&out).unwrap();
        assert_eq!(pk, expected, "{format}");
        assert_eq!(got_prefix, prefix, "{format}");
    }
}

#[test]
fn seal_and_open_pipe_binary_data_both_framings() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k.pem");
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    for (name, extra) in [
        ("raw.json", vec![]),
        ("tink.json", vec!["--key-id", "4242"]),
    ] {
        let mut args = vec!["public-key", "--key", &key, "--format", "tink-json"];
        args.extend(extra.iter().copied());
        let pub_path = dir.path().join(name);
        std::fs::write(&pub_path, ok(&args, b"")).unwrap();
        let sealed = ok(
            &[
                "seal",
                "--recipient",
                pub_path.to_str().unwrap(),
                "--info",
                "ACCT-9",
            ],
            &all_bytes,
        );
        if name == "tink.json" {
            assert_eq!(&sealed[..5], &[1, 0, 0, 0x10, 0x92]);
        }
        assert_eq!(
            sealed.len(),
            all_bytes.len() + 48 + if name == "tink.json" { 5 } else { 0 }
        );
        let opened = ok(&["open", "--key", &key, "--info", "ACCT-9"], &sealed);
        assert_eq!(opened, all_bytes, "{name}");
    }
}

#[test]
fn open_failures_write_nothing_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k.pem");
    let pub_pem = ok(&["public-key", "--key", &key], b"");
    let pub_path = dir.path().join("k.pub.pem");
    std::fs::write(&pub_path, pub_pem).unwrap();
    let sealed = ok(
        &[
            "seal",
            "--recipient",
            pub_path.to_str().unwrap(),
            "--info",
            "A",
        ],
        b"secret",
    );
    for (info, input) in [
        ("B", sealed.clone()),
        ("A", sealed[..40].to_vec()),
        ("A", b"garbage".to_vec()),
    ] {
        let out = run(&["open", "--key", &key, "--info", info], &input);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("decryption failed"), "{err}");
    }
    let out = run(
        &["seal", "--recipient", "/nonexistent.pem", "--info", "A"],
        b"x",
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reports_a_gateway_error_body_instead_of_decryption_failed() {
    // What `curl ... | hpke-gateway open` hands over when the gateway refuses: its JSON
    // error body (here 4005, encryption headers for an account without encryption).
    let gw = support::Gateway::start().await;
    let res = gw
        .encrypted_post("/1/upload", "ACCT-OFF", gw.seal(1, true, "ACCT-OFF", b"{}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body = res.bytes().await.unwrap().to_vec();
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k.pem");
    let out = run(&["open", "--key", &key, "--info", "ACCT-OFF"], &body);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(i32::from(hpke_gateway::cli::EXIT_GATEWAY_ERROR)),
        "{err}"
    );
    assert_eq!(hpke_gateway::cli::EXIT_GATEWAY_ERROR, 3);
    assert!(out.stdout.is_empty());
    assert!(
        err.contains(
            "the gateway answered with an error: code 4005: encryption is not enabled for this account"
        ),
        "{err}"
    );
    assert!(!err.contains("decryption failed"), "{err}");
    // The help names the exit status.
    let help = String::from_utf8(ok(&["open", "--help"], b"")).unwrap();
    assert!(
        help.contains("3 the input is the gateway's JSON error body"),
        "{help}"
    );
}

#[test]
#[ignore = "needs the openssl command: run bash .ci/test"]
fn encrypted_pkcs8_opens_with_the_passphrase_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k.pem");
    let enc = dir.path().join("k.enc.pem");
    support::openssl_encrypt_pkcs8(Path::new(&key), &enc, "hunter22");
    let enc = enc.to_str().unwrap();
    let pub_path = dir.path().join("p.pem");
    std::fs::write(&pub_path, ok(&["public-key", "--key", &key], b"")).unwrap();
    let sealed = ok(
        &[
            "seal",
            "--recipient",
            pub_path.to_str().unwrap(),
            "--info",
            "A",
        ],
        b"hi",
    );
    let out = Command::new(bin())
        .args([
            "open",
            "--key",
            enc,
            "--info",
            "A",
            "--passphrase-env",
            "KEY_PASS",
        ])
        .env("KEY_PASS", "hunter22")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&sealed)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hi");
    let out = run(&["open", "--key", enc, "--info", "A"], &sealed);
    assert!(String::from_utf8_lossy(&out.stderr).contains("passphrase"));
    assert!(!out.status.success());
}

/// A config for `serve` (listening on port 0, no admin listener) with a server key and
/// ACCT-1's customer key, and their public keys beside them.
fn write_config(dir: &Path, upstream: &str) -> std::path::PathBuf {
    let server = hpke_gateway::envelope::PrivateKey::generate();
    support::write_private(dir, "server.pem", &server);
    let customer = hpke_gateway::envelope::PrivateKey::generate();
    support::write_private(dir, "customer.pem", &customer);
    std::fs::write(
        dir.join("server.pub.pem"),
        keys::public_key_pem(&server.public_key()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("customer.pub.pem"),
        keys::public_key_pem(&customer.public_key()).unwrap(),
    )
    .unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"listen = "127.0.0.1:0"
upstream = "{upstream}"
admin_listen = "off"
[[server_keys]]
id = 1
private_key = "server.pem"
[[accounts]]
id = "ACCT-1"
encryption = true
public_keys = ["customer.pub.pem"]
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn serve_refuses_bad_configs_with_exit_64_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9");
    // A private key readable by others.
    std::fs::set_permissions(
        dir.path().join("server.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = run(&["serve", "--config", config.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.pem") && err.contains("readable by group or others"),
        "{err}"
    );

    // Several problems at once are all reported.
    std::fs::write(
        &config,
        "listen = \"nowhere\"\nupstream = \"ftp://x\"\nbogus = 1\n",
    )
    .unwrap();
    let out = run(&["serve", "--config", config.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    std::fs::write(&config, "listen = \"nowhere\"\nupstream = \"ftp://x\"\n").unwrap();
    let out = run(&["serve", "--config", config.to_str().unwrap()], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64));
    for needle in ["listen", "upstream", "server_keys"] {
        assert!(err.contains(needle), "{needle} missing in: {err}");
    }
}

/// Starts `hpke-gateway serve` (with `extra` arguments and `RUST_LOG=log_level`) in
/// front of the sample upstream; returns it, listening, and its folder. With a
/// `passphrase`, the server key is encrypted PKCS#8 (scrypt, our writer) whose passphrase is in
/// the owner-only file `server.pass`; its cleartext stays in `server.plain.pem`.
async fn serve_before_sample_upstream(
    extra: &[&str],
    log_level: &str,
    passphrase: Option<&str>,
) -> (Served, tempfile::TempDir) {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    tokio::spawn(
        async move { axum::serve(upstream, hpke_gateway::sample_upstream::router()).await },
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("http://{up_addr}"));
    if let Some(passphrase) = passphrase {
        let (key, plain) = (
            dir.path().join("server.pem"),
            dir.path().join("server.plain.pem"),
        );
        std::fs::rename(&key, &plain).unwrap();
        let loaded = keys::parse_private_key(&std::fs::read(&plain).unwrap(), None).unwrap();
        let pem = keys::private_key_encrypted_pem(&loaded.key, passphrase.as_bytes()).unwrap();
        keys::write_secret_file(&key, pem.as_bytes()).unwrap();
        support::write_secret(
            &dir.path().join("server.pass"),
            format!("{passphrase}\n").as_bytes(),
        );
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace(
                "private_key = \"server.pem\"",
                "private_key = \"server.pem\"\npassphrase_file = \"server.pass\"",
            ),
        )
        .unwrap();
    }
    let served = Served::spawn(&config, &[("RUST_LOG", log_level)], extra);
    (served, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_gateway_and_stops_on_sigterm() {
    let (served, dir) = serve_before_sample_upstream(&[], "info", None).await;
    let url = format!("{}/1/upload", served.url);
    let server_pub = dir.path().join("server.pub.pem");
    let sealed = ok(
        &[
            "seal",
            "--recipient",
            server_pub.to_str().unwrap(),
            "--info",
            "ACCT-1",
        ],
        br#"{"d":[{"identity":"1"},{"identity":"2"}]}"#,
    );
    let response = reqwest::Client::new()
        .post(&url)
        .header("Content-Type", support::MEDIA)
        .header("Accept", support::MEDIA)
        .header("X-CleverTap-Account-Id", "ACCT-1")
        .header("X-CleverTap-Passcode", "p")
        .body(sealed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    let customer = dir.path().join("customer.pem");
    let opened = ok(
        &[
            "open",
            "--key",
            customer.to_str().unwrap(),
            "--info",
            "ACCT-1",
        ],
        &body,
    );
    assert_eq!(
        opened,
        br#"{"processed":2,"status":"success","unprocessed":[]}"#
    );

    let exit = tokio::task::spawn_blocking(move || served.stop())
        .await
        .unwrap();
    assert_eq!(exit, Some(0), "graceful exit on SIGTERM");
}

#[test]
fn demo_once_does_a_round_trip_and_exits() {
    let out = run(&["demo", "--once", "--listen", "127.0.0.1:0"], b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The classical account, then the post-quantum one, each a full round trip.
    assert_eq!(stdout.matches("answered 200 OK").count(), 2, "{stdout}");
    assert_eq!(
        stdout
            .matches(r#"{"processed":1,"status":"success","unprocessed":[]}"#)
            .count(),
        2,
        "{stdout}"
    );
    assert!(
        stdout.contains("key 2 (xwing-aes-256-gcm) with info ACCT-DEMO-PQ"),
        "{stdout}"
    );
    // The by-hand commands would name keys in a folder already removed: not printed.
    assert!(!stdout.contains("Try it by hand"), "{stdout}");
    assert!(!stdout.contains("curl"), "{stdout}");
    assert!(!stdout.contains("--key"), "{stdout}");
    assert!(stdout.contains("without --once"), "{stdout}");
}

#[test]
fn demo_that_serves_prints_commands_whose_files_exist() {
    let mut child = Command::new(bin())
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("Serving until Ctrl-C.") {
            break;
        }
    }
    assert!(seen.contains("Try it by hand"), "{seen}");
    // Every file the commands name is there while the demo serves.
    let named: Vec<&str> = seen
        .split_whitespace()
        .filter(|w| w.starts_with('/') && (w.ends_with(".pem") || w.ends_with(".json")))
        .collect();
    assert!(named.len() >= 5, "{seen}");
    assert!(
        named.iter().any(|p| p.ends_with("customer-pq.json")),
        "the post-quantum commands: {seen}"
    );
    for path in &named {
        assert!(Path::new(path).exists(), "{path} is missing:\n{seen}");
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "clean stop on SIGTERM");
    for path in &named {
        assert!(!Path::new(path).exists(), "{path} left behind");
    }
}

/// Runs `args` with a deadline, collecting standard output and error.
fn run_with_deadline(args: &[&str], deadline: Duration) -> Output {
    let child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done_tx.send(());
        out
    });
    if done_rx.recv_timeout(deadline).is_err() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let out = waiter.join().unwrap().unwrap();
        panic!(
            "{args:?} still running after {deadline:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    waiter.join().unwrap().unwrap()
}

/// The demo's temporary folder, from its "... in PATH  (removed ...)" line.
fn demo_folder(stdout: &str) -> &Path {
    let line = stdout
        .lines()
        .find(|l| l.contains("(removed when the demo ends)"))
        .unwrap_or_else(|| panic!("no folder line:\n{stdout}"));
    let path = line
        .split_whitespace()
        .find(|w| w.starts_with('/'))
        .unwrap_or_else(|| panic!("no path in {line:?}"));
    Path::new(path)
}

#[test]
fn demo_intake_once_imports_a_sample_file_and_prints_the_mails() {
    let out = run_with_deadline(
        &["demo", "--intake", "--once", "--listen", "127.0.0.1:0"],
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The customer's commands, with the demo's paths filled in.
    let folder = demo_folder(&stdout);
    for needle in [
        "export GNUPGHOME=",
        "gpg --batch --import /",
        "intake-key.pub.asc",
        "cat > users.csv <<'CSV'\nemail,name,age\n",
        "cat > users.csv.manifest <<'JSON'\n{\n  \"fileName\": \"users.csv.gpg\",",
        "\"keyId\": \"",
        "gpg --batch --yes --trust-model always --encrypt --recipient ",
        "--output users.csv.gpg users.csv",
        "cp users.csv.gpg /",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing:\n{stdout}");
    }
    assert!(
        stdout.contains(&format!("gpg --batch --import {}/", folder.display())),
        "{stdout}"
    );
    // The two mails, printed instead of sent, in order.
    let pickup = stdout
        .find("To: customer@example.com\nSubject: File upload users.csv.gpg: picked up for processing\n")
        .unwrap_or_else(|| panic!("no pickup mail:\n{stdout}\n{stderr}"));
    let success = stdout
        .find("To: customer@example.com\nSubject: File upload users.csv.gpg: imported, 3 records\n")
        .unwrap_or_else(|| panic!("no success mail:\n{stdout}\n{stderr}"));
    assert!(pickup < success, "{stdout}");
    for needle in [
        "Account: ACCT-DEMO\nFile: users.csv.gpg\nManifest: users.csv.manifest\n",
        "Records imported: 3\nRows skipped: 1\n",
        "line 5, column age, value \"seventy-two\": not an Integer",
        "print_mail: printed, not sent",
        "uploaded 3 records to the sample upstream",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing:\n{stdout}");
    }
    assert!(!folder.exists(), "{} left behind", folder.display());
}

#[test]
#[ignore = "needs gpg: run bash .ci/test"]
fn demo_intake_commands_work_as_printed_with_gpg() {
    let mut child = Command::new(bin())
        .args(["demo", "--intake", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut until = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {needle:?} in:\n{seen}"));
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return seen.clone();
            }
        }
    };
    let printed = until("Watching ");
    // The commands as printed: between the invitation and the "Watching" line.
    let start = printed.find("Try it as a customer would").unwrap();
    let script =
        &printed[printed[start..].find('\n').unwrap() + start..printed.rfind("Watching ").unwrap()];
    let run = Command::new("bash")
        .args([
            "-euo",
            "pipefail",
            "-c",
            &format!("{script}\ngpgconf --kill all\n"),
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let all = until("Subject: File upload users.csv.gpg: imported, 3 records");
    assert!(
        all.contains("Subject: File upload users.csv.gpg: picked up for processing"),
        "{all}"
    );
    let folder = demo_folder(&all).to_owned();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "clean stop on SIGTERM"
    );
    assert!(!folder.exists(), "{} left behind", folder.display());
}

#[test]
fn closed_stdout_ends_quietly_with_status_141() {
    // `hpke-gateway demo | head -1` once head has exited: every write meets a closed pipe.
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k.pem");
    let public = dir.path().join("k.pub.pem");
    std::fs::write(&public, ok(&["public-key", "--key", &key], b"")).unwrap();
    let public = public.to_str().unwrap();
    for args in [
        vec!["demo", "--once", "--listen", "127.0.0.1:0"],
        vec!["demo", "--listen", "127.0.0.1:0"],
        vec!["demo", "--intake", "--once", "--listen", "127.0.0.1:0"],
        vec!["demo", "--intake", "--listen", "127.0.0.1:0"],
        vec!["seal", "--recipient", public, "--info", "A"],
        vec!["public-key", "--key", &key],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut child = Command::new(bin())
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(b"plaintext");
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(i32::from(hpke_gateway::cli::EXIT_BROKEN_PIPE)),
            "{args:?}: {err}"
        );
        assert_eq!(hpke_gateway::cli::EXIT_BROKEN_PIPE, 141);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

#[test]
#[ignore = "needs the openssl command: run bash .ci/test"]
fn serve_reads_the_key_passphrase_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9");
    let plain = dir.path().join("server.pem");
    let encrypted = dir.path().join("server.enc.pem");
    support::openssl_encrypt_pkcs8(&plain, &encrypted, "from env");
    std::fs::rename(&encrypted, &plain).unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "private_key = \"server.pem\"",
            "private_key = \"server.pem\"\npassphrase_env = \"GW_KEY_PASS\"",
        ),
    )
    .unwrap();

    let serve = |pass: Option<&str>| {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("GW_KEY_PASS");
        if let Some(p) = pass {
            cmd.env("GW_KEY_PASS", p);
        }
        cmd.spawn().unwrap()
    };
    for (pass, needle) in [
        (None, "environment variable GW_KEY_PASS is not set"),
        (Some("wrong one"), "passphrase does not decrypt"),
    ] {
        let out = serve(pass).wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(
            !err.contains("wrong one"),
            "the passphrase is never printed"
        );
    }
    // With the right passphrase it starts and says so on stderr.
    let served = Served::spawn(&config, &[("GW_KEY_PASS", "from env")], &[]);
    let line = served.log.lock().unwrap()[0].clone();
    assert!(line.contains("hpke-gateway listening"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_have_one_line_per_request_and_no_secrets() {
    let (mut served, dir) =
        serve_before_sample_upstream(&["--log-format", "json"], "debug", Some(PASSPHRASE)).await;
    let server_pub = dir.path().join("server.pub.pem");
    const PASSCODE: &str = "SECRET-PASSCODE-4242";
    const PASSPHRASE: &str = "KEY-PASSPHRASE-5150";
    const MARKER: &str = "PLAINTEXT-MARKER-7731";
    let body = format!(r#"{{"d":[{{"identity":"{MARKER}"}}]}}"#);
    let sealed = ok(
        &[
            "seal",
            "--recipient",
            server_pub.to_str().unwrap(),
            "--info",
            "ACCT-1",
        ],
        body.as_bytes(),
    );
    let client = reqwest::Client::new();
    let url = served.url.clone();
    let mut tampered = sealed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let requests = [
        (
            sealed.clone(),
            true,
            "/1/upload",
            Some("client-chosen-id-1"),
        ),
        (tampered, true, "/1/upload", None),
        (body.clone().into_bytes(), false, "/1/upload", None),
        (
            Vec::new(),
            false,
            "/1/profile.json?email=jack.secret%40example.com",
            None,
        ),
    ];
    let mut ids = Vec::new();
    for (payload, encrypted, path, id) in requests {
        let mut req = client
            .post(format!("{url}{path}"))
            .header("X-CleverTap-Account-Id", "ACCT-1")
            .header("X-CleverTap-Passcode", PASSCODE)
            .body(payload);
        if encrypted {
            req = req
                .header("Content-Type", support::MEDIA)
                .header("Accept", support::MEDIA);
        }
        if let Some(id) = id {
            req = req.header("X-Request-Id", id);
        }
        let res = req.send().await.unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        ids.push(id);
    }
    assert_eq!(
        ids[0], "client-chosen-id-1",
        "a client's request id is kept"
    );
    assert_eq!(ids[1].len(), 32, "a fresh id is 16 random bytes in hex");

    served.signal("TERM");
    let out = tokio::task::spawn_blocking(move || {
        served.wait_exit();
        served.log.lock().unwrap().join("\n")
    })
    .await
    .unwrap();

    // The server key is encrypted PKCS#8 (OpenSSL's) with its passphrase in a file: the
    // first request's 200 above is that key at work. None of its forms reaches the log.
    let mut secrets = vec![
        PASSCODE.to_owned(),
        PASSPHRASE.to_owned(),
        MARKER.to_owned(),
    ];
    secrets.push("jack.secret".to_owned());
    // Each base64 line of both PEM files on its own (a log would escape the newlines).
    for pem in ["server.pem", "server.plain.pem"] {
        let text = std::fs::read_to_string(dir.path().join(pem)).unwrap();
        secrets.extend(
            text.lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_owned),
        );
    }
    let plain = std::fs::read(dir.path().join("server.plain.pem")).unwrap();
    let scalar = keys::parse_private_key(&plain, None)
        .unwrap()
        .key
        .to_bytes();
    use base64::Engine as _;
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        secrets.push(engine.encode(&scalar[..]));
    }
    secrets.push(scalar.iter().map(|b| format!("{b:02x}")).collect());
    for secret in &secrets {
        assert!(
            !out.contains(secret.as_str()),
            "{secret:?} reached the log:\n{out}"
        );
    }
    let access: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "hpke_gateway::access")
        .collect();
    assert_eq!(access.len(), 4, "one line per request:\n{out}");
    for (line, id) in access.iter().zip(&ids) {
        assert_eq!(line["request_id"], id.as_str());
        assert_eq!(line["account"], "ACCT-1");
    }
    assert_eq!(
        (access[0]["status"].as_u64(), access[0]["code"].as_u64()),
        (Some(200), Some(0))
    );
    assert_eq!(
        (access[1]["status"].as_u64(), access[1]["code"].as_u64()),
        (Some(400), Some(4008))
    );
    assert_eq!(
        access[3]["path"], "/1/profile.json",
        "the query is never logged"
    );
    for line in &access {
        assert_eq!(line["method"], "POST", "{line}");
        assert!(line["ms"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    }
    // The stages that ran, and only those: the good encrypted request ran all three, the
    // tampered one failed in decryption and went no further, plaintext only went upstream.
    let stages = |line: &serde_json::Value| {
        ["decrypt_ms", "upstream_ms", "encrypt_ms"].map(|k| line[k].as_f64().is_some())
    };
    assert_eq!(stages(&access[0]), [true, true, true], "{}", access[0]);
    assert_eq!(stages(&access[1]), [true, false, false], "{}", access[1]);
    assert_eq!(stages(&access[2]), [false, true, false], "{}", access[2]);
}

/// Every suite through the command line: `keygen --suite`, `public-key --suite` in each
/// format (a Tink keyset records the suite; PEM and raw need `--suite`), `seal` and
/// `open`; a key declared with another KEM's suite is refused, naming both.
#[test]
fn every_suite_keygen_public_key_seal_and_open() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    for suite in hpke_gateway::envelope::Suite::ALL {
        let name = suite.name();
        let key = dir.path().join(format!("{name}.pem"));
        let key = key.to_str().unwrap();
        ok(&["keygen", "--out", key, "--suite", name], b"");
        let tink = dir.path().join(format!("{name}.json"));
        std::fs::write(
            &tink,
            ok(
                &[
                    "public-key",
                    "--key",
                    key,
                    "--suite",
                    name,
                    "--format",
                    "tink-json",
                    "--key-id",
                    "77",
                ],
                b"",
            ),
        )
        .unwrap();
        let raw = dir.path().join(format!("{name}.b64"));
        std::fs::write(
            &raw,
            ok(
                &[
                    "public-key",
                    "--key",
                    key,
                    "--suite",
                    name,
                    "--format",
                    "raw",
                ],
                b"",
            ),
        )
        .unwrap();
        let tink_sealed = ok(
            &[
                "seal",
                "--recipient",
                tink.to_str().unwrap(),
                "--info",
                "ACCT-S",
            ],
            &data,
        );
        assert_eq!(
            tink_sealed.len(),
            5 + suite.kem.enc_len() + data.len() + 16,
            "{name}"
        );
        let raw_sealed = ok(
            &[
                "seal",
                "--recipient",
                raw.to_str().unwrap(),
                "--suite",
                name,
                "--info",
                "ACCT-S",
            ],
            &data,
        );
        assert_eq!(raw_sealed.len(), suite.kem.enc_len() + data.len() + 16);
        for sealed in [&tink_sealed, &raw_sealed] {
            let opened = ok(
                &["open", "--key", key, "--suite", name, "--info", "ACCT-S"],
                sealed,
            );
            assert_eq!(opened, data, "{name}");
        }
        // Without --suite the PEM key gets its KEM's default suite: for the suites with
        // another AEAD, the envelope does not open.
        let default = run(&["open", "--key", key, "--info", "ACCT-S"], &raw_sealed);
        assert_eq!(
            default.status.success(),
            suite.aead == hpke_gateway::envelope::Aead::Aes256Gcm,
            "{name}"
        );
    }
    let xwing = dir.path().join("xwing-aes-256-gcm.pem");
    let out = run(
        &[
            "open",
            "--key",
            xwing.to_str().unwrap(),
            "--suite",
            "x25519-aes-256-gcm",
            "--info",
            "A",
        ],
        b"x",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("xwing") && err.contains("x25519-aes-256-gcm"),
        "{err}"
    );
}
