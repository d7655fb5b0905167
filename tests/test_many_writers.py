"""Several writers on one bucket and one index: the index ends describing the bucket.

Each race here is made deterministic: a store wrapper (or an ``Events`` hook) runs a second
writer, with its own engine and index connection, at the exact moment between a writer's read
of the index and its write. The multi-process races with random timing are in
tests/test_races.py.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine, Events
from s3idx.codec import RESERVED_PREFIX
from s3idx.engine import delete as delete_module
from s3idx.engine import reconcile as reconcile_module
from s3idx.engine.reconcile import reconcile
from s3idx.engine.recover import recover_entry
from s3idx.errors import ExitStatus, ObjectNotFoundError
from s3idx.index.sqlite import SqliteIndex
from s3idx.query.indexed import FieldPendingError
from s3idx.store.base import ObjectHead, ObjectInfo, ObjectStore, PutReceipt
from tests.helpers import OpenIndex, Run, json_lines, jsonl

# Stores and index backends: SQLite on both stores, MongoDB's semantics on mongomock and on a
# real server (FerretDB), each once.
BACKENDS = [("local", "sqlite"), ("s3", "sqlite"), ("local", "mongomock"), ("s3", "ferretdb")]
STORES = pytest.mark.parametrize(("store", "index_kind"), BACKENDS, indirect=["store"])
LOCAL = pytest.mark.parametrize(("store", "index_kind"), [BACKENDS[0]], indirect=["store"])
# S3 gives identical bytes one ETag; a local store's ETag names each write of an object.
S3 = pytest.mark.parametrize(
    ("store", "index_kind"), [b for b in BACKENDS if b[0] == "s3"], indirect=["store"]
)


class HookedStore:
    """A store that runs a hook once, around the first call of a method for a key."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self.hooks: dict[tuple[str, str], Callable[[], None]] = {}
        self.after_listing: Callable[[], None] | None = None
        self.heads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _fire(self, when: str, key: str) -> None:
        hook = self.hooks.pop((when, key), None)
        if hook is not None:
            hook()

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> PutReceipt:
        self._fire("before put", key)
        receipt = self._inner.put(key, body, metadata)
        self._fire("after put", key)
        return receipt

    def head(self, key: str) -> ObjectHead:
        self.heads.append(key)
        head = self._inner.head(key)
        self._fire("after head", key)
        return head

    def list_objects(
        self, prefix: str = "", *, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        yield from self._inner.list_objects(prefix, start_after=start_after)
        if prefix.startswith(RESERVED_PREFIX):
            return  # a listing of manifests: the hooks are about the documents' listing
        hook, self.after_listing = self.after_listing, None
        if hook is not None:
            hook()

    def delete(self, keys: Sequence[str], **options: Any) -> Any:
        for key in keys:
            self._fire("before delete", key)
        still_wanted = options.get("still_wanted")
        if still_wanted is not None:

            def checked(key: str) -> bool:
                wanted = bool(still_wanted(key))
                if wanted:
                    self._fire("after its check", key)  # between the check and the request
                return wanted

            options["still_wanted"] = checked
        outcome = self._inner.delete(keys, **options)
        for key in keys:
            self._fire("after delete", key)
        return outcome

    def replace_metadata(
        self, key: str, metadata: Mapping[str, str], *, if_match: str
    ) -> PutReceipt:
        receipt = self._inner.replace_metadata(key, metadata, if_match=if_match)
        self._fire("after replace_metadata", key)
        return receipt


@pytest.fixture
def hooked(store: ObjectStore) -> HookedStore:
    return HookedStore(store)


def _engine(store: ObjectStore, indexes: OpenIndex) -> Engine:
    return Engine(store, indexes(), workers=4)


def _other_writer(
    store: ObjectStore, indexes: OpenIndex
) -> Callable[[Callable[[Engine], Any]], Any]:
    """Runs an action as another writer: its own engine and index connection, on the bare
    store (its calls do not fire hooks)."""

    def run(action: Callable[[Engine], Any]) -> Any:
        with _engine(store, indexes) as other:
            return action(other)

    return run


def _doc(key: str, tag: str) -> dict[str, Any]:
    return {"fs_id": key, "tag": tag}


def _assert_index_describes_bucket(engine: Engine) -> None:
    """Every entry's ETag is its object's, every object has an entry, bodies agree."""
    entries = {e["fs_id"]: e for e in engine.query({})}
    objects = {o.key: o.etag for o in engine.store.list_objects()}
    assert set(entries) == set(objects)
    for key, entry in entries.items():
        assert entry["_s3idx"]["etag"] == objects[key], key
        assert engine.get(key)["tag"] == entry["tag"], key


@STORES
def test_a_put_whose_entry_was_overtaken_indexes_the_last_object(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    other = _other_writer(store, indexes)
    # While our object for k is being uploaded, another writer stores and indexes its own:
    # ours lands last, so the index must end on ours, though its entry moved under us.
    hooked.hooks[("before put", "k")] = lambda: other(
        lambda e: e.put_documents([_doc("k", "theirs")], fields=["tag"])
    )
    with _engine(hooked, indexes) as engine:
        result = engine.put_documents([_doc("k", "ours"), _doc("j", "ours")], fields=["tag"])
        assert (result.stored, result.reconciled, result.not_indexed) == (2, 1, 0)
        assert engine.get("k")["tag"] == "ours"
        assert [e["tag"] for e in engine.query({"fs_id": "k"})] == ["ours"]
        _assert_index_describes_bucket(engine)


@STORES
def test_a_put_overtaken_by_a_later_object_leaves_the_later_entry(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    other = _other_writer(store, indexes)
    # Another writer's object lands after ours, and its entry before ours: the bucket ends on
    # theirs, so must the index (a plain upsert would put ours back over it).
    hooked.hooks[("after put", "k")] = lambda: other(
        lambda e: e.put_documents([_doc("k", "theirs")], fields=["tag"])
    )
    with _engine(hooked, indexes) as engine:
        result = engine.put_documents([_doc("k", "ours")], fields=["tag"])
        assert (result.stored, result.reconciled, result.not_indexed) == (1, 1, 0)
        assert [e["tag"] for e in engine.query({"fs_id": "k"})] == ["theirs"]
        _assert_index_describes_bucket(engine)


@S3
def test_a_put_of_the_same_bytes_again_racing_another_put_leaves_the_index_on_the_bucket(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    """The ABA race: both puts read k's entry (ETag E). Theirs uploads other bytes; ours, the
    bytes k already holds, lands last: the bucket ends on E. Ours writes its entry first, E
    over E; theirs then expects E and finds E, but not the entry it read."""
    with _engine(store, indexes) as first:
        first.put_documents([_doc("k", "same")], fields=["tag"])
    stored = {o.key: o.etag for o in store.list_objects()}["k"]
    theirs_store = HookedStore(store)
    uploaded, release = threading.Event(), threading.Event()

    def hold_after_upload() -> None:
        uploaded.set()
        assert release.wait(30)

    theirs_store.hooks[("after put", "k")] = hold_after_upload
    results: list[Any] = []

    def theirs() -> None:
        with _engine(theirs_store, indexes) as engine:
            results.append(engine.put_documents([_doc("k", "other")], fields=["tag"]))

    thread = threading.Thread(target=theirs)

    def start_theirs_and_let_it_upload() -> None:
        thread.start()
        assert uploaded.wait(30)

    hooked.hooks[("before put", "k")] = start_theirs_and_let_it_upload
    try:
        with _engine(hooked, indexes) as engine:
            ours = engine.put_documents([_doc("k", "same")], fields=["tag"])
            assert (ours.stored, ours.not_indexed) == (1, 0)
            # The case under test: our upload landed last, with the ETag the entry held.
            assert {o.key: o.etag for o in store.list_objects()} == {"k": stored}
    finally:
        release.set()
        thread.join(30)
    assert results[0].stored == 1 and results[0].not_indexed == 0
    assert results[0].reconciled == 1  # its entry write found another write before it
    with _engine(store, indexes) as engine:
        assert [e["tag"] for e in engine.query({"fs_id": "k"})] == ["same"]
        _assert_index_describes_bucket(engine)


@S3
def test_puts_of_the_same_bytes_leave_the_entry_of_the_object_that_landed_last(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    """Two puts of one document: the same bytes, so one ETag, but each object's metadata
    has its own last_updated. Theirs is stored and indexed while ours uploads; ours lands
    last, so the entry must be ours, though theirs holds the same ETag."""
    other = _other_writer(store, indexes)
    with _engine(hooked, indexes) as engine:
        engine.put_documents([_doc("k", "first")], fields=["tag"])
        hooked.hooks[("before put", "k")] = lambda: other(
            lambda e: e.put_documents([_doc("k", "same")], fields=["tag"])
        )
        time.sleep(0.01)  # their last_updated and ours differ (milliseconds)
        result = engine.put_documents([_doc("k", "same")], fields=["tag"])
        assert (result.stored, result.reconciled, result.not_indexed) == (1, 1, 0)
        assert not hooked.hooks
        check = engine.verify()
        assert (check.damaged, check.changed, check.ok) == (0, 0, 1), check.as_dict()
        _assert_index_describes_bucket(engine)


@S3
def test_a_reconcile_finding_the_entry_in_step_still_fails_a_writer_that_read_it_before(
    store: ObjectStore, indexes: OpenIndex
) -> None:
    """The ABA race through reconcile: the entry records object B; a writer W reads it and
    stores A; then a writer R, which read the index before B's entry, stores B again (the same
    ETag), loses its compare-and-set and reconciles: the entry's ETag is the object's, in step.
    W's compare-and-set, from the version it read before R's upload, must now fail (and its
    reconcile index B): else the entry describes A while the bucket holds B."""
    with _engine(store, indexes) as engine:
        index = engine.index

        def stored(tag: str) -> tuple[bytes, Mapping[str, str], dict[str, Any]]:
            engine.put_documents([_doc("k", tag)], fields=["tag"])
            head = store.head("k")
            return store.open("k").read(), head.metadata, recover_entry(head, "fs_id").entry

        body_a, metadata_a, entry_a = stored("a")
        read_by_r = index.versions(["k"])["k"]  # R reads, then is slow to upload
        body_b, metadata_b, entry_b = stored("b")
        read_by_w = index.versions(["k"])["k"]
        store.put("k", body_a, metadata_a)  # W's upload
        store.put("k", body_b, metadata_b)  # R's upload, the last: the bucket holds B
        assert index.upsert_if([entry_b], {"k": read_by_r}) == {"k"}
        in_step = index.versions(["k"])["k"]
        assert in_step.etag == entry_b["_s3idx"]["etag"]  # the bucket's object's ETag already
        assert reconcile(store, index, ["k"], key_field="fs_id").left == []
        assert index.versions(["k"])["k"] != in_step  # written again all the same: a new stamp
        assert index.upsert_if([entry_a], {"k": read_by_w}) == {"k"}
        assert reconcile(store, index, ["k"], key_field="fs_id").left == []
        assert index.etags(["k"]) == {"k": entry_b["_s3idx"]["etag"]}
        _assert_index_describes_bucket(engine)


@S3
def test_a_delete_overtaken_by_puts_keeps_the_document_put_again_with_its_bytes(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete journals k's object (bytes A) and removes its entry; before its conditional
    delete of the object, a put stores other bytes (B), so the object stays (changed); after
    it, a put stores A again, with the very ETag the delete journaled. The delete then sets
    k's entry to what the bucket holds, and must not take A's object for the one it was
    deleting: its own journal record named that ETag.

    The puts began before the delete journaled k: they read the journal before the record
    was there, and wait for nothing (a put that finds it waits: the tests below)."""
    monkeypatch.setattr(delete_module.DeletesUnderWay, "await_for", lambda self, keys: False)
    other = _other_writer(store, indexes)
    with _engine(hooked, indexes) as engine:
        engine.put_documents([_doc("k", "a")], fields=["tag"])
        hooked.hooks[("before delete", "k")] = lambda: other(
            lambda e: e.put_documents([_doc("k", "b")], fields=["tag"])
        )
        hooked.hooks[("after delete", "k")] = lambda: other(
            lambda e: e.put_documents([_doc("k", "a")], fields=["tag"])
        )
        result = engine.delete(["k"])
        assert (result.deleted, result.kept) == (0, ["k"])
        assert not hooked.hooks  # both puts ran where they should
        assert [e["tag"] for e in engine.query({"fs_id": "k"})] == ["a"]
        _assert_index_describes_bucket(engine)
        assert engine.index.journaled() == {}


@S3
def test_a_put_of_the_bytes_a_delete_journaled_waits_for_that_delete_to_end(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    """A delete journals k's object (bytes A) and removes its entry; before its conditional
    delete of the object, a put of A again reads no entry. Its object carries the journaled
    ETag, so the delete's If-Match would remove it under the entry the put writes: the put
    must wait for the delete to end before its upload."""
    other = _other_writer(store, indexes)
    outcomes: list[Any] = []
    putter = threading.Thread(
        target=lambda: outcomes.append(
            other(lambda e: e.put_documents([_doc("k", "a")], fields=["tag"]))
        )
    )
    waited: list[bool] = []

    def put_while_deleting() -> None:
        putter.start()
        putter.join(timeout=2)
        waited.append(putter.is_alive())

    with _engine(hooked, indexes) as engine:
        engine.put_documents([_doc("k", "a")], fields=["tag"])
        hooked.hooks[("before delete", "k")] = put_while_deleting
        result = engine.delete(["k"])
        putter.join()
        assert result.deleted == 1
        assert waited == [True]  # the put did not end while the delete's record was there
        [put] = outcomes
        assert (put.stored, put.reconciled, put.not_indexed) == (1, 0, 0)
        assert [e["tag"] for e in engine.query({"fs_id": "k"})] == ["a"]
        _assert_index_describes_bucket(engine)
        assert engine.index.journaled() == {}


@S3
def test_a_put_of_the_bytes_a_killed_delete_journaled_finishes_that_delete_first(
    store: ObjectStore, indexes: OpenIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete killed after removing k's entry leaves its record (bytes A). A put of A again
    would store an object the record names: the next sync would finish the delete and take
    the document put after it. The put finishes the delete first, then stores A."""
    monkeypatch.setattr(reconcile_module, "DELETE_WAIT", 0.3)
    warned = _Warnings()
    with _engine(store, indexes) as engine:
        engine.put_documents([_doc("k", "a"), _doc("j", "a")], fields=["tag"])
        etag = engine.index.etags(["k"])["k"]
        engine.index.journal_deletes({"k": etag})
        assert engine.index.delete_if({"k": etag}) == (1, set())

        put = engine.put_documents([_doc("k", "a")], fields=["tag"], events=warned)
        assert (put.stored, put.reconciled, put.not_indexed) == (1, 0, 0)
        assert engine.index.journaled() == {}
        assert warned.messages == [
            "a delete of 1 key did not end within 0.3 s (it was killed, or stalled): "
            "finished it, as sync would, before storing its key again"
        ]
        sync = engine.sync()
        assert (sync.interrupted_deletes, sync.drift) == (0, 0)
        assert [e["tag"] for e in engine.query({})] == ["a", "a"]
        _assert_index_describes_bucket(engine)


@S3
def test_a_put_beside_a_delete_of_several_batches_waits_for_each_batch_of_its_keys(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete of j then k, one batch each. A put of both again (the same bytes) waits for
    j's batch; then k's batch journals k: that record is a live delete's too, to be waited
    for, not finished at once (the put's upload of k would be taken by k's If-Match)."""
    monkeypatch.setattr(delete_module, "DELETE_BATCH", 1)
    other = _other_writer(store, indexes)
    outcomes: list[Any] = []
    putter = threading.Thread(
        target=lambda: outcomes.append(
            other(lambda e: e.put_documents([_doc("j", "a"), _doc("k", "a")], fields=["tag"]))
        )
    )
    waited: list[bool] = []

    def put_while_deleting_j() -> None:
        putter.start()
        putter.join(timeout=1)

    def while_deleting_k() -> None:
        putter.join(timeout=2)
        waited.append(putter.is_alive())

    with _engine(hooked, indexes) as engine:
        engine.put_documents([_doc("j", "a"), _doc("k", "a")], fields=["tag"])
        hooked.hooks[("before delete", "j")] = put_while_deleting_j
        hooked.hooks[("before delete", "k")] = while_deleting_k
        result = engine.delete(["j", "k"])
        putter.join()
        assert result.deleted == 2
        assert waited == [True]
        [put] = outcomes
        assert (put.stored, put.not_indexed) == (2, 0)
        assert sorted(e["fs_id"] for e in engine.query({})) == ["j", "k"]
        _assert_index_describes_bucket(engine)
        assert engine.index.journaled() == {}


class _Warnings(Events):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def warned(self, message: str) -> None:
        self.messages.append(message)


class _HookedIndex:
    """An index that runs a hook once, after its first ``delete_if`` of a key."""

    def __init__(self, inner: Any, key: str, hook: Callable[[], None]) -> None:
        self._inner, self._key, self._hook = inner, key, hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def delete_if(self, expected: Mapping[str, Any]) -> Any:
        done = self._inner.delete_if(expected)
        hook, self._hook = self._hook, None
        if hook is not None and self._key in expected:
            hook()
        return done


@S3
def test_a_delete_stalled_past_the_wait_leaves_what_a_put_stored_after_finishing_it(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete stalls (a paused process, throttling) between removing k's entry and its
    If-Match delete, longer than a put waits: the put finishes that delete (the object goes),
    stores the same bytes again and indexes them. The delete, resuming, finds its record
    finished and must not take the put's object."""
    monkeypatch.setattr(reconcile_module, "DELETE_WAIT", 0.3)
    other = _other_writer(store, indexes)
    outcomes: list[Any] = []
    with _engine(hooked, indexes) as first:
        first.put_documents([_doc("k", "a")], fields=["tag"])
    stalled = _HookedIndex(
        indexes(),
        "k",
        lambda: outcomes.append(other(lambda e: e.put_documents([_doc("k", "a")], fields=["tag"]))),
    )
    with Engine(hooked, stalled, workers=4) as engine:  # type: ignore[arg-type]
        result = engine.delete(["k"])
        [put] = outcomes
        assert (put.stored, put.not_indexed) == (1, 0)
        assert (result.deleted, result.missing) == (0, ["k"])  # the put's finish removed it
        assert [e["tag"] for e in engine.query({"fs_id": "k"})] == ["a"]
        _assert_index_describes_bucket(engine)
        assert engine.index.journaled() == {}


@S3
@pytest.mark.parametrize("compress", ["zlib", "zstd", "none"])
@pytest.mark.parametrize("stall", ["before delete", "after its check"])
def test_a_delete_stalled_while_sending_leaves_what_puts_stored_after_finishing_it(
    hooked: HookedStore,
    store: ObjectStore,
    indexes: OpenIndex,
    monkeypatch: pytest.MonkeyPatch,
    compress: str,
    stall: str,
) -> None:
    """A delete stalls as its If-Match deletes are being sent (a paused process), longer than
    a put waits: the put finishes that delete and stores the same document again, and so may
    a later put, which finds no record. A request not yet sent is not sent: its key's record
    is read again right before it. One whose record was read, stalled before it reached the
    store, names an ETag the finishing put's object must not carry."""
    monkeypatch.setattr(reconcile_module, "DELETE_WAIT", 0.3)
    if stall == "after its check":
        # The request leaves with the records read before the stall, however long the puts
        # take: past FRESH, its last check (botocore's before-send) would read them again,
        # find k's gone and not send it (missing, not kept), the case "before delete" tests.
        monkeypatch.setattr(delete_module._RecordsStillThere, "FRESH", 600.0)
    outcomes: list[Any] = []
    warned = _Warnings()
    puts = 2 if stall == "before delete" else 1

    def puts_while_stalled() -> None:
        for _ in range(puts):
            with Engine(store, indexes(), workers=4, compress=compress) as other:
                put = other.put_documents([_doc("k", "a")], fields=["tag"], events=warned)
                outcomes.append(put)

    with Engine(hooked, indexes(), workers=4, compress=compress) as engine:  # type: ignore[arg-type]
        engine.put_documents([_doc("k", "a"), _doc("j", "a")], fields=["tag"])
        hooked.hooks[(stall, "k")] = puts_while_stalled
        result = engine.delete(["k"])
        assert [(put.stored, put.not_indexed) for put in outcomes] == [(1, 0)] * puts
        assert len(warned.messages) == 1  # the first put finished the delete
        if stall == "before delete":
            assert (result.deleted, result.missing, result.kept) == (0, ["k"], [])
        else:
            assert (result.deleted, result.missing, result.kept) == (0, [], ["k"])
        assert [e["tag"] for e in engine.query({"fs_id": "k"})] == ["a"]
        _assert_index_describes_bucket(engine)
        assert engine.index.journaled() == {}
        assert engine.sync().drift == 0
        out = io.BytesIO()
        engine.write_documents(["k"], out)  # what get prints: one line, the same document
        [line] = out.getvalue().splitlines()
        assert orjson.loads(line) == _doc("k", "a")


@S3
def test_a_killed_deletes_records_stall_a_put_once_not_per_chunk(
    store: ObjectStore, indexes: OpenIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete killed with several keys journaled; a put of them again, one key a chunk:
    the records are finished after one wait, all of them (as sync would), with one
    warning, not one wait and warning per chunk."""
    monkeypatch.setattr(reconcile_module, "DELETE_WAIT", 0.3)
    warned = _Warnings()
    keys = ["j", "k", "m"]
    with _engine(store, indexes) as engine:
        engine.put_documents([_doc(key, "a") for key in [*keys, "n"]], fields=["tag"])
        etags = engine.index.etags([*keys, "n"])
        engine.index.journal_deletes(etags)
        assert engine.index.delete_if(etags) == (4, set())
        with Engine(store, indexes(), workers=4, batch_size=1) as one_a_chunk:
            put = one_a_chunk.put_documents(
                [_doc(key, "a") for key in keys], fields=["tag"], events=warned
            )
        assert (put.stored, put.not_indexed) == (3, 0)
        assert warned.messages == [
            "a delete of 4 keys did not end within 0.3 s (it was killed, or stalled): "
            "finished it, as sync would, before storing its keys again"
        ]
        assert engine.index.journaled() == {}
        assert sorted(e["fs_id"] for e in engine.query({})) == keys
        _assert_index_describes_bucket(engine)


@STORES
def test_a_put_overtaken_by_a_delete_indexes_its_object(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    other = _other_writer(store, indexes)
    with _engine(hooked, indexes) as engine:
        engine.put_documents([_doc("k", "first")], fields=["tag"])
        # The entry our put read is deleted (with its object) while our upload runs.
        hooked.hooks[("before put", "k")] = lambda: other(lambda e: e.delete(["k"]))
        result = engine.put_documents([_doc("k", "second")], fields=["tag"])
        assert (result.reconciled, result.not_indexed) == (1, 0)
        assert [e["tag"] for e in engine.query({"fs_id": "k"})] == ["second"]
        _assert_index_describes_bucket(engine)


@LOCAL
def test_a_put_without_conflicts_makes_no_extra_request(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    with _engine(hooked, indexes) as engine:
        engine.put_documents([_doc(f"k{i}", "a") for i in range(30)], fields=["tag"])
        result = engine.put_documents([_doc(f"k{i}", "b") for i in range(60)], fields=["tag"])
        assert (result.stored, result.reconciled) == (60, 0)
        assert hooked.heads == []  # reconciling HEADs; none was needed
        _assert_index_describes_bucket(engine)


@LOCAL
def test_a_key_repeated_across_chunks_of_one_run_is_not_a_conflict(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    with Engine(hooked, indexes(), workers=4, batch_size=2) as engine:
        docs = [_doc("k", "1"), _doc("a", "1"), _doc("k", "2"), _doc("b", "1"), _doc("k", "3")]
        result = engine.put_documents(docs, fields=["tag"])
        # k is uploaded three times (once per chunk) and counted once as stored.
        assert (result.stored, result.duplicates, result.reconciled) == (3, 2, 0)
        assert [e["tag"] for e in engine.query({"fs_id": "k"})] == ["3"]


@STORES
def test_sync_does_not_move_an_entry_back_to_an_older_object(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    other = _other_writer(store, indexes)
    with _engine(hooked, indexes) as engine:
        engine.put_documents([_doc("a", "1")], fields=["tag"])
        other(lambda e: e.index.delete(["a"]))  # an orphan: sync will adopt it
        # Between sync's HEAD of the orphan and its write, a writer stores and indexes a newer
        # object: sync's adoption (expecting no entry) must not replace the newer entry.
        hooked.hooks[("after head", "a")] = lambda: other(
            lambda e: e.put_documents([_doc("a", "2")], fields=["tag"])
        )
        result = engine.sync()
        assert result.reconciled == 1
        assert [e["tag"] for e in engine.query({"fs_id": "a"})] == ["2"]
        _assert_index_describes_bucket(engine)


@STORES
def test_sync_does_not_prune_an_entry_written_after_its_merge(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    other = _other_writer(store, indexes)
    with _engine(hooked, indexes) as engine:
        engine.put_documents([_doc("a", "1"), _doc("b", "1")], fields=["tag"])
        store.delete(["a"])  # the entry of "a" is now stale: sync would prune it
        # Once sync has merged, "a" is written again, object and entry.
        hooked.after_listing = lambda: other(
            lambda e: e.put_documents([_doc("a", "2")], fields=["tag"])
        )
        result = engine.sync()
        # Its HEAD finds the new object: not index-only, nothing pruned (the write landed
        # after the merge read the entry, or before: reconciled, or already in step).
        assert (result.index_only, result.removed) == (0, 0)
        assert result.reconciled in (0, 1)
        assert [e["tag"] for e in engine.query({"fs_id": "a"})] == ["2"]
        _assert_index_describes_bucket(engine)


@STORES
def test_sync_does_not_adopt_an_object_a_delete_journaled(
    store: ObjectStore, indexes: OpenIndex
) -> None:
    with _engine(store, indexes) as engine:
        engine.put_documents([_doc("a", "1"), _doc("b", "1")], fields=["tag"])
        etag = engine.index.etags(["a"])["a"]
        # A delete that crashed after removing the entry, before removing the object.
        engine.index.journal_deletes({"a": etag})
        assert engine.index.delete_if({"a": etag}) == (1, set())

        check = engine.sync(check=True)
        assert (check.bucket_only, check.interrupted_deletes, check.drift) == (0, 1, 1)
        verify = engine.verify()
        assert (verify.interrupted_deletes, verify.drift) == (1, 1)

        result = engine.sync()
        assert (result.interrupted_deletes, result.added) == (1, 0)
        with pytest.raises(ObjectNotFoundError):
            engine.get("a")
        assert engine.index.journaled() == {}
        assert engine.sync(check=True).drift == 0
        _assert_index_describes_bucket(engine)


def _stored_before_a_new_field(engine: Engine) -> None:
    """Three documents stored with field ``tag``; then ``color`` is added, pending for them."""
    engine.put_documents([_doc(k, "old") for k in ("a", "k", "z")], fields=["tag"])
    engine.put_documents([], fields=["color"])


@STORES
def test_reindex_does_not_put_back_an_entry_a_put_replaced_meanwhile(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    other = _other_writer(store, indexes)
    with _engine(hooked, indexes) as engine:
        _stored_before_a_new_field(engine)
        # Between reindex's new metadata for k and its entry, a writer stores k again.
        hooked.hooks[("after replace_metadata", "k")] = lambda: other(
            lambda e: e.put_documents([_doc("k", "new")], fields=["tag", "color"])
        )
        result = engine.reindex()
        assert [e["tag"] for e in engine.query({"fs_id": "k"})] == ["new"]
        assert engine.get("k")["tag"] == "new"
        _assert_index_describes_bucket(engine)
        assert (result.updated, result.reconciled, result.failed) == (3, 1, 0)


@STORES
def test_a_put_started_before_reindex_recorded_a_field_leaves_it_pending(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    """``reindex --field v`` records v, backfills every object it lists and marks v complete.
    A put that read the index's fields before v was recorded stores k after reindex passed
    it: k's object and entry lack v. Queries on v would miss k: that put marks v pending
    again, so they are refused until reindex runs again."""
    other = _other_writer(store, indexes)
    with _engine(hooked, indexes) as engine:
        engine.put_documents([_doc("a", "1"), _doc("k", "1")], fields=["tag"])
        hooked.hooks[("before put", "k")] = lambda: other(lambda e: e.reindex(fields=["v"]))
        engine.put_documents([{"fs_id": "k", "tag": "2", "v": 7}], fields=["tag"])
        assert not hooked.hooks
        assert dict(engine.index.settings().pending) == {"v": 1}
        with pytest.raises(FieldPendingError):
            engine.query({"v": 7})

        assert other(lambda e: e.reindex()).completed == ["v"]
        assert [e["fs_id"] for e in engine.query({"v": 7})] == ["k"]
        _assert_index_describes_bucket(engine)


@STORES
def test_a_field_marked_pending_while_reindex_runs_stays_pending(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    """A writer marks v pending for entries it wrote without v (as a put started before v was
    recorded does, or sync adopting such objects) while reindex backfills v: reindex, done
    with the objects it listed, must not mark v complete over those entries."""
    other = _other_writer(store, indexes)
    with _engine(hooked, indexes) as engine:
        engine.put_documents([_doc("a", "1"), _doc("b", "1")], fields=["tag"])
        hooked.hooks[("after head", "b")] = lambda: other(
            lambda e: e.index.mark_pending([("v", 1)])
        )
        result = engine.reindex(fields=["v"])
        assert not hooked.hooks
        assert (result.updated, result.completed, result.pending_again) == (2, [], ["v"])
        # Kept as it stood: 2 entries when v was recorded, 1 marked since.
        assert dict(engine.index.settings().pending) == {"v": 3}


@STORES
def test_reindex_does_not_bring_back_the_entry_of_a_document_deleted_meanwhile(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    other = _other_writer(store, indexes)

    def rewritten_then_deleted(e: Engine) -> None:
        e.put_documents([_doc("k", "new")], fields=["tag", "color"])
        assert e.delete(["k"]).deleted == 1

    with _engine(hooked, indexes) as engine:
        _stored_before_a_new_field(engine)
        hooked.hooks[("after replace_metadata", "k")] = lambda: other(rewritten_then_deleted)
        result = engine.reindex()
        assert list(engine.query({"fs_id": "k"})) == []  # no entry naming a missing object
        _assert_index_describes_bucket(engine)
        assert engine.sync(check=True).drift == 0
        assert (result.reconciled, result.failed) == (1, 0)


class _WritesAfterHeads(Events):
    """Runs an action once, when rebuild-index reports its first batch (its HEADs are done,
    its swap is not)."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action: Callable[[], None] | None = action

    def progress(self, *args: Any, **kwargs: Any) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()


@STORES
def test_a_rebuild_keeps_writes_and_deletes_made_while_it_ran(
    store: ObjectStore, indexes: OpenIndex
) -> None:
    other = _other_writer(store, indexes)
    with _engine(store, indexes) as engine:
        engine.put_documents([_doc(f"k{i}", "old") for i in range(5)], fields=["tag"])

        def meanwhile(e: Engine) -> None:
            e.put_documents([_doc("k1", "new"), _doc("n", "new")], fields=["tag"])
            e.delete(["k2"])

        result = engine.rebuild_index(events=_WritesAfterHeads(lambda: other(meanwhile)))
        assert result.committed
        assert result.changed_meanwhile == 3
        tags = {e["fs_id"]: e["tag"] for e in engine.query({})}
        assert tags == {"k0": "old", "k1": "new", "k3": "old", "k4": "old", "n": "new"}
        _assert_index_describes_bucket(engine)
        assert engine.sync(check=True).drift == 0
        # The log ended with the rebuild: a write now is not one more "changed meanwhile".
        engine.put_documents([_doc("k3", "later")], fields=["tag"])
        again = engine.rebuild_index()
        assert again.changed_meanwhile == 0


@LOCAL
def test_rebuild_finishes_an_interrupted_delete_first(
    store: ObjectStore, indexes: OpenIndex
) -> None:
    with _engine(store, indexes) as engine:
        engine.put_documents([_doc("a", "1"), _doc("b", "1")], fields=["tag"])
        etag = engine.index.etags(["a"])["a"]
        engine.index.journal_deletes({"a": etag})  # crashed right after journaling
        result = engine.rebuild_index()
        assert result.written == 1
        assert [e["fs_id"] for e in engine.query({})] == ["b"]
        assert engine.index.journaled() == {}
        _assert_index_describes_bucket(engine)


@STORES
def test_a_write_between_the_rebuilds_catch_up_and_its_swap_is_kept(
    hooked: HookedStore, store: ObjectStore, indexes: OpenIndex
) -> None:
    other = _other_writer(store, indexes)
    with _engine(hooked, indexes) as engine:
        engine.put_documents([_doc(f"k{i}", "old") for i in range(3)], fields=["tag"])

        def after_heads() -> None:
            other(lambda e: e.put_documents([_doc("k1", "new")], fields=["tag"]))
            # When the catch-up reads k1 again, "m" is written: too late for the catch-up,
            # so only the reconcile after the swap can bring it into the new index.
            hooked.hooks[("after head", "k1")] = lambda: other(
                lambda e: e.put_documents([_doc("m", "new")], fields=["tag"])
            )

        result = engine.rebuild_index(events=_WritesAfterHeads(after_heads))
        assert (result.committed, result.changed_meanwhile) == (True, 1)
        tags = {e["fs_id"]: e["tag"] for e in engine.query({})}
        assert tags == {"k0": "old", "k1": "new", "k2": "old", "m": "new"}
        _assert_index_describes_bucket(engine)


def test_cli_reports_an_interrupted_delete_as_drift_and_sync_finishes_it(
    run: Run, tmp_path: Path
) -> None:
    args = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]
    put = run("put", "--json", *args, input=jsonl(_doc("a", "1"), _doc("b", "1")))
    assert put.exit_code == 0, put.stderr
    assert orjson.loads(put.stdout)["reconciled"] == 0
    with SqliteIndex(tmp_path / "index.sqlite3") as index:
        etag = index.etags(["a"])["a"]
        index.journal_deletes({"a": etag})  # a delete killed right after its journal

    check = run("sync", "--check", *args)
    assert (check.exit_code, check.stdout) == (ExitStatus.DRIFT, "interrupted-delete\ta\n")
    assert "0 changed, 1 interrupted delete in" in check.stderr
    dry = run("sync", "--dry-run", *args)
    assert (dry.exit_code, dry.stdout) == (ExitStatus.OK, "finish-delete\ta\n")
    verify = run("verify", "--json", *args)
    assert verify.exit_code == ExitStatus.DRIFT
    assert orjson.loads(verify.stdout)["interrupted_deletes"] == 1

    synced = run("sync", "--json", *args)
    assert synced.exit_code == ExitStatus.OK, synced.stderr
    assert orjson.loads(synced.stdout)["interrupted_deletes"] == 1
    assert run("sync", "--check", *args).exit_code == ExitStatus.OK
    assert [d["fs_id"] for d in json_lines(run("query", "{}", *args).stdout)] == ["b"]
