"""Secrets in route parameters: stored encrypted, shown masked, never recorded or logged,
replaceable by an operator, readable across a SECRET_KEY rotation."""

import base64
import hashlib
import hmac
import html
import importlib
import json
import re
import uuid

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection

from connectors.models import Route
from events.engine import runner as engine
from events.models import Attempt, Execution, ExecutionStatus
from tests.support.helpers import post

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("only_loopback")]

KEY_BYTES = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY_BYTES).decode()
TOKEN = "Bearer tok_" + "Zq8xW3vB7nK2pL5mR9tY"
API_KEY = "ak_live_" + "9f8e7d6c5b4a39281706"


@pytest.fixture
def fire(client, source, django_capture_on_commit_callbacks):
    """Ingest one event of the route's type; returns its execution."""
    counter = iter(range(1, 10_000))

    def send(route):
        n = next(counter)
        with django_capture_on_commit_callbacks(execute=True):
            response = post(
                client, {"event_id": f"e{n}", "type": route.event_type}, key=source.api_key
            )
        assert response.status_code == 202
        return Execution.objects.filter(route=route).latest("pk")

    return send


def forward_route(url, name="fwd", secret=SECRET, **fields):
    route = Route(
        name=name,
        event_type=f"t.{name}",
        connector="webhook_forward",
        action="forward",
        params={"url": url, "secret": secret},
        **fields,
    )
    route.full_clean()
    route.save()
    return route


def http_route(url, name="api", **fields):
    route = Route(
        name=name,
        event_type=f"t.{name}",
        connector="http",
        action="post",
        params={
            "url": url,
            "headers": {"Authorization": TOKEN, "X-Api-Key": API_KEY, "X-Plain": "visible"},
            "body": {"ok": True},
        },
        **fields,
    )
    route.full_clean()
    route.save()
    return route


def raw_params(route) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT params FROM connectors_route WHERE id = %s", [route.pk])
        return cursor.fetchone()[0]


def assert_signed_with(request, key: bytes):
    headers = request["headers"]
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request["raw"]
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"


def secret_parts():
    return [SECRET, SECRET[6:], TOKEN, TOKEN[7:], API_KEY, API_KEY[3:]]


def assert_nowhere(text: str):
    for part in secret_parts():
        assert part not in text


# -- at rest --------------------------------------------------------------------------------


def test_the_database_holds_no_plain_secret_after_a_route_is_saved():
    forward = forward_route("http://a.test/hook")
    api = http_route("http://a.test/api")

    assert_nowhere(raw_params(forward))
    assert_nowhere(raw_params(api))
    assert "visible" in raw_params(api), "headers that are not secret stay as typed"


def test_a_secret_with_a_placeholder_is_refused_when_saved():
    route = Route(
        name="bad",
        event_type="t",
        connector="http",
        action="post",
        params={
            "url": "http://a.test/",
            "headers": {"Authorization": "Bearer {{ event.data.t }}"},
        },
    )

    with pytest.raises(ValidationError) as excinfo:
        route.full_clean()
    assert "headers.Authorization" in str(excinfo.value)


# -- at run time ----------------------------------------------------------------------------


def test_the_destination_gets_the_right_signature_and_authorization(fire, sink):
    forward = forward_route(sink.url)
    api = http_route(sink.url)

    assert engine.run(fire(forward).pk) == ExecutionStatus.SUCCEEDED
    assert engine.run(fire(api).pk) == ExecutionStatus.SUCCEEDED

    signed, called = sink.requests
    assert_signed_with(signed, KEY_BYTES)
    assert called["headers"]["Authorization"] == TOKEN
    assert called["headers"]["X-Api-Key"] == API_KEY
    assert called["headers"]["X-Plain"] == "visible"


def test_attempts_dry_runs_and_logs_never_hold_the_secret(fire, sink, caplog):
    caplog.set_level("DEBUG")
    sink.script = [{"status": 400, "body": {"error": "nope"}}]
    executions = [
        fire(forward_route(sink.url)),
        fire(http_route(sink.url)),
        fire(forward_route(sink.url, name="fwd-dry", dry_run=True)),
        fire(http_route(sink.url, name="api-dry", dry_run=True)),
    ]

    outcomes = [engine.run(ex.pk) for ex in executions]

    assert outcomes == [
        ExecutionStatus.FAILED,
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.DRY_RUN,
        ExecutionStatus.DRY_RUN,
    ]
    recorded = json.dumps(
        [
            list(Attempt.objects.values("error_class", "error_message", "response_summary")),
            list(Execution.objects.values("last_error", "status_reason")),
        ]
    )
    assert "would_send" in recorded
    assert_nowhere(recorded)
    assert_nowhere(caplog.text)


def test_a_secret_stays_readable_across_a_secret_key_rotation(fire, sink, settings):
    route = forward_route(sink.url)

    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-" + uuid.uuid4().hex
    assert engine.run(fire(route).pk) == ExecutionStatus.SUCCEEDED
    assert_signed_with(sink.requests[0], KEY_BYTES)
    Route.objects.get(pk=route.pk).full_clean()

    settings.SECRET_KEY_FALLBACKS = []
    ex = fire(route)
    assert engine.run(ex.pk) == ExecutionStatus.FAILED
    error = ex.attempt_set.get().error_message
    assert "secret" in error and "SECRET_KEY" in error
    assert len(sink.requests) == 1
    with pytest.raises(ValidationError, match="type it again"):
        Route.objects.get(pk=route.pk).full_clean()


def test_a_plain_secret_written_before_sealing_still_runs(fire, sink):
    route = forward_route(sink.url)
    Route.objects.filter(pk=route.pk).update(params={"url": sink.url, "secret": SECRET})
    route.refresh_from_db()
    assert SECRET in raw_params(route)

    assert engine.run(fire(route).pk) == ExecutionStatus.SUCCEEDED
    assert_signed_with(sink.requests[0], KEY_BYTES)


def test_the_migration_seals_plain_secrets_already_stored(fire, sink):
    forward, api = forward_route(sink.url), http_route(sink.url)
    Route.objects.filter(pk=forward.pk).update(params={"url": sink.url, "secret": SECRET})
    Route.objects.filter(pk=api.pk).update(
        params={"url": sink.url, "headers": {"Authorization": TOKEN, "X-Api-Key": API_KEY}}
    )
    migration = importlib.import_module("connectors.migrations.0006_seal_route_secrets")

    migration.seal_route_secrets(apps, None)

    assert_nowhere(raw_params(forward) + raw_params(api))
    assert engine.run(fire(forward).pk) == ExecutionStatus.SUCCEEDED
    assert engine.run(fire(api).pk) == ExecutionStatus.SUCCEEDED
    assert_signed_with(sink.requests[0], KEY_BYTES)
    assert sink.requests[1]["headers"]["Authorization"] == TOKEN


def test_a_route_loaded_from_a_fixture_with_a_plain_secret_is_sealed_and_runs(
    fire, sink, tmp_path
):
    fixture = tmp_path / "routes.json"
    fixture.write_text(
        json.dumps(
            [
                {
                    "model": "connectors.route",
                    "pk": 50,
                    "fields": {
                        "name": "from-fixture",
                        "event_type": "t.fixture",
                        "connector": "webhook_forward",
                        "action": "forward",
                        "params": {"url": sink.url, "secret": SECRET},
                        "enabled": True,
                        "max_attempts": 8,
                        "created_at": "2026-01-01T00:00:00Z",
                        "updated_at": "2026-01-01T00:00:00Z",
                    },
                }
            ]
        )
    )

    call_command("loaddata", str(fixture), verbosity=0)

    route = Route.objects.get(name="from-fixture")
    assert_nowhere(raw_params(route))
    assert engine.run(fire(route).pk) == ExecutionStatus.SUCCEEDED
    assert_signed_with(sink.requests[0], KEY_BYTES)


def test_the_demo_fixture_still_loads_and_runs(demo, client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, {"event_id": "e1", "type": "order.created"}, key="demo-key")
    assert response.status_code == 202, response.content
    execution = Execution.objects.get(route__name="order-created-log")

    assert engine.run(execution.pk) == ExecutionStatus.SUCCEEDED


# -- in the admin -------------------------------------------------------------------------


def form_data(page: bytes, **changes) -> dict:
    text = page.decode()
    textarea = re.search(r'<textarea name="params"[^>]*>(.*?)</textarea>', text, re.S)
    data = {
        "name": "fwd",
        "event_type": "t.fwd",
        "connector": "webhook_forward",
        "action": "forward",
        "params": html.unescape(textarea.group(1)).strip(),
        "enabled": "on",
        "max_attempts": "8",
        "max_in_flight": "16",
        "backoff_base_seconds": "2.0",
        "backoff_cap_seconds": "600.0",
        "on_failure": "block",
    }
    data.update(changes)
    return data


def stored_secret(route) -> str:
    # What the worker would hand the connector.
    from connectors import registry

    route.refresh_from_db()
    connector = registry.get(route.connector)
    return connector.reveal_secrets(route.params)["secret"]


def test_the_admin_shows_the_secret_masked_only(admin_client, client, viewer):
    route = forward_route("http://a.test/hook")
    api = http_route("http://a.test/api")
    client.force_login(viewer)

    pages = [
        admin_client.get(f"/admin/connectors/route/{route.pk}/change/"),
        admin_client.get(f"/admin/connectors/route/{api.pk}/change/"),
        admin_client.get("/admin/connectors/route/"),
        client.get(f"/admin/connectors/route/{route.pk}/change/"),
    ]

    for page in pages:
        assert page.status_code == 200
        assert_nowhere(page.content.decode())
    assert "whsec_MDE" in pages[0].content.decode()
    assert "stored encrypted" in pages[0].content.decode()
    assert "$sealed" not in form_data(pages[0].content)["params"], "no ciphertext in the editor"
    viewers_page = pages[3].content.decode()
    assert "$sealed" not in viewers_page, "no ciphertext on the read-only page"
    assert "whsec_MDE" in viewers_page and "stored encrypted" in viewers_page


def test_an_operator_keeps_the_secret_by_leaving_the_mask_and_replaces_it_by_typing(
    admin_client,
):
    route = forward_route("http://a.test/hook")
    url = f"/admin/connectors/route/{route.pk}/change/"

    kept = admin_client.post(url, form_data(admin_client.get(url).content, event_type="t.kept"))
    assert kept.status_code == 302, kept.content.decode()[:3000]
    route.refresh_from_db()
    assert route.event_type == "t.kept"
    assert stored_secret(route) == SECRET

    new_secret = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()
    params = json.loads(form_data(admin_client.get(url).content)["params"])
    params["secret"] = new_secret
    replaced = admin_client.post(
        url, form_data(admin_client.get(url).content, params=json.dumps(params))
    )
    assert replaced.status_code == 302
    assert stored_secret(route) == new_secret
    assert new_secret[6:] not in raw_params(route)
    assert new_secret not in admin_client.get(url).content.decode()


def test_a_masked_value_moved_elsewhere_is_refused_not_stored(admin_client):
    route = forward_route("http://a.test/hook")
    url = f"/admin/connectors/route/{route.pk}/change/"
    params = json.loads(form_data(admin_client.get(url).content)["params"])
    params["url"] = "http://a.test/" + params["secret"]

    response = admin_client.post(
        url, form_data(admin_client.get(url).content, params=json.dumps(params))
    )

    assert response.status_code == 200
    assert "type the secret again" in response.content.decode()
    assert stored_secret(route) == SECRET
