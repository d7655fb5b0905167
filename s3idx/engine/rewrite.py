"""``--rewrite``: objects written by maggma's S3Store rewritten in place into the s3idx format.

The body is read (msgpack) and written back under the same key as JSON, compressed with the
configured codec, with s3idx metadata built from the document itself: the entry then has the
values' real types, and a later rebuild gives it back exactly. As in ``put``, the object is
written before its entry: the caller upserts the entry this returns, with the new ETag.

The write is conditional on the ETag the GET returned (``ObjectStore.put(if_match=...)``): a
``put`` or ``delete`` of the key by another writer between the two is kept, and the rewrite
raises ObjectChangedError for the caller (``engine/collector.py``) to index what is there now.

Each rewritten object gets a manifest line (its new ETag, size and metadata) in the caller's
``ManifestBatches``, written every ``MANIFEST_BATCH`` objects and when the caller flushes or
closes it: a later rebuild then needs no HEAD for it.
"""

from __future__ import annotations

import dataclasses

from s3idx import codec, maggma_format
from s3idx.engine.documents import DocumentPreparer
from s3idx.engine.inputs import Record
from s3idx.engine.manifest import ManifestLine
from s3idx.engine.manifest_batches import ManifestBatches
from s3idx.engine.metadata_entry import Recovered, recover_entry
from s3idx.errors import CorruptObjectError, RecordError, quote_key
from s3idx.index.base import Bookkeeping, with_bookkeeping
from s3idx.store.base import ObjectStore

MANIFEST_BATCH = 1000


class MaggmaRewriter:
    """Rewrites one maggma object at a time; safe to call from worker threads."""

    def __init__(
        self, store: ObjectStore, codec_name: str, manifests: ManifestBatches | None = None
    ) -> None:
        maggma_format.require_msgpack()  # fail before the first object, not in the middle
        self._store = store
        self._codec = codec_name
        self.manifests = manifests  # None: no manifest lines (rebuild-index --no-manifests)

    def __call__(self, recovered: Recovered) -> Recovered:
        """The entry of the rewritten object; when it cannot be rewritten, the entry as
        recovered from the metadata, with the reason."""
        try:
            return self._rewrite(recovered)
        except (RecordError, CorruptObjectError) as exc:
            reason = exc.message.replace("\n", "; ")
            return dataclasses.replace(recovered, rewrite_failure=reason)

    def _rewrite(self, recovered: Recovered) -> Recovered:
        body = self._store.open(recovered.key)
        # The object may have changed since its HEAD: trust only what this GET returned.
        current = recover_entry(body.head, recovered.key_field)
        if not current.maggma:
            body.read()  # drains and closes the stream
            return current
        document = maggma_format.decode_document(
            body.read(), current.entry[codec.RESERVED_FIELD]["codec"], body.head.metadata
        )
        preparer = DocumentPreparer(self._store, current.key_field, current.fields, self._codec)
        prepared = preparer.prepare(
            Record(f"maggma object {quote_key(current.key)}", 0, b"", document)
        )
        if prepared.key != current.key:
            raise RecordError(
                f"its document's key is {quote_key(prepared.key)}, not its object's key"
            )
        # A change of format is not a change of the document: last_updated stays as it was.
        kept = current.entry.get(codec.LAST_UPDATED, prepared.entry[codec.LAST_UPDATED])
        entry = {**prepared.entry, codec.LAST_UPDATED: kept}
        metadata = codec.build_metadata(
            entry, current.key_field, current.fields, self._codec, prepared.sha256
        )
        codec.check_metadata_size(metadata, current.key, entry)
        # Only over the object read: a put or a delete landing since wins (ObjectChangedError,
        # which the collector handles by reading the key again), never undone by this write.
        receipt = self._store.put(
            current.key,
            codec.encode_raw(prepared.body, self._codec),
            metadata,
            if_match=body.head.etag,
        )
        bookkeeping = Bookkeeping(receipt.etag, receipt.size, prepared.sha256, self._codec)
        if self.manifests is not None:
            self.manifests.add(ManifestLine(current.key, receipt.etag, receipt.size, metadata))
            if self.manifests.pending >= MANIFEST_BATCH:
                self.manifests.flush()
        entry = with_bookkeeping(entry, bookkeeping)
        return dataclasses.replace(current, entry=entry, rewritten=True)
