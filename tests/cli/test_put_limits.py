"""``put`` limits: --max-errors stops at exactly N rejects, keys against the metadata budget."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.cli.conftest import Run, json_lines


@pytest.mark.parametrize("batch_size", ["1", "1000"])
def test_max_errors_stops_at_the_nth_reject(run: Run, tmp_path: Path, batch_size: str) -> None:
    lines = []
    for i in range(20):
        lines.append(b'{"fs_id": "good%02d"}' % i)
        lines.append(b'{"no_key": %d}' % i)
    source = tmp_path / "input.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")

    result = run("put", str(source), "--max-errors", "3", "--batch-size", batch_size, "--json")

    assert result.exit_code == ExitStatus.PARTIAL
    reported = [line for line in result.stderr.splitlines() if "missing key field" in line]
    assert reported == [f"s3idx: {source}:{n}: missing key field 'fs_id'; every document needs "
                        "its key; choose the key field with --key" for n in (2, 4, 6)]  # fmt: skip
    summary = orjson.loads(result.stdout)
    assert (summary["read"], summary["stored"], summary["rejected"]) == (6, 3, 3)
    assert summary["stopped_early"] is True
    stored = [e["fs_id"] for e in json_lines(run("query", "--sort", "fs_id").stdout)]
    assert stored == ["good00", "good01", "good02"]


def test_max_errors_not_reached_stores_everything(run: Run, tmp_path: Path) -> None:
    source = tmp_path / "input.jsonl"
    source.write_bytes(b'{"fs_id": "a"}\n{"x": 1}\n{"fs_id": "b"}\n')
    summary = orjson.loads(run("put", str(source), "--max-errors", "2", "--json").stdout)
    assert (summary["stored"], summary["rejected"], summary["stopped_early"]) == (2, 1, False)
