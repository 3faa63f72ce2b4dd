//! TLS on both sides, with certificates from a throw-away CA (rcgen): the public
//! listener of the real binary (HTTP/2 and HTTP/1.1 by ALPN, certificate reload), and an
//! HTTPS upstream that requires a client certificate (mutual TLS), or is verified against
//! the system roots when no `[upstream_tls]` is set.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpke_gateway::config::Config;
use hpke_gateway::envelope::{self, Prefix, PrivateKey};
use hpke_gateway::keys;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use support::served::Served;
use support::{ACCOUNT_HEADER, MEDIA, Upstream, open_with, write_private, write_secret};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A throw-away certificate authority.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "hpke-gateway test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { ca }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A leaf certificate and its key, as PEM, for `localhost` and 127.0.0.1.
    fn leaf(&self, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }

    fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

type HttpsClient<B> = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    B,
>;

/// A client that trusts `pki`, offers only `version` by ALPN, and sends `localhost` to
/// 127.0.0.1.
fn client_of<B>(pki: &Pki, version: http::Version) -> HttpsClient<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(pki.client_config(&[]))
        .https_only();
    let connector = if version == http::Version::HTTP_2 {
        builder.enable_http2().wrap_connector(localhost_connector())
    } else {
        builder.enable_http1().wrap_connector(localhost_connector())
    };
    let mut client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    client.http2_only(version == http::Version::HTTP_2);
    client.build(connector)
}

fn localhost_connector() -> hyper_util::client::legacy::connect::HttpConnector {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http
}

fn https_client(pki: &Pki, version: http::Version) -> HttpsClient<String> {
    client_of(pki, version)
}

fn bytes_client(
    pki: &Pki,
    version: http::Version,
) -> HttpsClient<http_body_util::Full<bytes::Bytes>> {
    client_of(pki, version)
}

/// The leaf certificate the server at `addr` presents.
async fn presented_certificate(pki: &Pki, addr: SocketAddr) -> CertificateDer<'static> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki.client_config(&[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_speaks_h2_and_http1_and_reloads_its_certificate() {
    let pki = Pki::new();
    let (_up, up_addr) = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.leaf(ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
    write_secret(&dir.path().join("tls.key"), key.as_bytes());
    let server = PrivateKey::generate();
    write_private(dir.path(), "server-1.pem", &server);
    let customer = PrivateKey::generate();
    std::fs::write(
        dir.path().join("acct.pub.pem"),
        keys::public_key_pem(&customer.public_key()).unwrap(),
    )
    .unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
upstream = "http://{up_addr}"
admin_listen = "off"
reload_poll_ms = 100

[tls]
certificate = "tls.crt"
private_key = "tls.key"

[[server_keys]]
id = 1
private_key = "server-1.pem"

[[accounts]]
id = "ACCT-1"
encryption = true
public_keys = ["acct.pub.pem"]
"#
        ),
    )
    .unwrap();
    let served = Served::spawn(&config, &[], &[]);
    let listen = served.listen;
    let url = format!("https://localhost:{}", listen.port());

    for version in [http::Version::HTTP_2, http::Version::HTTP_11] {
        let client = https_client(&pki, version);
        let get = http::Request::get(format!("{url}/1/profile"))
            .body(String::new())
            .unwrap();
        let res = client.request(get).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), version);
        // An encrypted round trip over the same TLS client.
        let body = br#"{"d":[]}"#;
        let sealed =
            envelope::seal(&server.public_key(), Prefix::Tink(1), b"ACCT-1", body).unwrap();
        let post = http::Request::post(format!("{url}/1/upload"))
            .header("content-type", MEDIA)
            .header("accept", MEDIA)
            .header(ACCOUNT_HEADER, "ACCT-1")
            .body(http_body_util::Full::new(bytes::Bytes::from(sealed)))
            .unwrap();
        let res = bytes_client(&pki, version).request(post).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), version);
        let reply = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(open_with(&customer, "ACCT-1", &reply), body);
    }

    // A new certificate in the same files: new handshakes get it, without a restart.
    let old = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_eq!(presented_certificate(&pki, listen).await, old);
    let (cert2, key2) = pki.leaf(ExtendedKeyUsagePurpose::ServerAuth);
    write_secret(&dir.path().join("tls.key"), key2.as_bytes());
    std::fs::write(dir.path().join("tls.crt"), &cert2).unwrap();
    served.wait_log("configuration reloaded", 1).await;
    let new = CertificateDer::from_pem_slice(cert2.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The certificate and key change in two steps; the reload that sees both wins.
    while presented_certificate(&pki, listen).await != new {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTPS upstream on 127.0.0.1 that requires a client certificate from `pki`.
async fn mtls_upstream(pki: &Pki) -> SocketAddr {
    tls_upstream(pki, true).await
}

/// The recording upstream behind TLS with a certificate from `pki`, asking for a client
/// certificate from `pki` (and refusing a handshake without one if `require_client`).
async fn tls_upstream(pki: &Pki, require_client: bool) -> SocketAddr {
    let (cert, key) = pki.leaf(ExtendedKeyUsagePurpose::ServerAuth);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(pki.roots()),
        provider(),
    );
    let verifier = if require_client {
        verifier
    } else {
        verifier.allow_unauthenticated()
    }
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap(),
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (_up, plain) = Upstream::start().await;
    // The recording upstream behind a TLS terminator: our own serve_connections.
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| async move {
        let client = reqwest::Client::new();
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let res = client
            .request(parts.method, format!("http://{plain}{}", parts.uri))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.bytes().await.unwrap())
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(hpke_gateway::server::serve_connections(
        listener,
        app,
        Some(acceptor),
        hpke_gateway::server::ConnectionTimeouts::default(),
        hpke_gateway::server::ConnectionLimits::default(),
        std::future::pending(),
    ));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_verified_and_gets_the_client_certificate() {
    let pki = Pki::new();
    let upstream = mtls_upstream(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), pki.ca_pem()).unwrap();
    let (cert, key) = pki.leaf(ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(dir.path().join("client.crt"), cert).unwrap();
    write_secret(&dir.path().join("client.key"), key.as_bytes());
    let server = PrivateKey::generate();
    write_private(dir.path(), "server-1.pem", &server);
    let customer = PrivateKey::generate();
    std::fs::write(
        dir.path().join("acct.pub.pem"),
        keys::public_key_pem(&customer.public_key()).unwrap(),
    )
    .unwrap();
    let config = |upstream_tls: &str| {
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                r#"listen = "127.0.0.1:0"
upstream = "https://localhost:{port}"
{upstream_tls}

[[server_keys]]
id = 1
private_key = "server-1.pem"

[[accounts]]
id = "ACCT-1"
encryption = true
public_keys = ["acct.pub.pem"]
"#,
                port = upstream.port()
            ),
        )
        .unwrap();
        Config::load(&path).unwrap()
    };
    let serve = |config: Config| async move {
        let app = hpke_gateway::app(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    };

    // With the CA and the client certificate: through, both ways encrypted.
    let with_cert = serve(config(
        "[upstream_tls]\nca_bundle = \"ca.pem\"\nclient_certificate = \"client.crt\"\nclient_key = \"client.key\"",
    ))
    .await;
    let body = br#"{"d":[{"identity":"tls"}]}"#;
    let sealed = envelope::seal(&server.public_key(), Prefix::Raw, b"ACCT-1", body).unwrap();
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{with_cert}/1/upload"))
        .header("content-type", MEDIA)
        .header("accept", MEDIA)
        .header(ACCOUNT_HEADER, "ACCT-1")
        .body(sealed)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        open_with(&customer, "ACCT-1", &res.bytes().await.unwrap()),
        body
    );

    // Without a client certificate the upstream refuses the handshake: 502, 5001.
    let without = serve(config("[upstream_tls]\nca_bundle = \"ca.pem\"")).await;
    let res = client
        .get(format!("{without}/1/profile"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(support::error_code(res).await.0, 5001);

    // Trusting another CA, the upstream's certificate is refused: 502, 5001.
    std::fs::write(dir.path().join("ca.pem"), Pki::new().ca_pem()).unwrap();
    let wrong_ca = serve(config(
        "[upstream_tls]\nca_bundle = \"ca.pem\"\nclient_certificate = \"client.crt\"\nclient_key = \"client.key\"",
    ))
    .await;
    let res = client
        .get(format!("{wrong_ca}/1/profile"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(support::error_code(res).await.0, 5001);
}

#[test]
fn tls_settings_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    write_private(dir.path(), "server-1.pem", &PrivateKey::generate());
    let pki = Pki::new();
    let (cert, key) = pki.leaf(ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        dir.path().join("tls.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let load = |extra: &str| {
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9\"\n{extra}\n[[server_keys]]\nid = 1\nprivate_key = \"server-1.pem\"\n"
            ),
        )
        .unwrap();
        Config::load(&path).map(|_| ()).map_err(|e| e.to_string())
    };
    let err = load("[tls]\ncertificate = \"tls.crt\"\nprivate_key = \"tls.key\"").unwrap_err();
    assert!(
        err.contains("tls: ") && err.contains("readable by group or others"),
        "{err}"
    );
    std::fs::set_permissions(
        dir.path().join("tls.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    load("[tls]\ncertificate = \"tls.crt\"\nprivate_key = \"tls.key\"").unwrap();
    // A key that is not the certificate's.
    let (_, other_key) = pki.leaf(ExtendedKeyUsagePurpose::ServerAuth);
    write_secret(&dir.path().join("tls.key"), other_key.as_bytes());
    let err = load("[tls]\ncertificate = \"tls.crt\"\nprivate_key = \"tls.key\"").unwrap_err();
    assert!(err.contains("tls: "), "{err}");
    let err = load("[upstream_tls]\nca_bundle = \"tls.crt\"").unwrap_err();
    assert!(err.contains("upstream is not https://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_upstream_tls_the_system_roots_verify_the_upstream() {
    let pki = Pki::new();
    let upstream = tls_upstream(&pki, false).await;
    let dir = tempfile::tempdir().unwrap();
    let server = PrivateKey::generate();
    write_private(dir.path(), "server-1.pem", &server);
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nupstream = \"https://localhost:{}\"\nadmin_listen = \"off\"\n\n[[server_keys]]\nid = 1\nprivate_key = \"server-1.pem\"\n",
            upstream.port()
        ),
    )
    .unwrap();
    // The system store, as OpenSSL-style tools read it: SSL_CERT_FILE names the bundle
    // (what rustls-native-certs loads on Linux, as for an operator's own CA in the store).
    let system = dir.path().join("system-roots.pem");
    for (trusted, want) in [(pki.ca_pem(), 200), (Pki::new().ca_pem(), 502)] {
        std::fs::write(&system, trusted).unwrap();
        let gw = Served::spawn(&config, &[("SSL_CERT_FILE", system.to_str().unwrap())], &[]);
        let url = format!("{}/1/profile", gw.url);
        // A client per process: no pooled connection to the one before.
        let res = reqwest::Client::new().get(&url).send().await.unwrap();
        assert_eq!(res.status(), want);
        if want == 502 {
            assert_eq!(support::error_code(res).await.0, 5001);
        }
    }
}
