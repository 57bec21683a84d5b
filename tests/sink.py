"""A real HTTP server on 127.0.0.1 that records what connectors send it."""

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink:
    """Records each request's Idempotency-Key and body; answers from a script of statuses."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[int] = []  # statuses to answer, in turn; then 200
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with sink.lock:
                    status = sink.script.pop(0) if sink.script else 200
                    sink.requests.append(
                        {
                            "key": self.headers.get("Idempotency-Key"),
                            "body": json.loads(body or b"{}"),
                            "status": status,
                            "at": time.monotonic(),
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def keys(self) -> Counter:
        with self.lock:
            return Counter(r["key"] for r in self.requests if r["status"] < 300)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
