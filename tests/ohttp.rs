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

/// The published key configurations, as a client downloads them.
async fn key_configs(client: &reqwest::Client, url: &str) -> bytes::Bytes {
    let res = client
        .get(format!("{url}/.well-known/ohttp-keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap()
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

/// A gateway with Oblivious HTTP on, accepting inner requests for api.example.com.
async fn ohttp_gateway() -> Gateway {
    Gateway::start_ohttp(Options::default()).await
}

/// An inner request in known-length Binary HTTP, built with the `bhttp` crate.
fn inner_request(method: &str, authority: &str, path: &str, body: &[u8]) -> Vec<u8> {
    inner_request_in(bhttp::Mode::KnownLength, method, authority, path, body)
}

fn inner_request_in(
    mode: bhttp::Mode,
    method: &str,
    authority: &str,
    path: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m = bhttp::Message::request(
        method.as_bytes().to_vec(),
        b"https".to_vec(),
        authority.as_bytes().to_vec(),
        path.as_bytes().to_vec(),
    );
    m.put_header("x-clevertap-account-id", "ACCT-1");
    m.put_header("content-type", "application/json");
    m.write_content(body);
    let mut out = Vec::new();
    m.write_bhttp(mode, &mut out).unwrap();
    out
}

/// Seals `inner` to server key 1 (OHTTP key id 1) and posts it; returns the HTTP status,
/// and for a 200 the decrypted inner response.
async fn post(gw: &Gateway, inner: &[u8]) -> (u16, Option<bhttp::Message>, Vec<u8>) {
    let public = gw.keys.server[0].1.public_key();
    let (request, client) =
        ohttp::seal_request(1, &public, Suite::X25519_AES_128_GCM, inner).unwrap();
    let res = support::post_ohttp(&gw.client, &gw.url, "message/ohttp-req", request).await;
    let status = res.status().as_u16();
    let media = res.headers().get("content-type").cloned();
    let body = res.bytes().await.unwrap().to_vec();
    if status != 200 {
        return (status, None, body);
    }
    assert_eq!(media.unwrap(), "message/ohttp-res");
    let plain = client.open_response(&body).unwrap();
    let message = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&plain)).unwrap();
    (status, Some(message), body)
}

fn json_code(message: &bhttp::Message) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(message.content()).unwrap();
    v["code"].as_u64().unwrap()
}

#[tokio::test]
async fn an_oblivious_request_reaches_the_upstream_as_sent_and_its_answer_comes_back_sealed() {
    let gw = ohttp_gateway().await;
    let body = br#"{"d":[{"identity":"o"}]}"#;
    let (status, answer, _) = post(
        &gw,
        &inner_request("POST", "api.example.com", "/1/upload?batch=7", body),
    )
    .await;
    assert_eq!(status, 200);
    let answer = answer.unwrap();
    assert_eq!(answer.control().status().unwrap().code(), 200);
    assert_eq!(answer.content(), body, "the upstream echoes the body");
    assert_eq!(
        answer.header().get(b"content-type"),
        Some(&b"application/json"[..])
    );
    let seen = gw.upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/1/upload?batch=7");
    assert_eq!(seen.body, &body[..]);
    assert_eq!(seen.headers["x-clevertap-account-id"], "ACCT-1");
    assert_eq!(seen.headers["content-type"], "application/json");

    // Indeterminate-length Binary HTTP (RFC 9292 §3.2) is read as well.
    let inner = inner_request_in(
        bhttp::Mode::IndeterminateLength,
        "PUT",
        "api.example.com",
        "/1/profile",
        b"indeterminate",
    );
    assert_eq!(
        inner[0], 2,
        "framing indicator of an indeterminate-length request"
    );
    let (status, answer, _) = post(&gw, &inner).await;
    assert_eq!(status, 200);
    assert_eq!(answer.unwrap().content(), b"indeterminate");
    assert_eq!(gw.upstream.last().method, "PUT");

    // An upstream status is the inner status; the outer answer is still 200.
    let (status, answer, _) = post(
        &gw,
        &inner_request("GET", "api.example.com", "/status/404", b""),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer.unwrap().control().status().unwrap().code(), 404);
}

#[tokio::test]
async fn bad_oblivious_requests_get_the_rfcs_answers_and_the_next_one_works() {
    let gw = ohttp_gateway().await;
    let url = format!("{}/.well-known/ohttp-gateway", gw.url);
    let public = gw.keys.server[0].1.public_key();
    let good = inner_request("POST", "api.example.com", "/1/upload", b"{}");
    let (sealed, _) = ohttp::seal_request(1, &public, Suite::X25519_AES_128_GCM, &good).unwrap();

    // Outside the encapsulation: media type, framing, key id, decryption.
    let send = |media: &'static str, body: Vec<u8>| {
        gw.client
            .post(&url)
            .header("content-type", media)
            .body(body)
            .send()
    };
    let res = send("application/octet-stream", sealed.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    for len in [0, 3, 7, 20, 7 + 32 + 15] {
        let res = send("message/ohttp-req", sealed[..len].to_vec())
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "truncated to {len}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    let res = send("message/ohttp-req", vec![0; 10 * 1024 * 1024 + 1])
        .await
        .unwrap();
    assert_eq!(res.status(), 413, "over max_encrypted_body_bytes");
    let mut unknown_key = sealed.clone();
    unknown_key[0] = 77;
    let res = send("message/ohttp-req", unknown_key).await.unwrap();
    assert_eq!(res.status(), 422);
    let problem: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(problem["type"], hpke_gateway::ohttp::KEY_PROBLEM);
    let mut flipped = sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let res = send("message/ohttp-req", flipped).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(gw.upstream.count(), 0, "nothing was forwarded");

    // Inside: a target outside the allowlist (403, 4022) and a malformed inner request
    // (400, 4021), both sealed to the client and never forwarded.
    let (status, answer, _) = post(&gw, &inner_request("GET", "evil.example.net", "/", b"")).await;
    assert_eq!(status, 200);
    let answer = answer.unwrap();
    assert_eq!(answer.control().status().unwrap().code(), 403);
    assert_eq!(json_code(&answer), 4022);
    let (_, answer, _) = post(&gw, &[0x00, 0x03, 0xff, 0xff]).await;
    let answer = answer.unwrap();
    assert_eq!(answer.control().status().unwrap().code(), 400);
    assert_eq!(json_code(&answer), 4021);
    // A Binary HTTP request whose content length (63) runs past its end. (Cutting the
    // last bytes would not do: RFC 9292 §3.8 lets a known-length message end early.)
    let mut impossible = good.clone();
    let at = good.len() - 4;
    assert_eq!(&good[at..], [0x02, b'{', b'}', 0x00]);
    impossible[at] = 0x3f;
    let (_, answer, _) = post(&gw, &impossible).await;
    assert_eq!(json_code(&answer.unwrap()), 4021);
    assert_eq!(gw.upstream.count(), 0, "nothing was forwarded");

    // The next good one works.
    let (status, answer, _) = post(&gw, &good).await;
    assert_eq!(status, 200);
    assert_eq!(answer.unwrap().content(), b"{}");
    assert_eq!(gw.upstream.count(), 1);
}

/// The `ohttp` crate's own client (martinthomson/ohttp, on rust-hpke) against the
/// published key configurations and the gateway resource: a second implementation
/// nobody here wrote.
#[tokio::test]
async fn the_ohttp_crates_client_round_trips_through_the_gateway() {
    let gw = ohttp_gateway().await;
    let keys = key_configs(&gw.client, &gw.url).await;
    for (i, body) in [&b"first"[..], b"second"].into_iter().enumerate() {
        let client = ::ohttp::ClientRequest::from_encoded_config_list(&keys).unwrap();
        let inner = inner_request("POST", "api.example.com", "/1/upload", body);
        let (request, response_reader) = client.encapsulate(&inner).unwrap();
        let res = support::post_ohttp(&gw.client, &gw.url, "message/ohttp-req", request).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "message/ohttp-res");
        let sealed = res.bytes().await.unwrap();
        let plain = response_reader.decapsulate(&sealed).unwrap();
        let answer = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&plain)).unwrap();
        assert_eq!(answer.control().status().unwrap().code(), 200);
        assert_eq!(answer.content(), body);
        assert_eq!(gw.upstream.count(), i + 1);
        assert_eq!(gw.upstream.last().body, body);
    }
}

/// RFC 9458 §6.5: the same encapsulated request twice is answered once; a `Date` outside
/// the window gets the §6.5.2 answer, whose `Date` lets the client retry once.
#[tokio::test]
async fn replays_are_refused_and_a_stale_date_is_corrected_by_one_retry() {
    let gw = ohttp_gateway().await;
    let url = format!("{}/.well-known/ohttp-gateway", gw.url);
    let public = gw.keys.server[0].1.public_key();
    let send = |request: Vec<u8>| {
        gw.client
            .post(&url)
            .header("content-type", "message/ohttp-req")
            .body(request)
            .send()
    };
    let dated = |date: &str| {
        let mut m = bhttp::Message::request(
            b"POST".to_vec(),
            b"https".to_vec(),
            b"api.example.com".to_vec(),
            b"/1/upload".to_vec(),
        );
        m.put_header("date", date);
        m.write_content(b"{\"once\":true}");
        let mut out = Vec::new();
        m.write_bhttp(bhttp::Mode::KnownLength, &mut out).unwrap();
        out
    };
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    let (request, client) =
        ohttp::seal_request(1, &public, Suite::X25519_AES_128_GCM, &dated(&now)).unwrap();
    let first = send(request.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    let inner = client.open_response(&first.bytes().await.unwrap()).unwrap();
    let answer = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&inner)).unwrap();
    assert_eq!(answer.control().status().unwrap().code(), 200);
    assert_eq!(gw.upstream.count(), 1);

    // The relay sends it again: refused inside the encapsulation, not forwarded.
    let again = send(request).await.unwrap();
    assert_eq!(again.status(), 200);
    let inner = client.open_response(&again.bytes().await.unwrap()).unwrap();
    let answer = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&inner)).unwrap();
    assert_eq!(answer.control().status().unwrap().code(), 400);
    assert_eq!(json_code(&answer), 4023);
    assert_eq!(gw.upstream.count(), 1, "the replay was not forwarded");

    // A clock five minutes slow: 400 with the date problem and the gateway's Date.
    let slow =
        httpdate::fmt_http_date(std::time::SystemTime::now() - std::time::Duration::from_secs(300));
    let (request, client) =
        ohttp::seal_request(1, &public, Suite::X25519_AES_128_GCM, &dated(&slow)).unwrap();
    let res = send(request).await.unwrap();
    let inner = client.open_response(&res.bytes().await.unwrap()).unwrap();
    let answer = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&inner)).unwrap();
    assert_eq!(answer.control().status().unwrap().code(), 400);
    let problem: serde_json::Value = serde_json::from_slice(answer.content()).unwrap();
    assert_eq!(problem["type"], hpke_gateway::ohttp::DATE_PROBLEM);
    let server_date = std::str::from_utf8(answer.header().get(b"date").unwrap())
        .unwrap()
        .to_owned();
    assert_eq!(gw.upstream.count(), 1);
    // The retry: the same request with the gateway's Date, freshly encapsulated.
    let (request, client) =
        ohttp::seal_request(1, &public, Suite::X25519_AES_128_GCM, &dated(&server_date)).unwrap();
    let res = send(request).await.unwrap();
    let inner = client.open_response(&res.bytes().await.unwrap()).unwrap();
    let answer = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&inner)).unwrap();
    assert_eq!(answer.control().status().unwrap().code(), 200);
    assert_eq!(gw.upstream.count(), 2);
}

/// RFC 9292 edge cases an independent client (tests/interop/python/ohttp_client.py)
/// found: an indeterminate-length request without its empty trailer, an empty
/// authority with `Host`, the default port written out, and `Connection`-named fields.
#[tokio::test]
async fn binary_http_edge_cases_are_read_as_rfc_9292_says() {
    let gw = ohttp_gateway().await;
    let indeterminate = |body: &[u8]| {
        inner_request_in(
            bhttp::Mode::IndeterminateLength,
            "POST",
            "api.example.com",
            "/1/upload",
            body,
        )
    };
    // The trailer's terminator left off: the message is complete (RFC 9292 §3.8).
    let mut no_trailer = indeterminate(b"kept");
    assert_eq!(no_trailer.pop(), Some(0));
    let (_, answer, _) = post(&gw, &no_trailer).await;
    let answer = answer.unwrap();
    assert_eq!(answer.control().status().unwrap().code(), 200);
    assert_eq!(answer.content(), b"kept");
    assert_eq!(gw.upstream.count(), 1);
    // Cut inside the content (its terminator missing too): never taken for complete.
    let mut cut = indeterminate(b"partial");
    cut.truncate(cut.len() - 2);
    let (_, answer, _) = post(&gw, &cut).await;
    assert_eq!(json_code(&answer.unwrap()), 4021);
    assert_eq!(gw.upstream.count(), 1, "not forwarded");

    // An empty authority takes the Host field's; the default port may be written out.
    for (authority, host) in [("", "api.example.com"), ("api.example.com:443", "x")] {
        let mut m = bhttp::Message::request(
            b"GET".to_vec(),
            b"https".to_vec(),
            authority.as_bytes().to_vec(),
            b"/status/204".to_vec(),
        );
        m.put_header("host", host);
        m.put_header("connection", "x-hop");
        m.put_header("x-hop", "dropped");
        m.put_header("x-kept", "yes");
        let mut inner = Vec::new();
        m.write_bhttp(bhttp::Mode::KnownLength, &mut inner).unwrap();
        let (_, answer, _) = post(&gw, &inner).await;
        assert_eq!(
            answer.unwrap().control().status().unwrap().code(),
            204,
            "{authority:?}"
        );
        let seen = gw.upstream.last();
        assert!(
            !seen.headers.contains_key("x-hop"),
            "Connection-named field forwarded"
        );
        assert_eq!(seen.headers["x-kept"], "yes");
    }
}

/// The real binary counts each outcome in `hpke_gateway_ohttp_requests_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_counted_in_the_binarys_metrics() {
    let (_upstream, up_addr) = support::Upstream::start().await;
    let served = support::served::Served::start(up_addr, support::OHTTP_TABLE).await;
    let keys = key_configs(&served.client, &served.url).await;
    let url = format!("{}/.well-known/ohttp-gateway", served.url);
    for authority in ["api.example.com", "api.example.com", "elsewhere.example"] {
        let client = ::ohttp::ClientRequest::from_encoded_config_list(&keys).unwrap();
        let (request, _) = client
            .encapsulate(&inner_request("POST", authority, "/x", b"{}"))
            .unwrap();
        let res =
            support::post_ohttp(&served.client, &served.url, "message/ohttp-req", request).await;
        assert_eq!(res.status(), 200);
    }
    let res = served.client.post(&url).body("x").send().await.unwrap();
    assert_eq!(res.status(), 415);
    let metrics = served.metrics().await;
    for line in [
        "hpke_gateway_ohttp_requests_total{outcome=\"forwarded\"} 2",
        "hpke_gateway_ohttp_requests_total{outcome=\"target_not_allowed\"} 1",
        "hpke_gateway_ohttp_requests_total{outcome=\"bad_media_type\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

/// What a hostile review found: inner requests pass the same ingress as outer ones
/// (dot segments, underscored names), field names in any case, `Expect` refused, the
/// header section bounded, and a refused request never enters the replay cache.
#[tokio::test]
async fn inner_requests_meet_the_same_ingress_and_bounds_as_outer_ones() {
    let gw = Gateway::start_ohttp(Options {
        upstream_base: "/api".into(),
        ..Options::default()
    })
    .await;
    let with_fields = |path: &str, fields: &[(&str, &str)]| {
        let mut m = bhttp::Message::request(
            b"GET".to_vec(),
            b"https".to_vec(),
            b"api.example.com".to_vec(),
            path.as_bytes().to_vec(),
        );
        for (name, value) in fields {
            m.put_header(*name, *value);
        }
        let mut out = Vec::new();
        m.write_bhttp(bhttp::Mode::KnownLength, &mut out).unwrap();
        out
    };
    let inner_status = |answer: Option<bhttp::Message>| {
        let answer = answer.unwrap();
        (
            answer.control().status().unwrap().code(),
            serde_json::from_slice::<serde_json::Value>(answer.content())
                .ok()
                .and_then(|v| v["code"].as_u64()),
        )
    };
    // Dot segments in any spelling never reach the upstream under its base path.
    for path in ["/../admin", "/%2e%2e/admin", "/a/./b"] {
        let (_, answer, _) = post(&gw, &with_fields(path, &[])).await;
        assert_eq!(inner_status(answer), (400, Some(4016)), "{path}");
    }
    // Expect: RFC 9458 §5.1 says the gateway answers with an error.
    let (_, answer, _) = post(&gw, &with_fields("/x", &[("expect", "100-continue")])).await;
    assert_eq!(inner_status(answer), (400, Some(4021)));
    // More fields than an outer request may have.
    let many: Vec<(String, String)> = (0..101).map(|i| (format!("x-f{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let (_, answer, _) = post(&gw, &with_fields("/x", &many)).await;
    assert_eq!(inner_status(answer), (400, Some(4021)));
    assert_eq!(gw.upstream.count(), 0, "none of these was forwarded");

    // Underscored names are dropped (underscores_in_headers is off); a capitalised
    // Connection still names its fields; the request goes under the base path.
    let (_, answer, _) = post(
        &gw,
        &with_fields(
            "/x",
            &[
                ("x_twin", "1"),
                ("Connection", "x-hop"),
                ("x-hop", "1"),
                ("x-ok", "1"),
            ],
        ),
    )
    .await;
    assert_eq!(inner_status(answer).0, 200);
    let seen = gw.upstream.last();
    assert_eq!(seen.uri, "/api/x");
    assert!(!seen.headers.contains_key("x_twin"));
    assert!(!seen.headers.contains_key("x-hop"));
    assert_eq!(seen.headers["x-ok"], "1");

    // A capitalised Date is still the Date: five minutes slow is refused.
    let slow =
        httpdate::fmt_http_date(std::time::SystemTime::now() - std::time::Duration::from_secs(300));
    let (_, answer, _) = post(&gw, &with_fields("/x", &[("Date", &slow)])).await;
    let answer = answer.unwrap();
    assert_eq!(answer.control().status().unwrap().code(), 400);
    let problem: serde_json::Value = serde_json::from_slice(answer.content()).unwrap();
    assert_eq!(problem["type"], hpke_gateway::ohttp::DATE_PROBLEM);
}

/// Oblivious requests take a `max_concurrent_requests` slot like Tink-format ones: with
/// one slot busy (an inner request to a slow upstream path), the next is refused in the
/// clear (503, `Retry-After`), and once it is free the next one works.
#[tokio::test]
async fn oblivious_requests_take_a_concurrency_slot() {
    let gw = Gateway::start_ohttp(Options {
        extra: "max_concurrent_requests = 1\n".into(),
        ..Options::default()
    })
    .await;
    let public = gw.keys.server[0].1.public_key();
    let (slow, _) = ohttp::seal_request(
        1,
        &public,
        Suite::X25519_AES_128_GCM,
        &inner_request("GET", "api.example.com", "/slow", b""),
    )
    .unwrap();
    let url = format!("{}/.well-known/ohttp-gateway", gw.url);
    let (client, slow_url) = (gw.client.clone(), url.clone());
    let busy = tokio::spawn(async move {
        client
            .post(slow_url)
            .header("content-type", "message/ohttp-req")
            .body(slow)
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let inner = inner_request("POST", "api.example.com", "/1/upload", b"{}");
    let (request, _) = ohttp::seal_request(1, &public, Suite::X25519_AES_128_GCM, &inner).unwrap();
    let res = support::post_ohttp(&gw.client, &gw.url, "message/ohttp-req", request).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(busy.await.unwrap(), 200);
    let (status, answer, _) = post(&gw, &inner).await;
    assert_eq!(
        (status, answer.unwrap().control().status().unwrap().code()),
        (200, 200)
    );
}

/// The access log names the inner request's method and path at debug level only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inner_target_is_logged_at_debug_level_only() {
    let (_upstream, up_addr) = support::Upstream::start().await;
    let info = support::served::Served::start(up_addr, support::OHTTP_TABLE).await;
    let debug = support::served::Served::spawn(&info.config_path(), &[("RUST_LOG", "debug")], &[]);
    for served in [&info, &debug] {
        let keys = key_configs(&served.client, &served.url).await;
        let client = ::ohttp::ClientRequest::from_encoded_config_list(&keys).unwrap();
        let (request, _) = client
            .encapsulate(&inner_request(
                "PUT",
                "api.example.com",
                "/inner-secret?q=1",
                b"{}",
            ))
            .unwrap();
        let res =
            support::post_ohttp(&served.client, &served.url, "message/ohttp-req", request).await;
        assert_eq!(res.status(), 200);
        served
            .wait_log("path=\"/.well-known/ohttp-gateway\"", 1)
            .await;
    }
    assert_eq!(info.count_log("inner-secret"), 0, "at info level");
    debug.wait_log("oblivious request forwarded", 1).await;
    let line = debug.log_line("oblivious request forwarded");
    assert!(line.contains("inner_method=PUT"), "{line}");
    assert!(line.contains("inner_path=\"/inner-secret\""), "{line}");
    assert!(!line.contains("q=1"), "never the query: {line}");
}

/// An upstream answer larger than `max_response_body_bytes` is not sealed whole: the
/// client gets the gateway's encapsulated 502, and one within the limit comes back.
#[tokio::test]
async fn an_answer_over_the_response_limit_is_an_encapsulated_502() {
    let gw = Gateway::start_ohttp(Options {
        max_response_body_bytes: 20_000,
        ..Options::default()
    })
    .await;
    let (status, answer, _) = post(
        &gw,
        &inner_request("GET", "api.example.com", "/big/30000", b""),
    )
    .await;
    assert_eq!(status, 200);
    let answer = answer.unwrap();
    assert_eq!(answer.control().status().unwrap().code(), 502);
    assert_eq!(json_code(&answer), 5003, "a bad upstream answer");
    let (_, answer, _) = post(
        &gw,
        &inner_request("GET", "api.example.com", "/big/10000", b""),
    )
    .await;
    assert_eq!(answer.unwrap().content().len(), 10_000);
}
