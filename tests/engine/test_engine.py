"""The execution engine: leases, retries with backoff, dead letter, reaper, operator acts."""

import datetime
import random

import pytest
from django.db import transaction
from django.utils import timezone

from connectors.models import Route
from events.engine import claims, leases
from events.engine import runner as engine
from events.models import Attempt, Event, Execution, ExecutionStatus
from events.operate import operations
from guardrails.killswitch import set_kill_switch
from guardrails.models import OperatorAction, RuntimeState
from tests.support.helpers import post

pytestmark = pytest.mark.django_db


def make_due(execution):
    Execution.objects.filter(pk=execution.pk).update(next_attempt_at=timezone.now())


def test_a_successful_action_succeeds_on_the_first_attempt(make_execution):
    ex = make_execution()

    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED
    ex.refresh_from_db()
    assert (ex.attempts, ex.lease_owner, ex.lease_expires_at) == (1, "", None)


def test_a_retryable_error_schedules_a_retry_within_the_backoff_ceiling(make_execution):
    ex = make_execution(["retryable"], base=10, cap=600)
    before = timezone.now()

    assert engine.run(ex.pk) == ExecutionStatus.RETRYING

    ex.refresh_from_db()
    assert before <= ex.next_attempt_at <= timezone.now() + datetime.timedelta(seconds=10)
    assert ex.last_error == "RetryableError: try 1 failed"
    attempt = Attempt.objects.get(execution=ex)
    assert (attempt.number, attempt.outcome) == (1, "retryable_error")


def test_a_retry_is_not_claimable_before_its_time(make_execution):
    ex = make_execution(["retryable"], base=100)
    engine.run(ex.pk)
    Execution.objects.filter(pk=ex.pk).update(
        next_attempt_at=timezone.now() + datetime.timedelta(seconds=60)
    )

    assert engine.run(ex.pk) == "skipped"


def test_retries_run_until_success_with_the_same_idempotency_key(make_execution):
    ex = make_execution(["retryable", "retryable"])
    key = ex.idempotency_key

    assert engine.run(ex.pk) == ExecutionStatus.RETRYING
    make_due(ex)
    assert engine.run(ex.pk) == ExecutionStatus.RETRYING
    make_due(ex)
    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED

    ex.refresh_from_db()
    assert ex.idempotency_key == key
    assert list(ex.attempt_set.values_list("number", "outcome")) == [
        (1, "retryable_error"),
        (2, "retryable_error"),
        (3, "succeeded"),
    ]


def test_exhausted_attempts_end_in_the_dead_letter_with_the_last_error(make_execution):
    ex = make_execution(["retryable"] * 5, max_attempts=3)

    for _ in range(3):
        make_due(ex)
        engine.run(ex.pk)

    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.FAILED
    assert ex.last_error == "RetryableError: try 3 failed"
    assert ex.status_reason == "gave up after 3 attempts"
    assert ex.attempt_set.count() == 3


def test_a_permanent_error_fails_at_once(make_execution):
    ex = make_execution(["permanent"])

    assert engine.run(ex.pk) == ExecutionStatus.FAILED
    assert Attempt.objects.get(execution=ex).outcome == "permanent_error"


def test_an_unexpected_exception_is_recorded_with_its_traceback(make_execution):
    ex = make_execution(["crash"])

    assert engine.run(ex.pk) == ExecutionStatus.FAILED
    attempt = Attempt.objects.get(execution=ex)
    assert attempt.error_class == "builtins.ZeroDivisionError"
    assert "Traceback" in attempt.error_message and "bug in connector" in attempt.error_message


def test_retry_after_from_the_connector_is_honoured(make_execution):
    ex = make_execution(["retryable"], base=0.001, retry_after=120)

    engine.run(ex.pk)

    ex.refresh_from_db()
    wait = (ex.next_attempt_at - timezone.now()).total_seconds()
    assert 110 < wait <= 120


def test_the_backoff_is_full_jitter_under_an_exponential_ceiling_capped():
    route = Route(backoff_base_seconds=2, backoff_cap_seconds=60)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (30, 60), (5000, 60)]:
        delays = [route.retry_delay(attempt, rng=rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # it spreads over the whole range
        assert min(delays) < ceiling * 0.2


def test_the_reaper_requeues_an_execution_whose_worker_died(make_execution):
    ex = make_execution()
    assert claims.claim_one(ex.pk, owner="dead-worker")
    Attempt.objects.create(execution=ex, number=1)
    Execution.objects.filter(pk=ex.pk).update(
        lease_expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )

    assert leases.reap()["requeued"] == 1

    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.RETRYING
    assert "dead-worker" in ex.last_error
    assert Attempt.objects.get(execution=ex).outcome == "lost"
    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED
    assert list(ex.attempt_set.values_list("number", "outcome")) == [
        (1, "lost"),
        (2, "succeeded"),
    ]


def test_the_reaper_records_a_lost_attempt_when_the_worker_died_before_starting(make_execution):
    ex = make_execution()
    claims.claim_one(ex.pk, owner="dead-worker")
    Execution.objects.filter(pk=ex.pk).update(
        lease_expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )

    leases.reap()

    assert list(ex.attempt_set.values_list("number", "outcome", "worker")) == [
        (1, "lost", "dead-worker")
    ]


def test_the_reaper_leaves_a_live_lease_alone(make_execution):
    ex = make_execution()
    claims.claim_one(ex.pk, owner="busy-worker")

    assert leases.reap() == {"requeued": 0, "failed": 0}
    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.RUNNING


def test_the_reaper_fails_an_expired_execution_that_is_out_of_attempts(make_execution):
    ex = make_execution(max_attempts=1)
    claims.claim_one(ex.pk, owner="dead-worker")
    Execution.objects.filter(pk=ex.pk).update(
        lease_expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )

    assert leases.reap()["failed"] == 1
    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.FAILED


def test_a_worker_that_lost_its_lease_cannot_overwrite_the_new_owner(make_execution):
    ex = make_execution()
    with transaction.atomic():
        assert claims.claim_one(ex.pk, owner="slow-worker")
        (job,) = engine.start([ex.pk], owner="slow-worker", state=RuntimeState.current()).jobs
    Execution.objects.filter(pk=ex.pk).update(
        lease_expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    leases.reap()
    claims.claim_one(ex.pk, owner="new-worker")

    outcome = engine.call(job)
    with transaction.atomic():
        assert engine.settle([outcome], owner="slow-worker") == {ex.pk: "lease_lost"}
    assert leases.renew("slow-worker", [ex.pk]) == {ex.pk}
    ex.refresh_from_db()
    assert (ex.status, ex.lease_owner) == (ExecutionStatus.RUNNING, "new-worker")
    assert Attempt.objects.get(execution=ex, number=1).outcome == "lost", "the reaper's record"


def test_the_kill_switch_holds_at_claim_time_and_gives_the_attempt_back(make_execution):
    ex = make_execution()
    set_kill_switch(engaged=True, actor="ops", reason="stop", via="cli")

    assert engine.run(ex.pk) == ExecutionStatus.HELD
    ex.refresh_from_db()
    assert (ex.attempts, ex.lease_owner) == (0, "")
    assert not Attempt.objects.exists()
    assert leases.reap() == {"requeued": 0, "failed": 0}  # held stays held
    assert not Execution.objects.due().exists()


def test_releasing_held_executions_runs_them_once_and_is_audited(make_execution, operator):
    ex = make_execution()
    set_kill_switch(engaged=True, actor="ops", reason="stop", via="cli")
    engine.run(ex.pk)
    set_kill_switch(engaged=False, actor="ops", reason="go", via="cli")

    assert operations.release_held(Execution.objects.all(), actor=operator, via="admin") == 1

    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED
    entry = OperatorAction.objects.filter(action="executions.release").get()
    assert (entry.actor, entry.via, entry.details["count"]) == ("olivia", "admin", 1)


def test_replay_keeps_the_idempotency_key_and_resets_the_attempt_budget(make_execution, operator):
    ex = make_execution(["retryable", "retryable", "ok"], max_attempts=2)
    engine.run(ex.pk)
    make_due(ex)
    engine.run(ex.pk)
    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.FAILED

    assert operations.replay(Execution.objects.filter(pk=ex.pk), actor=operator, via="cli") == 1

    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED
    ex.refresh_from_db()
    assert ex.attempt_set.count() == 3
    assert ex.attempt_set.get(number=3).response_summary == {"attempt": 3}
    assert ex.attempts == 1  # the budget restarted with the replay


def test_replaying_a_succeeded_execution_needs_force(make_execution, operator):
    ex = make_execution()
    engine.run(ex.pk)
    everything = Execution.objects.all()

    assert operations.replay(everything, actor=operator, via="cli") == 0
    assert operations.replay(everything, actor=operator, via="cli", force=True) == 1
    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED


def test_cancel_stops_a_queued_execution_but_not_a_finished_one(make_execution, operator):
    queued, done = make_execution(), make_execution()
    engine.run(done.pk)

    assert operations.cancel(Execution.objects.all(), actor=operator, via="cli") == 1

    assert engine.run(queued.pk) == "skipped"
    queued.refresh_from_db()
    assert queued.status == ExecutionStatus.CANCELLED


def test_an_unrouted_event_runs_once_a_route_for_it_exists(client, source, operator):
    post(client, {"event_id": "u1", "type": "lonely.event"}, key=source.api_key)
    event = Event.objects.get()
    Route.objects.create(name="late", event_type="lonely.*", connector="log", action="record")

    assert operations.replay_events(Event.objects.all(), actor=operator, via="cli") == 1
    assert operations.replay_events(Event.objects.all(), actor=operator, via="cli") == 0

    event.refresh_from_db()
    assert event.status == "accepted"
    assert engine.run(event.executions.get().pk) == ExecutionStatus.SUCCEEDED
