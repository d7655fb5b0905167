"""Real processes: a second Ctrl-C aborts every command at once, even on a server that stalls."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx.errors import ExitStatus, ObjectNotFoundError
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.s3 import S3Store
from tests.s3proxy import S3Proxy
from tests.test_timeouts import RawServer

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ABORT_BOUND = 5.0  # seconds from the second signal to the end of the process
DOCUMENTS = 60


def _lines(count: int) -> bytes:
    return b"".join(orjson.dumps({"fs_id": f"k{i:05d}", "v": i}) + b"\n" for i in range(count))


def _s3idx(home: Path, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3IDX_")}
    env.update(S3IDX_HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "s3idx", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.fixture
def slow_s3(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> Iterator[tuple[S3Proxy, Path]]:
    """A bucket holding DOCUMENTS documents and their index, behind a proxy made slow later."""
    source = tmp_path / "docs.jsonl"
    source.write_bytes(_lines(DOCUMENTS))
    put = _s3idx(
        tmp_path, "put", str(source), "--field", "v", "-q", *_locations(s3_bucket, s3_endpoint)
    )
    _, err = put.communicate(timeout=60)
    assert put.returncode == 0, err
    with S3Proxy(s3_endpoint) as proxy:
        yield proxy, tmp_path


def _locations(bucket: str, endpoint: str) -> tuple[str, ...]:
    return ("--store", f"s3://{bucket}/docs", "--endpoint-url", endpoint)


COMMANDS = {
    "put": ("put", "BIG", "--field", "v"),
    "put --json": ("put", "BIG", "--field", "v", "--json"),
    "put --transport http": ("put", "BIG", "--field", "v", "--transport", "http"),
    "get": ("get", *(f"k{i:05d}" for i in range(DOCUMENTS))),
    "query --full": ("query", "--full"),
    "delete": ("delete", "--filter", '{"v": {"$lt": 30}}'),
    "rebuild-index": ("rebuild-index",),
    "sync --json": ("sync", "--json"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_second_signal_aborts_at_once_even_on_a_stalled_server(
    slow_s3: tuple[S3Proxy, Path], s3_bucket: str, command: str
) -> None:
    proxy, home = slow_s3
    big = home / "big.jsonl"
    big.write_bytes(_lines(5000))
    args = [str(big) if a == "BIG" else a for a in COMMANDS[command]]
    rng = random.Random(f"{command}-{os.getpid()}")
    proxy.delay = 3.0  # every worker waits on a request when the signals come
    for _ in range(3 if command.startswith("put") else 1):
        started = proxy.requests.total()
        process = _s3idx(home, *args, *_locations(s3_bucket, proxy.url))
        deadline = time.monotonic() + 30
        while proxy.requests.total() == started and time.monotonic() < deadline:
            time.sleep(0.02)  # the command has begun talking to S3
        time.sleep(rng.uniform(0.0, 1.0))
        first = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
        process.send_signal(first)
        # Apart by more than the main thread's latency: two signals both pending when it next
        # runs Python code reach their handlers in signal-number order (SIGINT before
        # SIGTERM), whichever came first, so the first would be taken for the second (CI
        # saw 130 for a SIGTERM then SIGINT sent a moment apart).
        time.sleep(rng.uniform(0.1, 0.6))
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            out, err = process.communicate(timeout=ABORT_BOUND)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise AssertionError(
                f"{command}: still running {ABORT_BOUND} s after a second signal"
            ) from None
        assert time.monotonic() - sent < ABORT_BOUND
        expected = {
            signal.SIGTERM: ExitStatus.TERMINATED,
            signal.SIGHUP: ExitStatus.HANGUP,
        }.get(first, ExitStatus.INTERRUPTED)
        assert process.returncode == expected, err
        assert b"Traceback" not in err, err
        if "--json" in args:
            summary = orjson.loads(out)  # exactly one document, even after an abort
            assert summary["exit_status"] == expected
            assert summary["error"] == "aborted", summary
            # ... with the counts reached so far, as a failure's document has them: put's from
            # its first line read (sync may still be preparing, with none reached yet)
            if args[0] == "put" or "command" in summary:
                assert summary["command"] == args[0], summary
    proxy.delay = 0.0
    _assert_every_entry_has_its_object(home, s3_bucket, proxy.url)
    if command == "delete":
        # An aborted delete leaves objects journaled as being deleted, their entries gone: the
        # next sync finishes the delete instead of adopting them back.
        sync = _s3idx(home, "sync", "--json", *_locations(s3_bucket, proxy.url))
        out, err = sync.communicate(timeout=60)
        assert sync.returncode == 0, err
        assert orjson.loads(out)["added"] == 0
        _assert_every_entry_has_its_object(home, s3_bucket, proxy.url)


def _assert_every_entry_has_its_object(home: Path, bucket: str, endpoint: str) -> None:
    store = S3Store(bucket, "docs", endpoint_url=endpoint)
    with SqliteIndex(home / "index.sqlite3") as index:
        for entry in index.find({}, fields=["fs_id"]):
            try:
                store.head(entry["fs_id"])
            except ObjectNotFoundError:
                raise AssertionError(f"entry {entry['fs_id']} has no object") from None
    store.close()


@pytest.mark.parametrize("transport", ["boto3", "http"])
def test_first_signal_on_a_silent_server_stops_within_the_deadlines_of_the_uploads_under_way(
    tmp_path: Path, transport: str
) -> None:
    deadline = 2.0
    big = tmp_path / "big.jsonl"
    big.write_bytes(_lines(5000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3IDX_")}
    env.update(S3IDX_HOME=str(tmp_path), PYTHONPATH=str(ROOT), S3IDX_TIMEOUT=f"{deadline:g}")
    with RawServer(None) as server:
        command = ["put", str(big), "--json", "--transport", transport]
        process = subprocess.Popen(
            [sys.executable, "-m", "s3idx", *command, *_locations("bucket", server.url)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        started = time.monotonic()
        while server.connections == 0 and time.monotonic() - started < 30:
            time.sleep(0.02)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        stopped = time.monotonic() - sent

    # The uploads under way end: their attempt, and one retry of it (a timeout is retried
    # once), then the run fails; nothing queued behind them is sent. Was 8 x 2 deadlines.
    assert stopped < 4 * deadline, stopped
    assert process.returncode in (ExitStatus.TERMINATED, ExitStatus.UNAVAILABLE), err
    assert b"Traceback" not in err
    summary = orjson.loads(out)
    assert summary["stored"] == 0
    assert summary["retries"] <= 8, summary


def test_a_first_signal_to_delete_json_still_reports_the_counts_reached(
    slow_s3: tuple[S3Proxy, Path], s3_bucket: str
) -> None:
    """delete does not cooperate with a first signal (it stops at once): its one document
    still holds what it had deleted, beside the error, as every failure's does."""
    proxy, home = slow_s3
    proxy.delay = 0.3
    process = _s3idx(
        home, "delete", "--filter", "{}", "--all", "--json", *_locations(s3_bucket, proxy.url)
    )
    deadline = time.monotonic() + 30
    while proxy.requests.total() < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == ExitStatus.INTERRUPTED, err
    summary = orjson.loads(out)
    assert (summary["command"], summary["error"]) == ("delete", "interrupted"), summary
    assert summary["exit_status"] == ExitStatus.INTERRUPTED
    assert isinstance(summary["deleted"], int)
    assert err.decode().endswith("s3idx: interrupted\n"), err


class _TricklingServer:
    """Answers HEAD at once; answers anything else with a status line, then one header line
    every 0.2 s for ever: never silent, so no read timeout fires, never done."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.trickling = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: Any) -> None:
        with conn:
            try:
                while request := conn.recv(65536):
                    if request.startswith(b"HEAD"):
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        continue
                    conn.sendall(b"HTTP/1.1 200 OK\r\n")
                    self.trickling.set()
                    while True:
                        conn.sendall(b"X-Slow: a\r\n")
                        time.sleep(0.2)
            except OSError:
                return

    def close(self) -> None:
        self._sock.close()


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_a_first_signal_stops_get_at_once_on_a_server_that_trickles(
    tmp_path: Path, first: signal.Signals
) -> None:
    """README: a first signal stops the commands that do not cooperate at once. A worker
    reading an answer that never ends (and is never silent) must not hold the stop: a cron
    job's `timeout` sends one SIGTERM."""
    server = _TricklingServer()
    try:
        process = _s3idx(
            tmp_path, "get", "a", "b", "--store", "s3://bucket/p", "--endpoint-url", server.url
        )
        assert server.trickling.wait(30), "get never asked for an object"
        time.sleep(0.5)
        process.send_signal(first)
        try:
            _, err = process.communicate(timeout=ABORT_BOUND)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise AssertionError(f"get still running {ABORT_BOUND} s after one signal") from None
    finally:
        server.close()
    expected = ExitStatus.TERMINATED if first == signal.SIGTERM else ExitStatus.INTERRUPTED
    assert process.returncode == expected, err
    assert err.decode().endswith("s3idx: interrupted\n"), err


@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGINT, ExitStatus.INTERRUPTED), (signal.SIGTERM, ExitStatus.TERMINATED)],
)
def test_a_signal_while_the_command_starts_is_an_exit_status_not_a_traceback(
    tmp_path: Path, signum: int, status: ExitStatus
) -> None:
    """A signal during start-up (imports, parsing: before the command's own handling) ends the
    command with its exit status and one line, never a traceback or a death by the signal.
    Sent once s3idx's imports are under way (orjson, which the command line imports, is mapped
    into the process: before that, Python itself is starting), after a random delay."""
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc to see the imports start")
    source = tmp_path / "docs.jsonl"
    source.write_bytes(_lines(3))
    put = _s3idx(tmp_path, "put", str(source), "-q")
    assert put.wait(timeout=60) == 0
    seen: set[int] = set()
    for round_ in range(12):
        command = _s3idx(tmp_path, "info", "--json")
        maps = Path(f"/proc/{command.pid}/maps")
        deadline = time.monotonic() + 30
        while b"orjson" not in maps.read_bytes() and command.poll() is None:
            assert time.monotonic() < deadline, "s3idx never imported orjson"
            time.sleep(0.001)
        time.sleep(random.uniform(0.0, 0.1) if round_ % 3 else 0.0)
        command.send_signal(signum)
        out, err = command.communicate(timeout=60)
        assert b"Traceback" not in err, err.decode()
        if command.returncode == -signum:
            # Python restores the default handlers as the interpreter ends: a signal then
            # kills it, after the command finished and wrote all it had to.
            assert orjson.loads(out)["exit_status"] == ExitStatus.OK
            continue
        assert command.returncode in (ExitStatus.OK, status), (command.returncode, err)
        if command.returncode == status:
            assert err.strip().endswith((b"s3idx: aborted", b"s3idx: interrupted")), err
            assert orjson.loads(out)["exit_status"] == status
        seen.add(command.returncode)
    assert status in seen  # the signal met the start at least once


_SIGNAL_WHILE_BUILDING = """
import os, signal, sys
from s3idx import cli, entry

build = cli._click_group
signum = getattr(signal, sys.argv[1])

def build_after_a_signal(app):
    os.kill(os.getpid(), signum)
    return build(app)

cli._click_group = build_after_a_signal
sys.argv = ["s3idx", *sys.argv[2:]]
entry.main()
"""


@pytest.mark.parametrize(
    ("signame", "args", "document"),
    [
        ("SIGTERM", ["info", "--json"], True),
        ("SIGINT", ["verify", "--json"], True),
        ("SIGHUP", ["sync", "--check", "--json"], True),
        ("SIGTERM", ["query", "{}", "--json"], False),  # JSON lines: no summary document
        ("SIGTERM", ["get", "k", "--", "--json"], False),  # a key named --json
    ],
)
def test_a_signal_while_the_command_line_is_read_writes_what_json_promises(
    tmp_path: Path, signame: str, args: list[str], document: bool
) -> None:
    """A signal after the imports, while the command line is read (before the command's own
    handling): the exit status of that signal, and the one --json document exactly when the
    command promises one, as a signal a moment later would."""
    signum = getattr(signal, signame)
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3IDX_")}
    env.update(S3IDX_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _SIGNAL_WHILE_BUILDING, signame, *args],
        env=env,
        capture_output=True,
        timeout=60,
    )
    status = {
        signal.SIGINT: ExitStatus.INTERRUPTED,
        signal.SIGTERM: ExitStatus.TERMINATED,
        signal.SIGHUP: ExitStatus.HANGUP,
    }[signum]
    assert done.returncode == status, done.stderr
    assert done.stderr == b"s3idx: aborted\n"
    if document:
        assert orjson.loads(done.stdout) == {"error": "aborted", "exit_status": status}
    else:
        assert done.stdout == b""
