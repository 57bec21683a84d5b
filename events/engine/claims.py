"""Claiming: a worker takes leases on due executions straight from `events_execution`.

One claim is one transaction (the worker's; see worker.py) of four statements:
1. the routes that have due work, with how much (capped), locked on PostgreSQL with
   `FOR NO KEY UPDATE SKIP LOCKED`: two workers never count one route at once, and a
   worker skips a route another is claiming instead of waiting for it;
2. how many of those routes' executions are running now, read after the lock, so the
   count includes every claim committed before;
3. (in Python) how many to take from each route: no more than it has room for under its
   `max_in_flight`, the worker's free slots shared out so that the routes with the fewest
   actions on this worker go first, and never all of a worker's slots for one route;
4. the claim itself, one conditional UPDATE ... RETURNING that moves the chosen rows
   from queued/retrying to running with this worker's lease (on PostgreSQL the rows are
   chosen `FOR UPDATE SKIP LOCKED`).
On SQLite the transaction is `BEGIN IMMEDIATE`, so claims are serialised by the write
lock and the counts are exact there too. `max_in_flight` therefore holds exactly, across
any number of workers and hosts.

Ordering keys (docs/workflows.md): an execution with a key is claimable only at the head
of its key (HEAD below): when none of its route and key is running, and none created
before it is still waiting (queued, retrying, held) or, under `on_failure: block`, dead
(failed, blocked). The claim's UPDATE checks that on the rows as they are before it, so
one statement never takes two of a key; a partial unique index refuses a second running
one whatever happens.
"""

import datetime
import heapq
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from connectors.models import OnFailure
from events.models import (
    CLAIMABLE_STATUSES,
    KEY_HOLDING_STATUSES,
    KEY_WAITING_STATUSES,
    Execution,
    ExecutionStatus,
)


def lease_seconds() -> int:
    return settings.EXECUTION_LEASE_SECONDS


def reserve(concurrency: int) -> int:
    """Slots of a worker that one route may never take, kept for other routes."""
    return max(1, concurrency // 16) if concurrency > 1 else 0


@dataclass
class Claimed:
    """What one claim took: execution ids in claim order, and whether more was left."""

    ids: list[int] = field(default_factory=list)
    # A route had due work it was not given (max_in_flight, fairness or free slots): a
    # slot freed later may be used for it, so the worker should claim again soon.
    left_behind: bool = False


def _when(value: datetime.datetime):
    return connection.ops.adapt_datetimefield_value(value)


def _listed(statuses) -> str:
    return ", ".join(f"'{s}'" for s in statuses)


_CLAIMABLE = _listed(CLAIMABLE_STATUSES)
_TABLE = Execution._meta.db_table
_ROUTES = "connectors_route"


def head(e: str) -> str:
    """SQL that is true when the execution row `e` (a table alias) may run now under its
    ordering key: it has none, or nothing of its route and key holds it back. Served by
    the partial index events_execution_key_idx: its conditions are repeated here word for
    word (`NOT (ordering_key = '')`, the status list in its order), as SQLite uses a
    partial index only when the query repeats its terms."""
    earlier = (
        f"(p.created_at < {e}.created_at OR (p.created_at = {e}.created_at AND p.id < {e}.id))"
    )
    blocks = (
        f"EXISTS (SELECT 1 FROM {_ROUTES} q WHERE q.id = {e}.route_id "  # noqa: S608
        f"AND q.on_failure = '{OnFailure.BLOCK}')"
    )
    return (
        f"({e}.ordering_key = '' OR NOT EXISTS (SELECT 1 FROM {_TABLE} p "  # noqa: S608
        f"WHERE p.route_id = {e}.route_id AND p.ordering_key = {e}.ordering_key "
        f"AND NOT (p.ordering_key = '') AND p.status IN ({_listed(KEY_HOLDING_STATUSES)}) "
        f"AND p.id <> {e}.id AND (p.status = '{ExecutionStatus.RUNNING}' OR ({earlier} "
        f"AND (p.status IN ({_listed(KEY_WAITING_STATUSES)}) OR {blocks})))))"
    )


def due_exists(now=None) -> bool:
    """Is any execution claimable now? A read of the partial index: the idle poll, which
    takes no lock (on SQLite, not the write lock either). Executions waiting behind
    another of their ordering key are not claimable."""
    sql = (
        f"SELECT 1 FROM {_TABLE} e WHERE e.status IN ({_CLAIMABLE}) "  # noqa: S608
        f"AND e.next_attempt_at <= %s AND {head('e')} LIMIT 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_when(now or timezone.now())])
        return cursor.fetchone() is not None


def _routes_with_due_work(now, cap: int) -> list[tuple[int, int, int]]:
    """(route id, max_in_flight, due count up to cap) for routes with due executions."""
    due = (
        f"SELECT 1 FROM {_TABLE} e WHERE e.route_id = r.id AND e.status IN ({_CLAIMABLE}) "  # noqa: S608
        f"AND e.next_attempt_at <= %s AND {head('e')} LIMIT %s"
    )
    if connection.vendor == "postgresql":
        sql = (
            f"SELECT r.id, r.max_in_flight, d.n FROM {_ROUTES} r "  # noqa: S608
            f"CROSS JOIN LATERAL (SELECT COUNT(*) AS n FROM ({due}) s) d "
            "WHERE d.n > 0 ORDER BY r.id FOR NO KEY UPDATE OF r SKIP LOCKED"
        )
    else:
        sql = (
            "SELECT id, max_in_flight, n FROM ("  # noqa: S608
            f"SELECT r.id, r.max_in_flight, (SELECT COUNT(*) FROM ({due})) AS n "
            f"FROM {_ROUTES} r) WHERE n > 0 ORDER BY id"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_when(now), cap])
        return [(int(a), int(b), int(c)) for a, b, c in cursor.fetchall()]


def share(slots: int, routes, *, local: dict, per_route_cap: int) -> dict[int, int]:
    """How many to take from each route: water-filling over the free `slots`.

    `routes` is [(route id, room under max_in_flight, due count)]; `local` the actions
    this worker runs now per route. Each slot goes to the route with the fewest actions
    on this worker among those with room and due work, so one busy route does not crowd
    out the others; no route gets past `per_route_cap` on this worker.
    """
    take = dict.fromkeys((r for r, _, _ in routes), 0)
    room = {r: max(0, min(free, due, per_route_cap - local.get(r, 0))) for r, free, due in routes}
    heap = [(local.get(r, 0), r) for r, _, _ in routes if room[r] > 0]
    heapq.heapify(heap)
    while slots > 0 and heap:
        held, route_id = heapq.heappop(heap)
        take[route_id] += 1
        room[route_id] -= 1
        slots -= 1
        if room[route_id] > 0:
            heapq.heappush(heap, (held + 1, route_id))
    return {r: n for r, n in take.items() if n}


def _claim_rows(plan: dict[int, int], *, owner: str, now) -> list[int]:
    """The conditional UPDATE: chosen rows still claimable become running with our lease."""
    expires = now + datetime.timedelta(seconds=lease_seconds())
    set_clause = (
        f"SET status = '{ExecutionStatus.RUNNING}', lease_owner = %s, lease_expires_at = %s, "
        "attempts = attempts + 1, total_attempts = total_attempts + 1, updated_at = %s"
    )
    pick = (
        f"SELECT e.id FROM {_TABLE} e WHERE e.route_id = {{route}} "  # noqa: S608
        f"AND e.status IN ({_CLAIMABLE}) AND e.next_attempt_at <= %s AND {head('e')} "
        "ORDER BY e.next_attempt_at LIMIT {take}"
    )
    params: list = [owner, _when(expires), _when(now)]
    if connection.vendor == "postgresql":
        chosen = (
            "SELECT x.id FROM unnest(%s::bigint[], %s::int[]) AS r(route_id, take) "  # noqa: S608
            "CROSS JOIN LATERAL ("
            + pick.format(route="r.route_id", take="r.take")
            + " FOR UPDATE SKIP LOCKED) x"
        )
        params += [list(plan), list(plan.values()), _when(now)]
    else:
        parts = []
        for route_id, take in plan.items():
            parts.append(f"SELECT id FROM ({pick.format(route='%s', take='%s')})")  # noqa: S608
            params += [route_id, _when(now), take]
        chosen = " UNION ALL ".join(parts)
    sql = (
        f"UPDATE {_TABLE} {set_clause} WHERE id IN ({chosen}) "
        f"AND status IN ({_CLAIMABLE}) RETURNING id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [int(row_id) for (row_id,) in cursor.fetchall()]


def claim_batch(*, owner: str, slots: int, concurrency: int, local: dict, now=None) -> Claimed:
    """Lease up to `slots` due executions for `owner`, within every route's max_in_flight.

    Must run inside a transaction (the caller's), which the guardrail check and the
    attempt rows then share. Returns the ids claimed; none is claimed twice, by this or
    any other worker, because each moves from a claimable status to running in one
    conditional statement.
    """
    assert connection.in_atomic_block, "claim inside the worker's transaction"
    now = now or timezone.now()
    if slots <= 0:
        return Claimed()
    per_route_cap = concurrency - reserve(concurrency)
    # One more than the slots: a route with more due work than it is given is told apart
    # from one given all of it (left_behind), so slots freed later are refilled at once.
    routes = _routes_with_due_work(now, cap=slots + 1)
    if not routes:
        return Claimed()
    running = Execution.objects.filter(route_id__in=[r for r, _, _ in routes]).running_by_route()
    plan = share(
        slots,
        [(r, limit - running.get(r, 0), due) for r, limit, due in routes],
        local=local,
        per_route_cap=per_route_cap,
    )
    left_behind = any(plan.get(r, 0) < due for r, _, due in routes)
    if not plan:
        return Claimed(left_behind=left_behind)
    ids = _claim_rows(plan, owner=owner, now=now)
    return Claimed(ids=ids, left_behind=left_behind or len(ids) < sum(plan.values()))


def claim_one(execution_id: int, *, owner: str, now=None) -> bool:
    """Lease this one execution if it is claimable now (for running it in-process:
    tests and one-off use). It does not wait for room under max_in_flight, but does wait
    its turn under its ordering key. Returns False if another worker claimed it first, or
    it is not claimable now."""
    now = now or timezone.now()
    expires = now + datetime.timedelta(seconds=lease_seconds())
    sql = (
        f"UPDATE {_TABLE} SET status = '{ExecutionStatus.RUNNING}', lease_owner = %s, "  # noqa: S608
        "lease_expires_at = %s, attempts = attempts + 1, "
        "total_attempts = total_attempts + 1, updated_at = %s "
        f"WHERE id = %s AND status IN ({_CLAIMABLE}) AND next_attempt_at <= %s "
        f"AND {head(_TABLE)}"
    )
    params = [owner, _when(expires), _when(now), execution_id, _when(now)]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1
