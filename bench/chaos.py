"""Chaos scenarios: the runtime's promises checked while its processes and dependencies fail.

Run from the project root:  .venv/bin/python bench/chaos.py [--scenario all] [--db both] [--quick]

Each scenario starts its own runtime (bench/harness.py: a fresh SQLite file or PostgreSQL
database, gunicorn and `runworker --concurrency 32` processes on 127.0.0.1) and an
idempotent sink (bench/sinks.py) that the routes' `http` connector calls with the
execution's Idempotency-Key. It floods the runtime with events, breaks something, and
ASSERTS:

1. worker-kills: a worker is SIGKILLed while it holds 32 running executions (its lease
   owner's rows), 1-3 s after the previous kill, and started again at once, during a flood;
   the 32 come back after their lease (attempt `lost`, reaped within a reaper interval of
   its end) and succeed; every acknowledged event succeeds with exactly one side effect at
   the sink, which absorbs the repeated deliveries, each of which follows a lost attempt.
2. gunicorn-kills: a gunicorn worker, then the master, are SIGKILLed mid-flood; every
   acknowledged event is stored with its execution (no partial rows), gunicorn restarts
   and serves, and senders' retries are answered `accepted` or `duplicate`.
3. pg-restart (PostgreSQL only, on a private throwaway cluster): the database is stopped
   (`pg_ctl -m immediate`) and started again mid-flood; requests meanwhile get 503 with the
   JSON error, never 500 or a hang; the same gunicorn and workers recover on their own;
   nothing acknowledged is lost.
4. db-restart (PostgreSQL only, on a private throwaway cluster; SQLite has no server to
   restart): the database is stopped while each worker has 32 actions in flight and
   started again; the same worker processes settle those 32 themselves (no lease lost, no
   action run twice) and go on claiming; everything succeeds once.
5. sink-outage: the sink answers 500 for 30 s; every retry waits its backoff (full jitter,
   within the ceiling, never early), the circuit opens (database and /metrics), sheds the
   load and closes, and every execution succeeds soon after it closed.
6. duplicate-storm: 10,000 requests over 1,000 event ids at concurrency 64, a new
   connection each; only 202 `accepted` (exactly one per id) and 200 `duplicate`; exactly
   1,000 events, executions and side effects.
7. chain-kills: a two-step chain (step 1 answered with an invoice number by the sink, its
   follow-up event carrying it to step 2, which posts it to a second sink) while workers
   are SIGKILLed as in worker-kills; every step-1 execution emits exactly one follow-up,
   carrying the number the sink answered for it, and every follow-up's step 2 succeeds
   with exactly one side effect at the second sink.

Every wait has a deadline and every flood a request budget. A violated promise is printed
with its evidence and makes the exit status 1. At the end a markdown table sums up.
"""

import argparse
import ast
import contextlib
import dataclasses
import glob
import http.client
import itertools
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import API_KEY, HOST, ROOT, Runtime, as_utc, free_port
from sinks import IdempotentSink

PG_ADMIN_URL = os.environ.get(
    "CHAOS_PG_URL", os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
)
# The chaos routes, one per event type (no demo route matches these types). A worker never
# gives all its slots to one route (events/engine/claims.py keeps concurrency // 16 of them,
# at least 1, for the others: 30 of 32), so the scenarios that fill a worker's 32 slots
# send their events over two routes, "lanes", each with room for all of them.
ROUTES = (("chaos-sink", "chaos.effect"), ("chaos-sink-2", "chaos.effect-2"))
ROUTE, EVENT_TYPE = ROUTES[0]
TYPES_LIKE = "chaos.%"  # the events of every lane
MAX_IN_FLIGHT = 100  # each chaos route's, over all workers (the default, 16, would cap it)
TERMINAL = {"succeeded", "failed", "cancelled", "held", "blocked", "dry_run"}
ALL = (
    "worker-kills",
    "gunicorn-kills",
    "pg-restart",
    "db-restart",
    "sink-outage",
    "duplicate-storm",
    "chain-kills",
)
POSTGRES_ONLY = {
    "pg-restart": "it restarts a PostgreSQL server",
    "db-restart": "SQLite is a file in the workers' own processes: there is no database "
    "server to restart",
}
DATABASES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}

# Recovery is fast here so a scenario is short; the defaults are 60 s and 5 s.
LEASE_SECONDS, REAPER_SECONDS = 5, 1
ENGINE_ENV = {
    "EXECUTION_LEASE_SECONDS": str(LEASE_SECONDS),
    "REAPER_INTERVAL_SECONDS": str(REAPER_SECONDS),
    "WORKER_STALE_SECONDS": "10",
    "WORKER_GRACE_SECONDS": "10",
    "OUTBOUND_HOSTS": HOST,
    "OUTBOUND_ALLOW_PRIVATE": HOST,
    "METRICS_CACHE_SECONDS": "0",
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    events: int  # events sent in gunicorn-kills and pg-restart
    kill_events: int  # events sent in worker-kills: enough to keep every slot busy
    worker_kills: int  # SIGKILLs of a worker holding `concurrency` running executions
    restart_events: int  # events queued in db-restart
    outage_events: int  # events sent into the sink outage
    outage_seconds: float
    storm_requests: int
    storm_ids: int
    storm_concurrency: int
    concurrency: int = 32  # runworker --concurrency, for every worker
    action_seconds: float = 1.0  # the sink's answer time where the slots must stay full
    kill_pause: tuple[float, float] = (1, 3)  # s between worker kills, drawn uniformly
    db_down_seconds: float = 8
    restart_lease: int = 30  # EXECUTION_LEASE_SECONDS in db-restart: longer than the outage
    paced_seconds: float = 25  # gunicorn-kills and pg-restart spread their events over this
    client_threads: int = 8


FULL = Sizes(
    events=5000,
    kill_events=5000,
    worker_kills=20,
    restart_events=2000,
    outage_events=200,
    outage_seconds=30,
    storm_requests=10_000,
    storm_ids=1000,
    storm_concurrency=64,
)
QUICK = Sizes(
    events=400,
    kill_events=500,
    worker_kills=3,
    kill_pause=(0.5, 1.5),
    restart_events=200,
    outage_events=40,
    outage_seconds=20,
    storm_requests=2000,
    storm_ids=200,
    storm_concurrency=32,
    db_down_seconds=5,
    paced_seconds=10,
)


class Abort(Exception):
    """The scenario cannot go on: a deadline passed or a step failed. A violation."""


@dataclasses.dataclass
class Outcome:
    scenario: str
    database: str
    requests: int = 0
    acks: int = 0
    executions: int | None = None
    side_effects: int | None = None
    absorbed: int | None = None
    duration: float = 0.0
    violations: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    facts: dict = dataclasses.field(default_factory=dict)  # figures for tests/engine/test_chaos.py

    @property
    def passed(self) -> bool:
        return not self.violations

    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.violations.append(message)
            progress(f"VIOLATION {self.scenario}/{self.database}: {message.splitlines()[0]}")
        return ok

    def note(self, message: str):
        self.notes.append(message)
        progress(f"{self.scenario}/{self.database}: {message}")

    def report(self) -> str:
        lines = [f"{self.scenario} on {self.database}: {'PASS' if self.passed else 'FAIL'}"]
        lines += [f"  violation: {v}" for v in self.violations]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


_T0 = time.monotonic()


def progress(message: str):
    print(f"[{time.monotonic() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


class Budget:
    """A scenario's deadline: every wait inside it is bounded by what is left."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def wait_until(self, predicate, timeout: float, what: str, interval: float = 0.2):
        deadline = time.monotonic() + min(timeout, max(self.left(), 0))
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise Abort(f"{what}: not within {min(timeout, max(self.left(), 0)):.0f} s")
            time.sleep(interval)


# -- senders -------------------------------------------------------------------------
def event_type(event_id: str, lanes: int = 1) -> str:
    """The type (so the route) of an event: spread over the first `lanes` routes by id."""
    return ROUTES[zlib.crc32(event_id.encode()) % lanes][1]


def event_body(event_id: str, lanes: int = 1) -> bytes:
    """The same bytes for the same id, so a resend is a duplicate and never a conflict."""
    body = {"event_id": event_id, "type": event_type(event_id, lanes), "data": {"n": event_id}}
    return json.dumps(body).encode()


@dataclasses.dataclass
class Reply:
    event_id: str
    status: int | str  # the HTTP status, or the name of the exception (no answer)
    body: dict | None
    started: float  # time.monotonic()
    elapsed: float

    @property
    def acked(self) -> bool:
        return isinstance(self.status, int) and 200 <= self.status < 300


def post(port: int, event_id: str, timeout: float, lanes: int = 1) -> Reply:
    """POST one event to /webhook on a new connection."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/webhook",
            body=event_body(event_id, lanes),
            headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
        )
        response = conn.getresponse()
        raw = response.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"raw": raw[:300].decode(errors="replace")}
        return Reply(event_id, response.status, body, started, time.monotonic() - started)
    except (OSError, http.client.HTTPException) as exc:
        return Reply(event_id, type(exc).__name__, None, started, time.monotonic() - started)
    finally:
        conn.close()


class Flood:
    """Client threads POST `deliveries` (event ids, repeats allowed), each request on a new
    connection, until all are sent or `seconds` pass, starting at most `rate` a second.
    With `resend`, a delivery that got no answer or a 5xx is sent again after `pause`, as a
    sender would, until it is acknowledged; a 4xx is never resent. Every reply is kept.
    The events go to the first `lanes` chaos routes (event_type)."""

    def __init__(
        self,
        port: int,
        deliveries: list[str],
        *,
        threads: int,
        seconds: float,
        resend: bool = False,
        pause: float = 0.2,
        timeout: float = 15,
        rate: float | None = None,
        lanes: int = 1,
    ):
        self.port = port
        self.lanes = lanes
        self.rate = rate  # deliveries started per second, at most (None: as fast as it goes)
        self.deliveries = deliveries
        self.threads = threads
        self.resend = resend
        self.pause = pause
        self.timeout = timeout
        self.deadline = time.monotonic() + seconds
        self.replies: list[Reply] = []
        self.acked: dict[str, Reply] = {}  # event id -> its first 2xx
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool: list[threading.Thread] = []
        self._t0 = time.monotonic()

    def start(self) -> "Flood":
        self._t0 = time.monotonic()
        self._pool = [
            threading.Thread(target=self._client, daemon=True) for _ in range(self.threads)
        ]
        for thread in self._pool:
            thread.start()
        return self

    def join(self) -> bool:
        """Wait for the clients (bounded by the deadline); False if some never finished."""
        for thread in self._pool:
            thread.join(timeout=max(self.deadline - time.monotonic(), 0) + self.timeout + 5)
        return not any(thread.is_alive() for thread in self._pool)

    def stop(self):
        self._stop.set()

    @property
    def started(self) -> bool:
        return bool(self._pool)

    @property
    def done(self) -> bool:
        return not any(thread.is_alive() for thread in self._pool)

    def _take(self) -> str | None:
        with self._lock:
            if self._next >= len(self.deliveries):
                return None
            self._next += 1
            index = self._next - 1
        if self.rate:
            time.sleep(max(0.0, self._t0 + index / self.rate - time.monotonic()))
        return self.deliveries[index]

    def _client(self):
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            event_id = self._take()
            if event_id is None:
                return
            while not self._stop.is_set() and time.monotonic() < self.deadline:
                reply = post(self.port, event_id, self.timeout, self.lanes)
                with self._lock:
                    self.replies.append(reply)
                    if reply.acked:
                        self.acked.setdefault(event_id, reply)
                again = not reply.acked and (isinstance(reply.status, str) or reply.status >= 500)
                if not (self.resend and again):
                    break
                time.sleep(self.pause)

    def counts(self) -> Counter:
        with self._lock:
            return Counter(reply.status for reply in self.replies)

    def sent(self) -> int:
        with self._lock:
            return len(self.replies)


def fmt_counts(counts) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))


# -- the runtime ---------------------------------------------------------------------
def idempotent_sink(latency: float = 0.0, answer=None) -> IdempotentSink:
    """The sink, with room for every worker's calls at once. (bench/sinks.py sets
    request_queue_size after its server is already listening, so the backlog stays
    socketserver's 5, and 64 callers at once get connection resets: listen again.)"""
    sink = IdempotentSink(latency=latency, answer=answer)
    sink.server.socket.listen(max(256, sink.server.request_queue_size))
    return sink


def runtime(kind: str, pg_url: str, **env) -> Runtime:
    return Runtime(kind, pg_admin_url=pg_url, env={**ENGINE_ENV, **env})


def add_routes(rt: Runtime, sink: IdempotentSink, lanes: int = 1, **fields):
    """The chaos routes of the first `lanes` event types: `http` POST to the sink, with room
    for every worker's slots (max_in_flight), checked as the admin would."""
    params = {"url": sink.url, "body": {"event_id": "{{ event.event_id }}"}}
    code = "".join(route_code(name, type_, params, **fields) for name, type_ in ROUTES[:lanes])
    rt.manage("shell", "-c", "from connectors.models import Route\n" + code)


def route_code(name: str, type_: str, params: dict, **fields) -> str:
    """Python that saves one `http` POST route, checked as the admin would (full_clean),
    with room for every worker's slots (max_in_flight) unless `fields` say otherwise."""
    fields = {"max_in_flight": MAX_IN_FLIGHT, **fields}
    return (
        f"route = Route(name={name!r}, event_type={type_!r}, connector='http', "
        f"action='post', params={params!r}, "
        + ", ".join(f"{k}={v!r}" for k, v in fields.items())
        + ")\nroute.full_clean()\nroute.save()\n"
    )


WORKERS = ("worker-0", "worker-1")


def start_workers(rt: Runtime, sizes: Sizes, names=WORKERS):
    for name in names:
        rt.start_worker(name, concurrency=sizes.concurrency)


def supervise(
    rt: Runtime, outcome: Outcome, sizes: Sizes, names=WORKERS, why: str = "", restart=True
):
    """A worker that exited on its own is a violation. Restart it, as a supervisor would,
    so the rest of the scenario can still be checked (`restart=False`: later)."""
    for name in names:
        proc = rt.procs.get(name)
        if proc is not None and proc.poll() is not None:
            rt.procs.pop(name)
            outcome.check(
                False,
                f"{name} (pid {proc.pid}) exited on its own{why}, exit status "
                f"{proc.returncode}. Its last traceback:\n{last_traceback(rt, name)}",
            )
            if restart:
                rt.start_worker(name, concurrency=sizes.concurrency)
    if restart:
        for name in names:
            if name not in rt.procs:
                rt.start_worker(name, concurrency=sizes.concurrency)


def last_traceback(rt: Runtime, name: str) -> str:
    """The last traceback in a process's log: our frames, the last frame and the error
    (the whole log stays in the logs kept for a failed scenario)."""
    path = rt.tmp / f"{name}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    start = text.rfind("Traceback (most recent call last):")
    if start < 0:
        return tail(text, 10)
    lines = text[start:].splitlines()
    frames = [i for i, line in enumerate(lines) if line.lstrip().startswith('File "')]
    keep = [i for i in frames if ".venv" not in lines[i] or i == frames[-1]]
    picked = [lines[0]]
    for i in keep:
        picked += [lines[i], lines[i + 1]] if i + 1 < len(lines) else [lines[i]]
    error = next((line for line in reversed(lines) if line and not line[0].isspace()), "")
    return tail("\n".join([*picked, error]), 60)


def tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


@contextlib.contextmanager
def evidence(rt: Runtime, outcome: Outcome):
    """Keep the processes' logs of a scenario that failed, or of every scenario with
    CHAOS_KEEP_LOGS=1 (the harness removes its folder)."""
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        if failed or not outcome.passed or os.environ.get("CHAOS_KEEP_LOGS"):
            kept = Path(tempfile.mkdtemp(prefix=f"chaos-{outcome.scenario}-"))
            for log in rt.tmp.glob("*.log"):
                shutil.copy(log, kept / log.name)
            outcome.note(f"process logs kept in {kept}")


# -- what the database holds ---------------------------------------------------------
EVENTS = """
    SELECT e.event_id, COUNT(x.id)
    FROM events_event e LEFT JOIN events_execution x ON x.event_id = e.id
    WHERE e.type LIKE %s
    GROUP BY e.id, e.event_id
"""
ORPHANS = """
    SELECT COUNT(*) FROM events_execution x LEFT JOIN events_event e ON e.id = x.event_id
    WHERE e.id IS NULL
"""
STATUSES = """
    SELECT x.status, COUNT(*) FROM events_execution x JOIN events_event e ON e.id = x.event_id
    WHERE e.type LIKE %s GROUP BY x.status
"""
KEYS = """
    SELECT x.idempotency_key, x.status, x.last_error
    FROM events_execution x JOIN events_event e ON e.id = x.event_id
    WHERE e.type LIKE %s
"""
# Per idempotency key: its attempts, and those that ended with the worker gone (lost:
# the reaper took the lease back; abandoned: the worker gave it back when told to stop).
TRIES = """
    SELECT x.idempotency_key, COUNT(a.id),
           SUM(CASE WHEN a.outcome IN ('lost', 'abandoned') THEN 1 ELSE 0 END)
    FROM events_execution x JOIN events_attempt a ON a.execution_id = x.id
    GROUP BY x.idempotency_key
"""
RUNNING_BY_OWNER = """
    SELECT lease_owner, COUNT(*) FROM events_execution WHERE status = 'running'
    GROUP BY lease_owner
"""
HELD = """
    SELECT id, lease_owner, lease_expires_at, idempotency_key FROM events_execution
    WHERE status = 'running' AND lease_owner LIKE %s
"""
OUTCOMES = "SELECT outcome, COUNT(*) FROM events_attempt GROUP BY outcome"
ATTEMPTS = """
    SELECT execution_id, number, started_at, finished_at, outcome
    FROM events_attempt ORDER BY execution_id, number
"""
CIRCUIT = """
    SELECT c.state, c.consecutive_failures, c.opened_at, c.retry_at
    FROM connectors_circuitbreaker c JOIN connectors_route r ON r.id = c.route_id
    WHERE r.name = %s
"""
WAITING = """
    SELECT status_reason, COUNT(*), MIN(next_attempt_at), MAX(next_attempt_at)
    FROM events_execution WHERE status = 'retrying' GROUP BY status_reason
"""
LAST_FINISHED = """
    SELECT MAX(x.finished_at) FROM events_execution x JOIN events_event e ON e.id = x.event_id
    WHERE e.type LIKE %s
"""
HEARTBEATS = "SELECT pid, worker_id FROM events_workerheartbeat"


def stored_events(rt: Runtime) -> dict[str, int]:
    """event id -> how many executions it has."""
    return dict(rt.query(EVENTS, (TYPES_LIKE,)))


def statuses(rt: Runtime, types_like: str = TYPES_LIKE) -> dict[str, int]:
    return dict(rt.query(STATUSES, (types_like,)))


def owner_pid(owner: str) -> int | None:
    """The pid in a lease owner / worker id, `host:pid:random` (events/engine/worker.py)."""
    parts = owner.rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def owned_by(pid: int) -> str:
    """A LIKE pattern for the lease owners of the worker process `pid`."""
    return f"%:{pid}:%"


class InFlight:
    """Running executions per worker process (its lease owner's rows), sampled from the
    database as the scenario goes: how full the workers' slots really were."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.peak: Counter = Counter()  # lease owner -> most running rows seen at once

    def sample(self) -> dict[str, int]:
        now = dict(self.rt.query(RUNNING_BY_OWNER))
        for owner, n in now.items():
            self.peak[owner] = max(self.peak[owner], n)
        return now

    def of(self, pid: int) -> int:
        return sum(n for owner, n in self.sample().items() if owner_pid(owner) == pid)

    def summary(self) -> str:
        if not self.peak:
            return "no running execution was seen"
        full = sorted(self.peak.values(), reverse=True)
        return (
            f"most running executions seen at once on one worker process: {full[0]} "
            f"({len(full)} processes; their peaks {', '.join(map(str, full[:8]))}"
            f"{', ...' if len(full) > 8 else ''})"
        )


def check_stored(rt: Runtime, outcome: Outcome, acked: set[str], sent: set[str]):
    """Every acknowledged event is stored; each stored event has exactly its one execution
    (the route matches once); no execution lacks its event; nothing unsent is stored."""
    events = stored_events(rt)
    missing = sorted(acked - events.keys())
    outcome.check(
        not missing,
        f"{len(missing)} acknowledged events are not in the database (lost acks): {missing[:10]}",
    )
    partial = {eid: n for eid, n in events.items() if n != 1}
    outcome.check(
        not partial,
        f"{len(partial)} events without exactly one execution (partial rows): "
        f"{dict(list(partial.items())[:10])}",
    )
    orphans = rt.query(ORPHANS)[0][0]
    outcome.check(orphans == 0, f"{orphans} executions without their event")
    unknown = sorted(events.keys() - sent)
    outcome.check(not unknown, f"{len(unknown)} stored events nobody sent: {unknown[:10]}")
    return events


def wait_terminal(
    rt: Runtime,
    outcome: Outcome,
    budget: Budget,
    expected: int,
    timeout: float,
    watch=None,
    types_like: str = TYPES_LIKE,
):
    """Until all `expected` executions (of events whose type is LIKE `types_like`) are
    terminal; then all must have succeeded."""
    last = {"at": time.monotonic(), "counts": None}

    def settled():
        if watch:
            watch()
        counts = statuses(rt, types_like)
        if counts != last["counts"]:
            last.update(at=time.monotonic(), counts=counts)
        if time.monotonic() - last["at"] > 10:
            progress(f"{outcome.scenario}/{outcome.database}: executions {counts}")
            last["at"] = time.monotonic()
        total = sum(counts.values())
        return total == expected and all(status in TERMINAL for status in counts)

    try:
        budget.wait_until(settled, timeout, "all executions terminal", interval=0.5)
    except Abort as exc:
        raise Abort(f"{exc}; executions by status: {statuses(rt, types_like)}") from None
    counts = statuses(rt, types_like)
    if not outcome.check(
        counts == {"succeeded": expected},
        f"executions of {types_like} events ended {counts}, expected {expected} succeeded",
    ):
        failed = [r for r in rt.query(KEYS, (types_like,)) if r[1] != "succeeded"][:5]
        outcome.note(f"not succeeded, first few (key, status, last error): {failed}")


def check_effects(
    rt: Runtime, outcome: Outcome, sink: IdempotentSink, types_like=TYPES_LIKE, name="the sink"
):
    """One side effect per execution: the sink's distinct keys are the keys of the
    executions of the events whose type is LIKE `types_like`. A key the sink saw more than
    once is a repeat it absorbed; each repeat must follow an attempt whose worker was gone
    (lost or abandoned): an action run twice by a worker that was alive throughout would
    be a double run the key only happened to hide."""
    rows = rt.query(KEYS, (types_like,))
    keys = {key for key, _, _ in rows}
    succeeded = {key for key, status, _ in rows if status == "succeeded"}
    effects = sink.keys()
    outcome.executions = len(rows)
    outcome.side_effects = len(effects)
    outcome.absorbed = sink.absorbed
    outcome.check(
        len(keys) == len(rows), f"{len(rows) - len(keys)} executions share an idempotency key"
    )
    outcome.check(
        len(effects) == len(rows),
        f"{len(effects)} distinct side effects at {name} for {len(rows)} executions",
    )
    without = succeeded - effects
    outcome.check(not without, f"{len(without)} executions succeeded without a side effect")
    strangers = effects - keys
    outcome.check(
        not strangers, f"{len(strangers)} side effects at {name} for keys no execution has"
    )
    outcome.check(sink.without_key == 0, f"{sink.without_key} calls without an Idempotency-Key")
    if sink.truncated:
        outcome.note(
            f"{name} dropped {sink.truncated} requests whose body a killed worker never "
            "finished sending (no effect; each was retried whole)"
        )
    tries = {key: (int(n), int(gone or 0)) for key, n, gone in rt.query(TRIES)}
    with sink.lock:
        deliveries = dict(sink.deliveries)
    more = {
        k: (d, tries.get(k, (0, 0))[0])
        for k, d in deliveries.items()
        if d > tries.get(k, (0, 0))[0]
    }
    outcome.check(
        not more,
        f"{len(more)} keys delivered more often than their execution had attempts "
        f"(key: deliveries, attempts): {dict(list(more.items())[:5])}",
    )
    unexplained = {
        k: (d, *tries.get(k, (0, 0)))
        for k, d in deliveries.items()
        if d - 1 > tries.get(k, (0, 0))[1]
    }
    outcome.check(
        not unexplained,
        f"{len(unexplained)} keys delivered again without a lost or abandoned attempt before "
        f"(an action run twice by a live worker; key: deliveries, attempts, lost or "
        f"abandoned): {dict(list(unexplained.items())[:5])}",
    )
    if sink.absorbed:
        most = max(deliveries.values())
        outcome.note(
            f"{name} absorbed {sink.absorbed} repeated deliveries "
            f"(at most {most} deliveries of one key)"
        )


def check_workers(rt: Runtime, outcome: Outcome):
    """What the reapers did (from the workers' logs); no traceback in a worker's log; the
    reaper dead-lettered nothing (no execution ran out of attempts through lost leases)."""
    reaped = Counter()
    tracebacks = late = 0
    expired, while_running = set(), []
    for path in sorted(rt.tmp.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "reaper: {" in line:
                with contextlib.suppress(ValueError, SyntaxError):
                    reaped.update(ast.literal_eval(line[line.index("reaper: {") + 8 :]))
            elif ": lease expired: worker" in line:
                expired.add(logged_execution(line))
            elif ": lease lost while running" in line:
                while_running.append(logged_execution(line))
            late += ": lease lost before the result was saved" in line
            tracebacks += line.startswith("Traceback (most recent call last)")
    outcome.check(
        not reaped["failed"], f"the reapers failed {reaped['failed']} executions (out of attempts)"
    )
    if tracebacks:
        worst = max(
            rt.tmp.glob("worker-*.log"),
            key=lambda p: p.read_text(errors="replace").count("Traceback (most recent"),
        )
        outcome.check(
            False,
            f"{tracebacks} tracebacks in the workers' logs; the last in {worst.name}:\n"
            f"{last_traceback(rt, worst.stem)}",
        )
    note_failed_tries(rt, outcome)
    never_reaped = [ex for ex in while_running if ex not in expired]
    outcome.note(
        f"the reapers requeued {reaped['requeued']} executions whose lease expired; the "
        f"workers logged 'lease lost before the result was saved' {late} times and 'lease "
        f"lost while running' {len(while_running)} times, {len(never_reaped)} of them for "
        "executions no reaper ever took"
    )


def logged_execution(line: str) -> int | None:
    """The id in a worker's log line `... execution 123: ...`."""
    _, _, rest = line.partition(" execution ")
    number = rest.split(":", 1)[0]
    return int(number) if number.isdigit() else None


def attempt_outcomes(rt: Runtime) -> dict[str, int]:
    return dict(rt.query(OUTCOMES))


FAILED_TRIES = """
    SELECT outcome, error_class, substr(error_message, 1, 160), COUNT(*) FROM events_attempt
    WHERE outcome IN ('retryable_error', 'permanent_error')
    GROUP BY outcome, error_class, substr(error_message, 1, 160) ORDER BY COUNT(*) DESC
"""


def note_failed_tries(rt: Runtime, outcome: Outcome):
    """Say which calls failed and why (a retry is no violation; its cause is worth seeing)."""
    rows = rt.query(FAILED_TRIES)
    if rows:
        outcome.note(
            "failed attempts (outcome, class, message: count): "
            + "; ".join(f"{o}, {c}, {m!r}: {n}" for o, c, m, n in rows[:5])
        )


def placeholders(values) -> str:
    return ", ".join(["%s"] * len(values))


# -- 1. worker kills ---------------------------------------------------------------------
@dataclasses.dataclass
class Kill:
    name: str
    pid: int
    at: float  # time.time()
    held: list  # (execution id, lease owner, lease_expires_at, key) running at its death
    delivered: int  # how many of those had had their side effect at the sink already


ATTEMPTS_OF = """
    SELECT execution_id, number, worker, outcome, started_at, finished_at
    FROM events_attempt WHERE execution_id IN ({}) ORDER BY execution_id, number
"""


def flood_then_workers(rt, sizes, budget, prefix: str) -> tuple[InFlight, list[str], Flood]:
    """Start gunicorn and a flood of `sizes.kill_events` events over two lanes, then the
    workers once a backlog is there, so their slots stay full however fast the machine
    ingests the rest."""
    rt.start_gunicorn(workers=3)
    inflight = InFlight(rt)
    ids = [f"{prefix}-{i:06d}" for i in range(sizes.kill_events)]
    flood = Flood(
        rt.port, ids, threads=sizes.client_threads, seconds=budget.left() / 2, lanes=2
    ).start()
    budget.wait_until(lambda: len(flood.acked) >= 0.4 * len(ids) or flood.done, 60, "a backlog")
    start_workers(rt, sizes)
    return inflight, ids, flood


def after_kills(rt, outcome, sizes, budget, inflight, flood, ids, kills):
    """Once the kills are done: the flood's replies checked and stored events compared with
    what was acknowledged, then a wait (the supervisor restarting workers meanwhile) until
    every execution of the acknowledged events is terminal. Returns that watch, for more
    waits."""
    outcome.facts["held_at_kills"] = [len(kill.held) for kill in kills]
    outcome.check(flood.join(), "the flood's clients did not finish")
    outcome.requests, outcome.acks = flood.sent(), len(flood.acked)
    outcome.note(f"flood replies: {fmt_counts(flood.counts())}")
    outcome.check(
        outcome.acks == len(ids), f"only {outcome.acks} of {len(ids)} events acknowledged"
    )
    check_stored(rt, outcome, set(flood.acked), set(ids))

    def watch():
        supervise(rt, outcome, sizes)
        inflight.sample()

    wait_terminal(rt, outcome, budget, len(flood.acked), budget.left() - 5, watch=watch)
    return watch


def worker_kills(kind: str, sizes: Sizes, pg_url: str, outcome: Outcome) -> Outcome:
    """SIGKILL a worker while all its slots are busy, again and again during a flood: what
    it held comes back after the lease; nothing lost, no repeated effect."""
    budget = Budget(90 + sizes.kill_events * 0.06)
    # Each call is answered `action_seconds` after its effect happened at the sink: the
    # slots stay full, and a kill lands after the effects and before the worker recorded
    # them, the case the idempotency key is for.
    with (
        idempotent_sink(sizes.action_seconds) as sink,
        runtime(kind, pg_url) as rt,
        evidence(rt, outcome),
    ):
        add_routes(rt, sink, lanes=2)
        inflight, ids, flood = flood_then_workers(rt, sizes, budget, "wk")
        kills = kill_workers(rt, outcome, sizes, budget, inflight, flood, [sink])
        after_kills(rt, outcome, sizes, budget, inflight, flood, ids, kills)
        check_kills(rt, outcome, [sink], kills)
        outcome.note(
            f"{len(kills)} SIGKILLs, each of a worker holding (running, its lease owner's) "
            f"{', '.join(str(len(k.held)) for k in kills)} executions; attempts by outcome: "
            f"{attempt_outcomes(rt)}; {inflight.summary()}"
        )
        check_effects(rt, outcome, sink)
        check_workers(rt, outcome)
    return outcome


def kill_workers(
    rt: Runtime,
    outcome: Outcome,
    sizes: Sizes,
    budget: Budget,
    inflight: "InFlight",
    flood: Flood,
    sinks: list[IdempotentSink],
    wanted=None,
) -> list[Kill]:
    """SIGKILL a worker holding all its slots, `sizes.worker_kills` times, a pause apart,
    and start it again at once (as a supervisor would): what each held is recorded.
    `wanted(kill number, running rows)`, if given, must also hold before a kill."""
    kills: list[Kill] = []
    full = sizes.concurrency

    def ripe(pid: int, aim: float) -> bool:
        """All slots of the worker busy, and (for up to 5 s, the aim) at least half of
        their calls arrived at the sink: their effects happened, their results are
        not recorded. A kill now leaves the most for the idempotency key to absorb."""
        rows = rt.query(HELD, (owned_by(pid),))
        inflight.sample()
        if len(rows) < full or (wanted is not None and not wanted(len(kills), rows)):
            return False
        done = sum(1 for *_, key in rows if reached(sinks, key))
        return done >= full // 2 or time.monotonic() > aim

    while len(kills) < sizes.worker_kills:
        # A supervisor's view: a worker dies, it is started again at once.
        pause_until = time.monotonic() + random.uniform(*sizes.kill_pause)
        budget.wait_until(
            lambda until=pause_until: supervise(rt, outcome, sizes) or time.monotonic() >= until,
            10,
            "the pause between kills",
            interval=0.1,
        )
        name = random.choice(WORKERS)
        pid, aim = rt.procs[name].pid, time.monotonic() + 5
        try:
            budget.wait_until(
                lambda pid=pid, proc=rt.procs[name], aim=aim: (
                    ripe(pid, aim) or proc.poll() is not None
                ),
                20,
                f"{name} (pid {pid}) holding {full} running executions",
                interval=0.02,
            )
        except Abort as exc:
            peak = max((n for o, n in inflight.peak.items() if owner_pid(o) == pid), default=0)
            outcome.check(
                False,
                f"{exc} (at most {peak} seen; flood: {flood.sent()} sent, "
                f"{'done' if flood.done else 'going on'}); killed anyway",
            )
        if rt.procs[name].poll() is not None:
            supervise(rt, outcome, sizes)  # it died on its own: a violation
            continue
        rt.kill(name, signal.SIGKILL)
        at = time.time()
        # What the dead worker still holds: its lease owner's running rows.
        held = rt.query(HELD, (owned_by(pid),))
        rt.start_worker(name, concurrency=sizes.concurrency)
        delivered = sum(1 for *_, key in held if reached(sinks, key))
        kills.append(Kill(name, pid, at, held, delivered))
        progress(
            f"{outcome.scenario}/{outcome.database}: SIGKILLed {name} (pid {pid}) holding "
            f"{len(held)} running executions ({delivered} side effects done)"
        )
        outcome.check(
            len(held) == full,
            f"{name} (pid {pid}) was SIGKILLed holding {len(held)} running executions, not {full}",
        )
    return kills


def reached(sinks: list[IdempotentSink], key: str) -> bool:
    """Whether the call with this idempotency key has reached one of the sinks (its
    effect happened)."""
    return any(deliveries(sink, key) for sink in sinks)


def deliveries(sink: IdempotentSink, key: str) -> int:
    """How often the sink answered 2xx to this idempotency key (1 + repeats absorbed)."""
    with sink.lock:
        return sink.deliveries.get(key, 0)


def check_kills(rt: Runtime, outcome: Outcome, sinks: list[IdempotentSink], kills: list[Kill]):
    """What each killed worker held came back after its lease and succeeded: its attempt
    by the dead worker ended `lost`, not before the lease ran out and within a reaper
    interval (plus slack) after; a later attempt succeeded; one effect at the sinks."""
    held = {row[0] for kill in kills for row in kill.held}
    tries: dict[int, list] = {}
    ordered = sorted(held)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        for ex, number, worker, result, started, finished in rt.query(
            ATTEMPTS_OF.format(placeholders(chunk)), tuple(chunk)
        ):
            tries.setdefault(ex, []).append((number, worker, result, started, finished))
    final = {}
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        final.update(
            rt.query(
                f"SELECT id, status FROM events_execution WHERE id IN ({placeholders(chunk)})",  # noqa: S608
                tuple(chunk),
            )
        )
    slack = REAPER_SECONDS + 3
    not_lost, early, late, not_back = [], [], [], []
    lags, back_after = [], []
    for kill in kills:
        for ex, owner, expires, _key in kill.held:
            expires = as_utc(expires)
            mine = [t for t in tries.get(ex, []) if t[1] == owner]
            if not mine or mine[-1][2] != "lost":
                not_lost.append((ex, mine[-1][2] if mine else None))
                continue
            number, _, _, _, reaped_at = mine[-1]
            reaped_at = as_utc(reaped_at)
            lag = (reaped_at - expires).total_seconds()
            lags.append(lag)
            if lag < -0.05:
                early.append((ex, round(lag, 2)))
            elif lag > slack:
                late.append((ex, round(lag, 2)))
            later = [t for t in tries[ex] if t[0] > number]
            if final.get(ex) != "succeeded" or not later or later[-1][2] != "succeeded":
                not_back.append((ex, final.get(ex), [t[2] for t in later]))
            else:
                back_after.append(as_utc(later[-1][4]).timestamp() - kill.at)
    outcome.check(
        not not_lost,
        f"{len(not_lost)} executions a killed worker held have no `lost` attempt of it "
        f"(execution, its outcome): {not_lost[:5]}",
    )
    outcome.check(
        not early, f"{len(early)} leases taken back before they expired (s): {early[:5]}"
    )
    outcome.check(
        not late,
        f"{len(late)} expired leases taken back over {slack} s late (s): {late[:5]}",
    )
    outcome.check(
        not not_back,
        f"{len(not_back)} executions a killed worker held did not succeed afterwards "
        f"(execution, status, later attempts): {not_back[:5]}",
    )
    keys = {row[3] for k in kills for row in k.held}
    again = sum(max(deliveries(sink, key) - 1, 0) for key in keys for sink in sinks)
    who = "the sinks" if len(sinks) > 1 else "the sink"
    if lags:
        outcome.note(
            f"{sum(len(k.held) for k in kills)} executions held by killed workers "
            f"({sum(k.delivered for k in kills)} with their effect done at the kill): each "
            f"came back {min(lags):.1f}-{max(lags):.1f} s after its lease expired "
            f"({LEASE_SECONDS} s leases) and succeeded {min(back_after, default=0):.1f}-"
            f"{max(back_after, default=0):.1f} s after the kill; {who} absorbed {again} "
            "repeated deliveries of theirs"
        )


# -- 2. gunicorn kills -------------------------------------------------------------------
def gunicorn_kills(kind: str, sizes: Sizes, pg_url: str, outcome: Outcome) -> Outcome:
    """SIGKILL one gunicorn worker, then the master, mid-flood; then start it again."""
    budget = Budget(120 + sizes.events * 0.05)
    web_workers = 3
    leftovers: list[int] = []
    # Calls take a while (a quarter of action_seconds), so the workers' slots fill as far
    # as the paced flood lets them.
    with (
        idempotent_sink(sizes.action_seconds / 4) as sink,
        runtime(kind, pg_url) as rt,
        evidence(rt, outcome),
    ):
        try:
            add_routes(rt, sink, lanes=2)
            rt.start_gunicorn(workers=web_workers)
            start_workers(rt, sizes)
            inflight = InFlight(rt)
            ids = [f"gk-{i:06d}" for i in range(sizes.events)]
            flood = Flood(
                rt.port,
                ids,
                threads=sizes.client_threads,
                seconds=budget.left() / 2,
                resend=True,
                rate=len(ids) / sizes.paced_seconds,
                lanes=2,
            ).start()

            def acked(share):
                def enough():
                    inflight.sample()
                    return len(flood.acked) >= share * len(ids) or flood.done

                return enough

            budget.wait_until(acked(0.25), 60, "a quarter of the flood acknowledged")
            victim = random.choice(rt.children("gunicorn"))
            os.kill(victim, signal.SIGKILL)
            outcome.note(f"SIGKILLed gunicorn worker {victim} at {len(flood.acked)} acks")
            budget.wait_until(
                lambda: (
                    victim not in rt.children("gunicorn")
                    and len(rt.children("gunicorn")) == web_workers
                ),
                20,
                "the gunicorn master replacing its killed worker",
            )

            budget.wait_until(acked(0.5), 60, "half of the flood acknowledged")
            outcome.check(not flood.done, "the flood ended before the master could be killed")
            master = rt.kill("gunicorn", signal.SIGKILL)
            killed_at = time.monotonic()
            outcome.note(f"SIGKILLed the gunicorn master {master} at {len(flood.acked)} acks")
            # Its workers notice the parent is gone and exit; until then they hold the
            # port. A supervisor would kill what is left after a while; so do we.
            with contextlib.suppress(Abort):
                budget.wait_until(lambda: not rt.group(master), 30, "orphaned gunicorn workers")
            leftovers = rt.group(master)
            if leftovers:
                outcome.note(f"orphaned gunicorn workers {leftovers} still up after 30 s: killed")
                for pid in leftovers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            else:
                outcome.note(
                    f"its workers exited {time.monotonic() - killed_at:.1f} s after the master"
                )
            rt.start_gunicorn(workers=web_workers)  # waits for /ready to answer 200
            outcome.note(f"gunicorn serving again {time.monotonic() - killed_at:.1f} s after")
            flood.join()
            probe = post(rt.port, "gk-after-restart", 10, lanes=2)
            outcome.check(probe.status == 202, f"after the restart a new event got {probe.status}")

            outcome.requests, outcome.acks = flood.sent() + 1, len(flood.acked) + probe.acked
            counts = flood.counts()
            outcome.note(f"flood replies: {fmt_counts(counts)}")
            bad = {s: n for s, n in counts.items() if isinstance(s, int) and s not in (200, 202)}
            outcome.check(not bad, f"replies other than 202 and 200: {bad}")
            outcome.check(
                len(flood.acked) == len(ids),
                f"{len(ids) - len(flood.acked)} events never acknowledged, even resent",
            )
            in_doubt = [
                r.event_id
                for r in flood.replies
                if r.acked and r.status == 200 and flood.acked[r.event_id] is r
            ]
            outcome.note(
                f"{len(in_doubt)} events were stored though their sender got no answer; the "
                "resend was answered 200 duplicate"
            )
            sent = {*ids, probe.event_id}
            acked_ids = set(flood.acked) | ({probe.event_id} if probe.acked else set())
            events = check_stored(rt, outcome, acked_ids, sent)
            outcome.check(
                len(events) == len(sent), f"{len(events)} events stored for {len(sent)} sent"
            )

            def watch():
                supervise(rt, outcome, sizes)
                inflight.sample()

            wait_terminal(rt, outcome, budget, len(events), budget.left() - 5, watch=watch)
            outcome.note(inflight.summary())
            check_effects(rt, outcome, sink)
            check_workers(rt, outcome)
        finally:
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    return outcome


# -- 3. PostgreSQL restart ---------------------------------------------------------------
class PrivateCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1, for a scenario that restarts it.

    initdb refuses to run as root, so as root every command runs as the `postgres` user.
    Removed on the way out, also after an error."""

    def __init__(self):
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
        found = os.environ.get("CHAOS_PG_BIN") or (
            str(Path(candidates[0]).parent) if candidates else None
        )
        if not found:
            raise Abort("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
        self.bin = Path(found)
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if not shutil.which("runuser"):
                raise Abort("running as root needs runuser to start PostgreSQL as postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.url = f"postgres://postgres@{HOST}:{self.port}/postgres"
        self.tmp: Path | None = None

    def _run(self, *argv: str, timeout: float = 60):
        done = subprocess.run(
            [*self.as_user, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise Abort(f"{Path(argv[0]).name} failed:\n{done.stdout}{done.stderr}")

    def __enter__(self) -> "PrivateCluster":
        self.tmp = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        try:
            if self.as_user:
                shutil.chown(self.tmp, "postgres", "postgres")
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.tmp / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def start(self):
        options = (
            f"-c listen_addresses={HOST} -c port={self.port} "
            f"-c unix_socket_directories={self.tmp} -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.tmp / "data"),
            "-l",
            str(self.tmp / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast"):
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.tmp / "data"), "-m", mode, "-w", "stop")

    def log(self) -> str:
        path = self.tmp / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __exit__(self, *exc_info):
        if self.tmp is None:
            return
        try:
            if (self.tmp / "data" / "postmaster.pid").exists():
                self.stop("immediate")
        except Exception as exc:
            print(f"could not stop the private PostgreSQL cluster: {exc}", file=sys.stderr)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


# Leases that outlast the outage, as in db-restart.
PG_RESTART_ENV = {"EXECUTION_LEASE_SECONDS": "30"}


def pg_restart(kind: str, sizes: Sizes, pg_url: str, outcome: Outcome) -> Outcome:
    """Stop PostgreSQL mid-flood, start it again; 503 meanwhile, then recovery, no loss."""
    outcome.database = "PostgreSQL (private cluster)"
    if kind != "postgres":
        raise ValueError("pg-restart runs on PostgreSQL only")
    budget = Budget(150 + sizes.events * 0.04)
    events = min(sizes.events, 3000)
    with (
        idempotent_sink(sizes.action_seconds / 4) as sink,
        PrivateCluster() as cluster,
        runtime("postgres", cluster.url, **PG_RESTART_ENV) as rt,
        evidence(rt, outcome),
    ):
        add_routes(rt, sink, lanes=2)
        rt.start_gunicorn(workers=3)
        start_workers(rt, sizes)
        budget.wait_until(
            lambda: rt.query("SELECT COUNT(*) FROM events_workerheartbeat")[0][0] >= 2,
            30,
            "worker heartbeats",
        )
        pids = {name: rt.procs[name].pid for name in ("gunicorn", *WORKERS)}
        web_pids = set(rt.children("gunicorn"))
        ids = [f"pg-{i:06d}" for i in range(events)]
        flood = Flood(
            rt.port,
            ids,
            threads=4,
            seconds=budget.left() / 2,
            resend=True,
            pause=0.25,
            rate=len(ids) / sizes.paced_seconds,
            lanes=2,
        ).start()
        budget.wait_until(
            lambda: len(flood.acked) >= events / 3 or flood.done, 60, "a third acknowledged"
        )
        outcome.check(not flood.done, "the flood ended before the database went down")
        rt.reset_connection()
        cluster.stop("immediate")
        down_at = time.monotonic()
        outcome.note(f"PostgreSQL stopped (-m immediate) at {len(flood.acked)} acks")
        time.sleep(sizes.db_down_seconds / 2)
        probes = {path: get(rt.port, path) for path in ("/health", "/ready")}
        time.sleep(sizes.db_down_seconds / 2)
        # A worker that dies now is a violation, but restarting it into a database that is
        # still down proves nothing: that waits until the database is back.
        supervise(rt, outcome, sizes, why=" while the database was down", restart=False)
        up_from = time.monotonic()
        cluster.start()
        up_at = time.monotonic()
        outcome.note(f"PostgreSQL started again after {up_at - down_at:.1f} s")
        budget.wait_until(
            lambda: any(r.acked and r.started > up_at for r in list(flood.replies)) or flood.done,
            30,
            "a 2xx after the database came back",
        )
        time.sleep(2)  # time for a surviving worker to reconnect, or to die trying
        supervise(rt, outcome, sizes, why=" after the database came back")
        flood.join()

        outcome.requests, outcome.acks = flood.sent(), len(flood.acked)
        replies = list(flood.replies)
        outcome.note(f"flood replies: {fmt_counts(flood.counts())}")
        during = [r for r in replies if r.started >= down_at and r.started + r.elapsed <= up_from]
        outcome.check(bool(during), "no request was answered while the database was down")
        wrong = [r for r in during if r.status != 503 or not is_db_error(r.body)]
        outcome.check(
            not wrong,
            f"{len(wrong)} of {len(during)} requests during the outage were not 503 "
            f"database_unavailable: {Counter(r.status for r in wrong)}; first body: "
            f"{wrong[0].body if wrong else None}",
        )
        server_errors = [r for r in replies if r.status == 500 or isinstance(r.status, str)]
        outcome.check(
            not server_errors,
            f"{len(server_errors)} requests got 500 or no answer: "
            f"{Counter(r.status for r in server_errors)}. gunicorn log:\n"
            f"{tail(rt.log('gunicorn'), 40)}",
        )
        slowest = max(r.elapsed for r in replies)
        outcome.check(slowest <= 10, f"a request took {slowest:.1f} s (bound 10 s)")
        outcome.note(
            f"{len(during)} requests during the outage: all 503 in at most "
            f"{max((r.elapsed for r in during), default=0):.2f} s; slowest request "
            f"{slowest:.2f} s"
        )
        first_ok = min(
            (r.started + r.elapsed for r in replies if r.acked and r.started > up_at),
            default=None,
        )
        if first_ok is not None:
            outcome.note(f"first 202 {first_ok - up_at:.1f} s after the database was up")
        outcome.check(
            probes["/health"][0] == 200, f"/health during the outage: {probes['/health']}"
        )
        outcome.check(probes["/ready"][0] == 503, f"/ready during the outage: {probes['/ready']}")
        outcome.check(
            rt.procs["gunicorn"].poll() is None and rt.procs["gunicorn"].pid == pids["gunicorn"],
            "the gunicorn master did not survive the outage",
        )
        if set(rt.children("gunicorn")) != web_pids:
            outcome.note("gunicorn replaced some of its workers during the outage")
        outcome.check(
            len(flood.acked) == len(ids),
            f"{len(ids) - len(flood.acked)} events never acknowledged, even resent",
        )
        check_stored(rt, outcome, set(flood.acked), set(ids))
        wait_terminal(
            rt,
            outcome,
            budget,
            len(ids),
            budget.left() - 5,
            watch=lambda: supervise(rt, outcome, sizes, why=" after the outage"),
        )
        survived = [n for n in WORKERS if rt.procs[n].pid == pids[n]]
        outcome.check(
            len(survived) == len(WORKERS),
            f"workers not restarted by the runtime itself: only {survived} kept running",
        )
        check_effects(rt, outcome, sink)
        check_workers(rt, outcome)
    return outcome


# -- 4. database restart with every slot busy --------------------------------------------
RESUME_BOUND = 15  # s after the database is back: the worker's retry wait (at most 10 s) + 5
WORKER_ATTEMPTS = """
    SELECT worker, COUNT(*), MIN(started_at) FROM events_attempt WHERE started_at > %s
    GROUP BY worker
"""


def db_restart(kind: str, sizes: Sizes, pg_url: str, outcome: Outcome) -> Outcome:
    """Stop the database while every worker has all its slots busy, start it again: the
    same workers settle what they held and go on claiming; nothing runs twice."""
    outcome.database = "PostgreSQL (private cluster)"
    if kind != "postgres":
        raise ValueError(f"db-restart runs on PostgreSQL only: {POSTGRES_ONLY['db-restart']}")
    budget = Budget(120 + sizes.restart_events * 0.03)
    full = sizes.concurrency
    # The leases outlast the outage (as production's 60 s default outlasts a short
    # restart): a worker that is alive throughout keeps what it holds and settles it.
    env = {"EXECUTION_LEASE_SECONDS": str(sizes.restart_lease)}
    if sizes.restart_lease <= sizes.db_down_seconds + 5:
        outcome.note(
            f"the {sizes.restart_lease} s leases may expire during the "
            f"{sizes.db_down_seconds:g} s outage: the reapers may take them back"
        )
    with (
        idempotent_sink(sizes.action_seconds) as sink,
        PrivateCluster() as cluster,
        runtime("postgres", cluster.url, **env) as rt,
        evidence(rt, outcome),
    ):
        add_routes(rt, sink, lanes=2)
        rt.start_gunicorn(workers=2)
        # The events wait first, so both workers fill all their slots however fast the
        # machine ingests.
        ids = [f"dr-{i:06d}" for i in range(sizes.restart_events)]
        flood = Flood(
            rt.port, ids, threads=sizes.client_threads, seconds=60, resend=True, lanes=2
        ).start()
        outcome.check(flood.join(), "the flood's clients did not finish")
        outcome.requests, outcome.acks = flood.sent(), len(flood.acked)
        outcome.check(
            outcome.acks == len(ids), f"only {outcome.acks} of {len(ids)} events acknowledged"
        )
        start_workers(rt, sizes)
        budget.wait_until(
            lambda: len(rt.query(HEARTBEATS)) >= len(WORKERS), 30, "worker heartbeats"
        )
        pids = {name: rt.procs[name].pid for name in WORKERS}
        owners = dict(rt.query(HEARTBEATS))
        inflight = InFlight(rt)
        budget.wait_until(
            lambda: all(inflight.of(pid) >= full for pid in pids.values()),
            20,
            f"every worker holding {full} running executions",
            interval=0.02,
        )
        held = {name: rt.query(HELD, (owned_by(pid),)) for name, pid in pids.items()}
        outcome.facts["held_at_stop"] = {name: len(rows) for name, rows in held.items()}
        rt.reset_connection()
        cluster.stop("immediate")
        down_at = time.monotonic()
        with sink.lock:
            done = sum(1 for rows in held.values() for *_, key in rows if key in sink.deliveries)
        outcome.note(
            "PostgreSQL stopped (-m immediate) with "
            + ", ".join(f"{name} holding {len(rows)}" for name, rows in held.items())
            + f" running executions ({done} side effects done at the sink)"
        )
        for name, rows in held.items():
            outcome.check(
                len(rows) == full, f"{name} held {len(rows)} running executions, not {full}"
            )
        time.sleep(sizes.db_down_seconds)
        supervise(rt, outcome, sizes, why=" while the database was down", restart=False)
        cluster.start()
        up_at, up_wall = time.monotonic(), datetime.now(UTC)
        outcome.note(f"PostgreSQL started again after {up_at - down_at:.1f} s")

        def resumed():
            supervise(rt, outcome, sizes, why=" after the database came back", restart=False)
            started = {worker for worker, _, _ in rt.query(WORKER_ATTEMPTS, (up_wall,))}
            return all(owners.get(pid) in started for pid in pids.values())

        try:
            budget.wait_until(resumed, RESUME_BOUND + 5, "every worker claiming again")
        except Abort as exc:
            outcome.check(False, str(exc))
        resumed_in = {
            worker: (as_utc(first) - up_wall).total_seconds()
            for worker, _, first in rt.query(WORKER_ATTEMPTS, (up_wall,))
        }
        for name, pid in pids.items():
            took = resumed_in.get(owners.get(pid))
            outcome.check(
                took is not None and took <= RESUME_BOUND,
                f"{name} started no attempt within {RESUME_BOUND} s of the database being "
                f"back (first after {took if took is None else round(took, 1)} s). Its log:\n"
                f"{tail(rt.log(name), 20)}",
            )
        supervise(rt, outcome, sizes, why=" after the database came back")

        def watch():
            supervise(rt, outcome, sizes, why=" after the outage")
            inflight.sample()

        wait_terminal(rt, outcome, budget, len(ids), budget.left() - 5, watch=watch)
        survived = [n for n in WORKERS if rt.procs[n].pid == pids[n]]
        outcome.check(
            len(survived) == len(WORKERS),
            f"workers not kept by the runtime itself: only {survived} kept running",
        )
        check_settled_by_holder(rt, outcome, held, up_wall)
        outcomes = attempt_outcomes(rt)
        outcome.check(
            not outcomes.get("lost") and not outcomes.get("abandoned"),
            f"attempts lost or abandoned though every worker lived: {outcomes}",
        )
        outcome.note(
            "each worker's first attempt after the restart came "
            + ", ".join(
                f"{name} {resumed_in.get(owners.get(pid), float('nan')):.1f} s"
                for name, pid in pids.items()
            )
            + f" after the database was back; attempts by outcome: {outcomes}; "
            + inflight.summary()
        )
        check_effects(rt, outcome, sink)
        check_workers(rt, outcome)
        outcome.note(
            "'database unavailable' warnings logged: "
            + ", ".join(
                f"{name} {full_log(rt, name).count('database unavailable')}" for name in WORKERS
            )
        )
    return outcome


def full_log(rt: Runtime, name: str) -> str:
    path = rt.tmp / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def check_settled_by_holder(rt: Runtime, outcome: Outcome, held: dict, up_wall: datetime):
    """Each execution a worker held when the database stopped has one attempt, by that
    worker, which succeeded: the worker kept its leases and recorded the results itself."""
    rows = [row for per_worker in held.values() for row in per_worker]
    if not rows:
        return
    ids = [row[0] for row in rows]
    tries: dict[int, list] = {}
    for ex, number, worker, result, _, finished in rt.query(
        ATTEMPTS_OF.format(placeholders(ids)), tuple(ids)
    ):
        tries.setdefault(ex, []).append((number, worker, result, finished))
    wrong = [
        (ex, [(t[1] == owner, t[2]) for t in tries.get(ex, [])])
        for ex, owner, _, _ in rows
        if [(t[1], t[2]) for t in tries.get(ex, [])] != [(owner, "succeeded")]
    ]
    outcome.check(
        not wrong,
        f"{len(wrong)} of the {len(rows)} executions in flight at the stop were not settled "
        f"by their own worker in one attempt (execution, [(same worker, outcome)]): "
        f"{wrong[:5]}",
    )
    # An attempt's finished_at is when its call returned (during the outage, mostly); the
    # execution's is when its worker recorded the result.
    after = [
        (as_utc(finished) - up_wall).total_seconds()
        for _, finished in rt.query(
            f"SELECT id, finished_at FROM events_execution WHERE id IN ({placeholders(ids)})",  # noqa: S608
            tuple(ids),
        )
        if finished is not None and as_utc(finished) > up_wall
    ]
    outcome.note(
        f"{len(rows) - len(wrong)} of the {len(rows)} executions in flight at the stop were "
        f"settled by the worker holding them"
        + (f", {max(after):.1f} s after the database was back at the latest" if after else "")
    )


def get(port: int, path: str) -> tuple:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()[:200].decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__, ""
    finally:
        conn.close()


def is_db_error(body) -> bool:
    return (
        isinstance(body, dict)
        and body.get("status") == "error"
        and body.get("error", {}).get("code") == "database_unavailable"
    )


# -- 5. sink outage ----------------------------------------------------------------------
BACKOFF_BASE, BACKOFF_CAP = 1.0, 8.0
CIRCUIT_THRESHOLD, CIRCUIT_COOLDOWN = 5, 5
PROBE_TIMEOUT = 120  # connectors/circuits.py: a probe that never reports back


def sink_outage(kind: str, sizes: Sizes, pg_url: str, outcome: Outcome) -> Outcome:
    """The sink answers 500 for a while: backoff, the circuit opens and closes, all succeed."""
    budget = Budget(sizes.outage_seconds + PROBE_TIMEOUT + 90)
    env = {
        "CIRCUIT_FAILURE_THRESHOLD": str(CIRCUIT_THRESHOLD),
        "CIRCUIT_COOLDOWN_SECONDS": str(CIRCUIT_COOLDOWN),
    }
    # A failing API is seldom quick: each answer takes 50 ms, so a probe is in flight for
    # a while (long enough for other workers to meet the half-open circuit).
    with (
        idempotent_sink(0.05) as sink,
        runtime(kind, pg_url, **env) as rt,
        evidence(rt, outcome),
    ):
        # One route (one circuit): the events come back together when it closes.
        add_routes(
            rt,
            sink,
            backoff_base_seconds=BACKOFF_BASE,
            backoff_cap_seconds=BACKOFF_CAP,
            max_attempts=20,
        )
        record_backoffs(rt)
        rt.start_gunicorn(workers=2)
        start_workers(rt, sizes)
        inflight = InFlight(rt)
        sink.outage(sizes.outage_seconds)
        outage_from = time.time()
        # One event first, alone: nothing else resets or adds to the circuit's count, so it
        # is retried with its backoff until its failures open the circuit. The rest of
        # the events arrive while the circuit is open.
        canary = post(rt.port, "so-canary", 10)
        ids = [f"so-{i:05d}" for i in range(sizes.outage_events - 1)]
        flood = Flood(rt.port, ids, threads=4, seconds=budget.left() / 2)

        timeline: list[tuple[float, str]] = []  # (time.time(), circuit state) on each change
        metrics = {"open": 0, "scrapes": 0, "next": 0.0}

        def circuit_state() -> str:
            rows = rt.query(CIRCUIT, (ROUTE,))
            state = rows[0][0] if rows else "closed"
            if not timeline or timeline[-1][1] != state:
                timeline.append((time.time(), state))
            if sink.in_outage and time.monotonic() >= metrics["next"]:
                metrics["next"] = time.monotonic() + 1
                status, text = scrape(rt.port)
                metrics["scrapes"] += 1
                metrics["open"] += status == 200 and 'connector="http",state="open"' in text
            return state

        while sink.in_outage and budget.left() > 0:
            state = circuit_state()
            if not flood.started and (
                state != "closed" or time.time() - outage_from > sizes.outage_seconds - 5
            ):
                flood.start()
            supervise(rt, outcome, sizes)
            time.sleep(0.1)
        outage_to = time.time()
        if not flood.started:
            flood.start()
        flood.join()
        outcome.requests, outcome.acks = flood.sent() + 1, len(flood.acked) + canary.acked
        outcome.check(canary.status == 202, f"the first event got {canary.status}")
        outcome.check(
            flood.counts() == Counter({202: len(ids)}), f"flood replies: {flood.counts()}"
        )
        try:
            budget.wait_until(
                lambda: circuit_state() == "closed",
                CIRCUIT_COOLDOWN * 3 + 10,
                "the circuit closing after the outage",
            )
        except Abort as exc:
            outcome.check(False, str(exc))
        closed_at = time.time()
        waiting = rt.query(WAITING)
        wait_terminal(
            rt,
            outcome,
            budget,
            len(ids) + 1,
            budget.left() - 5,
            watch=lambda: supervise(rt, outcome, sizes) or inflight.sample(),
        )

        outcome.note(
            "circuit: "
            + " → ".join(f"{state} at {at - outage_from:+.1f} s" for at, state in timeline)
            + f" (the outage ended at +{outage_to - outage_from:.1f} s)"
        )
        states = [state for _, state in timeline]
        outcome.check("open" in states, f"the circuit never opened: {states}")
        outcome.check(
            metrics["open"] > 0,
            f"/metrics never showed the open circuit ({metrics['scrapes']} scrapes)",
        )
        final = rt.query(CIRCUIT, (ROUTE,))
        outcome.check(
            bool(final) and final[0][:2] == ("closed", 0), f"circuit at the end: {final}"
        )
        # Load shed: after the threshold (and what was in flight: the first event alone),
        # one probe per cool-down.
        bound = (
            CIRCUIT_THRESHOLD
            + len(WORKERS)
            + math.ceil(sizes.outage_seconds / CIRCUIT_COOLDOWN)
            + 1
        )
        outcome.check(
            len(sink.failed) <= bound,
            f"the sink answered {len(sink.failed)} 500s; with the circuit at most {bound}",
        )
        # Once the circuit is closed, what waits is due within a cool-down (deferred by the
        # open circuit) or a backoff ceiling (after a failed try).
        last = as_utc(rt.query(LAST_FINISHED, (EVENT_TYPE,))[0][0])
        recovery = last.timestamp() - closed_at
        limit = CIRCUIT_COOLDOWN + BACKOFF_CAP + 15
        outcome.check(
            recovery <= limit,
            f"the last execution succeeded {recovery:.0f} s after the circuit closed; "
            f"expected within {limit} s (cool-down {CIRCUIT_COOLDOWN} s + backoff cap "
            f"{BACKOFF_CAP:g} s + 15 s). Waiting when it closed (reason, count, due in s): "
            + "; ".join(
                f"{reason or '(backoff)'}: {n}, {due(first, closed_at)}..{due(latest, closed_at)}"
                for reason, n, first, latest in waiting
            ),
        )
        outcome.note(
            f"the sink answered {len(sink.failed)} 500s during the {sizes.outage_seconds:g} s "
            f"outage (bound {bound}); the last execution succeeded {recovery:.1f} s after "
            "the circuit closed"
        )
        check_backoff(rt, outcome)
        outcome.note(inflight.summary())
        check_effects(rt, outcome, sink)
        check_workers(rt, outcome)
    return outcome


def due(when, since: float) -> str:
    return "?" if when is None else f"{as_utc(when).timestamp() - since:+.0f}"


def scrape(port: int) -> tuple:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__, ""
    finally:
        conn.close()


# Each backoff the engine draws, as it draws it. A worker that records a retryable failure
# moves the execution from running to retrying with its attempts count unchanged and
# next_attempt_at = now + the delay, `now` being the updated_at it writes (runner.settle).
# A circuit's deferral gives the attempt back (attempts - 1) and the reaper's requeue says
# "lease expired": neither is a backoff. The trigger lives in the scenario's own database.
BACKOFF_TABLE = (
    "CREATE TABLE chaos_backoff (execution_id bigint, number integer, "
    "set_at {ts}, next_attempt_at {ts})"
)
BACKOFF_WHEN = (
    "OLD.status = 'running' AND NEW.status = 'retrying' AND NEW.attempts = OLD.attempts "
    "AND substr(NEW.last_error, 1, 13) <> 'lease expired'"
)
BACKOFF_INSERT = (
    "INSERT INTO chaos_backoff VALUES "
    "(NEW.id, NEW.total_attempts, NEW.updated_at, NEW.next_attempt_at)"
)
BACKOFF_TRIGGERS = {
    "postgres": [
        BACKOFF_TABLE.format(ts="timestamptz"),
        "CREATE FUNCTION chaos_backoff_log() RETURNS trigger AS $$ BEGIN "
        f"{BACKOFF_INSERT}; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER chaos_backoff AFTER UPDATE ON events_execution FOR EACH ROW "
        f"WHEN ({BACKOFF_WHEN}) EXECUTE FUNCTION chaos_backoff_log()",
    ],
    "sqlite": [
        BACKOFF_TABLE.format(ts="text"),
        "CREATE TRIGGER chaos_backoff AFTER UPDATE ON events_execution FOR EACH ROW "
        f"WHEN {BACKOFF_WHEN} BEGIN {BACKOFF_INSERT}; END",
    ],
}
BACKOFFS = "SELECT execution_id, number, set_at, next_attempt_at FROM chaos_backoff"


def record_backoffs(rt: Runtime):
    """Install the chaos_backoff trigger, on a connection of its own (query() is for
    statements that return rows)."""
    if rt.kind == "postgres":
        import psycopg

        with psycopg.connect(rt.env["DATABASE_URL"], autocommit=True, connect_timeout=5) as c:
            for sql in BACKOFF_TRIGGERS["postgres"]:
                c.execute(sql)
    else:
        conn = sqlite3.connect(rt.db_path, timeout=20, isolation_level=None)
        try:
            for sql in BACKOFF_TRIGGERS["sqlite"]:
                conn.execute(sql)
        finally:
            conn.close()


def check_backoff(rt: Runtime, outcome: Outcome):
    """Each retry waited a delay drawn from [0, min(cap, base * 2^(n-1))] after failed try n
    (full jitter, docs/engine.md) and never started before it.

    The delay drawn is next_attempt_at - updated_at of the row the worker wrote when try n
    failed (recorded by the chaos_backoff trigger). A later circuit deferral only
    postpones a retry, so the next try must start at or after that next_attempt_at."""
    drawn: dict[tuple[int, int], tuple] = {}
    for execution, number, set_at, next_at in rt.query(BACKOFFS):
        drawn[(execution, number)] = (as_utc(set_at), as_utc(next_at))
    attempts: dict[int, list] = {}
    for execution, number, started, finished, result in rt.query(ATTEMPTS):
        attempts.setdefault(execution, []).append(
            (number, as_utc(started), as_utc(finished), result)
        )
    delays: dict[int, list[float]] = {}
    early, too_long, unseen = [], [], 0
    for execution, tries in attempts.items():
        for (number, _, _, result), (_, next_start, _, _) in itertools.pairwise(tries):
            if result != "retryable_error":
                continue
            if (execution, number) not in drawn:
                unseen += 1
                continue
            set_at, next_at = drawn[(execution, number)]
            delay = (next_at - set_at).total_seconds()
            ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (number - 1))
            delays.setdefault(number, []).append(delay)
            if not -0.05 <= delay <= ceiling + 0.5:
                too_long.append((execution, number, round(delay, 2), ceiling))
            if (next_start - next_at).total_seconds() < -0.05:
                early.append((execution, number + 1, (next_start - next_at).total_seconds()))
    outcome.check(
        len(delays) >= 3,
        f"retries seen after tries {sorted(delays)} only: the backoff's growth was not exercised",
    )
    outcome.check(unseen == 0, f"{unseen} retries without the record of their backoff")
    outcome.check(not early, f"{len(early)} retries started before their backoff: {early[:5]}")
    outcome.check(
        not too_long, f"{len(too_long)} backoff delays outside [0, ceiling]: {too_long[:5]}"
    )
    outcome.note(
        "backoff delay after failed try n (mean / max s, ceiling): "
        + "; ".join(
            f"n={n}: {statistics.fmean(v):.2f} / {max(v):.2f} "
            f"({min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (n - 1)):g}), {len(v)} retries"
            for n, v in sorted(delays.items())
        )
    )


# -- 6. duplicate storm ------------------------------------------------------------------
def storm_order(ids: list[str], copies: int, window: int) -> list[str]:
    """Every id `copies` times, shuffled within blocks of about `window` requests, so the
    copies of one id are in flight together and race each other."""
    per_block = max(1, window // copies)
    order = []
    for start in range(0, len(ids), per_block):
        block = [eid for eid in ids[start : start + per_block] for _ in range(copies)]
        random.shuffle(block)
        order += block
    return order


def duplicate_storm(kind: str, sizes: Sizes, pg_url: str, outcome: Outcome) -> Outcome:
    """Many copies of each event at once: stored once, run once, one side effect."""
    budget = Budget(120 + sizes.storm_requests * 0.01)
    web_workers = min(max((os.cpu_count() or 1) * 2 + 1, 3), 5)  # the config's default
    with (
        idempotent_sink(sizes.action_seconds / 4) as sink,
        runtime(kind, pg_url) as rt,
        evidence(rt, outcome),
    ):
        add_routes(rt, sink, lanes=2)
        rt.start_gunicorn(workers=web_workers)
        start_workers(rt, sizes)
        inflight = InFlight(rt)
        ids = [f"ds-{i:05d}" for i in range(sizes.storm_ids)]
        copies = sizes.storm_requests // sizes.storm_ids
        order = storm_order(ids, copies, sizes.storm_concurrency)
        flood = Flood(
            rt.port,
            order,
            threads=sizes.storm_concurrency,
            seconds=budget.left() / 2,
            timeout=30,
            lanes=2,
        )
        started = time.monotonic()
        flood.start()
        outcome.check(flood.join(), "the storm's clients did not finish")
        took = time.monotonic() - started
        counts = flood.counts()
        outcome.requests, outcome.acks = flood.sent(), sum(1 for r in flood.replies if r.acked)
        outcome.note(
            f"{web_workers} gunicorn workers, {sizes.storm_concurrency} clients: "
            f"{fmt_counts(counts)} in {took:.1f} s ({len(order) / took:.0f} requests/s)"
        )
        outcome.check(outcome.requests == len(order), f"{outcome.requests} of {len(order)} sent")
        others = {s: n for s, n in counts.items() if s not in (200, 202)}
        outcome.check(not others, f"replies other than 202 and 200: {others}")
        accepted = Counter(r.event_id for r in flood.replies if r.status == 202)
        outcome.check(
            counts[202] == len(ids) and set(accepted.values()) == {1},
            f"{counts[202]} 202s for {len(ids)} ids; ids accepted twice: "
            f"{[e for e, n in accepted.items() if n > 1][:10]}",
        )
        wrong_body = [
            r
            for r in flood.replies
            if (r.status, (r.body or {}).get("status"))
            not in ((202, "accepted"), (200, "duplicate"))
        ]
        outcome.check(not wrong_body, f"{len(wrong_body)} bodies not accepted/duplicate")
        uuids: dict[str, set] = {}
        for r in flood.replies:
            if r.body and "id" in r.body:
                uuids.setdefault(r.event_id, set()).add(r.body["id"])
        split = [e for e, u in uuids.items() if len(u) > 1]
        outcome.check(not split, f"{len(split)} event ids answered with two different ids")
        events = check_stored(rt, outcome, set(flood.acked), set(ids))
        outcome.check(len(events) == len(ids), f"{len(events)} events for {len(ids)} ids")

        def watch():
            supervise(rt, outcome, sizes)
            inflight.sample()

        wait_terminal(rt, outcome, budget, len(ids), budget.left() - 5, watch=watch)
        outcome.note(inflight.summary())
        check_effects(rt, outcome, sink)
        check_workers(rt, outcome)
        outcome.check(
            outcome.executions == len(ids) and outcome.side_effects == len(ids),
            f"{outcome.executions} executions and {outcome.side_effects} side effects "
            f"for {len(ids)} events",
        )
    return outcome


# -- 7. chain kills ----------------------------------------------------------------------
# Step 1 (the chaos routes) creates an invoice at the first sink, which answers its number;
# the follow-up event carries it from the internal source to step 2, which posts it on.
FOLLOW_UP_TYPE = "invoice.created"
STEP_TWO = "chaos-chain-step-2"
EMIT = {
    "emit_type": FOLLOW_UP_TYPE,
    "emit_payload": {
        "invoice": "{{ result.body.invoice.number }}",
        "order": "{{ event.event_id }}",
    },
}
STEP_ONE_ROWS = """
    SELECT x.id, x.idempotency_key, x.status, e.event_id
    FROM events_execution x JOIN events_event e ON e.id = x.event_id WHERE e.type LIKE %s
"""
PER_PARENT = """
    SELECT caused_by_id, COUNT(*) FROM events_event WHERE caused_by_id IS NOT NULL
    GROUP BY caused_by_id
"""
FOLLOW_UPS = """
    SELECT f.caused_by_id, f.event_id, f.type, f.depth, f.status, s.name, f.payload
    FROM events_event f JOIN events_source s ON s.id = f.source_id
    WHERE f.caused_by_id IS NOT NULL
"""
STEP_TWO_KEYS = """
    SELECT x.idempotency_key FROM events_execution x JOIN events_event e ON e.id = x.event_id
    WHERE e.caused_by_id IS NOT NULL
"""
STEP_TWO_ROWS = """
    SELECT f.caused_by_id, x.idempotency_key, x.status, r.name
    FROM events_execution x JOIN events_event f ON f.id = x.event_id
    JOIN connectors_route r ON r.id = x.route_id
    WHERE f.caused_by_id IS NOT NULL
"""


def invoice_answer(number: int, key: str, body: bytes) -> dict:
    """The first sink's answer: an invoice numbered by the effect and the event it is for,
    so a follow-up carrying another call's answer (or none) is seen."""
    return {"invoice": {"number": f"INV-{json.loads(body)['event_id']}-{number}"}}


def add_chain(rt: Runtime, invoices: IdempotentSink, step_two: IdempotentSink):
    """Step 1 on both chaos lanes (to the invoicing sink, emitting invoice.created) and
    step 2 on the internal source's invoice.created (to the second sink)."""
    add_routes(rt, invoices, lanes=2, **EMIT)
    params = {
        "url": step_two.url,
        "body": {"invoice": "{{ event.invoice }}", "order": "{{ event.order }}"},
    }
    code = route_code(STEP_TWO, FOLLOW_UP_TYPE, params, sources=["internal"])
    rt.manage("shell", "-c", "from connectors.models import Route\n" + code)


def chain_kills(kind: str, sizes: Sizes, pg_url: str, outcome: Outcome) -> Outcome:
    """worker-kills over a two-step chain: each step-1 success emits its follow-up once,
    with the invoice number its sink answered; each step 2 has one effect."""
    budget = Budget(90 + sizes.kill_events * 0.1)
    with (
        idempotent_sink(sizes.action_seconds, answer=invoice_answer) as invoices,
        idempotent_sink(sizes.action_seconds) as step_two,
        runtime(kind, pg_url) as rt,
        evidence(rt, outcome),
    ):
        add_chain(rt, invoices, step_two)
        inflight, ids, flood = flood_then_workers(rt, sizes, budget, "ck")
        step_two_keys = set()

        def with_step_two(number: int, rows: list) -> bool:
            """The later half of the kills land with step-2 executions in flight too."""
            if number < sizes.worker_kills // 2:
                return True
            step_two_keys.update(key for (key,) in rt.query(STEP_TWO_KEYS))
            return any(key in step_two_keys for *_, key in rows)

        kills = kill_workers(
            rt, outcome, sizes, budget, inflight, flood, [invoices, step_two], with_step_two
        )
        # A follow-up and its execution are stored with the success that emits it: once
        # every step 1 is terminal, every step 2 there will be exists.
        watch = after_kills(rt, outcome, sizes, budget, inflight, flood, ids, kills)
        follow_ups = sum(statuses(rt, FOLLOW_UP_TYPE).values())
        wait_terminal(
            rt, outcome, budget, follow_ups, budget.left() - 5, watch, types_like=FOLLOW_UP_TYPE
        )
        check_kills(rt, outcome, [invoices, step_two], kills)
        step_two_keys.update(key for (key,) in rt.query(STEP_TWO_KEYS))
        outcome.note(
            "step-2 executions among those held at each kill: "
            + ", ".join(str(sum(row[3] in step_two_keys for row in k.held)) for k in kills)
        )
        outcome.note(
            f"{len(kills)} SIGKILLs, each of a worker holding (running, its lease owner's) "
            f"{', '.join(str(len(k.held)) for k in kills)} executions; attempts by outcome: "
            f"{attempt_outcomes(rt)}; {inflight.summary()}"
        )
        check_chain(rt, outcome, invoices, step_two)
        check_effects(rt, outcome, invoices, name="the invoicing sink (step 1)")
        first = (outcome.executions, outcome.side_effects, outcome.absorbed)
        check_effects(rt, outcome, step_two, FOLLOW_UP_TYPE, name="the step-2 sink")
        outcome.executions += first[0]
        outcome.side_effects += first[1]
        outcome.absorbed += first[2]
        check_workers(rt, outcome)
    return outcome


def check_chain(rt: Runtime, outcome: Outcome, invoices: IdempotentSink, step_two: IdempotentSink):
    """Each step-1 execution emitted exactly one follow-up: from the internal source, its
    event id the parent's idempotency key, depth 1, carrying the invoice number the sink
    answered for that parent and the parent's event id; each follow-up has exactly one
    step-2 execution, which posted that number to the second sink."""
    parents = {
        ex: (key, status, eid) for ex, key, status, eid in rt.query(STEP_ONE_ROWS, (TYPES_LIKE,))
    }
    per_parent = dict(rt.query(PER_PARENT))
    twice = {ex: n for ex, n in per_parent.items() if n != 1}
    outcome.check(
        not twice,
        f"{len(twice)} executions emitted more than one follow-up (execution: follow-ups): "
        f"{dict(list(twice.items())[:5])}",
    )
    succeeded = {ex for ex, (_, status, _) in parents.items() if status == "succeeded"}
    missing = sorted(succeeded - per_parent.keys())
    outcome.check(
        not missing,
        f"{len(missing)} succeeded step-1 executions emitted no follow-up (execution, key, "
        f"event id): {[(ex, parents[ex][0], parents[ex][2]) for ex in missing[:5]]}",
    )
    strangers = sorted(per_parent.keys() - parents.keys())
    outcome.check(
        not strangers,
        f"{len(strangers)} follow-ups caused by executions that are not step 1: {strangers[:5]}",
    )
    wrong, carried = [], {}
    for parent, event_id, type_, depth, status, source, payload in rt.query(FOLLOW_UPS):
        payload = json.loads(payload) if isinstance(payload, str) else payload
        key, _, order = parents.get(parent, (None, None, None))
        with invoices.lock:
            effect = invoices.effects.get(key)
        answered = effect["response"]["invoice"]["number"] if effect else None
        seen = (event_id, type_, depth, status != "blocked", source, payload)
        expected = (
            key,
            FOLLOW_UP_TYPE,
            1,
            True,
            "internal",
            {"invoice": answered, "order": order},
        )
        if seen != expected or answered is None:
            wrong.append((parent, seen, expected))
        carried[parent] = payload
    outcome.check(
        not wrong,
        f"{len(wrong)} follow-ups not as emitted (parent execution; event id, type, depth, "
        f"not blocked, source, payload; expected): {wrong[:3]}",
    )
    steps = rt.query(STEP_TWO_ROWS)
    per_follow_up = Counter(parent for parent, *_ in steps)
    not_one = {p: per_follow_up[p] for p in carried if per_follow_up[p] != 1}
    outcome.check(
        not not_one,
        f"{len(not_one)} follow-ups without exactly one step-2 execution (parent: "
        f"executions): {dict(list(not_one.items())[:5])}",
    )
    unposted = []
    for parent, key, status, route in steps:
        with step_two.lock:
            effect = step_two.effects.get(key)
        try:
            body = json.loads(effect["body"]) if effect else None
        except ValueError:
            body = effect["body"]  # not JSON: reported below as not the follow-up's
        if route != STEP_TWO or status != "succeeded" or body != carried.get(parent):
            unposted.append((parent, key, route, status, body, carried.get(parent)))
    outcome.check(
        not unposted,
        f"{len(unposted)} step-2 executions did not post their follow-up's invoice (parent, "
        f"key, route, status, body at the sink, follow-up payload): {unposted[:3]}",
    )
    outcome.note(
        f"{len(parents)} step-1 executions, {len(per_parent)} with a follow-up, "
        f"{sum(per_parent.values())} follow-ups, {len(steps)} step-2 executions"
    )


SCENARIOS = {
    "worker-kills": worker_kills,
    "gunicorn-kills": gunicorn_kills,
    "pg-restart": pg_restart,
    "db-restart": db_restart,
    "sink-outage": sink_outage,
    "duplicate-storm": duplicate_storm,
    "chain-kills": chain_kills,
}


def run(name: str, kind: str, sizes: Sizes, pg_url: str) -> Outcome:
    """One scenario on one database; an exception is a failed scenario, not a crash."""
    progress(f"{name} on {kind}: starting")
    started = time.monotonic()
    outcome = Outcome(name, DATABASES[kind])
    try:
        SCENARIOS[name](kind, sizes, pg_url, outcome)
    except Abort as exc:
        outcome.check(False, f"aborted: {exc}")
    except Exception:
        outcome.check(False, f"the scenario failed:\n{traceback.format_exc()}")
    outcome.duration = time.monotonic() - started
    progress(
        f"{name} on {kind}: {'PASS' if outcome.passed else 'FAIL'} in {outcome.duration:.0f} s"
    )
    return outcome


# -- report --------------------------------------------------------------------------
def fmt(value) -> str:
    return "n/a" if value is None else f"{value:,}"


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| scenario | database | requests | acks (2xx) | executions | side effects "
        "| repeated deliveries absorbed | duration | result |",
        "|---|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.scenario} | {o.database} | {fmt(o.requests)} | {fmt(o.acks)} "
            f"| {fmt(o.executions)} | {fmt(o.side_effects)} | {fmt(o.absorbed)} "
            f"| {o.duration:.0f} s | {'PASS' if o.passed else '**FAIL**'} |"
        )
    return "\n".join(lines)


def git_commit() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=[*ALL, "all"], default="all")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="the short sizes (as in CI)")
    parser.add_argument(
        "--pg-url",
        default=PG_ADMIN_URL,
        help="PostgreSQL server on 127.0.0.1 where each scenario creates (and drops) its own "
        "database (default: %(default)s; CHAOS_PG_URL or BENCH_PG_URL)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help=f"runworker --concurrency of every worker (default: {FULL.concurrency})",
    )
    parser.add_argument(
        "--restart-lease",
        type=int,
        default=None,
        help=f"EXECUTION_LEASE_SECONDS in db-restart (default: {FULL.restart_lease}; one "
        "shorter than the outage lets the reapers take the leases back meanwhile)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.concurrency is not None:
        if not 1 <= args.concurrency <= 1000:
            parser.error("--concurrency must be between 1 and 1000")
        sizes = dataclasses.replace(sizes, concurrency=args.concurrency)
    if args.restart_lease is not None:
        if args.restart_lease < 3:
            parser.error("--restart-lease must be at least 3 (EXECUTION_LEASE_SECONDS)")
        sizes = dataclasses.replace(sizes, restart_lease=args.restart_lease)
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    names = ALL if args.scenario == "all" else (args.scenario,)
    started = time.monotonic()
    outcomes, skipped = [], []
    for name in names:
        for kind in kinds:
            if name in POSTGRES_ONLY and kind != "postgres":
                skipped.append(f"{name} on {DATABASES[kind]}: skipped, {POSTGRES_ONLY[name]}")
                progress(skipped[-1])
                continue
            outcomes.append(run(name, kind, sizes, args.pg_url))
    if not outcomes:
        parser.error(f"{args.scenario} runs on PostgreSQL only: use --db postgres or both")

    print(table(outcomes))
    print()
    for line in skipped:
        print(f"- {line}")
    for o in outcomes:
        print(f"- **{o.scenario} / {o.database}**: {'PASS' if o.passed else 'FAIL'}")
        for v in o.violations:
            print(f"  - VIOLATION: {v}")
        for n in o.notes:
            print(f"  - {n}")
    failed = [o for o in outcomes if not o.passed]
    print(
        f"\n{'quick' if args.quick else 'full'} sizes; workers at --concurrency "
        f"{sizes.concurrency}; {os.cpu_count()} CPUs; "
        f"took {time.monotonic() - started:.0f} s; commit {git_commit()}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    if failed:
        print(f"\n{len(failed)} of {len(outcomes)} scenario runs FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
