"""Issue 14's five races, and reindex beside put and delete, run for real: s3idx CLI processes at
once on one S3 bucket (moto's server) and one index (SQLite, then FerretDB), with seeded random
delays.

Each scenario ends with the same checks (``_check``):

- ``sync --check`` finds no drift;
- every ``query --full`` body agrees with its entry (the index describes the object it names);
- no deleted document is brought back by ``sync``;
- no lost write: for each key of every put that exited 0, the bucket holds that put's version or
  one written by a put that had not ended when it started (or the key is gone and a delete that
  had not ended then may have taken it).

``S3IDX_RACE_REPEAT=N`` multiplies the rounds (a manual stress run); ``S3IDX_RACE_SEED`` replays
a failing run (every failure message names its seed, round and delays).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest

from s3idx import Engine
from s3idx.errors import ExitStatus
from s3idx.index.base import Index
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import ObjectStore
from s3idx.store.local import LocalStore
from s3idx.store.s3 import S3Store
from tests.helpers import (
    entries_and_objects,
    fresh_database_name,
    subprocess_env,
    with_database,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

REPEAT = max(1, int(os.environ.get("S3IDX_RACE_REPEAT", "1")))
ROUNDS = 2 * REPEAT  # per scenario and index; the default keeps the file near a minute and a half
TIMEOUT = 240.0


# --- processes and what they did ----------------------------------------------------------------


@dataclass
class Proc:
    """One s3idx process: what it was asked and when it ran (test-process monotonic clock)."""

    name: str
    popen: subprocess.Popen[bytes] | None  # None: done in the test's own process
    started: float
    tag: str | None = None  # a put's version tag
    keys: list[str] = field(default_factory=list)  # a put's keys
    ended: float = 0.0
    status: int | None = None
    out: bytes = b""
    err: str = ""

    def wait(self) -> Proc:
        assert self.popen is not None
        out, err = self.popen.communicate(timeout=TIMEOUT)
        self.ended = time.monotonic()
        self.status = self.popen.returncode
        self.out = out
        self.err = err.decode(errors="replace")
        return self

    @property
    def summary(self) -> Any:
        """The --json document."""
        return orjson.loads(self.out)


@dataclass
class Round:
    """One round of one scenario: a fresh prefix of the bucket and a fresh index."""

    home: Path
    endpoint: str
    bucket: str
    prefix: str
    index_location: str  # as given to --index
    database: str | None  # MongoDB only
    rng: random.Random
    where: str  # seed, round and delays: printed with every failure
    procs: list[Proc] = field(default_factory=list)

    def args(self) -> list[str]:
        return [
            "--store", f"s3://{self.bucket}/{self.prefix}", "--endpoint-url", self.endpoint,
            "--index", self.index_location,
        ]  # fmt: skip

    def start(self, name: str, *args: str, tag: str | None = None, keys: Any = ()) -> Proc:
        popen = subprocess.Popen(
            [sys.executable, "-m", "s3idx", *args, *self.args()],
            env=subprocess_env(self.home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        proc = Proc(name, popen, time.monotonic(), tag, list(keys))
        self.procs.append(proc)
        return proc

    def ok(self, name: str, *args: str, **kwargs: Any) -> Proc:
        proc = self.start(name, *args, **kwargs).wait()
        assert proc.status == 0, f"{name} exit {proc.status} ({self.where}): {proc.err}"
        return proc

    def put(
        self, name: str, tag: str, keys: list[str], *extra: str, fields: Any = ("tag", "v")
    ) -> Proc:
        path = self.home / f"{name}.jsonl"
        path.write_bytes(
            b"".join(
                orjson.dumps({"fs_id": k, "tag": tag, "v": i}) + b"\n" for i, k in enumerate(keys)
            )
        )
        # Either transport, as writers on several machines may differ: the http transport
        # hands outcomes back on its own schedule (tests/store/test_http_transport.py).
        transport = self.rng.choice(("boto3", "http"))
        self.where += f", {name} on {transport}"
        given = [a for f in fields for a in ("--field", f)]
        return self.start(
            name, "put", str(path), *given, "--json",
            "--transport", transport, *extra, tag=tag, keys=keys,
        )  # fmt: skip

    def preload(self, tag: str, keys: list[str]) -> None:
        """Documents written before the race, in this process (no CLI start-up to pay)."""
        started = time.monotonic()
        with self.engine() as engine:
            result = engine.put_documents(
                ({"fs_id": k, "tag": tag, "v": i} for i, k in enumerate(keys)), fields=["tag", "v"]
            )
        assert (result.stored, result.not_indexed) == (len(keys), 0), self.where
        self.procs.append(Proc(tag, None, started, tag, keys, time.monotonic(), 0))

    def pause(self, low: float, high: float, what: str) -> None:
        delay = self.rng.uniform(low, high)
        self.where += f", {what} {delay:.2f} s"
        time.sleep(delay)

    def engine(self) -> Engine:
        store = S3Store(self.bucket, self.prefix, endpoint_url=self.endpoint, region="us-east-1")
        index: Index
        if self.database is None:
            index = SqliteIndex(Path(self.index_location))
        else:
            from s3idx.index.mongo import MongoIndex

            index = MongoIndex(self.index_location, self.database)
        return Engine(store, index)


def _keys(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(count)]


@pytest.fixture(params=["sqlite", "ferretdb"])
def rounds(
    request: pytest.FixtureRequest, tmp_path: Path, s3_bucket: str, s3_endpoint: str
) -> Iterator[Iterator[Round]]:
    """A fresh Round per iteration, ROUNDS of them, on one index backend."""
    seed = int(os.environ.get("S3IDX_RACE_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    databases: list[str] = []
    base = request.getfixturevalue("ferretdb_server").uri if request.param == "ferretdb" else None

    def make() -> Iterator[Round]:
        for number in range(ROUNDS):
            home = tmp_path / f"round{number}"
            home.mkdir()
            database = None
            if base is None:
                location = str(home / "index.sqlite3")
            else:
                database = fresh_database_name()
                databases.append(database)
                # A server that never answers fails the test instead of hanging it.
                location = with_database(base, database) + "?socketTimeoutMS=60000"
            where = f"{request.param}, S3IDX_RACE_SEED={seed}, round {number}"
            yield Round(home, s3_endpoint, s3_bucket, f"r{number}-{uuid.uuid4().hex[:6]}",
                        location, database, rng, where)  # fmt: skip

    yield make()
    if base is not None:
        import pymongo

        with pymongo.MongoClient(base, serverSelectionTimeoutMS=5000) as client:
            for database in databases:
                client.drop_database(database)


# --- the checks every scenario ends with ---------------------------------------------------------


def _check(rnd: Round, *, gone: frozenset[str] | set[str] = frozenset()) -> dict[str, str]:
    """The promise after the race; ``gone``: keys whose deletion is known complete. Returns
    the bucket's version tag per key. (In this process: the commands' own code paths, without
    the start-up of three more CLI processes.)"""
    where = rnd.where
    for proc in rnd.procs:
        if proc.status is None:
            proc.wait()
    with rnd.engine() as engine:
        check = engine.sync(check=True)
        assert check.drift == 0, f"sync --check found drift ({where}): {check.as_dict()}"
        entries = {e["fs_id"]: e for e in engine.query({})}
        bodies = {}
        for key, fetched in engine.query_documents({}):
            assert fetched is not None, f"{key}: entry without its object ({where})"
            assert fetched.error is None, f"{key}: {fetched.error} ({where})"
            bodies[key] = orjson.loads(fetched.read())
        listed = {o.key for o in engine.store.list_objects()}
        assert set(bodies) == set(entries) == listed, where
        disagree = [
            k
            for k, b in bodies.items()
            if (b["tag"], b["v"]) != (entries[k]["tag"], entries[k]["v"])
        ]
        assert not disagree, (
            f"{len(disagree)} entries disagree with their objects, e.g. {disagree[:3]} ({where})"
        )
        versions = {k: b["tag"] for k, b in bodies.items()}

        # No deleted document comes back: sync, the command that adopts objects, adopts
        # nothing, and what was deleted stays deleted.
        synced = engine.sync()
        assert synced.added == 0, f"sync adopted objects ({where}): {synced.as_dict()}"
        indexed = {e["fs_id"] for e in engine.query({}, fields=["fs_id"])}
        back = gone & (indexed | {o.key for o in engine.store.list_objects()})
        assert not back, f"deleted documents back after sync: {sorted(back)[:5]} ({where})"
    _no_lost_write(rnd, versions)
    return versions


def _no_lost_write(rnd: Round, versions: dict[str, str]) -> None:
    writers = {p.tag: p for p in rnd.procs if p.tag is not None}
    deletes = [p for p in rnd.procs if p.name.startswith("delete")]
    for put in writers.values():
        if put.status != 0:
            continue
        for key in put.keys:
            tag = versions.get(key)
            if tag is None:
                # Gone: fine only if a delete still running after this put started may have
                # taken it.
                assert any(d.ended > put.started for d in deletes), (
                    f"lost write: {key} of {put.name} is gone and no delete ran since ({rnd.where})"
                )
            elif tag != put.tag:
                other = writers[tag]
                assert other.ended > put.started, (
                    f"lost write: {key} holds {tag}, older than {put.name} ({rnd.where})"
                )


# --- the five scenarios ------------------------------------------------------------------------


def test_three_puts_of_the_same_keys_at_once(rounds: Iterator[Round]) -> None:
    for rnd in rounds:
        keys = _keys("k", 60)
        rnd.preload("v0", keys)
        for tag in ("v1", "v2", "v3"):
            rnd.put(f"put {tag}", tag, keys, "--batch-size", "5")
            rnd.pause(0, 0.15, f"after {tag}")
        for proc in rnd.procs[1:]:
            assert proc.wait().status == 0, f"{proc.name}: {proc.err} ({rnd.where})"
        versions = _check(rnd)
        assert set(versions) == set(keys), rnd.where
        assert "v0" not in versions.values(), rnd.where


def test_a_put_of_the_stored_bytes_again_beside_a_put_of_others(rounds: Iterator[Round]) -> None:
    # S3 gives the same bytes the same ETag: the put of v0 again leaves the ETags its entries
    # hold, which must not let v1's compare-and-set, read before, win over a later v0 upload.
    for rnd in rounds:
        keys = _keys("k", 120)
        rnd.preload("v0", keys)
        again = rnd.put("put v0 again", "v0", keys, "--batch-size", "4")
        rnd.pause(0, 0.3, "after v0 again")
        other = rnd.put("put v1", "v1", keys, "--batch-size", "4")
        for proc in (again, other):
            assert proc.wait().status == 0, f"{proc.name}: {proc.err} ({rnd.where})"
        versions = _check(rnd)
        assert set(versions) == set(keys), rnd.where


def test_a_put_with_delete_all_started_during_it(rounds: Iterator[Round]) -> None:
    for rnd in rounds:
        old = _keys("o", 20)  # written before: the delete must take them all
        rnd.preload("old", old)
        rnd.preload("before", _keys("k", 30))  # also rewritten by the put racing the delete
        put = rnd.put("put new", "new", _keys("k", 80), "--batch-size", "5")
        rnd.pause(0.5, 1.8, "delete after")
        delete = rnd.start("delete --all", "delete", "--filter", "{}", "--all", "--json")
        for proc in (put, delete):
            assert proc.wait().status == 0, f"{proc.name}: {proc.err} ({rnd.where})"
        _check(rnd, gone=set(old))


def test_a_put_of_the_stored_bytes_again_beside_delete_all(rounds: Iterator[Round]) -> None:
    # The delete's If-Match cannot tell its object from the same bytes stored again: a put of
    # v0 again that read no entry (the delete removed it) waits for the delete to end.
    for rnd in rounds:
        keys = _keys("k", 120)
        rnd.preload("v0", keys)
        delete = rnd.start("delete --all", "delete", "--filter", "{}", "--all", "--json")
        rnd.pause(0, 0.6, "put after")
        again = rnd.put("put v0 again", "v0", keys, "--batch-size", "4")
        for proc in (delete, again):
            assert proc.wait().status == 0, f"{proc.name}: {proc.err} ({rnd.where})"
        _check(rnd)


def test_rebuild_index_beside_delete_all(rounds: Iterator[Round]) -> None:
    for rnd in rounds:
        keys = _keys("k", 80)
        rnd.preload("v0", keys)
        commands = [
            ("rebuild-index", ("rebuild-index", "--json")),
            ("delete --all", ("delete", "--filter", "{}", "--all", "--json")),
        ]
        rnd.rng.shuffle(commands)
        rnd.where += f", {commands[0][0]} first"
        first = rnd.start(commands[0][0], *commands[0][1])
        rnd.pause(0, 1.0, f"{commands[1][0]} after")
        second = rnd.start(commands[1][0], *commands[1][1])
        delete, rebuild = (first, second) if first.name.startswith("delete") else (second, first)
        assert delete.wait().status == 0, f"delete: {delete.err} ({rnd.where})"
        assert rebuild.wait().status == 0, f"rebuild-index: {rebuild.err} ({rnd.where})"
        versions = _check(rnd)
        # What neither counted as deleted (the rebuild finishes the delete's journal records
        # first) is still there, whole and indexed.
        deleted = delete.summary["deleted"] + rebuild.summary["deletes_finished"]
        assert len(versions) == len(keys) - deleted, rnd.where


def test_rebuild_index_beside_put(rounds: Iterator[Round]) -> None:
    for rnd in rounds:
        keys = _keys("k", 80)
        rnd.preload("v0", keys)
        rebuild_first = rnd.rng.random() < 0.3
        new = keys + _keys("n", 20)
        if rebuild_first:
            rnd.where += ", rebuild-index first"
            rebuild = rnd.start("rebuild-index", "rebuild-index", "--json")
            rnd.pause(0, 0.8, "put after")
            put = rnd.put("put v1", "v1", new, "--batch-size", "5")
        else:
            put = rnd.put("put v1", "v1", new, "--batch-size", "5")
            rnd.pause(0.5, 1.8, "rebuild-index after")
            rebuild = rnd.start("rebuild-index", "rebuild-index", "--json")
        for proc in (put, rebuild):
            assert proc.wait().status == 0, f"{proc.name}: {proc.err} ({rnd.where})"
        versions = _check(rnd)
        assert set(versions) == set(new), rnd.where
        assert set(versions.values()) == {"v1"}, rnd.where  # (_check says so too, per key)


def test_kill_9_of_delete_filter_then_the_next_delete_or_sync(rounds: Iterator[Round]) -> None:
    for number, rnd in enumerate(rounds):
        groups = {tag: _keys(tag, 50) for tag in ("a", "b", "c")}
        for tag, keys in groups.items():
            rnd.preload(tag, keys)
        delete = rnd.start("delete a (killed)", "delete", "--filter", '{"tag": "a"}', "--json")
        with rnd.engine() as engine:
            # Under way: its first journal records are written (or it ended already).
            deadline = time.monotonic() + 60
            while not engine.index.journaled() and delete.popen.poll() is None:  # type: ignore[union-attr]
                assert time.monotonic() < deadline, f"the delete journaled nothing ({rnd.where})"
                time.sleep(0.005)
        rnd.pause(0.0, 0.4, "killed after journaling for")
        delete.popen.kill()  # type: ignore[union-attr]
        delete.wait()

        with rnd.engine() as engine:
            entries_and_objects(engine)  # no entry without its object, even right after the kill
            left = {e["fs_id"] for e in engine.query({"tag": "a"}, fields=["fs_id"])}
            journaled = set(engine.index.journaled())
            objects = {o.key for o in engine.store.list_objects()}
        removed = set(groups["a"]) - left
        rnd.where += f" ({len(removed)} entries removed, {len(journaled)} journaled)"
        # An entry goes only once journaled, and its record only once its object is gone.
        assert not (removed - journaled) & objects, f"unjournaled leftovers ({rnd.where})"
        gone = removed | journaled
        if number % 2 == 0:
            rnd.where += ", finished by delete"
            finish = rnd.ok("delete b", "delete", "--filter", '{"tag": "b"}', "--json")
            # The journaled objects still there: those the killed delete had removed are
            # not counted again (each object by the one process that removed it).
            assert finish.summary["finished"] == len(journaled & objects), rnd.where
            gone |= set(groups["b"])
        else:
            rnd.where += ", finished by sync"
            rnd.ok("sync", "sync", "--json")
        with rnd.engine() as engine:
            assert engine.index.journaled() == {}, rnd.where
            now = {e["fs_id"] for e in engine.query({"tag": "a"}, fields=["fs_id"])}
        assert now == left - journaled, rnd.where
        _check(rnd, gone=gone)


class LocalRound(Round):
    """A round on the local store: its metadata replacement is atomic against a put (both
    rename under the key's lock), where moto ignores ``CopySourceIfMatch`` (see README)."""

    def args(self) -> list[str]:
        return ["--store", str(self.home / "store"), "--index", self.index_location]

    def engine(self) -> Engine:
        index: Index
        if self.database is None:
            index = SqliteIndex(Path(self.index_location))
        else:
            from s3idx.index.mongo import MongoIndex

            index = MongoIndex(self.index_location, self.database)
        return Engine(LocalStore(self.home / "store"), index)


def _local_round_of_80_keys(on_s3: Round, record_v: bool) -> tuple[LocalRound, list[str]]:
    """A round on a local store, its 80 keys stored (tag v0, v=i) indexing tag only; with
    ``record_v``, v recorded afterwards: every entry lacks it until reindex."""
    rnd = LocalRound(**{f.name: getattr(on_s3, f.name) for f in fields(Round)})
    keys = _keys("k", 80)
    started = time.monotonic()
    with rnd.engine() as engine:
        engine.put_documents(
            ({"fs_id": k, "tag": "v0", "v": i} for i, k in enumerate(keys)), fields=["tag"]
        )
        if record_v:
            engine.put_documents([], fields=["tag", "v"])
    rnd.procs.append(Proc("v0", None, started, "v0", keys, time.monotonic(), 0))
    return rnd, keys


def test_reindex_beside_put_and_delete(rounds: Iterator[Round]) -> None:
    for on_s3 in rounds:
        # Stored before field v was added: reindex rewrites every object's metadata.
        rnd, keys = _local_round_of_80_keys(on_s3, record_v=True)
        reindex = rnd.start("reindex", "reindex", "--workers", "4", "--json")
        rnd.pause(0, 1.0, "put after")
        put = rnd.put("put v1", "v1", keys[:40] + _keys("n", 10), "--batch-size", "5")
        rnd.pause(0, 1.0, "delete after")
        delete = rnd.start("delete", "delete", *keys[40:60], "--json")
        assert put.wait().status == 0, f"put: {put.err} ({rnd.where})"
        assert reindex.wait().status == 0, f"reindex: {reindex.err} ({rnd.where})"
        # A key reindex gave new metadata after the delete read its entry is kept (exit 3).
        assert delete.wait().status in (0, 3), f"delete: {delete.err} ({rnd.where})"
        versions = _check(rnd)
        assert len(versions) == 90 - delete.summary["deleted"], rnd.where


def test_reindex_of_a_new_field_beside_a_put_begun_before_it(rounds: Iterator[Round]) -> None:
    # The put indexes tag only: its entries lack v, maybe written after reindex passed their
    # keys. Either reindex completed v over every entry, or it left v pending (exit 3) and a
    # second reindex completes it; never v complete with entries lacking it.
    for on_s3 in rounds:
        rnd, keys = _local_round_of_80_keys(on_s3, record_v=False)
        put = rnd.put("put v1", "v1", keys + _keys("n", 20), "--batch-size", "5", fields=["tag"])
        rnd.pause(0.2, 1.2, "reindex after")
        reindex = rnd.start("reindex", "reindex", "--field", "v", "--workers", "4", "--json")
        assert put.wait().status == 0, f"put: {put.err} ({rnd.where})"
        reindex.wait()
        summary = reindex.summary
        assert (reindex.status, summary["pending_again"]) in ((0, []), (3, ["v"])), (
            f"reindex exit {reindex.status}: {reindex.err} ({rnd.where})"
        )
        with rnd.engine() as engine:
            settings = engine.index.settings()
            assert settings is not None
            if reindex.status:
                assert "v" in dict(settings.pending), rnd.where
            # Pending also when the put's last entries came after reindex ended.
            if "v" in dict(settings.pending):
                assert engine.reindex().completed == ["v"], rnd.where
            assert engine.index.settings() == settings.__class__(settings.key_field, ("tag", "v"))
            found = {e["fs_id"] for e in engine.query({"v": {"$gte": 0}})}
            assert found == set(keys + _keys("n", 20)), f"queries on v miss {rnd.where}"
        _check(rnd)


SUPERSEDED = "was replaced by another rebuild-index, or finished or aborted by another process"


def test_two_rebuild_index_at_once(rounds: Iterator[Round]) -> None:
    """Two cron jobs overlapping: the later start takes the rebuild over; the one it replaced
    says so (exit 1), never a backend's raw error, and the index ends rebuilt."""
    for rnd in rounds:
        keys = _keys("k", 80)
        rnd.preload("v0", keys)
        first = rnd.start("rebuild 1", "rebuild-index", "--no-manifests", "--json")
        rnd.pause(0, 0.6, "second after")
        second = rnd.start("rebuild 2", "rebuild-index", "--no-manifests", "--json")
        for proc in (first, second):
            proc.wait()
            if proc.status != 0:
                assert proc.status == ExitStatus.ERROR, f"{proc.name}: {proc.err} ({rnd.where})"
                assert SUPERSEDED in proc.err, f"{proc.name}: {proc.err} ({rnd.where})"
                assert "hint: `s3idx info` shows" in proc.err, rnd.where
        assert 0 in (first.status, second.status), f"{first.err} {second.err} ({rnd.where})"
        assert set(_check(rnd)) == set(keys), rnd.where


def _preload_maggma(rnd: Round, store: ObjectStore, keys: list[str]) -> None:
    """maggma's objects (msgpack bodies, fields as metadata) of version v0, indexed from their
    metadata, as a bucket maggma wrote and s3idx adopted before ``--rewrite``."""
    started = time.monotonic()
    names = orjson.dumps({"fs_id": "fs-id", "tag": "tag", "v": "v"}).decode()
    for i, key in enumerate(keys):
        body = msgpack.packb({"fs_id": key, "tag": "v0", "v": i})
        store.put(key, body, {"s3-to-mongo-keys": names, "fs-id": key, "tag": "v0", "v": str(i)})
    with rnd.engine() as engine:
        assert engine.rebuild_index().maggma.indexed == len(keys), rnd.where
    rnd.procs.append(Proc("v0", None, started, "v0", keys, time.monotonic(), 0))


def test_rewrite_beside_put_and_delete(rounds: Iterator[Round]) -> None:
    """``sync --rewrite`` or ``rebuild-index --rewrite`` converting maggma's objects while a put
    rewrites some of them and a delete removes others: the put's documents stay in the bucket
    (the rewrite never writes the old document back over them) and no deleted one returns.

    The exact moment (another writer between the rewrite's GET and PUT) is pinned in
    tests/test_rewrite_races.py; this runs it with random timing. moto compares If-Match and
    stores in two steps inside its own handler, a moment no client can close (AWS S3 and the
    local store compare and write in one)."""
    for number, on_s3 in enumerate(rounds):
        # Odd rounds on the local store, even ones on moto (both honour a conditional put).
        rnd = on_s3
        if number % 2:
            rnd = LocalRound(**{f.name: getattr(on_s3, f.name) for f in fields(Round)})
        with rnd.engine() as engine:
            store = engine.store
            keys = _keys("k", 120)
            _preload_maggma(rnd, store, keys)
        command = rnd.rng.choice(("sync", "rebuild-index"))
        rnd.where += f", {command} --rewrite, {'local' if number % 2 else 's3'}"
        rewrite = rnd.start(command, command, "--rewrite", "--workers", "4", "--json")
        rnd.pause(0, 1.2, "put after")
        put = rnd.put("put v1", "v1", keys[::2][:50] + _keys("n", 10), "--batch-size", "2")
        rnd.pause(0, 0.8, "delete after")
        deleted = keys[1::4][:20]
        delete = rnd.start("delete", "delete", *deleted, "--json")
        assert put.wait().status == 0, f"put: {put.err} ({rnd.where})"
        assert rewrite.wait().status == 0, f"{command} --rewrite: {rewrite.err} ({rnd.where})"
        # A key the rewrite converted after the delete read its entry is kept (exit 3). One
        # whose journal record the rewrite's run finished first (it finishes every record
        # there, as a killed delete's) is gone before this delete removes it: not found
        # (exit 4), as when another delete removes it first.
        status = delete.wait().status
        assert status in (0, 3, ExitStatus.NOT_FOUND), f"delete: {delete.err} ({rnd.where})"
        missing = set(delete.summary["missing"])
        finished = rewrite.summary.get("interrupted_deletes", 0) + rewrite.summary.get(
            "deletes_finished", 0
        )
        assert missing <= set(deleted) and len(missing) <= finished, rnd.where
        kept = set(delete.summary["kept"]) | {f["key"] for f in delete.summary["failed"]}
        versions = _check(rnd, gone=set(deleted) - kept)
        assert len(versions) == 130 - delete.summary["deleted"] - len(missing), rnd.where
