//! Replays the fuzz corpus and every kept crash through the fuzz targets' bodies, so a
//! plain `cargo test` checks that no input libFuzzer found (or was seeded with) panics.
//!
//! `fuzz/corpus/<target>/` is the minimized corpus, `fuzz/regressions/<target>/` the
//! inputs that once crashed. `cargo test --test fuzz_corpus -- --ignored` rewrites the
//! generated seeds (`seed-*` files); docs/fuzzing.md says how to run the fuzzers.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use hpke_gateway::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// How long one input may take in this (unoptimized) build: libFuzzer reports an input
/// over its `-timeout` as a crash, and so does this test.
const PER_INPUT: Duration = Duration::from_secs(30);

/// Runs every corpus and regression input of `name` through `target`.
fn replay(name: &str, target: fn(&[u8])) {
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
    let regressions = files(&fuzz_dir().join("regressions").join(name));
    for file in corpus.iter().chain(&regressions) {
        let data = std::fs::read(file).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| target(&data));
            let _ = tx.send(outcome.is_ok());
        });
        match rx.recv_timeout(PER_INPUT) {
            Ok(true) => {}
            Ok(false) => panic!("{name} panicked on {}", file.display()),
            Err(_) => panic!("{name} took over {PER_INPUT:?} on {}", file.display()),
        }
    }
}

/// One test per target, named after it: `cargo test --test fuzz_corpus intake_pgp`.
macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), fuzzing::$name);
            }
        )*
    };
}

replay_tests!(
    envelope_open,
    ohttp_request,
    ohttp_chunked,
    classify,
    upstream_uri,
    key_files,
    config_file,
    intake_manifest,
    intake_records,
    intake_pgp,
    intake_pull_settings,
);

// === generated seeds ===

fn write_seed(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/interop")
            .join(name),
    )
    .unwrap()
}

fn with_mode(mode: u8, data: &[u8]) -> Vec<u8> {
    [&[mode][..], data].concat()
}

/// Seeds made from the test fixtures and from keys the fuzz targets know.
#[test]
#[ignore = "rewrites fuzz/corpus/*/seed-*"]
fn write_seeds() {
    envelope_seeds();
    ohttp_seeds();
    ohttp_chunked_seeds();
    classify_seeds();
    upstream_seeds();
    key_seeds();
    config_seeds();
    intake_seeds();
    pgp_seeds();
    pull_seeds();
}

fn ohttp_seeds() {
    use hpke_gateway::envelope::{Suite, ohttp};
    let [x25519, xwing] = fuzzing::ohttp_keys();
    let inner = b"\x00\x03GET\x05https\x0bexample.com\x01/";
    for (name, key, suite) in [
        ("x25519-aes128", x25519, Suite::X25519_AES_128_GCM),
        ("x25519-chacha", x25519, Suite::X25519_CHACHA20_POLY1305),
        ("xwing-aes256", xwing, Suite::XWING_AES_256_GCM),
    ] {
        let (request, _) = ohttp::seal_request(1, &key.public_key(), suite, inner).unwrap();
        write_seed("ohttp_request", name, &with_mode(0, &request));
    }
    write_seed("ohttp_request", "roundtrip-x25519", &with_mode(0x13, inner));
    write_seed("ohttp_request", "roundtrip-xwing", &with_mode(0x0d, inner));
    write_seed(
        "ohttp_request",
        "short",
        &with_mode(0, &[1, 0, 0x20, 0, 1, 0, 1]),
    );
}

/// Inner requests in both framings (with trailers and padding), and an outer chunk
/// stream: non-final chunks, the zero length, the final chunk.
fn ohttp_chunked_seeds() {
    let mut m = bhttp::Message::request(
        b"POST".to_vec(),
        b"https".to_vec(),
        b"api.example.com".to_vec(),
        b"/1/upload".to_vec(),
    );
    m.put_header("content-type", "application/json");
    m.write_content(b"{\"d\":[]}");
    m.put_trailer("x-t", "1");
    for (name, mode) in [
        ("known", bhttp::Mode::KnownLength),
        ("indeterminate", bhttp::Mode::IndeterminateLength),
    ] {
        let mut inner = Vec::new();
        m.write_bhttp(mode, &mut inner).unwrap();
        inner.extend([0, 0]);
        write_seed("ohttp_chunked", name, &with_mode(3, &inner));
    }
    let (start, mut client) = hpke_gateway::envelope::ohttp::chunked::seal_request_header(
        1,
        &fuzzing::ohttp_keys()[0].public_key(),
        hpke_gateway::envelope::Suite::X25519_AES_128_GCM,
    )
    .unwrap();
    let mut stream = client.seal_chunk(b"one", false).unwrap();
    stream.extend(client.seal_chunk(b"two", true).unwrap());
    let _ = start;
    write_seed("ohttp_chunked", "chunks", &with_mode(7, &stream));
}

fn pull_seeds() {
    let seeds: [(&str, &str); 4] = [
        (
            "key-every",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOdRSLADXhqS++MVIuGECAMxGmwYyl3qDusVy4InQiH/ test\nevery 5m",
        ),
        (
            "known-hosts-cron",
            "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC47E4Bte+TRzmQfJ++QrF63Bf462eyOVsEOsxQopzNJ\n30 2 * * 1-5",
        ),
        (
            "fingerprint-bad-cron",
            "SHA256:7pQWpo0+bQwHrOLWUb+ctGVXPM0MvzOesWempQmJF08\n0 0 30 2 *",
        ),
        ("garbage", "SHA256:short\nevery 0s"),
    ];
    for (name, text) in seeds {
        write_seed("intake_pull_settings", name, text.as_bytes());
    }
}

fn envelope_seeds() {
    use hpke_gateway::envelope::{Prefix, seal};
    let [a, b] = fuzzing::envelope_keys();
    let plaintext = fixture("plaintext.json");
    let tink = Prefix::Tink(fuzzing::ENVELOPE_TINK_ID);
    for (ring, key, prefix, name) in [
        (0, &a, tink, "ring0-tink"),
        (0, &a, Prefix::Raw, "ring0-raw"),
        (1, &b, Prefix::Tink(42), "ring1-tink-any-id"),
        (1, &b, Prefix::Raw, "ring1-raw"),
        (2, &a, tink, "ring2-tink"),
        (2, &b, Prefix::Raw, "ring2-raw-second-key"),
        (3, &a, tink, "ring3-retired"),
    ] {
        let sealed = seal(
            &key.public_key(),
            prefix,
            fuzzing::ENVELOPE_INFO,
            &plaintext,
        )
        .unwrap();
        write_seed("envelope_open", name, &with_mode(ring, &sealed));
    }
    let empty = seal(&a.public_key(), Prefix::Raw, fuzzing::ENVELOPE_INFO, b"").unwrap();
    write_seed("envelope_open", "ring0-raw-empty", &with_mode(0, &empty));
    for f in ["tink-raw-ciphertext.bin", "tink-tink-ciphertext.bin"] {
        write_seed("envelope_open", f, &with_mode(2, &fixture(f)));
    }
    write_seed("envelope_open", "roundtrip-raw", &with_mode(4, &plaintext));
    write_seed(
        "envelope_open",
        "roundtrip-tink",
        &with_mode(12, &plaintext),
    );
    write_seed(
        "envelope_open",
        "roundtrip-any-id",
        &with_mode(13, &plaintext),
    );
    // The other suites' rings (mode bit 4): X-Wing, X-Wing beside X25519, id-less
    // X-Wing, ChaCha20-Poly1305 beside AES-128-GCM.
    let [x, c, g] = fuzzing::envelope_suite_keys();
    for (ring, key, prefix, name) in [
        (16, &x, tink, "xwing-tink"),
        (16, &x, Prefix::Raw, "xwing-raw"),
        (17, &x, Prefix::Raw, "xwing-beside-x25519-raw"),
        (17, &a, Prefix::Tink(7), "x25519-beside-xwing-tink"),
        (17, &a, Prefix::Raw, "x25519-beside-xwing-raw"),
        (18, &x, Prefix::Tink(9), "xwing-any-id"),
        (19, &c, tink, "chacha-tink"),
        (19, &g, Prefix::Raw, "aes128-raw"),
    ] {
        let sealed = seal(
            &key.public_key(),
            prefix,
            fuzzing::ENVELOPE_INFO,
            &plaintext,
        )
        .unwrap();
        write_seed("envelope_open", name, &with_mode(ring, &sealed));
    }
    for (mode, name) in [
        (20, "roundtrip-xwing-raw"),
        (28, "roundtrip-xwing-tink"),
        (29, "roundtrip-xwing-beside-x25519"),
        (31, "roundtrip-chacha-tink"),
    ] {
        write_seed("envelope_open", name, &with_mode(mode, &plaintext));
    }
}

fn classify_seeds() {
    let sealed = fixture("tink-tink-ciphertext.bin");
    let json = fixture("plaintext.json");
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    let head = "content-type: application/octet-stream+hpke\naccept: application/json, application/octet-stream+hpke;q=0.5\nx-clevertap-account-id: acct-1\n\n";
    seeds.push((
        "encrypted",
        [b"\x07\x80", head.as_bytes(), &sealed].concat(),
    ));
    let head =
        "content-type: application/json; charset=utf-8\nx-clevertap-account-id:  acct-1 \n\n";
    seeds.push((
        "json-undeclared-envelope",
        [b"\x00\x40", head.as_bytes(), &sealed].concat(),
    ));
    seeds.push(("json-text", [b"\x03\x10", head.as_bytes(), &json].concat()));
    let head = "content-type: text/plain\ncontent-encoding: gzip\naccept: application/octet-stream+HPKE;q=0\nx-clevertap-account-id: a\nx-clevertap-account-id: b\n\n";
    seeds.push((
        "gzip-two-ids",
        [b"\x01\x00", head.as_bytes(), &json].concat(),
    ));
    seeds.push((
        "no-headers",
        [b"\x40\xff\n\n".as_slice(), "caf\u{e9} \u{1f600}".as_bytes()].concat(),
    ));
    for (name, data) in seeds {
        write_seed("classify", name, &data);
    }
}

fn upstream_seeds() {
    let hops = "connection: keep-alive, x-secret-hop\nx-secret-hop: 1\nkeep-alive: timeout=5\nte: trailers\ntransfer-encoding: chunked\nproxy-authorization: Basic x\nx-clevertap-passcode: p\n";
    for (name, base, target) in [
        (
            "base-path",
            "http://127.0.0.1:9/api/",
            "/1/events.json?cursor=a%2Fb",
        ),
        ("root", "http://127.0.0.1:9", "/1/upload"),
        ("https-query", "https://api.example.com/v1", "/1/x?a=b%20c"),
        (
            "absolute-form",
            "http://127.0.0.1:9/api",
            "http://evil.example/x?y",
        ),
        ("asterisk", "http://[::1]:8080/", "*"),
        (
            "dot-segments",
            "http://127.0.0.1:9/api/",
            "/1/../../admin/./x",
        ),
    ] {
        write_seed(
            "upstream_uri",
            name,
            format!("{base}\n{target}\n{hops}").as_bytes(),
        );
    }
}

fn key_seeds() {
    for (mode, f) in [
        (0, "openssl-x25519.pem"),
        (0, "openssl-ed25519.pem"),
        (1, "openssl-x25519-encrypted.pem"),
        (0, "openssl-x25519-encrypted.pem"),
        (1, "openssl-x25519-encrypted-scrypt.pem"),
        (0, "openssl-x25519.pub.pem"),
        (0, "openssl-x25519.pub.b64"),
        (0, "tink-raw-private.json"),
        (0, "tink-tink-private.json"),
        (0, "tink-raw-public.json"),
        (0, "tink-tink-public.json"),
        (0, "tink-aes128-public.json"),
    ] {
        write_seed(
            "key_files",
            &format!("{mode}-{f}"),
            &with_mode(mode, &fixture(f)),
        );
    }
    // The other suites' key files, as the gateway writes them: X-Wing PKCS#8 and SPKI
    // PEM (the draft's OID), raw base64, and Tink keysets naming each suite.
    use hpke_gateway::envelope::Prefix;
    use hpke_gateway::keys;
    let [x, c, g] = fuzzing::envelope_suite_keys();
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "xwing.pem".into(),
            keys::private_key_pem(&x).unwrap().as_bytes().to_vec(),
        ),
        (
            "xwing.pub.pem".into(),
            keys::public_key_pem(&x.public_key()).unwrap().into_bytes(),
        ),
        (
            "xwing.pub.b64".into(),
            keys::public_key_raw_base64(&x.public_key()).into_bytes(),
        ),
    ];
    for (name, key) in [("xwing", &x), ("chacha", &c), ("aes128", &g)] {
        files.push((
            format!("{name}-tink-private.json"),
            keys::private_keyset_json(key, Prefix::Tink(5), 0)
                .as_bytes()
                .to_vec(),
        ));
        files.push((
            format!("{name}-raw-public.json"),
            keys::public_keyset_json(&key.public_key(), Prefix::Raw, 6).into_bytes(),
        ));
    }
    for (name, bytes) in files {
        write_seed("key_files", &format!("0-{name}"), &with_mode(0, &bytes));
    }
}

fn config_seeds() {
    let full = r#"listen = "127.0.0.1:8080"
upstream = "http://127.0.0.1:9000/api"
account_header = "X-CleverTap-Account-Id"
max_encrypted_body_bytes = 1048576
upstream_timeout_ms = 5000
plaintext_content_type = "application/json"
admin_listen = "127.0.0.1:9090"
metrics_account_labels = true

[[server_keys]]
id = 1
private_key = "keys/server.pem"
passphrase_file = "keys/server.pass"
state = "decrypt-only"
not_after = "2027-01-01T00:00:00Z"

[[server_keys]]
id = 2
private_key = "keys/server-2.json"

[[accounts]]
id = "acct-1"
encryption = true
public_keys = ["keys/acct-1.pub.json"]

[[accounts]]
id = "acct-2"
"#;
    write_seed("config_file", "full", full.as_bytes());
    let minimal = "listen = \"0.0.0.0:8443\"\nupstream = \"https://api.example.com\"\n[tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n[upstream_tls]\nca_bundle = \"ca.pem\"\n";
    write_seed("config_file", "tls", minimal.as_bytes());
    let intake = r#"listen = "127.0.0.1:8080"
upstream = "http://127.0.0.1:9000"

[intake]
state_dir = "state"
poll_ms = 500
settle_ms = 1000
max_expansion_ratio = 50
batch_size = 100
upload_path = "/1/upload"
"#;
    write_seed("config_file", "intake", intake.as_bytes());
}

fn intake_seeds() {
    let manifest = r#"{
  "fileName": "parastest31.csv.asc",
  "type": "event",
  "columns": {
    "event_name": { "ctName": "evtName", "dataType": "String" },
    "time_stamp": {"ctName": "ts", "dataType": "Integer"},
    "item_price": {"dataType": "Float"},
    "vip": {"dataType": "Boolean"}
  },
  "clientEmail": "user@example.com",
  "keyId": "ec491319-9823-48cd-b6a1-6bb0bc666d75"// Mention the KeyID here
}"#;
    write_seed("intake_manifest", "json", manifest.as_bytes());
    let yaml = "fileName: users.csv.pgp\ntype: profile\ncolumns:\n  email:\n    ctName: identity\n    dataType: String\n  age:\n    dataType: int\nclientEmail: a@b.example\nkeyId: k1\n";
    write_seed("intake_manifest", "yaml", yaml.as_bytes());
    let bad = r#"{"fileName": "../etc/passwd", "type": "events", "columns": {"a": {"dataType": "Decimal"}, "b": {"ctName": "identity"}}, "clientEmail": "nope", "extra": 1}"#;
    write_seed("intake_manifest", "bad", bad.as_bytes());

    let csv = "\u{feff}email,name,price,ratio,vip\na@b.example,Charged,10,1.5,true\n\"q,uoted\",x,notanumber,2,no\nshort,row\n,,,,\nc@d.example,\"multi\nline\",3,-0.5,0\n";
    write_seed(
        "intake_records",
        "csv-profile",
        &with_mode(2, csv.as_bytes()),
    );
    write_seed("intake_records", "csv-event", &with_mode(0, csv.as_bytes()));
    let array = r#"[{"email":"a@b.example","name":"Charged","price":10,"ratio":1.5,"vip":"yes"},{"email":"x","price":"12"},[1],{"price":1e400}]"#;
    write_seed(
        "intake_records",
        "json-array",
        &with_mode(1, array.as_bytes()),
    );
    let lines = "{\"email\":\"a@b.example\",\"price\":10,\"vip\":true}\n\nnot json\n{\"email\":\"b\",\"ratio\":\"2.5\",\"vip\":1}\n";
    write_seed(
        "intake_records",
        "json-lines",
        &with_mode(3, lines.as_bytes()),
    );
}

fn pgp_seeds() {
    use pgp::composed::{ArmorOptions, Deserializable as _, MessageBuilder, SignedSecretKey};
    use pgp::crypto::aead::{AeadAlgorithm, ChunkSize};
    use pgp::crypto::sym::SymmetricKeyAlgorithm;
    use pgp::types::{CompressionAlgorithm, KeyDetails as _};
    use rand::SeedableRng as _;

    let (key, _) =
        SignedSecretKey::from_armor_single(fuzzing::pgp_secret_key_armored().as_bytes()).unwrap();
    let public = key.to_public_key();
    let subkey = public
        .public_subkeys
        .iter()
        .find(|k| k.key.algorithm().can_encrypt())
        .unwrap();
    let csv = "email,name,price\na@b.example,Charged,10\n".repeat(20);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let compressions = [
        ("plain", None),
        ("zip", Some(CompressionAlgorithm::ZIP)),
        ("zlib", Some(CompressionAlgorithm::ZLIB)),
        ("bzip2", Some(CompressionAlgorithm::BZip2)),
    ];
    for (name, compression) in compressions {
        let mut builder = MessageBuilder::from_bytes("data.csv", csv.clone().into_bytes());
        if let Some(c) = compression {
            builder.compression(c);
        }
        let mut builder = builder.seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
        builder.encrypt_to_key(&mut rng, &subkey.key).unwrap();
        write_seed(
            "intake_pgp",
            &format!("seipdv1-{name}"),
            &builder.to_vec(&mut rng).unwrap(),
        );
    }
    let mut builder = MessageBuilder::from_bytes("data.csv", csv.clone().into_bytes()).seipd_v2(
        &mut rng,
        SymmetricKeyAlgorithm::AES128,
        AeadAlgorithm::Ocb,
        ChunkSize::C64B,
    );
    builder.encrypt_to_key(&mut rng, &subkey.key).unwrap();
    write_seed(
        "intake_pgp",
        "seipdv2-ocb",
        &builder.to_vec(&mut rng).unwrap(),
    );
    let mut builder = MessageBuilder::from_bytes("data.csv", csv.clone().into_bytes())
        .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES128);
    builder.encrypt_to_key(&mut rng, &subkey.key).unwrap();
    let armored = builder
        .to_armored_string(&mut rng, ArmorOptions::default())
        .unwrap();
    write_seed("intake_pgp", "seipdv1-armored", armored.as_bytes());
    let literal = MessageBuilder::from_bytes("data.csv", csv.clone().into_bytes())
        .to_vec(&mut rng)
        .unwrap();
    write_seed("intake_pgp", "literal-only", &literal);
    write_seed("intake_pgp", "plain-csv", csv.as_bytes());
}
