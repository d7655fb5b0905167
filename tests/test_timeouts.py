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

import pytest

from s3idx.errors import ExitStatus

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = "1"  # S3IDX_TIMEOUT for these tests, in seconds
BOUND = 60.0  # a hang is a process still running after this long


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


def _run(home: Path, server: RawServer, transport: str, *args: str) -> tuple[int, str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3IDX_")}
    env.update(S3IDX_HOME=str(home), PYTHONPATH=str(ROOT), S3IDX_TIMEOUT=DEADLINE)
    source = home / "docs.jsonl"
    source.write_text('{"fs_id": "a", "v": 1}\n')
    argv = [a.replace("SOURCE", str(source)) for a in args]
    s3 = ("--store", "s3://bucket/docs", "--endpoint-url", server.url, "--transport", transport)
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "s3idx", *argv, *s3],
        env=env,
        capture_output=True,
        timeout=BOUND,
    )
    return process.returncode, process.stderr.decode(), time.monotonic() - started


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
