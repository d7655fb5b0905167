"""--json: exactly one JSON document on stdout, whatever the outcome of the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx.errors import BackendUnavailableError, ExitStatus
from s3idx.limits import DELETE_BATCH
from s3idx.store.local import LocalStore
from tests.helpers import Run, jsonl

ROOT = Path(__file__).resolve().parents[2]
REFUSED = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused
DOC = jsonl({"fs_id": "a", "v": 1})


def _one_document(stdout: str) -> dict[str, Any]:
    document = orjson.loads(stdout)  # raises on anything but exactly one JSON value
    assert isinstance(document, dict)
    return document


def _failed(result: Any, status: ExitStatus, message: str) -> dict[str, Any]:
    assert result.exit_code == status, result.stderr
    document = _one_document(result.stdout)
    assert document["exit_status"] == status
    assert message in document["error"]
    return document


def _s3(endpoint: str, bucket: str = "bucket") -> list[str]:
    return ["--store", f"s3://{bucket}/docs", "--endpoint-url", endpoint]


@pytest.fixture
def filled(run: Run, tmp_path: Path) -> list[str]:
    args = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]
    put = run("put", "--field", "v", *args, input=DOC)
    assert put.exit_code == 0, put.stderr
    return args


# --- put -------------------------------------------------------------------------------------


def test_put_json_in_every_outcome(run: Run, filled: list[str], tmp_path: Path) -> None:
    ok = run("put", "--json", *filled, input=jsonl({"fs_id": "b", "v": 2}))
    assert ok.exit_code == 0
    assert _one_document(ok.stdout)["stored"] == 1
    assert _one_document(ok.stdout)["exit_status"] == 0

    partial = run("put", "--json", *filled, input=b'{"fs_id": "c"}\nnot json\n')
    assert partial.exit_code == ExitStatus.PARTIAL
    assert _one_document(partial.stdout)["exit_status"] == ExitStatus.PARTIAL
    assert (_one_document(partial.stdout)["stored"], _one_document(partial.stdout)["rejected"]) == (
        1,
        1,
    )

    usage = run("put", "--json", str(tmp_path / "missing.jsonl"), *filled)
    _failed(usage, ExitStatus.USAGE, "does not exist")


def test_put_json_when_the_first_request_fails(run: Run) -> None:
    result = run("put", "--json", *_s3(REFUSED), input=DOC)
    document = _failed(result, ExitStatus.UNAVAILABLE, "cannot reach S3")
    assert document["stored"] == 0  # the counts reached come with the error


# --- delete, info ----------------------------------------------------------------------------


def test_delete_json_in_every_outcome(run: Run, filled: list[str]) -> None:
    missing = run("delete", "--json", "nope", *filled)
    assert missing.exit_code == ExitStatus.NOT_FOUND
    assert _one_document(missing.stdout)["missing"] == ["nope"]
    assert _one_document(missing.stdout)["exit_status"] == ExitStatus.NOT_FOUND

    dry = run("delete", "--json", "--dry-run", "a", *filled)
    assert dry.exit_code == 0
    assert _one_document(dry.stdout)["would_delete"] == ["a"]

    _failed(run("delete", "--json", *filled), ExitStatus.USAGE, "nothing to delete")
    _failed(run("delete", "--json", "--filter", "{", *filled), ExitStatus.USAGE, "not valid JSON")

    ok = run("delete", "--json", "a", *filled)
    assert ok.exit_code == 0
    assert _one_document(ok.stdout)["deleted"] == 1


def test_delete_json_when_the_store_cannot_be_reached(run: Run, tmp_path: Path) -> None:
    result = run("delete", "--json", "a", *_s3(REFUSED), "--index", str(tmp_path / "i.sqlite3"))
    assert result.exit_code in (ExitStatus.UNAVAILABLE, ExitStatus.NOT_FOUND), result.stderr
    _one_document(result.stdout)


@pytest.mark.parametrize("json", [True, False])
@pytest.mark.parametrize("how", ["keys", "filter"])
def test_delete_failing_mid_run_still_reports_what_it_deleted(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, json: bool
) -> None:
    """A delete of several batches whose store fails at the second: the first batch is gone,
    and the summary (or --json) says so beside the error."""
    args = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]
    keys = [f"k{i:04d}" for i in range(DELETE_BATCH + 5)]
    put = run("put", *args, input=jsonl(*({"fs_id": k} for k in keys)))
    assert put.exit_code == 0, put.stderr
    original = LocalStore.delete
    calls = []

    def failing(self: LocalStore, *a: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:
            raise BackendUnavailableError("the store went away")
        return original(self, *a, **kw)

    monkeypatch.setattr(LocalStore, "delete", failing)
    chosen = keys if how == "keys" else ["--filter", '{"fs_id": {"$gte": "k"}}']

    result = run("delete", *(["--json"] if json else []), *chosen, *args)

    if json:
        document = _failed(result, ExitStatus.UNAVAILABLE, "the store went away")
        assert document["deleted"] == DELETE_BATCH
    else:
        assert result.exit_code == ExitStatus.UNAVAILABLE
        summary, error = result.stderr.splitlines()
        assert summary.endswith(f"delete: deleted {DELETE_BATCH} documents")
        assert error == "s3idx: error: the store went away"


def test_info_json_in_every_outcome(run: Run, filled: list[str], tmp_path: Path) -> None:
    ok = run("info", "--json", *filled)
    assert ok.exit_code == 0
    assert _one_document(ok.stdout)["entries"] == 1

    broken = tmp_path / "broken.sqlite3"
    broken.write_bytes(b"this is not a database" * 100)
    result = run("info", "--json", "--index", str(broken))
    assert result.exit_code != 0
    assert _one_document(result.stdout)["exit_status"] == result.exit_code


# --- rebuild-index, sync ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [("rebuild-index",), ("sync",), ("sync", "--check"), ("sync", "--dry-run")],
    ids=" ".join,
)
def test_scans_json_when_the_first_request_fails(
    run: Run, tmp_path: Path, command: tuple[str, ...]
) -> None:
    result = run(*command, "--json", *_s3(REFUSED), "--index", str(tmp_path / "i.sqlite3"))
    _failed(result, ExitStatus.UNAVAILABLE, "cannot reach S3")


@pytest.mark.parametrize("mode", ["--check", "--dry-run"])
def test_sync_drift_goes_into_the_json_not_before_it(
    run: Run, filled: list[str], tmp_path: Path, mode: str
) -> None:
    run("put", *filled, input=jsonl({"fs_id": "b", "v": 2}))
    (tmp_path / "index.sqlite3").unlink()
    run("put", *filled, input="")  # an empty index again: both objects are bucket-only
    result = run("sync", mode, "--json", *filled)
    document = _one_document(result.stdout)
    label = "bucket-only" if mode == "--check" else "add"
    assert sorted(document["drift_keys"][label]) == ["a", "b"]
    assert document["drift"] == 2
    assert document["exit_status"] == (ExitStatus.DRIFT if mode == "--check" else 0)


def test_rebuild_json_on_success(run: Run, filled: list[str]) -> None:
    result = run("rebuild-index", "--json", *filled)
    assert result.exit_code == 0
    assert _one_document(result.stdout)["written"] == 1


# --- refused by parsing, before any command runs ----------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [("put", "--json", "--workers", "0"), ("sync", "--json", "--bogus"), ("info", "--json", "x")],
)
def test_json_even_when_parsing_refuses_the_command_line(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3IDX_")}
    env.update(S3IDX_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    process = subprocess.run(
        [sys.executable, "-m", "s3idx", *argv], env=env, capture_output=True, timeout=60
    )
    assert process.returncode == ExitStatus.USAGE
    document = _one_document(process.stdout.decode())
    assert document["exit_status"] == ExitStatus.USAGE
    assert document["error"]


def test_reindex_json_on_success_and_on_refusal(
    run: Run, filled: list[str], tmp_path: Path
) -> None:
    ok = run("reindex", "--json", *filled)
    assert ok.exit_code == 0, ok.stderr
    assert _one_document(ok.stdout)["exit_status"] == 0

    empty = ["--store", str(tmp_path / "empty"), "--index", str(tmp_path / "empty.sqlite3")]
    _failed(run("reindex", "--json", *empty), ExitStatus.NOT_FOUND, "no s3idx store at")
