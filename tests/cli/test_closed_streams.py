"""Standard streams a process was started without (`<&-`), and outputs that fail when closed.

Each is the user's setup, not a bug: a usage error or an output error saying which stream, never
an internal error, and with `--json` still exactly one JSON document.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.helpers import jsonl, subprocess_env

DOCS = [{"fs_id": "a", "v": 1}, {"fs_id": "b", "v": 2}]


def _shell(home: Path, command: str) -> subprocess.CompletedProcess[str]:
    """``s3idx COMMAND`` run by a shell, so redirections such as ``<&-`` apply."""
    script = f"{shlex.quote(sys.executable)} -m s3idx {command}"
    return subprocess.run(
        ["bash", "-c", script],
        env=subprocess_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(jsonl(*DOCS))
    done = _shell(home, f"put --field v {shlex.quote(str(docs))}")
    assert done.returncode == 0, done.stderr
    return home


CLOSED_STDIN = "'-' reads stdin, which is closed"


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("put - <&-", f"s3idx: error: {CLOSED_STDIN}"),
        ("put docs.jsonl - <&-", f"s3idx: error: {CLOSED_STDIN}"),
        ("query --filter-file - <&-", f"s3idx: error: --filter-file {CLOSED_STDIN}"),
        ("delete --filter-file - --dry-run <&-", f"s3idx: error: --filter-file {CLOSED_STDIN}"),
    ],
)
def test_dash_with_stdin_closed_is_a_usage_error(home: Path, command: str, message: str) -> None:
    (home.parent / "docs.jsonl").write_bytes(jsonl({"fs_id": "c"}))
    done = _shell(home, f"{command.replace('docs.jsonl', str(home.parent / 'docs.jsonl'))}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[0] == message
    assert "internal error" not in done.stderr
    count = _shell(home, "query --count")
    assert count.stdout == "2\n"  # nothing stored, nothing deleted


@pytest.mark.parametrize("command", ["put - --json <&-", "delete --filter-file - --json <&-"])
def test_dash_with_stdin_closed_gives_one_json_document(home: Path, command: str) -> None:
    done = _shell(home, command)
    assert done.returncode == 2, done.stderr
    document = orjson.loads(done.stdout)
    assert document["exit_status"] == 2
    assert CLOSED_STDIN in document["error"]


FULL = "/dev/full"


@pytest.mark.skipif(not Path(FULL).exists(), reason="needs /dev/full")
@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("bad_lines", [1, 5000])
def test_rejects_on_a_full_disk_still_report_the_runs_counts(
    tmp_path: Path, processes: str, bad_lines: int
) -> None:
    """The rejects file is written through a buffer, so a full disk shows when it is closed,
    after the last document (one reject), or at a later reject (many; with --processes, all
    at the end of the run): the summary and `--json` still say what was read and stored."""
    home = tmp_path / "home"
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(jsonl(*DOCS) + b"bad\n" * bad_lines)
    put = f"put --processes {processes} --rejects {FULL} {shlex.quote(str(docs))}"
    done = _shell(home, f"{put} --json")
    assert done.returncode == 1, done.stderr
    document = orjson.loads(done.stdout)
    assert document["error"] == f"cannot write --rejects {FULL}: No space left on device"
    assert document["stored"] == 2
    assert document["exit_status"] == 1
    assert _shell(home, "query --count").stdout == "2\n"
    if bad_lines > 1:
        return  # where the full disk shows depends on the buffer's size
    assert (document["read"], document["rejected"]) == (3, 1)

    again = _shell(home, put)
    assert again.returncode == 1, again.stderr
    lines = again.stderr.splitlines()
    assert (
        lines[0]
        == f"s3idx: {docs}:3: invalid JSON: unexpected character, expected a JSON value at column 1"
    )
    assert " s3idx: put: 3 read, 2 stored, 1 rejected in " in lines[1]
    assert lines[2] == f"s3idx: error: cannot write --rejects {FULL}: No space left on device"


# --- a stderr whose reader went away (`2>&1 | head -1`) ------------------------------------


def _with_stderr_gone(home: Path, *args: str, both: bool = False) -> int:
    """The exit status of ``s3idx ARGS`` whose stderr (and stdout too, with ``both``, as
    ``2>&1 | head``) is a pipe nobody reads: closed before the command writes to it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "s3idx", *args],
        env=subprocess_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if both else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if both else subprocess.PIPE,
    )
    pipe = process.stdout if both else process.stderr
    assert pipe is not None
    pipe.close()  # long before the interpreter has started: every write to it fails
    return process.wait(timeout=120)


@pytest.mark.parametrize("both", [False, True], ids=["stderr", "stdout-and-stderr"])
@pytest.mark.parametrize(
    ("args", "status"),
    [
        (("verify", "--store", "MISSING"), 4),
        (("sync", "--check", "--store", "MISSING"), 4),
        (("get", "nope"), 4),
        (("query", "{bad"), 2),
        (("delete", "--filter", "{}"), 2),
        (("put", "--workers", "0", "-"), 2),
    ],
)
def test_a_reader_gone_from_stderr_keeps_the_exit_status(
    home: Path, args: tuple[str, ...], status: int, both: bool
) -> None:
    args = tuple(str(home.parent / a) if a == "MISSING" else a for a in args)
    assert _with_stderr_gone(home, *args, both=both) == status


def test_a_put_whose_stderr_reader_went_away_still_stores_and_exits_0(home: Path) -> None:
    docs = home.parent / "more.jsonl"
    docs.write_bytes(jsonl(*[{"fs_id": f"m{n}", "v": n} for n in range(50)]))
    assert _with_stderr_gone(home, "put", str(docs)) == 0
    count = _shell(home, "query --count")
    assert count.stdout == "52\n", count.stderr
