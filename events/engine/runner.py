"""Running claimed executions: start (guardrails, attempt rows), call, settle.

- `start` runs in the claim's transaction, right after the claim: the guardrail policy
  is asked for every execution with the runtime state read in that transaction
  (RuntimeState.for_claim), so a kill switch committed before it holds the whole batch,
  and the attempt rows commit with the claim. Only then are the calls handed to threads.
- `call` runs on a pool thread and never touches the database for the built-in
  connectors: everything it needs was loaded by `start`, and the guardrail settings it
  consults (outbound hosts, callables) are the ones `start` read, bound to the thread.
- `settle` records a batch of finished calls in one transaction: attempt rows, the
  executions' next states (conditional on the lease still being ours), circuits.
"""

import datetime
import itertools
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone

from connectors import circuits, registry, templating
from connectors.base import Connector, ExecutionContext, PermanentError, RetryableError
from events.engine import chains, claims
from events.models import Attempt, AttemptOutcome, Execution, ExecutionStatus
from guardrails import config, policy
from guardrails.models import RuntimeState
from lib.logcontext import log_context

logger = logging.getLogger("events.engine")

MAX_ERROR_TEXT = 4000


@dataclass
class Job:
    """A started execution: what a pool thread needs to call its connector."""

    execution: Execution
    attempt: Attempt
    connector: Connector | None
    target: str
    dry_run: bool
    snapshot: Any
    context: ExecutionContext
    started: float = field(default_factory=time.monotonic)
    # Its circuit was open, half-open or counting failures when it started: a success
    # must reset it. (A clean or missing circuit needs no write.)
    circuit_to_reset: bool = False

    @property
    def log_fields(self) -> dict:
        ex = self.execution
        return {
            "execution_id": ex.pk,
            "worker": ex.lease_owner,
            "event_id": ex.event.event_id,
            "event_uuid": ex.event_id,
            "source": ex.event.source.name,
            "route": ex.route.name,
            "attempt": self.attempt.number,
        }


@dataclass
class Outcome:
    """What one call did."""

    job: Job
    outcome: str
    error_class: str = ""
    error_text: str = ""
    summary: dict = field(default_factory=dict)
    retry_after: float | None = None
    finished_at: datetime.datetime = field(default_factory=timezone.now)
    duration_ms: int = 0
    # What the action gave back, as a follow-up event's templates see it ({{ result }}).
    result: object = None


@dataclass
class Started:
    """What `start` did with a claimed batch."""

    jobs: list[Job] = field(default_factory=list)
    # execution id -> status, for those not handed to a connector (held, blocked,
    # cancelled, or "deferred" back to retrying without spending an attempt)
    not_started: dict[int, str] = field(default_factory=dict)


def _give_back(ids, owner: str, status: str, reason: str, *, until=None) -> None:
    """Claimed but not attempted: leave running for `status` and return the attempt."""
    now = timezone.now()
    fields = {
        "status": status,
        "status_reason": reason,
        "lease_owner": "",
        "lease_expires_at": None,
        "attempts": F("attempts") - 1,
        "total_attempts": F("total_attempts") - 1,
        "updated_at": now,
    }
    if until is not None:
        fields["next_attempt_at"] = until
    if status in (ExecutionStatus.CANCELLED, ExecutionStatus.FAILED):
        fields["finished_at"] = now
    Execution.objects.filter(
        pk__in=list(ids), status=ExecutionStatus.RUNNING, lease_owner=owner
    ).update(**fields)


def _connector_and_target(route) -> tuple[Connector | None, str]:
    try:
        connector = registry.get(route.connector)
    except registry.UnknownConnector:
        return None, ""
    try:
        return connector, connector.target(route.action, route.params)
    except Exception:  # a target the connector cannot work out has no circuit
        logger.debug("route %s: no circuit target", route.name, exc_info=True)
        return connector, ""


def start(execution_ids, *, owner: str, state) -> Started:
    """Decide, for each claimed execution, whether its connector may be called now, and
    create the attempt rows of those that may. Runs in the claim's transaction."""
    result = Started()
    executions = {
        ex.pk: ex
        for ex in Execution.objects.filter(pk__in=list(execution_ids)).select_related(
            "event__source", "route"
        )
    }
    ordered = [executions[i] for i in execution_ids if i in executions]
    snap = config.snapshot(state.config_token)
    prepared = [(ex, *_connector_and_target(ex.route)) for ex in ordered]
    circuit_rows = circuits.not_clean((ex.route_id, target) for ex, _, target in prepared)
    pending: list[Job] = []
    given_back: dict[tuple, list[int]] = {}

    def flush():
        # Rate limits count attempt starts, so rows created so far must be visible first.
        if pending:
            Attempt.objects.bulk_create([job.attempt for job in pending])
            result.jobs.extend(pending)
            pending.clear()

    for ex, connector, target in prepared:
        if snap.rate_limited:
            flush()
        try:
            job_or_verdict = _decide(ex, connector, target, state, snap, circuit_rows, owner)
        except DatabaseError:
            raise
        except Exception as exc:
            # A bug met while deciding (not the database): fail this one execution with
            # the reason, rather than fail the batch and claim it again forever.
            logger.exception("execution %s: could not be started", ex.pk)
            job_or_verdict = (
                ExecutionStatus.FAILED,
                f"the worker could not start it: {exc}"[:MAX_ERROR_TEXT],
                None,
            )
        if isinstance(job_or_verdict, Job):
            pending.append(job_or_verdict)
            continue
        status, reason, until = job_or_verdict
        given_back.setdefault((status, reason, until), []).append(ex.pk)
        result.not_started[ex.pk] = "deferred" if status == ExecutionStatus.RETRYING else status
    flush()
    for (status, reason, until), ids in given_back.items():
        _give_back(ids, owner, status, reason, until=until)
    return result


def _decide(ex, connector, target, state, snap, circuit_rows, owner):
    """A Job for an execution that may run now, or (status, reason, until) for one that
    goes back without an attempt: cancelled, held, blocked, or deferred (retrying)."""
    if ex.event.payload is None:
        # Its event was pruned (docs/retention.md) after a replay queued it.
        reason = "its event was pruned; there is no payload to run it with"
        return ExecutionStatus.CANCELLED, reason, None
    decision = policy.decide_execution(
        execution=ex, state=state, starts_since=Attempt.objects.start_times
    )
    if decision.verdict is policy.Verdict.DEFER:
        # A rate limit: wait for the window without spending an attempt.
        return ExecutionStatus.RETRYING, decision.reason, decision.until
    if not decision.allowed:
        status = (
            ExecutionStatus.BLOCKED
            if decision.verdict is policy.Verdict.BLOCK
            else ExecutionStatus.HELD
        )
        return status, decision.reason, None
    gate = circuits.before_call(ex.route, target, row=circuit_rows.get((ex.route_id, target)))
    if not gate.allowed:
        return ExecutionStatus.RETRYING, gate.reason, gate.retry_at
    number = ex.total_attempts
    context = ExecutionContext(
        event_id=ex.event.event_id,
        event_type=ex.event.type,
        payload=ex.event.payload,
        headers=ex.event.headers,
        execution_id=ex.pk,
        idempotency_key=ex.idempotency_key,
        attempt=number,
        deadline=ex.lease_expires_at,
        received_at=ex.event.received_at.isoformat(),
    )
    return Job(
        execution=ex,
        attempt=Attempt(execution=ex, number=number, worker=owner, started_at=timezone.now()),
        connector=connector,
        target=target,
        dry_run=decision.dry_run,
        snapshot=snap,
        context=context,
        circuit_to_reset=(ex.route_id, target) in circuit_rows,
    )


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_TEXT]


def call(job: Job) -> Outcome:
    """Call the connector for a started job and classify what happened. Never raises
    for what the connector does."""
    with log_context(**job.log_fields), config.bound(job.snapshot):
        return _call(job)


def _call(job: Job) -> Outcome:
    route, context = job.execution.route, job.context
    try:
        if job.connector is None:
            raise registry.UnknownConnector(f"Unknown connector {route.connector!r}.")
        # Secret parameters stay sealed through templating, checks and dry runs; only
        # execute sees them in plain (a route saved before sealing holds them in plain).
        params = templating.render(route.params, context)
        try:
            job.connector.validate(route.action, params)
            job.connector.check_rendered(route.action, params, template=route.params)
        except ValueError as exc:
            raise PermanentError(f"parameters after templating: {exc}") from None
        if job.dry_run:
            result = job.connector.dry_run(route.action, params, context)
            return _outcome(job, AttemptOutcome.DRY_RUN, summary=result.summary or {})
        result = job.connector.execute(route.action, job.connector.reveal_secrets(params), context)
        return _outcome(
            job, AttemptOutcome.SUCCEEDED, summary=result.summary or {}, result=result.templated()
        )
    except RetryableError as exc:
        return _outcome(
            job,
            AttemptOutcome.RETRYABLE_ERROR,
            error_class=type(exc).__name__,
            error_text=_error_text(exc),
            summary=exc.summary,
            retry_after=exc.retry_after,
        )
    except (PermanentError, registry.UnknownConnector) as exc:
        return _outcome(
            job,
            AttemptOutcome.PERMANENT_ERROR,
            error_class=type(exc).__name__,
            error_text=_error_text(exc),
            summary=getattr(exc, "summary", {}),
        )
    except Exception as exc:
        # A bug in the connector or a failure it did not classify: record the traceback
        # and treat it as permanent.
        logger.exception("execution %s: connector raised", job.execution.pk)
        return _outcome(
            job,
            AttemptOutcome.PERMANENT_ERROR,
            error_class=f"{type(exc).__module__}.{type(exc).__qualname__}",
            error_text=traceback.format_exc()[-MAX_ERROR_TEXT:],
        )


def _outcome(job: Job, outcome: str, **fields) -> Outcome:
    return Outcome(
        job=job,
        outcome=outcome,
        duration_ms=int((time.monotonic() - job.started) * 1000),
        **fields,
    )


def update_rows(model, values_by_pk: dict[int, dict], *, only_where=None) -> set[int]:
    """UPDATE each row (by primary key) to its own values, and return the keys updated.
    `only_where` ({field: value}) is what a row must still hold to be updated.

    One statement for all rows with the same fields: UPDATE ... FROM (VALUES ...) on
    PostgreSQL (one round trip, conditional, RETURNING what it moved); on SQLite one
    prepared statement run for each row, after reading which rows qualify, which is exact
    there because the transaction holds the write lock from its start. Django's
    bulk_update builds one CASE per field and row, which cost more than everything else a
    worker did."""
    if only_where and connection.vendor != "postgresql":
        keep = set(
            model.objects.filter(pk__in=list(values_by_pk), **only_where).values_list(
                "pk", flat=True
            )
        )
        values_by_pk = {pk: v for pk, v in values_by_pk.items() if pk in keep}
        only_where = None
    updated: set[int] = set()
    by_fields: dict[tuple, list] = {}
    for pk, values in values_by_pk.items():
        by_fields.setdefault(tuple(sorted(values)), []).append((pk, values))
    meta = model._meta
    for names, rows in by_fields.items():
        fields = [meta.get_field(name) for name in names]
        params = [
            [pk] + [f.get_db_prep_save(values[f.name], connection) for f in fields]
            for pk, values in rows
        ]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                flat = list(itertools.chain.from_iterable(params))
                where = [
                    (meta.get_field(name), value) for name, value in (only_where or {}).items()
                ]
                flat += [f.get_db_prep_save(value, connection) for f, value in where]
                cursor.execute(_update_from_values(meta, fields, len(rows), where), flat)
                updated.update(pk for (pk,) in cursor.fetchall())
            else:
                by_pk = [[*values, pk] for pk, *values in params]
                cursor.executemany(_update_by_pk(meta, fields), by_pk)
                updated.update(pk for pk, _ in rows)
    return updated


def _update_by_pk(meta, fields) -> str:
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    # Only model metadata is interpolated; every value is a parameter.
    return f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"  # noqa: S608


def _update_from_values(meta, fields, n: int, where=()) -> str:
    """One statement for n rows (PostgreSQL): UPDATE ... FROM (VALUES ...), each value
    cast to its column's type, only where the row still holds `where`'s values."""
    quote = connection.ops.quote_name
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    names = ", ".join(["pk", *(f"v{i}" for i in range(len(fields)))])
    row = "(" + ", ".join(["%s"] * (len(fields) + 1)) + ")"
    assignments = ", ".join(
        f"{quote(f.column)} = v.v{i}::{f.db_type(connection)}" for i, f in enumerate(fields)
    )
    return (
        f"UPDATE {table} SET {assignments} FROM (VALUES {', '.join([row] * n)}) "  # noqa: S608
        f"AS v({names}) WHERE {table}.{pk} = v.pk::{meta.pk.db_type(connection)}"
        + "".join(f" AND {table}.{quote(f.column)} = %s" for f, _ in where)
        + f" RETURNING {table}.{pk}"
    )


def _record_attempts(outcomes: list[Outcome]) -> None:
    update_rows(
        Attempt,
        {
            o.job.attempt.pk: {
                "finished_at": o.finished_at,
                "outcome": o.outcome,
                "error_class": o.error_class[:255],
                "error_message": o.error_text[:MAX_ERROR_TEXT],
                "response_summary": o.summary or {},
                "duration_ms": o.duration_ms,
            }
            for o in outcomes
        },
    )


def next_state(o: Outcome) -> tuple[str, dict]:
    """The execution's next status and fields after this outcome."""
    ex, route = o.job.execution, o.job.execution.route
    if o.outcome == AttemptOutcome.SUCCEEDED:
        return ExecutionStatus.SUCCEEDED, {"last_error": ""}
    if o.outcome == AttemptOutcome.DRY_RUN:
        return ExecutionStatus.DRY_RUN, {
            "last_error": "",
            "status_reason": "dry run: nothing was done",
        }
    if o.outcome == AttemptOutcome.RETRYABLE_ERROR and ex.attempts < route.max_attempts:
        delay = route.retry_delay(ex.attempts)
        if o.retry_after is not None:
            delay = max(delay, min(float(o.retry_after), route.backoff_cap_seconds))
        when = timezone.now() + datetime.timedelta(seconds=delay)
        return ExecutionStatus.RETRYING, {"last_error": o.error_text, "next_attempt_at": when}
    fields = {"last_error": o.error_text}
    if o.outcome == AttemptOutcome.RETRYABLE_ERROR:
        fields["status_reason"] = f"gave up after {ex.attempts} attempts"
    return ExecutionStatus.FAILED, fields


def settle(outcomes: list[Outcome], *, owner: str) -> dict[int, str]:
    """Record finished calls: attempts, next states, circuits. Run in a transaction.

    Returns execution id -> new status, or `lease_lost` where the lease was no longer
    ours: the reaper gave the execution to be retried, and recorded this attempt as
    `lost`. That record stays (the history says the execution went back because its
    lease ran out); the late result is only logged."""
    if not outcomes:
        return {}
    now = timezone.now()
    statuses: dict[int, str] = {}
    moves: dict[int, dict] = {}
    for o in outcomes:
        status, fields = next_state(o)
        statuses[o.job.execution.pk] = status
        fields.update(status=status, lease_owner="", lease_expires_at=None, updated_at=now)
        if status in (ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED):
            fields["finished_at"] = now
        moves[o.job.execution.pk] = fields
    # A conditional update: only rows still running under our lease move (executions
    # before attempts, the order the reaper takes them in).
    mine = update_rows(
        Execution, moves, only_where={"status": ExecutionStatus.RUNNING, "lease_owner": owner}
    )
    _record_attempts([o for o in outcomes if o.job.execution.pk in mine])
    for o in outcomes:
        if o.job.execution.pk not in mine:
            _record_late(o)
            statuses[o.job.execution.pk] = "lease_lost"
    # Chained steps: the follow-up event is stored in this transaction, with the success
    # it follows from, or not at all.
    chains.emit(
        [
            o
            for o in outcomes
            if o.job.execution.pk in mine and o.outcome == AttemptOutcome.SUCCEEDED
        ]
    )
    circuits.record_successes(
        (o.job.execution.route_id, o.job.target)
        for o in outcomes
        if o.outcome == AttemptOutcome.SUCCEEDED and o.job.circuit_to_reset
    )
    for o in outcomes:
        if o.outcome == AttemptOutcome.RETRYABLE_ERROR:
            circuits.record_failure(o.job.execution.route_id, o.job.target, o.error_text)
    return statuses


def _record_late(o: Outcome) -> None:
    """A result that came after the lease was lost: write it only on an attempt nobody has
    closed (the worker's lease was cancelled or replayed away while the reaper had not yet
    run); an attempt the reaper marked `lost` keeps that record."""
    a = o.job.attempt
    written = Attempt.objects.filter(pk=a.pk, finished_at__isnull=True).update(
        finished_at=o.finished_at,
        outcome=o.outcome,
        error_class=o.error_class[:255],
        error_message=o.error_text[:MAX_ERROR_TEXT],
        response_summary=o.summary or {},
        duration_ms=o.duration_ms,
    )
    logger.warning(
        "execution %s: lease lost before the result (%s) was saved; %s",
        o.job.execution.pk,
        o.outcome,
        "it is recorded on the attempt" if written else "the attempt stays as the reaper left it",
    )


def abandon(jobs: list[Job], *, owner: str, why: str) -> int:
    """Give executions whose calls are still going back to the queue (a second SIGTERM,
    or the grace period over). Their attempts are recorded as abandoned: the call may or
    may not have had its effect. Run in a transaction. Returns how many went back."""
    if not jobs:
        return 0
    now = timezone.now()
    update_rows(
        Attempt,
        {
            job.attempt.pk: {
                "finished_at": now,
                "outcome": AttemptOutcome.ABANDONED,
                "error_class": "WorkerStopped",
                "error_message": why,
                "duration_ms": int((time.monotonic() - job.started) * 1000),
            }
            for job in jobs
        },
    )
    return Execution.objects.filter(
        pk__in=[job.execution.pk for job in jobs],
        status=ExecutionStatus.RUNNING,
        lease_owner=owner,
    ).update(
        status=ExecutionStatus.QUEUED,
        lease_owner="",
        lease_expires_at=None,
        next_attempt_at=now,
        last_error=f"abandoned: {why}",
        updated_at=now,
    )


def run(execution_id: int, *, owner: str = "inline") -> str:
    """Claim, start, call and settle one execution in this thread, the way a worker does
    a whole batch. Returns its status afterwards, `deferred`, or `skipped` if it was not
    claimable (another worker has it, it is not due, or it is finished)."""
    with transaction.atomic():
        if not claims.claim_one(execution_id, owner=owner):
            return "skipped"
        started = start([execution_id], owner=owner, state=RuntimeState.for_claim())
    if not started.jobs:
        return started.not_started[execution_id]
    outcome = call(started.jobs[0])
    with transaction.atomic():
        return settle([outcome], owner=owner)[execution_id]
