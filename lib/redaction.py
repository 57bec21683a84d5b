"""Which header values are secrets: redacted before they are stored, logged or shown."""

import re

REDACTED = "[redacted]"

# Found anywhere in a name: rare outside a credential's header, so x-auth-token,
# proxy-authorization, x-hub-signature-256, x-api-key, x-passwd, x-csrftoken and sessionid
# are all caught.
_MARKERS = (
    "auth",
    "cookie",
    "key",
    "token",
    "hmac",
    "secret",
    "signature",
    "passw",  # password, passwd, passwort
    "credential",
    "jwt",
    "session",
)
# Whole words only (a name's parts between -, _ or ., trailing digits dropped): short
# enough to sit inside harmless words, so x-sig and x-sig256 are caught but not
# x-signal-type; x-creds but not x-credit-limit; x-pass but not x-bypass-cache.
_WORDS = frozenset({"sig", "sigs", "cred", "creds", "pass", "pwd", "sid", "csrf", "xsrf", "otp"})
# Named like one, but not a secret: the sender's own key for deduplication.
_NOT_SECRET = frozenset({"idempotency-key"})
_WORD_SEPARATORS = re.compile(r"[^a-z0-9]+")


def is_secret_header(name: str, also: frozenset[str] = frozenset()) -> bool:
    """Broad on purpose: a header that merely looks like a credential is redacted too.
    `also` adds names (lowercase) a source uses for its credential or asked to redact."""
    lower = name.lower()
    if lower in also:
        return True
    if lower in _NOT_SECRET:
        return False
    if any(marker in lower for marker in _MARKERS):
        return True
    return any(word.rstrip("0123456789") in _WORDS for word in _WORD_SEPARATORS.split(lower))


def redact_headers(headers: dict) -> dict:
    return {name: REDACTED if is_secret_header(name) else value for name, value in headers.items()}
