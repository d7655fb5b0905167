"""Queries only on what the index holds; ``--field`` checked before it is recorded; ``reindex``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx.engine import reindex as reindex_module
from s3idx.errors import ExitStatus
from s3idx.index.sqlite import SqliteIndex
from tests.helpers import Run, json_lines, jsonl

DOCS = [
    {"fs_id": "a", "n": 3, "meta": {"x": 1, "y": "p"}, "color": "red", "_id": "i1"},
    {"fs_id": "b", "n": 1, "meta": {"x": 2, "y": "q"}, "color": "blue", "_id": "i2"},
    {"fs_id": "c", "n": 2, "meta": {"x": 3, "y": "r"}, "color": "red", "_id": "i3"},
]


@pytest.fixture(params=["local+sqlite", "local+mongodb", "s3+sqlite"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    return _locations(request, tmp_path, request.param)


@pytest.fixture(params=["local+sqlite", "local+mongodb"])
def index_where(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """Each index backend: the refusal happens above the store, so one store is enough."""
    return _locations(request, tmp_path, request.param)


def _locations(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> list[str]:
    store, index = kind.split("+")
    args: list[str] = []
    if store == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        endpoint = request.getfixturevalue("s3_endpoint")
        args += ["--store", f"s3://{bucket}/docs", "--endpoint-url", endpoint]
    else:
        args += ["--store", str(tmp_path / "store")]
    if index == "mongodb":
        request.getfixturevalue("mongomock_server")
        args += ["--index", "mongodb://localhost/s3idx_test"]
    else:
        args += ["--index", str(tmp_path / "index.sqlite3")]
    return args


def _loaded(run: Run, where: list[str]) -> Run:
    result = run("put", *where, "--field", "n", "--field", "meta.x", input=jsonl(*DOCS))
    assert result.exit_code == 0, result.stderr

    def invoke(*args: str, **kwargs: Any) -> Any:
        return run(*args[:1], *where, *args[1:], **kwargs)

    return invoke


@pytest.fixture
def loaded(run: Run, where: list[str]) -> Run:
    """DOCS stored with fields n and meta.x, on every store and index."""
    return _loaded(run, where)


@pytest.fixture
def indexed(run: Run, index_where: list[str]) -> Run:
    """DOCS stored with fields n and meta.x, on every index."""
    return _loaded(run, index_where)


def keys(result: Any) -> list[str]:
    assert result.exit_code == 0, result.stderr
    return [e["fs_id"] for e in json_lines(result.stdout)]


# --- 11.1: a query on what the index does not hold is refused --------------------------------

INDEXED = "indexed fields: fs_id, n, meta.x, last_updated"


REFUSED = [
    (["query", '{"color": "red"}'], "color", "filter"),
    (["query", '{"color": "red"}', "--count"], "color", "filter"),
    (["query", "{}", "--sort", "color"], "color", "--sort"),
    (["query", '{"n": 3}', "--sort", "n,-color"], "color", "--sort"),
    (["query", "{}", "--fields", "n,color"], "color", "--fields"),
    (["query", '{"n": 3}', "--full", "--sort", "color"], "color", "--sort"),
    (["query", '{"$or": [{"n": 1}, {"$and": [{"color": "red"}]}]}'], "color", "filter"),
    (["query", '{"$nor": [{"color": {"$not": {"$eq": "x"}}}]}'], "color", "filter"),
    (["query", '{"meta.y": "p"}'], "meta.y", "filter"),
    (["query", '{"meta": {"x": 1}}'], "meta", "filter"),
    (["query", '{"_id": "i1"}'], "_id", "filter"),
    (["delete", "--filter", '{"color": "red"}'], "color", "filter"),
    (["delete", "--filter", '{"color": "red"}', "--dry-run"], "color", "filter"),
]


def test_queries_naming_unindexed_fields_are_refused(indexed: Run) -> None:
    for args, field, where_ in REFUSED:
        result = indexed(*args)

        assert result.exit_code == ExitStatus.USAGE, (args, result.stderr)
        assert result.stdout == ""
        assert f"{where_}: field {field!r} is not indexed" in result.stderr, args
        assert INDEXED in result.stderr
    assert indexed("query", "--count").stdout == "3\n"  # nothing was deleted


def test_top_level_operators_that_could_read_any_field_are_refused(indexed: Run) -> None:
    for text in (
        '{"$expr": {"$eq": ["$color", "red"]}}',
        '{"$where": "this.color == 1"}',
        '{"$or": [{"n": 1}, {"$text": {"$search": "red"}}]}',
    ):
        result = indexed("query", text)
        assert result.exit_code == ExitStatus.USAGE, text
        assert "unknown query operator '$" in result.stderr


def test_the_hints_say_what_to_do(indexed: Run) -> None:
    assert "s3idx reindex --field color" in indexed("query", '{"color": "red"}').stderr
    assert "only meta.x inside 'meta' is indexed" in indexed("query", '{"meta": {}}').stderr
    assert "the key field is 'fs_id'" in indexed("query", '{"_id": "a"}').stderr
    long = indexed("query", orjson.dumps({"y" * 3000: 1}).decode())
    assert long.exit_code == ExitStatus.USAGE
    assert "(3,000 characters) is not indexed" in long.stderr
    assert "cannot be indexed (at most 256 characters)" in long.stderr
    assert len(long.stderr) < 1000


ANSWERED = [
    (['{"n": {"$gte": 2}}', "--sort", "-n"], ["a", "c"]),
    (['{"meta.x": 2}'], ["b"]),
    (['{"fs_id": {"$in": ["a", "c"]}}', "--sort", "fs_id"], ["a", "c"]),
    (['{"last_updated": {"$exists": true}}', "--sort", "meta.x"], ["a", "b", "c"]),
    (['{"meta.x": {"$elemMatch": {"zz": 1}}}'], []),  # names inside a condition are relative
    (['{"$and": [{"n": {"$not": {"$lt": 2}}}, {"meta.x": {"$ne": 3}}]}'], ["a"]),
]


def test_queries_on_indexed_paths_still_answer(indexed: Run) -> None:
    for args, expected in ANSWERED:
        assert keys(indexed("query", *args)) == expected, args


def test_paths_inside_the_bookkeeping_are_shown_when_asked_for(indexed: Run) -> None:
    """`--fields _s3idx.size` shows that part of the bookkeeping, as `--fields meta.x` shows
    a part of meta (it showed nothing but the key); without it, none of the bookkeeping."""
    whole = json_lines(indexed("query", '{"fs_id": "a"}', "--fields", "_s3idx").stdout)[0]
    shown = indexed("query", '{"fs_id": "a"}', "--fields", "_s3idx.codec,n,_s3idx.size")
    assert shown.exit_code == 0, shown.stderr
    assert json_lines(shown.stdout) == [
        {
            "fs_id": "a",
            "_s3idx": {"codec": whole["_s3idx"]["codec"], "size": whole["_s3idx"]["size"]},
            "n": 3,
        }
    ]
    assert "_s3idx" not in json_lines(indexed("query", '{"fs_id": "a"}', "--fields", "n").stdout)[0]


def test_a_path_inside_an_indexed_field_is_allowed(run: Run, index_where: list[str]) -> None:
    where = index_where
    put = run("put", *where, "--field", "meta", input=jsonl(*DOCS))
    assert put.exit_code == 0, put.stderr

    assert keys(run("query", *where, '{"meta.y": "q"}')) == ["b"]
    assert keys(run("query", *where, '{"meta": {"x": 3, "y": "r"}}')) == ["c"]


def test_a_fresh_index_is_refused_as_missing_not_for_its_fields(
    run: Run, index_where: list[str]
) -> None:
    # Issue 11.2: an index nothing was ever put into is most likely a mistyped --index.
    where = index_where
    result = run("query", *where, '{"anything": 1}')

    assert (result.exit_code, result.stdout) == (ExitStatus.NOT_FOUND, "")
    assert "s3idx: error: no s3idx index at " in result.stderr
    assert "not indexed" not in result.stderr


# --- 10.6: fields added later are pending until reindex backfills them -----------------------


def test_a_field_added_later_is_refused_until_reindex_backfills_it(
    loaded: Run, tmp_path: Path
) -> None:
    later = [{"fs_id": "d", "n": 4, "meta": {"x": 4}, "color": "red"}]
    put = loaded("put", "--field", "color", input=jsonl(*later))
    assert put.exit_code == 0, put.stderr

    for args in (['{"color": "red"}'], ['{"color": null}'], ["--sort", "color"], ["--count"]):
        result = loaded("query", *args)
        if args == ["--count"]:
            assert result.stdout == "4\n"  # a query not naming the field is fine
            continue
        assert result.exit_code == ExitStatus.USAGE
        assert "field 'color' is not yet indexed for the 3 documents stored before it" in (
            result.stderr
        )
        assert "run `s3idx reindex`" in result.stderr

    info = orjson.loads(loaded("info", "--json").stdout)
    assert (info["fields"], info["pending_fields"]) == (["n", "meta.x", "color"], ["color"])

    dry = loaded("reindex", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert orjson.loads(dry.stdout)["updated"] == 3
    assert loaded("query", '{"color": "red"}').exit_code == ExitStatus.USAGE  # still pending

    done = loaded("reindex", "--json")
    assert done.exit_code == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert (summary["updated"], summary["up_to_date"], summary["failed"]) == (3, 1, 0)
    assert summary["completed"] == ["color"]
    assert orjson.loads(loaded("info", "--json").stdout)["pending_fields"] == []

    assert keys(loaded("query", '{"color": "red"}', "--sort", "fs_id")) == ["a", "c", "d"]
    assert keys(loaded("query", '{"color": null}')) == []
    assert keys(loaded("query", "{}", "--sort", "color,fs_id")) == ["b", "a", "c", "d"]
    # The documents themselves are untouched.
    got = loaded("get", "a", "b", "c")
    assert json_lines(got.stdout) == DOCS

    again = loaded("reindex", "--json")
    assert orjson.loads(again.stdout)["updated"] == 0  # idempotent: a rerun resumes


def test_rebuild_after_reindex_gives_the_same_answers(loaded: Run) -> None:
    assert loaded("put", "--field", "color", input=b"").exit_code == 0
    assert loaded("reindex", "--quiet").exit_code == 0

    rebuilt = loaded("rebuild-index", "--json")

    assert rebuilt.exit_code == 0, rebuilt.stderr
    assert keys(loaded("query", '{"color": "red"}', "--sort", "fs_id")) == ["a", "c"]


def test_reindex_field_records_and_backfills_in_one_step(loaded: Run) -> None:
    result = loaded("reindex", "--field", "color")

    assert result.exit_code == 0, result.stderr
    assert "reindex: 3 listed, 3 updated" in result.stderr
    assert keys(loaded("query", '{"color": "blue"}')) == ["b"]


def test_rebuild_marks_pending_the_fields_some_objects_lack(loaded: Run) -> None:
    put = loaded("put", "--field", "color", input=jsonl({"fs_id": "d", "n": 4, "color": "red"}))
    assert put.exit_code == 0, put.stderr

    rebuilt = loaded("rebuild-index", "--json")

    assert rebuilt.exit_code == 0, rebuilt.stderr
    assert orjson.loads(rebuilt.stdout)["pending_fields"] == {"color": 3}
    refused = loaded("query", '{"color": "red"}')
    assert refused.exit_code == ExitStatus.USAGE
    assert "not yet indexed for the 3 documents" in refused.stderr
    assert loaded("reindex", "--quiet").exit_code == 0
    assert keys(loaded("query", '{"color": "red"}', "--sort", "fs_id")) == ["a", "c", "d"]


def test_sync_into_a_lost_index_marks_pending_what_old_objects_lack(
    run: Run, tmp_path: Path
) -> None:
    where = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "ix.sqlite3")]
    assert run("put", *where, "--field", "n", input=jsonl(*DOCS)).exit_code == 0
    later = jsonl({"fs_id": "d", "n": 4, "color": "red"})
    assert run("put", *where, "--field", "color", input=later).exit_code == 0
    (tmp_path / "ix.sqlite3").unlink()  # the index is lost; sync (not rebuild) adopts all

    synced = run("sync", *where, "--json")

    assert synced.exit_code == 0, synced.stderr
    assert orjson.loads(synced.stdout)["pending_fields"] == {"color": 3}
    refused = run("query", *where, '{"color": null}')
    assert refused.exit_code == ExitStatus.USAGE, refused.stdout
    assert "not yet indexed for the 3 documents" in refused.stderr
    assert run("reindex", *where, "--quiet").exit_code == 0
    assert keys(run("query", *where, '{"color": "red"}', "--sort", "fs_id")) == ["a", "c", "d"]


def test_a_field_on_an_empty_index_is_complete_at_once(run: Run, index_where: list[str]) -> None:
    where = index_where
    put = run("put", *where, "--field", "color", input=jsonl(*DOCS))
    assert put.exit_code == 0, put.stderr

    assert keys(run("query", *where, '{"color": "blue"}')) == ["b"]


def test_reindex_on_an_index_never_written_is_not_found(run: Run, index_where: list[str]) -> None:
    """As ``query`` on it: the index named does not exist (exit 4), whatever the store holds."""
    where = index_where
    assert run("put", "-q", *where, input='{"fs_id": "a"}\n').exit_code == 0
    index = where[where.index("--index") + 1]
    fresh = [*where[: where.index("--index")], "--index", index + "-never-written"]
    if index.startswith("mongodb"):
        fresh = [*where, "--collection", "never_written"]

    result = run("reindex", *fresh)

    assert result.exit_code == ExitStatus.NOT_FOUND, result.stderr
    assert "(nothing was ever put there)" in result.stderr
    assert "hint: check --index; s3idx put creates an index" in result.stderr


def test_reindex_on_a_store_that_does_not_exist_is_not_found(run: Run, tmp_path: Path) -> None:
    where = ["--store", str(tmp_path / "nope"), "--index", str(tmp_path / "nope.sqlite3")]
    result = run("reindex", "--field", "zz", *where)
    assert (result.exit_code, result.stdout) == (ExitStatus.NOT_FOUND, "")
    assert result.stderr.startswith(f"s3idx: error: no s3idx store at {tmp_path / 'nope'} (")


# --- 11.4: --field is checked before it is recorded ------------------------------------------

LONG = "x" * 3000


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            [LONG],
            f"field path {'x' * 40!r}... (3,000 characters) is too long",
        ),
        (["a" * 257], "is too long: at most 256 characters"),
        (["a..b"], "invalid field path 'a..b': empty part"),
        (["a.$b"], "parts may not start with '$'"),
        (["a\nb"], "control character"),
        ([f"f{i:02d}_{'y' * 60}" for i in range(20)], "21 indexed fields need"),
        # Paths no comma-separated list (--fields, --sort, S3IDX_FIELDS) could name again.
        (["a,b"], "invalid field path 'a,b': ',' separates field paths"),
        (["meta.x, y"], "invalid field path 'meta.x, y': ',' separates field paths"),
        ([" n"], "invalid field path ' n': blanks at its start or end"),
        (["meta.x\u00a0"], "invalid field path 'meta.x\\xa0': blanks at its start or end"),
        # A position in an array: an entry keeps what a projection keeps, never one element.
        (["tags.0"], "invalid field path 'tags.0': '0' is a number"),
        (["a.b.12.c"], "invalid field path 'a.b.12.c': '12' is a number"),
    ],
)
def test_bad_fields_are_refused_before_anything_is_recorded_or_stored(
    run: Run, index_where: list[str], fields: list[str], message: str
) -> None:
    first = run("put", *index_where, "--field", "n", input=jsonl(DOCS[0]))
    assert first.exit_code == 0, first.stderr
    flags = [arg for f in fields for arg in ("--field", f)]

    refused = run("put", *index_where, *flags, input=jsonl(DOCS[1]))

    assert refused.exit_code == ExitStatus.USAGE
    assert message in refused.stderr
    assert len(refused.stderr) < 1000  # the path is cut short, not printed whole
    # Nothing recorded, nothing stored: the next put works and sees one document.
    later = run("put", *index_where, input=jsonl(DOCS[2]))
    assert later.exit_code == 0, later.stderr
    assert keys(run("query", *index_where, "{}", "--sort", "fs_id")) == ["a", "c"]
    assert run("reindex", *index_where, *flags).exit_code == ExitStatus.USAGE


def test_a_field_no_list_could_name_is_refused_from_every_source(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s3idx import open_engine
    from s3idx.errors import UsageError

    where = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "ix.sqlite3")]
    config = tmp_path / "s3idx.toml"
    config.write_text('fields = ["a,b"]\n')
    from_file = run("put", *where, "--config", str(config), input=jsonl(DOCS[0]))
    assert from_file.exit_code == ExitStatus.USAGE
    assert "',' separates field paths" in from_file.stderr
    monkeypatch.setenv("S3IDX_FIELDS", "n, meta.x")  # blanks around items are trimmed
    assert run("put", *where, input=jsonl(DOCS[0])).exit_code == 0
    monkeypatch.delenv("S3IDX_FIELDS")
    key = run("put", *where, "--key", "fs,id", input=jsonl(DOCS[1]))
    assert key.exit_code == ExitStatus.USAGE
    assert "invalid --key 'fs,id': ',' separates field paths" in key.stderr
    engine = open_engine(store=tmp_path / "store", index=tmp_path / "ix.sqlite3", fields=["c,d"])
    with engine, pytest.raises(UsageError, match="',' separates field paths"):
        engine.put_documents([DOCS[1]])  # the library, as the command line
    # Nothing of it recorded: the index still has the fields it had and one document.
    assert keys(run("query", *where, "{}", "--fields", "fs_id,n,meta.x")) == ["a"]


def test_a_field_with_a_comma_an_older_version_recorded_keeps_working(
    run: Run, tmp_path: Path
) -> None:
    where = _recorded_by_an_older_version(run, tmp_path, "a,b")

    put = run("put", *where, input=jsonl({**DOCS[1], "a,b": 7}))
    assert put.exit_code == 0, put.stderr  # refused only when first recorded
    assert run("reindex", *where, "--quiet").exit_code == 0
    assert keys(run("query", *where, '{"a,b": 7}')) == ["b"]
    assert run("rebuild-index", *where, "--quiet").exit_code == 0
    assert keys(run("query", *where, '{"a,b": 7}')) == ["b"]


def test_a_path_starting_with_a_sign_is_sorted_either_way(run: Run, tmp_path: Path) -> None:
    where = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "ix.sqlite3")]
    docs = [{"fs_id": "a", "-n": 2, "+m": 1}, {"fs_id": "b", "-n": 1, "+m": 2}]
    assert run("put", *where, "--field", "-n", "--field", "+m", input=jsonl(*docs)).exit_code == 0

    assert keys(run("query", *where, "--sort", "+-n")) == ["b", "a"]
    assert keys(run("query", *where, "--sort", "--n")) == ["a", "b"]
    assert keys(run("query", *where, "--sort", "++m")) == ["a", "b"]
    assert keys(run("query", *where, "--sort", "-+m")) == ["b", "a"]
    shown = json_lines(run("query", *where, "--fields", "-n,+m", "--sort", "fs_id").stdout)
    assert shown == [{"fs_id": "a", "-n": 2, "+m": 1}, {"fs_id": "b", "-n": 1, "+m": 2}]


def test_fields_that_fit_are_accepted(run: Run, index_where: list[str]) -> None:
    fields = [f"f{i:02d}_{'y' * 20}" for i in range(20)]
    flags = [arg for f in fields for arg in ("--field", f)]
    doc = {"fs_id": "k", **dict.fromkeys(fields, 1)}

    result = run("put", *index_where, *flags, input=jsonl(doc))

    assert result.exit_code == 0, result.stderr
    assert keys(run("query", *index_where, f'{{"{fields[-1]}": 1}}')) == ["k"]


def _recorded_by_an_older_version(run: Run, tmp_path: Path, field: str) -> list[str]:
    """Locations whose index has DOCS[0] stored with field n, and ``field`` recorded as an
    older s3idx let it be; the flags to name them."""
    from s3idx.index.sqlite import SqliteIndex

    where = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "ix.sqlite3")]
    assert run("put", *where, "--field", "n", input=jsonl(DOCS[0])).exit_code == 0
    with SqliteIndex(tmp_path / "ix.sqlite3") as older:
        older.configure("fs_id", ["n", field])
    return where


def test_a_bad_field_recorded_by_an_older_version_says_how_to_fix_it(
    run: Run, tmp_path: Path
) -> None:
    where = _recorded_by_an_older_version(run, tmp_path, LONG)

    refused = run("put", *where, input=jsonl(DOCS[1]))

    assert refused.exit_code == ExitStatus.USAGE
    assert "records fields no document can be stored with" in refused.stderr
    assert "run `s3idx rebuild-index`" in refused.stderr
    rebuilt = run("rebuild-index", *where, "--quiet")
    assert rebuilt.exit_code == 0, rebuilt.stderr
    assert run("put", *where, input=jsonl(DOCS[1])).exit_code == 0
    assert keys(run("query", *where, '{"n": {"$gte": 1}}', "--sort", "n")) == ["b", "a"]


def test_reindex_on_s3_through_obstore_copies_server_side(
    run: Run, s3_bucket: str, s3_endpoint: str
) -> None:
    pytest.importorskip("obstore", reason="obstore is not installed (pip install 's3idx[fast]')")
    where = ["--store", f"s3://{s3_bucket}/docs", "--endpoint-url", s3_endpoint,
             "--transport", "obstore"]  # fmt: skip
    assert run("put", *where, "--field", "n", input=jsonl(*DOCS)).exit_code == 0

    result = run("reindex", *where, "--field", "color", "--json")

    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["updated"] == 3
    assert keys(run("query", *where, '{"color": "red"}', "--sort", "fs_id")) == ["a", "c"]
    assert json_lines(run("get", *where, "a", "b", "c").stdout) == DOCS


def test_reindex_exits_partial_naming_the_objects_it_could_not_update(
    run: Run, tmp_path: Path
) -> None:
    where = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "ix.sqlite3")]
    stored = run("put", *where, "--field", "n", "--compress", "none", input=jsonl(*DOCS))
    assert stored.exit_code == 0, stored.stderr
    damaged = tmp_path / "store" / "objects" / "b~"
    damaged.write_bytes(damaged.read_bytes().replace(b'"blue"', b'"bluE"'))

    result = run("reindex", *where, "--field", "color")

    assert result.exit_code == ExitStatus.PARTIAL
    assert "b: not reindexed: object 'b': body does not match its recorded sha256" in result.stderr
    assert "reindex: 3 listed, 2 updated, 0 up to date, 1 failed" in result.stderr
    assert "still pending: color" in result.stderr
    assert run("query", *where, '{"color": "red"}').exit_code == ExitStatus.USAGE


def test_reindex_exits_partial_when_documents_were_stored_without_the_field_meanwhile(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put begun before reindex recorded the field marks it pending for the entries it
    stores without it (tests/test_many_writers.py forces that race): reindex says so, and
    exits 3, rather than report the field complete."""
    where = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "ix.sqlite3")]
    assert run("put", *where, "--field", "n", input=jsonl(*DOCS)).exit_code == 0
    write_entries = reindex_module._write_entries

    def beside_a_put(*args: Any, **kwargs: Any) -> None:
        write_entries(*args, **kwargs)
        with SqliteIndex(tmp_path / "ix.sqlite3") as other:
            other.mark_pending([("color", 1)])

    monkeypatch.setattr(reindex_module, "_write_entries", beside_a_put)
    result = run("reindex", *where, "--field", "color")

    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    assert result.stderr.endswith(
        "; still pending: color (documents were stored without it while this ran: run "
        "reindex again)\n"
    )
    assert run("query", *where, '{"color": "red"}').exit_code == ExitStatus.USAGE
    monkeypatch.undo()
    again = run("reindex", *where)
    assert again.exit_code == 0, again.stderr
    assert "now complete: color" in again.stderr
    assert keys(run("query", *where, '{"color": "red"}', "--sort", "fs_id")) == ["a", "c"]


def test_the_key_field_given_as_a_field_is_accepted_and_changes_nothing(
    run: Run, tmp_path: Path
) -> None:
    """README (put --field): the key is always indexed, so --field KEY is not recorded; paths
    under the key field, and last_updated, are refused."""
    where = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    put = run("put", "--field", "fs_id", *where, input=jsonl({"fs_id": "a"}))
    assert put.exit_code == 0, put.stderr
    assert orjson.loads(run("info", "--json", *where).stdout)["fields"] == []
    assert run("query", '{"fs_id": "a"}', "--count", *where).stdout == "1\n"
    for field in ("fs_id.x", "last_updated", "_s3idx.etag"):
        refused = run("put", "--field", field, *where, input=jsonl({"fs_id": "b"}))
        assert refused.exit_code == ExitStatus.USAGE, (field, refused.stderr)
