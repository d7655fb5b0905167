"""Input in UTF-16 or UTF-32 (Windows PowerShell's `>` writes UTF-16): JSON lines are UTF-8, so
such an input is one reject at its line 1 saying what it is and how to convert it, its bytes go
to --rejects as they were, and the other inputs of the command are still stored."""

from __future__ import annotations

import gzip
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, json_lines

TEXT = '{"fs_id": "a", "v": "é"}\n{"fs_id": "b"}\n'

ENCODINGS = {
    # name in the message: (iconv's -f that reads it exactly, bytes as written). With a byte
    # order mark, UTF-16 and UTF-32 read the mark and drop it; without one, glibc's iconv reads
    # UTF-16 and UTF-32 as little-endian, so the hint names the byte order found.
    "UTF-16LE with BOM": ("UTF-16", b"\xff\xfe" + TEXT.encode("utf-16-le")),
    "UTF-16BE with BOM": ("UTF-16", b"\xfe\xff" + TEXT.encode("utf-16-be")),
    "UTF-32LE with BOM": ("UTF-32", b"\xff\xfe\x00\x00" + TEXT.encode("utf-32-le")),
    "UTF-32BE with BOM": ("UTF-32", b"\x00\x00\xfe\xff" + TEXT.encode("utf-32-be")),
    "UTF-16LE": ("UTF-16LE", TEXT.encode("utf-16-le")),
    "UTF-16BE": ("UTF-16BE", TEXT.encode("utf-16-be")),
    "UTF-32LE": ("UTF-32LE", TEXT.encode("utf-32-le")),
    "UTF-32BE": ("UTF-32BE", TEXT.encode("utf-32-be")),
}


def _reason(name: str, family: str) -> str:
    return (
        f"the input is {name} text, not UTF-8; nothing in it was read: convert it first, "
        f"e.g. iconv -f {family} -t UTF-8"
    )


@pytest.mark.parametrize("name", list(ENCODINGS))
@pytest.mark.parametrize("compressed", [False, True])
def test_a_utf16_or_utf32_input_is_one_reject_naming_its_encoding(
    run: Run, tmp_path: Path, name: str, compressed: bool
) -> None:
    family, data = ENCODINGS[name]
    wide = tmp_path / "wide.jsonl"
    wide.write_bytes(gzip.compress(data) if compressed else data)
    good = tmp_path / "good.jsonl"
    good.write_bytes(b'{"fs_id": "c"}\n')
    rejects = tmp_path / "rejects"

    done = run("put", str(wide), str(good), "--rejects", str(rejects), "--json")
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    assert done.stderr.splitlines()[0] == f"s3idx: {wide}:1: {_reason(name, family)}"
    summary = json_lines(done.stdout)[0]
    assert (summary["read"], summary["stored"], summary["rejected"]) == (2, 1, 1)
    assert rejects.read_bytes() == data  # as it was read (after gunzip), to convert and put
    assert run("query", "--count").stdout == "1\n"


@pytest.mark.skipif(shutil.which("iconv") is None, reason="iconv is not installed")
@pytest.mark.parametrize("name", list(ENCODINGS))
def test_the_iconv_command_of_the_reject_converts_the_input_exactly(
    run: Run, tmp_path: Path, name: str
) -> None:
    """The command the message suggests, run on the rejects file, gives back the UTF-8 text: no
    byte order mark left, no byte swapped, nothing refused."""
    wide = tmp_path / "wide.jsonl"
    wide.write_bytes(ENCODINGS[name][1])
    rejects = tmp_path / "rejects"
    done = run("put", str(wide), "--rejects", str(rejects))
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    command = done.stderr.splitlines()[0].split("e.g. ", 1)[1]
    assert command.startswith("iconv -f ") and command.endswith(" -t UTF-8"), command

    converted = subprocess.run(
        [*shlex.split(command), str(rejects)], capture_output=True, timeout=60, check=False
    )
    assert converted.returncode == 0, converted.stderr
    assert converted.stdout == TEXT.encode("utf-8")
    assert run("put", input=converted.stdout).exit_code == 0
    assert json_lines(run("get", "a", "b").stdout) == [{"fs_id": "a", "v": "é"}, {"fs_id": "b"}]


def test_a_utf16_input_on_stdin_is_one_reject(run: Run) -> None:
    family, data = ENCODINGS["UTF-16LE with BOM"]
    done = run("put", input=data)
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    assert done.stderr.splitlines()[0] == (
        f"s3idx: <stdin>:1: {_reason('UTF-16LE with BOM', family)}"
    )


@pytest.mark.parametrize(
    "first_line",
    [b'{"fs_id": "\\u0000x"}\n', b'{"\x00": 1, "fs_id": "n"}\n', b"\x00\n"],
)
def test_utf8_with_nul_bytes_is_still_read_line_by_line(run: Run, first_line: bytes) -> None:
    done = run("put", input=first_line + b'{"fs_id": "ok"}\n')
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    assert "UTF-16" not in done.stderr and "UTF-32" not in done.stderr
    assert run("get", "ok").stdout == '{"fs_id": "ok"}\n'


@pytest.mark.parametrize(
    "name", ["UTF-16LE with BOM", "UTF-16BE", "UTF-32LE with BOM", "UTF-32BE", "UTF-16LE"]
)
def test_a_utf16_filter_file_is_named_as_such(run: Run, tmp_path: Path, name: str) -> None:
    family = ENCODINGS[name][0]
    codec = {
        "UTF-16LE with BOM": "utf-16",
        "UTF-16BE": "utf-16-be",
        "UTF-32LE with BOM": "utf-32",
        "UTF-32BE": "utf-32-be",
        "UTF-16LE": "utf-16-le",
    }
    assert run("put", input=b'{"fs_id": "a"}\n').exit_code == 0
    filter_file = tmp_path / "filter.json"
    filter_file.write_bytes('{"fs_id": "a"}'.encode(codec[name]))
    done = run("query", "--filter-file", str(filter_file))
    assert done.exit_code == ExitStatus.USAGE
    assert done.stderr.splitlines()[0] == (
        f"s3idx: error: {filter_file} is {name} text, not UTF-8: convert it first, "
        f"e.g. iconv -f {family} -t UTF-8"
    )


def test_with_processes_the_reject_holds_the_whole_input_too(run: Run, tmp_path: Path) -> None:
    family, data = ENCODINGS["UTF-16LE with BOM"]
    wide = tmp_path / "wide.jsonl"
    wide.write_bytes(data)
    good = tmp_path / "good.jsonl"
    good.write_bytes(b'{"fs_id": "c"}\nbad\n')
    rejects = tmp_path / "rejects"

    done = run("put", str(good), str(wide), "--processes", "2", "--rejects", str(rejects))
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    assert done.stderr.splitlines()[1] == f"s3idx: {wide}:1: {_reason('UTF-16LE with BOM', family)}"
    assert rejects.read_bytes() == b"bad\n" + data


@pytest.mark.parametrize("compressed", [False, True])
def test_lines_ending_with_cr_alone_are_named_as_the_likely_cause(
    run: Run, tmp_path: Path, compressed: bool
) -> None:
    data = b'{"fs_id": "a"}\r{"fs_id": "b"}\r'
    path = tmp_path / "mac.jsonl"
    path.write_bytes(gzip.compress(data) if compressed else data)
    done = run("put", str(path))
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    assert done.stderr.splitlines()[0] == (
        f"s3idx: {path}:1: invalid JSON: unexpected content after document at column 16; "
        "the line holds CR characters: if the input's lines end with CR alone (old Mac line "
        "ends), convert them to LF first, e.g. tr '\\r' '\\n'"
    )


def test_crlf_and_cr_as_json_whitespace_are_still_read(run: Run) -> None:
    done = run("put", input=b'{"fs_id":\r"a"}\r\n{"fs_id": "b"}\r\n')
    assert done.exit_code == 0, done.stderr
    assert run("query", "--count").stdout == "2\n"


@pytest.mark.parametrize("first_line", [b"\x01\x00\x02\x00\n", b"\xc3\x00\xa9\x00\n"])
def test_zero_bytes_that_cannot_start_json_are_a_rejected_line_not_utf16(
    run: Run, first_line: bytes
) -> None:
    done = run("put", input=first_line + b'{"fs_id": "ok"}\n')
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    assert done.stderr.startswith("s3idx: <stdin>:1: invalid JSON: ")
    assert run("get", "ok").stdout == '{"fs_id": "ok"}\n'


@pytest.mark.parametrize(
    ("line", "column"),
    [
        (b'{"fs_id": "a"}{"fs_id": "b"}', 15),
        (b'{"fs_id": "a"} {"fs_id": "b"}', 16),
        (b'{"fs_id": "a"}, {"fs_id": "b"}', 15),
    ],
)
def test_several_documents_on_one_line_are_named_as_such(
    run: Run, line: bytes, column: int
) -> None:
    done = run("put", input=line + b'\n{"fs_id": "c"}\n')
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    assert done.stderr.splitlines()[0] == (
        f"s3idx: <stdin>:1: invalid JSON: unexpected content after document at column {column}; "
        "another document follows on the same line: write one document per line, "
        "e.g. jq -c . FILE"
    )
    assert run("get", "c").exit_code == 0
