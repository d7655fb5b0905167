"""s3idx.maggma.S3idxStore: a maggma Store over s3idx, compared with maggma's own S3Store.

The same scenarios run against maggma's ``S3Store`` (over the moto server, with maggma's
in-memory index, as tests/test_maggma.py writes buckets) and against ``S3idxStore`` (over the
same moto server, with a SQLite or mongomock index); what each returns is compared. Where
s3idx differs on purpose, the test says so and checks the difference itself.
"""

from __future__ import annotations

import copy
import logging
import pickle
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from maggma.builders import CopyBuilder, GroupBuilder, MapBuilder
from maggma.stores import MemoryStore
from maggma.stores import S3Store as MaggmaS3Store
from monty.json import MontyDecoder, MSONable

from s3idx import codec
from s3idx.engine.retry import RetryPolicy
from s3idx.errors import BackendUnavailableError, DamagedObjectError, S3idxError, UsageError
from s3idx.maggma import S3idxStore, S3idxStoreError
from s3idx.query.indexed import FieldNotIndexedError
from tests.helpers import MONGO_KINDS, Run, json_lines, real_mongo_database, run_in_fork
from tests.s3proxy import INTERNAL_ERROR, S3Proxy

SEARCHABLE = ["n", "group", "elements", "energy", "when"]


def _doc(i: int) -> dict[str, Any]:
    # Datetimes at millisecond precision, naive in UTC: what MongoDB (maggma's index) keeps.
    return {
        "task_id": f"mp-{i}",
        "n": i,
        "group": "ab"[i % 2],
        "elements": [["Fe", "O"], ["Li"]][i % 2],
        "energy": -1.5 * i,
        "when": datetime(2026, 1, 1 + i, 3, 4, 5, 678000),
        "structure": {"sites": [[0.0, 0.5, i]], "charge": 0},
        "last_updated": datetime(2026, 2, 1, 0, 0, i, 123000),
    }


DOCS = [_doc(i) for i in range(6)]


@dataclass
class Pair:
    """maggma's S3Store and an S3idxStore on one moto bucket, under different prefixes."""

    maggma: MaggmaS3Store
    s3idx: S3idxStore
    endpoint: str
    bucket: str

    def update(self, docs: list[dict[str, Any]]) -> None:
        # maggma pops last_updated out of the documents it is given: give each its own copies.
        self.maggma.update(copy.deepcopy(docs))
        self.s3idx.update(copy.deepcopy(docs))

    def both(self, method: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        theirs = getattr(self.maggma, method)(*args, **kwargs)
        ours = getattr(self.s3idx, method)(*args, **kwargs)
        return _plain(theirs), _plain(ours)

    def objects(self, prefix: str) -> list[str]:
        client = boto3.client("s3", endpoint_url=self.endpoint)
        listed = client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        # s3idx's manifests (under .s3idx/) are not documents.
        return sorted(o["Key"] for o in listed.get("Contents", []) if "/.s3idx/" not in o["Key"])


def _plain(value: Any) -> Any:
    """Results as comparable values: iterators listed, MongoDB's _id dropped, and monty's
    serialised datetimes (in maggma's msgpack bodies) decoded as a maggma user decodes them."""
    if isinstance(value, Iterator):
        value = list(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        value = MontyDecoder().process_decoded({k: v for k, v in value.items() if k != "_id"})
        return {k: _plain(v) for k, v in value.items()} if isinstance(value, dict) else value
    return value


def _by_n(groups: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[Any]:
    return [(group, sorted(docs, key=lambda d: d["n"])) for group, docs in groups]


@pytest.fixture(params=["sqlite", *MONGO_KINDS])
def index_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each index backend in turn: SQLite, mongomock, FerretDB, a real MongoDB (when given)."""
    if request.param == "sqlite":
        yield str(tmp_path / "index.sqlite3")
    elif request.param == "mongomock":
        request.getfixturevalue("mongomock_server")
        yield "mongodb://localhost/s3idx_test"
    else:
        with real_mongo_database(request.param, request) as server:
            yield server.uri


@pytest.fixture
def pair(s3_endpoint: str, s3_bucket: str, index_location: str) -> Iterator[Pair]:
    theirs = MaggmaS3Store(
        index=MemoryStore("maggma-index", key="task_id"),
        bucket=s3_bucket,
        s3_profile=None,
        endpoint_url=s3_endpoint,
        compress=True,
        sub_dir="maggma",
        key="task_id",
        searchable_fields=SEARCHABLE,
    )
    ours = S3idxStore(
        store=f"s3://{s3_bucket}/s3idx",
        index=index_location,
        key="task_id",
        searchable_fields=SEARCHABLE,
        endpoint_url=s3_endpoint,
        s3_workers=4,
    )
    theirs.connect()
    ours.connect()
    yield Pair(theirs, ours, s3_endpoint, s3_bucket)
    theirs.close()
    ours.close()


# --- the same answers as maggma's S3Store -------------------------------------------------------


def test_queries_answer_as_maggmas_s3store_does(pair: Pair) -> None:
    pair.update(DOCS)

    assert pair.both("count") == (6, 6)
    assert pair.both("count", {"n": {"$gte": 2}, "group": "a"}) == (2, 2)
    theirs, ours = pair.both("query", {"n": {"$lt": 4}}, sort={"n": -1}, skip=1, limit=2)
    assert [d["task_id"] for d in ours] == ["mp-2", "mp-1"]
    assert ours == theirs
    # Whole documents: maggma's datetimes come back as monty dicts until decoded (_plain does);
    # s3idx's come back as datetimes, the types kept exactly.
    ours_raw = list(pair.s3idx.query({"task_id": "mp-3"}))
    assert ours_raw == [DOCS[3]]
    assert isinstance(ours_raw[0]["when"], datetime) and ours_raw[0]["when"].tzinfo is None
    theirs_raw = list(pair.maggma.query({"task_id": "mp-3"}))
    assert theirs_raw[0]["when"]["@class"] == "datetime"

    # Properties all indexed: from the index alone, in both.
    theirs, ours = pair.both(
        "query", {"elements": "Li"}, properties=["task_id", "n", "when"], sort={"n": 1}
    )
    assert ours == [{"task_id": f"mp-{i}", "n": i, "when": DOCS[i]["when"]} for i in (1, 3, 5)]
    assert ours == theirs
    # Properties not indexed: read from the documents, in both. maggma's S3Store then returns
    # the whole document; S3idxStore cuts it down to the properties, as MongoStore does.
    theirs, ours = pair.both("query", {"n": 4}, properties={"structure": 1, "_id": 0})
    assert theirs == [DOCS[4]]
    assert ours == [{"structure": DOCS[4]["structure"]}]
    assert pair.both("query_one", {"n": {"$gt": 3}}, sort={"n": 1}) == (DOCS[4], DOCS[4])
    assert pair.both("query_one", {"n": 99}) == (None, None)


def test_no_limit_and_no_skip_may_be_none_as_in_maggmas_stores(pair: Pair) -> None:
    pair.update(DOCS)
    for unset in ({"limit": None}, {"skip": None}, {"skip": None, "limit": None}):
        theirs, ours = pair.both("query", {"n": {"$lt": 3}}, properties=["task_id"], **unset)
        assert sorted(d["task_id"] for d in ours) == ["mp-0", "mp-1", "mp-2"]
        assert sorted(ours, key=str) == sorted(theirs, key=str)
        assert [d["task_id"] for d in pair.s3idx.query({"n": 5}, **unset)] == ["mp-5"]


def test_distinct_groupby_and_last_updated_answer_as_maggmas(pair: Pair) -> None:
    pair.update(DOCS)

    for field, criteria in [("group", None), ("elements", None), ("n", {"group": "b"})]:
        theirs, ours = pair.both("distinct", field, criteria=criteria)
        assert sorted(ours) == sorted(theirs), field
    assert sorted(pair.s3idx.distinct("elements")) == ["Fe", "Li", "O"]  # arrays' elements

    theirs, ours = pair.both("groupby", "group", properties=["n"])
    assert _by_n(ours) == _by_n(theirs)  # in a group, documents come in the index's order
    assert _by_n(ours) == [
        ({"group": "a"}, [{"group": "a", "n": n} for n in (0, 2, 4)]),
        ({"group": "b"}, [{"group": "b", "n": n} for n in (1, 3, 5)]),
    ]
    theirs, ours = pair.both("groupby", ["group", "n"], criteria={"n": {"$lt": 2}})
    # Without properties maggma's S3Store groups its index documents (the searchable fields,
    # its obj_hash and metadata map); S3idxStore groups the documents themselves.
    assert [group for group, _ in ours] == [group for group, _ in theirs]
    assert _by_n(ours) == [({"group": "a", "n": 0}, [DOCS[0]]), ({"group": "b", "n": 1}, [DOCS[1]])]

    latest = DOCS[5]["last_updated"]
    assert (pair.maggma.last_updated, pair.s3idx.last_updated) == (latest, latest)


def test_newer_in_and_updated_keys_answer_as_maggmas(pair: Pair) -> None:
    pair.update(DOCS[:4])
    source = MemoryStore("source", key="task_id")
    source.connect()
    newer = [{**d, "last_updated": d["last_updated"] + timedelta(days=1)} for d in DOCS[2:]]
    source.update([*copy.deepcopy(DOCS[:2]), *newer])

    for exhaustive in (True, False):
        theirs, ours = pair.both("newer_in", source, exhaustive=exhaustive)
        assert sorted(ours) == sorted(theirs) == ["mp-2", "mp-3", "mp-4", "mp-5"], exhaustive
    theirs, ours = pair.both("newer_in", source, criteria={"n": {"$lt": 3}}, exhaustive=True)
    assert sorted(ours) == sorted(theirs) == ["mp-2"]
    with pytest.warns(FutureWarning, match="updated_keys is deprecated"):
        theirs, ours = pair.both("updated_keys", source)
    assert sorted(ours) == sorted(theirs) == ["mp-2", "mp-3", "mp-4", "mp-5"]
    # And the other way round: S3idxStore as the store whose documents are newer.
    assert sorted(source.newer_in(pair.s3idx, exhaustive=True)) == []
    pair.s3idx.update({**DOCS[0], "last_updated": datetime(2027, 1, 1)})
    assert source.newer_in(pair.s3idx, exhaustive=True) == ["mp-0"]


def test_remove_docs_removes_the_objects_too(pair: Pair) -> None:
    pair.update(DOCS)

    pair.both("remove_docs", {"n": {"$gte": 4}})

    assert pair.both("count") == (4, 4)
    assert [d["n"] for d in pair.s3idx.query(properties=["n"], sort={"n": 1})] == [0, 1, 2, 3]
    # maggma's S3Store, by default, drops the index documents and leaves the objects; s3idx's
    # index mirrors the bucket, so the objects go with their entries.
    assert len(pair.objects("maggma/")) == 6
    assert pair.objects("s3idx/") == [f"s3idx/mp-{i}" for i in range(4)]
    with pytest.raises(UsageError, match="remove_s3_object=False"):
        pair.s3idx.remove_docs({}, remove_s3_object=False)


# --- where s3idx differs on purpose -------------------------------------------------------------


def test_a_criterion_on_a_field_not_indexed_is_refused_where_maggma_finds_nothing(
    pair: Pair,
) -> None:
    pair.update(DOCS)

    assert list(pair.maggma.query({"structure.charge": 0})) == []  # maggma: silently nothing
    with pytest.raises(FieldNotIndexedError, match=r"'structure\.charge' is not indexed"):
        list(pair.s3idx.query({"structure.charge": 0}))
    with pytest.raises(FieldNotIndexedError):
        pair.s3idx.count({"structure": {"$exists": True}})


def test_documents_keep_their_last_updated_and_a_missing_one_is_the_time_of_storing(
    pair: Pair,
) -> None:
    given = copy.deepcopy(DOCS[0])
    pair.s3idx.update(given)
    assert given == DOCS[0]  # maggma's S3Store pops last_updated from the caller's document
    without = {k: v for k, v in DOCS[1].items() if k != "last_updated"}
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)

    pair.update([without])

    # maggma keeps no last_updated for it; s3idx's entry always has one: when it was stored.
    assert "last_updated" not in pair.maggma.query_one({"task_id": "mp-1"})
    stamped = pair.s3idx.query_one({"task_id": "mp-1"})
    assert before <= stamped["last_updated"] <= datetime.now(UTC).replace(tzinfo=None)
    assert pair.s3idx.query_one({"task_id": "mp-0"}, properties=["last_updated"]) == {
        "last_updated": DOCS[0]["last_updated"]
    }
    with pytest.raises(S3idxStoreError, match="'last_updated' must be a date and time"):
        pair.s3idx.update({**DOCS[2], "last_updated": "yesterday"})


def test_an_index_only_query_reads_no_object(pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    pair.s3idx.update(DOCS[:3])
    boto3.client("s3", endpoint_url=pair.endpoint).delete_object(
        Bucket=pair.bucket, Key="s3idx/mp-1"
    )

    assert [d["n"] for d in pair.s3idx.query(properties=["n"], sort={"n": 1})] == [0, 1, 2]
    with caplog.at_level(logging.ERROR):
        assert [d["n"] for d in pair.s3idx.query(sort={"n": 1})] == [0, 2]
    assert "mp-1: listed by the index but not in the store" in caplog.text


def test_a_damaged_document_is_an_error_naming_it_never_returned(pair: Pair) -> None:
    pair.s3idx.update(DOCS[:2])
    client = boto3.client("s3", endpoint_url=pair.endpoint)
    head = client.head_object(Bucket=pair.bucket, Key="s3idx/mp-1")
    client.put_object(  # another body under the same metadata: its sha256 no longer matches
        Bucket=pair.bucket,
        Key="s3idx/mp-1",
        Body=zlib.compress(b'{"task_id": "mp-1", "n": 100}'),
        Metadata=head["Metadata"],
    )

    assert [d["n"] for d in pair.s3idx.query(properties=["n"], sort={"n": 1})] == [0, 1]
    with pytest.raises(DamagedObjectError, match="cannot read mp-1: "):
        list(pair.s3idx.query(sort={"n": 1}))


def test_a_document_the_store_keeps_failing_is_an_unavailable_error_naming_it(
    pair: Pair, index_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, retry, rng: 0.0)
    pair.s3idx.update(DOCS[:2])
    with S3Proxy(pair.endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path.endswith("/mp-1")
        through = S3idxStore(
            store=f"s3://{pair.bucket}/s3idx",
            index=index_location,
            key="task_id",
            endpoint_url=proxy.url,
        )
        through.connect()
        try:
            with pytest.raises(BackendUnavailableError, match=r"cannot read mp-1: .*gave up"):
                list(through.query(sort={"n": 1}))
        finally:
            through.close()


def test_update_names_the_documents_other_writers_kept_from_being_indexed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s3idx.index.sqlite import SqliteIndex

    original = SqliteIndex.upsert_if

    def contended(self: SqliteIndex, entries: Any, expected: Any) -> set[str]:
        moved = [e for e in entries if e["task_id"] == "mp-2"]
        if moved:
            self.upsert(moved)  # another writer, each time just before this compare-and-set
        return original(self, entries, expected)

    monkeypatch.setattr(SqliteIndex, "upsert_if", contended)
    store = S3idxStore(store=str(tmp_path / "store"), index=str(tmp_path / "index.sqlite3"))
    store.connect()
    try:
        with pytest.raises(S3idxStoreError) as failed:
            store.update([{"task_id": f"mp-{i}", "n": i} for i in range(4)])
    finally:
        store.close()
    message = str(failed.value)
    named = "other writers kept changing the entries of mp-2 (sync indexes them)"
    assert f"1 document stored but not indexed, {named}" in message
    assert failed.value.partial_result.contended_keys == ["mp-2"]


class Lattice(MSONable):  # type: ignore[misc]
    def __init__(self, a: float) -> None:
        self.a = a


def test_update_sanitizes_as_mongostore_and_reports_what_it_could_not_store(pair: Pair) -> None:
    with pytest.raises(S3idxStoreError) as failed:
        pair.s3idx.update(
            [
                {**DOCS[0], "lattice": Lattice(2.5), "_id": "mongo's own"},
                {"n": 7},
                {**DOCS[2], "energy": float("nan")},
                DOCS[1],
            ]
        )
    message = str(failed.value)
    assert "2 documents not stored" in message
    assert "<documents>:2: missing key field 'task_id'" in message
    assert "<documents>:3: indexed field 'energy' holds nan, which JSON cannot carry" in message
    assert len(failed.value.rejects) == 2
    assert failed.value.partial_result.stored == 2  # the others were stored
    stored = pair.s3idx.query_one({"task_id": "mp-0"})
    assert stored["lattice"] == {
        "@module": __name__,
        "@class": "Lattice",
        "@version": None,
        "a": 2.5,
    }
    assert "_id" not in stored
    with pytest.raises(UsageError, match="unique by its key 'task_id' alone"):
        pair.s3idx.update(DOCS[0], key=["task_id", "n"])
    pair.s3idx.update(DOCS[0], key="task_id")


def test_ensure_index(pair: Pair, s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    empty = S3idxStore(
        store=f"s3://{s3_bucket}/empty",
        index=str(tmp_path / "empty.sqlite3"),
        searchable_fields=["last_updated", "task_id"],  # as maggma users list them: always held
        endpoint_url=s3_endpoint,
    )
    with empty:
        assert empty.ensure_index("task_id", unique=True)
        assert empty.ensure_index("last_updated")
        assert not empty.ensure_index("state", unique=True)
        assert empty.ensure_index("state")  # a new, empty store indexes it now
        assert not empty.ensure_index("a..b")  # no document could hold it
        empty.update([{"task_id": "a", "state": "failed"}, {"task_id": "b", "state": "ok"}])
        assert empty.distinct("task_id", {"state": "failed"}) == ["a"]
    pair.update(DOCS[:1])
    assert pair.s3idx.ensure_index("group")
    assert not pair.s3idx.ensure_index("structure")  # documents stored: that needs reindex


def test_mson_round_trip_equality_and_no_secret_beyond_what_was_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("S3IDX_ENDPOINT_URL", "http://from-the-environment:9000")
    store = S3idxStore(
        store="s3://bucket/docs",
        index="mongodb://ann:s3cret-pass@db.example/s3idx",
        key="task_id",
        searchable_fields=["n"],
        compress=True,
        s3_workers=16,
    )

    as_dict = store.as_dict()
    text = store.to_json()

    assert as_dict["index"] == "mongodb://ann:s3cret-pass@db.example/s3idx"  # given: kept
    assert store.index_location == as_dict["index"]
    # maggma's S3Store.newer_in takes a store with an ``index`` attribute for one of its own.
    assert not hasattr(store, "index")
    assert set(as_dict) == {  # what serialized builders hold: the constructor's arguments
        *("@module", "@class", "@version", "store", "index", "key", "searchable_fields"),
        *("last_updated_field", "last_updated_type", "compress", "endpoint_url", "s3_workers"),
        *("collection", "region", "aws_profile", "transport", "create_bucket", "timeout"),
        *("batch_size", "profile", "config_file", "validator"),
    }
    for secret in ("testing", "from-the-environment"):  # AWS credentials, S3IDX_* settings
        assert secret not in text
    again = S3idxStore.from_dict(as_dict)
    assert again == store and hash(again) == hash(store)
    assert MontyDecoder().decode(text) == store
    assert pickle.loads(pickle.dumps(store)) == store
    assert again.as_dict() == as_dict
    assert store != S3idxStore(store="s3://bucket/docs", index=str(tmp_path / "other.sqlite3"))
    assert store != MemoryStore("docs")
    assert store.name == "s3://bucket/docs"
    assert "s3cret" not in repr(store) and "ann:***@" in repr(store)


def test_an_unreachable_index_is_reported_without_its_password() -> None:
    store = S3idxStore(
        store="s3://bucket/docs",
        index="mongodb://ann:pw-never-shown@127.0.0.1:9/s3idx",
        timeout=1,
    )
    with pytest.raises(S3idxError) as failed:
        store.connect()
    assert "127.0.0.1:9" in str(failed.value)
    assert "pw-never-shown" not in str(failed.value)


def test_a_store_not_connected_or_badly_located_says_what_to_do(tmp_path: Path) -> None:
    store = S3idxStore(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3"))
    with pytest.raises(UsageError, match=r"is not connected\ncall connect\(\) first"):
        store.count()
    with pytest.raises(UsageError, match="did you mean 's3://bucket'"):
        S3idxStore(store="s3:/bucket", index=str(tmp_path / "i.sqlite3")).connect()
    with pytest.raises(UsageError, match="last_updated_type 'isoformat' is not supported"):
        S3idxStore(store="x", index="y", last_updated_type="isoformat")
    with store:  # maggma's context manager: connect, then close
        assert store.update([]).stored == 0
        assert store.remove_docs({}).deleted == 0  # nothing written yet: no store to open
        assert store.count() == 0
        assert store.last_updated == datetime.min
        assert list(store.query()) == []
    with pytest.raises(UsageError, match="not connected"):
        store.count()


def test_rebuild_index_and_metadata_map_onto_rebuild_index_and_sync(
    pair: Pair, tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    pair.s3idx.update(DOCS)
    before = list(
        pair.s3idx.query(properties=["task_id", *SEARCHABLE, "last_updated"], sort={"n": 1})
    )
    lost = S3idxStore(
        store=f"s3://{s3_bucket}/s3idx",
        index=str(tmp_path / "lost.sqlite3"),
        searchable_fields=SEARCHABLE,
        endpoint_url=s3_endpoint,
    )
    with lost:
        assert lost.count() == 0

        result = lost.rebuild_index_from_s3_data()

        assert (result.listed, result.written) == (6, 6)
        # From the metadata alone, exactly: types and last_updated as written.
        assert (
            list(lost.query(properties=["task_id", *SEARCHABLE, "last_updated"], sort={"n": 1}))
            == before
        )
        boto3.client("s3", endpoint_url=s3_endpoint).delete_object(
            Bucket=s3_bucket, Key="s3idx/mp-0"
        )
        synced, reindexed = lost.rebuild_metadata_from_index()
        assert (synced.removed, reindexed) == (1, None)
        assert lost.count() == 5


def test_a_bucket_maggma_wrote_is_read_through_s3idx_store_after_a_rebuild(
    pair: Pair, tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    pair.maggma.update(copy.deepcopy(DOCS))
    adopted = S3idxStore(
        store=f"s3://{s3_bucket}/maggma",
        index=str(tmp_path / "adopted.sqlite3"),
        searchable_fields=SEARCHABLE,
        endpoint_url=s3_endpoint,
    )
    with adopted:
        result = adopted.rebuild_index_from_s3_data()

        assert (result.written, result.maggma.indexed) == (6, 6)
        # Documents from maggma's msgpack bodies, datetimes included. maggma kept last_updated
        # in its own index only (not a searchable field): the entry's is when maggma stored it.
        found = list(adopted.query({"n": {"$gte": 4}}, sort={"n": 1}))
        stamps = [doc.pop("last_updated") for doc in found]
        assert found == [{k: v for k, v in d.items() if k != "last_updated"} for d in DOCS[4:]]
        now = datetime.now(UTC).replace(tzinfo=None)
        assert all(now - timedelta(minutes=5) < stamp <= now for stamp in stamps)
        # Entries from maggma's str() metadata: numbers and datetimes come back, lists do not.
        assert adopted.query_one({"n": 1}, properties=["when", "elements"]) == {
            "elements": "['Li']",
            "when": DOCS[1]["when"],
        }


def test_the_engine_alone_still_stamps_the_time_of_storing(tmp_path: Path) -> None:
    from s3idx import open_engine

    with open_engine(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3")) as engine:
        engine.put_documents([{"fs_id": "a", "last_updated": datetime(2020, 1, 1)}])
        entry = next(engine.query({}))
        assert entry["last_updated"] > datetime(2026, 1, 1, tzinfo=UTC)  # not the document's
        assert engine.get("a")["last_updated"] == datetime(2020, 1, 1, tzinfo=UTC)


# --- builders end to end, and the command line sees what they wrote -----------------------------


@pytest.fixture(autouse=True)
def maggma_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A builder's run sets the root logger to DEBUG with a handler on stdout: undone after."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _quiet() -> None:
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, logging.StreamHandler)]
    root.setLevel(logging.WARNING)


class Doubler(MapBuilder):  # type: ignore[misc]
    def unary_function(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"double": item["n"] * 2, "n": item["n"]}


class LastingMemoryStore(MemoryStore):  # type: ignore[misc]
    """A MemoryStore whose data outlives a builder's run (which closes its stores), as a
    MongoStore's data outlives its connection: mongomock's closes for good."""

    def close(self) -> None:
        pass


def test_a_map_builder_copies_1000_documents_and_a_second_run_processes_none(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, run: Run
) -> None:
    source = LastingMemoryStore("source", key="task_id")
    source.connect()
    start = datetime(2026, 3, 1)
    source.update(
        [
            {"task_id": f"t-{i:04d}", "n": i, "last_updated": start + timedelta(seconds=i)}
            for i in range(1000)
        ]
    )
    index = str(tmp_path / "target.sqlite3")
    target = S3idxStore(
        store=f"s3://{s3_bucket}/built",
        index=index,
        searchable_fields=["n", "double"],
        endpoint_url=s3_endpoint,
        s3_workers=8,
    )
    builder = Doubler(source, target)

    builder.run()

    assert builder.total == 1000
    with target:
        assert target.count() == 1000
        assert target.count({"double": 1998}) == 1
        assert target.last_updated == start + timedelta(seconds=999)
        assert target.newer_in(source, exhaustive=True) == []
    again = Doubler(source, target)
    again.run()
    assert again.total == 0  # newer_in: nothing newer in the source
    source.update({"task_id": "t-0007", "n": 7, "last_updated": datetime(2026, 4, 1)})
    third = Doubler(source, target)
    third.run()
    assert third.total == 1

    # The command line sees what the builder wrote.
    _quiet()
    args = ["--store", f"s3://{s3_bucket}/built", "--endpoint-url", s3_endpoint]
    result = run(
        "query", "--index", index, "--sort", "n", "--fields", "task_id,n,double,last_updated"
    )
    assert result.exit_code == 0, result.stderr
    entries = [codec.untag(e) for e in json_lines(result.stdout)]
    written = {i: start.replace(tzinfo=UTC) + timedelta(seconds=i) for i in range(1000) if i != 7}
    written[7] = datetime(2026, 4, 1, tzinfo=UTC)  # the third run's
    assert entries == [
        {"task_id": f"t-{i:04d}", "n": i, "double": 2 * i, "last_updated": written[i]}
        for i in range(1000)
    ]
    got = run("get", *args, "--index", index, "t-0500")
    assert got.exit_code == 0, got.stderr
    assert got.stdout.startswith("{"), got.stdout[:300]
    document = codec.loads(got.stdout)
    assert (document["double"], document["state"]) == (1000, "successful")


def test_s3idx_store_as_source_and_target_of_a_copy_builder(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    def store(name: str) -> S3idxStore:
        return S3idxStore(
            store=f"s3://{s3_bucket}/{name}",
            index=str(tmp_path / f"{name}.sqlite3"),
            searchable_fields=["n"],
            endpoint_url=s3_endpoint,
        )

    source, target = store("source"), store("target")
    with source:
        source.update(copy.deepcopy(DOCS))

    CopyBuilder(source, target).run()

    with source, target:
        assert list(target.query(sort={"n": 1}, properties={"_bt": 0, "_process_time": 0})) == [
            {**d, "state": "successful"} for d in DOCS
        ]
        assert target.newer_in(source, exhaustive=True) == []
        assert target.newer_in(source) == []
    second = CopyBuilder(source, target)
    second.run()
    assert second.total == 0


# --- builders mixing S3idxStore with maggma's own stores ----------------------------------------


class Grouper(GroupBuilder):  # type: ignore[misc]
    def unary_function(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"group": items[0]["group"], "total": sum(item["n"] for item in items)}


def _mixed_store(
    kind: str, name: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path, fields: list[str]
) -> Any:
    """A store of ``kind``: S3idxStore, maggma's S3Store (its index a MemoryStore, ``fields``
    its searchable fields, which every document must have; its distinct reads its index
    alone) or maggma's MemoryStore; the memory ones keep their data across a builder's close."""
    if kind == "s3idx":
        return S3idxStore(
            store=f"s3://{s3_bucket}/{name}",
            index=str(tmp_path / f"{name}.sqlite3"),
            searchable_fields=["n", "group"],
            endpoint_url=s3_endpoint,
        )
    if kind == "s3store":
        return MaggmaS3Store(
            index=LastingMemoryStore(f"{name}-index", key="task_id"),
            bucket=s3_bucket,
            s3_profile=None,
            endpoint_url=s3_endpoint,
            sub_dir=name,
            key="task_id",
            searchable_fields=fields,
        )
    return LastingMemoryStore(name, key="task_id")


MIXED = [("s3idx", "s3store"), ("s3store", "s3idx"), ("s3idx", "memory"), ("memory", "s3idx")]


@pytest.mark.parametrize(("source_kind", "target_kind"), MIXED)
def test_a_map_builder_runs_between_s3idx_store_and_maggmas_stores(
    source_kind: str, target_kind: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    source = _mixed_store(source_kind, "source", s3_endpoint, s3_bucket, tmp_path, ["n"])
    target = _mixed_store(target_kind, "target", s3_endpoint, s3_bucket, tmp_path, [])
    source.connect()
    source.update(copy.deepcopy(DOCS))

    first = Doubler(source, target)
    first.run()
    second = Doubler(source, target)
    second.run()
    source.connect()
    source.update({**copy.deepcopy(DOCS[3]), "n": 30, "last_updated": datetime(2026, 5, 1)})
    third = Doubler(source, target)
    third.run()

    assert (first.total, second.total, third.total) == (6, 0, 1)
    source.connect()  # a builder's run closes its stores
    target.connect()
    try:
        built = sorted(target.query(properties=["task_id", "double"]), key=lambda d: d["task_id"])
        doubled = [2 * d["n"] if d["task_id"] != "mp-3" else 60 for d in DOCS]
        assert [(d["task_id"], d["double"]) for d in built] == [
            (d["task_id"], double) for d, double in zip(DOCS, doubled, strict=True)
        ]
        assert target.newer_in(source, exhaustive=True) == []
        assert source.newer_in(target) == []
    finally:
        target.close()
        source.close()


@pytest.mark.parametrize(("source_kind", "target_kind"), MIXED)
def test_a_group_builder_runs_between_s3idx_store_and_maggmas_stores(
    source_kind: str, target_kind: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    source = _mixed_store(source_kind, "source", s3_endpoint, s3_bucket, tmp_path, ["group"])
    fields = ["group", "task_ids"]  # which ids the target holds: GroupBuilder asks distinct
    target = _mixed_store(target_kind, "target", s3_endpoint, s3_bucket, tmp_path, fields)
    source.connect()
    source.update(copy.deepcopy(DOCS))

    first = Grouper(source, target, grouping_keys=["group"])
    first.run()
    second = Grouper(source, target, grouping_keys=["group"])
    second.run()

    assert (first.total, second.total) == (2, 0)
    source.connect()
    target.connect()
    try:
        built = sorted(target.query(properties=["group", "total", "task_ids"]), key=str)
        assert sorted((d["group"], d["total"], sorted(d["task_ids"])) for d in built) == [
            ("a", 0 + 2 + 4, ["mp-0", "mp-2", "mp-4"]),
            ("b", 1 + 3 + 5, ["mp-1", "mp-3", "mp-5"]),
        ]
    finally:
        target.close()
        source.close()


def test_a_connected_s3idx_store_on_obstore_works_in_a_forked_child(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    pytest.importorskip("obstore")
    store = S3idxStore(
        store=f"s3://{s3_bucket}/forked",
        index=str(tmp_path / "index.sqlite3"),
        searchable_fields=["n"],
        endpoint_url=s3_endpoint,
        transport="obstore",
    )
    with store:
        store.update({"task_id": "parent", "n": 0})

        def child() -> None:
            store.update([{"task_id": "child", "n": 1}])
            assert [d["n"] for d in store.query(sort={"n": 1})] == [0, 1]

        run_in_fork(child, timeout=30)
        assert [d["task_id"] for d in store.query(sort={"n": 1})] == ["parent", "child"]
