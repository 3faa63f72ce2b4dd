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
/// bytes, so a small compressed body cannot expand without bound.
pub(crate) fn decode(
    codings: &[Coding],
    body: Vec<u8>,
    headroom: usize,
    limit: u64,
) -> Result<Vec<u8>, Error> {
    let mut current = body;
    for coding in codings.iter().rev() {
        current = decode_one(*coding, &current[headroom..], headroom, limit)?;
    }
    Ok(current)
}

fn decode_one(coding: Coding, input: &[u8], headroom: usize, limit: u64) -> Result<Vec<u8>, Error> {
    let mut out = vec![0; headroom];
    let read = match coding {
        Coding::Gzip => read_limited(flate2::read::MultiGzDecoder::new(input), &mut out, limit),
        // HTTP's "deflate" is the zlib format (RFC 9110 §8.4.1.2), though some servers
        // send raw DEFLATE: take the zlib form when it parses, the raw one otherwise.
        Coding::Deflate => read_limited(flate2::read::ZlibDecoder::new(input), &mut out, limit)
            .or_else(|_| {
                out.truncate(headroom);
                read_limited(flate2::read::DeflateDecoder::new(input), &mut out, limit)
            }),
        Coding::Brotli => read_limited(
            brotli_decompressor::Decompressor::new(input, 8192),
            &mut out,
            limit,
        ),
    };
    match read {
        Ok(()) => Ok(out),
        Err(Limit::Exceeded) => Err(Error::BadUpstreamResponse(
            format!("decoded response body larger than {limit} bytes").into(),
        )),
        Err(Limit::Io(e)) => Err(Error::BadUpstreamResponse(
            format!("the response body does not decode: {e}").into(),
        )),
    }
}

enum Limit {
    Exceeded,
    Io(std::io::Error),
}

fn read_limited(reader: impl Read, out: &mut Vec<u8>, limit: u64) -> Result<(), Limit> {
    let start = out.len();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(out)
        .map_err(Limit::Io)?;
    if (out.len() - start) as u64 > limit {
        return Err(Limit::Exceeded);
    }
    Ok(())
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

    #[test]
    fn decodes_gzip_and_both_deflate_forms_after_the_headroom() {
        let text = b"{\"hello\":\"world\"}".repeat(50);
        let mut input = vec![0; 5];
        input.extend(gzip(&text));
        let out = decode(&[Coding::Gzip], input, 5, 1 << 20).unwrap();
        assert_eq!(&out[..5], &[0; 5]);
        assert_eq!(&out[5..], &text[..]);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&text).unwrap();
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        d.write_all(&text).unwrap();
        for encoded in [z.finish().unwrap(), d.finish().unwrap()] {
            let out = decode(&[Coding::Deflate], encoded, 0, 1 << 20).unwrap();
            assert_eq!(out, text);
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_an_error() {
        let bomb = gzip(&vec![0; 10 << 20]);
        assert!(bomb.len() < 100 << 10);
        assert!(matches!(
            decode(&[Coding::Gzip], bomb, 0, 1 << 20),
            Err(Error::BadUpstreamResponse(_))
        ));
        assert!(decode(&[Coding::Gzip], b"not gzip".to_vec(), 0, 1 << 20).is_err());
        assert!(decode(&[Coding::Brotli], vec![0xff; 40], 0, 1 << 20).is_err());
    }
}
