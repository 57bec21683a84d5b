"""Running one execution on a worker: claim, guardrail check, connector call, record."""

import logging
import os
import socket
import time
import traceback

from django.db.models import F
from django.utils import timezone

from connectors import registry
from connectors.base import ExecutionContext, PermanentError, RetryableError
from events.models import Attempt, AttemptOutcome, Execution, ExecutionStatus
from guardrails import policy

logger = logging.getLogger(__name__)

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
MAX_ERROR_TEXT = 4000


def claim(execution_id: int, *, owner: str = WORKER_ID) -> bool:
    """Move a queued execution to running. False if another worker claimed it first."""
    now = timezone.now()
    updated = Execution.objects.filter(pk=execution_id, status=ExecutionStatus.QUEUED).update(
        status=ExecutionStatus.RUNNING,
        lease_owner=owner,
        attempts=F("attempts") + 1,
        updated_at=now,
    )
    return updated == 1


def _transition(execution: Execution, new_status: str, **fields) -> bool:
    """Conditional UPDATE from running; False if the execution was changed meanwhile."""
    now = timezone.now()
    fields.setdefault("updated_at", now)
    if new_status in (ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED):
        fields.setdefault("finished_at", now)
    updated = Execution.objects.filter(
        pk=execution.pk, status=ExecutionStatus.RUNNING, lease_owner=execution.lease_owner
    ).update(status=new_status, lease_owner="", **fields)
    return updated == 1


def run(execution_id: int) -> str:
    """Claim and run one execution. Returns its status afterwards (or `skipped`)."""
    if not claim(execution_id):
        logger.info("execution %s not claimable (already taken or not queued)", execution_id)
        return "skipped"
    execution = Execution.objects.select_related("event", "route").get(pk=execution_id)

    decision = policy.decide_execution(execution=execution)
    if decision.verdict is policy.Verdict.HOLD:
        # Claimed but not attempted: give the attempt back.
        _transition(
            execution,
            ExecutionStatus.HELD,
            status_reason=decision.reason,
            attempts=F("attempts") - 1,
        )
        return ExecutionStatus.HELD
    if decision.verdict is policy.Verdict.BLOCK:
        _transition(
            execution,
            ExecutionStatus.BLOCKED,
            status_reason=decision.reason,
            attempts=F("attempts") - 1,
        )
        return ExecutionStatus.BLOCKED

    event, route = execution.event, execution.route
    attempt = Attempt.objects.create(execution=execution, number=execution.attempts)
    context = ExecutionContext(
        event_id=event.event_id,
        event_type=event.type,
        payload=event.payload,
        headers=event.headers,
        execution_id=execution.pk,
        idempotency_key=execution.idempotency_key,
        attempt=execution.attempts,
    )
    started = time.monotonic()
    outcome, status, error_class, error_text, summary = (
        AttemptOutcome.SUCCEEDED,
        ExecutionStatus.SUCCEEDED,
        "",
        "",
        {},
    )
    try:
        connector = registry.get(route.connector)
        result = connector.execute(route.action, route.params, context)
        summary = result.summary
    except RetryableError as exc:
        # Retries with backoff come with the execution engine; until then a retryable
        # failure is recorded and the execution lands in the dead letter when out of attempts.
        outcome = AttemptOutcome.RETRYABLE_ERROR
        status = ExecutionStatus.FAILED
        error_class, error_text = type(exc).__name__, str(exc)
    except (PermanentError, registry.UnknownConnector) as exc:
        outcome, status = AttemptOutcome.PERMANENT_ERROR, ExecutionStatus.FAILED
        error_class, error_text = type(exc).__name__, str(exc)
    except Exception as exc:
        outcome, status = AttemptOutcome.PERMANENT_ERROR, ExecutionStatus.FAILED
        error_class = f"{type(exc).__module__}.{type(exc).__qualname__}"
        error_text = traceback.format_exc()[-MAX_ERROR_TEXT:]
        logger.exception("execution %s: connector raised", execution.pk)

    finished = timezone.now()
    Attempt.objects.filter(pk=attempt.pk).update(
        finished_at=finished,
        outcome=outcome,
        error_class=error_class[:255],
        error_message=error_text[:MAX_ERROR_TEXT],
        response_summary=summary,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    if not _transition(execution, status, last_error=error_text[:MAX_ERROR_TEXT]):
        logger.warning(
            "execution %s changed while running; result recorded on attempt only", execution.pk
        )
    return status
