"""``delete``: a journal in the index, so a killed delete is finished and nothing is resurrected.

Per batch of keys (README "Reliability", ARCHITECTURE.md "delete"):

1. the ETag of each key: its entry's, or for a named key without entry its object's (HEAD);
2. ``index.journal_deletes``: a durable "being deleted" record, key -> ETag;
3. ``index.delete_if``: the entries go first, so no query returns a document whose object is
   about to go; an entry that now has another ETag was rewritten meanwhile and is left;
4. ``store.delete(if_match=...)``: an object that now has another ETag is a newer write and is
   left (and its entry set right by ``reconcile``);
5. ``index.clear_journal``.

Neither order of object and entry alone survives a crash: entry-first leaves objects that
``sync`` would adopt (deleted documents come back), object-first leaves entries without objects.
The journal closes both: ``finish_deletes`` redoes steps 3-5 for every record a crash left,
and ``sync`` never adopts an object journaled with its own ETag. Every step is conditional on
the ETag, so a finish running beside the delete it finishes (or beside a put) is harmless.
But an ETag names bytes, not one upload of them: a put of the journaled bytes uploaded before
step 4 would be taken by it, so a put first waits for the deletes of its keys to end
(``DeletesUnderWay``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from s3idx.engine import reconcile as reconciling
from s3idx.engine.reconcile import reconcile, wait_for_deletes
from s3idx.engine.results import DeleteResult, Events, accounted, reported_on_failure
from s3idx.engine.retry import FailedInARow
from s3idx.errors import (
    ObjectAccessDeniedError,
    ObjectNotFoundError,
    S3idxError,
    TransientError,
    UndecodableMetadataError,
)
from s3idx.index.base import Expected, Index, Version
from s3idx.limits import DELETE_BATCH, FAILED_IN_A_ROW, batched
from s3idx.sharding import Shard
from s3idx.store.base import DeleteFailure, ObjectStore
from s3idx.text import plural


@accounted
def delete_keys(
    store: ObjectStore,
    index: Index,
    keys: Iterable[str],
    *,
    dry_run: bool = False,
    events: Events | None = None,
    check_binding: Callable[[], None] = lambda: None,
) -> DeleteResult:
    """``check_binding``: refuses an index re-pointed to another store (before each batch;
    ``Engine.check_store_binding``): its entries would be removed, or another store's
    objects deleted, as this store's."""
    result = DeleteResult(dry_run=dry_run)
    with reported_on_failure(result):
        if not dry_run:
            finish_deletes(
                store, index, removed=result.count_finished, contended=result.add_contended
            )
        unique = list(dict.fromkeys(keys))
        for batch in batched(unique, DELETE_BATCH):
            check_binding()
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
    check_binding: Callable[[], None] = lambda: None,
) -> DeleteResult:
    """As ``delete_keys``, of the keys whose entries match ``filter``."""
    result = DeleteResult(dry_run=dry_run)
    with reported_on_failure(result):
        if not dry_run:
            finish_deletes(
                store, index, removed=result.count_finished, contended=result.add_contended
            )
        total = index.count(filter) if events is not None else None
        for batch in _matching_keys(index, filter, key_field, dry_run):
            check_binding()
            _delete_batch(store, index, batch, result, named=False)
            _report(events, result, total)
    return result


def finish_deletes(
    store: ObjectStore,
    index: Index,
    *,
    shard: Shard | None = None,
    removed: Callable[[], None] | None = None,
    contended: Callable[[list[str]], None] | None = None,
) -> int:
    """Finish the deletes a killed or failed ``delete`` left in the journal (steps 3-5).

    Returns how many records it finished: their objects are gone now, whoever removed them
    (``sync`` reports them as interrupted deletes repaired, as ``sync --check`` counts them).
    A record whose entry or object was rewritten since is dropped (the newer write stands);
    one whose object could not be deleted stays in the journal for the next try. With
    ``shard``, only the records of its keys. ``removed()`` is called once per object this
    process removed, as soon as it is removed, not for those another process (the delete it
    finishes, still running, or another finishing it too) removed first: a delete's (or a
    rebuild's) count of what it removed. ``contended(keys)`` is given the keys whose objects
    were stored again and whose entries reconcile then gave up on (left for sync).
    """
    records = journaled(index, shard)
    finished = 0

    for batch in batched(sorted(records), DELETE_BATCH):
        outcome = _DeleteOutcome(removed)
        _delete_journaled(store, index, {k: records[k] for k in batch}, outcome)
        finished += len(outcome.gone) + len(outcome.absent)
        if contended is not None and outcome.contended:
            contended(outcome.contended)
    return finished


class DeletesUnderWay:
    """A put's wait for the deletes of its keys (``await_for``), over its whole run.

    A delete's ``If-Match`` cannot tell its object from the same bytes stored again (S3 gives
    them one ETag): an upload of the journaled bytes landing before it would be removed under
    the entry the put then writes. So a key journaled for deletion waits for its record to
    clear. A record still there ``reconcile.DELETE_WAIT`` after this run first saw it is a
    killed delete's, or one stalled that long: it is finished here, as the next sync would
    finish it (but before the upload, not after it), and every other record this run has seen
    that long with it (a killed delete's records would otherwise stall one chunk after
    another). A stalled delete that resumes finds its records gone and leaves those keys
    (``_delete_journaled``); one that stalled after reading them, while sending its requests,
    finds another ETag (``finished``). A record still there after being finished (the store
    refused the delete) is not waited for again.
    """

    def __init__(self, store: ObjectStore, index: Index, warn: Callable[[str], None]) -> None:
        self._store = store
        self._index = index
        self._warn = warn
        self._first_seen: dict[tuple[str, str], float] = {}
        self._refused: set[tuple[str, str]] = set()
        # The records this run finished (key -> the ETag their delete names): a stalled
        # delete's request may still reach the store, so this run's object of such a key
        # must not carry that ETag (see put's ``unlike_finished_deletes``).
        self.finished: dict[str, str] = {}

    def await_for(self, keys: Sequence[str]) -> bool:
        """Wait until no delete of ``keys`` is under way (finishing those past the wait).
        True when any key was journaled: the entries read before may be gone, read them
        again (and call this again: another delete may have begun)."""
        wanted = set(keys)
        records = {k: e for k, e in self._journal().items() if k in wanted}
        if not records:
            return False
        wait = reconciling.DELETE_WAIT
        oldest = min(self._first_seen[item] for item in records.items())
        if not wait_for_deletes(self._index, records, oldest + wait):
            self._finish_stale(wait)
        return True

    def _journal(self) -> dict[str, str]:
        """The delete journal, less the records the store refused to finish, noting when this
        run first saw each record (the whole journal: a killed delete's records for the keys of
        later chunks were there, and waited for, from the first)."""
        now = time.monotonic()
        journal = {k: e for k, e in self._index.journaled().items() if (k, e) not in self._refused}
        self._first_seen = {item: self._first_seen.get(item, now) for item in journal.items()}
        return journal

    def _finish_stale(self, wait: float) -> None:
        now = time.monotonic()
        stale = {k: e for k, e in self._journal().items() if self._first_seen[k, e] + wait <= now}
        if not stale:
            return
        _delete_journaled(self._store, self._index, stale, _DeleteOutcome())
        self.finished.update(stale)
        left = self._index.journaled(list(stale))
        self._refused.update((k, e) for k, e in left.items() if stale.get(k) == e)
        its = "its key" if len(stale) == 1 else "its keys"
        self._warn(
            f"a delete of {plural(len(stale), 'key')} did not end within {wait:g} s (it was "
            f"killed, or stalled): finished it, as sync would, before storing {its} again"
        )


def journaled(index: Index, shard: Shard | None = None) -> dict[str, str]:
    """The delete journal (key -> ETag); with ``shard``, only its keys' records."""
    records = index.journaled()
    if shard is None:
        return records
    return {key: etag for key, etag in records.items() if shard.owns(key)}


def _report(events: Events | None, result: DeleteResult, total: int | None) -> None:
    if events is None:
        return
    done = len(result.would_delete) if result.dry_run else result.deleted
    detail = {"failed": len(result.failed)} if result.failed else {}
    if result.rewritten:
        detail["rewritten"] = result.rewritten
    events.progress(done, total, detail)


def _matching_keys(
    index: Index, filter: Mapping[str, Any], key_field: str, dry_run: bool
) -> Iterator[list[str]]:
    # Keyset pagination: each page starts after the last key seen, so deleting the page (or
    # failing to) never makes the next query skip or repeat keys.
    last: str | None = None
    while True:
        page_filter = dict(filter) if last is None else _after(filter, key_field, last)
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


def _after(filter: Mapping[str, Any], key_field: str, last: str) -> dict[str, Any]:
    """``filter`` and "the key is after ``last``", nested no deeper than ``filter``.

    Wrapping it in a new $and would add a level: a filter as deep as allowed would be refused
    on the second page, after the first page was deleted.
    """
    after = {key_field: {"$gt": last}}
    page = dict(filter)
    clauses = page.get("$and")
    if isinstance(clauses, list):
        page["$and"] = [*clauses, after]
    elif key_field in page:
        page["$and"] = [after]
    else:
        page.update(after)
    return page


def _delete_batch(
    store: ObjectStore, index: Index, keys: list[str], result: DeleteResult, *, named: bool
) -> None:
    versions = index.versions(keys)
    targets: dict[str, str] = {}
    for key in keys:
        etag = versions[key].etag if key in versions else None
        if etag is None:
            # No entry: a named key may still have an object (an orphan of a crashed put); a
            # matched key's entry was deleted since the query (by another delete): nothing to do.
            etag = _object_etag(store, key) if named else None
        if etag is not None:
            targets[key] = etag
        elif named:
            result.missing.append(key)
    if result.dry_run:
        result.would_delete.extend(targets)
        return
    index.journal_deletes(targets)

    def gone() -> None:
        result.deleted += 1

    outcome = _DeleteOutcome(gone)
    try:
        _delete_journaled(store, index, targets, outcome, versions)
    finally:
        # Also when the batch is cut short (a signal, a store error): what it did is counted
        # (its objects removed were counted one by one as the store removed them).
        result.entries_deleted += outcome.entries
        result.rewritten += len(outcome.rewritten)
        result.failed.extend(outcome.failed)
        result.unavailable += len(outcome.unavailable)
        result.denied += len(outcome.denied)
        result.add_contended(outcome.contended)
        if named:
            # Named, but with no object to remove: another delete removed it first (or the
            # entry named an object already gone). Not deleted by this one: not found.
            result.missing.extend(outcome.absent)
    if named and outcome.rewritten:
        # A key the user named is still there: a failure to report, not a quiet skip.
        kept = sorted(outcome.rewritten)
        result.kept.extend(kept)
        indexed = index.etags(kept)
        result.kept_without_entry.extend(k for k in kept if k not in indexed)
    _stop_if_failing_every_delete(keys, outcome)


_DENIED_HINT = (
    "the store does not allow these objects to be deleted: check what the credentials may do "
    "(S3), or the permissions of the objects' directories (a local store)"
)


def _stop_if_failing_every_delete(keys: list[str], outcome: _DeleteOutcome) -> None:
    """FAILED_IN_A_ROW keys in a row that the store kept failing, or denied these credentials:
    the store failing every delete (or the credentials denied every one), one error rather
    than a line per key (they stay journaled: the next delete, sync or rebuild-index finishes
    them)."""
    errors: dict[str, S3idxError] = {
        f.key: TransientError(f.reason, hint=f.hint) for f in outcome.unavailable
    }
    errors.update((k, ObjectAccessDeniedError(r, hint=_DENIED_HINT)) for k, r in outcome.denied)
    if len(errors) < FAILED_IN_A_ROW:
        return
    failing: FailedInARow[str] = FailedInARow("deleted")
    for key in keys:
        if key in errors:
            failing.add(key, key, errors[key])
        else:
            failing.release()


class _DeleteOutcome:
    __slots__ = (
        "_counted",
        "_heard",
        "_lock",
        "absent",
        "contended",
        "denied",
        "entries",
        "failed",
        "gone",
        "rewritten",
        "unavailable",
    )

    def __init__(self, counted: Callable[[], None] | None = None) -> None:
        self._counted = counted  # called once per object removed, as soon as it is
        self._lock = threading.Lock()
        self._heard: set[str] = set()
        # Objects this process removed: each removal is counted by exactly one process, the
        # one whose request removed the object (ObjectStore.delete's ``done``).
        self.gone: list[str] = []
        # Keys with no object left to remove: another delete (a finish of this one's journal
        # records, a delete of the same keys) removed it first, or there was none.
        self.absent: list[str] = []
        self.entries = 0  # entries removed
        # Left alone: entry or object not the version whose ETag was read (rewritten since,
        # or the entry was out of date with its object).
        self.rewritten: list[str] = []
        self.failed: list[tuple[str, str]] = []  # the store refused; still journaled
        # Of the failed, those the store kept failing until the retries ran out, in key order.
        self.unavailable: list[DeleteFailure] = []
        # Of the failed, those the store denied these credentials, in key order.
        self.denied: list[tuple[str, str]] = []
        # Of the rewritten, those whose entries reconcile gave up on (other writers kept
        # changing them): left for sync.
        self.contended: list[str] = []

    def done(self, key: str, removed: bool) -> None:
        """``ObjectStore.delete``'s report of a key (from any of its threads)."""
        with self._lock:
            if key in self._heard:
                return
            # Counted first: a signal's KeyboardInterrupt landing in here leaves it counted.
            if removed and self._counted is not None:
                self._counted()
            self._heard.add(key)
            (self.gone if removed else self.absent).append(key)


def _delete_journaled(
    store: ObjectStore,
    index: Index,
    items: Mapping[str, str],
    outcome: _DeleteOutcome,
    versions: Mapping[str, Version] | None = None,
) -> None:
    """Steps 3-5 for journaled ``key -> ETag`` records; ``versions``: the entries read before
    the records were written, whose compare-and-set is on their stamps too (a record alone
    names an ETag)."""
    if not items:
        return
    read = versions or {}
    expected: dict[str, Expected] = {k: read.get(k, etag) for k, etag in items.items()}
    removed, conflicts = index.delete_if(expected)
    outcome.entries += removed
    if conflicts:
        # A newer write replaced the entry after its ETag was read: that document stays.
        outcome.rewritten.extend(conflicts)
        index.clear_journal({k: items[k] for k in conflicts})
    remaining = {k: v for k, v in items.items() if k not in conflicts}
    if not remaining:
        return
    still_there = _RecordsStillThere(index, remaining)
    failures = store.delete(
        list(remaining), if_match=remaining, done=outcome.done, still_wanted=still_there
    )
    for key in still_there.gone:
        del remaining[key]  # finished by another process: not this delete's to clear
    changed = [f.key for f in failures if f.changed]
    outcome.rewritten.extend(changed)
    if changed:
        # Its entry went in step 3; the newer object's writer puts it back by its own CAS,
        # unless it died after its upload: reconcile indexes what the bucket now holds. This
        # delete removes nothing of these keys any more: its records go first, or reconcile
        # would take an object stored again with the journaled ETag (the same bytes put
        # again meanwhile) for the one being deleted, and remove its entry.
        index.clear_journal({k: remaining[k] for k in changed})
        settings = index.settings()
        if settings is not None:
            left = reconcile(store, index, changed, key_field=settings.key_field).left
            outcome.contended.extend(left)
    outcome.failed.extend((f.key, f.reason) for f in failures if not f.changed)
    denied = {f.key: f.reason for f in failures if f.denied}
    outcome.denied.extend((k, denied[k]) for k in remaining if k in denied)
    transient = {f.key: f for f in failures if f.transient}
    outcome.unavailable.extend(transient[k] for k in remaining if k in transient)
    refused = {f.key for f in failures}
    for key in remaining:
        if key not in refused:
            # A store that did not report the key (it reports as it goes): deleted by it.
            outcome.done(key, True)
    # A failed delete stays journaled: its entry is gone, and the record keeps sync from
    # adopting the object until the next delete, sync or rebuild-index deletes it.
    index.clear_journal({k: v for k, v in remaining.items() if k not in refused or k in changed})


class _RecordsStillThere:
    """``still_wanted`` of a batch's conditional deletes: whether a key's record is still the
    one this delete journaled, as the index said at most ``FRESH`` seconds before the request.

    A record finished by another process meanwhile (a put that waited out this delete stalled
    past ``DELETE_WAIT``, or a sync) names an object already gone, and the same bytes may be
    stored again since, which this If-Match would take: its key is not sent. Read for the
    whole batch at once, again once the last read is older than ``FRESH``: a delete paused
    while sending finds the records gone when it resumes, before its next request.
    """

    FRESH = 0.5

    def __init__(self, index: Index, records: Mapping[str, str]) -> None:
        self._index = index
        self._records = dict(records)
        self._lock = threading.Lock()
        self._read_at = -math.inf
        self._current: dict[str, str] = {}
        self.gone: set[str] = set()

    def __call__(self, key: str) -> bool:
        with self._lock:
            started = time.monotonic()
            if started - self._read_at > self.FRESH:
                self._current = self._index.journaled(list(self._records))
                self._read_at = started  # not after: a read that stalled is that old
            if self._current.get(key) == self._records[key]:
                return True
            self.gone.add(key)
            return False


def _object_etag(store: ObjectStore, key: str) -> str | None:
    try:
        return store.head(key).etag
    except ObjectNotFoundError:
        return None
    except UndecodableMetadataError:
        # A local object file whose header cannot be read: its listing still has its ETag,
        # and deleting it is one way to be rid of it.
        # In key order, the key itself comes before every other key it is a prefix of.
        first = next(iter(store.list_objects(key)), None)
        return first.etag if first is not None and first.key == key else None
