"""GET /health, GET /ready, GET /admin/status and POST /admin/kill_switch."""

import pytest

from guardrails.models import OperatorAction, RuntimeState

pytestmark = pytest.mark.django_db


def bearer(user):
    return {"HTTP_AUTHORIZATION": f"Bearer {user.token}"}


def test_health_answers_without_auth_or_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_checks_the_database_and_migrations(client):
    response = client.get("/ready")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "migrations": "ok"}


def test_ready_answers_503_when_migrations_are_pending(client, monkeypatch):
    from automation_runtime import views

    monkeypatch.setattr(views, "_migrations_seen_applied", False)
    monkeypatch.setattr(views, "_pending_migrations", lambda: 2)

    response = client.get("/ready")

    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == "2 pending"


def test_status_requires_a_credential(client):
    response = client.get("/admin/status")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Bearer"


def test_status_rejects_an_unknown_token_with_401(client):
    response = client.get("/admin/status", HTTP_AUTHORIZATION="Bearer nope")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_status_rejects_staff_without_rights_with_403(client, staff_without_rights):
    response = client.get("/admin/status", **bearer(staff_without_rights))

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_status_rejects_a_token_of_a_user_who_is_no_longer_staff(client, operator):
    operator.is_staff = False
    operator.save()

    assert client.get("/admin/status", **bearer(operator)).status_code == 403


def test_status_rejects_a_revoked_token(client, operator):
    from django.utils import timezone

    operator.operator_tokens.update(revoked_at=timezone.now())

    assert client.get("/admin/status", **bearer(operator)).status_code == 401


def test_status_shows_mode_counts_and_processed(client, operator, source, route):
    from tests.support.helpers import ORDER, post

    post(client, ORDER, key=source.api_key)
    post(client, {**ORDER, "event_id": "evt_2"}, key=source.api_key)
    from events.models import Execution

    Execution.objects.filter(event__event_id="evt_1").update(status="succeeded")

    body = client.get("/admin/status", **bearer(operator)).json()

    assert body["mode"] == "running"
    assert body["processed"] == 1
    assert body["events"]["accepted"] == 2
    assert body["executions"]["succeeded"] == 1
    assert body["executions"]["queued"] == 1
    assert body["kill_switch"] == {
        "engaged": False,
        "changed_at": None,
        "changed_by": None,
        "reason": None,
    }


def test_a_viewer_may_read_the_status_but_not_flip_the_kill_switch(client, viewer):
    assert client.get("/admin/status", **bearer(viewer)).status_code == 200

    response = client.post("/admin/kill_switch?enabled=true&reason=x", **bearer(viewer))

    assert response.status_code == 403
    assert RuntimeState.current().mode == "running"
    assert OperatorAction.objects.count() == 0


def test_an_operator_engages_the_kill_switch_with_a_reason_and_it_is_audited(client, operator):
    response = client.post(
        "/admin/kill_switch?enabled=true&reason=bad%20deploy", **bearer(operator)
    )

    assert response.status_code == 200
    body = response.json()
    assert body["mode"] == "killed"
    assert body["changed"] is True
    assert body["kill_switch"]["reason"] == "bad deploy"
    assert body["kill_switch"]["changed_by"] == "olivia"
    state = RuntimeState.current()
    assert state.mode == "killed" and state.reason == "bad deploy"
    action = OperatorAction.objects.get()
    assert (action.actor, action.via, action.action, action.reason) == (
        "olivia",
        "api",
        "kill_switch.engage",
        "bad deploy",
    )
    status = client.get("/admin/status", **bearer(operator)).json()
    assert status["mode"] == "killed"
    assert status["kill_switch"]["engaged"] is True


def test_releasing_the_kill_switch_is_audited_too(client, operator):
    client.post("/admin/kill_switch?enabled=true&reason=a", **bearer(operator))

    response = client.post("/admin/kill_switch?enabled=false&reason=fixed", **bearer(operator))

    assert response.json()["mode"] == "running"
    assert list(OperatorAction.objects.values_list("action", flat=True)) == [
        "kill_switch.release",
        "kill_switch.engage",
    ]


def test_setting_the_kill_switch_to_its_current_state_changes_nothing(client, operator):
    response = client.post("/admin/kill_switch?enabled=false&reason=x", **bearer(operator))

    assert response.status_code == 200
    assert response.json()["changed"] is False
    assert OperatorAction.objects.count() == 0


@pytest.mark.parametrize(
    "query,code",
    [
        ("enabled=true", "invalid_reason"),
        ("enabled=true&reason=%20%20", "invalid_reason"),
        ("reason=x", "invalid_enabled"),
        ("enabled=maybe&reason=x", "invalid_enabled"),
    ],
)
def test_the_kill_switch_rejects_bad_parameters_with_400(client, operator, query, code):
    response = client.post(f"/admin/kill_switch?{query}", **bearer(operator))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert RuntimeState.current().mode == "running"


def test_the_kill_switch_accepts_a_json_body_too(client, operator):
    response = client.post(
        "/admin/kill_switch",
        data={"enabled": True, "reason": "from json"},
        content_type="application/json",
        **bearer(operator),
    )

    assert response.status_code == 200
    assert RuntimeState.current().reason == "from json"


def test_the_kill_switch_only_answers_post(client, operator):
    assert client.get("/admin/kill_switch", **bearer(operator)).status_code == 405


def test_a_logged_in_staff_session_with_the_permission_may_use_the_endpoints(client, operator):
    client.force_login(operator)

    assert client.get("/admin/status").status_code == 200


def test_a_session_post_without_csrf_token_is_refused(operator):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(operator)

    response = csrf_client.post("/admin/kill_switch?enabled=true&reason=x")

    assert response.status_code == 403
    assert RuntimeState.current().mode == "running"


def test_operator_tokens_are_stored_hashed(operator):
    row = operator.operator_tokens.get()

    assert operator.token not in (row.token_hash, row.prefix)
