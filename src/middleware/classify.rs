//! Reading what a request asks for: its encryption headers, its account, and whether
//! a body that came without the headers is in fact an envelope. Reading the body
//! itself is [`super::body`]'s.

use http::{HeaderMap, HeaderName, header};

use crate::HPKE_MEDIA_TYPE;
use crate::config::valid_account_id;
use crate::envelope::{MIN_SEALED_LEN, Prefix, split_prefix};
use crate::error::Error;
use crate::keys::ServerKeys;

/// How many leading bytes of a body are looked at to tell text from an envelope.
pub(crate) const SNIFF_LEN: usize = 64;

/// The encryption headers a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Negotiation {
    /// `Content-Type: application/octet-stream+hpke`.
    pub(crate) encrypted_body: bool,
    /// `Accept` lists `application/octet-stream+hpke`.
    pub(crate) encrypted_response: bool,
}

impl Negotiation {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        // Read as lossy text: a stray non-ASCII byte elsewhere in a value must not hide
        // the media type (an `Accept` list that asks for encryption would otherwise get a
        // plaintext answer).
        let encrypted_body = headers.get(header::CONTENT_TYPE).is_some_and(|v| {
            is_hpke_media_type(
                String::from_utf8_lossy(v.as_bytes())
                    .split(';')
                    .next()
                    .unwrap_or_default(),
            )
        });
        let encrypted_response = headers
            .get_all(header::ACCEPT)
            .iter()
            .any(|v| accepts_hpke(&String::from_utf8_lossy(v.as_bytes())));
        Self {
            encrypted_body,
            encrypted_response,
        }
    }
}

fn is_hpke_media_type(s: &str) -> bool {
    s.trim().eq_ignore_ascii_case(HPKE_MEDIA_TYPE)
}

/// An `Accept` value lists the HPKE type without refusing it (`q=0`). The list is read
/// by the `mime` crate (RFC 9110 media ranges, quoted parameter values included), so a
/// comma or a media type inside a quoted string is not taken for a list element;
/// elements it cannot parse are passed over, as other servers do.
fn accepts_hpke(value: &str) -> bool {
    mime::MimeIter::new(value).flatten().any(|range| {
        is_hpke_media_type(range.essence_str())
            && !range
                .get_param("q")
                .is_some_and(|q| q.as_str().trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
    })
}

/// The account id header's value.
/// `spelling` is the header's name as configured, for the error message.
pub(crate) fn account_id<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    spelling: &str,
) -> Result<&'a str, Error> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or_else(|| Error::MissingAccountId {
        header: spelling.to_owned(),
    })?;
    let invalid = || Error::InvalidAccountId {
        header: spelling.to_owned(),
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let id = value.to_str().map_err(|_| invalid())?.trim();
    if !valid_account_id(id) {
        return Err(invalid());
    }
    Ok(id)
}

/// True if the first bytes of a body read as text: UTF-8 (allowing a character cut at
/// the end of the sample) with no control characters but tab, CR and LF. JSON, form and
/// CSV bodies do; an envelope does not, since a Tink prefix starts with `0x01` and the
/// 32 bytes of an X25519 point read as text only by a vanishing chance.
pub(crate) fn looks_like_text(head: &[u8]) -> bool {
    let sample = &head[..head.len().min(SNIFF_LEN)];
    let valid = match std::str::from_utf8(sample) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && sample.len() == SNIFF_LEN,
    };
    valid
        && !sample
            .iter()
            .any(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f)
}

/// Decides whether a body sent *without* the encryption headers is an envelope.
///
/// It is, when either:
/// 1. it starts with a Tink prefix (`0x01` and a key id) naming one of the gateway's
///    server keys, and is long enough to hold an envelope; or
/// 2. its declared `Content-Type` is textual (JSON, text, form, or none at all), it is
///    long enough to hold an envelope, and its first bytes are not text.
///
/// A RAW envelope declared as a binary type (`application/octet-stream`, images...)
/// cannot be told from a binary upload: it passes through as the plaintext it claims to be.
pub(crate) fn looks_encrypted(
    head: &[u8],
    total_at_least: usize,
    headers: &HeaderMap,
    keys: &ServerKeys,
) -> bool {
    if total_at_least < MIN_SEALED_LEN {
        return false;
    }
    if let (Prefix::Tink(id), _) = split_prefix(head)
        && keys.has_id(id)
    {
        return true;
    }
    declared_textual(headers) && !looks_like_text(head)
}

/// True when the request says its body is UTF-8 text: a textual media type (or none),
/// no charset other than UTF-8 (or US-ASCII), and no content coding such as gzip.
fn declared_textual(headers: &HeaderMap) -> bool {
    let encoded = headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        !v.to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
    });
    if encoded {
        return false;
    }
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let utf8 = parts.all(|p| {
        let p = p.trim().to_ascii_lowercase();
        match p.strip_prefix("charset=") {
            Some(cs) => matches!(cs.trim_matches('"'), "utf-8" | "utf8" | "us-ascii"),
            None => true,
        }
    });
    utf8 && (media.starts_with("text/")
        || media == "application/json"
        || media.ends_with("+json")
        || media == "application/x-www-form-urlencoded"
        || media == "application/xml"
        || media.ends_with("+xml"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn accept_lists_are_read_with_their_quoted_strings() {
        let accepts = |v: &'static str| {
            Negotiation::from_headers(&headers(&[("accept", v)])).encrypted_response
        };
        // A media type inside a quoted parameter value is not a list element.
        assert!(!accepts(
            r#"application/x-note; note="a, application/octet-stream+hpke""#
        ));
        // A comma inside a quoted value does not split the list.
        assert!(accepts(
            r#"text/plain; note="a,b", application/octet-stream+hpke"#
        ));
        assert!(accepts("Application/Octet-Stream+HPKE; q=0.5"));
        assert!(!accepts("application/octet-stream+hpke; q=0"));
        assert!(!accepts("application/octet-stream+hpke;q=0.0, text/plain"));
        // An element that does not parse is passed over, not fatal.
        assert!(accepts("garbage/, application/octet-stream+hpke"));
    }

    #[test]
    fn negotiation_reads_both_headers() {
        let n = Negotiation::from_headers(&headers(&[
            ("content-type", "Application/Octet-Stream+HPKE"),
            (
                "accept",
                "application/json;q=0.5, application/octet-stream+hpke",
            ),
        ]));
        assert!(n.encrypted_body && n.encrypted_response);
        let n = Negotiation::from_headers(&headers(&[
            ("content-type", "application/json"),
            ("accept", "application/octet-stream+hpke;q=0"),
        ]));
        assert!(!n.encrypted_body && !n.encrypted_response);
        let n = Negotiation::from_headers(&headers(&[("accept", "*/*")]));
        assert!(!n.encrypted_response);
        // A non-ASCII byte elsewhere in the list does not hide the HPKE type.
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_bytes(b"application/octet-stream+hpke, text/\xe9").unwrap(),
        );
        assert!(Negotiation::from_headers(&h).encrypted_response);
        // A parameter that starts with a non-ASCII character (found by the fuzzer: a
        // slice at byte 2 panicked inside the character).
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_bytes(b"application/octet-stream+hpke;\xe9x").unwrap(),
        );
        assert!(Negotiation::from_headers(&h).encrypted_response);
    }

    #[test]
    fn account_id_rules() {
        let name = HeaderName::from_static("x-account");
        assert!(matches!(
            account_id(&headers(&[]), &name, "X-Account"),
            Err(Error::MissingAccountId { .. })
        ));
        assert_eq!(
            account_id(&headers(&[("x-account", "A-1")]), &name, "X-Account").unwrap(),
            "A-1"
        );
        assert!(matches!(
            account_id(&headers(&[("x-account", "a b")]), &name, "X-Account"),
            Err(Error::InvalidAccountId { .. })
        ));
        assert!(matches!(
            account_id(
                &headers(&[("x-account", "a"), ("x-account", "b")]),
                &name,
                "X-Account"
            ),
            Err(Error::InvalidAccountId { .. })
        ));
    }

    #[test]
    fn only_utf8_uncoded_bodies_are_declared_textual() {
        assert!(declared_textual(&headers(&[])));
        assert!(declared_textual(&headers(&[(
            "content-type",
            "application/json; charset=UTF-8"
        )])));
        assert!(!declared_textual(&headers(&[
            ("content-type", "application/json"),
            ("content-encoding", "gzip")
        ])));
        assert!(!declared_textual(&headers(&[(
            "content-type",
            "text/csv; charset=iso-8859-1"
        )])));
        assert!(!declared_textual(&headers(&[(
            "content-type",
            "application/octet-stream"
        )])));
    }

    #[test]
    fn text_detection() {
        assert!(looks_like_text(br#"{"d":[{"identity":"1"}]}"#));
        assert!(looks_like_text("é".repeat(40).as_bytes()));
        // A multi-byte character cut by the sample's end is still text.
        let mut s = "a".repeat(SNIFF_LEN - 1).into_bytes();
        s.extend_from_slice("é".as_bytes());
        assert!(looks_like_text(&s));
        assert!(!looks_like_text(&[0xff; 64]));
        assert!(!looks_like_text(&[0x01, 0, 0, 0, 1]));
        assert!(looks_like_text(b"a,b\r\n1,2\n\tx"));
    }
}
