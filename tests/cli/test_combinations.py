"""The main job on every combination of store and index: local or S3, SQLite or MongoDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import MONGO_KINDS, MongoServer, Run, json_lines, jsonl, real_mongo_database

DOCS = [
    {"fs_id": f"mp-{i}", "task_id": f"t{i % 4}", "e": i * 0.5, "tags": ["a", str(i)]}
    for i in range(16)
]


COMBINATIONS = [
    f"{store}+{index}" for index in ("sqlite", *MONGO_KINDS) for store in ("local", "s3")
]


@pytest.fixture(params=COMBINATIONS)
def locations(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """Store and index flags: local or S3, and SQLite, mongomock, FerretDB or real MongoDB."""
    store, index = request.param.split("+")
    args: list[str] = []
    if store == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        args += ["--store", "s3://combo/docs", "--endpoint-url", endpoint]
    else:
        args += ["--store", str(tmp_path / "store")]
    if index == "sqlite":
        yield [*args, "--index", str(tmp_path / "index.sqlite3")]
    elif index == "mongomock":
        request.getfixturevalue("mongomock_server")
        yield [*args, "--index", "mongodb://localhost/s3idx_test", "--collection", "docs"]
    else:
        with real_mongo_database(index, request) as server:
            yield [*args, "--index", server.uri, "--collection", "docs"]


def test_put_query_get_delete_rebuild_sync(run: Run, locations: list[str]) -> None:
    put = run("put", *locations, "--create-bucket", "--field", "task_id", "--field", "e",
              "--json", input=jsonl(*DOCS))  # fmt: skip
    assert put.exit_code == 0, put.stderr
    assert orjson.loads(put.stdout)["stored"] == 16

    def keys(*args: str) -> list[str]:
        result = run("query", *locations, *args)
        assert result.exit_code == 0, result.stderr
        return [e["fs_id"] for e in json_lines(result.stdout)]

    assert keys('{"task_id": "t1"}', "--sort", "e") == ["mp-1", "mp-5", "mp-9", "mp-13"]
    assert keys('{"e": {"$gte": 6.5}}', "--sort", "-e", "--limit", "2") == ["mp-15", "mp-14"]
    full = run("query", *locations, '{"task_id": "t2"}', "--full", "--sort", "e")
    assert json_lines(full.stdout) == [DOCS[2], DOCS[6], DOCS[10], DOCS[14]]
    assert json_lines(run("get", *locations, "mp-3", "mp-0").stdout) == [DOCS[3], DOCS[0]]

    assert run("delete", *locations, "--filter", '{"task_id": "t3"}').exit_code == 0
    assert run("query", *locations, "--count").stdout == "12\n"
    assert run("get", *locations, "mp-3").exit_code == ExitStatus.NOT_FOUND

    before = run("query", *locations, "--fields", "_s3idx,task_id,e", "--sort", "fs_id").stdout
    rebuilt = run("rebuild-index", *locations, "--json")
    assert rebuilt.exit_code == 0, rebuilt.stderr
    assert orjson.loads(rebuilt.stdout)["written"] == 12
    after = run("query", *locations, "--fields", "_s3idx,task_id,e", "--sort", "fs_id").stdout
    assert after == before
    assert run("sync", *locations, "--check").exit_code == 0


def test_mongodb_index_remembers_fields_and_refuses_another_key(
    run: Run, mongo_server: MongoServer, tmp_path: Path
) -> None:
    args = ["--store", str(tmp_path / "s"), "--index", mongo_server.uri]
    assert run("put", *args, "--field", "task_id", input=jsonl(DOCS[0])).exit_code == 0
    info = orjson.loads(run("info", *args, "--json").stdout)
    assert (info["key_field"], info["fields"], info["entries"]) == ("fs_id", ["task_id"], 1)
    assert info["index"] == mongo_server.uri
    other = run("put", *args, "--key", "task_id", input=jsonl(DOCS[1]))
    assert other.exit_code == ExitStatus.USAGE
    assert "uses key field 'fs_id', not 'task_id'" in other.stderr
    indexes = mongo_server.client[mongo_server.database]["s3idx"].index_information()
    assert {next(iter(v["key"]))[0] for v in indexes.values()} >= {"_id", "fs_id", "task_id"}


def test_lost_collection_rebuilt_from_s3_equals_the_original_entry_by_entry(
    run: Run, mongo_server: MongoServer, s3_endpoint: str
) -> None:
    store = ["--store", "s3://rebuilt/docs", "--endpoint-url", s3_endpoint]
    args = [*store, "--index", mongo_server.uri, "--collection", "docs"]
    put = run("put", *args, "--create-bucket", "--field", "task_id", "--field", "tags",
              "--field", "e", input=jsonl(*DOCS))  # fmt: skip
    assert put.exit_code == 0, put.stderr
    assert run("query", *args, '{"task_id": "t3"}', "--count").stdout == "4\n"
    assert json_lines(run("get", *args, "mp-7").stdout) == [DOCS[7]]
    collection = mongo_server.client[mongo_server.database]["docs"]
    # Each entry's stamp names the write that left it (a rebuild writes them all anew).
    original = list(collection.find({}, {"_s3idx.stamp": 0}, sort=[("_id", 1)]))
    assert len(original) == 16

    collection.drop()
    assert run("query", *args, "--count").stdout == "0\n"
    rebuilt = run("rebuild-index", *args, "--json")
    assert rebuilt.exit_code == 0, rebuilt.stderr
    assert orjson.loads(rebuilt.stdout)["written"] == 16
    check = run("sync", *args, "--check")
    assert check.exit_code == 0, check.stdout + check.stderr

    assert list(collection.find({}, {"_s3idx.stamp": 0}, sort=[("_id", 1)])) == original
    assert run("query", *args, '{"tags": "a", "e": {"$lt": 1}}', "--count").stdout == "2\n"


def test_sync_check_reports_drift_and_sync_adopts_the_orphans(
    run: Run, locations: list[str], tmp_path: Path
) -> None:
    assert run("put", *locations, "--create-bucket", "--field", "task_id",
               input=jsonl(*DOCS[:10])).exit_code == 0  # fmt: skip
    # Objects this index has not seen, as a put that died before indexing leaves them.
    store = locations[: locations.index("--index")]
    elsewhere = [*store, "--index", str(tmp_path / "other.sqlite3")]
    assert run("put", *elsewhere, "--field", "task_id", input=jsonl(*DOCS[10:12])).exit_code == 0

    check = run("sync", *locations, "--check")
    assert check.exit_code == ExitStatus.DRIFT
    assert check.stdout.splitlines() == ["bucket-only\tmp-10", "bucket-only\tmp-11"]
    repair = run("sync", *locations, "--json")
    assert repair.exit_code == 0, repair.stderr
    assert orjson.loads(repair.stdout)["added"] == 2
    assert run("sync", *locations, "--check").exit_code == 0
    assert run("query", *locations, '{"task_id": "t3"}', "--count").stdout == "3\n"
