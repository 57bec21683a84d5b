"""Which header values are secrets: redacted before they are stored, logged or shown."""

REDACTED = "[redacted]"

_MARKERS = (
    "authorization",
    "cookie",
    "api-key",
    "apikey",
    "token",
    "secret",
    "signature",
    "password",
)


def is_secret_header(name: str) -> bool:
    lower = name.lower()
    return lower != "idempotency-key" and any(marker in lower for marker in _MARKERS)


def redact_headers(headers: dict) -> dict:
    return {name: REDACTED if is_secret_header(name) else value for name, value in headers.items()}
