"""Filters from a file or stdin, integers beyond 64 bits, and nesting limits."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, json_lines, jsonl

KEYS = [f"k{i:05d}" for i in range(30)]


@pytest.fixture
def loaded(run: Run) -> Run:
    docs = [{"fs_id": key, "n": i, "tag": f"t{i % 3}"} for i, key in enumerate(KEYS)]
    put = run("put", "--field", "n", "--field", "tag", input=jsonl(*docs))
    assert put.exit_code == 0, put.stderr
    return run


def _big_in(tmp_path: Path) -> tuple[Path, list[str]]:
    wanted = KEYS[::7]
    values = [f"absent-{i}" for i in range(20_000)] + wanted
    path = tmp_path / "filter.json"
    path.write_bytes(orjson.dumps({"fs_id": {"$in": values}}, option=orjson.OPT_INDENT_2))
    return path, wanted


def test_query_takes_a_20k_value_filter_from_a_file(loaded: Run, tmp_path: Path) -> None:
    path, wanted = _big_in(tmp_path)
    assert path.stat().st_size > 300_000  # more than a command line holds on many systems
    result = loaded("query", "--filter-file", str(path), "--sort", "fs_id")
    assert result.exit_code == 0, result.stderr
    assert [e["fs_id"] for e in json_lines(result.stdout)] == wanted
    count = loaded("query", "--count", "--filter-file", str(path))
    assert count.stdout == f"{len(wanted)}\n"


def test_a_filter_file_with_a_byte_order_mark_and_crlf_is_read(loaded: Run, tmp_path: Path) -> None:
    path = tmp_path / "windows.json"
    path.write_bytes(b'\xef\xbb\xbf{\r\n  "tag": "t2"\r\n}\r\n')
    result = loaded("query", "--filter-file", str(path), "--count")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "10\n"


def test_query_takes_the_filter_from_stdin(loaded: Run) -> None:
    result = loaded("query", "--filter-file", "-", "--count", input=b'{"tag": "t1"}\n')
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "10\n"


def test_delete_takes_the_filter_from_a_file(loaded: Run, tmp_path: Path) -> None:
    path, wanted = _big_in(tmp_path)
    result = loaded("delete", "--filter-file", str(path))
    assert result.exit_code == 0, result.stderr
    assert loaded("query", "--count").stdout == f"{len(KEYS) - len(wanted)}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", '{"n": 1}', "--filter-file", "F"], "give FILTER or --filter-file, not both"),
        (
            ["delete", "--filter", '{"n": 1}', "--filter-file", "F"],
            "give --filter or --filter-file, not both",
        ),
        (["delete", "k00001", "--filter-file", "F"], "give KEY arguments or a filter, not both"),
    ],
)
def test_a_filter_given_twice_is_refused(
    loaded: Run, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "F").write_text('{"n": 2}')
    args = [str(tmp_path / "F") if a == "F" else a for a in args]
    result = loaded(*args)
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == f"s3idx: error: {message}\n"
    assert loaded("query", "--count").stdout == f"{len(KEYS)}\n"


def test_an_unreadable_filter_file_is_named(loaded: Run, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = loaded("query", "--filter-file", str(missing))
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        f"s3idx: error: cannot read --filter-file {missing}: No such file or directory\n"
        "  hint: check the name and the directories above it (a relative path starts from the "
        "current directory)\n"
    )
    result = loaded("delete", "--filter-file", str(tmp_path))
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        f"s3idx: error: cannot read --filter-file {tmp_path}: Is a directory\n"
        "  hint: give a file that holds the filter, one JSON object\n"
    )


def test_invalid_json_in_a_filter_file_names_file_line_and_column(
    loaded: Run, tmp_path: Path
) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "n": 1,\n  "tag": t1\n}\n')
    result = loaded("query", "--filter-file", str(path))
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr.startswith(f"s3idx: error: {path} is not valid JSON: ")
    assert "at line 3, column 10\n" in result.stderr
    stdin = loaded("query", "--filter-file", "-", input=b"[1, 2]")
    assert stdin.exit_code == ExitStatus.USAGE
    assert "s3idx: error: <stdin> must be a JSON object, not an array" in stdin.stderr


# --- integers beyond 64 bits ------------------------------------------------------------------

BIG = ["9223372036854775808", "18446744073709551615", "18446744073709551616",
       "-9223372036854775809", "123456789012345678901234567890", "9" * 300]  # fmt: skip


@pytest.mark.parametrize("literal", BIG)
def test_an_indexed_integer_beyond_64_bits_is_rejected(
    run: Run, tmp_path: Path, literal: str
) -> None:
    source = tmp_path / "input.jsonl"
    source.write_bytes(b'{"fs_id": "ok", "n": 9223372036854775807}\n'
                       b'{"fs_id": "big", "n": [1, ' + literal.encode() + b"]}\n")  # fmt: skip

    result = run("put", str(source), "--field", "n")

    assert result.exit_code == ExitStatus.PARTIAL
    digits = len(literal.lstrip("-"))
    assert result.stderr.splitlines()[0] == (
        f"s3idx: {source}:2: indexed field 'n' holds an integer of {digits} digits, beyond "
        "64-bit integers (-9223372036854775808 to 9223372036854775807)"
    )
    assert [e["n"] for e in json_lines(run("query").stdout)] == [2**63 - 1]


def test_a_number_beyond_a_double_is_rejected_anywhere(run: Run, tmp_path: Path) -> None:
    source = tmp_path / "input.jsonl"
    source.write_bytes(b'{"fs_id": "a", "body": {"x": ' + b"9" * 400 + b"}}\n")
    result = run("put", str(source))
    assert result.exit_code == ExitStatus.PARTIAL
    assert result.stderr.splitlines()[0] == (
        f"s3idx: {source}:1: invalid JSON: a number too large to read, beyond a double's "
        "±1.8e308 (at column 30)"
    )


def test_big_integers_outside_indexed_fields_round_trip_exactly(run: Run) -> None:
    line = b'{"fs_id": "a", "n": 1, "big": 123456789012345678901234567890, "f": 1e30}'
    assert run("put", "--field", "n", "--field", "f", input=line + b"\n").exit_code == 0
    assert run("get", "a").stdout_bytes == line + b"\n"
    assert json_lines(run("query", '{"f": 1e30}').stdout)[0]["fs_id"] == "a"


@pytest.mark.parametrize("literal", BIG)
def test_a_filter_with_an_integer_beyond_64_bits_is_a_usage_error(
    loaded: Run, literal: str
) -> None:
    result = loaded("query", '{"n": {"$in": [1, ' + literal + "]}}")
    assert result.exit_code == ExitStatus.USAGE
    digits = len(literal.lstrip("-"))
    assert result.stderr == (
        f"s3idx: error: FILTER holds an integer of {digits} digits, beyond 64-bit integers "
        "(-9223372036854775808 to 9223372036854775807)\n"
    )


# --- nesting -----------------------------------------------------------------------------------


def _nested(operator: str, depth: int) -> bytes:
    """``depth`` levels of ``operator`` around ``{"n": {"$gte": 0}}``, as JSON text.

    Written as text: orjson refuses to write more than 255 levels, a user's editor does not.
    """
    if operator == "$not":
        return b'{"n":' + b'{"$not":' * depth + b'{"$gte":0}' + b"}" * depth + b"}"
    if operator == "$elemMatch":
        return b'{"n":' + b'{"$elemMatch":' * depth + b'{"$gte":0}' + b"}" * depth + b"}"
    head = b'{"%s":[' % operator.encode()
    tails = [b',{"n":%d}]}' % (1000 + i) for i in range(depth)]
    return head * depth + b'{"n":{"$gte":0}}' + b"".join(tails)


@pytest.mark.parametrize(
    ("operator", "expected"),
    # n >= 0 holds for every entry; n = 1000 + i for none. So each $and level gives nothing,
    # $or everything, and $nor and $not flip: an even number of flips gives everything.
    [("$and", 0), ("$or", len(KEYS)), ("$nor", len(KEYS)), ("$not", len(KEYS))],
)
def test_filters_nested_100_deep_work(
    loaded: Run, tmp_path: Path, operator: str, expected: int
) -> None:
    path = tmp_path / "deep.json"
    path.write_bytes(_nested(operator, 100))
    result = loaded("query", "--filter-file", str(path), "--count")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{expected}\n"
    listed = loaded("query", "--filter-file", str(path), "--fields", "fs_id")
    assert len(json_lines(listed.stdout)) == expected


@pytest.mark.parametrize("operator", ["$and", "$or", "$nor", "$not", "$elemMatch"])
@pytest.mark.parametrize("depth", [101, 600, 5000])
def test_filters_nested_deeper_than_100_are_a_usage_error(
    loaded: Run, tmp_path: Path, operator: str, depth: int
) -> None:
    path = tmp_path / "deep.json"
    path.write_bytes(_nested(operator, depth))
    result = loaded("query", "--filter-file", str(path))
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        "s3idx: error: the filter is nested deeper than 100 levels (MongoDB's limit)\n"
    )


def test_documents_nested_too_deep_are_rejected(run: Run, tmp_path: Path) -> None:
    source = tmp_path / "deep.jsonl"
    deep = b'{"fs_id": "d", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    source.write_bytes(b'{"fs_id": "ok"}\n' + deep + b"\n")
    result = run("put", str(source))
    assert result.exit_code == ExitStatus.PARTIAL
    assert result.stderr.splitlines()[0] == (
        f"s3idx: {source}:2: invalid JSON: nested deeper than 1024 levels (at column 1045)"
    )
    assert "Traceback" not in result.stderr
    assert os.path.getsize(source) > 4000


@pytest.mark.parametrize("depth", [101, 600, 1000])
def test_indexed_values_nested_deeper_than_100_are_rejected(
    run: Run, tmp_path: Path, depth: int
) -> None:
    source = tmp_path / "deep.jsonl"
    deep = b'{"fs_id": "d", "x": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    source.write_bytes(deep + b"\n" + b'{"fs_id": "ok", "x": {"a": {"a": 1}}}\n')
    result = run("put", str(source), "--field", "x")
    assert result.exit_code == ExitStatus.PARTIAL
    assert result.stderr.splitlines()[0] == (
        f"s3idx: {source}:1: indexed field 'x' is nested deeper than 100 levels (MongoDB's limit)"
    )
    assert [e["fs_id"] for e in json_lines(run("query").stdout)] == ["ok"]
    # Outside indexed fields, the body keeps whatever JSON allows.
    source.write_bytes(deep + b"\n")
    elsewhere = ["--store", str(tmp_path / "other"), "--index", str(tmp_path / "other.db")]
    assert run("put", str(source), *elsewhere).exit_code == 0
    assert run("get", "d", *elsewhere).stdout_bytes == deep + b"\n"


def test_big_integers_in_a_json_array_input_are_kept_or_rejected_as_in_lines(
    run: Run, tmp_path: Path
) -> None:
    source = tmp_path / "array.json"
    big = "123456789012345678901234567890"
    source.write_text(
        f'[\n{{"fs_id": "a", "n": {big}}},\n{{"fs_id": "b", "n": 1, "other": {big}}}\n]\n'
    )
    result = run("put", str(source), "--field", "n")
    assert result.exit_code == ExitStatus.PARTIAL
    assert result.stderr.splitlines()[0] == (
        f"s3idx: {source}:2: indexed field 'n' holds an integer of 30 digits, beyond 64-bit "
        "integers (-9223372036854775808 to 9223372036854775807)"
    )
    assert run("get", "b").stdout == f'{{"fs_id":"b","n":1,"other":{big}}}\n'
