"""Chained steps in one process: a route's success emits a follow-up event from the
internal source, routed like any event; exactly once through retries and replays (unless
a replay asks to emit again); causation and depth recorded; too deep is stored blocked."""

import pytest
from django.db import transaction

from connectors.models import InvalidRoute, Route
from events.engine import runner as engine
from events.intake import ingest
from events.intake.parsing import ParsedEvent
from events.models import INTERNAL_SOURCE, Event, EventStatus, Execution, ExecutionStatus, Source
from events.operate import operations
from events.sources import credentials
from guardrails.killswitch import set_kill_switch
from tests.support.chains import INVOICE, invoice_route, paid, slack_route

pytestmark = pytest.mark.django_db


def run(execution):
    return engine.run(execution.pk)


def test_a_success_emits_its_follow_up_with_the_result_and_the_next_step_takes_it(source, sink):
    sink.script = [{"status": 201, "body": INVOICE}]
    invoice_route(sink)
    second = slack_route()
    first = paid(source, order_id=42)

    assert run(first) == ExecutionStatus.SUCCEEDED

    follow = Event.objects.get(type="invoice.created")
    assert follow.source.name == INTERNAL_SOURCE
    assert follow.payload == {"order": 42, "invoice": "INV-7", "status": 201}
    assert follow.caused_by_id == first.pk and follow.depth == 1
    assert follow.event_id == first.idempotency_key, "derived from the parent's key"
    step = Execution.objects.get(event=follow)
    assert step.route_id == second.pk and step.status == ExecutionStatus.QUEUED
    assert run(step) == ExecutionStatus.SUCCEEDED


def test_a_failed_attempt_emits_nothing_and_the_retry_that_succeeds_emits_once(source, sink):
    sink.script = [503, {"status": 200, "body": INVOICE}]
    invoice_route(sink)
    slack_route()
    first = paid(source)

    assert run(first) == ExecutionStatus.RETRYING
    assert not Event.objects.filter(type="invoice.created").exists()
    assert run(first) == ExecutionStatus.SUCCEEDED
    assert Event.objects.filter(type="invoice.created").count() == 1


def test_a_replayed_step_emits_nothing_new_unless_asked_to_emit_again(source, sink, operator):
    sink.script = [{"status": 200, "body": INVOICE}] * 3
    invoice_route(sink)
    slack_route()
    first = paid(source)
    assert run(first) == ExecutionStatus.SUCCEEDED

    def replay(**kwargs):
        operations.replay(
            Execution.objects.filter(pk=first.pk), actor=operator, via="cli", force=True, **kwargs
        )
        return run(first)

    assert replay() == ExecutionStatus.SUCCEEDED
    assert Event.objects.filter(type="invoice.created").count() == 1, "the same id: a duplicate"
    assert replay(emit_again=True) == ExecutionStatus.SUCCEEDED
    emitted = Event.objects.filter(type="invoice.created").order_by("received_at")
    assert [e.event_id for e in emitted] == [first.idempotency_key, f"{first.idempotency_key}.1"]
    assert Execution.objects.filter(event__in=emitted).count() == 2


def test_a_chain_deeper_than_the_limit_is_stored_blocked_with_the_reason(source, settings):
    settings.MAX_CHAIN_DEPTH = 3
    # A route that takes its own follow-ups: a loop, stopped by the depth limit.
    Route.objects.create(
        name="loop",
        event_type="tick",
        connector="scripted",
        action="run",
        params={"script": []},
        emit_type="tick",
        emit_payload={"n": "{{ event.n }}"},
    )
    ingest.ingest(
        source,
        ParsedEvent(event_id="t0", type="tick", payload={"n": 0}, body_hash="t0"),
        headers={},
    )
    for _ in range(10):
        pending = Execution.objects.filter(status=ExecutionStatus.QUEUED).first()
        if pending is None:
            break
        assert run(pending) == ExecutionStatus.SUCCEEDED

    events = list(Event.objects.order_by("depth"))
    assert [e.depth for e in events] == [0, 1, 2, 3, 4]
    assert [e.status for e in events[:4]] == [EventStatus.ACCEPTED] * 4
    assert events[4].status == EventStatus.BLOCKED
    assert "MAX_CHAIN_DEPTH (3)" in events[4].status_reason
    assert not events[4].executions.exists()


def test_a_follow_up_that_cannot_be_rendered_is_stored_blocked(source, sink):
    sink.script = [{"status": 200, "body": {"unexpected": True}}]
    invoice_route(sink)
    first = paid(source)

    assert run(first) == ExecutionStatus.SUCCEEDED, "the action itself succeeded"

    follow = Event.objects.get(caused_by=first)
    assert follow.status == EventStatus.BLOCKED
    assert "result.body.invoice" in follow.status_reason


def test_a_follow_up_goes_through_the_guardrails_the_kill_switch_holds_it(source, sink, operator):
    sink.script = [{"status": 200, "body": INVOICE}]
    invoice_route(sink)
    slack_route()
    first = paid(source)
    with transaction.atomic():
        claimed = engine.claims.claim_one(first.pk, owner="w")
        started = engine.start([first.pk], owner="w", state=engine.RuntimeState.for_claim())
    assert claimed and started.jobs
    outcome = engine.call(started.jobs[0])
    # The switch is engaged while the first step's call is in flight.
    set_kill_switch(engaged=True, actor=operator, reason="stop the chain", via="cli")
    with transaction.atomic():
        engine.settle([outcome], owner="w")

    follow = Event.objects.get(type="invoice.created")
    assert follow.status == EventStatus.HELD
    assert Execution.objects.get(event=follow).status == ExecutionStatus.HELD


def test_the_internal_source_takes_no_credential_and_no_delivery(client, sink, source):
    sink.script = [{"status": 200, "body": INVOICE}]
    invoice_route(sink)
    run(paid(source))
    internal = Source.objects.get(name=INTERNAL_SOURCE)

    with pytest.raises(credentials.SourceError, match="no credential"):
        credentials.add_credential(internal)
    response = client.post(
        f"/webhook/{INTERNAL_SOURCE}",
        {"event_id": "x", "type": "invoice.created"},
        content_type="application/json",
    )
    assert response.status_code == 401
    assert Event.objects.filter(source=internal).count() == 1


def test_a_route_refuses_a_follow_up_template_it_cannot_render():
    base = {"name": "r", "event_type": "x", "connector": "log", "action": "record"}
    with pytest.raises(InvalidRoute, match="emit_type"):
        Route.objects.create(**base, emit_type="{{ secrets.key }}")
    with pytest.raises(InvalidRoute, match="emit_type"):
        Route.objects.create(**base, emit_payload={"a": 1})


def test_the_replay_command_emits_again_only_when_told(source, sink):
    from django.core.management import call_command

    sink.script = [{"status": 200, "body": INVOICE}] * 3
    invoice_route(sink)
    first = paid(source)
    assert run(first) == ExecutionStatus.SUCCEEDED

    for extra in ([], ["--emit-again"]):
        call_command("replay", str(first.pk), "--force", "--reason", "again", *extra)
        assert run(first) == ExecutionStatus.SUCCEEDED

    ids = sorted(Event.objects.filter(caused_by=first).values_list("event_id", flat=True))
    assert ids == [first.idempotency_key, f"{first.idempotency_key}.1"]


def test_rows_written_without_the_new_columns_get_their_defaults(source):
    """A host not yet upgraded in a rolling deploy (or raw SQL) writes events and
    executions without depth, ordering_key and emit_generation: the database fills them."""
    import uuid

    from django.db import connection
    from django.utils import timezone

    route = Route.objects.create(name="r", event_type="x", connector="log", action="record")
    event_id, now = uuid.uuid4(), timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events_event (id, source_id, event_id, type, status, status_reason, "
            "payload, headers, body_hash, received_at, conflicts) "
            "VALUES (%s, %s, 'old-host', 'x', 'accepted', '', '{}', '{}', 'h', %s, 0)",
            [event_id.hex if connection.vendor == "sqlite" else event_id, source.pk, now],
        )
        cursor.execute(
            "INSERT INTO events_execution (event_id, route_id, status, status_reason, attempts, "
            "total_attempts, idempotency_key, created_at, updated_at, next_attempt_at, "
            "lease_owner, finished_at, last_error) "
            "VALUES (%s, %s, 'queued', '', 0, 0, 'k-old', %s, %s, %s, '', NULL, '')",
            [event_id.hex if connection.vendor == "sqlite" else event_id, route.pk, now, now, now],
        )

    event = Event.objects.get(event_id="old-host")
    execution = Execution.objects.get(idempotency_key="k-old")
    assert event.depth == 0
    assert (execution.ordering_key, execution.emit_generation) == ("", 0)
