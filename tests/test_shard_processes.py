"""Issue 16's "done when": s3idx processes with ``--shard i/3`` at once, on one S3 bucket (moto's
server) and one shared index (SQLite, then FerretDB), do what one process does.

- three ``put --shard i/3`` of one input file store every document exactly once, and the index
  they write together holds what one ``put`` of the file writes;
- three ``sync --check --shard i/3`` report, together, exactly the drift one ``sync --check``
  reports, for drift of every kind.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine
from s3idx.errors import ExitStatus
from s3idx.index.base import Index
from s3idx.index.sqlite import SqliteIndex
from s3idx.sharding import shard_of
from s3idx.store.s3 import S3Store
from tests.helpers import fresh_database_name, subprocess_env, with_database
from tests.test_shards import make_drift

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

SHARDS = 3
TIMEOUT = 240.0


@dataclass
class Place:
    """A bucket prefix and an index location the processes share."""

    home: Path
    endpoint: str
    bucket: str
    prefix: str
    index: str  # as given to --index
    database: str | None  # MongoDB only

    def args(self) -> list[str]:
        return [
            "--store", f"s3://{self.bucket}/{self.prefix}", "--endpoint-url", self.endpoint,
            "--index", self.index,
        ]  # fmt: skip

    def engine(self, index: str | None = None) -> Engine:
        store = S3Store(self.bucket, self.prefix, endpoint_url=self.endpoint, region="us-east-1")
        opened: Index
        if self.database is None or index is not None:
            opened = SqliteIndex(Path(index or self.index))
        else:
            from s3idx.index.mongo import MongoIndex

            opened = MongoIndex(self.index, self.database)
        return Engine(store, opened, workers=4)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "s3idx", *args, "--json", *self.args()],
            env=subprocess_env(self.home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, Any, str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, orjson.loads(out), err.decode(errors="replace")


@pytest.fixture(params=["sqlite", "ferretdb"])
def place(
    request: pytest.FixtureRequest, tmp_path: Path, s3_bucket: str, s3_endpoint: str
) -> Iterator[Place]:
    prefix = f"p-{uuid.uuid4().hex[:6]}"
    if request.param == "sqlite":
        yield Place(tmp_path, s3_endpoint, s3_bucket, prefix, str(tmp_path / "index.sqlite3"), None)
        return
    import pymongo

    base = request.getfixturevalue("ferretdb_server").uri
    database = fresh_database_name()
    location = with_database(base, database) + "?socketTimeoutMS=60000"
    try:
        yield Place(tmp_path, s3_endpoint, s3_bucket, prefix, location, database)
    finally:
        with pymongo.MongoClient(base, serverSelectionTimeoutMS=5000) as client:
            client.drop_database(database)


DOCS = [{"fs_id": f"doc-{i:04d}", "v": i} for i in range(240)]


def test_three_put_shards_at_once_store_every_document_exactly_once(
    place: Place, tmp_path: Path
) -> None:
    path = tmp_path / "docs.jsonl"
    lines = [orjson.dumps(d) for d in DOCS]
    lines.insert(100, b"{not json")
    path.write_bytes(b"\n".join(lines) + b"\n")
    procs = [place.start("put", str(path), "--field", "v", "--shard", f"{n}/3") for n in range(3)]
    done = [_finish(p) for p in procs]
    for n, (status, summary, err) in enumerate(done):
        # The one unreadable line is shard 0's to reject (exit 3); the others read it as not theirs.
        assert status == (ExitStatus.PARTIAL if n == 0 else ExitStatus.OK), err
        assert summary["shard"] == f"{n}/3"
        assert summary["read"] == len(lines)
        assert summary["rejected"] == (1 if n == 0 else 0)
        own = sum(1 for d in DOCS if shard_of(d["fs_id"], SHARDS) == n)
        assert summary["stored"] == own, err
        assert summary["other_shards"] == len(lines) - own - summary["rejected"]
        assert summary["not_indexed"] == summary["reconciled"] == 0
    assert sum(s["read"] - s["other_shards"] for _, s, _ in done) == len(lines)
    assert sum(s["stored"] for _, s, _ in done) == len(DOCS)

    # One put of the same file, by one process, into a bucket prefix and index of its own.
    alone = Place(place.home, place.endpoint, place.bucket, place.prefix + "-one", "", None)
    with alone.engine(str(tmp_path / "one.sqlite3")) as engine:
        engine.put_files([path], fields=["v"])
        expected = {e["fs_id"]: e["v"] for e in engine.query({}, fields=["fs_id", "v"])}
    assert len(expected) == len(DOCS)

    with place.engine() as engine:
        objects = [o.key for o in engine.store.list_objects()]
        assert sorted(objects) == sorted(expected)  # each key once: keys are unique in a listing
        assert {e["fs_id"]: e["v"] for e in engine.query({}, fields=["fs_id", "v"])} == expected
        assert engine.sync(check=True).drift == 0


COUNTS = ("listed", "indexed", "bucket_only", "index_only", "changed", "interrupted_deletes")


def test_three_sync_check_shards_at_once_report_exactly_one_sync_checks_drift(
    place: Place, tmp_path: Path
) -> None:
    with (
        place.engine() as engine,
        place.engine(str(tmp_path / "other.sqlite3")) as other,
    ):
        kinds = make_drift(engine, other)
    procs = [place.start("sync", "--check")]
    procs += [place.start("sync", "--check", "--shard", f"{n}/3") for n in range(3)]
    (status, whole, err), *shards = [_finish(p) for p in procs]
    assert status == ExitStatus.DRIFT, err
    assert {kind: set(keys) for kind, keys in whole["drift_keys"].items()} == kinds
    for n, (status, summary, err) in enumerate(shards):
        assert summary["shard"] == f"{n}/3"
        assert status == (ExitStatus.DRIFT if summary["drift"] else ExitStatus.OK), err
    for name in (*COUNTS, "drift"):
        assert sum(s[name] for _, s, _ in shards) == whole[name], name
    for kind, keys in kinds.items():
        found = [set(s["drift_keys"].get(kind, ())) for _, s, _ in shards]
        assert set().union(*found) == keys, kind
        assert sum(len(f) for f in found) == len(keys), kind
        for n, part in enumerate(found):
            assert all(shard_of(k, SHARDS) == n for k in part)
