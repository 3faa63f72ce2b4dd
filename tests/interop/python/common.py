"""The interop cases shared by the Python clients (see tests/interop.rs).

A client supplies three functions, all bound to its keys:
  seal(account, plaintext) -> envelope          encrypt to the gateway, info = account
  open_(account, envelope) -> plaintext         decrypt an answer with the customer's key
  post(url, account, headers, plaintext) -> (status, plaintext)
                                                the client's snippet in docs/clients.md:
                                                encrypt, POST, decrypt (raises HTTPError
                                                on a 4xx/5xx)
This module runs the cases with the standard library's HTTP client and prints one JSON
line per case on stdout; failed expectations go to stderr and make the exit code 1.
"""

import base64
import json
import os
import sys
import traceback
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
ECHO_BYTES = 1 << 20


def request(url, method, headers, body=None):
    """(status, media type, body bytes); HTTP error statuses are answers too."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, res.headers.get_content_type(), res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get_content_type(), err.read()


def error_of(body):
    """The gateway's error JSON {"status":"fail","error":...,"code":N}, or None."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def run_cases(args, seal, open_, post):
    failures = []
    base = args.url.rstrip("/")
    b64 = lambda b: base64.b64encode(b or b"").decode("ascii")

    def fail(case, message):
        failures.append(f"{args.name}:{case}: {message}")

    def emit(case, status, sent, plaintext, code):
        print(json.dumps({
            "client": args.name,
            "case": case,
            "status": status,
            "sent_b64": b64(sent),
            "response_plaintext_b64": b64(plaintext),
            "error_code": code,
        }), flush=True)

    def case_headers(case):
        return {"X-CleverTap-Passcode": PASSCODE, "X-Interop-Case": f"{args.name}:{case}"}

    def encrypted_post(case, path, body):
        """The client's own post_encrypted: expects 200 and an answer that decrypts."""
        status, answer, code = None, None, None
        try:
            status, answer = post(base + path, args.account, case_headers(case), body)
            if status != 200:
                fail(case, f"status {status}, expected 200")
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read()
            code = (error_of(text) or {}).get("code")
            fail(case, f"status {status}, expected 200: {text[:200]!r}")
        except (urllib.error.URLError, OSError):
            raise  # no answer at all: no line for this case
        except Exception as err:  # a 2xx answer not encrypted, or that does not decrypt
            fail(case, f"the answer does not decrypt: {type(err).__name__}: {err}")
        emit(case, status, body, answer, code)
        return answer

    def encrypted_get(case, path):
        """A GET without a body: Accept alone asks for an encrypted answer."""
        headers = {
            "X-CleverTap-Account-Id": args.account,
            "Content-Type": "application/json",
            "Accept": HPKE,
            **case_headers(case),
        }
        status, ctype, body = request(base + path, "GET", headers)
        answer, code = None, None
        if status != 200 or ctype != HPKE:
            code = (error_of(body) or {}).get("code")
            fail(case, f"status {status} ({ctype}), expected 200 ({HPKE}): {body[:200]!r}")
        else:
            try:
                answer = open_(args.account, body)
            except Exception as err:
                fail(case, f"the answer does not decrypt: {type(err).__name__}: {err}")
        emit(case, status, b"", answer, code)
        return answer

    def refused(case, account, body, sent, want_status, want_code, want_error=None):
        """Both encryption headers; the gateway must refuse with its error JSON."""
        headers = {
            "X-CleverTap-Account-Id": account,
            "Content-Type": HPKE,
            "Accept": HPKE,
            **case_headers(case),
        }
        status, ctype, answer = request(base + "/1/upload", "POST", headers, body)
        error = error_of(answer) or {}
        code = error.get("code")
        if (status, code) != (want_status, want_code):
            fail(case, f"status {status} code {code}, expected {want_status} code {want_code}: "
                       f"{answer[:200]!r}")
        elif ctype != "application/json" or error.get("status") != "fail":
            fail(case, f"not the vendor's error shape ({ctype}): {answer[:200]!r}")
        elif want_error is not None and error.get("error") != want_error:
            fail(case, f"error {error.get('error')!r}, expected {want_error!r}")
        emit(case, status, sent, b"", code)

    def upload():
        encrypted_post("upload", "/1/upload", UPLOAD)

    cursor = None

    def events_cursor():
        nonlocal cursor
        answer = encrypted_post("events_cursor", "/1/events.json?batch_size=50", EVENTS_QUERY)
        if answer is not None:
            try:
                cursor = json.loads(answer)["cursor"]
            except (ValueError, KeyError, TypeError) as err:
                fail("events_cursor", f"no cursor in {answer[:200]!r}: {err!r}")

    def events_page():
        if not isinstance(cursor, str):
            fail("events_page", "not run: events_cursor gave no cursor")
            return
        encrypted_get("events_page", "/1/events.json?cursor=" + urllib.parse.quote(cursor, safe=""))

    def profile_get():
        encrypted_get("profile_get", "/1/profile.json?email=jack%40gmail.com")

    def echo_1mib():
        data = os.urandom(ECHO_BYTES)
        echoed = encrypted_post("echo_1mib", "/echo", data)
        if echoed is not None and echoed != data:
            fail("echo_1mib", f"the decrypted echo ({len(echoed)} bytes) differs from what was sent")

    def err_plaintext_body():
        refused("err_plaintext_body", args.account, UPLOAD, UPLOAD, 400, 4006)

    def err_tampered():
        envelope = bytearray(seal(args.account, UPLOAD))
        envelope[-1] ^= 0x01  # the last byte of the AES-GCM tag
        refused("err_tampered", args.account, bytes(envelope), UPLOAD, 400, 4008, "decryption failed")

    def err_encryption_off():
        envelope = seal(args.off_account, UPLOAD)  # info = the off account, as its header says
        refused("err_encryption_off", args.off_account, envelope, UPLOAD, 403, 4005)

    for case in [upload, events_cursor, events_page, profile_get, echo_1mib,
                 err_plaintext_body, err_tampered, err_encryption_off]:
        try:
            case()
        except (urllib.error.URLError, OSError) as err:  # no answer: report it, go on
            fail(case.__name__, f"no answer from {base}: {err}")
        except Exception:
            fail(case.__name__, traceback.format_exc().strip())

    for f in failures:
        print("FAIL " + f, file=sys.stderr)
    return 1 if failures else 0


def add_run_arguments(parser):
    parser.add_argument("--url", required=True, help="the gateway, e.g. http://127.0.0.1:8080")
    parser.add_argument("--server-public", required=True, help="the gateway's public key file")
    parser.add_argument("--customer-private", required=True, help="your private key file")
    parser.add_argument("--account", required=True, help="an account with encryption on")
    parser.add_argument("--off-account", required=True, help="an account with encryption off")
    parser.add_argument("--name", required=True, help="this run's name, in X-Interop-Case")


def write_private(path, data):
    """Writes a private key file readable by its owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def write_public(path, data):
    with open(path, "wb") as f:
        f.write(data)
