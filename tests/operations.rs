//! Operating the real binary: key rotation with overlap, reload on SIGHUP and on file
//! change without losing requests, refusing a bad reload, graceful shutdown with a grace
//! period, and the admin listener (health, readiness, metrics).

mod support;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hpke_gateway::envelope::{self, Prefix, PrivateKey, PublicKey};
use hpke_gateway::keys;
use support::{ACCOUNT_HEADER, MEDIA, Upstream, closed_port, open_with, write_private};

const BIN: &str = env!("CARGO_BIN_EXE_hpke-gateway");

/// A `serve` child with its stderr collected line by line.
struct Served {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// The thread that collects stderr; joined by `wait_exit` so no line is missed.
    reader: Option<std::thread::JoinHandle<()>>,
    url: String,
    admin: String,
    dir: tempfile::TempDir,
    customer: PrivateKey,
    client: reqwest::Client,
}

impl Served {
    /// Writes keys and a config (`extra` lines at the top level) and starts `serve`.
    async fn start(upstream: SocketAddr, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_private(dir.path(), "server-1.pem", &PrivateKey::generate());
        let customer = PrivateKey::generate();
        std::fs::write(
            dir.path().join("acct-1.pub.pem"),
            keys::public_key_pem(&customer.public_key()).unwrap(),
        )
        .unwrap();
        let (listen, admin) = (closed_port().await, closed_port().await);
        let poll = if extra.contains("reload_poll_ms") {
            ""
        } else {
            "reload_poll_ms = 100"
        };
        let config = format!(
            r#"listen = "{listen}"
upstream = "http://{upstream}"
admin_listen = "{admin}"
{poll}
{extra}

[[server_keys]]
id = 1
private_key = "server-1.pem"

[[accounts]]
id = "ACCT-1"
encryption = true
public_keys = ["acct-1.pub.pem"]
"#
        );
        std::fs::write(dir.path().join("gateway.toml"), config).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(dir.path().join("gateway.toml"))
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let served = Served {
            child,
            log,
            reader: Some(reader),
            url: format!("http://{listen}"),
            admin: format!("http://{admin}"),
            dir,
            customer,
            client: reqwest::Client::new(),
        };
        served.wait_log("hpke-gateway listening", 1).await;
        served
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Waits until `needle` has appeared in at least `count` log lines.
    async fn wait_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self.count_log(needle);
            if seen >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {count} log lines with {needle:?}; log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Makes `change` to the files and waits for the reload after it. Counting from just
    /// before the change means an earlier reload's line cannot be taken for this one.
    async fn reload_after(&self, change: impl FnOnce()) {
        let before = self.count_log("configuration reloaded");
        change();
        self.wait_log("configuration reloaded", before + 1).await;
    }

    fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        assert!(text.contains(from), "{from:?} not in:\n{text}");
        replace_file(&self.config_path(), &text.replacen(from, to, 1));
    }

    /// An encrypted round trip to `/1/upload` sealed to `server` with `prefix`; returns
    /// the status, and checks the response decrypts when it is 200.
    async fn round_trip(&self, server: &PublicKey, prefix: Prefix, account: &str) -> u16 {
        let body = br#"{"d":[{"identity":"x"}]}"#;
        let sealed = envelope::seal(server, prefix, account.as_bytes(), body).unwrap();
        let (status, bytes) = self.post_sealed(account, sealed).await;
        if status == 200 {
            assert_eq!(open_with(&self.customer, account, &bytes), body);
        }
        status
    }

    /// POSTs an encrypted body to `/1/upload` for `account`; the status and the answer.
    async fn post_sealed(&self, account: &str, sealed: Vec<u8>) -> (u16, Vec<u8>) {
        let res = self
            .client
            .post(format!("{}/1/upload", self.url))
            .header("content-type", MEDIA)
            .header("accept", MEDIA)
            .header(ACCOUNT_HEADER, account)
            .body(sealed)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
    }

    async fn get(&self, url: String) -> (u16, String) {
        let res = self.client.get(url).send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    async fn metrics(&self) -> String {
        let (status, text) = self.get(format!("{}/metrics", self.admin)).await;
        assert_eq!(status, 200);
        text
    }

    /// The primary of the published Tink keyset.
    async fn published_primary(&self) -> (PublicKey, Prefix) {
        let (status, json) = self
            .get(format!("{}/.well-known/hpke-keys", self.url))
            .await;
        assert_eq!(status, 200, "{json}");
        keys::parse_public_key(json.as_bytes()).unwrap()
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> Option<i32> {
        self.signal("TERM");
        self.wait_exit()
    }

    /// Waits for the process to exit and for its last log lines to be collected.
    fn wait_exit(&mut self) -> Option<i32> {
        let code = self.child.wait().unwrap().code();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        code
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn private_public(path: &Path) -> PublicKey {
    let text = std::fs::read(path).unwrap();
    keys::parse_private_key(&text, None)
        .unwrap()
        .key
        .public_key()
}

/// The value of one sample line of the metrics text; panics if it is absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in\n{metrics}"))
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

    let out = Command::new(BIN)
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
    let down = closed_port().await;
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
        let mut cmd = Command::new(BIN);
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
        let out = Command::new(BIN)
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

/// Writes `text` to `path` as operators and Kubernetes do: a new file renamed over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
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
    answers_to(&gw, &server, "ACCT-1", &gw.customer).await;
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
