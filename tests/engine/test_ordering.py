"""Ordering keys in one process: one running per route and key, in the order received,
retries and holds keeping their place, `block` and `skip`, replays in the middle of a key,
and the database refusing a second running execution of a key."""

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from connectors.models import InvalidRoute, Route
from events.engine import claims
from events.engine import runner as engine
from events.intake import ingest
from events.intake.parsing import ParsedEvent
from events.models import Execution, ExecutionStatus
from events.operate import operations
from guardrails.killswitch import set_kill_switch

pytestmark = pytest.mark.django_db


def ordered_route(name="erp", *, on_failure="block", key="{{ event.data.order.id }}", **params):
    return Route.objects.create(
        name=name,
        event_type=f"{name}.*",
        connector="scripted",
        action="run",
        params={"script": [], **params},
        ordering_key=key,
        on_failure=on_failure,
        backoff_base_seconds=0,
        backoff_cap_seconds=0,
        max_in_flight=100,
    )


def send(source, route, event_id, order_id=None, **payload):
    data = {"order": {"id": order_id}} if order_id is not None else {}
    ingest.ingest(
        source,
        ParsedEvent(
            event_id=event_id,
            type=f"{route.name}.changed",
            payload={"data": data, **payload},
            body_hash=event_id,
        ),
        headers={},
    )
    return Execution.objects.get(route=route, event__event_id=event_id)


def claim(owner="w", slots=100):
    with transaction.atomic():
        return set(claims.claim_batch(owner=owner, slots=slots, concurrency=100, local={}).ids)


def finish(*executions, status=ExecutionStatus.SUCCEEDED):
    Execution.objects.filter(pk__in=[e.pk for e in executions]).update(
        status=status, lease_owner="", lease_expires_at=None, finished_at=timezone.now()
    )


def test_the_key_is_rendered_from_the_event_when_it_is_received(source):
    route = ordered_route()

    keyed = send(source, route, "e1", order_id=42)
    missing = send(source, route, "e2")

    assert keyed.ordering_key == "42"
    assert missing.ordering_key == "", "an event without the field is unordered"


def test_one_execution_per_key_runs_at_a_time_in_the_order_received(source):
    route = ordered_route()
    a1, b1, a2, b2, a3 = (
        send(source, route, f"e{n}", order_id=key)
        for n, key in enumerate(["A", "B", "A", "B", "A"])
    )

    assert claim() == {a1.pk, b1.pk}, "the head of each key, and nothing behind it"
    assert claim() == set(), "nothing more while they run"
    assert not claims.due_exists(), "the idle poll does not spin on work that must wait"

    finish(a1)
    assert claim() == {a2.pk}
    finish(a2, b1)
    assert claim() == {a3.pk, b2.pk}


def test_executions_without_a_key_are_not_held_back(source):
    route = ordered_route()
    unordered = [send(source, route, f"u{n}") for n in range(5)]
    first = send(source, route, "k1", order_id=7)
    send(source, route, "k2", order_id=7)

    assert claim() == {e.pk for e in unordered} | {first.pk}


def test_a_retrying_execution_holds_back_the_ones_after_it(source):
    route = ordered_route(script=["retryable", "ok"])
    first = send(source, route, "e1", order_id=1)
    second = send(source, route, "e2", order_id=1)

    assert engine.run(first.pk) == ExecutionStatus.RETRYING
    # Its retry is due (backoff 0) and first in line; the second waits behind it.
    assert engine.run(second.pk) == "skipped"
    second.refresh_from_db()
    assert second.holder().pk == first.pk
    assert engine.run(first.pk) == ExecutionStatus.SUCCEEDED
    # Now its turn: it runs (and, scripted the same way, fails its own first try).
    assert engine.run(second.pk) == ExecutionStatus.RETRYING


def test_a_held_execution_keeps_its_place(source, operator):
    route = ordered_route()
    first = send(source, route, "e1", order_id=1)
    second = send(source, route, "e2", order_id=1)
    set_kill_switch(engaged=True, actor=operator, reason="maintenance", via="cli")
    assert engine.run(first.pk) == ExecutionStatus.HELD
    set_kill_switch(engaged=False, actor=operator, reason="done", via="cli")

    assert claim() == set(), "the second waits behind the held first"
    operations.release_held(Execution.objects.filter(pk=first.pk), actor=operator, via="cli")
    assert claim() == {first.pk}
    finish(first)
    assert claim() == {second.pk}


def test_block_a_failed_execution_stops_its_key_until_replayed(source, operator):
    route = ordered_route(script=["permanent"])
    first = send(source, route, "e1", order_id=1)
    second = send(source, route, "e2", order_id=1)
    other = send(source, route, "e3", order_id=2)

    assert engine.run(first.pk) == ExecutionStatus.FAILED
    assert claim() == {other.pk}, "another key goes on"
    second.refresh_from_db()
    assert second.holder().pk == first.pk

    Route.objects.filter(pk=route.pk).update(params={"script": []})
    operations.replay(Execution.objects.filter(pk=first.pk), actor=operator, via="cli")
    assert claim() == {first.pk}, "the replayed one goes first"
    finish(first)
    assert claim() == {second.pk}


def test_block_a_cancelled_dead_letter_lets_its_key_go_on(source, operator):
    route = ordered_route(script=["permanent"])
    first = send(source, route, "e1", order_id=1)
    second = send(source, route, "e2", order_id=1)
    assert engine.run(first.pk) == ExecutionStatus.FAILED

    cancelled = operations.cancel(
        Execution.objects.filter(pk=first.pk), actor=operator, via="cli", reason="give up"
    )

    assert cancelled == 1
    assert claim() == {second.pk}


def test_a_failed_execution_without_a_key_still_cannot_be_cancelled(source, operator):
    route = ordered_route(script=["permanent"])
    unordered = send(source, route, "e1")
    assert engine.run(unordered.pk) == ExecutionStatus.FAILED

    assert operations.cancel(Execution.objects.all(), actor=operator, via="cli") == 0


def test_skip_a_failed_execution_lets_the_rest_of_its_key_go_on(source):
    route = ordered_route(on_failure="skip", script=["permanent"])
    first = send(source, route, "e1", order_id=1)
    second = send(source, route, "e2", order_id=1)

    assert engine.run(first.pk) == ExecutionStatus.FAILED
    assert claim() == {second.pk}


def test_a_replay_in_the_middle_of_a_key_runs_before_the_later_ones(source, operator):
    route = ordered_route()
    e1, e2, e3, e4 = (send(source, route, f"e{n}", order_id=1) for n in range(4))
    for execution in (e1, e2):
        assert engine.run(execution.pk) == ExecutionStatus.SUCCEEDED

    replayed = operations.replay(
        Execution.objects.filter(pk=e1.pk), actor=operator, via="cli", force=True
    )

    assert replayed == 1
    assert claim() == {e1.pk}, "back in its place, before e3 and e4"
    finish(e1)
    assert claim() == {e3.pk}
    finish(e3)
    assert claim() == {e4.pk}


def test_a_replay_does_not_run_beside_a_running_execution_of_its_key(source, operator):
    route = ordered_route()
    e1, e2 = (send(source, route, f"e{n}", order_id=1) for n in range(2))
    assert engine.run(e1.pk) == ExecutionStatus.SUCCEEDED
    assert claim() == {e2.pk}

    operations.replay(Execution.objects.filter(pk=e1.pk), actor=operator, via="cli", force=True)

    assert claim() == set(), "e1 is first in line again, but e2 of its key is running"
    finish(e2)
    assert claim() == {e1.pk}


def test_the_database_refuses_a_second_running_execution_of_a_key(source):
    route = ordered_route()
    e1, e2 = (send(source, route, f"e{n}", order_id=1) for n in range(2))
    assert claim() == {e1.pk}

    lease = timezone.now() + datetime.timedelta(minutes=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Execution.objects.filter(pk=e2.pk).update(
            status=ExecutionStatus.RUNNING, lease_owner="rogue", lease_expires_at=lease
        )


def test_a_route_refuses_an_ordering_key_it_cannot_render_at_ingest():
    with pytest.raises(InvalidRoute, match="ordering_key"):
        ordered_route(key="{{ execution.idempotency_key }}")
    route = Route(name="bad", event_type="x", connector="log", action="record", on_failure="later")
    with pytest.raises(ValidationError) as caught:
        route.full_clean()
    assert "on_failure" in caught.value.message_dict


def test_the_key_check_is_served_by_the_partial_index(source):
    from django.db import connection

    route = ordered_route()
    keyed = [send(source, route, f"e{n}", order_id=n % 3) for n in range(9)]
    sql = f"SELECT 1 FROM events_execution e WHERE e.id = %s AND {claims.head('e')}"  # noqa: S608
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql, [keyed[-1].pk])
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, [keyed[-1].pk])
        plan = " ".join(str(cell) for row in cursor.fetchall() for cell in row)

    assert "events_execution_key_idx" in plan, plan
