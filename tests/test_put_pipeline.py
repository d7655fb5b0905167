"""put's pipeline as a unit: ``run_put`` over a LocalStore and a SqliteIndex with faults injected.

No CLI and no timing asserts: blocking is forced with events, and what is checked is the order
in which things happened and the counts the run reports, never how long anything took.
"""

from __future__ import annotations

import gc
import itertools
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import open_engine
from s3idx.engine import gcpause, put
from s3idx.engine.inputs import Record
from s3idx.engine.put import PutOptions, run_put
from s3idx.engine.read import fetch_document
from s3idx.engine.results import NOT_SENT, Events, PutResult, Reject
from s3idx.errors import BackendUnavailableError, RecordError
from s3idx.index.base import Entry
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import PutReceipt
from s3idx.store.local import LocalStore

DEADLOCK_SECONDS = 60  # only a hung run waits this long; a passing run never does


class RecordingEvents(Events):
    def __init__(self) -> None:
        self.rejects: list[Reject] = []

    def rejected(self, reject: Reject) -> None:
        self.rejects.append(reject)


class FaultyStore(LocalStore):
    """A LocalStore whose ``put`` can be gated, logged, or made to fail for chosen keys."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.log: list[tuple[str, str]] = []  # ("start" | "end", key), in the order they happened
        self.lock = threading.Lock()
        self.gate: Callable[[str], None] = lambda key: None  # may block, or raise for a key

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> PutReceipt:
        with self.lock:
            self.log.append(("start", key))
        self.gate(key)
        receipt = super().put(key, body, metadata)
        with self.lock:
            self.log.append(("end", key))
        return receipt

    def keys(self) -> set[str]:
        return {info.key for info in self.list_objects()}

    def document(self, key: str) -> Any:
        return orjson.loads(fetch_document(self, key).read())  # read back, verified


class FaultyIndex(SqliteIndex):
    """A SqliteIndex that logs each write of entries (``upsert_if``, put's compare-and-set) and
    can be made to fail it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.upserts: list[list[str]] = []
        self.fail: BaseException | None = None
        self.on_upsert: Callable[[], None] = lambda: None

    def upsert_if(self, entries: Sequence[Entry], expected: Mapping[str, str | None]) -> set[str]:
        if self.fail is not None:
            raise self.fail
        conflicts = super().upsert_if(entries, expected)
        self.upserts.append([e["id"] for e in entries])
        self.on_upsert()
        return conflicts

    def entry(self, key: str) -> Entry | None:
        found = self.bookkeeping([key]).get(key)
        return None if found is None else found[0]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FaultyStore]:
    backend = FaultyStore(tmp_path / "store")
    yield backend
    backend.close()


@pytest.fixture
def index(tmp_path: Path) -> Iterator[FaultyIndex]:
    backend = FaultyIndex(tmp_path / "index.db")
    backend.configure("id", ["v"])
    yield backend
    backend.close()


def records(documents: Iterable[Any]) -> Iterator[Record]:
    for line, document in enumerate(documents, 1):
        yield Record("input", line, orjson.dumps(document), document)


def options(**changes: Any) -> PutOptions:
    return PutOptions(**{"key_field": "id", "fields": ("v",), "workers": 4, **changes})


def put_in_thread(
    store: FaultyStore, index: FaultyIndex, source: Iterable[Record], opts: PutOptions
) -> tuple[PutResult | None, BaseException | None, RecordingEvents]:
    """run_put in a thread, so a deadlock fails the test instead of hanging it."""
    events = RecordingEvents()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = run_put(store, index, source, opts, events)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(DEADLOCK_SECONDS)
    assert not thread.is_alive(), "run_put did not finish: deadlock"
    return outcome.get("result"), outcome.get("error"), events


# --- the same key while its upload is in flight ---------------------------------------------------


def test_a_key_waits_for_its_upload_in_flight_and_the_last_one_wins(
    store: FaultyStore, index: FaultyIndex
) -> None:
    first_started = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def gate(key: str) -> None:
        calls.append(key)
        if key == "k" and calls.count("k") == 1:  # the first upload of k hangs until released
            first_started.set()
            assert release.wait(DEADLOCK_SECONDS)

    store.gate = gate
    # batch_size 1: each document is its own chunk, so both of k reach the uploads (within one
    # chunk the later one would replace the earlier before any upload).
    documents = [{"id": "k", "v": 1}, {"id": "k", "v": 2}, {"id": "other", "v": 3}]

    def releaser() -> None:
        first_started.wait(DEADLOCK_SECONDS)
        # The second of k must not start meanwhile; give it every chance to (a wrong pipeline
        # would overtake here), then let the first finish.
        threading.Event().wait(0.3)
        release.set()

    threading.Thread(target=releaser, daemon=True).start()
    result, error, _ = put_in_thread(store, index, records(documents), options(batch_size=1))

    assert error is None
    assert result is not None
    # Both documents of k are uploaded (the log below); k is one document stored.
    assert (result.read, result.stored, result.duplicates) == (3, 2, 1)
    k_log = [event for event in store.log if event[1] == "k"]
    assert k_log == [("start", "k"), ("end", "k"), ("start", "k"), ("end", "k")]
    assert store.document("k") == {"id": "k", "v": 2}
    k_entry = index.entry("k")
    assert k_entry is not None and k_entry["v"] == 2
    assert store.keys() == {"k", "other"}


# --- an index that cannot be written --------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_a_failing_index_counts_every_stored_object_as_not_indexed(
    store: FaultyStore, index: FaultyIndex, batch_size: int
) -> None:
    index.fail = BackendUnavailableError("index down")
    documents = [{"id": f"d{n:02d}", "v": n} for n in range(10)]

    result, error, _ = put_in_thread(
        store, index, records(documents), options(batch_size=batch_size)
    )

    assert result is None
    assert isinstance(error, BackendUnavailableError)
    partial = error.partial_result
    assert isinstance(partial, PutResult)
    stored = store.keys()
    assert stored  # at least the first batch's objects were stored before its entries failed
    assert partial.stored == len(stored)
    assert partial.not_indexed == partial.stored
    assert partial.bytes_stored > 0
    assert index.upserts == []
    # Each line read is counted once: the ones read and never uploaded are named as not stored.
    assert partial.read == partial.stored + partial.unstored + partial.duplicates
    unstored = {key for key, _ in partial.unstored_keys}
    assert len(unstored) == partial.unstored
    assert unstored.isdisjoint(stored)
    assert all(reason == NOT_SENT for _, reason in partial.unstored_keys)


# --- a store that fails one key -------------------------------------------------------------------


def test_a_store_reject_is_counted_and_reported_and_the_rest_goes_on(
    store: FaultyStore, index: FaultyIndex
) -> None:
    def gate(key: str) -> None:
        if key == "bad":
            raise RecordError("refused by the store")

    store.gate = gate
    documents = [{"id": "a", "v": 1}, {"id": "bad", "v": 2}, {"id": "c", "v": 3}]

    result, error, events = put_in_thread(store, index, records(documents), options())

    assert error is None
    assert result is not None
    assert (result.read, result.stored, result.rejected) == (3, 2, 1)
    assert events.rejects == [Reject("input:2", "refused by the store", orjson.dumps(documents[1]))]
    assert store.keys() == {"a", "c"}
    assert index.entry("bad") is None
    assert index.entry("a") is not None and index.entry("c") is not None


def test_a_fatal_store_error_stops_the_uploads_and_carries_the_counts(
    store: FaultyStore, index: FaultyIndex
) -> None:
    def gate(key: str) -> None:
        if key == "d005":
            raise BackendUnavailableError("store down")

    store.gate = gate
    documents = [{"id": f"d{n:03d}", "v": n} for n in range(300)]
    opts = options(workers=1, batch_size=1)

    result, error, events = put_in_thread(store, index, records(documents), opts)

    assert result is None
    assert isinstance(error, BackendUnavailableError)
    assert str(error) == "store down"
    partial = error.partial_result
    assert isinstance(partial, PutResult)
    stored = store.keys()
    assert {f"d{n:03d}" for n in range(5)} <= stored
    assert "d005" not in stored
    # With one worker at most 2 uploads are in flight: once d005 failed, only what was already
    # queued can still start; the other ~290 documents never reach the store.
    started_after = [key for kind, key in store.log if kind == "start" and key > "d005"]
    assert len(started_after) <= 2 * opts.workers + 1
    assert partial.stored == len(stored)
    assert partial.rejected == 0 and events.rejects == []
    assert partial.not_indexed == 0
    # The entries of every object stored were written before the error left run_put.
    assert index.count() == len(stored)


# --- the time-based flush -------------------------------------------------------------------------


def test_entries_reach_the_index_while_the_input_is_still_open(
    store: FaultyStore, index: FaultyIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short waits, so the test is quick; what is checked is only the order of events.
    monkeypatch.setattr(put, "INDEX_FLUSH_SECONDS", 0.05)
    monkeypatch.setattr(put, "CHUNK_SECONDS", 0.05)
    indexed = threading.Event()
    index.on_upsert = indexed.set
    order: list[str] = []

    def slow_source() -> Iterator[Record]:
        yield Record("input", 1, b'{"id": "first", "v": 1}', {"id": "first", "v": 1})
        # Like `tail -f`: nothing more comes until the first entry is in the index.
        order.append("waiting" if indexed.wait(DEADLOCK_SECONDS) else "gave up waiting")
        yield Record("input", 2, b'{"id": "second", "v": 2}', {"id": "second", "v": 2})
        order.append("input ended")

    # batch_size 1000: a full batch is never what writes the entry here.
    result, error, _ = put_in_thread(store, index, slow_source(), options(batch_size=1000))

    assert error is None
    assert result is not None
    assert result.stored == 2
    assert order == ["waiting", "input ended"]
    assert index.upserts[0] == ["first"]
    assert [key for batch in index.upserts for key in batch] == ["first", "second"]


# --- --max-errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_max_errors_stops_at_exactly_n_rejects(
    store: FaultyStore, index: FaultyIndex, batch_size: int
) -> None:
    def source() -> Iterator[Record]:
        line = 0
        for n in range(20):
            line += 1
            yield Record("input", line, b"{}", {"id": f"good{n:02d}", "v": n})
            line += 1
            yield Record("input", line, b"{", error="not JSON")

    opts = options(batch_size=batch_size, max_errors=3)
    result, error, events = put_in_thread(store, index, source(), opts)

    assert error is None
    assert result is not None
    assert (result.read, result.stored, result.rejected) == (6, 3, 3)
    assert result.stopped_early is True
    assert [r.location for r in events.rejects] == ["input:2", "input:4", "input:6"]
    assert store.keys() == {"good00", "good01", "good02"}
    assert index.count() == 3


def test_max_errors_stops_uploads_at_n_store_rejects_and_reports_those_in_flight(
    store: FaultyStore, index: FaultyIndex
) -> None:
    # README: a reject found while uploading stops further uploads; uploads already under way
    # still finish and are reported. So at least N, every one reported, and far from all 50.
    # The first four uploads are all in flight before any of them is refused.
    together = threading.Barrier(4, timeout=DEADLOCK_SECONDS)

    calls = itertools.count()

    def gate(key: str) -> None:
        if next(calls) < 4:
            together.wait()
        raise RecordError("refused by the store")

    store.gate = gate
    documents = [{"id": f"d{n:02d}", "v": n} for n in range(50)]
    opts = options(workers=4, batch_size=1000, max_errors=3)

    result, error, events = put_in_thread(store, index, records(documents), opts)

    assert error is None
    assert result is not None
    assert result.stopped_early is True
    assert 3 <= result.rejected == len(events.rejects) < len(documents)
    assert store.keys() == set()


# --- the cyclic garbage collector during a put ----------------------------------------------------


class GcWatchingEvents(RecordingEvents):
    """Notes, at each progress report, whether Python's cyclic collector runs by itself."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled_during: list[bool] = []

    def progress(self, *args: Any, **kwargs: Any) -> None:
        self.enabled_during.append(gc.isenabled())


def test_the_collector_is_held_back_during_a_put_and_restored_after(
    store: FaultyStore, index: FaultyIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcpause, "START_AFTER", 10)  # from the first chunk on
    events = GcWatchingEvents()
    assert gc.isenabled()
    docs = ({"id": f"k{n}", "v": n} for n in range(50))

    result = run_put(store, index, records(docs), options(batch_size=10), events)

    assert result.stored == 50
    assert events.enabled_during and not any(events.enabled_during)
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0  # what was frozen for the put is collectable again


def test_the_collector_stays_off_after_a_put_when_it_was_off_before(
    store: FaultyStore, index: FaultyIndex
) -> None:
    gc.disable()
    try:
        result = run_put(store, index, records([{"id": "a", "v": 1}]), options(), Events())
        assert result.stored == 1
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_cycles_made_during_a_put_are_collected_while_it_runs(
    store: FaultyStore, index: FaultyIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcpause, "START_AFTER", 10)
    monkeypatch.setattr(gcpause, "FIRST_INTERVAL", 10)
    freed: list[int] = []

    class Cyclic:
        def __init__(self, n: int) -> None:
            self.me = self
            weakref.finalize(self, freed.append, n)

    def cyclic_source() -> Iterator[Record]:
        for n in range(40):
            Cyclic(n)  # garbage at once, but only the cyclic collector can free it
            yield Record("input", n + 1, orjson.dumps({"id": f"k{n}", "v": n}), {"id": f"k{n}"})

    seen_freed: list[int] = []

    class Watch(Events):
        def progress(self, *args: Any, **kwargs: Any) -> None:
            seen_freed.append(len(freed))

    result = run_put(store, index, cyclic_source(), options(batch_size=10), Watch())

    assert result.stored == 40
    assert max(seen_freed) >= 10  # freed during the run, not only once it ended


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_collector_keeps_freeing_cycles_across_many_small_puts(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A program that stores a few documents at a time (a maggma builder's chunks), opening an
    engine now and then, must not grow: the cyclic garbage it makes between puts (its own, and
    what an S3 client leaves when closed) is freed by the collector's own rhythm."""
    if where == "s3":
        endpoint, bucket = (
            request.getfixturevalue("s3_endpoint"),
            request.getfixturevalue("s3_bucket"),
        )
        location = {"store": f"s3://{bucket}/small", "endpoint_url": endpoint}
    else:
        location = {"store": str(tmp_path / "store")}
    freed: list[int] = []

    class Cyclic:
        def __init__(self, n: int) -> None:
            self.me = self
            self.weight = [list(range(20)) for _ in range(20)]
            weakref.finalize(self, freed.append, n)

    rounds = 120
    engine = open_engine(index=str(tmp_path / "index.sqlite3"), **location)
    try:
        for n in range(rounds):
            Cyclic(n)  # garbage at once; only the cyclic collector can free it
            if n % 30 == 29:  # a new engine now and then, as a builder opens its stores
                engine.close()
                engine = open_engine(index=str(tmp_path / "index.sqlite3"), **location)
            docs = [{"fs_id": f"k{n}-{i}", "v": i} for i in range(20)]
            assert engine.put_documents(docs).stored == 20
    finally:
        engine.close()
    assert len(freed) >= rounds * 3 // 4, f"{len(freed)} of {rounds} cycles freed"


# --- hand-offs between the reader, the main thread and the workers -----------------------------


@pytest.mark.parametrize(("workers", "batch_size"), [(1, 1), (2, 3), (8, 1000)])
def test_every_document_arrives_once_through_a_small_read_ahead_and_few_workers(
    store: FaultyStore, index: FaultyIndex, workers: int, batch_size: int
) -> None:
    # A read-ahead of 2 * batch_size records and an in-flight cap of 2 * workers: the reader
    # and the main thread fill them and sleep many times over 300 documents.
    docs = [{"id": f"k{n:03d}", "v": n} for n in range(300)]

    result, error, _ = put_in_thread(
        store, index, records(docs), options(workers=workers, batch_size=batch_size)
    )

    assert error is None
    assert result is not None
    assert result.stored == 300
    assert store.keys() == {d["id"] for d in docs}
    assert sorted(k for batch in index.upserts for k in batch) == sorted(d["id"] for d in docs)
