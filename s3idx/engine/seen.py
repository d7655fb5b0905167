"""Remembering which keys a run has seen, to count duplicates, in bounded memory."""

from __future__ import annotations

import sqlite3

from s3idx.limits import batched

_IN_LIMIT = 500  # keys per IN (...): under SQLite's oldest limit of 999 parameters


class SeenKeys:
    """A set of keys kept in a private temporary SQLite file, not in memory.

    An input of millions of lines must not grow the process, so the keys live on disk (SQLite
    keeps only its small page cache in memory) and the file vanishes when closed.
    """

    def __init__(self) -> None:
        # An empty file name makes SQLite create a private temporary file, removed on close.
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        # Each key with the call that first recorded it, to tell which keys an earlier call had.
        # ``unchanged``: the key's first line was counted unchanged (put --skip-unchanged).
        self._db.execute(
            "CREATE TABLE seen(key TEXT PRIMARY KEY, call INTEGER, unchanged INTEGER) WITHOUT ROWID"
        )
        self._db.execute("BEGIN")
        self._pending = 0
        self._calls = 0

    def add_many(self, keys: list[str]) -> tuple[int, set[str]]:
        """Record the keys, in order. Returns how many had been seen before (earlier in the
        list too), and which of them an earlier call had recorded.

        One statement for all of them: a statement per key cost ~12 µs of put's CPU a document.
        The second answer costs a query only when some key came in an earlier call.
        """
        if not keys:  # rowcount of an empty executemany is not the same in every Python
            return 0, set()
        self._calls += 1
        call = self._calls
        cursor = self._db.executemany(
            "INSERT OR IGNORE INTO seen(key, call) VALUES (?, ?)", ((k, call) for k in keys)
        )
        repeated = len(keys) - cursor.rowcount
        earlier: set[str] = set()
        distinct = set(keys)
        if repeated > len(keys) - len(distinct):
            earlier = self._among(distinct, "call < ?", call)
        self._pending += len(keys)
        if self._pending >= 10_000:
            self._db.execute("COMMIT")
            self._db.execute("BEGIN")
            self._pending = 0
        return repeated, earlier

    def mark_unchanged(self, keys: list[str]) -> None:
        """Remember that these keys (recorded already) were counted unchanged."""
        self._db.executemany("UPDATE seen SET unchanged = 1 WHERE key = ?", ((k,) for k in keys))

    def take_unchanged(self, keys: list[str]) -> set[str]:
        """Which of these keys were counted unchanged; their marks are cleared."""
        found = self._among(set(keys), "unchanged = 1")
        self._db.executemany(
            "UPDATE seen SET unchanged = NULL WHERE key = ?", ((k,) for k in found)
        )
        return found

    def _among(self, keys: set[str], condition: str, *params: object) -> set[str]:
        """Those of ``keys`` whose rows meet ``condition`` (SQL, its ``?`` taking ``params``)."""
        found: set[str] = set()
        for part in batched(keys, _IN_LIMIT):
            marks = ",".join("?" * len(part))
            sql = f"SELECT key FROM seen WHERE {condition} AND key IN ({marks})"
            found.update(row[0] for row in self._db.execute(sql, (*params, *part)))
        return found

    def close(self) -> None:
        self._db.close()
