"""Route filters (lib/filters.py) as a specification: what matches, what is refused when a
filter is saved, and what explain() says about an event that did not match.

The tables are the specification; each row is one rule, named by its id."""

import time

import pytest

from lib import filters
from lib.filters import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_LIST,
    MAX_NODES,
    MAX_STRING,
    FilterError,
    compile_filter,
)


def subject(data=None, headers=None, source="shop", event_type="order.created"):
    """An event's subject; data defaults to an empty payload."""
    return filters.subject(
        data={} if data is None else data, headers=headers, source=source, event_type=event_type
    )


def case(id, document, expected, **event):
    """One row of the match table: `document` against subject(**event) matches or not."""
    return pytest.param(document, subject(**event), expected, id=id)


def refused(document) -> FilterError:
    with pytest.raises(FilterError) as info:
        compile_filter(document)
    return info.value


def fields(depth, leaf):
    """{"data": {"a1": {"a2": ... leaf}}}: a path of `depth` segments, data included."""
    for i in reversed(range(1, depth)):
        leaf = {f"a{i}": leaf}
    return {"data": leaf}


def nots(depth):
    """{"data": {"x": {"$not": {"$not": ... "a"}}}}, `depth` of them."""
    value = "a"
    for _ in range(depth):
        value = {"$not": value}
    return {"data": {"x": value}}


# --- What matches ----------------------------------------------------------------------------

EQUALITY = [
    case("string-equal", {"data": {"ref": "main"}}, True, data={"ref": "main"}),
    case("string-differs", {"data": {"ref": "main"}}, False, data={"ref": "dev"}),
    case("string-case-sensitive", {"data": {"ref": "main"}}, False, data={"ref": "Main"}),
    case("number-is-not-string", {"data": {"amount": 10000}}, False, data={"amount": "10000"}),
    case("string-is-not-number", {"data": {"amount": "10000"}}, False, data={"amount": 10000}),
    case("int-equals-float", {"data": {"n": 1}}, True, data={"n": 1.0}),
    case("float-equals-int", {"data": {"n": 1.0}}, True, data={"n": 1}),
    case("true-is-not-1", {"data": {"paid": True}}, False, data={"paid": 1}),
    case("1-is-not-true", {"data": {"n": 1}}, False, data={"n": True}),
    case("false-is-not-0", {"data": {"paid": False}}, False, data={"paid": 0}),
    case("false-equals-false", {"data": {"paid": False}}, True, data={"paid": False}),
    case("nested-object-path", {"data": {"c": {"addr": {"cc": "NL"}}}}, True,
         data={"c": {"addr": {"cc": "NL"}}}),
    case("nested-path-through-scalar", {"data": {"c": {"addr": "NL"}}}, False, data={"c": "x"}),
    case("every-entry-holds", {"data": {"a": 1, "b": 2}}, True, data={"a": 1, "b": 2}),
    case("one-entry-fails", {"data": {"a": 1, "b": 2}}, False, data={"a": 1, "b": 3}),
    case("eq-plain", {"data": {"x": {"$eq": "a"}}}, True, data={"x": "a"}),
    case("eq-plain-kind-strict", {"data": {"x": {"$eq": 1}}}, False, data={"x": "1"}),
    case("eq-list-exact", {"data": {"t": {"$eq": ["a", "b"]}}}, True, data={"t": ["a", "b"]}),
    case("eq-list-order-matters", {"data": {"t": {"$eq": ["a", "b"]}}}, False,
         data={"t": ["b", "a"]}),
    case("eq-list-no-extra", {"data": {"t": {"$eq": ["a", "b"]}}}, False,
         data={"t": ["a", "b", "c"]}),
    case("eq-list-vs-scalar", {"data": {"t": {"$eq": ["a"]}}}, False, data={"t": "a"}),
    case("eq-object-exact", {"data": {"o": {"$eq": {"a": 1}}}}, True, data={"o": {"a": 1.0}}),
    case("eq-object-no-extra-keys", {"data": {"o": {"$eq": {"a": 1}}}}, False,
         data={"o": {"a": 1, "b": 2}}),
    case("eq-object-kind-strict", {"data": {"o": {"$eq": {"a": 1}}}}, False,
         data={"o": {"a": "1"}}),
    case("eq-object-is-literal-not-operators", {"data": {"o": {"$eq": {"$gt": 1}}}}, True,
         data={"o": {"$gt": 1}}),
    case("eq-object-literal-not-applied", {"data": {"o": {"$eq": {"$gt": 1}}}}, False,
         data={"o": 5}),
    case("neq-equal", {"data": {"x": {"$neq": "a"}}}, False, data={"x": "a"}),
    case("neq-different", {"data": {"x": {"$neq": "a"}}}, True, data={"x": "b"}),
    case("neq-kind-strict", {"data": {"x": {"$neq": 1}}}, True, data={"x": "1"}),
    case("neq-list-exact-equal", {"data": {"t": {"$neq": ["a"]}}}, False, data={"t": ["a"]}),
    case("neq-list-exact-differs", {"data": {"t": {"$neq": ["a"]}}}, True,
         data={"t": ["a", "b"]}),
]  # fmt: skip

MISSING_AND_NULL = [
    case("null-matches-present-null", {"data": {"x": None}}, True, data={"x": None}),
    case("null-not-missing", {"data": {"x": None}}, False, data={}),
    case("null-not-false", {"data": {"x": None}}, False, data={"x": False}),
    case("null-not-empty-string", {"data": {"x": None}}, False, data={"x": ""}),
    case("false-not-null", {"data": {"x": False}}, False, data={"x": None}),
    case("missing-fails-equality", {"data": {"x": "a"}}, False, data={}),
    case("missing-fails-gt", {"data": {"x": {"$gt": 0}}}, False, data={}),
    case("missing-fails-lte", {"data": {"x": {"$lte": "z"}}}, False, data={}),
    case("missing-fails-in", {"data": {"x": {"$in": [None, "a"]}}}, False, data={}),
    case("missing-fails-startswith", {"data": {"x": {"$startsWith": "a"}}}, False, data={}),
    case("missing-fails-filter-list", {"data": {"t": ["a"]}}, False, data={}),
    case("missing-fails-eq-list", {"data": {"t": {"$eq": []}}}, False, data={}),
    case("missing-fails-nested-field", {"data": {"a": {"b": 1}}}, False, data={}),
    case("missing-satisfies-neq", {"data": {"x": {"$neq": "a"}}}, True, data={}),
    case("missing-satisfies-neq-null", {"data": {"x": {"$neq": None}}}, True, data={}),
    case("present-null-fails-neq-null", {"data": {"x": {"$neq": None}}}, False,
         data={"x": None}),
    case("missing-satisfies-nin", {"data": {"x": {"$nin": ["a"]}}}, True, data={}),
    case("missing-satisfies-not", {"data": {"x": {"$not": {"$gt": 5}}}}, True, data={}),
    case("missing-parent-exist-false", {"data": {"a": {"b": {"$exist": False}}}}, True,
         data={}),
    case("scalar-parent-exist-false", {"data": {"a": {"b": {"$exist": False}}}}, True,
         data={"a": 5}),
    case("missing-parent-exist-true", {"data": {"a": {"b": {"$exist": True}}}}, False,
         data={}),
]  # fmt: skip

COMPARISONS = [
    case("gt-above", {"data": {"n": {"$gt": 10000}}}, True, data={"n": 15000}),
    case("gt-equal", {"data": {"n": {"$gt": 10000}}}, False, data={"n": 10000}),
    case("gt-below-float", {"data": {"n": {"$gt": 10000}}}, False, data={"n": 9999.5}),
    case("gte-equal", {"data": {"n": {"$gte": 10000}}}, True, data={"n": 10000}),
    case("gte-equal-float", {"data": {"n": {"$gte": 10000}}}, True, data={"n": 10000.0}),
    case("gte-below", {"data": {"n": {"$gte": 10000}}}, False, data={"n": 9999}),
    case("lt-below", {"data": {"n": {"$lt": 10}}}, True, data={"n": 9}),
    case("lt-equal", {"data": {"n": {"$lt": 10}}}, False, data={"n": 10}),
    case("lte-equal", {"data": {"n": {"$lte": 10}}}, True, data={"n": 10}),
    case("lte-above", {"data": {"n": {"$lte": 10}}}, False, data={"n": 11}),
    case("gt-negative-float", {"data": {"n": {"$gt": -1.5}}}, True, data={"n": -1}),
    case("range-inside", {"data": {"n": {"$gte": 10, "$lt": 20}}}, True, data={"n": 15}),
    case("range-at-upper", {"data": {"n": {"$gte": 10, "$lt": 20}}}, False, data={"n": 20}),
    case("kind-string-vs-number", {"data": {"n": {"$gt": 10000}}}, False, data={"n": "15000"}),
    case("kind-number-vs-string", {"data": {"n": {"$gt": "10000"}}}, False, data={"n": 15000}),
    case("kind-boolean-vs-number", {"data": {"n": {"$gte": 0}}}, False, data={"n": True}),
    case("kind-null-vs-number", {"data": {"n": {"$lte": 0}}}, False, data={"n": None}),
    case("kind-object-vs-number", {"data": {"n": {"$gt": 0}}}, False, data={"n": {"a": 1}}),
    case("iso-timestamp-after", {"data": {"at": {"$gte": "2024-01-01T00:00:00Z"}}}, True,
         data={"at": "2024-03-05T10:00:00Z"}),
    case("iso-timestamp-before", {"data": {"at": {"$lt": "2024-01-01"}}}, True,
         data={"at": "2023-12-31T23:59:59Z"}),
    case("string-lexicographic", {"data": {"v": {"$gt": "9"}}}, False, data={"v": "10"}),
    case("string-gt", {"data": {"v": {"$gt": "a"}}}, True, data={"v": "b"}),
]  # fmt: skip

IN_AND_NIN = [
    case("in-listed", {"data": {"s": {"$in": ["paid", "refunded"]}}}, True,
         data={"s": "refunded"}),
    case("in-not-listed", {"data": {"s": {"$in": ["paid", "refunded"]}}}, False,
         data={"s": "void"}),
    case("in-number-not-string", {"data": {"n": {"$in": [1]}}}, False, data={"n": "1"}),
    case("in-number-not-true", {"data": {"n": {"$in": [1]}}}, False, data={"n": True}),
    case("in-true-not-number", {"data": {"n": {"$in": [True]}}}, False, data={"n": 1}),
    case("in-int-equals-float", {"data": {"n": {"$in": [1]}}}, True, data={"n": 1.0}),
    case("in-null-present", {"data": {"n": {"$in": [None]}}}, True, data={"n": None}),
    case("in-object-value", {"data": {"n": {"$in": ["a"]}}}, False, data={"n": {"a": 1}}),
    case("nin-listed", {"data": {"s": {"$nin": ["void"]}}}, False, data={"s": "void"}),
    case("nin-not-listed", {"data": {"s": {"$nin": ["void"]}}}, True, data={"s": "paid"}),
    case("nin-kind-strict", {"data": {"n": {"$nin": [1]}}}, True, data={"n": "1"}),
]  # fmt: skip

EXIST = [
    case("exist-present", {"data": {"x": {"$exist": True}}}, True, data={"x": "a"}),
    case("exist-present-null", {"data": {"x": {"$exist": True}}}, True, data={"x": None}),
    case("exist-present-empty-list", {"data": {"x": {"$exist": True}}}, True, data={"x": []}),
    case("exist-missing", {"data": {"x": {"$exist": True}}}, False, data={}),
    case("not-exist-missing", {"data": {"x": {"$exist": False}}}, True, data={}),
    case("not-exist-present-null", {"data": {"x": {"$exist": False}}}, False,
         data={"x": None}),
    case("not-exist-present-empty", {"data": {"x": {"$exist": False}}}, False,
         data={"x": ""}),
]  # fmt: skip

AFFIXES = [
    case("startswith", {"data": {"ref": {"$startsWith": "refs/heads/"}}}, True,
         data={"ref": "refs/heads/main"}),
    case("startswith-no", {"data": {"ref": {"$startsWith": "refs/heads/"}}}, False,
         data={"ref": "refs/tags/v1"}),
    case("startswith-case-sensitive", {"data": {"ref": {"$startsWith": "Refs/"}}}, False,
         data={"ref": "refs/heads/main"}),
    case("startswith-number", {"data": {"n": {"$startsWith": "10"}}}, False, data={"n": 100}),
    case("endswith", {"data": {"d": {"$endsWith": ".com"}}}, True, data={"d": "a.example.com"}),
    case("endswith-no", {"data": {"d": {"$endsWith": ".com"}}}, False, data={"d": "a.org"}),
    case("endswith-null", {"data": {"d": {"$endsWith": "null"}}}, False, data={"d": None}),
    case("startswith-and-endswith", {"data": {"d": {"$startsWith": "a", "$endsWith": "z"}}},
         True, data={"d": "abcz"}),
]  # fmt: skip

EVENT_ARRAYS = [
    case("array-plain-any-element", {"data": {"tags": "vip"}}, True, data={"tags": ["a", "vip"]}),
    case("array-plain-no-element", {"data": {"tags": "vip"}}, False, data={"tags": ["a", "b"]}),
    case("array-plain-empty", {"data": {"tags": "vip"}}, False, data={"tags": []}),
    case("array-plain-kind-strict", {"data": {"ids": "1"}}, False, data={"ids": [1, 2]}),
    case("array-gt-any-element", {"data": {"p": {"$gt": 10}}}, True, data={"p": [5, 50]}),
    case("array-gt-no-element", {"data": {"p": {"$gt": 10}}}, False, data={"p": [5, 6]}),
    case("array-gt-kind-per-element", {"data": {"p": {"$gt": 10}}}, False, data={"p": ["50"]}),
    case("array-lte-any-element", {"data": {"p": {"$lte": 5}}}, True, data={"p": [50, 5]}),
    case("array-in-any-element", {"data": {"t": {"$in": ["b", "z"]}}}, True,
         data={"t": ["a", "b"]}),
    case("array-in-no-element", {"data": {"t": {"$in": ["z"]}}}, False, data={"t": ["a", "b"]}),
    case("array-startswith-any", {"data": {"r": {"$startsWith": "refs/heads/"}}}, True,
         data={"r": ["refs/tags/x", "refs/heads/y"]}),
    case("array-endswith-none", {"data": {"r": {"$endsWith": ".com"}}}, False,
         data={"r": ["a.org", 5]}),
    case("array-neq-some-element-equals", {"data": {"t": {"$neq": "a"}}}, False,
         data={"t": ["a", "b"]}),
    case("array-neq-no-element-equals", {"data": {"t": {"$neq": "a"}}}, True,
         data={"t": ["b", "c"]}),
    case("array-neq-empty", {"data": {"t": {"$neq": "a"}}}, True, data={"t": []}),
    case("array-nin-some-element-listed", {"data": {"t": {"$nin": ["a"]}}}, False,
         data={"t": ["x", "a"]}),
    case("array-nin-no-element-listed", {"data": {"t": {"$nin": ["a"]}}}, True,
         data={"t": ["x", "y"]}),
    case("array-of-objects-some-element", {"data": {"lines": {"sku": "A1"}}}, True,
         data={"lines": [{"sku": "B"}, {"sku": "A1"}]}),
    case("array-of-objects-no-element", {"data": {"lines": {"sku": "A1"}}}, False,
         data={"lines": [{"sku": "B"}, {"sku": "C"}]}),
    case("array-of-objects-empty", {"data": {"lines": {"sku": "A1"}}}, False,
         data={"lines": []}),
    case("array-of-scalars-no-fields", {"data": {"lines": {"sku": "A1"}}}, False,
         data={"lines": ["A1"]}),
    case("array-of-objects-operator", {"data": {"lines": {"qty": {"$gte": 3}}}}, True,
         data={"lines": [{"qty": 1}, {"qty": 3}]}),
    case("array-of-objects-deeper", {"data": {"order": {"lines": {"sku": "A1"}}}}, True,
         data={"order": {"lines": [{"sku": "A1"}]}}),
    case("array-of-objects-holding-arrays", {"data": {"lines": {"tags": "x"}}}, True,
         data={"lines": [{"tags": ["y"]}, {"tags": ["z", "x"]}]}),
    case("array-of-objects-one-element-holds-all",
         {"data": {"lines": {"sku": "A1", "qty": {"$gt": 1}}}}, True,
         data={"lines": [{"sku": "B", "qty": 9}, {"sku": "A1", "qty": 2}]}),
    # An object condition holds for an element when all its entries hold for that element:
    # "a line with sku A1 and qty > 1", not "a line with sku A1 and some line with qty > 1".
    case("array-of-objects-entries-on-the-same-element",
         {"data": {"lines": {"sku": "A1", "qty": {"$gt": 1}}}}, False,
         data={"lines": [{"sku": "A1", "qty": 1}, {"sku": "B", "qty": 5}]}),
]  # fmt: skip

FILTER_LISTS = [
    case("list-contains-all", {"data": {"tags": ["a", "b"]}}, True,
         data={"tags": ["b", "x", "a"]}),
    case("list-order-free", {"data": {"tags": ["a", "b"]}}, True, data={"tags": ["b", "a"]}),
    case("list-one-item-absent", {"data": {"tags": ["a", "b"]}}, False, data={"tags": ["a"]}),
    case("list-vs-scalar", {"data": {"tags": ["a"]}}, False, data={"tags": "a"}),
    case("list-vs-object", {"data": {"tags": ["a"]}}, False, data={"tags": {"a": 1}}),
    case("list-kind-strict", {"data": {"ids": ["1"]}}, False, data={"ids": [1]}),
    case("list-of-object-conditions", {"data": {"lines": [{"sku": "A1"}, {"sku": "B"}]}}, True,
         data={"lines": [{"sku": "B"}, {"sku": "C"}, {"sku": "A1"}]}),
    case("list-of-object-conditions-one-absent",
         {"data": {"lines": [{"sku": "A1"}, {"sku": "B"}]}}, False,
         data={"lines": [{"sku": "A1"}]}),
    case("list-of-operators", {"data": {"n": [{"$gt": 100}, {"$lt": 0}]}}, True,
         data={"n": [150, -5]}),
    case("list-of-operators-one-absent", {"data": {"n": [{"$gt": 100}, {"$lt": 0}]}}, False,
         data={"n": [150, 5]}),
]  # fmt: skip

HEADERS = [
    case("header-name-mixed-vs-lower", {"headers": {"X-Shop-Domain": "a.com"}}, True,
         headers={"x-shop-domain": "a.com"}),
    case("header-name-mixed-vs-upper", {"headers": {"X-Shop-Domain": "a.com"}}, True,
         headers={"X-SHOP-DOMAIN": "a.com"}),
    case("header-name-lower-vs-mixed", {"headers": {"x-shop-domain": "a.com"}}, True,
         headers={"X-Shop-Domain": "a.com"}),
    case("header-value-case-sensitive", {"headers": {"X-Shop-Domain": "a.com"}}, False,
         headers={"x-shop-domain": "A.com"}),
    case("header-missing", {"headers": {"X-Shop-Domain": "a.com"}}, False, headers={}),
    case("header-not-exist", {"headers": {"X-Debug": {"$exist": False}}}, True,
         headers={"x-other": "1"}),
    case("header-exist-any-case", {"headers": {"X-Debug": {"$exist": True}}}, True,
         headers={"X-DEBUG": "1"}),
    case("header-startswith", {"headers": {"User-Agent": {"$startsWith": "GitHub-"}}}, True,
         headers={"user-agent": "GitHub-Hookshot/1"}),
    case("header-names-in-or", {"headers": {"$or": [{"X-A": "1"}, {"X-B": "2"}]}}, True,
         headers={"x-b": "2"}),
    case("header-names-in-top-or", {"$or": [{"headers": {"X-A": "1"}}, {"source": "z"}]}, True,
         headers={"X-a": "1"}),
]  # fmt: skip

SOURCE_AND_TYPE = [
    case("source-equal", {"source": "shopify"}, True, source="shopify"),
    case("source-differs", {"source": "shopify"}, False, source="github"),
    case("type-startswith", {"type": {"$startsWith": "orders/"}}, True, event_type="orders/paid"),
    case("type-startswith-no", {"type": {"$startsWith": "orders/"}}, False,
         event_type="refunds/create"),
    case("type-in", {"type": {"$in": ["push", "pull_request"]}}, True, event_type="push"),
    case("all-top-keys-hold",
         {"source": "github", "type": "push", "data": {"ref": "main"}, "headers": {"X-E": "1"}},
         True, source="github", event_type="push", data={"ref": "main"}, headers={"x-e": "1"}),
    case("one-top-key-fails", {"source": "github", "type": "push"}, False,
         source="github", event_type="release"),
]  # fmt: skip

LOGICAL = [
    case("top-or-second", {"$or": [{"source": "a"}, {"type": "b"}]}, True, event_type="b"),
    case("top-or-none", {"$or": [{"source": "a"}, {"type": "b"}]}, False),
    case("top-and-both", {"$and": [{"source": "shop"}, {"data": {"n": 1}}]}, True, data={"n": 1}),
    case("top-and-one-fails", {"$and": [{"source": "shop"}, {"data": {"n": 1}}]}, False,
         data={"n": 2}),
    case("top-not-held", {"$not": {"source": "shop"}}, False, source="shop"),
    case("top-not-excluded", {"$not": {"source": "shop"}}, True, source="other"),
    case("field-or-first", {"data": {"n": {"$or": [{"$lt": 0}, {"$gt": 100}]}}}, True,
         data={"n": -1}),
    case("field-or-none", {"data": {"n": {"$or": [{"$lt": 0}, {"$gt": 100}]}}}, False,
         data={"n": 50}),
    case("field-or-plain-values", {"data": {"s": {"$or": ["paid", "refunded"]}}}, True,
         data={"s": "refunded"}),
    case("field-or-exist-false-or-null",
         {"data": {"x": {"$or": [{"$exist": False}, None]}}}, True, data={}),
    case("field-or-exist-false-or-null-present",
         {"data": {"x": {"$or": [{"$exist": False}, None]}}}, True, data={"x": None}),
    case("field-or-exist-false-or-null-other",
         {"data": {"x": {"$or": [{"$exist": False}, None]}}}, False, data={"x": "a"}),
    case("field-and-both", {"data": {"n": {"$and": [{"$gte": 10}, {"$lt": 20}]}}}, True,
         data={"n": 15}),
    case("field-and-one-fails", {"data": {"n": {"$and": [{"$gte": 10}, {"$lt": 20}]}}}, False,
         data={"n": 25}),
    case("not-in-other", {"data": {"s": {"$not": {"$in": ["a", "b"]}}}}, True, data={"s": "c"}),
    case("not-in-listed", {"data": {"s": {"$not": {"$in": ["a", "b"]}}}}, False,
         data={"s": "a"}),
    case("not-plain-equal", {"data": {"s": {"$not": "a"}}}, False, data={"s": "a"}),
    case("not-plain-other", {"data": {"s": {"$not": "a"}}}, True, data={"s": "b"}),
    case("not-not", {"data": {"s": {"$not": {"$not": "a"}}}}, True, data={"s": "a"}),
    case("not-array-of-objects-has-it", {"data": {"lines": {"$not": {"sku": "A1"}}}}, False,
         data={"lines": [{"sku": "B"}, {"sku": "A1"}]}),
    case("not-array-of-objects-lacks-it", {"data": {"lines": {"$not": {"sku": "A1"}}}}, True,
         data={"lines": [{"sku": "B"}]}),
    case("or-of-and-and-not",
         {"$or": [{"$and": [{"source": "github"}, {"type": "push"}]},
                  {"$not": {"data": {"test": {"$exist": True}}}}]},
         True, source="shop", data={"live": True}),
    case("or-of-and-and-not-none",
         {"$or": [{"$and": [{"source": "github"}, {"type": "push"}]},
                  {"$not": {"data": {"test": {"$exist": True}}}}]},
         False, source="github", event_type="release", data={"test": None}),
]  # fmt: skip

MATCH_TABLE = (
    EQUALITY
    + MISSING_AND_NULL
    + COMPARISONS
    + IN_AND_NIN
    + EXIST
    + AFFIXES
    + EVENT_ARRAYS
    + FILTER_LISTS
    + HEADERS
    + SOURCE_AND_TYPE
    + LOGICAL
)


@pytest.mark.parametrize(("document", "event", "expected"), MATCH_TABLE)
def test_matches(document, event, expected):
    assert compile_filter(document).matches(event) is expected


@pytest.mark.parametrize(("document", "event", "expected"), MATCH_TABLE)
def test_explain_is_empty_exactly_when_it_matches(document, event, expected):
    reasons = compile_filter(document).explain(event)
    assert (reasons == []) is expected
    assert all(isinstance(reason, str) and reason for reason in reasons)


@pytest.mark.parametrize("document", [None, {}], ids=["null", "empty-object"])
def test_no_filter_takes_every_event(document):
    assert compile_filter(document) is None


# --- What is refused -------------------------------------------------------------------------

INF, NAN = float("inf"), float("nan")
LONG = "x" * (MAX_STRING + 1)

REFUSALS = [
    # (document, the path the error names, a word of its message)
    pytest.param([], "", "object", id="top-list"),
    pytest.param("data", "", "object", id="top-string"),
    pytest.param(5, "", "object", id="top-number"),
    pytest.param({"dat": {"x": 1}}, "dat", "did you mean data?", id="top-key-typo"),
    pytest.param({"payload": {"x": 1}}, "payload", "unknown key", id="top-key-unknown"),
    pytest.param({"$eq": 1}, "$eq", "at the top", id="top-eq"),
    pytest.param({"$exist": True}, "$exist", "at the top", id="top-exist"),
    pytest.param({"$or": [{"$in": ["a"]}]}, "$in", "at the top", id="top-or-in"),
    pytest.param({"data": {"amount": {"$gtt": 1}}}, "data.amount.$gtt", "did you mean $gt?",
                 id="op-gtt"),
    pytest.param({"data": {"x": {"$exists": True}}}, "data.x.$exists", "did you mean $exist?",
                 id="op-exists"),
    pytest.param({"data": {"x": {"$regex": "^a"}}}, "data.x.$regex", "unknown operator",
                 id="op-regex"),
    pytest.param({"$gtt": 1}, "$gtt", "unknown operator", id="op-unknown-at-top"),
    pytest.param({"data": {"x": {"$in": []}}}, "data.x.$in", "non-empty list", id="in-empty"),
    pytest.param({"data": {"x": {"$in": "a"}}}, "data.x.$in", "non-empty list",
                 id="in-not-a-list"),
    pytest.param({"data": {"x": {"$in": ["a", {"b": 1}]}}}, "data.x.$in[1]", "plain values",
                 id="in-object-item"),
    pytest.param({"data": {"x": {"$in": [[1]]}}}, "data.x.$in[0]", "plain values",
                 id="in-list-item"),
    pytest.param({"data": {"x": {"$nin": []}}}, "data.x.$nin", "non-empty list",
                 id="nin-empty"),
    pytest.param({"data": {"n": {"$gt": True}}}, "data.n.$gt", "number or a string",
                 id="gt-boolean"),
    pytest.param({"data": {"n": {"$gte": [1]}}}, "data.n.$gte", "number or a string",
                 id="gte-list"),
    pytest.param({"data": {"n": {"$lt": None}}}, "data.n.$lt", "number or a string",
                 id="lt-null"),
    pytest.param({"data": {"n": {"$lte": {}}}}, "data.n.$lte", "number or a string",
                 id="lte-object"),
    pytest.param({"data": {"x": {"$exist": "yes"}}}, "data.x.$exist", "true or false",
                 id="exist-string"),
    pytest.param({"data": {"x": {"$exist": 1}}}, "data.x.$exist", "true or false",
                 id="exist-number"),
    pytest.param({"data": {"x": {"$exist": None}}}, "data.x.$exist", "true or false",
                 id="exist-null"),
    pytest.param({"data": {"x": {"$startsWith": ""}}}, "data.x.$startsWith", "non-empty string",
                 id="startswith-empty"),
    pytest.param({"data": {"x": {"$startsWith": 5}}}, "data.x.$startsWith", "non-empty string",
                 id="startswith-number"),
    pytest.param({"data": {"x": {"$endsWith": None}}}, "data.x.$endsWith", "non-empty string",
                 id="endswith-null"),
    pytest.param({"data": {"x": {"$or": []}}}, "data.x.$or", "non-empty list", id="or-empty"),
    pytest.param({"data": {"x": {"$or": {"$gt": 1}}}}, "data.x.$or", "non-empty list",
                 id="or-object"),
    pytest.param({"data": {"x": {"$and": "a"}}}, "data.x.$and", "non-empty list",
                 id="and-string"),
    pytest.param({"$or": []}, "$or", "non-empty list", id="top-or-empty"),
    pytest.param({"data": {}}, "data", "empty object", id="empty-object-data"),
    pytest.param({"data": {"x": {}}}, "data.x", "empty object", id="empty-object-field"),
    pytest.param({"headers": {"X-A": {}}}, "headers.x-a", "empty object",
                 id="empty-object-header"),
    pytest.param({"data": {"x": INF}}, "data.x", "finite", id="inf-plain"),
    pytest.param({"data": {"x": NAN}}, "data.x", "finite", id="nan-plain"),
    pytest.param({"data": {"x": {"$gt": -INF}}}, "data.x.$gt", "finite", id="inf-gt"),
    pytest.param({"data": {"x": {"$in": [1, NAN]}}}, "data.x.$in[1]", "finite", id="nan-in"),
    pytest.param({"data": {"x": {"$eq": [INF]}}}, "data.x.$eq.0", "finite", id="inf-eq-list"),
    pytest.param({"data": {"x": {"$neq": {"a": NAN}}}}, "data.x.$neq.a", "finite",
                 id="nan-neq-object"),
    pytest.param({"data": {"x": LONG}}, "data.x", "longer", id="string-plain"),
    pytest.param({"data": {"x": {"$startsWith": LONG}}}, "data.x.$startsWith", "longer",
                 id="string-startswith"),
    pytest.param({"data": {"x": {"$in": ["a", LONG]}}}, "data.x.$in[1]", "longer",
                 id="string-in"),
    pytest.param({"data": {"x": {"$eq": [LONG]}}}, "data.x.$eq.0", "longer", id="string-eq"),
    pytest.param({"data": {LONG: 1}}, "data", "field name", id="string-field-name"),
    pytest.param({"data": {"x": {"$in": list(range(MAX_LIST + 1))}}}, "data.x.$in", "at most",
                 id="list-in"),
    pytest.param({"data": {"x": list(range(MAX_LIST + 1))}}, "data.x", "at most",
                 id="list-filter-list"),
    pytest.param({"data": {"x": {"$or": list(range(MAX_LIST + 1))}}}, "data.x.$or", "at most",
                 id="list-or"),
    pytest.param({"data": {"x": {"$in": ["y" * MAX_STRING] * (MAX_BYTES // MAX_STRING + 1)}}},
                 "", "bytes", id="bytes"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "path", "word"), REFUSALS)
def test_refused(document, path, word):
    error = refused(document)
    assert isinstance(error, ValueError)
    assert error.path == path
    assert word in error.problem
    assert str(error) == (f"{path}: {error.problem}" if path else error.problem)


# The limits on the filter's size and shape; where the error is raised depends on the walk,
# so these assert the part of the path that must be named.
LIMITS = [
    pytest.param({"data": {f"f{i}": i for i in range(MAX_NODES)}}, "data.f", "more than",
                 id="nodes-fields"),
    pytest.param({"data": {"x": {"$or": list(range(MAX_NODES))}}}, "data.x", "more than",
                 id="nodes-or"),
    pytest.param({"data": {"x": {"$eq": list(range(MAX_NODES))}}}, "data.x.$eq", "more than",
                 id="nodes-eq-literal"),
    pytest.param(fields(MAX_DEPTH + 1, 1), "data.a1", "deeper", id="depth-fields"),
    pytest.param(nots(MAX_DEPTH + 1), "data.x", "deeper", id="depth-not-chain"),
    pytest.param({"data": {"x": fields(MAX_DEPTH, {"$gt": 1})["data"]}}, "data.x.a1",
                 "deeper", id="depth-fields-then-operator"),
    pytest.param({"data": {"x": {"$eq": fields(MAX_DEPTH, [1])}}}, "data.x.$eq.data",
                 "deeper", id="depth-eq-literal"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "path_start", "word"), LIMITS)
def test_refused_beyond_the_limits(document, path_start, word):
    error = refused(document)
    assert error.path.startswith(path_start)
    assert word in error.problem


# Each operator is a condition and a level of nesting ("operators included", as the
# module says), whichever operator it is: today only $eq/$neq are counted.
OPERATOR_PAIRS = [
    pytest.param("$eq", "$neq", 0, id="eq-neq"),
    pytest.param("$gt", "$lt", 0, id="gt-lt"),
    pytest.param("$in", "$nin", [0], id="in-nin"),
    pytest.param("$startsWith", "$endsWith", "a", id="startswith-endswith"),
]


@pytest.mark.parametrize(("first", "second", "value"), OPERATOR_PAIRS)
def test_more_than_max_nodes_operator_conditions_are_refused(first, second, value):
    document = {
        "data": {f"f{i}": {first: value, second: value} for i in range(MAX_NODES // 2 + 1)}
    }
    assert "more than" in refused(document).problem


@pytest.mark.parametrize(
    "leaf",
    [{"$eq": 1}, {"$gt": 1}, {"$in": [1]}, {"$startsWith": "a"}],
    ids=["eq", "gt", "in", "startswith"],
)
def test_an_operator_is_a_level_of_nesting(leaf):
    # A plain value at the end of MAX_DEPTH path segments is within the limit; an
    # operator there is one level more.
    assert compile_filter(fields(MAX_DEPTH, 1)) is not None
    assert "deeper" in refused(fields(MAX_DEPTH, leaf)).problem


def test_very_deep_nesting_is_refused_as_a_filter_error():
    value = 1
    for _ in range(5_000):
        value = {"a": value}
    assert "deeper" in refused({"data": value}).problem


def test_long_object_keys_in_an_eq_literal_are_refused():
    error = refused({"data": {"x": {"$eq": {LONG: 1}}}})
    assert error.path.startswith("data.x.$eq")
    assert "longer" in error.problem


WITHIN_LIMITS = [
    pytest.param({"data": {"x": {"$in": list(range(MAX_LIST))}}}, {"x": MAX_LIST - 1},
                 id="max-list-in"),
    pytest.param({"data": {"x": "y" * MAX_STRING}}, {"x": "y" * MAX_STRING},
                 id="max-string"),
    pytest.param({"data": {"y" * MAX_STRING: 1}}, {"y" * MAX_STRING: 1},
                 id="max-string-field-name"),
    pytest.param(fields(MAX_DEPTH, 1), fields(MAX_DEPTH, 1)["data"], id="max-depth-fields"),
    pytest.param({"data": {f"f{i}": i for i in range(MAX_NODES // 2)}},
                 {f"f{i}": i for i in range(MAX_NODES // 2)}, id="half-max-nodes"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "data"), WITHIN_LIMITS)
def test_within_the_limits_is_accepted(document, data):
    compiled = compile_filter(document)
    assert compiled.matches(subject(data=data))


# --- explain() -------------------------------------------------------------------------------

EXPLANATIONS = [
    pytest.param({"data": {"ref": "refs/heads/main"}}, subject(data={"ref": "refs/heads/dev"}),
                 ['data.ref is "refs/heads/dev", not "refs/heads/main"'], id="equality"),
    pytest.param({"data": {"ref": "refs/heads/main"}}, subject(data={}),
                 ['data.ref is missing, not "refs/heads/main"'], id="missing"),
    pytest.param({"data": {"amount": {"$gt": 10000}}}, subject(data={"amount": 500}),
                 ["data.amount is 500, not $gt 10000"], id="comparison"),
    pytest.param({"data": {"amount": {"$gt": 10000}}}, subject(data={"amount": "15000"}),
                 ['data.amount is "15000", a string: $gt 10000 compares numbers only'],
                 id="kind-mismatch-string"),
    pytest.param({"data": {"amount": {"$gte": 1}}}, subject(data={"amount": True}),
                 ["data.amount is true, a boolean: $gte 1 compares numbers only"],
                 id="kind-mismatch-boolean"),
    pytest.param({"data": {"s": {"$in": ["paid", "refunded"]}}}, subject(data={"s": "void"}),
                 ['data.s is "void", not one of ["paid", "refunded"]'], id="in"),
    pytest.param({"data": {"s": {"$nin": ["void"]}}}, subject(data={"s": "void"}),
                 ['data.s is "void", which $nin ["void"] excludes'], id="nin"),
    pytest.param({"data": {"s": {"$neq": "a"}}}, subject(data={"s": "a"}),
                 ['data.s is "a", which $neq "a" excludes'], id="neq"),
    pytest.param({"data": {"x": {"$exist": True}}}, subject(data={}),
                 ["data.x is missing"], id="exist"),
    pytest.param({"data": {"x": {"$exist": False}}}, subject(data={"x": None}),
                 ["data.x is present (null)"], id="not-exist"),
    pytest.param({"data": {"r": {"$startsWith": "refs/"}}}, subject(data={"r": "main"}),
                 ['data.r is "main", not $startsWith "refs/"'], id="startswith"),
    pytest.param({"data": {"t": {"$eq": ["a", "b"]}}}, subject(data={"t": ["a"]}),
                 ['data.t is ["a"], not exactly ["a", "b"]'], id="eq-exact"),
    pytest.param({"data": {"tags": "vip"}}, subject(data={"tags": ["a"]}),
                 ['data.tags holds no "vip"'], id="array-plain"),
    pytest.param({"data": {"p": {"$gt": 100}}}, subject(data={"p": [1, 2]}),
                 ["data.p holds no element $gt 100"], id="array-comparison"),
    pytest.param({"data": {"lines": {"sku": "A1"}}}, subject(data={"lines": [{"sku": "B"}]}),
                 ['no element of data.lines matches: data.lines[0].sku is "B", not "A1"'],
                 id="array-of-objects"),
    pytest.param({"data": {"lines": {"sku": "A1"}}}, subject(data={"lines": []}),
                 ["data.lines is an empty list"], id="array-of-objects-empty"),
    pytest.param({"data": {"tags": ["a", "b"]}}, subject(data={"tags": "a"}),
                 ['data.tags is "a", not a list'], id="filter-list-vs-scalar"),
    pytest.param({"data": {"tags": ["a", "b"]}}, subject(data={"tags": ["a"]}),
                 ["data.tags holds nothing matching item 1 of the filter's list"],
                 id="filter-list-item-absent"),
    pytest.param({"headers": {"X-Shop-Domain": "a.com"}},
                 subject(data={}, headers={"X-Shop-Domain": "b.com"}),
                 ['headers.x-shop-domain is "b.com", not "a.com"'], id="header"),
    pytest.param({"source": "github", "data": {"n": 1, "m": 2}},
                 subject(data={"n": 1, "m": 3}, source="shop"),
                 ['source is "shop", not "github"', "data.m is 3, not 2"],
                 id="each-failed-condition-only"),
    pytest.param({"$or": [{"source": "github"}, {"type": "push"}]}, subject(data={}),
                 ['none of the 2 $or alternatives held: source is "shop", not "github"; '
                  'type is "order.created", not "push"'], id="or"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "event", "reasons"), EXPLANATIONS)
def test_explain(document, event, reasons):
    compiled = compile_filter(document)
    assert compiled.matches(event) is False
    assert compiled.explain(event) == reasons


def test_explain_shortens_long_arrays_of_objects():
    lines = [{"sku": f"S{i}"} for i in range(10)]
    [reason] = compile_filter({"data": {"lines": {"sku": "A1"}}}).explain(
        subject(data={"lines": lines})
    )
    assert reason.startswith("no element of data.lines matches (7 more not shown): ")
    assert 'data.lines[2].sku is "S2", not "A1"' in reason
    assert "data.lines[3]" not in reason


def test_explain_of_a_top_level_not_names_what_it_excludes():
    event = subject(data={}, source="shop")
    [reason] = compile_filter({"$not": {"source": "shop"}}).explain(event)
    assert reason.startswith(("source", "the event")), reason


# --- Bounded cost ----------------------------------------------------------------------------

LINES = [{"sku": f"S{i}", "qty": i % 7, "tags": ["x", f"t{i}"]} for i in range(10_000)]

# A guard against exponential behaviour, not a benchmark: 2 s is generous.
COSTLY = [
    pytest.param({"data": {"lines": {"sku": "nope"}}}, id="field-on-array"),
    pytest.param({"data": {"lines": {"$or": [{"sku": f"Z{i}"} for i in range(20)]}}},
                 id="or-of-fields-on-array"),
    pytest.param({"data": {"lines": [{"sku": f"Z{i}"} for i in range(20)]}},
                 id="filter-list-on-array"),
    pytest.param({"data": {"lines": {"tags": {"$in": [f"z{i}" for i in range(MAX_LIST)]}}}},
                 id="in-on-nested-arrays"),
    pytest.param({"$not": {"data": {"lines": {"qty": {"$lt": 100}}}}}, id="not-on-array"),
    pytest.param({"data": {"lines": {"$and": [{"$not": {"sku": "S5"}}, {"qty": 99}]}}},
                 id="and-not-on-array"),
    pytest.param({"$or": [{"data": {"lines": {"sku": {"$or": [{"$or": ["Z"]}]}}}}] * 5},
                 id="nested-or"),
]  # fmt: skip


def seconds(call, *args):
    started = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - started


@pytest.mark.parametrize("document", COSTLY)
def test_a_large_payload_is_evaluated_quickly(document):
    compiled = compile_filter(document)
    event = subject(data={"lines": LINES})
    matched, took = seconds(compiled.matches, event)
    assert matched is False
    assert took < 2
    reasons, took = seconds(compiled.explain, event)
    assert reasons != []
    assert took < 2


def test_a_filter_at_the_limits_is_evaluated_quickly():
    # Within every limit: MAX_NODES - 10 alternatives, each tried on each element of each
    # line's tags.
    document = {"data": {"lines": {"tags": {"$or": [f"z{i}" for i in range(MAX_NODES - 10)]}}}}
    compiled = compile_filter(document)
    matched, took = seconds(compiled.matches, subject(data={"lines": LINES}))
    assert matched is False
    assert took < 2
