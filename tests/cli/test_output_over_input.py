"""An output file (``--rejects``, ``get -o``) that is also an input is refused before any write."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, json_lines, subprocess_env

INPUT = b'{"fs_id": "a", "n": 1}\n{"fs_id": "b"}\n'


def _same(path: Path) -> str:
    return str(path)


def _relative(path: Path) -> str:
    return os.path.relpath(path)


def _dotted(path: Path) -> str:
    return str(path.parent / "." / ".." / path.parent.name / path.name)


def _symlink(path: Path) -> str:
    link = path.parent / "link.jsonl"
    link.symlink_to(path)
    return str(link)


def _hard_link(path: Path) -> str:
    link = path.parent / "hard.jsonl"
    os.link(path, link)
    return str(link)


SPELLINGS: dict[str, Callable[[Path], str]] = {
    "same": _same,
    "relative": _relative,
    "dotted": _dotted,
    "symlink": _symlink,
    "hard link": _hard_link,
}


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_rejects_that_is_the_input_is_refused(
    run: Run, tmp_path: Path, spelling: str, dry_run: bool
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(INPUT)
    rejects = SPELLINGS[spelling](source)

    args = ["put", str(source), "--rejects", rejects] + (["--dry-run"] if dry_run else [])
    result = run(*args)

    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert f"--rejects {rejects} is the input file {source}" in result.stderr
    assert source.read_bytes() == INPUT
    assert json_lines(run("query").stdout) == []


def test_rejects_over_one_of_several_inputs_or_gz_is_refused(run: Run, tmp_path: Path) -> None:
    first = tmp_path / "a.jsonl"
    second = tmp_path / "b.jsonl"
    first.write_bytes(INPUT)
    second.write_bytes(b'{"fs_id": "c"}\n')
    result = run("put", str(first), str(second), "--rejects", str(second))
    assert result.exit_code == ExitStatus.USAGE
    assert second.read_bytes() == b'{"fs_id": "c"}\n'


def _located(tmp_path: Path) -> dict[str, str]:
    return {
        "--store": str(tmp_path / "store"),
        "--index": str(tmp_path / "index.sqlite3"),
    }


@pytest.mark.parametrize(
    "target",
    ["index", "index journal", "store marker", "store object", "new file in store", "config"],
)
@pytest.mark.parametrize("command", ["put --rejects", "get -o"])
def test_output_over_the_index_the_store_or_the_config_is_refused(
    run: Run, tmp_path: Path, target: str, command: str
) -> None:
    locations = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]
    config = tmp_path / "config.toml"
    config.write_text(f'store = "{tmp_path / "store"}"\n')
    assert run("put", *locations, input=INPUT).exit_code == 0
    paths = {
        "index": tmp_path / "index.sqlite3",
        "index journal": tmp_path / "index.sqlite3-wal",
        "store marker": tmp_path / "store" / "s3idx-store.json",
        "store object": tmp_path / "store" / "objects" / "a~",
        "new file in store": tmp_path / "store" / "objects" / "new",
        "config": config,
    }
    output = paths[target]
    before = output.read_bytes() if output.exists() else None
    source = tmp_path / "more.jsonl"
    source.write_bytes(b"not json\n")

    flags = ["--config", str(config), *locations]
    if command == "put --rejects":
        result = run("put", str(source), "--rejects", str(output), *flags)
    else:
        result = run("get", "a", "-o", str(output), *flags)

    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert "refusing to write" in result.stderr
    assert (output.read_bytes() if output.exists() else None) == before
    assert [e["fs_id"] for e in json_lines(run("query", *locations).stdout)] == ["a", "b"]


def test_output_that_is_a_directory_is_a_clear_error(run: Run, tmp_path: Path) -> None:
    result = run("get", "a", "-o", str(tmp_path))
    assert result.exit_code == ExitStatus.USAGE
    assert f"cannot write --output {tmp_path}: it is a directory" in result.stderr
    assert "internal error" not in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
@pytest.mark.parametrize("args", [[], ["-"], ["/dev/stdin"]])
def test_rejects_that_is_the_file_on_stdin_is_refused(tmp_path: Path, args: list[str]) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(INPUT)
    with open(source, "rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "s3idx", "put", *args, "--rejects", "in.jsonl"],
            stdin=stdin,
            capture_output=True,
            cwd=tmp_path,
            env=subprocess_env(tmp_path / "home"),
            timeout=60,
        )
    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert b"is the input file" in done.stderr
    assert source.read_bytes() == INPUT


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and /dev/fd name a pipe")
@pytest.mark.parametrize("args", [[], ["-"]])
@pytest.mark.parametrize("rejects", ["/dev/stdin", "/proc/self/fd/0", "/dev/fd/0"])
def test_rejects_that_is_the_pipe_on_stdin_is_refused(
    tmp_path: Path, args: list[str], rejects: str
) -> None:
    """Opening the pipe s3idx reads for writing would hold its write end open: the input would
    never end. Refused, as a file on stdin is, and never opened (a timeout fails a hang)."""
    done = subprocess.run(
        [sys.executable, "-m", "s3idx", "put", *args, "--rejects", rejects],
        input=b"bad\n" + INPUT,
        capture_output=True,
        cwd=tmp_path,
        env=subprocess_env(tmp_path / "home"),
        timeout=60,
    )
    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert done.stderr.decode() == (
        f"s3idx: error: refusing to write: --rejects {rejects} is the input file on stdin\n"
        "  hint: give --rejects a path of its own\n"
    )
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*~"))


@pytest.mark.skipif(sys.platform != "linux", reason="/proc names a socket")
def test_rejects_that_is_the_socket_on_stdin_is_refused(tmp_path: Path) -> None:
    import socket

    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(b"bad\n")
        ours.shutdown(socket.SHUT_WR)
        done = subprocess.run(
            [sys.executable, "-m", "s3idx", "put", "--rejects", "/proc/self/fd/0"],
            stdin=theirs.fileno(),
            capture_output=True,
            env=subprocess_env(tmp_path / "home"),
            timeout=60,
        )
    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert b"--rejects /proc/self/fd/0 is the input file on stdin" in done.stderr


def test_rejects_elsewhere_with_a_pipe_on_stdin_is_written(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "s3idx", "put", "--rejects", "rejects.jsonl"],
        input=b"bad\n" + INPUT,
        capture_output=True,
        cwd=tmp_path,
        env=subprocess_env(tmp_path / "home"),
        timeout=60,
    )
    assert done.returncode == ExitStatus.PARTIAL, done.stderr
    assert (tmp_path / "rejects.jsonl").read_bytes() == b"bad\n"
