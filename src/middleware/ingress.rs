//! What every request goes through once, before it is classified and before any header
//! is acted on:
//!
//! - `CONNECT` is refused (405, code 4014): the gateway forwards to one upstream, it
//!   does not open tunnels to arbitrary hosts.
//! - A path with a dot segment (`.` or `..`, raw or percent-encoded, also hidden behind
//!   an encoded `/` or `\`) is refused (400, code 4016), so the upstream never gets a
//!   path that climbs out of the configured base path.
//! - Header fields whose name has an underscore are dropped (nginx's default,
//!   `underscores_in_headers off`), so a twin such as `X_CleverTap_Account_Id` cannot
//!   reach an upstream that reads `_` and `-` alike; `underscores_in_headers = true`
//!   keeps them.
//! - Hop-by-hop headers (RFC 9110 §7.6.1) and every field the `Connection` header names
//!   are removed here, not after the gateway has acted on the request. A `Connection`
//!   header naming a field the gateway relies on (the account header, `Content-Type`,
//!   `Accept`, `Content-Length`, `Content-Encoding`, `Transfer-Encoding`, `Host`) is
//!   refused (400, code 4013).
//! - A protocol upgrade (`Connection: upgrade` with `Upgrade`) keeps those two fields
//!   for the proxy, which tunnels it for plaintext requests; the middleware refuses it
//!   for a request that asked for encryption.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};

use crate::error::Error;

/// What ingress learned about a request it let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// The request asks for a protocol upgrade (WebSocket...).
    pub(crate) upgrade: bool,
}

/// Marks a request whose `Connection: upgrade` and `Upgrade` fields are to be
/// forwarded, as a request extension for the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeRequest;

/// Checks and cleans a request's head; see the module docs. Returns how many header
/// fields were dropped for an underscore, beside what was learned.
pub(crate) fn admit<B>(
    req: &mut Request<B>,
    account_header: &HeaderName,
    underscores_in_headers: bool,
) -> Result<(Admitted, u64), Error> {
    if req.method() == Method::CONNECT {
        return Err(Error::MethodNotAllowed {
            method: Method::CONNECT,
        });
    }
    check_path(req.uri())?;
    let dropped = if underscores_in_headers {
        0
    } else {
        drop_underscored(req.headers_mut())
    };
    let upgrade = strip_hop_by_hop(req.headers_mut(), account_header)?;
    if upgrade {
        req.extensions_mut().insert(UpgradeRequest);
    }
    Ok((Admitted { upgrade }, dropped))
}

/// Refuses paths with dot segments, in any spelling an upstream might decode.
pub(crate) fn check_path(uri: &Uri) -> Result<(), Error> {
    let path = uri.path();
    if path == "*" && uri.query().is_none() {
        return Ok(());
    }
    if !path.starts_with('/') {
        return Err(Error::InvalidPath);
    }
    for segment in path.split('/') {
        let decoded = percent_decode(segment.as_bytes());
        // A `;` starts path parameters, which servlet containers strip before they
        // resolve dots: `..;` is `..` to Tomcat.
        if decoded
            .split(|b| *b == b'/' || *b == b'\\')
            .map(|part| part.split(|b| *b == b';').next().unwrap_or_default())
            .any(|part| part == b"." || part == b"..")
        {
            return Err(Error::InvalidPath);
        }
    }
    Ok(())
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(h), Some(l)) = (
                input.get(i + 1).and_then(|b| hex(*b)),
                input.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// Removes every field whose name has an underscore; returns how many.
fn drop_underscored(headers: &mut HeaderMap) -> u64 {
    if !headers.keys().any(|name| name.as_str().contains('_')) {
        return 0;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    let mut dropped = 0;
    for name in names {
        dropped += headers.get_all(&name).iter().count() as u64;
        headers.remove(&name);
    }
    dropped
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) besides those `Connection` names.
pub(crate) const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Fields the gateway reads or sets, which `Connection` may not name.
fn is_relied_on(name: &HeaderName, account_header: &HeaderName) -> bool {
    name == account_header
        || [
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::TRANSFER_ENCODING,
            header::HOST,
        ]
        .contains(name)
}

/// Removes the hop-by-hop fields; returns whether the request asks for an upgrade
/// (whose `Connection: upgrade` and `Upgrade` are then put back).
fn strip_hop_by_hop(headers: &mut HeaderMap, account_header: &HeaderName) -> Result<bool, Error> {
    let mut named = Vec::new();
    let mut upgrade_token = false;
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else {
            return Err(Error::BadConnectionHeader);
        };
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let Ok(name) = HeaderName::from_bytes(token.as_bytes()) else {
                return Err(Error::BadConnectionHeader);
            };
            if is_relied_on(&name, account_header) {
                return Err(Error::ConnectionNamesEndToEnd { name });
            }
            upgrade_token |= name == header::UPGRADE;
            named.push(name);
        }
    }
    let upgrade = if upgrade_token {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if let Some(protocol) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    Ok(upgrade.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> HeaderName {
        HeaderName::from_static("x-clevertap-account-id")
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        for bad in [
            "/../../admin",
            "/a/./b",
            "/%2e%2e/%2e%2e/admin",
            "/%2E%2e/admin",
            "/.%2e/admin",
            "/a/..%2fadmin",
            "/a/%2e%2e%5cadmin",
            "/api/..;/..;/admin",
            "/%2e%2e%3b/admin",
            "/.;x/admin",
            "/..",
            "/.",
        ] {
            let r = request(bad, &[]);
            assert!(
                matches!(check_path(r.uri()), Err(Error::InvalidPath)),
                "{bad}"
            );
        }
        for good in [
            "/",
            "/1/upload",
            "/a.b/..c/c..",
            "/%2e%2ex",
            "/x?path=../../etc",
            "/a%2fb",
            "/a;b/c..;d",
        ] {
            let r = request(good, &[]);
            assert!(check_path(r.uri()).is_ok(), "{good}");
        }
    }

    #[test]
    fn connection_may_not_name_what_the_gateway_acts_on() {
        for name in [
            "X-CleverTap-Account-Id",
            "content-type",
            "Accept",
            "content-length",
            "Content-Encoding",
            "transfer-encoding",
            "host",
        ] {
            let mut r = request("/", &[("connection", name)]);
            assert!(
                matches!(
                    admit(&mut r, &account(), false),
                    Err(Error::ConnectionNamesEndToEnd { .. })
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn hop_by_hop_and_named_fields_go_and_an_upgrade_keeps_its_two() {
        let mut r = request(
            "/",
            &[
                ("connection", "keep-alive, X-Hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("x-clevertap-passcode", "p"),
            ],
        );
        let (admitted, _) = admit(&mut r, &account(), false).unwrap();
        assert!(!admitted.upgrade);
        assert_eq!(r.headers().len(), 1);
        let mut r = request(
            "/ws",
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-key", "k"),
            ],
        );
        let (admitted, _) = admit(&mut r, &account(), false).unwrap();
        assert!(admitted.upgrade);
        assert_eq!(r.headers()["connection"], "upgrade");
        assert_eq!(r.headers()["upgrade"], "websocket");
        assert!(r.extensions().get::<UpgradeRequest>().is_some());
        // Upgrade without Connection: upgrade is only a hop-by-hop field.
        let mut r = request("/", &[("upgrade", "websocket")]);
        assert!(!admit(&mut r, &account(), false).unwrap().0.upgrade);
        assert!(r.headers().is_empty());
    }

    #[test]
    fn underscored_names_are_dropped_unless_allowed() {
        let mut r = request(
            "/",
            &[
                ("x-clevertap-account-id", "A"),
                ("x_clevertap_account_id", "B"),
                ("x_clevertap_account_id", "C"),
            ],
        );
        let (_, dropped) = admit(&mut r, &account(), false).unwrap();
        assert_eq!(dropped, 2);
        assert_eq!(r.headers().len(), 1);
        let mut r = request("/", &[("x_a", "1")]);
        assert_eq!(admit(&mut r, &account(), true).unwrap().1, 0);
        assert_eq!(r.headers().len(), 1);
    }

    #[test]
    fn connect_is_refused() {
        let mut r = Request::builder()
            .method(Method::CONNECT)
            .uri("example.com:443")
            .body(())
            .unwrap();
        assert!(matches!(
            admit(&mut r, &account(), false),
            Err(Error::MethodNotAllowed { .. })
        ));
    }
}
