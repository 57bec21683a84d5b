"""One JSON error shape for every endpoint: {"status": "error", "error": {"code", "message"}}.

Codes are stable identifiers clients may branch on; messages are for people and may change.
"""

import functools
import logging

from django.db import DatabaseError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_default_handler

logger = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse(
        {"status": "error", "error": {"code": code, "message": message}}, status=status
    )
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "invalid_json",
    exceptions.ValidationError: "invalid_request",
    exceptions.Throttled: "rate_limited",
    exceptions.NotFound: "not_found",
}


def read_only_405(request) -> JsonResponse:
    """The JSON 405 of an endpoint that answers only GET and HEAD."""
    message = f'Method "{request.method}" not allowed.'
    return error_response(405, "method_not_allowed", message, Allow="GET, HEAD")


def read_only(view):
    """A plain Django view that answers only GET and HEAD: any other method is a JSON 405.

    It changes nothing whatever the method, so CSRF protects nothing: exempt, or the
    middleware would answer a POST with its HTML 403 page before the view's JSON 405."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.method not in ("GET", "HEAD"):
            return read_only_405(request)
        return view(request, *args, **kwargs)

    return csrf_exempt(wrapped)


def drf_exception_handler(exc, context):
    """Render DRF's errors (and a lost database) in our error shape."""
    if isinstance(exc, DatabaseError):
        logger.warning("database unavailable: %s", exc.__class__.__name__)
        return error_response(503, "database_unavailable", "The database is unavailable.")
    response = drf_default_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    detail = getattr(exc, "detail", None)
    message = detail if isinstance(detail, str) else str(detail or exc)
    response.data = {"status": "error", "error": {"code": code, "message": message}}
    return response


class IngestError(Exception):
    """A request we refuse, with its HTTP status, a stable code and a message for people:
    answered as the JSON error body (error_response)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
