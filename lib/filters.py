"""Route filters: a JSON document saying which events a route takes, and why one did not.

A filter is matched against an event's *subject*:

    {"data": <payload>, "headers": <stored headers>, "source": <source name>, "type": <type>}

The syntax is the one Hookdeck and Convoy use: an object matches when each of its entries
holds; a plain value is an equality; operators start with `$`. docs/routing.md has the
semantics table and examples. It is declarative: no code runs, there is no regex (Python's
engine backtracks and could hang a request), and `compile_filter` refuses documents beyond
MAX_DEPTH, MAX_NODES, MAX_BYTES, MAX_LIST and MAX_STRING, so the cost of matching one
event is bounded by the filter's size times the payload's.

`compile_filter` checks a document once (when a route is saved, and again when the routes
are cached) and returns a tree of small nodes: `matches(subject)` is the fast path ingestion
takes, `explain(subject)` lists why an event did not match, for the route tester.
"""

import difflib
import json
import math
import operator

SUBJECT_KEYS = ("data", "headers", "source", "type")
MAX_DEPTH = 10  # levels of nesting, operators included
MAX_NODES = 200  # field names, operators and list items, all counted
MAX_BYTES = 16_384  # the document as compact JSON
MAX_LIST = 500  # values in one $in / $nin, or items in one list
MAX_STRING = 1_000  # characters in one string value or field name

_COMPARISONS = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
_LOGICAL = ("$or", "$and", "$not")
OPERATORS = (
    "$eq",
    "$neq",
    *_COMPARISONS,
    "$in",
    "$nin",
    "$exist",
    "$startsWith",
    "$endsWith",
    *_LOGICAL,
)


class FilterError(ValueError):
    """A filter that cannot be used; `path` names the bad part (`data.amount.$gte`)."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class _Missing:
    __slots__ = ()

    def __repr__(self):
        return "missing"


MISSING = _Missing()


def subject(*, data, headers, source: str, event_type: str) -> dict:
    """What a filter is matched against. Header names are lowercased, as they are stored."""
    return {
        "data": data,
        "headers": {str(k).lower(): v for k, v in (headers or {}).items()},
        "source": source,
        "type": event_type,
    }


# -- values ------------------------------------------------------------------------------


def _kind(value) -> str:
    """JSON's kinds: booleans are not numbers, and 1 equals 1.0."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "missing" if value is MISSING else type(value).__name__


def _same(a, b) -> bool:
    """Equal and of the same JSON kind: 10000 is not "10000", true is not 1."""
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "list":
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if kind == "object":
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _key(value) -> tuple:
    """A hashable key under which equal values of one kind meet (for $in)."""
    return (_kind(value), value)


def show(value, limit: int = 60) -> str:
    """A value as an explanation quotes it: JSON, shortened."""
    if value is MISSING:
        return "missing"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is(path: str, value) -> str:
    return f"{path or 'the event'} is missing" if value is MISSING else f"{path} is {show(value)}"


# -- nodes: each tests a value and says why a value failed -------------------------------


class Node:
    __slots__ = ()

    def test(self, value) -> bool:  # pragma: no cover - every node defines it
        raise NotImplementedError

    def why_not(self, value, path: str) -> list[str]:
        """Why `value` (at `path`) fails this node; called only when test() is False."""
        raise NotImplementedError  # pragma: no cover


class Equal(Node):
    """A plain value: equal to it, or (for a list) holding an element equal to it."""

    __slots__ = ("expected",)

    def __init__(self, expected):
        self.expected = expected

    def test(self, value) -> bool:
        if isinstance(value, list):
            return any(_same(item, self.expected) for item in value)
        return _same(value, self.expected)

    def why_not(self, value, path):
        if isinstance(value, list):
            return [f"{path} holds no {show(self.expected)}"]
        return [f"{_is(path, value)}, not {show(self.expected)}"]


class Exactly(Node):
    """$eq with a list or an object: the whole value, exactly."""

    __slots__ = ("expected",)

    def __init__(self, expected):
        self.expected = expected

    def test(self, value) -> bool:
        return _same(value, self.expected)

    def why_not(self, value, path):
        return [f"{_is(path, value)}, not exactly {show(self.expected)}"]


class Compare(Node):
    """$gt, $gte, $lt, $lte: numbers with numbers, strings with strings (ISO dates sort)."""

    __slots__ = ("bound", "compare", "kind", "name")

    def __init__(self, name, bound):
        self.name, self.compare, self.bound = name, _COMPARISONS[name], bound
        self.kind = _kind(bound)

    def test(self, value) -> bool:
        if isinstance(value, list):
            return any(self.test(item) for item in value)
        return _kind(value) == self.kind and self.compare(value, self.bound)

    def why_not(self, value, path):
        wanted = f"{self.name} {show(self.bound)}"
        if isinstance(value, list):
            return [f"{path} holds no element {wanted}"]
        kind = _kind(value)
        if value is not MISSING and kind != self.kind:
            return [f"{_is(path, value)}, a {kind}: {wanted} compares {self.kind}s only"]
        return [f"{_is(path, value)}, not {wanted}"]


class Within(Node):
    """$in: one of these values (for a list: any element is)."""

    __slots__ = ("keys", "values")

    def __init__(self, values):
        self.values = values
        self.keys = frozenset(_key(v) for v in values)

    def test(self, value) -> bool:
        if isinstance(value, list):
            return any(self.test(item) for item in value)
        return _kind(value) in _PRIMITIVE and _key(value) in self.keys

    def why_not(self, value, path):
        return [f"{_is(path, value)}, not one of {show(self.values)}"]


class Exists(Node):
    """$exist: present (null counts as present) or not."""

    __slots__ = ("wanted",)

    def __init__(self, wanted: bool):
        self.wanted = wanted

    def test(self, value) -> bool:
        return (value is not MISSING) is self.wanted

    def why_not(self, value, path):
        return [f"{path} is missing" if self.wanted else f"{path} is present ({show(value)})"]


class Affix(Node):
    """$startsWith / $endsWith on a string (for a list: any element)."""

    __slots__ = ("method", "name", "text")

    def __init__(self, name, text):
        self.name, self.text = name, text
        self.method = str.startswith if name == "$startsWith" else str.endswith

    def test(self, value) -> bool:
        if isinstance(value, list):
            return any(self.test(item) for item in value)
        return isinstance(value, str) and self.method(value, self.text)

    def why_not(self, value, path):
        wanted = f"{self.name} {show(self.text)}"
        if isinstance(value, list):
            return [f"{path} holds no string {wanted}"]
        return [f"{_is(path, value)}, not {wanted}"]


class Contains(Node):
    """A list in the filter: the value is a list holding a match for every item."""

    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items

    def test(self, value) -> bool:
        return isinstance(value, list) and all(
            any(item.test(element) for element in value) for item in self.items
        )

    def why_not(self, value, path):
        if not isinstance(value, list):
            return [f"{_is(path, value)}, not a list"]
        return [
            f"{path} holds nothing matching item {i} of the filter's list"
            for i, item in enumerate(self.items)
            if not any(item.test(element) for element in value)
        ]


class AllOf(Node):
    """An object of conditions, or $and: every one holds."""

    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = parts

    def test(self, value) -> bool:
        return all(part.test(value) for part in self.parts)

    def why_not(self, value, path):
        return [
            why for part in self.parts if not part.test(value) for why in part.why_not(value, path)
        ]


class AnyOf(Node):
    """$or: at least one holds."""

    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = parts

    def test(self, value) -> bool:
        return any(part.test(value) for part in self.parts)

    def why_not(self, value, path):
        reasons = [" and ".join(part.why_not(value, path)) for part in self.parts]
        return [f"none of the {len(self.parts)} $or alternatives held: " + "; ".join(reasons)]


class Not(Node):
    """$not, and the negative operators: $neq is not $eq, $nin is not $in (so a missing
    field satisfies them)."""

    __slots__ = ("label", "part")

    def __init__(self, part, label):
        self.part, self.label = part, label

    def test(self, value) -> bool:
        return not self.part.test(value)

    def why_not(self, value, path):
        return [f"{_is(path, value)}, which {self.label} excludes"]


class Field(Node):
    """A field name: the condition holds for the field's value; on a list of objects, for
    some element's."""

    __slots__ = ("name", "part")

    def __init__(self, name, part):
        self.name, self.part = name, part

    def test(self, value) -> bool:
        if isinstance(value, dict):
            return self.part.test(value.get(self.name, MISSING))
        if isinstance(value, list):
            return any(self.test(item) for item in value if isinstance(item, dict | list))
        return self.part.test(MISSING)

    def why_not(self, value, path):
        here = f"{path}.{self.name}" if path else self.name
        if isinstance(value, dict):
            return self.part.why_not(value.get(self.name, MISSING), here)
        if isinstance(value, list):
            if not value:
                return [f"{path} is an empty list"]
            shown = "; ".join(
                why
                for i, item in enumerate(value[:3])
                for why in self.why_not(item, f"{path}[{i}]")
            )
            more = f" ({len(value) - 3} more not shown)" if len(value) > 3 else ""
            return [f"no element of {path} matches{more}: {shown}"]
        return self.part.why_not(MISSING, here)


_PRIMITIVE = frozenset({"null", "boolean", "number", "string"})


# -- checking and compiling --------------------------------------------------------------


class Filter:
    """A compiled filter. `matches` is ingestion's fast path; `explain` says why not."""

    __slots__ = ("document", "root")

    def __init__(self, root: Node, document: dict):
        self.root, self.document = root, document

    def matches(self, subject: dict) -> bool:
        return self.root.test(subject)

    def explain(self, subject: dict) -> list[str]:
        """[] when the subject matches; else each failed condition, named by its path."""
        return [] if self.root.test(subject) else self.root.why_not(subject, "")


def compile_filter(document) -> Filter | None:
    """Check a filter document and compile it; None for no filter ({} or null: every
    event). Raises FilterError naming the first bad part."""
    if document is None or document == {}:
        return None
    if not isinstance(document, dict):
        raise FilterError("", f"a filter is a JSON object, not a {_kind(document)}")
    size = len(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_BYTES:
        raise FilterError("", f"the filter is {size} bytes; at most {MAX_BYTES} are allowed")
    compiler = _Compiler()
    root = compiler.condition(document, path="", depth=0)
    return Filter(root, document)


def check(document) -> None:
    """Raise FilterError if the document cannot be used as a filter."""
    compile_filter(document)


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class _Compiler:
    def __init__(self):
        self.nodes = 0

    def count(self, path: str, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FilterError(path, f"the filter has more than {MAX_NODES} conditions")
        if depth > MAX_DEPTH:
            raise FilterError(path, f"the filter nests deeper than {MAX_DEPTH} levels")

    def condition(self, spec, *, path: str, depth: int) -> Node:
        """What a filter says about the value at `path`."""
        self.count(path, depth)
        if isinstance(spec, dict):
            return self.conditions(spec, path=path, depth=depth)
        if path == "":
            raise FilterError("", "at the top, a condition is an object of data, headers, …")
        if isinstance(spec, list):
            return Contains(self.items(spec, path=path, depth=depth))
        return Equal(self.primitive(spec, path))

    def conditions(self, spec: dict, *, path: str, depth: int) -> Node:
        if not spec:
            raise FilterError(path, "an empty object matches everything; remove it")
        parts = []
        for key, value in spec.items():
            here = f"{path}.{key}" if path else key
            if key.startswith("$"):
                parts.append(self.operator(key, value, path=path, here=here, depth=depth + 1))
            else:
                parts.append(self.field(key, value, path=path, here=here, depth=depth + 1))
        return parts[0] if len(parts) == 1 else AllOf(parts)

    def field(self, key: str, value, *, path: str, here: str, depth: int) -> Node:
        if len(key) > MAX_STRING:
            raise FilterError(path, f"a field name is longer than {MAX_STRING} characters")
        if path == "" and key not in SUBJECT_KEYS:
            raise FilterError(
                key,
                f"unknown key{_suggest(key, SUBJECT_KEYS)}; a filter starts from "
                + ", ".join(SUBJECT_KEYS),
            )
        if path == "headers":
            key = key.lower()  # stored headers are lowercased
            here = f"headers.{key}"
        return Field(key, self.condition(value, path=here, depth=depth))

    def operator(self, name: str, value, *, path: str, here: str, depth: int) -> Node:
        if name not in OPERATORS:
            raise FilterError(
                here, f"unknown operator{_suggest(name, OPERATORS)}; use " + ", ".join(OPERATORS)
            )
        if path == "" and name not in _LOGICAL:
            raise FilterError(here, "at the top, only $or, $and and $not apply")
        if name in ("$or", "$and"):
            if not isinstance(value, list) or not value:
                raise FilterError(here, f"{name} takes a non-empty list of conditions")
            parts = self.items(value, path=path, depth=depth, label=here)
            return AnyOf(parts) if name == "$or" else AllOf(parts)
        if name == "$not":
            return Not(self.condition(value, path=path, depth=depth), f"$not {show(value)}")
        if name in ("$eq", "$neq"):
            self.count(here, depth)
            if isinstance(value, list | dict):
                self.literal(value, here, depth)
                node = Exactly(value)
            else:
                node = Equal(self.primitive(value, here))
            return node if name == "$eq" else Not(node, f"$neq {show(value)}")
        if name in _COMPARISONS:
            if _kind(value) not in ("number", "string"):
                raise FilterError(here, f"{name} compares with a number or a string")
            return Compare(name, self.primitive(value, here))
        if name in ("$in", "$nin"):
            if not isinstance(value, list) or not value:
                raise FilterError(here, f"{name} takes a non-empty list of values")
            if len(value) > MAX_LIST:
                raise FilterError(here, f"{name} takes at most {MAX_LIST} values")
            for i, item in enumerate(value):
                if _kind(item) not in _PRIMITIVE:
                    raise FilterError(
                        f"{here}[{i}]", f"{name} lists plain values, not a {_kind(item)}"
                    )
                self.primitive(item, f"{here}[{i}]")
            node = Within(value)
            return node if name == "$in" else Not(node, f"$nin {show(value)}")
        if name == "$exist":
            if not isinstance(value, bool):
                raise FilterError(here, "$exist takes true or false")
            return Exists(value)
        # $startsWith, $endsWith
        if not isinstance(value, str) or not value:
            raise FilterError(here, f"{name} takes a non-empty string")
        return Affix(name, self.primitive(value, here))

    def items(self, values: list, *, path: str, depth: int, label: str = "") -> list[Node]:
        """Conditions on the same value ($or, $and) or on a list's elements (a list)."""
        if len(values) > MAX_LIST:
            raise FilterError(label or path, f"a list holds at most {MAX_LIST} items")
        return [self.condition(item, path=path, depth=depth + 1) for item in values]

    def primitive(self, value, path: str):
        kind = _kind(value)
        if kind not in _PRIMITIVE:
            raise FilterError(path, f"a {kind} is not a JSON value")
        if kind == "number" and not math.isfinite(value):
            raise FilterError(path, "a number must be finite")
        if kind == "string" and len(value) > MAX_STRING:
            raise FilterError(path, f"a string is longer than {MAX_STRING} characters")
        return value

    def literal(self, value, path: str, depth: int) -> None:
        """A list or object compared whole ($eq): only JSON values, within the bounds."""
        if depth > MAX_DEPTH:
            raise FilterError(path, f"the filter nests deeper than {MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            self.count(path, depth)
            if isinstance(item, list | dict):
                self.literal(item, f"{path}.{key}", depth + 1)
            else:
                self.primitive(item, f"{path}.{key}")
