"""The engine: one object that every command and every Python user goes through."""

from __future__ import annotations

import contextlib
import importlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from s3idx import codec
from s3idx.backends import open_index, store_identity, store_opener
from s3idx.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_HEAD_WORKERS,
    DEFAULT_KEY_FIELD,
    DEFAULT_PUT_STALE_SECONDS,
    DEFAULT_WORKERS,
    MAX_BATCH_SIZE,
    MAX_PROCESSES,
    MAX_WORKERS,
    Settings,
    redact_location,
    resolve_settings,
)
from s3idx.engine.arguments import (
    check_backend,
    check_collection,
    check_documents,
    check_shard,
)
from s3idx.engine.events import Events
from s3idx.engine.retry import RetryingStore
from s3idx.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    DamagedIndexError,
    DamagedStoreError,
    IndexSettingsError,
    NotFoundError,
    ObjectNotFoundError,
    S3idxError,
    UsageError,
    index_not_found,
)
from s3idx.index.base import Entry, Index, IndexSettings, SortSpec
from s3idx.limits import INT64_MAX, SPOOL_THRESHOLD, check_count
from s3idx.query.filter import check_filter_object
from s3idx.query.indexed import check_query_paths
from s3idx.sharding import Shard
from s3idx.store.base import ObjectStore

if TYPE_CHECKING:
    from s3idx.engine import delete as delete_ops
    from s3idx.engine.documents import check_field_paths, check_new_fields
    from s3idx.engine.inputs import (
        InputSource,
        ReadProgress,
        Record,
        check_input_file,
        file_source,
        read_records,
        stream_source,
        total_size,
    )
    from s3idx.engine.manifest_batches import ManifestBatches
    from s3idx.engine.processes import run_put_processes
    from s3idx.engine.put import PutOptions, run_put
    from s3idx.engine.read import FetchedDocument, fetch_document, fetch_many
    from s3idx.engine.rebuild import run_rebuild
    from s3idx.engine.reindex import run_reindex
    from s3idx.engine.results import (
        DeleteResult,
        GetResult,
        PutResult,
        RebuildResult,
        ReindexResult,
        SyncResult,
        VerifyResult,
        reported_on_failure,
    )
    from s3idx.engine.rewrite import MaggmaRewriter
    from s3idx.engine.sync import run_sync
    from s3idx.engine.verify import run_verify


T = TypeVar("T")


class _Lazy:
    """A module, or a callable of one, imported at first use: each operation's modules are
    imported when it first runs, so a query does not pay for put's, sync's or verify's, nor for
    reading bodies unless it reads them (start-up time, issue 17). mypy checks the calls
    against the real imports above."""

    def __init__(self, module: str, name: str | None = None) -> None:
        self._module, self._name = module, name

    def _target(self) -> Any:
        module = importlib.import_module(self._module)
        return module if self._name is None else getattr(module, self._name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)


if not TYPE_CHECKING:
    delete_ops = _Lazy("s3idx.engine.delete")
    GetResult = _Lazy("s3idx.engine.results", "GetResult")
    PutResult = _Lazy("s3idx.engine.results", "PutResult")
    reported_on_failure = _Lazy("s3idx.engine.results", "reported_on_failure")
    check_field_paths = _Lazy("s3idx.engine.documents", "check_field_paths")
    check_new_fields = _Lazy("s3idx.engine.documents", "check_new_fields")
    ReadProgress = _Lazy("s3idx.engine.inputs", "ReadProgress")
    Record = _Lazy("s3idx.engine.inputs", "Record")
    check_input_file = _Lazy("s3idx.engine.inputs", "check_input_file")
    file_source = _Lazy("s3idx.engine.inputs", "file_source")
    read_records = _Lazy("s3idx.engine.inputs", "read_records")
    stream_source = _Lazy("s3idx.engine.inputs", "stream_source")
    total_size = _Lazy("s3idx.engine.inputs", "total_size")
    ManifestBatches = _Lazy("s3idx.engine.manifest_batches", "ManifestBatches")
    fetch_document = _Lazy("s3idx.engine.read", "fetch_document")
    fetch_many = _Lazy("s3idx.engine.read", "fetch_many")
    run_put_processes = _Lazy("s3idx.engine.processes", "run_put_processes")
    PutOptions = _Lazy("s3idx.engine.put", "PutOptions")
    run_put = _Lazy("s3idx.engine.put", "run_put")
    run_rebuild = _Lazy("s3idx.engine.rebuild", "run_rebuild")
    run_reindex = _Lazy("s3idx.engine.reindex", "run_reindex")
    MaggmaRewriter = _Lazy("s3idx.engine.rewrite", "MaggmaRewriter")
    run_sync = _Lazy("s3idx.engine.sync", "run_sync")
    run_verify = _Lazy("s3idx.engine.verify", "run_verify")


class Engine:
    """put / get / query / delete over one object store and one index.

    The engine never prints: it reports through ``Events`` and returns result objects.
    ``store`` is the object store, or a function that opens it, called at its first use.
    """

    def __init__(
        self,
        store: ObjectStore | Callable[[], ObjectStore],
        index: Index,
        *,
        key_field: str | None = None,
        fields: Sequence[str] = (),
        compress: str = "zlib",
        workers: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        spool_threshold: int = SPOOL_THRESHOLD,
        head_workers: int | None = None,
        put_stale_seconds: float = DEFAULT_PUT_STALE_SECONDS,
    ) -> None:
        # workers: put's and get's requests; head_workers: HEAD-bound work's (rebuild, sync,
        # reindex, verify), latency-bound, so more of them; a workers given sets both.
        if head_workers is None:
            head_workers = DEFAULT_HEAD_WORKERS if workers is None else workers
        workers = DEFAULT_WORKERS if workers is None else workers
        # Checked before anything opens: a count out of range fails later, and less clearly.
        check_count("workers", workers, 1, MAX_WORKERS)
        check_count("head_workers", head_workers, 1, MAX_WORKERS)
        check_count("batch_size", batch_size, 1, MAX_BATCH_SIZE)
        check_count("spool_threshold", spool_threshold, 0, INT64_MAX)
        _check_put_stale_seconds(put_stale_seconds)
        if key_field is not None:
            codec.check_new_key_field(key_field)
        check_collection("fields", fields, "field paths")
        check_backend("store", store)
        check_backend("index", index)
        if compress not in codec.CODEC_BY_COMPRESSION:
            raise UsageError(
                f"unknown compression {compress!r}; choose one of: "
                + ", ".join(codec.CODEC_BY_COMPRESSION)
            )
        self._max_concurrency = max(workers, head_workers)
        self._store: RetryingStore | None = None
        self._open_store: Callable[[], ObjectStore] | None = None
        # What the index records as the store it describes (see _check_store_binding); a store
        # given as a function that opens it: from_settings says, without opening it.
        self.store_binding: str | None = None
        if isinstance(store, ObjectStore) or not callable(store):
            self._store = self._retrying(store)
            self.store_binding = self._store.identity
        else:
            self._open_store = store
        self._index = index
        self._binding_checked = False
        self._closed = False
        self._key_field = key_field
        self.fields = tuple(fields)
        self.codec = codec.CODEC_BY_COMPRESSION[compress]
        codec.check_codec_available(self.codec)  # before anything is read or written
        self.workers = workers
        self.head_workers = head_workers
        self.batch_size = batch_size
        # Documents larger than this once decompressed are spooled to a temporary file.
        self.spool_threshold = spool_threshold
        # After how long without a heartbeat sync and verify take a put for dead.
        self.put_stale_seconds = float(put_stale_seconds)
        # What opened the backends, when known: worker processes open their own from it.
        self.settings: Settings | None = None

    def _retrying(self, store: ObjectStore) -> RetryingStore:
        # Every backend call goes through one retry policy and one adaptive concurrency limit.
        if isinstance(store, RetryingStore):
            return store
        return RetryingStore(store, max_concurrency=self._max_concurrency)

    @property
    def index(self) -> Index:
        """The index, once found to describe this engine's store (IndexSettingsError if it
        records another: its entries would lie about this one)."""
        self._check_open()
        if not self._binding_checked:
            self._check_store_binding()
        return self._index

    def _check_store_binding(self) -> None:
        bound = None if self.store_binding is None else self._index.store_binding()
        self._refuse_another_store(bound)
        self._binding_checked = True

    def check_store_binding(self) -> None:
        """Refuse (IndexSettingsError) an index that records another store now: called by
        the commands that write before each batch, not only at their start, since a
        ``rebuild-index`` from another store may re-point the index while they run."""
        self._check_open()
        self._check_store_binding()

    def _refuse_another_store(self, bound: str | None) -> None:
        refusal = self._another_store(bound)
        if refusal is not None:
            # A location that is no store (a file) is the likelier mistake: said as every
            # command says it. One that does not exist may be a put's new store: this index
            # is another's all the same. Asked only here, so a query opens no store.
            with contextlib.suppress(NotFoundError):
                self.require_store()
            raise refusal

    def _another_store(self, bound: str | None) -> IndexSettingsError | None:
        """The refusal of an index that records ``bound``, another store than this one's."""
        if bound is None or self.store_binding is None or bound == self.store_binding:
            return None
        return IndexSettingsError(
            f"index {self._index.location} is the index of store "
            f"{redact_location(bound)}, not of {redact_location(self.store_binding)}",
            hint="give this store's own index (--index; a new location is filled by put or "
            "by rebuild-index); to make this index describe this store instead, replacing "
            "its entries, run s3idx rebuild-index",
        )

    def bind_store(self) -> None:
        """Record this engine's store in an index that records none yet (a new one, or one
        written before s3idx recorded its store); called by the commands that add entries,
        before they do. Another store recorded meanwhile, by a writer binding at the same
        moment, is refused as the first use of ``index`` refuses it."""
        if self.store_binding is not None:
            self._check_open()
            self._refuse_another_store(self._index.bind_store(self.store_binding))

    @property
    def store(self) -> RetryingStore:
        """The object store; given as a function that opens it, opened at first use."""
        self._check_open()
        if self._store is None:
            assert self._open_store is not None
            self._store = self._retrying(self._open_store())
        return self._store

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        engine = cls(
            store_opener(settings),
            open_index(settings),
            key_field=settings.key,
            fields=settings.fields,
            compress=settings.compress,
            workers=settings.workers,
            batch_size=settings.batch_size,
            head_workers=settings.head_workers,
            put_stale_seconds=settings.put_stale_seconds,
        )
        engine.settings = settings
        engine.store_binding = store_identity(settings)
        return engine

    def close(self) -> None:
        self._closed = True
        self._index.close()
        if self._store is not None:
            self._store.close()

    def _while_open(self, items: Iterator[T]) -> Iterator[T]:
        """``items``, each only while the engine is open: results read after ``close()`` (a
        query made inside ``with open_engine(...)``, read after it) are refused as any use is,
        instead of opening a connection nothing closes again."""
        try:
            while True:
                self._check_open()
                try:
                    item = next(items)
                except StopIteration:
                    return
                yield item
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a fetch's threads end with it

    def _check_open(self) -> None:
        # Every operation goes through the index or the store: a closed engine would quietly
        # open new connections (SQLite) or fail with a backend's own words (MongoDB).
        if self._closed:
            raise UsageError(
                "this engine is closed",
                hint="open another with s3idx.open_engine(...): an engine cannot be used after "
                "close() or after its with block",
            )

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- locations ---------------------------------------------------------------------------

    def require_store(self) -> None:
        """NotFoundError unless the store exists: reading a mistyped location must not pass.

        A local store says so itself; a missing S3 bucket fails on the first request.
        """
        self.store.check_exists()

    def require_index(self) -> None:
        """NotFoundError unless an index was ever written at this location."""
        if self.index.settings() is None:
            raise index_not_found(self.index.location)

    def describe(self) -> tuple[dict[str, Any], list[S3idxError]]:
        """What ``info`` shows of the backends, and what stopped it from showing the rest."""
        shown: dict[str, Any] = {}
        problems: list[S3idxError] = []
        try:
            self.require_store()
            shown["store_status"] = "ok"
        except S3idxError as exc:
            shown["store_status"] = _status(exc)
            problems.append(exc)
        try:
            recorded = self._index_alone().settings()  # shown even if another store's
            assert recorded is not None
            shown.update(
                index_status="ok",
                key_field=recorded.key_field,
                fields=list(recorded.fields),
                pending_fields=[f for f, _ in recorded.pending],
                entries=self.count({}),
            )
            bound = self._index.store_binding()
            shown["indexed_store"] = "" if bound is None else redact_location(bound)
            refusal = self._another_store(bound)
            if refusal is not None:
                problems.append(refusal)
        except S3idxError as exc:
            shown["index_status"] = _status(exc)
            problems.append(exc)
        # Asked even of an index not found (a lost index being rebuilt has no settings yet),
        # not of one that cannot be reached: that would only wait for the same timeout again.
        rebuilding = None
        if shown["index_status"] in ("ok", "does not exist"):
            try:
                rebuilding = self._index.rebuild_status()
            except S3idxError as exc:
                problems.append(exc)
        if rebuilding is not None:
            shown["rebuild"] = rebuilding.describe()
            if rebuilding.shards is not None:
                shown["rebuild_shards"] = rebuilding.shards
                shown["rebuild_shards_done"] = sorted(rebuilding.done)
        return shown, problems

    # --- settings ----------------------------------------------------------------------------

    @property
    def key_field(self) -> str:
        """The key field: as given, else as the index recorded it, else ``fs_id``."""
        if self._key_field is not None:
            return self._key_field
        self._check_open()
        recorded = self._index.settings()  # a query's too: it need not describe the store
        return recorded.key_field if recorded is not None else DEFAULT_KEY_FIELD

    def _put_fields(self, extra: Sequence[str]) -> tuple[str, ...]:
        check_collection("fields", extra, "field paths")
        recorded = self.index.settings()
        known = recorded.fields if recorded is not None else ()
        if recorded is not None and self._key_field is None:
            try:
                codec.check_key_field(recorded.key_field)
            except UsageError as exc:
                raise UsageError(
                    f"index {self.index.location} records a key field no document can have "
                    f"(recorded by an older s3idx): {exc.message}",
                    hint="no document could be stored with it, so the index holds none: "
                    "remove the index (its SQLite file or MongoDB collection) and put again",
                ) from None
        try:
            check_field_paths(known, self.key_field)
        except UsageError as exc:
            raise UsageError(
                f"index {self.index.location} records fields no document can be stored "
                f"with (recorded by an older s3idx): {exc.message}",
                hint="run `s3idx rebuild-index`: it records again only the fields the stored "
                "objects were written with, which drops these",
            ) from None
        new = [f for f in (*self.fields, *extra) if f not in known]
        check_new_fields(new, self.key_field)
        return check_field_paths([*known, *new], self.key_field)

    # --- put ---------------------------------------------------------------------------------

    def put_records(
        self,
        records: Iterable[Record],
        *,
        fields: Sequence[str] = (),
        skip_unchanged: bool = False,
        dry_run: bool = False,
        max_errors: int | None = None,
        events: Events | None = None,
        stop: threading.Event | None = None,
        read_progress: ReadProgress | None = None,
        shard: Shard | None = None,
        last_updated_from_document: bool = False,
    ) -> PutResult:
        """Store and index records; with ``shard``, only those whose keys it owns (the others
        are counted in ``PutResult.other_shards``; see ``s3idx.engine.put._router``). With
        ``last_updated_from_document``, a document's own ``last_updated`` (a datetime) is its
        entry's, instead of the time of storing. Each record is consumed: its
        parsed ``document`` is dropped (set to None) once its body and entry are made, to keep
        memory flat."""
        check_shard(shard)
        _check_max_errors(max_errors)
        store = self.store  # opened before the index records anything
        options = self._put_options(
            fields, skip_unchanged, dry_run, max_errors, last_updated_from_document
        )
        self.prepare_writes(shard, dry_run=dry_run)
        self._record_fields(options)
        return run_put(
            store,
            self.index,
            records,
            options,
            events or Events(),
            stop,
            read_progress,
            shard=shard,
            check_binding=self.check_store_binding,
        )

    def prepare_writes(self, shard: Shard | None, *, dry_run: bool = False) -> None:
        """A put's first step, before its index records anything (a new index stays new when
        it fails): the store checks it can take writes (``RetryingStore.prepare_writes``); in
        a dry run it makes the same checks and creates nothing (``check_writes``). Its
        failure, or a signal meanwhile, carries the put's summary: nothing read or stored, the
        retries made."""
        summary = PutResult(dry_run=dry_run, shard=None if shard is None else str(shard))
        retries, started = self.store.retries, time.monotonic()
        try:
            with reported_on_failure(summary):
                if dry_run:
                    self.store.check_writes()
                else:
                    self.store.prepare_writes()
        except (S3idxError, KeyboardInterrupt):
            summary.retries = self.store.retries - retries
            summary.elapsed = time.monotonic() - started
            raise

    def _put_options(
        self,
        fields: Sequence[str],
        skip_unchanged: bool,
        dry_run: bool,
        max_errors: int | None,
        last_updated_from_document: bool = False,
    ) -> PutOptions:
        """put's options: the key field, and the fields the index records and the given ones."""
        return PutOptions(
            key_field=self.key_field,
            fields=self._put_fields(fields),
            codec=self.codec,
            workers=self.workers,
            batch_size=self.batch_size,
            skip_unchanged=skip_unchanged,
            dry_run=dry_run,
            max_errors=max_errors,
            last_updated_from_document=last_updated_from_document,
        )

    def _record_fields(self, options: PutOptions) -> None:
        """The index records put's key field and fields; a dry run only makes the checks
        recording would make (the location, another key field recorded) and writes nothing."""
        if not options.dry_run:
            self.index.configure(options.key_field, options.fields)
            self.bind_store()
            return
        check = getattr(self.index, "check_configure", None)  # the index binding: by ``index``
        if check is not None:
            check(options.key_field, options.fields)

    def put_files(
        self,
        paths: Sequence[str | Path],
        *,
        stdin: IO[bytes] | None = None,
        read_progress: ReadProgress | None = None,
        processes: int = 1,
        **options: Any,
    ) -> PutResult:
        """Ingest JSON lines (or a JSON array, or gzip of either) from files; ``-`` is stdin.

        ``processes`` > 1 splits the input over that many worker processes by key
        (``engine/processes.py``); it needs an engine opened from settings (``open_engine``).
        """
        if not 1 <= processes <= MAX_PROCESSES:
            raise UsageError(
                f"processes must be from 1 to {MAX_PROCESSES}, not {processes}",
                hint="each worker process is a Python interpreter of its own: more than the "
                "free cores only add start-up and memory",
            )
        check_collection("paths", paths, "input files")
        # Checked before any input is read: put_files' own options are read by put_records.
        check_collection("fields", options.get("fields", ()), "field paths")
        check_shard(options.get("shard"))
        sources: list[InputSource] = []
        for path in paths:
            if str(path) == "-":
                if stdin is None:
                    raise UsageError(
                        "'-' (stdin) is among the paths, but no stdin stream was given",
                        hint="pass the stream to read: put_files(['-'], stdin=sys.stdin.buffer)",
                    )
                sources.append(stream_source(stdin))
            else:
                check_input_file(path)  # every one, before any is read
                sources.append(file_source(path))
        progress = read_progress or ReadProgress()
        progress.bytes_total = total_size(sources)
        if processes > 1:
            return self._put_in_processes(sources, processes, progress, **options)
        records = read_records(sources, progress, options.get("stop"))
        return self.put_records(records, read_progress=progress, **options)

    def _put_in_processes(
        self,
        sources: Sequence[InputSource],
        processes: int,
        read_progress: ReadProgress,
        *,
        fields: Sequence[str] = (),
        skip_unchanged: bool = False,
        dry_run: bool = False,
        max_errors: int | None = None,
        events: Events | None = None,
        stop: threading.Event | None = None,
        shard: Shard | None = None,
    ) -> PutResult:
        if self.settings is None:
            raise UsageError(
                "put with processes > 1 needs an engine opened from settings",
                hint="open it with s3idx.open_engine(...) or Engine.from_settings(...): each "
                "worker process opens the store and the index again from them",
            )
        _check_max_errors(max_errors)
        options = self._put_options(fields, skip_unchanged, dry_run, max_errors)
        return run_put_processes(
            self.settings,
            sources,
            options,
            processes,
            events or Events(),
            stop,
            read_progress,
            shard,
            # Recorded once, by the parent, when every worker has opened its store and index
            # and before any line is read: N workers must not race to record them.
            when_ready=lambda: self._record_fields(options),
        )

    def put_documents(self, documents: Iterable[Mapping[str, Any]], **options: Any) -> PutResult:
        """Ingest Python dicts (datetimes allowed); rejects are located as ``<documents>:N``.

        An item that is not a mapping is rejected as a line that is not a JSON object is."""
        check_documents(documents)
        records = (
            Record("<documents>", n, b"", dict(doc) if isinstance(doc, Mapping) else doc)
            for n, doc in enumerate(documents, start=1)
        )
        return self.put_records(records, **options)

    # --- get ---------------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any]:
        """One document as a dict (datetimes as datetimes); ObjectNotFoundError if missing,
        DamagedObjectError if its body is not what its metadata recorded or not the document
        of ``key`` (not a JSON object, another key's)."""
        codec.check_key_argument(key)
        self.require_store()
        document = fetch_document(
            self.store, key, spool_threshold=self.spool_threshold, keep_parsed=True
        )
        parsed: dict[str, Any] = codec.untag(document.parse())  # checked: a JSON object
        return parsed

    def fetch(
        self, keys: Iterable[str], *, parse: bool = False
    ) -> Iterator[tuple[str, FetchedDocument | None]]:
        """Verified documents' JSON in the order of ``keys``, fetched in parallel; None when
        missing. With ``parse``, each keeps the parse its check made (``FetchedDocument.parse``
        returns it rather than parsing again)."""
        check_collection("keys", keys, "keys")
        self.require_store()
        fetched = fetch_many(
            self.store,
            keys,
            self.workers,
            spool_threshold=self.spool_threshold,
            keep_parsed=parse,
        )
        return self._while_open(fetched)

    def write_documents(
        self, keys: Iterable[str], out: IO[bytes], *, events: Events | None = None
    ) -> GetResult:
        """Write documents as JSON lines, each only once its whole body has been verified.
        A key no document can have is a UsageError before any is read."""
        check_collection("keys", keys, "keys")
        keys = [codec.check_key_argument(key) for key in keys]
        result = GetResult()
        events = events or Events()
        total = len(keys) if isinstance(keys, Sized) else None
        # The keys reported so far still are when the store then fails every read.
        with reported_on_failure(result):
            for done, (key, document) in enumerate(self.fetch(keys), start=1):
                events.progress(done, total, {})
                if document is None:
                    result.missing.append(key)
                    continue
                if document.error is not None:
                    result.add_unread(key, document)
                    continue
                for chunk in document.iter_bytes():
                    out.write(chunk)
                out.write(b"\n")
                result.found += 1
        return result

    # --- query -------------------------------------------------------------------------------

    def query(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        fields: Sequence[str] | None = None,
        sort: SortSpec | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[Entry]:
        """Index entries matching a MongoDB-style filter.

        A filter, sort or projection naming a field the index does not hold for every entry
        is refused (FieldNotIndexedError, FieldPendingError) rather than answered wrongly.
        """
        index = self._index_alone()
        check_query_paths(index.settings(), filter=filter, sort=sort, fields=fields)
        found = index.find(filter or {}, fields=fields, sort=sort, skip=skip, limit=limit)
        return self._while_open(found)

    def count(self, filter: Mapping[str, Any] | None = None) -> int:
        index = self._index_alone()
        check_query_paths(index.settings(), filter=filter)
        return index.count(filter or {})

    def check_query(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        fields: Sequence[str] | None = None,
        sort: SortSpec | None = None,
    ) -> None:
        """Refuse what ``query`` would refuse in these paths, without running it (for a count
        given a sort or projection too: the same refusal as the listing)."""
        check_query_paths(self._index_alone().settings(), filter=filter, sort=sort, fields=fields)

    def _index_alone(self) -> Index:
        """The index, for reads of its entries alone (query, count): they say nothing of a
        store, so the store given with them need not be the one the index describes (a query
        given --index only, with the default store). NotFoundError for no index."""
        self._check_open()
        if self._index.settings() is None:
            raise index_not_found(self._index.location)
        return self._index

    def query_documents(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        sort: SortSpec | None = None,
        skip: int = 0,
        limit: int = 0,
        parse: bool = False,
    ) -> Iterator[tuple[str, FetchedDocument | None]]:
        """The whole documents of the matching entries, fetched in parallel, in index order
        (``parse`` as for ``fetch``)."""
        self.require_store()
        self.require_index()  # and the index of this store: its keys name this store's objects
        key_field = self.key_field
        etag_path = f"{codec.RESERVED_FIELD}.etag"
        entries = self.query(
            filter, fields=[key_field, etag_path], sort=sort, skip=skip, limit=limit
        )
        matched: dict[str, str] = {}  # the ETag each entry read names, until its object is

        def keys() -> Iterator[str]:
            for entry in entries:
                matched[entry[key_field]] = entry[codec.RESERVED_FIELD]["etag"]
                yield entry[key_field]

        def documents() -> Iterator[tuple[str, FetchedDocument | None]]:
            for key, document in self.fetch(keys(), parse=parse):
                etag = matched.pop(key)
                if document is None:
                    if self._entry_stands(key):
                        yield key, None
                elif document.head is not None and document.head.etag != etag:
                    yield key, self._another_version(document)
                else:
                    yield key, document

        return documents()

    def _another_version(self, document: FetchedDocument) -> FetchedDocument:
        """The object read is not the version whose entry the filter matched: drift, unless
        a writer replaced both since the query read the entry (the index then describes the
        object read)."""
        from s3idx.engine.read import FetchedDocument

        assert document.head is not None
        if self._index.etags([document.key]).get(document.key) == document.head.etag:
            return document
        document.close()
        return FetchedDocument(
            document.key,
            error="its object is another version than the entry describes (run s3idx sync)",
            drifted=True,
        )

    def _entry_stands(self, key: str) -> bool:
        """Whether an entry found without its object still stands: not if a delete took it
        (or is taking it: journaled) since the query read it. Only an entry that stands is
        drift; a document deleted while the query ran is simply no longer there."""
        return bool(self._index.etags([key])) and not self._index.journaled([key])

    # --- delete ------------------------------------------------------------------------------

    def delete(
        self, keys: Iterable[str], *, dry_run: bool = False, events: Events | None = None
    ) -> DeleteResult:
        """Delete documents by key; a key no document can have is a UsageError before any is
        deleted."""
        check_collection("keys", keys, "keys")
        keys = [codec.check_key_argument(key) for key in keys]
        self.require_store()
        self.require_index()
        return delete_ops.delete_keys(
            self.store,
            self.index,
            keys,
            dry_run=dry_run,
            events=events,
            check_binding=self.check_store_binding,
        )

    def delete_matching(
        self, filter: Mapping[str, Any], *, dry_run: bool = False, events: Events | None = None
    ) -> DeleteResult:
        check_filter_object(filter)
        self.require_store()
        self.require_index()
        check_query_paths(self.index.settings(), filter=filter)
        return delete_ops.delete_matching(
            self.store,
            self.index,
            filter,
            self.key_field,
            dry_run=dry_run,
            events=events,
            check_binding=self.check_store_binding,
        )

    # --- rebuild and sync --------------------------------------------------------------------

    def rebuild_index(
        self,
        *,
        resume: bool = False,
        rewrite: bool = False,
        events: Events | None = None,
        stop: threading.Event | None = None,
        manifests: bool = True,
        shard: Shard | None = None,
        restart: bool = False,
    ) -> RebuildResult:
        """Rebuild the index from object metadata alone; see ``s3idx.engine.rebuild``.

        With ``rewrite``, objects written by maggma are rewritten into the s3idx format (with
        this engine's compression) before their entries are written. With ``manifests`` False,
        every object is HEADed and no manifest is read or written. With ``shard``, this run
        indexes that shard's keys into the staging index all shards share, and the last shard
        to finish swaps it in; ``restart`` discards a rebuild in progress it may not join.
        """
        check_shard(shard)
        self.require_store()
        events = events or Events()
        # Rewritten objects' manifest lines (the compaction leaves them to these).
        batches = ManifestBatches(self.store, events.warned) if manifests else None
        try:
            # Not self.index: a rebuild may replace the index of another store (the way to
            # make an index describe a store that moved); the swapped-in one records this one.
            self._check_open()
            return run_rebuild(
                self.store,
                self._index,
                workers=self.head_workers,
                key_field=self._key_field,
                resume=resume,
                rewriter=self._rewriter(rewrite, batches),
                events=events,
                stop=stop,
                manifests=manifests,
                shard=shard,
                restart=restart,
                store_binding=self.store_binding,
            )
        finally:
            if batches is not None:
                batches.close()

    def sync(
        self,
        *,
        prune: bool = True,
        check: bool = False,
        dry_run: bool = False,
        rewrite: bool = False,
        events: Events | None = None,
        stop: threading.Event | None = None,
        shard: Shard | None = None,
    ) -> SyncResult:
        """Make the index agree with the store; see ``s3idx.engine.sync``.

        A put's journal records with no heartbeat for ``put_stale_seconds`` are a dead run's,
        which sync settles; a live run's are left alone.

        With ``rewrite``, objects written by maggma (new, changed, or already indexed from
        maggma's metadata) are rewritten into the s3idx format; ignored by ``check`` and
        ``dry_run``, which change nothing. With ``shard``, only the keys it owns are compared
        and set right (journaled deletes included), and every count is the shard's.
        """
        check_shard(shard)
        self.require_store()  # the index may be new: sync fills it, as rebuild-index does
        if check:
            # --check changes nothing: against a new index it would call every object drift,
            # when the likelier truth is a mistyped --index.
            self.require_index()
        prepare = getattr(self.index, "prepare_writes", None)
        if prepare is not None and not (check or dry_run):
            prepare()  # before the listing: a mistyped index fails now, not hours from now
        events = events or Events()
        # One set of per-batch manifests for the objects sync HEADs and those it rewrites.
        batches = ManifestBatches(self.store, events.warned)
        if not (check or dry_run):
            self.bind_store()  # before any entry is written, if the index has settings
        result = run_sync(
            self.store,
            self.index,
            workers=self.head_workers,
            prune=prune,
            check=check,
            dry_run=dry_run,
            rewriter=self._rewriter(rewrite and not (check or dry_run), batches),
            events=events,
            stop=stop,
            shard=shard,
            manifests=batches,
            put_stale_after=self.put_stale_seconds,
            bind=self.bind_store,  # a new index: once its first batch recorded its settings
        )
        return result

    def reindex(
        self,
        *,
        fields: Sequence[str] = (),
        dry_run: bool = False,
        events: Events | None = None,
        stop: threading.Event | None = None,
    ) -> ReindexResult:
        """Backfill the index's fields (and ``fields``, recorded first) into stored objects.

        See ``s3idx.engine.reindex``. The fields pending before are complete afterwards,
        unless some object failed or the run was stopped.
        """
        self.require_store()
        settings = self.index.settings()
        if settings is None:
            raise index_not_found(self.index.location)
        all_fields = self._put_fields(fields)
        if dry_run:
            new = tuple(f for f in all_fields if f not in settings.fields)
            count = self.index.count({}) if new else 0
            settings = IndexSettings(
                settings.key_field,
                (*settings.fields, *new),
                (*settings.pending, *((f, count) for f in new if count)),
            )
        elif fields:
            settings = self.index.configure(self.key_field, all_fields)
        return run_reindex(
            self.store,
            self.index,
            settings,
            workers=self.head_workers,
            dry_run=dry_run,
            events=events,
            stop=stop,
            check_binding=self.check_store_binding,
        )

    def verify(
        self,
        *,
        sample: float = 1.0,
        events: Events | None = None,
        stop: threading.Event | None = None,
    ) -> VerifyResult:
        """Read objects (all, or a random ``sample`` fraction) and check each against its
        metadata and index entry; see ``s3idx.engine.verify``. A put's journal records are
        split by ``put_stale_seconds`` as in ``sync``."""
        if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 <= sample <= 1:
            raise UsageError(f"sample must be a fraction from 0 to 1, got {sample}")
        self.require_store()
        self.require_index()  # else every object would be drift, not the mistyped --index
        return run_verify(
            self.store,
            self.index,
            workers=self.head_workers,
            sample=sample,
            events=events,
            stop=stop,
            spool_threshold=self.spool_threshold,
            put_stale_after=self.put_stale_seconds,
        )

    def _rewriter(self, rewrite: bool, manifests: ManifestBatches | None) -> MaggmaRewriter | None:
        return MaggmaRewriter(self.store, self.codec, manifests) if rewrite else None


def _check_put_stale_seconds(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise UsageError(f"put_stale_seconds must be a number of seconds, 0 or more, got {value!r}")


def _check_max_errors(max_errors: int | None) -> None:
    if max_errors is not None:
        check_count("max_errors", max_errors, 1, INT64_MAX)


def _status(exc: S3idxError) -> str:
    if isinstance(exc, NotFoundError):
        return "does not exist"
    if isinstance(exc, DamagedIndexError | DamagedStoreError):
        return "damaged"
    if isinstance(exc, BackendUnavailableError) and exc.not_reached:
        return "unreachable"  # a server (MongoDB down, an S3 endpoint); never a file
    if isinstance(exc, AccessDeniedError):
        return "denied"
    return "error"


def open_engine(
    *, profile: str | None = None, config_file: str | None = None, **settings: Any
) -> Engine:
    """An engine from settings given as keywords, the environment and the config file."""
    return Engine.from_settings(
        resolve_settings(settings, profile=profile, config_file=config_file)
    )


__all__ = ["Engine", "ObjectNotFoundError", "open_engine"]
