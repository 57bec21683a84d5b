"""Circuit breakers per route and target host.

After CIRCUIT_FAILURE_THRESHOLD retryable failures in a row a circuit opens for
CIRCUIT_COOLDOWN_SECONDS. Executions that meet an open circuit are deferred until it may
close, without spending an attempt. When the cool-down ends one execution is let through
as a probe (half-open): its success closes the circuit, its failure opens it again. Every
change is a conditional UPDATE, so workers on several hosts agree on one probe.
"""

import datetime
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from connectors.models import CircuitBreaker, CircuitState
from guardrails import audit

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


def not_clean(keys) -> dict:
    """The circuits among these (route id, target) pairs that are not closed or count
    failures, by pair: one query for a whole claimed batch. A pair with no entry has a
    clean closed circuit (or none): its call goes through, and its success needs no
    write. (A failure another worker records meanwhile is reset by the next success
    that saw it.)"""
    keys = {(route_id, target) for route_id, target in keys if target}
    if not keys:
        return {}
    rows = CircuitBreaker.objects.filter(route_id__in={r for r, _ in keys}).exclude(
        state=CircuitState.CLOSED, consecutive_failures=0
    )
    return {(row.route_id, row.target): row for row in rows if (row.route_id, row.target) in keys}


_UNREAD = object()


def before_call(route, target: str, *, row=_UNREAD) -> Gate:
    """May a call for this route (a Route) to this target go through now? `row` is its
    circuit if the caller read it already (None: clean or none, see not_clean)."""
    if not target:
        return Gate(True)
    if row is _UNREAD:
        row = CircuitBreaker.objects.filter(route_id=route.pk, target=target).first()
    if row is None or row.state == CircuitState.CLOSED:
        return Gate(True)
    name = f"route {route.name!r}"
    now = timezone.now()
    if row.state == CircuitState.OPEN:
        if row.retry_at and row.retry_at > now:
            return Gate(False, row.retry_at, f"circuit open for {name} → {target}")
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
    return Gate(False, wait, f"circuit {row.state.replace('_', '-')} for {name} → {target}")


def _id(route) -> int:
    return route if isinstance(route, int) else route.pk


def record_successes(keys) -> None:
    """Close these (route id, target) circuits and reset their failure counts: one
    statement for a settled batch, which matches no row while all is well."""
    keys = {(route_id, target) for route_id, target in keys if target}
    if not keys:
        return
    match = Q()
    for route_id, target in keys:
        match |= Q(route_id=route_id, target=target)
    CircuitBreaker.objects.filter(match).exclude(
        state=CircuitState.CLOSED, consecutive_failures=0
    ).update(state=CircuitState.CLOSED, consecutive_failures=0, retry_at=None, opened_at=None)


def record_failure(route, target: str, error: str) -> None:
    """Count a retryable failure; open the circuit at the threshold or after a failed probe."""
    if not target:
        return
    now = timezone.now()
    row, _ = CircuitBreaker.objects.get_or_create(route_id=_id(route), target=target)
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
            "route": c.route.name,
            "connector": c.route.connector,
            "target": c.target,
            "state": c.state,
            "consecutive_failures": c.consecutive_failures,
            "retry_at": c.retry_at.isoformat() if c.retry_at else None,
        }
        for c in CircuitBreaker.objects.not_closed().select_related("route")
    ]


def close(circuits, *, actor, via: str) -> int:
    """Close these circuits (let calls through again), audited; returns how many were open
    or half open. Closed ones are left as they are and not named in the audit record."""
    with transaction.atomic():
        opened = list(circuits.not_closed().select_related("route"))
        if not opened:
            return 0
        n = CircuitBreaker.objects.filter(pk__in=[c.pk for c in opened]).update(
            state=CircuitState.CLOSED, consecutive_failures=0, retry_at=None
        )
        audit.record(
            actor=actor,
            via=via,
            action="circuit.close",
            target=", ".join(str(c) for c in opened)[:255],
            count=n,
        )
    return n
