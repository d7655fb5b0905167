"""Reading documents back: verified, retried, parallel fetches that keep the order asked for.

Every body is checked before any of it is handed on: decompressed step by step while its
sha256 is computed, its compressed stream must end exactly at the end of the body, the JSON
must hash to what the metadata recorded, and it must be the document of its object, as
``verify`` checks it (``engine/body_check.py``: a JSON object whose key field is the object's
key, and whose metadata entry is the one derived from it); ``DamagedObjectError`` otherwise. So
nothing damaged, cut short, half-read or of another key ever reaches the caller's output.

A document's JSON is kept in memory up to ``SPOOL_THRESHOLD`` bytes *after* decompression;
beyond that it is spooled to a temporary file and streamed from there once verified, so memory
does not grow with a document's size however well it compresses.

A body read that fails on the way (connection reset, server error) is retried from the
object's first byte under the store's retry policy; the partial read is discarded.

A key whose reads still fail once its retries are spent (a 500 that outlasts the policy), or
whose object the credentials may not read (``ObjectAccessDeniedError``), does not stop
``fetch_many``: it comes back with its ``error`` set and ``unavailable`` (and ``denied``), and
the other keys are read. What cannot be one key's failure stops at once, as before: an endpoint
that refuses connections, a missing bucket, credentials that are wrong or expired. So do
``retry.FAILED_IN_A_ROW`` keys failing one after another: that is the endpoint failing every
read (or the credentials denied every object), and it is one error, not a line per key.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import IO, Any, TypeVar

import orjson

from s3idx import codec, maggma_format
from s3idx.engine.body_check import body_problem, not_json, spooled_body_problem
from s3idx.engine.concurrency import ordered_map, worker_pool
from s3idx.engine.metadata_entry import check_names_key, undecodable_reason
from s3idx.engine.retry import OBJECT_FAILURES, FailedInARow, RetryingStore
from s3idx.errors import (
    CorruptObjectError,
    DamagedObjectError,
    NotAnS3idxObjectError,
    ObjectAccessDeniedError,
    ObjectNotFoundError,
    S3idxError,
    TransientError,
    UndecodableMetadataError,
    quote_key,
)
from s3idx.limits import SPOOL_THRESHOLD as SPOOL_THRESHOLD
from s3idx.store.base import ObjectBody, ObjectHead, ObjectStore

COPY_CHUNK = 1 << 20

T = TypeVar("T")


@dataclass(slots=True)
class FetchedDocument:
    """A verified document's JSON: ``data`` in memory, or ``spool`` (a temporary file).

    ``error`` says why the object cannot be read as a document; ``damaged`` when that is
    because its body is not what its metadata recorded, ``undecodable`` when its metadata
    cannot be decoded or names another key (sync's and rebuild-index's ``undecodable``),
    ``unavailable`` when the store kept failing its reads until the retries ran out (a read
    again later may succeed), or, with ``denied`` too, refused these credentials this object.
    """

    key: str
    data: bytes | None = None
    spool: IO[bytes] | None = None
    error: str | None = None
    damaged: bool = False
    undecodable: bool = False
    unavailable: bool = False
    denied: bool = False  # unavailable: the store denied these credentials this object
    hint: str | None = None  # what to do about an unavailable one, as its error said
    # query --full: the object is another version than the entry the filter matched (drift).
    drifted: bool = False
    head: ObjectHead | None = None  # the object's head, metadata included
    # The document as the read parsed it to check it (orjson's, datetimes still tagged), kept
    # when asked for (``keep_parsed``) and it was held in memory; see ``parse``.
    parsed: Any = None

    def parse(self) -> Any:
        """The document as orjson parses it: the read's own parse when it kept it, else the
        JSON parsed now (a spooled document). Raises orjson.JSONDecodeError."""
        if self.parsed is not None:
            return self.parsed
        return orjson.loads(self.read())

    def read(self) -> bytes:
        if self.data is None:
            self.data = b"".join(self.iter_bytes())
        return self.data

    def iter_bytes(self) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        assert self.spool is not None
        spool, self.spool = self.spool, None
        with spool:
            spool.seek(0)
            while chunk := spool.read(COPY_CHUNK):
                yield chunk

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


def fetch_document(
    store: ObjectStore,
    key: str,
    *,
    spool_threshold: int = SPOOL_THRESHOLD,
    keep_parsed: bool = False,
) -> FetchedDocument:
    """Raises ObjectNotFoundError, NotAnS3idxObjectError, CorruptObjectError (and its
    DamagedObjectError), or the store's errors once retries are exhausted. With
    ``keep_parsed``, the document's ``parsed`` holds the parse its check made (in memory)."""
    try:
        return _fetch(store, key, spool_threshold, keep_parsed)
    except UndecodableMetadataError as exc:
        reason = undecodable_reason(exc)
        raise UndecodableMetadataError(f"object {quote_key(key)}: {reason}") from None
    except (NotAnS3idxObjectError, CorruptObjectError) as exc:
        raise type(exc)(f"object {quote_key(key)}: {exc.message}") from None


def _fetch(
    store: ObjectStore, key: str, threshold: int, keep_parsed: bool = False
) -> FetchedDocument:
    verified = partial(_verified_document, threshold=threshold, keep_parsed=keep_parsed)
    return read_object(store, key, verified)


def read_object(store: ObjectStore, key: str, consume: Callable[[ObjectBody], T]) -> T:
    """``consume(body)`` of one object; a read that fails on the way restarts the object."""
    if isinstance(store, RetryingStore):
        return store.read(key, consume)
    body = store.open(key)
    try:
        return consume(body)
    finally:
        _close(body.chunks)


def _verified_document(body: ObjectBody, threshold: int, keep_parsed: bool) -> FetchedDocument:
    key = body.head.key
    recorded = _recorded(body.head)
    if recorded is None:
        codec_name = maggma_format.codec_of(body.head.metadata)
        return FetchedDocument(key, data=_maggma_json(body, codec_name), head=body.head)
    codec_name, sha256 = recorded.codec, recorded.sha256
    spool = _Spool(threshold)
    try:
        digest = _decode_into(body, codec_name, spool)
        if sha256 is not None and digest != sha256:
            raise DamagedObjectError(
                f"body does not match its recorded sha256 (recorded {sha256[:12]}…, "
                f"read {digest[:12]}…): it was changed or damaged after it was written"
            )
        if sha256 is None and not spool.looks_like_object():
            raise DamagedObjectError(f"body is not a JSON object (codec {codec_name})")
        document = spool.document(key)
        document.head = body.head
    except BaseException:
        spool.close()
        raise
    try:
        _check_body(document, recorded, keep_parsed)
    except BaseException:
        document.close()
        raise
    return document


def _check_body(document: FetchedDocument, recorded: codec.MetadataEntry, keep: bool) -> None:
    """DamagedObjectError unless the verified JSON is the document of its object, as verify
    checks it: parsed once when held in memory (the parse kept with ``keep``), streamed from
    its temporary file when spooled (object and key field only: it is not parsed whole)."""
    if document.data is not None:
        try:
            parsed = orjson.loads(document.data)
        except orjson.JSONDecodeError as exc:
            raise DamagedObjectError(not_json(exc)) from None
        problem = body_problem(document.key, parsed, recorded)
        if keep and problem is None:
            document.parsed = parsed
    else:
        assert document.spool is not None
        problem = spooled_body_problem(
            document.key, _file_chunks(document.spool), recorded.key_field
        )
    if problem is not None:
        raise DamagedObjectError(problem)


def _file_chunks(spool: IO[bytes]) -> Iterator[bytes]:
    spool.seek(0)
    while chunk := spool.read(COPY_CHUNK):
        yield chunk


def _decode_into(body: ObjectBody, codec_name: str, spool: _Spool) -> str:
    """Decompress the body into ``spool``; return the sha256 of the JSON."""
    counted = _Counted(body.chunks)
    digest = hashlib.sha256()
    try:
        for piece in codec.iter_decoded(counted, codec_name):
            digest.update(piece)
            spool.write(piece)
    except DamagedObjectError:
        counted.check_length(body)  # a body cut short in transit is not damage: read it again
        raise
    counted.check_length(body)
    return digest.hexdigest()


class _Counted:
    """A body's chunks, counted, so a body that ended early can be told from a damaged one."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.received = 0
        self.exhausted = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.received += len(chunk)
            yield chunk
        self.exhausted = True

    def check_length(self, body: ObjectBody) -> None:
        """Raise TransientError (retried) if the body ended before the bytes announced."""
        if self.exhausted and body.length is not None and self.received != body.length:
            raise TransientError(
                f"body of {body.head.key!r} ended after {self.received} of {body.length} bytes"
            )


class _Spool:
    """A document's JSON: pieces in memory up to ``threshold`` bytes, then a temporary file."""

    def __init__(self, threshold: int) -> None:
        self._threshold = threshold
        self._pieces: list[bytes] = []
        self._size = 0
        self._file: IO[bytes] | None = None
        self._first = b""
        self._last = b""

    def write(self, piece: bytes) -> None:
        if not self._first.strip():
            self._first += piece[:64]
        self._last = (self._last + piece[-64:])[-64:]
        self._size += len(piece)
        try:
            if self._file is not None:
                self._file.write(piece)
                return
            self._pieces.append(piece)
            if self._size > self._threshold:
                # Closed by document() or close(): it outlives this call.
                self._file = tempfile.TemporaryFile(prefix="s3idx-get-")  # noqa: SIM115
                for held in self._pieces:
                    self._file.write(held)
                self._pieces = []
        except OSError as exc:
            raise S3idxError(
                f"cannot hold a {self._size}-byte document in a temporary file in "
                f"{tempfile.gettempdir()}: {exc.strerror or exc}",
                hint="documents over 8 MiB are spooled there; set TMPDIR to a directory with room",
            ) from None

    def looks_like_object(self) -> bool:
        # Without a recorded hash to compare, a body must at least not be binary or another
        # kind of JSON value: every document is a JSON object.
        return self._first.lstrip()[:1] == b"{" and self._last.rstrip()[-1:] == b"}"

    def document(self, key: str) -> FetchedDocument:
        if self._file is not None:
            spool, self._file = self._file, None
            return FetchedDocument(key, spool=spool)
        data = b"".join(self._pieces)
        self._pieces = []
        return FetchedDocument(key, data=data)

    def close(self) -> None:
        self._pieces = []
        if self._file is not None:
            self._file.close()
            self._file = None


def _recorded(head: ObjectHead) -> codec.MetadataEntry | None:
    """What the metadata records (codec, sha256, key field, entry); None for maggma's.

    Metadata that names another key (an object copied or renamed by another tool) is refused
    as sync and rebuild-index refuse it: its body is another key's document.
    """
    metadata = head.metadata
    try:
        parsed = codec.parse_metadata(metadata)
    except NotAnS3idxObjectError:
        if not maggma_format.is_maggma_metadata(metadata):
            raise
        # maggma's metadata holds no key apart from the object's: parsing checks it is there.
        maggma_format.parse_metadata(metadata, head.key, None)
        return None
    check_names_key(parsed, head.key)
    return parsed


def _maggma_json(body: ObjectBody, codec_name: str) -> bytes:
    # msgpack cannot be turned into JSON piece by piece: maggma's bodies are read whole, as
    # maggma itself reads them. maggma records no hash to check them against.
    return maggma_format.document_json(body.read(), codec_name, body.head.metadata)


def fetch_many(
    store: ObjectStore,
    keys: Iterable[str],
    workers: int,
    *,
    spool_threshold: int = SPOOL_THRESHOLD,
    keep_parsed: bool = False,
) -> Iterator[tuple[str, FetchedDocument | None]]:
    """Verified documents in the order of ``keys``; None for a key with no object (with
    ``keep_parsed``, each with its ``parsed`` document when it was held in memory).

    An object that is not a document s3idx can read comes with its ``error`` set (and
    ``damaged`` when its body is not what its metadata recorded); one whose reads kept failing
    after every retry, with ``unavailable`` set. ``retry.FAILED_IN_A_ROW`` of those one after
    another raise BackendUnavailableError instead (see the module's docstring).

    At most ``2 * workers`` fetches run ahead of the consumer, so memory stays bounded.
    """
    fetch = partial(_fetch, store, threshold=spool_threshold, keep_parsed=keep_parsed)
    failing: FailedInARow[tuple[str, FetchedDocument]] = FailedInARow("read")
    with worker_pool(workers, "s3idx-get") as pool:
        for key, future in ordered_map(pool, fetch, keys, 2 * workers):
            try:
                outcome = _outcome(key, future.result)
            except OBJECT_FAILURES as exc:
                # Retries spent (RetryingStore), or this object denied: this key's failure,
                # unless the run grows.
                denied = isinstance(exc, ObjectAccessDeniedError)
                failed = FetchedDocument(
                    key, error=exc.message, unavailable=True, denied=denied, hint=exc.hint
                )
                failing.add(key, (key, failed), exc)
                continue
            yield from failing.release()
            yield key, outcome
    yield from failing.release()


def _outcome(key: str, result: Callable[[], FetchedDocument]) -> FetchedDocument | None:
    """The fetched document, None when missing, or one with the ``error`` that made it
    unreadable; raises what is no fault of this object alone."""
    try:
        return result()
    except ObjectNotFoundError:
        return None
    except UndecodableMetadataError as exc:
        return FetchedDocument(key, error=undecodable_reason(exc), undecodable=True)
    except (NotAnS3idxObjectError, CorruptObjectError) as exc:
        # One unreadable object must not hide the others asked for.
        damaged = isinstance(exc, DamagedObjectError)
        return FetchedDocument(key, error=exc.message, damaged=damaged)


def _close(chunks: Iterable[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
