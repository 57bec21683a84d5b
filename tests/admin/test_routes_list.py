"""The routes list an operator triages from: per route, where its calls go, whether it is
killed, its circuits, what is in flight and the last 24 hours' outcomes, each a link to
the rows behind it; the same few queries whatever the number of routes."""

import html
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connectors.models import CircuitBreaker, CircuitState, Route
from events.models import Event, Execution, ExecutionStatus
from guardrails.killswitch import set_scoped_kill_switch
from guardrails.models import KillSwitch, Scope

pytestmark = pytest.mark.django_db

ROUTES = "/admin/connectors/route/"
TOKEN = "Bearer tok_" + "Zq8xW3vB7nK2pL5mR9tY"
QUERY_KEY = "qk_" + "7Hd92LmXw0"
# Session and user; the routes counted twice (paginator, full count) and the page; the
# four of the triage columns; the header badge's three; the connector filter's choices.
MAX_QUERIES = 13


def store(source, route, status, *, hours_ago=0.0):
    """One event and its execution of `route`, created `hours_ago` hours ago."""
    at = timezone.now() - timedelta(hours=hours_ago)
    n = Event.objects.count() + 1
    event = Event.objects.create(
        source=source,
        event_id=f"evt-{route.pk}-{n}",
        type="order.created",
        payload={},
        headers={},
        body_hash=f"{n:064d}",
        received_at=at,
    )
    running = status == ExecutionStatus.RUNNING
    return Execution.objects.create(
        event=event,
        route=route,
        status=status,
        idempotency_key=Execution.new_idempotency_key(),
        created_at=at,
        updated_at=at,
        lease_owner="w-1" if running else "",
        lease_expires_at=at + timedelta(minutes=5) if running else None,
    )


def new_route(name, **fields):
    defaults = {"event_type": "order.*", "connector": "log", "action": "record"}
    return Route.objects.create(name=name, **{**defaults, **fields})


def cells(page: str, route) -> dict[str, str]:
    """The route's row on the list: column name -> the cell's markup."""
    change = f"{ROUTES}{route.pk}/change/"
    rows = [r for r in re.findall(r"<tr[^>]*>.*?</tr>", page, flags=re.S) if change in r]
    assert len(rows) == 1, f"one row for {route.name}"
    found = re.findall(r'<t[dh] class="field-([\w]+)[^"]*"[^>]*>(.*?)</t[dh]>', rows[0], re.S)
    return dict(found)


def words(cell: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", cell)).split())


def links(cell: str) -> dict[str, str]:
    """The words of each link in a cell -> where it goes."""
    found = re.findall(r'<a href="([^"]+)"[^>]*>(.*?)</a>', cell, flags=re.S)
    return {words(inner): html.unescape(href) for href, inner in found}


def link(cell: str) -> str:
    (href,) = links(cell).values()
    return href


def result_list(page: str) -> str:
    """The list's table alone: the header badge and side panels name circuits too."""
    found = re.search(r'<table id="result_list".*?</table>', page, flags=re.S)
    assert found, "a result list"
    return found.group(0)


def listed_executions(client, href: str) -> set[int]:
    page = client.get(href)
    assert page.status_code == 200
    return {int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', page.text)}


def test_a_killed_route_shows_killed_linking_to_its_kill_switch(admin_client, route, operator):
    calm = new_route("calm-route")
    set_scoped_kill_switch(
        scope=Scope.ROUTE, name=route.name, engaged=True, actor=operator, reason="flaky", via="cli"
    )

    page = admin_client.get(ROUTES).text

    switch = KillSwitch.objects.get(scope=Scope.ROUTE, name=route.name)
    state = cells(page, route)["state"]
    assert words(state) == "enabled killed"
    assert links(state) == {"killed": f"/admin/guardrails/killswitch/{switch.pk}/change/"}
    assert "flaky" in state, "the reason is in the label's title"
    assert "red" in state
    assert words(cells(page, calm)["state"]) == "enabled"


def test_a_route_whose_connector_is_killed_says_so(admin_client, route, operator):
    set_scoped_kill_switch(
        scope=Scope.CONNECTOR, name="log", engaged=True, actor=operator, reason="x", via="cli"
    )

    state = cells(admin_client.get(ROUTES).text, route)["state"]

    assert words(state) == "enabled connector killed"


def test_a_route_shows_its_worst_circuit_linking_to_its_circuits(admin_client, route):
    half = new_route("half-route")
    calm = new_route("calm-route")
    for target, state in (("a.example", CircuitState.HALF_OPEN), ("b.example", "open")):
        CircuitBreaker.objects.create(route=route, target=target, state=state)
    CircuitBreaker.objects.create(route=half, target="c.example", state=CircuitState.HALF_OPEN)
    CircuitBreaker.objects.create(route=calm, target="d.example", state=CircuitState.CLOSED)

    page = admin_client.get(ROUTES).text

    shown = {r: cells(page, r)["circuit"] for r in (route, half, calm)}
    assert {r.name: words(c) for r, c in shown.items()} == {
        route.name: "open",
        half.name: "half open",
        calm.name: "closed",
    }
    assert "red" in shown[route] and "orange" in shown[half] and "green" in shown[calm]
    listed = admin_client.get(link(shown[route]))
    assert listed.status_code == 200
    targets = set(re.findall(r"[abcd]\.example", result_list(listed.text)))
    assert targets == {"a.example", "b.example"}


def test_it_counts_the_last_24_hours_succeeded_and_failed_and_not_older(
    admin_client, source, route
):
    other = new_route("other-route")
    counted = {
        "succeeded": [store(source, route, "succeeded", hours_ago=h) for h in (0, 1, 23.5)],
        "failed": [store(source, route, "failed", hours_ago=h) for h in (2, 20)],
    }
    store(source, route, "succeeded", hours_ago=25)  # older: not counted
    store(source, route, "failed", hours_ago=48)
    store(source, route, "cancelled")  # neither
    store(source, other, "failed")  # another route's

    page = admin_client.get(ROUTES).text

    mine = links(cells(page, route)["recent"])
    assert list(mine) == ["3 succeeded", "2 failed"]
    assert list(links(cells(page, other)["recent"])) == ["0 succeeded", "1 failed"]
    # Each count links to exactly the executions it counted.
    for status, executions in counted.items():
        href = mine[f"{len(executions)} {status}"]
        assert "created_at__gte=" in href and f"status__exact={status}" in href
        assert listed_executions(admin_client, href) == {e.pk for e in executions}


def test_in_flight_counts_the_running_executions_against_max_in_flight(
    admin_client, source, route
):
    running = [store(source, route, "running") for _ in range(2)]
    store(source, route, "queued")
    Route.objects.filter(pk=route.pk).update(max_in_flight=4)
    busy = new_route("busy-route", max_in_flight=1)
    store(source, busy, "running")

    page = admin_client.get(ROUTES).text

    in_flight = cells(page, route)["in_flight"]
    assert words(in_flight) == "2 / 4"
    assert listed_executions(admin_client, link(in_flight)) == {e.pk for e in running}
    full = cells(page, busy)["in_flight"]
    assert words(full) == "1 / 1" and "At its max in flight" in full


def test_it_shows_the_target_host_and_never_a_secret(admin_client):
    api = new_route(
        "api-route",
        connector="http",
        action="post",
        params={
            "url": f"https://API.Example.com:8443/orders/{{{{ event.data.id }}}}?key={QUERY_KEY}",
            "headers": {"Authorization": TOKEN},
        },
    )
    logged = new_route("log-route")
    gone = new_route("gone-route", connector="retired", action="send")

    page = admin_client.get(ROUTES).text

    assert words(cells(page, api)["sends_to"]) == "api.example.com http.post"
    assert words(cells(page, logged)["sends_to"]) == "— log.record"
    assert words(cells(page, gone)["sends_to"]) == "— retired.send"
    for secret in (TOKEN, TOKEN[7:], QUERY_KEY, "$sealed", "/orders/"):
        assert secret not in page


def test_it_keeps_what_the_route_takes_and_viewers_see_it(client, viewer, route):
    Route.objects.filter(pk=route.pk).update(
        sources=["shop", "crm"], filter={"data": {"total": {"$gte": 100}}}, dry_run=True
    )
    new_route("off-route", enabled=False)
    client.force_login(viewer)

    page = client.get(ROUTES)

    assert page.status_code == 200
    shown = cells(page.text, route)
    assert list(shown) == [
        "name",
        "takes",
        "sends_to",
        "state",
        "circuit",
        "in_flight",
        "recent",
    ]
    assert words(shown["takes"]).startswith('order.* from shop, crm {"data": {"total"')
    assert words(shown["takes"]).endswith("…"), "a long filter is cut, whole in its title"
    assert "{&quot;data&quot;: {&quot;total&quot;: {&quot;$gte&quot;: 100}}}" in shown["takes"]
    assert words(shown["state"]) == "enabled dry run"
    off = Route.objects.get(name="off-route")
    assert words(cells(page.text, off)["state"]) == "disabled"
    assert words(cells(page.text, off)["takes"]) == "order.* from every source"


def add_routes(source, operator, names):
    """Routes each with executions of every counted kind, an open circuit and a kill switch."""
    for name in names:
        route = new_route(
            name, connector="http", action="post", params={"url": f"https://{name}.example/"}
        )
        for status in ("succeeded", "failed", "running"):
            store(source, route, status)
        CircuitBreaker.objects.create(route=route, target="a.example", state=CircuitState.OPEN)
        set_scoped_kill_switch(
            scope=Scope.ROUTE, name=name, engaged=True, actor=operator, reason="r", via="cli"
        )


def queries_for_the_list(client, routes: int) -> int:
    client.get(ROUTES)  # warm: the session and the per-process caches
    with CaptureQueriesContext(connection) as captured:
        page = client.get(ROUTES)
    assert page.status_code == 200
    assert page.text.count('name="_selected_action"') == routes
    return len(captured)


def test_the_page_costs_the_same_queries_for_5_and_30_routes(admin_client, source, operator):
    add_routes(source, operator, [f"route-{i:02}" for i in range(5)])
    few = queries_for_the_list(admin_client, 5)
    add_routes(source, operator, [f"route-{i:02}" for i in range(5, 30)])
    many = queries_for_the_list(admin_client, 30)

    assert many == few
    assert few <= MAX_QUERIES
