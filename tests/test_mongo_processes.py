"""Several real processes on one MongoDB index (FerretDB, and a real MongoDB when configured):
writers racing with sync, kill -9 of a put, the server going away in the middle of a put."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine
from s3idx.errors import ExitStatus
from s3idx.index.mongo import MongoIndex
from s3idx.store.local import LocalStore
from tests.helpers import (
    MongoServer,
    entries_and_objects,
    fresh_database_name,
    start_ferretdb,
    with_database,
)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _lines(count: int, start: int = 0) -> bytes:
    return b"".join(
        orjson.dumps({"fs_id": f"k{i:05d}", "v": i}) + b"\n" for i in range(start, start + count)
    )


def _s3idx(home: Path, uri: str, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3IDX_")}
    env.update(S3IDX_HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "s3idx", *args, "--store", str(home / "store"), "--index", uri],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(process: subprocess.Popen[bytes], timeout: float = 180) -> tuple[int, Any, str]:
    out, err = process.communicate(timeout=timeout)
    summary = orjson.loads(out) if out.strip().startswith(b"{") else out.decode()
    return process.returncode, summary, err.decode()


def _engine(home: Path, uri: str) -> Engine:
    database = uri.rsplit("/", 1)[1].split("?")[0]
    return Engine(LocalStore(home / "store"), MongoIndex(uri, database))


def _check_invariant(home: Path, uri: str) -> tuple[int, int]:
    """Every entry's object exists; returns (entries, objects)."""
    with _engine(home, uri) as engine:
        return entries_and_objects(engine)


def _wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _objects(home: Path) -> int:
    objects = home / "store" / "objects"
    return len(os.listdir(objects)) if objects.is_dir() else 0


def _bounded(uri: str) -> str:
    """The URI with a socket timeout: a server that never answers fails the test, not hangs it."""
    return uri + ("&" if "?" in uri else "?") + "socketTimeoutMS=30000"


def test_two_puts_and_a_sync_at_once_on_one_index(
    tmp_path: Path, real_mongo_server: MongoServer
) -> None:
    uri = _bounded(real_mongo_server.uri)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    # Small: FerretDB's SQLite backend takes ~6 ms per upsert.
    first.write_bytes(_lines(240))
    second.write_bytes(_lines(240, start=120))  # k00120..k00239 written by both
    puts = [
        _s3idx(tmp_path, uri, "put", str(path), "--field", "v", "--batch-size", "20", "--json")
        for path in (first, second)
    ]
    _wait_for(lambda: _objects(tmp_path) > 0)
    syncs = [_s3idx(tmp_path, uri, "sync", "--json")]
    for process in puts:
        status, summary, err = _finish(process)
        assert status == 0, err
        assert (summary["stored"], summary["not_indexed"]) == (240, 0)
    status, _, err = _finish(syncs[0])
    assert status == 0, err

    assert _check_invariant(tmp_path, uri) == (360, 360)
    with _engine(tmp_path, uri) as engine:
        engine.sync()  # an overlapping key may name the other writer's version: set it right
        assert engine.sync(check=True).drift == 0
        assert engine.count({"v": {"$gte": 0}}) == 360
        for key in ("k00000", "k00120", "k00239", "k00359"):
            assert engine.get(key)["fs_id"] == key


def test_kill_9_of_a_put_leaves_no_entry_without_its_object(
    tmp_path: Path, real_mongo_server: MongoServer
) -> None:
    uri = _bounded(real_mongo_server.uri)
    source = tmp_path / "input.jsonl"
    source.write_bytes(_lines(6000))
    put = _s3idx(tmp_path, uri, "put", str(source), "--field", "v", "--batch-size", "64")
    _wait_for(lambda: _objects(tmp_path) >= 700)
    put.kill()
    put.communicate(timeout=30)

    entries, objects = _check_invariant(tmp_path, uri)
    assert entries <= objects < 6000
    status, summary, err = _finish(_s3idx(tmp_path, uri, "sync", "--json"))
    assert status == 0, err
    # The orphans are adopted. The server may still finish the batch the killed put sent, so
    # some of them may have been indexed since they were counted.
    assert summary["added"] <= objects - entries
    assert _check_invariant(tmp_path, uri) == (objects, objects)


def test_mongodb_server_gone_mid_put_is_exit_5_and_sync_adopts_what_was_stored(
    tmp_path: Path,
) -> None:
    # A FerretDB of its own: the session's server must live on.
    server = start_ferretdb(tmp_path / "ferretdb")
    database = fresh_database_name()
    timeout = "?serverSelectionTimeoutMS=1500"
    uri = with_database(server.uri, database) + timeout
    source = tmp_path / "input.jsonl"
    source.write_bytes(_lines(20_000))
    try:
        put = _s3idx(tmp_path, uri, "put", str(source), "--field", "v", "--batch-size", "50",
                     "--json")  # fmt: skip
        _wait_for(lambda: _objects(tmp_path) >= 500)
        server.kill()
        status, summary, err = _finish(put)
    finally:
        server.stop()

    assert status == ExitStatus.UNAVAILABLE, err
    assert "MongoDB at 127.0.0.1:" in err
    assert "Traceback" not in err
    stored, not_indexed = summary["stored"], summary["not_indexed"]
    assert 0 < not_indexed <= stored < 20_000

    # The same data directory behind a new server: what was indexed is there, the rest is not.
    server = start_ferretdb(tmp_path / "ferretdb")
    try:
        uri = with_database(server.uri, database) + timeout
        entries, objects = _check_invariant(tmp_path, uri)
        assert objects >= stored
        # A batch under way when the server died may have been written in part: "not indexed"
        # counts what is not known to be indexed.
        assert stored - not_indexed <= entries <= stored
        status, summary, err = _finish(_s3idx(tmp_path, uri, "sync", "--json"))
        assert status == 0, err
        assert summary["added"] == objects - entries
        assert _check_invariant(tmp_path, uri) == (objects, objects)
    finally:
        server.stop()


def test_sigterm_of_the_test_server_ends_it(tmp_path: Path) -> None:
    server = start_ferretdb(tmp_path / "ferretdb")
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=10) == 0
    server.stop()
