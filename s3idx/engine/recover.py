"""Index entries recovered from object metadata alone: what rebuild-index and sync read.

No body is downloaded: an s3idx object carries its whole index entry in its metadata, and the
listing or HEAD response gives the ETag and size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from s3idx import codec
from s3idx.engine.concurrency import ordered_map
from s3idx.errors import CorruptObjectError, NotAnS3idxObjectError, ObjectNotFoundError
from s3idx.index.base import Entry
from s3idx.store.base import ObjectHead, ObjectStore

REPORTED_KEYS_LIMIT = 10_000  # keys kept for --json; counts are always exact


@dataclass(frozen=True, slots=True)
class Recovered:
    key: str
    key_field: str
    fields: tuple[str, ...]
    entry: Entry  # with _s3idx bookkeeping


def recover_entry(head: ObjectHead) -> Recovered:
    """The index entry an object's metadata holds; NotAnS3idxObjectError or CorruptObjectError."""
    meta = codec.parse_metadata(head.metadata)
    if meta.entry[meta.key_field] != head.key:
        raise CorruptObjectError(
            f"its metadata names key {meta.entry[meta.key_field]!r}, not {head.key!r} "
            "(copied or renamed by another tool?)"
        )
    entry = dict(meta.entry)
    entry[codec.RESERVED_FIELD] = {
        "etag": head.etag,
        "size": head.size,
        "sha256": meta.sha256,
        "codec": meta.codec,
    }
    return Recovered(head.key, meta.key_field, meta.fields, entry)


@dataclass(slots=True)
class Skipped:
    """Objects that gave no entry, counted exactly, their keys kept up to a limit."""

    not_s3idx: int = 0
    not_s3idx_keys: list[str] = field(default_factory=list)
    undecodable: int = 0
    undecodable_keys: list[tuple[str, str]] = field(default_factory=list)
    vanished: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "not_s3idx": self.not_s3idx,
            "not_s3idx_keys": list(self.not_s3idx_keys),
            "undecodable": self.undecodable,
            "undecodable_keys": [{"key": k, "reason": r} for k, r in self.undecodable_keys],
            "vanished": self.vanished,
        }

    def foreign(self, key: str) -> None:
        self.not_s3idx += 1
        if len(self.not_s3idx_keys) < REPORTED_KEYS_LIMIT:
            self.not_s3idx_keys.append(key)

    def broken(self, key: str, reason: str) -> None:
        self.undecodable += 1
        if len(self.undecodable_keys) < REPORTED_KEYS_LIMIT:
            self.undecodable_keys.append((key, reason))


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
    ) -> None:
        self._store = store
        self._pool = pool
        self._window = 2 * workers
        self.key_field = key_field
        self.fields: list[str] = []
        self.skipped = skipped
        self._on_skip = on_skip

    def entries(self, keys: Iterable[str]) -> Iterator[Entry]:
        heads = ordered_map(self._pool, partial(_head_and_recover, self._store), keys, self._window)
        for key, future in heads:
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
        return recovered.entry

    def _report(self, key: str, reason: str) -> None:
        if callable(self._on_skip):
            self._on_skip(key, reason)


def _head_and_recover(store: ObjectStore, key: str) -> Recovered:
    return recover_entry(store.head(key))
