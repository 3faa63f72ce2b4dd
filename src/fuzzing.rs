//! Fuzz target bodies: not an API.
//!
//! One function per parser that sees outside bytes. `fuzz/fuzz_targets/<name>.rs`
//! calls `fuzzing::<name>` under libFuzzer and `tests/fuzz_corpus.rs` replays the
//! committed corpus and regressions through the same function in `cargo test`. Each
//! function takes any bytes and must never panic; the `assert!`s in it are properties
//! the code under test must keep, so a failing one is a finding, like a crash.
//!
//! How to run them, and what ran: `docs/fuzzing.md`.

// Here a failed `expect` is a finding, as a failed `assert!` is: both panic on purpose.
#![allow(clippy::expect_used)]

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use http_body_util::StreamBody;

use crate::envelope::{self, MIN_SEALED_LEN, Prefix, PrivateKey, TINK_PREFIX_LEN};
use crate::error::Error;
use crate::keys::{self, KeyState, ServerKey, ServerKeys};
use crate::limits::Admission;
use crate::middleware::body::{self, BudgetWait, Collect};
use crate::middleware::{classify, ingress};
use crate::proxy::Upstream;

// === envelope_open ===

/// The Tink key id of the fuzzing keyrings' prefixed key.
pub const ENVELOPE_TINK_ID: u32 = 0x0102_0304;
/// The `info` (account id) envelopes are opened with.
pub const ENVELOPE_INFO: &[u8] = b"acct-1";

/// The keys the envelope target opens with: `[0]` has the Tink id
/// [`ENVELOPE_TINK_ID`], `[1]` is a second key. Derived, so seeds sealed to them stay
/// valid.
pub fn envelope_keys() -> [PrivateKey; 2] {
    [
        PrivateKey::derive(b"hpke-gateway fuzz key 0"),
        PrivateKey::derive(b"hpke-gateway fuzz key 1"),
    ]
}

/// The keys of the other suites: `[0]` X-Wing, `[1]` X25519 with ChaCha20-Poly1305,
/// `[2]` X25519 with AES-128-GCM. Derived, as [`envelope_keys`].
pub fn envelope_suite_keys() -> [PrivateKey; 3] {
    use crate::envelope::Suite;
    [
        PrivateKey::derive_for(Suite::XWING_AES_256_GCM, b"hpke-gateway fuzz key 2"),
        PrivateKey::derive_for(Suite::X25519_CHACHA20_POLY1305, b"hpke-gateway fuzz key 3"),
        PrivateKey::derive_for(Suite::X25519_AES_128_GCM, b"hpke-gateway fuzz key 4"),
    ]
}

/// The key shapes a configuration can give, one keyring each.
fn keyrings() -> &'static [ServerKeys; 8] {
    static RINGS: OnceLock<[ServerKeys; 8]> = OnceLock::new();
    RINGS.get_or_init(|| {
        let ring =
            |f: &dyn Fn([PrivateKey; 2]) -> Vec<ServerKey>| ServerKeys::new(f(envelope_keys()));
        let suites = |f: &dyn Fn([PrivateKey; 2], [PrivateKey; 3]) -> Vec<ServerKey>| {
            ServerKeys::new(f(envelope_keys(), envelope_suite_keys()))
        };
        [
            // One key with a Tink id: TINK envelopes for it, and RAW envelopes.
            ring(&|[a, _]| vec![ServerKey::new(Some(ENVELOPE_TINK_ID), a)]),
            // One key with no id (the CLI's shape: any Tink prefix is tried with it).
            ring(&|[_, b]| vec![ServerKey::new(None, b)]),
            // Both: a prefixed primary, and a second key during a rotation.
            ring(&|[a, b]| {
                vec![
                    ServerKey::new(Some(ENVELOPE_TINK_ID), a),
                    ServerKey::new(Some(7), b).with_lifecycle(KeyState::DecryptOnly, None),
                ]
            }),
            // A retired key: must never open anything.
            ring(&|[a, _]| {
                vec![
                    ServerKey::new(Some(ENVELOPE_TINK_ID), a)
                        .with_lifecycle(KeyState::Retired, None),
                ]
            }),
            // An X-Wing key with a Tink id.
            suites(&|_, [x, _, _]| vec![ServerKey::new(Some(ENVELOPE_TINK_ID), x)]),
            // X-Wing primary beside an X25519 key (RAW tries both KEMs).
            suites(&|[a, _], [x, _, _]| {
                vec![
                    ServerKey::new(Some(ENVELOPE_TINK_ID), x),
                    ServerKey::new(Some(7), a).with_lifecycle(KeyState::DecryptOnly, None),
                ]
            }),
            // An id-less X-Wing key.
            suites(&|_, [x, _, _]| vec![ServerKey::new(None, x)]),
            // The other AEADs: ChaCha20-Poly1305 primary, AES-128-GCM beside it.
            suites(&|_, [_, c, g]| {
                vec![
                    ServerKey::new(Some(ENVELOPE_TINK_ID), c),
                    ServerKey::new(Some(7), g).with_lifecycle(KeyState::DecryptOnly, None),
                ]
            }),
        ]
    })
}

/// The request envelope: the Tink prefix split and `ServerKeys::open` for every key
/// shape. The first byte picks the mode:
///
/// - bits 0-1, and bit 4: the keyring (Tink-id key, id-less key, both, retired; with
///   bit 4: an X-Wing key, X-Wing beside X25519, an id-less X-Wing key, ChaCha20-Poly1305
///   beside AES-128-GCM);
/// - bit 2 clear: the rest is a ciphertext, opened as a request body is;
/// - bit 2 set: the rest is a plaintext, sealed to the ring's first key (TINK or RAW
///   by bit 3) and opened back, then opened again with one byte flipped (the byte at
///   the position the second byte names): the first must give the plaintext back, the
///   second must fail.
pub fn envelope_open(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let rings = keyrings();
    let index = usize::from(mode & 3 | (mode >> 2) & 4);
    let ring = &rings[index];
    let retired = index == 3;
    check_split_prefix(rest);
    if mode & 4 == 0 {
        let opened = ring.open_with_suite(ENVELOPE_INFO, BytesMut::from(rest));
        if let Ok((plain, suite)) = opened {
            assert!(!retired, "a retired key opened an envelope");
            assert!(plain.len() + suite.min_sealed_len().max(MIN_SEALED_LEN) <= rest.len());
        }
        return;
    }
    if retired {
        return;
    }
    let (flip_at, plaintext) = rest.split_first().map_or((0, rest), |(&b, r)| (b, r));
    let Some(first) = ring.iter().next() else {
        return;
    };
    let prefix = match (mode & 8 != 0, first.id()) {
        (true, Some(id)) => Prefix::Tink(id),
        (true, None) => Prefix::Tink(u32::from(flip_at)),
        (false, _) => Prefix::Raw,
    };
    let sealed = envelope::seal(&first.public_key(), prefix, ENVELOPE_INFO, plaintext)
        .expect("sealing to a valid key cannot fail");
    let opened = ring
        .open(ENVELOPE_INFO, BytesMut::from(&sealed[..]))
        .expect("an envelope sealed to the ring opens");
    assert_eq!(&opened[..], plaintext);
    let mut tampered = sealed;
    let at = usize::from(flip_at) % tampered.len();
    if first.id().is_none() && prefix != Prefix::Raw && (1..TINK_PREFIX_LEN).contains(&at) {
        // An id-less key accepts any key id: the id is not authenticated (as in Tink).
        return;
    }
    tampered[at] ^= 0x80;
    assert!(
        ring.open(ENVELOPE_INFO, BytesMut::from(&tampered[..]))
            .is_err(),
        "a tampered envelope opened (byte {at})"
    );
}

fn check_split_prefix(bytes: &[u8]) {
    match envelope::split_prefix(bytes) {
        (Prefix::Tink(id), body) => {
            assert_eq!(bytes[0], envelope::TINK_START_BYTE);
            assert_eq!(bytes[1..TINK_PREFIX_LEN], id.to_be_bytes());
            assert_eq!(body, &bytes[TINK_PREFIX_LEN..]);
        }
        (Prefix::Raw, body) => assert_eq!(body, bytes),
    }
}

// === ohttp_chunked ===

/// Chunked Oblivious HTTP's two readers of arriving bytes. Byte 0 chooses the piece size
/// (1 to 64 bytes); the rest is read twice, whole and in those pieces:
/// - as an inner Binary HTTP request (`ohttp::incremental`): head and content, or
///   refused, must not depend on where the bytes were split, and content is never more
///   than the input;
/// - as an outer chunk stream (`Deframer`): the chunks and the final chunk (or the
///   refusal, or the truncation) must not depend on the split either, and no chunk is
///   longer than `MAX_SEALED_CHUNK_LEN`.
pub fn ohttp_chunked(data: &[u8]) {
    use envelope::ohttp::chunked::{Deframer, MAX_SEALED_CHUNK_LEN};
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(split % 64) + 1;
    let whole = crate::ohttp::incremental::read_in_pieces(rest, rest.len());
    let pieces = crate::ohttp::incremental::read_in_pieces(rest, step);
    assert_eq!(whole, pieces, "the Binary HTTP reader depends on the split");
    if let Some((_, content)) = &whole {
        assert!(content.len() <= rest.len());
    }
    let deframe = |step: usize| {
        let mut d = Deframer::new();
        let mut chunks = Vec::new();
        for piece in rest.chunks(step.max(1)) {
            if let Err(e) = d.push(piece) {
                return (chunks, Err(e));
            }
            loop {
                match d.next_chunk() {
                    Ok(Some(c)) => {
                        assert!(c.len() <= MAX_SEALED_CHUNK_LEN);
                        chunks.push(c);
                    }
                    Ok(None) => break,
                    Err(e) => return (chunks, Err(e)),
                }
            }
        }
        (chunks, d.finish())
    };
    assert_eq!(
        deframe(rest.len()),
        deframe(step),
        "the deframer depends on the split"
    );
}

// === ohttp_request ===

/// The Oblivious HTTP target's keys, one per KEM, derived so seeds stay valid.
pub fn ohttp_keys() -> &'static [PrivateKey; 2] {
    static KEYS: OnceLock<[PrivateKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            PrivateKey::derive(b"hpke-gateway ohttp fuzz key"),
            PrivateKey::derive_for(
                envelope::Suite::XWING_AES_256_GCM,
                b"hpke-gateway ohttp fuzz key pq",
            ),
        ]
    })
}

/// Oblivious HTTP encapsulation (RFC 9458). The first byte chooses:
/// - even: the rest is an encapsulated request, opened with the key of the KEM its header
///   names. When it opens, the plaintext is exactly as long as the framing says, and its
///   response seals and opens with a client that shares its secret nowhere else (the
///   rest is also fed to a client as a response: refused, never a panic).
/// - odd: the rest is an inner request, sealed to the key and suite the first byte's
///   other bits name; it must open to itself, its response must round-trip, and the
///   request with one byte flipped (at the position the second byte names) must not
///   open.
pub fn ohttp_request(data: &[u8]) {
    use envelope::ohttp;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = ohttp_keys();
    if mode & 1 == 0 {
        let Ok(header) = ohttp::parse_header(rest) else {
            return;
        };
        let key = if header.suite.kem == envelope::Kem::XWing {
            &keys[1]
        } else {
            &keys[0]
        };
        if let Ok((plain, response_key)) = ohttp::open_request(key, rest) {
            let framing = ohttp::HEADER_LEN + header.suite.kem.enc_len() + 16;
            assert_eq!(plain.len() + framing, rest.len());
            response_key
                .seal(&plain)
                .expect("a response to an opened request seals");
        }
        let (_, client) = ohttp::seal_request(
            0,
            &keys[0].public_key(),
            envelope::Suite::X25519_AES_128_GCM,
            b"",
        )
        .expect("sealing to a valid key");
        assert!(
            client.open_response(rest).is_err(),
            "a forged response opened"
        );
        return;
    }
    let aead = [
        envelope::Aead::Aes128Gcm,
        envelope::Aead::Aes256Gcm,
        envelope::Aead::ChaCha20Poly1305,
    ][usize::from(mode >> 1) % 3];
    let key = &keys[usize::from(mode >> 3 & 1)];
    let suite = key.suite().with_aead(aead);
    let (request, client) = ohttp::seal_request(mode >> 4, &key.public_key(), suite, rest)
        .expect("sealing to a valid key");
    let (plain, response_key) = ohttp::open_request(key, &request).expect("our own request opens");
    assert_eq!(plain, rest);
    let response = response_key.seal(rest).expect("seals");
    assert_eq!(client.open_response(&response).expect("opens"), rest);
    // Every byte counts, the key id too: the header is part of the HPKE `info`.
    let at = usize::from(rest.first().copied().unwrap_or(0)) % request.len();
    let mut flipped = request.clone();
    flipped[at] ^= 0x01;
    assert!(
        ohttp::open_request(key, &flipped).is_err(),
        "a flipped request opened"
    );
}

// === classify ===

/// Header negotiation and body sniffing: `Negotiation::from_headers`, `account_id`,
/// `looks_like_text`, `looks_encrypted`, and the body `peek` and `collect_limited`
/// limits.
///
/// Input: header lines (`name: value`) up to an empty line, then the body. The first
/// two bytes pick the body's frame size and the collect limit.
pub fn classify(data: &[u8]) {
    let [frame_size, limit, rest @ ..] = data else {
        return;
    };
    let (headers, body) = parse_headers(rest);
    let _ = classify::Negotiation::from_headers(&headers);
    let name = HeaderName::from_static("x-clevertap-account-id");
    if let Ok(id) = classify::account_id(&headers, &name, "X-Account") {
        assert!(crate::config::valid_account_id(id));
    }
    let _ = classify::looks_like_text(body);
    let _ = classify::looks_encrypted(body, body.len(), &headers, &keyrings()[2]);

    let frame_size = usize::from(*frame_size);
    let limit = u64::from(*limit);
    let body = Bytes::copy_from_slice(body);
    block_on(async {
        let admission = admission();
        let mut held = admission.empty_reservation();
        let peeked = body::peek(
            framed(&body, frame_size),
            classify::SNIFF_LEN,
            IDLE,
            &admission,
            &mut held,
        )
        .await
        .expect("a body of data frames peeks");
        assert!(body.starts_with(&peeked.head));
        assert!(peeked.head.len() >= body.len().min(classify::SNIFF_LEN));
        if peeked.complete {
            assert_eq!(peeked.head.len(), body.len());
        }
        let mut replay_held = admission.empty_reservation();
        let replay = body::collect_limited(
            peeked.body,
            collect(u64::MAX, 0),
            &admission,
            &mut replay_held,
        )
        .await
        .expect("the peeked body reads back");
        assert_eq!(replay, body, "peek lost or changed bytes");

        let headroom = (limit % 8) as usize;
        let mut held = admission.empty_reservation();
        let collected = body::collect_limited(
            framed(&body, frame_size),
            collect(limit, headroom),
            &admission,
            &mut held,
        )
        .await;
        match collected {
            Ok(buf) => {
                assert!(body.len() as u64 <= limit);
                assert!(buf[..headroom].iter().all(|&b| b == 0));
                assert_eq!(&buf[headroom..], &body[..]);
                assert!(held.bytes() >= body.len() as u64, "bytes held are reserved");
            }
            Err(Error::PayloadTooLarge { .. }) => assert!(body.len() as u64 > limit),
            Err(other) => panic!("collect_limited failed on a good body: {other}"),
        }
    });
}

/// Far more time between frames than an in-memory body ever takes.
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// A budget far larger than any input.
fn admission() -> Admission {
    Admission::new(
        16,
        1 << 30,
        std::time::Duration::from_secs(1),
        std::sync::Arc::new(crate::metrics::Metrics::default()),
    )
}

fn collect(limit: u64, headroom: usize) -> Collect<Errors0, Errors1, Errors2> {
    Collect {
        limit,
        headroom,
        idle: IDLE,
        too_large,
        read_error,
        timed_out: || Error::RequestTimeout,
        budget_wait: BudgetWait::Request,
    }
}

type Errors0 = fn() -> Error;
type Errors1 = fn(axum::Error) -> Error;
type Errors2 = fn() -> Error;

fn too_large() -> Error {
    Error::PayloadTooLarge { limit: 0 }
}

fn read_error(_: axum::Error) -> Error {
    Error::BadRequestBody
}

/// `name: value` lines up to an empty line (headers that do not parse are left out),
/// and the bytes after it.
fn parse_headers(data: &[u8]) -> (HeaderMap, &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    (headers, body)
}

/// A streaming body of `frame_size`-byte data frames (no known length), or for size 0
/// one buffer of known length.
fn framed(body: &Bytes, frame_size: usize) -> Body {
    if frame_size == 0 {
        return Body::from(body.clone());
    }
    let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = body
        .chunks(frame_size)
        .map(|c| Ok(http_body::Frame::data(body.slice_ref(c))))
        .collect();
    Body::new(StreamBody::new(futures_util::stream::iter(frames)))
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime builds");
    }
    RUNTIME.with(|rt| rt.block_on(future))
}

// === upstream_uri ===

/// The request head's ingress (`ingress::admit`: CONNECT, dot segments, underscores,
/// hop-by-hop fields) and upstream URI building (`Upstream::uri_for`).
///
/// Input: the upstream base URL, a newline, the request target, a newline, then header
/// lines. Properties: a request ingress lets through has no hop-by-hop field left (but
/// `Connection: upgrade` and `Upgrade` on an upgrade), no field with an underscore, and
/// a path with no dot segment in any spelling; the URI sent upstream keeps the
/// upstream's scheme and authority and starts with its base path.
pub fn upstream_uri(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let (Some(base), Some(target)) = (parts.next(), parts.next()) else {
        return;
    };
    let (headers, _) = parse_headers(parts.next().unwrap_or_default());
    let Ok(original) = Uri::try_from(target) else {
        return;
    };
    let mut request = http::Request::new(());
    *request.uri_mut() = original.clone();
    *request.headers_mut() = headers;
    let account = HeaderName::from_static("x-clevertap-account-id");
    let Ok((admitted, _)) = ingress::admit(&mut request, &account, false) else {
        return;
    };
    let headers = request.headers();
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
    ] {
        assert!(!headers.contains_key(name), "{name} survived");
    }
    if admitted.upgrade {
        assert_eq!(headers.get_all(header::CONNECTION).iter().count(), 1);
        assert_eq!(headers[header::CONNECTION], "upgrade");
    } else {
        assert!(!headers.contains_key(header::CONNECTION));
        assert!(!headers.contains_key(header::UPGRADE));
    }
    assert!(headers.keys().all(|k| !k.as_str().contains('_')));
    assert!(ingress::check_path(&original).is_ok());
    if let Ok(base) = Uri::try_from(base)
        && let (Some(scheme), Some(authority)) = (base.scheme(), base.authority())
        && let Ok(upstream) = Upstream::new(scheme, authority, base.path())
        && let Ok(uri) = upstream.uri_for(&original)
    {
        assert_eq!(uri.scheme(), Some(scheme));
        assert_eq!(uri.authority(), Some(authority));
        assert!(uri.path().starts_with(&upstream.base_path));
        let origin_form = upstream.origin_form(&original).expect("as uri_for");
        assert_eq!(origin_form.path_and_query(), uri.path_and_query());
    }
}

// === key_files ===

/// Key files: PKCS#8 PEM (clear and encrypted), SPKI PEM, raw base64 and Tink JSON
/// keysets, public and private. The first byte's low bit gives the test fixtures' passphrase for
/// encrypted PKCS#8. A key that parses writes back and reads back to the same key (PEM
/// records only the KEM: it reads back with the suite declared).
pub fn key_files(data: &[u8]) {
    let Some((&mode, text)) = data.split_first() else {
        return;
    };
    let passphrase = (mode & 1 == 1).then_some(&b"correct-horse"[..]);
    if let Ok(loaded) = keys::parse_private_key(text, passphrase) {
        let public = loaded.key.public_key();
        let pem = keys::private_key_pem(&loaded.key).expect("a parsed key writes");
        let again = keys::parse_private_key_for(pem.as_bytes(), None, Some(public.suite()))
            .expect("a written key reads");
        assert_eq!(again.key.public_key(), public);
    }
    if let Ok((public, prefix)) = keys::parse_public_key(text) {
        let pem = keys::public_key_pem(&public).expect("a parsed key writes");
        assert_eq!(
            keys::parse_public_key_for(pem.as_bytes(), Some(public.suite())).ok(),
            Some((public.clone(), Prefix::Raw))
        );
        let json = keys::public_keyset_json(&public, prefix, 1);
        let (again, again_prefix) =
            keys::parse_public_key(json.as_bytes()).expect("a written keyset reads");
        assert_eq!((again, again_prefix), (public, prefix));
    }
}

// === config_file ===

/// The configuration file: TOML into `RawConfig`, then `Config::from_raw`. Paths
/// resolve against an empty directory; a file naming an absolute path or `..` is only
/// parsed, not loaded, so the target never reads the machine's files.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(raw) = toml::from_str::<crate::config::RawConfig>(text) else {
        return;
    };
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return;
    };
    if names_only_relative_paths(&toml::Value::Table(table)) {
        let _ = crate::config::Config::from_raw(raw, empty_dir());
    }
}

fn names_only_relative_paths(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(s) => {
            let path = Path::new(s);
            !path.has_root()
                && !s.starts_with('~')
                && !path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
        }
        toml::Value::Array(items) => items.iter().all(names_only_relative_paths),
        toml::Value::Table(table) => table.values().all(names_only_relative_paths),
        _ => true,
    }
}

fn empty_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hpke-gateway-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    })
}

// === the intake's targets (intake_manifest, intake_records, intake_pgp) ===

#[cfg(feature = "intake")]
pub use hpke_intake::fuzzing::*;
