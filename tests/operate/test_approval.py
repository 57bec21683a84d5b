"""Approve and reject: the rules, their audit, the reason they require, the commands, and
bulk approval by a worker."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from events.models import BulkAction, BulkOperation, Execution, ExecutionStatus
from events.operate import bulk, operations
from guardrails.killswitch import ReasonRequired
from guardrails.models import OperatorAction
from tests.support.approval import approval_route, awaiting

pytestmark = pytest.mark.django_db


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_approve_queues_only_those_awaiting_and_is_audited_with_the_ids(source, operator):
    waiting = awaiting(source, approval_route(), 2)
    other = awaiting(source, approval_route("payouts"), 1, prefix="p")[0]
    operations.reject(Execution.objects.filter(pk=other.pk), actor=operator, via="cli", reason="x")

    n = operations.approve(
        Execution.objects.all(), actor=operator, via="api", reason="refunds checked"
    )

    assert n == 2
    assert set(
        Execution.objects.filter(pk__in=[w.pk for w in waiting]).values_list("status", flat=True)
    ) == {"queued"}
    assert Execution.objects.get(pk=other.pk).status == ExecutionStatus.REJECTED
    audit = OperatorAction.objects.get(action="executions.approve")
    assert (audit.actor, audit.via, audit.reason) == ("olivia", "api", "refunds checked")
    assert audit.details["count"] == 2
    assert audit.details["executions"] == [w.pk for w in waiting]


def test_reject_ends_them_rejected_with_who_and_why(source, operator):
    (waiting,) = awaiting(source, approval_route())

    assert (
        operations.reject(
            Execution.objects.all(), actor=operator, via="admin", reason="duplicate refund"
        )
        == 1
    )

    waiting.refresh_from_db()
    assert waiting.status == ExecutionStatus.REJECTED
    assert waiting.status_reason == "rejected by olivia: duplicate refund"
    audit = OperatorAction.objects.get(action="executions.reject")
    assert (audit.reason, audit.details["executions"]) == ("duplicate refund", [waiting.pk])


@pytest.mark.parametrize("rule", [operations.approve, operations.reject])
@pytest.mark.parametrize("reason", ["", "   "])
def test_a_reason_is_required(source, operator, rule, reason):
    awaiting(source, approval_route())

    with pytest.raises(ReasonRequired):
        rule(Execution.objects.all(), actor=operator, via="cli", reason=reason)

    assert Execution.objects.get().status == ExecutionStatus.AWAITING_APPROVAL
    assert not OperatorAction.objects.exists()


def test_manage_py_approve_takes_ids_and_filters_and_says_how_many(source):
    first, _ = awaiting(source, approval_route(), 2)
    awaiting(source, approval_route("payouts"), 1, prefix="p")

    assert run("approve", str(first.pk), "--reason", "ok", "--actor", "ann") == (
        "1 execution(s) approved.\n"
    )
    assert run("approve", "--route", "payouts", "--reason", "ok", "--dry-run") == (
        "1 execution(s) would be approved.\n"
    )
    assert run("approve", "--route", "refunds", "--reason", "ok") == "1 execution(s) approved.\n"

    first.refresh_from_db()
    assert first.status_reason == "approved by ann"
    assert Execution.objects.get(route__name="payouts").status == "awaiting_approval"
    audit = OperatorAction.objects.filter(action="executions.approve").first()
    assert audit.via == "cli"


def test_manage_py_reject_rejects_with_the_reason(source):
    (waiting,) = awaiting(source, approval_route())

    assert run("reject", str(waiting.pk), "--reason", "fraud", "--actor", "ann") == (
        "1 execution(s) rejected.\n"
    )

    waiting.refresh_from_db()
    assert waiting.status_reason == "rejected by ann: fraud"


@pytest.mark.parametrize("command", ["approve", "reject"])
def test_the_commands_refuse_bad_arguments_clearly(source, command):
    (waiting,) = awaiting(source, approval_route())

    with pytest.raises(CommandError, match="reason"):
        call_command(command, str(waiting.pk))
    with pytest.raises(CommandError, match="reason is required"):
        call_command(command, str(waiting.pk), "--reason", "  ")
    with pytest.raises(CommandError, match="Say which executions"):
        call_command(command, "--reason", "ok")

    assert Execution.objects.get().status == ExecutionStatus.AWAITING_APPROVAL


@pytest.mark.django_db(transaction=True)  # the worker's own transactions
def test_bulk_approval_of_many_runs_in_a_worker_with_one_audit_entry(
    source, operator, monkeypatch
):
    monkeypatch.setattr(bulk, "ADMIN_BULK_THRESHOLD", 3)
    monkeypatch.setattr(bulk, "BATCH", 2)
    awaiting(source, approval_route(), 5)

    operation = bulk.apply(
        Execution.objects.all(), BulkAction.APPROVE, actor=operator, reason="batch checked"
    )

    assert isinstance(operation, BulkOperation)
    assert operation.total == 5
    assert bulk.run(operation.pk) == "done"
    assert set(Execution.objects.values_list("status", flat=True)) == {"queued"}
    assert set(Execution.objects.values_list("status_reason", flat=True)) == {"approved by olivia"}
    audit = OperatorAction.objects.get()
    assert (audit.action, audit.reason, audit.details["count"]) == (
        "executions.approve",
        "batch checked",
        5,
    )


@pytest.mark.django_db(transaction=True)
def test_bulk_rejection_of_many_keeps_the_reason_on_each(source, operator, monkeypatch):
    monkeypatch.setattr(bulk, "ADMIN_BULK_THRESHOLD", 1)
    awaiting(source, approval_route(), 3)

    operation = bulk.apply(
        Execution.objects.all(), BulkAction.REJECT, actor=operator, reason="not ours"
    )
    bulk.run(operation.pk)

    assert set(Execution.objects.values_list("status_reason", flat=True)) == {
        "rejected by olivia: not ours"
    }


def test_bulk_refuses_an_approval_without_a_reason_before_storing_anything(source, operator):
    awaiting(source, approval_route())

    with pytest.raises(ReasonRequired):
        bulk.apply(Execution.objects.all(), BulkAction.APPROVE, actor=operator, reason="")

    assert not BulkOperation.objects.exists()
