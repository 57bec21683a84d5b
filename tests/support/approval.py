"""Routes that require approval, and events sent to them through real ingestion."""

from connectors.models import Route
from events.intake import ingest
from events.intake.parsing import ParsedEvent
from events.models import Execution


def approval_route(name="refunds", *, timeout=None, key="", **fields):
    """A route of `<name>.*` events to the log connector that requires approval."""
    return Route.objects.create(
        name=name,
        event_type=f"{name}.*",
        connector="log",
        action="record",
        requires_approval=True,
        approval_timeout=timeout,
        ordering_key=key,
        **fields,
    )


def send(source, event_type, event_id, **data):
    """Ingest one event as /webhook would; returns the ingest result."""
    return ingest.ingest(
        source,
        ParsedEvent(
            event_id=event_id, type=event_type, payload={"data": data}, body_hash=event_id
        ),
        headers={},
    )


def awaiting(source, route, n=1, *, prefix="r"):
    """`n` executions of `route` awaiting approval, oldest first."""
    for i in range(n):
        send(source, f"{route.name}.requested", f"{prefix}{i}", refund={"id": i})
    return list(Execution.objects.filter(route=route).order_by("pk"))
