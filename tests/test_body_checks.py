"""A body whose sha256 is right but which is not the document of its key is damage on every read.

Another tool (or a careless hand) can put any body under valid s3idx metadata and record its
sha256, so the checksum passes. ``verify`` reports such a body as damaged: not valid JSON, not a
JSON object, a key field that is not the object's key (another key's document, or none), or a
metadata entry that is not the one derived from the body. Every read that hands a document on
(``get``, ``query --full``, ``Engine.get``, ``Engine.fetch``, the maggma Store) must say the
same, per key, with exit status 8, and never print or return it; the other keys are still read.
Documents past the spool threshold (streamed from a temporary file) are checked too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine, codec
from s3idx.engine.body_check import spooled_body_problem
from s3idx.errors import DamagedObjectError, ExitStatus
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import ObjectStore
from s3idx.store.local import LocalStore
from tests.helpers import Run, json_lines, jsonl

SOUND = ["a", "z"]
PAD = 3000


def _doc(key: str, pad: int = PAD) -> dict[str, Any]:
    return {"fs_id": key, "n": 6, "pad": "p" * pad}


# key -> (the body put under that key's own metadata, what verify and every read say)
BODIES: dict[str, tuple[bytes, str]] = {
    "arr": (b"[1,2,3]", "body is not a JSON object"),
    "keymis": (
        b'{"fs_id":"zzz","n":6}',
        "body's key field 'fs_id' is 'zzz', not the object's key",
    ),
    "nokey": (b'{"n":6}', "body has no key field 'fs_id'"),
    "keynum": (b'{"fs_id":5,"n":6}', "body's key field 'fs_id' is 5, not the object's key"),
    "badjson": (b'{"fs_id":"badjson","n":6', "body is not valid JSON"),
    "entry": (
        b'{"fs_id":"entry","n":7}',
        "metadata's index entry differs from the body in n",
    ),
}
DAMAGED = list(BODIES)
ALL = ["a", *DAMAGED, "z"]


def _big(raw: bytes) -> bytes:
    """The same body with a large padding field, so it is spooled (when it is an object)."""
    if not raw.startswith(b"{"):
        return b"[" + b"0," * 40_000 + raw[1:]
    return b'{"pad":"' + b"p" * 80_000 + b'",' + raw[1:]


def _plant(store: ObjectStore, key: str, raw: bytes) -> None:
    """Put ``raw`` under ``key``'s own metadata with ``raw``'s sha256: the checksum passes."""
    body = store.open(key)
    body.read()
    metadata = dict(body.head.metadata)
    metadata[codec.META_SHA256] = hashlib.sha256(raw).hexdigest()
    store.put(key, codec.encode_raw(raw, metadata[codec.META_CODEC]), metadata)


def _plant_all(store: ObjectStore, big: bool = False) -> None:
    for key, (raw, _) in BODIES.items():
        _plant(store, key, _big(raw) if big else raw)


# --- the library -------------------------------------------------------------------------------


@pytest.fixture(params=["in-memory", "spooled"])
def planted(
    request: pytest.FixtureRequest, store: ObjectStore, tmp_path: Path
) -> Iterator[tuple[Engine, bool]]:
    spooled = request.param == "spooled"
    threshold = 1024 if spooled else 8 << 20
    index = SqliteIndex(tmp_path / "i.sqlite3")
    with Engine(store, index, fields=["n"], spool_threshold=threshold) as engine:
        assert engine.put_documents([_doc(k) for k in ALL]).stored == len(ALL)
        _plant_all(store, big=spooled)
        yield engine, spooled


def test_engine_fetch_reports_each_such_body_as_damage(planted: tuple[Engine, bool]) -> None:
    engine, spooled = planted
    found = dict(engine.fetch(ALL))

    for key in SOUND:
        assert orjson.loads(found[key].read()) == _doc(key)  # type: ignore[union-attr]
    for key, (_, reason) in BODIES.items():
        document = found[key]
        if spooled and key == "entry":
            # A spooled body is checked as a stream (object, key field), not parsed whole:
            # its entry is compared by verify alone.
            assert document is not None and document.error is None
            document.close()
            continue
        assert document is not None and document.damaged, key
        assert document.error is not None and reason in document.error, (key, document.error)


def test_engine_get_raises_damage_for_each(planted: tuple[Engine, bool]) -> None:
    engine, spooled = planted
    assert engine.get("a") == _doc("a")
    for key, (_, reason) in BODIES.items():
        if spooled and key == "entry":
            continue
        with pytest.raises(DamagedObjectError, match=f"object '{key}': {reason}"):
            engine.get(key)


def test_verify_still_reports_each_as_damage(planted: tuple[Engine, bool]) -> None:
    from s3idx import Events

    class Damage(Events):
        def __init__(self) -> None:
            self.damage: dict[str, str] = {}

        def damaged(self, key: str, reason: str) -> None:
            self.damage[key] = reason

    engine, _ = planted
    events = Damage()
    result = engine.verify(events=events)

    assert sorted(events.damage) == sorted(DAMAGED)
    for key, (_, reason) in BODIES.items():
        assert reason in events.damage[key], (key, events.damage[key])
    assert (result.damaged, result.ok) == (len(DAMAGED), len(SOUND))


# --- the command line, on the local store and on S3 ----------------------------------------------


@pytest.fixture
def cli_store(
    put_through_cli: Callable[[bytes], tuple[list[str], ObjectStore]],
) -> tuple[list[str], ObjectStore]:
    where, opened = put_through_cli(jsonl(*[_doc(k) for k in ALL]))
    _plant_all(opened)
    return where, opened


def test_cli_get_reports_each_as_damaged_and_prints_the_others(
    run: Run, cli_store: tuple[list[str], ObjectStore]
) -> None:
    where, _ = cli_store
    got = run("get", *where, *ALL)

    assert got.exit_code == ExitStatus.DAMAGED, got.stderr
    assert json_lines(got.stdout) == [_doc("a"), _doc("z")]
    for key, (_, reason) in BODIES.items():
        assert f"s3idx: damaged {key}: {reason}" in got.stderr, (key, got.stderr)


def test_cli_query_full_reports_each_as_damaged_and_prints_the_others(
    run: Run, cli_store: tuple[list[str], ObjectStore]
) -> None:
    where, _ = cli_store
    full = run("query", *where, "{}", "--full", "--sort", "fs_id")
    cut = run("query", *where, "{}", "--full", "--fields", "n", "--sort", "fs_id")

    for result in (full, cut):
        assert result.exit_code == ExitStatus.DAMAGED, result.stderr
        for key, (_, reason) in BODIES.items():
            assert f"index entry '{key}' has a damaged object: {reason}" in result.stderr
    assert json_lines(full.stdout) == [_doc("a"), _doc("z")]
    assert json_lines(cut.stdout) == [{"fs_id": "a", "n": 6}, {"fs_id": "z", "n": 6}]


def test_cli_verify_and_get_agree_on_each(
    run: Run, cli_store: tuple[list[str], ObjectStore]
) -> None:
    where, _ = cli_store
    verified = run("verify", *where)

    assert verified.exit_code == ExitStatus.DAMAGED
    lines = verified.stdout.splitlines()
    damaged = [line.split("\t") for line in lines if line.startswith("damaged\t")]
    assert sorted(key for _, key, _ in damaged) == sorted(DAMAGED)
    for _, key, reason in damaged:
        assert BODIES[key][1] in reason
        got = run("get", *where, key)
        assert got.exit_code == ExitStatus.DAMAGED and got.stdout == ""
        assert got.stderr.startswith(f"s3idx: damaged {key}: {reason}")


def test_cli_a_large_spooled_body_of_another_key_is_damage(run: Run, tmp_path: Path) -> None:
    where = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "i.sqlite3")]
    docs = [_doc("a"), _doc("keymis"), _doc("nokey"), _doc("arr"), _doc("z")]
    assert run("put", *where, "-q", input=jsonl(*docs)).exit_code == 0
    store = LocalStore(tmp_path / "store")
    pad = b"p" * (9 << 20)  # past get's 8 MiB spool threshold
    _plant(store, "keymis", b'{"pad":"' + pad + b'","fs_id":"zzz"}')
    _plant(store, "nokey", b'{"pad":"' + pad + b'"}')
    _plant(store, "arr", b'[{"fs_id":"arr"},"' + pad + b'"]')
    # A later duplicate of the key field is what a JSON parser keeps: another key's document.
    _plant(store, "a", b'{"fs_id":"a","pad":"' + pad + b'","fs_id":"zzz"}')

    got = run("get", *where, "a", "keymis", "nokey", "arr", "z")

    assert got.exit_code == ExitStatus.DAMAGED, got.stderr
    assert json_lines(got.stdout) == [_doc("z")]
    assert "s3idx: damaged a: body's key field 'fs_id' is 'zzz', not the object's key" in (
        got.stderr
    )
    assert "s3idx: damaged keymis: body's key field 'fs_id' is 'zzz'" in got.stderr
    assert "s3idx: damaged nokey: body has no key field 'fs_id'" in got.stderr
    assert "s3idx: damaged arr: body is not a JSON object" in got.stderr


# Bodies whose strings hold escapes, quotes and brackets, each with what both checks say of it.
ESCAPED: list[tuple[bytes, str | None]] = [
    (rb'{"pad":"a\"b\\","fs_id":"k\u00e9\"y","deep":[{"s":"]}\\\""}]}', None),
    (rb'{"fs_id":"k\u00e9\"y","pad":"\\\\\\\"[{"}', None),
    (rb'{"pad":"x\\","fs_id":"other"}', "body's key field 'fs_id' is 'other'"),
    (rb'{"fs_id":"k\u00e9\"y","pad":"unclosed\"}', "body is not valid JSON"),
]


@pytest.mark.parametrize(("body", "said"), ESCAPED)
def test_the_stream_check_reads_escapes_cut_anywhere(body: bytes, said: str | None) -> None:
    """The spooled check reads a body in pieces: an escape or a quote cut between two pieces
    must be read as the whole body would be, at every size of piece."""
    key = 'k\u00e9"y'
    for size in (1, 2, 3, 5, 8, len(body)):
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        problem = spooled_body_problem(key, pieces, "fs_id")
        if said is None:
            assert problem is None, (size, problem)
        else:
            assert problem is not None and problem.startswith(said), (size, problem)
