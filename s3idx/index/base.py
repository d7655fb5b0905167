"""The index protocol: what every index backend (SQLite, MongoDB) provides.

An *entry* is a plain dict: the key field, the searchable fields (nested as in the document, so a
dotted path ``a.b`` is stored as ``{"a": {"b": ...}}``), ``last_updated`` (a UTC datetime) and
bookkeeping under ``_s3idx``: ``{"etag", "size", "sha256", "codec"}``. Values are str, int,
float, bool, None, list, dict or datetime, and come back with the same types.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from s3idx.codec import RESERVED_FIELD

Entry = dict[str, Any]
SortSpec = Sequence[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Bookkeeping:
    """What the index recorded about an entry's object."""

    etag: str
    size: int
    sha256: str | None
    codec: str

    def as_dict(self) -> dict[str, Any]:
        return {"etag": self.etag, "size": self.size, "sha256": self.sha256, "codec": self.codec}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bookkeeping:
        return cls(data["etag"], int(data["size"]), data.get("sha256"), data["codec"])


def with_bookkeeping(entry: Mapping[str, Any], bookkeeping: Bookkeeping) -> Entry:
    """A copy of ``entry`` carrying its object's bookkeeping under ``_s3idx``."""
    return {**entry, RESERVED_FIELD: bookkeeping.as_dict()}


@dataclass(frozen=True, slots=True)
class IndexSettings:
    """What an index was created with: its key field and the searchable fields seen so far.

    ``pending`` names the fields (among ``fields``) added while documents were already stored,
    each with how many entries the index held then: those entries lack the field until
    ``reindex`` backfills it. A field added to an empty index is complete at once.
    """

    key_field: str
    fields: tuple[str, ...] = field(default_factory=tuple)
    pending: tuple[tuple[str, int], ...] = field(default_factory=tuple)

    @property
    def complete_fields(self) -> tuple[str, ...]:
        waiting = {name for name, _ in self.pending}
        return tuple(f for f in self.fields if f not in waiting)


@runtime_checkable
class IndexRebuild(Protocol):
    """A fresh index being filled; ``commit`` swaps it in at once, ``abort`` drops it."""

    def upsert(self, entries: Sequence[Entry]) -> None: ...

    def has_keys(self, keys: Sequence[str]) -> set[str]: ...

    def save_checkpoint(self, checkpoint: Mapping[str, Any]) -> None: ...

    def checkpoint(self) -> dict[str, Any] | None: ...

    def commit(self, settings: IndexSettings) -> None:
        """Swap the new index in, recording ``settings`` (pending fields included)."""
        ...

    def abort(self) -> None:
        """Drop the fresh index; clears the rebuild flag and the change log too."""
        ...

    def changed_keys(self) -> Iterator[str]:
        """Distinct keys the live index logged as written since this rebuild started (any
        order): every entry write of the live index logs its keys while the rebuild runs."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Remove entries from the fresh index."""
        ...

    def finish(self) -> None:
        """After ``commit``: clear the rebuild flag and the change log."""
        ...


@runtime_checkable
class Index(Protocol):
    """A queryable cache of index entries, keyed by the document key."""

    location: str  # for messages; never holds a password

    def settings(self) -> IndexSettings | None:
        """The recorded settings, or None for an index that has never been written."""
        ...

    def configure(self, key_field: str, fields: Sequence[str]) -> IndexSettings:
        """Record the key field (it may never change) and add searchable fields.

        Creates the backend's indexes for new fields. A field new to an index that holds entries
        is recorded as pending (with the number of entries then), in the same step. Raises
        IndexSettingsError when the key field differs from the recorded one.
        """
        ...

    def mark_complete(self, fields: Sequence[str]) -> IndexSettings:
        """Record that every entry now has ``fields`` (``reindex`` backfilled them)."""
        ...

    def mark_pending(self, pending: Sequence[tuple[str, int]]) -> IndexSettings:
        """Record recorded fields as pending for that many more entries (``sync`` adopted
        objects whose metadata lacks them); fields not recorded are ignored."""
        ...

    def upsert(self, entries: Sequence[Entry]) -> None:
        """Insert or replace entries by key; later entries for the same key win."""
        ...

    def delete(self, keys: Sequence[str]) -> int:
        """Remove entries by key; returns how many existed."""
        ...

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        fields: Sequence[str] | None = None,
        sort: SortSpec | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[Entry]:
        """Entries matching a MongoDB-style filter; ``fields`` projects (the key always stays)."""
        ...

    def count(self, filter: Mapping[str, Any] | None = None) -> int: ...

    def etags(self, keys: Sequence[str]) -> dict[str, str]:
        """The recorded ETag of each given key that has an entry."""
        ...

    def upsert_if(self, entries: Sequence[Entry], expected: Mapping[str, str | None]) -> set[str]:
        """Compare-and-set by key: write each entry (it carries `_s3idx` bookkeeping) only if the
        key's recorded ETag is still `expected[key]` (None: only if the key has no entry). Returns
        the keys NOT written (conflicts). One entry per key."""
        ...

    def delete_if(self, expected: Mapping[str, str]) -> tuple[int, set[str]]:
        """Remove entries whose recorded ETag is still `expected[key]`. Returns (removed,
        conflicts): conflicts are keys whose entry now has another ETag; a missing key is
        neither."""
        ...

    def journal_deletes(self, items: Mapping[str, str]) -> None:
        """Record key -> ETag as being deleted (replaces an earlier record for the key)."""
        ...

    def journaled(self, keys: Sequence[str] | None = None) -> dict[str, str]:
        """Journal records for the given keys (all records when None; the journal is small)."""
        ...

    def clear_journal(self, items: Mapping[str, str]) -> None:
        """Remove journal records, each only if it still names that ETag."""
        ...

    def bookkeeping(self, keys: Sequence[str]) -> dict[str, tuple[Entry, Bookkeeping]]:
        """For the given keys that exist: the entry (without ``_s3idx``) and its bookkeeping."""
        ...

    def iter_bookkeeping(self) -> Iterator[tuple[str, Bookkeeping]]:
        """Every key with its bookkeeping, in ascending key order (UTF-8 byte order)."""
        ...

    def start_rebuild(
        self, key_field: str, fields: Sequence[str] = (), *, resume: bool = False
    ) -> IndexRebuild:
        """A fresh index keyed by ``key_field`` beside the current one.

        ``fields`` are the searchable fields expected (a hint: ``commit`` gives the final ones).
        With ``resume``, the interrupted rebuild, if there is one for the same key field.
        The current index may be missing or empty (the index was lost).

        From the start until ``finish`` (or ``abort``), a "rebuild running" flag is recorded in
        the index's own storage, and every entry write of the live index (``upsert``,
        ``upsert_if``, ``delete``, ``delete_if``, ``journal_deletes``) logs its keys first; see
        ``IndexRebuild.changed_keys``. A fresh start clears the log; a resumed rebuild keeps it.
        """
        ...

    def close(self) -> None: ...
