import logging

from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.views import defaults

from automation_runtime.errors import error_response

logger = logging.getLogger(__name__)

_migrations_seen_applied = False


def health(request):
    """GET /health: the process is up. No database, no auth."""
    return JsonResponse({"status": "ok"})


def _pending_migrations() -> int:
    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def ready(request):
    """GET /ready: the database answers and every migration is applied; 503 otherwise."""
    global _migrations_seen_applied
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        checks["database"] = "ok"
        # Migrations only move forward while a process lives: check until seen applied once.
        if not _migrations_seen_applied:
            pending = _pending_migrations()
            _migrations_seen_applied = pending == 0
            checks["migrations"] = "ok" if pending == 0 else f"{pending} pending"
        else:
            checks["migrations"] = "ok"
    except DatabaseError as exc:
        logger.warning("ready: database unavailable (%s)", type(exc).__name__)
        checks["database"] = "unavailable"
    ok = all(value == "ok" for value in checks.values()) and "migrations" in checks
    body = {"status": "ready" if ok else "not_ready", "checks": checks}
    if ok:
        # Reported, not required: a web server without workers still accepts events safely.
        body["workers"] = _live_workers()
    return JsonResponse(body, status=200 if ok else 503)


def _live_workers() -> list[dict]:
    from events.stats import workers_summary

    try:
        # Unauthenticated: ids and heartbeats only.
        return [{"id": w["id"], "last_seen_at": w["last_seen_at"]} for w in workers_summary()]
    except DatabaseError:
        return []


def _wants_html(request) -> bool:
    # The admin's pages answer as pages; everything else speaks JSON.
    return request.path.startswith("/admin/") and request.path not in JSON_ADMIN_PATHS


JSON_ADMIN_PATHS = {"/admin/status", "/admin/kill_switch"}


def bad_request(request, exception=None):
    return error_response(400, "bad_request", "The request could not be understood.")


def permission_denied(request, exception=None):
    if _wants_html(request):
        return defaults.permission_denied(request, exception)
    return error_response(403, "permission_denied", "You may not do that.")


def not_found(request, exception=None):
    if _wants_html(request):
        return defaults.page_not_found(request, exception)
    return error_response(404, "not_found", "No such endpoint.")


def server_error(request):
    return error_response(500, "server_error", "Something went wrong on our side.")
