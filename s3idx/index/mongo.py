"""The MongoDB index: one document per entry, with the document key as ``_id``.

Layout in the database:

- ``<collection>``: the entries. ``_id`` is the key (so it is unique by construction and sorts in
  UTF-8 byte order); the entry's own fields sit at the top level, so any MongoDB filter works on
  them as written. A unique index on the key field and one index per searchable field.
- ``s3idx_meta``: small documents about the indexes of this database, ``_id`` = collection name:
  ``{"key_field", "fields", "format", "pending"}`` (``pending``: ``{"field", "entries"}`` for
  each field added while the collection held entries, until ``reindex`` backfills it;
  ``pending_marks``: field -> how many times writers marked it pending, ``pending_marks``); and,
  while a rebuild is in progress, ``_id`` = ``<collection>__rebuild``:
  ``{"key_field", "run", "staging", "checkpoint", "started"}``; a sharded rebuild adds
  ``"shards"`` (N), ``"ready"`` and ``"preparer"`` (``liveness.tagged``), and beside it keeps
  ``_id`` = ``<collection>__rebuild$shard<I>`` (``{"run", "done", "checkpoint"}``: written by
  shard I only) and, once a shard claimed the
  swap, ``<collection>__rebuild$swap`` (``{"run", "owner"}``; its unique ``_id`` makes the
  claim atomic, FerretDB included). ``$`` cannot occur in a collection name, so these ``_id``s
  never meet a collection's.
- ``<collection>__rebuild_<run>`` (``staging``; ``run``'s first 12 characters): the entries of
  one rebuild run, filled by inserts (FerretDB scans the collection for each upsert of a new
  key); renamed over ``<collection>`` on commit. One per run, so that a run another start
  replaced cannot write into its successor's: it drops its own when it notices, and a fresh
  start (or the shard that creates a sharded run) drops every other run's. A state document
  without ``staging`` was written by an earlier s3idx: that rebuild resumes in the shared
  ``<collection>__rebuild``, with upserts.
- ``<collection>__deletes``: the delete journal, ``{_id: key, "etag"}`` per entry being deleted
  (``journal_deletes``), so that an interrupted delete can be finished.
- ``<collection>__puts``: the put journal, ``{_id: "<len(run)>:<run>:<key>", "key", "etag",
  "run", "at"}`` per entry a ``put`` run is replacing (``journal_puts``): one per key and run
  (the length prefix keeps two (run, key) pairs from sharing an _id), ``at`` the run's last
  heartbeat. Records of the earlier layout, ``{_id: key, "etag", "run"}`` (one per key, no
  heartbeat), are read and cleared as they are; an index written before it existed has none.
- ``<collection>__locks``: on FerretDB only, ``{_id: key, "owner", "at"}`` while a writer
  compares and sets that key's entry (see ``MongoIndex._while_locked``).
- ``<collection>__changes``: while a rebuild runs, the keys every write of the live entries
  touched, ``{"key"}`` per write. The "rebuild running" flag is the document ``_id`` =
  ``<collection>__changes`` in ``s3idx_meta`` (``{"run", "started"}``): it lives beside the
  settings, so it exists even when the live entries are missing. The store the index
  describes is ``_id`` = ``<collection>$store`` (``{"store"}``), inserted by the first writer
  that binds it (a unique ``_id``: one wins) and replaced by a rebuild's commit.

pymongo is imported here only, and every pymongo error is translated into an ``S3idxError`` at
this boundary (``mongo_errors.translate_error``). Where the URI may be shown, and which of its
parts are secrets, is ``mongo_location``'s.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeGuard
from urllib.parse import parse_qsl

from bson.codec_options import CodecOptions
from bson.errors import BSONError
from bson.int64 import Int64
from pymongo import (
    ASCENDING,
    DESCENDING,
    DeleteOne,
    IndexModel,
    InsertOne,
    MongoClient,
    ReplaceOne,
    ReturnDocument,
)
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    CollectionInvalid,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from s3idx.codec import RESERVED_FIELD, check_key_field, dumps, is_date_tag, loads, utc_now
from s3idx.config import AT_AFTER_HOST_HINT, at_after_host, redact, redact_location
from s3idx.errors import (
    BackendUnavailableError,
    DamagedIndexError,
    IndexSettingsError,
    InvalidFilterError,
    RecordError,
    S3idxError,
    TransientError,
    UsageError,
    damaged_index,
    quote_key,
)
from s3idx.index.arguments import check_find_arguments
from s3idx.index.base import (
    Bookkeeping,
    Entry,
    Expected,
    IndexSettings,
    PutIntent,
    RebuildStatus,
    SortSpec,
    Version,
    is_count,
    is_expected,
    join_refusal,
    key_problem,
    marked_pending,
    marks_changed,
    new_stamp,
    settle_pending,
    superseded_rebuild,
)
from s3idx.index.ferretdb_filter import ferretdb_filter
from s3idx.index.mongo_errors import (
    bulk_detail,
    check_uri_options,
    dns_failure,
    only_duplicate_keys,
    translate_error,
    write_errors,
)
from s3idx.index.mongo_location import MongoLocation
from s3idx.limits import batched
from s3idx.liveness import DEATH_SETTLE_SECONDS, has_died, tagged
from s3idx.query.filter import Filter, parse_filter
from s3idx.sharding import Shard

META_COLLECTION = "s3idx_meta"
REBUILD_SUFFIX = "__rebuild"
JOURNAL_SUFFIX = "__deletes"
CHANGES_SUFFIX = "__changes"
LOCKS_SUFFIX = "__locks"
PUTS_SUFFIX = "__puts"
RESERVED_SUFFIXES = (REBUILD_SUFFIX, JOURNAL_SUFFIX, CHANGES_SUFFIX, LOCKS_SUFFIX, PUTS_SUFFIX)
FORMAT = 1
_RESTART_HINT = (
    "start the rebuild afresh: run rebuild-index without --resume (with --shard, add --restart)"
)
ID = "_id"
ETAG = f"{RESERVED_FIELD}.etag"  # the recorded ETag of an entry, the value compare-and-set tests
STAMP = f"{RESERVED_FIELD}.stamp"  # new at every write of an entry (base.Version); tested too

# Entries per bulk write and keys per ``$in`` query: well under the 16 MB command limit with
# entries of at most 2 KB, and large enough that round trips do not dominate.
BATCH_SIZE = 1000
PENDING_UPDATE_ATTEMPTS = 10

NOT_IMPLEMENTED = 238  # FerretDB v1 answers so to renameCollection with dropTarget: true
NAMESPACE_EXISTS = 48
# A rename whose source is gone: NamespaceNotFound on MongoDB and FerretDB, mongomock's own code.
SOURCE_GONE = (26, 10026)
# Writes of a chunk tried when a concurrent upsert of one of its keys won the insert.
UPSERT_ATTEMPTS = 5
UPSERT_PAUSE = 0.02  # seconds, times the attempt number
# FerretDB's per-key locks for compare-and-set: the first pause between rounds (doubling up to
# the most), and the age after which a lock is taken to be left by a writer that died. A lock is
# held while a chunk is compared and written (seconds at most, even for BATCH_SIZE keys).
LOCK_PAUSE = 0.005  # seconds
LOCK_PAUSE_MAX = 0.2  # seconds
LOCK_STALE = timedelta(seconds=60)
# Index creations tried when the connection is lost on the way (idempotent, so safe to repeat).
INDEX_ATTEMPTS = 3
INDEX_PAUSE = 0.2  # seconds, times the attempt number
# Writes tried again when FerretDB's swap dropped their collection's table under them
# (swap_retried).
SWAP_ATTEMPTS = 5
# Renames tried when a writer re-creates the live collection between the drop and the rename of
# the non-atomic swap; each retry drops what that writer wrote (as an atomic swap would).
DROP_RENAME_ATTEMPTS = 12
# A sharded rebuild's first shard inserts the state document unready, prepares the staging
# collection, then marks it ready; the others wait for that (a few seconds at most). One left
# unready for longer, or whose preparer is known dead (liveness), was abandoned by a shard that
# died while preparing it.
PREPARE_WAIT = 60.0  # seconds
PREPARE_PAUSE = 0.1  # seconds


# --- pure helpers ----------------------------------------------------------------------------


def _table_vanished(exc: BaseException) -> bool:
    """FerretDB v1 (SQLite backend) reporting that a collection was dropped under a command."""
    return isinstance(exc, OperationFailure) and "no such table" in str(exc)


# MongoDB's limits on names (docs: "Naming Restrictions"): a database name is fewer than 64
# bytes without these characters; "<database>.<collection>" is at most 255 bytes.
MAX_DATABASE_BYTES = 63
MAX_NAMESPACE_BYTES = 255
# MongoDB's limit of indexes per collection: _id's, the key field's, one per searchable field.
# mongomock and FerretDB do not enforce it, so s3idx checks it itself, before recording.
MAX_INDEXES = 64
_DATABASE_FORBIDDEN = frozenset('/\\. "$\0')
# A rebuild's staging collection is ``<collection>__rebuild_<run>``, run's first characters.
RUN_CHARS = 12
# The longest name s3idx derives from a collection's (its rebuild, its delete journal).
_LONGEST_SUFFIX = max(*(len(s) for s in RESERVED_SUFFIXES), len(REBUILD_SUFFIX) + 1 + RUN_CHARS)


def _name_problem(name: str) -> str | None:
    """What makes ``name`` unusable as any MongoDB name, else None."""
    if not name:
        return "it is empty"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    return "it contains a NUL character" if "\0" in name else None


def _collection_name_problem(name: str) -> str | None:
    # MongoDB's rules, and pymongo's stricter ones on dots (it refuses such names locally).
    if problem := _name_problem(name):
        return problem
    if "$" in name:
        return "it contains '$'"
    if name.startswith("system."):
        return "names starting with 'system.' are MongoDB's own"
    if name.startswith(".") or name.endswith("."):
        return "it starts or ends with '.'"
    return "it contains '..'" if ".." in name else None


def check_collection_name(name: str) -> str:
    """Refuse names MongoDB rejects and the names s3idx uses for its own bookkeeping."""
    problem = _collection_name_problem(name)
    if problem:
        raise UsageError(
            f"invalid MongoDB collection name {name!r}: {problem}",
            hint="choose another --collection",
        )
    if name == META_COLLECTION or name.endswith(RESERVED_SUFFIXES) or _is_staging(name):
        suffixes = ", ".join(f"'*{s}'" for s in (*RESERVED_SUFFIXES, REBUILD_SUFFIX + "_<run>"))
        raise UsageError(
            f"collection name {name!r} is reserved: s3idx uses {META_COLLECTION!r} and "
            f"{suffixes} for its own bookkeeping"
        )
    return name


def check_database_name(name: str) -> str:
    """Refuse database names MongoDB rejects (on Linux; Windows forbids ``*<>:|?`` too)."""
    problem = _name_problem(name)
    size = len(name.encode("utf-8", "surrogatepass"))
    if problem is None and size > MAX_DATABASE_BYTES:
        problem = f"it is {size} bytes; MongoDB allows {MAX_DATABASE_BYTES}"
    forbidden = sorted(set(name) & _DATABASE_FORBIDDEN)
    if problem is None and forbidden:
        problem = f'it contains {forbidden[0]!r} (not allowed: / \\ . " $, space, NUL)'
    if problem:
        raise UsageError(
            f"invalid MongoDB database name {name!r}: {problem}",
            hint="name another database in the URI: mongodb://HOST/DATABASE",
        )
    return name


def check_namespace(database: str, collection: str) -> None:
    """Refuse a collection whose namespace, or that of a collection s3idx derives from it
    (``<collection>__rebuild``), is longer than MongoDB allows: the rebuild would fail late."""
    longest = f"{database}.{collection}" + "x" * _LONGEST_SUFFIX
    size = len(longest.encode("utf-8"))
    if size > MAX_NAMESPACE_BYTES:
        raise UsageError(
            f"MongoDB collection name {collection!r} is too long for database {database!r}: "
            f"with {REBUILD_SUFFIX + '_<run>'!r}, which s3idx adds for a rebuild, the namespace is "
            f"{size} bytes; MongoDB allows {MAX_NAMESPACE_BYTES}",
            hint="choose a shorter --collection or database name",
        )


def check_filter(filter: Mapping[str, Any] | None) -> tuple[dict[str, Any], Filter]:
    """The filter as a dict, and as ``parse_filter`` validates it: the one parser SQLite uses,
    so that every backend refuses the same filters (an unknown operator, ``$exists: "no"``,
    ``$options`` without ``$regex``, operators mixed with field names, nesting beyond the
    limit...) before any server sees them. A server may answer such a filter silently and
    wrongly: FerretDB matches every document with ``{"a": {"$exists": "no"}}``."""
    if filter is None:
        return {}, parse_filter({})
    if not isinstance(filter, Mapping):
        raise InvalidFilterError(
            f"a filter must be a JSON object, got {type(filter).__name__}",
            hint='for example {"field": "value"}',
        )
    return dict(filter), parse_filter(filter)


def projection(fields: Sequence[str] | None, key_field: str | None) -> dict[str, int] | None:
    """An inclusion projection of ``fields`` that keeps the key and never shows our ``_id``."""
    keep_id = key_field == ID
    if fields is None:
        return None if keep_id else {ID: 0}
    wanted = [key_field] if key_field else []
    for path in fields:
        if not keep_id and (path == ID or path.startswith(ID + ".")):
            continue  # _id is s3idx's copy of the key, not an entry field
        if path not in wanted:
            wanted.append(path)
    # MongoDB refuses a path together with one inside it ("path collision"); the outer one
    # already includes the inner one.
    paths = [p for p in wanted if not any(p.startswith(q + ".") for q in wanted)]
    spec = dict.fromkeys(paths, 1)
    if not keep_id:
        spec[ID] = 0
    return spec


def key_of(entry: Mapping[str, Any], key_field: str) -> str:
    """The entry's key, following a dotted key field into nested dicts."""
    value: Any = entry
    for part in key_field.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if not isinstance(value, str):
        raise S3idxError(f"index entry has no string key field {key_field!r}: {entry!r:.200}")
    return value


def plain(value: Any) -> Any:
    """Values as s3idx hands them out: ``int`` not bson's ``Int64``, datetimes in ``UTC``."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if type(value) is Int64:
        return int(value)
    if isinstance(value, datetime) and value.tzinfo is not UTC:
        # BSON datetimes are UTC; a naive one only means a client that was not tz-aware.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def unique_fields(key_field: str, fields: Iterable[str]) -> list[str]:
    """Fields in first-seen order, without duplicates and without the key field."""
    result: list[str] = []
    for name in fields:
        if name != key_field and name not in result:
            result.append(name)
    return result


def ferretdb_refusal(value: Any, path: str = "") -> str | None:
    """Why FerretDB v1 cannot store ``value`` (an entry or part of one), or None if it can.

    FerretDB v1 refuses field names with a '.' or a leading '$' at any depth and arrays inside
    arrays; MongoDB accepts both. Top-level names of an entry are s3idx's own or field paths'
    first steps, which put already checks.
    """
    if isinstance(value, dict):
        for name, item in value.items():
            where = f"{path}.{name}" if path else name
            if path and (name.startswith("$") or "." in name):
                return f"field {path!r} holds the name {name!r} (with a '.' or a leading '$')"
            reason = ferretdb_refusal(item, where)
            if reason is not None:
                return reason
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, list):
                return f"field {path!r} holds an array inside an array"
            reason = ferretdb_refusal(item, path)
            if reason is not None:
                return reason
    return None


def nul_refusal(value: Any, path: str = "") -> str | None:
    """Why no MongoDB server can store ``value``: a field name holding a NUL byte, at any
    depth (BSON writes names NUL-terminated; pymongo refuses to encode one), else None."""
    if isinstance(value, dict):
        for name, item in value.items():
            where = f"{path}.{name}" if path else name
            if "\x00" in name:
                if not path:
                    return f"the field name {name!r} holds a NUL byte"
                return f"field {path!r} holds a name with a NUL byte ({name!r})"
            reason = nul_refusal(item, where)
            if reason is not None:
                return reason
    elif isinstance(value, list):
        for item in value:
            reason = nul_refusal(item, path)
            if reason is not None:
                return reason
    return None


def uses_operator(value: Any, operator: str) -> bool:
    """Whether a filter uses ``operator`` anywhere in it."""
    if isinstance(value, Mapping):
        return any(k == operator or uses_operator(v, operator) for k, v in value.items())
    if isinstance(value, list):
        return any(uses_operator(v, operator) for v in value)
    return False


def compares_a_document(filter: Any) -> bool:
    """Whether a filter compares a field with a document for equality, at any depth: a bare
    document, or one as the operand of $eq, $ne, $in, $nin or $all (also under $not)."""
    if not isinstance(filter, Mapping):
        return False
    for name, value in filter.items():
        if name in ("$and", "$or", "$nor"):
            found = isinstance(value, list) and any(map(compares_a_document, value))
        else:
            field = isinstance(name, str) and not name.startswith("$")
            found = field and _condition_compares_a_document(value)
        if found:
            return True
    return False


def _condition_compares_a_document(condition: Any) -> bool:
    if not _is_operator_object(condition):
        return _is_document(condition)
    for name, argument in condition.items():
        if name in ("$eq", "$ne") and _is_document(argument):
            return True
        listed = name in ("$in", "$nin", "$all") and isinstance(argument, list)
        if listed and any(map(_is_document, argument)):
            return True
        if name == "$not" and _condition_compares_a_document(argument):
            return True
    return False


def _is_operator_object(value: Any) -> bool:
    # As MongoDB decides: by the first name.
    if not isinstance(value, Mapping) or not value or is_date_tag(value):
        return False
    first = next(iter(value))
    return isinstance(first, str) and first.startswith("$")


def _is_document(value: Any) -> bool:
    return isinstance(value, Mapping) and not is_date_tag(value)


def _paged_order(
    sort: list[tuple[str, int]], key_field: str | None, *, paged: bool
) -> list[tuple[str, int]]:
    """``sort``, and for a page (skip, limit) the key after it, ascending.

    MongoDB returns entries that sort equal (all of them, without a sort) in any order, which
    may differ from one query to the next: pages could then repeat or lose entries. In key
    order, as SQLite gives them, they do not. A sort without a page keeps its own order, which
    an index on its field can give without sorting in memory.
    """
    if not paged or any(name in (ID, key_field) for name, _ in sort):
        return sort
    return [*sort, (ID, ASCENDING)]


def _key_batches(keys: Iterable[str]) -> Iterator[list[str]]:
    """The distinct keys, ``BATCH_SIZE`` at a time: one ``$in`` query or delete each."""
    yield from batched(dict.fromkeys(keys), BATCH_SIZE)


def _scrubbed(error: S3idxError, secrets: Sequence[str]) -> S3idxError:
    """The error with every secret of the URI removed from its message and hint."""
    error.message = redact(error.message, secrets)
    error.hint = redact(error.hint, secrets) if error.hint else None
    error.args = (error.message,)
    return error


def _etag_of(entry: Mapping[str, Any], key: str) -> str:
    data = entry.get(RESERVED_FIELD)
    etag = data.get("etag") if isinstance(data, Mapping) else None
    if not isinstance(etag, str):
        raise S3idxError(f"index entry {quote_key(key)} has no {ETAG!r} to compare and set")
    return etag


def _cas_filter(key: str, expected: Expected) -> dict[str, Any]:
    """The filter matching ``key``'s entry only while it is as ``expected`` (``is_expected``);
    ``{STAMP: None}`` also matches an entry written before stamps, which has none."""
    if isinstance(expected, Version):
        return {ID: key, ETAG: expected.etag, STAMP: expected.stamp}
    return {ID: key, ETAG: expected}


def _bookkeeping_of(doc: Mapping[str, Any], location: str) -> Bookkeeping:
    """The bookkeeping of an entry read back, checked (it may have been changed by hand)."""
    key = _key_of_document(doc, location)
    data = doc.get(RESERVED_FIELD)
    if data is None:
        raise damaged_index(location, f"entry {quote_key(key)} lacks its _s3idx bookkeeping")
    try:
        if not isinstance(data, Mapping):
            raise ValueError(f"{data!r:.100} is not an object")
        return Bookkeeping.read_back(
            data.get("etag"),
            data.get("size"),
            data.get("sha256"),
            data.get("codec"),
            data.get("stamp"),
        )
    except ValueError as exc:
        raise damaged_index(
            location, f"entry {quote_key(key)} has damaged _s3idx bookkeeping: {exc}"
        ) from None


def _key_of_document(doc: Mapping[str, Any], location: str) -> str:
    key = doc.get(ID)
    if not isinstance(key, str) or not key:
        raise damaged_index(
            location, f"an entry is stored under the _id {key!r:.100}, not a non-empty string"
        )
    return key


def _checked_entry(
    doc: dict[str, Any], location: str, key_field: str | None, *, whole: bool
) -> dict[str, Any]:
    """An entry as read back (with its ``_id``), checked, without the ``_id`` unless it is the
    key field: its key field must hold its ``_id``; a ``whole`` one needs its bookkeeping."""
    key = _key_of_document(doc, location)
    if key_field is not None:
        problem = key_problem(doc, key, key_field)
        if problem is not None:
            raise damaged_index(location, f"entry {quote_key(key)} {problem}")
    if whole:
        _bookkeeping_of(doc, location)
    kept = doc.get(RESERVED_FIELD)
    if isinstance(kept, dict):
        kept.pop("stamp", None)  # the index's own, never part of an entry read back
    if key_field != ID:
        del doc[ID]
    return doc


def _damaged_settings(location: str, what: str, value: Any) -> DamagedIndexError:
    return damaged_index(location, f"its recorded {what}: {value!r:.100}")


# The meta document's pending marks (field -> how many times writers marked it pending;
# ``Index.pending_marks``), beside ``pending``, whose layout earlier s3idx read.
MARKS = "pending_marks"


def _marks(doc: Mapping[str, Any] | None) -> dict[str, int] | None:
    """The pending marks a meta document records ({} for none); None for a value that is not
    what s3idx writes (damaged: a backfill then cannot tell, and keeps its fields pending)."""
    if doc is None or MARKS not in doc:
        return {}
    marks = doc[MARKS]
    if not isinstance(marks, Mapping) or not all(is_count(n) for n in marks.values()):
        return None
    return {str(name): int(n) for name, n in marks.items()}


def _pending_counts(pending: Any, fields: list[Any]) -> bool:
    """Whether ``pending`` is as s3idx writes it: ``{"field", "entries"}`` documents."""
    return isinstance(pending, list) and all(
        isinstance(p, Mapping) and p.get("field") in fields and is_count(p.get("entries"))
        for p in pending
    )


# --- the index -------------------------------------------------------------------------------


class _Collections:
    """One index's collections, and how to talk to them: the interface ``MongoIndex`` and its
    ``MongoRebuild`` share (neither reaches into the other).

    ``key_field`` is the key field known to be recorded (None until read or written): the
    rebuild sets it on commit, so that the index's next write uses the committed one.
    """

    def __init__(self, database: Database[Any], name: str, uri: MongoLocation, location: str):
        self.database = database
        self.name = name
        self.uri = uri
        self.location = location
        self.live: Collection[Any] = database[name]
        self.meta: Collection[Any] = database[META_COLLECTION]
        self.journal: Collection[Any] = database[name + JOURNAL_SUFFIX]
        self.changes: Collection[Any] = database[name + CHANGES_SUFFIX]
        self.locks: Collection[Any] = database[name + LOCKS_SUFFIX]
        self.puts: Collection[Any] = database[name + PUTS_SUFFIX]
        self.flag_id = name + CHANGES_SUFFIX  # the "rebuild running" flag, in ``meta``
        self.store_id = name + "$store"  # the store the index describes, in ``meta``
        self.key_field: str | None = None
        self._is_ferretdb: bool | None = None  # asked of the server when first needed
        self._retrying = threading.local()  # inside ``swap_retried``: vanished tables pass

    @contextmanager
    def guard(self, action: str, *, query: bool = False) -> Iterator[None]:
        """Translate pymongo and bson errors raised inside into s3idx errors."""
        try:
            yield
        except (PyMongoError, BSONError, OverflowError) as exc:
            if getattr(self._retrying, "on", False) and _table_vanished(exc):
                raise  # for ``swap_retried`` to try again
            # OverflowError: bson refuses ints beyond 64 bits.
            error = translate_error(
                exc, action=action, location=self.location, hosts=self.uri.hosts, query=query
            )
            raise self.scrubbed(error) from None

    def scrubbed(self, error: S3idxError) -> S3idxError:
        return _scrubbed(error, self.uri.secrets)

    def swap_retried(self, action: str, act: Callable[[], None]) -> None:
        """Call ``act``, again when FerretDB loses its collection's table under it.

        FerretDB v1's swap is drop-then-rename: a write between the two fails with an SQL error
        naming the dropped table. The write was logged in the rebuild's change log first, and
        ``act`` compares again before writing, so trying again once the rename is done is safe.
        """
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            self._retrying.on = True
            try:
                act()
                return
            except PyMongoError as exc:
                if not _table_vanished(exc) or attempt == SWAP_ATTEMPTS:
                    self._retrying.on = False
                    with self.guard(action):
                        raise
            finally:
                self._retrying.on = False
            time.sleep(INDEX_PAUSE * attempt)

    def stream(self, cursor: Any, action: str, *, query: bool = False) -> Iterator[Any]:
        """The cursor's documents; the server is asked lazily, so errors are translated here."""
        try:
            with self.guard(action, query=query):
                for doc in cursor:
                    yield plain(doc)
        finally:
            cursor.close()  # a caller that stops early must not leave a server cursor open

    def is_ferretdb(self) -> bool:
        """Whether the server is FerretDB (its buildInfo names its own version)."""
        if self._is_ferretdb is None:
            with self.guard("asking the server of"):
                try:
                    info = self.database.command("buildInfo")
                except OperationFailure:
                    info = {}  # a server that does not answer buildInfo is not FerretDB
                except NotImplementedError:
                    info = {}  # mongomock, in the tests
            self._is_ferretdb = "ferretdbVersion" in info
        return self._is_ferretdb

    def refusal(self, entry: Entry) -> tuple[str, str] | None:
        """Why this server cannot store ``entry`` and what to do instead, or None if it can."""
        reason = nul_refusal(entry)
        if reason is not None:
            return f"{reason}, which MongoDB cannot store", "or use SQLite for the index"
        reason = ferretdb_refusal(entry) if self.is_ferretdb() else None
        if reason is not None:
            instead = "or use MongoDB or SQLite for the index"
            return f"{reason}, which FerretDB cannot store", instead
        return None

    def check_entries(self, items: Sequence[tuple[str, Entry]]) -> None:
        for key, entry in items:
            refused = self.refusal(entry)
            if refused is not None:
                reason, instead = refused
                raise S3idxError(
                    f"entry {quote_key(key)}: {reason} in {self.location}",
                    hint=f"stop indexing that field, {instead}",
                )

    def latest(self, entries: Sequence[Entry], key_field: str) -> list[tuple[str, Entry]]:
        latest: dict[str, Entry] = {}
        for entry in entries:
            latest[key_of(entry, key_field)] = entry  # a later entry for a key replaces it
        items = list(latest.items())
        self.check_entries(items)
        return items

    def write(
        self, collection: Collection[Any], items: Sequence[tuple[str, Entry]], key_field: str
    ) -> None:
        stamp = new_stamp()
        for chunk in batched(items, BATCH_SIZE):
            documents = [(key, self.document(key, entry, key_field, stamp)) for key, entry in chunk]
            self.replace_all(collection, documents, "writing entries to")

    def insert(
        self, collection: Collection[Any], items: Sequence[tuple[str, Entry]], key_field: str
    ) -> None:
        """Insert each entry; replace those whose key is already there.

        A rebuild's own staging collection: nothing else writes into it, and its keys are
        mostly new. FerretDB scans the collection for each upsert of a new key (a 3,000-object
        rebuild took 164 s instead of 24 s), so new keys go in as inserts and only the keys a
        resume writes again are replaced."""
        stamp = new_stamp()
        for chunk in batched(items, BATCH_SIZE):
            documents = [(key, self.document(key, entry, key_field, stamp)) for key, entry in chunk]
            again: Sequence[tuple[str, dict[str, Any]]] = ()
            with self.guard("writing entries to"):
                try:
                    collection.insert_many([dict(d) for _, d in documents], ordered=False)
                except BulkWriteError as exc:
                    if not only_duplicate_keys(exc):
                        raise self.bulk_error(exc, documents) from None
                    clashed = {e.get("index") for e in write_errors(exc)}
                    again = [d for i, d in enumerate(documents) if i in clashed]
                except KeyError:
                    # FerretDB v1's reply to a failed write cannot be read (see replace_all):
                    # which inserts failed is unknown; replacing them all is safe.
                    again = documents
            if again:
                self.replace_all(collection, again, "writing entries to")

    def replace_all(
        self,
        collection: Collection[Any],
        documents: Sequence[tuple[str, dict[str, Any]]],
        action: str,
    ) -> None:
        """Insert or replace each document by ``_id`` (the key), at most ``BATCH_SIZE``."""
        requests = [ReplaceOne({ID: key}, document, upsert=True) for key, document in documents]
        for attempt in range(1, UPSERT_ATTEMPTS + 1):
            with self.guard(action):
                try:
                    # Unordered: the server may apply them in parallel; keys are distinct, so
                    # the order cannot matter.
                    collection.bulk_write(requests, ordered=False)
                    return
                except BulkWriteError as exc:
                    if attempt == UPSERT_ATTEMPTS or not only_duplicate_keys(exc):
                        raise self.bulk_error(exc, documents) from None
                except KeyError:
                    # FerretDB v1 leaves "nModified" out of the reply when a write fails, and
                    # pymongo cannot read that reply: which write failed, and why, is unknown.
                    if attempt == UPSERT_ATTEMPTS:
                        self.replace_one_by_one(collection, documents)
                        return
            # Two writers upserting one key at once: one insert wins and the other fails with
            # a duplicate key (MongoDB retries that itself; FerretDB does not). The whole chunk
            # again is safe (replacing is idempotent), and the key now exists.
            time.sleep(UPSERT_PAUSE * attempt)

    def replace_one_by_one(
        self, collection: Collection[Any], documents: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        """The slow way, one key at a time, so that an error names its key."""
        for key, document in documents:
            for attempt in range(1, UPSERT_ATTEMPTS + 1):
                with self.guard(f"writing the entry {quote_key(key)} to"):
                    try:
                        collection.replace_one({ID: key}, document, upsert=True)
                        break
                    except DuplicateKeyError:
                        if attempt == UPSERT_ATTEMPTS:
                            raise
                time.sleep(UPSERT_PAUSE * attempt)

    def document(self, key: str, entry: Entry, key_field: str, stamp: str) -> dict[str, Any]:
        """What the collection holds for ``entry``: keyed by ``_id``, its bookkeeping carrying
        the ``stamp`` of this write."""
        if key_field != ID and ID in entry and entry[ID] != key:
            raise S3idxError(
                f"index entry {quote_key(key)} has its own {ID!r} field, which MongoDB needs for "
                "the key"
            )
        kept = entry.get(RESERVED_FIELD)
        if not isinstance(kept, Mapping):
            return {ID: key, **entry}
        return {ID: key, **entry, RESERVED_FIELD: {**kept, "stamp": stamp}}

    def bulk_error(self, exc: BulkWriteError, chunk: Sequence[tuple[str, Any]]) -> S3idxError:
        """A short summary naming the first refused key; the server's reply can be huge."""
        refused = write_errors(exc)
        first = refused[0].get("index") if refused else None
        where = f" (first refused key: {chunk[first][0]!r})" if isinstance(first, int) else ""
        return self.scrubbed(
            S3idxError(
                f"MongoDB refused {len(refused) or 'some'} of {len(chunk)} entries written "
                f"to {self.location}: {bulk_detail(exc)}{where}"
            )
        )

    def check_fields(self, key_field: str, fields: Sequence[str]) -> None:
        _check_field_count(key_field, fields)
        if self.is_ferretdb():
            # FerretDB v1 writes an index's path into SQL unescaped: a field with a '"' or a
            # '\\' failed with a raw SQL error once recorded, leaving an index no put could
            # use; a key field with one makes every entry "malformed JSON". Names inside a
            # value are stored as they are (ferretdb_refusal need not look for them).
            for name, flag in [(key_field, "--key"), *((f, "--field") for f in fields)]:
                if '"' in name or "\\" in name:
                    raise UsageError(
                        f"{flag} {name!r} cannot be indexed on FerretDB ({self.location}): "
                        "FerretDB v1 cannot index a field whose name holds a double quote or a "
                        "backslash",
                        hint="index another field, or keep the index in MongoDB or SQLite",
                    )
        if key_field != ID and any(f == ID or f.startswith(ID + ".") for f in fields):
            raise UsageError(
                f"field {ID!r} cannot be a searchable field of a MongoDB index: it holds the "
                f"key there; index the documents with --key {ID}, or rename the field"
            )

    def ensure_indexes(self, collection: Collection[Any], settings: IndexSettings) -> None:
        """Create the missing indexes: unique on the key field, one per searchable field.

        Creating an index that exists changes nothing, so a connection lost on the way (FerretDB
        closes one now and then when several processes create indexes at once) is tried again.
        """
        for attempt in range(1, INDEX_ATTEMPTS + 1):
            try:
                with self.guard("creating the indexes of"):
                    self._create_missing_indexes(collection, settings)
                return
            except TransientError:
                if attempt == INDEX_ATTEMPTS:
                    raise
            time.sleep(INDEX_PAUSE * attempt)

    def _create_missing_indexes(self, collection: Collection[Any], settings: IndexSettings) -> None:
        existing = {_first_path(info) for info in collection.index_information().values()}
        models = []
        if settings.key_field != ID and settings.key_field not in existing:
            models.append(IndexModel([(settings.key_field, ASCENDING)], unique=True))
        models += [IndexModel([(f, ASCENDING)]) for f in settings.fields if f not in existing]
        if models:
            collection.create_indexes(models)


class MongoIndex:
    """The ``Index`` protocol on a MongoDB collection (see the module docstring for the layout)."""

    location: str

    def __init__(
        self,
        uri: str,
        database: str,
        collection: str = "s3idx",
        *,
        client: Any = None,
        server_selection_timeout_ms: int = 5000,
    ) -> None:
        if at_after_host(uri):  # the library's way in; backends refuses it for the others
            raise UsageError(
                f"index {redact_location(uri)!r} has an '@' after its host part",
                hint=AT_AFTER_HOST_HINT,
            )
        location = MongoLocation.parse(uri)
        # Checked before connecting, as MongoDB would: an invalid name is the user's to fix,
        # not a failure of the server's (pymongo refuses some locally, the server others).
        name = check_collection_name(collection)
        check_database_name(database)
        check_namespace(database, name)
        self.location = location.describe(database, collection)
        self._owns_client = client is None
        try:
            if client is None:
                check_uri_options(uri, self.location, location.secrets)
                client = _connect(uri, server_selection_timeout_ms)
                db = client.get_database(database)
            else:
                # A client made elsewhere (tests pass mongomock's) may not be tz-aware.
                db = client.get_database(database, codec_options=CodecOptions(tz_aware=True))
        except UsageError as refused:  # a URI option pymongo would have ignored
            raise _scrubbed(refused, location.secrets) from None
        except (PyMongoError, ValueError, TypeError, OSError) as exc:
            error = self._open_error(exc, location.hosts)
            raise _scrubbed(error, location.secrets) from None
        self._client = client
        self._c = _Collections(db, name, location, self.location)

    # --- errors ------------------------------------------------------------------------------

    def _open_error(self, exc: BaseException, hosts: str) -> S3idxError:
        # MongoClient() checks the URI and its options (and reads TLS files) at once and
        # connects later; only mongodb+srv:// asks DNS now, which may be down rather than wrong.
        if dns_failure(exc):
            return BackendUnavailableError(
                f"cannot look up MongoDB at {hosts}: {exc}",
                hint="is DNS working, and is the host name right?",
            )
        return UsageError(f"invalid MongoDB location {self.location}: {exc}")

    # --- settings ----------------------------------------------------------------------------

    def settings(self) -> IndexSettings | None:
        with self._c.guard("reading the settings of"):
            doc = self._c.meta.find_one({ID: self._c.name})
        if doc is None:
            self._refuse_foreign()
            return None
        settings = self._settings_of(doc)
        self._c.key_field = settings.key_field
        return settings

    def store_binding(self) -> str | None:
        with self._c.guard("reading the settings of"):
            doc = self._c.meta.find_one({ID: self._c.store_id})
        store = None if doc is None else doc.get("store")
        if doc is not None and (not isinstance(store, str) or not store):
            raise _damaged_settings(self.location, "store is not a store location", store)
        return store

    def bind_store(self, store: str) -> str | None:
        if self.settings() is None:
            return None
        # An insert of a unique _id: of writers binding at once one wins, FerretDB included
        # (which does not apply a filtered update's filter and change in one step).
        with self._c.guard("recording the settings of"), contextlib.suppress(DuplicateKeyError):
            self._c.meta.insert_one({ID: self._c.store_id, "store": store})
        return self.store_binding()

    def _refuse_foreign(self) -> None:
        """Refuse a collection without settings that holds documents s3idx did not write: it
        is another application's, which put would mix entries into and a rebuild would drop.
        (Entries without their settings are an s3idx index damaged by hand: rebuilt.)"""
        with self._c.guard("reading the entries of"):
            doc = self._c.live.find_one({RESERVED_FIELD: {"$exists": False}}, {ID: 1})
        if doc is not None:
            raise BackendUnavailableError(
                f"{self.location} holds documents s3idx did not write (such as _id "
                f"{doc.get(ID)!r:.100}): it is not an s3idx index",
                hint="give another --collection (or database) for the index; s3idx never "
                "writes into a collection another application uses",
            )

    def _settings_of(self, doc: Mapping[str, Any]) -> IndexSettings:
        """The settings ``doc`` records, checked: damage for what s3idx never writes."""
        key_field, fields = doc.get("key_field"), doc.get("fields", [])
        pending = doc.get("pending", [])
        if not isinstance(key_field, str) or not key_field:
            raise _damaged_settings(self.location, "key field is not a field name", key_field)
        if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
            raise _damaged_settings(self.location, "fields are not a list of field paths", fields)
        if not _pending_counts(pending, fields):
            raise _damaged_settings(
                self.location,
                "pending fields are not a list of fields with their entry counts",
                pending,
            )
        waiting = tuple((str(p["field"]), int(p["entries"])) for p in pending)
        return IndexSettings(key_field, tuple(unique_fields(key_field, fields)), waiting)

    def configure(self, key_field: str, fields: Sequence[str]) -> IndexSettings:
        wanted = self._checked_fields(key_field, fields)
        # Read first: settings damaged by hand are said, not written over ($addToSet would fail
        # on fields that are not an array, in its own words).
        recorded = self.settings()
        if recorded is not None and recorded.key_field == key_field:
            # The fields are added to those recorded: the limit is on them all together.
            _check_field_count(key_field, unique_fields(key_field, [*recorded.fields, *wanted]))
        settings = self._record_fields(key_field, wanted)
        self._c.ensure_indexes(self._c.live, settings)
        return settings

    def check_configure(self, key_field: str, fields: Sequence[str]) -> None:
        """What ``configure`` would refuse, found without writing (a dry run): the server
        reached, the fields, another key field recorded."""
        wanted = self._checked_fields(key_field, fields)
        recorded = self.settings()
        if recorded is not None and recorded.key_field != key_field:
            raise self._key_mismatch(recorded.key_field, key_field)
        if recorded is not None:
            _check_field_count(key_field, unique_fields(key_field, [*recorded.fields, *wanted]))

    def _checked_fields(self, key_field: str, fields: Sequence[str]) -> list[str]:
        """The fields to index besides the key field, once each, after the checks both
        ``configure`` and ``check_configure`` make before reading the index."""
        try:
            check_key_field(key_field)
        except UsageError as exc:
            raise IndexSettingsError(exc.message, hint=exc.hint) from None
        wanted = unique_fields(key_field, fields)
        self._c.check_fields(key_field, wanted)
        return wanted

    def _record_fields(self, key_field: str, fields: list[str]) -> IndexSettings:
        # One atomic update, so concurrent writers adding fields lose none. It matches on the
        # key field too: where another key field is recorded, the upsert's insert clashes with
        # that document's _id, and nothing changes.
        # The document as it was before tells which fields this call added, so that exactly
        # one of several concurrent writers marks a new field pending. A second try: another
        # process recording the same settings at the same moment may win the upsert's insert,
        # and then this update finds its document.
        for attempt in range(2):
            with self._c.guard("recording the settings of"):
                try:
                    before = self._c.meta.find_one_and_update(
                        {ID: self._c.name, "key_field": key_field},
                        {
                            "$addToSet": {"fields": {"$each": fields}},
                            "$setOnInsert": {"format": FORMAT},
                        },
                        upsert=True,
                        return_document=ReturnDocument.BEFORE,
                    )
                    break
                except DuplicateKeyError:
                    if attempt:
                        recorded = self.settings()
                        raise self._key_mismatch(
                            recorded.key_field if recorded else "?", key_field
                        ) from None
        self._c.key_field = key_field
        if before is None:
            return IndexSettings(key_field, tuple(fields))
        settings = self._settings_of(before)
        new = [f for f in fields if f not in settings.fields]
        pending = settings.pending
        if new:
            with self._c.guard("recording the settings of"):
                held = int(self._c.live.count_documents({})) if self._c.live.find_one() else 0
                if held:
                    added = [{"field": f, "entries": held} for f in new]
                    self._c.meta.update_one(
                        {ID: self._c.name}, {"$push": {"pending": {"$each": added}}}
                    )
                    pending = (*pending, *((f, held) for f in new))
        return IndexSettings(key_field, (*settings.fields, *new), pending)

    def mark_complete(
        self,
        fields: Sequence[str],
        *,
        remaining: int = 0,
        since: Mapping[str, int] | None = None,
    ) -> IndexSettings:
        def settled(
            old: list[dict[str, Any]], _: list[str], marks: dict[str, int] | None
        ) -> tuple[list[dict[str, Any]], dict[str, int] | None]:
            counts = [(str(p.get("field")), int(p.get("entries", 0))) for p in old]
            kept = marks_changed(fields, marks, since)
            pending = settle_pending(counts, fields, remaining, kept)
            return [{"field": f, "entries": n} for f, n in pending], marks

        return self._update_pending(settled)

    def mark_pending(self, pending: Sequence[tuple[str, int]]) -> IndexSettings:
        def merged(
            old: list[dict[str, Any]], recorded: list[str], marks: dict[str, int] | None
        ) -> tuple[list[dict[str, Any]], dict[str, int] | None]:
            counts = [(str(p["field"]), int(p.get("entries", 0))) for p in old]
            now, marks = marked_pending(counts, marks or {}, recorded, pending)
            return [{"field": f, "entries": n} for f, n in now], marks

        return self._update_pending(merged)

    def pending_marks(self) -> dict[str, int]:
        with self._c.guard("reading the settings of"):
            doc = self._c.meta.find_one({ID: self._c.name})
        return _marks(doc) or {}

    def _update_pending(
        self,
        change: Callable[
            [list[dict[str, Any]], list[str], dict[str, int] | None],
            tuple[list[dict[str, Any]], dict[str, int] | None],
        ],
    ) -> IndexSettings:
        # Compare-and-set on the whole list (and the marks) rather than $pull/$push with
        # conditions, which FerretDB ignores; a writer changing them meanwhile makes the update
        # match nothing, and the change is made again on the new values.
        for _ in range(PENDING_UPDATE_ATTEMPTS):
            with self._c.guard("recording the settings of"):
                doc = self._c.meta.find_one({ID: self._c.name})
                if doc is None:
                    raise IndexSettingsError(f"index {self.location} has no recorded key field")
                recorded = self._settings_of(doc)  # damage is said, not changed further
                old = list(doc.get("pending", []))
                marks = _marks(doc)
                new, new_marks = change(old, list(recorded.fields), marks)
                if new == old and new_marks == marks:
                    return self._settings_of(doc)
                unchanged = {name: doc.get(name, {"$exists": False}) for name in ("pending", MARKS)}
                update: dict[str, Any] = {"pending": new}
                if new_marks is not None:
                    update[MARKS] = new_marks
                done = self._c.meta.update_one({ID: self._c.name, **unchanged}, {"$set": update})
            if done.matched_count:
                return self._settings_of({**doc, "pending": new})
        raise TransientError(f"the settings of {self.location} kept changing; run it again")

    def _key_mismatch(self, recorded: str, wanted: str) -> IndexSettingsError:
        return IndexSettingsError(
            f"index {self.location} uses key field {recorded!r}, not {wanted!r}",
            hint=f"use --key {recorded}, or another index (location or collection) for these "
            "documents",
        )

    def _require_key_field(self) -> str:
        if self._c.key_field is None and self.settings() is None:
            raise IndexSettingsError(
                f"index {self.location} has no recorded key field; configure it first"
            )
        assert self._c.key_field is not None
        return self._c.key_field

    def _known_key_field(self) -> str | None:
        if self._c.key_field is None:
            self.settings()
        return self._c.key_field

    def is_ferretdb(self) -> bool:
        """Whether the server is FerretDB (its buildInfo names its own version)."""
        return self._c.is_ferretdb()

    def check_entry(self, key: str, entry: Entry) -> None:
        """Refuse an entry this server cannot store, before its object is written."""
        refused = self._c.refusal(entry)
        if refused is not None:
            reason, instead = refused
            raise RecordError(
                f"{reason} in the index", hint=f"stop indexing that field (--field), {instead}"
            )

    def _server_query(self, filter: Mapping[str, Any] | None) -> dict[str, Any]:
        """The filter to send to the server: validated, refused where this server would answer
        it wrongly, and on FerretDB written again in forms it answers right (ferretdb_filter).
        Real MongoDB gets the filter as it was given."""
        query, parsed = check_filter(filter)
        self._check_query(query)
        return ferretdb_filter(parsed, self.location) if self.is_ferretdb() else query

    def _check_query(self, query: Mapping[str, Any]) -> None:
        # FerretDB v1 answers $elemMatch wrongly and silently: the document form matches
        # nothing, and the operator form matches conditions met by different elements.
        if uses_operator(query, "$elemMatch") and self.is_ferretdb():
            raise InvalidFilterError(
                f"$elemMatch is refused on FerretDB ({self.location}): FerretDB v1 answers it "
                "wrongly",
                hint="use a dotted path instead where one element need not meet every "
                "condition, or keep the index in MongoDB or SQLite",
            )
        if compares_a_document(query) and self.is_ferretdb():
            raise InvalidFilterError(
                f"a document to compare with is refused on FerretDB ({self.location}): "
                "FerretDB v1 does not compare it with the documents an array holds, so the "
                "answer could be wrong",
                hint='query the fields inside it by dotted paths instead ({"b.c": 1} for '
                '{"b": {"c": 1}}), or keep the index in MongoDB or SQLite',
            )

    # --- entries -----------------------------------------------------------------------------

    def upsert(self, entries: Sequence[Entry]) -> None:
        key_field = self._require_key_field()
        items = self._c.latest(entries, key_field)
        self._log_changes([key for key, _ in items])
        self._c.write(self._c.live, items, key_field)

    # --- compare-and-set on the recorded ETag and stamp -------------------------------------

    def etags(self, keys: Sequence[str]) -> dict[str, str]:
        return {key: version.etag for key, version in self.versions(keys).items()}

    def versions(self, keys: Sequence[str]) -> dict[str, Version]:
        return self._versions_in(self._c.live, keys)

    def _versions_in(self, collection: Collection[Any], keys: Iterable[str]) -> dict[str, Version]:
        found: dict[str, Version] = {}
        for batch in _key_batches(keys):
            with self._c.guard("reading entries from"):
                docs = list(collection.find({ID: {"$in": batch}}, {RESERVED_FIELD: 1}))
            for doc in docs:
                found[_key_of_document(doc, self.location)] = _bookkeeping_of(
                    doc, self.location
                ).version
        return found

    def upsert_if(
        self, entries: Sequence[Entry], expected: Mapping[str, Expected | None]
    ) -> set[str]:
        key_field = self._require_key_field()
        items = self._c.latest(entries, key_field)
        for key, entry in items:
            _etag_of(entry, key)  # refused before anything is written
        self._log_changes([key for key, _ in items])
        conflicts: set[str] = set()
        stamp = new_stamp()
        for chunk in batched(items, BATCH_SIZE):
            if self.is_ferretdb():
                conflicts |= self._write_if_locked(chunk, expected, key_field, stamp)
            else:
                conflicts |= self._write_if(chunk, expected, key_field, stamp)
        return conflicts

    def _write_if(
        self,
        chunk: Sequence[tuple[str, Entry]],
        expected: Mapping[str, Expected | None],
        key_field: str,
        stamp: str,
    ) -> set[str]:
        """The keys of ``chunk`` not written: each is replaced only while its entry is as
        expected, or inserted (where none is expected) only while the key has no entry.

        MongoDB applies a filtered replace atomically per document, so the filter is the
        compare-and-set."""
        requests: list[Any] = []
        for key, entry in chunk:
            document = self._c.document(key, entry, key_field, stamp)
            want = expected.get(key)
            if want is None:
                # The unique _id refuses the insert if another writer created the key first.
                requests.append(InsertOne(document))
            else:
                requests.append(ReplaceOne(_cas_filter(key, want), document))
        with self._c.guard("writing entries to"):
            try:
                result = self._c.live.bulk_write(requests, ordered=False)
                if result.inserted_count + result.matched_count == len(requests):
                    return set()
            except BulkWriteError as exc:
                if not only_duplicate_keys(exc):
                    raise self._c.bulk_error(exc, chunk) from None
        return self._not_written(chunk, stamp)

    def _not_written(self, chunk: Sequence[tuple[str, Entry]], stamp: str) -> set[str]:
        """Which writes of ``chunk`` did not take effect, read from the entries themselves:
        those not carrying this write's stamp (a later writer may have moved one on already;
        reconciling settles it)."""
        now = self._versions_in(self._c.live, [key for key, _ in chunk])
        return {key for key, entry in chunk if now.get(key) != Version(_etag_of(entry, key), stamp)}

    def _write_if_locked(
        self,
        chunk: Sequence[tuple[str, Entry]],
        expected: Mapping[str, Expected | None],
        key_field: str,
        stamp: str,
    ) -> set[str]:
        """``_write_if`` for FerretDB v1, whose filtered replace is not atomic: two writers
        replacing from one version at once may both match. Each key is compared and written
        while this writer holds the key's lock."""
        entries = dict(chunk)
        conflicts: set[str] = set()

        def write(held: set[str]) -> None:
            now = self._versions_in(self._c.live, held)
            inserts: list[dict[str, Any]] = []
            replaces: list[tuple[dict[str, Any], dict[str, Any]]] = []
            for key in held:
                want = expected.get(key)
                if not is_expected(now.get(key), want):
                    conflicts.add(key)
                    continue
                document = self._c.document(key, entries[key], key_field, stamp)
                if want is None:
                    inserts.append(document)
                else:
                    # By _id alone: FerretDB v1 finds {_id, ETAG} by scanning the whole
                    # collection (over a second an entry at 20,000 entries). The lock and the
                    # read above compared the ETag; a writer that does not lock and changes the
                    # entry meanwhile is seen by the read-back below, as with the ETag filter.
                    replaces.append(({ID: key}, document))
            with self._c.guard("writing entries to"):
                # One replace at a time: FerretDB v1 stalls (until the socket times out) when a
                # bulk of replaces runs while other connections write.
                for filter, document in replaces:
                    self._c.live.replace_one(filter, document)
                try:
                    if inserts:
                        self._c.live.insert_many(inserts, ordered=False)
                except BulkWriteError as exc:
                    if not only_duplicate_keys(exc):  # a writer that does not lock inserted
                        raise self._c.bulk_error(exc, chunk) from None
                except KeyError:
                    pass  # FerretDB's reply to a failed write in a bulk; read below
            # Under the locks only writers that do not lock (upsert, delete) can have changed
            # these entries; the read tells exactly what is there.
            written = [(key, entries[key]) for key in held if key not in conflicts]
            conflicts.update(self._not_written(written, stamp))

        self._while_locked([key for key, _ in chunk], write)
        return conflicts

    def delete_if(self, expected: Mapping[str, Expected]) -> tuple[int, set[str]]:
        self._log_changes(expected)
        removed = 0
        conflicts: set[str] = set()
        for batch in batched(list(expected.items()), BATCH_SIZE):
            if self.is_ferretdb():
                deleted, changed = self._delete_if_locked(dict(batch))
                removed += deleted
                conflicts |= changed
                continue
            requests = [DeleteOne(_cas_filter(key, want)) for key, want in batch]
            with self._c.guard("deleting entries from"):
                deleted = self._c.live.bulk_write(requests, ordered=False).deleted_count
            removed += deleted
            if deleted < len(batch):
                now = self._versions_in(self._c.live, [key for key, _ in batch])
                conflicts |= {k for k, want in batch if k in now and not is_expected(now[k], want)}
        return removed, conflicts

    def _delete_if_locked(self, expected: Mapping[str, Expected]) -> tuple[int, set[str]]:
        """``delete_if`` for FerretDB v1, comparing and deleting under the keys' locks."""
        removed = 0
        conflicts: set[str] = set()

        def delete(held: set[str]) -> None:
            nonlocal removed
            now = self._versions_in(self._c.live, held)
            present = [key for key in held if key in now]
            same = [key for key in present if is_expected(now[key], expected[key])]
            conflicts.update(set(present) - set(same))
            if same:
                with self._c.guard("deleting entries from"):
                    removed += self._c.live.delete_many({ID: {"$in": same}}).deleted_count

        self._while_locked(list(expected), delete)
        return removed, conflicts

    def _while_locked(self, keys: Sequence[str], act: Callable[[set[str]], None]) -> None:
        """Call ``act`` on the keys, each key while this writer holds its lock (FerretDB).

        A lock is a document ``{_id: key}`` in ``<collection>__locks``: an insert with a unique
        ``_id`` is atomic on FerretDB where a filtered replace is not. Keys another writer holds
        wait for the next round; nothing is held while waiting, so writers cannot deadlock. A
        lock older than ``LOCK_STALE`` was left by a writer that died, and is taken over; so is
        one whose owner is seen dead on this machine (``liveness``), ``DEATH_SETTLE_SECONDS``
        after it is first seen so.
        """
        waiting = list(dict.fromkeys(keys))
        deadline = time.monotonic() + LOCK_STALE.total_seconds() + LOCK_PAUSE_MAX * 10
        pause = LOCK_PAUSE
        dead = _DeadOwners()
        while waiting:
            owner = tagged(uuid.uuid4().hex)
            now = utc_now()
            with self._c.guard("locking entries of"):
                try:
                    self._c.locks.insert_many(
                        [{ID: key, "owner": owner, "at": now} for key in waiting], ordered=False
                    )
                except BulkWriteError as exc:
                    if not only_duplicate_keys(exc):
                        raise
                except KeyError:
                    pass  # FerretDB's reply to a failed write in a bulk; read below
                mine = self._c.locks.find({ID: {"$in": waiting}, "owner": owner}, {ID: 1})
                held = {str(doc[ID]) for doc in mine}
            try:
                if held:
                    self._c.swap_retried("writing entries to", partial(act, held))
            finally:
                if held:
                    with self._c.guard("unlocking entries of"):
                        self._c.locks.delete_many({ID: {"$in": list(held)}, "owner": owner})
            waiting = [key for key in waiting if key not in held]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise TransientError(
                    f"{len(waiting)} entries of {self.location} stayed locked by other writers"
                )
            with self._c.guard("unlocking entries of"):
                self._c.locks.delete_many({ID: {"$in": waiting}, "at": {"$lt": now - LOCK_STALE}})
                if dead.due():
                    owners = self._c.locks.find({ID: {"$in": waiting}}, {"owner": 1})
                    settled = dead.settled(str(doc.get("owner")) for doc in owners)
                    if settled:
                        self._c.locks.delete_many({ID: {"$in": waiting}, "owner": {"$in": settled}})
            time.sleep(random.uniform(0, pause))
            pause = min(pause * 2, LOCK_PAUSE_MAX)

    # --- the delete journal ------------------------------------------------------------------

    def journal_deletes(self, items: Mapping[str, str]) -> None:
        self._log_changes(items)
        documents = [(key, {ID: key, "etag": etag}) for key, etag in items.items()]
        for chunk in batched(documents, BATCH_SIZE):
            if self.is_ferretdb():
                # FerretDB v1 stalls (until the socket times out) when bulks replacing the same
                # documents run at once on several connections: two deletes of the same keys.
                self._c.replace_one_by_one(self._c.journal, chunk)
            else:
                self._c.replace_all(self._c.journal, chunk, "journaling deletes in")

    def journaled(self, keys: Sequence[str] | None = None) -> dict[str, str]:
        queries = [{}] if keys is None else [{ID: {"$in": b}} for b in _key_batches(keys)]
        found: dict[str, str] = {}
        for query in queries:
            with self._c.guard("reading the delete journal of"):
                cursor = self._c.journal.find(query)
            for doc in self._c.stream(cursor, "reading the delete journal of"):
                key, etag = doc.get(ID), doc.get("etag")
                if not isinstance(key, str) or not key or not isinstance(etag, str) or not etag:
                    raise damaged_index(
                        self.location,
                        f"its delete journal holds {key!r:.100} -> {etag!r:.100}, not a key and "
                        "an ETag",
                    )
                found[key] = etag
        return found

    def clear_journal(self, items: Mapping[str, str]) -> None:
        for batch in batched(list(items.items()), BATCH_SIZE):
            requests = [DeleteOne({ID: key, "etag": etag}) for key, etag in batch]
            with self._c.guard("clearing the delete journal of"):
                self._c.journal.bulk_write(requests, ordered=False)

    # --- the put journal ---------------------------------------------------------------------

    def journal_puts(self, items: Mapping[str, str], run: str) -> None:
        self._log_changes(items)
        now = utc_now()
        documents = [
            (
                _put_id(key, run),
                {ID: _put_id(key, run), "key": key, "etag": etag, "run": run, "at": now},
            )
            for key, etag in items.items()
        ]
        for chunk in batched(documents, BATCH_SIZE):
            if self.is_ferretdb():
                self._journal_puts_ferretdb(chunk)
            else:
                self._c.replace_all(self._c.puts, chunk, "journaling puts in")

    def _journal_puts_ferretdb(self, chunk: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """FerretDB v1 stalls on concurrent bulks of upserts (see ``journal_deletes``), and a
        replace per key would cost a round trip per document put: this run's earlier records
        of the keys are removed, then the new ones inserted. The _ids name the run, so no
        other run's insert can collide with them."""
        ids = [id_ for id_, _ in chunk]
        with self._c.guard("journaling puts in"):
            self._c.puts.delete_many({ID: {"$in": ids}})
            try:
                self._c.puts.insert_many([document for _, document in chunk], ordered=False)
            except (BulkWriteError, KeyError):
                # Only this run writes these _ids (one thread): a failure is no collision,
                # and FerretDB's reply may not say which insert failed: write them one by one.
                self._c.replace_one_by_one(self._c.puts, chunk)

    def beat_puts(self, run: str, *, alive: bool = True) -> None:
        at = utc_now() if alive else None
        with self._c.guard("refreshing the put journal of"):
            self._c.puts.update_many({"run": run, "key": {"$exists": True}}, {"$set": {"at": at}})

    def put_intents(self, keys: Sequence[str] | None = None) -> list[PutIntent]:
        queries: list[dict[str, Any]] = [{}]
        if keys is not None:
            # A record of the earlier layout has no "key": its _id is the key.
            queries = [
                {"$or": [{"key": {"$in": b}}, {ID: {"$in": b}, "key": {"$exists": False}}]}
                for b in _key_batches(keys)
            ]
        found: list[PutIntent] = []
        for query in queries:
            with self._c.guard("reading the put journal of"):
                cursor = self._c.puts.find(query)
            for doc in self._c.stream(cursor, "reading the put journal of"):
                record = _put_record(doc)
                if record is None:
                    raise damaged_index(
                        self.location,
                        f"its put journal holds {doc.get('key', doc.get(ID))!r:.100} -> "
                        f"{doc.get('etag')!r:.100} ({doc.get('run')!r:.100}), not a key, an ETag "
                        "and a run",
                    )
                found.append(record)
        return sorted(found, key=lambda r: (r.key, r.run))

    def clear_put_intents(self, records: Iterable[PutIntent]) -> None:
        for batch in batched(list(records), BATCH_SIZE):
            requests = []
            for r in batch:
                requests.append(DeleteOne({ID: _put_id(r.key, r.run), "etag": r.etag}))
                # Or the earlier layout's record of the key, if that is the one.
                requests.append(
                    DeleteOne({ID: r.key, "etag": r.etag, "run": r.run, "key": {"$exists": False}})
                )
            with self._c.guard("clearing the put journal of"):
                self._c.puts.bulk_write(requests, ordered=False)

    # --- the change log of a running rebuild -------------------------------------------------

    def _log_changes(self, keys: Iterable[str]) -> None:
        """While a rebuild runs, record ``keys`` as changed; called before writing them.

        The flag is read on every call (one small read): a rebuild started by another process
        must see this write, in its staging index or through the log.
        """
        with self._c.guard("reading the rebuild flag of"):
            if self._c.meta.find_one({ID: self._c.flag_id}, {ID: 1}) is None:
                return
        for batch in _key_batches(keys):
            with self._c.guard("logging changes to"):
                self._c.changes.insert_many([{"key": key} for key in batch], ordered=False)

    def delete(self, keys: Sequence[str]) -> int:
        self._log_changes(keys)
        deleted = 0
        for batch in _key_batches(keys):
            with self._c.guard("deleting entries from"):
                deleted += self._c.live.delete_many({ID: {"$in": batch}}).deleted_count
        return deleted

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        fields: Sequence[str] | None = None,
        sort: SortSpec | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[Entry]:
        # Checked now, not when the caller starts iterating, so mistakes surface at the call.
        query = self._server_query(filter)
        args = check_find_arguments(sort=sort, skip=skip, limit=limit, fields=fields)
        if args.sort and self.is_ferretdb():
            self._check_ferretdb_sort(args.sort)
        key_field = self._known_key_field()
        spec = projection(args.fields, key_field)
        if spec is not None and spec.get(ID) == 0:
            # The _id too, to check each entry's key against it (then dropped).
            del spec[ID]
        order = _paged_order(args.sort, key_field, paged=bool(args.skip or args.limit))
        with self._c.guard("querying", query=True):
            cursor = self._c.live.find(
                query, spec or None, skip=args.skip, limit=args.limit, sort=order or None
            )
        check = partial(_checked_entry, location=self.location, key_field=key_field)
        whole = args.fields is None
        return (check(doc, whole=whole) for doc in self._c.stream(cursor, "querying", query=True))

    def _check_ferretdb_sort(self, sort: Sequence[tuple[str, int]]) -> None:
        """Refuse a sort FerretDB v1 would order wrongly: by a dotted path with an array on the
        way to its last part (``e.k`` where an entry holds ``e: [{k: 5}]``). Arrays of scalars
        at the end of a path (``t`` or ``e.k`` holding ``[1, 9]``) it orders right.

        Whether an array lies on the way is the data's, not the query's: refusing every dotted
        sort would refuse sorts on plain nested documents, which FerretDB answers right. So one
        indexed ``find_one`` per step of the path asks whether any entry holds an array there,
        the shortest step first (while no shorter step holds an array, a longer one is a path
        through documents alone, which FerretDB answers right). A put of such an entry while
        the query runs is not seen, as with any entry written after a query started.
        """
        for path, _ in sort:
            parts = path.split(".")
            for end in range(1, len(parts)):
                step = ".".join(parts[:end])
                with self._c.guard("querying", query=True):
                    found = self._c.live.find_one({step: {"$type": "array"}}, {ID: 1})
                if found is not None:
                    raise InvalidFilterError(
                        f"--sort {path!r} is refused on FerretDB ({self.location}): FerretDB v1 "
                        f"orders wrongly by a dotted path through an array, and {step!r} holds "
                        "an array in some entries",
                        hint="sort by a path with no array on the way (an array at its end is "
                        "fine), or keep the index in MongoDB or SQLite",
                    )

    def count(self, filter: Mapping[str, Any] | None = None) -> int:
        query = self._server_query(filter)
        with self._c.guard("counting", query=True):
            return int(self._c.live.count_documents(query))

    def search_mismatches(self, keys: Sequence[str]) -> dict[str, list[str]]:
        return {}  # MongoDB's indexes are the server's own, kept with every write

    def bookkeeping(self, keys: Sequence[str]) -> dict[str, tuple[Entry, Bookkeeping]]:
        key_field = self._known_key_field()
        found: dict[str, tuple[Entry, Bookkeeping]] = {}
        for batch in _key_batches(keys):
            with self._c.guard("reading entries from"):
                docs = list(self._c.live.find({ID: {"$in": batch}}))
            for doc in docs:
                key = _key_of_document(doc, self.location)
                bookkeeping = _bookkeeping_of(doc, self.location)
                problem = None if key_field is None else key_problem(doc, key, key_field)
                if problem is not None:
                    raise damaged_index(self.location, f"entry {quote_key(key)} {problem}")
                entry = {
                    k: v
                    for k, v in doc.items()
                    if k != RESERVED_FIELD and (k != ID or key_field == ID)
                }
                found[key] = (plain(entry), bookkeeping)
        return found

    def iter_bookkeeping(self) -> Iterator[tuple[str, Bookkeeping]]:
        # _id is the key, and MongoDB compares strings by their UTF-8 bytes.
        with self._c.guard("listing entries of"):
            cursor = self._c.live.find({}, {RESERVED_FIELD: 1}, sort=[(ID, ASCENDING)])
        for doc in self._c.stream(cursor, "listing entries of"):
            yield _key_of_document(doc, self.location), _bookkeeping_of(doc, self.location)

    # --- rebuild -----------------------------------------------------------------------------

    def start_rebuild(
        self,
        key_field: str,
        fields: Sequence[str] = (),
        *,
        resume: bool = False,
        shard: Shard | None = None,
        restart: bool = False,
    ) -> MongoRebuild:
        # MongoDB indexes the fields when the rebuild commits; ``fields`` needs no work now.
        del fields
        self._c.check_fields(key_field, [])  # a key field the server cannot hold, up front
        name = self._c.name + REBUILD_SUFFIX
        with self._c.guard("reading the settings of"):
            recorded = self._c.meta.find_one({ID: self._c.name})
        if recorded is None:
            self._refuse_foreign()  # the swap would drop another application's collection
        self._drop_damaged_journal()
        if shard is not None:
            return self._join_sharded(name, key_field, shard, resume=resume, restart=restart)
        with self._c.guard("starting a rebuild of"):
            state = self._c.meta.find_one({ID: name}) if resume else None
            if state is not None and not _rebuild_state_is_sound(state):
                raise _damaged_rebuild_state(self.location, state)
            if state is not None and state.get("shards") is not None:
                refusal = join_refusal(
                    self.location, self._status(state), key_field, None, resume=True
                )
                if refusal is not None:
                    raise refusal
            # Unfiltered: mongomock's name filter also lists dropped collections; one listing
            # per rebuild costs nothing.
            exists = state is not None and _staging_of(state) in self._collection_names()
            fresh = state is None or state.get("key_field") != key_field or not exists
            if fresh:
                state = self._fresh_rebuild(name, key_field)
            assert state is not None
            self._raise_flag(str(state["run"]), fresh=fresh)
        staging = self._c.database[_staging_of(state)]
        return MongoRebuild(self._c, staging, name, key_field, str(state["run"]))

    def _collection_names(self) -> list[str]:
        return list(self._c.database.list_collection_names())

    def _staging_collections(self, name: str) -> list[str]:
        """The staging collections of rebuild ``name`` there are now.

        Listed *before* a start writes its state, and dropped after: a collection listed then
        is of a run that the state replaces. One created later may be of a start that replaced
        this one in turn, whose staging a stale start must not drop (that run's commit would
        re-create it empty, building its indexes, and swap it in).
        """
        return [c for c in self._collection_names() if c == name or _is_staging(c, name)]

    def _drop_staging(self, listed: Sequence[str]) -> None:
        """Drop the staging collections of earlier runs: abandoned or superseded runs leave no
        garbage behind past the next start."""
        for other in listed:
            self._c.database.drop_collection(other)

    def _drop_damaged_journal(self) -> None:
        """A rebuild's start: journal records that are no key and ETag name no delete that can
        be finished; the rebuild indexes what the bucket holds of them."""
        with self._c.guard("reading the delete journal of"):
            damaged = [
                doc[ID]
                for doc in self._c.journal.find({})
                if not (isinstance(doc.get(ID), str) and doc[ID])
                or not (isinstance(doc.get("etag"), str) and doc["etag"])
            ]
            if damaged:
                self._c.journal.delete_many({ID: {"$in": damaged}})
        # Likewise the put journal: the rebuild indexes what the bucket holds of its keys.
        with self._c.guard("reading the put journal of"):
            damaged = [doc[ID] for doc in self._c.puts.find({}) if _put_record(doc) is None]
            if damaged:
                self._c.puts.delete_many({ID: {"$in": damaged}})

    def _fresh_rebuild(self, name: str, key_field: str) -> dict[str, Any]:
        run = uuid.uuid4().hex
        staging = _staging_name(name, run)
        state = {
            ID: name,
            "key_field": key_field,
            "run": run,
            "staging": staging,
            "checkpoint": None,
            "started": utc_now(),
        }
        # Listed first, then the state, then the cleanup: a run committing meanwhile finds
        # itself replaced before its staging collection can be gone (see MongoRebuild.commit),
        # and a later start's staging, created after this state, is not in the list.
        # Upserts, tried again on a duplicate key: two rebuilds starting at once both insert
        # (FerretDB does not retry that itself); the later replace wins, as a later start does.
        earlier = self._staging_collections(name)
        self._c.replace_one_by_one(self._c.meta, [(name, state)])
        self._drop_staging(earlier)
        # Created now, so that its absence later means "gone", not "nothing written yet".
        try:
            self._c.database.create_collection(staging)
        except (CollectionInvalid, OperationFailure) as exc:
            if isinstance(exc, OperationFailure) and exc.code != NAMESPACE_EXISTS:
                raise
            # Another rebuild-index started at the same moment and cleaned up first: it
            # replaced this one before it began.
            raise self._superseded_error() from None
        self._forget_shards(name)
        return state

    def _forget_shards(self, name: str) -> None:
        """Remove the shard and swap records of any earlier sharded rebuild."""
        self._c.meta.delete_many({ID: {"$regex": f"^{re.escape(name)}\\$"}})

    def _join_sharded(
        self, name: str, key_field: str, shard: Shard, *, resume: bool, restart: bool
    ) -> MongoRebuild:
        """Create the shared staging collection, or join the one the first shard created."""
        deadline = time.monotonic() + PREPARE_WAIT
        with self._c.guard("starting a rebuild of"):
            while True:
                state = self._c.meta.find_one({ID: name})
                if state is not None and not _rebuild_state_is_sound(state):
                    if not restart:
                        raise _damaged_rebuild_state(self.location, state)
                    self._c.meta.delete_one({ID: name, "run": state.get("run")})
                    continue
                if state is None:
                    state = self._create_sharded(name, key_field, shard)
                    if state is None:
                        continue  # another shard created it first: join that one
                    break
                if (
                    not state.get("ready", True)
                    and time.monotonic() < deadline
                    and not has_died(str(state.get("preparer", "")))
                ):
                    time.sleep(PREPARE_PAUSE)
                    continue
                refusal = self._refusal(state, key_field, shard, resume=resume)
                if refusal is None and self._join(name, state, shard, resume=resume):
                    break
                if refusal is None:
                    refusal = join_refusal(
                        self.location, self._status(state), key_field, shard, resume=False
                    )
                if not restart or refusal is None:
                    raise refusal or self._superseded_error()
                # Only the rebuild that was refused is discarded: of shards restarting
                # together, one deletes it and creates a new one, the others join that.
                self._c.meta.delete_one({ID: name, "run": state["run"]})
        return MongoRebuild(
            self._c,
            self._c.database[_staging_of(state)],
            name,
            key_field,
            str(state["run"]),
            shard=shard,
            shards=shard.count,
            resume=resume,
        )

    def _refusal(
        self, state: Mapping[str, Any], key_field: str, shard: Shard, *, resume: bool
    ) -> IndexSettingsError | None:
        if not state.get("ready", True):
            died = has_died(str(state.get("preparer", "")))
            return IndexSettingsError(
                f"the rebuild of index {self.location} was being prepared since "
                f"{state.get('started')} by a shard that "
                + ("died" if died else "seems to have died"),
                hint="add --restart to discard it and start over",
            )
        return join_refusal(self.location, self._status(state), key_field, shard, resume=resume)

    def _create_sharded(self, name: str, key_field: str, shard: Shard) -> dict[str, Any] | None:
        """Insert the state document (unready), prepare the staging collection, mark it ready.

        The insert is the atomic step (unique ``_id``): None when another shard won it."""
        run = uuid.uuid4().hex
        staging = _staging_name(name, run)
        state = {
            ID: name,
            "key_field": key_field,
            "run": run,
            "staging": staging,
            "checkpoint": None,
            "started": utc_now(),
            "shards": shard.count,
            "ready": False,
            # Who prepares it: shards waiting for it to be ready stop once it is known dead.
            "preparer": tagged("prepare"),
        }
        earlier = self._staging_collections(name)  # before the state: see _fresh_rebuild
        try:
            self._c.meta.insert_one(state)
        except DuplicateKeyError:
            return None
        # This shard won the insert: every staging collection listed before it is an
        # abandoned one.
        self._drop_staging(earlier)
        self._c.database.create_collection(staging)
        self._forget_shards(name)
        self._raise_flag(run, fresh=True)
        self._c.meta.insert_one({ID: _shard_id(name, shard.index), "run": run, "done": False})
        self._c.meta.update_one({ID: name, "run": run}, {"$set": {"ready": True}})
        state["ready"] = True
        return state

    def _join(self, name: str, state: Mapping[str, Any], shard: Shard, *, resume: bool) -> bool:
        """Record this shard as started on ``state``'s rebuild; False: it already was."""
        shard_id, run = _shard_id(name, shard.index), state["run"]
        for _ in range(3):
            try:
                self._c.meta.insert_one({ID: shard_id, "run": run, "done": False})
                break
            except DuplicateKeyError:
                existing = self._c.meta.find_one({ID: shard_id})
                if existing is None:
                    continue
                if existing.get("run") == run:
                    return resume  # resumed: its checkpoint is kept; else a second copy
                # Left by an earlier rebuild: replaced, unless someone else replaces it first.
                fresh = {ID: shard_id, "run": run, "done": False}
                stale = {ID: shard_id, "run": existing.get("run")}
                if self._c.meta.replace_one(stale, fresh).matched_count:
                    break
        if self._c.meta.find_one({ID: name, "run": run}) is None:
            raise self._superseded_error()
        run_flag = self._c.meta.find_one({ID: self._c.flag_id})
        if run_flag is None:
            self._raise_flag(str(run), fresh=False)
        return True

    def _superseded_error(self) -> S3idxError:
        return superseded_rebuild(self.location)

    def _status(self, state: Mapping[str, Any]) -> RebuildStatus:
        name, run, shards = str(state[ID]), state.get("run"), state.get("shards")
        joined: list[int] = []
        done: list[int] = []
        swapping = False
        if shards is not None:
            ids = [_shard_id(name, i) for i in range(int(shards))]
            for doc in self._c.meta.find({ID: {"$in": ids}, "run": run}):
                index = int(str(doc[ID]).rpartition("$shard")[2])
                joined.append(index)
                if doc.get("done"):
                    done.append(index)
            swapping = self._c.meta.find_one({ID: _swap_id(name), "run": run}) is not None
        started = state.get("started")
        return RebuildStatus(
            str(state.get("key_field")),
            started if isinstance(started, datetime) else None,
            None if shards is None else int(shards),
            tuple(sorted(joined)),
            tuple(sorted(done)),
            swapping,
        )

    def rebuild_status(self) -> RebuildStatus | None:
        with self._c.guard("reading the rebuild state of"):
            state = self._c.meta.find_one({ID: self._c.name + REBUILD_SUFFIX})
        if state is not None and not _rebuild_state_is_sound(state):
            raise _damaged_rebuild_state(self.location, state)
        with self._c.guard("reading the rebuild state of"):
            return None if state is None else self._status(state)

    def _raise_flag(self, run: str, *, fresh: bool) -> None:
        """Set the "rebuild running" flag; a fresh rebuild first empties the change log.

        In that order: a write logged after the log is emptied is kept. A resumed rebuild keeps
        the log of its first start (the changes since then are what it must replay).
        """
        flag = self._c.flag_id
        if fresh:
            # Asked first: a later start may have replaced this one since its state was
            # written, and be logging live writes already; emptying its log would lose them
            # from its index. Only the moment between this read and the drop is left.
            state = {ID: self._c.name + REBUILD_SUFFIX, "run": run}
            if self._c.meta.find_one(state, {ID: 1}) is None:
                raise self._superseded_error()
            self._c.changes.drop()
            self._c.replace_one_by_one(
                self._c.meta, [(flag, {ID: flag, "run": run, "started": utc_now()})]
            )
        elif self._c.meta.find_one({ID: flag}) is None:
            with suppress(DuplicateKeyError):  # another process just set it
                self._c.meta.update_one(
                    {ID: flag}, {"$setOnInsert": {"run": run, "started": utc_now()}}, upsert=True
                )

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


class MongoRebuild:
    """A rebuild filling ``<collection>__rebuild``; ``commit`` renames it over the live one.

    ``run`` identifies this rebuild in its state document: a later fresh start replaces it,
    and this one then refuses to save checkpoints or commit over the newer one.
    """

    def __init__(
        self,
        collections: _Collections,
        collection: Collection[Any],
        state_id: str,
        key_field: str,
        run: str,
        *,
        shard: Shard | None = None,
        shards: int | None = None,
        resume: bool = False,
    ) -> None:
        self._c = collections
        self._collection = collection
        self._state_id = state_id
        self._key_field = key_field
        self._run = run
        self._finished: str | None = None
        self._shards = shards
        self._resumed = resume
        self._owner = uuid.uuid4().hex  # names this handle's claim of the swap
        # Where this handle's checkpoint lives: its shard's document, or the state document.
        self._checkpoint_id = state_id if shard is None else _shard_id(state_id, shard.index)

    def _mine(self) -> dict[str, Any]:
        return {ID: self._state_id, "run": self._run}

    def _check_open(self) -> None:
        if self._finished is not None:
            raise S3idxError(f"this rebuild of {self._c.location} was {self._finished}")

    def upsert(self, entries: Sequence[Entry]) -> None:
        self._check_open()
        items = self._c.latest(entries, self._key_field)
        if self._collection.name == self._state_id:
            # A rebuild an earlier version started stages in the shared collection: upserts.
            self._c.write(self._collection, items, self._key_field)
        else:
            self._c.insert(self._collection, items, self._key_field)

    def delete(self, keys: Sequence[str]) -> None:
        self._check_open()
        for batch in _key_batches(keys):
            with self._c.guard("deleting entries from the rebuild of"):
                self._collection.delete_many({ID: {"$in": batch}})

    def changed_keys(self) -> Iterator[str]:
        """The distinct keys the live index's writers logged since this rebuild started."""
        with self._c.guard("reading the change log of"):
            cursor = self._c.changes.find({}, {"key": 1})
        seen: set[str] = set()
        for doc in self._c.stream(cursor, "reading the change log of"):
            key = doc.get("key")
            if isinstance(key, str) and key not in seen:
                seen.add(key)
                yield key

    def finish(self) -> None:
        """After ``commit``: writers stop logging, and the log goes."""
        self._lower_flag()
        self._finished = "finished"

    def has_keys(self, keys: Sequence[str]) -> set[str]:
        self._check_open()
        found: set[str] = set()
        for batch in _key_batches(keys):
            with self._c.guard("reading the rebuild of"):
                found.update(d[ID] for d in self._collection.find({ID: {"$in": batch}}, [ID]))
        return found

    def iter_bookkeeping(self) -> Iterator[tuple[str, Bookkeeping]]:
        self._check_open()
        # _id is the key, and MongoDB compares strings by their UTF-8 bytes.
        with self._c.guard("reading the rebuild of"):
            cursor = self._collection.find({}, {RESERVED_FIELD: 1}, sort=[(ID, ASCENDING)])
        for doc in self._c.stream(cursor, "reading the rebuild of"):
            yield (
                _key_of_document(doc, self._c.location),
                _bookkeeping_of(doc, self._c.location),
            )

    def last_key(self) -> str | None:
        self._check_open()
        with self._c.guard("reading the rebuild of"):
            docs = list(self._collection.find({}, {ID: 1}, sort=[(ID, DESCENDING)], limit=1))
        return _key_of_document(docs[0], self._c.location) if docs else None

    def save_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        self._check_open()
        with self._c.guard("saving the rebuild checkpoint of"):
            result = self._c.meta.update_one(
                {ID: self._checkpoint_id, "run": self._run},
                # As JSON text: its names include field paths ("x.y"), which FerretDB v1
                # refuses as document keys.
                {"$set": {"checkpoint": dumps(dict(checkpoint)).decode()}},
            )
        if result.matched_count == 0:
            raise self._superseded()

    def checkpoint(self) -> dict[str, Any] | None:
        self._check_open()
        with self._c.guard("reading the rebuild checkpoint of"):
            state = self._c.meta.find_one({ID: self._checkpoint_id, "run": self._run})
        if state is None:
            raise self._superseded()
        return _checkpoint_of(state, self._c.location)

    # --- shards ------------------------------------------------------------------------------

    def _shard_ids(self) -> list[str]:
        return [_shard_id(self._state_id, i) for i in range(self._shards or 0)]

    def shard_checkpoints(self) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        with self._c.guard("reading the rebuild checkpoints of"):
            docs = list(self._c.meta.find({ID: {"$in": self._shard_ids()}, "run": self._run}))
        for doc in docs:
            checkpoint = _checkpoint_of(doc, self._c.location)
            if checkpoint is not None:
                found[int(str(doc[ID]).rpartition("$shard")[2])] = checkpoint
        return found

    def shard_done(self, index: int) -> None:
        self._check_open()
        with self._c.guard("recording a shard done in the rebuild of"):
            result = self._c.meta.update_one(
                {ID: _shard_id(self._state_id, index), "run": self._run},
                {"$set": {"done": True}},
            )
        if result.matched_count == 0:
            raise self._superseded()

    def shards_done(self) -> set[int]:
        with self._c.guard("reading the shards done of"):
            docs = self._c.meta.find(
                {ID: {"$in": self._shard_ids()}, "run": self._run, "done": True}, {ID: 1}
            )
            return {int(str(d[ID]).rpartition("$shard")[2]) for d in docs}

    def claim_swap(self) -> bool:
        self._check_open()
        if self._shards is None:
            return True  # one process: nobody to race
        if self.shards_done() != set(range(self._shards)):
            return False
        swap_id = _swap_id(self._state_id)
        mine = {ID: swap_id, "run": self._run, "owner": self._owner, "at": utc_now()}
        with self._c.guard("claiming the swap of"):
            try:
                # A unique insert: atomic on every server (FerretDB's updates are not).
                self._c.meta.insert_one(mine)
            except DuplicateKeyError:
                held = self._c.meta.find_one({ID: swap_id})
                if held is None:
                    return False
                if held.get("run") == self._run and not self._resumed:
                    return bool(held.get("owner") == self._owner)
                # A claim left by an earlier rebuild, or (resumed) by a claimer that died.
                taken = self._c.meta.replace_one({ID: swap_id, "owner": held.get("owner")}, mine)
                if not taken.matched_count:
                    return False
            return self._claim_still_stands(swap_id)

    def _claim_still_stands(self, swap_id: str) -> bool:
        """False (and the claim withdrawn) when the run ended before the claim landed.

        A shard that saw every shard done may claim only after the winner committed: the
        commit deletes the state document before the claim, so a claim that finds the state
        gone came late, and its commit would fail as superseded.
        """
        if self._c.meta.find_one(self._mine(), {ID: 1}) is not None:
            return True
        self._c.meta.delete_one({ID: swap_id, "owner": self._owner})
        return False

    def _forget_shards(self) -> None:
        self._c.meta.delete_many(
            {ID: {"$in": [*self._shard_ids(), _swap_id(self._state_id)]}, "run": self._run}
        )

    def commit(self, settings: IndexSettings, *, store: str | None = None) -> None:
        self._check_open()
        if settings.key_field != self._key_field:
            raise IndexSettingsError(
                f"rebuild of {self._c.location} was filled by key field "
                f"{self._key_field!r}, not {settings.key_field!r}"
            )
        fields = unique_fields(settings.key_field, settings.fields)
        self._c.check_fields(settings.key_field, fields)
        final = IndexSettings(settings.key_field, tuple(fields), settings.pending)
        with self._c.guard("committing the rebuild of"):
            # Indexes built once over the full collection are cheaper than maintained per write.
            # Built before the check: building them re-creates a staging collection that a later
            # start dropped, and a later start replaces the state before it drops any, so the
            # check then fails; after it, an empty collection would be swapped in.
            self._c.ensure_indexes(self._collection, final)
            if self._c.meta.find_one(self._mine()) is None:
                raise self._superseded()
            self._swap()
            # $set, not a replacement: the pending marks stay (they only grow; a backfill
            # running meanwhile compares them with those it read when it began).
            pending = [{"field": f, "entries": n} for f, n in settings.pending if f in fields]
            self._c.meta.update_one(
                {ID: self._c.name},
                {
                    "$set": {
                        "key_field": final.key_field,
                        "fields": fields,
                        "format": FORMAT,
                        "pending": pending,
                    }
                },
                upsert=True,
            )
            if store is None:
                self._c.meta.delete_one({ID: self._c.store_id})
            else:
                self._c.meta.replace_one({ID: self._c.store_id}, {"store": store}, upsert=True)
            self._c.meta.delete_one(self._mine())
            self._forget_shards()
        self._c.key_field = final.key_field
        self._finished = "committed"

    def _swap(self) -> None:
        """Rename the rebuild over the live collection.

        On MongoDB one atomic step: readers see the old collection or the new one. FerretDB v1
        cannot drop the target in a rename, so there it is drop, then rename: in between,
        readers find an empty index, and a crash there leaves the rebuild to finish with
        ``rebuild-index --resume``.
        """
        target = self._c.name
        try:
            self._collection.rename(target, dropTarget=True)
            return
        except OperationFailure as exc:
            if exc.code in SOURCE_GONE:
                raise self._superseded() from None
            if exc.code != NOT_IMPLEMENTED:
                raise
        for attempt in range(DROP_RENAME_ATTEMPTS):
            if attempt:
                # Writers that keep writing re-create the target between the drop and the
                # rename now and then; a random pause puts the next try elsewhere in their
                # rhythm (five tries in a row failed under a put of batches of five).
                time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
            # Asked again before each drop: a later start takes the rebuild over at any
            # moment, and may have swapped its own index in already; that one is not ours to
            # drop. Only the moment between this read and the drop is left.
            if self._c.meta.find_one(self._mine(), {ID: 1}) is None:
                raise self._superseded()
            self._c.database.drop_collection(target)
            try:
                self._collection.rename(target)
                return
            except OperationFailure as exc:
                # A later start dropped this run's staging after commit found the run its own
                # (the live collection, dropped just now, is the later run's to fill).
                if exc.code in SOURCE_GONE:
                    raise self._superseded() from None
                if exc.code != NAMESPACE_EXISTS:  # a writer re-created it; drop it again
                    raise
        raise S3idxError(
            f"could not swap the rebuild in: writers keep re-creating {self._c.location}",
            hint="stop the other writers, then run rebuild-index --resume",
        )

    def abort(self) -> None:
        if self._finished == "committed":
            # Committed but not finished: nothing will replay the log now, so writers stop
            # paying for it (the next rebuild starts a log of its own anyway).
            self._lower_flag()
        if self._finished is not None:
            return  # aborting after the end changes nothing, so cleanup code can always call it
        with self._c.guard("aborting the rebuild of"):
            mine = self._c.meta.find_one_and_delete(self._mine()) is not None
            if mine or self._collection.name != self._state_id:
                self._collection.drop()  # this run's own: nobody else writes into it
            self._forget_shards()
        self._lower_flag()
        self._finished = "aborted"

    def _lower_flag(self) -> None:
        """Clear the flag and the log, unless a newer rebuild has raised the flag since."""
        flag = {ID: self._c.flag_id, "run": self._run}
        with self._c.guard("ending the change log of"):
            if self._c.meta.delete_one(flag).deleted_count:
                self._c.changes.drop()

    def _superseded(self) -> S3idxError:
        if self._collection.name != self._state_id:
            # This run's own staging collection is garbage once the run is gone (its other
            # shards write there too: dropped only when the state no longer names the run).
            with suppress(PyMongoError):
                if self._c.meta.find_one(self._mine(), {ID: 1}) is None:
                    self._collection.drop()
        return superseded_rebuild(self._c.location)


def _checkpoint_of(state: Mapping[str, Any], location: str) -> dict[str, Any] | None:
    """A saved checkpoint: JSON text, or a document as earlier versions saved it."""
    checkpoint = state.get("checkpoint")
    if isinstance(checkpoint, str):
        with suppress(ValueError):  # not JSON: said below
            checkpoint = loads(checkpoint)
    if checkpoint is not None and not isinstance(checkpoint, dict):
        raise damaged_index(
            location,
            f"its rebuild checkpoint in {state.get(ID)!r:.100} cannot be read: "
            f"{state.get('checkpoint')!r:.100}",
            hint=_RESTART_HINT,
        )
    return plain(checkpoint) if checkpoint is not None else None


def _rebuild_state_is_sound(state: Mapping[str, Any]) -> bool:
    """Whether a rebuild's state document is as s3idx writes it."""
    key_field, run, shards = state.get("key_field"), state.get("run"), state.get("shards")
    started, staging = state.get("started"), state.get("staging")
    return (
        # Where it is named, the staging collection is one of this rebuild's own names: a
        # name damaged by hand must not make abort drop, or commit rename, another collection.
        (staging is None or staging == _staging_name(str(state.get(ID)), str(run)))
        and isinstance(key_field, str)
        and bool(key_field)
        and isinstance(run, str)
        and bool(run)
        and (shards is None or (type(shards) in (int, Int64) and shards > 0))
        and (started is None or isinstance(started, datetime))
    )


def _damaged_rebuild_state(location: str, state: Mapping[str, Any]) -> DamagedIndexError:
    shown = {k: v for k, v in state.items() if k != ID}
    return damaged_index(
        location,
        f"its record of a rebuild in progress cannot be read: {shown!r:.200}",
        hint=_RESTART_HINT,
    )


def _check_field_count(key_field: str, fields: Sequence[str]) -> None:
    """Refuse more searchable fields than MongoDB can index, before anything is recorded:
    createIndexes would fail only after the settings were written."""
    allowed = MAX_INDEXES - 1 - (key_field != ID)
    if len(fields) > allowed:
        raise IndexSettingsError(
            f"{len(fields)} searchable fields are more than a MongoDB index can hold: MongoDB "
            f"allows {MAX_INDEXES} indexes per collection, so at most {allowed} fields "
            f"besides the key field {key_field!r}",
            hint=f"index at most {allowed} --field paths",
        )


def _staging_name(state_id: str, run: str) -> str:
    """The staging collection of one rebuild run: a superseded run's late writes land in its
    own collection, never in its successor's."""
    return f"{state_id}_{run[:RUN_CHARS]}"


def _is_staging(collection: str, state_id: str | None = None) -> bool:
    """Whether ``collection`` is named as a rebuild run's staging collection (of ``state_id``'s
    rebuild, if given); such names are reserved, so dropping one never drops a user's."""
    found = _STAGING_NAME.fullmatch(collection)
    return found is not None and (state_id is None or found.group(1) == state_id)


_STAGING_NAME = re.compile(f"(.*{REBUILD_SUFFIX})_[0-9a-f]{{{RUN_CHARS}}}", re.DOTALL)


def _staging_of(state: Mapping[str, Any]) -> str:
    """Where ``state``'s rebuild stages its entries: its own collection, or, for a rebuild
    an earlier version started, the shared ``<collection>__rebuild``."""
    staging = state.get("staging")
    return staging if isinstance(staging, str) else str(state[ID])


def _shard_id(state_id: str, index: int) -> str:
    return f"{state_id}$shard{index}"


def _swap_id(state_id: str) -> str:
    return f"{state_id}$swap"


# --- connecting ------------------------------------------------------------------------------


def _connect(uri: str, server_selection_timeout_ms: int) -> MongoClient[Any]:
    options: dict[str, Any] = {"tz_aware": True, "tzinfo": UTC, "appname": "s3idx"}
    # A timeout written into the URI is the user's explicit choice; ours is only a default.
    given = {k.lower() for k, _ in parse_qsl(uri.partition("?")[2])}
    defaults = {
        "serverSelectionTimeoutMS": server_selection_timeout_ms,
        "connectTimeoutMS": CONNECT_TIMEOUT_MS,
        # pymongo waits forever for an answer by default; a server that stops answering
        # must fail the command. Generous: building an index on a big collection is one call.
        "socketTimeoutMS": SOCKET_TIMEOUT_MS,
    }
    options.update({k: v for k, v in defaults.items() if k.lower() not in given})
    return MongoClient(uri, **options)


CONNECT_TIMEOUT_MS = 10_000
SOCKET_TIMEOUT_MS = 600_000


def _first_path(info: Mapping[str, Any]) -> str | None:
    """The field of a single-field index (any direction), else None."""
    key = list(info.get("key", ()))
    return str(key[0][0]) if len(key) == 1 else None


class _DeadOwners:
    """The owners of FerretDB entry locks seen dead on this machine, and since when."""

    CHECK_EVERY = 0.5  # seconds: the owners are read once in so many rounds of waiting

    def __init__(self) -> None:
        self._since: dict[str, float] = {}
        self._next = 0.0

    def due(self) -> bool:
        """Whether to read the owners again."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.CHECK_EVERY
        return True

    def settled(self, owners: Iterable[str]) -> list[str]:
        """Of ``owners``, those dead for ``DEATH_SETTLE_SECONDS`` or more: their locks are free."""
        now = time.monotonic()
        for owner in owners:
            if owner not in self._since and has_died(owner):
                self._since[owner] = now
        return [o for o, since in self._since.items() if now - since >= DEATH_SETTLE_SECONDS]


def _put_id(key: str, run: str) -> str:
    """The _id of the put journal record of ``key`` by ``run``."""
    return f"{len(run)}:{run}:{key}"


def _put_record(doc: Mapping[str, Any]) -> PutIntent | None:
    """A put journal document as a record (either layout), or None if it is no record."""
    key = doc.get("key", doc.get(ID))
    etag, run, at = doc.get("etag"), doc.get("run"), doc.get("at")
    if not (_nonempty(key) and _nonempty(etag) and _nonempty(run)):
        return None
    if "key" in doc and doc.get(ID) != _put_id(key, run):
        return None
    if isinstance(at, datetime):
        # A heartbeat read without its time zone was written in UTC.
        beat: float | None = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    else:
        beat = None  # unknown (the earlier layout, or not a time): settled as a dead run's
    return PutIntent(key, etag, run, beat)


def _nonempty(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value)
