"""Routing benchmark: what route filters cost `POST /webhook`.

Run from the project root:  .venv/bin/python bench/routing.py [--seconds 3] [--db sqlite]

The goal (the routing issue): with 50 routes carrying filters, ingest stays within 10 % of
one route, that is the 50-filter row's requests/s is at least 0.90 x the reference row's.

On SQLite and on PostgreSQL (each a fresh database, dropped afterwards), against gunicorn
with one sync worker and no execution worker (executions are created and queued, not
run), the same requests are sent under each set of routes: new `order.created` events
from the demo API-key source on `/webhook`, each with a small order (total, currency,
customer, lines) and an `X-Tenant` header. Event n belongs to tenant k = n % 50. The
scenarios, each a closed-loop flood from a few client threads after a short warm-up:

- reference: one `order.created` route, no filter, no source scope (every event matches);
- 50 `order.created` routes scoped to the source, each with a filter of 3 to 4 conditions
  (`$gte` / `$lt` on the total, `$in` on the customer id, nested equality, a list that must
  hold some line skus, `$or`, headers, `$startsWith`), each naming a different tenant k, so
  exactly one takes each event and the others reject it: the same one execution per event,
  the same writes, as the reference;
- 50 routes of other event types (`other.type.N`) and the reference route: type matching;
- the reference again, to show the drift of the run (noise on a small machine).

Routes are replaced between scenarios (the old ones disabled; every change gives the
runtime a new config token, so gunicorn reloads them). After each scenario the database is
checked: every event of it has exactly one execution, on the route expected for its tenant.

Prints a markdown table (requests/s, p50 and p99 latency, ratio to the reference), the
checks, the goal met or missed, the time `lib.filters` takes in-process to match one event
against each scenario's routes (the same documents and events), and the git commit. All
traffic goes to 127.0.0.1; every loop is bounded in time and count.
"""

import argparse
import json
import sys
import time

from edge import EVENT_TYPE, PG_ADMIN_URL, commit, measure, print_table
from harness import API_KEY, ROOT, Runtime

sys.path.insert(0, str(ROOT))
from lib import filters  # pure modules: no Django setup needed
from lib.patterns import type_matches

SOURCE = "demo"  # the demo fixture's API-key source; API_KEY is its key
TENANTS = 50
TIERS = ("bronze", "silver", "gold", "platinum")
GOAL = 0.90  # the 50-filter row at least 0.90 x the reference's requests/s


# -- the events ----------------------------------------------------------------------------


def order(k: int) -> dict:
    """The order of tenant k: every field a filter looks at differs by tenant."""
    return {
        "total": 1000 + 100 * k,  # tenant 32: 4200
        "currency": "EUR",
        "customer": {"id": f"cus_{k}", "tier": TIERS[k % len(TIERS)]},
        "lines": [{"sku": f"A{k}", "qty": 2}, {"sku": "B7", "qty": 1}],
    }


def tenant_headers(k: int) -> dict:
    return {"X-Tenant": f"t-{k}", "X-Shop-Region": "eu-west-1"}


def request_maker(tag: str):
    """n -> (path, body, headers): a new event of tenant n % 50 (edge.flood's maker)."""

    def make(n):
        k = n % TENANTS
        body = {"event_id": f"{tag}-{n}", "type": EVENT_TYPE, "data": order(k)}
        return "/webhook", json.dumps(body).encode(), {"X-API-Key": API_KEY, **tenant_headers(k)}

    return make


# -- the routes ----------------------------------------------------------------------------


def tenant_filter(k: int) -> dict:
    """A filter only tenant k's events pass; five shapes in turn. A filter's `data` is the
    whole JSON body, so the order's fields are under data.data."""
    shape = k % 5
    if shape == 0:  # a window on the total, and equality: rejected at the $lt for most
        window = {"$gte": 1000 + 100 * k, "$lt": 1100 + 100 * k}
        return {"data": {"data": {"currency": "EUR", "total": window}}}
    if shape == 1:  # $in on the customer id, nested equality, a header $startsWith
        return {
            "data": {
                "data": {
                    "customer": {
                        "id": {"$in": [f"cus_{k}", f"cus_{k + 100}", f"cus_{k + 200}"]},
                        "tier": TIERS[k % len(TIERS)],
                    }
                }
            },
            "headers": {"x-shop-region": {"$startsWith": "eu-"}},
        }
    if shape == 2:  # the lines must hold both skus, and a minimum total
        return {
            "data": {
                "data": {
                    "lines": [{"sku": f"A{k}"}, {"sku": "B7"}],
                    "total": {"$gte": 500 + 10 * k},
                }
            }
        }
    if shape == 3:  # $or of a header and a nested customer, and $in on the currency
        return {
            "$or": [
                {"headers": {"x-tenant": f"t-{k}"}},
                {"data": {"data": {"customer": {"id": f"cus_{k}", "tier": "vip"}}}},
            ],
            "data": {"data": {"currency": {"$in": ["EUR", "USD", "GBP"]}}},
        }
    # shape 4: conditions every event passes, then the header that rejects the others
    return {
        "data": {"data": {"customer": {"id": {"$startsWith": "cus_"}}, "total": {"$gte": 1000}}},
        "headers": {"x-tenant": f"t-{k}"},
    }


def route(name: str, event_type: str, *, sources=(), filter_=None) -> dict:
    return {
        "name": name,
        "event_type": event_type,
        "sources": list(sources),
        "filter": filter_ or {},
        "connector": "log",
        "action": "record",
        "params": {"message": name},
    }


def scenarios() -> list[tuple[str, str, list[dict], object]]:
    """(tag, label, routes, expected route name for tenant k) per scenario, in order. The
    tag prefixes the scenario's route names and event ids."""
    tenants = [
        route(f"filters-tenant-{k:02d}", EVENT_TYPE, sources=[SOURCE], filter_=tenant_filter(k))
        for k in range(TENANTS)
    ]
    types = [route(f"types-other-{i:02d}", f"other.type.{i}") for i in range(TENANTS)]
    return [
        (
            "ref",
            "1 route, no filter (reference)",
            [route("ref-all-orders", EVENT_TYPE)],
            lambda k: "ref-all-orders",
        ),
        (
            "filters",
            f"{TENANTS} routes with filters, 1 matches",
            tenants,
            lambda k: f"filters-tenant-{k:02d}",
        ),
        (
            "types",
            f"{TENANTS} routes of other types + 1 route",
            [*types, route("types-all-orders", EVENT_TYPE)],
            lambda k: "types-all-orders",
        ),
        (
            "again",
            "1 route, no filter (reference, again)",
            [route("again-all-orders", EVENT_TYPE)],
            lambda k: "again-all-orders",
        ),
    ]


CONFIGURE = """
import json
from connectors.models import Route
Route.objects.update(enabled=False)
for spec in json.loads({specs!r}):
    Route.objects.create(**spec)
"""


def configure(rt: Runtime, routes: list[dict]) -> None:
    """Disable every route (executions keep theirs) and create these."""
    rt.manage("shell", "-c", CONFIGURE.format(specs=json.dumps(routes)))


def check(rt: Runtime, tag: str, expected) -> dict:
    """Every event of the scenario (`tag-n`): exactly one execution, on expected(n % 50)."""
    rows = rt.query(
        "SELECT e.event_id, r.name FROM events_event e "
        "LEFT JOIN events_execution x ON x.event_id = e.id "
        "LEFT JOIN connectors_route r ON r.id = x.route_id WHERE e.event_id LIKE %s",
        (f"{tag}-%",),
    )
    routes: dict[str, list] = {}
    for event_id, name in rows:
        routes.setdefault(event_id, []).append(name)
    wrong = sum(
        1
        for event_id, names in routes.items()
        if names != [expected(int(event_id.rsplit("-", 1)[1]) % TENANTS)]
    )
    executions = sum(1 for names in routes.values() for name in names if name is not None)
    return {"events": len(routes), "executions": executions, "wrong": wrong}


# -- in-process matching -------------------------------------------------------------------


def subject(k: int) -> dict:
    """What ingestion matches tenant k's event against (headers as http.client sends them)."""
    headers = {
        "host": "127.0.0.1",
        "accept-encoding": "identity",
        "content-type": "application/json",
        "x-api-key": "[redacted]",
        **{name.lower(): value for name, value in tenant_headers(k).items()},
    }
    body = {"event_id": f"in-process-{k}", "type": EVENT_TYPE, "data": order(k)}
    return filters.subject(data=body, headers=headers, source=SOURCE, event_type=EVENT_TYPE)


def matcher(routes: list[dict]):
    """subject -> names of the routes that take it, as Route.takes decides."""
    compiled = [
        (r["name"], r["event_type"], r["sources"], filters.compile_filter(r["filter"]))
        for r in routes
    ]

    def matching(subj):
        return [
            name
            for name, pattern, sources, flt in compiled
            if type_matches(pattern, subj["type"])
            and (not sources or subj["source"] in sources)
            and (flt is None or flt.matches(subj))
        ]

    return matching


def in_process(plan, events: int = 5000) -> list[tuple[str, float]]:
    """Microseconds to match one event against each scenario's routes (mean of `events`)."""
    subjects = [subject(n % TENANTS) for n in range(events)]
    timed = []
    for _tag, label, routes, expected in plan:
        matching = matcher(routes)
        for k in range(TENANTS):  # the scenario's promise, checked before it is timed
            found = matching(subjects[k])
            if found != [expected(k)]:
                raise AssertionError(f"{label}: tenant {k} is taken by {found}")
        started = time.perf_counter()
        for subj in subjects:
            matching(subj)
        timed.append((label, (time.perf_counter() - started) / events * 1e6))
    return timed


# -- the run -------------------------------------------------------------------------------


def bench(kind: str, plan, seconds: float, threads: int) -> tuple[list[dict], list[dict]]:
    env = {"WEB_CONCURRENCY": "1", "GUNICORN_MAX_REQUESTS": "0"}
    rows, checks = [], []
    with Runtime(kind, pg_admin_url=PG_ADMIN_URL, env=env) as rt:
        rt.start_gunicorn(workers=1)
        for tag, label, routes, expected in plan:
            configure(rt, routes)
            rows.append(
                measure(rt.port, request_maker(tag), label, 202, threads=threads, seconds=seconds)
            )
            checks.append({"label": label, **check(rt, tag, expected)})
            print(f"{kind}: {label}: {rows[-1]['rate']:.0f}/s", file=sys.stderr, flush=True)
        problems = rt.log_problems()
        if problems:
            print(f"{kind}: log lines with ERROR or a traceback: {problems}", file=sys.stderr)
    return rows, checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=3.0, help="per scenario (max 30)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (max 16)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    seconds, threads = min(args.seconds, 30), min(args.threads, 16)
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]

    plan = scenarios()
    matching = in_process(plan)  # also checks that each tenant's event takes one route
    results, checks = {}, {}
    for kind in kinds:
        results[kind], checks[kind] = bench(kind, plan, seconds, threads)

    print_table(results, threads=threads, seconds=seconds)
    print("\n| database | scenario | events | executions | not exactly 1, on its route |")
    print("|---|---|---:|---:|---:|")
    for kind, rows in checks.items():
        for row in rows:
            print(
                f"| {kind} | {row['label']} | {row['events']} | {row['executions']} | "
                f"{row['wrong']} |"
            )
    met = True
    print()
    for kind, rows in results.items():
        ratio = rows[1]["rate"] / (rows[0]["rate"] or float("nan"))
        ok = ratio >= GOAL and not any(row["wrong"] for row in checks[kind])
        met &= ok
        print(
            f"goal ({kind}): {TENANTS} filtered routes at least {GOAL:.2f} x the reference: "
            f"{ratio:.2f}, {'met' if ok else 'missed'}"
        )
    print("\nroute matching in-process (lib.filters, the same routes and events), per event:")
    for label, micros in matching:
        print(f"- {label}: {micros:.1f} µs")
    print(f"\ncommit {commit()}")
    return 1 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
