//! The gateway end to end: the real router on 127.0.0.1 in front of a real recording
//! upstream, driven over HTTP. Covers every row of the error matrix, Tink-prefixed
//! and RAW envelopes, two server keys, bodyless requests, limits, bad envelopes and a
//! failing upstream; after each bad request a good one must still succeed.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::StreamExt as _;
use hpke_gateway::envelope::{self, Prefix, PrivateKey, Suite};
use hpke_gateway::keys;
use support::{ACCOUNT_HEADER, Gateway, MEDIA, Options, PASSCODE, error_code, open_with};

const PROFILE: &[u8] =
    br#"{"d":[{"identity":"18121994201671","type":"profile","profileData":{"Name":"Test Name"}}]}"#;

// === row 1: headers, encryption on, encrypted body: success ===

#[tokio::test]
async fn encrypted_round_trip_with_tink_prefix() {
    let gw = Gateway::start().await;
    let res = gw
        .encrypted_post(
            "/1/upload?x=1",
            "ACCT-1",
            gw.seal(1, true, "ACCT-1", PROFILE),
        )
        .header("X-Request-Extra", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], MEDIA);
    let declared: usize = res.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = res.bytes().await.unwrap();
    assert_eq!(declared, body.len());
    // The response is sealed to ACCT-1's key (SPKI PEM, so RAW: no prefix).
    assert_eq!(body.len(), 32 + PROFILE.len() + 16);
    assert_eq!(open_with(&gw.keys.acct1, "ACCT-1", &body), PROFILE);

    let seen = gw.upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/1/upload?x=1");
    assert_eq!(&seen.body[..], PROFILE, "upstream sees the exact plaintext");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(
        seen.headers["content-length"],
        PROFILE.len().to_string().as_str()
    );
    assert_eq!(
        seen.headers["x-clevertap-passcode"], PASSCODE,
        "auth header untouched"
    );
    assert_eq!(seen.headers[ACCOUNT_HEADER], "ACCT-1");
    assert_eq!(seen.headers["x-request-extra"], "kept");
    assert_eq!(
        seen.headers["x-request-id"].len(),
        32,
        "a request id goes upstream"
    );
}

#[tokio::test]
async fn raw_envelopes_and_both_server_keys_work() {
    let gw = Gateway::start().await;
    for (id, tink) in [(1, false), (2, false), (2, true)] {
        let pt = format!(r#"{{"key":{id},"tink":{tink}}}"#);
        let res = gw
            .encrypted_post(
                "/1/upload",
                "ACCT-1",
                gw.seal(id, tink, "ACCT-1", pt.as_bytes()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "key {id} tink {tink}");
        let body = res.bytes().await.unwrap();
        assert_eq!(open_with(&gw.keys.acct1, "ACCT-1", &body), pt.as_bytes());
        assert_eq!(&gw.upstream.last().body[..], pt.as_bytes());
    }
}

#[tokio::test]
async fn response_to_a_tink_keyset_carries_its_prefix() {
    let gw = Gateway::start().await;
    let res = gw
        .encrypted_post("/echo", "ACCT-TINK", gw.seal(1, true, "ACCT-TINK", PROFILE))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.bytes().await.unwrap();
    assert_eq!(
        &body[..5],
        &[0x01, 0, 0, 0, 77],
        "Tink prefix of the customer's key 77"
    );
    let (prefix, rest) = envelope::split_prefix(&body);
    assert_eq!(prefix, Prefix::Tink(77));
    assert_eq!(
        envelope::open(&gw.keys.acct_tink, b"ACCT-TINK", rest).unwrap(),
        PROFILE
    );
}

#[tokio::test]
async fn upstream_status_and_headers_are_kept_and_body_encrypted() {
    let gw = Gateway::start().await;
    let res = gw
        .encrypted_post("/status/418", "ACCT-1", gw.seal(1, true, "ACCT-1", b"{}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 418);
    assert_eq!(res.headers()["x-upstream"], "yes");
    assert_eq!(res.headers()["content-type"], MEDIA);
    let body = res.bytes().await.unwrap();
    assert_eq!(
        open_with(&gw.keys.acct1, "ACCT-1", &body),
        br#"{"status":418}"#
    );
}

#[tokio::test]
async fn one_mebibyte_each_way() {
    let gw = Gateway::start().await;
    let pt: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let res = gw
        .encrypted_post("/echo", "ACCT-1", gw.seal(2, true, "ACCT-1", &pt))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.bytes().await.unwrap();
    assert_eq!(open_with(&gw.keys.acct1, "ACCT-1", &body), pt);
    assert_eq!(gw.upstream.last().body.len(), pt.len());
}

// === bodyless requests: Accept alone asks for an encrypted response ===

#[tokio::test]
async fn bodyless_get_gets_an_encrypted_response() {
    let gw = Gateway::start().await;
    let res = gw
        .client
        .get(format!("{}/1/profile.json?email=jack%40gmail.com", gw.url))
        .header("Content-Type", "application/json")
        .header("Accept", MEDIA)
        .header(ACCOUNT_HEADER, "ACCT-1")
        .header("X-CleverTap-Passcode", PASSCODE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], MEDIA);
    let body = res.bytes().await.unwrap();
    let pt = open_with(&gw.keys.acct1, "ACCT-1", &body);
    assert_eq!(
        pt,
        br#"{"method":"GET","uri":"/1/profile.json?email=jack%40gmail.com"}"#
    );
    let seen = gw.upstream.last();
    assert_eq!(
        seen.headers["accept"], "application/json",
        "upstream is asked for JSON"
    );
    assert!(seen.body.is_empty());
}

#[tokio::test]
async fn empty_bodies() {
    let gw = Gateway::start().await;
    // Both headers and an empty POST body: the headers promise an envelope that is not there.
    let res = gw
        .encrypted_post("/1/upload", "ACCT-1", Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await.0, 4006);
    // Both headers on a GET with no body: only an encrypted response is asked for.
    let res = gw
        .client
        .get(format!("{}/x", gw.url))
        .header("Content-Type", MEDIA)
        .header("Accept", MEDIA)
        .header(ACCOUNT_HEADER, "ACCT-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.bytes().await.unwrap();
    assert_eq!(
        open_with(&gw.keys.acct1, "ACCT-1", &body),
        br#"{"method":"GET","uri":"/x"}"#
    );
    // A sealed empty plaintext is a valid envelope: the upstream gets an empty body.
    let res = gw
        .encrypted_post("/empty", "ACCT-1", gw.seal(1, false, "ACCT-1", b""))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(gw.upstream.last().body.is_empty());
    assert_eq!(gw.upstream.last().headers["content-length"], "0");
    gw.assert_good_request_works().await;
}

// === the failing rows ===

#[tokio::test]
async fn row2_headers_and_encryption_on_but_plaintext_body() {
    let gw = Gateway::start().await;
    let res = gw
        .encrypted_post("/1/upload", "ACCT-1", PROFILE.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let (code, msg) = error_code(res).await;
    assert_eq!(
        (code, msg.as_str()),
        (4006, "the request body is not encrypted")
    );
    assert_eq!(gw.upstream.count(), 0, "nothing reaches the upstream");
    gw.assert_good_request_works().await;
}

#[tokio::test]
async fn row3_and_row4_headers_but_encryption_off() {
    let gw = Gateway::start().await;
    for body in [gw.seal(1, true, "ACCT-OFF", PROFILE), PROFILE.to_vec()] {
        for account in ["ACCT-OFF", "ACCT-UNKNOWN"] {
            let res = gw
                .encrypted_post("/1/upload", account, body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 403);
            assert_eq!(error_code(res).await.0, 4005);
        }
    }
    // Accept alone on a bodyless request, encryption off: the same refusal.
    let res = gw
        .client
        .get(format!("{}/1/profile.json", gw.url))
        .header("Accept", MEDIA)
        .header(ACCOUNT_HEADER, "ACCT-OFF")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res).await.0, 4005);
    assert_eq!(gw.upstream.count(), 0);
    gw.assert_good_request_works().await;
}

#[tokio::test]
async fn row5_and_row6_encrypted_body_without_headers() {
    let gw = Gateway::start().await;
    for account in ["ACCT-1", "ACCT-OFF"] {
        let cases = [
            (gw.seal(1, true, account, PROFILE), Some("application/json")),
            (
                gw.seal(2, true, account, PROFILE),
                Some("application/octet-stream"),
            ),
            (
                gw.seal(1, false, account, PROFILE),
                Some("application/json"),
            ),
            (gw.seal(1, false, account, PROFILE), None),
        ];
        for (body, content_type) in cases {
            let mut req = gw
                .client
                .post(format!("{}/1/upload", gw.url))
                .header(ACCOUNT_HEADER, account)
                .body(body);
            if let Some(ct) = content_type {
                req = req.header("Content-Type", ct);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 400, "{account} {content_type:?}");
            assert_eq!(error_code(res).await.0, 4007);
        }
    }
    assert_eq!(gw.upstream.count(), 0);
    gw.assert_good_request_works().await;
}

#[tokio::test]
async fn raw_envelope_declared_binary_cannot_be_told_and_passes_through() {
    // A RAW envelope (no Tink prefix) sent as application/octet-stream without the
    // encryption headers looks like any binary upload: the gateway forwards it as the
    // plaintext it claims to be, and the client gets whatever the upstream answers.
    let gw = Gateway::start().await;
    let sealed = gw.seal(1, false, "ACCT-1", PROFILE);
    let res = gw
        .client
        .post(format!("{}/echo", gw.url))
        .header("Content-Type", "application/octet-stream")
        .header(ACCOUNT_HEADER, "ACCT-1")
        .body(sealed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.bytes().await.unwrap(),
        sealed,
        "the upstream's echo, unencrypted"
    );
    assert_eq!(gw.upstream.last().body, sealed);
}

#[tokio::test]
async fn row7_plaintext_passes_through_untouched() {
    let gw = Gateway::start().await;
    for account in ["ACCT-1", "ACCT-OFF", "ACCT-UNKNOWN"] {
        let res = gw
            .client
            .post(format!("{}/1/upload", gw.url))
            .header("Content-Type", "application/json")
            .header(ACCOUNT_HEADER, account)
            .header("X-CleverTap-Passcode", PASSCODE)
            .body(PROFILE)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(
            res.bytes().await.unwrap(),
            PROFILE,
            "response not encrypted"
        );
        let seen = gw.upstream.last();
        assert_eq!(&seen.body[..], PROFILE);
        assert_eq!(seen.headers["x-clevertap-passcode"], PASSCODE);
    }
    // No account header at all: plaintext is not the gateway's business.
    let res = gw
        .client
        .get(format!("{}/health", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A large plaintext body streams through whole.
    let big = "x".repeat(3 * 1024 * 1024);
    let res = gw
        .client
        .post(format!("{}/echo", gw.url))
        .header("Content-Type", "text/plain")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().len(), big.len());
    assert_eq!(gw.upstream.last().body.len(), big.len());
}

#[tokio::test]
async fn only_one_header_says_which_is_missing() {
    let gw = Gateway::start().await;
    let res = gw
        .client
        .post(format!("{}/1/upload", gw.url))
        .header("Content-Type", MEDIA)
        .header(ACCOUNT_HEADER, "ACCT-1")
        .body(gw.seal(1, true, "ACCT-1", PROFILE))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let (code, msg) = error_code(res).await;
    assert_eq!(code, 4003);
    assert!(
        msg.contains("Accept: application/octet-stream+hpke"),
        "{msg}"
    );

    let res = gw
        .client
        .post(format!("{}/1/upload", gw.url))
        .header("Content-Type", "application/json")
        .header("Accept", MEDIA)
        .header(ACCOUNT_HEADER, "ACCT-1")
        .body(PROFILE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let (code, msg) = error_code(res).await;
    assert_eq!(code, 4004);
    assert!(
        msg.contains("Content-Type: application/octet-stream+hpke"),
        "{msg}"
    );
    assert_eq!(gw.upstream.count(), 0);
    gw.assert_good_request_works().await;
}

#[tokio::test]
async fn account_header_missing_or_invalid() {
    let gw = Gateway::start().await;
    let res = gw
        .client
        .post(format!("{}/1/upload", gw.url))
        .header("Content-Type", MEDIA)
        .header("Accept", MEDIA)
        .body(gw.seal(1, true, "ACCT-1", PROFILE))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let (code, msg) = error_code(res).await;
    assert_eq!(code, 4001);
    // Spelled as the documentation writes it, not as `HeaderName` stores it.
    assert_eq!(msg, "missing X-CleverTap-Account-Id header");
    let res = gw
        .encrypted_post("/1/upload", "ACCT 1", gw.seal(1, true, "ACCT 1", PROFILE))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res).await,
        (4002, "invalid X-CleverTap-Account-Id header".to_owned())
    );
    gw.assert_good_request_works().await;
}

// === bad envelopes ===

#[tokio::test]
async fn truncated_garbage_tampered_and_misaddressed_envelopes_fail_alike() {
    let gw = Gateway::start().await;
    let good = gw.seal(1, true, "ACCT-1", PROFILE);
    let mut bad_bodies: Vec<(String, Vec<u8>)> = Vec::new();
    for n in [1, 4, 5, 6, 36, 37, 52, good.len() - 1] {
        bad_bodies.push((format!("truncated to {n}"), good[..n].to_vec()));
    }
    for i in [0, 1, 5, 20, 40, good.len() - 1] {
        let mut b = good.clone();
        b[i] ^= 0x80;
        bad_bodies.push((format!("flipped byte {i}"), b));
    }
    bad_bodies.push((
        "random bytes".into(),
        (0..300).map(|i| (i * 151 % 256) as u8 | 0x80).collect(),
    ));
    bad_bodies.push((
        "other account's info".into(),
        gw.seal(1, true, "ACCT-TINK", PROFILE),
    ));
    bad_bodies.push((
        "sealed to an unknown key".into(),
        envelope::seal(
            &PrivateKey::generate().public_key(),
            Prefix::Tink(1),
            b"ACCT-1",
            PROFILE,
        )
        .unwrap(),
    ));
    let mut zero_enc = vec![0x01, 0, 0, 0, 1];
    zero_enc.extend_from_slice(&[0u8; 32]);
    zero_enc.extend_from_slice(&[0x99; 40]);
    bad_bodies.push(("all-zero encapsulated key".into(), zero_enc));

    let tries = bad_bodies.len();
    for (what, body) in bad_bodies {
        let res = gw
            .encrypted_post("/1/upload", "ACCT-1", body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{what}");
        let (code, msg) = error_code(res).await;
        assert_eq!((code, msg.as_str()), (4008, "decryption failed"), "{what}");
        gw.assert_good_request_works().await;
    }
    assert_eq!(
        gw.upstream.count(),
        tries,
        "only the good requests got through"
    );
}

// === limits ===

#[tokio::test]
async fn oversize_bodies_get_413_before_the_upstream() {
    let gw = Gateway::start_with(Options {
        max_encrypted_body_bytes: 64 * 1024,
        ..Options::default()
    })
    .await;
    let big = gw.seal(1, true, "ACCT-1", &vec![b'a'; 64 * 1024]);
    let res = gw
        .encrypted_post("/1/upload", "ACCT-1", big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(error_code(res).await.0, 4009);
    // Without a Content-Length (chunked), the limit holds while reading.
    let stream = futures_util::stream::iter(
        big.chunks(8192)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let res = gw
        .client
        .post(format!("{}/1/upload", gw.url))
        .header("Content-Type", MEDIA)
        .header("Accept", MEDIA)
        .header(ACCOUNT_HEADER, "ACCT-1")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(error_code(res).await.0, 4009);
    // Just under the limit works.
    let fits = gw.seal(1, true, "ACCT-1", &vec![b'a'; 64 * 1024 - 53]);
    assert_eq!(fits.len(), 64 * 1024);
    let res = gw
        .encrypted_post("/echo", "ACCT-1", fits)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(gw.upstream.count(), 1);
    gw.assert_good_request_works().await;
}

#[tokio::test]
async fn an_upstream_response_over_the_limit_is_a_502() {
    let gw = Gateway::start_with(Options {
        max_response_body_bytes: 1000,
        ..Options::default()
    })
    .await;
    let res = gw
        .encrypted_post("/big/1001", "ACCT-1", gw.seal(1, true, "ACCT-1", b"{}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(error_code(res).await.0, 5003);
    let res = gw
        .encrypted_post("/big/1000", "ACCT-1", gw.seal(1, true, "ACCT-1", b"{}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    gw.assert_good_request_works().await;
}

// === upstream failures ===

#[tokio::test]
async fn upstream_down_is_a_502_json_error() {
    let gw = Gateway::start_with(Options {
        upstream_down: true,
        ..Options::default()
    })
    .await;
    let res = gw
        .encrypted_post("/1/upload", "ACCT-1", gw.seal(1, true, "ACCT-1", PROFILE))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let (code, msg) = error_code(res).await;
    assert_eq!((code, msg.as_str()), (5001, "upstream unavailable"));
    let res = gw
        .client
        .get(format!("{}/plain", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(error_code(res).await.0, 5001);
}

#[tokio::test]
async fn slow_upstream_is_a_504_and_the_next_request_succeeds() {
    let gw = Gateway::start_with(Options {
        upstream_timeout_ms: 300,
        ..Options::default()
    })
    .await;
    let started = std::time::Instant::now();
    let res = gw
        .encrypted_post("/slow", "ACCT-1", gw.seal(1, true, "ACCT-1", PROFILE))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(error_code(res).await.0, 5002);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "did not wait for the upstream"
    );
    gw.assert_good_request_works().await;
}

#[tokio::test]
async fn an_upstream_body_that_never_comes_is_a_504() {
    let gw = Gateway::start_with(Options {
        upstream_timeout_ms: 300,
        ..Options::default()
    })
    .await;
    let started = std::time::Instant::now();
    let res = gw
        .encrypted_post("/slowbody", "ACCT-1", gw.seal(1, true, "ACCT-1", PROFILE))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(error_code(res).await.0, 5002);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    gw.assert_good_request_works().await;
}

#[tokio::test]
async fn a_client_body_that_stalls_is_a_408_and_nothing_reaches_the_upstream() {
    let gw = Gateway::start_with(Options {
        request_body_timeout_ms: 300,
        ..Options::default()
    })
    .await;
    let sealed = gw.seal(1, true, "ACCT-1", PROFILE);
    for encrypted in [true, false] {
        let first = sealed[..10].to_vec();
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(first)]).chain(
            futures_util::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                Ok(vec![0u8; 10])
            }),
        );
        let mut req = gw
            .client
            .post(format!("{}/1/upload", gw.url))
            .header(ACCOUNT_HEADER, "ACCT-1")
            .body(reqwest::Body::wrap_stream(stream));
        if encrypted {
            req = req.header("Content-Type", MEDIA).header("Accept", MEDIA);
        }
        let started = std::time::Instant::now();
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 408, "encrypted: {encrypted}");
        assert_eq!(error_code(res).await.0, 4011);
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
    }
    assert_eq!(gw.upstream.count(), 0);
    gw.assert_good_request_works().await;
}

#[tokio::test]
async fn encoded_or_non_utf8_plaintext_is_not_mistaken_for_an_envelope() {
    let gw = Gateway::start().await;
    let binaryish: Vec<u8> = (0..200u8).map(|i| i | 0x80).collect();
    for (content_type, encoding) in [
        ("application/json", Some("gzip")),
        ("text/csv; charset=iso-8859-1", None),
    ] {
        let mut req = gw
            .client
            .post(format!("{}/echo", gw.url))
            .header("Content-Type", content_type)
            .header(ACCOUNT_HEADER, "ACCT-1")
            .body(binaryish.clone());
        if let Some(e) = encoding {
            req = req.header("Content-Encoding", e);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200, "{content_type} {encoding:?}");
        assert_eq!(gw.upstream.last().body, binaryish);
    }
}

#[tokio::test]
async fn encrypted_answers_drop_plaintext_representation_headers() {
    let gw = Gateway::start().await;
    let res = gw
        .encrypted_post("/1/upload", "ACCT-1", gw.seal(1, true, "ACCT-1", PROFILE))
        .header("Range", "bytes=0-10")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["vary"], "Accept");
    assert!(
        gw.upstream.last().headers.get("range").is_none(),
        "the whole body is asked for"
    );
    // HEAD answers what a GET would: the envelope's type and length.
    let get = gw
        .client
        .get(format!("{}/x", gw.url))
        .header("Accept", MEDIA)
        .header(ACCOUNT_HEADER, "ACCT-1")
        .send()
        .await
        .unwrap();
    let get_len = get.bytes().await.unwrap().len();
    let head = gw
        .client
        .head(format!("{}/x", gw.url))
        .header("Accept", MEDIA)
        .header(ACCOUNT_HEADER, "ACCT-1")
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["content-type"], MEDIA);
    let plain = br#"{"method":"HEAD","uri":"/x"}"#.len();
    assert_eq!(get_len, br#"{"method":"GET","uri":"/x"}"#.len() + 48);
    assert_eq!(
        head.headers()["content-length"],
        (plain + 48).to_string().as_str()
    );
}

// === hop-by-hop headers ===

#[tokio::test]
async fn hop_by_hop_headers_are_dropped() {
    let gw = Gateway::start().await;
    let res = gw
        .encrypted_post("/1/upload", "ACCT-1", gw.seal(1, true, "ACCT-1", PROFILE))
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "1")
        .header("Proxy-Authorization", "Basic Zm9vOmJhcg==")
        .header("Authorization", "Bearer end-to-end")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = gw.upstream.last();
    assert!(seen.headers.get("x-hop").is_none());
    assert!(seen.headers.get("proxy-authorization").is_none());
    assert_eq!(seen.headers["authorization"], "Bearer end-to-end");
}

// === many at once ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_encrypted_requests_all_succeed() {
    let gw = std::sync::Arc::new(Gateway::start().await);
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let pt = format!(r#"{{"n":{i}}}"#);
                let id = if i % 2 == 0 { 1 } else { 2 };
                let res = gw
                    .encrypted_post(
                        "/echo",
                        "ACCT-1",
                        gw.seal(id, i % 3 == 0, "ACCT-1", pt.as_bytes()),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                let body = res.bytes().await.unwrap();
                assert_eq!(open_with(&gw.keys.acct1, "ACCT-1", &body), pt.as_bytes());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(gw.upstream.count(), 32);
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_next_request_works() {
    let gw = Gateway::start_with(Options {
        extra: "max_header_bytes = 2048".into(),
        ..Options::default()
    })
    .await;
    let res = gw
        .client
        .get(format!("{}/1/profile", gw.url))
        .header("x-big", "a".repeat(3000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431);
    assert_eq!(
        error_code(res).await,
        (
            4012,
            "the request headers are larger than 2048 bytes".into()
        )
    );
    assert_eq!(
        gw.upstream.count(),
        0,
        "a refused request never reaches the upstream"
    );
    // Just under the limit passes.
    let res = gw
        .client
        .get(format!("{}/1/profile", gw.url))
        .header("x-big", "a".repeat(1500))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    gw.assert_good_request_works().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_concurrent_requests_answers_503_with_retry_after() {
    let gw = Gateway::start_with(Options {
        extra: "max_concurrent_requests = 1".into(),
        ..Options::default()
    })
    .await;
    let slow = tokio::spawn({
        let (client, url) = (gw.client.clone(), format!("{}/slow", gw.url));
        async move { client.get(url).send().await.unwrap().status() }
    });
    // Wait until the slow request has reached the upstream (so it holds the permit).
    for _ in 0..100 {
        if gw.upstream.count() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(gw.upstream.count(), 1);
    let res = gw
        .client
        .get(format!("{}/1/profile", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(
        error_code(res).await,
        (5004, "too many concurrent requests, retry later".into())
    );
    assert_eq!(gw.upstream.count(), 1);
    assert_eq!(slow.await.unwrap(), 200);
    gw.assert_good_request_works().await;
}

#[tokio::test]
async fn the_published_keys_name_the_primary_first_in_every_format() {
    let gw = Gateway::start().await;
    let url = format!("{}/.well-known/hpke-keys", gw.url);
    let (k1, k2) = (gw.server_public(1), gw.server_public(2));

    let res = gw.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["cache-control"], "public, max-age=3600");
    let json = res.bytes().await.unwrap();
    // The keyset's primary is key 1 (first in the file, no state given), TINK id 1.
    assert_eq!(
        keys::parse_public_key(&json).unwrap(),
        (k1.clone(), Prefix::Tink(1))
    );
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["primaryKeyId"], 1);
    let ids: Vec<_> = v["key"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["keyId"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2]);
    // A client encrypting to the published keyset's primary gets through.
    let sealed = envelope::seal(&k1, Prefix::Tink(1), b"ACCT-1", b"{}").unwrap();
    let res = gw
        .encrypted_post("/1/upload", "ACCT-1", sealed)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let pem = gw
        .client
        .get(format!("{url}?format=pem"))
        .send()
        .await
        .unwrap();
    assert_eq!(pem.headers()["content-type"], "application/x-pem-file");
    let pem = pem.text().await.unwrap();
    let want = keys::public_key_pem(&k1).unwrap() + &keys::public_key_pem(&k2).unwrap();
    assert_eq!(pem, want);
    let by_accept = gw
        .client
        .get(&url)
        .header("accept", "application/x-pem-file")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(by_accept, want);

    let raw = gw
        .client
        .get(format!("{url}?format=raw"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        raw,
        format!(
            "{}\n{}\n",
            keys::public_key_raw_base64(&k1),
            keys::public_key_raw_base64(&k2)
        )
    );
    let bad = gw
        .client
        .get(format!("{url}?format=jwk"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        gw.upstream.count(),
        1,
        "only the encrypted request went upstream"
    );
}

#[tokio::test]
async fn a_clients_request_id_goes_upstream_and_comes_back() {
    let gw = Gateway::start().await;
    let sealed = gw.seal(1, true, "ACCT-1", b"{}");
    let res = gw
        .encrypted_post("/1/upload", "ACCT-1", sealed)
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "trace-abc-123");
    assert_eq!(gw.upstream.last().headers["x-request-id"], "trace-abc-123");
    // An unusable one (control characters) is replaced, on both sides alike.
    let res = gw
        .client
        .get(format!("{}/1/profile", gw.url))
        .header("x-request-id", "bad\tid")
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(gw.upstream.last().headers["x-request-id"], id.as_str());
}

#[tokio::test]
async fn an_upstream_that_never_accepts_the_connection_is_a_502_after_the_connect_timeout() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a connect
    // to it neither succeeds nor fails until the connector gives up.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }
    // The response timeout is long: only the connect timeout can answer in time.
    let gw = Gateway::start_with(Options {
        upstream: Some(addr),
        upstream_timeout_ms: 60_000,
        extra: "upstream_connect_timeout_ms = 300".into(),
        ..Options::default()
    })
    .await;
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        gw.encrypted_post("/1/upload", "ACCT-1", gw.seal(1, true, "ACCT-1", PROFILE))
            .send(),
    )
    .await
    .expect("no answer within 20 s: the connect timeout did not apply")
    .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(error_code(res).await.0, 5001);
    drop((listener, fillers));
}

/// The key publication's own refusals are gateway errors like any other: JSON with a
/// stable code, from the one place errors become responses.
#[tokio::test]
async fn key_publication_refusals_carry_a_stable_code() {
    let gw = Gateway::start().await;
    let res = gw
        .client
        .get(format!("{}/.well-known/hpke-keys?format=xml", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(v["status"], "fail");
    assert_eq!(v["code"], 4018, "{v}");
    let res = gw
        .client
        .get(format!("{}/.well-known/pgp-keys/NO-SUCH-ACCOUNT", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let v: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(v["code"], 4019, "{v}");
}

/// A configured account header is named in 4001 as the configuration spells it.
#[tokio::test]
async fn a_custom_account_header_is_named_as_configured() {
    let gw = Gateway::start_with(Options {
        extra: "account_header = \"X-Tenant-ID\"".into(),
        ..Options::default()
    })
    .await;
    let res = gw
        .client
        .post(format!("{}/1/upload", gw.url))
        .header("Content-Type", MEDIA)
        .header("Accept", MEDIA)
        .body(gw.seal(1, true, "ACCT-1", PROFILE))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res).await,
        (4001, "missing X-Tenant-ID header".to_owned())
    );
}

/// A post-quantum account beside the classical ones: a request sealed with X-Wing to
/// server key 3 (`suite = "xwing-aes-256-gcm"`), TINK-prefixed and RAW, reaches the
/// upstream as plaintext, and the answer is sealed with X-Wing to ACCT-PQ's Tink keyset;
/// classical requests keep working on the same gateway; an X-Wing envelope cut short or
/// sent to a classical key is the one `decryption failed` (4008); ACCT-PQ requires
/// X-Wing (`request_suites`), so a valid X25519 request to it is refused with 4020 and
/// not forwarded; the next request is fine.
#[tokio::test]
async fn xwing_server_key_and_account_round_trip_beside_x25519() {
    let gw = Gateway::start_with(Options {
        xwing: true,
        ..Options::default()
    })
    .await;
    for tink in [true, false] {
        let sealed = gw.seal(3, tink, "ACCT-PQ", PROFILE);
        assert_eq!(
            sealed.len(),
            usize::from(tink) * 5 + 1120 + PROFILE.len() + 16
        );
        let res = gw
            .encrypted_post("/1/upload", "ACCT-PQ", sealed)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body = res.bytes().await.unwrap();
        // RAW keyset: no prefix; an X-Wing encapsulation.
        assert_eq!(body.len(), 1120 + PROFILE.len() + 16);
        assert_eq!(open_with(&gw.keys.acct_pq, "ACCT-PQ", &body), PROFILE);
        assert_eq!(&gw.upstream.last().body[..], PROFILE);
    }
    gw.assert_good_request_works().await;
    let good = gw.seal(3, false, "ACCT-PQ", PROFILE);
    let tinked = gw.seal(3, true, "ACCT-PQ", PROFILE);
    // Truncated at every length class: nothing, inside the Tink prefix, inside an
    // X25519-sized encapsulation, inside X-Wing's 1,120 bytes, inside the tag, one short.
    let mut bad: Vec<Vec<u8>> = [0, 1, 4, 5, 31, 32, 33, 48, 1119, 1120, 1121, 1135, 1136]
        .into_iter()
        .chain([good.len() - 1])
        .map(|n| good[..n].to_vec())
        .collect();
    bad.extend([5 + 1119, 5 + 1120, 5 + 1135, tinked.len() - 1].map(|n| tinked[..n].to_vec()));
    bad.extend([
        // A wrong-length encapsulation: one byte taken out of X-Wing's 1,120, one added.
        [&good[..1119], &good[1120..]].concat(),
        [&good[..1120], &[0u8][..], &good[1120..]].concat(),
        // An X-Wing envelope to the X25519 key 1 (TINK prefix naming key 1).
        [&[1u8, 0, 0, 0, 1][..], &good[..]].concat(),
    ]);
    for bad in bad {
        let len = bad.len();
        let reads_as_text = std::str::from_utf8(&bad[..len.min(64)])
            .is_ok_and(|t| !t.chars().any(|c| c.is_control() && !"\t\r\n".contains(c)));
        let forwarded = gw.upstream.count();
        let res = gw
            .encrypted_post("/1/upload", "ACCT-PQ", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{len} bytes");
        let (code, error) = error_code(res).await;
        if reads_as_text {
            // Empty, or a few random bytes that happen to be text: "not encrypted".
            assert_eq!(code, 4006, "{len}");
        } else {
            assert_eq!((code, error.as_str()), (4008, "decryption failed"), "{len}");
        }
        assert_eq!(gw.upstream.count(), forwarded, "{len}: not forwarded");
        gw.assert_good_request_works().await;
    }
    let before = gw.upstream.count();
    // Policy: a classical request that opens is refused, by its own code.
    for tink in [true, false] {
        let res = gw
            .encrypted_post("/1/upload", "ACCT-PQ", gw.seal(1, tink, "ACCT-PQ", PROFILE))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        let (code, error) = error_code(res).await;
        assert_eq!(code, 4020);
        assert_eq!(
            error,
            "this account does not accept requests sealed with suite x25519-aes-256-gcm"
        );
    }
    assert_eq!(gw.upstream.count(), before, "nothing forwarded");
    let res = gw
        .encrypted_post("/1/upload", "ACCT-PQ", good)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Publication states each key's suite; `?suite=` gives a post-quantum client a
    // keyset whose primary is the X-Wing key.
    let keys = |query: &str| reqwest::get(format!("{}/.well-known/hpke-keys{query}", gw.url));
    // By default only the primary's KEM: a classical Tink client is not handed an
    // X-Wing key it may not be able to build; `?suite=all` lists every live key.
    let suites_of = |res: &reqwest::Response| {
        res.headers()["hpke-key-suites"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let suites = suites_of(&keys("").await.unwrap());
    assert!(
        suites.starts_with("1=x25519-aes-256-gcm") && !suites.contains("xwing"),
        "{suites}"
    );
    let suites = suites_of(&keys("?suite=all").await.unwrap());
    assert!(
        suites.starts_with("1=x25519-aes-256-gcm, ") && suites.contains("3=xwing-aes-256-gcm"),
        "{suites}"
    );
    let res = keys("?suite=xwing-aes-256-gcm").await.unwrap();
    assert_eq!(res.headers()["hpke-key-suites"], "3=xwing-aes-256-gcm");
    let keyset = res.bytes().await.unwrap();
    let (pk, prefix) = hpke_gateway::keys::parse_public_key(&keyset).unwrap();
    assert_eq!(
        (pk.suite(), prefix),
        (Suite::XWING_AES_256_GCM, Prefix::Tink(3))
    );
    let raw = keys("?suite=xwing-aes-256-gcm&format=raw")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(raw.lines().count(), 1);
    assert_eq!(B64.decode(raw.trim()).unwrap().len(), 1216);
    for (query, status, code) in [
        ("?suite=xwing-aes-128-gcm", 400, 4018),
        ("?suite=x25519-chacha20-poly1305", 404, 4019),
    ] {
        let res = keys(query).await.unwrap();
        assert_eq!(res.status(), status, "{query}");
        assert_eq!(error_code(res).await.0, code, "{query}");
    }
}
