"""Every operation's result says how long it ran and how many retries it took, finished or not."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from s3idx import Engine
from s3idx.engine.retry import RetryingStore, RetryPolicy
from s3idx.errors import BackendUnavailableError, S3idxError, TransientError
from s3idx.index.base import Entry
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import ObjectInfo
from s3idx.store.local import LocalStore


class _ListingResetOnce(LocalStore):
    """A store whose next listing breaks once after its third object (a connection reset)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.armed = False

    def list_objects(
        self, prefix: str = "", *, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        for n, info in enumerate(super().list_objects(prefix, start_after=start_after)):
            if n == 3 and self.armed:
                self.armed = False
                raise TransientError("connection reset")
            yield info


class _FailingUpserts(SqliteIndex):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failing = False

    def upsert(self, entries: Sequence[Entry]) -> int:
        if self.failing:
            raise BackendUnavailableError("index server went away")
        return super().upsert(entries)

    def upsert_if(self, entries: Sequence[Entry], expected: Mapping[str, str | None]) -> set[str]:
        if self.failing:
            raise BackendUnavailableError("index server went away")
        return super().upsert_if(entries, expected)

    def start_rebuild(self, *args: Any, **kwargs: Any) -> Any:
        return _FailingRebuild(super().start_rebuild(*args, **kwargs), self)


class _FailingRebuild:
    def __init__(self, rebuild: Any, index: _FailingUpserts) -> None:
        self._rebuild = rebuild
        self._index = index

    def upsert(self, entries: Sequence[Entry]) -> Any:
        if self._index.failing:
            raise BackendUnavailableError("index server went away")
        return self._rebuild.upsert(entries)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rebuild, name)


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Engine, _ListingResetOnce, _FailingUpserts]:
    store = _ListingResetOnce(tmp_path / "store")
    index = _FailingUpserts(tmp_path / "index.sqlite3")
    retrying = RetryingStore(store, policy=RetryPolicy(base=0.001))
    engine = Engine(retrying, index, workers=2)
    engine.put_documents([{"fs_id": f"k{i}", "n": i} for i in range(10)], fields=["n"])
    return engine, store, index


def _runs(engine: Engine) -> dict[str, Any]:
    return {
        "rebuild-index": engine.rebuild_index,
        "sync": engine.sync,
        "reindex": engine.reindex,
        "verify": engine.verify,
    }


@pytest.mark.parametrize("command", ["rebuild-index", "sync", "reindex", "verify"])
def test_a_finished_run_counts_its_own_retries_and_time(
    parts: tuple[Engine, _ListingResetOnce, _FailingUpserts], command: str
) -> None:
    engine, store, _ = parts
    engine.sync()  # retries before this run are not this run's
    store.armed = True

    result = _runs(engine)[command]()

    assert result.retries == 1
    assert result.elapsed > 0


@pytest.mark.parametrize("command", ["rebuild-index", "sync", "reindex"])
def test_a_failed_run_reports_its_retries_and_time_with_what_it_had_done(
    parts: tuple[Engine, _ListingResetOnce, _FailingUpserts], command: str
) -> None:
    engine, store, index = parts
    if command == "sync":
        index.delete(["k1"])  # drift, so that sync writes
    if command == "reindex":
        engine.put_documents([], fields=["later"])  # a field to backfill, so that it writes
    store.armed = True
    index.failing = True

    with pytest.raises(S3idxError) as caught:
        _runs(engine)[command]()

    partial = caught.value.partial_result
    assert partial is not None
    assert partial.as_dict()["command"] == command
    assert partial.retries == 1
    assert partial.elapsed > 0


def test_a_failed_put_reports_its_retries_and_time(
    parts: tuple[Engine, _ListingResetOnce, _FailingUpserts],
) -> None:
    engine, _, index = parts
    engine.sync()
    retries_before = engine.store.retries
    index.failing = True

    with pytest.raises(BackendUnavailableError) as caught:
        engine.put_documents([{"fs_id": "new", "n": 1}])

    partial = caught.value.partial_result
    assert partial is not None
    assert (partial.stored, partial.not_indexed) == (1, 1)
    assert partial.retries == 0 == engine.store.retries - retries_before
    assert partial.elapsed > 0


def test_delete_reports_its_time(parts: tuple[Engine, _ListingResetOnce, _FailingUpserts]) -> None:
    engine, _, _ = parts

    result = engine.delete(["k1", "k2"])

    assert result.deleted == 2
    assert result.elapsed > 0
