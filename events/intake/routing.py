"""Where an event goes, and why: every route checked against it.

Ingestion decides once, with `Route.takes` (events/intake/ingest.py). This module is the
slow, talkative twin for people: the route tester (the admin's and `manage.py route
test`) and the event's admin page. For each route it says match or no match, at which
step (disabled, type, source, filter) and why, and the parameters the action would be
called with after templating. It changes nothing and runs no connector.
"""

import json
import uuid
from dataclasses import dataclass, field

from connectors import templating
from connectors.base import ExecutionContext, PermanentError
from connectors.models import Route, RouteCheck
from events.models import Event
from lib import filters


@dataclass
class Verdict:
    route: Route
    check: RouteCheck
    params: object = None  # after templating, secrets masked (for a route that matched)
    params_error: str = ""  # why templating would fail (the execution would fail so)
    recorded: bool | None = None  # a stored event: matched when it arrived (None: unknown)
    executions: list = field(default_factory=list)  # a stored event: its executions here

    @property
    def matched(self) -> bool:
        return self.check.matched

    @property
    def params_json(self) -> str:
        return json.dumps(self.params, indent=2, ensure_ascii=False)

    @property
    def changed_since(self) -> bool:
        """A stored event whose route would decide otherwise today (it was edited)."""
        return self.recorded is not None and self.recorded != self.matched

    def as_dict(self) -> dict:
        return {
            "route": self.route.name,
            "matched": self.matched,
            "step": self.check.step,
            "reasons": self.check.reasons,
            "params": self.params,
            "params_error": self.params_error,
            **({"matched_on_arrival": self.recorded} if self.recorded is not None else {}),
        }


def routes() -> list[Route]:
    """Every route, enabled or not, in the order ingestion checks them."""
    return list(Route.objects.order_by("pk"))


def explain(
    *,
    source: str,
    event_type: str,
    payload,
    headers: dict | None = None,
    event_id: str = "(pasted)",
    received_at: str = "",
) -> list[Verdict]:
    """Every route's verdict on an event described by hand (a pasted body and headers)."""
    subject = filters.subject(
        data=payload, headers=headers or {}, source=source, event_type=event_type
    )
    context = ExecutionContext(
        event_id=event_id,
        event_type=event_type,
        payload=payload,
        headers=subject["headers"],
        execution_id=0,
        idempotency_key="(made when the execution is created)",
        attempt=1,
        received_at=received_at,
    )
    verdicts = [_verdict(route, source, event_type, subject, context) for route in routes()]
    # The routes it matched first, then those it nearly matched, other types last.
    return sorted(verdicts, key=lambda v: _SHOWN_FIRST.index(v.check.step))


_SHOWN_FIRST = ("", "filter", "source", "disabled", "type")


def explain_event(event: Event) -> list[Verdict]:
    """Every route's verdict on a stored event, beside what was decided when it arrived
    and the executions it has."""
    verdicts = explain(
        source=event.source.name,
        event_type=event.type,
        payload=event.payload,
        headers=event.headers,
        event_id=event.event_id,
        received_at=event.received_at.isoformat(),
    )
    by_route: dict[int, list] = {}
    for execution in event.executions.order_by("pk"):
        by_route.setdefault(execution.route_id, []).append(execution)
    recorded = set(event.matched_routes) if event.matched_routes is not None else None
    for verdict in verdicts:
        verdict.executions = by_route.get(verdict.route.pk, [])
        if recorded is not None:
            verdict.recorded = verdict.route.pk in recorded
    return verdicts


def _verdict(route: Route, source: str, event_type: str, subject: dict, context) -> Verdict:
    check = route.explain(source, event_type, subject)
    verdict = Verdict(route=route, check=check)
    if check.matched:
        try:
            verdict.params = templating.preview(route.params, context)
        except PermanentError as exc:
            verdict.params_error = str(exc)
    return verdict


def find_event(reference: str) -> Event:
    """A stored event by its id (the UUID), `source/event_id`, or the sender's event id
    alone when one source has it. Raises LookupError saying what was not found."""
    reference = reference.strip()
    events = Event.objects.select_related("source")
    try:
        return events.get(pk=uuid.UUID(reference))
    except (ValueError, Event.DoesNotExist):
        pass
    source, slash, event_id = reference.partition("/")
    if slash:
        found = events.filter(source__name=source, event_id=event_id).first()
        if found is None:
            raise LookupError(f"No event {event_id!r} from source {source!r}.")
        return found
    found = list(events.filter(event_id=reference)[:2])
    if not found:
        raise LookupError(f"No event has the id {reference!r}.")
    if len(found) > 1:
        raise LookupError(
            f"Several sources sent an event {reference!r}: name one as <source>/{reference}."
        )
    return found[0]


def parse_headers(lines) -> dict[str, str]:
    """`Name: value` lines (blank ones skipped) as a dict; ValueError names a bad line."""
    headers = {}
    for line in lines:
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or any(ch.isspace() for ch in name.strip()):
            raise ValueError(f"{line.strip()!r}: write a header as 'Name: value'.")
        headers[name.strip()] = value.strip()
    return headers
