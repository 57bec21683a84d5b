"""Encrypting secrets that must stay readable (signing secrets, route credentials).

Fernet, under a key derived from SECRET_KEY and a purpose, so a token sealed for one use
cannot be read as another. Every key in SECRET_KEY_FALLBACKS still reads what it sealed,
so SECRET_KEY can be rotated. Imports no app: any layer may use it.
"""

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.utils.crypto import salted_hmac


class SealingUnavailable(ValueError):
    """There is no real SECRET_KEY to seal with; the message says what to do."""


@functools.lru_cache(maxsize=16)
def _fernet(purpose: str, keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet(
        [
            Fernet(
                base64.urlsafe_b64encode(
                    salted_hmac(purpose, "fernet", secret=key, algorithm="sha256").digest()
                )
            )
            for key in keys
        ]
    )


def _keys() -> tuple[str, ...]:
    return (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ()))


def available() -> bool:
    """False when SECRET_KEY is a throwaway one (unset outside DEBUG): nothing sealed with
    it could be read by another process or after a restart."""
    return not getattr(settings, "SECRET_KEY_MISSING", False)


def seal(text: str, *, purpose: str) -> str:
    """A token only `unseal(token, purpose=purpose)` reads, under the current SECRET_KEY.

    Raises SealingUnavailable when there is no real SECRET_KEY."""
    if not available():
        raise SealingUnavailable(
            "Set SECRET_KEY first: secrets are stored encrypted with it, and every web "
            "server and worker needs the same key to read them."
        )
    return _fernet(purpose, _keys()).encrypt(text.encode()).decode()


def unseal(token: str, *, purpose: str) -> str | None:
    """The plain text, or None when no current or fallback SECRET_KEY can read the token
    (or it was sealed for another purpose, or is not a token)."""
    if not isinstance(token, str):
        return None
    try:
        return _fernet(purpose, _keys()).decrypt(token.encode()).decode()
    except (InvalidToken, ValueError):
        return None
