"""Filter validation and MongoDB matching semantics, with exact expected values.

Where a case is subtle, the comment names the MongoDB source of the expectation: the manual, or
the server's own tests (``jstests/core/query/null_query_semantics.js`` as of MongoDB 8.x).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from s3idx.errors import InvalidFilterError, UsageError
from s3idx.query.filter import parse_filter


def matches(flt: dict[str, Any], document: dict[str, Any]) -> bool:
    return parse_filter(flt).matches(document)


def matching(flt: dict[str, Any], documents: dict[str, dict[str, Any]]) -> set[str]:
    parsed = parse_filter(flt)
    return {name for name, document in documents.items() if parsed.matches(document)}


# --- null and missing: MongoDB's null_query_semantics.js (without `undefined`) -------------

NULL_DOCS: dict[str, dict[str, Any]] = {
    "a_empty_subobject": {"a": {}},
    "a_null": {"a": None},
    "a_number": {"a": 4},
    "a_subobject_b_not_null": {"a": {"b": "hi"}},
    "a_subobject_b_null": {"a": {"b": None}},
    "no_a": {},
    "a_double_array": {"a": [[]]},
    "a_empty_array": {"a": []},
    "a_object_array_no_b_nulls": {"a": [{"b": 1}, {"b": 3}, {"b": "string"}]},
    "a_object_array_some_b_nulls": {"a": [{"b": None}, {"b": 3}, {"b": None}]},
    "a_object_array_some_b_missing": {"a": [{"b": 3}, {}]},
    "a_value_array_all_nulls": {"a": [None, None]},
    "a_value_array_no_nulls": {"a": [1, "string", 4]},
    "a_value_array_with_null": {"a": [1, "string", None, 4]},
}
A_NOT_NULL = {
    "a_double_array",
    "a_empty_array",
    "a_empty_subobject",
    "a_number",
    "a_object_array_no_b_nulls",
    "a_object_array_some_b_nulls",
    "a_object_array_some_b_missing",
    "a_subobject_b_not_null",
    "a_subobject_b_null",
    "a_value_array_no_nulls",
}
A_B_NULL = {
    "a_empty_subobject",
    "a_null",
    "a_number",
    "a_subobject_b_null",
    "no_a",
    "a_object_array_some_b_nulls",
    "a_object_array_some_b_missing",
}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"a": None}, {"a_null", "no_a", "a_value_array_all_nulls", "a_value_array_with_null"}),
        (
            {"a": {"$eq": None}},
            {"a_null", "no_a", "a_value_array_all_nulls", "a_value_array_with_null"},
        ),
        ({"a": {"$ne": None}}, A_NOT_NULL),
        ({"a": {"$not": {"$gte": None}}}, A_NOT_NULL),
        (
            {"a": {"$in": [None, 75]}},
            {"a_null", "no_a", "a_value_array_all_nulls", "a_value_array_with_null"},
        ),
        ({"a": {"$nin": [None, 75]}}, A_NOT_NULL),
        (
            {"a": {"$nin": [None, []]}},
            A_NOT_NULL - {"a_double_array", "a_empty_array"},
        ),
        ({"a": {"$exists": False}}, {"no_a"}),
        ({"a.b": None}, A_B_NULL),
        ({"a.b": {"$in": [None, 75]}}, A_B_NULL),
        ({"$or": [{"a.b": None}, {"a.b": 75}]}, A_B_NULL),
        ({"a.b": {"$ne": None}}, set(NULL_DOCS) - A_B_NULL),
        ({"a.b": {"$nin": [None, 75]}}, set(NULL_DOCS) - A_B_NULL),
        # The jstest pins this without arrays; arrays holding no document have no "a.b" either.
        (
            {"a.b": {"$exists": False}},
            {"no_a", "a_empty_subobject", "a_null", "a_number"}
            | {"a_double_array", "a_empty_array", "a_value_array_all_nulls"}
            | {"a_value_array_no_nulls", "a_value_array_with_null"},
        ),
        (
            {"a": {"$elemMatch": {"$eq": None}}},
            {"a_value_array_all_nulls", "a_value_array_with_null"},
        ),
        (
            {"a": {"$elemMatch": {"$ne": None}}},
            {
                "a_double_array",
                "a_object_array_no_b_nulls",
                "a_object_array_some_b_nulls",
                "a_object_array_some_b_missing",
                "a_value_array_no_nulls",
                "a_value_array_with_null",
            },
        ),
        # An element that is an array counts as a document with fields "0", "1", ...
        (
            {"a": {"$elemMatch": {"b": {"$eq": None}}}},
            {"a_double_array", "a_object_array_some_b_nulls", "a_object_array_some_b_missing"},
        ),
        (
            {"a": {"$elemMatch": {"b": {"$ne": None}}}},
            {
                "a_object_array_no_b_nulls",
                "a_object_array_some_b_nulls",
                "a_object_array_some_b_missing",
            },
        ),
        ({"a.b": {"$elemMatch": {"$eq": None}}}, set()),
    ],
)
def test_null_semantics_as_mongodb_tests_them(flt: dict[str, Any], expected: set[str]) -> None:
    assert matching(flt, NULL_DOCS) == expected


# --- equality --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flt", "document", "expected"),
    [
        ({"a": 5}, {"a": 5}, True),
        ({"a": 5}, {"a": 5.0}, True),
        ({"a": 5.5}, {"a": 5}, False),
        ({"a": 5}, {"a": [1, 5]}, True),
        ({"a": 5}, {"a": [[5]]}, False),
        ({"a": [1, 2]}, {"a": [1, 2]}, True),
        ({"a": [1, 2]}, {"a": [2, 1]}, False),
        ({"a": [1, 2]}, {"a": [[1, 2], 3]}, True),
        ({"a": [1]}, {"a": 1}, False),
        ({"a": []}, {"a": []}, True),
        ({"a": []}, {"a": [[]]}, True),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 2}}, True),
        # Field order matters to MongoDB's document equality.
        ({"a": {"b": 1, "c": 2}}, {"a": {"c": 2, "b": 1}}, False),
        ({"a": {"b": 1}}, {"a": {"b": 1.0}}, True),
        ({"a": {}}, {"a": {}}, True),
        ({"a": {}}, {}, False),
        # Booleans are not numbers.
        ({"a": 1}, {"a": True}, False),
        ({"a": True}, {"a": 1}, False),
        ({"a": 0}, {"a": False}, False),
        ({"a": "1"}, {"a": 1}, False),
        ({"a": "x"}, {"a": ["x", "y"]}, True),
        ({"a.b": 2}, {"a": [{"b": 1}, {"b": 2}]}, True),
        ({"a.b": 2}, {"a": [{"b": [1, 2]}]}, True),
        ({"a.1": "y"}, {"a": ["x", "y"]}, True),
        ({"a.1": "y"}, {"a": ["y", "x"]}, False),
        ({"a.0.b": 1}, {"a": [{"b": 1}, {"b": 2}]}, True),
        ({"a.1.b": 1}, {"a": [{"b": 1}, {"b": 2}]}, False),
    ],
)
def test_equality(flt: dict[str, Any], document: dict[str, Any], expected: bool) -> None:
    assert matches(flt, document) is expected


def test_datetimes_compare_with_datetimes_only() -> None:
    when = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    document = {"t": when, "s": "2024-05-01T12:00:00.123Z", "n": 1714564800123}
    assert matches({"t": when}, document)
    assert matches({"t": {"$date": "2024-05-01T12:00:00.123Z"}}, document)
    assert not matches({"s": when}, document)
    assert not matches({"n": when}, document)
    assert not matches({"t": {"$gt": 0}}, document)
    assert matches({"t": {"$gt": datetime(2024, 1, 1, tzinfo=UTC)}}, document)
    # Filter datetimes get the millisecond precision entries have.
    assert matches({"t": datetime(2024, 5, 1, 12, 0, 0, 123999, tzinfo=UTC)}, document)


# --- comparisons -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flt", "document", "expected"),
    [
        ({"a": {"$gt": 5}}, {"a": 6}, True),
        ({"a": {"$gt": 5}}, {"a": 5.5}, True),
        ({"a": {"$gt": 5}}, {"a": 5}, False),
        ({"a": {"$gte": 5}}, {"a": 5.0}, True),
        ({"a": {"$lt": 5}}, {"a": 4.999}, True),
        ({"a": {"$lte": 5}}, {"a": 5}, True),
        # Type bracketing: no comparison across type classes.
        ({"a": {"$gt": 5}}, {"a": "6"}, False),
        ({"a": {"$lt": "5"}}, {"a": 4}, False),
        ({"a": {"$gt": 0}}, {"a": True}, False),
        ({"a": {"$gt": False}}, {"a": True}, True),
        ({"a": {"$lt": 5}}, {"a": None}, False),
        ({"a": {"$lt": 5}}, {}, False),
        ({"a": {"$gt": "abc"}}, {"a": "abd"}, True),
        ({"a": {"$gt": "abc"}}, {"a": "ab"}, False),
        ({"a": {"$gt": "Z"}}, {"a": "a"}, True),
        ({"a": {"$gt": "é"}}, {"a": "z"}, False),
        # Arrays: any element, or the whole array against an array.
        ({"a": {"$gt": 5}}, {"a": [1, 7]}, True),
        ({"a": {"$gt": 5}}, {"a": [1, 2]}, False),
        ({"a": {"$gt": 5, "$lt": 3}}, {"a": [1, 7]}, True),
        ({"a": {"$gt": [1]}}, {"a": [2]}, True),
        ({"a": {"$gt": [1]}}, {"a": [[2]]}, True),
        ({"a": {"$gt": [1, 2]}}, {"a": [1, 2, 0]}, True),
        ({"a": {"$lt": [1, 2]}}, {"a": [1]}, True),
        ({"a": {"$gt": []}}, {"a": 5}, False),
        # Documents compare field by field: type class, then name, then value.
        ({"a": {"$gt": {"b": 1}}}, {"a": {"b": 2}}, True),
        ({"a": {"$gt": {"b": 1}}}, {"a": {"c": 0}}, True),
        ({"a": {"$gt": {"b": "x"}}}, {"a": {"c": 1}}, False),
        ({"a": {"$gt": {"b": 1}}}, {"a": {"b": 1, "c": 0}}, True),
        ({"a": {"$gte": {}}}, {"a": {}}, True),
        # null: $gte/$lte null match null and missing; $gt/$lt null match nothing.
        ({"a": {"$gte": None}}, {}, True),
        ({"a": {"$lte": None}}, {"a": None}, True),
        ({"a": {"$gt": None}}, {"a": None}, False),
        ({"a": {"$lt": None}}, {"a": 1}, False),
    ],
)
def test_comparison(flt: dict[str, Any], document: dict[str, Any], expected: bool) -> None:
    assert matches(flt, document) is expected


# --- negations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flt", "document", "expected"),
    [
        ({"a": {"$ne": 5}}, {}, True),
        ({"a": {"$ne": 5}}, {"a": [1, 5]}, False),
        ({"a": {"$ne": 5}}, {"a": [1, 2]}, True),
        ({"a": {"$nin": [1, 2]}}, {"a": [3, 2]}, False),
        ({"a": {"$nin": [1, 2]}}, {}, True),
        ({"a": {"$not": {"$gt": 5}}}, {"a": 3}, True),
        ({"a": {"$not": {"$gt": 5}}}, {"a": "x"}, True),
        ({"a": {"$not": {"$gt": 5}}}, {"a": [3, 7]}, False),
        ({"a": {"$not": {"$gt": 1, "$lt": 5}}}, {"a": 3}, False),
        ({"a": {"$not": {"$gt": 1, "$lt": 5}}}, {"a": 7}, True),
        ({"a": {"$not": {"$regex": "^x"}}}, {"a": "xy"}, False),
        ({"a": {"$not": {"$regex": "^x"}}}, {"a": 1}, True),
        ({"$nor": [{"a": 1}, {"b": 2}]}, {"a": 2, "b": 3}, True),
        ({"$nor": [{"a": 1}, {"b": 2}]}, {"a": 2, "b": 2}, False),
        ({"a": {"$exists": True}}, {"a": None}, True),
        ({"a": {"$exists": False}}, {"a": None}, False),
        ({"a": {"$exists": 0}}, {}, True),
        ({"a.b": {"$exists": True}}, {"a": [{"c": 1}, {"b": None}]}, True),
        ({"a.b": {"$exists": True}}, {"a": [1, 2]}, False),
    ],
)
def test_negation(flt: dict[str, Any], document: dict[str, Any], expected: bool) -> None:
    assert matches(flt, document) is expected


# --- $regex, $all, $size, $elemMatch, logic ------------------------------------------------


@pytest.mark.parametrize(
    ("flt", "document", "expected"),
    [
        ({"a": {"$regex": "b"}}, {"a": "abc"}, True),
        ({"a": {"$regex": "^b"}}, {"a": "abc"}, False),
        ({"a": {"$regex": "^B", "$options": "i"}}, {"a": "bcd"}, True),
        ({"a": {"$options": "i", "$regex": "^B"}}, {"a": "bcd"}, True),
        ({"a": {"$regex": "^c$", "$options": "m"}}, {"a": "b\nc"}, True),
        ({"a": {"$regex": "b.c", "$options": "s"}}, {"a": "b\nc"}, True),
        ({"a": {"$regex": "b c # comment", "$options": "x"}}, {"a": "bc"}, True),
        ({"a": {"$regex": "^x"}}, {"a": ["y", "xz"]}, True),
        ({"a": {"$regex": "1"}}, {"a": 1}, False),
        ({"a": {"$regex": ""}}, {}, False),
        ({"a": {"$all": [1, 2]}}, {"a": [2, 3, 1]}, True),
        ({"a": {"$all": [1, 2]}}, {"a": [2, 3]}, False),
        ({"a": {"$all": [1]}}, {"a": 1}, True),
        ({"a": {"$all": [[1, 2]]}}, {"a": [[1, 2], 3]}, True),
        ({"a": {"$all": []}}, {"a": []}, False),
        ({"a.b": {"$all": [1, 2]}}, {"a": [{"b": 1}, {"b": 2}]}, True),
        ({"a": {"$size": 2}}, {"a": [1, [2, 3]]}, True),
        ({"a": {"$size": 2}}, {"a": [[1, 2]]}, False),
        ({"a": {"$size": 0}}, {"a": []}, True),
        ({"a": {"$size": 0}}, {}, False),
        ({"a": {"$size": 1}}, {"a": "x"}, False),
        ({"a": {"$size": 2.0}}, {"a": [1, 2]}, True),
        ({"a.b": {"$size": 1}}, {"a": [{"b": [9]}, {"b": 2}]}, True),
        ({"a": {"$elemMatch": {"$gt": 1, "$lt": 5}}}, {"a": [0, 9, 3]}, True),
        ({"a": {"$elemMatch": {"$gt": 1, "$lt": 5}}}, {"a": [0, 9]}, False),
        ({"a": {"$elemMatch": {"$gt": 1}}}, {"a": 5}, False),
        ({"a": {"$elemMatch": {"$gt": 1}}}, {"a": [[5]]}, False),
        ({"a": {"$elemMatch": {"$not": {"$gt": 1}}}}, {"a": [5, 0]}, True),
        ({"a": {"$elemMatch": {"$elemMatch": {"$eq": 5}}}}, {"a": [[5]]}, True),
        ({"a": {"$elemMatch": {"$size": 1}}}, {"a": [[5], 1]}, True),
        ({"a": {"$elemMatch": {"$all": [5]}}}, {"a": [[5]]}, False),
        ({"a": {"$elemMatch": {"$exists": True}}}, {"a": [None]}, True),
        ({"a": {"$elemMatch": {"$exists": True}}}, {"a": []}, False),
        ({"a": {"$elemMatch": {"x": 1, "y": 2}}}, {"a": [{"x": 1}, {"y": 2}]}, False),
        ({"a": {"$elemMatch": {"x": 1, "y": 2}}}, {"a": [{"x": 1, "y": 2}]}, True),
        ({"a": {"$elemMatch": {"x": {"$gt": 1}}}}, {"a": [{"x": [0, 5]}]}, True),
        ({"a": {"$elemMatch": {"$or": [{"x": 1}, {"y": 1}]}}}, {"a": [{"y": 1}]}, True),
        ({"a": {"$elemMatch": {"0": 5}}}, {"a": [[5, 6]]}, True),
        ({"a": {"$elemMatch": {}}}, {"a": [1, {}]}, True),
        ({"a": {"$elemMatch": {}}}, {"a": [1, 2]}, False),
        ({"a.b": {"$elemMatch": {"$eq": 1}}}, {"a": [{"b": [1]}, {"b": 2}]}, True),
        ({"$and": [{"a": 1}, {"b": 2}]}, {"a": 1, "b": 2}, True),
        ({"$and": [{"a": 1}, {"b": 2}]}, {"a": 1}, False),
        ({"$or": [{"a": 1}, {"b": 2}]}, {"b": 2}, True),
        ({"$or": [{"a": 1}, {"$and": [{"b": 2}, {"c": 3}]}]}, {"b": 2, "c": 3}, True),
        ({"a": 1, "b": 2}, {"a": 1, "b": 3}, False),
        ({}, {"anything": 1}, True),
        ({"$and": [{}]}, {}, True),
    ],
)
def test_operators(flt: dict[str, Any], document: dict[str, Any], expected: bool) -> None:
    assert matches(flt, document) is expected


@pytest.mark.parametrize(
    ("spec", "document", "expected"),
    [
        ("string", {"a": "x"}, True),
        ("string", {"a": ["x", 1]}, True),
        ("string", {"a": 1}, False),
        ("number", {"a": 1.5}, True),
        ("number", {"a": True}, False),
        ("int", {"a": 7}, True),
        ("int", {"a": 2**40}, False),
        ("long", {"a": 2**40}, True),
        ("double", {"a": 7}, False),
        ("array", {"a": []}, True),
        ("array", {"a": [[1]]}, True),
        ("array", {"a": 1}, False),
        ("null", {"a": None}, True),
        ("null", {}, False),
        ("bool", {"a": [1, False]}, True),
        (9, {"a": datetime(2020, 1, 1, tzinfo=UTC)}, True),
        (["string", "null"], {"a": None}, True),
        ("object", {"a": {"b": 1}}, True),
    ],
)
def test_type(spec: Any, document: dict[str, Any], expected: bool) -> None:
    # As MongoDB's $type does: BSON types as pymongo writes Python values.
    assert matches({"a": {"$type": spec}}, document) is expected


# --- validation ------------------------------------------------------------------------------

SUPPORTED = (
    "supported: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists, $and, $or, $nor, $not, "
    "$regex, $options, $all, $size, $type, $elemMatch"
)


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        ({"$where": "this.a == 1"}, f"unknown query operator '$where'; {SUPPORTED}"),
        ({"a": {"$mod": [2, 0]}}, f"unknown query operator '$mod'; {SUPPORTED}"),
        (
            {"a": {"$type": "decimal128"}},
            "unknown $type 'decimal128'; known types: number, double, "
            "string, object, array, bool, date, null, int, long, decimal, binData, undefined, "
            "objectId, regex, dbPointer, javascript, symbol, javascriptWithScope, timestamp, "
            "minKey, maxKey",
        ),
        ({"a": {"$type": []}}, "$type needs at least one type"),
        ({"a": {"$not": {"$mod": [2, 0]}}}, f"unknown query operator '$mod'; {SUPPORTED}"),
        ({"a": {"$elemMatch": {"$near": 1}}}, f"unknown query operator '$near'; {SUPPORTED}"),
        ({"$or": [{"a": {"$expr": 1}}]}, f"unknown query operator '$expr'; {SUPPORTED}"),
        (
            {"$gt": 5},
            '$gt applies to a field, as in {"field": {"$gt": ...}}; '
            "it cannot stand at the top level of a filter",
        ),
        (
            {"a": {"$or": [1]}},
            "$or cannot be applied to the field 'a'; use it at the top level: "
            '{"$or": [{"a": ...}, ...]}',
        ),
        ({"a": {"$in": 5}}, "$in needs an array, got a number (5)"),
        ({"a": {"$nin": {"x": 1}}}, "$nin needs an array, got an object"),
        ({"a": {"$all": "x"}}, "$all needs an array, got a string ('x')"),
        (
            {"a": {"$in": [{"$regex": "^x"}]}},
            "$in takes plain values only, not operator objects such as {'$regex': '^x'}",
        ),
        ({"$and": []}, "$and needs a non-empty array of filter objects, got an array"),
        ({"$or": {"a": 1}}, "$or needs a non-empty array of filter objects, got an object"),
        ({"$nor": [1]}, "each element of $nor must be a JSON object, got a number (1)"),
        ({"a": {"$size": -1}}, "$size needs a non-negative integer, got -1"),
        ({"a": {"$size": 1.5}}, "$size needs a non-negative integer, got 1.5"),
        ({"a": {"$size": "2"}}, "$size needs a non-negative integer, got a string ('2')"),
        ({"a": {"$size": True}}, "$size needs a non-negative integer, got a boolean (true)"),
        ({"a": {"$exists": "yes"}}, "$exists needs true or false, got a string ('yes')"),
        ({"a": {"$exists": None}}, "$exists needs true or false, got null"),
        ({"a": {"$regex": 5}}, "$regex needs a string, got a number (5)"),
        (
            {"a": {"$regex": "x", "$options": "g"}},
            "invalid $options flag 'g'; supported: i, m, s, x, u",
        ),
        ({"a": {"$options": "i"}}, "$options on 'a' needs a $regex beside it"),
        (
            {"a": {"$regex": "("}},
            "invalid $regex '(': missing ) at position 1",
        ),
        (
            {"a": {"$not": 5}},
            '$not needs an object of operators, such as {"$gt": 5} or {"$regex": "^a"}, '
            "got a number (5)",
        ),
        (
            {"a": {"$not": {"b": 1}}},
            '$not needs an object of operators, such as {"$gt": 5} or {"$regex": "^a"}, '
            "got an object",
        ),
        ({"a": {"$elemMatch": 1}}, "$elemMatch needs an object, got a number (1)"),
        (
            {"a": {"$gt": 1, "b": 2}},
            "the condition on 'a' mixes operators with the field 'b'; "
            'to compare with a document, use {"$eq": {...}}',
        ),
        ({"a..b": 1}, "invalid field path 'a..b': empty part"),
        ({"a": {"$date": "yesterday"}}, "invalid $date value: 'yesterday' (expected ISO-8601)"),
        ({"a": float("nan")}, "nan is not a JSON number and cannot be compared"),
    ],
)
def test_invalid_filters_say_what_is_wrong(flt: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidFilterError) as caught:
        parse_filter(flt)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("flt", "kind"),
    [([], "an array"), ("a", "a string ('a')"), (None, "null"), (3, "a number (3)")],
)
def test_filter_must_be_an_object(flt: Any, kind: str) -> None:
    with pytest.raises(InvalidFilterError) as caught:
        parse_filter(flt)
    assert caught.value.message == f"filter must be a JSON object, got {kind}"


def test_invalid_filter_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        parse_filter({"$where": "1"})


def test_literal_documents_with_dollar_names_need_eq() -> None:
    # {"a": {"$gt": 1}} is an operator; a document holding such a name is compared via $eq.
    assert matches({"a": {"$eq": {"$gt": 1}}}, {"a": {"$gt": 1}})
    assert not matches({"a": {"$gt": 1}}, {"a": {"$gt": 1}})


def test_a_parsed_filter_is_a_value() -> None:
    """Parsed filters are immutable values: equal (and hashed alike) when they say the same,
    shown with their parts, refusing changes."""
    spec = {"a": {"$in": [1, None]}, "b": {"$regex": "^x", "$options": "i"}, "c": {"$gt": 3}}
    first, second = parse_filter(spec), parse_filter(dict(spec))
    assert first == second and hash(first) == hash(second)
    assert first != parse_filter({**spec, "c": {"$gt": 4}})
    assert first != parse_filter({**spec, "c": {"$gte": 3}})
    assert repr(parse_filter({"a.b": {"$ne": 5}})) == (
        "Filter(expr=Not(child=PathCondition(path='a.b', parts=('a', 'b'), predicate=Eq(value=5))))"
    )
    with pytest.raises(AttributeError):
        first.expr = second.expr


@pytest.mark.parametrize(
    ("flt", "everything"),
    [
        ({}, True),
        ({"$and": [{}, {}]}, True),
        ({"$or": [{"a": 1}, {"$and": [{}]}]}, True),
        ({"a": {"$nin": []}}, True),
        ({"$nor": [{"a": {"$all": []}}]}, True),
        ({"$nor": [{"$or": [{"a": {"$in": []}}, {"b": {"$in": []}}]}]}, True),
        ({"a": {"$not": {"$not": {"$nin": []}}}}, True),
        ({"a": 1}, False),
        ({"$or": [{"a": 1}]}, False),
        ({"a": {"$exists": True}}, False),  # holds for some documents only
        ({"$nor": [{}]}, False),  # matches nothing
        ({"$nor": [{"$or": [{"a": {"$in": []}}, {"b": 1}]}]}, False),
        ({"a": {"$in": []}}, False),
        ({"$and": [{}, {"a": 1}]}, False),
    ],
)
def test_matches_everything_by_form_alone(flt: dict[str, Any], everything: bool) -> None:
    assert parse_filter(flt).matches_everything() is everything
