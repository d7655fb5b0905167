"""Filters as SQL: which plans are exact, and that values never become SQL text.

Whether plans return the right keys is checked against MongoDB's semantics by the differential
test (``test_filter_vs_mongo.py``); this module pins the plan shapes the index relies on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from s3idx.query.filter import parse_filter
from s3idx.query.sql import MAX_TERMS, compile_filter, index_rows, sql_values
from s3idx.query.values import TypeClass

KEY = "id"
FIELDS = ("a", "b.c", "tags", "a.0")


def plan(flt: dict[str, Any]) -> Any:
    return compile_filter(parse_filter(flt), key_field=KEY, fields=FIELDS)


@pytest.mark.parametrize(
    "flt",
    [
        {"a": 5},
        {"a": None},
        {"a": {"$in": [1, "x", None, [1], {"z": 1}]}},
        {"a": {"$gt": 5, "$lte": 9.5}},
        {"a": {"$gte": None}},
        {"a": {"$exists": True}},
        {"a": {"$exists": False}},
        {"a": {"$ne": "x"}},
        {"a": {"$nin": [1, 2]}},
        {"a": {"$not": {"$lt": datetime(2024, 1, 1, tzinfo=UTC)}}},
        {"a": {"$all": [1, 2]}},
        {"a": {"$gt": True}},
        {"b.c": {"x": [1, 2]}},
        {"a.0": 3},
        {KEY: "k1"},
        {KEY: {"$gt": "k", "$lt": "l"}},
        {KEY: {"$in": ["a", "b", 3]}},
        {KEY: 5},
        {KEY: {"$exists": True}},
        {"$or": [{"a": 1}, {"tags": "x"}], "b.c": {"$ne": None}},
        {"$nor": [{"a": 1}, {KEY: "k"}]},
    ],
)
def test_exact_plans(flt: dict[str, Any]) -> None:
    assert plan(flt).exact


@pytest.mark.parametrize(
    "flt",
    [
        {"other": 1},  # not a searchable field
        {"a.b": 1},  # a sub-path of a searchable field is not searchable
        {"a": {"$regex": "^x"}},
        {"a": {"$size": 2}},
        {"a": {"$elemMatch": {"$gt": 1}}},
        {"a": {"$gt": [1]}},  # arrays and documents do not order as their text does
        {"a": {"$lt": {"x": 1}}},
        {"a": 2**63},  # beyond 64 bits the side table holds rounded floats
        {"a": {"$gt": 1e19}},
        {"a": {"$not": {"$regex": "x"}}},
        {"$or": [{"a": 1}, {"other": 1}]},
    ],
)
def test_plans_to_recheck(flt: dict[str, Any]) -> None:
    assert not plan(flt).exact


def test_plans_that_need_no_query() -> None:
    assert plan({}).is_all and plan({}).exact
    assert plan({"a": {"$in": []}}).is_none
    assert plan({"a": {"$all": []}}).is_none
    assert plan({"a": {"$lt": None}}).is_none
    assert plan({KEY: None}).is_none
    assert plan({KEY: {"$size": 1}}).is_none
    assert plan({"$and": [{"a": 1}, {KEY: 7}]}).is_none
    assert plan({"a": {"$not": {"$in": []}}}).is_all
    assert plan({KEY: {"$exists": False}}).is_none


def test_an_and_with_unsearchable_parts_still_narrows() -> None:
    keys = plan({"a": 1, "other": 2})
    assert not keys.exact and not keys.is_all
    assert keys.params == ("a", int(TypeClass.NUMBER), 1)


def test_bounds_on_a_single_valued_field_share_a_lookup() -> None:
    flt = parse_filter({"a": {"$gte": 2, "$lt": 5}, "b.c": {"$gt": "x"}})
    separate = compile_filter(flt, key_field=KEY, fields=FIELDS)
    assert separate.terms == 3 and separate.exact
    merged = compile_filter(flt, key_field=KEY, fields=FIELDS, multikey=["b.c"])
    assert merged.terms == 2 and merged.exact
    assert merged.params[:4] == ("a", int(TypeClass.NUMBER), 2, 5)
    # Bounds of different types are never merged: no value has two types.
    mixed = parse_filter({"a": {"$gte": 2, "$lt": "x"}})
    assert compile_filter(mixed, key_field=KEY, fields=FIELDS, multikey=[]).terms == 2


def test_key_conditions_apply_to_the_key_column() -> None:
    keys = plan({KEY: {"$gt": "a", "$lte": "m"}, "a": 1})
    where, params = keys.where()
    assert where == (
        " WHERE ((key > ?) AND (key <= ?)) AND key IN (SELECT key FROM entry_values "
        "WHERE field = ? AND ((tclass = ? AND value = ?)))"
    )
    assert params == ("a", "m", "a", int(TypeClass.NUMBER), 1)
    assert plan({"$or": [{KEY: "a"}, {"a": 1}]}).exact
    assert plan({KEY: {"$ne": "a"}}).where() == (" WHERE NOT (key = ?)", ("a",))


def test_values_and_field_names_are_parameters() -> None:
    hostile = "x'); DROP TABLE entries; --"
    keys = compile_filter(
        parse_filter({hostile: hostile, "$or": [{KEY: hostile}, {"a": {"$in": [hostile]}}]}),
        key_field=KEY,
        fields=(hostile, "a"),
    )
    assert hostile not in keys.sql
    assert "DROP" not in keys.sql
    assert keys.params.count(hostile) == 4


def test_too_many_terms_fall_back_to_a_scan() -> None:
    many = {"$or": [{"a": n} for n in range(MAX_TERMS + 1)]}
    assert plan(many).is_all and not plan(many).exact
    assert not plan(many).is_none
    # A long $in stays a single term.
    assert plan({"a": {"$in": list(range(5000))}}).exact


@pytest.mark.parametrize(
    ("value", "rows"),
    [
        (None, [(5, None)]),
        (True, [(40, 1)]),
        (0, [(10, 0)]),
        (-2.5, [(10, -2.5)]),
        (2**63 - 1, [(10, 2**63 - 1)]),
        (2**64 - 1, [(10, 18446744073709549568.0), (10, 2.0**64)]),
        (2**63 + 1, [(10, 2.0**63), (10, 9223372036854777856.0)]),
        ("x", [(15, "x")]),
        (datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC), [(45, 1500)]),
        (datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), [(45, -1)]),
        ({"b": 1.0, "a": [2.5, None]}, [(20, '{"b":1,"a":[2.5,null]}')]),
        ([], [(25, "[]")]),
    ],
)
def test_sql_values(value: Any, rows: list[tuple[int, Any]]) -> None:
    assert sql_values(value) == rows


def test_index_rows_follow_the_matcher() -> None:
    entry = {"a": [1, 1.0, [2]], "b": [{"c": "x"}, {}, 5], "tags": []}
    assert index_rows(entry, ["a", "b.c", "tags", "missing"]) == [
        ("a", 10, 1),
        ("a", 25, "[2]"),
        ("a", 25, "[1,1,[2]]"),
        ("b.c", 15, "x"),
        ("b.c", 0, None),
        ("tags", 25, "[]"),
        ("missing", 0, None),
    ]
