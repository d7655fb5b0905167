"""The MongoDB index: one document per entry, with the document key as ``_id``.

Layout in the database:

- ``<collection>``: the entries. ``_id`` is the key (so it is unique by construction and sorts in
  UTF-8 byte order); the entry's own fields sit at the top level, so any MongoDB filter works on
  them as written. A unique index on the key field and one index per searchable field.
- ``s3idx_meta``: small documents about the indexes of this database, ``_id`` = collection name:
  ``{"key_field", "fields", "format", "pending"}`` (``pending``: ``{"field", "entries"}`` for
  each field added while the collection held entries, until ``reindex`` backfills it); and,
  while a rebuild is in progress, ``_id`` = ``<collection>__rebuild``:
  ``{"key_field", "run", "checkpoint", "started"}``.
- ``<collection>__rebuild``: the entries of a rebuild; renamed over ``<collection>`` on commit.
- ``<collection>__deletes``: the delete journal, ``{_id: key, "etag"}`` per entry being deleted
  (``journal_deletes``), so that an interrupted delete can be finished.
- ``<collection>__changes``: while a rebuild runs, the keys every write of the live entries
  touched, ``{"key"}`` per write. The "rebuild running" flag is the document ``_id`` =
  ``<collection>__changes`` in ``s3idx_meta`` (``{"run", "started"}``): it lives beside the
  settings, so it exists even when the live entries are missing.

pymongo is imported here only, and every pymongo error is translated into an ``S3idxError`` at
this boundary (see ``translate_error``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from bson.codec_options import CodecOptions
from bson.errors import BSONError
from bson.int64 import Int64
from pymongo import (
    ASCENDING,
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
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    InvalidName,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from s3idx.codec import RESERVED_FIELD, utc_now
from s3idx.config import redact
from s3idx.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    IndexSettingsError,
    InvalidFilterError,
    RecordError,
    S3idxError,
    TransientError,
    UsageError,
)
from s3idx.index.arguments import check_find_arguments
from s3idx.index.base import Bookkeeping, Entry, IndexSettings, SortSpec
from s3idx.limits import batched
from s3idx.query.filter import check_nesting

META_COLLECTION = "s3idx_meta"
REBUILD_SUFFIX = "__rebuild"
JOURNAL_SUFFIX = "__deletes"
CHANGES_SUFFIX = "__changes"
RESERVED_SUFFIXES = (REBUILD_SUFFIX, JOURNAL_SUFFIX, CHANGES_SUFFIX)
FORMAT = 1
ID = "_id"
ETAG = f"{RESERVED_FIELD}.etag"  # the recorded ETag of an entry, the value compare-and-set tests

# Entries per bulk write and keys per ``$in`` query: well under the 16 MB command limit with
# entries of at most 2 KB, and large enough that round trips do not dominate.
BATCH_SIZE = 1000
PENDING_UPDATE_ATTEMPTS = 10

AUTH_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed
NOT_IMPLEMENTED = 238  # FerretDB v1 answers so to renameCollection with dropTarget: true
NAMESPACE_EXISTS = 48
DUPLICATE_KEY = 11000
# Writes of a chunk tried when a concurrent upsert of one of its keys won the insert.
UPSERT_ATTEMPTS = 5
UPSERT_PAUSE = 0.02  # seconds, times the attempt number
# Index creations tried when the connection is lost on the way (idempotent, so safe to repeat).
INDEX_ATTEMPTS = 3
INDEX_PAUSE = 0.2  # seconds, times the attempt number
# Renames tried when a writer re-creates the live collection between the drop and the rename of
# the non-atomic swap; each retry drops what that writer wrote (as an atomic swap would).
SWAP_ATTEMPTS = 5
ATLAS_ERROR = 8000  # Atlas proxies answer a bad login with this code and "bad auth ..."
# Failures of a query that are about the server's state, not about the filter.
SERVER_STATE_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        43,  # CursorNotFound
        50,  # MaxTimeMSExpired
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        175,  # QueryPlanKilled (e.g. the collection was renamed by a rebuild commit)
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        292,  # QueryExceededMemoryLimitNoDiskUseAllowed
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11601,  # Interrupted
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
# Query-string options whose values are secrets, as pymongo spells them (lowercased).
SECRET_OPTIONS = frozenset({"tlscertificatekeyfilepassword", "authmechanismproperties"})


# --- locations and secrets -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MongoLocation:
    """What may be shown of a MongoDB URI, and the secrets that must never be."""

    scheme: str
    user: str
    has_password: bool
    hosts: str
    secrets: tuple[str, ...]

    @classmethod
    def parse(cls, uri: str) -> MongoLocation:
        scheme, sep, rest = uri.partition("://")
        if not sep:
            return cls("mongodb", "", False, "", ())
        # Up to the last '@': '@', '/' and '?' in a password must be percent-escaped, but people
        # forget, and then the whole password must still land in what we hide.
        userinfo, _, host_part = rest.rpartition("@")
        user, _, password = userinfo.partition(":")
        secrets = [password, unquote(password)]
        # Over-inclusive when a password holds a '?'; it only decides what else to hide.
        for name, value in parse_qsl(rest.partition("?")[2]):
            if name.lower() in SECRET_OPTIONS:
                secrets.append(value)
        # Longest first, so a secret containing another is hidden whole.
        kept = sorted({s for s in secrets if s}, key=len, reverse=True)
        hosts = re.split(r"[/?]", host_part, maxsplit=1)[0]
        return cls(scheme, user, bool(password), hosts, tuple(kept))

    def describe(self, database: str, collection: str) -> str:
        """The location for messages: no password, no query string (it may hold secrets)."""
        user = f"{self.user}@" if self.user else ""
        auth = f"{self.user}:***@" if self.has_password else user
        return f"{self.scheme}://{auth}{self.hosts}/{database} (collection {collection})"

    def scrub(self, text: str) -> str:
        """Text fit to show: URI passwords and every known secret replaced by ``***``."""
        text = redact(text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


# --- error translation -----------------------------------------------------------------------


def translate_error(
    exc: BaseException, *, action: str, location: str, hosts: str, query: bool = False
) -> S3idxError:
    """The s3idx error for a pymongo/bson error met while doing ``action``.

    ``query`` says the operation evaluated a user's filter, so the server's complaints about it
    are the user's filter being wrong. Messages are not scrubbed here; the caller does that.
    """
    if isinstance(exc, ServerSelectionTimeoutError):
        return BackendUnavailableError(
            f"cannot reach MongoDB at {hosts}: {_brief(exc)}",
            hint=f"while {action} {location}; is the server running, and are the host and "
            "port right?",
        )
    if isinstance(exc, AutoReconnect):
        return TransientError(
            f"lost the connection to MongoDB at {hosts} while {action}: {_brief(exc)}"
        )
    if isinstance(exc, ConnectionFailure):
        return BackendUnavailableError(
            f"cannot use MongoDB at {hosts} while {action}: {_brief(exc)}"
        )
    if isinstance(exc, ConfigurationError | InvalidName):
        return UsageError(f"invalid MongoDB location {location}: {_brief(exc)}")
    if isinstance(exc, BulkWriteError):
        return S3idxError(
            f"MongoDB refused {len(_write_errors(exc)) or 'some'} writes while {action} "
            f"{location}: {_bulk_detail(exc)}"
        )
    if isinstance(exc, OperationFailure):
        return _translate_operation_failure(exc, action, location, hosts, query)
    if query and isinstance(exc, BSONError | OverflowError):
        return InvalidFilterError(f"the query cannot be sent to MongoDB: {exc}")
    return S3idxError(f"MongoDB error while {action} {location}: {_brief(exc)}")


def _translate_operation_failure(
    exc: OperationFailure, action: str, location: str, hosts: str, query: bool
) -> S3idxError:
    message = _errmsg(exc)
    if exc.code in AUTH_CODES or (exc.code == ATLAS_ERROR and "auth" in message.lower()):
        return AccessDeniedError(
            f"MongoDB at {hosts} refused access while {action}: {message}",
            hint="check the user name, password and authSource in the URI, and the user's roles",
        )
    if query and exc.code not in SERVER_STATE_CODES:
        return InvalidFilterError(f"invalid query: {message}")
    code = f" (code {exc.code})" if exc.code is not None else ""
    return S3idxError(f"MongoDB error while {action} {location}: {message}{code}")


def _errmsg(exc: OperationFailure) -> str:
    details = exc.details if isinstance(exc.details, Mapping) else {}
    return str(details.get("errmsg") or _brief(exc))


_CONFIGURED_TIMEOUTS = re.compile(r"\s*\(configured timeouts:[^)]*\)")


def _brief(exc: BaseException) -> str:
    """pymongo's message without what it appends for debugging: the whole server reply
    (", full error: {...}"), the topology dump (", Timeout: ..., Topology Description: ...")
    and the configured timeouts."""
    text = str(exc).split(", full error:", 1)[0].split(", Timeout:", 1)[0]
    return _CONFIGURED_TIMEOUTS.sub("", text).strip() or type(exc).__name__


def _write_errors(exc: BulkWriteError) -> list[Mapping[str, Any]]:
    details = exc.details if isinstance(exc.details, Mapping) else {}
    return list(details.get("writeErrors") or [])


def _only_duplicate_keys(exc: BulkWriteError) -> bool:
    errors = _write_errors(exc)
    return bool(errors) and all(e.get("code") == DUPLICATE_KEY for e in errors)


def _bulk_detail(exc: BulkWriteError) -> str:
    """The first write error and the first write-concern error, if any."""
    details = exc.details if isinstance(exc.details, Mapping) else {}
    parts = []
    for name, label in (("writeErrors", "first"), ("writeConcernErrors", "write concern")):
        errors = details.get(name) or []
        if errors:
            parts.append(f"{label}: {errors[0].get('errmsg', '?')} (code {errors[0].get('code')})")
    return "; ".join(parts) or _errmsg(exc)


# --- pure helpers ----------------------------------------------------------------------------


def check_collection_name(name: str) -> str:
    """Refuse names MongoDB rejects and the names s3idx uses for its own bookkeeping."""
    if not name or "$" in name or "\0" in name or name.startswith("system."):
        raise UsageError(f"invalid MongoDB collection name {name!r}")
    if name == META_COLLECTION or name.endswith(RESERVED_SUFFIXES):
        suffixes = ", ".join(f"'*{s}'" for s in RESERVED_SUFFIXES)
        raise UsageError(
            f"collection name {name!r} is reserved: s3idx uses {META_COLLECTION!r} and "
            f"{suffixes} for its own bookkeeping"
        )
    return name


def check_filter(filter: Mapping[str, Any] | None) -> dict[str, Any]:
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise InvalidFilterError(
            f"a filter must be a JSON object, got {type(filter).__name__}",
            hint='for example {"field": "value"}',
        )
    check_nesting(filter)  # the server's own limit, said the way every backend says it
    return dict(filter)


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


def uses_operator(value: Any, operator: str) -> bool:
    """Whether a filter uses ``operator`` anywhere in it."""
    if isinstance(value, Mapping):
        return any(k == operator or uses_operator(v, operator) for k, v in value.items())
    if isinstance(value, list):
        return any(uses_operator(v, operator) for v in value)
    return False


def _key_batches(keys: Iterable[str]) -> Iterator[list[str]]:
    """The distinct keys, ``BATCH_SIZE`` at a time: one ``$in`` query or delete each."""
    yield from batched(dict.fromkeys(keys), BATCH_SIZE)


def _etag_of(entry: Mapping[str, Any], key: str) -> str:
    data = entry.get(RESERVED_FIELD)
    etag = data.get("etag") if isinstance(data, Mapping) else None
    if not isinstance(etag, str):
        raise S3idxError(f"index entry {key!r} has no {ETAG!r} to compare and set")
    return etag


def _bookkeeping_of(doc: Mapping[str, Any], location: str) -> Bookkeeping:
    data = doc.get(RESERVED_FIELD)
    try:
        if not isinstance(data, Mapping):
            raise TypeError(RESERVED_FIELD)
        return Bookkeeping.from_dict(data)
    except (KeyError, TypeError, ValueError):
        raise S3idxError(
            f"entry {doc.get(ID)!r} in {location} has no valid {RESERVED_FIELD!r} bookkeeping",
            hint="rebuild the index from the store (rebuild-index)",
        ) from None


# --- the index -------------------------------------------------------------------------------


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
        self._uri = MongoLocation.parse(uri)
        self._name = check_collection_name(collection)
        self.location = self._uri.describe(database, collection)
        self._owns_client = client is None
        self._key_field: str | None = None
        self._ferretdb: bool | None = None  # asked of the server when first needed
        try:
            if client is None:
                client = _connect(uri, server_selection_timeout_ms)
                db = client.get_database(database)
            else:
                # A client made elsewhere (tests pass mongomock's) may not be tz-aware.
                db = client.get_database(database, codec_options=CodecOptions(tz_aware=True))
        except (PyMongoError, ValueError, TypeError, OSError) as exc:
            raise self._scrubbed(self._open_error(exc)) from None
        self._client = client
        self._db: Database[Any] = db
        self._live: Collection[Any] = db[collection]
        self._meta: Collection[Any] = db[META_COLLECTION]
        self._journal: Collection[Any] = db[collection + JOURNAL_SUFFIX]
        self._changes: Collection[Any] = db[collection + CHANGES_SUFFIX]

    # --- errors ------------------------------------------------------------------------------

    def _open_error(self, exc: BaseException) -> S3idxError:
        # MongoClient() checks the URI and its options (and reads TLS files) at once and
        # connects later; only mongodb+srv:// asks DNS now, which may be down rather than wrong.
        if _dns_outage(exc):
            return BackendUnavailableError(f"cannot look up MongoDB at {self._uri.hosts}: {exc}")
        return UsageError(f"invalid MongoDB location {self.location}: {exc}")

    @contextmanager
    def _guard(self, action: str, *, query: bool = False) -> Iterator[None]:
        """Translate pymongo and bson errors raised inside into s3idx errors."""
        try:
            yield
        except (PyMongoError, BSONError, OverflowError) as exc:
            # OverflowError: bson refuses ints beyond 64 bits.
            error = translate_error(
                exc, action=action, location=self.location, hosts=self._uri.hosts, query=query
            )
            raise self._scrubbed(error) from None

    def _scrubbed(self, error: S3idxError) -> S3idxError:
        """The error with every secret of the URI removed from its message and hint."""
        error.message = self._uri.scrub(error.message)
        error.hint = self._uri.scrub(error.hint) if error.hint else None
        error.args = (error.message,)
        return error

    # --- settings ----------------------------------------------------------------------------

    def settings(self) -> IndexSettings | None:
        with self._guard("reading the settings of"):
            doc = self._meta.find_one({ID: self._name})
        if doc is None:
            return None
        settings = self._settings_of(doc)
        self._key_field = settings.key_field
        return settings

    def _settings_of(self, doc: Mapping[str, Any]) -> IndexSettings:
        key_field, fields = doc.get("key_field"), doc.get("fields", [])
        pending = doc.get("pending", [])
        if (
            not isinstance(key_field, str)
            or not isinstance(fields, list)
            or not isinstance(pending, list)
            or not all(isinstance(p, Mapping) and "field" in p for p in pending)
        ):
            raise S3idxError(
                f"the settings of {self.location} in {META_COLLECTION!r} are damaged: {doc!r}"
            )
        waiting = tuple((str(p["field"]), int(p.get("entries", 0))) for p in pending)
        return IndexSettings(key_field, tuple(unique_fields(key_field, fields)), waiting)

    def configure(self, key_field: str, fields: Sequence[str]) -> IndexSettings:
        wanted = unique_fields(key_field, fields)
        self._check_fields(key_field, wanted)
        settings = self._record_fields(key_field, wanted)
        self._ensure_indexes(self._live, settings)
        return settings

    def _record_fields(self, key_field: str, fields: list[str]) -> IndexSettings:
        # One atomic update, so concurrent writers adding fields lose none. It matches on the
        # key field too: where another key field is recorded, the upsert's insert clashes with
        # that document's _id, and nothing changes.
        # The document as it was before tells which fields this call added, so that exactly
        # one of several concurrent writers marks a new field pending. A second try: another
        # process recording the same settings at the same moment may win the upsert's insert,
        # and then this update finds its document.
        for attempt in range(2):
            with self._guard("recording the settings of"):
                try:
                    before = self._meta.find_one_and_update(
                        {ID: self._name, "key_field": key_field},
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
        self._key_field = key_field
        if before is None:
            return IndexSettings(key_field, tuple(fields))
        settings = self._settings_of(before)
        new = [f for f in fields if f not in settings.fields]
        pending = settings.pending
        if new:
            with self._guard("recording the settings of"):
                held = int(self._live.count_documents({})) if self._live.find_one() else 0
                if held:
                    added = [{"field": f, "entries": held} for f in new]
                    self._meta.update_one(
                        {ID: self._name}, {"$push": {"pending": {"$each": added}}}
                    )
                    pending = (*pending, *((f, held) for f in new))
        return IndexSettings(key_field, (*settings.fields, *new), pending)

    def mark_complete(self, fields: Sequence[str]) -> IndexSettings:
        return self._update_pending(lambda old, _: [p for p in old if p.get("field") not in fields])

    def mark_pending(self, pending: Sequence[tuple[str, int]]) -> IndexSettings:
        def merged(old: list[dict[str, Any]], recorded: list[str]) -> list[dict[str, Any]]:
            counts = {str(p["field"]): int(p.get("entries", 0)) for p in old}
            for name, entries in pending:
                if name in recorded and entries > 0:
                    counts[name] = counts.get(name, 0) + entries
            return [{"field": f, "entries": n} for f, n in counts.items()]

        return self._update_pending(merged)

    def _update_pending(
        self, change: Callable[[list[dict[str, Any]], list[str]], list[dict[str, Any]]]
    ) -> IndexSettings:
        # Compare-and-set on the whole list rather than $pull/$push with conditions, which
        # FerretDB ignores; a writer changing the list meanwhile makes the update match
        # nothing, and the change is made again on the new list.
        for _ in range(PENDING_UPDATE_ATTEMPTS):
            with self._guard("recording the settings of"):
                doc = self._meta.find_one({ID: self._name})
                if doc is None:
                    raise IndexSettingsError(f"index {self.location} has no recorded key field")
                old = list(doc.get("pending", []))
                new = change(old, list(doc.get("fields", [])))
                if new == old:
                    return self._settings_of(doc)
                unchanged = doc.get("pending", {"$exists": False})
                done = self._meta.update_one(
                    {ID: self._name, "pending": unchanged}, {"$set": {"pending": new}}
                )
            if done.matched_count:
                return self._settings_of({**doc, "pending": new})
        raise TransientError(f"the settings of {self.location} kept changing; run it again")

    def _key_mismatch(self, recorded: str, wanted: str) -> IndexSettingsError:
        return IndexSettingsError(
            f"index {self.location} uses key field {recorded!r}, not {wanted!r}",
            hint=f"use --key {recorded}, or another index (location or collection) for these "
            "documents",
        )

    def _check_fields(self, key_field: str, fields: Sequence[str]) -> None:
        if key_field != ID and any(f == ID or f.startswith(ID + ".") for f in fields):
            raise UsageError(
                f"field {ID!r} cannot be a searchable field of a MongoDB index: it holds the "
                f"key there; index the documents with --key {ID}, or rename the field"
            )

    def _ensure_indexes(self, collection: Collection[Any], settings: IndexSettings) -> None:
        """Create the missing indexes: unique on the key field, one per searchable field.

        Creating an index that exists changes nothing, so a connection lost on the way (FerretDB
        closes one now and then when several processes create indexes at once) is tried again.
        """
        for attempt in range(1, INDEX_ATTEMPTS + 1):
            try:
                with self._guard("creating the indexes of"):
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

    def _require_key_field(self) -> str:
        if self._key_field is None and self.settings() is None:
            raise IndexSettingsError(
                f"index {self.location} has no recorded key field; configure it first"
            )
        assert self._key_field is not None
        return self._key_field

    def _known_key_field(self) -> str | None:
        if self._key_field is None:
            self.settings()
        return self._key_field

    def is_ferretdb(self) -> bool:
        """Whether the server is FerretDB (its buildInfo names its own version)."""
        if self._ferretdb is None:
            with self._guard("asking the server of"):
                try:
                    info = self._db.command("buildInfo")
                except OperationFailure:
                    info = {}  # a server that does not answer buildInfo is not FerretDB
                except NotImplementedError:
                    info = {}  # mongomock, in the tests
            self._ferretdb = "ferretdbVersion" in info
        return self._ferretdb

    def check_entry(self, key: str, entry: Entry) -> None:
        """Refuse an entry this server cannot store, before its object is written."""
        if not self.is_ferretdb():
            return
        reason = ferretdb_refusal(entry)
        if reason is not None:
            raise RecordError(
                f"{reason}, which FerretDB cannot store in the index",
                hint="stop indexing that field (--field), or use MongoDB or SQLite for the index",
            )

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

    def _check_entries(self, items: Sequence[tuple[str, Entry]]) -> None:
        if not self.is_ferretdb():
            return
        for key, entry in items:
            reason = ferretdb_refusal(entry)
            if reason is not None:
                raise S3idxError(
                    f"entry {key!r}: {reason}, which FerretDB cannot store in {self.location}",
                    hint="stop indexing that field, or use MongoDB or SQLite for the index",
                )

    # --- entries -----------------------------------------------------------------------------

    def upsert(self, entries: Sequence[Entry]) -> None:
        key_field = self._require_key_field()
        items = self._latest(entries, key_field)
        self._log_changes([key for key, _ in items])
        self._write(self._live, items, key_field)

    def _latest(self, entries: Sequence[Entry], key_field: str) -> list[tuple[str, Entry]]:
        latest: dict[str, Entry] = {}
        for entry in entries:
            latest[key_of(entry, key_field)] = entry  # a later entry for a key replaces it
        items = list(latest.items())
        self._check_entries(items)
        return items

    def _write(
        self, collection: Collection[Any], items: Sequence[tuple[str, Entry]], key_field: str
    ) -> None:
        for chunk in batched(items, BATCH_SIZE):
            documents = [(key, self._document(key, entry, key_field)) for key, entry in chunk]
            self._replace_all(collection, documents, "writing entries to")

    def _replace_all(
        self,
        collection: Collection[Any],
        documents: Sequence[tuple[str, dict[str, Any]]],
        action: str,
    ) -> None:
        """Insert or replace each document by ``_id`` (the key), at most ``BATCH_SIZE``."""
        requests = [ReplaceOne({ID: key}, document, upsert=True) for key, document in documents]
        for attempt in range(1, UPSERT_ATTEMPTS + 1):
            with self._guard(action):
                try:
                    # Unordered: the server may apply them in parallel; keys are distinct, so
                    # the order cannot matter.
                    collection.bulk_write(requests, ordered=False)
                    return
                except BulkWriteError as exc:
                    if attempt == UPSERT_ATTEMPTS or not _only_duplicate_keys(exc):
                        raise self._bulk_error(exc, documents) from None
                except KeyError:
                    # FerretDB v1 leaves "nModified" out of the reply when a write fails, and
                    # pymongo cannot read that reply: which write failed, and why, is unknown.
                    if attempt == UPSERT_ATTEMPTS:
                        self._replace_one_by_one(collection, documents)
                        return
            # Two writers upserting one key at once: one insert wins and the other fails with
            # a duplicate key (MongoDB retries that itself; FerretDB does not). The whole chunk
            # again is safe (replacing is idempotent), and the key now exists.
            time.sleep(UPSERT_PAUSE * attempt)

    def _replace_one_by_one(
        self, collection: Collection[Any], documents: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        """The slow way, one key at a time, so that an error names its key."""
        for key, document in documents:
            for attempt in range(1, UPSERT_ATTEMPTS + 1):
                with self._guard(f"writing the entry {key!r} to"):
                    try:
                        collection.replace_one({ID: key}, document, upsert=True)
                        break
                    except DuplicateKeyError:
                        if attempt == UPSERT_ATTEMPTS:
                            raise
                time.sleep(UPSERT_PAUSE * attempt)

    def _document(self, key: str, entry: Entry, key_field: str) -> dict[str, Any]:
        if key_field != ID and ID in entry and entry[ID] != key:
            raise S3idxError(
                f"index entry {key!r} has its own {ID!r} field, which MongoDB needs for the key"
            )
        return {ID: key, **entry}

    def _bulk_error(self, exc: BulkWriteError, chunk: Sequence[tuple[str, Any]]) -> S3idxError:
        """A short summary naming the first refused key; the server's reply can be huge."""
        write_errors = _write_errors(exc)
        first = write_errors[0].get("index") if write_errors else None
        where = f" (first refused key: {chunk[first][0]!r})" if isinstance(first, int) else ""
        return self._scrubbed(
            S3idxError(
                f"MongoDB refused {len(write_errors) or 'some'} of {len(chunk)} entries written "
                f"to {self.location}: {_bulk_detail(exc)}{where}"
            )
        )

    # --- compare-and-set on the recorded ETag ------------------------------------------------

    def etags(self, keys: Sequence[str]) -> dict[str, str]:
        return self._etags_in(self._live, keys)

    def _etags_in(self, collection: Collection[Any], keys: Iterable[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for batch in _key_batches(keys):
            with self._guard("reading entries from"):
                docs = list(collection.find({ID: {"$in": batch}}, {RESERVED_FIELD: 1}))
            for doc in docs:
                found[doc[ID]] = _bookkeeping_of(doc, self.location).etag
        return found

    def upsert_if(self, entries: Sequence[Entry], expected: Mapping[str, str | None]) -> set[str]:
        key_field = self._require_key_field()
        items = self._latest(entries, key_field)
        for key, entry in items:
            _etag_of(entry, key)  # refused before anything is written
        self._log_changes([key for key, _ in items])
        conflicts: set[str] = set()
        for chunk in batched(items, BATCH_SIZE):
            conflicts |= self._write_if(chunk, expected, key_field)
        return conflicts

    def _write_if(
        self,
        chunk: Sequence[tuple[str, Entry]],
        expected: Mapping[str, str | None],
        key_field: str,
    ) -> set[str]:
        """The keys of ``chunk`` not written: each is replaced only while its entry has the
        expected ETag, or inserted (where none is expected) only while the key has no entry."""
        ferretdb = self.is_ferretdb()
        requests: list[Any] = []
        one_by_one: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for key, entry in chunk:
            document = self._document(key, entry, key_field)
            want = expected.get(key)
            if want is None:
                # The unique _id refuses the insert if another writer created the key first.
                requests.append(InsertOne(document))
            elif ferretdb:
                # FerretDB v1 stalls (until the socket times out) when bulks replacing the
                # same existing documents run at once on several connections.
                one_by_one.append(({ID: key, ETAG: want}, document))
            else:
                requests.append(ReplaceOne({ID: key, ETAG: want}, document))
        certain = False
        with self._guard("writing entries to"):
            try:
                if requests:
                    result = self._live.bulk_write(requests, ordered=False)
                    done = result.inserted_count + result.matched_count
                    # FerretDB's counts are not trusted to say which writes matched.
                    certain = done == len(requests) and not ferretdb
            except BulkWriteError as exc:
                if not _only_duplicate_keys(exc):
                    raise self._bulk_error(exc, chunk) from None
            except KeyError:
                pass  # FerretDB v1's reply to a bulk with a failed write; see _replace_all
            for filter, document in one_by_one:
                self._live.replace_one(filter, document)
        if certain:
            return set()
        # Which writes took effect, from the entries themselves: an entry now carrying the new
        # ETag was written (or holds the same object anyway: same ETag, same bytes). An entry a
        # later writer already moved on counts as a conflict, which reconciling settles.
        # On FerretDB v1 this read is the only answer: its filtered replace is not atomic (two
        # writers replacing from one ETag at once may both match), so the last one to write
        # wins there, and the read tells each writer whether that was its entry.
        now = self._etags_in(self._live, [key for key, _ in chunk])
        return {key for key, entry in chunk if now.get(key) != _etag_of(entry, key)}

    def delete_if(self, expected: Mapping[str, str]) -> tuple[int, set[str]]:
        self._log_changes(expected)
        removed = 0
        conflicts: set[str] = set()
        for batch in batched(list(expected.items()), BATCH_SIZE):
            requests = [DeleteOne({ID: key, ETAG: etag}) for key, etag in batch]
            with self._guard("deleting entries from"):
                deleted = self._live.bulk_write(requests, ordered=False).deleted_count
            removed += deleted
            if deleted == len(batch) and not self.is_ferretdb():
                continue
            now = self._etags_in(self._live, [key for key, _ in batch])
            conflicts |= {key for key, etag in batch if key in now and now[key] != etag}
        return removed, conflicts

    # --- the delete journal ------------------------------------------------------------------

    def journal_deletes(self, items: Mapping[str, str]) -> None:
        self._log_changes(items)
        documents = [(key, {ID: key, "etag": etag}) for key, etag in items.items()]
        for chunk in batched(documents, BATCH_SIZE):
            self._replace_all(self._journal, chunk, "journaling deletes in")

    def journaled(self, keys: Sequence[str] | None = None) -> dict[str, str]:
        queries = [{}] if keys is None else [{ID: {"$in": b}} for b in _key_batches(keys)]
        found: dict[str, str] = {}
        for query in queries:
            with self._guard("reading the delete journal of"):
                cursor = self._journal.find(query)
            for doc in self._stream(cursor, "reading the delete journal of"):
                found[str(doc[ID])] = str(doc["etag"])
        return found

    def clear_journal(self, items: Mapping[str, str]) -> None:
        for batch in batched(list(items.items()), BATCH_SIZE):
            requests = [DeleteOne({ID: key, "etag": etag}) for key, etag in batch]
            with self._guard("clearing the delete journal of"):
                self._journal.bulk_write(requests, ordered=False)

    # --- the change log of a running rebuild -------------------------------------------------

    def _log_changes(self, keys: Iterable[str]) -> None:
        """While a rebuild runs, record ``keys`` as changed; called before writing them.

        The flag is read on every call (one small read): a rebuild started by another process
        must see this write, in its staging index or through the log.
        """
        with self._guard("reading the rebuild flag of"):
            if self._meta.find_one({ID: self._name + CHANGES_SUFFIX}, {ID: 1}) is None:
                return
        for batch in _key_batches(keys):
            with self._guard("logging changes to"):
                self._changes.insert_many([{"key": key} for key in batch], ordered=False)

    def delete(self, keys: Sequence[str]) -> int:
        self._log_changes(keys)
        deleted = 0
        for batch in _key_batches(keys):
            with self._guard("deleting entries from"):
                deleted += self._live.delete_many({ID: {"$in": batch}}).deleted_count
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
        query = check_filter(filter)
        self._check_query(query)
        args = check_find_arguments(sort=sort, skip=skip, limit=limit, fields=fields)
        spec = projection(args.fields, self._known_key_field())
        with self._guard("querying", query=True):
            cursor = self._live.find(
                query, spec, skip=args.skip, limit=args.limit, sort=args.sort or None
            )
        return self._stream(cursor, "querying", query=True)

    def _stream(self, cursor: Any, action: str, *, query: bool = False) -> Iterator[Any]:
        """The cursor's documents; the server is asked lazily, so errors are translated here."""
        try:
            with self._guard(action, query=query):
                for doc in cursor:
                    yield plain(doc)
        finally:
            cursor.close()  # a caller that stops early must not leave a server cursor open

    def count(self, filter: Mapping[str, Any] | None = None) -> int:
        query = check_filter(filter)
        self._check_query(query)
        with self._guard("counting", query=True):
            return int(self._live.count_documents(query))

    def bookkeeping(self, keys: Sequence[str]) -> dict[str, tuple[Entry, Bookkeeping]]:
        key_field = self._known_key_field()
        found: dict[str, tuple[Entry, Bookkeeping]] = {}
        for batch in _key_batches(keys):
            with self._guard("reading entries from"):
                docs = list(self._live.find({ID: {"$in": batch}}))
            for doc in docs:
                key = doc[ID]
                bookkeeping = _bookkeeping_of(doc, self.location)
                entry = {
                    k: v
                    for k, v in doc.items()
                    if k != RESERVED_FIELD and (k != ID or key_field == ID)
                }
                found[key] = (plain(entry), bookkeeping)
        return found

    def iter_bookkeeping(self) -> Iterator[tuple[str, Bookkeeping]]:
        # _id is the key, and MongoDB compares strings by their UTF-8 bytes.
        with self._guard("listing entries of"):
            cursor = self._live.find({}, {RESERVED_FIELD: 1}, sort=[(ID, ASCENDING)])
        for doc in self._stream(cursor, "listing entries of"):
            yield doc[ID], _bookkeeping_of(doc, self.location)

    # --- rebuild -----------------------------------------------------------------------------

    def start_rebuild(
        self, key_field: str, fields: Sequence[str] = (), *, resume: bool = False
    ) -> MongoRebuild:
        # MongoDB indexes the fields when the rebuild commits; ``fields`` needs no work now.
        del fields
        name = self._name + REBUILD_SUFFIX
        with self._guard("starting a rebuild of"):
            state = self._meta.find_one({ID: name}) if resume else None
            # Unfiltered: mongomock's name filter also lists dropped collections; one listing
            # per rebuild costs nothing.
            exists = name in self._db.list_collection_names()
            fresh = state is None or state.get("key_field") != key_field or not exists
            if fresh:
                state = self._fresh_rebuild(name, key_field)
            assert state is not None
            self._raise_flag(str(state["run"]), fresh=fresh)
        return MongoRebuild(self, self._db[name], name, key_field, str(state["run"]))

    def _fresh_rebuild(self, name: str, key_field: str) -> dict[str, Any]:
        self._db.drop_collection(name)
        # Created now, so that its absence later means "gone", not "nothing written yet".
        self._db.create_collection(name)
        state = {
            ID: name,
            "key_field": key_field,
            "run": uuid.uuid4().hex,
            "checkpoint": None,
            "started": utc_now(),
        }
        self._meta.replace_one({ID: name}, state, upsert=True)
        return state

    def _raise_flag(self, run: str, *, fresh: bool) -> None:
        """Set the "rebuild running" flag; a fresh rebuild first empties the change log.

        In that order: a write logged after the log is emptied is kept. A resumed rebuild keeps
        the log of its first start (the changes since then are what it must replay).
        """
        flag = self._name + CHANGES_SUFFIX
        if fresh:
            self._changes.drop()
            self._meta.replace_one(
                {ID: flag}, {ID: flag, "run": run, "started": utc_now()}, upsert=True
            )
        elif self._meta.find_one({ID: flag}) is None:
            self._meta.update_one(
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
        index: MongoIndex,
        collection: Collection[Any],
        state_id: str,
        key_field: str,
        run: str,
    ) -> None:
        self._index = index
        self._collection = collection
        self._state_id = state_id
        self._key_field = key_field
        self._run = run
        self._finished: str | None = None

    def _mine(self) -> dict[str, Any]:
        return {ID: self._state_id, "run": self._run}

    def _check_open(self) -> None:
        if self._finished is not None:
            raise S3idxError(f"this rebuild of {self._index.location} was {self._finished}")

    def upsert(self, entries: Sequence[Entry]) -> None:
        self._check_open()
        items = self._index._latest(entries, self._key_field)
        self._index._write(self._collection, items, self._key_field)

    def delete(self, keys: Sequence[str]) -> None:
        self._check_open()
        for batch in _key_batches(keys):
            with self._index._guard("deleting entries from the rebuild of"):
                self._collection.delete_many({ID: {"$in": batch}})

    def changed_keys(self) -> Iterator[str]:
        """The distinct keys the live index's writers logged since this rebuild started."""
        with self._index._guard("reading the change log of"):
            cursor = self._index._changes.find({}, {"key": 1})
        seen: set[str] = set()
        for doc in self._index._stream(cursor, "reading the change log of"):
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
            with self._index._guard("reading the rebuild of"):
                found.update(d[ID] for d in self._collection.find({ID: {"$in": batch}}, [ID]))
        return found

    def save_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        self._check_open()
        with self._index._guard("saving the rebuild checkpoint of"):
            result = self._index._meta.update_one(
                self._mine(), {"$set": {"checkpoint": dict(checkpoint)}}
            )
        if result.matched_count == 0:
            raise self._superseded()

    def checkpoint(self) -> dict[str, Any] | None:
        self._check_open()
        with self._index._guard("reading the rebuild checkpoint of"):
            state = self._index._meta.find_one(self._mine())
        if state is None:
            raise self._superseded()
        checkpoint = state.get("checkpoint")
        return plain(checkpoint) if checkpoint is not None else None

    def commit(self, settings: IndexSettings) -> None:
        self._check_open()
        if settings.key_field != self._key_field:
            raise IndexSettingsError(
                f"rebuild of {self._index.location} was filled by key field "
                f"{self._key_field!r}, not {settings.key_field!r}"
            )
        fields = unique_fields(settings.key_field, settings.fields)
        self._index._check_fields(settings.key_field, fields)
        final = IndexSettings(settings.key_field, tuple(fields), settings.pending)
        with self._index._guard("committing the rebuild of"):
            if self._index._meta.find_one(self._mine()) is None:
                raise self._superseded()
            # Indexes built once over the full collection are cheaper than maintained per write.
            self._index._ensure_indexes(self._collection, final)
            self._swap()
            self._index._meta.replace_one(
                {ID: self._index._name},
                {
                    "key_field": final.key_field,
                    "fields": fields,
                    "format": FORMAT,
                    "pending": [
                        {"field": f, "entries": n} for f, n in settings.pending if f in fields
                    ],
                },
                upsert=True,
            )
            self._index._meta.delete_one(self._mine())
        self._index._key_field = final.key_field
        self._finished = "committed"

    def _swap(self) -> None:
        """Rename the rebuild over the live collection.

        On MongoDB one atomic step: readers see the old collection or the new one. FerretDB v1
        cannot drop the target in a rename, so there it is drop, then rename: in between,
        readers find an empty index, and a crash there leaves the rebuild to finish with
        ``rebuild-index --resume``.
        """
        target = self._index._name
        try:
            self._collection.rename(target, dropTarget=True)
            return
        except OperationFailure as exc:
            if exc.code != NOT_IMPLEMENTED:
                raise
        for _ in range(SWAP_ATTEMPTS):
            self._index._db.drop_collection(target)
            try:
                self._collection.rename(target)
                return
            except OperationFailure as exc:
                if exc.code != NAMESPACE_EXISTS:  # a writer re-created it; drop it again
                    raise
        raise S3idxError(
            f"could not swap the rebuild in: writers keep re-creating {self._index.location}",
            hint="stop the other writers, then run rebuild-index --resume",
        )

    def abort(self) -> None:
        if self._finished == "committed":
            # Committed but not finished: nothing will replay the log now, so writers stop
            # paying for it (the next rebuild starts a log of its own anyway).
            self._lower_flag()
        if self._finished is not None:
            return  # aborting after the end changes nothing, so cleanup code can always call it
        with self._index._guard("aborting the rebuild of"):
            if self._index._meta.find_one_and_delete(self._mine()) is not None:
                self._collection.drop()
        self._lower_flag()
        self._finished = "aborted"

    def _lower_flag(self) -> None:
        """Clear the flag and the log, unless a newer rebuild has raised the flag since."""
        flag = {ID: self._index._name + CHANGES_SUFFIX, "run": self._run}
        with self._index._guard("ending the change log of"):
            if self._index._meta.delete_one(flag).deleted_count:
                self._index._changes.drop()

    def _superseded(self) -> S3idxError:
        return S3idxError(
            f"the rebuild of {self._index.location} was restarted or finished by another process"
        )


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


def _dns_outage(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, ConfigurationError) and (
        "timed out" in text or "resolution lifetime expired" in text
    )


def _first_path(info: Mapping[str, Any]) -> str | None:
    """The field of a single-field index (any direction), else None."""
    key = list(info.get("key", ()))
    return str(key[0][0]) if len(key) == 1 else None
