"""Compare-and-set, the delete journal and the rebuild change log on every MongoDB kind.

The conformance suite holds these for every backend; here are what only MongoDB servers need
checking: a bulk split in chunks, the change log surviving the swap, and writers racing from
their own connections (FerretDB answers a failed write in a bulk differently from MongoDB).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from s3idx.errors import IndexSettingsError, S3idxError
from s3idx.index import mongo
from s3idx.index.base import Entry, Index, IndexRebuild, IndexSettings, Version
from s3idx.index.mongo import MongoIndex
from s3idx.sharding import Shard
from tests.helpers import MongoServer

KEY = "fs_id"
WHEN = datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
Opener = Callable[[], Index]


@pytest.fixture
def open_index(mongo_server: MongoServer) -> Iterator[Opener]:
    """Handles on one index, each with a client of its own (mongomock: one shared server)."""
    opened: list[MongoIndex] = []

    def make() -> Index:
        opened.append(MongoIndex(mongo_server.uri, mongo_server.database))
        return opened[-1]

    yield make
    for index in opened:
        index.close()


@pytest.fixture
def index(open_index: Opener) -> Index:
    return open_index()


@pytest.fixture
def ready(index: Index) -> Index:
    index.configure(KEY, ["n"])
    return index


def entry(key: str, etag: str, n: int = 0) -> Entry:
    bookkeeping = {"etag": etag, "size": 1, "sha256": None, "codec": "json"}
    return {KEY: key, "n": n, "last_updated": WHEN, "_s3idx": bookkeeping}


def etag_and_n(index: Index) -> dict[str, tuple[str, int]]:
    return {e[KEY]: (e["_s3idx"]["etag"], e["n"]) for e in index.find()}


def test_etags_are_the_recorded_ones_of_existing_keys(ready: Index) -> None:
    ready.upsert([entry("a", '"1"'), entry("b", '"2"')])

    assert ready.etags(["a", "b", "c"]) == {"a": '"1"', "b": '"2"'}
    assert ready.etags([]) == {}


def test_upsert_if_writes_only_where_the_etag_is_still_the_expected_one(
    ready: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mongo, "BATCH_SIZE", 2)  # several chunks, conflicts in each
    ready.upsert([entry("same", '"1"'), entry("moved", '"2"'), entry("taken", '"3"')])

    conflicts = ready.upsert_if(
        [
            entry("same", '"1b"', 1),  # expected '"1"': written
            entry("moved", '"2b"', 1),  # expected '"old"': another writer moved it
            entry("taken", '"3b"', 1),  # expected no entry, but there is one
            entry("new", '"4"', 1),  # expected no entry: inserted
            entry("gone", '"5"', 1),  # expected '"5"', but the entry is missing
        ],
        {"same": '"1"', "moved": '"old"', "taken": None, "new": None, "gone": '"5"'},
    )

    assert conflicts == {"moved", "taken", "gone"}
    assert etag_and_n(ready) == {
        "same": ('"1b"', 1),
        "moved": ('"2"', 0),
        "taken": ('"3"', 0),
        "new": ('"4"', 1),
    }


def test_upsert_if_with_every_write_going_through_reports_nothing(ready: Index) -> None:
    ready.upsert([entry("a", '"1"')])

    assert ready.upsert_if([entry("a", '"2"'), entry("b", '"3"')], {"a": '"1"', "b": None}) == set()
    assert ready.etags(["a", "b"]) == {"a": '"2"', "b": '"3"'}


def test_delete_if_removes_only_unchanged_entries(
    ready: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mongo, "BATCH_SIZE", 2)
    ready.upsert([entry("a", '"1"'), entry("b", '"2"'), entry("c", '"3"')])

    removed, conflicts = ready.delete_if({"a": '"1"', "b": '"old"', "missing": '"9"', "c": '"3"'})

    assert (removed, conflicts) == (2, {"b"})
    assert ready.etags(["a", "b", "c"]) == {"b": '"2"'}


def test_an_entry_written_before_stamps_compares_as_having_none(
    ready: Index, mongo_server: MongoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mongo, "BATCH_SIZE", 2)  # several chunks
    ready.upsert([entry(k, '"1"') for k in "abcd"])
    live = mongo_server.client[mongo_server.database]["s3idx"]
    live.update_many({}, {"$unset": {"_s3idx.stamp": ""}})  # as an earlier s3idx wrote them
    assert ready.versions(["a", "b"]) == {"a": Version('"1"', None), "b": Version('"1"', None)}

    unstamped, stamped = Version('"1"', None), Version('"1"', "0123456789abcdef")
    conflicts = ready.upsert_if(
        [entry("a", '"2"', 1), entry("b", '"2"', 1)], {"a": unstamped, "b": stamped}
    )
    assert conflicts == {"b"}
    assert ready.delete_if({"c": unstamped, "d": stamped}) == (1, {"d"})
    assert etag_and_n(ready) == {"a": ('"2"', 1), "b": ('"1"', 0), "d": ('"1"', 0)}
    assert ready.versions(["a"])["a"].stamp is not None
    assert "stamp" not in next(iter(ready.find({KEY: "a"})))["_s3idx"]


def test_the_journal_keeps_one_record_per_key_and_clears_only_the_named_etag(
    ready: Index,
) -> None:
    ready.journal_deletes({"a": '"1"', "b": '"2"'})
    ready.journal_deletes({"a": '"1b"'})  # replaces the earlier record

    assert ready.journaled() == {"a": '"1b"', "b": '"2"'}
    assert ready.journaled(["a", "zz"]) == {"a": '"1b"'}

    ready.clear_journal({"a": '"1"', "b": '"2"'})  # a's record names another ETag now

    assert ready.journaled() == {"a": '"1b"'}


def test_the_journal_is_not_in_the_entries(ready: Index) -> None:
    ready.journal_deletes({"a": '"1"'})

    assert list(ready.find()) == [] and ready.count() == 0
    assert list(ready.iter_bookkeeping()) == []


def test_every_live_write_during_a_rebuild_is_logged_and_finish_ends_the_log(
    open_index: Opener,
) -> None:
    writer = open_index()
    writer.configure(KEY, ["n"])
    writer.upsert([entry("before", '"0"')])
    rebuilder = open_index()  # another process, in effect
    rebuild = rebuilder.start_rebuild(KEY)

    writer.upsert([entry("up", '"1"')])
    writer.upsert_if([entry("cas", '"2"')], {"cas": None})
    writer.upsert_if([entry("lost", '"3"')], {"lost": '"x"'})  # a conflict is logged too
    writer.delete(["del"])
    writer.delete_if({"before": '"0"'})
    writer.journal_deletes({"j": '"4"'})
    rebuild.upsert([entry("staged", '"5"')])  # the rebuild's own writes are not changes

    assert sorted(rebuild.changed_keys()) == ["before", "cas", "del", "j", "lost", "up"]

    rebuild.commit(IndexSettings(KEY, ("n",)))
    writer.upsert([entry("after-swap", '"6"')])
    assert "after-swap" in set(rebuild.changed_keys())
    rebuild.finish()

    writer.upsert([entry("later", '"7"')])
    fresh = rebuilder.start_rebuild(KEY)
    assert list(fresh.changed_keys()) == []  # neither the old log nor the write before it
    fresh.abort()


def test_the_flag_stands_while_the_live_entries_are_missing(
    open_index: Opener, mongo_server: MongoServer
) -> None:
    writer = open_index()
    writer.configure(KEY, ["n"])
    rebuild = open_index().start_rebuild(KEY)
    mongo_server.client[mongo_server.database].drop_collection("s3idx")  # the index was lost

    writer.upsert([entry("a", '"1"')])

    assert list(rebuild.changed_keys()) == ["a"]


def test_abort_ends_the_log(open_index: Opener) -> None:
    writer = open_index()
    writer.configure(KEY, ["n"])
    rebuild = open_index().start_rebuild(KEY)
    writer.upsert([entry("a", '"1"')])

    rebuild.abort()
    writer.upsert([entry("b", '"2"')])

    fresh = open_index().start_rebuild(KEY)
    assert list(fresh.changed_keys()) == []
    fresh.abort()


def test_a_resumed_rebuild_keeps_the_log_of_its_first_start(open_index: Opener) -> None:
    writer = open_index()
    writer.configure(KEY, ["n"])
    open_index().start_rebuild(KEY)  # then the process was killed
    writer.upsert([entry("a", '"1"')])

    resumed = open_index().start_rebuild(KEY, resume=True)

    assert list(resumed.changed_keys()) == ["a"]
    resumed.abort()


def test_rebuild_delete_removes_staged_entries(ready: Index) -> None:
    rebuild = ready.start_rebuild(KEY)
    rebuild.upsert([entry("a", '"1"'), entry("b", '"2"')])

    rebuild.delete(["a", "missing"])
    rebuild.commit(IndexSettings(KEY, ("n",)))
    rebuild.finish()

    assert ready.etags(["a", "b"]) == {"b": '"2"'}


@pytest.mark.parametrize("round", range(3))
def test_racing_writers_each_key_has_one_winner(
    open_index: Opener, mongo_server: MongoServer, round: int
) -> None:
    """Writers on their own connections insert the same new keys at once, then CAS them from
    the ETag they read: no two writers both win, and the entry is a winner's."""
    if mongo_server.kind == "mongomock":
        pytest.skip("one in-memory server in this process: no real concurrency")
    keys = [f"k{i:03d}" for i in range(300)]
    writers = [open_index() for _ in range(3)]
    writers[0].configure(KEY, ["n"])
    wins: dict[int, set[str]] = {}
    barrier = threading.Barrier(len(writers))

    def write(number: int) -> None:
        index = writers[number]
        barrier.wait()
        lost = index.upsert_if(
            [entry(k, f'"w{number}"', number) for k in keys], dict.fromkeys(keys)
        )
        won = set(keys) - lost
        seen = index.etags(keys)
        lost = index.upsert_if(
            [entry(k, f'"w{number}-2"', number) for k in keys], {k: seen.get(k) for k in keys}
        )
        wins[number] = won | {f"{k}+" for k in set(keys) - lost}

    threads = [threading.Thread(target=write, args=(n,)) for n in range(len(writers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for key in keys:
        # At most one: where the outcome is read back (FerretDB), a writer whose insert a
        # faster writer's CAS already replaced reports a conflict, which is only more work.
        inserted = [n for n in wins if key in wins[n]]
        assert len(inserted) <= 1, (key, inserted)
    final = etag_and_n(writers[0])
    for key in keys:
        etag, n = final[key]
        second = [w for w in wins if f"{key}+" in wins[w]]
        # The last successful CAS is the entry; every writer that won a CAS moved the entry
        # from what it read, so the entry ends with one of the winners of the second round.
        assert second, key
        assert etag == f'"w{n}-2"' and n in second


def test_deletes_of_the_same_keys_at_once_journal_them(
    open_index: Opener, mongo_server: MongoServer
) -> None:
    """Two deletes journaling the same keys from their own connections both finish (FerretDB
    stalls when bulks replacing the same documents run at once) and one record per key stays."""
    if mongo_server.kind == "mongomock":
        pytest.skip("one in-memory server in this process: no real concurrency")
    keys = [f"k{i:03d}" for i in range(200)]
    writers = [open_index() for _ in range(3)]
    writers[0].journal_deletes(dict.fromkeys(keys, '"0"'))  # records to replace
    barrier = threading.Barrier(len(writers))

    def journal(number: int) -> None:
        barrier.wait()
        writers[number].journal_deletes(dict.fromkeys(keys, f'"{number}"'))

    threads = [
        threading.Thread(target=journal, args=(n,), daemon=True) for n in range(len(writers))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a journal write stalled"

    records = writers[0].journaled()
    assert set(records) == set(keys)
    assert set(records.values()) <= {'"0"', '"1"', '"2"'}


_HOLD_A_LOCK = """
import sys, time
from s3idx.index.mongo import MongoIndex

index = MongoIndex(sys.argv[1], sys.argv[2])

def hold(keys):
    print("held", flush=True)
    time.sleep(120)

index._while_locked(["k"], hold)
"""


def test_a_lock_of_a_writer_killed_on_this_machine_is_taken_over_without_the_stale_bound(
    ready: Index, mongo_server: MongoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FerretDB's entry locks: while their writer lives they are waited for (up to the stale
    bound); once it is seen dead here, a moment later."""
    if mongo_server.kind != "ferretdb":
        pytest.skip("entry locks are taken on FerretDB v1 only")
    monkeypatch.setattr(mongo, "LOCK_STALE", timedelta(hours=1))
    monkeypatch.setattr(mongo, "DEATH_SETTLE_SECONDS", 0.2)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_A_LOCK, mongo_server.uri, mongo_server.database],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    done = threading.Event()
    conflicts: list[set[str]] = []
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"

        def write() -> None:
            conflicts.append(ready.upsert_if([entry("k", '"1"')], {"k": None}))
            done.set()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        assert not done.wait(3), "a live writer's lock was taken over"
    finally:
        holder.kill()
        holder.wait(10)
    assert done.wait(30), "a dead writer's lock was not taken over"
    assert conflicts == [set()]
    assert etag_and_n(ready) == {"k": ('"1"', 0)}


_STALL_WHILE_PREPARING = """
import sys, time
from s3idx.index.mongo import MongoIndex
from s3idx.sharding import Shard

def stall(*args, **kwargs):
    print("preparing", flush=True)
    time.sleep(120)

MongoIndex._drop_staging = stall
MongoIndex(sys.argv[1], sys.argv[2]).start_rebuild("fs_id", shard=Shard(0, 2))
"""


def test_a_shard_that_died_preparing_a_rebuild_is_not_waited_for(
    ready: Index, mongo_server: MongoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first shard of a sharded rebuild prepares it while the others wait (up to
    PREPARE_WAIT); once it is known dead on this machine, they stop waiting at once."""
    if mongo_server.kind == "mongomock":
        pytest.skip("another process cannot reach mongomock")
    preparer = subprocess.Popen(
        [sys.executable, "-c", _STALL_WHILE_PREPARING, mongo_server.uri, mongo_server.database],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert preparer.stdout is not None and preparer.stdout.readline() == b"preparing\n"
        monkeypatch.setattr(mongo, "PREPARE_WAIT", 0.5)  # alive: waited for, then refused
        with pytest.raises(IndexSettingsError, match="by a shard that seems to have died"):
            ready.start_rebuild(KEY, shard=Shard(1, 2))
    finally:
        preparer.kill()
        preparer.wait(10)
    monkeypatch.setattr(mongo, "PREPARE_WAIT", 3600.0)
    with pytest.raises(IndexSettingsError, match="by a shard that died") as refused:
        ready.start_rebuild(KEY, shard=Shard(1, 2))
    assert refused.value.hint == "add --restart to discard it and start over"
    rebuild = ready.start_rebuild(KEY, shard=Shard(1, 2), restart=True)
    rebuild.abort()


def _replaced_rebuild(ready: Index) -> IndexRebuild:
    """A rebuild about to commit, holding 'old', over a live index holding 'live'."""
    ready.upsert([entry("live", '"l"')])
    old = ready.start_rebuild(KEY)
    old.upsert([entry("old", '"o"')])
    return old


def _finish(new: IndexRebuild, index: Index) -> None:
    new.upsert([entry("new", '"n"')])
    new.commit(IndexSettings(KEY, ("n",)))
    assert sorted(e[KEY] for e in index.find()) == ["new"]
    assert index.rebuild_status() is None


def test_a_rebuild_replaced_just_before_its_swap_says_it_was_replaced(
    ready: Index, open_index: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two cron jobs: the later start drops the earlier run's staging collection after that
    run's commit found it still owned the rebuild, before its rename."""
    old = _replaced_rebuild(ready)
    other = open_index()
    started: list[IndexRebuild] = []
    assert isinstance(old, mongo.MongoRebuild)
    swap = old._swap

    def another_start_first() -> None:
        started.append(other.start_rebuild(KEY))
        swap()

    monkeypatch.setattr(old, "_swap", another_start_first)
    with pytest.raises(S3idxError, match="was replaced by another rebuild-index") as caught:
        old.commit(IndexSettings(KEY, ("n",)))
    assert caught.value.hint is not None and "s3idx info" in caught.value.hint
    _finish(started[0], other)


def test_a_rebuild_committing_while_a_later_start_cleans_up_never_swaps_in_an_empty_index(
    ready: Index, open_index: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The later start drops the earlier run's staging collection; a commit in that moment
    must not re-create it empty (building its indexes) and rename that over the live index."""
    old = _replaced_rebuild(ready)
    other = open_index()
    assert isinstance(other, MongoIndex)
    drop_staging = other._drop_staging
    outcome: list[BaseException | None] = []

    def commit_meanwhile(listed: Sequence[str]) -> None:
        drop_staging(listed)
        try:
            old.commit(IndexSettings(KEY, ("n",)))
            outcome.append(None)
        except S3idxError as exc:
            outcome.append(exc)
        # Until the later run commits, the index is the one before both.
        assert sorted(e[KEY] for e in ready.find()) == ["live"]

    monkeypatch.setattr(other, "_drop_staging", commit_meanwhile)
    new = other.start_rebuild(KEY)
    (error,) = outcome
    assert error is not None and "was replaced by another rebuild-index" in str(error)
    _finish(new, other)


def test_a_rebuild_replaced_and_finished_before_its_swap_leaves_the_newer_index(
    ready: Index, open_index: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole later rebuild-index between an earlier run's last check and its swap: the
    earlier run says it was replaced and keeps its hands off the index the later one swapped
    in (FerretDB swaps by drop, then rename: a CI race dropped it and left the index empty)."""
    old = _replaced_rebuild(ready)
    other = open_index()
    assert isinstance(old, mongo.MongoRebuild)
    swap = old._swap

    def another_run_first() -> None:
        _finish(other.start_rebuild(KEY), other)
        swap()

    monkeypatch.setattr(old, "_swap", another_run_first)
    with pytest.raises(S3idxError, match="was replaced by another rebuild-index"):
        old.commit(IndexSettings(KEY, ("n",)))
    old.abort()
    assert sorted(e[KEY] for e in ready.find()) == ["new"]
    assert ready.rebuild_status() is None


@pytest.mark.parametrize("sharded", [False, True], ids=["one process", "sharded"])
def test_a_start_replaced_before_its_cleanup_leaves_the_later_runs_staging(
    ready: Index, open_index: Opener, monkeypatch: pytest.MonkeyPatch, sharded: bool
) -> None:
    """Two starts at once: the earlier one's state is written, then a later start replaces it
    and stages its entries, then the earlier one cleans up. It must not drop the later run's
    staging collection, which the later run's commit would re-create empty (building its
    indexes) and swap in as the index (a CI race on FerretDB: 80 objects, an empty index)."""
    ready.upsert([entry("live", '"l"')])
    earlier, later = open_index(), open_index()
    assert isinstance(earlier, MongoIndex)
    started: list[IndexRebuild] = []
    connection = earlier._c
    writes = connection.meta

    class StateWrittenThenLaterStart:
        """The earlier start's meta collection: after its state document lands, the later
        start runs whole and stages its entry."""

        def __getattr__(self, name: str) -> object:
            return getattr(writes, name)

        def _then(self, result: object, document: object) -> object:
            if not started and isinstance(document, dict) and "staging" in document:
                started.append(later.start_rebuild(KEY))
                started[0].upsert([entry("new", '"n"')])
                ready.upsert([entry("written", '"w"')])  # a live write the later run logs
            return result

        def replace_one(self, query: object, document: object, **kw: object) -> object:
            return self._then(writes.replace_one(query, document, **kw), document)

        def insert_one(self, document: object, **kw: object) -> object:
            return self._then(writes.insert_one(document, **kw), document)

    monkeypatch.setattr(connection, "meta", StateWrittenThenLaterStart())
    shard = Shard(0, 1) if sharded else None
    try:
        replaced = earlier.start_rebuild(KEY, shard=shard)
    except S3idxError as exc:  # it may notice at once that it was replaced
        assert "was replaced by another rebuild-index" in str(exc)
    else:
        with pytest.raises(S3idxError, match="was replaced by another rebuild-index"):
            replaced.commit(IndexSettings(KEY, ("n",)))
        replaced.abort()
    monkeypatch.undo()
    (new,) = started
    # Neither the earlier start nor its end emptied the later run's change log.
    assert list(new.changed_keys()) == ["written"]
    new.commit(IndexSettings(KEY, ("n",)))
    assert sorted(e[KEY] for e in ready.find()) == ["new"]
    assert ready.rebuild_status() is None
