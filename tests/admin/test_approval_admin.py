"""Approval in the admin: the new statuses filterable, approve and reject from the list
(with the plan page) and from an execution's page, a reason required, viewers offered
nothing and refused."""

import pytest

from events.models import Execution, ExecutionStatus
from events.operate import operations
from guardrails.models import OperatorAction
from tests.support.approval import approval_route, awaiting

pytestmark = pytest.mark.django_db

EXECUTIONS = "/admin/events/execution/"


def page(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


@pytest.fixture
def refunds(source):
    return approval_route()


@pytest.mark.parametrize("status", ["awaiting_approval", "rejected", "expired"])
def test_every_new_status_is_shown_and_filterable(admin_client, source, refunds, status):
    waiting, other = awaiting(source, refunds, 2)
    Execution.objects.filter(pk=waiting.pk).update(status=status)
    Execution.objects.filter(pk=other.pk).update(status=ExecutionStatus.SUCCEEDED)

    listing = page(admin_client.get(f"{EXECUTIONS}?status__exact={status}"))

    assert f"/admin/events/execution/{waiting.pk}/change/" in listing
    assert f"/admin/events/execution/{other.pk}/change/" not in listing
    assert f"?status__exact={status}" in page(admin_client.get(EXECUTIONS)), "in the filter"
    assert status in page(admin_client.get(f"/admin/events/execution/{waiting.pk}/change/"))


def test_bulk_approve_from_the_list_shows_the_plan_then_approves(
    client, operator, source, refunds
):
    waiting = awaiting(source, refunds, 4)
    operations.reject(
        Execution.objects.filter(pk=waiting[0].pk), actor=operator, via="cli", reason="no"
    )
    client.force_login(operator)
    selected = {"action": "approve", "index": 0, "_selected_action": [e.pk for e in waiting]}

    plan = page(client.post(EXECUTIONS, selected))

    assert "Approve 3 execution(s)" in plan
    assert "Selected: 4 execution(s): 3 awaiting_approval, 1 rejected." in plan
    assert Execution.objects.filter(status="awaiting_approval").count() == 3

    response = client.post(EXECUTIONS, {**selected, "confirm": "yes", "reason": "all fine"})

    assert response.status_code == 302
    assert Execution.objects.filter(status="queued").count() == 3
    audit = OperatorAction.objects.get(action="executions.approve")
    assert (audit.actor, audit.via, audit.reason, audit.details["count"]) == (
        "olivia",
        "admin",
        "all fine",
        3,
    )


def test_the_list_action_requires_a_reason(client, operator, source, refunds):
    (waiting,) = awaiting(source, refunds)
    client.force_login(operator)

    again = page(
        client.post(
            EXECUTIONS,
            {
                "action": "reject",
                "index": 0,
                "_selected_action": [waiting.pk],
                "confirm": "yes",
                "reason": "  ",
            },
        )
    )

    assert "This field is required." in again
    assert Execution.objects.get().status == ExecutionStatus.AWAITING_APPROVAL
    assert not OperatorAction.objects.exists()


def test_an_execution_page_offers_approve_and_reject_and_the_timeline_says_who_and_why(
    client, operator, source, refunds
):
    (waiting,) = awaiting(source, refunds)
    client.force_login(operator)
    change = f"/admin/events/execution/{waiting.pk}/change/"

    shown = page(client.get(change))
    assert 'id="act-approve"' in shown and 'id="act-reject"' in shown
    assert 'id="act-cancel"' not in shown, "an operator rejects it, with a reason"

    url = f"/admin/events/execution/{waiting.pk}/reject/"
    assert "Reject 1 execution(s)" in page(client.get(url))
    response = client.post(url, {"confirm": "yes", "reason": "customer withdrew"})

    assert response.status_code == 302
    waiting.refresh_from_db()
    assert waiting.status == ExecutionStatus.REJECTED
    after = page(client.get(change))
    assert "rejected" in after and "customer withdrew" in after and "olivia" in after
    assert 'id="act-reject"' not in after
    assert 'id="act-replay"' in after


def test_viewers_are_offered_no_approval_and_are_refused(client, viewer, source, refunds):
    (waiting,) = awaiting(source, refunds)
    client.force_login(viewer)

    listing = page(client.get(EXECUTIONS))
    shown = page(client.get(f"/admin/events/execution/{waiting.pk}/change/"))

    assert 'value="approve"' not in listing and 'value="reject"' not in listing
    assert "act-approve" not in shown and "act-reject" not in shown
    refused = client.post(
        f"/admin/events/execution/{waiting.pk}/approve/", {"confirm": "yes", "reason": "x"}
    )
    assert refused.status_code == 403
    client.post(
        EXECUTIONS,
        {
            "action": "approve",
            "index": 0,
            "_selected_action": [waiting.pk],
            "confirm": "yes",
            "reason": "x",
        },
    )
    assert Execution.objects.get().status == ExecutionStatus.AWAITING_APPROVAL
    assert not OperatorAction.objects.exists()


def test_the_route_form_offers_approval(admin_client):
    form = page(admin_client.get("/admin/connectors/route/add/"))

    assert 'name="requires_approval"' in form
    assert 'name="approval_timeout"' in form
