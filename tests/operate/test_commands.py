"""manage.py status, killswitch and replay, and the admin's execution actions."""

import getpass
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from events.engine import runner as engine
from events.models import Execution, ExecutionStatus
from guardrails.models import OperatorAction, RuntimeState

pytestmark = pytest.mark.django_db


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_status_prints_a_table_and_json(make_execution):
    ex = make_execution()
    engine.run(ex.pk)

    assert "succeeded" in run("status")
    body = json.loads(run("status", "--json"))
    assert body["mode"] == "running"
    assert body["processed"] == 1
    assert body["executions"]["succeeded"] == 1


def test_killswitch_on_and_off_from_the_cli_is_audited():
    assert "engaged" in run("killswitch", "on", "--reason", "maintenance", "--actor", "ana")
    assert RuntimeState.current().mode == "killed"
    run("killswitch", "off", "--reason", "done")
    assert RuntimeState.current().mode == "running"
    assert list(OperatorAction.objects.values_list("via", "action", "actor")) == [
        ("cli", "kill_switch.release", f"cli:{getpass.getuser()}"),
        ("cli", "kill_switch.engage", "ana"),
    ]


def test_killswitch_needs_a_reason():
    with pytest.raises(CommandError):
        run("killswitch", "on")
    assert RuntimeState.current().mode == "running"


def test_replay_status_held_releases_held_executions(make_execution):
    ex = make_execution()
    run("killswitch", "on", "--reason", "x")
    engine.run(ex.pk)
    run("killswitch", "off", "--reason", "y")

    assert "1 execution(s) queued again" in run("replay", "--status", "held")
    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED


def test_replay_dry_run_lists_without_changing_anything(make_execution):
    ex = make_execution(["permanent"])
    engine.run(ex.pk)

    out = run("replay", "--status", "failed", "--dry-run")

    assert f"{ex.pk}\tfailed" in out
    assert "1 execution(s) would be replayed" in out
    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.FAILED
    assert not OperatorAction.objects.exists()


def test_replay_of_succeeded_executions_needs_force(make_execution):
    ex = make_execution()
    engine.run(ex.pk)

    assert "0 execution(s)" in run("replay", str(ex.pk))
    assert "1 execution(s)" in run("replay", str(ex.pk), "--force")


def test_replay_refuses_to_run_without_a_selection():
    with pytest.raises(CommandError):
        run("replay")


def test_replay_filters_by_age(make_execution):
    ex = make_execution(["permanent"])
    engine.run(ex.pk)

    assert "0 execution(s) would" in run("replay", "--until", "1h", "--dry-run")
    assert "1 execution(s) would" in run("replay", "--since", "1h", "--dry-run")


def test_the_admin_releases_and_cancels_executions(client, make_execution, operator):
    operator.is_superuser = True
    operator.save()
    client.force_login(operator)
    held, queued = make_execution(), make_execution()
    Execution.objects.filter(pk=held.pk).update(status=ExecutionStatus.HELD)

    asked = client.post(
        "/admin/events/execution/",
        {"action": "release_held", "_selected_action": [held.pk]},
    )
    assert b"Release would queue again now 1 of them" in asked.content
    assert OperatorAction.objects.count() == 0  # it asks for a reason first
    client.post(
        "/admin/events/execution/",
        {"action": "release_held", "_selected_action": [held.pk], "confirm": "yes", "reason": ""},
    )
    held.refresh_from_db()
    assert held.status == ExecutionStatus.HELD  # no reason, nothing done
    for action, row, reason in (("release_held", held, "fixed"), ("cancel", queued, "dupe")):
        client.post(
            "/admin/events/execution/",
            {"action": action, "_selected_action": [row.pk], "confirm": "yes", "reason": reason},
        )

    held.refresh_from_db()
    queued.refresh_from_db()
    assert held.status == ExecutionStatus.QUEUED
    assert queued.status == ExecutionStatus.CANCELLED
    assert set(OperatorAction.objects.values_list("action", "via", "reason")) == {
        ("executions.release", "admin", "fixed"),
        ("executions.cancel", "admin", "dupe"),
    }


def test_the_admin_asks_before_replaying_a_succeeded_execution(client, make_execution, operator):
    operator.is_superuser = True
    operator.save()
    client.force_login(operator)
    ex = make_execution()
    engine.run(ex.pk)

    page = client.post(
        "/admin/events/execution/", {"action": "replay", "_selected_action": [ex.pk]}
    )
    assert page.status_code == 200
    assert b"already succeeded" in page.content
    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.SUCCEEDED

    answer = {"action": "replay", "_selected_action": [ex.pk], "confirm": "yes", "reason": "r"}
    client.post("/admin/events/execution/", answer)
    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.SUCCEEDED  # the reason alone is not enough
    client.post("/admin/events/execution/", {**answer, "again": "on"})
    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.QUEUED


def test_a_viewer_cannot_replay_from_the_admin(client, make_execution, viewer):
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_execution"))
    client.force_login(viewer)
    ex = make_execution(["permanent"])
    engine.run(ex.pk)

    client.post("/admin/events/execution/", {"action": "replay", "_selected_action": [ex.pk]})

    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.FAILED


def test_status_shows_a_table_with_the_mode_kill_switch_and_counts(make_execution):
    ex = make_execution()
    engine.run(ex.pk)
    make_execution()  # stays queued
    run("killswitch", "on", "--reason", "deploy in progress", "--actor", "ana")

    out = run("status")

    assert "mode:          killed" in out
    assert "ENGAGED by ana" in out and "deploy in progress" in out
    assert "oldest queued: " in out and "none queued" not in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["status"] == ["events", "executions"]
    assert rows["succeeded"] == ["-", "1"]
    assert rows["queued"] == ["-", "1"]
    assert rows["accepted"] == ["2", "-"]
    assert "live workers: 0" in out and "open circuits: 0" in out


def test_status_shows_each_workers_slots_and_the_routes_in_flight(make_execution):
    from django.utils import timezone

    from events.models import Execution, WorkerHeartbeat

    WorkerHeartbeat.objects.create(
        worker_id="w-7", hostname="box", pid=9, concurrency=32, in_flight=1, claims=12
    )
    ex = make_execution()
    Execution.objects.filter(pk=ex.pk).update(
        status="running", lease_owner="w-7", lease_expires_at=timezone.now()
    )

    out = run("status")

    worker_row = next(line for line in out.splitlines() if line.startswith("w-7"))
    assert worker_row.split()[:5] == ["w-7", "box", "9", "1/32", "12"]
    route_row = next(line for line in out.splitlines() if line.startswith(ex.route.name))
    assert route_row.split() == [ex.route.name, "1", "16"]


def test_status_json_parses_and_has_the_oldest_queued_age(make_execution):
    assert json.loads(run("status", "--json"))["oldest_queued_seconds"] is None
    make_execution()

    body = json.loads(run("status", "--json"))

    assert body["oldest_queued_seconds"] >= 0
    assert body["executions"]["queued"] == 1
    assert body["kill_switch"]["engaged"] is False


def _failed_executions(n):
    from connectors.models import Route
    from events.models import Event, Source

    source = Source.objects.create(name="bulk")
    route = Route.objects.create(name="bulk", event_type="bulk.*", connector="log", action="x")
    events = Event.objects.bulk_create(
        Event(source=source, event_id=f"b{i}", type="bulk.x", payload={}, body_hash="0" * 64)
        for i in range(n)
    )
    Execution.objects.bulk_create(
        Execution(
            event=e,
            route=route,
            status=ExecutionStatus.FAILED,
            idempotency_key=Execution.new_idempotency_key(),
        )
        for e in events
    )


def test_replay_of_a_large_set_shows_progress_and_requeues_each_once():
    _failed_executions(1500)
    out, err = StringIO(), StringIO()

    call_command("replay", "--status", "failed", stdout=out, stderr=err)

    assert err.getvalue().splitlines() == ["replaying: 1000/1500", "replaying: 1500/1500"]
    assert "1500 execution(s) queued again" in out.getvalue()
    assert Execution.objects.filter(status=ExecutionStatus.QUEUED).count() == 1500
    assert OperatorAction.objects.get().details["count"] == 1500

    again = StringIO()
    call_command("replay", "--status", "failed", stdout=again, stderr=StringIO())
    assert "0 execution(s) queued again" in again.getvalue()


def test_replay_progress_can_be_forced_or_silenced(make_execution):
    first, second = make_execution(["permanent"]), make_execution(["permanent"])
    engine.run(first.pk)
    engine.run(second.pk)
    err = StringIO()

    call_command("replay", str(first.pk), "--progress", "always", stdout=StringIO(), stderr=err)
    assert err.getvalue() == "replaying: 1/1\n"

    err = StringIO()
    call_command("replay", str(second.pk), stdout=StringIO(), stderr=err)
    assert err.getvalue() == ""


def test_replay_draws_a_bar_on_a_terminal():
    from events.management.commands.replay import Progress

    class Terminal(StringIO):
        def isatty(self):
            return True

    from django.core.management.base import OutputWrapper

    screen = Terminal()
    bar = Progress(OutputWrapper(screen))
    bar(1000, 2000)
    bar(2000, 2000)

    assert screen.getvalue() == (
        "\rreplaying [###############...............] 1000/2000"
        "\rreplaying [##############################] 2000/2000\n"
    )


def test_status_and_the_status_api_report_the_same_queue_wait(client, operator, source, route):
    """One rule for `oldest queued`: the CLI, the JSON API and the dashboard agree."""
    import datetime
    import json as _json
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone

    from events.models import Execution
    from events.observe import dashboard
    from tests.support.helpers import ORDER, post

    assert post(client, ORDER, key=source.api_key).status_code == 202
    Execution.objects.update(updated_at=timezone.now() - datetime.timedelta(minutes=3))

    out = StringIO()
    call_command("status", "--json", stdout=out)
    cli = _json.loads(out.getvalue())
    api = client.get("/admin/status", HTTP_AUTHORIZATION=f"Bearer {operator.token}").json()

    assert cli["queue_depth"] == api["queue_depth"] == 1
    for seconds in (cli["oldest_queued_seconds"], api["oldest_queued_seconds"]):
        assert 175 < seconds < 200
    assert 175 < dashboard.oldest_queued_age().total_seconds() < 200
