"""The forms s3idx sends FerretDB (index/ferretdb_filter.py); their answers are held to every
other backend's by tests/index/test_index_conformance.py."""

from __future__ import annotations

from typing import Any

import pytest

from s3idx.errors import InvalidFilterError
from s3idx.index.ferretdb_filter import ferretdb_filter
from s3idx.query.filter import parse_filter


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ({}, {}),
        ({"a": 1}, {"a": 1}),
        ({"e.k": {"$ne": 2}}, {"$nor": [{"e.k": 2}]}),
        ({"e.k": {"$nin": [1, 2]}}, {"$nor": [{"e.k": {"$in": [1, 2]}}]}),
        ({"e.k": {"$not": {"$gt": 1}}}, {"$nor": [{"e.k": {"$gt": 1}}]}),
        ({"e.k": {"$exists": 0}}, {"$nor": [{"e.k": {"$exists": True}}]}),
        ({"e.k": {"$all": [1, 2]}}, {"$and": [{"e.k": 1}, {"e.k": 2}]}),
        ({"e.k": {"$all": []}}, {"e.k": {"$in": []}}),
        ({"a": {"$gt": 1, "$lt": 5}}, {"$and": [{"a": {"$gt": 1}}, {"a": {"$lt": 5}}]}),
        ({"a": {"$regex": "^x", "$options": "i"}}, {"a": {"$regex": "^x", "$options": "i"}}),
        (
            {"a": {"$not": {"$regex": "^x", "$options": "i", "$ne": "y"}}},
            {
                "$nor": [
                    {"$and": [{"a": {"$regex": "^x", "$options": "i"}}, {"$nor": [{"a": "y"}]}]}
                ]
            },
        ),
        ({"$nor": [{"a": 1}, {"b": 2}]}, {"$nor": [{"a": 1}, {"b": 2}]}),
        ({"a": {"$not": {"$not": {"$eq": 2}}}}, {"a": 2}),
        ({"a": {"$type": "decimal"}}, {"a": {"$in": []}}),
        ({"a": {"$type": ["decimal", "int", "minKey"]}}, {"a": {"$type": [16]}}),
        ({"a": {"$type": "number"}}, {"a": {"$type": [1, 16, 18]}}),
        ({"a": {"$eq": {"b": 1}}}, {"a": {"$eq": {"b": 1}}}),
    ],
)
def test_forms_sent_to_ferretdb(given: dict[str, Any], sent: dict[str, Any]) -> None:
    assert ferretdb_filter(parse_filter(given), "here") == sent


@pytest.mark.parametrize(
    "given",
    [{"a.b": None}, {"a.b": {"$ne": None}}, {"a.0": {"$in": [1, None]}}, {"a.b": {"$gte": None}}],
)
def test_a_dotted_path_compared_with_null_is_refused(given: dict[str, Any]) -> None:
    with pytest.raises(InvalidFilterError, match="is refused on FerretDB \\(here\\)"):
        ferretdb_filter(parse_filter(given), "here")
    assert ferretdb_filter(parse_filter({"a": None}), "here") == {"a": None}
