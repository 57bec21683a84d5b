"""The Django admin an operator uses at 3 a.m."""

import re

import pytest
from django.contrib.auth import get_user_model

from connectors.models import CircuitBreaker, Route
from events.models import Event, Source, SourceKey, hash_key
from guardrails.models import OperatorAction, RuntimeState
from tests.support.helpers import ORDER, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


def test_the_admin_index_loads(admin_client):
    response = admin_client.get("/admin/")

    assert response.status_code == 200
    assert b"Events" in response.content


def test_a_new_source_gets_a_key_shown_once_and_stored_hashed(admin_client):
    response = admin_client.post(
        "/admin/events/source/add/",
        {
            "name": "billing",
            "enabled": "on",
            "auth_scheme": "api_key",
            "api_key_header": "X-API-Key",
            "event_id_from": "default",
            "type_from": "default",
            "description": "",
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
        },
        follow=True,
    )

    assert response.status_code == 200
    match = re.search(rb"<code>(ak_[\w-]+)</code>", response.content)
    assert match, "the new key is shown on the page after saving"
    key = match.group(1).decode()
    source = Source.objects.get(name="billing")
    assert SourceKey.objects.get(source=source).key_hash == hash_key(key)
    # Shown once: the source's page does not show it again.
    page = admin_client.get(f"/admin/events/source/{source.pk}/change/")
    assert key.encode() not in page.content


def test_rotating_a_key_shows_the_new_one_once_and_keeps_the_old_key_working(
    admin_client, client, source
):
    form = admin_client.post(
        "/admin/events/source/",
        {"action": "rotate_credentials", "_selected_action": [source.pk]},
    )
    assert b"Rotate the credentials of shop" in form.content
    assert source.keys.count() == 1, "nothing changes before the operator confirms"

    response = admin_client.post(
        "/admin/events/source/",
        {
            "action": "rotate_credentials",
            "_selected_action": [source.pk],
            "confirm": "yes",
            "overlap": "24h",
        },
        follow=True,
    )

    new_key = re.search(rb"<code>(ak_[\w-]+)</code>", response.content).group(1).decode()
    assert source.keys.active().count() == 2
    assert post(client, ORDER, key=source.api_key).status_code == 202
    assert post(client, {**ORDER, "event_id": "evt_9"}, key=new_key).status_code == 202


def test_events_list_filters_and_searches_by_event_id(admin_client, client, source, route):
    post(client, ORDER, key=source.api_key)
    post(client, {**ORDER, "event_id": "evt_other"}, key=source.api_key)

    listing = admin_client.get("/admin/events/event/", {"q": "evt_other"})
    assert listing.status_code == 200
    assert b"evt_other" in listing.content
    assert b">evt_1<" not in listing.content

    for params in (
        {"status__exact": "accepted"},
        {"source__id__exact": source.pk},
        {"type": "order.created"},
        {"received_at__gte": "2000-01-01 00:00:00+00:00"},
    ):
        assert admin_client.get("/admin/events/event/", params).status_code == 200


def test_event_detail_shows_the_payload_read_only_and_redacted_headers(
    admin_client, client, source, route
):
    post(client, ORDER, key=source.api_key)
    event = Event.objects.get()

    page = admin_client.get(f"/admin/events/event/{event.pk}/change/")

    assert page.status_code == 200
    assert b"order.created" in page.content
    assert b"[redacted]" in page.content
    assert source.api_key.encode() not in page.content
    assert b'name="payload"' not in page.content  # not an editable field


def test_the_kill_switch_page_requires_a_reason(admin_client):
    state = RuntimeState.current()

    response = admin_client.post(
        f"/admin/guardrails/runtimestate/{state.pk}/change/",
        {"engaged": "on", "new_reason": "", "confirm": "on"},
    )

    assert response.status_code == 200
    assert b"This field is required" in response.content
    assert RuntimeState.current().mode == "running"


def test_the_kill_switch_page_asks_for_a_confirmation(admin_client):
    state = RuntimeState.current()

    response = admin_client.post(
        f"/admin/guardrails/runtimestate/{state.pk}/change/",
        {"engaged": "on", "new_reason": "oops"},
    )

    assert response.status_code == 200
    assert b"This field is required" in response.content
    assert RuntimeState.current().mode == "running"


def test_the_kill_switch_page_engages_it_and_audits_who_and_why(admin_client):
    state = RuntimeState.current()

    admin_client.post(
        f"/admin/guardrails/runtimestate/{state.pk}/change/",
        {"engaged": "on", "new_reason": "runaway loop", "confirm": "on"},
    )

    state.refresh_from_db()
    assert state.mode == "killed"
    assert state.changed_by == "root"
    action = OperatorAction.objects.get()
    assert (action.via, action.action, action.reason) == (
        "admin",
        "kill_switch.engage",
        "runaway loop",
    )


def test_the_audit_log_is_read_only(admin_client):
    from guardrails import audit

    entry = audit.record(actor="root", via="cli", action="test", reason="r")

    assert admin_client.get("/admin/guardrails/operatoraction/").status_code == 200
    assert admin_client.get("/admin/guardrails/operatoraction/add/").status_code == 403
    assert (
        admin_client.post(f"/admin/guardrails/operatoraction/{entry.pk}/delete/", {"post": "yes"})
    ).status_code == 403
    with pytest.raises(TypeError):
        entry.save()
    with pytest.raises(TypeError):
        OperatorAction.objects.all().delete()
    assert OperatorAction.objects.count() == 1


def test_admin_static_files_are_served_with_debug_off(client, settings):
    assert settings.DEBUG is False

    response = client.get("/static/admin/css/base.css")

    assert response.status_code == 200
    assert b"body" in b"".join(response.streaming_content)


def test_the_connectors_page_lists_connectors_actions_and_open_circuits(admin_client):
    route = Route.objects.create(
        name="crm",
        event_type="order.*",
        connector="http",
        action="post",
        params={"url": "https://api.example.com/x"},
    )
    CircuitBreaker.objects.create(route=route, target="api.example.com", state="open")

    page = admin_client.get("/admin/connectors/circuitbreaker/")

    assert page.status_code == 200
    text = page.content.decode()
    for name in ("log", "http", "webhook_forward", "email", "slack", "python"):
        assert f"<b>{name}</b>" in text
    assert "delete, get, patch, post, put" in text
    assert "api.example.com: <b>Open</b>" in text


def test_operators_may_close_a_circuit_and_viewers_are_not_offered_it(client, operator, viewer):
    route = Route.objects.create(
        name="crm", event_type="order.*", connector="log", action="record"
    )
    circuit = CircuitBreaker.objects.create(route=route, target="api.example.com", state="open")
    form = {"action": "close", "index": "0", "_selected_action": [circuit.pk]}

    client.force_login(viewer)
    page = client.get("/admin/connectors/circuitbreaker/")
    assert b'value="close"' not in page.content
    client.post("/admin/connectors/circuitbreaker/", form)
    circuit.refresh_from_db()
    assert circuit.state == "open"
    assert not OperatorAction.objects.exists()

    client.force_login(operator)
    client.post("/admin/connectors/circuitbreaker/", form)
    circuit.refresh_from_db()
    assert circuit.state == "closed"
    assert OperatorAction.objects.get().action == "circuit.close"
