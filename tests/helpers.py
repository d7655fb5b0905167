"""Helpers the tests import: plain functions and types, no fixtures (those are in conftest.py)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from typer.testing import Result

from s3idx import Engine, Events
from s3idx.environment import Environment
from s3idx.errors import ObjectNotFoundError
from s3idx.index.base import Index
from tests.ferretdb import FerretDBServer, FerretDBUnavailable, ensure_binary, under_ci

# --- s3idx in other processes, and the promise checked after them --------------------------------

ROOT = Path(__file__).resolve().parent.parent


def subprocess_env(home: Path) -> dict[str, str]:
    """The environment for an s3idx subprocess: no S3IDX_* of the caller's, this checkout first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3IDX_")}
    env["S3IDX_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT)
    return env


def unprivileged_prefix() -> list[str]:
    """The command prefix that makes a subprocess subject to file permissions: nothing for a
    user; for root, ``setpriv`` without the two capabilities that pass every file check
    (skipped where setpriv is not installed)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root passes every file permission check, and setpriv is not installed")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


def entries_and_objects(engine: Engine) -> tuple[int, int]:
    """(entries, objects), once every entry's object is found to exist (else AssertionError)."""
    keys = [e["fs_id"] for e in engine.query({}, fields=["fs_id"])]
    for key in keys:
        try:
            engine.store.head(key)
        except ObjectNotFoundError:
            raise AssertionError(f"entry {key} points at a missing object") from None
    return len(keys), sum(1 for _ in engine.store.list_objects())


# --- CLI: the ``run`` fixture's type and JSON lines in and out ----------------------------------

Run = Callable[..., Result]
OpenIndex = Callable[[], Index]  # a new connection to a test's one index


def json_lines(text: str) -> list[Any]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def jsonl(*documents: Any) -> bytes:
    return b"".join(orjson.dumps(d) + b"\n" for d in documents)


def s3_locations(endpoint: str, index: Path, transport: str | None = None) -> list[str]:
    """The flags of the store ``s3://bucket/docs`` at ``endpoint`` (moto, or a proxy before
    it) with a SQLite index; on ``transport`` when given (obstore: skipped if not installed)."""
    if transport == "obstore":
        pytest.importorskip("obstore", reason="not installed (pip install 's3idx[fast]')")
    where = ["--store", "s3://bucket/docs", "--endpoint-url", endpoint, "--index", str(index)]
    return where if transport is None else [*where, "--transport", transport]


def put_on_s3(run: Run, endpoint: str, index: Path, documents: list[Any]) -> Path:
    """``documents`` stored on ``s3://bucket/docs`` (made if missing), field ``v`` indexed in
    ``index``; returns ``index``."""
    where = s3_locations(endpoint, index)
    result = run("put", *where, "--create-bucket", "--field", "v", input=jsonl(*documents))
    assert result.exit_code == 0, result.stderr
    return index


def memory_environment(
    stdin: bytes = b"",
    *,
    stdin_isatty: bool = False,
    stdout_isatty: bool = False,
    stderr_isatty: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Environment:
    """An Environment of in-memory streams, for ``cli.main(args, env=...)`` or ``run(obj=...)``.

    Read what was written with ``written(env.stdout)`` / ``written(env.stderr)``. Settings come
    from ``environ``, by default the test's own (isolated) environment.
    """
    return Environment(
        stdin=io.BytesIO(stdin),
        stdout=io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline=""),
        stderr=io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline=""),
        stdin_isatty=stdin_isatty,
        stdout_isatty=stdout_isatty,
        stderr_isatty=stderr_isatty,
        environ=os.environ if environ is None else environ,
    )


def written(stream: Any) -> str:
    """Everything written so far to a stream of ``memory_environment``."""
    stream.flush()
    return str(stream.buffer.getvalue().decode())


# --- MongoDB servers: mongomock, FerretDB (the real wire protocol), a real MongoDB -------------

MONGODB_URI_VARIABLE = "S3IDX_TEST_MONGODB_URI"
MONGODB_SKIP_REASON = f"set {MONGODB_URI_VARIABLE} to run against a real MongoDB"
MONGO_KINDS = ["mongomock", "ferretdb", "mongodb"]
REAL_MONGO_KINDS = ["ferretdb", "mongodb"]  # the ones another process can reach


def start_ferretdb(workdir: Path) -> FerretDBServer:
    """A FerretDB server of its own (skipped, or failed under CI, where it cannot run)."""
    try:
        return FerretDBServer(ensure_binary(), workdir)
    except FerretDBUnavailable as exc:
        if under_ci():
            pytest.fail(f"{exc} (CI=true: the FerretDB tests must run, not be skipped)")
        pytest.skip(str(exc))


@dataclass
class MongoServer:
    """A MongoDB-protocol server with one fresh database for the current test."""

    kind: str
    uri: str  # mongodb://HOST/DATABASE, as given to --index
    database: str
    client: Any  # a client on the server, to look behind s3idx's back


def with_database(uri: str, database: str) -> str:
    """``uri`` naming ``database`` (its path), keeping credentials and options."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


def fresh_database_name() -> str:
    return f"s3idx_test_{uuid.uuid4().hex[:16]}"


@contextmanager
def real_mongo_database(kind: str, request: pytest.FixtureRequest) -> Iterator[MongoServer]:
    """A fresh database on FerretDB or the real MongoDB, dropped when the test ends."""
    import pymongo

    if kind == "ferretdb":
        base = request.getfixturevalue("ferretdb_server").uri
    else:
        base = os.environ.get(MONGODB_URI_VARIABLE, "")
        if not base:
            pytest.skip(MONGODB_SKIP_REASON)
    database = fresh_database_name()
    with pymongo.MongoClient(base, serverSelectionTimeoutMS=5000, tz_aware=True) as client:
        try:
            yield MongoServer(kind, with_database(base, database), database, client)
        finally:
            client.drop_database(database)


class StopAfter(Events):
    """Sets ``stop`` at the ``batches``-th progress report: a run interrupted part way."""

    def __init__(self, stop: threading.Event, batches: int) -> None:
        self.stop, self.left = stop, batches

    def progress(self, done: int, total: int | None, detail: dict[str, int]) -> None:
        self.left -= 1
        if self.left == 0:
            self.stop.set()


def moto_iam_key(endpoint: str, user: str, actions: list[str]) -> tuple[str, str]:
    """A new IAM user on the moto server allowed ``actions`` (on every resource): its access
    key id and secret. Three requests, each unchecked while moto is not checking signatures."""
    import json

    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
    }
    iam.put_user_policy(UserName=user, PolicyName="allowed", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@contextmanager
def kept_signal_handlers() -> Iterator[None]:
    """``cli.main`` installs its own handlers for the process's stop signals: put back the
    ones there were (pytest's), whatever the test did."""
    stops = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    saved = {signum: signal.getsignal(signum) for signum in stops}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def main_status(env: Environment, *args: str) -> int:
    """The exit status of ``cli.main(args)`` run in ``env``."""
    from s3idx import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(list(args), env=env)
    code = exited.value.code
    return code if isinstance(code, int) else 0


def run_in_fork(child: Callable[[], None], timeout: float = 60) -> None:
    """Run ``child`` in a process forked from this one; fail when it raises, or when it is
    still running after ``timeout`` seconds (then it is killed: a hang fails, never blocks)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.close(read)
            child()
            status = 0
        except BaseException:
            os.write(write, traceback.format_exc().encode()[-60_000:])
        finally:
            os._exit(status)
    os.close(write)
    deadline = time.monotonic() + timeout
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the forked child was still running after {timeout:g} s")
            time.sleep(0.05)
        with os.fdopen(read, "rb") as pipe:
            read = -1
            failure = pipe.read().decode(errors="replace")
    finally:
        if read != -1:
            os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0, failure or f"child status {status}"
