"""S3idxStore's arguments and its validator, against maggma's own stores' behaviour.

maggma's ``MongoStore`` and ``MemoryStore`` validate every document before writing any: a
document a non-strict validator finds invalid is logged and left out, and a strict validator's
failure raises before anything is written. S3idxStore does the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from maggma.core import StoreError
from maggma.stores import MemoryStore
from maggma.validators import JSONSchemaValidator

from s3idx import open_engine
from s3idx.errors import UsageError
from s3idx.maggma import S3idxStore

SCHEMA = {
    "type": "object",
    "properties": {"energy": {"type": "number"}},
    "required": ["energy"],
}
GOOD = [{"task_id": f"mp-{i}", "energy": -float(i)} for i in range(5)]
BAD = {"task_id": "bad", "energy": "high"}


def _ours(tmp_path: Path, **kwargs: Any) -> S3idxStore:
    return S3idxStore(
        store=str(tmp_path / "store"),
        index=str(tmp_path / "index.sqlite3"),
        searchable_fields=["energy"],
        **kwargs,
    )


def _store(kind: str, tmp_path: Path, strict: bool) -> Any:
    validator = JSONSchemaValidator(SCHEMA, strict=strict)
    if kind == "S3idxStore":
        return _ours(tmp_path, validator=validator)
    return MemoryStore(key="task_id", validator=validator)


def _task_ids(store: Any) -> list[str]:
    return sorted(d["task_id"] for d in store.query(properties=["task_id"]))


@pytest.mark.parametrize("validated", ["S3idxStore", "MemoryStore"])
def test_non_strict_validator_leaves_out_invalid_documents(
    validated: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(validated, tmp_path, strict=False)
    with store, caplog.at_level(logging.ERROR):
        store.update([*GOOD[:2], BAD, *GOOD[2:]])
        assert _task_ids(store) == [d["task_id"] for d in GOOD]
    assert "'high' is not of type 'number'" in caplog.text


@pytest.mark.parametrize("validated", ["S3idxStore", "MemoryStore"])
def test_strict_validator_writes_nothing_when_one_is_invalid(
    validated: str, tmp_path: Path
) -> None:
    store = _store(validated, tmp_path, strict=True)
    with store:
        with pytest.raises(Exception, match="'high' is not of type 'number'"):
            store.update([*GOOD[:2], BAD, *GOOD[2:]])
        assert _task_ids(store) == []


def test_strict_validator_failure_after_a_whole_batch_writes_nothing(tmp_path: Path) -> None:
    # More documents than one batch before the invalid one: none may have been uploaded.
    many = [{"task_id": f"mp-{i}", "energy": 1.0} for i in range(30)]
    store = _ours(tmp_path, validator=JSONSchemaValidator(SCHEMA, strict=True), batch_size=10)
    with store:
        with pytest.raises(Exception, match="'high' is not of type 'number'"):
            store.update([*many, BAD])
        assert store.count() == 0
    with open_engine(store=str(tmp_path / "store"), index=str(tmp_path / "index.sqlite3")) as e:
        if (tmp_path / "store").exists():
            assert sum(1 for _ in e.store.list_objects()) == 0


def test_one_string_for_searchable_fields_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        S3idxStore(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3"),
                   searchable_fields="formula")  # fmt: skip
    assert caught.value.message == (
        "searchable_fields must be a list of field paths, not a string ('formula'): each of "
        "its characters would be taken for a field path"
    )
    assert not (tmp_path / "i.sqlite3").exists()


def test_one_string_for_properties_is_refused(tmp_path: Path) -> None:
    with _ours(tmp_path) as store:
        store.update(GOOD)
        for call in (
            lambda: list(store.query(properties="task_id")),
            lambda: store.query_one(properties="task_id"),
            lambda: list(store.groupby("energy", properties="task_id")),
        ):
            with pytest.raises(UsageError, match=r"^properties must be a list of field paths"):
                call()


@pytest.mark.parametrize("criteria", [None, "formula", ["task_id"]], ids=["None", "str", "list"])
def test_remove_docs_without_a_filter_removes_nothing(tmp_path: Path, criteria: Any) -> None:
    # maggma's stores refuse remove_docs(None) (pymongo's "filter must be an instance of
    # dict"); removing every document takes {} there and here.
    with _ours(tmp_path) as store:
        store.update(GOOD)
        with pytest.raises(UsageError) as caught:
            store.remove_docs(criteria)
        assert _task_ids(store) == [d["task_id"] for d in GOOD]
    assert str(caught.value) == (
        f"remove_docs: criteria must be a filter (a dict), not {criteria!r}\n"
        "to remove every document, give {}"
    )


def test_remove_docs_of_an_empty_filter_removes_everything_as_maggma_does(
    tmp_path: Path,
) -> None:
    theirs = MemoryStore(key="task_id")
    with _ours(tmp_path) as ours, theirs:
        for store in (ours, theirs):
            store.update([dict(d) for d in GOOD])
            store.remove_docs({})
            assert store.count() == 0


@pytest.mark.parametrize("kind", ["S3idxStore", "MemoryStore"])
def test_last_updated_of_documents_without_the_field_is_an_error(tmp_path: Path, kind: str) -> None:
    # maggma: documents that lack last_updated_field cannot say when the store was updated; an
    # empty store is datetime.min. (s3idx answered datetime.min for both, as if empty.)
    store: Any
    if kind == "S3idxStore":
        store = _ours(tmp_path, last_updated_field="updated_at")
    else:
        store = MemoryStore(key="task_id", last_updated_field="updated_at")
    with store:
        assert store.last_updated == datetime.min
        store.update([{"task_id": "a", "energy": 1.0}])
        with pytest.raises(StoreError, match="No field 'updated_at' in store document"):
            _ = store.last_updated
        store.update([{"task_id": "b", "energy": 1.0, "updated_at": datetime(2026, 1, 2)}])
        assert store.last_updated == datetime(2026, 1, 2)


def _more_documents() -> Iterator[dict[str, Any]]:
    yield {"task_id": "g-1", "energy": 1.0}
    yield {"task_id": "g-2", "energy": 2.0}


MORE = [{"task_id": "g-1", "energy": 1.0}, {"task_id": "g-2", "energy": 2.0}]


@pytest.mark.parametrize(
    ("documents", "expected"),
    [
        (tuple(GOOD[:2]), GOOD[:2]),
        (GOOD[:2], GOOD[:2]),
        (iter(GOOD[:2]), GOOD[:2]),
        (_more_documents(), MORE),
        (MappingProxyType(GOOD[0]), GOOD[:1]),
    ],
    ids=["tuple", "list", "iterator", "generator", "one mapping"],
)
def test_update_takes_any_iterable_of_documents_or_one(
    tmp_path: Path, documents: Any, expected: list[dict[str, Any]]
) -> None:
    with _ours(tmp_path) as store:
        store.update(documents)
        assert sorted(store.query(properties=["task_id", "energy"]), key=str) == sorted(
            expected, key=str
        )


@pytest.mark.parametrize(
    ("documents", "position", "shown"),
    [
        ((GOOD[0], "mp-9"), 1, "'mp-9'"),
        ([GOOD[0], GOOD[1], [("task_id", "x")]], 2, "[('task_id', 'x')]"),
        ((None,), 0, "None"),
    ],
)
def test_update_refuses_an_item_that_is_not_a_document_and_stores_nothing(
    tmp_path: Path, documents: Any, position: int, shown: str
) -> None:
    with _ours(tmp_path) as store:
        with pytest.raises(UsageError) as caught:
            store.update(documents)
        assert store.count() == 0
    assert str(caught.value).startswith(
        f"update: document {position} must be a mapping (a dict), not {shown}"
    )


@pytest.mark.parametrize("documents", ["mp-1", b"mp-1", 5])
def test_update_refuses_what_is_neither_documents_nor_one(tmp_path: Path, documents: Any) -> None:
    with _ours(tmp_path) as store:
        with pytest.raises(UsageError, match=r"^update: documents must be"):
            store.update(documents)
        assert store.count() == 0


NUMBERS = [
    {"task_id": "a", "energy": 1},
    {"task_id": "b", "energy": 1.0},
    {"task_id": "c", "energy": 2},
    {"task_id": "d", "energy": True},
    {"task_id": "e", "energy": [2.0, 3.5]},
    {"task_id": "f", "energy": {"x": 1.0}},
    {"task_id": "g", "energy": {"x": 1}},
]


def _typed(value: Any) -> Any:
    """A value with its type at every level: 1, 1.0 and True told apart."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def test_numbers_equal_as_mongodb_compares_them_are_one_value_and_one_group(
    tmp_path: Path,
) -> None:
    # MongoDB: 1 == 1.0 (one distinct value, one group, the first seen kept), True != 1.
    # (maggma's MemoryStore is no reference here: mongomock takes True for 1.)
    with _ours(tmp_path) as store:
        store.update([dict(d) for d in NUMBERS])
        assert store.count({"energy": 1}) == 2
        assert store.count({"energy": True}) == 1
        distinct = store.distinct("energy")
        groups = [
            (group["energy"], sorted(d["task_id"] for d in docs))
            for group, docs in store.groupby("energy", properties=["task_id"])
        ]
    assert sorted(map(_typed, distinct), key=repr) == sorted(
        map(_typed, [1, 2, True, 3.5, {"x": 1.0}]), key=repr
    )
    assert sorted(((_typed(v), k) for v, k in groups), key=repr) == sorted(
        [
            (_typed(1), ["a", "b"]),
            (_typed(2), ["c"]),
            (_typed(True), ["d"]),
            (_typed([2.0, 3.5]), ["e"]),
            (_typed({"x": 1.0}), ["f", "g"]),
        ],
        key=repr,
    )


def _index_descriptors(path: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(path)):  # the file, its -wal and -shm
                found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_close_releases_the_index_held_by_queries_left_unfinished(tmp_path: Path) -> None:
    store = _ours(tmp_path)
    with store:
        store.update([{"task_id": f"k{i:04d}", "energy": float(i)} for i in range(1000)])
        from_index = store.query(properties=["task_id"])
        documents = store.query({"energy": {"$gte": 10}})
        assert next(from_index)["task_id"] == "k0000"
        assert next(documents)["task_id"] == "k0010"  # a builder that stops early
        assert _index_descriptors(tmp_path / "index.sqlite3")

    assert _index_descriptors(tmp_path / "index.sqlite3") == []
    for found in (from_index, documents):
        with pytest.raises(UsageError, match="closed"):
            next(found)


@pytest.mark.parametrize(
    "properties",
    [{"energy": True, "task_id": False}, {"energy": 1, "task_id": 0}, {"task_id": 0, "energy": 1}],
)
def test_properties_mixing_inclusion_and_exclusion_are_refused_as_by_maggma(
    tmp_path: Path, properties: dict[str, Any]
) -> None:
    theirs = MemoryStore(key="task_id")
    with _ours(tmp_path) as ours, theirs:
        for store in (ours, theirs):
            store.update([dict(d) for d in GOOD])
        with pytest.raises(Exception, match="mix including and excluding"):  # mongomock's
            list(theirs.query(properties=properties))
        for call in (
            lambda: list(ours.query(properties=properties)),
            lambda: ours.query_one(properties=properties),
            lambda: list(ours.groupby("energy", properties=properties)),
        ):
            with pytest.raises(UsageError) as caught:
                call()
            assert str(caught.value).startswith(
                "properties cannot both include fields (energy) and exclude fields (task_id)"
            )


def test_properties_may_leave_out_id_beside_the_fields_they_include(tmp_path: Path) -> None:
    # MongoDB's one exception, which maggma's builders use ({key: 1, "_id": 0}).
    with _ours(tmp_path) as store:
        store.update([dict(d) for d in GOOD])
        assert list(store.query(properties={"task_id": 1, "_id": 0}, limit=1)) == [
            {"task_id": "mp-0"}
        ]
        first = store.query_one(properties={"task_id": 0, "_id": 0})
        assert first is not None and set(first) == {"energy", "last_updated"}
