#!/usr/bin/env python3
"""An RFC 9180 client of hpke-gateway built on pyhpke, without Tink framing: the
envelope is enc || ciphertext. Key files are read and written with `cryptography`;
HTTP is the standard library's.

  pyhpke_client.py keys --dir DIR
      writes the customer key: pyhpke-customer.pem (PKCS#8), pyhpke-customer.pub.pem
      (SPKI) and pyhpke-customer.pub.b64 (the raw 32 bytes, base64)
  pyhpke_client.py run --url URL --server-public GATEWAY.pub.pem|GATEWAY.pub.b64 \\
      --customer-private CUSTOMER.pem --account ACCT --off-account ACCT_OFF --name NAME \\
      [--suite x25519-aes-256-gcm|x25519-aes-128-gcm|x25519-chacha20-poly1305]
      runs the interop cases (see common.py), one JSON line each

The gateway's public key comes from
`hpke-gateway public-key --key server-1.pem --format pem` (or `--format raw`).
"""

import argparse
import base64
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

import common

# --- snippet: begin ---
import urllib.request

from pyhpke import AEADId, CipherSuite, KDFId, KEMId

SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
HPKE = "application/octet-stream+hpke"

def seal_request(gateway_public_raw, account, plaintext):
    """Encrypt to the gateway's 32-byte X25519 public key: enc || ciphertext."""
    key = SUITE.kem.deserialize_public_key(gateway_public_raw)
    enc, sender = SUITE.create_sender_context(key, info=account.encode("utf-8"))  # info = account id
    return enc + sender.seal(plaintext, aad=b"")

def open_response(customer_private_raw, account, envelope):
    """Decrypt the gateway's answer with your private key: the first 32 bytes are enc."""
    key = SUITE.kem.deserialize_private_key(customer_private_raw)
    recipient = SUITE.create_recipient_context(envelope[:32], key, info=account.encode("utf-8"))
    return recipient.open(envelope[32:], aad=b"")

def post_encrypted(url, account, headers, plaintext, gateway_public_raw, customer_private_raw):
    """POST `plaintext` encrypted to the gateway; return (HTTP status, decrypted answer)."""
    body = seal_request(gateway_public_raw, account, plaintext)
    request = urllib.request.Request(url, method="POST", data=body, headers={
        "Content-Type": HPKE, "Accept": HPKE, "X-CleverTap-Account-Id": account, **headers})
    # Raw bytes both ways, never base64. A refusal (4xx, plain JSON) raises urllib.error.HTTPError.
    with urllib.request.urlopen(request, timeout=60) as response:
        if response.headers.get_content_type() != HPKE:
            raise ValueError(f"HTTP {response.status}: not encrypted ({response.headers['Content-Type']})")
        return response.status, open_response(customer_private_raw, account, response.read())

# status, answer = post_encrypted("https://gateway.example.com/1/upload", "ACCT-1",
#     {"X-CleverTap-Passcode": passcode}, upload_json, gateway_public_raw, customer_private_raw)
# --- snippet: end ---


def keys(directory):
    os.makedirs(directory, exist_ok=True)
    private = x25519.X25519PrivateKey.generate()
    public = private.public_key()
    common.write_private(
        os.path.join(directory, "pyhpke-customer.pem"),
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
    common.write_public(
        os.path.join(directory, "pyhpke-customer.pub.pem"),
        public.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo))
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    common.write_public(
        os.path.join(directory, "pyhpke-customer.pub.b64"), base64.b64encode(raw) + b"\n")
    return 0


def read_public_raw(path):
    """The gateway's public key, SPKI PEM or raw 32 bytes in base64, as raw bytes."""
    with open(path, "rb") as f:
        data = f.read().strip()
    if data.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, x25519.X25519PublicKey):
            raise SystemExit(f"{path}: not an X25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raw = base64.b64decode(data, validate=True)
    if len(raw) != 32:
        raise SystemExit(f"{path}: {len(raw)} bytes, expected a 32-byte X25519 public key")
    return raw


def read_private_raw(path):
    """Your private key, unencrypted PKCS#8 PEM, as raw 32 bytes."""
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, x25519.X25519PrivateKey):
        raise SystemExit(f"{path}: not an X25519 private key")
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


# The gateway's X25519 suites by name: the AEAD is the only difference.
AEADS = {
    "x25519-aes-256-gcm": AEADId.AES256_GCM,
    "x25519-aes-128-gcm": AEADId.AES128_GCM,
    "x25519-chacha20-poly1305": AEADId.CHACHA20_POLY1305,
}


def run(args):
    global SUITE
    SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADS[args.suite])
    server = read_public_raw(args.server_public)
    customer = read_private_raw(args.customer_private)
    return common.run_cases(
        args,
        seal=lambda account, pt: seal_request(server, account, pt),
        open_=lambda account, ct: open_response(customer, account, ct),
        post=lambda url, account, headers, pt: post_encrypted(
            url, account, headers, pt, server, customer),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("keys", help="write a customer key").add_argument("--dir", required=True)
    run_parser = sub.add_parser("run", help="run the interop cases against a gateway")
    common.add_run_arguments(run_parser)
    run_parser.add_argument("--suite", choices=sorted(AEADS), default="x25519-aes-256-gcm")
    args = parser.parse_args()
    return keys(args.dir) if args.command == "keys" else run(args)


if __name__ == "__main__":
    sys.exit(main())
