"""``put`` limits: --max-errors stops at exactly N rejects, keys against the metadata budget."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, json_lines


@pytest.mark.parametrize("batch_size", ["1", "1000"])
def test_max_errors_stops_at_the_nth_reject(run: Run, tmp_path: Path, batch_size: str) -> None:
    lines = []
    for i in range(20):
        lines.append(b'{"fs_id": "good%02d"}' % i)
        lines.append(b'{"no_key": %d}' % i)
    source = tmp_path / "input.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")

    result = run("put", str(source), "--max-errors", "3", "--batch-size", batch_size, "--json")

    assert result.exit_code == ExitStatus.PARTIAL
    reported = [line for line in result.stderr.splitlines() if "missing key field" in line]
    assert reported == [f"s3idx: {source}:{n}: missing key field 'fs_id'; every document needs "
                        "its key; choose the key field with --key" for n in (2, 4, 6)]  # fmt: skip
    summary = orjson.loads(result.stdout)
    assert (summary["read"], summary["stored"], summary["rejected"]) == (6, 3, 3)
    assert summary["stopped_early"] is True
    stored = [e["fs_id"] for e in json_lines(run("query", "--sort", "fs_id").stdout)]
    assert stored == ["good00", "good01", "good02"]


def test_max_errors_not_reached_stores_everything(run: Run, tmp_path: Path) -> None:
    source = tmp_path / "input.jsonl"
    source.write_bytes(b'{"fs_id": "a"}\n{"x": 1}\n{"fs_id": "b"}\n')
    summary = orjson.loads(run("put", str(source), "--max-errors", "2", "--json").stdout)
    assert (summary["stored"], summary["rejected"], summary["stopped_early"]) == (2, 1, False)


def _put_one(run: Run, tmp_path: Path, document: dict[str, object], *args: str) -> str:
    source = tmp_path / "input.jsonl"
    source.write_bytes(orjson.dumps(document) + b"\n")
    result = run("put", str(source), *args)
    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    (line,) = result.stderr.splitlines()[:1]
    prefix = f"s3idx: {source}:1: "
    assert line.startswith(prefix)
    return line[len(prefix) :]


def _key(part: str, parts: int) -> str:
    # '/'-separated, as the local store allows at most 254 bytes of file name per part.
    return "/".join([part] * parts)


@pytest.mark.parametrize(
    ("key", "fits"),
    [
        (_key("a" * 204, 5), True),  # 1024 bytes: the longest key; ASCII takes a byte a character
        # A non-ASCII character takes 6 bytes of metadata (\u00e9), 12 beyond U+FFFF: 1805 and
        # 2106 bytes of metadata, for 605- and 706-byte keys.
        (_key("é" * 50, 6), True),
        (_key("é" * 50, 7), False),
        (_key("😀" * 25, 6), True),
        (_key("😀" * 25, 7), False),
    ],
)
def test_key_length_rule_is_the_documented_one(
    run: Run, tmp_path: Path, key: str, fits: bool
) -> None:
    source = tmp_path / "input.jsonl"
    source.write_bytes(orjson.dumps({"fs_id": key}) + b"\n")

    result = run("put", str(source))

    if fits:
        assert result.exit_code == 0, result.stderr
        assert orjson.loads(run("get", key).stdout) == {"fs_id": key}
        return
    assert result.exit_code == ExitStatus.PARTIAL
    size = len(key.encode())
    shown = f"{key[:60]!r}… ({size} bytes)"
    assert f"index entry of {shown} needs " in result.stderr
    assert "bytes of metadata; the limit is 2048 bytes; largest fields: fs_id (" in result.stderr
    assert "non-ASCII characters take 6 bytes each in metadata (12 beyond U+FFFF)" in result.stderr
    assert "shorten the key" in result.stderr


def test_a_key_over_1024_bytes_is_refused_with_its_size(run: Run, tmp_path: Path) -> None:
    reason = _put_one(run, tmp_path, {"fs_id": "k" * 1500})
    assert reason == "key is 1500 bytes; the limit is 1024 bytes (UTF-8)"


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("x" * 100 + "/../y", "key {} has a '..' segment"),
        ("x" * 100 + "//y", "key {} has an empty segment (a leading, trailing or double '/')"),
    ],
)
def test_long_keys_are_shortened_in_messages(
    run: Run, tmp_path: Path, key: str, reason: str
) -> None:
    shown = f"{key[:60]!r}… ({len(key)} bytes)"
    assert _put_one(run, tmp_path, {"fs_id": key}) == reason.format(shown)


def test_get_and_delete_shorten_long_missing_keys(run: Run) -> None:
    assert run("put", input=b'{"fs_id": "a"}\n').exit_code == 0
    key = "m" * 500
    shown = f"{'m' * 60}… (500 bytes)"
    get = run("get", key)
    assert get.exit_code == ExitStatus.NOT_FOUND
    assert get.stderr == f"s3idx: not found: {shown}\n"
    delete = run("delete", key)
    assert delete.exit_code == ExitStatus.NOT_FOUND
    assert f"s3idx: not found: {shown}\n" in delete.stderr


LOCAL_PART_RULE = (
    "needs a {} file name; the local store allows 254 bytes per '/'-separated part of a key"
)


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("a" * 1000, f"key {'a' * 60!r}… (1000 bytes) " + LOCAL_PART_RULE.format("1001-byte")),
        (
            "b/" + "a" * 300,
            f"key {('b/' + 'a' * 58)!r}… (302 bytes): its part {'a' * 60!r}… (300 bytes) "
            + LOCAL_PART_RULE.format("301-byte"),
        ),
    ],
)
def test_a_key_too_long_for_a_local_file_name_is_shown_shortened_with_its_size(
    run: Run, tmp_path: Path, key: str, shown: str
) -> None:
    """README: long keys are shown as their first 60 characters, `…` and their size in bytes."""
    reason = _put_one(run, tmp_path, {"fs_id": key})
    assert reason == f"{shown}; use shorter key parts, or an S3 store"
