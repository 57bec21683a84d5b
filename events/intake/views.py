import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import JsonResponse
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from events.intake import ingest, parsing
from events.intake.openapi import SOURCE_WEBHOOK_SCHEMA, WEBHOOK_SCHEMA
from events.models import AuthScheme
from events.sources import auth, rules
from guardrails.models import RuntimeState
from lib.errors import IngestError, error_response
from lib.negotiation import AlwaysJson

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


class _EdgeView(APIView):
    """Our own edge: no DRF authentication, parsing or metadata. The views read the raw
    bytes themselves, because signatures are checked over exactly those bytes."""

    http_method_names = ["post"]  # and nothing else, OPTIONS included
    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = []
    throttle_classes = []
    metadata_class = None
    content_negotiation_class = AlwaysJson

    def answer(self, handler, request, *args):
        try:
            return handler(request._request, *args)
        except IngestError as exc:
            return error_response(exc.status, exc.code, exc.message)
        except DatabaseError as exc:
            logger.warning("webhook: database unavailable (%s: %s)", type(exc).__name__, exc)
            return error_response(
                503,
                "database_unavailable",
                "The event was not stored; try again.",
                Retry_After="5",
            )


class WebhookView(_EdgeView):
    """POST /webhook: one event from an api_key source, found by its X-API-Key."""

    @WEBHOOK_SCHEMA
    def post(self, request):
        return self.answer(_webhook, request)


class SourceWebhookView(_EdgeView):
    """POST /webhook/<source>: one event, proven by the source's own scheme."""

    @SOURCE_WEBHOOK_SCHEMA
    def post(self, request, source):
        return self.answer(_source_webhook, request, source)


def _check_declared_length(request, limit: int) -> None:
    # Decided from Content-Length before anything else is read.
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > limit:
        raise IngestError(413, "body_too_large", f"The body is larger than {limit} bytes.")


def _check_content_encoding(request) -> None:
    # Decided from the header, before authentication reads the body: a signature made
    # over the uncompressed body would fail on the compressed one and count as a refused
    # request. Telling an unauthenticated client to send it uncompressed is harmless.
    declared = request.headers.get("Content-Encoding", "")
    codings = [c.strip().lower() for c in declared.split(",") if c.strip()]
    unsupported = [c for c in codings if c != "identity"]
    if unsupported:
        raise IngestError(
            415,
            "unsupported_content_encoding",
            f"Content-Encoding {', '.join(unsupported)[:50]} is not supported: send the body "
            "uncompressed (no Content-Encoding, or identity).",
        )


def _refused(exc: auth.Rejected, challenge: str):
    """One 401 for every failure: the reason is counted for operators, not told."""
    logger.info("webhook refused: source=%s reason=%s", exc.source_name, exc.reason)
    auth.record_rejection(exc)
    return error_response(
        401, "unauthorized", "Missing or invalid credentials.", WWW_Authenticate=challenge
    )


def _json_body(request, raw: bytes, *, allow_form: bool) -> dict:
    content_type = request.content_type or ""
    charset = (request.content_params or {}).get("charset", "utf-8").lower()
    if allow_form and content_type == "application/x-www-form-urlencoded":
        raw = parsing.form_payload(raw)
    elif not _is_json(content_type) or charset not in ("utf-8", "utf8"):
        return _unsupported(allow_form)
    return parsing.parse_object(
        raw,
        max_depth=settings.MAX_JSON_DEPTH,
        max_keys=settings.MAX_JSON_KEYS,
        max_string=settings.MAX_STRING_LENGTH,
    )


def _unsupported(allow_form: bool):
    hint = " (or a form with a `payload` field)" if allow_form else ""
    raise IngestError(
        415,
        "unsupported_media_type",
        f"Send the event as JSON: Content-Type: application/json{hint}.",
    )


def _acknowledge(source, payload: dict, request, raw: bytes, state=None):
    event_id, event_type = rules.identify(source, payload, request.headers, raw)
    result = ingest.ingest(
        source,
        parsing.parsed_event(payload, event_id, event_type),
        headers=parsing.select_headers(
            request.headers, secret_header=source.api_key_header, extra=source.redact_headers
        ),
        state=state,
        raw=raw,
    )
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
                "This event id was already received with a different body; nothing was stored. "
                "If two senders (for example a repository hook and an organization hook) post "
                "to this source, give each its own source."
            ),
        }
    return JsonResponse(body, status=result.http_status)


def _webhook(request):
    limit = settings.MAX_BODY_BYTES
    _check_declared_length(request, limit)
    _check_content_encoding(request)
    state = RuntimeState.current()  # one read serves the key cache and the kill switch
    try:
        source = auth.authenticate_api_key(request.headers.get("X-API-Key"), state=state)
    except auth.Rejected as exc:
        return _refused(exc, 'ApiKey header="X-API-Key"')
    if not _is_json(request.content_type or ""):
        _unsupported(allow_form=False)
    raw = _read_body(request, limit)
    payload = _json_body(request, raw, allow_form=False)
    return _acknowledge(source, payload, request, raw, state=state)


def _source_webhook(request, name: str):
    limit = settings.MAX_BODY_BYTES
    _check_declared_length(request, limit)
    _check_content_encoding(request)
    try:
        source, raw = auth.authenticate(name, request.headers, lambda: _read_body(request, limit))
    except auth.Rejected as exc:
        return _refused(exc, 'Webhook realm="webhook"')
    payload = _json_body(request, raw, allow_form=True)
    if source.auth_scheme == AuthScheme.SLACK and payload.get("type") == "url_verification":
        # Slack checks a new Request URL with a signed challenge; answer it, store nothing.
        challenge = payload.get("challenge")
        if not isinstance(challenge, str) or not challenge:
            raise IngestError(400, "invalid_challenge", "url_verification without a challenge.")
        return JsonResponse({"challenge": challenge})
    return _acknowledge(source, payload, request, raw)
