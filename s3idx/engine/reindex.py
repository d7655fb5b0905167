"""``reindex``: backfill searchable fields into the objects and entries stored before them.

A field added by a later ``put --field`` is in the metadata (and so the entry) of the documents
stored since, not of those stored before. For each listed object whose metadata lacks one of the
index's fields, the body is read, the entry is built again from the document with every field,
and the metadata is replaced in place (``ObjectStore.replace_metadata``: a server-side copy on
S3, a rewritten header locally; never a re-upload), on condition that the object is still the one
that was read. Then its entry is written, as ``put`` writes one: a compare-and-set on the ETag
the index recorded before the metadata was replaced, so that a ``put`` or ``delete`` of the key
meanwhile is never undone; a key another writer moved is reconciled with the bucket.
``last_updated`` keeps its value: the document did not change.

Objects whose metadata already lists every field are skipped after one HEAD, so a run that was
interrupted is resumed by running it again. When every object has every field, the index's
pending fields are marked complete and queries on them are allowed.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

from s3idx import codec
from s3idx.engine.body_check import differing_fields
from s3idx.engine.concurrency import ordered_map, prefetched, worker_pool
from s3idx.engine.documents import DocumentPreparer
from s3idx.engine.inputs import Record
from s3idx.engine.manifest import ManifestLine
from s3idx.engine.manifest_batches import ManifestBatches
from s3idx.engine.read import fetch_document
from s3idx.engine.reconcile import reconcile
from s3idx.engine.results import (
    CONTENDED_REASON,
    Events,
    ReindexResult,
    accounted,
    reported_on_failure,
    started,
)
from s3idx.engine.retry import OBJECT_FAILURES, FailedInARow
from s3idx.errors import (
    CorruptObjectError,
    NotAnS3idxObjectError,
    ObjectAccessDeniedError,
    ObjectChangedError,
    ObjectNotFoundError,
    RecordError,
    quote_key,
)
from s3idx.index.base import Bookkeeping, Entry, Index, IndexSettings, Version, with_bookkeeping
from s3idx.limits import batched
from s3idx.store.base import ObjectStore

BATCH = 1000
ATTEMPTS = 3  # reads of an object that keeps changing under us, before giving up on it


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What happened to one object: an entry to write, or a count to bump (with a reason)."""

    kind: str  # "updated", "up_to_date", "not_s3idx", "vanished", "failed"
    entry: Entry | None = None
    reason: str = ""
    line: ManifestLine | None = None  # the object as its metadata now stands
    unavailable: bool = False  # failed: the store kept failing its requests (retries spent)
    denied: bool = False  # failed: the store denied these credentials this object
    etag: str | None = None  # up to date: the object's ETag, to check its entry against
    recorded: Entry | None = None  # up to date: the entry its metadata records, likewise


@accounted
def run_reindex(
    store: ObjectStore,
    index: Index,
    settings: IndexSettings,
    *,
    workers: int,
    dry_run: bool = False,
    events: Events | None = None,
    stop: threading.Event | None = None,
    check_binding: Callable[[], None] = lambda: None,
) -> ReindexResult:
    """``check_binding``: refuses an index re-pointed to another store (before each batch of
    entries; ``Engine.check_store_binding``)."""
    events = events or Events()
    result = started(
        ReindexResult(
            fields=list(settings.fields),
            pending=[name for name, _ in settings.pending],
            dry_run=dry_run,
        )
    )
    # Before the listing: a writer marking a field pending from now on (a put begun before
    # the field was recorded) may write its entries after this run passed their keys.
    began = {} if dry_run else index.pending_marks()
    backfill = _Backfill(store, settings, dry_run)
    failing: FailedInARow[tuple[str, _Outcome]] = FailedInARow("read or updated")
    manifests = ManifestBatches(store, events.warned)
    with (
        worker_pool(workers, "s3idx-reindex") as pool,
        reported_on_failure(result),
    ):
        try:
            for batch in batched(prefetched(store.list_objects()), BATCH):
                entries = []
                stale: list[str] = []  # up-to-date objects whose entries are not
                current: dict[str, Entry] = {}  # up to date, the same version as the entry
                listed = [info.key for info in batch]
                # Read before any metadata is replaced: what each entry is written over.
                recorded = {} if dry_run else index.versions(listed)
                for key, future in ordered_map(pool, backfill.one, listed, 2 * workers):
                    try:
                        outcome = future.result()
                    except OBJECT_FAILURES as exc:
                        # Retries spent on this object, or it was denied: it fails alone,
                        # unless the run grows.
                        denied = isinstance(exc, ObjectAccessDeniedError)
                        failed = _Outcome(
                            "failed", reason=exc.message, unavailable=not denied, denied=denied
                        )
                        failing.add(key, (key, failed), exc)
                        continue
                    for held_key, held in failing.release():
                        _count(result, held_key, held, events)
                    _count(result, key, outcome, events)
                    read = recorded.get(key)
                    if outcome.etag is not None and read is not None:
                        if read.etag != outcome.etag:
                            stale.append(key)
                        elif outcome.recorded is not None:
                            current[key] = outcome.recorded
                    if outcome.entry is not None:
                        entries.append(outcome.entry)
                    if outcome.line is not None:
                        manifests.add(outcome.line)
                # The objects' new metadata in a manifest, then their entries (as put does).
                manifests.flush()
                _count_manifests(result, manifests)
                if not dry_run:
                    check_binding()
                _write_entries(index, store, settings, entries, recorded, result, workers, events)
                stale += _differing_entries(index, current)
                _repair_entries(index, store, settings, stale, result, workers, events)
                result.listed += len(batch)
                events.progress(result.listed, None, {"updated": result.updated})
                if stop is not None and stop.is_set():
                    result.interrupted = True
                    break
            # A run of failures held at the end (none has an entry or a manifest line to write).
            for held_key, held in failing.release():
                _count(result, held_key, held, events)
        finally:
            manifests.close()
            _count_manifests(result, manifests)
    if not (dry_run or result.interrupted) and result.pending:
        # The fields stay pending for the objects it failed for (at most), complete without;
        # and, as they are, when writers marked them pending since this run began.
        settled = dict(
            index.mark_complete(result.pending, remaining=result.failed, since=began).pending
        )
        result.completed = [name for name in result.pending if name not in settled]
        if not result.failed:
            result.pending_again = [name for name in result.pending if name in settled]
    return result


def _write_entries(
    index: Index,
    store: ObjectStore,
    settings: IndexSettings,
    entries: list[Entry],
    recorded: dict[str, Version],
    result: ReindexResult,
    workers: int,
    events: Events,
) -> None:
    """Each entry by compare-and-set on the version recorded before its object's metadata was
    replaced: a plain upsert would put back an entry over the one a ``put`` or ``delete`` wrote
    meanwhile, naming an object the bucket no longer holds."""
    if not entries:
        return
    key_field = settings.key_field
    expected = {e[key_field]: recorded.get(e[key_field]) for e in entries}
    conflicts = index.upsert_if(entries, expected)
    if not conflicts:
        return
    outcome = reconcile(store, index, sorted(conflicts), key_field=key_field, workers=workers)
    result.reconciled += len(conflicts) - outcome.gave_up
    _fail_contended(result, outcome.left, events)


def _differing_entries(index: Index, recorded: Mapping[str, Entry]) -> list[str]:
    """Keys whose entries name their object's version but not what its metadata records: a
    copy that kept the ETag (S3's, of a single-part object: the body's MD5) landed, and the
    run stopped before the entry was written."""
    if not recorded:
        return []
    held = index.bookkeeping(sorted(recorded))
    return [key for key, (entry, _) in held.items() if differing_fields(recorded[key], dict(entry))]


def _repair_entries(
    index: Index,
    store: ObjectStore,
    settings: IndexSettings,
    keys: list[str],
    result: ReindexResult,
    workers: int,
    events: Events,
) -> None:
    """Entries of objects already up to date that describe another version: an earlier run
    stopped (or lost a copy's answer) between the copy and the entry. Set to what the bucket
    holds before the fields are called complete, or the queries on them would miss these."""
    if not keys:
        return
    outcome = reconcile(store, index, keys, key_field=settings.key_field, workers=workers)
    result.reconciled += len(keys) - outcome.gave_up
    _fail_contended(result, outcome.left, events)


def _fail_contended(result: ReindexResult, keys: list[str], events: Events) -> None:
    """Keys still contended after reconcile's rounds: their entries may not describe their
    objects. Failed, and named as every failed key is."""
    for key in keys:
        result.fail(key, CONTENDED_REASON)
        events.skipped(key, f"not reindexed: {CONTENDED_REASON}")


def _count_manifests(result: ReindexResult, manifests: ManifestBatches) -> None:
    result.manifests_written = manifests.written
    result.manifests_failed = manifests.failed
    result.not_in_manifests = manifests.unrecorded


def _count(result: ReindexResult, key: str, outcome: _Outcome, events: Events) -> None:
    if outcome.kind == "failed":
        result.fail(key, outcome.reason)
        result.unavailable += outcome.unavailable
        result.denied += outcome.denied
        events.skipped(key, f"not reindexed: {outcome.reason}")
    elif outcome.kind == "not_s3idx":
        result.not_s3idx += 1
        events.skipped(key, "not an s3idx object (no s3idx metadata); left as it is")
    else:
        setattr(result, outcome.kind, getattr(result, outcome.kind) + 1)


class _Backfill:
    """Brings one object's metadata and entry up to the index's fields; thread-safe."""

    def __init__(self, store: ObjectStore, settings: IndexSettings, dry_run: bool) -> None:
        self._store = store
        self._key_field = settings.key_field
        self._fields = settings.fields
        self._dry_run = dry_run

    def one(self, key: str) -> _Outcome:
        try:
            for _ in range(ATTEMPTS):
                try:
                    return self._attempt(key)
                except ObjectChangedError:
                    continue  # overwritten since we read it: read the new one
            return _Outcome("failed", reason=f"it kept changing over {ATTEMPTS} attempts")
        except ObjectNotFoundError:
            return _Outcome("vanished")  # deleted since it was listed
        except NotAnS3idxObjectError:
            return _Outcome("not_s3idx")
        except (CorruptObjectError, RecordError) as exc:
            return _Outcome("failed", reason=exc.message.replace("\n", "; "))

    def _attempt(self, key: str) -> _Outcome:
        head = self._store.head(key)
        meta = codec.parse_metadata(head.metadata)
        self._check_key_field(meta)
        if not self._missing(meta):
            return _Outcome("up_to_date", etag=head.etag, recorded=meta.entry)
        if self._dry_run:
            return _Outcome("updated")
        # The object as this GET read it, its body checked against its sha256 and codec.
        document = fetch_document(self._store, key)
        assert document.head is not None
        meta = codec.parse_metadata(document.head.metadata)
        self._check_key_field(meta)
        if not self._missing(meta):
            document.close()
            return _Outcome("up_to_date", etag=document.head.etag, recorded=meta.entry)
        document_bytes = document.read()
        sha256 = meta.sha256 or hashlib.sha256(document_bytes).hexdigest()
        fields = (*meta.fields, *(f for f in self._fields if f not in meta.fields))
        entry = self._entry(key, document_bytes, fields, meta.codec)
        # Only the entry changes, not the document: it keeps the date it was stored.
        entry[codec.LAST_UPDATED] = meta.entry.get(codec.LAST_UPDATED, entry[codec.LAST_UPDATED])
        metadata = codec.build_metadata(entry, self._key_field, fields, meta.codec, sha256)
        codec.check_metadata_size(metadata, key, entry)
        receipt = self._store.replace_metadata(key, metadata, if_match=document.head.etag)
        bookkeeping = Bookkeeping(receipt.etag, receipt.size, sha256, meta.codec)
        line = ManifestLine(key, receipt.etag, receipt.size, metadata)
        return _Outcome("updated", with_bookkeeping(entry, bookkeeping), line=line)

    def _missing(self, meta: codec.MetadataEntry) -> list[str]:
        return [f for f in self._fields if f not in meta.fields]

    def _check_key_field(self, meta: codec.MetadataEntry) -> None:
        if meta.key_field != self._key_field:
            raise CorruptObjectError(
                f"its metadata names key field {meta.key_field!r}, not the index's "
                f"{self._key_field!r}"
            )

    def _entry(
        self, key: str, document_bytes: bytes, fields: tuple[str, ...], codec_name: str
    ) -> Entry:
        try:
            document = orjson.loads(document_bytes)
        except orjson.JSONDecodeError as exc:
            raise CorruptObjectError(f"its body is not valid JSON: {exc}") from None
        preparer = DocumentPreparer(self._store, self._key_field, fields, codec_name)
        prepared = preparer.prepare(Record(f"object {quote_key(key)}", 0, document_bytes, document))
        if prepared.key != key:
            raise CorruptObjectError(
                f"its document's key is {quote_key(prepared.key)}, not {quote_key(key)}"
            )
        return prepared.entry
