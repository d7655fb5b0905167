"""The put journal: entries a ``put`` was replacing when it stopped, and their repair.

``put`` uploads an object, then writes its entry. For a key that already has an entry, a run
killed in between leaves the entry of the version it replaced while the bucket holds the new
one. So before uploading such keys, ``put`` journals them (``index.journal_puts``: key ->
the entry's ETag and the run's name, one write per batch of keys that have entries, none for
new keys), and clears each record once the key's entry is written (or its upload refused), by a
second write: apart from the entry's, so that a MongoDB index needs no multi-document
transaction (a crash between the two leaves a record of an entry already right: sync clears it,
a ``--skip-unchanged`` stores the document once more).

A record that stays means "the bucket may hold another version than this entry describes":

- ``put --skip-unchanged`` never takes such an entry as proof that a document is stored;
- ``sync`` sets the entry to what the bucket holds (``reconcile``: HEAD, then compare-and-set)
  and clears the record; ``sync --check`` and ``verify`` report it as ``interrupted-put``;
- queries still return the entry (a running put's records must not hide its keys): it may
  describe the replaced version until the next ``sync``.

A record names its run, and is cleared only with its ETag and run: a record another run
wrote meanwhile stays.
"""

from __future__ import annotations

from s3idx.engine.reconcile import reconcile
from s3idx.index.base import Index, PutIntent
from s3idx.limits import DELETE_BATCH, batched
from s3idx.sharding import Shard
from s3idx.store.base import ObjectStore

INTERRUPTED_PUT = "interrupted-put"


def put_journaled(index: Index, shard: Shard | None = None) -> dict[str, PutIntent]:
    """The put journal (key -> record); with ``shard``, only its keys' records."""
    records = index.put_intents()
    if shard is None:
        return records
    return {key: intent for key, intent in records.items() if shard.owns(key)}


def finish_puts(
    store: ObjectStore,
    index: Index,
    *,
    key_field: str,
    workers: int,
    shard: Shard | None = None,
) -> int:
    """Set every journaled key's entry to what the bucket holds, then clear its record.

    Returns how many records were settled. A key still contended after reconcile's rounds
    keeps its record (the next sync tries again).
    """
    records = put_journaled(index, shard)
    settled = 0
    for batch in batched(sorted(records), DELETE_BATCH):
        outcome = reconcile(store, index, batch, key_field=key_field, workers=workers)
        left = set(outcome.left)
        done = {key: records[key] for key in batch if key not in left}
        index.clear_put_intents(done)
        settled += len(done)
    return settled
