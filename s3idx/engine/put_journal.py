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

A key has one record per run, cleared only with its ETag and run: two runs replacing one key
at once each keep theirs, so the one killed after its upload landed last still marks the entry
the other wrote.

Only a dead run's records are settled. A record written while its run's upload has not landed
yet, cleared by a sync, would leave a wrong entry with no record if the run were then killed.
So each record carries its run's heartbeat: set by ``journal_puts``, refreshed by the run's
``Heartbeat`` thread every ``PUT_BEAT_SECONDS`` while it has records, removed when the run
ends (``beat_puts(alive=False)``: what it leaves is for sync at once). A record whose heartbeat
is older than the stale bound (the ``put_stale_seconds`` setting, default 600), or missing
(the run ended, or an earlier s3idx wrote it), is a dead run's; the others are a put in
progress: sync leaves them and counts their keys apart, not as drift. A run's name carries its
process (``liveness.tagged``), so a run killed on the machine sync runs on is known dead at
once; sync then waits ``DEATH_SETTLE_SECONDS`` for an upload it sent to land before settling
its records. A run killed on another machine looks alive until the bound passes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from s3idx.engine.concurrency import worker_pool
from s3idx.engine.reconcile import reconcile
from s3idx.errors import S3idxError
from s3idx.index.base import Index, PutIntent
from s3idx.limits import DELETE_BATCH, batched
from s3idx.liveness import DEATH_SETTLE_SECONDS, has_died
from s3idx.sharding import Shard
from s3idx.store.base import ObjectStore

INTERRUPTED_PUT = "interrupted-put"
# How often a running put refreshes its records' heartbeat, while it has any.
PUT_BEAT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class PutJournal:
    """The put journal read at one moment: records of dead runs (to settle) and of live ones
    (puts still running: left alone)."""

    dead: list[PutIntent]
    live: list[PutIntent]
    # Some dead run's heartbeat is within the stale bound: a process seen dead just now, whose
    # last upload may still land.
    died_lately: bool = False

    @property
    def interrupted(self) -> list[str]:
        """The keys a dead run's record marks, sorted."""
        return sorted({record.key for record in self.dead})

    @property
    def in_progress(self) -> list[str]:
        """The keys only live runs' records mark, sorted."""
        dead = {record.key for record in self.dead}
        return sorted({record.key for record in self.live} - dead)


def is_live(record: PutIntent, now: float, stale_after: float) -> bool:
    """Whether the record's run showed it was alive within ``stale_after`` seconds of ``now``
    and is not known to have died since. A record without a heartbeat (the earlier layout) is
    a dead run's, as before."""
    return _beat_lately(record, now, stale_after) and not has_died(record.run)


def _beat_lately(record: PutIntent, now: float, stale_after: float) -> bool:
    return record.at is not None and now - record.at < stale_after


def put_journaled(index: Index, shard: Shard | None = None, *, stale_after: float) -> PutJournal:
    """The put journal, split by the liveness of each record's run (dead: no heartbeat for
    ``stale_after`` seconds); with ``shard``, only its keys' records."""
    records = index.put_intents()
    if shard is not None:
        records = [record for record in records if shard.owns(record.key)]
    now = time.time()
    live = [record for record in records if is_live(record, now, stale_after)]
    dead = [record for record in records if not is_live(record, now, stale_after)]
    lately = any(_beat_lately(record, now, stale_after) for record in dead)
    return PutJournal(dead, live, lately)


def drifted(
    store: ObjectStore, index: Index, journal: PutJournal, *, workers: int, stale_after: float
) -> list[str]:
    """The keys of ``journal.interrupted`` that are drift, sorted: what ``sync --check`` and
    ``verify`` report as ``interrupted-put``.

    A dead run's record says the bucket *may* hold an object its entry does not describe. A
    put that failed after its request reached the server (a 5xx, a lost connection) leaves
    one whether or not the object landed, so each is looked at (one HEAD): the key is drift
    when the object is not the one the entry records (another ETag, gone, no entry) or
    cannot be read. A run seen dead only now (its process gone, its heartbeat within the
    stale bound) may still have an upload on the wire: its keys are drift without looking.
    Changes nothing: ``sync`` settles every dead run's record, drift or not."""
    lately: set[str] = set()
    look: set[str] = set()
    now = time.time()
    for record in journal.dead:
        (lately if _beat_lately(record, now, stale_after) else look).add(record.key)
    keys = sorted(look - lately)
    found: dict[str, str | None] = {}
    if keys:
        recorded = index.etags(keys)  # before the HEADs, as reconcile reads them
        with worker_pool(max(1, min(workers, len(keys))), "s3idx-journal") as pool:
            found = dict(zip(keys, pool.map(partial(_etag, store), keys), strict=True))
    differ = {key for key in keys if found[key] is None or found[key] != recorded.get(key)}
    return sorted(lately | differ)


def _etag(store: ObjectStore, key: str) -> str | None:
    """The ETag of the object at ``key``; None if it is gone or cannot be read now."""
    try:
        return store.head(key).etag
    except S3idxError:
        return None


def finish_puts(
    store: ObjectStore,
    index: Index,
    *,
    key_field: str,
    workers: int,
    shard: Shard | None = None,
    stale_after: float,
    wait: Callable[[float], bool] | None = None,
    contended: Callable[[list[str]], None] | None = None,
) -> tuple[int, PutJournal]:
    """Set every key a dead run journaled to what the bucket holds, then clear those records.

    Returns how many keys were settled, and the journal as read. A key still contended after
    reconcile's rounds keeps its records (the next sync tries again), and is given to
    ``contended``. Live
    runs' records are left alone: the run clears them itself, and settling one before its
    upload lands would leave the entry describing the replaced version with no record, should
    the run then be killed. A run seen dead only now (its process gone) may still have an
    upload on the wire: ``wait(DEATH_SETTLE_SECONDS)`` first (True: stopped; nothing settled).
    """
    journal = put_journaled(index, shard, stale_after=stale_after)
    if journal.died_lately and (wait or _sleep)(DEATH_SETTLE_SECONDS):
        return 0, journal
    by_key: dict[str, list[PutIntent]] = {}
    for record in journal.dead:
        by_key.setdefault(record.key, []).append(record)
    settled = 0
    for batch in batched(sorted(by_key), DELETE_BATCH):
        outcome = reconcile(store, index, batch, key_field=key_field, workers=workers)
        done = [key for key in batch if key not in set(outcome.left)]
        if contended is not None and outcome.left:
            contended(outcome.left)
        index.clear_put_intents(record for key in done for record in by_key[key])
        settled += len(done)
    return settled, journal


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


class Heartbeat:
    """Refreshes a running put's records' heartbeat (``index.beat_puts``) every ``interval``
    seconds while ``holding`` says it has records: one write a beat, none per document. Its
    own thread, because the main thread may wait long (a slow upload, quiet input) and a run
    silent past the stale bound would have its records settled under it."""

    def __init__(self, index: Index, run: str, interval: float | None = None) -> None:
        self._index = index
        self._run = run
        self._interval = PUT_BEAT_SECONDS if interval is None else interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.holding = False  # set by the main thread: whether the run has records now

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._beat, name="s3idx-put-heartbeat", daemon=True
            )
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            if self.holding:
                # A failed beat costs nothing now: the main thread meets the same failure on
                # its next index write; a later beat may still succeed.
                with contextlib.suppress(Exception):
                    self._index.beat_puts(self._run)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
