"""Bad input: each case names FILE:LINE and the reason, the line goes to --rejects as it was,
every other line is stored, and the exit status is the partial-failure one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, json_lines

BIG_ENTRY = b'{"fs_id": "big", "a": "' + b"x" * 1500 + b'", "b": "' + b"y" * 700 + b'"}'

CASES = {
    "invalid JSON": (
        b'{"fs_id": "x", }',
        "invalid JSON: trailing comma is not allowed at column 14",
    ),
    "not an object": (b'["fs_id", "x"]', "expected a JSON object, got an array"),
    "unfinished array": (b"[1, 2", "invalid JSON: unexpected end of data at column 6"),
    "a bare string": (b'"fs_id"', "expected a JSON object, got a string"),
    "missing key": (
        b'{"id": "x"}',
        "missing key field 'fs_id'; every document needs its key; choose the key field with --key",
    ),
    "key of the wrong type": (
        b'{"fs_id": 12}',
        "key field 'fs_id' must be a string, got a number; "
        "convert the key to a string in the input, or choose another --key",
    ),
    "null key": (
        b'{"fs_id": null}',
        "key field 'fs_id' must be a string, got null; "
        "convert the key to a string in the input, or choose another --key",
    ),
    "empty key": (b'{"fs_id": ""}', "key field 'fs_id' is empty"),
    "dot-dot segment": (
        b'{"fs_id": "a/../../etc/passwd"}',
        "key 'a/../../etc/passwd' has a '..' segment",
    ),
    "absolute key": (
        b'{"fs_id": "/etc/passwd"}',
        "key '/etc/passwd' has an empty segment (a leading, trailing or double '/')",
    ),
    "control character": (b'{"fs_id": "a\\u0000b"}', "key contains a control character (U+0000)"),
    "invalid UTF-8": (b'{"fs_id": "\xff"}', "invalid JSON: not valid UTF-8 text"),
    "NaN": (
        b'{"fs_id": "n", "v": NaN}',
        "invalid JSON: NaN and Infinity are not JSON numbers (at column 21)",
    ),
    "Infinity": (
        b'{"fs_id": "i", "v": -Infinity}',
        "invalid JSON: NaN and Infinity are not JSON numbers (at column 22)",
    ),
    "very deep nesting": (
        b'{"fs_id": "d", "v": ' + b"[" * 1100 + b"]" * 1100 + b"}",
        "invalid JSON: nested deeper than 1024 levels (at column 1045)",
    ),
    "dollar field": (
        b'{"fs_id": "x", "$set": 1}',
        "top-level field name '$set' starts with '$' (MongoDB reserves it); rename the field",
    ),
    "dotted field": (
        b'{"fs_id": "x", "a.b": 1}',
        "top-level field name 'a.b' contains '.' (it would read as a path); rename the field",
    ),
    "bad date": (
        b'{"fs_id": "x", "a": {"$date": "soon"}}',
        "in an indexed field: invalid $date value: 'soon' (expected ISO-8601)",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_first_line_is_rejected_alone_and_the_rest_is_stored(
    run: Run, tmp_path: Path, case: str
) -> None:
    # A first line starting with '[' must not turn a JSON-lines file into one array.
    bad, reason = CASES[case]
    source = tmp_path / "input.jsonl"
    source.write_bytes(bad + b'\n{"fs_id": "second"}\n\n{"fs_id": "fourth"}\n')
    rejects = tmp_path / "rejects.jsonl"

    result = run("put", str(source), "--field", "a", "--rejects", str(rejects), "--json")

    assert result.stderr == f"s3idx: {source}:1: {reason}\n"
    assert result.exit_code == ExitStatus.PARTIAL
    assert rejects.read_bytes() == bad + b"\n"
    summary = orjson.loads(result.stdout)
    assert (summary["stored"], summary["rejected"]) == (2, 1)
    assert [e["fs_id"] for e in json_lines(run("query").stdout)] == ["fourth", "second"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_line_is_rejected_alone(run: Run, tmp_path: Path, case: str) -> None:
    bad, reason = CASES[case]
    source = tmp_path / "input.jsonl"
    source.write_bytes(b'{"fs_id": "before"}\n' + bad + b'\n{"fs_id": "after"}\n')
    rejects = tmp_path / "rejects.jsonl"

    result = run("put", str(source), "--field", "a", "--rejects", str(rejects), "--json")

    assert result.exit_code == ExitStatus.PARTIAL
    assert result.stderr == f"s3idx: {source}:2: {reason}\n"
    assert rejects.read_bytes() == bad + b"\n"
    summary = orjson.loads(result.stdout)
    assert (summary["stored"], summary["rejected"]) == (2, 1)
    assert [e["fs_id"] for e in json_lines(run("query").stdout)] == ["after", "before"]


def test_entry_over_2kb_names_key_size_and_largest_fields(run: Run, tmp_path: Path) -> None:
    source = tmp_path / "input.jsonl"
    source.write_bytes(b'{"fs_id": "ok"}\n' + BIG_ENTRY + b"\n")

    result = run("put", str(source), "--field", "a", "--field", "b")

    assert result.exit_code == ExitStatus.PARTIAL
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"s3idx: {source}:2: index entry of 'big' needs ")
    assert "bytes of metadata; the limit is 2048 bytes; largest fields: a (1502 bytes), " in first
    assert "b (702 bytes)" in first
    assert json_lines(run("query").stdout)[0]["fs_id"] == "ok"
    assert run("query", "--count").stdout == "1\n"


def test_bom_crlf_and_blank_lines_are_accepted(run: Run, tmp_path: Path) -> None:
    source = tmp_path / "windows.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"fs_id": "a"}\r\n\r\n   \r\n{"fs_id": "b"}\r\n')
    result = run("put", str(source), "--json")
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["read"], summary["stored"], summary["rejected"]) == (2, 2, 0)
    assert run("get", "a").stdout == '{"fs_id": "a"}\n'


def test_a_100_mb_document_is_stored_and_read_back(run: Run, tmp_path: Path) -> None:
    payload = b"0123456789abcdef" * (100 * 1024 * 1024 // 16)
    line = b'{"fs_id": "huge", "data": "' + payload + b'"}'
    source = tmp_path / "huge.jsonl"
    source.write_bytes(line + b"\n")

    assert run("put", str(source)).exit_code == 0
    out = tmp_path / "out.jsonl"
    assert run("get", "huge", "--output", str(out)).exit_code == 0
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(line + b"\n").digest()


# Rejected lines with the bytes a reader might normalise: blanks around a valid JSON line, CR
# before LF, a BOM, invalid UTF-8, a last line without a line end. Valid JSON rejected later
# (no key: by the reader; a bad date: by a worker process) and invalid JSON alike go to
# --rejects exactly as read, line end included.
AS_READ_INPUT = (
    b'\xef\xbb\xbf  {"id": "bom and blanks"} \t\r\n'
    b'{"fs_id": "kept"}\r\n'
    b' {"fs_id": "bad date", "a": {"$date": "soon"}}\t\n'
    b'\t{"id": "tab, CR CR LF"}\r\r\n'
    b'  {"fs_id": "x", }  \r\n'
    b'{"fs_id": "\xff"} \n'
    b' {"id": "no line end"}  '
)
# The BOM marks the file's encoding, not the first line: it is not copied (a BOM in the middle
# of a rejects file would break the line it lands on). A last line gets the line end it lacked.
AS_READ_REJECTS = (
    b'  {"id": "bom and blanks"} \t\r\n'
    b' {"fs_id": "bad date", "a": {"$date": "soon"}}\t\n'
    b'\t{"id": "tab, CR CR LF"}\r\r\n'
    b'  {"fs_id": "x", }  \r\n'
    b'{"fs_id": "\xff"} \n'
    b' {"id": "no line end"}  \n'
)


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("from_stdin", [False, True], ids=["file", "stdin"])
def test_rejects_hold_each_line_exactly_as_read(
    run: Run, tmp_path: Path, processes: str, from_stdin: bool
) -> None:
    source = tmp_path / "input.jsonl"
    source.write_bytes(AS_READ_INPUT)
    rejects = tmp_path / "rejects.jsonl"
    where = ["-"] if from_stdin else [str(source)]
    stdin = AS_READ_INPUT if from_stdin else None

    result = run(
        "put", *where, "--field", "a", "--processes", processes, "--rejects", str(rejects),
        "--json", input=stdin,
    )  # fmt: skip

    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    assert orjson.loads(result.stdout)["rejected"] == 6
    assert rejects.read_bytes() == AS_READ_REJECTS
    # Fixed (here: given the key they lacked), the rejects are put again as they are.
    fixed = rejects.read_bytes().replace(b'{"id"', b'{"fs_id"')
    rejects.write_bytes(fixed)
    again = tmp_path / "again.jsonl"
    replay = run("put", str(rejects), "--field", "a", "--rejects", str(again), "--json")
    assert orjson.loads(replay.stdout)["stored"] == 3
    assert again.read_bytes() == (
        b' {"fs_id": "bad date", "a": {"$date": "soon"}}\t\n'
        b'  {"fs_id": "x", }  \r\n'
        b'{"fs_id": "\xff"} \n'
    )


def test_a_put_refused_or_dry_leaves_an_earlier_rejects_file_as_it_was(
    run: Run, tmp_path: Path
) -> None:
    """The rejects file holds what a run rejected; a run refused before reading anything, or a
    dry run (which creates nothing), leaves the one an earlier run wrote, and creates none."""
    kept, absent = tmp_path / "kept.jsonl", tmp_path / "absent.jsonl"
    kept.write_bytes(b"an earlier run's reject\n")
    store, index = ["--store", str(tmp_path / "s")], ["--index", str(tmp_path / "i.sqlite3")]
    assert run("put", *store, *index, input=b'{"fs_id": "a"}\n').exit_code == 0
    other = ["--store", str(tmp_path / "other"), *index]  # not the index's store: refused
    for args in (other, [*store, *index, "--dry-run"]):
        for rejects in (kept, absent):
            result = run("put", *args, "--rejects", str(rejects), input=b"not json\n")
            assert result.exit_code in (2, 3), result.stderr
            assert kept.read_bytes() == b"an earlier run's reject\n"
            assert not absent.exists()
    # A run that reads its input replaces it, also with no reject at all.
    assert run("put", *store, *index, "--rejects", str(kept), input=b"").exit_code == 0
    assert kept.read_bytes() == b""
    assert run("put", *store, *index, "--rejects", str(kept), input=b"x\n").exit_code == 3
    assert kept.read_bytes() == b"x\n"
