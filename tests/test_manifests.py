"""rebuild-index from manifests: few requests, and the same index as HEADing every object.

The S3 tests count requests with tests/s3proxy.py in front of moto (rebuild only; the puts go
to moto directly). ``S3IDX_TEST_MANIFEST_N`` sets the size of the large test (the issue's
figure is 20,000; the default keeps the test quick).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import boto3
import orjson
import pytest

from s3idx import Engine, Events
from s3idx.engine import rebuild as rebuild_module
from s3idx.engine.manifest import MANIFEST_PREFIX, ManifestLine, list_manifests, write_manifest
from s3idx.engine.manifest_batches import ManifestBatches
from s3idx.errors import BackendUnavailableError
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.local import LocalStore
from s3idx.store.s3 import S3Store
from tests.helpers import Run, StopAfter, jsonl
from tests.s3proxy import S3Proxy

BUCKET, PREFIX = "bucket", "docs"
LARGE_N = int(os.environ.get("S3IDX_TEST_MANIFEST_N", "2000"))


def _doc(i: int, version: int = 0) -> dict[str, Any]:
    return {"fs_id": f"doc/{i:05d}", "v": i + version, "tag": ["a", "b"][i % 2], "x": "y" * 50}


def _entries(index_path: Path) -> list[Any]:
    """Every entry of an index, bookkeeping included, in key order."""
    with SqliteIndex(index_path) as index:
        return sorted(index.find({}), key=lambda e: e["fs_id"])


def _args(endpoint: str, index: Path) -> list[str]:
    return ["--store", f"s3://{BUCKET}/{PREFIX}", "--endpoint-url", endpoint, "--index", str(index)]


def _client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _headed(proxy: S3Proxy) -> set[str]:
    """Keys of the objects HEADed (a HeadBucket is not one)."""
    paths = [unquote(path.split("?")[0]) for method, path in proxy.log if method == "HEAD"]
    return {path.split(f"/{PREFIX}/", 1)[1] for path in paths if f"/{PREFIX}/" in path}


def _rebuild(run: Run, endpoint: str, index: Path, *extra: str) -> tuple[dict[str, Any], S3Proxy]:
    with S3Proxy(endpoint) as proxy:
        result = run("rebuild-index", *_args(proxy.url, index), "--json", *extra)
    assert result.exit_code in (0, 3), result.stderr  # 3: skipped objects (plain boto3 ones)
    return orjson.loads(result.stdout), proxy


def test_rebuild_of_a_put_bucket_reads_manifests_not_objects(
    run: Run, s3_endpoint: str, tmp_path: Path
) -> None:
    original = tmp_path / "original.sqlite3"
    docs = [_doc(i) for i in range(LARGE_N)]
    put = run(
        "put",
        *_args(s3_endpoint, original),
        "--create-bucket",
        "--field",
        "v",
        "--field",
        "tag",
        input=jsonl(*docs),
    )
    assert put.exit_code == 0, put.stderr
    rebuilt = tmp_path / "rebuilt.sqlite3"

    data, proxy = _rebuild(run, s3_endpoint, rebuilt)

    assert _entries(rebuilt) == _entries(original)
    assert (data["listed"], data["written"]) == (LARGE_N, LARGE_N)
    assert (data["from_manifests"], data["heads"]) == (LARGE_N, 0)
    bucket_checks = [p for m, p in proxy.log if m == "HEAD" and p.rstrip("/") == f"/{BUCKET}"]
    assert len(bucket_checks) == proxy.requests["HEAD"] <= 1  # HeadBucket, no object HEAD
    body_gets = [p for m, p in proxy.log if m == "GET" and MANIFEST_PREFIX not in unquote(p)]
    assert body_gets == []
    assert proxy.requests["GET"] == data["manifests_read"] >= 1
    # The bucket check is made before the rebuild starts counting. No request per object:
    # listing pages, a GET per manifest, the compacted manifests' PUTs, 1,000 removed a DELETE.
    read = data["manifests_read"]
    pages, written, deletes = -(-LARGE_N // 1000), -(-LARGE_N // 10_000), -(-read // 1000)
    assert sum(proxy.requests.values()) - len(bucket_checks) == data["requests"]
    assert data["requests"] <= 4 + pages + read + written + deletes
    # put writes a manifest per batch of 1,000 (or per 10 s on a slow endpoint): the issue's
    # budget holds for the first rebuild too.
    assert sum(proxy.requests.values()) <= 100
    # Compacted: one manifest per 10,000 objects replaces one per put batch.
    assert data["manifests_written"] == -(-LARGE_N // 10_000)
    assert data["manifests_removed"] == data["manifests_read"]
    store = S3Store(BUCKET, PREFIX, endpoint_url=s3_endpoint)
    assert len(list_manifests(store)) == data["manifests_written"]

    # From the compacted manifests: the budget, 100 requests for 20,000 objects.
    again, proxy = _rebuild(run, s3_endpoint, tmp_path / "again.sqlite3")
    assert (again["from_manifests"], again["heads"], _headed(proxy)) == (LARGE_N, 0, set())
    assert again["manifests_read"] == written
    assert sum(proxy.requests.values()) <= 100
    assert _entries(tmp_path / "again.sqlite3") == _entries(original)


def test_rebuild_heads_exactly_what_no_manifest_vouches_for(
    run: Run, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tmp_path / "first.sqlite3"
    n = 600
    fields = ["--field", "v", "--field", "tag"]
    put = run(
        "put",
        *_args(s3_endpoint, first),
        "--create-bucket",
        *fields,
        input=jsonl(*(_doc(i) for i in range(n))),
    )
    assert put.exit_code == 0, put.stderr
    client = _client(s3_endpoint)

    def key(i: int) -> str:
        return f"{PREFIX}/doc/{i:05d}"

    # Overwritten by another s3idx put with another index: its own manifest vouches for them.
    other = run(
        "put",
        *_args(s3_endpoint, tmp_path / "other.sqlite3"),
        *fields,
        input=jsonl(*(_doc(i, 1000) for i in range(0, 50))),
    )
    assert other.exit_code == 0, other.stderr
    # A put that died after storing its objects, before writing its manifest.
    with monkeypatch.context() as patched:
        patched.setattr(ManifestBatches, "flush", lambda self, last=False: None)
        killed = run(
            "put",
            *_args(s3_endpoint, tmp_path / "killed.sqlite3"),
            *fields,
            input=jsonl(*(_doc(i, 2000) for i in [*range(50, 80), *range(n, n + 30)])),
        )
    assert killed.exit_code == 0, killed.stderr
    # Overwritten by plain boto3: no s3idx metadata at all.
    for i in range(100, 150):
        client.put_object(Bucket=BUCKET, Key=key(i), Body=b"{}")
    # Metadata replaced in place: same body (same ETag), a later LastModified.
    time.sleep(1.1)  # manifests vouch at whole seconds
    for i in range(150, 170):
        head = client.head_object(Bucket=BUCKET, Key=key(i))
        meta = head["Metadata"]
        meta["s3idx-entry"] = meta["s3idx-entry"].replace(f'"v":{i}', f'"v":{i + 5000}')
        client.copy_object(
            Bucket=BUCKET,
            Key=key(i),
            CopySource={"Bucket": BUCKET, "Key": key(i)},
            Metadata=meta,
            MetadataDirective="REPLACE",
        )
    for i in range(200, 300):
        client.delete_object(Bucket=BUCKET, Key=key(i))

    plain, plain_proxy = _rebuild(run, s3_endpoint, tmp_path / "plain.sqlite3", "--no-manifests")
    assert plain["manifests_read"] == plain["from_manifests"] == plain["manifests_written"] == 0
    assert len(_headed(plain_proxy)) == plain["heads"] == n + 30 - 100
    assert not [p for m, p in plain_proxy.log if MANIFEST_PREFIX in unquote(p)]

    data, proxy = _rebuild(run, s3_endpoint, tmp_path / "manifests.sqlite3")

    expected_heads = {f"doc/{i:05d}" for i in [*range(50, 80), *range(n, n + 30), *range(100, 170)]}
    assert _headed(proxy) == expected_heads
    assert data["heads"] == len(expected_heads)
    assert data["from_manifests"] == n + 30 - 100 - len(expected_heads)
    assert _entries(tmp_path / "manifests.sqlite3") == _entries(tmp_path / "plain.sqlite3")
    assert data["not_s3idx"] == plain["not_s3idx"] == 50
    rebuilt = {e["fs_id"]: e["v"] for e in _entries(tmp_path / "manifests.sqlite3")}
    assert rebuilt["doc/00000"] == 1000 and rebuilt["doc/00050"] == 2050
    assert rebuilt["doc/00150"] == 5150 and "doc/00200" not in rebuilt

    # The compacted manifests vouch for everything, foreign objects included.
    again, proxy = _rebuild(run, s3_endpoint, tmp_path / "again.sqlite3")
    assert (again["heads"], _headed(proxy)) == (0, set())
    assert _entries(tmp_path / "again.sqlite3") == _entries(tmp_path / "plain.sqlite3")


def test_damaged_manifest_is_reported_and_its_objects_headed(tmp_path: Path) -> None:
    with Engine(LocalStore(tmp_path / "s"), SqliteIndex(tmp_path / "a.sqlite3")) as engine:
        engine.put_documents([_doc(i) for i in range(30)], fields=["v"])
        store = engine.store
        for info in list_manifests(store):  # put's own
            store.delete([info.key])
        heads = [store.head(o.key) for o in store.list_objects()]
        good = write_manifest(store, [ManifestLine.from_head(h) for h in heads[:10]])
        damaged = write_manifest(store, [ManifestLine.from_head(h) for h in heads[10:]])
        assert good is not None and damaged is not None
        store.put(damaged, b"not gzip", {})
        skipped: list[tuple[str, str]] = []

        class Seen(Events):
            def warned(self, message: str) -> None:
                skipped.append(("", message))

        result = engine.rebuild_index(events=Seen())
    assert (result.written, result.heads, result.from_manifests) == (30, 20, 10)
    assert len(skipped) == 1 and f"manifest {damaged} not used" in skipped[0][1]
    assert result.manifests_read == 1  # the damaged one is not counted as read


def _local_engine(tmp_path: Path, name: str) -> Engine:
    return Engine(LocalStore(tmp_path / "s"), SqliteIndex(tmp_path / name), workers=4)


def test_interrupted_then_resumed_rebuild_compacts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rebuild_module, "LIST_BATCH", 7)
    with _local_engine(tmp_path, "a.sqlite3") as engine:
        engine.put_documents([_doc(i) for i in range(30)], fields=["v"])
        before = _entries(tmp_path / "a.sqlite3")
    with _local_engine(tmp_path, "b.sqlite3") as engine:
        manifests = list_manifests(engine.store)
        stop = threading.Event()
        first = engine.rebuild_index(events=StopAfter(stop, 2), stop=stop)
        assert (first.interrupted, first.manifests_removed) == (True, 0)
        second = engine.rebuild_index(resume=True)
        assert (second.committed, second.listed) == (True, 30)
        assert (second.manifests_written, second.manifests_removed) == (0, 0)
        assert list_manifests(engine.store)[: len(manifests)] == manifests  # none removed
    assert _entries(tmp_path / "b.sqlite3") == before


def test_a_store_refusing_the_compaction_leaves_the_rebuild_successful(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _local_engine(tmp_path, "a.sqlite3") as engine:
        engine.put_documents([_doc(i) for i in range(20)], fields=["v"])
        before = _entries(tmp_path / "a.sqlite3")
    reasons: list[str] = []

    class Seen(Events):
        def warned(self, message: str) -> None:
            reasons.append(message)

    def refuse(self: Any, key: str, body: bytes, metadata: Any) -> Any:
        raise BackendUnavailableError("access denied (read-only credentials)")

    monkeypatch.setattr(LocalStore, "put", refuse)
    with _local_engine(tmp_path, "b.sqlite3") as engine:
        result = engine.rebuild_index(events=Seen())
    assert (result.committed, result.written) == (True, 20)
    assert (result.manifests_written, result.manifests_removed) == (0, 0)
    assert reasons == ["compacted manifests not written: access denied (read-only credentials)"]
    assert _entries(tmp_path / "b.sqlite3") == before


@pytest.mark.parametrize("how", ["in-place", "restored-copy"])
def test_a_manifest_copied_after_its_objects_were_stored_again_vouches_for_nothing(
    run: Run, s3_endpoint: str, tmp_path: Path, s3_bucket: str, how: str
) -> None:
    """The same bodies put again with other metadata keep their ETags: only time tells the
    first put's manifest lines out of date. A manifest copied later (in place, or restored
    under its own name from a backup) has a new LastModified but still its name's time, when
    s3idx wrote it: its lines must not stand for the objects stored since."""
    first, second = tmp_path / "first.sqlite3", tmp_path / "second.sqlite3"
    docs = jsonl(*[{"fs_id": f"k{i}", "n": i, "name": f"d{i}"} for i in range(5)])
    where = ["--store", f"s3://{s3_bucket}/{PREFIX}", "--endpoint-url", s3_endpoint]
    assert run("put", *where, "--index", str(first), "--field", "n", input=docs).exit_code == 0
    client = _client(s3_endpoint)
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix=f"{PREFIX}/{MANIFEST_PREFIX}")
    (manifest,) = [item["Key"] for item in listed["Contents"]]
    time.sleep(1.1)  # S3's times are whole seconds
    stored = run("put", *where, "--index", str(second), "--field", "name", input=docs)
    assert stored.exit_code == 0, stored.stderr
    time.sleep(1.1)
    body = client.get_object(Bucket=s3_bucket, Key=manifest)["Body"].read()
    if how == "in-place":
        client.copy_object(
            Bucket=s3_bucket,
            Key=manifest,
            CopySource={"Bucket": s3_bucket, "Key": manifest},
            MetadataDirective="REPLACE",
        )
    else:
        client.delete_object(Bucket=s3_bucket, Key=manifest)
        client.put_object(Bucket=s3_bucket, Key=manifest, Body=body)

    rebuilt = run("rebuild-index", *where, "--index", str(second))
    assert rebuilt.exit_code == 0, rebuilt.stderr
    check = run("verify", *where, "--index", str(second))
    assert check.exit_code == 0, check.stdout + check.stderr
    entries = _entries(second)
    assert [e.get("name") for e in entries] == [f"d{i}" for i in range(5)]
    assert all("n" not in e for e in entries)


@pytest.mark.parametrize(
    "metadata",
    [
        {"s3idx-entry": "{not json"},
        {"s3idx-entry": '{"fs_id": "doc/00004", "v": 3}'},  # another key's entry
        {"s3idx-format": "99"},
    ],
    ids=["not-json", "another-key", "unknown-format"],
)
def test_a_manifest_line_whose_metadata_cannot_be_decoded_drops_no_object(
    tmp_path: Path, metadata: dict[str, str]
) -> None:
    """The line's ETag matches, but its metadata is not the object's: a manifest is a claim,
    the object is asked (a HEAD), and its own sound metadata gives its entry."""
    with Engine(LocalStore(tmp_path / "s"), SqliteIndex(tmp_path / "a.sqlite3")) as engine:
        engine.put_documents([_doc(i) for i in range(6)], fields=["v"])
        store = engine.store
        head = store.head("doc/00003")
        damaged = {**head.metadata, **metadata}
        line = ManifestLine(head.key, head.etag, head.size, damaged, head.last_modified)
        assert write_manifest(store, [line]) is not None
        result = engine.rebuild_index()
        keys = [e["fs_id"] for e in engine.query({}, fields=["fs_id"])]
    assert keys == [f"doc/{i:05d}" for i in range(6)]
    assert result.skipped.undecodable == 0 and result.skipped.not_s3idx == 0
    assert (result.written, result.heads, result.from_manifests) == (6, 1, 5)
