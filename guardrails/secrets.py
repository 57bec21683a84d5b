"""Which header values are secrets: redacted before they are stored, logged or shown."""

REDACTED = "[redacted]"

_MARKERS = (
    "auth",
    "cookie",
    "key",
    "token",
    "hmac",
    "secret",
    "signature",
    "password",
)


def is_secret_header(name: str, also: frozenset[str] = frozenset()) -> bool:
    """Broad on purpose: a header that merely looks like a credential is redacted too.
    `also` adds names (lowercase) a source uses for its credential."""
    lower = name.lower()
    if lower in also:
        return True
    return lower != "idempotency-key" and any(marker in lower for marker in _MARKERS)


def redact_headers(headers: dict) -> dict:
    return {name: REDACTED if is_secret_header(name) else value for name, value in headers.items()}
