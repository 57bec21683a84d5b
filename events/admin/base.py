"""The pieces the big-table admins share: cheap filters, no COUNT(*), indexed search."""

from collections import defaultdict

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html
from unfold.admin import ModelAdmin
from unfold.decorators import display

from connectors.models import Route
from events.models import (
    EVENT_ID_PREFIX_MIN,
    EVENT_ID_PREFIX_SCAN,
    FINISHED_STATUSES,
    Event,
    Execution,
    ExecutionStatus,
    event_id_prefix_term,
)
from guardrails.permissions import may_operate
from lib.admin import NoCountChangeList, NoCountPaginator


class TypeFilter(admin.SimpleListFilter):
    """Event types from the routes' patterns and the latest events.

    Django's default filter would list `SELECT DISTINCT type` over every event: a full
    scan of millions of rows on each page view. These choices cost two small queries."""

    title = "type"
    parameter_name = "type"
    lookup = "type"
    RECENT = 1000

    def lookups(self, request, model_admin):

        types = {t for t in Route.objects.values_list("event_type", flat=True) if "*" not in t}
        latest = Event.objects.order_by("-received_at").values_list("type", flat=True)
        types.update(latest[: self.RECENT])
        if self.value():
            types.add(self.value())
        return [(t, t) for t in sorted(types)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.lookup: self.value()})
        return queryset


class ExecutionTypeFilter(TypeFilter):
    lookup = "event__type"


def events_by_id_prefix(term: str) -> tuple[list, bool]:
    """The pks of the events whose event id starts with `term`, when it may be a prefix
    (event_id_prefix_term): the first EVENT_ID_PREFIX_SCAN by event id, through an index,
    and whether more events start with it. ([], False) for a term that may not be one."""
    prefix = event_id_prefix_term(term)
    if prefix is None:
        return [], False
    found = Event.objects.with_event_id_prefix(prefix).values_list("pk", flat=True)
    pks = list(found[: EVENT_ID_PREFIX_SCAN + 1])
    return pks[:EVENT_ID_PREFIX_SCAN], len(pks) > EVENT_ID_PREFIX_SCAN


EVENT_ID_HELP = (
    f"An event id, whole or its first {EVENT_ID_PREFIX_MIN} characters or more (evt_3f9a; "
    "case counts)"
)


class BigTableAdmin(ModelAdmin):
    """A read-only list over millions of rows: no COUNT(*), indexed search.

    Django's `=field` search is case-insensitive (UPPER(...) = UPPER(...)), which no plain
    index serves; ids are exact, so `indexed_search` looks each one up through its index,
    and the start of an event id through a range of that index."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts are a COUNT per filter choice
    list_per_page = 50  # rendering rows, not the database, is most of a page's time
    paginator = NoCountPaginator
    search_help_text = EVENT_ID_HELP + "."

    def get_changelist(self, request, **kwargs):
        return NoCountChangeList

    def has_delete_permission(self, request, obj=None):
        # Nobody deletes history here, superusers included: a delete would bypass the audit
        # log and orphan what refers to it. `manage.py prune` is the way (docs/retention.md).
        return False

    def indexed_search(self, term: str, prefixed: list):
        """A Q for the rows matching `term`: exactly, or through `prefixed`, the events
        whose event id starts with it (events_by_id_prefix)."""
        raise NotImplementedError

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        prefixed, cut = events_by_id_prefix(term)
        if cut and request.method == "GET":
            messages.warning(
                request,
                f"More than {EVENT_ID_PREFIX_SCAN:,} events have an event id starting with "
                f"“{term}”: only the first {EVENT_ID_PREFIX_SCAN:,} of them (by event id) "
                "are searched. Type more of the id.",
            )
        return queryset.filter(self.indexed_search(term, prefixed)), False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request):
        """What the actions that release, replay, cancel or route again ask for."""
        return may_operate(request.user)

    def get_actions(self, request):
        # History goes through `manage.py prune`: batched, audited, and keeping what
        # duplicate detection needs. A delete over a million selected rows does none of it.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


# -- what a row says at a glance -----------------------------------------------------------

# Status -> unfold's label colour: failures red, waiting amber, done green, the rest plain.
STATUS_COLOURS = {
    "succeeded": "success",
    "failed": "danger",
    "blocked": "danger",
    "retrying": "warning",
    "held": "warning",
    "running": "info",
    "queued": "info",
    "accepted": "success",
    "unrouted": "warning",
    "cancelled": "",
    "dry_run": "info",
    "awaiting_approval": "warning",
    "rejected": "danger",
    "expired": "",
}


@display(description="status", ordering="status", label=STATUS_COLOURS)
def status_label(obj):
    return obj.status


OUTCOME_COLOURS = {
    "succeeded": "success",
    "retryable_error": "warning",
    "permanent_error": "danger",
    "lost": "warning",
    "dry_run": "info",
}


@display(description="outcome", ordering="outcome", label=OUTCOME_COLOURS)
def outcome_label(attempt):
    return attempt.outcome or "running"


def clipped(text, rem: int, title=None, lines: int = 1):
    """`text` in at most `lines` lines, cut with an ellipsis past `rem` wide, so a long
    id, route name or error does not widen the list past the window; the whole of it (or
    `title`) shows on hover, and a copy of the cell takes the whole text."""
    text = str(text)
    return format_html(
        '<span class="runtime-clip{}" style="max-width: {}rem" title="{}">{}</span>',
        "" if lines == 1 else f" runtime-clip-lines runtime-clip-{lines}",
        rem,
        text if title is None else title,
        text,
    )


def relative(moment, now=None) -> str:
    """ "in 12 s", "3 min ago": when, as an operator reads it at a glance."""
    now = now or timezone.now()
    seconds = (moment - now).total_seconds()
    size = abs(seconds)
    if size < 90:
        amount = f"{size:.0f} s"
    elif size < 90 * 60:
        amount = f"{size / 60:.0f} min"
    elif size < 36 * 3600:
        amount = f"{size / 3600:.0f} h"
    else:
        amount = f"{size / 86400:.0f} d"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def mark_delivery(events: list) -> list:
    """Set `any_failed` and `any_waiting` on a page of events: one query for the page, by
    the executions' event index. A correlated EXISTS per row was planned by SQLite through
    the executions' status index instead: it read every failed execution for each event
    shown, and for each match of a search before the sort."""
    statuses = defaultdict(set)
    found = Execution.objects.filter(event__in=[event.pk for event in events])
    for event_pk, status in found.order_by().values_list("event_id", "status").distinct():
        statuses[event_pk].add(status)
    for event in events:
        seen = statuses[event.pk]
        event.any_failed = ExecutionStatus.FAILED in seen
        event.any_waiting = bool(seen.difference(FINISHED_STATUSES))
    return events


class DeliveryChangeList(NoCountChangeList):
    """The events list, each event of the page marked with its delivery (mark_delivery)."""

    def get_results(self, request):
        super().get_results(request)
        self.result_list = mark_delivery(list(self.result_list))


DELIVERY_COLOURS = {"failed": "danger", "waiting": "warning", "done": "success", "none": ""}


@display(description="delivery", label=DELIVERY_COLOURS)
def delivery_label(event):
    """All its executions done, some failed, some still waiting, or none at all
    (mark_delivery)."""
    if getattr(event, "any_failed", False):
        return "failed"
    if getattr(event, "any_waiting", False):
        return "waiting"
    return "done" if event.matched_routes else "none"


class DeliveryFilter(admin.SimpleListFilter):
    """Events by what became of their executions. "Some failed" goes through the executions'
    status index, then the events by key: cheap even when failures are rare."""

    title = "delivery"
    parameter_name = "delivery"

    def lookups(self, request, model_admin):
        return [("failed", "some failed"), ("waiting", "some still waiting")]

    def queryset(self, request, queryset):
        if self.value() == "failed":
            failed = Execution.objects.filter(status=ExecutionStatus.FAILED)
            return queryset.filter(pk__in=failed.values("event_id"))
        if self.value() == "waiting":
            waiting = Execution.objects.exclude(status__in=FINISHED_STATUSES)
            return queryset.filter(pk__in=waiting.values("event_id"))
        return queryset
