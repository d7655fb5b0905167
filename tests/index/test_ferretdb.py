"""What s3idx does where FerretDB v1 differs from MongoDB: refusals with clear messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo import monitoring

from s3idx.errors import ExitStatus, UsageError
from s3idx.index.mongo import MongoIndex
from tests.helpers import MongoServer, Run, jsonl, real_mongo_database, with_database


@pytest.fixture
def ferretdb(request: pytest.FixtureRequest) -> Iterator[MongoServer]:
    with real_mongo_database("ferretdb", request) as server:
        yield server


def test_put_rejects_lines_ferretdb_cannot_index_before_storing_them(
    run: Run, ferretdb: MongoServer, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        jsonl(
            {"fs_id": "ok", "grid": [1, 2], "meta": {"a": 1}},
            {"fs_id": "nested", "grid": [[1, 2], [3]]},
            {"fs_id": "dotted", "meta": {"a.b": 1}},
            {"fs_id": "dollar", "meta": {"x": [{"$y": 1}]}},
        )
    )
    args = ["--store", str(tmp_path / "store"), "--index", ferretdb.uri]
    result = run("put", str(source), *args, "--field", "grid", "--field", "meta", "--json")

    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["stored"], summary["rejected"], summary["not_indexed"]) == (1, 3, 0)
    assert f"{source}:2: field 'grid' holds an array inside an array, which FerretDB" in (
        result.stderr
    )
    assert f"{source}:3: field 'meta' holds the name 'a.b'" in result.stderr
    assert f"{source}:4: field 'meta.x' holds the name '$y'" in result.stderr
    assert run("sync", *args, "--check").exit_code == 0  # nothing stored without its entry


def test_elem_match_is_refused_on_ferretdb_with_the_reason(
    run: Run, ferretdb: MongoServer, tmp_path: Path
) -> None:
    args = ["--store", str(tmp_path / "store"), "--index", ferretdb.uri]
    put = run("put", *args, "--field", "arr", input=jsonl({"fs_id": "a", "arr": [{"v": 2}]}))
    assert put.exit_code == 0, put.stderr
    for command in (("query",), ("query", "--count"), ("delete", "--filter")):
        result = run(*command, '{"arr": {"$elemMatch": {"v": 2}}}', *args)
        assert result.exit_code == ExitStatus.USAGE, (command, result.stderr)
        assert "$elemMatch is refused on FerretDB" in result.stderr
    assert run("query", '{"arr.v": 2}', "--count", *args).stdout == "1\n"


def test_rebuild_names_the_entry_ferretdb_cannot_store(
    run: Run, ferretdb: MongoServer, tmp_path: Path
) -> None:
    store = ["--store", str(tmp_path / "store")]
    sqlite = [*store, "--index", str(tmp_path / "i.sqlite3")]
    put = run("put", *sqlite, "--field", "grid", input=jsonl({"fs_id": "g", "grid": [[1]]}))
    assert put.exit_code == 0, put.stderr

    result = run("rebuild-index", *store, "--index", ferretdb.uri)
    assert result.exit_code == ExitStatus.ERROR
    assert "entry 'g': field 'grid' holds an array inside an array, which FerretDB cannot" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_database_name_ferretdb_refuses_is_a_usage_error(
    run: Run, ferretdb: MongoServer, tmp_path: Path
) -> None:
    # MongoDB takes "dé"; FerretDB v1 takes [A-Za-z0-9_-] only and answers InvalidNamespace.
    index = with_database(ferretdb.uri, "dé")
    result = run("put", "--store", str(tmp_path / "st"), "--index", index, input=b"")
    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert "refused the name of mongodb://" in result.stderr
    assert "/dé (collection s3idx): Invalid namespace specified 'dé." in result.stderr


def test_a_refused_login_names_the_location_without_the_password(
    run: Run, ferretdb: MongoServer
) -> None:
    # FerretDB v1 without authentication refuses every mechanism a password asks for.
    host = ferretdb.uri.split("://", 1)[1].split("/", 1)[0]
    index = f"mongodb://u:s3cr3tpw@{host}/{ferretdb.database}"
    result = run("query", "{}", "--index", index)
    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert (
        f"MongoDB at {host} refused access while reading the settings of "
        f"mongodb://u:***@{host}/{ferretdb.database} (collection s3idx): "
    ) in result.stderr
    assert "s3cr3tpw" not in result.stdout + result.stderr


# FerretDB v1 compares a document operand with the field itself only, never with the documents
# an array holds: {"b": {"c": 1}} misses {"b": [{"c": 1}, 5]}, so {"b": {"$ne": {"c": 1}}}
# matches it, and `delete --filter` would delete a document MongoDB and SQLite keep.
DOCUMENT_OPERANDS = [
    {"b": {"c": 1}},
    {"b": {"$eq": {"c": 1}}},
    {"b": {"$ne": {"c": 1}}},
    {"b": {"$in": [5, {"c": 1}]}},
    {"b": {"$nin": [{"c": 1}]}},
    {"b": {"$all": [{"c": 1}]}},
    {"b": {"$not": {"$eq": {"c": 1}}}},
    {"$nor": [{"b": {"c": 1}}]},
    {"$or": [{"n": 1}, {"$and": [{"b": {"c": 1}}]}]},
    {"b.c": {"d": 1}},
]


def test_a_document_operand_is_refused_on_ferretdb_with_the_reason(
    run: Run, ferretdb: MongoServer, tmp_path: Path
) -> None:
    args = ["--store", str(tmp_path / "store"), "--index", ferretdb.uri]
    docs = jsonl({"fs_id": "y", "b": {"c": 1}}, {"fs_id": "z", "b": [{"c": 1}, 5]})
    put = run("put", *args, "--field", "b", "--field", "n", input=docs)
    assert put.exit_code == 0, put.stderr
    for flt in DOCUMENT_OPERANDS:
        for command in (("query",), ("query", "--count"), ("delete", "--filter")):
            result = run(*command, orjson.dumps(flt).decode(), *args)
            assert result.exit_code == ExitStatus.USAGE, (flt, command, result.stderr)
            assert "a document to compare with is refused on FerretDB (mongodb://" in (
                result.stderr
            )
            assert (
                "(collection s3idx)): FerretDB v1 does not compare it with the documents an "
                "array holds, so the answer could be wrong"
            ) in result.stderr
            assert "dotted path" in result.stderr
    assert run("query", "--count", *args).stdout == "2\n"  # nothing was deleted
    # What FerretDB answers rightly is still answered: dotted paths, arrays, dates.
    for flt, count in [
        ('{"b.c": 1}', 2),
        ('{"b": [{"c": 1}, 5]}', 1),
        ('{"b": {"$ne": [{"c": 1}, 5]}}', 1),
        ('{"b": {"$gt": {"c": 0}}}', 2),
        ('{"b": {"$date": "2020-01-01T00:00:00Z"}}', 0),
    ]:
        result = run("query", flt, "--count", *args)
        assert (result.exit_code, result.stdout) == (0, f"{count}\n"), (flt, result.stderr)


class _Updates(monitoring.CommandListener):
    """The filters of the update commands sent while ``recording`` (pymongo has no way to
    unregister a listener: it stays, idle, for the rest of the session)."""

    def __init__(self) -> None:
        self.recording = False
        self.filters: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.recording and event.command_name == "update":
            self.filters.extend(dict(u["q"]) for u in event.command["updates"])

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_UPDATES = _Updates()
monitoring.register(_UPDATES)


def test_put_rewrites_existing_entries_by_id_alone(
    run: Run, ferretdb: MongoServer, tmp_path: Path
) -> None:
    """FerretDB v1 scans the whole collection for a replace filtered on {_id, ETag}: a put
    that rewrote existing keys of a 20,000-entry index stalled for minutes (under 1 doc/s).
    The compare-and-set replaces by _id under the key's lock, which compared the ETag."""
    args = ["--store", str(tmp_path / "store"), "--index", ferretdb.uri, "--field", "n"]
    first = jsonl(*({"fs_id": f"k{i:03d}", "n": i} for i in range(200)))
    assert run("put", *args, input=first).exit_code == 0

    again = jsonl(*({"fs_id": f"k{i:03d}", "n": -i} for i in range(0, 200, 10)))
    _UPDATES.recording, _UPDATES.filters = True, []
    try:
        result = run("put", *args, "--json", input=again)
    finally:
        _UPDATES.recording = False

    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["stored"] == 20
    assert run("query", '{"n": {"$lt": 0}}', "--count", *args[:4]).stdout == "19\n"
    replaces = [f for f in _UPDATES.filters if f.get("_id", "").startswith("k")]
    assert sorted(f["_id"] for f in replaces) == [f"k{i:03d}" for i in range(0, 200, 10)]
    assert all(set(f) == {"_id"} for f in replaces), replaces


def test_a_resumed_rebuild_inserts_new_keys_and_replaces_only_those_written_again(
    ferretdb: MongoServer,
) -> None:
    """FerretDB scans the collection for each upsert of a new key, so a resumed rebuild that
    upserted into its half-filled staging collection crawled (3,000 objects: 164 s, against
    24 s with inserts into a fresh collection). New keys are inserted now; only the keys the
    resume writes again (those after its last checkpoint) are replaced."""
    from s3idx.index.base import IndexSettings
    from s3idx.index.mongo import MongoIndex

    def batch(start: int, stop: int) -> list[dict[str, Any]]:
        return [{"id": f"k{i:05}", "n": i, "_s3idx": {"etag": "e"}} for i in range(start, stop)]

    index = MongoIndex(ferretdb.uri, ferretdb.database)
    try:
        index.configure("id", ["n"])
        first = index.start_rebuild("id")
        for start in range(0, 300, 100):
            first.upsert(batch(start, start + 100))
        resumed = index.start_rebuild("id", resume=True)  # after a kill -9: the same run
        _UPDATES.recording, _UPDATES.filters = True, []
        try:
            for start in range(250, 550, 100):  # 50 keys written again, 250 new
                resumed.upsert(batch(start, start + 100))
        finally:
            _UPDATES.recording = False
        resumed.commit(IndexSettings("id", ("n",)))
        assert index.count() == 550
    finally:
        index.close()
    replaced = sorted(f["_id"] for f in _UPDATES.filters if str(f.get("_id")).startswith("k"))
    assert replaced == [f"k{i:05}" for i in range(250, 300)]


@pytest.mark.parametrize(
    ("name", "as_key"),
    [('q"x', False), ("q\\x", False), ('meta.q"x', False), ('q"x', True), ("q\\x", True)],
)
def test_a_field_name_with_a_quote_or_backslash_is_refused_before_anything_is_recorded(
    run: Run, ferretdb: MongoServer, tmp_path: Path, name: str, as_key: bool
) -> None:
    # FerretDB v1 builds SQL from the path of an index: such a name failed with a raw SQL error
    # (exit 1) after it was recorded, and every later put failed.
    args = ["--store", str(tmp_path / "store"), "--index", ferretdb.uri]
    document = {"fs_id": "a", "n": 1, "meta": {}}
    where = document if "." not in name else document["meta"]
    where[name.split(".")[-1]] = "v"
    chosen = ["--key", name] if as_key else ["--field", name]
    result = run("put", *args, *chosen, input=jsonl(document))
    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert "FerretDB" in result.stderr and repr(name) in result.stderr, result.stderr
    # Nothing was recorded: the index still takes a put.
    again = run("put", *args, "--field", "n", input=jsonl({"fs_id": "b", "n": 2}))
    assert again.exit_code == 0, again.stderr
    assert run("query", '{"n": 2}', "--count", *args).stdout == "1\n"


def test_an_entry_holding_a_name_with_a_quote_is_stored_and_found(
    run: Run, ferretdb: MongoServer, tmp_path: Path
) -> None:
    args = ["--store", str(tmp_path / "store"), "--index", ferretdb.uri]
    document = {"fs_id": "a", "meta": {'q"x': 1, "y\\z": [{'"': 2}]}}
    # Only index paths reach FerretDB's SQL; names inside a value are stored as they are.
    put = run("put", *args, "--field", "meta", input=jsonl(document))
    assert put.exit_code == 0, put.stderr
    assert run("query", '{"fs_id": "a"}', "--count", *args).stdout == "1\n"
    found = run("query", '{"meta.q\\"x": 1}', "--count", *args)
    assert found.exit_code in (0, ExitStatus.USAGE), found.stderr
    if found.exit_code == 0:
        assert found.stdout == "1\n"
    again = run("put", *args, "--field", "meta", input=jsonl({"fs_id": "b", "meta": {}}))
    assert again.exit_code == 0, again.stderr


def test_delete_by_a_filter_ferretdb_answered_wrongly_deletes_only_the_matches(
    run: Run, ferretdb: MongoServer, tmp_path: Path
) -> None:
    args = ["--store", str(tmp_path / "store"), "--index", ferretdb.uri]
    documents = [
        {"fs_id": "a", "e": [{"k": 1}, {"k": 2}]},
        {"fs_id": "b", "e": [{"k": 1}]},
        {"fs_id": "c", "e": {"k": 5}},
    ]
    assert run("put", *args, "--field", "e", input=jsonl(*documents)).exit_code == 0
    for bad in ('{"e": {"$exists": "no"}}', '{"e": {"$options": "i"}}', '{"e": {"$mod": [2, 1]}}'):
        refused = run("delete", "--filter", bad, *args)
        assert refused.exit_code == ExitStatus.USAGE, (bad, refused.stderr)
    assert run("query", "{}", "--count", *args).stdout == "3\n"
    deleted = run("delete", "--filter", '{"e.k": {"$ne": 2}}', *args)
    assert deleted.exit_code == 0, deleted.stderr
    left = run("query", "{}", *args)
    assert [orjson.loads(line)["fs_id"] for line in left.stdout.splitlines()] == ["a"]


def test_a_sort_by_a_dotted_path_through_an_array_is_refused_on_ferretdb(
    run: Run, ferretdb: MongoServer, tmp_path: Path
) -> None:
    # FerretDB v1 ordered these b c a d (MongoDB: b d c a), so --limit gave the wrong page.
    args = ["--store", str(tmp_path / "store"), "--index", ferretdb.uri]
    documents = [
        {"fs_id": "a", "e": [{"k": 5}], "m": {"k": 5}},
        {"fs_id": "b", "e": [{"k": 1}], "m": {"k": [1, 9]}},
        {"fs_id": "c", "e": [{"k": 3}], "m": {"k": 3}},
        {"fs_id": "d", "e": {"k": 2}, "m": {"k": 2}},
    ]
    assert run("put", *args, "--field", "e", "--field", "m", input=jsonl(*documents)).exit_code == 0
    refused = run("query", "{}", "--sort", "e.k", "--limit", "2", *args)
    assert refused.exit_code == ExitStatus.USAGE, refused.stderr
    assert "--sort 'e.k' is refused on FerretDB" in refused.stderr
    # A dotted path through documents alone, with an array at its end, is answered.
    found = run("query", "{}", "--sort", "m.k", "--fields", "fs_id", *args)
    assert found.exit_code == 0, found.stderr
    assert [orjson.loads(line)["fs_id"] for line in found.stdout.splitlines()] == list("bdca")


def test_paths_with_a_quote_inside_an_indexed_value_are_answered(
    run: Run, ferretdb: MongoServer, tmp_path: Path
) -> None:
    # Only the paths FerretDB indexes reach its SQL; a filter, sort or projection through such
    # a name inside an indexed value is answered right.
    args = ["--store", str(tmp_path / "store"), "--index", ferretdb.uri]
    documents = [{"fs_id": "a", "meta": {'q"x': 2, "b\\s": 1}}, {"fs_id": "b", "meta": {'q"x': 1}}]
    assert run("put", *args, "--field", "meta", input=jsonl(*documents)).exit_code == 0
    for name, expected in (('meta.q"x', ["b", "a"]), ("meta.b\\s", ["a"])):
        flt = orjson.dumps({name: {"$gte": 1}}).decode()
        assert run("query", flt, "--count", *args).stdout == f"{len(expected)}\n"
        found = run("query", flt, "--sort", name, "--fields", "fs_id", *args)
        assert found.exit_code == 0, found.stderr
        assert [orjson.loads(line)["fs_id"] for line in found.stdout.splitlines()] == expected


def test_a_rebuild_by_a_key_field_ferretdb_cannot_index_is_refused_up_front(
    ferretdb: MongoServer,
) -> None:
    index = MongoIndex(ferretdb.uri, ferretdb.database)
    try:
        with pytest.raises(UsageError, match="--key 'q\"x' cannot be indexed on FerretDB"):
            index.start_rebuild('q"x')
        assert index.rebuild_status() is None
    finally:
        index.close()
