"""delete's journal protocol (issue 14): a crash at any step is finished by the next delete or
sync, a document rewritten while it is being deleted stays, nothing deleted comes back."""

from __future__ import annotations

import builtins
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine
from s3idx.engine import delete as delete_module
from s3idx.engine.delete import DeletesUnderWay, finish_deletes
from s3idx.errors import BackendUnavailableError, ObjectNotFoundError
from s3idx.index.base import Index
from s3idx.index.mongo import MongoIndex
from s3idx.index.sqlite import SqliteIndex
from s3idx.limits import MAX_NESTING
from s3idx.store.base import DeleteFailure
from s3idx.store.local import LocalStore
from tests.helpers import entries_and_objects, subprocess_env


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with Engine(LocalStore(tmp_path / "store"), SqliteIndex(tmp_path / "index.sqlite3")) as e:
        e.put_documents([{"fs_id": f"k{i}", "v": i} for i in range(6)], fields=["v"])
        yield e


def _keys(engine: Engine) -> list[str]:
    return sorted(e["fs_id"] for e in engine.query({}, fields=["fs_id"]))


def _objects(engine: Engine) -> list[str]:
    return sorted(o.key for o in engine.store.list_objects())


class _FailingDelete:
    """A store whose deletes fail (as if the process died there); the rest is the real store."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def delete(self, keys: Sequence[str], **kwargs: Any) -> builtins.list[DeleteFailure]:
        raise BackendUnavailableError("connection refused (test)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_delete_removes_entry_and_object_and_leaves_no_journal(engine: Engine) -> None:
    result = engine.delete(["k1", "nope"])
    assert (result.deleted, result.entries_deleted, result.missing) == (1, 1, ["nope"])
    assert (result.rewritten, result.finished) == (0, 0)
    assert "k1" not in _keys(engine) and "k1" not in _objects(engine)
    assert engine.index.journaled() == {}


def test_a_delete_cut_off_before_the_objects_is_finished_by_the_next_one(engine: Engine) -> None:
    inner = engine.store.inner
    engine.store.inner = _FailingDelete(inner)
    with pytest.raises(BackendUnavailableError):
        engine.delete_matching({"v": {"$lt": 3}})
    engine.store.inner = inner
    # The entries went first: queries no longer list them; the objects are still there, and
    # the journal says they are being deleted.
    assert _keys(engine) == ["k3", "k4", "k5"]
    assert _objects(engine) == [f"k{i}" for i in range(6)]
    assert sorted(engine.index.journaled()) == ["k0", "k1", "k2"]

    # sync does not bring them back; it finishes the delete.
    engine.sync()
    assert _keys(engine) == ["k3", "k4", "k5"]
    assert _objects(engine) == ["k3", "k4", "k5"]
    assert engine.index.journaled() == {}


def test_the_next_delete_reports_what_it_finished(engine: Engine) -> None:
    engine.index.journal_deletes({"k0": engine.index.etags(["k0"])["k0"]})
    result = engine.delete(["k5"])
    assert (result.deleted, result.finished) == (1, 1)
    assert _objects(engine) == ["k1", "k2", "k3", "k4"]
    assert _keys(engine) == ["k1", "k2", "k3", "k4"]


def test_finish_deletes_leaves_a_document_rewritten_since(engine: Engine) -> None:
    old = engine.index.etags(["k0", "k1"])
    engine.index.journal_deletes(old)
    engine.index.delete_if({"k0": old["k0"]})  # the killed delete got this far for k0
    engine.put_documents([{"fs_id": "k0", "v": 100}, {"fs_id": "k1", "v": 101}])

    assert finish_deletes(engine.store, engine.index) == 0
    assert engine.get("k0")["v"] == 100
    assert engine.get("k1")["v"] == 101
    assert engine.index.journaled() == {}
    assert engine.sync(check=True).drift == 0


def _puts_begun_before_the_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    """The puts these tests run inside a delete began before it journaled its keys: they read
    the delete journal before the records were there, and wait for nothing (a put that finds
    them waits for the delete to end: tests/test_many_writers.py)."""
    monkeypatch.setattr(DeletesUnderWay, "await_for", lambda self, keys: False)


def test_an_entry_rewritten_while_being_deleted_stays(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _puts_begun_before_the_delete(monkeypatch)
    index = engine.index
    journal = index.journal_deletes

    def rewrite_then_journal(items: Mapping[str, str]) -> None:
        journal(items)
        # Another writer's put lands between the ETags read and the entries' removal.
        if "k2" in items:
            engine.put_documents([{"fs_id": "k2", "v": 200}])

    index.journal_deletes = rewrite_then_journal  # type: ignore[method-assign]
    result = engine.delete_matching({"v": {"$lt": 3}})
    index.journal_deletes = journal  # type: ignore[method-assign]

    assert (result.deleted, result.rewritten) == (2, 1)
    assert engine.get("k2")["v"] == 200
    assert _keys(engine) == ["k2", "k3", "k4", "k5"]
    assert index.journaled() == {}
    assert engine.sync(check=True).drift == 0


def test_an_object_rewritten_while_being_deleted_stays(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _puts_begun_before_the_delete(monkeypatch)
    inner = engine.store.inner

    class RewriteFirst:
        def delete(self, keys: Sequence[str], **kwargs: Any) -> builtins.list[DeleteFailure]:
            # Another writer's upload lands after the entry went, before the object does.
            writer = Engine(inner, SqliteIndex(Path(engine.index.location)))
            writer.put_documents([{"fs_id": "k4", "v": 400}])
            return inner.delete(keys, **kwargs)  # type: ignore[no-any-return]

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    engine.store.inner = RewriteFirst()
    result = engine.delete(["k4", "k5"])
    engine.store.inner = inner

    assert (result.deleted, result.rewritten, result.failed) == (1, 1, [])
    assert engine.get("k4")["v"] == 400
    assert engine.index.journaled() == {}
    assert engine.sync(check=True).drift == 0
    assert _keys(engine) == _objects(engine) == ["k0", "k1", "k2", "k3", "k4"]


def test_an_object_the_store_refuses_to_delete_stays_journaled_and_is_not_adopted(
    engine: Engine,
) -> None:
    inner = engine.store.inner

    class Refusing:
        def delete(self, keys: Sequence[str], **kwargs: Any) -> builtins.list[DeleteFailure]:
            return [DeleteFailure(k, "AccessDenied: (test)") for k in keys]

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    engine.store.inner = Refusing()
    result = engine.delete(["k0"])
    assert result.failed == [("k0", "AccessDenied: (test)")]
    assert result.deleted == 0
    assert list(engine.index.journaled()) == ["k0"]
    assert engine.delete([]).finished == 0  # tried again, refused again
    assert list(engine.index.journaled()) == ["k0"]
    engine.sync()
    assert "k0" not in _keys(engine)  # not adopted back
    engine.store.inner = inner
    assert finish_deletes(engine.store, engine.index) == 1
    assert _objects(engine) == ["k1", "k2", "k3", "k4", "k5"]


def test_a_dry_run_finishes_nothing_and_deletes_nothing(engine: Engine) -> None:
    engine.index.journal_deletes({"k0": engine.index.etags(["k0"])["k0"]})
    result = engine.delete_matching({"v": {"$gte": 4}}, dry_run=True)
    assert (result.would_delete, result.finished) == (["k4", "k5"], 0)
    assert len(_objects(engine)) == 6
    assert list(engine.index.journaled()) == ["k0"]


def test_a_named_orphan_object_is_deleted(engine: Engine) -> None:
    engine.index.delete(["k3"])  # an object whose put died before its entry
    result = engine.delete(["k3"])
    assert (result.deleted, result.missing) == (1, [])
    with pytest.raises(ObjectNotFoundError):
        engine.store.head("k3")


# --- kill -9 of a real delete, at random moments ------------------------------------------------


def _lines(count: int) -> bytes:
    return b"".join(orjson.dumps({"fs_id": f"k{i:04d}", "v": i % 3}) + b"\n" for i in range(count))


def _s3idx(home: Path, *args: str) -> subprocess.Popen[bytes]:
    locations = ("--store", str(home / "store"), "--index", str(home / "index.sqlite3"))
    return subprocess.Popen(
        [sys.executable, "-m", "s3idx", *args, *locations],
        env=subprocess_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_journal(index: Index, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not index.journaled() and process.poll() is None:
        assert time.monotonic() < deadline, "the delete never journaled anything"
        time.sleep(0.005)


def _ok(process: subprocess.Popen[bytes]) -> Any:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    return orjson.loads(out)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("finisher", ["delete", "sync"])
def test_kill_9_of_delete_filter_at_random_moments_is_finished_without_resurrection(
    tmp_path: Path, finisher: str
) -> None:
    seed = int(os.environ.get("S3IDX_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    repeat = int(os.environ.get("S3IDX_RACE_REPEAT", "1")) * 4
    for round_ in range(repeat):
        home = tmp_path / f"round{round_}"
        home.mkdir()
        (home / "in.jsonl").write_bytes(_lines(1500))
        _ok(_s3idx(home, "put", str(home / "in.jsonl"), "--field", "v", "--json"))
        delete = _s3idx(home, "delete", "--filter", '{"v": 0}', "--json")
        delay = rng.uniform(0.0, 0.04)
        with SqliteIndex(home / "index.sqlite3") as index:
            _wait_for_journal(index, delete)  # the delete is under way
        time.sleep(delay)
        delete.kill()
        delete.communicate(timeout=30)
        where = f"seed {seed}, round {round_}, killed {delay:.3f} s after its first journal write"

        with Engine(LocalStore(home / "store"), SqliteIndex(home / "index.sqlite3")) as engine:
            entries_and_objects(engine)  # no entry without its object, even right after the kill
            left = {e["fs_id"] for e in engine.query({"v": 0}, fields=["fs_id"])}
            removed = {f"k{i:04d}" for i in range(0, 1500, 3)} - left
            journaled = engine.index.journaled()
            objects = {o.key for o in engine.store.list_objects()}
            # An entry goes only once journaled, and its record only once its object is gone.
            assert not (removed - set(journaled)) & objects, where
            where += f": {len(removed)} removed, {len(journaled)} journaled, {len(objects)} objects"

            if finisher == "delete":
                summary = _ok(_s3idx(home, "delete", "--filter", '{"v": 1}', "--json"))
                # Finished: the journaled objects still there. Those the killed delete had
                # removed are not counted again (one process counts each object it removes).
                left_journaled = len(set(journaled) & objects)
                assert (summary["deleted"], summary["finished"]) == (500, left_journaled), where
                counts = {1: 0, 2: 500}
            else:
                _ok(_s3idx(home, "sync", "--json"))
                counts = {1: 500, 2: 500}
            assert engine.index.journaled() == {}, where
            for value, count in counts.items():
                assert engine.count({"v": value}) == count, where
            # Nothing the killed delete removed from the index is back, in index or bucket.
            now = {e["fs_id"] for e in engine.query({"v": 0}, fields=["fs_id"])}
            assert now == left - set(journaled), where
            objects = {o.key for o in engine.store.list_objects()}
            assert not (removed | set(journaled)) & objects, where
            assert entries_and_objects(engine) == (len(objects), len(objects)), where
            assert engine.sync(check=True).drift == 0, where


def test_an_object_rewritten_by_a_writer_that_died_is_indexed_by_the_delete(
    engine: Engine,
) -> None:
    inner = engine.store.inner
    newer = Engine(inner, SqliteIndex(Path(engine.index.location)))
    newer.put_documents([{"fs_id": "k4", "v": 400}])
    head = inner.head("k4")
    body = b"".join(inner.open("k4").chunks)
    engine.store.inner = inner
    engine.put_documents([{"fs_id": "k4", "v": 4}])  # the version the delete will read

    class UploadFirst:
        def delete(self, keys: Sequence[str], **kwargs: Any) -> builtins.list[DeleteFailure]:
            # A put uploads its newer object here and dies before writing its entry.
            inner.put("k4", body, head.metadata)
            return inner.delete(keys, **kwargs)  # type: ignore[no-any-return]

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    engine.store.inner = UploadFirst()
    result = engine.delete(["k4"])
    engine.store.inner = inner

    assert (result.deleted, result.rewritten) == (0, 1)
    assert engine.query({"v": 400}, fields=["fs_id"]).__next__()["fs_id"] == "k4"
    assert engine.sync(check=True).drift == 0


@pytest.fixture(params=["local", "s3"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """A store location (local directory or moto's S3) for two indexes to share."""
    if request.param == "local":
        return ["--store", str(tmp_path / "store")]
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return ["--store", f"s3://{bucket}/docs", "--endpoint-url", endpoint]


def _delete_a_and_b_keeping_a(run: Any, where: list[str], message: str) -> Any:
    """``delete a b --json``, which keeps ``a``: it fails (exit 3) with just ``message``; its
    summary."""
    result = run("delete", "a", "b", "--json", *where)
    assert result.exit_code == 3, result.stderr
    assert result.stderr == message
    return orjson.loads(result.stdout)


def _delete_a_again(run: Any, where: list[str]) -> None:
    """A second ``delete a`` deletes what the first kept."""
    again = run("delete", "a", "--json", *where)
    assert again.exit_code == 0, again.stderr
    assert orjson.loads(again.stdout)["deleted"] == 1


def test_a_named_key_whose_object_changed_since_indexed_is_not_deleted_and_says_so(
    run: Any, tmp_path: Path, shared_store: list[str]
) -> None:
    """An index out of date with its store (another index's put rewrote ``a``): the delete
    leaves the stored version, as it leaves one rewritten while deleting, but a named key left
    in place is a failure to report (exit 3), and the next delete deletes it."""
    stale = [*shared_store, "--index", str(tmp_path / "stale.sqlite3")]
    other = [*shared_store, "--index", str(tmp_path / "other.sqlite3")]
    assert run("put", "-q", *stale, input='{"fs_id": "a", "v": 1}\n{"fs_id": "b"}\n').exit_code == 0
    assert run("put", "-q", *other, input='{"fs_id": "a", "v": 2}\n').exit_code == 0

    summary = _delete_a_and_b_keeping_a(
        run,
        stale,
        "s3idx: not deleted: a: its object changed since its entry was read (another writer "
        "stored it "
        "again, or the index was out of date); its entry now shows the stored version: delete it "
        "again to delete that\n",
    )
    assert (summary["deleted"], summary["rewritten"], summary["kept"]) == (1, 1, ["a"])
    assert [orjson.loads(line) for line in run("get", "a", *stale).stdout.splitlines()] == [
        {"fs_id": "a", "v": 2}
    ]
    assert run("query", '{"fs_id": "a"}', "--count", *stale).stdout == "1\n"

    _delete_a_again(run, stale)
    assert run("get", "a", *stale).exit_code == 4


def _replace_with_foreign(store: list[str], tmp_path: Path, key: str) -> None:
    """Another program's object under ``key``: junk in a local store's file, or an S3
    object without s3idx's metadata."""
    if store[1].startswith("s3://"):
        import boto3

        bucket, prefix = store[1].removeprefix("s3://").split("/", 1)
        client = boto3.client("s3", endpoint_url=store[3], region_name="us-east-1")
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=b"not json")
    else:
        (tmp_path / "store" / "objects" / f"{key}~").write_bytes(b"junk")


def test_a_named_key_whose_object_became_foreign_is_not_deleted_and_says_it_has_no_entry(
    run: Any, tmp_path: Path, shared_store: list[str]
) -> None:
    """The object was replaced by one s3idx cannot index: the delete leaves it (not the
    version it read), its entry goes, and the message says so instead of "its entry now
    shows the stored version"; deleting the key again deletes it."""
    where = [*shared_store, "--index", str(tmp_path / "i.sqlite3")]
    assert run("put", "-q", *where, input='{"fs_id": "a"}\n{"fs_id": "b"}\n').exit_code == 0
    _replace_with_foreign(shared_store, tmp_path, "a")

    summary = _delete_a_and_b_keeping_a(
        run,
        where,
        "s3idx: not deleted: a: its object changed since its entry was read (another program "
        "stored it again, or the index was out of date), and what is stored now cannot be "
        "indexed (not an s3idx object, or unreadable metadata); it was left, without an index "
        "entry: delete it again to delete it\n",
    )
    assert (summary["deleted"], summary["kept"], summary["kept_without_entry"]) == (
        1,
        ["a"],
        ["a"],
    )
    assert run("query", '{"fs_id": "a"}', "--count", *where).stdout == "0\n"

    _delete_a_again(run, where)
    check = run("sync", "--check", *where)
    assert check.exit_code == 0, check.stdout + check.stderr


# --- delete --filter pages through the matches without changing the filter's depth -----------


def _nested(operator: str, depth: int, inner: dict[str, Any]) -> dict[str, Any]:
    node = inner
    for _ in range(depth):
        node = {"v": {"$not": node["v"]}} if operator == "$not" else {operator: [node]}
    return node


DEEPEST = [
    # Each as deep as a filter may be (MAX_NESTING), on every page.
    _nested("$and", MAX_NESTING, {"v": {"$gte": 1}}),
    _nested("$or", MAX_NESTING, {"v": {"$gte": 1}}),
    _nested("$not", MAX_NESTING, {"v": {"$gte": 1}}),  # an even number of $not: v >= 1
    {"fs_id": {"$gte": "k1"}, "$and": _nested("$and", MAX_NESTING, {"v": {"$gte": 0}})["$and"]},
    {
        "$and": [{"fs_id": {"$gte": "k1"}}],
        "$or": [_nested("$or", MAX_NESTING - 1, {"v": 1}), {"v": {"$gte": 2}}],
    },
]


@pytest.fixture(params=["sqlite", "mongomock"])
def paged_engine(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    monkeypatch.setattr(delete_module, "DELETE_BATCH", 2)  # several pages of matches
    if request.param == "sqlite":
        index: Index = SqliteIndex(tmp_path / "index.sqlite3")
    else:
        client = request.getfixturevalue("mongomock_client")
        index = MongoIndex("mongodb://localhost/test", "test", client=client)
    with Engine(LocalStore(tmp_path / "store"), index) as e:
        e.put_documents([{"fs_id": f"k{i}", "v": i} for i in range(6)], fields=["v"])
        yield e


@pytest.mark.parametrize("flt", DEEPEST, ids=["and", "or", "not", "key-and", "and-or"])
def test_a_filter_nested_as_deep_as_allowed_deletes_every_match(
    paged_engine: Engine, flt: dict[str, Any]
) -> None:
    assert paged_engine.count(flt) == 5
    dry = paged_engine.delete_matching(flt, dry_run=True)
    assert sorted(dry.would_delete) == ["k1", "k2", "k3", "k4", "k5"]
    result = paged_engine.delete_matching(flt)
    assert (result.deleted, result.failed) == (5, [])
    assert _keys(paged_engine) == _objects(paged_engine) == ["k0"]
