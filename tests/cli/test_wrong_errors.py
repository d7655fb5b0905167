"""Failures that used to get the wrong answer: each gets one clear message and the right status."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx.engine.outputs import open_output
from s3idx.errors import ExitStatus, OutputError
from tests.helpers import Run, json_lines, jsonl, subprocess_env


def test_rejects_file_in_a_missing_directory_is_a_usage_error(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "rejects.jsonl"
    result = run("put", "--rejects", str(target), input=b'{"fs_id": "a"}\n')
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        f"s3idx: error: cannot write --rejects {target}: "
        f"the directory {target.parent} does not exist\n"
    )
    assert "no s3idx index" in run("query").stderr  # nothing was stored


def test_get_output_in_a_missing_directory_is_a_usage_error(run: Run, tmp_path: Path) -> None:
    assert run("put", input=b'{"fs_id": "a"}\n').exit_code == 0
    target = tmp_path / "no-such-dir" / "out.jsonl"
    result = run("get", "a", "-o", str(target))
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        f"s3idx: error: cannot write --output {target}: "
        f"the directory {target.parent} does not exist\n"
    )
    directory = run("get", "a", "-o", str(tmp_path))
    assert directory.exit_code == ExitStatus.USAGE
    assert f"cannot write --output {tmp_path}: it is a directory" in directory.stderr


def _big_lines(count: int) -> bytes:
    return jsonl(*({"fs_id": f"k{i}", "n": i, "pad": "x" * 200} for i in range(count)))


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("cut", [20, 40, 100])
def test_a_truncated_gzip_input_stores_every_line_before_the_cut(
    run: Run, tmp_path: Path, cut: int, processes: str
) -> None:
    data = _big_lines(5000)  # about 1.2 MB: a whole read buffer used to be lost
    whole = gzip.compress(data)
    source = tmp_path / "dump.jsonl.gz"
    damaged = whole[:-4] if cut == 100 else whole[: len(whole) * cut // 100]
    source.write_bytes(damaged)
    readable = zlib.decompressobj(31).decompress(damaged)  # what gzip -dc gives
    lines, partial = readable.count(b"\n"), readable[readable.rfind(b"\n") + 1 :]
    rejects = tmp_path / "rejects.txt"

    result = run("put", str(source), "--json", "--processes", processes, "--rejects", str(rejects))

    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["stored"], summary["rejected"]) == (lines, 1)
    where = f"{len(partial)} bytes into this line" if partial else "before any byte of this line"
    assert result.stderr == (
        f"s3idx: {source}:{lines + 1}: the gzip data ends early (the file is truncated), "
        f"{where}; the lines before it were read\n"
    )
    assert run("query", "--count").stdout == f"{lines}\n"
    # The partial line as read, to see and fix; nothing at all when no byte of it was read.
    assert rejects.read_bytes() == (partial + b"\n" if partial else b"")


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_gzip_input_with_a_bad_crc_on_stdin_stores_every_line(
    run: Run, tmp_path: Path, processes: str
) -> None:
    damaged = bytearray(gzip.compress(_big_lines(3000)))
    damaged[-8] ^= 0xFF
    rejects = tmp_path / "rejects.txt"

    result = run("put", "--processes", processes, "--rejects", str(rejects), input=bytes(damaged))

    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    assert result.stderr.startswith(
        "s3idx: <stdin>:3001: the gzip data is damaged (its CRC-32 checksum does not match the "
        "data), before any byte of this line; the lines before it were read\n"
    )
    assert " 3001 read, 3000 stored, 1 rejected" in result.stderr
    assert run("query", "--count").stdout == "3000\n"
    assert rejects.read_bytes() == b""


@pytest.mark.parametrize("given_by", ["flag", "environment", "config file"])
def test_rebuild_with_another_key_field_refuses_once_before_scanning(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given_by: str
) -> None:
    documents = [{"fs_id": f"k{i}", "other": f"o{i}"} for i in range(50)]
    assert run("put", input=jsonl(*documents)).exit_code == 0
    args = ["rebuild-index"]
    if given_by == "flag":
        args += ["--key", "other"]
    elif given_by == "environment":
        monkeypatch.setenv("S3IDX_KEY", "other")
    else:
        config = tmp_path / "s3idx.toml"
        config.write_text('key = "other"\n')
        args += ["--config", str(config)]

    result = run(*args)

    # The hint works wherever the wrong key came from: "without --key" did not, from the
    # environment or the config file.
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        "s3idx: error: the store's objects were written with key field 'fs_id', not 'other'\n"
        "  hint: run rebuild-index with --key fs_id, or with no key field given (no --key, "
        "S3IDX_KEY or key in the config file)\n"
    )
    assert run("query", "--count").stdout == "50\n"
    assert run("rebuild-index", *args[1:], "--key", "fs_id").exit_code == ExitStatus.OK


def test_an_unknown_aws_profile_is_a_usage_error_naming_the_profiles(
    run: Run, fake_aws_env: Path
) -> None:
    (fake_aws_env / "config").write_text("[profile work]\nregion = eu-west-1\n")
    (fake_aws_env / "credentials").write_text("[home]\naws_access_key_id = x\n")

    result = run("put", "--store", "s3://bucket/docs", "--aws-profile", "wrok", input=b"{}")
    assert result.exit_code == ExitStatus.USAGE
    assert "s3idx: error: AWS profile 'wrok' is not defined; profiles: home, work " in (
        result.stderr
    )


def test_info_with_mongodb_down_prints_what_it_can(run: Run, tmp_path: Path) -> None:
    args = ["--index", "mongodb://ann:s3cret@127.0.0.1:9/db", "--store", str(tmp_path / "s")]
    assert run("put", "--store", str(tmp_path / "s"), input=b'{"fs_id": "a"}\n').exit_code == 0

    result = run("info", "--json", *args)

    assert result.exit_code == ExitStatus.UNAVAILABLE
    data: dict[str, Any] = orjson.loads(result.stdout)
    assert data["store"] == str(tmp_path / "s")
    assert data["index"] == "mongodb://ann:***@127.0.0.1:9/db"
    assert (data["store_status"], data["index_status"]) == ("ok", "unreachable")
    (problem,) = data["problems"]
    assert problem.startswith("cannot reach MongoDB at 127.0.0.1:9")
    assert "s3cret" not in result.stdout + result.stderr
    text = run("info", *args)
    assert text.exit_code == ExitStatus.UNAVAILABLE
    assert "index         mongodb://ann:***@127.0.0.1:9/db" in text.stdout
    assert "index status  unreachable" in text.stdout
    assert "s3idx: error: cannot reach MongoDB at 127.0.0.1:9" in text.stderr
    assert json_lines(run("query", "--store", str(tmp_path / "s")).stdout)[0]["fs_id"] == "a"


def test_a_store_that_cannot_be_opened_leaves_the_index_alone_readable(
    run: Run, tmp_path: Path
) -> None:
    """The store opens at first use: an index-only query needs no S3, info shows the index."""
    index = ["--index", str(tmp_path / "i.sqlite3")]
    assert (
        run("put", "--store", str(tmp_path / "s"), *index, input=b'{"fs_id": "a"}\n').exit_code == 0
    )
    args = ["--store", "s3://bucket/docs", "--aws-profile", "wrok", *index]

    assert run("query", "--count", *args).stdout == "1\n"
    result = run("info", "--json", *args)
    assert result.exit_code == ExitStatus.USAGE
    data: dict[str, Any] = orjson.loads(result.stdout)
    assert (data["store_status"], data["index_status"], data["entries"]) == ("error", "ok", 1)
    assert "AWS profile 'wrok' is not defined" in result.stderr
    full = run("query", "--full", *args)
    assert full.exit_code == ExitStatus.USAGE
    assert full.stdout == ""
    assert full.stderr.startswith("s3idx: error: AWS profile 'wrok' is not defined")


# --- an output that cannot be written (a full disk) is said plainly, never "a bug" ------------

DISK_FULL = "No space left on device"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    "args",
    [
        ["query", "{}"],
        ["query", "--full", "{}"],
        ["get", "a"],
        ["info", "--json"],
        ["put", "--json", "-"],
    ],
    ids=lambda args: " ".join(args),
)
def test_stdout_on_a_full_disk_is_an_error_naming_stdout(tmp_path: Path, args: list[str]) -> None:
    env = subprocess_env(tmp_path / "home")
    stored = subprocess.run(
        [sys.executable, "-m", "s3idx", "put", "-q"], input=b'{"fs_id": "a"}\n', env=env
    )
    assert stored.returncode == 0
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "s3idx", *args],
            input=b'{"fs_id": "b"}\n',
            stdout=full,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
        )
    assert done.returncode == ExitStatus.ERROR
    assert f"s3idx: error: cannot write stdout: {DISK_FULL}\n" in done.stderr.decode()
    assert b"bug" not in done.stderr
    assert b"Traceback" not in done.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_get_output_file_on_a_full_disk_names_the_file(run: Run) -> None:
    assert run("put", input=b'{"fs_id": "a"}\n').exit_code == 0
    result = run("get", "a", "-o", "/dev/full")
    assert result.exit_code == ExitStatus.ERROR
    assert result.stderr == f"s3idx: error: cannot write --output /dev/full: {DISK_FULL}\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_rejects_on_a_full_disk_stop_the_put_and_say_so(run: Run) -> None:
    lines = b'{"fs_id": "a"}\nnot json\n{"fs_id": "c"}\n'
    result = run("put", "--rejects", "/dev/full", input=lines)
    assert result.exit_code == ExitStatus.ERROR
    assert f"s3idx: error: cannot write --rejects /dev/full: {DISK_FULL}\n" in result.stderr
    assert "bug" not in result.stderr


# --- more concurrency than the system allows ------------------------------------------------


@pytest.mark.parametrize("where", ["flag", "environment"])
def test_more_than_1024_workers_is_a_usage_error(run: Run, where: str) -> None:
    if where == "flag":
        result = run("put", "--workers", "5000", input=b'{"fs_id": "a"}\n')
    else:
        result = run("put", input=b'{"fs_id": "a"}\n', env={"S3IDX_WORKERS": "5000"})
    assert result.exit_code == ExitStatus.USAGE
    if where == "flag":  # Typer's range names the flag
        expected = "Invalid value for '--workers': Input should be less than or equal to 1024"
    else:
        expected = "S3IDX_WORKERS: must be at most 1024, got 5000"
    assert expected in result.stderr
    assert "no s3idx index" in run("query").stderr  # nothing was stored


@pytest.mark.skipif(sys.platform != "linux", reason="address-space limit as on Linux")
def test_threads_the_system_refuses_are_said_plainly_not_as_a_bug(tmp_path: Path) -> None:
    """1000 workers under a 1.5 GB address-space limit: thread stacks cannot all be had."""
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1500 << 20, 1500 << 20))

    done = subprocess.run(
        [sys.executable, "-m", "s3idx", "put", "--workers", "1000"],
        input=b'{"fs_id": "a"}\n',
        capture_output=True,
        env=subprocess_env(tmp_path / "home"),
        preexec_fn=limited,
        timeout=120,
    )
    assert done.returncode == ExitStatus.ERROR, done.stderr
    stderr = done.stderr.decode()
    assert "s3idx: error: cannot start a thread: the system refused it" in stderr
    assert "lower --workers" in stderr
    assert "bug" not in stderr and "Traceback" not in stderr


# --- a standard stream closed by the caller (`>&-`, `2>&-`, a daemon's cron) ------------------


def _closing(fd: int) -> Callable[[], None]:
    return lambda: os.close(fd)


def test_a_closed_stdout_is_an_error_naming_stdout(tmp_path: Path) -> None:
    env = subprocess_env(tmp_path / "home")
    stored = subprocess.run(
        [sys.executable, "-m", "s3idx", "put", "-q"], input=b'{"fs_id": "a"}\n', env=env
    )
    assert stored.returncode == 0
    for args in (["query", "{}"], ["--version"]):
        done = subprocess.run(
            [sys.executable, "-m", "s3idx", *args],
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=_closing(1),
            timeout=60,
        )
        assert done.returncode == ExitStatus.ERROR, args
        assert done.stderr.decode().endswith("s3idx: error: cannot write stdout: it is closed\n")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_version_on_a_full_disk_is_an_error(tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "s3idx", "--version"],
            stdout=full,
            stderr=subprocess.PIPE,
            env=subprocess_env(tmp_path / "home"),
            timeout=60,
        )
    assert done.returncode == ExitStatus.ERROR
    assert done.stderr.decode() == f"s3idx: error: cannot write stdout: {DISK_FULL}\n"


def test_a_closed_stderr_does_not_fail_a_put(tmp_path: Path) -> None:
    """Messages have nowhere to go; the exit status still says how the put went."""
    env = subprocess_env(tmp_path / "home")
    for lines, status in ((b'{"fs_id": "a"}\n', 0), (b'{"fs_id": "b"}\nnot json\n', 3)):
        done = subprocess.run(
            [sys.executable, "-m", "s3idx", "put"],
            input=lines,
            stdout=subprocess.PIPE,
            env=env,
            preexec_fn=_closing(2),
            timeout=60,
        )
        assert done.returncode == status
    count = subprocess.run(
        [sys.executable, "-m", "s3idx", "query", "--count"], capture_output=True, env=env
    )
    assert count.stdout == b"2\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_an_output_closed_after_a_failure_does_not_hide_it() -> None:
    """The error that stopped a command is reported, not the full disk its output's close met."""
    with pytest.raises(KeyboardInterrupt), open_output("/dev/full", "--rejects") as rejects:
        rejects.write(b"held in the buffer until the close\n")
        raise KeyboardInterrupt
    full = pytest.raises(OutputError, match="cannot write --rejects /dev/full: No space left")
    with full, open_output("/dev/full", "--rejects") as rejects:
        rejects.write(b"held in the buffer until the close\n")


def _a_damaged_sqlite_file(path: Path, run: Run, store: Path) -> None:
    assert run("put", "--store", str(store), "--index", str(path), input=b'{"fs_id": "a"}\n')
    data = bytearray(path.read_bytes())
    data[100::7] = b"\xab" * len(data[100::7])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("kind", "status", "exit_status", "problem"),
    [
        ("not a database", "damaged", ExitStatus.UNAVAILABLE, "is not a usable SQLite database"),
        ("damaged", "damaged", ExitStatus.UNAVAILABLE, "is not a usable SQLite database"),
        ("directory", "error", ExitStatus.USAGE, "is a directory, not a SQLite file"),
    ],
)
def test_info_says_what_is_wrong_with_an_index_file_not_unreachable(
    run: Run, tmp_path: Path, kind: str, status: str, exit_status: ExitStatus, problem: str
) -> None:
    """README: `unreachable` is a server out of reach (MongoDB down); a file is never that."""
    store, index = tmp_path / "s", tmp_path / "i.sqlite3"
    assert run("put", "--store", str(store), input=b'{"fs_id": "a"}\n').exit_code == 0
    if kind == "not a database":
        index.write_bytes(b"x\n")
    elif kind == "damaged":
        _a_damaged_sqlite_file(index, run, store)
    else:
        index.mkdir()

    result = run("info", "--json", "--store", str(store), "--index", str(index))

    assert result.exit_code == exit_status, result.stderr
    data: dict[str, Any] = orjson.loads(result.stdout)
    assert (data["store_status"], data["index_status"]) == ("ok", status)
    (shown,) = data["problems"]
    assert problem in shown


def test_info_on_an_index_file_it_may_not_read_says_error(tmp_path: Path) -> None:
    from tests.helpers import unprivileged_prefix

    index = tmp_path / "i.sqlite3"
    env = subprocess_env(tmp_path / "home")
    args = ["--store", str(tmp_path / "s"), "--index", str(index)]
    put = [sys.executable, "-m", "s3idx", "put", *args]
    subprocess.run(put, input=b'{"fs_id": "a"}\n', env=env, check=True, capture_output=True)
    index.chmod(0)
    try:
        done = subprocess.run(
            [*unprivileged_prefix(), sys.executable, "-m", "s3idx", "info", "--json", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        index.chmod(0o644)
    assert done.returncode == ExitStatus.UNAVAILABLE, done.stderr
    data = orjson.loads(done.stdout)
    assert (data["store_status"], data["index_status"]) == ("ok", "error")
    assert f"cannot open index {index}" in done.stderr
