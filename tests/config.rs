//! Loading configuration files: every key format through the config, passphrases,
//! limits on accounts, and problems reported all at once.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use hpke_gateway::config::Config;
use hpke_gateway::envelope::{Prefix, PrivateKey};
use hpke_gateway::keys;

fn load(dir: &Path, text: &str) -> Result<Config, String> {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).map_err(|e| e.to_string())
}

fn base(extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:8080\"\nupstream = \"http://127.0.0.1:9000\"\n\n[[server_keys]]\nid = 1\nprivate_key = \"server-1.pem\"\n{extra}"
    )
}

fn with_server_key(dir: &Path) -> PrivateKey {
    let k = PrivateKey::generate();
    support::write_private(dir, "server-1.pem", &k);
    k
}

fn write_public(dir: &Path, name: &str) {
    std::fs::write(
        dir.join(name),
        keys::public_key_pem(&PrivateKey::generate().public_key()).unwrap(),
    )
    .unwrap();
}

#[test]
fn the_documented_example_loads_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let example = std::fs::read_to_string("deploy/gateway.example.toml").unwrap();
    // The example names these files; make them.
    support::write_private(
        &dir.path().join("keys"),
        "server-1.pem",
        &PrivateKey::generate(),
    );
    std::fs::write(
        dir.path().join("keys/acct-1.pub.json"),
        keys::public_keyset_json(&PrivateKey::generate().public_key(), Prefix::Tink(5), 0),
    )
    .unwrap();
    let config = load(dir.path(), &example).unwrap();
    assert_eq!(config.account_header.as_str(), "x-clevertap-account-id");
    assert_eq!(config.max_encrypted_body_bytes, 10_485_760);
    assert_eq!(config.upstream.to_string(), "http://127.0.0.1:9000/");
    let acct = config.accounts.get("ACCT-1").unwrap();
    assert!(acct.encryption_enabled());
    assert_eq!(acct.public_keys()[0].prefix, Prefix::Tink(5));
}

#[test]
fn at_most_twenty_public_keys_per_account() {
    let dir = tempfile::tempdir().unwrap();
    with_server_key(dir.path());
    let mut names = Vec::new();
    for i in 0..21 {
        let name = format!("k{i}.pem");
        write_public(dir.path(), &name);
        names.push(format!("\"{name}\""));
    }
    let twenty = base(&format!(
        "[[accounts]]\nid = \"A\"\nencryption = true\npublic_keys = [{}]\n",
        names[..20].join(", ")
    ));
    let config = load(dir.path(), &twenty).unwrap();
    assert_eq!(config.accounts.get("A").unwrap().public_keys().len(), 20);
    let twenty_one = base(&format!(
        "[[accounts]]\nid = \"A\"\nencryption = true\npublic_keys = [{}]\n",
        names.join(", ")
    ));
    let err = load(dir.path(), &twenty_one).unwrap_err();
    assert!(err.contains("21 public keys, at most 20"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    with_server_key(dir.path());
    write_public(dir.path(), "a.pem");
    // A Tink keyset of a key type the gateway does not read.
    std::fs::write(
        dir.path().join("p256.json"),
        include_str!("fixtures/interop/tink-aes128-public.json")
            .replace("HpkePublicKey", "EciesAeadHkdfPublicKey"),
    )
    .unwrap();
    let text = base(
        "[[server_keys]]\nid = 1\nprivate_key = \"missing.pem\"\n\
         [[accounts]]\nid = \"A\"\nencryption = true\n\
         [[accounts]]\nid = \"B\"\nencryption = true\npublic_keys = [\"a.pem\", \"nope.pem\", \"p256.json\"]\n\
         [[accounts]]\nid = \"B\"\n\
         [[accounts]]\nid = \"has space\"\n",
    );
    let err = load(dir.path(), &text).unwrap_err();
    for needle in [
        "id 1 appears twice",
        "missing.pem",
        "\"A\": encryption is on but no public_keys",
        "nope.pem",
        "EciesAeadHkdfPublicKey",
        "id \"B\" appears twice",
        "\"has space\" must be",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    with_server_key(dir.path());
    let err = load(dir.path(), &base("tls = true\n")).unwrap_err();
    assert!(err.contains("tls"), "{err}");
    let err = load(
        dir.path(),
        &base("").replace("http://127.0.0.1:9000", "ftp://x"),
    )
    .unwrap_err();
    assert!(err.contains("must be an http:// or https:// URL"), "{err}");
    let err = load(
        dir.path(),
        &base("max_encrypted_body_bytes = 0\n").replacen(
            "[[server_keys]]",
            "max_encrypted_body_bytes = 0\n[[server_keys]]",
            1,
        ),
    )
    .unwrap_err();
    assert!(err.contains("max_encrypted_body_bytes"), "{err}");
}

#[test]
fn private_keys_must_be_owner_only() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    with_server_key(dir.path());
    let key = dir.path().join("server-1.pem");
    let set = |mode| std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    let refused = |why: &str| {
        let err = load(dir.path(), &base("")).unwrap_err();
        assert!(
            err.contains("server-1.pem is readable by group or others"),
            "{why}: {err}"
        );
    };
    for mode in [0o604, 0o644, 0o660, 0o606] {
        set(mode);
        refused(&format!("mode {mode:o}"));
    }
    set(0o400);
    assert!(load(dir.path(), &base("")).is_ok());
    // Group-readable is accepted only when root owns the file (a Kubernetes Secret
    // volume with fsGroup: 0440 root:<group>), as PostgreSQL accepts for its keys.
    set(0o440);
    if std::fs::metadata(&key).unwrap().uid() == 0 {
        assert!(load(dir.path(), &base("")).is_ok(), "0440 owned by root");
        // Owned by someone else, the same mode is refused.
        std::os::unix::fs::chown(&key, Some(65_534), None).unwrap();
        refused("0440 owned by uid 65534");
    } else {
        refused("0440 owned by a non-root user");
    }
}

fn openssl_encrypt(dir: &Path, key: &PrivateKey, pass: &str) {
    let plain = support::write_private(dir, "plain.pem", key);
    let out = dir.join("server-1.pem");
    let _ = std::fs::remove_file(&out);
    support::openssl_encrypt_pkcs8(&plain, &out, pass);
    std::fs::remove_file(plain).unwrap();
}

#[test]
#[ignore = "needs the openssl command: run bash .ci/test"]
fn encrypted_private_key_with_passphrase_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate();
    openssl_encrypt(dir.path(), &key, "open sesame");

    let err = load(dir.path(), &base("")).unwrap_err();
    assert!(
        err.contains("encrypted; configure passphrase_env or passphrase_file"),
        "{err}"
    );

    let pass_file = dir.path().join("pass.txt");
    keys::write_secret_file(&pass_file, b"open sesame\n").unwrap();
    let text = base("passphrase_file = \"pass.txt\"\n");
    let config = load(dir.path(), &text).unwrap();
    let loaded = config.server_keys.iter().next().unwrap().public_key();
    assert_eq!(loaded, key.public_key());

    std::fs::set_permissions(&pass_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load(dir.path(), &base("passphrase_file = \"pass.txt\"\n")).unwrap_err();
    assert!(
        err.contains("pass.txt is readable by group or others"),
        "{err}"
    );
}

#[test]
fn tink_private_keyset_as_server_key_must_match_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let keyset = include_bytes!("fixtures/interop/tink-tink-private.json");
    let (_, id) = match keys::parse_private_key(keyset, None).unwrap().tink_prefix {
        Some(Prefix::Tink(id)) => ((), id),
        other => panic!("fixture is a TINK keyset, got {other:?}"),
    };
    keys::write_secret_file(&dir.path().join("tink.json"), keyset).unwrap();
    let text = format!(
        "listen = \"127.0.0.1:8080\"\nupstream = \"http://127.0.0.1:9000\"\n[[server_keys]]\nid = {id}\nprivate_key = \"tink.json\"\n"
    );
    assert!(load(dir.path(), &text).is_ok());
    let wrong = text.replace(
        &format!("id = {id}"),
        &format!("id = {}", id.wrapping_add(1)),
    );
    let err = load(dir.path(), &wrong).unwrap_err();
    assert!(err.contains(&format!("key id is {id}")), "{err}");
}

#[test]
fn timeouts_are_bounded_to_a_day() {
    let dir = tempfile::tempdir().unwrap();
    with_server_key(dir.path());
    let top =
        |line: &str| base("").replacen("[[server_keys]]", &format!("{line}\n[[server_keys]]"), 1);
    for key in [
        "upstream_connect_timeout_ms",
        "upstream_timeout_ms",
        "request_body_timeout_ms",
        "header_timeout_ms",
        "shutdown_grace_ms",
    ] {
        let err = load(dir.path(), &top(&format!("{key} = 86400001"))).unwrap_err();
        assert!(
            err.contains(key) && err.contains("at most 86400000"),
            "{err}"
        );
        load(dir.path(), &top(&format!("{key} = 86400000"))).unwrap();
    }
}

/// Three misspelled keys (top level, in a server key, in an account) and a bad value
/// are all reported in one run, each with its line and the name it was probably meant
/// to be.
#[test]
fn every_misspelled_key_and_every_semantic_problem_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    with_server_key(dir.path());
    let text = format!(
        "upstrem_timeout_ms = 5\n{}passphrase_fil = \"p\"\n[[accounts]]\nid = \"has space\"\nencrytion = true\n",
        base("")
    )
    .replace("http://127.0.0.1:9000", "ftp://x");
    let err = load(dir.path(), &text).unwrap_err();
    for needle in [
        "line 1: unknown key `upstrem_timeout_ms` (did you mean `upstream_timeout_ms`?)",
        "line 8: unknown key `passphrase_fil` (did you mean `passphrase_file`?)",
        "line 11: unknown key `encrytion` (did you mean `encryption`?)",
        "ftp://x",
        "\"has space\" must be",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
}

#[test]
fn admin_listener_defaults_to_9181_clear_of_prometheus() {
    // Prometheus itself listens on 9090: a gateway on the same host must not take it.
    let dir = tempfile::tempdir().unwrap();
    with_server_key(dir.path());
    let config = load(dir.path(), &base("")).unwrap();
    assert_eq!(
        config.ops.admin_listen,
        Some("127.0.0.1:9181".parse().unwrap())
    );
    assert_eq!(hpke_gateway::config::DEFAULT_ADMIN_LISTEN, "127.0.0.1:9181");
}

/// The example configuration in deploy/ names every key of every table the gateway
/// reads (as a setting or a commented-out one). The valid keys come from the loader
/// itself: an unknown key makes it list the names valid in that table.
#[test]
fn the_example_config_documents_every_key() {
    let example = include_str!("../deploy/gateway.example.toml");
    let dir = tempfile::tempdir().unwrap();
    with_server_key(dir.path());
    let tables = [
        "",
        "[tls]\n",
        "[upstream_tls]\n",
        "[ohttp]\n",
        "[replay]\n",
        "[[server_keys]]\n",
        "[[accounts]]\n",
        "[intake]\n",
        "[intake.smtp]\n",
        "[[intake.accounts]]\n",
        "[[intake.accounts]]\n[[intake.accounts.keys]]\n",
        "[[intake.accounts]]\n[intake.accounts.pull]\n",
    ];
    let mut missing = Vec::new();
    for table in tables {
        let text = format!("{}\n{table}zzzzzzzz = 1\n", base("")).replacen(
            "listen =",
            "zzzzzzzz = 1\nlisten =",
            usize::from(table.is_empty()),
        );
        let err = load(dir.path(), &text).unwrap_err();
        let valid = err
            .split("(valid here: ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or_else(|| panic!("{table:?}: no list of valid keys in:\n{err}"));
        for key in valid.split(", ") {
            let named = example.lines().any(|line| {
                let line = line.trim_start_matches('#').trim_start();
                line.starts_with(&format!("{key} ="))
                    || line.starts_with(&format!("[{key}]"))
                    || line.starts_with(&format!("[[{key}]]"))
                    || line.contains(&format!(".{key}]"))
            });
            if !named {
                missing.push(format!("{table}{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "deploy/gateway.example.toml lacks: {missing:?}"
    );
}

/// `[[server_keys]] suite` (default `x25519-aes-256-gcm`) and `[[accounts]]
/// public_key_suite`: a key file must agree with the suite declared for it, a Tink
/// keyset naming another suite is refused, an unknown name is refused with the known
/// ones, and keys of different suites load side by side.
#[test]
fn key_suites_are_declared_and_must_agree_with_the_files() {
    use hpke_gateway::envelope::Suite;
    let dir = tempfile::tempdir().unwrap();
    with_server_key(dir.path());
    let pq = PrivateKey::generate_for(Suite::XWING_AES_256_GCM);
    support::write_private(dir.path(), "pq.pem", &pq);
    let chacha = PrivateKey::generate_for(Suite::X25519_CHACHA20_POLY1305);
    keys::write_secret_file(
        &dir.path().join("chacha.json"),
        keys::private_keyset_json(&chacha, Prefix::Tink(4), 0).as_bytes(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cust-pq.b64"),
        keys::public_key_raw_base64(
            &PrivateKey::generate_for(Suite::XWING_AES_256_GCM).public_key(),
        ),
    )
    .unwrap();
    let pq_key =
        |suite: &str| format!("[[server_keys]]\nid = 3\nprivate_key = \"pq.pem\"\n{suite}");
    // Side by side: X25519 default, X-Wing declared, a ChaCha20 Tink keyset declared.
    let config = load(
        dir.path(),
        &base(&format!(
            "{}\n[[server_keys]]\nid = 4\nprivate_key = \"chacha.json\"\nsuite = \"x25519-chacha20-poly1305\"\n\
             [[accounts]]\nid = \"PQ\"\nencryption = true\npublic_keys = [\"cust-pq.b64\"]\npublic_key_suite = \"xwing-aes-256-gcm\"\n",
            pq_key("suite = \"xwing-aes-256-gcm\"")
        )),
    )
    .unwrap();
    drop(config);
    // The X-Wing PEM under the default suite; the Tink keyset without its suite declared.
    let err = load(dir.path(), &base(&pq_key(""))).unwrap_err();
    assert!(
        err.contains("pq.pem") && err.contains("xwing") && err.contains("x25519-aes-256-gcm"),
        "{err}"
    );
    let err = load(
        dir.path(),
        &base("[[server_keys]]\nid = 4\nprivate_key = \"chacha.json\"\n"),
    )
    .unwrap_err();
    assert!(err.contains("x25519-chacha20-poly1305"), "{err}");
    let err = load(dir.path(), &base(&pq_key("suite = \"kyber\""))).unwrap_err();
    assert!(
        err.contains("unknown suite \"kyber\"") && err.contains("xwing-aes-256-gcm"),
        "{err}"
    );
    // A customer's X-Wing raw key declared as X25519.
    let err = load(
        dir.path(),
        &base("[[accounts]]\nid = \"PQ\"\nencryption = true\npublic_keys = [\"cust-pq.b64\"]\npublic_key_suite = \"x25519-aes-128-gcm\"\n"),
    )
    .unwrap_err();
    assert!(
        err.contains("cust-pq.b64") && err.contains("x25519-aes-128-gcm"),
        "{err}"
    );
    // request_suites naming a suite no server key has: no request could use it.
    let err = load(
        dir.path(),
        &base("[[accounts]]\nid = \"PQ\"\nencryption = true\npublic_keys = [\"cust-pq.b64\"]\npublic_key_suite = \"xwing-aes-256-gcm\"\nrequest_suites = [\"xwing-aes-256-gcm\"]\n"),
    )
    .unwrap_err();
    assert!(
        err.contains("request_suites names xwing-aes-256-gcm")
            && err.contains("no live [[server_keys]] entry has that suite"),
        "{err}"
    );
}

/// A RAW envelope is tried against each live key of its KEM: more than eight of one
/// KEM are refused, so that bound is a property of every accepted configuration.
#[test]
fn at_most_eight_live_server_keys_of_one_kem() {
    let dir = tempfile::tempdir().unwrap();
    with_server_key(dir.path());
    for id in 2..10 {
        support::write_private(dir.path(), &format!("k{id}.pem"), &PrivateKey::generate());
    }
    let extra = |n: u32, state: &str| -> String {
        (2..2 + n)
            .map(|id| format!("[[server_keys]]\nid = {id}\nprivate_key = \"k{id}.pem\"\n{state}"))
            .collect()
    };
    drop(load(dir.path(), &base(&extra(7, ""))).unwrap());
    let err = load(dir.path(), &base(&extra(8, ""))).unwrap_err();
    assert!(
        err.contains("9 keys of KEM") && err.contains("at most 8"),
        "{err}"
    );
    // Retired keys are records, and keys past their not_after are never tried again:
    // neither counts (so `keys rotate`, which retires nothing, keeps working).
    drop(load(dir.path(), &base(&extra(8, "state = \"retired\"\n"))).unwrap());
    drop(
        load(
            dir.path(),
            &base(&extra(8, "not_after = \"2020-01-01T00:00:00Z\"\n")),
        )
        .unwrap(),
    );
}

#[test]
fn ohttp_key_ids_are_unique_among_live_keys_and_the_path_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    with_server_key(dir.path());
    support::write_private(dir.path(), "server-2.pem", &PrivateKey::generate());
    // Tink ids 1 and 257 share the default OHTTP key id 1.
    let clash = base("[[server_keys]]\nid = 257\nprivate_key = \"server-2.pem\"\n");
    let err = load(dir.path(), &clash).unwrap_err();
    assert!(
        err.contains("ids 1 and 257 have the same ohttp_key_id 1"),
        "{err}"
    );
    // Set apart, or one retired: accepted.
    let apart =
        base("[[server_keys]]\nid = 257\nprivate_key = \"server-2.pem\"\nohttp_key_id = 9\n");
    let config = load(dir.path(), &apart).unwrap();
    let now = std::time::SystemTime::now();
    assert_eq!(
        config.server_keys.by_ohttp_key_id(9, now).unwrap().id(),
        Some(257)
    );
    assert_eq!(
        config.server_keys.by_ohttp_key_id(1, now).unwrap().id(),
        Some(1)
    );
    let retired =
        base("[[server_keys]]\nid = 257\nprivate_key = \"server-2.pem\"\nstate = \"retired\"\n");
    load(dir.path(), &retired).unwrap();
    // Beyond eight bits: refused by the parser.
    let wide =
        base("[[server_keys]]\nid = 2\nprivate_key = \"server-2.pem\"\nohttp_key_id = 256\n");
    assert!(load(dir.path(), &wide).is_err());

    // [ohttp]: off by default, a default path when on, a bad or taken path refused.
    assert!(load(dir.path(), &base("")).unwrap().ohttp.is_none());
    let on = load(dir.path(), &base("[ohttp]\nenabled = true\n")).unwrap();
    assert_eq!(on.ohttp.unwrap().path, "/.well-known/ohttp-gateway");
    for (path, needle) in [
        ("relative", "is not an absolute path"),
        ("/a?b", "is not an absolute path"),
        ("/.well-known/ohttp-keys", "is already the gateway's"),
        ("/.well-known/hpke-keys", "is already the gateway's"),
    ] {
        let text = base(&format!("[ohttp]\nenabled = true\npath = \"{path}\"\n"));
        let err = load(dir.path(), &text).unwrap_err();
        assert!(err.contains(needle), "{path}: {err}");
    }
}
