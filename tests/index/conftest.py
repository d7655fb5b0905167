"""Index fixtures: every index backend in turn, behind the same ``Index`` protocol.

A *kind* is a name mapped to an opener factory: ``factory(request, tmp_path)`` is a context
manager yielding ``open_index()``, which opens a new handle on one and the same empty index (so
a test can reopen it as another process would). Everything the factory set up is removed when
the test ends. To add a kind, add one line to ``INDEX_KINDS`` (and import its class), e.g.::

    "sqlite": lambda request, tmp_path: handles(lambda: SqliteIndex(tmp_path / "index.sqlite3")),
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest

from s3idx.errors import S3idxError
from s3idx.index.base import Index
from s3idx.index.mongo import MongoIndex
from s3idx.index.sqlite import SqliteIndex
from tests.helpers import real_mongo_database

Opener = Callable[[], Index]
IndexFactory = Callable[[pytest.FixtureRequest, Path], AbstractContextManager[Opener]]


@dataclass
class Handles:
    """Opens handles with ``make``; ``make`` itself is picklable (a ``partial`` of the class)
    where another process can reach the index, so a test can open it there too."""

    make: Callable[[], Index]
    opened: list[Index] = field(default_factory=list)

    def __call__(self) -> Index:
        self.opened.append(self.make())
        return self.opened[-1]


@contextmanager
def handles(make: Callable[[], Index]) -> Iterator[Handles]:
    """An opener over ``make`` that closes every handle it opened when the test ends."""
    opener = Handles(make)
    try:
        yield opener
    finally:
        for index in opener.opened:
            index.close()


@contextmanager
def _mongomock_kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    client = request.getfixturevalue("mongomock_client")
    with handles(lambda: MongoIndex("mongodb://localhost/test", "test", client=client)) as opener:
        yield opener


def _real_mongo_kind(kind: str) -> IndexFactory:
    """FerretDB or the real MongoDB: a fresh database per test, dropped after it."""

    @contextmanager
    def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
        with real_mongo_database(kind, request) as server:
            make = partial(
                MongoIndex, server.uri, server.database, server_selection_timeout_ms=5000
            )
            with handles(make) as opener:
                yield opener

    return factory


@contextmanager
def _sqlite_kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    with handles(partial(SqliteIndex, tmp_path / "index.sqlite3")) as opener:
        yield opener


INDEX_KINDS: dict[str, IndexFactory] = {
    "sqlite": _sqlite_kind,
    "mongomock": _mongomock_kind,
    "ferretdb": _real_mongo_kind("ferretdb"),
    "mongodb": _real_mongo_kind("mongodb"),
}

# Where a kind is known to differ from MongoDB's semantics, which the suite pins. A test that
# meets a gap is expected to fail there (strictly: the day the gap closes, the test says so).
KNOWN_GAPS: dict[str, dict[str, str]] = {
    "mongomock": {
        "bool-is-not-number": "mongomock 4.3 lets {'flag': 1} match true; MongoDB does not",
        "type-codes": "mongomock 4.3 takes $type aliases only: every number is 'not a valid $type'",
        "regex-unicode-types": "mongomock matches $regex with Python's re: Unicode \\w and \\d "
        "and no POSIX classes, where MongoDB's PCRE has ASCII-only ones",
        "array-sort": "mongomock 4.3 does not sort by MongoDB's sort keys through arrays "
        "(smallest ascending, largest descending, an empty array first)",
        "arrays": "mongomock 4.3 answers $not, $exists: false, $all: [] and some $type "
        "conditions through arrays unlike MongoDB",
    },
    "ferretdb": {
        "nested-arrays": "FerretDB v1 cannot store arrays inside arrays; s3idx refuses such "
        "entries there with a clear error (tests/index/test_ferretdb.py)",
        "elemMatch": "FerretDB v1 answers $elemMatch wrongly (the document form matches "
        "nothing); s3idx refuses $elemMatch there (tests/index/test_ferretdb.py)",
        "document-operands": "FerretDB v1 never compares a document operand with the documents "
        "an array holds ({'b': {'c': 1}} misses {'b': [{'c': 1}]}); s3idx refuses document "
        "operands there (tests/index/test_ferretdb.py)",
        "dotted-null": "FerretDB v1 compares a dotted path through an array of documents with "
        "null wrongly; s3idx refuses such comparisons there",
    },
}
# Where s3idx refuses what a kind cannot do, its gaps must fail with that refusal, not otherwise.
GAP_FAILURES: dict[str, type[BaseException]] = {"ferretdb": S3idxError}


class Tamper(Protocol):
    """Changes what an index holds behind its back, as a user editing the SQLite file or the
    MongoDB collections by hand would: what s3idx never writes, to see how it is read back."""

    def drop_key_field(self, key: str) -> None:
        """The entry of ``key`` loses its key field."""

    def set_key_field(self, key: str, value: Any) -> None:
        """The entry of ``key`` holds ``value`` in its key field."""

    def spoil_bookkeeping(self, key: str, name: str) -> None:
        """The bookkeeping item ``name`` (etag, size, sha256, codec) of ``key`` gets a value of
        a type s3idx never writes there."""

    def set_setting(self, name: str, value: Any) -> None:
        """The recorded setting ``name`` (key_field, fields, pending) becomes ``value``: a str
        as it is, anything else as the backend stores such a value."""

    def spoil_journal(self, key: str) -> Any:
        """A delete journal record for ``key`` whose ETag is of a wrong type; returns it."""

    def spoil_rebuild_state(self) -> None:
        """A record of a rebuild in progress that s3idx cannot have written."""

    def earlier_put_journal(self, records: dict[str, tuple[str, str]]) -> None:
        """The put journal as the previous layout wrote it: one record per key
        (key -> (etag, run)), no heartbeat."""


class SqliteTamper:
    # Each column's own wrong type: TEXT columns turn numbers into text, so a BLOB it is.
    _GARBAGE: ClassVar[dict[str, Any]] = {
        "etag": b"\x00",
        "size": "abc",
        "sha256": b"\x01",
        "codec": b"\x02",
    }
    _META: ClassVar[dict[str, str]] = {
        "key_field": "key_field",
        "fields": "fields",
        "pending": "pending_fields",
        "store": "store",
    }

    def __init__(self, index: SqliteIndex) -> None:
        self.path = index.path

    def _execute(self, sql: str, params: tuple[Any, ...]) -> None:
        with closing(sqlite3.connect(self.path)) as conn, conn:
            assert conn.execute(sql, params).rowcount == 1, (sql, params)

    def _entry(self, key: str) -> dict[str, Any]:
        with closing(sqlite3.connect(self.path)) as conn:
            row = conn.execute("SELECT entry FROM entries WHERE key = ?", (key,)).fetchone()
        return dict(json.loads(row[0]))

    def _write(self, key: str, entry: dict[str, Any]) -> None:
        self._execute("UPDATE entries SET entry = ? WHERE key = ?", (json.dumps(entry), key))

    def drop_key_field(self, key: str) -> None:
        entry = self._entry(key)
        del entry["fs_id"]
        self._write(key, entry)

    def set_key_field(self, key: str, value: Any) -> None:
        self._write(key, {**self._entry(key), "fs_id": value})

    def spoil_bookkeeping(self, key: str, name: str) -> None:
        self._execute(f"UPDATE entries SET {name} = ? WHERE key = ?", (self._GARBAGE[name], key))

    def set_setting(self, name: str, value: Any) -> None:
        text = value if isinstance(value, str) else json.dumps(value)
        self._execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (self._META[name], text),
        )

    def spoil_journal(self, key: str) -> Any:
        self._execute("INSERT INTO delete_journal (key, etag) VALUES (?, ?)", (key, b"\x00"))
        return b"\x00"

    def spoil_rebuild_state(self) -> None:
        with closing(sqlite3.connect(self.path)) as conn, conn:
            conn.executescript(
                "CREATE TABLE entries_rebuild (key); CREATE TABLE entry_values_rebuild (key);"
                "INSERT INTO meta (name, value) VALUES ('rebuild', '{\"key_field\": 5}')"
            )

    def earlier_put_journal(self, records: dict[str, tuple[str, str]]) -> None:
        with closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute("DROP TABLE IF EXISTS put_journal")
            conn.execute(
                "CREATE TABLE put_journal "
                "(key TEXT PRIMARY KEY NOT NULL, etag TEXT NOT NULL, run TEXT NOT NULL)"
            )
            conn.executemany(
                "INSERT INTO put_journal (key, etag, run) VALUES (?, ?, ?)",
                [(key, etag, run) for key, (etag, run) in records.items()],
            )


class MongoTamper:
    _GARBAGE: ClassVar[dict[str, Any]] = {"etag": 5, "size": "abc", "sha256": 7, "codec": None}

    def __init__(self, index: MongoIndex) -> None:
        self._c = index._c

    def drop_key_field(self, key: str) -> None:
        assert self._c.live.update_one({"_id": key}, {"$unset": {"fs_id": ""}}).modified_count

    def set_key_field(self, key: str, value: Any) -> None:
        assert self._c.live.update_one({"_id": key}, {"$set": {"fs_id": value}}).modified_count

    def spoil_bookkeeping(self, key: str, name: str) -> None:
        change = {"$set": {f"_s3idx.{name}": self._GARBAGE[name]}}
        assert self._c.live.update_one({"_id": key}, change).modified_count

    def set_setting(self, name: str, value: Any) -> None:
        if name == "store":  # a document of its own
            self._c.meta.update_one({"_id": self._c.store_id}, {"$set": {name: value}})
            return
        self._c.meta.update_one({"_id": self._c.name}, {"$set": {name: value}})

    def spoil_journal(self, key: str) -> Any:
        self._c.journal.insert_one({"_id": key, "etag": 5})
        return 5

    def spoil_rebuild_state(self) -> None:
        self._c.meta.insert_one({"_id": self._c.name + "__rebuild", "key_field": 5, "run": 3})

    def earlier_put_journal(self, records: dict[str, tuple[str, str]]) -> None:
        self._c.puts.insert_many(
            [{"_id": key, "etag": etag, "run": run} for key, (etag, run) in records.items()]
        )


def tamper_with(index: Index) -> Tamper:
    """A ``Tamper`` for ``index``, whatever its kind."""
    if isinstance(index, SqliteIndex):
        return SqliteTamper(index)
    assert isinstance(index, MongoIndex)
    return MongoTamper(index)


@pytest.fixture(params=list(INDEX_KINDS))
def index_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_index(index_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens handles on one empty index of the current kind."""
    with INDEX_KINDS[index_kind](request, tmp_path) as opener:
        yield opener


@pytest.fixture
def index(open_index: Opener) -> Index:
    """An empty index of each kind in turn."""
    return open_index()


@pytest.fixture
def known_gap(index_kind: str, request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``known_gap(name)``: this test is expected to fail on kinds that have that gap."""

    def mark(name: str) -> None:
        reason = KNOWN_GAPS.get(index_kind, {}).get(name)
        if reason is not None:
            raises = GAP_FAILURES.get(index_kind)
            request.applymarker(pytest.mark.xfail(reason=reason, strict=True, raises=raises))

    return mark
