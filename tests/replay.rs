//! The replay defence: a Tink-format request sent again within its account's
//! `replay_window_s` is refused; Oblivious HTTP and Tink-format replays are refused
//! across two gateway processes sharing a real Valkey/Redis (`redis-server`, started
//! here on 127.0.0.1), and with the store stopped the documented policy holds.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hpke_gateway::envelope::{self, PublicKey, Suite, ohttp};
use support::served::Served;
use support::{Gateway, Options};

/// An account that remembers its requests' encapsulated keys for 30 s (ACCT-1's key).
const REPLAY_ACCOUNT: &str = "\n[[accounts]]\nid = \"ACCT-REPLAY\"\nencryption = true\npublic_keys = [\"acct-1.pub.pem\"]\nreplay_window_s = 30\n";

/// POSTs a sealed body to /1/upload for ACCT-REPLAY.
async fn post_replay(gw: &Gateway, sealed: Vec<u8>) -> reqwest::Response {
    gw.encrypted_post("/1/upload", "ACCT-REPLAY", sealed)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tink_request_sent_again_within_its_accounts_window_is_refused() {
    let gw = Gateway::start_with(Options {
        trailer: REPLAY_ACCOUNT.into(),
        ..Options::default()
    })
    .await;
    let plaintext = br#"{"d":[{"identity":"once"}]}"#;
    let sealed = gw.seal(1, true, "ACCT-REPLAY", plaintext);
    // A forgery carrying the real request's encapsulated key (its tag broken) does not
    // decrypt, so it cannot take the real request's place in the store.
    let mut forged = sealed.clone();
    *forged.last_mut().unwrap() ^= 1;
    let res = post_replay(&gw, forged).await;
    assert_eq!(support::error_code(res).await.0, 4008);

    let res = post_replay(&gw, sealed.clone()).await;
    assert_eq!(res.status(), 200);
    let body = res.bytes().await.unwrap();
    assert_eq!(
        support::open_with(&gw.keys.acct1, "ACCT-REPLAY", &body),
        plaintext
    );
    assert_eq!(gw.upstream.count(), 1);

    let res = post_replay(&gw, sealed.clone()).await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        support::error_code(res).await,
        (4023, "replayed request".into())
    );
    assert_eq!(gw.upstream.count(), 1, "a replay is never forwarded");
    // The Tink prefix is not bound into HPKE: the same envelope without it still opens,
    // and is the same request (a hostile review found it taken for a new one).
    let res = post_replay(&gw, sealed[5..].to_vec()).await;
    assert_eq!(support::error_code(res).await.0, 4023);
    assert_eq!(gw.upstream.count(), 1);

    // The same plaintext sealed again (a new encapsulated key) is a new request, and an
    // account without the window forwards a repeated ciphertext as before.
    let again = gw.seal(1, false, "ACCT-REPLAY", plaintext);
    let res = post_replay(&gw, again.clone()).await;
    assert_eq!(res.status(), 200);
    // ... and a RAW one with a prefix added is the same request too.
    let prefixed = [&[1u8, 0, 0, 0, 1][..], &again].concat();
    let res = post_replay(&gw, prefixed).await;
    assert_eq!(support::error_code(res).await.0, 4023);
    let plain = gw.seal(1, true, "ACCT-1", plaintext);
    for _ in 0..2 {
        let res = gw
            .encrypted_post("/1/upload", "ACCT-1", plain.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(gw.upstream.count(), 4);
}

/// A `redis-server` on 127.0.0.1 with nothing saved to disk; killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    fn start(port: u16) -> Self {
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        server.restart();
        server
    }

    /// Starts it (again, on the same port) and waits until it answers PING.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) is not installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        tcp.write_all(b"PING\r\n").is_ok()
            && tcp.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An Oblivious HTTP request sealed to `server`, and its client context
/// (OHTTP key id 1, server key 1's default), for the upstream at `target`.
fn ohttp_request(
    server: &PublicKey,
    target: SocketAddr,
    method: &str,
    path: &str,
) -> (Vec<u8>, ohttp::ClientRequest) {
    let mut m = bhttp::Message::request(
        method.as_bytes().to_vec(),
        b"http".to_vec(),
        target.to_string().into_bytes(),
        path.as_bytes().to_vec(),
    );
    m.put_header(
        "date",
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    );
    if method == "POST" {
        m.put_header("content-type", "application/json");
        m.write_content(b"{\"n\":1}");
    }
    let mut inner = Vec::new();
    m.write_bhttp(bhttp::Mode::KnownLength, &mut inner).unwrap();
    ohttp::seal_request(1, server, Suite::X25519_AES_128_GCM, &inner).unwrap()
}

/// Posts an encapsulated request; the inner response's status and body.
async fn post_ohttp(
    served: &Served,
    request: &[u8],
    client: &ohttp::ClientRequest,
) -> (u16, Vec<u8>) {
    let res = support::post_ohttp(
        &served.client,
        &served.url,
        "message/ohttp-req",
        request.to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let plain = client.open_response(&res.bytes().await.unwrap()).unwrap();
    let message = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&plain)).unwrap();
    let status = message.control().status().unwrap().code();
    (status, message.content().to_vec())
}

fn code(body: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["code"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn replays_are_refused_across_two_replicas_sharing_redis_and_a_stopped_store_fails_closed() {
    let (upstream, up_addr) = support::Upstream::start().await;
    let port = support::unused_port().await.port();
    let mut redis = RedisServer::start(port);
    let tables = format!(
        "[ohttp]\nenabled = true\nallowed_targets = [\"http://{up_addr}\"]\n\n[replay]\nstore = \"{}\"\nstore_timeout_ms = 300\n",
        redis.url()
    );
    let a = Served::start(up_addr, &tables).await;
    // ACCT-1 remembers its Tink-format requests too; replica B reads the same files.
    a.reload_after(|| {
        a.edit_config(
            "public_keys = [\"acct-1.pub.pem\"]",
            "public_keys = [\"acct-1.pub.pem\"]\nreplay_window_s = 30",
        );
    })
    .await;
    let b = Served::spawn(&a.config_path(), &[], &[]);

    // Oblivious HTTP: answered by A, replayed to B (and to A) → refused, not forwarded.
    let (server, prefix) = a.published_primary().await;
    let ohttp_to = |method, path| ohttp_request(&server, up_addr, method, path);
    let (request, client) = ohttp_to("POST", "/1/upload");
    assert_eq!(post_ohttp(&a, &request, &client).await.0, 200);
    assert_eq!(upstream.count(), 1);
    for replica in [&b, &a] {
        let (status, body) = post_ohttp(replica, &request, &client).await;
        assert_eq!((status, code(&body)), (400, 4023));
    }
    assert_eq!(upstream.count(), 1);

    // The Tink format, for an account with replay_window_s: the same.
    let sealed = envelope::seal(&server, prefix, b"ACCT-1", b"{\"d\":[]}").unwrap();
    assert_eq!(a.post_sealed("ACCT-1", sealed.clone()).await.0, 200);
    let (status, body) = b.post_sealed("ACCT-1", sealed).await;
    assert_eq!((status, code(&body)), (400, 4023));
    assert_eq!(upstream.count(), 2);

    // The store stops. The default policy: a POST is refused (503, code 5007, inside the
    // encapsulation for OHTTP), a GET goes on unchecked; nothing hangs.
    redis.stop();
    let started = Instant::now();
    let (request, client) = ohttp_to("POST", "/1/upload");
    let (status, body) = post_ohttp(&b, &request, &client).await;
    assert_eq!((status, code(&body)), (503, 5007));
    let sealed = envelope::seal(&server, prefix, b"ACCT-1", b"{\"d\":[]}").unwrap();
    let (status, body) = a.post_sealed("ACCT-1", sealed).await;
    assert_eq!((status, code(&body)), (503, 5007));
    assert_eq!(
        upstream.count(),
        2,
        "nothing non-idempotent forwarded unchecked"
    );
    let (request, client) = ohttp_to("GET", "/status/200");
    assert_eq!(post_ohttp(&a, &request, &client).await.0, 200);
    assert_eq!(upstream.count(), 3);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    a.wait_log("replay store unreachable", 1).await;

    // The store comes back: both replicas reconnect by themselves.
    redis.restart();
    for replica in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (request, client) = ohttp_to("POST", "/1/upload");
            let (status, _) = post_ohttp(replica, &request, &client).await;
            if status == 200 {
                break;
            }
            assert_eq!(status, 503);
            assert!(Instant::now() < deadline, "no reconnection to the store");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    a.wait_log("replay store reachable again", 1).await;
}

/// A request the gateway refuses for want of a concurrency slot (503, `Retry-After`)
/// never enters the store (the slot is taken first), so the client's retry of the same
/// bytes is not a replay (a hostile review found it refused as one); once answered, the
/// same bytes are.
#[tokio::test]
async fn a_request_refused_for_want_of_a_slot_may_be_retried_as_is() {
    let gw = Gateway::start_with(Options {
        extra: "max_concurrent_requests = 1\n".into(),
        trailer: REPLAY_ACCOUNT.into(),
        ..Options::default()
    })
    .await;
    let slow = gw.seal(1, true, "ACCT-REPLAY", b"{}");
    let busy = gw.encrypted_post("/slow", "ACCT-REPLAY", slow).send();
    let busy = tokio::spawn(busy);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sealed = gw.seal(1, true, "ACCT-REPLAY", br#"{"d":[]}"#);
    let res = post_replay(&gw, sealed.clone()).await;
    assert_eq!(support::error_code(res).await.0, 5004);
    assert_eq!(busy.await.unwrap().unwrap().status(), 200);
    let res = post_replay(&gw, sealed.clone()).await;
    assert_eq!(res.status(), 200);
    let res = post_replay(&gw, sealed).await;
    assert_eq!(support::error_code(res).await.0, 4023);
}
