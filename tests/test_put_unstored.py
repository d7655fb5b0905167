"""A put whose uploads fail after every retry names each document it did not store.

The run still stops at the first upload that fails for good (exit 5); what it read and did not
store (the uploads that failed, the ones that failure stopped) is named key by key: on stderr up
to ``UNSTORED_SHOWN`` lines then a count, and every one in ``--json``'s ``unstored_keys``.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from s3idx.engine.results import NOT_UPLOADED
from s3idx.engine.retry import RetryPolicy
from s3idx.errors import ExitStatus
from s3idx.output import UNSTORED_SHOWN
from s3idx.store.s3 import S3Store
from tests.helpers import Run, jsonl
from tests.s3proxy import INTERNAL_ERROR, S3Proxy

DOCS = [{"fs_id": f"k{i:02d}", "v": i} for i in range(60)]


@pytest.fixture(autouse=True)
def no_retry_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every retry still happens, without its backoff sleep."""
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, retry, rng: 0.0)


def _stored_keys(endpoint: str, bucket: str) -> set[str]:
    store = S3Store(bucket, "docs", endpoint_url=endpoint, region="us-east-1")
    try:
        return {info.key for info in store.list_objects()}
    finally:
        store.close()


def _document_put(*keys: str) -> object:
    """A PUT of one of these documents (not the bucket's, not a manifest's)."""

    def failing(method: str, path: str) -> bool:
        return method == "PUT" and "/docs/" in path and path.rsplit("/", 1)[-1] in keys

    return failing


@pytest.mark.parametrize("transport", ["boto3", "http"])
def test_put_names_every_document_it_did_not_store(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path, transport: str
) -> None:
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = _document_put("k05", "k07")  # type: ignore[assignment]
        where = ["--store", f"s3://{s3_bucket}/docs", "--endpoint-url", proxy.url]
        where += ["--index", str(tmp_path / "i.sqlite3"), "--transport", transport]
        result = run("put", *where, "--json", input=jsonl(*DOCS))

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    summary = orjson.loads(result.stdout)
    unstored = {item["key"]: item["reason"] for item in summary["unstored_keys"]}
    # Exactly the documents read that the bucket lacks are named, each with a reason.
    stored = _stored_keys(s3_endpoint, s3_bucket)
    read = {d["fs_id"] for d in DOCS[: summary["read"]]}
    assert set(unstored) == read - stored
    assert summary["unstored"] == len(unstored) == summary["read"] - summary["stored"]
    assert "k05" in unstored and "k07" in unstored
    # The upload that failed the run gave up after the policy's attempts; another may have been
    # cut short by it (http: not retried once the run failed), or never started.
    assert all(r == NOT_UPLOADED or "InternalError" in r for r in unstored.values()), unstored
    # On stderr too: one line per key, up to the bound.
    lines = [line for line in result.stderr.splitlines() if line.startswith("s3idx: not stored")]
    assert len(lines) == min(len(unstored), UNSTORED_SHOWN), result.stderr
    assert any(line.startswith("s3idx: not stored: k05: ") for line in lines), result.stderr
    assert "gave up after 8 attempts" in lines[0]  # the failures first, then what they stopped
    assert "Traceback" not in result.stderr


def test_put_bounds_the_keys_it_names_on_stderr(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    every = [d["fs_id"] for d in DOCS]
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = _document_put(*every)  # type: ignore[assignment]
        where = ["--store", f"s3://{s3_bucket}/docs", "--endpoint-url", proxy.url]
        where += ["--index", str(tmp_path / "i.sqlite3")]
        result = run("put", *where, input=jsonl(*DOCS))

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("s3idx: not stored")]
    assert len(lines) == UNSTORED_SHOWN, result.stderr
    assert f"and {len(DOCS) - UNSTORED_SHOWN} more not stored" in result.stderr
    assert "60 not stored" in result.stderr  # the summary counts them all
    assert _stored_keys(s3_endpoint, s3_bucket) == set()


def test_put_names_a_key_whose_later_line_it_did_not_store(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    # k03's first line is stored; its last line (the one that wins) fails: that document was
    # read and not stored, though the bucket holds the key.
    uploads: list[str] = []

    def second_upload_of_k03(method: str, path: str) -> bool:
        if method != "PUT" or not path.endswith("/docs/k03"):
            return False
        uploads.append(path)
        return len(uploads) > 1

    lines = [*DOCS[:10], {"fs_id": "k03", "v": 99}]
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = second_upload_of_k03  # type: ignore[assignment]
        where = ["--store", f"s3://{s3_bucket}/docs", "--endpoint-url", proxy.url]
        where += ["--index", str(tmp_path / "i.sqlite3"), "--batch-size", "2"]
        result = run("put", *where, "--json", input=jsonl(*lines))

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    summary = orjson.loads(result.stdout)
    assert [item["key"] for item in summary["unstored_keys"]] == ["k03"], summary
    assert summary["unstored"] == 1
    assert "s3idx: not stored: k03: " in result.stderr


def test_put_names_a_key_once_when_its_later_line_never_went_up(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    # k03's first upload fails the run; its later line, waiting for that upload, is never sent.
    lines = [*DOCS[:4], {"fs_id": "k03", "v": 99}, *DOCS[4:8]]
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = _document_put("k03")  # type: ignore[assignment]
        where = ["--store", f"s3://{s3_bucket}/docs", "--endpoint-url", proxy.url]
        where += ["--index", str(tmp_path / "i.sqlite3"), "--batch-size", "4"]
        result = run("put", *where, "--json", input=jsonl(*lines))

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    summary = orjson.loads(result.stdout)
    named = [item["key"] for item in summary["unstored_keys"]]
    assert named.count("k03") == 1, summary
    assert summary["unstored"] == len(named)
    read = {line["fs_id"] for line in lines[: summary["read"]]}
    assert set(named) == read - _stored_keys(s3_endpoint, s3_bucket)


def test_put_over_processes_names_every_document_it_did_not_store(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    """Each worker names its own; the parent merges them: still exactly what was read and not
    stored, whichever worker held it."""
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = _document_put("k05", "k07", "k21")  # type: ignore[assignment]
        where = ["--store", f"s3://{s3_bucket}/docs", "--endpoint-url", proxy.url]
        where += ["--index", str(tmp_path / "i.sqlite3"), "--processes", "2"]
        result = run("put", *where, "--json", input=jsonl(*DOCS))

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    summary = orjson.loads(result.stdout)
    unstored = {item["key"]: item["reason"] for item in summary["unstored_keys"]}
    assert len(unstored) == len(summary["unstored_keys"])  # each key named once
    stored = _stored_keys(s3_endpoint, s3_bucket)
    read = {d["fs_id"] for d in DOCS[: summary["read"]]}  # the parent reads in input order
    assert set(unstored) == read - stored
    assert summary["unstored"] == len(unstored) == summary["read"] - summary["stored"]
    assert summary["stored"] == len(stored)
    lines = [line for line in result.stderr.splitlines() if line.startswith("s3idx: not stored")]
    assert len(lines) == min(len(unstored), UNSTORED_SHOWN), result.stderr
    assert "Traceback" not in result.stderr
