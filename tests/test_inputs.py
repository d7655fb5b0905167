"""inputs: JSON lines, JSON arrays, gzip and stdin, with exact locations."""

from __future__ import annotations

import gzip
import io
import os
import threading
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

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
    assert (bad.location, bad.raw) == (f"{path}:4", b"not json\n")  # as read, its line end included
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
    assert record.raw == data  # written to --rejects whole, to fix and feed back


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


# --- damaged gzip: every line that decompresses before the damage, then one reject ------------


def _lines(count: int, start: int = 0) -> bytes:
    return b"".join(
        b'{"fs_id":"k%d","n":%d,"pad":"%s"}\n' % (i, i, b"x" * 200)
        for i in range(start, start + count)
    )


def _readable(damaged: bytes) -> bytes:
    """What a gzip reader gets from ``damaged`` before the damage, member after member: zlib
    fed 4 KiB at a time, and the 4 KiB that fail byte by byte (a failing call hands on
    nothing)."""
    out, rest = [], damaged
    while rest:
        inflate = zlib.decompressobj(31)
        while rest and not inflate.eof:
            chunk, rest = rest[:4096], rest[4096:]
            before = inflate.copy()
            try:
                out.append(inflate.decompress(chunk))
            except zlib.error:
                for i in range(len(chunk)):
                    try:
                        out.append(before.decompress(chunk[i : i + 1]))
                    except zlib.error:
                        return b"".join(out)
        rest = (inflate.unused_data + rest).lstrip(b"\0")
    return b"".join(out)


def _assert_cut_at(records: list[Record], readable: bytes, name: str, damage: str) -> None:
    """The whole lines of ``readable`` are records; then one reject where the data stops,
    holding the partial line's bytes (none when the data stopped at a line boundary)."""
    whole, partial = readable[: readable.rfind(b"\n") + 1], readable[readable.rfind(b"\n") + 1 :]
    expected = whole.splitlines()
    *stored, cut = records
    assert [r.raw for r in stored] == expected
    assert (cut.location, cut.raw, cut.document) == (f"{name}:{len(expected) + 1}", partial, None)
    where = f"{len(partial)} bytes into this line" if partial else "before any byte of this line"
    assert cut.error == f"the gzip data {damage}, {where}; the lines before it were read"


_TRUNCATED = "ends early (the file is truncated)"


def test_a_gzip_cut_in_its_trailer_gives_every_line_then_one_reject(tmp_path: Path) -> None:
    data = _lines(2000)  # 450 KB: all of it used to be lost with the read that failed
    path = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress(data)
    path.write_bytes(whole[:-4])
    records = _read(path)
    assert len(records) == 2001
    _assert_cut_at(records, data, str(path), _TRUNCATED)


@pytest.mark.parametrize("share", [3, 37, 50, 81, 99])
def test_a_gzip_cut_mid_stream_gives_every_line_a_gzip_reader_gets(
    tmp_path: Path, share: int
) -> None:
    whole = gzip.compress(_lines(20000), compresslevel=1)  # over 4 MB decompressed
    damaged = whole[: len(whole) * share // 100]
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(damaged)
    readable = _readable(damaged)
    assert readable == zlib.decompressobj(31).decompress(damaged)  # the oracle agrees with zlib
    _assert_cut_at(_read(path), readable, str(path), _TRUNCATED)


def test_a_gzip_cut_at_a_line_boundary_is_a_reject_at_the_next_line_holding_nothing(
    tmp_path: Path,
) -> None:
    data = _lines(300)
    inflate = zlib.compressobj(6, zlib.DEFLATED, 31)
    synced = inflate.compress(data) + inflate.flush(zlib.Z_SYNC_FLUSH)  # every byte of data out
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(synced)
    records = _read(path)
    assert (records[-1].line, records[-1].raw) == (301, b"")
    _assert_cut_at(records, data, str(path), _TRUNCATED)


def test_a_gzip_with_a_bad_crc_gives_every_line_then_one_reject(tmp_path: Path) -> None:
    data = _lines(2000) + b'{"fs_id":"last","n":1}'  # no newline: the last line is partial
    whole = bytearray(gzip.compress(data))
    whole[-8] ^= 0xFF  # the CRC-32
    path = tmp_path / "crc.jsonl.gz"
    path.write_bytes(bytes(whole))
    records = _read(path)
    _assert_cut_at(
        records, data, str(path), "is damaged (its CRC-32 checksum does not match the data)"
    )
    assert records[-1].raw == b'{"fs_id":"last","n":1}'


def test_a_gzip_with_a_wrong_length_gives_every_line_then_one_reject(tmp_path: Path) -> None:
    data = _lines(50)
    whole = bytearray(gzip.compress(data))
    whole[-1] ^= 0x01  # the length
    path = tmp_path / "length.jsonl.gz"
    path.write_bytes(bytes(whole))
    damage = "is damaged (its length field does not match the data)"
    _assert_cut_at(_read(path), data, str(path), damage)


def test_a_gzip_with_a_corrupt_block_gives_every_line_before_it(tmp_path: Path) -> None:
    damaged = bytearray(gzip.compress(_lines(20000), compresslevel=1))
    middle = len(damaged) // 2
    damaged[middle : middle + 32] = b"\xff" * 32  # fails inflating there, not at the CRC
    path = tmp_path / "corrupt.jsonl.gz"
    path.write_bytes(damaged)
    readable = _readable(bytes(damaged))
    assert len(readable) > 2_000_000
    damage = "is damaged (corrupt compressed data: invalid block type)"
    _assert_cut_at(_read(path), readable, str(path), damage)


def test_concatenated_gzip_members_are_one_input_and_damage_in_a_later_one_is_found(
    tmp_path: Path,
) -> None:
    first, second = _lines(1000), _lines(1000, start=1000)
    # A line split over two members, and zero padding between members, as gzip allows.
    members = gzip.compress(first + second[:100]) + b"\0" * 10 + gzip.compress(second[100:])
    path = tmp_path / "members.jsonl.gz"
    path.write_bytes(members)
    assert [r.document["n"] for r in _read(path)] == list(range(2000))

    path.write_bytes(members[:-2000])
    _assert_cut_at(_read(path), _readable(members[:-2000]), str(path), _TRUNCATED)

    path.write_bytes(members + b"not gzip")
    damage = "is damaged (what follows a gzip member is not gzip)"
    _assert_cut_at(_read(path), first + second, str(path), damage)


def test_a_damaged_gzip_on_stdin_gives_every_line_then_one_reject() -> None:
    data = _lines(3000)
    damaged = gzip.compress(data)[:-4]
    records = list(read_records([stream_source(io.BytesIO(damaged))], ReadProgress()))
    _assert_cut_at(records, data, "<stdin>", _TRUNCATED)


def test_a_damaged_gzip_json_array_gives_every_element_before_the_damage(tmp_path: Path) -> None:
    elements = [{"fs_id": f"k{i}", "pad": "x" * 200} for i in range(3000)]
    data = b"[\n" + b",\n".join(orjson.dumps(e) for e in elements) + b"\n]\n"
    whole = gzip.compress(data)
    path = tmp_path / "array.json.gz"

    path.write_bytes(whole[:-4])  # every element read; the reject after the closing line
    *stored, cut = _read(path)
    assert [r.document for r in stored] == elements
    assert [r.line for r in stored] == list(range(2, 3002))
    assert (cut.line, cut.raw) == (3003, b"")

    cut_data = whole[: len(whole) // 2]
    readable = _readable(cut_data)
    path.write_bytes(cut_data)
    *stored, cut = _read(path)
    lines_read = readable.count(b"\n")
    # Each element is a line of its own (with a comma): those on whole lines are stored.
    assert [r.document for r in stored] == elements[: lines_read - 1]
    partial = readable[readable.rfind(b"\n") + 1 :]
    assert (cut.line, cut.raw) == (lines_read + 1, partial)
    assert cut.error == (
        f"the gzip data {_TRUNCATED}, {len(partial)} bytes into this line; "
        "the lines before it were read"
    )


def test_a_damaged_gzip_does_not_hide_an_error_in_its_array(tmp_path: Path) -> None:
    path = tmp_path / "broken.json.gz"
    path.write_bytes(gzip.compress(b'[{"a":1},\n{"a":2},{"a":3\n,{"a":4}]\n')[:-4])
    broken, cut = _read(path)
    assert (broken.line, broken.document) == (3, None)
    assert broken.error is not None and broken.error.startswith("invalid JSON array: ")
    assert (cut.line, cut.raw) == (4, b"")
    assert cut.error is not None and cut.error.startswith(f"the gzip data {_TRUNCATED}, ")


def test_a_damaged_gzip_after_a_one_line_array_keeps_its_elements(tmp_path: Path) -> None:
    path = tmp_path / "one.json.gz"
    path.write_bytes(gzip.compress(b'[{"a":1},{"a":2}]\n')[:-4])
    records = _read(path)
    assert _summary(records)[:2] == [(1, {"a": 1}, None), (1, {"a": 2}, None)]
    assert (records[2].line, records[2].raw) == (2, b"")


def test_a_damaged_gzip_in_its_first_line_is_one_reject_at_line_1(tmp_path: Path) -> None:
    path = tmp_path / "short.jsonl.gz"
    whole = gzip.compress(b'{"a": 1, "b": [' + b",".join(b"%d" % i for i in range(5000)) + b"]}\n")
    path.write_bytes(whole[: len(whole) // 2])
    (record,) = _read(path)
    assert record.line == 1 and record.raw.startswith(b'{"a": 1, "b": [0,1,2,')
    assert record.error is not None and record.error.startswith(f"the gzip data {_TRUNCATED}, ")


def test_a_gzip_pipe_left_at_a_stop_is_not_reported_as_damaged() -> None:
    read_end, write_end = os.pipe()
    whole = gzip.compress(_lines(200))
    os.write(write_end, whole[: len(whole) // 2])  # the producer has more to write
    closing = threading.Lock()

    def producer_ends() -> None:
        if closing.acquire(blocking=False):
            os.close(write_end)

    # A reader that does not heed the stop waits for the producer, which gives up in a while.
    giving_up = threading.Timer(5, producer_ends)
    giving_up.start()
    stop = threading.Event()
    with open(read_end, "rb", buffering=0) as pipe:
        records = read_records([stream_source(pipe)], ReadProgress(), stop)
        assert next(records).document == {"fs_id": "k0", "n": 0, "pad": "x" * 200}
        stop.set()
        rest = list(records)
    giving_up.cancel()
    producer_ends()
    assert rest and not [r.error for r in rest if r.error and "gzip" in r.error]
