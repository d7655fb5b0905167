"""The object-store protocol: every backend must pass every test here."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from s3idx.engine.retry import RetryingStore
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
    assert list(store.list_objects()) == []


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

    listed = list(store.list_objects())

    assert [o.key for o in listed] == sorted(TRICKY_KEYS, key=lambda k: k.encode())
    for info in listed:
        assert info.etag == receipts[info.key].etag
        assert info.size == receipts[info.key].size
    for key in TRICKY_KEYS:
        assert store.open(key).read() == key.encode()


def test_list_with_prefix_and_start_after(store: ObjectStore) -> None:
    for key in TRICKY_KEYS:
        store.put(key, b"x", META)

    assert [o.key for o in store.list_objects("a/")] == ["a/b", "a/b/c"]
    assert [o.key for o in store.list_objects("a")] == ["a", "a-c", "a/b", "a/b/c", "a0"]
    after = [o.key for o in store.list_objects(start_after="a/b")]
    expected = [k for k in sorted(TRICKY_KEYS, key=lambda k: k.encode()) if k.encode() > b"a/b"]
    assert after == expected


def test_overwrite_replaces_body_metadata_and_etag(store: ObjectStore) -> None:
    first = store.put("k", b"one", META)
    second = store.put("k", b"two, longer", {"s3idx-format": "1"})

    assert [o.key for o in store.list_objects()] == ["k"]
    assert store.open("k").read() == b"two, longer"
    assert store.head("k").metadata == {"s3idx-format": "1"}
    assert second.etag != first.etag


def test_delete_removes_objects_and_ignores_missing_ones(store: ObjectStore) -> None:
    for key in ("a", "b/c", "d"):
        store.put(key, b"x", META)

    failures = store.delete(["a", "b/c", "never-existed"])

    assert failures == []
    assert [o.key for o in store.list_objects()] == ["d"]
    with pytest.raises(ObjectNotFoundError):
        store.head("b/c")


def test_metadata_over_2kb_is_refused_before_anything_is_written(store: ObjectStore) -> None:
    big = {"s3idx-entry": "x" * 2100}

    with pytest.raises(MetadataTooLargeError) as excinfo:
        store.put("big", b"body", big)

    assert "limit is 2048 bytes" in str(excinfo.value)
    assert list(store.list_objects()) == []


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

    assert sorted(o.key for o in store.list_objects()) == sorted(keys)
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
    assert [(o.key, o.etag) for o in store.list_objects()] == [("dir/k", receipt.etag)]


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
    assert [o.key for o in store.list_objects()] == ["other"]


def test_replace_metadata_over_2kb_is_refused_and_changes_nothing(store: ObjectStore) -> None:
    put = store.put("k", b"body", META)

    with pytest.raises(MetadataTooLargeError):
        store.replace_metadata("k", {"s3idx-entry": "x" * 2100}, if_match=put.etag)

    assert store.head("k").metadata == META


# --- conditional puts (--rewrite) -------------------------------------------------------------


def test_a_conditional_put_replaces_the_object_it_read(store: ObjectStore) -> None:
    first = store.put("dir/k", b"one", META)

    receipt = store.put("dir/k", b"two", NEW_META, if_match=first.etag)

    head = store.head("dir/k")
    assert (head.etag, head.metadata) == (receipt.etag, NEW_META)
    assert store.open("dir/k").read() == b"two"


def test_a_conditional_put_keeps_an_object_written_since_it_was_read(
    store: ObjectStore,
) -> None:
    first = store.put("k", b"one", META)
    later = store.put("k", b"two, by another writer", {"s3idx-format": "1"})

    with pytest.raises(ObjectChangedError) as excinfo:
        store.put("k", b"three", NEW_META, if_match=first.etag)

    assert "'k' changed since it was read" in excinfo.value.message
    assert store.head("k").etag == later.etag
    assert store.open("k").read() == b"two, by another writer"


def test_a_conditional_put_does_not_bring_back_an_object_deleted_since(
    store: ObjectStore,
) -> None:
    first = store.put("k", b"one", META)
    store.put("other", b"x", META)
    assert store.delete(["k"]) == []

    with pytest.raises(ObjectChangedError):
        store.put("k", b"one again", META, if_match=first.etag)

    assert [o.key for o in store.list_objects()] == ["other"]


def test_conditional_puts_at_once_on_one_read_let_exactly_one_win(store: ObjectStore) -> None:
    first = store.put("k", b"zero", META)

    def attempt(i: int) -> bytes | None:
        try:
            store.put("k", f"writer {i}".encode(), META, if_match=first.etag)
        except ObjectChangedError:
            return None
        return f"writer {i}".encode()

    with ThreadPoolExecutor(8) as pool:
        won = [body for body in pool.map(attempt, range(8)) if body is not None]

    assert len(won) >= 1
    if "local" in type(store).__name__.lower():
        assert len(won) == 1  # a compare and a rename under the key's lock: one step
    assert store.open("k").read() in won


# --- conditional deletes (issue 14) -----------------------------------------------------------


def test_delete_with_the_current_etag_removes_the_object(store: ObjectStore) -> None:
    put = store.put("dir/k", b"x", META)
    store.put("other", b"y", META)

    failures = store.delete(["dir/k"], if_match={"dir/k": put.etag})

    assert failures == []
    assert [o.key for o in store.list_objects()] == ["other"]


def test_conditional_deletes_at_once_report_each_object_removed_to_exactly_one(
    store: ObjectStore,
) -> None:
    """``done(key, removed)``: of several conditional deletes of one object at once, exactly
    one says it removed it; the others, and a delete of a key that never existed, say it had
    none. A failed key is not reported."""
    etags = {f"k{i}": store.put(f"k{i}", f"body {i}".encode(), META).etag for i in range(8)}
    stale = store.put("stale", b"old", META).etag
    store.put("stale", b"new", META)

    def attempt(_: int) -> list[tuple[str, bool]]:
        heard: list[tuple[str, bool]] = []
        failures = store.delete(
            [*etags, "never", "stale"],
            if_match={**etags, "never": "0" * 32, "stale": stale},
            done=lambda key, removed: heard.append((key, removed)),
        )
        assert [f.key for f in failures] == ["stale"]
        return heard

    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(attempt, range(4)))

    for heard in reports:
        assert sorted(k for k, _ in heard) == sorted([*etags, "never"])  # each key once
        assert ("never", False) in heard
    for key in etags:
        assert sum((key, True) in heard for heard in reports) == 1, (key, reports)
    assert [o.key for o in store.list_objects()] == ["stale"]


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
    assert list(store.list_objects()) == []


def test_conditional_and_plain_deletes_mix_in_one_call(store: ObjectStore) -> None:
    a = store.put("a", b"x", META)
    stale = store.put("b", b"x", META)
    store.put("b", b"newer", META)
    store.put("c", b"x", META)

    failures = store.delete(["a", "b", "c"], if_match={"a": a.etag, "b": stale.etag})

    assert [(f.key, f.changed) for f in failures] == [("b", True)]
    assert [o.key for o in store.list_objects()] == ["b"]


@pytest.mark.parametrize("retrying", [False, True], ids=["bare", "retrying"])
def test_a_conditional_delete_no_longer_wanted_when_its_turn_comes_is_not_sent(
    store: ObjectStore, retrying: bool
) -> None:
    """``still_wanted(key)`` is asked right before each key's conditional delete is sent (a
    caller whose journal record was finished by another process meanwhile): a key it refuses
    is left, reported as having had no object here, and is no failure. Plain deletes are not
    asked."""
    etags = {key: store.put(key, b"x", META).etag for key in ("a", "b")}
    store.put("c", b"x", META)
    asked: list[str] = []
    heard: list[tuple[str, bool]] = []

    def still_wanted(key: str) -> bool:
        asked.append(key)
        return key != "b"

    deleting = RetryingStore(store) if retrying else store
    failures = deleting.delete(
        ["a", "b", "c"],
        if_match=etags,
        done=lambda key, removed: heard.append((key, removed)),
        still_wanted=still_wanted,
    )

    assert failures == []
    assert set(asked) == {"a", "b"}  # the conditional keys (S3 asks again as a request leaves)
    assert sorted(heard) == [("a", True), ("b", False), ("c", True)]
    assert [o.key for o in store.list_objects()] == ["b"]


# --- listing dates, the reserved prefix, request counts (issue 15: manifests) -----------------


def _whole_seconds(moment: datetime | None) -> datetime | None:
    # S3's listing has milliseconds, its HEAD (an HTTP date) whole seconds.
    return None if moment is None else moment.replace(microsecond=0)


def test_listing_says_when_each_object_was_stored_as_its_head_does(store: ObjectStore) -> None:
    for key in ("a", "dir/b"):
        store.put(key, b"x", META)
    now = datetime.now(UTC)

    listed = list(store.list_objects())

    assert [o.key for o in listed] == ["a", "dir/b"]
    for info in listed:
        assert info.last_modified is not None
        assert info.last_modified.utcoffset() == timedelta(0)
        assert abs(info.last_modified - now) < timedelta(minutes=5)
        assert _whole_seconds(info.last_modified) == _whole_seconds(
            store.head(info.key).last_modified
        )


def test_an_overwrite_moves_the_listed_date_forward(store: ObjectStore) -> None:
    store.put("k", b"one", META)
    first = next(iter(store.list_objects())).last_modified
    store.put("k", b"two", META)
    second = next(iter(store.list_objects())).last_modified

    assert first is not None and second is not None
    assert second >= first


MANIFEST = ".s3idx/manifests/20261201T200000.000000Z-0123abcd.jsonl.gz"


def test_reserved_keys_are_stored_but_never_listed_as_documents(store: ObjectStore) -> None:
    # Neighbours on both sides of '.s3idx/' in byte order, and names that only look alike.
    documents = [".a", ".s3idx", ".s3idx-x", ".s3idxz", "a"]
    for key in documents:
        store.put(key, b"doc", META)
    receipt = store.put(MANIFEST, b"manifest bytes", {})
    store.put(".s3idx/other", b"another reserved object", {})

    assert [o.key for o in store.list_objects()] == documents
    assert [o.key for o in store.list_objects(".")] == documents[:4]
    assert [o.key for o in store.list_objects(".s3idx")] == [".s3idx", ".s3idx-x", ".s3idxz"]
    assert [o.key for o in store.list_objects(start_after=".a")] == documents[1:]

    manifests = list(store.list_objects(".s3idx/manifests/"))
    assert [(o.key, o.etag, o.size) for o in manifests] == [(MANIFEST, receipt.etag, receipt.size)]
    assert manifests[0].last_modified is not None
    assert [o.key for o in store.list_objects(".s3idx/")] == [MANIFEST, ".s3idx/other"]


def test_reserved_keys_can_be_read_and_deleted_like_any_key(store: ObjectStore) -> None:
    receipt = store.put(MANIFEST, b"manifest bytes", {})
    store.check_key(MANIFEST)  # only codec.check_key (documents) refuses reserved keys

    assert store.head(MANIFEST).etag == receipt.etag
    assert store.open(MANIFEST).read() == b"manifest bytes"
    assert store.delete([MANIFEST]) == []
    assert list(store.list_objects(".s3idx/manifests/")) == []
    with pytest.raises(ObjectNotFoundError):
        store.head(MANIFEST)


def test_every_operation_counts_its_requests(store: ObjectStore) -> None:
    store.put("x", b"warm up", META)  # a first request may check or create the bucket
    counted = store.requests.value

    def sent() -> int:
        nonlocal counted
        before, counted = counted, store.requests.value
        return counted - before

    store.put("a", b"x", META)
    assert sent() == 1
    store.head("a")
    assert sent() == 1
    store.open("a").read()
    assert sent() == 1
    list(store.list_objects())
    assert sent() == 1
    store.delete(["a", "x"])
    assert sent() == 1
    assert list(store.list_objects()) == []
    assert sent() == 1


def test_request_counts_add_up_across_threads(store: ObjectStore) -> None:
    store.put("warm", b"up", META)
    before = store.requests.value
    keys = [f"k{i}" for i in range(40)]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: store.put(k, b"x", META), keys))
        list(pool.map(store.head, keys))

    assert store.requests.value - before == 80
