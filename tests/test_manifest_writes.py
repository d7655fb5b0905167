"""Manifests written by the commands that write objects: put, reindex, rewrite, sync (issue 15).

A manifest line must say what a HEAD of the object says; a manifest that cannot be written
costs no document, and the command says so (and exits 3 when objects end in no manifest).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine
from s3idx.engine.manifest import (
    MANIFEST_PREFIX,
    ManifestLine,
    list_manifests,
    read_manifest,
    write_manifest,
)
from s3idx.engine.results import Events
from s3idx.engine.sync import run_sync
from s3idx.errors import BackendUnavailableError, ExitStatus
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import ObjectStore, PutReceipt
from s3idx.store.local import LocalStore
from tests.helpers import Run, json_lines, jsonl


def _manifests(store: ObjectStore) -> list[list[ManifestLine]]:
    return [list(read_manifest(store, info.key)) for info in list_manifests(store)]


def _as_heads(store: ObjectStore, lines: list[ManifestLine]) -> None:
    """Every line says what a HEAD of its object says (a put's lines carry no date)."""
    for line in lines:
        head = store.head(line.key)
        assert line == ManifestLine(head.key, head.etag, head.size, head.metadata, None)


def _locations(tmp_path: Path) -> list[str]:
    return ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]


def test_put_writes_one_manifest_per_index_batch_with_a_line_per_stored_object(
    run: Run, tmp_path: Path
) -> None:
    docs = [{"fs_id": f"k{i}", "n": i} for i in range(5)]
    put = run(
        "put", "--field", "n", "--batch-size", "2", "--json", *_locations(tmp_path),
        input=jsonl(*docs),
    )  # fmt: skip

    assert put.exit_code == 0, put.stderr
    summary = orjson.loads(put.stdout)
    assert summary["manifests_written"] >= 1
    assert summary["manifests_failed"] == 0
    assert summary["not_in_manifests"] == 0
    store = LocalStore(tmp_path / "store")
    manifests = _manifests(store)
    assert len(manifests) == summary["manifests_written"]
    assert all(manifests)
    lines = [line for batch in manifests for line in batch]
    assert sorted(line.key for line in lines) == [f"k{i}" for i in range(5)]
    _as_heads(store, lines)
    # Manifests are not documents: no listing, query or sync sees them.
    assert [o.key for o in store.list_objects()] == [f"k{i}" for i in range(5)]
    check = run("sync", "--check", *_locations(tmp_path))
    assert check.exit_code == 0, check.stderr


class _Logged(LocalStore):
    def __init__(self, root: Path, log: list[tuple[str, list[str]]]) -> None:
        super().__init__(root)
        self.log = log

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> PutReceipt:
        receipt = super().put(key, body, metadata)
        if key.startswith(MANIFEST_PREFIX):
            self.log.append(("manifest", sorted(line.key for line in read_manifest(self, key))))
        else:
            self.log.append(("object", [key]))
        return receipt


class _LoggedIndex(SqliteIndex):
    def __init__(self, path: Path, log: list[tuple[str, list[str]]]) -> None:
        super().__init__(path)
        self.log = log

    def upsert_if(self, entries: Any, expected: Mapping[str, str | None]) -> set[str]:
        self.log.append(("index", sorted(e["fs_id"] for e in entries)))
        return super().upsert_if(entries, expected)


def test_put_writes_a_manifest_per_batch_of_stored_objects(tmp_path: Path) -> None:
    """One manifest per batch of stored objects, each written once its objects are stored."""
    log: list[tuple[str, list[str]]] = []
    store = _Logged(tmp_path / "store", log)
    engine = Engine(store, _LoggedIndex(tmp_path / "i.sqlite3", log), batch_size=3, workers=2)

    result = engine.put_documents({"fs_id": f"k{i:02d}"} for i in range(10))

    assert result.stored == 10
    manifests = [keys for kind, keys in log if kind == "manifest"]
    assert result.manifests_written == len(manifests)
    assert sorted(k for keys in manifests for k in keys) == [f"k{i:02d}" for i in range(10)]
    # Every manifest but the run's last holds a batch at least (a young one waits for more).
    assert all(len(keys) >= 3 for keys in manifests[:-1])
    stored = [k for kind, keys in log if kind == "object" for k in keys]
    for position, (kind, keys) in enumerate(log):
        if kind == "manifest":  # written after each of its objects
            assert set(keys) <= set(stored[: _objects_before(log, position)])


def _objects_before(log: list[tuple[str, list[str]]], position: int) -> int:
    return sum(len(keys) for kind, keys in log[:position] if kind == "object")


def test_put_dry_run_writes_no_manifest(run: Run, tmp_path: Path) -> None:
    put = run("put", "--dry-run", *_locations(tmp_path), input=jsonl({"fs_id": "a"}))

    assert put.exit_code == 0, put.stderr
    assert list_manifests(LocalStore(tmp_path / "store")) == []


def test_a_manifest_that_cannot_be_written_loses_no_document_and_is_not_exit_0(
    run: Run, tmp_path: Path
) -> None:
    first = run("put", *_locations(tmp_path), input=jsonl({"fs_id": "a"}))
    assert first.exit_code == 0, first.stderr
    # A file where the manifests' directory goes: every manifest write fails, documents don't.
    shutil.rmtree(tmp_path / "store/objects/.s3idx")
    (tmp_path / "store/objects/.s3idx").write_bytes(b"in the way")

    put = run("put", "--json", *_locations(tmp_path), input=jsonl({"fs_id": "b"}, {"fs_id": "c"}))

    assert put.exit_code == ExitStatus.PARTIAL, put.stderr
    assert "warning: manifest of 2 stored objects not written (" in put.stderr
    assert "a later rebuild-index reads those objects with a HEAD each" in put.stderr
    summary = orjson.loads(put.stdout)
    assert (summary["stored"], summary["not_indexed"], summary["rejected"]) == (2, 0, 0)
    assert (summary["manifests_written"], summary["not_in_manifests"]) == (0, 2)
    assert summary["manifests_failed"] >= 1  # the batch's, and the last try at the end
    query = run("query", "--sort", "fs_id", *_locations(tmp_path))
    assert [e["fs_id"] for e in json_lines(query.stdout)] == ["a", "b", "c"]
    human = run("put", *_locations(tmp_path), input=jsonl({"fs_id": "d"}))
    assert human.exit_code == ExitStatus.PARTIAL
    assert "1 stored object in no manifest (a later rebuild-index HEADs them)" in human.stderr


class _FirstManifestFails(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failed = False

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> PutReceipt:
        if key.startswith(MANIFEST_PREFIX) and not self.failed:
            self.failed = True
            raise BackendUnavailableError("the manifest's write was refused")
        return super().put(key, body, metadata)


class _Warnings(Events):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def warned(self, message: str) -> None:
        self.messages.append(message)


def test_a_failed_manifest_s_lines_go_into_the_next_one(tmp_path: Path) -> None:
    store = _FirstManifestFails(tmp_path / "store")
    engine = Engine(store, SqliteIndex(tmp_path / "index.sqlite3"), batch_size=2, workers=1)
    events = _Warnings()

    result = engine.put_documents(
        ({"fs_id": f"k{i}"} for i in range(4)), events=events
    )  # fmt: skip

    assert (result.stored, result.not_indexed) == (4, 0)
    assert (result.manifests_failed, result.not_in_manifests) == (1, 0)
    assert result.manifests_written >= 1
    lines = [line for batch in _manifests(store) for line in batch]
    assert sorted(line.key for line in lines) == ["k0", "k1", "k2", "k3"]
    _as_heads(store, lines)
    # How many objects the first manifest held depends on how many uploads had finished when
    # the first batch was written (one upload at a time, two in flight): not pinned.
    (message,) = events.messages
    failed = re.fullmatch(
        r"manifest of (\d+) stored objects? not written \(the manifest's write was refused\); "
        r"its lines go into the next manifest",
        message,
    )
    assert failed is not None, message
    assert 1 <= int(failed.group(1)) < 4


def _metadata(lines: list[ManifestLine]) -> dict[str, Any]:
    return {line.key: orjson.loads(line.metadata["s3idx-entry"]) for line in lines}


# --- reindex ------------------------------------------------------------------------------------


def test_reindex_writes_lines_for_the_objects_whose_metadata_it_replaced(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    engine = Engine(store, SqliteIndex(tmp_path / "index.sqlite3"))
    engine.put_documents([{"fs_id": "a", "n": 1, "c": "red"}, {"fs_id": "b", "n": 2}], fields=["n"])
    engine.put_documents([{"fs_id": "z", "n": 3, "c": "blue"}], fields=["c"])
    before = {info.key for info in list_manifests(store)}

    result = engine.reindex()

    assert (result.updated, result.up_to_date) == (2, 1)
    assert (result.manifests_written, result.not_in_manifests) == (1, 0)
    new = [info for info in list_manifests(store) if info.key not in before]
    assert len(new) == 1
    lines = list(read_manifest(store, new[0].key))
    assert [line.key for line in lines] == ["a", "b"]
    _as_heads(store, lines)  # the new metadata and ETag, not the ones put recorded
    assert _metadata(lines)["a"]["c"] == "red"
    assert "c" not in _metadata(lines)["b"]  # b has no c; its metadata now says it was looked for


def test_reindex_dry_run_writes_no_manifest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    engine = Engine(store, SqliteIndex(tmp_path / "index.sqlite3"))
    engine.put_documents([{"fs_id": "a", "n": 1}], fields=[])
    engine.put_documents([{"fs_id": "b", "n": 2}], fields=["n"])
    count = len(list_manifests(store))

    assert engine.reindex(dry_run=True).updated == 1
    assert len(list_manifests(store)) == count


# --- sync ---------------------------------------------------------------------------------------


def _engine(tmp_path: Path, index: str = "index.sqlite3", **options: Any) -> Engine:
    store = options.pop("store", None) or LocalStore(tmp_path / "store")
    return Engine(store, SqliteIndex(tmp_path / index), **options)


def _all_lines(store: ObjectStore) -> dict[str, ManifestLine]:
    """The latest line of each key, as a rebuild reads them."""
    return {line.key: line for batch in _manifests(store) for line in batch}


def _listed_dates(store: ObjectStore) -> dict[str, Any]:
    return {info.key: info.last_modified for info in store.list_objects()}


def test_sync_compacts_the_manifests_into_what_is_true_now(tmp_path: Path) -> None:
    engine = _engine(tmp_path, batch_size=4, workers=1)
    for start in (0, 4, 8):
        engine.put_documents({"fs_id": f"k{i:02d}", "n": i} for i in range(start, start + 4))
    engine.delete(["k05"])  # its line stays in a put's manifest: compaction drops it
    store = engine.store
    before = list_manifests(store)
    assert len(before) >= 3

    result = engine.sync()

    assert result.drift == 0
    after = list_manifests(store)
    assert (result.manifests_removed, result.manifests_written) == (len(before), len(after))
    assert not {info.key for info in before} & {info.key for info in after}
    lines = _all_lines(store)
    assert sorted(lines) == [f"k{i:02d}" for i in range(12) if i != 5]
    listed = _listed_dates(store)
    for key, line in lines.items():
        head = store.head(key)
        assert line == ManifestLine(key, head.etag, head.size, head.metadata, listed[key])
    # And a rebuild from them needs no HEAD at all.
    rebuilt = _engine(tmp_path, "rebuilt.sqlite3").rebuild_index()
    assert (rebuilt.heads, rebuilt.from_manifests) == (0, 11)


def test_sync_adopts_objects_and_writes_their_lines_from_the_heads(tmp_path: Path) -> None:
    writer = _engine(tmp_path, "first.sqlite3")
    writer.put_documents({"fs_id": f"k{i}", "n": i} for i in range(5))
    store = writer.store
    for info in list_manifests(store):  # as if the put had died before its manifest
        store.delete([info.key])

    result = _engine(tmp_path, "second.sqlite3").sync()

    assert (result.added, result.not_in_manifests) == (5, 0)
    assert result.manifests_written >= 1
    lines = _all_lines(store)
    assert sorted(lines) == [f"k{i}" for i in range(5)]
    for key, line in lines.items():
        head = store.head(key)
        assert line == ManifestLine(key, head.etag, head.size, head.metadata, head.last_modified)


def test_sync_leaves_out_what_no_line_vouches_for(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    engine.put_documents({"fs_id": f"k{i}", "n": i} for i in range(3))
    store = engine.store
    head = store.head("k1")
    stale = ManifestLine("k1", "not-its-etag", head.size, head.metadata)
    write_manifest(store, [stale])  # later than put's: its line is k1's latest, and wrong

    result = engine.sync()

    assert result.drift == 0
    assert sorted(_all_lines(store)) == ["k0", "k2"]  # k1: a rebuild HEADs it


def test_sync_check_and_dry_run_write_and_remove_no_manifest(tmp_path: Path) -> None:
    engine = _engine(tmp_path, batch_size=2, workers=1)
    engine.put_documents({"fs_id": f"k{i}"} for i in range(4))
    store = engine.store
    for info in list_manifests(store)[:1]:
        store.delete([info.key])  # k0 and k1 in no manifest, and drift in a new index
    before = [info.key for info in list_manifests(store)]

    other = _engine(tmp_path, "other.sqlite3")
    other.put_documents([])  # an index with no entries: every object is drift
    for result in (other.sync(check=True), other.sync(dry_run=True)):
        assert result.bucket_only == 4
        assert (result.manifests_written, result.manifests_removed) == (0, 0)
        assert [info.key for info in list_manifests(store)] == before


class _PutsAManifestWhileListing(LocalStore):
    """Another writer's manifest lands after sync looked at the manifests."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.armed = False
        self.written: str | None = None

    def list_objects(self, prefix: str = "", *, start_after: str | None = None) -> Any:
        if self.armed and prefix == "":
            self.armed = False
            head = self.head("k0")
            line = ManifestLine("k0", head.etag, head.size, head.metadata)
            self.written = write_manifest(self, [line])
        return super().list_objects(prefix, start_after=start_after)


def test_sync_removes_only_the_manifests_that_were_there_when_it_started(tmp_path: Path) -> None:
    store = _PutsAManifestWhileListing(tmp_path / "store")
    engine = _engine(tmp_path, store=store)
    engine.put_documents({"fs_id": f"k{i}"} for i in range(3))
    old = {info.key for info in list_manifests(store)}
    store.armed = True

    result = engine.sync()

    keys = {info.key for info in list_manifests(store)}
    assert store.written in keys
    assert not old & keys
    assert result.manifests_removed == len(old)


class _RefusesManifests(LocalStore):
    refusing = False

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> PutReceipt:
        if self.refusing and key.startswith(MANIFEST_PREFIX):
            raise BackendUnavailableError("no writes under .s3idx/ for these credentials")
        return super().put(key, body, metadata)


def test_a_compaction_that_cannot_write_removes_nothing_and_says_so(tmp_path: Path) -> None:
    store = _RefusesManifests(tmp_path / "store")
    engine = _engine(tmp_path, store=store)
    engine.put_documents({"fs_id": f"k{i}"} for i in range(3))
    old = [info.key for info in list_manifests(store)]
    store.refusing = True
    events = _Warnings()

    result = engine.sync(events=events)

    assert [info.key for info in list_manifests(store)] == old
    assert (result.manifests_written, result.manifests_removed) == (0, 0)
    assert result.not_in_manifests == 0  # nothing was HEADed: every object is in a manifest
    assert events.messages == [
        "compacted manifests not written (no writes under .s3idx/ for these credentials); "
        "the manifests there stay"
    ]


@pytest.mark.parametrize("transport", ["boto3", "obstore"])
def test_on_s3_put_sync_then_rebuild_needs_no_head(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path, transport: str
) -> None:
    s3 = ["--store", f"s3://{s3_bucket}/p", "--endpoint-url", s3_endpoint]
    s3 += ["--transport", transport]
    docs = [{"fs_id": f"d{i:02d}", "n": i} for i in range(20)]
    put = run("put", *s3, "--index", str(tmp_path / "a.sqlite3"), "--field", "n",
              "--batch-size", "5", input=jsonl(*docs))  # fmt: skip
    assert put.exit_code == 0, put.stderr

    # A new index adopts every object (HEADs, with their dates), then compacts.
    sync = run("sync", "--json", *s3, "--index", str(tmp_path / "b.sqlite3"))
    assert sync.exit_code == 0, sync.stderr
    synced = orjson.loads(sync.stdout)
    assert synced["added"] == 20
    assert synced["manifests_removed"] >= 1
    # Again, all in step: the lines are carried over from the compacted manifests.
    again = orjson.loads(run("sync", "--json", *s3, "--index", str(tmp_path / "b.sqlite3")).stdout)
    # One compacted manifest replaces the first sync's (its batch's, and its compacted one).
    assert again["drift"] == 0
    assert (again["manifests_written"], again["manifests_removed"]) == (
        1,
        synced["manifests_written"],
    )

    rebuild = run("rebuild-index", "--json", *s3, "--index", str(tmp_path / "c.sqlite3"))
    assert rebuild.exit_code == 0, rebuild.stderr
    rebuilt = orjson.loads(rebuild.stdout)
    assert (rebuilt["heads"], rebuilt["from_manifests"]) == (0, 20)
    with SqliteIndex(tmp_path / "a.sqlite3") as a, SqliteIndex(tmp_path / "c.sqlite3") as c:
        assert sorted(a.find({}), key=str) == sorted(c.find({}), key=str)


def test_a_sync_that_does_not_compact_removes_no_manifest(tmp_path: Path) -> None:
    engine = _engine(tmp_path, batch_size=2, workers=1)
    engine.put_documents({"fs_id": f"k{i}"} for i in range(4))
    before = [info.key for info in list_manifests(engine.store)]

    result = run_sync(engine.store, engine.index, workers=2, compact=False)

    assert (result.drift, result.manifests_written, result.manifests_removed) == (0, 0, 0)
    assert [info.key for info in list_manifests(engine.store)] == before
