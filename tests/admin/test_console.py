"""The operator console's safety rails: nobody deletes history from the admin, and the
command line names who acted."""

import getpass
from io import StringIO

import pytest
from django.core.management import call_command

from events.engine import runner as engine
from guardrails.models import OperatorAction

pytestmark = pytest.mark.django_db

HISTORY = ["event", "execution", "attempt"]


@pytest.fixture
def history(make_execution):
    """One event, one execution and one attempt."""
    execution = make_execution(["ok"])
    engine.run(execution.pk)
    execution.refresh_from_db()
    return {
        "event": execution.event,
        "execution": execution,
        "attempt": execution.attempt_set.get(),
    }


@pytest.mark.parametrize("model", HISTORY)
def test_nobody_may_delete_history_from_the_admin_not_even_a_superuser(
    admin_client, history, model
):
    row = history[model]
    base = f"/admin/events/{model}/"

    change = admin_client.get(f"{base}{row.pk}/change/").content.decode()
    listing = admin_client.get(base).content.decode()

    assert 'class="deletelink"' not in change
    assert "delete_selected" not in listing
    assert admin_client.get(f"{base}{row.pk}/delete/").status_code == 403
    assert admin_client.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert type(row).objects.filter(pk=row.pk).exists()


def test_the_command_line_names_the_os_user_in_the_audit_log():
    call_command("killswitch", "on", "--reason", "drill", stdout=StringIO())
    call_command("killswitch", "off", "--reason", "done", "--actor", "alice", stdout=StringIO())

    actors = list(OperatorAction.objects.order_by("pk").values_list("actor", flat=True))
    assert actors == [f"cli:{getpass.getuser()}", "alice"]
