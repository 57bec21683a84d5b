"""Bulk operations in progress and the workers' heartbeats."""

from django.contrib import admin
from unfold.admin import ModelAdmin

from events.models import (
    BulkOperation,
    WorkerHeartbeat,
)
from lib.admin import ReadOnlyAdmin


@admin.register(BulkOperation)
class BulkOperationAdmin(ReadOnlyAdmin):
    """Replay, cancel and release held on many executions, run by a worker; read-only."""

    list_display = ("id", "action", "force", "status", "progress", "errors", "actor", "created_at")
    list_filter = ("status", "action")
    readonly_fields = (
        "action",
        "force",
        "status",
        "progress",
        "affected",
        "errors",
        "last_error",
        "actor",
        "via",
        "selection",
        "executions",
        "created_at",
        "started_at",
        "progressed_at",
        "finished_at",
    )
    fields = readonly_fields
    change_form_template = "admin/events/bulkoperation/change_form.html"

    @admin.display(description="progress")
    def progress(self, obj):
        return obj.progress

    @admin.display(description="executions")
    def executions(self, obj):
        ids = obj.execution_ids or []
        shown = ", ".join(str(i) for i in ids[:20])
        return shown + (f" … ({len(ids):,} in all)" if len(ids) > 20 else "")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    """The workers' own record, read-only; a dead worker's row may be deleted by hand."""

    list_display = (
        "worker_id",
        "hostname",
        "pid",
        "concurrency",
        "in_flight",
        "claims",
        "executions_run",
        "started_at",
        "last_seen_at",
    )
    readonly_fields = list_display

    def has_delete_permission(self, request, obj=None):
        return ModelAdmin.has_delete_permission(self, request, obj)
