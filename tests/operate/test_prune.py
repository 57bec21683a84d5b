"""manage.py prune: old history goes, duplicate detection stays (docs/retention.md)."""

import datetime
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from events.engine import runner as engine
from events.models import (
    Attempt,
    AttemptOutcome,
    Event,
    EventStatus,
    Execution,
    ExecutionStatus,
    RejectedRequest,
)
from guardrails.models import OperatorAction
from tests.support.helpers import ORDER, post

pytestmark = pytest.mark.django_db


def prune(*args):
    out = StringIO()
    call_command("prune", *args, stdout=out)
    return out.getvalue()


def age(days, *events):
    Event.objects.filter(pk__in=[e.pk for e in events]).update(
        received_at=timezone.now() - datetime.timedelta(days=days)
    )


def old_events(source, route, n, *, days, status=ExecutionStatus.SUCCEEDED, event_status=None):
    """n events received `days` ago, one execution each (none if status is None), one attempt."""
    at = timezone.now() - datetime.timedelta(days=days)
    tag = uuid.uuid4().hex[:8]
    events = Event.objects.bulk_create(
        Event(
            source=source,
            event_id=f"old-{tag}-{i}",
            type="order.created",
            status=event_status or EventStatus.ACCEPTED,
            payload={"n": i},
            headers={"x-request-id": str(i)},
            body_hash="0" * 64,
            received_at=at,
        )
        for i in range(n)
    )
    if status is None:
        return events
    executions = Execution.objects.bulk_create(
        Execution(
            event=e,
            route=route,
            status=status,
            idempotency_key=Execution.new_idempotency_key(),
            last_error="Traceback ...",
            total_attempts=1,
            **(
                {"lease_owner": "w", "lease_expires_at": timezone.now()}
                if status == ExecutionStatus.RUNNING
                else {}
            ),
        )
        for e in events
    )
    Attempt.objects.bulk_create(
        Attempt(execution=x, number=0, outcome=AttemptOutcome.SUCCEEDED) for x in executions
    )
    return events


@pytest.fixture
def delivered(client, source, route, django_capture_on_commit_callbacks):
    """ORDER delivered through POST /webhook and run to success; returns its event."""
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, ORDER, key=source.api_key).status_code == 202
    event = Event.objects.get(event_id=ORDER["event_id"])
    assert engine.run(event.executions.get().pk) == ExecutionStatus.SUCCEEDED
    assert Attempt.objects.filter(execution__event=event).count() == 1
    return event


def test_an_old_finished_event_loses_its_payload_but_a_redelivery_is_still_a_duplicate(
    client, source, delivered
):
    age(40, delivered)

    prune("--older-than", "30d")

    event = Event.objects.get(pk=delivered.pk)
    assert event.payload is None and event.headers == {}
    assert event.body_hash == delivered.body_hash
    assert not Attempt.objects.filter(execution__event=event).exists()
    assert event.executions.get().status == ExecutionStatus.SUCCEEDED

    again = post(client, ORDER, key=source.api_key)
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    other = post(client, {**ORDER, "data": {"total": 1}}, key=source.api_key)
    assert other.status_code == 409
    assert Event.objects.count() == 1 and Execution.objects.count() == 1


def test_after_the_dedup_window_the_event_is_gone_and_a_redelivery_is_new(
    client, source, delivered, settings
):
    settings.DEDUP_RETENTION_DAYS = 60
    age(61, delivered)

    out = prune("--older-than", "30d")

    assert "1 event(s) with 1 execution(s) were deleted" in out
    assert not Event.objects.exists()
    assert not Execution.objects.exists() and not Attempt.objects.exists()
    again = post(client, ORDER, key=source.api_key)
    assert again.status_code == 202 and again.json()["status"] == "accepted"


def test_keep_ids_for_overrides_the_dedup_window(source, route):
    kept, gone = old_events(source, route, 1, days=40), old_events(source, route, 1, days=50)

    prune("--older-than", "30d", "--keep-ids-for", "45d")

    assert Event.objects.get(pk=kept[0].pk).payload is None
    assert not Event.objects.filter(pk=gone[0].pk).exists()


def test_an_event_within_older_than_is_left_whole(source, route):
    recent = old_events(source, route, 1, days=10)[0]

    prune("--older-than", "30d")

    assert Event.objects.get(pk=recent.pk).payload == {"n": 0}
    assert Attempt.objects.count() == 1


@pytest.mark.parametrize(
    "status",
    [
        ExecutionStatus.QUEUED,
        ExecutionStatus.RUNNING,
        ExecutionStatus.RETRYING,
        ExecutionStatus.HELD,
        ExecutionStatus.AWAITING_APPROVAL,
    ],
)
def test_events_with_work_left_are_never_touched_however_old(source, route, status):
    busy = old_events(source, route, 1, days=3650, status=status)[0]
    # One finished and one unfinished execution: the event still has work left.
    from connectors.models import Route

    other = Route.objects.create(name="other", event_type="*", connector="log", action="x")
    Execution.objects.create(
        event=busy, route=other, status=ExecutionStatus.SUCCEEDED, idempotency_key="k-other"
    )

    prune("--older-than", "1d", "--keep-ids-for", "1d")

    event = Event.objects.get(pk=busy.pk)
    assert event.payload == {"n": 0} and event.headers == {"x-request-id": "0"}
    assert Execution.objects.filter(event=event).count() == 2
    assert Attempt.objects.count() == 1


def test_a_held_event_without_executions_is_never_touched(source):
    held = old_events(source, None, 1, days=3650, status=None, event_status=EventStatus.HELD)

    prune("--older-than", "1d", "--keep-ids-for", "1d")

    assert Event.objects.get(pk=held[0].pk).payload == {"n": 0}


@pytest.mark.parametrize("event_status", [EventStatus.BLOCKED, EventStatus.UNROUTED])
def test_blocked_and_unrouted_events_count_as_finished(source, event_status):
    stripped = old_events(source, None, 1, days=40, status=None, event_status=event_status)[0]
    deleted = old_events(source, None, 1, days=400, status=None, event_status=event_status)[0]

    prune("--older-than", "30d")

    assert Event.objects.get(pk=stripped.pk).payload is None
    assert not Event.objects.filter(pk=deleted.pk).exists()


def test_dry_run_counts_and_changes_nothing(source, route):
    old_events(source, route, 3, days=40)
    old_events(source, route, 2, days=400, status=ExecutionStatus.FAILED)
    RejectedRequest.objects.create(
        day=datetime.date(2000, 1, 1),
        source_name="?",
        reason="bad_key",
        count=3,
        last_seen_at=timezone.now(),
    )

    out = prune("--older-than", "30d", "--dry-run")

    assert "2 event(s) with 2 execution(s) would be deleted" in out
    assert "3 event(s) would be stripped" in out
    assert "5 attempt(s) and 1 rejected-request row(s) would be deleted" in out
    assert Event.objects.filter(payload__n__isnull=False).count() == 5
    assert Attempt.objects.count() == 5 and RejectedRequest.objects.count() == 1
    assert not OperatorAction.objects.exists()


@pytest.mark.parametrize(("days", "stage"), [(400, "delete"), (40, "strip")])
def test_it_works_in_batches_of_the_batch_size(source, route, days, stage):
    old_events(source, route, 2500, days=days)

    out = prune("--older-than", "30d", "--batch-size", "1000")

    assert [line.split(":")[0].strip() for line in out.splitlines() if "batch" in line] == [
        f"{stage} batch 1",
        f"{stage} batch 2",
        f"{stage} batch 3",
    ]
    assert "2500 event(s)" in out
    assert Attempt.objects.count() == 0
    assert Event.objects.count() == (0 if stage == "delete" else 2500)


def test_it_deletes_old_rejected_request_counters_only(source):
    now = timezone.now()
    for days in (40, 5):
        RejectedRequest.objects.create(
            day=(now - datetime.timedelta(days=days)).date(),
            source_name="shop",
            reason="bad_signature",
            count=1,
            last_seen_at=now,
        )

    prune("--older-than", "30d")

    assert list(RejectedRequest.objects.values_list("day", flat=True)) == [
        (now - datetime.timedelta(days=5)).date()
    ]


def test_it_is_audited_with_the_counts(source, route):
    old_events(source, route, 2, days=40)
    old_events(source, route, 1, days=400)

    prune("--older-than", "30d", "--actor", "ana", "--reason", "monthly")

    action = OperatorAction.objects.get()
    assert (action.actor, action.via, action.action, action.reason) == (
        "ana",
        "cli",
        "prune",
        "monthly",
    )
    assert action.details["events_stripped"] == 2
    assert action.details["events_deleted"] == 1
    assert action.details["attempts_deleted"] == 3
    assert action.details["older_than_days"] == 30


def test_a_second_run_finds_nothing_more_to_do(source, route):
    old_events(source, route, 3, days=40)
    prune("--older-than", "30d")

    out = prune("--older-than", "30d")

    assert "0 event(s) were stripped" in out


def test_replay_refuses_an_execution_whose_event_was_pruned(delivered):
    age(40, delivered)
    prune("--older-than", "30d")
    execution = delivered.executions.get()
    out = StringIO()

    call_command("replay", str(execution.pk), "--force", stdout=out)

    assert "0 execution(s) queued again" in out.getvalue()
    assert "1 execution(s) not replayed: their event was pruned" in out.getvalue()
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.SUCCEEDED


def test_a_worker_never_runs_an_execution_whose_event_was_pruned_meanwhile(delivered):
    """A replay queued in the same instant prune stripped the event: the worker refuses."""
    age(40, delivered)
    prune("--older-than", "30d")
    execution = delivered.executions.get()
    Execution.objects.filter(pk=execution.pk).update(status=ExecutionStatus.QUEUED)

    assert engine.run(execution.pk) == ExecutionStatus.CANCELLED

    execution.refresh_from_db()
    assert "pruned" in execution.status_reason
    assert not Attempt.objects.filter(execution=execution).exists()


def test_routing_again_refuses_a_pruned_unrouted_event(source, route):
    event = old_events(source, None, 1, days=40, status=None, event_status=EventStatus.UNROUTED)
    prune("--older-than", "30d")
    out = StringIO()

    call_command("replay", "--unrouted", stdout=out)

    assert "0 execution(s) created" in out.getvalue()
    assert not Execution.objects.filter(event_id=event[0].pk).exists()


def test_it_refuses_a_bad_age():
    with pytest.raises(CommandError):
        prune("--older-than", "thirty days")
