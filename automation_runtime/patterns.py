"""Small matching and naming rules that several apps share."""

import fnmatch


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
