import logging

from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.shortcuts import render
from django.views import defaults
from drf_spectacular.utils import OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from events.observe.stats import workers_summary
from lib import openapi
from lib.errors import error_response, read_only, read_only_405
from lib.negotiation import AlwaysJson

logger = logging.getLogger(__name__)

_migrations_seen_applied = False


def _probe(func):
    """A public GET (and HEAD) endpoint without authentication or content negotiation."""
    func.content_negotiation_class = AlwaysJson
    return api_view(["GET", "HEAD"])(
        authentication_classes([])(permission_classes([AllowAny])(func))
    )


@extend_schema(
    operation_id="health",
    summary="Liveness",
    tags=["probes"],
    responses={200: openapi.HealthSerializer},
)
@_probe
def health(request):
    """GET /health: the process is up. No database, no auth."""
    return Response({"status": "ok"})


def _pending_migrations() -> int:
    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))


class ApiDocsView(SpectacularSwaggerView):
    """GET /api/docs/: Swagger UI over /api/schema/, its files served by this app."""

    def http_method_not_allowed(self, request, *args, **kwargs):
        # Its page renderer would answer a 405 in HTML; every endpoint speaks JSON errors.
        return read_only_405(request)


@read_only
def home(request):
    """GET /: a page for people (the admin's "View site" lands here): where to go next."""
    return render(request, "home.html")


@extend_schema(
    operation_id="ready",
    summary="Readiness",
    tags=["probes"],
    responses={
        200: OpenApiResponse(
            openapi.ReadinessSerializer, description="The database answers; migrations applied."
        ),
        503: OpenApiResponse(
            openapi.ReadinessSerializer,
            description="`not_ready`: the database is unavailable or migrations are pending.",
        ),
    },
)
@_probe
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
    return Response(body, status=200 if ok else 503)


def _live_workers() -> list[dict]:

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
