"""A store whose objects are damaged: every command classifies each object the same way.

The damage is what a local directory or S3 allows: an object missing, its body emptied or
replaced by garbage, metadata that cannot be decoded, metadata naming another key (an object
copied or renamed by another tool), an object of another tool, and, on the local store, object
files emptied, cut short or with a garbled header. ``sync``, ``sync --check``,
``sync --dry-run``, ``rebuild-index`` (and ``--resume``), ``verify``, ``get`` and
``query --full`` must agree on each object, still do the rest of their work, and say what to
do about the objects they cannot use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine, Events, codec
from s3idx.engine import rebuild as rebuild_module
from s3idx.errors import ExitStatus
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import ObjectStore
from s3idx.store.local import LocalStore
from tests.helpers import Run, StopAfter, json_lines, jsonl

KEYS = [f"k{i}" for i in range(1, 9)]
SOUND = ["k1", "k4"]
MISSING = ["k2", "k5"]  # k5's object was renamed to k5-moved
UNDECODABLE = ["k3", "k5-moved"]  # metadata garbage; metadata naming another key
BAD_BODY = ["k6", "k7"]  # body garbage; body emptied (metadata kept)
FOREIGN = ["k8", "readme"]  # replaced by another tool's object; another tool's empty object
ADVICE = "put their documents again from their source, or remove the objects; then run s3idx sync"


def _doc(key: str) -> dict[str, Any]:
    return {"fs_id": key, "n": int(key[1:]) if key[1:].isdigit() else 0, "pad": "p" * 50}


def _read(store: ObjectStore, key: str) -> tuple[bytes, dict[str, str]]:
    body = store.open(key)
    return body.read(), dict(body.head.metadata)


def _damage(store: ObjectStore) -> None:
    """One of each damage the object-store API allows, on any store."""
    store.delete(["k2"])
    # A new body too: an object given new metadata alone keeps its ETag on S3, and sync
    # compares ETags (README, sync), as a rebuild trusts a manifest's line for it.
    _, metadata = _read(store, "k3")
    garbled = {**metadata, codec.META_ENTRY: '{"fs_id": "k3", ', codec.META_CODEC: "json"}
    store.put("k3", codec.dumps(_doc("k3")), garbled)
    data, metadata = _read(store, "k5")
    store.put("k5-moved", data, metadata)  # S3 has no rename: a copy, then a delete
    store.delete(["k5"])
    _, metadata = _read(store, "k6")
    store.put("k6", b"\x00garbage\xff", metadata)
    _, metadata = _read(store, "k7")
    store.put("k7", b"", metadata)
    store.put("k8", b"hello", {"other-tool": "1"})
    store.put("readme", b"", {})


def _put(engine: Engine) -> None:
    assert engine.put_documents([_doc(k) for k in KEYS], fields=["n"]).stored == len(KEYS)


@pytest.fixture
def damaged(store: ObjectStore, tmp_path: Path) -> Iterator[Engine]:
    with Engine(store, SqliteIndex(tmp_path / "i.sqlite3"), workers=4) as engine:
        _put(engine)
        _damage(store)
        yield engine


class Recorded(Events):
    def __init__(self) -> None:
        self.drifted: list[tuple[str, str]] = []
        self.skips: dict[str, str] = {}
        self.damage: dict[str, str] = {}

    def drift(self, kind: str, key: str) -> None:
        self.drifted.append((kind, key))

    def skipped(self, key: str, reason: str) -> None:
        self.skips[key] = reason

    def damaged(self, key: str, reason: str) -> None:
        self.damage[key] = reason


# k8's object was replaced by another tool's: its document is gone, so its entry is index-only
# drift (the foreign object itself is reported apart, as any foreign object is).
EXPECTED_DRIFT = sorted(
    [
        ("index-only", "k2"),
        ("index-only", "k5"),
        ("changed", "k6"),
        ("changed", "k7"),
        ("index-only", "k8"),
    ],
    key=lambda d: d[1],
)
MOVED_REASON = (
    "metadata cannot be decoded: its metadata names key 'k5', not 'k5-moved' "
    "(copied or renamed by another tool?)"
)


def _undecodable(result: Any) -> list[str]:
    return sorted(key for key, _ in result.skipped.undecodable_keys)


@pytest.mark.parametrize("mode", ["check", "dry_run"])
def test_sync_check_and_dry_run_classify_every_object(damaged: Engine, mode: str) -> None:
    events = Recorded()
    result = damaged.sync(events=events, **{mode: True})

    assert sorted(events.drifted, key=lambda d: d[1]) == EXPECTED_DRIFT
    assert (result.bucket_only, result.index_only, result.changed) == (0, 3, 2)
    assert _undecodable(result) == UNDECODABLE
    assert sorted(result.skipped.not_s3idx_keys) == FOREIGN
    assert events.skips["k5-moved"] == MOVED_REASON
    assert events.skips["k3"].startswith("metadata cannot be decoded: s3idx-entry is not valid")


def test_sync_repairs_the_other_drift_and_keeps_reporting_the_undecodable(
    damaged: Engine,
) -> None:
    result = damaged.sync()

    assert (result.removed, result.updated, result.added) == (3, 2, 0)
    assert _undecodable(result) == UNDECODABLE
    keys = sorted(e["fs_id"] for e in damaged.query({}))
    # k3's entry stays (its object is there, undecodable; get and verify keep showing it);
    # k8's goes: another tool's object replaced its document.
    assert keys == ["k1", "k3", "k4", "k6", "k7"]
    again = damaged.sync(check=True)
    assert (again.drift, _undecodable(again), again.skipped.not_s3idx) == (0, UNDECODABLE, 2)


def test_verify_counts_drift_as_sync_check_and_the_undecodable_as_damage(
    damaged: Engine,
) -> None:
    events = Recorded()
    result = damaged.verify(events=events)
    check = damaged.sync(check=True)

    assert sorted(events.drifted, key=lambda d: d[1]) == EXPECTED_DRIFT
    assert (result.bucket_only, result.index_only, result.changed) == (
        check.bucket_only,
        check.index_only,
        check.changed,
    )
    assert sorted(events.damage) == sorted(UNDECODABLE + BAD_BODY)
    assert result.undecodable == 2
    assert events.damage["k5-moved"] == MOVED_REASON
    assert sorted(events.skips) == FOREIGN
    assert (result.ok, result.not_s3idx) == (2, 2)


def test_verify_samples_still_tell_drift_from_undecodable(damaged: Engine) -> None:
    events = Recorded()
    result = damaged.verify(events=events, sample=0.0)

    assert sorted(events.drifted, key=lambda d: d[1]) == EXPECTED_DRIFT
    assert result.drift == damaged.sync(check=True).drift


def test_rebuild_indexes_every_readable_object(damaged: Engine) -> None:
    events = Recorded()
    result = damaged.rebuild_index(events=events)

    assert result.committed
    assert (result.listed, result.written) == (8, 4)
    assert _undecodable(result) == UNDECODABLE
    assert sorted(result.skipped.not_s3idx_keys) == FOREIGN
    assert events.skips["k5-moved"] == MOVED_REASON
    assert sorted(e["fs_id"] for e in damaged.query({})) == sorted(SOUND + BAD_BODY)
    # What the rebuild left is what sync --check sees: no drift, the same objects apart.
    check = damaged.sync(check=True)
    assert (check.drift, _undecodable(check)) == (0, UNDECODABLE)


def test_get_reports_each_object_as_the_others_classify_it(damaged: Engine) -> None:
    found = dict(damaged.fetch([*KEYS, "k5-moved"]))

    assert orjson.loads(found["k1"].read()) == _doc("k1")  # type: ignore[union-attr]
    assert found["k2"] is None and found["k5"] is None
    for key in UNDECODABLE:
        document = found[key]
        assert document is not None and not document.damaged
        assert document.error is not None
        assert document.error.startswith("metadata cannot be decoded: ")
    assert found["k5-moved"].error == MOVED_REASON  # type: ignore[union-attr]
    assert all(found[k].damaged for k in BAD_BODY)  # type: ignore[union-attr]
    assert found["k8"].error == "object has no s3idx metadata"  # type: ignore[union-attr]


# --- the local store: damage to the object files themselves ------------------------------------


def _garble_header(path: Path) -> None:
    path.write_bytes(b"x\n" + path.read_bytes().split(b"\n", 1)[1])


def _garble_metadata(path: Path) -> None:
    header, _, rest = path.read_bytes().partition(b"\n")
    path.write_bytes(header + b"\n{bad\n" + rest.split(b"\n", 1)[1])


def _metadata_not_an_object(path: Path) -> None:
    header, _, rest = path.read_bytes().partition(b"\n")
    path.write_bytes(header + b"\n[1, 2]\n" + rest.split(b"\n", 1)[1])


def _metadata_not_strings(path: Path) -> None:
    header, _, rest = path.read_bytes().partition(b"\n")
    metadata = orjson.loads(rest.split(b"\n", 1)[0])
    metadata[codec.META_KEY] = ["fs_id"]
    path.write_bytes(header + b"\n" + orjson.dumps(metadata) + b"\n" + rest.split(b"\n", 1)[1])


def _cut_in_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:30])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


LOCAL_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty": (_empty, "is empty"),
    "header-garbage": (_garble_header, "is not an s3idx object file"),
    "metadata-garbage": (_garble_metadata, "has damaged metadata"),
    "metadata-not-an-object": (_metadata_not_an_object, "has damaged metadata"),
    "metadata-not-strings": (_metadata_not_strings, "has damaged metadata"),
    "cut-in-header": (_cut_in_header, "has a truncated header"),
}


@pytest.mark.parametrize("damage", LOCAL_DAMAGE, ids=list(LOCAL_DAMAGE))
def test_a_damaged_local_object_file_is_undecodable_everywhere(tmp_path: Path, damage: str) -> None:
    spoil, said = LOCAL_DAMAGE[damage]
    store = LocalStore(tmp_path / "store")
    with Engine(store, SqliteIndex(tmp_path / "i.sqlite3"), workers=4) as engine:
        _put(engine)
        store.delete(["k2"])
        path = store._path("k3")
        spoil(path)
        # k4's object renamed to k9 by hand: k9's metadata names k4.
        store._path("k4").rename(store._path("k9"))
        reason = f"metadata cannot be decoded: {path} {said}"

        check, verify = engine.sync(check=True), Recorded()
        verified = engine.verify(events=verify)
        fetched = dict(engine.fetch(["k3", "k9"]))
        synced = engine.sync()
        rebuilt = engine.rebuild_index()

        for result in (check, synced, rebuilt):
            said_k3 = reason.removeprefix("metadata cannot be decoded: ")
            assert ("k3", said_k3) in result.skipped.undecodable_keys
            assert _undecodable(result) == ["k3", "k9"]
        assert (check.index_only, check.changed, check.bucket_only) == (2, 0, 0)
        assert (verified.index_only, verified.changed, verified.bucket_only) == (2, 0, 0)
        assert verify.damage["k3"] == reason and verified.undecodable == 2
        assert fetched["k3"] is not None and fetched["k3"].error == reason
        assert fetched["k9"] is not None and fetched["k9"].error is not None
        assert synced.removed == 2
        assert rebuilt.committed and rebuilt.written == 5
        assert engine.sync(check=True).drift == 0
        # The advice: removing the objects (s3idx delete KEY) leaves nothing undecodable.
        assert engine.delete(["k3", "k9"]).deleted == 2
        after = engine.sync(check=True)
        assert (after.drift, after.skipped.undecodable) == (0, 0)


def test_a_resumed_rebuild_keeps_counting_the_undecodable(
    damaged: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rebuild_module, "LIST_BATCH", 3)
    stop = threading.Event()
    first = damaged.rebuild_index(events=StopAfter(stop, 2), stop=stop)
    assert first.interrupted and not first.committed

    second = damaged.rebuild_index(resume=True)

    assert second.committed and second.written == 4
    assert _undecodable(second) == UNDECODABLE
    assert sorted(second.skipped.not_s3idx_keys) == FOREIGN


# --- the command line, on the local store and on S3 ---------------------------------------------


@pytest.fixture
def cli_store(
    put_through_cli: Callable[[bytes], tuple[list[str], ObjectStore]],
) -> tuple[list[str], ObjectStore]:
    where, opened = put_through_cli(jsonl(*[_doc(k) for k in KEYS]))
    _damage(opened)
    return where, opened


def _summary(result: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(result.stdout)
    return parsed


def test_cli_sync_check_lists_drift_reports_the_undecodable_and_exits_7(
    run: Run, cli_store: tuple[list[str], ObjectStore]
) -> None:
    where, _ = cli_store
    check = run("sync", *where, "--check")
    as_json = _summary(run("sync", *where, "--check", "--json"))

    assert check.exit_code == ExitStatus.DRIFT
    assert check.stdout == (
        "index-only\tk2\nindex-only\tk5\nchanged\tk6\nchanged\tk7\nindex-only\tk8\n"
    )
    assert f"s3idx: k5-moved: {MOVED_REASON}\n" in check.stderr
    assert (
        f"drift: 0 bucket-only, 3 index-only, 2 changed; foreign: 2 objects not written by "
        f"s3idx (ignored); 2 objects with undecodable metadata (cannot be indexed: {ADVICE})"
    ) in check.stderr
    assert "error" not in check.stderr
    assert (as_json["drift"], as_json["undecodable"], as_json["exit_status"]) == (5, 2, 7)


def test_cli_sync_repairs_the_rest_and_exits_3(
    run: Run, cli_store: tuple[list[str], ObjectStore]
) -> None:
    where, _ = cli_store
    dry = run("sync", *where, "--dry-run")
    synced = run("sync", *where)
    after = run("sync", *where, "--check")

    assert dry.exit_code == ExitStatus.PARTIAL
    assert dry.stdout == "remove\tk2\nremove\tk5\nupdate\tk6\nupdate\tk7\nremove\tk8\n"
    assert synced.exit_code == ExitStatus.PARTIAL, synced.stderr
    assert "added 0, updated 2, removed 3" in synced.stderr
    assert f"2 objects with undecodable metadata (cannot be indexed: {ADVICE})" in synced.stderr
    assert after.exit_code == ExitStatus.PARTIAL and after.stdout == ""


def test_cli_rebuild_index_swaps_in_the_readable_objects_and_exits_3(
    run: Run, cli_store: tuple[list[str], ObjectStore]
) -> None:
    where, _ = cli_store
    rebuilt = run("rebuild-index", *where)
    summary = _summary(run("rebuild-index", *where, "--json"))

    assert rebuilt.exit_code == ExitStatus.PARTIAL, rebuilt.stderr
    summary_line = "rebuild-index: 8 listed, 4 written, 2 not s3idx objects, 2 undecodable"
    assert summary_line in rebuilt.stderr
    assert f"(cannot be indexed: {ADVICE})" in rebuilt.stderr
    assert "not swapped in" not in rebuilt.stderr
    assert (summary["written"], summary["undecodable"], summary["exit_status"]) == (4, 2, 3)
    assert run("sync", *where, "--check").stdout == ""


def test_cli_verify_and_get_and_query_full_agree(
    run: Run, cli_store: tuple[list[str], ObjectStore]
) -> None:
    where, _ = cli_store
    verified = run("verify", *where)
    got = run("get", *where, "k1", "k5-moved", "k3", "k4")
    full = run("query", *where, "--full", "--sort", "fs_id")

    assert verified.exit_code == ExitStatus.DAMAGED
    lines = verified.stdout.splitlines()
    assert [line for line in lines if not line.startswith("damaged")] == [
        "index-only\tk2",
        "index-only\tk5",
        "changed\tk6",
        "changed\tk7",
        "index-only\tk8",  # another tool's object replaced its document
    ]
    assert f"damaged\tk5-moved\t{MOVED_REASON}" in lines
    assert "2 sound, 4 damaged (2 with undecodable metadata); drift" in verified.stderr

    assert got.exit_code == ExitStatus.PARTIAL
    assert json_lines(got.stdout) == [_doc("k1"), _doc("k4")]
    assert f"s3idx: cannot read k5-moved: {MOVED_REASON}\n" in got.stderr
    assert "s3idx: cannot read k3: metadata cannot be decoded: " in got.stderr
    assert f"hint: {ADVICE}" in got.stderr

    assert full.exit_code == ExitStatus.DAMAGED  # k6 and k7
    assert json_lines(full.stdout) == [_doc("k1"), _doc("k4")]
    assert "index entry 'k3' cannot be read: metadata cannot be decoded: " in full.stderr


def test_cli_the_advice_works(run: Run, cli_store: tuple[list[str], ObjectStore]) -> None:
    where, store = cli_store
    again = [_doc(k) for k in ("k3", "k6", "k7", "k8")]
    assert run("put", *where, "-q", input=jsonl(*again)).exit_code == 0
    store.delete(["k5-moved", "readme"])
    assert run("sync", *where, "-q").exit_code == 0
    assert run("sync", *where, "--check").exit_code == 0
    assert run("verify", *where, "-q").exit_code == 0
