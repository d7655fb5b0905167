"""The index protocol: every index backend must pass every test here.

Filters, projections and sorts follow MongoDB's semantics (the protocol promises a
MongoDB-style filter), so these tests pin what MongoDB does; a backend that cannot match it
records a known gap in ``conftest.KNOWN_GAPS`` instead of weakening a test.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from s3idx.errors import (
    DamagedIndexError,
    ExitStatus,
    IndexSettingsError,
    InvalidFilterError,
    S3idxError,
)
from s3idx.index.base import (
    Bookkeeping,
    Entry,
    Index,
    IndexRebuild,
    IndexSettings,
    PutIntent,
    Version,
)
from s3idx.index.ferretdb_filter import null_on_a_dotted_path
from s3idx.index.mongo import compares_a_document, ferretdb_refusal, uses_operator
from s3idx.limits import INT64_MAX
from s3idx.query.filter import parse_filter
from s3idx.query.sort import sort_entries
from s3idx.sharding import Shard
from tests.index.conftest import Tamper, tamper_with

KEY = "fs_id"
FIELDS = ("n", "s", "tags", "meta.x", "meta.arr.v", "flag", "when")
T0 = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)


def bookkeeping_of(key: str) -> dict[str, Any]:
    return {"etag": f'"etag-{key}"', "size": len(key) * 100, "sha256": "ab" * 32, "codec": "json"}


def entry(key: str, **fields: Any) -> Entry:
    """An entry as the engine builds it: key, searchable fields, last_updated, bookkeeping."""
    return {KEY: key, **fields, "last_updated": T0, "_s3idx": bookkeeping_of(key)}


A = entry(
    "a",
    n=3,
    s="apple",
    tags=["x", "y"],
    meta={"x": 1, "arr": [{"v": 1}, {"v": 5}]},
    flag=True,
    when=T0 - timedelta(days=2),
)
B = entry("b", n=1.5, s="Banana", tags=["y"], meta={"x": 2}, flag=False, when=T0)
C = entry("c", n=None, s="cherry", tags=[], meta={"x": 1})
D = entry("d", s="date", flag=1)
E = entry("e", n=10, s="elder", tags=["z", "x"], meta={"x": 3, "arr": [{"v": 2}]}, when=T0)
ENTRIES = [A, B, C, D, E]


@pytest.fixture
def filled(index: Index) -> Index:
    index.configure(KEY, FIELDS)
    index.upsert(ENTRIES)
    return index


def keys(entries: Iterable[Entry]) -> list[str]:
    return [e[KEY] for e in entries]


def by_key(entries: Iterable[Entry]) -> dict[str, Entry]:
    return {e[KEY]: e for e in entries}


def shape(value: Any) -> Any:
    """The value with every leaf replaced by its exact type: equal shapes mean equal types."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value)


def without_bookkeeping(e: Entry) -> Entry:
    return {k: v for k, v in e.items() if k != "_s3idx"}


# --- settings --------------------------------------------------------------------------------


def test_fresh_index_is_empty_and_reading_creates_no_settings(index: Index) -> None:
    assert index.settings() is None
    assert list(index.find()) == []
    assert list(index.find({"n": 1})) == []
    assert index.count() == 0
    assert index.bookkeeping(["a"]) == {}
    assert list(index.iter_bookkeeping()) == []
    assert index.delete(["a"]) == 0
    assert index.settings() is None


def test_location_names_the_index(index: Index) -> None:
    assert isinstance(index.location, str) and index.location


def test_configure_records_key_field_and_fields(index: Index, open_index: Any) -> None:
    settings = index.configure(KEY, ["n", "meta.x"])

    assert settings == IndexSettings(KEY, ("n", "meta.x"))
    assert index.settings() == settings
    assert open_index().settings() == settings  # recorded, not just remembered


def test_configure_adds_fields_to_those_recorded(index: Index) -> None:
    index.configure(KEY, ["a", "b"])

    assert index.configure(KEY, ["b", "c"]) == IndexSettings(KEY, ("a", "b", "c"))
    assert index.configure(KEY, []) == IndexSettings(KEY, ("a", "b", "c"))
    assert index.settings() == IndexSettings(KEY, ("a", "b", "c"))


def test_configure_refuses_another_key_field(index: Index) -> None:
    index.configure(KEY, ["a"])

    with pytest.raises(IndexSettingsError) as excinfo:
        index.configure("task_id", ["b"])

    assert excinfo.value.message == f"index {index.location} uses key field 'fs_id', not 'task_id'"
    assert index.settings() == IndexSettings(KEY, ("a",))  # nothing of the refused call stuck


# --- upsert ----------------------------------------------------------------------------------


def test_upsert_then_find_returns_the_entries(filled: Index) -> None:
    assert by_key(filled.find()) == by_key(ENTRIES)
    assert filled.count() == len(ENTRIES)


def test_upsert_replaces_the_whole_entry(filled: Index) -> None:
    filled.upsert([entry("a", s="avocado")])

    found = by_key(filled.find())
    assert found["a"] == entry("a", s="avocado")  # n, tags, meta... are gone, not merged
    assert found["b"] == B
    assert filled.count() == len(ENTRIES)


def test_later_entry_for_a_key_wins_within_one_call(filled: Index) -> None:
    filled.upsert([entry("x", n=1), entry("y", n=2), entry("x", n=3), entry("x", n=4)])

    found = by_key(filled.find({KEY: {"$in": ["x", "y"]}}))
    assert found == {"x": entry("x", n=4), "y": entry("y", n=2)}


def test_upsert_of_nothing_does_nothing(filled: Index) -> None:
    filled.upsert([])
    assert filled.count() == len(ENTRIES)


TYPED = entry(
    "typed",
    s='ünï\u20ac😀 "quoted" \\ \n',
    i=1,
    zero=0,
    negative=-7,
    big=2**62 + 1,
    smallest=-(2**63),
    f=1.0,
    fraction=-0.25,
    tiny=5e-324,
    t=True,
    fa=False,
    none=None,
    empty_list=[],
    empty_dict={},
    mixed=[1, 1.0, True, None, "1", {"k": [2, {"l": [3.5]}]}],
    nested={"a": {"b": {"c": [{"d": 1}]}}},
    when=datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
)


def test_types_round_trip_exactly(index: Index) -> None:
    index.configure(KEY, ["i"])
    index.upsert([TYPED])

    (found,) = list(index.find({KEY: "typed"}))
    assert found == TYPED
    assert shape(found) == shape(TYPED)  # 1 stays int, 1.0 float, True bool
    for name in ("when", "last_updated"):
        assert found[name].utcoffset() == timedelta(0)
    (again, _bookkeeping) = index.bookkeeping(["typed"])["typed"]
    assert shape(again) == shape(without_bookkeeping(TYPED))


def test_arrays_inside_arrays_round_trip(index: Index, known_gap: Callable[[str], None]) -> None:
    known_gap("nested-arrays")
    index.configure(KEY, [])
    original = entry("k", grid=[[1, 2], [3, [4.5]]], mixed=[1, [True, None]])
    index.upsert([original])
    (found,) = list(index.find({KEY: "k"}))
    assert shape(found) == shape(original)
    assert found == original


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
)
# Short names that cannot collide with the key field or the fields s3idx reserves.
_names = st.text(alphabet="abcdefgh_", min_size=1, max_size=4)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_names, inner, max_size=3),
    max_leaves=8,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(fields=st.dictionaries(_names, _values, max_size=4))
def test_any_entry_round_trips_with_its_types(
    index: Index, index_kind: str, fields: dict[str, Any]
) -> None:
    if index_kind == "ferretdb":
        # Arrays inside arrays: a FerretDB v1 limitation, see test_arrays_inside_arrays_...
        assume(ferretdb_refusal(fields) is None)
    index.configure(KEY, [])
    original = entry("k", **fields)
    index.upsert([original])

    (found,) = list(index.find({KEY: "k"}))
    assert found == original
    assert shape(found) == shape(original)


# --- find ------------------------------------------------------------------------------------

FILTERS: list[tuple[dict[str, Any], list[str]]] = [
    ({}, ["a", "b", "c", "d", "e"]),
    ({KEY: "c"}, ["c"]),
    ({"s": "apple"}, ["a"]),
    ({"s": "Apple"}, []),  # case matters
    ({"n": 3}, ["a"]),
    ({"n": 3.0}, ["a"]),  # numbers compare by value across int and float
    ({"n": {"$in": [1.5, 10]}}, ["b", "e"]),
    ({"n": {"$nin": [1.5, 10]}}, ["a", "c", "d"]),
    ({"n": {"$gt": 1.5}}, ["a", "e"]),
    ({"n": {"$gte": 1.5, "$lt": 10}}, ["a", "b"]),
    ({"n": {"$lte": 3}}, ["a", "b"]),  # null and missing are not numbers
    ({"n": {"$ne": 3}}, ["b", "c", "d", "e"]),  # $ne includes missing
    ({"n": None}, ["c", "d"]),  # null matches missing too
    ({"n": {"$exists": False}}, ["d"]),
    ({"n": {"$exists": True}}, ["a", "b", "c", "e"]),
    ({"n": {"$exists": 0}}, ["d"]),  # numbers by their truth, as MongoDB takes them
    ({"n": {"$exists": 1}}, ["a", "b", "c", "e"]),
    ({"s": {"$gt": "b"}}, ["c", "d", "e"]),  # binary order: "Banana" < "b"
    ({"meta.x": 1}, ["a", "c"]),
    ({"meta.x": {"$gte": 2}}, ["b", "e"]),
    ({"meta": {"x": 2}}, ["b"]),  # a whole embedded document, exactly
    ({"meta.arr.v": 5}, ["a"]),  # a path through an array of documents
    ({"meta.arr.v": {"$gt": 1}}, ["a", "e"]),
    ({"tags": "x"}, ["a", "e"]),  # an array matches any element
    ({"tags": {"$in": ["z", "q"]}}, ["e"]),
    ({"tags": ["y"]}, ["b"]),  # ...or the whole array
    ({"tags": []}, ["c"]),
    ({"tags": {"$all": ["x", "y"]}}, ["a"]),
    ({"tags": {"$size": 2}}, ["a", "e"]),
    ({"meta.arr": {"$elemMatch": {"v": {"$gt": 1, "$lt": 3}}}}, ["e"]),
    ({"flag": {"$type": "bool"}}, ["a", "b"]),
    ({"$or": [{"n": 3}, {"s": "date"}]}, ["a", "d"]),
    ({"$and": [{"tags": "x"}, {"n": {"$gt": 5}}]}, ["e"]),
    ({"$nor": [{"tags": "x"}, {"n": None}]}, ["b"]),
    ({"n": {"$not": {"$gt": 2}}}, ["b", "c", "d"]),
    ({"s": {"$regex": "^[ab]"}}, ["a"]),
    ({"s": {"$regex": "^b", "$options": "i"}}, ["b"]),
    ({"s": {"$regex": "er"}}, ["c", "e"]),
    ({"when": {"$gte": T0}}, ["b", "e"]),
    ({"when": {"$lt": T0}}, ["a"]),
    ({"last_updated": T0}, ["a", "b", "c", "d", "e"]),
    ({"_s3idx.etag": '"etag-b"'}, ["b"]),
    ({"$and": [{}, {KEY: {"$gt": "b"}}]}, ["c", "d", "e"]),  # how delete pages through keys
]


@pytest.mark.parametrize(("query", "expected"), FILTERS, ids=[repr(f) for f, _ in FILTERS])
def test_find_and_count_with_filters(
    filled: Index, query: dict[str, Any], expected: list, known_gap: Callable[[str], None]
) -> None:
    if uses_operator(query, "$elemMatch"):
        known_gap("elemMatch")
    if compares_a_document(query):
        known_gap("document-operands")
    assert sorted(keys(filled.find(query))) == expected
    assert filled.count(query) == len(expected)


def _tuples(value: Any) -> Any:
    """The same filter with every list a tuple, as a Python caller may write it."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


TUPLED = [(f, e) for f, e in FILTERS if "$elemMatch" not in repr(f) and _tuples(f) != f]


@pytest.mark.parametrize(("query", "expected"), TUPLED, ids=[repr(f) for f, _ in TUPLED])
def test_tuples_in_a_filter_are_arrays(
    filled: Index, query: dict[str, Any], expected: list
) -> None:
    """pymongo sends a tuple as an array: a library caller's tuples mean what lists do."""
    tupled = _tuples(query)
    assert tupled != query
    assert sorted(keys(filled.find(tupled))) == expected
    assert filled.count(tupled) == len(expected)


# MongoDB's $regex is PCRE2 in UTF mode without UCP: \w, \d and the POSIX classes are ASCII-only.
REGEX_NAMES = {"p": "Jose", "q": "José", "r": "\u0663", "s": "12"}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [(r"^\w+$", ["p", "s"]), (r"\d", ["s"]), (r"^[[:alpha:]]+$", ["p"]), (r"^\W", ["r"])],
)
def test_regex_character_types_are_ascii_everywhere(
    index: Index, known_gap: Callable[[str], None], pattern: str, expected: list[str]
) -> None:
    known_gap("regex-unicode-types")
    index.configure(KEY, ["name"])
    index.upsert([entry(key, name=name) for key, name in REGEX_NAMES.items()])
    query = {"name": {"$regex": pattern}}
    assert sorted(keys(index.find(query))) == expected
    assert index.count(query) == len(expected)


# Paths through arrays of documents (e.k), arrays of scalars (t), null, missing and empty
# arrays: where FerretDB v1 answers negations and $all wrongly unless s3idx writes them again.
THROUGH_ARRAYS = [
    entry("a", e=[{"k": 1}, {"k": 2}], t=[1, 2]),
    entry("b", e=[{"k": 1}], t=[1]),
    entry("c", e={"k": 5}, t=5),
    entry("d", e=[{"k": 2}, {"k": 3}], t=[2, 3]),
    entry("f", e={"k": None}, t=None),
    entry("g"),
    entry("h", e=[], t=[]),
    entry("i", e=[{"k": "ab"}, {"k": "b"}, {"j": 1}], t=["ab", "b"]),
]
_ARRAY_CONDITIONS: list[Any] = [
    2,
    None,
    {"$ne": 2},
    {"$ne": None},
    {"$ne": "ab"},
    {"$nin": [2, 5]},
    {"$nin": [None]},
    {"$nin": []},
    {"$in": [None, 3]},
    {"$not": {"$gt": 1}},
    {"$not": {"$gte": None}},
    {"$not": {"$in": [1, 5]}},
    {"$not": {"$regex": "^a"}},
    {"$not": {"$regex": "^A", "$options": "i"}},
    {"$not": {"$exists": True}},
    {"$not": {"$gt": 1, "$lt": 3}},
    {"$not": {"$not": {"$eq": 2}}},
    {"$not": {"$type": "number"}},
    {"$all": [1, 2]},
    {"$all": [2]},
    {"$all": [1, 5]},
    {"$all": ["ab", "b"]},
    {"$all": []},
    {"$exists": False},
    {"$exists": True},
    {"$gt": 1, "$lt": 3},
    {"$gte": 2, "$ne": 3},
    {"$regex": "b$", "$ne": "b"},
    {"$type": "decimal"},
    {"$type": ["decimal", "int"]},
    {"$not": {"$type": "decimal"}},
    {"$type": "null"},
    {"$type": "array"},
    {"$not": {"$type": "array"}},
    {"$type": "string"},
    {"$lt": "b"},
    {"$not": {"$lte": "ab"}},
    {"$eq": [1, 2]},
    {"$ne": [1]},
    {"$in": [[1], 3]},
    {"$nin": [[1, 2], 3]},
    {"$size": 1},
    {"$not": {"$size": 2}},
    {"$all": [[1, 2]]},
]
ARRAY_FILTERS: list[dict[str, Any]] = [
    *({path: condition} for path in ("e.k", "t") for condition in _ARRAY_CONDITIONS),
    {"e": {"$size": 2}},
    {"e": {"$not": {"$size": 1}}},
    {"t": {"$not": {"$type": "array"}}},
    {"$nor": [{"e.k": 2}]},
    {"$nor": [{"e.k": {"$ne": 2}}]},
    {"$or": [{"e.k": {"$ne": 1}}, {KEY: "g"}]},
    {"$and": [{"e.k": {"$ne": 1}}, {"t": {"$nin": [5]}}]},
    {"$or": [{"$nor": [{"e.k": {"$all": [1, 2]}}]}, {"t": {"$not": {"$lt": 2}}}]},
    {"e": {"$type": "array"}},
    {"e": {"$not": {"$type": "object"}}},
    {"e": {"$exists": False}},
    {"e.j": {"$exists": True}},
    {"e.j": {"$ne": 1}},
    {"$nor": [{"$or": [{"e.k": 1}, {"t": 3}]}, {"$and": [{"e.k": {"$ne": 5}}, {"t": 9}]}]},
    {"$and": [{"$or": [{"e.k": {"$nin": [1]}}, {"t": []}]}, {"e.k": {"$not": {"$size": 0}}}]},
]


# mongomock is a test double, sent the filter as it is (as MongoDB is); these it answers wrongly.
MONGOMOCK_ARRAY_GAPS = {
    repr({"e.k": condition})
    for condition in [
        {"$not": {"$gt": 1}},
        {"$not": {"$gte": None}},
        {"$not": {"$in": [1, 5]}},
        {"$not": {"$regex": "^a"}},
        {"$not": {"$regex": "^A", "$options": "i"}},
        {"$not": {"$exists": True}},
        {"$not": {"$gt": 1, "$lt": 3}},
        {"$not": {"$type": "number"}},
        {"$all": []},
        {"$exists": False},
        {"$gte": 2, "$ne": 3},
        {"$type": ["decimal", "int"]},
        {"$not": {"$type": "decimal"}},
        {"$type": "null"},
        {"$not": {"$type": "array"}},
        {"$not": {"$lte": "ab"}},
        {"$size": 1},
        {"$not": {"$size": 2}},
    ]
} | {
    repr({"t": {"$not": {"$gte": None}}}),
    repr({"t": {"$not": {"$regex": "^A", "$options": "i"}}}),
    repr({"t": {"$all": []}}),
    repr({"t": {"$type": ["decimal", "int"]}}),
    repr({"t": {"$type": "null"}}),
    repr({"e": {"$not": {"$size": 1}}}),
    repr({"t": {"$in": [[1], 3]}}),
    repr({"t": {"$nin": [[1, 2], 3]}}),
    repr({"t": {"$size": 1}}),
    repr({"t": {"$all": [[1, 2]]}}),
    repr({"$and": [{"$or": [{"e.k": {"$nin": [1]}}, {"t": []}]}, {"e.k": {"$not": {"$size": 0}}}]}),
}


@pytest.mark.parametrize("query", ARRAY_FILTERS, ids=[repr(f) for f in ARRAY_FILTERS])
def test_conditions_through_arrays_match_as_on_mongodb(
    index: Index, query: dict[str, Any], known_gap: Callable[[str], None]
) -> None:
    # The expected keys are those of s3idx's MongoDB matcher (checked against a real MongoDB
    # in tests/query/test_filter_vs_mongo.py).
    flt = parse_filter(query)
    if null_on_a_dotted_path(flt):
        known_gap("dotted-null")
    if repr(query) in MONGOMOCK_ARRAY_GAPS:
        known_gap("arrays")
    index.configure(KEY, ["e", "t"])
    index.upsert(THROUGH_ARRAYS)
    expected = [e[KEY] for e in THROUGH_ARRAYS if flt.matches(e)]
    assert sorted(keys(index.find(query))) == expected
    assert index.count(query) == len(expected)


def test_booleans_are_not_numbers(filled: Index, known_gap: Callable[[str], None]) -> None:
    known_gap("bool-is-not-number")
    assert keys(filled.find({"flag": 1})) == ["d"]
    assert keys(filled.find({"flag": True})) == ["a"]


def test_find_returns_whole_entries_without_a_backend_id(filled: Index) -> None:
    for found in filled.find():
        assert "_id" not in found
        assert found == by_key(ENTRIES)[found[KEY]]


@pytest.mark.parametrize("bad", ["n = 3", ["n", 3], 3])
def test_a_filter_that_is_not_an_object_is_refused(filled: Index, bad: Any) -> None:
    with pytest.raises(InvalidFilterError):
        list(filled.find(bad))
    with pytest.raises(InvalidFilterError):
        filled.count(bad)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"n": {"$nosuch": 1}}, "unknown query operator '$nosuch'"),
        ({"$nosuch": []}, "unknown query operator '$nosuch'"),
        ({"$or": []}, "$or needs a non-empty array of filter objects"),
        ({"n": {"$in": 3}}, "$in needs an array"),
        # Refused by the one parser on every backend: a server may answer these silently and
        # wrongly (FerretDB matched every document with the $exists and $options ones).
        ({"n": {"$exists": "no"}}, "$exists needs true or false"),
        ({"n": {"$exists": None}}, "$exists needs true or false"),
        ({"n": {"$exists": []}}, "$exists needs true or false"),
        ({"n": {"$exists": {}}}, "$exists needs true or false"),
        ({"n": {"$options": "i"}}, "$options on 'n' needs a $regex beside it"),
        ({"n": {"$regex": "a", "$options": "q"}}, "invalid $options flag 'q'"),
        ({"n": {"$mod": [2, 1]}}, "unknown query operator '$mod'"),
        ({"$or": [{"n": {"$not": {"$mod": [2, 1]}}}]}, "unknown query operator '$mod'"),
        ({"n": {"$eq": 1, "x": 2}}, "the condition on 'n' mixes operators with the field 'x'"),
        ({"n": {"$size": -1}}, "$size needs a non-negative integer"),
        ({"n": {"$not": 3}}, "$not needs an object of operators"),
        ({"n": {"$and": [{"n": 1}]}}, "$and cannot be applied to the field 'n'"),
        ({"n": {"$gt": float("nan")}}, "nan is not a JSON number"),
    ],
)
def test_an_invalid_filter_is_refused(filled: Index, bad: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidFilterError) as raised:
        list(filled.find(bad))
    assert raised.value.message.startswith(message)
    with pytest.raises(InvalidFilterError):
        filled.count(bad)


TYPE_CODES = "MongoDB's type codes are -1 (minKey), 1 to 19 and 127 (maxKey)"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"n": {"$type": 99}}, f"invalid $type code 99: {TYPE_CODES}"),
        ({"n": {"$type": -2}}, f"invalid $type code -2: {TYPE_CODES}"),
        ({"n": {"$type": 20}}, f"invalid $type code 20: {TYPE_CODES}"),
        ({"n": {"$type": 2**70}}, f"invalid $type code {2**70}: {TYPE_CODES}"),
        ({"n": {"$type": 0}}, f"invalid $type code 0: {TYPE_CODES}"),
        ({"n": {"$type": float("inf")}}, "unknown $type inf"),
        ({"n": {"$type": [2, 99]}}, f"invalid $type code 99: {TYPE_CODES}"),
        (
            {"$or": [{"s": "x"}, {"n": {"$not": {"$type": 99}}}]},
            f"invalid $type code 99: {TYPE_CODES}",
        ),
        ({"tags": {"$elemMatch": {"$type": 99}}}, f"invalid $type code 99: {TYPE_CODES}"),
    ],
)
def test_an_invalid_type_code_is_refused_alike(
    filled: Index, bad: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidFilterError) as raised:
        list(filled.find(bad))
    assert raised.value.message.startswith(message)
    with pytest.raises(InvalidFilterError):
        filled.count(bad)


@pytest.mark.parametrize(
    "code",
    [-1, 5, 7, 11, 17, 127, 17.0, "binData", "objectId", "regex", "timestamp", "minKey", "maxKey"],
)
def test_a_valid_type_code_no_entry_holds_matches_nothing(
    filled: Index, code: Any, known_gap: Callable[[str], None]
) -> None:
    known_gap("type-codes")
    assert list(filled.find({"n": {"$type": code}})) == []
    assert keys(filled.find({"n": {"$type": [code, "int"]}})) == ["a", "e"]


# --- projection, sort, skip, limit -----------------------------------------------------------


def test_projection_keeps_the_key(filled: Index) -> None:
    found = by_key(filled.find(fields=["s", "n"]))

    assert found["a"] == {KEY: "a", "s": "apple", "n": 3}
    assert found["d"] == {KEY: "d", "s": "date"}  # a missing field stays missing
    assert found["c"] == {KEY: "c", "s": "cherry", "n": None}


def test_projection_of_nothing_is_the_key_alone(filled: Index) -> None:
    assert sorted(filled.find(fields=[]), key=lambda e: e[KEY]) == [{KEY: k} for k in "abcde"]


def test_projection_of_dotted_paths_keeps_the_nesting(filled: Index) -> None:
    found = by_key(filled.find({KEY: {"$in": ["a", "b"]}}, fields=["meta.x", "_s3idx.etag"]))

    assert found == {
        "a": {KEY: "a", "meta": {"x": 1}, "_s3idx": {"etag": '"etag-a"'}},
        "b": {KEY: "b", "meta": {"x": 2}, "_s3idx": {"etag": '"etag-b"'}},
    }


def test_projection_naming_the_key_or_a_path_twice(filled: Index) -> None:
    found = list(filled.find({KEY: "a"}, fields=[KEY, "s", "s"]))
    assert found == [{KEY: "a", "s": "apple"}]


def test_sort_ascending_and_descending(filled: Index) -> None:
    assert keys(filled.find(sort=[("s", 1)])) == ["b", "a", "c", "d", "e"]  # "B" < "a"
    assert keys(filled.find(sort=[("s", -1)])) == ["e", "d", "c", "a", "b"]
    assert keys(filled.find(sort=[(KEY, -1)])) == ["e", "d", "c", "b", "a"]


def test_sort_puts_null_and_missing_before_numbers(filled: Index) -> None:
    ascending = keys(filled.find(sort=[("n", 1)]))
    assert sorted(ascending[:2]) == ["c", "d"]  # null and missing tie
    assert ascending[2:] == ["b", "a", "e"]
    descending = keys(filled.find(sort=[("n", -1)]))
    assert descending[:3] == ["e", "a", "b"]


def test_sort_by_several_fields(filled: Index) -> None:
    order = keys(filled.find({"meta.x": {"$exists": True}}, sort=[("meta.x", 1), (KEY, -1)]))
    assert order == ["c", "a", "b", "e"]


SORTED_THROUGH_ARRAYS = [
    entry("a", e=[{"k": 5}], t=[5], u={"k": 3}, v=4, w={"k": [5, 0]}),
    entry("b", e=[{"k": 1}], t=[1, 9], u={"k": [2, 8]}, v=[1, 6], w={"k": 2}),
    entry("c", e=[{"k": 3}], t=3, u={"k": 1}, v=[], w={"k": [3, 9]}),
    entry("d", e={"k": 2}, t=[2, 4], u=[{"k": 4}, {"k": 0}], v=[7, 0], w={"k": []}),
    entry("f", e=[{"k": 4}, {"k": 0}], t=[], u={"k": 5}, w={"j": 1}),
    entry("g", t=[6], u=[], v=2, w={"k": [1]}),
]


MONGOMOCK_SORT_GAPS = {
    *((1, path) for path in ("e.k", "u.k", "e", "u", "v", "w.k")),
    *((-1, path) for path in ("u.k", "t", "v", "w.k")),
}


@pytest.mark.parametrize("path", ["e.k", "t", "u.k", "v", "e", "u", "w.k", "w"])
@pytest.mark.parametrize("direction", [1, -1])
def test_sort_through_arrays_uses_mongodb_sort_keys(
    index: Index, path: str, direction: int, known_gap: Callable[[str], None]
) -> None:
    # Ascending by the smallest of the values the path yields, descending by the largest. On
    # FerretDB a dotted path through an array (e.k, u.k) is refused: it orders those wrongly.
    if (direction, path) in MONGOMOCK_SORT_GAPS:
        known_gap("array-sort")
    index.configure(KEY, ["e", "t", "u", "v", "w"])
    index.upsert(SORTED_THROUGH_ARRAYS)
    expected = keys(sort_entries(SORTED_THROUGH_ARRAYS, [(path, direction), (KEY, 1)]))
    try:
        found = keys(index.find(sort=[(path, direction), (KEY, 1)]))
    except InvalidFilterError as refused:  # a sort a backend cannot answer right: refused
        assert "FerretDB" in refused.message
        return
    assert found == expected
    assert keys(index.find(sort=[(path, direction), (KEY, 1)], limit=2)) == expected[:2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sort": [("a", 1), ("a", -1)]}, "sort field 'a' is given twice"),
        ({"sort": [("a..b", 1)]}, "invalid sort field: invalid field path 'a..b': empty part"),
        ({"sort": [("", 1)]}, "invalid sort field: invalid field path '': empty part"),
        ({"sort": [("$a", 1)]}, "invalid sort field '$a': a part must not start with '$'"),
        ({"sort": [("a.$b", 1)]}, "invalid sort field 'a.$b': a part must not start with '$'"),
        ({"sort": [("a", 2)]}, "sort direction of 'a' must be 1 or -1, got 2"),
        ({"sort": [("a", True)]}, "sort direction of 'a' must be 1 or -1, got True"),
        ({"sort": ["a"]}, "a sort item must be (field, direction), got 'a'"),
        ({"sort": "a"}, "sort must be a list of (field, direction), got 'a'"),
        ({"skip": -1}, "skip must be a non-negative integer, got -1"),
        ({"limit": -1}, "limit must be a non-negative integer, got -1"),
        ({"skip": 1.5}, "skip must be a non-negative integer, got 1.5"),
        ({"limit": "2"}, "limit must be a non-negative integer, got '2'"),
        ({"skip": True}, "skip must be a non-negative integer, got True"),
        ({"skip": 2**63}, f"skip must be at most {INT64_MAX} (64 bits), got {2**63}"),
        ({"limit": 10**20}, f"limit must be at most {INT64_MAX} (64 bits), got {10**20}"),
        ({"fields": "n,s"}, "fields must be a list of paths, got the string 'n,s'"),
        ({"fields": [""]}, "invalid field path '': empty part"),
        ({"fields": ["a..b"]}, "invalid field path 'a..b': empty part"),
        ({"fields": ["$a"]}, "invalid field '$a': a part must not start with '$'"),
        ({"fields": [3]}, "a field path must be a string, got 3"),
    ],
)
def test_bad_find_arguments_are_refused_alike(
    filled: Index, kwargs: dict[str, Any], message: str
) -> None:
    # Refused at the call (before iterating), with the same error on every backend.
    with pytest.raises(InvalidFilterError) as excinfo:
        filled.find({}, **kwargs)
    assert excinfo.value.message == message


def test_a_path_and_a_path_inside_it_are_projected_together(filled: Index) -> None:
    found = list(filled.find({KEY: "a"}, fields=["meta.x", "meta"]))
    assert found == [{KEY: "a", "meta": A["meta"]}]


def test_skip_and_limit(filled: Index) -> None:
    sort = [(KEY, 1)]
    assert keys(filled.find(sort=sort, limit=2)) == ["a", "b"]
    assert keys(filled.find(sort=sort, skip=2)) == ["c", "d", "e"]
    assert keys(filled.find(sort=sort, skip=1, limit=2)) == ["b", "c"]
    assert keys(filled.find(sort=sort, skip=9)) == []


@pytest.mark.parametrize("direction", [1, -1])
def test_pages_of_a_sort_with_ties_are_in_key_order(index: Index, direction: int) -> None:
    # Equal values come out in key order, so pages (skip/limit) neither repeat nor lose an
    # entry, and every backend gives the same pages.
    index.configure(KEY, ["n"])
    names = [f"k{i:02d}" for i in range(40)]
    index.upsert([entry(key, n=(i * 7) % 3) for i, key in enumerate(reversed(names))])
    by_value = sorted(names, key=lambda key: (direction * ((39 - names.index(key)) * 7 % 3), key))
    pages = [keys(index.find(sort=[("n", direction)], skip=at, limit=5)) for at in range(0, 40, 5)]
    assert [key for page in pages for key in page] == by_value
    flt = {"n": {"$gte": 0}}
    assert keys(index.find(flt, sort=[("n", direction)], skip=3, limit=4)) == by_value[3:7]
    # Without a sort, pages come in key order.
    unsorted = [keys(index.find(flt, skip=at, limit=7)) for at in range(0, 40, 7)]
    assert [key for page in unsorted for key in page] == names


@pytest.mark.parametrize("sort", [None, [(KEY, 1)], [("n", -1)]])
def test_the_largest_skip_and_limit_are_answered(filled: Index, sort: Any) -> None:
    # 2^63 - 1 each: their sum overflows 64 bits, which no backend may trip on.
    assert len(list(filled.find(sort=sort, limit=INT64_MAX))) == len(ENTRIES)
    assert list(filled.find(sort=sort, skip=INT64_MAX, limit=INT64_MAX)) == []
    assert len(list(filled.find(sort=sort, skip=1, limit=INT64_MAX))) == len(ENTRIES) - 1
    assert keys(filled.find({"tags": "x"}, sort=[(KEY, -1)], limit=1)) == ["e"]
    assert len(list(filled.find(limit=0))) == len(ENTRIES)  # 0 means no limit


def test_a_caller_may_stop_reading_early(filled: Index) -> None:
    found = filled.find(sort=[(KEY, 1)])
    assert next(iter(found))[KEY] == "a"
    del found
    assert filled.count() == len(ENTRIES)


# --- bookkeeping -----------------------------------------------------------------------------


def test_bookkeeping_of_existing_keys(filled: Index) -> None:
    found = filled.bookkeeping(["b", "nope", "a", "b"])

    assert set(found) == {"a", "b"}
    entry_a, bookkeeping_a = found["a"]
    assert entry_a == without_bookkeeping(A)
    assert bookkeeping_a == Bookkeeping.from_dict(bookkeeping_of("a"))
    assert found["b"] == (without_bookkeeping(B), Bookkeeping.from_dict(bookkeeping_of("b")))
    assert filled.bookkeeping([]) == {}


def test_bookkeeping_keeps_a_missing_sha256(index: Index) -> None:
    index.configure(KEY, [])
    item = entry("k")
    item["_s3idx"]["sha256"] = None
    index.upsert([item])

    assert index.bookkeeping(["k"])["k"][1].sha256 is None


TRICKY_KEYS = ["a", "a/b", "a-c", "é", "Z", "a0", "日本/語", "b~x", "B", "with space", "A/a"]


def test_iter_bookkeeping_in_utf8_byte_order(index: Index) -> None:
    index.configure(KEY, [])
    index.upsert([entry(k) for k in TRICKY_KEYS])

    listed = list(index.iter_bookkeeping())

    assert [k for k, _ in listed] == sorted(TRICKY_KEYS, key=lambda k: k.encode())
    for key, bookkeeping in listed:
        assert bookkeeping == Bookkeeping.from_dict(bookkeeping_of(key))


# --- delete ----------------------------------------------------------------------------------


def test_delete_returns_how_many_existed(filled: Index) -> None:
    assert filled.delete(["a", "nope", "c", "a"]) == 2

    assert sorted(keys(filled.find())) == ["b", "d", "e"]
    assert filled.bookkeeping(["a", "c"]) == {}
    assert filled.delete(["a"]) == 0
    assert filled.delete([]) == 0


def test_deleted_key_can_be_written_again(filled: Index) -> None:
    filled.delete(["a"])
    filled.upsert([entry("a", n=99)])

    assert list(filled.find({"n": 99})) == [entry("a", n=99)]


# --- rebuild ---------------------------------------------------------------------------------

NEW = [entry("a", n=100), entry("x", n=101), entry("y", s="yew")]
NEW_SETTINGS = IndexSettings(KEY, ("n", "s"))


def test_search_rows_written_are_those_verify_expects(filled: Index) -> None:
    """No false damage: what an upsert writes for every kind of value, and what a rebuild
    writes, is found in step by ``search_mismatches``."""
    odd = [
        entry("big", n=2**63 - 1, s=-(2**63), tags=[1, 1.5, True, None, {"k": [3]}, "1"]),
        entry("deep", meta={"x": {"y": [{"z": 1}]}, "arr": [{"v": [1, 1]}, {"v": 2}, {}]}),
        entry("dates", when=[T0, T0], flag=[False, 0], n=-0.0, s=""),
    ]
    filled.upsert(odd)
    every = [*keys(ENTRIES), *keys(odd), "not-there"]

    assert filled.search_mismatches(every) == {}
    rebuild = filled.start_rebuild(KEY)
    rebuild.upsert([*ENTRIES, *odd])
    rebuild.commit(IndexSettings(KEY, FIELDS))
    assert filled.search_mismatches(every) == {}


def test_rebuild_is_invisible_until_commit(filled: Index, open_index: Any) -> None:
    rebuild = filled.start_rebuild(KEY)
    assert isinstance(rebuild, IndexRebuild)
    assert rebuild.checkpoint() is None
    rebuild.upsert(NEW)

    assert by_key(filled.find()) == by_key(ENTRIES)
    assert filled.count() == len(ENTRIES)
    assert filled.settings() == IndexSettings(KEY, FIELDS)

    rebuild.commit(NEW_SETTINGS)

    assert by_key(filled.find()) == by_key(NEW)
    assert keys(filled.find({"n": {"$gt": 100}})) == ["x"]
    assert filled.settings() == NEW_SETTINGS
    assert [k for k, _ in filled.iter_bookkeeping()] == ["a", "x", "y"]
    other = open_index()
    assert other.settings() == NEW_SETTINGS
    assert by_key(other.find()) == by_key(NEW)


def test_rebuild_of_nothing_commits_an_empty_index(filled: Index) -> None:
    filled.start_rebuild(KEY).commit(IndexSettings(KEY, ()))

    assert list(filled.find()) == []
    assert filled.settings() == IndexSettings(KEY, ())


def test_rebuild_abort_leaves_the_index_as_it_was(filled: Index) -> None:
    rebuild = filled.start_rebuild(KEY)
    rebuild.upsert(NEW)
    rebuild.save_checkpoint({"after": "y"})

    rebuild.abort()

    assert by_key(filled.find()) == by_key(ENTRIES)
    assert filled.settings() == IndexSettings(KEY, FIELDS)
    again = filled.start_rebuild(KEY, resume=True)  # nothing left to resume
    assert again.checkpoint() is None
    assert again.has_keys(["a", "x"]) == set()


def test_rebuild_resumes_with_its_checkpoint_and_keys(filled: Index, open_index: Any) -> None:
    first = filled.start_rebuild(KEY)
    first.upsert(NEW[:2])
    first.save_checkpoint({"after": "x", "count": 2})
    first.save_checkpoint({"after": "x", "count": 2, "listed": ["a", "x"]})
    # ...and the process dies: no commit, no abort.

    resumed = open_index().start_rebuild(KEY, resume=True)

    assert resumed.checkpoint() == {"after": "x", "count": 2, "listed": ["a", "x"]}
    assert resumed.has_keys(["a", "x", "y", "b"]) == {"a", "x"}
    resumed.upsert(NEW[2:])
    resumed.commit(NEW_SETTINGS)
    assert by_key(filled.find()) == by_key(NEW)


def test_a_checkpoint_naming_dotted_fields_round_trips(filled: Index, open_index: Any) -> None:
    # A rebuild's checkpoint counts pending fields by path; FerretDB refuses "." in names.
    saved = {"pending_fields": {"x.y": 3, "$odd": 1}, "when": T0, "listed_through": "k"}
    filled.start_rebuild(KEY).save_checkpoint(saved)
    assert open_index().start_rebuild(KEY, resume=True).checkpoint() == saved
    sharded = open_index().start_rebuild(KEY, shard=Shard(1, 2), restart=True)
    sharded.save_checkpoint(saved)
    assert sharded.shard_checkpoints() == {1: saved}


def test_rebuild_lists_its_own_entries_in_utf8_byte_order(filled: Index, open_index: Any) -> None:
    # What a resumed or sharded rebuild compares with a listing of the bucket before its swap.
    rebuild = filled.start_rebuild(KEY)
    assert (list(rebuild.iter_bookkeeping()), rebuild.last_key()) == ([], None)
    rebuild.upsert([entry(k) for k in TRICKY_KEYS])
    resumed = open_index().start_rebuild(KEY, resume=True)

    listed = list(resumed.iter_bookkeeping())

    ordered = sorted(TRICKY_KEYS, key=lambda k: k.encode())
    assert [k for k, _ in listed] == ordered  # the live index's entries are not listed
    assert all(b == Bookkeeping.from_dict(bookkeeping_of(k)) for k, b in listed)
    assert resumed.last_key() == ordered[-1]
    # Written while it iterates (the re-check drops and writes again as it goes): no error.
    for key, _ in resumed.iter_bookkeeping():
        resumed.delete([key])
        resumed.upsert([entry(key, n=1)])
    assert resumed.has_keys(ordered) == set(ordered)


def test_rebuild_without_resume_starts_afresh(filled: Index) -> None:
    first = filled.start_rebuild(KEY)
    first.upsert(NEW)
    first.save_checkpoint({"after": "y"})

    fresh = filled.start_rebuild(KEY)

    assert fresh.checkpoint() is None
    assert fresh.has_keys(["a", "x", "y"]) == set()
    fresh.upsert([entry("z")])
    fresh.commit(IndexSettings(KEY, ()))
    assert keys(filled.find()) == ["z"]


def test_rebuild_upsert_replaces_and_later_wins(filled: Index) -> None:
    rebuild = filled.start_rebuild(KEY)
    rebuild.upsert([entry("x", n=1), entry("x", n=2)])
    rebuild.upsert([entry("x", n=3)])
    rebuild.commit(NEW_SETTINGS)

    assert list(filled.find()) == [entry("x", n=3)]


def test_rebuild_of_a_lost_index_needs_only_the_key_field(index: Index) -> None:
    assert index.settings() is None
    rebuild = index.start_rebuild(KEY)
    rebuild.upsert(NEW)
    rebuild.commit(NEW_SETTINGS)

    assert index.settings() == NEW_SETTINGS
    assert keys(index.find({"s": "yew"})) == ["y"]


def test_resume_with_another_key_field_starts_afresh(filled: Index) -> None:
    first = filled.start_rebuild(KEY)
    first.upsert(NEW)
    first.save_checkpoint({"after": "y"})

    other = filled.start_rebuild("other_key", resume=True)

    assert other.checkpoint() is None
    other.abort()


def test_writes_after_a_commit_go_to_the_new_index(filled: Index) -> None:
    rebuild = filled.start_rebuild(KEY)
    rebuild.upsert(NEW)
    rebuild.commit(NEW_SETTINGS)

    filled.upsert([entry("q", n=7)])
    assert filled.delete(["x"]) == 1
    # Added to an index of 3 entries: pending for them until reindex backfills it.
    assert filled.configure(KEY, ["tags"]) == IndexSettings(KEY, ("n", "s", "tags"), (("tags", 3),))
    assert sorted(keys(filled.find())) == ["a", "q", "y"]


# --- fields added later: pending until backfilled --------------------------------------------


def test_a_field_added_to_an_empty_index_is_complete_at_once(index: Index) -> None:
    index.configure(KEY, ["a"])

    assert index.configure(KEY, ["b"]) == IndexSettings(KEY, ("a", "b"))
    assert index.settings() is not None and index.settings().pending == ()


def test_a_field_added_to_a_filled_index_is_pending_with_its_entry_count(
    filled: Index, open_index: Any
) -> None:
    settings = filled.configure(KEY, ["later", "n"])

    assert settings.fields == (*FIELDS, "later")
    assert settings.pending == (("later", len(ENTRIES)),)
    assert settings.complete_fields == FIELDS
    assert open_index().settings() == settings  # recorded, not just returned
    assert filled.configure(KEY, ["later"]).pending == (("later", len(ENTRIES)),)  # not twice


def test_mark_complete_clears_only_the_fields_named(filled: Index, open_index: Any) -> None:
    filled.configure(KEY, ["p", "q"])

    settings = filled.mark_complete(["p"])

    assert settings.pending == (("q", len(ENTRIES)),)
    assert open_index().settings() == settings
    assert filled.mark_complete(["q", "unknown"]).pending == ()
    assert filled.settings() == IndexSettings(KEY, (*FIELDS, "p", "q"))


def test_mark_complete_since_keeps_a_field_marked_pending_after_that_reading(
    filled: Index, open_index: Any
) -> None:
    """A backfill read the pending marks when it began (``since``): a field a writer marked
    pending after that reading stays as it is (those entries may have been written after the
    backfill passed them); the others settle."""
    filled.configure(KEY, ["p", "q"])  # pending for every entry
    began = filled.pending_marks()
    filled.mark_pending([("p", 3)])  # written meanwhile without p

    settings = filled.mark_complete(["p", "q"], since=began)

    assert settings.pending == (("p", len(ENTRIES) + 3),)
    assert open_index().settings() == settings
    assert open_index().pending_marks() == {"p": 1}
    # A mark before the backfill began is covered by it: its objects were stored before.
    assert filled.mark_complete(["p"], since=filled.pending_marks()).pending == ()


def test_two_backfills_beside_a_mark_both_leave_the_field_pending(filled: Index) -> None:
    """Two backfills both began, then a writer marks p: whichever ends first keeps p, and so
    does the other, whatever count the first left (a count cannot tell what was marked when)."""
    filled.configure(KEY, ["p"])
    first, second = filled.pending_marks(), filled.pending_marks()
    filled.mark_pending([("p", 2)])

    assert filled.mark_complete(["p"], since=second).pending == (("p", len(ENTRIES) + 2),)
    assert filled.mark_complete(["p"], remaining=0, since=first).pending == (
        ("p", len(ENTRIES) + 2),
    )
    # Marks that added no entries, or of fields not recorded, count nothing.
    assert filled.mark_pending([("p", 0), ("unknown", 5)]).pending == (("p", len(ENTRIES) + 2),)
    assert filled.pending_marks() == {"p": 1}


def test_a_rebuild_keeps_the_pending_marks_a_backfill_began_from(
    filled: Index, open_index: Any
) -> None:
    """The marks only grow: a rebuild swapped in while a backfill runs must not reset them,
    or as many marks again after it would match the backfill's ``since``, and a field a
    writer marked pending meanwhile would be called complete."""
    filled.configure(KEY, ["p"])
    filled.mark_pending([("p", 2)])
    began = filled.pending_marks()
    rebuild = filled.start_rebuild(KEY)
    rebuild.upsert(NEW)
    rebuild.commit(IndexSettings(KEY, ("p",), (("p", len(NEW)),)))
    assert open_index().pending_marks() == began

    filled.mark_pending([("p", 1)])  # a writer, after the rebuild, while the backfill runs
    assert filled.mark_complete(["p"], since=began).pending == (("p", len(NEW) + 1),)


def test_mark_complete_with_remaining_keeps_the_fields_pending_for_that_many(
    filled: Index, open_index: Any
) -> None:
    filled.configure(KEY, ["p", "q"])  # pending for every entry
    filled.mark_pending([("p", 5)])

    settings = filled.mark_complete(["p", "q"], remaining=2)

    assert settings.pending == (("p", 2), ("q", 2))
    assert open_index().settings() == settings
    # Never more than recorded: the failures of a reindex are among the documents it counted.
    assert filled.mark_complete(["p"], remaining=len(ENTRIES) + 9).pending == (("p", 2), ("q", 2))
    assert filled.mark_complete(["q", "unknown"], remaining=1).pending == (("p", 2), ("q", 1))
    assert filled.mark_complete(["p", "q"], remaining=0).pending == ()


def test_rebuild_commit_records_pending_fields(filled: Index, open_index: Any) -> None:
    rebuild = filled.start_rebuild(KEY)
    rebuild.upsert(NEW)

    rebuild.commit(IndexSettings(KEY, ("n", "s"), (("s", 2),)))

    assert filled.settings() == IndexSettings(KEY, ("n", "s"), (("s", 2),))
    assert open_index().settings() == IndexSettings(KEY, ("n", "s"), (("s", 2),))


# --- what queries may name: decided above the backends, from what each one records ------------


def test_every_backend_records_what_the_query_check_needs(filled: Index) -> None:
    from s3idx.query.indexed import FieldNotIndexedError, FieldPendingError, check_query_paths

    filled.configure(KEY, ["later"])
    settings = filled.settings()

    for held in ({"n": 1}, {"meta.x": 1}, {"meta.arr.v.w": 1}, {KEY: "a"}, {"last_updated": 1}):
        check_query_paths(settings, filter=held, sort=[("s", 1)], fields=["tags"])
    for missing in ({"other": 1}, {"meta": {"x": 1}}, {"meta.y": 1}, {"_id": "a"}):
        with pytest.raises(FieldNotIndexedError):
            check_query_paths(settings, filter={"$or": [{"n": 1}, missing]})
    with pytest.raises(FieldPendingError, match=f"for the {len(ENTRIES)} documents"):
        check_query_paths(settings, sort=[("later", -1)])
    check_query_paths(filled.mark_complete(["later"]), filter={"later": None})


def test_mark_pending_adds_to_recorded_fields_only(filled: Index, open_index: Any) -> None:
    settings = filled.mark_pending([("n", 2), ("not-recorded", 4), ("s", 0)])

    assert settings.pending == (("n", 2),)
    assert filled.mark_pending([("n", 1), ("tags", 3)]).pending == (("n", 3), ("tags", 3))
    assert open_index().settings() == IndexSettings(KEY, FIELDS, (("n", 3), ("tags", 3)))
    assert filled.mark_complete(["n", "tags"]).pending == ()


def _nested(operator: str, depth: int, bottom: Any = None) -> dict[str, Any]:
    node: dict[str, Any] = bottom or {"n": {"$gte": 0}}
    for i in range(depth):
        if operator == "$not":
            node = {"n": {"$not": node["n"]}}
        else:
            node = {operator: [node, {"s": f"none-{i}"}]}
    return node


@pytest.mark.parametrize("operator", ["$and", "$or", "$nor", "$not"])
def test_filters_nested_100_deep_give_the_same_answer_everywhere(
    filled: Index, operator: str
) -> None:
    # n >= 0 holds for a, b and e; s = none-i for nothing; $nor and $not flip at each level.
    expected = {"$and": [], "$or": ["a", "b", "e"], "$nor": ["a", "b", "e"],
                "$not": ["a", "b", "e"]}[operator]  # fmt: skip
    flt = _nested(operator, 100)
    assert keys(filled.find(flt, sort=[(KEY, 1)])) == expected
    assert filled.count(flt) == len(expected)
    if operator in ("$nor", "$not"):
        odd = _nested(operator, 99)
        assert keys(filled.find(odd, sort=[(KEY, 1)])) == ["c", "d"]


@pytest.mark.parametrize("operator", ["$and", "$or", "$nor", "$not"])
def test_filters_100_deep_with_negations_of_several_operators_at_the_bottom(
    filled: Index, operator: str
) -> None:
    # FerretDB is sent negations as $nor and operator objects as $and: no deeper than allowed.
    bottom = {"n": {"$not": {"$ne": 1.5, "$gte": 0, "$nin": [99]}, "$exists": True}}
    flt = _nested(operator, 99, bottom)  # its $not is the 100th level
    expected = [e[KEY] for e in ENTRIES if parse_filter(flt).matches(e)]
    assert keys(filled.find(flt, sort=[(KEY, 1)])) == expected
    assert filled.count(flt) == len(expected)


@pytest.mark.parametrize("operator", ["$and", "$or", "$nor", "$not"])
def test_filters_nested_deeper_than_100_are_refused_everywhere(
    filled: Index, operator: str
) -> None:
    with pytest.raises(InvalidFilterError, match="nested deeper than 100 levels"):
        list(filled.find(_nested(operator, 101)))
    with pytest.raises(InvalidFilterError, match="nested deeper than 100 levels"):
        filled.count({"n": {"$eq": _nested("$and", 101)}})


# --- compare-and-set on the recorded ETag (issue 14) -----------------------------------------


def tagged(key: str, etag: str, **fields: Any) -> Entry:
    """An entry whose object has ETag ``etag``."""
    item = entry(key, **fields)
    item["_s3idx"] = {**item["_s3idx"], "etag": etag}
    return item


def test_etags_of_the_keys_that_have_entries(filled: Index) -> None:
    assert filled.etags(["b", "nope", "a", "b"]) == {"a": '"etag-a"', "b": '"etag-b"'}
    assert filled.etags([]) == {}
    filled.upsert([tagged("a", '"new"')])
    assert filled.etags(["a"]) == {"a": '"new"'}


def test_etags_of_a_fresh_index(index: Index) -> None:
    assert index.etags(["a"]) == {}
    assert index.settings() is None


def test_upsert_if_writes_where_the_etag_is_still_the_one_read(filled: Index) -> None:
    before = filled.etags(["a", "b"])
    conflicts = filled.upsert_if(
        [tagged("a", '"a2"', n=1), tagged("b", '"b2"', n=2)],
        {"a": before["a"], "b": '"someone-else"'},
    )

    assert conflicts == {"b"}
    assert filled.etags(["a", "b"]) == {"a": '"a2"', "b": '"etag-b"'}
    found = by_key(filled.find())
    assert found["a"] == tagged("a", '"a2"', n=1)  # the whole entry, bookkeeping included
    assert found["b"] == B  # untouched
    # Searchable fields follow the written entry, and only it.
    assert keys(filled.find({"n": 1})) == ["a"]
    assert keys(filled.find({"n": 2})) == []
    assert keys(filled.find({"n": 3})) == []


def test_upsert_if_with_none_expected_only_inserts(filled: Index) -> None:
    conflicts = filled.upsert_if(
        [tagged("new", '"n1"', n=7), tagged("a", '"a2"', n=8)], {"new": None, "a": None}
    )

    assert conflicts == {"a"}
    assert filled.etags(["new", "a"]) == {"new": '"n1"', "a": '"etag-a"'}
    assert keys(filled.find({"n": 7})) == ["new"]
    assert keys(filled.find({"n": 8})) == []
    # The second insert of the same key conflicts: the key has an entry now.
    assert filled.upsert_if([tagged("new", '"n2"')], {"new": None}) == {"new"}
    assert filled.etags(["new"]) == {"new": '"n1"'}


def test_upsert_if_expecting_an_etag_where_there_is_no_entry_conflicts(filled: Index) -> None:
    filled.delete(["a"])

    assert filled.upsert_if([tagged("a", '"a2"')], {"a": '"etag-a"'}) == {"a"}
    assert filled.etags(["a"]) == {}
    assert filled.count() == len(ENTRIES) - 1


def test_a_compare_and_set_chain_moves_one_step_at_a_time(filled: Index) -> None:
    first = filled.etags(["a"])["a"]
    assert filled.upsert_if([tagged("a", '"v1"')], {"a": first}) == set()
    # A writer that read before that step has lost: its expected value is gone.
    assert filled.upsert_if([tagged("a", '"stale"')], {"a": first}) == {"a"}
    assert filled.upsert_if([tagged("a", '"v2"')], {"a": '"v1"'}) == set()
    assert filled.etags(["a"]) == {"a": '"v2"'}


def test_versions_give_the_etag_and_a_stamp_each_write_renews(filled: Index) -> None:
    read = filled.versions(["b", "nope", "a", "b"])
    assert sorted(read) == ["a", "b"]
    assert (read["a"].etag, read["b"].etag) == ('"etag-a"', '"etag-b"')
    assert read["a"].stamp and read["b"].stamp
    # The same ETag written again (the same bytes stored again) is a new version.
    filled.upsert([A])
    assert filled.versions(["a"])["a"] == Version('"etag-a"', filled.versions(["a"])["a"].stamp)
    assert filled.versions(["a"])["a"] != read["a"]
    assert filled.versions(["b"]) == {"b": read["b"]}  # untouched
    # The bookkeeping read back carries it, and entries read back never show it.
    assert filled.bookkeeping(["a"])["a"][1].version == filled.versions(["a"])["a"]
    assert dict(filled.iter_bookkeeping())["b"].version == read["b"]
    assert by_key(filled.find())["a"] == A


def test_a_write_of_the_same_etag_defeats_a_compare_and_set_read_before_it(
    filled: Index,
) -> None:
    # The ABA race: writers X and Y both read a's entry; X stores a's bytes again (same ETag)
    # after Y stored other bytes, and writes its entry first. Y read before X's write, so Y's
    # compare-and-set must fail, though the ETag it expects is there again.
    read = filled.versions(["a", "b"])
    assert filled.upsert_if([tagged("a", '"etag-a"', n=5)], {"a": read["a"]}) == set()
    assert filled.upsert_if([tagged("a", '"by-y"', n=6)], {"a": read["a"]}) == {"a"}
    assert filled.delete_if({"a": read["a"]}) == (0, {"a"})
    assert by_key(filled.find())["a"] == tagged("a", '"etag-a"', n=5)
    # The same for a write that compares nothing (a plain upsert), and for a delete_if.
    filled.upsert([B])
    assert filled.upsert_if([tagged("b", '"by-y"')], {"b": read["b"]}) == {"b"}
    assert filled.delete_if({"b": read["b"]}) == (0, {"b"})
    # A version read after the write wins; a bare ETag compares the ETag alone.
    now = filled.versions(["a", "b"])
    assert filled.upsert_if([tagged("a", '"v2"')], {"a": now["a"]}) == set()
    assert filled.delete_if({"b": '"etag-b"'}) == (1, set())
    assert filled.etags(["a", "b"]) == {"a": '"v2"'}


def test_upsert_if_of_nothing_does_nothing(filled: Index) -> None:
    assert filled.upsert_if([], {}) == set()
    assert filled.count() == len(ENTRIES)


def test_delete_if_removes_only_entries_still_at_the_etag(filled: Index) -> None:
    removed, conflicts = filled.delete_if(
        {"a": '"etag-a"', "b": '"other"', "c": '"etag-c"', "nope": '"x"'}
    )

    assert removed == 2
    assert conflicts == {"b"}  # a missing key is neither removed nor a conflict
    assert sorted(keys(filled.find())) == ["b", "d", "e"]
    assert keys(filled.find({"s": "apple"})) == []
    assert filled.delete_if({}) == (0, set())
    assert filled.delete_if({"a": '"etag-a"'}) == (0, set())


def test_delete_if_on_a_fresh_index(index: Index) -> None:
    assert index.delete_if({"a": '"x"'}) == (0, set())


# --- the delete journal ----------------------------------------------------------------------


def test_journal_records_key_and_etag(filled: Index, open_index: Any) -> None:
    assert filled.journaled() == {}
    filled.journal_deletes({"a": '"etag-a"', "gone": '"g"'})

    assert filled.journaled() == {"a": '"etag-a"', "gone": '"g"'}
    assert filled.journaled(["a", "b", "a"]) == {"a": '"etag-a"'}
    assert filled.journaled([]) == {}
    assert open_index().journaled() == {"a": '"etag-a"', "gone": '"g"'}  # durable
    # Journaling is not deleting: the entry stays until delete_if removes it.
    assert filled.etags(["a"]) == {"a": '"etag-a"'}


def test_journal_record_is_replaced_by_a_later_one(filled: Index) -> None:
    filled.journal_deletes({"a": '"e1"'})
    filled.journal_deletes({"a": '"e2"', "b": '"f1"'})

    assert filled.journaled() == {"a": '"e2"', "b": '"f1"'}


def test_journal_record_is_cleared_only_with_its_etag(filled: Index) -> None:
    filled.journal_deletes({"a": '"e1"', "b": '"f1"', "c": '"g1"'})
    filled.journal_deletes({"a": '"e2"'})  # a newer delete of the same key

    filled.clear_journal({"a": '"e1"', "b": '"f1"', "c": '"other"', "nope": '"x"'})

    assert filled.journaled() == {"a": '"e2"', "c": '"g1"'}
    filled.clear_journal({})
    filled.clear_journal({"a": '"e2"', "c": '"g1"'})
    assert filled.journaled() == {}


def test_journal_works_without_settings_and_outlives_a_rebuild(index: Index) -> None:
    index.journal_deletes({"k": '"e"'})
    assert index.journaled() == {"k": '"e"'}

    rebuild = index.start_rebuild(KEY)
    rebuild.upsert(NEW)
    rebuild.commit(NEW_SETTINGS)
    rebuild.finish()

    assert index.journaled() == {"k": '"e"'}


def test_fresh_index_has_no_journal(index: Index) -> None:
    assert index.journaled() == {}
    assert index.journaled(["a"]) == {}
    index.clear_journal({"a": '"x"'})
    assert index.settings() is None


# --- the put journal --------------------------------------------------------------------------


def records(index: Index, keys: list[str] | None = None) -> list[tuple[str, str, str]]:
    """The put journal as (key, etag, run), in the order read (without the heartbeat)."""
    return [(r.key, r.etag, r.run) for r in index.put_intents(keys)]


def test_put_journal_records_key_etag_and_run(filled: Index, open_index: Any) -> None:
    assert filled.put_intents() == []
    assert filled.put_intents(["a"]) == []
    before = time.time()
    filled.journal_puts({"b": '"etag-b"', "a": '"etag-a"'}, "run-1")

    assert records(filled) == [("a", '"etag-a"', "run-1"), ("b", '"etag-b"', "run-1")]
    assert records(filled, ["a", "zz", "a"]) == [("a", '"etag-a"', "run-1")]
    assert filled.put_intents([]) == []
    assert records(open_index(), ["b"]) == [("b", '"etag-b"', "run-1")]  # durable
    # Each record carries when its run last showed it was alive (Unix time).
    for record in filled.put_intents():
        assert record.at is not None and before - 1 <= record.at <= time.time() + 1
    # Journaling changes no entry: queries still find them as they were.
    assert filled.etags(["a", "b"]) == {"a": '"etag-a"', "b": '"etag-b"'}
    assert sorted(keys(filled.find())) == sorted(keys(ENTRIES))


def test_put_journal_keeps_one_record_per_key_and_run(filled: Index) -> None:
    """Two runs replacing the same entry each keep their own record: the second does not
    overwrite the first, so the first run, killed after its upload, still leaves its trace."""
    filled.journal_puts({"a": '"e1"', "b": '"f1"'}, "run-1")
    filled.journal_puts({"a": '"e1"'}, "run-2")
    filled.journal_puts({"a": '"e2"'}, "run-1")  # the same run again: its record is replaced

    assert records(filled) == [
        ("a", '"e2"', "run-1"),
        ("a", '"e1"', "run-2"),
        ("b", '"f1"', "run-1"),
    ]
    assert records(filled, ["a"]) == [("a", '"e2"', "run-1"), ("a", '"e1"', "run-2")]


def test_put_journal_record_is_cleared_only_with_its_key_etag_and_run(filled: Index) -> None:
    filled.journal_puts({"a": '"e1"', "b": '"f1"', "c": '"g1"'}, "run-1")
    filled.journal_puts({"a": '"e1"'}, "run-2")  # another run replacing the same entry

    filled.clear_put_intents(
        [
            PutIntent("a", '"e1"', "run-1"),  # run-2's record of "a" stays
            PutIntent("b", '"f1"', "run-1"),
            PutIntent("c", '"other"', "run-1"),
            PutIntent("c", '"g1"', "run-3"),
            PutIntent("nope", '"x"', "run-1"),
        ]
    )

    assert records(filled) == [("a", '"e1"', "run-2"), ("c", '"g1"', "run-1")]
    filled.clear_put_intents([])
    filled.clear_put_intents(filled.put_intents())
    assert filled.put_intents() == []


def test_put_journal_heartbeat_refreshes_only_its_runs_records(filled: Index) -> None:
    filled.journal_puts({"a": '"e1"', "b": '"f1"'}, "run-1")
    filled.journal_puts({"a": '"e1"'}, "run-2")
    first = {(r.key, r.run): r.at for r in filled.put_intents()}
    time.sleep(0.05)  # the clock must move for a refresh to show
    filled.beat_puts("run-1")
    filled.beat_puts("no-such-run")

    now = {(r.key, r.run): r.at for r in filled.put_intents()}
    assert now[("a", "run-2")] == first[("a", "run-2")]
    for record in (("a", "run-1"), ("b", "run-1")):
        assert now[record] is not None and first[record] is not None
        assert now[record] > first[record]
    assert records(filled) == [
        ("a", '"e1"', "run-1"),
        ("a", '"e1"', "run-2"),
        ("b", '"f1"', "run-1"),
    ]

    filled.beat_puts("run-1", alive=False)  # the run ended: its records are a dead run's
    ended = [(r.key, r.run) for r in filled.put_intents() if r.at is None]
    assert ended == [("a", "run-1"), ("b", "run-1")]
    assert len(filled.put_intents()) == 3


def test_put_journal_of_the_earlier_layout_is_read_cleared_and_kept_on_writes(
    filled: Index, open_index: Any
) -> None:
    """An index whose put journal an earlier s3idx wrote (one record per key, no heartbeat):
    its records are read (with no heartbeat: their run's liveness is unknown), kept when
    this version journals, and cleared exactly."""
    tamper_with(filled).earlier_put_journal({"a": ('"e1"', "old-1"), "b": ('"f1"', "old-1")})
    index = open_index()
    assert records(index) == [("a", '"e1"', "old-1"), ("b", '"f1"', "old-1")]
    assert [r.at for r in index.put_intents(["a"])] == [None]

    index.journal_puts({"a": '"e1"', "c": '"g1"'}, "run-2")
    assert records(index) == [
        ("a", '"e1"', "old-1"),
        ("a", '"e1"', "run-2"),
        ("b", '"f1"', "old-1"),
        ("c", '"g1"', "run-2"),
    ]
    index.clear_put_intents([PutIntent("a", '"e1"', "old-1"), PutIntent("b", '"x"', "old-1")])
    assert records(index, ["a", "b"]) == [("a", '"e1"', "run-2"), ("b", '"f1"', "old-1")]
    index.clear_put_intents(index.put_intents())
    assert index.put_intents() == []


def test_put_journal_outlives_a_rebuild_and_its_writes_are_logged(filled: Index) -> None:
    rebuild = filled.start_rebuild(KEY)
    filled.journal_puts({"a": '"etag-a"'}, "run-1")
    assert "a" in changed(rebuild)
    rebuild.upsert(NEW)
    rebuild.commit(NEW_SETTINGS)
    rebuild.finish()

    assert records(filled) == [("a", '"etag-a"', "run-1")]


def test_put_journal_written_at_once_by_two_runs_keeps_both_runs_records(
    index_kind: str, filled: Index, open_index: Any
) -> None:
    """Two puts of the same keys, each journaling them again and again."""
    if index_kind == "mongomock":
        pytest.skip("mongomock's in-memory server is not safe for threads")
    keys = [f"p{i:03d}" for i in range(200)]
    errors: list[BaseException] = []

    def journal(index: Index, run: str) -> None:
        try:
            for _ in range(5):
                index.journal_puts(dict.fromkeys(keys, '"e"'), run)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=journal, args=(open_index(), run)) for run in ("r1", "r2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert records(filled) == [(key, '"e"', run) for key in keys for run in ("r1", "r2")]


def test_fresh_index_has_no_put_journal(index: Index) -> None:
    assert index.put_intents() == []
    assert index.put_intents(["a"]) == []
    index.clear_put_intents([PutIntent("a", '"x"', "r")])
    index.beat_puts("r")
    assert index.settings() is None


# --- the change log while a rebuild runs -----------------------------------------------------


def changed(rebuild: IndexRebuild) -> set[str]:
    found = list(rebuild.changed_keys())
    assert len(found) == len(set(found)), "changed_keys repeats keys"
    return set(found)


def test_writes_while_a_rebuild_runs_are_logged(filled: Index, open_index: Any) -> None:
    filled.upsert([entry("before")])  # before the rebuild: not in its log
    rebuild = filled.start_rebuild(KEY)
    assert changed(rebuild) == set()

    filled.upsert([entry("u1"), entry("u2"), entry("u1")])
    filled.upsert_if([tagged("a", '"a2"'), tagged("ins", '"i"')], {"a": '"etag-a"', "ins": None})
    filled.delete(["b", "never-was"])
    filled.delete_if({"c": '"etag-c"'})
    filled.journal_deletes({"d": '"etag-d"'})
    # Another handle (another process, in real life) logs too: the flag is in the index.
    open_index().upsert([entry("other-handle")])

    expected = {"u1", "u2", "a", "ins", "b", "c", "d", "other-handle"}
    assert expected <= changed(rebuild) <= expected | {"never-was"}
    assert by_key(filled.find())["u1"] == entry("u1")  # the writes themselves happened


def test_writes_between_commit_and_finish_are_logged_and_finish_ends_the_log(
    filled: Index,
) -> None:
    rebuild = filled.start_rebuild(KEY)
    filled.upsert([entry("during")])
    rebuild.upsert(NEW)
    rebuild.commit(NEW_SETTINGS)
    filled.upsert([entry("after-commit")])  # the post-swap reconcile needs this one

    assert changed(rebuild) == {"during", "after-commit"}

    rebuild.finish()
    assert changed(rebuild) == set()
    filled.upsert([entry("after-finish")])
    filled.delete_if({"x": '"etag-x"'})
    assert changed(rebuild) == set()
    assert changed(filled.start_rebuild(KEY)) == set()


def test_abort_ends_the_log(filled: Index) -> None:
    rebuild = filled.start_rebuild(KEY)
    filled.upsert([entry("during")])
    rebuild.abort()

    filled.upsert([entry("after")])
    again = filled.start_rebuild(KEY, resume=True)  # nothing to resume: a fresh one
    assert changed(again) == set()


def test_a_resumed_rebuild_keeps_its_log_and_a_fresh_one_starts_empty(
    filled: Index, open_index: Any
) -> None:
    first = filled.start_rebuild(KEY)
    first.upsert(NEW[:1])
    filled.upsert([entry("during")])
    # ...and the rebuilding process dies; writers go on.
    open_index().delete(["b"])

    resumed = open_index().start_rebuild(KEY, resume=True)
    assert changed(resumed) == {"during", "b"}

    fresh = open_index().start_rebuild(KEY)
    assert changed(fresh) == set()
    filled.upsert([entry("later")])
    assert changed(fresh) == {"later"}


def test_writes_to_a_lost_index_are_logged_while_it_is_rebuilt(index: Index) -> None:
    rebuild = index.start_rebuild(KEY)  # the live index has no settings, no entries
    index.journal_deletes({"j": '"e"'})
    index.delete_if({"j": '"e"'})
    index.delete(["k"])

    assert changed(rebuild) >= {"j"}
    assert changed(rebuild) <= {"j", "k"}


def test_rebuild_delete_removes_from_the_fresh_index_only(filled: Index) -> None:
    rebuild = filled.start_rebuild(KEY)
    rebuild.upsert(NEW)
    rebuild.delete(["x", "nope"])
    rebuild.delete([])

    assert rebuild.has_keys(["a", "x", "y"]) == {"a", "y"}
    assert by_key(filled.find()) == by_key(ENTRIES)  # the live index is untouched
    rebuild.commit(NEW_SETTINGS)
    assert sorted(keys(filled.find())) == ["a", "y"]
    assert keys(filled.find({"n": 101})) == []


# --- several processes on one index ----------------------------------------------------------

CAS_KEYS = [f"k{n}" for n in range(4)]


def _cas_worker(
    make: Callable[[], Index], worker: int, rounds: int, barrier: Any, out: Any
) -> None:
    """Reads the ETags, then compare-and-sets every key from what it read; reports its wins."""
    rng = random.Random(worker)
    index = make()
    wins: list[tuple[str, str | None, str]] = []
    try:
        for step in range(rounds):
            # Every round starts in every process at once: a process that finished starting
            # first cannot run all its rounds alone while the others are still importing.
            barrier.wait()
            read = index.etags(CAS_KEYS)
            expected = {k: read.get(k) for k in CAS_KEYS}
            time.sleep(rng.random() * 0.003)  # widen the window between read and write
            written = {k: f'"w{worker}-{step}-{k}"' for k in CAS_KEYS}
            items = [tagged(k, written[k], prev=expected[k]) for k in CAS_KEYS]
            lost = index.upsert_if(items, expected)
            wins.extend((k, expected[k], written[k]) for k in CAS_KEYS if k not in lost)
    finally:
        index.close()
        out.put((worker, wins))


def test_compare_and_set_from_several_processes_loses_no_write(
    index_kind: str, index: Index, open_index: Any
) -> None:
    if index_kind == "mongomock":
        pytest.skip("an in-memory server no other process can reach")
    make = open_index.make
    index.configure(KEY, ["prev"])
    context = multiprocessing.get_context("spawn")
    workers, rounds = 4, 25
    barrier, out = context.Barrier(workers, timeout=240), context.Queue()
    processes = [
        context.Process(target=_cas_worker, args=(make, w, rounds, barrier, out))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    reports = dict(out.get(timeout=300) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    won = sum(len(w) for w in reports.values())
    assert won < workers * rounds * len(CAS_KEYS), "no write ever conflicted: no race was run"
    final = index.etags(CAS_KEYS)
    entries = by_key(index.find())
    for key in CAS_KEYS:
        steps = [(prev, new) for w in reports.values() for k, prev, new in w if k == key]
        # Linearisable: the successful writes form one chain from "no entry" to the final
        # ETag; two wins from the same read would be a lost write.
        successor = dict(steps)
        assert len(successor) == len(steps), f"{key}: two writes won from the same read"
        chain, at = [], None
        while at in successor:
            at = successor[at]
            chain.append(at)
        assert len(chain) == len(steps), f"{key}: a win is not on the chain"
        assert chain[-1] == final[key]
        assert entries[key]["prev"] == (chain[-2] if len(chain) > 1 else None)


# --- a rebuild split into shards -------------------------------------------------------------


def test_shards_fill_one_staging_index_and_exactly_one_swaps_it_in(
    filled: Index, open_index: Any
) -> None:
    first = filled.start_rebuild(KEY, shard=Shard(0, 2))
    second = open_index().start_rebuild(KEY, shard=Shard(1, 2))
    first.upsert([NEW[0]])
    second.upsert(NEW[1:])
    first.save_checkpoint({"listed": 1})
    second.save_checkpoint({"listed": 2})
    status = filled.rebuild_status()
    assert status is not None
    assert (status.key_field, status.shards, status.joined, status.done) == (KEY, 2, (0, 1), ())
    assert not status.swapping
    assert by_key(filled.find()) == by_key(ENTRIES)  # the live index is untouched

    assert first.checkpoint() == {"listed": 1}
    assert second.shard_checkpoints() == {0: {"listed": 1}, 1: {"listed": 2}}
    first.shard_done(0)
    assert not first.claim_swap()  # shard 1 is not done: nobody may swap yet
    assert second.shards_done() == {0}
    second.shard_done(1)
    assert first.shards_done() == {0, 1}
    assert second.claim_swap()
    assert not first.claim_swap()
    swapping = filled.rebuild_status()
    assert swapping is not None and swapping.swapping and swapping.done == (0, 1)

    second.commit(NEW_SETTINGS)
    second.finish()
    assert by_key(filled.find()) == by_key(NEW)
    assert filled.rebuild_status() is None
    # The next sharded rebuild starts clean: nothing of this one's shards is left.
    again = filled.start_rebuild(KEY, shard=Shard(0, 2))
    assert again.checkpoint() is None
    assert again.shards_done() == set()
    assert again.shard_checkpoints() == {}


def test_a_rebuild_status_without_shards(filled: Index) -> None:
    assert filled.rebuild_status() is None
    rebuild = filled.start_rebuild(KEY)
    status = filled.rebuild_status()
    assert status is not None
    assert (status.key_field, status.shards, status.done) == (KEY, None, ())
    assert status.started is not None
    assert abs((datetime.now(UTC) - status.started).total_seconds()) < 60
    assert rebuild.claim_swap()  # alone, the one rebuild swaps
    rebuild.abort()
    assert filled.rebuild_status() is None


def test_a_shard_of_another_rebuild_is_refused_with_what_to_do(
    filled: Index, open_index: Any
) -> None:
    first = filled.start_rebuild(KEY, shard=Shard(0, 2))
    first.upsert([NEW[0]])
    first.save_checkpoint({"listed": 1})

    with pytest.raises(IndexSettingsError, match="split into 2 shards") as other_n:
        open_index().start_rebuild(KEY, shard=Shard(1, 3))
    assert "--shard I/2" in (other_n.value.hint or "")
    with pytest.raises(IndexSettingsError, match="already started") as twice:
        open_index().start_rebuild(KEY, shard=Shard(0, 2))
    assert "--resume" in (twice.value.hint or "") and "--restart" in (twice.value.hint or "")
    with pytest.raises(IndexSettingsError, match="key field"):
        open_index().start_rebuild("other_key", shard=Shard(1, 2))
    with pytest.raises(IndexSettingsError, match="split into 2 shards"):
        open_index().start_rebuild(KEY, resume=True)  # without --shard

    resumed = open_index().start_rebuild(KEY, shard=Shard(0, 2), resume=True)
    assert resumed.checkpoint() == {"listed": 1}
    assert resumed.has_keys(["a", "x"]) == {"a"}
    status = filled.rebuild_status()
    assert status is not None and status.joined == (0,)


def test_restart_discards_only_an_unrelated_rebuild(filled: Index, open_index: Any) -> None:
    stale = filled.start_rebuild(KEY, shard=Shard(0, 2))
    stale.upsert(NEW)
    stale.save_checkpoint({"listed": 3})

    fresh = open_index().start_rebuild(KEY, shard=Shard(1, 3), restart=True)
    assert fresh.checkpoint() is None
    assert fresh.has_keys(["a", "x", "y"]) == set()
    # Shards restarting together: the next one joins the new rebuild, it does not discard it.
    joined = open_index().start_rebuild(KEY, shard=Shard(0, 3), restart=True)
    joined.upsert([NEW[0]])
    assert fresh.has_keys(["a"]) == {"a"}
    status = filled.rebuild_status()
    assert status is not None and (status.shards, status.joined) == (3, (0, 1))
    with pytest.raises(S3idxError):
        stale.save_checkpoint({"listed": 4})  # the discarded one finds out at its next step


def test_a_sharded_rebuild_meets_an_unsharded_one(filled: Index, open_index: Any) -> None:
    plain_rebuild = filled.start_rebuild(KEY)
    plain_rebuild.upsert(NEW)

    with pytest.raises(IndexSettingsError, match="without --shard") as refused:
        open_index().start_rebuild(KEY, shard=Shard(0, 2))
    assert "--resume" in (refused.value.hint or "")

    sharded = open_index().start_rebuild(KEY, shard=Shard(0, 2), restart=True)
    assert sharded.has_keys(["a", "x"]) == set()
    # A plain fresh start discards a sharded rebuild, as it discards any rebuild.
    again = open_index().start_rebuild(KEY)
    assert again.shards_done() == set()
    status = filled.rebuild_status()
    assert status is not None and status.shards is None


def _two_shards_done(open_index: Any) -> list[Any]:
    """Two shards of one rebuild, each having written its entry and marked itself done."""
    shards = [open_index().start_rebuild(KEY, shard=Shard(i, 2)) for i in range(2)]
    for number, rebuild in enumerate(shards):
        rebuild.upsert([NEW[number]])
        rebuild.shard_done(number)
    return shards


def test_a_resumed_shard_takes_over_a_swap_whose_claimer_died(
    filled: Index, open_index: Any
) -> None:
    shards = _two_shards_done(open_index)
    assert shards[1].claim_swap()
    # ...and the claimer dies before its swap.
    assert not shards[0].claim_swap()
    resumed = open_index().start_rebuild(KEY, shard=Shard(0, 2), resume=True)
    assert resumed.claim_swap()
    resumed.commit(NEW_SETTINGS)
    resumed.finish()
    assert sorted(keys(filled.find())) == ["a", "x"]


def test_a_shard_that_claims_the_swap_after_another_committed_does_not_win(
    filled: Index, open_index: Any
) -> None:
    shards = _two_shards_done(open_index)
    late = shards[1]
    # The late shard saw every shard done just before the other one swapped...
    seen = late.shards_done()
    late.shards_done = lambda: seen  # type: ignore[method-assign]
    assert shards[0].claim_swap()
    shards[0].commit(NEW_SETTINGS)
    shards[0].finish()
    # ...and claims after that swap: the rebuild is over, nothing is left to swap.
    assert not late.claim_swap()
    assert filled.rebuild_status() is None
    assert sorted(keys(filled.find())) == ["a", "x"]
    database = getattr(getattr(filled, "_c", None), "database", None)
    if database is not None:  # MongoDB: no claim is left behind in the meta collection
        meta = database[filled._c.meta.name]  # type: ignore[attr-defined]
        assert [d["_id"] for d in meta.find({}) if "__rebuild" in str(d["_id"])] == []


def _shard_worker(
    make: Callable[[], Index], shard: int, count: int, rounds: int, barrier: Any, out: Any
) -> None:
    """Each round: join the rebuild, write, mark done, then claim the swap at the same moment
    as every other shard; the one that wins swaps."""
    index = make()
    claims: list[bool] = []
    try:
        for round_ in range(rounds):
            barrier.wait()
            # Started together, a few milliseconds apart or not: exactly one run is created,
            # whatever the timing, and the other shards join it.
            time.sleep(random.uniform(0, 0.02))
            rebuild = index.start_rebuild(KEY, shard=Shard(shard, count))
            rebuild.upsert([entry(f"r{round_}-s{shard}")])
            rebuild.save_checkpoint({"shard": shard})
            rebuild.shard_done(shard)
            barrier.wait()
            won = rebuild.claim_swap()
            claims.append(won)
            if won:
                rebuild.commit(IndexSettings(KEY, ()))
                rebuild.finish()
            barrier.wait()
    finally:
        index.close()
        out.put((shard, claims))


def test_exactly_one_of_several_processes_claims_the_swap(
    index_kind: str, index: Index, open_index: Any
) -> None:
    if index_kind == "mongomock":
        pytest.skip("an in-memory server no other process can reach")
    count, rounds = 4, 3
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(count, timeout=240), context.Queue()
    processes = [
        context.Process(
            target=_shard_worker, args=(open_index.make, s, count, rounds, barrier, out)
        )
        for s in range(count)
    ]
    for process in processes:
        process.start()
    reports = dict(out.get(timeout=300) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    for round_ in range(rounds):
        winners = [s for s, claims in reports.items() if claims[round_]]
        assert len(winners) == 1, f"round {round_}: {winners} claimed the swap"
    # The last round's swap holds every shard's entry of that round, and nothing earlier.
    assert sorted(keys(index.find())) == [f"r{rounds - 1}-s{s}" for s in range(count)]
    assert index.rebuild_status() is None
    database = getattr(getattr(index, "_c", None), "database", None)
    if database is not None:  # MongoDB: each run's staging collection went with its commit
        assert [n for n in database.list_collection_names() if "__rebuild" in n] == []


# --- what s3idx did not write ----------------------------------------------------------------
# An entry or a setting changed by hand is damage: every read of it says so, naming the index
# and what is wrong (DamagedIndexError, exit 5 at the CLI), with rebuild-index as the way out,
# and a rebuild does get the index back.

REBUILD_HINT = (
    "the bucket is the truth: run s3idx rebuild-index (with the same --store and --index) to "
    "rebuild the index from it"
)


def _damaged(index: Index, action: Callable[[], object], what: str) -> None:
    with pytest.raises(DamagedIndexError) as caught:
        action()
    assert caught.value.message == f"index {index.location} is damaged: {what}"
    assert caught.value.hint == REBUILD_HINT
    assert caught.value.exit_status == ExitStatus.UNAVAILABLE


def _rebuilt(index: Index) -> None:
    """A rebuild from the truth (here: ENTRIES) replaces whatever was damaged."""
    rebuild = index.start_rebuild(KEY, FIELDS)
    rebuild.upsert(ENTRIES)
    rebuild.commit(IndexSettings(KEY, FIELDS))
    rebuild.finish()
    assert index.settings() == IndexSettings(KEY, FIELDS)
    assert by_key(index.find()) == by_key(ENTRIES)
    assert dict(index.iter_bookkeeping()) == {
        e[KEY]: Bookkeeping.from_dict(e["_s3idx"]) for e in ENTRIES
    }


KEY_DAMAGE: dict[str, tuple[Callable[[Tamper], None], str]] = {
    "missing": (lambda t: t.drop_key_field("b"), "entry 'b' lacks its key field 'fs_id'"),
    "another key": (
        lambda t: t.set_key_field("b", "zz"),
        "entry 'b' holds 'zz' in its key field 'fs_id', not its key",
    ),
    "not a string": (
        lambda t: t.set_key_field("b", 5),
        "entry 'b' holds 5 in its key field 'fs_id', not its key",
    ),
}


@pytest.mark.parametrize("damage", KEY_DAMAGE)
def test_an_entry_whose_key_field_was_changed_is_damage(
    filled: Index, open_index: Any, damage: str
) -> None:
    change, what = KEY_DAMAGE[damage]
    change(tamper_with(filled))
    index = open_index()
    _damaged(index, lambda: list(index.find()), what)
    _damaged(index, lambda: list(index.find({"n": 1.5})), what)
    _damaged(index, lambda: list(index.find(fields=["n"])), what)
    _damaged(index, lambda: index.bookkeeping(["a", "b"]), what)
    assert keys(index.find({KEY: "a"})) == ["a"]  # the other entries are still read
    _rebuilt(index)


BOOKKEEPING_DAMAGE = {
    "etag": "etag {value} is not a non-empty string",
    "size": "size {value} is not a number of bytes",
    "sha256": "sha256 {value} is not a string",
    "codec": "codec {value} is not a non-empty string",
}


@pytest.mark.parametrize("name", BOOKKEEPING_DAMAGE)
def test_an_entry_whose_bookkeeping_was_changed_is_damage(
    filled: Index, open_index: Any, name: str
) -> None:
    tamper = tamper_with(filled)
    tamper.spoil_bookkeeping("b", name)
    garbage = type(tamper)._GARBAGE[name]  # type: ignore[attr-defined]
    reason = BOOKKEEPING_DAMAGE[name].format(value=repr(garbage))
    what = f"entry 'b' has damaged _s3idx bookkeeping: {reason}"
    index = open_index()
    _damaged(index, lambda: list(index.find()), what)
    _damaged(index, lambda: index.bookkeeping(["b"]), what)
    _damaged(index, lambda: list(index.iter_bookkeeping()), what)
    if name == "etag":
        _damaged(index, lambda: index.etags(["b"]), what)
    _rebuilt(index)


NOT_FIELDS = "its recorded fields are not a list of field paths"
NOT_PENDING = "its recorded pending fields are not a list of fields with their entry counts"
SETTINGS_DAMAGE: dict[str, tuple[str, Any, str]] = {
    "fields garbage": ("fields", "garbage", NOT_FIELDS),
    "fields of numbers": ("fields", [1, 2], NOT_FIELDS),
    "fields an object": ("fields", {"n": 1}, NOT_FIELDS),
    "fields with an empty name": ("fields", ["n", ""], NOT_FIELDS),
    "key field empty": ("key_field", "", "its recorded key field is not a field name"),
    "pending garbage": ("pending", "garbage", NOT_PENDING),
    "pending of names": ("pending", ["n"], NOT_PENDING),
}


@pytest.mark.parametrize("damage", SETTINGS_DAMAGE)
def test_settings_changed_by_hand_are_damage(filled: Index, open_index: Any, damage: str) -> None:
    name, value, what = SETTINGS_DAMAGE[damage]
    tamper_with(filled).set_setting(name, value)
    what = f"{what}: {value!r}"
    fresh = open_index()  # each read on a handle of its own: nothing known before it
    _damaged(fresh, fresh.settings, what)
    fresh = open_index()
    _damaged(fresh, lambda: list(fresh.find()), what)
    fresh = open_index()
    _damaged(fresh, lambda: fresh.configure(KEY, ["n"]), what)
    _rebuilt(open_index())


def test_a_journal_record_changed_by_hand_is_damage_and_a_rebuild_drops_it(
    filled: Index, open_index: Any
) -> None:
    garbage = tamper_with(filled).spoil_journal("b")
    filled.journal_deletes({"c": '"etag-c"'})
    index = open_index()
    what = f"its delete journal holds 'b' -> {garbage!r}, not a key and an ETag"
    _damaged(index, index.journaled, what)
    _damaged(index, lambda: index.journaled(["b"]), what)
    # A rebuild's start drops what names no delete; the sound record stays, for delete or sync.
    index.start_rebuild(KEY, FIELDS).abort()
    assert index.journaled() == {"c": '"etag-c"'}


RESTART_HINT = (
    "start the rebuild afresh: run rebuild-index without --resume (with --shard, add --restart)"
)


def test_a_rebuild_record_changed_by_hand_is_damage_and_a_fresh_rebuild_replaces_it(
    filled: Index, open_index: Any
) -> None:
    tamper_with(filled).spoil_rebuild_state()
    index = open_index()
    for action in (
        index.rebuild_status,
        lambda: index.start_rebuild(KEY, resume=True),
        lambda: index.start_rebuild(KEY, shard=Shard(0, 2)),
    ):
        with pytest.raises(DamagedIndexError) as caught:
            action()
        assert caught.value.message.startswith(
            f"index {index.location} is damaged: its record of a rebuild in progress cannot be "
            "read: "
        )
        assert caught.value.hint == RESTART_HINT
    assert keys(index.find({KEY: "a"})) == ["a"]  # the live index is not damaged
    _rebuilt(index)
    assert index.rebuild_status() is None


def test_a_damaged_rebuild_record_is_restarted_by_a_shard(filled: Index) -> None:
    tamper_with(filled).spoil_rebuild_state()
    rebuild = filled.start_rebuild(KEY, shard=Shard(0, 1), restart=True)
    rebuild.upsert(ENTRIES)
    rebuild.shard_done(0)
    assert rebuild.claim_swap()
    rebuild.commit(IndexSettings(KEY, FIELDS))
    rebuild.finish()
    assert by_key(filled.find()) == by_key(ENTRIES)
    assert filled.rebuild_status() is None


# --- the store an index describes ---------------------------------------------------------------


def test_an_index_records_the_store_it_describes_once_configured(
    index: Index, open_index: Any
) -> None:
    assert index.store_binding() is None
    assert index.bind_store("/stores/a") is None  # nothing configured yet: nothing to bind
    assert index.store_binding() is None
    assert index.settings() is None  # and binding did not make an index where there was none

    index.configure(KEY, FIELDS)
    assert index.bind_store("/stores/a") == "/stores/a"
    assert index.store_binding() == "/stores/a"
    assert open_index().store_binding() == "/stores/a"
    # The first recorded stays: the caller sees the other store and refuses it.
    assert open_index().bind_store("s3://bucket/prefix") == "/stores/a"
    assert open_index().store_binding() == "/stores/a"
    assert index.settings() == IndexSettings(KEY, FIELDS)  # the settings are untouched


def test_of_writers_binding_an_index_at_once_one_wins(open_index: Any) -> None:
    open_index().configure(KEY, FIELDS)
    stores = [f"/stores/{n}" for n in range(8)]
    seen: list[str | None] = [None] * len(stores)
    start = threading.Barrier(len(stores))

    def bind(n: int) -> None:
        handle = open_index()
        start.wait()
        seen[n] = handle.bind_store(stores[n])

    threads = [threading.Thread(target=bind, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winner = open_index().store_binding()
    assert winner in stores
    assert seen == [winner] * len(stores)  # each was told the one store recorded


@pytest.mark.parametrize("store", ["s3://bucket/new", None])
def test_a_rebuild_records_the_store_it_was_filled_from(
    filled: Index, open_index: Any, store: str | None
) -> None:
    assert filled.bind_store("/stores/old") == "/stores/old"
    rebuild = filled.start_rebuild(KEY)
    rebuild.upsert(NEW)
    assert filled.store_binding() == "/stores/old"  # until the swap

    rebuild.commit(NEW_SETTINGS, store=store)

    assert open_index().store_binding() == store  # None: the old one is not kept either
    assert open_index().settings() == NEW_SETTINGS


def test_a_recorded_store_changed_by_hand_is_damage(filled: Index, open_index: Any) -> None:
    filled.bind_store("/stores/a")
    tamper_with(filled).set_setting("store", "")
    fresh = open_index()
    _damaged(fresh, fresh.store_binding, "its recorded store is not a store location: ''")
