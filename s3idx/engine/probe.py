"""What a store and an index already hold, asked before rebuild-index or sync changes anything."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from s3idx.engine.metadata_entry import Recovered, recover_entry
from s3idx.errors import (
    CorruptObjectError,
    NotAnS3idxObjectError,
    ObjectNotFoundError,
    S3idxError,
    quote_key,
)
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


def in_key_order(stream: Iterator[Any], what: str, command: str) -> Iterator[Any]:
    """``stream`` (listed objects, or (key, ...) tuples of an index) checked to be in strictly
    ascending key order as it is read: the merges of ``sync``, ``verify`` and a rebuild's
    re-check compare two such streams, and one out of order would make them report (or drop)
    the wrong keys."""
    previous: str | None = None
    for item in stream:
        key = item.key if isinstance(item, ObjectInfo) else item[0]
        if previous is not None and key <= previous:
            raise S3idxError(
                f"the {what} is not in key order ({quote_key(key)} after {quote_key(previous)}); "
                f"{command} cannot compare it"
            )
        previous = key
        yield item
