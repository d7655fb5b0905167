"""Running the CLI in-process through Typer's CliRunner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from click.testing import Result
from typer.testing import CliRunner

from s3idx.cli import app

Run = Callable[..., Result]


@pytest.fixture
def run() -> Run:
    """``run("put", "--field", "x", input=b"...")``: the result, stdout and stderr apart."""
    runner = CliRunner()

    def invoke(*args: str, input: bytes | str | None = None, **kwargs: Any) -> Result:
        return runner.invoke(app, list(args), input=input, catch_exceptions=False, **kwargs)

    return invoke


def json_lines(text: str) -> list[Any]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def jsonl(*documents: Any) -> bytes:
    return b"".join(orjson.dumps(d) + b"\n" for d in documents)
