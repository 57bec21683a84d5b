"""Execution engine benchmark: drain rate, accept-to-start latency and ingest rate.

Run from the project root:  .venv/bin/python bench/engine.py [--quick]

On SQLite and on PostgreSQL (each a fresh database, dropped afterwards), with the demo
route `order.created` -> `log` connector, against gunicorn with one sync worker:

1. Drain rate: N events are POSTed while no worker runs, then 1 (and, for a second batch,
   2) `manage.py runworker` processes start; executions/s = N / (last execution finished -
   first attempt started), both read from the database once all N have succeeded.
2. Accept-to-start latency: one idle worker; events arrive at a fixed rate; per event,
   events_attempt.started_at - events_event.received_at for its first attempt.
3. Ingest rate of one gunicorn worker: a closed-loop POST flood of new events from a few
   client threads, no worker running.

Prints a markdown table, a breakdown of where the time goes, and the git commit.
All traffic goes to 127.0.0.1; every loop is bounded in time and count; processes and
databases are removed on the way out, also after an error or Ctrl-C.
"""

import argparse
import dataclasses
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

from harness import ROOT, Runtime, as_utc, percentile, post_event

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
EVENT_TYPE = "order.created"  # the demo route sends it to the `log` connector
RUN_EXECUTION = "events.tasks.run_execution"


@dataclasses.dataclass(frozen=True)
class Config:
    drain_events: int  # events preloaded for each drain run
    arrival_rate: float  # events/s in the latency run
    arrival_seconds: float
    ingest_seconds: float
    client_threads: int = 4
    worker_interval: float = 0.1  # runworker --interval (its default)
    drain_timeout: float = 60  # seconds a drain may take before it is reported as such


FULL = Config(drain_events=2000, arrival_rate=20, arrival_seconds=10, ingest_seconds=5)
QUICK = Config(
    drain_events=500, arrival_rate=20, arrival_seconds=4, ingest_seconds=3, drain_timeout=30
)


@dataclasses.dataclass
class Result:
    database: str
    ingest_rate: float | None = None
    drain: dict = dataclasses.field(default_factory=dict)  # workers -> executions/s
    drain_note: dict = dataclasses.field(default_factory=dict)  # workers -> "timed out: k/n"
    drain_split: dict = dataclasses.field(
        default_factory=dict
    )  # 1-worker breakdown, ms per execution
    latency_ms: list = dataclasses.field(default_factory=list)
    latency_split: dict = dataclasses.field(default_factory=dict)  # p50 of each leg, ms
    error: str = ""
    anomalies: list = dataclasses.field(default_factory=list)  # sanity checks that failed
    log_problems: dict = dataclasses.field(
        default_factory=dict
    )  # process -> lines with ERROR/Traceback


# -- SQL -----------------------------------------------------------------------------
# Placeholders are %s for both databases (the harness translates them for SQLite).
STATUS_COUNTS = """
    SELECT x.status, COUNT(*)
    FROM events_execution x JOIN events_event e ON e.id = x.event_id
    WHERE e.event_id LIKE %s
    GROUP BY x.status
"""
ATTEMPTS = """
    SELECT x.id, e.received_at, a.started_at, a.finished_at, x.finished_at
    FROM events_attempt a
    JOIN events_execution x ON x.id = a.execution_id
    JOIN events_event e ON e.id = x.event_id
    WHERE e.event_id LIKE %s AND a.number = 1 AND x.status = 'succeeded'
"""
TASKS = """
    SELECT args_kwargs, enqueued_at, started_at, finished_at
    FROM django_tasks_database_dbtaskresult
    WHERE task_path = %s AND status = 'SUCCESSFUL'
"""
HEARTBEATS = "SELECT COUNT(*) FROM events_workerheartbeat"
ATTEMPT_COUNT = """
    SELECT COUNT(*)
    FROM events_attempt a
    JOIN events_execution x ON x.id = a.execution_id
    JOIN events_event e ON e.id = x.event_id
    WHERE e.event_id LIKE %s
"""
TASK_STATUSES = """
    SELECT status, COUNT(*) FROM django_tasks_database_dbtaskresult GROUP BY status
"""


_T0 = time.monotonic()


def progress(message: str):
    print(f"[{time.monotonic() - _T0:5.0f} s] {message}", file=sys.stderr, flush=True)


def ms(delta) -> float:
    return delta.total_seconds() * 1000


def status_counts(rt: Runtime, tag: str) -> dict[str, int]:
    return dict(rt.query(STATUS_COUNTS, (f"{tag}-%",)))


def attempts(rt: Runtime, tag: str) -> list[dict]:
    keys = ("execution", "received", "attempt_started", "attempt_finished", "finished")
    return [
        {k: (v if k == "execution" else as_utc(v)) for k, v in zip(keys, row, strict=True)}
        for row in rt.query(ATTEMPTS, (f"{tag}-%",))
    ]


def tasks_by_execution(rt: Runtime) -> dict[int, dict]:
    """The first successful task message per execution id (its args are [execution_id])."""
    found = {}
    for args_kwargs, enqueued, started, finished in rt.query(TASKS, (RUN_EXECUTION,)):
        if isinstance(args_kwargs, str):
            args_kwargs = json.loads(args_kwargs)
        execution_id = args_kwargs["args"][0]
        row = {"enqueued": as_utc(enqueued), "started": as_utc(started)}
        row["finished"] = as_utc(finished)
        if execution_id not in found or row["started"] < found[execution_id]["started"]:
            found[execution_id] = row
    return found


# -- load generators -----------------------------------------------------------------
def flood(rt: Runtime, tag: str, *, threads: int, seconds: float, limit: int) -> dict:
    """Closed loop: `threads` clients POST new events back to back until `seconds` pass
    or `limit` events were sent. Returns counts by HTTP status and the elapsed time."""
    counter = itertools.count()
    lock = threading.Lock()
    statuses: dict = {}
    deadline = time.monotonic() + seconds

    def client():
        mine: dict = {}
        while time.monotonic() < deadline:
            with lock:
                i = next(counter)
            if i >= limit:
                break
            try:
                status = post_event(rt.port, f"{tag}-{i:07d}", EVENT_TYPE)
            except OSError as exc:
                status = type(exc).__name__
            mine[status] = mine.get(status, 0) + 1
        with lock:
            for status, n in mine.items():
                statuses[status] = statuses.get(status, 0) + n

    started = time.monotonic()
    pool = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=seconds + 30)
    return {"statuses": statuses, "elapsed": time.monotonic() - started}


def preload(rt: Runtime, tag: str, n: int, threads: int):
    done = flood(rt, tag, threads=threads, seconds=60, limit=n)
    if done["statuses"] != {202: n}:
        raise RuntimeError(f"preloading {n} events: responses {done['statuses']}")


def wait_succeeded(rt: Runtime, tag: str, n: int, timeout: float, workers: list[str]) -> bool:
    """Poll until all n executions of the batch succeeded. False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = status_counts(rt, tag)
        if counts.get("succeeded", 0) >= n:
            return True
        bad = {s: c for s, c in counts.items() if s in ("failed", "held", "blocked", "cancelled")}
        if bad:
            raise RuntimeError(f"batch {tag}: executions ended {bad}")
        for name in workers:
            proc = rt.procs.get(name)
            if proc is None or proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n{rt.log(name)}")
        time.sleep(0.2)
    return False


def wait_heartbeats(rt: Runtime, n: int, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rt.query(HEARTBEATS)[0][0] >= n:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{n} worker heartbeat(s) not seen in {timeout} s")


def check_batch(rt: Runtime, tag: str, n: int, result: Result):
    """Every execution of the batch ran exactly once."""
    tried = rt.query(ATTEMPT_COUNT, (f"{tag}-%",))[0][0]
    if tried != n:
        result.anomalies.append(f"{tag}: {tried} attempts for {n} executions")


# -- the three measurements ----------------------------------------------------------
def drain(rt: Runtime, cfg: Config, workers: int, result: Result):
    tag = f"drain{workers}"
    n = cfg.drain_events
    preload(rt, tag, n, cfg.client_threads)
    names = [f"{tag}-worker{i}" for i in range(workers)]
    for name in names:
        rt.start_worker(name, interval=cfg.worker_interval)
    try:
        finished = wait_succeeded(rt, tag, n, cfg.drain_timeout, names)
    finally:
        for name in names:
            rt.stop(name)
    check_batch(rt, tag, n, result)
    rows = attempts(rt, tag)
    if len(rows) < 2:
        raise RuntimeError(f"{tag}: only {len(rows)} executions succeeded")
    first = min(r["attempt_started"] for r in rows)
    last = max(r["finished"] for r in rows)
    result.drain[workers] = len(rows) / (last - first).total_seconds()
    if not finished:
        result.drain_note[workers] = f"timed out: {len(rows)}/{n}"
    if workers == 1:
        # Where one worker's time per execution goes, averaged over the batch.
        tasks = tasks_by_execution(rt)
        legs = {"before": [], "attempt": [], "after": []}
        for r in rows:
            task = tasks.get(r["execution"])
            if task is None:
                continue
            legs["before"].append(ms(r["attempt_started"] - task["started"]))
            legs["attempt"].append(ms(r["attempt_finished"] - r["attempt_started"]))
            legs["after"].append(ms(task["finished"] - r["attempt_finished"]))
        per_execution = 1000 / result.drain[1]
        split = {"per_execution": per_execution}
        split.update({k: statistics.fmean(v) for k, v in legs.items() if v})
        split["between"] = per_execution - sum(split.get(k, 0) for k in legs)
        result.drain_split = split


def latency(rt: Runtime, cfg: Config, result: Result):
    tag = "latency"
    rt.start_worker("latency-worker", interval=cfg.worker_interval)
    wait_heartbeats(rt, 1)
    time.sleep(1.0)  # let it settle into its idle polling loop
    count = int(cfg.arrival_rate * cfg.arrival_seconds)
    start = time.monotonic()
    refused = {}
    for i in range(count):
        delay = start + i / cfg.arrival_rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        status = post_event(rt.port, f"{tag}-{i:07d}", EVENT_TYPE)
        if status != 202:
            refused[status] = refused.get(status, 0) + 1
    if refused:
        raise RuntimeError(f"latency run: responses other than 202: {refused}")
    try:
        if not wait_succeeded(rt, tag, count, 30, ["latency-worker"]):
            raise TimeoutError(f"latency run: not all {count} executions succeeded in 30 s")
    finally:
        rt.stop("latency-worker")
    check_batch(rt, tag, count, result)
    rows = attempts(rt, tag)
    result.latency_ms = [ms(r["attempt_started"] - r["received"]) for r in rows]
    tasks = tasks_by_execution(rt)
    legs = {"to_enqueued": [], "to_claimed": [], "to_attempt": []}
    for r in rows:
        task = tasks.get(r["execution"])
        if task is None:
            continue
        legs["to_enqueued"].append(ms(task["enqueued"] - r["received"]))
        legs["to_claimed"].append(ms(task["started"] - task["enqueued"]))
        legs["to_attempt"].append(ms(r["attempt_started"] - task["started"]))
    result.latency_split = {k: statistics.median(v) for k, v in legs.items() if v}


def ingest(rt: Runtime, cfg: Config, result: Result):
    done = flood(
        rt, "ingest", threads=cfg.client_threads, seconds=cfg.ingest_seconds, limit=100_000
    )
    accepted = done["statuses"].get(202, 0)
    others = {s: c for s, c in done["statuses"].items() if s != 202}
    if others:
        raise RuntimeError(f"ingest flood: responses other than 202: {others}")
    result.ingest_rate = accepted / done["elapsed"]


def bench_database(kind: str, cfg: Config) -> Result:
    result = Result(database={"sqlite": "SQLite (WAL)", "postgres": "PostgreSQL"}[kind])
    env = {
        "WEB_CONCURRENCY": "1",
        # No gunicorn worker recycling in the middle of a measurement.
        "GUNICORN_MAX_REQUESTS": "0",
    }
    try:
        with Runtime(kind, pg_admin_url=PG_ADMIN_URL, env=env) as rt:
            try:
                rt.start_gunicorn(workers=1)
                progress(f"{kind}: database ready, gunicorn up")
                drain(rt, cfg, 1, result)
                progress(f"{kind}: drain with 1 worker: {fmt(result.drain.get(1))} exec/s")
                drain(rt, cfg, 2, result)
                progress(f"{kind}: drain with 2 workers: {fmt(result.drain.get(2))} exec/s")
                latency(rt, cfg, result)
                p50 = percentile(result.latency_ms, 50) if result.latency_ms else None
                progress(f"{kind}: accept-to-start p50 {fmt(p50)} ms")
                ingest(rt, cfg, result)  # last: its events stay queued, never drained
                progress(f"{kind}: ingest {fmt(result.ingest_rate)} events/s")
            finally:
                rt.stop_all()
                result.log_problems = rt.log_problems()
                failed = dict(rt.query(TASK_STATUSES)).get("FAILED", 0)
                if failed:
                    result.anomalies.append(f"{failed} task messages FAILED")
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        print(f"{kind}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return result


# -- report --------------------------------------------------------------------------
def fmt(value, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def yes_no(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def report(results: list[Result], cfg: Config, elapsed: float, load: float) -> str:
    lines = [
        "| database | ingest, 1 gunicorn worker (events/s) | drain, 1 worker (exec/s) "
        "| drain, 2 workers (exec/s) | drain ≥ ingest (1 / 2 workers) "
        "| accept→start p50 (ms) | accept→start p99 (ms) | p50 ≤ 100 ms |",
        "|---|---:|---:|---:|:---:|---:|---:|:---:|",
    ]
    for r in results:
        if r.error and not (r.drain or r.latency_ms):
            lines.append(f"| {r.database} | error: {r.error} |||||||")
            continue
        drains = []
        for workers in (1, 2):
            text = fmt(r.drain.get(workers))
            if workers in r.drain_note:
                text += f" ({r.drain_note[workers]})"
            drains.append(text)
        meets = [
            yes_no(
                None if r.ingest_rate is None or w not in r.drain else r.drain[w] >= r.ingest_rate
            )
            for w in (1, 2)
        ]
        p50 = percentile(r.latency_ms, 50) if r.latency_ms else None
        p99 = percentile(r.latency_ms, 99) if r.latency_ms else None
        name = r.database + (f" (error: {r.error})" if r.error else "")
        lines.append(
            f"| {name} | {fmt(r.ingest_rate)} | {drains[0]} | {drains[1]} "
            f"| {meets[0]} / {meets[1]} | {fmt(p50)} | {fmt(p99)} "
            f"| {yes_no(None if p50 is None else p50 <= 100)} |"
        )

    lines += [
        "",
        "Where the time goes (1-worker drain: mean ms per execution; latency: p50 ms per leg)",
        "",
        "| database | drain: ms/execution | task claimed → attempt start "
        "| attempt (connector) | attempt end → task done | between tasks (poll + claim) "
        "| latency: received → task enqueued | enqueued → claimed | claimed → attempt start |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        d, s = r.drain_split, r.latency_split
        lines.append(
            f"| {r.database} | {fmt(d.get('per_execution'), 2)} | {fmt(d.get('before'), 2)} "
            f"| {fmt(d.get('attempt'), 2)} | {fmt(d.get('after'), 2)} "
            f"| {fmt(d.get('between'), 2)} | {fmt(s.get('to_enqueued'), 1)} "
            f"| {fmt(s.get('to_claimed'), 1)} | {fmt(s.get('to_attempt'), 1)} |"
        )

    lines += [
        "",
        f"Drain: {cfg.drain_events:,} `{EVENT_TYPE}` events preloaded per run; rate from "
        "the first attempt start to the last execution finish. Latency: "
        f"{cfg.arrival_rate:g} events/s for {cfg.arrival_seconds:g} s, one idle worker "
        f"(`runworker --interval {cfg.worker_interval:g}`). Ingest: closed loop, "
        f"{cfg.client_threads} client threads, {cfg.ingest_seconds:g} s, a new connection "
        f"per request. {os.cpu_count()} CPUs, load average {load:.1f} at the start; "
        f"took {elapsed:.0f} s.",
        f"commit: {git_commit()}",
    ]
    problems = {r.database: r.log_problems for r in results if r.log_problems}
    anomalies = {r.database: r.anomalies for r in results if r.anomalies}
    if anomalies:
        lines.insert(-1, f"Anomalies: {anomalies}")
    if problems:
        lines.insert(-1, f"Lines with ERROR or a traceback in the process logs: {problems}")
    return "\n".join(lines)


def git_commit() -> str:
    def git(*args):
        return subprocess.run(
            ["git", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain")
    return commit + (" (with uncommitted changes)" if dirty else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgres", "both"),
        default="both",
        help="which database(s) to measure (default: both)",
    )
    parser.add_argument(
        "--worker-interval",
        type=float,
        default=0.1,
        help="runworker --interval: seconds between polls of an empty queue (default: 0.1)",
    )
    args = parser.parse_args()
    cfg = dataclasses.replace(QUICK if args.quick else FULL, worker_interval=args.worker_interval)

    def terminate(signum, frame):
        raise SystemExit(128 + signum)  # unwinds through every cleanup

    signal.signal(signal.SIGTERM, terminate)
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    started = time.monotonic()
    load = os.getloadavg()[0]
    results = []
    for kind in kinds:
        progress(f"{kind}: creating a fresh database")
        results.append(bench_database(kind, cfg))
    print(report(results, cfg, time.monotonic() - started, load))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
