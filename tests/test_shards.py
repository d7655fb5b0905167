"""``--shard I/N`` on put and sync: every key is handled by exactly one shard, and the shards
together do (and report) exactly what one unsharded run does.

The same with separate processes at once on moto's S3 is in tests/test_shard_processes.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine, Events
from s3idx.engine.results import PutResult, Reject, SyncResult
from s3idx.errors import ExitStatus
from s3idx.index.sqlite import SqliteIndex
from s3idx.sharding import Shard, shard_of
from s3idx.store.base import ObjectStore
from tests.helpers import Run, json_lines, jsonl

SHARDS = 3
GOOD = [{"fs_id": f"k{i:02d}", "v": i} for i in range(60)]
# Lines whose key cannot be read: shard 0 rejects them, the others count them as not theirs.
UNROUTABLE = [b"not json", b'{"v": 1}', b'{"fs_id": 5}', b"[1, 2]"]
# A key that is read but refused: its own shard rejects it.
BAD_KEY = {"fs_id": "bad//key", "v": 0}


def _input(tmp_path: Path) -> Path:
    """Good documents, two keys given twice (in later chunks), and bad lines among them."""
    lines = [orjson.dumps(d) for d in GOOD[:30]]
    lines += UNROUTABLE[:2]
    lines += [orjson.dumps(d) for d in GOOD[30:]]
    lines.append(orjson.dumps(BAD_KEY))
    lines += UNROUTABLE[2:]
    lines += [orjson.dumps({"fs_id": "k03", "v": 103}), orjson.dumps({"fs_id": "k41", "v": 141})]
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


class _Rejects(Events):
    def __init__(self) -> None:
        self.rejects: list[Reject] = []

    def rejected(self, reject: Reject) -> None:
        self.rejects.append(reject)


def _put(
    store: ObjectStore, index_path: Path, path: Path, shard: Shard | None, **options: Any
) -> tuple[PutResult, list[str]]:
    events = _Rejects()
    engine = Engine(store, SqliteIndex(index_path), workers=2, batch_size=10)
    try:
        result = engine.put_files([path], events=events, shard=shard, fields=["v"], **options)
    finally:
        engine.index.close()
    return result, [r.location for r in events.rejects]


def _index_keys(index_path: Path) -> dict[str, int]:
    with SqliteIndex(index_path) as index:
        return {e["fs_id"]: e["v"] for e in index.find({}, fields=["fs_id", "v"])}


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
def test_put_shards_store_each_document_once_and_agree_with_one_put(
    store: ObjectStore, tmp_path: Path
) -> None:
    path = _input(tmp_path)
    whole, whole_rejects = _put(store, tmp_path / "whole.sqlite3", path, None)
    expected = _index_keys(tmp_path / "whole.sqlite3")
    assert len(expected) == len(GOOD)
    assert expected["k03"] == 103  # the later of two documents of a key wins

    shared = tmp_path / "shared.sqlite3"
    results, rejects = [], []
    for n in range(SHARDS):
        result, located = _put(store, shared, path, Shard(n, SHARDS))
        results.append(result)
        rejects.append(located)

    # Every shard reads the whole input; each record is handled by exactly one of them.
    assert all(r.read == whole.read for r in results)
    assert sum(r.read - r.other_shards for r in results) == whole.read
    assert [r.shard for r in results] == ["0/3", "1/3", "2/3"]
    # Each key is stored by the one shard that owns it, and counted once, though a key's two
    # documents are in different chunks, so each is uploaded (as in the one put).
    stored = sum(r.stored for r in results)
    assert stored == whole.stored
    assert sum(r.duplicates for r in results) == whole.duplicates == 2
    owners = {d["fs_id"]: shard_of(d["fs_id"], SHARDS) for d in GOOD}
    for n, result in enumerate(results):
        own = sum(1 for owner in owners.values() if owner == n)
        dupes = sum(1 for k in ("k03", "k41") if owners[k] == n)
        assert result.stored == own, n
        assert result.duplicates == dupes, n
    # A bad line is rejected by exactly one shard: the unroutable ones by shard 0.
    assert sorted(r for located in rejects for r in located) == sorted(whole_rejects)
    assert len(whole_rejects) == len(UNROUTABLE) + 1
    bad_key_owner = shard_of(BAD_KEY["fs_id"], SHARDS)
    assert len(rejects[0]) == len(UNROUTABLE) + (bad_key_owner == 0)
    assert sum(r.rejected for r in results) == whole.rejected
    # The index the shards wrote together is the one put's, and the bucket holds each key once.
    assert _index_keys(shared) == expected
    assert sorted(o.key for o in store.list_objects()) == sorted(expected)


def test_put_shard_dry_run_and_skip_unchanged_count_only_the_shards_keys(
    tmp_path: Path,
) -> None:
    from s3idx.store.local import LocalStore

    store = LocalStore(tmp_path / "store")
    path = _input(tmp_path)
    index = tmp_path / "index.sqlite3"
    dry = [_put(store, index, path, Shard(n, SHARDS), dry_run=True)[0] for n in range(SHARDS)]
    assert sum(r.stored for r in dry) == len(GOOD)
    assert not list(store.list_objects())
    _put(store, index, path, None)
    again = [
        _put(store, index, path, Shard(n, SHARDS), skip_unchanged=True)[0] for n in range(SHARDS)
    ]
    # Each duplicated key's first document differs from the one stored (its last), which
    # then differs from the first: both are uploaded again, the key counted once as stored and
    # once as a duplicate.
    assert sum(r.unchanged for r in again) == len(GOOD) - 2
    assert sum(r.stored for r in again) == 2
    assert sum(r.duplicates for r in again) == 2
    counted = ("unchanged", "stored", "rejected", "duplicates")
    assert all(r.other_shards == r.read - sum(getattr(r, n) for n in counted) for r in again)


# --- sync ---------------------------------------------------------------------------------------


def make_drift(engine: Engine, other: Engine) -> dict[str, set[str]]:
    """Drift of every kind over a stored set of documents; returns the keys of each kind.

    ``other`` writes to the same store with an index of its own, so its objects are new
    (bucket-only) or changed for ``engine``'s index.
    """
    engine.put_documents(GOOD, fields=["v"])
    keys = [d["fs_id"] for d in GOOD]
    kinds = {
        "bucket-only": {f"new{i}" for i in range(8)},
        "changed": set(keys[0:8]),
        "index-only": set(keys[8:16]),
        "interrupted-delete": set(keys[16:24]),
    }
    other.put_documents(
        [{"fs_id": k, "v": -1} for k in sorted(kinds["bucket-only"] | kinds["changed"])],
        fields=["v"],
    )
    engine.store.delete(sorted(kinds["index-only"]))
    # A delete that journaled its keys and died before removing anything.
    engine.index.journal_deletes(engine.index.etags(sorted(kinds["interrupted-delete"])))
    return kinds


class _Drift(Events):
    def __init__(self) -> None:
        self.keys: dict[str, set[str]] = {}

    def drift(self, kind: str, key: str) -> None:
        self.keys.setdefault(kind, set()).add(key)


COUNTS = ("listed", "indexed", "bucket_only", "index_only", "changed", "interrupted_deletes")


def _counts(result: SyncResult) -> dict[str, int]:
    return {name: getattr(result, name) for name in COUNTS}


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
def test_sync_shards_find_and_repair_exactly_the_drift_of_one_sync(
    store: ObjectStore, tmp_path: Path
) -> None:
    engine = Engine(store, SqliteIndex(tmp_path / "index.sqlite3"), workers=2)
    other = Engine(engine.store, SqliteIndex(tmp_path / "other.sqlite3"), workers=2)
    kinds = make_drift(engine, other)
    other.index.close()

    whole_events = _Drift()
    whole = engine.sync(check=True, events=whole_events)
    assert whole_events.keys == kinds
    assert whole.drift == 32

    parts = []
    for n in range(SHARDS):
        events = _Drift()
        result = engine.sync(check=True, events=events, shard=Shard(n, SHARDS))
        assert result.shard == f"{n}/{SHARDS}"
        parts.append((result, events.keys))
        for found in events.keys.values():
            assert all(shard_of(k, SHARDS) == n for k in found)
    for name in COUNTS:
        assert sum(_counts(r)[name] for r, _ in parts) == _counts(whole)[name], name
    for kind, expected in kinds.items():
        found = [keys.get(kind, set()) for _, keys in parts]
        assert set().union(*found) == expected
        assert sum(len(f) for f in found) == len(expected)  # no key reported twice

    # --dry-run reads the same and lists the same keys, shard by shard.
    dry = [_Drift() for _ in range(SHARDS)]
    for n, events in enumerate(dry):
        engine.sync(dry_run=True, events=events, shard=Shard(n, SHARDS))
    for kind, expected in kinds.items():
        found = [events.keys.get(kind, set()) for events in dry]
        assert set().union(*found) == expected
        assert sum(len(f) for f in found) == len(expected)

    # Repairing shard by shard: each finishes only its own journaled deletes.
    applied = []
    for n in range(SHARDS):
        applied.append(engine.sync(shard=Shard(n, SHARDS)))
        left = engine.index.journaled()
        assert all(shard_of(k, SHARDS) > n for k in left)
    assert sum(r.added for r in applied) == 8
    assert sum(r.updated for r in applied) == 8
    assert sum(r.removed for r in applied) == 8
    assert sum(r.interrupted_deletes for r in applied) == 8
    assert engine.sync(check=True).drift == 0
    indexed = {e["fs_id"] for e in engine.query({}, fields=["fs_id"])}
    kept = {d["fs_id"] for d in GOOD} - kinds["index-only"] - kinds["interrupted-delete"]
    assert indexed == kept | kinds["bucket-only"]
    engine.close()


def test_sync_shard_of_an_empty_share_refuses_nothing(tmp_path: Path) -> None:
    """A shard owning no object is no empty store: its sync prunes nothing it should not."""
    from s3idx.store.local import LocalStore

    engine = Engine(LocalStore(tmp_path / "store"), SqliteIndex(tmp_path / "i.sqlite3"))
    engine.put_documents([{"fs_id": "only"}])
    empty = next(n for n in range(SHARDS) if shard_of("only", SHARDS) != n)
    result = engine.sync(shard=Shard(empty, SHARDS))
    assert (result.listed, result.indexed, result.removed) == (0, 0, 0)
    assert engine.count() == 1
    engine.close()


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def locations(tmp_path: Path) -> list[str]:
    return ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]


def test_put_shard_flag_reports_other_shards(run: Run, locations: list[str]) -> None:
    docs = jsonl(*GOOD)
    result = run("put", "--shard", "1/3", "--json", *locations, input=docs)
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    own = sum(1 for d in GOOD if shard_of(d["fs_id"], 3) == 1)
    assert (summary["shard"], summary["stored"], summary["other_shards"]) == (
        "1/3",
        own,
        len(GOOD) - own,
    )
    text = run("put", "--shard", "1/3", *locations, input=docs)
    assert f"put (shard 1/3): 60 read, {own} stored, 0 rejected, {60 - own} of other shards" in (
        text.stderr
    )


def test_shard_auto_reads_the_schedulers_variables(run: Run, locations: list[str]) -> None:
    assert run("put", *locations, input=jsonl(*GOOD)).exit_code == 0
    env = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "3"}
    args = ["put", "--dry-run", "--shard", "auto", "--json", *locations]
    result = run(*args, input=jsonl(*GOOD), env=env)
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["shard"] == "2/3"
    assert summary["would_store"] == sum(1 for d in GOOD if shard_of(d["fs_id"], 3) == 2)
    env = {"JOB_COMPLETION_INDEX": "0", "S3IDX_SHARD_COUNT": "3"}
    result = run("sync", "--check", "--shard", "auto", "--json", *locations, env=env)
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["shard"] == "0/3"
    assert summary["listed"] == sum(1 for d in GOOD if shard_of(d["fs_id"], 3) == 0)


@pytest.mark.parametrize(
    ("command", "shard", "env", "message"),
    [
        ("put", "auto", {}, "--shard auto: no batch scheduler found"),
        ("sync", "auto", {"JOB_COMPLETION_INDEX": "1"}, "S3IDX_SHARD_COUNT is not set"),
        ("put", "3/3", {}, "shard 3 does not exist in 3 shards"),
        ("sync", "one", {}, "--shard 'one' is not I/N or auto"),
    ],
)
def test_shard_that_cannot_be_told_is_a_usage_error(
    run: Run, locations: list[str], command: str, shard: str, env: dict[str, str], message: str
) -> None:
    # The scheduler variables are removed, so the test's own environment cannot answer.
    cleared = {
        name: None
        for name in (
            "SLURM_ARRAY_TASK_ID",
            "JOB_COMPLETION_INDEX",
            "AWS_BATCH_JOB_ARRAY_INDEX",
            "S3IDX_SHARD_COUNT",
        )
    }
    args = [command, "--shard", shard, "--json", *locations]
    result = run(*args, input=jsonl(*GOOD), env={**cleared, **env})
    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert message in json_lines(result.stdout)[0]["error"]
    assert not (Path(locations[1])).exists()  # refused before anything was opened


def test_sync_shards_leave_the_manifests_of_other_shards_keys(tmp_path: Path) -> None:
    """A shard sees only its keys: compacting would drop the lines of the others' objects."""
    from s3idx.engine.manifest import list_manifests
    from s3idx.store.local import LocalStore

    store = LocalStore(tmp_path / "store")
    engine = Engine(store, SqliteIndex(tmp_path / "i.sqlite3"), batch_size=10)
    engine.put_documents(GOOD)
    before = [m.key for m in list_manifests(store)]
    assert before
    for shard in range(SHARDS):
        result = engine.sync(shard=Shard(shard, SHARDS))
        assert result.manifests_removed == 0
    assert [m.key for m in list_manifests(store)] == before
    rebuilt = engine.rebuild_index()  # still vouched for, every object
    assert (rebuilt.from_manifests, rebuilt.heads) == (len(GOOD), 0)
    engine.close()
