"""A key field or a field that no document could be stored with is refused (exit 2) before
anything is recorded, naming where it was given: ``--key``, ``S3IDX_KEY`` or the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3idx import open_engine
from s3idx.codec import KEY_FIELD_RULE, check_key_field
from s3idx.engine.core import Engine
from s3idx.errors import ExitStatus, UsageError
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.local import LocalStore
from tests.helpers import Run

HINT = f"  hint: {KEY_FIELD_RULE}\n"

BAD_KEY_FIELDS = [
    ("a.b", "it contains '.' (a key field is a top-level name, not a path)"),
    ("", "it is empty"),
    ("$a", "it starts with '$' (MongoDB reserves it)"),
    ("a\tb", "it contains a control character"),
    ("k" * 257, "it is over 256 characters"),
    ("_s3idx", "s3idx sets '_s3idx' itself"),
    ("last_updated", "s3idx sets 'last_updated' itself"),
]


def _locations(tmp_path: Path) -> list[str]:
    return ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "idx.sqlite3")]


def _shown(name: str) -> str:
    return repr(name) if len(name) <= 40 else f"{name[:40]!r}... ({len(name):,} characters)"


@pytest.mark.parametrize(("name", "reason"), BAD_KEY_FIELDS)
@pytest.mark.parametrize("command", ["put", "rebuild-index"])
def test_a_key_field_no_document_can_have_is_refused_naming_the_flag(
    run: Run, tmp_path: Path, name: str, reason: str, command: str
) -> None:
    if command == "rebuild-index":
        assert run("put", *_locations(tmp_path), input=b'{"fs_id": "a"}\n').exit_code == 0
    result = run(command, "--key", name, *_locations(tmp_path), input=b'{"fs_id": "a"}\n')
    assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, "")
    assert result.stderr == f"s3idx: error: invalid --key {_shown(name)}: {reason}\n{HINT}"
    # Nothing recorded: the next put with the default key works.
    again = run("put", *_locations(tmp_path), input=b'{"fs_id": "b"}\n')
    assert again.exit_code == 0, again.stderr
    info = run("info", *_locations(tmp_path)).stdout
    assert "key field       fs_id\n" in info


def test_a_key_field_from_the_environment_or_the_config_file_is_named_so(
    run: Run, tmp_path: Path
) -> None:
    result = run("put", *_locations(tmp_path), input=b'{"a": 1}\n', env={"S3IDX_KEY": "a.b"})
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr.startswith("s3idx: error: invalid S3IDX_KEY 'a.b': it contains '.'")

    config = tmp_path / "config.toml"
    config.write_text('key = ""\n')
    result = run("put", "--config", str(config), *_locations(tmp_path), input=b'{"a": 1}\n')
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == f"s3idx: error: invalid key in {config} '': it is empty\n{HINT}"
    assert not (tmp_path / "idx.sqlite3").exists()


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("", "--field: invalid field path '': empty part"),
        ("a..b", "--field: invalid field path 'a..b': empty part"),
        ("$a", "--field: invalid field path '$a': parts may not start with '$'"),
        (
            "tags.0",
            "--field: invalid field path 'tags.0': '0' is a number, which MongoDB reads as a "
            "position in an array; an index entry keeps no single element\n"
            '  hint: index "tags": a query such as {"tags.0": ...} then matches by its position',
        ),
        (
            "last_updated",
            "--field: field 'last_updated' is reserved: s3idx sets 'last_updated' itself",
        ),
        # Checked against the key field, which only the index may know: the engine's words.
        ("fs_id.x", "field 'fs_id.x' lies inside the key field 'fs_id', whose value is a string"),
    ],
)
@pytest.mark.parametrize("command", ["put", "reindex"])
def test_a_field_no_document_can_have_is_refused_naming_the_flag(
    run: Run, tmp_path: Path, field: str, message: str, command: str
) -> None:
    if command == "reindex":
        assert run("put", *_locations(tmp_path), input=b'{"fs_id": "a"}\n').exit_code == 0
    result = run(command, "--field", field, *_locations(tmp_path), input=b'{"fs_id": "a"}\n')
    assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, "")
    assert result.stderr.startswith(f"s3idx: error: {message}\n")
    if command == "put":
        assert not (tmp_path / "idx.sqlite3").exists()


@pytest.mark.parametrize(("name", "reason"), BAD_KEY_FIELDS)
def test_the_library_refuses_such_a_key_field_before_anything_is_recorded(
    tmp_path: Path, name: str, reason: str
) -> None:
    with pytest.raises(UsageError) as raised:
        open_engine(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3"), key=name)
    assert raised.value.message == f"invalid key field {_shown(name)}: {reason}"
    index = SqliteIndex(tmp_path / "i.sqlite3")
    with pytest.raises(UsageError):
        Engine(LocalStore(tmp_path / "s"), index, key_field=name)
    with pytest.raises(UsageError):
        index.configure(name, [])
    assert index.settings() is None
    index.close()


def test_good_key_fields_pass() -> None:
    for name in ("fs_id", "task_id", "_id", "k" * 256, "é", "a-b c"):
        assert check_key_field(name) == name
