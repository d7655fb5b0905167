"""An index entry recovered from an object's metadata alone: what rebuild-index and sync read.

No body is downloaded: an s3idx object carries its whole index entry in its metadata, and the
HEAD response gives the ETag and size. An object written by maggma's S3Store carries its key and
searchable fields as strings (see ``s3idx.maggma_format``); its entry is recovered from those,
and with a ``Rewriter`` (``engine/rewrite.py``) it is turned into an s3idx object on the way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from s3idx import codec, maggma_format
from s3idx.errors import NotAnS3idxObjectError, UndecodableMetadataError, quote_key
from s3idx.index.base import Bookkeeping, Entry, with_bookkeeping
from s3idx.store.base import ObjectHead


def undecodable_reason(exc: UndecodableMetadataError) -> str:
    """How every command words an object whose metadata cannot be decoded."""
    return f"metadata cannot be decoded: {exc.message}"


def other_key_field(found: str, expected: str) -> str:
    """Why an object written with another key field than the index's is not indexed."""
    return f"key field {found!r}, not {expected!r}"


def unusable_reason(found: str, expected: str) -> str:
    """How every command words an object written with another key field than the index's."""
    return f"metadata cannot be used: {other_key_field(found, expected)}"


@dataclass(frozen=True, slots=True)
class Recovered:
    key: str
    key_field: str
    fields: tuple[str, ...]
    entry: Entry  # with _s3idx bookkeeping
    maggma: bool = False  # the entry came from maggma's metadata (or body, when rewritten)
    rewritten: bool = False  # the object was rewritten into the s3idx format
    rewrite_failure: str | None = None  # why a rewrite asked for could not be done


def recover_entry(head: ObjectHead, key_field: str | None = None) -> Recovered:
    """The index entry an object's metadata holds; NotAnS3idxObjectError or
    UndecodableMetadataError.

    ``key_field`` is the key field expected; only maggma's metadata, which does not say which
    field is the key, needs it (s3idx's metadata names its key field itself).
    """
    try:
        meta = codec.parse_metadata(head.metadata)
    except NotAnS3idxObjectError:
        if not maggma_format.is_maggma_metadata(head.metadata):
            raise
        return _recover_maggma(head, key_field)
    check_names_key(meta, head.key)
    bookkeeping = Bookkeeping(head.etag, head.size, meta.sha256, meta.codec)
    entry = with_bookkeeping(meta.entry, bookkeeping)
    return Recovered(head.key, meta.key_field, meta.fields, entry)


def check_names_key(meta: codec.MetadataEntry, key: str) -> None:
    """UndecodableMetadataError unless the metadata's entry is the one of ``key``: an object
    copied or renamed by another tool carries another key's entry (and body)."""
    named = meta.entry[meta.key_field]
    if named != key:
        raise UndecodableMetadataError(
            f"its metadata names key {quote_key(str(named))}, not {quote_key(key)} "
            "(copied or renamed by another tool?)"
        )


def _recover_maggma(head: ObjectHead, key_field: str | None) -> Recovered:
    meta = maggma_format.parse_metadata(head.metadata, head.key, key_field)
    entry = dict(meta.entry)
    if codec.LAST_UPDATED not in entry and head.last_modified is not None:
        # maggma keeps last_updated in its own index; when it is not in the metadata either,
        # the time the object was stored is the nearest truth the bucket holds.
        entry[codec.LAST_UPDATED] = codec.normalize_datetime(head.last_modified)
    entry = with_bookkeeping(entry, Bookkeeping(head.etag, head.size, None, meta.codec))
    return Recovered(head.key, meta.key_field, meta.fields, entry, maggma=True)


Rewriter = Callable[[Recovered], Recovered]
