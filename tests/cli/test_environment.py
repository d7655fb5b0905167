"""The CLI reads and writes only through its Environment, and maps every outcome in one place.

``cli.main(args, env=...)`` and ``run(..., obj=env)`` give a command in-memory streams with
terminal flags of the test's choosing: no monkeypatching of ``sys`` or ``isatty``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import cli
from s3idx.engine.core import Engine
from s3idx.environment import Environment
from s3idx.errors import ExitStatus
from tests.helpers import (
    Run,
    json_lines,
    jsonl,
    kept_signal_handlers,
    main_status,
    memory_environment,
    written,
)

DOCS = [{"fs_id": "a", "v": 1}, {"fs_id": "b", "v": 2}]
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.fixture(autouse=True)
def signal_handlers() -> Iterator[None]:
    with kept_signal_handlers():
        yield


@pytest.fixture
def locations(tmp_path: Path) -> list[str]:
    args = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]
    env = memory_environment(jsonl(*DOCS))
    assert main_status(env, "put", "--field", "v", *args) == 0, written(env.stderr)
    return args


def test_put_reads_the_environments_stdin_and_reports_on_its_stderr(tmp_path: Path) -> None:
    args = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]
    log = memory_environment(jsonl(*DOCS))
    assert main_status(log, "put", *args) == 0
    assert written(log.stdout) == ""
    summary = STAMP + r" s3idx: put: 2 read, 2 stored, 0 rejected in .*\n"
    assert re.fullmatch(summary, written(log.stderr))

    terminal = memory_environment(jsonl({"fs_id": "c"}), stderr_isatty=True)
    assert main_status(terminal, "put", "-q", *args) == 0
    assert written(terminal.stderr) == ""  # -q: nothing, and no progress bar on a terminal

    got = memory_environment()
    assert main_status(got, "get", "a", "b", "c", *args) == 0
    assert json_lines(written(got.stdout)) == [*DOCS, {"fs_id": "c"}]


def test_query_draws_a_table_only_when_the_environments_stdout_is_a_terminal(
    locations: list[str],
) -> None:
    piped = memory_environment()
    assert main_status(piped, "query", "--fields", "v", *locations) == 0
    assert json_lines(written(piped.stdout)) == DOCS

    terminal = memory_environment(stdout_isatty=True)
    assert main_status(terminal, "query", "--fields", "v", *locations) == 0
    table = written(terminal.stdout)
    assert re.search(r"fs_id\s*\S\s*v\b", table), table
    assert "{" not in table


def test_a_filter_file_dash_is_the_environments_stdin(locations: list[str]) -> None:
    env = memory_environment(b'{"v": 2}')
    assert main_status(env, "query", "--filter-file", "-", "--count", *locations) == 0
    assert written(env.stdout) == "1\n"
    deleted = memory_environment(b'{"v": 1}')
    assert main_status(deleted, "delete", "--filter-file", "-", "--json", *locations) == 0
    assert orjson.loads(written(deleted.stdout))["deleted"] == 1


def test_a_refused_command_line_gives_one_json_document_on_the_environments_stdout() -> None:
    env = memory_environment()
    assert main_status(env, "put", "--json", "--workers", "0") == ExitStatus.USAGE
    document = orjson.loads(written(env.stdout))
    assert document["exit_status"] == ExitStatus.USAGE
    assert "--workers" in document["error"]
    assert "Usage: s3idx put" in written(env.stderr)


def test_an_error_is_mapped_once_with_its_status_and_one_json_document(
    locations: list[str],
) -> None:
    env = memory_environment()
    assert main_status(env, "delete", "--json", *locations) == ExitStatus.USAGE
    assert orjson.loads(written(env.stdout)) == {
        "error": "nothing to delete: give KEY arguments or --filter FILTER",
        "exit_status": ExitStatus.USAGE,
    }
    assert written(env.stderr) == (
        "s3idx: error: nothing to delete: give KEY arguments or --filter FILTER\n"
    )


def test_query_json_lines_get_no_error_document(locations: list[str]) -> None:
    env = memory_environment()
    assert main_status(env, "query", "--json", "{bad", *locations) == ExitStatus.USAGE
    assert written(env.stdout) == ""  # --json of query means JSON lines, not one summary
    assert written(env.stderr).startswith("s3idx: error: ")


@pytest.mark.parametrize(
    "argv",
    [
        ("query", "--json", "--limit", "x"),  # --json of query: JSON lines
        ("query", "--json", "--bogus"),
        ("get", "--json", "k"),  # get has no --json
        ("--json", "put"),  # before the command: no command's flag
        ("put", "--workers", "x", "--", "--json"),  # after --: a file name
        ("put", "--store", "--json", "--workers", "x"),  # a value
    ],
)
def test_a_refused_command_line_gives_a_document_only_where_json_promises_one(
    argv: tuple[str, ...],
) -> None:
    env = memory_environment()
    assert main_status(env, *argv) == ExitStatus.USAGE
    assert written(env.stdout) == ""
    assert "Error: " in written(env.stderr)


def test_a_bug_is_one_line_unless_the_environment_asks_for_the_traceback(
    locations: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Engine, spec: Any) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(Engine, "count", broken)
    env = memory_environment()
    assert main_status(env, "query", "--count", *locations) == ExitStatus.ERROR
    assert written(env.stderr) == (
        "s3idx: error: internal error: RuntimeError: boom\n"
        "  hint: this is a bug in s3idx; run again with S3IDX_DEBUG=1 for the traceback\n"
    )
    debug = memory_environment(environ={"S3IDX_DEBUG": "1"})
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["query", "--count", *locations], env=debug)


def test_ctrl_c_outside_a_cooperating_step_is_exit_130_with_its_json_document(
    run: Run, locations: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: Engine, *args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "delete", interrupted)
    env = memory_environment()
    result = run("delete", "a", "--json", *locations, obj=env)
    assert result.exit_code == ExitStatus.INTERRUPTED
    assert orjson.loads(written(env.stdout)) == {
        "error": "interrupted",
        "exit_status": ExitStatus.INTERRUPTED,
    }
    assert written(env.stderr) == "s3idx: interrupted\n"


class _ClosedPipe(io.BytesIO):
    def write(self, data: Any) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_that_went_away_is_not_an_error(locations: list[str]) -> None:
    env = memory_environment()
    closed = io.TextIOWrapper(_ClosedPipe(), encoding="utf-8")
    env = Environment(stdin=env.stdin, stdout=closed, stderr=env.stderr, environ=env.environ)
    assert main_status(env, "get", "a", "b", *locations) == ExitStatus.OK
    assert written(env.stderr) == ""


def _closed_pipe_environment() -> Environment:
    env = memory_environment()
    closed = io.TextIOWrapper(_ClosedPipe(), encoding="utf-8")
    return Environment(stdin=env.stdin, stdout=closed, stderr=env.stderr, environ=env.environ)


@pytest.mark.parametrize("command", [["sync", "--check"], ["verify"], ["sync", "--dry-run"]])
def test_a_verdict_cut_short_by_a_reader_that_went_away_is_not_success(
    locations: list[str], tmp_path: Path, command: list[str]
) -> None:
    """`s3idx verify | true`: the run stopped at its first line of output, so what it did
    not check cannot be called sound; exit 0 would tell a monitoring script it is."""
    for path in (tmp_path / "store" / "objects").iterdir():
        if path.is_file():
            path.unlink()  # every entry is now drift: the command writes a line for each
    env = _closed_pipe_environment()
    assert main_status(env, *command, *locations) == ExitStatus.ERROR
    assert written(env.stderr) == (
        "s3idx: error: stdout was closed (its reader went away) before the command finished\n"
        "  hint: what it did not check or do is not known; run it again with its output read "
        "to the end (or sent to a file)\n"
    )
