"""The development SMS and push provider: an HTTP endpoint on loopback that accepts messages
the way a hosted provider does, so the platform's provider adapter runs against a real HTTP
peer in development and tests.

``POST /<provider>`` with a JSON message (``id``, ``channel``, ``to``, ``title``, ``body``) and
an ``Idempotency-Key`` header. Every request is appended to ``messages.jsonl`` in the data
directory (provider, key, message, and the answer given). The answer depends on the address,
so tests can script failures without configuring the server:

* an address containing ``primary-down`` is answered ``503`` by the provider named ``primary``
  (any other provider accepts it): the first provider keeps failing;
* ``all-down``: every provider answers ``503``;
* ``hang``: the request is held for 30 s (a provider that hangs);
* ``garbage``: a ``500`` with a body that is not JSON;
* ``refuse``: ``400`` (a number the provider will never take);
* anything else: ``202`` with ``{"id": …}``. A repeated ``Idempotency-Key`` is accepted again
  and marked ``"repeat": true`` in the log (a provider de-duplicates by it).
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SEEN = set()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        provider = self.path.strip("/").split("?")[0] or "default"
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            msg = json.loads(raw or b"{}")
        except ValueError:
            msg = {}
        to = str(msg.get("to", ""))
        key = self.headers.get("idempotency-key", "")
        if "hang" in to:
            time.sleep(30)
            status, body = 504, b'{"error":"late"}'
        elif "all-down" in to or ("primary-down" in to and provider == "primary"):
            status, body = 503, b'{"error":"unavailable"}'
        elif "garbage" in to:
            status, body = 500, b"\x00\xffnot json at all"
        elif "refuse" in to:
            status, body = 400, b'{"error":"invalid number"}'
        else:
            status, body = 202, json.dumps({"id": key}).encode()
        with LOCK:
            repeat = status == 202 and (provider, key) in SEEN
            if status == 202:
                SEEN.add((provider, key))
            with open(os.path.join(DATA, "messages.jsonl"), "a") as f:
                f.write(json.dumps({"provider": provider, "key": key, "status": status,
                                    "repeat": repeat, "message": msg}) + "\n")
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    port = int(sys.argv[1])
    DATA = sys.argv[2]
    os.makedirs(DATA, exist_ok=True)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
