"""What a terminal shows is the data, never instructions to the terminal or to the renderer.

Documents come from anywhere: a value may hold rich's markup (``[/x]``, ``[link=…]``) or control
characters (ESC sequences that recolour, retitle or rewrite the terminal). The table shows them
as text, escaped, and never fails on them.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    jsonl,
    kept_signal_handlers,
    main_status,
    memory_environment,
    subprocess_env,
    written,
)


@pytest.fixture(autouse=True)
def signal_handlers() -> Iterator[None]:
    with kept_signal_handlers():
        yield


def _table(tmp_path: Path, *docs: dict[str, object], field: str = "v") -> str:
    args = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]
    put = memory_environment(jsonl(*docs))
    assert main_status(put, "put", "--field", field, *args) == 0, written(put.stderr)
    terminal = memory_environment(stdout_isatty=True, environ={"COLUMNS": "200"})
    status = main_status(terminal, "query", "--fields", field, *args)
    assert status == 0, written(terminal.stderr)
    return written(terminal.stdout)


@pytest.mark.parametrize(
    "value",
    ["[/foo] x", "[bold red]loud[/]", "[link=http://example.com]click[/link]", "a [b] \\[c]"],
)
def test_markup_in_a_value_is_shown_as_written(tmp_path: Path, value: str) -> None:
    table = _table(tmp_path, {"fs_id": "k", "v": value})
    assert value in table


def test_markup_in_a_field_name_is_shown_as_written(tmp_path: Path) -> None:
    table = _table(tmp_path, {"fs_id": "k", "[/b]": 1}, field="[/b]")
    assert "[/b]" in table


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("\x1b[31mred\x1b[0m", "\\u001b[31mred\\u001b[0m"),
        ("\x1b]0;title\x07", "\\u001b]0;title\\u0007"),
        ("over\rwrite", "over\\rwrite"),
        ("two\nlines", "two\\nlines"),
        ("tab\there", "tab\\there"),
        ("c1\x9bcsi", "c1\\u009bcsi"),
        ("del\x7f", "del\\u007f"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
    ],
)
def test_control_characters_in_a_value_are_shown_escaped(
    tmp_path: Path, value: str, shown: str
) -> None:
    table = _table(tmp_path, {"fs_id": "k", "v": value})
    assert shown in table
    for raw in ("\x1b", "\x07", "\r", "\x9b", "\x7f", "\u202e", "\t"):
        assert raw not in table


def _on_a_terminal(home: Path, *args: str, environ: dict[str, str]) -> bytes:
    """What ``s3idx ARGS`` writes to a terminal (a pseudo-terminal as its stdout)."""
    main, side = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "s3idx", *args],
            env={**subprocess_env(home), "COLUMNS": "100", "TERM": "xterm-256color", **environ},
            stdout=side,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        os.close(side)
        side = -1
        assert done.returncode == 0
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(main)
        if side != -1:
            os.close(side)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pseudo-terminals")
def test_no_color_leaves_the_table_without_escape_codes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    put = subprocess.run(
        [sys.executable, "-m", "s3idx", "put", "--field", "v"],
        input=jsonl({"fs_id": "k", "v": 1}),
        env=subprocess_env(home),
        capture_output=True,
        timeout=120,
    )
    assert put.returncode == 0, put.stderr
    styled = _on_a_terminal(home, "query", environ={})
    assert b"\x1b[" in styled  # a terminal gets styles: the check below can fail
    plain = _on_a_terminal(home, "query", environ={"NO_COLOR": "1"})
    assert b"\x1b[" not in plain
    assert b"fs_id" in plain and b" k " in plain
