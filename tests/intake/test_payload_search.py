"""Finding events by a payload field (`order.id=123`): through a GIN index on PostgreSQL,
over a bounded number of the newest events on SQLite."""

import datetime

import pytest
from django.db import connection
from django.utils import timezone

from events import models as event_models
from events.models import Event, payload_field_term

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("term", "parsed"),
    [
        ("order.id=123", (["order", "id"], [123, "123"])),
        ("order.id=ord_1001", (["order", "id"], ["ord_1001"])),
        ('customer.email="a@b.c"', (["customer", "email"], ["a@b.c", '"a@b.c"'])),
        ("paid=true", (["paid"], [True, "true"])),
        ("total = 4.5", None),  # spaces around the name: not a field term
        ("evt_123", None),
        ("order.id=", None),
    ],
)
def test_a_payload_field_term_is_a_path_and_the_values_it_may_hold(term, parsed):
    assert payload_field_term(term) == parsed


def store(source, n, payload, *, age_minutes=0):
    return Event.objects.create(
        source=source,
        event_id=f"e{n}",
        type="order.created",
        payload=payload,
        body_hash=str(n),
        received_at=timezone.now() - datetime.timedelta(minutes=age_minutes),
    )


def test_events_are_found_by_a_payload_field_as_a_number_or_as_text(source):
    number = store(source, 1, {"order": {"id": 123, "total": 5}})
    text = store(source, 2, {"order": {"id": "123"}})
    store(source, 3, {"order": {"id": 1234}})
    store(source, 4, {"id": 123})

    path, values = payload_field_term("order.id=123")
    found = set(Event.objects.with_payload_field(path, values).values_list("pk", flat=True))

    assert found == {number.pk, text.pk}


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the bound is SQLite's")
def test_on_sqlite_the_search_reads_only_the_newest_events(source, monkeypatch):
    monkeypatch.setattr(event_models, "PAYLOAD_SEARCH_SCAN", 2)
    old = store(source, 1, {"order": {"id": 7}}, age_minutes=30)
    store(source, 2, {"order": {"id": 8}}, age_minutes=2)
    new = store(source, 3, {"order": {"id": 7}}, age_minutes=1)

    found = list(Event.objects.with_payload_field(["order", "id"], [7]))

    assert found == [new]
    assert old not in found


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the GIN index is PostgreSQL's")
def test_on_postgresql_the_search_is_served_by_the_gin_index(source):
    store(source, 1, {"order": {"id": 123}})
    queryset = Event.objects.with_payload_field(["order", "id"], [123, "123"])
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = queryset.query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "events_event_payload_gin" in plan, plan
