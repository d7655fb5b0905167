"""s3idx as a maggma ``Store``: builders read from and write to an s3idx store and index.

``S3idxStore`` is a presentation-level adapter over ``Engine``, as ``cli.py`` is: it turns
maggma's calls (``update``, ``query``, ``newer_in``, ...) into engine calls and the engine's
values into what maggma's stores return. It needs ``pip install 's3idx[maggma]'``; nothing else
in s3idx imports maggma or monty.

What differs from maggma's own stores on purpose (README, "Use from maggma"):

- documents keep their types exactly (JSON with tagged datetimes), datetimes come back naive in
  UTC at millisecond precision, as pymongo gives them, so they compare with other stores';
- criteria, sorts and index-only properties may name only indexed fields (the key, the
  searchable fields, ``last_updated``); anything else is refused with ``FieldNotIndexedError``
  rather than matching nothing;
- ``remove_docs`` removes the objects with their entries (the index mirrors the bucket);
- a document's ``last_updated`` is its entry's; a document without one gets the time it was
  stored.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from maggma.core import DateTimeFormat, Sort, Store, StoreError
from monty.json import jsanitize

from s3idx import codec
from s3idx.config import (
    redact_location,
    remember_environment_secrets,
    remember_location_secrets,
    resolve_settings,
)
from s3idx.engine.arguments import check_collection, shown_value, single_kind
from s3idx.engine.core import Engine
from s3idx.engine.documents import check_field_paths
from s3idx.engine.results import (
    DeleteResult,
    Events,
    PutResult,
    RebuildResult,
    ReindexResult,
    Reject,
    SyncResult,
)
from s3idx.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    DamagedObjectError,
    S3idxError,
    UsageError,
    shorten_key,
)
from s3idx.query.indexed import check_query_paths
from s3idx.query.paths import project
from s3idx.query.sort import compare_keys
from s3idx.text import plural

__all__ = ["S3idxStore", "S3idxStoreError"]

_SHOWN_REJECTS = 5


class S3idxStoreError(S3idxError):
    """``update`` did not store every document it was given; ``rejects`` says why."""

    def __init__(self, message: str, rejects: Sequence[Reject], result: PutResult) -> None:
        super().__init__(message, hint="fix these documents and update them again")
        self.rejects = list(rejects)
        self.partial_result = result


class _Rejects(Events):
    def __init__(self) -> None:
        self.rejects: list[Reject] = []
        self._lock = threading.Lock()

    def rejected(self, reject: Reject) -> None:
        with self._lock:
            self.rejects.append(reject)


class S3idxStore(Store):
    """A maggma ``Store`` whose documents are s3idx objects and whose index is s3idx's.

    ``store`` and ``index`` are the command line's locations (``s3://BUCKET/PREFIX`` or a
    directory; ``mongodb://HOST/DB`` or a SQLite path). ``key``, ``searchable_fields``,
    ``last_updated_field``, ``compress``, ``endpoint_url`` and ``s3_workers`` are maggma's names;
    ``collection``, ``region``, ``aws_profile``, ``transport``, ``create_bucket``, ``timeout``,
    ``batch_size``, ``profile`` and ``config_file`` are s3idx's settings (config file and
    ``S3IDX_*`` environment apply underneath, as for the CLI, read at ``connect``).
    """

    def __init__(
        self,
        store: str,
        index: str,
        key: str = "task_id",
        searchable_fields: Sequence[str] | None = None,
        last_updated_field: str = "last_updated",
        last_updated_type: DateTimeFormat | str = "datetime",
        compress: bool | str | None = None,
        endpoint_url: str | None = None,
        s3_workers: int | None = None,
        collection: str | None = None,
        region: str | None = None,
        aws_profile: str | None = None,
        transport: str | None = None,
        create_bucket: bool | None = None,
        timeout: float | None = None,
        batch_size: int | None = None,
        profile: str | None = None,
        config_file: str | None = None,
        validator: Any = None,
    ) -> None:
        if DateTimeFormat(last_updated_type) != DateTimeFormat.DateTime:
            raise UsageError(
                f"last_updated_type {DateTimeFormat(last_updated_type).value!r} is not "
                "supported: S3idxStore keeps last_updated as a datetime",
                hint="leave last_updated_type at its default, 'datetime'",
            )
        check_collection("searchable_fields", searchable_fields or (), "field paths")
        self.store = store
        # Not ``self.index``: maggma's S3Store.newer_in takes any store with an ``index``
        # attribute for one of its own and compares against that attribute as a Store. monty's
        # as_dict (and so pickling) finds the argument under ``_index``, keeping the key "index".
        self._index = index
        self.searchable_fields = list(searchable_fields or [])
        self.compress = compress
        self.endpoint_url = endpoint_url
        self.s3_workers = s3_workers
        self.collection = collection
        self.region = region
        self.aws_profile = aws_profile
        self.transport = transport
        self.create_bucket = create_bucket
        self.timeout = timeout
        self.batch_size = batch_size
        self.profile = profile
        self.config_file = config_file
        self._engine: Engine | None = None
        super().__init__(
            key=key,
            last_updated_field=last_updated_field,
            last_updated_type=DateTimeFormat(last_updated_type),
            validator=validator,
        )

    # --- identity ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.store

    @property
    def index_location(self) -> str:
        """The index's location, as given (``index=``)."""
        return self._index

    def __repr__(self) -> str:
        store, index = redact_location(self.store), redact_location(self._index)
        return f"S3idxStore(store={store!r}, index={index!r}, key={self.key!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, S3idxStore):
            return False
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def _identity(self) -> tuple[Any, ...]:
        return (self.store, self._index, self.collection, self.key, self.last_updated_field)

    @property
    def _collection(self) -> Any:
        raise NotImplementedError("S3idxStore has no pymongo collection: use its query methods")

    # --- connection ----------------------------------------------------------------------------

    def connect(self, force_reset: bool = False) -> None:
        if self._engine is not None and not force_reset:
            return
        if self._engine is not None:
            self.close()
        settings = resolve_settings(
            self._settings(), profile=self.profile, config_file=self.config_file
        )
        # As the CLI does: every message s3idx makes from now on hides these.
        remember_environment_secrets()
        remember_location_secrets(settings.index, settings.store, settings.endpoint_url)
        engine = Engine.from_settings(settings)
        try:
            # The key and last_updated fields are indexed, so newer_in and last_updated are
            # answered from the index alone; recording them now makes a new index an empty one.
            engine.index.configure(self.key, self._fields(engine))
            engine.bind_store()
        except BaseException:
            engine.close()
            raise
        self._engine = engine

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def _settings(self) -> dict[str, Any]:
        compress = self.compress
        if isinstance(compress, bool):
            compress = "zlib" if compress else "none"
        return {
            "store": self.store,
            "index": self._index,
            "key": self.key,
            "fields": tuple(self._own_fields()),
            "compress": compress,
            "workers": self.s3_workers,
            "collection": self.collection,
            "region": self.region,
            "aws_profile": self.aws_profile,
            "endpoint_url": self.endpoint_url,
            "transport": self.transport,
            "create_bucket": self.create_bucket,
            "timeout": self.timeout,
            "batch_size": self.batch_size,
        }

    def _own_fields(self) -> list[str]:
        # maggma users often list last_updated as searchable: s3idx's entries always hold it.
        fields = [f for f in self.searchable_fields if f != codec.LAST_UPDATED]
        if self.last_updated_field != codec.LAST_UPDATED:
            fields.append(self.last_updated_field)
        return fields

    def _fields(self, engine: Engine) -> tuple[str, ...]:
        recorded = engine.index.settings()
        known = recorded.fields if recorded is not None else ()
        return check_field_paths([*known, *self._own_fields()], self.key)

    @property
    def engine(self) -> Engine:
        """The engine under this store (connected): every s3idx operation is there."""
        if self._engine is None:
            raise UsageError(
                f"{self!r} is not connected",
                hint="call connect() first, or use it as a context manager: `with store: ...`",
            )
        return self._engine

    # --- writing -------------------------------------------------------------------------------

    def update(
        self,
        docs: Iterable[Mapping[str, Any]] | Mapping[str, Any],
        key: list[str] | str | None = None,
    ) -> PutResult:
        """Store documents under their key (a new version replaces the old one).

        ``docs`` is one document (a mapping) or any iterable of them (a list, a tuple, a
        generator); an item that is not a mapping is a ``UsageError`` naming its position, and
        nothing is stored. As maggma's MongoStore does, documents go through monty's
        ``jsanitize`` (MSONable objects become their dicts; datetimes stay datetimes). ``key``
        may only name the store's key: an s3idx document is unique by its key, the name of its
        object. Raises ``S3idxStoreError`` (after storing the others) when some could not be
        stored.
        """
        self._check_key_argument(key)
        documents = _documents_of(docs)
        # All checked before any is stored, as maggma's MongoStore builds every write before
        # sending one: a strict validator's failure then writes nothing, and a document a
        # lenient one finds invalid is logged and left out, not stored.
        clean = [doc for doc in map(self._sanitized, documents) if doc is not None]
        events = _Rejects()
        result = self.engine.put_documents(
            clean,
            events=events,
            last_updated_from_document=self.last_updated_field == codec.LAST_UPDATED,
        )
        if events.rejects or result.not_indexed:
            raise S3idxStoreError(_update_failure(events.rejects, result), events.rejects, result)
        return result

    def _check_key_argument(self, key: list[str] | str | None) -> None:
        names = [key] if isinstance(key, str) else list(key or [])
        if any(name != self.key for name in names):
            raise UsageError(
                f"update(key={key!r}): an S3idxStore's documents are unique by its key "
                f"{self.key!r} alone (the name of each document's object)",
                hint="leave key out; to query other fields, give them as searchable_fields",
            )

    def _sanitized(self, doc: Mapping[str, Any]) -> dict[str, Any] | None:
        """The document as it is stored; None when the validator, not strict, finds it
        invalid (maggma's stores log it and leave it out)."""
        clean: dict[str, Any] = jsanitize(dict(doc), allow_bson=True, recursive_msonable=True)
        if self.key != "_id":
            # MongoDB's own id (a builder copying from a MongoStore may leave it): the key is
            # the document's identity here, and an ObjectId is not JSON.
            clean.pop("_id", None)
        if self.validator is not None and not self.validator.is_valid(clean):
            errors = self.validator.validation_errors(clean)
            if getattr(self.validator, "strict", False):
                raise ValueError(errors)
            self.logger.error(errors)
            return None
        return clean

    def remove_docs(self, criteria: dict[str, Any], remove_s3_object: bool = True) -> DeleteResult:
        """Remove the matching documents: their objects and their entries."""
        if not isinstance(criteria, Mapping):
            # None is no filter: maggma's stores refuse it too, rather than remove everything.
            raise UsageError(
                f"remove_docs: criteria must be a filter (a dict), not {criteria!r}",
                hint="to remove every document, give {}",
            )
        if not remove_s3_object:
            raise UsageError(
                "remove_docs(remove_s3_object=False) is not supported: s3idx's index mirrors "
                "the bucket, and sync would index the objects left behind again",
                hint="leave remove_s3_object out: the objects are removed with their entries",
            )
        if not self.count(criteria):
            return DeleteResult()  # a store never written to need not exist yet
        return self.engine.delete_matching(criteria)

    def ensure_index(self, key: str, unique: bool = False) -> bool:
        """True when ``key`` is indexed for every document (a new, empty store indexes it now).

        ``unique`` holds for the key field only. A field new to a store holding documents is not
        indexed here (that reads every object): run ``s3idx reindex --field`` for it.
        """
        if unique:
            return key == self.key
        engine = self.engine
        settings = engine.index.settings()
        try:
            check_query_paths(settings, fields=[key])
            return True
        except UsageError:
            pass
        if engine.index.count({}):
            return False
        try:
            fields = check_field_paths([*(settings.fields if settings else ()), key], self.key)
        except UsageError:
            return False
        engine.index.configure(self.key, fields)
        return True

    # --- reading -------------------------------------------------------------------------------

    def count(self, criteria: dict[str, Any] | None = None) -> int:
        return self.engine.count(criteria or {})

    def query(
        self,
        criteria: dict[str, Any] | None = None,
        properties: dict[str, Any] | list[str] | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int | None = 0,
        limit: int | None = 0,
    ) -> Generator[dict[str, Any], None, None]:
        """Matching documents, or only ``properties`` of them.

        Answered from the index alone when every property is indexed; otherwise the documents
        are fetched (in parallel, in order) and cut down to the properties. ``None`` for
        ``skip`` or ``limit`` is 0 (none), as maggma's own stores take it.
        """
        engine = self.engine
        skip, limit = skip or 0, limit or 0
        wanted, excluded = _properties(properties)
        order = _sort(sort)
        if wanted is not None and self._indexed(wanted):
            entries = engine.query(criteria, fields=wanted, sort=order, skip=skip, limit=limit)
            for entry in entries:
                yield _naive(project(entry, wanted))
            return
        entries = engine.query(
            criteria, fields=[self.key, codec.LAST_UPDATED], sort=order, skip=skip, limit=limit
        )
        for document in self._documents(entries):
            if wanted is not None:
                document = project(document, wanted)
            for name in excluded:
                document.pop(name, None)
            yield _naive(document)

    def _indexed(self, paths: Sequence[str]) -> bool:
        try:
            check_query_paths(self.engine.index.settings(), fields=paths)
        except UsageError:
            return False
        return True

    def _documents(self, entries: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The documents of ``entries``, with the entry's last_updated, as maggma's S3Store."""
        first = next(entries, None)
        if first is None:
            return  # nothing to fetch: a store never written to need not exist yet
        stamps: dict[str, Any] = {}

        def keys() -> Iterator[str]:
            for entry in _chain(first, entries):
                key = entry[self.key]
                stamps[key] = entry.get(codec.LAST_UPDATED)
                yield key

        for key, fetched in self.engine.fetch(keys(), parse=True):
            stamp = stamps.pop(key, None)
            if fetched is None:
                # Deleted since the index was read: maggma's S3Store logs and goes on too.
                self.logger.error(f"{shorten_key(key)}: listed by the index but not in the store")
                continue
            if fetched.error is not None:
                failure: type[S3idxError] = S3idxError
                if fetched.damaged:
                    failure = DamagedObjectError
                elif fetched.denied:  # denied these credentials: exit 6, as get's
                    failure = AccessDeniedError
                elif fetched.unavailable:  # the store kept failing it: exit 5, as get's
                    failure = BackendUnavailableError
                raise failure(f"cannot read {shorten_key(key)}: {fetched.error}")
            document: dict[str, Any] = codec.untag(fetched.parse())
            if self.last_updated_field == codec.LAST_UPDATED and stamp is not None:
                document[codec.LAST_UPDATED] = stamp
            yield document

    def query_one(
        self,
        criteria: dict[str, Any] | None = None,
        properties: dict[str, Any] | list[str] | None = None,
        sort: dict[str, Sort | int] | None = None,
    ) -> dict[str, Any] | None:
        found = self.query(criteria=criteria, properties=properties, sort=sort, limit=1)
        try:
            return next(found, None)
        finally:
            found.close()

    def distinct(
        self, field: str, criteria: dict[str, Any] | None = None, all_exist: bool = False
    ) -> list[Any]:
        """The distinct values of ``field``, an array's elements counted one by one (MongoDB's
        ``distinct``); from the index when ``field`` is indexed."""
        seen: dict[bytes, Any] = {}
        for doc in self.query(criteria=criteria, properties=[field]):
            value = _get(doc, field)
            if value is _MISSING:
                continue
            for item in value if isinstance(value, list) else [value]:
                seen.setdefault(_equality_key(item), item)
        return list(seen.values())

    def groupby(
        self,
        keys: list[str] | str,
        criteria: dict[str, Any] | None = None,
        properties: dict[str, Any] | list[str] | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int | None = 0,
        limit: int | None = 0,
    ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Documents grouped by the values of ``keys``, as maggma's MemoryStore groups them:
        ``(values of keys, documents)`` in the order of those values; documents lacking a key
        are left out. ``sort``, ``skip`` and ``limit`` apply to the documents read."""
        names = [keys] if isinstance(keys, str) else list(keys)
        wanted, _ = _properties(properties)
        shown = None if wanted is None else list(dict.fromkeys([*names, *wanted]))
        groups: dict[bytes, tuple[tuple[Any, ...], list[dict[str, Any]]]] = {}
        documents = self.query(
            criteria=criteria, properties=shown, sort=sort, skip=skip, limit=limit
        )
        for doc in documents:
            values = tuple(_get(doc, name) for name in names)
            if any(value is _MISSING for value in values):
                continue
            found = _equality_key(list(values))
            groups.setdefault(found, (values, []))[1].append(doc)
        ordered = sorted(groups.values(), key=functools.cmp_to_key(_compare_groups))
        for values, members in ordered:
            group: dict[str, Any] = {}
            for name, value in zip(names, values, strict=True):
                _set(group, name, value)
            yield group, members

    @property
    def last_updated(self) -> datetime:
        """The latest last_updated of the store's documents (``datetime.min`` when empty).

        As maggma's stores: when the latest document lacks ``last_updated_field`` (none has
        it), maggma's ``StoreError``, not ``datetime.min``, which would say the store is empty.
        """
        latest = self.query_one(
            properties=[self.last_updated_field], sort={self.last_updated_field: -1}
        )
        value = None if latest is None else _get(latest, self.last_updated_field)
        if value is _MISSING:
            # maggma's own class, which builders catch; its __init__ has no annotations.
            raise StoreError(  # type: ignore[no-untyped-call]
                f"No field '{self.last_updated_field}' in store document. Please ensure "
                "Store.last_updated_field is a datetime field in your store that represents "
                "the time of last update to each document."
            )
        return datetime.min if value is None else value

    # --- rebuild and sync ----------------------------------------------------------------------

    def rebuild_index_from_s3_data(self, rewrite: bool = False) -> RebuildResult:
        """``s3idx rebuild-index``: the index rebuilt exactly from the objects' metadata alone
        (maggma's downloads every document); ``rewrite`` converts maggma's objects."""
        result = self.engine.rebuild_index(rewrite=rewrite)
        engine = self.engine
        engine.index.configure(self.key, self._fields(engine))
        return result

    def rebuild_metadata_from_index(
        self, index_query: dict[str, Any] | None = None
    ) -> tuple[SyncResult, ReindexResult | None]:
        """``s3idx sync``, then ``s3idx reindex`` when some field is pending.

        s3idx writes each object's metadata with the object, so there is nothing to copy from
        the index to the bucket; what can lag is the index (sync makes it agree with the
        bucket) and a field added later (reindex writes it into every object's metadata).
        """
        if index_query:
            raise UsageError(
                "rebuild_metadata_from_index(index_query=...) is not supported: sync and "
                "reindex work on the whole store",
                hint="call it without index_query",
            )
        engine = self.engine
        synced = engine.sync()
        settings = engine.index.settings()
        reindexed = engine.reindex() if settings is not None and settings.pending else None
        return synced, reindexed


# --- values ------------------------------------------------------------------------------------


class _Missing:
    pass


_MISSING: Any = _Missing()


def _properties(
    properties: Mapping[str, Any] | Sequence[str] | None,
) -> tuple[list[str] | None, list[str]]:
    """(paths to keep, or None for all; top-level names to drop), from maggma's properties."""
    check_collection("properties", properties, "field paths")
    if properties is None:
        return None, []
    if isinstance(properties, Mapping):
        kept = [name for name, on in properties.items() if on and name != "_id"]
        dropped = [name for name, on in properties.items() if not on and name != "_id"]
        if kept and dropped:
            # MongoDB (and maggma's stores) refuse it too: only _id may be left out beside
            # fields included.
            raise UsageError(
                f"properties cannot both include fields ({', '.join(kept)}) and exclude fields "
                f"({', '.join(dropped)}): a projection does one or the other ({properties!r:.200})",
                hint="list only the fields to keep, or only the fields to leave out "
                '(besides "_id": 0)',
            )
        if kept:
            return kept, []
        return None, dropped
    return [name for name in properties if name != "_id"], []


def _documents_of(docs: Any) -> list[Mapping[str, Any]]:
    """``update``'s documents as a list, each checked to be a mapping: never one taken apart
    (``dict`` of a tuple of documents makes pairs of their field names)."""
    if isinstance(docs, Mapping):
        return [docs]
    kind = single_kind(docs)
    if kind is None and not isinstance(docs, Iterable):
        kind = shown_value(docs)
    if kind is not None:
        raise UsageError(
            f"update: documents must be a document (a dict) or an iterable of them, not {kind}",
            hint="give a dict, or a list of dicts",
        )
    documents = list(docs)
    for position, doc in enumerate(documents):
        if not isinstance(doc, Mapping):
            raise UsageError(
                f"update: document {position} must be a mapping (a dict), not "
                f"{shown_value(doc)}; nothing was stored",
                hint="give a dict, or a list of dicts",
            )
    return documents


def _sort(sort: Mapping[str, Sort | int] | None) -> list[tuple[str, int]] | None:
    if not sort:
        return None
    return [(name, Sort(way).value) for name, way in sort.items()]


def _naive(value: Any) -> Any:
    """Datetimes as pymongo returns them: naive, in UTC."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, dict):
        return {k: _naive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_naive(v) for v in value]
    return value


def _aware(value: Any) -> Any:
    """Values as the engine compares them: naive datetimes taken as UTC."""
    if isinstance(value, datetime):
        return codec.normalize_datetime(value)
    if isinstance(value, dict):
        return {k: _aware(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_aware(v) for v in value]
    return value


def _equality_key(value: Any) -> bytes:
    """Equal for values MongoDB takes as equal (``distinct``, ``$group``): numbers by their
    value whatever their type (1 and 1.0, at any depth), but a boolean never equal to a number
    (True is not 1), and naive datetimes as UTC."""
    return codec.canonical(_numbers_by_value(_aware(value)))


# Floats from here on cannot equal a 64-bit integer: kept floats (orjson writes no larger int).
_INT_BOUND = 2.0**63


def _numbers_by_value(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and -_INT_BOUND <= value < _INT_BOUND:
        return int(value)
    if isinstance(value, dict):
        return {k: _numbers_by_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_by_value(v) for v in value]
    return value


def _get(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _compare_groups(
    a: tuple[tuple[Any, ...], list[dict[str, Any]]],
    b: tuple[tuple[Any, ...], list[dict[str, Any]]],
) -> int:
    for left, right in zip(a[0], b[0], strict=True):
        order = compare_keys(_aware(left), _aware(right))
        if order:
            return order
    return 0


def _chain(first: dict[str, Any], rest: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


def _update_failure(rejects: Sequence[Reject], result: PutResult) -> str:
    parts = []
    if rejects:
        shown = "; ".join(f"{r.location}: {r.reason}" for r in rejects[:_SHOWN_REJECTS])
        more = len(rejects) - _SHOWN_REJECTS
        parts.append(
            f"{plural(len(rejects), 'document')} not stored: {shown}"
            + (f" (and {more} more)" if more > 0 else "")
        )
    if result.not_indexed:
        text = f"{plural(result.not_indexed, 'document')} stored but not indexed"
        if result.contended_keys:
            shown = ", ".join(shorten_key(k) for k in result.contended_keys[:_SHOWN_REJECTS])
            more = result.contended - _SHOWN_REJECTS
            text += f", other writers kept changing the entries of {shown}" + (
                f" (and {more} more)" if more > 0 else ""
            )
        parts.append(text + " (sync indexes them)")
    return "; ".join(parts)
