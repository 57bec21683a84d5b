"""Turning raw request bytes into a payload we are willing to store.

Everything here is pure: it reads bytes and headers and raises IngestError with the
HTTP status, a stable code and a message. Nothing touches the database.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from urllib.parse import parse_qs

from lib.errors import IngestError
from lib.patterns import json_path
from lib.redaction import REDACTED, is_secret_header


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    type: str
    payload: dict
    body_hash: str


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _has_bad_characters(text: str) -> bool:
    # NUL and lone surrogates cannot be stored in PostgreSQL's jsonb (nor sent on as UTF-8).
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_structure(
    payload, *, max_depth: int, max_keys: int = 10_000, max_string: int = 65_536
) -> None:
    """Walk the payload without recursion: nesting depth, total number of keys, string
    length, strings PostgreSQL can store, and numbers a database's JSON can hold. Errors
    name the path of the field."""
    stack = [(payload, 1, ())]
    keys = 0
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict | list) and depth > max_depth:
            raise IngestError(
                400,
                "too_deep",
                f"JSON is nested deeper than {max_depth} levels at {json_path(path)}.",
            )
        if isinstance(value, dict):
            keys += len(value)
            if keys > max_keys:
                raise IngestError(
                    400, "too_many_keys", f"JSON has more than {max_keys} keys in all."
                )
            for key, item in value.items():
                if _has_bad_characters(key) or len(key) > max_string:
                    raise IngestError(
                        400,
                        "invalid_character",
                        f"A key at {json_path(path)} has a NUL character, a lone surrogate "
                        "or is too long.",
                    )
                stack.append((item, depth + 1, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, (*path, n)) for n, item in enumerate(value))
        elif isinstance(value, str):
            if _has_bad_characters(value):
                raise IngestError(
                    400,
                    "invalid_character",
                    f"The string at {json_path(path)} has a NUL character or a lone surrogate.",
                )
            if len(value) > max_string:
                raise IngestError(
                    400,
                    "string_too_long",
                    f"The string at {json_path(path)} is longer than {max_string} characters.",
                )
        elif isinstance(value, float) and not math.isfinite(value):
            # json reads a number too large for a double (1e400) as infinity, which no JSON
            # column stores. Checked in this walk, where the path is known (a parse_float
            # hook is called without it); the NaN and Infinity literals fail at parsing.
            raise IngestError(
                400,
                "number_out_of_range",
                f"The number at {json_path(path)} is out of range: JSON numbers must fit "
                "a 64-bit float (at most about 1.8e308).",
            )


def canonical_hash(payload) -> str:
    """SHA-256 of the payload's canonical JSON: key order and whitespace do not matter."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_object(
    raw: bytes, *, max_depth: int, max_keys: int = 10_000, max_string: int = 65_536
) -> dict:
    """Decode, parse and check one JSON object body."""
    if not raw.strip():
        raise IngestError(400, "empty_body", "The request body is empty.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise IngestError(400, "invalid_utf8", "The request body is not valid UTF-8.") from None
    try:
        payload = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise IngestError(
            400, "too_deep", f"JSON is nested deeper than {max_depth} levels."
        ) from None
    except ValueError as exc:
        raise IngestError(
            400, "invalid_json", f"The request body is not valid JSON: {exc}"
        ) from None
    if not isinstance(payload, dict):
        raise IngestError(400, "not_an_object", "The request body must be a JSON object.")
    check_structure(payload, max_depth=max_depth, max_keys=max_keys, max_string=max_string)
    return payload


def form_payload(raw: bytes) -> bytes:
    """The JSON in a form body's single `payload` field, as GitHub and Slack can send it."""
    try:
        fields = parse_qs(
            raw.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=100,
        )
    except (UnicodeDecodeError, ValueError):
        fields = {}
    values = fields.get("payload")
    if not values or len(values) != 1:
        raise IngestError(
            400, "invalid_form", "A form body must carry the event as JSON in one `payload` field."
        )
    return values[0].encode("utf-8")


def parsed_event(payload: dict, event_id: str, event_type: str) -> ParsedEvent:
    return ParsedEvent(
        event_id=event_id, type=event_type, payload=payload, body_hash=canonical_hash(payload)
    )


_SKIPPED = {
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
}
MAX_HEADERS = 50
MAX_HEADER_VALUE = 1024


def select_headers(headers, *, secret_header: str = "", extra=()) -> dict[str, str]:
    """The request headers worth keeping, lowercased, with secrets redacted: those named
    like one, the source's own credential header (`secret_header`) and the names in
    `extra` (the source's redact_headers), whatever their case."""
    also = frozenset(name.lower() for name in (secret_header, *extra) if isinstance(name, str))
    kept: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in _SKIPPED:
            continue
        if len(kept) >= MAX_HEADERS:
            break
        if is_secret_header(lower, also):
            kept[lower] = REDACTED
        else:
            kept[lower] = "".join(ch for ch in value[:MAX_HEADER_VALUE] if ch.isprintable())
    return kept
