"""``put``: stream records in, upload objects with worker threads, write index entries in bulk.

Order of writes: an index entry is written only after its object was stored, so the index never
points at an object that does not exist. Entries are written in batches, of ``--batch-size`` or
whatever is pending once the oldest entry waited ``INDEX_FLUSH_SECONDS`` (slow input, as from
``tail -f``, must not leave stored objects unindexed for long); when the run stops for any reason,
the entries of every object already stored are written before it returns.

Writers in other processes may write the same keys at once. Each entry is written by
compare-and-set: only if the index still records the ETag it recorded before the object's upload
(read per chunk, one batched read). A key whose entry moved meanwhile is reconciled with the
object the bucket now holds (``s3idx.engine.reconcile``), so the index ends describing the last
object written, whichever process wrote it.

A key that already has an entry is journaled before its upload (``index.journal_puts``: one
write per batch, none for a batch of new keys) and its record cleared after its entry is
written: a run killed in between leaves the record, which tells that the entry may describe
the version the bucket no longer holds (``s3idx.engine.put_journal``).

A key a ``delete`` is removing waits for that delete to end before its upload
(``_read_after_deletes``): the delete's ``If-Match`` cannot tell its object from the same bytes
stored again, and would remove the upload under the entry written for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from s3idx import codec
from s3idx.config import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS
from s3idx.engine.delete import DeletesUnderWay
from s3idx.engine.documents import DocumentPreparer, Prepared
from s3idx.engine.gcpause import CollectorPause
from s3idx.engine.inputs import ReadProgress, Record
from s3idx.engine.manifest import ManifestLine
from s3idx.engine.manifest_batches import ManifestBatches
from s3idx.engine.put_journal import Heartbeat
from s3idx.engine.reconcile import reconcile
from s3idx.engine.results import (
    NOT_SENT,
    NOT_UPLOADED,
    Events,
    PutResult,
    Reject,
    accounted,
    reported_on_failure,
    started,
)
from s3idx.engine.seen import SeenKeys
from s3idx.errors import RecordError, S3idxError, TransientError, reject_reason
from s3idx.index.base import Bookkeeping, Entry, Index, PutIntent, Version, with_bookkeeping
from s3idx.liveness import tagged
from s3idx.sharding import Shard
from s3idx.store.base import ObjectStore, PutReceipt

if TYPE_CHECKING:
    from s3idx.engine.loop_uploads import LoopUploads

# Entries of stored objects wait at most about this long for their batch to fill.
INDEX_FLUSH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class PutOptions:
    key_field: str
    fields: tuple[str, ...]
    codec: str = "json+zlib"
    workers: int = DEFAULT_WORKERS
    batch_size: int = DEFAULT_BATCH_SIZE
    skip_unchanged: bool = False
    dry_run: bool = False
    max_errors: int | None = None
    # The entry's last_updated is the document's own (a datetime) instead of the time of
    # storing: maggma's stores keep the last_updated their builders set (s3idx.maggma).
    last_updated_from_document: bool = False


class _Outcome:
    """A finished upload, as handed from a worker thread to the main thread."""

    __slots__ = ("error", "prepared", "receipt_entry")

    def __init__(self, prepared: Prepared, entry: Entry | None, error: BaseException | None):
        self.prepared = prepared
        self.receipt_entry = entry
        self.error = error


class UploadPipeline:
    """Bounded concurrent uploads; completed entries collected and written in batches.

    Only the main thread touches the index and the bookkeeping here (but for the heartbeat of
    the run's put journal records, ``put_journal.Heartbeat``); workers only compress and
    upload, and hand their outcome back through a queue.
    """

    def __init__(
        self,
        store: ObjectStore,
        index: Index,
        options: PutOptions,
        result: PutResult,
        on_reject: Callable[[Record, str], None],
        on_progress: Callable[[], None] = lambda: None,
        on_warning: Callable[[str], None] = lambda message: None,
        check_binding: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._index = index
        # Before each batch of entries: the index may have been re-pointed to another store
        # (rebuild-index) since the run began (``Engine.check_store_binding``).
        self._check_binding = check_binding
        self._options = options
        self._result = result
        self._on_reject = on_reject
        self._on_progress = on_progress  # while the main thread waits, uploads still finish
        self._on_warning = on_warning
        self._deletes = DeletesUnderWay(store, index, on_warning)
        # Set by the worker whose upload failed for good, before the main thread hears of it:
        # the other workers then start no more uploads (a silent endpoint costs the uploads
        # under way their deadlines, once, not one round of deadlines per batch of workers).
        self._failing = False
        # The first upload failure a worker met (not a record's): what the run will fail with.
        self._failure: BaseException | None = None
        self._workers = self._uploads(store, options.workers)
        self._inflight: set[str] = set()
        self._pending: list[Entry] = []
        # The version (ETag and stamp) the index recorded for each key in flight or pending,
        # read before its upload (None: no entry): what the entry's compare-and-set expects.
        self._expected: dict[str, Version | None] = {}
        self._pending_since = 0.0  # when the oldest pending entry came
        # This run's name in the put journal, and the records to clear at the next flush of
        # keys whose upload never happened (refused or cancelled): their entry stays true.
        self.run = tagged(uuid.uuid4().hex)
        self._unjournal: dict[str, str] = {}
        # Keys named as not stored: a key whose earlier upload failed the run and whose later
        # line was then never submitted is one key to name, once.
        self._named_unstored: set[str] = set()
        # Keys with a record of this run now; while there are any, the heartbeat refreshes
        # them, so that a sync leaves a live run's records alone.
        self._journaled: set[str] = set()
        self._heartbeat = Heartbeat(index, self.run)
        self._max_inflight = options.workers * 2
        # Once full, the main thread waits for this many uploads to finish, not one: one
        # wake-up hands it several outcomes and frees as many places.
        self._refill = max(1, options.workers // 2)
        self.fatal: BaseException | None = None
        # A manifest per batch of stored objects, not per index flush (once a second on a slow
        # endpoint): a rebuild reads each one.
        self._manifests = ManifestBatches(store, on_warning, min_lines=options.batch_size)

    # --- main thread -------------------------------------------------------------------------

    def journal(self, replaced: Mapping[str, str]) -> None:
        """Journal the keys (with the ETags of their entries) that uploads will replace."""
        if replaced:
            self._index.journal_puts(replaced, self.run)
            self._journaled.update(replaced)
            self._heartbeat.holding = True
            self._heartbeat.start()

    def unjournal(self, replaced: Mapping[str, str]) -> None:
        """Journaled keys that will not be uploaded after all: cleared at the next flush."""
        self._unjournal.update(replaced)

    def submit(self, prepared: Prepared, expected: Version | None) -> bool:
        """Upload in a worker; ``expected`` is the key's version in the index read before.
        False: not submitted (the run already failed)."""
        # The same key again must not overtake its earlier upload: last in the input wins.
        while prepared.key in self._inflight:
            self._collect(block=True)
        if len(self._inflight) >= self._max_inflight:
            while len(self._inflight) > self._max_inflight - self._refill:
                self._collect(
                    block=True, wait_for=len(self._inflight) - self._max_inflight + self._refill
                )
        else:
            self._collect(block=False)
        if self.fatal is not None:
            return False
        self._inflight.add(prepared.key)
        self._expected[prepared.key] = expected
        self._workers.submit(prepared)
        return True

    def poll(self) -> None:
        """Take finished uploads and write their entries if they waited long enough.

        Called when the input is idle, so entries do not wait for more input to come.
        """
        self._collect(block=False)
        self._flush_if_due()

    def wait_for(self, keys: Iterable[str]) -> None:
        for key in keys:
            while key in self._inflight:
                self._collect(block=True)

    def settle(self, keys: Sequence[str]) -> None:
        """Let this run's own writes of ``keys`` reach the index, so that reading the index
        now gives what a new upload of them replaces (else its CAS would fail on our own
        entry and cost a reconcile)."""
        mine = [k for k in keys if k in self._expected]
        if mine:
            self.wait_for(mine)
            self.flush()

    def await_deletes(self, keys: Sequence[str]) -> bool:
        """Let deletes of ``keys`` under way end before their uploads (``DeletesUnderWay``).
        True when any key was journaled."""
        return self._deletes.await_for(keys)

    def unlike_finished_deletes(self, batch: list[Prepared]) -> list[Prepared]:
        """``batch``, each document of a key whose stalled delete this run finished stored so
        that its object's ETag is not the one that delete's If-Match names (``_unlike``)."""
        finished = self._deletes.finished
        if not finished:
            return batch
        codec_name = self._options.codec
        return [_unlike(p, finished[p.key], codec_name) if p.key in finished else p for p in batch]

    def flush(self) -> None:
        """Write the entries of every completed upload to the index."""
        if not self._pending:
            self._clear_journal({})
            return
        key_field = self._options.key_field
        entries = list({e[key_field]: e for e in self._pending}.values())
        count = len(self._pending)
        expected = {e[key_field]: self._expected.pop(e[key_field], None) for e in entries}
        self._pending.clear()
        try:
            # After the objects, before their entries: a manifest never names an unstored
            # object. Inside the try: an interrupt here still counts the batch not indexed.
            self._write_manifest()
            self._check_binding()
            conflicts = self._index.upsert_if(entries, expected)
        except BaseException:
            self._result.not_indexed += count
            raise
        if conflicts:
            self._reconcile(conflicts)
        # Only now: each entry describes this run's object, or reconcile found a later one.
        self._clear_journal({k: v.etag for k, v in expected.items() if v is not None})
        self._mark_fields_lacking(len(entries))

    def _mark_fields_lacking(self, written: int) -> None:
        """The entries just written lack every field recorded after this run read the index's
        fields (a ``reindex --field`` began meanwhile, and may have passed their keys already):
        such a field is marked pending for them, so that queries on it wait for ``reindex``
        rather than miss them. Read after the writes: a field recorded later is recorded
        before that reindex lists the bucket, which then holds these objects."""
        settings = self._index.settings()
        lacking = (
            []
            if settings is None
            else [name for name in settings.fields if name not in self._options.fields]
        )
        if lacking:
            self._index.mark_pending([(name, written) for name in lacking])

    def _clear_journal(self, written: dict[str, str]) -> None:
        done = {**self._unjournal, **written}
        self._unjournal.clear()
        if done:
            self._index.clear_put_intents(PutIntent(k, e, self.run) for k, e in done.items())
            self._journaled.difference_update(done)
            self._heartbeat.holding = bool(self._journaled)

    def _write_manifest(self, *, last: bool = False) -> None:
        failure = self.fatal or self._failure
        if isinstance(failure, TransientError) and failure.timed_out:
            # Uploads got no answer, retried too: a manifest sent now would wait out the same
            # deadlines, after the run has already failed. (A store that answers, even with
            # errors, is still asked: the manifest may land.)
            self._manifests.abandon("the store stopped answering this run's uploads")
        else:
            self._manifests.flush(last=last)
        self._result.manifests_written = self._manifests.written
        self._result.manifests_failed = self._manifests.failed
        self._result.not_in_manifests = self._manifests.unrecorded

    def _reconcile(self, keys: set[str]) -> None:
        """Another writer moved these entries since they were read: index the bucket's truth."""
        try:
            outcome = reconcile(
                self._store,
                self._index,
                sorted(keys),
                key_field=self._options.key_field,
                workers=self._options.workers,
            )
        except BaseException:
            self._result.not_indexed += len(keys)
            raise
        self._result.reconciled += len(keys)
        self._result.not_indexed += outcome.gave_up
        self._result.add_contended(outcome.left)

    def finish(self) -> None:
        """Wait for every upload, then write their entries."""
        try:
            while self._inflight:
                self._collect(block=True)
        finally:
            self._workers.shutdown()
            try:
                self._drain_quietly()
                try:
                    self.flush()
                finally:
                    self._write_manifest(last=True)
            finally:
                self._heartbeat.stop()
                if self._journaled:
                    # Records left now (uploads that may have stored) are for sync to settle
                    # at once: an ended run is not a live one.
                    with contextlib.suppress(Exception):
                        self._index.beat_puts(self.run, alive=False)

    def _drain_quietly(self) -> None:
        for outcome in self._workers.outcomes.take(0):
            self._take(outcome)

    def _collect(self, *, block: bool, wait_for: int = 1) -> None:
        outcomes = self._workers.outcomes.take(min(wait_for, len(self._inflight)) if block else 0)
        if not outcomes:
            return
        for outcome in outcomes:
            self._take(outcome)
        self._flush_if_due()
        if block:
            self._on_progress()

    def _flush_if_due(self) -> None:
        if len(self._pending) >= self._options.batch_size or (
            self._pending and time.monotonic() - self._pending_since >= INDEX_FLUSH_SECONDS
        ):
            self.flush()

    def _take(self, outcome: _Outcome) -> None:
        prepared = outcome.prepared
        self._inflight.discard(prepared.key)
        if outcome.error is None:
            assert outcome.receipt_entry is not None
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append(outcome.receipt_entry)
            kept = outcome.receipt_entry[codec.RESERVED_FIELD]
            self._manifests.add(
                ManifestLine(prepared.key, kept["etag"], kept["size"], prepared.metadata)
            )
            if not prepared.again:
                self._result.stored += 1
            self._result.bytes_stored += kept["size"]
            return
        version = self._expected.pop(prepared.key, None)  # no entry to write for it
        if version is not None and _changed_nothing(outcome.error):
            # Refused or never started: the object was not replaced, the entry is still
            # true. Any other failure may have stored it: the record stays, for sync to look.
            self._unjournal[prepared.key] = version.etag
        if isinstance(outcome.error, RecordError):
            self._on_reject(prepared.record, reject_reason(outcome.error))
            return
        # Named even when an earlier line of the key was stored: the line that wins was not.
        self.name_unstored(prepared.key, _unstored_reason(outcome.error))
        if self.fatal is None and not isinstance(outcome.error, Cancelled):
            self.fatal = outcome.error

    def name_unstored(self, key: str, reason: str) -> None:
        """Count and name a document read and accepted that this run did not store."""
        if key not in self._named_unstored:
            self._named_unstored.add(key)
            self._result.unstore(key, reason)

    def _uploads(
        self, store: ObjectStore, workers: int
    ) -> _Workers | LoopUploads[Prepared, _Outcome]:
        """Worker threads, or the store's event loop where it has one (the http transport)."""
        make = getattr(store, "event_loop_uploader", None)
        uploader = None if make is None else make(workers)
        if uploader is None:
            return _Workers(self._upload, workers)
        from s3idx.engine.loop_uploads import LoopUploads

        return LoopUploads(uploader, store, self._encode, self._outcome)  # type: ignore[arg-type]

    # --- worker threads (or the event loop) ----------------------------------------------------

    def _upload(self, prepared: Prepared) -> _Outcome:
        if self._failing or self.fatal is not None:
            return _Outcome(prepared, None, Cancelled())
        try:
            key, body, metadata = self._encode(prepared)
            receipt = self._store.put(key, body, metadata)
        except BaseException as exc:  # handed to the main thread, which decides
            if not isinstance(exc, RecordError):
                self._failing = True
                self._failure = self._failure or exc
            return _Outcome(prepared, None, exc)
        return self._outcome(prepared, receipt, None)

    def _encode(self, prepared: Prepared) -> tuple[str, bytes, Mapping[str, str]]:
        body = prepared.encoded
        if body is None:
            body = codec.encode_raw(prepared.body, self._options.codec)
        return prepared.key, body, prepared.metadata

    def _outcome(
        self, prepared: Prepared, receipt: PutReceipt | None, error: BaseException | None
    ) -> _Outcome:
        if receipt is None:
            return _Outcome(prepared, None, error)
        options = self._options
        bookkeeping = Bookkeeping(receipt.etag, receipt.size, prepared.sha256, options.codec)
        return _Outcome(prepared, with_bookkeeping(prepared.entry, bookkeeping), None)


T = TypeVar("T")


class _Handoff(Generic[T]):
    """Items passed between threads, waking a taker only when it waits (and for enough).

    Measured on put: a queue.Queue or SimpleQueue hand-off per item, with a wake-up each way
    per document between reader, main thread and workers, cost more CPU than the upload it
    carried. Here a giver only appends to a deque; a taker that finds nothing goes to sleep
    saying how many items it waits for, and only the give that reaches that count wakes it.
    Several givers and takers may share one.
    """

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._sleepers = 0
        self._wanted = 1  # items the sleeping takers wait for (one taker waits for several)

    def __len__(self) -> int:
        return len(self._items)

    def give(self, item: T) -> None:
        items = self._items
        items.append(item)
        # Read after the append: a taker counts itself asleep before it looks, so either it
        # sees this item or this sees it (the GIL orders the two).
        if self._sleepers and len(items) >= self._wanted:
            with self._cond:
                self._cond.notify()

    def take_one(self, timeout: float | None = None) -> T | None:
        """The oldest item; None after ``timeout`` seconds without one."""
        try:
            return self._items.popleft()
        except IndexError:
            pass
        with self._cond:
            self._sleepers += 1
            try:
                deadline = None if timeout is None else time.monotonic() + timeout
                while True:
                    try:
                        return self._items.popleft()
                    except IndexError:
                        pass
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    self._cond.wait(left)
            finally:
                self._sleepers -= 1

    def take(self, wait_for: int) -> list[T]:
        """Every item there, after waiting until there are at least ``wait_for`` (one taker)."""
        items = self._items
        if len(items) < wait_for:
            with self._cond:
                self._sleepers += 1
                self._wanted = wait_for
                try:
                    while len(items) < wait_for:
                        self._cond.wait()
                finally:
                    self._sleepers -= 1
                    self._wanted = 1
        taken: list[T] = []
        while True:
            try:
                taken.append(items.popleft())
            except IndexError:
                return taken


class _Workers:
    """Threads running ``work`` on each item submitted, in submission order; ``outcomes``
    holds what ``work`` returned.

    A ThreadPoolExecutor makes a Future, a lock and a condition per item, and its results
    are not needed here: the per-item cost on the main thread matters when uploads take 0.1 ms
    of CPU (obstore). A worker that finishes an upload takes the next item without sleeping
    while there is one, and sleeps (to be woken by a submit) only when there is none.
    """

    def __init__(self, work: Callable[[Prepared], _Outcome], count: int) -> None:
        self._work = work
        self._todo: _Handoff[Prepared | None] = _Handoff()
        self.outcomes: _Handoff[_Outcome] = _Handoff()
        self._threads = [
            threading.Thread(target=self._run, name=f"s3idx-put-{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, item: Prepared) -> None:
        self._todo.give(item)

    def shutdown(self) -> None:
        """Let the threads finish what was submitted, then end them."""
        for _ in self._threads:
            self._todo.give(None)
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        todo, work, give = self._todo, self._work, self.outcomes.give
        while True:
            item = todo.take_one()
            if item is None:
                return
            give(work(item))  # never raises: _upload returns every failure as an outcome


class Cancelled(Exception):
    """An upload not started because the run already failed (never the run's error: it may
    reach the main thread before the failure that caused it)."""


def _changed_nothing(error: BaseException) -> bool:
    """Whether a failed upload certainly left the object as it was: refused as a document
    (``RecordError``), never started (``Cancelled``), or failed in a way that proves the
    request took no effect (``S3idxError.changed_nothing``: credentials refused, a 403 or 404
    answer, an endpoint that refuses connections, and no earlier attempt that may have
    landed). A 5xx, a timeout, a lost connection or an unknown error may have stored it."""
    if isinstance(error, RecordError | Cancelled):
        return True
    return isinstance(error, S3idxError) and error.changed_nothing


def _unstored_reason(error: BaseException) -> str:
    if isinstance(error, Cancelled):
        return NOT_UPLOADED
    if isinstance(error, S3idxError):
        return error.message
    return f"{type(error).__name__}: {error}"


def _stored_size(store: ObjectStore, prepared: Prepared, codec_name: str) -> int:
    """What a put would count for this document in a dry run: its encoded body's size in the
    store, as the store's receipt gives it (compressed; a LocalStore adds its header)."""
    body = codec.encode_raw(prepared.body, codec_name)
    size = getattr(store, "stored_size", None)
    return len(body) if size is None else int(size(body, prepared.metadata))


@accounted
def run_put(
    store: ObjectStore,
    index: Index,
    records: Iterable[Record],
    options: PutOptions,
    events: Events,
    stop: threading.Event | None = None,
    read_progress: ReadProgress | None = None,
    *,
    shard: Shard | None = None,
    check_binding: Callable[[], None] = lambda: None,
) -> PutResult:
    """``check_binding``: refuses an index re-pointed to another store (before each batch of
    entries; ``Engine.check_store_binding``)."""
    result = started(
        PutResult(dry_run=options.dry_run, shard=None if shard is None else str(shard))
    )
    # An index that cannot store some values (FerretDB) refuses them before the object is written.
    check_entry = getattr(index, "check_entry", None)
    preparer = DocumentPreparer(
        store,
        options.key_field,
        options.fields,
        options.codec,
        check_entry,
        last_updated_from_document=options.last_updated_from_document,
    )
    seen = SeenKeys()
    reporter = _ProgressReporter(events, result, read_progress)

    def reject(record: Record, reason: str) -> None:
        result.rejected += 1
        events.rejected(Reject(record.location, reason, record.as_read, record.whole_input))

    pipeline = (
        None
        if options.dry_run
        else UploadPipeline(
            store, index, options, result, reject, reporter.maybe, events.warned, check_binding
        )
    )
    collector = CollectorPause()
    collector.start()
    # Read and accepted, not yet handed to an upload: named as not stored if the run fails.
    unsent: list[Prepared] = []
    try:
        for chunk in _chunks(records, options.batch_size, stop):
            if not chunk:  # the input is idle
                if pipeline is not None:
                    pipeline.poll()
                continue
            batch = _prepare_chunk(
                chunk, preparer, seen, result, reject, options.max_errors, _router(shard, options)
            )
            collector.tick(len(chunk))
            if pipeline is None:
                if options.skip_unchanged and batch:
                    batch, _ = _drop_unchanged(batch, index, None, result, seen=seen)
                result.stored += sum(not p.again for p in batch)
                result.bytes_stored += sum(_stored_size(store, p, options.codec) for p in batch)
            elif batch:
                unsent = batch
                batch, expected = _drop_unchanged(
                    batch, index, pipeline, result, compare=options.skip_unchanged, seen=seen
                )
                unsent = batch
                prepared_rejects = result.rejected
                replaced = {p.key: expected[p.key].etag for p in batch if p.key in expected}
                pipeline.journal(replaced)
                for n, prepared in enumerate(batch):
                    if result.rejected > prepared_rejects and _limit_reached(options, result):
                        break  # uploads were rejected (e.g. by S3) up to the limit
                    submitted = pipeline.submit(prepared, expected.get(prepared.key))
                    unsent = batch[n + 1 :]
                    if submitted:
                        replaced.pop(prepared.key, None)
                    if pipeline.fatal is not None:
                        # Read and accepted, never to be uploaded: named as the failed ones are.
                        for left in batch[n + submitted :]:
                            pipeline.name_unstored(left.key, NOT_UPLOADED)
                        break
                unsent = []
                pipeline.unjournal(replaced)  # the ones never submitted
            reporter.now()
            if pipeline is not None and pipeline.fatal is not None:
                break
            if _limit_reached(options, result):
                result.stopped_early = True
                break
        if stop is not None and stop.is_set():
            result.interrupted = True
    except BaseException as exc:
        if pipeline is not None:
            for prepared in unsent:
                pipeline.name_unstored(prepared.key, NOT_SENT)
        _finish_after_failure(pipeline, exc, result)
        raise
    finally:
        collector.stop()
        seen.close()
    if pipeline is not None:
        with reported_on_failure(result):
            pipeline.finish()
            if pipeline.fatal is not None:
                raise pipeline.fatal
            if result.stored == 0 and not result.interrupted:
                # No upload met the bucket: a cron job whose input came out empty (or all
                # rejected) must still learn that its bucket is gone.
                confirm = getattr(store, "confirm_writable", None)
                if confirm is not None:
                    confirm()
    return result


def _limit_reached(options: PutOptions, result: PutResult) -> bool:
    return options.max_errors is not None and result.rejected >= options.max_errors


class _ProgressReporter:
    """put's progress: documents finished (stored, unchanged or rejected) and, when the input's
    size is known, the share of the whole run done, so the bar moves while uploads drain."""

    PERIOD = 0.1  # seconds; reports while waiting for uploads are at most this frequent

    def __init__(self, events: Events, result: PutResult, read: ReadProgress | None) -> None:
        self._events = events
        self._result = result
        self._read = read
        self._last = 0.0
        self._fraction = 0.0

    def maybe(self) -> None:
        if time.monotonic() - self._last >= self.PERIOD:
            self.now()

    def now(self) -> None:
        self._last = time.monotonic()
        result = self._result
        done = result.stored + result.unchanged + result.rejected
        stored = "would store" if result.dry_run else "stored"
        detail = {stored: result.stored, "rejected": result.rejected}
        if result.unchanged:
            detail["unchanged"] = result.unchanged
        self._events.progress(done, None, detail, input_fraction=self._input_fraction(done))

    def _input_fraction(self, done: int) -> float | None:
        read = self._read
        share_read = read.share_read() if read is not None else None
        if read is None or share_read is None:
            return None
        # The reader runs ahead of the uploads: scale by how many of the records read are done.
        # Other shards' records are done as soon as they are read.
        fraction = share_read * min((done + self._result.other_shards) / read.records, 1.0)
        # An estimate, but one that never goes back: the reader's share moves in steps.
        self._fraction = max(self._fraction, fraction)
        return self._fraction


def _finish_after_failure(
    pipeline: UploadPipeline | None, exc: BaseException, result: PutResult
) -> None:
    """On the way out of a failure: still index what was stored, then let the failure go on."""
    if pipeline is not None:
        # The first failure is the one to report.
        with contextlib.suppress(BaseException):
            pipeline.finish()
    if isinstance(exc, S3idxError) and exc.partial_result is None:
        exc.partial_result = result


CHUNK_SECONDS = 1.0


def _chunks(
    records: Iterable[Record], size: int, stop: threading.Event | None
) -> Iterator[list[Record]]:
    """Records in chunks of ``size``, or fewer once a chunk is a second old (slow input).

    Reading runs in its own thread behind a bounded queue, so a chunk is handed on when the
    input goes quiet, not only when the next record arrives; and while it is quiet, an empty
    chunk every tick gives the caller its turn (to write the entries of finished uploads).
    """
    chunk: list[Record] = []
    opened = 0.0
    unreadable: BaseException | None = None
    with _BackgroundReader(records, maxsize=2 * size) as reader:
        try:
            for record in reader:
                if record is not None:
                    if not chunk:
                        opened = time.monotonic()
                    chunk.append(record)
                if chunk and (len(chunk) >= size or time.monotonic() - opened >= CHUNK_SECONDS):
                    yield chunk
                    chunk = []
                elif record is None and not chunk:
                    yield chunk
                if stop is not None and stop.is_set():
                    break
        except _ReadFailed as failed:
            # The input ends where it failed: what was read before is put as at its end,
            # then the run fails with the input's error.
            unreadable = failed.error
    if chunk:
        yield chunk
    if unreadable is not None:
        raise unreadable


class _BackgroundReader:
    """Iterates records read by a thread; yields None when nothing arrived for a moment.

    At most ``maxsize`` records wait; a reader that finds the queue full sleeps until the
    consumer has taken half of them, so neither side is woken once per record.
    """

    _END = object()
    TICK = 0.2

    def __init__(self, records: Iterable[Record], maxsize: int) -> None:
        self._records = records
        self._queue: _Handoff[Any] = _Handoff()
        self._maxsize = max(1, maxsize)
        self._room = threading.Condition(threading.Lock())
        self._reader_sleeps = False
        self._quit = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="s3idx-read", daemon=True)

    def __enter__(self) -> _BackgroundReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._quit.set()
        with self._room:
            self._room.notify()
        # A reader blocked on an idle pipe is left behind (a daemon): it holds nothing we need.
        self._thread.join(timeout=0.5)

    def __iter__(self) -> Iterator[Record | None]:
        queue, low = self._queue, self._maxsize // 2
        while True:
            item = queue.take_one(self.TICK)
            if self._reader_sleeps and len(queue) <= low:
                with self._room:
                    self._room.notify()
            if item is None:
                yield None
                continue
            if item is self._END:
                return
            if isinstance(item, _ReadFailure):
                raise _ReadFailed(item.error)
            yield item

    def _produce(self) -> None:
        try:
            for record in self._records:
                if not self._offer(record):
                    return
            self._offer(self._END)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._offer(_ReadFailure(exc))

    def _offer(self, item: Any) -> bool:
        queue = self._queue
        while len(queue) >= self._maxsize:
            if self._quit.is_set():
                return False
            with self._room:
                self._reader_sleeps = True
                try:
                    # Counted asleep before looking again: the consumer's check then sees it.
                    if len(queue) >= self._maxsize and not self._quit.is_set():
                        self._room.wait(self.TICK)
                finally:
                    self._reader_sleeps = False
        if self._quit.is_set():
            return False
        queue.give(item)
        return True


class _ReadFailure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _ReadFailed(Exception):
    """Reading the input failed (raised to ``_chunks`` only, which then ends the input)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def _prepare_chunk(
    chunk: list[Record],
    preparer: DocumentPreparer,
    seen: SeenKeys,
    result: PutResult,
    reject: Callable[[Record, str], None],
    max_errors: int | None = None,
    mine: Callable[[Record], bool] | None = None,
) -> list[Prepared]:
    """The chunk's valid documents; with ``max_errors``, none after the reject that reaches it.

    With ``mine`` (``--shard``), records of other shards are only counted.
    """
    by_key: dict[str, Prepared] = {}
    keys: list[str] = []
    for record in chunk:
        if max_errors is not None and result.rejected >= max_errors:
            break
        result.read += 1
        if mine is not None and not mine(record):
            result.other_shards += 1
            continue
        if record.error is not None:
            reject(record, record.error)
            continue
        try:
            prepared = preparer.prepare(record)
        except RecordError as exc:
            reject(record, reject_reason(exc))
            continue
        # Its entry and body are made: the parsed tree (~60 objects) need not wait for the upload.
        record.document = None
        keys.append(prepared.key)
        by_key.pop(prepared.key, None)  # the later one wins and moves to its place
        by_key[prepared.key] = prepared
    duplicates, earlier = seen.add_many(keys)
    result.duplicates += duplicates
    for key in earlier:
        by_key[key].again = True
    return list(by_key.values())


def _router(shard: Shard | None, options: PutOptions) -> Callable[[Record], bool] | None:
    """Whether a record is this shard's (None: no --shard, every record is).

    A record is routed by its key before anything else is checked, so other shards' documents
    cost no validation, hashing or compression. One whose key cannot be read (not JSON, not an
    object, no key field, a key that is not a string) cannot be routed: it belongs to shard 0,
    so that exactly one shard rejects it (README, "Running on many machines").
    """
    if shard is None or shard.count == 1:
        return None
    key_field = options.key_field

    def mine(record: Record) -> bool:
        document = record.document
        key = document.get(key_field) if isinstance(document, dict) else None
        if record.error is not None or not isinstance(key, str):
            return shard.index == 0
        return shard.owns(key)

    return mine


def _drop_unchanged(
    batch: list[Prepared],
    index: Index,
    pipeline: UploadPipeline | None,
    result: PutResult,
    *,
    compare: bool = True,
    seen: SeenKeys | None = None,
) -> tuple[list[Prepared], dict[str, Version]]:
    """The documents to upload (with ``compare``, those not already stored identically) and
    the version the index records for each key that has an entry, read before any upload of
    them.

    One read of the index serves both: with ``compare`` it needs the entries, without only the
    versions.
    """
    keys = [p.key for p in batch]
    if pipeline is not None:
        # An upload of one of these keys still under way would change what the index says.
        pipeline.settle(keys)
    if not compare:
        versions = _read_after_deletes(index.versions, keys, pipeline)
        return _unlike_finished(batch, pipeline), versions
    existing = _read_after_deletes(index.bookkeeping, keys, pipeline)
    same = {
        p.key
        for p in batch
        if (found := existing.get(p.key)) is not None
        and _same(found[0], found[1].sha256, found[1].codec, p)
    }
    if same:
        # A put journal record (of a run killed after its upload, or one still running) says
        # the bucket may hold another version than the entry describes: store this one again.
        same -= {record.key for record in index.put_intents(sorted(same))}
    changed = []
    counted = []
    for prepared in batch:
        if prepared.key in same:
            if not prepared.again:
                result.unchanged += 1
                counted.append(prepared.key)
        else:
            changed.append(prepared)
    if seen is not None:
        _count_changed_later(changed, counted, seen, result)
    versions = {key: kept.version for key, (_, kept) in existing.items()}
    return _unlike_finished(changed, pipeline), versions


def _count_changed_later(
    changed: list[Prepared], counted: list[str], seen: SeenKeys, result: PutResult
) -> None:
    """A key counted unchanged in an earlier batch and uploaded now, changed: the key's one
    count is as stored (README), so the upload's success counts it and the earlier count goes."""
    seen.mark_unchanged(counted)
    again = [p for p in changed if p.again]
    if again:
        moved = seen.take_unchanged([p.key for p in again])
        for prepared in again:
            if prepared.key in moved:
                result.unchanged -= 1
                prepared.again = False


def _unlike_finished(batch: list[Prepared], pipeline: UploadPipeline | None) -> list[Prepared]:
    return batch if pipeline is None else pipeline.unlike_finished_deletes(batch)


def _unlike(prepared: Prepared, etag: str, codec_name: str) -> Prepared:
    """``prepared``, or, when its body would carry ``etag`` (S3's ETag of a one-part upload is
    its body's MD5), the same document in other bytes, so the stalled delete's If-Match
    cannot take it: compressed otherwise (``codec.encode_raw_otherwise``), or, stored as it
    is, its JSON followed by a space (its hash and metadata then follow its bytes)."""
    body = codec.encode_raw(prepared.body, codec_name)
    if hashlib.md5(body, usedforsecurity=False).hexdigest() != etag.strip('"').lower():
        return dataclasses.replace(prepared, encoded=body)  # not encoded again at upload
    other = codec.encode_raw_otherwise(prepared.body, codec_name)
    if other is not None:
        return dataclasses.replace(prepared, encoded=other)
    raw = prepared.body + b" "  # on the same line: get writes the body, then a newline
    sha256 = hashlib.sha256(raw).hexdigest()
    metadata = {**prepared.metadata, codec.META_SHA256: sha256}
    return dataclasses.replace(prepared, body=raw, sha256=sha256, metadata=metadata)


_ReadT = TypeVar("_ReadT")


def _read_after_deletes(
    read: Callable[[Sequence[str]], _ReadT], keys: Sequence[str], pipeline: UploadPipeline | None
) -> _ReadT:
    """``read(keys)`` from the index, at a moment no delete of these keys was under way.

    The delete journal is read after the index: a delete journals a key before it removes its
    entry, so a key read without entry because a delete removed it is found journaled then
    (unless that delete has ended, its object already gone). Its upload waits for the delete,
    and the index is read again, until a read finds no delete of these keys under way (a
    delete of several batches journals one batch after another).
    """
    while True:
        found = read(keys)
        if pipeline is None or not pipeline.await_deletes(keys):
            return found


def _same(entry: Entry, sha256: str | None, codec_name: str, prepared: Prepared) -> bool:
    if sha256 != prepared.sha256 or codec_name != prepared.metadata[codec.META_CODEC]:
        return False
    old = {k: v for k, v in entry.items() if k != codec.LAST_UPDATED}
    new = {k: v for k, v in prepared.entry.items() if k != codec.LAST_UPDATED}
    return codec.canonical(old) == codec.canonical(new)
