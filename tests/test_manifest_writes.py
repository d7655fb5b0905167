"""Manifests written by the commands that write objects: put, reindex, rewrite, sync (issue 15).

A manifest line must say what a HEAD of the object says; a manifest that cannot be written
costs no document, and the command says so (and exits 3 when objects end in no manifest).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine
from s3idx.engine.manifest import MANIFEST_PREFIX, ManifestLine, list_manifests, read_manifest
from s3idx.engine.results import Events
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
        return receipt


class _LoggedIndex(SqliteIndex):
    def __init__(self, path: Path, log: list[tuple[str, list[str]]]) -> None:
        super().__init__(path)
        self.log = log

    def upsert_if(self, entries: Any, expected: Mapping[str, str | None]) -> set[str]:
        self.log.append(("index", sorted(e["fs_id"] for e in entries)))
        return super().upsert_if(entries, expected)


def test_each_index_batch_has_its_manifest_written_just_before_it(tmp_path: Path) -> None:
    log: list[tuple[str, list[str]]] = []
    store = _Logged(tmp_path / "store", log)
    engine = Engine(store, _LoggedIndex(tmp_path / "i.sqlite3", log), batch_size=3, workers=2)

    result = engine.put_documents({"fs_id": f"k{i:02d}"} for i in range(10))

    assert result.stored == 10
    assert [kind for kind, _ in log] == ["manifest", "index"] * (len(log) // 2)
    assert result.manifests_written == len(log) // 2 >= 1
    for (_, in_manifest), (_, indexed) in zip(log[::2], log[1::2], strict=True):
        assert in_manifest == indexed


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
    assert events.messages == [
        "manifest of 2 stored objects not written (the manifest's write was refused); "
        "its lines go into the next manifest"
    ]


def _metadata(lines: list[ManifestLine]) -> dict[str, Any]:
    return {line.key: orjson.loads(line.metadata["s3idx-entry"]) for line in lines}


@pytest.fixture
def locations(tmp_path: Path) -> list[str]:
    return _locations(tmp_path)
