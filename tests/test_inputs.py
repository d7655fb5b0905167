"""inputs: JSON lines, JSON arrays, gzip and stdin, with exact locations."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

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


def test_total_size_is_unknown_with_stdin(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"12345")
    assert total_size([file_source(path)]) == 5
    assert total_size([file_source(path), stream_source(io.BytesIO())]) is None
