"""``sync``: make the index agree with the bucket, reading only what changed.

The store listing (key, ETag, size) and the index's bookkeeping are both in key order, so one
merge pass finds the drift in bounded memory: objects with no entry (``bucket-only``: orphans of
a crash, or written by another process), entries with no object (``index-only``) and objects
whose ETag or size differ from what the index recorded (``changed``). Only bucket-only and
changed objects are HEADed; their entries come from their metadata.

With a rewriter (``--rewrite``), objects written by maggma's S3Store are rewritten into the
s3idx format: the new and changed ones as they are adopted, and also those already indexed from
maggma's metadata (their bookkeeping names a maggma codec), which are not drift.

Other writers may run at once, so every index write is a compare-and-set on the ETag the merge
read (an adopted object's key must still have no entry; a changed one's entry must still record
the ETag compared; a pruned entry too), and a key that moved meanwhile is reconciled with the
bucket (``s3idx.engine.reconcile``). Deletes interrupted by a crash (journaled, see
``s3idx.engine.delete``) are finished first; an object a delete journaled is never adopted.
Then entries a killed put was replacing (its put journal, ``s3idx.engine.put_journal``) are set
to what the bucket holds; ``--check`` reports those as ``interrupted-put``, not ``changed``.
Records of puts still running (a recent heartbeat) are left alone: ``puts_in_progress``.

Manifests (``engine/manifest.py``): each batch of HEADs becomes a manifest of those objects
(with the HEAD's LastModified), written before their entries. A sync that finishes (not
``--check`` or ``--dry-run``, not interrupted) then compacts: it writes manifests of what is
true now, in key order (the HEADed objects' lines, and for objects in step, which it does not
HEAD, the lines the manifests present at its start vouch for, by rebuild's rule), and then
removes those earlier manifests, never one written meanwhile. New first, old second: a failure
in between leaves both, and nothing a rebuild needs is lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from itertools import chain
from typing import Any

from s3idx import maggma_format
from s3idx.codec import RESERVED_FIELD
from s3idx.config import DEFAULT_PUT_STALE_SECONDS, redact_location
from s3idx.engine.collector import EntryCollector
from s3idx.engine.concurrency import prefetched, worker_pool
from s3idx.engine.delete import finish_deletes, journaled
from s3idx.engine.manifest import CompactionWriter, ManifestLine, list_manifests
from s3idx.engine.manifest_batches import ManifestBatches
from s3idx.engine.manifest_index import ManifestIndex
from s3idx.engine.metadata_entry import Recovered, Rewriter
from s3idx.engine.probe import in_key_order, indexed_entries, probe_key_field
from s3idx.engine.put_journal import INTERRUPTED_PUT, drifted, finish_puts, put_journaled
from s3idx.engine.reconcile import reconcile
from s3idx.engine.results import (
    Events,
    SyncResult,
    accounted,
    reported_on_failure,
    started,
)
from s3idx.errors import UsageError
from s3idx.index.base import Bookkeeping, Entry, Index, Version
from s3idx.sharding import Shard
from s3idx.store.base import ObjectHead, ObjectInfo, ObjectStore
from s3idx.text import plural

BATCH = 1000
BUCKET_ONLY, INDEX_ONLY, CHANGED = "bucket-only", "index-only", "changed"
INTERRUPTED_DELETE = "interrupted-delete"  # journaled by a delete that did not finish
MAGGMA = "maggma"  # in step, but indexed from maggma's metadata: rewritten with --rewrite
IN_STEP = "in-step"  # not drift: yielded only so compaction sees every listed object


@accounted
def run_sync(
    store: ObjectStore,
    index: Index,
    *,
    workers: int,
    prune: bool = True,
    check: bool = False,
    dry_run: bool = False,
    rewriter: Rewriter | None = None,
    events: Events | None = None,
    stop: threading.Event | None = None,
    shard: Shard | None = None,
    manifests: ManifestBatches | None = None,
    compact: bool = True,
    put_stale_after: float = DEFAULT_PUT_STALE_SECONDS,
    bind: Callable[[], None] | None = None,
) -> SyncResult:
    """``manifests``: where the HEADed objects' lines go (shared with ``rewriter``'s).

    ``bind``: called before each batch of writes, once the index has settings (for a new
    index: once the first batch has recorded them): it records the store the index
    describes, or raises for an index that records another (``Engine.bind_store``).

    ``compact`` False: no compaction. A sync with ``shard`` never compacts: it sees only its
    own keys, and removing the manifests would drop the lines of the keys it did not see.
    ``put_stale_after``: seconds after its last heartbeat a put run is taken for dead (its
    journal records settled); until then they are a put in progress, left alone.
    """
    events = events or Events()
    result = started(
        SyncResult(
            check=check, dry_run=dry_run, prune=prune, shard=None if shard is None else str(shard)
        )
    )
    writes = not (check or dry_run)
    if not writes:
        rewriter = manifests = None
    elif manifests is None:
        manifests = ManifestBatches(store, events.warned)
    # Listed first: compaction replaces only the manifests that were there at the start. A
    # shard sees only its own keys, so it cannot replace manifests that also vouch for others'.
    compaction = (
        None
        if manifests is None or shard is not None or not compact
        else _SyncCompaction(store, list_manifests(store), events)
    )
    try:
        return _run(
            store,
            index,
            workers,
            result,
            writes,
            rewriter,
            events,
            stop,
            manifests,
            compaction,
            shard,
            put_stale_after,
            bind,
        )
    finally:
        if compaction is not None:
            compaction.close()


def _run(
    store: ObjectStore,
    index: Index,
    workers: int,
    result: SyncResult,
    writes: bool,
    rewriter: Rewriter | None,
    events: Events,
    stop: threading.Event | None,
    manifests: ManifestBatches | None,
    compaction: _SyncCompaction | None,
    shard: Shard | None,
    put_stale_after: float,
    bind: Callable[[], None] | None,
) -> SyncResult:
    prune = result.prune
    key_field = _key_field(store, index, rewriter)
    _interrupted_deletes(store, index, result, events, writes, shard)
    interrupted_puts = _interrupted_puts(
        store, index, result, events, writes, workers, shard, put_stale_after, stop
    )
    listing = iter(prefetched(store.list_objects()))
    first = next(listing, None)
    # Whether the whole store is empty, not the shard: a shard may well own no object.
    if first is None and writes and prune:
        _refuse_emptying(store, index)
    listing = chain([first], listing) if first is not None else iter(())
    with worker_pool(workers, "s3idx-head") as pool:
        collector = EntryCollector(
            store,
            pool,
            workers,
            key_field,
            result.skipped,
            on_skip=events.skipped,
            maggma=result.maggma,
            rewriter=rewriter,
        )
        # One object whose HEAD keeps failing is passed over, not the end of the sync.
        collector.on_unavailable = result.add_unavailable
        recorded = index.settings()
        if recorded is not None:
            # So that adopted objects lacking a recorded field are counted (see _Applier).
            collector.fields = list(recorded.fields)
        applier = _Applier(store, index, collector, result, events, writes, workers, manifests)
        applier.bind = bind
        if manifests is not None:
            collector.on_object = _HeadedLines(manifests, compaction).add
        bookkeeping = index.iter_bookkeeping()
        report = _every(BATCH, lambda: _report(events, result))
        listing, bookkeeping = _ticking(listing, report), _ticking(bookkeeping, report)
        if shard is not None:
            # Both sides of the merge keep the shard's keys only, still in key order.
            listing = (info for info in listing if shard.owns(info.key))
            bookkeeping = (item for item in bookkeeping if shard.owns(item[0]))
        with reported_on_failure(result):
            try:
                drift = _drift(listing, bookkeeping, result, rewriter is not None)
                for kind, key, version, info in drift:
                    if kind == CHANGED and key in interrupted_puts:
                        pass  # reported as an interrupted put (only looking: none are settled)
                    elif kind != IN_STEP:
                        applier.add(kind, key, version, info)
                    if compaction is not None and info is not None:
                        compaction.listed(info, in_step=kind == IN_STEP)
                        if compaction.full:
                            applier.flush()  # so every HEAD the buffered objects need is made
                            compaction.resolve()
                    if stop is not None and stop.is_set():
                        result.interrupted = True
                        break
                applier.flush()
                if compaction is not None and not result.interrupted:
                    compaction.resolve()
                    compaction.finish()
            finally:
                if manifests is not None:
                    _count_manifests(result, manifests, compaction)
            _report(events, result)
    return result


def _count_manifests(
    result: SyncResult, manifests: ManifestBatches, compaction: _SyncCompaction | None
) -> None:
    manifests.close()
    result.manifests_written = manifests.written
    result.manifests_failed = manifests.failed
    result.not_in_manifests = manifests.unrecorded
    if compaction is not None:
        result.manifests_written += compaction.writer.written
        result.manifests_removed = compaction.writer.removed
        if compaction.finished:
            # Every object HEADed has its line in the compacted manifests.
            result.not_in_manifests = 0


class _HeadedLines:
    """An object sync HEADed, as a manifest line: into this batch's manifest and compaction.

    A rewritten object is left out: its line (new ETag) comes from the rewriter.
    """

    def __init__(self, manifests: ManifestBatches, compaction: _SyncCompaction | None) -> None:
        self._manifests = manifests
        self._compaction = compaction

    def add(self, head: ObjectHead, recovered: Recovered | None) -> None:
        if recovered is not None and recovered.rewritten:
            return
        line = ManifestLine.from_head(head)
        self._manifests.add(line)
        if self._compaction is not None:
            self._compaction.headed(line)


class _SyncCompaction:
    """The lines of what is true now, in key order, for ``CompactionWriter``.

    Listed objects wait here (at most ``BATCH``) until every HEAD they need is made: then a
    HEADed object takes its HEAD's line, an object in step the line a manifest present at the
    start vouches for (none: left out, a rebuild HEADs it). A write that fails ends the
    compaction with a warning and removes nothing: the manifests there stay valid.
    """

    def __init__(self, store: ObjectStore, replaced: list[ObjectInfo], events: Events) -> None:
        self._replaced = replaced
        self.writer = CompactionWriter(
            store,
            on_failure=lambda exc: events.warned(
                f"compacted manifests not written ({exc.message}); the manifests there stay"
            ),
        )
        self._joined = ManifestIndex.load(
            store,
            replaced,
            on_damaged=lambda key, why: events.warned(f"manifest {key} not used: {why}"),
        )
        self._listed: list[tuple[ObjectInfo, bool]] = []
        self._headed: dict[str, ManifestLine] = {}
        self.finished = False

    @property
    def full(self) -> bool:
        return len(self._listed) >= BATCH

    def listed(self, info: ObjectInfo, *, in_step: bool) -> None:
        self._listed.append((info, in_step))

    def headed(self, line: ManifestLine) -> None:
        self._headed[line.key] = line

    def resolve(self) -> None:
        """Lines for every listed object waiting here; each HEAD they needed is made."""
        in_step = [info for info, steady in self._listed if steady]
        vouched = self._joined.vouch(in_step)[0] if in_step else {}
        for info, steady in self._listed:
            if steady:
                head = vouched.get(info.key)
                line = None if head is None else ManifestLine.from_head(head)
            else:
                line = self._headed.get(info.key)
            if line is not None:
                self.writer.add(line)
        self._listed.clear()
        self._headed.clear()

    def finish(self) -> None:
        self.writer.finish(self._replaced)
        self.finished = not self.writer.failed

    def close(self) -> None:
        self._joined.close()


def _interrupted_deletes(
    store: ObjectStore,
    index: Index,
    result: SyncResult,
    events: Events,
    writes: bool,
    shard: Shard | None,
) -> None:
    """Finish what crashed deletes left (or, only looking, count it as drift): before the
    merge, so their objects are gone from the listing and their entries from the index.
    With ``shard``, only the deletes of its keys."""
    if writes:
        result.interrupted_deletes = finish_deletes(
            store, index, shard=shard, contended=result.add_contended
        )
        return
    for key in journaled(index, shard):
        result.interrupted_deletes += 1
        events.drift(INTERRUPTED_DELETE, key)


def _interrupted_puts(
    store: ObjectStore,
    index: Index,
    result: SyncResult,
    events: Events,
    writes: bool,
    workers: int,
    shard: Shard | None,
    stale_after: float,
    stop: threading.Event | None,
) -> set[str]:
    """Set right the entries killed puts were replacing (or, only looking, count them as
    drift, and return their keys: the merge must not count them again as changed). Records
    of puts still running are left alone and counted apart (``puts_in_progress``): not drift;
    looking, their keys are not counted as changed either (their upload may have landed)."""
    settings = index.settings()
    if settings is None:
        return set()
    if writes:
        result.interrupted_puts, journal = finish_puts(
            store,
            index,
            key_field=settings.key_field,
            workers=workers,
            shard=shard,
            stale_after=stale_after,
            wait=partial(_wait_for_killed_puts, events, stop),
            contended=result.add_contended,
        )
        result.puts_in_progress = len(journal.in_progress)
        return set()
    journal = put_journaled(index, shard, stale_after=stale_after)
    # Only the records whose key's object is not the one its entry describes are drift; the
    # others' keys go through the merge as any key does.
    interrupted = drifted(store, index, journal, workers=workers, stale_after=stale_after)
    for key in interrupted:
        result.interrupted_puts += 1
        events.drift(INTERRUPTED_PUT, key)
    result.puts_in_progress = len(journal.in_progress)
    return {*interrupted, *journal.in_progress}


def _wait_for_killed_puts(events: Events, stop: threading.Event | None, seconds: float) -> bool:
    """Wait for the last uploads of puts just killed on this machine; True if stopped."""
    events.warned(
        f"a put killed on this machine left entries journaled: waiting {seconds:g} s for its "
        "last uploads to land before setting them to what the bucket holds"
    )
    return (stop or threading.Event()).wait(seconds)


def _report(events: Events, result: SyncResult) -> None:
    """Progress counts objects compared; entries and drift found so far come with them."""
    detail = {"entries": result.indexed, "drift": result.drift}
    events.progress(result.listed, None, detail)


def _every(count: int, action: Callable[[], None]) -> Callable[[], None]:
    """A callable that runs ``action`` on every ``count``-th call."""
    calls = 0

    def tick() -> None:
        nonlocal calls
        calls += 1
        if calls % count == 0:
            action()

    return tick


def _ticking(items: Iterator[Any], tick: Callable[[], None]) -> Iterator[Any]:
    for item in items:
        tick()
        yield item


def _key_field(store: ObjectStore, index: Index, rewriter: Rewriter | None) -> str | None:
    """The index's key field; for a new index that rewrites, the bucket's first object's.

    An object is rewritten before its entry is accepted, so the key field must be known before
    the first rewrite, not learnt from the first entry as a plain adoption does.
    """
    settings = index.settings()
    if settings is not None:
        return settings.key_field
    first = probe_key_field(store) if rewriter is not None else None
    return first.key_field if first is not None else None


def _count(result: SyncResult, kind: str) -> None:
    if kind == BUCKET_ONLY:
        result.bucket_only += 1
    elif kind == INDEX_ONLY:
        result.index_only += 1
    else:
        result.changed += 1


def _drift(
    listing: Iterator[ObjectInfo],
    indexed: Iterator[tuple[str, Bookkeeping]],
    result: SyncResult,
    rewrite: bool = False,
) -> Iterator[tuple[str, str, Version | None, ObjectInfo | None]]:
    """Merge two key-ordered streams; yield (kind, key, version recorded in the index or None,
    the listed object or None) for every difference, and (IN_STEP, ...) for every other
    listed object, so each listed object is yielded once, in key order.

    With ``rewrite``, (MAGGMA, key, version, object) for objects in step whose entry came from
    maggma's metadata.
    """
    listing = in_key_order(listing, "store listing", "sync")
    indexed = in_key_order(indexed, "index", "sync")
    obj = next(listing, None)
    entry = next(indexed, None)
    while obj is not None or entry is not None:
        if entry is None or (obj is not None and obj.key < entry[0]):
            assert obj is not None
            result.listed += 1
            yield BUCKET_ONLY, obj.key, None, obj
            obj = next(listing, None)
        elif obj is None or entry[0] < obj.key:
            result.indexed += 1
            yield INDEX_ONLY, entry[0], entry[1].version, None
            entry = next(indexed, None)
        else:
            result.listed += 1
            result.indexed += 1
            if obj.etag != entry[1].etag or obj.size != entry[1].size:
                yield CHANGED, obj.key, entry[1].version, obj
            elif rewrite and entry[1].codec in maggma_format.CODECS:
                yield MAGGMA, obj.key, entry[1].version, obj
            else:
                yield IN_STEP, obj.key, entry[1].version, obj
            obj = next(listing, None)
            entry = next(indexed, None)


class _Applier:
    """Counts and applies drift in batches: HEAD and upsert for objects, delete for entries.

    An object with no entry or a changed one is drift only if it gives an entry: one not
    written by s3idx (nor maggma), or whose metadata cannot be decoded, is reported apart
    (``skipped``), as sync cannot adopt it; one a delete journaled is being deleted, neither.
    ``--check`` and ``--dry-run`` make the same HEADs (``writes`` False) so that they count
    exactly what sync would do. Writes are compare-and-set on the ETag the merge read
    (``_expected``); keys another writer moved meanwhile are reconciled.
    """

    def __init__(
        self,
        store: ObjectStore,
        index: Index,
        collector: EntryCollector,
        result: SyncResult,
        events: Events,
        writes: bool,
        workers: int,
        manifests: ManifestBatches | None = None,
    ) -> None:
        self._store = store
        self._manifests = manifests
        self._index = index
        self._collector = collector
        collector.foreign = []  # taken after each batch's HEADs (_foreign)
        self._result = result
        self._events = events
        self._writes = writes
        self._workers = workers
        self._adds: list[str] = []
        self._updates: list[str] = []
        self._rewrites: list[str] = []  # in step already: their entries change, not counted
        self._removes: dict[str, Version] = {}
        # The version the merge read, per key to write: what its compare-and-set expects.
        self._expected: dict[str, Version | None] = {}
        self._drifted: list[tuple[str, str]] = []  # in key order, counted once HEADs say
        self.bind: Callable[[], None] | None = None  # see run_sync and _check_binding
        self._gone: dict[str, Version] = {}  # index-only by the merge, until HEADs say
        # Changed keys listed with the very ETag their entry names: the size differs.
        self._size_only: set[str] = set()

    def add(
        self, kind: str, key: str, version: Version | None, listed: ObjectInfo | None = None
    ) -> None:
        if kind == BUCKET_ONLY:
            self._adds.append(key)
        elif kind == CHANGED:
            self._updates.append(key)
            if listed is not None and version is not None and listed.etag == version.etag:
                self._size_only.add(key)
        elif kind == MAGGMA:
            self._rewrites.append(key)
        else:
            assert version is not None
            self._gone[key] = version
        if kind != INDEX_ONLY:
            self._expected[key] = version
        if kind != MAGGMA:
            self._drifted.append((kind, key))
        reads = len(self._adds) + len(self._updates) + len(self._rewrites) + len(self._gone)
        if reads >= BATCH or len(self._drifted) >= BATCH:
            self.flush()

    def _confirm_gone(self) -> None:
        """Index-only keys are drift only once a HEAD finds no object: the listing is read
        ahead of the entries, so a put may have stored a key after the listing passed it and
        written its entry before the merge read it. Removing that entry would leave the
        document in the bucket with no entry. A key found holding another object than its
        entry describes is changed; the entry's own object, in step; one whose HEAD fails,
        left as it is (passed over as unavailable)."""
        kinds: dict[str, str] = {}
        for key, etag in self._collector.etags(list(self._gone)):
            recorded = self._gone[key]
            if etag is None:
                kinds[key] = INDEX_ONLY
                if self._result.prune and self._writes:
                    self._removes[key] = recorded
            elif etag != recorded.etag:
                kinds[key] = CHANGED
                self._updates.append(key)
                self._expected[key] = recorded
        self._drifted = [
            (kinds[key] if kind == INDEX_ONLY else kind, key)
            for kind, key in self._drifted
            if kind != INDEX_ONLY or key in kinds
        ]
        self._gone.clear()

    def flush(self) -> None:
        if self._gone:
            self._confirm_gone()
        keys = self._adds + self._updates + self._rewrites
        recovered: set[str] = set()
        conflicts: set[str] = set()
        replaced: dict[str, Version | None] = {}
        if keys:
            # Read before the HEADs: a delete journals a key before it removes anything.
            journaled = self._index.journaled(keys)
            entries = list(self._collector.entries(keys))
            # An entry whose object another tool replaced: its document is gone from the bucket.
            foreign = self._foreign()
            replaced = {k: self._expected[k] for k in self._updates if k in foreign}
            if self._manifests is not None:
                # What the HEADs saw, in a manifest before the entries (as put does).
                self._manifests.flush()
            key_field = self._collector.key_field
            if entries:
                assert key_field is not None  # set by the collector with its first entry
                entries = [
                    e
                    for e in entries
                    if not _being_deleted(e, key_field, journaled)
                    and not self._in_step(e[key_field], e)
                ]
                recovered = {e[key_field] for e in entries}
            if entries and self._writes:
                assert key_field is not None
                self._index.configure(key_field, self._collector.fields)
                self._check_binding()  # with the settings, before the entries: see run_sync
                expected = {k: self._expected.get(k) for k in recovered}
                conflicts = self._index.upsert_if(entries, expected)
                self._mark_pending()
            if self._writes:
                written = recovered - conflicts
                self._result.added += sum(1 for k in self._adds if k in written)
                self._result.updated += sum(1 for k in self._updates if k in written)
            self._adds.clear()
            self._updates.clear()
            self._rewrites.clear()
            self._expected.clear()
            self._size_only.clear()
        for kind, key in self._drifted:
            if kind == CHANGED and key in replaced:
                kind = INDEX_ONLY
            if kind == INDEX_ONLY or key in recovered:
                _count(self._result, kind)
                self._events.drift(kind, key)
        self._drifted.clear()
        if self._result.prune and self._writes:
            self._removes.update({k: v for k, v in replaced.items() if v is not None})
        if self._removes:
            self._check_binding()
            removed, stale = self._index.delete_if(self._removes)
            self._result.removed += removed
            conflicts |= stale
            self._removes.clear()
        if conflicts:
            self._reconcile(conflicts)

    def _check_binding(self) -> None:
        """Before each batch of writes, not only the first: another store's writer may bind
        the index after this sync found it new (or rebuild-index re-point it) while the
        listing is read. The merge then takes that store's entries for index-only ones:
        removing them, or adding this store's beside them, would mix two stores."""
        if self.bind is not None:
            self.bind()

    def _in_step(self, key: str, entry: Entry) -> bool:
        """A changed key whose HEAD found the very object its entry describes: the listing
        was read before a writer replaced both. Not drift; nothing to write. Not when the
        listing named that object already: then the entry's size differed."""
        if key in self._size_only:
            # Listed with the ETag its entry names: no writer came between, the entry's size
            # is wrong (an ETag is of the bytes, their size included).
            return False
        read = self._expected.get(key)
        return read is not None and entry[RESERVED_FIELD]["etag"] == read.etag

    def _foreign(self) -> set[str]:
        """The keys the last HEADs found holding objects not written by s3idx."""
        foreign = set(self._collector.foreign or ())
        self._collector.foreign = []
        return foreign

    def _reconcile(self, keys: set[str]) -> None:
        key_field = self._collector.key_field
        if key_field is None:  # no entry recovered: nothing was written, nothing conflicts
            return
        outcome = reconcile(
            self._store, self._index, sorted(keys), key_field=key_field, workers=self._workers
        )
        self._result.reconciled += len(keys) - outcome.gave_up
        self._result.add_contended(outcome.left)

    def _mark_pending(self) -> None:
        """Entries adopted without a recorded field make it pending until reindex runs."""
        lacking = [(f, n) for f, n in self._collector.lacking.items() if n]
        if not lacking:
            return
        self._index.mark_pending(lacking)
        for name, count in lacking:
            self._result.pending_fields[name] = self._result.pending_fields.get(name, 0) + count
        self._collector.lacking = {}


def _being_deleted(entry: Entry, key_field: str, journaled: dict[str, str]) -> bool:
    """A delete journaled this very object: adopting it would bring a deleted document back."""
    etag: str = entry[RESERVED_FIELD]["etag"]
    return journaled.get(entry[key_field]) == etag


def _refuse_emptying(store: ObjectStore, index: Index) -> None:
    """An empty listing over a full index is far likelier a wrong --store than a wish."""
    existing = indexed_entries(index)
    if existing:
        raise UsageError(  # a wrong --store, far likelier than a wish
            f"the store {redact_location(store.location)} lists no objects; refusing to remove "
            f"{'the' if existing == 1 else 'all'} "
            f"{plural(existing, 'index entry', 'index entries')}",
            hint="check --store (and --endpoint-url); to keep entries use --no-prune",
        )
