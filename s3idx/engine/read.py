"""Reading documents back: parallel fetches that keep the order asked for.

Bodies up to ``STREAM_THRESHOLD`` are read whole by a worker; larger ones are handed over
unread and decompressed chunk by chunk as they are written out, so a large document is never
held in memory twice. Objects written by maggma (msgpack) are read whole and turned into JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from s3idx import codec, maggma_format
from s3idx.engine.concurrency import ordered_map
from s3idx.errors import CorruptObjectError, NotAnS3idxObjectError, ObjectNotFoundError, quote_key
from s3idx.store.base import ObjectBody, ObjectStore

STREAM_THRESHOLD = 8 << 20


@dataclass(slots=True)
class FetchedDocument:
    """A document's JSON: ``data`` when read whole, else ``chunks`` to stream once."""

    key: str
    data: bytes | None = None
    chunks: Iterator[bytes] | None = None
    error: str | None = None  # why the object cannot be read as a document

    def read(self) -> bytes:
        if self.data is None:
            assert self.chunks is not None
            self.data = b"".join(self.chunks)
            self.chunks = None
        return self.data

    def iter_bytes(self) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
        else:
            assert self.chunks is not None
            yield from self.chunks


def fetch_document(store: ObjectStore, key: str) -> FetchedDocument:
    """Raises ObjectNotFoundError, NotAnS3idxObjectError or CorruptObjectError."""
    try:
        return _open_document(store, key)
    except (NotAnS3idxObjectError, CorruptObjectError) as exc:
        raise type(exc)(f"object {quote_key(key)}: {exc.message}") from None


def _open_document(store: ObjectStore, key: str) -> FetchedDocument:
    body = store.open(key)
    try:
        codec_name = _codec(body.head.metadata)
        if codec_name in maggma_format.CODECS:
            return FetchedDocument(key, data=_maggma_json(body, codec_name))
    except BaseException:
        _close(body.chunks)
        raise
    if body.head.size <= STREAM_THRESHOLD:
        return FetchedDocument(key, data=codec.decode_body(body.read(), codec_name))
    return FetchedDocument(key, chunks=codec.iter_decoded(body.chunks, codec_name))


def _codec(metadata: dict[str, str]) -> str:
    """How the body is encoded: s3idx's metadata says, or maggma's when there is no s3idx's."""
    try:
        return codec.parse_metadata(metadata).codec
    except NotAnS3idxObjectError:
        if not maggma_format.is_maggma_metadata(metadata):
            raise
        return maggma_format.codec_of(metadata)


def _maggma_json(body: ObjectBody, codec_name: str) -> bytes:
    # msgpack cannot be turned into JSON piece by piece: maggma's bodies are read whole, as
    # maggma itself reads them.
    return maggma_format.document_json(body.read(), codec_name, body.head.metadata)


def fetch_many(
    store: ObjectStore, keys: Iterable[str], workers: int
) -> Iterator[tuple[str, FetchedDocument | None]]:
    """Documents in the order of ``keys``; None for a key with no object.

    An object that is not a document s3idx can read comes with its ``error`` set.

    At most ``2 * workers`` fetches run ahead of the consumer, so memory stays bounded.
    """
    with ThreadPoolExecutor(workers, thread_name_prefix="s3idx-get") as pool:
        for key, future in ordered_map(pool, partial(_open_document, store), keys, 2 * workers):
            try:
                yield key, future.result()
            except ObjectNotFoundError:
                yield key, None
            except (NotAnS3idxObjectError, CorruptObjectError) as exc:
                # One unreadable object must not hide the others asked for.
                yield key, FetchedDocument(key, error=exc.message)


def _close(chunks: Iterable[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
