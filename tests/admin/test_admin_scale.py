"""The events, executions and attempts admin: built for millions of rows, and bulk actions."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connectors.models import Route
from events.models import (
    Attempt,
    BulkAction,
    BulkOperation,
    BulkStatus,
    Event,
    Execution,
    Source,
)
from events.operate import bulk
from guardrails.models import OperatorAction
from lib.admin import NoCountPaginator

pytestmark = pytest.mark.django_db

EVENTS = "/admin/events/event/"
EXECUTIONS = "/admin/events/execution/"
ATTEMPTS = "/admin/events/attempt/"


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def crm(db):
    return Source.objects.create(name="crm")


@pytest.fixture
def billing_route(db):
    return Route.objects.create(
        name="invoices-to-log", event_type="invoice.paid", connector="log", action="record"
    )


def make_execution(source, route, *, event_id, type="order.created", status="failed", age=0):
    at = timezone.now() - timedelta(days=age)
    event = Event.objects.create(
        source=source,
        event_id=event_id,
        type=type,
        payload={"event_id": event_id, "type": type, "data": {"total": 42}},
        headers={"content-type": "application/json", "x-api-key": "[redacted]"},
        body_hash="0" * 64,
        received_at=at,
    )
    return Execution.objects.create(
        event=event,
        route=route,
        status=status,
        idempotency_key=Execution.new_idempotency_key(),
        created_at=at,
        updated_at=at,
    )


def make_many(source, route, n, *, status="failed", prefix="bulk"):
    return [
        make_execution(source, route, event_id=f"{prefix}-{i}", status=status) for i in range(n)
    ]


@pytest.fixture
def mixed(source, crm, route, billing_route):
    """Two sources, two types, two routes, statuses, an old event and attempts."""
    shop_new = make_execution(source, route, event_id="shop-new", status="failed")
    crm_old = make_execution(
        crm, billing_route, event_id="crm-old", type="invoice.paid", status="succeeded", age=40
    )
    Attempt.objects.create(
        execution=shop_new,
        number=1,
        worker="w-1",
        outcome="permanent_error",
        error_class="HTTPError",
        error_message="422 Unprocessable: total must be positive",
        response_summary={"status": 422},
        duration_ms=87,
    )
    Attempt.objects.create(
        execution=crm_old,
        number=1,
        worker="w-2",
        outcome="succeeded",
        started_at=timezone.now() - timedelta(days=40),
        duration_ms=12,
    )
    return shop_new, crm_old


def listed(response) -> str:
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize(
    ("params", "shown", "hidden"),
    [
        ({}, ["shop-new", "crm-old"], []),
        ({"source__id__exact": "SHOP"}, ["shop-new"], ["crm-old"]),
        ({"type": "invoice.paid"}, ["crm-old"], ["shop-new"]),
        ({"status__exact": "accepted"}, ["shop-new", "crm-old"], []),
        ({"status__exact": "held"}, [], ["shop-new", "crm-old"]),
        ({"received_at__gte": "DAY_AGO"}, ["shop-new"], ["crm-old"]),
        ({"q": "crm-old"}, ["crm-old"], ["shop-new"]),
    ],
)
def test_the_events_list_filters_and_searches_by_event_id(
    admin_client, mixed, source, params, shown, hidden
):
    params = {k: _fill(v, source) for k, v in params.items()}
    page = listed(admin_client.get(EVENTS, params))

    for event_id in shown:
        assert f">{event_id}<" in page
    for event_id in hidden:
        assert f">{event_id}<" not in page


@pytest.mark.parametrize(
    ("params", "shown", "hidden"),
    [
        ({"status__exact": "failed"}, ["shop/shop-new"], ["crm/crm-old"]),
        ({"route__id__exact": "BILLING"}, ["crm/crm-old"], ["shop/shop-new"]),
        ({"event__source__id__exact": "SHOP"}, ["shop/shop-new"], ["crm/crm-old"]),
        ({"type": "order.created"}, ["shop/shop-new"], ["crm/crm-old"]),
        ({"created_at__gte": "DAY_AGO"}, ["shop/shop-new"], ["crm/crm-old"]),
        ({"q": "shop-new"}, ["shop/shop-new"], ["crm/crm-old"]),
    ],
)
def test_the_executions_list_filters_and_searches_by_event_id(
    admin_client, mixed, source, billing_route, params, shown, hidden
):
    params = {k: _fill(v, source, billing_route) for k, v in params.items()}
    page = listed(admin_client.get(EXECUTIONS, params))

    for name in shown:
        assert name in page
    for name in hidden:
        assert name not in page


@pytest.mark.parametrize(
    ("params", "shown", "hidden"),
    [
        ({"outcome__exact": "permanent_error"}, ["HTTPError"], ["w-2"]),
        ({"execution__route__id__exact": "BILLING"}, ["w-2"], ["HTTPError"]),
        ({"started_at__gte": "DAY_AGO"}, ["HTTPError"], ["w-2"]),
        ({"q": "crm-old"}, ["w-2"], ["HTTPError"]),
    ],
)
def test_the_attempts_list_filters_and_searches_by_event_id(
    admin_client, mixed, source, billing_route, params, shown, hidden
):
    params = {k: _fill(v, source, billing_route) for k, v in params.items()}
    page = listed(admin_client.get(ATTEMPTS, params))

    for text in shown:
        assert text in page
    for text in hidden:
        assert text not in page


def _fill(value, source, route=None):
    if value == "SHOP":
        return source.pk
    if value == "BILLING":
        return route.pk
    if value == "DAY_AGO":
        return (timezone.now() - timedelta(days=1)).isoformat()
    return value


@pytest.mark.parametrize("url", [EVENTS, EXECUTIONS, ATTEMPTS])
@pytest.mark.parametrize("params", [{}, {"q": "shop-new"}, {"status__exact": "failed"}])
def test_list_pages_never_count_and_never_list_distinct_types(admin_client, mixed, url, params):
    if url != EXECUTIONS:
        params = {k: v for k, v in params.items() if k != "status__exact"}

    with CaptureQueriesContext(connection) as queries:
        listed(admin_client.get(url, params))

    sql = [q["sql"].upper() for q in queries.captured_queries]
    assert not [s for s in sql if "COUNT(" in s], "no COUNT on a list page"
    assert not [s for s in sql if "DISTINCT" in s and "EVENTS_EVENT" in s]


def test_list_pages_page_without_counting(admin_client, source, route):
    make_many(source, route, 3)
    with CaptureQueriesContext(connection) as queries:
        page = listed(admin_client.get(EXECUTIONS, {"p": 2}))

    assert "page 2" in page
    assert "← previous" in page
    assert str(NoCountPaginator([], 1).count) not in page, "the made-up count never shows"
    assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]


def test_the_type_filter_offers_route_types_and_recent_event_types(admin_client, mixed):
    Route.objects.create(name="all", event_type="*", connector="log", action="record")
    Route.objects.create(name="refunds", event_type="refund.created", connector="log")

    page = listed(admin_client.get(EVENTS))

    for event_type in ("order.created", "invoice.paid", "refund.created"):
        assert f"?type={event_type}" in page
    assert "?type=*" not in page


def test_the_event_page_shows_pretty_payload_redacted_headers_and_executions(admin_client, mixed):
    shop_new, _ = mixed

    page = listed(admin_client.get(f"{EVENTS}{shop_new.event.pk}/change/"))

    assert "{\n  &quot;data&quot;: {\n    &quot;total&quot;: 42\n  }," in page
    assert "&quot;x-api-key&quot;: &quot;[redacted]&quot;" in page
    assert "orders-to-log" in page  # its execution


def test_the_execution_page_shows_the_event_and_the_attempt_timeline(admin_client, mixed):
    shop_new, _ = mixed

    page = listed(admin_client.get(f"{EXECUTIONS}{shop_new.pk}/change/"))

    assert f"/admin/events/event/{shop_new.event.pk}/change/" in page
    assert shop_new.idempotency_key in page
    assert "execution-timeline" in page
    assert "HTTP 422" in page  # the status, on the attempt's line
    for text in ("w-1", "87 ms", "Permanent Error", "HTTPError", "total must be positive"):
        assert text in page
    assert "&quot;status&quot;: 422" in page


# -- actions: inline for a few, in the background for many ----------------------------


@pytest.fixture
def low_threshold(monkeypatch):
    monkeypatch.setattr(bulk, "ADMIN_BULK_THRESHOLD", 3)
    monkeypatch.setattr(bulk, "BATCH", 2)


def act(client, action, *, ids=(), across=False, url=EXECUTIONS, asked=True, **extra):
    """Run a list action; `asked`: answer its confirmation page (a reason) at once."""
    data = {"action": action, "index": 0, "_selected_action": [str(i) for i in ids]}
    if asked:
        data.update(confirm="yes", reason="scale test")
    data.update(extra)
    if across:
        data["select_across"] = "1"
    return client.post(url, data)


def test_a_small_selection_runs_in_the_request(admin_client, source, route, low_threshold):
    executions = make_many(source, route, 3)

    response = act(admin_client, "replay", ids=[e.pk for e in executions])

    assert response.status_code == 302
    assert not BulkOperation.objects.exists()
    assert set(Execution.objects.values_list("status", flat=True)) == {"queued"}
    audit = OperatorAction.objects.get()
    assert (audit.action, audit.details["count"]) == ("executions.replay", 3)


@pytest.mark.django_db(transaction=True)  # the worker's own transactions, on PostgreSQL too
def test_a_large_selection_runs_in_the_background_in_batches_with_one_audit_entry(
    admin_client, source, route, low_threshold, monkeypatch, django_capture_on_commit_callbacks
):
    make_many(source, route, 7)
    make_execution(source, route, event_id="done-already", status="succeeded")
    batches = []
    replay = bulk.RUNNERS[BulkAction.REPLAY]
    monkeypatch.setitem(
        bulk.RUNNERS, BulkAction.REPLAY, lambda ids, op: batches.append(ids) or replay(ids, op)
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = act(
            admin_client,
            "replay",
            ids=["1"],
            across=True,
            url=f"{EXECUTIONS}?status__exact=failed",
        )

    operation = BulkOperation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/events/bulkoperation/{operation.pk}/change/"
    assert (operation.action, operation.status, operation.total) == ("replay", "pending", 7)
    assert "status__exact=failed" in operation.selection
    assert Execution.objects.filter(status="failed").count() == 7, "nothing ran in the request"
    progress = listed(admin_client.get(response["Location"]))
    assert "0 / 7 (0%)" in progress
    assert 'http-equiv="refresh"' in progress

    call_command("runworker", no_loop=True, verbosity=0)

    operation.refresh_from_db()
    assert (operation.status, operation.processed, operation.affected) == ("done", 7, 7)
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert not Execution.objects.filter(status="failed").exists()
    assert Execution.objects.get(event__event_id="done-already").status == "succeeded"
    audit = OperatorAction.objects.get()
    assert audit.action == "executions.replay"
    assert audit.details["count"] == 7
    assert audit.details["bulk_operation"] == operation.pk
    page = listed(admin_client.get(f"/admin/events/bulkoperation/{operation.pk}/change/"))
    assert "7 / 7 (100%)" in page
    assert 'http-equiv="refresh"' not in page


@pytest.mark.parametrize(
    ("action", "status", "after"),
    [("cancel", "queued", "cancelled"), ("release_held", "held", "queued")],
)
def test_cancel_and_release_go_to_the_background_above_the_threshold(
    admin_client, source, route, low_threshold, action, status, after
):
    make_many(source, route, 5, status=status)

    act(admin_client, action, ids=["1"], across=True)
    operation = BulkOperation.objects.get()
    assert bulk.run(operation.pk) == BulkStatus.DONE
    assert bulk.run(operation.pk) == "skipped", (
        "a second claim of a finished operation does nothing"
    )

    operation.refresh_from_db()
    assert (operation.processed, operation.total, operation.affected) == (5, 5, 5)
    assert set(Execution.objects.values_list("status", flat=True)) == {after}
    assert OperatorAction.objects.get().details["total"] == 5


def test_a_failing_batch_is_counted_and_the_rest_still_runs(
    admin_client, source, route, low_threshold, monkeypatch
):
    make_many(source, route, 5, status="queued")
    cancel = bulk.RUNNERS[BulkAction.CANCEL]
    calls = []

    def flaky(ids, op):
        calls.append(ids)
        if len(calls) == 1:
            raise RuntimeError("database blip")
        return cancel(ids, op)

    monkeypatch.setitem(bulk.RUNNERS, BulkAction.CANCEL, flaky)
    act(admin_client, "cancel", ids=["1"], across=True)
    operation = BulkOperation.objects.get()

    bulk.run(operation.pk)

    operation.refresh_from_db()
    assert (operation.status, operation.processed, operation.errors) == ("done", 5, 2)
    assert operation.affected == 3
    assert "database blip" in operation.last_error


@pytest.mark.parametrize("count", [2, 5])
def test_replaying_succeeded_executions_asks_first_inline_and_in_bulk(
    admin_client, source, route, low_threshold, count
):
    executions = make_many(source, route, count, status="succeeded")
    ids = [e.pk for e in executions]
    across = count > 3

    ask = act(admin_client, "replay", ids=ids[:1] if across else ids, across=across)

    assert ask.status_code == 200
    assert f"{count} already succeeded: replaying runs their action again.".encode() in ask.content
    assert set(Execution.objects.values_list("status", flat=True)) == {"succeeded"}
    assert not BulkOperation.objects.exists()
    if across:
        assert b'name="select_across" value="1"' in ask.content

    data = {
        "action": "replay",
        "confirm": "yes",
        "reason": "resend",
        "again": "on",
        "_selected_action": ids[:1] if across else ids,
    }
    if across:
        data["select_across"] = "1"
    admin_client.post(EXECUTIONS, data)

    if across:
        operation = BulkOperation.objects.get()
        assert (operation.force, operation.total) == (True, count)
        bulk.run(operation.pk)
    assert set(Execution.objects.values_list("status", flat=True)) == {"queued"}


def test_viewers_cannot_run_bulk_actions(client, viewer, source, route, low_threshold):
    make_many(source, route, 5)
    client.force_login(viewer)

    act(client, "replay", ids=["1"], across=True)

    assert not BulkOperation.objects.exists()
    assert set(Execution.objects.values_list("status", flat=True)) == {"failed"}


def test_the_bulk_operation_page_is_read_only(admin_client, source, route, low_threshold):
    make_many(source, route, 5)
    act(admin_client, "replay", ids=["1"], across=True)
    operation = BulkOperation.objects.get()

    assert admin_client.get("/admin/events/bulkoperation/").status_code == 200
    assert admin_client.get("/admin/events/bulkoperation/add/").status_code == 403
    assert (
        admin_client.post(f"/admin/events/bulkoperation/{operation.pk}/delete/", {"post": "yes"})
    ).status_code == 403


def test_history_cannot_be_bulk_deleted_from_the_admin(admin_client):
    for path in ("/admin/events/event/", "/admin/events/execution/", "/admin/events/attempt/"):
        page = admin_client.get(path)
        assert page.status_code == 200
        assert b'value="delete_selected"' not in page.content, path


def test_a_bulk_operation_whose_worker_died_is_taken_over_where_it_stopped(
    source, route, low_threshold, monkeypatch
):
    executions = make_many(source, route, 6)
    operation = bulk.start("replay", [e.pk for e in executions], actor="olivia")
    # A worker claimed it, did the first batch (2), and died 10 minutes ago.
    long_ago = timezone.now() - timedelta(minutes=10)
    BulkOperation.objects.filter(pk=operation.pk).update(
        status="running", started_at=long_ago, progressed_at=long_ago, processed=2
    )
    batches = []
    replay = bulk.RUNNERS[BulkAction.REPLAY]
    monkeypatch.setitem(
        bulk.RUNNERS, BulkAction.REPLAY, lambda ids, op: batches.append(ids) or replay(ids, op)
    )
    alive = bulk.start("cancel", [executions[0].pk], actor="olivia")
    BulkOperation.objects.filter(pk=alive.pk).update(
        status="running", started_at=timezone.now(), progressed_at=timezone.now()
    )

    assert bulk.runnable_ids() == [operation.pk], "only the stalled one is taken over"
    assert bulk.run(alive.pk) == "skipped", "a live operation is not taken over"
    assert bulk.run(operation.pk) == "done"

    operation.refresh_from_db()
    assert (operation.status, operation.processed) == ("done", 6)
    assert [len(b) for b in batches] == [2, 2], "it went on after the batch already done"
    assert operation.started_at == long_ago
    assert OperatorAction.objects.filter(details__bulk_operation=operation.pk).count() == 1
