"""The ingestion edge: who sent a request, and which event it is.

`authenticate` checks a request against its source's scheme (an API key, or a provider's
HMAC signature over the exact raw bytes). A refusal raises `Rejected` with a reason that
is counted for operators (RejectedRequest) but never told to the sender, who always gets
the same 401. `identify` reads the event id and type by the source's rules.
"""

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone

from events import snapshot, sources
from events.models import (
    AuthScheme,
    CredentialKind,
    IdFrom,
    RejectedRequest,
    Source,
    SourceKey,
    TypeFrom,
    hash_key,
)
from events.payloads import MAX_ID_LENGTH, IngestError, valid_identifier
from guardrails.models import RuntimeState
from lib import signatures

logger = logging.getLogger(__name__)

UNKNOWN = "?"
LAST_USED_PRECISION = timedelta(seconds=60)
RECENTLY_EXPIRED = timedelta(days=7)


class Rejected(Exception):
    def __init__(self, reason: str, source_name: str = UNKNOWN):
        super().__init__(reason)
        self.reason = reason
        self.source_name = source_name


# -- authentication ---------------------------------------------------------------------


def _mark_used(row: SourceKey, now) -> None:
    # At most one write a minute per credential, so a busy sender adds no write per request.
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_PRECISION:
        SourceKey.objects.filter(pk=row.pk).update(last_used_at=now)
        row.last_used_at = now  # the row may be the cached one (events/snapshot.py)


def authenticate_api_key(key: str | None, *, state: RuntimeState | None = None) -> Source:
    """POST /webhook: the enabled api_key source owning this active key. `state` is the
    runtime state row if the caller has just read it."""
    if not key:
        raise Rejected("missing_credentials")
    key_hash = hash_key(key)
    token = (state or RuntimeState.current()).config_token
    row = snapshot.snapshot(token).api_keys.get(key_hash)
    if row is None:
        # Not a usable key: read it afresh to tell operators why (revoked, expired).
        row = (
            SourceKey.objects.select_related("source")
            .filter(kind=CredentialKind.API_KEY, key_hash=key_hash)
            .first()
        )
    if row is None:
        raise Rejected("invalid_key")
    now = timezone.now()
    _check_usable(row, now)
    _mark_used(row, now)
    return row.source


def _check_usable(row: SourceKey, now) -> None:
    name = row.source.name
    if not row.source.enabled:
        raise Rejected("source_disabled", name)
    if row.source.auth_scheme != AuthScheme.API_KEY:
        raise Rejected("wrong_scheme", name)
    if row.revoked_at is not None:
        raise Rejected("revoked_key", name)
    if not row.is_active_at(now):
        raise Rejected("expired_key", name)


def authenticate(name: str, headers, read_body: Callable[[], bytes]) -> tuple[Source, bytes]:
    """POST /webhook/<name>: the source and the raw body, once the request is proven.

    `read_body` is called only when the scheme needs the body (all but api_key), so an
    API-key request with a wrong key is refused before its body is read.
    """
    now = timezone.now()
    # Active credentials, and those expired lately: a sender still using one is told
    # apart (expired_key/expired_secret) without loading years of rotated-out rows.
    recent = Q(expires_at__isnull=True) | Q(expires_at__gt=now - RECENTLY_EXPIRED)
    rows = list(
        SourceKey.objects.select_related("source").filter(
            recent, source__name=name, revoked_at__isnull=True
        )
    )
    if not rows:
        source = Source.objects.filter(name=name).first()
        if source is None:
            raise Rejected("unknown_source")
        raise Rejected("no_credentials", name)
    source = rows[0].source
    for row in rows:
        row.source = source  # one object, however many credentials
    if not source.enabled:
        raise Rejected("source_disabled", name)
    if source.auth_scheme == AuthScheme.API_KEY:
        row = _match_api_key(source, rows, headers.get(source.api_key_header), now)
        body = read_body()
    else:
        body = read_body()
        row = _match_signature(source, rows, headers, body, now)
    _mark_used(row, now)
    return source, body


def _match_api_key(source: Source, rows: list[SourceKey], key: str | None, now) -> SourceKey:
    if not key:
        raise Rejected("missing_credentials", source.name)
    wanted = hash_key(key)
    for row in rows:
        if row.kind == CredentialKind.API_KEY and hmac.compare_digest(row.key_hash, wanted):
            if not row.is_active_at(now):
                raise Rejected("expired_key", source.name)
            return row
    raise Rejected("invalid_key", source.name)


def _match_signature(source: Source, rows, headers, body: bytes, now) -> SourceKey:
    rows = [r for r in rows if r.kind == CredentialKind.SECRET]
    # Active secrets first; expired ones only to tell operators a sender still uses one.
    rows.sort(key=lambda r: not r.is_active_at(now))
    usable, plain = [], []
    for row in rows:
        secret = sources.unseal(row.secret_ciphertext)
        if secret is None:
            logger.error(
                "source %s: credential %s cannot be decrypted; was SECRET_KEY changed without "
                "listing the old one in SECRET_KEY_FALLBACKS?",
                source.name,
                row.prefix,
            )
            continue
        usable.append(row)
        plain.append(secret)
    if not usable:
        raise Rejected("no_credentials", source.name)
    try:
        index = signatures.verify(
            source.auth_scheme,
            plain,
            headers,
            body,
            now=now.timestamp(),
            tolerance=settings.SIGNATURE_TOLERANCE_SECONDS,
        )
    except signatures.SignatureRejected as exc:
        raise Rejected(exc.reason, source.name) from None
    except ValueError:  # a stored secret the scheme cannot use; creation checks prevent it
        logger.exception("source %s: a stored secret is unusable", source.name)
        raise Rejected("unusable_secret", source.name) from None
    if not usable[index].is_active_at(now):
        raise Rejected("expired_secret", source.name)
    return usable[index]


def record_rejection(rejected: Rejected) -> None:
    """Count one refused request. Never fails the response it belongs to."""
    table = connection.ops.quote_name(RejectedRequest._meta.db_table)
    count = connection.ops.quote_name("count")
    now = timezone.now()
    # Only model metadata is interpolated; every value is a bound parameter.
    sql = (
        f"INSERT INTO {table} (day, source_name, reason, {count}, last_seen_at) "  # noqa: S608
        f"VALUES (%s, %s, %s, 1, %s) ON CONFLICT (day, source_name, reason) "
        f"DO UPDATE SET {count} = {table}.{count} + 1, last_seen_at = excluded.last_seen_at"
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                sql,
                [
                    now.date(),
                    rejected.source_name[:100],
                    rejected.reason[:40],
                    now,
                ],
            )
    except DatabaseError as exc:
        logger.warning("could not count a rejected request: %s", type(exc).__name__)


# -- identification ---------------------------------------------------------------------

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
        "body": "body {}",
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
