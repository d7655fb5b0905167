"""Helpers for CLI tests; the ``run`` fixture lives in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from typer.testing import Result

Run = Callable[..., Result]


def json_lines(text: str) -> list[Any]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def jsonl(*documents: Any) -> bytes:
    return b"".join(orjson.dumps(d) + b"\n" for d in documents)
