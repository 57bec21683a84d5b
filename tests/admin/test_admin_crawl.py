"""Every admin page opens and every admin POST is refused to viewers.

Both sweeps are driven by `django.contrib.admin.site._registry`: a new admin, action or
custom URL is covered without touching this file (only `every_model` needs a row of a new
model, and it says so)."""

from collections.abc import Callable

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from connectors.models import CircuitBreaker, CircuitState, Route
from events.models import (
    Attempt,
    AttemptOutcome,
    BulkAction,
    BulkOperation,
    Event,
    EventStatus,
    Execution,
    ExecutionStatus,
    RejectedRequest,
    Source,
    WorkerHeartbeat,
)
from guardrails import audit
from guardrails.models import (
    AllowedAction,
    AllowedCallable,
    AllowedEventType,
    AllowedHost,
    KillSwitch,
    PayloadSchema,
    RateLimit,
    RuntimeState,
    Scope,
)
from guardrails.permissions import may_view_status

pytestmark = pytest.mark.django_db

# The pages every ModelAdmin has; anything else its get_urls() returns is a custom page.
STANDARD_PAGES = ("changelist", "add", "history", "delete", "change")

# Whatever an action's confirmation step asks for, so that a permitted action really runs.
CONFIRMED = {
    "confirm": "yes",
    "post": "yes",
    "reason": "admin sweep",
    "overlap": "0",
    "secret": "",
}


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def every_model(demo, source, route, superuser, operator, viewer):
    """The demo data plus at least one row of every model the admin shows, in the states
    its actions change: a held and a failed execution, an open circuit, an engaged and a
    released kill switch, an event with a route added after it."""
    now = timezone.now()
    order = Event.objects.create(
        source=source,
        event_id="evt-crawl-1",
        type="order.created",
        payload={"event_id": "evt-crawl-1", "type": "order.created", "data": {"total": 42}},
        headers={"content-type": "application/json", "x-api-key": "[redacted]"},
        body_hash="1" * 64,
    )
    Execution.objects.create(
        event=order,
        route=route,
        status=ExecutionStatus.HELD,
        idempotency_key=Execution.new_idempotency_key(),
    )
    invoice = Event.objects.create(
        source=Source.objects.get(name="demo"),
        event_id="evt-crawl-2",
        type="invoice.paid",
        status=EventStatus.UNROUTED,
        payload={"event_id": "evt-crawl-2", "type": "invoice.paid"},
        body_hash="2" * 64,
    )
    failed = Execution.objects.create(
        event=invoice,
        route=Route.objects.get(name="invoice-log"),
        status=ExecutionStatus.FAILED,
        attempts=1,
        total_attempts=1,
        last_error="ConnectorError: boom",
        finished_at=now,
        idempotency_key=Execution.new_idempotency_key(),
    )
    Attempt.objects.create(
        execution=failed,
        number=1,
        worker="worker-1",
        started_at=now,
        finished_at=now,
        outcome=AttemptOutcome.PERMANENT_ERROR,
        error_class="ConnectorError",
        error_message="boom",
        response_summary={"status": 500},
        duration_ms=12,
    )
    BulkOperation.objects.create(
        action=BulkAction.REPLAY, actor="root", execution_ids=[failed.pk], total=1
    )
    WorkerHeartbeat.objects.create(worker_id="worker-1", hostname="host", pid=1234)
    RejectedRequest.objects.create(
        day=now.date(), source_name="shop", reason="bad_key", count=3, last_seen_at=now
    )
    CircuitBreaker.objects.create(
        route=route, target="api.example.com", state=CircuitState.OPEN, consecutive_failures=5
    )
    RuntimeState.current()
    audit.record(actor="root", via="cli", action="test.seed", reason="a row to show")
    KillSwitch.objects.create(scope=Scope.CONNECTOR, name="slack", engaged=True, reason="noisy")
    KillSwitch.objects.create(scope=Scope.SOURCE, name="shop", engaged=False)
    AllowedEventType.objects.create(source="shop", pattern="order.*")
    RateLimit.objects.create(scope=Scope.ROUTE, name=route.name, limit=100, runaway_per_hour=1000)
    PayloadSchema.objects.create(source="shop", event_type="order.*", schema={"type": "object"})
    AllowedHost.objects.create(pattern="api.example.com")
    AllowedCallable.objects.create(path="tests.support.connectors.noop")
    AllowedAction.objects.create(connector="log", action="record")

    empty = [m._meta.label for m in admin.site._registry if not m._default_manager.exists()]
    assert not empty, f"add a row of {empty} to every_model"


def _request(user):
    """A request to ask a ModelAdmin what `user` may do."""
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def _url(model, page: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{page}", args=args)


def _rows(model) -> list:
    return list(model._default_manager.order_by("pk"))


def _custom_urls(model, model_admin, obj) -> list[str]:
    """The pages a ModelAdmin adds through get_urls(), for `obj` where they take an id."""
    standard = {f"{model._meta.app_label}_{model._meta.model_name}_{p}" for p in STANDARD_PAGES}
    urls = []
    for pattern in model_admin.get_urls():
        if pattern.name and pattern.name not in standard:
            kwargs = {name: str(obj.pk) for name in pattern.pattern.converters}
            urls.append(reverse(f"admin:{pattern.name}", kwargs=kwargs))
    return urls


def _snapshot() -> dict:
    """Every row of every table (sessions aside): what a refused POST must leave alone."""
    return {
        model._meta.label: list(model._base_manager.order_by("pk").values_list())
        for model in apps.get_models()
        if model._meta.label != "sessions.Session"
    }


def _send(call: Callable, url: str, **kwargs):
    """The response, or the exception a 500 would have shown, as text."""
    try:
        return call(url, **kwargs)
    except Exception as exc:
        return f"500: {type(exc).__name__}: {exc}"


def _post_and_undo(client: Client, url: str, data: dict, before: dict):
    """POST in a savepoint that is then rolled back; returns the response (or the error)
    and the tables the POST changed."""
    with transaction.atomic():
        response = _send(client.post, url, data=data)
        after = _snapshot()
        transaction.set_rollback(True)
    return response, sorted(label for label, rows in after.items() if before[label] != rows)


def test_a_viewer_can_run_no_admin_action_and_no_custom_admin_post(viewer, superuser, every_model):
    """Every action a superuser is offered, on each row, POSTed as a viewer: the action
    does not run and nothing is a 500. The same POST as a superuser does change something,
    so a refusal here is a refusal, not an action that had nothing to do."""
    as_viewer, as_root = Client(), Client()
    as_viewer.force_login(viewer)
    as_root.force_login(superuser)
    before = _snapshot()
    ran, idle = [], []
    for model, model_admin in admin.site._registry.items():
        changelist = _url(model, "changelist")
        rows = _rows(model)
        for action in model_admin.get_actions(_request(superuser)):
            changed_by_root = False
            for obj in rows:
                data = {**CONFIRMED, "action": action, "index": "0", ACTION_CHECKBOX_NAME: obj.pk}
                response, changed = _post_and_undo(as_viewer, changelist, data, before)
                if isinstance(response, str) or response.status_code >= 500 or changed:
                    status = response if isinstance(response, str) else response.status_code
                    ran.append(f"{model._meta.label}.{action} on {obj.pk}: {status} {changed}")
                changed_by_root |= bool(_post_and_undo(as_root, changelist, data, before)[1])
            if not changed_by_root:
                idle.append(f"{model._meta.label}.{action}")
        for url in _custom_urls(model, model_admin, rows[0]):
            response, changed = _post_and_undo(as_viewer, url, CONFIRMED, before)
            if isinstance(response, str) or response.status_code >= 500 or changed:
                status = response if isinstance(response, str) else response.status_code
                ran.append(f"POST {url}: {status} {changed}")

    assert not ran, "a viewer ran these:\n" + "\n".join(ran)
    assert not idle, f"these changed nothing even for a superuser (fix every_model): {idle}"


def test_a_viewer_cannot_add_change_or_delete_anything_in_the_admin(viewer, every_model):
    """The add, change and delete forms of every admin refuse a viewer's POST with a 403."""
    client = Client()
    client.force_login(viewer)
    before = _snapshot()
    accepted = []
    for model in admin.site._registry:
        urls = [_url(model, "add")]
        for obj in _rows(model):
            urls += [_url(model, "change", obj.pk), _url(model, "delete", obj.pk)]
        for url in urls:
            response, changed = _post_and_undo(client, url, CONFIRMED, before)
            status = response if isinstance(response, str) else response.status_code
            if status != 403 or changed:
                accepted.append(f"POST {url}: {status} {changed}")

    assert not accepted, "\n".join(accepted)


def _app_allowed(request, app_label: str) -> bool:
    """Django's app index is a 404 unless the user may see one of its models."""
    return any(
        model_admin.has_module_permission(request)
        and any(model_admin.get_model_perms(request).values())
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label == app_label
    )


@pytest.mark.parametrize("role", ["superuser", "operator", "viewer"])
def test_every_admin_page_opens_without_a_server_error(role, request, client, every_model):
    """Index and dashboard, app indexes, and every admin's list, search, add, change,
    history, delete confirmation and custom pages, for each row: 200 where the user may,
    403 (404 for an app index) where not, never a 500."""
    user = request.getfixturevalue(role)
    client.force_login(user)
    asked = _request(user)
    pages = []  # (url, the statuses it may answer, whether to follow redirects)

    def page(url, allowed: bool, *, denied=403, follow=False):
        pages.append((url, {200} if allowed else {denied}, follow))

    page(reverse("admin:index"), True)
    page(reverse("admin:password_change"), True)
    for app_label in sorted({m._meta.app_label for m in admin.site._registry}):
        page(
            reverse("admin:app_list", args=[app_label]), _app_allowed(asked, app_label), denied=404
        )
    for model, model_admin in admin.site._registry.items():
        may_view = model_admin.has_view_or_change_permission(asked)
        changelist = _url(model, "changelist")
        page(changelist, may_view, follow=True)  # the kill switch's list redirects to its page
        if model_admin.search_fields:
            page(f"{changelist}?q=1", may_view, follow=True)
        page(_url(model, "add"), model_admin.has_add_permission(asked))
        rows = _rows(model)
        for obj in rows:
            page(
                _url(model, "change", obj.pk),
                model_admin.has_view_or_change_permission(asked, obj),
            )
        first = rows[0]
        page(
            _url(model, "history", first.pk),
            model_admin.has_view_or_change_permission(asked, first),
        )
        page(_url(model, "delete", first.pk), model_admin.has_delete_permission(asked, first))
        for url in _custom_urls(model, model_admin, first):
            pages.append((url, {200, 403, 405}, True))  # their permissions are their own

    failures = []
    for url, expected, follow in pages:
        response = _send(client.get, url, follow=follow)
        if isinstance(response, str):
            failures.append(f"GET {url}: {response}")
        elif response.status_code not in expected:
            failures.append(f"GET {url}: {response.status_code}, expected {expected}")
        elif any("/login/" in hop for hop, _ in getattr(response, "redirect_chain", [])):
            failures.append(f"GET {url}: sent to the login page")

    index = client.get(reverse("admin:index"))
    assert (b'id="runtime-dashboard"' in index.content) == may_view_status(user)
    assert not failures, f"as {role}:\n" + "\n".join(failures)
