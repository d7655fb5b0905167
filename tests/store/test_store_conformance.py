"""The object-store protocol: every backend must pass every test here."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from s3idx.errors import MetadataTooLargeError, ObjectChangedError, ObjectNotFoundError
from s3idx.store.base import ObjectStore

META = {"s3idx-format": "1", "s3idx-entry": '{"fs_id":"a"}'}


def test_put_then_head_and_open_return_what_was_put(store: ObjectStore) -> None:
    receipt = store.put("a", b"body bytes", META)

    head = store.head("a")
    assert head.key == "a"
    assert head.metadata == META
    assert head.etag == receipt.etag
    assert head.size == receipt.size

    body = store.open("a")
    assert body.head.metadata == META
    assert body.read() == b"body bytes"


def test_head_and_open_say_when_the_object_was_stored(store: ObjectStore) -> None:
    store.put("a", b"x", META)
    now = datetime.now(UTC)
    body = store.open("a")
    body.read()  # closes it
    for head in (store.head("a"), body.head):
        assert head.last_modified is not None
        # S3 gives whole seconds, and a server's clock may differ a little from ours.
        assert abs(head.last_modified - now) < timedelta(minutes=5)


def test_missing_key_raises_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError) as excinfo:
        store.head("nope")
    assert str(excinfo.value) == "no such object: nope"
    with pytest.raises(ObjectNotFoundError):
        store.open("nope")


def test_empty_store_lists_nothing(store: ObjectStore) -> None:
    assert list(store.list()) == []


TRICKY_KEYS = [
    "a",
    "a/b",
    "a-c",
    "a/b/c",
    "a0",
    "b~x",
    "b%41",
    "B",
    "é/x",
    "z",
    "日本/語",
    "with space",
    "A/a",
]


def test_list_yields_every_key_in_utf8_byte_order(store: ObjectStore) -> None:
    receipts = {key: store.put(key, key.encode(), META) for key in TRICKY_KEYS}

    listed = list(store.list())

    assert [o.key for o in listed] == sorted(TRICKY_KEYS, key=lambda k: k.encode())
    for info in listed:
        assert info.etag == receipts[info.key].etag
        assert info.size == receipts[info.key].size
    for key in TRICKY_KEYS:
        assert store.open(key).read() == key.encode()


def test_list_with_prefix_and_start_after(store: ObjectStore) -> None:
    for key in TRICKY_KEYS:
        store.put(key, b"x", META)

    assert [o.key for o in store.list("a/")] == ["a/b", "a/b/c"]
    assert [o.key for o in store.list("a")] == ["a", "a-c", "a/b", "a/b/c", "a0"]
    after = [o.key for o in store.list(start_after="a/b")]
    expected = [k for k in sorted(TRICKY_KEYS, key=lambda k: k.encode()) if k.encode() > b"a/b"]
    assert after == expected


def test_overwrite_replaces_body_metadata_and_etag(store: ObjectStore) -> None:
    first = store.put("k", b"one", META)
    second = store.put("k", b"two, longer", {"s3idx-format": "1"})

    assert [o.key for o in store.list()] == ["k"]
    assert store.open("k").read() == b"two, longer"
    assert store.head("k").metadata == {"s3idx-format": "1"}
    assert second.etag != first.etag


def test_delete_removes_objects_and_ignores_missing_ones(store: ObjectStore) -> None:
    for key in ("a", "b/c", "d"):
        store.put(key, b"x", META)

    failures = store.delete(["a", "b/c", "never-existed"])

    assert failures == []
    assert [o.key for o in store.list()] == ["d"]
    with pytest.raises(ObjectNotFoundError):
        store.head("b/c")


def test_metadata_over_2kb_is_refused_before_anything_is_written(store: ObjectStore) -> None:
    big = {"s3idx-entry": "x" * 2100}

    with pytest.raises(MetadataTooLargeError) as excinfo:
        store.put("big", b"body", big)

    assert "limit is 2048 bytes" in str(excinfo.value)
    assert list(store.list()) == []


def test_large_body_is_streamed_in_chunks(store: ObjectStore) -> None:
    data = os.urandom(3 << 20)
    store.put("large", data, META)

    chunks = list(store.open("large").chunks)

    assert len(chunks) > 1
    assert b"".join(chunks) == data


def test_concurrent_puts_of_many_keys_all_land(store: ObjectStore) -> None:
    keys = [f"dir{i % 7}/key{i}" for i in range(200)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: store.put(k, k.encode(), META), keys))

    assert sorted(o.key for o in store.list()) == sorted(keys)
    assert all(store.open(k).read() == k.encode() for k in keys[:20])


# --- replacing metadata in place (reindex) ----------------------------------------------------

NEW_META = {"s3idx-format": "1", "s3idx-entry": '{"fs_id":"k","b":1}'}


def test_replace_metadata_keeps_the_body_and_gives_the_new_etag(store: ObjectStore) -> None:
    body = os.urandom(70_000)  # not text: the body must come back byte for byte
    put = store.put("dir/k", body, META)

    receipt = store.replace_metadata("dir/k", NEW_META, if_match=put.etag)

    head = store.head("dir/k")
    assert head.metadata == NEW_META
    assert (head.etag, head.size) == (receipt.etag, receipt.size)
    assert store.open("dir/k").read() == body
    assert [(o.key, o.etag) for o in store.list()] == [("dir/k", receipt.etag)]


def test_replace_metadata_refuses_an_object_changed_since_it_was_read(
    store: ObjectStore,
) -> None:
    first = store.put("k", b"one", META)
    store.put("k", b"two, by another writer", {"s3idx-format": "1"})

    with pytest.raises(ObjectChangedError) as excinfo:
        store.replace_metadata("k", NEW_META, if_match=first.etag)

    assert "'k' changed since it was read" in excinfo.value.message
    assert store.head("k").metadata == {"s3idx-format": "1"}
    assert store.open("k").read() == b"two, by another writer"


def test_replace_metadata_of_a_missing_key_raises_not_found(store: ObjectStore) -> None:
    store.put("other", b"x", META)

    with pytest.raises(ObjectNotFoundError):
        store.replace_metadata("gone", NEW_META, if_match="whatever")
    assert [o.key for o in store.list()] == ["other"]


def test_replace_metadata_over_2kb_is_refused_and_changes_nothing(store: ObjectStore) -> None:
    put = store.put("k", b"body", META)

    with pytest.raises(MetadataTooLargeError):
        store.replace_metadata("k", {"s3idx-entry": "x" * 2100}, if_match=put.etag)

    assert store.head("k").metadata == META


# --- conditional deletes (issue 14) -----------------------------------------------------------


def test_delete_with_the_current_etag_removes_the_object(store: ObjectStore) -> None:
    put = store.put("dir/k", b"x", META)
    store.put("other", b"y", META)

    failures = store.delete(["dir/k"], if_match={"dir/k": put.etag})

    assert failures == []
    assert [o.key for o in store.list()] == ["other"]


def test_delete_with_a_stale_etag_leaves_the_newer_object_and_says_it_changed(
    store: ObjectStore,
) -> None:
    first = store.put("k", b"one", META)
    newer = store.put("k", b"two, by another writer", META)

    failures = store.delete(["k"], if_match={"k": first.etag})

    assert [(f.key, f.changed) for f in failures] == [("k", True)]
    assert "changed" in failures[0].reason
    assert store.head("k").etag == newer.etag
    assert store.open("k").read() == b"two, by another writer"


def test_conditional_delete_of_a_missing_key_is_no_failure(store: ObjectStore) -> None:
    put = store.put("k", b"x", META)
    store.delete(["k"])

    assert store.delete(["k", "never"], if_match={"k": put.etag, "never": put.etag}) == []
    assert list(store.list()) == []


def test_conditional_and_plain_deletes_mix_in_one_call(store: ObjectStore) -> None:
    a = store.put("a", b"x", META)
    stale = store.put("b", b"x", META)
    store.put("b", b"newer", META)
    store.put("c", b"x", META)

    failures = store.delete(["a", "b", "c"], if_match={"a": a.etag, "b": stale.etag})

    assert [(f.key, f.changed) for f in failures] == [("b", True)]
    assert [o.key for o in store.list()] == ["b"]
