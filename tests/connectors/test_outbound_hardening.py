"""Where outbound calls may go and what they may carry: destinations fixed when a route is
saved, addresses that hide a private IPv4 inside IPv6, and headers that are not headers."""

import ipaddress

import pytest
from django.core.exceptions import ValidationError

from connectors import net
from connectors.models import Route
from events.engine import runner as engine
from events.models import ExecutionStatus
from guardrails.policy import private_address_decision
from tests.support.helpers import post
from tests.support.sink import Sink

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("only_loopback")]

SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


@pytest.fixture
def sinks(settings):
    """Two real sinks on 127.0.0.1: the route's destination and another allowed host."""
    ours, other = Sink(), Sink()
    settings.OUTBOUND_HOSTS = ["127.0.0.1", "localhost"]
    settings.OUTBOUND_ALLOW_PRIVATE = ["127.0.0.1/32", "localhost"]
    yield ours, other
    ours.close()
    other.close()


def run_route(client, source, capture, params, payload, connector="http", action="post"):
    route = Route(name="r", event_type="t.1", connector=connector, action=action, params=params)
    route.full_clean()
    route.save()
    with capture(execute=True):
        response = post(client, {"event_id": "e1", "type": "t.1", **payload}, key=source.api_key)
    assert response.status_code == 202
    return engine.run(route.executions.get().pk), route.executions.get()


def refused(connector, action, params) -> str:
    route = Route(name="bad", event_type="t", connector=connector, action=action, params=params)
    with pytest.raises(ValidationError) as excinfo:
        route.full_clean()
    return " ".join(
        message for messages in excinfo.value.message_dict.values() for message in messages
    )


# -- item 6: the destination is fixed when the route is saved ---------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http:/{{ event.data.h }}",
        "https:/{{ event.data.h }}",
        "HTTP:/{{ event.data.h }}",
        "http:{{ event.data.h }}",
        "{{ event.data.url }}",
        "{{ event.data.scheme }}://a.test/x",
        "http://{{ event.data.h }}/x",
        "http://a.test:{{ event.data.port }}/x",
        "http://{{ event.data.user }}@a.test/x",
        "http://a.test{{ event.data.rest }}",
        "http:\\\\{{ event.data.h }}/x",
        "http:/\\{{ event.data.h }}/x",
        "http://a.test\\{{ event.data.h }}/x",
        " http://{{ event.data.h }}/x",
        "\thttp://{{ event.data.h }}/x",
        "ht\ttp://{{ event.data.h }}/x",
        "http://a.te\nst/{{ event.data.p }}",
        "http:// a.test/{{ event.data.p }}",
        "http:///{{ event.data.h }}/x",
        "http://a.test/x\r\nHost: b.test",
    ],
)
@pytest.mark.parametrize(
    "connector,action,extra",
    [
        ("http", "post", {}),
        ("webhook_forward", "forward", {"secret": SECRET}),
        ("slack", "post", {"text": "hi"}),
    ],
)
def test_a_url_whose_scheme_host_or_port_is_not_literal_is_refused_on_save(
    url, connector, action, extra
):
    message = refused(connector, action, {"url": url, **extra})

    assert "url" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://a.test/orders/{{ event.data.order.id }}",
        "https://a.test:8443/x?id={{ event.id }}&t={{ event.type }}",
        "HTTPS://A.test?{{ event.data.q }}",
        "http://a.test",
        "http://[::1]:8080/{{ event.id }}",
    ],
)
def test_placeholders_in_the_path_and_query_are_accepted(url):
    Route(
        name="ok", event_type="t", connector="http", action="post", params={"url": url}
    ).full_clean()


@pytest.mark.parametrize(
    "value",
    [
        "/..//127.0.0.1:{port}/stolen",
        "@127.0.0.1:{port}/stolen",
        "\\\\127.0.0.1:{port}/x",
        "#@localhost:{port}/",
    ],
)
def test_a_path_placeholder_cannot_move_the_request_to_another_host(
    client, source, django_capture_on_commit_callbacks, sinks, value
):
    ours, other = sinks
    status, ex = run_route(
        client,
        source,
        django_capture_on_commit_callbacks,
        {
            "url": f"http://localhost:{ours.port}/in/{{{{ event.data.p }}}}",
            "headers": {"X-Route-Token": "static-value"},
        },
        {"data": {"p": value.format(port=other.port)}},
    )

    assert other.requests == [], "the other host got nothing"
    if status == ExecutionStatus.SUCCEEDED:
        (request,) = ours.requests
        assert request["headers"]["Host"] == f"localhost:{ours.port}"
    else:
        assert status == ExecutionStatus.FAILED
        assert "url" in ex.attempt_set.get().error_message


def test_a_legacy_route_whose_host_comes_from_the_event_does_not_call_it(
    client, source, django_capture_on_commit_callbacks, sinks
):
    """A row saved before the rule (written without full_clean) is stopped at run time."""
    ours, other = sinks
    route = Route.objects.create(
        name="legacy",
        event_type="t.1",
        connector="http",
        action="post",
        params={"url": "http:/{{ event.data.h }}", "headers": {"X-Route-Token": "static"}},
    )
    with django_capture_on_commit_callbacks(execute=True):
        post(
            client,
            {"event_id": "e1", "type": "t.1", "data": {"h": f"/127.0.0.1:{other.port}/x"}},
            key=source.api_key,
        )
    ex = route.executions.get()

    assert engine.run(ex.pk) == ExecutionStatus.FAILED
    assert other.requests == [] and ours.requests == []
    assert "url" in ex.attempt_set.get().error_message


# -- item 10: IPv6 addresses that carry an IPv4 address ------------------------------------


@pytest.mark.parametrize(
    "address,embedded",
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("::7f00:1", "127.0.0.1"),  # IPv4-compatible
        ("::127.0.0.1", "127.0.0.1"),
        ("::a9fe:a9fe", "169.254.169.254"),
        ("::ffff:0:7f00:1", "127.0.0.1"),  # IPv4-translated (SIIT)
        ("64:ff9b::a00:1", "10.0.0.1"),  # NAT64 well-known prefix
        ("64:ff9b::127.0.0.1", "127.0.0.1"),
        ("64:ff9b:1::a00:1", "10.0.0.1"),  # NAT64 local-use prefix, /96 inside it
        ("64:ff9b:1:7f00:0:100::", "127.0.0.1"),  # NAT64 local-use prefix, /48 layout
        ("2002:7f00:1::", "127.0.0.1"),  # 6to4
        ("2002:c0a8:101::1", "192.168.1.1"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),  # Teredo, private client
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),
        ("2001:0:a00:1:8000:63bf:bf57:fefe", "10.0.0.1"),  # Teredo, private server
    ],
)
def test_ipv6_addresses_that_embed_a_private_ipv4_address_are_refused(settings, address, embedded):
    settings.OUTBOUND_ALLOW_PRIVATE = []

    decision = private_address_decision("h.test", ipaddress.ip_address(address))

    assert not decision.allowed
    assert embedded in decision.reason


@pytest.mark.parametrize(
    "address,allow",
    [
        ("::ffff:127.0.0.1", "127.0.0.1/32"),
        ("64:ff9b::a00:1", "10.0.0.0/8"),
        ("2002:c0a8:101::1", "192.168.1.1"),
        ("::7f00:1", "h.test"),
    ],
)
def test_an_embedded_ipv4_address_on_outbound_allow_private_is_allowed(settings, address, allow):
    settings.OUTBOUND_ALLOW_PRIVATE = [allow]

    assert private_address_decision("h.test", ipaddress.ip_address(address)).allowed


@pytest.mark.parametrize(
    "address", ["64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111", "8.8.8.8"]
)
def test_public_addresses_and_public_ipv4_behind_nat64_or_6to4_are_allowed(settings, address):
    settings.OUTBOUND_ALLOW_PRIVATE = []

    assert private_address_decision("h.test", ipaddress.ip_address(address)).allowed


def test_listing_the_ipv6_network_does_not_let_a_private_ipv4_through(settings):
    settings.OUTBOUND_ALLOW_PRIVATE = ["64:ff9b::/96"]

    decision = private_address_decision("h.test", ipaddress.ip_address("64:ff9b::7f00:1"))

    assert not decision.allowed
    assert "127.0.0.1" in decision.reason


def test_a_request_to_nat64_of_loopback_is_refused_before_connecting(settings):
    settings.OUTBOUND_HOSTS = ["64:ff9b::7f00:1", "2002:7f00:1::"]
    settings.OUTBOUND_ALLOW_PRIVATE = []

    for url in ("http://[64:ff9b::7f00:1]:8080/x", "http://[2002:7f00:1::]/x"):
        with pytest.raises(net.Refused, match=r"127\.0\.0\.1"):
            net.request("POST", url, headers={}, body=b"{}")


# -- item 12: headers are checked when the route is saved ----------------------------------


@pytest.mark.parametrize(
    "headers,named",
    [
        ({"X Bad": "v"}, "X Bad"),
        ({"X-Bad:": "v"}, "X-Bad:"),
        ({"": "v"}, ""),
        ({"X-Ünicode": "v"}, "X-Ünicode"),
        ({"X-Split": "a\r\nX-Injected: 1"}, "X-Split"),
        ({"X-Lf": "a\nb"}, "X-Lf"),
        ({"X-Nul": "a\x00b"}, "X-Nul"),
        ({"X-Bell": "a\x07b"}, "X-Bell"),
        ({"X-Del": "a\x7fb"}, "X-Del"),
        ({"Host": "other.test"}, "Host"),
        ({"content-length": "5"}, "content-length"),
        ({"Transfer-Encoding": "chunked"}, "Transfer-Encoding"),
        ({"Connection": "close"}, "Connection"),
        ({"Keep-Alive": "timeout=5"}, "Keep-Alive"),
        ({"Upgrade": "websocket"}, "Upgrade"),
        ({"TE": "trailers"}, "TE"),
        ({"Trailer": "X-A"}, "Trailer"),
        ({"Proxy-Connection": "keep-alive"}, "Proxy-Connection"),
        ({"Proxy-Authorization": "Basic eDp5"}, "Proxy-Authorization"),
    ],
)
def test_bad_headers_are_refused_when_the_route_is_saved(headers, named):
    message = refused("http", "post", {"url": "http://a.test/", "headers": headers})

    assert f"headers.{named}" in message or named in message
    assert "headers" in message


def test_a_header_value_with_a_tab_and_placeholders_is_accepted():
    Route(
        name="ok",
        event_type="t",
        connector="http",
        action="post",
        params={
            "url": "http://a.test/",
            "headers": {"X-Note": "a\tb", "X-Order": "{{ event.data.id }}"},
        },
    ).full_clean()


@pytest.mark.parametrize("name", ["X Request Id", "X-Id\r\n", "Host", "Content-Length", ""])
def test_webhook_forward_refuses_header_names_to_copy_that_are_not_tokens(name):
    message = refused(
        "webhook_forward",
        "forward",
        {"url": "http://a.test/", "secret": SECRET, "headers": [name]},
    )

    assert "headers" in message


def test_a_header_value_that_renders_to_a_line_break_fails_naming_the_header(
    client, source, django_capture_on_commit_callbacks, sinks
):
    ours, _ = sinks
    status, ex = run_route(
        client,
        source,
        django_capture_on_commit_callbacks,
        {"url": ours.url, "headers": {"X-Order": "id {{ event.data.id }}"}},
        {"data": {"id": "7\r\nX-Injected: yes"}},
    )

    assert status == ExecutionStatus.FAILED
    attempt = ex.attempt_set.get()
    assert attempt.error_class == "PermanentError"
    assert "X-Order" in attempt.error_message
    assert "Traceback" not in attempt.error_message
    assert ours.requests == []
