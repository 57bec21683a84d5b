"""Replay, cancel, release held, approve and reject on many executions: inline when few, by
a worker when many.

Up to ADMIN_BULK_THRESHOLD executions the action runs in the request, through
events.operate.operations as always. Above it a BulkOperation row keeps the selection (the ids it
matched, so it can be re-run and audited as one act) and a worker claims the row (like an
execution: a conditional UPDATE from pending to running) and runs it in batches with the
same rules, recording its progress after each batch and one audit entry at the end.
"""

import logging
from collections import Counter
from dataclasses import dataclass

from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from events.models import (
    APPROVABLE_STATUSES,
    CANCELLABLE_STATUSES,
    KEY_DEAD_STATUSES,
    RELEASABLE_STATUSES,
    BulkAction,
    BulkOperation,
    BulkStatus,
    Execution,
    ExecutionStatus,
)
from events.operate import operations
from guardrails import audit

logger = logging.getLogger(__name__)

# More executions than this go to a worker rather than run in the request.
ADMIN_BULK_THRESHOLD = 500
# More than this in one operation: the operator narrows the selection first.
BULK_MAX = 200_000
# Executions per batch; also keeps SQLite's IN lists short.
BATCH = 500

AUDIT_ACTIONS = {
    BulkAction.REPLAY: "executions.replay",
    BulkAction.CANCEL: "executions.cancel",
    BulkAction.RELEASE: "executions.release",
    BulkAction.APPROVE: "executions.approve",
    BulkAction.REJECT: "executions.reject",
}
# These need a reason (operations.required_reason), checked before anything is stored.
NEED_REASON = (BulkAction.APPROVE, BulkAction.REJECT)


class TooMany(Exception):
    """The selection is larger than BULK_MAX."""


def eligible_statuses(action: str, *, force: bool = False) -> list[str]:
    """The statuses the action changes; the same lists events.operate.operations uses."""
    if action == BulkAction.REPLAY:
        return operations.replayable_statuses(force=force)
    if action == BulkAction.CANCEL:
        return list(CANCELLABLE_STATUSES)
    if action == BulkAction.RELEASE:
        return list(RELEASABLE_STATUSES)
    if action in (BulkAction.APPROVE, BulkAction.REJECT):
        return list(APPROVABLE_STATUSES)
    raise ValueError(f"unknown bulk action {action!r}")


def is_eligible(action: str, status: str, ordering_key: str = "", *, force: bool = True) -> bool:
    """Whether the action changes an execution in this status (with this ordering key)."""
    if action == BulkAction.CANCEL and ordering_key and status in KEY_DEAD_STATUSES:
        return True
    return status in eligible_statuses(action, force=force)


def _eligible(queryset, action: str, *, force: bool = False):
    if action == BulkAction.CANCEL:
        return queryset.cancellable()
    return queryset.filter(status__in=eligible_statuses(action, force=force))


def eligible_ids(queryset, action: str, *, force: bool = False, limit: int | None = None):
    """Ids of the executions in `queryset` the action would change now, in id order."""
    ids = _eligible(queryset, action, force=force).order_by("pk").values_list("pk", flat=True)
    return list(ids[:limit] if limit is not None else ids)


@dataclass(frozen=True)
class Plan:
    """What an action would do to a selection, to show before it is applied."""

    action: str
    by_status: dict  # status -> executions selected (up to BULK_MAX + 1 looked at)
    eligible: int  # how many it would change, succeeded ones included for a replay
    succeeded: int  # of those, how many already succeeded (a replay asks first)
    more: bool  # the selection holds more than were looked at

    @property
    def selected(self) -> int:
        return sum(self.by_status.values())


def plan(queryset, action: str) -> Plan:
    """How many of the selected executions the action would change, by status."""
    rows = list(queryset.order_by().values_list("status", "ordering_key")[: BULK_MAX + 1])
    by_status = dict(Counter(status for status, _ in rows).most_common())
    succeeded = by_status.get(ExecutionStatus.SUCCEEDED, 0) if action == BulkAction.REPLAY else 0
    return Plan(
        action=action,
        by_status=by_status,
        eligible=sum(1 for status, key in rows if is_eligible(action, status, key)),
        succeeded=succeeded,
        more=len(rows) > BULK_MAX,
    )


def apply(
    queryset, action: str, *, actor, via="admin", force: bool = False, selection="", reason=""
):
    """Apply an action to the executions in `queryset`, audited with `reason`.

    Returns how many changed when it ran inline, or the BulkOperation a worker will run
    when more than ADMIN_BULK_THRESHOLD are eligible. Raises TooMany above BULK_MAX, and
    ReasonRequired for an approval or a rejection without a reason.
    """
    if action in NEED_REASON:
        reason = operations.required_reason(reason)
    ids = eligible_ids(queryset, action, force=force, limit=BULK_MAX + 1)
    if len(ids) > BULK_MAX:
        raise TooMany(f"more than {BULK_MAX:,} executions; narrow the selection")
    if len(ids) > ADMIN_BULK_THRESHOLD:
        return start(
            action, ids, actor=actor, via=via, force=force, selection=selection, reason=reason
        )
    chosen = Execution.objects.filter(pk__in=ids)
    if action == BulkAction.REPLAY:
        return operations.replay(chosen, actor=actor, via=via, force=force, reason=reason)
    if action == BulkAction.CANCEL:
        return operations.cancel(chosen, actor=actor, via=via, reason=reason)
    if action == BulkAction.APPROVE:
        return operations.approve(chosen, actor=actor, via=via, reason=reason)
    if action == BulkAction.REJECT:
        return operations.reject(chosen, actor=actor, via=via, reason=reason)
    return operations.release_held(chosen, actor=actor, via=via, reason=reason)


def start(
    action: str, ids, *, actor, via="admin", force=False, selection="", reason=""
) -> BulkOperation:
    """Record a bulk operation; a worker claims it once the transaction commits."""
    eligible_statuses(action)  # refuses an unknown action before anything is stored
    ids = sorted(set(ids))
    operation = BulkOperation.objects.create(
        action=action,
        force=force and action == BulkAction.REPLAY,
        actor=audit.actor_name(actor),
        via=str(via),
        selection=selection[:2000],
        reason=reason,
        execution_ids=ids,
        total=len(ids),
    )
    return operation


def runnable_ids(now=None) -> list[int]:
    """Operations a worker should take: pending, or running with no progress for
    BULK_STALLED_AFTER (their worker died). Oldest first."""
    now = now or timezone.now()
    return list(
        BulkOperation.objects.runnable(now).order_by("created_at").values_list("pk", flat=True)
    )


def run_next() -> bool:
    """Claim and run the oldest runnable operation; False if there was none to claim.
    Every worker's side thread calls this; the claim in `run` lets one win each."""
    return any(run(operation_id) != "skipped" for operation_id in runnable_ids())


# The same rules as the one-off actions; one audit entry covers the whole operation.
def _replay(ids, operation) -> int:
    statuses = operations.replayable_statuses(force=operation.force)
    return len(
        operations.requeue(
            ids,
            from_statuses=statuses,
            note=f"replayed by {operation.actor}",
            ask_approval=True,
        )
    )


def _release(ids, operation) -> int:
    return len(
        operations.requeue(
            ids, from_statuses=[ExecutionStatus.HELD], note=f"released by {operation.actor}"
        )
    )


def _cancel(ids, operation) -> int:
    return operations.cancel_ids(ids, note=f"cancelled by {operation.actor}")


def _approve(ids, operation) -> int:
    note = operations.approved_note(operation.actor)
    return len(operations.requeue(ids, from_statuses=APPROVABLE_STATUSES, note=note))


def _reject(ids, operation) -> int:
    note = operations.rejected_note(operation.actor, operation.reason)
    return operations.reject_ids(ids, note=note)


RUNNERS = {
    BulkAction.REPLAY: _replay,
    BulkAction.CANCEL: _cancel,
    BulkAction.RELEASE: _release,
    BulkAction.APPROVE: _approve,
    BulkAction.REJECT: _reject,
}


def run(operation_id: int) -> str:
    """Run a pending bulk operation to its end, batch by batch.

    Returns "skipped" if it is neither pending nor stalled (another worker claimed it
    first, or it ran already). A failing batch is counted in `errors` and the next one still runs.
    """
    now = timezone.now()
    # Pending, or stalled (its worker died): the conditional UPDATE lets one worker win
    # either way.
    claimed = (
        BulkOperation.objects.runnable(now)
        .filter(pk=operation_id)
        .update(
            status=BulkStatus.RUNNING, started_at=Coalesce("started_at", now), progressed_at=now
        )
    )
    if claimed != 1:
        return "skipped"
    operation = BulkOperation.objects.get(pk=operation_id)
    runner = RUNNERS[operation.action]
    ids = operation.execution_ids
    rows = BulkOperation.objects.filter(pk=operation_id)
    status = BulkStatus.FAILED
    try:
        # A taken-over operation goes on after the last batch recorded; batches are
        # conditional updates, so one done twice changes nothing more.
        for start_at in range(operation.processed, len(ids), BATCH):
            batch = ids[start_at : start_at + BATCH]
            try:
                changed = runner(batch, operation)
            except Exception as exc:
                logger.exception("bulk operation %s: a batch failed", operation_id)
                rows.update(
                    processed=F("processed") + len(batch),
                    errors=F("errors") + len(batch),
                    last_error=f"{type(exc).__name__}: {exc}"[:2000],
                    progressed_at=timezone.now(),
                )
            else:
                rows.update(
                    processed=F("processed") + len(batch),
                    affected=F("affected") + changed,
                    progressed_at=timezone.now(),
                )
        status = BulkStatus.DONE
    finally:
        rows.update(status=status, finished_at=timezone.now())
        operation.refresh_from_db()
        details = {"force": operation.force} if operation.action == BulkAction.REPLAY else {}
        audit.record(
            actor=operation.actor,
            via=operation.via,
            action=AUDIT_ACTIONS[operation.action],
            target=f"bulk operation {operation.pk}: {operation.selection}"[:255],
            reason=operation.reason,
            count=operation.affected,
            total=operation.total,
            processed=operation.processed,
            errors=operation.errors,
            bulk_operation=operation.pk,
            **details,
        )
    return status
