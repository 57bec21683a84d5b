from django.db.models import Count, Min, Q
from django.utils import timezone

from connectors import circuits
from connectors.models import Route
from events.engine.heartbeat import live_workers
from events.models import Event, EventStatus, Execution, ExecutionStatus
from guardrails.models import KillSwitch, RuntimeState


def counts_by_status() -> dict:
    """Events and executions by status, every status present (zero when none)."""
    events = dict.fromkeys(EventStatus.values, 0)
    events.update(Event.objects.order_by().values_list("status").annotate(n=Count("pk")))
    executions = dict.fromkeys(ExecutionStatus.values, 0)
    executions.update(Execution.objects.order_by().values_list("status").annotate(n=Count("pk")))
    return {"events": events, "executions": executions}


def queue_wait(now=None) -> dict:
    """What waits for a worker now: `depth`, the executions a worker may claim (queued, or
    retrying and past their backoff), and `oldest_age_seconds`, how long the longest-waiting
    of them has waited (None when none): a queued one since it entered `queued`
    (updated_at), a retrying one since it became due. The dashboard, /metrics and
    `manage.py status` all show this.

    Only waiting rows are read (the partial index on claimable executions)."""
    now = now or timezone.now()
    waiting = Execution.objects.due(now).aggregate(
        depth=Count("pk"),
        queued_since=Min("updated_at", filter=Q(status=ExecutionStatus.QUEUED)),
        due_since=Min("next_attempt_at", filter=Q(status=ExecutionStatus.RETRYING)),
    )
    since = [t for t in (waiting["queued_since"], waiting["due_since"]) if t is not None]
    return {
        "depth": waiting["depth"],
        "oldest_age_seconds": max(0.0, (now - min(since)).total_seconds()) if since else None,
    }


def approval_wait(now=None) -> dict:
    """What waits for an operator's approval: `awaiting`, how many, and
    `oldest_age_seconds`, how long the longest-waiting has waited since it began to wait
    (created or replayed; None when none). The dashboard, /metrics and `manage.py
    status` all show this. Only awaiting rows are read (their partial index)."""
    now = now or timezone.now()
    waiting = Execution.objects.awaiting_approval().aggregate(
        awaiting=Count("pk"), since=Min("updated_at")
    )
    since = waiting["since"]
    return {
        "awaiting": waiting["awaiting"],
        "oldest_age_seconds": max(0.0, (now - since).total_seconds()) if since else None,
    }


def workers_summary() -> list[dict]:
    """The live workers, newest heartbeat first."""
    return [
        {
            "id": w.worker_id,
            "hostname": w.hostname,
            "pid": w.pid,
            "concurrency": w.concurrency,
            "in_flight": w.in_flight,
            "claims": w.claims,
            "started_at": w.started_at.isoformat(),
            "last_seen_at": w.last_seen_at.isoformat(),
            "executions_run": w.executions_run,
        }
        for w in live_workers()
    ]


def in_flight_by_route() -> list[dict]:
    """Running executions per route over all workers, next to each route's max_in_flight:
    which destinations are holding the worker slots now."""
    running = Execution.objects.running_by_route()
    routes = Route.objects.filter(pk__in=running).order_by("name")
    return [
        {"route": r.name, "in_flight": running[r.pk], "max_in_flight": r.max_in_flight}
        for r in routes
    ]


def decisions_by_reason(limit: int = 20) -> list[dict]:
    """Guardrail decisions standing now, counted by reason: held and blocked events and
    executions, and executions deferred by a rate limit or an open circuit."""
    rows = []
    for model, statuses in (
        (Event, [EventStatus.HELD, EventStatus.BLOCKED]),
        (Execution, [ExecutionStatus.HELD, ExecutionStatus.BLOCKED, ExecutionStatus.RETRYING]),
    ):
        counted = (
            model.objects.filter(status__in=statuses)
            .exclude(status_reason="")
            .order_by()
            .values("status", "status_reason")
            .annotate(n=Count("pk"))
            .order_by("-n")[:limit]
        )
        kind = model._meta.model_name
        rows.extend(
            {"of": kind, "status": r["status"], "reason": r["status_reason"], "count": r["n"]}
            for r in counted
            if kind == "event"
            or r["status"] != "retrying"
            or r["status_reason"].startswith(("rate limit", "circuit"))
        )
    return sorted(rows, key=lambda r: -r["count"])[:limit]


def report() -> dict:
    """Everything an operator asks first, as `/admin/status` and `manage.py status --json`
    show it: mode and kill switches, counts, live workers, open circuits, decisions."""

    state = RuntimeState.current()
    counts = counts_by_status()
    waiting = queue_wait()
    approval = approval_wait()
    return {
        "mode": state.mode,
        "kill_switch": state.kill_switch_json(),
        "processed": counts["executions"]["succeeded"],
        **counts,
        "queue_depth": waiting["depth"],
        "oldest_queued_seconds": waiting["oldest_age_seconds"],
        "awaiting_approval": approval["awaiting"],
        "oldest_awaiting_approval_seconds": approval["oldest_age_seconds"],
        "workers": workers_summary(),
        "in_flight_by_route": in_flight_by_route(),
        "circuits": circuits.summary(),
        "guardrail_decisions": decisions_by_reason(),
        "scoped_kill_switches": [
            {"scope": k.scope, "name": k.name, "reason": k.reason, "changed_by": k.changed_by}
            for k in KillSwitch.objects.engaged()
        ],
    }
