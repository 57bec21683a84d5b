"""Approval seen from outside: the operator API (approve, reject: who may, a reason
required, JSON errors), the dashboard, /metrics and the status report."""

import datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from events.models import Execution, ExecutionStatus
from events.observe import dashboard, stats
from events.observe import metrics as runtime_metrics
from guardrails.models import OperatorAction
from tests.support.approval import approval_route, awaiting
from tests.support.helpers import error_code

pytestmark = pytest.mark.django_db


def bearer(user):
    return {"HTTP_AUTHORIZATION": f"Bearer {user.token}"}


def call(client, action, body, user=None, **extra):
    headers = bearer(user) if user is not None else {}
    return client.post(
        f"/admin/executions/{action}", body, content_type="application/json", **headers, **extra
    )


@pytest.fixture
def waiting(source):
    return awaiting(source, approval_route(), 3)


def test_an_operator_approves_by_id_with_a_reason(client, operator, waiting):
    ids = [waiting[0].pk, waiting[1].pk, 999_999]

    response = call(client, "approve", {"ids": ids, "reason": "refunds checked"}, operator)

    assert response.status_code == 200
    assert response.json() == {"action": "approve", "requested": 3, "changed": 2}
    assert Execution.objects.get(pk=waiting[2].pk).status == "awaiting_approval"
    audit = OperatorAction.objects.get()
    assert (audit.action, audit.via, audit.actor, audit.reason) == (
        "executions.approve",
        "api",
        "olivia",
        "refunds checked",
    )


def test_an_operator_rejects_and_a_second_call_changes_nothing(client, operator, waiting):
    body = {"ids": [waiting[0].pk], "reason": "fraud"}

    first = call(client, "reject", body, operator)
    second = call(client, "reject", body, operator)

    assert first.json()["changed"] == 1 and second.json()["changed"] == 0
    waiting[0].refresh_from_db()
    assert waiting[0].status_reason == "rejected by olivia: fraud"


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_viewers_get_403_and_nothing_changes(client, viewer, waiting, action):
    response = call(client, action, {"ids": [waiting[0].pk], "reason": "x"}, viewer)

    assert response.status_code == 403
    assert error_code(response) == "permission_denied"
    assert not Execution.objects.exclude(status="awaiting_approval").exists()


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_no_credential_gets_401(client, waiting, action):
    response = call(client, action, {"ids": [waiting[0].pk], "reason": "x"})

    assert response.status_code == 401
    assert error_code(response) == "not_authenticated"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"ids": [1]}, "invalid_reason"),
        ({"ids": [1], "reason": "   "}, "invalid_reason"),
        ({"reason": "x"}, "invalid_ids"),
        ({"ids": [], "reason": "x"}, "invalid_ids"),
        ({"ids": ["a"], "reason": "x"}, "invalid_ids"),
        ({"ids": [2**70], "reason": "x"}, "invalid_ids"),
        ({"ids": list(range(1, 1002)), "reason": "x"}, "invalid_ids"),
        ([1, 2], "invalid_body"),
    ],
)
def test_bad_bodies_get_a_json_400_and_change_nothing(client, operator, waiting, body, code):
    response = call(client, "approve", body, operator)

    assert response.status_code == 400
    assert error_code(response) == code
    assert not OperatorAction.objects.exists()


def test_a_body_that_is_not_json_gets_a_json_error(client, operator, waiting):
    broken = client.post(
        "/admin/executions/approve", "{", content_type="application/json", **bearer(operator)
    )
    text = client.post(
        "/admin/executions/approve", "ids=1", content_type="text/plain", **bearer(operator)
    )

    assert broken.status_code == 400 and broken.json()["status"] == "error"
    assert text.status_code == 415


def test_the_dashboard_shows_how_many_wait_and_for_how_long(admin_client, waiting):
    Execution.objects.filter(pk=waiting[0].pk).update(
        updated_at=timezone.now() - datetime.timedelta(minutes=5, seconds=3)
    )

    data = dashboard.overview()
    shown = admin_client.get("/admin/").content.decode()

    assert data["awaiting_approval"] == 3
    assert data["oldest_awaiting_text"].startswith("5 min")
    assert "?status__exact=awaiting_approval" in shown
    assert 'id="oldest-awaiting">5 min' in shown


def test_metrics_export_the_count_and_the_oldest_wait(client, settings, waiting):
    settings.METRICS_CACHE_SECONDS = 0
    settings.METRICS_TOKEN = ""
    runtime_metrics.collector.clear()
    Execution.objects.filter(pk=waiting[0].pk).update(
        updated_at=timezone.now() - datetime.timedelta(seconds=90)
    )

    response = client.get("/metrics")
    runtime_metrics.collector.clear()

    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    assert families["automation_awaiting_approval"].samples[0].value == 3
    oldest = families["automation_awaiting_approval_oldest_age_seconds"].samples[0].value
    assert 90 <= oldest < 120
    by_status = {s.labels["status"]: s.value for s in families["automation_executions"].samples}
    assert by_status["awaiting_approval"] == 3


def test_the_status_report_and_command_include_the_count(waiting):
    Execution.objects.filter(pk=waiting[0].pk).update(status=ExecutionStatus.EXPIRED)
    out = StringIO()

    call_command("status", stdout=out)
    report = stats.report()

    assert report["awaiting_approval"] == 2
    assert report["executions"]["expired"] == 1
    assert report["oldest_awaiting_approval_seconds"] is not None
    assert "awaiting approval: 2 execution(s)" in out.getvalue()


def test_nothing_waiting_reads_as_zero(db):
    assert stats.approval_wait() == {"awaiting": 0, "oldest_age_seconds": None}
