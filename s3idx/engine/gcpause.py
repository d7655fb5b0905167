"""Python's cyclic garbage collector held back while ``put`` streams documents.

Measured on ``put`` (docs/ARCHITECTURE.md, "Measured costs"): each parsed document is about 60
containers, up to two chunks of them wait in the read-ahead queue, and every allocation counts
towards the collector's thresholds, so a full collection came every ~1,700 documents and walked
all of them plus everything imported at start-up (botocore's service model: ~75 ms with the GIL
held), ~55 µs of CPU per document in all. Nearly nothing ``put`` allocates is cyclic: documents,
entries and metadata are trees, freed by reference counting.

So while a put runs, the objects that existed before it are frozen (``gc.freeze``: no collection
walks them) and automatic collection is off; ``tick`` makes a full collection (of what the put
allocated, still cheap) every ``interval`` documents instead. The interval adapts to what the
collections find: it starts at ``FIRST_INTERVAL`` documents and doubles, up to
``LONGEST_INTERVAL``, while they find no cycles (the obstore transport: none), and goes back to
the first when they do (botocore leaves ~3 small cyclic objects per request), so memory stays
flat whatever the transport. A young collection per chunk was tried: ~20 ms per 1,000
documents, since the young generation then holds every document parsed ahead. Everything is
restored when the last put of the process ends; pauses nest (the Python API may run puts in
several threads).

A pause only begins once a put has read ``START_AFTER`` documents. A program that stores a few
documents at a time (a maggma builder's chunks) would otherwise run with the collector nearly
always off: every freeze resets its allocation count, so its full collections never came, and
the cycles made between puts (a closed S3 client leaves ~5 MB of them) piled up without bound.
Small puts keep the collector's own rhythm; a pause that begins after an earlier one ended makes
one full collection first, freeing what was left since (once per large put, ~75 ms).
"""

from __future__ import annotations

import gc
import threading

# Documents a put reads before its pause begins.
START_AFTER = 2_000
# Documents between two collections: at first, and at most.
FIRST_INTERVAL = 10_000
LONGEST_INTERVAL = 160_000

_lock = threading.Lock()
_depth = 0
_was_enabled = False
_paused_before = False  # a pause ended since the process's last collection made here


class CollectorPause:
    """``start()`` arms the pause (see the module), ``tick(n)`` after each ``n`` documents
    begins it once ``START_AFTER`` have been read, then collects when due; ``stop()`` restores
    the collector; ``stop`` is safe to call twice."""

    def __init__(self) -> None:
        self._armed = False
        self._started = False
        self._read = 0
        self._since = 0
        self.interval = FIRST_INTERVAL

    def start(self) -> None:
        self._armed = True

    def _begin(self) -> None:
        global _depth, _was_enabled, _paused_before
        with _lock:
            if _depth == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
                if _paused_before:
                    gc.collect()
                    _paused_before = False
                gc.freeze()
            _depth += 1
        self._started = True

    def tick(self, documents: int) -> None:
        if not self._started:
            self._read += documents
            if self._armed and self._read >= START_AFTER:
                self._begin()
            return
        self._since += documents
        if self._since >= self.interval:
            self._since = 0
            found = gc.collect()  # frozen objects are not walked
            self.interval = FIRST_INTERVAL if found else min(LONGEST_INTERVAL, self.interval * 2)

    def stop(self) -> None:
        global _depth, _paused_before
        self._armed = False
        if not self._started:
            return
        self._started = False
        with _lock:
            _depth -= 1
            if _depth == 0:
                _paused_before = True
                gc.unfreeze()
                if _was_enabled:
                    gc.enable()
