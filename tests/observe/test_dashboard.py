"""The status dashboard on the admin index: what it counts, and who sees it."""

import datetime
import re
import xml.etree.ElementTree as ET

import pytest
from django.utils import timezone

from connectors.models import Route
from events.models import Attempt, Event, Execution, WorkerHeartbeat
from events.observe import dashboard
from guardrails.killswitch import set_kill_switch
from guardrails.models import Mode, RuntimeState

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"
NOW = timezone.now().replace(second=30, microsecond=0)


def ago(**kwargs) -> datetime.datetime:
    return NOW - datetime.timedelta(**kwargs)


def event(source, n, *, at, status="accepted"):
    return Event.objects.create(
        source=source,
        event_id=f"evt-{n}",
        type="order.created",
        status=status,
        payload={"n": n},
        body_hash=f"{n:064d}",
        received_at=at,
    )


def execution(evt, route, *, status="queued", at=None, **fields):
    return Execution.objects.create(
        event=evt,
        route=route,
        status=status,
        idempotency_key=Execution.new_idempotency_key(),
        created_at=at or evt.received_at,
        **fields,
    )


def attempt(
    ex, number, *, started, finished=None, outcome="succeeded", error_class="", status=None
):
    return Attempt.objects.create(
        execution=ex,
        number=number,
        started_at=started,
        finished_at=finished,
        outcome=outcome,
        error_class=error_class,
        response_summary={"status": status, "body": ""} if status else {},
    )


def test_it_counts_events_and_executions_by_status_over_the_hour_and_the_day(source, route):
    recent = event(source, 1, at=ago(minutes=10))
    execution(recent, route, status="succeeded")
    older = event(source, 2, at=ago(hours=5), status="held")
    execution(older, route, status="held")
    event(source, 3, at=ago(days=2))  # outside both windows

    counts = dashboard.counts(NOW)

    assert counts["1h"]["events"] == {"accepted": 1, "unrouted": 0, "held": 0, "blocked": 0}
    assert counts["24h"]["events"]["accepted"] == 1
    assert counts["24h"]["events"]["held"] == 1
    assert counts["1h"]["executions"]["succeeded"] == 1
    assert counts["1h"]["executions"]["held"] == 0
    assert counts["24h"]["executions"]["held"] == 1
    assert counts["24h"]["executions"]["failed"] == 0


def test_it_buckets_accepted_events_and_finished_attempts_by_minute(source, route):
    minute = NOW.replace(second=0)
    for n, offset in enumerate([3, 3, 3, 10, 59, 61]):
        event(source, n, at=minute - datetime.timedelta(minutes=offset, seconds=-5))
    ex = execution(Event.objects.get(event_id="evt-0"), route, status="succeeded")
    started = minute - datetime.timedelta(minutes=3, seconds=-10)
    attempt(ex, 1, started=started, finished=started + datetime.timedelta(seconds=5))
    # Started before the window, finished inside it: counted in the minute it finished.
    early = minute - datetime.timedelta(minutes=61)
    attempt(
        ex,
        2,
        started=early,
        finished=minute - datetime.timedelta(minutes=58, seconds=50),
        outcome="retryable_error",
    )
    attempt(ex, 3, started=minute, finished=None)  # still running: not counted

    rows = dashboard.per_minute(NOW)

    assert len(rows) == 60
    assert rows[-1]["minute"] == minute
    by_minute = {r["minute"]: r for r in rows}
    assert by_minute[minute - datetime.timedelta(minutes=3)]["accepted"] == 3
    assert by_minute[minute - datetime.timedelta(minutes=10)]["accepted"] == 1
    assert by_minute[minute - datetime.timedelta(minutes=59)]["accepted"] == 1
    assert sum(r["accepted"] for r in rows) == 5  # the one 61 minutes ago is outside
    assert by_minute[minute - datetime.timedelta(minutes=3)]["executed"] == 1
    assert by_minute[minute - datetime.timedelta(minutes=59)]["executed"] == 1
    assert sum(r["executed"] for r in rows) == 2
    # Failures on their own line: the retryable error, in the minute it finished.
    assert by_minute[minute - datetime.timedelta(minutes=59)]["failed"] == 1
    assert sum(r["failed"] for r in rows) == 1


def test_it_reports_how_long_the_oldest_due_execution_has_waited(source, route):
    assert dashboard.oldest_queued_age(NOW) is None
    other = Route.objects.create(name="other", event_type="*", connector="log", action="record")
    execution(event(source, 1, at=ago(minutes=7)), route, status="queued")
    # Waiting longer, but its backoff has not ended: not due, not counted.
    execution(
        event(source, 2, at=ago(hours=2)),
        route,
        status="retrying",
        next_attempt_at=NOW + datetime.timedelta(minutes=1),
    )
    # Due again since it was created (a retry): waits from then.
    execution(
        event(source, 3, at=ago(hours=3)),
        other,
        status="retrying",
        next_attempt_at=ago(minutes=9),
    )
    execution(event(source, 4, at=ago(hours=4)), other, status="succeeded")

    assert dashboard.oldest_queued_age(NOW) == datetime.timedelta(minutes=9)
    assert dashboard.format_age(datetime.timedelta(minutes=9)) == "9 min 0 s"


def test_it_ranks_failing_routes_and_error_classes(source, route):
    bad = Route.objects.create(name="bad", event_type="*", connector="log", action="record")
    for n in range(3):
        ex = execution(event(source, n, at=ago(hours=1)), bad, status="failed")
        attempt(ex, 1, started=ago(minutes=50), outcome="permanent_error", error_class="Refused")
    ex = execution(event(source, 9, at=ago(hours=1)), route, status="retrying")
    attempt(ex, 1, started=ago(minutes=50), outcome="retryable_error", error_class="Timeout")
    attempt(ex, 2, started=ago(minutes=40), outcome="retryable_error", error_class="Timeout")
    attempt(ex, 3, started=ago(days=2), outcome="retryable_error", error_class="Old")

    routes = dashboard.failing_routes(NOW)
    classes = dashboard.error_classes(NOW)

    assert [(r["route"], r["failed_executions"], r["failed_attempts"]) for r in routes] == [
        ("bad", 3, 3),
        ("orders-to-log", 0, 2),
    ]
    assert classes == [
        {"error_class": "Refused", "http_status": None, "count": 3},
        {"error_class": "Timeout", "http_status": None, "count": 2},
    ]


def test_error_classes_say_which_http_status_the_target_answered(admin_client, source, route):
    for n, status in enumerate([503, 503, 503, 500, None]):
        ex = execution(event(source, n, at=ago(minutes=9)), route, status="retrying")
        attempt(
            ex,
            1,
            started=ago(minutes=8),
            outcome="retryable_error",
            error_class="RetryableError",
            status=status,
        )

    classes = dashboard.error_classes(NOW)
    page = admin_client.get("/admin/").content.decode()

    assert classes == [
        {"error_class": "RetryableError", "http_status": 503, "count": 3},
        {"error_class": "RetryableError", "http_status": 500, "count": 1},
        {"error_class": "RetryableError", "http_status": None, "count": 1},
    ]
    table = page.split('id="error-classes"')[1].split("</table>")[0]
    assert '<td>RetryableError</td><td>HTTP 503</td><td class="num">3</td>' in table
    assert "no response" in table


@pytest.mark.parametrize(
    ("mode", "tone", "label"),
    [
        (Mode.RUNNING, "running", "Running"),
        (Mode.KILLED, "killed", "Killed"),
        (Mode.DRY_RUN, "dry-run", "Dry run"),
    ],
)
def test_the_banner_names_the_mode_in_words_and_colour(mode, tone, label):
    RuntimeState.objects.update_or_create(pk=1, defaults={"mode": mode, "reason": "why <b>"})

    shown = dashboard.banner()

    assert (shown["mode"], shown["tone"], shown["label"]) == (mode, tone, label)
    assert shown["reason"] == "why <b>"


def test_the_chart_is_well_formed_svg_with_every_series_and_a_description(source, route):
    event(source, 1, at=NOW)

    svg = dashboard.chart_svg(dashboard.per_minute(NOW))
    root = ET.fromstring(svg)  # noqa: S314 (our own output)

    assert root.tag == SVG + "svg"
    assert root.find(SVG + "title") is not None
    assert "1 events accepted" in root.find(SVG + "desc").text
    classes = {p.get("class") for p in root.iter(SVG + "polyline")}
    assert classes == {"series-accepted", "series-executed", "series-failed"}
    assert all(len(p.get("points").split()) == 60 for p in root.iter(SVG + "polyline"))
    point_titles = [t.text for c in root.iter(SVG + "circle") for t in c.iter(SVG + "title")]
    assert point_titles and "1 events accepted" in point_titles[0]
    # Every series has a legend entry inside the picture (none cut off at the right).
    width = float(root.get("viewBox").split()[2])
    legend = {
        g.get("class"): g for g in root.iter(SVG + "g") if "legend" in (g.get("class") or "")
    }
    assert set(legend) == {"legend-accepted", "legend-executed", "legend-failed"}
    for g in legend.values():
        text = g.find(SVG + "text")
        assert float(text.get("x")) + 7 * len(text.text) <= width, text.text


def test_the_chart_escapes_its_text():
    rows = [{"minute": NOW, "accepted": 0, "executed": 0}]
    original = dashboard.SERIES
    dashboard.SERIES = (("accepted", "<script>", "red"), ("executed", "a&b", "blue"))
    try:
        svg = dashboard.chart_svg(rows)
    finally:
        dashboard.SERIES = original

    assert "<script>" not in svg
    ET.fromstring(svg)  # noqa: S314


def test_a_viewer_sees_the_dashboard_on_the_admin_index(client, viewer, source, route):
    WorkerHeartbeat.objects.create(worker_id="w-1", hostname="h", pid=1, concurrency=32)
    bad = Route.objects.create(name="bad-route", event_type="*", connector="log", action="record")
    ex = execution(event(source, 1, at=ago(minutes=5)), bad, status="failed")
    attempt(ex, 1, started=ago(minutes=5), outcome="permanent_error", error_class="Refused")
    client.force_login(viewer)

    page = client.get("/admin/").content.decode()

    assert 'id="runtime-dashboard"' in page
    assert 'data-mode="running"' in page and "Running" in page
    assert "<svg" in page
    assert "/admin/guardrails/runtimestate/1/change/" in page
    assert "/admin/events/execution/?status__exact=failed" in page
    assert f"/admin/events/execution/?route__id__exact={bad.pk}" in page
    assert "Refused" in page and "w-1" in page
    assert "Events" in page  # the normal index is still below


def test_the_dashboard_shows_each_workers_slots_and_what_runs_per_route(
    client, viewer, source, route
):
    WorkerHeartbeat.objects.create(
        worker_id="w-9", hostname="h", pid=1, concurrency=32, in_flight=5, claims=120
    )
    for n in range(3):
        execution(
            event(source, 10 + n, at=ago(minutes=1)),
            route,
            status="running",
            lease_owner="w-9",
            lease_expires_at=NOW + datetime.timedelta(minutes=1),
        )
    client.force_login(viewer)

    queued = execution(event(source, 20, at=ago(minutes=1)), route, next_attempt_at=ago(minutes=2))
    later = timezone.now() + datetime.timedelta(minutes=5)
    retrying = [
        execution(
            event(source, 21 + n, at=ago(minutes=1)),
            route,
            status="retrying",
            next_attempt_at=later,
        ).pk
        for n in range(2)
    ]
    client.force_login(viewer)

    page = client.get("/admin/").content.decode()

    assert "5 of 32 in flight, 120 claimed" in page
    table = page.split('id="routes-at-work"')[1].split("</table>")[0]
    assert route.name in table
    # running of max in flight, then queued, then retrying
    cells = re.findall(r'<td class="num">(.*?)</td>', table)
    assert [re.sub("<[^>]+>", "", c) for c in cells] == ["3 / 16", "1", "2"]
    # each number links to those executions
    for status, expected in (("queued", [queued.pk]), ("retrying", retrying)):
        link = re.search(rf'href="([^"]+status__exact={status})"', table).group(1)
        listed = client.get(link.replace("&amp;", "&")).context["cl"].result_list
        assert sorted(ex.pk for ex in listed) == sorted(expected)


def test_the_dashboard_lists_open_circuits_with_what_they_defer_and_engaged_switches(
    admin_client, operator, source, route
):
    from connectors.models import CircuitBreaker
    from guardrails.killswitch import set_scoped_kill_switch

    CircuitBreaker.objects.create(
        route=route,
        target="erp.example:443",
        state="open",
        consecutive_failures=5,
        retry_at=NOW + datetime.timedelta(seconds=40),
    )
    CircuitBreaker.objects.create(route=route, target="fine.example:443", state="closed")
    for n in range(3):
        execution(
            event(source, n, at=ago(minutes=2)),
            route,
            status="retrying",
            status_reason=f"circuit open for {route.name} → erp.example:443",
        )
    execution(
        event(source, 7, at=ago(minutes=2)),
        route,
        status="retrying",
        status_reason="rate limit: 10 per minute",
    )
    set_scoped_kill_switch(
        scope="connector",
        name="log",
        engaged=True,
        actor=operator,
        reason="mail provider down",
        via="admin",
    )

    circuits = dashboard.open_circuits()
    page = admin_client.get("/admin/").content.decode()

    assert [(c["target"], c["state"], c["deferred"]) for c in circuits] == [
        ("erp.example:443", "open", 3)
    ]
    table = page.split('id="open-circuits"')[1].split("</table>")[0]
    assert "orders-to-log → erp.example:443" in table and "fine.example" not in table
    assert "Open" in table and re.search(r">3</a></td>", table)
    switches = page.split('id="engaged-switches"')[1].split("</table>")[0]
    assert "connector log" in switches
    assert "mail provider down" in switches and "olivia" in switches


def test_the_dashboard_says_when_nothing_holds_work_back(admin_client):
    page = admin_client.get("/admin/").content.decode()

    assert "Every circuit is closed." in page
    assert "None engaged." in page
    assert "Nothing running or waiting." in page


def test_an_operator_sees_the_kill_switch_reason_on_a_red_banner(client, operator):
    set_kill_switch(engaged=True, actor=operator, reason="bad <deploy>", via="cli")
    client.force_login(operator)

    page = client.get("/admin/").content.decode()

    assert 'class="banner killed"' in page
    assert "Killed" in page
    assert "bad &lt;deploy&gt;" in page
    assert "Release the kill switch" in page


def test_staff_without_rights_see_the_normal_index_only(client, staff_without_rights):
    client.force_login(staff_without_rights)

    response = client.get("/admin/")

    assert response.status_code == 200
    assert b"runtime-dashboard" not in response.content


def test_the_dashboard_colours_trouble_quiets_zeros_and_refreshes_itself(
    admin_client, source, route
):
    ex = execution(event(source, 1, at=ago(minutes=5)), route, status="failed", at=ago(minutes=5))
    assert ex.status == "failed"

    page = admin_client.get("/admin/").content.decode()

    assert 'class="status-failed"' in page  # a failure in the last day: loud
    assert 'class="status-succeeded quiet"' in page  # none: quiet
    assert 'id="runtime-refresh"' in page and "location.reload()" in page
