"""Ingestion edge benchmark: what each way of proving a request costs.

Run from the project root:  .venv/bin/python bench/edge.py [--seconds 3] [--db sqlite]

On SQLite and on PostgreSQL (each a fresh database, dropped afterwards), against gunicorn
with one sync worker and no execution worker (executions are created and queued, not
run), each scenario is a closed-loop flood from a few client threads for a few seconds:

- `/webhook` with X-API-Key (the key names the source): the reference row;
- `/webhook/<name>` for an api_key source, a GitHub source (HMAC-SHA256 over the body)
  and a Standard Webhooks source (the standardwebhooks library), each with new events;
- the same GitHub delivery sent again (the duplicate path);
- a GitHub request with a bad signature (the 401 path, counted for operators).

Prints a markdown table (requests/s, p50 and p99 latency, ratio to the reference) and
the git commit. All traffic goes to 127.0.0.1; every loop is bounded in time and count.
"""

import argparse
import http.client
import itertools
import json
import os
import subprocess
import sys
import threading
import time

from harness import API_KEY, HOST, ROOT, Runtime

sys.path.insert(0, str(ROOT))
from lib import signatures  # a pure module: no Django setup needed

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
EVENT_TYPE = "order.created"


def _secret(output: str) -> str:
    return next(line.split()[-1] for line in output.splitlines() if "Secret:" in line)


def _key(output: str) -> str:
    return next(line.split()[-1] for line in output.splitlines() if "API key:" in line)


def scenarios(secrets: dict) -> list[tuple[str, int, object]]:
    """(label, expected status, request maker: n -> (path, body, headers))."""

    def api_key_legacy(n):
        body = json.dumps({"event_id": f"legacy-{n}", "type": EVENT_TYPE}).encode()
        return "/webhook", body, {"X-API-Key": API_KEY}

    def api_key_named(n):
        body = json.dumps({"event_id": f"named-{n}", "type": EVENT_TYPE}).encode()
        return "/webhook/keyed", body, {"X-API-Key": secrets["keyed"]}

    def github(n, delivery=None, secret=None):
        body = json.dumps({"ref": "refs/heads/main", "n": n}).encode()
        headers = {"X-GitHub-Delivery": delivery or f"gh-{n}", "X-GitHub-Event": EVENT_TYPE}
        headers.update(signatures.sign("github", secret or secrets["gh"], body))
        return "/webhook/gh", body, headers

    def standard(n):
        body = json.dumps({"type": EVENT_TYPE, "data": {"n": n}}).encode()
        headers = signatures.sign("standard_webhooks", secrets["sw"], body, msg_id=f"sw-{n}")
        return "/webhook/sw", body, headers

    def duplicate(n):
        return github(0, delivery="gh-dup")

    def refused(n):
        return github(n, secret="not-the-secret")  # noqa: S106

    return [
        ("`/webhook`, API key (reference)", 202, api_key_legacy),
        ("`/webhook/<name>`, API key", 202, api_key_named),
        ("`/webhook/<name>`, GitHub signature", 202, github),
        ("`/webhook/<name>`, Standard Webhooks", 202, standard),
        ("GitHub duplicate (same delivery again)", 200, duplicate),
        ("GitHub bad signature (401)", 401, refused),
    ]


def flood(
    port: int, make, *, threads: int, seconds: float, limit: int = 100_000, start: int = 0
) -> dict:
    """Closed loop: each thread sends make(n) for n = start, start + 1, ... until time is up."""
    counter = itertools.count(start)
    lock = threading.Lock()
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    def client():
        while time.monotonic() < deadline:
            n = next(counter)
            if n - start >= limit:
                return
            path, body, headers = make(n)
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
            started = time.perf_counter()
            try:
                conn.request(
                    "POST",
                    path,
                    body=body,
                    headers={"Content-Type": "application/json", **headers},
                )
                response = conn.getresponse()
                response.read()
                status = response.status
            except OSError:
                status = 0
            finally:
                conn.close()
            elapsed = time.perf_counter() - started
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(elapsed)

    started = time.monotonic()
    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"elapsed": time.monotonic() - started, "statuses": statuses, "latencies": latencies}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def measure(port: int, make, label: str, expected: int, *, threads: int, seconds: float) -> dict:
    """A short warm-up, then a flood: one table row (requests/s with the expected status)."""
    # Warm up with other event ids, so the measured events are all new.
    flood(port, make, threads=threads, seconds=0.5, limit=50, start=10**9)
    done = flood(port, make, threads=threads, seconds=seconds)
    good = done["statuses"].get(expected, 0)
    return {
        "label": label,
        "rate": good / done["elapsed"],
        "p50": pct(done["latencies"], 50),
        "p99": pct(done["latencies"], 99),
        "others": {s: c for s, c in done["statuses"].items() if s != expected},
    }


def print_table(results: dict[str, list[dict]], *, threads: int, seconds: float) -> None:
    """The markdown table of measure()'s rows per database; ratios to each first row."""
    print(f"\n{threads} client threads, {seconds:g} s per scenario, 1 gunicorn sync worker\n")
    print("| database | scenario | requests/s | p50 ms | p99 ms | ours / reference |")
    print("|---|---|---:|---:|---:|---:|")
    for kind, rows in results.items():
        reference = rows[0]["rate"] or float("nan")
        for row in rows:
            note = f" (other statuses: {row['others']})" if row["others"] else ""
            print(
                f"| {kind} | {row['label']}{note} | {row['rate']:.0f} | {row['p50']:.1f} | "
                f"{row['p99']:.1f} | {row['rate'] / reference:.2f} |"
            )


def commit() -> str:
    """The short git commit, noting uncommitted changes."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return f"{head}{' (with uncommitted changes)' if dirty else ''}"


def bench(kind: str, seconds: float, threads: int) -> list[dict]:
    env = {"WEB_CONCURRENCY": "1", "GUNICORN_MAX_REQUESTS": "0"}
    rows = []
    with Runtime(kind, pg_admin_url=PG_ADMIN_URL, env=env) as rt:
        secrets = {
            "keyed": _key(rt.manage("source", "create", "keyed", "--scheme", "api_key")),
            "gh": _secret(rt.manage("source", "create", "gh", "--scheme", "github")),
            "sw": _secret(rt.manage("source", "create", "sw", "--scheme", "standard_webhooks")),
        }
        rt.start_gunicorn(workers=1)
        for label, expected, make in scenarios(secrets):
            rows.append(measure(rt.port, make, label, expected, threads=threads, seconds=seconds))
            print(f"{kind}: {label}: {rows[-1]['rate']:.0f}/s", file=sys.stderr, flush=True)
        problems = rt.log_problems()
        if problems:
            print(f"{kind}: log lines with ERROR or a traceback: {problems}", file=sys.stderr)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=3.0, help="per scenario (max 30)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (max 16)")
    args = parser.parse_args()
    seconds, threads = min(args.seconds, 30), min(args.threads, 16)
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]

    results = {kind: bench(kind, seconds, threads) for kind in kinds}
    print_table(results, threads=threads, seconds=seconds)
    print(f"\ncommit {commit()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
