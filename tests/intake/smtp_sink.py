#!/usr/bin/env python3
"""A real SMTP server on 127.0.0.1 (aiosmtpd) that stores every message it receives.

  smtp_sink.py --port PORT --dir DIR

Each message is written to DIR as NNNN.eml (written to a temporary name first, then
renamed, so a reader never sees half a message). Prints "ready PORT" when listening:
with --port 0 the system picks the port, so no caller has to guess a free one.
"""

import argparse
import os
import signal
import threading

from aiosmtpd.controller import Controller


class AnyPortController(Controller):
    """A Controller that may be given port 0: it reads the port it was given back
    before it connects to itself to start the SMTP machinery."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class Store:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        tmp = os.path.join(self.directory, f".{n:04}.tmp")
        with open(tmp, "wb") as f:
            f.write(f"X-Envelope-From: {envelope.mail_from}\r\n".encode())
            f.write(f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.directory, f"{n:04}.eml"))
        return "250 Message accepted for delivery"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    controller = AnyPortController(Store(args.dir), hostname="127.0.0.1", port=args.port)
    controller.start()
    print(f"ready {controller.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
