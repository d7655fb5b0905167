"""An input that fails while put reads it (an I/O error, a file gone by the time its turn
comes) ends the input there: every document read before it is stored, indexed and counted,
as at the input's end, and then the run fails with that input's error, never 0.

Before, the documents read but not yet handed to an upload were dropped without a word (the
summary said "0 read"), and with --processes the lines routed to workers were lost too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import subprocess_env

UNREADABLE = Path("/proc/self/clear_refs")  # opens, and every read fails (EINVAL)
COUNT = 500  # fewer than a batch: none of them would have been flushed before the failure


def _documents(prefix: str, count: int) -> bytes:
    return b"".join(b'{"fs_id": "%s%04d"}\n' % (prefix.encode(), i) for i in range(count))


def _s3idx(home: Path, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "s3idx", *args],
        env=subprocess_env(home / "s3idx-home"),
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,  # type: ignore[call-overload]
    )


def _keys(home: Path) -> set[str]:
    query = _s3idx(home, "query", "{}", "--fields", "fs_id")
    out, err = query.communicate(timeout=120)
    assert query.returncode == 0, err
    return {orjson.loads(line)["fs_id"] for line in out.splitlines()}


def _unreadable() -> Path:
    try:
        with open(UNREADABLE, "rb") as opened:
            opened.read(1)
    except OSError:
        return UNREADABLE
    pytest.skip(f"{UNREADABLE} is not a file that opens and cannot be read here")


@pytest.mark.parametrize("processes", ["1", "2"])
def test_an_input_that_fails_while_read_ends_the_input_there(
    tmp_path: Path, processes: str
) -> None:
    unreadable = _unreadable()
    (tmp_path / "docs.jsonl").write_bytes(_documents("k", COUNT))
    put = _s3idx(tmp_path, "put", "docs.jsonl", str(unreadable), "--json", "--processes", processes)
    out, err = put.communicate(timeout=120)
    assert put.returncode == ExitStatus.UNAVAILABLE, err
    assert f"s3idx: error: cannot read {unreadable}: ".encode() in err
    assert (
        b"hint: the documents read before it are put as usual (the summary counts them); "
        b"put /proc/self/clear_refs again once it can be read\n"
    ) in err
    summary = orjson.loads(out)
    assert (summary["read"], summary["stored"], summary["unstored"]) == (COUNT, COUNT, 0)
    assert summary["exit_status"] == ExitStatus.UNAVAILABLE
    assert _keys(tmp_path) == {f"k{i:04d}" for i in range(COUNT)}


@pytest.mark.parametrize("processes", ["1", "2"])
def test_an_input_gone_when_its_turn_comes_ends_the_input_there(
    tmp_path: Path, processes: str
) -> None:
    """The first input is a pipe; the second file is removed once the pipe has been read."""
    fifo = tmp_path / "first"
    os.mkfifo(fifo)
    (tmp_path / "second.jsonl").write_bytes(_documents("z", 3))
    put = _s3idx(tmp_path, "put", "first", "second.jsonl", "--json", "--processes", processes)

    def feed() -> None:
        with open(fifo, "wb") as pipe:
            pipe.write(_documents("p", COUNT))
            (tmp_path / "second.jsonl").unlink()

    writer = threading.Thread(target=feed)
    writer.start()
    out, err = put.communicate(timeout=120)
    writer.join()
    assert put.returncode == ExitStatus.USAGE, err
    assert b"s3idx: error: input file second.jsonl does not exist" in err
    summary = orjson.loads(out)
    assert (summary["read"], summary["stored"], summary["unstored"]) == (COUNT, COUNT, 0)
    assert _keys(tmp_path) == {f"p{i:04d}" for i in range(COUNT)}
