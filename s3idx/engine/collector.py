"""Listed keys to index entries: parallel HEADs, one key field, what was skipped and why.

Shared by rebuild-index and sync; each HEAD's metadata becomes an entry through
``metadata_entry.recover_entry``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from s3idx.engine.concurrency import ordered_map
from s3idx.engine.metadata_entry import Recovered, Rewriter, recover_entry
from s3idx.engine.results import MaggmaObjects, Skipped
from s3idx.errors import CorruptObjectError, NotAnS3idxObjectError, ObjectNotFoundError
from s3idx.index.base import Entry
from s3idx.store.base import ObjectStore


class EntryCollector:
    """Turns listed keys into entries with parallel HEADs, agreeing on one key field."""

    def __init__(
        self,
        store: ObjectStore,
        pool: ThreadPoolExecutor,
        workers: int,
        key_field: str | None,
        skipped: Skipped,
        on_skip: Callable[[str, str], None] | None = None,
        *,
        maggma: MaggmaObjects | None = None,
        rewriter: Rewriter | None = None,
    ) -> None:
        self._store = store
        self._pool = pool
        self._window = 2 * workers
        self.key_field = key_field
        self.fields: list[str] = []
        # For each field: how many accepted objects' metadata does not list it (they were
        # stored before it was added; reindex backfills them).
        self.lacking: dict[str, int] = {}
        self.accepted = 0
        self.skipped = skipped
        self.maggma = maggma if maggma is not None else MaggmaObjects()
        self._on_skip = on_skip
        self._rewriter = rewriter

    def entries(self, keys: Iterable[str]) -> Iterator[Entry]:
        work = partial(_head_and_recover, self._store, self.key_field, self._rewriter)
        for key, future in ordered_map(self._pool, work, keys, self._window):
            error = future.exception()
            if error is None:
                entry = self._accept(future.result())
                if entry is not None:
                    yield entry
            elif isinstance(error, ObjectNotFoundError):
                self.skipped.vanished += 1  # deleted between listing and HEAD
            elif isinstance(error, NotAnS3idxObjectError):
                self.skipped.add_not_s3idx(key)
                self._report(key, "not an s3idx object (no s3idx metadata)")
            elif isinstance(error, CorruptObjectError):
                self.skipped.add_undecodable(key, error.message)
                self._report(key, f"metadata cannot be decoded: {error.message}")
            else:
                raise error

    def _accept(self, recovered: Recovered) -> Entry | None:
        if self.key_field is None:
            self.key_field = recovered.key_field
        elif recovered.key_field != self.key_field:
            reason = f"key field {recovered.key_field!r}, not {self.key_field!r}"
            self.skipped.add_undecodable(recovered.key, reason)
            self._report(recovered.key, f"metadata cannot be used: {reason}")
            return None
        for path in recovered.fields:
            if path not in self.fields:
                self.fields.append(path)
                self.lacking[path] = self.accepted  # every object accepted before lacks it
        for path in self.fields:
            if path not in recovered.fields:
                self.lacking[path] = self.lacking.get(path, 0) + 1
        self.accepted += 1
        self.maggma.count(recovered)
        if recovered.rewrite_failure is not None:
            self._report(recovered.key, f"not rewritten: {recovered.rewrite_failure}")
        return recovered.entry

    def _report(self, key: str, reason: str) -> None:
        if self._on_skip is not None:
            self._on_skip(key, reason)


def _head_and_recover(
    store: ObjectStore, key_field: str | None, rewriter: Rewriter | None, key: str
) -> Recovered:
    recovered = recover_entry(store.head(key), key_field)
    # An object whose key field disagrees is refused by the collector: it must not be rewritten.
    if rewriter is not None and recovered.maggma and key_field in (None, recovered.key_field):
        return rewriter(recovered)
    return recovered
