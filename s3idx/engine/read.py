"""Reading documents back: parallel fetches that keep the order asked for.

Bodies up to ``STREAM_THRESHOLD`` are read whole by a worker; larger ones are handed over
unread and decompressed chunk by chunk as they are written out, so a large document is never
held in memory twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from s3idx import codec
from s3idx.engine.concurrency import ordered_map
from s3idx.errors import CorruptObjectError, NotAnS3idxObjectError, ObjectNotFoundError
from s3idx.store.base import ObjectStore

STREAM_THRESHOLD = 8 << 20


@dataclass(slots=True)
class FetchedDocument:
    """A document's JSON: ``data`` when read whole, else ``chunks`` to stream once."""

    key: str
    data: bytes | None = None
    chunks: Iterator[bytes] | None = None

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
    body = store.open(key)
    try:
        meta = codec.parse_metadata(body.head.metadata)
    except (NotAnS3idxObjectError, CorruptObjectError) as exc:
        _close(body.chunks)
        raise type(exc)(f"object {key!r}: {exc.message}") from None
    if body.head.size <= STREAM_THRESHOLD:
        return FetchedDocument(key, data=codec.decode_body(body.read(), meta.codec))
    return FetchedDocument(key, chunks=codec.iter_decoded(body.chunks, meta.codec))


def fetch_many(
    store: ObjectStore, keys: Iterable[str], workers: int
) -> Iterator[tuple[str, FetchedDocument | None]]:
    """Documents in the order of ``keys``; None for a key with no object.

    At most ``2 * workers`` fetches run ahead of the consumer, so memory stays bounded.
    """
    with ThreadPoolExecutor(workers, thread_name_prefix="s3idx-get") as pool:
        for key, future in ordered_map(pool, partial(fetch_document, store), keys, 2 * workers):
            try:
                yield key, future.result()
            except ObjectNotFoundError:
                yield key, None


def _close(chunks: Iterable[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
