"""What is particular to the MongoDB index: layout, indexes, URIs, secrets and error mapping."""

from __future__ import annotations

import time
import warnings
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import bson
import dns.resolver
import mongomock
import orjson
import pytest
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    InvalidName,
    InvalidOperation,
    InvalidURI,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from s3idx.backends import open_index
from s3idx.config import Settings, redact
from s3idx.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    DamagedIndexError,
    ExitStatus,
    IndexSettingsError,
    InvalidFilterError,
    S3idxError,
    TransientError,
    UsageError,
)
from s3idx.index import mongo
from s3idx.index.base import Bookkeeping, Index, IndexSettings
from s3idx.index.mongo import MongoIndex, plain
from s3idx.index.mongo_errors import translate_error
from s3idx.index.mongo_location import MongoLocation
from tests.helpers import Run

BOOKKEEPING = {"etag": '"e"', "size": 3, "sha256": None, "codec": "json"}
WHEN = datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)


def entry(key: str, key_field: str = "fs_id", **fields: Any) -> dict[str, Any]:
    return {key_field: key, **fields, "last_updated": WHEN, "_s3idx": dict(BOOKKEEPING)}


@pytest.fixture
def client(mongomock_client: Any) -> Any:
    return mongomock_client


@pytest.fixture
def index(client: Any) -> MongoIndex:
    return MongoIndex("mongodb://user:secret@db.example:27017/test", "test", client=client)


def test_it_is_an_index(index: MongoIndex) -> None:
    assert isinstance(index, Index)


# --- unreachable servers and secrets ---------------------------------------------------------

UNREACHABLE = "mongodb://user:secret@127.0.0.1:1/db"


def assert_no_secret(error: BaseException, *secrets: str) -> None:
    texts = [str(error), repr(error.args), getattr(error, "message", ""), str(error.__cause__)]
    for secret in secrets:
        for text in texts:
            assert secret not in text


@pytest.mark.parametrize(
    "operation",
    [
        lambda i: i.settings(),
        lambda i: i.configure("fs_id", ["a"]),
        lambda i: list(i.find({"a": 1})),
        lambda i: i.upsert([entry("k")]),
    ],
    ids=["settings", "configure", "find", "upsert"],
)
def test_an_unreachable_server_is_unavailable_quickly(operation: Any) -> None:
    index = MongoIndex(UNREACHABLE, "db", server_selection_timeout_ms=100)
    assert "secret" not in index.location
    start = time.monotonic()

    with pytest.raises(BackendUnavailableError) as excinfo:
        operation(index)

    assert time.monotonic() - start < 3
    error = excinfo.value
    assert error.exit_status == ExitStatus.UNAVAILABLE
    assert error.message.startswith("cannot reach MongoDB at 127.0.0.1:1: ")
    assert "Topology Description" not in error.message
    assert error.hint is not None and index.location in error.hint
    assert error.__cause__ is None and error.__suppress_context__
    assert_no_secret(error, "secret")
    index.close()


def test_a_timeout_in_the_uri_wins_over_the_default() -> None:
    index = MongoIndex(
        "mongodb://127.0.0.1:1/db?serverSelectionTimeoutMS=100",
        "db",
        server_selection_timeout_ms=60_000,
    )
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError):
        index.settings()
    assert time.monotonic() - start < 3
    index.close()


@pytest.mark.parametrize(
    ("uri", "secrets"),
    [
        ("mongodb://user:secret@/db", ["secret"]),
        ("mongodb://user:secret@host:notaport/db", ["secret"]),
        ("mongodb://user:sec@ret@host/db", ["sec@ret"]),
        (
            "mongodb://user:secret@127.0.0.1:1/db?tls=true&tlsCertificateKeyFile=/nonexistent.pem"
            "&tlsCertificateKeyFilePassword=hunter2",
            ["secret", "hunter2"],
        ),
    ],
)
def test_a_bad_uri_is_a_usage_error_without_secrets(uri: str, secrets: list[str]) -> None:
    with pytest.raises(UsageError) as excinfo:
        MongoIndex(uri, "db")

    assert excinfo.value.message.startswith("invalid MongoDB location mongodb://user:***@")
    assert_no_secret(excinfo.value, *secrets)


def test_an_invalid_database_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="invalid MongoDB database name 'bad/name'"):
        MongoIndex("mongodb://127.0.0.1:1/x", "bad/name")


# --- names, as MongoDB takes them, checked before connecting -------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "it is empty"),
        (".", "it starts or ends with '.'"),
        ("a.", "it starts or ends with '.'"),
        (".a", "it starts or ends with '.'"),
        ("a..b", "it contains '..'"),
        ("a$b", "it contains '$'"),
        ("a\0b", "it contains a NUL character"),
        ("system.x", "names starting with 'system.' are MongoDB's own"),
        ("a\udcffb", "it is not valid UTF-8"),
    ],
)
def test_collection_names_mongodb_refuses_are_usage_errors(name: str, reason: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        MongoIndex("mongodb://127.0.0.1:1/db", "db", name)  # nothing listens: no connection
    assert excinfo.value.message == f"invalid MongoDB collection name {name!r}: {reason}"
    assert excinfo.value.hint == "choose another --collection"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("d" * 64, "it is 64 bytes; MongoDB allows 63"),
        ("é" * 32, "it is 64 bytes; MongoDB allows 63"),
        ("a.b", "it contains '.' (not allowed: / \\ . \" $, space, NUL)"),
        ("a b", "it contains ' ' (not allowed: / \\ . \" $, space, NUL)"),
        ("a$b", "it contains '$' (not allowed: / \\ . \" $, space, NUL)"),
        ('a"b', "it contains '\"' (not allowed: / \\ . \" $, space, NUL)"),
        ("a\\b", "it contains '\\\\' (not allowed: / \\ . \" $, space, NUL)"),
    ],
)
def test_database_names_mongodb_refuses_are_usage_errors(name: str, reason: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        MongoIndex("mongodb://127.0.0.1:1/db", name)
    assert excinfo.value.message == f"invalid MongoDB database name {name!r}: {reason}"


def test_the_longest_names_mongodb_takes_are_accepted(client: Any) -> None:
    # A rebuild stages in "<collection>__rebuild_<12 characters of its run>".
    database, collection = "d" * 63, "c" * (255 - 64 - len("__rebuild_123456789abc"))
    index = MongoIndex("mongodb://h/db", database, collection, client=client)
    index.configure("fs_id", [])


def test_a_namespace_too_long_for_the_rebuild_collection_is_a_usage_error() -> None:
    collection = "c" * (255 - 64 - len("__rebuild_123456789abc") + 1)
    with pytest.raises(UsageError) as excinfo:
        MongoIndex("mongodb://127.0.0.1:1/db", "d" * 63, collection)
    assert excinfo.value.message == (
        f"MongoDB collection name {collection!r} is too long for database {'d' * 63!r}: with "
        "'__rebuild_<run>', which s3idx adds for a rebuild, the namespace is 256 bytes; MongoDB "
        "allows 255"
    )


@pytest.mark.parametrize("collection", [".", "a.", "a..b"])
def test_put_with_an_invalid_collection_name_exits_2(
    run: Run, mongomock_server: Any, tmp_path: Path, collection: str
) -> None:
    index = "mongodb://u:pw@127.0.0.1:27999/db3"
    args = ["--store", str(tmp_path / "st"), "--index", index, "--collection", collection]
    result = run("put", *args, input=b'{"fs_id": "a"}\n')
    assert result.exit_code == ExitStatus.USAGE
    assert f"invalid MongoDB collection name {collection!r}" in result.stderr
    assert "internal error" not in result.stderr


def test_a_70_character_database_name_exits_2_before_connecting(run: Run, tmp_path: Path) -> None:
    index = "mongodb://127.0.0.1:1/" + "d" * 70  # nothing listens there
    result = run("put", "--store", str(tmp_path / "st"), "--index", index, input=b"")
    assert result.exit_code == ExitStatus.USAGE
    assert f"invalid MongoDB database name {'d' * 70!r}: it is 70 bytes" in result.stderr


# --- URI options: refused where pymongo would warn and go on without them -------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("tls=maybe", "URI option 'tls': The value of tls must be 'true' or 'false'"),
        (
            "serverSelectionTimeoutMS=abc",
            "URI option 'serverSelectionTimeoutMS': serverselectiontimeoutms must be an "
            "integer or float",
        ),
        ("appname=x&tlss=true", "URI option 'tlss': unknown option; did you mean tls, ssl"),
        ("compressors=foo", "URI option 'compressors': Unsupported compressor"),
        ("retryWrites=1", "URI option 'retryWrites': The value of retrywrites must be"),
        ("tls=true&tls=false", "Duplicate URI option 'tls'."),
        ("tls=true&ssl=false", "Can not specify conflicting values for URI options ssl and tls."),
        (
            "authMechanismProperties=AWS_SESSION_TOKEN",
            "URI option 'authMechanismProperties': its value is not valid (not shown: it may "
            "hold a secret)",
        ),
        (
            "authMechanismProperties=garbage:hunter2token",
            "URI option 'authMechanismProperties': its value is not valid (not shown: it may "
            "hold a secret)",
        ),
    ],
)
def test_a_uri_option_pymongo_would_ignore_is_a_usage_error(
    mongomock_server: Any, options: str, message: str
) -> None:
    uri = f"mongodb://user:s3cr3tpw@db.example/db?{options}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning escapes
        with pytest.raises(UsageError) as excinfo:
            MongoIndex(uri, "db")
    error = excinfo.value
    location = "mongodb://user:***@db.example/db (collection s3idx)"
    assert error.message.startswith(f"invalid MongoDB location {location}: {message}")
    assert error.hint is not None and "connection-string-options" in error.hint
    assert_no_secret(error, "s3cr3tpw", "hunter2token", "garbage")


def test_put_with_a_uri_option_pymongo_would_ignore_exits_2_without_a_warning(
    run: Run, mongomock_server: Any, tmp_path: Path
) -> None:
    index = "mongodb://127.0.0.1:27999/db?tls=maybe"
    result = run("put", "--store", str(tmp_path / "st"), "--index", index, input=b"")
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr.startswith(
        "s3idx: error: invalid MongoDB location mongodb://127.0.0.1:27999/db (collection "
        "s3idx): URI option 'tls': The value of tls must be 'true' or 'false'\n"
    )
    assert "UserWarning" not in result.stderr


def test_valid_uri_options_are_taken(mongomock_server: Any) -> None:
    uri = "mongodb://h/db?serverSelectionTimeoutMS=100&appname=x&tls=false&w=majority"
    MongoIndex(uri, "db").configure("fs_id", [])


def test_an_unknown_option_made_of_an_unescaped_password_is_not_named() -> None:
    with pytest.raises(UsageError) as excinfo:
        MongoIndex("mongodb://user:pa?tlsX=1@h/db", "db")
    assert "tlsX" not in excinfo.value.message


# --- mongodb+srv:// lookups DNS cannot answer: unreachable, not a usage error ----------------


@pytest.mark.parametrize(
    "failure",
    [
        dns.resolver.NXDOMAIN(qnames=["_mongodb._tcp.cluster.example."]),
        dns.resolver.NoNameservers(),
        dns.resolver.LifetimeTimeout(timeout=5.0, errors=[]),
        dns.resolver.NoAnswer(),
    ],
    ids=["nxdomain", "no-nameservers", "timeout", "no-answer"],
)
def test_a_failed_srv_lookup_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    def resolve(*args: Any, **kwargs: Any) -> Any:
        raise failure

    monkeypatch.setattr(dns.resolver, "resolve", resolve)
    with pytest.raises(BackendUnavailableError) as excinfo:
        MongoIndex("mongodb+srv://user:s3cr3tpw@cluster.example/db", "db")
    error = excinfo.value
    assert error.exit_status == ExitStatus.UNAVAILABLE
    assert error.message.startswith("cannot look up MongoDB at cluster.example: ")
    assert_no_secret(error, "s3cr3tpw")


def test_put_on_an_srv_host_that_does_not_resolve_exits_5(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def resolve(*args: Any, **kwargs: Any) -> Any:
        raise dns.resolver.NXDOMAIN(qnames=["_mongodb._tcp.nonexistent.invalid."])

    monkeypatch.setattr(dns.resolver, "resolve", resolve)
    index = "mongodb+srv://u:pw@nonexistent.invalid/db"
    result = run("put", "--store", str(tmp_path / "st"), "--index", index, input=b"")
    assert result.exit_code == ExitStatus.UNAVAILABLE
    assert result.stderr.startswith(
        "s3idx: error: cannot look up MongoDB at nonexistent.invalid: The DNS query name does "
        "not exist: _mongodb._tcp.nonexistent.invalid.\n"
    )


def test_an_srv_uri_with_a_port_is_still_a_usage_error() -> None:
    with pytest.raises(UsageError, match="must not include a port number"):
        MongoIndex("mongodb+srv://cluster.example:27017/db", "db")


def test_location_shows_hosts_database_and_collection_but_no_secrets(client: Any) -> None:
    uri = (
        "mongodb://alice:s3cr%40t@h1:27017,h2:27018/admin?authSource=admin"
        "&authMechanismProperties=AWS_SESSION_TOKEN:tok3n"
    )
    index = MongoIndex(uri, "data", "entries", client=client)

    assert index.location == "mongodb://alice:***@h1:27017,h2:27018/data (collection entries)"


@pytest.mark.parametrize("password", ["pa?ss", "pa/ss", "p@ss", "pa:ss"])
def test_an_unescaped_password_is_hidden_whole(password: str) -> None:
    location = MongoLocation.parse(f"mongodb://user:{password}@h1:1,h2:2/db?w=1")

    assert location.describe("db", "c") == "mongodb://user:***@h1:1,h2:2/db (collection c)"
    assert redact(f"it was {password}", location.secrets) == "it was ***"


def test_redact_hides_the_password_escaped_and_not() -> None:
    location = MongoLocation.parse("mongodb+srv://bob:p%40ss@cluster.example/db")

    assert location.hosts == "cluster.example"
    assert redact("bob used p%40ss, that is p@ss", location.secrets) == "bob used ***, that is ***"
    assert MongoLocation.parse("mongodb://x509user@h/db").describe("db", "c") == (
        "mongodb://x509user@h/db (collection c)"
    )


# --- layout ----------------------------------------------------------------------------------


def test_reading_a_fresh_index_creates_nothing(index: MongoIndex, client: Any) -> None:
    assert index.settings() is None
    assert list(index.find()) == []
    assert index.count() == 0

    assert client["test"].list_collection_names() == []


def test_settings_are_recorded_in_the_meta_collection(index: MongoIndex, client: Any) -> None:
    index.configure("fs_id", ["a", "b.c"])
    index.configure("fs_id", ["b.c", "d"])

    assert client["test"]["s3idx_meta"].find_one({"_id": "s3idx"}) == {
        "_id": "s3idx",
        "key_field": "fs_id",
        "fields": ["a", "b.c", "d"],
        "format": 1,
    }


def test_configure_creates_a_unique_key_index_and_one_per_field(
    index: MongoIndex, client: Any
) -> None:
    index.configure("fs_id", ["a", "b.c"])
    index.configure("fs_id", ["a", "d"])

    info = client["test"]["s3idx"].index_information()
    keys = {name: [tuple(k) for k in spec["key"]] for name, spec in info.items()}
    assert sorted(map(str, keys.values())) == sorted(
        map(str, [[("_id", 1)], [("fs_id", 1)], [("a", 1)], [("b.c", 1)], [("d", 1)]])
    )
    unique = [spec for spec in info.values() if spec.get("unique")]
    assert [[tuple(k) for k in spec["key"]] for spec in unique] == [[("fs_id", 1)]]


def test_configure_recreates_indexes_that_were_dropped(index: MongoIndex, client: Any) -> None:
    index.configure("fs_id", ["a"])
    client["test"]["s3idx"].drop_indexes()

    index.configure("fs_id", [])

    assert len(client["test"]["s3idx"].index_information()) == 3  # _id, fs_id, a


def test_index_creation_cut_off_by_a_lost_connection_is_tried_again(
    index: MongoIndex, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FerretDB closed the connection of one of several processes creating indexes at once.
    from pymongo.errors import AutoReconnect

    create = mongomock.collection.Collection.create_indexes
    failures = iter([AutoReconnect("connection closed")])

    def flaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return create(self, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "create_indexes", flaky)

    index.configure("fs_id", ["a"])

    assert len(client["test"]["s3idx"].index_information()) == 3  # _id, fs_id, a


def test_the_key_is_the_document_id(index: MongoIndex, client: Any) -> None:
    index.configure("fs_id", [])
    index.upsert([entry("a/b", n=1)])

    raw = client["test"]["s3idx"].find_one({"_id": "a/b"})
    assert raw is not None and raw["fs_id"] == "a/b" and raw["n"] == 1
    assert list(index.find()) == [entry("a/b", n=1)]
    assert index.bookkeeping(["a/b"])["a/b"][0] == {"fs_id": "a/b", "n": 1, "last_updated": WHEN}


def test_a_dotted_key_field_is_refused_before_anything_is_recorded(
    index: MongoIndex, client: Any
) -> None:
    """put reads the key from a top-level field only, so no document could have this key."""
    with pytest.raises(IndexSettingsError) as raised:
        index.configure("meta.id", ["n"])
    assert raised.value.message.startswith("invalid key field 'meta.id': it contains '.'")
    assert index.settings() is None
    assert client["test"]["s3idx"].find_one() is None


def test_underscore_id_as_the_key_field(index: MongoIndex) -> None:
    index.configure("_id", ["n"])
    index.upsert([entry("k2", "_id", n=2), entry("k1", "_id", n=1)])

    assert list(index.find(sort=[("n", 1)])) == [entry("k1", "_id", n=1), entry("k2", "_id", n=2)]
    assert list(index.find({"n": 2}, fields=[])) == [{"_id": "k2"}]
    assert index.bookkeeping(["k1"])["k1"][0] == {"_id": "k1", "n": 1, "last_updated": WHEN}


def test_underscore_id_cannot_be_a_searchable_field(index: MongoIndex) -> None:
    with pytest.raises(UsageError, match="'_id' cannot be a searchable field"):
        index.configure("fs_id", ["a", "_id"])
    assert index.settings() is None


def test_an_entry_with_its_own_id_is_refused(index: MongoIndex) -> None:
    index.configure("fs_id", [])
    with pytest.raises(S3idxError, match="has its own '_id' field"):
        index.upsert([entry("k", _id="other")])


def test_projection_never_shows_our_id(index: MongoIndex) -> None:
    index.configure("fs_id", [])
    index.upsert([entry("k", n=1)])

    assert list(index.find(fields=["_id", "n", "_id.x"])) == [{"fs_id": "k", "n": 1}]


def test_a_path_and_a_path_inside_it_are_projected_together(index: MongoIndex) -> None:
    index.configure("fs_id", [])
    index.upsert([entry("k", m={"a": 1, "b": 2})])

    assert list(index.find(fields=["m.a", "m"])) == [{"fs_id": "k", "m": {"a": 1, "b": 2}}]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"sort": [("n", 2)]}, InvalidFilterError),
        ({"sort": [("n", True)]}, InvalidFilterError),
        ({"sort": [("", 1)]}, InvalidFilterError),
        ({"sort": ["n"]}, InvalidFilterError),
        ({"fields": "n"}, InvalidFilterError),
        ({"fields": [""]}, InvalidFilterError),
        ({"skip": -1}, UsageError),
        ({"limit": -1}, UsageError),
    ],
)
def test_bad_find_arguments_are_refused_at_the_call(
    index: MongoIndex, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        index.find({}, **kwargs)


def test_batches_split_writes_and_lookups(
    index: MongoIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mongo, "BATCH_SIZE", 2)
    index.configure("fs_id", ["n"])
    index.upsert([entry(k, n=i) for i, k in enumerate("abcde")] + [entry("a", n=99)])

    assert index.count() == 5
    assert list(index.find({"fs_id": "a"}, fields=["n"])) == [{"fs_id": "a", "n": 99}]
    assert sorted(index.bookkeeping(list("edcbaz"))) == list("abcde")
    rebuild = index.start_rebuild("fs_id")
    rebuild.upsert([entry(k) for k in "vwxyz"])
    assert rebuild.has_keys(list("avwxyz")) == set("vwxyz")
    rebuild.abort()
    assert index.delete(list("abcdz")) == 4


# --- rebuild ---------------------------------------------------------------------------------


def test_writing_before_configure_is_refused(index: MongoIndex) -> None:
    with pytest.raises(IndexSettingsError, match="configure it first"):
        index.upsert([entry("k")])


def test_rebuild_state_lives_beside_the_index_until_commit(index: MongoIndex, client: Any) -> None:
    index.configure("fs_id", ["n"])
    rebuild = index.start_rebuild("fs_id")
    rebuild.upsert([entry("k", n=1)])
    rebuild.save_checkpoint({"after": "k"})
    db = client["test"]

    state = db["s3idx_meta"].find_one({"_id": "s3idx__rebuild"})
    assert state["staging"] == "s3idx__rebuild_" + state["run"][:12]
    assert state["staging"] in db.list_collection_names()
    # The checkpoint is JSON text: FerretDB refuses "." in the names of a stored document.
    assert state["key_field"] == "fs_id" and orjson.loads(state["checkpoint"]) == {"after": "k"}

    rebuild.commit(IndexSettings("fs_id", ("n", "m")))

    assert sorted(db.list_collection_names()) == ["s3idx", "s3idx_meta"]
    assert db["s3idx_meta"].find_one({"_id": "s3idx__rebuild"}) is None
    assert len(db["s3idx"].index_information()) == 4  # _id, fs_id, n, m
    with pytest.raises(S3idxError, match="was committed"):
        rebuild.upsert([entry("z")])
    rebuild.abort()  # harmless after the end
    assert index.count() == 1


def test_abort_removes_the_rebuild_state(index: MongoIndex, client: Any) -> None:
    index.configure("fs_id", [])
    index.start_rebuild("fs_id").abort()

    assert sorted(client["test"].list_collection_names()) == ["s3idx", "s3idx_meta"]
    assert client["test"]["s3idx_meta"].count_documents({}) == 1


def test_commit_with_another_key_field_is_refused(index: MongoIndex) -> None:
    index.configure("fs_id", [])
    rebuild = index.start_rebuild("fs_id")

    with pytest.raises(IndexSettingsError, match="filled by key field 'fs_id'"):
        rebuild.commit(IndexSettings("task_id", ()))


def test_a_superseded_rebuild_can_no_longer_write_its_state(index: MongoIndex) -> None:
    index.configure("fs_id", [])
    old = index.start_rebuild("fs_id")
    new = index.start_rebuild("fs_id")
    new.upsert([entry("n")])

    for step in (
        lambda: old.save_checkpoint({}),
        old.checkpoint,
        lambda: old.commit(IndexSettings("fs_id", ())),
    ):
        with pytest.raises(S3idxError, match="finished or aborted by another process"):
            step()
    old.abort()  # must not drop the newer rebuild's collection
    assert new.has_keys(["n"]) == {"n"}


def test_a_rebuild_started_at_the_same_moment_as_another_says_it_was_replaced(
    index: MongoIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.configure("fs_id", [])
    database = index._c.database
    create = database.create_collection

    def another_start_first(name: str, **options: Any) -> Any:
        create(name)  # another rebuild-index, between this one's drop and its create
        return create(name, **options)

    monkeypatch.setattr(database, "create_collection", another_start_first)
    with pytest.raises(S3idxError, match="finished or aborted by another process") as caught:
        index.start_rebuild("fs_id")
    assert caught.value.hint is not None and "s3idx info" in caught.value.hint


def test_resume_after_the_collection_vanished_starts_afresh(index: MongoIndex, client: Any) -> None:
    index.configure("fs_id", [])
    rebuild = index.start_rebuild("fs_id")
    rebuild.save_checkpoint({"after": "x"})
    staging = client["test"]["s3idx_meta"].find_one({"_id": "s3idx__rebuild"})["staging"]
    client["test"].drop_collection(staging)

    assert index.start_rebuild("fs_id", resume=True).checkpoint() is None


def _staging_collections(client: Any) -> list[str]:
    return sorted(n for n in client["test"].list_collection_names() if "__rebuild" in n)


def test_a_superseded_rebuilds_late_batch_stays_out_of_its_successors_index(
    index: MongoIndex, client: Any
) -> None:
    index.configure("fs_id", [])
    old = index.start_rebuild("fs_id")
    new = index.start_rebuild("fs_id")
    new.upsert([entry("n")])
    old.upsert([entry("late")])  # a batch in flight when the new run took over

    assert new.has_keys(["n", "late"]) == {"n"}
    new.commit(IndexSettings("fs_id", ()))
    assert [e["fs_id"] for e in index.find()] == ["n"]
    # The late batch's collection is garbage: the next start drops it, an abort its own.
    assert len(_staging_collections(client)) == 1
    index.start_rebuild("fs_id").abort()
    assert _staging_collections(client) == []


def test_a_superseded_run_drops_its_own_staging_when_it_finds_out(
    index: MongoIndex, client: Any
) -> None:
    index.configure("fs_id", [])
    old = index.start_rebuild("fs_id")
    old.upsert([entry("o")])
    new = index.start_rebuild("fs_id")
    old.upsert([entry("late")])
    with pytest.raises(S3idxError, match="finished or aborted by another process"):
        old.save_checkpoint({})
    new.upsert([entry("n")])
    assert len(_staging_collections(client)) == 1
    assert new.has_keys(["n", "o", "late"]) == {"n"}


def test_a_rebuild_stages_new_keys_by_inserts_and_replaces_only_keys_written_again(
    index: MongoIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FerretDB scans the collection for each upsert of a new key: a resume wrote 12x slower."""
    index.configure("fs_id", [])
    rebuild = index.start_rebuild("fs_id")
    rebuild.upsert([entry(f"k{i}", n=1) for i in range(5)])
    replaced: list[str] = []
    replace_all = index._c.replace_all

    def counting(collection: Any, documents: Any, action: str) -> None:
        replaced.extend(key for key, _ in documents)
        replace_all(collection, documents, action)

    monkeypatch.setattr(index._c, "replace_all", counting)
    resumed = index.start_rebuild("fs_id", resume=True)
    resumed.upsert([entry(f"k{i}", n=2) for i in range(3, 8)])  # k3, k4 written again

    assert sorted(replaced) == ["k3", "k4"]
    resumed.commit(IndexSettings("fs_id", ()))
    assert {e["fs_id"]: e["n"] for e in index.find()} == {
        "k0": 1,
        "k1": 1,
        "k2": 1,
        "k3": 2,
        "k4": 2,
        "k5": 2,
        "k6": 2,
        "k7": 2,
    }


def test_a_rebuild_an_earlier_version_started_resumes_in_the_shared_collection(
    index: MongoIndex, client: Any
) -> None:
    index.configure("fs_id", [])
    db = client["test"]
    db["s3idx__rebuild"].insert_one({"_id": "old", **entry("old")})
    db["s3idx_meta"].insert_one(
        {"_id": "s3idx__rebuild", "key_field": "fs_id", "run": "r" * 32, "checkpoint": None}
    )
    resumed = index.start_rebuild("fs_id", resume=True)
    resumed.upsert([entry("new"), entry("old")])
    resumed.commit(IndexSettings("fs_id", ()))

    assert sorted(e["fs_id"] for e in index.find()) == ["new", "old"]
    assert _staging_collections(client) == []


# --- error translation -----------------------------------------------------------------------

TOPOLOGY = (
    "h1:1: [Errno 111] Connection refused (configured timeouts: socketTimeoutMS: 20000.0ms, "
    "connectTimeoutMS: 20000.0ms), Timeout: 0.1s, Topology Description: <TopologyDescription>"
)
BULK = BulkWriteError(
    {
        "writeErrors": [{"index": 1, "code": 11000, "errmsg": "E11000 duplicate key"}],
        "writeConcernErrors": [],
        "nInserted": 0,
    }
)

ERROR_TABLE: list[tuple[BaseException, bool, type[S3idxError], str]] = [
    (ServerSelectionTimeoutError(TOPOLOGY), False, BackendUnavailableError, "cannot reach"),
    (
        AutoReconnect("connection reset"),
        False,
        TransientError,
        "lost the connection to MongoDB at h1:1 while querying LOC: connection reset",
    ),
    (NotPrimaryError("not primary"), True, TransientError, "lost the connection"),
    (
        ConnectionFailure("refused"),
        False,
        BackendUnavailableError,
        "cannot use MongoDB at h1:1 while querying LOC: refused",
    ),
    (
        OperationFailure("Authentication failed.", 18),
        False,
        AccessDeniedError,
        "MongoDB at h1:1 refused access while querying LOC: Authentication failed.",
    ),
    (OperationFailure("not authorized on db", 13), True, AccessDeniedError, "querying LOC"),
    (OperationFailure("bad auth : failed", 8000), False, AccessDeniedError, "querying LOC"),
    (
        OperationFailure("Invalid namespace specified 'dé.x'", 73),
        False,
        UsageError,
        "MongoDB at h1:1 refused the name of LOC: Invalid namespace specified 'dé.x'",
    ),
    (OperationFailure("unknown operator: $x", 2), True, InvalidFilterError, "invalid query"),
    (
        OperationFailure("unknown operator: $x", 2, {"ok": 0, "errmsg": "unknown operator: $x"}),
        True,
        InvalidFilterError,
        "invalid query: unknown operator: $x",
    ),
    (NotPrimaryError("not primary", {"ok": 0, "errmsg": "not primary"}), False, TransientError, ""),
    (OperationFailure("unknown operator: $x", 2), False, S3idxError, "(code 2)"),
    # The server's state, not the filter and not a bug: the index cannot be used now (exit 5).
    (OperationFailure("time limit", 50), True, TransientError, "time limit (code 50)"),
    (
        OperationFailure("cursor id 7 not found", 43),
        False,
        TransientError,
        "MongoDB could not finish querying LOC: cursor id 7 not found (code 43)",
    ),
    (OperationFailure("interrupted at shutdown", 11600), False, TransientError, "(code 11600)"),
    (OperationFailure("collection dropped", 175), True, TransientError, "(code 175)"),
    # Over the server's memory limit: retrying the same query would fail the same way.
    (OperationFailure("memory limit", 292), True, S3idxError, "memory limit (code 292)"),
    (OperationFailure("too many indexes", 67), False, S3idxError, "(code 67)"),
    (BULK, False, S3idxError, "E11000 duplicate key"),
    (InvalidURI("bad uri"), False, UsageError, "invalid MongoDB location"),
    (ConfigurationError("bad option"), False, UsageError, "invalid MongoDB location"),
    (InvalidName("bad name"), False, UsageError, "invalid MongoDB location"),
    (InvalidDocument("cannot encode object"), True, InvalidFilterError, "cannot be sent"),
    (InvalidDocument("cannot encode object"), False, S3idxError, "cannot encode"),
    (OverflowError("8-byte ints"), False, S3idxError, "8-byte ints"),
    (InvalidOperation("after close"), False, S3idxError, "after close"),
]


@pytest.mark.parametrize(
    ("exc", "query", "expected", "text"),
    ERROR_TABLE,
    ids=[f"{type(e).__name__}-{'query' if q else 'other'}" for e, q, _, _ in ERROR_TABLE],
)
def test_translate_error(
    exc: BaseException, query: bool, expected: type[S3idxError], text: str
) -> None:
    error = translate_error(exc, action="querying", location="LOC", hosts="h1:1", query=query)

    assert type(error) is expected
    assert text in error.message
    assert "full error" not in error.message and "Topology" not in error.message


def test_errors_met_by_operations_are_translated(
    index: MongoIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.configure("fs_id", [])
    collection_class = mongomock.collection.Collection

    def unauthorized(*args: Any, **kwargs: Any) -> Any:
        raise OperationFailure("not authorized on test to execute command", 13)

    monkeypatch.setattr(collection_class, "count_documents", unauthorized)
    with pytest.raises(AccessDeniedError) as excinfo:
        index.count()
    assert excinfo.value.exit_status == ExitStatus.ACCESS_DENIED

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise BULK

    monkeypatch.setattr(collection_class, "bulk_write", refused)
    with pytest.raises(S3idxError) as bulk_error:
        index.upsert([entry("a"), entry("b")])
    assert type(bulk_error.value) is S3idxError
    assert "refused 1 of 2 entries" in bulk_error.value.message
    assert "first refused key: 'b'" in bulk_error.value.message


def test_a_closed_index_fails_as_an_s3idx_error() -> None:
    index = MongoIndex("mongodb://127.0.0.1:1/db", "db", server_selection_timeout_ms=50)
    index.close()
    with pytest.raises(S3idxError):
        index.settings()


def test_close_leaves_a_client_it_was_given_open() -> None:
    client = mock.MagicMock()
    MongoIndex("mongodb://h/db", "db", client=client).close()
    client.close.assert_not_called()


@pytest.mark.parametrize("name", ["", "a$b", "system.x", "s3idx_meta", "docs__rebuild"])
def test_reserved_or_invalid_collection_names_are_refused(client: Any, name: str) -> None:
    with pytest.raises(UsageError):
        MongoIndex("mongodb://h/db", "db", name, client=client)


# --- values ----------------------------------------------------------------------------------


def test_plain_turns_bson_int64_into_int_and_datetimes_into_utc() -> None:
    raw = bson.decode(
        bson.encode({"big": 2**40, "l": [2**41], "d": {"t": WHEN}}),
        codec_options=CodecOptions(tz_aware=True),
    )
    assert type(raw["big"]) is not int  # what pymongo hands out for int64

    value = plain(raw)

    assert type(value["big"]) is int and type(value["l"][0]) is int
    assert value["d"]["t"] == WHEN.replace(microsecond=6000) and value["d"]["t"].tzinfo is UTC
    eastern = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-5)))
    assert plain(eastern) == eastern and plain(eastern).tzinfo is UTC
    assert plain(datetime(2024, 1, 1)) == datetime(2024, 1, 1, tzinfo=UTC)


def test_bookkeeping_without_valid_bookkeeping_is_an_error(index: MongoIndex, client: Any) -> None:
    index.configure("fs_id", [])
    client["test"]["s3idx"].insert_one({"_id": "k", "fs_id": "k"})

    for read in (lambda: index.bookkeeping(["k"]), lambda: list(index.iter_bookkeeping())):
        with pytest.raises(DamagedIndexError) as caught:
            read()
        assert caught.value.message == (
            f"index {index.location} is damaged: entry 'k' lacks its _s3idx bookkeeping"
        )
        assert "rebuild-index" in (caught.value.hint or "")


def test_bookkeeping_sizes_come_back_as_ints(index: MongoIndex) -> None:
    index.configure("fs_id", [])
    index.upsert([entry("k")])
    assert index.bookkeeping(["k"])["k"][1] == Bookkeeping('"e"', 3, None, "json")


# --- open_index ------------------------------------------------------------------------------


def test_open_index_builds_a_mongo_index_for_mongodb_locations() -> None:
    for uri, expected in [
        ("mongodb://user:secret@127.0.0.1:1/mydb", "mongodb://user:***@127.0.0.1:1/mydb"),
        ("mongodb://127.0.0.1:1/mydb?w=1&authSource=admin", "mongodb://127.0.0.1:1/mydb"),
    ]:
        index = open_index(Settings(store="/tmp/unused", index=uri, collection="docs"))
        assert isinstance(index, MongoIndex)
        assert index.location == f"{expected} (collection docs)"
        index.close()


# --- writers that race, and servers that answer like FerretDB ---------------------------------

DUPLICATE = BulkWriteError(
    {"writeErrors": [{"index": 0, "code": 11000, "errmsg": "E11000 duplicate key error"}]}
)


def _failing_first(monkeypatch: pytest.MonkeyPatch, name: str, *errors: BaseException) -> list:
    """Collection.<name> raises ``errors`` one call after another, then works."""
    collection_class = mongomock.collection.Collection
    original = getattr(collection_class, name)
    left = list(errors)
    calls: list[int] = []

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if left:
            raise left.pop(0)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(collection_class, name, method)
    monkeypatch.setattr(mongo, "UPSERT_PAUSE", 0)
    return calls


def test_a_batch_that_lost_an_upsert_race_is_written_again(
    index: MongoIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.configure("fs_id", ["n"])
    calls = _failing_first(monkeypatch, "bulk_write", DUPLICATE, DUPLICATE)
    index.upsert([entry("a", n=1), entry("b", n=2)])
    assert len(calls) == 3
    assert [e["n"] for e in index.find({}, sort=[("fs_id", 1)])] == [1, 2]


def test_a_reply_pymongo_cannot_read_falls_back_to_one_entry_at_a_time(
    index: MongoIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.configure("fs_id", ["n"])
    # FerretDB leaves "nModified" out of a reply with a write error; pymongo raises KeyError.
    _failing_first(monkeypatch, "bulk_write", *[KeyError("nModified")] * mongo.UPSERT_ATTEMPTS)
    index.upsert([entry("a", n=1), entry("b", n=2)])
    assert [e["n"] for e in index.find({}, sort=[("fs_id", 1)])] == [1, 2]


def test_other_write_errors_are_not_retried(
    index: MongoIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.configure("fs_id", [])
    invalid = BulkWriteError(
        {"writeErrors": [{"index": 1, "code": 121, "errmsg": "Document failed validation"}]}
    )
    calls = _failing_first(monkeypatch, "bulk_write", invalid)
    with pytest.raises(S3idxError, match=r"refused 1 of 2 entries.*first refused key: 'b'"):
        index.upsert([entry("a"), entry("b")])
    assert len(calls) == 1


def test_two_processes_recording_the_same_settings_at_once_both_succeed(
    index: MongoIndex, monkeypatch: pytest.MonkeyPatch, client: Any
) -> None:
    from pymongo.errors import DuplicateKeyError

    # The other process's upsert inserted the settings first: ours meets a duplicate key.
    def other_process_wins(self: Any, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.undo()
        client["test"]["s3idx_meta"].insert_one({"_id": "s3idx", "key_field": "fs_id",
                                                 "fields": ["n"], "format": 1})  # fmt: skip
        raise DuplicateKeyError("E11000 duplicate key error", 11000)

    monkeypatch.setattr(mongomock.collection.Collection, "find_one_and_update", other_process_wins)
    settings = index.configure("fs_id", ["m"])
    assert settings == IndexSettings("fs_id", ("n", "m"))


def test_commit_without_drop_target_drops_then_renames(
    index: MongoIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.configure("fs_id", ["n"])
    index.upsert([entry("old", n=0)])
    rebuild = index.start_rebuild("fs_id")
    rebuild.upsert([entry("a", n=1), entry("b", n=2)])
    original = mongomock.collection.Collection.rename
    refusals = [
        OperationFailure("renameCollection: dropTarget is not implemented yet", 238),
        OperationFailure("target namespace exists", 48),  # a writer re-created it meanwhile
    ]
    renames: list[dict[str, Any]] = []

    def rename(self: Any, new_name: str, **kwargs: Any) -> Any:
        renames.append(kwargs)
        if refusals:
            raise refusals.pop(0)
        return original(self, new_name, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "rename", rename)
    rebuild.commit(IndexSettings("fs_id", ("n",)))

    assert renames == [{"dropTarget": True}, {}, {}]
    assert [e["fs_id"] for e in index.find({}, sort=[("fs_id", 1)])] == ["a", "b"]
    assert index.settings() == IndexSettings("fs_id", ("n",))


def test_more_fields_than_mongodb_can_index_are_refused_before_anything_is_recorded(
    index: MongoIndex, client: Any
) -> None:
    """MongoDB allows 64 indexes per collection: _id, the key field's, one per field. mongomock
    does not enforce it, so the refusal must be s3idx's own, before the settings are written."""
    with pytest.raises(IndexSettingsError) as raised:
        index.configure("id", [f"f{i}" for i in range(63)])
    assert "63 searchable fields" in raised.value.message
    assert "at most 62" in raised.value.message
    assert raised.value.exit_status == 2
    assert index.settings() is None
    assert client["test"]["s3idx_meta"].find_one() is None


def test_the_field_limit_counts_fields_already_recorded(index: MongoIndex) -> None:
    index.configure("id", [f"f{i}" for i in range(60)])
    index.configure("id", ["f0", "f1", "g0", "g1"])  # 62 in all: allowed
    with pytest.raises(IndexSettingsError, match="63 searchable fields"):
        index.configure("id", ["h0"])
    settings = index.settings()
    assert settings is not None and len(settings.fields) == 62


def test_with_underscore_id_as_the_key_one_more_field_fits(index: MongoIndex) -> None:
    index.configure("_id", [f"f{i}" for i in range(63)])
    with pytest.raises(IndexSettingsError, match="at most 63"):
        index.configure("_id", ["g"])


def test_put_with_more_fields_than_mongodb_can_index_exits_2_and_records_nothing(
    run: Run, mongomock_server: Any, mongomock_client: Any, tmp_path: Path
) -> None:
    store = tmp_path / "st"
    fields = [arg for i in range(63) for arg in ("--field", f"f{i}")]
    index = "mongodb://127.0.0.1:27999/db4"
    result = run("put", "--store", str(store), "--index", index, *fields, input=b'{"fs_id": "a"}\n')
    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert "63 searchable fields are more than a MongoDB index can hold" in result.stderr
    assert "internal error" not in result.stderr
    assert mongomock_client["db4"].list_collection_names() == []
    # Only the store's own format marker (written on opening it), no document.
    assert [p.name for p in store.rglob("*") if p.is_file()] == ["s3idx-store.json"]


@pytest.mark.parametrize(
    "collection", ["docs__rebuild", "docs__rebuild_0123456789ab", "docs__deletes", "s3idx_meta"]
)
def test_collection_names_s3idx_uses_for_its_own_bookkeeping_are_refused(collection: str) -> None:
    with pytest.raises(UsageError, match=f"collection name '{collection}' is reserved"):
        MongoIndex("mongodb://127.0.0.1:1/db", "db", collection)


def test_a_name_like_a_staging_collection_but_not_one_is_taken(client: Any) -> None:
    for collection in ("docs__rebuild_0123", "docs__rebuild_0123456789AB"):
        MongoIndex("mongodb://h/db", "db", collection, client=client).configure("fs_id", [])


def test_the_library_refuses_a_password_with_an_unescaped_delimiter_unshown() -> None:
    with pytest.raises(UsageError) as refused:
        MongoIndex("mongodb://alice:hunter2/zQx9@127.0.0.1:1/db", "db")
    assert refused.value.message == (
        "index 'mongodb://alice:***@127.0.0.1:1/db' has an '@' after its host part"
    )
    assert refused.value.hint is not None and "%2F" in refused.value.hint
