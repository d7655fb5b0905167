"""An index describes one store: used with another, every command refuses it (exit 2).

One index given the entries of two stores would answer queries with documents the store at
hand does not hold, and a later sync against either would remove the other's entries. So the
index records its store (a local store's real path, ``s3://BUCKET/PREFIX``) when entries are
first written, and ``rebuild-index`` from another store is the one way to re-point it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine, open_engine
from s3idx.backends import store_identity
from s3idx.config import resolve_settings
from s3idx.engine.events import Events
from s3idx.engine.retry import RetryPolicy
from s3idx.errors import ExitStatus, IndexSettingsError
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import ObjectInfo
from s3idx.store.local import LocalStore
from tests.helpers import Run, json_lines, jsonl, subprocess_env
from tests.s3proxy import S3Proxy

DOCS = [{"fs_id": f"k{i}", "v": i} for i in range(5)]


def _refusal(index: Path, bound: Path | str, given: Path | str) -> str:
    return (
        f"s3idx: error: index {index} is the index of store {bound}, not of {given}\n"
        "  hint: give this store's own index (--index; a new location is filled by put or by "
        "rebuild-index); to make this index describe this store instead, replacing its "
        "entries, run s3idx rebuild-index\n"
    )


@pytest.fixture
def bound(run: Run, tmp_path: Path) -> Path:
    """The SQLite index of store ``a`` (DOCS), and store ``b`` with one document of its own."""
    index = tmp_path / "i.sqlite3"
    put = run("put", "--store", str(tmp_path / "a"), "--index", str(index), input=jsonl(*DOCS))
    assert put.exit_code == 0, put.stderr
    other = tmp_path / "b.sqlite3"
    put = run("put", "--store", str(tmp_path / "b"), "--index", str(other), input=jsonl(DOCS[0]))
    assert put.exit_code == 0, put.stderr
    return index


def _entries(index: Path) -> list[str]:
    with sqlite3.connect(index) as conn:
        return [row[0] for row in conn.execute("SELECT key FROM entries ORDER BY key")]


# Every command that writes either, or reads the store through the index (get reads the
# store alone; a plain query the index alone).
COMMANDS = {
    "put": ["put", "-"],
    "query --full": ["query", "{}", "--full"],
    "delete": ["delete", "k1"],
    "delete --filter": ["delete", "--filter", "{}", "--all"],
    "sync": ["sync"],
    "sync --dry-run": ["sync", "--dry-run"],
    "verify": ["verify"],
    "reindex": ["reindex", "--field", "w"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_the_index_of_another_store(
    run: Run, bound: Path, tmp_path: Path, command: str
) -> None:
    args = COMMANDS[command]
    other = tmp_path / "b"
    objects_before = sorted(p.name for p in (other / "objects").iterdir())

    result = run(*args, "--store", str(other), "--index", str(bound), input=jsonl({"fs_id": "n"}))

    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert result.stderr == _refusal(bound, tmp_path / "a", other)
    assert result.stdout == ""
    assert _entries(bound) == [d["fs_id"] for d in DOCS]  # the index is as it was
    assert sorted(p.name for p in (other / "objects").iterdir()) == objects_before  # the store too


def test_a_query_of_the_index_alone_answers_whatever_store_is_given(
    run: Run, bound: Path, tmp_path: Path
) -> None:
    """Its entries say nothing of the store at hand: a query given --index only (the default
    store) is answered, as before."""
    for store in ([], ["--store", str(tmp_path / "b")]):
        listed = run("query", "{}", "--fields", "fs_id", *store, "--index", str(bound))
        counted = run("query", "{}", "--count", *store, "--index", str(bound))
        assert listed.exit_code == 0, listed.stderr
        assert json_lines(listed.stdout) == [{"fs_id": d["fs_id"]} for d in DOCS]
        assert counted.stdout == f"{len(DOCS)}\n"


def test_a_store_named_otherwise_is_the_same_store(
    run: Run, bound: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative, through a link, with a trailing slash: one directory, one store."""
    (tmp_path / "link").symlink_to(tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    for store in ("a", "./a/", str(tmp_path / "link"), f"file://{tmp_path / 'a'}"):
        result = run("query", "{}", "--full", "--store", store, "--index", str(bound))
        assert result.exit_code == 0, (store, result.stderr)
        assert len(json_lines(result.stdout)) == len(DOCS)


def test_rebuild_index_from_another_store_re_points_the_index(
    run: Run, bound: Path, tmp_path: Path
) -> None:
    other = ["--store", str(tmp_path / "b"), "--index", str(bound)]
    rebuilt = run("rebuild-index", *other)
    assert rebuilt.exit_code == 0, rebuilt.stderr

    assert _entries(bound) == ["k0"]  # store b's entries only
    assert json_lines(run("query", "{}", "--fields", "fs_id", *other).stdout) == [{"fs_id": "k0"}]
    again = run("query", "{}", "--full", "--store", str(tmp_path / "a"), "--index", str(bound))
    assert again.exit_code == ExitStatus.USAGE
    assert again.stderr == _refusal(bound, tmp_path / "b", tmp_path / "a")


def test_info_says_which_store_the_index_describes(run: Run, bound: Path, tmp_path: Path) -> None:
    own = run("info", "--json", "--store", str(tmp_path / "a"), "--index", str(bound))
    other = run("info", "--json", "--store", str(tmp_path / "b"), "--index", str(bound))

    assert own.exit_code == 0, own.stderr
    assert orjson.loads(own.stdout)["indexed_store"] == str(tmp_path / "a")
    assert other.exit_code == ExitStatus.USAGE
    shown = orjson.loads(other.stdout)
    assert (shown["indexed_store"], shown["index_status"]) == (str(tmp_path / "a"), "ok")
    assert shown["entries"] == len(DOCS)  # what it holds is shown all the same
    assert shown["problems"] == [
        _refusal(bound, tmp_path / "a", tmp_path / "b").split("\n")[0][14:]
    ]


def test_an_index_that_records_no_store_takes_the_next_one_written_to_it(
    run: Run, bound: Path, tmp_path: Path
) -> None:
    """An index written before s3idx recorded its store: any store reads it; the first
    command that adds entries records its own."""
    with sqlite3.connect(bound) as conn:
        conn.execute("DELETE FROM meta WHERE name = 'store'")
    b = ["--store", str(tmp_path / "b"), "--index", str(bound)]
    assert run("delete", "--dry-run", "k1", *b).exit_code == 0  # checked: nothing recorded
    assert run("sync", "--dry-run", *b).exit_code == 0  # changes nothing, records nothing

    assert run("put", *b, input=jsonl({"fs_id": "n"})).exit_code == 0

    a = run("query", "{}", "--full", "--store", str(tmp_path / "a"), "--index", str(bound))
    assert a.exit_code == ExitStatus.USAGE
    assert a.stderr == _refusal(bound, tmp_path / "b", tmp_path / "a")


def test_sync_into_a_new_index_records_its_store(run: Run, bound: Path, tmp_path: Path) -> None:
    new = tmp_path / "new.sqlite3"
    assert run("sync", "--store", str(tmp_path / "a"), "--index", str(new)).exit_code == 0
    refused = run("query", "{}", "--full", "--store", str(tmp_path / "b"), "--index", str(new))
    assert refused.exit_code == ExitStatus.USAGE
    assert refused.stderr == _refusal(new, tmp_path / "a", tmp_path / "b")


def test_put_over_processes_records_its_store(run: Run, tmp_path: Path) -> None:
    index = tmp_path / "p.sqlite3"
    a = ["--store", str(tmp_path / "a"), "--index", str(index)]
    put = run("put", "--processes", "2", *a, input=jsonl(*DOCS))
    assert put.exit_code == 0, put.stderr
    refused = run("put", "--processes", "2", "--store", str(tmp_path / "b"), "--index", str(index))
    assert refused.exit_code == ExitStatus.USAGE, refused.stderr
    assert _refusal(index, tmp_path / "a", tmp_path / "b") in refused.stderr
    assert not (tmp_path / "b").exists()


def test_an_s3_store_is_its_bucket_and_prefix_whatever_the_endpoint(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    index = tmp_path / "s3.sqlite3"
    docs = ["--store", f"s3://{s3_bucket}/docs/", "--index", str(index)]
    put = run("put", *docs, "--endpoint-url", s3_endpoint, input=jsonl(*DOCS))
    assert put.exit_code == 0, put.stderr

    with S3Proxy(s3_endpoint) as proxy:  # the same service through another URL
        same = run("query", "{}", "--full", *docs, "--endpoint-url", proxy.url)
    other = ["--store", f"s3://{s3_bucket}/other", "--index", str(index)]
    refused = run("query", "{}", "--full", *other, "--endpoint-url", s3_endpoint)

    assert same.exit_code == 0, same.stderr
    assert len(json_lines(same.stdout)) == len(DOCS)
    assert refused.exit_code == ExitStatus.USAGE
    assert refused.stderr == _refusal(index, f"s3://{s3_bucket}/docs", f"s3://{s3_bucket}/other")


def test_the_library_refuses_the_index_of_another_store(tmp_path: Path) -> None:
    index = tmp_path / "i.sqlite3"
    with Engine(LocalStore(tmp_path / "a"), SqliteIndex(index)) as engine:
        engine.put_documents(DOCS)
    with Engine(LocalStore(tmp_path / "b"), SqliteIndex(tmp_path / "b.sqlite3")) as engine:
        engine.put_documents([{"fs_id": "b"}])
    with Engine(LocalStore(tmp_path / "b"), SqliteIndex(index)) as engine:
        with pytest.raises(IndexSettingsError, match="is the index of store"):
            list(engine.query_documents({}))
        assert len(list(engine.query({}))) == len(DOCS)  # the index alone: entries as they are
        with pytest.raises(IndexSettingsError, match="is the index of store"):
            engine.put_documents([{"fs_id": "x"}])
    assert _entries(index) == [d["fs_id"] for d in DOCS]
    with open_engine(store=str(tmp_path / "a"), index=str(index)) as engine:
        assert engine.count({}) == len(DOCS)


@pytest.mark.parametrize(
    "store", ["rel/dir", "~/x", "s3://bucket", "s3://bucket/a/b/", "file:///tmp/s"]
)
def test_a_store_says_unopened_what_it_says_opened(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine of a query does not open its store: both ways must name it alike."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = resolve_settings({"store": store, "index": str(tmp_path / "i.sqlite3")})
    with Engine.from_settings(settings) as engine:
        opened = engine.store.identity
    assert store_identity(settings) == opened


def test_two_syncs_into_one_new_index_from_two_stores_never_mix(tmp_path: Path) -> None:
    """A new index has no settings until sync's first batch records them: the store must be
    recorded with them, before that batch's entries, or two syncs starting together from two
    stores would both write before either recorded its store."""
    stores = {}
    for name in ("a", "b"):
        stores[name] = tmp_path / name
        docs = [{"fs_id": f"{name}{i:05d}", "v": i} for i in range(3000)]
        with Engine(LocalStore(stores[name]), SqliteIndex(tmp_path / f"{name}.sqlite3")) as e:
            e.put_documents(docs)
    home = tmp_path / "home"
    home.mkdir()
    for round_ in range(4):
        index = str(tmp_path / f"new{round_}.sqlite3")
        procs = {
            name: subprocess.Popen(
                [sys.executable, "-m", "s3idx", "sync", "--store", str(store), "--index", index],
                env=subprocess_env(home),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for name, store in stores.items()
        }
        outcomes = {name: (p.wait(120), p.stderr.read().decode()) for name, p in procs.items()}  # type: ignore[union-attr]
        for p in procs.values():
            p.stdout.close()  # type: ignore[union-attr]
            p.stderr.close()  # type: ignore[union-attr]
        winners = [name for name, (status, _) in outcomes.items() if status == 0]
        assert len(winners) == 1, f"round {round_}: {outcomes}"
        (loser,) = set(stores) - set(winners)
        assert outcomes[loser][0] == ExitStatus.USAGE, f"round {round_}: {outcomes}"
        assert "is the index of store" in outcomes[loser][1]
        keys = _entries(Path(index))
        assert len(keys) == 3000 and {k[0] for k in keys} == set(winners), f"round {round_}"
        assert SqliteIndex(index).store_binding() == str(stores[winners[0]].resolve())


class _ListingInterrupted(LocalStore):
    """A local store whose listing runs ``writer`` once ``after`` keys have been listed:
    another writer's whole run, forced into the middle of this store's sync."""

    def __init__(self, root: Path, writer: Callable[[], None], after: int) -> None:
        super().__init__(root)
        self._writer = writer
        self._after = after

    def list_objects(
        self, prefix: str = "", *, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        for n, info in enumerate(super().list_objects(prefix, start_after=start_after)):
            if n == self._after:
                self._writer()
            yield info


@pytest.mark.parametrize(
    ("writer", "after"),
    [("sync", 0), ("put", 0), ("rebuild-index", 0), ("rebuild-index", 1200)],
)
def test_a_sync_refused_by_a_store_bound_while_it_ran_leaves_that_stores_entries_alone(
    tmp_path: Path, writer: str, after: int
) -> None:
    """A sync from store b into a new index lists b while another writer binds the index to
    store a (or, after 1,200 keys, re-points it to a: rebuild-index) and writes a's entries.
    b's merge then finds a's entries missing from b: it must be refused before it removes
    them or adds b's beside them, not only before its first batch of entries."""
    index = tmp_path / "new.sqlite3"
    docs = {name: [{"fs_id": f"{name}{i:04d}"} for i in range(2500)] for name in ("a", "b")}
    for name in ("a", "b"):
        with Engine(LocalStore(tmp_path / name), SqliteIndex(tmp_path / f"{name}.sqlite3")) as e:
            e.put_documents(docs[name])

    def other_writer() -> None:
        with Engine(LocalStore(tmp_path / "a"), SqliteIndex(index)) as engine:
            if writer == "sync":
                engine.sync()
            elif writer == "put":
                engine.put_documents(docs["a"])
            else:
                engine.rebuild_index()

    store = _ListingInterrupted(tmp_path / "b", other_writer, after)
    with (
        Engine(store, SqliteIndex(index)) as engine,
        pytest.raises(IndexSettingsError, match="is the index of store"),
    ):
        engine.sync()
    assert _entries(index) == [d["fs_id"] for d in docs["a"]]
    assert SqliteIndex(index).store_binding() == str((tmp_path / "a").resolve())


@pytest.fixture
def no_retry_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every retry still happens, without its backoff sleep (in this process)."""
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, retry, rng: 0.0)


def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")


@pytest.mark.parametrize("transport", ["boto3", "http", "obstore"])
@pytest.mark.parametrize("wrong", ["missing bucket", "no credentials", "refused connection"])
@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_put_that_cannot_reach_its_store_leaves_a_new_index_new(
    no_retry_delays: None,
    run: Run,
    s3_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
    wrong: str,
    processes: str,
) -> None:
    """A mistyped bucket, missing credentials or a wrong endpoint fail the put before the new
    index records that store or the put's key field: the corrected put then succeeds."""
    index = tmp_path / "new.sqlite3"
    bucket, endpoint = s3_bucket, s3_endpoint
    if wrong == "missing bucket":
        bucket = f"{s3_bucket}-typo"
    elif wrong == "refused connection":
        endpoint = "http://127.0.0.1:1"
    common = ["--index", str(index), "--transport", transport, "--processes", processes]
    with monkeypatch.context() as patched:
        if wrong == "no credentials":
            _no_credentials(patched)
        failed = run(
            "put",
            "--store",
            f"s3://{bucket}/docs",
            "--endpoint-url",
            endpoint,
            *common,
            "--key",
            "task_id",
            "--json",
            input=jsonl({"task_id": "t1"}),
        )
    expected = {
        "missing bucket": ExitStatus.NOT_FOUND,
        "no credentials": ExitStatus.ACCESS_DENIED,
        "refused connection": ExitStatus.UNAVAILABLE,
    }[wrong]
    assert failed.exit_code == expected, failed.stderr
    assert "Traceback" not in failed.stderr
    summary = orjson.loads(failed.stdout)  # a put's summary still: it stored nothing
    assert (summary["read"], summary["stored"], summary["exit_status"]) == (0, 0, expected)
    assert not index.exists()

    put = run(
        "put",
        "--store",
        f"s3://{s3_bucket}/docs",
        "--endpoint-url",
        s3_endpoint,
        *common,
        input=jsonl(*DOCS),
    )
    assert put.exit_code == 0, put.stderr
    found = run("query", "{}", "--count", "--index", str(index))
    assert found.stdout == f"{len(DOCS)}\n", found.stderr


class _DeleteInterrupted(LocalStore):
    """A local store whose first delete runs ``writer`` first: another writer's whole run,
    forced between two batches of this store's delete."""

    def __init__(self, root: Path, writer: Callable[[], None]) -> None:
        super().__init__(root)
        self._writer: Callable[[], None] | None = writer

    def delete(self, keys: Any, **options: Any) -> Any:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer()
        return super().delete(keys, **options)


class _AfterFirstBatch(Events):
    """Progress events that run ``writer`` once, at the first: after reindex's first batch."""

    def __init__(self, writer: Callable[[], None]) -> None:
        self._writer: Callable[[], None] | None = writer

    def progress(self, *args: Any, **kwargs: Any) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer()


def _re_pointed_mid_run(
    tmp_path: Path,
) -> tuple[Path, dict[str, list[dict[str, Any]]], Callable[[], None]]:
    """Index ``i.sqlite3`` of store a (2,500 keys), store b (2,500 others), and what re-points
    the index to b: rebuild-index from b, as a user mistaking the index may run."""
    index = tmp_path / "i.sqlite3"
    docs = {name: [{"fs_id": f"{name}{i:04d}", "v": i} for i in range(2500)] for name in "ab"}
    for name in "ab":
        own = index if name == "a" else tmp_path / "b.sqlite3"
        with Engine(LocalStore(tmp_path / name), SqliteIndex(own)) as engine:
            engine.put_documents(docs[name])

    def rebuild_from_b() -> None:
        with Engine(LocalStore(tmp_path / "b"), SqliteIndex(index)) as engine:
            engine.rebuild_index()

    return index, docs, rebuild_from_b


@pytest.mark.parametrize("command", ["put", "reindex", "delete --filter", "delete KEY..."])
def test_a_command_whose_index_rebuild_index_re_points_meanwhile_writes_no_more_into_it(
    tmp_path: Path, command: str
) -> None:
    """rebuild-index from store b re-points a's index to b while a's put, reindex or delete
    runs: that run's next batch must be refused, not write a's entries into b's index (or
    remove b's entries)."""
    index, docs, rebuild_from_b = _re_pointed_mid_run(tmp_path)
    a = tmp_path / "a"

    def documents() -> Iterator[dict[str, Any]]:
        for n, doc in enumerate(docs["a"]):
            if n == 1200:  # a batch of entries written before, the rest after
                rebuild_from_b()
            yield {**doc, "v": -n}

    with pytest.raises(IndexSettingsError, match="is the index of store"):
        if command == "put":
            with Engine(LocalStore(a), SqliteIndex(index)) as engine:
                engine.put_documents(documents())
        elif command == "reindex":
            with Engine(LocalStore(a), SqliteIndex(index)) as engine:
                engine.reindex(fields=["v"], events=_AfterFirstBatch(rebuild_from_b))
        else:
            with Engine(_DeleteInterrupted(a, rebuild_from_b), SqliteIndex(index)) as engine:
                if command == "delete --filter":
                    engine.delete_matching({})
                else:
                    engine.delete([d["fs_id"] for d in docs["a"] + docs["b"]])
    assert _entries(index) == [d["fs_id"] for d in docs["b"]]
    assert SqliteIndex(index).store_binding() == str((tmp_path / "b").resolve())
    with Engine(LocalStore(tmp_path / "b"), SqliteIndex(index)) as engine:
        check = engine.sync(check=True)
    assert (check.bucket_only, check.index_only, check.changed) == (0, 0, 0)
