#!/usr/bin/env python3
"""A Google Tink client of hpke-gateway: Tink's own HybridEncrypt/HybridDecrypt (as in
the vendor's Java examples), same wire format, standard-library HTTP.

  tink_client.py keys --dir DIR [--template TEMPLATE ...]
      writes customer keysets made by Tink, JSON: tink-tink-{private,public}.json
      (TINK prefix) and tink-raw-{private,public}.json (RAW prefix); with --template,
      tink-TEMPLATE-{private,public}.json for each of Tink's HPKE templates named
  tink_client.py run --url URL --server-public GATEWAY_PUBLIC_KEYSET.json|published[:SUITE] \\
      --customer-private CUSTOMER_PRIVATE_KEYSET.json --account ACCT --off-account ACCT_OFF --name NAME
      runs the interop cases (see common.py), one JSON line each

The gateway's public keyset comes from
`hpke-gateway public-key --key server-1.pem --format tink-json [--key-id N]`, or, with
`published:SUITE`, from the gateway's /.well-known/hpke-keys?suite=SUITE.
"""

import argparse
import os
import sys

import common

# --- snippet: begin ---
import urllib.request

import tink
from tink import hybrid, secret_key_access

hybrid.register()
HPKE = "application/octet-stream+hpke"

def post_encrypted(url, account, headers, plaintext, gateway_keyset_json, customer_keyset_json):
    """POST `plaintext` encrypted to the gateway; return (HTTP status, decrypted answer)."""
    # The gateway's public keyset (hpke-gateway public-key --format tink-json [--key-id N]).
    encrypt = tink.json_proto_keyset_format.parse_without_secret(
        gateway_keyset_json).primitive(hybrid.HybridEncrypt)
    # Your own private keyset; the gateway's config has its public half for this account.
    decrypt = tink.json_proto_keyset_format.parse(
        customer_keyset_json, secret_key_access.TOKEN).primitive(hybrid.HybridDecrypt)
    info = account.encode("utf-8")  # HPKE info = the account id, in both directions
    request = urllib.request.Request(url, method="POST", data=encrypt.encrypt(plaintext, info), headers={
        "Content-Type": HPKE, "Accept": HPKE, "X-CleverTap-Account-Id": account, **headers})
    # Raw bytes both ways, never base64. A refusal (4xx, plain JSON) raises urllib.error.HTTPError.
    with urllib.request.urlopen(request, timeout=60) as response:
        if response.headers.get_content_type() != HPKE:
            raise ValueError(f"HTTP {response.status}: not encrypted ({response.headers['Content-Type']})")
        return response.status, decrypt.decrypt(response.read(), info)

# status, answer = post_encrypted("https://gateway.example.com/1/upload", "ACCT-1",
#     {"X-CleverTap-Passcode": passcode}, upload_json, gateway_keyset_json, customer_keyset_json)
# --- snippet: end ---

# --- snippet: begin pq ---
def new_keyset(template="X_WING_HKDF_SHA256_HKDF_SHA256_AES_256_GCM"):
    """Once: your keyset (post-quantum X-Wing by default). Keep the private JSON secret;
    send us the public JSON. It names its own suite: nothing else to declare."""
    private = tink.new_keyset_handle(getattr(hybrid.hybrid_key_templates, template))
    return (tink.json_proto_keyset_format.serialize(private, secret_key_access.TOKEN),
            tink.json_proto_keyset_format.serialize_without_secret(private.public_keyset_handle()))

def gateway_keyset(gateway, suite="xwing-aes-256-gcm"):
    """Before uploading: the gateway's keys of one suite, as a public keyset whose
    primary (the key Tink encrypts to) is the one the gateway wants used now."""
    with urllib.request.urlopen(f"{gateway}/.well-known/hpke-keys?suite={suite}", timeout=60) as r:
        return r.read().decode("utf-8")

# customer_private_json, customer_public_json = new_keyset()
# status, answer = post_encrypted("https://gateway.example.com/1/upload", "ACCT-PQ",
#     {"X-CleverTap-Passcode": passcode}, upload_json,
#     gateway_keyset("https://gateway.example.com"), customer_private_json)
# --- snippet: end pq ---


def keys(directory, templates):
    os.makedirs(directory, exist_ok=True)
    named = [(t, t) for t in templates] or [
        ("tink", "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM"),
        ("raw", "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM_RAW"),
    ]
    for name, template in named:
        private_json, public_json = new_keyset(template)
        common.write_private(os.path.join(directory, f"tink-{name}-private.json"),
                             private_json.encode() + b"\n")
        common.write_public(os.path.join(directory, f"tink-{name}-public.json"),
                            public_json.encode() + b"\n")
    return 0


def run(args):
    if args.server_public.startswith("published:"):
        gateway_json = gateway_keyset(args.url.rstrip("/"), args.server_public.split(":", 1)[1])
    else:
        with open(args.server_public) as f:
            gateway_json = f.read()
    with open(args.customer_private) as f:
        customer_json = f.read()
    encrypt = tink.json_proto_keyset_format.parse_without_secret(gateway_json).primitive(
        hybrid.HybridEncrypt)
    decrypt = tink.json_proto_keyset_format.parse(
        customer_json, secret_key_access.TOKEN).primitive(hybrid.HybridDecrypt)
    return common.run_cases(
        args,
        seal=lambda account, pt: encrypt.encrypt(pt, account.encode("utf-8")),
        open_=lambda account, ct: decrypt.decrypt(ct, account.encode("utf-8")),
        post=lambda url, account, headers, pt: post_encrypted(
            url, account, headers, pt, gateway_json, customer_json),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("keys", help="write customer keysets")
    make.add_argument("--dir", required=True)
    make.add_argument("--template", action="append", default=[], help="a Tink HPKE template name")
    common.add_run_arguments(sub.add_parser("run", help="run the interop cases against a gateway"))
    args = parser.parse_args()
    return keys(args.dir, args.template) if args.command == "keys" else run(args)


if __name__ == "__main__":
    sys.exit(main())
