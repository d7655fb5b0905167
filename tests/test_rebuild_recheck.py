"""A resumed or split rebuild sees what other tools did to the part of the bucket done before.

Between an interrupted ``rebuild-index`` and its ``--resume`` (or between shards run apart),
another tool deletes objects and stores new versions straight in the bucket, past s3idx's index
(so no change log names them). Before the swap, the rebuild lists the done part again and makes
its entries agree with the bucket: no entry names a deleted object, a replaced one shows its new
version, a new one gets its entry.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine
from s3idx.engine import rebuild as rebuild_module
from s3idx.index.sqlite import SqliteIndex
from s3idx.sharding import Shard
from s3idx.store.base import ObjectStore
from s3idx.store.local import LocalStore
from tests.helpers import OpenIndex, Run, StopAfter

BACKENDS = [
    ("local", "sqlite"),
    ("s3", "sqlite"),
    ("obstore", "sqlite"),
    ("local", "mongomock"),
    ("s3", "ferretdb"),
]
STORES = pytest.mark.parametrize(("store", "index_kind"), BACKENDS, indirect=["store"])
COUNT = 30


def _doc(key: str, version: str = "old") -> dict[str, Any]:
    return {"fs_id": key, "version": version}


def _docs() -> list[dict[str, Any]]:
    return [_doc(f"doc/{i:03d}") for i in range(COUNT)]


@dataclass(frozen=True)
class Changes:
    """What another tool does to keys done before: deleted, replaced by a new version,
    replaced by a foreign object, and stored anew."""

    deleted: str = "doc/000"
    replaced: str = "doc/003"
    foreign: str = "doc/005"
    new: str = "doc/0075"

    @classmethod
    def owned_by(cls, shard: Shard) -> Changes:
        """Keys of ``shard`` only (so that the shard run first has them done before)."""
        owned = [f"doc/{i:03d}" for i in range(COUNT) if shard.owns(f"doc/{i:03d}")]
        new = next(k for k in (f"doc/{i:03d}x" for i in range(COUNT)) if shard.owns(k))
        return cls(owned[0], owned[1], owned[2], new)

    def apply(self, store: ObjectStore, tmp_path: Path) -> None:
        """A plain store delete, objects put through an index of its own, a foreign object."""
        store.delete([self.deleted])
        other = Engine(store, SqliteIndex(tmp_path / "another-tool.sqlite3"), workers=2)
        docs = [_doc(self.replaced, "new"), _doc(self.new, "new")]
        assert other.put_documents(docs, fields=["version"]).stored == 2
        other.index.close()
        store.put(self.foreign, b"not a document", {})

    def assert_index_agrees(self, engine: Engine) -> None:
        entries = {e["fs_id"]: e for e in engine.query({})}
        objects = {o.key: o.etag for o in engine.store.list_objects() if o.key != self.foreign}
        assert set(entries) == set(objects)
        for key, entry in entries.items():
            assert entry["_s3idx"]["etag"] == objects[key], key
        assert self.deleted not in entries and self.foreign not in entries
        assert entries[self.replaced]["version"] == "new"
        assert entries[self.new]["version"] == "new"
        assert engine.sync(check=True).drift == 0


@STORES
def test_a_resumed_rebuild_sees_what_another_tool_did_to_the_part_done_before(
    store: ObjectStore, indexes: OpenIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rebuild_module, "LIST_BATCH", 7)
    with Engine(store, indexes(), workers=4) as engine:
        engine.put_documents(_docs(), fields=["version"])
        stop = threading.Event()
        first = engine.rebuild_index(events=StopAfter(stop, 2), stop=stop)
        assert (first.interrupted, first.listed) == (True, 14)

        changes = Changes()
        changes.apply(store, tmp_path)
        second = engine.rebuild_index(resume=True)

        assert (second.resumed, second.committed) == (True, True)
        # One gone, one foreign now; one replaced, one new.
        assert (second.recheck_dropped, second.recheck_refreshed) == (2, 2)
        assert second.rechecked == 14  # 14 done before, one deleted, one added
        assert second.skipped.not_s3idx_keys == [changes.foreign]
        assert second.total_entries == COUNT - 2 + 1
        changes.assert_index_agrees(engine)


@STORES
def test_shards_run_apart_see_what_another_tool_did_in_between(
    store: ObjectStore, indexes: OpenIndex, tmp_path: Path
) -> None:
    with Engine(store, indexes(), workers=4) as engine:
        engine.put_documents(_docs(), fields=["version"])
        first = engine.rebuild_index(shard=Shard(0, 2))
        assert (first.committed, first.swapped) == (False, False)

        changes = Changes.owned_by(Shard(0, 2))
        changes.apply(store, tmp_path)
        last = engine.rebuild_index(shard=Shard(1, 2))

        assert last.committed
        assert (last.recheck_dropped, last.recheck_refreshed) == (2, 2)
        assert last.total_entries == COUNT - 2 + 1
        assert last.skipped.not_s3idx_keys == [changes.foreign]
        changes.assert_index_agrees(engine)


@pytest.mark.parametrize("transport", ["local", "http"])
def test_cli_split_rebuild_reports_the_recheck_and_verify_passes(
    run: Run, tmp_path: Path, transport: str, request: pytest.FixtureRequest
) -> None:
    index = ["--index", str(tmp_path / "i.sqlite3")]
    store: ObjectStore
    if transport == "local":
        where = ["--store", str(tmp_path / "store"), *index]
        store = LocalStore(tmp_path / "store")
    else:
        from s3idx.store.s3 import S3Store

        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        location = ["--store", f"s3://{bucket}/docs", "--endpoint-url", endpoint]
        where = [*location, "--transport", "http", *index]
        store = S3Store(bucket, "docs", endpoint_url=endpoint, region="us-east-1")
    lines = b"".join(orjson.dumps(d) + b"\n" for d in _docs())
    assert run("put", *where, "--field", "version", "-q", input=lines).exit_code == 0
    assert run("rebuild-index", *where, "--shard", "0/2", "-q").exit_code == 0

    changes = Changes.owned_by(Shard(0, 2))
    changes.apply(store, tmp_path)
    done = run("rebuild-index", *where, "--shard", "1/2", "--json")

    assert done.exit_code == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["committed"] is True
    assert (report["recheck_dropped"], report["recheck_refreshed"]) == (2, 2)
    assert report["rechecked"] == COUNT
    assert report["total_entries"] == COUNT - 1
    wanted = orjson.dumps({"fs_id": {"$in": [changes.deleted, changes.replaced]}}).decode()
    query = run("query", *where, wanted)
    assert query.exit_code == 0, query.stderr
    found = [orjson.loads(line) for line in query.stdout.splitlines()]
    assert [(d["fs_id"], d["version"]) for d in found] == [(changes.replaced, "new")]
    store.delete([changes.foreign])  # verify counts a foreign object apart
    store.close()
    verified = run("verify", *where)
    assert verified.exit_code == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize(
    ("store", "index_kind"), [("local", "sqlite"), ("local", "mongomock")], indirect=["store"]
)
def test_a_batch_staged_but_not_checkpointed_is_listed_again_too(
    store: ObjectStore, indexes: OpenIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between a batch's entries and its checkpoint: the resumed run finds them staged
    beyond the checkpoint, and they are checked like the part before it."""
    monkeypatch.setattr(rebuild_module, "LIST_BATCH", 7)
    real = rebuild_module._checkpoint
    calls = iter(range(100))

    def dies_at_the_third(result: Any, listed_through: str) -> dict[str, Any]:
        if next(calls) == 2:
            raise KeyboardInterrupt  # killed after the third batch's upsert
        return real(result, listed_through)

    with Engine(store, indexes(), workers=4) as engine:
        engine.put_documents(_docs(), fields=["version"])
        monkeypatch.setattr(rebuild_module, "_checkpoint", dies_at_the_third)
        with pytest.raises(KeyboardInterrupt):
            engine.rebuild_index()
        monkeypatch.setattr(rebuild_module, "_checkpoint", real)

        # Past the checkpoint (doc/013), in the batch staged without one (doc/014 to doc/020).
        changes = Changes("doc/015", "doc/016", "doc/017", "doc/0165")
        changes.apply(store, tmp_path)
        resumed = engine.rebuild_index(resume=True)

        assert (resumed.resumed, resumed.committed) == (True, True)
        # The new object was listed and read by the resumed run's own pass: nothing to redo.
        assert (resumed.recheck_dropped, resumed.recheck_refreshed) == (2, 1)
        changes.assert_index_agrees(engine)


def test_a_stop_during_the_recheck_swaps_nothing_and_resume_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rebuild_module, "LIST_BATCH", 7)
    store = LocalStore(tmp_path / "store")
    with Engine(store, SqliteIndex(tmp_path / "index.sqlite3"), workers=4) as engine:
        engine.put_documents(_docs(), fields=["version"])
        stop = threading.Event()
        assert engine.rebuild_index(events=StopAfter(stop, 2), stop=stop).interrupted
        changes = Changes()
        changes.apply(store, tmp_path)
        before = sorted(e["fs_id"] for e in engine.query({}))

        # Three batches left to list (doc/014 to doc/029), then the first batch of the recheck.
        stop = threading.Event()
        stopped = engine.rebuild_index(resume=True, events=StopAfter(stop, 4), stop=stop)

        assert (stopped.interrupted, stopped.committed) == (True, False)
        # Its first 7 keys: doc/000 (gone) and doc/001 to doc/006 (listed).
        assert (stopped.rechecked, stopped.recheck_dropped, stopped.recheck_refreshed) == (6, 2, 1)
        assert sorted(e["fs_id"] for e in engine.query({})) == before  # the old index
        finished = engine.rebuild_index(resume=True)
        assert finished.committed
        assert (finished.recheck_dropped, finished.recheck_refreshed) == (0, 1)  # doc/0075
        changes.assert_index_agrees(engine)
