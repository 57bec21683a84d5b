"""Chained steps: when a route with `emit_type` succeeds, it emits a follow-up event.

The follow-up is rendered here from the triggering event, the execution and the action's
result (`{{ result.body.invoice.number }}`), and stored by intake like any inbound event
(events.intake.ingest.store_follow_up: the internal source, the same guardrails, routes,
filters and engine). The engine sits below intake, so intake hands its storing function in
when the app starts (EventsConfig.ready -> connect).

Exactly once: the follow-up's event id is derived from the parent execution's idempotency
key (and its emit generation), and it is stored in the transaction that records the
success. A retried or replayed step that succeeds again stores nothing new: the id is
taken. A replay asked to emit again (`replay --emit-again`) moves the generation on.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import DataError, IntegrityError, transaction

from connectors import templating

logger = logging.getLogger(__name__)
_store: Callable[["FollowUp"], object] | None = None


@dataclass(frozen=True)
class FollowUp:
    """A follow-up event to store, or to store blocked with `problem`."""

    parent_id: int  # the execution whose success emits it
    event_id: str
    type: str
    payload: object
    depth: int
    problem: str = ""


def connect(store: Callable[[FollowUp], object]) -> None:
    global _store
    _store = store


def follow_up_id(idempotency_key: str, generation: int) -> str:
    """The follow-up's event id: the same through every retry and replay of the step."""
    return idempotency_key if generation == 0 else f"{idempotency_key}.{generation}"


def follow_up(outcome) -> FollowUp | None:
    """The follow-up event a successful outcome emits, or None (its route emits none)."""
    ex = outcome.job.execution
    route = ex.route
    if not route.emit_type:
        return None
    parent = ex.event
    scope = {
        **parent.template_scope(),
        "execution": {
            "id": ex.pk,
            "idempotency_key": ex.idempotency_key,
            "attempt": outcome.job.attempt.number,
            "route": route.name,
        },
        "result": outcome.result if outcome.result is not None else {},
    }
    depth = parent.depth + 1
    event_id = follow_up_id(ex.idempotency_key, ex.emit_generation)
    problem = ""
    try:
        event_type = templating.render_string(route.emit_type, scope)
        payload = templating.render(route.emit_payload, scope)
    except templating.MissingField as exc:
        event_type, payload = route.emit_type, {}
        problem = f"the follow-up could not be rendered: {exc}"
    if not isinstance(event_type, str) or not event_type.strip():
        event_type = route.emit_type
        problem = problem or "the follow-up's type rendered empty or not as text"
    if not problem and depth > settings.MAX_CHAIN_DEPTH:
        problem = (
            f"chain deeper than MAX_CHAIN_DEPTH ({settings.MAX_CHAIN_DEPTH}): step {depth} "
            "is not run"
        )
    return FollowUp(
        parent_id=ex.pk,
        event_id=event_id,
        type=event_type[:255],
        payload=payload,
        depth=depth,
        problem=problem,
    )


def emit(outcomes) -> None:
    """Store the follow-up events of these successful outcomes (inside the caller's
    transaction, the one that records the successes). One the database refuses (data it
    cannot hold) is stored blocked with the reason instead, so the successes it follows
    are still recorded."""
    if _store is None:  # pragma: no cover - wired in EventsConfig.ready
        raise RuntimeError("chains.connect() was not called")
    for outcome in outcomes:
        found = follow_up(outcome)
        if found is None:
            continue
        try:
            with transaction.atomic():
                _store(found)
        except (DataError, IntegrityError) as exc:
            logger.exception("execution %s: its follow-up could not be stored", found.parent_id)
            problem = f"the follow-up could not be stored: {type(exc).__name__}"
            _store(replace(found, payload={}, problem=problem))
