"""A local store's object file this user may not read (or whose directory it may not change) is
one object's failure, as S3's ``AccessDenied`` for one key is: commands over many objects name
it and go on with the others, exit 6; ten in a row stop with one error.

File permissions are real here: each command runs in its own process. Root would pass every
check, so as root it runs under ``setpriv`` without the two capabilities that let root read
and write any file (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from s3idx.limits import FAILED_IN_A_ROW
from tests.helpers import Run, json_lines, jsonl, subprocess_env, unprivileged_prefix

DOCS = [{"fs_id": f"k{i:02d}", "v": i} for i in range(30)]
STORED = len(DOCS) + 1  # and p/a, in a directory of its own
PERMISSION_HINT = "hint: check the permissions of the object's file and of the directories"


class Denied:
    """The store and index of DOCS, and s3idx run as a user file permissions apply to."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.store = home / "store"
        self.index = home / "i.sqlite3"
        self.prefix = unprivileged_prefix()

    def object_file(self, key: str) -> Path:
        path = self.store / "objects" / f"{key}~"
        assert path.is_file(), path  # the layout these tests chmod
        return path

    def deny(self, *keys: str) -> None:
        for key in keys:
            self.object_file(key).chmod(0)

    def run(self, *args: str, index: Path | None = None) -> subprocess.CompletedProcess[str]:
        where = ["--store", str(self.store), "--index", str(index or self.index)]
        return subprocess.run(
            [*self.prefix, sys.executable, "-m", "s3idx", *args, *where],
            env=subprocess_env(self.home),
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def denied(run: Run, tmp_path: Path) -> Iterator[Denied]:
    store = Denied(tmp_path)
    where = ["--store", str(store.store), "--index", str(store.index)]
    result = run("put", *where, "--field", "v", input=jsonl(*DOCS, {"fs_id": "p/a", "v": 99}))
    assert result.exit_code == 0, result.stderr
    yield store
    for path in (store.store / "objects").rglob("*"):  # so pytest can remove tmp_path
        path.chmod(0o755)
    (store.store / "objects").chmod(0o755)


def _failed_lines(stderr: str, prefix: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def test_get_goes_on_past_objects_it_may_not_read(denied: Denied) -> None:
    denied.deny("k02", "k05")
    (denied.store / "objects" / "p").chmod(0)  # p/a's directory: its file cannot be reached
    result = denied.run("get", *[d["fs_id"] for d in DOCS[:8]], "p/a")

    assert result.returncode == ExitStatus.ACCESS_DENIED, result.stderr
    assert json_lines(result.stdout) == [d for d in DOCS[:8] if d["fs_id"] not in ("k02", "k05")]
    failed = _failed_lines(result.stderr, "s3idx: cannot read")
    assert [line.split()[3] for line in failed] == ["k02:", "k05:", "p/a:"], result.stderr
    assert all("Permission denied" in line for line in failed), result.stderr
    assert f"{denied.object_file('k02')}" in failed[0]
    assert result.stderr.count(PERMISSION_HINT) == 1, result.stderr  # what to do, said once
    assert "Traceback" not in result.stderr


def test_query_full_goes_on_past_an_object_it_may_not_read(denied: Denied) -> None:
    denied.deny("k03")
    result = denied.run("query", '{"v": {"$lt": 6}}', "--full", "--sort", "v")

    assert result.returncode == ExitStatus.ACCESS_DENIED, result.stderr
    assert json_lines(result.stdout) == [d for d in DOCS[:6] if d["fs_id"] != "k03"]
    assert "index entry 'k03' cannot be read: " in result.stderr


def test_verify_goes_on_past_objects_it_may_not_read(denied: Denied) -> None:
    denied.deny("k03", "k17")
    result = denied.run("verify", "--json")
    plain = denied.run("verify")

    assert result.returncode == ExitStatus.ACCESS_DENIED, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["checked"], summary["ok"], summary["damaged"]) == (STORED - 2, STORED - 2, 0)
    assert (summary["unavailable"], summary["denied"]) == (2, 2)
    assert [item["key"] for item in summary["unavailable_keys"]] == ["k03", "k17"]
    assert "Permission denied" in summary["unavailable_keys"][0]["reason"]
    assert plain.returncode == ExitStatus.ACCESS_DENIED, plain.stderr
    assert "2 objects could not be read (not checked; 2 denied access)" in plain.stderr


def test_sync_goes_on_past_an_object_it_may_not_read(run: Run, denied: Denied) -> None:
    """A new index: sync reads every object's header to add its entry."""
    other = denied.home / "other.sqlite3"
    created = run("put", "--store", str(denied.store), "--index", str(other), input=jsonl(DOCS[0]))
    assert created.exit_code == 0, created.stderr
    denied.deny("k03")
    result = denied.run("sync", "--json", index=other)

    assert result.returncode == ExitStatus.ACCESS_DENIED, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["added"], summary["unavailable"], summary["denied"]) == (STORED - 2, 1, 1)
    assert [u["key"] for u in summary["unavailable_keys"]] == ["k03"]


def test_reindex_goes_on_past_an_object_it_may_not_read(denied: Denied) -> None:
    denied.deny("k03")
    result = denied.run("reindex", "--field", "x2", "--json")

    assert result.returncode == ExitStatus.ACCESS_DENIED, result.stderr
    summary = orjson.loads(result.stdout)
    assert [item["key"] for item in summary["failed_keys"]] == ["k03"]
    assert "Permission denied" in summary["failed_keys"][0]["reason"]
    assert (summary["updated"], summary["failed"], summary["denied"]) == (STORED - 1, 1, 1)
    assert summary["pending"] == ["x2"] and summary["completed"] == []


def test_reindex_goes_on_past_an_object_it_may_not_rewrite(denied: Denied) -> None:
    (denied.store / "objects" / "p").chmod(0o555)  # p/a can be read, not replaced
    result = denied.run("reindex", "--field", "x2", "--json")

    assert result.returncode == ExitStatus.ACCESS_DENIED, result.stderr
    summary = orjson.loads(result.stdout)
    assert [item["key"] for item in summary["failed_keys"]] == ["p/a"]
    reason = summary["failed_keys"][0]["reason"]
    assert reason.endswith(f"Permission denied: {denied.store / 'objects' / 'p' / 'a~'}")
    assert (summary["updated"], summary["failed"], summary["denied"]) == (STORED - 1, 1, 1)


def test_delete_goes_on_past_an_object_it_may_not_delete(denied: Denied) -> None:
    (denied.store / "objects" / "p").chmod(0o555)  # p/a's file cannot be unlinked
    result = denied.run("delete", "k00", "p/a", "k01", "--json")

    assert result.returncode == ExitStatus.ACCESS_DENIED, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["deleted"] == 2
    assert [item["key"] for item in summary["failed"]] == ["p/a"]
    assert "Permission denied" in summary["failed"][0]["reason"]
    assert summary["denied"] == 1
    assert (denied.store / "objects" / "p" / "a~").is_file()
    assert not (denied.store / "objects" / "k00~").exists()


def test_reading_denied_every_object_stops_with_one_error(denied: Denied) -> None:
    denied.deny(*(d["fs_id"] for d in DOCS[1:]))
    result = denied.run("get", *(d["fs_id"] for d in DOCS), "--workers", "2")

    assert result.returncode == ExitStatus.ACCESS_DENIED, result.stderr
    assert json_lines(result.stdout) == [DOCS[0]]
    errors = _failed_lines(result.stderr, "s3idx: error")
    assert len(errors) == 1, result.stderr
    assert f"{FAILED_IN_A_ROW} objects in a row could not be read (from 'k01' on)" in errors[0]
    assert "access to every object is denied" in errors[0]
    assert PERMISSION_HINT in result.stderr
    assert "cannot read k0" not in result.stderr


def test_deleting_denied_every_object_stops_with_one_error(denied: Denied) -> None:
    (denied.store / "objects").chmod(0o555)
    result = denied.run("delete", *(d["fs_id"] for d in DOCS))

    assert result.returncode == ExitStatus.ACCESS_DENIED, result.stderr
    assert result.stderr.count("s3idx: error") == 1, result.stderr
    assert f"{FAILED_IN_A_ROW} objects in a row could not be deleted" in result.stderr
    assert "access to every object is denied" in result.stderr
    assert "could not delete k" not in result.stderr
    assert all(denied.object_file(d["fs_id"]).is_file() for d in DOCS)


def test_a_directory_the_listing_may_not_read_stops_it(denied: Denied) -> None:
    """Objects under it cannot be known: sync would take their entries for stale ones."""
    (denied.store / "objects" / "p").chmod(0)
    result = denied.run("sync", "--dry-run")

    assert result.returncode == ExitStatus.UNAVAILABLE, result.stderr
    assert result.stderr.count("s3idx: error") == 1, result.stderr
    assert f"Permission denied: {denied.store / 'objects' / 'p'}" in result.stderr
