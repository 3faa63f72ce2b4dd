#!/usr/bin/env python3
"""A Google Tink client of hpke-gateway: Tink's HybridEncrypt/HybridDecrypt, as the
vendor's Java examples use, with the same wire format.

  tink_client.py keys --dir DIR     customer keysets (TINK and RAW prefix), JSON
  tink_client.py run --url URL --server-public GATEWAY_KEYSET.json \
      --customer-private CUSTOMER_KEYSET.json --account ACCT --off-account ACCT_OFF --name NAME
"""

import argparse
import os
import sys

import tink
from tink import hybrid, secret_key_access

import common

# --- snippet: begin ---
import urllib.request

import tink
from tink import hybrid, secret_key_access

hybrid.register()

def post_encrypted(url, gateway_keyset_json, customer_keyset_json, account, passcode, body):
    """POST an encrypted body to the gateway and return the decrypted answer."""
    # The gateway's public keyset (hpke-gateway public-key --format tink-json).
    encrypt = tink.json_proto_keyset_format.parse_without_secret(
        gateway_keyset_json).primitive(hybrid.HybridEncrypt)
    # Your own private keyset; the gateway has its public half.
    decrypt = tink.json_proto_keyset_format.parse(
        customer_keyset_json, secret_key_access.TOKEN).primitive(hybrid.HybridDecrypt)
    context_info = account.encode("utf-8")  # the account id, in both directions
    request = urllib.request.Request(url, method="POST", data=encrypt.encrypt(body, context_info), headers={
        "Content-Type": "application/octet-stream+hpke",
        "Accept": "application/octet-stream+hpke",
        "X-CleverTap-Account-Id": account,
        "X-CleverTap-Passcode": passcode,
    })
    with urllib.request.urlopen(request) as response:  # raw bytes both ways, never base64
        return decrypt.decrypt(response.read(), context_info)
# --- snippet: end ---


def keys(directory):
    templates = hybrid.hybrid_key_templates
    for name, template in [
        ("tink", templates.DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM),
        ("raw", templates.DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM_RAW),
    ]:
        private = tink.new_keyset_handle(template)
        path = os.path.join(directory, f"tink-{name}-private.json")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(tink.json_proto_keyset_format.serialize(private, secret_key_access.TOKEN))
        with open(os.path.join(directory, f"tink-{name}-public.json"), "w") as f:
            f.write(tink.json_proto_keyset_format.serialize_without_secret(private.public_keyset_handle()))
    return 0


def run(args):
    with open(args.server_public) as f:
        encrypt = tink.json_proto_keyset_format.parse_without_secret(f.read()).primitive(
            hybrid.HybridEncrypt)
    with open(args.customer_private) as f:
        decrypt = tink.json_proto_keyset_format.parse(
            f.read(), secret_key_access.TOKEN).primitive(hybrid.HybridDecrypt)
    return common.run_cases(
        args,
        seal=lambda account, pt: encrypt.encrypt(pt, account.encode("utf-8")),
        open_=lambda account, ct: decrypt.decrypt(ct, account.encode("utf-8")),
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
