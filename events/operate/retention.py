"""Deleting old history without forgetting which events were already seen.

An event row is what makes a redelivery a `duplicate`: the unique (source, event id) and
its body hash. Deleting it too early would let a late redelivery in as a new event that
runs again. So `prune` works in two stages (docs/retention.md):

1. **Strip** a finished event older than `--older-than`: delete its attempts, clear its
   executions' `last_error`, and drop its payload and headers. The row keeps its source,
   event id, type, status, body hash and received_at, and its executions keep their
   status: a redelivery is still answered `duplicate` (or `conflict`).
2. **Forget** a finished event once it is older than the dedup window as well
   (`DEDUP_RETENTION_DAYS`, or `--keep-ids-for`): delete the event with its executions
   and attempts (and its signed body, events.models.SignedBody). A redelivery after that
   is a new event.

A stripped event is marked by its payload being JSON `null`. Ingestion only ever stores a
JSON object, so no real event looks like that, and no schema change is needed. Replay and
"route again" refuse stripped events: running an action without its payload would be
wrong.

Only finished events are touched: none of their executions is queued, running, retrying
or held, and the event itself is not held. Work goes in batches of primary keys, each in
its own short transaction, walking `received_at` forward so each row is read once.
"""

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, JSONField, OuterRef, Q, Value
from django.utils import timezone

from events.models import (
    UNFINISHED_STATUSES,
    Attempt,
    Event,
    EventStatus,
    Execution,
    RejectedRequest,
    SignedBody,
)
from guardrails import audit


def _pruned_payload():
    # JSON null, not SQL NULL (the column is NOT NULL).
    return Value(None, JSONField())


def stripped(prefix: str = "") -> Q:
    """Events (or, with prefix "event__", executions) whose payload was pruned."""
    return Q(**{f"{prefix}payload": _pruned_payload()})


def is_stripped(event: Event) -> bool:
    """True if prune dropped this event's payload: it can no longer run."""
    return event.payload is None


def dedup_window() -> datetime.timedelta:
    return datetime.timedelta(days=settings.DEDUP_RETENTION_DAYS)


def finished_events(received_before):
    """Events received before this time with no work left: none of their executions is
    queued, running, retrying or held, and the event is not held."""
    busy = Execution.objects.filter(event=OuterRef("pk"), status__in=UNFINISHED_STATUSES)
    return (
        Event.objects.filter(received_at__lt=received_before)
        .exclude(status=EventStatus.HELD)
        .filter(~Exists(busy))
    )


def _keyset_batches(queryset, batch_size: int):
    """Primary keys of `queryset` in (received_at, pk) order, `batch_size` at a time.

    Each query starts after the last row of the previous batch, so rows that are skipped
    (unfinished, already stripped) are not read again batch after batch."""
    last = None
    while True:
        page = queryset
        if last is not None:
            at, pk = last
            page = page.filter(Q(received_at__gt=at) | Q(received_at=at, pk__gt=pk))
        rows = list(
            page.order_by("received_at", "pk").values_list("received_at", "pk")[:batch_size]
        )
        if not rows:
            return
        yield [pk for _, pk in rows]
        last = rows[-1]


def _lock_and_recheck(candidates, batch: list) -> list:
    """Inside the batch's transaction: lock the batch's executions (PostgreSQL; SQLite's
    IMMEDIATE transactions already exclude other writers) and keep only the events that are
    still candidates, so an execution replayed a moment ago is not pruned."""
    list(
        Execution.objects.select_for_update()
        .filter(event_id__in=batch)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return list(candidates.filter(pk__in=batch).values_list("pk", flat=True))


@dataclass
class PruneResult:
    older_than: datetime.timedelta
    keep_ids_for: datetime.timedelta
    dry_run: bool
    events_stripped: int = 0
    events_deleted: int = 0
    executions_deleted: int = 0
    attempts_deleted: int = 0
    rejected_deleted: int = 0
    batches: dict = field(default_factory=lambda: {"strip": 0, "forget": 0, "rejected": 0})

    def counts(self) -> dict:
        return {
            "events_stripped": self.events_stripped,
            "events_deleted": self.events_deleted,
            "executions_deleted": self.executions_deleted,
            "attempts_deleted": self.attempts_deleted,
            "rejected_deleted": self.rejected_deleted,
        }


Progress = Callable[[str, int, PruneResult], None]


def prune(
    *,
    older_than: datetime.timedelta,
    keep_ids_for: datetime.timedelta | None = None,
    batch_size: int = 1000,
    dry_run: bool = False,
    actor="cli",
    via: str = "cli",
    reason: str = "",
    progress: Progress | None = None,
    now: datetime.datetime | None = None,
) -> PruneResult:
    """Strip finished events older than `older_than`, delete those older than the dedup
    window too, and delete rejected-request counters older than `older_than`.

    Never touches an event with work left (queued, running, retrying, held). With
    dry_run=True counts what would go and changes nothing. Otherwise one audit entry
    records the counts. `progress(stage, batch_number, result)` is called after each batch.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    keep_ids_for = dedup_window() if keep_ids_for is None else keep_ids_for
    now = now or timezone.now()
    strip_before = now - older_than
    forget_before = now - max(older_than, keep_ids_for)
    result = PruneResult(older_than=older_than, keep_ids_for=keep_ids_for, dry_run=dry_run)

    to_forget = finished_events(forget_before)
    to_strip = (
        finished_events(strip_before).filter(received_at__gte=forget_before).exclude(stripped())
    )
    old_rejected = RejectedRequest.objects.filter(day__lt=strip_before.date())

    if dry_run:
        _count(result, to_forget, to_strip, old_rejected)
        return result
    # Stage 2 first: no point stripping what is deleted next.
    _in_batches("forget", to_forget, batch_size, _forget, result, progress)
    _in_batches("strip", to_strip, batch_size, _strip, result, progress)
    _delete_rejected(old_rejected, batch_size, result, progress)
    audit.record(
        actor=actor,
        via=via,
        action="prune",
        reason=reason,
        older_than_days=older_than.total_seconds() / 86400,
        keep_ids_for_days=keep_ids_for.total_seconds() / 86400,
        batch_size=batch_size,
        **result.counts(),
    )
    return result


def _count(result: PruneResult, to_forget, to_strip, old_rejected) -> None:
    """A dry run: what prune would delete and strip."""
    result.events_deleted = to_forget.count()
    result.executions_deleted = Execution.objects.filter(event__in=to_forget).count()
    result.events_stripped = to_strip.count()
    result.attempts_deleted = Attempt.objects.filter(
        Q(execution__event__in=to_forget) | Q(execution__event__in=to_strip)
    ).count()
    result.rejected_deleted = old_rejected.count()


def _in_batches(stage: str, events, batch_size: int, step, result, progress) -> None:
    """`step(ids, result)` over `events` in keyset batches, each in its own transaction and
    rechecked under lock (an event may have been replayed since it was listed)."""
    for batch in _keyset_batches(events, batch_size):
        with transaction.atomic():
            step(_lock_and_recheck(events, batch), result)
        result.batches[stage] += 1
        if progress:
            progress(stage, result.batches[stage], result)


def _forget(ids: list, result: PruneResult) -> None:
    """Stage 2: delete the events with their executions, attempts and signed bodies."""
    result.attempts_deleted += Attempt.objects.filter(execution__event_id__in=ids).delete()[0]
    result.executions_deleted += Execution.objects.filter(event_id__in=ids).delete()[0]
    # Its signed body goes with it: the replay window ends with the event's identity.
    SignedBody.objects.filter(event_id__in=ids).delete()
    result.events_deleted += Event.objects.filter(pk__in=ids).delete()[0]


def _strip(ids: list, result: PruneResult) -> None:
    """Stage 1: keep the events' identity, drop their attempts, payloads and headers."""
    result.attempts_deleted += Attempt.objects.filter(execution__event_id__in=ids).delete()[0]
    Execution.objects.filter(event_id__in=ids).exclude(last_error="").update(last_error="")
    result.events_stripped += Event.objects.filter(pk__in=ids).update(
        payload=_pruned_payload(), headers={}
    )


def _delete_rejected(old_rejected, batch_size: int, result: PruneResult, progress) -> None:
    while pks := list(old_rejected.order_by("pk").values_list("pk", flat=True)[:batch_size]):
        with transaction.atomic():
            result.rejected_deleted += RejectedRequest.objects.filter(pk__in=pks).delete()[0]
        result.batches["rejected"] += 1
        if progress:
            progress("rejected", result.batches["rejected"], result)
