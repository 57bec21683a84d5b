"""Filling route parameters from the event: `{{ event.data.order.id }}`.

Only lookups, never code: a placeholder is a dotted path into the event. A string that is
one whole placeholder keeps the value's JSON type; a placeholder inside text becomes text
(objects and lists as JSON). A missing field is a PermanentError that names it.

The names under `event`: every top-level field of the payload, and
`event.id` / `event.event_id` (the sender's id), `event.type`, `event.payload` (the whole
body), `event.headers` (the stored headers, lowercase names, secrets redacted),
`event.received_at`, and `execution.idempotency_key`, `execution.attempt`.

A sealed secret (connectors.base.is_sealed) is left as it is: secrets hold no placeholders.
"""

import json
import re

from connectors.base import (
    ExecutionContext,
    PermanentError,
    is_sealed,
    sealed_in,
    with_value_at,
)

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PATH = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*$")


class MissingField(PermanentError):
    pass


def event_namespace(*, event_id, event_type, payload, headers, received_at) -> dict:
    """The names under `event` (see the module's docstring), for templates rendered from
    the event alone: a route's ordering key at ingest."""
    fields = payload if isinstance(payload, dict) else {}
    return {
        "event": {
            **fields,
            "id": event_id,
            "event_id": event_id,
            "type": event_type,
            "payload": payload,
            "headers": headers,
            "received_at": received_at,
        }
    }


def namespace(context: ExecutionContext) -> dict:
    return {
        **event_namespace(
            event_id=context.event_id,
            event_type=context.event_type,
            payload=context.payload,
            headers=context.headers,
            received_at=context.received_at,
        ),
        "execution": {"idempotency_key": context.idempotency_key, "attempt": context.attempt},
    }


def resolve(path: str, scope: dict):
    """The value at a dotted path; list items by number (`items.0.sku`)."""
    if not _PATH.match(path):
        raise MissingField(f"Template placeholder {{{{ {path} }}}} is not a dotted field path.")
    value = scope
    walked = []
    for part in path.split("."):
        walked.append(part)
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise MissingField(f"Template field {'.'.join(walked)} is missing from the event.")
    return value


def _text(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render_string(template: str, scope: dict):
    whole = PLACEHOLDER.fullmatch(template.strip())
    if whole:
        return resolve(whole.group(1), scope)
    return PLACEHOLDER.sub(lambda m: _text(resolve(m.group(1), scope)), template)


def render(value, context_or_scope):
    """Render every string inside params (dicts and lists walked); other values unchanged."""
    scope = (
        namespace(context_or_scope)
        if isinstance(context_or_scope, ExecutionContext)
        else context_or_scope
    )
    if isinstance(value, str):
        return render_string(value, scope) if "{{" in value else value
    if is_sealed(value):
        return value
    if isinstance(value, dict):
        return {key: render(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, scope) for item in value]
    return value


def placeholders(value) -> list[str]:
    """Every placeholder path in params, for checking a route when it is saved."""
    found = []
    if isinstance(value, str):
        found.extend(m.group(1) for m in PLACEHOLDER.finditer(value))
    elif isinstance(value, dict) and not is_sealed(value):
        for item in value.values():
            found.extend(placeholders(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(placeholders(item))
    return found


PARAM_ROOTS = ("event", "execution")
# A follow-up event's type and payload also see the action's result.
EMIT_ROOTS = ("event", "execution", "result")


def check_syntax(value, roots=PARAM_ROOTS) -> None:
    """Raise ValueError for a placeholder that is not a dotted path under one of `roots`."""
    for path in placeholders(value):
        if not _PATH.match(path) or path.split(".")[0] not in roots:
            under = " or ".join(f"`{root}`" for root in roots)
            raise ValueError(f"Placeholder {{{{ {path} }}}} must be a dotted path under {under}.")


def check_event_template(template: str) -> None:
    """Raise ValueError unless every placeholder of `template` is a dotted path under
    `event` (a template rendered before any execution exists, such as an ordering key)."""
    for path in placeholders(template):
        if not _PATH.match(path) or path.split(".")[0] != "event":
            raise ValueError(
                f"Placeholder {{{{ {path} }}}} must be a dotted path under `event`, "
                "such as {{ event.data.order.id }}."
            )


def preview(params, context: ExecutionContext):
    """The params an action would be called with in this context, each secret masked:
    what the route tester shows. Raises MissingField as render() does."""
    rendered = render(params, context)
    for path, marker in list(sealed_in(rendered)):
        rendered = with_value_at(rendered, path, f"{marker.get('hint', '')}…•••• (secret)")
    return rendered
