"""``rebuild-index``: a fresh index from object metadata alone, swapped in at the end.

The store is listed in key order and read in batches; after each batch the new entries and a
checkpoint (the last key of the batch, and the counts so far) are saved beside the new index, so
``--resume`` lists from there instead of starting over. Until the final swap the old index is
untouched; a failed or interrupted rebuild leaves it as it was.

Objects written by maggma's S3Store are indexed from their metadata too; with a rewriter
(``--rewrite``) each is first rewritten into the s3idx format, so the entry that goes into the
new index is the rewritten object's.

Other writers may run meanwhile. Deletes a crash interrupted are finished first. While the
rebuild runs, the live index logs every key written (``start_rebuild`` sets the flag; see
``IndexRebuild.changed_keys``). After the listing pass, those keys (and any a delete journaled)
are HEADed again and the staging index gets what the bucket holds now; after the swap, the same
keys are reconciled on the live index, which catches writes that landed during the swap itself;
then ``finish`` ends the log.

Other tools write to the bucket without the log. A resumed rebuild, and the shard that swaps a
sharded one, list again the part listed before (by the interrupted run, or by every shard) and
make its staged entries agree with the bucket before the catch-up (``_Recheck``): entries of
objects gone are dropped, objects changed or new there are read again.

Manifests (``engine/manifest.py``) spare most HEADs: every manifest is read into a temporary
table first (``ManifestIndex``), and a listed object whose latest manifest line vouches for it
(same ETag, not stored since) takes its entry from that line; every other object is HEADed.
A finished rebuild that started from the beginning then leaves compacted manifests of what it
found (``CompactionWriter``) in place of the ones it read. ``manifests=False`` HEADs every object
and neither reads nor writes manifests.

Sharded (``shard=I/N``): every shard lists the whole store but keeps only its own keys (and only
their manifest lines), writing them into one staging index shared by all N shards, with a
checkpoint of its own. A shard that finished records itself done; the one that then finds every
shard done claims the swap (``IndexRebuild.claim_swap``, atomic in the index) and does the end
above for all of them: catch-up of the change log the first shard started, the swap with the
key field, fields and pending fields merged from every shard's checkpoint, reconcile, finish.
The other shards return without swapping. A sharded rebuild does not compact manifests (each
shard knows only its own keys).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import takewhile
from typing import Any

from s3idx.config import DEFAULT_KEY_FIELD, redact_location
from s3idx.engine.collector import EntryCollector
from s3idx.engine.concurrency import prefetched, worker_pool
from s3idx.engine.delete import finish_deletes
from s3idx.engine.manifest import CompactionWriter, ManifestLine, list_manifests
from s3idx.engine.manifest_index import ManifestIndex
from s3idx.engine.metadata_entry import Recovered, Rewriter, recover_entry
from s3idx.engine.probe import in_key_order, indexed_entries, probe_key_field
from s3idx.engine.reconcile import observe, reconcile
from s3idx.engine.results import (
    Events,
    MaggmaObjects,
    RebuildResult,
    Skipped,
    accounted,
    reported_on_failure,
    started,
)
from s3idx.errors import (
    DamagedIndexError,
    IndexSettingsError,
    NotAnS3idxObjectError,
    S3idxError,
    UndecodableMetadataError,
    UsageError,
)
from s3idx.index.base import Bookkeeping, Entry, Index, IndexRebuild, IndexSettings
from s3idx.limits import batched
from s3idx.sharding import Shard
from s3idx.store.base import ObjectHead, ObjectInfo, ObjectStore
from s3idx.text import plural

LIST_BATCH = 1000


@accounted
def run_rebuild(
    store: ObjectStore,
    index: Index,
    *,
    workers: int,
    key_field: str | None = None,
    resume: bool = False,
    rewriter: Rewriter | None = None,
    events: Events | None = None,
    stop: threading.Event | None = None,
    manifests: bool = True,
    shard: Shard | None = None,
    restart: bool = False,
    store_binding: str | None = None,
) -> RebuildResult:
    """``store_binding``: what the swapped-in index records as the store it describes
    (``Engine.store_binding``); None records none."""
    events = events or Events()
    if shard is not None and shard.count == 1:
        shard = None  # one shard of one is the whole store: a plain rebuild
    requests_before = _requests(store)
    with ExitStack() as stack:
        joined: ManifestIndex | None = None
        replaced: list[ObjectInfo] = []
        if manifests:
            # Before anything else, so the probe for the key field needs no HEAD either, and
            # compaction replaces only manifests that existed when the run started.
            replaced = list_manifests(store)
            joined = stack.enter_context(
                ManifestIndex.load(
                    store,
                    replaced,
                    on_damaged=lambda key, why: events.warned(f"manifest {key} not used: {why}"),
                    workers=workers,
                    owns=None if shard is None else shard.owns,
                )
            )
        result = _run(
            store,
            index,
            workers,
            key_field,
            _Options(resume, restart, shard, rewriter, store_binding),
            events,
            stop,
            joined,
            replaced,
        )
    result.requests = _requests(store) - requests_before
    return result


@dataclass(frozen=True, slots=True)
class _Options:
    resume: bool
    restart: bool
    shard: Shard | None
    rewriter: Rewriter | None
    store_binding: str | None


def _run(
    store: ObjectStore,
    index: Index,
    workers: int,
    key_field: str | None,
    options: _Options,
    events: Events,
    stop: threading.Event | None,
    joined: ManifestIndex | None,
    replaced: list[ObjectInfo],
) -> RebuildResult:
    resume, shard = options.resume, options.shard
    found_key, fields = _first_entry_settings(store, index, key_field, joined)
    key_field = key_field or found_key
    deletes_finished = _finish_deletes(store, index, events)
    rebuild = index.start_rebuild(
        key_field, fields, resume=resume, shard=shard, restart=options.restart
    )
    # Deletes under way before the change log started: their keys are not in it.
    journaled = set(index.journaled())
    checkpoint = rebuild.checkpoint() if resume else None
    result = _restore(checkpoint, key_field)
    recheck = _done_before(rebuild, result, shard)
    result.shard = None if shard is None else str(shard)
    result.deletes_finished = deletes_finished
    # A shard resumed after it finished its part only has the swap left to try.
    listed_all = shard is not None and resume and shard.index in rebuild.shards_done()
    compaction = None
    if joined is not None:
        result.manifests_read = joined.manifests_read
        # Only a rebuild that lists everything knows every line: a resumed or sharded one
        # compacts nothing.
        if not result.resumed and shard is None:
            compaction = _Compaction(store, replaced, events)
    with worker_pool(workers, "s3idx-head") as pool:
        collector = EntryCollector(
            store,
            pool,
            workers,
            key_field,
            result.skipped,
            on_skip=events.skipped,
            maggma=result.maggma,
            rewriter=options.rewriter,
        )
        collector.fields = list(result.fields)
        collector.lacking = dict(result.pending_fields)
        collector.accepted = result.written
        if compaction is not None:
            collector.on_object = compaction.record
        start_after = checkpoint.get("listed_through") if checkpoint else None
        with reported_on_failure(result):
            listing = () if listed_all else prefetched(store.list_objects(start_after=start_after))
            for batch in batched(listing, LIST_BATCH):
                if compaction is not None:
                    compaction.listed(batch)
                own = batch if shard is None else [o for o in batch if shard.owns(o.key)]
                result.other_shards += len(batch) - len(own)
                _rebuild_batch(rebuild, collector, own, result, joined, batch[-1].key)
                events.progress(result.listed, None, {"written": result.written})
                if stop is not None and stop.is_set():
                    result.interrupted = True
                    break
            if not result.interrupted and shard is None:
                result.swapped = True
                result.total_written = result.written
            elif not result.interrupted and shard is not None:
                _shard_finished(rebuild, shard, result)
            if not result.interrupted and result.swapped and recheck is not None:
                _Recheck(store, rebuild, result, events, pool, workers, options.rewriter).run(
                    recheck.through, joined, stop
                )
            if not result.interrupted and result.swapped:
                journaled.update(index.journaled())
                changed = journaled.union(rebuild.changed_keys())
                _catch_up(store, index, rebuild, changed, result, pool, workers)
                result.changed_meanwhile = len(changed)
        result.heads += collector.heads
    if not result.interrupted and result.swapped:
        try:
            _refuse_empty_replacement(store, index, result)
        except S3idxError:
            rebuild.abort()
            raise
        pending = tuple((f, n) for f, n in result.pending_fields.items() if n)
        settings = IndexSettings(result.key_field, tuple(result.fields), pending)
        rebuild.commit(settings, store=options.store_binding)
        result.committed = True
        result.total_entries = index.count()
        with reported_on_failure(result):
            # Writes that landed in the old index while it was being replaced are in the log.
            logged = list(rebuild.changed_keys())
            outcome = reconcile(store, index, logged, key_field=result.key_field, workers=workers)
            result.add_contended(outcome.left)
            rebuild.finish()
            result.total_entries = index.count()  # after the writes reconcile caught up with
            if compaction is not None:
                compaction.finish()
                result.manifests_written = compaction.writer.written
                result.manifests_removed = compaction.writer.removed
    return result


@dataclass(frozen=True, slots=True)
class _DoneBefore:
    """The part of the staging index filled before this run: keys up to ``through`` (None:
    every key)."""

    through: str | None


def _done_before(
    rebuild: IndexRebuild, result: RebuildResult, shard: Shard | None
) -> _DoneBefore | None:
    """What the swap must list again, as other tools may have changed it since it was listed
    (their writes are in no change log): for a sharded rebuild, everything (the other shards
    listed their parts at other times; only the one that swaps does it); for a resumed one,
    the keys up to its checkpoint, or up to the last key staged if a batch was staged but not
    checkpointed (a crash in between); for a rebuild started afresh, nothing."""
    if shard is not None:
        return _DoneBefore(None)
    if not result.resumed:
        return None
    through = max(
        (k for k in (result.listed_through, rebuild.last_key()) if k is not None), default=None
    )
    return None if through is None else _DoneBefore(through)


class _Recheck:
    """Lists the part done before again and makes its staged entries agree with the bucket.

    A merge of the listing with the staged entries, both in key order, as ``sync``'s: an entry
    whose object is gone is dropped; an object whose ETag or size differs from its entry's is
    read again (a manifest line that vouches for it, else a HEAD) and its entry replaced, or
    dropped if it gives none now (foreign, undecodable: counted and reported as skipped); an
    object with no entry is read too and gets one if it gives one (new since; one that gives
    none is not counted again: the run that listed it first counted it). Entries written by
    s3idx meanwhile are read again by the catch-up after this, as ever.
    """

    def __init__(
        self,
        store: ObjectStore,
        rebuild: IndexRebuild,
        result: RebuildResult,
        events: Events,
        pool: ThreadPoolExecutor,
        workers: int,
        rewriter: Rewriter | None,
    ) -> None:
        self._store = store
        self._rebuild = rebuild
        self._result = result
        self._events = events
        self._reported: set[str] = set()
        self._collector = EntryCollector(
            store,
            pool,
            workers,
            result.key_field,
            result.skipped,
            on_skip=self._skipped,
            maggma=result.maggma,
            rewriter=rewriter,
        )
        self._collector.fields = list(result.fields)
        self._collector.lacking = dict(result.pending_fields)
        self._collector.accepted = result.total_written

    def _skipped(self, key: str, reason: str) -> None:
        if key in self._reported:
            self._events.skipped(key, reason)

    def run(
        self, through: str | None, joined: ManifestIndex | None, stop: threading.Event | None
    ) -> None:
        result = self._result
        listing = prefetched(self._store.list_objects())
        recorded = self._rebuild.iter_bookkeeping()
        listed: Iterator[ObjectInfo] = listing
        staged: Iterator[tuple[str, Bookkeeping]] = recorded
        if through is not None:
            listed = takewhile(lambda o: o.key <= through, listed)
            staged = takewhile(lambda r: r[0] <= through, staged)
        try:
            for chunk in batched(_merged(listed, staged), LIST_BATCH):
                self._chunk(chunk, joined)
                self._events.progress(
                    result.listed, None, {"written": result.written, "rechecked": result.rechecked}
                )
                if stop is not None and stop.is_set():
                    result.interrupted = True
                    break
        finally:
            for stream in (listing, recorded):  # a listing stopped early stops its reader
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
        result.heads += self._collector.heads
        result.fields = list(self._collector.fields)
        result.pending_fields = {f: n for f, n in self._collector.lacking.items() if n}

    def _chunk(
        self,
        chunk: list[tuple[str, Bookkeeping | None, ObjectInfo | None]],
        joined: ManifestIndex | None,
    ) -> None:
        result = self._result
        result.rechecked += sum(obj is not None for _, _, obj in chunk)
        gone = [key for key, _, obj in chunk if obj is None]
        changed = [
            obj
            for _, was, obj in chunk
            if obj is not None and was is not None and (obj.etag, obj.size) != (was.etag, was.size)
        ]
        new = [obj for _, was, obj in chunk if obj is not None and was is None]
        if not (gone or changed or new):
            return
        # Dropped first, written again below: a crash in between leaves them new objects,
        # which a resume reads again.
        self._rebuild.delete(gone + [o.key for o in changed])
        self._reported = {o.key for o in changed}
        kept = self._entries(changed, joined)
        self._reported = set()
        collector, counted = self._collector, self._collector.skipped
        collector.skipped = Skipped()  # already counted by the run that listed them first
        try:
            added = self._entries(new, joined)
        finally:
            collector.skipped = counted
        self._rebuild.upsert(kept + added)
        dropped = len(gone) + len(changed) - len(kept)
        result.recheck_dropped += dropped
        result.recheck_refreshed += len(kept) + len(added)
        result.total_written += len(added) - dropped

    def _entries(self, objects: list[ObjectInfo], joined: ManifestIndex | None) -> list[Entry]:
        vouched: dict[str, ObjectHead] = {}
        if joined is not None and objects:
            vouched, _ = joined.vouch(objects)
            key_field = self._collector.key_field
            vouched = {k: h for k, h in vouched.items() if _gives_entry(h, key_field)}
            self._result.from_manifests += len(vouched)
        return list(self._collector.entries((o.key for o in objects), vouched))


def _merged(
    listing: Iterator[ObjectInfo], staged: Iterator[tuple[str, Bookkeeping]]
) -> Iterator[tuple[str, Bookkeeping | None, ObjectInfo | None]]:
    """(key, its staged bookkeeping or None, its listed object or None) for every key of
    either stream, in key order; a stream out of key order is an error, not a wrong drop."""
    listing = in_key_order(listing, "store listing", "rebuild-index")
    staged = in_key_order(staged, "rebuilt index", "rebuild-index")
    obj = next(listing, None)
    entry = next(staged, None)
    while obj is not None or entry is not None:
        if entry is None or (obj is not None and obj.key < entry[0]):
            assert obj is not None
            yield obj.key, None, obj
            obj = next(listing, None)
        elif obj is None or entry[0] < obj.key:
            yield entry[0], entry[1], None
            entry = next(staged, None)
        else:
            yield obj.key, entry[1], obj
            obj = next(listing, None)
            entry = next(staged, None)


def _finish_deletes(store: ObjectStore, index: Index, events: Events) -> int:
    """Finish the deletes under way, unless the index is too damaged to say which: the
    rebuild replaces it from the bucket (``start_rebuild`` makes damaged tables anew), and the
    objects of deletes it cannot finish are still in the bucket, so they are indexed.
    Returns how many objects this run removed (``RebuildResult.deletes_finished``)."""
    removed = 0

    def count() -> None:
        nonlocal removed
        removed += 1

    try:
        finish_deletes(store, index, removed=count)
    except DamagedIndexError as exc:
        events.warned(
            f"{exc.message}; the deletes under way were not finished, the rebuild "
            "replaces the index from the bucket"
        )
    return removed


def _shard_finished(rebuild: IndexRebuild, shard: Shard, result: RebuildResult) -> None:
    """Record this shard done, and claim the swap if it is the last: then ``result`` takes the
    settings merged from every shard (the swap commits them for the whole index)."""
    # Saved again even when nothing was listed (an empty store): the merge needs every shard's.
    rebuild.save_checkpoint(_checkpoint(result, result.listed_through or ""))
    rebuild.shard_done(shard.index)
    result.swapped = rebuild.claim_swap()
    result.shards_done = sorted(rebuild.shards_done())
    if result.swapped:
        _merge_shards(result, rebuild.shard_checkpoints(), shard.count)


def _merge_shards(result: RebuildResult, found: dict[int, dict[str, Any]], count: int) -> None:
    """The key field, fields and pending fields of the whole index, from every shard's last
    checkpoint: a field a shard never met is lacking from all of that shard's entries."""
    missing = sorted(set(range(count)) - set(found))
    key_fields = {c["key_field"] for c in found.values()}
    if missing or len(key_fields) > 1:
        raise IndexSettingsError(
            f"the shards disagree or left no record (shards without a checkpoint: "
            f"{missing or 'none'}; key fields: {sorted(key_fields)}); not swapping",
            hint="run rebuild-index --restart with --shard for every shard",
        )
    fields: list[str] = []
    for number in sorted(found):
        fields.extend(f for f in found[number]["fields"] if f not in fields)
    pending: dict[str, int] = {}
    for path in fields:
        lacking = sum(
            c.get("pending_fields", {}).get(path, 0) if path in c["fields"] else c["written"]
            for c in found.values()
        )
        if lacking:
            pending[path] = lacking
    result.key_field = key_fields.pop()
    result.fields = fields
    result.pending_fields = pending
    result.total_written = sum(int(c["written"]) for c in found.values())


def _rebuild_batch(
    rebuild: Any,
    collector: EntryCollector,
    batch: list[ObjectInfo],
    result: RebuildResult,
    joined: ManifestIndex | None = None,
    listed_through: str | None = None,
) -> None:
    keys = [o.key for o in batch]
    done = rebuild.has_keys(keys) if result.resumed else set()
    todo = [o for o in batch if o.key not in done]
    vouched: dict[str, ObjectHead] = {}
    if joined is not None:
        vouched, _ = joined.vouch(todo)
        vouched = {k: h for k, h in vouched.items() if _gives_entry(h, collector.key_field)}
        result.from_manifests += len(vouched)
    entries = list(collector.entries((o.key for o in todo), vouched))
    rebuild.upsert(entries)
    result.listed += len(keys)
    result.written += len(entries)
    result.key_field = collector.key_field or result.key_field
    result.fields = list(collector.fields)
    result.pending_fields = {f: n for f, n in collector.lacking.items() if n}
    result.listed_through = listed_through or keys[-1]
    rebuild.save_checkpoint(_checkpoint(result, result.listed_through))


def _gives_entry(head: ObjectHead, key_field: str | None) -> bool:
    """Whether a manifest line's s3idx metadata can be decoded. A line whose cannot is a claim
    that would drop a sound object from the index (a damaged line): the object itself is
    asked instead (a HEAD), as for every line that does not vouch. A line without s3idx
    metadata stands: compaction records foreign objects so, to spare their HEADs."""
    try:
        recover_entry(head, key_field)
    except NotAnS3idxObjectError:
        return True
    except UndecodableMetadataError:
        return False
    return True


class _Compaction:
    """The lines a compacted manifest gets: each object this run HEADed or took from a manifest,
    with the listing's LastModified, in key order."""

    def __init__(self, store: ObjectStore, replaced: list[ObjectInfo], events: Events) -> None:
        # A store that refuses the write (read-only credentials) must not fail the rebuild,
        # which has all it needs without it.
        self.writer = CompactionWriter(
            store,
            on_failure=lambda exc: events.warned(f"compacted manifests not written: {exc.message}"),
        )
        self._replaced = replaced
        self._listed: dict[str, ObjectInfo] = {}

    def listed(self, batch: list[ObjectInfo]) -> None:
        self._listed = {o.key: o for o in batch}

    def record(self, head: ObjectHead, recovered: Recovered | None) -> None:
        info = self._listed.get(head.key)
        if info is None or (recovered is not None and recovered.rewritten):
            # A rewritten object has a new ETag, which the rewrite's own manifest records.
            return
        line = ManifestLine(head.key, head.etag, head.size, head.metadata, info.last_modified)
        self.writer.add(line)

    def finish(self) -> None:
        self.writer.finish(self._replaced)


def _requests(store: ObjectStore) -> int:
    return store.requests.value


def _catch_up(
    store: ObjectStore,
    index: Index,
    rebuild: IndexRebuild,
    keys: Iterable[str],
    result: RebuildResult,
    pool: ThreadPoolExecutor,
    workers: int,
) -> None:
    """Give the staging index what the bucket holds now for keys written since the listing."""
    for batch in batched(sorted(keys), LIST_BATCH):
        # The journal before the HEADs, as reconcile reads them: an object a delete journaled
        # is being deleted and gets no entry.
        truth = observe(store, batch, result.key_field, pool, workers, index.journaled(batch))
        found = [r for r in truth.values() if r is not None]
        rebuild.upsert([r.entry for r in found])
        rebuild.delete([k for k, r in truth.items() if r is None])
        for path in sorted({p for r in found for p in r.fields} - set(result.fields)):
            # Added by a put while the rebuild ran: entries listed before may lack it.
            result.fields.append(path)
            result.pending_fields[path] = result.total_written


def _checkpoint(result: RebuildResult, listed_through: str) -> dict[str, Any]:
    data = result.as_dict()
    for name in (
        "shard",
        "shards_done",
        "swapped",
        "total_written",
        "total_entries",
        "rechecked",
        "recheck_dropped",
        "recheck_refreshed",
    ):
        del data[name]  # the run's own, not the shard's progress
    data["listed_through"] = listed_through
    return data


def _restore(checkpoint: dict[str, Any] | None, key_field: str) -> RebuildResult:
    result = started(RebuildResult(key_field=key_field))
    if not checkpoint:
        return result
    result.resumed = True
    result.listed = result.listed_before = checkpoint["listed"]
    result.written = checkpoint["written"]
    result.other_shards = checkpoint.get("other_shards", 0)
    result.listed_through = checkpoint.get("listed_through") or None
    result.key_field = checkpoint["key_field"]
    result.fields = list(checkpoint["fields"])
    # A checkpoint written before pending fields were counted has none.
    result.pending_fields = dict(checkpoint.get("pending_fields", {}))
    skipped = result.skipped
    skipped.not_s3idx = checkpoint["not_s3idx"]
    skipped.not_s3idx_keys = list(checkpoint["not_s3idx_keys"])
    skipped.undecodable = checkpoint["undecodable"]
    skipped.undecodable_keys = [(d["key"], d["reason"]) for d in checkpoint["undecodable_keys"]]
    skipped.vanished = checkpoint["vanished"]
    result.maggma = MaggmaObjects.from_dict(checkpoint)
    return result


def _first_entry_settings(
    store: ObjectStore, index: Index, key_field: str | None, joined: ManifestIndex | None = None
) -> tuple[str, tuple[str, ...]]:
    """The key field and fields the store's objects were written with: the first one says.

    The bucket is the truth, so it is asked before the index; a store with no object giving an
    entry among its first keys falls back on the index's settings, then on the default.
    """
    first = probe_key_field(store, key_field, known=joined.vouched_head if joined else None)
    if first is not None:
        if key_field is not None and first.key_field != key_field:
            # Every object would be skipped one by one; one message before any work says it.
            raise IndexSettingsError(
                f"the store's objects were written with key field {first.key_field!r}, "
                f"not {key_field!r}",
                # The key may come from S3IDX_KEY or the config file: --key overrides both.
                hint=f"run rebuild-index with --key {first.key_field}, or with no key field "
                "given (no --key, S3IDX_KEY or key in the config file)",
            )
        return first.key_field, first.fields
    settings = index.settings()
    return (settings.key_field, settings.fields) if settings else (DEFAULT_KEY_FIELD, ())


def _refuse_empty_replacement(store: ObjectStore, index: Index, result: RebuildResult) -> None:
    """An empty listing over a full index is far likelier a wrong --store than a wish."""
    if result.total_written:
        return
    existing = indexed_entries(index)
    if existing:
        raise UsageError(  # a wrong --store, far likelier than a wish
            f"the store {redact_location(store.location)} gave no s3idx objects; "
            f"refusing to replace an index of {plural(existing, 'entry', 'entries')} "
            "with an empty one",
            hint="check --store (and --endpoint-url); to empty the index, delete its file or "
            "collection",
        )
