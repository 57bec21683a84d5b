"""What one new event costs inside Django, ours vs. the bare baseline, without HTTP.

Run from the project root:  .venv/bin/python bench/request_cost.py [--requests 2000]

Each side runs in its own process on a fresh SQLite file: Django's test client POSTs new
events to `/webhook` (ours with the demo API key and route, the baseline's one-INSERT
view from bench/baseline/), after a warm-up. It prints the milliseconds per request and
the SQL statements one request runs, so the gap `make bench` shows through gunicorn can
be read as work per request rather than as serving overhead.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import io, json, os, sys, time, uuid
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

ours = os.environ["DJANGO_SETTINGS_MODULE"] == "automation_runtime.settings"
if ours:
    call_command("migrate", verbosity=0)
    call_command("loaddata", "demo", verbosity=0)
    call_command("demo_credentials", stdout=io.StringIO())
else:
    call_command("migrate", run_syncdb=True, verbosity=0)
settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
headers = {"HTTP_X_API_KEY": "demo-key"} if ours else {}
client = Client()

def post():
    body = {"event_id": uuid.uuid4().hex, "type": "order.created", "data": {"amount": 42}}
    response = client.post(
        "/webhook", data=json.dumps(body), content_type="application/json", **headers
    )
    assert response.status_code == 202, response.content

for _ in range(200):
    post()
with CaptureQueriesContext(connection) as queries:
    post()
statements = [q["sql"][:60] for q in queries.captured_queries]  # before the next request
n = int(sys.argv[1])
start = time.perf_counter()
for _ in range(n):
    post()
ms = (time.perf_counter() - start) / n * 1000
print(json.dumps({"ms": ms, "queries": statements}))
"""


def measure(settings_module: str, requests: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="request-cost-") as tmp:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
            "SECRET_KEY": "request-cost-bench-key-not-for-production-0123456789",
            "DEBUG": "0",
            "AUTOMATION_DEMO": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT)]),
        }
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(requests)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"{settings_module} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    base = measure("baseline.settings", args.requests)
    ours = measure("automation_runtime.settings", args.requests)
    print(f"\nIn-process cost of one new event, SQLite, {args.requests} requests each\n")
    print("| | ms per request | SQL statements | ratio to baseline |")
    print("|---|---:|---:|---:|")
    for name, result in (("baseline", base), ("ours", ours)):
        print(
            f"| {name} | {result['ms']:.2f} | {len(result['queries'])} | "
            f"{result['ms'] / base['ms']:.1f} x |"
        )
    for name, result in (("baseline", base), ("ours", ours)):
        print(f"\n{name}'s statements:")
        for sql in result["queries"]:
            print(f"- `{sql}`")
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(f"\ncommit {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
