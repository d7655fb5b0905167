"""MongoDB sort order (manual: "Sort Consistency", "Comparison/Sort Order") and the CLI syntax."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3idx.errors import InvalidFilterError
from s3idx.query.sort import document_sort_key, parse_sort, sort_entries

WHEN = datetime(2024, 1, 1, tzinfo=UTC)


def order(entries: list[dict[str, Any]], spec: list[tuple[str, int]], **kw: int) -> list[Any]:
    return [e["id"] for e in sort_entries(entries, spec, **kw)]


# --- parse_sort ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a", [("a", 1)]),
        ("a,-b.c", [("a", 1), ("b.c", -1)]),
        ("+a, -b ,c", [("a", 1), ("b", -1), ("c", 1)]),
        ("- a", [("a", -1)]),
    ],
)
def test_parse_sort(text: str, expected: list[tuple[str, int]]) -> None:
    assert parse_sort(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid sort '': empty field name"),
        ("a,", "invalid sort 'a,': empty field name"),
        ("a,,b", "invalid sort 'a,,b': empty field name"),
        ("-", "invalid sort '-': empty field name"),
        ("+", "invalid sort '+': empty field name"),
        ("a..b", "invalid sort field: invalid field path 'a..b': empty part"),
        ("a,-a", "sort field 'a' is given twice"),
    ],
)
def test_parse_sort_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidFilterError) as caught:
        parse_sort(text)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([("a", 0)], "sort direction of 'a' must be 1 or -1, got 0"),
        ([("a", True)], "sort direction of 'a' must be 1 or -1, got True"),
        (["a"], "a sort item must be (field, direction), got 'a'"),
    ],
)
def test_sort_spec_errors(spec: Any, message: str) -> None:
    with pytest.raises(InvalidFilterError) as caught:
        sort_entries([], spec)
    assert caught.value.message == message


# --- order -----------------------------------------------------------------------------------


def test_type_order_null_numbers_strings_objects_arrays_bools_dates() -> None:
    entries = [
        {"id": "date", "v": WHEN},
        {"id": "bool", "v": False},
        {"id": "nested-array", "v": [[1]]},
        {"id": "object", "v": {"x": 1}},
        {"id": "string", "v": "a"},
        {"id": "float", "v": 1.5},
        {"id": "int", "v": 1},
        {"id": "null", "v": None},
        {"id": "missing"},
    ]
    assert order(entries, [("v", 1)]) == [
        "null",
        "missing",
        "int",
        "float",
        "string",
        "object",
        "nested-array",
        "bool",
        "date",
    ]
    assert order(entries, [("v", -1)]) == [
        "date",
        "bool",
        "nested-array",
        "object",
        "string",
        "float",
        "int",
        "null",
        "missing",
    ]


def test_numbers_compare_across_int_and_float() -> None:
    entries = [
        {"id": "a", "v": 2},
        {"id": "b", "v": 1.5},
        {"id": "c", "v": -3},
        {"id": "d", "v": 2.0},
    ]
    assert order(entries, [("v", 1)]) == ["c", "b", "a", "d"]


def test_arrays_sort_by_smallest_ascending_and_largest_descending() -> None:
    entries = [
        {"id": "one-to-nine", "v": [9, 1]},
        {"id": "five", "v": 5},
        {"id": "three-four", "v": [4, 3]},
    ]
    assert order(entries, [("v", 1)]) == ["one-to-nine", "three-four", "five"]
    assert order(entries, [("v", -1)]) == ["one-to-nine", "five", "three-four"]


def test_empty_array_sorts_before_null_and_missing() -> None:
    entries = [{"id": "null", "v": None}, {"id": "missing"}, {"id": "empty", "v": []}]
    assert order(entries, [("v", 1)]) == ["empty", "null", "missing"]
    assert order(entries, [("v", -1)]) == ["null", "missing", "empty"]


def test_paths_through_arrays_of_documents() -> None:
    entries = [
        {"id": "a", "v": [{"x": 5}, {"x": 2}]},
        {"id": "b", "v": [{"x": 3}, {"y": 1}]},  # the element without x is a null key
        {"id": "c", "v": [1, 2]},  # no documents: a null key
        {"id": "d", "v": {"x": 4}},
    ]
    assert order(entries, [("v.x", 1)]) == ["b", "c", "a", "d"]
    assert order(entries, [("v.x", -1)]) == ["a", "d", "b", "c"]


def test_compound_sort_and_ties_keep_input_order() -> None:
    entries = [
        {"id": 1, "a": 1, "b": "x"},
        {"id": 2, "a": 2, "b": "x"},
        {"id": 3, "a": 1, "b": "y"},
        {"id": 4, "a": 1, "b": "x"},
    ]
    assert order(entries, [("b", 1), ("a", -1)]) == [2, 1, 4, 3]
    assert order(entries, [("b", 1)]) == [1, 2, 4, 3]


def test_compound_keys_through_one_array_are_taken_per_element() -> None:
    # Keys are (x, y) pairs of the same element: (1, 5) and (2, 0); ascending takes (1, 5).
    doc = {"a": [{"x": 1, "y": 5}, {"x": 2, "y": 0}]}
    assert document_sort_key(doc, [("a.x", 1), ("a.y", 1)]) == (1, 5)
    assert document_sort_key(doc, [("a.x", -1), ("a.y", 1)]) == (2, 0)


def test_parallel_arrays_cannot_be_sorted() -> None:
    with pytest.raises(InvalidFilterError) as caught:
        sort_entries([{"a": [1], "b": [2]}], [("a", 1), ("b", 1)])
    assert caught.value.message == "cannot sort with keys that are parallel arrays"


def test_skip_and_limit() -> None:
    entries = [{"id": n, "v": (n * 7) % 10} for n in range(10)]
    full = order(entries, [("v", 1)])
    assert order(entries, [("v", 1)], skip=2, limit=3) == full[2:5]
    assert order(entries, [("v", 1)], skip=8, limit=5) == full[8:]
    assert order(entries, [], skip=1, limit=2) == [1, 2]


def test_limit_holds_only_skip_plus_limit_entries() -> None:
    held: list[int] = []

    def entries() -> Any:
        for n in range(1000):
            held.append(n)
            yield {"id": n, "v": -n}

    assert order(list(entries()), [("v", 1)], limit=2) == [999, 998]
    # Without a sort, the input is not read past skip + limit.
    held.clear()
    assert order(entries(), [], skip=3, limit=2) == [3, 4]  # type: ignore[arg-type]
    assert len(held) <= 6


_scalars = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.sampled_from(["", "a", "b", "ab"]),
    st.booleans(),
)
_values = st.one_of(_scalars, st.lists(st.integers(-5, 5), max_size=3))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.fixed_dictionaries({}, optional={"v": _values, "w": _scalars}), max_size=12),
    st.integers(0, 5),
    st.integers(0, 5),
    st.sampled_from([1, -1]),
)
def test_limit_is_a_prefix_of_the_full_sort(
    entries: list[dict[str, Any]], skip: int, limit: int, direction: int
) -> None:
    for n, entry in enumerate(entries):
        entry["id"] = n
    spec = [("v", direction), ("w", 1)]
    full = order(entries, spec)
    expected = full[skip : skip + limit] if limit else full[skip:]
    assert order(entries, spec, skip=skip, limit=limit) == expected
