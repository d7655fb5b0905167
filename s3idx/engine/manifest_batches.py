"""Manifests of the objects a writing run stored: one per batch, and what a failed one costs.

put, reindex, ``rebuild-index --rewrite`` and sync record a line for each object they wrote (or
read from a HEAD) and write them as one manifest per batch (``engine/manifest.py`` holds the
format). A manifest only spares a later rebuild its HEADs: the objects are stored and indexed
whether it lands or not. So a manifest that cannot be written never stops the run: it is
counted, reported through ``Events.warned``, and its lines are carried into the next batch's
manifest (up to ``CARRY_LINES``, memory stays bounded), so one lost request leaves no object
out. What is still unwritten when the run ends is counted in ``unrecorded``: the callers'
commands then do not exit 0 (README, "Manifests"), because an object no manifest lists is
something the run set out to write and did not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from s3idx.engine.manifest import COMPACT_LINES, ManifestLine, write_manifest
from s3idx.errors import S3idxError
from s3idx.store.base import ObjectStore
from s3idx.text import plural

# Lines carried over from failed writes into the next manifest: beyond this many a failure is
# not a passing one, and holding more would let memory grow with the input.
CARRY_LINES = COMPACT_LINES

# put gathers lines for at most this long before a manifest that holds fewer than a batch: one
# flush of the index a second would otherwise make one manifest a second on a slow endpoint. Also
# the longest an object may wait for its line (see the limit in README, "Manifests").
GATHER_SECONDS = 10.0


class ManifestBatches:
    """Lines added from any thread; each ``flush`` writes those added since as one manifest.

    With ``min_lines``, a flush writes nothing until that many lines wait or the oldest has
    waited ``GATHER_SECONDS`` (the last flush always writes).
    """

    def __init__(
        self, store: ObjectStore, warn: Callable[[str], None], *, min_lines: int = 1
    ) -> None:
        self._store = store
        self._warn = warn
        self._min_lines = min_lines
        self._lock = threading.Lock()
        self._lines: list[ManifestLine] = []
        self._since = 0.0  # when the oldest waiting line came
        self.written = 0  # manifests written
        self.failed = 0  # manifest writes that failed
        self.unrecorded = 0  # objects left out of every manifest (a rebuild HEADs them)

    def add(self, line: ManifestLine) -> None:
        with self._lock:
            if not self._lines:
                self._since = time.monotonic()
            self._lines.append(line)

    @property
    def pending(self) -> int:
        """Lines added (or carried over) and not yet written."""
        return len(self._lines)

    def flush(self, *, last: bool = False) -> None:
        """Write the lines added since the last flush (and any carried over) as one manifest.

        ``last``: the run's final one, so a failure has no next manifest to carry its lines.
        """
        with self._lock:
            waiting = len(self._lines)
            young = time.monotonic() - self._since < GATHER_SECONDS
            if not last and waiting < self._min_lines and young:
                return
            lines, self._lines = self._lines, []
        if not lines:
            return
        try:
            write_manifest(self._store, lines)
        except S3idxError as exc:
            self.failed += 1
            objects = plural(len(lines), "stored object")
            if not last and len(lines) <= CARRY_LINES:
                with self._lock:
                    self._lines[:0] = lines
                    self._since = time.monotonic()
                self._warn(
                    f"manifest of {objects} not written ({exc.message}); "
                    "its lines go into the next manifest"
                )
                return
            self.unrecorded += len(lines)
            self._warn(
                f"manifest of {objects} not written ({exc.message}); a later rebuild-index "
                "reads those objects with a HEAD each"
            )
            return
        self.written += 1

    def abandon(self, reason: str) -> None:
        """Write none of the lines waiting (the store stopped answering): they stay unrecorded,
        as a failed last manifest's do, without a request that would wait out its deadline."""
        with self._lock:
            lines, self._lines = self._lines, []
        if lines:
            self.unrecorded += len(lines)
            self._warn(
                f"manifest of {plural(len(lines), 'stored object')} not written ({reason}); "
                "a later rebuild-index reads those objects with a HEAD each"
            )

    def close(self) -> None:
        """Write the run's last manifest: what it cannot hold stays unrecorded."""
        self.flush(last=True)
