"""``--rewrite`` (sync, rebuild-index) beside another writer: nothing accepted is lost.

The rewrite reads a maggma object (GET) and writes it back in the s3idx format under the same
key. A ``put`` or ``delete`` of that key landing between the two must win: the rewrite's write
is conditional on the ETag it read, and a rewrite that loses its condition leaves the key as the
other writer left it. Each race is made exact here by a store wrapper that runs the other writer
just before the rewrite's write; tests/test_races.py runs it in processes with random timing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest

from s3idx import Engine
from s3idx.errors import ExitStatus, ObjectNotFoundError, TransientError
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import ObjectBody, ObjectStore, PutReceipt
from s3idx.store.local import LocalStore
from tests.helpers import Run

STORES = pytest.mark.parametrize("store", ["local", "s3", "obstore"], indirect=True)
KEYS = ["mp-0", "mp-1", "mp-2"]


def put_maggma_object(store: ObjectStore, key: str, tag: str = "maggma") -> None:
    """An object as maggma's S3Store writes it: a msgpack body, the fields as metadata."""
    document = {"task_id": key, "tag": tag}
    names = orjson.dumps({"task_id": "task-id", "tag": "tag"}).decode()
    metadata = {"s3-to-mongo-keys": names, "task-id": key, "tag": tag}
    store.put(key, msgpack.packb(document), metadata)


class BeforeRewrite:
    """A store that runs a hook once, just before the first write of a key it read (the
    rewrite's write, after its GET)."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self.hooks: dict[str, Callable[[], None]] = {}
        self._read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def open(self, key: str) -> ObjectBody:
        self._read.add(key)
        return self._inner.open(key)

    def put(self, key: str, body: bytes, metadata: Mapping[str, str], **options: Any) -> PutReceipt:
        hook = self.hooks.pop(key, None) if key in self._read else None
        if hook is not None:
            hook()
        return self._inner.put(key, body, metadata, **options)


@pytest.fixture
def maggma_bucket(store: ObjectStore, tmp_path: Path) -> Iterator[ObjectStore]:
    """The store holding three maggma objects, already indexed from their metadata."""
    for key in KEYS:
        put_maggma_object(store, key)
    with _engine(store, tmp_path) as engine:
        assert engine.rebuild_index().maggma.indexed == 3
    yield store


def _engine(store: ObjectStore, tmp_path: Path) -> Engine:
    return Engine(store, SqliteIndex(tmp_path / "index.sqlite3"), workers=2)


def _other(
    store: ObjectStore, tmp_path: Path, action: Callable[[Engine], Any]
) -> Callable[[], None]:
    """Another writer: its own engine and index connection, on the bare store."""

    def run() -> None:
        with _engine(store, tmp_path) as other:
            action(other)

    return run


def _rewrite(engine: Engine, command: str) -> Any:
    if command == "sync":
        return engine.sync(rewrite=True)
    return engine.rebuild_index(rewrite=True)


def _assert_index_describes_bucket(engine: Engine) -> None:
    """Every entry's ETag is its object's, every object has an entry, bodies agree."""
    entries = {e["task_id"]: e for e in engine.query({})}
    objects = {o.key: o.etag for o in engine.store.list_objects()}
    assert set(entries) == set(objects)
    for key, entry in entries.items():
        assert entry["_s3idx"]["etag"] == objects[key], key
        assert engine.get(key)["tag"] == entry["tag"], key
    assert engine.sync(check=True).drift == 0


@STORES
@pytest.mark.parametrize("command", ["sync", "rebuild-index"])
def test_a_put_landing_during_a_rewrite_is_kept(
    maggma_bucket: ObjectStore, tmp_path: Path, command: str
) -> None:
    hooked = BeforeRewrite(maggma_bucket)
    hooked.hooks["mp-1"] = _other(
        maggma_bucket,
        tmp_path,
        lambda e: e.put_documents([{"task_id": "mp-1", "tag": "theirs"}], fields=["tag"]),
    )
    with _engine(hooked, tmp_path) as engine:  # type: ignore[arg-type]
        result = _rewrite(engine, command)

        assert not hooked.hooks  # the other writer did run, between the rewrite's GET and PUT
        maggma = result.maggma
        assert (maggma.rewritten, maggma.rewrite_failed, maggma.rewrite_skipped) == (2, 0, 1)
        assert engine.get("mp-1") == {"task_id": "mp-1", "tag": "theirs"}
        assert [e["tag"] for e in engine.query({"task_id": "mp-1"})] == ["theirs"]
        _assert_index_describes_bucket(engine)


@STORES
@pytest.mark.parametrize("command", ["sync", "rebuild-index"])
def test_a_delete_landing_during_a_rewrite_is_not_undone(
    maggma_bucket: ObjectStore, tmp_path: Path, command: str
) -> None:
    hooked = BeforeRewrite(maggma_bucket)
    hooked.hooks["mp-1"] = _other(maggma_bucket, tmp_path, lambda e: e.delete(["mp-1"]))
    with _engine(hooked, tmp_path) as engine:  # type: ignore[arg-type]
        result = _rewrite(engine, command)

        assert not hooked.hooks
        assert (result.maggma.rewritten, result.maggma.rewrite_skipped) == (2, 1)
        with pytest.raises(ObjectNotFoundError):
            maggma_bucket.head("mp-1")
        assert list(engine.query({"task_id": "mp-1"})) == []
        _assert_index_describes_bucket(engine)


@STORES
def test_a_maggma_write_landing_during_a_rewrite_is_kept_and_indexed(
    maggma_bucket: ObjectStore, tmp_path: Path
) -> None:
    # maggma itself writes the key again meanwhile: its version is kept (the next
    # sync --rewrite converts it), and indexed from its metadata.
    hooked = BeforeRewrite(maggma_bucket)
    hooked.hooks["mp-1"] = lambda: put_maggma_object(maggma_bucket, "mp-1", "newer")
    with _engine(hooked, tmp_path) as engine:  # type: ignore[arg-type]
        result = engine.sync(rewrite=True)

        assert (result.maggma.rewritten, result.maggma.rewrite_skipped) == (2, 1)
        assert engine.get("mp-1") == {"task_id": "mp-1", "tag": "newer"}
        assert [e["tag"] for e in engine.query({"task_id": "mp-1"})] == ["newer"]
        _assert_index_describes_bucket(engine)
        again = engine.sync(rewrite=True)
        assert (again.maggma.rewritten, again.maggma.rewrite_skipped) == (1, 0)
        assert engine.get("mp-1") == {"task_id": "mp-1", "tag": "newer"}
        _assert_index_describes_bucket(engine)


class _AnswerLostOnce:
    """A store whose first conditional write lands but whose answer is lost (a timeout), so
    the retry finds the object already rewritten: its own write, not another writer's."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def put(self, key: str, body: bytes, metadata: Mapping[str, str], **options: Any) -> PutReceipt:
        receipt = self._inner.put(key, body, metadata, **options)
        if options.get("if_match") and not self.lost:
            self.lost += 1
            raise TransientError("the answer was lost")
        return receipt


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
def test_a_rewrite_whose_answer_was_lost_is_indexed_as_written(
    maggma_bucket: ObjectStore, tmp_path: Path
) -> None:
    flaky = _AnswerLostOnce(maggma_bucket)
    with _engine(flaky, tmp_path) as engine:  # type: ignore[arg-type]
        result = engine.sync(rewrite=True)

        assert flaky.lost == 1
        assert result.maggma.rewritten + result.maggma.rewrite_skipped == 3
        assert {e["_s3idx"]["codec"] for e in engine.query({})} == {"json+zlib"}
        _assert_index_describes_bucket(engine)


def test_the_cli_says_how_many_rewrites_another_writer_overtook(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "store")
    for key in KEYS:
        put_maggma_object(store, key)
    args = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]
    assert run("rebuild-index", *args).exit_code == 0
    put = LocalStore.put

    def racing_put(self: LocalStore, key: str, *a: Any, **options: Any) -> PutReceipt:
        if options.get("if_match") and key == "mp-1":
            put_maggma_object(self, key, "theirs")  # another writer's, just before
        return put(self, key, *a, **options)

    monkeypatch.setattr(LocalStore, "put", racing_put)

    result = run("sync", "--rewrite", *args)

    assert result.exit_code == ExitStatus.OK, result.stderr
    assert "3 maggma objects (2 rewritten, 0 not rewritten, 1 changed meanwhile" in result.stderr
    assert (
        "mp-1: not rewritten: another writer changed it since it was read; "
        "left as that writer wrote it" in result.stderr
    )
    summary = orjson.loads(run("sync", "--check", "--json", *args).stdout)
    assert summary["drift"] == 0
    assert run("get", *args, "mp-1").stdout == '{"task_id":"mp-1","tag":"theirs"}\n'
