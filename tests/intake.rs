//! The encrypted file intake end to end, with real tools only: keys made and files
//! encrypted by GnuPG (as the vendor's documents show) and by openpgp.js, uploaded
//! through a real OpenSSH `sshd` (chrooted `internal-sftp`) with the `sftp -b` client,
//! ingested by the real binary into a recording upstream, and notices received by a
//! real SMTP server (aiosmtpd).

#[path = "support/gpg.rs"]
mod gpg;
#[path = "support/sshd.rs"]
mod sshd;
mod support;

use std::collections::HashSet;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::IntoResponse as _;
use gpg::{Compress, Gpg, KeyKind};
use http_body_util::BodyExt as _;
use sshd::Sshd;
use support::served::Served;
use support::write_secret;

const KEY_ID: &str = "ec491319-9823-48cd-b6a1-6bb0bc666d75";
const ECC_KEY_ID: &str = "0b3c2a36-6a2e-4f0e-9d55-3f1f2b7c9e10";
const PASSPHRASE: &str = "correct horse battery staple";
const PASSCODE: &str = "intake-passcode-7";
const CLIENT: &str = "user@company1.example";
/// A header name and a cell value that exist only inside an encrypted file.
const SECRET_HEADER: &str = "hdr_kestrel_0x5f3a";
const SECRET_CELL: &str = "cell.marmoset@inside.example";
/// The environment variable the gateway gets the PGP passphrase in, for keys with
/// `passphrase_env`.
const PASSPHRASE_ENV: &str = "INTAKE_TEST_PGP_PASSPHRASE";

// === the upstream ===

/// One upload request as the upstream saw it.
#[derive(Debug, Clone)]
struct Batch {
    account: String,
    passcode: String,
    idempotency_key: String,
    records: Vec<serde_json::Value>,
}

/// A real HTTP upstream that records `/1/upload` batches; `hang` makes it stop
/// answering (to crash the gateway mid-file).
#[derive(Clone, Default)]
struct Recorder {
    batches: Arc<Mutex<Vec<Batch>>>,
    records: Arc<AtomicUsize>,
    keep_records: bool,
    /// Batches answered before the upstream stops answering.
    hang_after: Arc<AtomicUsize>,
    /// If set, every batch is refused with 400 and this body (and not recorded).
    refuse: Arc<Mutex<Option<String>>>,
}

impl Recorder {
    async fn start(keep_records: bool) -> (Self, SocketAddr) {
        let rec = Recorder {
            keep_records,
            hang_after: Arc::new(AtomicUsize::new(usize::MAX)),
            ..Default::default()
        };
        let app = axum::Router::new().fallback(record).with_state(rec.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (rec, addr)
    }

    fn batches(&self) -> Vec<Batch> {
        self.batches.lock().unwrap().clone()
    }

    fn record_count(&self) -> usize {
        self.records.load(Ordering::SeqCst)
    }
}

async fn record(State(rec): State<Recorder>, req: Request) -> axum::response::Response {
    if rec.batches.lock().unwrap().len() >= rec.hang_after.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    if let Some(answer) = rec.refuse.lock().unwrap().clone() {
        return (http::StatusCode::BAD_REQUEST, answer).into_response();
    }
    let (parts, body) = req.into_parts();
    assert_eq!(parts.uri.path(), "/1/upload");
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let body = body.collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let records = v["d"].as_array().unwrap().clone();
    rec.records.fetch_add(records.len(), Ordering::SeqCst);
    rec.batches.lock().unwrap().push(Batch {
        account: header("x-clevertap-account-id"),
        passcode: header("x-clevertap-passcode"),
        idempotency_key: header("idempotency-key"),
        records: if rec.keep_records {
            records.clone()
        } else {
            Vec::new()
        },
    });
    (
        [("content-type", "application/json")],
        format!(
            r#"{{"status":"success","processed":{},"unprocessed":[]}}"#,
            records.len()
        ),
    )
        .into_response()
}

// === the SMTP server ===

struct Smtp {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Smtp {
    fn start() -> Self {
        ensure_python_packages();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/intake/smtp_sink.py"
            ))
            .args(["--port", "0", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("the SMTP sink did not start: {line:?}"));
        Smtp { child, dir, port }
    }

    /// Every message received so far, oldest first.
    fn mails(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Waits for a mail whose text contains every needle.
    fn wait_mail(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mails = self.mails();
            if let Some(m) = mails
                .iter()
                .find(|m| needles.iter().all(|n| unfold(m).contains(n)))
            {
                return m.clone();
            }
            if Instant::now() > deadline {
                let last: Vec<String> = mails.iter().rev().take(2).map(|m| unfold(m)).collect();
                panic!(
                    "no mail with {needles:?}; the last ones:\n{}",
                    last.join("\n-----\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mail bodies may be quoted-printable with soft line breaks; undo the soft breaks.
fn unfold(mail: &str) -> String {
    mail.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

fn ensure_python_packages() {
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/interop/python/requirements.txt"
            ))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pip install of the test requirements failed"
        );
    }
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// === the world of one test ===

struct World {
    _root: tempfile::TempDir,
    sshd: Sshd,
    gpg: Gpg,
    smtp: Smtp,
    dir: tempfile::TempDir,
    /// The customer's workstation: where files are made before `sftp put`.
    local: PathBuf,
    gateway: Option<Served>,
    /// The log of the gateways killed before this one.
    earlier_log: Vec<String>,
}

impl World {
    async fn new(upstream: SocketAddr, extra_intake: &str) -> Self {
        Self::with(upstream, extra_intake, "", "").await
    }

    /// `extra_intake` goes into `[intake]`, `extra_account` into ACCT-1's table, and
    /// `extra_keys` after its keys.
    async fn with(
        upstream: SocketAddr,
        extra_intake: &str,
        extra_account: &str,
        extra_keys: &str,
    ) -> Self {
        let root = sshd::scratch_root();
        let sshd = Sshd::start(root.path());
        let gpg = Gpg::new();
        let smtp = Smtp::start();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let local = d.join("workstation");
        std::fs::create_dir(&local).unwrap();
        // The customer's keys, made as the vendor's document says, exported with their
        // passphrase; the platform stores them with their key ids.
        let rsa = gpg.generate(KeyKind::Rsa3072, "Name1", CLIENT, PASSPHRASE);
        let ecc = gpg.generate(
            KeyKind::EccDefault,
            "Name2",
            "ecc@company1.example",
            PASSPHRASE,
        );
        write_secret(&d.join("acct-1.rsa.asc"), rsa.secret_armored.as_bytes());
        write_secret(&d.join("acct-1.ecc.asc"), ecc.secret_armored.as_bytes());
        write_secret(
            &d.join("pgp-passphrase"),
            format!("{PASSPHRASE}\n").as_bytes(),
        );
        write_secret(&d.join("passcode"), PASSCODE.as_bytes());
        hpke_gateway::keys::write_secret_file(
            &d.join("server-1.pem"),
            hpke_gateway::keys::private_key_pem(&hpke_gateway::envelope::PrivateKey::generate())
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let config = format!(
            r#"listen = "127.0.0.1:0"
upstream = "http://{upstream}"
admin_listen = "127.0.0.1:0"
reload_poll_ms = 0

[[server_keys]]
id = 1
private_key = "server-1.pem"

[intake]
state_dir = "intake-state"
poll_ms = 100
settle_ms = 300
{extra_intake}

[intake.smtp]
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "Intake <intake@platform.example>"

[[intake.accounts]]
id = "ACCT-1"
passcode_file = "passcode"
upload_dir = "{upload}"
download_dir = "decrypted/ACCT-1"
{extra_account}

[[intake.accounts.keys]]
id = "{KEY_ID}"
private_key = "acct-1.rsa.asc"
passphrase_file = "pgp-passphrase"

[[intake.accounts.keys]]
id = "{ECC_KEY_ID}"
private_key = "acct-1.ecc.asc"
passphrase_file = "pgp-passphrase"
{extra_keys}
"#,
            smtp = smtp.port,
            upload = sshd.upload_dir().display(),
        );
        // A `[intake.accounts.pull]` table in `extra_keys` names the sshd through these.
        let host_key = std::fs::read_to_string(sshd.root().join("host_ed25519.pub")).unwrap();
        let config = config
            .replace("@SSHD_PORT@", &sshd.port().to_string())
            .replace("@SSHD_USER@", sshd.user())
            .replace("@USER_KEY@", &sshd.user_key().display().to_string())
            .replace("@HOST_KEY@", host_key.trim());
        std::fs::write(d.join("gateway.toml"), config).unwrap();
        let mut world = World {
            _root: root,
            sshd,
            gpg,
            smtp,
            dir,
            local,
            gateway: None,
            earlier_log: Vec::new(),
        };
        world.start_gateway();
        world
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_gateway(&mut self) {
        let config = self.path("gateway.toml");
        self.gateway = Some(Served::spawn(&config, &[(PASSPHRASE_ENV, PASSPHRASE)], &[]));
    }

    /// The running gateway.
    fn gateway(&self) -> &Served {
        self.gateway.as_ref().expect("the gateway runs")
    }

    fn kill_gateway(&mut self) {
        if let Some(mut gateway) = self.gateway.take() {
            gateway.child.kill().unwrap();
            gateway.wait_exit();
            self.earlier_log.extend(
                gateway
                    .log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned(),
            );
        }
    }

    /// The log of every gateway this world ran.
    fn log_text(&self) -> String {
        let mut lines = self.earlier_log.clone();
        if let Some(gateway) = &self.gateway {
            lines.extend(gateway.log.lock().unwrap().iter().cloned());
        }
        lines.join("\n")
    }

    /// The value of one series on the admin listener's `/metrics`.
    fn metric(&self, series: &str) -> Option<f64> {
        use std::io::{Read as _, Write as _};
        let admin = self
            .gateway()
            .admin_listen
            .expect("the admin listener is on");
        let mut conn = std::net::TcpStream::connect(admin).ok()?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: admin\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Writes a file on the customer's workstation.
    fn local_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.local.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// `sftp -b` with a bare `put` per file, as the vendor's document shows (the session
    /// starts in the upload directory).
    fn upload(&self, names: &[&str]) {
        let mut batch = String::new();
        for n in names {
            batch.push_str(&format!("put {n}\n"));
        }
        let out = self.sshd.sftp_batch(&self.local, &batch);
        assert!(
            out.status.success(),
            "sftp failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.sshd.log_tail()
        );
    }

    fn manifest(&self, name: &str, file_name: &str, key_id: &str, kind: &str) {
        let columns = if kind == "event" {
            r#""event_name": { "ctName": "evtName", "dataType": "String" },
    "time_stamp": {"ctName": "ts", "dataType": "Integer"},
    "identity": {"ctName": "identity", "dataType": "String"},
    "item_price": {"dataType": "Integer"}"#
        } else {
            r#""email": {"ctName": "identity", "dataType": "String"},
    "name": {"ctName": "Name", "dataType": "String"},
    "age": {"dataType": "Integer"},
    "vip": {"ctName": "VIP", "dataType": "Boolean"}"#
        };
        let text = format!(
            "{{\n  \"fileName\": \"{file_name}\",\n  \"type\": \"{kind}\",\n  \"columns\": {{\n    {columns}\n  }},\n  \"clientEmail\": \"{CLIENT}\",\n  \"keyId\": \"{key_id}\"\n}}\n"
        );
        self.local_file(name, text.as_bytes());
    }

    fn state(&self, rel: &str) -> PathBuf {
        self.path("intake-state").join(rel)
    }

    /// Every file under `state/rel`, as paths relative to it (`<stamp>-<job>/<name>`).
    fn files_in(&self, rel: &str) -> Vec<String> {
        let base = self.state(rel);
        let mut v = Vec::new();
        for dir in std::fs::read_dir(&base).into_iter().flatten() {
            let dir = dir.unwrap();
            for f in std::fs::read_dir(dir.path()).into_iter().flatten() {
                let f = f.unwrap();
                v.push(format!(
                    "{}/{}",
                    dir.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                ));
            }
        }
        v.sort();
        v
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill_gateway();
    }
}

/// About 200 MB of profile CSV at `path`; returns its number of rows.
fn large_csv(path: &std::path::Path) -> usize {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "email,name,age,vip,unmapped").unwrap();
    let filler = "z".repeat(40);
    let mut rows = 0usize;
    while f.get_ref().metadata().unwrap().len() < 200_000_000 {
        for _ in 0..10_000 {
            rows += 1;
            writeln!(
                f,
                "user{rows}@example.com,User {rows},{},no,{filler}",
                20 + rows % 50
            )
            .unwrap();
        }
        f.flush().unwrap();
    }
    rows
}

/// A profile CSV of `rows` rows; row `bad_row` (1-based, 0 for none) has a bad age.
fn profiles_csv(rows: usize, bad_row: usize) -> String {
    let mut csv = String::from("email,name,age,vip,unmapped\n");
    for i in 1..=rows {
        let age = if i == bad_row {
            "twelve".to_owned()
        } else {
            (20 + i % 50).to_string()
        };
        csv.push_str(&format!(
            "user{i}@example.com,User {i},{age},{},x\n",
            if i % 2 == 0 { "yes" } else { "no" }
        ));
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, sshd, sftp and gpg: run bash .ci/test"]
async fn uploads_over_sftp_are_decrypted_ingested_and_notified() {
    let (up, up_addr) = Recorder::start(true).await;
    let w = World::new(up_addr, "").await;

    // 1. RSA key, `gpg --encrypt --armor`, a JSON manifest, 2500 rows with one bad.
    let csv = profiles_csv(2500, 4);
    let plain = w.local_file("users_data.csv", csv.as_bytes());
    w.gpg.encrypt(
        &plain,
        &w.local.join("users_data.csv.asc"),
        CLIENT,
        true,
        Compress::Default,
    );
    w.manifest(
        "users_data.manifest",
        "users_data.csv.asc",
        KEY_ID,
        "profile",
    );
    w.upload(&["users_data.csv.asc", "users_data.manifest"]);

    let pickup = w
        .smtp
        .wait_mail(&["picked up", "users_data.csv.asc", &format!("To: {CLIENT}")]);
    assert!(
        pickup.contains("From: Intake <intake@platform.example>"),
        "{pickup}"
    );
    let done = w.smtp.wait_mail(&["imported, 2499 records"]);
    let text = unfold(&done);
    assert!(text.contains("Rows skipped: 1"), "{text}");
    assert!(
        text.contains(r#"line 5, column age, value "twelve": not an Integer"#),
        "{text}"
    );
    let batches = up.batches();
    assert_eq!(batches.len(), 3, "2499 records in batches of 1000");
    let sizes: Vec<usize> = batches.iter().map(|b| b.records.len()).collect();
    assert_eq!(sizes, [1000, 1000, 499]);
    for b in &batches {
        assert_eq!(
            (b.account.as_str(), b.passcode.as_str()),
            ("ACCT-1", PASSCODE)
        );
    }
    let keys: HashSet<&str> = batches.iter().map(|b| b.idempotency_key.as_str()).collect();
    assert_eq!(keys.len(), 3);
    assert_eq!(
        batches[0].records[0],
        serde_json::json!({"type":"profile","identity":"user1@example.com",
            "profileData":{"Name":"User 1","age":21,"VIP":false}})
    );
    // The decrypted file is in the download path, owner-only; the SFTP side saw only the
    // encrypted upload, which moved out of the upload directory with its manifest.
    let decrypted = w.path("decrypted/ACCT-1/users_data.csv");
    assert_eq!(std::fs::read_to_string(&decrypted).unwrap(), csv);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&decrypted).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    assert!(
        std::fs::read_dir(w.sshd.upload_dir())
            .unwrap()
            .next()
            .is_none()
    );
    let processed = w.files_in("ACCT-1/processed");
    assert_eq!(processed.len(), 2, "{processed:?}");
    assert!(processed.iter().any(|f| f.ends_with("/users_data.csv.asc")));
    assert!(
        processed
            .iter()
            .any(|f| f.ends_with("/users_data.manifest"))
    );
    assert!(
        std::fs::read_dir(w.state("ACCT-1/work"))
            .unwrap()
            .next()
            .is_none(),
        "no job left in work/"
    );

    // 2. The ECC key, an event file sealed by openpgp.js as binary .pgp, gzip inside,
    // and a YAML manifest.
    let mut events = String::from("event_name,time_stamp,identity,item_price\n");
    for i in 0..10 {
        events.push_str(&format!(
            "Charged,{},user{i}@example.com,{}\n",
            1_700_000_000 + i,
            i * 10
        ));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, events.as_bytes()).unwrap();
    let gz = w.local_file("events.csv.gz", &gz.finish().unwrap());
    let ecc_public = w.path("ecc.pub.asc");
    let out = w
        .gpg
        .command()
        .args(["--armor", "--export", "ecc@company1.example"])
        .output()
        .unwrap();
    std::fs::write(&ecc_public, out.stdout).unwrap();
    gpg::openpgp_js_encrypt(&ecc_public, &gz, &w.local.join("events.csv.gz.pgp"), false);
    let yaml = format!(
        "fileName: events.csv.gz.pgp\ntype: event\ncolumns:\n  event_name: {{ctName: evtName, dataType: String}}\n  time_stamp: {{ctName: ts, dataType: Integer}}\n  identity: {{ctName: identity, dataType: String}}\n  item_price: {{dataType: Integer}}\nclientEmail: {CLIENT}\nkeyId: {ECC_KEY_ID}\n"
    );
    w.local_file("events.manifest", yaml.as_bytes());
    w.upload(&["events.csv.gz.pgp", "events.manifest"]);
    w.smtp
        .wait_mail(&["events.csv.gz.pgp: imported, 10 records"]);
    let last = up.batches().pop().unwrap();
    assert_eq!(
        last.records[3],
        serde_json::json!({"type":"event","identity":"user3@example.com","evtName":"Charged",
            "ts":1_700_000_003,"evtData":{"item_price":30}})
    );

    // 3. The same name again (a recurring upload) is ingested again.
    w.upload(&["users_data.csv.asc", "users_data.manifest"]);
    wait("the second import", || {
        (up.record_count() == 2 * 2499 + 10).then_some(())
    });
    // The intake's own metrics: three files, every good record, the two bad rows.
    wait("the intake metrics", || {
        (w.metric(r#"hpke_gateway_intake_files_total{result="imported"}"#) == Some(3.0))
            .then_some(())
    });
    assert_eq!(
        w.metric(r#"hpke_gateway_intake_records_total{result="uploaded"}"#),
        Some((2 * 2499 + 10) as f64)
    );
    assert_eq!(
        w.metric(r#"hpke_gateway_intake_records_total{result="skipped"}"#),
        Some(2.0)
    );
    assert_eq!(
        w.metric(r#"hpke_gateway_intake_files_total{result="failed"}"#),
        Some(0.0),
        "no file failed (the series exists from the start, at 0)"
    );
    let log = w.log_text();
    assert!(
        !log.contains(PASSPHRASE) && !log.contains(PASSCODE),
        "secrets in the log"
    );
    assert!(!log.contains("user1@example.com"), "plaintext in the log");
}

/// One refused upload: the files, the manifest, and the words the failure must have.
struct Refusal {
    what: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    manifest: String,
    reason: &'static str,
    /// The file the failure mail's subject names; `None`: the manifest itself (its
    /// `fileName` is not usable).
    subject: Option<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, sshd, sftp and gpg: run bash .ci/test"]
async fn bad_uploads_fail_clearly_and_nothing_reaches_the_upstream() {
    let (up, up_addr) = Recorder::start(true).await;
    let w = World::new(
        up_addr,
        "missing_file_timeout_s = 1\nmax_expansion_ratio = 50",
    )
    .await;
    let csv = profiles_csv(5, 0);
    let plain = w.local_file("plain.csv", csv.as_bytes());
    let enc = |armor: bool, compress| {
        let out = w.local.join("tmp.out");
        w.gpg.encrypt(&plain, &out, CLIENT, armor, compress);
        std::fs::read(&out).unwrap()
    };
    let binary = enc(false, Compress::None);
    let mut tampered = binary.clone();
    let mid = tampered.len() - 40;
    tampered[mid] ^= 0x01;
    let truncated = binary[..binary.len() / 2].to_vec();
    // Another person's key: the file is not encrypted to any key of the account.
    let other = Gpg::new();
    other.generate(
        KeyKind::Rsa3072,
        "Other",
        "other@elsewhere.example",
        "other pass",
    );
    let to_other = {
        let out = w.local.join("other.out");
        other.encrypt(
            &plain,
            &out,
            "other@elsewhere.example",
            true,
            Compress::Default,
        );
        std::fs::read(&out).unwrap()
    };
    // A decompression bomb: 20 MB of zeros compress to a few kB inside the message.
    let zeros = w.local_file("zeros.csv", &vec![b'0'; 20_000_000]);
    let bomb = {
        let out = w.local.join("bomb.out");
        w.gpg.encrypt(&zeros, &out, CLIENT, false, Compress::Zlib);
        std::fs::read(&out).unwrap()
    };
    let broken_csv = w.local_file(
        "broken.csv",
        b"email,name,age,vip\n\"unclosed,x,1,no\nuser2@example.com,User,3,no\n",
    );
    let broken = {
        let out = w.local.join("broken.out");
        w.gpg
            .encrypt(&broken_csv, &out, CLIENT, true, Compress::Default);
        std::fs::read(&out).unwrap()
    };
    // `gpg --store`: the CSV as a literal data packet, signed by nobody, encrypted to
    // nobody.
    let stored = {
        let out = w.local.join("stored.out");
        w.gpg.run(
            w.gpg
                .command()
                .args(["--yes", "--store", "--output"])
                .arg(&out)
                .arg(&plain),
        );
        std::fs::read(&out).unwrap()
    };
    // gzip made by the customer before encrypting: about 21 MB of rows, a few kB
    // compressed, so the encrypted file passes and the gzip layer is what is too big.
    let gzip_bomb = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, b"email,age\n").unwrap();
        let row = b"bomb@example.com,1\n".repeat(10_000);
        for _ in 0..110 {
            std::io::Write::write_all(&mut gz, &row).unwrap();
        }
        let gz = w.local_file("gzbomb.csv.gz", &gz.finish().unwrap());
        let out = w.local.join("gzbomb.out");
        w.gpg.encrypt(&gz, &out, CLIENT, false, Compress::None);
        std::fs::read(&out).unwrap()
    };
    let manifest = |file: &str, key: &str| {
        format!(
            r#"{{"fileName":"{file}","type":"profile","clientEmail":"{CLIENT}","keyId":"{key}",
            "columns":{{"email":{{"ctName":"identity","dataType":"String"}},"age":{{"dataType":"Integer"}}}}}}"#
        )
    };
    let cases = vec![
        Refusal {
            what: "path traversal",
            files: vec![],
            manifest: manifest("../../etc/passwd.asc", KEY_ID),
            reason: "fileName: \"../../etc/passwd.asc\" has a path",
            subject: None,
        },
        Refusal {
            what: "absolute path",
            files: vec![],
            manifest: manifest("/etc/passwd", KEY_ID),
            reason: "is an absolute path",
            subject: None,
        },
        Refusal {
            what: "missing file",
            files: vec![],
            manifest: manifest("never.csv.asc", KEY_ID),
            reason: "which was not uploaded within 1 s",
            subject: Some("never.csv.asc"),
        },
        Refusal {
            what: "wrong keyId",
            files: vec![("wrongkey.csv.pgp", binary.clone())],
            manifest: manifest("wrongkey.csv.pgp", "no-such-key"),
            reason: "keyId \"no-such-key\" is not a key of this account",
            subject: Some("wrongkey.csv.pgp"),
        },
        Refusal {
            what: "another key",
            files: vec![("other.csv.asc", to_other)],
            manifest: manifest("other.csv.asc", KEY_ID),
            reason: "not encrypted to the key named by keyId",
            subject: Some("other.csv.asc"),
        },
        Refusal {
            what: "tampered",
            files: vec![("tampered.csv.pgp", tampered)],
            manifest: manifest("tampered.csv.pgp", KEY_ID),
            reason: "damaged or was modified",
            subject: Some("tampered.csv.pgp"),
        },
        Refusal {
            what: "truncated",
            files: vec![("truncated.csv.pgp", truncated)],
            manifest: manifest("truncated.csv.pgp", KEY_ID),
            reason: "damaged or was modified",
            subject: Some("truncated.csv.pgp"),
        },
        Refusal {
            what: "not encrypted",
            files: vec![("plain.csv.asc", csv.clone().into_bytes())],
            manifest: manifest("plain.csv.asc", KEY_ID),
            reason: "not an OpenPGP encrypted message",
            subject: Some("plain.csv.asc"),
        },
        Refusal {
            what: "not encrypted, and not named so",
            files: vec![("plain.csv", csv.clone().into_bytes())],
            manifest: manifest("plain.csv", KEY_ID),
            reason: "this upload requires encryption",
            subject: Some("plain.csv"),
        },
        Refusal {
            what: "decompression bomb",
            files: vec![("bomb.csv.pgp", bomb)],
            manifest: manifest("bomb.csv.pgp", KEY_ID),
            reason: "larger than the limit",
            subject: Some("bomb.csv.pgp"),
        },
        Refusal {
            what: "malformed CSV: an unclosed quote swallows the rest of the file",
            files: vec![("broken.csv.asc", broken)],
            manifest: manifest("broken.csv.asc", KEY_ID),
            reason: "line 2, column -, value \"unclosed,x,1,no\\nuser2@example.com,User,3,no\": the row has 1 fields, the header 4",
            subject: Some("broken.csv.asc"),
        },
        Refusal {
            what: "bad manifest",
            files: vec![],
            manifest: r#"{"fileName": "x.csv.asc", "type": "profiles", "clientEmail": "user@company1.example"}"#.into(),
            reason: "type: \"profiles\" is neither",
            subject: None,
        },
        Refusal {
            what: "a mapped column missing from the header",
            files: vec![("nocol.csv.asc", {
                let text = format!("email,{SECRET_HEADER}\n{SECRET_CELL},A\n");
                let p = w.local_file("nocol.csv", text.as_bytes());
                let out = w.local.join("nocol.out");
                w.gpg.encrypt(&p, &out, CLIENT, true, Compress::Default);
                std::fs::read(&out).unwrap()
            })],
            manifest: manifest("nocol.csv.asc", KEY_ID),
            reason: "column(s) age named in the manifest are not in the file's header",
            subject: Some("nocol.csv.asc"),
        },
        Refusal {
            what: "`gpg --store`: an OpenPGP literal data message, not encrypted",
            files: vec![("stored.csv.gpg", stored)],
            manifest: manifest("stored.csv.gpg", KEY_ID),
            reason: "the file is an OpenPGP message but is not encrypted",
            subject: Some("stored.csv.gpg"),
        },
        Refusal {
            what: "a gzip bomb inside the encryption",
            files: vec![("gzbomb.csv.gz.pgp", gzip_bomb)],
            manifest: manifest("gzbomb.csv.gz.pgp", KEY_ID),
            reason: "the decompressed content is larger than the limit",
            subject: Some("gzbomb.csv.gz.pgp"),
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut names = Vec::new();
        for (name, bytes) in &case.files {
            w.local_file(name, bytes);
            names.push(*name);
        }
        let manifest_name = format!("case{i}.manifest");
        w.local_file(&manifest_name, case.manifest.as_bytes());
        names.push(&manifest_name);
        w.upload(&names);
        let mail = w
            .smtp
            .wait_mail(&["import failed", &manifest_name, case.reason]);
        assert!(
            mail.contains(&format!("To: {CLIENT}")),
            "{}: {mail}",
            case.what
        );
        let subject = format!(
            "Subject: File upload {}: import failed",
            case.subject.unwrap_or(&manifest_name)
        );
        assert!(
            unfold(&mail).lines().any(|l| l.trim_end() == subject),
            "{}: no {subject:?} in {mail}",
            case.what
        );
    }
    // The customer is told what the header holds; the log is not.
    let nocol = w.smtp.wait_mail(&["nocol.csv.asc: import failed"]);
    assert!(
        unfold(&nocol).contains(&format!("(email,{SECRET_HEADER})")),
        "{nocol}"
    );
    // A symlink planted through SFTP itself, and a manifest naming it.
    let out = w
        .sshd
        .sftp_batch(&w.local, "symlink /etc/passwd evil.csv.asc\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.local_file("evil.manifest", manifest("evil.csv.asc", KEY_ID).as_bytes());
    w.upload(&["evil.manifest"]);
    w.smtp
        .wait_mail(&["import failed", "evil.manifest", "is not a regular file"]);

    assert_eq!(up.batches().len(), 0, "nothing reached the upstream");
    let log = w.log_text();
    assert!(log.contains("nocol.csv.asc"), "the failure is logged");
    for secret in [
        SECRET_HEADER,
        SECRET_CELL,
        "bomb@example.com",
        "user1@example.com",
    ] {
        assert!(
            !log.contains(secret),
            "decrypted content {secret:?} in the log:\n{log}"
        );
    }
    let failed = w.files_in("ACCT-1/failed");
    let errors = failed.iter().filter(|f| f.ends_with(".error.json")).count();
    assert_eq!(errors, cases.len() + 1, "{failed:?}");
    // Each refusal is counted once: refused before its job started, or failed in it.
    let counted = |result: &str| {
        w.metric(&format!(
            r#"hpke_gateway_intake_files_total{{result="{result}"}}"#
        ))
        .unwrap_or(0.0)
    };
    assert_eq!(
        counted("failed") + counted("refused"),
        (cases.len() + 1) as f64
    );
    assert_eq!(counted("imported"), 0.0);
    // The failed files stay available with their error.
    let one = failed
        .iter()
        .find(|f| f.ends_with("/tampered.csv.pgp.error.json"))
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.state(&format!("ACCT-1/failed/{one}"))).unwrap())
            .unwrap();
    assert!(v["error"].as_str().unwrap().contains("integrity"), "{v}");
    assert!(failed.iter().any(|f| f.ends_with("/tampered.csv.pgp")));
    // Nothing half-decrypted is left in the download path.
    let leftovers: Vec<_> = std::fs::read_dir(w.path("decrypted/ACCT-1"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // And the gateway still works for the next good upload.
    let plain_name = "good.csv";
    w.local_file(plain_name, profiles_csv(3, 0).as_bytes());
    w.gpg.encrypt(
        &w.local.join(plain_name),
        &w.local.join("good.csv.asc"),
        CLIENT,
        true,
        Compress::Default,
    );
    w.manifest("good.manifest", "good.csv.asc", KEY_ID, "profile");
    w.upload(&["good.csv.asc", "good.manifest"]);
    w.smtp.wait_mail(&["good.csv.asc: imported, 3 records"]);
}

/// The operator's address for failures no customer can be told of.
const FAILURE_CONTACT: &str = "ops@platform.example";

/// A manifest cut off mid-upload names nobody the intake can read: the account's
/// `failure_contact` is told which manifest failed and that it could not be read, and
/// nothing from the manifest or the file. A manifest with a usable `clientEmail` still
/// goes to the customer only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, sshd, sftp and gpg: run bash .ci/test"]
async fn a_manifest_that_cannot_be_read_is_reported_to_the_failure_contact() {
    let (up, up_addr) = Recorder::start(false).await;
    let w = World::with(
        up_addr,
        "",
        &format!("failure_contact = \"{FAILURE_CONTACT}\""),
        "",
    )
    .await;

    // Control: a bad manifest that gives an address is the customer's to hear of.
    w.local_file(
        "control.manifest",
        format!(r#"{{"fileName": "x.csv.asc", "type": "profiles", "clientEmail": "{CLIENT}"}}"#)
            .as_bytes(),
    );
    w.upload(&["control.manifest"]);
    let control = w.smtp.wait_mail(&["control.manifest", "import failed"]);
    assert!(control.contains(&format!("To: {CLIENT}")), "{control}");

    // The upload: a file whose header and cells are secret, and its manifest cut off
    // after the secret column's name (as an interrupted `put` leaves it).
    let text = format!("email,{SECRET_HEADER}\n{SECRET_CELL},A\n");
    let plain = w.local_file("secret.csv", text.as_bytes());
    w.gpg.encrypt(
        &plain,
        &w.local.join("secret.csv.asc"),
        CLIENT,
        true,
        Compress::Default,
    );
    let full = format!(
        r#"{{"fileName":"secret.csv.asc","type":"profile","clientEmail":"{CLIENT}","keyId":"{KEY_ID}",
        "columns":{{"email":{{"ctName":"identity","dataType":"String"}},"{SECRET_HEADER}":{{"dataType":"String"}}}}}}"#
    );
    let cut = &full[..full.find(SECRET_HEADER).unwrap() + SECRET_HEADER.len() + 6];
    assert!(serde_json::from_str::<serde_json::Value>(cut).is_err());
    w.local_file("cutoff.manifest", cut.as_bytes());
    // And one that parses but gives no address, with the secret column among its
    // problems.
    w.local_file(
        "noaddress.manifest",
        format!(
            r#"{{"fileName":"secret.csv.asc","type":"profile","keyId":"{KEY_ID}",
            "columns":{{"{SECRET_HEADER}":{{"dataType":"Bogus"}}}}}}"#
        )
        .as_bytes(),
    );
    w.upload(&["secret.csv.asc", "cutoff.manifest", "noaddress.manifest"]);

    let cutoff = w.smtp.wait_mail(&[
        &format!("To: {FAILURE_CONTACT}"),
        "File: cutoff.manifest",
        "The manifest could not be read",
    ]);
    let body = unfold(&cutoff);
    assert!(body.contains("is not valid JSON"), "{body}");
    // The subject, with the header's folding undone.
    assert!(
        body.replace("\r\n ", " ").replace("\n ", " ").contains(
            "Subject: File upload cutoff.manifest: import failed, the manifest could not be read"
        ),
        "{body}"
    );
    let noaddress = w.smtp.wait_mail(&[
        &format!("To: {FAILURE_CONTACT}"),
        "File: noaddress.manifest",
        "The manifest could not be read",
    ]);
    let body2 = unfold(&noaddress);
    assert!(
        body2.contains("problems in clientEmail, columns"),
        "{body2}"
    );
    for (mail, what) in [(&body, "cutoff"), (&body2, "noaddress")] {
        for secret in [
            SECRET_HEADER,
            SECRET_CELL,
            CLIENT,
            KEY_ID,
            PASSCODE,
            PASSPHRASE,
        ] {
            assert!(
                !mail.contains(secret),
                "{what}: {secret:?} in the contact's mail:\n{mail}"
            );
        }
    }
    // The customer-addressed failure did not go to the contact; nothing was uploaded.
    assert!(
        !w.smtp.mails().iter().any(
            |m| m.contains(&format!("To: {FAILURE_CONTACT}")) && m.contains("control.manifest")
        ),
        "the control's failure reached the contact"
    );
    assert_eq!(up.batches().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, sshd, sftp and gpg: run bash .ci/test"]
async fn a_restart_in_the_middle_of_a_file_resumes_without_uploading_twice() {
    let (up, up_addr) = Recorder::start(true).await;
    let mut w = World::new(up_addr, "batch_size = 100").await;
    let csv = profiles_csv(1000, 0);
    let plain = w.local_file("big.csv", csv.as_bytes());
    w.gpg.encrypt(
        &plain,
        &w.local.join("big.csv.asc"),
        CLIENT,
        true,
        Compress::Default,
    );
    w.manifest("big.manifest", "big.csv.asc", KEY_ID, "profile");
    // The upstream takes three batches, then stops answering: the gateway is killed
    // while it waits on the fourth.
    up.hang_after.store(3, Ordering::SeqCst);
    w.upload(&["big.csv.asc", "big.manifest"]);
    wait("three batches", || (up.batches().len() >= 3).then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    w.kill_gateway();
    assert_eq!(up.batches().len(), 3, "batches before the crash");
    up.hang_after.store(usize::MAX, Ordering::SeqCst);
    w.start_gateway();
    w.smtp.wait_mail(&["big.csv.asc: imported, 1000 records"]);
    let batches = up.batches();
    // Every record arrived exactly once, with the batches the upstream had acknowledged
    // before the crash not sent again.
    let identities: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            b.records
                .iter()
                .map(|r| r["identity"].as_str().unwrap().to_owned())
        })
        .collect();
    let unique: HashSet<&String> = identities.iter().collect();
    assert_eq!(unique.len(), 1000);
    assert_eq!(identities.len(), 1000, "a record was uploaded twice");
    let keys: Vec<&str> = batches.iter().map(|b| b.idempotency_key.as_str()).collect();
    let unique_keys: HashSet<&&str> = keys.iter().collect();
    assert_eq!(unique_keys.len(), 10);
    // One pickup mail: the resumed job is the same job.
    let pickups = w
        .smtp
        .mails()
        .iter()
        .filter(|m| unfold(m).contains("big.csv.asc: picked up"))
        .count();
    assert_eq!(pickups, 1);
    assert!(w.log_text().contains("resuming"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, sshd, sftp and gpg: run bash .ci/test"]
async fn a_200_mb_file_is_decrypted_and_ingested_in_bounded_memory() {
    let (up, up_addr) = Recorder::start(false).await;
    let w = World::new(up_addr, "").await;
    // About 200 MB of CSV.
    let path = w.local.join("large.csv");
    let rows = large_csv(&path);
    let size = std::fs::metadata(&path).unwrap().len();
    w.gpg.encrypt(
        &path,
        &w.local.join("large.csv.pgp"),
        CLIENT,
        false,
        Compress::None,
    );
    w.manifest("large.manifest", "large.csv.pgp", KEY_ID, "profile");
    w.upload(&["large.csv.pgp", "large.manifest"]);
    w.smtp
        .wait_mail(&[&format!("large.csv.pgp: imported, {rows} records")]);
    assert_eq!(up.record_count(), rows);
    let pid = w.gateway().child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!(
        "{size} bytes of CSV, {rows} rows: gateway peak RSS {} MiB",
        hwm_kib / 1024
    );
    assert!(
        hwm_kib < 150 * 1024,
        "peak RSS {} MiB for a {size}-byte file: not constant memory",
        hwm_kib / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, sshd, sftp and gpg: run bash .ci/test"]
async fn the_readmes_customer_script_works_as_written() {
    let (up, up_addr) = Recorder::start(true).await;
    let w = World::new(up_addr, "").await;
    w.local_file(
        "users_data.csv",
        b"email,name,age\nann@example.com,Ann,41\nbob@example.com,Bob,37\n",
    );
    // The customer's own GnuPG home: it holds nothing but what the script imports.
    let home = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let sftp_opts = format!(
        "-i {} -P {} -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes",
        w.sshd.user_key().display(),
        w.sshd.port()
    );
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/intake/customer_upload.sh"
        ))
        .arg("users_data.csv")
        .current_dir(&w.local)
        .env("GNUPGHOME", home.path())
        .env("GATEWAY", w.gateway().url.clone())
        .env("ACCOUNT", "ACCT-1")
        .env("KEY_ID", KEY_ID)
        .env("RECIPIENT", CLIENT)
        .env("CLIENT_EMAIL", CLIENT)
        .env("SFTP_TARGET", format!("{}@127.0.0.1", w.sshd.user()))
        .env("SFTP_OPTS", sftp_opts)
        .output()
        .unwrap();
    let _ = Command::new("gpgconf")
        .args(["--kill", "all"])
        .env("GNUPGHOME", home.path())
        .status();
    assert!(
        out.status.success(),
        "the README's script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    w.smtp.wait_mail(&["users_data.csv.asc: picked up"]);
    let done = w
        .smtp
        .wait_mail(&["users_data.csv.asc: imported, 2 records"]);
    assert!(done.contains(&format!("To: {CLIENT}")), "{done}");
    let records: Vec<serde_json::Value> =
        up.batches().into_iter().flat_map(|b| b.records).collect();
    assert_eq!(
        records,
        [
            serde_json::json!({"type":"profile","identity":"ann@example.com","profileData":{"Name":"Ann","age":41}}),
            serde_json::json!({"type":"profile","identity":"bob@example.com","profileData":{"Name":"Bob","age":37}}),
        ]
    );
}

/// A webhook receiver on 127.0.0.1 that keeps every JSON notice.
async fn webhook() -> (Arc<Mutex<Vec<serde_json::Value>>>, SocketAddr) {
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let sink = seen.clone();
    let app = axum::Router::new().route(
        "/intake",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (seen, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, sshd, sftp and gpg: run bash .ci/test"]
async fn webhooks_size_limits_ended_keys_and_unencrypted_accounts() {
    let (up, up_addr) = Recorder::start(true).await;
    let (hooks, hook_addr) = webhook().await;
    // A month from now: the end of a rotation overlap still to come.
    let month_ahead = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + Duration::from_secs(30 * 86_400),
    );
    let w = World::with(
        up_addr,
        &format!("webhook_url = \"http://{hook_addr}/intake\"\nmax_encrypted_file_bytes = 6000"),
        // This account also takes files that are not encrypted.
        "require_encryption = false",
        &format!(
            // The ECC key again, under an id whose rotation overlap has ended.
            "[[intake.accounts.keys]]\nid = \"ended-key\"\nprivate_key = \"acct-1.ecc.asc\"\npassphrase_file = \"pgp-passphrase\"\nnot_after = \"2020-01-01T00:00:00Z\"\n\n\
             # The RSA key as the old key of a rotation still in its overlap; the new\n\
             # key is ECC_KEY_ID.\n\
             [[intake.accounts.keys]]\nid = \"old-key\"\nprivate_key = \"acct-1.rsa.asc\"\npassphrase_file = \"pgp-passphrase\"\nnot_after = \"{month_ahead}\"\n\n\
             # The ECC key with its passphrase from the environment.\n\
             [[intake.accounts.keys]]\nid = \"env-key\"\nprivate_key = \"acct-1.ecc.asc\"\npassphrase_env = \"{PASSPHRASE_ENV}\"\n"
        ),
    )
    .await;
    assert!(
        !std::fs::read_to_string(w.path("gateway.toml"))
            .unwrap()
            .contains(PASSPHRASE),
        "the env key's passphrase is only in the environment"
    );

    // During the overlap both the old key and the new one decrypt.
    for (file, recipient, key_id) in [
        ("overlap-old.csv", CLIENT, "old-key"),
        ("overlap-new.csv", "ecc@company1.example", ECC_KEY_ID),
        ("env.csv", "ecc@company1.example", "env-key"),
    ] {
        let plain = w.local_file(file, profiles_csv(2, 0).as_bytes());
        let encrypted = format!("{file}.asc");
        w.gpg.encrypt(
            &plain,
            &w.local.join(&encrypted),
            recipient,
            true,
            Compress::Default,
        );
        let manifest = format!("{file}.manifest");
        w.manifest(&manifest, &encrypted, key_id, "profile");
        w.upload(&[&encrypted, &manifest]);
        w.smtp
            .wait_mail(&[&format!("{encrypted}: imported, 2 records")]);
    }

    // Not encrypted, and allowed here.
    w.local_file("plain.csv", profiles_csv(4, 0).as_bytes());
    w.manifest("plain.manifest", "plain.csv", KEY_ID, "profile");
    w.upload(&["plain.csv", "plain.manifest"]);
    w.smtp.wait_mail(&["plain.csv: imported, 4 records"]);

    // Over max_encrypted_file_bytes: refused without being read.
    let big = w.local_file("big.csv", profiles_csv(400, 0).as_bytes());
    w.gpg.encrypt(
        &big,
        &w.local.join("big.csv.pgp"),
        CLIENT,
        false,
        Compress::None,
    );
    assert!(
        std::fs::metadata(w.local.join("big.csv.pgp"))
            .unwrap()
            .len()
            > 6000
    );
    w.manifest("big.manifest", "big.csv.pgp", KEY_ID, "profile");
    w.upload(&["big.csv.pgp", "big.manifest"]);
    w.smtp
        .wait_mail(&["big.csv.pgp: import failed", "over the limit of 6000 bytes"]);

    // Encrypted to the right key material, but named by a key id that has ended.
    let small = w.local_file("late.csv", profiles_csv(2, 0).as_bytes());
    w.gpg.encrypt(
        &small,
        &w.local.join("late.csv.asc"),
        "ecc@company1.example",
        true,
        Compress::Default,
    );
    w.manifest("late.manifest", "late.csv.asc", "ended-key", "profile");
    w.upload(&["late.csv.asc", "late.manifest"]);
    w.smtp.wait_mail(&[
        "late.csv.asc: import failed",
        "keyId \"ended-key\" is no longer valid",
    ]);

    assert_eq!(
        up.record_count(),
        4 + 3 * 2,
        "only the allowed plain file and the three files of valid keys were imported"
    );
    // The webhook got the same notices as JSON. Each notice is mailed first and posted
    // second, so wait for the posts themselves, not for a count.
    let expected = [
        ("plain.csv", "pickup"),
        ("plain.csv", "success"),
        ("big.csv.pgp", "failure"),
        ("late.csv.asc", "failure"),
    ];
    let stages_of = |notices: &[serde_json::Value]| -> Vec<(String, String)> {
        notices
            .iter()
            .map(|n| {
                (
                    n["file"].as_str().unwrap().to_owned(),
                    n["stage"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let notices = wait("the webhook notices", || {
        let n = hooks.lock().unwrap().clone();
        let stages = stages_of(&n);
        expected
            .iter()
            .all(|(f, st)| stages.contains(&((*f).to_owned(), (*st).to_owned())))
            .then_some(n)
    });

    let success = notices
        .iter()
        .find(|n| n["stage"] == "success" && n["file"] == "plain.csv")
        .unwrap();
    assert_eq!(success["uploaded"], 4);
    assert_eq!(success["account"], "ACCT-1");

    // The upstream refuses a batch: the customer gets its answer, the log only the status.
    const ANSWER: &str = r#"{"status":"fail","error":"quota-wombat-7731 exceeded"}"#;
    *up.refuse.lock().unwrap() = Some(ANSWER.to_owned());
    w.local_file("refused.csv", profiles_csv(2, 0).as_bytes());
    w.manifest("refused.manifest", "refused.csv", KEY_ID, "profile");
    w.upload(&["refused.csv", "refused.manifest"]);
    let mail = w.smtp.wait_mail(&[
        "refused.csv: import failed",
        "batch 1 was not accepted by the upload API: HTTP 400 Bad Request",
    ]);
    assert!(unfold(&mail).contains("quota-wombat-7731"), "{mail}");
    let log = w.log_text();
    assert!(
        log.contains("batch 1 was not accepted by the upload API: HTTP 400"),
        "{log}"
    );
    assert!(
        !log.contains("quota-wombat-7731"),
        "the upstream's answer in the log:\n{log}"
    );
    assert!(!log.contains(PASSPHRASE), "a passphrase in the log");
}

// === scheduled pulls from the customer's own SFTP server ===
//
// The sshd plays the customer's server: files wait in `/outbox` of its chroot, where
// the customer's own jobs write them; the intake logs in with the throw-away user key
// and pins the throw-away host key.

/// A pull table for ACCT-1; `extra` goes into it.
fn pull_table(schedule: &str, after: &str, extra: &str) -> String {
    format!(
        r#"
[intake.accounts.pull]
host = "127.0.0.1"
port = @SSHD_PORT@
user = "@SSHD_USER@"
remote_dir = "/outbox"
ssh_key = "@USER_KEY@"
host_key = "@HOST_KEY@"
schedule = "{schedule}"
after = "{after}"
contact = "ops@company1.example"
settle_ms = 300
{extra}
"#
    )
}

impl World {
    /// The customer's outgoing directory on their server.
    fn outbox(&self) -> PathBuf {
        let dir = self.sshd.chroot_dir().join("outbox");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Puts an encrypted profile file of `rows` rows and its manifest into the outbox, as
    /// the customer's export job does; both get the modification time `mtime_offset`
    /// seconds from now (a later day's export of the same names).
    fn export(&self, name: &str, rows: usize, first: usize, mtime_offset: i64) {
        let mut csv = String::from("email,name,age,vip,unmapped\n");
        for i in first..first + rows {
            csv.push_str(&format!(
                "user{i}@example.com,User {i},{},no,x\n",
                20 + i % 50
            ));
        }
        let plain = self.local_file(&format!("{name}.csv"), csv.as_bytes());
        let encrypted = self.outbox().join(format!("{name}.csv.pgp"));
        self.gpg
            .encrypt(&plain, &encrypted, CLIENT, false, Compress::Default);
        self.manifest(
            &format!("{name}.manifest.json"),
            &format!("{name}.csv.pgp"),
            KEY_ID,
            "profile",
        );
        let manifest = self.outbox().join(format!("{name}.manifest.json"));
        std::fs::copy(self.local.join(format!("{name}.manifest.json")), &manifest).unwrap();
        let at = if mtime_offset >= 0 {
            std::time::SystemTime::now() + Duration::from_secs(mtime_offset.unsigned_abs())
        } else {
            std::time::SystemTime::now() - Duration::from_secs(mtime_offset.unsigned_abs())
        };
        for f in [encrypted, manifest] {
            std::fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }
    }

    fn outbox_names(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.outbox().join(sub))
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "processed")
            .collect();
        v.sort();
        v
    }

    /// `hpke-gateway intake run` for ACCT-1 (with `args`): exit code and standard output.
    fn intake_run(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = Command::new(support::served::bin())
            .args(["intake", "run", "--account", "ACCT-1", "--config"])
            .arg(self.path("gateway.toml"))
            .args(args)
            .env(PASSPHRASE_ENV, PASSPHRASE)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!(
            "intake run: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), stdout)
    }

    fn admin_arg(&self) -> String {
        self.gateway().admin_listen.unwrap().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, sshd, sftp and gpg: run bash .ci/test"]
async fn a_scheduled_pull_imports_each_file_once_and_moves_it_on_the_server() {
    let (up, up_addr) = Recorder::start(false).await;
    let w = World::with(up_addr, "", "", &pull_table("every 1s", "move", "")).await;
    w.export("daily", 30, 1, -60);
    w.smtp.wait_mail(&["daily.csv.pgp: imported, 30 records"]);
    assert_eq!(up.record_count(), 30);
    // Moved to processed/ on the customer's server.
    wait("the remote files moved", || {
        (w.outbox_names("") == Vec::<String>::new()
            && w.outbox_names("processed") == ["daily.csv.pgp", "daily.manifest.json"])
        .then_some(())
    });
    // Later runs fetch nothing again.
    let runs = w.gateway().count_log("pull finished");
    w.gateway().wait_log("pull finished", runs + 3).await;
    assert_eq!(up.record_count(), 30, "imported twice");
    // Tomorrow's export under the same names is a new import; the old processed copies
    // on the server are replaced.
    w.export("daily", 20, 100, 86_400);
    w.smtp.wait_mail(&["daily.csv.pgp: imported, 20 records"]);
    assert_eq!(up.record_count(), 50);
    assert_eq!(
        w.metric("hpke_gateway_intake_pull_files_total{account=\"ACCT-1\"}"),
        Some(4.0)
    );
    let last = w
        .metric("hpke_gateway_intake_pull_last_success_timestamp_seconds{account=\"ACCT-1\"}")
        .unwrap();
    assert!(last > 1.7e9, "{last}");
    assert_eq!(
        w.metric("hpke_gateway_intake_pull_failures_total{account=\"ACCT-1\",reason=\"host_key\"}"),
        Some(0.0)
    );
    let log = w.log_text();
    assert!(!log.contains("user1@example.com"), "plaintext in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, sshd, sftp and gpg: run bash .ci/test"]
async fn intake_run_pulls_now_reports_each_file_and_keeps_or_deletes_remote_files() {
    let (up, up_addr) = Recorder::start(false).await;
    // A schedule that runs once at start and then not for a year: only `intake run`.
    let mut w = World::with(up_addr, "", "", &pull_table("0 0 1 1 *", "keep", "")).await;
    // The run at start, before the customer made their outbox: a clear failure.
    w.gateway().wait_log("cannot list /outbox", 1).await;
    w.export("orders", 12, 1, -60);
    let admin = w.admin_arg();
    let (code, out) = w.intake_run(&["--admin", &admin]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 file(s) fetched"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("orders.csv.pgp")
                && l.contains("imported: 12 records, 0 rows skipped")),
        "{out}"
    );
    assert!(out.contains("sha256 "), "{out}");
    assert_eq!(up.record_count(), 12);
    // `keep`: still on the server, and not fetched again.
    assert_eq!(
        w.outbox_names(""),
        ["orders.csv.pgp", "orders.manifest.json"]
    );
    let (code, out) = w.intake_run(&["--admin", &admin, "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["fetched"], serde_json::json!([]), "{out}");
    assert_eq!(report["already_fetched"], 2, "{out}");
    assert_eq!(up.record_count(), 12);
    // An unknown account is refused by the gateway, naming it.
    let out = Command::new(support::served::bin())
        .args([
            "intake",
            "run",
            "--account",
            "NOPE",
            "--admin",
            &admin,
            "--config",
        ])
        .arg(w.path("gateway.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no intake account \"NOPE\""));

    // Without a running gateway, `intake run` pulls in its own process: `delete`.
    w.kill_gateway();
    w.edit_config_file("after = \"keep\"", "after = \"delete\"");
    w.export("orders", 5, 500, 86_400);
    let (code, out) = w.intake_run(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("orders.csv.pgp") && l.contains("imported: 5 records")),
        "{out}"
    );
    assert_eq!(
        w.outbox_names(""),
        Vec::<String>::new(),
        "deleted on the server"
    );
    assert_eq!(up.record_count(), 17);

    // A file over the size limit is refused unfetched, reported, left on the server even
    // with `delete`, and not reported again; the run's other files go on.
    w.edit_config_file(
        "settle_ms = 300\n",
        "settle_ms = 300\nmax_encrypted_file_bytes = 100\n",
    );
    w.export("big", 40, 900, 2 * 86_400);
    let (code, out) = w.intake_run(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not pulled: \"big.csv.pgp\" is"), "{out}");
    assert!(out.contains("over the limit of 100 bytes"), "{out}");
    assert!(
        out.contains("big.manifest.json"),
        "the manifest was fetched: {out}"
    );
    assert_eq!(
        w.outbox_names(""),
        ["big.csv.pgp"],
        "the refused file stays"
    );
    w.smtp.wait_mail(&[
        "Scheduled import from sftp://",
        "over the limit of 100 bytes",
    ]);
    let (code, out) = w.intake_run(&["--json"]);
    assert_eq!(code, Some(0), "reported once: {out}");
    assert_eq!(w.outbox_names(""), ["big.csv.pgp"]);
    assert_eq!(up.record_count(), 17);
}

impl World {
    fn edit_config_file(&self, from: &str, to: &str) {
        let path = self.path("gateway.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from:?} not in:\n{text}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, sshd, sftp and gpg: run bash .ci/test"]
async fn a_changed_host_key_a_refused_login_and_an_unreachable_server_fail_clearly() {
    let (up, up_addr) = Recorder::start(false).await;
    // Another server's key is pinned.
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC47E4Bte+TRzmQfJ++QrF63Bf462eyOVsEOsxQopzNJ";
    let table =
        pull_table("every 1s", "move", "report_after_failures = 3").replace("@HOST_KEY@", other);
    let w = World::with(up_addr, "", "", &table).await;
    w.export("weekly", 7, 1, -60);
    w.gateway().wait_log("reason=\"host_key\"", 3).await;
    let mail = w
        .smtp
        .wait_mail(&["Scheduled import from sftp://", "is not the pinned key"]);
    assert!(mail.contains("To: ops@company1.example"), "{mail}");
    // Once per streak, not once per run.
    let host_key_mails = |w: &World| {
        w.smtp
            .mails()
            .iter()
            .filter(|m| unfold(m).contains("is not the pinned key"))
            .count()
    };
    assert_eq!(host_key_mails(&w), 1);
    assert_eq!(up.record_count(), 0);
    assert_eq!(
        w.outbox_names(""),
        ["weekly.csv.pgp", "weekly.manifest.json"],
        "nothing fetched"
    );
    let refused =
        w.metric("hpke_gateway_intake_pull_failures_total{account=\"ACCT-1\",reason=\"host_key\"}");
    assert!(refused.is_some_and(|n| n >= 3.0), "{refused:?}");
    let pull_dir = w.state("ACCT-1/pull");
    for sub in ["partial", "notes", "done"] {
        let staged = std::fs::read_dir(pull_dir.join(sub)).unwrap().count();
        assert_eq!(staged, 0, "{sub}/ is not empty: something was fetched");
    }

    // The right host key, a key the server does not know.
    let host_key = std::fs::read_to_string(w.sshd.root().join("host_ed25519.pub")).unwrap();
    let stranger = w.path("stranger_ed25519");
    sshd::generate_key(&stranger);
    w.gateway()
        .reload_after(|| {
            w.gateway().edit_config(other, host_key.trim());
            w.gateway().edit_config(
                &w.sshd.user_key().display().to_string(),
                &stranger.display().to_string(),
            );
            w.gateway().signal("HUP");
        })
        .await;
    w.gateway().wait_log("reason=\"login\"", 1).await;
    w.smtp.wait_mail(&["the server refused the login key"]);

    // The right key, a port nothing listens on: mailed after the third failure in a row.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let before = w.gateway().count_log("reason=\"unreachable\"");
    w.gateway()
        .reload_after(|| {
            w.gateway().edit_config(
                &stranger.display().to_string(),
                &w.sshd.user_key().display().to_string(),
            );
            w.gateway().edit_config(
                &format!("port = {}", w.sshd.port()),
                &format!("port = {dead_port}"),
            );
            w.gateway().signal("HUP");
        })
        .await;
    w.gateway()
        .wait_log("reason=\"unreachable\"", before + 2)
        .await;
    assert!(
        !w.smtp
            .mails()
            .iter()
            .any(|m| unfold(m).contains("cannot reach the server")),
        "mailed before the third failure"
    );
    w.gateway()
        .wait_log("reason=\"unreachable\"", before + 3)
        .await;
    w.smtp
        .wait_mail(&["cannot reach the server", "3 scheduled runs in a row"]);
    assert!(
        w.metric("hpke_gateway_intake_pull_consecutive_failures{account=\"ACCT-1\"}")
            .is_some_and(|n| n >= 3.0)
    );
    // The server is back: the next run imports.
    w.gateway()
        .reload_after(|| {
            w.gateway().edit_config(
                &format!("port = {dead_port}"),
                &format!("port = {}", w.sshd.port()),
            );
            w.gateway().signal("HUP");
        })
        .await;
    w.smtp.wait_mail(&["weekly.csv.pgp: imported, 7 records"]);
    assert_eq!(up.record_count(), 7);
    assert_eq!(
        w.metric("hpke_gateway_intake_pull_consecutive_failures{account=\"ACCT-1\"}"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, sshd, sftp and gpg: run bash .ci/test"]
async fn a_file_still_being_written_on_the_server_is_left_for_a_later_run() {
    let (up, up_addr) = Recorder::start(false).await;
    let w = World::with(up_addr, "", "", &pull_table("every 1s", "move", "")).await;
    // The whole encrypted file, made first; then written to the outbox slowly, as a
    // slow export job would.
    let mut csv = String::from("email,name,age,vip,unmapped\n");
    for i in 1..=3000 {
        csv.push_str(&format!(
            "user{i}@example.com,User {i},{},no,x\n",
            20 + i % 50
        ));
    }
    let plain = w.local_file("slow.csv", csv.as_bytes());
    let whole = w.local.join("slow.csv.pgp");
    w.gpg.encrypt(&plain, &whole, CLIENT, false, Compress::None);
    let bytes = std::fs::read(&whole).unwrap();
    w.manifest("slow.manifest.json", "slow.csv.pgp", KEY_ID, "profile");
    std::fs::copy(
        w.local.join("slow.manifest.json"),
        w.outbox().join("slow.manifest.json"),
    )
    .unwrap();
    {
        use std::io::Write as _;
        let mut out = std::fs::File::create(w.outbox().join("slow.csv.pgp")).unwrap();
        let chunk = bytes.len() / 20 + 1;
        for part in bytes.chunks(chunk) {
            out.write_all(part).unwrap();
            out.flush().unwrap();
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    w.smtp.wait_mail(&["slow.csv.pgp: imported, 3000 records"]);
    assert_eq!(up.record_count(), 3000);
    // It was seen changing, and no half of it was ever imported or failed.
    assert!(w.log_text().contains("changing=1"), "never seen changing");
    assert!(
        !w.smtp
            .mails()
            .iter()
            .any(|m| unfold(m).contains("import failed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "heavy: a 200 MB transfer and a kill -9; run bash .ci/test"]
async fn a_200_mb_pull_killed_mid_transfer_resumes_and_imports_once_in_bounded_memory() {
    let (up, up_addr) = Recorder::start(false).await;
    let mut w = World::with(up_addr, "", "", &pull_table("every 1s", "move", "")).await;
    let path = w.local.join("large.csv");
    let rows = large_csv(&path);
    // Encrypted beside the outbox, then moved in whole (with its manifest after it).
    let staged = w.sshd.chroot_dir().join("large.csv.pgp");
    w.gpg.encrypt(&path, &staged, CLIENT, false, Compress::None);
    let size = std::fs::metadata(&staged).unwrap().len();
    std::fs::rename(&staged, w.outbox().join("large.csv.pgp")).unwrap();
    w.manifest("large.manifest.json", "large.csv.pgp", KEY_ID, "profile");
    std::fs::copy(
        w.local.join("large.manifest.json"),
        w.outbox().join("large.manifest.json"),
    )
    .unwrap();
    // Killed once a fifth of it has arrived.
    let part = w.state("ACCT-1/pull/partial/large.csv.pgp");
    wait("a partial transfer", || {
        std::fs::metadata(&part)
            .ok()
            .filter(|m| m.len() > size / 5)
            .map(|_| ())
    });
    w.kill_gateway();
    let partial = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    eprintln!("killed with {partial} of {size} bytes transferred");
    assert!(partial < size, "the transfer finished before the kill");
    w.start_gateway();
    w.smtp
        .wait_mail(&[&format!("large.csv.pgp: imported, {rows} records")]);
    assert_eq!(up.record_count(), rows, "imported more or less than once");
    assert!(
        w.log_text().contains("resuming a partial transfer"),
        "not resumed"
    );
    let pid = w.gateway().child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!(
        "pulled {size} bytes ({rows} rows) after a kill -9: gateway peak RSS {} MiB",
        hwm_kib / 1024
    );
    assert!(hwm_kib < 150 * 1024, "peak RSS {} MiB", hwm_kib / 1024);
    let mails = w.smtp.mails();
    let imported = mails
        .iter()
        .filter(|m| unfold(m).contains("large.csv.pgp: imported"))
        .count();
    assert_eq!(imported, 1);
}
