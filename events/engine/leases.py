"""Leases: a worker renews all of its leases in one statement; the reaper takes back the
ones whose worker stopped answering.

A lease is `lease_owner` + `lease_expires_at` on a running execution. The worker renews
every lease it holds each third of EXECUTION_LEASE_SECONDS; a worker that vanished
(SIGKILL, a lost host) stops renewing, and once its leases expire any worker's reaper
returns those executions to be retried, recording the open attempt as `lost`.
"""

import datetime
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from events.engine import wake
from events.models import Attempt, AttemptOutcome, Execution, ExecutionStatus

logger = logging.getLogger("events.engine")


def renew(owner: str, execution_ids, *, now=None) -> set[int]:
    """Push the leases of these executions forward, if still `owner`'s; one UPDATE.
    Returns the ids whose lease was lost (the reaper gave them away meanwhile)."""
    ids = list(execution_ids)
    if not ids:
        return set()
    now = now or timezone.now()
    expires = now + datetime.timedelta(seconds=settings.EXECUTION_LEASE_SECONDS)
    ours = Execution.objects.filter(pk__in=ids, status=ExecutionStatus.RUNNING, lease_owner=owner)
    renewed = ours.update(lease_expires_at=expires)
    if renewed == len(ids):
        return set()
    return set(ids) - set(ours.values_list("pk", flat=True))


def reap(
    *, now: datetime.datetime | None = None, limit: int = 500, spare_owner: str | None = None
) -> dict:
    """Take back executions whose lease expired (their worker died). Safe to run on every
    worker at once: each is taken with a conditional UPDATE, so one reaper wins.

    Each goes back to be retried now, or to the dead letter if it is out of attempts;
    its open attempt is marked lost (or a lost attempt is recorded if the worker died
    between its claim and the attempt row). `spare_owner` is the calling worker's own id:
    its leases are its own to renew. Returns counts of what it did.
    """
    now = now or timezone.now()
    requeued = failed = 0
    expired = Execution.objects.expired(now)
    if spare_owner:
        expired = expired.exclude(lease_owner=spare_owner)
    expired = list(expired.select_related("route").order_by("lease_expires_at")[:limit])
    for execution in expired:
        with transaction.atomic():
            outcome = _take_back(execution, now)
        if outcome == ExecutionStatus.RETRYING:
            requeued += 1
        elif outcome == ExecutionStatus.FAILED:
            failed += 1
    if requeued:
        wake.notify()
    return {"requeued": requeued, "failed": failed}


def _take_back(execution: Execution, now) -> str | None:
    out_of_attempts = execution.attempts >= execution.route.max_attempts
    error = f"lease expired: worker {execution.lease_owner} stopped answering"
    fields = {
        "status": ExecutionStatus.FAILED if out_of_attempts else ExecutionStatus.RETRYING,
        "lease_owner": "",
        "lease_expires_at": None,
        "updated_at": now,
        "last_error": error,
    }
    if out_of_attempts:
        fields["finished_at"] = now
        fields["status_reason"] = f"gave up after {execution.attempts} attempts"
    else:
        fields["next_attempt_at"] = now
    taken = (
        Execution.objects.expired(now)
        .filter(pk=execution.pk, lease_owner=execution.lease_owner)
        .update(**fields)
    )
    if taken != 1:
        return None  # renewed or finished meanwhile
    lost = {
        "finished_at": now,
        "outcome": AttemptOutcome.LOST,
        "error_class": "LeaseExpired",
        "error_message": error,
    }
    if not Attempt.objects.filter(execution=execution, finished_at__isnull=True).update(**lost):
        # The worker died between its claim and the attempt row.
        Attempt.objects.get_or_create(
            execution=execution,
            number=execution.total_attempts,
            defaults={"worker": execution.lease_owner, "started_at": now, **lost},
        )
    logger.warning("execution %s: %s", execution.pk, error)
    return fields["status"]
