"""An event's page shows the chain of steps it is part of, as a tree."""

import re

import pytest

from events.engine import runner as engine
from events.models import Event, Execution
from tests.support.chains import INVOICE, invoice_route, paid, slack_route

pytestmark = pytest.mark.django_db


def test_an_events_page_shows_its_chain_from_the_first_step_to_the_last(
    admin_client, source, sink
):
    sink.script = [{"status": 200, "body": INVOICE}]
    invoice_route(sink)
    slack_route(params={"script": ["permanent"]})
    first = paid(source)
    engine.run(first.pk)
    follow = Event.objects.get(caused_by=first)
    second = Execution.objects.get(event=follow)
    engine.run(second.pk)

    for shown, current in ((first.event, first.event), (follow, follow)):
        page = admin_client.get(f"/admin/events/event/{shown.pk}/change/").content.decode()
        chain = page[page.index('id="event-chain"') :]
        chain = chain[: chain.index("</div>")]
        assert re.findall(r'data-depth="(\d)"', chain) == ["0", "1"]
        assert f"execution {first.pk}</a> · create-invoice" in chain
        assert f"execution {second.pk}</a> · post-invoice" in chain
        assert re.search(r"status-failed\">failed", chain), "the failed second step in red"
        assert chain.count("this event") == 1
        assert f'/admin/events/event/{current.pk}/change/"><b>{current.type}' in chain


def test_an_event_outside_any_chain_says_so(admin_client, source, sink):
    invoice_route(sink)
    execution = paid(source)  # not run yet: it has emitted nothing

    page = admin_client.get(f"/admin/events/event/{execution.event.pk}/change/")

    assert "not part of a chain" in page.content.decode()
