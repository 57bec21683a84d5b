"""Ordering keys benchmark: per-key order at a 100 ms sink, and what ordering costs.

Run from the project root:
    .venv/bin/python bench/ordering.py [--quick] [--only sqlite|postgres]
        [--events N --keys K] [--strict]

On SQLite and on PostgreSQL (each a fresh database, removed afterwards), gunicorn with its
default number of sync workers, and every execution going through the `http` connector
(POST, a JSON body {"key": "{{ event.k }}", "seq": "{{ event.seq }}"}, an Idempotency-Key)
to a sink on 127.0.0.1 that answers after 100 ms and records, per request, its key, its
sequence number and when it arrived. N events over K keys are POSTed with no worker
running, in waves (every key's sequence number s, then s + 1 once all of wave s was
accepted), so the order received is the sequence order of each key; the database is
checked for that. Then one `runworker --concurrency 32`; routes have max_in_flight 100.

Runs, each on its own route and sink:
1. unordered: the route without an ordering key (the baseline);
2. ordered: the same events on a route with ordering_key `{{ event.k }}`;
3. beside: N events on a route without a key, next to an ordered route with a backlog
   over 4 keys (at most 4 of its executions run at once, so it never fills the worker):
   keyless executions must not be slowed by the ordered backlog waiting beside them.

Per run: executions/s = N / (last finished_at - first attempt started_at), from the
database; out-of-order arrivals at the sink (a request whose seq is lower than the highest
seq already seen for its key; a retry of the same seq does not count); duplicates (a key
delivered again after a success, absorbed by the sink); the most executions of one key
whose attempts overlapped in time (from the database); the mean running (attempts' total
time / seconds: executions/s = mean running / attempt time); the CPU time of the worker
and, on PostgreSQL, of the server processes serving its connections. Also the plan of
the claim's pick query on the ordered route (PostgreSQL: EXPLAIN ANALYZE; SQLite:
EXPLAIN QUERY PLAN) with all queued and in mid-drain: whether the NOT EXISTS of
claims.head() is served by events_execution_key_idx, and what the query costs.

Goals: out of order 0 and one of a key at a time on the ordered routes; no duplicates;
ordered at least 0.8 x unordered executions/s (scaled by keys / 30 when there are fewer
keys than the 30 slots a route gets); keyless beside the ordered backlog at least 0.8 x
unordered; the key index used by the pick in mid-drain. Prints markdown tables, the
goals (met or missed) and the git commit. All traffic goes to
127.0.0.1; every loop is bounded in time and count; processes and databases are removed
on the way out, also after an error or Ctrl-C.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from urllib.parse import urlparse

from engine import (
    ENV,
    batch,
    claimed_any,
    cpu_seconds,
    fmt,
    local_ports_to,
    progress,
    report_footer,
    report_goals,
    run_and_report,
    running_worker,
    start_gunicorn,
    status_counts,
    step,
    table,
    wait_finished,
    wait_until,
    web_workers,
)
from harness import API_KEY, HOST, Runtime, as_utc
from sinks import IdempotentSink

# Not the `test` database other benchmarks connect to: only CREATE and DROP DATABASE of
# this script's own bench_engine_... databases go through this connection.
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
SINK_LATENCY = 0.1
CONCURRENCY = 32
MAX_IN_FLIGHT = 100
ORDERING_KEY = "{{ event.k }}"
BODY = {"key": "{{ event.k }}", "seq": "{{ event.seq }}"}
BESIDE_KEYS = 4  # the ordered route beside the keyless one runs at most this many at once
PRELOAD_PARALLEL = 16

GOAL_RATIO = 0.8  # ordered >= 0.8 x unordered (while keys fill the worker's slots)


def per_route_cap(concurrency: int) -> int:
    """The most of one route's executions a worker runs at once: its slots less those
    kept for other routes (events.engine.claims.reserve)."""
    return concurrency - (max(1, concurrency // 16) if concurrency > 1 else 0)


@dataclasses.dataclass(frozen=True)
class Config:
    events: int = 10_000
    keys: int = 100
    timeout: float = 300  # the longest wait for one run's executions

    @property
    def beside_events(self) -> int:
        """The ordered backlog beside the keyless run: it outlasts it (4 keys at 10/s
        each against about 300/s)."""
        return max(BESIDE_KEYS * 10, self.events // 5)


FULL = Config()
# Fewer keys than the 30 slots a route gets: the ordered run is bound to 20 / 0.1 s by
# design (the goal is scaled to that), and the unordered one runs keys side by side.
QUICK = Config(events=2_000, keys=20, timeout=90)


@dataclasses.dataclass(frozen=True)
class Run:
    tag: str  # its events' ids start with this, then "-"; also its route and sink
    ordered: bool
    keys: int
    events: int
    beside: int = 0  # the most slots another route's run takes meanwhile

    @property
    def route(self) -> str:
        return f"bench-{self.tag}"

    @property
    def event_type(self) -> str:
        return f"bench.{self.tag}"

    def theory(self) -> float:
        """Executions/s with no overhead: the slots one route gets (or one per key when
        ordered and there are fewer keys), each busy 100 ms per execution."""
        slots = min(per_route_cap(CONCURRENCY), CONCURRENCY - self.beside)
        return (min(slots, self.keys) if self.ordered else slots) / SINK_LATENCY


def runs(cfg: Config) -> dict[str, Run]:
    found = (
        Run("unord", False, cfg.keys, cfg.events),
        Run("ord", True, cfg.keys, cfg.events),
        Run("free", False, cfg.keys, cfg.events, beside=BESIDE_KEYS),
        Run("beside", True, BESIDE_KEYS, cfg.beside_events),
    )
    return {r.tag: r for r in found}


@dataclasses.dataclass
class Result:
    kind: str
    runs: dict = dataclasses.field(default_factory=dict)  # run tag -> figures
    plans: list = dataclasses.field(default_factory=list)  # (moment, summary) of the pick
    workers: list = dataclasses.field(default_factory=list)  # engine.Watch, per worker run
    notes: list = dataclasses.field(default_factory=list)

    @property
    def database(self) -> str:
        return {"sqlite": "SQLite", "postgres": "PostgreSQL"}[self.kind]


# -- the sink: per-key order -----------------------------------------------------------
class OrderSink(IdempotentSink):
    """The idempotent sink, also checking that each key's sequence numbers arrive in
    order. Arrivals are recorded when a request is read, before the sink answers."""

    def __init__(self, latency: float):
        self.order_lock = threading.Lock()
        self.highest: dict[str, int] = {}  # key -> highest seq seen
        self.out_of_order = 0
        self.unreadable = 0
        self.arrivals = 0
        super().__init__(latency)

    def _receive(self, key, body):
        self._arrive(body)
        return super()._receive(key, body)

    def _arrive(self, body: bytes):
        try:
            data = json.loads(body)
            key, seq = str(data["key"]), int(data["seq"])
        except (ValueError, KeyError, TypeError):
            with self.order_lock:
                self.unreadable += 1
            return
        with self.order_lock:
            self.arrivals += 1
            if seq < self.highest.get(key, -1):
                self.out_of_order += 1
            else:
                self.highest[key] = seq


# -- routes, events, preloading ----------------------------------------------------------
def add_routes(rt: Runtime, sinks: dict[str, OrderSink], cfg: Config):
    """One `http` route per run, to its own sink, checked as the admin would."""
    lines = ["from connectors.models import Route"]
    for run in runs(cfg).values():
        params = {"url": sinks[run.tag].url, "body": BODY}
        key = ORDERING_KEY if run.ordered else ""
        lines.append(
            f"route = Route(name={run.route!r}, event_type={run.event_type!r}, "
            f"connector='http', action='post', params={params!r}, "
            f"max_in_flight={MAX_IN_FLIGHT}, ordering_key={key!r})\n"
            "route.full_clean()\nroute.save()"
        )
    rt.manage("shell", "-c", "\n".join(lines))


def key_name(n: int) -> str:
    return f"k{n:03d}"


def waves(run: Run) -> list[list[dict]]:
    """The run's events as waves: wave s holds every key's event number s."""
    per_key = math.ceil(run.events / run.keys)
    found = []
    for seq in range(per_key):
        wave = []
        for n in range(run.keys):
            if seq * run.keys + n >= run.events:
                break
            key = key_name(n)
            event_id = f"{run.tag}-{key}-{seq:06d}"
            wave.append({"event_id": event_id, "type": run.event_type, "k": key, "seq": seq})
        found.append(wave)
    return found


def request_bytes(port: int, payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"POST /webhook HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {API_KEY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _post(port: int, payload: dict) -> str:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
        try:
            writer.write(request_bytes(port, payload))
            status_line = await asyncio.wait_for(reader.readline(), 10)
            await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        return status_line.split()[1].decode() if status_line else "closed"
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__


async def _post_waves(port: int, all_waves: list[list[dict]], deadline: float) -> Counter:
    limit = asyncio.Semaphore(PRELOAD_PARALLEL)
    statuses: Counter = Counter()

    async def one(payload: dict) -> str:
        async with limit:
            return await _post(port, payload)

    for wave in all_waves:
        if time.monotonic() > deadline:
            raise TimeoutError("preloading took too long")
        statuses.update(await asyncio.gather(*(one(p) for p in wave)))
    return statuses


def preload(rt: Runtime, run: Run):
    """POST the run's events wave after wave (no worker is meant to be running): an event
    is sent only once every event before it of its key was accepted."""
    started = time.monotonic()
    deadline = started + 60 + run.events / 20
    statuses = asyncio.run(_post_waves(rt.port, waves(run), deadline))
    if statuses != {"202": run.events}:
        raise RuntimeError(f"preloading {run.events} `{run.tag}` events: answers {statuses}")
    progress(f"{run.tag}: {run.events:,} events in {time.monotonic() - started:.0f} s")


# -- SQL (placeholders are %s for both databases; the harness translates) ---------------
RECEIVED = """
    SELECT e.event_id FROM events_execution x JOIN events_event e ON e.id = x.event_id
    WHERE e.event_id LIKE %s ORDER BY x.created_at, x.id
"""
SPANS = """
    SELECT e.event_id, a.started_at, a.finished_at
    FROM events_attempt a
    JOIN events_execution x ON x.id = a.execution_id
    JOIN events_event e ON e.id = x.event_id
    WHERE e.event_id LIKE %s
"""
ROUTE_ID = "SELECT id FROM connectors_route WHERE name = %s"
BACKENDS = """
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND client_port = ANY(%s)
"""
SUCCEEDED = """
    SELECT COUNT(*) FROM events_execution x JOIN events_event e ON e.id = x.event_id
    WHERE e.event_id LIKE %s AND x.status = 'succeeded'
"""


def key_seq(event_id: str) -> tuple[str, int]:
    _, key, seq = event_id.rsplit("-", 2)
    return key, int(seq)


def received_inversions(rt: Runtime, run: Run) -> int:
    """Executions created before one of their key with a lower seq: 0 when the preload
    kept each key's order (executions are created in the order events are received)."""
    highest: dict[str, int] = {}
    inversions = 0
    for (event_id,) in rt.query(RECEIVED, (f"{run.tag}-%",)):
        key, seq = key_seq(event_id)
        if seq < highest.get(key, -1):
            inversions += 1
        highest[key] = max(seq, highest.get(key, -1))
    return inversions


def spans(rt: Runtime, run: Run) -> list[tuple[str, datetime, datetime]]:
    """(key, started_at, finished_at) of the run's finished attempts."""
    found = []
    for event_id, started, finished in rt.query(SPANS, (f"{run.tag}-%",)):
        if started is not None and finished is not None:
            found.append((key_seq(event_id)[0], as_utc(started), as_utc(finished)))
    return found


def most_at_once_per_key(attempts: list[tuple[str, datetime, datetime]]) -> int:
    """The most attempts of one key whose [started_at, finished_at) overlapped."""
    edges = defaultdict(list)
    for key, started, finished in attempts:
        edges[key] += [(started, 1), (finished, -1)]
    most = 0
    for points in edges.values():
        running = 0
        for _, step_ in sorted(points, key=lambda p: (p[0], p[1])):  # an end before a start
            running += step_
            most = max(most, running)
    return most


# -- the claim's pick query, explained ----------------------------------------------------
HEAD_SQL = (
    "import json\n"
    "from events.engine import claims\n"
    "from events.models import CLAIMABLE_STATUSES\n"
    "print(json.dumps({'head': claims.head('e'), 'claimable': list(CLAIMABLE_STATUSES)}))"
)


def pick_sql(rt: Runtime) -> str:
    """The claim's pick for one route as events.engine.claims._claim_rows writes it (there
    inside the UPDATE, with FOR UPDATE SKIP LOCKED on PostgreSQL), with head() as the
    engine renders it. Parameters: route id, now, limit."""
    found = json.loads(rt.manage("shell", "-c", HEAD_SQL).strip().splitlines()[-1])
    claimable = ", ".join(f"'{s}'" for s in found["claimable"])
    return (
        "SELECT e.id FROM events_execution e WHERE e.route_id = %s "  # noqa: S608
        f"AND e.status IN ({claimable}) AND e.next_attempt_at <= %s AND {found['head']} "
        "ORDER BY e.next_attempt_at LIMIT %s"
    )


def _walk(node: dict, depth: int = 0):
    yield node, depth
    for child in node.get("Plans", []):
        yield from _walk(child, depth + 1)


def explain_postgres(rt: Runtime, sql: str, params: tuple) -> str:
    (plan,) = rt.query("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)[0]
    plan = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
    nodes = list(_walk(plan["Plan"]))
    scans = [
        f"{n['Node Type']} on {n.get('Index Name') or n.get('Relation Name')}"
        + (f" x{n['Actual Loops']:,}" if n.get("Actual Loops", 1) > 1 else "")
        for n, _ in nodes
        if "Scan" in n["Node Type"] and n.get("Relation Name") == "events_execution"
    ]
    used = any(n.get("Index Name") == "events_execution_key_idx" for n, _ in nodes)
    outer = next((n for n, _ in nodes if n.get("Relation Name") == "events_execution"), {})
    removed = outer.get("Rows Removed by Filter", 0)
    return (
        f"key index {'used' if used else '**not used**'}; {'; '.join(scans)}; "
        f"outer rows {outer.get('Actual Rows', 0):,} returned, {removed:,} removed by its "
        f"filter; {plan['Execution Time']:.2f} ms"
    )


def explain_sqlite(rt: Runtime, sql: str, params: tuple) -> str:
    details = [row[-1] for row in rt.query("EXPLAIN QUERY PLAN " + sql, params)]
    used = any("events_execution_key_idx" in d for d in details)
    started = time.perf_counter()
    rows = rt.query(sql, params)
    took = (time.perf_counter() - started) * 1000
    return (
        f"key index {'used' if used else '**not used**'}; " + "; ".join(details) + f"; "
        f"{len(rows)} rows in {took:.2f} ms"
    )


def explain_pick(rt: Runtime, sql: str, run: Run, moment: str, result: Result):
    """One line on the pick query of the run's route, as the worker would run it now."""
    (route_id,) = rt.query(ROUTE_ID, (run.route,))[0]
    now = datetime.now(UTC)
    if rt.kind == "postgres":
        summary = explain_postgres(rt, sql, (route_id, now, per_route_cap(CONCURRENCY)))
    else:
        when = now.replace(tzinfo=None).isoformat(" ")  # as Django stores it on SQLite
        summary = explain_sqlite(rt, sql, (route_id, when, per_route_cap(CONCURRENCY)))
    counts = status_counts(rt, run.tag)
    state = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
    result.plans.append((f"{run.tag}, {moment} ({state})", summary))


# -- CPU: the worker, and on PostgreSQL the server processes serving it ---------------------
class Cpu:
    """CPU seconds used from start() to stop(): the worker process and, on PostgreSQL, the
    backends of its connections (on SQLite the database work is the worker's own)."""

    def __init__(self, rt: Runtime, watch):
        self.rt, self.watch = rt, watch
        self.backends: list[int] = []
        self.worker = self.database = math.nan
        self.wall = math.nan

    def start(self):
        if self.rt.kind == "postgres":
            port = urlparse(self.rt.env["DATABASE_URL"]).port or 5432
            ports = local_ports_to(self.watch.proc.pid, port)
            self.backends = [pid for (pid,) in self.rt.query(BACKENDS, (ports,))]
        self._at = (self.watch.cpu(), cpu_seconds(self.backends), time.monotonic())

    def stop(self):
        worker, database, wall = self._at
        self.worker = self.watch.cpu() - worker
        if self.backends:
            self.database = cpu_seconds(self.backends) - database
        self.wall = time.monotonic() - wall


# -- the runs -------------------------------------------------------------------------------
def figures(rt: Runtime, run: Run, sink: OrderSink, watch, cpu: Cpu | None) -> dict:
    rows = batch(rt, run.tag)
    ok = [r for r in rows if r["status"] == "succeeded"]
    if len(ok) < 2:
        raise RuntimeError(f"{run.tag}: {len(ok)} of {run.events} executions succeeded")
    seconds = (max(r["finished"] for r in ok) - min(r["started"] for r in ok)).total_seconds()
    attempts = spans(rt, run)
    busy = sum((f - s).total_seconds() for _, s, f in attempts)
    with sink.lock:
        effects = sum(1 for r in rows if r["key"] in sink.effects)
        duplicates = sink.absorbed
    return {
        "events": run.events,
        "succeeded": len(ok),
        "seconds": seconds,
        "rate": len(ok) / seconds,
        "attempts": sum(r["attempts"] for r in rows),
        "effects": effects,
        "out_of_order": sink.out_of_order,
        "arrivals": sink.arrivals,
        "unreadable": sink.unreadable,
        "duplicates": duplicates,
        "most_per_key": most_at_once_per_key(attempts),
        # Little's law: executions/s = mean running / mean attempt time. Below the slots
        # it had, the worker left slots empty between one call and the next.
        "mean_running": busy / seconds,
        "attempt_ms": busy * 1000 / len(attempts) if attempts else math.nan,
        "received_inversions": received_inversions(rt, run),
        "most_running": watch.running[run.route],
        "cpu_share": cpu.worker / cpu.wall if cpu else math.nan,
        "cpu_ms": cpu.worker * 1000 / len(ok) if cpu else math.nan,
        "db_share": cpu.database / cpu.wall if cpu else math.nan,
        "db_ms": cpu.database * 1000 / len(ok) if cpu else math.nan,
    }


def half_done(rt: Runtime, run: Run):
    return lambda: rt.query(SUCCEEDED, (f"{run.tag}-%",))[0][0] >= run.events // 2


def drain(rt: Runtime, cfg: Config, sinks: dict, run: Run, result: Result, pick: str):
    """Preload the run's events, then one worker until all have finished."""
    preload(rt, run)
    if run.ordered:
        explain_pick(rt, pick, run, "all queued", result)
    with running_worker(rt, result, run.tag, CONCURRENCY) as watch:
        wait_until(watch, claimed_any(rt, run.tag, run.events), 30, "the first claim")
        cpu = Cpu(rt, watch)
        cpu.start()
        if run.ordered and wait_until(watch, half_done(rt, run), cfg.timeout, "half"):
            explain_pick(rt, pick, run, "mid-drain", result)
        finished = wait_finished(rt, watch, run.tag, run.events, cfg.timeout)
        cpu.stop()
    result.runs[run.tag] = figures(rt, run, sinks[run.tag], watch, cpu)
    result.runs[run.tag]["timed_out"] = not finished


def beside(rt: Runtime, cfg: Config, sinks: dict, result: Result, pick: str):
    """Keyless executions on one route while an ordered route's backlog waits beside it.
    The CPU figure covers the keyless run's span (both routes' work in it)."""
    free, keyed = runs(cfg)["free"], runs(cfg)["beside"]
    preload(rt, keyed)
    preload(rt, free)
    with running_worker(rt, result, "free + beside", CONCURRENCY) as watch:
        wait_until(watch, claimed_any(rt, free.tag, free.events), 30, "the first claim")
        cpu = Cpu(rt, watch)
        cpu.start()
        if wait_until(watch, half_done(rt, free), cfg.timeout, "half of the keyless run"):
            explain_pick(rt, pick, keyed, "beside the keyless run", result)
        finished = wait_finished(rt, watch, free.tag, free.events, cfg.timeout)
        cpu.stop()
        left = sum(
            n for s, n in status_counts(rt, keyed.tag).items() if s in ("queued", "retrying")
        )
        keyed_finished = wait_finished(rt, watch, keyed.tag, keyed.events, cfg.timeout)
    result.runs[free.tag] = figures(rt, free, sinks[free.tag], watch, cpu)
    result.runs[free.tag]["timed_out"] = not finished
    result.runs[free.tag]["beside_left"] = left
    result.runs[keyed.tag] = figures(rt, keyed, sinks[keyed.tag], watch, None)
    result.runs[keyed.tag]["timed_out"] = not keyed_finished
    if not left:
        result.notes.append("beside: the ordered backlog ran out before the keyless run ended")


def measure(kind: str, cfg: Config, result: Result):
    with contextlib.ExitStack() as stack:
        sinks = {t: stack.enter_context(OrderSink(SINK_LATENCY)) for t in runs(cfg)}
        rt = stack.enter_context(Runtime(kind, pg_admin_url=PG_ADMIN_URL, env=ENV))
        add_routes(rt, sinks, cfg)
        pick = pick_sql(rt)
        start_gunicorn(rt, web_workers())
        every = runs(cfg)
        for tag in ("unord", "ord"):
            step(result, f"drain {tag}", drain, rt, cfg, sinks, every[tag], result, pick)
        step(result, "keyless beside ordered", beside, rt, cfg, sinks, result, pick)
        rt.stop_all()
        for name, sink in sinks.items():
            if sink.without_key or sink.failed or sink.unreadable:
                result.notes.append(
                    f"sink {name}: requests without a key, answered 500, or "
                    "with a body it could not read"
                )
        problems = rt.log_problems()
        if problems:
            result.notes.append(f"log lines with ERROR, CRITICAL or a traceback: {problems}")


def run_database(kind: str, cfg: Config) -> Result:
    """Every run on one fresh database; what failed is noted in the result."""
    result = Result(kind)
    step(result, "a fresh database", measure, kind, cfg, result)
    return result


# -- report -----------------------------------------------------------------------------------
LABELS = {
    "unord": "unordered (no key)",
    "ord": f"ordered `{ORDERING_KEY}`",
    "free": "keyless, beside an ordered backlog",
    "beside": f"ordered backlog beside it ({BESIDE_KEYS} keys)",
}


def report_runs(results: list[Result], cfg: Config):
    rows = []
    for r in results:
        for tag, run in runs(cfg).items():
            d = r.runs.get(tag)
            if not d:
                continue
            rows.append(
                [
                    r.database,
                    LABELS[tag],
                    f"{run.events:,} / {run.keys}",
                    f"{d['succeeded']:,}" + (" (timed out)" if d["timed_out"] else ""),
                    fmt(d["seconds"], 1),
                    f"**{fmt(d['rate'])}**",
                    fmt(run.theory()),
                    f"**{d['out_of_order']:,}**",
                    d["duplicates"],
                    d["most_per_key"],
                    d["most_running"],
                    fmt(d["mean_running"], 1),
                    fmt(d["attempt_ms"]),
                    f"{d['attempts']:,}",
                    share(d["cpu_share"]),
                    fmt(d["cpu_ms"], 2),
                    share(d["db_share"]),
                    fmt(d["db_ms"], 2),
                ]
            )
    table(
        "Drain: ordered against unordered",
        f"One worker, --concurrency {CONCURRENCY}, routes' max_in_flight {MAX_IN_FLIGHT}, "
        f"sink {SINK_LATENCY * 1000:g} ms. Executions/s = succeeded / (last finished_at - "
        "first attempt started_at). Theory: the slots one route gets "
        f"({per_route_cap(CONCURRENCY)} of {CONCURRENCY}; one per key when ordered) / "
        "0.1 s. Out of order: arrivals at the sink whose seq is below the highest seen for "
        "their key. Duplicates: a key delivered again after a success. Per key at once: "
        "the most attempts of one key overlapping in time. Most running: of the route, "
        "sampled; mean running: attempts' total time / seconds, so executions/s = mean "
        "running / attempt time (a mean below the slots: slots left empty between one "
        "call and the next). Worker CPU: user + system from "
        "the first claim seen to the last execution's end, share of one core and per "
        "execution (beside: the keyless run's span, both routes' work); database CPU: the "
        "same for the PostgreSQL server processes of the worker's connections (on SQLite "
        "the database work is in the worker's own figure).",
        [
            "database",
            "run",
            "events / keys",
            "succeeded",
            "seconds",
            "executions/s",
            "theory/s",
            "out of order",
            "duplicates",
            "per key at once",
            "most running",
            "mean running",
            "attempt ms",
            "attempts",
            "worker CPU",
            "CPU ms/execution",
            "database CPU",
            "database ms/execution",
        ],
        rows,
        align="lll" + "r" * 15,
    )


def share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"


def ratio(r: Result, a: str, b: str) -> float:
    x, y = r.runs.get(a), r.runs.get(b)
    return x["rate"] / y["rate"] if x and y else math.nan


def theory_ratio(cfg: Config, tag: str) -> float:
    every = runs(cfg)
    return every[tag].theory() / every["unord"].theory()


def report_ratios(results: list[Result], cfg: Config):
    rows = [
        [
            r.database,
            f"**{fmt(ratio(r, 'ord', 'unord'), 2)}**",
            fmt(ratio(r, "free", "unord"), 2),
            fmt(r.runs.get("free", {}).get("beside_left")),
        ]
        for r in results
    ]
    table(
        "Ratios",
        "Executions/s of a run over the unordered run's. Keyless beside: the ordered route "
        f"takes up to {BESIDE_KEYS} of the worker's slots, so its theory is "
        f"{theory_ratio(cfg, 'free'):.2f}; the last column is the ordered backlog still "
        "waiting when the keyless run ended (0: it ran out).",
        ["database", "ordered / unordered", "keyless beside / unordered", "backlog left"],
        rows,
        align="lrrr",
    )


def report_plans(results: list[Result]):
    print("\n## The claim's pick query on the ordered route\n")
    for r in results:
        for moment, summary in r.plans:
            print(f"- {r.database}, {moment}: {summary}")


Goal = tuple[str, str, bool | None]  # (goal, measured, met); met None: not measured


def goals(r: Result, cfg: Config) -> list[Goal]:
    every = runs(cfg)
    found: list[Goal] = []
    for tag in ("ord", "beside"):
        d = r.runs.get(tag)
        found.append(
            (
                f"{LABELS[tag]}: out of order 0, one of a key at a time",
                f"{d['out_of_order']} out of order, at most {d['most_per_key']} at once"
                if d
                else "-",
                d["out_of_order"] == 0 and d["most_per_key"] <= 1 if d else None,
            )
        )
    done = list(r.runs.values())
    found.append(
        (
            "duplicates 0, every execution succeeded with one effect",
            f"{sum(d['duplicates'] for d in done)} duplicates; "
            f"{sum(d['succeeded'] for d in done):,} of {sum(d['events'] for d in done):,} "
            f"succeeded, {sum(d['effects'] for d in done):,} effects"
            if done
            else "-",
            all(
                d["duplicates"] == 0 and d["succeeded"] == d["events"] == d["effects"]
                for d in done
            )
            if len(done) == len(every)
            else None,
        )
    )
    # With fewer keys than slots, ordering caps the rate at keys / 0.1 s by design.
    limit = GOAL_RATIO * theory_ratio(cfg, "ord")
    got = ratio(r, "ord", "unord")
    found.append(
        (
            f"ordered >= {limit:.2f} x unordered executions/s",
            f"{fmt(got, 2)} ({fmt(r.runs['ord']['rate'])} vs {fmt(r.runs['unord']['rate'])}/s)"
            if not math.isnan(got)
            else "-",
            got >= limit if not math.isnan(got) else None,
        )
    )
    got = ratio(r, "free", "unord")
    found.append(
        (
            f"keyless beside an ordered backlog >= {GOAL_RATIO} x unordered",
            fmt(got, 2) if not math.isnan(got) else "-",
            got >= GOAL_RATIO if not math.isnan(got) else None,
        )
    )
    # Mid-drain is where the claim spends its time; on a small table (all queued, or a
    # quick run) PostgreSQL's planner may rightly prefer the route's index.
    mid = [summary for moment, summary in r.plans if moment.startswith("ord, mid-drain")]
    found.append(
        (
            "mid-drain, head()'s NOT EXISTS served by events_execution_key_idx",
            ("yes" if "key index used" in mid[0] else "no") if mid else "-",
            "key index used" in mid[0] if mid else None,
        )
    )
    return found


def report(results: list[Result], cfg: Config, elapsed: float, load: float) -> bool:
    report_runs(results, cfg)
    report_ratios(results, cfg)
    report_plans(results)
    met = report_goals(results, cfg, goals)
    for r in results:
        for tag, d in r.runs.items():
            if d["received_inversions"]:
                r.notes.append(
                    f"{tag}: {d['received_inversions']} executions created out of their "
                    "key's sequence order (the preload did not keep it)"
                )
    report_footer(results, elapsed, load)
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2,000 events over 20 keys (about 3 minutes)"
    )
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="one database only")
    parser.add_argument(
        "--events",
        type=int,
        help=f"events per run (default {FULL.events:,}; --quick: {QUICK.events:,})",
    )
    parser.add_argument(
        "--keys", type=int, help=f"ordering keys (default {FULL.keys}; --quick: {QUICK.keys})"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if args.events is not None or args.keys is not None:
        events = args.events if args.events is not None else cfg.events
        keys = args.keys if args.keys is not None else cfg.keys
        if not 1 <= keys <= events <= 1_000_000:
            parser.error("need 1 <= --keys <= --events <= 1,000,000")
        cfg = dataclasses.replace(cfg, events=events, keys=keys)
    return run_and_report(args, cfg, run_database, report)


if __name__ == "__main__":
    sys.exit(main())
