"""A two-step chain for tests: an order paid creates an invoice at an HTTP sink, whose
answer's invoice number goes on in a follow-up event to a second step."""

from connectors.models import Route
from events.intake import ingest
from events.intake.parsing import ParsedEvent
from events.models import INTERNAL_SOURCE, Execution

INVOICE = {"invoice": {"number": "INV-7", "total": 120}}


def invoice_route(sink, **fields):
    """order.paid -> POST to the accounting sink; emits invoice.created with its number."""
    return Route.objects.create(
        name="create-invoice",
        event_type="order.paid",
        connector="http",
        action="post",
        params={"url": sink.url, "body": {"order": "{{ event.data.order.id }}"}},
        emit_type="invoice.created",
        emit_payload={
            "order": "{{ event.data.order.id }}",
            "invoice": "{{ result.body.invoice.number }}",
            "status": "{{ result.status }}",
        },
        backoff_base_seconds=0,
        backoff_cap_seconds=0,
        **fields,
    )


def slack_route(**fields):
    """invoice.created from the internal source -> the second step."""
    return Route.objects.create(
        **{
            "name": "post-invoice",
            "event_type": "invoice.created",
            "sources": [INTERNAL_SOURCE],
            "connector": "scripted",
            "action": "run",
            "params": {"script": []},
            **fields,
        }
    )


def paid(source, order_id=1, event_id="evt-paid-1"):
    ingest.ingest(
        source,
        ParsedEvent(
            event_id=event_id,
            type="order.paid",
            payload={"data": {"order": {"id": order_id}}},
            body_hash=event_id,
        ),
        headers={},
    )
    return Execution.objects.get(event__event_id=event_id)
