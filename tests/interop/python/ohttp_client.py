#!/usr/bin/env python3
"""An independent Oblivious HTTP (RFC 9458) client of hpke-gateway. HPKE is pyhpke's
(base mode, with its secret export), the response key's HKDF is the standard library's
hmac, the response AEAD is `cryptography`'s, HTTP is urllib's. Binary HTTP (RFC 9292)
is written here from the RFC; no OHTTP or BHTTP library is used.

  ohttp_client.py selftest
      reproduces RFC 9458 Appendix A: the key configuration, the encapsulated request
      from skE, its decapsulation with skR, the exported secret, the encapsulated
      response from the given response nonce and its decryption, the Binary HTTP request
      (GET https://example.com/) and response (200); RFC 9292 §5's four example messages
      decoded and re-encoded byte for byte (and its truncations); Binary HTTP round trips
      in both framings (informational responses, trailers, truncation, padding); RFC 9000's
      varint examples. One JSON line; exit 1 on any mismatch.
  ohttp_client.py keys --keys URL
      fetches and parses the key configurations (application/ohttp-keys, RFC 9540)
  ohttp_client.py run --gateway URL --keys URL [--key-id N] \\
      [--aead aes-128-gcm|aes-256-gcm|chacha20-poly1305] [--indeterminate] \\
      --method M --authority A [--scheme https] --path P [--header 'name: value' ...] \\
      [--body-hex HEX] [--chunk-size N] [--truncate] [--padding N] [--inner-hex HEX] \\
      [--chunked N [--omit-final-chunk]]
      picks the first X25519 configuration (or the one --key-id names) offering
      HKDF-SHA256 with the AEAD, encodes the inner request (known-length; with
      --indeterminate indeterminate-length, the content in --chunk-size chunks; --truncate
      leaves off trailing empty sections, --padding adds zero bytes; --inner-hex sends those
      bytes instead, for malformed inner requests), seals it (with --chunked N as a
      chunked request, draft-ietf-ohai-chunked-ohttp, in N-byte chunks, POSTed as
      message/ohttp-chunked-req, its chunked response opened chunk by chunk and refused
      without its final chunk), POSTs it as message/ohttp-req and prints
      {"outer_status": 200, "outer_content_type": "message/ohttp-res", "inner_status": 200,
       "inner_headers": [["name", "value"], ...], "inner_body_hex": "...", ...}
      or, for an outer answer other than 200,
      {"outer_status": N, "outer_content_type": "...", "outer_body": "<text>"} (exit 0).
  ohttp_client.py raw --gateway URL --body-hex HEX
      POSTs exactly those bytes as message/ohttp-req and prints
      {"outer_status": N, "outer_content_type": "...", "outer_body": "...", "outer_body_hex": "..."}

A failure of the client itself (no usable key configuration, a 200 answer that does not
decrypt or decode) prints {"error": "..."} with whatever was known and exits 1. The
gateway's key configurations are at /.well-known/ohttp-keys, its resource at
[ohttp] path (default /.well-known/ohttp-gateway).
"""

import argparse
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.request

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, KEMKeyPair

REQUEST_MEDIA_TYPE = "message/ohttp-req"
RESPONSE_MEDIA_TYPE = "message/ohttp-res"
KEYS_MEDIA_TYPE = "application/ohttp-keys"
REQUEST_LABEL = b"message/bhttp request"
RESPONSE_LABEL = b"message/bhttp response"
# Chunked Oblivious HTTP (draft-ietf-ohai-chunked-ohttp).
CHUNKED_REQUEST_MEDIA_TYPE = "message/ohttp-chunked-req"
CHUNKED_RESPONSE_MEDIA_TYPE = "message/ohttp-chunked-res"
CHUNKED_REQUEST_LABEL = b"message/bhttp chunked request"
CHUNKED_RESPONSE_LABEL = b"message/bhttp chunked response"
FINAL_AAD = b"final"

KEM_X25519 = 0x0020
KEM_XWING = 0x647A
KDF_HKDF_SHA256 = 0x0001
# Npk of the KEMs a configuration may name (RFC 9180 §7.1, X-Wing draft): only X25519 is used.
NPK = {0x0010: 65, 0x0011: 97, 0x0012: 133, KEM_X25519: 32, 0x0021: 56, KEM_XWING: 1216}
# AEAD id -> (name, Nk, Nn, cryptography class)
AEADS = {
    0x0001: ("aes-128-gcm", 16, 12, AESGCM),
    0x0002: ("aes-256-gcm", 32, 12, AESGCM),
    0x0003: ("chacha20-poly1305", 32, 12, ChaCha20Poly1305),
}
AEAD_BY_NAME = {name: aead_id for aead_id, (name, _, _, _) in AEADS.items()}


# --- Binary HTTP (RFC 9292) -------------------------------------------------------------

class Malformed(ValueError):
    """A Binary HTTP message or OHTTP structure that does not parse."""


def varint(value):
    """A QUIC variable-length integer (RFC 9000 §16), in its shortest form."""
    if value < 0:
        raise ValueError("negative varint")
    if value < 1 << 6:
        return value.to_bytes(1, "big")
    if value < 1 << 14:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 1 << 30:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value < 1 << 62:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise ValueError("varint too large")


def length_prefixed(data):
    return varint(len(data)) + data


class Reader:
    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0

    def at_end(self):
        return self.pos >= len(self.data)

    def take(self, n):
        if n > len(self.data) - self.pos:
            raise Malformed(f"truncated: {n} bytes wanted at offset {self.pos}, "
                            f"{len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self):
        first = self.take(1)[0]
        size = 1 << (first >> 6)
        value = first & 0x3F
        for b in self.take(size - 1):
            value = (value << 8) | b
        return value

    def vbytes(self):
        return self.take(self.varint())


def encode_fields(fields, indeterminate):
    body = b"".join(length_prefixed(n) + length_prefixed(v) for n, v in fields)
    if indeterminate:
        return body + varint(0)
    return length_prefixed(body)


def encode_content(content, indeterminate, chunk_size=None):
    if not indeterminate:
        return length_prefixed(content)
    out = b""
    step = chunk_size or len(content) or 1
    for i in range(0, len(content), step):
        out += length_prefixed(content[i:i + step])
    return out + varint(0)


def _finish(parts, indeterminate, truncate):
    """parts = [prefix, header, content, trailer]; with `truncate`, trailing empty sections
    are left off (RFC 9292 §3.8)."""
    prefix, sections = parts[0], parts[1:]
    if truncate:
        while sections and sections[-1] == varint(0):  # an empty section, either framing
            sections.pop()
    return prefix + b"".join(sections)


def encode_request(method, scheme, authority, path, headers=(), content=b"", trailers=(),
                   indeterminate=False, chunk_size=None, truncate=False, padding=0):
    control = b"".join(length_prefixed(x) for x in (method, scheme, authority, path))
    parts = [varint(2 if indeterminate else 0) + control,
             encode_fields(headers, indeterminate),
             encode_content(content, indeterminate, chunk_size),
             encode_fields(trailers, indeterminate)]
    return _finish(parts, indeterminate, truncate) + b"\x00" * padding


def encode_response(status, headers=(), content=b"", trailers=(), informational=(),
                    indeterminate=False, chunk_size=None, truncate=False, padding=0):
    prefix = varint(3 if indeterminate else 1)
    for info_status, info_fields in informational:
        prefix += varint(info_status) + encode_fields(info_fields, indeterminate)
    prefix += varint(status)
    parts = [prefix,
             encode_fields(headers, indeterminate),
             encode_content(content, indeterminate, chunk_size),
             encode_fields(trailers, indeterminate)]
    return _finish(parts, indeterminate, truncate) + b"\x00" * padding


def _decode_pairs(r, until_empty_name):
    fields = []
    while True:
        if until_empty_name:
            name = r.vbytes()
            if not name:
                return fields
        else:
            if r.at_end():
                return fields
            name = r.vbytes()
            if not name:
                raise Malformed("empty field name")
        fields.append((name, r.vbytes()))


def decode_fields(r, indeterminate):
    if indeterminate:
        return _decode_pairs(r, until_empty_name=True)
    return _decode_pairs(Reader(r.vbytes()), until_empty_name=False)


def decode_content(r, indeterminate):
    if not indeterminate:
        return r.vbytes()
    out = b""
    while True:
        chunk = r.vbytes()
        if not chunk:
            return out
        out += chunk


def decode_message(data):
    """A Binary HTTP message as a dict. Trailing empty sections may be missing (RFC 9292
    §3.8: missing = empty); what follows a complete message must be zero padding."""
    r = Reader(data)
    framing = r.varint()
    if framing not in (0, 1, 2, 3):
        raise Malformed(f"unknown framing indicator {framing}")
    indeterminate = framing >= 2
    msg = {"framing": framing, "indeterminate": indeterminate}
    if framing in (0, 2):
        msg["kind"] = "request"
        for part in ("method", "scheme", "authority", "path"):
            msg[part] = r.vbytes()
    else:
        msg["kind"] = "response"
        informational = []
        while True:
            status = r.varint()
            if 100 <= status <= 199:
                informational.append((status, decode_fields(r, indeterminate)))
            elif 200 <= status <= 599:
                break
            else:
                raise Malformed(f"status {status} out of range")
        msg["informational"] = informational
        msg["status"] = status
    msg["headers"], msg["content"], msg["trailers"] = [], b"", []
    msg["truncated"] = True
    if r.at_end():
        return msg
    msg["headers"] = decode_fields(r, indeterminate)
    if r.at_end():
        return msg
    msg["content"] = decode_content(r, indeterminate)
    if r.at_end():
        return msg
    msg["trailers"] = decode_fields(r, indeterminate)
    msg["truncated"] = False
    rest = r.data[r.pos:]
    if rest.strip(b"\x00"):
        raise Malformed(f"{len(rest)} bytes after the message, not all zero padding")
    msg["padding"] = len(rest)
    return msg


# --- Key configurations (RFC 9458 §3, RFC 9540) --------------------------------------------

def parse_key_config(data):
    r = Reader(data)
    key_id = r.take(1)[0]
    kem_id = int.from_bytes(r.take(2), "big")
    if kem_id not in NPK:
        raise Malformed(f"key {key_id}: unknown KEM 0x{kem_id:04x}")
    public_key = r.take(NPK[kem_id])
    algs = r.take(int.from_bytes(r.take(2), "big"))
    if not algs or len(algs) % 4:
        raise Malformed(f"key {key_id}: algorithm list of {len(algs)} bytes")
    if not r.at_end():
        raise Malformed(f"key {key_id}: {len(data) - r.pos} bytes after the configuration")
    pairs = [(int.from_bytes(algs[i:i + 2], "big"), int.from_bytes(algs[i + 2:i + 4], "big"))
             for i in range(0, len(algs), 4)]
    return {"key_id": key_id, "kem_id": kem_id, "public_key": public_key, "algorithms": pairs}


def parse_key_configs(data):
    """application/ohttp-keys: [2-byte length][config] ..."""
    r = Reader(data)
    configs = []
    while not r.at_end():
        configs.append(parse_key_config(r.take(int.from_bytes(r.take(2), "big"))))
    return configs


def choose_config(configs, aead_id, key_id=None):
    for c in configs:
        if key_id is not None and c["key_id"] != key_id:
            continue
        if c["kem_id"] != KEM_X25519:
            continue  # X-Wing and others: pyhpke cannot encapsulate to them
        if (KDF_HKDF_SHA256, aead_id) in c["algorithms"]:
            return c
    return None


# --- Encapsulation (RFC 9458 §4.3, §4.4) ---------------------------------------------------

def suite(aead_id):
    return CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId(aead_id))


def request_header(key_id, aead_id):
    return (bytes([key_id]) + KEM_X25519.to_bytes(2, "big") + KDF_HKDF_SHA256.to_bytes(2, "big")
            + aead_id.to_bytes(2, "big"))


def x25519_pair(sk_raw):
    sk = x25519.X25519PrivateKey.from_private_bytes(sk_raw)
    return KEMKeyPair(KEMKey.from_pyca_cryptography_key(sk),
                      KEMKey.from_pyca_cryptography_key(sk.public_key()))


def encapsulate_request(key_id, public_key, aead_id, plaintext, ephemeral_sk=None):
    """(encapsulated request, HPKE sender context, enc). `ephemeral_sk` is for the test
    vector only."""
    hdr = request_header(key_id, aead_id)
    cs = suite(aead_id)
    pkr = cs.kem.deserialize_public_key(public_key)
    eks = x25519_pair(ephemeral_sk) if ephemeral_sk is not None else None
    enc, ctx = cs.create_sender_context(pkr, info=REQUEST_LABEL + b"\x00" + hdr, eks=eks)
    return hdr + enc + ctx.seal(plaintext, aad=b""), ctx, enc


def decapsulate_request(sk_raw, encapsulated):
    """The gateway's side, for the self test: (plaintext, recipient context, enc, aead_id)."""
    hdr, enc, ct = encapsulated[:7], encapsulated[7:39], encapsulated[39:]
    aead_id = int.from_bytes(hdr[5:7], "big")
    cs = suite(aead_id)
    ctx = cs.create_recipient_context(enc, cs.kem.deserialize_private_key(sk_raw),
                                      info=REQUEST_LABEL + b"\x00" + hdr)
    return ctx.open(ct, aad=b""), ctx, enc, aead_id


def encapsulate_chunked_request(key_id, public_key, aead_id, plaintext, chunk_size,
                                omit_final=False):
    """A chunked request: hdr || enc, then `length || sealed` per chunk of `chunk_size`
    plaintext bytes (empty AAD), the last as `0 || sealed` with AAD "final" (left off
    with `omit_final`, to test truncation). (bytes, HPKE sender context, enc, chunks)."""
    hdr = request_header(key_id, aead_id)
    cs = suite(aead_id)
    pkr = cs.kem.deserialize_public_key(public_key)
    enc, ctx = cs.create_sender_context(pkr, info=CHUNKED_REQUEST_LABEL + b"\x00" + hdr)
    pieces = [plaintext[i:i + chunk_size] for i in range(0, len(plaintext), chunk_size)]
    out = hdr + enc
    for i, piece in enumerate(pieces):
        if i == len(pieces) - 1:
            if not omit_final:
                out += varint(0) + ctx.seal(piece, aad=FINAL_AAD)
        else:
            sealed = ctx.seal(piece, aad=b"")
            out += varint(len(sealed)) + sealed
    return out, ctx, enc, len(pieces)


def open_chunked_response(ctx, enc, aead_id, data):
    """(plaintext, number of chunks) of a chunked response: the response nonce, then
    chunks sealed with the key and nonce of RFC 9458 §4.4 from the "message/bhttp chunked
    response" secret, each chunk's nonce XORed with its counter, the final one (length 0,
    to the end) with AAD "final". Raises Malformed if the final chunk is missing."""
    _, nk, nn, cls = AEADS[aead_id]
    n = max(nn, nk)
    if len(data) < n:
        raise Malformed(f"chunked response of {len(data)} bytes, shorter than its nonce")
    secret = ctx.export(CHUNKED_RESPONSE_LABEL, n)
    prk = hkdf_extract(enc + data[:n], secret)
    aead = cls(hkdf_expand(prk, b"key", nk))
    base = hkdf_expand(prk, b"nonce", nn)
    r = Reader(data[n:])
    out, counter = b"", 0
    while True:
        if r.at_end():
            raise Malformed(f"the response ended after {counter} chunks, without its final chunk")
        length = r.varint()
        nonce = bytes(a ^ b for a, b in zip(base, counter.to_bytes(nn, "big")))
        if length == 0:
            out += aead.decrypt(nonce, r.take(len(r.data) - r.pos), FINAL_AAD)
            return out, counter + 1
        out += aead.decrypt(nonce, r.take(length), b"")
        counter += 1


def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, length):
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def response_aead(ctx, enc, aead_id, response_nonce):
    """The response AEAD and its nonce from the exported secret (RFC 9458 §4.4)."""
    _, nk, nn, cls = AEADS[aead_id]
    secret = ctx.export(RESPONSE_LABEL, max(nn, nk))
    prk = hkdf_extract(enc + response_nonce, secret)
    return cls(hkdf_expand(prk, b"key", nk)), hkdf_expand(prk, b"nonce", nn)


def response_nonce_len(aead_id):
    _, nk, nn, _ = AEADS[aead_id]
    return max(nn, nk)


def open_response(ctx, enc, aead_id, encapsulated):
    n = response_nonce_len(aead_id)
    if len(encapsulated) < n + 16:
        raise Malformed(f"encapsulated response of {len(encapsulated)} bytes, shorter than "
                        f"the {n}-byte nonce and the tag")
    aead, nonce = response_aead(ctx, enc, aead_id, encapsulated[:n])
    return aead.decrypt(nonce, encapsulated[n:], b"")


def seal_response(ctx, enc, aead_id, response_nonce, plaintext):
    """The gateway's side, for the self test."""
    aead, nonce = response_aead(ctx, enc, aead_id, response_nonce)
    return response_nonce + aead.encrypt(nonce, plaintext, b"")


# --- HTTP ----------------------------------------------------------------------------------

def http(url, method="GET", body=None, headers=None):
    """(status, Content-Type header or None, headers, body); error statuses are answers."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, res.headers.get("Content-Type"), res.headers, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type"), err.headers, err.read()


def post_ohttp(url, body):
    return http(url, "POST", body, {"Content-Type": REQUEST_MEDIA_TYPE,
                                    "Accept": RESPONSE_MEDIA_TYPE})


def media_type(content_type):
    return (content_type or "").split(";")[0].strip().lower()


def text(b):
    return b.decode("utf-8", errors="replace")


def pairs_json(fields):
    return [[text(n), text(v)] for n, v in fields]


def emit(obj):
    print(json.dumps(obj), flush=True)


def fetch_configs(url):
    status, ctype, headers, body = http(url, headers={"Accept": KEYS_MEDIA_TYPE})
    info = {"keys_status": status, "keys_content_type": ctype,
            "keys_cache_control": headers.get("Cache-Control")}
    if status != 200:
        raise ClientError(f"key configurations: HTTP {status}: {text(body)[:500]}", info)
    if media_type(ctype) != KEYS_MEDIA_TYPE:
        raise ClientError(f"key configurations: Content-Type {ctype!r}", info)
    try:
        return parse_key_configs(body), info
    except Malformed as e:
        raise ClientError(f"key configurations: {e}", info) from e


class ClientError(Exception):
    def __init__(self, message, info=None):
        super().__init__(message)
        self.info = info or {}


def configs_json(configs):
    return [{"key_id": c["key_id"], "kem_id": c["kem_id"],
             "public_key_len": len(c["public_key"]),
             "public_key_hex": c["public_key"].hex() if c["kem_id"] == KEM_X25519 else None,
             "algorithms": [list(a) for a in c["algorithms"]]} for c in configs]


def cmd_keys(args):
    try:
        configs, info = fetch_configs(args.keys)
    except ClientError as e:
        emit({**e.info, "error": str(e)})
        return 1
    emit({**info, "configs": configs_json(configs)})
    return 0


def parse_header_arg(h):
    name, sep, value = h.partition(":")
    if not sep or not name.strip():
        raise SystemExit(f"--header {h!r}: expected 'name: value'")
    return name.strip().lower().encode("latin-1"), value.strip(" \t").encode("latin-1")


def cmd_run(args):
    aead_id = AEAD_BY_NAME[args.aead]
    try:
        configs, info = fetch_configs(args.keys)
    except ClientError as e:
        emit({**e.info, "error": str(e)})
        return 1
    config = choose_config(configs, aead_id, args.key_id)
    if config is None:
        emit({**info, "configs": configs_json(configs),
              "error": f"no X25519 configuration{'' if args.key_id is None else f' with key id {args.key_id}'} "
                       f"offers HKDF-SHA256 with {args.aead}"})
        return 1
    if args.inner_hex is not None:
        inner = bytes.fromhex(args.inner_hex)
    else:
        inner = encode_request(
            args.method.encode("ascii"), args.scheme.encode("ascii"),
            args.authority.encode("ascii"), args.path.encode("ascii"),
            headers=[parse_header_arg(h) for h in args.header],
            content=bytes.fromhex(args.body_hex),
            indeterminate=args.indeterminate, chunk_size=args.chunk_size, truncate=args.truncate,
            padding=args.padding)
    chunks_sent = None
    if args.chunked is not None:
        encapsulated, ctx, enc, chunks_sent = encapsulate_chunked_request(
            config["key_id"], config["public_key"], aead_id, inner, args.chunked,
            omit_final=args.omit_final_chunk)
        status, ctype, _, body = http(args.gateway, "POST", encapsulated,
                                      {"Content-Type": CHUNKED_REQUEST_MEDIA_TYPE,
                                       "Accept": CHUNKED_RESPONSE_MEDIA_TYPE})
        want_type = CHUNKED_RESPONSE_MEDIA_TYPE
    else:
        encapsulated, ctx, enc = encapsulate_request(config["key_id"], config["public_key"],
                                                     aead_id, inner)
        status, ctype, _, body = post_ohttp(args.gateway, encapsulated)
        want_type = RESPONSE_MEDIA_TYPE
    out = {"outer_status": status, "outer_content_type": ctype}
    if chunks_sent is not None:
        out["request_chunks"] = chunks_sent
    if status != 200:
        emit({**out, "outer_body": text(body)})
        return 0
    if media_type(ctype) != want_type:
        emit({**out, "outer_body": text(body), "error": f"a 200 answer that is not {want_type}"})
        return 1
    try:
        if args.chunked is not None:
            plaintext, out["response_chunks"] = open_chunked_response(ctx, enc, aead_id, body)
        else:
            plaintext = open_response(ctx, enc, aead_id, body)
    except Exception as e:  # InvalidTag or Malformed
        emit({**out, "outer_body_hex": body.hex(),
              "error": f"the response does not decrypt: {type(e).__name__} {e}"})
        return 1
    try:
        msg = decode_message(plaintext)
        if msg["kind"] != "response":
            raise Malformed(f"framing indicator {msg['framing']} is a request's")
    except Malformed as e:
        emit({**out, "inner_hex": plaintext.hex(), "error": f"inner response: {e}"})
        return 1
    emit({**out,
          "key_id": config["key_id"], "aead": args.aead,
          "inner_framing": msg["framing"],
          "inner_status": msg["status"],
          "inner_informational": [[s, pairs_json(f)] for s, f in msg["informational"]],
          "inner_headers": pairs_json(msg["headers"]),
          "inner_body_hex": msg["content"].hex(),
          "inner_trailers": pairs_json(msg["trailers"])})
    return 0


def cmd_raw(args):
    status, ctype, _, body = post_ohttp(args.gateway, bytes.fromhex(args.body_hex))
    emit({"outer_status": status, "outer_content_type": ctype, "outer_body": text(body),
          "outer_body_hex": body.hex()})
    return 0


# --- Self test -----------------------------------------------------------------------------

# RFC 9458 Appendix A (see /tmp/rfc9458-appendix-a.txt for provenance).
A_SKR = "3c168975674b2fa8e465970b79c8dcf09f1c741626480bd4c6162fc5b6a98e1a"
A_KEY_CONFIG = ("01002031e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e798155"
                "00080001000100010003")
A_REQUEST = "00034745540568747470730b6578616d706c652e636f6d012f"
A_SKE = "bc51d5e930bda26589890ac7032f70ad12e4ecb37abb1b65b1256c9c48999c73"
A_ENC = "4b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472"
A_ENC_REQUEST = ("010020000100014b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472"
                 "6374e469135906992e1268c594d2a10c695d858c40a026e7965e7d86b83dd440b2c0185204b4d63525")
A_RESPONSE = "0140c8"
A_SECRET = "62d87a6ba569ee81014c2641f52bea36"
A_RESPONSE_NONCE = "c789e7151fcba46158ca84b04464910d"
A_PRK = "979aaeae066cf211ab407b31ae49767f344e1501e475c84e8aff547cc5a683db"
A_AEAD_KEY = "5d0172a080e428b16d298c4ea0db620d"
A_AEAD_NONCE = "f6bf1aeb88d6df87007fa263"
A_ENC_RESPONSE = "c789e7151fcba46158ca84b04464910d86f9013e404feea014e7be4a441f234f857fbd"

# RFC 9292 §5's examples (hex dumps joined).
R_REQUEST_KNOWN = (
    "00034745540568747470730" "00a2f68656c6c6f2e747874406c0a757365722d61"
    "67656e7434637572 6c2f372e31362e33206c6962 6375726c2f372e31362e3320"
    "4f70656e53534c2f302e392e376c207a6c69622f312e322e3304686f73740f77"
    "77772e6578616d706c652e636f6d0f61 63636570742d6c616e677561676506 65"
    "6e2c206d690000").replace(" ", "")
R_REQUEST_INDETERMINATE = (
    "020347455405687474707300 0a2f68656c6c6f2e7478740a757365722d616765"
    "6e743463 75726c2f372e31362e33206c69626375726c2f372e31362e33204f70"
    "656e53534c2f302e392e376c207a6c69622f312e322e3304686f73740f777777"
    "2e6578616d706c652e636f6d0f6163636570742d6c616e677561676506656e2c"
    "206d6900000000000000000000000000").replace(" ", "")
R_RESPONSE_INDETERMINATE = (
    "0340660772756e6e696e670a22736c6565702031352200406704 6c696e6b233c"
    "2f7374796c652e6373733e3b2072656c3d7072656c6f61643b2061733d737479"
    "6c65046c696e6b243c2f7363726970742e6a733e3b2072656c3d7072656c6f61"
    "643b2061733d7363726970740040c80464617465 1d4d6f6e2c203237204a756c"
    "20323030392031323a32383a353320474d540673657276657206417061636865"
    "0d6c6173742d6d6f6469666965641d5765642c203232204a756c2032303039 20"
    "31393a31353a353620474d540465746167142233346161333837 2d642d313536"
    "38656230302 20d6163636570742d72616e676573056279746573 0e636f6e7465"
    "6e742d6c656e677468023531047661 72790f4163636570742d456e636f64696e"
    "670c636f6e74656e742d747970650a746578742f706c61696e003348656c6c6f"
    "20576f726c6421204d7920636f6e74656e7420696e636c756465732061207472"
    "61696c696e672043524c462e0d0a0000").replace(" ", "")
R_RESPONSE_KNOWN = ("0140c8001d5468697320636f6e74656e7420636f6e7461696e732043524c462e"
                    "0d0a0d07747261696c65720474657874")


def selftest():
    checks, failures = [0], []

    def check(name, got, want):
        checks[0] += 1
        if got != want:
            g = got.hex() if isinstance(got, bytes) else got
            w = want.hex() if isinstance(want, bytes) else want
            failures.append(f"{name}: got {g!r}, want {w!r}")

    def raises(name, fn):
        checks[0] += 1
        try:
            fn()
        except (Malformed, ValueError, InvalidTag):
            return
        failures.append(f"{name}: accepted")

    h = bytes.fromhex
    try:
        # Key configuration.
        [config] = parse_key_configs(len(h(A_KEY_CONFIG)).to_bytes(2, "big") + h(A_KEY_CONFIG))
        pk_r = x25519.X25519PrivateKey.from_private_bytes(h(A_SKR)).public_key().public_bytes_raw()
        check("A key config: key id", config["key_id"], 1)
        check("A key config: kem", config["kem_id"], KEM_X25519)
        check("A key config: pkR = X25519(skR)", config["public_key"], pk_r)
        check("A key config: algorithms", config["algorithms"], [(1, 1), (1, 3)])
        check("A key config: chosen for aes-128-gcm", choose_config([config], 1), config)
        check("A key config: none for aes-256-gcm", choose_config([config], 2), None)

        # Binary HTTP request, both ways.
        req = decode_message(h(A_REQUEST))
        check("A request: decoded", (req["kind"], req["method"], req["scheme"], req["authority"],
                                     req["path"], req["headers"], req["content"], req["trailers"]),
              ("request", b"GET", b"https", b"example.com", b"/", [], b"", []))
        check("A request: encoded (truncated)",
              encode_request(b"GET", b"https", b"example.com", b"/", truncate=True), h(A_REQUEST))

        # Encapsulated request from skE.
        encapsulated, s_ctx, enc = encapsulate_request(1, config["public_key"], 1, h(A_REQUEST),
                                                       ephemeral_sk=h(A_SKE))
        check("A enc = pkE", enc, h(A_ENC))
        check("A encapsulated request from skE", encapsulated, h(A_ENC_REQUEST))
        check("A exported secret (sender)", s_ctx.export(RESPONSE_LABEL, 16), h(A_SECRET))

        # The gateway's side: decapsulate with skR, seal the response with the nonce.
        plaintext, r_ctx, r_enc, aead_id = decapsulate_request(h(A_SKR), h(A_ENC_REQUEST))
        check("A request decapsulated with skR", (plaintext, r_enc, aead_id),
              (h(A_REQUEST), h(A_ENC), 1))
        check("A exported secret (recipient)", r_ctx.export(RESPONSE_LABEL, 16), h(A_SECRET))
        prk = hkdf_extract(h(A_ENC) + h(A_RESPONSE_NONCE), h(A_SECRET))
        check("A prk", prk, h(A_PRK))
        check("A aead_key", hkdf_expand(prk, b"key", 16), h(A_AEAD_KEY))
        check("A aead_nonce", hkdf_expand(prk, b"nonce", 12), h(A_AEAD_NONCE))
        check("A encapsulated response re-sealed",
              seal_response(r_ctx, r_enc, 1, h(A_RESPONSE_NONCE), h(A_RESPONSE)),
              h(A_ENC_RESPONSE))

        # The client's side: open the published response.
        response = open_response(s_ctx, enc, 1, h(A_ENC_RESPONSE))
        check("A response opened", response, h(A_RESPONSE))
        res = decode_message(response)
        check("A response: decoded", (res["kind"], res["status"], res["informational"],
                                      res["headers"], res["content"], res["trailers"]),
              ("response", 200, [], [], b"", []))
        check("A response: encoded (truncated)", encode_response(200, truncate=True),
              h(A_RESPONSE))
        tampered = bytearray(h(A_ENC_RESPONSE))
        tampered[-1] ^= 1
        checks[0] += 1
        try:
            open_response(s_ctx, enc, 1, bytes(tampered))
            failures.append("A response with a flipped bit: opened")
        except Exception:
            pass

        # Every AEAD round-trips, with a nonce of max(Nn, Nk).
        for aead_id, (name, nk, nn, _) in AEADS.items():
            ct, sc, e = encapsulate_request(7, pk_r, aead_id, b"hello")
            pt, rc, re_, got_aead = decapsulate_request(h(A_SKR), ct)
            check(f"{name}: request round trip", (pt, got_aead), (b"hello", aead_id))
            nonce = bytes(range(max(nn, nk)))
            sealed = seal_response(rc, re_, aead_id, nonce, b"world")
            check(f"{name}: response length", len(sealed), max(nn, nk) + 5 + 16)
            check(f"{name}: response round trip", open_response(sc, e, aead_id, sealed), b"world")

        # RFC 9000 §A.1's varint examples.
        for enc_hex, value in (("c2197c5eff14e88c", 151288809941952652), ("9d7f3e7d", 494878333),
                               ("7bbd", 15293), ("25", 37), ("4025", 37)):
            check(f"varint {enc_hex}", Reader(h(enc_hex)).varint(), value)
        for value in (0, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, (1 << 62) - 1):
            check(f"varint {value} round trip", Reader(varint(value)).varint(), value)
        raises("varint 2^62", lambda: varint(1 << 62))

        # Binary HTTP round trips.
        headers = [(b"content-type", b"application/json"), (b"x-clevertap-account-id", b"ACCT")]
        body = b'{"a":1}' * 20
        for indeterminate in (False, True):
            for chunk in (None, 3):
                for truncate in (False, True):
                    for padding in (0, 5):
                        enc_req = encode_request(b"POST", b"https", b"api.example.com",
                                                 b"/1/upload?x=1", headers, body, [(b"t", b"v")],
                                                 indeterminate, chunk, truncate, padding)
                        m = decode_message(enc_req)
                        check(f"request ind={indeterminate} chunk={chunk} pad={padding}",
                              (m["framing"], m["method"], m["path"], m["headers"], m["content"],
                               m["trailers"]),
                              (2 if indeterminate else 0, b"POST", b"/1/upload?x=1", headers,
                               body, [(b"t", b"v")]))
                        enc_res = encode_response(
                            201, headers, body, [], [(100, []), (103, [(b"link", b"</a>")])],
                            indeterminate, chunk, truncate, padding)
                        m = decode_message(enc_res)
                        check(f"response ind={indeterminate} chunk={chunk} pad={padding}",
                              (m["framing"], m["informational"], m["status"], m["headers"],
                               m["content"], m["trailers"]),
                              (3 if indeterminate else 1, [(100, []), (103, [(b"link", b"</a>")])],
                               201, headers, body, []))
        check("known-length request bytes",
              encode_request(b"GET", b"https", b"a", b"/", [(b"x", b"y")], b"ab"),
              h("0003474554056874747073016101") + h("2f") + h("0401780179") + h("026162") + h("00"))
        check("indeterminate request bytes",
              encode_request(b"GET", b"https", b"a", b"/", [(b"x", b"y")], b"ab",
                             indeterminate=True, chunk_size=1),
              h("0203474554056874747073016101") + h("2f") + h("0178017900") + h("01610162" "00")
              + h("00"))
        check("indeterminate response, empty body",
              encode_response(404, indeterminate=True), h("03419400" "00" "00"))
        check("missing trailer = empty", decode_message(h("0140c8" "00" "0161"))["trailers"], [])
        check("missing content = empty", decode_message(h("0140c8" "00"))["content"], b"")
        check("indeterminate, missing trailer",
              decode_message(h("0340c8" "0161016200" "01780179" "00"))["headers"], [(b"a", b"b")])
        raises("non-zero padding", lambda: decode_message(h("0140c8" "00" "00" "00" "0001")))
        raises("truncated inside content", lambda: decode_message(h("0140c8" "00" "0561")))
        raises("truncated inside a field section", lambda: decode_message(h("0140c8" "05016101")))
        raises("indeterminate field section without its end",
               lambda: decode_message(h("0340c8" "01610162")))
        raises("status 99", lambda: decode_message(h("0140" "63")))
        raises("status 600", lambda: decode_message(h("014258")))
        raises("framing 4", lambda: decode_message(h("04")))
        raises("empty field name, known length", lambda: decode_message(h("0140c8" "020000")))
        raises("short key config", lambda: parse_key_configs(h("0005" "0100200000")))

        # RFC 9292 §5's examples, decoded and re-encoded byte for byte.
        hello = (b"GET", b"https", b"", b"/hello.txt",
                 [(b"user-agent", b"curl/7.16.3 libcurl/7.16.3 OpenSSL/0.9.7l zlib/1.2.3"),
                  (b"host", b"www.example.com"), (b"accept-language", b"en, mi")], b"", [])
        fields = lambda m: (m["method"], m["scheme"], m["authority"], m["path"], m["headers"],
                            m["content"], m["trailers"])
        known, indet = h(R_REQUEST_KNOWN), h(R_REQUEST_INDETERMINATE)
        check("RFC 9292 known-length request", fields(decode_message(known)), hello)
        check("RFC 9292 known-length request re-encoded", encode_request(*hello[:4], hello[4]), known)
        for cut in (1, 2):
            check(f"RFC 9292 known-length request less {cut} bytes",
                  fields(decode_message(known[:-cut])), hello)
        check("RFC 9292 indeterminate-length request", fields(decode_message(indet)), hello)
        check("RFC 9292 indeterminate-length request padding", decode_message(indet)["padding"], 10)
        check("RFC 9292 indeterminate-length request re-encoded",
              encode_request(*hello[:4], hello[4], indeterminate=True, padding=10), indet)
        for cut in range(1, 13):
            check(f"RFC 9292 indeterminate-length request less {cut} bytes",
                  fields(decode_message(indet[:-cut])), hello)
        raises("RFC 9292 indeterminate-length request less 13 bytes",
               lambda: decode_message(indet[:-13]))
        res = decode_message(h(R_RESPONSE_INDETERMINATE))
        link = [(b"link", b"</style.css>; rel=preload; as=style"),
                (b"link", b"</script.js>; rel=preload; as=script")]
        headers = [(b"date", b"Mon, 27 Jul 2009 12:28:53 GMT"), (b"server", b"Apache"),
                   (b"last-modified", b"Wed, 22 Jul 2009 19:15:56 GMT"),
                   (b"etag", b'"34aa387-d-1568eb00"'), (b"accept-ranges", b"bytes"),
                   (b"content-length", b"51"), (b"vary", b"Accept-Encoding"),
                   (b"content-type", b"text/plain")]
        content = b"Hello World! My content includes a trailing CRLF.\r\n"
        check("RFC 9292 indeterminate-length response",
              (res["informational"], res["status"], res["headers"], res["content"], res["trailers"]),
              ([(102, [(b"running", b'"sleep 15"')]), (103, link)], 200, headers, content, []))
        check("RFC 9292 indeterminate-length response re-encoded",
              encode_response(200, headers, content, [], [(102, [(b"running", b'"sleep 15"')]),
                                                          (103, link)], indeterminate=True),
              h(R_RESPONSE_INDETERMINATE))
        res = decode_message(h(R_RESPONSE_KNOWN))
        check("RFC 9292 known-length response",
              (res["status"], res["headers"], res["content"], res["trailers"]),
              (200, [], b"This content contains CRLF.\r\n", [(b"trailer", b"text")]))
        check("RFC 9292 known-length response re-encoded",
              encode_response(200, [], b"This content contains CRLF.\r\n", [(b"trailer", b"text")]),
              h(R_RESPONSE_KNOWN))
        # Chunked OHTTP: a request sealed here opens chunk by chunk with a recipient
        # context (the gateway's side, written from the draft), and a response sealed
        # chunk by chunk opens, refused without its final chunk or with it moved.
        sk = x25519.X25519PrivateKey.generate()
        pk = sk.public_key().public_bytes_raw()
        for aead_id in AEADS:
            req, ctx, enc, n = encapsulate_chunked_request(1, pk, aead_id, b"0123456789" * 5, 16)
            check("chunked request chunk count", n, 4)
            cs = suite(aead_id)
            rctx = cs.create_recipient_context(
                req[7:39], cs.kem.deserialize_private_key(sk.private_bytes_raw()),
                info=CHUNKED_REQUEST_LABEL + b"\x00" + req[:7])
            r, got = Reader(req[39:]), b""
            while True:
                length = r.varint()
                if length == 0:
                    got += rctx.open(r.take(len(r.data) - r.pos), aad=FINAL_AAD)
                    break
                got += rctx.open(r.take(length), aad=b"")
            check(f"chunked request opens ({aead_id:#x})", got, b"0123456789" * 5)
            _, nk, nn, cls = AEADS[aead_id]
            nonce_len = max(nn, nk)
            response_nonce = bytes(range(nonce_len))
            prk = hkdf_extract(enc + response_nonce, rctx.export(CHUNKED_RESPONSE_LABEL, nonce_len))
            aead, base = cls(hkdf_expand(prk, b"key", nk)), hkdf_expand(prk, b"nonce", nn)
            def chunk_nonce(i):
                return bytes(a ^ b for a, b in zip(base, i.to_bytes(nn, "big")))
            first = aead.encrypt(chunk_nonce(0), b"abc", b"")
            final = aead.encrypt(chunk_nonce(1), b"def", FINAL_AAD)
            whole = response_nonce + varint(len(first)) + first + varint(0) + final
            check(f"chunked response opens ({aead_id:#x})",
                  open_chunked_response(ctx, enc, aead_id, whole), (b"abcdef", 2))
            raises("chunked response without its final chunk",
                   lambda: open_chunked_response(ctx, enc, aead_id,
                                                 response_nonce + varint(len(first)) + first))
            raises("chunked response with a non-final chunk as final",
                   lambda: open_chunked_response(ctx, enc, aead_id,
                                                 response_nonce + varint(0) + first))
    except Exception as e:  # a crash is a failure too
        failures.append(f"crashed: {type(e).__name__}: {e}")
    emit({"selftest": "fail" if failures else "ok", "checks": checks[0], "failures": failures})
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("selftest", help="RFC 9458 Appendix A and Binary HTTP round trips")
    keys = sub.add_parser("keys", help="fetch and parse the key configurations")
    keys.add_argument("--keys", required=True, help="e.g. http://127.0.0.1:8080/.well-known/ohttp-keys")
    run = sub.add_parser("run", help="one request through the gateway")
    run.add_argument("--gateway", required=True,
                     help="the gateway resource, e.g. http://127.0.0.1:8080/.well-known/ohttp-gateway")
    run.add_argument("--keys", required=True, help="the key configurations' URL")
    run.add_argument("--key-id", type=int, help="the configuration's key id (default: the first usable)")
    run.add_argument("--aead", choices=sorted(AEAD_BY_NAME), default="aes-128-gcm")
    run.add_argument("--indeterminate", action="store_true",
                     help="indeterminate-length inner request (default: known-length)")
    run.add_argument("--chunk-size", type=int, help="content chunk size with --indeterminate")
    run.add_argument("--truncate", action="store_true",
                     help="leave trailing empty sections off the inner request (RFC 9292 §3.8)")
    run.add_argument("--padding", type=int, default=0, help="zero bytes after the inner request")
    run.add_argument("--chunked", type=int, metavar="N",
                     help="send a chunked request (message/ohttp-chunked-req) of N-byte "
                          "chunks, and open the chunked response")
    run.add_argument("--omit-final-chunk", action="store_true",
                     help="with --chunked: leave the final chunk off (a truncated request)")
    run.add_argument("--method")
    run.add_argument("--scheme", default="https")
    run.add_argument("--authority")
    run.add_argument("--path", help="path and query")
    run.add_argument("--header", action="append", default=[], help="'name: value', repeatable")
    run.add_argument("--body-hex", default="", help="the inner request's content, hex")
    run.add_argument("--inner-hex",
                     help="send these bytes as the inner request instead of encoding one "
                          "(for hostile-input tests; --method/--authority/--path not needed)")
    raw = sub.add_parser("raw", help="POST exact bytes as message/ohttp-req")
    raw.add_argument("--gateway", required=True)
    raw.add_argument("--body-hex", required=True)
    args = parser.parse_args()
    if args.command == "selftest":
        return selftest()
    if args.command == "keys":
        return cmd_keys(args)
    if args.command == "run":
        if args.chunk_size is not None and args.chunk_size < 1:
            parser.error("--chunk-size must be at least 1")
        if args.chunked is not None and args.chunked < 1:
            parser.error("--chunked must be at least 1")
        if args.inner_hex is None and None in (args.method, args.authority, args.path):
            parser.error("run needs --method, --authority and --path (or --inner-hex)")
        return cmd_run(args)
    return cmd_raw(args)


if __name__ == "__main__":
    sys.exit(main())
