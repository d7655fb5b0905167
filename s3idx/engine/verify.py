"""``verify``: read objects back and check each is what its metadata and index entry say.

The store listing and the index's bookkeeping are merged in key order (as ``sync`` does), so
drift is counted exactly as ``sync --check`` counts it: objects without an entry
(``bucket-only``), entries without an object (``index-only``), objects whose ETag or size differ
from what the index recorded (``changed``). Then every object (or a random ``sample`` of them)
is read, and each of these is *damage*:

- the body does not match its recorded sha256, is cut short, has trailing bytes, or is not in
  the codec its metadata names (the checks every read makes, see ``s3idx.engine.read``);
- the body is not a JSON object, or its key field is not the object's key;
- the index entry in the metadata differs from the one derived from the body;
- the index's entry (for an object in step) differs from the metadata's, or its bookkeeping
  names another sha256 or codec.

Bodies are read in parallel, at most ``2 * workers`` ahead; memory does not grow with the store.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from s3idx import codec, maggma_format
from s3idx.config import DEFAULT_PUT_STALE_SECONDS
from s3idx.engine.body_check import body_problem, differing_fields, not_json
from s3idx.engine.concurrency import ordered_map, prefetched, worker_pool
from s3idx.engine.metadata_entry import unusable_reason
from s3idx.engine.probe import in_key_order
from s3idx.engine.put_journal import INTERRUPTED_PUT, drifted, put_journaled
from s3idx.engine.read import SPOOL_THRESHOLD, fetch_document
from s3idx.engine.results import Events, VerifyResult, accounted, reported_on_failure, started
from s3idx.engine.retry import OBJECT_FAILURES, FailedInARow, ObjectFailure
from s3idx.errors import (
    CorruptObjectError,
    MissingDependencyError,
    NotAnS3idxObjectError,
    ObjectAccessDeniedError,
    ObjectNotFoundError,
    UndecodableMetadataError,
    quote_key,
)
from s3idx.index.base import Bookkeeping, Entry, Index
from s3idx.limits import batched
from s3idx.store.base import ObjectInfo, ObjectStore

BUCKET_ONLY, INDEX_ONLY, CHANGED = "bucket-only", "index-only", "changed"
INTERRUPTED_DELETE = "interrupted-delete"  # journaled by a delete that did not finish
LOOKUP_BATCH = 256  # index entries fetched at once for the objects about to be read


@dataclass(frozen=True, slots=True)
class _Candidate:
    """An object to read; ``indexed`` when its entry is in step and is to be compared too;
    ``drift`` (``bucket-only``, ``changed``) when it has no entry or another one: drift, unless
    the read finds that sync could not index it either (not s3idx's, undecodable metadata)."""

    key: str
    indexed: tuple[Entry, Bookkeeping] | None
    drift: str | None = None
    # The fields whose search rows (SQLite's) disagree with the indexed entry.
    unsearchable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Outcome:
    problems: tuple[str, ...] = ()
    unchecked: str | None = None  # why the object was not checked (counted as not_s3idx)
    not_s3idx: bool = False  # no s3idx or maggma metadata: sync neither adopts it nor counts it
    # Its metadata cannot be decoded (or names another key): damage, and as sync cannot index
    # it, not drift (sync's ``undecodable``).
    undecodable: bool = False
    vanished: bool = False  # deleted since it was listed
    # Its reads failed until the retries ran out, or it was denied these credentials: not
    # checked (the next verify tries again).
    unavailable: ObjectFailure | None = None


@accounted
def run_verify(
    store: ObjectStore,
    index: Index,
    *,
    workers: int,
    sample: float = 1.0,
    events: Events | None = None,
    stop: threading.Event | None = None,
    spool_threshold: int = SPOOL_THRESHOLD,
    rng: random.Random | None = None,
    put_stale_after: float = DEFAULT_PUT_STALE_SECONDS,
) -> VerifyResult:
    """Check objects against their metadata and index entries; report damage and drift.

    Put journal records are split as sync splits them: a dead run's are ``interrupted-put``
    drift, a live run's (``put_stale_after``) a put in progress, counted apart."""
    events = events or Events()
    result = started(VerifyResult(sample=sample))
    chosen = _sampler(sample, rng or random.Random())
    journaled = index.journaled()
    for key in journaled:  # reported only: verify changes nothing
        result.interrupted_deletes += 1
        events.drift(INTERRUPTED_DELETE, key)
    journal = put_journaled(index, stale_after=put_stale_after)
    # As sync --check: only records whose key's object is not its entry's are drift, and
    # those keys are not counted again as changed.
    interrupted = drifted(store, index, journal, workers=workers, stale_after=put_stale_after)
    for key in interrupted:
        result.interrupted_puts += 1
        events.drift(INTERRUPTED_PUT, key)
    result.puts_in_progress = len(journal.in_progress)
    interrupted_puts = {*interrupted, *journal.in_progress}
    candidates = _candidates(store, index, result, events, chosen, journaled, interrupted_puts)
    settings = index.settings()
    key_field = settings.key_field if settings is not None else None
    check = partial(_check, store, spool_threshold, key_field)
    with (
        reported_on_failure(result),
        worker_pool(workers, "s3idx-verify") as pool,
    ):
        # Unreadable objects in a row, held back: FAILED_IN_A_ROW of them are the store down
        # (one error), not that many objects to report.
        failing: FailedInARow[tuple[_Candidate, _Outcome]] = FailedInARow("read")
        for candidate, future in ordered_map(pool, check, candidates, 2 * workers):
            outcome = future.result()
            if outcome.unavailable is not None:
                failing.add(candidate.key, (candidate, outcome), outcome.unavailable)
                continue
            for held in [*failing.release(), (candidate, outcome)]:
                _record(result, events, *held)
            events.progress(result.checked, None, {"damaged": result.damaged})
            if stop is not None and stop.is_set():
                result.interrupted = True
                break
        for held in failing.release():
            _record(result, events, *held)
    return result


def _sampler(sample: float, rng: random.Random) -> Any:
    if sample >= 1.0:
        return lambda: True
    return lambda: rng.random() < sample


def _record(result: VerifyResult, events: Events, candidate: _Candidate, outcome: _Outcome) -> None:
    key = candidate.key
    if outcome.vanished:
        return
    if candidate.drift == CHANGED and outcome.not_s3idx:
        # As sync --check counts it: another tool's object replaced the entry's document.
        result.index_only += 1
        events.drift(INDEX_ONLY, key)
    elif candidate.drift is not None and not (outcome.not_s3idx or outcome.undecodable):
        # As sync --check counts it: drift only when sync could index the object.
        if candidate.drift == BUCKET_ONLY:
            result.bucket_only += 1
        else:
            result.changed += 1
        events.drift(candidate.drift, key)
    if outcome.unavailable is not None:
        denied = isinstance(outcome.unavailable, ObjectAccessDeniedError)
        result.add_unavailable(key, outcome.unavailable.message, denied=denied)
        events.skipped(key, f"could not be read: {outcome.unavailable.message}")
        return
    if outcome.unchecked is not None:
        result.not_s3idx += 1
        events.skipped(key, outcome.unchecked)
        return
    result.checked += 1
    result.undecodable += outcome.undecodable
    if outcome.problems:
        result.damaged += 1
        events.damaged(key, "; ".join(outcome.problems))
    else:
        result.ok += 1


def _candidates(
    store: ObjectStore,
    index: Index,
    result: VerifyResult,
    events: Events,
    chosen: Any,
    journaled: dict[str, str],
    interrupted_puts: set[str],
) -> Iterator[_Candidate]:
    """The objects to read, with their index entries looked up a batch at a time. Objects
    without an entry or with another one are always read, sample or not: only a read tells
    drift from objects sync cannot index (not s3idx's, undecodable)."""
    to_read = (
        (key, in_step, drift)
        for key, in_step, drift in _merged(
            store, index, result, events, journaled, interrupted_puts
        )
        if drift is not None or chosen()
    )
    for batch in batched(to_read, LOOKUP_BATCH):
        in_step_keys = [key for key, in_step, _ in batch if in_step]
        found = index.bookkeeping(in_step_keys)
        mismatches = index.search_mismatches(in_step_keys)
        for key, in_step, drift in batch:
            if not in_step:
                yield _Candidate(key, None, drift)
            else:
                yield _Candidate(key, found.get(key), drift, tuple(mismatches.get(key, ())))


def _merged(
    store: ObjectStore,
    index: Index,
    result: VerifyResult,
    events: Events,
    journaled: dict[str, str],
    interrupted_puts: set[str],
) -> Iterator[tuple[str, bool, str | None]]:
    """(key, in step, drift kind or None) for every listed object; index-only drift is counted
    and reported on the way, bucket-only and changed once the object is read (``_record``). An
    object that a delete journaled is that delete's, already counted: not drift."""
    listing = in_key_order(prefetched(store.list_objects()), "store listing", "verify")
    entries = in_key_order(index.iter_bookkeeping(), "index", "verify")
    obj: ObjectInfo | None = next(listing, None)
    entry: tuple[str, Bookkeeping] | None = next(entries, None)
    while obj is not None or entry is not None:
        if entry is None or (obj is not None and obj.key < entry[0]):
            assert obj is not None
            result.listed += 1
            if journaled.get(obj.key) != obj.etag:
                yield obj.key, False, BUCKET_ONLY
            obj = next(listing, None)
        elif obj is None or entry[0] < obj.key:
            result.indexed += 1
            result.index_only += 1
            events.drift(INDEX_ONLY, entry[0])
            entry = next(entries, None)
        else:
            result.listed += 1
            result.indexed += 1
            in_step = obj.etag == entry[1].etag and obj.size == entry[1].size
            being_deleted = journaled.get(obj.key) == obj.etag
            # A key a killed put was replacing is already counted, as an interrupted put.
            settled = in_step or being_deleted or obj.key in interrupted_puts
            drift = None if settled else CHANGED
            yield obj.key, in_step, drift
            obj, entry = next(listing, None), next(entries, None)


def _check(
    store: ObjectStore, spool_threshold: int, key_field: str | None, candidate: _Candidate
) -> _Outcome:
    """Read one object; what is wrong with it (nothing for a sound one)."""
    try:
        document = fetch_document(
            store, candidate.key, spool_threshold=spool_threshold, keep_parsed=True
        )
    except ObjectNotFoundError:
        return _Outcome(vanished=True)
    except OBJECT_FAILURES as exc:  # retries spent (RetryingStore), or denied: this object's
        return _Outcome(unavailable=exc)
    except UndecodableMetadataError as exc:
        reason = _without_key_prefix(exc.message, candidate.key)
        return _Outcome(problems=(reason,), undecodable=True)
    except NotAnS3idxObjectError:
        return _Outcome(unchecked="not an s3idx object: not checked", not_s3idx=True)
    except MissingDependencyError:  # maggma's msgpack bodies, and msgpack is not installed
        return _Outcome(unchecked=_MAGGMA_UNCHECKED)
    except CorruptObjectError as exc:  # damaged body, or metadata that cannot be read
        return _Outcome(problems=(_without_key_prefix(exc.message, candidate.key),))
    assert document.head is not None
    metadata = document.head.metadata
    if maggma_format.is_maggma_metadata(metadata) and codec.META_FORMAT not in metadata:
        return _Outcome(unchecked=_MAGGMA_UNCHECKED)
    recorded = codec.parse_metadata(metadata)
    if key_field is not None and recorded.key_field != key_field:
        document.close()
        reason = unusable_reason(recorded.key_field, key_field)
        return _Outcome(problems=(reason,), undecodable=True)
    # The read checked the body as every read does (a damaged one raised CorruptObjectError
    # above): whole when it held it in memory (``parsed``), object and key field alone when it
    # spooled it. A spooled body is parsed here, and checked whole.
    checked = document.parsed is not None
    try:
        body = document.parse()
    except orjson.JSONDecodeError as exc:
        return _Outcome(problems=(not_json(exc),))
    problem = None if checked else body_problem(candidate.key, body, recorded)
    problems = [] if problem is None else [problem]
    if candidate.indexed is not None:
        problems += _index_problems(recorded, *candidate.indexed)
    if candidate.unsearchable:
        problems.append(
            f"index's search rows differ from its entry in {', '.join(candidate.unsearchable)}, "
            "so queries on them answer wrong (run s3idx rebuild-index)"
        )
    return _Outcome(problems=tuple(problems))


_MAGGMA_UNCHECKED = "written by maggma (no recorded hash): not checked"


def _without_key_prefix(message: str, key: str) -> str:
    prefix = f"object {quote_key(key)}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _index_problems(recorded: codec.MetadataEntry, entry: Entry, kept: Bookkeeping) -> list[str]:
    problems = []
    differing = differing_fields(recorded.entry, entry)
    if differing:
        problems.append(
            f"index entry differs from the object's metadata in {', '.join(differing)} "
            "(run s3idx rebuild-index)"
        )
    for name, in_index, in_metadata in (
        ("sha256", kept.sha256, recorded.sha256),
        ("codec", kept.codec, recorded.codec),
    ):
        if in_index != in_metadata:
            problems.append(
                f"index records {name} {in_index!r} but the object's metadata {in_metadata!r}"
            )
    return problems
