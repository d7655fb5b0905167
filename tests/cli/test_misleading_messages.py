"""Messages that pointed the wrong way: a hint suggesting a command that is then refused, an
empty path shown as ``.``, a directory given as the index taken for a missing one."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, jsonl


@pytest.fixture
def loaded(run: Run) -> Run:
    assert run("put", "--field", "n", input=jsonl({"fs_id": "q1", "n": 1})).exit_code == 0
    return run


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "a field path has no empty part"),
        (".n", "a field path has no empty part"),
        ("a..b", "a field path has no empty part"),
        ("a.$b", "no part of a field path starts with '$'"),
        ("a\tb", "a field path has no control characters"),
    ],
)
def test_a_filter_on_a_path_no_field_can_have_suggests_no_reindex(
    loaded: Run, path: str, reason: str
) -> None:
    result = loaded("query", f'{{"{path}": 1}}'.replace("\t", "\\t"))
    assert result.exit_code == ExitStatus.USAGE
    assert "reindex" not in result.stderr
    assert result.stderr.endswith(f"  hint: no field can be indexed at this path: {reason}\n")


def test_a_filter_on_a_field_not_indexed_still_suggests_reindex(loaded: Run) -> None:
    result = loaded("query", '{"m": 1}')
    assert "hint: to index it, run `s3idx reindex --field m`" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["get", "-o", "", "q1"],
        ["get", "--output", "", "q1"],
        ["put", "--rejects", ""],
        ["query", "--filter-file", ""],
        ["delete", "--filter-file", ""],
    ],
)
def test_an_empty_path_is_said_to_be_empty(loaded: Run, args: list[str]) -> None:
    result = loaded(*args, input=jsonl({"fs_id": "q2"}))
    assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, "")
    flag = args[1] if args[1] != "-o" else "--output"
    assert result.stderr == f"s3idx: error: {flag} is an empty path\n  hint: give a file name\n"


@pytest.mark.parametrize("command", ["put", "query", "info"])
def test_a_directory_given_as_the_index_is_said_to_be_one(
    run: Run, tmp_path: Path, command: str
) -> None:
    directory = tmp_path / "somedir"
    directory.mkdir()
    store = ["--store", str(tmp_path / "store")]
    result = run(command, "--index", str(directory), *store, input=jsonl({"fs_id": "a"}))
    # info reports the store too, and its problem (none there) comes first
    assert result.exit_code == (ExitStatus.NOT_FOUND if command == "info" else ExitStatus.USAGE)
    assert (
        f"s3idx: error: index {directory} is a directory, not a SQLite file\n"
        f"  hint: give the path of a SQLite file, such as {directory / 'index.sqlite3'}\n"
    ) in result.stderr
    assert list(directory.iterdir()) == []
