"""codec: tagged JSON, bodies, keys and metadata."""

from __future__ import annotations

import hashlib
import sys
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3idx import codec
from s3idx.errors import (
    CorruptObjectError,
    DamagedObjectError,
    InvalidKeyError,
    MetadataTooLargeError,
    NotAnS3idxObjectError,
    UsageError,
)

# --- values ----------------------------------------------------------------------------------

datetimes = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
).map(codec.normalize_datetime)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | datetimes
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text().filter(lambda k: k != "$date"), inner, max_size=4)
    ),
    max_leaves=20,
)


def _typed(value: object) -> object:
    """The value with its types spelled out, so 1 == 1.0 == True cannot pass for equal."""
    if isinstance(value, dict):
        return ("dict", [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


@given(values)
def test_dumps_loads_round_trips_every_type(value: object) -> None:
    assert _typed(codec.loads(codec.dumps(value))) == _typed(value)


@given(values)
def test_ascii_json_is_ascii_and_round_trips(value: object) -> None:
    text = codec.ascii_json(value)
    assert text.isascii()
    assert all(0x20 <= ord(c) < 0x7F for c in text)
    assert _typed(codec.loads(text)) == _typed(value)


def test_ascii_json_escapes_astral_characters_as_surrogate_pairs() -> None:
    assert codec.ascii_json({"k": "é😀"}) == '{"k":"\\u00e9\\ud83d\\ude00"}'


def test_datetimes_are_tagged_utc_millisecond() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    assert codec.dumps({"t": when}) == b'{"t":{"$date":"2026-01-02T01:04:05.678Z"}}'


def test_naive_datetimes_are_taken_as_utc() -> None:
    assert codec.loads(codec.dumps(datetime(2020, 1, 1))) == datetime(2020, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("2020-01-01T00:00:00Z", datetime(2020, 1, 1, tzinfo=UTC)),
        ("2020-01-01T02:00:00+02:00", datetime(2020, 1, 1, tzinfo=UTC)),
        (1577836800000, datetime(2020, 1, 1, tzinfo=UTC)),
        ({"$numberLong": "1577836800000"}, datetime(2020, 1, 1, tzinfo=UTC)),
    ],
)
def test_date_tag_forms(tag: object, expected: datetime) -> None:
    assert codec.untag({"$date": tag}) == expected


@pytest.mark.parametrize("tag", ["yesterday", True, None, [1]])
def test_bad_date_tags_are_value_errors(tag: object) -> None:
    with pytest.raises(ValueError, match=r"\$date"):
        codec.untag({"$date": tag})


def test_nan_and_infinity_are_refused() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        codec.dumps({"x": [float("nan")]})


# --- bodies ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncodedBody:
    body: bytes
    sha256: str
    codec: str


def encode_document(document: Mapping[str, Any], codec_name: str) -> EncodedBody:
    raw = codec.dumps(document)
    return EncodedBody(
        codec.encode_raw(raw, codec_name), hashlib.sha256(raw).hexdigest(), codec_name
    )


def decode_body(body: bytes, codec_name: str) -> bytes:
    """The uncompressed JSON bytes of a stored body; DamagedObjectError if it is not the codec."""
    return b"".join(codec.iter_decoded([body], codec_name))


def test_zlib_body_round_trips_and_hashes_the_uncompressed_json() -> None:
    encoded = encode_document({"a": 1}, "json+zlib")
    assert zlib.decompress(encoded.body) == b'{"a":1}'
    assert encoded.sha256 == "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    assert decode_body(encoded.body, "json+zlib") == b'{"a":1}'


@given(st.binary(min_size=1, max_size=3000), st.sampled_from(["json+zlib", "json+zstd"]))
def test_a_body_encoded_otherwise_is_other_bytes_of_the_same_document(
    raw: bytes, codec_name: str
) -> None:
    """What a put stores when its usual bytes would carry a stalled delete's ETag. (No body
    is empty: a document's JSON is at least ``{}``.)"""
    if codec_name == "json+zstd":
        pytest.importorskip("zstandard", reason="zstandard is not installed")
    other = codec.encode_raw_otherwise(raw, codec_name)
    assert other is not None and other != codec.encode_raw(raw, codec_name)
    assert decode_body(other, codec_name) == raw


def test_a_body_stored_as_it_is_has_no_other_encoding() -> None:
    assert codec.encode_raw_otherwise(b'{"a":1}', "json") is None


def test_iter_decoded_streams_chunks() -> None:
    raw = b'{"x":"' + b"y" * 200_000 + b'"}'
    body = zlib.compress(raw)
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    assert b"".join(codec.iter_decoded(chunks, "json+zlib")) == raw


def test_corrupt_body_is_a_clear_error() -> None:
    with pytest.raises(DamagedObjectError, match="cannot be decompressed as json\\+zlib"):
        decode_body(b"not zlib", "json+zlib")


def test_zstd_body_round_trips_whole_and_streamed() -> None:
    zstandard = pytest.importorskip("zstandard", reason="zstandard is not installed")
    raw = b'{"x":"' + b"y" * 200_000 + b'"}'
    body = codec.encode_raw(raw, "json+zstd")
    assert zstandard.ZstdDecompressor().decompress(body) == raw  # a standard zstd frame
    assert decode_body(body, "json+zstd") == raw
    chunks = [body[i : i + 100] for i in range(0, len(body), 100)]
    assert b"".join(codec.iter_decoded(chunks, "json+zstd")) == raw
    assert codec.CODEC_BY_COMPRESSION["zstd"] == "json+zstd"


@pytest.mark.parametrize("damage", [lambda b: b"not zstd at all", lambda b: b[: len(b) // 2]])
def test_corrupt_or_truncated_zstd_body_is_a_clear_error(damage: Any) -> None:
    pytest.importorskip("zstandard", reason="zstandard is not installed")
    body = damage(codec.encode_raw(b'{"a":"' + b"b" * 5000 + b'"}', "json+zstd"))
    with pytest.raises(DamagedObjectError, match=r"cannot be decompressed|cut short"):
        decode_body(body, "json+zstd")


CODECS = ["json", "json+zlib", "json+zstd"]
RAW = b'{"x":"' + b"y" * 300_000 + b'"}'


@pytest.mark.parametrize("name", ["json+zlib", "json+zstd"])
@pytest.mark.parametrize("cut", [1, 10, 0.5])
def test_a_compressed_body_cut_short_is_damage_however_it_is_fed(name: str, cut: float) -> None:
    pytest.importorskip("zstandard", reason="zstandard is not installed")
    body = codec.encode_raw(RAW, name)
    body = body[: int(len(body) * cut)] if cut < 1 else body[: -int(cut)]
    for size in (len(body), 7, 4096):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        with pytest.raises(DamagedObjectError, match="cut short"):
            b"".join(codec.iter_decoded(chunks, name))


# zstd's skippable frame (magic 0x184D2A50..5F, a length, that many bytes): decoders pass over it.
SKIPPABLE_FRAME = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"note"

TAILS: dict[str, Callable[[str], bytes]] = {
    "a byte": lambda name: b"x",
    "zeros": lambda name: b"\x00" * 5000,
    # What a decoder reads on without complaint: a stream or frame with nothing in it, a frame
    # it is told to skip, another whole document.
    "an empty stream": lambda name: codec.encode_raw(b"", name),
    "an empty stream, otherwise encoded": lambda name: codec.encode_raw_otherwise(b"", name) or b"",
    "a skippable frame": lambda name: SKIPPABLE_FRAME,
    "another document": lambda name: codec.encode_raw(b'{"x": 1}', name),
}


@pytest.mark.parametrize("name", ["json+zlib", "json+zstd"])
@pytest.mark.parametrize("tail", TAILS, ids=list(TAILS))
@pytest.mark.parametrize("checked", [False, True], ids=["plain", "otherwise"])
def test_bytes_after_the_compressed_stream_are_damage(name: str, tail: str, checked: bool) -> None:
    pytest.importorskip("zstandard", reason="zstandard is not installed")
    encode = codec.encode_raw_otherwise if checked else codec.encode_raw
    body = (encode(RAW, name) or b"") + TAILS[tail](name)
    for size in (len(body), 1, 7, 4096):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        with pytest.raises(DamagedObjectError, match="bytes after the end"):
            b"".join(codec.iter_decoded(chunks, name))


@pytest.mark.parametrize("name", ["json+zlib", "json+zstd"])
@pytest.mark.parametrize("head", ["an empty stream", "a skippable frame"])
def test_a_stream_before_the_document_is_damage(name: str, head: str) -> None:
    pytest.importorskip("zstandard", reason="zstandard is not installed")
    body = TAILS[head](name) + codec.encode_raw(RAW, name)
    for size in (len(body), 1, 4096):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        with pytest.raises(DamagedObjectError, match=r"bytes after the end|cannot be decompressed"):
            b"".join(codec.iter_decoded(chunks, name))


@pytest.mark.parametrize("recorded", CODECS)
@pytest.mark.parametrize("actual", CODECS)
def test_a_codec_that_does_not_match_the_body_is_named(recorded: str, actual: str) -> None:
    pytest.importorskip("zstandard", reason="zstandard is not installed")
    body = codec.encode_raw(RAW, actual)
    if recorded == actual:
        assert decode_body(body, recorded) == RAW
        return
    with pytest.raises(DamagedObjectError) as excinfo:
        decode_body(body, recorded)
    assert excinfo.value.message == f"metadata says codec {recorded!r} but the body is {actual}"


@pytest.mark.parametrize("name", ["json+zlib", "json+zstd"])
def test_decoding_holds_a_bounded_piece_of_a_highly_compressed_body(name: str) -> None:
    pytest.importorskip("zstandard", reason="zstandard is not installed")
    raw = b'{"x":"' + b"0" * (64 << 20) + b'"}'
    body = codec.encode_raw(raw, name)
    largest = total = 0
    for piece in codec.iter_decoded([body], name):
        largest = max(largest, len(piece))
        total += len(piece)
    assert total == len(raw)
    assert largest <= 16 << 20  # a piece, not the whole 64 MiB document


def test_zstd_without_zstandard_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)
    codec._zstd.cache_clear()
    try:
        with pytest.raises(UsageError) as excinfo:
            codec.check_codec_available("json+zstd")
        assert "pip install 's3idx[zstd]'" in str(excinfo.value)
    finally:
        codec._zstd.cache_clear()
    codec.check_codec_available("json+zlib")  # needs nothing


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (12, "key field 'fs_id' must be a string, got a number"),
        (1.5, "key field 'fs_id' must be a string, got a number"),
        (True, "key field 'fs_id' must be a string, got a boolean"),
        (["a"], "key field 'fs_id' must be a string, got an array"),
        ({"a": 1}, "key field 'fs_id' must be a string, got an object"),
        (None, "key field 'fs_id' must be a string, got null"),
        ("", "key field 'fs_id' is empty"),
        ("a/../b", "key 'a/../b' has a '..' segment"),
        ("./a", "key './a' has a '.' segment"),
        ("/abs", "key '/abs' has an empty segment (a leading, trailing or double '/')"),
        ("a//b", "key 'a//b' has an empty segment (a leading, trailing or double '/')"),
        ("tab\there", "key contains a control character (U+0009)"),
        ("del\x7f", "key contains a control character (U+007F)"),
        ("c1\x85", "key contains a control character (U+0085)"),  # NEL: a line break
        ("c1\x80x\x9f", "key contains a control character (U+0080)"),
        ("x" * 1025, "key is 1025 bytes; the limit is 1024 bytes (UTF-8)"),
        (
            ".s3idx/x",
            "key '.s3idx/x' starts with '.s3idx/', which is reserved for s3idx's own objects "
            "(manifests)",
        ),
        (
            ".s3idx/manifests/m.jsonl.gz",
            "key '.s3idx/manifests/m.jsonl.gz' starts with '.s3idx/', which is reserved for "
            "s3idx's own objects (manifests)",
        ),
    ],
)
def test_invalid_keys_say_why(key: object, message: str) -> None:
    with pytest.raises(InvalidKeyError) as excinfo:
        codec.check_key(key)
    assert excinfo.value.message == message


@pytest.mark.parametrize(
    "key", ["a", "a/b/c", "é 日本", "..a", "a.", "x" * 1024, ".s3idx", ".s3idxx/a", "a/.s3idx/b"]
)
def test_valid_keys_pass(key: str) -> None:
    assert codec.check_key(key) == key


def test_a_reserved_key_is_refused_with_a_hint() -> None:
    with pytest.raises(InvalidKeyError) as excinfo:
        codec.check_key(".s3idx/x")
    assert excinfo.value.hint == "choose another key"


# --- metadata --------------------------------------------------------------------------------


def test_metadata_round_trips_the_entry_with_types() -> None:
    entry = {
        "fs_id": "a",
        "n": 1,
        "f": 1.0,
        "b": True,
        "z": None,
        "l": [1, "x"],
        "d": {"é": "ü"},
        "last_updated": datetime(2026, 1, 1, tzinfo=UTC),
    }
    fields = ["n", "f", "b", "z", "l", "d"]
    metadata = codec.build_metadata(entry, "fs_id", fields, "json+zlib", "ab" * 32)
    assert set(metadata) == {
        "s3idx-format",
        "s3idx-codec",
        "s3idx-sha256",
        "s3idx-key",
        "s3idx-fields",
        "s3idx-entry",
    }
    assert all(v.isascii() for v in metadata.values())
    parsed = codec.parse_metadata({k.upper(): v for k, v in metadata.items()})
    assert parsed.key_field == "fs_id"
    assert parsed.fields == tuple(fields)
    assert parsed.codec == "json+zlib"
    assert parsed.sha256 == "ab" * 32
    assert _typed(parsed.entry) == _typed(entry)


def test_metadata_size_is_names_plus_values_in_utf8() -> None:
    assert codec.metadata_size({"ab": "cde", "f": "é"}) == 2 + 3 + 1 + 2


def test_too_large_entry_names_key_size_and_largest_fields() -> None:
    entry = {"fs_id": "k1", "big": "x" * 1500, "mid": "y" * 600, "small": 1}
    metadata = codec.build_metadata(entry, "fs_id", ["big", "mid", "small"], "json", "0" * 64)
    with pytest.raises(MetadataTooLargeError) as excinfo:
        codec.check_metadata_size(metadata, "k1", entry)
    size = codec.metadata_size(metadata)
    assert excinfo.value.message == (
        f"index entry of 'k1' needs {size} bytes of metadata; the limit is 2048 bytes; "
        "largest fields: big (1502 bytes), mid (602 bytes), fs_id (4 bytes)"
    )


def test_objects_without_s3idx_metadata_are_recognised() -> None:
    with pytest.raises(NotAnS3idxObjectError):
        codec.parse_metadata({"other": "x"})


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"s3idx-format": "9"}, "unsupported s3idx format version '9'"),
        (
            {"s3idx-format": "1"},
            "s3idx metadata lacks s3idx-codec, s3idx-key, s3idx-entry, s3idx-sha256",
        ),
        (
            {
                "s3idx-format": "1",
                "s3idx-codec": "json",
                "s3idx-key": "k",
                "s3idx-entry": '{"k": 1}',
            },
            "s3idx metadata lacks s3idx-sha256",
        ),
        (
            {"s3idx-format": "1", "s3idx-codec": "json", "s3idx-key": "k", "s3idx-entry": "{"}
            | {"s3idx-sha256": "0" * 64},
            "s3idx-entry is not valid JSON",
        ),
        (
            {"s3idx-format": "1", "s3idx-codec": "json", "s3idx-key": "k", "s3idx-entry": "{}"}
            | {"s3idx-sha256": "0" * 64},
            "s3idx-entry lacks the key field 'k'",
        ),
    ],
)
def test_damaged_metadata_is_a_clear_error(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(CorruptObjectError) as excinfo:
        codec.parse_metadata(metadata)
    assert excinfo.value.message.startswith(message)
