"""sync, sync --dry-run and sync --check agree on drift, whatever else the prefix holds."""

from __future__ import annotations

from typing import Any

import boto3
import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, jsonl

PREFIX = "docs"
FOREIGN = {"key": "notes.txt", "metadata": {}}
UNDECODABLE = {
    "key": "broken",
    "metadata": {"s3idx-format": "1", "s3idx-codec": "json", "s3idx-entry": "{not json"},
}
MAGGMA = {
    "key": "m1",
    "metadata": {"s3-to-mongo-keys": '{"fs_id": "fs-id", "v": "v"}', "fs-id": "m1", "v": "7"},
}


@pytest.fixture
def bucket(run: Run, s3_endpoint: str, s3_bucket: str) -> list[str]:
    args = ["--store", f"s3://{s3_bucket}/{PREFIX}", "--endpoint-url", s3_endpoint]
    put = run("put", "--field", "v", *args, input=jsonl({"fs_id": "a", "v": 1}))
    assert put.exit_code == 0, put.stderr
    return args


def _add_object(endpoint: str, bucket: str, obj: dict[str, Any]) -> None:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.put_object(
        Bucket=bucket, Key=f"{PREFIX}/{obj['key']}", Body=b"\x00data", Metadata=obj["metadata"]
    )


def _sync(run: Run, args: list[str], *flags: str) -> tuple[int, dict[str, Any], str]:
    result = run("sync", *flags, "--json", *args)
    return result.exit_code, orjson.loads(result.stdout), result.stderr


def test_a_foreign_object_is_reported_apart_and_is_not_drift(
    run: Run, bucket: list[str], s3_endpoint: str, s3_bucket: str
) -> None:
    _add_object(s3_endpoint, s3_bucket, FOREIGN)
    for flags in (("--check",), ("--dry-run",), (), ("--check",)):
        status, summary, _ = _sync(run, bucket, *flags)
        assert status == ExitStatus.OK, (flags, summary)
        assert (summary["drift"], summary["bucket_only"], summary["added"]) == (0, 0, 0)
        assert (summary["not_s3idx"], summary["not_s3idx_keys"]) == (1, ["notes.txt"])
        if flags:
            assert summary["drift_keys"] == {}

    human = run("sync", "--check", *bucket)
    assert human.exit_code == ExitStatus.OK
    assert human.stdout == ""  # no drift lines
    assert "foreign: 1 object not written by s3idx (ignored)" in human.stderr

    strict = run("sync", "--check", "--strict", *bucket)
    assert strict.exit_code == ExitStatus.DRIFT, strict.stderr


def test_undecodable_metadata_is_the_same_answer_in_every_mode(
    run: Run, bucket: list[str], s3_endpoint: str, s3_bucket: str
) -> None:
    _add_object(s3_endpoint, s3_bucket, UNDECODABLE)
    for flags in (("--check",), ("--dry-run",), ()):
        status, summary, err = _sync(run, bucket, *flags)
        assert status == ExitStatus.PARTIAL, (flags, err)
        assert (summary["drift"], summary["undecodable"]) == (0, 1)
        assert summary["undecodable_keys"][0]["key"] == "broken"


def test_a_maggma_object_is_drift_that_sync_adopts(
    run: Run, bucket: list[str], s3_endpoint: str, s3_bucket: str
) -> None:
    _add_object(s3_endpoint, s3_bucket, MAGGMA)
    status, summary, _ = _sync(run, bucket, "--check")
    assert (status, summary["drift"], summary["drift_keys"]) == (
        ExitStatus.DRIFT,
        1,
        {"bucket-only": ["m1"]},
    )
    status, summary, _ = _sync(run, bucket, "--dry-run")
    assert (status, summary["drift"], summary["drift_keys"]) == (0, 1, {"add": ["m1"]})
    status, summary, _ = _sync(run, bucket)
    assert (status, summary["drift"], summary["added"], summary["maggma"]) == (0, 1, 1, 1)
    status, summary, _ = _sync(run, bucket, "--check")
    assert (status, summary["drift"]) == (0, 0)


def test_strict_needs_check(run: Run, bucket: list[str]) -> None:
    result = run("sync", "--strict", *bucket)
    assert result.exit_code == ExitStatus.USAGE
    assert "--strict goes with --check" in result.stderr
