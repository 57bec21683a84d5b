"""GET /metrics: the runtime's state for Prometheus, read from the database."""

import datetime

import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from connectors.models import Route
from events.models import Attempt, Event, EventStatus, Execution, ExecutionStatus
from events.observe import metrics as runtime_metrics
from guardrails.killswitch import set_kill_switch, set_scoped_kill_switch
from tests.support.helpers import ORDER, post

# The worker command closes connections it finds inside a transaction, as in production.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_metrics(settings):
    """Every scrape reads the database (no cache) unless a test says otherwise."""
    settings.METRICS_CACHE_SECONDS = 0
    settings.METRICS_TOKEN = ""
    runtime_metrics.collector.clear()
    yield
    runtime_metrics.collector.clear()


def scrape(client, **extra) -> dict:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {f.name: f for f in text_string_to_metric_families(response.content.decode())}


def samples(families, family, suffix="") -> dict:
    """{labels as a sorted tuple of pairs: value} for one family's samples."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in families[family].samples
        if s.name == family + suffix
    }


def value(families, family, suffix="", **labels):
    return samples(families, family, suffix).get(tuple(sorted(labels.items())))


def run_worker():
    call_command("runworker", no_loop=True, verbosity=0)


def send(client, source, event_id, event_type="order.created", capture=None):
    body = {**ORDER, "event_id": event_id, "type": event_type}
    if capture is None:
        return post(client, body, key=source.api_key)
    with capture(execute=True):
        return post(client, body, key=source.api_key)


def test_it_counts_events_by_source_type_and_status(client, source, route):
    send(client, source, "evt_1")
    send(client, source, "evt_2")
    send(client, source, "evt_3", event_type="invoice.paid")  # no route matches
    set_kill_switch(engaged=True, actor="ops", reason="incident", via="cli")
    send(client, source, "evt_4")

    families = scrape(client)

    assert value(families, "automation_events", source="shop", type="order.created",
                 status="accepted") == 2  # fmt: skip
    assert value(families, "automation_events", source="shop", type="invoice.paid",
                 status="unrouted") == 1  # fmt: skip
    assert value(families, "automation_events", source="shop", type="order.created",
                 status="held") == 1  # fmt: skip


def test_it_counts_executions_by_route_and_status_after_the_worker_ran(
    client, source, route, django_capture_on_commit_callbacks
):
    failing = Route.objects.create(
        name="always-fails",
        event_type="order.*",
        connector="scripted",
        action="run",
        params={"script": ["permanent"]},
    )
    send(client, source, "evt_1", capture=django_capture_on_commit_callbacks)
    send(client, source, "evt_2", capture=django_capture_on_commit_callbacks)
    run_worker()

    families = scrape(client)

    assert value(families, "automation_executions", route=route.name, status="succeeded") == 2
    assert value(families, "automation_executions", route=failing.name, status="failed") == 2
    assert value(families, "automation_queue_depth") == 0
    assert value(families, "automation_queue_oldest_age_seconds") == 0


def test_it_reports_the_queue_depth_and_how_long_the_oldest_has_waited(client, source, route):
    send(client, source, "evt_1")
    send(client, source, "evt_2")
    # One waited a minute already; one retries later (not claimable yet, not counted).
    first = Execution.objects.get(event__event_id="evt_1")
    Execution.objects.filter(pk=first.pk).update(
        updated_at=timezone.now() - datetime.timedelta(seconds=60)
    )
    Execution.objects.filter(event__event_id="evt_2").update(
        status=ExecutionStatus.RETRYING,
        next_attempt_at=timezone.now() + datetime.timedelta(hours=1),
    )

    families = scrape(client)

    assert value(families, "automation_queue_depth") == 1
    assert 60 <= value(families, "automation_queue_oldest_age_seconds") < 120


def test_it_shows_each_workers_slots_claims_and_what_runs_per_route(client, source, route):
    from django.utils import timezone

    from events.models import Execution, WorkerHeartbeat

    WorkerHeartbeat.objects.create(
        worker_id="w-1", hostname="h", pid=1, concurrency=32, in_flight=7, claims=400
    )
    send(client, source, "e-1")
    Execution.objects.update(status="running", lease_owner="w-1", lease_expires_at=timezone.now())

    families = scrape(client)

    assert value(families, "automation_worker_concurrency", worker="w-1") == 32
    assert value(families, "automation_worker_in_flight", worker="w-1") == 7
    assert value(families, "automation_worker_claims", "_total", worker="w-1") == 400
    assert value(families, "automation_route_in_flight", route=route.name) == 1


def test_the_kill_switch_shows_as_engaged_with_the_mode(client, operator, route):
    set_scoped_kill_switch(
        scope="route", name="orders-to-log", engaged=True, actor="ops", reason="x", via="cli"
    )
    before = scrape(client)
    assert value(before, "automation_kill_switch_engaged", scope="global", name="") == 0
    assert value(before, "automation_mode", mode="running") == 1

    set_kill_switch(engaged=True, actor="ops", reason="incident", via="cli")
    after = scrape(client)

    assert value(after, "automation_kill_switch_engaged", scope="global", name="") == 1
    assert value(after, "automation_kill_switch_engaged", scope="route", name="orders-to-log") == 1
    assert value(after, "automation_mode", mode="killed") == 1
    assert value(after, "automation_mode", mode="running") == 0


def test_it_counts_guardrail_decisions_by_reason(client, source, route):
    set_kill_switch(engaged=True, actor="ops", reason="incident 42", via="cli")
    send(client, source, "evt_1")
    send(client, source, "evt_2")

    families = scrape(client)

    decisions = samples(families, "automation_guardrail_decisions")
    held_events = {
        dict(labels)["reason"]: n
        for labels, n in decisions.items()
        if dict(labels)["of"] == "event" and dict(labels)["status"] == "held"
    }
    assert len(held_events) == 1
    [(reason, n)] = held_events.items()
    assert "incident 42" in reason and n == 2


def test_the_attempt_duration_histogram_counts_recent_attempts_in_their_buckets(
    client, source, route, django_capture_on_commit_callbacks
):
    Route.objects.create(
        name="slow",
        event_type="order.*",
        connector="scripted",
        action="run",
        params={"sleep": 0.3},
    )
    send(client, source, "evt_1", capture=django_capture_on_commit_callbacks)
    run_worker()
    # An attempt from an hour ago is outside the window.
    old = Attempt.objects.first()
    Attempt.objects.create(
        execution=old.execution,
        number=99,
        started_at=timezone.now() - datetime.timedelta(hours=1),
        finished_at=timezone.now() - datetime.timedelta(hours=1),
        outcome="succeeded",
        duration_ms=5,
    )

    families = scrape(client)

    name = "automation_attempt_duration_seconds_last_5m"
    buckets = samples(families, name, "_bucket")
    assert buckets[(("le", "+Inf"), ("outcome", "succeeded"))] == 2
    # The log connector answers at once; the scripted one sleeps 0.3 s.
    assert buckets[(("le", "0.25"), ("outcome", "succeeded"))] == 1
    assert buckets[(("le", "0.5"), ("outcome", "succeeded"))] == 2
    assert value(families, name + "_gcount", outcome="succeeded") == 2
    assert 0.3 <= value(families, name + "_gsum", outcome="succeeded") < 5


def test_it_keeps_at_most_fifty_types_per_source_and_sums_the_rest_as_other(client, source):
    now = timezone.now()
    Event.objects.bulk_create(
        Event(
            source=source,
            event_id=f"evt_{i}_{j}",
            type=f"type.{i:02d}",
            status=EventStatus.UNROUTED,
            payload={},
            body_hash="x",
            received_at=now,
        )
        # type.00 has 1 event, type.59 has 60: the busiest 50 are kept.
        for i in range(60)
        for j in range(i + 1)
    )

    families = scrape(client)

    events = samples(families, "automation_events")
    types = {dict(labels)["type"]: n for labels, n in events.items()}
    assert len(types) == 51
    assert "type.59" in types and "type.10" in types and "type.09" not in types
    assert types["other"] == sum(range(1, 11))
    assert sum(types.values()) == Event.objects.count()


def test_scrapes_within_the_cache_time_do_not_query_the_database(
    client, source, settings, django_assert_num_queries
):
    settings.METRICS_CACHE_SECONDS = 60
    send(client, source, "evt_1")
    scrape(client)

    with django_assert_num_queries(0):
        families = scrape(client)
    assert value(families, "automation_events", source="shop", type="order.created",
                 status="unrouted") == 1  # fmt: skip


def test_it_refuses_a_remote_scrape_without_credentials(client):
    response = client.get("/metrics", REMOTE_ADDR="10.1.2.3")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_refuses_loopback_when_a_proxy_forwarded_the_request(client):
    response = client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9")

    assert response.status_code == 401


def test_it_serves_a_remote_scrape_with_the_metrics_token(client, settings):
    settings.METRICS_TOKEN = "scrape-secret-123"

    ok = client.get(
        "/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer scrape-secret-123"
    )
    wrong = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer nope")

    assert ok.status_code == 200
    assert b"automation_queue_depth" in ok.content
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "authentication_failed"


def test_an_operator_or_viewer_token_may_scrape_staff_without_rights_may_not(
    client, viewer, staff_without_rights
):
    remote = {"REMOTE_ADDR": "10.1.2.3"}

    allowed = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {viewer.token}", **remote)
    denied = client.get(
        "/metrics", HTTP_AUTHORIZATION=f"Bearer {staff_without_rights.token}", **remote
    )

    assert allowed.status_code == 200
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "permission_denied"


def test_a_logged_in_viewer_may_scrape_from_anywhere(client, viewer):
    client.force_login(viewer)

    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_it_answers_503_not_500_when_the_database_is_down(client, monkeypatch):
    def down():
        raise OperationalError("connection refused")

    monkeypatch.setattr(runtime_metrics, "collect_families", down)

    response = client.get("/metrics")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"


def test_it_refuses_post(client):
    response = client.post("/metrics")

    assert response.status_code == 405
    assert response.json()["status"] == "error"
