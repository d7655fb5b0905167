"""Every count a ``delete`` reports is true, run for real in CLI processes:

- several deletes at once over the same keys (``--all``, named keys, and the journal records a
  killed delete left, which each of them finishes first): each object removed is counted by
  exactly one of them, so their counts add up to the objects that existed;
- a ``delete --json`` stopped mid-batch (a signal) counts every object it had removed, so its
  count is the number of objects gone from the store.

``S3IDX_RACE_REPEAT=N`` multiplies the rounds.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine
from s3idx.errors import ExitStatus
from s3idx.index.base import Index
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import ObjectStore
from s3idx.store.local import LocalStore
from s3idx.store.s3 import S3Store
from tests.helpers import fresh_database_name, subprocess_env, with_database
from tests.s3proxy import S3Proxy

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

REPEAT = max(1, int(os.environ.get("S3IDX_RACE_REPEAT", "1")))
TIMEOUT = 240.0

# Starts the CLI in a process that has already paid its imports, and runs it only once the
# test creates the "go" file: the processes of a round start their deletes together.
_LAUNCHER = """
import os, runpy, sys, time
ready, go = sys.argv[1], sys.argv[2]
sys.argv = ["s3idx", *sys.argv[3:]]
import s3idx.cli, s3idx.engine.delete, s3idx.store.s3, s3idx.index.sqlite  # noqa
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.0005)
runpy.run_module("s3idx", run_name="__main__", alter_sys=True)
"""


def _keys(count: int) -> list[str]:
    return [f"k{i:04d}" for i in range(count)]


def _engine(where: dict[str, Any]) -> Engine:
    store: ObjectStore
    if where["kind"] != "s3":
        store = LocalStore(where["store"])
    else:
        store = S3Store(
            where["bucket"], where["prefix"], endpoint_url=where["endpoint"], region="us-east-1"
        )
    index: Index
    if where["kind"] == "ferretdb":
        from s3idx.index.mongo import MongoIndex

        index = MongoIndex(where["index"], where["database"])
    else:
        index = SqliteIndex(Path(where["index"]))
    return Engine(store, index)


def _args(where: dict[str, Any]) -> list[str]:
    if where["kind"] != "s3":
        return ["--store", str(where["store"]), "--index", str(where["index"])]
    return [
        "--store", f"s3://{where['bucket']}/{where['prefix']}",
        "--endpoint-url", where["endpoint"], "--index", str(where["index"]),
    ]  # fmt: skip


def _start_together(home: Path, commands: list[list[str]]) -> list[subprocess.Popen[bytes]]:
    go = home / "go"
    procs = []
    ready = []
    for number, args in enumerate(commands):
        flag = home / f"ready{number}"
        ready.append(flag)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(flag), str(go), *args],
                env=subprocess_env(home),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    deadline = time.monotonic() + TIMEOUT
    while not all(f.exists() for f in ready):
        assert time.monotonic() < deadline, "the delete processes did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.005)
    go.touch()
    return procs


@pytest.fixture(params=["local", "s3", "ferretdb"])
def places(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Iterator[tuple[Path, dict[str, Any]]]]:
    """Rounds on the local store and SQLite, moto and SQLite, the local store and FerretDB."""
    base = request.getfixturevalue("ferretdb_server").uri if request.param == "ferretdb" else None
    databases: list[str] = []

    def make() -> Iterator[tuple[Path, dict[str, Any]]]:
        for number in range(ROUNDS[request.param]):
            home = tmp_path / f"round{number}"
            home.mkdir()
            where: dict[str, Any] = {"kind": request.param, "index": home / "index.sqlite3"}
            if request.param == "s3":
                where["endpoint"] = request.getfixturevalue("s3_endpoint")
                where["bucket"] = request.getfixturevalue("s3_bucket")
                where["prefix"] = f"r{number}"
            else:
                where["store"] = home / "store"
            if base is not None:
                where["database"] = fresh_database_name()
                databases.append(where["database"])
                where["index"] = with_database(base, where["database"]) + "?socketTimeoutMS=60000"
            yield home, where

    yield make()
    if base is not None:
        import pymongo

        with pymongo.MongoClient(base, serverSelectionTimeoutMS=5000) as client:
            for database in databases:
                client.drop_database(database)


ROUNDS = {"local": 6 * REPEAT, "s3": 3 * REPEAT, "ferretdb": 3 * REPEAT}
DOCUMENTS = {"local": 300, "s3": 80, "ferretdb": 150}


def test_deletes_at_once_count_each_object_once(
    places: Iterator[tuple[Path, dict[str, Any]]],
) -> None:
    seed = int(os.environ.get("S3IDX_RACE_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    for number, (home, where) in enumerate(places):
        count = DOCUMENTS[where["kind"]]
        keys = _keys(count)
        with _engine(where) as engine:
            stored = engine.put_documents(({"fs_id": k, "v": i} for i, k in enumerate(keys)))
            assert stored.stored == count
            # A delete killed after removing the entries of a third of the keys: journal records
            # that every delete below finishes first, all of them at once.
            killed = {k: e for k, e in engine.index.etags(keys).items() if rng.random() < 0.3}
            engine.index.journal_deletes(killed)
            engine.index.delete_if(killed)
        named = sorted(rng.sample(keys, count // 2))
        commands = [
            ["delete", "--filter", "{}", "--all", "--json", *_args(where)],
            ["delete", "--filter", "{}", "--all", "--json", *_args(where)],
            ["delete", *named, "--json", *_args(where)],
        ]
        procs = _start_together(home, commands)
        summaries = []
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode in (0, ExitStatus.NOT_FOUND), err.decode()
            summaries.append(orjson.loads(out))
        with _engine(where) as engine:
            left = [o.key for o in engine.store.list_objects()]
        context = f"S3IDX_RACE_SEED={seed}, round {number}, {where['kind']}: {summaries}"
        assert left == [], context
        counted = sum(s["deleted"] + s["finished"] for s in summaries)
        assert counted == count, context
        # A named key that another process deleted is reported as not found, never as both.
        gone_for_named = summaries[2]["deleted"] + len(summaries[2]["missing"])
        assert gone_for_named >= len(named) - summaries[2]["finished"], context


STORED_IN_S3 = 60


@pytest.fixture
def stored_in_s3(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> dict[str, Any]:
    """STORED_IN_S3 documents put in moto's S3 (prefix ``docs``) and a SQLite index: where
    they are, for ``_engine`` and ``_args``."""
    where: dict[str, Any] = {
        "kind": "s3", "index": tmp_path / "index.sqlite3", "endpoint": s3_endpoint,
        "bucket": s3_bucket, "prefix": "docs",
    }  # fmt: skip
    with _engine(where) as engine:
        engine.put_documents({"fs_id": k, "v": i} for i, k in enumerate(_keys(STORED_IN_S3)))
    return where


def test_delete_json_stopped_mid_batch_counts_every_object_it_removed(
    s3_endpoint: str, stored_in_s3: dict[str, Any], tmp_path: Path
) -> None:
    """Stopped by a signal while the store's deletes of a batch are under way (each answer
    slowed by a proxy): the objects removed so far are all in the count."""
    count = STORED_IN_S3
    for stop in (signal.SIGINT, signal.SIGTERM):
        with S3Proxy(s3_endpoint) as proxy:
            proxy.delay = 0.2
            slowed = {**stored_in_s3, "endpoint": proxy.url}
            process = subprocess.Popen(
                [sys.executable, "-m", "s3idx", "delete", "--filter", "{}", "--all", "--json",
                 *_args(slowed)],
                env=subprocess_env(tmp_path),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while proxy.requests["DELETE"] < 10 and time.monotonic() < deadline:
                time.sleep(0.01)
            process.send_signal(stop)
            out, err = process.communicate(timeout=60)
        assert process.returncode in (ExitStatus.INTERRUPTED, ExitStatus.TERMINATED), err
        summary = orjson.loads(out)
        with _engine(stored_in_s3) as engine:
            left = sum(1 for _ in engine.store.list_objects())
        assert summary["deleted"] + summary["finished"] == count - left, (stop, summary, left, err)
        assert left > 0, "the delete ended before the signal: nothing was tested"
        count = left


_REFUSED = (
    400,
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code>'
    b"<Message>refused (test)</Message></Error>",
)


def test_delete_json_stopped_by_a_store_error_mid_batch_counts_every_object_it_removed(
    s3_endpoint: str, stored_in_s3: dict[str, Any], tmp_path: Path
) -> None:
    """A delete the store answers with an error that stops the run (not one worth retrying),
    in the middle of a batch: the objects the batch had removed are all in the count."""
    with S3Proxy(s3_endpoint, fault=_REFUSED) as proxy:
        proxy.failing = lambda method, path: method == "DELETE" and path.endswith("/k0030")
        process = subprocess.run(
            [sys.executable, "-m", "s3idx", "delete", "--filter", "{}", "--all", "--json",
             *_args({**stored_in_s3, "endpoint": proxy.url})],
            env=subprocess_env(tmp_path),
            capture_output=True,
            timeout=120,
        )  # fmt: skip
    assert process.returncode != 0, process.stderr
    summary = orjson.loads(process.stdout)
    assert "error" in summary, summary
    with _engine(stored_in_s3) as engine:
        left = sum(1 for _ in engine.store.list_objects())
    assert left > 0, summary
    assert summary["deleted"] + summary["finished"] == STORED_IN_S3 - left, (summary, left)
