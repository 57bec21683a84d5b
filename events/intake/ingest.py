"""Storing an inbound event exactly once and fanning it out to its routes."""

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from events.engine import wake
from events.engine.chains import FollowUp
from events.intake.parsing import ParsedEvent, canonical_hash, check_structure
from events.models import (
    Event,
    EventStatus,
    Execution,
    ExecutionStatus,
    SignedBody,
    Source,
)
from events.operate import retention
from events.sources import auth, catalog
from guardrails import policy
from guardrails.models import RuntimeState
from lib import signatures
from lib.errors import IngestError
from lib.logcontext import bind, log_context

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    """What became of one delivery. `outcome` is the response body's `status`."""

    outcome: str  # accepted | held | blocked | unrouted | duplicate | conflict
    event: Event
    replay: bool = False  # a duplicate by its signed body, under another event id

    @property
    def http_status(self) -> int:
        return {"duplicate": 200, "conflict": 409}.get(self.outcome, 202)


def _insert(rows: list, suffix: str = "", suffix_params: tuple = ()) -> list:
    """One INSERT of these new rows of one model; returns the ids the database stored.
    `suffix` (ON CONFLICT ...) may take `suffix_params`.

    ingest() writes its rows this way rather than through the ORM's save or bulk_create:
    the statement is the same, and skipping the query compiler takes a quarter off the
    cost of a request. Only model metadata is interpolated; every value is a parameter.
    """
    meta = type(rows[0])._meta
    fields = [f for f in meta.concrete_fields if f is not meta.auto_field]
    quote = connection.ops.quote_name
    row_placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
        f"VALUES {', '.join([row_placeholders] * len(rows))} {suffix} RETURNING id"
    )
    params = [
        f.get_db_prep_save(getattr(row, f.attname), connection) for row in rows for f in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *suffix_params])
        return [row_id for (row_id,) in cursor.fetchall()]


def _insert_event_once(event: Event) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING: True if this call stored the event.

    The unique constraint on (source, event_id) decides, so concurrent deliveries of one
    event id on any number of processes or hosts store it once. Unlike catching
    IntegrityError, a conflict here leaves no error in the server log, no dead row and
    no burnt sequence value on PostgreSQL.
    """
    return bool(_insert([event], "ON CONFLICT (source_id, event_id) DO NOTHING"))


class _Replay(Exception):
    """Raised inside the event's transaction to undo its insert: the body was a replay."""


def _signed_digest(source: Source, raw: bytes | None) -> str | None:
    """The SHA-256 that identifies a body signed alone (github, shopify), else None: other
    schemes sign an id or a timestamp with the body, so a replay is caught by those."""
    if raw is None or source.auth_scheme not in signatures.BODY_ONLY:
        return None
    return hashlib.sha256(raw).hexdigest()


def _claim_signed_body(source: Source, digest: str, event_uuid, now) -> bool:
    """INSERT ... ON CONFLICT: True if this event now owns the body's row (new, or taken over
    from one older than the dedup window); False if a row within the window has it.

    The unique (source, digest) decides, as for event ids, so of two replays delivered at
    once on any processes only one gets this far with a True, and it is the original.
    """
    meta = SignedBody._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    event, seen_at = quote(meta.get_field("event").column), quote(meta.get_field("seen_at").column)
    cutoff = meta.get_field("seen_at").get_db_prep_save(now - retention.dedup_window(), connection)
    row = SignedBody(source=source, digest=digest, event_id=event_uuid, seen_at=now)
    # Only model metadata is interpolated; the cutoff is a bound parameter.
    conflict = (
        f"ON CONFLICT (source_id, digest) DO UPDATE SET {event} = excluded.{event}, "
        f"{seen_at} = excluded.{seen_at} WHERE {table}.{seen_at} < %s"
    )
    return bool(_insert([row], conflict, (cutoff,)))


def _replayed(source: Source, digest: str) -> Event | None:
    """The event a signed body first arrived as (None if it has just been pruned)."""
    row = SignedBody.objects.select_related("event").filter(source=source, digest=digest).first()
    return row.event if row is not None else None


def ingest(
    source: Source,
    parsed: ParsedEvent,
    *,
    headers: dict,
    state: RuntimeState | None = None,
    raw: bytes | None = None,
) -> IngestResult:
    """Store a parsed event once and create one execution per matching route.

    Returns `duplicate` for the same (source, event id) with the same body and `conflict`
    (counted on the stored event) for a different body; in both cases nothing new is
    stored. For a source whose scheme signs the body alone (github, shopify), `raw` (the
    request's bytes) already seen as another event id within the dedup window is a replay:
    `duplicate` of that first event (`replay` set), stored nowhere, counted as a rejected
    request with reason `replay`. The event and its executions commit together: the
    executions table is the queue, so there is nothing else to write, and workers can
    claim them from then on. Every log line written meanwhile carries the source and the
    event id. `state` is the runtime state row if the caller has just read it.
    """
    with log_context(source=source.name, event_id=parsed.event_id):
        return _ingest(
            source,
            parsed,
            headers=headers,
            state=state or RuntimeState.current(),
            digest=_signed_digest(source, raw),
        )


def _ingest(
    source: Source,
    parsed: ParsedEvent,
    *,
    headers: dict,
    state,
    digest: str | None,
    caused_by_id: int | None = None,
    depth: int = 0,
    refuse: str = "",
) -> IngestResult:
    """`refuse` stores the event blocked with that reason (a follow-up that cannot run)."""
    if refuse:
        decision = policy.Decision(policy.Verdict.BLOCK, refuse)
    else:
        try:
            decision = policy.decide_ingest(
                source=source, event_type=parsed.type, payload=parsed.payload, state=state
            )
        except policy.PayloadRejected as exc:
            raise IngestError(400, "schema_violation", str(exc)) from None
    subject = {
        "data": parsed.payload,
        "headers": headers,
        "source": source.name,
        "type": parsed.type,
    }
    routes = catalog.catalog(state.config_token).matching(source.name, parsed.type, subject)

    if decision.verdict is policy.Verdict.HOLD:
        status, execution_status = EventStatus.HELD, ExecutionStatus.HELD
    elif decision.verdict is policy.Verdict.BLOCK:
        status, execution_status = EventStatus.BLOCKED, ExecutionStatus.BLOCKED
    elif not routes:
        status, execution_status = EventStatus.UNROUTED, ExecutionStatus.QUEUED
    else:
        status, execution_status = EventStatus.ACCEPTED, ExecutionStatus.QUEUED

    now = timezone.now()
    event = Event(
        id=uuid.uuid4(),
        source=source,
        event_id=parsed.event_id,
        type=parsed.type,
        status=status,
        status_reason=decision.reason,
        payload=parsed.payload,
        headers=headers,
        body_hash=parsed.body_hash,
        received_at=now,
        matched_routes=[route.pk for route in routes],
        caused_by_id=caused_by_id,
        depth=depth,
    )
    bind(event_uuid=event.id)
    for _ in range(3):
        try:
            result = _store(event, routes, execution_status, decision.reason, digest)
        except _Replay:
            result = _replay_of(source, digest)
        if result is not None:
            return result
    raise RuntimeError("event vanished three times while being stored")  # pragma: no cover


def store_follow_up(follow: FollowUp) -> IngestResult:
    """Store a chained step's follow-up event (events.engine.chains), inside the caller's
    transaction: from the internal source, through the same guardrails, routes and filters
    as any event. One it cannot run (too deep, not renderable, a payload no event may
    have, refused by a payload schema) is stored blocked with the reason, so the chain
    shows where it stopped. Its id is the parent's: a second emission is a duplicate."""
    source = Source.internal()
    payload, problem = follow.payload, follow.problem
    if not problem:
        try:
            check_structure(
                payload,
                max_depth=settings.MAX_JSON_DEPTH,
                max_keys=settings.MAX_JSON_KEYS,
                max_string=settings.MAX_STRING_LENGTH,
            )
            if len(json.dumps(payload, ensure_ascii=False)) > settings.MAX_BODY_BYTES:
                raise IngestError(400, "too_large", "the follow-up payload is too large")
        except IngestError as exc:
            problem = f"the follow-up's payload cannot be stored: {exc.message}"
    if problem != follow.problem:  # the payload itself is what cannot be stored
        payload = {}
    parsed = ParsedEvent(
        event_id=follow.event_id,
        type=follow.type,
        payload=payload,
        body_hash=canonical_hash(payload),
    )
    kwargs = {"headers": {}, "digest": None, "caused_by_id": follow.parent_id}
    with log_context(source=source.name, event_id=parsed.event_id):
        state = RuntimeState.current()
        try:
            return _ingest(
                source, parsed, state=state, depth=follow.depth, refuse=problem, **kwargs
            )
        except IngestError as exc:  # a payload schema of the internal source refused it
            refused = f"refused at ingest: {exc.message}"
            return _ingest(
                source, parsed, state=state, depth=follow.depth, refuse=refused, **kwargs
            )


def _store(event: Event, routes, execution_status, reason: str, digest) -> IngestResult | None:
    """One transaction: store the event and its executions, or say which stored event it
    repeats. None if that one was pruned between our insert and our read (try again).
    Raises _Replay, rolling the insert back, if its signed body is another event's."""
    with transaction.atomic():
        if _insert_event_once(event):
            if digest is not None and not _claim_signed_body(
                event.source, digest, event.id, event.received_at
            ):
                raise _Replay
            if event.status != EventStatus.BLOCKED and routes:
                executions = [
                    Execution.new(
                        event, route, now=event.received_at, status=execution_status, reason=reason
                    )
                    for route in routes
                ]
                _insert(executions)
                # Those awaiting approval wait for an operator, not for a worker.
                if any(e.status == ExecutionStatus.QUEUED for e in executions):
                    # After the commit: a worker cannot look before the rows exist.
                    wake.notify_after_commit()
            return IngestResult(outcome=event.status, event=event)
        existing = Event.objects.filter(source=event.source, event_id=event.event_id).first()
        if existing is None:
            return None
        if existing.body_hash == event.body_hash:
            return IngestResult(outcome="duplicate", event=existing)
        Event.objects.filter(pk=existing.pk).update(conflicts=F("conflicts") + 1)
        return IngestResult(outcome="conflict", event=existing)


def _replay_of(source: Source, digest: str) -> IngestResult | None:
    """The answer to a replay: a duplicate of the event the body first came as, counted for
    operators. None if that event has just been pruned (try again)."""
    original = _replayed(source, digest)
    if original is None:
        return None
    logger.info("replay of event %s under another event id; nothing stored", original.event_id)
    auth.record_rejection(auth.Rejected("replay", source.name))
    return IngestResult(outcome="duplicate", event=original, replay=True)
