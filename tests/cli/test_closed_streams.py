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
