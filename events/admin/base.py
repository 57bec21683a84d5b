"""The pieces the big-table admins share: cheap filters, no COUNT(*), exact search."""

from django.contrib import admin
from unfold.admin import ModelAdmin

from connectors.models import Route
from events.models import (
    Event,
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


class BigTableAdmin(ModelAdmin):
    """A read-only list over millions of rows: no COUNT(*), exact indexed search.

    Django's `=field` search is case-insensitive (UPPER(...) = UPPER(...)), which no plain
    index serves; ids are exact, so `exact_search` looks each one up through its index."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts are a COUNT per filter choice
    list_per_page = 50  # rendering rows, not the database, is most of a page's time
    paginator = NoCountPaginator
    search_help_text = "An exact event id."

    def get_changelist(self, request, **kwargs):
        return NoCountChangeList

    def has_delete_permission(self, request, obj=None):
        # Nobody deletes history here, superusers included: a delete would bypass the audit
        # log and orphan what refers to it. `manage.py prune` is the way (docs/retention.md).
        return False

    def exact_search(self, term: str):
        """A Q for the rows matching `term` exactly."""
        raise NotImplementedError

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(self.exact_search(term)), False

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
