//! Oblivious HTTP through the real router: the key configurations at
//! `/.well-known/ohttp-keys` (RFC 9458 §3, RFC 9540), read by a parser written here
//! against the RFCs' layout, and a request sealed to a published configuration opening
//! with the server key it names.

mod support;

use hpke_gateway::envelope::ohttp;
use hpke_gateway::envelope::{Aead, PublicKey, Suite};
use support::{Gateway, Options};

/// One key configuration as RFC 9458 §3.1 lays it out.
#[derive(Debug)]
struct Config {
    key_id: u8,
    kem: u16,
    public_key: Vec<u8>,
    algorithms: Vec<(u16, u16)>,
}

/// `application/ohttp-keys`: configurations, each after its 2-byte length (RFC 9540 §3).
fn parse(mut body: &[u8]) -> Vec<Config> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let (config, rest) = body[2..].split_at(len);
        body = rest;
        let key_id = config[0];
        let kem = u16::from_be_bytes([config[1], config[2]]);
        let npk = match kem {
            0x0020 => 32,
            0x647a => 1216,
            other => panic!("unexpected KEM {other:#06x}"),
        };
        let public_key = config[3..3 + npk].to_vec();
        let algs = &config[3 + npk..];
        let algs_len = usize::from(u16::from_be_bytes([algs[0], algs[1]]));
        assert_eq!(algs.len(), 2 + algs_len, "nothing after the algorithms");
        let algorithms = algs[2..]
            .chunks(4)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u16::from_be_bytes([c[2], c[3]]),
                )
            })
            .collect();
        out.push(Config {
            key_id,
            kem,
            public_key,
            algorithms,
        });
    }
    out
}

#[tokio::test]
async fn without_ohttp_the_keys_path_is_the_upstreams() {
    let gw = Gateway::start().await;
    let res = gw
        .client
        .get(format!("{}/.well-known/ohttp-keys", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_ne!(res.headers()["content-type"], "application/ohttp-keys");
    assert_eq!(gw.upstream.count(), 1, "forwarded like any path");
}

#[tokio::test]
async fn key_configurations_list_every_live_key_primary_first_in_every_aead() {
    let gw = Gateway::start_with(Options {
        xwing: true,
        trailer: "[ohttp]\nenabled = true\n".into(),
        ..Options::default()
    })
    .await;
    let res = gw
        .client
        .get(format!("{}/.well-known/ohttp-keys", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/ohttp-keys");
    let cache = res.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(cache.starts_with("public, max-age="), "{cache}");
    let configs = parse(&res.bytes().await.unwrap());
    assert_eq!(gw.upstream.count(), 0, "answered by the gateway");

    // Server keys 1 (primary), 2 and 3 (X-Wing): OHTTP key ids 1, 2, 3 by default.
    let ids: Vec<u8> = configs.iter().map(|c| c.key_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    let every_aead = vec![(1, 1), (1, 2), (1, 3)];
    for c in &configs {
        assert_eq!(c.algorithms, every_aead, "HKDF-SHA256 with each AEAD");
        let server = &gw
            .keys
            .server
            .iter()
            .find(|(id, _)| *id == u32::from(c.key_id))
            .unwrap()
            .1;
        assert_eq!(c.public_key, server.public_key().as_bytes());
    }
    assert_eq!(configs[2].kem, 0x647a);
    assert_eq!(configs[0].kem, 0x0020);

    // A request sealed to a published configuration opens with the key it names, in
    // any listed AEAD.
    for c in &configs {
        let suite = if c.kem == 0x647a {
            Suite::XWING_AES_256_GCM
        } else {
            Suite::X25519_AES_256_GCM
        };
        let public = PublicKey::from_bytes_for(suite, &c.public_key).unwrap();
        for aead in [Aead::Aes128Gcm, Aead::ChaCha20Poly1305] {
            let (request, _) =
                ohttp::seal_request(c.key_id, &public, suite.with_aead(aead), b"bhttp").unwrap();
            let header = ohttp::parse_header(&request).unwrap();
            let server = &gw
                .keys
                .server
                .iter()
                .find(|(id, _)| *id == u32::from(header.key_id))
                .unwrap()
                .1;
            let (inner, _) = ohttp::open_request(server, &request).unwrap();
            assert_eq!(inner, b"bhttp");
        }
    }
}
