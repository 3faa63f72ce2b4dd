//! Shared test fixtures: a recording upstream on 127.0.0.1, and the real gateway
//! router (the one `serve` runs) built from a real config file with real key files.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hpke_gateway::config::Config;
use hpke_gateway::envelope::{self, Prefix, PrivateKey};
use hpke_gateway::keys::{self, ServerKey, ServerKeys};
use http_body_util::BodyExt as _;
use tokio::net::TcpListener;

pub mod served;

pub const MEDIA: &str = "application/octet-stream+hpke";
pub const ACCOUNT_HEADER: &str = "X-CleverTap-Account-Id";
pub const PASSCODE: &str = "s3cret-passcode";

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A real HTTP upstream that records every request.
///
/// Routes: `/slow` answers after 3 s; `/slowbody` sends its head at once and its body
/// 3 s later; `/status/NNN` answers with that status and an
/// `x-upstream: yes` header; `/big/N` answers N bytes; anything else echoes the
/// request body, or for an empty body answers a JSON line naming method and URI.
#[derive(Clone, Default)]
pub struct Upstream {
    pub seen: Arc<Mutex<Vec<Recorded>>>,
}

impl Upstream {
    pub async fn start() -> (Self, SocketAddr) {
        let up = Upstream::default();
        let app = Router::new().fallback(record).with_state(up.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (up, addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Recorded {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }
}

async fn record(State(up): State<Upstream>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let path = parts.uri.path().to_owned();
    up.seen.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if path == "/slowbody" {
        // The head at once, the body 3 s later.
        let body = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(b"{\"late\":true}"))
        });
        return axum::body::Body::from_stream(body).into_response();
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        return (
            status,
            [("x-upstream", "yes")],
            format!("{{\"status\":{code}}}"),
        )
            .into_response();
    }
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().unwrap();
        let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
        return data.into_response();
    }
    if body.is_empty() {
        let json = format!(r#"{{"method":"{}","uri":"{}"}}"#, parts.method, parts.uri);
        return ([("content-type", "application/json")], json).into_response();
    }
    ([("content-type", "application/json")], body).into_response()
}

/// Key material of one test gateway.
pub struct Keys {
    /// Server keys with ids 1 and 2.
    pub server: Vec<(u32, PrivateKey)>,
    /// ACCT-1's private key (its public key is given as SPKI PEM).
    pub acct1: PrivateKey,
    /// ACCT-TINK's private key (its public key is given as a TINK keyset, id 77).
    pub acct_tink: PrivateKey,
    /// ACCT-PQ's X-Wing private key (its public key is given as a RAW Tink keyset),
    /// used with [`Options::xwing`].
    pub acct_pq: PrivateKey,
}

/// A running gateway in front of a recording upstream.
pub struct Gateway {
    pub url: String,
    pub upstream: Upstream,
    pub keys: Keys,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

pub struct Options {
    pub max_encrypted_body_bytes: u64,
    pub max_response_body_bytes: u64,
    pub upstream_timeout_ms: u64,
    pub request_body_timeout_ms: u64,
    /// Point the gateway at an unused port instead of the recording upstream.
    pub upstream_down: bool,
    /// Point the gateway at this upstream instead of the recording one.
    pub upstream: Option<SocketAddr>,
    /// A base path on the upstream URL (`/api/v1`), empty for the root.
    pub upstream_base: String,
    /// More top-level configuration lines.
    pub extra: String,
    /// More tables, after the generated file's own (`[ohttp]`).
    pub trailer: String,
    /// Add server key 3 of suite `xwing-aes-256-gcm` and account ACCT-PQ, whose key is
    /// an X-Wing Tink keyset.
    pub xwing: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_encrypted_body_bytes: 10 * 1024 * 1024,
            max_response_body_bytes: 64 * 1024 * 1024,
            upstream_timeout_ms: 30_000,
            request_body_timeout_ms: 30_000,
            upstream_down: false,
            upstream: None,
            upstream_base: String::new(),
            extra: String::new(),
            trailer: String::new(),
            xwing: false,
        }
    }
}

pub fn write_private(dir: &Path, name: &str, key: &PrivateKey) -> PathBuf {
    let path = dir.join(name);
    keys::write_secret_file(&path, keys::private_key_pem(key).unwrap().as_bytes()).unwrap();
    path
}

/// Encrypts a PKCS#8 PEM key file with OpenSSL (PBES2, AES-256-CBC, as `openssl pkcs8
/// -topk8 -v2 aes-256-cbc` writes it); the output is mode 0600.
pub fn openssl_encrypt_pkcs8(input: &Path, output: &Path, passphrase: &str) {
    let status = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout"])
        .arg(format!("pass:{passphrase}"))
        .arg("-in")
        .arg(input)
        .arg("-out")
        .arg(output)
        .status()
        .expect("openssl is installed by .ci/run");
    assert!(status.success());
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(output, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// An address nothing listens on, for an upstream that must refuse connections: a port
/// that was free a moment ago (bound to 0 and released). Never for a listener of the
/// gateway: those are configured on port 0 and report their address (`served`).
pub async fn unused_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Writes a secret file (mode 0600), replacing any file there, as operators and
/// Kubernetes do: a new file renamed over it, so a reader never sees half of it.
pub fn write_secret(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    keys::write_secret_file(&tmp, contents).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

impl Gateway {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Self {
        let (upstream, up_addr) = Upstream::start().await;
        let up_addr = match (opts.upstream, opts.upstream_down) {
            (Some(addr), _) => addr,
            (None, true) => unused_port().await,
            (None, false) => up_addr,
        };
        let dir = tempfile::tempdir().unwrap();
        let pq = envelope::Suite::XWING_AES_256_GCM;
        let mut keys = Keys {
            server: vec![(1, PrivateKey::generate()), (2, PrivateKey::generate())],
            acct1: PrivateKey::generate(),
            acct_tink: PrivateKey::generate(),
            acct_pq: PrivateKey::generate_for(pq),
        };
        let mut pq_config = String::new();
        if opts.xwing {
            keys.server.push((3, PrivateKey::generate_for(pq)));
            std::fs::write(
                dir.path().join("acct-pq.pub.json"),
                keys::public_keyset_json(&keys.acct_pq.public_key(), Prefix::Raw, 5),
            )
            .unwrap();
            pq_config = "\n[[server_keys]]\nid = 3\nprivate_key = \"server-3.pem\"\nsuite = \"xwing-aes-256-gcm\"\n\n[[accounts]]\nid = \"ACCT-PQ\"\nencryption = true\npublic_keys = [\"acct-pq.pub.json\"]\nrequest_suites = [\"xwing-aes-256-gcm\"]\n".to_owned();
        }
        for (id, k) in &keys.server {
            write_private(dir.path(), &format!("server-{id}.pem"), k);
        }
        std::fs::write(
            dir.path().join("acct-1.pub.pem"),
            keys::public_key_pem(&keys.acct1.public_key()).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("acct-tink.pub.json"),
            keys::public_keyset_json(&keys.acct_tink.public_key(), Prefix::Tink(77), 0),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("acct-off.pub.b64"),
            keys::public_key_raw_base64(&PrivateKey::generate().public_key()),
        )
        .unwrap();
        let config = format!(
            r#"
listen = "127.0.0.1:0"
upstream = "http://{up_addr}{base}"
max_encrypted_body_bytes = {max_body}
max_response_body_bytes = {max_resp}
upstream_timeout_ms = {timeout}
request_body_timeout_ms = {body_timeout}
{extra}

[[server_keys]]
id = 1
private_key = "server-1.pem"

[[server_keys]]
id = 2
private_key = "server-2.pem"

[[accounts]]
id = "ACCT-1"
encryption = true
public_keys = ["acct-1.pub.pem"]

[[accounts]]
id = "ACCT-TINK"
encryption = true
public_keys = ["acct-tink.pub.json", "acct-1.pub.pem"]

[[accounts]]
id = "ACCT-OFF"
encryption = false
public_keys = ["acct-off.pub.b64"]
{pq_config}
{trailer}"#,
            max_body = opts.max_encrypted_body_bytes,
            max_resp = opts.max_response_body_bytes,
            timeout = opts.upstream_timeout_ms,
            body_timeout = opts.request_body_timeout_ms,
            extra = opts.extra,
            trailer = opts.trailer,
            base = opts.upstream_base,
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let config = Config::load(&path).unwrap();
        let app = hpke_gateway::app(config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The accept loop `serve` runs: its timeouts, connection limit and lingering close.
        tokio::spawn(hpke_gateway::server::serve_connections(
            listener,
            app,
            None,
            hpke_gateway::server::ConnectionTimeouts::default(),
            hpke_gateway::server::ConnectionLimits::default(),
            std::future::pending(),
        ));
        Gateway {
            url: format!("http://{addr}"),
            upstream,
            keys,
            dir,
            client: reqwest::Client::new(),
        }
    }

    pub fn server_public(&self, id: u32) -> envelope::PublicKey {
        self.keys
            .server
            .iter()
            .find(|(i, _)| *i == id)
            .unwrap()
            .1
            .public_key()
    }

    /// Seals to server key `id`, with a Tink prefix or RAW.
    pub fn seal(&self, id: u32, tink_prefix: bool, info: &str, plaintext: &[u8]) -> Vec<u8> {
        let prefix = if tink_prefix {
            Prefix::Tink(id)
        } else {
            Prefix::Raw
        };
        envelope::seal(&self.server_public(id), prefix, info.as_bytes(), plaintext).unwrap()
    }

    /// An encrypted POST with both headers, account and passcode.
    pub fn encrypted_post(
        &self,
        path: &str,
        account: &str,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .header("Content-Type", MEDIA)
            .header("Accept", MEDIA)
            .header(ACCOUNT_HEADER, account)
            .header("X-CleverTap-Passcode", PASSCODE)
            .body(body)
    }

    /// Sends one good encrypted request and checks the whole round trip.
    pub async fn assert_good_request_works(&self) {
        let before = self.upstream.count();
        let pt = br#"{"d":[{"identity":"ok"}]}"#;
        let res = self
            .encrypted_post("/1/upload", "ACCT-1", self.seal(1, true, "ACCT-1", pt))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body = res.bytes().await.unwrap();
        assert_eq!(open_with(&self.keys.acct1, "ACCT-1", &body), pt);
        assert_eq!(self.upstream.count(), before + 1);
    }
}

/// Opens a response envelope (RAW or TINK-prefixed) with a customer key.
pub fn open_with(key: &PrivateKey, info: &str, body: &[u8]) -> Vec<u8> {
    let ring = ServerKeys::new(vec![ServerKey::new(None, key.clone())]);
    ring.open(info.as_bytes(), body.into())
        .expect("response envelope did not open")
        .to_vec()
}

/// The `[ohttp]` table of the Oblivious HTTP tests: on, inner requests for
/// api.example.com.
pub const OHTTP_TABLE: &str =
    "[ohttp]\nenabled = true\nallowed_targets = [\"https://api.example.com\"]\n";

impl Gateway {
    /// A gateway with `opts` and [`OHTTP_TABLE`] after its tables.
    pub async fn start_ohttp(opts: Options) -> Self {
        Self::start_with(Options {
            trailer: OHTTP_TABLE.into(),
            ..opts
        })
        .await
    }
}

/// POSTs `body` as `media` (`message/ohttp-req` or `message/ohttp-chunked-req`) to the
/// Oblivious HTTP gateway resource of the gateway at `base`.
pub async fn post_ohttp(
    client: &reqwest::Client,
    base: &str,
    media: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client
        .post(format!("{base}/.well-known/ohttp-gateway"))
        .header("content-type", media)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Reads a gateway error body and returns its code, checking the shape.
pub async fn error_code(res: reqwest::Response) -> (u16, String) {
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/json",
        "gateway errors are JSON"
    );
    let v: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(v["status"], "fail");
    (
        v["code"].as_u64().unwrap() as u16,
        v["error"].as_str().unwrap().to_owned(),
    )
}

/// One HTTP/1.1 message head and its `Content-Length` body, read from a raw socket (the
/// scripted upstreams); `None` at the end or when the peer closes mid-message.
pub async fn read_http_message(tcp: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::io::AsyncReadExt::read(tcp, &mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[end..].to_vec();
    while body.len() < length {
        let n = tokio::io::AsyncReadExt::read(tcp, &mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}
