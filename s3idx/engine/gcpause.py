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
"""

from __future__ import annotations

import gc
import threading

# Documents between two collections: at first, and at most.
FIRST_INTERVAL = 10_000
LONGEST_INTERVAL = 160_000

_lock = threading.Lock()
_depth = 0
_was_enabled = False


class CollectorPause:
    """``start()`` holds the collector back (see the module), ``tick(n)`` after each ``n``
    documents collects when due, ``stop()`` restores it; ``stop`` is safe to call twice."""

    def __init__(self) -> None:
        self._started = False
        self._since = 0
        self.interval = FIRST_INTERVAL

    def start(self) -> None:
        global _depth, _was_enabled
        if self._started:
            return
        with _lock:
            if _depth == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
                gc.freeze()
            _depth += 1
        self._started = True

    def tick(self, documents: int) -> None:
        if not self._started:
            return
        self._since += documents
        if self._since >= self.interval:
            self._since = 0
            found = gc.collect()  # frozen objects are not walked
            self.interval = FIRST_INTERVAL if found else min(LONGEST_INTERVAL, self.interval * 2)

    def stop(self) -> None:
        global _depth
        if not self._started:
            return
        self._started = False
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.unfreeze()
                if _was_enabled:
                    gc.enable()
