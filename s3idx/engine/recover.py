"""Index entries recovered from object metadata alone: what rebuild-index and sync read.

No body is downloaded: an s3idx object carries its whole index entry in its metadata, and the
listing or HEAD response gives the ETag and size. An object written by maggma's S3Store carries
its key and searchable fields as strings (see ``s3idx.maggma_format``); its entry is recovered
from those, and with a rewriter it is turned into an s3idx object on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from s3idx import codec, maggma_format
from s3idx.engine.concurrency import ordered_map
from s3idx.engine.results import REPORTED_KEYS_LIMIT, Adopted, Skipped
from s3idx.errors import CorruptObjectError, NotAnS3idxObjectError, ObjectNotFoundError, quote_key
from s3idx.index.base import Bookkeeping, Entry, Index, with_bookkeeping
from s3idx.store.base import ObjectHead, ObjectStore


@dataclass(frozen=True, slots=True)
class Recovered:
    key: str
    key_field: str
    fields: tuple[str, ...]
    entry: Entry  # with _s3idx bookkeeping
    maggma: bool = False  # the entry came from maggma's metadata (or body, when rewritten)
    rewritten: bool = False  # the object was rewritten into the s3idx format
    rewrite_failure: str | None = None  # why a rewrite asked for could not be done


def recover_entry(head: ObjectHead, key_field: str | None = None) -> Recovered:
    """The index entry an object's metadata holds; NotAnS3idxObjectError or CorruptObjectError.

    ``key_field`` is the key field expected; only maggma's metadata, which does not say which
    field is the key, needs it (s3idx's metadata names its key field itself).
    """
    try:
        meta = codec.parse_metadata(head.metadata)
    except NotAnS3idxObjectError:
        if not maggma_format.is_maggma_metadata(head.metadata):
            raise
        return _recover_maggma(head, key_field)
    if meta.entry[meta.key_field] != head.key:
        raise CorruptObjectError(
            f"its metadata names key {quote_key(str(meta.entry[meta.key_field]))}, "
            f"not {quote_key(head.key)} "
            "(copied or renamed by another tool?)"
        )
    bookkeeping = Bookkeeping(head.etag, head.size, meta.sha256, meta.codec)
    entry = with_bookkeeping(meta.entry, bookkeeping)
    return Recovered(head.key, meta.key_field, meta.fields, entry)


def _recover_maggma(head: ObjectHead, key_field: str | None) -> Recovered:
    meta = maggma_format.parse_metadata(head.metadata, head.key, key_field)
    entry = dict(meta.entry)
    if codec.LAST_UPDATED not in entry and head.last_modified is not None:
        # maggma keeps last_updated in its own index; when it is not in the metadata either,
        # the time the object was stored is the nearest truth the bucket holds.
        entry[codec.LAST_UPDATED] = codec.normalize_datetime(head.last_modified)
    entry = with_bookkeeping(entry, Bookkeeping(head.etag, head.size, None, meta.codec))
    return Recovered(head.key, meta.key_field, meta.fields, entry, maggma=True)


Rewriter = Callable[[Recovered], Recovered]


class EntryCollector:
    """Turns listed keys into entries with parallel HEADs, agreeing on one key field."""

    def __init__(
        self,
        store: ObjectStore,
        pool: ThreadPoolExecutor,
        workers: int,
        key_field: str | None,
        skipped: Skipped,
        on_skip: object = None,
        *,
        adopted: Adopted | None = None,
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
        self.adopted = adopted if adopted is not None else Adopted()
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
                self.skipped.foreign(key)
                self._report(key, "not an s3idx object (no s3idx metadata)")
            elif isinstance(error, CorruptObjectError):
                self.skipped.broken(key, error.message)
                self._report(key, f"metadata cannot be decoded: {error.message}")
            else:
                raise error

    def _accept(self, recovered: Recovered) -> Entry | None:
        if self.key_field is None:
            self.key_field = recovered.key_field
        elif recovered.key_field != self.key_field:
            reason = f"key field {recovered.key_field!r}, not {self.key_field!r}"
            self.skipped.broken(recovered.key, reason)
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
        self.adopted.count(recovered)
        if recovered.rewrite_failure is not None:
            self._report(recovered.key, f"not rewritten: {recovered.rewrite_failure}")
        return recovered.entry

    def _report(self, key: str, reason: str) -> None:
        if callable(self._on_skip):
            self._on_skip(key, reason)


def _head_and_recover(
    store: ObjectStore, key_field: str | None, rewriter: Rewriter | None, key: str
) -> Recovered:
    recovered = recover_entry(store.head(key), key_field)
    # An object whose key field disagrees is refused by the collector: it must not be rewritten.
    if rewriter is not None and recovered.maggma and key_field in (None, recovered.key_field):
        return rewriter(recovered)
    return recovered


def probe_key_field(
    store: ObjectStore, key_field: str | None = None, probe: int = 1000
) -> Recovered | None:
    """The first object among the first ``probe`` listed that gives an entry, if any.

    The bucket is the truth: its objects say which key field and fields they were written with.
    """
    for n, info in enumerate(store.list()):
        if n >= probe:
            break
        try:
            return recover_entry(store.head(info.key), key_field)
        except (NotAnS3idxObjectError, CorruptObjectError, ObjectNotFoundError):
            continue
    return None


def indexed_entries(index: Index) -> int:
    """How many entries an index holds; 0 for one never written (reading creates nothing)."""
    return 0 if index.settings() is None else index.count({})


__all__ = [  # Skipped, Adopted and REPORTED_KEYS_LIMIT live in results.py; importable here too
    "REPORTED_KEYS_LIMIT",
    "Adopted",
    "EntryCollector",
    "Recovered",
    "Rewriter",
    "Skipped",
    "indexed_entries",
    "probe_key_field",
    "recover_entry",
]
