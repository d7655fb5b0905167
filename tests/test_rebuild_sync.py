"""rebuild-index and sync on the embedded backends, through the engine and the CLI."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3idx import Engine, Events, codec
from s3idx.engine import rebuild as rebuild_module
from s3idx.errors import ExitStatus, IndexSettingsError, S3idxError
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.local import LocalStore
from tests.helpers import Run, StopAfter, jsonl

FIELDS = ["task_id", "n", "meta.owner", "tags", "when", "flag", "ratio", "nothing"]


def _document(i: int) -> dict[str, Any]:
    return {
        "fs_id": f"doc/{i:03d}",
        "task_id": f"mp-{i}",
        "n": i,
        "ratio": i / 7,
        "flag": i % 2 == 0,
        "nothing": None,
        "tags": ["even" if i % 2 == 0 else "odd", i],
        "meta": {"owner": ["ann", "bob"][i % 2], "ignored": i},
        "when": datetime(2026, 1, 1 + i % 28, tzinfo=UTC),
        "body": "x" * i,
    }


def _engine(tmp_path: Path, index_name: str = "index.sqlite3") -> Engine:
    return Engine(LocalStore(tmp_path / "store"), SqliteIndex(tmp_path / index_name), workers=4)


def _typed(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", sorted((k, _typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


def _snapshot(engine: Engine) -> list[Any]:
    return [_typed(e) for e in engine.query({}, sort=[("fs_id", 1)])]


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Engine]:
    engine = _engine(tmp_path)
    result = engine.put_documents([_document(i) for i in range(40)], fields=FIELDS)
    assert result.stored == 40
    yield engine
    engine.close()


def test_rebuild_after_losing_the_index_gives_it_back_exactly(
    filled: Engine, tmp_path: Path
) -> None:
    before = _snapshot(filled)
    fields_before = filled.index.settings()
    filled.close()
    (tmp_path / "index.sqlite3").unlink()

    with _engine(tmp_path) as engine:
        result = engine.rebuild_index()
        assert (result.listed, result.written, result.committed) == (40, 40, True)
        assert _snapshot(engine) == before
        assert engine.index.settings() == fields_before
        assert [e["fs_id"] for e in engine.query({"meta.owner": "bob", "n": {"$lt": 6}})] == [
            "doc/001",
            "doc/003",
            "doc/005",
        ]


def test_interrupted_rebuild_leaves_the_old_index_and_resumes(
    filled: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rebuild_module, "LIST_BATCH", 7)
    before = _snapshot(filled)
    filled.index.delete(["doc/000", "doc/001"])  # the old index differs from the bucket
    damaged = _snapshot(filled)

    stop = threading.Event()
    first = filled.rebuild_index(events=StopAfter(stop, 2), stop=stop)

    assert (first.interrupted, first.committed, first.listed) == (True, False, 14)
    assert _snapshot(filled) == damaged  # nothing swapped in

    second = filled.rebuild_index(resume=True)
    assert second.resumed
    assert (second.listed, second.written, second.committed) == (40, 40, True)
    assert _snapshot(filled) == before


def test_rebuild_reports_foreign_and_undecodable_objects(filled: Engine) -> None:
    store = filled.store
    store.put("foreign/readme.txt", b"hello", {})
    broken = {"s3idx-format": "1", "s3idx-codec": "json", "s3idx-key": "fs_id", "s3idx-entry": "{"}
    broken["s3idx-sha256"] = "0" * 64
    store.put("doc/broken", b"{}", broken)
    moved = dict(store.head("doc/001").metadata)
    store.put("doc/copied", b"{}", moved)

    skipped: list[tuple[str, str]] = []

    class Record(Events):
        def skipped(self, key: str, reason: str) -> None:
            skipped.append((key, reason))

    result = filled.rebuild_index(events=Record())

    assert (result.listed, result.written) == (43, 40)
    assert result.skipped.not_s3idx_keys == ["foreign/readme.txt"]
    assert [k for k, _ in result.skipped.undecodable_keys] == ["doc/broken", "doc/copied"]
    reasons = dict(skipped)
    assert reasons["foreign/readme.txt"] == "not an s3idx object (no s3idx metadata)"
    assert reasons["doc/broken"].startswith("metadata cannot be decoded: s3idx-entry is not valid")
    assert reasons["doc/copied"] == (
        "metadata cannot be decoded: its metadata names key 'doc/001', not 'doc/copied' "
        "(copied or renamed by another tool?)"
    )


def _empty_store(root: Path) -> LocalStore:
    """A store that exists and holds no object (a wrong --store that happens to be a store)."""
    store = LocalStore(root)
    assert list(store.list_objects()) == []
    store.put("gone", b"{}", {})
    store.delete(["gone"])
    return store


def test_rebuild_refuses_to_empty_a_full_index(filled: Engine, tmp_path: Path) -> None:
    before = _snapshot(filled)
    empty = Engine(_empty_store(tmp_path / "elsewhere"), filled.index)
    with pytest.raises(S3idxError) as excinfo:
        empty.rebuild_index()
    assert "refusing to replace an index of 40 entries with an empty one" in str(excinfo.value)
    assert _snapshot(filled) == before


def test_sync_check_reports_exact_drift_then_sync_repairs(
    filled: Engine, tmp_path: Path, run: Run
) -> None:
    before = _snapshot(filled)
    filled.index.delete(["doc/003", "doc/010"])
    filled.store.delete(["doc/020", "doc/021"])
    args = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]

    check = run("sync", "--check", *args)
    assert check.exit_code == ExitStatus.DRIFT
    assert check.stdout.splitlines() == [
        "bucket-only\tdoc/003",
        "bucket-only\tdoc/010",
        "index-only\tdoc/020",
        "index-only\tdoc/021",
    ]
    assert "drift: 2 bucket-only, 2 index-only, 0 changed" in check.stderr

    dry = run("sync", "--dry-run", *args)
    assert dry.exit_code == 0
    assert dry.stdout.splitlines() == [
        "add\tdoc/003",
        "add\tdoc/010",
        "remove\tdoc/020",
        "remove\tdoc/021",
    ]

    repair = run("sync", "--json", *args)
    assert repair.exit_code == 0, repair.stderr
    summary = orjson.loads(repair.stdout)
    assert (summary["added"], summary["removed"], summary["updated"]) == (2, 2, 0)

    assert run("sync", "--check", *args).exit_code == 0
    expected = [e for e in before if dict(e[1])["fs_id"][1] not in ("doc/020", "doc/021")]
    assert _snapshot(filled) == expected


def test_sync_updates_entries_of_changed_objects(filled: Engine, tmp_path: Path) -> None:
    with _engine(tmp_path, "other.sqlite3") as other:
        other.put_documents([{**_document(5), "task_id": "renamed"}], fields=FIELDS)

    result = filled.sync(check=True)
    assert (result.changed, result.bucket_only, result.index_only) == (1, 0, 0)

    result = filled.sync()
    assert result.updated == 1
    assert [e["fs_id"] for e in filled.query({"task_id": "renamed"})] == ["doc/005"]
    assert filled.sync(check=True).drift == 0


def test_sync_repairs_an_entry_whose_size_alone_is_wrong(filled: Engine) -> None:
    """The entry names the object's very ETag but another size: README counts it changed
    ("ETag or size differ"), as verify does, and sync sets it to what the object holds (it
    took the matching ETag for a listing read before a writer, and left the entry)."""
    (entry,) = filled.index.find({"fs_id": "doc/005"})
    size = entry["_s3idx"]["size"]
    filled.index.upsert([{**entry, "_s3idx": {**entry["_s3idx"], "size": size + 1}}])
    assert filled.verify().changed == 1

    check = filled.sync(check=True)
    assert (check.changed, check.bucket_only, check.index_only) == (1, 0, 0)
    assert filled.sync().updated == 1
    assert filled.sync(check=True).drift == 0
    assert filled.verify().changed == 0
    (repaired,) = filled.index.find({"fs_id": "doc/005"})
    assert repaired["_s3idx"]["size"] == size


def test_sync_no_prune_keeps_stale_entries(filled: Engine) -> None:
    filled.store.delete(["doc/007"])
    result = filled.sync(prune=False)
    assert (result.index_only, result.removed) == (1, 0)
    assert filled.count({"fs_id": "doc/007"}) == 1


def test_sync_refuses_to_remove_everything_for_an_empty_store(
    filled: Engine, tmp_path: Path
) -> None:
    # Its own store, emptied behind its back (another store's sync is refused before this).
    for path in (tmp_path / "store" / "objects").rglob("*~"):
        path.unlink()
    with pytest.raises(S3idxError) as excinfo:
        filled.sync()
    assert "lists no objects; refusing to remove all 40 index entries" in str(excinfo.value)
    assert filled.count({}) == 40
    with pytest.raises(IndexSettingsError, match="is the index of store"):
        Engine(_empty_store(tmp_path / "nothing-here"), filled.index).sync()


def test_sync_fills_a_brand_new_index(filled: Engine, tmp_path: Path) -> None:
    with _engine(tmp_path, "fresh.sqlite3") as fresh:
        result = fresh.sync()
        assert result.added == 40
        assert _snapshot(fresh) == _snapshot(filled)
        assert fresh.index.settings() == filled.index.settings()


def test_rebuild_cli_summary_and_json(run: Run) -> None:
    run("put", "--field", "v", input=jsonl({"fs_id": "a", "v": 1}, {"fs_id": "b", "v": 2}))
    text = run("rebuild-index", "--no-manifests")
    assert text.exit_code == 0, text.stderr
    assert (
        "s3idx: rebuild-index: 2 listed, 2 written, 0 not s3idx objects, 0 undecodable in "
        in text.stderr
    )
    assert "; 0 from 0 manifests, 2 HEADs, " in text.stderr
    text = run("rebuild-index")  # compacts what it HEADed into one manifest
    assert "; compacted into 1 manifest (" in text.stderr
    data = orjson.loads(run("rebuild-index", "--json").stdout)
    assert (data["listed"], data["written"], data["committed"]) == (2, 2, True)
    assert (data["from_manifests"], data["heads"], data["manifests_read"]) == (2, 0, 1)
    assert (data["manifests_written"], data["manifests_removed"]) == (1, 1)
    assert data["requests"] > 0
    assert data["fields"] == ["v"]
    assert run("query", '{"v": 2}', "--count").stdout == "1\n"


# --- the property: dropping the index and rebuilding gives the same index -----------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.datetimes(timezones=st.just(UTC)).map(codec.normalize_datetime)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["x", "y", "é"]), inner, max_size=3)
    ),
    max_leaves=6,
)
_documents = st.lists(
    st.fixed_dictionaries({"a": _values, "b": st.fixed_dictionaries({"c": _values}), "d": _values}),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(documents=_documents)
def test_rebuild_is_exact_for_every_type(
    tmp_path_factory: pytest.TempPathFactory, documents: list[dict[str, Any]]
) -> None:
    root = tmp_path_factory.mktemp("prop")
    with _engine(root) as engine:
        docs = [{"fs_id": f"k{i}", **d} for i, d in enumerate(documents)]
        result = engine.put_documents(docs, fields=["a", "b.c", "d"])
        assert result.stored == len(docs), result
        before = _snapshot(engine)
    (root / "index.sqlite3").unlink()
    with _engine(root) as engine:
        engine.rebuild_index()
        assert _snapshot(engine) == before
