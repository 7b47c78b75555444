#!/usr/bin/env python3
"""A webhook receiver for the black-box tests: verifies every delivery with the OFFICIAL
Standard Webhooks library (`standardwebhooks.Webhook(secret).verify(body, headers)`) and
records it. Stdlib http.server only; listens on 127.0.0.1.

    receiver.py --port N

Control (JSON):
  POST /__config/<name>   {"secrets": ["whsec_…", …],          secrets that may verify
                           "responses": [{"status": 500, "headers": {...}, "body": "…",
                                          "delay_ms": 0}, …],   answered in order, then
                           "then": {"status": 200}}             this one for every later call
  GET  /__log             every request to /hook/<name>: name, headers, body, verified,
                          verified_by (indices of the secrets that verified), verify_error,
                          received_at (seconds)
Deliveries go to /hook/<name>.
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

LOCK = threading.Lock()
CONFIG = {}
LOG = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/__log":
            with LOCK:
                body = json.dumps(LOG).encode()
            return self._send(200, body, {"content-type": "application/json"})
        return self._send(404)

    def do_POST(self):
        raw = self._body()
        if self.path.startswith("/__config/"):
            name = self.path[len("/__config/"):]
            with LOCK:
                CONFIG[name] = dict(json.loads(raw), calls=0)
            return self._send(204)
        if not self.path.startswith("/hook/"):
            return self._send(404)
        name = self.path[len("/hook/"):]
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            cfg = CONFIG.get(name, {})
            calls = cfg.get("calls", 0)
            cfg["calls"] = calls + 1
            responses = cfg.get("responses", [])
            plan = responses[calls] if calls < len(responses) else cfg.get("then", {"status": 200})
            secrets = cfg.get("secrets", [])
        # Every configured secret is tried on its own: during a rotation both must verify.
        verified_by, error = [], "no secret configured"
        for i, secret in enumerate(secrets):
            try:
                Webhook(secret).verify(raw.decode(), headers)
                verified_by.append(i)
            except Exception as e:  # noqa: BLE001 - record why
                error = f"{type(e).__name__}: {e}"
        verified = bool(verified_by)
        with LOCK:
            LOG.append({
                "name": name,
                "headers": headers,
                "body": raw.decode(errors="replace"),
                "verified": verified,
                "verified_by": verified_by,
                "verify_error": None if verified else error,
                "received_at": time.time(),
            })
        if plan.get("delay_ms"):
            time.sleep(plan["delay_ms"] / 1000)
        return self._send(plan.get("status", 200), plan.get("body", "ok").encode(), plan.get("headers"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
