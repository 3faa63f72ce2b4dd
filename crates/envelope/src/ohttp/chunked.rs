//! Chunked Oblivious HTTP (draft-ietf-ohai-chunked-ohttp): a request or response sealed
//! in a sequence of chunks that can be opened as they arrive.
//!
//! A request is `hdr || enc` (as in RFC 9458, but with `info = "message/bhttp chunked
//! request" || 0x00 || hdr`), then chunks, each `length (varint, 1..) || sealed chunk`
//! sealed in order on one HPKE context with empty AAD, then `0 (varint) || final sealed
//! chunk` sealed with AAD `"final"` and running to the end of the stream. A response is
//! `response_nonce || chunks` in the same framing, sealed with the key and nonce RFC 9458
//! §4.4 derives from the secret exported as `"message/bhttp chunked response"`, the
//! nonce XORed with the chunk's counter (which is what an HPKE context's sequence number
//! does, so a context built from that key and nonce seals them).
//!
//! Only a stream that ends with a final chunk that opened with the `"final"` AAD is
//! complete: [`Deframer::finish`] says [`Error::Truncated`] otherwise, and a chunk moved,
//! dropped or marked final by anyone but the sender does not open.

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::{
    Error, Exporting, HEADER_LEN, Header, ResponseKey, entropy_len, export_secret, parse_header,
    response_keys,
};
use crate::{OpenError, PrivateKey, PublicKey, SealError, backend};

/// The media type of a chunked encapsulated request.
pub const REQUEST_MEDIA_TYPE: &str = "message/ohttp-chunked-req";
/// The media type of a chunked encapsulated response.
pub const RESPONSE_MEDIA_TYPE: &str = "message/ohttp-chunked-res";
/// `"message/bhttp chunked request"`: the request's HPKE `info` starts with it.
pub const REQUEST_LABEL: &[u8] = b"message/bhttp chunked request";
/// `"message/bhttp chunked response"`: the exporter context of the response secret.
pub const RESPONSE_LABEL: &[u8] = b"message/bhttp chunked response";
/// The AAD of a message's final chunk.
const FINAL_AAD: &[u8] = b"final";
/// The largest plaintext in one chunk this crate opens (and the most it seals): 64 KiB.
/// A sealed chunk adds the AEAD's 16-byte tag.
pub const MAX_CHUNK_LEN: usize = 1 << 16;
/// The largest plaintext chunk to seal for others: 16 KiB, the most the `ohttp` crate
/// (martinthomson/ohttp 0.7) opens.
pub const SEAL_CHUNK_LEN: usize = 1 << 14;
/// The largest sealed chunk [`Deframer`] accepts.
pub const MAX_SEALED_CHUNK_LEN: usize = MAX_CHUNK_LEN + 16;

/// The length of a chunked request's header and `enc` for the suite `header` names: the
/// bytes [`RequestOpener::new`] needs.
pub fn request_header_len(header: &Header) -> usize {
    HEADER_LEN + header.suite.kem.enc_len()
}

/// Reads the header of a chunked request (its first seven bytes): the key id and suite.
pub fn parse_request_header(bytes: &[u8]) -> Result<Header, Error> {
    parse_header(bytes)
}

/// The gateway's side of one chunked request: opens its chunks in order.
pub struct RequestOpener {
    context: crate::ReceiverContext,
    response: ResponseKey,
    finished: bool,
}

impl std::fmt::Debug for RequestOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestOpener(<redacted>)")
    }
}

impl RequestOpener {
    /// Sets up the context from `hdr || enc` (exactly [`request_header_len`] bytes) with
    /// `key`, the key the header's id names.
    pub fn new(key: &PrivateKey, header_and_enc: &[u8]) -> Result<Self, Error> {
        let header = parse_header(header_and_enc)?;
        if header.suite.kem != key.suite().kem {
            return Err(Error::Unsupported);
        }
        if header_and_enc.len() != request_header_len(&header) {
            return Err(Error::Malformed);
        }
        let enc = &header_and_enc[HEADER_LEN..];
        let context = crate::setup_receiver_exporting(
            key,
            header.suite,
            enc,
            &header.info_with(REQUEST_LABEL),
        )
        .map_err(|_: OpenError| Error::Decryption)?;
        let secret = export_secret(
            &Exporting::Receiver(&context),
            header.suite.aead,
            RESPONSE_LABEL,
        )?;
        Ok(Self {
            context,
            response: ResponseKey {
                suite: header.suite,
                enc: enc.to_vec(),
                secret,
            },
            finished: false,
        })
    }

    /// The request's encapsulated key (a replay cache's key).
    pub fn enc(&self) -> &[u8] {
        &self.response.enc
    }

    /// Opens the next chunk (`ciphertext || tag`, without its length); `last` for the
    /// final one. Nothing opens after the final chunk.
    pub fn open_chunk(&mut self, sealed: &[u8], last: bool) -> Result<Zeroizing<Vec<u8>>, Error> {
        if self.finished {
            return Err(Error::Malformed);
        }
        let aad = if last { FINAL_AAD } else { &[] };
        let plain = self
            .context
            .open(aad, sealed)
            .map_err(|_| Error::Decryption)?;
        self.finished = last;
        Ok(Zeroizing::new(plain))
    }

    /// The sealer of the response, with a fresh response nonce from the system's random
    /// source: the nonce (the response's first bytes) and the sealer.
    pub fn response(&self) -> Result<(Vec<u8>, ResponseSealer), Error> {
        ResponseSealer::start(&self.response, &mut rand_core::UnwrapErr(getrandom::SysRng))
    }
}

/// Seals a chunked response's chunks in order.
pub struct ResponseSealer {
    sender: backend::Sender,
    finished: bool,
}

impl std::fmt::Debug for ResponseSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseSealer(<redacted>)")
    }
}

impl ResponseSealer {
    /// A sealer for the response to the request `key` came from, with a response nonce
    /// from `rng`: the nonce and the sealer.
    pub fn start(key: &ResponseKey, rng: &mut impl CryptoRng) -> Result<(Vec<u8>, Self), Error> {
        let mut nonce = vec![0u8; entropy_len(key.suite.aead)];
        rng.fill_bytes(&mut nonce);
        let sealer = Self::with_nonce(key, &nonce)?;
        Ok((nonce, sealer))
    }

    /// [`ResponseSealer::start`] with a given response nonce (`max(Nn, Nk)` bytes).
    pub fn with_nonce(key: &ResponseKey, response_nonce: &[u8]) -> Result<Self, Error> {
        if response_nonce.len() != entropy_len(key.suite.aead) {
            return Err(Error::Seal);
        }
        let (aead_key, aead_nonce) =
            response_keys(key.suite, &key.enc, &key.secret, response_nonce);
        let sender = backend::Sender::from_key(key.suite, &aead_key, &aead_nonce)
            .map_err(|()| Error::Seal)?;
        Ok(Self {
            sender,
            finished: false,
        })
    }

    /// Seals the next chunk (at most [`MAX_CHUNK_LEN`] bytes; `last` for the final one)
    /// and frames it: `length || sealed`, or `0 || sealed` for the final chunk.
    pub fn seal_chunk(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, Error> {
        let sender = &mut self.sender;
        seal_next(&mut self.finished, plaintext, last, |aad, buf| {
            sender.seal_in_place(aad, buf).map_err(|()| Error::Seal)
        })
    }
}

/// Seals and frames the next chunk of a message with `seal` (the sender's context):
/// `length || ciphertext || tag`, or `0 || ciphertext || tag` with AAD `"final"` for the
/// final one. Nothing seals after it; a non-final chunk is never empty.
fn seal_next(
    finished: &mut bool,
    plaintext: &[u8],
    last: bool,
    mut seal: impl FnMut(&[u8], &mut [u8]) -> Result<[u8; 16], Error>,
) -> Result<Vec<u8>, Error> {
    if *finished || plaintext.len() > MAX_CHUNK_LEN || (!last && plaintext.is_empty()) {
        return Err(Error::Seal);
    }
    let aad = if last { FINAL_AAD } else { &[] };
    let sealed_len = plaintext.len() + 16;
    let mut out = Vec::with_capacity(8 + sealed_len);
    write_varint(&mut out, if last { 0 } else { sealed_len as u64 });
    let start = out.len();
    out.extend_from_slice(plaintext);
    let tag = seal(aad, &mut out[start..])?;
    out.extend_from_slice(&tag);
    *finished = last;
    Ok(out)
}

/// A client's side of one chunked request: seals its chunks, then opens the response.
pub struct ClientRequest {
    context: crate::SenderContext,
    response: ResponseKey,
    finished: bool,
}

impl std::fmt::Debug for ClientRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientRequest(<redacted>)")
    }
}

/// Starts a chunked request to key configuration `key_id` (public key `public`) in
/// `suite`: its first bytes (`hdr || enc`) and the client. For tests and tools: the
/// gateway only opens.
pub fn seal_request_header(
    key_id: u8,
    public: &PublicKey,
    suite: crate::Suite,
) -> Result<(Vec<u8>, ClientRequest), Error> {
    seal_request_header_with_rng(
        key_id,
        public,
        suite,
        &mut rand_core::UnwrapErr(getrandom::SysRng),
    )
}

/// [`seal_request_header`] with the given random source.
pub fn seal_request_header_with_rng(
    key_id: u8,
    public: &PublicKey,
    suite: crate::Suite,
    rng: &mut impl CryptoRng,
) -> Result<(Vec<u8>, ClientRequest), Error> {
    let header = Header { key_id, suite };
    let (enc, context) = crate::setup_sender_exporting_with_rng(
        public,
        suite,
        &header.info_with(REQUEST_LABEL),
        rng,
    )
    .map_err(|_: SealError| Error::Seal)?;
    let secret = export_secret(&Exporting::Sender(&context), suite.aead, RESPONSE_LABEL)?;
    let mut out = Vec::with_capacity(HEADER_LEN + enc.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&enc);
    Ok((
        out,
        ClientRequest {
            context,
            response: ResponseKey { suite, enc, secret },
            finished: false,
        },
    ))
}

impl ClientRequest {
    /// Seals and frames the next request chunk (`last` for the final one).
    pub fn seal_chunk(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, Error> {
        let context = &mut self.context;
        seal_next(&mut self.finished, plaintext, last, |aad, buf| {
            context.seal_in_place(aad, buf).map_err(|_| Error::Seal)
        })
    }

    /// The length of the response nonce that starts the response.
    pub fn response_nonce_len(&self) -> usize {
        entropy_len(self.response.suite.aead)
    }

    /// The opener of the response that starts with `response_nonce`.
    pub fn response_opener(&self, response_nonce: &[u8]) -> Result<ResponseOpener, Error> {
        if response_nonce.len() != self.response_nonce_len() {
            return Err(Error::Malformed);
        }
        let r = &self.response;
        let (key, nonce) = response_keys(r.suite, &r.enc, &r.secret, response_nonce);
        let receiver =
            backend::Receiver::from_key(r.suite, &key, &nonce).map_err(|()| Error::Decryption)?;
        Ok(ResponseOpener {
            receiver,
            finished: false,
        })
    }
}

/// Opens a chunked response's chunks in order.
pub struct ResponseOpener {
    receiver: backend::Receiver,
    finished: bool,
}

impl std::fmt::Debug for ResponseOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseOpener(<redacted>)")
    }
}

impl ResponseOpener {
    /// Opens the next response chunk (`ciphertext || tag`); `last` for the final one.
    pub fn open_chunk(&mut self, sealed: &[u8], last: bool) -> Result<Vec<u8>, Error> {
        if self.finished || sealed.len() < 16 {
            return Err(Error::Malformed);
        }
        let aad = if last { FINAL_AAD } else { &[] };
        let mut body = sealed.to_vec();
        let split = body.len() - 16;
        let (plain, tag) = body.split_at_mut(split);
        self.receiver
            .open_in_place(aad, plain, tag)
            .map_err(|()| Error::Decryption)?;
        body.truncate(split);
        self.finished = last;
        Ok(body)
    }
}

/// Splits a stream of bytes into sealed chunks as they arrive: [`Deframer::push`] what
/// came, take each whole non-final chunk from [`Deframer::next_chunk`], and at the end of
/// the stream the final chunk from [`Deframer::finish`]. It holds at most one chunk
/// ([`MAX_SEALED_CHUNK_LEN`]) and what came after it.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Bytes of `buf` already taken.
    start: usize,
    /// A zero length came: the rest of the stream is the final chunk.
    in_final: bool,
}

impl Deframer {
    /// An empty deframer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes that arrived. Refuses a final chunk longer than a chunk may be.
    pub fn push(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        if self.in_final && self.buf.len() - self.start > MAX_SEALED_CHUNK_LEN {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// The next whole non-final chunk, if it has arrived. A zero length starts the final
    /// chunk (after which this says `None`); a length over [`MAX_SEALED_CHUNK_LEN`] is
    /// refused before its bytes come.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        if self.in_final {
            return Ok(None);
        }
        let rest = &self.buf[self.start..];
        let Some((len, used)) = read_varint(rest) else {
            return Ok(None);
        };
        if len == 0 {
            self.in_final = true;
            self.start += used;
            if self.buf.len() - self.start > MAX_SEALED_CHUNK_LEN {
                return Err(Error::Malformed);
            }
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| Error::Malformed)?;
        if len > MAX_SEALED_CHUNK_LEN {
            return Err(Error::Malformed);
        }
        if rest.len() - used < len {
            return Ok(None);
        }
        let chunk = rest[used..used + len].to_vec();
        self.start += used + len;
        Ok(Some(chunk))
    }

    /// At the end of the stream: the final chunk, or [`Error::Truncated`] if the stream
    /// ended before a zero length (a non-final chunk cut short included).
    pub fn finish(mut self) -> Result<Vec<u8>, Error> {
        if !self.in_final {
            return Err(Error::Truncated);
        }
        Ok(self.buf.split_off(self.start))
    }
}

/// Appends a QUIC variable-length integer (RFC 9000 §16) in its shortest form.
pub fn write_varint(out: &mut Vec<u8>, v: u64) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// Reads a QUIC variable-length integer: its value and length, or `None` if `bytes`
/// holds only part of it.
pub fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    let len = 1usize << (first >> 6);
    let raw = bytes.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &raw[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Suite;

    fn client_and_gateway(suite: Suite) -> (ClientRequest, RequestOpener, Vec<u8>) {
        let key = PrivateKey::generate();
        let (start, client) = seal_request_header(7, &key.public_key(), suite).unwrap();
        let opener = RequestOpener::new(&key, &start).unwrap();
        (client, opener, start)
    }

    #[test]
    fn chunks_round_trip_in_both_directions_in_every_aead() {
        for aead in super::super::AEADS {
            let suite = Suite {
                aead,
                ..Suite::X25519_AES_128_GCM
            };
            let (mut client, mut opener, _) = client_and_gateway(suite);
            let mut stream = Vec::new();
            stream.extend(client.seal_chunk(b"first", false).unwrap());
            stream.extend(client.seal_chunk(&[7u8; 300], false).unwrap());
            stream.extend(client.seal_chunk(b"last", true).unwrap());
            let mut deframer = Deframer::new();
            let mut got = Vec::new();
            // One byte at a time: every split of the framing.
            for b in &stream {
                deframer.push(&[*b]).unwrap();
                while let Some(chunk) = deframer.next_chunk().unwrap() {
                    got.extend_from_slice(&opener.open_chunk(&chunk, false).unwrap());
                }
            }
            let last = deframer.finish().unwrap();
            got.extend_from_slice(&opener.open_chunk(&last, true).unwrap());
            let mut want = b"first".to_vec();
            want.extend([7u8; 300]);
            want.extend(b"last");
            assert_eq!(got, want);

            let (nonce, mut sealer) = opener.response().unwrap();
            assert_eq!(nonce.len(), client.response_nonce_len());
            let a = sealer.seal_chunk(b"answer ", false).unwrap();
            let b = sealer.seal_chunk(b"done", true).unwrap();
            let mut reader = client.response_opener(&nonce).unwrap();
            let mut deframer = Deframer::new();
            deframer.push(&a).unwrap();
            deframer.push(&b).unwrap();
            let first = deframer.next_chunk().unwrap().unwrap();
            assert_eq!(reader.open_chunk(&first, false).unwrap(), b"answer ");
            assert!(deframer.next_chunk().unwrap().is_none());
            let last = deframer.finish().unwrap();
            assert_eq!(reader.open_chunk(&last, true).unwrap(), b"done");
        }
    }

    #[test]
    fn truncation_reordering_and_a_forged_final_marker_are_refused() {
        let (mut client, mut opener, _) = client_and_gateway(Suite::X25519_AES_128_GCM);
        let one = client.seal_chunk(b"one", false).unwrap();
        let two = client.seal_chunk(b"two", false).unwrap();
        // The stream ends after non-final chunks: truncated, whatever the cut.
        for cut in [0, 1, one.len(), one.len() + 3] {
            let mut d = Deframer::new();
            let mut s = one.clone();
            s.extend(&two);
            d.push(&s[..cut]).unwrap();
            while d.next_chunk().unwrap().is_some() {}
            assert_eq!(d.finish().unwrap_err(), Error::Truncated, "cut at {cut}");
        }
        // Chunk two first: does not open (the sequence number is in the nonce).
        assert_eq!(
            opener.open_chunk(&two[1..], false).unwrap_err(),
            Error::Decryption
        );
        // A non-final chunk presented as final (a relay dropping the rest): refused.
        assert_eq!(
            opener.open_chunk(&one[1..], true).unwrap_err(),
            Error::Decryption
        );
        assert_eq!(&opener.open_chunk(&one[1..], false).unwrap()[..], b"one");
    }

    #[test]
    fn oversized_chunks_are_refused_before_their_bytes_arrive() {
        let mut d = Deframer::new();
        let mut len = Vec::new();
        write_varint(&mut len, (MAX_SEALED_CHUNK_LEN + 1) as u64);
        d.push(&len).unwrap();
        assert_eq!(d.next_chunk().unwrap_err(), Error::Malformed);
        let mut d = Deframer::new();
        d.push(&[0]).unwrap();
        assert!(d.next_chunk().unwrap().is_none());
        assert_eq!(
            d.push(&vec![0u8; MAX_SEALED_CHUNK_LEN + 1]).unwrap_err(),
            Error::Malformed
        );
        let mut d = Deframer::new();
        write_varint(&mut len, u64::MAX >> 2);
        d.push(&[0xff; 8]).unwrap();
        assert_eq!(d.next_chunk().unwrap_err(), Error::Malformed);
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for v in [
            0,
            63,
            64,
            16383,
            16384,
            (1 << 30) - 1,
            1 << 30,
            (1 << 62) - 1,
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            assert_eq!(read_varint(&out), Some((v, out.len())));
            assert_eq!(read_varint(&out[..out.len() - 1]), None);
        }
    }
}
