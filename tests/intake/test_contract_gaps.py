"""Contract gaps of issue 14: numbers out of range, kill switches for names that do not
exist, compressed bodies, methods the read-only endpoints do not answer, and identifiers
that display as something else."""

import gzip
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import URLPattern

from automation_runtime import urls
from connectors.models import Route
from events.models import Event, RejectedRequest, Source
from events.sources import credentials
from guardrails.models import KillSwitch, OperatorAction, RuntimeState
from tests.support.helpers import error_code, post
from tests.support.senders import create, delivery, send, signed

pytestmark = pytest.mark.django_db


def bearer(user):
    return {"HTTP_AUTHORIZATION": f"Bearer {user.token}"}


# -- 8: numbers that overflow to infinity ----------------------------------------------------

OUT_OF_RANGE = {
    "top level": ('{"event_id": "n1", "type": "t", "total": 1e400}', "total"),
    "negative": ('{"event_id": "n1", "type": "t", "total": -1e400}', "total"),
    "upper-case exponent": ('{"event_id": "n1", "type": "t", "total": 1E+400}', "total"),
    "in a list": ('{"event_id": "n1", "type": "t", "items": [1, 2.5, 2e308]}', "items[2]"),
    "in an object in a list": (
        '{"event_id": "n1", "type": "t", "data": {"lines": [{"qty": 1}, {"qty": -9e999}]}}',
        "data.lines[1].qty",
    ),
}


@pytest.mark.parametrize("body,path", OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_a_number_out_of_range_is_a_400_naming_its_path(client, source, route, body, path):
    response = post(client, body, key=source.api_key)

    assert response.status_code == 400, response.content
    assert error_code(response) == "number_out_of_range"
    assert path in response.json()["error"]["message"]
    assert "Retry-After" not in response
    assert Event.objects.count() == 0


def test_numbers_a_float_holds_are_still_accepted(client, source, route):
    body = '{"event_id": "n1", "type": "t", "big": 1e308, "tiny": 1e-400, "int": 1%s}' % (
        "0" * 400
    )

    assert post(client, body, key=source.api_key).status_code == 202


def test_a_number_out_of_range_on_a_named_source_is_a_400_too(client, route):
    _, key = create("api_key", name="crm")

    response = send(
        client, "crm", b'{"event_id": "n1", "type": "t", "x": [1e400]}', {"X-API-Key": key}
    )

    assert response.status_code == 400
    assert error_code(response) == "number_out_of_range"
    assert "x[0]" in response.json()["error"]["message"]
    assert Event.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        '{"enabled": 1e400, "reason": "x"}',
        '{"enabled": true, "reason": 1e400}',
        '{"enabled": true, "reason": "x", "route": -1e400}',
    ],
)
def test_the_operator_api_refuses_numbers_out_of_range(client, operator, route, body):
    response = client.post(
        "/admin/kill_switch", data=body, content_type="application/json", **bearer(operator)
    )

    assert response.status_code == 400, response.content
    assert error_code(response) == "number_out_of_range"
    assert RuntimeState.current().mode == "running"
    assert not KillSwitch.objects.exists()
    assert not OperatorAction.objects.exists()


ROUTE_FORM = {
    "name": "r-inf",
    "event_type": "order.*",
    "connector": "http",
    "action": "post",
    "enabled": "on",
    "max_attempts": 8,
    "max_in_flight": 16,
    "backoff_base_seconds": 2,
    "backoff_cap_seconds": 600,
    "on_failure": "block",
}


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity"])
def test_the_admin_refuses_a_route_whose_params_hold_a_number_out_of_range(admin_client, number):
    params = '{"url": "http://a.test/x", "body": {"lines": [{"qty": ' + number + "}]}}"
    page = admin_client.post("/admin/connectors/route/add/", {**ROUTE_FORM, "params": params})

    assert page.status_code == 200, "the form again, with the error; not a 500"
    assert "body.lines[0].qty: the number is out of range" in page.content.decode()
    assert not Route.objects.filter(name="r-inf").exists()


def test_the_admin_refuses_a_payload_schema_with_a_number_out_of_range(admin_client):
    page = admin_client.post(
        "/admin/guardrails/payloadschema/add/",
        {
            "source": "shop",
            "event_type": "order.*",
            "schema": '{"maximum": 1e400}',
            "enabled": "on",
        },
    )

    assert page.status_code == 200
    assert "maximum: the number is out of range" in page.content.decode()


# -- 14: scoped kill switches for names that do not exist ------------------------------------


@pytest.fixture
def names(source):
    """A source `shop`, routes `to-log` (log) and `to-crm` (http)."""
    Route.objects.create(name="to-log", event_type="order.*", connector="log", action="record")
    Route.objects.create(
        name="to-crm",
        event_type="order.*",
        connector="http",
        action="post",
        params={"url": "https://crm.example.com/hook"},
    )


def killswitch(*args):
    out, err = StringIO(), StringIO()
    call_command("killswitch", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "scope,typo,close",
    [("source", "shpo", "shop"), ("route", "to-lgo", "to-log"), ("connector", "htp", "http")],
)
def test_the_cli_refuses_to_engage_an_unknown_name_and_suggests_close_ones(
    names, scope, typo, close
):
    with pytest.raises(CommandError) as refused:
        killswitch("on", f"--{scope}", typo, "--reason", "incident")

    assert refused.value.returncode == 2
    message = str(refused.value)
    assert repr(typo) in message and repr(close) in message
    assert "--allow-unknown" in message
    assert not KillSwitch.objects.exists()
    assert not OperatorAction.objects.exists()


def test_the_cli_lists_the_known_names_when_none_is_close(names):
    with pytest.raises(CommandError) as refused:
        killswitch("on", "--route", "zzzzzz", "--reason", "incident")

    assert refused.value.returncode == 2
    assert "to-crm" in str(refused.value) and "to-log" in str(refused.value)


def test_the_cli_engages_an_unknown_name_when_told_it_is_intended(names):
    out, _ = killswitch("on", "--route", "coming-soon", "--reason", "pre-empt", "--allow-unknown")

    assert "route coming-soon" in out
    assert KillSwitch.objects.get(scope="route", name="coming-soon").engaged
    assert OperatorAction.objects.get().target == "route:coming-soon"
    # Once engaged on purpose, it is a known switch: engaging it again needs no flag.
    killswitch("off", "--route", "coming-soon", "--reason", "done")
    killswitch("on", "--route", "coming-soon", "--reason", "again")
    assert KillSwitch.objects.get(scope="route", name="coming-soon").engaged


def test_releasing_an_unknown_name_is_allowed_changes_nothing_and_warns(names):
    KillSwitch.objects.all().delete()
    killswitch("on", "--route", "to-log", "--reason", "noisy")

    out, err = killswitch("off", "--route", "to-lgo", "--reason", "fixed")

    assert "'to-lgo'" in err and "'to-log'" in err
    assert "route to-log" in out, "the switches still engaged are shown"
    assert not KillSwitch.objects.filter(name="to-lgo").exists(), "a typo leaves no trace"
    assert KillSwitch.objects.get(name="to-log").engaged
    assert OperatorAction.objects.count() == 1


def test_the_cli_still_engages_a_known_name(names):
    killswitch("on", "--connector", "http", "--reason", "vendor down")

    assert KillSwitch.objects.get(scope="connector", name="http").engaged


def test_the_api_refuses_to_engage_an_unknown_name_with_400(client, operator, names):
    response = client.post(
        "/admin/kill_switch?enabled=true&route=to-lgo&reason=incident", **bearer(operator)
    )

    assert response.status_code == 400
    assert error_code(response) == "unknown_name"
    message = response.json()["error"]["message"]
    assert "'to-lgo'" in message and "'to-log'" in message and "allow_unknown" in message
    assert not KillSwitch.objects.exists()
    assert not OperatorAction.objects.exists()


def test_the_api_engages_an_unknown_name_with_allow_unknown(client, operator, names):
    response = client.post(
        "/admin/kill_switch",
        data={"enabled": True, "source": "partner", "reason": "pre-empt", "allow_unknown": True},
        content_type="application/json",
        **bearer(operator),
    )

    assert response.status_code == 200, response.content
    assert response.json()["changed"] is True and response.json()["engaged"] is True
    assert KillSwitch.objects.get(scope="source", name="partner").engaged


def test_the_api_releases_an_unknown_name_without_creating_it(client, operator, names):
    response = client.post(
        "/admin/kill_switch?enabled=false&connector=htp&reason=tidy", **bearer(operator)
    )

    assert response.status_code == 200
    assert response.json()["changed"] is False and response.json()["engaged"] is False
    assert not KillSwitch.objects.exists()
    assert not OperatorAction.objects.exists()


def test_the_admin_refuses_to_add_a_switch_for_an_unknown_name(client, operator, names):
    operator.is_superuser = True
    operator.save()
    client.force_login(operator)
    url = "/admin/guardrails/killswitch/add/"

    page = client.post(url, {"scope": "route", "name": "to-lgo", "engaged": "on", "reason": "x"})

    assert page.status_code == 200
    assert "&#x27;to-log&#x27;" in page.content.decode()
    assert not KillSwitch.objects.exists()
    done = client.post(url, {"scope": "route", "name": "to-log", "engaged": "on", "reason": "x"})
    assert done.status_code == 302
    assert KillSwitch.objects.get(name="to-log").engaged


# -- 15a: compressed bodies ------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate", "GZIP", "identity, gzip"])
def test_a_compressed_body_is_a_415_saying_to_send_it_uncompressed(
    client, source, route, encoding
):
    body = gzip.compress(json.dumps({"event_id": "z1", "type": "order.created"}).encode())

    response = post(client, body, key=source.api_key, HTTP_CONTENT_ENCODING=encoding)

    assert response.status_code == 415, response.content
    assert error_code(response) == "unsupported_content_encoding"
    assert "uncompressed" in response.json()["error"]["message"]
    assert Event.objects.count() == 0


def test_an_encoded_body_is_refused_before_authentication_and_not_counted(client, route):
    create("api_key", name="crm")
    _, secret = create("github", name="gh")
    body, headers = delivery("github")
    packed = gzip.compress(body)

    wrong_key = send(client, "crm", packed, {"X-API-Key": "wrong", "Content-Encoding": "gzip"})
    signed_over_plain = send(
        client, "gh", packed, {**signed("github", secret, body, headers), "Content-Encoding": "br"}
    )

    assert wrong_key.status_code == signed_over_plain.status_code == 415
    assert error_code(signed_over_plain) == "unsupported_content_encoding"
    assert RejectedRequest.objects.count() == 0
    assert Event.objects.count() == 0


@pytest.mark.parametrize("encoding", ["identity", "IDENTITY", ""])
def test_identity_is_still_accepted(client, source, route, encoding):
    response = post(
        client,
        {"event_id": f"i-{encoding}", "type": "order.created"},
        key=source.api_key,
        HTTP_CONTENT_ENCODING=encoding,
    )

    assert response.status_code == 202


# -- 15b: methods the read-only endpoints do not answer --------------------------------------

READ_ONLY = ["/", "/health", "/ready", "/metrics", "/admin/status", "/api/schema/", "/api/docs/"]
POST_ONLY = [
    "/webhook",
    "/webhook/",
    "/webhook/<slug:source>",
    "/admin/kill_switch",
    "/admin/executions/approve",
    "/admin/executions/reject",
]


def test_every_endpoint_is_covered_below():
    routes = {"/" + str(p.pattern) for p in urls.urlpatterns if isinstance(p, URLPattern)}

    assert routes - set(POST_ONLY) == set(READ_ONLY)


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
@pytest.mark.parametrize("path", READ_ONLY)
def test_read_only_endpoints_answer_other_methods_with_a_json_405(operator, path, method):
    # A real client: no CSRF token, an operator token where one is needed.
    client = Client(enforce_csrf_checks=True)

    response = getattr(client, method)(path, **bearer(operator))

    assert response.status_code == 405, response.content[:200]
    assert response["Content-Type"].startswith("application/json")
    assert error_code(response) == "method_not_allowed"
    allowed = {m.strip() for m in response["Allow"].split(",")}
    assert "GET" in allowed and method.upper() not in allowed


def test_metrics_answer_a_post_without_credentials_with_a_json_405():
    response = Client(enforce_csrf_checks=True).post("/metrics")

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert error_code(response) == "method_not_allowed"


def test_the_admin_keeps_its_csrf_check():
    response = Client(enforce_csrf_checks=True).post(
        "/admin/login/", {"username": "x", "password": "y"}
    )

    assert response.status_code == 403


# -- 15c: identifiers that display as something else -----------------------------------------

MISLEADING = {
    "right-to-left override": ("evt\u202e1", "format"),
    "zero-width space": ("\u200bevt", "format"),
    "byte order mark": ("evt\ufeff", "format"),
    "soft hyphen": ("ev\u00adt", "format"),
    "word joiner": ("ev\u2060t", "format"),
    "leading space": (" evt", "whitespace"),
    "trailing space": ("evt ", "whitespace"),
    "trailing tab": ("evt\t", "whitespace"),
    "trailing no-break space": ("evt\u00a0", "whitespace"),
}


@pytest.mark.parametrize("value,why", MISLEADING.values(), ids=MISLEADING.keys())
@pytest.mark.parametrize(
    "field,code", [("event_id", "invalid_event_id"), ("type", "invalid_type")]
)
def test_misleading_ids_and_types_are_refused(client, source, route, value, why, field, code):
    body = {"event_id": "evt", "type": "order.created", field: value}

    response = post(client, body, key=source.api_key)

    assert response.status_code == 400, response.content
    assert error_code(response) == code
    assert why in response.json()["error"]["message"]
    assert Event.objects.count() == 0


def test_a_misleading_id_is_refused_from_headers_too(client, source, route):
    by_key = post(
        client, {"type": "order.created"}, key=source.api_key, HTTP_IDEMPOTENCY_KEY="evt "
    )
    _, secret = create("github", name="gh")
    body, headers = delivery("github", event_id="d\u00adlv")  # latin-1: a header can carry it
    by_signature = send(client, "gh", body, signed("github", secret, body, headers))

    assert error_code(by_key) == error_code(by_signature) == "invalid_event_id"
    assert Event.objects.count() == 0


def test_a_fixed_type_rule_with_a_format_character_is_refused_at_save(db):
    with pytest.raises(credentials.SourceError, match="format"):
        create("api_key", name="alerts", type_from="fixed", type_field="alert\u200b")
    assert not Source.objects.filter(name="alerts").exists()


def test_ids_and_types_with_inner_spaces_and_plain_unicode_are_still_accepted(
    client, source, route
):
    body = {"event_id": "évt 1", "type": "order created ✓"}

    assert post(client, body, key=source.api_key).status_code == 202
