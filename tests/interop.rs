//! Interoperability with client libraries nobody on this project wrote: Google Tink
//! (Python), pyhpke (Python) and @hpke/core (JavaScript) drive the real
//! `hpke-gateway serve` binary over HTTP on 127.0.0.1, in front of a real upstream
//! that records what it received and what it answered.
//!
//! The clients live in tests/interop/{python,js}. Their pinned packages are installed
//! by `.ci/run`, or by this test itself when missing; if that fails, the test fails (it
//! never skips) and says how to install them.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::BodyExt as _;
use serde_json::Value;
use support::served::{Served, bin};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const PASSCODE: &str = "interop-passcode";
const CASES: [&str; 8] = [
    "upload",
    "events_cursor",
    "events_page",
    "profile_get",
    "echo_1mib",
    "err_plaintext_body",
    "err_tampered",
    "err_encryption_off",
];

#[derive(Debug, Clone)]
struct Exchange {
    case: String,
    method: String,
    passcode: Option<String>,
    content_type: Option<String>,
    request_body: Bytes,
    response_body: Bytes,
}

type Log = Arc<Mutex<Vec<Exchange>>>;

/// Records each request and the upstream's answer, keyed by `X-Interop-Case`.
async fn record(State(log): State<Log>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let request_body = body.collect().await.unwrap().to_bytes();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let case = header("x-interop-case").unwrap_or_default();
    let passcode = header("x-clevertap-passcode");
    let content_type = header("content-type");
    let method = parts.method.to_string();
    let response = next
        .run(Request::from_parts(parts, Body::from(request_body.clone())))
        .await;
    let (rparts, rbody) = response.into_parts();
    let response_body = rbody.collect().await.unwrap().to_bytes();
    log.lock().unwrap().push(Exchange {
        case,
        method,
        passcode,
        content_type,
        request_body,
        response_body: response_body.clone(),
    });
    Response::from_parts(rparts, Body::from(response_body))
}

async fn start_upstream() -> (Log, SocketAddr) {
    let log: Log = Arc::default();
    let app = Router::new()
        .merge(hpke_gateway::sample_upstream::router())
        .route("/echo", post(|body: Bytes| async move { body }))
        .layer(middleware::from_fn_with_state(log.clone(), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (log, addr)
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn python_clients_ready() -> bool {
    Command::new(python())
        .args(["-c", "import tink, pyhpke, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn js_client_ready() -> bool {
    Path::new(ROOT)
        .join("tests/interop/js/node_modules/@hpke/core")
        .exists()
}

/// The clients' pinned packages must be installed (`bash .ci/test` installs them);
/// fails, never skips, when they are not.
fn ensure_clients_installed() {
    assert!(
        python_clients_ready(),
        "the Python interop clients need their packages: pip install -r tests/interop/python/requirements.txt (bash .ci/test does)"
    );
    assert!(
        js_client_ready(),
        "the JavaScript interop client needs its packages: (cd tests/interop/js && npm ci) (bash .ci/test does)"
    );
}

fn python_client(name: &str) -> Command {
    let mut c = Command::new(python());
    c.arg(Path::new(ROOT).join("tests/interop/python").join(name));
    c
}

fn js_client() -> Command {
    let mut c = Command::new("node");
    c.arg(Path::new(ROOT).join("tests/interop/js/client.mjs"));
    c
}

fn write_config(dir: &Path, upstream: SocketAddr) -> PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"listen = "127.0.0.1:0"
upstream = "http://{upstream}"
admin_listen = "off"

[[server_keys]]
id = 1
private_key = "server-1.pem"

[[accounts]]
id = "ACCT-TINK"
encryption = true
public_keys = ["tink-tink-public.json"]

[[accounts]]
id = "ACCT-TINKRAW"
encryption = true
public_keys = ["tink-raw-public.json"]

[[accounts]]
id = "ACCT-PYHPKE"
encryption = true
public_keys = ["pyhpke-customer.pub.pem"]

[[accounts]]
id = "ACCT-PYHPKE-RAW"
encryption = true
public_keys = ["pyhpke-customer.pub.b64"]

[[accounts]]
id = "ACCT-JS"
encryption = true
public_keys = ["js-customer.pub.b64"]

[[accounts]]
id = "ACCT-OFF"
encryption = false
"#
        ),
    )
    .unwrap();
    path
}

/// Checks one client run's lines against what the upstream recorded.
fn verify(run_name: &str, stdout: &[u8], log: &Log) -> usize {
    let lines: Vec<Value> = std::str::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{run_name}: {e}: {l}")))
        .collect();
    let cases: Vec<&str> = lines.iter().map(|l| l["case"].as_str().unwrap()).collect();
    assert_eq!(cases, CASES, "{run_name}: every case ran, in order");
    let log = log.lock().unwrap().clone();
    for line in &lines {
        let case = line["case"].as_str().unwrap();
        let key = format!("{run_name}:{case}");
        let seen: Vec<&Exchange> = log.iter().filter(|e| e.case == key).collect();
        let status = line["status"].as_u64().unwrap();
        if let Some(expected) = case.strip_prefix("err_") {
            let (want_status, want_code) = match expected {
                "plaintext_body" => (400, 4006),
                "tampered" => (400, 4008),
                "encryption_off" => (403, 4005),
                other => panic!("unknown case {other}"),
            };
            assert_eq!(
                (status, line["error_code"].as_u64()),
                (want_status, Some(want_code)),
                "{key}"
            );
            assert!(
                seen.is_empty(),
                "{key}: a refused request must not reach the upstream"
            );
            continue;
        }
        assert_eq!(status, 200, "{key}");
        assert_eq!(seen.len(), 1, "{key}: the upstream saw it once");
        let ex = seen[0];
        let sent = B64.decode(line["sent_b64"].as_str().unwrap()).unwrap();
        let got = B64
            .decode(line["response_plaintext_b64"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            ex.request_body.as_ref(),
            sent.as_slice(),
            "{key}: upstream saw the exact plaintext"
        );
        assert_eq!(
            got.as_slice(),
            ex.response_body.as_ref(),
            "{key}: client decrypted the exact upstream answer"
        );
        assert_eq!(
            ex.passcode.as_deref(),
            Some(PASSCODE),
            "{key}: auth header untouched"
        );
        if sent.is_empty() {
            assert_eq!(ex.method, "GET", "{key}");
        } else {
            assert_eq!(
                ex.content_type.as_deref(),
                Some("application/json"),
                "{key}"
            );
        }
        if case == "echo_1mib" {
            assert_eq!(sent.len(), 1 << 20, "{key}");
        }
    }
    lines.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with tink and pyhpke, and node: run bash .ci/test"]
async fn tink_pyhpke_and_hpke_js_clients_against_the_real_binary() {
    ensure_clients_installed();
    let (log, upstream) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_owned();

    // The gateway's key and its public forms, made by the binary.
    run_ok(Command::new(bin()).args(["keygen", "--out", &p("server-1.pem")]));
    for (file, args) in [
        (
            "server-1.tink.json",
            vec!["--format", "tink-json", "--key-id", "1"],
        ),
        ("server-1.raw-keyset.json", vec!["--format", "tink-json"]),
        ("server-1.pub.pem", vec!["--format", "pem"]),
        ("server-1.pub.b64", vec!["--format", "raw"]),
    ] {
        let out = run_ok(
            Command::new(bin())
                .args(["public-key", "--key", &p("server-1.pem")])
                .args(args),
        );
        std::fs::write(d.join(file), out).unwrap();
    }
    // The customers' keys, made by each client library.
    run_ok(python_client("tink_client.py").args(["keys", "--dir", &p("")]));
    run_ok(python_client("pyhpke_client.py").args(["keys", "--dir", &p("")]));
    run_ok(js_client().args(["keys", "--dir", &p("")]));

    let config = write_config(d, upstream);
    let server = Served::spawn(&config, &[], &[]);
    let url = server.url.clone();
    // What clients download before each upload: the published keys, as Tink and PEM.
    for (file, query) in [
        ("published.tink.json", ""),
        ("published.pem", "?format=pem"),
    ] {
        let res = reqwest::get(format!("{url}/.well-known/hpke-keys{query}"))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        std::fs::write(d.join(file), res.bytes().await.unwrap()).unwrap();
    }

    let runs: Vec<(&str, Command)> = vec![
        ("tink-tinkprefix", {
            let mut c = python_client("tink_client.py");
            c.args([
                "run",
                "--server-public",
                &p("server-1.tink.json"),
                "--customer-private",
                &p("tink-tink-private.json"),
                "--account",
                "ACCT-TINK",
            ]);
            c
        }),
        ("tink-raw", {
            let mut c = python_client("tink_client.py");
            c.args([
                "run",
                "--server-public",
                &p("server-1.raw-keyset.json"),
                "--customer-private",
                &p("tink-raw-private.json"),
                "--account",
                "ACCT-TINKRAW",
            ]);
            c
        }),
        ("tink-published-keyset", {
            let mut c = python_client("tink_client.py");
            c.args([
                "run",
                "--server-public",
                &p("published.tink.json"),
                "--customer-private",
                &p("tink-tink-private.json"),
                "--account",
                "ACCT-TINK",
            ]);
            c
        }),
        ("pyhpke-published-pem", {
            let mut c = python_client("pyhpke_client.py");
            c.args([
                "run",
                "--server-public",
                &p("published.pem"),
                "--customer-private",
                &p("pyhpke-customer.pem"),
                "--account",
                "ACCT-PYHPKE",
            ]);
            c
        }),
        ("pyhpke-pem", {
            let mut c = python_client("pyhpke_client.py");
            c.args([
                "run",
                "--server-public",
                &p("server-1.pub.pem"),
                "--customer-private",
                &p("pyhpke-customer.pem"),
                "--account",
                "ACCT-PYHPKE",
            ]);
            c
        }),
        ("pyhpke-raw", {
            let mut c = python_client("pyhpke_client.py");
            c.args([
                "run",
                "--server-public",
                &p("server-1.pub.b64"),
                "--customer-private",
                &p("pyhpke-customer.pem"),
                "--account",
                "ACCT-PYHPKE-RAW",
            ]);
            c
        }),
        ("hpke-js-raw", {
            let mut c = js_client();
            c.args([
                "run",
                "--server-public",
                &p("server-1.pub.b64"),
                "--customer-private",
                &p("js-customer.private.b64"),
                "--account",
                "ACCT-JS",
            ]);
            c
        }),
        ("hpke-js-pem", {
            let mut c = js_client();
            c.args([
                "run",
                "--server-public",
                &p("server-1.pub.pem"),
                "--customer-private",
                &p("js-customer.private.b64"),
                "--account",
                "ACCT-JS",
            ]);
            c
        }),
    ];
    let mut total = 0;
    for (name, mut cmd) in runs {
        cmd.args(["--url", &url, "--off-account", "ACCT-OFF", "--name", name]);
        let stdout = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
            .await
            .unwrap();
        total += verify(name, &stdout, &log);
    }
    assert_eq!(total, 8 * CASES.len());
}

/// Every suite (the three X25519 suites and post-quantum X-Wing) through the real binary,
/// with the clients customers use: Tink Python's eight HPKE templates (TINK and RAW
/// prefixes), @hpke/core with @hpke/dhkem-x25519, @hpke/chacha20poly1305 and
/// @hpke/hybridkem-x-wing in all four suites, and pyhpke in the three X25519 suites. One
/// gateway holds a server key of each suite side by side; each customer key is made by
/// its client library, in the suite under test, and the account's response is sealed
/// with it. The Tink and JavaScript runs of a suite fetch the gateway's key from
/// `/.well-known/hpke-keys?suite=NAME`, as the docs' post-quantum snippets do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with tink and pyhpke, and node: run bash .ci/test"]
async fn every_suite_round_trips_with_tink_hpke_js_and_pyhpke_through_the_real_binary() {
    use hpke_gateway::envelope::Suite;
    ensure_clients_installed();
    let (log, upstream) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_owned();

    let mut config = format!(
        "listen = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\nadmin_listen = \"off\"\n"
    );
    // A server key of each suite, ids 1..=4, made by the binary; each one's RAW keyset
    // (for Tink's RAW templates) and raw base64 key (for pyhpke).
    for (i, suite) in Suite::ALL.iter().enumerate() {
        let (id, name) = (i + 1, suite.name());
        let key = p(&format!("server-{id}.pem"));
        run_ok(Command::new(bin()).args(["keygen", "--out", &key, "--suite", name]));
        for (file, format) in [("raw.json", "tink-json"), ("b64", "raw")] {
            let out = run_ok(Command::new(bin()).args([
                "public-key",
                "--key",
                &key,
                "--suite",
                name,
                "--format",
                format,
            ]));
            std::fs::write(d.join(format!("server-{name}.{file}")), out).unwrap();
        }
        config += &format!(
            "\n[[server_keys]]\nid = {id}\nprivate_key = \"server-{id}.pem\"\nsuite = \"{name}\"\n"
        );
    }

    // The customers' keys, each made by its client library in the suite under test.
    let templates: Vec<(Suite, &str)> = Suite::ALL
        .iter()
        .flat_map(|s| s.tink_templates().unwrap().map(|t| (*s, t)))
        .collect();
    assert_eq!(templates.len(), 8);
    let mut keys = python_client("tink_client.py");
    keys.args(["keys", "--dir", &p("")]);
    for (_, t) in &templates {
        keys.args(["--template", t]);
    }
    run_ok(&mut keys);
    run_ok(python_client("pyhpke_client.py").args(["keys", "--dir", &p("")]));
    run_ok(js_client().args(["keys", "--dir", &p("")]));
    run_ok(js_client().args(["keys", "--dir", &p(""), "--suite", "xwing-aes-256-gcm"]));

    let mut runs: Vec<(String, Command)> = Vec::new();
    for (suite, template) in &templates {
        let name = suite.name();
        let account = format!("ACCT-TINK-{template}");
        // A Tink keyset names its suite. Each account requires its suite, so a request
        // sealed to the wrong published key (`?suite=` ignored) would be refused.
        config += &format!(
            "\n[[accounts]]\nid = \"{account}\"\nencryption = true\npublic_keys = [\"tink-{template}-public.json\"]\nrequest_suites = [\"{name}\"]\n"
        );
        let server_public = if template.ends_with("_RAW") {
            p(&format!("server-{name}.raw.json"))
        } else {
            format!("published:{name}")
        };
        let mut c = python_client("tink_client.py");
        c.args([
            "run",
            "--server-public",
            &server_public,
            "--customer-private",
            &p(&format!("tink-{template}-private.json")),
            "--account",
            &account,
        ]);
        runs.push((format!("tink-{template}"), c));
    }
    for suite in Suite::ALL {
        let name = suite.name();
        let xwing = suite.kem != Suite::default().kem;
        if !xwing {
            let account = format!("ACCT-PYHPKE-{name}");
            config += &format!(
                "\n[[accounts]]\nid = \"{account}\"\nencryption = true\npublic_keys = [\"pyhpke-customer.pub.b64\"]\npublic_key_suite = \"{name}\"\n"
            );
            let mut c = python_client("pyhpke_client.py");
            c.args([
                "run",
                "--server-public",
                &p(&format!("server-{name}.b64")),
                "--customer-private",
                &p("pyhpke-customer.pem"),
                "--account",
                &account,
                "--suite",
                name,
            ]);
            runs.push((format!("pyhpke-{name}"), c));
        }
        let account = format!("ACCT-JS-{name}");
        let customer = if xwing {
            "js-xwing-customer"
        } else {
            "js-customer"
        };
        config += &format!(
            "\n[[accounts]]\nid = \"{account}\"\nencryption = true\npublic_keys = [\"{customer}.pub.b64\"]\npublic_key_suite = \"{name}\"\nrequest_suites = [\"{name}\"]\n"
        );
        let mut c = js_client();
        c.args([
            "run",
            "--server-public",
            "published",
            "--customer-private",
            &p(&format!("{customer}.private.b64")),
            "--account",
            &account,
            "--suite",
            name,
        ]);
        runs.push((format!("hpke-js-{name}"), c));
    }
    config += "\n[[accounts]]\nid = \"ACCT-OFF\"\nencryption = false\n";
    let config_path = d.join("gateway.toml");
    std::fs::write(&config_path, &config).unwrap();
    let server = Served::spawn(&config_path, &[], &[]);
    let url = server.url.clone();

    assert_eq!(runs.len(), 8 + 3 + 4);
    let mut total = 0;
    for (name, mut cmd) in runs {
        cmd.args(["--url", &url, "--off-account", "ACCT-OFF", "--name", &name]);
        let stdout = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
            .await
            .unwrap();
        total += verify(&name, &stdout, &log);
    }
    assert_eq!(total, 15 * CASES.len());
}

/// Tink Python 1.16.1's eight HPKE templates (three X25519 suites and X-Wing, each with
/// a TINK and a RAW prefix), both directions, through the gateway's key loading and
/// envelope: Tink makes each keyset and encrypts to it, the gateway reads the keyset
/// (with the suite its `HpkeParams` name) and opens Tink's ciphertext; the gateway seals
/// to the keyset's public key with its prefix, and Tink decrypts that. The same through
/// the CLI: `hpke-gateway open --key` Tink's private keyset opens Tink's ciphertext, and
/// Tink decrypts what `hpke-gateway seal --recipient` Tink's public keyset made.
#[test]
#[ignore = "needs python3 with tink: run bash .ci/test"]
fn tink_every_hpke_template_both_directions_through_the_envelope() {
    use hpke_gateway::envelope::{self, Prefix, Suite};
    assert!(
        python_clients_ready(),
        "the Python interop clients need their packages: pip install -r tests/interop/python/requirements.txt (bash .ci/test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let info = "ACCT-PQ-1";
    let plaintext =
        br#"{"d":[{"identity":"pq","type":"event","evtName":"record now, decrypt later"}]}"#;
    let pt_path = dir.path().join("plaintext.json");
    std::fs::write(&pt_path, plaintext).unwrap();
    let made = run_ok(
        python_client("tink_suites.py")
            .arg("make")
            .arg(dir.path())
            .arg(info)
            .arg(&pt_path),
    );
    let names: Vec<String> = String::from_utf8(made)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(names.len(), 8, "{names:?}");
    for name in &names {
        let keyset = std::fs::read(dir.path().join(format!("{name}.json"))).unwrap();
        let loaded = hpke_gateway::keys::parse_private_key(&keyset, None).unwrap();
        let suite = loaded.key.suite();
        let expected = Suite::ALL
            .iter()
            .find(|s| {
                s.tink_templates()
                    .is_some_and(|t| t.contains(&name.as_str()))
            })
            .unwrap();
        assert_eq!(suite, *expected, "{name}");
        let prefix = loaded.tink_prefix.unwrap();
        assert_eq!(prefix == Prefix::Raw, name.ends_with("_RAW"), "{name}");
        // Tink's ciphertext opens.
        let ct = std::fs::read(dir.path().join(format!("{name}.tink"))).unwrap();
        let body = match prefix {
            Prefix::Raw => &ct[..],
            Prefix::Tink(_) => {
                let (got, rest) = envelope::split_prefix(&ct);
                assert_eq!(got, prefix, "{name}");
                rest
            }
        };
        assert_eq!(
            body.len(),
            suite.kem.enc_len() + plaintext.len() + envelope::TAG_LEN,
            "{name}"
        );
        assert_eq!(
            envelope::open(&loaded.key, info.as_bytes(), body).unwrap(),
            plaintext,
            "{name}"
        );
        // Ours, for Tink to open.
        let ours =
            envelope::seal(&loaded.key.public_key(), prefix, info.as_bytes(), plaintext).unwrap();
        std::fs::write(dir.path().join(format!("{name}.ours")), ours).unwrap();
        // The CLI, with Tink's keysets as they are: `open` opens Tink's ciphertext, and
        // `seal` to Tink's public keyset makes one for Tink to open.
        let file = |ext: &str| dir.path().join(format!("{name}{ext}"));
        let cli = |args: &[&std::ffi::OsStr], stdin: &Path| {
            let out = Command::new(bin())
                .args(args)
                .stdin(std::fs::File::open(stdin).unwrap())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let opened = cli(
            &[
                "open".as_ref(),
                "--key".as_ref(),
                file(".json").as_os_str(),
                "--info".as_ref(),
                info.as_ref(),
            ],
            &file(".tink"),
        );
        assert_eq!(opened, plaintext, "hpke-gateway open: {name}");
        let sealed = cli(
            &[
                "seal".as_ref(),
                "--recipient".as_ref(),
                file(".public.json").as_os_str(),
                "--info".as_ref(),
                info.as_ref(),
            ],
            &pt_path,
        );
        assert_eq!(sealed.len(), ct.len(), "hpke-gateway seal: {name}");
        std::fs::write(file(".cli"), sealed).unwrap();
    }
    run_ok(
        python_client("tink_suites.py")
            .arg("open")
            .arg(dir.path())
            .arg(info),
    );
    for name in &names {
        assert_eq!(
            std::fs::read(dir.path().join(format!("{name}.opened"))).unwrap(),
            plaintext,
            "Tink opened ours: {name}"
        );
        assert_eq!(
            std::fs::read(dir.path().join(format!("{name}.cli-opened"))).unwrap(),
            plaintext,
            "Tink opened hpke-gateway seal's: {name}"
        );
    }
}

/// Oblivious HTTP with a client nobody here wrote the library of: pyhpke, and a Binary
/// HTTP codec written from RFC 9292 (tests/interop/python/ohttp_client.py, whose
/// `selftest` first reproduces RFC 9458 Appendix A), through the real binary: every AEAD,
/// both framings, the upstream seeing exactly the inner request and the client
/// decrypting exactly the upstream's answer; a target outside the allowlist refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with pyhpke: run bash .ci/test"]
async fn python_ohttp_client_through_the_real_binary() {
    assert!(
        python_clients_ready(),
        "the Python interop clients need their packages: pip install -r tests/interop/python/requirements.txt (bash .ci/test does)"
    );
    let selftest = run_ok(python_client("ohttp_client.py").arg("selftest"));
    let selftest: Value = serde_json::from_slice(&selftest).unwrap();
    assert_eq!(selftest["selftest"], "ok", "{selftest}");

    let (log, upstream) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("server-1.pem");
    run_ok(Command::new(bin()).args(["keygen", "--out", key.to_str().unwrap()]));
    let config = d.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\nadmin_listen = \"off\"\n\n[[server_keys]]\nid = 1\nprivate_key = \"server-1.pem\"\n\n[ohttp]\nenabled = true\nallowed_targets = [\"https://api.example.com\"]\n"
        ),
    )
    .unwrap();
    let server = Served::spawn(&config, &[], &[]);
    let gateway = format!("{}/.well-known/ohttp-gateway", server.url);
    let keys = format!("{}/.well-known/ohttp-keys", server.url);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let run = |authority: &str, body: &[u8], extra: &[&str]| {
        let out = run_ok(
            python_client("ohttp_client.py")
                .args(["run", "--gateway", &gateway, "--keys", &keys])
                .args(["--method", "POST", "--authority", authority])
                .args(["--path", "/echo?via=ohttp"])
                .args(["--header", "x-interop-case: ohttp"])
                .args(["--header", "content-type: application/json"])
                .args(["--body-hex", &hex(body)])
                .args(extra),
        );
        serde_json::from_slice::<Value>(&out).unwrap()
    };

    let mut forwarded = 0;
    for aead in ["aes-128-gcm", "aes-256-gcm", "chacha20-poly1305"] {
        for framing in [&[][..], &["--indeterminate", "--chunk-size", "7"][..]] {
            let body = format!(r#"{{"aead":"{aead}","framing":{}}}"#, framing.len());
            let mut extra = vec!["--aead", aead];
            extra.extend_from_slice(framing);
            let answer = run("api.example.com", body.as_bytes(), &extra);
            assert_eq!(answer["outer_status"], 200, "{answer}");
            assert_eq!(answer["outer_content_type"], "message/ohttp-res");
            assert_eq!(answer["inner_status"], 200, "{answer}");
            assert_eq!(answer["inner_body_hex"], hex(body.as_bytes()), "{answer}");
            forwarded += 1;
            let log = log.lock().unwrap();
            assert_eq!(log.len(), forwarded);
            let seen = log.last().unwrap();
            assert_eq!(seen.case, "ohttp");
            assert_eq!(seen.method, "POST");
            assert_eq!(seen.content_type.as_deref(), Some("application/json"));
            assert_eq!(seen.request_body, body.as_bytes());
            assert_eq!(seen.response_body, body.as_bytes());
        }
    }
    // Chunked OHTTP (draft-ietf-ohai-chunked-ohttp), the same client: every AEAD, a
    // small request in 7-byte chunks and 50 kB in 16 KiB chunks, the answer opened chunk
    // by chunk (and refused by the client without its final chunk).
    let big: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    for aead in ["aes-128-gcm", "aes-256-gcm", "chacha20-poly1305"] {
        for (body, chunk) in [(&br#"{"chunked":1}"#[..], "7"), (&big[..], "16384")] {
            let answer = run(
                "api.example.com",
                body,
                &["--aead", aead, "--indeterminate", "--chunked", chunk],
            );
            assert_eq!(answer["outer_status"], 200, "{answer}");
            assert_eq!(answer["outer_content_type"], "message/ohttp-chunked-res");
            assert_eq!(answer["inner_status"], 200, "{answer}");
            assert_eq!(answer["inner_body_hex"], hex(body), "{aead} {chunk}");
            assert!(answer["response_chunks"].as_u64().unwrap() >= 2, "{answer}");
            forwarded += 1;
            let log = log.lock().unwrap();
            assert_eq!(log.len(), forwarded);
            let seen = log.last().unwrap();
            assert_eq!(seen.case, "ohttp");
            assert_eq!(seen.request_body, body);
            assert_eq!(seen.response_body, body);
        }
    }
    // Without its final chunk, the request never reaches the upstream whole.
    let cut = run(
        "api.example.com",
        &big,
        &["--indeterminate", "--chunked", "1000", "--omit-final-chunk"],
    );
    assert!(
        cut["outer_status"] == 400 || cut["inner_status"].as_u64().unwrap_or(0) >= 500,
        "{cut}"
    );
    assert_eq!(log.lock().unwrap().len(), forwarded, "not forwarded whole");

    let refused = run("evil.example.com", b"{}", &[]);
    assert_eq!(refused["inner_status"], 403, "{refused}");
    assert_eq!(log.lock().unwrap().len(), forwarded, "not forwarded");
    drop(server);
}
