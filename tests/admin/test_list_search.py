"""The events, executions and attempts lists for triage: an event id found from its first
characters through an index, and a page that says so when nothing matches."""

import pytest
from django.db import connection
from django.utils import timezone

from events.admin import base
from events.models import EVENT_ID_PREFIX_MIN, Attempt, Event, Execution

pytestmark = pytest.mark.django_db

EVENTS = "/admin/events/event/"
EXECUTIONS = "/admin/events/execution/"
ATTEMPTS = "/admin/events/attempt/"
UUID_ID = "3f9a2c4e-8d1b-4f7a-9c3e-5b6d7e8f9a01"
IDS = ["evt_3f9a01", "evt_3f9a02", "evt_3f9b01", "EVT_3F9A03", UUID_ID, "abc", "abcd"]


@pytest.fixture
def history(source, route):
    """One event per id in IDS, each with an execution and an attempt whose worker is
    named after the event id, so every list shows which events it holds."""
    now = timezone.now()
    for event_id in IDS:
        event = Event.objects.create(
            source=source,
            event_id=event_id,
            type="order.created",
            payload={"event_id": event_id, "order": {"id": f"ord-{event_id}"}},
            body_hash="0" * 64,
            received_at=now,
        )
        execution = Execution.objects.create(
            event=event,
            route=route,
            idempotency_key=Execution.new_idempotency_key(),
            status="failed",
        )
        Attempt.objects.create(
            execution=execution, number=1, worker=f"w-{event_id}", outcome="permanent_error"
        )


def shown(admin_client, url, term, **filters) -> set[str]:
    """The event ids a list shows for a search."""
    response = admin_client.get(url, {"q": term, **filters})
    assert response.status_code == 200
    page = response.content.decode()
    marks = {EVENTS: ">{}<", EXECUTIONS: 'title="shop/{}"', ATTEMPTS: ">w-{}<"}[url]
    return {event_id for event_id in IDS if marks.format(event_id) in page}


@pytest.mark.parametrize("url", [EVENTS, EXECUTIONS, ATTEMPTS])
def test_with_no_search_every_list_shows_every_event(admin_client, history, url):
    assert shown(admin_client, url, "") == set(IDS)


@pytest.mark.parametrize("url", [EVENTS, EXECUTIONS, ATTEMPTS])
@pytest.mark.parametrize(
    ("term", "found"),
    [
        ("evt_3f9a", {"evt_3f9a01", "evt_3f9a02"}),  # not evt_3f9b01, not EVT_3F9A03
        ("evt_3f9a0", {"evt_3f9a01", "evt_3f9a02"}),
        ("3f9a2", {UUID_ID}),  # the start of a UUID
        ("EVT_", {"EVT_3F9A03"}),  # case counts, as for a whole id
        ("evt_3f9a02", {"evt_3f9a02"}),  # a whole id is its own prefix
        ("abcd", {"abcd"}),
        ("evt_3f9c", set()),
    ],
)
def test_the_lists_find_events_by_the_start_of_their_event_id(
    admin_client, history, url, term, found
):
    assert shown(admin_client, url, term) == found


@pytest.mark.parametrize("url", [EVENTS, EXECUTIONS, ATTEMPTS])
def test_a_term_shorter_than_the_minimum_is_an_exact_event_id_only(admin_client, history, url):
    assert EVENT_ID_PREFIX_MIN == 4
    assert shown(admin_client, url, "abc") == {"abc"}, "not abcd"
    assert shown(admin_client, url, "evt") == set()
    assert shown(admin_client, url, "3f9") == set()


@pytest.mark.parametrize("url", [EVENTS, EXECUTIONS, ATTEMPTS])
def test_a_whole_event_id_and_a_payload_field_are_still_found(admin_client, history, url):
    assert shown(admin_client, url, UUID_ID) == {UUID_ID}
    assert shown(admin_client, url, "order.id=ord-evt_3f9b01") == {"evt_3f9b01"}


@pytest.mark.parametrize("url", [EVENTS, EXECUTIONS, ATTEMPTS])
def test_a_prefix_search_stays_within_the_filters(admin_client, history, url):
    status = {EVENTS: "status__exact", EXECUTIONS: "status__exact", ATTEMPTS: "outcome__exact"}
    assert shown(admin_client, url, "evt_3f9a", **{status[url]: "held"}) == set()


def test_a_prefix_matching_more_than_the_scan_searches_the_first_by_event_id_and_says_so(
    admin_client, history, monkeypatch
):
    monkeypatch.setattr(base, "EVENT_ID_PREFIX_SCAN", 1)

    response = admin_client.get(EVENTS, {"q": "evt_3f9"})

    assert shown(admin_client, EVENTS, "evt_3f9") == {"evt_3f9a01"}
    messages = [str(m) for m in response.context["messages"]]
    assert messages == [
        "More than 1 events have an event id starting with “evt_3f9”: only the first 1 of "
        "them (by event id) are searched. Type more of the id."
    ]
    assert not list(admin_client.get(EVENTS, {"q": "evt_3f9a01"}).context["messages"])


def test_the_prefix_search_reads_an_index_on_either_database(history):
    found = Event.objects.with_event_id_prefix("evt_3f9a").values("pk")[:1000]
    sql, params = found.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # a table this small is read whole
            cursor.execute("EXPLAIN " + sql, params)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        plan = " ".join(str(row) for row in cursor.fetchall())

    index = {"postgresql": "events_event_event_id_c_idx", "sqlite": "events_event_event_id_idx"}
    assert index[connection.vendor] in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, "read in the index's order"


# -- when nothing matches ------------------------------------------------------------------


@pytest.mark.parametrize(("url", "things"), [(EVENTS, "events"), (EXECUTIONS, "executions")])
def test_a_search_that_finds_nothing_says_so_with_the_term(admin_client, history, url, things):
    page = admin_client.get(url, {"q": "nothing<here>"}).content.decode()

    assert f"No {things} match “nothing&lt;here&gt;”." in page
    assert 'id="result_list"' not in page
    assert "No results found" not in page, "unfold's generic note is replaced"
    assert "page 1" not in page
    assert 'href="?"' in page  # all of them, with no search


def test_the_attempts_list_says_so_too(admin_client, history):
    page = admin_client.get(ATTEMPTS, {"q": "evt_9999"}).content.decode()

    assert "No attempts match “evt_9999”." in page
    assert "The search takes: An event id, whole or its first 4 characters" in page


def test_a_search_under_filters_that_finds_nothing_offers_to_clear_the_filters(
    admin_client, history
):
    response = admin_client.get(EXECUTIONS, {"q": "evt_3f9a", "status__exact": "held"})
    page = response.content.decode()

    assert "No executions match “evt_3f9a”." in page
    assert "The search looked only within the filters: status." in page
    assert '<a href="?q=evt_3f9a"' in page  # the same search, no filter
    assert '<a href="?status__exact=held"' in page  # the same filters, no search
    assert shown(admin_client, EXECUTIONS, "evt_3f9a") == {"evt_3f9a01", "evt_3f9a02"}


def test_filters_that_match_nothing_are_named_with_a_link_to_clear_them(admin_client, history):
    page = admin_client.get(EVENTS, {"status__exact": "held", "type": "order.created"})
    page = page.content.decode()

    assert "No events match these filters." in page
    assert "Filtered by type, status." in page
    assert '<a href="?"' in page


def test_a_page_past_the_last_says_so_and_links_back(admin_client, history):
    page = admin_client.get(EVENTS, {"p": 3, "q": "evt_3f9a"}).content.decode()

    assert "No more events: page 3 is past the last one." in page
    assert '<a href="?q=evt_3f9a"' in page
    assert "page 3" in page and "← previous" in page


def test_an_empty_table_says_it_is_empty(admin_client, db):
    page = admin_client.get(ATTEMPTS).content.decode()

    assert "No attempts yet." in page
    assert "page 1" not in page
