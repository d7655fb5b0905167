"""The locale does not change what a key names: not in the local store, not on the command line.

Python encodes file names and decodes arguments in the locale's encoding. Under a locale that is
not UTF-8 (here the C locale with UTF-8 mode off, whose encoding is ASCII; a Latin-1 locale does
the same with other bytes), a local store written under a UTF-8 locale must list, read and
rewrite the same files, and a non-ASCII key or filter typed as UTF-8 must reach them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, json_lines, subprocess_env

KEY = "café/日本"
DOC = {"fs_id": KEY, "v": "ü"}
LINE = orjson.dumps(DOC) + b"\n"


def _s3idx(
    home: Path, *args: str | bytes, locale: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    env = subprocess_env(home)
    env.pop("LANG", None)
    env.pop("LC_CTYPE", None)
    if locale == "ascii":
        env.update(LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    else:
        env.update(LC_ALL="C.UTF-8", PYTHONUTF8="1")
    # Arguments go as UTF-8 bytes, as a UTF-8 terminal sends them, whatever the locale says.
    argv = [sys.executable.encode(), b"-m", b"s3idx"]
    argv += [a if isinstance(a, bytes) else a.encode() for a in args]
    return subprocess.run(argv, input=stdin, env=env, capture_output=True, timeout=120)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _store_files(home: Path) -> list[Path]:
    return [p for p in (home / "store" / "objects").rglob("*~") if ".s3idx" not in p.parts]


@pytest.mark.parametrize(("writer", "reader"), [("utf8", "ascii"), ("ascii", "utf8")])
def test_a_local_store_reads_the_same_under_every_locale(
    home: Path, writer: str, reader: str
) -> None:
    put = _s3idx(home, "put", "--field", "v", locale=writer, stdin=LINE)
    assert put.returncode == 0, put.stderr
    assert [p.relative_to(home / "store" / "objects") for p in _store_files(home)] == [
        Path("café/日本~")
    ]

    for command in (["sync", "--check"], ["verify"], ["rebuild-index", "-q"]):
        done = _s3idx(home, *command, locale=reader)
        assert done.returncode == 0, (command, done.stderr)
    got = _s3idx(home, "get", KEY, locale=reader)
    assert got.returncode == 0, got.stderr
    assert got.stdout == LINE
    query = _s3idx(home, "query", '{"v": "ü"}', "--fields", "v", locale=reader)
    assert query.returncode == 0, query.stderr
    assert json_lines(query.stdout.decode()) == [DOC]

    again = _s3idx(home, "put", "--field", "v", locale=reader, stdin=LINE)
    assert again.returncode == 0, again.stderr
    assert len(_store_files(home)) == 1  # the same file, not a second one for the same key

    delete = _s3idx(home, "delete", KEY, locale=reader)
    assert delete.returncode == 0, delete.stderr
    assert _store_files(home) == []
    assert _s3idx(home, "query", "--count", locale=reader).stdout == b"0\n"


@pytest.mark.parametrize("locale", ["utf8", "ascii"])
def test_arguments_that_are_not_utf8_are_usage_errors_under_every_locale(
    home: Path, locale: str
) -> None:
    assert _s3idx(home, "put", "--field", "v", locale="utf8", stdin=LINE).returncode == 0
    for args, message in [
        (["get", b"caf\xe9"], b"s3idx: error: key contains a lone surrogate (not valid UTF-8)"),
        (["delete", b"caf\xe9"], b"s3idx: error: key contains a lone surrogate (not valid UTF-8)"),
        (["query", b'{"v": "\xe9"}'], b"s3idx: error: FILTER is not valid JSON: "),
        (["put", "--field", b"\xe9"], b"s3idx: error: --field: not valid UTF-8 text"),
    ]:
        done = _s3idx(home, *args, locale=locale)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith(message), (args, done.stderr)
        assert b"internal error" not in done.stderr


def test_a_non_ascii_field_typed_under_an_ascii_locale_is_indexed(home: Path) -> None:
    line = orjson.dumps({"fs_id": "a", "größe": 3}) + b"\n"
    put = _s3idx(home, "put", "--field", "größe", locale="ascii", stdin=line)
    assert put.returncode == 0, put.stderr
    query = _s3idx(
        home, "query", '{"größe": 3}', "--fields", "größe", "--sort", "-größe", locale="ascii"
    )
    assert query.returncode == 0, query.stderr
    assert json_lines(query.stdout.decode()) == [{"fs_id": "a", "größe": 3}]


def _bytes_path(path: Path, name: bytes) -> bytes:
    return bytes(path) + b"/" + name


@pytest.mark.parametrize("locale", ["utf8", "ascii"])
def test_a_file_name_that_is_not_utf8_is_no_object_and_fails_no_command(
    home: Path, locale: str
) -> None:
    """No key names it (keys are UTF-8), as no key names a file with a control character: it is
    not listed, so sync, verify and rebuild-index go on with the store's objects."""
    assert _s3idx(home, "put", "--field", "v", locale="utf8", stdin=LINE).returncode == 0
    objects = home / "store" / "objects"
    with open(_bytes_path(objects, b"caf\xe9~"), "wb") as foreign:
        foreign.write(b"not an object")
    os.mkdir(_bytes_path(objects, b"d\xe9j\xe0"))
    with open(_bytes_path(objects, b"d\xe9j\xe0/x~"), "wb") as foreign:
        foreign.write(b"not an object")

    for command in (["sync", "--check"], ["sync"], ["verify"], ["rebuild-index", "-q"]):
        done = _s3idx(home, *command, locale=locale)
        assert done.returncode == 0, (command, done.stderr)
        assert b"internal error" not in done.stderr
    assert json_lines(_s3idx(home, "query", locale=locale).stdout.decode())[0]["fs_id"] == KEY


@pytest.mark.parametrize("locale", ["utf8", "ascii"])
def test_json_documents_name_a_path_that_is_not_utf8_without_failing(
    home: Path, locale: str
) -> None:
    """A message naming a path whose bytes are not UTF-8 is still one JSON document: those
    bytes shown as \\xNN."""
    for args in (
        [b"put", b"--json", b"missing-\xe9.jsonl"],
        [b"put", b"--json", b"--rejects", b"/no/such/dir/\xe9", b"-"],
    ):
        done = _s3idx(home, *args, locale=locale, stdin=LINE)
        assert done.returncode == 2, done.stderr
        assert b"Traceback" not in done.stderr
        document = orjson.loads(done.stdout)
        assert document["exit_status"] == 2
        assert "\\xe9" in document["error"], document


def test_a_put_never_replaces_the_file_of_another_key(run: Run, tmp_path: Path) -> None:
    """On a file system that does not tell Unicode normalization (macOS) or the case of
    non-ASCII letters (`É`, `é`) apart, two keys can name one file: the second put would
    replace the first key's document. Here a hard link makes the NFD key's name the NFC key's
    file, as such a file system would; the put is rejected, the stored document kept."""
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    store = tmp_path / "store"
    where = ["--store", str(store), "--index", str(tmp_path / "index.sqlite3")]
    first = run("put", *where, input=orjson.dumps({"fs_id": nfc, "n": 1}) + b"\n")
    assert first.exit_code == 0, first.stderr
    os.link(store / "objects" / f"{nfc}~", store / "objects" / f"{nfd}~")

    second = run("put", *where, input=orjson.dumps({"fs_id": nfd, "n": 2}) + b"\n")
    assert second.exit_code == ExitStatus.PARTIAL, second.stderr
    assert second.stderr.splitlines()[0] == (
        f"s3idx: <stdin>:1: key {nfd!r} names the file of another stored key, {nfc!r}: this "
        "file system does not tell them apart (Unicode normalization or letter case); store "
        "one of them under another key, or use an S3 store"
    )
    got = run("get", nfc, *where)
    assert got.exit_code == 0, got.stderr
    assert orjson.loads(got.stdout) == {"fs_id": nfc, "n": 1}
    again = run("put", *where, input=orjson.dumps({"fs_id": nfc, "n": 3}) + b"\n")
    assert again.exit_code == 0, again.stderr  # its own key's file: replaced as ever
