//! The reverse proxy: forwards a request to the configured upstream base URL and
//! streams the answer back.
//!
//! Method, path, query and end-to-end headers (authentication headers included) go
//! through untouched; hop-by-hop headers (RFC 9110 §7.6.1) are dropped both ways (on
//! requests by the middleware's ingress, before it acts on any header; on answers here) and
//! `Host` becomes the upstream's. Bodies stream in both directions.
//!
//! A protocol upgrade the ingress let through (a plaintext WebSocket handshake) keeps
//! `Connection: upgrade` and `Upgrade`; when the upstream answers 101, the two
//! connections are joined into a tunnel that copies bytes both ways until either side
//! closes. A 101 to any other request is a 502: there is nothing to switch to.

mod pool;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse as _;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::Service;

use crate::error::{Error, StartError};
use crate::middleware::UpgradeRequest;
pub use pool::{IDLE_TIMEOUT, MAX_IDLE};
use pool::{Pool, ReturnOnEnd};

/// Forwards requests to one upstream. Cloning is one reference count: the router clones
/// its services for every request.
#[derive(Debug, Clone)]
pub struct Proxy(Arc<Inner>);

#[derive(Debug, Clone)]
struct Inner {
    pool: Arc<Pool>,
    connect_timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
    upstream: Arc<Upstream>,
    timeout: Duration,
}

#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) scheme: http::uri::Scheme,
    pub(crate) authority: http::uri::Authority,
    /// The base URL's path without a trailing slash ("" for the root).
    pub(crate) base_path: String,
    /// The `Host` of forwarded requests: host, and port unless the scheme's default
    /// (never user info).
    host: HeaderValue,
    /// `scheme://host:port/`: what the connector dials.
    target: Uri,
}

impl Proxy {
    /// A proxy to `upstream` (an `http://` or `https://` base URL), with a connect
    /// timeout and a timeout for the response head. `tls` verifies an `https://`
    /// upstream (and may hold a client certificate); without it, an `https://` upstream
    /// is refused.
    pub fn new(
        upstream: &Uri,
        connect_timeout: Duration,
        timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, StartError> {
        let (Some(scheme), Some(authority)) = (upstream.scheme(), upstream.authority()) else {
            return Err(StartError::Upstream("the URL has no scheme or host".into()));
        };
        let tls = match tls {
            Some(tls) => tls,
            None if upstream.scheme_str() == Some("https") => {
                return Err(StartError::Upstream(
                    "an https:// upstream needs TLS client settings".into(),
                ));
            }
            // Never used for http://, but the connector type wants one.
            None => Arc::new(
                crate::tls::upstream_client_config_for_http().map_err(StartError::Upstream)?,
            ),
        };
        let upstream = Arc::new(Upstream::new(scheme, authority, upstream.path())?);
        Ok(Self(Arc::new(Inner {
            pool: pool(connect_timeout, &tls, &upstream),
            connect_timeout,
            tls,
            upstream,
            timeout,
        })))
    }

    /// The same proxy with a connection pool of its own (clones share one pool): one
    /// per worker thread, so that a worker's connections live on its thread.
    pub fn fresh_pool(&self) -> Self {
        Self(Arc::new(Inner {
            pool: pool(self.0.connect_timeout, &self.0.tls, &self.0.upstream),
            ..(*self.0).clone()
        }))
    }
}

/// A request extension: how long the upstream may take to answer this request's head
/// (`upstream_timeout_ms` of the live state; without it, the value the proxy was built
/// with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeout(pub Duration);

impl Inner {
    async fn forward(&self, mut req: Request<Body>) -> Result<Response<Body>, Error> {
        *req.uri_mut() = self.upstream.origin_form(req.uri())?;
        *req.version_mut() = Version::HTTP_11;
        let upgrade = req.extensions().get::<UpgradeRequest>().is_some();
        let client_side = if upgrade {
            req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        // The middleware's ingress already removed the request's hop-by-hop fields
        // (keeping an upgrade's two); what is left is framing and the host.
        let headers = req.headers_mut();
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(header::HOST, self.upstream.host.clone());

        // The live state's timeout, which the middleware put on the request: a reload
        // that changes upstream_timeout_ms applies to the next request.
        let timeout = req
            .extensions()
            .get::<UpstreamTimeout>()
            .map_or(self.timeout, |t| t.0);
        let (mut response, connection) =
            match tokio::time::timeout(timeout, self.pool.send(req)).await {
                Err(_) => return Err(Error::UpstreamTimeout),
                // The client's body stalled while it streamed on: the client's fault, 408.
                Ok(Err(e)) if caused_by_request_timeout(&*e) => return Err(Error::RequestTimeout),
                Ok(Err(e)) => {
                    return Err(Error::UpstreamUnavailable {
                        upstream: self.upstream.origin(),
                        source: e,
                    });
                }
                Ok(Ok(r)) => r,
            };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection is the tunnel's now (or useless): it never goes back.
            drop(connection);
            let Some(client_side) = client_side else {
                return Err(Error::BadUpstreamResponse(
                    "101 Switching Protocols to a request that asked for no upgrade".into(),
                ));
            };
            let upstream_side = hyper::upgrade::on(&mut response);
            let kept = keep_upgrade(response.headers_mut());
            let (mut parts, _) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            kept.restore(&mut parts.headers);
            tokio::spawn(tunnel(client_side, upstream_side));
            return Ok(Response::from_parts(parts, Body::empty()));
        }
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let body = ReturnOnEnd::new(body, connection, self.pool.clone());
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

/// `Connection: upgrade` and `Upgrade`, kept aside while the other hop-by-hop fields go.
struct KeptUpgrade(Option<HeaderValue>);

fn keep_upgrade(headers: &HeaderMap) -> KeptUpgrade {
    KeptUpgrade(headers.get(header::UPGRADE).cloned())
}

impl KeptUpgrade {
    fn restore(self, headers: &mut HeaderMap) {
        if let Some(protocol) = self.0 {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol);
        }
    }
}

/// True when `e`'s causes include the client body's idle timeout.
fn caused_by_request_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if matches!(c.downcast_ref::<Error>(), Some(Error::RequestTimeout)) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// A tunnel with no bytes either way for this long is closed (nginx closes a proxied
/// WebSocket after `proxy_read_timeout`, 60 s, without reads; live WebSockets ping).
pub const TUNNEL_IDLE: Duration = Duration::from_secs(300);

/// Copies bytes both ways between an upgraded client and upstream connection until
/// either closes or neither side sends anything for [`TUNNEL_IDLE`].
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
    let (mut up_read, mut up_write) = tokio::io::split(TokioIo::new(upstream));
    let (mut to_up, mut to_client) = ([0u8; 8192], [0u8; 8192]);
    loop {
        // Whichever side sends first within the idle time is copied on; either side
        // closing, an error, or silence ends the tunnel.
        let step = tokio::time::timeout(TUNNEL_IDLE, async {
            tokio::select! {
                read = client_read.read(&mut to_up) => match read {
                    Ok(n) if n > 0 => up_write.write_all(&to_up[..n]).await.is_ok(),
                    _ => false,
                },
                read = up_read.read(&mut to_client) => match read {
                    Ok(n) if n > 0 => client_write.write_all(&to_client[..n]).await.is_ok(),
                    _ => false,
                },
            }
        })
        .await;
        if !matches!(step, Ok(true)) {
            break;
        }
    }
    let _ = up_write.shutdown().await;
    let _ = client_write.shutdown().await;
}

fn pool(
    connect_timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
    upstream: &Upstream,
) -> Arc<Pool> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let connector: HttpsConnector<HttpConnector> = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((**tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Arc::new(Pool::new(connector, upstream.target.clone()))
}

impl Upstream {
    pub(crate) fn new(
        scheme: &http::uri::Scheme,
        authority: &http::uri::Authority,
        base_path: &str,
    ) -> Result<Self, StartError> {
        let host = match authority.port_u16() {
            Some(port) if Some(port) != default_port(scheme) => {
                format!("{}:{port}", authority.host())
            }
            _ => authority.host().to_owned(),
        };
        let mut target = http::uri::Parts::default();
        target.scheme = Some(scheme.clone());
        target.authority = Some(authority.clone());
        target.path_and_query = Some(PathAndQuery::from_static("/"));
        Ok(Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
            base_path: base_path.trim_end_matches('/').to_owned(),
            target: Uri::from_parts(target).map_err(|e| StartError::Upstream(e.to_string()))?,
            host: HeaderValue::try_from(host)
                .map_err(|_| StartError::Upstream("the host is not a valid Host".into()))?,
        })
    }

    /// `scheme://host:port`, for the log: no user info, path or query.
    pub(crate) fn origin(&self) -> String {
        let port = self
            .authority
            .port_u16()
            .or(default_port(&self.scheme))
            .unwrap_or(80);
        format!("{}://{}:{port}", self.scheme, self.authority.host())
    }

    /// The path and query the upstream gets for `original` (origin form, RFC 9112 §3.2.1).
    pub(crate) fn origin_form(&self, original: &Uri) -> Result<Uri, Error> {
        Ok(Uri::from(self.path_and_query(original)?))
    }

    /// The absolute URI of `original` at the upstream.
    pub(crate) fn uri_for(&self, original: &Uri) -> Result<Uri, Error> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(self.path_and_query(original)?);
        Uri::from_parts(parts).map_err(|e| Error::Internal(e.into()))
    }

    fn path_and_query(&self, original: &Uri) -> Result<PathAndQuery, Error> {
        // `OPTIONS *` means the server itself: under a base path there is no such thing.
        if original.path() == "*" && !self.base_path.is_empty() {
            return Err(Error::InvalidPath);
        }
        let path_and_query = match original.path_and_query() {
            // An upstream at the root takes the path as it came: no copy, no parse.
            Some(pq) if self.base_path.is_empty() => pq.clone(),
            pq => {
                let pq = pq.map_or("/", PathAndQuery::as_str);
                PathAndQuery::try_from(format!("{}{}", self.base_path, pq))
                    .map_err(|e| Error::Internal(e.into()))?
            }
        };
        Ok(path_and_query)
    }
}

fn default_port(scheme: &http::uri::Scheme) -> Option<u16> {
    match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.0.clone();
        Box::pin(async move {
            Ok(this
                .forward(req)
                .await
                .unwrap_or_else(|e| e.into_response()))
        })
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1, the list the ingress uses), plus any
/// the `Connection` header names, from the upstream's answers.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named
        .iter()
        .chain(crate::middleware::ingress::HOP_BY_HOP.iter())
    {
        headers.remove(name);
    }
    // Transfer-Encoding is hop-by-hop too; hyper frames bodies itself.
    headers.remove(header::TRANSFER_ENCODING);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_base_path_and_query() {
        let p = Proxy::new(
            &"http://127.0.0.1:9/api/".parse().unwrap(),
            Duration::from_secs(1),
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        let uri =
            p.0.upstream
                .uri_for(&"/1/events.json?cursor=a%2Fb".parse().unwrap())
                .unwrap();
        assert_eq!(uri, "http://127.0.0.1:9/api/1/events.json?cursor=a%2Fb");
        let p = Proxy::new(
            &"http://127.0.0.1:9".parse().unwrap(),
            Duration::from_secs(1),
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        let uri = p.0.upstream.uri_for(&"/1/upload".parse().unwrap()).unwrap();
        assert_eq!(uri, "http://127.0.0.1:9/1/upload");
        let uri =
            p.0.upstream
                .uri_for(&"/1/x?a=b%20c".parse().unwrap())
                .unwrap();
        assert_eq!(uri, "http://127.0.0.1:9/1/x?a=b%20c");
    }

    #[test]
    fn the_logged_origin_has_no_user_info_path_or_query() {
        for (url, origin) in [
            (
                "http://user:secret@10.0.0.1:9000/api?k=v",
                "http://10.0.0.1:9000",
            ),
            ("https://api.example.com/v1", "https://api.example.com:443"),
            ("http://[::1]/", "http://[::1]:80"),
        ] {
            let p = Proxy::new(
                &url.parse().unwrap(),
                Duration::from_secs(1),
                Duration::from_secs(1),
                Some(Arc::new(
                    crate::tls::upstream_client_config_for_http().unwrap(),
                )),
            )
            .unwrap();
            assert_eq!(p.0.upstream.origin(), origin);
        }
    }

    #[test]
    fn the_host_header_is_host_and_port_without_user_info_or_default_port() {
        for (url, host) in [
            ("http://user:secret@10.0.0.1:9000/api", "10.0.0.1:9000"),
            ("http://[::1]:80/", "[::1]"),
            ("http://[::1]:8080", "[::1]:8080"),
            ("https://api.example.com:443/v1", "api.example.com"),
            ("https://api.example.com:80/v1", "api.example.com:80"),
            ("http://api.example.com", "api.example.com"),
        ] {
            let uri: Uri = url.parse().unwrap();
            let upstream =
                Upstream::new(uri.scheme().unwrap(), uri.authority().unwrap(), uri.path()).unwrap();
            assert_eq!(upstream.host, host, "{url}");
        }
    }

    #[test]
    fn drops_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, x-secret-hop".parse().unwrap(),
        );
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-clevertap-passcode", "p".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-clevertap-passcode"));
    }
}
