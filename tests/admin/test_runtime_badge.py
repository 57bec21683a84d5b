"""The runtime's mode on every admin page: a badge in the header saying it in words, with
the scoped kill switches engaged and the circuits not closed, each a link to its list."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from connectors.models import CircuitBreaker, CircuitState, Route
from events.observe import context_processors
from guardrails.killswitch import set_dry_run, set_kill_switch, set_scoped_kill_switch
from guardrails.models import Scope

pytestmark = pytest.mark.django_db

EXECUTIONS = "/admin/events/execution/"
KILL_SWITCH = "/admin/guardrails/runtimestate/1/change/"
ENGAGED_SWITCHES = "/admin/guardrails/killswitch/?engaged__exact=1"
CIRCUITS_NOT_CLOSED = "/admin/connectors/circuitbreaker/?state=not_closed"

# mode -> (the words, data-mode, the tone class that colours it)
MODES = {
    "running": ("RUNNING", "running", "running"),
    "killed": ("KILLED", "killed", "killed"),
    "dry_run": ("DRY RUN", "dry_run", "dry-run"),
}


def put_in_mode(mode: str, actor) -> None:
    if mode == "killed":
        set_kill_switch(engaged=True, actor=actor, reason="badge test", via="cli")
    elif mode == "dry_run":
        set_dry_run(enabled=True, actor=actor, reason="badge test", via="cli")


def badge(page: str) -> str:
    """The badge's markup on a page; fails if there is none or more than one."""
    found = re.findall(r'<div id="runtime-badge".*?</div>', page, flags=re.S)
    assert len(found) == 1, "one badge per page"
    return found[0]


def page_kinds(route) -> dict:
    """One admin page of each kind: the index, a list, a change page, a custom view."""
    return {
        "index": "/admin/",
        "list": EXECUTIONS,
        "change": f"/admin/connectors/route/{route.pk}/change/",
        "route tester": "/admin/events/event/route-test/",
    }


@pytest.fixture
def trouble(route, operator):
    """One scoped kill switch engaged and one released; one circuit open, one closed."""
    set_scoped_kill_switch(
        scope=Scope.ROUTE, name=route.name, engaged=True, actor=operator, reason="flaky", via="cli"
    )
    other = Route.objects.create(
        name="calm-route", event_type="invoice.*", connector="log", action="record"
    )
    set_scoped_kill_switch(
        scope=Scope.ROUTE, name=other.name, engaged=True, actor=operator, reason="x", via="cli"
    )
    set_scoped_kill_switch(
        scope=Scope.ROUTE, name=other.name, engaged=False, actor=operator, reason="x", via="cli"
    )
    CircuitBreaker.objects.create(
        route=route, target="api.example.com", state=CircuitState.OPEN, consecutive_failures=5
    )
    CircuitBreaker.objects.create(route=other, target="calm.example.com")


@pytest.mark.parametrize("mode", MODES)
def test_every_kind_of_admin_page_shows_the_mode_in_words_with_the_counts(
    client, operator, route, trouble, mode
):
    put_in_mode(mode, operator)
    words, data_mode, tone = MODES[mode]
    client.force_login(operator)

    for kind, url in page_kinds(route).items():
        response = client.get(url)
        assert response.status_code == 200, kind
        shown = badge(response.content.decode())

        assert f'data-mode="{data_mode}"' in shown, kind
        assert f'class="runtime-badge {tone}"' in shown, kind
        assert f'href="{KILL_SWITCH}" title="The kill switch">{words}</a>' in shown, kind
        assert f'href="{ENGAGED_SWITCHES}"' in shown and ">1 kill switch engaged</a>" in shown
        assert f'href="{CIRCUITS_NOT_CLOSED}"' in shown and ">1 circuit open</a>" in shown
        assert f"route {route.name}" in shown, "the engaged switch is named"
        assert f"{route.name} → api.example.com" in shown, "the open circuit is named"
        assert "calm" not in shown, "released switches and closed circuits are not counted"


def test_the_badge_says_when_nothing_is_engaged_or_open(client, viewer):
    client.force_login(viewer)

    shown = badge(client.get(EXECUTIONS).content.decode())

    assert 'data-mode="running"' in shown and ">RUNNING</a>" in shown
    assert ">0 kill switches engaged</a>" in shown
    assert ">0 circuits open</a>" in shown
    assert "alert" not in shown


def test_the_badge_links_open_the_lists_of_exactly_what_it_counts(client, operator, trouble):
    client.force_login(operator)

    switches = client.get(ENGAGED_SWITCHES).content.decode()
    circuits = client.get(CIRCUITS_NOT_CLOSED).content.decode()

    assert "orders-to-log" in switches.split('id="result_list"')[1]
    assert "calm-route" not in switches.split('id="result_list"')[1]
    listed = circuits.split('id="result_list"')[1]
    assert "api.example.com" in listed and "calm.example.com" not in listed
    assert client.get(KILL_SWITCH).status_code == 200


def test_many_engaged_switches_are_counted_up_to_a_bound(client, operator, route):
    for n in range(25):
        set_scoped_kill_switch(
            scope=Scope.ROUTE,
            name=f"r-{n:02}",
            engaged=True,
            actor=operator,
            reason="bulk",
            via="cli",
            allow_unknown=True,
        )
    client.force_login(operator)

    shown = badge(client.get(EXECUTIONS).content.decode())

    assert ">20+ kill switches engaged</a>" in shown
    assert "and more" in shown


def test_only_those_who_may_see_the_status_see_the_badge(client, staff_without_rights):
    assert 'id="runtime-badge"' not in client.get("/admin/login/").content.decode()

    client.force_login(staff_without_rights)
    page = client.get("/admin/").content.decode()

    assert 'id="runtime-badge"' not in page


def _queries(client, url) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return [q["sql"] for q in captured.captured_queries]


def test_the_badge_costs_three_small_queries_whatever_the_tables_hold(
    client, operator, route, monkeypatch, django_assert_max_num_queries
):
    client.force_login(operator)
    _queries(client, EXECUTIONS)  # warm the per-process caches (permissions, catalog)
    with monkeypatch.context() as patch:
        patch.setattr(context_processors, "may_view_status", lambda user: False)
        without = _queries(client, EXECUTIONS)
    with_badge = _queries(client, EXECUTIONS)

    added = len(with_badge) - len(without)
    assert 0 < added <= 3, with_badge[len(without) :]
    badge_sql = " ".join(q for q in with_badge if q not in without).upper()
    assert "COUNT(" not in badge_sql
    assert "LIMIT 21" in badge_sql, "the lists are bounded"

    # Many engaged switches and open circuits later, the page costs the same.
    for n in range(30):
        set_scoped_kill_switch(
            scope=Scope.ROUTE,
            name=f"r-{n:02}",
            engaged=True,
            actor=operator,
            reason="bulk",
            via="cli",
            allow_unknown=True,
        )
        CircuitBreaker.objects.create(route=route, target=f"h{n}.example.com", state="open")
    with django_assert_max_num_queries(len(with_badge)):
        page = client.get(EXECUTIONS).content.decode()
    assert ">20+ circuits open</a>" in badge(page)
