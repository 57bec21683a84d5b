"""Where each scheme's senders put the event id and type, and reading them."""

import hashlib
import re
import unicodedata

from django.core.exceptions import ValidationError

from events.models import AuthScheme, IdFrom, Source, TypeFrom
from lib.errors import IngestError

MAX_ID_LENGTH = 255
MAX_TYPE_LENGTH = 255


def valid_identifier(value, *, field: str, code: str, max_length: int) -> str:
    """The event id or type as text: a string (or an integer), not blank, at most
    `max_length` long, without leading or trailing whitespace, control characters or
    invisible format characters (category Cf). IngestError 400 with `code` otherwise."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise IngestError(400, code, f"{field} must be a string.")
    text = str(value)
    if not text.strip():
        raise IngestError(400, code, f"{field} must not be empty.")
    if len(text) > max_length:
        raise IngestError(400, code, f"{field} is longer than {max_length} characters.")
    if text != text.strip():
        raise IngestError(400, code, f"{field} must not start or end with whitespace.")
    for ch in text:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs"):
            raise IngestError(400, code, f"{field} contains control characters.")
        if category == "Cf":
            # Invisible, or reordering what follows (U+202E): shown in the admin and the
            # logs as something other than what it is.
            raise IngestError(
                400,
                code,
                f"{field} contains the invisible format character U+{ord(ch):04X}, so it "
                "would display as something else.",
            )
    return text


# Where each scheme's senders put the event id and type, tried in order.
DEFAULT_RULES: dict[str, tuple[tuple, tuple]] = {
    AuthScheme.API_KEY: (
        (("body", "event_id"), ("header", "Idempotency-Key")),
        (("body", "type"),),
    ),
    # Svix sends svix-id unless white-labelled (signatures._standard_names).
    AuthScheme.STANDARD_WEBHOOKS: (
        (("header", "webhook-id"), ("header", "svix-id")),
        (("body", "type"),),
    ),
    AuthScheme.GITHUB: ((("header", "X-GitHub-Delivery"),), (("header", "X-GitHub-Event"),)),
    AuthScheme.STRIPE: ((("body", "id"),), (("body", "type"),)),
    # Shopify names X-Shopify-Event-Id as the duplicate key: a retry of one event can come
    # with a new webhook id.
    AuthScheme.SHOPIFY: (
        (("header", "X-Shopify-Event-Id"), ("header", "X-Shopify-Webhook-Id")),
        (("header", "X-Shopify-Topic"),),
    ),
    # The Events API sends event_id (the same on Slack's retries). Interactivity payloads
    # (block_actions, view_submission, shortcut, message_action...) have none, but each
    # carries a fresh trigger_id, and Slack never retries them. What has neither (view_closed,
    # block_suggestion) is told apart by its bytes, which name the user, view or action.
    AuthScheme.SLACK: (
        (("body", "event_id"), ("body", "trigger_id"), ("body_sha256", "")),
        (("body", "event.type"), ("body", "type")),
    ),
    # Follow-up events are stored by the runtime itself (events/engine/chains.py), never
    # parsed from a request; these rules are never used.
    AuthScheme.INTERNAL: ((("body", "event_id"),), (("body", "type"),)),
}


def rules(source: Source) -> tuple[tuple, tuple]:
    """(id rules, type rules): each a tuple of (where, field) tried in order."""
    id_default, type_default = DEFAULT_RULES[source.auth_scheme]
    if source.event_id_from == IdFrom.DEFAULT:
        id_rules = id_default
    elif source.event_id_from == IdFrom.BODY_SHA256:
        id_rules = (("body_sha256", ""),)
    else:
        id_rules = ((source.event_id_from, source.event_id_field),)
    type_rules = (
        type_default
        if source.type_from == TypeFrom.DEFAULT
        else ((source.type_from, source.type_field),)
    )
    return id_rules, type_rules


def describe_rules(rule_list) -> str:
    words = {
        "header": "header {}",
        "body": "body field `{}`",
        "body_sha256": "SHA-256 of the body",
        "fixed": "always {!r}",
    }
    return ", else ".join(words[where].format(field) for where, field in rule_list)


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
_BODY_PATH = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")
MAX_REDACT_HEADERS = 50


def redact_header_names(names) -> list[str]:
    """The source's extra headers to redact, lowercased, once each, in the order given.
    ValueError naming the first entry that is not an HTTP header name (a token)."""
    if not isinstance(names, list | tuple):
        raise ValueError("Give a list of header names, e.g. X-Tenant-Pin.")
    if len(names) > MAX_REDACT_HEADERS:
        raise ValueError(f"At most {MAX_REDACT_HEADERS} headers.")
    kept: list[str] = []
    for name in names:
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a header name (letters, digits and -, e.g. X-Pin).")
        if name.lower() not in kept:
            kept.append(name.lower())
    return kept


def check_rules(source: Source) -> None:
    """Raise ValidationError if the source's header or id/type rules cannot work. Lowercases
    the names in `redact_headers`."""
    errors = {}
    if not _HEADER_NAME.match(source.api_key_header or ""):
        errors["api_key_header"] = "Not a valid header name."
    try:
        source.redact_headers = redact_header_names(source.redact_headers)
    except ValueError as exc:
        errors["redact_headers"] = str(exc)
    for what, where, field in (
        ("event_id_field", source.event_id_from, source.event_id_field),
        ("type_field", source.type_from, source.type_field),
    ):
        if where == "header" and not _HEADER_NAME.match(field):
            errors[what] = "Name the header, e.g. X-Request-Id."
        elif where == "body" and not (_BODY_PATH.match(field) and len(field) <= 255):
            errors[what] = "Give the body path with dots, e.g. data.id."
        elif where == "fixed":
            try:
                valid_identifier(field, field="type", code="invalid_type", max_length=255)
            except IngestError as exc:
                errors[what] = exc.message
        elif where in ("default", "body_sha256") and field:
            errors[what] = "Leave this empty: the chosen rule does not use it."
    if errors:
        raise ValidationError(errors)


def _dig(payload, path: str):
    value = payload
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _pick(rule_list, payload, headers, raw: bytes):
    for where, field in rule_list:
        if where == "header":
            value = headers.get(field)
        elif where == "body":
            value = _dig(payload, field)
        elif where == "body_sha256":
            value = hashlib.sha256(raw).hexdigest()
        else:  # fixed
            value = field
        if value is not None:
            return value
    return None


def identify(source: Source, payload: dict, headers, raw: bytes) -> tuple[str, str]:
    """The event id and type, by the source's rules; IngestError 400 naming the rule."""
    id_rules, type_rules = rules(source)
    event_id = _pick(id_rules, payload, headers, raw)
    if event_id is None:
        raise IngestError(
            400,
            "missing_event_id",
            f"No event id: this source takes it from the {describe_rules(id_rules)}.",
        )
    event_type = _pick(type_rules, payload, headers, raw)
    if event_type is None:
        raise IngestError(
            400,
            "missing_type",
            f"No event type: this source takes it from the {describe_rules(type_rules)}.",
        )
    return (
        valid_identifier(
            event_id, field="event_id", code="invalid_event_id", max_length=MAX_ID_LENGTH
        ),
        valid_identifier(event_type, field="type", code="invalid_type", max_length=255),
    )
