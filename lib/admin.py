"""Admin pieces several apps share."""

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """A record operators read but never add, edit or delete from the admin: the audit
    log, counters, the runtime's own progress rows."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
