"""A local store whose marker is there but whose layout is damaged (``objects/`` missing, a file
or a link; ``tmp/`` or ``locks/`` a file) is refused by every command with one error naming what
is wrong: never read as an empty store, so nothing prunes the index's entries for it."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus, S3idxError
from s3idx.store.local import MARKER, LocalStore
from tests.helpers import Run, json_lines, jsonl

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX symlinks")
DOCS = [{"fs_id": key, "v": i} for i, key in enumerate(["a", "b/c", "d"])]
KEYS = sorted(d["fs_id"] for d in DOCS)
META = {"s3idx-format": "1"}


def _objects_missing(store: Path, away: Path) -> str:
    (store / "objects").rename(away)  # as an unmounted file system or a deleted directory
    return (
        f"the local store {store} has no objects/ directory (its {MARKER} is there): the store "
        "is damaged or not fully mounted"
    )


def _objects_a_file(store: Path, away: Path) -> str:
    (store / "objects").rename(away)
    (store / "objects").write_text("not a directory\n")
    return f"the local store {store} is damaged: {store / 'objects'} is a file, not a directory"


def _objects_a_link(store: Path, away: Path) -> str:
    (store / "objects").rename(away)
    (store / "objects").symlink_to(away)  # to a real directory holding the objects
    return f"{store / 'objects'} is a symbolic link; the local store follows no links"


def _tmp_a_file(store: Path, away: Path) -> str:
    shutil.rmtree(store / "tmp")
    (store / "tmp").write_text("")
    return f"the local store {store} is damaged: {store / 'tmp'} is a file, not a directory"


def _locks_a_file(store: Path, away: Path) -> str:
    shutil.rmtree(store / "locks")
    (store / "locks").write_text("")
    return f"the local store {store} is damaged: {store / 'locks'} is a file, not a directory"


DAMAGES: dict[str, Callable[[Path, Path], str]] = {
    "objects/ missing": _objects_missing,
    "objects/ a file": _objects_a_file,
    "objects/ a link": _objects_a_link,
    "tmp/ a file": _tmp_a_file,
    "locks/ a file": _locks_a_file,
}

COMMANDS: dict[str, tuple[str, ...]] = {
    "get": ("get", "b/c"),
    "query --full": ("query", "--full"),
    "put": ("put",),
    "delete": ("delete", "a"),
    "sync": ("sync",),
    "sync --check": ("sync", "--check"),
    "sync --dry-run": ("sync", "--dry-run"),
    "rebuild-index": ("rebuild-index",),
    "verify": ("verify",),
    "reindex": ("reindex",),
    "info": ("info", "--json"),
}


def _where(tmp_path: Path) -> list[str]:
    return ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]


def _stored(run: Run, tmp_path: Path) -> Path:
    result = run("put", *_where(tmp_path), "--field", "v", input=jsonl(*DOCS))
    assert result.exit_code == 0, result.stderr
    store = tmp_path / "store"
    assert (store / "locks").is_dir()  # the layout these tests damage
    return store


def _files(tmp_path: Path) -> list[str]:
    """What the store holds (and its objects moved away), lock files aside (made on first use)."""
    return sorted(
        str(p.relative_to(tmp_path))
        for top in ("store", "away")
        for p in (tmp_path / top).rglob("*")
        if "locks" not in p.relative_to(tmp_path / top).parts[:-1]
    )


def _indexed_keys(run: Run, tmp_path: Path) -> list[str]:
    result = run("query", *_where(tmp_path))  # the index alone: no store read
    assert result.exit_code == 0, result.stderr
    return sorted(entry["fs_id"] for entry in json_lines(result.stdout))


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_every_command_refuses_a_store_whose_layout_is_damaged(
    run: Run, tmp_path: Path, damage: str, command: str
) -> None:
    store = _stored(run, tmp_path)
    away = tmp_path / "away"
    message = DAMAGES[damage](store, away)
    before = _files(tmp_path)

    stdin = jsonl({"fs_id": "new", "v": 9}) if command == "put" else None
    result = run(*COMMANDS[command], *_where(tmp_path), input=stdin)

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stdout + result.stderr
    assert result.stderr.count("s3idx: error") == 1, result.stderr
    assert f"s3idx: error: {message}" in " ".join(result.stderr.split()), result.stderr
    assert "hint: " in result.stderr
    if command == "info":
        assert orjson.loads(result.stdout)["store_status"] == "damaged"
    else:
        assert result.stdout == ""
    # Nothing pruned, nothing written: the index and the store are as they were.
    assert _indexed_keys(run, tmp_path) == KEYS
    assert _files(tmp_path) == before


@pytest.mark.parametrize("part", ["tmp", "locks"])
def test_a_missing_tmp_or_locks_directory_is_made_again(
    run: Run, tmp_path: Path, part: str
) -> None:
    store = _stored(run, tmp_path)
    shutil.rmtree(store / part)

    for command in (("sync", "--check"), ("get", "b/c")):
        result = run(*command, *_where(tmp_path))
        assert result.exit_code == 0, result.stderr
    result = run("put", *_where(tmp_path), input=jsonl({"fs_id": "new", "v": 9}))

    assert result.exit_code == 0, result.stderr
    assert (store / part).is_dir()
    assert run("get", "new", *_where(tmp_path)).stdout == '{"fs_id":"new","v":9}\n'
    assert run("verify", *_where(tmp_path)).exit_code == 0


def _damaged(error: S3idxError, store: Path) -> bool:
    return (
        error.exit_status == ExitStatus.UNAVAILABLE
        and f"the local store {store} has no objects/ directory" in error.message
    )


def test_objects_gone_while_a_store_is_open_is_never_read_as_empty(tmp_path: Path) -> None:
    """Checked when the store is first used; a store object kept open (the library, a long
    run) that finds objects/ gone later still says so, lists nothing as gone, writes nowhere."""
    root = tmp_path / "store"
    store = LocalStore(root)
    store.put("a", b"{}", META)
    store.put("b/c", b"{}", META)
    (root / "objects").rename(tmp_path / "away")

    operations: dict[str, Callable[[], object]] = {
        "list": lambda: list(store.list_objects()),
        "head": lambda: store.head("a"),
        "open": lambda: store.open("b/c"),
        "delete": lambda: store.delete(["a"]),
        "put": lambda: store.put("x/y", b"{}", META),
        "put at the top": lambda: store.put("z", b"{}", META),
    }
    for name, operation in operations.items():
        with pytest.raises(S3idxError) as caught:
            operation()
        assert _damaged(caught.value, root), (name, caught.value)
    assert not (root / "objects").exists()  # no put made it again, empty


def test_a_new_store_still_initialises(run: Run, tmp_path: Path) -> None:
    result = run("put", *_where(tmp_path), input=jsonl(*DOCS))
    assert result.exit_code == 0, result.stderr
    assert run("sync", "--check", *_where(tmp_path)).exit_code == 0
    info = orjson.loads(run("info", "--json", *_where(tmp_path)).stdout)
    assert info["store_status"] == "ok"


def test_an_interrupted_initialisation_is_finished_by_the_next_put(
    run: Run, tmp_path: Path
) -> None:
    """No marker yet (a put killed while making the store): not a damaged store, a new one."""
    (tmp_path / "store" / "tmp").mkdir(parents=True)
    result = run("put", *_where(tmp_path), input=jsonl(*DOCS))
    assert result.exit_code == 0, result.stderr
    assert _indexed_keys(run, tmp_path) == KEYS
