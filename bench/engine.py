"""Execution engine benchmark: drain rate, fairness, latency, ingest under load, memory.

Run from the project root:
    .venv/bin/python bench/engine.py [--quick] [--only sqlite|postgres] [--strict]

On SQLite and on PostgreSQL (each a fresh database, removed afterwards), with gunicorn
running its default number of sync workers (2 x cores + 1), and every execution going
through the `http` connector (POST, a JSON body, an Idempotency-Key) to a sink on
127.0.0.1 (bench/sinks.py: it records one side effect per key and answers after a set
latency). One `manage.py runworker` at a time, each watched while it runs:

1. Drain: N events are POSTed with no worker running, then one worker starts;
   executions/s = N / (last execution finished_at - first attempt started_at), read
   from the database. Runs: sink 0 ms and 100 ms at --concurrency 32 with the route's
   max_in_flight raised to 100, 100 ms with the default max_in_flight (16), and 1 s at
   --concurrency 100 with max_in_flight 100. Also the worker's CPU time per execution.
2. Side effects: every sink must hold exactly one effect per execution sent to it (none
   missing, no key delivered twice, none of an execution that does not exist).
3. Accept-to-start: one idle worker (concurrency 32), events at 50/s to the 0 ms sink;
   per event, its first attempt's started_at - the event's received_at.
4. Ingest under load: POST /webhook at a fixed 200 requests/s (open loop: a new connection
   per request, latency counted from each request's scheduled time) of demo events
   (`order.created` -> `log` connector): with no worker (for reference), with that idle
   worker (it runs only the arriving events), and with a new worker (concurrency 32)
   draining a backlog to the 100 ms sink sized to outlast the run; p50 and p99 of each.
5. Fairness: one worker (concurrency 32, HTTP_READ_TIMEOUT=5), two routes with the default
   max_in_flight: one to a sink that answers after 30 s (a hang: every call times out),
   one to a healthy 50 ms sink; N events each, interleaved, at 100/s each. Reported: the
   healthy route's accept-to-finish (received_at -> finished_at) p50 and p99.
6. Ingest rate of one gunicorn sync worker (gunicorn restarted with --workers 1): closed
   loop, 4 client threads POSTing new events, no worker running; the 0 ms drain should
   keep up with it.
7. Each worker's resident memory (VmRSS at its end, VmHWM as its peak, from /proc) and its
   database connections, the most seen at once: on PostgreSQL the rows of
   pg_stat_activity whose client port is one of the worker's sockets to the server, on
   SQLite its open handles of the database file.

The HTTP client (preloading and the open loop) runs in a process of its own, so the
sinks' threads in this process do not delay its clock. Prints a markdown table per
measurement, the goals (met or missed, with the figures) and the git commit. All traffic
goes to 127.0.0.1; every loop is bounded in time and count; processes and databases are
removed on the way out, also after an error or Ctrl-C.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

from harness import API_KEY, HOST, PY, ROOT, Runtime, as_utc, percentile, post_event
from sinks import IdempotentSink

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
ENV = {
    "GUNICORN_MAX_REQUESTS": "0",  # no gunicorn worker recycling mid-measurement
    "OUTBOUND_HOSTS": HOST,
    "OUTBOUND_ALLOW_PRIVATE": HOST,
}
DEMO_TYPE = "order.created"  # the demo route: `log` connector, no sink
DEFAULT_MAX_IN_FLIGHT = 16  # connectors.models.DEFAULT_MAX_IN_FLIGHT
UNFINISHED = ("queued", "retrying", "running")

# Goals (the figures; the old sequential engine's in parentheses in the report).
GOAL_SLOW_RATE = 250  # executions/s at 100 ms (old engine: 8.1)
GOAL_FAST_RATE = 300  # executions/s at 0 ms (old engine: 95), and >= the ingest rate
GOAL_SECOND_SECONDS_PER_500 = 10  # 500 executions at 1 s latency, concurrency 100
GOAL_FAIR_P99_MS = 1000
GOAL_START_P50_MS = {"postgres": 20, "sqlite": 60}  # old engine: about 60 on both
GOAL_BUSY_RATIO = 2.0  # busy ingest p99 <= 2 x idle ingest p99
GOAL_RSS_MB = 120  # a worker at concurrency 32
GOAL_PG_CONNECTIONS = 4

SINK_LATENCY = {"fast": 0.0, "slow": 0.1, "second": 1.0, "healthy": 0.05, "hang": 30.0}


@dataclasses.dataclass(frozen=True)
class Route:
    tag: str  # its events' ids start with this, then "-"
    sink: str
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    @property
    def name(self) -> str:
        return f"bench-{self.tag}"

    @property
    def event_type(self) -> str:
        return f"bench.{self.tag}"


ROUTES = {
    r.tag: r
    for r in (
        Route("fast", "fast", 100),
        Route("slow", "slow", 100),
        Route("slow16", "slow"),
        Route("second", "second", 100),
        Route("healthy", "healthy"),
        Route("hang", "hang"),
    )
}


@dataclasses.dataclass(frozen=True)
class Config:
    drain_events: int = 2000  # each drain run at 0 ms and 100 ms
    second_events: int = 500  # the drain run at 1 s
    latency_rate: float = 50
    latency_seconds: float = 10
    ingest_rate: float = 200
    ingest_seconds: float = 10
    fair_events: int = 500  # per route
    fair_rate: float = 100  # per route
    flood_seconds: float = 5
    client_threads: int = 4
    timeout: float = 120  # the longest wait for one run's executions


FULL = Config()
QUICK = Config(
    drain_events=300,
    second_events=200,
    latency_seconds=3,
    ingest_seconds=2,
    fair_events=150,
    flood_seconds=2,
    timeout=60,
)


@dataclasses.dataclass(frozen=True)
class DrainRun:
    tag: str  # a key of ROUTES
    events: int
    concurrency: int


def drain_runs(cfg: Config) -> tuple[DrainRun, ...]:
    return (
        DrainRun("fast", cfg.drain_events, 32),
        DrainRun("slow", cfg.drain_events, 32),
        DrainRun("slow16", cfg.drain_events, 32),
        DrainRun("second", cfg.second_events, 100),
    )


@dataclasses.dataclass
class Result:
    kind: str
    drains: dict = dataclasses.field(default_factory=dict)  # route tag -> figures
    latency: dict = dataclasses.field(default_factory=dict)
    ingest: dict = dataclasses.field(default_factory=dict)  # a key of INGEST_RUNS -> figures
    fairness: dict = dataclasses.field(default_factory=dict)
    ingest_rate: dict = dataclasses.field(default_factory=dict)
    workers: list = dataclasses.field(default_factory=list)  # Watch, one per worker run
    sinks: dict = dataclasses.field(default_factory=dict)  # run -> sink_check() figures
    extra_effects: dict = dataclasses.field(default_factory=dict)  # sink -> effects unknown
    notes: list = dataclasses.field(default_factory=list)

    @property
    def database(self) -> str:
        return {"sqlite": "SQLite", "postgres": "PostgreSQL"}[self.kind]


_T0 = time.monotonic()


def progress(message: str):
    print(f"[{time.monotonic() - _T0:5.0f} s] {message}", file=sys.stderr, flush=True)


def ms(delta) -> float:
    return delta.total_seconds() * 1000


# -- SQL (placeholders are %s for both databases; the harness translates) -------------
STATUS_COUNTS = """
    SELECT x.status, COUNT(*)
    FROM events_execution x JOIN events_event e ON e.id = x.event_id
    WHERE e.event_id LIKE %s GROUP BY x.status
"""
BATCH = """
    SELECT x.idempotency_key, x.status, e.received_at, x.finished_at,
        (SELECT MIN(a.started_at) FROM events_attempt a WHERE a.execution_id = x.id),
        (SELECT COUNT(*) FROM events_attempt a WHERE a.execution_id = x.id)
    FROM events_execution x JOIN events_event e ON e.id = x.event_id
    WHERE e.event_id LIKE %s
"""
RUNNING_BY_ROUTE = """
    SELECT r.name, COUNT(*)
    FROM events_execution x JOIN connectors_route r ON r.id = x.route_id
    WHERE x.status = 'running' GROUP BY r.name
"""
ATTEMPT_OUTCOMES = """
    SELECT a.outcome, COUNT(*)
    FROM events_attempt a
    JOIN events_execution x ON x.id = a.execution_id
    JOIN events_event e ON e.id = x.event_id
    WHERE e.event_id LIKE %s GROUP BY a.outcome
"""
SINK_KEYS = """
    SELECT x.idempotency_key
    FROM events_execution x JOIN connectors_route r ON r.id = x.route_id
    WHERE r.name IN ({names}) AND EXISTS (SELECT 1 FROM events_attempt a
        WHERE a.execution_id = x.id)
"""
PG_CONNECTIONS = """
    SELECT COUNT(*) FROM pg_stat_activity
    WHERE datname = current_database() AND client_port = ANY(%s)
"""


def status_counts(rt: Runtime, tag: str) -> dict[str, int]:
    return dict(rt.query(STATUS_COUNTS, (f"{tag}-%",)))


def batch(rt: Runtime, tag: str) -> list[dict]:
    """One row per execution of the events whose ids start with `tag`-."""
    keys = ("key", "status", "received", "finished", "started", "attempts")
    rows = []
    for values in rt.query(BATCH, (f"{tag}-%",)):
        row = dict(zip(keys, values, strict=True))
        for k in ("received", "finished", "started"):
            row[k] = as_utc(row[k])
        rows.append(row)
    return rows


# -- processes: memory, CPU time, database connections, gunicorn ---------------------
def proc_status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process in MB ({} once it has ended)."""
    found = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return found


def fd_targets(pid: int) -> list[str]:
    targets = []
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                targets.append(os.readlink(fd))
    return targets


def local_ports_to(pid: int, remote_port: int) -> list[int]:
    """Local ports of the process's TCP sockets connected to `remote_port` (Linux)."""
    inodes = {t[8:-1] for t in fd_targets(pid) if t.startswith("socket:[")}
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[9] in inodes and remote == remote_port:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def db_connections(rt: Runtime, pid: int) -> int:
    """The process's connections to the runtime's database, now."""
    if rt.kind == "sqlite":
        path = os.path.realpath(rt.db_path)
        return sum(1 for t in fd_targets(pid) if t == path)
    ports = local_ports_to(pid, urlparse(rt.env["DATABASE_URL"]).port or 5432)
    return rt.query(PG_CONNECTIONS, (ports,))[0][0] if ports else 0


def web_workers() -> int:
    """gunicorn's sync workers for every measurement but the ingest rate of one: what
    automation_runtime/gunicorn.conf.py starts by default (2 x cores + 1)."""
    return len(os.sched_getaffinity(0)) * 2 + 1


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def start_gunicorn(rt: Runtime, workers: int, timeout: float = 60):
    """gunicorn with `workers` sync workers, once every one has booted: the first to load
    the project answers the readiness probe while the others may still be importing it,
    which would take CPU from the first measurement. Booted: all forked, and together
    they used under 5 % of a core over half a second."""
    rt.start_gunicorn(workers=workers)
    deadline = time.monotonic() + timeout
    before = cpu_seconds(rt.children("gunicorn"))
    while time.monotonic() < deadline:
        time.sleep(0.5)
        pids = rt.children("gunicorn")
        now = cpu_seconds(pids)
        if len(pids) == workers and now - before < 0.025:
            return
        before = now
    raise TimeoutError(f"gunicorn's {workers} workers still busy booting after {timeout} s")


class Watch:
    """One worker process: its memory, database connections and the executions running
    per route, sampled while it runs (sample() is called by every wait loop)."""

    def __init__(self, rt: Runtime, name: str, run: str, concurrency: int):
        self.rt, self.name, self.run, self.concurrency = rt, name, run, concurrency
        self.proc = rt.procs[name]
        self.rss = self.peak = math.nan
        self.connections = 0
        self.running: Counter = Counter()  # route name -> most running at once seen

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample(self):
        if not self.alive():
            return
        status = proc_status_mb(self.proc.pid)
        self.rss = status.get("VmRSS", self.rss)
        self.peak = status.get("VmHWM", self.peak)
        self.connections = max(self.connections, db_connections(self.rt, self.proc.pid))
        for route, n in self.rt.query(RUNNING_BY_ROUTE):
            self.running[route] = max(self.running[route], n)

    def cpu(self) -> float:
        return cpu_seconds([self.proc.pid])

    def check_alive(self):
        if not self.alive():
            raise RuntimeError(
                f"worker {self.name} exited ({self.proc.returncode}):\n{self.rt.log(self.name)}"
            )


@contextlib.contextmanager
def running_worker(rt: Runtime, result: Result, run: str, concurrency: int, **env):
    """One `runworker --concurrency N` for the block (with these extra environment
    variables), watched; stopped at the end of the block."""
    name = f"worker{len(result.workers) + 1}"
    saved = rt.env
    rt.env = {**saved, **env}
    try:
        rt.start_worker(name, concurrency=concurrency)
    finally:
        rt.env = saved
    watch = Watch(rt, name, run, concurrency)
    result.workers.append(watch)
    try:
        yield watch
    finally:
        with contextlib.suppress(Exception):  # a broken database must not hide the error
            watch.sample()
        rt.stop(name)


def wait_until(watch: Watch, done, timeout: float, what: str) -> bool:
    """Sample the worker until done() is true; False after `timeout` (and says so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watch.sample()
        if done():
            return True
        watch.check_alive()
        time.sleep(0.2)
    progress(f"timed out after {timeout:.0f} s waiting for {what}")
    return False


def wait_finished(rt: Runtime, watch: Watch, tag: str, n: int, timeout: float) -> bool:
    """Until all n executions of the `tag` events have ended (not queued, retrying or
    running)."""

    def done():
        counts = status_counts(rt, tag)
        return sum(counts.values()) >= n and not any(counts.get(s) for s in UNFINISHED)

    return wait_until(watch, done, timeout, f"{n} `{tag}` executions")


def wait_ready(rt: Runtime, watch: Watch):
    """Until the worker has written its heartbeat, then a second to settle (on PostgreSQL
    its listener is connected by then)."""
    sql = "SELECT COUNT(*) FROM events_workerheartbeat WHERE pid = %s"
    wait_until(watch, lambda: rt.query(sql, (watch.proc.pid,))[0][0], 30, "a heartbeat")
    time.sleep(1.0)


def stored(rt: Runtime, tag: str) -> int:
    sql = "SELECT COUNT(*) FROM events_event WHERE event_id LIKE %s"
    return rt.query(sql, (f"{tag}-%",))[0][0]


# -- load: the client process (preloading, open loop), a closed-loop flood -------------
def request_bytes(port: int, event_id: str, event_type: str) -> bytes:
    body = json.dumps({"event_id": event_id, "type": event_type}).encode()
    head = (
        f"POST /webhook HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {API_KEY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _post(port: int, event_id: str, event_type: str) -> str:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
        try:
            writer.write(request_bytes(port, event_id, event_type))
            status_line = await asyncio.wait_for(reader.readline(), 10)
            await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        return status_line.split()[1].decode() if status_line else "closed"
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__


async def _open_loop(port: int, items: list, rate: float) -> dict:
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    limit = asyncio.Semaphore(256)
    latencies: list[float] = []
    statuses: Counter = Counter()

    async def one(i: int, event_id: str, event_type: str):
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        async with limit:
            statuses[await _post(port, event_id, event_type)] += 1
        latencies.append(loop.time() - scheduled)

    await asyncio.gather(*(one(i, *item) for i, item in enumerate(items)))
    elapsed = loop.time() - start
    return {
        "sent": len(items),
        "rate": len(items) / elapsed,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "max": max(latencies, default=math.nan) * 1000,
        "statuses": dict(statuses),
    }


async def _post_all(port: int, items: list, parallel: int) -> dict:
    limit = asyncio.Semaphore(parallel)

    async def one(event_id: str, event_type: str) -> str:
        async with limit:
            return await _post(port, event_id, event_type)

    return dict(Counter(await asyncio.gather(*(one(*item) for item in items))))


def post_all(port: int, items: list, parallel: int = 16) -> dict:
    """POST every (event id, type) item, `parallel` at a time; the answers by status.
    Runs in the client process."""
    return asyncio.run(_post_all(port, items, parallel))


def preload(rt: Runtime, tag: str, n: int, event_type: str):
    """POST n new events `tag`-000000... (no worker is meant to be running)."""
    items = [(f"{tag}-{i:06d}", event_type) for i in range(n)]
    statuses = in_client("post_all", [rt.port, items], timeout=60 + n / 20)
    if statuses != {"202": n}:
        raise RuntimeError(f"preloading {n} `{tag}` events: answers {answers(statuses)}")


def open_loop(port: int, items: list, rate: float) -> dict:
    """POST (event id, type) items at a fixed rate, each on a new connection; latency
    from each request's scheduled time. Runs in the client process."""
    return asyncio.run(_open_loop(port, items, rate))


# The client process: `python -c CLIENT` in bench/, a request on stdin, the answer on
# stdout. A new one per call, in this process's group, so Ctrl-C reaches it too.
CLIENT = (
    "import json, sys, engine; json.dump(engine.client_main(json.load(sys.stdin)), sys.stdout)"
)


def client_main(request: dict) -> dict:
    """In the client process: one call of open_loop() or post_all()."""
    return {"open_loop": open_loop, "post_all": post_all}[request["fn"]](*request["args"])


def in_client(fn: str, args: list, *, timeout: float, watch=None) -> dict:
    """fn(*args) in a new client process; the worker (if any) is sampled meanwhile."""
    proc = subprocess.Popen(
        [PY, "-c", CLIENT], cwd=ROOT / "bench", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        proc.stdin.write(json.dumps({"fn": fn, "args": args}).encode())
        proc.stdin.close()
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the client process did not finish {fn} in {timeout:.0f} s")
            if watch:
                watch.sample()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.25)
        if proc.returncode:
            raise RuntimeError(f"the client process failed ({proc.returncode}) in {fn}")
        return json.loads(proc.stdout.read())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def send(rt: Runtime, items: list, rate: float, watch, result: Result) -> dict:
    """open_loop() in the client process; answers other than 202 are noted."""
    timeout = len(items) / rate + 60
    sent = in_client("open_loop", [rt.port, items, rate], timeout=timeout, watch=watch)
    if set(sent["statuses"]) != {"202"}:
        result.notes.append(f"open-loop client: answers {answers(sent['statuses'])}")
    return sent


def flood(rt: Runtime, tag: str, *, threads: int, seconds: float, limit: int = 100_000):
    """Closed loop: `threads` clients POST new demo events back to back for `seconds` (at
    most `limit` events). Returns the answers by status and the elapsed seconds."""
    counter = itertools.count()
    lock = threading.Lock()
    statuses: Counter = Counter()
    deadline = time.monotonic() + seconds

    def post_back_to_back():
        mine: Counter = Counter()
        while time.monotonic() < deadline:
            with lock:
                i = next(counter)
            if i >= limit:
                break
            try:
                mine[post_event(rt.port, f"{tag}-{i:07d}", DEMO_TYPE)] += 1
            except OSError as exc:
                mine[type(exc).__name__] += 1
        with lock:
            statuses.update(mine)

    started = time.monotonic()
    clients = [threading.Thread(target=post_back_to_back, daemon=True) for _ in range(threads)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(timeout=seconds + 30)
    return dict(statuses), time.monotonic() - started


# -- the measurements ---------------------------------------------------------------------
def add_routes(rt: Runtime, sinks: dict):
    """The bench routes, `http` POST to their sinks, checked as the admin would."""
    lines = ["from connectors.models import Route"]
    for r in ROUTES.values():
        params = {"url": sinks[r.sink].url, "body": {"event_id": "{{ event.event_id }}"}}
        lines.append(
            f"route = Route(name={r.name!r}, event_type={r.event_type!r}, connector='http', "
            f"action='post', params={params!r}, max_in_flight={r.max_in_flight})\n"
            "route.full_clean()\nroute.save()"
        )
    rt.manage("shell", "-c", "\n".join(lines))


def start_sink(latency: float) -> IdempotentSink:
    sink = IdempotentSink(latency)
    # IdempotentSink sets request_queue_size after its socket is listening, so the backlog
    # stays socketserver's 5, and a burst of connections (100 at once at concurrency 100)
    # overflows it: resets and 1 s SYN retransmits. Listening again applies the size.
    sink.server.socket.listen(sink.server.request_queue_size)
    return sink


def keys_of(rows: list[dict]) -> list[str]:
    return [r["key"] for r in rows]


def sink_check(sink: IdempotentSink, keys: list[str]) -> dict:
    """Of these executions' keys: how many the sink holds an effect for, how many it
    does not, and how many extra deliveries of a key it absorbed."""
    with sink.lock:
        missing = sum(1 for k in keys if k not in sink.effects)
        repeated = sum(sink.deliveries[k] - 1 for k in keys if k in sink.deliveries)
    return {"effects": len(keys) - missing, "missing": missing, "repeated": repeated}


def claimed_any(rt: Runtime, tag: str, n: int):
    """A test for wait_until: has any of the n `tag` executions left the queue?"""
    return lambda: status_counts(rt, tag).get("queued", 0) < n


def drain(rt: Runtime, cfg: Config, sinks: dict, run: DrainRun, result: Result):
    route = ROUTES[run.tag]
    preload(rt, run.tag, run.events, route.event_type)
    label = f"drain {run.tag}"
    with running_worker(rt, result, label, run.concurrency) as watch:
        wait_until(watch, claimed_any(rt, run.tag, run.events), 30, "the first claim")
        cpu, wall = watch.cpu(), time.monotonic()
        finished = wait_finished(rt, watch, run.tag, run.events, cfg.timeout)
        cpu, wall = watch.cpu() - cpu, time.monotonic() - wall
    rows = batch(rt, run.tag)
    ok = [r for r in rows if r["status"] == "succeeded"]
    if len(ok) < 2:
        raise RuntimeError(f"{label}: {len(ok)} of {run.events} executions succeeded")
    seconds = (max(r["finished"] for r in ok) - min(r["started"] for r in ok)).total_seconds()
    result.drains[run.tag] = {
        "events": run.events,
        "succeeded": len(ok),
        "seconds": seconds,
        "rate": len(ok) / seconds,
        "attempts": sum(r["attempts"] for r in rows),
        "most_running": watch.running[route.name],
        "cpu_share": cpu / wall,  # of one core, from the first claim seen to the end
        "cpu_ms": cpu * 1000 / len(ok),
        "timed_out": not finished,
    }
    result.sinks[label] = sink_check(sinks[route.sink], keys_of(rows))


def accept_to_start(rt, cfg: Config, sinks: dict, watch: Watch, result: Result):
    n = int(cfg.latency_rate * cfg.latency_seconds)
    items = [(f"lat-{i:06d}", ROUTES["fast"].event_type) for i in range(n)]
    sent = send(rt, items, cfg.latency_rate, watch, result)
    wait_finished(rt, watch, "lat", stored(rt, "lat"), cfg.timeout)
    rows = batch(rt, "lat")
    result.sinks["accept-to-start"] = sink_check(sinks["fast"], keys_of(rows))
    waits = [ms(r["started"] - r["received"]) for r in rows if r["started"]]
    result.latency = {
        "events": n,
        "started": len(waits),
        "rate": sent["rate"],
        "p50": percentile(waits, 50),
        "p99": percentile(waits, 99),
        "max": max(waits, default=math.nan),
    }


def ingest_at_rate(rt, cfg, watch, result: Result, tag: str) -> dict:
    n = int(cfg.ingest_rate * cfg.ingest_seconds)
    items = [(f"{tag}-{i:06d}", DEMO_TYPE) for i in range(n)]
    return send(rt, items, cfg.ingest_rate, watch, result)


def ingest_no_worker(rt: Runtime, cfg: Config, result: Result):
    """The reference: the same fixed-rate ingest with no worker running."""
    result.ingest["none"] = ingest_at_rate(rt, cfg, None, result, "none")


def ingest_idle(rt: Runtime, cfg: Config, watch: Watch, result: Result):
    """The worker has no backlog: it runs only the arriving events (`log` connector)."""
    result.ingest["idle"] = ingest_at_rate(rt, cfg, watch, result, "idle")
    wait_finished(rt, watch, "idle", stored(rt, "idle"), cfg.timeout)


def ingest_busy(rt: Runtime, cfg: Config, sinks: dict, result: Result):
    """The same fixed-rate ingest while a worker drains a backlog to the 100 ms sink
    that is meant to outlast the run (whether it did is reported)."""
    rate = result.drains.get("slow", {}).get("rate", 300)
    backlog = min(int(rate * (cfg.ingest_seconds + 1) * 1.3) + 100, 20_000)
    preload(rt, "backlog", backlog, ROUTES["slow"].event_type)
    with running_worker(rt, result, "busy ingest (backlog at 100 ms)", 32) as watch:
        wait_until(watch, claimed_any(rt, "backlog", backlog), 30, "the backlog")
        sent = ingest_at_rate(rt, cfg, watch, result, "busy")
        counts = status_counts(rt, "backlog")
        left = counts.get("queued", 0) + counts.get("retrying", 0)
        result.ingest["busy"] = {**sent, "backlog": backlog, "left": left}
        if not left:
            result.notes.append("busy ingest: the backlog ran out before the run ended")
        wait_finished(rt, watch, "backlog", backlog, cfg.timeout)
        wait_finished(rt, watch, "busy", stored(rt, "busy"), cfg.timeout)
    result.sinks["busy ingest, backlog"] = sink_check(sinks["slow"], keys_of(batch(rt, "backlog")))


def fairness(rt: Runtime, cfg: Config, sinks: dict, result: Result):
    n = cfg.fair_events
    items = []
    for i in range(n):
        items.append((f"ok-{i:06d}", ROUTES["healthy"].event_type))
        items.append((f"hang-{i:06d}", ROUTES["hang"].event_type))
    env = {"HTTP_READ_TIMEOUT": "5", "WORKER_GRACE_SECONDS": "1"}
    with running_worker(rt, result, "fairness (hang + healthy)", 32, **env) as watch:
        wait_ready(rt, watch)
        sent = send(rt, items, 2 * cfg.fair_rate, watch, result)
        wait_finished(rt, watch, "ok", stored(rt, "ok"), cfg.timeout)
        outcomes = rt.query(ATTEMPT_OUTCOMES, ("hang-%",))
        hang = {outcome or "running": count for outcome, count in outcomes}
    rows = batch(rt, "ok")
    result.sinks["fairness, healthy route"] = sink_check(sinks["healthy"], keys_of(rows))
    waits = [ms(r["finished"] - r["received"]) for r in rows if r["status"] == "succeeded"]
    result.fairness = {
        "events": n,
        "rate": sent["rate"],
        "succeeded": len(waits),
        "p50": percentile(waits, 50),
        "p99": percentile(waits, 99),
        "max": max(waits, default=math.nan),
        "hang_attempts": hang,
        "hang_running": watch.running[ROUTES["hang"].name],
        "healthy_running": watch.running[ROUTES["healthy"].name],
    }


def ingest_rate(rt: Runtime, cfg: Config, result: Result):
    rt.stop("gunicorn")
    start_gunicorn(rt, 1)
    statuses, elapsed = flood(rt, "flood", threads=cfg.client_threads, seconds=cfg.flood_seconds)
    result.ingest_rate = {
        "rate": statuses.get(202, 0) / elapsed,
        "events": statuses.get(202, 0),
        "statuses": statuses,
    }


def check_sinks(rt: Runtime, sinks: dict, result: Result):
    """Effects a sink holds that no attempted execution of its routes accounts for."""
    for name in ("fast", "slow", "second", "healthy"):
        routes = ", ".join(f"'{r.name}'" for r in ROUTES.values() if r.sink == name)
        keys = {k for (k,) in rt.query(SINK_KEYS.format(names=routes))}
        result.extra_effects[name] = len(sinks[name].keys() - keys)
        if sinks[name].without_key or sinks[name].failed:
            result.notes.append(f"sink {name}: requests without a key, or answered 500")


def step(result: Result, what: str, fn, *args):
    """Run one measurement; an error is noted and the next measurement still runs."""
    progress(f"{result.kind}: {what}")
    try:
        fn(*args)
    except Exception as exc:
        traceback.print_exc()
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        result.notes.append(f"{what}: {text}")


def idle_worker(rt: Runtime, cfg: Config, sinks: dict, result: Result):
    with running_worker(rt, result, "idle (accept-to-start, idle ingest)", 32) as watch:
        wait_ready(rt, watch)
        wait_finished(rt, watch, "none", stored(rt, "none"), cfg.timeout)  # ingested before
        step(result, "accept-to-start", accept_to_start, rt, cfg, sinks, watch, result)
        step(result, "ingest, worker idle", ingest_idle, rt, cfg, watch, result)


def measure(kind: str, cfg: Config, result: Result):
    with contextlib.ExitStack() as stack:
        sinks = {k: stack.enter_context(start_sink(v)) for k, v in SINK_LATENCY.items()}
        rt = stack.enter_context(Runtime(kind, pg_admin_url=PG_ADMIN_URL, env=ENV))
        add_routes(rt, sinks)
        start_gunicorn(rt, web_workers())
        for run in drain_runs(cfg):
            step(result, f"drain {run.tag}", drain, rt, cfg, sinks, run, result)
        step(result, "ingest, no worker", ingest_no_worker, rt, cfg, result)
        step(result, "idle worker", idle_worker, rt, cfg, sinks, result)
        step(result, "ingest, worker busy", ingest_busy, rt, cfg, sinks, result)
        step(result, "fairness", fairness, rt, cfg, sinks, result)
        step(result, "ingest rate", ingest_rate, rt, cfg, result)
        step(result, "sinks", check_sinks, rt, sinks, result)
        rt.stop_all()
        problems = rt.log_problems()
        if problems:
            result.notes.append(f"log lines with ERROR, CRITICAL or a traceback: {problems}")


def run_database(kind: str, cfg: Config) -> Result:
    """Every measurement on one fresh database; what failed is noted in the result."""
    result = Result(kind)
    step(result, "a fresh database", measure, kind, cfg, result)
    return result


# -- report -------------------------------------------------------------------------------
def fmt(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def answers(statuses: dict) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items(), key=str))


def table(title: str, intro: str, header: list[str], rows: list[list], align: str = ""):
    """A markdown table; `align` has an l or r per column (default: two l, then r)."""
    print(f"\n## {title}\n")
    if intro:
        print(intro + "\n")
    align = align or "ll" + "r" * (len(header) - 2)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if a == "l" else "---:" for a in align) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def report_drains(results: list[Result], cfg: Config):
    rows = []
    for r in results:
        for run in drain_runs(cfg):
            d = r.drains.get(run.tag)
            route = ROUTES[run.tag]
            if not d:
                continue
            rows.append(
                [
                    r.database,
                    f"{SINK_LATENCY[route.sink] * 1000:g} ms",
                    run.concurrency,
                    route.max_in_flight,
                    f"{d['succeeded']:,} of {d['events']:,}"
                    + (" (timed out)" if d["timed_out"] else ""),
                    fmt(d["seconds"], 2),
                    f"**{fmt(d['rate'])}**",
                    f"{d['attempts']:,}",
                    d["most_running"],
                    f"{d['cpu_share']:.0%}",
                    fmt(d["cpu_ms"], 2),
                ]
            )
    table(
        "Drain: one worker, preloaded executions",
        "Executions/s = succeeded / (last finished_at - first attempt started_at). "
        "Most running: the most of the route's executions seen running at once. Worker "
        "CPU: its user + system time from the first claim seen to the last execution's "
        "end, as a share of one core and per execution.",
        [
            "database",
            "sink latency",
            "--concurrency",
            "max_in_flight",
            "succeeded",
            "seconds",
            "executions/s",
            "attempts",
            "most running",
            "worker CPU",
            "CPU ms/execution",
        ],
        rows,
    )


def report_sinks(results: list[Result]):
    rows = []
    for r in results:
        for run, s in r.sinks.items():
            executions = s["effects"] + s["missing"]
            rows.append([r.database, run, executions, s["effects"], s["missing"], s["repeated"]])
    table(
        "Side effects at the sinks",
        "Each sink records one effect per Idempotency-Key; a key delivered again is absorbed "
        "and counted as repeated. Every execution must have exactly one effect.",
        ["database", "run", "executions", "effects", "missing", "repeated"],
        rows,
    )
    for r in results:
        if r.extra_effects:
            counts = ", ".join(f"`{name}` {n}" for name, n in r.extra_effects.items())
            print(f"\n{r.database}: effects of no attempted execution, per sink: {counts}.")


def report_fairness(results: list[Result], cfg: Config):
    rows = []
    for r in results:
        f = r.fairness
        if f:
            rows.append(
                [
                    r.database,
                    fmt(f["p50"]),
                    f"**{fmt(f['p99'])}**",
                    fmt(f["max"]),
                    f"{f['succeeded']:,} of {f['events']:,}",
                    f["healthy_running"],
                    answers(f["hang_attempts"]),
                    f["hang_running"],
                    fmt(f["rate"]),
                ]
            )
    table(
        "Fairness: a hanging route beside a healthy one",
        f"One worker, --concurrency 32, HTTP_READ_TIMEOUT=5; both routes max_in_flight "
        f"{DEFAULT_MAX_IN_FLIGHT}; {cfg.fair_events:,} events each, interleaved, at "
        f"{cfg.fair_rate:g}/s each. Healthy route (50 ms sink): accept-to-finish, ms.",
        [
            "database",
            "healthy p50",
            "healthy p99",
            "healthy max",
            "healthy succeeded",
            "healthy most running",
            "hang route attempts",
            "hang most running",
            "sent/s",
        ],
        rows,
        align="lrrrrrlrr",
    )


def report_latency(results: list[Result], cfg: Config):
    rows = []
    for r in results:
        x = r.latency
        if x:
            rows.append(
                [
                    r.database,
                    f"{x['started']:,} of {x['events']:,}",
                    fmt(x["rate"], 1),
                    f"**{fmt(x['p50'], 1)}**",
                    fmt(x["p99"], 1),
                    fmt(x["max"], 1),
                ]
            )
    table(
        "Accept-to-start: one idle worker",
        f"Events at {cfg.latency_rate:g}/s for {cfg.latency_seconds:g} s to the 0 ms sink; "
        "first attempt started_at - event received_at, ms.",
        ["database", "started", "sent/s", "p50", "p99", "max"],
        rows,
        align="lrrrrr",
    )


def report_ingest(results: list[Result], cfg: Config):
    rows = []
    for r in results:
        for who, label in INGEST_RUNS.items():
            x = r.ingest.get(who)
            if not x:
                continue
            left = f"{x['left']:,} of {x['backlog']:,}" if who == "busy" else "-"
            rows.append(
                [
                    r.database,
                    label,
                    fmt(x["rate"]),
                    fmt(x["p50"], 1),
                    f"**{fmt(x['p99'], 1)}**",
                    fmt(x["max"], 1),
                    answers(x["statuses"]),
                    left,
                ]
            )
    table(
        f"Ingest at a fixed {cfg.ingest_rate:g} requests/s, worker idle and busy",
        f"Open loop for {cfg.ingest_seconds:g} s, new `{DEMO_TYPE}` events (`log` connector), "
        f"gunicorn with {web_workers()} sync workers; latency from each request's scheduled "
        "time, ms. Idle: one worker (--concurrency 32) with no backlog, running only the "
        "arriving events. Busy: a worker draining a backlog to the 100 ms sink meanwhile; "
        "the last column is the backlog still queued when the run ended (0: it ran out "
        "early, so the worker was not busy all the time). No worker: for reference.",
        ["database", "worker", "achieved/s", "p50", "p99", "max", "answers", "backlog left"],
        rows,
        align="llrrrrlr",
    )


INGEST_RUNS = {"none": "no worker", "idle": "idle", "busy": "busy"}


def report_workers(results: list[Result]):
    rows = [
        [r.database, w.run, w.concurrency, fmt(w.rss, 1), fmt(w.peak, 1), w.connections]
        for r in results
        for w in r.workers
    ]
    table(
        "Worker processes: memory and database connections",
        "VmRSS when the run ended and VmHWM (peak), MB; connections: the most seen at once "
        "(PostgreSQL: pg_stat_activity rows from the worker's sockets; SQLite: open handles "
        "of the database file).",
        ["database", "run", "--concurrency", "VmRSS MB", "peak MB", "connections"],
        rows,
    )


def report_ingest_rate(results: list[Result], cfg: Config):
    rows = [
        [r.database, f"**{fmt(x['rate'])}**", f"{x['events']:,}", answers(x["statuses"])]
        for r in results
        if (x := r.ingest_rate)
    ]
    table(
        "Ingest rate of one gunicorn sync worker",
        f"Closed loop, {cfg.client_threads} client threads, a new connection per request, "
        f"{cfg.flood_seconds:g} s, no worker running.",
        ["database", "events/s", "events", "answers"],
        rows,
        align="lrrl",
    )


Goal = tuple[str, str, bool | None]  # (goal, measured, met); met None: not measured


def drain_goals(r: Result) -> list[Goal]:
    fast, slow, second = (r.drains.get(t) for t in ("fast", "slow", "second"))
    flood = r.ingest_rate.get("rate")
    found = [
        (
            f"drain at 100 ms >= {GOAL_SLOW_RATE}/s (old engine: 8.1)",
            f"{fmt(slow['rate'])}/s" if slow else "-",
            slow["rate"] >= GOAL_SLOW_RATE if slow else None,
        ),
        (
            f"drain at 0 ms >= {GOAL_FAST_RATE}/s (old engine: 95)",
            f"{fmt(fast['rate'])}/s" if fast else "-",
            fast["rate"] >= GOAL_FAST_RATE if fast else None,
        ),
        (
            "drain at 0 ms >= ingest rate of one gunicorn worker",
            f"{fmt(fast['rate'])} vs {fmt(flood)}/s" if fast and flood else "-",
            fast["rate"] >= flood if fast and flood else None,
        ),
    ]
    if not second:
        return [*found, ("executions at 1 s, concurrency 100", "-", None)]
    limit = GOAL_SECOND_SECONDS_PER_500 * second["events"] / 500
    late = " (timed out)" if second["timed_out"] else ""
    found.append(
        (
            f"{second['events']:,} executions at 1 s in < {limit:g} s (concurrency 100)",
            f"{fmt(second['seconds'], 2)} s{late}",
            second["seconds"] < limit and not late,
        )
    )
    return found


def sink_goal(r: Result) -> Goal:
    checks, unknown = r.sinks.values(), sum(r.extra_effects.values())
    missing, repeated = (sum(s[k] for s in checks) for k in ("missing", "repeated"))
    return (
        "exactly one side effect per execution (every run with a sink)",
        f"{sum(s['effects'] for s in checks):,} effects in {len(checks)} runs; missing "
        f"{missing}, repeated {repeated}, unknown {unknown}",
        missing + repeated + unknown == 0 if checks and r.extra_effects else None,
    )


def fairness_goal(r: Result) -> Goal:
    f = r.fairness
    return (
        f"healthy route p99 < {GOAL_FAIR_P99_MS} ms beside a hanging one",
        f"{fmt(f['p99'])} ms ({f['succeeded']} of {f['events']})" if f else "-",
        f["p99"] < GOAL_FAIR_P99_MS and f["succeeded"] == f["events"] if f else None,
    )


def latency_goal(r: Result, cfg: Config) -> Goal:
    x, limit = r.latency, GOAL_START_P50_MS[r.kind]
    return (
        f"accept-to-start p50 <= {limit} ms at {cfg.latency_rate:g}/s (old engine: ~60)",
        f"{fmt(x['p50'], 1)} ms" if x else "-",
        x["p50"] <= limit if x else None,
    )


def ingest_goal(r: Result, cfg: Config) -> Goal:
    text = f"ingest p99 busy <= {GOAL_BUSY_RATIO:g} x idle at {cfg.ingest_rate:g}/s"
    idle, busy = r.ingest.get("idle"), r.ingest.get("busy")
    if not (idle and busy):
        return text, "-", None
    ran_out = "" if busy["left"] else " (the backlog ran out)"
    return (
        text,
        f"{fmt(busy['p99'], 1)} vs {fmt(idle['p99'], 1)} ms{ran_out}",
        busy["p99"] <= GOAL_BUSY_RATIO * idle["p99"],
    )


def worker_goals(r: Result) -> list[Goal]:
    at32 = [w.peak for w in r.workers if w.concurrency == 32 and not math.isnan(w.peak)]
    found = [
        (
            f"worker at concurrency 32 <= {GOAL_RSS_MB} MB",
            f"peak {fmt(max(at32), 1)} MB" if at32 else "-",
            max(at32) <= GOAL_RSS_MB if at32 else None,
        )
    ]
    if r.kind == "postgres":
        most = max((w.connections for w in r.workers), default=0)
        found.append(
            (
                f"worker database connections <= {GOAL_PG_CONNECTIONS}",
                f"at most {most}" if most else "-",
                most <= GOAL_PG_CONNECTIONS if most else None,
            )
        )
    return found


def goals(r: Result, cfg: Config) -> list[Goal]:
    return [
        *drain_goals(r),
        sink_goal(r),
        fairness_goal(r),
        latency_goal(r, cfg),
        ingest_goal(r, cfg),
        *worker_goals(r),
    ]


def report_goals(results: list, cfg, goals_of=goals) -> bool:
    """One table of every result's goals (`goals_of(result, cfg)`); True if all were met."""
    rows, all_met = [], True
    for r in results:
        for text, measured, ok in goals_of(r, cfg):
            all_met &= bool(ok)
            verdict = "not measured" if ok is None else ("met" if ok else "**missed**")
            rows.append([r.database, text, measured, verdict])
    table("Goals", "", ["database", "goal", "measured", ""], rows, align="llll")
    return all_met


def git_commit() -> str:
    def git(*args):
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.strip()

    dirty = " + uncommitted changes" if git("status", "--porcelain") else ""
    return (git("rev-parse", "--short", "HEAD") or "unknown") + dirty


def report(results: list[Result], cfg: Config, elapsed: float, load: float) -> bool:
    report_drains(results, cfg)
    report_sinks(results)
    report_fairness(results, cfg)
    report_latency(results, cfg)
    report_ingest(results, cfg)
    report_workers(results)
    report_ingest_rate(results, cfg)
    met = report_goals(results, cfg)
    report_footer(results, elapsed, load)
    return met


def report_footer(results: list, elapsed: float, load: float):
    """Each result's notes, then the commit, the machine and how long the run took."""
    for r in results:
        for note in r.notes:
            print(f"\n- {r.database}: {note}")
    print(
        f"\ncommit {git_commit()}; {os.cpu_count()} cores, load average {load:.1f} at the "
        f"start; python {sys.version.split()[0]}; took {elapsed:.0f} s"
    )


def run_and_report(args, cfg, run_database, report) -> int:
    """Run every database that `args.only` leaves, report, and exit 1 if `args.strict` and
    a goal was missed. SIGTERM unwinds through every cleanup (runtimes, sinks, databases)."""

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    kinds = (args.only,) if args.only else ("sqlite", "postgres")
    started, load = time.monotonic(), os.getloadavg()[0]
    results = [run_database(kind, cfg) for kind in kinds]
    met = report(results, cfg, time.monotonic() - started, load)
    return 1 if args.strict and not met else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about 2 minutes)")
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="one database only")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    return run_and_report(args, QUICK if args.quick else FULL, run_database, report)


if __name__ == "__main__":
    sys.exit(main())
