"""Progress as a user sees it off a terminal: timestamped lines naming what each command counts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine, Events
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.local import LocalStore
from tests.helpers import Run, json_lines, jsonl

ROOT = Path(__file__).resolve().parents[2]
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
RATE = r"(, [\d.]+/s)?"
ETA = r"(, ETA \d\d:\d\d:\d\d)?"


def _s3idx(tmp_path: Path, *args: str, stdin: bytes = b"", interval: str = "0") -> Any:
    env = {
        **os.environ,
        "S3IDX_HOME": str(tmp_path / "home"),
        "S3IDX_PROGRESS_INTERVAL": interval,
    }
    env.pop("S3IDX_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "s3idx", *args],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def _input(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_bytes(jsonl(*({"fs_id": f"d{n:04}", "n": n, "pad": "x" * 50} for n in range(count))))
    return path


def _progress_lines(stderr: bytes, command: str) -> list[str]:
    return [line for line in stderr.decode().splitlines() if f" s3idx: {command}: " in line]


def test_put_off_a_terminal_prints_timestamped_progress_and_summary(tmp_path: Path) -> None:
    path = _input(tmp_path, 300)
    result = _s3idx(tmp_path, "put", str(path), "--field", "n", "--batch-size", "20")
    assert result.returncode == 0, result.stderr
    lines = _progress_lines(result.stderr, "put")
    pattern = re.compile(
        rf"{STAMP} s3idx: put: (\d+) documents \((\d+) stored, 0 rejected\){RATE}, "
        rf"(\d+)% of input{ETA}"
    )
    progress = [pattern.fullmatch(line) for line in lines[:-1]]
    assert len(progress) >= 5, lines
    assert all(progress), lines
    done = [int(m.group(1)) for m in progress if m]
    shares = [int(m.group(4)) for m in progress if m]
    assert done == sorted(done) and done[-1] <= 300
    assert shares == sorted(shares) and shares[-1] <= 100
    assert any(m.group(3) for m in progress if m), "a rate once documents were stored"
    summary = lines[-1]
    assert re.fullmatch(
        rf"{STAMP} s3idx: put: 300 read, 300 stored, 0 rejected in [\d.]+ s \([\d.]+ docs/s\)",
        summary,
    ), summary


def test_default_interval_keeps_short_runs_to_the_summary(tmp_path: Path) -> None:
    path = _input(tmp_path, 50)
    result = _s3idx(tmp_path, "put", str(path), "--batch-size", "10", interval="")
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.decode().splitlines()
    assert re.fullmatch(rf"{STAMP} s3idx: put: 50 read, 50 stored, .*", line)


def test_json_keeps_stdout_to_one_document_and_quiet_prints_nothing(tmp_path: Path) -> None:
    path = _input(tmp_path, 100)
    as_json = _s3idx(tmp_path, "put", str(path), "--batch-size", "10", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert orjson.loads(as_json.stdout)["stored"] == 100
    assert _progress_lines(as_json.stderr, "put"), "progress still goes to stderr"

    quiet = _s3idx(tmp_path, "put", str(path), "--batch-size", "10", "--quiet")
    assert quiet.returncode == 0
    assert (quiet.stdout, quiet.stderr) == (b"", b"")


def test_every_long_command_names_what_it_counts(tmp_path: Path) -> None:
    path = _input(tmp_path, 30)
    assert _s3idx(tmp_path, "put", str(path), "--field", "n").returncode == 0

    rebuild = _s3idx(tmp_path, "rebuild-index")
    assert rebuild.returncode == 0, rebuild.stderr
    assert re.fullmatch(
        rf"{STAMP} s3idx: rebuild-index: 30 objects \(30 written\){RATE}",
        _progress_lines(rebuild.stderr, "rebuild-index")[0],
    )

    sync = _s3idx(tmp_path, "sync")
    assert sync.returncode == 0, sync.stderr
    assert re.fullmatch(
        rf"{STAMP} s3idx: sync: 30 objects \(30 entries, 0 drift\){RATE}",
        _progress_lines(sync.stderr, "sync")[0],
    )

    get = _s3idx(tmp_path, "get", "d0001", "d0002", "d0003")
    assert get.returncode == 0, get.stderr
    assert re.fullmatch(
        rf"{STAMP} s3idx: get: 3 of 3 documents{RATE}, 100%",
        _progress_lines(get.stderr, "get")[-1],
    )

    full = _s3idx(tmp_path, "query", '{"n": {"$lt": 10}}', "--full")
    assert full.returncode == 0, full.stderr
    assert len(json_lines(full.stdout.decode())) == 10
    assert re.fullmatch(
        rf"{STAMP} s3idx: query: 10 of 10 documents{RATE}, 100%",
        _progress_lines(full.stderr, "query")[-1],
    )

    delete = _s3idx(tmp_path, "delete", "--filter", '{"n": {"$gte": 10}}')
    assert delete.returncode == 0, delete.stderr
    lines = _progress_lines(delete.stderr, "delete")
    assert re.fullmatch(rf"{STAMP} s3idx: delete: 20 of 20 documents{RATE}, 100%", lines[0])
    assert re.fullmatch(rf"{STAMP} s3idx: delete: deleted 20 documents", lines[-1])


class _SlowStore(LocalStore):
    def put(self, key: str, body: bytes, metadata: dict[str, str]) -> Any:
        time.sleep(0.03)
        return super().put(key, body, metadata)


class _Recorder(Events):
    def __init__(self) -> None:
        self.updates: list[tuple[int, float | None]] = []
        self.lock = threading.Lock()

    def progress(
        self,
        done: int,
        total: int | None,
        detail: dict[str, int],
        *,
        input_fraction: float | None = None,
    ) -> None:
        with self.lock:
            self.updates.append((done, input_fraction))


def test_progress_keeps_moving_while_uploads_drain(tmp_path: Path) -> None:
    path = _input(tmp_path, 60)
    events = _Recorder()
    engine = Engine(_SlowStore(tmp_path / "store"), SqliteIndex(tmp_path / "i.db"), workers=2)
    with engine:
        result = engine.put_files([path], events=events)
    assert result.stored == 60
    # The whole input is read long before 60 uploads at 2 x 30 ms are done: the reports made
    # after that still count documents as their uploads finish.
    drained = [done for done, fraction in events.updates if done < 60]
    assert len(set(drained)) >= 3, events.updates
    assert drained == sorted(drained)
    fractions = [f for _, f in events.updates if f is not None]
    assert fractions == sorted(fractions) and 0 < fractions[-1] <= 1


# --- what is shown and in which order ---------------------------------------------------------


@pytest.fixture
def stored(run: Run) -> Run:
    documents = [
        {"fs_id": "a", "b": 1, "a": {"x": 1, "y": 2}, "c": "keep", "big": "z" * 10},
        {"fs_id": "b", "b": 2, "a": {"x": 3, "y": 4}, "c": "keep", "big": "z" * 10},
    ]
    put = run("put", "--field", "b", "--field", "a.x", "--field", "c", input=jsonl(*documents))
    assert put.exit_code == 0, put.stderr
    return run


def test_query_fields_come_in_the_order_given(stored: Run) -> None:
    result = stored("query", "--fields", "c,b", "--sort", "fs_id")
    assert result.exit_code == 0, result.stderr
    assert [list(e) for e in json_lines(result.stdout)] == [["fs_id", "c", "b"]] * 2
    keyed_last = stored("query", "--fields", "b,fs_id", "--sort", "fs_id")
    assert [list(e) for e in json_lines(keyed_last.stdout)] == [["b", "fs_id"]] * 2


def test_query_full_respects_fields_and_their_order(stored: Run) -> None:
    result = stored("query", "--full", "--fields", "c,a.x", "--sort", "fs_id")
    assert result.exit_code == 0, result.stderr
    assert [list(e.items()) for e in json_lines(result.stdout)] == [
        [("fs_id", "a"), ("c", "keep"), ("a", {"x": 1})],
        [("fs_id", "b"), ("c", "keep"), ("a", {"x": 3})],
    ]
    whole = stored("query", "--full", "--sort", "fs_id")
    assert "big" in json_lines(whole.stdout)[0]


def test_table_columns_follow_the_fields_order() -> None:
    from s3idx import output

    entries = [{"fs_id": "a", "b": 1, "c": 2}, {"fs_id": "b", "c": 3, "b": 4}]
    table, shown, more = output.entries_table(entries, columns=["fs_id", "c", "b"])
    assert [str(c.header) for c in table.columns] == ["fs_id", "c", "b"]
    assert (shown, more) == (2, False)
