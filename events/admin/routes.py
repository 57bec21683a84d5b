"""The routes list as a triage list: per route, where its calls go and how it fares now.

The form and the route's own columns are connectors' (`connectors.admin.RouteAdmin`); the
columns here need the executions, so the list is registered from the events app. Its URLs
stay the model's: /admin/connectors/route/.

Whatever the number of routes, a page costs the same few queries: the kill switches, the
circuits, the running executions and the last 24 hours' outcomes are each read once for
the route ids of the page (`RouteFacts.of`), never once per row.
"""

import datetime
from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from connectors.admin import RouteAdmin
from connectors.models import CircuitBreaker, CircuitState, Route
from events.models import SUCCEEDED_OR_FAILED, Execution, ExecutionStatus
from guardrails.models import KillSwitch, Scope

# The window of the succeeded and failed counts.
RECENT = datetime.timedelta(hours=24)

CIRCUIT_COLOURS = {
    CircuitState.OPEN: "danger",
    CircuitState.HALF_OPEN: "warning",
    CircuitState.CLOSED: "success",
}


def label(text: str, variant: str = "", *, href: str = "", title: str = "") -> str:
    """Unfold's label, as its own list columns draw one: the words, coloured, maybe a link."""
    return render_to_string(
        "unfold/helpers/label.html",
        {"text": text, "variant": variant, "href": href, "label_title": title},
    )


@dataclass(frozen=True)
class RouteFacts:
    """What the triage columns show for the routes of one page, read in one go."""

    since: datetime.datetime
    switches: dict[tuple[str, str], KillSwitch]  # (scope, name) -> engaged switch
    circuits: dict[int, str]  # route id -> worst state, when not closed
    running: dict[int, int]  # route id -> running executions
    recent: dict[int, dict[str, int]]  # route id -> {succeeded|failed: n} in the window

    @classmethod
    def of(cls, routes: list[Route], now=None) -> "RouteFacts":
        """Four queries for any number of routes, each on an index: engaged kill switches
        (partial index), circuits not closed (partial index), running executions (partial
        index) and the executions created since 24 hours ago that succeeded or failed."""
        # Whole seconds: the links carry `since`, and must list exactly what was counted.
        since = (now or timezone.now()).replace(microsecond=0) - RECENT
        ids = [route.pk for route in routes]
        held = Q(scope=Scope.ROUTE, name__in={r.name for r in routes}) | Q(
            scope=Scope.CONNECTOR, name__in={r.connector for r in routes}
        )
        executions = Execution.objects.filter(route_id__in=ids)
        return cls(
            since=since,
            switches={(s.scope, s.name): s for s in KillSwitch.objects.engaged().filter(held)},
            circuits=CircuitBreaker.objects.filter(route_id__in=ids).worst_by_route(),
            running=executions.running_by_route(),
            recent=executions.succeeded_and_failed_by_route(since),
        )


class TriageRouteAdmin(RouteAdmin):
    """The routes list an operator triages from: beside each route's own settings, its kill
    switch, circuits, executions in flight and the last 24 hours' outcomes, each a link to
    the rows behind it."""

    # Enabled, dry run and killed share one column, in words, so the list fits 1400 px
    # beside the sidebar; the list's filters still pick routes by enabled and dry run.
    list_display = ("name", "takes", "sends_to", "state", "circuit", "in_flight", "recent")

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        routes = list(changelist.result_list)  # the page's rows, kept by the queryset's cache
        facts = RouteFacts.of(routes)
        for route in routes:
            route.facts = facts
        return changelist

    @staticmethod
    def _facts(obj) -> RouteFacts | None:
        return getattr(obj, "facts", None)

    @staticmethod
    def _executions(route, **params) -> str:
        query = urlencode({"route__id__exact": route.pk, **params})
        return f"{reverse('admin:events_execution_changelist')}?{query}"

    @admin.display(description="state")
    def state(self, obj):
        """Enabled or disabled, dry run, and killed when a kill switch of the route or of
        its connector is engaged (a link to that switch, its reason in the title)."""
        shown = [label("disabled") if not obj.enabled else "enabled"]
        if obj.dry_run:
            shown.append(label("dry run", "info"))
        killed = self._killed_by(obj)
        if killed is not None:
            shown.append(killed)
        return format_html_join(" ", "{}", ((part,) for part in shown))

    def _killed_by(self, obj):
        facts = self._facts(obj)
        if facts is None:
            return None
        for scope, name, text in (
            (Scope.ROUTE, obj.name, "killed"),
            (Scope.CONNECTOR, obj.connector, "connector killed"),
        ):
            switch = facts.switches.get((scope, name))
            if switch is not None:
                href = reverse("admin:guardrails_killswitch_change", args=[switch.pk])
                why = f"The kill switch of {scope} {name} is engaged"
                why += f": {switch.reason}" if switch.reason else "."
                return label(text, "danger", href=href, title=why)
        return None

    @admin.display(description="circuit")
    def circuit(self, obj):
        facts = self._facts(obj)
        if facts is None:
            return "—"
        state = CircuitState(facts.circuits.get(obj.pk, CircuitState.CLOSED))
        query = urlencode({"route__id__exact": obj.pk})
        href = f"{reverse('admin:connectors_circuitbreaker_changelist')}?{query}"
        return label(state.label.lower(), CIRCUIT_COLOURS[state], href=href)

    @admin.display(description="in flight")
    def in_flight(self, obj):
        facts = self._facts(obj)
        if facts is None:
            return "—"
        running = facts.running.get(obj.pk, 0)
        href = self._executions(obj, status__exact=ExecutionStatus.RUNNING)
        text = f"{running} / {obj.max_in_flight}"
        if running >= obj.max_in_flight:
            return label(text, "warning", href=href, title="At its max in flight")
        return format_html('<a href="{}" title="running / max in flight">{}</a>', href, text)

    @admin.display(description="last 24 h")
    def recent(self, obj):
        """Executions created in the last 24 hours that succeeded, and that failed: each
        count a link to exactly those executions."""
        facts = self._facts(obj)
        if facts is None:
            return "—"
        counts = facts.recent.get(obj.pk, {})
        lines = []
        for status in SUCCEEDED_OR_FAILED:
            n = counts.get(status, 0)
            href = self._executions(
                obj, status__exact=status, created_at__gte=facts.since.isoformat()
            )
            text = f"{n:,} {status}"
            if status == ExecutionStatus.FAILED and n:
                lines.append(label(text, "danger", href=href))
            else:
                lines.append(format_html('<a href="{}">{}</a>', href, text))
        return format_html_join("", '<div class="route-nowrap">{}</div>', ((x,) for x in lines))


admin.site.register(Route, TriageRouteAdmin)
