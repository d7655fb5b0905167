"""SqliteIndex: the Index protocol on one SQLite file, and what only SQLite does."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from s3idx.errors import (
    BackendUnavailableError,
    IndexSettingsError,
    InvalidFilterError,
    S3idxError,
    UsageError,
)
from s3idx.index.base import Bookkeeping, Index, IndexRebuild, IndexSettings, Version
from s3idx.index.sqlite import CHANGES, JOURNAL, LIVE, REBUILD, SqliteIndex
from s3idx.query.filter import parse_filter
from s3idx.query.sql import compile_filter

KEY = "fs_id"
FIELDS = ("task", "n", "tags", "meta.kind")


def bookkeeping(n: int = 0) -> dict[str, Any]:
    return {"etag": f"etag-{n}", "size": 100 + n, "sha256": f"{n:064x}", "codec": "json+zlib"}


def entry(key: str, **fields: Any) -> dict[str, Any]:
    return {KEY: key, **fields, "_s3idx": bookkeeping(len(key))}


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SqliteIndex]:
    ix = SqliteIndex(tmp_path / "index.sqlite3")
    ix.configure(KEY, FIELDS)
    yield ix
    ix.close()


def keys(found: Iterator[dict[str, Any]]) -> list[str]:
    return [e[KEY] for e in found]


def side_rows(ix: SqliteIndex, key: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(ix.path) as conn:
        sql = f"SELECT field, tclass, value FROM {LIVE.values} WHERE key = ? ORDER BY 1, 2, 3"
        return conn.execute(sql, (key,)).fetchall()


# --- the protocol and the file ---------------------------------------------------------------


def test_implements_the_index_protocol(index: SqliteIndex) -> None:
    assert isinstance(index, Index)
    rebuild = index.start_rebuild(KEY, FIELDS)
    assert isinstance(rebuild, IndexRebuild)
    rebuild.abort()


def test_settings_of_a_missing_file_create_nothing(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "index.sqlite3"
    ix = SqliteIndex(path)
    assert ix.settings() is None
    assert list(ix.find({})) == []
    assert ix.count({"a": 1}) == 0
    assert ix.bookkeeping(["x"]) == {}
    assert list(ix.iter_bookkeeping()) == []
    assert ix.delete(["x"]) == 0
    assert not (tmp_path / "not").exists()


def test_first_write_creates_directories_and_a_wal_database(tmp_path: Path) -> None:
    ix = SqliteIndex(tmp_path / "a" / "b" / "index.sqlite3")
    settings = ix.configure(KEY, ["task"])
    assert settings == IndexSettings(KEY, ("task",))
    assert ix.settings() == settings
    with sqlite3.connect(ix.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(conn.execute("SELECT name, value FROM meta"))
    assert meta["schema_version"] == "3"
    assert meta["key_field"] == KEY
    assert meta["fields"] == '["task"]'
    writer = ix._db.writer
    assert writer is not None
    assert writer.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert writer.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    ix.close()


def test_key_field_cannot_change(index: SqliteIndex) -> None:
    with pytest.raises(IndexSettingsError) as caught:
        index.configure("task_id", ["task"])
    assert caught.value.message == f"index {index.location} uses key field 'fs_id', not 'task_id'"
    assert caught.value.hint == "use --key fs_id, or give another index location for the other key"
    assert index.settings() == IndexSettings(KEY, FIELDS)


def test_configure_adds_fields_and_drops_the_key_field(index: SqliteIndex) -> None:
    settings = index.configure(KEY, ["n", "extra", KEY, "extra"])
    assert settings == IndexSettings(KEY, (*FIELDS, "extra"))
    assert index.settings() == settings


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("a..b", "invalid field path 'a..b': empty part"),
        ("_s3idx.size", "field '_s3idx.size' is reserved for s3idx's bookkeeping"),
    ],
)
def test_configure_refuses_bad_fields(index: SqliteIndex, field: str, message: str) -> None:
    with pytest.raises(IndexSettingsError) as caught:
        index.configure(KEY, [field])
    assert caught.value.message == message


def test_upsert_needs_settings_and_bookkeeping(tmp_path: Path) -> None:
    ix = SqliteIndex(tmp_path / "index.sqlite3")
    with pytest.raises(IndexSettingsError, match="has no key field recorded yet"):
        ix.upsert([entry("a")])
    ix.configure(KEY, [])
    with pytest.raises(ValueError, match="lacks valid _s3idx bookkeeping"):
        ix.upsert([{KEY: "a"}])
    with pytest.raises(ValueError, match="needs a non-empty string 'fs_id', got 5"):
        ix.upsert([{KEY: 5, "_s3idx": bookkeeping()}])
    assert ix.count() == 0
    ix.close()


# --- entries ---------------------------------------------------------------------------------


def test_values_come_back_with_their_types(index: SqliteIndex) -> None:
    when = datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=UTC)
    stored = entry(
        "k",
        text="é ✓ 𝄞",
        n=7,
        big=2**64 - 1,
        f=1.0,
        neg=-0.5,
        yes=True,
        no=False,
        nothing=None,
        tags=["a", 1, 2.5, None, [True], {"x": when}],
        meta={"kind": "x", "when": when, "nested": {"deep": [1.0, 2]}},
        last_updated=when,
    )
    index.upsert([stored])
    [found] = index.find({KEY: "k"})
    assert found == stored
    for name in ("f", "yes", "no", "n", "big"):
        assert type(found[name]) is type(stored[name])
    assert type(found["tags"][2]) is float
    assert type(found["meta"]["nested"]["deep"][0]) is float
    assert found["meta"]["when"] == when and found["meta"]["when"].tzinfo is not None
    assert list(found) == list(stored)


def test_later_entries_for_a_key_win(index: SqliteIndex) -> None:
    index.upsert([entry("a", task="old"), entry("b", task="b"), entry("a", task="new", n=2)])
    assert index.count() == 2
    assert [e["task"] for e in index.find({KEY: "a"})] == ["new"]
    index.upsert([entry("b", task="b2", tags=["x"])])
    assert keys(index.find({"task": "b"})) == []
    assert keys(index.find({"task": "b2"})) == ["b"]
    # The side table holds the new values only.
    assert side_rows(index, "b") == [
        ("meta.kind", 0, None),
        ("n", 0, None),
        ("tags", 15, "x"),
        ("tags", 25, '["x"]'),
        ("task", 15, "b2"),
    ]


def test_find_projects_and_keeps_the_key(index: SqliteIndex) -> None:
    index.upsert([entry("a", task="t", n=1, meta={"kind": "k", "other": 2})])
    assert list(index.find({}, fields=["meta.kind"])) == [{KEY: "a", "meta": {"kind": "k"}}]
    assert list(index.find({}, fields=[])) == [{KEY: "a"}]
    assert list(index.find({}, fields=["_s3idx.size"])) == [{KEY: "a", "_s3idx": {"size": 101}}]
    [whole] = index.find({})
    assert whole["_s3idx"] == bookkeeping(1)


def test_find_sort_skip_limit(index: SqliteIndex) -> None:
    index.upsert(
        [entry(f"k{n:02d}", n=n % 4, task="even" if n % 2 == 0 else "odd") for n in range(12)]
    )
    assert keys(index.find({"task": "even"}, sort=[("n", -1)], limit=3)) == ["k02", "k06", "k10"]
    assert keys(index.find({}, sort=[("n", 1), (KEY, -1)], skip=2, limit=2)) == ["k00", "k09"]
    assert keys(index.find({}, sort=[(KEY, -1)], limit=2)) == ["k11", "k10"]
    assert keys(index.find({"n": {"$gte": 2}}, skip=4)) == ["k10", "k11"]
    # An inexact plan (the path is not searchable) re-checks, then skips and limits.
    assert keys(index.find({"task": {"$regex": "^o"}}, skip=1, limit=2)) == ["k03", "k05"]


def test_key_pagination_as_the_engine_does_it(index: SqliteIndex) -> None:
    index.upsert([entry(f"k{n:03d}", n=n % 3) for n in range(250)])
    seen: list[str] = []
    last = None
    while True:
        flt: dict[str, Any] = (
            {"n": 1} if last is None else {"$and": [{"n": 1}, {KEY: {"$gt": last}}]}
        )
        page = keys(index.find(flt, fields=[KEY], sort=[(KEY, 1)], limit=30))
        if not page:
            break
        seen += page
        last = page[-1]
    assert seen == [f"k{n:03d}" for n in range(250) if n % 3 == 1]


def test_filter_is_validated_before_anything_runs(tmp_path: Path) -> None:
    ix = SqliteIndex(tmp_path / "missing.sqlite3")
    with pytest.raises(InvalidFilterError, match="unknown query operator '\\$where'"):
        ix.find({"$where": "1"})
    with pytest.raises(InvalidFilterError, match="sort direction"):
        ix.find({}, sort=[("a", 2)])
    with pytest.raises(InvalidFilterError, match="limit must be a non-negative integer"):
        ix.find({}, limit=-1)
    with pytest.raises(InvalidFilterError, match="fields must be a list of paths, got the string"):
        ix.find({}, fields="a,b")
    with pytest.raises(InvalidFilterError, match=r"invalid field path 'a\.\.b'"):
        ix.find({}, fields=["a..b"])
    with pytest.raises(InvalidFilterError):
        ix.count({"a": {"$in": 1}})
    assert not ix.path.exists()


def test_count_exact_and_rechecked(index: SqliteIndex) -> None:
    index.upsert([entry(f"k{n}", n=n, other=n % 2) for n in range(10)])
    assert index.count({"n": {"$lt": 4}}) == 4
    assert index.count({"other": 1}) == 5
    assert index.count({"n": {"$ne": 3}, "other": 0}) == 5
    assert index.count({"$or": [{"n": 1}, {"other": 0}]}) == 6
    assert index.count({"n": {"$in": []}}) == 0


def test_bookkeeping_in_chunks(index: SqliteIndex) -> None:
    index.upsert([entry(f"k{n:04d}", n=n) for n in range(1200)])
    wanted = [f"k{n:04d}" for n in range(0, 1300, 3)]
    found = index.bookkeeping(wanted)
    assert sorted(found) == [k for k in wanted if k < "k1200"]
    found_entry, found_bookkeeping = found["k0003"]
    assert found_entry == {KEY: "k0003", "n": 3}
    assert found_bookkeeping == Bookkeeping("etag-5", 105, f"{5:064x}", "json+zlib")


def test_iter_bookkeeping_streams_in_utf8_byte_order(index: SqliteIndex) -> None:
    odd = ["Z", "a", "é", "z", "\uffff", "𝄞", "a/b", "a-b"]
    index.upsert([entry(k) for k in odd] + [entry(f"n{n:04d}") for n in range(2500)])
    listed = [k for k, _ in index.iter_bookkeeping()]
    assert listed == sorted(listed, key=lambda k: k.encode())
    assert len(listed) == 2508
    # Deleting while iterating (as sync does) neither skips nor repeats.
    seen = []
    for key, bk in index.iter_bookkeeping():
        seen.append(key)
        assert bk == Bookkeeping.from_dict(bookkeeping(len(key)))
        if key.startswith("n"):
            index.delete([key])
    assert seen == listed
    assert index.count() == len(odd)


def test_delete_counts_what_existed(index: SqliteIndex) -> None:
    index.upsert([entry("a", task="x"), entry("b", task="x")])
    assert index.delete(["a", "a", "nope"]) == 1
    assert keys(index.find({"task": "x"})) == ["b"]
    assert side_rows(index, "a") == []
    assert index.delete([]) == 0


def test_a_new_field_is_back_filled(index: SqliteIndex) -> None:
    index.upsert([entry("a", color="red"), entry("b", color=["blue", "red"]), entry("c")])
    flt = parse_filter({"color": "red"})
    assert not compile_filter(flt, key_field=KEY, fields=FIELDS).exact
    assert keys(index.find({"color": "red"})) == ["a", "b"]
    index.configure(KEY, ["color"])
    assert compile_filter(flt, key_field=KEY, fields=(*FIELDS, "color")).exact
    assert ("color", 15, "red") in side_rows(index, "b")
    assert ("color", 0, None) in side_rows(index, "c")
    assert keys(index.find({"color": "red"})) == ["a", "b"]
    assert keys(index.find({"color": {"$exists": False}})) == ["c"]


def meta(ix: SqliteIndex, name: str) -> Any:
    with sqlite3.connect(ix.path) as conn:
        row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else json.loads(row[0])


def test_ranges_on_single_valued_fields_are_one_lookup(index: SqliteIndex) -> None:
    index.upsert([entry(f"k{n}", n=n, task=f"t{n}") for n in range(10)])
    assert meta(index, "multikey") == []
    assert keys(index.find({"n": {"$gt": 2, "$lt": 5}})) == ["k3", "k4"]
    # Once some entry holds several values, bounds may be met by different values.
    index.upsert([entry("arr", n=[1, 9], task=["a", "b"])])
    assert meta(index, "multikey") == ["n", "task"]
    assert keys(index.find({"n": {"$gt": 2, "$lt": 5}})) == ["arr", "k3", "k4"]
    assert keys(index.find({"task": {"$gt": "a", "$lt": "b"}})) == ["arr"]
    # The flag stays, as MongoDB's does, after the entry is gone.
    index.delete(["arr"])
    assert meta(index, "multikey") == ["n", "task"]


def test_back_fill_and_rebuild_track_multikey_fields(index: SqliteIndex) -> None:
    index.upsert([entry("a", color=["red", "blue"], size=1)])
    index.configure(KEY, ["color", "size"])
    assert meta(index, "multikey") == ["color"]
    rebuild = index.start_rebuild(KEY, FIELDS)
    rebuild.upsert([entry("a", color="red", size=[1, 2])])
    rebuild.commit(IndexSettings(KEY, ("color", "size")))
    assert meta(index, "multikey") == ["size"]
    # Each bound met by another element: only right if "size" is still known as multikey.
    assert keys(index.find({"size": {"$gt": 1.5, "$lt": 1.9}})) == ["a"]
    assert keys(index.find({"color": {"$gt": "a", "$lt": "z"}})) == ["a"]


def test_integers_beyond_64_bits(index: SqliteIndex) -> None:
    big = 2**64 - 1
    index.upsert([entry("big", n=big), entry("near", n=big - 1), entry("max", n=2**63 - 1)])
    assert keys(index.find({"n": big})) == ["big"]
    assert keys(index.find({"n": {"$gt": big - 1}})) == ["big"]
    assert keys(index.find({"n": {"$gte": 2**63}})) == ["big", "near"]
    assert keys(index.find({"n": {"$lt": 2**63}})) == ["max"]
    assert keys(index.find({"n": {"$gt": 2.0**63}})) == ["big", "near"]


# --- rebuild ---------------------------------------------------------------------------------


def test_rebuild_commit_swaps_in_one_go(index: SqliteIndex) -> None:
    index.upsert([entry("old", task="x"), entry("both", task="old")])
    rebuild = index.start_rebuild(KEY, FIELDS)
    rebuild.upsert([entry("new", task="x"), entry("both", task="new", color="c")])
    # Readers of the live index see nothing of the rebuild before the commit.
    reading = index.find({}, sort=[(KEY, 1)])
    assert next(reading)[KEY] == "both"
    assert keys(index.find({"task": "x"})) == ["old"]
    rebuild.commit(IndexSettings(KEY, (*FIELDS, "color")))
    rebuild.finish()
    # A reader that started before the commit keeps its snapshot.
    assert keys(reading) == ["old"]
    assert keys(index.find({})) == ["both", "new"]
    assert keys(index.find({"task": "x"})) == ["new"]
    assert keys(index.find({"color": "c"})) == ["both"]
    assert index.settings() == IndexSettings(KEY, (*FIELDS, "color"))
    assert ("color", 15, "c") in side_rows(index, "both")
    with sqlite3.connect(index.path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        names = {row[0] for row in conn.execute("SELECT name FROM meta")}
    assert REBUILD.entries not in tables and REBUILD.values not in tables
    assert names == {"schema_version", "generation", "key_field", "fields", "multikey"}
    # A second rebuild works on top of the first.
    again = index.start_rebuild(KEY, FIELDS)
    again.upsert([entry("z")])
    again.commit(IndexSettings(KEY, ("task",)))
    assert keys(index.find({})) == ["z"]
    assert side_rows(index, "z") == [("task", 0, None)]


def test_rebuild_abort_leaves_the_index_alone(index: SqliteIndex) -> None:
    index.upsert([entry("a")])
    rebuild = index.start_rebuild(KEY, FIELDS)
    rebuild.upsert([entry("b")])
    rebuild.save_checkpoint({"after": "b"})
    rebuild.abort()
    assert keys(index.find({})) == ["a"]
    with pytest.raises(S3idxError, match="finished or aborted by another process"):
        rebuild.upsert([entry("c")])
    fresh = index.start_rebuild(KEY, FIELDS, resume=True)
    assert fresh.checkpoint() is None
    assert fresh.has_keys(["b"]) == set()


def test_rebuild_resumes_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    first = SqliteIndex(path)
    first.configure(KEY, ["task"])
    rebuild = first.start_rebuild(KEY, ["task"])
    rebuild.upsert([entry(f"k{n}", task="t") for n in range(5)])
    when = datetime(2024, 1, 1, tzinfo=UTC)
    rebuild.save_checkpoint({"after": "k4", "started": when, "counts": [5, 0]})
    first.close()  # the process dies here

    second = SqliteIndex(path)
    resumed = second.start_rebuild(KEY, resume=True)
    assert resumed.checkpoint() == {"after": "k4", "started": when, "counts": [5, 0]}
    assert resumed.has_keys(["k0", "k4", "k9"]) == {"k0", "k4"}
    resumed.upsert([entry("k9", task="t")])
    resumed.commit(IndexSettings(KEY, ("task",)))
    assert second.count({"task": "t"}) == 6

    restarted = second.start_rebuild(KEY, resume=True)
    restarted.upsert([entry("x")])
    discarded = second.start_rebuild(KEY, resume=False)
    assert discarded.has_keys(["x"]) == set()
    assert discarded.checkpoint() is None
    second.close()


def test_rebuild_commit_checks_the_key_field(index: SqliteIndex) -> None:
    rebuild = index.start_rebuild(KEY, FIELDS)
    with pytest.raises(IndexSettingsError, match="uses key field 'fs_id', not 'other'"):
        rebuild.commit(IndexSettings("other", ()))
    rebuild.abort()


def test_rebuild_of_a_missing_file_creates_it(tmp_path: Path) -> None:
    ix = SqliteIndex(tmp_path / "lost" / "index.sqlite3")
    rebuild = ix.start_rebuild(KEY, ["task"])
    rebuild.upsert([entry("a", task="t")])
    rebuild.commit(IndexSettings(KEY, ("task",)))
    assert ix.settings() == IndexSettings(KEY, ("task",))
    assert keys(ix.find({"task": "t"})) == ["a"]
    ix.close()


# --- two processes ---------------------------------------------------------------------------


def _writer_process(path: str, name: str, first: int, last: int, barrier: Any) -> None:
    ix = SqliteIndex(path)
    ix.configure(KEY, ["src", "n"])
    barrier.wait()  # both started: neither writes its share alone while the other imports
    for low in range(first, last, 25):
        ix.upsert([entry(f"k{n:05d}", src=name, n=n) for n in range(low, min(low + 25, last))])
    ix.close()


def test_two_processes_write_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2, timeout=240)
    writers = [
        context.Process(target=_writer_process, args=(path, "A", 0, 1500, barrier)),
        context.Process(target=_writer_process, args=(path, "B", 1000, 2500, barrier)),
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    ix = SqliteIndex(path)
    assert ix.count() == 2500
    assert ix.count({"src": "A"}) + ix.count({"src": "B"}) == 2500
    assert ix.count({"src": "A", "n": {"$lt": 1000}}) == 1000
    assert ix.count({"src": "B", "n": {"$gte": 1500}}) == 1000
    for found in ix.find({"n": {"$gte": 1000, "$lt": 1500}}):
        assert keys(ix.find({"src": found["src"], KEY: found[KEY]})) == [found[KEY]]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute(f"SELECT count(*) FROM {LIVE.values} WHERE field = 'src'")
        assert rows.fetchone()[0] == 2500
    ix.close()


def test_threads_share_one_index(index: SqliteIndex) -> None:
    def work(worker: int) -> None:
        for batch in range(20):
            index.upsert([entry(f"w{worker}-{batch}-{n}", n=n) for n in range(10)])
            assert index.count({"n": {"$lt": 10}}) >= 10
            list(index.find({"n": 3}, limit=5))

    with ThreadPoolExecutor(max_workers=4) as pool:
        for done in [pool.submit(work, w) for w in range(4)]:
            done.result()  # a failure in a thread fails the test
    assert index.count() == 800
    assert index.count({"n": 3}) == 80


# --- failures become s3idx errors ------------------------------------------------------------


def as_unprivileged(action: Callable[[], Any]) -> Any:
    """Run ``action`` as a user file permissions apply to (root ignores them): in a forked
    child that drops to ``nobody`` when we are root. Returns its result or its exception."""
    if os.geteuid() != 0:
        try:
            return action()
        except Exception as exc:
            return exc
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            outcome: Any = action()
        except Exception as exc:
            outcome = exc
        with os.fdopen(write, "wb") as out:
            pickle.dump(outcome, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as incoming:
        outcome = pickle.load(incoming)
    os.waitpid(pid, 0)
    return outcome


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are closed to other users.
    directory = Path(tempfile.mkdtemp(prefix="s3idx-ro-"))
    directory.chmod(0o755)
    yield directory
    for path in sorted(directory.rglob("*"), reverse=True):
        path.chmod(0o755) if path.is_dir() else path.unlink()
        if path.is_dir():
            path.rmdir()
    directory.rmdir()


def make_readable_index(directory: Path) -> SqliteIndex:
    ix = SqliteIndex(directory / "index.sqlite3")
    ix.configure(KEY, ["task"])
    ix.upsert([entry("a", task="x")])
    ix.close()
    return ix


def test_a_read_only_file_is_named_with_what_to_do(shared_dir: Path) -> None:
    ix = make_readable_index(shared_dir)
    shared_dir.chmod(0o777)
    ix.path.chmod(0o444)

    def write() -> None:
        SqliteIndex(ix.path).upsert([entry("b", task="y")])

    error = as_unprivileged(write)
    assert isinstance(error, BackendUnavailableError), error
    assert error.message == (
        f"index {ix.location} is read-only (attempt to write a readonly database)"
    )
    assert error.hint == (
        "make the file and its directory writable for this user, or give another index location"
    )
    assert keys(SqliteIndex(ix.path).find({})) == ["a"]

    def read() -> list[str]:
        return keys(SqliteIndex(ix.path).find({"task": "x"}))

    assert as_unprivileged(read) == ["a"]


def test_a_read_only_directory_is_named_with_what_to_do(shared_dir: Path) -> None:
    target = shared_dir / "locked"
    target.mkdir()
    target.chmod(0o555)

    def create() -> None:
        SqliteIndex(target / "index.sqlite3").configure(KEY, [])

    error = as_unprivileged(create)
    assert isinstance(error, BackendUnavailableError), error
    assert error.message == (
        f"cannot open index {target / 'index.sqlite3'} (unable to open database file)"
    )
    assert error.hint == "check that the file's directory exists and that you may write to it"


def test_a_full_disk_rolls_back_the_whole_batch(index: SqliteIndex) -> None:
    index.upsert([entry("before", task="t")])
    writer = index._db.writer
    assert writer is not None
    pages = writer.execute("PRAGMA page_count").fetchone()[0]
    writer.execute(f"PRAGMA max_page_count = {pages + 2}")
    batch = [entry(f"k{n}", task="t" * 2000, tags=list(range(50))) for n in range(200)]
    with pytest.raises(BackendUnavailableError) as caught:
        index.upsert(batch)
    assert caught.value.message == (
        f"index {index.location}: the disk is full (database or disk is full)"
    )
    assert caught.value.hint is not None and "nothing was half-written" in caught.value.hint
    assert keys(index.find({})) == ["before"]
    with sqlite3.connect(index.path) as conn:
        assert conn.execute(f"SELECT DISTINCT key FROM {LIVE.values}").fetchall() == [("before",)]
    writer.execute("PRAGMA max_page_count = 1073741823")
    index.upsert(batch[:2])
    assert index.count() == 3


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    path.write_bytes(b"this is not an SQLite database, just some text" * 100)
    ix = SqliteIndex(path)
    for action in (ix.settings, lambda: list(ix.find({})), lambda: ix.configure(KEY, [])):
        with pytest.raises(BackendUnavailableError) as caught:
            action()
        assert caught.value.message == (
            f"index {path} is not a usable SQLite database (file is not a database)"
        )
        assert "rebuild-index" in (caught.value.hint or "")
    ix.close()


def test_an_sqlite_file_of_something_else(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    ix = SqliteIndex(path)
    for action in (ix.settings, lambda: ix.configure(KEY, [])):
        with pytest.raises(BackendUnavailableError) as caught:
            action()
        assert caught.value.message == f"{path} is an SQLite database but not an s3idx index"
    ix.close()


def test_a_newer_schema_is_refused(index: SqliteIndex) -> None:
    with sqlite3.connect(index.path) as conn:
        conn.execute("UPDATE meta SET value = '4' WHERE name = 'schema_version'")
    for action in (index.settings, lambda: index.upsert([entry("a")])):
        with pytest.raises(BackendUnavailableError) as caught:
            action()
        assert caught.value.message == (
            f"index {index.location} has schema version 4; this s3idx reads versions 1, 2, 3"
        )


def test_no_raw_sqlite_error_escapes(tmp_path: Path) -> None:
    ix = SqliteIndex(tmp_path / "index.sqlite3")
    ix.configure(KEY, ["task"])
    with sqlite3.connect(ix.path) as conn:
        conn.execute(f"DROP TABLE {LIVE.values}")
    with pytest.raises(S3idxError) as caught:
        ix.upsert([entry("a", task="x")])
    assert not isinstance(caught.value, sqlite3.Error)
    assert caught.value.message == (
        f"index {ix.location} is damaged: its table entry_values is missing"
    )
    ix.close()


def test_creating_the_file_waits_for_another_process_holding_it(tmp_path: Path) -> None:
    # A second process creating the same new index must wait, not fail: the switch to WAL
    # needs an exclusive lock that SQLite does not wait for through its busy timeout.
    path = tmp_path / "index.sqlite3"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # a write under way, before the file is in WAL mode
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    index = SqliteIndex(path)
    try:
        assert index.configure(KEY, ["task"]) == IndexSettings(KEY, ("task",))
    finally:
        release.join()
        other.close()
        index.close()


# --- files of earlier schema versions --------------------------------------------------------


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _tables_and_version(path: Path) -> tuple[set[str], str]:
    with sqlite3.connect(path) as conn:
        tables = _table_names(conn)
        version = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    return tables, version[0]


def _downgrade_to_version_2(path: Path) -> None:
    """Make ``path`` what s3idx wrote before schema version 3: entry tables without stamps."""
    with sqlite3.connect(path) as conn:
        for table in {LIVE.entries, REBUILD.entries} & _table_names(conn):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN stamp")
        conn.execute("UPDATE meta SET value = '2' WHERE name = 'schema_version'")


def _downgrade_to_version_1(path: Path) -> None:
    """Make ``path`` what s3idx wrote before schema version 2: no journal, no change log (and
    no stamps)."""
    _downgrade_to_version_2(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"DROP TABLE {JOURNAL}")
        conn.execute(f"DROP TABLE {CHANGES}")
        conn.execute("UPDATE meta SET value = '1' WHERE name = 'schema_version'")


def _index_of_version(tmp_path: Path, version: int) -> Path:
    """An index holding entries "a" (task "t") and "b" (task "u"), as the s3idx of schema
    ``version`` (1 or 2) left it."""
    path = tmp_path / "index.sqlite3"
    with SqliteIndex(path) as old:
        old.configure(KEY, ["task"])
        old.upsert([entry("a", task="t"), entry("b", task="u")])
    {1: _downgrade_to_version_1, 2: _downgrade_to_version_2}[version](path)
    return path


# --- schema version 1 (before the delete journal and the change log) --------------------------


def test_a_version_1_index_is_read_as_it_is_and_upgraded_on_its_first_write(
    tmp_path: Path,
) -> None:
    path = _index_of_version(tmp_path, 1)
    ix = SqliteIndex(path)
    # Reading changes nothing (the file may be read-only) and finds nothing journaled.
    assert ix.settings() == IndexSettings(KEY, ("task",))
    assert keys(ix.find({"task": "t"})) == ["a"]
    assert ix.etags(["a"]) == {"a": "etag-1"}
    assert ix.journaled() == {}
    assert _tables_and_version(path) == ({"meta", LIVE.entries, LIVE.values}, "1")

    ix.journal_deletes({"b": "etag-1"})

    tables, version = _tables_and_version(path)
    assert version == "3" and {JOURNAL, CHANGES} <= tables
    assert ix.journaled() == {"b": "etag-1"}
    assert sorted(keys(ix.find({}))) == ["a", "b"]  # nothing else changed
    ix.close()


def test_a_rebuild_begun_by_version_1_resumes_with_a_change_log(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    with SqliteIndex(path) as old:
        old.configure(KEY, ["task"])
        rebuild = old.start_rebuild(KEY, ["task"])
        rebuild.upsert([entry("a", task="t")])
    _downgrade_to_version_1(path)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM meta WHERE name = 'rebuild_log'")

    ix = SqliteIndex(path)
    resumed = ix.start_rebuild(KEY, resume=True)
    assert resumed.has_keys(["a"]) == {"a"}
    ix.upsert([entry("w")])
    assert list(resumed.changed_keys()) == ["w"]
    resumed.commit(IndexSettings(KEY, ("task",)))
    resumed.finish()
    assert keys(ix.find({})) == ["a"]
    ix.close()


# --- schema version 2 (before stamps) --------------------------------------------------------


def test_a_version_2_index_is_read_as_it_is_and_upgraded_on_its_first_write(
    tmp_path: Path,
) -> None:
    path = _index_of_version(tmp_path, 2)
    ix = SqliteIndex(path)
    # Reading changes nothing (the file may be read-only): entries have no stamp yet.
    assert ix.versions(["a"]) == {"a": Version("etag-1", None)}
    assert dict(ix.iter_bookkeeping())["b"].stamp is None
    assert ix.bookkeeping(["a"])["a"][1].stamp is None
    assert keys(ix.find({"task": "t"})) == ["a"]
    assert _tables_and_version(path)[1] == "2"

    # An entry of the earlier version compares as having no stamp, and the first write
    # upgrades the file, stamping what it writes.
    assert ix.upsert_if([entry("a", task="v")], {"a": Version("etag-1", "other")}) == {"a"}
    assert ix.upsert_if([entry("a", task="v")], {"a": Version("etag-1", None)}) == set()
    assert _tables_and_version(path)[1] == "3"
    assert ix.versions(["a"])["a"].stamp is not None
    assert ix.versions(["b"]) == {"b": Version("etag-1", None)}
    assert ix.delete_if({"b": Version("etag-1", None)}) == (1, set())
    assert keys(ix.find({})) == ["a"]
    ix.close()


def test_a_rebuild_begun_by_version_2_resumes_and_keeps_the_live_entries(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    with SqliteIndex(path) as old:
        old.configure(KEY, ["task"])
        old.upsert([entry("live", task="t")])
        rebuild = old.start_rebuild(KEY, ["task"])
        rebuild.upsert([entry("a", task="t")])
    _downgrade_to_version_2(path)

    ix = SqliteIndex(path)
    resumed = ix.start_rebuild(KEY, resume=True)  # a start checks the tables' shapes
    assert keys(ix.find({})) == ["live"]  # the live entries are not taken for damage
    resumed.upsert([entry("b", task="u")])
    assert [k for k, _ in resumed.iter_bookkeeping()] == ["a", "b"]
    resumed.commit(IndexSettings(KEY, ("task",)))
    resumed.finish()
    assert keys(ix.find({})) == ["a", "b"]
    assert ix.versions(["a"])["a"].stamp is None  # staged by the earlier version
    assert ix.versions(["b"])["b"].stamp is not None
    ix.close()


def _schema_reads(conn: sqlite3.Connection) -> list[str]:
    """The statements ``conn`` runs from now on that read a table's columns."""
    seen: list[str] = []
    conn.set_trace_callback(lambda sql: seen.append(sql) if "table_info" in sql else None)
    return seen


def test_writes_to_a_version_3_index_read_its_columns_once(tmp_path: Path) -> None:
    ix = SqliteIndex(tmp_path / "index.sqlite3")
    ix.configure(KEY, ["task"])
    ix.upsert_if([entry("a", task="t")], {"a": None})
    assert ix._db.writer is not None
    reads = _schema_reads(ix._db.writer)
    for n in range(3):  # the compare-and-sets of a put's flushes, a delete's, a sync's
        read = ix.versions(["a"])["a"]
        assert ix.upsert_if([entry("a", task=str(n))], {"a": read}) == set()
    assert ix.delete_if({"a": ix.versions(["a"])["a"]}) == (1, set())
    assert reads == []
    ix.close()


def test_a_reader_sees_the_stamps_once_another_process_upgraded_the_file(tmp_path: Path) -> None:
    """A connection that read a version-2 file (no stamp column) must not go on reading no
    stamps once another process upgraded it to version 3 and stamped its writes: its
    compare-and-sets would then be made from versions that never match."""
    path = _index_of_version(tmp_path, 2)
    ix = SqliteIndex(path)
    assert ix.versions(["a"]) == {"a": Version("etag-1", None)}  # read as it is
    assert ix.bookkeeping(["a"])["a"][1].stamp is None
    with SqliteIndex(path) as other:  # another process: its first write upgrades the file
        assert other.upsert_if([entry("a", task="u")], {"a": Version("etag-1", None)}) == set()
        written = other.versions(["a"])["a"]
    assert written.stamp is not None
    assert _tables_and_version(path)[1] == "3"
    assert ix.versions(["a"]) == {"a": written}  # the same pooled connection, now stamped
    assert ix.bookkeeping(["a"])["a"][1].stamp == written.stamp
    assert dict(ix.iter_bookkeeping())["a"].stamp == written.stamp
    assert ix.upsert_if([entry("a", task="v")], {"a": Version("etag-1", None)}) == {"a"}
    assert ix.upsert_if([entry("a", task="v")], {"a": written}) == set()
    ix.close()


# --- what only SQLite shows of compare-and-set and the change log ----------------------------


def _logged(path: Path) -> tuple[list[str], str | None]:
    with sqlite3.connect(path) as conn:
        log = [row[0] for row in conn.execute(f"SELECT key FROM {CHANGES} ORDER BY key")]
        flag = conn.execute("SELECT value FROM meta WHERE name = 'rebuild_log'").fetchone()
    return log, None if flag is None else flag[0]


def test_no_change_is_logged_without_a_rebuild(index: SqliteIndex) -> None:
    index.upsert([entry("a")])
    index.upsert_if([entry("b")], {"b": None})
    index.delete_if({"a": "etag-1"})
    index.journal_deletes({"b": "etag-1"})
    index.delete(["b"])

    assert _logged(index.path) == ([], None)

    rebuild = index.start_rebuild(KEY, FIELDS)
    index.upsert([entry("c")])
    log, flag = _logged(index.path)
    assert log == ["c"] and flag is not None
    rebuild.abort()
    assert _logged(index.path) == ([], None)


def test_finish_of_a_replaced_rebuild_leaves_the_new_one_its_log(index: SqliteIndex) -> None:
    old = index.start_rebuild(KEY, FIELDS)
    new = index.start_rebuild(KEY, FIELDS)  # started afresh, e.g. by another process
    index.upsert([entry("a")])

    old.finish()  # the old run's flag was replaced: the new run's stays

    assert list(new.changed_keys()) == ["a"]
    new.commit(IndexSettings(KEY, FIELDS))
    new.finish()
    assert _logged(index.path) == ([], None)


@pytest.mark.parametrize(
    ("items", "expected", "message"),
    [
        ([entry("a"), entry("a")], {"a": None}, "one entry per key; 'a' comes twice"),
        ([entry("a"), entry("b")], {"a": None}, "no expected ETag for key 'b'"),
    ],
)
def test_upsert_if_refuses_what_it_cannot_compare(
    index: SqliteIndex, items: list[dict[str, Any]], expected: dict[str, str | None], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        index.upsert_if(items, expected)
    assert index.etags(["a", "b"]) == {}


def test_the_change_log_pages_through_many_keys(index: SqliteIndex) -> None:
    rebuild = index.start_rebuild(KEY, FIELDS)
    written = [f"k{n:05d}" for n in range(2500)]
    index.upsert([entry(k) for k in written])

    assert sorted(rebuild.changed_keys()) == written
    rebuild.abort()


# --- filters with more values than SQLite can bind in one statement --------------------------

# SQLite's limit on bound values in one statement (250,000 in Debian's build, 32,766 by default);
# a filter with more is answered by checking every entry, never refused as if the index failed.
VARIABLE_LIMIT = sqlite3.connect(":memory:").getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


@pytest.fixture
def four(index: SqliteIndex) -> SqliteIndex:
    index.configure(KEY, ["n"])
    index.upsert([entry("a", n=0), entry("b", n=1), entry("c", n=5), entry("d")])
    return index


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"fs_id": {"$in": ["a", "c", *map(str, range(VARIABLE_LIMIT))]}}, ["a", "c"]),
        ({"$nor": [{"n": {"$in": list(range(-VARIABLE_LIMIT, 2))}}]}, ["c", "d"]),
        ({"$or": [{"n": {"$in": list(range(VARIABLE_LIMIT))}}, {"fs_id": "a"}]}, ["a", "b", "c"]),
    ],
    ids=["key-in", "nor-in", "or-in"],
)
def test_a_filter_with_more_values_than_sqlite_binds_is_answered(
    four: SqliteIndex, flt: dict[str, Any], expected: list[str]
) -> None:
    assert keys(four.find(flt)) == expected
    assert four.count(flt) == len(expected)


def test_such_a_filter_is_paged_and_sorted(four: SqliteIndex) -> None:
    flt = {"n": {"$in": list(range(-VARIABLE_LIMIT, 2))}}
    assert four.count(flt) == 2
    # Paged in SQL (sorted by key) and in Python (by another field) alike.
    assert keys(four.find(flt, sort=[(KEY, -1)], skip=1, limit=5)) == ["a"]
    assert keys(four.find(flt, sort=[("n", -1)], limit=1)) == ["b"]


def _open_descriptors(path: Path) -> list[str]:
    """This process's descriptors open on ``path`` or its -wal and -shm files."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_close_releases_the_connections_of_queries_left_unfinished(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    ix = SqliteIndex(path)
    ix.configure(KEY, FIELDS)
    ix.upsert([entry(f"k{i:04d}", n=i) for i in range(2000)])
    streamed = [ix.find({}), ix.find({"n": {"$gte": 5}}), ix.find({}, limit=900)]
    # Sorted on another field: every match was read (and the connection given back) first.
    sorted_ = ix.find({"n": {"$gte": 5}}, sort=[("n", -1)])
    for found in [*streamed, sorted_]:
        next(found)
    assert _open_descriptors(path)

    ix.close()

    assert _open_descriptors(path) == []
    for found in streamed:
        with pytest.raises(UsageError, match="closed while a query's results were being read"):
            list(found)
    assert len(list(sorted_)) == 2000 - 5 - 1
    assert _open_descriptors(path) == []
