"""An input file s3idx may not read is the user's to fix, as a missing one is: exit 2 (usage),
named, with a hint, before anything is stored, not exit 5 (a backend unavailable).

File permissions are real here: each command runs in its own process, as root under
``setpriv`` without the capabilities that let root read any file (as tests/test_local_denied.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3idx import open_engine
from s3idx.errors import ExitStatus, UsageError
from tests.helpers import Run, jsonl, subprocess_env, unprivileged_prefix

GOOD = jsonl({"fs_id": "a"}, {"fs_id": "b"})
PERMISSION_HINT = (
    "  hint: check the permissions of the file and of the directories above it, "
    "or run s3idx as a user who may read it\n"
)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for path in tmp_path.rglob("*"):  # so pytest can remove tmp_path
        if not path.is_symlink():
            path.chmod(0o755)


def _s3idx(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*unprivileged_prefix(), sys.executable, "-m", "s3idx", *args],
        env=subprocess_env(home / "s3idx-home"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or home,
    )


def _nothing_stored(home: Path) -> bool:
    return not (home / "s3idx-home").exists() or not any((home / "s3idx-home").rglob("*~"))


@pytest.mark.parametrize("processes", ["1", "2"])
def test_an_input_file_it_may_not_read_is_a_usage_error_before_anything_is_stored(
    home: Path, processes: str
) -> None:
    good = home / "good.jsonl"
    good.write_bytes(GOOD)
    unread = home / "unread.jsonl"
    unread.write_bytes(GOOD)
    unread.chmod(0)

    done = _s3idx(
        home, "put", "good.jsonl", "unread.jsonl", "--rejects", "r.jsonl", "--processes", processes
    )

    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert done.stderr == (
        "s3idx: error: input file unread.jsonl cannot be read: Permission denied\n"
        + PERMISSION_HINT
    )
    assert _nothing_stored(home)
    assert not (home / "r.jsonl").exists()  # no output opened either


def test_an_input_file_in_a_directory_it_may_not_search_is_a_usage_error(home: Path) -> None:
    closed = home / "closed"
    closed.mkdir()
    (closed / "in.jsonl").write_bytes(GOOD)
    closed.chmod(0)

    done = _s3idx(home, "put", "closed/in.jsonl")

    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert done.stderr == (
        "s3idx: error: input file closed/in.jsonl cannot be read: Permission denied\n"
        + PERMISSION_HINT
    )
    assert _nothing_stored(home)


def test_a_named_pipe_it_may_not_read_is_a_usage_error_without_opening_it(home: Path) -> None:
    fifo = home / "fifo"
    os.mkfifo(fifo, 0)  # opening it to read would wait for a writer: it is not opened

    done = _s3idx(home, "put", "fifo")

    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert done.stderr == (
        "s3idx: error: input file fifo cannot be read: Permission denied\n" + PERMISSION_HINT
    )


def test_a_filter_file_it_may_not_read_is_a_usage_error(home: Path) -> None:
    assert _s3idx(home, "put", input_file(home)).returncode == 0
    unread = home / "filter.json"
    unread.write_text('{"fs_id": "a"}')
    unread.chmod(0)
    for command in (["query"], ["delete"]):
        done = _s3idx(home, *command, "--filter-file", "filter.json")
        assert done.returncode == ExitStatus.USAGE, done.stderr
        assert done.stderr == (
            "s3idx: error: cannot read --filter-file filter.json: Permission denied\n"
            + PERMISSION_HINT
        )


def input_file(home: Path) -> str:
    path = home / "in.jsonl"
    path.write_bytes(GOOD)
    return str(path)


def test_an_input_that_is_a_directory_is_a_usage_error_with_a_hint(
    run: Run, tmp_path: Path
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(GOOD)
    result = run("put", str(good), str(tmp_path))
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        f"s3idx: error: input file {tmp_path} is a directory\n"
        f"  hint: give the files in it, e.g. s3idx put {tmp_path}/*.jsonl\n"
    )
    assert "no s3idx index at " in run("query", "--count").stderr


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_put_files_refuses_an_input_it_cannot_read_before_storing_any(
    tmp_path: Path, what: str
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(GOOD)
    bad = tmp_path / "missing.jsonl" if what == "missing" else tmp_path
    engine = open_engine(store=str(tmp_path / "store"), index=str(tmp_path / "i.sqlite3"))
    with engine, pytest.raises(UsageError, match=f"^input file {bad} "):
        engine.put_files([good, bad])
    assert not any((tmp_path / "store").rglob("*~"))  # good.jsonl's documents neither
