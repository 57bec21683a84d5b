"""The concurrent engine in one process: batch claims, max_in_flight, fair shares, many
actions at once, the kill switch between claim and call, leases, giving work back."""

import datetime
import threading

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from connectors.models import Route
from events.engine import claims, leases, runner, wake
from events.engine.worker import Worker
from events.intake import ingest
from events.intake.parsing import ParsedEvent
from events.models import Attempt, Execution, ExecutionStatus
from guardrails.killswitch import set_kill_switch
from guardrails.models import RuntimeState
from tests.support.live import run_check

pytestmark = pytest.mark.django_db


def make_route(name="jobs", *, event_type=None, max_in_flight=16, **params):
    return Route.objects.create(
        name=name,
        event_type=event_type or f"{name}.run",
        connector="scripted",
        action="run",
        params=params,
        max_in_flight=max_in_flight,
    )


def flood(source, route, n, prefix=None):
    """n events of the route's type, ingested as a webhook would be."""
    prefix = prefix or route.name
    for i in range(n):
        ingest.ingest(
            source,
            ParsedEvent(
                event_id=f"{prefix}-{i}",
                type=route.event_type,
                payload={"i": i},
                body_hash=f"{prefix}{i}",
            ),
            headers={},
        )
    return list(Execution.objects.filter(route=route).order_by("pk"))


def claim(owner, slots, *, concurrency=32, local=None):
    with transaction.atomic():
        return claims.claim_batch(
            owner=owner, slots=slots, concurrency=concurrency, local=local or {}
        )


def most_at_once(attempts) -> int:
    """The largest number of these attempts that were running at the same moment."""
    edges = sorted(
        [(a.started_at, 1) for a in attempts] + [(a.finished_at, -1) for a in attempts],
        key=lambda edge: (edge[0], edge[1]),
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_a_batch_claim_leases_due_executions_in_order_with_one_owner(source):
    route = make_route(max_in_flight=100)
    executions = flood(source, route, 10)

    taken = claim("worker-a", 4)

    assert sorted(taken.ids) == [e.pk for e in executions[:4]], "the oldest due first"
    rows = Execution.objects.filter(pk__in=taken.ids)
    assert {(r.status, r.lease_owner, r.attempts) for r in rows} == {("running", "worker-a", 1)}
    assert all(r.lease_expires_at > timezone.now() for r in rows)
    assert sorted(claim("worker-b", 100).ids) == [e.pk for e in executions[4:]], "never twice"


def test_a_retry_that_is_not_due_is_not_claimed(source):
    route = make_route(max_in_flight=100)
    (ex,) = flood(source, route, 1)
    later = timezone.now() + datetime.timedelta(minutes=5)
    Execution.objects.filter(pk=ex.pk).update(status="retrying", next_attempt_at=later)

    assert claim("w", 10).ids == []
    assert not claims.due_exists()


def test_max_in_flight_holds_over_every_worker(source):
    route = make_route(max_in_flight=5)
    flood(source, route, 20)

    first = claim("worker-a", 4)
    second = claim("worker-b", 10)

    assert (len(first.ids), len(second.ids)) == (4, 1)
    assert second.left_behind, "it knows work was left for later"
    assert Execution.objects.running().count() == 5
    assert claim("worker-c", 10).ids == []


def test_a_claim_given_all_its_slots_from_a_longer_queue_says_work_was_left(source):
    route = make_route(max_in_flight=100)
    flood(source, route, 5)

    first = claim("worker-a", 2)
    rest = claim("worker-a", 10)

    assert len(first.ids) == 2 and first.left_behind, "3 more were due: claim again soon"
    assert len(rest.ids) == 3 and not rest.left_behind


def test_a_finished_execution_frees_its_place_under_max_in_flight(source):
    route = make_route(max_in_flight=2)
    flood(source, route, 5)
    ids = claim("w", 10).ids
    assert len(ids) == 2
    with transaction.atomic():
        started = runner.start(ids[:1], owner="w", state=RuntimeState.for_claim())
    outcome = runner.call(started.jobs[0])
    with transaction.atomic():
        runner.settle([outcome], owner="w")

    assert len(claim("w", 10).ids) == 1


def test_free_slots_go_first_to_the_routes_with_the_fewest_actions_on_this_worker():
    # Route 1 already runs 6 actions here, route 2 none: route 2 catches up first.
    plan = claims.share(8, [(1, 100, 100), (2, 100, 100)], local={1: 6}, per_route_cap=30)
    assert plan == {1: 1, 2: 7}

    # No more than a route has room for under max_in_flight, or has due.
    plan = claims.share(8, [(1, 2, 100), (2, 100, 3)], local={}, per_route_cap=30)
    assert plan == {1: 2, 2: 3}


def test_one_route_never_takes_every_slot_of_a_worker(source):
    busy = make_route("busy", max_in_flight=100)
    flood(source, busy, 40)

    taken = claim("w", 32, concurrency=32)

    assert len(taken.ids) == 32 - claims.reserve(32) == 30
    other = make_route("other", max_in_flight=100)
    flood(source, other, 5)
    local = {busy.pk: 30}
    assert (
        Execution.objects.filter(pk__in=claim("w", 2, local=local).ids, route=other).count() == 2
    )


def test_a_kill_switch_committed_after_the_claim_holds_the_batch_and_calls_nothing(source):
    route = make_route(max_in_flight=100)
    flood(source, route, 6)
    ids = claim("w", 6).ids

    set_kill_switch(engaged=True, actor="ops", reason="incident", via="cli")
    with transaction.atomic():
        started = runner.start(ids, owner="w", state=RuntimeState.for_claim())

    assert started.jobs == []
    assert set(started.not_started.values()) == {ExecutionStatus.HELD}
    rows = Execution.objects.filter(pk__in=ids)
    assert {(r.status, r.attempts, r.lease_owner) for r in rows} == {("held", 0, "")}
    assert not Attempt.objects.exists()


def test_the_worker_runs_up_to_its_concurrency_at_once_and_no_more(source):
    # Two routes: one route alone never gets a worker's last slot.
    for name in ("a", "b"):
        flood(source, make_route(name, max_in_flight=100, sleep=0.3), 12)

    worker = Worker(concurrency=8, poll_interval=0.01, grace_seconds=5)
    worker.run(until_idle=True, housekeeping=False)

    assert set(Execution.objects.values_list("status", flat=True)) == {"succeeded"}
    attempts = list(Attempt.objects.all())
    assert len(attempts) == 24
    assert most_at_once(attempts) == 8
    assert worker.claims == worker.executions_run == 24


def test_one_slow_route_does_not_hold_back_another(source):
    slow = make_route("slow", max_in_flight=4, sleep=1.0)
    fast = make_route("fast", max_in_flight=16)
    flood(source, slow, 8)
    flood(source, fast, 40)

    Worker(concurrency=8, poll_interval=0.01).run(until_idle=True, housekeeping=False)

    fast_done = max(Execution.objects.filter(route=fast).values_list("finished_at", flat=True))
    slow_done = max(Execution.objects.filter(route=slow).values_list("finished_at", flat=True))
    assert fast_done < slow_done, "the fast route finished while the slow one still ran"
    assert most_at_once(Attempt.objects.filter(execution__route=slow)) <= 4


def test_one_statement_renews_every_lease_of_a_worker_and_reports_lost_ones(source):
    route = make_route(max_in_flight=100)
    flood(source, route, 3)
    ids = claim("w", 3).ids
    soon = timezone.now() + datetime.timedelta(seconds=1)
    Execution.objects.filter(pk__in=ids).update(lease_expires_at=soon)
    Execution.objects.filter(pk=ids[0]).update(lease_owner="someone-else")

    with connection.execute_wrapper(
        lambda execute, sql, *a: statements.append(sql) or execute(sql, *a)
    ):
        statements = []
        lost = leases.renew("w", ids)

    assert lost == {ids[0]}
    assert sum(sql.lstrip().upper().startswith("UPDATE") for sql in statements) == 1
    renewed = Execution.objects.filter(pk__in=ids[1:]).values_list("lease_expires_at", flat=True)
    assert all(t > soon + datetime.timedelta(seconds=30) for t in renewed)


def test_abandoned_actions_are_recorded_and_their_executions_given_back(source):
    route = make_route(max_in_flight=100)
    flood(source, route, 2)
    ids = claim("w", 2).ids
    with transaction.atomic():
        jobs = runner.start(ids, owner="w", state=RuntimeState.for_claim()).jobs
        assert runner.abandon(jobs, owner="w", why="the worker stopped mid-action") == 2

    rows = Execution.objects.filter(pk__in=ids)
    assert {(r.status, r.lease_owner) for r in rows} == {("queued", "")}
    assert set(Attempt.objects.values_list("outcome", flat=True)) == {"abandoned"}
    assert claims.due_exists(), "another worker may claim them at once"


def test_a_route_needs_room_for_at_least_one_execution():
    route = Route(name="r", event_type="x", connector="log", action="record", max_in_flight=0)
    with pytest.raises(ValidationError) as caught:
        route.full_clean()
    assert "max_in_flight" in caught.value.message_dict
    with pytest.raises(IntegrityError), transaction.atomic():
        route.save()  # what loaddata would do: the database refuses it too


@pytest.mark.parametrize("value", ["0", "-3"])
def test_runworker_refuses_a_concurrency_below_one(value):
    with pytest.raises(CommandError, match="--concurrency: must be between 1 and 1000"):
        call_command("runworker", "--concurrency", value, "--no-loop")


@pytest.mark.parametrize(
    ("value", "message"),
    [("-1", "WORKER_CONCURRENCY must be at least 1"), ("lots", "must be an integer")],
)
def test_a_bad_worker_concurrency_stops_the_process_with_a_clear_error(value, message):
    done = run_check(WORKER_CONCURRENCY=value)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr.split("ImproperlyConfigured")[-1]


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_committed_execution_wakes_a_listening_worker(source):
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll")
    route = make_route(max_in_flight=100)
    woken = threading.Event()
    listener = wake.Listener(woken.set)
    listener.start()
    try:
        assert woken.wait(5), "it wakes once when it starts listening"
        woken.clear()
        with transaction.atomic():
            flood(source, route, 1)
            assert not woken.wait(0.3), "nothing before the commit"
        assert woken.wait(5), "woken by the commit"
    finally:
        listener.stop()


def test_a_worker_waiting_for_room_under_max_in_flight_does_not_spin(source, monkeypatch):
    route = make_route(max_in_flight=1, sleep=0.5)
    flood(source, route, 2)
    calls = []
    real = claims.claim_batch
    monkeypatch.setattr(claims, "claim_batch", lambda **kw: calls.append(1) or real(**kw))

    Worker(concurrency=4, poll_interval=0.05).run(until_idle=True, housekeeping=False)

    assert set(Execution.objects.values_list("status", flat=True)) == {"succeeded"}
    assert len(calls) < 60, f"{len(calls)} claims in about a second: it polls, it does not spin"


def test_a_bug_met_while_starting_one_execution_fails_it_and_not_the_batch(source, monkeypatch):
    from guardrails import policy

    route = make_route(max_in_flight=100)
    bad, *good = flood(source, route, 3)
    real = policy.decide_execution

    def decide(*, execution, **kwargs):
        if execution.pk == bad.pk:
            raise KeyError("a rule with a bug")
        return real(execution=execution, **kwargs)

    monkeypatch.setattr(policy, "decide_execution", decide)
    Worker(concurrency=4, poll_interval=0.01).run(until_idle=True, housekeeping=False)

    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == ("failed", 0)
    assert "could not start it" in bad.status_reason and "a rule with a bug" in bad.status_reason
    assert set(
        Execution.objects.filter(pk__in=[g.pk for g in good]).values_list("status", flat=True)
    ) == {"succeeded"}


def test_a_workers_own_reaper_spares_its_leases_so_it_can_renew_them_after_an_outage(source):
    route = make_route(max_in_flight=100)
    flood(source, route, 1)
    (pk,) = claim("w", 1).ids
    past = timezone.now() - datetime.timedelta(seconds=1)
    Execution.objects.filter(pk=pk).update(lease_expires_at=past)

    assert leases.reap(spare_owner="w") == {"requeued": 0, "failed": 0}
    assert leases.renew("w", [pk]) == set(), "still its own: renewed"
    Execution.objects.filter(pk=pk).update(lease_expires_at=past)
    assert leases.reap(spare_owner="another-worker") == {"requeued": 1, "failed": 0}


def test_a_worker_reports_no_lost_lease_for_what_it_has_just_settled(source, caplog, settings):
    settings.EXECUTION_LEASE_SECONDS = 0  # renew at every turn of the loop
    route = make_route(max_in_flight=100, sleep=0.05)
    flood(source, route, 30)
    worker = Worker(concurrency=8, poll_interval=0.01)

    with caplog.at_level("WARNING", logger="events.engine"):
        worker.run(until_idle=True, housekeeping=False)

    assert Execution.objects.filter(status="succeeded").count() == 30
    assert not [r for r in caplog.records if "lease lost" in r.getMessage()]
