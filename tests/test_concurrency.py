"""engine.concurrency.prefetched: a listing read ahead in a background thread, in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3idx import Engine
from s3idx.engine.concurrency import prefetched
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.local import LocalStore


def test_items_come_in_order_and_all() -> None:
    assert list(prefetched(iter(range(5000)), ahead=7)) == list(range(5000))
    assert list(prefetched([])) == []


def test_the_source_is_read_while_the_consumer_works() -> None:
    read: list[int] = []

    def pages() -> Iterator[int]:
        for n in range(10):
            read.append(n)
            yield n

    items = prefetched(pages(), ahead=4)
    assert next(items) == 0
    deadline = time.monotonic() + 5
    while len(read) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)  # the consumer "works" on item 0
    # 0 consumed, 4 queued, 1 read and waiting for room: read ahead, and no further.
    assert len(read) == 6
    assert list(items) == list(range(1, 10))


def test_an_error_while_reading_reaches_the_consumer_after_the_items_before_it() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("listing failed")

    got = []
    with pytest.raises(OSError, match="listing failed"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_reader() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    items = prefetched(endless(), ahead=3)
    assert next(items) == 0
    items.close()
    assert closed.wait(5)


def test_the_engine_allows_head_workers_requests(tmp_path: Path) -> None:
    store, index = LocalStore(tmp_path / "store"), SqliteIndex(tmp_path / "index.sqlite3")
    with Engine(store, index) as engine:
        assert (engine.workers, engine.head_workers) == (8, 64)
        assert engine.store.limit.maximum == 64
    with Engine(LocalStore(tmp_path / "store"), SqliteIndex(tmp_path / "i2"), workers=3) as engine:
        assert (engine.workers, engine.head_workers) == (3, 3)
