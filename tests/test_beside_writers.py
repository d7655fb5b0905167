"""Readers beside writers: what sync removes or reports, and what query --full reports as
drift, must be so when it says so, not only when it read.

sync merges a listing with the index's entries, both read as it goes: the listing ahead of the
entries. A put that uploads a key after the listing passed it, and writes its entry before the
entries are read there, looks index-only to that merge. Removing it would leave the document
in the bucket with no entry, and both commands would exit 0. Likewise ``query --full`` reads
the index, then the objects: a delete between the two is no entry without its object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from s3idx import Engine
from s3idx.engine.results import DeleteResult
from s3idx.errors import ObjectAccessDeniedError
from s3idx.index.base import Version
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import ObjectBody, ObjectHead, ObjectInfo
from s3idx.store.local import LocalStore
from s3idx.store.s3 import S3Store


class ListedEarlier(LocalStore):
    """A local store whose listing is the one taken when ``freeze`` was called: what a
    listing read ahead of the index sees when a put lands behind it."""

    frozen: list[ObjectInfo] | None = None
    denied: frozenset[str] = frozenset()  # keys whose HEAD these credentials may not make

    def freeze(self) -> None:
        self.frozen = list(super().list_objects())

    def list_objects(
        self, prefix: str = "", *, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        if self.frozen is None:
            yield from super().list_objects(prefix, start_after=start_after)
            return
        for info in self.frozen:
            if info.key.startswith(prefix) and (start_after is None or info.key > start_after):
                yield info

    def head(self, key: str) -> ObjectHead:
        if key in self.denied:
            raise ObjectAccessDeniedError(f"denied: {key}")
        return super().head(key)


def _engine(tmp_path: Path) -> tuple[Engine, ListedEarlier]:
    store = ListedEarlier(tmp_path / "store")
    return Engine(store, SqliteIndex(tmp_path / "index.sqlite3"), fields=["v"]), store


def _indexed(engine: Engine) -> dict[str, int]:
    return {doc["fs_id"]: doc["v"] for doc in engine.query({}, fields=["fs_id", "v"])}


def test_sync_keeps_the_entry_of_a_document_put_behind_its_listing(tmp_path: Path) -> None:
    engine, store = _engine(tmp_path)
    with engine:
        engine.put_documents([{"fs_id": "a", "v": 1}, {"fs_id": "c", "v": 1}])
        store.freeze()
        engine.put_documents([{"fs_id": "b", "v": 2}, {"fs_id": "c", "v": 2}])

        for check in (True, False):
            result = engine.sync(check=check)
            assert (result.index_only, result.changed, result.removed) == (0, 0, 0), check

        assert _indexed(engine) == {"a": 1, "b": 2, "c": 2}


def test_sync_removes_the_entry_of_an_object_gone_from_the_bucket(tmp_path: Path) -> None:
    engine, _ = _engine(tmp_path)
    with engine:
        engine.put_documents([{"fs_id": "a", "v": 1}, {"fs_id": "b", "v": 1}])
        for path in (tmp_path / "store" / "objects").iterdir():
            if path.name.startswith("b"):
                path.unlink()  # behind the index's back

        check = engine.sync(check=True)
        assert (check.index_only, check.removed) == (1, 0)
        result = engine.sync()
        assert (result.index_only, result.removed) == (1, 1)
        assert _indexed(engine) == {"a": 1}


def test_sync_leaves_an_entry_whose_object_it_cannot_look_at(tmp_path: Path) -> None:
    """Listed as absent, but its HEAD is denied: whether it is gone is not known, so its
    entry stays, and the key is reported as unavailable, not as index-only."""
    engine, store = _engine(tmp_path)
    with engine:
        engine.put_documents([{"fs_id": "a", "v": 1}])
        store.freeze()
        engine.put_documents([{"fs_id": "b", "v": 2}])
        store.denied = frozenset({"b"})

        result = engine.sync()

        assert (result.index_only, result.removed, result.denied) == (0, 0, 1)
        assert _indexed(engine) == {"a": 1, "b": 2}


# --- query --full beside delete --------------------------------------------------------------


class DeletedWhileRead(LocalStore):
    """A local store where another writer deletes ``doomed`` just before it is read: what a
    ``delete`` run beside a ``query --full`` does between the query's index read and its
    fetch."""

    doomed: str | None = None
    deleter: Engine | None = None

    def open(self, key: str) -> ObjectBody:
        if key == self.doomed and self.deleter is not None:
            assert self.deleter.delete([key]).deleted == 1
        return super().open(key)


def test_query_full_passes_over_a_document_deleted_while_it_ran(tmp_path: Path) -> None:
    store = DeletedWhileRead(tmp_path / "store")
    index = tmp_path / "index.sqlite3"
    with Engine(store, SqliteIndex(index), fields=["v"]) as engine:
        engine.put_documents([{"fs_id": k, "v": 1} for k in "abc"])
        store.doomed = "b"
        store.deleter = Engine(LocalStore(tmp_path / "store"), SqliteIndex(index))
        with store.deleter:
            fetched = {k: d for k, d in engine.query_documents({})}
    assert sorted(fetched) == ["a", "c"]
    assert all(d is not None and d.error is None for d in fetched.values())


def test_query_full_names_an_entry_whose_object_is_another_version(tmp_path: Path) -> None:
    """An object replaced behind the index's back (another copy restored over it): its entry
    matched the filter, the object it holds may not. It is drift, named, not printed."""
    with Engine(LocalStore(tmp_path / "other"), SqliteIndex(tmp_path / "o.sqlite3")) as other:
        other.put_documents([{"fs_id": "b", "v": 2}])
    engine, _ = _engine(tmp_path)
    with engine:
        engine.put_documents([{"fs_id": k, "v": 1} for k in "abc"])
        (restored,) = [p for p in (tmp_path / "other" / "objects").iterdir() if p.is_file()]
        restored.replace(tmp_path / "store" / "objects" / restored.name)
        fetched = dict(engine.query_documents({"v": 1}))
    assert sorted(fetched) == ["a", "b", "c"]
    assert fetched["a"] is not None and fetched["a"].error is None
    changed = fetched["b"]
    assert changed is not None and changed.drifted and changed.error is not None
    assert "another version" in changed.error


def test_query_full_prints_a_document_replaced_with_its_entry_while_it_ran(
    tmp_path: Path,
) -> None:
    """A writer that replaced both the object and its entry after the query read the entry:
    the index describes the object read, which is no drift."""
    store = ReplacedWhileRead(tmp_path / "store")
    index = tmp_path / "index.sqlite3"
    with Engine(store, SqliteIndex(index), fields=["v"]) as engine:
        engine.put_documents([{"fs_id": k, "v": 1} for k in "abc"])
        store.writer = Engine(LocalStore(tmp_path / "store"), SqliteIndex(index))
        with store.writer:
            fetched = dict(engine.query_documents({"v": 1}))
    assert sorted(fetched) == ["a", "b", "c"]
    assert all(d is not None and d.error is None for d in fetched.values())
    assert fetched["b"] is not None and fetched["b"].parse() == {"fs_id": "b", "v": 2}


class ReplacedWhileRead(LocalStore):
    """Replaces document b (object and entry, through ``writer``) just before reading it."""

    writer: Engine | None = None

    def open(self, key: str) -> ObjectBody:
        if key == "b" and self.writer is not None:
            self.writer.put_documents([{"fs_id": "b", "v": 2}])
            self.writer = None
        return super().open(key)


def test_query_full_still_names_an_entry_whose_object_is_gone(tmp_path: Path) -> None:
    engine, _ = _engine(tmp_path)
    with engine:
        engine.put_documents([{"fs_id": k, "v": 1} for k in "ab"])
        for path in (tmp_path / "store" / "objects").iterdir():
            if path.name.startswith("b"):
                path.unlink()  # behind the index's back: drift, for sync to set right
        fetched = dict(engine.query_documents({}))
    assert sorted(fetched) == ["a", "b"]
    assert fetched["b"] is None


def test_a_document_put_again_beside_its_delete_keeps_its_entry(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Identical bytes have one ETag on S3. A put of the same document read the entry, then a
    delete removed the object and the entry; the put's upload lands before the delete clears
    its journal record, and the put's entry write (expecting the entry it read) fails. The
    record then names the put's own object's ETag: the put must not take its object for the
    one being deleted (it stayed, with no entry, and both runs said they succeeded)."""
    doc = {"fs_id": "k", "v": 1}

    def engine() -> Engine:
        store = S3Store(s3_bucket, "docs", endpoint_url=s3_endpoint, region="us-east-1")
        return Engine(store, SqliteIndex(tmp_path / "index.sqlite3"), fields=["v"])

    with engine() as deleter, engine() as putter:
        putter.put_documents([doc])
        read, removed, seen = threading.Event(), threading.Event(), threading.Event()
        versions, clear_journal, journaled = (
            putter.index.versions,
            deleter.index.clear_journal,
            putter.index.journaled,
        )

        def versions_then_let_the_delete_run(keys: Sequence[str]) -> dict[str, Version]:
            found = versions(keys)
            if not read.is_set():  # the put's read of the entries it replaces
                read.set()
                assert removed.wait(20)
            return found

        def clear_once_the_put_saw_the_record(items: Mapping[str, str]) -> None:
            removed.set()  # object and entry gone, the record still there
            seen.wait(20)
            clear_journal(items)

        def journaled_and_tell(keys: Sequence[str] | None = None) -> dict[str, str]:
            found = journaled(keys)
            if found:
                seen.set()
            return found

        monkeypatch.setattr(putter.index, "versions", versions_then_let_the_delete_run)
        monkeypatch.setattr(deleter.index, "clear_journal", clear_once_the_put_saw_the_record)
        monkeypatch.setattr(putter.index, "journaled", journaled_and_tell)
        deleted: list[DeleteResult] = []

        def delete_once_read() -> None:
            assert read.wait(20)
            deleted.append(deleter.delete(["k"]))

        delete = threading.Thread(target=delete_once_read)
        delete.start()
        put = putter.put_documents([doc])
        delete.join(30)
        assert seen.is_set()  # the put met the record: the case under test
        assert deleted[0].deleted == 1
        assert (put.stored, put.not_indexed) == (1, 0)
        assert [info.key for info in putter.store.list_objects()] == ["k"]
        assert _indexed(putter) == {"k": 1}
        check = putter.sync(check=True)
        assert (check.bucket_only, check.index_only, check.changed) == (0, 0, 0)
