"""Listed keys to index entries: parallel HEADs, one key field, what was skipped and why.

Shared by rebuild-index and sync; each HEAD's metadata becomes an entry through
``metadata_entry.recover_entry``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from s3idx.engine.concurrency import ordered_map
from s3idx.engine.metadata_entry import (
    Recovered,
    Rewriter,
    other_key_field,
    recover_entry,
    undecodable_reason,
    unusable_reason,
)
from s3idx.engine.results import OVERTAKEN_REASON, MaggmaObjects, Skipped
from s3idx.engine.retry import OBJECT_FAILURES, FailedInARow
from s3idx.errors import (
    NotAnS3idxObjectError,
    ObjectAccessDeniedError,
    ObjectChangedError,
    ObjectNotFoundError,
    UndecodableMetadataError,
)
from s3idx.index.base import Entry
from s3idx.store.base import ObjectHead, ObjectStore


class EntryCollector:
    """Turns listed keys into entries with parallel HEADs, agreeing on one key field."""

    def __init__(
        self,
        store: ObjectStore,
        pool: ThreadPoolExecutor,
        workers: int,
        key_field: str | None,
        skipped: Skipped,
        on_skip: Callable[[str, str], None] | None = None,
        *,
        maggma: MaggmaObjects | None = None,
        rewriter: Rewriter | None = None,
    ) -> None:
        self._store = store
        self._pool = pool
        self._window = 2 * workers
        self.key_field = key_field
        self.fields: list[str] = []
        # For each field: how many accepted objects' metadata does not list it (they were
        # stored before it was added; reindex backfills them).
        self.lacking: dict[str, int] = {}
        self.accepted = 0
        self.skipped = skipped
        self.maggma = maggma if maggma is not None else MaggmaObjects()
        self._on_skip = on_skip
        self._rewriter = rewriter
        self.heads = 0  # HEAD requests made
        # Keys HEADed whose objects are not s3idx's (no s3idx metadata), kept only for a caller
        # that sets a list here and takes them (sync); a rebuild of a bucket full of other
        # tools' objects must not hold their keys.
        self.foreign: list[str] | None = None
        # Called with each object's head and what it gave (None: skipped), e.g. to record it in
        # a manifest; not for objects that vanished.
        self.on_object: Callable[[ObjectHead, Recovered | None], None] | None = None
        # Called with each key whose HEAD (or rewrite) failed until the retries ran out, or
        # was denied these credentials, why, and whether denied: passed over (no entry) for a
        # caller that sets it (sync, which leaves their entries as they are); otherwise the
        # error ends the run (rebuild-index must not swap in an index without them).
        self.on_unavailable: Callable[[str, str, bool], None] | None = None

    def entries(
        self, keys: Iterable[str], known: Mapping[str, ObjectHead] | None = None
    ) -> Iterator[Entry]:
        """Entries of ``keys``, in order; a key in ``known`` takes that head instead of a HEAD
        (rebuild-index passes what manifests vouch for)."""
        known = known or {}
        work = partial(_head_and_recover, self._store, self.key_field, self._rewriter)
        items = [known.get(key, key) for key in keys]
        # A known head needs no request, so no thread, unless it may have to be rewritten.
        pooled = ordered_map(
            self._pool,
            work,
            (i for i in items if isinstance(i, str) or self._rewriter is not None),
            self._window,
        )
        # Unavailable keys in a row, held back: FAILED_IN_A_ROW of them are the store down
        # (one error), not that many keys to report.
        failing: FailedInARow[tuple[str, str, bool]] = FailedInARow("read")
        for item in items:
            if isinstance(item, str) or self._rewriter is not None:
                _, future = next(pooled)
                error = future.exception()
                outcome = future.result() if error is None else None
            else:
                error, outcome = None, work(item)
            if isinstance(item, str):
                self.heads += 1
            if isinstance(error, OBJECT_FAILURES) and self.on_unavailable is not None:
                key = item if isinstance(item, str) else item.key
                denied = isinstance(error, ObjectAccessDeniedError)
                failing.add(key, (key, error.message, denied), error)
                continue
            self._pass_over(failing.release())
            if outcome is not None and outcome.overtaken:
                self.maggma.overtaken(outcome.key)
                self._report(outcome.key, f"not rewritten: {OVERTAKEN_REASON}")
            if outcome is not None and outcome.gone:
                self.skipped.vanished += 1  # deleted by another writer while being rewritten
            elif outcome is not None:
                entry = self._take(outcome)
                if entry is not None:
                    yield entry
            elif isinstance(error, ObjectNotFoundError):
                self.skipped.vanished += 1  # deleted between listing and HEAD
            elif error is not None:
                raise error
        self._pass_over(failing.release())

    def etags(self, keys: Iterable[str]) -> Iterator[tuple[str, str | None]]:
        """Each key with the ETag of the object the store holds under it now (a HEAD), None
        for none; ``""`` for an object whose metadata cannot be decoded (it is there, its
        entry cannot describe it). A key whose HEAD fails is passed over as ``entries``
        passes it over, not yielded: whether it is there is not known."""
        failing: FailedInARow[tuple[str, str, bool]] = FailedInARow("read")
        for key, future in ordered_map(self._pool, self._store.head, keys, self._window):
            self.heads += 1
            error = future.exception()
            if isinstance(error, OBJECT_FAILURES) and self.on_unavailable is not None:
                denied = isinstance(error, ObjectAccessDeniedError)
                failing.add(key, (key, error.message, denied), error)
                continue
            self._pass_over(failing.release())
            if error is None:
                yield key, future.result().etag
            elif isinstance(error, ObjectNotFoundError):
                yield key, None
            elif isinstance(error, UndecodableMetadataError):
                yield key, ""
            else:
                raise error
        self._pass_over(failing.release())

    def _pass_over(self, failed: list[tuple[str, str, bool]]) -> None:
        for key, reason, denied in failed:
            if self.on_unavailable is not None:
                self.on_unavailable(key, reason, denied)
            self._report(key, f"could not be read: {reason}")

    def _take(self, outcome: _Outcome) -> Entry | None:
        if self.on_object is not None and outcome.head is not None:
            self.on_object(outcome.head, outcome.recovered)
        key, error = outcome.key, outcome.error
        if outcome.recovered is not None:
            return self._accept(outcome.recovered)
        if isinstance(error, NotAnS3idxObjectError):
            self.skipped.add_not_s3idx(key)
            if self.foreign is not None:
                self.foreign.append(key)
            self._report(key, "not an s3idx object (no s3idx metadata)")
        elif isinstance(error, UndecodableMetadataError):
            self.skipped.add_undecodable(key, error.message)
            self._report(key, undecodable_reason(error))
        return None

    def _accept(self, recovered: Recovered) -> Entry | None:
        if self.key_field is None:
            self.key_field = recovered.key_field
        elif recovered.key_field != self.key_field:
            reason = other_key_field(recovered.key_field, self.key_field)
            self.skipped.add_undecodable(recovered.key, reason)
            self._report(recovered.key, unusable_reason(recovered.key_field, self.key_field))
            return None
        for path in recovered.fields:
            if path not in self.fields:
                self.fields.append(path)
                self.lacking[path] = self.accepted  # every object accepted before lacks it
        for path in self.fields:
            if path not in recovered.fields:
                self.lacking[path] = self.lacking.get(path, 0) + 1
        self.accepted += 1
        self.maggma.count(recovered)
        if recovered.rewrite_failure is not None:
            self._report(recovered.key, f"not rewritten: {recovered.rewrite_failure}")
        return recovered.entry

    def _report(self, key: str, reason: str) -> None:
        if self._on_skip is not None:
            self._on_skip(key, reason)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One object's head and what its metadata gave: an entry, or why not. No head when the
    store could not read one (a local object file with a damaged header)."""

    key: str
    head: ObjectHead | None
    recovered: Recovered | None = None
    error: NotAnS3idxObjectError | UndecodableMetadataError | None = None
    # The rewrite lost its condition: another writer replaced or deleted the object after it
    # was read, so this outcome is of the key as read again (``gone``: no object any more).
    overtaken: bool = False
    gone: bool = False


def _head_and_recover(
    store: ObjectStore, key_field: str | None, rewriter: Rewriter | None, item: str | ObjectHead
) -> _Outcome:
    key = item if isinstance(item, str) else item.key
    try:
        head = store.head(item) if isinstance(item, str) else item
    except UndecodableMetadataError as exc:
        return _Outcome(key, None, error=exc)
    try:
        recovered = recover_entry(head, key_field)
    except (NotAnS3idxObjectError, UndecodableMetadataError) as exc:
        return _Outcome(key, head, error=exc)
    # An object whose key field disagrees is refused by the collector: it must not be rewritten.
    if rewriter is not None and recovered.maggma and key_field in (None, recovered.key_field):
        try:
            return _Outcome(key, head, rewriter(recovered))
        except ObjectChangedError:
            return _read_again(store, key_field, key)
    return _Outcome(key, head, recovered)


def _read_again(store: ObjectStore, key_field: str | None, key: str) -> _Outcome:
    """The key as another writer left it, after it overtook a rewrite: that writer's object
    is indexed as it is (not rewritten: a maggma object is converted by the next rewrite)."""
    try:
        outcome = _head_and_recover(store, key_field, None, key)
    except ObjectNotFoundError:
        return _Outcome(key, None, overtaken=True, gone=True)
    return dataclasses.replace(outcome, overtaken=True)
