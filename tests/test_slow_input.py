"""Input trickling through a pipe (``tail -f … | s3idx put``) is indexed as it arrives."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import subprocess_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")


def _query(home: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "s3idx", "query", "--fields", "fs_id"],
        env=subprocess_env(home),
        capture_output=True,
        timeout=60,
    )
    if done.returncode == ExitStatus.NOT_FOUND and b"no s3idx index at " in done.stderr:
        return []  # put has not created its index yet (querying a missing one is refused)
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line)["fs_id"] for line in done.stdout.splitlines()]


def _stored(home: Path) -> int:
    return len(list((home / "store" / "objects").glob("*~")))


def test_entries_of_a_slow_pipe_are_queryable_while_put_still_runs(tmp_path: Path) -> None:
    put = subprocess.Popen(
        [sys.executable, "-m", "s3idx", "put", "--field", "n"],
        env=subprocess_env(tmp_path),
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert put.stdin is not None
    try:
        for n in range(2):
            put.stdin.write(orjson.dumps({"fs_id": f"k{n}", "n": n}) + b"\n")
            put.stdin.flush()
            expected = [f"k{i}" for i in range(n + 1)]
            # Far fewer than --batch-size documents and no end of input: the entries must come
            # anyway. The deadline only bounds a failing run; nothing here measures speed.
            deadline = time.monotonic() + 30
            while sorted(_query(tmp_path)) != expected:
                assert time.monotonic() < deadline, f"entries never came: {_query(tmp_path)}"
                time.sleep(0.5)
            assert put.poll() is None  # still running: its input has not ended
        # A sync --check during the long put sees no drift once entries have caught up.
        check = subprocess.run(
            [sys.executable, "-m", "s3idx", "sync", "--check"],
            env=subprocess_env(tmp_path),
            capture_output=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stderr
        assert _stored(tmp_path) == 2
        _, err = put.communicate(timeout=60)  # the end of input
    finally:
        if put.poll() is None:
            put.kill()
            put.wait()
    assert put.returncode == ExitStatus.OK, err
    assert b"2 read, 2 stored, 0 rejected" in err
