import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from automation_runtime.errors import error_response
from events import ingest, payloads
from events.payloads import IngestError

logger = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)


def _is_json(content_type: str) -> bool:
    return content_type in JSON_TYPES or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def _read_body(request, limit: int) -> bytes:
    """The raw body, never more than `limit` bytes read into memory."""
    length = request.META.get("CONTENT_LENGTH")
    if length:
        try:
            declared = int(length)
        except ValueError:
            raise IngestError(
                400, "invalid_content_length", "Content-Length is not a number."
            ) from None
        if declared < 0:
            raise IngestError(400, "invalid_content_length", "Content-Length is negative.")
        if declared > limit:
            raise IngestError(413, "body_too_large", f"The body is larger than {limit} bytes.")
        return request.read()
    # No Content-Length (chunked): read at most one byte past the limit, but only when
    # the server promises the stream ends with the body (gunicorn does).
    stream = request.META.get("wsgi.input")
    if stream is None or not request.META.get("wsgi.input_terminated"):
        return b""
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise IngestError(413, "body_too_large", f"The body is larger than {limit} bytes.")
    return body


@csrf_exempt
def webhook(request):
    """POST /webhook: one event from an API-key source. See the ingestion contract."""
    if request.method != "POST":
        return error_response(405, "method_not_allowed", "Use POST.", Allow="POST")
    try:
        return _webhook(request)
    except IngestError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except DatabaseError as exc:
        logger.warning("webhook: database unavailable (%s: %s)", type(exc).__name__, exc)
        return error_response(
            503, "database_unavailable", "The event was not stored; try again.", Retry_After="5"
        )


def _webhook(request):
    limit = settings.MAX_BODY_BYTES
    # Decided from Content-Length before anything else is read.
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > limit:
        return error_response(413, "body_too_large", f"The body is larger than {limit} bytes.")

    source = ingest.source_for_api_key(request.headers.get("X-API-Key"))
    if source is None:
        return error_response(
            401,
            "unauthorized",
            "Missing or invalid API key.",
            WWW_Authenticate='ApiKey header="X-API-Key"',
        )

    content_type = request.content_type or ""
    charset = (request.content_params or {}).get("charset", "utf-8").lower()
    if not _is_json(content_type) or charset not in ("utf-8", "utf8"):
        return error_response(
            415,
            "unsupported_media_type",
            "Send the event as JSON: Content-Type: application/json.",
        )

    raw = _read_body(request, limit)
    parsed = payloads.parse(
        raw,
        idempotency_key=request.headers.get("Idempotency-Key"),
        max_depth=settings.MAX_JSON_DEPTH,
        max_keys=settings.MAX_JSON_KEYS,
        max_string=settings.MAX_STRING_LENGTH,
    )
    result = ingest.ingest(source, parsed, headers=payloads.select_headers(request.headers))
    body = {
        # An event no route matched is still accepted: the sender's part is done.
        "status": "accepted" if result.outcome == "unrouted" else result.outcome,
        "id": str(result.event.id),
        "event_id": result.event.event_id,
    }
    if result.outcome == "conflict":
        body["error"] = {
            "code": "event_id_conflict",
            "message": (
                "This event id was already received with a different body; nothing was stored."
            ),
        }
    return JsonResponse(body, status=result.http_status)
