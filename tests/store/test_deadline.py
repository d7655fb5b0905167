"""The total deadline of a transfer (store/deadline.py), apart from any server."""

from __future__ import annotations

import threading
import time

from s3idx.store.deadline import MIN_RATE, WATCHDOG, transfer_deadline


def test_the_deadline_is_the_timeout_plus_the_size_at_the_minimum_rate() -> None:
    assert transfer_deadline(60, 0) == 60
    assert transfer_deadline(60, 10 * MIN_RATE) == 70
    assert transfer_deadline(1, -5) == 1  # a size not known is no time at all


def test_a_watch_fires_once_its_time_passed_and_a_cancelled_one_never() -> None:
    fired = threading.Event()
    kept: list[str] = []
    cancelled = WATCHDOG.watch(0.05, lambda: kept.append("cancelled one fired"))
    late = WATCHDOG.watch(0.1, fired.set)
    early = WATCHDOG.watch(0.2, lambda: kept.append("started earlier"), since=time.monotonic() - 1)
    cancelled.cancel()

    assert fired.wait(2)
    time.sleep(0.1)
    assert late.fired and early.fired and not cancelled.fired
    assert kept == ["started earlier"]  # its time (since a second ago) had passed already


def test_watches_cancelled_in_time_do_not_pile_up() -> None:
    # Reads that end in time, many within one timeout, while one long read goes on (its
    # deadline first in line): memory must not grow with them.
    long_read = WATCHDOG.watch(3000, lambda: None)
    for _ in range(20_000):
        WATCHDOG.watch(3600, lambda: None).cancel()
    assert len(WATCHDOG._due) <= 2048
    long_read.cancel()
