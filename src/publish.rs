//! Key publication: `GET /.well-known/hpke-keys` on the public listener serves the
//! public keys clients should encrypt to, the primary first, then the keys that still
//! decrypt during a rotation's overlap.
//!
//! | request | answer |
//! |---|---|
//! | default, `?format=tink-json`, or `Accept: application/json` | a Tink public keyset (JSON), every published key as a `TINK` key with its configured id, the primary as `primaryKeyId` |
//! | `?format=pem` or `Accept: application/x-pem-file` | SPKI PEM blocks, primary first |
//! | `?format=raw` or `Accept: text/plain` | one base64 raw key per line, primary first |
//!
//! Without `?suite=`, the answer lists the keys of the primary's KEM only: Tink builds a
//! primitive for every key of a keyset it reads, so a classical client (Tink Java
//! without Conscrypt, an older Tink) must not be handed an X-Wing key. `?suite=NAME`
//! (e.g. `xwing-aes-256-gcm`) lists only the keys of that suite, the one to encrypt to
//! first (for Tink, its `primaryKeyId`): how a customer who must encrypt with X-Wing
//! gets a keyset whose primary is an X-Wing key. `?suite=all` lists every live key.
//! PEM and raw name only a KEM, so without `?suite=NAME` they are refused (4018) while a
//! listed key's suite is not its KEM's default; with it they are unambiguous. Every
//! list states each key's id and suite, in the body's order, in `Hpke-Key-Suites`
//! (`1=x25519-aes-256-gcm, 3=xwing-aes-256-gcm`).
//!
//! `Cache-Control: public, max-age=N` where N is `keys_max_age_s` or, if sooner, the
//! seconds until the first published key's `not_after`: a client that caches the answer
//! never holds a key that stopped working.

use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;

use crate::envelope::{Prefix, Suite};
use crate::error::Error;
use crate::keys::{self, KeyState, ServerKey};
use crate::state::SharedState;

/// The path keys are published at.
pub const PATH: &str = "/.well-known/hpke-keys";

/// The response header naming each published key's id and suite, in the body's order.
pub const SUITES_HEADER: &str = "hpke-key-suites";

/// The query string of a key request.
#[derive(Debug, Deserialize)]
pub struct KeysQuery {
    /// `tink-json`, `pem` or `raw`.
    format: Option<String>,
    /// Only the keys of this suite.
    suite: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    TinkJson,
    Pem,
    Raw,
}

impl Format {
    fn choose(query: Option<&str>, headers: &HeaderMap) -> Option<Self> {
        if let Some(name) = query {
            return match name {
                "tink-json" | "tink" | "json" => Some(Self::TinkJson),
                "pem" => Some(Self::Pem),
                "raw" => Some(Self::Raw),
                _ => None,
            };
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let wants = |media: &str| {
            accept
                .split(',')
                .any(|part| part.split(';').next().is_some_and(|m| m.trim() == media))
        };
        Some(if wants("application/x-pem-file") {
            Self::Pem
        } else if wants("text/plain") && !wants("application/json") {
            Self::Raw
        } else {
            Self::TinkJson
        })
    }

    fn media_type(self) -> &'static str {
        match self {
            Self::TinkJson => "application/json",
            Self::Pem => "application/x-pem-file",
            Self::Raw => "text/plain; charset=utf-8",
        }
    }
}

/// The handler for [`PATH`].
pub async fn hpke_keys(
    State(shared): State<SharedState>,
    Query(query): Query<KeysQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(format) = Format::choose(query.format.as_deref(), &headers) else {
        return Error::UnknownKeyFormat.into_response();
    };
    let selection = match query.suite.as_deref() {
        None => Selection::PrimaryKem,
        Some("all") => Selection::All,
        Some(name) => match name.parse::<Suite>() {
            Ok(suite) => Selection::Suite(suite),
            Err(_) => return Error::UnknownKeyFormat.into_response(),
        },
    };
    let state = shared.load();
    let now = SystemTime::now();
    let published = select(state.server_keys().published(now), selection);
    let Some(primary) = published.first() else {
        return match selection {
            Selection::Suite(_) => Error::NoSuchKey.into_response(),
            _ => Error::Internal("no server key is valid now: nothing to publish".into())
                .into_response(),
        };
    };
    let one_suite = matches!(selection, Selection::Suite(_));
    let body = match render(format, &published, primary, one_suite) {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let max_age = max_age(state.keys_max_age(), &published, now);
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.media_type()),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
            .unwrap_or(HeaderValue::from_static("no-cache")),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Ok(suites) = HeaderValue::from_str(&suites_header(&published)) {
        h.insert(SUITES_HEADER, suites);
    }
    response
}

/// Which keys an answer lists (`?suite=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selection {
    /// No `?suite=`: the keys of the primary's KEM. A client that reads a whole keyset
    /// (Tink builds every key's primitive, not only the primary's) is never handed a
    /// key of a KEM it may not support, such as X-Wing to Tink Java without Conscrypt.
    PrimaryKem,
    /// `?suite=all`: every live key.
    All,
    /// `?suite=NAME`: the keys of that suite.
    Suite(Suite),
}

/// The keys of `selection`, from `published` (the primary first, then configuration
/// order). Without the primary among them, the key clients should encrypt to comes
/// first: keys with no `not_after` before those being phased out, then the newest file.
fn select(mut published: Vec<&ServerKey>, selection: Selection) -> Vec<&ServerKey> {
    let suite = |k: &ServerKey| k.public_key().suite();
    match selection {
        Selection::All => return published,
        Selection::PrimaryKem => {
            let Some(kem) = published.first().map(|k| suite(k).kem) else {
                return published;
            };
            published.retain(|k| suite(k).kem == kem);
        }
        Selection::Suite(wanted) => published.retain(|k| suite(k) == wanted),
    }
    if published
        .first()
        .is_some_and(|k| k.state() != KeyState::Primary)
    {
        published.sort_by_key(|k| (k.not_after().is_some(), std::cmp::Reverse(k.written_at())));
    }
    published
}

/// `1=x25519-aes-256-gcm, 3=xwing-aes-256-gcm`: each key's id and suite, in order.
fn suites_header(published: &[&ServerKey]) -> String {
    published
        .iter()
        .map(|k| format!("{}={}", k.id().unwrap_or(0), k.public_key().suite()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The body. `one_suite`: the client asked for one suite by name, so PEM and raw (which
/// name only the KEM) are unambiguous.
fn render(
    format: Format,
    published: &[&ServerKey],
    primary: &ServerKey,
    one_suite: bool,
) -> Result<String, Error> {
    // PEM and raw name only the KEM: a client reading them assumes the KEM's default
    // AEAD. Unless the client named the suite, a key of another suite is published in
    // the Tink format only, which names it.
    if format != Format::TinkJson
        && !one_suite
        && let Some(k) = published
            .iter()
            .find(|k| k.public_key().suite() != k.public_key().suite().kem.default_suite())
    {
        tracing::debug!(key = k.id().unwrap_or(0), suite = %k.public_key().suite(), "only tink-json states this key's suite");
        return Err(Error::UnknownKeyFormat);
    }
    Ok(match format {
        Format::TinkJson => {
            let publics: Vec<_> = published.iter().map(|k| k.public_key()).collect();
            let entries: Vec<_> = published
                .iter()
                .zip(&publics)
                .map(|(k, pk)| {
                    let id = k.id().unwrap_or(0);
                    (id, pk, Prefix::Tink(id))
                })
                .collect();
            keys::public_keyset_json_of(&entries, primary.id().unwrap_or(0))
        }
        Format::Pem => published
            .iter()
            .map(|k| keys::public_key_pem(&k.public_key()).map_err(|e| Error::Internal(e.into())))
            .collect::<Result<Vec<_>, _>>()?
            .concat(),
        Format::Raw => published
            .iter()
            .map(|k| keys::public_key_raw_base64(&k.public_key()) + "\n")
            .collect(),
    })
}

/// The configured bound, shortened to the first `not_after` among the published keys.
pub(crate) fn max_age(bound: Duration, published: &[&ServerKey], now: SystemTime) -> Duration {
    published
        .iter()
        .filter_map(|k| k.not_after())
        .map(|end| end.duration_since(now).unwrap_or_default())
        .fold(bound, Duration::min)
}

/// The path of an intake account's OpenPGP public keys.
pub const PGP_PATH: &str = "/.well-known/pgp-keys/{account}";

/// What [`pgp_keys`] reads.
#[derive(Debug, Clone)]
pub struct PgpKeysState {
    /// The intake, if configured.
    pub intake: Option<crate::intake::SharedIntake>,
    /// For the cache bound (`keys_max_age_s`).
    pub shared: SharedState,
}

/// `GET /.well-known/pgp-keys/{account}[?keyId=ID]`: the armored OpenPGP public keys an
/// account's customers encrypt uploads to (the keys still valid now; one key with
/// `keyId`), for clients that download the key before each upload.
pub async fn pgp_keys(
    State(state): State<PgpKeysState>,
    axum::extract::Path(account): axum::extract::Path<String>,
    Query(query): Query<PgpKeysQuery>,
) -> Response {
    let not_found = || Error::NoSuchKey.into_response();
    let Some(intake) = &state.intake else {
        return not_found();
    };
    let now = SystemTime::now();
    let keys =
        match crate::intake::armored_keys(&intake.load(), &account, query.key_id.as_deref(), now) {
            None => return not_found(),
            Some(Err(e)) => return Error::Internal(e.into()).into_response(),
            Some(Ok(keys)) => keys,
        };
    let body: String = keys.iter().map(|(text, _)| text.as_str()).collect();
    let max_age = state.shared.load().keys_max_age().min(
        keys.iter()
            .filter_map(|(_, not_after)| *not_after)
            .map(|end| end.duration_since(now).unwrap_or_default())
            .min()
            .unwrap_or(Duration::MAX),
    );
    (
        [
            (header::CONTENT_TYPE, "application/pgp-keys".to_owned()),
            (
                header::CACHE_CONTROL,
                format!("public, max-age={}", max_age.as_secs()),
            ),
        ],
        body,
    )
        .into_response()
}

/// The query string of a PGP key request.
#[derive(Debug, Deserialize)]
pub struct PgpKeysQuery {
    /// Only the key with this `keyId`.
    #[serde(rename = "keyId")]
    key_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{PrivateKey, Suite};

    /// PEM and raw name only the KEM: a key whose suite is not its KEM's default is
    /// published in the Tink format only (which names its suite), never as a PEM a
    /// client would read with another AEAD.
    #[test]
    fn pem_and_raw_refuse_a_key_they_cannot_describe() {
        let chacha = ServerKey::new(
            Some(1),
            PrivateKey::generate_for(Suite::X25519_CHACHA20_POLY1305),
        );
        let xwing = ServerKey::new(Some(2), PrivateKey::generate_for(Suite::XWING_AES_256_GCM));
        for format in [Format::Pem, Format::Raw] {
            assert!(matches!(
                render(format, &[&xwing, &chacha], &xwing, false),
                Err(Error::UnknownKeyFormat)
            ));
            assert!(render(format, &[&xwing], &xwing, false).is_ok());
            // Asked for by name (`?suite=`), the suite is stated.
            assert!(render(format, &[&chacha], &chacha, true).is_ok());
        }
        assert_eq!(
            suites_header(&[&xwing, &chacha]),
            "2=xwing-aes-256-gcm, 1=x25519-chacha20-poly1305"
        );
        let json = render(Format::TinkJson, &[&xwing, &chacha], &xwing, false).unwrap();
        // Without ?suite=, only the primary's KEM; the other selections.
        let primary = ServerKey::new(Some(3), PrivateKey::generate());
        let ids = |keys: Vec<&ServerKey>| keys.iter().map(|k| k.id().unwrap()).collect::<Vec<_>>();
        let all = vec![&primary, &xwing, &chacha];
        assert_eq!(ids(select(all.clone(), Selection::PrimaryKem)), [3, 1]);
        assert_eq!(ids(select(all.clone(), Selection::All)), [3, 2, 1]);
        assert_eq!(
            ids(select(all, Selection::Suite(Suite::XWING_AES_256_GCM))),
            [2]
        );
        // A suite without the primary: the key with no not_after, then the newest.
        let now = SystemTime::now();
        let pq = |id, not_after, age_s| {
            ServerKey::new(Some(id), PrivateKey::generate_for(Suite::XWING_AES_256_GCM))
                .with_lifecycle(KeyState::DecryptOnly, not_after)
                .with_written_at(now - Duration::from_secs(age_s))
        };
        let (leaving, older, newer) = (
            pq(5, Some(now + Duration::from_secs(86_400)), 0),
            pq(6, None, 7200),
            pq(7, None, 3600),
        );
        assert_eq!(
            ids(select(
                vec![&primary, &leaving, &older, &newer],
                Selection::Suite(Suite::XWING_AES_256_GCM)
            )),
            [7, 6, 5]
        );
        let (pk, _) = keys::parse_public_key(json.as_bytes()).unwrap();
        assert_eq!(pk.suite(), Suite::XWING_AES_256_GCM);
    }
}
