"""Creating sources and managing their credentials: API keys and signing secrets.

API keys are stored as SHA-256 hashes. Signing secrets must be readable to check an HMAC,
so they are stored encrypted (Fernet) under a key derived from SECRET_KEY; rotating
SECRET_KEY keeps them readable while the old key is listed in SECRET_KEY_FALLBACKS.
A plain key or secret is returned once, to be shown once, and never logged.
"""

import re
from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from events.models import AuthScheme, CredentialKind, Source, SourceKey, hash_key
from events.sources import rules
from guardrails import audit
from lib import sealing, signatures

DEFAULT_OVERLAP = timedelta(hours=24)


class SourceError(ValueError):
    """A request an operator can correct; the message says how."""


# -- encryption at rest -----------------------------------------------------------------


SEALING_PURPOSE = "events.sources.signing-secret"


def seal(secret: str) -> str:
    try:
        return sealing.seal(secret, purpose=SEALING_PURPOSE)
    except sealing.SealingUnavailable:
        raise SourceError(
            "Set SECRET_KEY first: signing secrets are encrypted with it, and the web server "
            "needs the same key to read them."
        ) from None


def unseal(ciphertext: str) -> str | None:
    """The plain secret, or None when no current or fallback SECRET_KEY can read it."""
    return sealing.unseal(ciphertext, purpose=SEALING_PURPOSE)


# -- credentials ------------------------------------------------------------------------


def prefix_of(secret: str) -> str:
    # Enough to tell credentials apart, never enough to matter: known prefixes plus 0-3
    # characters of a random tail.
    for known in ("whsec_", "ak_"):
        if secret.startswith(known):
            return secret[: len(known) + 3]
    return secret[:4]


def check_new_secret(scheme: str, secret: str) -> None:
    """Raise SourceError if `secret` cannot become a credential of a `scheme` source."""
    if scheme == AuthScheme.API_KEY:
        printable = secret.isascii() and secret.isprintable()
        if not printable or not 16 <= len(secret) <= 500:
            raise SourceError("An API key must be 16 to 500 printable ASCII characters.")
        if SourceKey.objects.filter(kind=CredentialKind.API_KEY, key_hash=hash_key(secret)):
            raise SourceError("That API key is already in use; choose another.")
        return
    try:
        signatures.check_secret(scheme, secret)
    except ValueError as exc:
        raise SourceError(str(exc)) from None


def add_credential(
    source: Source, *, secret: str | None = None, label: str = ""
) -> tuple[SourceKey, str]:
    """Give `source` one more active credential of its scheme's kind.

    Returns the row and the plain key or secret (generated unless given).
    """
    if source.auth_scheme == AuthScheme.INTERNAL:
        raise SourceError(
            f"The {source.name!r} source carries the runtime's own follow-up events; it takes "
            "no credential and no HTTP delivery."
        )
    if secret is not None:
        check_new_secret(source.auth_scheme, secret)
    if source.auth_scheme == AuthScheme.API_KEY:
        return source.issue_key(key=secret, label=label)
    if secret is None:
        if source.auth_scheme in signatures.PROVIDER_ISSUED:
            raise SourceError(
                f"{source.get_auth_scheme_display()} issues the signing secret: copy it from "
                "the provider and pass it with --secret."
            )
        secret = signatures.generate_secret(source.auth_scheme)
    row = SourceKey.objects.create(
        source=source,
        kind=CredentialKind.SECRET,
        key_hash=hash_key(secret),
        secret_ciphertext=seal(secret),
        prefix=prefix_of(secret),
        label=label,
    )
    return row, secret


def create_source(
    *,
    name: str,
    scheme: str,
    actor,
    via: str,
    secret: str | None = None,
    description: str = "",
    **rules: str,
) -> tuple[Source, str]:
    """Create a source with its first credential; returns it and the plain key or secret.

    `rules` are Source fields: api_key_header, event_id_from, event_id_field, type_from,
    type_field, redact_headers (a list of header names).
    """
    if scheme not in AuthScheme.values:
        raise SourceError(f"Unknown scheme {scheme!r}; choose one of {', '.join(AuthScheme)}.")
    source = Source(name=name, auth_scheme=scheme, description=description, **rules)
    try:
        source.full_clean()
    except ValidationError as exc:
        raise SourceError(
            "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
        ) from None
    with transaction.atomic():
        source.save()
        _, plain = issue_first_credential(source, secret=secret, actor=actor, via=via)
    return source, plain


def issue_first_credential(
    source: Source, *, secret: str | None, actor, via: str
) -> tuple[SourceKey, str]:
    """A new source's first key or secret, audited as its creation."""
    row, plain = add_credential(source, secret=secret, label="created")
    audit.record(
        actor=actor,
        via=via,
        action="source.create",
        target=source.name,
        scheme=source.auth_scheme,
        credential=row.prefix,
    )
    return row, plain


@dataclass(frozen=True)
class Rotation:
    new: SourceKey
    plain: str
    retiring: list[SourceKey]
    retire_at: object  # datetime


def rotate(
    source: Source,
    *,
    actor,
    via: str,
    secret: str | None = None,
    overlap: timedelta = DEFAULT_OVERLAP,
) -> Rotation:
    """Add a new credential and let the active ones expire after `overlap`.

    Until then the sender may sign (or authenticate) with either, so it can switch over
    without losing a delivery. A zero overlap retires the old ones at once.
    """
    if overlap < timedelta(0):
        raise SourceError("The overlap cannot be negative.")
    now = timezone.now()
    retire_at = now + overlap
    with transaction.atomic():
        current = list(source.keys.select_for_update().active(now))
        row, plain = add_credential(source, secret=secret, label="rotated")
        for old in current:
            if old.expires_at is None or old.expires_at > retire_at:
                old.expires_at = retire_at
                old.save(update_fields=["expires_at"])
        audit.record(
            actor=actor,
            via=via,
            action="source.rotate",
            target=source.name,
            credential=row.prefix,
            retiring=[old.prefix for old in current],
            retire_at=retire_at.isoformat(),
        )
    return Rotation(new=row, plain=plain, retiring=current, retire_at=retire_at)


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`90`, `90s`, `15m`, `24h`, `7d`."""
    match = _DURATION.match(text or "")
    if not match:
        raise SourceError(f"{text!r} is not a duration like 90s, 15m, 24h or 7d.")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def summary(source: Source, now=None) -> dict:
    """What `source list` and the admin show: never a key or a secret."""

    now = now or timezone.now()
    keys = list(source.keys.all())
    active = [k for k in keys if k.is_active_at(now)]
    used = [k.last_used_at for k in keys if k.last_used_at]
    id_rules, type_rules = rules.rules(source)
    return {
        "name": source.name,
        "enabled": source.enabled,
        "scheme": source.auth_scheme,
        "url": f"/webhook/{source.name}",
        "event_id": rules.describe_rules(id_rules),
        "type": rules.describe_rules(type_rules),
        "redact_headers": list(source.redact_headers),
        "active_credentials": [
            {
                "prefix": k.prefix,
                "created_at": k.created_at.isoformat(),
                "expires_at": k.expires_at.isoformat() if k.expires_at else None,
                "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
            }
            for k in active
        ],
        "last_used_at": max(used).isoformat() if used else None,
    }
