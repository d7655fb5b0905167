"""put --dry-run: every check the real run makes before it reads input, and no write at all.

A dry run that passes where the real run is refused tells a user the command is fine when it
is not. So each refusal below is asked of the dry run first (which must leave no file,
directory, bucket or index behind), then of the same command without --dry-run: the exit
status and the error (with its hint) must be the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, jsonl

DOCS = [{"fs_id": f"mp-{i}", "task_id": f"task-{i}", "v": i} for i in range(20)]
REFUSED = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused
PROCESSES = pytest.mark.parametrize("processes", ["1", "2"])


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(directory, name)
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return found


def _problem(stderr: str) -> list[str]:
    """The error and its hint, without the summary line (a dry run's says 'would store')."""
    return [line for line in stderr.splitlines() if "error:" in line or "hint:" in line]


def _buckets(endpoint: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint)
    return sorted(b["Name"] for b in client.list_buckets()["Buckets"])


def _same_refusal(run: Run, args: list[str], status: ExitStatus, message: str) -> None:
    """The dry run is refused with ``status`` and ``message``, as the real run then is."""
    dry = run("put", *args, "--dry-run", input=jsonl(*DOCS))
    assert dry.exit_code == status, dry.stderr
    assert message in dry.stderr
    real = run("put", *args, input=jsonl(*DOCS))
    assert real.exit_code == status, real.stderr
    assert _problem(dry.stderr) == _problem(real.stderr)


def _s3(endpoint: str, bucket: str) -> list[str]:
    return ["--store", f"s3://{bucket}/docs", "--endpoint-url", endpoint]


# --- the key field the index records -----------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "processes"),
    # mongomock lives in this process only: --processes 2's children would not see it.
    [("local", "1"), ("local", "2"), ("s3", "1"), ("mongodb", "1")],
)
def test_another_key_field_than_the_index_records(
    run: Run, tmp_path: Path, request: pytest.FixtureRequest, where: str, processes: str
) -> None:
    store = ["--store", str(tmp_path / "s")]
    index = ["--index", str(tmp_path / "i.sqlite3")]
    server = None
    if where == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        store = _s3(endpoint, request.getfixturevalue("s3_bucket"))
    if where == "mongodb":
        server = request.getfixturevalue("mongomock_server")
        index = ["--index", "mongodb://localhost/db"]
    args = [*store, *index, "--processes", processes]
    assert run("put", *args, input=jsonl(*DOCS[:3])).exit_code == 0
    before = (_tree(tmp_path), server and _mongo(server))
    _same_refusal(
        run, [*args, "--key", "task_id"], ExitStatus.USAGE, "uses key field 'fs_id', not 'task_id'"
    )
    assert (_tree(tmp_path), server and _mongo(server)) == before


def test_a_new_mongodb_index_is_not_created(
    run: Run, tmp_path: Path, mongomock_server: Any
) -> None:
    args = ["--store", str(tmp_path / "s"), "--index", "mongodb://localhost/db"]
    dry = run("put", *args, "--dry-run", "--field", "v", input=jsonl(*DOCS))
    assert dry.exit_code == 0, dry.stderr
    assert _mongo(mongomock_server) == {}
    assert _tree(tmp_path) == {}


def _mongo(client: Any) -> dict[str, list[Any]]:
    """Every document of every collection of every database."""
    return {
        f"{db}.{name}": list(client[db][name].find())
        for db in client.list_database_names()
        for name in client[db].list_collection_names()
    }


# --- the store: a bucket missing, an endpoint that does not answer ---------------------------


@PROCESSES
def test_a_missing_bucket(run: Run, tmp_path: Path, s3_endpoint: str, processes: str) -> None:
    index = tmp_path / "i.sqlite3"
    args = [*_s3(s3_endpoint, "nonexist"), "--index", str(index), "--processes", processes]
    _same_refusal(run, args, ExitStatus.NOT_FOUND, "bucket 'nonexist' does not exist")
    assert not index.exists()
    assert _buckets(s3_endpoint) == []


def test_an_endpoint_that_does_not_answer(run: Run, tmp_path: Path) -> None:
    index = tmp_path / "i.sqlite3"
    args = [*_s3(REFUSED, "bucket"), "--index", str(index)]
    _same_refusal(run, args, ExitStatus.UNAVAILABLE, "cannot reach S3")
    assert not index.exists()


@PROCESSES
def test_create_bucket_in_a_dry_run_creates_nothing(
    run: Run, tmp_path: Path, s3_endpoint: str, processes: str
) -> None:
    # The real run would create the bucket: the dry run says what it would store, and leaves
    # the bucket to it.
    index = tmp_path / "i.sqlite3"
    args = [*_s3(s3_endpoint, "newbucket"), "--index", str(index), "--create-bucket"]
    dry = run("put", *args, "--dry-run", "--processes", processes, input=jsonl(*DOCS))
    assert dry.exit_code == 0, dry.stderr
    assert "20 would store" in dry.stderr
    assert _buckets(s3_endpoint) == []
    assert not index.exists()


def test_create_bucket_in_a_dry_run_still_needs_the_endpoint(run: Run, tmp_path: Path) -> None:
    index = tmp_path / "i.sqlite3"
    args = [*_s3(REFUSED, "bucket"), "--index", str(index), "--create-bucket"]
    _same_refusal(run, args, ExitStatus.UNAVAILABLE, "cannot reach S3")
    assert not index.exists()


# --- locations whose directories do not exist -----------------------------------------------


@pytest.mark.parametrize(
    ("missing", "store_kind", "processes"),
    [
        pytest.param("store-and-index", "local", "1", id="store-and-index-local-1"),
        pytest.param("store-and-index", "local", "2", id="store-and-index-local-2"),
        pytest.param("index", "local", "1", id="index-local-1"),
        pytest.param("index", "local", "2", id="index-local-2"),
        pytest.param("index", "s3", None, id="index-s3"),
    ],
)
def test_locations_in_missing_directories(
    run: Run,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    missing: str,
    store_kind: str,
    processes: str | None,
) -> None:
    """The store's directory and the index's, or the index's alone, do not exist: the dry run
    is refused (naming the store's first), leaves nothing behind, and the real run is refused
    alike."""
    store = tmp_path / "nodirX" / "s" if missing == "store-and-index" else tmp_path / "s"
    index = tmp_path / "nodirY" / "i.sqlite3"
    location = ["--store", str(store)]
    if store_kind == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        location = _s3(endpoint, bucket)
    if missing == "store-and-index":
        message = f"the directory {store.parent} of store {store} does not exist"
    else:
        message = f"the directory {index.parent} of index {index} does not exist"
    args = [*location, "--index", str(index), *(["--processes", processes] if processes else [])]
    dry = run("put", *args, "--dry-run", input=jsonl(*DOCS))
    assert dry.exit_code == ExitStatus.NOT_FOUND, dry.stderr
    assert message in dry.stderr
    assert _tree(tmp_path) == {}
    real = run("put", *args, input=jsonl(*DOCS))
    assert real.exit_code == ExitStatus.NOT_FOUND, real.stderr
    assert _problem(dry.stderr) == _problem(real.stderr)
    if store_kind == "s3":
        client = boto3.client("s3", endpoint_url=endpoint)
        assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_store_that_is_a_non_empty_directory(run: Run, tmp_path: Path) -> None:
    store = tmp_path / "s"
    store.mkdir()
    (store / "notes.txt").write_text("mine\n")
    args = ["--store", str(store), "--index", str(tmp_path / "i.sqlite3")]
    before = _tree(tmp_path)
    dry = run("put", *args, "--dry-run", input=jsonl(*DOCS))
    assert dry.exit_code == ExitStatus.USAGE, dry.stderr
    assert "is not empty and is not an s3idx store" in dry.stderr
    assert _tree(tmp_path) == before
    real = run("put", *args, input=jsonl(*DOCS))
    assert _problem(dry.stderr) == _problem(real.stderr)


@pytest.mark.parametrize("where", ["store", "index"])
def test_a_location_under_a_file(run: Run, tmp_path: Path, where: str) -> None:
    (tmp_path / "f").write_text("a file\n")
    store, index = tmp_path / "s", tmp_path / "i.sqlite3"
    if where == "store":
        store = tmp_path / "f" / "s"
    else:
        index = tmp_path / "f" / "i.sqlite3"
    args = ["--store", str(store), "--index", str(index)]
    dry = run("put", *args, "--dry-run", input=jsonl(*DOCS))
    assert dry.exit_code != 0, dry.stderr
    assert _tree(tmp_path) == {"f": (7, (tmp_path / "f").stat().st_mtime_ns)}
    real = run("put", *args, input=jsonl(*DOCS))
    assert real.exit_code == dry.exit_code, real.stderr
    assert _problem(dry.stderr) == _problem(real.stderr)


@PROCESSES
def test_new_locations_are_not_created(run: Run, tmp_path: Path, processes: str) -> None:
    args = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    dry = run("put", *args, "--dry-run", "--processes", processes, input=jsonl(*DOCS))
    assert dry.exit_code == 0, dry.stderr
    assert "20 read, 20 would store" in dry.stderr
    assert _tree(tmp_path) == {}


# --- --json -------------------------------------------------------------------------------------


@pytest.mark.parametrize("processes", ["1", "2"])
def test_json_of_a_dry_run_claims_nothing_stored(run: Run, tmp_path: Path, processes: str) -> None:
    args = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    dry = run("put", *args, "--dry-run", "--json", "--processes", processes, input=jsonl(*DOCS))
    assert dry.exit_code == 0, dry.stderr
    summary = orjson.loads(dry.stdout)
    assert summary["dry_run"] is True
    assert (summary["stored"], summary["bytes_stored"]) == (0, 0)
    assert summary["would_store"] == 20
    assert summary["would_store_bytes"] > 0
    assert summary["read"] == 20

    real = run("put", *args, "--json", "--processes", processes, input=jsonl(*DOCS))
    summary = orjson.loads(real.stdout)
    assert summary["dry_run"] is False
    assert (summary["would_store"], summary["would_store_bytes"]) == (0, 0)
    assert summary["stored"] == 20
    # What the dry run counted is what the real run then stored.
    assert summary["bytes_stored"] == orjson.loads(dry.stdout)["would_store_bytes"]
