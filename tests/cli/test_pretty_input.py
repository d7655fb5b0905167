"""JSON documents written over several lines (pretty-printed, as `jq .`, `json.dumps(indent=2)`
or an editor write them), the way mongoimport reads them: each document is stored, located at
the line where it starts, every token as written (without the whitespace between tokens, so
`get` prints it as one JSON line); a document that does not parse is one reject at its first
line with its text; JSON lines stay JSON lines, a broken first line included."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, json_lines, subprocess_env

DOCS = [
    {"fs_id": "a", "v": 1, "meta": {"owner": "ann", "tags": ["x", "y"]}, "s": "a  b\\t{[ ]}"},
    {"fs_id": "b", "v": 2.5, "empty": {}, "none": []},
]


def _pretty(docs: list[dict[str, object]], indent: int | str = 2) -> bytes:
    return b"".join(json.dumps(d, indent=indent, ensure_ascii=False).encode() + b"\n" for d in docs)


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
@pytest.mark.parametrize("compressed", [False, True])
def test_pretty_printed_documents_are_stored_and_located(
    run: Run, tmp_path: Path, line_end: bytes, compressed: bool
) -> None:
    data = b"\xef\xbb\xbf\n" + _pretty(DOCS).replace(b"\n", line_end)
    path = tmp_path / "docs.json"
    path.write_bytes(gzip.compress(data) if compressed else data)
    done = run("put", str(path), "--field", "v", "--json")
    assert done.exit_code == 0, done.stderr
    assert json_lines(done.stdout)[0]["stored"] == 2

    got = run("get", "a", "b")
    assert got.exit_code == 0, got.stderr
    assert got.stdout.splitlines() == [orjson.dumps(d).decode() for d in DOCS]
    assert json_lines(got.stdout) == DOCS
    query = run("query", '{"v": {"$gt": 2}}', "--fields", "v")
    assert json_lines(query.stdout) == [{"fs_id": "b", "v": 2.5}]


def test_tokens_are_kept_as_written(run: Run, tmp_path: Path) -> None:
    text = (
        b'{\n  "fs_id": "t",\n  "big": 123456789012345678901234567890,\n  "e": 1E5,\n'
        b'  "z": -0.0,\n  "u": "\\u00e9 \\" }",\n  "d": 1,\n  "d": 2\n}\n'
    )
    path = tmp_path / "t.json"
    path.write_bytes(text)
    assert run("put", str(path)).exit_code == 0
    assert run("get", "t").stdout == (
        '{"fs_id":"t","big":123456789012345678901234567890,"e":1E5,"z":-0.0,'
        '"u":"\\u00e9 \\" }","d":1,"d":2}\n'
    )


def test_documents_start_at_their_line_and_bad_ones_are_one_reject(
    run: Run, tmp_path: Path
) -> None:
    bad = b'{\n  "fs_id": "bad",\n  "v": NaN\n}'
    data = (
        b'{\n  "fs_id": "a"\n}\n'  # lines 1-3
        b'{"fs_id": "compact"}\n'  # line 4
        b"\n"
        + bad  # lines 6-9
        + b"\n[\n  1\n]\n"  # lines 10-12: not an object
        b'{\n  "id": "no key"\n}\n'  # lines 13-15
        b'{\n  "fs_id": "last"\n}\n'  # lines 16-18
    )
    path = tmp_path / "mixed.json"
    path.write_bytes(data)
    rejects = tmp_path / "rejects"
    done = run("put", str(path), "--rejects", str(rejects))
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    assert done.stderr.splitlines()[:3] == [
        f"s3idx: {path}:6: invalid JSON: NaN and Infinity are not JSON numbers "
        "(at line 8, column 8)",
        f"s3idx: {path}:10: expected a JSON object, got an array",
        f"s3idx: {path}:13: missing key field 'fs_id'; every document needs its key; "
        "choose the key field with --key",
    ]
    assert rejects.read_bytes() == bad + b'\n[1]\n{"id":"no key"}\n'
    assert run("query", "--fields", "fs_id").stdout.splitlines() == [
        '{"fs_id":"a"}',
        '{"fs_id":"compact"}',
        '{"fs_id":"last"}',
    ]


def test_a_document_that_never_ends_is_one_reject_with_the_rest(run: Run, tmp_path: Path) -> None:
    data = b'{\n  "fs_id": "a"\n}\n{\n  "fs_id": "open",\n{"fs_id": "c"}\n'
    path = tmp_path / "open.json"
    path.write_bytes(data)
    rejects = tmp_path / "rejects"
    done = run("put", str(path), "--rejects", str(rejects))
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    assert done.stderr.splitlines()[0] == (
        f"s3idx: {path}:4: invalid JSON: the document starting at this line does not end "
        "(its '{' or '[' is never closed); nothing after this line was stored"
    )
    assert rejects.read_bytes() == b'{\n  "fs_id": "open",\n{"fs_id": "c"}\n'
    assert run("query", "--count").stdout == "1\n"


@pytest.mark.parametrize(
    "first_line",
    [
        b'{"fs_id": "cut", "v": [1, 2',  # a record cut short
        b'{"fs_id": "x", "v": NaN}',  # an error in the middle
        b"{",
    ],
)
def test_json_lines_with_a_broken_first_line_stay_json_lines(
    run: Run, tmp_path: Path, first_line: bytes
) -> None:
    path = tmp_path / "lines.jsonl"
    path.write_bytes(first_line + b'\n{"fs_id": "b"}\n{"fs_id": "c", "v": [3]}\n')
    done = run("put", str(path))
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    assert len(done.stderr.splitlines()) == 2  # the reject of line 1, the summary
    assert done.stderr.startswith(f"s3idx: {path}:1: invalid JSON: ")
    assert run("query", "--count").stdout == "2\n"


@pytest.mark.parametrize("indent", [2, 4, 0, "\t"], ids=["2", "4", "0", "tab"])
def test_a_first_document_holding_an_empty_object_is_one_document(
    run: Run, tmp_path: Path, indent: int | str
) -> None:
    """A pretty-printer puts an empty object (an array's element) on a line of its own: a line
    that is a JSON object by itself, which must not make the input JSON lines."""
    docs = [
        {"fs_id": "a", "m": [{}], "n": [{}, {"k": []}], "o": {"p": [[], {}]}},
        {"fs_id": "b", "m": [{}]},
    ]
    path = tmp_path / "docs.json"
    path.write_bytes(_pretty(docs, indent))
    done = run("put", str(path), "--json")
    assert done.exit_code == 0, done.stderr
    assert json_lines(done.stdout)[0]["stored"] == 2
    assert json_lines(run("get", "a", "b").stdout) == docs


def test_a_damaged_gzip_inside_a_document_rejects_it_from_its_first_line(
    run: Run, tmp_path: Path
) -> None:
    whole = gzip.compress(_pretty(DOCS))
    cut = whole[: len(whole) - 30]  # the last document's end and the trailer are gone
    path = tmp_path / "cut.json.gz"
    path.write_bytes(cut)
    done = run("put", str(path))
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    first_of_b = _pretty(DOCS[:1]).count(b"\n") + 1
    line = done.stderr.splitlines()[0]
    assert line.startswith(f"s3idx: {path}:{first_of_b}: the gzip data ")
    assert "into the document starting at this line; the lines before it were read" in line
    assert run("query", "--fields", "fs_id").stdout == '{"fs_id":"a"}\n'


def test_a_json_line_after_a_broken_first_line_decides_json_lines(run: Run, tmp_path: Path) -> None:
    """A stray closing line later on does not glue the lines before it into one document."""
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b'{"fs_id": "cut", "v": [1, 2\n{"fs_id": "b"}\n]}\n{"fs_id": "c"}\n')
    done = run("put", str(path))
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    assert [line.split(": ")[1] for line in done.stderr.splitlines()[:2]] == [
        f"{path}:1",
        f"{path}:3",
    ]
    assert run("query", "--fields", "fs_id").stdout == '{"fs_id":"b"}\n{"fs_id":"c"}\n'


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_a_pipe_after_a_broken_first_line_is_stored_as_it_comes(tmp_path: Path) -> None:
    put = subprocess.Popen(
        [sys.executable, "-m", "s3idx", "put"],
        env=subprocess_env(tmp_path),
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert put.stdin is not None
    try:
        put.stdin.write(b'{"fs_id": "cut", "v": [1, 2\n{"fs_id": "b"}\n')
        put.stdin.flush()
        deadline = time.monotonic() + 30  # bounds a failing run; nothing here measures speed
        while not list((tmp_path / "store" / "objects").glob("b~")):
            assert time.monotonic() < deadline, "the line after the broken one was held back"
            assert put.poll() is None
            time.sleep(0.2)
    finally:
        put.stdin.close()
        put.wait(timeout=60)
    assert put.returncode == ExitStatus.PARTIAL
