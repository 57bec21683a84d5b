"""Admin pieces several apps share."""

import json

from django.contrib import admin
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.paginator import Paginator
from django.utils.functional import cached_property
from django.utils.html import format_html


class ReadOnlyAdmin(admin.ModelAdmin):
    """A record operators read but never add, edit or delete from the admin: the audit
    log, counters, the runtime's own progress rows."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class NoCountPaginator(Paginator):
    """Never COUNT(*) a big table: pretend there is always one more page."""

    @cached_property
    def count(self):
        return 10**9


def pretty_json(value):
    """A JSON value as indented, escaped HTML."""
    return format_html(
        "<pre style='white-space:pre-wrap;margin:0'>{}</pre>",
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
    )


class NoCountChangeList(ChangeList):
    """Previous / next links instead of page numbers that would need a COUNT(*)."""

    @property
    def previous_page_url(self):
        return self.get_query_string({PAGE_VAR: self.page_num - 1}) if self.page_num > 1 else ""

    @property
    def next_page_url(self):
        full = len(self.result_list) >= self.list_per_page
        return self.get_query_string({PAGE_VAR: self.page_num + 1}) if full else ""
