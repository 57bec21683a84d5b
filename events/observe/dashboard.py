"""The status dashboard on the admin index: plain data from bounded, indexed queries.

Every query filters by time (or by a status with a time) first, so the dashboard stays
cheap on tables with millions of rows. `overview()` is what the admin index shows.
"""

import datetime

from django.db.models import Count, F, Q
from django.db.models.fields.json import KT
from django.db.models.functions import TruncMinute
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from connectors.models import CircuitBreaker, Route
from events.models import (
    CLAIMABLE_STATUSES,
    Attempt,
    AttemptOutcome,
    Event,
    EventStatus,
    Execution,
    ExecutionStatus,
)
from events.observe import stats
from events.observe.stats import workers_summary
from guardrails.models import KillSwitch, Mode, RuntimeState

WINDOW_MINUTES = 60
TOP = 5
# Attempts that start up to this long before the chart's window and finish inside it
# still count; longer ones are rare (the http connector times out well before).
LONGEST_ATTEMPT = datetime.timedelta(minutes=5)
FAILED_OUTCOMES = [
    AttemptOutcome.RETRYABLE_ERROR,
    AttemptOutcome.PERMANENT_ERROR,
    AttemptOutcome.LOST,
]

# Banner per mode: tone picks the colour; the label says it in words too.
BANNERS = {
    "running": {"tone": "running", "label": "Running", "text": "Events are accepted and run."},
    "killed": {
        "tone": "killed",
        "label": "Killed",
        "text": "The kill switch is engaged: new events are stored and held; nothing runs.",
    },
    "dry_run": {
        "tone": "dry-run",
        "label": "Dry run",
        "text": "Connectors describe what they would do; nothing is done.",
    },
}


def banner() -> dict:
    """The runtime's mode, in words and a tone, with who changed it, when and why, and how
    many scoped kill switches are engaged."""

    state = RuntimeState.current()
    shown = BANNERS.get(state.mode, {"tone": "killed", "label": state.mode, "text": ""})
    return {
        "mode": state.mode,
        **shown,
        "kill_switch_engaged": state.kill_switch_engaged,
        "reason": state.reason,
        "changed_by": state.changed_by,
        "changed_at": state.changed_at,
        "scoped_engaged": KillSwitch.objects.engaged().count(),
        # Held work left behind once the global switch is released: offer to release it.
        "held_waiting": 0 if state.kill_switch_engaged else held_count(),
    }


# The header badge per mode: the words (never colour alone) and a tone for the colour.
BADGES = {
    Mode.RUNNING: {"label": "RUNNING", "tone": "running"},
    Mode.KILLED: {"label": "KILLED", "tone": "killed"},
    Mode.DRY_RUN: {"label": "DRY RUN", "tone": "dry-run"},
}
# The badge names this many engaged kill switches and open circuits; beyond, "20+".
BADGE_NAMES = 20


def _named(names: list[str]) -> dict:
    """At most BADGE_NAMES of `names` (read with one more, to know there are more)."""
    more = len(names) > BADGE_NAMES
    return {"count": min(len(names), BADGE_NAMES), "more": more, "names": names[:BADGE_NAMES]}


def runtime_badge() -> dict:
    """What every admin page's header shows: the mode in words with a tone, and the
    engaged scoped kill switches and the circuits not closed, counted and named.

    Three small queries whatever the tables hold, and no COUNT: the state row by its key,
    then at most BADGE_NAMES + 1 rows of each partial index (engaged kill switches,
    circuits not closed), read in the index's order."""
    state = RuntimeState.current()
    shown = BADGES.get(state.mode, {"label": state.mode.upper(), "tone": "killed"})
    switches = (
        KillSwitch.objects.engaged()
        .order_by("scope", "name")
        .values_list("scope", "name")[: BADGE_NAMES + 1]
    )
    circuits = (
        CircuitBreaker.objects.not_closed()
        .order_by("route_id", "target")
        .values_list("route__name", "target")[: BADGE_NAMES + 1]
    )
    return {
        "mode": state.mode,
        **shown,
        "kill_switches": _named([f"{scope} {name}" for scope, name in switches]),
        "circuits": _named([f"{route} → {target}" for route, target in circuits]),
    }


HELD_COUNTED = 100_000


def held_count() -> int:
    """Held executions, counted through the status index up to HELD_COUNTED."""
    return Execution.objects.held()[:HELD_COUNTED].count()


def counts(now=None) -> dict:
    """Events (by received_at) and executions (by created_at) per status, over the last
    hour and the last 24 hours; every status present, zero when none.

    Executions are counted per status so each count is a range scan of the
    (status, -created_at) index; events group a range of the received_at index."""
    now = now or timezone.now()
    windows = {"1h": datetime.timedelta(hours=1), "24h": datetime.timedelta(hours=24)}
    result = {}
    for name, span in windows.items():
        since = now - span
        events = dict.fromkeys(EventStatus.values, 0)
        events.update(
            Event.objects.filter(received_at__gte=since, received_at__lte=now)
            .order_by()
            .values_list("status")
            .annotate(n=Count("pk"))
        )
        executions = {
            status: Execution.objects.filter(
                status=status, created_at__gte=since, created_at__lte=now
            ).count()
            for status in ExecutionStatus.values
        }
        result[name] = {"events": events, "executions": executions}
    return result


def _minute(value: datetime.datetime) -> datetime.datetime:
    return value.replace(second=0, microsecond=0)


def per_minute(now=None, minutes: int = WINDOW_MINUTES) -> list[dict]:
    """Events accepted, attempts finished and attempts failed per minute over the last
    `minutes` minutes, oldest first, one row per minute (zero when none). The last row is
    the current, partial minute. At most `minutes` rows come back from each query."""
    now = now or timezone.now()
    current = _minute(now)
    start = current - datetime.timedelta(minutes=minutes - 1)
    accepted = dict(
        Event.objects.filter(received_at__gte=start, received_at__lte=now)
        .annotate(minute=TruncMinute("received_at"))
        .order_by()
        .values_list("minute")
        .annotate(n=Count("pk"))
    )
    # Execution.finished_at has no index; Attempt.started_at has, and every finished
    # execution ends with a finished attempt.
    finished = (
        Attempt.objects.filter(
            started_at__gte=start - LONGEST_ATTEMPT,
            started_at__lte=now,
            finished_at__gte=start,
            finished_at__lte=now,
        )
        .annotate(minute=TruncMinute("finished_at"))
        .order_by()
        .values_list("minute")
        .annotate(n=Count("pk"), failed=Count("pk", filter=Q(outcome__in=FAILED_OUTCOMES)))
    )
    accepted = {_minute(k): v for k, v in accepted.items() if k}
    executed, failed = {}, {}
    for minute, n, n_failed in finished:
        if minute:
            executed[_minute(minute)], failed[_minute(minute)] = n, n_failed
    rows = []
    for i in range(minutes):
        minute = start + datetime.timedelta(minutes=i)
        rows.append(
            {
                "minute": minute,
                "accepted": accepted.get(minute, 0),
                "executed": executed.get(minute, 0),
                "failed": failed.get(minute, 0),
            }
        )
    return rows


def oldest_queued_age(now=None) -> datetime.timedelta | None:
    """How long the longest-waiting due execution has waited (events.observe.stats.queue_wait);
    None when nothing waits."""
    seconds = stats.queue_wait(now)["oldest_age_seconds"]
    return None if seconds is None else datetime.timedelta(seconds=seconds)


def failing_routes(now=None, limit: int = TOP) -> list[dict]:
    """Routes with the most failed executions (created in the last 24 hours) and failed
    attempts (started in the last 24 hours), worst first."""
    now = now or timezone.now()
    since = now - datetime.timedelta(hours=24)
    rows: dict[int, dict] = {}

    def row(route_id, name):
        return rows.setdefault(
            route_id,
            {"route_id": route_id, "route": name, "failed_executions": 0, "failed_attempts": 0},
        )

    for r in (
        Execution.objects.filter(status=ExecutionStatus.FAILED, created_at__gte=since)
        .order_by()
        .values("route_id", "route__name")
        .annotate(n=Count("pk"))
        .order_by("-n")[: limit * 4]
    ):
        row(r["route_id"], r["route__name"])["failed_executions"] = r["n"]
    for r in (
        Attempt.objects.filter(started_at__gte=since, outcome__in=FAILED_OUTCOMES)
        .order_by()
        .values("execution__route_id", "execution__route__name")
        .annotate(n=Count("pk"))
        .order_by("-n")[: limit * 4]
    ):
        row(r["execution__route_id"], r["execution__route__name"])["failed_attempts"] = r["n"]
    ranked = sorted(
        rows.values(), key=lambda r: (-r["failed_executions"], -r["failed_attempts"], r["route"])
    )
    return ranked[:limit]


def error_classes(now=None, limit: int = TOP) -> list[dict]:
    """The error classes of attempts started in the last 24 hours with the HTTP status
    their target answered (None when there was no answer: refused, timed out, unreachable),
    most frequent first."""
    now = now or timezone.now()
    since = now - datetime.timedelta(hours=24)
    rows = (
        Attempt.objects.filter(started_at__gte=since)
        .exclude(error_class="")
        .annotate(http_status=KT("response_summary__status"))
        .order_by()
        .values("error_class", "http_status")
        .annotate(n=Count("pk"))
        .order_by("-n", "error_class", F("http_status").asc(nulls_last=True))[:limit]
    )
    return [
        {
            "error_class": r["error_class"],
            "http_status": int(r["http_status"]) if r["http_status"] else None,
            "count": r["n"],
        }
        for r in rows
    ]


def routes_at_work(limit: int = 20) -> list[dict]:
    """Per route with work: running now (next to its max_in_flight), queued (waiting for a
    worker) and retrying (waiting for its backoff or a deferral, or due again). The routes
    with most work first, at most `limit`.

    Two grouped reads of partial indexes: running executions, and claimable ones."""
    running = Execution.objects.running_by_route()
    waiting = {
        r["route_id"]: r
        for r in Execution.objects.filter(status__in=CLAIMABLE_STATUSES)
        .order_by()
        .values("route_id")
        .annotate(
            queued=Count("pk", filter=Q(status=ExecutionStatus.QUEUED)),
            retrying=Count("pk", filter=Q(status=ExecutionStatus.RETRYING)),
        )
    }
    ids = set(running) | set(waiting)
    rows = []
    for route in Route.objects.filter(pk__in=ids).only("name", "max_in_flight"):
        w = waiting.get(route.pk, {})
        rows.append(
            {
                "route_id": route.pk,
                "route": route.name,
                "in_flight": running.get(route.pk, 0),
                "max_in_flight": route.max_in_flight,
                "queued": w.get("queued", 0),
                "retrying": w.get("retrying", 0),
            }
        )
    rows.sort(key=lambda r: (-(r["in_flight"] + r["queued"] + r["retrying"]), r["route"]))
    return rows[:limit]


def open_circuits(limit: int = BADGE_NAMES) -> list[dict]:
    """The circuits not closed, each with how many executions it defers now (retrying
    because the circuit was open or half open when a worker claimed them)."""
    circuits = list(
        CircuitBreaker.objects.not_closed()
        .select_related("route")
        .order_by("route_id", "target")[:limit]
    )
    deferred: dict[tuple[int, str], int] = {}
    if circuits:
        reasons = (
            Execution.objects.filter(
                status=ExecutionStatus.RETRYING,
                route_id__in={c.route_id for c in circuits},
                status_reason__startswith="circuit ",
            )
            .order_by()
            .values_list("route_id", "status_reason")
            .annotate(n=Count("pk"))
        )
        # The reason ends with "→ <target>" (connectors.circuits.before_call).
        for route_id, reason, n in reasons:
            target = reason.rpartition(" → ")[2]
            deferred[route_id, target] = deferred.get((route_id, target), 0) + n
    return [
        {
            "id": c.pk,
            "route": c.route.name,
            "route_id": c.route_id,
            "target": c.target,
            "state": c.state,
            "state_label": c.get_state_display(),
            "consecutive_failures": c.consecutive_failures,
            "retry_at": c.retry_at,
            "deferred": deferred.get((c.route_id, c.target), 0),
        }
        for c in circuits
    ]


def engaged_switches(limit: int = BADGE_NAMES) -> list[dict]:
    """The engaged scoped kill switches: what each holds, who engaged it, when and why."""
    return [
        {
            "id": k.pk,
            "scope": k.scope,
            "name": k.name,
            "reason": k.reason,
            "changed_by": k.changed_by,
            "changed_at": k.changed_at,
        }
        for k in KillSwitch.objects.engaged().order_by("scope", "name")[:limit]
    ]


def format_age(age: datetime.timedelta | None) -> str:
    """'nothing waiting', '42 s', '3 min 5 s' or '2 h 7 min'."""
    if age is None:
        return "nothing waiting"
    seconds = int(age.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def overview(now=None) -> dict:
    """Everything the dashboard shows, as plain data."""
    now = now or timezone.now()
    series = per_minute(now)
    age = oldest_queued_age(now)
    approval = stats.approval_wait(now)
    approval_age = approval["oldest_age_seconds"]
    return {
        "now": now,
        "banner": banner(),
        "counts": counts(now),
        "series": series,
        "chart": chart_svg(series),
        "oldest_queued_age": age,
        "oldest_queued_text": format_age(age),
        "awaiting_approval": approval["awaiting"],
        "oldest_awaiting_text": format_age(
            None if approval_age is None else datetime.timedelta(seconds=approval_age)
        ),
        "workers": workers_summary(),
        "routes_at_work": routes_at_work(),
        "open_circuits": open_circuits(),
        "engaged_switches": engaged_switches(),
        "failing_routes": failing_routes(now),
        "error_classes": error_classes(now),
    }


# -- the chart ----------------------------------------------------------------------

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP_MARGIN, BOTTOM = 44, 12, 28, 30
SERIES = (
    # key, label, colour: mid tones that read on the light and the dark admin theme
    ("accepted", "events accepted", "#3c8dbc"),
    ("executed", "attempts finished", "#e07b00"),
    ("failed", "attempts failed", "#c62828"),
)


def _ceil_nice(value: int) -> int:
    """The smallest 1, 2 or 5 x 10^n that is at least value (and at least 1)."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def chart_svg(series: list[dict]) -> SafeString:
    """An inline SVG line chart of accepted and executed per minute: axes, labels, a
    legend, a <title> per point and a text description. No JavaScript; all text escaped."""
    n = len(series)
    peak = max([max(r["accepted"], r["executed"]) for r in series] + [0])
    top = _ceil_nice(peak)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP_MARGIN - BOTTOM

    def x(i):
        return LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v):
        return TOP_MARGIN + plot_h - plot_h * v / top

    total = {key: sum(r[key] for r in series) for key, _, _ in SERIES}
    desc = (
        f"Last {n} minutes: {total['accepted']} events accepted, "
        f"{total['executed']} attempts finished; busiest minute {peak}."
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="runtime-chart" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
        f'aria-labelledby="runtime-chart-title runtime-chart-desc">',
        '<title id="runtime-chart-title">Events accepted and attempts finished per minute</title>',
        f'<desc id="runtime-chart-desc">{escape(desc)}</desc>',
        # Axes and grid.
        f'<g style="stroke: var(--hairline-color, #ccc)" stroke-width="1">'
        f'<line x1="{LEFT}" y1="{TOP_MARGIN}" x2="{LEFT}" y2="{TOP_MARGIN + plot_h}"/>'
        f'<line x1="{LEFT}" y1="{TOP_MARGIN + plot_h}" x2="{LEFT + plot_w}" '
        f'y2="{TOP_MARGIN + plot_h}"/>'
        f'<line x1="{LEFT}" y1="{y(top / 2):.1f}" x2="{LEFT + plot_w}" y2="{y(top / 2):.1f}" '
        f'stroke-dasharray="3 3"/></g>',
        '<g font-size="11" style="fill: var(--body-quiet-color, #666)">',
        f'<text x="{LEFT - 6}" y="{y(top) + 4:.1f}" text-anchor="end">{top}</text>',
        f'<text x="{LEFT - 6}" y="{y(top / 2) + 4:.1f}" text-anchor="end">{top / 2:g}</text>',
        f'<text x="{LEFT - 6}" y="{y(0) + 4:.1f}" text-anchor="end">0</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 10}" text-anchor="start">-{n - 1} min</text>',
        f'<text x="{x((n - 1) / 2):.1f}" y="{HEIGHT - 10}" text-anchor="middle">'
        f"-{(n - 1) // 2} min</text>",
        f'<text x="{LEFT + plot_w}" y="{HEIGHT - 10}" text-anchor="end">now (UTC '
        f"{escape(series[-1]['minute'].strftime('%H:%M')) if series else ''})</text>",
        f'<text x="{LEFT - 36}" y="{TOP_MARGIN - 12}" text-anchor="start">per minute</text>',
        "</g>",
    ]
    # Legend, along the top: colour and words.
    for i, (key, label, colour) in enumerate(SERIES):
        ox = LEFT + 60 + i * 180
        out.append(
            f'<g class="legend-{key}"><rect x="{ox}" y="6" width="12" height="12" '
            f'style="fill: {colour}"/><text x="{ox + 18}" y="16" font-size="12" '
            f'style="fill: var(--body-fg, #333)">{escape(label)} ({total[key]})</text></g>'
        )
    for key, label, colour in SERIES:
        points = " ".join(f"{x(i):.1f},{y(r[key]):.1f}" for i, r in enumerate(series))
        out.append(
            f'<polyline class="series-{key}" fill="none" stroke-width="2" '
            f'style="stroke: {colour}" points="{points}"/>'
        )
        out.append(f'<g class="points-{key}" style="fill: {colour}">')
        for i, r in enumerate(series):
            if not r[key]:
                continue
            when = r["minute"].strftime("%H:%M")
            out.append(
                f'<circle cx="{x(i):.1f}" cy="{y(r[key]):.1f}" r="2.5">'
                f"<title>{escape(when)} UTC: {r[key]} {escape(label)}</title></circle>"
            )
        out.append("</g>")
    out.append("</svg>")
    # Safe: every piece of text above is a number or went through escape().
    return mark_safe("".join(out))  # noqa: S308
