"""An S3 answer without a field s3idx needs (an ETag, a size) is a clear error, never a crash.

Some S3-compatible servers, and proxies before them, leave headers out. s3idx cannot tell an
object's versions apart without its ETag, nor check a body without its size: the request fails
for its key (exit 5) with the operation and what was missing named, and the other keys go on.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import orjson
import pytest

from s3idx import Engine
from s3idx.errors import ExitStatus, IncompleteAnswerError
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.s3 import S3Store
from tests.helpers import Run, entries_and_objects, json_lines, jsonl, put_on_s3, s3_locations
from tests.s3proxy import S3Proxy

DOCS = [{"fs_id": f"k{i:02d}", "v": i} for i in range(6)]
TRANSPORTS = ["boto3", "obstore", "http"]


@pytest.fixture
def stored(run: Run, s3_endpoint: str, tmp_path: Path) -> Path:
    """DOCS stored directly on moto; returns the SQLite index."""
    return put_on_s3(run, s3_endpoint, tmp_path / "i.sqlite3", DOCS)


def _through(proxy: S3Proxy, index: Path, transport: str) -> list[str]:
    return s3_locations(proxy.url, index, transport)


def _no_traceback(stderr: str) -> None:
    assert "internal error" not in stderr  # what the CLI makes of any exception it did not mean


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_get_of_an_object_answered_without_its_etag_names_it_and_serves_the_others(
    run: Run, s3_endpoint: str, stored: Path, transport: str
) -> None:
    with S3Proxy(s3_endpoint) as proxy:
        proxy.dropped_headers = lambda m, p: ("etag",) if p.endswith("/k02") else ()
        result = run("get", *_through(proxy, stored, transport), "k01", "k02", "k03")

    _no_traceback(result.stderr)
    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    assert json_lines(result.stdout) == [DOCS[1], DOCS[3]]
    assert re.search(r"k02: .*answered .*without (its|an) ETag", result.stderr), result.stderr


@pytest.mark.parametrize("header", ["etag"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rebuild_of_objects_headed_without_a_field_names_them_and_keeps_the_index(
    run: Run, s3_endpoint: str, stored: Path, transport: str, header: str
) -> None:
    with S3Proxy(s3_endpoint) as proxy:
        proxy.dropped_headers = lambda m, p: (header,) if m == "HEAD" and p.endswith("/k04") else ()
        result = run(
            "rebuild-index", *_through(proxy, stored, transport), "--no-manifests", "--json"
        )

    _no_traceback(result.stderr)
    assert result.exit_code != ExitStatus.OK, result.stderr
    assert "k04" in result.stderr
    named = "ETag" if header == "etag" else "(size|Content-Length)"
    assert re.search(f"without (its|an?) {named}", result.stderr), result.stderr
    assert orjson.loads(result.stdout)["exit_status"] == result.exit_code


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_put_answered_without_an_etag_stores_no_entry_for_it_and_goes_on(
    run: Run, s3_endpoint: str, tmp_path: Path, transport: str
) -> None:
    index = tmp_path / "i.sqlite3"
    with S3Proxy(s3_endpoint) as proxy:
        run("put", *_through(proxy, index, transport), "--create-bucket", input=b"")
        proxy.dropped_headers = lambda m, p: ("etag",) if m == "PUT" and p.endswith("/k03") else ()
        result = run("put", *_through(proxy, index, transport), "--json", input=jsonl(*DOCS))

    _no_traceback(result.stderr)
    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    assert re.search(r"k03.*without (its|an) ETag", result.stderr), result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["stored"] == len(DOCS) - 1
    store = S3Store("bucket", "docs", endpoint_url=s3_endpoint)
    with Engine(store, SqliteIndex(index)) as engine:
        entries, objects = entries_and_objects(engine)
        assert entries == len(DOCS) - 1  # no entry for k03, whose ETag is not known
        assert objects in (len(DOCS) - 1, len(DOCS))  # k03's object may have landed: sync adopts


def _listing_without(element: str, upstream: str) -> object:
    def listing(path: str) -> bytes:
        with urllib.request.urlopen(upstream + path) as answer:  # moto checks no signature
            xml: bytes = answer.read()
        return re.sub(rf"<{element}>[^<]*</{element}>".encode(), b"", xml)

    return listing


@pytest.mark.parametrize("element", ["ETag", "Size", "Key"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_listing_without_a_field_of_its_objects_is_refused_and_changes_nothing(
    run: Run, s3_endpoint: str, stored: Path, transport: str, element: str
) -> None:
    with S3Proxy(s3_endpoint) as proxy:
        proxy.listing = _listing_without(element, s3_endpoint)  # type: ignore[assignment]
        result = run("sync", *_through(proxy, stored, transport))

    _no_traceback(result.stderr)
    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    assert "ListObjectsV2" in result.stderr or "listing" in result.stderr
    assert element in result.stderr, result.stderr
    direct = s3_locations(s3_endpoint, stored)
    assert run("query", "--count", *direct).stdout == f"{len(DOCS)}\n"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_metadata_copy_answered_without_its_etag_leaves_the_field_pending(
    run: Run, s3_endpoint: str, stored: Path, transport: str
) -> None:
    # A copy of a multipart object gets another ETag: the one it was asked to match would be
    # a lie in the entry.
    with S3Proxy(s3_endpoint) as proxy:
        proxy.dropped_headers = lambda m, p: (
            ("<ETag>",) if m == "PUT" and p.endswith("/k01") else ()
        )
        result = run("reindex", "--field", "n", *_through(proxy, stored, transport))

    _no_traceback(result.stderr)
    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    assert re.search(r"k01.*CopyObject.*without its ETag", result.stderr), result.stderr
    assert "still pending: n" in result.stderr, result.stderr
    direct = s3_locations(s3_endpoint, stored)
    assert run("sync", "--check", *direct).exit_code == 0


@pytest.mark.parametrize(
    ("method", "left_out", "operation"),
    [
        ("POST", "<UploadId>", "CreateMultipartUpload"),
        ("PUT", "etag", "UploadPart"),
        ("POST", "<ETag>", "CompleteMultipartUpload"),
    ],
)
def test_a_multipart_upload_answered_without_a_field_fails_its_object_alone(
    s3_endpoint: str, method: str, left_out: str, operation: str
) -> None:
    bucket = f"multipart-{operation.lower()}"
    boto3_client = S3Store(bucket, "", endpoint_url=s3_endpoint).connection.client
    boto3_client.create_bucket(Bucket=bucket)
    with S3Proxy(s3_endpoint) as proxy:
        store = S3Store(
            bucket,
            "docs",
            endpoint_url=proxy.url,
            multipart_threshold=5 << 20,
            multipart_chunksize=5 << 20,
        )
        proxy.dropped_headers = lambda m, p: (left_out,) if m == method else ()
        with pytest.raises(IncompleteAnswerError, match=f"S3 {operation} for .* without its"):
            store.put("big", b"x" * (11 << 20), {"s3idx-format": "1"})
        store.close()

    if operation != "CreateMultipartUpload":  # without its UploadId, nothing can be aborted
        assert boto3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
