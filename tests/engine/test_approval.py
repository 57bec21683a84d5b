"""Approval in the engine: what awaits approval is never claimed, holds its ordering key,
runs once approved (guardrails checked again then), and expires past its deadline."""

import datetime

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from events.engine import claims
from events.engine import runner as engine
from events.models import Attempt, EventStatus, Execution, ExecutionStatus
from events.operate import operations
from guardrails.killswitch import set_kill_switch
from tests.support.approval import approval_route, awaiting, send

pytestmark = pytest.mark.django_db


def claim(owner="w"):
    with transaction.atomic():
        return set(claims.claim_batch(owner=owner, slots=100, concurrency=100, local={}).ids)


def test_ingest_makes_executions_of_an_approval_route_await_approval(source, route):
    refunds = approval_route(timeout=datetime.timedelta(hours=2))

    send(source, "refunds.requested", "r1")
    send(source, "order.created", "o1")

    waiting = Execution.objects.get(route=refunds)
    normal = Execution.objects.get(route=route)
    assert waiting.status == ExecutionStatus.AWAITING_APPROVAL
    assert waiting.status_reason == "awaiting approval"
    assert waiting.expires_at == waiting.created_at + datetime.timedelta(hours=2)
    assert waiting.event.status == EventStatus.ACCEPTED
    assert normal.status == ExecutionStatus.QUEUED
    assert normal.expires_at is None


def test_without_a_timeout_it_never_expires(source):
    refunds = approval_route()

    (waiting,) = awaiting(source, refunds)

    assert waiting.expires_at is None
    assert operations.expire_approvals(timezone.now() + datetime.timedelta(days=365)) == 0


def test_an_event_awaiting_approval_only_does_not_wake_the_workers(
    source, django_capture_on_commit_callbacks
):
    approval_route()

    with django_capture_on_commit_callbacks() as callbacks:
        send(source, "refunds.requested", "r1")

    assert callbacks == [], "nothing to claim: no worker is woken"


def test_the_worker_does_not_claim_what_awaits_approval(source):
    (waiting,) = awaiting(source, approval_route())

    assert not claims.due_exists()
    assert claim() == set()
    assert claims.claim_one(waiting.pk, owner="w") is False
    assert engine.run(waiting.pk) == "skipped"
    assert not Attempt.objects.exists()


def test_an_approved_execution_runs_through_the_normal_path(source, operator):
    (waiting,) = awaiting(source, approval_route())

    assert (
        operations.approve(
            Execution.objects.all(), actor=operator, via="admin", reason="refund checked"
        )
        == 1
    )

    waiting.refresh_from_db()
    assert waiting.status == ExecutionStatus.QUEUED
    assert waiting.status_reason == "approved by olivia"
    assert engine.run(waiting.pk) == ExecutionStatus.SUCCEEDED
    assert Attempt.objects.get(execution=waiting).outcome == "succeeded"


def test_the_kill_switch_engaged_after_approval_holds_the_approved_execution(source, operator):
    (waiting,) = awaiting(source, approval_route())
    operations.approve(Execution.objects.all(), actor=operator, via="cli", reason="ok")
    set_kill_switch(engaged=True, actor="ops", reason="incident", via="cli")

    engine.run(waiting.pk)

    waiting.refresh_from_db()
    assert waiting.status == ExecutionStatus.HELD
    assert "incident" in waiting.status_reason
    assert not Attempt.objects.exists()


def test_an_event_received_while_the_kill_switch_is_engaged_still_awaits_approval(source):
    refunds = approval_route()
    set_kill_switch(engaged=True, actor="ops", reason="incident", via="cli")

    send(source, "refunds.requested", "r1")

    # Releasing held work must never run it unapproved: it waits for approval instead.
    assert Execution.objects.get(route=refunds).status == ExecutionStatus.AWAITING_APPROVAL


def test_a_rejected_execution_never_runs(source, operator):
    (waiting,) = awaiting(source, approval_route())

    operations.reject(Execution.objects.all(), actor=operator, via="cli", reason="fraud")

    waiting.refresh_from_db()
    assert waiting.status == ExecutionStatus.REJECTED
    assert waiting.finished_at is not None
    assert engine.run(waiting.pk) == "skipped"


def test_an_execution_awaiting_approval_holds_back_its_ordering_key(source, operator):
    refunds = approval_route(key="{{ event.data.order }}")
    send(source, "refunds.requested", "r1", order="A")
    send(source, "refunds.requested", "r2", order="A")
    first, second = Execution.objects.filter(route=refunds).order_by("pk")
    operations.approve(
        Execution.objects.filter(pk=second.pk), actor=operator, via="cli", reason="ok"
    )

    assert claim() == set(), "the second waits behind the first, still awaiting approval"
    assert Execution.objects.get(pk=second.pk).holder().pk == first.pk

    operations.reject(
        Execution.objects.filter(pk=first.pk), actor=operator, via="cli", reason="no"
    )

    assert claim() == {second.pk}, "a rejected one no longer holds its key"


def test_expiry_ends_only_those_past_their_deadline_with_the_reason(source):
    refunds = approval_route(timeout=datetime.timedelta(minutes=30))
    old, new = awaiting(source, refunds, 2)
    Execution.objects.filter(pk=old.pk).update(
        expires_at=timezone.now() - datetime.timedelta(seconds=1),
        updated_at=timezone.now() - datetime.timedelta(minutes=30, seconds=1),
    )

    assert operations.expire_approvals() == 1

    old.refresh_from_db()
    new.refresh_from_db()
    assert old.status == ExecutionStatus.EXPIRED
    assert old.status_reason == "not approved within 30 min"
    assert old.finished_at is not None
    assert new.status == ExecutionStatus.AWAITING_APPROVAL
    assert operations.expire_approvals() == 0


def test_expiry_goes_in_bounded_batches(source, monkeypatch):
    monkeypatch.setattr(operations, "EXPIRE_BATCH", 2)
    refunds = approval_route(timeout=datetime.timedelta(minutes=1))
    awaiting(source, refunds, 5)
    later = timezone.now() + datetime.timedelta(minutes=2)

    assert [operations.expire_approvals(later) for _ in range(4)] == [2, 2, 1, 0]


@pytest.mark.django_db(transaction=True)
def test_the_worker_expires_them_as_housekeeping(source):
    refunds = approval_route(timeout=datetime.timedelta(minutes=5))
    (waiting,) = awaiting(source, refunds)
    Execution.objects.update(expires_at=timezone.now() - datetime.timedelta(seconds=1))

    call_command("runworker", no_loop=True, verbosity=0)

    waiting.refresh_from_db()
    assert waiting.status == ExecutionStatus.EXPIRED


def test_a_replayed_rejected_execution_waits_for_approval_again(source, operator):
    refunds = approval_route(timeout=datetime.timedelta(hours=1))
    (waiting,) = awaiting(source, refunds)
    operations.reject(Execution.objects.all(), actor=operator, via="cli", reason="not yet")

    assert operations.replay(Execution.objects.all(), actor=operator, via="cli", reason="r") == 1

    waiting.refresh_from_db()
    assert waiting.status == ExecutionStatus.AWAITING_APPROVAL
    assert waiting.status_reason == "replayed by olivia; awaiting approval"
    assert waiting.expires_at > timezone.now() + datetime.timedelta(minutes=59)
    assert waiting.finished_at is None


def test_a_replayed_execution_of_a_route_no_longer_requiring_approval_is_queued(source, operator):
    refunds = approval_route()
    awaiting(source, refunds)
    operations.reject(Execution.objects.all(), actor=operator, via="cli", reason="no")
    refunds.requires_approval = False
    refunds.save()

    operations.replay(Execution.objects.all(), actor=operator, via="cli", reason="r")

    assert Execution.objects.get().status == ExecutionStatus.QUEUED


def test_routing_an_event_again_makes_its_new_execution_await_approval(source, operator):
    send(source, "refunds.requested", "r1")  # no route yet: unrouted
    refunds = approval_route()

    operations.replay_events(source.events.all(), actor=operator, via="cli", reason="route added")

    assert Execution.objects.get(route=refunds).status == ExecutionStatus.AWAITING_APPROVAL


def test_awaiting_approval_is_not_cancellable_an_operator_rejects_it(source, operator):
    awaiting(source, approval_route())

    assert operations.cancel(Execution.objects.all(), actor=operator, via="cli") == 0
    assert Execution.objects.get().status == ExecutionStatus.AWAITING_APPROVAL
