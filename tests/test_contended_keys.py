"""Keys that ``reconcile`` gave up on (still contended after its rounds) are named, not only
counted: by every command that reconciles (put, sync, rebuild-index, delete, reindex), in its
result (``contended_keys``, or reindex's ``failed_keys``), in ``--json`` and on stderr, with the
hint that ``sync`` sets them right.

Contention is made deterministic by an index whose compare-and-set on a chosen key always
finds the entry moved: just before each ``upsert_if`` of that key, another write of it lands.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine, Events
from s3idx.engine.delete import DeletesUnderWay
from s3idx.errors import ExitStatus
from s3idx.index.base import Entry, Expected
from s3idx.index.sqlite import SqliteIndex
from s3idx.output import NAMED_ON_STDERR
from s3idx.store.base import ObjectStore
from s3idx.store.local import LocalStore
from tests.helpers import Run, jsonl

HINT = "run s3idx sync"


@pytest.fixture
def contended(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """The keys whose entries another writer keeps moving: every compare-and-set of one of
    them fails (a plain write of the same entry lands just before it, with a new stamp)."""
    keys: set[str] = set()
    original = SqliteIndex.upsert_if

    def upsert_if(
        self: SqliteIndex, entries: Sequence[Entry], expected: Mapping[str, Expected | None]
    ) -> set[str]:
        moved = [e for e in entries if e["fs_id"] in keys]
        if moved:
            self.upsert(moved)
        return original(self, entries, expected)

    monkeypatch.setattr(SqliteIndex, "upsert_if", upsert_if)
    yield keys


def _doc(key: str, tag: str = "a") -> dict[str, Any]:
    return {"fs_id": key, "tag": tag}


def _engine(
    tmp_path: Path, index: str = "index.sqlite3", store: ObjectStore | None = None
) -> Engine:
    return Engine(store or LocalStore(tmp_path / "store"), SqliteIndex(tmp_path / index), workers=2)


def _locations(tmp_path: Path, index: str = "index.sqlite3") -> list[str]:
    return ["--store", str(tmp_path / "store"), "--index", str(tmp_path / index)]


def _named(stderr: str, label: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"s3idx: {label}: ")]


def test_put_names_the_keys_it_left_contended(tmp_path: Path, contended: set[str]) -> None:
    contended.add("k1")
    with _engine(tmp_path) as engine:
        result = engine.put_documents([_doc("k0"), _doc("k1"), _doc("k2")], fields=["tag"])
    assert (result.stored, result.not_indexed) == (3, 1)
    assert (result.contended, result.contended_keys) == (1, ["k1"])
    assert result.as_dict()["contended_keys"] == ["k1"]


def test_cli_put_names_a_contended_key_and_sync_then_indexes_it(
    run: Run, tmp_path: Path, contended: set[str]
) -> None:
    contended.add("k1")
    lines = jsonl(_doc("k0"), _doc("k1"), _doc("k2"))
    result = run("put", *_locations(tmp_path), "--json", input=lines)
    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["not_indexed"], summary["contended"]) == (1, 1)
    assert summary["contended_keys"] == ["k1"]
    [line] = _named(result.stderr, "not indexed")
    assert line.startswith("s3idx: not indexed: k1: ") and HINT in line, result.stderr

    human = run("put", *_locations(tmp_path), input=lines)
    assert human.exit_code == ExitStatus.PARTIAL, human.stderr
    assert len(_named(human.stderr, "not indexed")) == 1, human.stderr
    assert "1 stored object not indexed (run s3idx sync)" in human.stderr

    contended.clear()
    assert run("sync", *_locations(tmp_path)).exit_code == 0
    assert run("sync", "--check", *_locations(tmp_path)).exit_code == 0


def test_cli_put_bounds_the_contended_keys_it_names_on_stderr(
    run: Run, tmp_path: Path, contended: set[str]
) -> None:
    docs = [_doc(f"k{i:02d}") for i in range(NAMED_ON_STDERR + 5)]
    contended.update(d["fs_id"] for d in docs)
    result = run("put", *_locations(tmp_path), input=jsonl(*docs))
    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    assert len(_named(result.stderr, "not indexed")) == NAMED_ON_STDERR, result.stderr
    assert "… and 5 more not indexed (--json names up to 10,000)" in result.stderr


def test_sync_names_the_keys_it_left_contended(
    run: Run, tmp_path: Path, contended: set[str]
) -> None:
    with _engine(tmp_path, "first.sqlite3") as engine:
        engine.put_documents([_doc("k0"), _doc("k1")], fields=["tag"])
    contended.add("k1")
    with _engine(tmp_path, "engine.sqlite3") as engine:
        synced = engine.sync()
    assert (synced.contended, synced.contended_keys) == (1, ["k1"])

    result = run("sync", *_locations(tmp_path), "--json")
    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["contended"], summary["contended_keys"]) == (1, ["k1"])
    [line] = _named(result.stderr, "not settled")
    assert line.startswith("s3idx: not settled: k1: ") and HINT in line, result.stderr
    human = run("sync", *_locations(tmp_path, "human.sqlite3"))
    assert human.exit_code == ExitStatus.PARTIAL, human.stderr
    assert len(_named(human.stderr, "not settled")) == 1, human.stderr
    assert "1 key other writers kept changing, not settled (run s3idx sync again)" in human.stderr

    contended.clear()
    assert run("sync", *_locations(tmp_path)).exit_code == 0
    assert run("sync", "--check", *_locations(tmp_path)).exit_code == 0


class _WritesAfterHeads(Events):
    """Runs an action once, when rebuild-index reports its first batch (before its swap)."""

    def __init__(self, action: Any) -> None:
        self._action = action

    def progress(self, *args: Any, **kwargs: Any) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()


def test_rebuild_names_the_keys_it_left_contended(tmp_path: Path, contended: set[str]) -> None:
    with _engine(tmp_path) as engine:
        engine.put_documents([_doc(f"k{i}") for i in range(3)], fields=["tag"])

        def meanwhile() -> None:
            # Written to the old index while the rebuild runs: the reconcile after the swap
            # reads it again, and finds it contended.
            with _engine(tmp_path) as other:
                other.put_documents([_doc("m", "new")], fields=["tag"])
            contended.add("m")

        result = engine.rebuild_index(events=_WritesAfterHeads(meanwhile))
    assert result.committed
    assert (result.contended, result.contended_keys) == (1, ["m"])
    assert result.as_dict()["contended_keys"] == ["m"]


class _RewritingStore:
    """A store whose conditional delete of ``key`` finds it stored again by another writer."""

    def __init__(self, inner: ObjectStore, key: str, rewrite: Any) -> None:
        self._inner, self._key, self._rewrite = inner, key, rewrite

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def delete(self, keys: Sequence[str], **options: Any) -> Any:
        if self._key in keys and self._rewrite is not None:
            rewrite, self._rewrite = self._rewrite, None
            rewrite()
        return self._inner.delete(keys, **options)


def test_delete_names_the_keys_it_left_contended(
    tmp_path: Path, contended: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The put run inside the delete began before it journaled k1: it waits for nothing.
    monkeypatch.setattr(DeletesUnderWay, "await_for", lambda self, keys: False)
    with _engine(tmp_path) as engine:
        engine.put_documents([_doc("k0"), _doc("k1")], fields=["tag"])

    def rewrite() -> None:
        with _engine(tmp_path) as other:
            other.put_documents([_doc("k1", "new")], fields=["tag"])
        contended.add("k1")

    store = _RewritingStore(LocalStore(tmp_path / "store"), "k1", rewrite)
    with _engine(tmp_path, store=store) as engine:  # type: ignore[arg-type]
        result = engine.delete(["k0", "k1"])
    assert result.deleted == 1
    assert (result.contended, result.contended_keys) == (1, ["k1"])
    assert result.as_dict()["contended_keys"] == ["k1"]


class _Skipped(Events):
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def skipped(self, key: str, reason: str) -> None:
        self.lines.append((key, reason))


def test_reindex_names_the_keys_it_left_contended(tmp_path: Path, contended: set[str]) -> None:
    with _engine(tmp_path) as engine:
        engine.put_documents([_doc("k0"), _doc("k1")])
    contended.add("k1")
    events = _Skipped()
    with _engine(tmp_path) as engine:
        result = engine.reindex(fields=["tag"], events=events)
    assert [key for key, _ in result.failed_keys] == ["k1"]
    # Named as reindex names the keys it failed, on stderr as in --json.
    [(key, reason)] = events.lines
    assert key == "k1" and HINT in reason


def test_sync_names_an_interrupted_put_it_could_not_settle(
    tmp_path: Path, contended: set[str]
) -> None:
    with _engine(tmp_path) as engine:
        engine.put_documents([_doc("k0"), _doc("k1")], fields=["tag"])
        etag = engine.index.etags(["k1"])["k1"]
        engine.index.journal_puts({"k1": etag}, "a-run-long-gone")  # its heartbeat is stale
    contended.add("k1")
    store, index = LocalStore(tmp_path / "store"), SqliteIndex(tmp_path / "index.sqlite3")
    with Engine(store, index, put_stale_seconds=0) as engine:
        synced = engine.sync()
        assert (synced.interrupted_puts, synced.contended_keys) == (0, ["k1"])
        assert [r.key for r in engine.index.put_intents()] == ["k1"]  # kept for the next sync
    contended.clear()
    with Engine(store, SqliteIndex(tmp_path / "index.sqlite3"), put_stale_seconds=0) as engine:
        synced = engine.sync()
        assert (synced.interrupted_puts, synced.contended) == (1, 0)
        assert engine.index.put_intents() == []


def test_sync_names_an_interrupted_delete_it_could_not_settle(
    tmp_path: Path, contended: set[str]
) -> None:
    """A delete killed after its journal record, and the key stored again since (through
    another index): finishing the delete leaves the new object, whose entry reconcile then
    could not set."""
    with _engine(tmp_path) as engine:
        engine.put_documents([_doc("k0"), _doc("k1")], fields=["tag"])
        engine.index.journal_deletes({"k1": engine.index.etags(["k1"])["k1"]})
    with _engine(tmp_path, "other.sqlite3") as other:
        other.put_documents([_doc("k1", "new")], fields=["tag"])
    contended.add("k1")
    with _engine(tmp_path) as engine:
        synced = engine.sync()
        assert synced.contended_keys == ["k1"]
    contended.clear()
    with _engine(tmp_path) as engine:
        assert engine.sync().contended == 0
        assert engine.sync(check=True).drift == 0
        assert engine.get("k1")["tag"] == "new"
