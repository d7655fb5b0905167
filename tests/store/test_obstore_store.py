"""The obstore transport beyond the shared protocol: errors and exit statuses as with boto3.

The conformance suite (test_store_conformance.py) runs against it as the store kind "obstore";
these tests check what only a transport can get wrong: error translation, bucket creation,
credentials from the boto3 chain, and choosing the transport from settings and the CLI.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3idx import open_engine
from s3idx.backends import open_store
from s3idx.config import Settings
from s3idx.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    ConfigError,
    ExitStatus,
    NotFoundError,
    ObjectNotFoundError,
    TransientError,
    UsageError,
)
from tests.helpers import Run, json_lines, jsonl, run_in_fork
from tests.s3proxy import S3Proxy

pytest.importorskip("obstore", reason="obstore is not installed (pip install 's3idx[fast]')")

from s3idx.store.obstore_s3 import ObstoreS3Store

META = {"s3idx-format": "1", "s3idx-entry": '{"fs_id":"a"}'}
REGION = "us-east-1"


def make_store(endpoint: str, bucket: str, prefix: str = "p", **options: Any) -> ObstoreS3Store:
    options.setdefault("region", REGION)
    return ObstoreS3Store(bucket, prefix, endpoint_url=endpoint, **options)


@pytest.fixture
def fast(s3_endpoint: str, s3_bucket: str) -> Iterator[ObstoreS3Store]:
    store = make_store(s3_endpoint, s3_bucket)
    yield store
    store.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_missing_bucket_is_not_found_with_a_create_bucket_hint(s3_endpoint: str) -> None:
    store = make_store(s3_endpoint, "no-such-bucket")
    for call in (
        lambda: store.put("k", b"x", META),
        lambda: store.head("k"),
        lambda: store.open("k"),
    ):
        with pytest.raises(NotFoundError) as excinfo:
            call()
        assert not isinstance(excinfo.value, ObjectNotFoundError)
        assert excinfo.value.message == "bucket 'no-such-bucket' does not exist"
        assert excinfo.value.exit_status == ExitStatus.NOT_FOUND


def test_missing_key_is_object_not_found(fast: ObstoreS3Store) -> None:
    for call in (lambda: fast.head("nope"), lambda: fast.open("nope")):
        with pytest.raises(ObjectNotFoundError, match="no such object: nope"):
            call()


def test_create_bucket_on_the_first_put(s3_endpoint: str) -> None:
    store = make_store(s3_endpoint, "made-by-obstore", create_bucket=True)

    receipt = store.put("k", b"body", META)

    assert [o.key for o in store.list_objects()] == ["k"]
    assert store.head("k").etag == receipt.etag


def test_unknown_key_id_is_access_denied(
    s3_endpoint: str, s3_bucket: str, moto_auth: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7SECRETID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY1")
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    store = make_store(s3_endpoint, s3_bucket)

    for call in (lambda: store.put("k", b"x", META), lambda: store.open("k")):
        with pytest.raises(AccessDeniedError) as excinfo:
            call()
        assert excinfo.value.exit_status == ExitStatus.ACCESS_DENIED
        assert "SECRETID" not in str(excinfo.value)


def test_missing_credentials_are_access_denied(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    store = make_store(s3_endpoint, s3_bucket)

    with pytest.raises(AccessDeniedError, match="no AWS credentials found for s3://"):
        store.put("k", b"x", META)


def test_credentials_come_from_the_aws_profile(
    s3_endpoint: str, s3_bucket: str, fake_aws_env: Path, moto_auth: None
) -> None:
    # With moto checking signatures, only the profile's real (moto default) key id works.
    (fake_aws_env / "credentials").write_text(
        "[other]\naws_access_key_id = FOOBARKEY\naws_secret_access_key = bar\n"
    )
    store = make_store(s3_endpoint, s3_bucket, profile="other")
    with pytest.raises(AccessDeniedError):
        store.put("k", b"x", META)  # moto knows no FOOBARKEY: refused, so the profile was used


def test_refused_connection_is_backend_unavailable() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = make_store(endpoint, "bkt", connect_timeout=2)

    with pytest.raises(BackendUnavailableError) as excinfo:
        store.put("k", b"x", META)

    assert not isinstance(excinfo.value, TransientError)
    assert excinfo.value.exit_status == ExitStatus.UNAVAILABLE
    assert endpoint in str(excinfo.value)
    assert "s3://bkt/p/k" in str(excinfo.value)


def test_slow_down_is_transient_and_throttled(s3_endpoint: str, s3_bucket: str) -> None:
    with S3Proxy(s3_endpoint, slow_down_rate=1.0) as proxy:
        store = make_store(proxy.url, s3_bucket)
        with pytest.raises(TransientError) as excinfo:
            store.put("k", b"x", META)
    assert excinfo.value.throttled
    assert "SlowDown" in str(excinfo.value)
    assert proxy.requests["PUT"] == 1  # obstore made no retry of its own


def test_open_store_picks_the_transport(s3_endpoint: str, tmp_path: Path) -> None:
    settings = Settings(
        store="s3://bkt/p", index=str(tmp_path / "i"), endpoint_url=s3_endpoint, transport="obstore"
    )
    assert isinstance(open_store(settings), ObstoreS3Store)


def test_unknown_transport_is_a_usage_error(run: Run) -> None:
    result = run("put", "--transport", "curl", input=b"")
    assert result.exit_code == ExitStatus.USAGE
    assert "'curl' is not one of 'boto3', 'obstore'" in result.stderr
    with pytest.raises(ConfigError):
        from s3idx.config import resolve_settings

        resolve_settings({"transport": "curl"})


def test_missing_obstore_names_the_extra(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "s3idx.store.obstore_s3", None)
    settings = Settings(store="s3://bkt/p", index=str(tmp_path / "i"), transport="obstore")
    with pytest.raises(UsageError) as excinfo:
        open_store(settings)
    assert "pip install 's3idx[fast]'" in str(excinfo.value)


def test_cli_round_trip_with_the_obstore_transport(run: Run, s3_endpoint: str) -> None:
    docs = [{"fs_id": f"k{i}", "n": i} for i in range(20)]
    args = ["--store", "s3://fastbucket/sub", "--endpoint-url", s3_endpoint]
    put = run("put", *args, "--transport", "obstore", "--create-bucket", "--field", "n",
              input=jsonl(*docs))  # fmt: skip
    assert put.exit_code == 0, put.stderr

    got = run("get", *args, "--transport", "obstore", "k3", "k7")
    assert json_lines(got.stdout) == [docs[3], docs[7]]
    # Written by obstore, read back by boto3: the same objects and metadata either way.
    full = run("query", *args, '{"n": {"$lt": 2}}', "--full", "--sort", "n")
    assert json_lines(full.stdout) == docs[:2]
    rebuilt = run("rebuild-index", *args, "--transport", "obstore", "--json")
    assert rebuilt.exit_code == 0, rebuilt.stderr
    assert run("query", '{"n": 5}', "--count").stdout == "1\n"


def test_a_child_forked_after_obstore_was_used_stores_and_reads(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    """obstore's runtime does not survive a fork: a child of a process that used it still
    stores and reads (through boto3), rather than waiting for ever."""
    engine = open_engine(
        store=f"s3://{s3_bucket}/p",
        index=str(tmp_path / "index.sqlite3"),
        endpoint_url=s3_endpoint,
        transport="obstore",
    )
    with engine:
        assert engine.put_documents([{"fs_id": "parent", "n": 1}]).stored == 1

        def child() -> None:
            assert engine.put_documents([{"fs_id": "child", "n": 2}]).stored == 1
            assert engine.get("child") == {"fs_id": "child", "n": 2}
            assert engine.get("parent") == {"fs_id": "parent", "n": 1}
            assert [e["fs_id"] for e in engine.query({}, sort=[("fs_id", 1)])] == [
                "child",
                "parent",
            ]

        run_in_fork(child, timeout=30)

        # The parent goes on with obstore, and sees what the child wrote.
        assert engine.put_documents([{"fs_id": "after", "n": 3}]).stored == 1
        assert engine.get("child") == {"fs_id": "child", "n": 2}


STRAY_KEYS = ["sub/../up", "sub/./dot", "sub//double", "sub/a/..", "sub/ctl\x7f", "sub/c\x01"]


def test_objects_obstore_cannot_address_are_read_as_boto3_reads_them(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    """Another tool's objects under keys obstore's paths refuse (a '.', '..' or empty
    segment, a control character: keys s3idx never writes) are reported as boto3 reports them
    (not s3idx objects), and every command goes on; they stopped sync, verify and
    rebuild-index with "Could not parse path" (exit 1)."""
    import boto3

    args = ["--store", f"s3://{s3_bucket}/sub", "--endpoint-url", s3_endpoint]
    docs = [{"fs_id": f"k{i}", "n": i} for i in range(3)]
    put = run("put", *args, "--transport", "obstore", "--field", "n", input=jsonl(*docs))
    assert put.exit_code == 0, put.stderr
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for key in STRAY_KEYS:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"not s3idx")
    for command in (
        ["sync", "--check", "--json"],
        ["verify", "--json"],
        ["sync", "--json"],
        ["rebuild-index", "--no-manifests", "--json"],
    ):
        results = {}
        for transport in ("boto3", "obstore"):
            done = run(*command, *args, "--transport", transport)
            results[transport] = (done.exit_code, json_lines(done.stdout)[0].get("not_s3idx"))
        assert results["obstore"] == results["boto3"], command
        assert results["obstore"][0] == 0 and results["obstore"][1], (command, results)
    assert run("query", "{}", "--count").stdout == "3\n"
