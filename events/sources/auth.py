"""The ingestion edge: who sent a request, and which event it is.

`authenticate` checks a request against its source's scheme (an API key, or a provider's
HMAC signature over the exact raw bytes). A refusal raises `Rejected` with a reason that
is counted for operators (RejectedRequest) but never told to the sender, who always gets
the same 401. `identify` reads the event id and type by the source's rules.
"""

import hmac
import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from events.models import (
    AuthScheme,
    CredentialKind,
    RejectedRequest,
    Source,
    SourceKey,
    hash_key,
)
from events.sources import catalog, credentials
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
        row.last_used_at = now  # the row may be the cached one (events/sources/catalog.py)


def authenticate_api_key(key: str | None, *, state: RuntimeState | None = None) -> Source:
    """POST /webhook: the enabled api_key source owning this active key. `state` is the
    runtime state row if the caller has just read it."""
    if not key:
        raise Rejected("missing_credentials")
    key_hash = hash_key(key)
    token = (state or RuntimeState.current()).config_token
    row = catalog.catalog(token).api_keys.get(key_hash)
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
    rows = list(
        SourceKey.objects.active(now - RECENTLY_EXPIRED)
        .select_related("source")
        .filter(source__name=name)
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
        secret = credentials.unseal(row.secret_ciphertext)
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
