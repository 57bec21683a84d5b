"""From an accepted event to an executed action, through the tasks worker."""

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from connectors.models import Route
from events.engine import claims
from events.engine import runner as engine
from events.models import Attempt, Execution, ExecutionStatus
from guardrails.killswitch import set_kill_switch
from tests.support.helpers import ORDER, post

# The worker command closes connections it finds inside a transaction (as it should in
# production), so these tests run with real commits.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def accepted(client, source, route, django_capture_on_commit_callbacks):
    """One accepted order event, its execution enqueued as after a real commit."""
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, ORDER, key=source.api_key)
    assert response.status_code == 202
    return Execution.objects.get()


def run_worker():
    call_command("runworker", no_loop=True, verbosity=0)


def test_the_worker_runs_the_log_connector_and_records_the_attempt(accepted):
    run_worker()

    accepted.refresh_from_db()
    assert accepted.status == ExecutionStatus.SUCCEEDED
    assert accepted.attempts == 1
    assert accepted.finished_at is not None
    assert accepted.lease_owner == ""
    attempt = Attempt.objects.get(execution=accepted)
    assert attempt.outcome == "succeeded"
    assert attempt.response_summary["logged"] is True
    assert attempt.response_summary["event_id"] == "evt_1"
    assert attempt.response_summary["idempotency_key"] == accepted.idempotency_key
    assert attempt.duration_ms is not None


def test_an_execution_run_twice_runs_the_action_once(accepted):
    assert engine.run(accepted.pk) == ExecutionStatus.SUCCEEDED
    assert engine.run(accepted.pk) == "skipped"

    assert Attempt.objects.filter(execution=accepted).count() == 1


def test_two_workers_cannot_both_claim_one_execution(accepted):
    assert claims.claim_one(accepted.pk, owner="worker-a") is True
    assert claims.claim_one(accepted.pk, owner="worker-b") is False

    accepted.refresh_from_db()
    assert accepted.lease_owner == "worker-a"


def test_the_kill_switch_engaged_after_enqueue_holds_the_execution_at_claim_time(accepted):
    set_kill_switch(engaged=True, actor="ops", reason="stop everything", via="cli")

    run_worker()

    accepted.refresh_from_db()
    assert accepted.status == ExecutionStatus.HELD
    assert "stop everything" in accepted.status_reason
    assert accepted.attempts == 0
    assert not Attempt.objects.exists()


def test_releasing_the_kill_switch_does_not_run_held_executions_by_surprise(accepted):
    set_kill_switch(engaged=True, actor="ops", reason="x", via="cli")
    run_worker()
    set_kill_switch(engaged=False, actor="ops", reason="y", via="cli")

    run_worker()

    accepted.refresh_from_db()
    assert accepted.status == ExecutionStatus.HELD


def test_a_connector_failure_is_recorded_and_the_execution_fails(accepted):
    Route.objects.filter(pk=accepted.route_id).update(connector="vanished")

    run_worker()

    accepted.refresh_from_db()
    assert accepted.status == ExecutionStatus.FAILED
    assert "vanished" in accepted.last_error
    attempt = Attempt.objects.get(execution=accepted)
    assert attempt.outcome == "permanent_error"
    assert attempt.error_class == "UnknownConnector"


def test_a_route_with_an_unknown_connector_is_refused_when_saved(db):
    route = Route(name="r", event_type="a", connector="nope", action="record")

    with pytest.raises(ValidationError) as excinfo:
        route.full_clean()
    assert "connector" in excinfo.value.message_dict


def test_a_route_with_an_unknown_action_is_refused_when_saved(db):
    route = Route(name="r", event_type="a", connector="log", action="explode")

    with pytest.raises(ValidationError) as excinfo:
        route.full_clean()
    assert "action" in excinfo.value.message_dict


@pytest.mark.parametrize(
    "pattern,event_type,matches",
    [
        ("order.created", "order.created", True),
        ("order.created", "order.paid", False),
        ("order.*", "order.paid", True),
        ("order.*", "invoice.paid", False),
        ("*", "anything", True),
        ("order.?", "order.x", False),
        ("order.[ab]", "order.a", False),
        ("Order.*", "order.paid", False),
    ],
)
def test_route_patterns_match_with_star_wildcards_only(pattern, event_type, matches):
    assert Route(event_type=pattern).matches(event_type) is matches
