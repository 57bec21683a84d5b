"""A downstream API on 127.0.0.1 that honours Idempotency-Key, for the chaos scenarios.

Like a payment API: the first request with a new key has its side effect (recorded here)
and gets a response; a request that repeats a key has no new effect and gets the stored
response again, and is counted as a repeated delivery the sink absorbed. So the number of
distinct keys it holds is the number of side effects, however often the runtime delivered.

Its answer may take `latency` seconds after the effect happened, as a real API's does:
a caller that dies in that window has caused the effect without learning so. It can
also be told to fail: `outage(seconds)` answers 500 to every request until then,
with no side effect, as a downstream API that is down would. Its answer may carry more
than the effect's number: `answer(number, key, body)` adds fields (an invoice number that a
chained step passes on), stored with the effect and answered again to every repeat.
"""

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"


class IdempotentSink:
    """Records side effects keyed by the Idempotency-Key header. Use as a context manager."""

    def __init__(
        self, latency: float = 0.0, answer: Callable[[int, str, bytes], dict] | None = None
    ):
        self.latency = latency  # seconds between the side effect and the response
        self.answer = answer  # (effect number, key, request body) -> more fields to answer
        self.lock = threading.Lock()
        self.effects: dict[str, dict] = {}  # key -> the stored response and when it happened
        self.deliveries: dict[str, int] = {}  # key -> 2xx answers (1 + repeats absorbed)
        self.absorbed = 0  # repeated keys answered from the store, not counted again
        self.failed: list[tuple[float, str]] = []  # (time.time(), key) of 500s in an outage
        self.without_key = 0  # requests that carried no Idempotency-Key (answered 400)
        self.truncated = 0  # requests whose body ended early (the caller died sending it)
        self._fail_until = 0.0  # time.monotonic() until which every request gets a 500
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # The caller died mid-request (a SIGKILLed worker): like any server,
                    # act on no half-received body; its retry will arrive whole.
                    with sink.lock:
                        sink.truncated += 1
                    self.close_connection = True
                    return
                status, answer = sink._receive(self.headers.get("Idempotency-Key"), body)
                time.sleep(sink.latency)
                payload = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller died or gave up; the effect (if any) stands

            do_PUT = do_POST

            def log_message(self, *args):
                pass

        # The listen backlog is read when the server binds: set it on a subclass, or
        # socketserver's 5 resets connections when many calls arrive at once.
        server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 256})
        self.server = server_class((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{HOST}:{self.port}/effects"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _receive(self, key: str | None, body: bytes) -> tuple[int, dict]:
        with self.lock:
            if not key:
                self.without_key += 1
                return 400, {"error": "Idempotency-Key is required"}
            if time.monotonic() < self._fail_until:
                self.failed.append((time.time(), key))
                return 500, {"error": "down for maintenance"}
            if key in self.effects:
                self.absorbed += 1
                self.deliveries[key] += 1
                return 200, self.effects[key]["response"]
            response = {"effect": len(self.effects) + 1, "key": key}
            if self.answer is not None:
                response.update(self.answer(response["effect"], key, body))
            self.effects[key] = {"response": response, "at": time.time(), "body": body}
            self.deliveries[key] = 1
            return 200, response

    def outage(self, seconds: float) -> None:
        """Answer 500 to every request for the next `seconds`."""
        with self.lock:
            self._fail_until = time.monotonic() + seconds

    @property
    def in_outage(self) -> bool:
        return time.monotonic() < self._fail_until

    def keys(self) -> set[str]:
        with self.lock:
            return set(self.effects)

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "IdempotentSink":
        return self

    def __exit__(self, *exc_info):
        self.close()
