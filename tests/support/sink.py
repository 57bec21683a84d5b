"""A real HTTP server on 127.0.0.1 that records what connectors send it."""

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink:
    """Records each request; answers from `script`, a list of statuses or of dicts
    {"status": 503, "delay": 2.0, "headers": {"Retry-After": "1"}}, in turn; then 200.
    `by_event` scripts the requests whose JSON body has that `event_id` the same way, in
    turn, before `script` is looked at."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list = []
        self.by_event: dict[str, list] = {}
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # The caller died mid-request (a SIGKILLed worker): like any server,
                    # act on no half-received body.
                    self.close_connection = True
                    return
                with sink.lock:
                    try:
                        parsed = json.loads(body) if body else None
                    except ValueError:
                        parsed = body.decode(errors="replace")
                    own = parsed.get("event_id") if isinstance(parsed, dict) else None
                    if sink.by_event.get(own):
                        step = sink.by_event[own].pop(0)
                    else:
                        step = sink.script.pop(0) if sink.script else 200
                    step = step if isinstance(step, dict) else {"status": step}
                    sink.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "key": self.headers.get("Idempotency-Key"),
                            "headers": dict(self.headers),
                            "raw": body,
                            "body": parsed,
                            "status": step["status"],
                            "at": time.monotonic(),
                        }
                    )
                time.sleep(step.get("delay", 0))
                try:
                    self.send_response(step["status"])
                    for name, value in step.get("headers", {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(json.dumps(step.get("body", {"ok": True})).encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args):
                pass

        # The listen backlog is read when the server binds; socketserver's 5 resets
        # connections when dozens of actions call at once.
        server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 256})
        self.server = server_class(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def keys(self) -> Counter:
        with self.lock:
            return Counter(r["key"] for r in self.requests if r["status"] < 300)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
