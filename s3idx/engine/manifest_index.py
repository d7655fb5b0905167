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

from s3idx.engine.manifest import ManifestLine, read_manifest, vouches
from s3idx.errors import CorruptObjectError, ObjectNotFoundError
from s3idx.store.base import ObjectHead, ObjectInfo, ObjectStore

_INSERT_BATCH = 5000


class ManifestIndex:
    """Manifest lines, the latest per key, in a temporary SQLite file removed on close."""

    def __init__(self) -> None:
        # An empty file name makes SQLite create a private temporary file, removed on close.
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE lines(key TEXT PRIMARY KEY, manifest_modified TEXT, line BLOB) "
            "WITHOUT ROWID"
        )
        self.manifests_read = 0
        self.lines = 0
        self._keep: Callable[[str], bool] | None = None

    @classmethod
    def load(
        cls,
        store: ObjectStore,
        manifests: Iterable[ObjectInfo],
        on_damaged: Callable[[str, str], None] | None = None,
        keep: Callable[[str], bool] | None = None,
    ) -> ManifestIndex:
        """Read ``manifests`` (oldest first, as ``list_manifests`` gives them) into a new index.

        A damaged manifest is reported through ``on_damaged(key, reason)`` and contributes the
        lines read before the damage (each line is still checked against the listing); one
        removed meanwhile (by another rebuild's compaction) is passed over: its objects are
        HEADed unless a newer manifest vouches for them. With ``keep``, only the lines of keys
        it keeps are loaded (a sharded rebuild: the shard's own keys).
        """
        joined = cls()
        joined._keep = keep
        try:
            for info in manifests:
                joined.add_manifest(store, info, on_damaged)
        except BaseException:
            joined.close()
            raise
        return joined

    def add_manifest(
        self,
        store: ObjectStore,
        info: ObjectInfo,
        on_damaged: Callable[[str, str], None] | None = None,
    ) -> None:
        """Add one manifest's lines; its lines replace those of manifests added before."""
        modified = None if info.last_modified is None else info.last_modified.isoformat()
        rows: list[tuple[str, str | None, bytes]] = []
        try:
            for line in read_manifest(store, info.key):
                if self._keep is not None and not self._keep(line.key):
                    continue
                rows.append((line.key, modified, line.to_json()))
                if len(rows) >= _INSERT_BATCH:
                    self._insert(rows)
                    rows = []
        except ObjectNotFoundError:
            return
        except CorruptObjectError as exc:
            if on_damaged is not None:
                on_damaged(info.key, exc.message)
            return
        finally:
            self._insert(rows)
        self.manifests_read += 1

    def _insert(self, rows: list[tuple[str, str | None, bytes]]) -> None:
        if not rows:
            return
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO lines VALUES (?, ?, ?)", rows)
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
            "SELECT key, manifest_modified, line FROM lines WHERE key >= ? AND key <= ?",
            (batch[0].key, batch[-1].key),
        )
        found = {key: (modified, raw) for key, modified, raw in rows}
        vouched: dict[str, ObjectHead] = {}
        to_head: list[str] = []
        for info in batch:
            row = found.get(info.key)
            line = None if row is None else ManifestLine.from_json(row[1])
            modified = None if row is None or row[0] is None else datetime.fromisoformat(row[0])
            if line is not None and vouches(line, modified, info):
                vouched[info.key] = ObjectHead(
                    info.key, info.etag, info.size, line.metadata, info.last_modified
                )
            else:
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
