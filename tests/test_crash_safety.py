"""Real processes: Ctrl-C, SIGTERM and kill -9 during put; the write-order invariant holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from s3idx import Engine
from s3idx.errors import ExitStatus
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.local import LocalStore
from tests.helpers import entries_and_objects, subprocess_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _s3idx(home: Path, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "s3idx", *args],
        env=subprocess_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,  # type: ignore[call-overload]
    )


def _engine(home: Path) -> Engine:
    return Engine(LocalStore(home / "store"), SqliteIndex(home / "index.sqlite3"))


def _wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _lines(count: int, start: int = 0) -> bytes:
    return b"".join(
        orjson.dumps({"fs_id": f"k{i:05d}", "v": i}) + b"\n" for i in range(start, start + count)
    )


@pytest.mark.parametrize(
    ("signum", "status"),
    [
        (signal.SIGINT, ExitStatus.INTERRUPTED),
        (signal.SIGTERM, ExitStatus.TERMINATED),
        # A terminal or ssh session that closes: stopped as cleanly, not killed mid-batch.
        (signal.SIGHUP, ExitStatus.HANGUP),
    ],
)
def test_signal_stops_reading_indexes_what_was_stored_and_says_so(
    tmp_path: Path, signum: int, status: ExitStatus
) -> None:
    process = _s3idx(tmp_path, "put", "--field", "v", stdin=subprocess.PIPE)
    assert process.stdin is not None
    process.stdin.write(_lines(20))
    process.stdin.flush()
    # The producer stays alive and silent: the stop must not wait for its next line.
    _wait_for(lambda: len(list((tmp_path / "store").rglob("*~"))) == 20)
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)

    assert process.returncode == status, err
    text = err.decode()
    assert "s3idx: stopping: finishing requests under way" in text
    assert "s3idx: put: 20 read, 20 stored, 0 rejected" in text
    assert "; interrupted" in text
    with _engine(tmp_path) as engine:
        assert engine.count({}) == 20


def _check_invariant(home: Path) -> tuple[int, int]:
    """Every entry's object exists; returns (entries, objects)."""
    with _engine(home) as engine:
        if engine.index.settings() is None:
            # An index whose first rebuild was stopped holds no index yet (querying it is refused).
            return 0, sum(1 for _ in engine.store.list_objects())
        return entries_and_objects(engine)


TOTAL = 20_000


@pytest.mark.parametrize("stored_before_kill", [150, 900, 2100])
def test_kill_9_never_leaves_an_entry_without_its_object(
    tmp_path: Path, stored_before_kill: int
) -> None:
    source = tmp_path / "input.jsonl"
    source.write_bytes(_lines(TOTAL))
    objects_dir = tmp_path / "store" / "objects"
    process = _s3idx(tmp_path, "put", str(source), "--field", "v", "--batch-size", "64")
    _wait_for(lambda: objects_dir.is_dir() and len(os.listdir(objects_dir)) >= stored_before_kill)
    process.kill()
    process.communicate(timeout=30)

    entries, objects = _check_invariant(tmp_path)
    assert entries <= objects < TOTAL

    sync = _s3idx(tmp_path, "sync", "--json")
    out, err = sync.communicate(timeout=60)
    assert sync.returncode == 0, err
    assert orjson.loads(out)["added"] == objects - entries  # the orphans are adopted
    assert _check_invariant(tmp_path) == (objects, objects)

    rerun = _s3idx(tmp_path, "put", str(source), "--field", "v", "--skip-unchanged", "--json")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    summary = orjson.loads(out)
    assert (summary["unchanged"], summary["stored"]) == (objects, TOTAL - objects)
    assert _check_invariant(tmp_path) == (TOTAL, TOTAL)


def test_two_puts_at_once_on_the_embedded_store_lose_nothing(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(_lines(3000))
    # Overlapping keys: both processes write k01500..k02999; either version is right.
    second.write_bytes(_lines(3000, start=1500))
    processes = [
        _s3idx(tmp_path, "put", str(path), "--field", "v", "--batch-size", "100", "--json")
        for path in (first, second)
    ]
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        assert orjson.loads(out)["stored"] == 3000

    assert _check_invariant(tmp_path) == (4500, 4500)
    with _engine(tmp_path) as engine:
        # Two writers of one key race as they would on S3: the index may name the other
        # version of an overlapping key, which sync sees as "changed" and sets right.
        engine.sync()
        assert engine.sync(check=True).drift == 0
        assert engine.count({"v": {"$gte": 0}}) == 4500
        for key in ("k00000", "k01500", "k02999", "k04499"):
            assert engine.get(key)["fs_id"] == key


@pytest.fixture
def many_objects(tmp_path: Path) -> Path:
    """A store of 20,000 objects whose index was lost."""
    source = tmp_path / "input.jsonl"
    source.write_bytes(_lines(TOTAL))
    put = _s3idx(tmp_path, "put", str(source), "--field", "v", "-q")
    _, err = put.communicate(timeout=300)
    assert put.returncode == 0, err
    return tmp_path


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (
            ("rebuild-index",),
            "rebuild stopped; the old index is unchanged; run again with --resume",
        ),
        (("sync",), "; interrupted"),
    ],
)
def test_ctrl_c_stops_rebuild_and_sync_cleanly(
    many_objects: Path, command: tuple[str, ...], message: str
) -> None:
    home = many_objects
    (home / "index.sqlite3").unlink()
    process = _s3idx(home, *command)
    _wait_for(lambda: (home / "index.sqlite3").exists())
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)

    assert process.returncode == ExitStatus.INTERRUPTED, err
    assert message in err.decode()
    assert "Traceback" not in err.decode()
    entries, objects = _check_invariant(home)
    assert objects == TOTAL
    if command == ("rebuild-index",):
        assert entries == 0  # nothing swapped in
        resumed = _s3idx(home, "rebuild-index", "--resume", "--json")
        out, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err
        summary = orjson.loads(out)
        assert summary["resumed"] is True
        assert summary["written"] == TOTAL
        assert _check_invariant(home) == (TOTAL, TOTAL)
    else:
        assert 0 < entries < TOTAL  # what was adopted before the stop stays adopted


@pytest.mark.parametrize("delay", [1.0, 1.8, 2.6])
def test_kill_9_during_a_put_on_the_http_transport_never_leaves_an_entry_without_its_object(
    tmp_path: Path, s3_endpoint: str, delay: float
) -> None:
    """The event loop hands outcomes back later than worker threads do; the order of writes
    (object, then entry) must hold all the same when the process dies at any point."""
    from s3idx.store.s3 import S3Store

    total = 1500
    source = tmp_path / "input.jsonl"
    source.write_bytes(_lines(total))
    location = ["--store", "s3://crash/docs", "--endpoint-url", s3_endpoint]
    http = [*location, "--transport", "http", "--field", "v", "--batch-size", "50"]
    request = urllib.request.Request(f"{s3_endpoint}/crash", method="PUT")
    urllib.request.urlopen(request, timeout=10).close()  # the bucket, whenever the kill comes
    process = _s3idx(tmp_path, "put", str(source), *http)
    # Start-up takes ~0.6 s on a quiet machine (much more on a loaded one), and ends when the
    # put has created its index; then about 250 documents a second on moto.
    index = tmp_path / "index.sqlite3"
    started = time.monotonic()
    while not index.exists() and process.poll() is None and time.monotonic() - started < 60:
        time.sleep(0.02)
    time.sleep(max(0.0, delay - 0.6))
    process.kill()
    process.communicate(timeout=30)

    store = S3Store("crash", "docs", endpoint_url=s3_endpoint)
    with Engine(store, SqliteIndex(tmp_path / "index.sqlite3")) as engine:
        entries, objects = entries_and_objects(engine)
        assert entries <= objects < total
        for entry in engine.query({}, fields=["fs_id"]):
            kept = engine.index.bookkeeping([entry["fs_id"]])[entry["fs_id"]][1]
            assert store.head(entry["fs_id"]).etag == kept.etag  # the entry says the truth

    rerun = _s3idx(tmp_path, "put", str(source), *http, "--skip-unchanged", "--json")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    summary = orjson.loads(out)
    assert summary["unchanged"] + summary["stored"] == total
    assert summary["unchanged"] == entries  # objects stored but not indexed are sent again
    with Engine(store, SqliteIndex(tmp_path / "index.sqlite3")) as engine:
        assert entries_and_objects(engine) == (total, total)
