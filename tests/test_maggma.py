"""Buckets written by maggma's S3Store, adopted in place: maggma itself writes the objects.

maggma (installed from PyPI with the test extra) writes into the moto server over HTTP, exactly
as it writes into S3; s3idx then indexes, reads and rewrites those objects through its CLI and
its engine.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from s3idx import Engine, codec
from s3idx.errors import ExitStatus
from s3idx.index.sqlite import SqliteIndex
from s3idx.maggma_format import parse_value
from s3idx.store.s3 import S3Store
from tests.helpers import Run

ENTRY_FIELDS = "_s3idx,n,energy,stable,note,when,elements,formula,meta,material_id,last_updated"


def _document(i: int) -> dict[str, Any]:
    return {
        "task_id": f"mp-{i}",
        "material_id": f"mp-{i}",  # equal to the key: maggma's map order says which is the key
        "n": i,
        "energy": -1.25 * i - 0.1,
        "stable": i % 2 == 0,
        "note": None,
        "when": datetime(2026, 1, 1 + i, 3, 4, 5, 678901, tzinfo=UTC),
        "elements": ["Fe", "O"] if i % 2 else ["Li"],
        "formula": str(100 + i),  # a string that looks like a number
        "meta": {"owner": "ann"},
        "last_updated": datetime(2026, 2, 1, 0, 0, i, 123456),  # naive, as maggma's are
        "structure": {"sites": [[0.0, 0.5, 1.0]], "charge": 0},
        "blob": b"\x00\x01",
    }


@dataclass
class MaggmaBucket:
    """A bucket that maggma's S3Store writes into, on the moto server."""

    endpoint: str
    bucket: str
    sub_dir: str | None
    compress: bool
    fields: list[str]

    def write(self, documents: list[dict[str, Any]]) -> None:
        from maggma.stores import MemoryStore
        from maggma.stores import S3Store as MaggmaS3Store

        store = MaggmaS3Store(
            index=MemoryStore("maggma-index", key="task_id"),
            bucket=self.bucket,
            s3_profile=None,
            endpoint_url=self.endpoint,
            compress=self.compress,
            sub_dir=self.sub_dir,
            key="task_id",
            searchable_fields=self.fields,
        )
        store.connect()
        try:
            # maggma pops last_updated out of the documents it is given: give it copies.
            store.update(copy.deepcopy(documents))
        finally:
            store.close()

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.sub_dir}" if self.sub_dir else f"s3://{self.bucket}"

    @property
    def args(self) -> list[str]:
        return ["--store", self.location, "--endpoint-url", self.endpoint]

    @property
    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint)

    def object_key(self, key: str) -> str:
        return f"{self.sub_dir}/{key}" if self.sub_dir else key

    def engine(self, tmp_path: Path) -> Engine:
        prefix = self.sub_dir or ""
        store = S3Store(self.bucket, prefix, endpoint_url=self.endpoint)
        return Engine(store, SqliteIndex(tmp_path / "engine.sqlite3"), workers=4)


SEARCHABLE = ["material_id", "n", "energy", "stable", "note", "when", "elements", "formula", "meta"]


@pytest.fixture(
    params=[
        pytest.param((True, "maggma/docs", True), id="zlib-sub_dir-last_updated"),
        pytest.param((False, None, False), id="plain-root"),
    ]
)
def maggma(request: pytest.FixtureRequest, s3_endpoint: str, s3_bucket: str) -> MaggmaBucket:
    compress, sub_dir, with_last_updated = request.param
    fields = SEARCHABLE + (["last_updated"] if with_last_updated else [])
    return MaggmaBucket(s3_endpoint, s3_bucket, sub_dir, compress, fields)


def _lines(text: str) -> list[Any]:
    """JSON lines as s3idx values: {"$date": ...} as datetimes."""
    return [codec.loads(line) for line in text.splitlines() if line.strip()]


def _as_json_can_carry(document: dict[str, Any], maggma: MaggmaBucket) -> dict[str, Any]:
    """What maggma was given, as s3idx returns it: datetimes in UTC to the millisecond, bytes as
    Extended JSON, and last_updated only where maggma kept it in the metadata."""
    expected = copy.deepcopy(document)
    expected["when"] = codec.normalize_datetime(expected["when"])
    expected["blob"] = {"$binary": {"base64": "AAE=", "subType": "00"}}
    if "last_updated" in maggma.fields:
        expected["last_updated"] = codec.normalize_datetime(expected["last_updated"])
    else:
        del expected["last_updated"]  # maggma keeps it in its own index only
    return expected


def _recovered_entry(document: dict[str, Any]) -> dict[str, Any]:
    """The entry s3idx can recover from maggma's str() metadata, types and all."""
    return {
        "task_id": document["task_id"],
        "material_id": document["material_id"],
        "n": document["n"],
        "energy": document["energy"],
        "stable": document["stable"],
        "note": None,
        "when": codec.normalize_datetime(document["when"]),
        "elements": repr(document["elements"]),  # Python repr: stays a string
        "formula": int(document["formula"]),  # a string that looks like a number: a number
        "meta": repr(document["meta"]),
    }


def _entries(run: Run, *args: str) -> list[dict[str, Any]]:
    result = run("query", "--sort", "task_id", *args)
    assert result.exit_code == 0, result.stderr
    return _lines(result.stdout)


def _head(maggma: MaggmaBucket, key: str) -> dict[str, Any]:
    return maggma.client.head_object(Bucket=maggma.bucket, Key=maggma.object_key(key))


def _rebuild(run: Run, maggma: MaggmaBucket, *flags: str) -> dict[str, Any]:
    result = run("rebuild-index", *maggma.args, "--json", *flags)
    assert result.exit_code == 0, result.stderr
    return orjson.loads(result.stdout)


DOCUMENTS = [_document(i) for i in range(6)]


def test_rebuild_index_recovers_entries_from_maggma_metadata(
    run: Run, maggma: MaggmaBucket
) -> None:
    maggma.write(DOCUMENTS)

    summary = _rebuild(run, maggma)

    assert (summary["listed"], summary["written"], summary["maggma"]) == (6, 6, 6)
    assert (summary["not_s3idx"], summary["undecodable"], summary["rewritten"]) == (0, 0, 0)
    assert summary["key_field"] == "task_id"  # maggma's key, first in its map
    assert summary["fields"] == SEARCHABLE
    started = datetime.now(UTC)
    entries = _entries(run, "--fields", ENTRY_FIELDS)
    for entry, document in zip(entries, DOCUMENTS, strict=True):
        bookkeeping = entry.pop("_s3idx")
        last_updated = entry.pop("last_updated")
        assert entry == _recovered_entry(document)
        assert bookkeeping["codec"] == ("msgpack+zlib" if maggma.compress else "msgpack")
        assert bookkeeping["sha256"] is None
        assert bookkeeping["etag"] == _head(maggma, document["task_id"])["ETag"].strip('"')
        if "last_updated" in maggma.fields:
            assert last_updated == codec.normalize_datetime(document["last_updated"])
        else:  # when maggma stored the object
            assert abs(last_updated - started) < timedelta(minutes=5)
    assert run("query", '{"n": {"$gte": 4}, "stable": true}', "--count").stdout == "1\n"


def test_get_and_query_full_give_back_what_maggma_was_given(
    run: Run, maggma: MaggmaBucket, tmp_path: Path
) -> None:
    maggma.write(DOCUMENTS)
    assert run("sync", *maggma.args).exit_code == 0
    expected = [_as_json_can_carry(d, maggma) for d in DOCUMENTS]

    got = run("get", *maggma.args, "mp-3", "mp-0")
    assert got.exit_code == 0, got.stderr
    assert _lines(got.stdout) == [expected[3], expected[0]]

    full = run("query", *maggma.args, '{"n": {"$lt": 3}}', "--full", "--sort", "-n")
    assert full.exit_code == 0, full.stderr
    assert _lines(full.stdout) == [expected[2], expected[1], expected[0]]

    with maggma.engine(tmp_path) as engine:
        assert engine.get("mp-5") == expected[5]


def test_objects_neither_s3idx_nor_maggma_are_reported_as_before(
    run: Run, maggma: MaggmaBucket
) -> None:
    maggma.write(DOCUMENTS[:2])
    maggma.client.put_object(
        Bucket=maggma.bucket, Key=maggma.object_key("readme.txt"), Body=b"hello"
    )

    summary = _rebuild(run, maggma)

    assert (summary["written"], summary["maggma"], summary["not_s3idx"]) == (2, 2, 1)
    assert summary["not_s3idx_keys"] == ["readme.txt"]


def test_a_store_prefix_other_than_sub_dir_is_named_in_the_reason(
    run: Run, s3_endpoint: str, s3_bucket: str
) -> None:
    maggma = MaggmaBucket(s3_endpoint, s3_bucket, "maggma/docs", True, SEARCHABLE)
    maggma.write(DOCUMENTS[:1])

    result = run("rebuild-index", "--store", f"s3://{s3_bucket}", "--endpoint-url", s3_endpoint)

    assert result.exit_code == ExitStatus.PARTIAL
    assert (
        "maggma/docs/mp-0: metadata cannot be decoded: no field of its maggma metadata holds its "
        "key 'maggma/docs/mp-0' (maggma wrote it with sub_dir 'maggma/docs/': is that the "
        "store's prefix?)"
    ) in result.stderr


def test_key_flag_chooses_another_field_holding_the_key(run: Run, maggma: MaggmaBucket) -> None:
    maggma.write(DOCUMENTS[:3])

    summary = _rebuild(run, maggma, "--key", "material_id")

    assert summary["key_field"] == "material_id"
    assert "task_id" in summary["fields"] and "material_id" not in summary["fields"]
    assert run("query", '{"task_id": "mp-2"}', "--count").stdout == "1\n"


def test_sync_adopts_new_and_changed_maggma_objects(run: Run, maggma: MaggmaBucket) -> None:
    maggma.write(DOCUMENTS[:4])
    first = orjson.loads(run("sync", *maggma.args, "--json").stdout)
    assert (first["added"], first["maggma"]) == (4, 4)

    maggma.write([*DOCUMENTS[4:], {**DOCUMENTS[1], "energy": 7.5}])

    check = run("sync", *maggma.args, "--check")
    assert check.exit_code == ExitStatus.DRIFT
    assert sorted(check.stdout.splitlines()) == [
        "bucket-only\tmp-4",
        "bucket-only\tmp-5",
        "changed\tmp-1",
    ]
    repair = orjson.loads(run("sync", *maggma.args, "--json").stdout)
    assert (repair["added"], repair["updated"], repair["maggma"]) == (2, 1, 3)
    assert [e["task_id"] for e in _entries(run, '{"energy": 7.5}')] == ["mp-1"]
    assert run("sync", *maggma.args, "--check").exit_code == 0


def _snapshot(run: Run) -> str:
    result = run("query", "--sort", "task_id", "--fields", ENTRY_FIELDS)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_rewrite_converts_objects_and_a_later_rebuild_is_exact(
    run: Run, maggma: MaggmaBucket
) -> None:
    maggma.write(DOCUMENTS)
    before = run("get", *maggma.args, *(d["task_id"] for d in DOCUMENTS)).stdout

    summary = _rebuild(run, maggma, "--rewrite")

    assert (summary["written"], summary["maggma"], summary["rewritten"]) == (6, 6, 6)
    assert summary["rewrite_failed"] == 0
    head = _head(maggma, "mp-1")
    assert set(head["Metadata"]) == {
        "s3idx-format",
        "s3idx-codec",
        "s3idx-sha256",
        "s3idx-key",
        "s3idx-fields",
        "s3idx-entry",
    }
    assert head["Metadata"]["s3idx-codec"] == "json+zlib"
    entries = _entries(run, "--fields", ENTRY_FIELDS)
    assert entries[1]["_s3idx"]["etag"] == head["ETag"].strip('"')
    # The entries now come from the documents themselves: every type is right.
    assert entries[1]["elements"] == ["Fe", "O"]
    assert entries[1]["formula"] == "101"
    assert entries[1]["meta"] == {"owner": "ann"}
    assert run("get", *maggma.args, *(d["task_id"] for d in DOCUMENTS)).stdout == before

    rewritten = _snapshot(run)
    Path(orjson.loads(run("info", "--json").stdout)["index"]).unlink()
    again = _rebuild(run, maggma)
    assert (again["written"], again["maggma"]) == (6, 0)
    # The rewrite wrote a manifest line for each object it rewrote: no HEAD needed now.
    assert (again["heads"], again["from_manifests"]) == (0, 6)
    assert _snapshot(run) == rewritten
    assert run("sync", *maggma.args, "--check").exit_code == 0


def test_sync_rewrite_converts_objects_already_indexed_from_maggma_metadata(
    run: Run, maggma: MaggmaBucket, tmp_path: Path
) -> None:
    maggma.write(DOCUMENTS)
    with maggma.engine(tmp_path) as engine:
        assert engine.rebuild_index().written == 6

        result = engine.sync(rewrite=True)

        assert (result.drift, result.added, result.updated) == (0, 0, 0)
        assert (result.maggma.indexed, result.maggma.rewritten) == (6, 6)
        assert engine.sync(check=True).drift == 0
        entry = next(engine.query({"task_id": "mp-3"}))
        assert entry["_s3idx"]["codec"] == "json+zlib"
        assert entry["elements"] == ["Fe", "O"]
        assert engine.get("mp-3") == _as_json_can_carry(DOCUMENTS[3], maggma)
        # Nothing left to rewrite: a second pass reads nothing.
        assert engine.sync(rewrite=True).maggma.indexed == 0
        # Each rewritten object has its manifest line (the new ETag): a rebuild HEADs none.
        rebuilt = engine.rebuild_index()
        assert (rebuilt.heads, rebuilt.from_manifests) == (0, 6)


def test_an_object_that_cannot_be_rewritten_keeps_its_entry_and_is_reported(
    run: Run, s3_endpoint: str, s3_bucket: str
) -> None:
    maggma = MaggmaBucket(s3_endpoint, s3_bucket, "docs", True, SEARCHABLE)
    maggma.write([DOCUMENTS[0], {**DOCUMENTS[1], "structure": {"charge": math.nan}}])

    got = run("get", *maggma.args, "mp-0", "mp-1")
    assert got.exit_code == ExitStatus.PARTIAL  # the readable one is still printed
    assert len(got.stdout.splitlines()) == 1
    assert "cannot read mp-1: document cannot be written as JSON: nan" in got.stderr

    result = run("rebuild-index", *maggma.args, "--rewrite", "--json")

    assert result.exit_code == ExitStatus.PARTIAL
    summary = orjson.loads(result.stdout)
    assert (summary["written"], summary["rewritten"], summary["rewrite_failed"]) == (2, 1, 1)
    assert summary["rewrite_failed_keys"] == [
        {
            "key": "mp-1",
            "reason": "document cannot be stored as JSON: nan is not valid JSON "
            "(NaN and Infinity are not JSON numbers)",
        }
    ]
    assert "mp-1: not rewritten: document cannot be stored as JSON" in result.stderr
    assert _head(maggma, "mp-1")["Metadata"]["compression"] == "zlib"  # left as maggma wrote it
    assert run("query", '{"n": 1}', "--count").stdout == "1\n"


def test_without_msgpack_reading_bodies_says_how_to_install_it(
    run: Run, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    maggma = MaggmaBucket(s3_endpoint, s3_bucket, "docs", False, SEARCHABLE)
    maggma.write(DOCUMENTS[:2])  # maggma itself needs msgpack: before it is taken away
    monkeypatch.setitem(sys.modules, "msgpack", None)  # as if not installed: importing fails

    # Entries come from metadata alone: no msgpack needed.
    assert run("rebuild-index", *maggma.args).exit_code == 0
    for args in (("get", "mp-1"), ("query", "--full"), ("rebuild-index", "--rewrite")):
        result = run(*args, *maggma.args)
        assert result.exit_code == ExitStatus.USAGE, args
        assert "reading objects written by maggma needs the msgpack package" in result.stderr
        assert "pip install 's3idx[maggma]'" in result.stderr


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("None", None),
        ("True", True),
        ("False", False),
        ("42", 42),
        ("-7", -7),
        ("0.1", 0.1),
        ("-1.5", -1.5),
        ("1e-05", 1e-05),
        ("1e+300", 1e300),
        ("2026-01-02 03:04:05.678901+00:00", datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)),
        ("2026-01-02 05:04:05+02:00", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-02-01 00:00:00.123456", datetime(2026, 2, 1, 0, 0, 0, 123000, tzinfo=UTC)),
        ("2026-02-01T00:00:00.124", datetime(2026, 2, 1, 0, 0, 0, 124000, tzinfo=UTC)),
        # Not how Python writes a number, a date or a constant: left as the strings they are.
        ("007", "007"),
        ("-0", "-0"),
        ("+1", "+1"),
        ("1.50", "1.50"),
        ("1_000", "1_000"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("9223372036854775808", "9223372036854775808"),  # beyond 64 bits
        ("2026-13-01 00:00:00", "2026-13-01 00:00:00"),
        ("2026-01-01", "2026-01-01"),
        ("none", "none"),
        ("['Fe', 'O']", "['Fe', 'O']"),
        ("{'a': 1}", "{'a': 1}"),
        ("", ""),
    ],
)
def test_values_come_back_from_str_only_where_that_is_certain(text: str, value: Any) -> None:
    parsed = parse_value(text)
    assert parsed == value
    assert type(parsed) is type(value)


def test_verify_reports_maggma_objects_as_not_checked(run: Run, maggma: MaggmaBucket) -> None:
    maggma.write(DOCUMENTS[:3])
    assert run("sync", *maggma.args).exit_code == 0

    result = run("verify", *maggma.args, "--json")

    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["not_s3idx"], summary["checked"], summary["damaged"]) == (3, 0, 0)
    assert "written by maggma (no recorded hash): not checked" in result.stderr
