//! Operating the real binary: key rotation with overlap, reload on SIGHUP and on file
//! change without losing requests, refusing a bad reload, graceful shutdown with a grace
//! period, and the admin listener (health, readiness, metrics).

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hpke_gateway::envelope::{self, Prefix, PrivateKey, PublicKey};
use hpke_gateway::keys;
use support::served::{Served, bin, replace_file, sample};
use support::{Upstream, open_with, unused_port, write_private};

fn private_public(path: &Path) -> PublicKey {
    let text = std::fs::read(path).unwrap();
    keys::parse_private_key(&text, None)
        .unwrap()
        .key
        .public_key()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_both_keys_working_through_the_overlap() {
    let (_up, up_addr) = Upstream::start().await;
    let gw = Served::start(up_addr, "").await;
    let key1 = private_public(&gw.path("server-1.pem"));
    assert_eq!(
        gw.published_primary().await,
        (key1.clone(), Prefix::Tink(1))
    );
    assert_eq!(gw.round_trip(&key1, Prefix::Tink(1), "ACCT-1").await, 200);

    let out = Command::new(bin())
        .args(["keys", "rotate", "--overlap-days", "30", "--config"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("new primary key id 2"), "{err}");
    let config = std::fs::read_to_string(gw.config_path()).unwrap();
    assert!(config.contains("state = \"decrypt-only\""), "{config}");
    assert!(config.contains("not_after = "), "{config}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(gw.path("server-2.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key2 = private_public(&gw.path("server-2.pem"));

    // The running gateway notices the changed file by itself.
    gw.wait_log("configuration reloaded", 1).await;
    assert_eq!(
        gw.published_primary().await,
        (key2.clone(), Prefix::Tink(2))
    );
    let (_, pem) = gw
        .get(format!("{}/.well-known/hpke-keys?format=pem", gw.url))
        .await;
    assert_eq!(
        pem,
        keys::public_key_pem(&key2).unwrap() + &keys::public_key_pem(&key1).unwrap(),
        "the new primary first, then the key in its overlap"
    );
    // Through the overlap, clients on either key succeed, with or without the prefix.
    for (key, prefix) in [
        (&key1, Prefix::Tink(1)),
        (&key1, Prefix::Raw),
        (&key2, Prefix::Tink(2)),
        (&key2, Prefix::Raw),
    ] {
        assert_eq!(
            gw.round_trip(key, prefix, "ACCT-1").await,
            200,
            "{prefix:?}"
        );
    }

    // Near the end of the overlap, the published keys may be cached only until the old
    // key's not_after, so a cached copy never holds a key that stopped working.
    let config = std::fs::read_to_string(gw.config_path()).unwrap();
    let old_line = config
        .lines()
        .find(|l| l.starts_with("not_after = "))
        .unwrap()
        .to_owned();
    let soon = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(600));
    // The watcher alone reloads it (one reload per atomic edit; a SIGHUP as well could
    // land after the next step's count).
    gw.reload_after(|| gw.edit_config(&old_line, &format!("not_after = \"{soon}\"")))
        .await;
    let res = gw
        .client
        .get(format!("{}/.well-known/hpke-keys", gw.url))
        .send()
        .await
        .unwrap();
    let cache = res.headers()["cache-control"].to_str().unwrap().to_owned();
    let max_age: u64 = cache
        .strip_prefix("public, max-age=")
        .unwrap_or_else(|| panic!("{cache}"))
        .parse()
        .unwrap();
    assert!((500..=600).contains(&max_age), "{cache}");
    assert_eq!(gw.round_trip(&key1, Prefix::Tink(1), "ACCT-1").await, 200);

    // Retiring the old key: its ciphertexts get the normal decryption error.
    gw.reload_after(|| gw.edit_config("state = \"decrypt-only\"", "state = \"retired\""))
        .await;
    for prefix in [Prefix::Tink(1), Prefix::Raw] {
        let sealed = envelope::seal(&key1, prefix, b"ACCT-1", b"{}").unwrap();
        let (status, body) = gw.post_sealed("ACCT-1", sealed).await;
        assert_eq!(status, 400, "{prefix:?}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], 4008, "{v}");
        assert_eq!(v["error"], "decryption failed", "{v}");
    }
    assert_eq!(gw.round_trip(&key2, Prefix::Tink(2), "ACCT-1").await, 200);
    let (_, raw) = gw
        .get(format!("{}/.well-known/hpke-keys?format=raw", gw.url))
        .await;
    assert_eq!(raw, format!("{}\n", keys::public_key_raw_base64(&key2)));
    let m = gw.metrics().await;
    assert!(
        sample(&m, "hpke_gateway_reloads_total{result=\"ok\"}") >= 2.0,
        "{m}"
    );
    assert_eq!(gw.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_succeeding_across_reloads() {
    let (_up, up_addr) = Upstream::start().await;
    let gw = Arc::new(Served::start(up_addr, "").await);
    let key1 = private_public(&gw.path("server-1.pem"));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (gw, stop, ok, failed, key) = (
            gw.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            key1.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if gw.round_trip(&key, Prefix::Tink(1), "ACCT-1").await == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Ten reloads while the clients run: five by SIGHUP, five by editing the file;
    // each flips a second account on or off.
    let acct2 = PrivateKey::generate();
    std::fs::write(
        gw.path("acct-2.pub.pem"),
        keys::public_key_pem(&acct2.public_key()).unwrap(),
    )
    .unwrap();
    let config = std::fs::read_to_string(gw.config_path()).unwrap();
    for i in 1..=10 {
        let encryption = i % 2 == 1;
        let text = format!(
            "{config}\n[[accounts]]\nid = \"ACCT-2\"\nencryption = {encryption}\npublic_keys = [\"acct-2.pub.pem\"]\n# reload {i}\n"
        );
        // On SIGHUP steps the file watcher may reload the new text too, so count from
        // here rather than from the start.
        gw.reload_after(|| {
            std::fs::write(gw.config_path(), text).unwrap();
            if i % 2 == 0 {
                gw.signal("HUP");
            }
        })
        .await;
        // The change to ACCT-2 is live; ACCT-1 is untouched. A SIGHUP's own reload may
        // land just after the watcher's, so allow a moment (bounded) for the last one.
        let want = if encryption { 200 } else { 403 };
        let live_by = Instant::now() + Duration::from_secs(5);
        loop {
            let sealed = envelope::seal(&key1, Prefix::Raw, b"ACCT-2", br#"{"d":[]}"#).unwrap();
            let (status, body) = gw.post_sealed("ACCT-2", sealed).await;
            if status == want {
                if encryption {
                    assert_eq!(open_with(&acct2, "ACCT-2", &body), br#"{"d":[]}"#);
                }
                break;
            }
            assert!(
                Instant::now() < live_by,
                "reload {i}: {status}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{ok} succeeded");
    assert!(ok > 10, "only {ok} requests ran across the reloads");
    eprintln!("{ok} encrypted requests across 10 reloads, none failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_is_refused_and_the_old_configuration_keeps_serving() {
    let (_up, up_addr) = Upstream::start().await;
    let gw = Served::start(up_addr, "reload_poll_ms = 0").await;
    let key1 = private_public(&gw.path("server-1.pem"));
    let good = std::fs::read_to_string(gw.config_path()).unwrap();
    for broken in [
        good.replace("server-1.pem", "missing.pem"),
        good.replace("[[accounts]]", "[[acounts]]"),
        "not toml at all [".to_owned(),
    ] {
        std::fs::write(gw.config_path(), &broken).unwrap();
        let before = gw.count_log("reload refused");
        gw.signal("HUP");
        gw.wait_log("reload refused", before + 1).await;
        assert_eq!(gw.round_trip(&key1, Prefix::Tink(1), "ACCT-1").await, 200);
    }
    let m = gw.metrics().await;
    assert_eq!(
        sample(&m, "hpke_gateway_reloads_total{result=\"failed\"}"),
        3.0,
        "{m}"
    );
    std::fs::write(gw.config_path(), good).unwrap();
    gw.signal("HUP");
    gw.wait_log("configuration reloaded", 1).await;
    assert_eq!(gw.round_trip(&key1, Prefix::Raw, "ACCT-1").await, 200);
    // The log of the refusals names the problem but no secret.
    let log = gw.log.lock().unwrap().join("\n");
    assert!(log.contains("missing.pem"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let (up, up_addr) = Upstream::start().await;
    let gw = Served::start(up_addr, "").await;
    let slow = tokio::spawn({
        let (client, url) = (gw.client.clone(), format!("{}/slow", gw.url));
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    while up.count() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = gw.url.clone();
    let started = Instant::now();
    gw.signal("TERM");
    gw.wait_log("shutting down", 1).await;
    // No new connections once draining. The line is logged as the workers are told to
    // stop; each closes its listener moments later, so allow that moment (bounded).
    let refused_by = Instant::now() + Duration::from_secs(5);
    while reqwest::get(format!("{url}/1/profile")).await.is_ok() {
        assert!(
            Instant::now() < refused_by,
            "still accepting connections 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    let mut gw = gw;
    let code = gw.wait_exit();
    assert_eq!(code, Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_bounds_the_drain() {
    let (up, up_addr) = Upstream::start().await;
    let gw = Served::start(up_addr, "shutdown_grace_ms = 300").await;
    let slow = tokio::spawn({
        let (client, url) = (gw.client.clone(), format!("{}/slow", gw.url));
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    while up.count() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    gw.signal("TERM");
    let mut gw = gw;
    let code = gw.wait_exit();
    let took = started.elapsed();
    assert_eq!(code, Some(0));
    // The upstream answers after 3 s; the gateway left after its 300 ms grace.
    assert!(took < Duration::from_millis(2500), "exit took {took:?}");
    assert!(took >= Duration::from_millis(250), "exit took {took:?}");
    assert!(slow.await.unwrap().is_err(), "the cut request fails");
    assert_eq!(gw.count_log("grace period over"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_reports_health_readiness_and_metrics() {
    let (_up, up_addr) = Upstream::start().await;
    let gw = Served::start(up_addr, "").await;
    assert_eq!(
        gw.get(format!("{}/healthz", gw.admin)).await,
        (200, r#"{"status":"ok"}"#.into())
    );
    let (status, body) = gw.get(format!("{}/readyz", gw.admin)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""upstream":"ok""#), "{body}");
    // The admin routes are not on the public listener (they go upstream there).
    let key1 = private_public(&gw.path("server-1.pem"));
    assert_eq!(gw.round_trip(&key1, Prefix::Tink(1), "ACCT-1").await, 200);
    assert_eq!(gw.round_trip(&key1, Prefix::Tink(1), "ACCT-9").await, 403);
    let plain = gw
        .client
        .post(format!("{}/1/upload", gw.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    let m = gw.metrics().await;
    for (series, want) in [
        (
            r#"hpke_gateway_requests_total{mode="encrypted",status="200",code="0"}"#,
            1.0,
        ),
        (
            r#"hpke_gateway_requests_total{mode="encrypted",status="403",code="4005"}"#,
            1.0,
        ),
        (
            r#"hpke_gateway_requests_total{mode="plaintext",status="200",code="0"}"#,
            1.0,
        ),
        ("hpke_gateway_decrypt_duration_seconds_count", 1.0),
        ("hpke_gateway_encrypt_duration_seconds_count", 1.0),
        ("hpke_gateway_upstream_duration_seconds_count", 2.0),
        ("hpke_gateway_in_flight_requests", 0.0),
    ] {
        assert_eq!(sample(&m, series), want, "{series} in\n{m}");
    }
    assert!(sample(&m, "hpke_gateway_request_bytes_total") > 2.0, "{m}");
    assert!(sample(&m, "hpke_gateway_response_bytes_total") > 2.0, "{m}");
    let age = r#"hpke_gateway_server_key_age_seconds{key_id="1",state="primary"}"#;
    assert!(sample(&m, age) < 600.0, "a key written just now:\n{m}");
    assert!(
        !m.contains("ACCT-1"),
        "no account labels unless asked:\n{m}"
    );
    // A key's age is its file's: a key file written two hours ago (the watcher reloads
    // it) is two hours old, however recently it was loaded.
    gw.reload_after(|| {
        let touched = Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(gw.path("server-1.pem"))
            .status()
            .unwrap();
        assert!(touched.success());
    })
    .await;
    let m = gw.metrics().await;
    assert!((7200.0..7800.0).contains(&sample(&m, age)), "{m}");
    assert_eq!(gw.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_upstream_is_down_and_account_labels_are_opt_in() {
    let down = unused_port().await;
    let gw = Served::start(down, "metrics_account_labels = true").await;
    let (status, body) = gw.get(format!("{}/readyz", gw.admin)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""upstream":"fail""#), "{body}");
    assert!(body.contains(r#""server_keys":"ok""#), "{body}");
    let key1 = private_public(&gw.path("server-1.pem"));
    assert_eq!(gw.round_trip(&key1, Prefix::Tink(1), "ACCT-1").await, 502);
    let m = gw.metrics().await;
    assert_eq!(
        sample(
            &m,
            r#"hpke_gateway_requests_total{mode="encrypted",status="502",code="5001",account="ACCT-1"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"hpke_gateway_upstream_errors_total{code="5001"}"#),
        1.0,
        "{m}"
    );
}

#[test]
#[ignore = "needs the openssl command: run bash .ci/test"]
fn rotating_a_passphrase_protected_key_encrypts_the_new_one_too() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write_private(dir.path(), "plain.pem", &PrivateKey::generate());
    support::openssl_encrypt_pkcs8(&plain, &dir.path().join("server-7.pem"), "rotate me");
    std::fs::remove_file(plain).unwrap();
    std::fs::write(
        dir.path().join("gateway.toml"),
        "# operator's comment, kept\nlisten = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9\"\n\n\
         [[server_keys]]\nid = 7\nprivate_key = \"server-7.pem\"\npassphrase_env = \"ROTATE_PASS\"\n",
    )
    .unwrap();
    let rotate = |pass: Option<&str>| {
        let mut cmd = Command::new(bin());
        cmd.args(["keys", "rotate", "--config"])
            .arg(dir.path().join("gateway.toml"))
            .env_remove("ROTATE_PASS");
        if let Some(p) = pass {
            cmd.env("ROTATE_PASS", p);
        }
        cmd.output().unwrap()
    };
    // Without the passphrase the configuration does not load, so nothing is touched.
    let out = rotate(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ROTATE_PASS"));
    assert!(!dir.path().join("server-8.pem").exists());

    let out = rotate(Some("rotate me"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(dir.path().join("server-8.pem")).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{pem}"
    );
    // OpenSSL reads the new key with the same passphrase.
    let openssl = Command::new("openssl")
        .args(["pkey", "-noout", "-passin", "pass:rotate me", "-in"])
        .arg(dir.path().join("server-8.pem"))
        .status()
        .unwrap();
    assert!(openssl.success());
    let config = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    assert!(
        config.starts_with("# operator's comment, kept\n"),
        "{config}"
    );
    assert!(config.contains("id = 8"), "{config}");
    assert_eq!(
        config.matches("passphrase_env = \"ROTATE_PASS\"").count(),
        2,
        "{config}"
    );
    // SAFETY of the test: the variable is set only in this test's own process.
    let loaded = {
        let path = dir.path().join("gateway.toml");
        let out = Command::new(bin())
            .args(["keys", "rotate", "--overlap-days", "1", "--config"])
            .arg(&path)
            .env("ROTATE_PASS", "rotate me")
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::read_to_string(&path).unwrap()
    };
    // A second rotation: 8 is demoted, 9 is primary, 7 stays decrypt-only.
    assert_eq!(
        loaded.matches("state = \"decrypt-only\"").count(),
        2,
        "{loaded}"
    );
    assert_eq!(loaded.matches("state = \"primary\"").count(), 1, "{loaded}");
    assert!(dir.path().join("server-9.pem").exists());
}

fn public_pem(key: &PrivateKey) -> String {
    keys::public_key_pem(&key.public_key()).unwrap()
}

/// An encrypted upload for `account`; the status and the raw answer.
async fn upload(gw: &Served, server: &PublicKey, account: &str) -> (u16, Vec<u8>) {
    let sealed = envelope::seal(server, Prefix::Raw, account.as_bytes(), b"{}").unwrap();
    gw.post_sealed(account, sealed).await
}

/// Asserts that `account`'s answer opens with `customer` (and so with no other key).
async fn answers_to(gw: &Served, server: &PublicKey, account: &str, customer: &PrivateKey) {
    let (status, body) = upload(gw, server, account).await;
    assert_eq!(status, 200, "{account}: {}", String::from_utf8_lossy(&body));
    assert_eq!(open_with(customer, account, &body), b"{}", "{account}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_key_changes_reload_one_account_and_secret_swaps_are_noticed() {
    let (_up, up_addr) = Upstream::start().await;
    let gw = Served::start(up_addr, "").await;
    let server = private_public(&gw.path("server-1.pem"));

    // ACCT-2's key sits in a folder laid out as a mounted Kubernetes Secret: the file is
    // a symlink into `..data`, itself a symlink to a timestamped folder.
    let secret = gw.path("secret");
    std::fs::create_dir_all(secret.join("..2026_12_01_a")).unwrap();
    let acct2_b = PrivateKey::generate();
    std::fs::write(
        secret.join("..2026_12_01_a/acct-2.pub.pem"),
        public_pem(&acct2_b),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_12_01_a", secret.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/acct-2.pub.pem", secret.join("acct-2.pub.pem")).unwrap();
    let config = std::fs::read_to_string(gw.config_path()).unwrap();
    gw.reload_after(|| {
        replace_file(
            &gw.config_path(),
            &format!(
                "{config}\n[[accounts]]\nid = \"ACCT-2\"\nencryption = true\npublic_keys = [\"secret/acct-2.pub.pem\"]\n"
            ),
        )
    })
    .await;
    answers_to(&gw, &server, "ACCT-1", gw.customer()).await;
    answers_to(&gw, &server, "ACCT-2", &acct2_b).await;

    // Replacing ACCT-1's key file is noticed without a signal; ACCT-2 is untouched.
    let acct1_c = PrivateKey::generate();
    gw.reload_after(|| replace_file(&gw.path("acct-1.pub.pem"), &public_pem(&acct1_c)))
        .await;
    answers_to(&gw, &server, "ACCT-1", &acct1_c).await;
    answers_to(&gw, &server, "ACCT-2", &acct2_b).await;

    // A Secret update: a new timestamped folder, and `..data` swapped to it atomically.
    let acct2_d = PrivateKey::generate();
    std::fs::create_dir_all(secret.join("..2026_12_01_b")).unwrap();
    std::fs::write(
        secret.join("..2026_12_01_b/acct-2.pub.pem"),
        public_pem(&acct2_d),
    )
    .unwrap();
    gw.reload_after(|| {
        std::os::unix::fs::symlink("..2026_12_01_b", secret.join("..data_tmp")).unwrap();
        std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
        std::fs::remove_dir_all(secret.join("..2026_12_01_a")).unwrap();
    })
    .await;
    answers_to(&gw, &server, "ACCT-2", &acct2_d).await;
    answers_to(&gw, &server, "ACCT-1", &acct1_c).await;

    // A second key for ACCT-1, then the first one removed: the answer follows the list's
    // first key.
    let acct1_e = PrivateKey::generate();
    std::fs::write(gw.path("acct-1e.pub.pem"), public_pem(&acct1_e)).unwrap();
    let (one, two) = (
        "public_keys = [\"acct-1.pub.pem\"]",
        "public_keys = [\"acct-1e.pub.pem\", \"acct-1.pub.pem\"]",
    );
    gw.reload_after(|| gw.edit_config(one, two)).await;
    answers_to(&gw, &server, "ACCT-1", &acct1_e).await;
    gw.reload_after(|| gw.edit_config(two, one)).await;
    answers_to(&gw, &server, "ACCT-1", &acct1_c).await;

    // Switching ACCT-1's encryption off refuses its encrypted requests (4005); ACCT-2
    // goes on.
    gw.reload_after(|| gw.edit_config("encryption = true", "encryption = false"))
        .await;
    let (status, body) = upload(&gw, &server, "ACCT-1").await;
    assert_eq!(status, 403);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], 4005, "{v}");
    answers_to(&gw, &server, "ACCT-2", &acct2_d).await;
    assert_eq!(gw.count_log("reload refused"), 0);
    assert_eq!(gw.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_and_exits_0_like_sigterm() {
    let (up, up_addr) = Upstream::start().await;
    let mut gw = Served::start(up_addr, "").await;
    let slow = tokio::spawn({
        let (client, url) = (gw.client.clone(), format!("{}/slow", gw.url));
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    while up.count() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.signal("INT");
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    assert_eq!(gw.wait_exit(), Some(0));
    assert_eq!(gw.count_log("shutting down"), 1);
    assert_eq!(gw.count_log("hpke-gateway stopped"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_head_is_disconnected_after_header_timeout_ms() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (_up, up_addr) = Upstream::start().await;
    let gw = Served::start(up_addr, "header_timeout_ms = 300").await;
    let addr = gw.url.strip_prefix("http://").unwrap().to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /1/profile HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The head never ends: the gateway closes the connection (the bound is generous; the
    // setting is 300 ms, and the default would be 30 s).
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "connection still open after 10 s");
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    let key1 = private_public(&gw.path("server-1.pem"));
    assert_eq!(gw.round_trip(&key1, Prefix::Tink(1), "ACCT-1").await, 200);
}

/// Scale-out: gateway replicas may run side by side, but two intakes on one storage
/// would pick up the same files. The second process refuses to start and says why;
/// once the first is gone, the storage is free again.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_intake_on_the_same_storage_refuses_to_start() {
    let (_up, up_addr) = Upstream::start().await;
    let state = tempfile::tempdir().unwrap();
    let intake = format!("[intake]\nstate_dir = {:?}\n", state.path());
    // The intake takes its lock before the gateway says it is listening.
    let mut first = Served::start(up_addr, &intake).await;

    // A second replica: same storage; its listeners on port 0 are its own.
    let second_config = first.path("second.toml");
    std::fs::copy(first.config_path(), &second_config).unwrap();
    let run_second = move || {
        let mut child = Command::new(support::served::bin())
            .args(["serve", "--config"])
            .arg(&second_config)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A refusal comes within a second; running this long means it started.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                return Some((status, err));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (status, err) = tokio::task::spawn_blocking(run_second.clone())
        .await
        .unwrap()
        .expect("the second intake exits instead of running beside the first");
    assert!(!status.success(), "the second intake exited 0: {err}");
    assert!(
        err.contains("another intake is running on this storage"),
        "{err}"
    );
    // The first keeps serving.
    let (published, prefix) = first.published_primary().await;
    assert_eq!(first.round_trip(&published, prefix, "ACCT-1").await, 200);

    // Once the first stops, the storage is free: the second starts (and keeps running).
    // (`first` is kept, not consumed: its folder holds the second's config and keys.)
    first.signal("TERM");
    assert_eq!(first.wait_exit(), Some(0));
    let outcome = tokio::task::spawn_blocking(run_second).await.unwrap();
    assert!(
        outcome.is_none(),
        "with the storage free, the second runs: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_durations_have_at_most_three_decimals() {
    let (_up, up_addr) = Upstream::start().await;
    let gw = Served::start(up_addr, "").await;
    let key1 = private_public(&gw.path("server-1.pem"));
    assert_eq!(gw.round_trip(&key1, Prefix::Tink(1), "ACCT-1").await, 200);
    gw.wait_log("hpke_gateway::access", 1).await;
    let line = gw.log_line("hpke_gateway::access");
    let durations: Vec<&str> = line
        .split_whitespace()
        .filter_map(|field| field.split_once("ms="))
        .map(|(_, value)| value)
        .collect();
    // ms, decrypt_ms, upstream_ms, encrypt_ms: every stage ran.
    assert_eq!(durations.len(), 4, "{line}");
    for value in durations {
        assert!(value.parse::<f64>().is_ok(), "{value:?} in {line}");
        let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "{value:?} has {decimals} decimals: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_logged_with_its_address_and_os_error() {
    let down = unused_port().await;
    let gw = Served::start(down, "").await;
    let res = gw
        .client
        .post(format!("{}/1/upload", gw.url))
        .header("X-CleverTap-Account-Id", "ACCT-1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    // The client learns nothing more than before.
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"status":"fail","error":"upstream unavailable","code":5001}"#
    );
    gw.wait_log("gateway error", 1).await;
    let line = gw.log_line("gateway error");
    assert!(line.contains("code=5001"), "{line}");
    assert!(
        line.contains(&format!(" upstream=http://{down} ")),
        "{line}"
    );
    assert!(
        line.contains("cause=tcp connect error: "),
        "the whole cause chain: {line}"
    );
    assert!(line.contains("Connection refused (os error 111)"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_line_says_whether_the_intake_runs() {
    let (_up, up_addr) = Upstream::start().await;
    let gw = Served::start(up_addr, "").await;
    let line = gw.log_line("hpke-gateway listening");
    assert!(line.contains(" intake=off"), "{line}");
    assert!(!line.contains("intake_accounts"), "{line}");
    drop(gw);

    let files = tempfile::tempdir().unwrap();
    let f = files.path();
    for d in ["upload", "decrypted", "state"] {
        std::fs::create_dir(f.join(d)).unwrap();
    }
    keys::write_secret_file(&f.join("passcode"), b"intake-passcode").unwrap();
    let at = |name: &str| f.join(name).display().to_string();
    let extra = format!(
        r#"[intake]
state_dir = "{state}"

[[intake.accounts]]
id = "ACCT-1"
passcode_file = "{passcode}"
upload_dir = "{upload}"
download_dir = "{decrypted}"
require_encryption = false
"#,
        state = at("state"),
        passcode = at("passcode"),
        upload = at("upload"),
        decrypted = at("decrypted"),
    );
    let gw = Served::start(up_addr, &extra).await;
    let line = gw.log_line("hpke-gateway listening");
    assert!(line.contains(" intake=on"), "{line}");
    assert!(line.contains(" intake_accounts=1"), "{line}");
    assert!(
        line.contains(&format!(" intake_state_dir={}", at("state"))),
        "{line}"
    );
}

/// `keys rotate` keeps the primary's suite: rotating an X-Wing primary makes an X-Wing
/// key, declared `suite = "xwing-aes-256-gcm"`, and the rotated configuration loads;
/// its published PEM form is refused only where it would lose an AEAD (not here).
#[test]
fn rotating_an_xwing_primary_makes_an_xwing_key() {
    use hpke_gateway::envelope::Suite;
    let dir = tempfile::tempdir().unwrap();
    write_private(
        dir.path(),
        "server-1.pem",
        &PrivateKey::generate_for(Suite::XWING_AES_256_GCM),
    );
    std::fs::write(
        dir.path().join("gateway.toml"),
        "listen = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9\"\n\n\
         [[server_keys]]\nid = 1\nprivate_key = \"server-1.pem\"\nsuite = \"xwing-aes-256-gcm\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["keys", "rotate", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    assert_eq!(
        config.matches("suite = \"xwing-aes-256-gcm\"").count(),
        2,
        "{config}"
    );
    let text = std::fs::read(dir.path().join("server-2.pem")).unwrap();
    let loaded =
        hpke_gateway::keys::parse_private_key_for(&text, None, Some(Suite::XWING_AES_256_GCM))
            .unwrap();
    assert_eq!(loaded.key.suite(), Suite::XWING_AES_256_GCM);
    hpke_gateway::config::Config::load(&dir.path().join("gateway.toml")).unwrap();
}

/// The access log is written by a writer thread: the request's thread never waits on
/// stderr, and a graceful stop still writes every line, including those of requests
/// that were in flight at SIGTERM and finished while the gateway drained; nothing was
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_log_line_is_written_by_a_graceful_stop() {
    let (up, up_addr) = Upstream::start().await;
    let gw = Served::start(up_addr, "").await;
    let send = |path: String, id: String| {
        let (client, url) = (gw.client.clone(), format!("{}{path}", gw.url));
        tokio::spawn(async move {
            client
                .get(url)
                .header("x-request-id", id)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let quick: Vec<_> = (0..300)
        .map(|i| send(format!("/echo?n={i}"), format!("flush-test-{i:04}")))
        .collect();
    for t in quick {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    let metrics = gw.metrics().await;
    assert_eq!(
        sample(&metrics, "hpke_gateway_log_lines_dropped_total"),
        0.0
    );
    // Twenty requests the upstream holds for 3 s: in flight at SIGTERM.
    let before = up.count();
    let slow: Vec<_> = (0..20)
        .map(|i| send("/slow".into(), format!("flush-test-slow-{i:02}")))
        .collect();
    while up.count() < before + 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut gw = gw;
    gw.signal("TERM");
    for t in slow {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    assert_eq!(gw.wait_exit(), Some(0));
    assert_eq!(gw.count_log("request_id=\"flush-test-"), 320);
}

/// A log collector that goes away (stderr's reader closed) neither fails requests nor
/// holds up the stop; the lines it refused are counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stderr_fails_no_request_and_counts_its_lines() {
    let (_up, up_addr) = Upstream::start().await;
    let gw = Served::start(up_addr, "").await;
    gw.close_stderr();
    for i in 0..200 {
        let res = gw
            .client
            .get(format!("{}/echo?n={i}", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let mut dropped = 0.0;
    for _ in 0..50 {
        dropped = sample(&gw.metrics().await, "hpke_gateway_log_lines_dropped_total");
        if dropped > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dropped > 0.0, "the refused lines are counted");
    let mut gw = gw;
    let started = Instant::now();
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
}
