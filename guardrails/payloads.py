"""Payload rules at ingest that depend on the source and type: JSON Schemas."""

import jsonschema

from lib.patterns import json_path, type_matches


def schema_violation(snap, *, source: str, event_type: str, payload) -> str | None:
    """The first violation of the schemas for this source and type, naming the field's
    path, or None. Every enabled schema whose pattern matches the type applies."""
    for pattern, schema in snap.schemas.get(source, ()):
        if not type_matches(pattern, event_type):
            continue
        validator = jsonschema.Draft202012Validator(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
        if error is not None:
            return f"{json_path(error.absolute_path)}: {error.message}"
    return None
