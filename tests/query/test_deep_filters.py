"""Filters nested up to MongoDB's 100 levels: the SQLite index answers as MongoDB does.

Deep nesting used to overflow SQLite's parser stack ("parser stack overflow") and Python's
recursion limit. Random mixes of $and, $or, $nor and $not over conditions on indexed fields and
the key are run against the index and against mongomock (which nests as deep as needed).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mongomock
import pytest

from s3idx.errors import InvalidFilterError
from s3idx.index.sqlite import SqliteIndex
from s3idx.query.filter import parse_filter

BOOKKEEPING = {"etag": '"e"', "size": 1, "sha256": "ab" * 32, "codec": "json"}
ENTRIES = [
    {"fs_id": f"k{i:02d}", "n": i, "s": f"s{i % 3}", "l": [i, i + 1],
     "last_updated": datetime(2024, 1, 1, tzinfo=UTC)}
    for i in range(20)
]  # fmt: skip


def _leaf(rng: random.Random) -> dict[str, Any]:
    return rng.choice(
        [
            {"n": {"$gte": rng.randrange(20)}},
            {"s": f"s{rng.randrange(3)}"},
            {"fs_id": f"k{rng.randrange(20):02d}"},
            {"n": {"$in": [rng.randrange(20) for _ in range(3)]}},
            {"l": rng.randrange(21)},
            {"n": {"$not": {"$lt": rng.randrange(20)}}},
        ]
    )


def _nested(rng: random.Random, depth: int) -> dict[str, Any]:
    node = _leaf(rng)
    for _ in range(depth):
        operator = rng.choice(["$and", "$or", "$nor"])
        node = {operator: [node, _leaf(rng)][:: rng.choice([1, -1])]}
    return node


def test_random_filters_up_to_100_levels_match_mongodb(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "index.sqlite3")
    index.configure("fs_id", ["n", "s", "l"])
    index.upsert([{**e, "_s3idx": BOOKKEEPING} for e in ENTRIES])
    oracle = mongomock.MongoClient().db.entries
    oracle.insert_many([dict(e) for e in ENTRIES])
    rng = random.Random(20261130)
    for _ in range(60):
        flt = _nested(rng, rng.randrange(1, 100))
        expected = sorted(d["fs_id"] for d in oracle.find(flt))
        assert sorted(e["fs_id"] for e in index.find(flt)) == expected, flt
        assert index.count(flt) == len(expected)
        assert sorted(e["fs_id"] for e in ENTRIES if parse_filter(flt).matches(e)) == expected
    index.close()


@pytest.mark.parametrize("depth", [100, 101])
def test_the_limit_is_100_levels_of_operators(depth: int) -> None:
    flt: dict[str, Any] = {"n": 1}
    for _ in range(depth):
        flt = {"$and": [flt]}
    if depth <= 100:
        parse_filter(flt)
    else:
        with pytest.raises(InvalidFilterError, match="nested deeper than 100 levels"):
            parse_filter(flt)
