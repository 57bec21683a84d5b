"""Admin pieces several apps share, on django-unfold's classes so every page has its look."""

import json

from django.contrib.admin.views.main import PAGE_VAR
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


class NoCountChangeList(ChangeList):
    """Previous / next links instead of page numbers that would need a COUNT(*).

    Unfold's ChangeList, as unfold's ModelAdmin uses."""

    @property
    def previous_page_url(self):
        return self.get_query_string({PAGE_VAR: self.page_num - 1}) if self.page_num > 1 else ""

    @property
    def next_page_url(self):
        full = len(self.result_list) >= self.list_per_page
        return self.get_query_string({PAGE_VAR: self.page_num + 1}) if full else ""
