"""What a store and an index already hold, asked before rebuild-index or sync changes anything."""

from __future__ import annotations

from collections.abc import Callable

from s3idx.engine.metadata_entry import Recovered, recover_entry
from s3idx.errors import CorruptObjectError, NotAnS3idxObjectError, ObjectNotFoundError
from s3idx.index.base import Index
from s3idx.store.base import ObjectHead, ObjectInfo, ObjectStore


def probe_key_field(
    store: ObjectStore,
    key_field: str | None = None,
    probe: int = 1000,
    *,
    known: Callable[[ObjectInfo], ObjectHead | None] | None = None,
) -> Recovered | None:
    """The first object among the first ``probe`` listed that gives an entry, if any.

    The bucket is the truth: its objects say which key field and fields they were written with.
    ``known`` gives a listed object's head without a HEAD when it can (a manifest's line).
    """
    for n, info in enumerate(store.list_objects()):
        if n >= probe:
            break
        head = known(info) if known is not None else None
        try:
            return recover_entry(head or store.head(info.key), key_field)
        except (NotAnS3idxObjectError, CorruptObjectError, ObjectNotFoundError):
            continue
    return None


def indexed_entries(index: Index) -> int:
    """How many entries an index holds; 0 for one never written (reading creates nothing)."""
    return 0 if index.settings() is None else index.count({})
