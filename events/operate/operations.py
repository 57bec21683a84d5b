"""What operators do to executions and events: release, replay, cancel, approve, reject.
Each is audited.

The admin, the CLI and the API all call these, so they behave the same everywhere.
"""

import logging
from collections import defaultdict

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from connectors.models import Route
from events.engine import wake
from events.models import (
    APPROVABLE_STATUSES,
    RELEASABLE_STATUSES,
    REPLAYABLE_STATUSES,
    Event,
    EventStatus,
    Execution,
    ExecutionStatus,
)
from events.operate import retention
from guardrails import audit, policy
from guardrails.killswitch import ReasonRequired

logger = logging.getLogger(__name__)

CHUNK = 1000


def _ids(queryset):
    return list(queryset.order_by("pk").values_list("pk", flat=True))


def requeue(
    ids,
    *,
    from_statuses,
    note: str,
    progress=None,
    ask_approval: bool = False,
    emit_again: bool = False,
) -> list[int]:
    """Queue these executions again, keeping their idempotency keys; returns those moved.
    Not audited: callers record one audit entry for the whole operation.

    With `ask_approval` (replay), those whose route requires approval wait for it again
    (awaiting_approval, with a new deadline) instead of being queued: an approval is for
    one run. With `emit_again` (replay --emit-again), a chained step's next success emits
    a new follow-up event (docs/workflows.md); otherwise it emits the one it did before,
    which is a duplicate and stores nothing. Executions whose event was pruned (its
    payload is gone, docs/retention.md) are never queued again: their action would run
    without its payload.
    `progress(done, total)` is called after each chunk."""

    moved = []
    now = timezone.now()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        with transaction.atomic():
            candidates = list(
                Execution.objects.filter(pk__in=chunk, status__in=from_statuses)
                .exclude(retention.stripped("event__"))
                .values_list("pk", "event_id", "route_id")
            )
            queued, waiting = _split_by_approval(candidates, ask_approval, now)
            changes = {
                "attempts": 0,
                "finished_at": None,
                "lease_owner": "",
                "lease_expires_at": None,
                "updated_at": now,
            }
            if emit_again:
                changes["emit_generation"] = F("emit_generation") + 1
            Execution.objects.filter(pk__in=queued, status__in=from_statuses).update(
                status=ExecutionStatus.QUEUED,
                next_attempt_at=now,
                expires_at=None,
                status_reason=note,
                **changes,
            )
            for deadline, pks in waiting.items():
                Execution.objects.filter(pk__in=pks, status__in=from_statuses).update(
                    status=ExecutionStatus.AWAITING_APPROVAL,
                    next_attempt_at=now,
                    expires_at=deadline,
                    status_reason=f"{note}; awaiting approval",
                    **changes,
                )
            Event.objects.filter(
                pk__in={event_id for _, event_id, _ in candidates},
                status__in=[EventStatus.HELD, EventStatus.BLOCKED],
            ).update(status=EventStatus.ACCEPTED)
            if queued:
                wake.notify()
        moved.extend(pk for pk, _, _ in candidates)
        if progress:
            progress(start + len(chunk), len(ids))
    return moved


def _split_by_approval(candidates, ask_approval: bool, now):
    """(ids to queue, {deadline: ids to await approval until it}) of (pk, event, route)."""
    if not ask_approval:
        return [pk for pk, _, _ in candidates], {}
    routes = dict(
        Route.objects.filter(
            pk__in={r for _, _, r in candidates}, requires_approval=True
        ).values_list("pk", "approval_timeout")
    )
    queued, waiting = [], defaultdict(list)
    for pk, _, route_id in candidates:
        if route_id in routes:
            timeout = routes[route_id]
            waiting[now + timeout if timeout else None].append(pk)
        else:
            queued.append(pk)
    return queued, waiting


def replayable_statuses(*, force: bool = False) -> list[str]:
    """What replay picks up: succeeded executions only when forced."""
    return REPLAYABLE_STATUSES + ([ExecutionStatus.SUCCEEDED] if force else [])


def _requeue_audited(
    queryset,
    statuses,
    *,
    verb: str,
    action: str,
    actor,
    via,
    reason,
    progress=None,
    ask_approval=False,
    emit_again=False,
    note="",
    **details,
):
    ids = _ids(queryset.filter(status__in=statuses))
    moved = requeue(
        ids,
        from_statuses=statuses,
        note=note or f"{verb} by {audit.actor_name(actor)}",
        progress=progress,
        ask_approval=ask_approval,
        emit_again=emit_again,
    )
    if emit_again:
        details["emit_again"] = True
    _audit(action, moved, len(moved), actor=actor, via=via, reason=reason, **details)
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


def replay(
    queryset,
    *,
    actor,
    via,
    force: bool = False,
    reason: str = "",
    progress=None,
    emit_again: bool = False,
) -> int:
    """Run executions again as a new attempt with the same idempotency key.

    Failed, cancelled, blocked, held, dry-run, rejected and expired executions are
    replayed; succeeded ones only with force=True; queued, retrying, running and awaiting
    ones, and those whose event was pruned, are left alone. Those of a route that requires
    approval wait for approval again. A chained step emits its follow-up event again only
    with emit_again. Returns how many. `progress(done, total)` follows the chunks.
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
        ask_approval=True,
        emit_again=emit_again,
        force=force,
    )


def required_reason(reason: str) -> str:
    """The reason stripped; raises ReasonRequired if there is none (approve, reject)."""
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("A reason is required; it goes in the audit log.")
    return reason


def approve(queryset, *, actor, via, reason: str) -> int:
    """Queue the executions awaiting approval in `queryset`: due now, they run through the
    normal path (guardrails, the kill switch included, are checked when a worker claims
    them). Raises ReasonRequired without a reason. Returns how many were approved."""
    reason = required_reason(reason)
    return _requeue_audited(
        queryset,
        APPROVABLE_STATUSES,
        verb="approved",
        action="executions.approve",
        actor=actor,
        via=via,
        reason=reason,
        note=approved_note(audit.actor_name(actor)),
    )


def approved_note(actor_name: str) -> str:
    return f"approved by {actor_name}"


def rejected_note(actor_name: str, reason: str) -> str:
    return f"rejected by {actor_name}: {reason}"


def reject_ids(ids, *, note: str) -> int:
    """End those of these executions still awaiting approval as rejected; returns how
    many. Not audited: callers record one audit entry for the whole operation."""
    now = timezone.now()
    rejected = 0
    for start in range(0, len(ids), CHUNK):
        rejected += Execution.objects.filter(
            pk__in=ids[start : start + CHUNK], status__in=APPROVABLE_STATUSES
        ).update(
            status=ExecutionStatus.REJECTED,
            status_reason=note[:2000],
            finished_at=now,
            updated_at=now,
        )
    return rejected


def reject(queryset, *, actor, via, reason: str) -> int:
    """Reject the executions awaiting approval in `queryset`: they end `rejected` and never
    run. Raises ReasonRequired without a reason. Returns how many were rejected."""
    reason = required_reason(reason)
    ids = _ids(queryset.filter(status__in=APPROVABLE_STATUSES))
    rejected = reject_ids(ids, note=rejected_note(audit.actor_name(actor), reason))
    _audit("executions.reject", ids, rejected, actor=actor, via=via, reason=reason)
    return rejected


# The expiry sweep ends at most this many executions per call; the worker's side thread
# calls it again while it finds some, then once a second.
EXPIRE_BATCH = 500


def expire_approvals(now=None) -> int:
    """End up to EXPIRE_BATCH executions still awaiting approval past their deadline as
    `expired`, with the reason "not approved within <timeout>", oldest deadline first.
    Returns how many expired (0: none is left past its deadline)."""
    now = now or timezone.now()
    rows = list(
        Execution.objects.approval_expired(now)
        .order_by("expires_at")
        .values_list("pk", "expires_at", "updated_at")[:EXPIRE_BATCH]
    )
    by_reason = defaultdict(list)
    for pk, expires_at, waiting_since in rows:
        # It has not changed since it began to wait: created, or replayed.
        by_reason[f"not approved within {_duration(expires_at - waiting_since)}"].append(pk)
    expired = 0
    for note, pks in by_reason.items():
        # Conditional: one approved or rejected meanwhile is left as the operator left it.
        expired += (
            Execution.objects.approval_expired(now)
            .filter(pk__in=pks)
            .update(
                status=ExecutionStatus.EXPIRED, status_reason=note, finished_at=now, updated_at=now
            )
        )
    if expired:
        logger.info("%d execution(s) expired awaiting approval", expired)
    return expired


def _duration(delta) -> str:
    """A timeout in words: 45 s, 30 min, 2 h 30 min, 1 d 2 h."""
    seconds = max(0, round(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d" * bool(days), f"{hours} h" * bool(hours)]
    parts += [f"{minutes} min" * bool(minutes), f"{secs} s" * bool(secs)]
    return " ".join(p for p in parts if p) or "0 s"


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
    _audit("executions.cancel", ids, cancelled, actor=actor, via=via, reason=reason)
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
        if any(e.status == ExecutionStatus.QUEUED for e in new):
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


def _audit(action: str, ids, count: int, *, actor, via, reason: str, **details) -> None:
    """One audit entry for an act on these executions: who, why, how many, and their ids
    (the first AUDITED_IDS), which an execution's timeline reads."""
    audit.record(
        actor=actor,
        via=via,
        action=action,
        target=_target(ids),
        reason=reason,
        count=count,
        executions=list(ids)[:AUDITED_IDS],
        **details,
    )


def _target(ids) -> str:
    ids = list(ids)
    shown = ", ".join(str(i) for i in ids[:20])
    return shown + (f" (+{len(ids) - 20} more)" if len(ids) > 20 else "")
