"""The embedded index: one SQLite file.

Schema (version 3, recorded in ``meta``; a file of version 1 or 2 is read as it is and upgraded
in place on its first write, by adding the two tables version 2 brought and the ``stamp``
column version 3 did; older s3idx refuse a version-3 file, whose stamps they would not keep):

- ``meta(name, value)``: ``schema_version``, ``key_field``, ``fields`` (JSON list of the
  searchable fields), ``pending_fields`` (JSON list of ``[field, entries]``: fields added while
  the index held entries, not yet backfilled by ``reindex``; absent when none),
  ``pending_marks`` (JSON object: field -> how many times writers marked it pending, see
  ``Index.pending_marks``; absent before the first), ``multikey``
  (JSON list of the searchable fields some entry has had several values for; never shrinks,
  as in MongoDB), ``generation`` (names the current indexes, see rebuild) and, while a
  rebuild is in progress, ``rebuild``, ``rebuild_multikey`` and ``rebuild_checkpoint``; from a
  rebuild's start until its ``finish`` (after the commit) or ``abort``, ``rebuild_log`` (the
  rebuild's token: the "rebuild running" flag).
- ``entries(key PRIMARY KEY, entry, etag, size, sha256, codec, stamp)``: the entry as tagged
  JSON (``codec.dumps``, so datetimes come back as datetimes) without its ``_s3idx``
  bookkeeping, which lives in the other columns; ``stamp`` is new at every write of the row
  (``base.Version``), NULL in rows an earlier version wrote.
- ``entry_values(field, tclass, value, key)``: the multikey side table. For each searchable
  field of each entry, one row per value MongoDB's matcher sees at that path (see
  ``s3idx.query.sql``); indexed on ``(field, tclass, value, key)`` and on ``(key)``.
- ``delete_journal(key PRIMARY KEY, etag)``: deletes under way (see ``journal_deletes``); it
  lives beside the entries, so a rebuild's swap leaves it alone.
- ``put_journal(key, etag, run, at, PRIMARY KEY (key, run))``: entries a ``put`` run is
  replacing (see ``journal_puts``), one record per key and run, ``at`` the run's last heartbeat
  (Unix time); beside the entries too. Created by the first ``journal_puts``, so a file
  written before it existed (of the same version 2) is read and written as it is. A journal of
  the earlier layout (``key PRIMARY KEY, etag, run``: one record per key) is read as it is
  (no heartbeat) and rebuilt in this one, keeping its records, by the first write to it.
- ``changes(key PRIMARY KEY)``: the keys every entry write logged while ``rebuild_log`` was set.
  The flag is read in the write's own ``BEGIN IMMEDIATE`` transaction, so no write of any
  process slips between a rebuild's start and its log.

The file runs in WAL mode with ``synchronous=NORMAL`` and a 30 s busy timeout, so readers never
wait for writers and two processes writing at once take turns. Every change is one short
``BEGIN IMMEDIATE`` transaction: nothing is ever half-written. Reads use their own connections,
so a ``find`` reads the settings and the entries from one consistent snapshot while writes go
on.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

from s3idx import codec
from s3idx.errors import (
    REBUILD_DAMAGED_HINT,
    BackendUnavailableError,
    DamagedIndexError,
    IndexSettingsError,
    InvalidFilterError,
    S3idxError,
    TransientError,
    UsageError,
    damaged_index,
    missing_parent,
    quote_key,
)
from s3idx.frozen import Frozen, init_field
from s3idx.index.arguments import check_find_arguments
from s3idx.index.base import (
    Bookkeeping,
    Entry,
    Expected,
    IndexSettings,
    PutIntent,
    RebuildStatus,
    SortSpec,
    Version,
    is_count,
    is_expected,
    join_refusal,
    key_problem,
    marked_pending,
    marks_changed,
    new_stamp,
    settle_pending,
    superseded_rebuild,
)
from s3idx.limits import batched
from s3idx.query.filter import Filter, parse_filter
from s3idx.query.paths import project, split_path
from s3idx.query.sort import sort_entries
from s3idx.query.sql import KeySet, Tables, compile_filter, index_rows
from s3idx.sharding import Shard

SCHEMA_VERSION = 3
# Version 1 lacks only the tables version 2 added, version 2 only the stamp column of version
# 3: each is read as it is and upgraded on a write.
READABLE_VERSIONS = ("1", "2", "3")
JOURNAL = "delete_journal"
PUT_JOURNAL = "put_journal"
# The meta row of the pending marks (JSON: field -> how many times writers marked it pending;
# ``Index.pending_marks``). Beside ``pending_fields``, whose layout earlier s3idx read.
MARKS = "pending_marks"
_PUT_JOURNAL_COLUMNS = ("key", "etag", "run", "at")
CHANGES = "changes"
BUSY_TIMEOUT_S = 30
LIVE = Tables("entries", "entry_values")
REBUILD = Tables("entries_rebuild", "entry_values_rebuild")
# Keys per ``IN (...)``: under the 999 variables every SQLite build allows.
KEY_CHUNK = 500
PAGE = 1000
READER_POOL = 4
WRITER_CACHE_KIB = 64 * 1024

_ENTRY_COLUMNS = "key, entry, etag, size, sha256, codec"
_MULTIKEY = {LIVE: "multikey", REBUILD: "rebuild_multikey"}
# A sharded rebuild keeps ``rebuild_shards`` ({"joined", "done", "claimed"}) and one
# ``rebuild_checkpoint_<I>`` per shard; all of it goes with the rebuild.
_REBUILD_META = "'rebuild', 'rebuild_multikey', 'rebuild_checkpoint', 'rebuild_shards'"
_SHARD_CHECKPOINT = "rebuild_checkpoint_"
_DROP_REBUILD_META = (
    f"DELETE FROM meta WHERE name IN ({_REBUILD_META}) OR name LIKE '{_SHARD_CHECKPOINT}%'"
)
_REBUILD_LOG = "rebuild_log"
# The index names of a generation (``_create_tables``).
_MISSING_COLUMN = re.compile(r"no such column: |table \S+ has no column named ")
_GENERATION = re.compile(r"entry_values_(?:lookup|key)_(\d+)")

# Primary result codes (the low byte of an extended code) that mean "this file cannot be used".
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_NOTADB = 26

# What to do about damage a rebuild cannot repair in place: the schema itself.
_MOVE_AWAY_HINT = (
    "move the file away, then run s3idx rebuild-index (with the same --store and --index) to "
    "rebuild the index from the bucket"
)
_RESTART_HINT = (
    "start the rebuild afresh: run rebuild-index without --resume (with --shard, add --restart)"
)
# The v2 tables a rebuild re-creates when they are missing or not of the shape s3idx gives them.
_V2_COLUMNS = {JOURNAL: ("key", "etag"), CHANGES: ("key",)}


class _Damage(Exception):
    """What the file holds that s3idx never writes; ``_Database.errors`` words it with the
    index's location (``damaged_index``)."""

    def __init__(self, what: str, hint: str = REBUILD_DAMAGED_HINT) -> None:
        super().__init__(what)
        self.what = what
        self.hint = hint


class _Database:
    """The index file and its connections: one writer, for ``BEGIN IMMEDIATE`` transactions that
    create or upgrade the schema as need be, and a pool of readers. ``SqliteIndex`` and
    ``SqliteRebuild`` both work through it, so neither needs the other's internals."""

    def __init__(self, path: str | os.PathLike[str], *, create_parents: bool) -> None:
        self.path = Path(os.path.abspath(os.fspath(path)))
        # False: create the file only, as sqlite3 does, so a mistyped directory fails.
        self._create_parents = create_parents
        self.location = str(self.path)
        self._lock = threading.RLock()
        self._writer: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        # Readers taken out of the pool, e.g. by a query whose results are still being read:
        # close() closes them too, so an unfinished query holds no file open after it.
        self._lent: set[sqlite3.Connection] = set()

    @property
    def writer(self) -> sqlite3.Connection | None:
        """The write connection, once a write has opened it."""
        return self._writer

    def close(self) -> None:
        with self._lock:
            connections = [*self._readers, *self._lent, *([self._writer] if self._writer else [])]
            self._readers.clear()
            self._lent.clear()
            self._writer = None
        for conn in connections:
            conn.close()

    @contextmanager
    def transaction(self, *, repair: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; the file and its schema are created if need be. With
        ``repair`` (a rebuild's start), tables damaged by hand are made anew rather than
        refused: the rebuild replaces their content."""
        with self._lock, self.errors():
            conn = self._writer_connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._ensure_schema(conn, repair=repair)
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _refuse_a_directory(self) -> None:
        # Else taken for an index never written, or one not openable. Checked at first use,
        # not on opening, so `info` still shows the store beside it.
        if self.path.is_dir():
            raise UsageError(
                f"index {self.location} is a directory, not a SQLite file",
                hint=f"give the path of a SQLite file, such as {self.path / 'index.sqlite3'}",
            )

    def check_writable(self) -> None:
        """What the first write would refuse before it opens the file, found without creating
        anything (a dry run): a directory, a missing parent directory, one that cannot be
        made."""
        self._refuse_a_directory()
        if self.path.exists():
            return  # what it holds is read (and refused) by ``reading``
        if not self._create_parents and not self.path.parent.is_dir():
            raise missing_parent("index", self.location, str(self.path.parent))
        missing = self.path
        while not missing.parent.exists():
            missing = missing.parent
        problem = None
        if not missing.parent.is_dir():
            problem = errno.ENOTDIR
        elif not os.access(missing.parent, os.W_OK | os.X_OK):
            problem = errno.EACCES
        if problem is not None and missing != self.path:
            raise BackendUnavailableError(
                f"cannot create the directory of index {self.location}: {os.strerror(problem)}",
                hint="choose an index location in a directory you can write to",
            )
        if problem is not None:
            raise BackendUnavailableError(  # as sqlite3's SQLITE_CANTOPEN (translate_error)
                f"cannot open index {self.location} (unable to open database file)",
                hint="check that the file's directory exists and that you may write to it",
            )

    def _writer_connection(self) -> sqlite3.Connection:
        if self._writer is None:
            self._refuse_a_directory()
            if not self._create_parents and not self.path.parent.is_dir():
                raise missing_parent("index", self.location, str(self.path.parent))
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendUnavailableError(
                    f"cannot create the directory of index {self.location}: {exc.strerror}",
                    hint="choose an index location in a directory you can write to",
                ) from None
            conn = _connect(self.path, create=True)
            try:
                _enable_wal(conn)
                # Bulk upserts touch the side table's indexes all over; a bigger page cache
                # than SQLite's 2 MB default keeps them from re-reading pages at 1M entries.
                conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            except BaseException:
                conn.close()
                raise
            self._writer = conn
        return self._writer

    def _ensure_schema(self, conn: sqlite3.Connection, *, repair: bool = False) -> None:
        tables = _table_names(conn)
        if "meta" in tables:
            if repair:
                _repair_tables(conn, tables)
                tables = _table_names(conn)
            if self._check_version(conn, tables)["schema_version"] != str(SCHEMA_VERSION):
                _create_v2_tables(conn)
                _add_stamp_columns(conn)
                _set_meta(conn, "schema_version", str(SCHEMA_VERSION))
            return
        if tables:
            raise self._not_ours(tables)
        conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        _set_meta(conn, "schema_version", str(SCHEMA_VERSION))
        _set_meta(conn, "generation", "0")
        _set_meta(conn, _MULTIKEY[LIVE], "[]")
        _create_tables(conn, LIVE, 0)
        _create_v2_tables(conn)

    @contextmanager
    def reading(self, *, snapshot: bool = True) -> Iterator[sqlite3.Connection | None]:
        """A read connection of its own (None while the file does not exist); with
        ``snapshot`` all its statements see the file as it was at the first one."""
        with self.errors():
            conn = self._take_reader()
            if conn is None:
                yield None
                return
            with self._lock:
                self._lent.add(conn)
            healthy = False
            try:
                if snapshot:
                    conn.execute("BEGIN")
                yield conn
                healthy = True
            except sqlite3.ProgrammingError:
                if self._is_lent(conn):
                    raise
                # close() closed it while its results were still being read.
                raise UsageError(
                    f"index {self.location} was closed while a query's results were being read",
                    hint="read a query's results before closing its engine (or leaving its "
                    "with block)",
                ) from None
            finally:
                if self._is_lent(conn):
                    try:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                    finally:
                        with self._lock:
                            self._lent.discard(conn)
                        self._give_back(conn, healthy)

    def _is_lent(self, conn: sqlite3.Connection) -> bool:
        with self._lock:
            return conn in self._lent

    def _take_reader(self) -> sqlite3.Connection | None:
        with self._lock:
            if self._readers:
                return self._readers.pop()
        self._refuse_a_directory()
        if not self.path.exists():
            return None
        return _connect(self.path, create=False)

    def _give_back(self, conn: sqlite3.Connection, healthy: bool) -> None:
        with self._lock:
            if healthy and len(self._readers) < READER_POOL:
                self._readers.append(conn)
                return
        conn.close()

    @contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except _Damage as exc:
            raise damaged_index(self.location, exc.what, hint=exc.hint) from None
        except sqlite3.Error as exc:
            raise translate_error(exc, self.location) from exc

    def load_meta(self, conn: sqlite3.Connection) -> dict[str, Any] | None:
        """The ``meta`` table (None for an empty database)."""
        tables = _table_names(conn)
        if "meta" not in tables:
            if tables:
                raise self._not_ours(tables)
            return None
        return self._check_version(conn, tables)

    def load_settings(self, conn: sqlite3.Connection) -> IndexSettings | None:
        return self.settings_of(conn, self.load_meta(conn))

    def settings_of(
        self, conn: sqlite3.Connection, meta: Mapping[str, Any] | None
    ) -> IndexSettings | None:
        settings = _settings(meta)
        if settings is None and meta is not None and _holds_entries(conn):
            # configure records the key field before any entry is written.
            raise _Damage("it holds entries but no key field ('key_field' in its meta table)")
        return settings

    def require_settings(self, conn: sqlite3.Connection) -> IndexSettings:
        return self.require_settings_and_meta(conn)[0]

    def require_settings_and_meta(
        self, conn: sqlite3.Connection
    ) -> tuple[IndexSettings, dict[str, Any]]:
        """The settings, and the meta table they were read from (one read for both)."""
        meta = self.load_meta(conn)
        settings = self.settings_of(conn, meta)
        if settings is None:
            raise IndexSettingsError(
                f"index {self.location} has no key field recorded yet",
                hint="configure the index (key field and fields) before writing entries",
            )
        assert meta is not None  # settings come from it
        return settings, meta

    def _check_version(self, conn: sqlite3.Connection, tables: set[str]) -> dict[str, Any]:
        try:
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.OperationalError as exc:
            raise _Damage(f"its meta table is not s3idx's ({exc})", _MOVE_AWAY_HINT) from None
        version = meta.get("schema_version")
        if not isinstance(version, str) or not version.isdigit():
            # Not a version a later s3idx could have written: the file was changed by hand.
            shown = "missing" if version is None else f"{version!r:.100}, not a number"
            raise _Damage(f"its schema version is {shown}", _MOVE_AWAY_HINT)
        if version not in READABLE_VERSIONS:
            raise BackendUnavailableError(
                f"index {self.location} has schema version {version or '(none)'}; "
                f"this s3idx reads versions {', '.join(READABLE_VERSIONS)}",
                hint="use the s3idx version that wrote it, or rebuild the index into a new file",
            )
        needed = {"meta", LIVE.entries, LIVE.values}
        if version != "1":
            needed |= set(_V2_COLUMNS)
        if not needed <= tables:
            missing = sorted(needed - tables)
            if len(missing) == 1:
                raise _Damage(f"its table {missing[0]} is missing")
            raise _Damage(f"its tables {', '.join(missing)} are missing")
        return meta

    def _not_ours(self, tables: set[str]) -> S3idxError:
        if {LIVE.entries, LIVE.values} <= tables:
            return damaged_index(self.location, "its meta table is missing", hint=_MOVE_AWAY_HINT)
        return BackendUnavailableError(
            f"{self.location} is an SQLite database but not an s3idx index",
            hint="give the path of an s3idx index file, or a path where one may be created",
        )

    def key_mismatch(self, recorded: str, given: str) -> IndexSettingsError:
        return IndexSettingsError(
            f"index {self.location} uses key field {recorded!r}, not {given!r}",
            hint=f"use --key {recorded}, or give another index location for the other key",
        )


class SqliteIndex:
    """An ``Index`` in one SQLite file; the file and its directory appear on the first write."""

    def __init__(self, path: str | os.PathLike[str], *, create_parents: bool = True) -> None:
        self._db = _Database(path, create_parents=create_parents)
        self.path = self._db.path
        self.location = self._db.location

    def __repr__(self) -> str:
        return f"SqliteIndex({self.location!r})"

    def __enter__(self) -> SqliteIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare_writes(self) -> None:
        """Create the file now, as the first write would: a command that reads the whole store
        before it writes (sync) fails at once on a location it cannot create."""
        with self._db.transaction():
            pass

    # --- settings --------------------------------------------------------------------------

    def settings(self) -> IndexSettings | None:
        with self._db.reading() as conn:
            return None if conn is None else self._db.load_settings(conn)

    def configure(self, key_field: str, fields: Sequence[str]) -> IndexSettings:
        wanted = _checked_fields(key_field, fields)
        with self._db.transaction() as conn:
            current = self._db.load_settings(conn)
            if current is not None and current.key_field != key_field:
                raise self._db.key_mismatch(current.key_field, key_field)
            known = current.fields if current is not None else ()
            new = [f for f in wanted if f not in known]
            if current is None:
                _set_meta(conn, "key_field", key_field)
            if new:
                _backfill(conn, LIVE, key_field, new)
            if current is None or new:
                _set_meta(conn, "fields", json.dumps([*known, *new]))
            pending = current.pending if current is not None else ()
            if new and current is not None:
                pending = (*pending, *_newly_pending(conn, new))
                _set_pending(conn, pending)
            return IndexSettings(key_field, (*known, *new), pending)

    def check_configure(self, key_field: str, fields: Sequence[str]) -> None:
        """What ``configure`` would refuse, found without writing (a dry run): the location,
        what the file holds, another key field recorded."""
        _checked_fields(key_field, fields)
        self._db.check_writable()
        current = self.settings()
        if current is not None and current.key_field != key_field:
            raise self._db.key_mismatch(current.key_field, key_field)

    def store_binding(self) -> str | None:
        with self._db.reading() as conn:
            meta = None if conn is None else self._db.load_meta(conn)
            return None if meta is None else _store_binding(meta)

    def bind_store(self, store: str) -> str | None:
        with self._db.transaction() as conn:  # BEGIN IMMEDIATE: one writer at a time
            meta = self._db.load_meta(conn)
            if self._db.settings_of(conn, meta) is None:
                return None
            assert meta is not None
            recorded = _store_binding(meta)
            if recorded is None:
                _set_meta(conn, "store", store)
            return recorded or store

    def mark_pending(self, pending: Sequence[tuple[str, int]]) -> IndexSettings:
        with self._db.transaction() as conn:
            settings, meta = self._db.require_settings_and_meta(conn)
            merged, marks = marked_pending(
                settings.pending, _pending_marks_of(meta) or {}, settings.fields, pending
            )
            _set_pending(conn, merged)
            _set_meta(conn, MARKS, json.dumps(marks))
            return IndexSettings(settings.key_field, settings.fields, merged)

    def pending_marks(self) -> dict[str, int]:
        with self._db.reading() as conn:
            meta = None if conn is None else self._db.load_meta(conn)
        return _pending_marks_of(meta) or {}

    def mark_complete(
        self,
        fields: Sequence[str],
        *,
        remaining: int = 0,
        since: Mapping[str, int] | None = None,
    ) -> IndexSettings:
        with self._db.transaction() as conn:
            settings, meta = self._db.require_settings_and_meta(conn)
            kept = marks_changed(fields, _pending_marks_of(meta), since)
            pending = settle_pending(settings.pending, fields, remaining, kept)
            _set_pending(conn, pending)
            return IndexSettings(settings.key_field, settings.fields, pending)

    # --- writing ---------------------------------------------------------------------------

    def upsert(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        with self._db.transaction() as conn:
            settings = self._db.require_settings(conn)
            _log_changes(conn, [_entry_key(e, settings.key_field) for e in entries])
            _write_entries(conn, LIVE, settings.key_field, settings.fields, entries)

    def upsert_if(
        self, entries: Sequence[Entry], expected: Mapping[str, Expected | None]
    ) -> set[str]:
        if not entries:
            return set()
        with self._db.transaction() as conn:
            settings = self._db.require_settings(conn)
            by_key: dict[str, Entry] = {}
            for entry in entries:
                key = _entry_key(entry, settings.key_field)
                if key in by_key:
                    raise ValueError(
                        f"upsert_if takes one entry per key; {quote_key(key)} comes twice"
                    )
                if key not in expected:
                    raise ValueError(f"upsert_if has no expected ETag for key {quote_key(key)}")
                by_key[key] = entry
            _log_changes(conn, list(by_key))
            # Read inside the write transaction (BEGIN IMMEDIATE): no other writer, in this
            # process or another, can move an entry between this comparison and the write.
            current = _versions(conn, LIVE, list(by_key))
            conflicts = {k for k in by_key if not is_expected(current.get(k), expected[k])}
            winners = [e for k, e in by_key.items() if k not in conflicts]
            _write_entries(conn, LIVE, settings.key_field, settings.fields, winners)
            return conflicts

    def delete(self, keys: Sequence[str]) -> int:
        unique = list(dict.fromkeys(keys))
        if not unique or not self.path.exists():
            return 0
        with self._db.transaction() as conn:
            _log_changes(conn, unique)
            if self._db.load_settings(conn) is None:
                return 0
            return _delete_entries(conn, LIVE, unique)

    def delete_if(self, expected: Mapping[str, Expected]) -> tuple[int, set[str]]:
        if not expected or not self.path.exists():
            return 0, set()
        with self._db.transaction() as conn:
            keys = list(expected)
            _log_changes(conn, keys)
            current = _versions(conn, LIVE, keys)
            present = [k for k in keys if k in current]
            matching = [k for k in present if is_expected(current[k], expected[k])]
            conflicts = set(present) - set(matching)
            return _delete_entries(conn, LIVE, matching), conflicts

    # --- the delete journal ----------------------------------------------------------------

    def journal_deletes(self, items: Mapping[str, str]) -> None:
        if not items:
            return
        with self._db.transaction() as conn:
            _log_changes(conn, list(items))
            conn.executemany(
                f"INSERT INTO {JOURNAL} (key, etag) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET etag = excluded.etag",
                list(items.items()),
            )

    def journaled(self, keys: Sequence[str] | None = None) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._db.reading() as conn:
            # A version-1 file read before its upgrade has no journal: nothing is journaled.
            if conn is None or JOURNAL not in _table_names(conn):
                return found
            if keys is None:
                found.update(_journal_rows(conn.execute(f"SELECT key, etag FROM {JOURNAL}")))
                return found
            for chunk in batched(list(dict.fromkeys(keys)), KEY_CHUNK):
                sql = f"SELECT key, etag FROM {JOURNAL} WHERE key IN ({_marks(len(chunk))})"
                found.update(_journal_rows(conn.execute(sql, chunk)))
        return found

    def clear_journal(self, items: Mapping[str, str]) -> None:
        if not items or not self.path.exists():
            return
        with self._db.transaction() as conn:
            conn.executemany(
                f"DELETE FROM {JOURNAL} WHERE key = ? AND etag = ?", list(items.items())
            )

    # --- the put journal ------------------------------------------------------------------

    def journal_puts(self, items: Mapping[str, str], run: str) -> None:
        if not items:
            return
        now = time.time()
        with self._db.transaction() as conn:
            _log_changes(conn, list(items))
            _create_put_journal(conn)
            conn.executemany(
                f"INSERT INTO {PUT_JOURNAL} (key, etag, run, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key, run) DO UPDATE SET etag = excluded.etag, at = excluded.at",
                [(key, etag, run, now) for key, etag in items.items()],
            )

    def beat_puts(self, run: str, *, alive: bool = True) -> None:
        if not self.path.exists():
            return
        with self._db.transaction() as conn:
            if PUT_JOURNAL not in _table_names(conn):
                return
            _create_put_journal(conn)  # an earlier layout has no heartbeat column
            at = time.time() if alive else None
            conn.execute(f"UPDATE {PUT_JOURNAL} SET at = ? WHERE run = ?", (at, run))

    def put_intents(self, keys: Sequence[str] | None = None) -> list[PutIntent]:
        found: list[PutIntent] = []
        with self._db.reading() as conn:
            # A file no put journaled in yet has no put journal: nothing is journaled.
            if conn is None or PUT_JOURNAL not in _table_names(conn):
                return found
            # A journal of the earlier layout (one record per key) has no heartbeat column.
            at = "at" if "at" in _columns(conn, PUT_JOURNAL) else "NULL"
            select = f"SELECT key, etag, run, {at} FROM {PUT_JOURNAL}"
            if keys is None:
                found.extend(_put_journal_rows(conn.execute(select)))
            else:
                for chunk in batched(list(dict.fromkeys(keys)), KEY_CHUNK):
                    sql = f"{select} WHERE key IN ({_marks(len(chunk))})"
                    found.extend(_put_journal_rows(conn.execute(sql, chunk)))
        return sorted(found, key=lambda r: (r.key, r.run))

    def clear_put_intents(self, records: Iterable[PutIntent]) -> None:
        rows = [(r.key, r.etag, r.run) for r in records]
        if not rows or not self.path.exists():
            return
        with self._db.transaction() as conn:
            if PUT_JOURNAL not in _table_names(conn):
                return
            conn.executemany(
                f"DELETE FROM {PUT_JOURNAL} WHERE key = ? AND etag = ? AND run = ?", rows
            )

    # --- reading ---------------------------------------------------------------------------

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        fields: Sequence[str] | None = None,
        sort: SortSpec | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[Entry]:
        # Everything is validated here, before the caller starts iterating.
        flt = parse_filter({} if filter is None else filter)
        args = check_find_arguments(sort=sort, skip=skip, limit=limit, fields=fields)
        return self._find(flt, args.sort, args.fields, args.skip, args.limit)

    def _find(
        self,
        flt: Filter,
        spec: list[tuple[str, int]],
        projection: list[str] | None,
        skip: int,
        limit: int,
    ) -> Iterator[Entry]:
        with self._db.reading() as conn:
            planned = self._planned(conn, flt)
            if conn is None or planned is None:
                return
            key_field, keys = planned
            found = self._query(conn, flt, keys, spec, key_field, skip, limit)
            paths = None if projection is None else [*projection, key_field]
            for entry in found:
                yield entry if paths is None else project(entry, paths)

    def _planned(self, conn: sqlite3.Connection | None, flt: Filter) -> tuple[str, KeySet] | None:
        """The key field and the filter's key set, from the reader's snapshot."""
        if conn is None:
            return None
        meta = self._db.load_meta(conn)
        settings = self._db.settings_of(conn, meta)
        if meta is None or settings is None:
            return None
        multikey = _multikey(meta, LIVE) if _MULTIKEY[LIVE] in meta else None
        keys = compile_filter(
            flt,
            key_field=settings.key_field,
            fields=settings.fields,
            multikey=multikey,
            # Two more for a page's LIMIT and OFFSET.
            max_params=conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 2,
        )
        return settings.key_field, keys

    def _query(
        self,
        conn: sqlite3.Connection,
        flt: Filter,
        keys: KeySet,
        spec: list[tuple[str, int]],
        key_field: str,
        skip: int,
        limit: int,
    ) -> Iterator[Entry]:
        if keys.is_none:
            return iter(())
        where, params = keys.where()
        sql = f"SELECT {_ENTRY_COLUMNS} FROM {LIVE.entries}{where}"
        by_key = not spec or (len(spec) == 1 and spec[0][0] == key_field and "." not in key_field)
        if not by_key:
            # Candidates in key order, so entries that sort equal come out in key order.
            candidates = _decoded(_stream(conn, sql + " ORDER BY key", params), key_field)
            matching = candidates if keys.exact else (e for e in candidates if flt.matches(e))
            return iter(sort_entries(matching, spec, skip=skip, limit=limit))
        # Keys sort as MongoDB sorts strings (UTF-8 bytes), so SQL can give the order.
        sql += " ORDER BY key DESC" if spec and spec[0][1] < 0 else " ORDER BY key"
        if keys.exact:
            sql += " LIMIT ? OFFSET ?"
            return _decoded(_stream(conn, sql, (*params, limit or -1, skip)), key_field)
        matching = (e for e in _decoded(_stream(conn, sql, params), key_field) if flt.matches(e))
        return islice(matching, skip, skip + limit if limit else None)

    def count(self, filter: Mapping[str, Any] | None = None) -> int:
        flt = parse_filter({} if filter is None else filter)
        with self._db.reading() as conn:
            planned = self._planned(conn, flt)
            if conn is None or planned is None or planned[1].is_none:
                return 0
            key_field, keys = planned
            where, params = keys.where()
            if keys.exact:
                row = conn.execute(f"SELECT count(*) FROM {LIVE.entries}{where}", params).fetchone()
                return int(row[0])
            sql = f"SELECT {_ENTRY_COLUMNS} FROM {LIVE.entries}{where}"
            entries = _decoded(_stream(conn, sql, params), key_field)
            return sum(1 for e in entries if flt.matches(e))

    def etags(self, keys: Sequence[str]) -> dict[str, str]:
        return {key: version.etag for key, version in self.versions(keys).items()}

    def versions(self, keys: Sequence[str]) -> dict[str, Version]:
        with self._db.reading() as conn:
            if conn is None or not keys or self._db.load_settings(conn) is None:
                return {}
            return _versions(conn, LIVE, list(dict.fromkeys(keys)))

    def bookkeeping(self, keys: Sequence[str]) -> dict[str, tuple[Entry, Bookkeeping]]:
        found: dict[str, tuple[Entry, Bookkeeping]] = {}
        unique = list(dict.fromkeys(keys))
        with self._db.reading() as conn:
            settings = None if conn is None or not unique else self._db.load_settings(conn)
            if conn is None or settings is None:
                return found
            columns = f"{_ENTRY_COLUMNS}, {_stamp_column(conn, LIVE.entries)}"
            for chunk in batched(unique, KEY_CHUNK):
                marks = _marks(len(chunk))
                sql = f"SELECT {columns} FROM {LIVE.entries} WHERE key IN ({marks})"
                for row in conn.execute(sql, chunk):
                    key = _row_key(row[0])
                    found[key] = (_entry_body(key, row[1], settings.key_field), _bookkeeping(row))
        return found

    def search_mismatches(self, keys: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        unique = list(dict.fromkeys(keys))
        with self._db.reading() as conn:
            settings = None if conn is None or not unique else self._db.load_settings(conn)
            if conn is None or settings is None:
                return found
            multikey = _get_multikey(conn, LIVE)
            for chunk in batched(unique, KEY_CHUNK):
                marks = _marks(len(chunk))
                stored: dict[str, list[tuple[str, int, Any]]] = {}
                sql = f"SELECT key, field, tclass, value FROM {LIVE.values} WHERE key IN ({marks})"
                for key, field, tclass, value in conn.execute(sql, chunk):
                    stored.setdefault(key, []).append((field, tclass, value))
                sql = f"SELECT key, entry FROM {LIVE.entries} WHERE key IN ({marks})"
                for raw_key, raw in conn.execute(sql, chunk):
                    key = _row_key(raw_key)
                    entry = _entry_body(key, raw, settings.key_field)
                    expected = index_rows(entry, settings.fields)
                    differing = _differing_rows(expected, stored.get(key, []), multikey)
                    if differing:
                        found[key] = differing
        return found

    def iter_bookkeeping(self) -> Iterator[tuple[str, Bookkeeping]]:
        # Page by key rather than holding one cursor (or snapshot) open: the caller may delete
        # entries while it iterates (sync does), and memory stays at one page.
        with self._db.reading(snapshot=False) as conn:
            if conn is None or self._db.load_settings(conn) is None:
                return
            yield from _paged_bookkeeping(conn, LIVE.entries)

    def close(self) -> None:
        self._db.close()

    # --- rebuild ---------------------------------------------------------------------------

    def start_rebuild(
        self,
        key_field: str,
        fields: Sequence[str] = (),
        *,
        resume: bool = False,
        shard: Shard | None = None,
        restart: bool = False,
    ) -> SqliteRebuild:
        """A fresh index keyed by ``key_field`` beside the live one (which may not exist).

        ``fields`` are the searchable fields expected: their side-table rows are written as
        entries arrive; fields found only later are filled in at commit. With ``shard``, the
        staging index is shared (see ``Index.start_rebuild``): joining, creating and refusing
        are decided in one transaction, so shards starting together end up on one.
        """
        wanted = tuple(_checked_fields(key_field, fields))
        with self._db.transaction(repair=True) as conn:
            plan = _rebuild_to_continue(conn, resume=resume, shard=shard, restart=restart)
            token = _get_meta(conn, _REBUILD_LOG)
            if plan is not None and (shard is not None or resume):
                status = _status(conn, plan)
                refusal = join_refusal(self.location, status, key_field, shard, resume=resume)
                if refusal is not None and not (restart and shard is not None):
                    raise refusal
                if refusal is None and (shard is not None or plan.key_field == key_field):
                    # The log of the interrupted run is kept: its HEAD pass is continued, not
                    # redone; a joining shard shares the log the first one started.
                    if token is None:
                        token = uuid.uuid4().hex
                        _set_meta(conn, _REBUILD_LOG, token)
                    if shard is not None:
                        _update_shards(conn, joined=shard.index)
                    return SqliteRebuild(self._db, plan, token, shard, resume=resume)
            _drop_tables(conn, REBUILD)
            conn.execute(_DROP_REBUILD_META)
            generation = _next_generation(conn)
            plan = _RebuildPlan(
                key_field,
                wanted,
                generation,
                shards=shard.count if shard else None,
                run=uuid.uuid4().hex,
                started=codec.utc_now().isoformat(),
            )
            _create_tables(conn, REBUILD, generation)
            _set_meta(conn, "rebuild", json.dumps(plan.as_dict()))
            _set_meta(conn, _MULTIKEY[REBUILD], "[]")
            if shard is not None:
                _update_shards(conn, joined=shard.index)
            token = uuid.uuid4().hex
            _set_meta(conn, _REBUILD_LOG, token)
            conn.execute(f"DELETE FROM {CHANGES}")
            return SqliteRebuild(self._db, plan, token, shard, resume=False)

    def rebuild_status(self) -> RebuildStatus | None:
        with self._db.reading() as conn:
            if conn is None or self._db.load_meta(conn) is None:
                return None
            plan = _load_rebuild(conn)
            return None if plan is None else _status(conn, plan)


# --- rebuild ---------------------------------------------------------------------------------


class _RebuildPlan(Frozen):
    __slots__ = ("fields", "generation", "key_field", "run", "shards", "started")
    _fields = ("key_field", "fields", "generation", "shards", "run", "started")
    key_field: str
    fields: tuple[str, ...]
    generation: int
    shards: int | None  # N of a sharded rebuild
    run: str  # names this rebuild (a plan written before shards existed has none)
    started: str | None  # ISO UTC time

    def __init__(
        self,
        key_field: str,
        fields: tuple[str, ...],
        generation: int,
        shards: int | None = None,
        run: str = "",
        started: str | None = None,
    ) -> None:
        init_field(self, "key_field", key_field)
        init_field(self, "fields", fields)
        init_field(self, "generation", generation)
        init_field(self, "shards", shards)
        init_field(self, "run", run)
        init_field(self, "started", started)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_field": self.key_field,
            "fields": list(self.fields),
            "generation": self.generation,
            "shards": self.shards,
            "run": self.run,
            "started": self.started,
        }


def _load_rebuild(conn: sqlite3.Connection) -> _RebuildPlan | None:
    raw = _get_meta(conn, "rebuild")
    if raw is None or not {REBUILD.entries, REBUILD.values} <= _table_names(conn):
        return None
    data = _json_meta({"rebuild": raw}, "rebuild")
    try:
        plan = _RebuildPlan(
            data["key_field"],
            tuple(data["fields"]),
            data["generation"],
            data.get("shards"),
            data.get("run", ""),
            data.get("started"),
        )
        if plan.started is not None:
            datetime.fromisoformat(plan.started)
    except (KeyError, TypeError, ValueError, AttributeError):
        plan = None
    if plan is None or not _plan_types(plan):
        raise _Damage(
            f"its record of a rebuild in progress cannot be read: {_shown(raw)}", _RESTART_HINT
        )
    return plan


def _plan_types(plan: _RebuildPlan) -> bool:
    return (
        isinstance(plan.key_field, str)
        and bool(plan.key_field)
        and all(isinstance(f, str) for f in plan.fields)
        and is_count(plan.generation)
        and (plan.shards is None or (is_count(plan.shards) and plan.shards > 0))
        and isinstance(plan.run, str)
        and (plan.started is None or isinstance(plan.started, str))
    )


def _rebuild_to_continue(
    conn: sqlite3.Connection, *, resume: bool, shard: Shard | None, restart: bool
) -> _RebuildPlan | None:
    """The rebuild in progress, for ``start_rebuild``: one whose record is damaged cannot be
    joined or resumed, but a fresh start (or ``restart``) discards it as any other."""
    try:
        return _load_rebuild(conn)
    except _Damage:
        if (resume or shard is not None) and not restart:
            raise
        return None


def _next_generation(conn: sqlite3.Connection) -> int:
    """A generation no index of the file is named with yet (the recorded one may have been
    changed by hand)."""
    recorded = _get_meta(conn, "generation")
    used = [int(recorded)] if isinstance(recorded, str) and recorded.isdigit() else []
    names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    used += [int(m.group(1)) for (name,) in names if (m := _GENERATION.fullmatch(str(name)))]
    return max(used, default=0) + 1


def _shards_state(conn: sqlite3.Connection) -> dict[str, Any]:
    raw = _get_meta(conn, "rebuild_shards")
    if not raw:
        return {"joined": [], "done": [], "claimed": None}
    state = _json_meta({"rebuild_shards": raw}, "rebuild_shards")
    if not (
        isinstance(state, dict)
        and all(
            isinstance(state.get(k), list) and all(is_count(i) for i in state[k])
            for k in ("joined", "done")
        )
        and (state.get("claimed") is None or isinstance(state.get("claimed"), str))
    ):
        raise _Damage(
            f"its record of a rebuild's shards cannot be read: {_shown(raw)}",
            _RESTART_HINT,
        )
    return state


def _checkpoint_of(name: str, raw: Any) -> dict[str, Any]:
    try:
        checkpoint = codec.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        checkpoint = None
    if not isinstance(checkpoint, dict):
        raise _Damage(
            f"its rebuild checkpoint {name!r:.100} cannot be read: {_shown(raw)}", _RESTART_HINT
        )
    return checkpoint


def _update_shards(
    conn: sqlite3.Connection,
    *,
    joined: int | None = None,
    done: int | None = None,
    claimed: str | None = None,
) -> None:
    """Change the shards' record inside the caller's transaction (so: atomically)."""
    state = _shards_state(conn)
    if joined is not None and joined not in state["joined"]:
        state["joined"] = sorted([*state["joined"], joined])
    if done is not None and done not in state["done"]:
        state["done"] = sorted([*state["done"], done])
    if claimed is not None:
        state["claimed"] = claimed
    _set_meta(conn, "rebuild_shards", json.dumps(state))


def _status(conn: sqlite3.Connection, plan: _RebuildPlan) -> RebuildStatus:
    state = _shards_state(conn)
    started = datetime.fromisoformat(plan.started) if plan.started else None
    return RebuildStatus(
        plan.key_field,
        started,
        plan.shards,
        tuple(state["joined"]),
        tuple(state["done"]),
        state["claimed"] is not None,
    )


class SqliteRebuild:
    """Fills ``entries_rebuild`` beside the live tables; ``commit`` swaps them in at once."""

    def __init__(
        self,
        db: _Database,
        plan: _RebuildPlan,
        token: str,
        shard: Shard | None = None,
        *,
        resume: bool = False,
    ) -> None:
        self._db = db
        self._plan = plan
        self._token = token  # names this rebuild's flag and change log (``rebuild_log``)
        self._resumed = resume
        self._owner = uuid.uuid4().hex  # names this handle's claim of the swap
        # Each shard has its own checkpoint; an unsharded rebuild has the one.
        self._checkpoint_name = (
            "rebuild_checkpoint" if shard is None else f"{_SHARD_CHECKPOINT}{shard.index}"
        )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._db.transaction() as conn:
            if _load_rebuild(conn) != self._plan:
                raise superseded_rebuild(f"index {self._db.location}")
            yield conn

    def upsert(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        with self._transaction() as conn:
            _write_entries(conn, REBUILD, self._plan.key_field, self._plan.fields, entries)

    def delete(self, keys: Sequence[str]) -> None:
        unique = list(dict.fromkeys(keys))
        if unique:
            with self._transaction() as conn:
                _delete_entries(conn, REBUILD, unique)

    def has_keys(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self._db.reading() as conn:
            if conn is None:
                return found
            for chunk in batched(list(dict.fromkeys(keys)), KEY_CHUNK):
                sql = f"SELECT key FROM {REBUILD.entries} WHERE key IN ({_marks(len(chunk))})"
                found.update(row[0] for row in conn.execute(sql, chunk))
        return found

    def iter_bookkeeping(self) -> Iterator[tuple[str, Bookkeeping]]:
        # Paged by key, as the live index's: the caller writes while it iterates.
        with self._db.reading(snapshot=False) as conn:
            if conn is None:
                return
            yield from _paged_bookkeeping(conn, REBUILD.entries)

    def last_key(self) -> str | None:
        with self._db.reading() as conn:
            if conn is None:
                return None
            row = conn.execute(f"SELECT max(key) FROM {REBUILD.entries}").fetchone()
            return None if row[0] is None else _row_key(row[0])

    def save_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        text = codec.dumps(dict(checkpoint)).decode()
        with self._transaction() as conn:
            _set_meta(conn, self._checkpoint_name, text)

    def checkpoint(self) -> dict[str, Any] | None:
        with self._db.reading() as conn:
            raw = None if conn is None else _get_meta(conn, self._checkpoint_name)
            return None if raw is None else _checkpoint_of(self._checkpoint_name, raw)

    def shard_checkpoints(self) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        with self._db.reading() as conn:
            if conn is None:
                return found
            rows = conn.execute(
                "SELECT name, value FROM meta WHERE name LIKE ?", (f"{_SHARD_CHECKPOINT}%",)
            ).fetchall()
            for name, value in rows:
                shard = str(name)[len(_SHARD_CHECKPOINT) :]
                if not shard.isdigit():
                    raise _Damage(f"its meta table holds {name!r:.100}, no shard's checkpoint")
                found[int(shard)] = _checkpoint_of(name, value)
        return found

    def shard_done(self, index: int) -> None:
        with self._transaction() as conn:
            _update_shards(conn, done=index)

    def shards_done(self) -> set[int]:
        with self._db.reading() as conn:
            return set() if conn is None else set(_shards_state(conn)["done"])

    def claim_swap(self) -> bool:
        if self._plan.shards is None:
            return True  # one process: nobody to race
        with self._db.transaction() as conn:
            # Committed (or discarded) by another shard already: not this one's to swap.
            if _load_rebuild(conn) != self._plan:
                return False
            state = _shards_state(conn)
            if set(state["done"]) != set(range(self._plan.shards)):
                return False
            if state["claimed"] not in (None, self._owner) and not self._resumed:
                return False
            _update_shards(conn, claimed=self._owner)
            return True

    def commit(self, settings: IndexSettings, *, store: str | None = None) -> None:
        plan = self._plan
        if settings.key_field != plan.key_field:
            raise self._db.key_mismatch(plan.key_field, settings.key_field)
        fields = [f for f in dict.fromkeys(settings.fields) if f != plan.key_field]
        for path in fields:
            _check_field(path)
        with self._transaction() as conn:
            added = [f for f in fields if f not in plan.fields]
            dropped = [f for f in plan.fields if f not in fields]
            _backfill(conn, REBUILD, plan.key_field, added)
            for chunk in batched(dropped, KEY_CHUNK):
                conn.execute(
                    f"DELETE FROM {REBUILD.values} WHERE field IN ({_marks(len(chunk))})", chunk
                )
            _drop_tables(conn, LIVE)
            conn.execute(f"ALTER TABLE {REBUILD.entries} RENAME TO {LIVE.entries}")
            conn.execute(f"ALTER TABLE {REBUILD.values} RENAME TO {LIVE.values}")
            multikey = _get_multikey(conn, REBUILD)
            _set_meta(conn, "key_field", plan.key_field)
            _set_meta(conn, "fields", json.dumps(fields))
            _set_pending(conn, tuple(p for p in settings.pending if p[0] in fields))
            _set_meta(conn, _MULTIKEY[LIVE], json.dumps([f for f in fields if f in multikey]))
            _set_meta(conn, "generation", str(plan.generation))
            if store is None:  # the entries are another store's than any recorded
                conn.execute("DELETE FROM meta WHERE name = 'store'")
            else:
                _set_meta(conn, "store", store)
            conn.execute(_DROP_REBUILD_META)

    def changed_keys(self) -> Iterator[str]:
        # Paged by key, as iter_bookkeeping: the caller writes while it iterates.
        with self._db.reading(snapshot=False) as conn:
            if conn is None or CHANGES not in _table_names(conn):
                return
            sql = f"SELECT key FROM {CHANGES} WHERE key > ? ORDER BY key LIMIT ?"
            last = ""
            while True:
                rows = conn.execute(sql, (last, PAGE)).fetchall()
                yield from (row[0] for row in rows)
                if len(rows) < PAGE:
                    return
                last = rows[-1][0]

    def finish(self) -> None:
        with self._db.transaction() as conn:
            self._end_log(conn)

    def abort(self) -> None:
        with self._db.transaction() as conn:
            _drop_tables(conn, REBUILD)
            conn.execute(_DROP_REBUILD_META)
            self._end_log(conn)

    def _end_log(self, conn: sqlite3.Connection) -> None:
        # Only this rebuild's: a rebuild started afresh since then owns the flag and the log.
        if _get_meta(conn, _REBUILD_LOG) == self._token:
            conn.execute("DELETE FROM meta WHERE name = ?", (_REBUILD_LOG,))
            conn.execute(f"DELETE FROM {CHANGES}")


# --- helpers ---------------------------------------------------------------------------------


class _Connection(sqlite3.Connection):
    """A connection that closes the cursors still being read (``_stream``) before itself:
    closed under a live cursor, SQLite keeps the files open until the cursor is collected."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams: set[sqlite3.Cursor] = set()
        # Entry tables seen with their stamp column (``_stamp_column``): a column no s3idx
        # removes, so known once seen. A table seen without it is not remembered: another
        # process may upgrade the file to version 3 at any moment.
        self.stamped: set[str] = set()

    def close(self) -> None:
        for cursor in list(self.streams):
            with contextlib.suppress(sqlite3.Error):  # one in use by another thread stays
                cursor.close()
        self.streams.clear()
        super().close()


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    uri = f"{path.as_uri()}?mode={'rwc' if create else 'rw'}"
    conn = sqlite3.connect(
        uri,
        uri=True,
        timeout=BUSY_TIMEOUT_S,
        isolation_level=None,
        check_same_thread=False,
        factory=_Connection,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode, waiting out another process that is creating it too.

    WAL is a property of the file, so on an existing index this is a no-op. On a new one the
    switch needs an exclusive lock, and SQLite does not wait for it through the busy timeout:
    when two ``put`` processes create the index at the same moment, one is told at once that
    the database is locked. So the switch is retried, within the same time a write would wait.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return  # a file that cannot be WAL (e.g. read-only) still works in its own mode
        time.sleep(0.02)


def _create_tables(conn: sqlite3.Connection, tables: Tables, generation: int) -> None:
    # Index names carry the generation: a rebuilt table keeps its index names when it is
    # renamed into place, and the next rebuild must not collide with them.
    conn.execute(
        f"CREATE TABLE {tables.entries} (key TEXT PRIMARY KEY NOT NULL, entry TEXT NOT NULL, "
        "etag TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT, codec TEXT NOT NULL, stamp TEXT)"
    )
    # ``value`` has no declared type, so SQLite keeps each value's own storage class: a
    # string "10" stays text and never compares as the number 10.
    conn.execute(
        f"CREATE TABLE {tables.values} (field TEXT NOT NULL, tclass INTEGER NOT NULL, value, "
        "key TEXT NOT NULL)"
    )
    conn.execute(
        f"CREATE INDEX entry_values_lookup_{generation} "
        f"ON {tables.values} (field, tclass, value, key)"
    )
    conn.execute(f"CREATE INDEX entry_values_key_{generation} ON {tables.values} (key)")


def _repair_tables(conn: sqlite3.Connection, tables: set[str]) -> None:
    """Make anew, empty, each table missing or of another shape than s3idx gives it, and drop
    journal rows that are no key and ETag (a rebuild's start: it replaces the entries, and
    the journal's garbage names no delete)."""
    _add_stamp_columns(conn)  # a file of an earlier version is not damaged
    shapes = {
        LIVE.entries: ("key", "entry", "etag", "size", "sha256", "codec", "stamp"),
        LIVE.values: ("field", "tclass", "value", "key"),
        **_V2_COLUMNS,
    }
    damaged = {
        t for t, columns in shapes.items() if t not in tables or _columns(conn, t) != columns
    }
    if damaged & {LIVE.entries, LIVE.values}:
        _drop_tables(conn, LIVE)
        _create_tables(conn, LIVE, _next_generation(conn))
    for table in damaged & set(_V2_COLUMNS):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    _create_v2_tables(conn)
    conn.execute(
        f"DELETE FROM {JOURNAL} WHERE typeof(key) != 'text' OR key = '' "
        "OR typeof(etag) != 'text' OR etag = ''"
    )
    conn.execute(f"DELETE FROM {CHANGES} WHERE typeof(key) != 'text' OR key = ''")
    layouts = (_PUT_JOURNAL_COLUMNS, _PUT_JOURNAL_COLUMNS[:3])  # the earlier one is upgraded
    if PUT_JOURNAL in tables and _columns(conn, PUT_JOURNAL) not in layouts:
        conn.execute(f"DROP TABLE {PUT_JOURNAL}")
    _create_put_journal(conn)
    conn.execute(
        f"DELETE FROM {PUT_JOURNAL} WHERE typeof(key) != 'text' OR key = '' "
        "OR typeof(etag) != 'text' OR etag = '' OR typeof(run) != 'text' OR run = ''"
    )


def _columns(conn: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))


def _create_v2_tables(conn: sqlite3.Connection) -> None:
    """The tables schema version 2 added (to a new file, or to a version-1 file on upgrade)."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {JOURNAL} (key TEXT PRIMARY KEY NOT NULL, etag TEXT NOT NULL)"
    )
    conn.execute(f"CREATE TABLE IF NOT EXISTS {CHANGES} (key TEXT PRIMARY KEY NOT NULL)")


def _create_put_journal(conn: sqlite3.Connection) -> None:
    """Create the put journal, or bring one of the earlier layout (one record per key, no
    heartbeat) to this one, keeping its records (in the caller's write transaction)."""
    create = (
        "CREATE TABLE IF NOT EXISTS {} (key TEXT NOT NULL, etag TEXT NOT NULL, "
        "run TEXT NOT NULL, at REAL, PRIMARY KEY (key, run))"
    )
    if PUT_JOURNAL not in _table_names(conn):
        conn.execute(create.format(PUT_JOURNAL))
        return
    if _columns(conn, PUT_JOURNAL) == _PUT_JOURNAL_COLUMNS:
        return
    earlier = f"{PUT_JOURNAL}_earlier"
    conn.execute(f"DROP TABLE IF EXISTS {earlier}")
    conn.execute(f"ALTER TABLE {PUT_JOURNAL} RENAME TO {earlier}")
    conn.execute(create.format(PUT_JOURNAL))
    # Their heartbeat stays NULL: whether their runs still live is unknown.
    conn.execute(
        f"INSERT OR IGNORE INTO {PUT_JOURNAL} (key, etag, run) SELECT key, etag, run FROM {earlier}"
    )
    conn.execute(f"DROP TABLE {earlier}")


def _log_changes(conn: sqlite3.Connection, keys: Sequence[str]) -> None:
    """Log ``keys`` as changed if a rebuild is running (read in the caller's transaction)."""
    if keys and _get_meta(conn, _REBUILD_LOG) is not None:
        conn.executemany(f"INSERT OR IGNORE INTO {CHANGES} (key) VALUES (?)", [(k,) for k in keys])


def _versions(conn: sqlite3.Connection, tables: Tables, keys: Sequence[str]) -> dict[str, Version]:
    found: dict[str, Version] = {}
    stamp = _stamp_column(conn, tables.entries)
    for chunk in batched(list(keys), KEY_CHUNK):
        marks = _marks(len(chunk))
        sql = f"SELECT key, etag, {stamp} FROM {tables.entries} WHERE key IN ({marks})"
        for key, etag, written in conn.execute(sql, chunk):
            if not isinstance(etag, str) or not etag:
                reason = f"etag {etag!r:.100} is not a non-empty string"
                raise _Damage(f"entry {quote_key(key)} has damaged _s3idx bookkeeping: {reason}")
            if written is not None and (not isinstance(written, str) or not written):
                reason = f"stamp {written!r:.100} is not a non-empty string"
                raise _Damage(f"entry {quote_key(key)} has damaged _s3idx bookkeeping: {reason}")
            found[key] = Version(etag, written)
    return found


def _stamp_column(conn: sqlite3.Connection, table: str) -> str:
    """What to select for ``table``'s stamps: the column, or NULL in a file written before
    version 3 (read as it is, and upgraded by its first write).

    Asked once per connection and table of a version-3 file (a write's compare-and-set reads
    versions in every transaction): a stamp column stays, since an s3idx that writes no
    stamps refuses a version-3 file, and every entry table this one creates has it. "No
    column" is asked again each time: another process's first write may have added it since,
    and its stamps must then be read, or compare-and-sets would be made from versions that
    never match."""
    known = conn.stamped if isinstance(conn, _Connection) else None
    if known is not None and table in known:
        return "stamp"
    if "stamp" not in _columns(conn, table):
        return "NULL"
    if known is not None:
        known.add(table)
    return "stamp"


def _add_stamp_columns(conn: sqlite3.Connection) -> None:
    """Give the entry tables of a file written before version 3 their stamp column (in the
    caller's write transaction; the rows an earlier version wrote keep a NULL stamp)."""
    tables = _table_names(conn)
    for table in (LIVE.entries, REBUILD.entries):
        if table in tables and "stamp" not in _columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN stamp TEXT")


def _delete_entries(conn: sqlite3.Connection, tables: Tables, keys: Sequence[str]) -> int:
    deleted = 0
    for chunk in batched(list(keys), KEY_CHUNK):
        marks = _marks(len(chunk))
        conn.execute(f"DELETE FROM {tables.values} WHERE key IN ({marks})", chunk)
        deleted += conn.execute(
            f"DELETE FROM {tables.entries} WHERE key IN ({marks})", chunk
        ).rowcount
    return deleted


def _drop_tables(conn: sqlite3.Connection, tables: Tables) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {tables.values}")
    conn.execute(f"DROP TABLE IF EXISTS {tables.entries}")


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _get_meta(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else row[0]


def _set_meta(conn: sqlite3.Connection, name: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def _write_entries(
    conn: sqlite3.Connection,
    tables: Tables,
    key_field: str,
    fields: Sequence[str],
    entries: Sequence[Entry],
) -> None:
    latest: dict[str, Entry] = {}
    for entry in entries:
        key = _entry_key(entry, key_field)
        latest.pop(key, None)  # a later entry for the same key wins
        latest[key] = entry
    rows = []
    values = []
    multikey: set[str] = set()
    stamp = new_stamp()  # one per write: each key is written once here
    for key, entry in latest.items():
        body, bookkeeping = _split(key, entry)
        values.extend(_side_rows(key, entry, fields, multikey))
        rows.append(
            (
                key,
                codec.dumps(body).decode(),
                bookkeeping.etag,
                bookkeeping.size,
                bookkeeping.sha256,
                bookkeeping.codec,
                stamp,
            )
        )
    conn.executemany(f"DELETE FROM {tables.values} WHERE key = ?", [(k,) for k in latest])
    conn.executemany(
        f"INSERT INTO {tables.entries} ({_ENTRY_COLUMNS}, stamp) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET entry = excluded.entry, etag = excluded.etag, "
        "size = excluded.size, sha256 = excluded.sha256, codec = excluded.codec, "
        "stamp = excluded.stamp",
        rows,
    )
    conn.executemany(
        f"INSERT INTO {tables.values} (field, tclass, value, key) VALUES (?, ?, ?, ?)", values
    )
    _add_multikey(conn, tables, multikey)


def _side_rows(
    key: str, entry: Mapping[str, Any], fields: Sequence[str], multikey: set[str]
) -> list[tuple[str, int, Any, str]]:
    """The entry's side-table rows; fields with several rows are added to ``multikey``."""
    rows = index_rows(entry, fields)
    for previous, row in pairwise(rows):
        if previous[0] == row[0]:
            multikey.add(row[0])
    return [(*row, key) for row in rows]


def _differing_rows(
    expected: list[tuple[str, int, Any]], stored: list[tuple[str, int, Any]], multikey: set[str]
) -> list[str]:
    """The fields whose stored search rows are not the entry's, or whose several rows the
    index does not know to be several (a query would take the field for single-valued)."""
    wanted, held = Counter(expected), Counter(stored)
    fields = {row[0] for row in wanted.keys() | held.keys() if wanted[row] != held[row]}
    several = Counter(row[0] for row in held)
    fields |= {field for field, count in several.items() if count > 1 and field not in multikey}
    return sorted(fields)


def _get_multikey(conn: sqlite3.Connection, tables: Tables) -> set[str]:
    raw = _get_meta(conn, _MULTIKEY[tables])
    return set() if raw is None else set(_multikey({_MULTIKEY[tables]: raw}, tables))


def _multikey(meta: Mapping[str, Any], tables: Tables) -> list[str]:
    name = _MULTIKEY[tables]
    value = _json_meta(meta, name)
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise _Damage(f"its {name!r} setting is not a list of field paths: {_shown(meta[name])}")
    return value


def _add_multikey(conn: sqlite3.Connection, tables: Tables, fields: set[str]) -> None:
    known = _get_multikey(conn, tables)
    if not fields <= known:
        _set_meta(conn, _MULTIKEY[tables], json.dumps(sorted(known | fields)))


def _backfill(conn: sqlite3.Connection, tables: Tables, key_field: str, fields: list[str]) -> None:
    """Side-table rows of ``fields`` for every stored entry (fields new to the index)."""
    if not fields:
        return
    cursor = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM {tables.entries}")
    insert = f"INSERT INTO {tables.values} (field, tclass, value, key) VALUES (?, ?, ?, ?)"
    multikey: set[str] = set()
    while batch := cursor.fetchmany(PAGE):
        values = [
            row
            for entry in _decoded(iter(batch), key_field)
            for row in _side_rows(entry[key_field], entry, fields, multikey)
        ]
        conn.executemany(insert, values)
    _add_multikey(conn, tables, multikey)


def _settings(meta: Mapping[str, Any] | None) -> IndexSettings | None:
    """The settings ``meta`` records, checked: ``_Damage`` for what s3idx never writes."""
    if meta is None or "key_field" not in meta:
        return None
    key_field = meta["key_field"]
    if not isinstance(key_field, str) or not key_field:
        raise _Damage(f"its recorded key field is not a field name: {_shown(key_field)}")
    fields: Any = _json_meta(meta, "fields") if "fields" in meta else None
    if not _field_paths(fields):
        shown = _shown(meta.get("fields"))
        raise _Damage(f"its recorded fields are not a list of field paths: {shown}")
    pending = _json_meta(meta, "pending_fields") if "pending_fields" in meta else []
    if not _pending_counts(pending, fields):
        raise _Damage(
            "its recorded pending fields are not a list of fields with their entry counts: "
            f"{_shown(meta['pending_fields'])}"
        )
    return IndexSettings(key_field, tuple(fields), tuple((f, n) for f, n in pending))


def _store_binding(meta: Mapping[str, Any]) -> str | None:
    store = meta.get("store")
    if store is not None and (not isinstance(store, str) or not store):
        raise _Damage(f"its recorded store is not a store location: {_shown(store)}")
    return store


def _json_meta(meta: Mapping[str, Any], name: str) -> Any:
    """The JSON value of ``meta[name]``; None for one that is not JSON text (the caller says
    what it should have been)."""
    raw = meta[name]
    if not isinstance(raw, str):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _field_paths(fields: Any) -> bool:
    """Whether ``fields`` is a list of names. Their syntax is not checked here: an older
    s3idx recorded some that the engine now refuses, and it says so with what to do."""
    return isinstance(fields, list) and all(isinstance(f, str) and f for f in fields)


def _pending_counts(pending: Any, fields: list[str]) -> bool:
    """Whether ``pending`` is as ``_set_pending`` writes it: ``[field, entries]`` pairs."""
    return isinstance(pending, list) and all(
        isinstance(p, list) and len(p) == 2 and p[0] in fields and is_count(p[1]) for p in pending
    )


def _shown(raw: Any) -> str:
    """A value read from the file, for a message: JSON parsed, so it reads alike whichever
    backend holds it; cut short."""
    value = raw
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            value = json.loads(raw)
    return f"{value!r:.100}"


def _holds_entries(conn: sqlite3.Connection) -> bool:
    return conn.execute(f"SELECT 1 FROM {LIVE.entries} LIMIT 1").fetchone() is not None


def _newly_pending(conn: sqlite3.Connection, fields: Sequence[str]) -> list[tuple[str, int]]:
    """Fields new to an index: pending for the entries it holds now (none: complete)."""
    held = int(conn.execute(f"SELECT count(*) FROM {LIVE.entries}").fetchone()[0])
    return [(f, held) for f in fields] if held else []


def _pending_marks_of(meta: Mapping[str, Any] | None) -> dict[str, int] | None:
    """The pending marks the meta table records ({} for none); None for a value that is not
    what s3idx writes (damaged: a backfill then cannot tell, and keeps its fields pending)."""
    if meta is None or MARKS not in meta:
        return {}
    marks = _json_meta(meta, MARKS)
    if not isinstance(marks, dict) or not all(is_count(n) for n in marks.values()):
        return None
    return {str(name): int(n) for name, n in marks.items()}


def _set_pending(conn: sqlite3.Connection, pending: Sequence[tuple[str, int]]) -> None:
    if pending:
        _set_meta(conn, "pending_fields", json.dumps([list(p) for p in pending]))
    else:
        conn.execute("DELETE FROM meta WHERE name = 'pending_fields'")


def _entry_key(entry: Mapping[str, Any], key_field: str) -> str:
    key = entry.get(key_field)
    if not isinstance(key, str) or not key:
        raise ValueError(f"an index entry needs a non-empty string {key_field!r}, got {key!r}")
    return key


def _split(key: str, entry: Mapping[str, Any]) -> tuple[dict[str, Any], Bookkeeping]:
    raw = entry.get(codec.RESERVED_FIELD)
    try:
        if not isinstance(raw, Mapping):
            raise KeyError(codec.RESERVED_FIELD)
        bookkeeping = Bookkeeping.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"index entry {quote_key(key)} lacks valid {codec.RESERVED_FIELD} bookkeeping ({exc})"
        ) from None
    body = {k: v for k, v in entry.items() if k != codec.RESERVED_FIELD}
    return body, bookkeeping


def _row_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise _Damage(f"an entry is stored under the key {key!r:.100}, not a non-empty string")
    return key


def _bookkeeping(row: tuple[Any, ...]) -> Bookkeeping:
    """The bookkeeping of a row of ``_ENTRY_COLUMNS``, with its stamp where one follows."""
    try:
        return Bookkeeping.read_back(*row[2:7])
    except ValueError as exc:
        raise _Damage(f"entry {quote_key(row[0])} has damaged _s3idx bookkeeping: {exc}") from None


def _entry_body(key: str, raw: Any, key_field: str) -> Entry:
    """The entry stored as ``raw`` under ``key``, checked: a JSON object holding its key."""
    if not isinstance(raw, str):
        raise _Damage(f"entry {quote_key(key)} is not stored as JSON text: {raw!r:.100}")
    try:
        entry = codec.loads(raw)
    except ValueError as exc:  # orjson's JSONDecodeError, or a $date tag that is no date
        raise _Damage(f"entry {quote_key(key)} is not valid JSON ({exc})") from None
    if not isinstance(entry, dict):
        raise _Damage(f"entry {quote_key(key)} is not a JSON object: {raw!r:.100}")
    problem = key_problem(entry, key, key_field)
    if problem is not None:
        raise _Damage(f"entry {quote_key(key)} {problem}")
    return entry


def _entry(row: tuple[Any, ...], key_field: str) -> Entry:
    key = _row_key(row[0])
    bookkeeping = _bookkeeping(row)
    entry = _entry_body(key, row[1], key_field)
    entry[codec.RESERVED_FIELD] = bookkeeping.as_dict()
    return entry


def _decoded(rows: Iterator[tuple[Any, ...]], key_field: str) -> Iterator[Entry]:
    return (_entry(row, key_field) for row in rows)


def _journal_rows(rows: Iterable[tuple[Any, Any]]) -> Iterator[tuple[str, str]]:
    for key, etag in rows:
        if not isinstance(key, str) or not key or not isinstance(etag, str) or not etag:
            raise _Damage(
                f"its delete journal holds {key!r:.100} -> {etag!r:.100}, not a key and an ETag"
            )
        yield key, etag


def _put_journal_rows(rows: Iterable[tuple[Any, Any, Any, Any]]) -> Iterator[PutIntent]:
    for key, etag, run, at in rows:
        if not all(isinstance(v, str) and v for v in (key, etag, run)):
            raise _Damage(
                f"its put journal holds {key!r:.100} -> {etag!r:.100} ({run!r:.100}), not a key, "
                "an ETag and a run"
            )
        # A heartbeat that is no number is unknown: the record is settled as a dead run's.
        beat = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None
        yield PutIntent(key, etag, run, beat)


def _stream(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
    cursor = conn.execute(sql, params)
    # Known to the connection while it is read, so closing the index closes it (_Connection).
    streams: set[sqlite3.Cursor] | None = getattr(conn, "streams", None)
    if streams is not None:
        streams.add(cursor)
    try:
        while batch := cursor.fetchmany(256):
            yield from batch
    finally:
        if streams is not None:
            streams.discard(cursor)
        # A reader abandoned after its index was closed (e.g. `s3idx query | head`) finds
        # the connection gone; there is nothing left to release then.
        with contextlib.suppress(sqlite3.ProgrammingError):
            cursor.close()


def _paged_bookkeeping(conn: sqlite3.Connection, table: str) -> Iterator[tuple[str, Bookkeeping]]:
    """Every key of ``table`` with its bookkeeping, in key order, a page per query."""
    sql = (
        f"SELECT key, NULL, etag, size, sha256, codec, {_stamp_column(conn, table)} FROM {table} "
        "WHERE key > ? ORDER BY key LIMIT ?"
    )
    last = ""
    while True:
        rows = conn.execute(sql, (last, PAGE)).fetchall()
        for row in rows:
            yield _row_key(row[0]), _bookkeeping(row)
        if len(rows) < PAGE:
            return
        last = rows[-1][0]


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _checked_fields(key_field: Any, fields: Sequence[str]) -> list[str]:
    """The fields to index besides ``key_field``, once each, after checking both."""
    try:
        codec.check_key_field(key_field)
    except UsageError as exc:
        raise IndexSettingsError(exc.message, hint=exc.hint) from None
    wanted = [f for f in dict.fromkeys(fields) if f != key_field]
    for path in wanted:
        _check_field(path)
    return wanted


def _check_field(path: str) -> None:
    try:
        split_path(path)
    except InvalidFilterError as exc:
        raise IndexSettingsError(exc.message) from None
    if path.split(".", 1)[0] == codec.RESERVED_FIELD:
        raise IndexSettingsError(f"field {path!r} is reserved for s3idx's bookkeeping")


def translate_error(exc: sqlite3.Error, location: str) -> S3idxError:
    """The s3idx error for an sqlite3 failure on the index at ``location``."""
    detail = str(exc) or type(exc).__name__
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (_SQLITE_READONLY, _SQLITE_PERM):
        return BackendUnavailableError(
            f"index {location} is read-only ({detail})",
            hint="make the file and its directory writable for this user, "
            "or give another index location",
        )
    if primary == _SQLITE_FULL:
        return BackendUnavailableError(
            f"index {location}: the disk is full ({detail})",
            hint="free some disk space and run the command again; the failed change was "
            "rolled back, nothing was half-written",
        )
    if _MISSING_COLUMN.match(detail):
        # Every table's presence is checked on opening (``_check_version``); a column dropped
        # by hand shows only when a statement names it.
        return damaged_index(location, f"a table lacks a column s3idx keeps in it ({detail})")
    if primary in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
        # What s3idx never writes (another file, a damaged one): rebuild-index replaces it.
        return DamagedIndexError(
            f"index {location} is not a usable SQLite database ({detail})",
            hint="move the file away and run rebuild-index to recreate the index from the store",
        )
    if primary == _SQLITE_CANTOPEN:
        return BackendUnavailableError(
            f"cannot open index {location} ({detail})",
            hint="check that the file's directory exists and that you may write to it",
        )
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return TransientError(
            f"index {location} stayed locked by another process for over {BUSY_TIMEOUT_S} s "
            f"({detail})",
            hint="wait for the other s3idx command to finish, then run this one again",
            not_reached=False,  # a file, found and locked: not a server out of reach
        )
    if primary == _SQLITE_IOERR:
        return BackendUnavailableError(
            f"I/O error on index {location} ({detail})",
            hint="check the disk and the file system the index is on",
        )
    if primary is None:
        return S3idxError(f"unexpected SQLite error on index {location}: {detail}")
    return BackendUnavailableError(f"index {location}: {detail}")
