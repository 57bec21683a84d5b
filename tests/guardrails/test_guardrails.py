"""Every decision path of the guardrail policy: kill switches by scope, allowlists, rate
limits and the runaway breaker, dry run."""

import datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from connectors.models import Route
from events.engine import runner as engine
from events.models import Event, Execution, ExecutionStatus, Source
from events.operate import operations
from guardrails.killswitch import set_scoped_kill_switch
from guardrails.models import AllowedEventType, KillSwitch, OperatorAction, RateLimit
from tests.support.helpers import post

pytestmark = pytest.mark.django_db


@pytest.fixture
def send(client, source, django_capture_on_commit_callbacks):
    counter = iter(range(1, 100_000))

    def send(event_type="order.created", key=None, **payload):
        with django_capture_on_commit_callbacks(execute=True):
            response = post(
                client,
                {"event_id": f"g{next(counter)}", "type": event_type, **payload},
                key=key or source.api_key,
            )
        return response

    return send


@pytest.fixture
def two_routes(db):
    return (
        Route.objects.create(
            name="to-log", event_type="order.*", connector="log", action="record"
        ),
        Route.objects.create(
            name="to-script", event_type="order.*", connector="scripted", action="run"
        ),
    )


def run_all():
    return {ex.route.name: engine.run(ex.pk) for ex in Execution.objects.select_related("route")}


def engage(scope, name, reason="test"):
    set_scoped_kill_switch(
        scope=scope, name=name, engaged=True, actor="ops", reason=reason, via="cli"
    )


# -- kill switches by scope ------------------------------------------------------------------


def test_a_route_kill_switch_holds_that_route_only(send, two_routes):
    engage("route", "to-script", "loop with CRM")
    send()

    assert run_all() == {"to-log": "succeeded", "to-script": "held"}
    held = Execution.objects.get(route__name="to-script")
    assert "route 'to-script'" in held.status_reason and "loop with CRM" in held.status_reason
    assert held.attempts == 0


def test_a_connector_kill_switch_holds_every_route_of_that_connector(send, two_routes):
    engage("connector", "log")
    send()

    assert run_all() == {"to-log": "held", "to-script": "succeeded"}


def test_a_source_kill_switch_holds_that_sources_events_at_ingest(send, source, two_routes):
    other = Source.objects.create(name="other")
    _, other_key = other.issue_key()
    engage("source", source.name)

    assert send().json()["status"] == "held"
    assert send(key=other_key).json()["status"] == "accepted"


def test_a_source_kill_switch_engaged_after_ingest_holds_at_claim_time(send, source, two_routes):
    send()
    engage("source", source.name)

    assert set(run_all().values()) == {"held"}


def test_releasing_a_scoped_switch_does_not_release_held_executions(send, two_routes):
    engage("route", "to-log")
    send()
    run_all()
    set_scoped_kill_switch(
        scope="route", name="to-log", engaged=False, actor="o", reason="ok", via="cli"
    )

    assert engine.run(Execution.objects.get(route__name="to-log").pk) == "skipped"
    assert Execution.objects.get(route__name="to-log").status == ExecutionStatus.HELD


def test_the_cli_flips_a_route_kill_switch_with_a_reason_and_audits_it(two_routes):
    out = StringIO()
    call_command("killswitch", "on", "--route", "to-log", "--reason", "noisy", stdout=out)

    assert "route to-log" in out.getvalue()
    assert KillSwitch.objects.get(scope="route", name="to-log").engaged
    entry = OperatorAction.objects.get()
    assert (entry.via, entry.action, entry.target, entry.reason) == (
        "cli",
        "kill_switch.engage",
        "route:to-log",
        "noisy",
    )
    with pytest.raises(CommandError):
        call_command("killswitch", "off", "--route", "to-log")


def test_the_api_flips_a_connector_kill_switch(client, operator, viewer):
    Route.objects.create(name="to-crm", event_type="order.*", connector="http", action="post")
    url = "/admin/kill_switch?enabled=true&connector=http&reason=vendor%20down"

    assert client.post(url, HTTP_AUTHORIZATION=f"Bearer {viewer.token}").status_code == 403
    response = client.post(url, HTTP_AUTHORIZATION=f"Bearer {operator.token}")

    assert response.status_code == 200
    assert response.json()["engaged"] is True and response.json()["scope"] == "connector"
    status = client.get("/admin/status", HTTP_AUTHORIZATION=f"Bearer {operator.token}").json()
    assert status["mode"] == "running"
    assert status["scoped_kill_switches"][0]["name"] == "http"


def test_the_api_refuses_two_scopes_at_once(client, operator):
    response = client.post(
        "/admin/kill_switch?enabled=true&route=a&connector=b&reason=x",
        HTTP_AUTHORIZATION=f"Bearer {operator.token}",
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_scope"
    assert not KillSwitch.objects.exists()


def test_the_admin_asks_for_a_reason_and_a_confirmation(client, operator, two_routes):
    operator.is_superuser = True
    operator.save()
    client.force_login(operator)
    switch = KillSwitch.objects.create(scope="route", name="to-log")
    url = "/admin/guardrails/killswitch/"
    selected = {"action": "engage", "_selected_action": [switch.pk]}

    page = client.post(url, selected)
    assert b"Reason (required" in page.content
    client.post(url, {**selected, "confirm": "yes", "reason": ""})
    switch.refresh_from_db()
    assert not switch.engaged

    client.post(url, {**selected, "confirm": "yes", "reason": "flapping"})
    switch.refresh_from_db()
    assert switch.engaged and switch.reason == "flapping"
    assert OperatorAction.objects.get().via == "admin"


# -- allowlists --------------------------------------------------------------------------------


def test_a_type_off_the_allowlist_is_stored_blocked_and_runs_after_it_is_allowed(
    send, source, two_routes, operator
):
    AllowedEventType.objects.create(source=source.name, pattern="invoice.*")

    response = send("order.created")

    assert response.status_code == 202 and response.json()["status"] == "blocked"
    event = Event.objects.get()
    assert event.status == "blocked"
    assert "not on the allowlist" in event.status_reason
    assert not Execution.objects.exists()
    assert operations.replay_events(Event.objects.all(), actor=operator, via="cli") == 0

    AllowedEventType.objects.create(source=source.name, pattern="order.created")
    out = StringIO()
    call_command("replay", "--blocked", stdout=out)
    assert "2 execution(s) created" in out.getvalue()
    assert set(run_all().values()) == {"succeeded"}
    event.refresh_from_db()
    assert event.status == "accepted"


def test_types_on_the_allowlist_are_accepted(send, source, two_routes):
    AllowedEventType.objects.create(source=source.name, pattern="order.*")

    assert send("order.paid").json()["status"] == "accepted"


def test_without_an_allowlist_every_type_is_accepted(send, two_routes):
    assert send("anything.at.all").json()["status"] == "accepted"


# -- rate limits and the runaway breaker ---------------------------------------------


def test_a_rate_limit_defers_without_spending_attempts(send, two_routes):
    RateLimit.objects.create(scope="route", name="to-log", limit=2, window_seconds=60)
    for _ in range(3):
        send()
    results = [
        engine.run(ex.pk) for ex in Execution.objects.filter(route__name="to-log").order_by("pk")
    ]

    assert results == ["succeeded", "succeeded", "deferred"]
    deferred = Execution.objects.filter(route__name="to-log").order_by("pk").last()
    assert (deferred.status, deferred.attempts, deferred.total_attempts) == ("retrying", 0, 0)
    assert "rate limit of route 'to-log': 2 per 60s" in deferred.status_reason
    first_start = (
        deferred.event.executions.model.objects.filter(route__name="to-log")
        .order_by("pk")[0]
        .attempt_set.get()
        .started_at
    )
    assert deferred.next_attempt_at == first_start + datetime.timedelta(seconds=60)


def test_a_deferred_execution_runs_once_the_window_has_room(send, two_routes):
    RateLimit.objects.create(scope="route", name="to-log", limit=1, window_seconds=60)
    send()
    send()
    first, second = Execution.objects.filter(route__name="to-log").order_by("pk")
    engine.run(first.pk)
    assert engine.run(second.pk) == "deferred"
    from events.models import Attempt

    Attempt.objects.update(started_at=timezone.now() - datetime.timedelta(seconds=61))
    Execution.objects.filter(pk=second.pk).update(next_attempt_at=timezone.now())

    assert engine.run(second.pk) == "succeeded"


def test_a_connector_rate_limit_counts_every_route_of_that_connector(send, two_routes):
    Route.objects.create(name="to-log-2", event_type="order.*", connector="log", action="record")
    RateLimit.objects.create(scope="connector", name="log", limit=1, window_seconds=60)
    send()

    results = run_all()
    assert sorted([results["to-log"], results["to-log-2"]]) == ["deferred", "succeeded"]
    assert results["to-script"] == "succeeded"


def test_the_runaway_breaker_trips_the_routes_own_kill_switch(send, two_routes):
    RateLimit.objects.create(
        scope="route", name="to-log", limit=1000, window_seconds=60, runaway_per_hour=3
    )
    for _ in range(4):
        send()
    results = [
        engine.run(ex.pk) for ex in Execution.objects.filter(route__name="to-log").order_by("pk")
    ]

    assert results == ["succeeded", "succeeded", "succeeded", "held"]
    switch = KillSwitch.objects.get(scope="route", name="to-log")
    assert switch.engaged and "runaway breaker" in switch.reason
    entry = OperatorAction.objects.get(target="route:to-log")
    assert (entry.actor, entry.via) == ("runaway-breaker", "system")


# -- dry run --------------------------------------------------------------------------


def test_a_dry_run_route_records_what_it_would_have_done(send, settings):
    settings.OUTBOUND_HOSTS = ["hooks.example.com"]
    Route.objects.create(
        name="dry",
        event_type="order.*",
        connector="http",
        action="post",
        dry_run=True,
        params={
            "url": "https://hooks.example.com/x",
            "body": {"id": "{{ event.id }}"},
            "headers": {"Authorization": "Bearer s3cret"},
        },
    )
    send()
    ex = Execution.objects.get()

    assert engine.run(ex.pk) == ExecutionStatus.DRY_RUN
    attempt = ex.attempt_set.get()
    assert attempt.outcome == "dry_run"
    would = attempt.response_summary["would_send"]
    assert would["url"] == "https://hooks.example.com/x"
    assert would["body"] == {"id": ex.event.event_id}
    assert would["headers"]["Authorization"] == "[redacted]"


def test_global_dry_run_from_the_cli_and_a_replay_for_real(send, two_routes, operator):
    call_command("dryrun", "on", "--reason", "rehearsal", stdout=StringIO())
    send()

    assert set(run_all().values()) == {"dry_run"}
    call_command("dryrun", "off", "--reason", "done", stdout=StringIO())
    assert operations.replay(Execution.objects.all(), actor=operator, via="cli") == 2
    assert set(run_all().values()) == {"succeeded"}
    assert [a.action for a in OperatorAction.objects.order_by("at")][:2] == [
        "dry_run.on",
        "dry_run.off",
    ]


def test_status_counts_decisions_by_status(client, operator, send, two_routes):
    engage("route", "to-log")
    send()
    run_all()

    body = client.get("/admin/status", HTTP_AUTHORIZATION=f"Bearer {operator.token}").json()
    assert body["executions"]["held"] == 1
    assert body["executions"]["succeeded"] == 1
    assert body["guardrail_decisions"] == [
        {
            "of": "execution",
            "status": "held",
            "reason": "kill switch for route 'to-log' engaged: test",
            "count": 1,
        }
    ]


# -- payload sanity and schemas ----------------------------------------------------------


def test_too_many_keys_is_refused_with_400(client, source, settings):
    settings.MAX_JSON_KEYS = 50
    body = {"event_id": "k", "type": "t", "data": {f"k{i}": i for i in range(60)}}

    response = post(client, body, key=source.api_key)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_keys"
    assert not Event.objects.exists()


def test_a_long_string_is_refused_naming_its_path(client, source, settings):
    settings.MAX_STRING_LENGTH = 100
    body = {"event_id": "s", "type": "t", "data": {"items": [{"note": "ok"}, {"note": "x" * 101}]}}

    response = post(client, body, key=source.api_key)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "string_too_long"
    assert "data.items[1].note" in response.json()["error"]["message"]
    assert not Event.objects.exists()


ORDER_SCHEMA = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "object",
            "required": ["order"],
            "properties": {
                "order": {
                    "type": "object",
                    "required": ["id", "total"],
                    "properties": {"id": {"type": "string"}, "total": {"type": "number"}},
                }
            },
        }
    },
}


def test_a_payload_breaking_its_schema_is_refused_naming_the_field(client, source, two_routes):
    from guardrails.models import PayloadSchema

    PayloadSchema.objects.create(source=source.name, event_type="order.*", schema=ORDER_SCHEMA)
    bad = {
        "event_id": "b1",
        "type": "order.created",
        "data": {"order": {"id": "o", "total": "42"}},
    }
    good = {"event_id": "g1", "type": "order.created", "data": {"order": {"id": "o", "total": 42}}}

    response = post(client, bad, key=source.api_key)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "schema_violation"
    assert error["message"].startswith("data.order.total:")
    assert not Event.objects.exists()
    assert post(client, good, key=source.api_key).status_code == 202
    other_type = {"event_id": "x1", "type": "invoice.paid"}
    assert post(client, other_type, key=source.api_key).status_code == 202


def test_a_disabled_schema_is_not_checked(client, source):
    from guardrails.models import PayloadSchema

    PayloadSchema.objects.create(
        source=source.name, event_type="*", schema={"required": ["nope"]}, enabled=False
    )

    assert post(client, {"event_id": "d", "type": "t"}, key=source.api_key).status_code == 202


def test_an_invalid_schema_is_refused_when_saved(db):
    from django.core.exceptions import ValidationError

    from guardrails.models import PayloadSchema

    with pytest.raises(ValidationError, match="Not a valid JSON Schema"):
        PayloadSchema(source="s", event_type="*", schema={"type": 12}).full_clean()


# -- allowlists kept in the admin ---------------------------------------------------------


def test_hosts_and_callables_can_be_allowed_in_the_admin_tables(settings):
    from guardrails.models import AllowedCallable, AllowedHost
    from guardrails.policy import outbound_host_decision, python_callable_decision

    settings.OUTBOUND_HOSTS = []
    settings.PYTHON_CALLABLES = []
    assert not outbound_host_decision("api.example.com").allowed
    assert not python_callable_decision("myapp.steps.run").allowed

    AllowedHost.objects.create(pattern="*.example.com")
    AllowedCallable.objects.create(path="myapp.steps.run")

    assert outbound_host_decision("api.example.com").allowed
    assert python_callable_decision("myapp.steps.run").allowed
    assert not python_callable_decision("os.system").allowed


def test_once_connector_actions_are_listed_others_are_refused_and_blocked(send, two_routes):
    from django.core.exceptions import ValidationError

    from guardrails.models import AllowedAction

    AllowedAction.objects.create(connector="log", action="record")
    with pytest.raises(ValidationError, match="not on the allowlist"):
        Route(name="x", event_type="a", connector="scripted", action="run").full_clean()

    send()
    results = run_all()
    assert results == {"to-log": "succeeded", "to-script": "blocked"}
    blocked = Execution.objects.get(route__name="to-script")
    assert "scripted.run is not on the allowlist" in blocked.status_reason


def test_the_example_guardrails_fixture_loads(db):
    from guardrails.models import AllowedEventType, AllowedHost, RateLimit

    call_command("loaddata", "guardrails_example", verbosity=0)

    assert AllowedHost.objects.filter(pattern="hooks.slack.com").exists()
    assert AllowedEventType.objects.filter(source="demo").count() == 2
    assert RateLimit.objects.get(name="order-created-log").runaway_per_hour == 10000


# -- the cached guardrail settings ----------------------------------------------------------


def test_a_warm_decision_at_ingest_reads_one_row(source, django_assert_num_queries):
    from guardrails import policy

    AllowedEventType.objects.create(source=source.name, pattern="order.*")
    policy.decide_ingest(source=source, event_type="order.created")  # warms the cache

    with django_assert_num_queries(1):
        assert policy.decide_ingest(source=source, event_type="order.created").allowed


def test_every_change_to_a_guardrail_setting_is_seen_by_the_next_decision(source):
    from guardrails import policy
    from guardrails.models import RuntimeState

    before = RuntimeState.current().config_token
    assert policy.decide_ingest(source=source, event_type="a.b").allowed

    allowed = AllowedEventType.objects.create(source=source.name, pattern="order.*")
    assert RuntimeState.current().config_token != before
    assert policy.decide_ingest(source=source, event_type="a.b").verdict == "block"

    allowed.delete()
    assert policy.decide_ingest(source=source, event_type="a.b").allowed

    engage("source", source.name)
    assert policy.decide_ingest(source=source, event_type="a.b").verdict == "hold"
