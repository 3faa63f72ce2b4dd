//! The real binary under test: `hpke-gateway serve` as a child process, its log
//! collected line by line. Every test that runs `serve` starts it here: with a config of
//! its own ([`Served::spawn`]), or with keys and a config written for it
//! ([`Served::start`]). Listeners are configured on port 0; the gateway binds them and
//! says which ports it got, so no test guesses a free port another process could take.
#![allow(dead_code)]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hpke_gateway::envelope::{self, Prefix, PrivateKey, PublicKey};
use hpke_gateway::keys;

use super::{ACCOUNT_HEADER, MEDIA, open_with, write_private};

pub const BIN: &str = env!("CARGO_BIN_EXE_hpke-gateway");

/// The binary to run: this build's, or `HPKE_GATEWAY_BIN` (to run the same tests
/// against another build, such as the commit before a fix).
pub fn bin() -> String {
    std::env::var("HPKE_GATEWAY_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// The start-up log line that names the listeners' addresses.
const LISTENING: &str = "hpke-gateway listening";
/// How long `serve` may take to say it listens. Generous: a debug build loading
/// OpenPGP keys on a busy machine is slow, and a process that exits is noticed at once.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A `serve` child with its stderr collected line by line.
pub struct Served {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    /// The thread that collects stderr; joined by `wait_exit` so no line is missed.
    pub reader: Option<std::thread::JoinHandle<()>>,
    /// Set by [`Served::close_stderr`]: the reader closes the pipe at the next line.
    close_stderr: Arc<std::sync::atomic::AtomicBool>,
    /// The public listener's address, as the gateway reported it.
    pub listen: SocketAddr,
    /// The admin listener's address; `None` with `admin_listen = "off"`.
    pub admin_listen: Option<SocketAddr>,
    /// `http://` and the public listener's address.
    pub url: String,
    /// `http://` and the admin listener's address; empty when it is off.
    pub admin: String,
    pub client: reqwest::Client,
    config: PathBuf,
    /// The folder [`Served::start`] wrote the keys and config to.
    dir: Option<tempfile::TempDir>,
    /// ACCT-1's private key, for [`Served::start`].
    customer: Option<PrivateKey>,
}

impl Served {
    /// Starts `serve [args] --config CONFIG` with `RUST_LOG=info` and `env`, and waits
    /// (blocking) until it says it listens, reading back its listeners' addresses.
    /// Panics if it exits or stays silent instead.
    pub fn spawn(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut served = Self::launch(config, env, args);
        let deadline = Instant::now() + START_TIMEOUT;
        while !served.listening(deadline) {
            std::thread::sleep(Duration::from_millis(20));
        }
        served
    }

    /// Writes keys and a config (`extra` lines at the top level) and starts `serve`.
    pub async fn start(upstream: SocketAddr, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_private(dir.path(), "server-1.pem", &PrivateKey::generate());
        let customer = PrivateKey::generate();
        std::fs::write(
            dir.path().join("acct-1.pub.pem"),
            keys::public_key_pem(&customer.public_key()).unwrap(),
        )
        .unwrap();
        let poll = if extra.contains("reload_poll_ms") {
            ""
        } else {
            "reload_poll_ms = 100"
        };
        let config = format!(
            r#"listen = "127.0.0.1:0"
upstream = "http://{upstream}"
admin_listen = "127.0.0.1:0"
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
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let mut served = Self::launch(&path, &[], &[]);
        served.dir = Some(dir);
        served.customer = Some(customer);
        let deadline = Instant::now() + START_TIMEOUT;
        while !served.listening(deadline) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served
    }

    /// Starts the child and its log reader; the addresses are not known yet.
    fn launch(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut command = Command::new(bin());
        command
            .arg("serve")
            .args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let close_stderr = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closing = close_stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
                if closing.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
            }
        });
        Served {
            child,
            log,
            reader: Some(reader),
            close_stderr,
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin_listen: None,
            url: String::new(),
            admin: String::new(),
            client: reqwest::Client::new(),
            config: config.to_owned(),
            dir: None,
            customer: None,
        }
    }

    /// Whether the start-up line has come, reading the addresses from it when it has.
    /// Panics if the process exited first or `deadline` has passed.
    fn listening(&mut self, deadline: Instant) -> bool {
        let line = self
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(LISTENING))
            .cloned();
        if let Some(line) = line {
            let (listen, admin) = listening_addresses(&line);
            self.listen = listen;
            self.admin_listen = admin;
            self.url = format!("http://{listen}");
            self.admin = admin.map_or_else(String::new, |a| format!("http://{a}"));
            return true;
        }
        if let Some(status) = self.child.try_wait().unwrap() {
            if let Some(reader) = self.reader.take() {
                reader.join().unwrap();
            }
            panic!(
                "`serve` exited ({status}) before it listened; log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
        }
        assert!(
            Instant::now() < deadline,
            "`serve` did not say {LISTENING:?} in {START_TIMEOUT:?}; log:\n{}",
            self.log.lock().unwrap().join("\n")
        );
        false
    }

    /// ACCT-1's private key (its public key is in the config [`Served::start`] wrote).
    pub fn customer(&self) -> &PrivateKey {
        self.customer
            .as_ref()
            .expect("only Served::start makes a customer key")
    }

    /// The first log line with `needle`.
    pub fn log_line(&self, needle: &str) -> String {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
            .unwrap_or_else(|| panic!("no log line with {needle:?}"))
    }

    pub fn config_path(&self) -> PathBuf {
        self.config.clone()
    }

    /// A file next to the config.
    pub fn path(&self, name: &str) -> PathBuf {
        self.config.parent().unwrap().join(name)
    }

    /// Waits until `needle` has appeared in at least `count` log lines.
    pub async fn wait_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self.count_log(needle);
            if seen >= count {
                return;
            }
            if Instant::now() >= deadline {
                // The text first: a panic while the lock is held would poison it.
                let log = self.log.lock().unwrap().join("\n");
                panic!("waited for {count} log lines with {needle:?}; log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Makes `change` to the files and waits for the reload after it. Counting from just
    /// before the change means an earlier reload's line cannot be taken for this one.
    pub async fn reload_after(&self, change: impl FnOnce()) {
        let before = self.count_log("configuration reloaded");
        change();
        self.wait_log("configuration reloaded", before + 1).await;
    }

    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Closes the read end of the child's stderr after the next line it writes: from
    /// then on its writes to stderr fail (a log collector gone away).
    pub fn close_stderr(&self) {
        self.close_stderr
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        assert!(text.contains(from), "{from:?} not in:\n{text}");
        replace_file(&self.config_path(), &text.replacen(from, to, 1));
    }

    /// An encrypted round trip to `/1/upload` sealed to `server` with `prefix`; returns
    /// the status, and checks the response decrypts when it is 200.
    pub async fn round_trip(&self, server: &PublicKey, prefix: Prefix, account: &str) -> u16 {
        let body = br#"{"d":[{"identity":"x"}]}"#;
        let sealed = envelope::seal(server, prefix, account.as_bytes(), body).unwrap();
        let (status, bytes) = self.post_sealed(account, sealed).await;
        if status == 200 {
            assert_eq!(open_with(self.customer(), account, &bytes), body);
        }
        status
    }

    /// POSTs an encrypted body to `/1/upload` for `account`; the status and the answer.
    pub async fn post_sealed(&self, account: &str, sealed: Vec<u8>) -> (u16, Vec<u8>) {
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

    pub async fn get(&self, url: String) -> (u16, String) {
        let res = self.client.get(url).send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        let (status, text) = self.get(format!("{}/metrics", self.admin)).await;
        assert_eq!(status, 200);
        text
    }

    /// The primary of the published Tink keyset.
    pub async fn published_primary(&self) -> (PublicKey, Prefix) {
        let (status, json) = self
            .get(format!("{}/.well-known/hpke-keys", self.url))
            .await;
        assert_eq!(status, 200, "{json}");
        keys::parse_public_key(json.as_bytes()).unwrap()
    }

    /// SIGTERM, then the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal("TERM");
        self.wait_exit()
    }

    /// Waits for the process to exit and for its last log lines to be collected.
    pub fn wait_exit(&mut self) -> Option<i32> {
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

/// Writes `text` to `path` as operators and Kubernetes do: a new file renamed over it.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The value of one sample line of the metrics text; panics if it is absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in\n{metrics}"))
}

/// The value of `name=` in a text log line (up to the next space).
pub fn field(line: &str, name: &str) -> String {
    let start = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        + name.len()
        + 2;
    line[start..]
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The public and admin listeners' addresses in the start-up line, text or JSON
/// (`--log-format json`); the admin's is `None` when it says `off`.
pub fn listening_addresses(line: &str) -> (SocketAddr, Option<SocketAddr>) {
    let (listen, admin) = if line.trim_start().starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("the start-up line is not JSON ({e}): {line}"));
        let text = |name: &str| {
            json[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name:?} in {line}"))
                .to_owned()
        };
        (text("listen"), text("admin"))
    } else {
        (field(line, "listen"), field(line, "admin"))
    };
    let parse = |text: &str| -> SocketAddr {
        text.parse()
            .unwrap_or_else(|e| panic!("{text:?} is not an address ({e}): {line}"))
    };
    let admin = (admin != "off").then(|| parse(&admin));
    (parse(&listen), admin)
}
