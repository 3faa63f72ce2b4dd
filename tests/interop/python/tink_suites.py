#!/usr/bin/env python3
"""Google Tink's eight HPKE templates against the gateway's envelope, both directions.

usage:
  tink_suites.py make DIR INFO PLAINTEXT_FILE
      For each template: a fresh keyset, written as DIR/<TEMPLATE>.json (cleartext
      private keyset, mode 0600) and DIR/<TEMPLATE>.public.json, and the plaintext
      encrypted by Tink to it as DIR/<TEMPLATE>.tink. Prints the template names, one per
      line.
  tink_suites.py open DIR INFO
      For each DIR/<TEMPLATE>.ours (sealed by the gateway's code to that keyset's public
      key) and DIR/<TEMPLATE>.cli (sealed by `hpke-gateway seal`), decrypts it with Tink
      and writes DIR/<TEMPLATE>.opened and DIR/<TEMPLATE>.cli-opened.
Made for Python `tink` 1.16.1.
"""

import os
import sys

import tink
from tink import hybrid
from tink import secret_key_access

T = hybrid.hybrid_key_templates
TEMPLATES = [
    "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM",
    "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM_RAW",
    "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_128_GCM",
    "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_128_GCM_RAW",
    "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_CHACHA20_POLY1305",
    "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_CHACHA20_POLY1305_RAW",
    "X_WING_HKDF_SHA256_HKDF_SHA256_AES_256_GCM",
    "X_WING_HKDF_SHA256_HKDF_SHA256_AES_256_GCM_RAW",
]


def load(path):
    with open(path, "r", encoding="utf-8") as f:
        return tink.json_proto_keyset_format.parse(f.read(), secret_key_access.TOKEN)


def main() -> int:
    hybrid.register()
    if len(sys.argv) == 5 and sys.argv[1] == "make":
        out, info = sys.argv[2], sys.argv[3].encode("utf-8")
        with open(sys.argv[4], "rb") as f:
            plaintext = f.read()
        for name in TEMPLATES:
            handle = tink.new_keyset_handle(getattr(T, name))
            text = tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
            fd = os.open(os.path.join(out, name + ".json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8") as f:
                f.write(text)
            with open(os.path.join(out, name + ".public.json"), "w", encoding="utf-8") as f:
                f.write(tink.json_proto_keyset_format.serialize_without_secret(
                    handle.public_keyset_handle()))
            ct = handle.public_keyset_handle().primitive(hybrid.HybridEncrypt).encrypt(
                plaintext, info
            )
            with open(os.path.join(out, name + ".tink"), "wb") as f:
                f.write(ct)
            print(name)
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "open":
        out, info = sys.argv[2], sys.argv[3].encode("utf-8")
        for name in TEMPLATES:
            dec = load(os.path.join(out, name + ".json")).primitive(hybrid.HybridDecrypt)
            for sealed, opened in [(".ours", ".opened"), (".cli", ".cli-opened")]:
                with open(os.path.join(out, name + sealed), "rb") as f:
                    ct = f.read()
                with open(os.path.join(out, name + opened), "wb") as f:
                    f.write(dec.decrypt(ct, info))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
