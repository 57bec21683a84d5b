"""Verifying webhook signatures from providers over the exact raw request bytes.

Each scheme reads its headers, checks the timestamp when it has one, then recomputes the
signature with every configured secret (several during a rotation) and compares in constant
time. Everything here is pure: no database, no Django, no clock except `time.time()` when the
caller passes no `now`.

Whatever arrives in the headers or the body, `verify` raises only SignatureRejected. Its
`reason` is for operators' counters and never goes back to the client:

- missing_header: a required header is absent or empty;
- malformed_header: a header is there but not in the scheme's form (non-ASCII, a timestamp
  that is not a plain integer, no signature we can decode as a SHA-256 digest...);
- conflicting_headers: a Standard Webhooks request carries both the `webhook-*` and Svix's
  `svix-*` headers, and they do not say the same thing;
- stale_timestamp / future_timestamp: more than `tolerance` seconds before / after `now`;
- bad_signature: well formed, but no secret produces any of the signatures sent.
"""

import base64
import binascii
import hashlib
import hmac
import re
import secrets as random_source
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

SCHEMES = ("standard_webhooks", "github", "stripe", "shopify", "slack")
# Their signature covers the body alone: no id, no timestamp. A captured request can be sent
# again, as is or under another (unsigned) event id, and it still verifies.
BODY_ONLY = frozenset({"github", "shopify"})
# The provider generates the secret and shows it to the user; we cannot generate it for them.
PROVIDER_ISSUED = frozenset({"stripe", "shopify", "slack"})
DEFAULT_TOLERANCE = 300  # seconds, both directions

# A header may list many signatures; only this many are compared, so a request with
# thousands of them costs no more than one with twenty.
MAX_SIGNATURES = 20
MAX_SECRET_LENGTH = 500
MIN_STANDARD_SECRET_BYTES = 16
STANDARD_PREFIX = "whsec_"

_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# Plain ASCII digits only: no sign, no decimal point, no exponent, no "nan" or "inf". Fifteen
# digits is thirty million years; anything longer is garbage (and int() of thousands of
# digits is slow, then refused).
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


class SignatureRejected(Exception):
    """Why a request was refused. `reason` is for operators' counters only; never sent to the
    client."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Signed:
    """What a scheme read from a request: its timestamp (None if the scheme has none), the
    signatures it carries (decoded, at most MAX_SIGNATURES) and how to compute the signature
    a given secret would have produced (None: that secret cannot match)."""

    timestamp: int | None
    signatures: list[bytes]
    expected: Callable[[str], bytes | None]


def _hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def _headers(headers: Mapping[str, str], *names: str) -> list[str]:
    """The values of the named headers, stripped, looked up whatever their case: first all
    present (else missing_header), then all printable ASCII, tabs allowed as HTTP allows them
    (else malformed_header)."""
    lowered = {key.lower(): value for key, value in headers.items() if isinstance(key, str)}
    values = [lowered.get(name) for name in names]
    if any(value is None or (isinstance(value, str) and not value.strip()) for value in values):
        raise SignatureRejected("missing_header")
    if not all(isinstance(value, str) for value in values):
        raise SignatureRejected("malformed_header")
    stripped = [value.strip() for value in values]
    if not all(value.isascii() and value.replace("\t", " ").isprintable() for value in stripped):
        raise SignatureRejected("malformed_header")
    return stripped


def _timestamp(text: str) -> int:
    if not _TIMESTAMP.fullmatch(text):
        raise SignatureRejected("malformed_header")
    return int(text)


def _hex_digest(text: str) -> bytes | None:
    """A hex SHA-256 digest (either case), or None."""
    return bytes.fromhex(text) if _HEX_SHA256.fullmatch(text) else None


def _base64_digest(text: str) -> bytes | None:
    """A standard-base64 SHA-256 digest, or None."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error included
        return None
    return raw if len(raw) == hashlib.sha256().digest_size else None


# Svix sends its own names unless white-labelled; its libraries accept both sets.
_STANDARD_PREFIXES = ("webhook-", "svix-")
_STANDARD_FIELDS = ("id", "timestamp", "signature")


def _standard_names(headers: Mapping[str, str]) -> list[str]:
    """The three header names to read: `webhook-*`, else `svix-*`. A request that carries
    both sets must carry the same three values in each (conflicting_headers otherwise), so
    what is checked is also what the event id rule reads."""
    lowered = {key.lower(): value for key, value in headers.items() if isinstance(key, str)}

    def values(prefix: str) -> tuple:
        return tuple(
            value.strip() if isinstance(value, str) else value
            for value in (lowered.get(prefix + field) for field in _STANDARD_FIELDS)
        )

    present = [
        prefix for prefix in _STANDARD_PREFIXES if any(v is not None for v in values(prefix))
    ]
    if len(present) == 2 and values(present[0]) != values(present[1]):
        raise SignatureRejected("conflicting_headers")
    prefix = present[0] if present else _STANDARD_PREFIXES[0]
    return [prefix + field for field in _STANDARD_FIELDS]


def _standard_webhooks(headers: Mapping[str, str], body: bytes) -> _Signed:
    msg_id, timestamp_text, signature_list = _headers(headers, *_standard_names(headers))
    timestamp = _timestamp(timestamp_text)
    signatures = []
    for item in signature_list.split():
        version, _, encoded = item.partition(",")
        if version != "v1":  # v1a (asymmetric) and future versions are not ours to check
            continue
        digest = _base64_digest(encoded)
        if digest is not None:
            signatures.append(digest)
            if len(signatures) == MAX_SIGNATURES:
                break
    if not signatures:
        raise SignatureRejected("malformed_header")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        text = None  # the library signs text; bytes that are not UTF-8 cannot have been signed

    def expected(secret: str) -> bytes | None:
        if text is None:
            return None
        signed = _standard_webhook(secret).sign(
            msg_id, datetime.fromtimestamp(timestamp, tz=UTC), text
        )
        return base64.b64decode(signed.partition(",")[2])

    return _Signed(timestamp, signatures, expected)


def _standard_webhook(secret: str) -> Webhook:
    """The library's signer for this secret. A secret it cannot decode is a configuration
    error (check_secret refuses it), not something a request did: ValueError."""
    try:
        return Webhook(secret)
    except (ValueError, EmptyWebhookSecretError) as error:
        raise ValueError(f"not a usable standard_webhooks secret: {error}") from None


def _github(headers: Mapping[str, str], body: bytes) -> _Signed:
    (value,) = _headers(headers, "x-hub-signature-256")
    algorithm, _, encoded = value.partition("=")
    digest = _hex_digest(encoded) if algorithm == "sha256" else None
    if digest is None:
        raise SignatureRejected("malformed_header")
    return _Signed(None, [digest], lambda secret: _hmac_sha256(secret, body))


def _stripe(headers: Mapping[str, str], body: bytes) -> _Signed:
    """`t=<unix>,v1=<hex>,v1=<hex>,v0=<hex>` in any order. Only v1 is checked: v0 is a test
    scheme and accepting other schemes would allow downgrades."""
    (value,) = _headers(headers, "stripe-signature")
    timestamp_text = None
    signatures = []
    for item in value.split(","):
        key, _, item_value = item.partition("=")
        key, item_value = key.strip(), item_value.strip()
        if key == "t":
            if timestamp_text is not None:
                raise SignatureRejected("malformed_header")  # which one was signed?
            timestamp_text = item_value
        elif key == "v1" and len(signatures) < MAX_SIGNATURES:
            digest = _hex_digest(item_value)
            if digest is not None:
                signatures.append(digest)
    if timestamp_text is None or not signatures:
        raise SignatureRejected("malformed_header")
    timestamp = _timestamp(timestamp_text)
    signed = f"{timestamp_text}.".encode() + body
    return _Signed(timestamp, signatures, lambda secret: _hmac_sha256(secret, signed))


def _shopify(headers: Mapping[str, str], body: bytes) -> _Signed:
    (value,) = _headers(headers, "x-shopify-hmac-sha256")
    digest = _base64_digest(value)
    if digest is None:
        raise SignatureRejected("malformed_header")
    return _Signed(None, [digest], lambda secret: _hmac_sha256(secret, body))


def _slack(headers: Mapping[str, str], body: bytes) -> _Signed:
    timestamp_text, value = _headers(headers, "x-slack-request-timestamp", "x-slack-signature")
    timestamp = _timestamp(timestamp_text)
    version, _, encoded = value.partition("=")
    digest = _hex_digest(encoded) if version == "v0" else None
    if digest is None:
        raise SignatureRejected("malformed_header")
    signed = f"v0:{timestamp_text}:".encode() + body
    return _Signed(timestamp, [digest], lambda secret: _hmac_sha256(secret, signed))


_READERS: dict[str, Callable[[Mapping[str, str], bytes], _Signed]] = {
    "standard_webhooks": _standard_webhooks,
    "github": _github,
    "stripe": _stripe,
    "shopify": _shopify,
    "slack": _slack,
}


def _reader(scheme: str) -> Callable[[Mapping[str, str], bytes], _Signed]:
    try:
        return _READERS[scheme]
    except KeyError:
        raise ValueError(f"unknown signature scheme {scheme!r}; known: {SCHEMES}") from None


def verify(
    scheme: str,
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> int:
    """Return the index in `secrets` of the first secret whose signature matches; raise
    SignatureRejected otherwise.

    `headers` lookup is case-insensitive (Django's request.headers or a plain dict). `now`
    defaults to time.time(). Order of checks: required headers present -> header well formed
    -> timestamp within tolerance (schemes that have one) -> signature against each secret.

    A blank secret (an unset rotation slot) never matches. ValueError, not SignatureRejected,
    for what the caller got wrong: an unknown scheme, `secrets` given as one string, a
    standard_webhooks secret that does not decode.
    """
    read = _reader(scheme)
    if isinstance(secrets, str):
        raise ValueError("secrets must be a sequence of strings, not one string")
    signed = read(headers, bytes(body))
    if signed.timestamp is not None:
        current = time.time() if now is None else now
        if current - signed.timestamp > tolerance:
            raise SignatureRejected("stale_timestamp")
        if signed.timestamp - current > tolerance:
            raise SignatureRejected("future_timestamp")
    for index, secret in enumerate(secrets):
        if not secret.strip():
            continue
        expected = signed.expected(secret)
        if expected is None:
            continue
        # Compare with every signature sent, not stopping at the first match.
        matches = [hmac.compare_digest(expected, candidate) for candidate in signed.signatures]
        if any(matches):
            return index
    raise SignatureRejected("bad_signature")


def sign(
    scheme: str,
    secret: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    msg_id: str | None = None,
) -> dict[str, str]:
    """The headers a provider would send for this body (used by tests, benchmarks and docs).
    `timestamp` defaults to now; `msg_id` defaults to a random id (standard_webhooks only,
    whose body must be UTF-8: the library signs text)."""
    _reader(scheme)
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    if scheme == "standard_webhooks":
        msg_id = msg_id or "msg_" + random_source.token_urlsafe(18)
        signature = _standard_webhook(secret).sign(
            msg_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode()
        )
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
    if scheme == "github":
        return {"X-Hub-Signature-256": "sha256=" + _hmac_sha256(secret, body).hex()}
    if scheme == "stripe":
        digest = _hmac_sha256(secret, f"{timestamp}.".encode() + body)
        return {"Stripe-Signature": f"t={timestamp},v1={digest.hex()}"}
    if scheme == "shopify":
        return {"X-Shopify-Hmac-Sha256": base64.b64encode(_hmac_sha256(secret, body)).decode()}
    digest = _hmac_sha256(secret, f"v0:{timestamp}:".encode() + body)  # slack
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": "v0=" + digest.hex()}


def generate_secret(scheme: str) -> str:
    """A new random secret in the scheme's format: standard_webhooks -> "whsec_" + base64 of
    24 random bytes; others -> secrets.token_hex(32)."""
    _reader(scheme)
    if scheme == "standard_webhooks":
        return STANDARD_PREFIX + base64.b64encode(random_source.token_bytes(24)).decode()
    return random_source.token_hex(32)


def check_secret(scheme: str, secret: str) -> None:
    """Raise ValueError with a message a human can act on if `secret` cannot be used by this
    scheme: empty or whitespace only, characters that are not printable ASCII, longer than
    MAX_SECRET_LENGTH; for standard_webhooks, not "whsec_" followed by canonical padded
    base64 of at least 16 bytes (the library itself would quietly skip stray characters)."""
    _reader(scheme)
    if not isinstance(secret, str) or not secret.strip():
        raise ValueError("The secret is empty.")
    if len(secret) > MAX_SECRET_LENGTH:
        raise ValueError(
            f"The secret is {len(secret)} characters long; at most {MAX_SECRET_LENGTH} are "
            "allowed."
        )
    if not (secret.isascii() and secret.isprintable()):
        raise ValueError(
            "The secret contains characters other than printable ASCII (letters, digits, "
            "punctuation, spaces). Copy it again from the provider."
        )
    if scheme != "standard_webhooks":
        return
    if not secret.startswith(STANDARD_PREFIX):
        raise ValueError(f'A Standard Webhooks secret starts with "{STANDARD_PREFIX}".')
    encoded = secret[len(STANDARD_PREFIX) :]
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raw = None
    if raw is None or base64.b64encode(raw).decode() != encoded:
        raise ValueError(
            f'After "{STANDARD_PREFIX}", a Standard Webhooks secret is base64 (A-Z, a-z, 0-9, '
            "+ and /, padded with =); this one is not."
        )
    if len(raw) < MIN_STANDARD_SECRET_BYTES:
        raise ValueError(
            f"This Standard Webhooks secret holds {len(raw)} bytes; at least "
            f"{MIN_STANDARD_SECRET_BYTES} are needed. Generate a new one."
        )
