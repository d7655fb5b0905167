"""What engine operations report: results when they end (and ``Events``, from ``events.py``,
while they run)."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from s3idx.config import DEFAULT_KEY_FIELD

# Events and the limit live apart, so the CLI and a query use them without building every
# result type (start-up time, issue 17); they are still imported from here too.
from s3idx.engine.events import REPORTED_KEYS_LIMIT as REPORTED_KEYS_LIMIT
from s3idx.engine.events import Events as Events
from s3idx.errors import S3idxError
from s3idx.store.base import ObjectStore

if TYPE_CHECKING:
    from s3idx.engine.metadata_entry import Recovered
    from s3idx.engine.read import FetchedDocument


_Kept = TypeVar("_Kept")
_T = TypeVar("_T")


def keep_key(kept: list[_Kept], item: _Kept) -> None:
    """Keep ``item`` among the keys a result names, up to ``REPORTED_KEYS_LIMIT`` (the counts
    beside them stay exact)."""
    if len(kept) < REPORTED_KEYS_LIMIT:
        kept.append(item)


def key_reasons(pairs: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    """(key, reason) pairs as ``--json`` shows them."""
    return [{"key": key, "reason": reason} for key, reason in pairs]


# Why a key reconcile gave up on may not be indexed as the bucket holds it.
CONTENDED_REASON = "other writers kept changing its entry; run s3idx sync to set it"


class _CountsContended(Protocol):
    contended: int
    contended_keys: list[str]


def add_contended(result: _CountsContended, keys: Iterable[str]) -> None:
    """Count the keys ``reconcile`` gave up on (other writers kept moving their entries past
    its rounds: each may not describe its object; ``sync`` sets it right), and keep them (up
    to the bound)."""
    for key in keys:
        result.contended += 1
        keep_key(result.contended_keys, key)


@dataclass(frozen=True, slots=True)
class Reject:
    """An input record that was not stored."""

    location: str  # FILE:LINE
    reason: str
    raw: bytes  # the record exactly as read, its line end included when it had one
    whole_input: bool = False  # raw is a whole input with its own line ends (UTF-16, say)


# Why a put did not store a document it had read, when its own upload never started.
NOT_UPLOADED = "not uploaded: put stopped at an upload that failed"
# Read and accepted, never sent: the put stopped at another failure (its index, most often).
NOT_SENT = "not uploaded: put stopped at the error below before sending it"


@dataclass(slots=True)
class PutResult:
    read: int = 0
    stored: int = 0
    unchanged: int = 0
    rejected: int = 0
    duplicates: int = 0
    # With --shard: records read whose keys are other shards' (neither checked nor stored).
    other_shards: int = 0
    shard: str | None = None  # "I/N" with --shard
    bytes_stored: int = 0
    elapsed: float = 0.0
    # In a dry run, stored and bytes_stored count what the put would store (``as_dict``
    # names them would_store and would_store_bytes).
    dry_run: bool = False
    stopped_early: bool = False  # --max-errors reached
    interrupted: bool = False
    not_indexed: int = 0  # stored objects whose entries could not be written (sync adopts them)
    # Keys whose entry another writer changed during the upload: indexed from the bucket's
    # object instead (engine/reconcile.py); not_indexed counts those it could not settle.
    reconciled: int = 0
    # Of the not indexed, the keys reconcile gave up on (``add_contended``): other writers
    # kept changing their entries. Counted exactly, kept up to REPORTED_KEYS_LIMIT.
    contended: int = 0
    contended_keys: list[str] = field(default_factory=list)
    retries: int = 0
    # Manifests (engine/manifest_batches.py): written, writes that failed, and stored objects
    # that no manifest lists in the end (a later rebuild HEADs them; not exit 0).
    manifests_written: int = 0
    manifests_failed: int = 0
    not_in_manifests: int = 0
    # Documents read, accepted and not stored because the store failed uploads for good: the
    # uploads that failed, and those the failure stopped (the run stops at the first). Counted
    # exactly; their keys, with why, kept up to REPORTED_KEYS_LIMIT.
    unstored: int = 0
    unstored_keys: list[tuple[str, str]] = field(default_factory=list)

    def unstore(self, key: str, reason: str) -> None:
        self.unstored += 1
        keep_key(self.unstored_keys, (key, reason))

    def add_contended(self, keys: Iterable[str]) -> None:
        add_contended(self, keys)

    def as_dict(self) -> dict[str, Any]:
        """The summary ``--json`` prints. A dry run stored nothing: its counts are
        ``would_store`` and ``would_store_bytes``, ``stored`` and ``bytes_stored`` are 0 (as
        delete's dry run says ``deleted: 0`` beside ``would_delete``)."""
        data = asdict(self)
        data["unstored_keys"] = key_reasons(self.unstored_keys)
        data["would_store"] = self.stored if self.dry_run else 0
        data["would_store_bytes"] = self.bytes_stored if self.dry_run else 0
        if self.dry_run:
            data["stored"] = data["bytes_stored"] = 0
        return {"command": "put", **data, "docs_per_second": self.rate}

    @property
    def rate(self) -> float:
        return round(self.stored / self.elapsed, 1) if self.elapsed > 0 else 0.0


@dataclass(slots=True)
class GetResult:
    found: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)  # body not what was recorded
    # Of the unreadable, objects whose metadata cannot be decoded (sync's ``undecodable``).
    undecodable: int = 0
    # Keys whose reads the store kept failing until the retries ran out (a 500, a reset): not
    # the object's fault, so a later read may succeed; or that it denied these credentials.
    unavailable: list[tuple[str, str]] = field(default_factory=list)
    # Of the unavailable, those denied (a bucket policy on the key, a KMS key): read again,
    # they fail again until the permissions change.
    denied: int = 0
    # What to do about them: each hint their errors gave, once.
    hints: list[str] = field(default_factory=list)

    def add_unread(self, key: str, document: FetchedDocument) -> None:
        """Count a document whose object could not be read (``document.error`` is set), by
        why; an unavailable one's hint is kept once."""
        reason = document.error or "cannot be read"
        if document.unavailable:
            self.unavailable.append((key, reason))
            self.denied += document.denied
            if document.hint and document.hint not in self.hints:
                self.hints.append(document.hint)
        elif document.damaged:
            self.damaged.append((key, reason))
        else:
            self.unreadable.append((key, reason))
        self.undecodable += document.undecodable

    def as_dict(self) -> dict[str, Any]:
        return {"command": "get", **asdict(self)}


@dataclass(slots=True)
class DeleteResult:
    deleted: int = 0
    entries_deleted: int = 0
    missing: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False
    would_delete: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    # Left alone: the object (or entry) was not the version whose ETag the delete read:
    # rewritten by another writer meanwhile, or the entry was out of date. What the store
    # holds stands, and its entry is set to it.
    rewritten: int = 0
    # Keys named by the caller among those left alone: still there, so the delete failed them.
    kept: list[str] = field(default_factory=list)
    # Of the kept, those whose object now is one s3idx cannot index (another program's, or
    # with unreadable metadata): left in the store without an entry.
    kept_without_entry: list[str] = field(default_factory=list)
    # Deleted by finishing deletes an interrupted earlier run left in the index's journal.
    finished: int = 0
    # Of the failed, keys the store kept failing until the retries ran out (still journaled).
    unavailable: int = 0
    # Of the failed, keys whose objects the store denied these credentials (still journaled).
    denied: int = 0
    # Keys left alone whose entries reconcile could not set to the object stored now: other
    # writers kept changing them (``add_contended``; sync sets them right).
    contended: int = 0
    contended_keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = key_reasons(self.failed)
        return {"command": "delete", **data}

    def count_finished(self) -> None:
        """One object of an interrupted delete's journal removed by this run."""
        self.finished += 1

    def add_contended(self, keys: Iterable[str]) -> None:
        add_contended(self, keys)


@dataclass(slots=True)
class Skipped:
    """Objects that gave no entry, counted exactly, their keys kept up to a limit."""

    not_s3idx: int = 0
    not_s3idx_keys: list[str] = field(default_factory=list)
    undecodable: int = 0
    undecodable_keys: list[tuple[str, str]] = field(default_factory=list)
    vanished: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "not_s3idx": self.not_s3idx,
            "not_s3idx_keys": list(self.not_s3idx_keys),
            "undecodable": self.undecodable,
            "undecodable_keys": key_reasons(self.undecodable_keys),
            "vanished": self.vanished,
        }

    def add_not_s3idx(self, key: str) -> None:
        self.not_s3idx += 1
        keep_key(self.not_s3idx_keys, key)

    def add_undecodable(self, key: str, reason: str) -> None:
        self.undecodable += 1
        keep_key(self.undecodable_keys, (key, reason))


# Why a ``--rewrite`` left an object as it is though nothing failed.
OVERTAKEN_REASON = "another writer changed it since it was read; left as that writer wrote it"


@dataclass(slots=True)
class MaggmaObjects:
    """Objects written by maggma's S3Store that gave entries, and what ``--rewrite`` made of them.

    Their count is ``maggma`` in a summary's ``--json`` (``as_dict``) and in a checkpoint.
    """

    indexed: int = 0
    rewritten: int = 0
    rewrite_failed: int = 0
    rewrite_failed_keys: list[tuple[str, str]] = field(default_factory=list)
    # Not rewritten: another writer replaced or deleted the object after the rewrite read it,
    # and its write was kept (OVERTAKEN_REASON). Nothing failed.
    rewrite_skipped: int = 0
    rewrite_skipped_keys: list[str] = field(default_factory=list)

    def count(self, recovered: Recovered) -> None:
        self.indexed += recovered.maggma
        self.rewritten += recovered.rewritten
        if recovered.rewrite_failure is not None:
            self.rewrite_failed += 1
            keep_key(self.rewrite_failed_keys, (recovered.key, recovered.rewrite_failure))

    def overtaken(self, key: str) -> None:
        self.rewrite_skipped += 1
        keep_key(self.rewrite_skipped_keys, key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "maggma": self.indexed,
            "rewritten": self.rewritten,
            "rewrite_failed": self.rewrite_failed,
            "rewrite_failed_keys": key_reasons(self.rewrite_failed_keys),
            "rewrite_skipped": self.rewrite_skipped,
            "rewrite_skipped_keys": list(self.rewrite_skipped_keys),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaggmaObjects:
        """From ``as_dict``; a checkpoint written before maggma support (or before
        ``rewrite_skipped``) has none of it."""
        failed = [(d["key"], d["reason"]) for d in data.get("rewrite_failed_keys", ())]
        return cls(
            data.get("maggma", 0),
            data.get("rewritten", 0),
            data.get("rewrite_failed", 0),
            failed,
            data.get("rewrite_skipped", 0),
            list(data.get("rewrite_skipped_keys", ())),
        )


@dataclass(slots=True)
class RebuildResult:
    listed: int = 0
    written: int = 0
    resumed: bool = False
    interrupted: bool = False
    committed: bool = False
    key_field: str = DEFAULT_KEY_FIELD
    fields: list[str] = field(default_factory=list)
    # Fields some objects' metadata lacks, with how many: pending until `reindex` runs.
    pending_fields: dict[str, int] = field(default_factory=dict)
    skipped: Skipped = field(default_factory=Skipped)
    maggma: MaggmaObjects = field(default_factory=MaggmaObjects)
    retries: int = 0
    elapsed: float = 0.0
    listed_before: int = 0  # listed by the interrupted run resumed: not this run's work
    # Keys other writers wrote or deleted while the rebuild ran: read again before the swap.
    changed_meanwhile: int = 0
    # A resumed rebuild (the part listed before it) and the swap of a sharded one (the whole
    # store) list again what was done before: objects listed again, entries dropped (the object
    # is gone or gives no entry now) and entries read again (its ETag changed, or it is new).
    rechecked: int = 0
    recheck_dropped: int = 0
    recheck_refreshed: int = 0
    # Objects whose entry came from a manifest line, and objects HEADed (no line vouched).
    from_manifests: int = 0
    heads: int = 0
    manifests_read: int = 0
    # Compacted manifests written at the end, and the manifests they replaced, removed.
    manifests_written: int = 0
    manifests_removed: int = 0
    requests: int = 0  # requests sent to the store by this run
    # A sharded rebuild: this run's shard ("I/N"), listed objects of the other shards (not
    # counted in ``listed``), the shards done when it finished, and whether it swapped.
    shard: str | None = None
    other_shards: int = 0
    shards_done: list[int] = field(default_factory=list)
    # Whether this run does the swap: every one not interrupted without shards, else the last
    # shard to finish (``committed`` says the swap happened).
    swapped: bool = False
    # Entries every shard wrote (this run's own, without shards), and the index after the swap.
    total_written: int = 0
    total_entries: int = 0
    listed_through: str | None = None  # the last key listed (checkpoints)
    # Objects of deletes under way or interrupted (their journal records) this run removed
    # before it listed: counted by it alone, as a delete counts what it removes.
    deletes_finished: int = 0
    # Keys written meanwhile whose entries the reconcile after the swap (or a delete it
    # finished) could not settle: other writers kept changing them (``add_contended``).
    contended: int = 0
    contended_keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["skipped"], data["maggma"], data["listed_before"], data["listed_through"]
        data.update(self.skipped.as_dict())
        data.update(self.maggma.as_dict())
        data["objects_per_second"] = self.rate
        return {"command": "rebuild-index", **data}

    def add_contended(self, keys: Iterable[str]) -> None:
        add_contended(self, keys)

    @property
    def rate(self) -> float:
        """Objects listed per second by this run (not counting what a resumed run had done)."""
        listed = self.listed - self.listed_before
        return round(listed / self.elapsed, 1) if self.elapsed > 0 else 0.0


class _DriftCounts(Protocol):
    """What sync and verify both count as drift between the bucket and the index."""

    @property
    def bucket_only(self) -> int: ...
    @property
    def index_only(self) -> int: ...
    @property
    def changed(self) -> int: ...
    @property
    def interrupted_deletes(self) -> int: ...
    @property
    def interrupted_puts(self) -> int: ...


def drift_of(counts: _DriftCounts) -> int:
    """The one definition of drift, so ``sync --check`` and ``verify`` cannot disagree on it."""
    return (
        counts.bucket_only
        + counts.index_only
        + counts.changed
        + counts.interrupted_deletes
        + counts.interrupted_puts
    )


@dataclass(slots=True)
class SyncResult:
    listed: int = 0
    indexed: int = 0
    bucket_only: int = 0
    index_only: int = 0
    changed: int = 0
    # Deletes a crash interrupted (journaled): finished by sync, counted by --check/--dry-run.
    interrupted_deletes: int = 0
    # Entries a killed put was replacing (its put journal): set from the bucket by sync.
    interrupted_puts: int = 0
    # Keys only puts still running journaled (heartbeat within the stale bound): left alone,
    # not drift.
    puts_in_progress: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    # Keys another writer changed while sync wrote them: set from the bucket again.
    reconciled: int = 0
    check: bool = False
    dry_run: bool = False
    prune: bool = True
    # "I/N" with --shard: every count above is of this shard's keys only.
    shard: str | None = None
    interrupted: bool = False
    # Recorded fields that adopted objects' metadata lacks: marked pending (see reindex).
    pending_fields: dict[str, int] = field(default_factory=dict)
    skipped: Skipped = field(default_factory=Skipped)
    maggma: MaggmaObjects = field(default_factory=MaggmaObjects)
    retries: int = 0
    elapsed: float = 0.0
    # Manifests: per batch of HEADs, then compacted (written) in place of the ones there at
    # the start (removed); writes that failed; HEADed objects left in no manifest (not exit 0).
    manifests_written: int = 0
    manifests_removed: int = 0
    manifests_failed: int = 0
    not_in_manifests: int = 0
    # Objects whose HEAD failed until the retries ran out: left as the index had them (their
    # drift unknown); the next sync looks again. Keys kept up to REPORTED_KEYS_LIMIT.
    unavailable: int = 0
    # Of the unavailable, objects the store denied these credentials (a bucket policy on the
    # key, a KMS key): they fail again until the permissions change (exit 6, not 5).
    denied: int = 0
    unavailable_keys: list[tuple[str, str]] = field(default_factory=list)
    # Keys whose entries reconcile could not settle (an adoption, an update, an interrupted
    # put or delete): other writers kept changing them (``add_contended``). The next sync
    # tries them again.
    contended: int = 0
    contended_keys: list[str] = field(default_factory=list)

    @property
    def drift(self) -> int:
        return drift_of(self)

    def add_unavailable(self, key: str, reason: str, denied: bool = False) -> None:
        add_unavailable(self, key, reason, denied=denied)

    def add_contended(self, keys: Iterable[str]) -> None:
        add_contended(self, keys)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["skipped"], data["maggma"]
        data["unavailable_keys"] = key_reasons(self.unavailable_keys)
        data["drift"] = self.drift
        data.update(self.skipped.as_dict())
        data.update(self.maggma.as_dict())
        return {"command": "sync", **data}


@dataclass(slots=True)
class ReindexResult:
    fields: list[str] = field(default_factory=list)  # the fields every object should have
    pending: list[str] = field(default_factory=list)  # of those, the ones not complete before
    listed: int = 0
    updated: int = 0  # metadata replaced and entry written (or would be, with dry_run)
    up_to_date: int = 0  # metadata already had every field
    not_s3idx: int = 0
    failed: int = 0
    failed_keys: list[tuple[str, str]] = field(default_factory=list)
    # Of the failed, objects whose requests the store kept failing until the retries ran out.
    unavailable: int = 0
    # Of the failed, objects the store denied these credentials (exit 6, not 5).
    denied: int = 0
    vanished: int = 0
    # Entries another writer moved while their metadata was replaced, set from the bucket again.
    reconciled: int = 0
    completed: list[str] = field(default_factory=list)  # fields marked complete at the end
    # Fields left pending, not for failures: writers stored entries without them meanwhile (a
    # put begun before they were recorded); another reindex backfills those.
    pending_again: list[str] = field(default_factory=list)
    dry_run: bool = False
    interrupted: bool = False
    retries: int = 0
    elapsed: float = 0.0
    # Manifests of the objects whose metadata was replaced (see PutResult).
    manifests_written: int = 0
    manifests_failed: int = 0
    not_in_manifests: int = 0

    def fail(self, key: str, reason: str) -> None:
        self.failed += 1
        keep_key(self.failed_keys, (key, reason))

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "reindex",
            "fields": list(self.fields),
            "pending": list(self.pending),
            "listed": self.listed,
            "updated": self.updated,
            "up_to_date": self.up_to_date,
            "not_s3idx": self.not_s3idx,
            "failed": self.failed,
            "failed_keys": key_reasons(self.failed_keys),
            "unavailable": self.unavailable,
            "denied": self.denied,
            "vanished": self.vanished,
            "reconciled": self.reconciled,
            "completed": list(self.completed),
            "pending_again": list(self.pending_again),
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "retries": self.retries,
            "manifests_written": self.manifests_written,
            "manifests_failed": self.manifests_failed,
            "not_in_manifests": self.not_in_manifests,
            "elapsed": self.elapsed,
            "objects_per_second": self.rate,
        }

    @property
    def rate(self) -> float:
        return round(self.listed / self.elapsed, 1) if self.elapsed > 0 else 0.0


@dataclass(slots=True)
class VerifyResult:
    listed: int = 0  # objects in the store
    indexed: int = 0  # entries in the index
    checked: int = 0  # objects read and checked
    ok: int = 0
    damaged: int = 0
    # Of the damaged, objects whose metadata cannot be decoded: sync's ``undecodable``.
    undecodable: int = 0
    not_s3idx: int = 0  # objects without s3idx metadata (or maggma's, with no hash to check)
    bucket_only: int = 0
    index_only: int = 0
    changed: int = 0
    interrupted_deletes: int = 0  # journaled deletes not finished: sync or delete finishes them
    interrupted_puts: int = 0  # put journal records a killed put left: sync settles them
    puts_in_progress: int = 0  # keys only puts still running journaled: not drift
    sample: float = 1.0
    interrupted: bool = False
    retries: int = 0
    elapsed: float = 0.0
    # Objects whose reads failed until the retries ran out: not checked; verify again later.
    # Keys kept up to REPORTED_KEYS_LIMIT.
    unavailable: int = 0
    # Of the unavailable, objects the store denied these credentials (a bucket policy on the
    # key, a KMS key): they fail again until the permissions change (exit 6, not 5).
    denied: int = 0
    unavailable_keys: list[tuple[str, str]] = field(default_factory=list)

    @property
    def drift(self) -> int:
        return drift_of(self)

    def add_unavailable(self, key: str, reason: str, denied: bool = False) -> None:
        add_unavailable(self, key, reason, denied=denied)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["unavailable_keys"] = key_reasons(self.unavailable_keys)
        return {"command": "verify", **data, "drift": self.drift}


class _CountsUnavailable(Protocol):
    unavailable: int
    denied: int
    unavailable_keys: list[tuple[str, str]]


def add_unavailable(
    result: _CountsUnavailable, key: str, reason: str, *, denied: bool = False
) -> None:
    """Count an object the store kept failing (or ``denied`` these credentials), and keep its
    key (up to the bound)."""
    result.unavailable += 1
    result.denied += denied
    keep_key(result.unavailable_keys, (key, reason))


class _Timed(Protocol):
    elapsed: float


_P = ParamSpec("_P")
_R = TypeVar("_R", bound=_Timed)


def accounted(
    run: Callable[Concatenate[ObjectStore, _P], _R],
) -> Callable[Concatenate[ObjectStore, _P], _R]:
    """Stamps what ``run`` returns, or the partial result its failure carries (see
    ``reported_on_failure``), with ``elapsed`` and, for results that count them, ``retries``:
    how many retries the store (its first argument) made meanwhile. A ``RetryingStore`` counts
    them; a bare store makes none. Every ``run_*`` of the engine is wrapped in it."""

    @functools.wraps(run)
    def timed(store: ObjectStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        started = time.monotonic()
        retries = _retries(store)
        running = len(_RUNNING)
        try:
            result = run(store, *args, **kwargs)
        except (S3idxError, KeyboardInterrupt) as exc:
            partial = getattr(exc, "partial_result", None)
            if partial is not None:
                _stamp(partial, started, _retries(store) - retries)
            raise
        finally:
            del _RUNNING[running:]  # what this run registered (``started``)
        _stamp(result, started, _retries(store) - retries)
        return result

    return timed


def _retries(store: ObjectStore) -> int:
    count = getattr(store, "retries", 0)
    return count if isinstance(count, int) else 0


def _stamp(result: object, started: float, retries: int) -> None:
    if hasattr(result, "elapsed"):
        result.elapsed = time.monotonic() - started
    if hasattr(result, "retries"):
        result.retries = retries


# The results of the operations running in this process, innermost last (see in_progress).
_RUNNING: list[Any] = []


@contextlib.contextmanager
def reported_on_failure(result: Any) -> Iterator[None]:
    """An S3idxError or a KeyboardInterrupt (Ctrl-C where the operation does not cooperate)
    leaving the block carries ``result`` (the innermost block's, when nested) as its
    ``partial_result``, so the summary still says what the operation had done
    (``cli._summary_on_failure``); while inside, ``in_progress`` returns it.

    Only the work whose counts mean something is wrapped: a failure before any (a refused
    argument, a missing index) is an error with no summary."""
    _RUNNING.append(result)
    try:
        yield
    except (S3idxError, KeyboardInterrupt) as exc:
        if getattr(exc, "partial_result", None) is None:
            exc.partial_result = result  # type: ignore[union-attr]
        raise
    finally:
        for place in range(len(_RUNNING) - 1, -1, -1):
            if _RUNNING[place] is result:
                del _RUNNING[place]
                break


def started(result: _T) -> _T:
    """Register ``result`` as the operation's running result from its creation (until the
    ``accounted`` run that created it ends), so ``in_progress`` has it before the work that
    ``reported_on_failure`` wraps begins: a process ended at once while it lists or reads
    still says what it had done."""
    _RUNNING.append(result)
    return result


def in_progress() -> Any | None:
    """The result of the innermost operation running, its counts as reached so far: what a
    process ended at once (a second Ctrl-C) still says it had done."""
    return _RUNNING[-1] if _RUNNING else None
