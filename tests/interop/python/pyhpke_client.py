#!/usr/bin/env python3
"""An RFC 9180 client of hpke-gateway built on pyhpke (no Tink framing): the
envelope is enc || ciphertext. Key files are PEM or raw base64 (cryptography).

  pyhpke_client.py keys --dir DIR   customer key: PKCS#8 PEM, SPKI PEM, raw base64
  pyhpke_client.py run --url URL --server-public GATEWAY.pem|GATEWAY.b64 \
      --customer-private CUSTOMER.pem --account ACCT --off-account ACCT_OFF --name NAME
"""

import argparse
import base64
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

import common

# --- snippet: begin ---
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)

def seal_request(gateway_public_raw: bytes, account: str, plaintext: bytes) -> bytes:
    """Encrypt a request body to the gateway: enc || ciphertext, sent as raw bytes."""
    key = SUITE.kem.deserialize_public_key(gateway_public_raw)  # 32 bytes (public-key --format raw)
    enc, sender = SUITE.create_sender_context(key, info=account.encode("utf-8"))
    return enc + sender.seal(plaintext, aad=b"")

def open_response(customer_private_raw: bytes, account: str, envelope: bytes) -> bytes:
    """Decrypt the gateway's answer with your private key: the first 32 bytes are enc."""
    key = SUITE.kem.deserialize_private_key(customer_private_raw)
    recipient = SUITE.create_recipient_context(envelope[:32], key, info=account.encode("utf-8"))
    return recipient.open(envelope[32:], aad=b"")
# --- snippet: end ---


def keys(directory):
    private = x25519.X25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = os.path.join(directory, "pyhpke-customer.pem")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(pem)
    public = private.public_key()
    with open(os.path.join(directory, "pyhpke-customer.pub.pem"), "wb") as f:
        f.write(public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with open(os.path.join(directory, "pyhpke-customer.pub.b64"), "w") as f:
        f.write(base64.b64encode(raw).decode("ascii") + "\n")
    return 0


def read_public_raw(path):
    with open(path, "rb") as f:
        data = f.read()
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64decode(data.strip())


def read_private_raw(path):
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def run(args):
    server = read_public_raw(args.server_public)
    customer = read_private_raw(args.customer_private)
    return common.run_cases(
        args,
        seal=lambda account, pt: seal_request(server, account, pt),
        open_=lambda account, ct: open_response(customer, account, ct),
    )


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("keys").add_argument("--dir", required=True)
    common.add_run_arguments(sub.add_parser("run"))
    args = parser.parse_args()
    return keys(args.dir) if args.command == "keys" else run(args)


if __name__ == "__main__":
    sys.exit(main())
