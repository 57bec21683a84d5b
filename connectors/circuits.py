"""Circuit breakers per connector and target host.

After CIRCUIT_FAILURE_THRESHOLD retryable failures in a row a circuit opens for
CIRCUIT_COOLDOWN_SECONDS. Executions that meet an open circuit are deferred until it may
close, without spending an attempt. When the cool-down ends one execution is let through
as a probe (half-open): its success closes the circuit, its failure opens it again. Every
change is a conditional UPDATE, so workers on several hosts agree on one probe.
"""

import datetime
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from connectors.models import CircuitBreaker, CircuitState

# A probe that never reports back (its worker died) is given up after this long.
PROBE_TIMEOUT = datetime.timedelta(seconds=120)
# While a probe is out, other executions look again this soon (at most a cool-down): the
# probe's success closes the circuit at once, and they should not wait for its timeout.
PROBE_RECHECK = datetime.timedelta(seconds=2)


@dataclass(frozen=True)
class Gate:
    allowed: bool
    retry_at: datetime.datetime | None = None
    reason: str = ""


def _cooldown():
    return datetime.timedelta(seconds=settings.CIRCUIT_COOLDOWN_SECONDS)


def before_call(connector: str, target: str) -> Gate:
    """May a call to this connector and target go through now?"""
    if not target:
        return Gate(True)
    row = CircuitBreaker.objects.filter(connector=connector, target=target).first()
    if row is None or row.state == CircuitState.CLOSED:
        return Gate(True)
    now = timezone.now()
    if row.state == CircuitState.OPEN:
        if row.retry_at and row.retry_at > now:
            return Gate(False, row.retry_at, f"circuit open for {connector} → {target}")
        # Cool-down over: the first worker to flip it to half-open makes the probe call.
        took = CircuitBreaker.objects.filter(pk=row.pk, state=CircuitState.OPEN).update(
            state=CircuitState.HALF_OPEN, retry_at=now + PROBE_TIMEOUT
        )
        if took:
            return Gate(True)
        row.refresh_from_db()
    if row.state == CircuitState.HALF_OPEN and row.retry_at and row.retry_at <= now:
        # The probe never reported back: let another one through.
        took = CircuitBreaker.objects.filter(
            pk=row.pk, state=CircuitState.HALF_OPEN, retry_at__lte=now
        ).update(retry_at=now + PROBE_TIMEOUT)
        if took:
            return Gate(True)
    if row.state == CircuitState.HALF_OPEN:
        wait = now + min(_cooldown(), PROBE_RECHECK)
    else:
        wait = row.retry_at if row.retry_at and row.retry_at > now else now + _cooldown()
    return Gate(False, wait, f"circuit {row.state.replace('_', '-')} for {connector} → {target}")


def record_success(connector: str, target: str) -> None:
    if not target:
        return
    CircuitBreaker.objects.filter(connector=connector, target=target).exclude(
        state=CircuitState.CLOSED, consecutive_failures=0
    ).update(state=CircuitState.CLOSED, consecutive_failures=0, retry_at=None, opened_at=None)


def record_failure(connector: str, target: str, error: str) -> None:
    """Count a retryable failure; open the circuit at the threshold or after a failed probe."""
    if not target:
        return
    now = timezone.now()
    row, _ = CircuitBreaker.objects.get_or_create(connector=connector, target=target)
    CircuitBreaker.objects.filter(pk=row.pk).update(
        consecutive_failures=F("consecutive_failures") + 1, last_error=error[:2000]
    )
    row.refresh_from_db()
    if row.state == CircuitState.HALF_OPEN or (
        row.state == CircuitState.CLOSED
        and row.consecutive_failures >= settings.CIRCUIT_FAILURE_THRESHOLD
    ):
        CircuitBreaker.objects.filter(pk=row.pk, state=row.state).update(
            state=CircuitState.OPEN, opened_at=now, retry_at=now + _cooldown()
        )


def summary() -> list[dict]:
    return [
        {
            "connector": c.connector,
            "target": c.target,
            "state": c.state,
            "consecutive_failures": c.consecutive_failures,
            "retry_at": c.retry_at.isoformat() if c.retry_at else None,
        }
        for c in CircuitBreaker.objects.exclude(state=CircuitState.CLOSED)
    ]
