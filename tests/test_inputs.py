"""inputs: JSON lines, JSON arrays, gzip and stdin, with exact locations."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import Any

from s3idx.engine.inputs import (
    ReadProgress,
    Record,
    file_source,
    read_records,
    stream_source,
    total_size,
)


def _read(path: Path) -> list[Record]:
    return list(read_records([file_source(path)], ReadProgress()))


def test_json_lines_keep_line_numbers_and_raw_bytes(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a":1}\n\n  {"a": 2}  \r\nnot json\n{"a":3}')

    records = _read(path)

    assert [(r.line, r.document, r.error) for r in records[:2]] == [
        (1, {"a": 1}, None),
        (3, {"a": 2}, None),
    ]
    assert records[1].raw == b'{"a": 2}'
    bad = records[2]
    assert (bad.location, bad.raw) == (f"{path}:4", b"not json")
    assert bad.error == "invalid JSON: invalid literal, expected 'null' at column 1"
    assert (records[3].line, records[3].document) == (5, {"a": 3})


def test_utf8_bom_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a":1}\n{"a":2}\n')
    assert [r.document for r in _read(path)] == [{"a": 1}, {"a": 2}]


def test_invalid_utf8_is_a_rejected_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a":"\xff"}\n{"a":1}\n')
    first, second = _read(path)
    assert first.error == "invalid JSON: not valid UTF-8 text"
    assert second.document == {"a": 1}


def test_gzip_is_detected_by_content(tmp_path: Path) -> None:
    path = tmp_path / "in.data"
    path.write_bytes(gzip.compress(b'{"a":1}\n{"a":2}\n'))
    assert [r.document for r in _read(path)] == [{"a": 1}, {"a": 2}]


def test_json_array_elements_get_their_starting_line(tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_bytes(b'[\n  {"a": 1},\n  {"a": "x,]"},\n\n  {"a": [1,\n 2]}\n]\n')

    records = _read(path)

    assert [r.document for r in records] == [{"a": 1}, {"a": "x,]"}, {"a": [1, 2]}]
    assert [r.line for r in records] == [2, 3, 5]
    assert records[1].raw == b'{"a":"x,]"}'


def test_broken_json_array_is_one_rejected_record(tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_bytes(b'[{"a": 1},\n{"a": }]')
    (record,) = _read(path)
    assert record.line == 2
    assert record.error is not None and record.error.startswith("invalid JSON array:")


def test_stdin_is_named_and_progress_counts_bytes() -> None:
    data = b'{"a":1}\n{"a":2}\n'
    progress = ReadProgress()
    records = list(read_records([stream_source(io.BytesIO(data))], progress))
    assert [r.location for r in records] == ["<stdin>:1", "<stdin>:2"]
    assert progress.bytes_read == len(data)


def test_share_read_follows_records_in_plain_input_and_bytes_in_gzip(tmp_path: Path) -> None:
    data = b'{"a":1}\n{"a":2}\n{"a":3}\n{"a":4}\n'
    path = tmp_path / "a.jsonl"
    path.write_bytes(data)
    progress = ReadProgress(bytes_total=len(data))
    assert progress.share_read() is None  # nothing read yet
    records = read_records([file_source(path)], progress)
    next(records)
    # The buffer has read it all, but one record of four was handed on.
    assert (progress.bytes_read, progress.share_read()) == (len(data), 0.25)
    list(records)
    assert progress.share_read() == 1.0

    gzipped = ReadProgress(bytes_total=200, bytes_read=50, records=1, compressed=True)
    assert gzipped.share_read() == 0.25
    assert ReadProgress(bytes_total=None, records=3).share_read() is None  # stdin


def test_total_size_is_unknown_with_stdin(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"12345")
    assert total_size([file_source(path)]) == 5
    assert total_size([file_source(path), stream_source(io.BytesIO())]) is None


def test_total_size_is_unknown_with_a_named_pipe(tmp_path: Path) -> None:
    """A pipe's size is 0 whatever it will give: progress must not take it for the total."""
    path, pipe = tmp_path / "a.jsonl", tmp_path / "more.pipe"
    path.write_bytes(b"12345")
    os.mkfifo(pipe)
    assert total_size([file_source(path), file_source(pipe)]) is None


# --- JSON lines or one array: a JSON-lines file is never swallowed as an array ---------------


def _summary(records: list[Record]) -> list[tuple[int, Any, str | None]]:
    return [(r.line, r.document, r.error) for r in records]


def test_first_line_an_array_then_documents_is_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'[1,2]\n{"a":1}\n{"a":2}\n')
    assert _summary(_read(path)) == [(1, [1, 2], None), (2, {"a": 1}, None), (3, {"a": 2}, None)]


def test_one_line_array_alone_is_an_array_file(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_bytes(b'\n[{"a":1},{"a":2}]\r\n\n')
    assert _summary(_read(path)) == [(2, {"a": 1}, None), (2, {"a": 2}, None)]


def test_pretty_printed_array_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "pretty.json"
    path.write_bytes(b'\xef\xbb\xbf\r\n[\r\n  {"a": 1},\r\n  {"a": 2}\r\n]\r\n')
    assert _summary(_read(path)) == [(3, {"a": 1}, None), (4, {"a": 2}, None)]


def test_broken_array_is_rejected_at_the_line_of_the_error_with_its_text(
    tmp_path: Path,
) -> None:
    data = b'[\n  {"a": 1},\n  {"a": 2},\n  {"a": oops},\n  {"a": 4}\n]\n'
    path = tmp_path / "broken.json"
    path.write_bytes(data)
    (record,) = _read(path)
    assert record.location == f"{path}:4"
    assert record.error is not None
    assert record.error.startswith("invalid JSON array: ")
    assert record.error.endswith("; nothing in this array was stored")
    assert record.raw == data.rstrip(b"\n")  # written to --rejects whole, to fix and feed back


def test_unfinished_array_on_line_one_then_documents_is_json_lines(tmp_path: Path) -> None:
    # The first line is broken JSON that happens to start with '['; every later line is a
    # document by itself, so they are JSON lines and only line 1 is rejected.
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'[1, 2\n{"a":1}\n\n{"a":2}\n')
    records = _read(path)
    assert [(r.line, r.document) for r in records] == [(1, None), (2, {"a": 1}), (4, {"a": 2})]
    assert records[0].error is not None and records[0].error.startswith("invalid JSON: ")
    assert records[0].raw == b"[1, 2"


def test_array_detection_in_gzip_and_stdin(tmp_path: Path) -> None:
    data = b'[1,2]\n{"a":1}\n'
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress(data))
    assert [r.document for r in _read(path)] == [[1, 2], {"a": 1}]
    from_stdin = list(read_records([stream_source(io.BytesIO(data))], ReadProgress()))
    assert [r.location for r in from_stdin] == ["<stdin>:1", "<stdin>:2"]
    arrays = list(read_records([stream_source(io.BytesIO(b'[{"a":1},\n{"a":2}]'))], ReadProgress()))
    assert [(r.line, r.document) for r in arrays] == [(1, {"a": 1}), (2, {"a": 2})]
