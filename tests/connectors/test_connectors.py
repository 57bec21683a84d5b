"""Built-in connectors against real servers on 127.0.0.1, templating, circuit breakers."""

import base64
import datetime
import hashlib
import hmac
import json
import socket
import time

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.utils import timezone

from connectors import circuits, net, templating
from connectors.base import ExecutionContext, PermanentError, RetryableError
from connectors.models import CircuitBreaker, Route
from events.engine import runner as engine
from events.models import Execution, ExecutionStatus
from tests.support.helpers import post

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("only_loopback")]


@pytest.fixture
def routed(client, source, django_capture_on_commit_callbacks):
    """Ingest one event routed to connector.action with params; returns the execution."""
    counter = iter(range(1, 10_000))

    def make(connector, action, params, payload=None, **fields):
        n = next(counter)
        route = Route(
            name=f"r{n}",
            event_type=f"t.{n}",
            connector=connector,
            action=action,
            params=params,
            **fields,
        )
        route.full_clean()
        route.save()
        body = {"event_id": f"e{n}", "type": f"t.{n}", **(payload or {})}
        with django_capture_on_commit_callbacks(execute=True):
            assert (
                post(client, body, key=source.api_key, HTTP_X_REQUEST_ID="req-42").status_code
                == 202
            )
        return Execution.objects.get(route=route)

    return make


def due(ex):
    Execution.objects.filter(pk=ex.pk).update(next_attempt_at=timezone.now())


ORDER = {"data": {"order": {"id": "ord_7", "items": [{"sku": "A1"}], "total": 42}}}


# -- http ------------------------------------------------------------------------------


def test_http_posts_the_rendered_body_with_the_idempotency_key(routed, sink):
    ex = routed(
        "http",
        "post",
        {
            "url": sink.url,
            "body": {
                "order": "{{ event.data.order.id }}",
                "n": "{{ event.data.order.total }}",
                "note": "order {{ event.data.order.id }} via {{ event.headers.x-request-id }}",
            },
            "headers": {"X-Custom": "yes"},
        },
        payload=ORDER,
    )

    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED

    (request,) = sink.requests
    assert request["method"] == "POST"
    assert request["key"] == ex.idempotency_key
    assert request["headers"]["X-Custom"] == "yes"
    assert request["body"] == {"order": "ord_7", "n": 42, "note": "order ord_7 via req-42"}
    attempt = ex.attempt_set.get()
    assert attempt.response_summary["status"] == 200


def test_http_503_503_200_succeeds_on_the_third_attempt_with_one_key(routed, sink):
    sink.script = [503, 503]
    ex = routed("http", "post", {"url": sink.url, "body": {}}, backoff_base_seconds=0.01)

    for _ in range(3):
        due(ex)
        engine.run(ex.pk)

    ex.refresh_from_db()
    assert ex.status == ExecutionStatus.SUCCEEDED
    assert [r["status"] for r in sink.requests] == [503, 503, 200]
    assert {r["key"] for r in sink.requests} == {ex.idempotency_key}
    assert list(ex.attempt_set.values_list("outcome", flat=True)) == [
        "retryable_error",
        "retryable_error",
        "succeeded",
    ]


def test_http_400_fails_at_once_and_records_the_body(routed, sink):
    sink.script = [{"status": 400, "body": {"error": "bad total"}}]
    ex = routed("http", "post", {"url": sink.url})

    assert engine.run(ex.pk) == ExecutionStatus.FAILED
    assert len(sink.requests) == 1
    attempt = ex.attempt_set.get()
    assert attempt.outcome == "permanent_error"
    assert "bad total" in attempt.response_summary["body"]


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502])
def test_http_retries_the_retryable_statuses(routed, sink, status):
    sink.script = [status]
    ex = routed("http", "put", {"url": sink.url})

    assert engine.run(ex.pk) == ExecutionStatus.RETRYING


def test_http_honours_retry_after(routed, sink):
    sink.script = [{"status": 429, "headers": {"Retry-After": "120"}}]
    ex = routed("http", "post", {"url": sink.url}, backoff_base_seconds=0.01)

    engine.run(ex.pk)

    ex.refresh_from_db()
    assert 100 < (ex.next_attempt_at - timezone.now()).total_seconds() <= 120


def test_http_a_timeout_is_retried(routed, sink, settings):
    settings.HTTP_READ_TIMEOUT = 0.3
    sink.script = [{"status": 200, "delay": 1.5}]
    ex = routed("http", "get", {"url": sink.url})

    assert engine.run(ex.pk) == ExecutionStatus.RETRYING
    assert "Timeout" in ex.attempt_set.get().error_message


def test_http_a_refused_connection_is_retried(routed, settings):
    settings.OUTBOUND_HOSTS = ["127.0.0.1"]
    settings.OUTBOUND_ALLOW_PRIVATE = ["127.0.0.1"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    ex = routed("http", "post", {"url": f"http://127.0.0.1:{port}/x"})

    assert engine.run(ex.pk) == ExecutionStatus.RETRYING


@pytest.mark.parametrize(
    "url,why",
    [
        ("http://127.0.0.1:9/x", "private or special address"),
        ("http://169.254.169.254/latest/meta-data/", "private or special address"),
        ("http://10.0.0.1/x", "private or special address"),
        ("http://localhost:9/x", "private or special address"),
        ("http://[::1]:9/x", "private or special address"),
        ("http://example.org/x", "not on the outbound host allowlist"),
    ],
)
def test_http_refuses_private_targets_and_hosts_off_the_allowlist(routed, settings, url, why):
    settings.OUTBOUND_HOSTS = ["127.0.0.1", "169.254.169.254", "10.0.0.1", "localhost", "::1"]
    settings.OUTBOUND_ALLOW_PRIVATE = []
    ex = routed("http", "post", {"url": url})

    assert engine.run(ex.pk) == ExecutionStatus.FAILED
    attempt = ex.attempt_set.get()
    assert attempt.error_class == "Refused"
    assert why in attempt.error_message


def test_a_name_with_one_private_address_among_public_ones_is_refused(settings, monkeypatch):
    settings.OUTBOUND_HOSTS = ["mixed.example"]
    answers = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 80))
        for ip in ("93.184.215.14", "10.1.2.3")
    ]
    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, *a, **k: (
            answers if host == "mixed.example" else real_getaddrinfo(host, *a, **k)
        ),
    )

    with pytest.raises(net.Refused, match=r"10\.1\.2\.3"):
        net.checked_address("mixed.example", 80)


def test_the_connection_goes_to_the_address_that_was_checked(settings, sink, monkeypatch):
    """DNS rebinding: the name is resolved once; a second answer is never used."""
    settings.OUTBOUND_HOSTS = ["rebind.test"]
    settings.OUTBOUND_ALLOW_PRIVATE = ["rebind.test"]
    calls = []
    real_getaddrinfo = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):
        if host != "rebind.test":  # only the test's own name is answered here
            return real_getaddrinfo(host, port, *args, **kwargs)
        calls.append(host)
        ip = "127.0.0.1" if len(calls) == 1 else "10.9.9.9"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)

    response = net.request("GET", f"http://rebind.test:{sink.port}/x", headers={}, body=None)

    assert response.status == 200
    assert calls == ["rebind.test"]
    assert sink.requests[0]["headers"]["Host"] == f"rebind.test:{sink.port}"


def test_http_wildcard_allowlist_entries_match_subdomains_only(settings):
    from guardrails.policy import outbound_host_decision

    settings.OUTBOUND_HOSTS = ["*.example.com", "api.other.org"]
    assert outbound_host_decision("a.example.com").allowed
    assert outbound_host_decision("a.b.example.com").allowed
    assert not outbound_host_decision("example.com").allowed
    assert not outbound_host_decision("badexample.com").allowed
    assert outbound_host_decision("API.other.org.").allowed
    assert not outbound_host_decision("x.api.other.org").allowed


def test_http_does_not_follow_redirects(routed, sink):
    sink.script = [{"status": 302, "headers": {"Location": "http://10.0.0.1/"}}]
    ex = routed("http", "get", {"url": sink.url})

    assert engine.run(ex.pk) == ExecutionStatus.FAILED
    assert len(sink.requests) == 1


def test_secret_headers_are_redacted_in_dry_run_descriptions():
    from connectors.builtins import HttpConnector

    ctx = ExecutionContext("e", "t", {}, {}, 1, "key-1", 1)
    summary = (
        HttpConnector()
        .dry_run(
            "post", {"url": "http://x.test/", "headers": {"Authorization": "Bearer s3cr3t"}}, ctx
        )
        .summary
    )
    assert summary["would_send"]["headers"]["Authorization"] == "[redacted]"
    assert "s3cr3t" not in json.dumps(summary)


# -- webhook_forward, slack, email, python -------------------------------------------------


def test_webhook_forward_signs_the_standard_webhooks_way(routed, sink):
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    ex = routed(
        "webhook_forward",
        "forward",
        {"url": sink.url, "secret": secret, "headers": ["X-Request-Id", "X-API-Key"]},
        payload=ORDER,
    )

    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED

    (request,) = sink.requests
    headers = request["headers"]
    assert headers["webhook-id"] == ex.idempotency_key
    assert headers["X-Request-Id"] == "req-42"
    assert "X-API-Key" not in headers  # redacted at ingest, never forwarded
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request["raw"]
    expected = base64.b64encode(
        hmac.new(b"0123456789abcdef0123456789abcdef", signed, hashlib.sha256).digest()
    ).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert request["body"]["data"] == ORDER["data"]


def test_slack_posts_the_rendered_text(routed, sink):
    ex = routed(
        "slack",
        "post",
        {"url": sink.url, "text": "New order {{ event.data.order.id }}"},
        payload=ORDER,
    )

    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED
    assert sink.requests[0]["body"] == {"text": "New order ord_7"}


def test_email_sends_through_the_django_backend(routed, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    ex = routed(
        "email",
        "send",
        {
            "to": ["ops@example.com"],
            "subject": "Order {{ event.data.order.id }}",
            "body": "Total {{ event.data.order.total }}",
        },
        payload=ORDER,
    )

    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED
    (message,) = mail.outbox
    assert (message.subject, message.body, message.to) == (
        "Order ord_7",
        "Total 42",
        ["ops@example.com"],
    )
    assert message.extra_headers["X-Idempotency-Key"] == ex.idempotency_key


def test_email_to_an_unreachable_server_is_retried(routed, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        settings.EMAIL_PORT = s.getsockname()[1]
    ex = routed("email", "send", {"to": ["a@example.com"], "subject": "s", "body": "b"})

    assert engine.run(ex.pk) == ExecutionStatus.RETRYING


def record_order(event, params, context):
    if params.get("fail") == "retry":
        raise RetryableError("downstream busy")
    return {"order": event["data"]["order"]["id"], "key": context.idempotency_key, **params}


def test_python_calls_an_allowed_function(routed, settings):
    settings.PYTHON_CALLABLES = ["tests.connectors.test_connectors.record_order"]
    ex = routed(
        "python",
        "call",
        {
            "callable": "tests.connectors.test_connectors.record_order",
            "params": {"who": "{{ event.type }}"},
        },
        payload=ORDER,
    )

    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED
    returned = ex.attempt_set.get().response_summary["returned"]
    assert returned == {"order": "ord_7", "key": ex.idempotency_key, "who": ex.event.type}


def test_python_refuses_a_function_off_the_allowlist_when_the_route_is_saved(settings):
    settings.PYTHON_CALLABLES = []
    route = Route(
        name="p",
        event_type="t",
        connector="python",
        action="call",
        params={"callable": "os.system"},
    )

    with pytest.raises(ValidationError, match="allowlist"):
        route.full_clean()


# -- route validation and templating ---------------------------------------------------------


@pytest.mark.parametrize(
    "connector,action,params,field,message",
    [
        ("nope", "x", {}, "connector", "Unknown connector"),
        ("http", "fly", {"url": "http://a.test/"}, "action", "no action 'fly'"),
        ("http", "post", {}, "action", "'url' is a required property"),
        ("http", "post", {"url": "ftp://a.test/"}, "action", "scheme must be http or https"),
        ("http", "post", {"url": "http://a.test/", "nope": 1}, "action", "Additional properties"),
        (
            "http",
            "post",
            {"url": "http://{{ event.host }}/x"},
            "action",
            "scheme, host and port must be written out",
        ),
        ("email", "send", {"to": [], "subject": "s", "body": "b"}, "action", "to:"),
        (
            "webhook_forward",
            "forward",
            {"url": "http://a.test/", "secret": "plain"},
            "action",
            "secret",
        ),
        (
            "log",
            "record",
            {"message": "{{ os.system }}"},
            "action",
            "under `event` or `execution`",
        ),
    ],
)
def test_a_bad_route_is_refused_when_saved_with_a_clear_reason(
    db, connector, action, params, field, message
):
    route = Route(name="bad", event_type="t", connector=connector, action=action, params=params)

    with pytest.raises(ValidationError) as excinfo:
        route.full_clean()
    assert message in " ".join(excinfo.value.message_dict[field])


def test_a_missing_template_field_is_a_permanent_error_naming_it(routed, sink):
    ex = routed(
        "http",
        "post",
        {"url": sink.url, "body": {"id": "{{ event.data.customer.id }}"}},
        payload=ORDER,
    )

    assert engine.run(ex.pk) == ExecutionStatus.FAILED
    assert "event.data.customer is missing" in ex.attempt_set.get().error_message
    assert sink.requests == []


def test_templates_resolve_lists_types_and_execution_fields():
    ctx = ExecutionContext("e1", "order.created", ORDER, {"x-request-id": "r1"}, 5, "key-9", 2)
    rendered = templating.render(
        {
            "sku": "{{ event.data.order.items.0.sku }}",
            "order": "{{event.data.order}}",
            "text": "{{ event.type }}#{{ execution.attempt }} {{ event.data.order.items }}",
            "key": "{{ execution.idempotency_key }}",
            "nested": ["{{ event.id }}", 3],
        },
        ctx,
    )
    assert rendered == {
        "sku": "A1",
        "order": ORDER["data"]["order"],
        "text": 'order.created#2 [{"sku":"A1"}]',
        "key": "key-9",
        "nested": ["e1", 3],
    }


def test_templates_run_no_code():
    ctx = ExecutionContext("e1", "t", {"a": 1}, {}, 1, "k", 1)
    for evil in ["{{ event.__class__ }}", "{{ __import__('os') }}", "{{ event.a + 1 }}"]:
        with pytest.raises(PermanentError):
            templating.render(evil, ctx)


# -- circuit breakers -----------------------------------------------------------------------------


def test_the_circuit_opens_after_repeated_failures_and_defers_without_spending_attempts(
    routed, client, source, sink, settings
):
    settings.CIRCUIT_FAILURE_THRESHOLD = 2
    settings.CIRCUIT_COOLDOWN_SECONDS = 60
    sink.script = [500, 500]
    first = routed("http", "post", {"url": sink.url}, backoff_base_seconds=0.01)
    assert post(client, {"event_id": "again", "type": first.event.type}, key=source.api_key)
    second = Execution.objects.exclude(pk=first.pk).get(route=first.route)

    engine.run(first.pk)
    due(first)
    engine.run(first.pk)
    circuit = CircuitBreaker.objects.get(route=first.route, target="127.0.0.1")
    assert circuit.state == "open"

    assert engine.run(second.pk) == "deferred"
    second.refresh_from_db()
    assert (second.status, second.attempts, second.total_attempts) == ("retrying", 0, 0)
    assert second.next_attempt_at >= timezone.now() + datetime.timedelta(seconds=50)
    assert "circuit open" in second.status_reason
    assert len(sink.requests) == 2  # the deferred one made no call


def test_an_open_circuit_does_not_stop_another_route_to_the_same_host(routed, sink, settings):
    settings.CIRCUIT_FAILURE_THRESHOLD = 1
    sink.script = [500]
    failing = routed("http", "post", {"url": sink.url + "/broken"}, backoff_base_seconds=0.01)
    healthy = routed("http", "post", {"url": sink.url + "/fine"})

    assert engine.run(failing.pk) == ExecutionStatus.RETRYING
    assert CircuitBreaker.objects.get(route=failing.route).state == "open"

    assert engine.run(healthy.pk) == ExecutionStatus.SUCCEEDED
    assert [r["path"] for r in sink.requests] == ["/hook/broken", "/hook/fine"]


def test_a_half_open_probe_closes_the_circuit_again(routed, sink, settings):
    settings.CIRCUIT_FAILURE_THRESHOLD = 1
    sink.script = [500]
    ex = routed("http", "post", {"url": sink.url}, backoff_base_seconds=0.01)
    engine.run(ex.pk)
    CircuitBreaker.objects.update(retry_at=timezone.now() - datetime.timedelta(seconds=1))
    due(ex)

    assert circuits.before_call(ex.route, "127.0.0.1").allowed  # the one probe
    waiting = circuits.before_call(ex.route, "127.0.0.1")
    assert not waiting.allowed  # others wait, and look again soon, not at the probe's timeout
    assert waiting.retry_at <= timezone.now() + datetime.timedelta(seconds=2)
    CircuitBreaker.objects.update(
        state="open", retry_at=timezone.now() - datetime.timedelta(seconds=1)
    )

    assert engine.run(ex.pk) == ExecutionStatus.SUCCEEDED
    assert CircuitBreaker.objects.get().state == "closed"


def test_a_failed_probe_opens_the_circuit_again(routed, sink, settings):
    settings.CIRCUIT_FAILURE_THRESHOLD = 1
    sink.script = [500, 500]
    ex = routed("http", "post", {"url": sink.url}, backoff_base_seconds=0.01)
    engine.run(ex.pk)
    CircuitBreaker.objects.update(retry_at=timezone.now() - datetime.timedelta(seconds=1))
    due(ex)

    assert engine.run(ex.pk) == ExecutionStatus.RETRYING
    circuit = CircuitBreaker.objects.get()
    assert circuit.state == "open" and circuit.retry_at > timezone.now()


def test_open_circuits_show_in_the_operator_status(client, operator, routed, sink, settings):
    settings.CIRCUIT_FAILURE_THRESHOLD = 1
    sink.script = [500]
    engine.run(routed("http", "post", {"url": sink.url}).pk)

    body = client.get("/admin/status", HTTP_AUTHORIZATION=f"Bearer {operator.token}").json()

    assert body["circuits"][0]["state"] == "open"
    assert body["circuits"][0]["target"] == "127.0.0.1"


# -- the route admin ------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["viewer", "operator"])
def test_viewers_and_operators_can_open_a_routes_page(client, route, request, who):
    client.force_login(request.getfixturevalue(who))

    assert client.get("/admin/connectors/route/").status_code == 200
    page = client.get(f"/admin/connectors/route/{route.pk}/change/")

    assert page.status_code == 200
    assert route.name.encode() in page.content
