"""``s3idx verify``: every kind of damage is found on every store, per key, with its reason."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine, Events, codec
from s3idx.errors import ExitStatus
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import ObjectStore
from s3idx.store.local import LocalStore
from tests.helpers import Run, jsonl

KEYS = ["a", "b", "c", "d"]


def _doc(key: str, v: int | None = None) -> dict[str, Any]:
    return {"fs_id": key, "v": ord(key) if v is None else v, "n": {"x": key * 3}, "pad": "p" * 500}


class Recorded(Events):
    def __init__(self) -> None:
        self.damage: dict[str, str] = {}
        self.drifted: list[tuple[str, str]] = []
        self.skips: list[str] = []

    def damaged(self, key: str, reason: str) -> None:
        self.damage[key] = reason

    def drift(self, kind: str, key: str) -> None:
        self.drifted.append((kind, key))

    def skipped(self, key: str, reason: str) -> None:
        self.skips.append(key)


@pytest.fixture
def engine(store: ObjectStore, tmp_path: Path) -> Iterator[Engine]:
    with Engine(store, SqliteIndex(tmp_path / "i.sqlite3"), fields=["v", "n.x"]) as engine:
        assert engine.put_documents([_doc(k) for k in KEYS]).stored == len(KEYS)
        yield engine


def _verify(engine: Engine, **options: Any) -> tuple[Any, Recorded]:
    events = Recorded()
    return engine.verify(events=events, **options), events


def _put_raw(
    store: ObjectStore, key: str, document: dict[str, Any], metadata: dict[str, str]
) -> None:
    """Store ``document`` under ``key`` with the given metadata, hash made to match the body."""
    raw = codec.dumps(document)
    metadata = {**metadata, codec.META_SHA256: hashlib.sha256(raw).hexdigest()}
    store.put(key, codec.encode_raw(raw, metadata[codec.META_CODEC]), metadata)


def test_a_sound_store_verifies_clean(engine: Engine) -> None:
    result, events = _verify(engine)
    assert (result.listed, result.indexed, result.checked, result.ok) == (4, 4, 4, 4)
    assert (result.damaged, result.drift) == (0, 0)
    assert events.damage == {} and events.drifted == []


def test_a_body_replaced_under_its_metadata_is_damage(engine: Engine, store: ObjectStore) -> None:
    old = store.open("b")
    metadata = dict(old.head.metadata)
    old.read()
    store.put("b", codec.encode_raw(codec.dumps(_doc("b", 7)), "json+zlib"), metadata)
    engine.sync()  # the index follows the new ETag: what remains is damage, not drift

    result, events = _verify(engine)

    assert (result.damaged, result.ok, result.drift) == (1, 3, 0)
    assert list(events.damage) == ["b"]
    assert "does not match its recorded sha256" in events.damage["b"]


def test_metadata_that_does_not_describe_its_body_is_damage(
    engine: Engine, store: ObjectStore
) -> None:
    head = store.head("c")
    metadata = dict(head.metadata)
    entry = codec.parse_metadata(metadata).entry
    metadata[codec.META_ENTRY] = codec.ascii_json({**entry, "v": 12345})
    _put_raw(store, "c", _doc("c"), metadata)
    engine.sync()

    result, events = _verify(engine)

    assert list(events.damage) == ["c"]
    assert "metadata's index entry differs from the body in v" in events.damage["c"]
    assert result.drift == 0


def test_an_index_entry_that_differs_from_the_metadata_is_damage(engine: Engine) -> None:
    entry, kept = engine.index.bookkeeping(["d"])["d"]
    engine.index.upsert([{**entry, "n": {"x": "other"}, "_s3idx": kept.as_dict()}])

    result, events = _verify(engine)

    assert (result.damaged, result.drift) == (1, 0)
    assert list(events.damage) == ["d"]
    assert "index entry differs from the object's metadata in n" in events.damage["d"]
    assert "rebuild-index" in events.damage["d"]


def test_a_copy_under_another_key_is_undecodable_damage_not_drift(
    engine: Engine, store: ObjectStore
) -> None:
    body = store.open("a")
    data, metadata = body.read(), dict(body.head.metadata)
    store.put("e", data, metadata)  # a copy under a key its document does not have

    result, events = _verify(engine)
    check = engine.sync(check=True)

    # sync cannot index it (its metadata names 'a'): not drift, as sync --check counts it.
    assert events.drifted == [] and check.drift == 0
    assert [k for k, _ in check.skipped.undecodable_keys] == ["e"]
    assert events.damage == {
        "e": "metadata cannot be decoded: its metadata names key 'a', not 'e' "
        "(copied or renamed by another tool?)"
    }
    assert (result.listed, result.bucket_only, result.damaged, result.undecodable) == (5, 0, 1, 1)


def test_a_body_whose_key_is_not_the_one_its_metadata_names_is_damage_and_drift(
    engine: Engine, store: ObjectStore
) -> None:
    metadata = dict(store.head("a").metadata)
    entry = codec.parse_metadata(metadata).entry
    metadata[codec.META_ENTRY] = codec.ascii_json({**entry, "fs_id": "e"})
    _put_raw(store, "e", _doc("a"), metadata)  # metadata for 'e' over the document of 'a'

    result, events = _verify(engine)

    # Its metadata gives an entry: sync adopts it, so it is drift, and its body is damage.
    assert events.drifted == [("bucket-only", "e")]
    assert "key field 'fs_id' is 'a', not the object's key" in events.damage["e"]
    assert (result.bucket_only, result.damaged, result.undecodable) == (1, 1, 0)


def test_drift_is_counted_as_sync_check_counts_it(engine: Engine, store: ObjectStore) -> None:
    store.delete(["a"])
    store.put("zz", b"not ours", {"other": "tool"})

    result, events = _verify(engine)
    check = engine.sync(check=True)

    # Not s3idx's: apart from drift, as sync --check counts it.
    assert events.drifted == [("index-only", "a")]
    assert (result.bucket_only, result.index_only, result.changed) == (
        check.bucket_only,
        check.index_only,
        check.changed,
    )
    assert events.skips == ["zz"] and result.not_s3idx == 1
    assert result.damaged == 0


def test_a_sample_of_zero_reads_nothing_but_counts_drift(
    engine: Engine, store: ObjectStore
) -> None:
    store.delete(["b"])
    result, events = _verify(engine, sample=0.0)
    assert (result.checked, result.index_only, result.listed) == (0, 1, 3)
    assert events.drifted == [("index-only", "b")] and events.damage == {}


# --- the command line --------------------------------------------------------------------------


@pytest.fixture
def local(run: Run, tmp_path: Path) -> tuple[Run, list[str], Path]:
    root = tmp_path / "store"
    where = ["--store", str(root)]
    put = run("put", *where, "--field", "v", "-q", input=jsonl(*[_doc(k) for k in KEYS]))
    assert put.exit_code == 0
    return run, where, root


def test_cli_verify_prints_a_line_per_damaged_key_and_exits_8(
    local: tuple[Run, list[str], Path],
) -> None:
    run, where, root = local
    assert run("verify", *where).exit_code == 0
    path = LocalStore(root)._path("b")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    run("sync", *where, "-q")

    result = run("verify", *where)
    as_json = run("verify", *where, "--json")
    quiet = run("verify", *where, "-q")

    assert result.exit_code == ExitStatus.DAMAGED
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("damaged\tb\tbody ")
    assert "verify: 4 objects, 4 entries; checked 4: 3 sound, 1 damaged" in result.stderr
    summary = orjson.loads(as_json.stdout)
    assert as_json.exit_code == ExitStatus.DAMAGED
    assert (summary["damaged"], summary["ok"]) == (1, 3)
    assert [d["key"] for d in summary["damage"]] == ["b"]
    assert quiet.exit_code == ExitStatus.DAMAGED
    assert quiet.stdout == result.stdout and quiet.stderr == ""


def test_cli_verify_exits_7_for_drift_alone(local: tuple[Run, list[str], Path]) -> None:
    run, where, root = local
    LocalStore(root).delete(["c"])

    result = run("verify", *where, "--sample", "0.5")

    assert result.exit_code == ExitStatus.DRIFT
    assert result.stdout == "index-only\tc\n"
    assert "(a 0.5 sample)" in result.stderr


def test_cli_verify_refuses_a_sample_outside_0_to_1(local: tuple[Run, list[str], Path]) -> None:
    run, where, _ = local
    result = run("verify", *where, "--sample", "1.5")
    assert result.exit_code == ExitStatus.USAGE
    assert "--sample" in result.stderr


def test_the_summary_says_one_object_and_one_entry_in_the_singular(
    run: Run, tmp_path: Path
) -> None:
    where = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.sqlite3")]
    assert run("put", *where, input=jsonl(_doc("a"))).exit_code == 0

    result = run("verify", *where)

    assert result.exit_code == 0, result.stderr
    assert "verify: 1 object, 1 entry; checked 1: 1 sound, 0 damaged" in result.stderr
