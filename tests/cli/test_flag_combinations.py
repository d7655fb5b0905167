"""Flags that cannot matter together are a usage error naming both and why, never ignored
(README: `query`'s and `delete`'s flag tables)."""

from __future__ import annotations

import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, jsonl


@pytest.fixture
def loaded(run: Run) -> Run:
    put = run(
        "put", "--field", "n", input=jsonl({"fs_id": "k01", "n": 1}, {"fs_id": "k02", "n": 2})
    )
    assert put.exit_code == 0, put.stderr
    return run


COUNT_WHY = "a count is the same whatever is shown of each match, in whatever order"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "--full"], f"--count goes without --full: {COUNT_WHY}"),
        (["--count", "--fields", "n"], f"--count goes without --fields: {COUNT_WHY}"),
        (["--count", "--sort", "n"], f"--count goes without --sort: {COUNT_WHY}"),
        (
            ["--workers", "4"],
            "--workers goes with --full: only --full reads documents from the store",
        ),
        (
            ["--count", "--workers", "4"],
            "--workers goes with --full: only --full reads documents from the store",
        ),
    ],
)
def test_query_refuses_flags_that_cannot_matter(loaded: Run, args: list[str], message: str) -> None:
    result = loaded("query", *args)
    assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, "")
    assert result.stderr.startswith(f"s3idx: error: {message}\n"), result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--count", "--skip", "1"], "1\n"),
        (["--count", "--limit", "1"], "1\n"),
        (["--count", "--json"], "2\n"),
    ],
)
def test_query_count_keeps_the_flags_that_change_it(
    loaded: Run, args: list[str], expected: str
) -> None:
    result = loaded("query", *args)
    assert (result.exit_code, result.stdout) == (0, expected), result.stderr


def test_query_full_takes_workers(loaded: Run) -> None:
    result = loaded("query", "--full", "--workers", "2", '{"fs_id": "k01"}')
    assert (result.exit_code, result.stdout) == (0, '{"fs_id":"k01","n":1}\n'), result.stderr


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_delete_refuses_all_with_keys(loaded: Run, extra: list[str]) -> None:
    result = loaded("delete", "k01", "--all", *extra)
    assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, "")
    assert result.stderr == (
        "s3idx: error: --all goes with a filter, not with KEY arguments: it allows a filter "
        "that matches every document, and keys name what they delete\n"
    )
    assert loaded("query", "--count").stdout == "2\n"  # nothing deleted


def test_rebuild_index_refuses_resume_with_restart(loaded: Run) -> None:
    result = loaded("rebuild-index", "--shard", "0/2", "--resume", "--restart")
    assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, "")
    assert result.stderr == (
        "s3idx: error: --resume and --restart contradict each other: --resume continues the "
        "rebuild in progress, --restart discards it\n"
    )


def test_sync_check_refuses_no_prune(loaded: Run) -> None:
    result = loaded("sync", "--check", "--no-prune")
    assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, "")
    assert result.stderr == (
        "s3idx: error: --no-prune goes without --check: --check changes nothing, so there is "
        "nothing to keep (--dry-run --no-prune shows what sync --no-prune would do)\n"
    )
