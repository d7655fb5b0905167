"""A deadline for a whole transfer, besides the read timeout.

A read timeout times silence only: a server (or a middlebox) sending a byte every few seconds
keeps a read going for ever. Every request that reads a body also gets a total deadline that
grows with its size, as rclone's and s5cmd's do: the timeout, plus the size at a minimum rate.
When it passes, the transfer is aborted and fails as a timeout (retried, then the usual exit).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable

# The slowest transfer that is not taken for a stuck one: 32 KiB/s (a 1 MB document may take
# 30 s more than the timeout, a 100 MB one about an hour). Objects are documents, mostly small.
MIN_RATE = 32 * 1024  # bytes a second


def transfer_deadline(timeout: float, size: int) -> float:
    """Seconds a transfer of ``size`` bytes may take in all."""
    return timeout + max(size, 0) / MIN_RATE


class Watch:
    """One deadline being watched: ``cancel`` when the transfer ended; ``fired`` once it was
    aborted for taking too long."""

    __slots__ = ("_abort", "cancelled", "fired", "seconds")

    def __init__(self, seconds: float, abort: Callable[[], None]) -> None:
        self.seconds = seconds
        self._abort = abort
        self.cancelled = False
        self.fired = False

    def cancel(self) -> None:
        self.cancelled = True

    def _fire(self) -> None:
        if self.cancelled:
            return
        self.fired = True
        # An abort that fails (the connection closed meanwhile) leaves the read to end alone.
        with contextlib.suppress(Exception):
            self._abort()


class _Watchdog:
    """One thread for every deadline of the process: a thread per read would cost more than
    a small object's whole read."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            # A forked child has none of the parent's reads (nor its thread), and the lock
            # may have been held at the fork.
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Condition()
        self._due: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._compact_at = _COMPACT_FLOOR

    def watch(
        self, seconds: float, abort: Callable[[], None], *, since: float | None = None
    ) -> Watch:
        """Call ``abort`` ``seconds`` after ``since`` (a ``time.monotonic()``; default now)
        unless the watch is cancelled first."""
        watch = Watch(seconds, abort)
        with self._lock:
            when = (_now() if since is None else since) + seconds
            if len(self._due) >= self._compact_at:
                self._compact()
            sooner = not self._due or when < self._due[0][0]
            heapq.heappush(self._due, (when, next(self._order), watch))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="s3idx-deadlines", daemon=True
                )
                self._thread.start()
            if sooner:  # else the thread's wait ends in time already: no wake-up per read
                self._lock.notify()
        return watch

    def _compact(self) -> None:
        """Drop the watches cancelled (reads that ended in time): else a heap of them would
        grow with the reads made within one timeout. Amortised: the heap at least doubles
        between two compactions."""
        self._due = [due for due in self._due if not due[2].cancelled]
        heapq.heapify(self._due)
        self._compact_at = max(_COMPACT_FLOOR, 2 * len(self._due))

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._due and self._due[0][2].cancelled:
                    heapq.heappop(self._due)  # ended in time: nothing to do
                if not self._due:
                    self._lock.wait()
                    continue
                when, _, watch = self._due[0]
                wait = when - _now()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                heapq.heappop(self._due)
            watch._fire()  # outside the lock: an abort may block (a socket shutdown)


_COMPACT_FLOOR = 1024  # watches in the heap before any compaction


def _now() -> float:
    return time.monotonic()


WATCHDOG = _Watchdog()
