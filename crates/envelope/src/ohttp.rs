//! Oblivious HTTP's encapsulation (RFC 9458 §3-4): key configurations, encapsulated
//! requests and responses, over this crate's HPKE.
//!
//! A request is `hdr || enc || ct` with `hdr = key_id (1) || kem_id (2) || kdf_id (2) ||
//! aead_id (2)`, sealed with `info = "message/bhttp request" || 0x00 || hdr` and empty
//! AAD. The response is `response_nonce || ct`, sealed with a key and nonce derived from
//! the request context's exported secret (§4.4). Everything here is bytes in, bytes out:
//! which key a key id names, Binary HTTP and HTTP itself are the gateway's business.

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::schedule::Hkdf as _;
use crate::suite::{Aead, Kdf, Kem, Suite};
use crate::{OpenError, PrivateKey, PublicKey, SealError, backend};

pub mod chunked;

/// `"message/bhttp request"`: the request's HPKE `info` starts with it.
pub const REQUEST_LABEL: &[u8] = b"message/bhttp request";
/// `"message/bhttp response"`: the exporter context of the response secret.
pub const RESPONSE_LABEL: &[u8] = b"message/bhttp response";
/// The media type of an encapsulated request.
pub const REQUEST_MEDIA_TYPE: &str = "message/ohttp-req";
/// The media type of an encapsulated response.
pub const RESPONSE_MEDIA_TYPE: &str = "message/ohttp-res";
/// The media type of key configurations (RFC 9540 §3).
pub const KEYS_MEDIA_TYPE: &str = "application/ohttp-keys";

/// The length of a request header.
pub const HEADER_LEN: usize = 7;

/// The symmetric algorithms a key configuration offers: every AEAD this crate has, with
/// HKDF-SHA256.
pub const AEADS: [Aead; 3] = [Aead::Aes128Gcm, Aead::Aes256Gcm, Aead::ChaCha20Poly1305];

/// Why an encapsulated request or response was refused. The gateway answers the first
/// two outside the encapsulation (RFC 9458 §5.2: 400, and 422 for a key it does not have
/// or algorithms it does not support); a failed decryption says nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than its header, its `enc` and a tag.
    #[error("malformed encapsulation")]
    Malformed,
    /// The header names a KEM, KDF or AEAD that is not offered, or a KEM that is not the
    /// key's.
    #[error("unsupported key or algorithms")]
    Unsupported,
    /// The AEAD or the KEM refused: "decryption failed".
    #[error("decryption failed")]
    Decryption,
    /// A chunked message ended before its final chunk.
    #[error("truncated message")]
    Truncated,
    /// Sealing failed.
    #[error("encapsulation failed")]
    Seal,
}

/// One key configuration (RFC 9458 §3.1): `key_id || kem_id || public key ||
/// length (2) || (kdf_id || aead_id)...`, with HKDF-SHA256 and every AEAD in `aeads`.
pub fn key_config(key_id: u8, public: &PublicKey, aeads: &[Aead]) -> Vec<u8> {
    let pk = public.as_bytes();
    let mut out = Vec::with_capacity(1 + 2 + pk.len() + 2 + 4 * aeads.len());
    out.push(key_id);
    out.extend_from_slice(&public.suite().kem.id().to_be_bytes());
    out.extend_from_slice(pk);
    let len = u16::try_from(4 * aeads.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    for aead in aeads {
        out.extend_from_slice(&Kdf::HkdfSha256.id().to_be_bytes());
        out.extend_from_slice(&aead.id().to_be_bytes());
    }
    out
}

/// Key configurations as `application/ohttp-keys` serves them (RFC 9540 §3): each one
/// preceded by its length in two bytes.
pub fn key_configs(configs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for config in configs {
        let len = u16::try_from(config.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(config);
    }
    out
}

/// A request's header: which key, and in which suite it was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The key configuration's id.
    pub key_id: u8,
    /// KEM, KDF and AEAD.
    pub suite: Suite,
}

impl Header {
    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut hdr = [0u8; HEADER_LEN];
        hdr[0] = self.key_id;
        hdr[1..3].copy_from_slice(&self.suite.kem.id().to_be_bytes());
        hdr[3..5].copy_from_slice(&self.suite.kdf.id().to_be_bytes());
        hdr[5..7].copy_from_slice(&self.suite.aead.id().to_be_bytes());
        hdr
    }

    /// `"message/bhttp request" || 0x00 || hdr`.
    fn info(self) -> Vec<u8> {
        self.info_with(REQUEST_LABEL)
    }

    /// `label || 0x00 || hdr`.
    fn info_with(self, label: &[u8]) -> Vec<u8> {
        let mut info = Vec::with_capacity(label.len() + 1 + HEADER_LEN);
        info.extend_from_slice(label);
        info.push(0);
        info.extend_from_slice(&self.to_bytes());
        info
    }
}

/// Reads a request's header: the key id (to find the key) and the suite. Algorithms this
/// crate does not have are [`Error::Unsupported`]; fewer than seven bytes
/// [`Error::Malformed`].
pub fn parse_header(request: &[u8]) -> Result<Header, Error> {
    let hdr: &[u8; HEADER_LEN] = request
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(Error::Malformed)?;
    let kem = match u16::from_be_bytes([hdr[1], hdr[2]]) {
        id if id == Kem::X25519HkdfSha256.id() => Kem::X25519HkdfSha256,
        id if id == Kem::XWing.id() => Kem::XWing,
        _ => return Err(Error::Unsupported),
    };
    if u16::from_be_bytes([hdr[3], hdr[4]]) != Kdf::HkdfSha256.id() {
        return Err(Error::Unsupported);
    }
    let aead = AEADS
        .into_iter()
        .find(|a| a.id() == u16::from_be_bytes([hdr[5], hdr[6]]))
        .ok_or(Error::Unsupported)?;
    Ok(Header {
        key_id: hdr[0],
        suite: Suite {
            kem,
            kdf: Kdf::HkdfSha256,
            aead,
        },
    })
}

/// What the gateway keeps of a request to encapsulate its response: `enc` and the
/// exported secret (wiped on drop).
pub struct ResponseKey {
    suite: Suite,
    enc: Vec<u8>,
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ResponseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseKey(<redacted>)")
    }
}

/// `max(Nn, Nk)`: the response nonce's length and the exported secret's.
fn entropy_len(aead: Aead) -> usize {
    aead.nonce_len().max(aead.key_len())
}

// RFC 9458 §4.3
//   hdr, enc, ct = parse(enc_request)
//   info = concat(encode_str("message/bhttp request"), encode(1, 0), hdr)
//   context = SetupBaseR(enc, skR, info)
//   request = context.Open("", ct)
/// Opens an encapsulated request with `key`, the key its header's id names. Returns the
/// Binary HTTP request and what the response needs.
pub fn open_request(key: &PrivateKey, request: &[u8]) -> Result<(Vec<u8>, ResponseKey), Error> {
    let header = parse_header(request)?;
    if header.suite.kem != key.suite().kem {
        return Err(Error::Unsupported);
    }
    let enc_len = header.suite.kem.enc_len();
    let rest = &request[HEADER_LEN..];
    if rest.len() < enc_len + header.suite.aead.tag_len() {
        return Err(Error::Malformed);
    }
    let (enc, ct) = rest.split_at(enc_len);
    let mut context = crate::setup_receiver_exporting(key, header.suite, enc, &header.info())
        .map_err(|_: OpenError| Error::Decryption)?;
    let plaintext = context.open(&[], ct).map_err(|_| Error::Decryption)?;
    let secret = export_secret(
        &Exporting::Receiver(&context),
        header.suite.aead,
        RESPONSE_LABEL,
    )?;
    Ok((
        plaintext,
        ResponseKey {
            suite: header.suite,
            enc: enc.to_vec(),
            secret,
        },
    ))
}

/// The exporter of either side of a context.
enum Exporting<'a> {
    Receiver(&'a crate::ReceiverContext),
    Sender(&'a crate::SenderContext),
}

// RFC 9458 §4.4: secret = context.Export("message/bhttp response", max(Nn, Nk)) (and
// "message/bhttp chunked response" for chunked messages)
fn export_secret(
    context: &Exporting<'_>,
    aead: Aead,
    label: &[u8],
) -> Result<Zeroizing<[u8; 32]>, Error> {
    let mut secret = Zeroizing::new([0u8; 32]);
    match entropy_len(aead) {
        16 => {
            let s = match context {
                Exporting::Receiver(c) => c.export::<16>(label),
                Exporting::Sender(c) => c.export::<16>(label),
            }
            .map_err(|_| Error::Decryption)?;
            secret[..16].copy_from_slice(&*s);
        }
        _ => {
            let s = match context {
                Exporting::Receiver(c) => c.export::<32>(label),
                Exporting::Sender(c) => c.export::<32>(label),
            }
            .map_err(|_| Error::Decryption)?;
            secret.copy_from_slice(&*s);
        }
    }
    Ok(secret)
}

// RFC 9458 §4.4
//   salt = concat(enc, response_nonce)
//   prk = Extract(salt, secret)
//   aead_key = Expand(prk, "key", Nk)
//   aead_nonce = Expand(prk, "nonce", Nn)
fn response_keys(
    suite: Suite,
    enc: &[u8],
    secret: &[u8; 32],
    response_nonce: &[u8],
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 12]>) {
    let n = entropy_len(suite.aead);
    let mut salt = Vec::with_capacity(enc.len() + response_nonce.len());
    salt.extend_from_slice(enc);
    salt.extend_from_slice(response_nonce);
    let prk = backend::Hkdf::extract(&salt, &[&secret[..n]]);
    let mut key = Zeroizing::new([0u8; 32]);
    if suite.aead.key_len() == 16 {
        let mut short = [0u8; 16];
        backend::Hkdf::expand(&prk, &[b"key"], &mut short);
        key[..16].copy_from_slice(&short);
        zeroize::Zeroize::zeroize(&mut short);
    } else {
        backend::Hkdf::expand(&prk, &[b"key"], &mut key);
    }
    let mut nonce = Zeroizing::new([0u8; 12]);
    backend::Hkdf::expand(&prk, &[b"nonce"], &mut nonce);
    (key, nonce)
}

impl ResponseKey {
    /// The request's encapsulated key: unique to each request (a replay cache's key).
    pub fn enc(&self) -> &[u8] {
        &self.enc
    }

    /// Encapsulates a Binary HTTP response with a fresh response nonce from the system's
    /// random source.
    pub fn seal(&self, response: &[u8]) -> Result<Vec<u8>, Error> {
        self.seal_with_rng(response, &mut rand_core::UnwrapErr(getrandom::SysRng))
    }

    /// [`ResponseKey::seal`] with the given random source.
    pub fn seal_with_rng(
        &self,
        response: &[u8],
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; 32];
        let n = entropy_len(self.suite.aead);
        rng.fill_bytes(&mut nonce[..n]);
        self.seal_with_nonce(response, &nonce[..n])
    }

    // RFC 9458 §4.4
    //   ct = Seal(aead_key, aead_nonce, "", response)
    //   enc_response = concat(response_nonce, ct)
    /// [`ResponseKey::seal`] with a given response nonce (`max(Nn, Nk)` bytes): for
    /// published examples only.
    pub fn seal_with_nonce(
        &self,
        response: &[u8],
        response_nonce: &[u8],
    ) -> Result<Vec<u8>, Error> {
        if response_nonce.len() != entropy_len(self.suite.aead) {
            return Err(Error::Seal);
        }
        let (key, nonce) = response_keys(self.suite, &self.enc, &self.secret, response_nonce);
        let mut sender =
            backend::Sender::from_key(self.suite, &key, &nonce).map_err(|()| Error::Seal)?;
        let mut out = Vec::with_capacity(response_nonce.len() + response.len() + 16);
        out.extend_from_slice(response_nonce);
        out.extend_from_slice(response);
        let tag = sender
            .seal_in_place(&[], &mut out[response_nonce.len()..])
            .map_err(|()| Error::Seal)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }
}

/// A client's side of one exchange: seals the request, keeps what opens the response.
pub struct ClientRequest {
    response: ResponseKey,
}

impl std::fmt::Debug for ClientRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientRequest(<redacted>)")
    }
}

// RFC 9458 §4.3
//   hdr = concat(encode(1, key_id), encode(2, kem_id), encode(2, kdf_id), encode(2, aead_id))
//   info = concat(encode_str("message/bhttp request"), encode(1, 0), hdr)
//   enc, sctxt = SetupBaseS(pkR, info)
//   ct = sctxt.Seal("", request)
//   enc_request = concat(hdr, enc, ct)
/// Encapsulates a Binary HTTP request to key configuration `key_id` (whose public key is
/// `public`) in `suite`, with the system's random source. For tests and the command line:
/// the gateway only opens.
pub fn seal_request(
    key_id: u8,
    public: &PublicKey,
    suite: Suite,
    request: &[u8],
) -> Result<(Vec<u8>, ClientRequest), Error> {
    seal_request_with_rng(
        key_id,
        public,
        suite,
        request,
        &mut rand_core::UnwrapErr(getrandom::SysRng),
    )
}

/// [`seal_request`] with the given random source.
pub fn seal_request_with_rng(
    key_id: u8,
    public: &PublicKey,
    suite: Suite,
    request: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<(Vec<u8>, ClientRequest), Error> {
    let header = Header { key_id, suite };
    let (enc, context) = crate::setup_sender_exporting_with_rng(public, suite, &header.info(), rng)
        .map_err(|_: SealError| Error::Seal)?;
    finish_request(header, enc, context, request)
}

/// [`seal_request`] with a given X25519 ephemeral key, to reproduce RFC 9458 Appendix A.
/// Never use a fixed ephemeral key.
#[doc(hidden)]
pub fn seal_request_with_ephemeral(
    key_id: u8,
    public: &PublicKey,
    suite: Suite,
    request: &[u8],
    ephemeral: &PrivateKey,
) -> Result<(Vec<u8>, ClientRequest), Error> {
    let header = Header { key_id, suite };
    let (enc, context) =
        crate::setup_sender_exporting_with_ephemeral(public, suite, &header.info(), ephemeral)
            .map_err(|_: SealError| Error::Seal)?;
    finish_request(header, enc, context, request)
}

fn finish_request(
    header: Header,
    enc: Vec<u8>,
    mut context: crate::SenderContext,
    request: &[u8],
) -> Result<(Vec<u8>, ClientRequest), Error> {
    let suite = header.suite;
    let ct = context.seal(&[], request).map_err(|_| Error::Seal)?;
    let secret = export_secret(&Exporting::Sender(&context), suite.aead, RESPONSE_LABEL)?;
    let mut out = Vec::with_capacity(HEADER_LEN + enc.len() + ct.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&enc);
    out.extend_from_slice(&ct);
    Ok((
        out,
        ClientRequest {
            response: ResponseKey { suite, enc, secret },
        },
    ))
}

impl ClientRequest {
    // RFC 9458 §4.4 (client): the same keys from `enc`, the secret and the nonce.
    /// Opens the encapsulated response to this request.
    pub fn open_response(&self, response: &[u8]) -> Result<Vec<u8>, Error> {
        let r = &self.response;
        let n = entropy_len(r.suite.aead);
        if response.len() < n + r.suite.aead.tag_len() {
            return Err(Error::Malformed);
        }
        let (response_nonce, ct) = response.split_at(n);
        let (key, nonce) = response_keys(r.suite, &r.enc, &r.secret, response_nonce);
        let mut receiver =
            backend::Receiver::from_key(r.suite, &key, &nonce).map_err(|()| Error::Decryption)?;
        let mut body = ct.to_vec();
        let split = body.len() - r.suite.aead.tag_len();
        let (plain, tag) = body.split_at_mut(split);
        receiver
            .open_in_place(&[], plain, tag)
            .map_err(|()| Error::Decryption)?;
        body.truncate(split);
        Ok(body)
    }
}
