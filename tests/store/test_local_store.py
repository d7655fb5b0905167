"""The local store stays inside its directory, and leaves no temporary files behind for good."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from s3idx.errors import DamagedStoreError, ExitStatus, InvalidKeyError, ObjectNotFoundError
from s3idx.liveness import process_tag
from s3idx.store import local
from s3idx.store.local import MARKER, LocalStore
from tests.helpers import Run, json_lines, subprocess_env
from tests.store.test_store_conformance import TRICKY_KEYS

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX symlinks and signals")
META = {"s3idx-format": "1"}


def _locations(tmp_path: Path) -> list[str]:
    return ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.sqlite3")]


def _new_store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    store.put("first", b"{}", META)
    return store


# --- symbolic links inside the store are never followed ---------------------------------------


def test_put_through_a_symlinked_directory_is_rejected_and_writes_nothing_outside(
    run: Run, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _new_store(tmp_path)
    (tmp_path / "store" / "objects" / "dir").symlink_to(outside)

    result = run("put", *_locations(tmp_path), input=b'{"fs_id": "dir/x"}\n{"fs_id": "ok"}\n')

    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    assert "<stdin>:1: " in result.stderr
    assert "is a symbolic link" in result.stderr
    assert list(outside.iterdir()) == []
    keys = [e["fs_id"] for e in json_lines(run("query", *_locations(tmp_path)).stdout)]
    assert keys == ["ok"]


def test_get_through_symlinks_reads_nothing_outside_and_agrees_with_the_listing(
    run: Run, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = tmp_path / "secret"
    store = _new_store(tmp_path)
    # Whole objects outside the root, reached by a linked file and by a linked directory.
    LocalStore(outside).put("x", b'{"fs_id": "x", "secret": 1}', META)
    secret.write_bytes((outside / "objects" / "x~").read_bytes())
    objects = tmp_path / "store" / "objects"
    (objects / "linked~").symlink_to(secret)
    (objects / "dir").symlink_to(outside / "objects")

    for key in ("linked", "dir/x"):
        result = run("get", key, *_locations(tmp_path))
        assert result.exit_code == ExitStatus.NOT_FOUND, result.stderr
        assert "secret" not in result.stdout
        with pytest.raises(ObjectNotFoundError):
            store.head(key)
    assert [info.key for info in store.list_objects()] == ["first"]


def test_put_over_a_symlinked_object_replaces_the_link_not_its_target(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    store = _new_store(tmp_path)
    link = tmp_path / "store" / "objects" / "k~"
    link.symlink_to(target)

    store.put("k", b'{"fs_id": "k"}', META)

    assert target.read_bytes() == b"precious"
    assert not link.is_symlink()
    assert store.open("k").read() == b'{"fs_id": "k"}'


@pytest.mark.parametrize("part", ["objects", "tmp"])
def test_a_symlinked_objects_or_tmp_directory_is_a_clear_error(tmp_path: Path, part: str) -> None:
    _new_store(tmp_path)
    moved = tmp_path / "elsewhere"
    (tmp_path / "store" / part).rename(moved)
    (tmp_path / "store" / part).symlink_to(moved)

    with pytest.raises(DamagedStoreError, match=f"{part} is a symbolic link"):
        LocalStore(tmp_path / "store").put("k", b"{}", META)
    assert not (moved / "k~").exists()


def test_a_symlinked_store_root_is_fine(run: Run, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "store").symlink_to(real)
    assert run("put", *_locations(tmp_path), input=b'{"fs_id": "a/b"}\n').exit_code == 0
    assert run("get", "a/b", *_locations(tmp_path)).stdout == '{"fs_id": "a/b"}\n'
    assert (real / "objects" / "a" / "b~").is_file()


def test_a_key_through_a_linked_directory_is_refused_by_the_store_api(tmp_path: Path) -> None:
    store = _new_store(tmp_path)
    (tmp_path / "store" / "objects" / "a").mkdir()
    (tmp_path / "store" / "objects" / "a" / "b").symlink_to(tmp_path)
    with pytest.raises(InvalidKeyError, match="a/b is a symbolic link"):
        store.put("a/b/c", b"{}", META)
    assert not (tmp_path / "c~").exists()


# --- anything but a regular file is no object --------------------------------------------------


def _s3idx(tmp_path: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    """In its own process, under a timeout: a FIFO's open would wait for a writer for ever."""
    return subprocess.run(
        [sys.executable, "-m", "s3idx", *args, *_locations(tmp_path)],
        input=stdin.decode(),
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_key_whose_file_is_a_directory_or_fifo_is_not_found_at_once(
    run: Run, tmp_path: Path, kind: str
) -> None:
    """As the listing (regular files only) says: not found, and the other keys are done."""
    assert run("put", *_locations(tmp_path), input=b'{"fs_id": "a"}\n').exit_code == 0
    odd = tmp_path / "store" / "objects" / "odd~"
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        odd.mkdir()

    got = _s3idx(tmp_path, "get", "odd", "a")
    deleted = _s3idx(tmp_path, "delete", "odd", "--json")
    verified = _s3idx(tmp_path, "verify")

    assert got.returncode == ExitStatus.NOT_FOUND, got.stderr
    assert json_lines(got.stdout) == [{"fs_id": "a"}]
    assert "s3idx: not found: odd" in got.stderr
    assert deleted.returncode == ExitStatus.NOT_FOUND, deleted.stderr
    assert json.loads(deleted.stdout)["missing"] == ["odd"]
    assert verified.returncode == 0, verified.stderr
    assert odd.exists() and not odd.is_file()  # left as it was: not s3idx's


def test_a_put_over_a_fifo_replaces_it_without_waiting(run: Run, tmp_path: Path) -> None:
    """A key outside ASCII is read before its put (another key's file on a folding file
    system?): a FIFO in its place must not stall that read."""
    assert run("put", *_locations(tmp_path), input=b'{"fs_id": "a"}\n').exit_code == 0
    os.mkfifo(tmp_path / "store" / "objects" / "\u00e9~")

    put = _s3idx(tmp_path, "put", stdin='{"fs_id": "\u00e9"}\n'.encode())
    got = _s3idx(tmp_path, "get", "\u00e9")

    assert put.returncode == 0, put.stderr
    assert json_lines(got.stdout) == [{"fs_id": "\u00e9"}]


# --- temporary files of a killed put ----------------------------------------------------------

# Runs a real put that stops for good right after writing an object's temporary file, before
# renaming it into place: the moment a kill -9 leaves a temporary file behind.
_HELD_PUT = """
import os, sys, time
from s3idx.cli import main
real_replace = os.replace
def held_replace(src, dst, *args, **kwargs):
    if os.path.basename(os.path.dirname(src)) == "tmp" and str(dst).endswith("~"):
        print("held", flush=True)
        time.sleep(600)
    return real_replace(src, dst, *args, **kwargs)
os.replace = held_replace
sys.argv = ["s3idx", *sys.argv[1:]]
main()
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3IDX_")}
    env.update(S3IDX_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    return env


@pytest.mark.parametrize("command", ["put", "sync --check"])
def test_temporary_files_of_a_killed_put_are_removed_by_the_next_put_or_sync(
    run: Run, tmp_path: Path, command: str
) -> None:
    locations = _locations(tmp_path)
    held = subprocess.Popen(
        [sys.executable, "-c", _HELD_PUT, "put", *locations],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_env(tmp_path),
    )
    assert held.stdin is not None and held.stdout is not None
    held.stdin.write(b'{"fs_id": "victim"}\n')
    held.stdin.close()
    assert held.stdout.readline() == b"held\n"
    os.kill(held.pid, signal.SIGKILL)
    held.wait(timeout=30)
    tmp = tmp_path / "store" / "tmp"
    (leftover,) = list(tmp.iterdir())
    assert leftover.stat().st_size > 0

    if command == "put":
        result = run("put", *locations, input=b'{"fs_id": "next"}\n')
    else:
        result = run("sync", "--check", *locations)

    assert result.exit_code == 0, result.stderr
    assert list(tmp.iterdir()) == []
    assert [info.key for info in LocalStore(tmp_path / "store").list_objects()] == (
        ["next"] if command == "put" else []
    )


def _dead_process_tag() -> str:
    process = subprocess.Popen(
        [sys.executable, "-c", "from s3idx.liveness import process_tag; print(process_tag())"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out, _ = process.communicate(timeout=30)
    return out.decode().strip()


@pytest.mark.skipif(process_tag() is None, reason="no /proc to tell processes by")
def test_temporary_files_of_live_writers_are_kept_and_old_ones_removed(tmp_path: Path) -> None:
    store = _new_store(tmp_path)
    tmp = tmp_path / "store" / "tmp"
    dead = _dead_process_tag()
    pid, start, _ = dead.split(".")
    live = tmp / f"put-{process_tag()}-abcdefgh"
    other_machine = tmp / f"put-{pid}.{start}.0123456789abcdefn1-abcdefgh"
    died = tmp / f"put-{dead}-yzabcdef"
    earlier_layout = tmp / f"put-{pid}@{socket.gethostname()}-qrstuvwx"
    old = tmp / f"put-{process_tag()}-ijklmnop"
    foreign = tmp / "not-ours"
    for path in (live, other_machine, died, earlier_layout, old, foreign):
        path.write_bytes(b"partial")
    for path, age in ((live, 600), (other_machine, 600), (earlier_layout, 600), (old, 7200)):
        os.utime(path, (time.time() - age, time.time() - age))

    list(LocalStore(tmp_path / "store").list_objects())

    kept = sorted([live.name, other_machine.name, earlier_layout.name, "not-ours"])
    assert sorted(p.name for p in tmp.iterdir()) == kept
    assert [info.key for info in store.list_objects()] == ["first"]


# --- listing in bounded memory -----------------------------------------------------------------


def test_a_directory_larger_than_one_sorted_run_lists_in_utf8_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Names beyond LIST_RUN per directory are sorted in runs on disk and merged: a tiny run
    # makes every directory here take that path.
    monkeypatch.setattr(local, "LIST_RUN", 2)
    keys = [*TRICKY_KEYS, *(f"n{i}" for i in range(7)), "a/b/d", "a/b/c0", "a/b/c-"]
    store = LocalStore(tmp_path / "store")
    for key in keys:
        store.put(key, key.encode(), META)
    (tmp_path / "store" / "objects" / "link~").symlink_to(tmp_path)
    (tmp_path / "store" / "objects" / "stray-file").write_bytes(b"")
    # Names no key can have (escaped control characters): not objects, and no harm to the runs.
    (tmp_path / "store" / "objects" / "line%0Abreak~").write_bytes(b"")
    (tmp_path / "store" / "objects" / "nul%00~").write_bytes(b"")
    in_order = sorted(keys, key=lambda k: k.encode())

    assert [o.key for o in store.list_objects()] == in_order
    assert [o.key for o in store.list_objects("a/b/")] == ["a/b/c", "a/b/c-", "a/b/c0", "a/b/d"]
    after = [o.key for o in store.list_objects(start_after="a/b/c")]
    assert after == [k for k in in_order if k.encode() > b"a/b/c"]
    assert [o.key for o in store.list_objects("n", start_after="n3")] == ["n4", "n5", "n6"]


def test_listing_a_large_directory_holds_one_run_of_names_not_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "LIST_RUN", 500)
    store = LocalStore(tmp_path / "store")
    objects = tmp_path / "store" / "objects"
    store.put("k0", b"{}", META)
    template = (objects / "k0~").read_bytes()
    for i in range(1, 6000):
        (objects / f"k{i}~").write_bytes(template)  # the store's own format, written directly

    tracemalloc.start()
    try:
        count = sum(1 for _ in store.list_objects())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count == 6000
    # Holding all 6,000 entries at once takes over 3 MB; one run of 500 and the merge, far less.
    assert peak < 1_500_000, peak


# --- conditional deletes across processes (issue 14) -----------------------------------------

_RACER = """
import json, sys, time
from s3idx.errors import ObjectNotFoundError
from s3idx.store.local import MARKER, LocalStore

role, root, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = LocalStore(root)
meta = {"s3idx-format": "1"}
end = time.monotonic() + seconds
report = {"puts": 0, "vanished": [], "deleted": [], "changed": 0}
n = 0
while time.monotonic() < end:
    n += 1
    if role == "writer":
        put = store.put("k", str(n).encode(), meta)
        report["puts"] += 1
        try:
            store.head("k")
        except ObjectNotFoundError:
            # The only writer: what vanished since its put is the object it put.
            report["vanished"].append(put.etag)
    else:
        try:
            etag = store.head("k").etag
        except ObjectNotFoundError:
            continue
        failures = store.delete(["k"], if_match={"k": etag})
        if failures:
            assert [f.changed for f in failures] == [True], failures
            report["changed"] += 1
        else:
            report["deleted"].append(etag)
print(json.dumps(report))
"""


def test_conditional_deletes_racing_puts_in_processes_delete_only_the_named_object(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    LocalStore(root).put("k", b"0", META)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    roles = ["writer", "deleter", "deleter", "deleter"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, role, str(root), "3"],
            stdout=subprocess.PIPE,
            env=env,
        )
        for role in roles
    ]
    reports = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        reports.append(json.loads(out))

    writer, deleters = reports[0], reports[1:]
    named = {etag for report in deleters for etag in report["deleted"]}
    assert writer["puts"] > 50 and named, "the processes did not race"
    # Every object that vanished under the writer was deleted by a delete that named it.
    assert set(writer["vanished"]) <= named


_KILLED_AT_RENAME = """
import os, signal, sys
from pathlib import Path
from s3idx.store.local import MARKER, LocalStore

root, operation = Path(sys.argv[1]), sys.argv[2]
store = LocalStore(root)
if operation != "initialise":
    store.put("first", b"{}", {"s3idx-format": "1"})
    etag = store.head("first").etag
os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # kill -9 just before its rename
if operation == "initialise":
    store.put("first", b"{}", {"s3idx-format": "1"})
elif operation == "put":
    store.put("second", b"{}", {"s3idx-format": "1"})
else:
    store.replace_metadata("first", {"s3idx-format": "1", "s3idx-x": "y"}, if_match=etag)
"""


@pytest.mark.skipif(process_tag() is None, reason="no /proc to tell processes by")
@pytest.mark.parametrize("operation", ["initialise", "put", "replace_metadata"])
def test_a_writer_killed_before_its_rename_leaves_a_file_the_next_run_removes(
    tmp_path: Path, operation: str
) -> None:
    # Every temporary file the store writes names its writer, so that a later run can tell that
    # it died (a reindex killed while rewriting metadata left files nothing ever removed).
    root = tmp_path / "store"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_RENAME, str(root), operation],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert len(list((root / "tmp").iterdir())) == 1
    if operation == "initialise":
        (root / MARKER).write_text('{"format": 1, "fold_case": false}\n')

    list(LocalStore(root).list_objects())

    assert list((root / "tmp").iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_the_files_of_a_store_follow_the_umask(tmp_path: Path, umask: int) -> None:
    # A store shared by a group (umask 002) is readable and writable by that group, as the
    # files cp or rsync write would be; a private umask keeps them private.
    root = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "S3IDX_HOME": str(tmp_path)}
    for args, stdin in (
        (["put", "--field", "v"], b'{"fs_id": "a", "v": 1}\n'),
        (["reindex", "--field", "v"], b""),  # rewrites the object's metadata
    ):
        done = subprocess.run(
            [sys.executable, "-m", "s3idx", *args, "--store", str(root)],
            input=stdin,
            env=env,
            capture_output=True,
            timeout=60,
            preexec_fn=lambda: os.umask(umask),
        )
        assert done.returncode == 0, done.stderr.decode()
        files = [root / local.MARKER, *(p for p in (root / "objects").rglob("*") if p.is_file())]
        assert root / "objects" / "a~" in files  # and the marker, and put's manifest
        assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o666 & ~umask)}
