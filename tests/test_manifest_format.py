"""The manifest format (engine/manifest.py) on the local store: written, listed, read back."""

from __future__ import annotations

import gzip
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from s3idx.engine import manifest_batches
from s3idx.engine.manifest import (
    MANIFEST_PREFIX,
    CompactionWriter,
    ManifestLine,
    list_manifests,
    read_manifest,
    vouches,
    write_manifest,
)
from s3idx.engine.manifest_batches import ManifestBatches
from s3idx.errors import CorruptObjectError
from s3idx.store.base import ObjectHead, ObjectInfo
from s3idx.store.local import LocalStore

T0 = datetime(2026, 12, 1, 20, 0, 0, tzinfo=UTC)


def line(key: str, etag: str = "e1", modified: datetime | None = None) -> ManifestLine:
    return ManifestLine(key, etag, 10, {"s3idx-format": "1", "s3idx-entry": '{"k":1}'}, modified)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_written_manifest_reads_back_sorted_by_key(store: LocalStore) -> None:
    lines = [line("b"), line("a", "e2", T0 + timedelta(microseconds=250)), line("é/x")]
    key = write_manifest(store, lines)
    assert key is not None and key.startswith(MANIFEST_PREFIX) and key.endswith(".jsonl.gz")
    assert list(read_manifest(store, key)) == sorted(lines, key=lambda x: x.key)


def test_body_is_gzip_of_json_lines_with_the_format_line_first(store: LocalStore) -> None:
    key = write_manifest(store, [line("a", modified=T0)])
    assert key is not None
    text = gzip.decompress(store.open(key).read()).decode().splitlines()
    assert text[0] == '{"s3idx_manifest":1}'
    assert '"last_modified":"2026-12-01T20:00:00Z"' in text[1]
    assert text[1].startswith('{"key":"a","etag":"e1","size":10,')


def test_no_lines_writes_nothing(store: LocalStore) -> None:
    assert write_manifest(store, []) is None
    assert list_manifests(store) == []


def test_line_round_trips_through_a_head() -> None:
    head = ObjectHead("k", "etag", 5, {"s3idx-format": "1"}, T0)
    assert ManifestLine.from_head(head).head() == head


def test_batches_write_one_manifest_per_flush_from_many_threads(store: LocalStore) -> None:
    batches = ManifestBatches(store, warn=pytest.fail)
    threads = [
        threading.Thread(target=lambda i=i: [batches.add(line(f"{i}-{j}")) for j in range(50)])
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batches.flush()
    batches.flush()  # nothing added since: nothing written
    batches.add(line("z"))
    batches.close()
    first, second = (x.key for x in list_manifests(store))
    assert batches.written == 2
    assert len(list(read_manifest(store, first))) == 200
    assert [x.key for x in read_manifest(store, second)] == ["z"]


def test_batches_gather_min_lines_before_writing(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """put flushes its index every second on a slow endpoint; its manifests hold a batch."""
    batches = ManifestBatches(store, warn=pytest.fail, min_lines=3)
    batches.add(line("a"))
    batches.add(line("b"))
    batches.flush()
    assert list_manifests(store) == []  # 2 lines < 3, and young
    batches.add(line("c"))
    batches.flush()
    assert [len(list(read_manifest(store, m.key))) for m in list_manifests(store)] == [3]
    batches.add(line("d"))
    monkeypatch.setattr(manifest_batches, "GATHER_SECONDS", 0.0)
    batches.flush()  # one line, but it waited long enough
    assert len(list_manifests(store)) == 2
    batches.add(line("e"))
    batches.close()  # the last flush writes whatever waits
    assert batches.written == 3


def test_listing_of_manifests_is_oldest_first(store: LocalStore) -> None:
    keys = [write_manifest(store, [line(str(i))]) for i in range(3)]
    assert [info.key for info in list_manifests(store)] == keys


def test_damaged_manifest_is_a_corrupt_object_error(store: LocalStore) -> None:
    store.put(MANIFEST_PREFIX + "20260101T000000.000000Z-00000000.jsonl.gz", b"not gzip", {})
    key = list_manifests(store)[0].key
    with pytest.raises(CorruptObjectError, match="manifest"):
        list(read_manifest(store, key))
    store.put(key, gzip.compress(b'{"other": 1}\n'), {})
    with pytest.raises(CorruptObjectError, match="does not start with"):
        list(read_manifest(store, key))
    store.put(key, gzip.compress(b'{"s3idx_manifest":1}\n{"key": 3}\n'), {})
    with pytest.raises(CorruptObjectError, match="line 2"):
        list(read_manifest(store, key))
    whole = gzip.compress(b'{"s3idx_manifest":1}\n' + line("a").to_json() + b"\n" * 2000)
    store.put(key, whole[: len(whole) - 12], {})  # truncated
    with pytest.raises(CorruptObjectError, match="cannot be read"):
        list(read_manifest(store, key))


@pytest.mark.parametrize(
    ("line_time", "manifest_time", "listed_time", "etag", "expected"),
    [
        (None, T0, T0 - timedelta(seconds=3), "e1", True),  # put's line, object older
        (None, T0, T0 + timedelta(milliseconds=400), "e1", True),  # same second
        (None, T0, T0 + timedelta(seconds=1), "e1", False),  # stored again after the manifest
        (None, T0, T0, "e2", False),  # another ETag
        (None, None, T0, "e1", False),  # manifest time unknown
        (T0, T0 + timedelta(days=1), T0 + timedelta(milliseconds=999), "e1", True),
        (T0, T0 + timedelta(days=1), T0 + timedelta(seconds=1), "e1", False),
        (T0, T0 + timedelta(days=1), T0 - timedelta(seconds=1), "e1", False),
        (T0, T0, T0, "e2", False),
    ],
)
def test_vouching_rule(
    line_time: datetime | None,
    manifest_time: datetime | None,
    listed_time: datetime,
    etag: str,
    expected: bool,
) -> None:
    listed = ObjectInfo("a", etag, 10, listed_time)
    assert vouches(line("a", "e1", line_time), manifest_time, listed) is expected
    assert not vouches(line("a", "e1", line_time), manifest_time, ObjectInfo("a", "e1", 10))


def test_compaction_writes_bounded_manifests_then_removes_the_replaced(store: LocalStore) -> None:
    old = [write_manifest(store, [line(f"k{i:03}")]) for i in range(3)]
    replaced = list_manifests(store)
    meanwhile = write_manifest(store, [line("k000", "newer")])
    writer = CompactionWriter(store, lines_per_manifest=40)
    for i in range(100):
        writer.add(line(f"k{i:03}"))
    writer.finish(replaced)
    assert (writer.written, writer.removed) == (3, 3)
    left = [info.key for info in list_manifests(store)]
    assert meanwhile in left and not set(old) & set(left)  # type: ignore[arg-type]
    sizes = sorted(len(list(read_manifest(store, k))) for k in left if k != meanwhile)
    assert sizes == [20, 40, 40]
    with pytest.raises(ValueError, match="out of key order"):
        writer.add(line("a"))


def test_manifest_index_takes_the_latest_line_and_filters_by_owner(store: LocalStore) -> None:
    from s3idx.engine.manifest_index import ManifestIndex

    write_manifest(store, [line("a", "e1"), line("b", "e1")])
    write_manifest(store, [line("a", "e2")])
    past = datetime.now(UTC) - timedelta(minutes=1)
    listed = [ObjectInfo("a", "e1", 10, past), ObjectInfo("b", "e1", 10, past)]
    with ManifestIndex.load(store, list_manifests(store)) as joined:
        assert joined.manifests_read == 2
        vouched, to_head = joined.vouch(listed)
        assert (list(vouched), to_head) == (["b"], ["a"])  # a's later line names another ETag
        assert vouched["b"] == ObjectHead("b", "e1", 10, line("b").metadata, past)
        vouched, to_head = joined.vouch([ObjectInfo("a", "e2", 10, past)])
        assert (list(vouched), to_head) == (["a"], [])
    with ManifestIndex.load(store, list_manifests(store), owns=lambda k: k != "b") as joined:
        assert joined.vouch(listed) == ({}, ["a", "b"])
