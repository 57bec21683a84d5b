"""Small matching and naming rules that several apps share."""

import fnmatch
import math


def type_matches(pattern: str, event_type: str) -> bool:
    """An event type against a route's or an allowlist's pattern: exact, or `*` wildcards.

    Case-sensitive, and `*` is the only wildcard (`?` and `[` match themselves).
    """
    if "*" not in pattern:
        return pattern == event_type
    return fnmatch.fnmatchcase(event_type, pattern.replace("[", "[[]").replace("?", "[?]"))


def json_path(parts, *, root: str = "(body)") -> str:
    """A field's path in a JSON document, as people read it: `data.items[3].name`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or root


def non_finite_path(value) -> tuple | None:
    """The path of the first number in a JSON value that is infinite or NaN (what
    `json.loads` makes of `1e400` or `NaN`), or None. No database stores those as JSON."""
    stack = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return path
        if isinstance(item, dict):
            stack.extend((child, (*path, key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, (*path, n)) for n, child in enumerate(item))
    return None


def finite_json_problem(value, *, root: str) -> str | None:
    """A message naming the out-of-range number in an operator's JSON, or None."""
    path = non_finite_path(value)
    if path is None:
        return None
    return (
        f"{json_path(path, root=root)}: the number is out of range (infinite or NaN); "
        "JSON numbers must be finite."
    )
