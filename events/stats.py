from django.db.models import Count, Min
from django.utils import timezone

from events.models import Event, EventStatus, Execution, ExecutionStatus
from events.workers import live_workers


def counts_by_status() -> dict:
    """Events and executions by status, every status present (zero when none)."""
    events = dict.fromkeys(EventStatus.values, 0)
    events.update(Event.objects.order_by().values_list("status").annotate(n=Count("pk")))
    executions = dict.fromkeys(ExecutionStatus.values, 0)
    executions.update(Execution.objects.order_by().values_list("status").annotate(n=Count("pk")))
    return {"events": events, "executions": executions}


def oldest_queued_age_seconds(now=None) -> float | None:
    """How long the longest-waiting queued execution has waited to be claimed, in
    seconds (since it was created or last queued again); None when nothing is queued."""
    oldest = Execution.objects.queued().aggregate(at=Min("updated_at"))["at"]
    if oldest is None:
        return None
    return max(0.0, ((now or timezone.now()) - oldest).total_seconds())


def workers_summary() -> list[dict]:
    """The live workers, newest heartbeat first."""
    return [
        {
            "id": w.worker_id,
            "hostname": w.hostname,
            "pid": w.pid,
            "engine": w.engine,
            "started_at": w.started_at.isoformat(),
            "last_seen_at": w.last_seen_at.isoformat(),
            "executions_run": w.executions_run,
        }
        for w in live_workers()
    ]


def starts_since(*, since, limit: int, route_id=None, connector=None) -> list:
    """Start times of attempts since `since` (oldest first, at most the `limit` newest)
    for one route or one connector: what rate limits count."""
    from events.models import Attempt

    attempts = Attempt.objects.filter(started_at__gte=since)
    if route_id is not None:
        attempts = attempts.filter(execution__route_id=route_id)
    if connector is not None:
        attempts = attempts.filter(execution__route__connector=connector)
    newest = list(attempts.order_by("-started_at").values_list("started_at", flat=True)[:limit])
    return sorted(newest)


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
    from connectors import circuits
    from guardrails.models import KillSwitch, RuntimeState

    state = RuntimeState.current()
    counts = counts_by_status()
    return {
        "mode": state.mode,
        "kill_switch": state.kill_switch_json(),
        "processed": counts["executions"]["succeeded"],
        **counts,
        "workers": workers_summary(),
        "circuits": circuits.summary(),
        "guardrail_decisions": decisions_by_reason(),
        "scoped_kill_switches": [
            {"scope": k.scope, "name": k.name, "reason": k.reason, "changed_by": k.changed_by}
            for k in KillSwitch.objects.filter(engaged=True)
        ],
    }
