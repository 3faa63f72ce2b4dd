//! Oblivious HTTP's encapsulation (RFC 9458) through the crate's own code: the RFC's
//! worked example (Appendix A) reproduced byte for byte, every suite both ways, and
//! hostile input. The example's values are copied into tests/vectors/ohttp/ with their
//! provenance (the file's `_source`).

use hpke_envelope::ohttp::{self, Error};
use hpke_envelope::{Aead, PrivateKey, Suite};
use serde_json::Value;

const APPENDIX_A: &str = include_str!("vectors/ohttp/rfc9458-appendix-a.json");

fn example() -> Value {
    serde_json::from_str(APPENDIX_A).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const AES_128: Suite = Suite::X25519_AES_128_GCM;

#[test]
fn rfc9458_appendix_a_key_configuration() {
    let v = example();
    let sk = PrivateKey::from_bytes_for(AES_128, &hex(&v["skR"])).unwrap();
    assert_eq!(sk.public_key().as_bytes(), hex(&v["pkR"]).as_slice());
    let config = ohttp::key_config(
        1,
        &sk.public_key(),
        &[Aead::Aes128Gcm, Aead::ChaCha20Poly1305],
    );
    assert_eq!(config, hex(&v["key_config"]));
    // application/ohttp-keys: each configuration behind its two-byte length.
    let list = ohttp::key_configs(&[config.clone(), config.clone()]);
    assert_eq!(list.len(), 2 * (2 + config.len()));
    assert_eq!(
        &list[..2],
        &u16::try_from(config.len()).unwrap().to_be_bytes()
    );
}

#[test]
fn rfc9458_appendix_a_request_and_response_reproduce_exactly() {
    let v = example();
    let sk_r = PrivateKey::from_bytes_for(AES_128, &hex(&v["skR"])).unwrap();
    let sk_e = PrivateKey::from_bytes_for(AES_128, &hex(&v["skE"])).unwrap();
    let request = hex(&v["encapsulated_request"]);

    // The gateway's side: the published request opens to the published Binary HTTP
    // request, and the published response nonce gives the published response.
    let header = ohttp::parse_header(&request).unwrap();
    assert_eq!(header.key_id, 1);
    assert_eq!(header.suite, AES_128);
    let (bhttp, response_key) = ohttp::open_request(&sk_r, &request).unwrap();
    assert_eq!(bhttp, hex(&v["bhttp_request"]));
    let response = response_key
        .seal_with_nonce(&hex(&v["bhttp_response"]), &hex(&v["response_nonce"]))
        .unwrap();
    assert_eq!(response, hex(&v["encapsulated_response"]));

    // The client's side, with the example's ephemeral key: the same request bytes, and the
    // published response opens.
    let (sealed, client) = ohttp::seal_request_with_ephemeral(
        1,
        &sk_r.public_key(),
        AES_128,
        &hex(&v["bhttp_request"]),
        &sk_e,
    )
    .unwrap();
    assert_eq!(sealed, request);
    assert_eq!(
        client
            .open_response(&hex(&v["encapsulated_response"]))
            .unwrap(),
        hex(&v["bhttp_response"])
    );
}

#[test]
fn every_suite_round_trips() {
    for suite in [
        Suite::X25519_AES_128_GCM,
        Suite::X25519_AES_256_GCM,
        Suite::X25519_CHACHA20_POLY1305,
        Suite::XWING_AES_256_GCM,
        Suite::XWING_AES_256_GCM.with_aead(Aead::Aes128Gcm),
        Suite::XWING_AES_256_GCM.with_aead(Aead::ChaCha20Poly1305),
    ] {
        // A key of the suite's KEM serves every AEAD (its configuration lists them all).
        let key = PrivateKey::generate_for(suite.kem.default_suite());
        let (request, client) =
            ohttp::seal_request(7, &key.public_key(), suite, b"inner request").unwrap();
        assert_eq!(ohttp::parse_header(&request).unwrap().suite, suite);
        let (inner, response_key) = ohttp::open_request(&key, &request).unwrap();
        assert_eq!(inner, b"inner request");
        let response = response_key.seal(b"inner response").unwrap();
        assert_eq!(client.open_response(&response).unwrap(), b"inner response");
        // A second response from the same request uses a fresh nonce.
        let again = response_key.seal(b"inner response").unwrap();
        assert_ne!(again, response);
    }
}

#[test]
fn hostile_requests_and_responses_are_refused_without_a_panic() {
    let key = PrivateKey::generate();
    let suite = Suite::X25519_AES_256_GCM;
    let (request, client) = ohttp::seal_request(1, &key.public_key(), suite, b"GET /").unwrap();

    // Truncated at every length: malformed below header + enc + tag, else undecryptable.
    for len in 0..request.len() {
        let err = ohttp::open_request(&key, &request[..len]).unwrap_err();
        let short = len < ohttp::HEADER_LEN + 32 + 16;
        assert_eq!(
            err,
            if short {
                Error::Malformed
            } else {
                Error::Decryption
            },
            "{len}"
        );
    }
    // Every single-bit flip after the key id is refused (a header flip changes the
    // algorithms or the info; a body flip fails the tag).
    for i in 1..request.len() {
        let mut bad = request.clone();
        bad[i] ^= 0x01;
        assert!(ohttp::open_request(&key, &bad).is_err(), "byte {i}");
    }
    // Unknown KEM, KDF, AEAD.
    for (at, value) in [(1, 0x00), (3, 0x02), (5, 0x7f)] {
        let mut bad = request.clone();
        bad[at] = 0x00;
        bad[at + 1] = value;
        assert_eq!(
            ohttp::open_request(&key, &bad).unwrap_err(),
            Error::Unsupported
        );
    }
    // An X-Wing header to an X25519 key.
    let pq = PrivateKey::generate_for(Suite::XWING_AES_256_GCM);
    let (pq_request, _) =
        ohttp::seal_request(1, &pq.public_key(), Suite::XWING_AES_256_GCM, b"x").unwrap();
    assert_eq!(
        ohttp::open_request(&key, &pq_request).unwrap_err(),
        Error::Unsupported
    );
    // Another key with the same id: decryption failed.
    let other = PrivateKey::generate();
    assert_eq!(
        ohttp::open_request(&other, &request).unwrap_err(),
        Error::Decryption
    );

    // Responses: truncated, flipped, or for another request.
    let (_, response_key) = ohttp::open_request(&key, &request).unwrap();
    let response = response_key.seal(b"200").unwrap();
    for len in 0..response.len() {
        assert!(client.open_response(&response[..len]).is_err(), "{len}");
    }
    for i in 0..response.len() {
        let mut bad = response.clone();
        bad[i] ^= 0x80;
        assert_eq!(
            client.open_response(&bad).unwrap_err(),
            Error::Decryption,
            "byte {i}"
        );
    }
    let (_, other_client) = ohttp::seal_request(1, &key.public_key(), suite, b"GET /").unwrap();
    assert_eq!(
        other_client.open_response(&response).unwrap_err(),
        Error::Decryption
    );
}
