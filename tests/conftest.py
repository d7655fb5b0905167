"""Shared fixtures: an isolated environment per test, and one store fixture per backend.

Plain helpers that tests import (``Run``, ``jsonl``, ``MongoServer``, ...) are in tests/helpers.py.

S3 tests talk HTTP to one moto server per test session (``moto_server``), reset between
tests by ``s3_endpoint``. Every test runs with fake AWS credentials and empty AWS config files,
so a developer's real ``~/.aws`` is never read and no request can reach real AWS by accident.
"""

from __future__ import annotations

import inspect
import logging
import os
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mongomock
import pytest
from typer.testing import CliRunner, Result

from s3idx.cli import app
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import ObjectStore
from s3idx.store.local import LocalStore
from tests.ferretdb import FerretDBServer
from tests.helpers import (
    MONGO_KINDS,
    REAL_MONGO_KINDS,
    MongoServer,
    OpenIndex,
    real_mongo_database,
    start_ferretdb,
)

STORE_KINDS = ["local", "s3", "obstore"]
S3_TEST_PREFIX = "sub/dir"  # a nested prefix, so every conformance test checks prefix handling
S3_TEST_REGION = "us-east-1"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the user's s3idx settings, data directory or config file."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if name.startswith("S3IDX_") and name != "S3IDX_TEST_MONGODB_URI":
            monkeypatch.delenv(name)
    monkeypatch.setenv("S3IDX_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    return home


@pytest.fixture(autouse=True)
def fake_aws_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake credentials and empty AWS config files; returns the directory holding the files.

    Every AWS_* variable of the developer's shell is removed first (profiles, endpoints, role
    settings), and the instance metadata service is switched off so a missing credential fails
    at once instead of after IMDS timeouts.
    """
    aws = tmp_path_factory.mktemp("aws")
    (aws / "config").write_text("")
    (aws / "credentials").write_text("")
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws / "credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return aws


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One moto server for the whole session, on a free loopback port; yields its URL."""
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO; that is noise in a failing test's output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def moto_api(endpoint: str, action: str, data: bytes = b"") -> None:
    """POST to moto's control API (``/moto-api/reset``, ``/moto-api/reset-auth``)."""
    # A form content type (urllib's default) would hide the body from moto's handler.
    request = urllib.request.Request(
        f"{endpoint}/moto-api/{action}",
        data=data,
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.fixture
def s3_endpoint(moto_server: str) -> str:
    """The moto server's URL, emptied of every bucket (for S3 and, later, CLI tests)."""
    moto_api(moto_server, "reset")
    return moto_server


@pytest.fixture
def moto_auth(s3_endpoint: str) -> Iterator[None]:
    """moto checks key ids and signatures during the test (by default it accepts anything)."""
    moto_api(s3_endpoint, "reset-auth", b"0")
    try:
        yield
    finally:
        moto_api(s3_endpoint, "reset-auth", b"inf")


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new empty bucket (in us-east-1) on the moto server; returns its name."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    # moto takes an unsigned PUT; a boto3 client would cost ~0.15 s of model loading a test.
    request = urllib.request.Request(f"{s3_endpoint}/{name}", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    return name


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """Each object-store backend in turn, empty."""
    if request.param == "local":
        backend: ObjectStore = LocalStore(tmp_path / "store")
    elif request.param == "s3":
        from s3idx.store.s3 import S3Store

        # Looked up only here, so local-only runs never start the moto server.
        s3 = S3Store(
            f"conformance-{uuid.uuid4().hex[:8]}",
            S3_TEST_PREFIX,
            endpoint_url=request.getfixturevalue("s3_endpoint"),
            region=S3_TEST_REGION,
        )
        # The store's own client makes the bucket: one boto3 client per test, not two.
        s3.connection.client.create_bucket(Bucket=s3.bucket)
        backend = s3
    elif request.param == "obstore":
        pytest.importorskip(
            "obstore", reason="obstore is not installed (pip install 's3idx[fast]')"
        )
        from s3idx.store.obstore_s3 import ObstoreS3Store

        fast = ObstoreS3Store(
            f"conformance-{uuid.uuid4().hex[:8]}",
            S3_TEST_PREFIX,
            endpoint_url=request.getfixturevalue("s3_endpoint"),
            region=S3_TEST_REGION,
        )
        fast.connection.client.create_bucket(Bucket=fast.bucket)
        backend = fast
    else:  # pragma: no cover - kinds are added with their backends
        raise AssertionError(request.param)
    yield backend
    backend.close()


@pytest.fixture
def run() -> Callable[..., Result]:
    """``run("put", "--field", "x", input=b"...")``: the result, stdout and stderr apart."""
    runner = CliRunner()

    def invoke(*args: str, input: bytes | str | None = None, **kwargs: Any) -> Result:
        return runner.invoke(app, list(args), input=input, catch_exceptions=False, **kwargs)

    return invoke


@pytest.fixture(params=["local", "s3"])
def put_through_cli(
    request: pytest.FixtureRequest, run: Callable[..., Result], tmp_path: Path
) -> Iterator[Callable[[bytes], tuple[list[str], ObjectStore]]]:
    """``put_through_cli(lines)``: ``s3idx put --field n`` of the JSON lines into a local store,
    then into S3, with a SQLite index; returns the location flags and the store, opened."""
    opened: list[ObjectStore] = []

    def put(lines: bytes) -> tuple[list[str], ObjectStore]:
        index = ["--index", str(tmp_path / "i.sqlite3")]
        if request.param == "local":
            where = ["--store", str(tmp_path / "store"), *index]
            store: ObjectStore = LocalStore(tmp_path / "store")
        else:
            from s3idx.store.s3 import S3Store

            endpoint = request.getfixturevalue("s3_endpoint")
            bucket = request.getfixturevalue("s3_bucket")
            where = ["--store", f"s3://{bucket}/{S3_TEST_PREFIX}", "--endpoint-url", endpoint]
            where += index
            store = S3Store(bucket, S3_TEST_PREFIX, endpoint_url=endpoint, region=S3_TEST_REGION)
        opened.append(store)
        done = run("put", *where, "--field", "n", "-q", input=lines)
        assert done.exit_code == 0, done.stderr
        return where, store

    yield put
    for store in opened:
        store.close()


@pytest.fixture
def mongomock_client(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh in-memory MongoDB, patched to accept what current pymongo sends it."""
    builder = mongomock.collection.BulkOperationBuilder
    original = builder.add_replace
    if "sort" not in inspect.signature(original).parameters:
        # pymongo >= 4.11 passes sort= to add_replace; mongomock 4.3 does not accept it
        # (mongomock/mongomock#912). s3idx never sorts a replace, so refuse anything else.
        def add_replace(self: Any, *args: Any, sort: Any = None, **kwargs: Any) -> Any:
            if sort is not None:
                raise NotImplementedError("mongomock cannot sort a replace")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(builder, "add_replace", add_replace)
    return mongomock.MongoClient()


@pytest.fixture
def mongomock_server(mongomock_client: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every ``mongodb://`` location the CLI opens reaches one in-memory MongoDB."""
    from s3idx.index import mongo

    monkeypatch.setattr(mongo, "_connect", lambda uri, timeout: mongomock_client)
    return mongomock_client


# --- MongoDB servers: mongomock, FerretDB (the real wire protocol), a real MongoDB -------------


@pytest.fixture(scope="session")
def ferretdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDBServer]:
    """One FerretDB server for the whole session, on a free loopback port."""
    server = start_ferretdb(tmp_path_factory.mktemp("ferretdb"))
    yield server
    server.stop()


@pytest.fixture(params=MONGO_KINDS)
def mongo_server(request: pytest.FixtureRequest) -> Iterator[MongoServer]:
    """Each MongoDB server in turn, with a fresh database: mongomock, FerretDB, real MongoDB."""
    if request.param == "mongomock":
        client = request.getfixturevalue("mongomock_server")
        yield MongoServer("mongomock", "mongodb://localhost/s3idx_test", "s3idx_test", client)
        return
    with real_mongo_database(request.param, request) as server:
        yield server


@pytest.fixture(params=REAL_MONGO_KINDS)
def real_mongo_server(request: pytest.FixtureRequest) -> Iterator[MongoServer]:
    """FerretDB, then the real MongoDB: servers other processes can reach too."""
    with real_mongo_database(request.param, request) as server:
        yield server


@pytest.fixture
def index_kind() -> str:
    """The index backend of ``indexes``: a test parametrizes it (sqlite, mongomock, ferretdb,
    mongodb)."""
    return "sqlite"


@pytest.fixture
def indexes(index_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenIndex]:
    """Opens a new connection to the test's one index (each writer has its own)."""
    if index_kind == "sqlite":
        yield lambda: SqliteIndex(tmp_path / "index.sqlite3")
        return
    from s3idx.index.mongo import MongoIndex

    if index_kind == "mongomock":
        request.getfixturevalue("mongomock_server")
        yield lambda: MongoIndex("mongodb://localhost/s3idx_test", "s3idx_test")
        return
    with real_mongo_database(index_kind, request) as server:
        yield lambda: MongoIndex(server.uri, server.database)
