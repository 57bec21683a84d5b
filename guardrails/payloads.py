"""Payload rules at ingest that depend on the source and type: JSON Schemas."""

import jsonschema

from guardrails import config
from guardrails.policy import _type_matches


def _where(error: jsonschema.ValidationError) -> str:
    text = ""
    for part in error.absolute_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


def schema_violation(*, source: str, event_type: str, payload) -> str | None:
    """The first violation of the schemas for this source and type, naming the field's
    path, or None. Every enabled schema whose pattern matches the type applies."""
    for pattern, schema in config.current().schemas.get(source, ()):
        if not _type_matches(pattern, event_type):
            continue
        validator = jsonschema.Draft202012Validator(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
        if error is not None:
            return f"{_where(error)}: {error.message}"
    return None
