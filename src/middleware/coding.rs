//! Content codings on an upstream answer that is to be encrypted.
//!
//! The gateway asks the upstream for an unencoded body (it drops `Accept-Encoding`),
//! but an upstream may compress anyway. The client of an encrypted response decrypts
//! exactly the bytes the gateway sealed and has no header to tell it they are
//! compressed, so the gateway decodes `gzip`, `deflate` and `br` first, within the
//! response size limit; any other coding is answered with 502 (code 5003).

use std::io::Read;

use http::{HeaderMap, header};

use crate::error::Error;
use crate::limits::{Admission, Reservation};

/// A content coding the gateway can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Gzip,
    Deflate,
    Brotli,
}

/// The codings applied to a response body, in the order they were applied; an empty
/// list for none (or only `identity`). Unknown codings are an error.
pub(crate) fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, Error> {
    let mut out = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let value = value
            .to_str()
            .map_err(|_| unsupported("a non-ASCII coding"))?;
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let coding = match name.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                _ => return Err(unsupported("a content coding it cannot decode")),
            };
            out.push(coding);
        }
    }
    if out.len() > 4 {
        return Err(unsupported("more than four content codings"));
    }
    Ok(out)
}

fn unsupported(what: &str) -> Error {
    Error::BadUpstreamResponse(format!("the upstream answered with {what}").into())
}

/// Undoes `codings` (last applied, first undone) on `body[headroom..]`, returning a new
/// buffer with the same `headroom` of zero bytes in front; fails past `limit` decoded
/// bytes, so a small compressed body cannot expand without bound. The decoded bytes are
/// reserved in `held` from the buffer budget as they come, and decoding yields to the
/// worker's other tasks between steps.
pub(crate) async fn decode(
    codings: &[Coding],
    body: Vec<u8>,
    headroom: usize,
    limit: u64,
    admission: &Admission,
    held: &mut Reservation,
) -> Result<Vec<u8>, Error> {
    let mut current = body;
    for coding in codings.iter().rev() {
        // Each pass's output replaces its input: the reservation follows the newest.
        let mut step_held = admission.empty_reservation();
        current = decode_one(
            *coding,
            &current[headroom..],
            headroom,
            limit,
            admission,
            &mut step_held,
        )
        .await?;
        *held = step_held;
    }
    Ok(current)
}

/// How long a decoded answer waits for buffer budget.
const ANSWER_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Bytes decoded between two looks at the budget and two yields.
const STEP: usize = 64 * 1024;

async fn decode_one(
    coding: Coding,
    input: &[u8],
    headroom: usize,
    limit: u64,
    admission: &Admission,
    held: &mut Reservation,
) -> Result<Vec<u8>, Error> {
    match coding {
        Coding::Gzip => {
            drain(
                flate2::read::MultiGzDecoder::new(input),
                headroom,
                limit,
                admission,
                held,
            )
            .await
        }
        // HTTP's "deflate" is the zlib format (RFC 9110 §8.4.1.2), though some servers
        // send raw DEFLATE: take the zlib form when its header is there.
        Coding::Deflate if looks_like_zlib(input) => {
            drain(
                flate2::read::ZlibDecoder::new(input),
                headroom,
                limit,
                admission,
                held,
            )
            .await
        }
        Coding::Deflate => {
            drain(
                flate2::read::DeflateDecoder::new(input),
                headroom,
                limit,
                admission,
                held,
            )
            .await
        }
        Coding::Brotli => {
            drain(
                brotli_decompressor::Decompressor::new(input, 8192),
                headroom,
                limit,
                admission,
                held,
            )
            .await
        }
    }
}

/// A zlib stream's two header bytes (RFC 1950 §2.2): method 8, and a check sum.
fn looks_like_zlib(input: &[u8]) -> bool {
    matches!(input, [cmf, flg, ..] if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0)
}

async fn drain(
    mut reader: impl Read,
    headroom: usize,
    limit: u64,
    admission: &Admission,
    held: &mut Reservation,
) -> Result<Vec<u8>, Error> {
    let mut out = vec![0; headroom];
    loop {
        let start = out.len();
        out.resize(start + STEP, 0);
        let n = reader.read(&mut out[start..]).map_err(|e| {
            Error::BadUpstreamResponse(format!("the response body does not decode: {e}").into())
        })?;
        out.truncate(start + n);
        if n == 0 {
            return Ok(out);
        }
        let decoded = (out.len() - headroom) as u64;
        if decoded > limit {
            return Err(Error::BadUpstreamResponse(
                format!("decoded response body larger than {limit} bytes").into(),
            ));
        }
        if decoded > held.bytes() {
            // The upstream's answer: worth waiting for (see `Admission::grow_waiting`).
            let step = (STEP as u64).max(decoded - held.bytes());
            admission
                .grow_waiting(held, step, ANSWER_BUDGET_WAIT)
                .await?;
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn headers(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, value.parse().unwrap());
        h
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_the_codings_in_order() {
        assert_eq!(codings(&HeaderMap::new()).unwrap(), vec![]);
        assert_eq!(codings(&headers("identity")).unwrap(), vec![]);
        assert_eq!(
            codings(&headers("GZIP, br")).unwrap(),
            vec![Coding::Gzip, Coding::Brotli]
        );
        assert!(codings(&headers("zstd")).is_err());
        assert!(codings(&headers("compress")).is_err());
    }

    fn admission() -> Admission {
        Admission::new(
            8,
            64 << 20,
            std::time::Duration::from_secs(1),
            std::sync::Arc::new(crate::metrics::Metrics::default()),
        )
    }

    async fn decode(
        codings: &[Coding],
        body: Vec<u8>,
        headroom: usize,
        limit: u64,
    ) -> Result<Vec<u8>, Error> {
        let admission = admission();
        let mut held = admission.empty_reservation();
        super::decode(codings, body, headroom, limit, &admission, &mut held).await
    }

    #[tokio::test]
    async fn decodes_gzip_and_both_deflate_forms_after_the_headroom() {
        let text = b"{\"hello\":\"world\"}".repeat(50);
        let mut input = vec![0; 5];
        input.extend(gzip(&text));
        let out = decode(&[Coding::Gzip], input, 5, 1 << 20).await.unwrap();
        assert_eq!(&out[..5], &[0; 5]);
        assert_eq!(&out[5..], &text[..]);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&text).unwrap();
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        d.write_all(&text).unwrap();
        for encoded in [z.finish().unwrap(), d.finish().unwrap()] {
            let out = decode(&[Coding::Deflate], encoded, 0, 1 << 20)
                .await
                .unwrap();
            assert_eq!(out, text);
        }
    }

    #[tokio::test]
    async fn a_bomb_stops_at_the_limit_and_garbage_is_an_error() {
        let bomb = gzip(&vec![0; 10 << 20]);
        assert!(bomb.len() < 100 << 10);
        assert!(matches!(
            decode(&[Coding::Gzip], bomb, 0, 1 << 20).await,
            Err(Error::BadUpstreamResponse(_))
        ));
        assert!(
            decode(&[Coding::Gzip], b"not gzip".to_vec(), 0, 1 << 20)
                .await
                .is_err()
        );
        // Cut off in the middle of the stream.
        let whole = gzip(&b"{\"a\":1}".repeat(1000));
        let cut = whole[..whole.len() / 2].to_vec();
        assert!(decode(&[Coding::Gzip], cut, 0, 1 << 20).await.is_err());
        assert!(
            decode(&[Coding::Brotli], vec![0xff; 40], 0, 1 << 20)
                .await
                .is_err()
        );
    }
}
