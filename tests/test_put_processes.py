"""``put --processes N``: one input split over worker processes gives what one process gives."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine, open_engine
from s3idx.errors import ExitStatus, UsageError
from s3idx.index.sqlite import SqliteIndex
from s3idx.limits import MAX_NESTING
from s3idx.sharding import Shard, shard_of
from s3idx.store.local import LocalStore
from tests.helpers import Run, json_lines, subprocess_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")


def _document(i: int, version: int = 0) -> dict[str, object]:
    return {"fs_id": f"k{i % 150:04d}", "n": i, "version": version, "pad": "x" * (i % 40)}


def _input(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """300 lines over 150 keys (each key twice, the later line must win), with bad lines."""
    lines = [orjson.dumps(_document(i, version=i // 150)) for i in range(300)]
    lines.insert(7, b'{"fs_id": "bad", oops}')  # invalid JSON: the parent rejects it
    lines.insert(120, b'{"no_key": 1}')  # no key: the parent rejects it
    lines.insert(200, b'{"fs_id": "a//b", "n": 1}')  # a key no object may have
    lines.insert(250, b'{"fs_id": "big", "n": 123456789012345678901234567890}')  # a worker's
    source = tmp_path / "docs.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    return source, lines


Locations = Callable[[], list[str]]


@pytest.fixture(params=["local", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Locations:
    """Locations of a fresh store and SQLite index at each call: local files, or moto's S3."""
    counter = iter(range(100))

    def locations() -> list[str]:
        n = next(counter)
        index = ["--index", str(tmp_path / f"index{n}.sqlite3")]
        if request.param == "local":
            return ["--store", str(tmp_path / f"store{n}"), *index]
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        return ["--store", f"s3://{bucket}/docs{n}", "--endpoint-url", endpoint, *index]

    return locations


def _index(run: Run, locations: list[str]) -> list[dict[str, object]]:
    query = run("query", "--sort", "fs_id", *locations)
    assert query.exit_code == 0, query.stderr
    return [{k: v for k, v in e.items() if k != "last_updated"} for e in json_lines(query.stdout)]


def test_every_document_is_stored_once_and_the_index_equals_one_process(
    run: Run, where: Locations, tmp_path: Path
) -> None:
    source, lines = _input(tmp_path)
    one, three = where(), where()
    rejects_one, rejects_three = tmp_path / "rejects1.jsonl", tmp_path / "rejects3.jsonl"

    serial = run("put", str(source), "--field", "n", "--rejects", str(rejects_one), "--json", *one)
    parallel = run(
        "put", str(source), "--field", "n", "--processes", "3",
        "--rejects", str(rejects_three), "--json", *three,
    )  # fmt: skip

    assert serial.exit_code == parallel.exit_code == ExitStatus.PARTIAL, parallel.stderr
    a, b = orjson.loads(serial.stdout), orjson.loads(parallel.stdout)
    counts = ("read", "rejected", "duplicates", "not_indexed", "unchanged")
    assert {k: b[k] for k in counts} == {k: a[k] for k in counts}
    assert (b["read"], b["rejected"], b["duplicates"]) == (304, 4, 150)
    # A key's two lines are one upload when they fall in one chunk of a process, else two.
    assert 150 <= b["stored"] <= 300
    assert b["exit_status"] == ExitStatus.PARTIAL

    entries = _index(run, three)
    assert entries == _index(run, one)
    assert len(entries) == 150
    # The later line of each key won: version 1 (lines 150-299 of the documents).
    assert {e["n"] for e in entries} == set(range(150, 300))

    # One rejects file, in input order, the lines as they were; stderr names FILE:LINE in order.
    bad = [lines[7], lines[120], lines[200], lines[250]]
    assert (
        rejects_three.read_bytes() == rejects_one.read_bytes() == b"".join(x + b"\n" for x in bad)
    )
    located = [f"{source}:{n}:" for n in (8, 121, 201, 251)]
    positions = [parallel.stderr.index(where) for where in located]
    assert positions == sorted(positions), parallel.stderr


def test_objects_hold_the_last_line_of_each_key(run: Run, tmp_path: Path) -> None:
    store, index = tmp_path / "store", tmp_path / "index.sqlite3"
    lines = [orjson.dumps({"fs_id": f"k{i % 5}", "n": i}) for i in range(100)]
    result = run(
        "put", "--processes", "2", "--store", str(store), "--index", str(index),
        input=b"\n".join(lines) + b"\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert " 100 read, " in result.stderr
    assert "95 duplicate keys (last one kept)" in result.stderr
    for key in range(5):
        get = run("get", f"k{key}", "--store", str(store), "--index", str(index))
        assert orjson.loads(get.stdout)["n"] == 95 + key


def test_dry_run_and_max_errors_count_over_all_processes(run: Run, tmp_path: Path) -> None:
    lines = [orjson.dumps({"fs_id": f"k{i}", "n": i}) for i in range(50)]
    lines += [b'{"x": 1}'] * 5 + [b"[1,"] * 5  # ten lines without a key
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    data = b"\n".join(lines) + b"\n"

    dry = run("put", "--processes", "2", "--dry-run", "--json", *locations, input=data)
    summary = orjson.loads(dry.stdout)
    assert (summary["read"], summary["would_store"], summary["rejected"]) == (60, 50, 10)
    assert summary["stored"] == 0
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("k1*"))

    limited = run("put", "--processes", "2", "--max-errors", "3", "--json", *locations, input=data)
    summary = orjson.loads(limited.stdout)
    assert limited.exit_code == ExitStatus.PARTIAL
    assert summary["stopped_early"] is True
    assert summary["rejected"] >= 3


def _s3idx(home: Path, *args: str, start_new_session: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "s3idx", *args],
        env=subprocess_env(home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=start_new_session,  # its own process group, to signal as a terminal
    )


def _workers(pid: int) -> list[int]:
    """The worker processes of ``pid`` (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def _wait_for_workers(pid: int, count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = _workers(pid)
        if len(workers) >= count:
            return workers
        time.sleep(0.05)
    raise AssertionError(f"{count} worker processes did not start")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds worker processes in /proc")
def test_a_worker_killed_fails_the_run(tmp_path: Path) -> None:
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    put = _s3idx(tmp_path, "put", "--field", "v", "--processes", "2", "--json", *locations)
    assert put.stdin is not None
    # Every third line is rejected, by the worker it is routed to: an indexed field too deep.
    deep: dict[str, Any] = {}
    for _ in range(MAX_NESTING + 5):
        deep = {"a": deep}
    first = [{"fs_id": f"k{i}", "v": deep if i % 3 == 0 else i} for i in range(20)]
    put.stdin.write(b"".join(orjson.dumps(document) + b"\n" for document in first))
    put.stdin.flush()
    workers = _wait_for_workers(put.pid, 2)
    # The workers are running: they stored their share of the lines (and sent their rejects).
    deadline = time.monotonic() + 60
    while _stored(tmp_path / "s") < 13:
        assert time.monotonic() < deadline, "the workers never stored their lines"
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(workers[0], signal.SIGKILL)
    time.sleep(0.3)
    put.stdin.write(b"".join(orjson.dumps({"fs_id": f"m{i}"}) + b"\n" for i in range(20)))
    out, err = put.communicate(timeout=60)
    assert put.returncode not in (0, None), err
    assert b"worker process" in err
    summary = orjson.loads(out)
    assert summary["exit_status"] == put.returncode
    # Every line the parent read counts as read, the killed worker's share too, and every
    # reject named counts as rejected.
    assert 20 <= summary["read"] <= 40, summary
    assert summary["rejected"] == err.count(b"nested deeper than 100 levels") == 7, err


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds worker processes in /proc")
def test_a_worker_killed_while_starting_fails_the_run_before_anything_is_read(
    tmp_path: Path,
) -> None:
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    put = _s3idx(tmp_path, "put", "--processes", "2", "--json", *locations)
    deadline = time.monotonic() + 30
    while not (workers := _workers(put.pid)) and time.monotonic() < deadline:
        time.sleep(0.002)  # a worker takes tenths of a second to import and open anything
    os.kill(workers[0], signal.SIGKILL)
    out, err = put.communicate(b'{"fs_id": "a"}\n', timeout=60)
    assert put.returncode == ExitStatus.ERROR, err
    assert re.fullmatch(
        rb"s3idx: error: worker process [12] of 2 was killed by signal 9 while starting\n", err
    )
    assert orjson.loads(out)["exit_status"] == ExitStatus.ERROR
    assert not (tmp_path / "i.sqlite3").exists()  # nothing recorded, nothing read
    assert _stored(tmp_path / "s") == 0


def test_stdin_through_the_command_line_with_one_json_document(tmp_path: Path) -> None:
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    put = _s3idx(tmp_path, "put", "--processes", "2", "--field", "n", "--json", *locations)
    data = b"".join(orjson.dumps({"fs_id": f"k{i}", "n": i}) + b"\n" for i in range(200))
    out, err = put.communicate(data + b'{"n": 1}\n', timeout=120)
    assert put.returncode == ExitStatus.PARTIAL, err
    (summary,) = json_lines(out.decode())  # one document, whatever the workers did
    assert (summary["read"], summary["stored"], summary["rejected"]) == (201, 200, 1)
    assert b"<stdin>:201: missing key field 'fs_id'" in err
    # Both workers had a share: the keys are spread by the shard function.
    assert {shard_of(f"k{i}", 2) for i in range(200)} == {0, 1}
    assert _stored(tmp_path / "s") == 200


def _stored(store: Path) -> int:
    # Documents only: put's manifests live under objects/.s3idx/.
    files = (p for p in store.rglob("*") if p.is_file() and "objects" in p.parts)
    return sum(1 for p in files if ".s3idx" not in p.parts)


@pytest.mark.parametrize(
    ("signum", "to_group", "status"),
    [
        (signal.SIGTERM, False, ExitStatus.TERMINATED),
        # A closed terminal or ssh session hangs up the whole process group, workers included.
        (signal.SIGHUP, True, ExitStatus.HANGUP),
    ],
    ids=["SIGTERM", "SIGHUP to the group"],
)
def test_a_signal_stops_the_workers_and_exits_with_its_status(
    tmp_path: Path, signum: int, to_group: bool, status: ExitStatus
) -> None:
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    put = _s3idx(tmp_path, "put", "--processes", "2", "--json", *locations, start_new_session=True)
    assert put.stdin is not None
    put.stdin.write(b"".join(orjson.dumps({"fs_id": f"k{i}"}) + b"\n" for i in range(30)))
    put.stdin.flush()
    workers = _wait_for_workers(put.pid, 2)
    deadline = time.monotonic() + 60
    while _stored(tmp_path / "s") < 30 and time.monotonic() < deadline:
        time.sleep(0.1)  # the lines reached the workers, which stored them
    if to_group:
        os.killpg(put.pid, signum)
    else:
        put.send_signal(signum)
    out, err = put.communicate(timeout=60)  # stdin stays open: the stop ends the reading
    assert put.returncode == status, err
    summary = orjson.loads(out)
    assert summary["interrupted"] is True
    assert summary["stored"] == 30
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_the_library_splits_a_shard_of_the_input_over_processes(tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    lines = [orjson.dumps({"fs_id": f"k{i}"}) + b"\n" for i in range(60)]
    source.write_bytes(b"".join(lines) + b"not json\n")  # unroutable: shard 0's to reject
    mine = {f"k{i}" for i in range(60) if shard_of(f"k{i}", 3) == 1}
    counts = []
    for processes, name in ((2, "p"), (1, "one")):
        location = {"store": str(tmp_path / name), "index": str(tmp_path / f"{name}.sqlite3")}
        with open_engine(**location) as engine:
            result = engine.put_files([source], processes=processes, shard=Shard(1, 3))
            stored = {e["fs_id"] for e in engine.query({}, fields=["fs_id"])}
        assert stored == mine
        counts.append((result.read, result.stored, result.other_shards, result.rejected))
    # The same counts as one process reading the whole input: every line read, the bad line
    # left to shard 0, the rest of the other shards' lines counted.
    assert counts[0] == counts[1] == (61, len(mine), 61 - len(mine), 0)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_store_that_cannot_be_opened_fails_the_put_before_anything_is_written(
    run: Run, tmp_path: Path, processes: int
) -> None:
    """The workers open the stores: one that cannot fails the run as one process fails, with
    its error alone (no summary), the index not even created."""
    source = tmp_path / "docs.jsonl"
    source.write_bytes(b'{"fs_id": "a"}\n')
    index = tmp_path / "i.sqlite3"
    where = ["--store", "s3://bucket/docs", "--aws-profile", "wrok", "--index", str(index)]

    result = run("put", "--processes", str(processes), str(source), *where)

    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        "s3idx: error: AWS profile 'wrok' is not defined; profiles: none (looked in the AWS "
        "config and credentials files) while opening s3://bucket/docs\n"
        "  hint: choose one with --aws-profile, or define it in ~/.aws/config\n"
    )
    assert not index.exists()


def test_the_library_refuses_processes_without_settings(tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_bytes(b'{"fs_id": "a"}\n')
    engine = Engine(LocalStore(tmp_path / "s"), SqliteIndex(tmp_path / "i.sqlite3"))
    with engine, pytest.raises(UsageError, match="opened from settings"):
        engine.put_files([source], processes=2)


def test_ctrl_c_to_the_process_group_stops_every_process_and_exits_130(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the workers too: they leave the stop to the parent."""
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    put = subprocess.Popen(
        [sys.executable, "-m", "s3idx", "put", "--processes", "2", "--json", *locations],
        env=subprocess_env(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert put.stdin is not None
    # Every third line is rejected (by the worker it is routed to).
    first = [{"fs_id": f"k{i}"} | ({"last_updated": 5} if i % 3 == 0 else {}) for i in range(20)]
    put.stdin.write(b"".join(orjson.dumps(document) + b"\n" for document in first))
    put.stdin.flush()
    workers = _wait_for_workers(put.pid, 2)
    deadline = time.monotonic() + 60
    while _stored(tmp_path / "s") < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(put.pid, signal.SIGINT)
    out, err = put.communicate(timeout=60)
    assert put.returncode == ExitStatus.INTERRUPTED, err
    summary = orjson.loads(out)
    assert (summary["stored"], summary["interrupted"]) == (20, True)
    assert b"worker process" not in err  # no worker died of the signal
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds worker processes in /proc")
@pytest.mark.parametrize(
    ("signum", "status"),
    [
        (signal.SIGINT, ExitStatus.INTERRUPTED),
        (signal.SIGTERM, ExitStatus.TERMINATED),
        (signal.SIGHUP, ExitStatus.HANGUP),
    ],
)
def test_a_signal_to_the_process_group_while_the_workers_start_is_an_interruption(
    tmp_path: Path, signum: signal.Signals, status: ExitStatus
) -> None:
    """Ctrl-C (or SIGTERM to the job) as the worker interpreters start, before they could set
    their own signal handling: they must not die of it, nor print a traceback."""
    for attempt in range(3):
        home = tmp_path / str(attempt)
        home.mkdir()
        locations = ["--store", str(home / "s"), "--index", str(home / "i.sqlite3")]
        put = subprocess.Popen(
            [sys.executable, "-m", "s3idx", "put", "--processes", "2", "--json", *locations],
            env=subprocess_env(home),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert put.stdin is not None
        put.stdin.write(b"".join(orjson.dumps({"fs_id": f"k{i}"}) + b"\n" for i in range(20)))
        put.stdin.flush()
        workers = _wait_for_workers(put.pid, 1 + attempt % 2)  # still importing s3idx
        time.sleep(0.1 * attempt)
        os.killpg(put.pid, signum)
        out, err = put.communicate(timeout=60)
        assert put.returncode == status, err
        assert b"Traceback" not in err and b"worker process" not in err, err
        assert orjson.loads(out)["interrupted"] is True
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


# Sends the parent its own signal at the moment a worker is being started, then runs put: the
# signal arrives while the workers' start holds stop signals back (a race forced, not timed).
_SIGNAL_WHILE_STARTING = """
import os, sys
from multiprocessing import process
start, signum = process.BaseProcess.start, int(sys.argv[1])
def signalled(self):
    if not getattr(process, "signalled", False):
        process.signalled = True
        os.kill(os.getpid(), signum)
    return start(self)
process.BaseProcess.start = signalled
sys.argv[0:2] = ["s3idx"]
from s3idx.entry import main
main()
"""


@pytest.mark.parametrize(
    ("signum", "status"),
    [
        (signal.SIGINT, ExitStatus.INTERRUPTED),
        (signal.SIGTERM, ExitStatus.TERMINATED),
        (signal.SIGHUP, ExitStatus.HANGUP),
    ],
)
def test_a_signal_to_the_parent_while_a_worker_starts_is_never_lost(
    tmp_path: Path, signum: signal.Signals, status: ExitStatus
) -> None:
    """The first worker's start also starts multiprocessing's resource tracker, which unblocks
    SIGINT and SIGTERM on its way: a signal held back meanwhile must still stop the run, not
    be dropped (the run then went on to store everything and exit 0)."""
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    put = subprocess.run(
        [sys.executable, "-c", _SIGNAL_WHILE_STARTING, str(int(signum)), "put",
         "--processes", "2", "--json", *locations],
        env=subprocess_env(tmp_path),
        input=b"".join(orjson.dumps({"fs_id": f"k{i}"}) + b"\n" for i in range(20)),
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert put.returncode == status, put.stderr
    assert b"Traceback" not in put.stderr and b"worker process" not in put.stderr, put.stderr
    summary = orjson.loads(put.stdout)
    assert summary["interrupted"] is True
    assert summary["exit_status"] == status


# Loaded by every interpreter started with it on its path; in put's worker processes only, the
# system refuses threads (all of them, or all but the first) or memory, as a ulimit would.
_REFUSING_WORKERS = """
import os, sys, threading
if "--multiprocessing-fork" in sys.orig_argv:
    start, refused = threading.Thread.start, []
    def refuse(self):
        if os.environ["REFUSE"] == "later" and not refused:
            refused.append(self)
            return start(self)
        if os.environ["REFUSE"] == "memory":
            raise MemoryError
        raise RuntimeError("can't start new thread")
    threading.Thread.start = refuse
"""


@pytest.mark.parametrize(
    ("refuse", "message"),
    [
        ("all", "cannot start a thread: the system refused it (a limit on threads, processes "
         "or memory)"),
        ("later", "cannot start a thread: the system refused it (a limit on threads, processes "
         "or memory)"),
        ("memory", "out of memory"),
    ],
)  # fmt: skip
def test_a_system_limit_in_the_workers_is_one_error_as_in_one_process(
    tmp_path: Path, refuse: str, message: str
) -> None:
    """Each worker hits the limit: one error, the one a lone put gives, not a traceback per
    worker nor a bug report."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_REFUSING_WORKERS)
    env = subprocess_env(tmp_path)
    env.update(PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{env['PYTHONPATH']}", REFUSE=refuse)
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    put = subprocess.run(
        [sys.executable, "-m", "s3idx", "put", "--processes", "3", "--json", *locations],
        env=env,
        input=b"".join(orjson.dumps({"fs_id": f"k{i}"}) + b"\n" for i in range(20)),
        capture_output=True,
        timeout=120,
    )
    assert put.returncode == ExitStatus.ERROR, put.stderr
    assert put.stderr.decode() == (
        f"s3idx: error: {message}\n"
        "  hint: lower --workers or --processes, or raise the limit (ulimit -u or -v, a "
        "container's pids or memory limit)\n"
    )
    summary = orjson.loads(put.stdout)
    assert (summary["error"], summary["exit_status"]) == (message, ExitStatus.ERROR)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds worker processes in /proc")
def test_a_signal_while_the_workers_start_does_not_wait_for_them_to_start(
    tmp_path: Path,
) -> None:
    """Workers that hang as they start (a slow import, an index on a stalled file system) were
    handed nothing and wrote nothing: the first signal ends them instead of waiting for ever."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import sys, time\nif '--multiprocessing-fork' in sys.orig_argv:\n    time.sleep(3600)\n"
    )
    env = subprocess_env(tmp_path)
    env["PYTHONPATH"] = f"{tmp_path / 'site'}{os.pathsep}{env['PYTHONPATH']}"
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    put = subprocess.Popen(
        [sys.executable, "-m", "s3idx", "put", "--processes", "3", "--json", *locations],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    workers = _wait_for_workers(put.pid, 3)
    put.send_signal(signal.SIGTERM)
    try:
        out, err = put.communicate(b'{"fs_id": "a"}\n', timeout=30)
    except subprocess.TimeoutExpired:
        put.kill()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        raise AssertionError("a put whose workers were starting ignored SIGTERM") from None
    assert put.returncode == ExitStatus.TERMINATED, err
    assert b"worker process" not in err and b"Traceback" not in err, err
    summary = orjson.loads(out)
    assert (summary["interrupted"], summary["read"]) == (True, 0)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


# Kills put (SIGKILL, as `kill -9` does) as it starts its first worker, at one moment of that
# start (argv[1]): the worker's interpreter runs but was sent nothing yet ("spawned"), half of
# what it is sent ("sending"), or all of it ("started"). The worker's pid goes to argv[2].
_KILLED_AS_A_WORKER_STARTS = """
import os, signal, sys
from multiprocessing import process, util
moment, pids = sys.argv[1], sys.argv[2]
spawnv, start, write, started = util.spawnv_passfds, process.BaseProcess.start, os.write, []
def die():
    with open(pids, "w") as f:
        f.write(str(started[-1]))
    os.kill(os.getpid(), signal.SIGKILL)
def spawned(path, args, fds):
    def half_written(fd, data):  # to the worker's pipe, not the tracker's, which it inherits
        if fd in fds:
            return write(fd, data)
        write(fd, bytes(data)[: len(data) // 2])
        die()
    started.append(spawnv(path, args, fds))
    if b"--multiprocessing-fork" in map(os.fsencode, args):  # a worker, not the tracker
        if moment == "spawned":
            die()
        if moment == "sending":
            os.write = half_written
    return started[-1]
def launched(self):
    start(self)
    die()
util.spawnv_passfds = spawned
if moment == "started":
    process.BaseProcess.start = launched
sys.argv[0:3] = ["s3idx"]
from s3idx.entry import main
main()
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:  # gone, and reaped
        return False
    return state not in ("Z", "X")  # a zombie: gone, its new parent has not reaped it yet


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="watches the worker in /proc")
@pytest.mark.parametrize("moment", ["spawned", "sending", "started"])
def test_a_worker_whose_parent_is_killed_as_it_starts_exits_soon_without_a_word(
    tmp_path: Path, moment: str
) -> None:
    """``kill -9`` of put while it starts its workers: the orphaned worker, whatever it had been
    sent, exits soon and prints nothing. Sent nothing, or part of its start-up data, it printed
    multiprocessing's EOFError (or UnpicklingError) traceback."""
    pids, stderr = tmp_path / "pids", tmp_path / "stderr"
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    with stderr.open("wb") as err:  # put's stderr, which its workers inherit
        put = subprocess.run(
            [sys.executable, "-c", _KILLED_AS_A_WORKER_STARTS, moment, str(pids),
             "put", "--processes", "2", "--json", *locations],
            env=subprocess_env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=120,
        )  # fmt: skip
    assert put.returncode == -signal.SIGKILL, stderr.read_bytes()
    orphan = int(pids.read_text())
    deadline = time.monotonic() + 60
    while _running(orphan):
        if time.monotonic() > deadline:
            os.kill(orphan, signal.SIGKILL)
            raise AssertionError(f"the orphaned worker outlived its parent: {moment}")
        time.sleep(0.05)
    assert stderr.read_bytes() == b""


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_signal_stops_a_put_whose_input_is_a_named_pipe_nobody_writes_to(
    tmp_path: Path, processes: str
) -> None:
    """Opening a FIFO waits for a writer, for ever if none comes: the stop must not wait for
    the reader, as it does not with one process."""
    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    put = _s3idx(tmp_path, "put", str(fifo), "--processes", processes, "--json", *locations)
    if processes != "1":
        _wait_for_workers(put.pid, int(processes))
    deadline = time.monotonic() + 60
    while not (tmp_path / "i.sqlite3").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the index is opened (settings recorded): the input is opened next
    put.send_signal(signal.SIGTERM)
    try:
        out, err = put.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        put.kill()
        put.communicate()
        raise AssertionError("a put waiting for its input ignored SIGTERM") from None
    assert put.returncode == ExitStatus.TERMINATED, err
    summary = orjson.loads(out)
    assert (summary["interrupted"], summary["read"]) == (True, 0)


# The parent's temporary files are on a full device: it holds the rejects' lines in one.
_FULL_TEMPORARY_FILES = """
import sys, tempfile
tempfile.TemporaryFile = lambda *args, **kwargs: open("/dev/full", "w+b")
sys.argv[0] = "s3idx"
from s3idx.entry import main
main()
"""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_rejects_that_cannot_be_held_fail_the_run_instead_of_hanging(tmp_path: Path) -> None:
    """Rejects wait for the end of the run in a temporary file. One that cannot be written
    (a full TMPDIR) killed the thread collecting the workers' reports, with a traceback, and
    the run then waited for ever on workers blocked reporting to nobody."""
    lines = [orjson.dumps({"fs_id": f"k{i}", "n": 1, "pad": "x" * 500}) for i in range(1000)]
    big = b'{"fs_id": "k%d", "n": 123456789012345678901234567890}'  # a worker rejects it
    source = tmp_path / "docs.jsonl"
    source.write_bytes(b"".join(line + b"\n" for line in lines) + big % 5000 + b"\n")
    bad = tmp_path / "bad.jsonl"  # 2,000 rejects, over 1 MB: more than the pipes hold
    bad.write_bytes(b"".join(big % i + b"\n" for i in range(2000)))
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    put = subprocess.run(
        [sys.executable, "-c", _FULL_TEMPORARY_FILES, "put", str(source), str(bad),
         "--field", "n", "--processes", "2", "--json", *locations],
        env=subprocess_env(tmp_path),
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert put.returncode == ExitStatus.ERROR, put.stderr
    assert b"Traceback" not in put.stderr and b"Exception in thread" not in put.stderr
    message = (
        f"cannot write the temporary file holding the rejects in {tempfile.gettempdir()}: "
        "No space left on device"
    )
    assert put.stderr.decode().endswith(
        f"s3idx: error: {message}\n"
        "  hint: free space there, or set TMPDIR to a directory with room\n"
    ), put.stderr
    summary = orjson.loads(put.stdout)
    assert (summary["error"], summary["exit_status"]) == (message, ExitStatus.ERROR)


@pytest.mark.parametrize(
    ("processes", "bound"),
    [
        ("0", "greater than or equal to 1"),
        ("-3", "greater than or equal to 1"),
        ("257", "less than or equal to 256"),
    ],
)
def test_a_count_of_processes_out_of_range_is_a_usage_error_before_anything_starts(
    run: Run, tmp_path: Path, processes: str, bound: str
) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_bytes(b'{"fs_id": "a"}\n')
    store, index = tmp_path / "store", tmp_path / "i.sqlite3"

    result = run(
        "put", "--processes", processes, str(source), "--store", str(store), "--index", str(index)
    )

    assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, "")
    assert result.stderr.endswith(
        f"Error: Invalid value for '--processes': Input should be {bound}\n"
    )
    assert not index.exists() and not store.exists()


@pytest.mark.parametrize("processes", [0, 257])
def test_the_library_refuses_a_count_of_processes_out_of_range(
    tmp_path: Path, processes: int
) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_bytes(b'{"fs_id": "a"}\n')
    location = {"store": str(tmp_path / "s"), "index": str(tmp_path / "i.sqlite3")}
    with open_engine(**location) as engine, pytest.raises(UsageError) as raised:
        engine.put_files([source], processes=processes)
    assert raised.value.message == f"processes must be from 1 to 256, not {processes}"
    assert raised.value.hint == (
        "each worker process is a Python interpreter of its own: more than the free cores only "
        "add start-up and memory"
    )
    assert not (tmp_path / "i.sqlite3").exists() and not (tmp_path / "s").exists()


def _summary(run: Run, *args: str, input: bytes | None = None) -> dict[str, object]:
    result = run("put", "--json", *args, input=input)
    assert result.exit_code in (0, 3), result.stderr
    summary = orjson.loads(result.stdout)
    # How long, how fast, how many manifests and bytes sent depend on how the run was cut up.
    for name in (
        "elapsed",
        "docs_per_second",
        "manifests_written",
        "bytes_stored",
        "would_store_bytes",
    ):
        summary.pop(name)
    return summary


@pytest.mark.parametrize("shard", [[], ["--shard", "1/2"]])
@pytest.mark.parametrize("skip_unchanged", [[], ["--skip-unchanged"]])
def test_the_summary_is_the_same_however_the_run_is_cut_up(
    run: Run, tmp_path: Path, shard: list[str], skip_unchanged: list[str]
) -> None:
    """Every key twice, far apart (a later batch stores it again), some lines bad: one process
    with batches of 1,000 or of 7, two processes, and a dry run all count the same: each line
    is read once and counted once, as stored, unchanged, duplicate, rejected or other shard's."""
    lines = [orjson.dumps({"fs_id": f"k{i % 40}", "n": i % 40}) for i in range(80)]
    lines[3] = b"not json"
    source = tmp_path / "docs.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    counter = iter(range(100))

    def put(*args: str) -> dict[str, object]:
        n = next(counter)
        where = ["--store", str(tmp_path / f"s{n}"), "--index", str(tmp_path / f"i{n}.sqlite3")]
        return _summary(run, str(source), *shard, *skip_unchanged, *where, *args)

    one = put()
    assert put("--batch-size", "7") == one
    assert put("--processes", "2") == one
    assert put("--processes", "2", "--batch-size", "7") == one
    dry = {**one, "dry_run": True, "stored": 0, "would_store": one["stored"]}
    assert put("--dry-run", "--batch-size", "7") == dry
    assert one["read"] == 80
    counted = ("stored", "unchanged", "duplicates", "rejected", "other_shards")
    assert sum(one[name] for name in counted) == 80  # type: ignore[misc]
    assert one["shard"] == (shard[1] if shard else None)


_OUTCOMES = ("stored", "unchanged", "duplicates", "rejected", "other_shards", "unstored")


def _good(start: int, stop: int) -> list[bytes]:
    return [orjson.dumps({"fs_id": f"k{i}"}) for i in range(start, stop)]


# (lines, --max-errors, the place of the reject that reaches it: each good line before it must
# be stored). Rejected by the parent (no key) or by a worker (a key no object may have).
_EARLY_STOPS = {
    "100 good, then a reject": ([*_good(0, 100), b"not json"], 1, 100),
    "two good, then a reject": ([b'{"fs_id":"a"}', b'{"fs_id":"b"}', b"bad1"], 1, 2),
    "1000 good, then a reject": ([*_good(0, 1000), b"not json"], 1, 1000),
    "a reject between 500 and 500": ([*_good(0, 500), b"not json", *_good(500, 1000)], 1, 500),
    "a worker's reject between 500 and 500": (
        [*_good(0, 500), b'{"fs_id": "a//b"}', *_good(500, 1000)],
        1,
        500,
    ),
    "the third of rejects every 150 lines": (
        _good(0, 150)
        + [b"[1,"]
        + _good(150, 300)
        + [b'{"fs_id": "x//y"}']
        + _good(300, 450)
        + [b'{"x": 1}']
        + _good(450, 1200)
        + [b"bad"] * 3,
        3,
        452,
    ),
}


@pytest.mark.parametrize("processes", ["2", "3"])
@pytest.mark.parametrize("case", list(_EARLY_STOPS))
def test_max_errors_stores_every_document_before_the_reject_that_reaches_it(
    run: Run, tmp_path: Path, case: str, processes: str
) -> None:
    """--max-errors over processes: every document before the reject that reaches the limit is
    stored and indexed, as in one process (lines handed to workers after it may be too), and
    each line counted as read is counted once, as stored, rejected...: nothing is dropped."""
    lines, limit, before = _EARLY_STOPS[case]
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    data = b"\n".join(lines) + b"\n"

    put = run(
        "put", "--processes", processes, "--max-errors", str(limit), "--json", *locations,
        input=data,
    )  # fmt: skip
    assert put.exit_code == ExitStatus.PARTIAL, put.stderr
    summary = orjson.loads(put.stdout)
    assert summary["stopped_early"] is True
    assert summary["rejected"] >= limit
    assert summary["read"] == sum(summary[name] for name in _OUTCOMES)
    assert summary["read"] >= before + 1
    good = re.compile(rb'\{"fs_id":"(k\d+|a|b)"\}')
    expected = {m[1] for m in map(good.fullmatch, lines[:before]) if m}
    assert len(expected) == (450 if limit == 3 else before)
    query = run("query", "--fields", "fs_id", *locations)
    assert query.exit_code == 0, query.stderr
    keys = {entry["fs_id"].encode() for entry in json_lines(query.stdout)}
    assert expected <= keys, f"{len(expected - keys)} documents before the reject lost"
    assert summary["stored"] == len(keys)
    count = run("query", "{}", "--count", *locations)
    assert int(count.stdout) == len(keys)
