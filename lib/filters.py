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


_CONTAINERS = (dict, list)


class Equal(Node):
    """A plain value: equal to it, or (for a list) holding an element equal to it."""

    __slots__ = ("expected", "kind")

    def __init__(self, expected):
        self.expected = expected
        self.kind = _kind(expected)

    def same(self, value) -> bool:
        # Spelled out by kind: this is the test ingestion runs most.
        t = type(value)
        if self.kind == "string":
            return t is str and value == self.expected
        if self.kind == "number":
            return (t is int or t is float) and value == self.expected
        return value is self.expected  # true, false, null

    def test(self, value) -> bool:
        if type(value) is list:
            return any(self.same(item) for item in value)
        return self.same(value)

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

    __slots__ = ("bound", "compare", "name", "numeric")

    def __init__(self, name, bound):
        self.name, self.compare, self.bound = name, _COMPARISONS[name], bound
        self.numeric = not isinstance(bound, str)

    def test(self, value) -> bool:
        t = type(value)
        if t is list:
            return any(self.test(item) for item in value)
        if self.numeric:
            return (t is int or t is float) and self.compare(value, self.bound)
        return t is str and self.compare(value, self.bound)

    def why_not(self, value, path):
        wanted = f"{self.name} {show(self.bound)}"
        if isinstance(value, list):
            return [f"{path} holds no element {wanted}"]
        kind, bound_kind = _kind(value), _kind(self.bound)
        if value is not MISSING and kind != bound_kind:
            return [f"{_is(path, value)}, a {kind}: {wanted} compares {bound_kind}s only"]
        return [f"{_is(path, value)}, not {wanted}"]


class Within(Node):
    """$in: one of these values (for a list: any element is). One set per kind, so that
    1, 1.0, true and "1" stay apart."""

    __slots__ = ("booleans", "null", "numbers", "strings", "values")

    def __init__(self, values):
        self.values = values
        self.strings = frozenset(v for v in values if isinstance(v, str))
        self.numbers = frozenset(v for v in values if _kind(v) == "number")
        self.booleans = frozenset(v for v in values if isinstance(v, bool))
        self.null = None in values

    def test(self, value) -> bool:
        t = type(value)
        if t is str:
            return value in self.strings
        if t is int or t is float:
            return value in self.numbers
        if t is bool:
            return value in self.booleans
        if value is None:
            return self.null
        if t is list:
            return any(self.test(item) for item in value)
        return False

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
        t = type(value)
        if t is list:
            return any(self.test(item) for item in value)
        return t is str and self.method(value, self.text)

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
        return type(value) is list and all(
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
    """$and, and the operators side by side in one object: every one holds."""

    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = parts

    def test(self, value) -> bool:
        for part in self.parts:  # noqa: SIM110 - a loop beats all(<generator>) here
            if not part.test(value):
                return False
        return True

    def why_not(self, value, path):
        failed = [part for part in self.parts if not part.test(value)]
        return [why for part in failed for why in part.why_not(value, path)]


class AnyOf(Node):
    """$or: at least one holds."""

    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = parts

    def test(self, value) -> bool:
        for part in self.parts:  # noqa: SIM110 - a loop beats any(<generator>) here
            if part.test(value):
                return True
        return False

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
        if not path:
            return [f"the event matches {self.label[5:]}, which $not excludes"]
        return [f"{_is(path, value)}, which {self.label} excludes"]


def _elements(value, path: str, reasons) -> list[str]:
    """Why no element of a list matched: the first three elements' reasons."""
    if not value:
        return [f"{path} is an empty list"]
    shown = "; ".join(why for i, item in enumerate(value[:3]) for why in reasons(item, i))
    more = f" ({len(value) - 3} more not shown)" if len(value) > 3 else ""
    return [f"no element of {path} matches{more}: {shown}"]


class Path(Node):
    """Field names, one inside the other (`data.pull_request.base`), then a condition on
    the value found there. A list on the way: some element carries on."""

    __slots__ = ("keys", "part", "rest")

    def __init__(self, keys: tuple, part: Node):
        self.keys, self.part = keys, part
        self.rest = Path(keys[1:], part) if len(keys) > 1 else part

    def test(self, value) -> bool:
        t = type(value)
        if t is dict:
            return self.rest.test(value.get(self.keys[0], MISSING))
        if t is list:
            for item in value:
                t = type(item)
                if (t is dict or t is list) and self.test(item):
                    return True
            return False
        return self.rest.test(MISSING)

    def why_not(self, value, path):
        here = f"{path}.{self.keys[0]}" if path else self.keys[0]
        if isinstance(value, list):
            return _elements(value, path, lambda item, i: self.why_not(item, f"{path}[{i}]"))
        found = value.get(self.keys[0], MISSING) if isinstance(value, dict) else MISSING
        return self.rest.why_not(found, here)


class Fields(Node):
    """An object of several field names: on a list, one element must satisfy them all
    (a line with sku A1 *and* qty above 1)."""

    __slots__ = ("paths",)

    def __init__(self, paths):
        self.paths = paths

    def test(self, value) -> bool:
        if type(value) is list:
            for item in value:
                t = type(item)
                if (t is dict or t is list) and self.test(item):
                    return True
            return False
        for path in self.paths:  # noqa: SIM110 - a loop beats all(<generator>) here
            if not path.test(value):
                return False
        return True

    def why_not(self, value, path):
        if isinstance(value, list):
            return _elements(value, path, lambda item, i: self.why_not(item, f"{path}[{i}]"))
        return [why for p in self.paths if not p.test(value) for why in p.why_not(value, path)]


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
    try:
        size = len(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode())
    except RecursionError:  # built in Python, thousands of levels deep
        raise FilterError("", f"the filter nests deeper than {MAX_DEPTH} levels") from None
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
        paths, operators = [], []
        for key, value in spec.items():
            here = f"{path}.{key}" if path else key
            if key.startswith("$"):
                operators.append(self.operator(key, value, path=path, here=here, depth=depth + 1))
            else:
                paths.append(self.field(key, value, path=path, here=here, depth=depth + 1))
        parts = operators
        if paths:
            parts = [paths[0] if len(paths) == 1 else Fields(paths), *operators]
        return parts[0] if len(parts) == 1 else AllOf(parts)

    def field(self, key: str, value, *, path: str, here: str, depth: int) -> Path:
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
        part = self.condition(value, path=here, depth=depth)
        if isinstance(part, Path):  # {"a": {"b": …}}: one walk down a.b
            return Path((key, *part.keys), part.part)
        return Path((key,), part)

    def operator(self, name: str, value, *, path: str, here: str, depth: int) -> Node:
        if name not in OPERATORS:
            raise FilterError(
                here, f"unknown operator{_suggest(name, OPERATORS)}; use " + ", ".join(OPERATORS)
            )
        if path == "" and name not in _LOGICAL:
            raise FilterError(here, "at the top, only $or, $and and $not apply")
        self.count(here, depth)
        if name in ("$or", "$and"):
            if not isinstance(value, list) or not value:
                raise FilterError(here, f"{name} takes a non-empty list of conditions")
            parts = self.items(value, path=path, depth=depth, label=here)
            if name == "$or" and all(isinstance(part, Equal) for part in parts):
                return Within(value)  # the same test, one set lookup instead of a loop
            return AnyOf(parts) if name == "$or" else AllOf(parts)
        if name == "$not":
            return Not(self.condition(value, path=path, depth=depth), f"$not {show(value)}")
        if name in ("$eq", "$neq"):
            if isinstance(value, list | dict):
                self.literal(value, here, depth)
                if path == "headers" and isinstance(value, dict):
                    value = {str(k).lower(): v for k, v in value.items()}
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
            if isinstance(key, str) and len(key) > MAX_STRING:
                raise FilterError(path, f"a field name is longer than {MAX_STRING} characters")
            if isinstance(item, list | dict):
                self.literal(item, f"{path}.{key}", depth + 1)
            else:
                self.primitive(item, f"{path}.{key}")
