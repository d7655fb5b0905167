"""``rebuild-index --shard I/N``: real processes on moto, one shared index (SQLite or FerretDB).

Four shards started together give the index a one-process rebuild gives, entry by entry; a
shard killed with SIGKILL leaves the live index as it was, and ``--resume`` of that shard
finishes it and swaps. The index protocol underneath is pinned by
tests/index/test_index_conformance.py (every backend, a multi-process claim race included).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx.errors import BackendUnavailableError
from s3idx.index.base import Index
from s3idx.index.mongo import MongoIndex
from s3idx.index.sqlite import SqliteIndex, SqliteRebuild
from tests.helpers import Run, real_mongo_database, subprocess_env
from tests.s3proxy import S3Proxy

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SHARDS = 4
FIRST, LATER = 120, 40  # documents put before and after the field "x" was added


def _docs(start: int, count: int, *, with_x: bool) -> bytes:
    lines = []
    for i in range(start, start + count):
        doc: dict[str, Any] = {"fs_id": f"doc/{i:04d}", "v": i, "tag": ["a", "b", "c"][i % 3]}
        if with_x:
            doc["x"] = {"y": i * 2}
        lines.append(orjson.dumps(doc))
    return b"\n".join(lines) + b"\n"


@pytest.fixture
def bucket(run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> list[str]:
    """A bucket of documents put in two runs (the second adds field x); its store flags."""
    store = ["--store", f"s3://{s3_bucket}/docs", "--endpoint-url", s3_endpoint]
    first = tmp_path / "put.sqlite3"
    put = run(
        "put", *store, "--index", str(first), "--field", "v", input=_docs(0, FIRST, with_x=False)
    )
    assert put.exit_code == 0, put.stderr
    later = _docs(FIRST, LATER, with_x=True)
    put = run("put", *store, "--index", str(first), "--field", "v", "--field", "x.y", input=later)
    assert put.exit_code == 0, put.stderr
    return store


@pytest.fixture(params=["sqlite", "ferretdb"])
def shared_index(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Callable[[], Index]]]:
    """(the --index location every process is given, an opener for the test's own reads)."""
    if request.param == "sqlite":
        path = tmp_path / "shared.sqlite3"
        yield str(path), lambda: SqliteIndex(path)
        return
    with real_mongo_database("ferretdb", request) as server:
        yield server.uri, lambda: MongoIndex(server.uri, server.database)


def _start(home: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "s3idx", "rebuild-index", "--json", *args],
        env=subprocess_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()
    return dict(orjson.loads(out))


def _snapshot(open_index: Callable[[], Index]) -> tuple[list[Any], Any]:
    index = open_index()
    try:
        entries = sorted(index.find({}), key=lambda e: e["fs_id"])
        settings = index.settings()
        assert settings is not None
        return entries, (settings.key_field, sorted(settings.fields), dict(settings.pending))
    finally:
        index.close()


@contextmanager
def _reference(run: Run, store: list[str], tmp_path: Path) -> Iterator[tuple[list[Any], Any]]:
    path = tmp_path / "one-process.sqlite3"
    result = run("rebuild-index", *store, "--index", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    yield _snapshot(lambda: SqliteIndex(path))


def test_four_shards_started_together_give_the_one_process_index(
    run: Run,
    bucket: list[str],
    shared_index: tuple[str, Callable[[], Index]],
    tmp_path: Path,
) -> None:
    location, open_index = shared_index
    with _reference(run, bucket, tmp_path) as expected:
        processes = [
            _start(tmp_path, *bucket, "--index", location, "--shard", f"{i}/{SHARDS}")
            for i in range(SHARDS)
        ]
        reports = [_finish(p) for p in processes]

        assert _snapshot(open_index) == expected
    swapped = [r for r in reports if r["committed"]]
    assert len(swapped) == 1, reports
    assert swapped[0]["total_entries"] == FIRST + LATER
    assert sum(r["written"] for r in reports) == FIRST + LATER
    assert [r["shard"] for r in reports] == [f"{i}/{SHARDS}" for i in range(SHARDS)]
    assert all(r["listed"] + r["other_shards"] == FIRST + LATER for r in reports)
    # Field x came later: pending for the objects put before it, merged across the shards.
    assert expected[1][2] == {"x.y": FIRST}
    index = open_index()
    try:
        assert index.rebuild_status() is None
    finally:
        index.close()


def test_a_shard_killed_midway_leaves_the_index_and_resume_swaps(
    run: Run,
    bucket: list[str],
    shared_index: tuple[str, Callable[[], Index]],
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    location, open_index = shared_index
    # The live index before: a rebuild of the same bucket, then one document less, so a swap
    # (or any write to it) would show.
    first = run("rebuild-index", *bucket, "--index", location)
    assert first.exit_code == 0, first.stderr
    live = open_index()
    try:
        live.delete(["doc/0000"])
    finally:
        live.close()
    before = _snapshot(open_index)
    victim = 2
    with _reference(run, bucket, tmp_path) as expected, S3Proxy(s3_endpoint) as slow:
        slow.delay = 0.05  # the victim HEADs every object of its shard, slowly
        victim_store = [bucket[0], bucket[1], "--endpoint-url", slow.url]
        processes = {
            i: _start(
                tmp_path,
                *(victim_store if i == victim else bucket),
                "--index",
                location,
                "--shard",
                f"{i}/{SHARDS}",
                *(["--no-manifests", "--workers", "1"] if i == victim else []),
            )
            for i in range(SHARDS)
        }
        _wait_for(lambda: _joined(open_index, victim) and slow.requests["HEAD"] > 3)
        processes[victim].send_signal(signal.SIGKILL)
        processes[victim].wait(timeout=30)
        others = [_finish(p) for i, p in processes.items() if i != victim]

        assert not any(r["committed"] for r in others)
        for report in others:
            own = int(report["shard"].split("/")[0])
            assert own in report["shards_done"] and victim not in report["shards_done"]
        assert _snapshot(open_index) == before
        shown = run("info", "--index", location, "--json")
        info = orjson.loads(shown.stdout)
        assert info["rebuild_shards"] == SHARDS
        assert info["rebuild_shards_done"] == [i for i in range(SHARDS) if i != victim]

        again = _start(tmp_path, *bucket, "--index", location, "--shard", f"{victim}/{SHARDS}")
        _, refused_err = again.communicate(timeout=120)
        assert again.returncode == 2
        assert b"--resume" in refused_err and b"already started" in refused_err

        resumed = _finish(
            _start(
                tmp_path, *bucket, "--index", location, "--shard", f"{victim}/{SHARDS}", "--resume"
            )
        )
        assert resumed["committed"] and resumed["total_entries"] == FIRST + LATER
        assert _snapshot(open_index) == expected


def _joined(open_index: Callable[[], Index], shard: int) -> bool:
    index = open_index()
    try:
        status = index.rebuild_status()
        return status is not None and shard in status.joined
    finally:
        index.close()


def _wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_shard_flags_are_checked_before_any_work(run: Run, tmp_path: Path) -> None:
    index = str(tmp_path / "i.sqlite3")
    bad = run("rebuild-index", "--index", index, "--shard", "4/4")
    assert bad.exit_code == 2
    assert "shard 4 does not exist in 4 shards" in bad.stderr
    alone = run("rebuild-index", "--index", index, "--restart")
    assert alone.exit_code == 2
    assert "--restart goes with --shard" in alone.stderr
    assert not os.path.exists(index)


def test_each_shard_says_what_it_did_and_info_shows_the_rebuild(run: Run) -> None:
    put = run("put", "--field", "v", input=_docs(0, 30, with_x=False))
    assert put.exit_code == 0, put.stderr

    first = run("rebuild-index", "--shard", "0/2")
    assert first.exit_code == 0, first.stderr
    assert "; shard 0/2 (" in first.stderr
    assert "1 of 2 shards done, waiting for 1: the last one to finish swaps" in first.stderr
    info = run("info").stdout.splitlines()
    assert any(
        line.startswith("rebuild ") and "1 of 2 shards done (done: 0)" in line for line in info
    )
    assert any(line.startswith("rebuild shards done") and line.endswith(" 0") for line in info)
    assert any(line.startswith("rebuild shards ") and line.endswith(" 2") for line in info)
    shown = orjson.loads(run("info", "--json").stdout)
    assert (shown["rebuild_shards"], shown["rebuild_shards_done"]) == (2, [0])

    last = run("rebuild-index", "--shard", "1/2", "--json")
    assert last.exit_code == 0, last.stderr
    report = orjson.loads(last.stdout)
    assert report["swapped"] and report["committed"] and report["shards_done"] == [0, 1]
    assert report["total_entries"] == 30 == report["total_written"]
    assert report["listed"] + report["other_shards"] == 30
    assert "rebuild" not in orjson.loads(run("info", "--json").stdout)


def test_a_shard_that_died_after_its_part_swaps_when_resumed(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    put = run("put", "--field", "v", input=_docs(0, 20, with_x=False))
    assert put.exit_code == 0, put.stderr
    assert run("rebuild-index", "--shard", "0/2").exit_code == 0

    def dies(self: SqliteRebuild) -> bool:
        raise BackendUnavailableError("the node went away")

    with monkeypatch.context() as patch:
        patch.setattr(SqliteRebuild, "claim_swap", dies)
        died = run("rebuild-index", "--shard", "1/2")
    assert died.exit_code == 5, died.stderr
    # Both shards are done, nobody swapped: the old index (the put's) still answers.
    info = orjson.loads(run("info", "--json").stdout)
    # Numbers, as rebuild-index --json gives its shards_done.
    assert info["rebuild_shards"] == 2
    assert info["rebuild_shards_done"] == [0, 1] and info["entries"] == 20

    resumed = run("rebuild-index", "--shard", "1/2", "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    report = orjson.loads(resumed.stdout)
    assert report["committed"] and report["resumed"] and report["total_entries"] == 20
    assert report["heads"] == 0 and report["from_manifests"] == 0  # nothing listed again
