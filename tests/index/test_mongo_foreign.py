"""A MongoDB index location that holds what s3idx cannot or did not write, through the CLI.

- A collection another application owns (documents s3idx never wrote) is not an s3idx index:
  every command refuses it (exit 5, as SQLite refuses a database that is not an s3idx index),
  and neither ``put`` writes into it nor ``rebuild-index`` drops it.
- A field name holding a NUL byte inside an indexed value: BSON cannot encode it (any MongoDB
  server), so ``put`` rejects that line before storing it, as it rejects what FerretDB refuses.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import MongoServer, Run, jsonl

FOREIGN = [{"_id": "x", "name": "ann"}, {"name": "bob", "age": 3}]


def _foreign(server: MongoServer, collection: str = "users") -> None:
    server.client[server.database][collection].insert_many([dict(doc) for doc in FOREIGN])


def _left(server: MongoServer, collection: str = "users") -> list[dict[str, object]]:
    found = server.client[server.database][collection].find({}, {"_id": 0})
    return sorted(found, key=lambda doc: str(doc))


def _refused(result: object, server: MongoServer, collection: str = "users") -> None:
    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr  # type: ignore[attr-defined]
    stderr = result.stderr  # type: ignore[attr-defined]
    assert (
        f"{server.uri} (collection {collection}) holds documents s3idx did not write "
        "(such as _id " in stderr
    )
    assert "it is not an s3idx index" in stderr
    assert "hint: give another --collection (or database) for the index" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "command",
    [
        ("put", "--field", "n"),
        ("rebuild-index",),
        ("sync",),
        ("reindex", "--field", "n"),
        ("query", "{}"),
        ("query", "--count"),
        ("delete", "--filter", "{}", "--all"),
        ("delete", "a"),
        ("verify",),
        ("info",),
    ],
)
def test_another_applications_collection_is_refused_and_left_as_it_was(
    run: Run, mongo_server: MongoServer, tmp_path: Path, command: tuple[str, ...]
) -> None:
    store = ["--store", str(tmp_path / "store")]
    # The store holds documents, so that rebuild-index and sync have entries to write.
    put = run("put", *store, "--index", str(tmp_path / "i.sqlite3"), input=jsonl({"fs_id": "a"}))
    assert put.exit_code == 0, put.stderr
    _foreign(mongo_server)
    before = _left(mongo_server)

    args = [*store, "--index", mongo_server.uri, "--collection", "users"]
    result = run(*command, *args, input=jsonl({"fs_id": "b", "n": 1}))

    _refused(result, mongo_server)
    assert _left(mongo_server) == before


def test_the_refusal_is_one_json_document_with_json(
    run: Run, mongo_server: MongoServer, tmp_path: Path
) -> None:
    _foreign(mongo_server, "s3idx")  # the default collection name
    args = ["--store", str(tmp_path / "store"), "--index", mongo_server.uri, "--json"]
    result = run("put", *args, input=jsonl({"fs_id": "b"}))
    assert result.exit_code == ExitStatus.UNAVAILABLE
    summary = orjson.loads(result.stdout)
    assert summary["exit_status"] == ExitStatus.UNAVAILABLE
    assert "it is not an s3idx index" in summary["error"]
    assert not (tmp_path / "store").exists()  # refused before any object was stored
    assert _left(mongo_server, "s3idx") == sorted(
        ({k: v for k, v in doc.items() if k != "_id"} for doc in FOREIGN), key=str
    )


def test_an_s3idx_collection_beside_another_applications_one_works(
    run: Run, mongo_server: MongoServer, tmp_path: Path
) -> None:
    _foreign(mongo_server)
    args = ["--store", str(tmp_path / "store"), "--index", mongo_server.uri]
    assert run("put", *args, input=jsonl({"fs_id": "a"})).exit_code == 0
    assert run("rebuild-index", *args).exit_code == 0
    assert run("query", "--count", *args).stdout == "1\n"
    assert len(_left(mongo_server)) == len(FOREIGN)


def test_an_index_whose_settings_were_lost_is_still_rebuilt(
    run: Run, mongo_server: MongoServer, tmp_path: Path
) -> None:
    """Entries s3idx wrote, without their settings document: damage rebuild-index repairs,
    not another application's collection."""
    args = ["--store", str(tmp_path / "store"), "--index", mongo_server.uri]
    assert run("put", *args, input=jsonl({"fs_id": "a"}, {"fs_id": "b"})).exit_code == 0
    mongo_server.client[mongo_server.database]["s3idx_meta"].delete_many({})

    result = run("rebuild-index", *args)
    assert result.exit_code == 0, result.stderr
    assert run("query", "--count", *args).stdout == "2\n"


@pytest.mark.parametrize(
    "value",
    [{"a\u0000b": 1}, {"x": [{"\u0000": 1}]}, [{"ok": {"n\u0000": 2}}]],
)
def test_put_rejects_a_field_name_with_a_nul_byte_before_storing_it(
    run: Run, real_mongo_server: MongoServer, tmp_path: Path, value: object
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(jsonl({"fs_id": "ok", "m": {"a": 1}}, {"fs_id": "nul", "m": value}))
    args = ["--store", str(tmp_path / "store"), "--index", real_mongo_server.uri]

    result = run("put", str(source), *args, "--field", "m", "--json")

    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["stored"], summary["rejected"], summary["not_indexed"]) == (1, 1, 0)
    assert f"{source}:2: field 'm" in result.stderr
    assert "holds a name with a NUL byte ('" in result.stderr
    assert (
        "'), which MongoDB cannot store in the index; stop indexing that field (--field), or "
        "use SQLite for the index\n" in result.stderr
    )
    assert run("sync", *args, "--check").exit_code == 0  # nothing stored without its entry
    assert run("query", "--count", *args).stdout == "1\n"


def test_rebuild_names_the_entry_with_a_nul_byte_in_a_field_name(
    run: Run, real_mongo_server: MongoServer, tmp_path: Path
) -> None:
    store = ["--store", str(tmp_path / "store")]
    sqlite = [*store, "--index", str(tmp_path / "i.sqlite3")]
    put = run("put", *sqlite, "--field", "m", input=jsonl({"fs_id": "g", "m": {"a\u0000": 1}}))
    assert put.exit_code == 0, put.stderr

    for command in ("rebuild-index", "sync"):
        result = run(command, *store, "--index", real_mongo_server.uri)
        assert result.exit_code == ExitStatus.ERROR, result.stderr
        assert (
            "entry 'g': field 'm' holds a name with a NUL byte ('a\\x00'), which MongoDB cannot "
            "store" in result.stderr
        )
        assert "Traceback" not in result.stderr
