"""Dotted paths with MongoDB's array semantics, and inclusion projection.

Expected values follow MongoDB's matcher (``src/mongo/db/matcher/path.cpp``) and the projection
results pinned in MongoDB's ``jstests/core/query/null_query_semantics.js``.
"""

from __future__ import annotations

from typing import Any

import pytest

from s3idx.errors import InvalidFilterError
from s3idx.query.paths import iter_path_values, project, split_path
from s3idx.query.values import MISSING


def values(document: dict[str, Any], path: str, *, leaf: bool = True) -> list[Any]:
    return list(iter_path_values(document, split_path(path), traverse_leaf_arrays=leaf))


@pytest.mark.parametrize(
    ("document", "path", "expected"),
    [
        ({"a": 1}, "a", [1]),
        ({"a": {"b": 2}}, "a.b", [2]),
        ({"a": {"b": 2}}, "a", [{"b": 2}]),
        ({}, "a", [MISSING]),
        ({"a": None}, "a", [None]),
        # A scalar (or null) before the end of the path is a dead end, not a match for "b".
        ({"a": 4}, "a.b", [MISSING]),
        ({"a": None}, "a.b", [MISSING]),
        ({"a": {}}, "a.b", [MISSING]),
        # An array at the end: each element, then the array itself.
        ({"a": [1, 2]}, "a", [1, 2, [1, 2]]),
        ({"a": []}, "a", [[]]),
        # Only one level is expanded: an inner array is one value.
        ({"a": [[1, 2], 3]}, "a", [[1, 2], 3, [[1, 2], 3]]),
        # Through an array: into each element that is a document.
        ({"a": [{"b": 1}, {"b": 2}]}, "a.b", [1, 2]),
        ({"a": [{"b": 3}, {}]}, "a.b", [3, MISSING]),
        ({"a": [{"b": [1, 2]}]}, "a.b", [1, 2, [1, 2]]),
        ({"a": [{"b": {"c": 5}}, {"b": [{"c": 6}]}]}, "a.b.c", [5, 6]),
        # Scalars and nested arrays inside an array lead nowhere: no value at all.
        ({"a": [1, "x"]}, "a.b", []),
        ({"a": []}, "a.b", []),
        ({"a": [[{"b": 1}]]}, "a.b", []),
    ],
)
def test_iter_path_values(document: dict[str, Any], path: str, expected: list[Any]) -> None:
    assert values(document, path) == expected


@pytest.mark.parametrize(
    ("document", "path", "expected"),
    [
        ({"a": [10, 20]}, "a.1", [20]),
        ({"a": [10, 20]}, "a.2", []),
        # An element reached by position is not expanded, even when it is an array.
        ({"a": [[1, 2]]}, "a.0", [[1, 2]]),
        ({"a": [[{"b": 7}]]}, "a.0.b", [7]),
        # A document element is tried both ways: as a document without a field "0" (MISSING)
        # and as the element at position 0.
        ({"a": [{"x": 1}]}, "a.0", [MISSING, {"x": 1}]),
        ({"a": [{"b": 1}]}, "a.0.b", [MISSING, 1]),
        ({"a": [{"0": "field"}]}, "a.0", ["field", {"0": "field"}]),
        # On a document a numeric step is an ordinary field name.
        ({"a": {"0": 5}}, "a.0", [5]),
        ({"a": {"1": 5}}, "a.0", [MISSING]),
    ],
)
def test_numeric_steps(document: dict[str, Any], path: str, expected: list[Any]) -> None:
    assert values(document, path) == expected


def test_leaf_arrays_whole_for_array_operators() -> None:
    assert values({"a": [1, [2]]}, "a", leaf=False) == [[1, [2]]]
    assert values({"a": [{"b": [1]}, {"b": 2}]}, "a.b", leaf=False) == [[1], 2]


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a."])
def test_empty_path_parts_are_refused(path: str) -> None:
    with pytest.raises(InvalidFilterError) as caught:
        split_path(path)
    assert str(caught.value) == f"invalid field path {path!r}: empty part"


# --- projection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    # MongoDB's own expectations for projecting {"a.b": 1} (null_query_semantics.js).
    [
        ({"a": {}}, {"a": {}}),
        ({"a": None}, {}),
        ({"a": 4}, {}),
        ({"a": {"b": "hi"}}, {"a": {"b": "hi"}}),
        ({"a": {"b": None}}, {"a": {"b": None}}),
        ({}, {}),
        ({"a": [[]]}, {"a": []}),
        ({"a": []}, {"a": []}),
        (
            {"a": [{"b": 1}, {"b": 3}, {"b": "string"}]},
            {"a": [{"b": 1}, {"b": 3}, {"b": "string"}]},
        ),
        ({"a": [{"b": 3}, {}]}, {"a": [{"b": 3}, {}]}),
        ({"a": [None, None]}, {"a": []}),
        ({"a": [1, "string", 4]}, {"a": []}),
    ],
)
def test_project_dotted_path(document: dict[str, Any], expected: dict[str, Any]) -> None:
    assert project(document, ["a.b"]) == expected


def test_project_keeps_document_order_and_drops_the_rest() -> None:
    document = {"z": 1, "a": {"y": 2, "b": 3, "c": 4}, "m": [1, 2]}
    projected = project(document, ["m", "a.b", "z"])
    assert projected == {"z": 1, "a": {"b": 3}, "m": [1, 2]}
    assert list(projected) == ["z", "a", "m"]


def test_project_whole_values_at_the_end_of_the_path() -> None:
    document = {"a": {"b": [1, {"c": 2}, [3]]}, "d": {"e": {"f": 1}}}
    assert project(document, ["a.b", "d"]) == document


def test_project_through_arrays_of_documents() -> None:
    document = {"a": [{"b": {"c": 1, "d": 2}}, 5, [{"b": {"c": 9}}], {"b": [{"c": 3, "x": 0}, 7]}]}
    assert project(document, ["a.b.c"]) == {"a": [{"b": {"c": 1}}, {"b": [{"c": 3}]}]}


def test_project_several_paths_under_one_prefix() -> None:
    document = {"a": {"b": 1, "c": 2, "d": 3}, "e": [{"f": 1, "g": 2, "h": 3}]}
    assert project(document, ["a.b", "a.d", "e.f", "e.h"]) == {
        "a": {"b": 1, "d": 3},
        "e": [{"f": 1, "h": 3}],
    }


def test_project_overlapping_paths_keep_the_shorter() -> None:
    document = {"a": {"b": 1, "c": 2}}
    assert project(document, ["a.b", "a"]) == document
    assert project(document, ["a", "a.b"]) == document


def test_project_missing_paths_are_absent() -> None:
    assert project({"a": 1}, ["b", "c.d"]) == {}
    assert project({"a": {"x": 1}}, ["a.b.c"]) == {"a": {}}


def test_project_does_not_alias_nested_containers() -> None:
    document = {"a": [{"b": 1}]}
    projected = project(document, ["a.b"])
    projected["a"][0]["b"] = 99
    assert document == {"a": [{"b": 1}]}
