"""An index changed by hand (what s3idx never writes) is named as damaged, exit 5, with
rebuild-index as the way out, by every command that reads the damaged part; and rebuild-index
does get the index back.

The damage is done as a user would do it: SQL on the SQLite file, updates on the MongoDB
collections. The index protocol's own damage tests are in tests/index/test_index_conformance.py.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from s3idx.errors import REBUILD_DAMAGED_HINT, ExitStatus
from tests.helpers import Run, jsonl

DOCS = jsonl(
    {"fs_id": "a", "n": 1, "t": "x"},
    {"fs_id": "b", "n": 2, "t": ["y", "z"]},
    {"fs_id": "c", "n": 3, "t": "x"},
)
MOVE_AWAY_HINT = (
    "move the file away, then run s3idx rebuild-index (with the same --store and --index) to "
    "rebuild the index from the bucket"
)
RESTART_HINT = (
    "start the rebuild afresh: run rebuild-index without --resume (with --shard, add --restart)"
)

# Commands by what they read. `get` reads the store alone.
ENTRY_READERS: list[tuple[str, ...]] = [
    ("query",),
    ("query", "--full"),
    ("query", "--sort", "-n"),
    ("query", '{"n": 2}'),
    ("query", "--fields", "t"),
    ("verify",),
]
BOOKKEEPING_READERS = [*ENTRY_READERS, ("sync",), ("sync", "--check")]
ALL_READERS: list[tuple[str, ...]] = [
    ("query",),
    ("query", "--count"),
    ("query", "--full"),
    ("query", '{"t": "y"}', "--count"),
    ("delete", "b"),
    ("info",),
    ("sync",),
    ("sync", "--check"),
    ("verify",),
    ("reindex",),
    ("put",),
]

# name: (SQL, what is wrong as the message says it, the commands that must say so)
DAMAGE: dict[str, tuple[str, str, list[tuple[str, ...]]]] = {
    "entry not an object": (
        "UPDATE entries SET entry = '[1, 2]' WHERE key = 'b'",
        "entry 'b' is not a JSON object: '[1, 2]'",
        ENTRY_READERS,
    ),
    "entry of another key": (
        """UPDATE entries SET entry = '{"fs_id": "zz", "n": 2}' WHERE key = 'b'""",
        "entry 'b' holds 'zz' in its key field 'fs_id', not its key",
        ENTRY_READERS,
    ),
    "entry without its key": (
        """UPDATE entries SET entry = '{"n": 2}' WHERE key = 'b'""",
        "entry 'b' lacks its key field 'fs_id'",
        ENTRY_READERS,
    ),
    "entry with a bad date": (
        """UPDATE entries SET entry = '{"fs_id": "b", "d": {"$date": "soon"}}' WHERE key = 'b'""",
        "entry 'b' is not valid JSON (invalid $date value: 'soon' (expected ISO-8601))",
        ENTRY_READERS,
    ),
    "entry stored as a blob": (
        "UPDATE entries SET entry = X'00' WHERE key = 'b'",
        "entry 'b' is not stored as JSON text: b'\\x00'",
        ENTRY_READERS,
    ),
    "size not a number": (
        "UPDATE entries SET size = 'abc' WHERE key = 'b'",
        "entry 'b' has damaged _s3idx bookkeeping: size 'abc' is not a number of bytes",
        BOOKKEEPING_READERS,
    ),
    "etag a blob": (
        "UPDATE entries SET etag = X'00' WHERE key = 'b'",
        "entry 'b' has damaged _s3idx bookkeeping: etag b'\\x00' is not a non-empty string",
        [*BOOKKEEPING_READERS, ("delete", "b")],
    ),
    "fields garbage": (
        "UPDATE meta SET value = 'garbage' WHERE name = 'fields'",
        "its recorded fields are not a list of field paths: 'garbage'",
        ALL_READERS,
    ),
    "fields a number": (
        "UPDATE meta SET value = 5 WHERE name = 'fields'",
        "its recorded fields are not a list of field paths: 5",
        ALL_READERS,
    ),
    "fields missing": (
        "DELETE FROM meta WHERE name = 'fields'",
        "its recorded fields are not a list of field paths: None",
        ALL_READERS,
    ),
    "key field missing": (
        "DELETE FROM meta WHERE name = 'key_field'",
        "it holds entries but no key field ('key_field' in its meta table)",
        ALL_READERS,
    ),
    "pending fields garbage": (
        "INSERT INTO meta (name, value) VALUES ('pending_fields', '[[1, \"n\"]]')",
        "its recorded pending fields are not a list of fields with their entry counts: [[1, 'n']]",
        ALL_READERS,
    ),
    "multikey garbage": (
        "UPDATE meta SET value = 'garbage' WHERE name = 'multikey'",
        "its 'multikey' setting is not a list of field paths: 'garbage'",
        [("query",), ("query", "--count"), ("info",), ("put",)],
    ),
    "side table dropped": (
        "DROP TABLE entry_values",
        "its table entry_values is missing",
        ALL_READERS,
    ),
    "journal dropped": (
        "DROP TABLE delete_journal",
        "its table delete_journal is missing",
        ALL_READERS,
    ),
    "column dropped": (
        "DROP INDEX entry_values_lookup_0; ALTER TABLE entry_values DROP COLUMN tclass",
        "a table lacks a column s3idx keeps in it (no such column: tclass)",
        [("query", '{"n": 2}'), ("query", '{"t": "y"}', "--count")],
    ),
    "journal row of a blob": (
        "INSERT INTO delete_journal (key, etag) VALUES ('b', X'00')",
        "its delete journal holds 'b' -> b'\\x00', not a key and an ETag",
        [("delete", "b"), ("sync",), ("sync", "--check"), ("verify",)],
    ),
}


@pytest.fixture
def where(tmp_path: Path) -> tuple[Path, list[str]]:
    index = tmp_path / "idx.sqlite3"
    return index, ["--store", str(tmp_path / "store"), "--index", str(index)]


def _put(run: Run, options: list[str]) -> None:
    assert run("put", "--field", "n", "--field", "t", *options, input=DOCS).exit_code == 0


def _tamper(index: Path, sql: str) -> None:
    with closing(sqlite3.connect(index)) as conn, conn:
        conn.executescript(sql)


def _invoke(run: Run, command: tuple[str, ...], options: list[str]) -> Any:
    stdin = jsonl({"fs_id": "d", "n": 4}) if command[0] == "put" else None
    return run(*command, *options, input=stdin)


def _says_damaged(result: Any, index: Path, what: str, hint: str, command: Any) -> None:
    assert result.exit_code == ExitStatus.UNAVAILABLE == 5, (command, result.stderr)
    # verify and sync print their summary first; the error closes stderr.
    assert result.stderr.endswith(
        f"s3idx: error: index {index} is damaged: {what}\n  hint: {hint}\n"
    ), (command, result.stderr)
    assert "internal error" not in result.stderr


@pytest.mark.parametrize("damage", DAMAGE)
def test_each_command_reading_damage_names_it_and_rebuild_index_repairs_it(
    run: Run, where: tuple[Path, list[str]], damage: str
) -> None:
    index, options = where
    _put(run, options)
    sql, what, readers = DAMAGE[damage]
    _tamper(index, sql)
    for command in readers:
        _says_damaged(_invoke(run, command, options), index, what, REBUILD_DAMAGED_HINT, command)

    rebuilt = run("rebuild-index", *options)
    assert rebuilt.exit_code == 0, rebuilt.stderr
    assert run("verify", *options).exit_code == 0
    for command in readers:
        result = _invoke(run, command, options)
        assert result.exit_code == 0, (command, result.stderr)
    # The commands did their work once the index was rebuilt: put added d, delete removed b.
    expected = 3 + (("put",) in readers) - (("delete", "b") in readers)
    assert run("query", "--count", *options).stdout == f"{expected}\n"


def test_the_example_of_the_report_query_and_info(run: Run, where: tuple[Path, list[str]]) -> None:
    index, options = where
    _put(run, options)
    _tamper(index, "UPDATE entries SET entry = '{x' WHERE key = 'a'")
    query = run("query", *options)
    assert query.exit_code == 5
    assert query.stderr.startswith(
        f"s3idx: error: index {index} is damaged: entry 'a' is not valid JSON ("
    )
    _tamper(index, "UPDATE meta SET value = 'garbage' WHERE name = 'fields'")
    info = run("info", "--json", *options)
    assert info.exit_code == 5
    assert '"index_status":"damaged"' in info.stdout


SCHEMA_DAMAGE = {
    "schema version garbage": (
        "UPDATE meta SET value = 'garbage' WHERE name = 'schema_version'",
        "its schema version is 'garbage', not a number",
    ),
    "schema version missing": (
        "DELETE FROM meta WHERE name = 'schema_version'",
        "its schema version is missing",
    ),
    "meta table dropped": ("DROP TABLE meta", "its meta table is missing"),
    "meta column dropped": (
        "ALTER TABLE meta RENAME COLUMN value TO v",
        "its meta table is not s3idx's (no such column: value)",
    ),
}


@pytest.mark.parametrize("damage", SCHEMA_DAMAGE)
def test_a_damaged_schema_is_moved_away_then_rebuilt(
    run: Run, where: tuple[Path, list[str]], damage: str
) -> None:
    """What a rebuild cannot repair in place (the file's own schema) says to move it away."""
    index, options = where
    _put(run, options)
    sql, what = SCHEMA_DAMAGE[damage]
    _tamper(index, sql)
    for command in [*ALL_READERS, ("rebuild-index",)]:
        _says_damaged(_invoke(run, command, options), index, what, MOVE_AWAY_HINT, command)

    shutil.move(index, index.with_suffix(".damaged"))
    assert run("rebuild-index", *options).exit_code == 0
    assert run("query", "--count", *options).stdout == "3\n"
    assert run("verify", *options).exit_code == 0


def test_a_damaged_rebuild_record_is_discarded_by_a_fresh_rebuild(
    run: Run, where: tuple[Path, list[str]]
) -> None:
    index, options = where
    _put(run, options)
    _tamper(
        index,
        "CREATE TABLE entries_rebuild (key); CREATE TABLE entry_values_rebuild (key);"
        "INSERT INTO meta (name, value) VALUES ('rebuild', 'garbage')",
    )
    what = "its record of a rebuild in progress cannot be read: 'garbage'"
    for command in [("info",), ("rebuild-index", "--resume")]:
        _says_damaged(_invoke(run, command, options), index, what, RESTART_HINT, command)
    assert run("query", "--count", *options).stdout == "3\n"  # the live index is not damaged

    assert run("rebuild-index", *options).exit_code == 0
    assert run("info", *options).exit_code == 0
    assert run("query", "--count", *options).stdout == "3\n"


def test_rebuild_index_repairs_what_its_start_reads(
    run: Run, where: tuple[Path, list[str]]
) -> None:
    """The generation (which names the side table's indexes) and a shard's record garbage:
    nothing but a rebuild reads them, and it replaces them."""
    index, options = where
    _put(run, options)
    _tamper(
        index,
        "UPDATE meta SET value = 'garbage' WHERE name = 'generation';"
        "INSERT INTO meta (name, value) VALUES ('rebuild_shards', 'garbage');"
        "DROP TABLE changes",
    )
    rebuilt = run("rebuild-index", *options)
    assert rebuilt.exit_code == 0, rebuilt.stderr
    assert run("rebuild-index", *options).exit_code == 0  # and again: no index name clashes
    assert run("query", '{"t": "y"}', *options).stdout.count("\n") == 1
    assert run("verify", *options).exit_code == 0


def test_a_damaged_mongodb_entry_is_named_with_exit_5(
    run: Run, tmp_path: Path, mongomock_server: Any
) -> None:
    options = ["--store", str(tmp_path / "store"), "--index", "mongodb://localhost/db"]
    _put(run, options)
    mongomock_server["db"]["s3idx"].update_one({"_id": "b"}, {"$set": {"fs_id": 5}})
    location = "mongodb://localhost/db (collection s3idx)"
    what = "entry 'b' holds 5 in its key field 'fs_id', not its key"
    for command in [("query",), ("query", "--full"), ("query", "--sort", "-n")]:
        result = _invoke(run, command, options)
        assert result.exit_code == 5, (command, result.stderr)
        assert result.stderr == (
            f"s3idx: error: index {location} is damaged: {what}\n  hint: {REBUILD_DAMAGED_HINT}\n"
        )
    assert run("rebuild-index", *options).exit_code == 0
    assert run("query", "--count", '{"fs_id": "b"}', *options).stdout == "1\n"


# Search rows out of step with their entries: every query reads them, and none can tell; verify
# compares them with the entries it reads, as it compares the entries with the objects.
SEARCH_ROW_DAMAGE = {
    "rows of an entry removed": ("DELETE FROM entry_values WHERE key = 'a'", "a", "n, t"),
    "a value changed": (
        "UPDATE entry_values SET value = 9 WHERE key = 'c' AND field = 'n'",
        "c",
        "n",
    ),
    "a row added": (
        "INSERT INTO entry_values (field, tclass, value, key) SELECT field, tclass, 'q', key "
        "FROM entry_values WHERE key = 'a' AND field = 't'",
        "a",
        "t",
    ),
    "a row of a field not indexed": (
        "INSERT INTO entry_values (field, tclass, value, key) SELECT 'zz', tclass, value, key "
        "FROM entry_values WHERE key = 'b' AND field = 'n'",
        "b",
        "zz",
    ),
}


@pytest.mark.parametrize("damage", SEARCH_ROW_DAMAGE)
def test_search_rows_out_of_step_with_their_entry_are_damage_verify_finds(
    run: Run, where: tuple[Path, list[str]], damage: str
) -> None:
    index, options = where
    _put(run, options)
    sql, key, fields = SEARCH_ROW_DAMAGE[damage]
    _tamper(index, sql)

    verify = run("verify", *options)

    assert verify.exit_code == ExitStatus.DAMAGED, verify.stdout + verify.stderr
    assert verify.stdout == (
        f"damaged\t{key}\tindex's search rows differ from its entry in {fields}, so queries on "
        "them answer wrong (run s3idx rebuild-index)\n"
    )
    assert run("rebuild-index", *options).exit_code == 0
    assert run("verify", *options).exit_code == 0
    assert run("query", '{"n": 1}', "--count", *options).stdout == "1\n"
    assert run("query", '{"t": "q"}', "--count", *options).stdout == "0\n"
