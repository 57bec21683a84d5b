"""What operators do to executions and events: release, replay, cancel. Each is audited.

The admin, the CLI and the API all call these, so they behave the same everywhere.
"""

from django.db import transaction
from django.utils import timezone

from connectors.models import Route
from events.engine import wake
from events.models import (
    RELEASABLE_STATUSES,
    REPLAYABLE_STATUSES,
    Event,
    EventStatus,
    Execution,
    ExecutionStatus,
)
from events.operate import retention
from guardrails import audit, policy

CHUNK = 1000


def _ids(queryset):
    return list(queryset.order_by("pk").values_list("pk", flat=True))


def requeue(ids, *, from_statuses, note: str, progress=None) -> list[int]:
    """Queue these executions again, keeping their idempotency keys; returns those moved.
    Not audited: callers record one audit entry for the whole operation.

    Executions whose event was pruned (its payload is gone, docs/retention.md) are never
    queued again: their action would run without its payload. `progress(done, total)` is
    called after each chunk."""

    moved = []
    now = timezone.now()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        with transaction.atomic():
            candidates = list(
                Execution.objects.filter(pk__in=chunk, status__in=from_statuses)
                .exclude(retention.stripped("event__"))
                .values_list("pk", "event_id")
            )
            pks = [pk for pk, _ in candidates]
            Execution.objects.filter(pk__in=pks, status__in=from_statuses).update(
                status=ExecutionStatus.QUEUED,
                attempts=0,
                next_attempt_at=now,
                finished_at=None,
                lease_owner="",
                lease_expires_at=None,
                status_reason=note,
                updated_at=now,
            )
            Event.objects.filter(
                pk__in={event_id for _, event_id in candidates},
                status__in=[EventStatus.HELD, EventStatus.BLOCKED],
            ).update(status=EventStatus.ACCEPTED)
            if pks:
                wake.notify()
        moved.extend(pks)
        if progress:
            progress(start + len(chunk), len(ids))
    return moved


def replayable_statuses(*, force: bool = False) -> list[str]:
    """What replay picks up: succeeded executions only when forced."""
    return REPLAYABLE_STATUSES + ([ExecutionStatus.SUCCEEDED] if force else [])


def _requeue_audited(
    queryset, statuses, *, verb: str, action: str, actor, via, reason, progress=None, **details
):
    ids = _ids(queryset.filter(status__in=statuses))
    moved = requeue(
        ids,
        from_statuses=statuses,
        note=f"{verb} by {audit.actor_name(actor)}",
        progress=progress,
    )
    audit.record(
        actor=actor,
        via=via,
        action=action,
        target=_target(moved),
        reason=reason,
        count=len(moved),
        executions=moved[:AUDITED_IDS],
        **details,
    )
    return len(moved)


def release_held(queryset, *, actor, via, reason: str = "") -> int:
    """Queue held executions again. Returns how many were released."""
    return _requeue_audited(
        queryset,
        RELEASABLE_STATUSES,
        verb="released",
        action="executions.release",
        actor=actor,
        via=via,
        reason=reason,
    )


def replay(queryset, *, actor, via, force: bool = False, reason: str = "", progress=None) -> int:
    """Run executions again as a new attempt with the same idempotency key.

    Failed, cancelled, blocked, held and dry-run executions are replayed; succeeded ones
    only with force=True; queued, retrying and running ones, and those whose event was
    pruned, are left alone. Returns how many. `progress(done, total)` follows the chunks.
    """
    return _requeue_audited(
        queryset,
        replayable_statuses(force=force),
        verb="replayed",
        action="executions.replay",
        actor=actor,
        via=via,
        reason=reason,
        progress=progress,
        force=force,
    )


def cancel_ids(ids, *, note: str) -> int:
    """Cancel those of these executions that have not started; returns how many. Not
    audited: callers record one audit entry for the whole operation."""
    now = timezone.now()
    cancelled = 0
    for start in range(0, len(ids), CHUNK):
        cancelled += (
            Execution.objects.filter(pk__in=ids[start : start + CHUNK])
            .cancellable()
            .update(
                status=ExecutionStatus.CANCELLED,
                status_reason=note,
                finished_at=now,
                updated_at=now,
            )
        )
    return cancelled


def cancel(queryset, *, actor, via, reason: str = "") -> int:
    """Cancel executions that have not started (queued, retrying, held), and dead ones
    (failed, blocked) that hold back their ordering key. Returns how many."""
    ids = _ids(queryset.cancellable())
    cancelled = cancel_ids(ids, note=f"cancelled by {audit.actor_name(actor)}")
    audit.record(
        actor=actor,
        via=via,
        action="executions.cancel",
        target=_target(ids),
        reason=reason,
        count=cancelled,
        executions=ids[:AUDITED_IDS],
    )
    return cancelled


def route_event(event: Event) -> list[int]:
    """Create executions for the routes that match an event now and have none yet.

    How an `unrouted` event runs once a route for its type exists. Returns the new
    execution ids (claimable once this commits).
    """

    if retention.is_stripped(event):
        return []  # pruned: its payload is gone, so nothing may run for it any more
    decision = policy.decide_ingest(source=event.source, event_type=event.type)
    if decision.verdict is policy.Verdict.BLOCK:
        return []  # still not allowed: it stays blocked, with the reason
    now = timezone.now()
    with transaction.atomic():
        have = set(event.executions.values_list("route_id", flat=True))
        matched = Route.objects.matching(event.source.name, event.type, event.subject())
        new = [Execution.new(event, route, now=now) for route in matched if route.pk not in have]
        Execution.objects.bulk_create(new, ignore_conflicts=True)
        ids = list(
            event.executions.filter(route_id__in=[e.route_id for e in new]).values_list(
                "pk", flat=True
            )
        )
        fields = {}
        recorded = sorted({*(event.matched_routes or []), *(route.pk for route in matched)})
        if recorded != event.matched_routes:
            fields["matched_routes"] = event.matched_routes = recorded
        if ids and event.status != EventStatus.ACCEPTED:
            fields.update(status=EventStatus.ACCEPTED, status_reason="")
        if fields:
            Event.objects.filter(pk=event.pk).update(**fields)
        if ids:
            wake.notify()
    return ids


def replay_events(queryset, *, actor, via, reason: str = "") -> int:
    """Route events (typically `unrouted` ones) to routes added since; audited."""
    created = 0
    events = list(queryset)
    for event in events:
        created += len(route_event(event))
    audit.record(
        actor=actor,
        via=via,
        action="events.route",
        target=_target([e.pk for e in events]),
        reason=reason,
        count=created,
    )
    return created


# An audit entry lists up to this many execution ids in its details (what an execution's
# timeline reads); a bulk operation keeps all of its own.
AUDITED_IDS = 1000


def _target(ids) -> str:
    ids = list(ids)
    shown = ", ".join(str(i) for i in ids[:20])
    return shown + (f" (+{len(ids) - 20} more)" if len(ids) > 20 else "")
