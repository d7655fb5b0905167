"""The manifests' latest line per key, on disk, joined with a listing batch by batch.

rebuild-index reads every manifest once, oldest first, into a private temporary SQLite table
keyed by object key (a later manifest's line replaces an earlier one's), then asks
``ManifestIndex.vouch`` for each listing batch: one range query over the batch's keys gives the
lines, and each line stands for its object only if ``manifest.vouches`` says so. A million
lines stay on disk, not in memory (SQLite keeps only its page cache).

The join takes any batch of listed objects in key order, so a sharded rebuild can filter the
listing first and join only its own keys.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial

import orjson

from s3idx.engine.concurrency import ordered_map, worker_pool
from s3idx.engine.manifest import (
    ManifestLine,
    parse_manifest,
    read_manifest,
    vouches,
    written_at,
)
from s3idx.errors import CorruptObjectError, ObjectNotFoundError
from s3idx.store.base import ObjectHead, ObjectInfo, ObjectStore

_INSERT_BATCH = 5000
# key, etag, the line's LastModified, the manifest's LastModified, metadata (JSON)
_Row = tuple[str, str, str | None, str | None, bytes]


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class ManifestIndex:
    """Manifest lines, the latest per key, in a temporary SQLite file removed on close."""

    def __init__(self) -> None:
        # An empty file name makes SQLite create a private temporary file, removed on close.
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE lines(key TEXT PRIMARY KEY, etag TEXT, modified TEXT, "
            "manifest_modified TEXT, metadata BLOB) WITHOUT ROWID"
        )
        self.manifests_read = 0
        self.lines = 0

    @classmethod
    def load(
        cls,
        store: ObjectStore,
        manifests: Iterable[ObjectInfo],
        on_damaged: Callable[[str, str], None] | None = None,
        owns: Callable[[str], bool] | None = None,
        workers: int = 8,
    ) -> ManifestIndex:
        """Read ``manifests`` (oldest first, as ``list_manifests`` gives them) into a new index.

        A damaged manifest is reported through ``on_damaged(key, reason)`` and contributes the
        lines read before the damage (each line is still checked against the listing); one
        removed meanwhile (by another rebuild's compaction) is passed over: its objects are
        HEADed unless a newer manifest vouches for them. ``owns`` keeps only the lines of the
        keys it accepts (a shard's, e.g. ``Shard.owns``).

        ``workers`` bodies are fetched at once (a bucket written by many small put batches
        holds many manifests), compressed, so memory holds at most that many; they are parsed
        and added one at a time, in order.
        """
        joined = cls()
        try:
            with worker_pool(workers, "s3idx-manifest") as pool:
                fetch = partial(_fetch, store)
                for info, future in ordered_map(pool, fetch, manifests, workers):
                    error = future.exception()
                    if isinstance(error, ObjectNotFoundError):
                        continue  # removed meanwhile (by another rebuild's compaction)
                    if isinstance(error, CorruptObjectError):
                        if on_damaged is not None:
                            on_damaged(info.key, error.message)
                        continue
                    if error is not None:
                        raise error
                    joined.add_lines(
                        info, parse_manifest(info.key, [future.result()]), on_damaged, owns
                    )
        except BaseException:
            joined.close()
            raise
        return joined

    def add_manifest(
        self,
        store: ObjectStore,
        info: ObjectInfo,
        on_damaged: Callable[[str, str], None] | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        """Add one manifest's lines; its lines replace those of manifests added before."""
        try:
            self.add_lines(info, read_manifest(store, info.key), on_damaged, owns)
        except ObjectNotFoundError:
            return

    def add_lines(
        self,
        info: ObjectInfo,
        lines: Iterable[ManifestLine],
        on_damaged: Callable[[str, str], None] | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        """Add the lines of the manifest ``info`` names (CorruptObjectError: reported)."""
        modified = _time(written_at(info))
        rows: list[_Row] = []
        try:
            for line in lines:
                if owns is not None and not owns(line.key):
                    continue
                metadata = orjson.dumps(line.metadata)
                rows.append((line.key, line.etag, _time(line.last_modified), modified, metadata))
                if len(rows) >= _INSERT_BATCH:
                    self._insert(rows)
                    rows = []
        except CorruptObjectError as exc:
            if on_damaged is not None:
                on_damaged(info.key, exc.message)
            return
        finally:
            self._insert(rows)
        self.manifests_read += 1

    def _insert(self, rows: list[_Row]) -> None:
        if not rows:
            return
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO lines VALUES (?, ?, ?, ?, ?)", rows)
        self._db.execute("COMMIT")
        self.lines += len(rows)

    def vouch(self, batch: list[ObjectInfo]) -> tuple[dict[str, ObjectHead], list[str]]:
        """For listed objects in key order: the heads manifests vouch for, and the keys to HEAD.

        A vouched head carries the listing's ETag, size and LastModified (what a HEAD would
        return) and the line's metadata.
        """
        if not batch:
            return {}, []
        rows = self._db.execute(
            "SELECT key, etag, modified, manifest_modified, metadata FROM lines "
            "WHERE key >= ? AND key <= ?",
            (batch[0].key, batch[-1].key),
        )
        found = {row[0]: row for row in rows}
        vouched: dict[str, ObjectHead] = {}
        to_head: list[str] = []
        for info in batch:
            row = found.get(info.key)
            # The metadata is decoded only for a line that vouches: most lines of a
            # manifest-rich bucket do, but a foreign or overwritten object's need not be.
            if row is not None:
                line = ManifestLine(info.key, row[1], info.size, {}, _parse(row[2]))
                if vouches(line, _parse(row[3]), info):
                    metadata = orjson.loads(row[4])
                    vouched[info.key] = ObjectHead(
                        info.key, info.etag, info.size, metadata, info.last_modified
                    )
                    continue
            to_head.append(info.key)
        return vouched, to_head

    def vouched_head(self, info: ObjectInfo) -> ObjectHead | None:
        """One listed object's head if a manifest vouches for it."""
        return self.vouch([info])[0].get(info.key)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ManifestIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fetch(store: ObjectStore, info: ObjectInfo) -> bytes:
    return store.open(info.key).read()
