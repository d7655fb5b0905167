"""No request hangs: S3 endpoints that stall or answer garbage fail within a bounded time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, jsonl
from tests.s3proxy import S3Proxy

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = "1"  # S3IDX_TIMEOUT for these tests, in seconds
BOUND = 60.0  # a hang is a process still running after this long


RESET = b"<reset>"  # RawServer's reply: reset the connection once the request is in


class RawServer:
    """A TCP server that reads a request and then answers with ``reply`` (None: never)."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            if self.reply == RESET:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                conn.close()  # a TCP reset: SO_LINGER on with a zero timeout
                return
            if self.reply is None:
                self._held.append(conn)  # accepted, never answered
                return
            conn.sendall(self.reply)
        except OSError:
            pass
        conn.close()


@pytest.fixture(params=[b"HTTP/1.1 100 Cont", None], ids=["partial-100-continue", "silent"])
def bad_server(request: pytest.FixtureRequest) -> Iterator[RawServer]:
    with RawServer(request.param) as server:
        yield server


def _run(
    home: Path,
    server: RawServer,
    transport: str,
    *args: str,
    documents: int = 1,
    deadline: str = DEADLINE,
) -> tuple[int, str, float]:
    status, _, err, elapsed = _run_out(
        home, server, transport, *args, documents=documents, deadline=deadline
    )
    return status, err, elapsed


def _run_out(
    home: Path,
    server: RawServer,
    transport: str,
    *args: str,
    documents: int = 1,
    deadline: str = DEADLINE,
) -> tuple[int, str, str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3IDX_")}
    env.update(S3IDX_HOME=str(home), PYTHONPATH=str(ROOT), S3IDX_TIMEOUT=deadline)
    source = home / "docs.jsonl"
    source.write_text("".join(f'{{"fs_id": "k{i}", "v": {i}}}\n' for i in range(documents)))
    argv = [a.replace("SOURCE", str(source)) for a in args]
    s3 = ("--store", "s3://bucket/docs", "--endpoint-url", server.url, "--transport", transport)
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "s3idx", *argv, *s3],
        env=env,
        capture_output=True,
        timeout=BOUND,
    )
    elapsed = time.monotonic() - started
    return process.returncode, process.stdout.decode(), process.stderr.decode(), elapsed


@pytest.mark.parametrize(
    ("transport", "command"),
    [
        ("boto3", ("put", "SOURCE")),  # a PUT with a body: where 100-continue was sent
        ("boto3", ("get", "a")),
        ("boto3", ("sync",)),
        ("obstore", ("put", "SOURCE")),
        ("http", ("put", "SOURCE")),
        ("obstore", ("rebuild-index",)),
    ],
    ids=lambda value: value if isinstance(value, str) else value[0],
)
def test_a_bad_endpoint_fails_within_the_deadline(
    tmp_path: Path, bad_server: RawServer, transport: str, command: tuple[str, ...]
) -> None:
    status, err, elapsed = _run(tmp_path, bad_server, transport, *command)

    assert status == ExitStatus.UNAVAILABLE, err
    assert "Traceback" not in err
    assert bad_server.connections >= 1
    if bad_server.reply is None:
        assert "cannot reach S3 at http://127.0.0.1" in err, err
        assert "timed out" in err, err
        assert "S3IDX_TIMEOUT" in err
        assert "gave up after 2 attempts" in err, err
    # The deadline of 1 s, retried once, with connection set-up: far below BOUND.
    assert elapsed < BOUND


# put's default --workers: uploads in flight at once in each process.
WORKERS = 8
TRANSPORTS = [("boto3", 1), ("obstore", 1), ("http", 1), ("http", 2)]


@pytest.mark.parametrize(
    ("transport", "processes"), TRANSPORTS, ids=[f"{t}-{p}" for t, p in TRANSPORTS]
)
def test_a_silent_endpoint_is_found_once_not_once_per_upload(
    tmp_path: Path, transport: str, processes: int
) -> None:
    deadline = 2.0
    with RawServer(None) as server:
        put = ("put", "SOURCE", "--json", "--processes", str(processes))
        status, out, err, elapsed = _run_out(
            tmp_path, server, transport, *put, documents=50, deadline=f"{deadline:g}"
        )

    assert status == ExitStatus.UNAVAILABLE, err
    summary = orjson.loads(out)
    assert summary["stored"] == 0
    assert "timed out (no answer within 2 s) (gave up after 2 attempts)" in summary["error"]
    # Each upload in flight when the server went silent is retried once, no more: the
    # documents behind them are never sent to it.
    assert summary["retries"] <= 2 * WORKERS * processes, summary
    # Two deadlines, and the interpreters' start (about one more): was 33 with http.
    assert elapsed < 6 * deadline, elapsed


@pytest.mark.parametrize("transport", ["boto3", "http"])
@pytest.mark.parametrize("reply", [b"", RESET], ids=["closed", "reset"])
def test_a_server_dropping_each_request_fails_as_boto3_does(
    tmp_path: Path, transport: str, reply: bytes
) -> None:
    with RawServer(reply) as server:
        put = ("put", "SOURCE", "--json")
        status, out, err, elapsed = _run_out(tmp_path, server, transport, *put, documents=20)

    assert status == ExitStatus.UNAVAILABLE, err
    summary = orjson.loads(out)
    assert summary["stored"] == 0
    assert f"connection to {server.url} was interrupted while working on" in summary["error"]
    assert summary["error"].endswith("(gave up after 8 attempts)"), summary["error"]
    # Eight attempts of the first upload to give up, seven retries, none for the others'
    # (at most one attempt each in flight at the same moment) beyond their own seven.
    assert 7 <= summary["retries"] <= 7 * WORKERS, summary
    assert "Traceback" not in err
    # Backoff sleeps of at most 0.1 + 0.2 + ... + 6.4 s: 12.7 s in all.
    assert elapsed < 30, elapsed


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_bad_timeout_setting_is_a_usage_error(tmp_path: Path, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3IDX_")}
    env.update(S3IDX_HOME=str(tmp_path), PYTHONPATH=str(ROOT), S3IDX_TIMEOUT=value)
    process = subprocess.run(
        [sys.executable, "-m", "s3idx", "info"], env=env, capture_output=True, timeout=BOUND
    )
    assert process.returncode == ExitStatus.USAGE
    assert b"S3IDX_TIMEOUT: expected a positive number of seconds" in process.stderr


def test_a_silent_mongodb_server_fails_within_the_deadline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3IDX_")}
    env.update(S3IDX_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    with RawServer(None) as server:
        index = server.url.replace("http://", "mongodb://") + "/db"
        process = subprocess.run(
            [sys.executable, "-m", "s3idx", "query", "{}", "--index", index],
            env=env,
            capture_output=True,
            timeout=BOUND,
        )
    assert process.returncode == ExitStatus.UNAVAILABLE, process.stderr
    assert b"cannot reach MongoDB at 127.0.0.1" in process.stderr
    assert server.connections >= 1


# --- a server that falls silent in the middle of a delete ----------------------------------


def _docs(keys: list[str]) -> list[dict[str, object]]:
    return [{"fs_id": key, "n": n} for n, key in enumerate(keys)]


@pytest.mark.parametrize("transport", ["boto3", "obstore"])
@pytest.mark.parametrize("by", ["filter", "keys"])
def test_a_store_falling_silent_under_a_delete_fails_it_within_about_two_deadlines(
    run: Run, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, transport: str, by: str
) -> None:
    if transport == "obstore":
        pytest.importorskip("obstore", reason="obstore is not installed")
    keys = [f"k{n:03d}" for n in range(300)]
    with S3Proxy(s3_endpoint) as proxy:
        where = ["--store", "s3://bucket/docs", "--endpoint-url", proxy.url]
        where += ["--transport", transport]
        stored = run("put", *where, "--create-bucket", "-q", input=jsonl(*_docs(keys)))
        assert stored.exit_code == 0, stored.stderr
        monkeypatch.setenv("S3IDX_TIMEOUT", DEADLINE)
        proxy.stalled = lambda method, path: method == "DELETE"
        chosen = ["--filter", "{}", "--all"] if by == "filter" else keys
        started = time.monotonic()
        stalled = run("delete", *where, *chosen)
        took = time.monotonic() - started
        deletes = proxy.requests["DELETE"]
        proxy.stalled = None
        # Once the server answers again, the next delete finishes what the first left.
        finished = run("delete", *where, "--filter", "{}", "--all", "--json")
        left = run("sync", *where, "--check")

    assert stalled.exit_code == ExitStatus.UNAVAILABLE, stalled.stderr
    assert "timed out" in stalled.stderr and "S3IDX_TIMEOUT" in stalled.stderr, stalled.stderr
    # Each key's request times out after 1 s, 16 at a time, retried once: a server that fell
    # silent for every key costs about two deadlines, not two per 16 keys of 300 (~40 s).
    assert took < 12, (took, stalled.stderr)
    assert deletes < 100, deletes  # the keys after the first silent ones were not sent
    assert "Traceback" not in stalled.stderr
    assert finished.exit_code == 0, finished.stderr
    assert orjson.loads(finished.stdout)["finished"] == len(keys)
    assert left.exit_code == 0, left.stdout + left.stderr


@pytest.mark.parametrize("transport", ["boto3", "obstore", "http"])
def test_a_put_whose_store_fell_silent_sends_no_manifest_after_its_uploads_timed_out(
    run: Run, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    """The store stops answering mid-put: the uploads under way time out (twice each) and
    the put fails. A manifest write started after that would wait out two more deadlines for
    nothing; its objects are counted as in no manifest instead."""
    if transport == "obstore":
        pytest.importorskip("obstore", reason="obstore is not installed")
    stalls: list[tuple[float, str]] = []
    sent = 0
    lock = threading.Lock()

    def stalled(method: str, path: str) -> bool:
        nonlocal sent
        if method != "PUT" or path.count("/") < 2:  # not the bucket's own PUT
            return False
        with lock:
            sent += 1
            if sent <= 150:
                return False
            stalls.append((time.monotonic(), path))
            return True

    with S3Proxy(s3_endpoint) as proxy:
        proxy.stalled = stalled
        monkeypatch.setenv("S3IDX_TIMEOUT", DEADLINE)
        where = ["--store", "s3://bucket/docs", "--endpoint-url", proxy.url]
        docs = _docs([f"k{n:04d}" for n in range(2000)])
        put = run("put", *where, "--transport", transport, "--create-bucket", input=jsonl(*docs))

    assert put.exit_code == ExitStatus.UNAVAILABLE, put.stderr
    assert "timed out" in put.stderr and "Traceback" not in put.stderr
    seen: set[str] = set()
    retries = []  # when an upload was sent the second time: its first attempt had timed out
    for t, path in stalls:
        if "/.s3idx/" not in path and path in seen:
            retries.append(t)
        seen.add(path)
    retried = retries[0]
    manifests = {path for _, path in stalls if "/.s3idx/manifests/" in path}
    for manifest in manifests:
        first = next(t for t, path in stalls if path == manifest)
        assert first < retried, "a manifest write was sent after the uploads had timed out"
    assert "in no manifest" in put.stderr, put.stderr
