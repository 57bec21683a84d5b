"""Ingest benchmark against a bare baseline: `make bench`.

Run from the project root:  .venv/bin/python bench/ingest.py [--quick] [--db sqlite|postgres]

For each database (a fresh SQLite file, a new PostgreSQL database; both removed after):
1. Ingest, closed loop: `wrk -t2 -c32` POSTs new events, then duplicates (ids sent
   before, same body), to the runtime's `/webhook` and to the baseline's `/webhook` (a
   plain Django view doing one INSERT into a table with the same unique constraint,
   bench/baseline/). Both run under gunicorn with automation_runtime/gunicorn.conf.py and
   the same number of sync workers; no execution worker runs meanwhile.
2. Ingest, open loop: new events at a fixed 500 requests/s from an asyncio client; latency
   is measured from each request's scheduled send time, so a stall is not hidden.
3. Drain: N events preloaded, then 2 `manage.py runworker` processes; executions/s
   between the first attempt's start and the last execution's end.
4. Accept-to-executed: 2 idle workers, events arriving at fixed rates; per event,
   execution finished_at - event received_at, read from the database.
5. Resident memory (VmRSS) of every process after the run.

Prints markdown tables, the ratios ours / baseline, the goals, and the git commit.
All traffic goes to 127.0.0.1; every run is bounded in time and requests.
"""

import argparse
import asyncio
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import API_KEY, HOST, ROOT, Runtime, as_utc, percentile

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
WRK_SCRIPT = ROOT / "bench" / "wrk" / "post.lua"
EVENT_TYPE = "order.created"  # the demo route: one execution per event, `log` connector
GOAL_RATIO = 0.8
GOAL_P99_MS = 50
GOAL_RATE = 500
GOAL_RSS_MB = 100


@dataclasses.dataclass(frozen=True)
class Config:
    seconds: int = 10  # each closed-loop wrk run
    connections: int = 32
    threads: int = 2
    duplicate_pool: int = 500
    open_loop_seconds: float = 10
    drain_events: int = 2000
    arrival_rates: tuple = (10, 50, 100)
    arrival_seconds: float = 10
    worker_processes: int = 2
    web_workers: int = 0  # 0: what gunicorn.conf.py picks (2 x cores + 1)


FULL = Config()
QUICK = Config(
    seconds=4,
    open_loop_seconds=4,
    drain_events=500,
    duplicate_pool=200,
    arrival_rates=(10, 50),
    arrival_seconds=4,
)


# -- load generators -------------------------------------------------------------------
def wrk(port: int, cfg: Config, prefix: str, pool: int, header=None) -> dict:
    """One closed-loop wrk run; returns requests/s and latency from the script's done()."""
    argv = [
        "wrk",
        f"-t{cfg.threads}",
        f"-c{cfg.connections}",
        f"-d{cfg.seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        f"http://{HOST}:{port}/webhook",
        "--",
        prefix,
        str(pool),
        "/webhook",
        *(header or ()),
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=cfg.seconds + 60, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = result["duration_us"] / 1e6
    errors = sum(result[k] for k in ("connect", "read", "write", "timeout"))
    return {
        "rps": result["requests"] / seconds,
        "requests": result["requests"],
        "p50": result["p50_us"] / 1000,
        "p99": result["p99_us"] / 1000,
        "max": result["max_us"] / 1000,
        "bad": result["bad_status"] + errors,
    }


def body_for(event_id: str) -> bytes:
    """The body wrk's script sends for this id (so a resend is a duplicate)."""
    data = {"order": event_id, "amount": 42}
    return json.dumps(
        {"event_id": event_id, "type": EVENT_TYPE, "data": data}, separators=(",", ":")
    ).encode()


def request_bytes(port: int, event_id: str, header=None) -> bytes:
    body = body_for(event_id)
    lines = [
        "POST /webhook HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if header:
        lines.append(f"{header[0]}: {header[1]}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _open_loop(port: int, rate: float, seconds: float, prefix: str, header) -> dict:
    loop = asyncio.get_running_loop()
    count = int(rate * seconds)
    limit = asyncio.Semaphore(512)
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    start = loop.time() + 0.2

    async def one(i: int):
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        async with limit:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
                writer.write(request_bytes(port, f"{prefix}-{i}", header))
                status_line = await asyncio.wait_for(reader.readline(), 10)
                await asyncio.wait_for(reader.read(), 10)
                writer.close()
                status = status_line.split()[1].decode() if status_line else "closed"
            except (OSError, TimeoutError) as exc:
                status = type(exc).__name__
        latencies.append(loop.time() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = loop.time() - start
    latencies.sort()
    return {
        "sent": count,
        "rate": count / elapsed,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "max": latencies[-1] * 1000,
        "statuses": statuses,
    }


def open_loop(port: int, rate: float, seconds: float, prefix: str, header=None) -> dict:
    """New events at a fixed rate, each on a new connection; latency from schedule."""
    return asyncio.run(_open_loop(port, rate, seconds, prefix, header))


def post_many(port: int, ids: list[str], header=None) -> dict:
    """Send these ids once each from 8 threads; returns the count of each status."""

    def one(event_id: str) -> str:
        import socket

        with socket.create_connection((HOST, port), timeout=10) as sock:
            sock.sendall(request_bytes(port, event_id, header))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.split(b" ", 2)[1].decode()

    counts: dict[str, int] = {}
    with ThreadPoolExecutor(8) as pool:
        for status in pool.map(one, ids):
            counts[status] = counts.get(status, 0) + 1
    return counts


# -- processes ---------------------------------------------------------------------------
class Baseline(Runtime):
    """The bare baseline project (bench/baseline/) on its own fresh database."""

    def __init__(self, kind: str, **kwargs):
        super().__init__(kind, **kwargs)
        self.env["DJANGO_SETTINGS_MODULE"] = "baseline.settings"
        self.env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), str(ROOT)])

    def __enter__(self) -> "Baseline":
        try:
            if self._pg_db:
                self._pg_admin(f'CREATE DATABASE "{self._pg_db}"')
            self.python("-m", "django", "migrate", "--run-syncdb", "-v", "0")
        except BaseException:
            self.close()
            raise
        return self

    def start_gunicorn(self, workers: int = 1, timeout: float = 30, **_):
        app = ("--pythonpath", str(ROOT / "bench"), "baseline.wsgi:application")
        super().start_gunicorn(workers, timeout, app=app, probe=None)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def memory(runtime: Runtime, label: str) -> list[tuple[str, float]]:
    """(process, MB resident) for gunicorn's master, each web worker and each worker."""
    rows = []
    for name, proc in runtime.procs.items():
        if proc.poll() is not None:
            continue
        if name == "gunicorn":
            rows.append((f"{label} gunicorn master", rss_mb(proc.pid)))
            rows.extend(
                (f"{label} gunicorn worker", rss_mb(pid)) for pid in runtime.children(name)
            )
        else:
            rows.append((f"{label} {name} (runworker)", rss_mb(proc.pid)))
    return rows


# -- SQL ---------------------------------------------------------------------------------
EXECUTED = """
    SELECT e.received_at, x.finished_at
    FROM events_execution x JOIN events_event e ON e.id = x.event_id
    WHERE e.event_id LIKE %s AND x.status = 'succeeded'
"""
STATUS_COUNTS = """
    SELECT x.status, COUNT(*)
    FROM events_execution x JOIN events_event e ON e.id = x.event_id
    WHERE e.event_id LIKE %s GROUP BY x.status
"""
DRAIN_SPAN = """
    SELECT MIN(a.started_at), MAX(x.finished_at), COUNT(DISTINCT x.id)
    FROM events_execution x
    JOIN events_event e ON e.id = x.event_id
    JOIN events_attempt a ON a.execution_id = x.id
    WHERE e.event_id LIKE %s AND x.status = 'succeeded'
"""


def wait_executed(runtime: Runtime, prefix: str, expected: int, timeout: float) -> int:
    """Until `expected` executions of these events have succeeded; returns how many did."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        counts = dict(runtime.query(STATUS_COUNTS, (prefix + "%",)))
        done = counts.get("succeeded", 0)
        if done >= expected:
            break
        time.sleep(0.5)
    return done


# -- one database ------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    database: str
    ingest: dict = dataclasses.field(default_factory=dict)  # (who, kind) -> wrk result
    stored: dict = dataclasses.field(default_factory=dict)  # who -> rows stored by the new run
    open_loop: dict = dataclasses.field(default_factory=dict)  # who -> open-loop result
    drain: dict = dataclasses.field(default_factory=dict)
    executed: list = dataclasses.field(default_factory=list)  # per rate
    memory: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)


def measure_ingest(runtime: Runtime, who: str, cfg: Config, result: Result, header=None):
    run = uuid.uuid4().hex[:6]
    pool_prefix = f"{who}-dup-{run}"
    statuses = post_many(
        runtime.port, [f"{pool_prefix}-{i}" for i in range(cfg.duplicate_pool)], header
    )
    if set(statuses) != {"202"}:
        result.notes.append(f"{who}: preloading duplicates answered {statuses}")
    new_prefix = f"{who}-new-{run}"
    result.ingest[(who, "new")] = wrk(runtime.port, cfg, new_prefix, 0, header)
    table = "baseline_delivery" if who == "baseline" else "events_event"
    result.stored[who] = runtime.query(
        f"SELECT COUNT(*) FROM {table} WHERE event_id LIKE %s",  # noqa: S608 (a constant)
        (new_prefix + "%",),
    )[0][0]
    result.ingest[(who, "duplicate")] = wrk(
        runtime.port, cfg, pool_prefix, cfg.duplicate_pool, header
    )
    result.open_loop[who] = open_loop(
        runtime.port, GOAL_RATE, cfg.open_loop_seconds, f"{who}-open-{run}", header
    )


def run_database(kind: str, cfg: Config) -> Result:
    result = Result(kind)
    pg = {"pg_admin_url": PG_ADMIN_URL} if kind == "postgres" else {}
    workers = web_workers(cfg)
    header = ("X-API-Key", API_KEY)

    # Alternate who goes first would double the run; the baseline goes first each time.
    with Baseline(kind, **pg) as base:
        base.start_gunicorn(workers=workers)
        measure_ingest(base, "baseline", cfg, result)
        result.memory.extend(memory(base, "baseline"))

    with Runtime(kind, **pg) as ours:
        ours.start_gunicorn(workers=workers)
        measure_ingest(ours, "ours", cfg, result, header)
        wrong = ours.query(
            "SELECT COUNT(*) FROM events_event e WHERE NOT EXISTS "
            "(SELECT 1 FROM events_execution x WHERE x.event_id = e.id)"
        )[0][0]
        if wrong:
            result.notes.append(f"ours: {wrong} events stored without their execution")

        result.memory.extend(memory(ours, "ours"))
        problems = ours.log_problems()

    # Execution on a fresh database, so the ingest runs' backlog does not count.
    with Runtime(kind, **pg) as ours:
        ours.start_gunicorn(workers=workers)
        prefix = f"drain-{uuid.uuid4().hex[:6]}"
        statuses = post_many(ours.port, [f"{prefix}-{i}" for i in range(cfg.drain_events)], header)
        if set(statuses) != {"202"}:
            result.notes.append(f"drain preload answered {statuses}")
        for n in range(cfg.worker_processes):
            ours.start_worker(f"worker{n + 1}")
        done = wait_executed(ours, prefix, cfg.drain_events, timeout=120)
        if done < cfg.drain_events:
            result.notes.append(f"drain: {done} of {cfg.drain_events} succeeded in 120 s")
        first, last, count = ours.query(DRAIN_SPAN, (prefix + "%",))[0]
        span = (as_utc(last) - as_utc(first)).total_seconds() if first and last else math.nan
        result.drain = {"executions": count, "seconds": span, "rate": count / span}

        # Accept-to-executed at fixed arrival rates, workers idle at the start.
        for rate in cfg.arrival_rates:
            prefix = f"rate{rate}-{uuid.uuid4().hex[:6]}"
            sent = open_loop(ours.port, rate, cfg.arrival_seconds, prefix, header)
            acked = sent["statuses"].get("202", 0)
            done = wait_executed(ours, prefix, acked, timeout=60)
            rows = ours.query(EXECUTED, (prefix + "%",))
            waits = [(as_utc(f) - as_utc(r)).total_seconds() * 1000 for r, f in rows]
            result.executed.append(
                {
                    "rate": rate,
                    "sent": sent["sent"],
                    "acked": acked,
                    "executed": done,
                    "p50": percentile(waits, 50),
                    "p99": percentile(waits, 99),
                    "max": max(waits) if waits else math.nan,
                }
            )
        result.memory.extend(row for row in memory(ours, "ours") if "runworker" in row[0])
        problems.update(ours.log_problems())
    if problems:
        result.notes.append(f"ours: log lines with ERROR or a traceback: {problems}")
    return result


# -- report ------------------------------------------------------------------------------
def web_workers(cfg: Config) -> int:
    return cfg.web_workers or (os.cpu_count() or 1) * 2 + 1


def row(*cells) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |")


def fmt(value: float, digits: int = 1) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:,.{digits}f}"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(results: list[Result], cfg: Config) -> bool:
    ok = True
    print("\n## Ingest through gunicorn, closed loop (wrk)\n")
    print(
        f"`wrk -t{cfg.threads} -c{cfg.connections} -d{cfg.seconds}s`, "
        f"{web_workers(cfg)} sync workers each, no execution worker running.\n"
    )
    row(
        "database",
        "path",
        "baseline req/s",
        "ours req/s",
        "ours / baseline",
        "baseline p99 ms",
        "ours p99 ms",
        "errors (b / o)",
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for kind in ("new", "duplicate"):
            b, o = r.ingest.get(("baseline", kind)), r.ingest.get(("ours", kind))
            if not (b and o):
                continue
            print(
                f"| {r.database} | {kind} | {fmt(b['rps'], 0)} | {fmt(o['rps'], 0)} | "
                f"{o['rps'] / b['rps']:.2f} | {fmt(b['p99'])} | {fmt(o['p99'])} | "
                f"{b['bad']} / {o['bad']} |"
            )
    print("\n## Ingest at a fixed 500 requests/s (open loop, new events)\n")
    print("| database | server | achieved req/s | p50 ms | p99 ms | max ms | answers |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in results:
        for who in ("baseline", "ours"):
            x = r.open_loop.get(who)
            if x:
                answers = ", ".join(f"{k}: {v}" for k, v in sorted(x["statuses"].items()))
                print(
                    f"| {r.database} | {who} | {fmt(x['rate'], 0)} | {fmt(x['p50'])} | "
                    f"{fmt(x['p99'])} | {fmt(x['max'])} | {answers} |"
                )
    print("\n## Execution: drain rate and accept-to-executed latency (ours)\n")
    print(
        f"{cfg.worker_processes} `runworker` processes; "
        f"demo route `{EVENT_TYPE}` -> `log` connector.\n"
    )
    print("| database | measure | value |")
    print("|---|---|---|")
    for r in results:
        if r.drain:
            d = r.drain
            print(
                f"| {r.database} | drain | {fmt(d['rate'], 0)} executions/s "
                f"({d['executions']} in {fmt(d['seconds'])} s) |"
            )
        for x in r.executed:
            print(
                f"| {r.database} | accept -> executed at {x['rate']}/s | "
                f"p50 {fmt(x['p50'], 0)} ms, p99 {fmt(x['p99'], 0)} ms, max {fmt(x['max'], 0)} ms "
                f"({x['executed']} of {x['acked']} acknowledged executed) |"
            )
    print("\n## Resident memory after the run (VmRSS)\n")
    print("| database | process | MB |")
    print("|---|---|---:|")
    for r in results:
        for name, mb in r.memory:
            print(f"| {r.database} | {name} | {fmt(mb)} |")

    print("\n## Goals\n")
    print("| database | goal | measured | |")
    print("|---|---|---|---|")
    for r in results:
        b, o = r.ingest.get(("baseline", "new")), r.ingest.get(("ours", "new"))
        od = r.ingest.get(("ours", "duplicate"))
        if b and o:
            ratio = o["rps"] / b["rps"]
            ok &= ratio >= GOAL_RATIO
            print(
                f"| {r.database} | ingest >= {GOAL_RATIO} x baseline | {ratio:.2f} x | "
                f"{verdict(ratio >= GOAL_RATIO)} |"
            )
        if o and od:
            good = od["rps"] >= o["rps"]
            ok &= good
            print(
                f"| {r.database} | duplicate path no slower than new | "
                f"{od['rps']:,.0f} vs {o['rps']:,.0f} req/s | {verdict(good)} |"
            )
        x = r.open_loop.get("ours")
        if x:
            good = x["p99"] <= GOAL_P99_MS and x["rate"] >= GOAL_RATE * 0.95
            ok &= good
            print(
                f"| {r.database} | p99 <= {GOAL_P99_MS} ms at {GOAL_RATE} req/s | "
                f"{fmt(x['p99'])} ms at {fmt(x['rate'], 0)} req/s | {verdict(good)} |"
            )
        web = [mb for name, mb in r.memory if name == "ours gunicorn worker"]
        if web:
            good = max(web) <= GOAL_RSS_MB
            ok &= good
            print(
                f"| {r.database} | gunicorn worker <= {GOAL_RSS_MB} MB | "
                f"max {fmt(max(web))} MB of {len(web)} | {verdict(good)} |"
            )
    for r in results:
        for note in r.notes:
            print(f"\n- {r.database}: {note}")
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(f"\ncommit {commit}, {os.cpu_count()} cores, python {sys.version.split()[0]}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 2 minutes)")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (Debian's package)", file=sys.stderr)
        return 2
    cfg = QUICK if args.quick else FULL
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    results = []
    for kind in kinds:
        print(f"measuring {kind} ...", file=sys.stderr, flush=True)
        results.append(run_database(kind, cfg))
    met = report(results, cfg)
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
