"""A small HTTP server to send actions to while trying the runtime: it prints each request
and answers 503 to the first few, then 200. A POST to /invoices is answered as an
accounting API would, with a new invoice number (docs/workflows.md's chained step). It
listens on 127.0.0.1 only."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Listen on 127.0.0.1:PORT and print each request (method, path, Idempotency-Key, "
        "body). The first --fail-first requests get 503, the rest 200; a POST to /invoices "
        'gets {"invoice": {"number": "INV-0001"}}, one number per Idempotency-Key. '
        "Ctrl-C stops it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=9000, help="default %(default)s")
        parser.add_argument(
            "--fail-first",
            type=int,
            default=1,
            metavar="N",
            help="answer the first N requests with 503 (default %(default)s)",
        )

    def handle(self, *args, port, fail_first, **options):
        if not 1 <= port <= 65535:
            raise CommandError(f"--port {port}: give a port from 1 to 65535.")
        if fail_first < 0:
            raise CommandError(f"--fail-first {fail_first}: give 0 or more.")
        server = sink_server(port, fail_first, self.stdout, self.style)
        self.stdout.write(
            f"Sink on http://127.0.0.1:{server.server_port}/: the first {fail_first} "
            "request(s) get 503, then 200. Ctrl-C stops it."
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


def sink_server(port: int, fail_first: int, out, style) -> ThreadingHTTPServer:
    lock = threading.Lock()
    seen = [0]
    invoices: dict[str, str] = {}  # Idempotency-Key -> invoice number: a retry gets the same

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                seen[0] += 1
                number = seen[0]
            status = 503 if number <= fail_first else 200
            try:
                shown = json.dumps(json.loads(body), ensure_ascii=False) if body else ""
            except ValueError:
                shown = body.decode(errors="replace")[:500]
            key = self.headers.get("Idempotency-Key", "-")
            line = f"#{number} {self.command} {self.path} Idempotency-Key: {key} -> {status}"
            out.write((style.SUCCESS if status == 200 else style.WARNING)(line))
            if shown:
                out.write(f"    {shown}")
            answer = {"ok": status == 200}
            if status == 200 and self.command == "POST" and self.path.startswith("/invoices"):
                with lock:
                    invoice = invoices.setdefault(key, f"INV-{len(invoices) + 1:04d}")
                answer = {"invoice": {"number": invoice}}
                out.write(f"    -> invoice {invoice}")
            answer = json.dumps(answer).encode()
            self.send_response(status)
            if status == 503:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        def log_message(self, *args):
            pass  # each request is printed above

    try:
        return ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as exc:
        raise CommandError(f"Cannot listen on 127.0.0.1:{port}: {exc.strerror}.") from None
