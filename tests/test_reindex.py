"""``reindex`` through the library: races with writers, damaged objects, what stays pending."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from s3idx import Engine, codec
from s3idx.index.sqlite import SqliteIndex
from s3idx.query.indexed import FieldPendingError
from s3idx.store.base import ObjectStore, PutReceipt
from s3idx.store.local import LocalStore

DOCS = [{"fs_id": k, "n": i, "color": c} for i, (k, c) in enumerate([("a", "red"), ("b", "blue")])]


def engine(tmp_path: Path, store: LocalStore | None = None, **options: object) -> Engine:
    store = store or LocalStore(tmp_path / "store")
    return Engine(store, SqliteIndex(tmp_path / "index.sqlite3"), **options)  # type: ignore[arg-type]


def stored_with_a_later_field(tmp_path: Path, **options: object) -> Engine:
    e = engine(tmp_path, **options)
    e.put_documents(DOCS, fields=["n"])
    e.put_documents([{"fs_id": "c", "n": 9, "color": "red"}], fields=["color"])
    return e


def test_queries_on_a_pending_field_are_refused_until_reindex(tmp_path: Path) -> None:
    e = stored_with_a_later_field(tmp_path)

    with pytest.raises(FieldPendingError, match="not yet indexed for the 2 documents"):
        e.count({"color": "red"})

    result = e.reindex()

    assert (result.updated, result.up_to_date, result.completed) == (2, 1, ["color"])
    assert e.count({"color": "red"}) == 2
    before = e.store.head("a").metadata
    assert codec.parse_metadata(before).fields == ("n", "color")


class OverwrittenOnce(LocalStore):
    """A writer overwrites ``a`` just as reindex is about to replace its metadata."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.raced = False

    def replace_metadata(
        self, key: str, metadata: Mapping[str, str], *, if_match: str
    ) -> PutReceipt:
        if key == "a" and not self.raced:
            self.raced = True
            head = self.head(key)
            entry = codec.parse_metadata(head.metadata).entry
            body = codec.dumps({"fs_id": "a", "n": 0, "color": "green"})
            new = codec.build_metadata(
                entry, "fs_id", ("n",), "json", hashlib.sha256(body).hexdigest()
            )
            self.put(key, body, new)
        return super().replace_metadata(key, metadata, if_match=if_match)


def test_an_object_overwritten_meanwhile_is_read_again_not_clobbered(tmp_path: Path) -> None:
    store = OverwrittenOnce(tmp_path / "store")
    e = engine(tmp_path, store)
    e.put_documents(DOCS, fields=["n"])
    e.put_documents([], fields=["color"])

    result = e.reindex()

    assert store.raced
    assert (result.updated, result.failed) == (2, 0)
    assert e.get("a")["color"] == "green"  # the writer's document survived
    assert [x["fs_id"] for x in e.query({"color": "green"})] == ["a"]
    assert e.index.bookkeeping(["a"])["a"][1].etag == store.head("a").etag


def test_a_damaged_object_fails_alone_and_the_field_stays_pending(tmp_path: Path) -> None:
    e = stored_with_a_later_field(tmp_path, compress="none")
    path = next((tmp_path / "store" / "objects").glob("b~"))
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"blue"', b'"bluE"'))  # one byte, under intact metadata

    result = e.reindex()

    assert (result.updated, result.failed) == (1, 1)
    assert result.failed_keys[0][0] == "b"
    assert "does not match its recorded sha256" in result.failed_keys[0][1]
    assert result.completed == []
    # Pending still, for the one document that failed, no longer for both.
    with pytest.raises(FieldPendingError, match="not yet indexed for the 1 document stored"):
        e.count({"color": "red"})
    assert e.index.settings().pending == (("color", 1),)
    assert codec.parse_metadata(e.store.head("b").metadata).fields == ("n",)  # left as it was


class AnswerLost(LocalStore):
    """Replaces ``a``'s metadata, then fails as if the answer were lost (a timeout, a crash
    of reindex right after): the object has every field, its entry not yet."""

    def replace_metadata(
        self, key: str, metadata: Mapping[str, str], *, if_match: str
    ) -> PutReceipt:
        receipt = super().replace_metadata(key, metadata, if_match=if_match)
        if key == "a":
            raise KeyboardInterrupt  # stands for kill -9: nothing after the copy runs
        return receipt


def test_a_reindex_stopped_after_a_copy_leaves_no_entry_behind_when_run_again(
    tmp_path: Path,
) -> None:
    e = stored_with_a_later_field(tmp_path, workers=1)
    stopped = engine(tmp_path, AnswerLost(tmp_path / "store"), workers=1)
    with pytest.raises(KeyboardInterrupt):
        stopped.reindex()
    assert codec.parse_metadata(e.store.head("a").metadata).fields == ("n", "color")

    result = e.reindex()

    # "a" is up to date in the bucket, its entry was not: written now, before the field is
    # called complete.
    assert result.completed == ["color"]
    assert sorted(d["fs_id"] for d in e.query({"color": "red"})) == ["a", "c"]
    assert e.sync(check=True).drift == 0


class _CopyAnswerLost:
    """Any store whose metadata copy of ``a`` lands and then is lost: stands for a reindex
    killed right after the copy."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def replace_metadata(
        self, key: str, metadata: Mapping[str, str], *, if_match: str
    ) -> PutReceipt:
        receipt = self._store.replace_metadata(key, metadata, if_match=if_match)
        if key == "a":
            raise KeyboardInterrupt
        return receipt


def test_a_reindex_stopped_after_a_copy_that_kept_the_etag_completes_its_entry_when_run_again(
    store: ObjectStore, tmp_path: Path
) -> None:
    # On S3 a copy of a single-part object keeps its ETag (the MD5 of the body): its entry,
    # written before the field existed, names the very version the bucket now holds.
    index = tmp_path / "index.sqlite3"
    with Engine(store, SqliteIndex(index), workers=1) as e:
        e.put_documents(DOCS, fields=["n"])
        e.put_documents([{"fs_id": "c", "n": 9, "color": "red"}], fields=["color"])
        before = e.store.head("a").etag
        stopped = Engine(_CopyAnswerLost(store), SqliteIndex(index), workers=1)  # type: ignore[arg-type]
        with pytest.raises(KeyboardInterrupt):
            stopped.reindex()
        assert codec.parse_metadata(e.store.head("a").metadata).fields == ("n", "color")
        kept_etag = e.store.head("a").etag == before

        result = e.reindex()

        assert result.completed == ["color"]
        assert sorted(d["fs_id"] for d in e.query({"color": "red"})) == ["a", "c"], kept_etag
        verified = e.verify()
        assert (verified.ok, verified.damaged) == (3, 0)
        assert e.reindex().reconciled == 0  # entries that agree are left alone
