"""The Python API's arguments: a mistake of type is a UsageError naming the argument, before
anything is read, written or recorded, never a bare ValueError or a wrong meaning.

The mistake a user makes most: one string where a list of them is expected
(``engine.delete("mp-1")``). Iterated, a string is its characters, so it would delete the keys
"m", "p", "-" and "1", or record the fields "t", "a", "s", "k" in the index for good.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from s3idx import Engine, open_engine
from s3idx.errors import InvalidFilterError, UsageError

ONE_CHARACTER_KEYS = ["m", "p", "-", "1"]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with open_engine(store=str(tmp_path / "store"), index=str(tmp_path / "index.sqlite3")) as e:
        # Documents whose keys are the characters of "mp-1": a string taken as a list of keys
        # would reach them.
        e.put_documents(
            [{"fs_id": k, "task_id": k} for k in [*ONE_CHARACTER_KEYS, "mp-1"]], fields=["task_id"]
        )
        yield e


def _keys(engine: Engine) -> list[str]:
    return sorted(e["fs_id"] for e in engine.query({}, fields=["fs_id"]))


def _fields(engine: Engine) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    settings = engine.index.settings()
    assert settings is not None
    return settings.fields, settings.pending


STRING_FOR_KEYS: list[tuple[str, Callable[[Engine], Any]]] = [
    ("delete", lambda e: e.delete("mp-1")),
    ("delete dry run", lambda e: e.delete("mp-1", dry_run=True)),
    ("fetch", lambda e: list(e.fetch("mp-1"))),
    ("write_documents", lambda e: e.write_documents("mp-1", io.BytesIO())),
    ("delete bytes", lambda e: e.delete(b"mp-1")),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("name", "call"), STRING_FOR_KEYS, ids=[n for n, _ in STRING_FOR_KEYS])
def test_one_string_for_keys_is_refused_and_deletes_nothing(
    engine: Engine, name: str, call: Callable[[Engine], Any]
) -> None:
    before = _keys(engine)
    with pytest.raises(UsageError) as caught:
        call(engine)
    assert caught.value.message.startswith(
        ("keys must be a list of keys, not a string", "keys must be a list of keys, not bytes")
    )
    assert caught.value.hint is not None and "['mp-1']" in caught.value.hint.replace("b'", "'")
    assert _keys(engine) == before


def test_delete_of_one_string_message(engine: Engine) -> None:
    with pytest.raises(UsageError) as caught:
        engine.delete("mp-1")
    assert str(caught.value) == (
        "keys must be a list of keys, not a string ('mp-1'): each of its characters would be "
        "taken for a key\ngive a list, even of one: ['mp-1']"
    )


STRING_FOR_FIELDS: list[tuple[str, Callable[[Engine], Any]]] = [
    ("put_documents", lambda e: e.put_documents([{"fs_id": "x"}], fields="task_id")),
    ("put_files", lambda e: e.put_files([], fields="task_id")),
    ("reindex", lambda e: e.reindex(fields="task_id")),
    ("reindex dry run", lambda e: e.reindex(fields="task_id", dry_run=True)),
]


@pytest.mark.parametrize(("name", "call"), STRING_FOR_FIELDS, ids=[n for n, _ in STRING_FOR_FIELDS])
def test_one_string_for_fields_is_refused_and_records_nothing(
    engine: Engine, name: str, call: Callable[[Engine], Any]
) -> None:
    before, keys = _fields(engine), _keys(engine)
    with pytest.raises(UsageError) as caught:
        call(engine)
    assert caught.value.message.startswith("fields must be a list of field paths, not a string")
    assert _fields(engine) == before
    assert _keys(engine) == keys


def test_engine_built_with_one_string_for_fields_is_refused(tmp_path: Path) -> None:
    with (
        open_engine(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3")) as opened,
        pytest.raises(UsageError, match=r"^fields must be a list of field paths"),
    ):
        Engine(opened.store, opened.index, fields="task_id")


def test_one_string_for_paths_is_refused(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "d").write_text('{"fs_id": "from-d"}\n')
    with pytest.raises(UsageError) as caught:
        engine.put_files(str(tmp_path / "d"))  # type: ignore[arg-type]
    assert caught.value.message.startswith("paths must be a list of input files, not a string")
    assert "from-d" not in _keys(engine)


def test_a_path_object_alone_is_refused_too(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "d").write_text('{"fs_id": "from-d"}\n')
    with pytest.raises(UsageError, match=r"^paths must be a list of input files, not a path"):
        engine.put_files(tmp_path / "d")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "documents",
    [{"fs_id": "x"}, "fs_id", b"fs_id"],
    ids=["one dict", "a string", "bytes"],
)
def test_documents_that_are_not_a_list_of_documents_are_refused(
    engine: Engine, documents: Any
) -> None:
    before = _keys(engine)
    with pytest.raises(UsageError, match=r"^documents must be an iterable of documents"):
        engine.put_documents(documents)
    assert _keys(engine) == before


def test_a_document_that_is_not_a_dict_is_rejected_the_others_stored(engine: Engine) -> None:
    result = engine.put_documents([{"fs_id": "good"}, "junk", ["fs_id", "x"], {"fs_id": "ok"}])
    assert (result.stored, result.rejected) == (2, 2)
    assert {"good", "ok"} <= set(_keys(engine))


def test_a_rejected_non_dict_says_where_and_why(engine: Engine) -> None:
    from s3idx.engine.events import Events
    from s3idx.engine.results import Reject

    rejects: list[Reject] = []

    class Collect(Events):
        def rejected(self, reject: Reject) -> None:
            rejects.append(reject)

    engine.put_documents([{"fs_id": "good"}, "junk"], events=Collect())
    assert [(r.location, r.reason) for r in rejects] == [
        ("<documents>:2", "expected a JSON object, got a string")
    ]


def test_stdin_dash_without_a_stream_is_a_usage_error(engine: Engine) -> None:
    with pytest.raises(UsageError) as caught:
        engine.put_files(["-"])
    assert caught.value.message == "'-' (stdin) is among the paths, but no stdin stream was given"
    assert caught.value.hint == "pass the stream to read: put_files(['-'], stdin=sys.stdin.buffer)"


@pytest.mark.parametrize("filter_", ["task_id", ["a"], 5], ids=["string", "list", "int"])
def test_delete_matching_a_filter_that_is_not_a_dict(engine: Engine, filter_: Any) -> None:
    before = _keys(engine)
    with pytest.raises(InvalidFilterError, match=r"^filter must be a JSON object"):
        engine.delete_matching(filter_)
    assert _keys(engine) == before


# --- an engine after close() ------------------------------------------------------------------

AFTER_CLOSE: list[tuple[str, Callable[[Engine], Any]]] = [
    ("query", lambda e: list(e.query({}))),
    ("count", lambda e: e.count({})),
    ("get", lambda e: e.get("m")),
    ("fetch", lambda e: list(e.fetch(["m"]))),
    ("put_documents", lambda e: e.put_documents([{"fs_id": "new"}])),
    ("delete", lambda e: e.delete(["m"])),
    ("delete_matching", lambda e: e.delete_matching({})),
    ("sync", lambda e: e.sync(check=True)),
    ("rebuild_index", lambda e: e.rebuild_index()),
    ("reindex", lambda e: e.reindex()),
    ("verify", lambda e: e.verify()),
    ("key_field", lambda e: e.key_field),
]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
@pytest.mark.parametrize(("name", "call"), AFTER_CLOSE, ids=[n for n, _ in AFTER_CLOSE])
def test_a_closed_engine_refuses_every_use(
    tmp_path: Path, name: str, call: Callable[[Engine], Any]
) -> None:
    location = {"store": str(tmp_path / "store"), "index": str(tmp_path / "index.sqlite3")}
    with open_engine(**location) as engine:
        engine.put_documents([{"fs_id": k} for k in ONE_CHARACTER_KEYS])
    engine.close()  # a second close is harmless
    with pytest.raises(UsageError) as caught:
        call(engine)
    assert str(caught.value) == (
        "this engine is closed\nopen another with s3idx.open_engine(...): an engine cannot be "
        "used after close() or after its with block"
    )
    # Nothing was opened again behind the user's back, and nothing changed.
    assert not _open_files_under(tmp_path)
    with open_engine(**location) as again:
        assert _keys(again) == sorted(ONE_CHARACTER_KEYS)


def _open_files_under(directory: Path) -> list[str]:
    """Files of this process open under ``directory`` (the SQLite file, its journal)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        if target.startswith(str(directory)):
            found.append(target)
    return found


# --- Engine(store, index): backend objects, not locations ----------------------------------------


LOCATIONS_FOR_BACKENDS: list[tuple[str, Callable[[Engine, Path], Engine], str]] = [
    ("both locations", lambda e, d: Engine(str(d / "s"), str(d / "i.sqlite3")), "store"),
    ("a path object", lambda e, d: Engine(d / "s", e.index), "store"),
    ("index location", lambda e, d: Engine(e.store, str(d / "i.sqlite3")), "index"),
]


@pytest.mark.parametrize(
    ("name", "build", "wrong"),
    LOCATIONS_FOR_BACKENDS,
    ids=[n for n, _, _ in LOCATIONS_FOR_BACKENDS],
)
def test_engine_given_locations_points_to_open_engine(
    tmp_path: Path, name: str, build: Callable[[Engine, Path], Engine], wrong: str
) -> None:
    with (
        open_engine(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3")) as opened,
        pytest.raises(UsageError) as caught,
    ):
        build(opened, tmp_path)
    assert caught.value.message.startswith(f"Engine(store, index): {wrong} must be ")
    assert caught.value.hint == (
        "for locations (a directory, s3://BUCKET/PREFIX, a SQLite path, mongodb://HOST/DB), "
        "use s3idx.open_engine(store=..., index=...)"
    )


def test_engine_with_an_unknown_compression_is_a_usage_error(tmp_path: Path) -> None:
    with (
        open_engine(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3")) as opened,
        pytest.raises(UsageError) as caught,
    ):
        Engine(opened.store, opened.index, compress="gz")
    assert caught.value.message == "unknown compression 'gz'; choose one of: zlib, none, zstd"


@pytest.mark.parametrize("value", [-1, float("inf"), float("nan"), True, "600"])
def test_engine_with_a_put_stale_bound_that_is_no_number_of_seconds_is_a_usage_error(
    tmp_path: Path, value: object
) -> None:
    with (
        open_engine(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3")) as opened,
        pytest.raises(UsageError) as caught,
    ):
        Engine(opened.store, opened.index, put_stale_seconds=value)  # type: ignore[arg-type]
    assert caught.value.message == (
        f"put_stale_seconds must be a number of seconds, 0 or more, got {value!r}"
    )


def test_an_engine_opened_from_settings_takes_their_put_stale_bound(tmp_path: Path) -> None:
    with open_engine(
        store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3"), put_stale_seconds=0
    ) as opened:
        assert opened.put_stale_seconds == 0.0
    with open_engine(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3")) as opened:
        assert opened.put_stale_seconds == 600.0


LAZY_RESULTS: list[tuple[str, Callable[[Engine], Iterator[Any]]]] = [
    ("query", lambda e: e.query({})),
    ("fetch", lambda e: e.fetch(ONE_CHARACTER_KEYS)),
    ("query_documents", lambda e: e.query_documents({})),
]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
@pytest.mark.parametrize(("name", "make"), LAZY_RESULTS, ids=[n for n, _ in LAZY_RESULTS])
@pytest.mark.parametrize("started", [False, True], ids=["not started", "started"])
def test_results_read_after_the_engine_closed_are_refused(
    tmp_path: Path, name: str, make: Callable[[Engine], Iterator[Any]], started: bool
) -> None:
    """A query made inside ``with open_engine(...)`` and read after it: the same UsageError
    on every backend (SQLite quietly opened a connection nothing closed; MongoDB failed with
    pymongo's "Cannot use MongoClient after close")."""
    location = {"store": str(tmp_path / "store"), "index": str(tmp_path / "index.sqlite3")}
    with open_engine(**location) as engine:
        engine.put_documents([{"fs_id": k} for k in ONE_CHARACTER_KEYS])
        results = make(engine)
        if started:
            next(results)
    with pytest.raises(UsageError, match=r"^this engine is closed\n"):
        list(results)
    del results
    assert not _open_files_under(tmp_path)


SHARD_NOT_A_SHARD: list[tuple[str, Callable[[Engine], Any]]] = [
    ("put_documents", lambda e: e.put_documents([{"fs_id": "new"}], shard="0/2")),
    ("put_files", lambda e: e.put_files([], shard="0/2")),
    ("sync", lambda e: e.sync(shard="0/2")),
    ("sync check", lambda e: e.sync(check=True, shard=(0, 2))),
    ("rebuild_index", lambda e: e.rebuild_index(shard="0/2")),
]


@pytest.mark.parametrize(("name", "call"), SHARD_NOT_A_SHARD, ids=[n for n, _ in SHARD_NOT_A_SHARD])
def test_a_shard_that_is_not_a_shard_is_refused_before_anything_is_done(
    engine: Engine, name: str, call: Callable[[Engine], Any]
) -> None:
    before, fields = _keys(engine), _fields(engine)
    with pytest.raises(UsageError) as caught:
        call(engine)
    assert caught.value.message.startswith("shard must be a s3idx.Shard, not ")
    assert caught.value.hint == (
        "give Shard(I, N), e.g. Shard(0, 4) for the first of 4; "
        "s3idx.sharding.parse_shard(text, os.environ) reads 'I/N' or 'auto'"
    )
    assert (_keys(engine), _fields(engine)) == (before, fields)
    assert engine.index.rebuild_status() is None  # no rebuild was started either


def _nested(operator: str, depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        inner: dict[str, Any] = {}
        node[operator] = [inner]
        node = inner
    return root


@pytest.mark.parametrize("operator", ["$and", "$or", "$nor"])
@pytest.mark.parametrize("call", ["query", "count", "check_query", "query_documents", "delete"])
def test_a_filter_nested_beyond_the_limit_is_refused_not_a_recursion_error(
    engine: Engine, operator: str, call: str
) -> None:
    deep = _nested(operator, 1000)
    with pytest.raises(InvalidFilterError, match="nested deeper than 100 levels"):
        if call == "delete":
            engine.delete_matching(deep)
        else:
            list(getattr(engine, call)(deep) or ())
