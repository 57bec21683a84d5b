"""manage.py status, killswitch and replay, and the admin's execution actions."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from events import execution as engine
from events.models import Execution, ExecutionStatus
from guardrails.models import OperatorAction, RuntimeState
from tests.test_engine import make_execution  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_status_prints_a_table_and_json(make_execution):  # noqa: F811
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
        ("cli", "kill_switch.release", "cli"),
        ("cli", "kill_switch.engage", "ana"),
    ]


def test_killswitch_needs_a_reason():
    with pytest.raises(CommandError):
        run("killswitch", "on")
    assert RuntimeState.current().mode == "running"


def test_replay_status_held_releases_held_executions(make_execution):  # noqa: F811
    ex = make_execution()
    run("killswitch", "on", "--reason", "x")
    engine.run(ex.pk)
    run("killswitch", "off", "--reason", "y")

    assert "1 execution(s) queued again" in run("replay", "--status", "held")
    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED


def test_replay_dry_run_lists_without_changing_anything(make_execution):  # noqa: F811
    ex = make_execution(["permanent"])
    engine.run(ex.pk)

    out = run("replay", "--status", "failed", "--dry-run")

    assert f"{ex.pk}\tfailed" in out
    assert "1 execution(s) would be replayed" in out
    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.FAILED
    assert not OperatorAction.objects.exists()


def test_replay_of_succeeded_executions_needs_force(make_execution):  # noqa: F811
    ex = make_execution()
    engine.run(ex.pk)

    assert "0 execution(s)" in run("replay", str(ex.pk))
    assert "1 execution(s)" in run("replay", str(ex.pk), "--force")


def test_replay_refuses_to_run_without_a_selection():
    with pytest.raises(CommandError):
        run("replay")


def test_replay_filters_by_age(make_execution):  # noqa: F811
    ex = make_execution(["permanent"])
    engine.run(ex.pk)

    assert "0 execution(s) would" in run("replay", "--until", "1h", "--dry-run")
    assert "1 execution(s) would" in run("replay", "--since", "1h", "--dry-run")


def test_the_admin_releases_and_cancels_executions(client, make_execution, operator):  # noqa: F811
    operator.is_superuser = True
    operator.save()
    client.force_login(operator)
    held, queued = make_execution(), make_execution()
    Execution.objects.filter(pk=held.pk).update(status=ExecutionStatus.HELD)

    client.post(
        "/admin/events/execution/",
        {"action": "release_held", "_selected_action": [held.pk]},
    )
    client.post(
        "/admin/events/execution/",
        {"action": "cancel", "_selected_action": [queued.pk]},
    )

    held.refresh_from_db()
    queued.refresh_from_db()
    assert held.status == ExecutionStatus.QUEUED
    assert queued.status == ExecutionStatus.CANCELLED
    assert set(OperatorAction.objects.values_list("action", "via")) == {
        ("executions.release", "admin"),
        ("executions.cancel", "admin"),
    }


def test_the_admin_asks_before_replaying_a_succeeded_execution(client, make_execution, operator):  # noqa: F811
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

    client.post(
        "/admin/events/execution/",
        {"action": "replay", "_selected_action": [ex.pk], "confirm": "yes"},
    )
    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.QUEUED


def test_a_viewer_cannot_replay_from_the_admin(client, make_execution, viewer):  # noqa: F811
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_execution"))
    client.force_login(viewer)
    ex = make_execution(["permanent"])
    engine.run(ex.pk)

    client.post("/admin/events/execution/", {"action": "replay", "_selected_action": [ex.pk]})

    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.FAILED
