"""How fast the admin's events, executions, attempts and routes pages are on 1,000,000 events.

Creates its own database (PostgreSQL: on the server named by BENCH_PG_URL, dropped at the
end; SQLite: a temporary file), migrates it, fills it with SQL (`INSERT ... SELECT
generate_series` or a recursive CTE, not the ORM), starts gunicorn on 127.0.0.1, logs in
as a superuser it creates, and times each list and detail page over HTTP: one warm-up
request, then the median and max of --runs requests. Prints a markdown table with the
300 ms goal and the git commit.

    .venv/bin/python bench/admin.py                     # 1,000,000 events, PostgreSQL
    .venv/bin/python bench/admin.py --events 100000     # quicker
    .venv/bin/python bench/admin.py --db sqlite         # the same on SQLite
"""

import argparse
import http.client
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import HOST, ROOT, Runtime

GOAL_MS = 300
USER, PASSWORD = "bench-admin", "bench-admin-password"
NOUNS = ("order", "invoice", "customer", "refund", "shipment")
TYPES = [f"{noun}.{verb}" for noun in NOUNS for verb in ("created", "paid", "updated", "deleted")]
SOURCES = [f"bench-{i}" for i in range(1, 10)]

SETUP = """
from connectors.models import Route
from events.models import Source
for name in {sources!r}:
    Source.objects.get_or_create(name=name)
for i, noun in enumerate(("customer", "refund", "shipment")):
    Route.objects.get_or_create(
        name=f"bench-{{noun}}", defaults={{"event_type": noun + ".*", "connector": "log"}}
    )
"""

FILL_EVENTS = """
WITH s AS (SELECT array_agg(id ORDER BY id) AS ids FROM events_source),
     t AS (SELECT %(types)s::text[] AS names)
INSERT INTO events_event (id, source_id, event_id, type, status, status_reason, payload,
                          headers, body_hash, received_at, conflicts)
SELECT md5('event' || i)::uuid,
       s.ids[1 + i %% cardinality(s.ids)],
       'evt_' || i,
       t.names[1 + (i * 7) %% cardinality(t.names)],
       CASE WHEN i %% 97 = 0 THEN 'held' WHEN i %% 89 = 0 THEN 'unrouted' ELSE 'accepted' END,
       '',
       jsonb_build_object('event_id', 'evt_' || i,
                          'type', t.names[1 + (i * 7) %% cardinality(t.names)],
                          'data', jsonb_build_object('total', i %% 1000, 'currency', 'EUR')),
       '{"content-type": "application/json", "x-api-key": "[redacted]"}'::jsonb,
       md5('body' || i) || md5('hash' || i),
       %(now)s - i * interval '2 seconds',
       0
FROM generate_series(1, %(n)s) AS i, s, t
"""

FILL_EXECUTIONS = """
WITH r AS (SELECT array_agg(id ORDER BY id) AS ids FROM connectors_route)
INSERT INTO events_execution (event_id, route_id, status, status_reason, attempts,
    total_attempts, idempotency_key, created_at, updated_at, next_attempt_at,
    lease_owner, lease_expires_at, finished_at, last_error)
SELECT e.id,
       r.ids[1 + abs(hashtext(e.event_id)) %% cardinality(r.ids)],
       CASE WHEN e.status = 'held' THEN 'held'
            WHEN abs(hashtext(e.event_id)) %% 20 = 0 THEN 'failed'
            WHEN abs(hashtext(e.event_id)) %% 50 = 1 THEN 'cancelled'
            ELSE 'succeeded' END,
       '', 1, 1, md5('key' || e.event_id), e.received_at, e.received_at, e.received_at,
       '', NULL, e.received_at + interval '50 milliseconds', ''
FROM events_event e, r
"""

FILL_ATTEMPTS = """
INSERT INTO events_attempt (execution_id, number, worker, started_at, finished_at, outcome,
    error_class, error_message, response_summary, duration_ms)
SELECT x.id, 1, 'bench-worker-' || (x.id %% 4), x.created_at + interval '10 milliseconds',
       x.created_at + interval '50 milliseconds',
       CASE x.status WHEN 'failed' THEN 'permanent_error' ELSE 'succeeded' END,
       CASE x.status WHEN 'failed' THEN 'HTTPError' ELSE '' END,
       CASE x.status WHEN 'failed' THEN '422 Unprocessable Entity' ELSE '' END,
       jsonb_build_object('status', CASE x.status WHEN 'failed' THEN 422 ELSE 200 END),
       40
FROM events_execution x
WHERE x.status IN ('succeeded', 'failed') AND x.id %% %(every)s = 0
"""


# The same rows for SQLite: a recursive CTE for generate_series, JSON arrays for the
# sources, types and routes, random hex for the UUIDs and hashes. Timestamps as Django
# stores them there: UTC text.
SQLITE_EVENTS = """
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < :n),
     numbered(i, type) AS (
         SELECT i, json_extract(:types, '$[' || ((i * 7) % json_array_length(:types)) || ']')
         FROM seq)
INSERT INTO events_event (id, source_id, event_id, type, status, status_reason, payload,
                          headers, body_hash, received_at, conflicts)
SELECT lower(hex(randomblob(16))),
       json_extract(:sources, '$[' || (i % json_array_length(:sources)) || ']'),
       'evt_' || i,
       type,
       CASE WHEN i % 97 = 0 THEN 'held' WHEN i % 89 = 0 THEN 'unrouted' ELSE 'accepted' END,
       '',
       json_object('event_id', 'evt_' || i, 'type', type,
                   'data', json_object('total', i % 1000, 'currency', 'EUR')),
       '{"content-type": "application/json", "x-api-key": "[redacted]"}',
       lower(hex(randomblob(32))),
       strftime('%Y-%m-%d %H:%M:%f', :now, '-' || (i * 2) || ' seconds'),
       0
FROM numbered
"""

SQLITE_EXECUTIONS = """
INSERT INTO events_execution (event_id, route_id, status, status_reason, attempts,
    total_attempts, idempotency_key, created_at, updated_at, next_attempt_at,
    lease_owner, lease_expires_at, finished_at, last_error)
SELECT e.id,
       json_extract(:routes, '$[' || (e.rowid * 7919 % json_array_length(:routes)) || ']'),
       CASE WHEN e.status = 'held' THEN 'held'
            WHEN e.rowid * 7919 % 20 = 0 THEN 'failed'
            WHEN e.rowid * 7919 % 50 = 1 THEN 'cancelled'
            ELSE 'succeeded' END,
       '', 1, 1, lower(hex(randomblob(16))), e.received_at, e.received_at, e.received_at,
       '', NULL, strftime('%Y-%m-%d %H:%M:%f', e.received_at, '+0.05 seconds'), ''
FROM events_event e
"""

SQLITE_ATTEMPTS = """
INSERT INTO events_attempt (execution_id, number, worker, started_at, finished_at, outcome,
    error_class, error_message, response_summary, duration_ms)
SELECT x.id, 1, 'bench-worker-' || (x.id % 4),
       strftime('%Y-%m-%d %H:%M:%f', x.created_at, '+0.01 seconds'),
       strftime('%Y-%m-%d %H:%M:%f', x.created_at, '+0.05 seconds'),
       CASE x.status WHEN 'failed' THEN 'permanent_error' ELSE 'succeeded' END,
       CASE x.status WHEN 'failed' THEN 'HTTPError' ELSE '' END,
       CASE x.status WHEN 'failed' THEN '422 Unprocessable Entity' ELSE '' END,
       json_object('status', CASE x.status WHEN 'failed' THEN 422 ELSE 200 END),
       40
FROM events_execution x
WHERE x.status IN ('succeeded', 'failed') AND x.id % :every = 0
"""


def fill(rt: Runtime, n: int, attempt_every: int):
    rt.manage("shell", "-c", SETUP.format(sources=SOURCES))
    now = datetime.now(UTC)
    if rt.kind == "sqlite":
        fill_sqlite(rt, n, attempt_every, now)
    else:
        fill_postgres(rt, n, attempt_every, now)


def fill_sqlite(rt: Runtime, n: int, attempt_every: int, now: datetime):
    """No ANALYZE afterwards: the runtime never runs one, so its planner has no statistics
    either."""
    conn = sqlite3.connect(rt.db_path, isolation_level=None)
    try:
        sources = [row[0] for row in conn.execute("SELECT id FROM events_source ORDER BY id")]
        routes = [row[0] for row in conn.execute("SELECT id FROM connectors_route ORDER BY id")]
        stamp = now.strftime("%Y-%m-%d %H:%M:%S")
        for name, sql, params in (
            (
                "events",
                SQLITE_EVENTS,
                {"n": n, "sources": json.dumps(sources), "types": json.dumps(TYPES), "now": stamp},
            ),
            ("executions", SQLITE_EXECUTIONS, {"routes": json.dumps(routes)}),
            ("attempts", SQLITE_ATTEMPTS, {"every": attempt_every}),
        ):
            started = time.monotonic()
            before = conn.total_changes  # rowcount is -1 for an INSERT led by WITH
            conn.execute("BEGIN")
            conn.execute(sql, params)
            conn.execute("COMMIT")
            rows = conn.total_changes - before
            print(f"  {rows:>9,} {name} in {time.monotonic() - started:5.1f} s", flush=True)
    finally:
        conn.close()


def fill_postgres(rt: Runtime, n: int, attempt_every: int, now: datetime):
    import psycopg

    with psycopg.connect(rt.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SET statement_timeout = '15min'")
        conn.execute("SET maintenance_work_mem = '256MB'")
        for name, sql, params in (
            ("events", FILL_EVENTS, {"types": TYPES, "now": now, "n": n}),
            ("executions", FILL_EXECUTIONS, {}),
            ("attempts", FILL_ATTEMPTS, {"every": attempt_every}),
        ):
            started = time.monotonic()
            rows = conn.execute(sql, params).rowcount
            print(f"  {rows:>9,} {name} in {time.monotonic() - started:5.1f} s", flush=True)
        conn.execute("VACUUM ANALYZE")


# Routes with no executions, so the routes list shows a page of them: http routes (a
# target host each, a sealed secret header), some with an open circuit or a kill switch.
IDLE_ROUTES = """
from connectors.models import CircuitBreaker, Route
from guardrails.killswitch import set_scoped_kill_switch
for i in range({n}):
    route = Route.objects.create(
        name=f"bench-api-{{i:03}}", event_type=f"bench.{{i}}", connector="http",
        action="post", sources=["bench-1", "bench-2"] if i % 2 else [],
        filter={{"data": {{"total": {{"$gte": i}}}}}} if i % 3 else {{}},
        params={{"url": f"https://api-{{i}}.bench.example/hook",
                 "headers": {{"Authorization": "Bearer bench-token"}}}},
    )
    if i % 7 == 0:
        CircuitBreaker.objects.create(route=route, target=f"api-{{i}}.bench.example",
                                      state="open", consecutive_failures=5)
    if i % 11 == 0:
        set_scoped_kill_switch(scope="route", name=route.name, engaged=True,
                               actor="bench", reason="bench", via="cli")
"""


def add_idle_routes(rt: Runtime, total: int):
    """Routes up to `total`, beside the ones the executions were spread over."""
    have = rt.query("SELECT count(*) FROM connectors_route")[0][0]
    if total > have:
        rt.manage("shell", "-c", IDLE_ROUTES.format(n=total - have))


class Browser:
    """Just enough of a browser for the admin: cookies, CSRF, one connection per request."""

    def __init__(self, port: int):
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            content = response.read()
            for header in response.headers.get_all("Set-Cookie") or []:
                for key, morsel in SimpleCookie(header).items():
                    self.cookies[key] = morsel.value
            return response.status, response.getheader("Location"), content
        finally:
            conn.close()

    def login(self):
        _, _, page = self.request("GET", "/admin/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urlencode(
            {"username": USER, "password": PASSWORD, "csrfmiddlewaretoken": token.decode()}
        )
        status, _, _ = self.request(
            "POST",
            "/admin/login/?next=/admin/",
            body=form,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Referer": f"http://{HOST}:{self.port}/admin/login/",
            },
        )
        if status != 302:
            raise RuntimeError(f"login failed: HTTP {status}")

    def time_get(self, path: str) -> tuple[float, int]:
        started = time.perf_counter()
        status, _, _ = self.request("GET", path)
        return (time.perf_counter() - started) * 1000, status


def pages(rt: Runtime) -> list[tuple[str, str]]:
    one = rt.query(
        "SELECT e.id, e.event_id, x.id FROM events_execution x JOIN events_event e "
        "ON e.id = x.event_id JOIN events_attempt a ON a.execution_id = x.id "
        "WHERE x.status = 'failed' ORDER BY x.id DESC LIMIT 1"
    )[0]
    event_pk, event_id, execution_pk = one
    source = rt.query("SELECT id FROM events_source WHERE name = %s", (SOURCES[3],))[0][0]
    route = rt.query("SELECT id FROM connectors_route WHERE name = 'bench-refund'")[0][0]
    today = datetime.now(UTC).date()
    week = {
        "gte": str(today - timedelta(days=7)),
        "lt": str(today + timedelta(days=1)),
    }
    ev, ex, at = "/admin/events/event/", "/admin/events/execution/", "/admin/events/attempt/"
    routes = rt.query("SELECT count(*) FROM connectors_route")[0][0]
    # What the routes list links a route's failures to: its failed executions since a day ago.
    day_ago = (datetime.now(UTC) - timedelta(hours=24)).replace(microsecond=0).isoformat()

    def q(base, **params):
        return f"{base}?{urlencode(params)}" if params else base

    return [
        ("events", q(ev)),
        ("events by source", q(ev, source__id__exact=source)),
        ("events by type", q(ev, type="refund.paid")),
        ("events by status (held)", q(ev, status__exact="held")),
        ("events, past 7 days", q(ev, received_at__gte=week["gte"], received_at__lt=week["lt"])),
        ("events, search event id", q(ev, q=event_id)),
        ("events, search event id prefix", q(ev, q=event_id[:8])),
        ("events, search prefix of every event id", q(ev, q="evt_")),
        ("events, page 50", q(ev, p=50)),
        ("executions", q(ex)),
        ("executions by status (failed)", q(ex, status__exact="failed")),
        ("executions by route", q(ex, route__id__exact=route)),
        ("executions by source", q(ex, event__source__id__exact=source)),
        ("executions by type", q(ex, type="refund.paid")),
        ("executions, past 7 days", q(ex, created_at__gte=week["gte"], created_at__lt=week["lt"])),
        ("executions, search event id", q(ex, q=event_id)),
        ("executions, search event id prefix", q(ex, q=event_id[:8])),
        ("executions, page 50", q(ex, p=50)),
        ("attempts", q(at)),
        ("attempts by outcome (permanent error)", q(at, outcome__exact="permanent_error")),
        ("attempts by route", q(at, execution__route__id__exact=route)),
        ("attempts, past 7 days", q(at, started_at__gte=week["gte"], started_at__lt=week["lt"])),
        ("attempts, search event id", q(at, q=event_id)),
        ("attempts, search event id prefix", q(at, q=event_id[:8])),
        ("dashboard (the admin index)", "/admin/"),
        (f"routes ({routes})", "/admin/connectors/route/"),
        (
            "executions by route, failed, last 24 h",
            q(ex, route__id__exact=route, status__exact="failed", created_at__gte=day_ago),
        ),
        ("event detail", f"{ev}{event_pk}/change/"),
        ("execution detail", f"{ex}{execution_pk}/change/"),
    ]


def commit() -> str:
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return sha + (" (with uncommitted changes)" if dirty else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="default: %(default)r")
    parser.add_argument(
        "--db", choices=("postgres", "sqlite"), default="postgres", help="default: %(default)r"
    )
    parser.add_argument("--runs", type=int, default=5, help="timed requests per page")
    parser.add_argument(
        "--attempt-every",
        type=int,
        default=3,
        help="one attempt for every Nth finished execution (default: %(default)r)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL server on 127.0.0.1; a new database is created there and dropped",
    )
    parser.add_argument(
        "--routes",
        type=int,
        default=50,
        help="routes on the routes list: the 6 the executions are spread over, then idle "
        "ones (default: %(default)r)",
    )
    args = parser.parse_args()

    env = {"DJANGO_SUPERUSER_PASSWORD": PASSWORD, "WEB_CONCURRENCY": "2"}
    with Runtime(args.db, pg_admin_url=args.pg_url, env=env) as rt:
        where = rt._pg_db if args.db == "postgres" else rt.db_path
        print(f"filling {args.events:,} events into {where} ...", flush=True)
        fill(rt, args.events, args.attempt_every)
        add_idle_routes(rt, args.routes)
        rt.manage("createsuperuser", "--noinput", "--username", USER, "--email", "b@example.com")
        rt.start_gunicorn(workers=2)
        browser = Browser(rt.port)
        browser.login()

        rows, slow = [], []
        for name, path in pages(rt):
            _, status = browser.time_get(path)  # warm-up
            times = []
            for _ in range(args.runs):
                ms, status = browser.time_get(path)
                if status != 200:
                    raise RuntimeError(f"{name}: HTTP {status} for {path}")
                times.append(ms)
            median, worst = statistics.median(times), max(times)
            ok = worst < GOAL_MS
            if not ok:
                slow.append(name)
            rows.append(
                f"| {name} | {median:.0f} | {worst:.0f} | < {GOAL_MS} | {'yes' if ok else 'NO'} |"
            )
            print(f"  {name}: {median:.0f} ms", file=sys.stderr, flush=True)

        print()
        database = "PostgreSQL" if args.db == "postgres" else "SQLite"
        print(f"Admin pages on {database}, {args.events:,} events, 1 execution each; ", end="")
        print(
            f"median and max of {args.runs} requests after one warm-up, gunicorn 2 sync workers."
        )
        print()
        print("| page | median ms | max ms | goal ms | met |")
        print("|---|---:|---:|---:|---|")
        print("\n".join(rows))
        print()
        print(f"commit {commit()}")
        problems = rt.log_problems()
        if problems:
            print(f"log lines with errors: {problems}")
        return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
