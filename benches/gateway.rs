//! The middleware in process (the real tower stack over an in-memory upstream service,
//! no sockets), beside a plaintext pass-through baseline; a whole 1 KiB round trip
//! (client seal, gateway, client open) in the Tink format against the same through
//! Oblivious HTTP's gateway resource (issue 16's target: at most 1.2x); and the cost of
//! loading a configuration (20 accounts, 3 server keys), so a reload's cost is known.
//!
//! `cargo bench --bench gateway` (add `-- --quick` for a fast, rougher run).

use std::convert::Infallible;
use std::hint::black_box;

use axum::body::Body;
use bytes::Bytes;
use criterion::{Criterion, Throughput};
use hpke_gateway::accounts::{Account, Accounts, RecipientKey};
use hpke_gateway::config::Config;
use hpke_gateway::envelope::{self, Prefix, PrivateKey};
use hpke_gateway::keys::{self, ServerKey, ServerKeys};
use hpke_gateway::middleware::HpkeLayer;
use hpke_gateway::state::LiveState;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use tower::{Layer as _, Service as _, ServiceExt as _, service_fn};

const MEDIA: &str = "application/octet-stream+hpke";

/// Server key 1 and account ACCT-1, whose answers are sealed to `customer`.
fn one_account(server: &PrivateKey, customer: &PrivateKey) -> LiveState {
    LiveState::new(
        ServerKeys::new(vec![ServerKey::new(Some(1), server.clone())]),
        Accounts::new([Account::new(
            "ACCT-1".into(),
            true,
            vec![RecipientKey {
                key: customer.public_key(),
                prefix: Prefix::Raw,
            }],
        )]),
    )
}

fn middleware(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = PrivateKey::derive(&[1u8; 32]);
    let customer = PrivateKey::derive(&[2u8; 32]);
    let server_pk = server.public_key();
    let state = one_account(&server, &customer);
    // The in-memory upstream answers with a body as large as the request's, like an echo
    // of the same size, without copying it.
    let upstream = service_fn(|req: Request<Body>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Ok::<_, Infallible>(Response::new(Body::from(body)))
    });
    let svc = HpkeLayer::new(state).layer(upstream);

    let mut group = c.benchmark_group("middleware");
    for (name, size) in [("1KiB", 1024usize), ("1MiB", 1024 * 1024)] {
        let plain = Bytes::from(vec![b'{'; size]);
        let sealed =
            Bytes::from(envelope::seal(&server_pk, Prefix::Tink(1), b"ACCT-1", &plain).unwrap());
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("plaintext/{name}"), |b| {
            b.to_async(&rt).iter(|| {
                let mut svc = svc.clone();
                let body = plain.clone();
                async move {
                    let req = Request::post("/1/upload")
                        .header("content-type", "application/json")
                        .body(Body::from(body))
                        .unwrap();
                    let res = svc.ready().await.unwrap().call(req).await.unwrap();
                    black_box(res.into_body().collect().await.unwrap().to_bytes())
                }
            })
        });
        group.bench_function(format!("encrypted/{name}"), |b| {
            b.to_async(&rt).iter(|| {
                let mut svc = svc.clone();
                let body = sealed.clone();
                async move {
                    let req = Request::post("/1/upload")
                        .header("content-type", MEDIA)
                        .header("accept", MEDIA)
                        .header("x-clevertap-account-id", "ACCT-1")
                        .body(Body::from(body))
                        .unwrap();
                    let res = svc.ready().await.unwrap().call(req).await.unwrap();
                    assert_eq!(res.status(), 200);
                    black_box(res.into_body().collect().await.unwrap().to_bytes())
                }
            })
        });
    }
    group.finish();
}

/// One 1 KiB exchange end to end, in process: the client's seal, the gateway (HPKE
/// middleware, or the OHTTP resource with its Binary HTTP and replay check), an
/// in-memory upstream echoing the body, and the client's open.
fn roundtrip(c: &mut Criterion) {
    use hpke_gateway::envelope::ohttp;
    use hpke_gateway::ohttp::Resource;
    use hpke_gateway::replay::{Store, window::Replay};
    use std::sync::Arc;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = PrivateKey::derive(&[1u8; 32]);
    let customer = PrivateKey::derive(&[2u8; 32]);
    let server_pk = server.public_key();
    let state = || one_account(&server, &customer);
    let upstream = service_fn(|req: Request<Body>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Ok::<_, Infallible>(Response::new(Body::from(body)))
    });
    let tink = HpkeLayer::new(state()).layer(upstream);
    let resource = Resource::new(
        Arc::new(arc_swap::ArcSwap::from_pointee(state())),
        tower::util::BoxCloneSyncService::new(upstream),
        vec!["https://api.example.com".into()],
        Replay::new(
            std::time::Duration::from_secs(30),
            false,
            Arc::new(Store::memory()),
        ),
    );
    let plain = vec![b'{'; 1024];

    let mut group = c.benchmark_group("roundtrip_1KiB");
    group.bench_function("tink", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = tink.clone();
            let sealed = envelope::seal(&server_pk, Prefix::Raw, b"ACCT-1", &plain).unwrap();
            let customer = &customer;
            async move {
                let req = Request::post("/1/upload")
                    .header("content-type", MEDIA)
                    .header("accept", MEDIA)
                    .header("x-clevertap-account-id", "ACCT-1")
                    .body(Body::from(sealed))
                    .unwrap();
                let res = svc.ready().await.unwrap().call(req).await.unwrap();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                black_box(envelope::open(customer, b"ACCT-1", &body).unwrap())
            }
        })
    });
    group.bench_function("ohttp", |b| {
        b.to_async(&rt).iter(|| {
            let mut inner = bhttp::Message::request(
                b"POST".to_vec(),
                b"https".to_vec(),
                b"api.example.com".to_vec(),
                b"/1/upload".to_vec(),
            );
            inner.put_header("x-clevertap-account-id", "ACCT-1");
            inner.write_content(&plain);
            let mut encoded = Vec::new();
            inner
                .write_bhttp(bhttp::Mode::KnownLength, &mut encoded)
                .unwrap();
            let (sealed, client) =
                ohttp::seal_request(1, &server_pk, envelope::Suite::X25519_AES_256_GCM, &encoded)
                    .unwrap();
            let resource = resource.clone();
            async move {
                let req = Request::post("/.well-known/ohttp-gateway")
                    .header("content-type", "message/ohttp-req")
                    .body(Body::from(sealed))
                    .unwrap();
                let res = hpke_gateway::ohttp::gateway(axum::extract::State(resource), req).await;
                assert_eq!(res.status(), 200);
                let body = res.into_body().collect().await.unwrap().to_bytes();
                let answer = client.open_response(&body).unwrap();
                black_box(bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&answer)).unwrap())
            }
        })
    });
    group.finish();
}

fn config_loading(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut text =
        String::from("listen = \"127.0.0.1:8080\"\nupstream = \"http://127.0.0.1:9000\"\n");
    for id in 1..=3 {
        let path = dir.path().join(format!("server-{id}.pem"));
        keys::write_secret_file(
            &path,
            keys::private_key_pem(&PrivateKey::generate())
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        text.push_str(&format!(
            "[[server_keys]]\nid = {id}\nprivate_key = \"server-{id}.pem\"\n"
        ));
    }
    for n in 0..20 {
        let pk = PrivateKey::generate().public_key();
        let (file, contents) = match n % 3 {
            0 => (format!("acct-{n}.pem"), keys::public_key_pem(&pk).unwrap()),
            1 => (
                format!("acct-{n}.json"),
                keys::public_keyset_json(&pk, Prefix::Tink(n), 0),
            ),
            _ => (format!("acct-{n}.b64"), keys::public_key_raw_base64(&pk)),
        };
        std::fs::write(dir.path().join(&file), contents).unwrap();
        text.push_str(&format!(
            "[[accounts]]\nid = \"ACCT-{n}\"\nencryption = true\npublic_keys = [\"{file}\"]\n"
        ));
    }
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    c.bench_function("config/load_20_accounts_3_keys", |b| {
        b.iter(|| black_box(Config::load(&path).unwrap()))
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    middleware(&mut c);
    roundtrip(&mut c);
    config_loading(&mut c);
    c.final_summary();
}
