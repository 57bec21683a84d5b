"""Running one execution on a worker: claim with a lease, guardrail check, connector call,
record the attempt, then succeed, retry with backoff, or fail into the dead letter.

Every state change is a conditional UPDATE on the expected old state (and, while running,
on the lease owner), so two workers can never both win, and a worker that lost its lease
cannot overwrite what the new owner did.
"""

import datetime
import logging
import os
import socket
import threading
import time
import traceback
import uuid

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from automation_runtime.logcontext import bind, log_context
from connectors import circuits, registry, templating
from connectors.base import ExecutionContext, PermanentError, RetryableError
from events import dispatch
from events.models import (
    CLAIMABLE_STATUSES,
    Attempt,
    AttemptOutcome,
    Execution,
    ExecutionStatus,
)
from guardrails import policy

logger = logging.getLogger(__name__)

MAX_ERROR_TEXT = 4000


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


WORKER_ID = new_worker_id()


def lease_seconds() -> int:
    return settings.EXECUTION_LEASE_SECONDS


def claim(execution_id: int, *, owner: str = WORKER_ID) -> bool:
    """Take a lease on a claimable execution whose time has come.

    Returns False if another worker claimed it first, or it is not claimable now.
    """
    now = timezone.now()
    updated = (
        Execution.objects.filter(pk=execution_id, status__in=CLAIMABLE_STATUSES)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(
            status=ExecutionStatus.RUNNING,
            lease_owner=owner,
            lease_expires_at=now + datetime.timedelta(seconds=lease_seconds()),
            attempts=F("attempts") + 1,
            total_attempts=F("total_attempts") + 1,
            updated_at=now,
        )
    )
    return updated == 1


def _leased(execution: Execution):
    return Execution.objects.filter(
        pk=execution.pk, status=ExecutionStatus.RUNNING, lease_owner=execution.lease_owner
    )


def renew_lease(execution: Execution) -> bool:
    """Push the lease forward. False if the lease was lost (the reaper gave it away)."""
    now = timezone.now()
    return (
        _leased(execution).update(
            lease_expires_at=now + datetime.timedelta(seconds=lease_seconds())
        )
        == 1
    )


def _finish(execution: Execution, new_status: str, **fields) -> bool:
    """Leave `running` for new_status, releasing the lease. False if the lease was lost."""
    now = timezone.now()
    fields.setdefault("updated_at", now)
    if new_status in (ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED):
        fields.setdefault("finished_at", now)
    return (
        _leased(execution).update(
            status=new_status, lease_owner="", lease_expires_at=None, **fields
        )
        == 1
    )


class _LeaseKeeper(threading.Thread):
    """Renews the lease while a long action runs, on its own database connection."""

    def __init__(self, execution: Execution):
        super().__init__(name=f"lease-{execution.pk}", daemon=True)
        self.execution = execution
        self.stopped = threading.Event()
        self.lost = False

    def run(self):
        interval = max(1.0, lease_seconds() / 3)
        try:
            while not self.stopped.wait(interval):
                if not renew_lease(self.execution):
                    self.lost = True
                    logger.warning("execution %s: lease lost while running", self.execution.pk)
                    return
        except Exception:
            logger.exception("execution %s: could not renew the lease", self.execution.pk)
        finally:
            connection.close()

    def stop(self):
        self.stopped.set()
        self.join(timeout=10)


def _defer(execution: Execution, reason: str, until) -> str:
    """Back to waiting until `until`, giving the claimed attempt back."""
    _finish(
        execution,
        ExecutionStatus.RETRYING,
        status_reason=reason,
        attempts=F("attempts") - 1,
        total_attempts=F("total_attempts") - 1,
        next_attempt_at=until,
        dispatched_at=until,
    )
    dispatch.send_on_commit([execution.pk], run_after=until)
    return "deferred"


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_TEXT]


def run(execution_id: int, *, owner: str = WORKER_ID) -> str:
    """Claim and run one execution. Returns its status afterwards, or `skipped`.

    Safe to call twice for one execution, from any number of processes: only the worker
    whose claim succeeds calls the connector. Every log line written meanwhile carries the
    execution id and worker (and the event id, source, route and attempt once known).
    """
    with log_context(execution_id=execution_id, worker=owner):
        return _run(execution_id, owner=owner)


def _run(execution_id: int, *, owner: str) -> str:
    # Claim, guardrail check and the attempt row commit together: one write transaction.
    with transaction.atomic():
        if not claim(execution_id, owner=owner):
            logger.debug("execution %s not claimable now", execution_id)
            return "skipped"
        execution = Execution.objects.select_related("event__source", "route").get(pk=execution_id)
        bind(
            event_id=execution.event.event_id,
            event_uuid=execution.event_id,
            source=execution.event.source.name,
            route=execution.route.name,
        )

        if execution.event.payload is None:
            # Its event was pruned (docs/retention.md) after a replay queued it: nothing to
            # run it with. Give the attempt back and say why.
            _finish(
                execution,
                ExecutionStatus.CANCELLED,
                status_reason="its event was pruned; there is no payload to run it with",
                attempts=F("attempts") - 1,
                total_attempts=F("total_attempts") - 1,
                next_attempt_at=None,
            )
            return ExecutionStatus.CANCELLED

        # The first check before every side effect, read fresh from the database.
        decision = policy.decide_execution(execution=execution)
        if decision.verdict is policy.Verdict.DEFER:
            # A rate limit: wait for the window without spending an attempt.
            return _defer(execution, decision.reason, decision.until)
        if not decision.allowed:
            new_status = (
                ExecutionStatus.BLOCKED
                if decision.verdict is policy.Verdict.BLOCK
                else ExecutionStatus.HELD
            )
            # Claimed but not attempted: give the attempt back.
            _finish(
                execution,
                new_status,
                status_reason=decision.reason,
                attempts=F("attempts") - 1,
                total_attempts=F("total_attempts") - 1,
                next_attempt_at=None,
            )
            return new_status

        event, route = execution.event, execution.route
        try:
            connector = registry.get(route.connector)
            target = connector.target(route.action, route.params)
        except registry.UnknownConnector:
            connector, target = None, ""
        gate = circuits.before_call(route.connector, target)
        if not gate.allowed:
            # An open circuit defers the execution without spending an attempt.
            return _defer(execution, gate.reason, gate.retry_at)

        number = execution.total_attempts
        bind(attempt=number)
        attempt = Attempt.objects.create(execution=execution, number=number, worker=owner)
    context = ExecutionContext(
        event_id=event.event_id,
        event_type=event.type,
        payload=event.payload,
        headers=event.headers,
        execution_id=execution.pk,
        idempotency_key=execution.idempotency_key,
        attempt=number,
        deadline=execution.lease_expires_at,
        received_at=event.received_at.isoformat(),
    )
    started = time.monotonic()
    keeper = _LeaseKeeper(execution)
    keeper.start()
    outcome, error_class, error_text, summary, retry_after = (
        AttemptOutcome.SUCCEEDED,
        "",
        "",
        {},
        None,
    )
    try:
        if connector is None:
            raise registry.UnknownConnector(f"Unknown connector {route.connector!r}.")
        params = templating.render(route.params, context)
        try:
            connector.validate(route.action, params)
        except ValueError as exc:
            raise PermanentError(f"parameters after templating: {exc}") from None
        if decision.dry_run:
            result = connector.dry_run(route.action, params, context)
            outcome = AttemptOutcome.DRY_RUN
        else:
            result = connector.execute(route.action, params, context)
        summary = result.summary or {}
    except RetryableError as exc:
        outcome, retry_after = AttemptOutcome.RETRYABLE_ERROR, exc.retry_after
        error_class, error_text, summary = type(exc).__name__, _error_text(exc), exc.summary
    except (PermanentError, registry.UnknownConnector) as exc:
        outcome = AttemptOutcome.PERMANENT_ERROR
        error_class, error_text = type(exc).__name__, _error_text(exc)
        summary = getattr(exc, "summary", {})
    except Exception as exc:
        # An unexpected exception is a bug in the connector or a failure it did not
        # classify: record the traceback and treat it as permanent.
        outcome = AttemptOutcome.PERMANENT_ERROR
        error_class = f"{type(exc).__module__}.{type(exc).__qualname__}"
        error_text = traceback.format_exc()[-MAX_ERROR_TEXT:]
        logger.exception("execution %s: connector raised", execution.pk)
    except BaseException as exc:
        # Told to stop at once (second SIGTERM, KeyboardInterrupt): give it back.
        keeper.stop()
        _record_attempt(
            attempt,
            started,
            AttemptOutcome.ABANDONED,
            type(exc).__name__,
            "the worker stopped mid-action",
            {},
        )
        _finish(
            execution,
            ExecutionStatus.QUEUED,
            last_error="abandoned: the worker stopped mid-action",
            dispatched_at=timezone.now(),
        )
        raise
    finally:
        keeper.stop()

    with transaction.atomic():
        _record_attempt(attempt, started, outcome, error_class, error_text, summary)
        if outcome == AttemptOutcome.SUCCEEDED:
            circuits.record_success(route.connector, target)
        elif outcome == AttemptOutcome.RETRYABLE_ERROR:
            circuits.record_failure(route.connector, target, error_text)
        return _settle(execution, outcome, error_text, retry_after)


def _record_attempt(attempt, started, outcome, error_class, error_text, summary):
    Attempt.objects.filter(pk=attempt.pk).update(
        finished_at=timezone.now(),
        outcome=outcome,
        error_class=error_class[:255],
        error_message=error_text[:MAX_ERROR_TEXT],
        response_summary=summary,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


def _settle(execution: Execution, outcome: str, error_text: str, retry_after) -> str:
    """Move a finished attempt's execution to its next state."""
    if outcome == AttemptOutcome.SUCCEEDED:
        new_status, fields = ExecutionStatus.SUCCEEDED, {"last_error": ""}
    elif outcome == AttemptOutcome.DRY_RUN:
        new_status = ExecutionStatus.DRY_RUN
        fields = {"last_error": "", "status_reason": "dry run: nothing was done"}
    elif (
        outcome == AttemptOutcome.RETRYABLE_ERROR
        and execution.attempts < execution.route.max_attempts
    ):
        delay = execution.route.retry_delay(execution.attempts)
        if retry_after is not None:
            delay = max(delay, min(float(retry_after), execution.route.backoff_cap_seconds))
        when = timezone.now() + datetime.timedelta(seconds=delay)
        new_status = ExecutionStatus.RETRYING
        fields = {"last_error": error_text, "next_attempt_at": when, "dispatched_at": when}
    else:
        new_status, fields = ExecutionStatus.FAILED, {"last_error": error_text}
        if outcome == AttemptOutcome.RETRYABLE_ERROR:
            fields["status_reason"] = f"gave up after {execution.attempts} attempts"

    if not _finish(execution, new_status, **fields):
        logger.warning(
            "execution %s: lease lost before the result was saved; the attempt is recorded",
            execution.pk,
        )
        return "lease_lost"
    if new_status == ExecutionStatus.RETRYING:
        dispatch.send_on_commit([execution.pk], run_after=fields["next_attempt_at"])
    return new_status


def reap(*, now: datetime.datetime | None = None, limit: int = 500) -> dict:
    """Recover without an operator. Safe to run on every worker at once.

    - A running execution whose lease expired (its worker died) goes back to be retried,
      or to the dead letter if it is out of attempts; its open attempt is marked lost.
    - A claimable execution still waiting long after its task message became runnable
      (the message was lost) gets another message.
    Returns counts of what it did.
    """
    now = now or timezone.now()
    requeued = failed = 0
    expired = list(
        Execution.objects.filter(status=ExecutionStatus.RUNNING, lease_expires_at__lt=now)
        .select_related("route")
        .order_by("lease_expires_at")[:limit]
    )
    for execution in expired:
        out_of_attempts = execution.attempts >= execution.route.max_attempts
        fields = {
            "status": ExecutionStatus.FAILED if out_of_attempts else ExecutionStatus.RETRYING,
            "lease_owner": "",
            "lease_expires_at": None,
            "updated_at": now,
            "last_error": f"lease expired: worker {execution.lease_owner} stopped answering",
        }
        if out_of_attempts:
            fields["finished_at"] = now
            fields["status_reason"] = f"gave up after {execution.attempts} attempts"
        else:
            fields["next_attempt_at"] = now
            fields["dispatched_at"] = now
        taken = Execution.objects.filter(
            pk=execution.pk,
            status=ExecutionStatus.RUNNING,
            lease_owner=execution.lease_owner,
            lease_expires_at__lt=now,
        ).update(**fields)
        if taken != 1:
            continue  # renewed or finished meanwhile
        lost = {
            "finished_at": now,
            "outcome": AttemptOutcome.LOST,
            "error_class": "LeaseExpired",
            "error_message": fields["last_error"],
        }
        if not Attempt.objects.filter(execution=execution, finished_at__isnull=True).update(
            **lost
        ):
            # The worker died between its claim and the start of the action.
            Attempt.objects.create(
                execution=execution,
                number=execution.total_attempts,
                worker=execution.lease_owner,
                started_at=now,
                **lost,
            )
        if out_of_attempts:
            failed += 1
        else:
            requeued += 1
            dispatch.send([execution.pk])

    cutoff = now - datetime.timedelta(seconds=settings.REDISPATCH_AFTER_SECONDS)
    if dispatch.queue_behind(cutoff):
        # Messages older than the cut-off still wait their turn: executions that look
        # forgotten are only queued behind them, and sending theirs again would multiply
        # the backlog. Lost ones are sent again once the queue has caught up.
        return {"requeued": requeued, "failed": failed, "redispatched": 0}
    stale = list(
        Execution.objects.filter(status__in=CLAIMABLE_STATUSES)
        .filter(Q(dispatched_at__lt=cutoff) | Q(dispatched_at__isnull=True))
        .order_by("dispatched_at")
        .values_list("pk", flat=True)[:limit]
    )
    resent = []
    for pk in stale:
        if (
            Execution.objects.filter(pk=pk, status__in=CLAIMABLE_STATUSES)
            .filter(Q(dispatched_at__lt=cutoff) | Q(dispatched_at__isnull=True))
            .update(dispatched_at=now)
        ):
            resent.append(pk)
    dispatch.send(resent)
    return {"requeued": requeued, "failed": failed, "redispatched": len(resent)}
