"""The interop cases shared by the Python clients (see tests/interop.rs).

A client supplies three functions: seal(account, plaintext) -> envelope bytes,
open_(account, envelope) -> plaintext, and the base URL. This module runs the
cases over the standard library's HTTP client and prints one JSON line per case.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

HPKE = "application/octet-stream+hpke"
PASSCODE = "interop-passcode"
UPLOAD = (
    b'{"d":[{"identity":"18121994201671","type":"profile",'
    b'"profileData":{"Name":"Test Name","Email":"test@example.com"}}]}'
)
EVENTS_QUERY = b'{"event_name":"App Launched","from":20240101,"to":20240131}'


def request(url, method, headers, body=None):
    """Returns (status, content type, body bytes); HTTP errors are answers too."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, res.headers.get("Content-Type", ""), res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def run_cases(args, seal, open_):
    failures = []
    b64 = lambda b: base64.b64encode(b).decode("ascii")

    def headers(case, account, encrypted_body):
        h = {
            "X-CleverTap-Account-Id": account,
            "X-CleverTap-Passcode": PASSCODE,
            "X-Interop-Case": f"{args.name}:{case}",
            "Accept": HPKE,
            "Content-Type": HPKE if encrypted_body else "application/json",
        }
        return h

    def emit(case, status, sent, plaintext, code):
        print(json.dumps({
            "client": args.name,
            "case": case,
            "status": status,
            "sent_b64": b64(sent),
            "response_plaintext_b64": b64(plaintext),
            "error_code": code,
        }), flush=True)

    def ok_case(case, method, path, body):
        envelope = seal(args.account, body) if body else None
        status, ctype, resp = request(
            args.url + path, method, headers(case, args.account, bool(body)), envelope
        )
        if status != 200 or ctype.split(";")[0].strip() != HPKE:
            failures.append(f"{case}: status {status}, content type {ctype!r}: {resp[:200]!r}")
            emit(case, status, body or b"", b"", None)
            return None
        plaintext = open_(args.account, resp)
        emit(case, status, body or b"", plaintext, None)
        return plaintext

    def err_case(case, account, body, want_status, want_code):
        status, _, resp = request(args.url + "/1/upload", "POST", headers(case, account, True), body)
        code = json.loads(resp).get("code") if resp.startswith(b"{") else None
        if (status, code) != (want_status, want_code):
            failures.append(f"{case}: expected {want_status}/{want_code}, got {status}/{code}")
        emit(case, status, b"", b"", code)

    ok_case("upload", "POST", "/1/upload", UPLOAD)
    answer = ok_case("events_cursor", "POST", "/1/events.json?batch_size=50", EVENTS_QUERY)
    cursor = json.loads(answer)["cursor"] if answer else ""
    ok_case("events_page", "GET", "/1/events.json?cursor=" + urllib.parse.quote(cursor, safe=""), None)
    ok_case("profile_get", "GET", "/1/profile.json?email=jack%40gmail.com", None)
    data = os.urandom(1 << 20)
    echoed = ok_case("echo_1mib", "POST", "/echo", data)
    if echoed is not None and echoed != data:
        failures.append("echo_1mib: the decrypted echo differs from what was sent")
    err_case("err_plaintext_body", args.account, UPLOAD, 400, 4006)
    tampered = bytearray(seal(args.account, UPLOAD))
    tampered[-1] ^= 0x01
    err_case("err_tampered", args.account, bytes(tampered), 400, 4008)
    err_case("err_encryption_off", args.off_account, seal(args.off_account, UPLOAD), 403, 4005)

    for f in failures:
        print("FAIL " + f, file=sys.stderr)
    return 1 if failures else 0


def add_run_arguments(parser):
    parser.add_argument("--url", required=True)
    parser.add_argument("--server-public", required=True)
    parser.add_argument("--customer-private", required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--off-account", required=True)
    parser.add_argument("--name", required=True)
