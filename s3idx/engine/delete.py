"""``delete``: object first, then index entry, in batches.

Deleting the object first means a failure in between leaves an entry whose object is gone,
which ``sync`` prunes; the other order could leave an object nobody knows about resurrected by
``sync`` as if it were wanted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from s3idx.engine.results import DeleteResult, Events, accounted
from s3idx.errors import ObjectNotFoundError
from s3idx.index.base import Index
from s3idx.limits import DELETE_BATCH, batched
from s3idx.store.base import ObjectStore


@accounted
def delete_keys(
    store: ObjectStore,
    index: Index,
    keys: Iterable[str],
    *,
    dry_run: bool = False,
    events: Events | None = None,
) -> DeleteResult:
    result = DeleteResult(dry_run=dry_run)
    unique = list(dict.fromkeys(keys))
    for batch in batched(unique, DELETE_BATCH):
        _delete_batch(store, index, batch, result, named=True)
        _report(events, result, len(unique))
    return result


@accounted
def delete_matching(
    store: ObjectStore,
    index: Index,
    filter: Mapping[str, Any],
    key_field: str,
    *,
    dry_run: bool = False,
    events: Events | None = None,
) -> DeleteResult:
    result = DeleteResult(dry_run=dry_run)
    total = index.count(filter) if events is not None else None
    for batch in _matching_keys(index, filter, key_field, dry_run):
        _delete_batch(store, index, batch, result, named=False)
        _report(events, result, total)
    return result


def _report(events: Events | None, result: DeleteResult, total: int | None) -> None:
    if events is None:
        return
    done = len(result.would_delete) if result.dry_run else result.deleted
    detail = {"failed": len(result.failed)} if result.failed else {}
    events.progress(done, total, detail)


def _matching_keys(
    index: Index, filter: Mapping[str, Any], key_field: str, dry_run: bool
) -> Iterator[list[str]]:
    # Keyset pagination: each page starts after the last key seen, so deleting the page (or
    # failing to) never makes the next query skip or repeat keys.
    last: str | None = None
    while True:
        page_filter = (
            dict(filter) if last is None else {"$and": [dict(filter), {key_field: {"$gt": last}}]}
        )
        page = [
            e[key_field]
            for e in index.find(
                page_filter, fields=[key_field], sort=[(key_field, 1)], limit=DELETE_BATCH
            )
        ]
        if not page:
            return
        yield page
        last = page[-1]


def _delete_batch(
    store: ObjectStore, index: Index, keys: list[str], result: DeleteResult, *, named: bool
) -> None:
    indexed = set(index.bookkeeping(keys))
    targets = []
    for key in keys:
        if key in indexed or _object_exists(store, key):
            targets.append(key)
        elif named:
            result.missing.append(key)
    if result.dry_run:
        result.would_delete.extend(targets)
        return
    failures = {f.key: f.reason for f in store.delete(targets)}
    result.failed.extend(failures.items())
    gone = [k for k in targets if k not in failures]
    result.deleted += len(gone)
    result.entries_deleted += index.delete([k for k in gone if k in indexed])


def _object_exists(store: ObjectStore, key: str) -> bool:
    try:
        store.head(key)
    except ObjectNotFoundError:
        return False
    return True
