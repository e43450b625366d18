#!/usr/bin/env python3
"""A tiny demo upstream for `scripts/run.sh`: answers every request with JSON
describing what it received (method, path, headers)."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def _answer(self):
        body = json.dumps(
            {
                "upstream": "demo",
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
            },
            indent=2,
        ).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    ThreadingHTTPServer(("127.0.0.1", port), Echo).serve_forever()
