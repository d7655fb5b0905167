"""Bring index entries back in line with their objects after a compare-and-set failed.

Every index write of a writer is a compare-and-set (CAS) on the version the index recorded (the
ETag and the stamp of the write that left it, ``base.Version``): from the version the writer
read before its object operation. A key whose CAS failed was written by someone else
meanwhile; ``reconcile`` then makes the entry describe whatever object the bucket holds *now*,
again by CAS, from a version read from the index *before* the HEAD:

    recorded = index.versions; journaled = index.journaled; head = store.head
    object missing, foreign, broken,
    or journaled with its own ETag     -> delete_if(recorded)
    otherwise                          -> upsert_if(entry from head's metadata, recorded)

An entry whose ETag is already the HEAD's is written again too (so only versions are read, not
entries): the object may be a later upload of the same bytes, and only a new stamp makes a
writer that read the entry before that upload fail its CAS (and reconcile) instead of indexing
its own earlier object over it. And S3 gives identical bytes one ETag: two puts of one
document (or a put beside ``reindex``) store objects of one ETag whose metadata differ
(``last_updated``, the indexed fields), so the entry written is the HEAD's.

A CAS that fails again means another writer moved the index between our reads and our write:
the loop reads again. Reading the index before the HEAD is what makes this safe: whatever we
write was the bucket's state after the index held ``recorded``, so a later object's writer either
wins its own CAS or reconciles after its object exists, and the index ends on the last object.

The journal is read between the index and the HEAD: a delete journals a key before it removes
its entry, so an entry found missing here was journaled before that read, and an object still
carrying the journaled ETag may be about to go: it must not be indexed again yet. But S3 gives
identical bytes one ETag: the same document put again after the delete removed the object
carries the journaled ETag too, and stays. Which of the two it is, only the end of the delete
tells: such a key waits (up to ``DELETE_WAIT``) for its record to clear, then is read again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from s3idx.config import DEFAULT_WORKERS
from s3idx.engine.concurrency import ordered_map, worker_pool
from s3idx.engine.recover import Recovered, recover_entry
from s3idx.errors import NotAnS3idxObjectError, ObjectNotFoundError, UndecodableMetadataError
from s3idx.index.base import Entry, Index, Version
from s3idx.store.base import ObjectHead, ObjectStore

ATTEMPTS = 8  # rounds of read-and-CAS per key before giving up on it (sync repairs it later)
# How long keys whose object carries a delete's journaled ETag wait for that delete to end (a
# batch's conditional deletes take seconds); past it, they are given up on (left for sync).
DELETE_WAIT = 30.0


@dataclass(slots=True)
class ReconcileResult:
    gave_up: int = 0  # still contended after ATTEMPTS rounds: left for sync
    left: list[str] = field(default_factory=list)  # those keys


def reconcile(
    store: ObjectStore,
    index: Index,
    keys: Iterable[str],
    *,
    key_field: str,
    workers: int = DEFAULT_WORKERS,
    attempts: int = ATTEMPTS,
) -> ReconcileResult:
    """Make each key's entry describe the object the bucket holds (or remove it), by CAS."""
    result = ReconcileResult()
    todo = list(dict.fromkeys(keys))
    if not todo:
        return result
    deadline = time.monotonic() + DELETE_WAIT
    with worker_pool(max(1, min(workers, len(todo))), "s3idx-reconcile") as pool:
        for _ in range(attempts):
            deleting: dict[str, str] = {}
            todo = _round(store, index, todo, key_field, pool, workers, deleting)
            if not todo:
                return result
            waiting = {key: deleting[key] for key in todo if key in deleting}
            if waiting and not wait_for_deletes(index, waiting, deadline):
                break
    result.gave_up += len(todo)
    result.left.extend(todo)
    return result


def wait_for_deletes(index: Index, deleting: Mapping[str, str], deadline: float) -> bool:
    """Wait until no key of ``deleting`` (key -> ETag) is journaled with that ETag any more:
    the deletes ended. False when the deadline came first."""
    pause = 0.02
    while True:
        journaled = index.journaled(list(deleting))
        if not any(journaled.get(key) == etag for key, etag in deleting.items()):
            return True
        if time.monotonic() + pause > deadline:
            return False
        time.sleep(pause)
        pause = min(2 * pause, 0.5)


def observe(
    store: ObjectStore,
    keys: Sequence[str],
    key_field: str,
    pool: ThreadPoolExecutor,
    workers: int,
    journaled: dict[str, str],
    deleting: dict[str, str] | None = None,
) -> dict[str, Recovered | None]:
    """What the index should hold for each key now: the entry recovered from a HEAD, or None
    (no object, an object s3idx cannot index under ``key_field``, or one that may be being
    deleted: its object carries the ETag the journal names, added to ``deleting``)."""
    truth: dict[str, Recovered | None] = {}
    for key, future in ordered_map(pool, store.head, keys, 2 * max(workers, 1)):
        error = future.exception()
        if isinstance(error, ObjectNotFoundError | UndecodableMetadataError):
            truth[key] = None  # no object, or one whose metadata cannot be decoded
        elif error is not None:
            raise error
        else:
            head = future.result()
            if journaled.get(key) == head.etag:
                truth[key] = None  # a delete may be removing this very object
                if deleting is not None:
                    deleting[key] = head.etag
            else:
                truth[key] = _indexable(head, key_field)
    return truth


def _indexable(head: ObjectHead, key_field: str) -> Recovered | None:
    try:
        recovered = recover_entry(head, key_field)
    except (NotAnS3idxObjectError, UndecodableMetadataError):
        return None
    return recovered if recovered.key_field == key_field else None


def _round(
    store: ObjectStore,
    index: Index,
    keys: list[str],
    key_field: str,
    pool: ThreadPoolExecutor,
    workers: int,
    deleting: dict[str, str],
) -> list[str]:
    """One read-and-CAS round over ``keys``; the keys whose CAS failed again, and those whose
    object a delete may be removing (also put in ``deleting``: read again once it ended)."""
    # Order matters: index, then journal, then object (see the module's docstring).
    recorded = index.versions(keys)
    journaled = index.journaled(keys)
    truth = observe(store, keys, key_field, pool, workers, journaled, deleting)
    writes: list[Entry] = []
    expected: dict[str, Version | None] = {}
    removals: dict[str, Version] = {}
    for key in keys:
        version = recorded.get(key)
        if key in deleting and version is None:
            continue  # no entry to remove meanwhile; whether to write one: once it ended
        found = truth[key]
        if found is None:
            if version is not None:
                removals[key] = version
        else:
            # Written even when the entry already is the HEAD's (a new stamp): the object may
            # be a later upload of the same bytes, and a writer that read this entry before
            # that upload must lose its compare-and-set (the ABA race, ``base.Version``), not
            # index its own object over it.
            writes.append(found.entry)
            expected[key] = version
    again: set[str] = set()
    if writes:
        again |= index.upsert_if(writes, expected)
    if removals:
        _, conflicts = index.delete_if(removals)
        again |= conflicts
    return [k for k in keys if k in again or (k in deleting and k not in removals)]
