//! Fuzz target bodies for the intake's parsers: not an API. The gateway's
//! `fuzzing` module re-exports them; `fuzz/` and `tests/fuzz_corpus.rs` call them
//! there (see the gateway's `docs/fuzzing.md`).

// Here a failed `expect` is a finding, as a failed `assert!` is: both panic on purpose.
#![allow(clippy::expect_used)]

use std::io::{BufRead, Cursor};
use std::sync::OnceLock;

use crate::ingest::{self, Item};
use crate::manifest::{self, Manifest};
use crate::pgp::{self, PgpKey};

// === intake_manifest ===

/// The intake manifest, JSON or YAML. A manifest that parses names a plain file name.
pub fn intake_manifest(data: &[u8]) {
    if let Ok(m) = manifest::parse(data) {
        assert!(manifest::check_file_name(&m.file_name).is_ok());
        assert!(!m.columns.is_empty());
    }
}

// === intake_records ===

/// A manifest mapping a column of each data type, for records of `kind`.
fn records_manifest(kind: &str) -> Manifest {
    let text = format!(
        r#"{{"fileName":"f.csv.asc","type":"{kind}","clientEmail":"a@b.example","keyId":"k",
        "columns":{{"email":{{"ctName":"identity","dataType":"String"}},
        "name":{{"ctName":"evtName","dataType":"String"}},
        "price":{{"dataType":"Integer"}},"ratio":{{"dataType":"Float"}},
        "vip":{{"ctName":"VIP","dataType":"Boolean"}}}}}}"#
    );
    manifest::parse(text.as_bytes()).expect("the fuzzing manifest parses")
}

/// Intake CSV and JSON (array or lines) record conversion. The first byte picks CSV
/// or JSON (bit 0) and profile or event records (bit 1).
pub fn intake_records(data: &[u8]) {
    static MANIFESTS: OnceLock<[Manifest; 2]> = OnceLock::new();
    let manifests =
        MANIFESTS.get_or_init(|| [records_manifest("profile"), records_manifest("event")]);
    let Some((&mode, text)) = data.split_first() else {
        return;
    };
    let manifest = &manifests[usize::from(mode >> 1 & 1)];
    let reader: Box<dyn BufRead + Send> = Box::new(Cursor::new(text.to_vec()));
    let send = |item: Item| {
        if let Item::Good(record) = &item {
            assert!(record.is_object());
        }
        true
    };
    let _ = if mode & 1 == 0 {
        ingest::read_csv(ingest::line_limited(reader), manifest, send)
    } else {
        ingest::read_json(reader, manifest, send)
    };
}

// === intake_pgp ===

/// The intake key the PGP target decrypts with: Ed25519 primary, Cv25519 encryption
/// subkey, made from a fixed seed and time so that seeds encrypted to it stay valid.
/// No passphrase: unlocking (S2K) on every input would dominate the run time.
pub fn pgp_secret_key_armored() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        use ::pgp::composed::{
            ArmorOptions, EncryptionCaps, KeyType, SecretKeyParamsBuilder, SubkeyParamsBuilder,
        };
        use ::pgp::crypto::ecc_curve::ECCCurve;
        use ::pgp::types::Timestamp;
        use rand::SeedableRng as _;
        let created = Timestamp::from_secs(1_750_000_000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9180);
        let subkey = SubkeyParamsBuilder::default()
            .key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
            .can_encrypt(EncryptionCaps::All)
            .created_at(created)
            .build()
            .expect("subkey parameters");
        let params = SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .primary_user_id("Fuzz <fuzz@example.com>".into())
            .created_at(created)
            .subkeys(vec![subkey])
            .build()
            .expect("key parameters");
        params
            .generate(&mut rng)
            .expect("key generation")
            .to_armored_string(ArmorOptions::default())
            .expect("armor")
    })
}

/// The intake's OpenPGP decryption entry point (`pgp::decrypt_stream`) on any bytes,
/// with the key of [`pgp_secret_key_armored`], writing at most 1 MiB.
pub fn intake_pgp(data: &[u8]) {
    static KEY: OnceLock<PgpKey> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        PgpKey::load(
            "fuzz".into(),
            pgp_secret_key_armored().as_bytes(),
            zeroize::Zeroizing::new(Vec::new()),
            None,
        )
        .expect("the fuzzing key loads")
    });
    let limit = 1 << 20;
    let mut out = Vec::new();
    if let Ok(n) = pgp::decrypt_stream(&[key], data, &mut out, limit) {
        assert_eq!(n, out.len() as u64);
        assert!(n <= limit);
    }
}

// === intake_pull_settings ===

/// The pull settings a person writes: a pinned host key (first line) and a schedule
/// (the rest). A pin that parses is a key or a `SHA256:` fingerprint and describes
/// itself as a fingerprint; a schedule that parses always has a next run after now.
pub fn intake_pull_settings(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (pin, schedule) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(pin) = crate::pull::HostKeyPin::parse(pin) {
        assert!(pin.describe().starts_with("SHA256:"));
    }
    if let Ok(s) = crate::pull::Schedule::parse(schedule) {
        let now = std::time::SystemTime::now();
        assert!(s.next_after(now) > now, "{s}");
    }
    for name in [pin, schedule] {
        if crate::pull::plain_name(name) {
            assert!(!name.contains('/') && name != "." && name != "..");
        }
    }
}
