"""A put killed between an object's upload and its entry, for a key that already had one.

Real processes: the put's entry write stalls (its ``upsert_if`` is patched to announce itself
and sleep), and the test kills it with SIGKILL there, after the object of the new version is
stored and before its entry. DESIGN promise 6: the entry of the replaced version must not be
taken for the truth afterwards (``put --skip-unchanged`` of that version must store it again),
``sync --check`` / ``verify`` name the drift ``interrupted-put`` and ``sync`` repairs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine
from s3idx.engine import put_journal
from s3idx.errors import BackendUnavailableError, ExitStatus, RecordError
from s3idx.index.base import PutIntent
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.local import LocalStore
from tests.helpers import fresh_database_name, jsonl, subprocess_env, with_database

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# Imported by every Python process started with its directory on PYTHONPATH, so also by
# put --processes' workers (spawned): each process's entry write announces itself in
# STALL_DIR, then waits to be killed.
_SITECUSTOMIZE = """
import os
if os.environ.get("STALL_DIR"):
    import pathlib, time
    from s3idx.index import mongo, sqlite

    def stall(self, entries, expected):
        (pathlib.Path(os.environ["STALL_DIR"]) / str(os.getpid())).touch()
        time.sleep(120)

    sqlite.SqliteIndex.upsert_if = stall
    mongo.MongoIndex.upsert_if = stall
if os.environ.get("PAUSE_DIR"):
    # Every upload first announces itself, then waits for the file "go".
    import pathlib, time
    from s3idx.engine import retry

    upload = retry.RetryingStore.put

    def paused(self, key, body, metadata, **kwargs):
        where = pathlib.Path(os.environ["PAUSE_DIR"])
        (where / "paused").touch()
        while not (where / "go").exists():
            time.sleep(0.02)
        return upload(self, key, body, metadata, **kwargs)

    retry.RetryingStore.put = paused
if os.environ.get("OTHER_MACHINE"):
    # As if the put ran on another machine: processes here cannot tell whether it lives.
    from s3idx import liveness

    liveness._machine = lambda: "0123456789ab"
"""


class Setup:
    def __init__(self, home: Path, location: list[str]) -> None:
        self.home = home
        self.location = location
        # Seconds without a heartbeat after which sync and verify take a put for dead (unset:
        # the default, 10 minutes).
        self.stale: str | None = None

    def run(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        env = subprocess_env(self.home)
        if self.stale is not None:
            env["S3IDX_PUT_STALE_SECONDS"] = self.stale
        return subprocess.run(
            [sys.executable, "-m", "s3idx", *args, *self.location],
            env=env,
            input=input,
            capture_output=True,
            timeout=120,
        )

    def killed_put(
        self, documents: bytes, *args: str, processes: int = 1, elsewhere: bool = False
    ) -> None:
        """A put killed with SIGKILL (with its workers) once each of its ``processes`` stored
        objects and reached its entry write."""
        self.kill(self.paused_put(documents, *args, elsewhere=elsewhere), processes)

    def paused_put(
        self, documents: bytes, *args: str, pause_uploads: bool = False, elsewhere: bool = False
    ) -> subprocess.Popen[bytes]:
        """A put that stalls at its entry write (and, with ``pause_uploads``, before each
        upload until ``release_uploads``); with ``elsewhere``, as if on another machine."""
        hook = self.home / "hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        stalled = self.home / "stalled"
        shutil.rmtree(stalled, ignore_errors=True)
        stalled.mkdir()
        pause = self.home / "pause"
        shutil.rmtree(pause, ignore_errors=True)
        env = subprocess_env(self.home)
        env.update(STALL_DIR=str(stalled), PYTHONPATH=f"{hook}{os.pathsep}{env['PYTHONPATH']}")
        if pause_uploads:
            pause.mkdir()
            env.update(PAUSE_DIR=str(pause))
        if elsewhere:
            env.update(OTHER_MACHINE="1")
        process = subprocess.Popen(
            [sys.executable, "-m", "s3idx", "put", *args, *self.location],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: the workers die with it
        )
        assert process.stdin is not None
        process.stdin.write(documents)
        process.stdin.close()
        if pause_uploads:
            self._wait_for(process, lambda: (pause / "paused").exists(), "an upload")
        return process

    def release_uploads(self) -> None:
        (self.home / "pause" / "go").touch()

    def _wait_for(
        self, process: subprocess.Popen[bytes], done: Callable[[], bool], what: str
    ) -> None:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        while not done():
            if process.poll() is not None:
                raise AssertionError(process.stderr.read())
            assert time.monotonic() < deadline, f"the put never reached {what}"
            time.sleep(0.05)

    def kill(self, process: subprocess.Popen[bytes], processes: int = 1) -> None:
        """Kill the put with SIGKILL (with its workers) once each of its ``processes`` stored
        objects and reached its entry write."""
        stalled = self.home / "stalled"
        try:
            self._wait_for(
                process, lambda: len(os.listdir(stalled)) >= processes, "its entry write"
            )
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL

    def values(self) -> dict[str, Any]:
        """What queries say: key -> v."""
        out = self.run("query", "{}").stdout
        return {d["fs_id"]: d["v"] for d in map(orjson.loads, out.splitlines())}

    def got(self, key: str) -> Any:
        got = self.run("get", key)
        assert got.returncode == 0, got.stderr
        return orjson.loads(got.stdout)["v"]


@pytest.fixture(params=["local-sqlite", "s3-ferretdb"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    if request.param == "local-sqlite":
        location = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "i.sqlite3")]
        yield Setup(tmp_path, location)
        return
    import pymongo

    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    base = request.getfixturevalue("ferretdb_server").uri
    database = fresh_database_name()
    location = [
        "--store",
        f"s3://{bucket}/docs",
        "--endpoint-url",
        endpoint,
        "--index",
        with_database(base, database),
    ]
    try:
        yield Setup(tmp_path, location)
    finally:
        with pymongo.MongoClient(base, serverSelectionTimeoutMS=5000) as client:
            client.drop_database(database)


V1 = jsonl({"fs_id": "k", "v": 1}, {"fs_id": "other", "v": 1})
V2 = jsonl({"fs_id": "k", "v": 2})


def _interrupted(setup: Setup) -> None:
    """v1 stored and indexed; then a put of v2 killed after its upload, before its entry, on
    another machine."""
    put = setup.run("put", "--field", "v", input=V1)
    assert put.returncode == 0, put.stderr
    setup.killed_put(V2, "--field", "v", elsewhere=True)
    assert setup.got("k") == 2  # the bucket holds v2
    # The killed run's heartbeat is fresh: look as if its stale bound had passed.
    setup.stale = "0"


def test_skip_unchanged_stores_again_a_version_a_killed_put_replaced(setup: Setup) -> None:
    _interrupted(setup)
    check = setup.run("sync", "--check")
    assert (check.returncode, check.stdout) == (ExitStatus.DRIFT, b"interrupted-put\tk\n")
    assert b"1 interrupted put" in check.stderr

    again = setup.run("put", "--field", "v", "--skip-unchanged", "--json", input=V1)
    assert again.returncode == 0, again.stderr
    summary = orjson.loads(again.stdout)
    assert (summary["stored"], summary["unchanged"]) == (1, 1)  # k sent again, other not
    assert setup.got("k") == 1
    assert setup.values() == {"k": 1, "other": 1}
    # The killed run's own record stays until sync settles it: another put of the key does
    # not clear it (had that run been alive, its upload could still land after this one).
    # The bucket's object is now the one the entry describes: no drift to report.
    check = setup.run("sync", "--check")
    assert (check.returncode, check.stdout) == (ExitStatus.OK, b"")
    again = setup.run("put", "--field", "v", "--skip-unchanged", "--json", input=V1)
    assert orjson.loads(again.stdout)["stored"] == 1  # the record is still there
    assert setup.run("sync").returncode == ExitStatus.OK
    assert setup.values() == {"k": 1, "other": 1}
    assert setup.run("sync", "--check").returncode == ExitStatus.OK


def test_a_put_killed_on_this_machine_is_settled_without_waiting_for_the_stale_bound(
    tmp_path: Path,
) -> None:
    """Its process is known gone: the next sync waits a moment for its last upload, not the
    ten minutes a run elsewhere gets."""
    setup = Setup(tmp_path, ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i")])
    assert setup.run("put", "--field", "v", input=V1).returncode == 0
    setup.killed_put(V2, "--field", "v")
    check = setup.run("sync", "--check")
    assert (check.returncode, check.stdout) == (ExitStatus.DRIFT, b"interrupted-put\tk\n")
    verify = setup.run("verify", "--json")
    assert verify.returncode == ExitStatus.DRIFT
    assert orjson.loads(verify.stdout)["interrupted_puts"] == 1

    synced = setup.run("sync", "--json")
    assert synced.returncode == ExitStatus.OK, synced.stderr
    assert orjson.loads(synced.stdout)["interrupted_puts"] == 1
    assert (
        b"warning: a put killed on this machine left entries journaled: waiting 10 s for its "
        b"last uploads to land before setting them to what the bucket holds"
    ) in synced.stderr
    assert setup.values() == {"k": 2, "other": 1}
    assert setup.run("sync", "--check").returncode == ExitStatus.OK


def test_sync_sets_the_entry_to_what_the_bucket_holds(setup: Setup) -> None:
    _interrupted(setup)
    dry = setup.run("sync", "--dry-run")
    assert (dry.returncode, dry.stdout) == (ExitStatus.OK, b"repair-put\tk\n")
    verify = setup.run("verify", "--json")
    assert verify.returncode == ExitStatus.DRIFT
    assert orjson.loads(verify.stdout)["interrupted_puts"] == 1
    # Until then, queries still find the key (with the fields of the version it replaced).
    assert setup.values() == {"k": 1, "other": 1}

    synced = setup.run("sync", "--json")
    assert synced.returncode == ExitStatus.OK, synced.stderr
    assert orjson.loads(synced.stdout)["interrupted_puts"] == 1
    assert setup.values() == {"k": 2, "other": 1}
    assert setup.run("sync", "--check").returncode == ExitStatus.OK
    assert setup.run("verify").returncode == ExitStatus.OK


# --- library level: what put journals, and an index written before the put journal ----------


class _CountingIndex(SqliteIndex):
    """Counts the put journal's writes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.journaled_puts: list[list[str]] = []
        self.cleared: list[list[str]] = []

    def journal_puts(self, items: Mapping[str, str], run: str) -> None:
        self.journaled_puts.append(sorted(items))
        super().journal_puts(items, run)

    def clear_put_intents(self, records: Iterable[PutIntent]) -> None:
        records = list(records)
        self.cleared.append(sorted(r.key for r in records))
        super().clear_put_intents(records)


def _docs(keys: range, v: int) -> list[dict[str, Any]]:
    return [{"fs_id": f"k{i:03d}", "v": v} for i in keys]


def test_new_keys_cost_no_journal_write_and_rewrites_one_per_batch(tmp_path: Path) -> None:
    index = _CountingIndex(tmp_path / "i.sqlite3")
    with Engine(LocalStore(tmp_path / "store"), index, batch_size=10) as engine:
        assert engine.put_documents(_docs(range(30), 1), fields=["v"]).stored == 30
        assert (index.journaled_puts, index.cleared) == ([], [])

        # 5 rewrites and 5 new keys a batch: only the rewrites are journaled, then cleared.
        result = engine.put_documents(_docs(range(25, 35), 2), fields=["v"])
        assert result.stored == 10
        assert index.journaled_puts == [[f"k{i:03d}" for i in range(25, 30)]]
        assert index.cleared == index.journaled_puts
        assert index.put_intents() == []
        assert {e["fs_id"]: e["v"] for e in engine.query({"v": 2})} == {
            f"k{i:03d}": 2 for i in range(25, 35)
        }


def test_a_rewrite_the_store_refuses_leaves_no_journal_record(tmp_path: Path) -> None:
    index = _CountingIndex(tmp_path / "i.sqlite3")
    with Engine(LocalStore(tmp_path / "store"), index) as engine:
        engine.put_documents([{"fs_id": "k", "v": 1}], fields=["v"])
        failing = engine.store
        original = failing.put

        def refuse(key: str, body: bytes, metadata: Mapping[str, str]) -> Any:
            raise RecordError("refused by the store")

        failing.put = refuse  # type: ignore[method-assign]
        try:
            result = engine.put_documents([{"fs_id": "k", "v": 2}], fields=["v"])
        finally:
            failing.put = original  # type: ignore[method-assign]
        assert result.rejected == 1
        assert index.journaled_puts == [["k"]]
        assert index.put_intents() == []  # nothing was replaced: the entry is still true
        assert [e["v"] for e in engine.query({})] == [1]


def test_a_failed_run_keeps_records_only_for_uploads_that_may_have_stored(
    tmp_path: Path,
) -> None:
    index = _CountingIndex(tmp_path / "i.sqlite3")
    with Engine(LocalStore(tmp_path / "store"), index, workers=2) as engine:
        engine.put_documents(_docs(range(20), 1), fields=["v"])
        tried: list[str] = []

        def fail(key: str, body: bytes, metadata: Mapping[str, str]) -> Any:
            tried.append(key)
            raise BackendUnavailableError("the store went away")

        engine.store.put = fail  # type: ignore[method-assign]
        with pytest.raises(BackendUnavailableError):
            engine.put_documents(_docs(range(20), 2), fields=["v"])
        assert index.journaled_puts == [[f"k{i:03d}" for i in range(20)]]
        # An upload that failed so may have stored its object: its record stays, for sync.
        # The uploads cancelled or never started replaced nothing: theirs are cleared.
        assert 1 <= len(tried) < 20
        assert [r.key for r in index.put_intents()] == sorted(tried)


def test_an_index_written_before_the_put_journal_is_used_as_it_is(tmp_path: Path) -> None:
    """An index file of the previous version has no put journal table; reads find no
    records, and the first put that replaces an entry creates it."""
    path = tmp_path / "i.sqlite3"
    location = ["--store", str(tmp_path / "store"), "--index", str(path)]
    setup = Setup(tmp_path, location)
    assert setup.run("put", "--field", "v", input=V1).returncode == 0
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TABLE IF EXISTS put_journal")  # as the previous version left it
    assert setup.run("sync", "--check").returncode == ExitStatus.OK
    assert setup.run("verify").returncode == ExitStatus.OK
    again = setup.run("put", "--field", "v", "--skip-unchanged", "--json", input=V1)
    assert orjson.loads(again.stdout)["unchanged"] == 2

    setup.killed_put(V2, "--field", "v")
    setup.stale = "0"  # the killed run is dead at once
    check = setup.run("sync", "--check")
    assert (check.returncode, check.stdout) == (ExitStatus.DRIFT, b"interrupted-put\tk\n")
    assert setup.run("sync").returncode == ExitStatus.OK
    assert setup.values() == {"k": 2, "other": 1}


def test_put_processes_killed_after_their_uploads_leave_records_for_every_key(
    setup: Setup,
) -> None:
    keys = [f"k{i:02d}" for i in range(40)]
    v1 = jsonl(*({"fs_id": k, "v": 1} for k in keys))
    assert setup.run("put", "--field", "v", input=v1).returncode == 0
    v2 = jsonl(*({"fs_id": k, "v": 2} for k in keys))
    setup.killed_put(v2, "--field", "v", "--processes", "2", processes=2)
    setup.stale = "0"  # the killed runs are dead at once

    check = setup.run("sync", "--check")
    assert check.returncode == ExitStatus.DRIFT
    reported = check.stdout.decode().splitlines()
    # Every key the workers were replacing is journaled; those whose upload had not finished
    # are reported too (their records stay: a put killed there may or may not have stored).
    assert reported == [f"interrupted-put\t{k}" for k in keys]

    again = setup.run("put", "--field", "v", "--skip-unchanged", "--json", input=v1)
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout)["unchanged"] == 0
    assert setup.values() == dict.fromkeys(keys, 1)
    assert {setup.got(k) for k in (keys[0], keys[-1])} == {1}
    # The killed runs' records stay until sync settles them (to what the bucket holds now).
    assert setup.run("sync").returncode == ExitStatus.OK
    assert setup.values() == dict.fromkeys(keys, 1)
    assert setup.run("sync", "--check").returncode == ExitStatus.OK


# --- overlapping puts of one key, and a sync while a put runs --------------------------------

V3 = jsonl({"fs_id": "k", "v": 3})


def test_a_put_overtaken_by_another_of_the_same_key_keeps_its_record(setup: Setup) -> None:
    """Run A journals k and waits before its upload; run B journals k too, stores v3 and
    clears its own record; then A's upload lands (the bucket holds v2) and A is killed before
    its entry write. The entry says v3: A's record must still say it may be wrong."""
    assert setup.run("put", "--field", "v", input=V1).returncode == 0
    a = setup.paused_put(V2, "--field", "v", pause_uploads=True)
    try:
        b = setup.run("put", "--field", "v", input=V3)
        assert b.returncode == 0, b.stderr
        assert setup.values()["k"] == 3
    finally:
        setup.release_uploads()
        setup.kill(a)
    assert setup.got("k") == 2  # A's upload landed last
    setup.stale = "0"  # A was killed: dead at once
    check = setup.run("sync", "--check")
    assert (check.returncode, check.stdout) == (ExitStatus.DRIFT, b"interrupted-put\tk\n")

    # B's entry is no proof that v3 is stored: --skip-unchanged stores it again.
    again = setup.run("put", "--field", "v", "--skip-unchanged", "--json", input=V3)
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout)["stored"] == 1
    assert setup.got("k") == 3
    assert setup.run("sync").returncode == ExitStatus.OK
    assert setup.run("sync", "--check").returncode == ExitStatus.OK
    assert setup.values() == {"k": 3, "other": 1}


def test_sync_leaves_a_running_puts_record_alone_until_it_is_stale(setup: Setup) -> None:
    """A sync while a put waits before its upload must not settle the put's record: the put,
    killed after its upload and before its entry write, would leave a wrong entry with no
    record. Once the heartbeat of a run on another machine is older than the stale bound,
    sync settles it."""
    assert setup.run("put", "--field", "v", input=V1).returncode == 0
    a = setup.paused_put(V2, "--field", "v", pause_uploads=True, elsewhere=True)
    try:
        synced = setup.run("sync", "--json")
        assert synced.returncode == ExitStatus.OK, synced.stderr
        summary = orjson.loads(synced.stdout)
        assert (summary["interrupted_puts"], summary["puts_in_progress"]) == (0, 1)
        check = setup.run("sync", "--check")
        assert (check.returncode, check.stdout) == (ExitStatus.OK, b""), check.stderr
        assert b"1 key of puts in progress left alone" in check.stderr
        verify = setup.run("verify", "--json")
        assert verify.returncode == ExitStatus.OK, verify.stderr
        assert orjson.loads(verify.stdout)["puts_in_progress"] == 1
    finally:
        setup.release_uploads()
        setup.kill(a)
    assert setup.got("k") == 2  # the bucket holds v2; the entry still says v1

    # Killed elsewhere: until its heartbeat is stale, the run may as well be slow; its record
    # stays.
    check = setup.run("sync", "--check", "--json")
    assert check.returncode == ExitStatus.OK, check.stderr
    assert orjson.loads(check.stdout)["puts_in_progress"] == 1
    # The bound is a setting: the config file's, then S3IDX_PUT_STALE_SECONDS over it.
    config = setup.home / "config.toml"
    config.write_text("put_stale_seconds = 0\n")
    check = setup.run("sync", "--check", "--config", str(config))
    assert (check.returncode, check.stdout) == (ExitStatus.DRIFT, b"interrupted-put\tk\n")
    setup.stale = "600"
    check = setup.run("sync", "--check", "--config", str(config))
    assert (check.returncode, check.stdout) == (ExitStatus.OK, b""), check.stderr
    setup.stale = "0"
    check = setup.run("sync", "--check")
    assert (check.returncode, check.stdout) == (ExitStatus.DRIFT, b"interrupted-put\tk\n")
    synced = setup.run("sync", "--json")
    assert synced.returncode == ExitStatus.OK, synced.stderr
    assert orjson.loads(synced.stdout)["interrupted_puts"] == 1
    assert setup.values() == {"k": 2, "other": 1}
    assert setup.run("sync", "--check").returncode == ExitStatus.OK


def test_a_stale_bound_that_is_no_number_of_seconds_is_refused(tmp_path: Path) -> None:
    setup = Setup(tmp_path, ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i")])
    for command in ("sync", "verify"):
        for bad in ("soon", "-1", "inf"):
            setup.stale = bad
            refused = setup.run(command)
            assert refused.returncode == ExitStatus.USAGE, refused.stderr
            assert (
                f"S3IDX_PUT_STALE_SECONDS: expected a number of seconds, 0 or more, got {bad!r}"
            ).encode() in refused.stderr
            assert b"Traceback" not in refused.stderr


def test_a_running_puts_heartbeat_keeps_its_records_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat runs in its own thread: a put whose upload takes longer than the stale
    bound keeps its record live, and marks it dead when it ends with the record left."""
    monkeypatch.setattr(put_journal, "PUT_BEAT_SECONDS", 0.05)
    index = SqliteIndex(tmp_path / "i.sqlite3")
    with Engine(LocalStore(tmp_path / "store"), index) as engine:
        engine.put_documents([{"fs_id": "k", "v": 1}], fields=["v"])
        uploading, go = threading.Event(), threading.Event()
        original = engine.store.put

        def slow(key: str, body: bytes, metadata: Mapping[str, str], **kwargs: Any) -> Any:
            uploading.set()
            assert go.wait(30)
            raise BackendUnavailableError("the store went away")  # may have stored: kept

        engine.store.put = slow  # type: ignore[method-assign]
        failure: list[BaseException] = []

        def put() -> None:
            try:
                engine.put_documents([{"fs_id": "k", "v": 2}], fields=["v"])
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=put)
        thread.start()
        try:
            assert uploading.wait(30)
            [first] = index.put_intents()
            deadline = time.monotonic() + 30
            while index.put_intents()[0].at == first.at:
                assert time.monotonic() < deadline, "the heartbeat never came"
                time.sleep(0.02)
            [beaten] = index.put_intents()
            assert first.at is not None and beaten.at is not None and beaten.at > first.at
        finally:
            go.set()
            thread.join(30)
        engine.store.put = original  # type: ignore[method-assign]
        assert isinstance(failure[0], BackendUnavailableError)
        # The run ended with its record left: a dead run's, for the next sync to settle.
        [left] = index.put_intents()
        assert (left.key, left.at) == ("k", None)
        assert engine.sync().interrupted_puts == 1
        assert index.put_intents() == []
