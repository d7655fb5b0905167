"""The index protocol: what every index backend (SQLite, MongoDB) provides.

An *entry* is a plain dict: the key field, the searchable fields (nested as in the document, so a
dotted path ``a.b`` is stored as ``{"a": {"b": ...}}``), ``last_updated`` (a UTC datetime) and
bookkeeping under ``_s3idx``: ``{"etag", "size", "sha256", "codec"}``. Values are str, int,
float, bool, None, list, dict or datetime, and come back with the same types.

Every entry write also records a *stamp*, new for each write (``new_stamp``), beside the
bookkeeping; it is never part of an entry read back. A compare-and-set compares the ETag and
the stamp (a ``Version``): storing again the bytes an entry already describes keeps its ETag
but not its stamp, so a writer that read the entry before that write loses its compare-and-set
(without the stamp it would win, and index an object the bucket no longer holds: the ABA
race).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from s3idx.codec import RESERVED_FIELD
from s3idx.errors import IndexSettingsError, S3idxError
from s3idx.frozen import Frozen, init_field
from s3idx.sharding import Shard

Entry = dict[str, Any]
_MISSING = object()
SortSpec = Sequence[tuple[str, int]]


class Version(NamedTuple):
    """What a compare-and-set compares: the ETag an entry records and the stamp of the write
    that left it (None: an entry written before s3idx recorded stamps)."""

    etag: str
    stamp: str | None


# What a compare-and-set expects of a key: a Version read from the index, or a bare ETag
# (compared alone: any write that left that ETag matches), or None (no entry).
Expected = Version | str


def new_stamp() -> str:
    """A stamp for one write: 64 random bits, so no two writes of a key ever share one."""
    return os.urandom(8).hex()


def is_expected(current: Version | None, expected: Expected | None) -> bool:
    """Whether a key whose entry is now ``current`` (None: no entry) is as ``expected``."""
    if current is None or expected is None:
        return current is None and expected is None
    if isinstance(expected, Version):
        return current == expected
    return current.etag == expected


class Bookkeeping(Frozen):
    """What the index recorded about an entry's object; ``stamp`` names the write that
    recorded it (see ``Version``; not compared: it says nothing of the object)."""

    __slots__ = ("codec", "etag", "sha256", "size", "stamp")
    _fields = ("etag", "size", "sha256", "codec")
    _uncompared = ("stamp",)
    etag: str
    size: int
    sha256: str | None
    codec: str
    stamp: str | None

    def __init__(
        self, etag: str, size: int, sha256: str | None, codec: str, stamp: str | None = None
    ) -> None:
        init_field(self, "etag", etag)
        init_field(self, "size", size)
        init_field(self, "sha256", sha256)
        init_field(self, "codec", codec)
        init_field(self, "stamp", stamp)

    @property
    def version(self) -> Version:
        return Version(self.etag, self.stamp)

    def as_dict(self) -> dict[str, Any]:
        return {"etag": self.etag, "size": self.size, "sha256": self.sha256, "codec": self.codec}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bookkeeping:
        return cls(data["etag"], int(data["size"]), data.get("sha256"), data["codec"])

    @classmethod
    def read_back(
        cls, etag: Any, size: Any, sha256: Any, codec: Any, stamp: Any = None
    ) -> Bookkeeping:
        """Bookkeeping as an index holds it, checked: ValueError naming the first item that is
        not what s3idx writes there (the index was changed by hand)."""
        if not isinstance(etag, str) or not etag:
            raise ValueError(f"etag {etag!r:.100} is not a non-empty string")
        if not is_count(size):
            raise ValueError(f"size {size!r:.100} is not a number of bytes")
        if sha256 is not None and not isinstance(sha256, str):
            raise ValueError(f"sha256 {sha256!r:.100} is not a string")
        if not isinstance(codec, str) or not codec:
            raise ValueError(f"codec {codec!r:.100} is not a non-empty string")
        if stamp is not None and (not isinstance(stamp, str) or not stamp):
            raise ValueError(f"stamp {stamp!r:.100} is not a non-empty string")
        return cls(etag, size, sha256, codec, stamp)


def is_count(value: Any) -> bool:
    """Whether ``value`` is a count as s3idx writes one back: a whole number from 0, not a
    bool (JSON and BSON both read ``true`` as one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def settle_pending(
    pending: Sequence[tuple[str, int]],
    fields: Sequence[str],
    remaining: int,
    kept: Collection[str] = (),
) -> tuple[tuple[str, int], ...]:
    """``pending`` after a backfill of ``fields`` left ``remaining`` entries without them.

    A field no longer counts more entries than it did (the failures are among them), nor
    more than ``remaining``; a count of 0 (unknown) becomes ``remaining``. A field of ``kept``
    stays as it is: writers marked it pending while the backfill ran (``marks_changed``)."""
    settled = []
    for name, count in pending:
        if name in fields and name not in kept:
            count = min(count, remaining) if count else remaining
            if not count:
                continue
        settled.append((name, count))
    return tuple(settled)


def marked_pending(
    pending: Sequence[tuple[str, int]],
    marks: Mapping[str, int],
    recorded: Collection[str],
    more: Sequence[tuple[str, int]],
) -> tuple[tuple[tuple[str, int], ...], dict[str, int]]:
    """``pending`` and ``marks`` (field -> how many times a writer marked it pending) after
    ``mark_pending(more)``: each recorded field it adds entries to counts them, and one more
    mark; a field the index does not record is ignored."""
    counts = dict(pending)
    counted = dict(marks)
    for name, entries in more:
        if name in recorded and entries > 0:
            counts[name] = counts.get(name, 0) + entries
            counted[name] = counted.get(name, 0) + 1
    return tuple(counts.items()), counted


def marks_changed(
    fields: Sequence[str], marks: Mapping[str, int] | None, since: Mapping[str, int] | None
) -> set[str]:
    """The fields a writer marked pending since ``since`` was read (``pending_marks``): all of
    them when the marks are unknown (damaged), none without ``since``."""
    if since is None:
        return set()
    if marks is None:
        return set(fields)
    return {name for name in fields if marks.get(name, 0) != since.get(name, 0)}


def key_problem(entry: Mapping[str, Any], key: str, key_field: str) -> str | None:
    """What is wrong with the key field of an entry read back under ``key`` (None: nothing).
    s3idx writes an entry under the key its key field holds; another value was put there by
    hand."""
    value: Any = entry
    if key_field in entry:
        value = entry[key_field]
    else:  # a dotted key field is a path into the entry (MongoDB's)
        for part in key_field.split("."):
            value = value.get(part, _MISSING) if isinstance(value, Mapping) else _MISSING
    if value is _MISSING:
        return f"lacks its key field {key_field!r}"
    if not isinstance(value, str) or value != key:
        return f"holds {value!r:.100} in its key field {key_field!r}, not its key"
    return None


def with_bookkeeping(entry: Mapping[str, Any], bookkeeping: Bookkeeping) -> Entry:
    """A copy of ``entry`` carrying its object's bookkeeping under ``_s3idx``."""
    return {**entry, RESERVED_FIELD: bookkeeping.as_dict()}


class PutIntent(NamedTuple):
    """A put journal record: the run ``run`` is replacing the entry of ``key`` whose ETag is
    ``etag``. ``at``: when the run last showed it was alive (Unix time, the writer's clock;
    refreshed by ``journal_puts`` and ``beat_puts``), None for a record an earlier s3idx
    wrote (its run's liveness is unknown)."""

    key: str
    etag: str
    run: str
    at: float | None = None


class IndexSettings(Frozen):
    """What an index was created with: its key field and the searchable fields seen so far.

    ``pending`` names the fields (among ``fields``) added while documents were already stored,
    each with how many entries the index held then: those entries lack the field until
    ``reindex`` backfills it. A field added to an empty index is complete at once.
    """

    __slots__ = ("fields", "key_field", "pending")
    _fields = ("key_field", "fields", "pending")
    key_field: str
    fields: tuple[str, ...]
    pending: tuple[tuple[str, int], ...]

    def __init__(
        self,
        key_field: str,
        fields: tuple[str, ...] = (),
        pending: tuple[tuple[str, int], ...] = (),
    ) -> None:
        init_field(self, "key_field", key_field)
        init_field(self, "fields", fields)
        init_field(self, "pending", pending)

    @property
    def complete_fields(self) -> tuple[str, ...]:
        waiting = {name for name, _ in self.pending}
        return tuple(f for f in self.fields if f not in waiting)


class RebuildStatus(Frozen):
    """A rebuild in progress, as ``info`` shows it: ``shards`` is None for one not split into
    shards; ``joined`` are the shards that started on it, ``done`` those that finished their
    part, and ``swapping`` says one of them has claimed the swap."""

    __slots__ = ("done", "joined", "key_field", "shards", "started", "swapping")
    _fields = ("key_field", "started", "shards", "joined", "done", "swapping")
    key_field: str
    started: datetime | None
    shards: int | None
    joined: tuple[int, ...]
    done: tuple[int, ...]
    swapping: bool

    def __init__(
        self,
        key_field: str,
        started: datetime | None = None,
        shards: int | None = None,
        joined: tuple[int, ...] = (),
        done: tuple[int, ...] = (),
        swapping: bool = False,
    ) -> None:
        init_field(self, "key_field", key_field)
        init_field(self, "started", started)
        init_field(self, "shards", shards)
        init_field(self, "joined", joined)
        init_field(self, "done", done)
        init_field(self, "swapping", swapping)

    def describe(self) -> str:
        when = f" since {self.started:%Y-%m-%d %H:%M:%S} UTC" if self.started else ""
        if self.shards is None:
            return f"in progress{when} (not sharded)"
        done = ", ".join(map(str, self.done)) or "none"
        state = "swapping" if self.swapping else f"{len(self.done)} of {self.shards} shards done"
        return f"in progress{when}: {state} (done: {done})"


def superseded_rebuild(location: str) -> S3idxError:
    """A rebuild whose staging index another ``rebuild-index`` took over (a plain start always
    does: a killed rebuild cannot be told from a running one), or that another process
    finished or aborted, while it ran."""
    return S3idxError(
        f"the rebuild of {location} was replaced by another rebuild-index, or finished or "
        "aborted by another process, while this one ran",
        hint="`s3idx info` shows whether a rebuild is still in progress; run rebuild-index "
        "again only once none is (a new start would replace it in turn)",
    )


def join_refusal(
    location: str,
    status: RebuildStatus,
    key_field: str,
    shard: Shard | None,
    *,
    resume: bool,
) -> IndexSettingsError | None:
    """Why a rebuild started as ``shard`` may not work on the staging index ``status`` describes
    (None: it may join it, or continue it with ``resume``).

    The one place both backends decide it. Unrelated means: split another way (another N, or
    not split at one side), another key field, or (without ``resume``) a shard that already
    started on it: a second copy of a shard, or a stale rebuild that crashed; the message shows
    when it started, so a user can tell which.
    """
    when = f", started {status.started:%Y-%m-%d %H:%M:%S} UTC" if status.started else ""
    done = ", ".join(map(str, status.done)) or "none"
    if status.shards is None:
        if shard is None:
            return None
        return IndexSettingsError(
            f"index {location} has a rebuild-index without --shard in progress{when}; "
            f"shard {shard} cannot join it",
            hint="continue that rebuild with rebuild-index --resume (without --shard), or add "
            "--restart to discard it and start the sharded rebuild over",
        )
    if shard is None:
        return IndexSettingsError(
            f"index {location} has a rebuild in progress split into {status.shards} shards"
            f"{when} (shards done: {done})",
            hint=f"continue it with rebuild-index --shard I/{status.shards} --resume for each "
            "shard not done, or run rebuild-index without --resume to discard it",
        )
    if shard.count != status.shards:
        return IndexSettingsError(
            f"index {location} has a rebuild in progress split into {status.shards} shards"
            f"{when} (shards done: {done}), not {shard.count}",
            hint=f"give --shard I/{status.shards} (with --resume for a shard that stopped), "
            "or add --restart to discard that rebuild and start over",
        )
    if status.key_field != key_field:
        return IndexSettingsError(
            f"index {location} has a rebuild in progress with key field "
            f"{status.key_field!r}, not {key_field!r}{when}",
            hint="add --restart to discard that rebuild and start over",
        )
    if not resume and shard.index in status.joined:
        return IndexSettingsError(
            f"shard {shard} already started on the rebuild of index {location} in progress"
            f"{when} (shards done: {done})",
            hint="add --resume to continue that shard (after it stopped), or --restart to "
            "discard that rebuild and start over; a second copy of a running shard is refused",
        )
    return None


@runtime_checkable
class IndexRebuild(Protocol):
    """A fresh index being filled; ``commit`` swaps it in at once, ``abort`` drops it."""

    def upsert(self, entries: Sequence[Entry]) -> None: ...

    def has_keys(self, keys: Sequence[str]) -> set[str]: ...

    def iter_bookkeeping(self) -> Iterator[tuple[str, Bookkeeping]]:
        """Every key of the fresh index with its bookkeeping, in ascending key order (UTF-8
        byte order), as ``Index.iter_bookkeeping``; the caller may write while it iterates."""
        ...

    def last_key(self) -> str | None:
        """The greatest key of the fresh index (UTF-8 byte order), None while it is empty."""
        ...

    def save_checkpoint(self, checkpoint: Mapping[str, Any]) -> None: ...

    def checkpoint(self) -> dict[str, Any] | None: ...

    def commit(self, settings: IndexSettings, *, store: str | None = None) -> None:
        """Swap the new index in, recording ``settings`` (pending fields included) and
        ``store`` as the store it describes (none recorded: None)."""
        ...

    def abort(self) -> None:
        """Drop the fresh index; clears the rebuild flag and the change log too."""
        ...

    def changed_keys(self) -> Iterator[str]:
        """Distinct keys the live index logged as written since this rebuild started (any
        order): every entry write of the live index logs its keys while the rebuild runs."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Remove entries from the fresh index."""
        ...

    def finish(self) -> None:
        """After ``commit``: clear the rebuild flag and the change log."""
        ...

    # A sharded rebuild (``start_rebuild(..., shard=...)``): every shard fills the same staging
    # index, each with its own checkpoint; the last to finish swaps it in.

    def shard_done(self, index: int) -> None:
        """Record shard ``index`` as done (after its last checkpoint), atomically."""
        ...

    def shards_done(self) -> set[int]:
        """The shards recorded as done (empty for a rebuild not split into shards)."""
        ...

    def claim_swap(self) -> bool:
        """True for exactly one caller, once every shard is done: that one does the end of
        the rebuild (catch-up, ``commit``, ``finish``). A handle opened with ``resume`` also
        takes over a claim whose swap never happened (its claimer died)."""
        ...

    def shard_checkpoints(self) -> dict[int, dict[str, Any]]:
        """Every shard's last checkpoint, by shard (what each found, for the swap to merge)."""
        ...


@runtime_checkable
class Index(Protocol):
    """A queryable cache of index entries, keyed by the document key."""

    location: str  # for messages; never holds a password

    def settings(self) -> IndexSettings | None:
        """The recorded settings, or None for an index that has never been written."""
        ...

    def configure(self, key_field: str, fields: Sequence[str]) -> IndexSettings:
        """Record the key field (it may never change) and add searchable fields.

        Creates the backend's indexes for new fields. A field new to an index that holds entries
        is recorded as pending (with the number of entries then), in the same step. Raises
        IndexSettingsError when the key field differs from the recorded one.
        """
        ...

    def store_binding(self) -> str | None:
        """The store this index describes (``Engine`` names it: a local store's real path,
        ``s3://BUCKET/PREFIX``), or None for an index that names none yet."""
        ...

    def bind_store(self, store: str) -> str | None:
        """Record ``store`` as the store this index describes unless one is recorded (in one
        step: of two writers binding at once, one wins); returns the store recorded now. None,
        and nothing recorded, for an index that was never configured (it has no settings)."""
        ...

    def mark_complete(
        self,
        fields: Sequence[str],
        *,
        remaining: int = 0,
        since: Mapping[str, int] | None = None,
    ) -> IndexSettings:
        """Record that every entry now has ``fields`` (``reindex`` backfilled them); with
        ``remaining``, all but that many (it failed for them): those fields stay pending, for
        ``remaining`` entries at most (see ``settle_pending``). With ``since`` (the
        ``pending_marks`` read when the backfill began), a field a writer marked pending
        since stays as it is: those entries may have been written after the backfill passed
        their keys."""
        ...

    def pending_marks(self) -> dict[str, int]:
        """How many times writers marked each field pending (``mark_pending``): a count that
        only grows, so that a backfill can tell whether any did while it ran."""
        ...

    def mark_pending(self, pending: Sequence[tuple[str, int]]) -> IndexSettings:
        """Record recorded fields as pending for that many more entries (``sync`` adopted
        objects whose metadata lacks them); fields not recorded are ignored."""
        ...

    def upsert(self, entries: Sequence[Entry]) -> None:
        """Insert or replace entries by key; later entries for the same key win."""
        ...

    def delete(self, keys: Sequence[str]) -> int:
        """Remove entries by key; returns how many existed."""
        ...

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        fields: Sequence[str] | None = None,
        sort: SortSpec | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[Entry]:
        """Entries matching a MongoDB-style filter; ``fields`` projects (the key always stays)."""
        ...

    def count(self, filter: Mapping[str, Any] | None = None) -> int: ...

    def etags(self, keys: Sequence[str]) -> dict[str, str]:
        """The recorded ETag of each given key that has an entry."""
        ...

    def versions(self, keys: Sequence[str]) -> dict[str, Version]:
        """The recorded ETag and stamp of each given key that has an entry: what a writer reads
        before its object operation, to compare-and-set from afterwards."""
        ...

    def upsert_if(
        self, entries: Sequence[Entry], expected: Mapping[str, Expected | None]
    ) -> set[str]:
        """Compare-and-set by key: write each entry (it carries `_s3idx` bookkeeping) only if the
        key's entry is still as `expected[key]` (see ``is_expected``; None: only if the key has
        no entry). Returns the keys NOT written (conflicts). One entry per key. Every write,
        this one included, records a new stamp."""
        ...

    def delete_if(self, expected: Mapping[str, Expected]) -> tuple[int, set[str]]:
        """Remove entries still as `expected[key]`. Returns (removed, conflicts): conflicts are
        keys whose entry is now another (another ETag or stamp); a missing key is neither."""
        ...

    def journal_deletes(self, items: Mapping[str, str]) -> None:
        """Record key -> ETag as being deleted (replaces an earlier record for the key)."""
        ...

    def journaled(self, keys: Sequence[str] | None = None) -> dict[str, str]:
        """Journal records for the given keys (all records when None; the journal is small)."""
        ...

    def clear_journal(self, items: Mapping[str, str]) -> None:
        """Remove journal records, each only if it still names that ETag."""
        ...

    def journal_puts(self, items: Mapping[str, str], run: str) -> None:
        """Record key -> ETag of the entry a ``put`` run is about to replace, before it uploads,
        with the time now as the record's heartbeat. One record per (key, run): it replaces
        only this run's earlier record of the key, never another run's. A record a crash left
        says: the bucket may hold a newer object than the entry describes (see
        ``s3idx.engine.put_journal``)."""
        ...

    def beat_puts(self, run: str, *, alive: bool = True) -> None:
        """Set the heartbeat of every record of ``run`` to the time now (one write); with
        ``alive`` False, remove it: the run ended, its records left are a dead run's."""
        ...

    def put_intents(self, keys: Sequence[str] | None = None) -> list[PutIntent]:
        """Put journal records for the given keys (all records when None; the journal is
        small: only puts under way, or killed, leave records), ordered by key (UTF-8 byte
        order), then run; a key may have several, one per run."""
        ...

    def clear_put_intents(self, records: Iterable[PutIntent]) -> None:
        """Remove put journal records, each only if one with that key, ETag and run is still
        there (the heartbeat is not compared)."""
        ...

    def bookkeeping(self, keys: Sequence[str]) -> dict[str, tuple[Entry, Bookkeeping]]:
        """For the given keys that exist: the entry (without ``_s3idx``) and its bookkeeping
        (stamp included)."""
        ...

    def iter_bookkeeping(self) -> Iterator[tuple[str, Bookkeeping]]:
        """Every key with its bookkeeping (stamp included), in ascending key order (UTF-8 byte
        order)."""
        ...

    def search_mismatches(self, keys: Sequence[str]) -> dict[str, list[str]]:
        """For the given keys whose entries exist: the fields (sorted) whose search structures
        disagree with the entry, so that queries on them answer wrong; keys without any are
        left out. Only an index that keeps its own search rows (SQLite) can have any."""
        ...

    def start_rebuild(
        self,
        key_field: str,
        fields: Sequence[str] = (),
        *,
        resume: bool = False,
        shard: Shard | None = None,
        restart: bool = False,
    ) -> IndexRebuild:
        """A fresh index keyed by ``key_field`` beside the current one.

        ``fields`` are the searchable fields expected (a hint: ``commit`` gives the final ones).
        With ``resume``, the interrupted rebuild, if there is one for the same key field.
        The current index may be missing or empty (the index was lost).

        With ``shard`` (I/N): the first shard creates the staging index (recording N); the
        others join it; ``join_refusal`` says which staging index a shard may not join, and
        ``restart`` discards such a one (atomically: shards restarting together create one).
        Without ``shard``, a rebuild split into shards is not resumed (refused) but a fresh
        start discards it, as it discards any other.

        From the start until ``finish`` (or ``abort``), a "rebuild running" flag is recorded in
        the index's own storage, and every entry write of the live index (``upsert``,
        ``upsert_if``, ``delete``, ``delete_if``, ``journal_deletes``, ``journal_puts``) logs
        its keys first; see ``IndexRebuild.changed_keys``. A fresh start clears the log; a
        resumed rebuild keeps it.
        """
        ...

    def rebuild_status(self) -> RebuildStatus | None:
        """The rebuild in progress, if any (for ``info``)."""
        ...

    def close(self) -> None: ...
