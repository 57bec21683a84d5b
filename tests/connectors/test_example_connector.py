"""The example connector from docs/connectors.md, end to end through the engine."""

import pytest

from connectors import registry
from connectors.models import Route
from events.engine import runner as engine
from events.models import Execution, ExecutionStatus
from tests.support.helpers import post
from tests.support.sink import Sink

pytestmark = pytest.mark.django_db


@pytest.fixture
def ticketing(settings):
    settings.CONNECTORS = [
        *settings.CONNECTORS,
        "examples.connectors.ticketing.TicketingConnector",
    ]
    settings.OUTBOUND_HOSTS = ["127.0.0.1"]
    settings.OUTBOUND_ALLOW_PRIVATE = ["127.0.0.1"]
    sink = Sink()
    yield sink
    sink.close()


def test_the_example_connector_is_registered_from_settings(ticketing):
    assert "ticketing" in registry.names()


def test_it_opens_a_ticket_with_a_templated_title(
    ticketing, client, source, django_capture_on_commit_callbacks
):
    ticketing.script = [{"status": 201, "body": {"id": "T-17"}}]
    route = Route(
        name="tickets",
        event_type="payment.failed",
        connector="ticketing",
        action="open",
        params={
            "url": ticketing.url,
            "title": "Payment failed: {{ event.data.order }}",
            "priority": "high",
        },
    )
    route.full_clean()
    route.save()
    with django_capture_on_commit_callbacks(execute=True):
        post(
            client,
            {"event_id": "p1", "type": "payment.failed", "data": {"order": "o-9"}},
            key=source.api_key,
        )
    ex = Execution.objects.get()

    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED
    (request,) = ticketing.requests
    assert request["body"] == {
        "title": "Payment failed: o-9",
        "priority": "high",
        "source_event": "p1",
    }
    assert request["key"] == ex.idempotency_key
    assert ex.attempt_set.get().response_summary == {"ticket": "T-17"}


def test_a_bad_priority_is_refused_when_the_route_is_saved(ticketing):
    from django.core.exceptions import ValidationError

    route = Route(
        name="t",
        event_type="x",
        connector="ticketing",
        action="open",
        params={"url": ticketing.url, "title": "t", "priority": "urgent!!"},
    )
    with pytest.raises(ValidationError, match="priority"):
        route.full_clean()
