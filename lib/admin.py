"""Admin pieces several apps share, on django-unfold's classes so every page has its look."""

import json
from dataclasses import dataclass, field

from django.contrib.admin.views.main import PAGE_VAR, SEARCH_VAR
from django.utils.html import format_html
from unfold.admin import ModelAdmin
from unfold.paginator import InfinitePaginator
from unfold.views import ChangeList


class ReadOnlyAdmin(ModelAdmin):
    """A record operators read but never add, edit or delete from the admin: the audit
    log, counters, the runtime's own progress rows."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# Never COUNT(*) a big table: pretend there is always one more page. Unfold's own, used
# as is: unfold's templates recognise it by its class name and then show no "N results"
# of the made-up count.
NoCountPaginator = InfinitePaginator


def pretty_json(value):
    """A JSON value as indented, escaped HTML."""
    return format_html(
        "<pre style='white-space:pre-wrap;margin:0'>{}</pre>",
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
    )


@dataclass(frozen=True)
class EmptyNote:
    """What a list that shows nothing says instead: what was asked, and how to ask wider."""

    title: str
    hint: str = ""
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, query string)


class NoCountChangeList(ChangeList):
    """Previous / next links instead of page numbers that would need a COUNT(*), and a
    note naming the search and the filters when nothing matches them.

    Unfold's ChangeList, as unfold's ModelAdmin uses."""

    def active_filter_titles(self) -> list[str]:
        """The titles of the filters this page applies (source, status, ...)."""
        return [str(spec.title) for spec in self.filter_specs if spec.used_parameters]

    def empty_note(self) -> EmptyNote:
        """The note for a page with no rows. Past the last page: back to the first. A
        search: the term, and, under filters, that it looked only within them. Filters
        alone: their names. The links keep the rest of what was asked."""
        things = str(self.opts.verbose_name_plural)
        if self.page_num > 1:
            return EmptyNote(
                f"No more {things}: page {self.page_num} is past the last one.",
                links=[("Back to page 1", self.get_query_string())],
            )
        filters = self.active_filter_titles() or (["filters"] if self.has_active_filters else [])
        unfiltered = ("Clear the filters", self.clear_all_filters_qs)
        if self.query and filters:
            return EmptyNote(
                f"No {things} match “{self.query}”.",
                f"The search looked only within the filters: {', '.join(filters)}.",
                [unfiltered, ("Clear the search", self.get_query_string({SEARCH_VAR: None}))],
            )
        if self.query:
            return EmptyNote(
                f"No {things} match “{self.query}”.",
                f"The search takes: {self.search_help_text}" if self.search_help_text else "",
                [(f"All {things}", self.get_query_string({SEARCH_VAR: None}))],
            )
        if filters:
            return EmptyNote(
                f"No {things} match these filters.",
                f"Filtered by {', '.join(filters)}.",
                [unfiltered],
            )
        return EmptyNote(f"No {things} yet.")

    @property
    def previous_page_url(self):
        return self.get_query_string({PAGE_VAR: self.page_num - 1}) if self.page_num > 1 else ""

    @property
    def next_page_url(self):
        full = len(self.result_list) >= self.list_per_page
        return self.get_query_string({PAGE_VAR: self.page_num + 1}) if full else ""
