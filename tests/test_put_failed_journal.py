"""A put that fails without being killed, for a key that already had an entry.

Its put journal record says "the bucket may hold a newer object than the entry describes".
Failures that prove the object was not replaced (credentials refused, an error answer, an
endpoint that refuses connections) must not leave that record: ``sync --check`` and ``verify``
would report false drift (exit 7) after every failed put. A failure that may have stored the
object (a 500 after the request reached the server) keeps it, and ``sync --check`` reports
drift only when the bucket's object is not the one the entry describes; ``sync`` then sets the
entry to what the bucket holds.
"""

from __future__ import annotations

import socket
from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from s3idx.index.sqlite import SqliteIndex
from tests.helpers import Run, jsonl
from tests.s3proxy import ACCESS_DENIED, INTERNAL_ERROR, S3Proxy

TRANSPORTS = ["boto3", "obstore", "http"]
V1 = jsonl({"fs_id": "k", "v": 1})
V2 = jsonl({"fs_id": "k", "v": 2})


def _where(bucket: str, endpoint: str, tmp_path: Path, transport: str) -> list[str]:
    if transport == "obstore":
        pytest.importorskip("obstore")
    return [
        "--store",
        f"s3://{bucket}/p",
        "--endpoint-url",
        endpoint,
        "--index",
        str(tmp_path / "i.sqlite3"),
        "--transport",
        transport,
    ]


def _records(tmp_path: Path) -> list[str]:
    with SqliteIndex(tmp_path / "i.sqlite3") as index:
        return [record.key for record in index.put_intents()]


def _no_drift(run: Run, where: list[str], value: int) -> None:
    check = run("sync", "--check", *where)
    assert check.exit_code == 0, check.output
    assert "interrupted" not in check.output
    verify = run("verify", *where)
    assert verify.exit_code == 0, verify.output
    got = [orjson.loads(line)["v"] for line in run("query", "{}", *where).stdout.splitlines()]
    assert got == [value]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_put_refused_for_want_of_credentials_leaves_no_record(
    run: Run,
    s3_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    where = _where(s3_bucket, s3_endpoint, tmp_path, transport)
    assert run("put", *where, "--field", "v", input=V1).exit_code == 0
    with monkeypatch.context() as env:
        env.delenv("AWS_ACCESS_KEY_ID")
        env.delenv("AWS_SECRET_ACCESS_KEY")
        env.delenv("AWS_SESSION_TOKEN")
        put = run("put", *where, "--field", "v", input=V2)
    assert put.exit_code == ExitStatus.ACCESS_DENIED, put.output
    assert _records(tmp_path) == []
    _no_drift(run, where, 1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_put_the_server_answers_access_denied_leaves_no_record(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path, transport: str
) -> None:
    with S3Proxy(s3_endpoint) as proxy:
        where = _where(s3_bucket, proxy.url, tmp_path, transport)
        assert run("put", *where, "--field", "v", input=V1).exit_code == 0
        proxy.failing = lambda method, path: (403, ACCESS_DENIED) if method == "PUT" else False
        put = run("put", *where, "--field", "v", input=V2)
        assert put.exit_code == ExitStatus.ACCESS_DENIED, put.output
        proxy.failing = None
        assert _records(tmp_path) == []
        _no_drift(run, where, 1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_put_whose_endpoint_refuses_connections_leaves_no_record(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path, transport: str
) -> None:
    where = _where(s3_bucket, s3_endpoint, tmp_path, transport)
    assert run("put", *where, "--field", "v", input=V1).exit_code == 0
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    refused = _where(s3_bucket, f"http://127.0.0.1:{port}", tmp_path, transport)
    put = run("put", *refused, "--field", "v", input=V2)
    assert put.exit_code == ExitStatus.UNAVAILABLE, put.output
    assert _records(tmp_path) == []
    _no_drift(run, where, 1)


def test_a_500_to_an_upload_that_did_not_land_is_no_drift(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    """Ambiguous: the record stays (the object might have landed); the bucket still holds
    the entry's object, so sync --check and verify report no drift, and sync clears it."""
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        where = _where(s3_bucket, proxy.url, tmp_path, "boto3")
        assert run("put", *where, "--field", "v", input=V1).exit_code == 0
        proxy.failing = lambda method, path: method == "PUT"
        put = run("put", *where, "--field", "v", input=V2)
        assert put.exit_code == ExitStatus.UNAVAILABLE, put.output
        proxy.failing = None
        assert _records(tmp_path) == ["k"]  # it may have landed, as far as the put knows
        _no_drift(run, where, 1)
        assert run("sync", *where).exit_code == 0
        assert _records(tmp_path) == []
        _no_drift(run, where, 1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_500_to_an_upload_that_landed_is_drift_until_sync(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path, transport: str
) -> None:
    """Ambiguous, and the object did land: the record stays, sync --check reports the
    interrupted put, sync sets the entry to the object the bucket holds."""
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        where = _where(s3_bucket, proxy.url, tmp_path, transport)
        assert run("put", *where, "--field", "v", input=V1).exit_code == 0
        proxy.landed_failing = lambda method, path: method == "PUT"
        put = run("put", *where, "--field", "v", input=V2)
        assert put.exit_code == ExitStatus.UNAVAILABLE, put.output
        proxy.landed_failing = None
        assert _records(tmp_path) == ["k"]
        check = run("sync", "--check", *where)
        assert check.exit_code == ExitStatus.DRIFT, check.output
        assert "interrupted-put\tk" in check.stdout
        verify = run("verify", *where)
        assert verify.exit_code == ExitStatus.DRIFT, verify.output
        sync = run("sync", *where)
        assert sync.exit_code == 0, sync.output
        assert _records(tmp_path) == []
        _no_drift(run, where, 2)
