"""Pure functions: document <-> bytes, index entry <-> object metadata, key rules.

Datetimes travel as ``{"$date": "YYYY-MM-DDTHH:MM:SS.mmmZ"}`` (MongoDB relaxed Extended JSON),
so a value that went in as a datetime comes back as one from the body, the metadata and the index.
Datetimes are UTC and millisecond precision, the precision MongoDB stores.
"""

from __future__ import annotations

import functools
import io
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from s3idx.errors import (
    DamagedObjectError,
    InvalidKeyError,
    MetadataTooLargeError,
    NotAnS3idxObjectError,
    UndecodableMetadataError,
    UsageError,
    quote_key,
)
from s3idx.frozen import Frozen, init_field

if TYPE_CHECKING:
    import zstandard  # optional at run time (the zstd extra); imported when first needed

FORMAT_VERSION = "1"
META_FORMAT = "s3idx-format"
META_CODEC = "s3idx-codec"
META_SHA256 = "s3idx-sha256"
META_KEY = "s3idx-key"
META_ENTRY = "s3idx-entry"
META_FIELDS = "s3idx-fields"

MAX_METADATA_BYTES = 2048
MAX_KEY_BYTES = 1024
# Keys under this prefix (after the store's own prefix) are s3idx's own objects (manifests),
# never documents: a document key may not start with it, and listings of documents skip it.
RESERVED_PREFIX = ".s3idx/"

RESERVED_FIELD = "_s3idx"
LAST_UPDATED = "last_updated"
# Every field's path is written twice into each object's 2 KB of metadata (the field list and
# the entry), so a longer one leaves too little room for values.
MAX_FIELD_PATH_CHARS = 256
KEY_FIELD_RULE = (
    "a key field is a top-level field name whose value, a string, names each document: not "
    f"empty, without '.' or control characters, not starting with '$', at most "
    f"{MAX_FIELD_PATH_CHARS} characters, and neither {RESERVED_FIELD} nor {LAST_UPDATED}"
)

CODEC_BY_COMPRESSION = {"zlib": "json+zlib", "none": "json", "zstd": "json+zstd"}
# Level 1 costs 12% less CPU than 6 on ~2 KB documents but stores 1% more (bench_codec.py);
# neither matters beside a request, so the default stays zlib's own.
ZLIB_LEVEL = 6
# zstd 1 compresses a ~2 KB document in a quarter of zlib 6's CPU, decompresses in under half,
# and stores slightly less (bench_codec.py); higher levels cost more and store no less here.
ZSTD_LEVEL = 1
ZSTD_HINT = "zstd needs the zstandard package: pip install 's3idx[zstd]'"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ORJSON_OPTS = orjson.OPT_PASSTHROUGH_DATETIME


# --- datetimes -------------------------------------------------------------------------------


def normalize_datetime(value: datetime) -> datetime:
    """UTC, millisecond precision; naive datetimes are taken as UTC."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


_last_now: datetime = _EPOCH


def utc_now() -> datetime:
    """Now, in UTC at millisecond precision; the same object within one millisecond.

    ``put`` stamps every document: reusing the object lets ``format_datetime`` answer from
    its one-entry cache instead of formatting the same instant again.
    """
    global _last_now
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    if now == _last_now:
        return _last_now
    _last_now = now
    return now


_last_formatted: tuple[datetime | None, str] = (None, "")


def format_datetime(value: datetime) -> str:
    global _last_formatted
    last, text = _last_formatted
    if value is last:
        return text
    text = _format_datetime(value)
    _last_formatted = (value, text)
    return text


def _format_datetime(value: datetime) -> str:
    v = normalize_datetime(value)
    # strftime("%Y") does not pad years before 1000 on every platform.
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        f".{v.microsecond // 1000:03d}Z"
    )


def parse_date_tag(raw: Any) -> datetime:
    """The value of a ``$date`` tag: an ISO-8601 string or milliseconds since the epoch."""
    if isinstance(raw, Mapping) and set(raw) == {"$numberLong"}:
        raw = raw["$numberLong"]
        try:
            raw = int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"invalid $numberLong in $date: {raw!r}") from None
    if isinstance(raw, bool):
        raise ValueError(f"invalid $date value: {raw!r}")
    if isinstance(raw, int):
        try:
            return _EPOCH + timedelta(milliseconds=raw)
        except OverflowError:
            raise ValueError(f"$date out of range: {raw}") from None
    if isinstance(raw, str):
        text = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
        try:
            return normalize_datetime(datetime.fromisoformat(text))
        except ValueError:
            raise ValueError(f"invalid $date value: {raw!r} (expected ISO-8601)") from None
    raise ValueError(f"invalid $date value: {raw!r}")


def is_date_tag(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "$date" in value


# --- tagged JSON -----------------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$date": format_datetime(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """Compact JSON; datetimes become ``{"$date": ...}``; NaN and Infinity are refused."""
    _refuse_non_finite(value)
    return orjson.dumps(value, default=_default, option=_ORJSON_OPTS)


def _refuse_non_finite(value: Any) -> None:
    # orjson writes NaN as null, which would silently change the value.
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value} is not valid JSON (NaN and Infinity are not JSON numbers)")
    elif isinstance(value, dict):
        for item in value.values():
            _refuse_non_finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_non_finite(item)


def loads(data: bytes | str) -> Any:
    """Parse tagged JSON: ``{"$date": ...}`` objects come back as datetimes."""
    return untag(orjson.loads(data))


def untag(value: Any) -> Any:
    """Turn ``{"$date": ...}`` tags inside a parsed JSON value into datetimes (UTC, ms)."""
    if isinstance(value, datetime):
        return normalize_datetime(value)
    if isinstance(value, dict):
        if is_date_tag(value):
            return parse_date_tag(value["$date"])
        return {k: untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untag(v) for v in value]
    return value


def canonical(value: Any) -> bytes:
    """Tagged JSON with sorted keys: equal bytes iff equal values of equal types."""
    return orjson.dumps(value, default=_default, option=_ORJSON_OPTS | orjson.OPT_SORT_KEYS)


_NON_ASCII = re.compile(r"[^\x20-\x7e]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def ascii_json(value: Any) -> str:
    """Compact tagged JSON with every non-ASCII or control character escaped as ``\\uXXXX``."""
    text = dumps(value).decode()
    if text.isascii() and "\x7f" not in text:
        return text
    return _NON_ASCII.sub(_escape_char, text)


# --- bodies ----------------------------------------------------------------------------------


def encode_raw(raw: bytes, codec: str) -> bytes:
    """The stored body for uncompressed JSON bytes."""
    if codec == "json+zlib":
        return zlib.compress(raw, ZLIB_LEVEL)
    if codec == "json+zstd":
        return _zstd().compressor().compress(raw)
    if codec == "json":
        return raw
    raise ValueError(f"unknown codec {codec!r}")


def encode_raw_otherwise(raw: bytes, codec: str) -> bytes | None:
    """Other bytes than ``encode_raw``'s that decode to the same ``raw`` (so another S3 ETag),
    or None for a codec that stores ``raw`` as it is. zlib: level 9, whose header says so
    (FLEVEL 3, not the default's 2); zstd: a frame with a content checksum, which its header
    says too."""
    if codec == "json+zlib":
        return zlib.compress(raw, 9)
    if codec == "json+zstd":
        return _zstd().checksummed_compressor().compress(raw)
    if codec == "json":
        return None
    raise ValueError(f"unknown codec {codec!r}")


class _Zstd:
    """zstandard's (de)compressors, one per thread: they are not safe to share between threads."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self._local = threading.local()
        self.error: type[Exception] = module.ZstdError

    def compressor(self) -> zstandard.ZstdCompressor:
        found: zstandard.ZstdCompressor | None = getattr(self._local, "compressor", None)
        if found is None:
            # The frame records the content size, so a reader can size its buffer at once.
            found = self._module.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
            self._local.compressor = found
        return found

    def checksummed_compressor(self) -> zstandard.ZstdCompressor:
        made: zstandard.ZstdCompressor = self._module.ZstdCompressor(  # rare: not kept
            level=ZSTD_LEVEL, write_content_size=True, write_checksum=True
        )
        return made

    def decompressor(self) -> zstandard.ZstdDecompressor:
        found: zstandard.ZstdDecompressor | None = getattr(self._local, "decompressor", None)
        if found is None:
            found = self._module.ZstdDecompressor()
            self._local.decompressor = found
        return found


@functools.cache
def _zstd() -> _Zstd:
    try:
        import zstandard
    except ImportError:
        raise UsageError("this needs zstd compression", hint=ZSTD_HINT) from None
    return _Zstd(zstandard)


def check_codec_available(codec: str) -> None:
    """Raise UsageError if the codec needs a package that is not installed."""
    if codec == "json+zstd":
        _zstd()


# Bounds on what one step of decompression holds: a 2 KB zstd body can expand to 64 MiB.
DECODE_STEP = 1 << 20  # most uncompressed bytes one step returns
_ZSTD_READ = 64 << 10  # compressed bytes zstd pulls at a time
_ZLIB_MAGIC = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def iter_decoded(chunks: Iterable[bytes], codec: str) -> Iterator[bytes]:
    """A body's JSON bytes in pieces of at most ``DECODE_STEP``, however well it compressed.

    Raises DamagedObjectError for a body that is not what ``codec`` says: another encoding,
    not decompressible, cut short, or followed by bytes after its compressed stream.
    """
    if codec not in CODEC_BY_COMPRESSION.values():
        raise DamagedObjectError(f"unknown codec {codec!r}")
    chunks = _checked_start(iter(chunks), codec)
    if codec == "json":
        yield from chunks
    elif codec == "json+zlib":
        yield from _zlib_pieces(chunks)
    else:
        yield from _zstd_pieces(chunks)


def _checked_start(chunks: Iterator[bytes], codec: str) -> Iterator[bytes]:
    """The chunks, after checking that the first does not plainly hold another encoding."""
    for chunk in chunks:
        if chunk:
            _check_codec_matches(chunk, codec)
            yield chunk
            break
    yield from chunks


def _check_codec_matches(head: bytes, codec: str) -> None:
    looks = None
    if head[:2] in _ZLIB_MAGIC:
        looks = "json+zlib"
    elif head.startswith(_ZSTD_MAGIC):
        looks = "json+zstd"
    elif head.lstrip()[:1] == b"{":
        looks = "json"
    if looks is not None and looks != codec:
        raise DamagedObjectError(f"metadata says codec {codec!r} but the body is {looks}")


def _zlib_pieces(chunks: Iterator[bytes]) -> Iterator[bytes]:
    inflater = zlib.decompressobj()
    for chunk in chunks:
        data = chunk
        while data:
            if inflater.eof:
                raise DamagedObjectError(_TRAILING.format(codec="json+zlib"))
            try:
                out = inflater.decompress(data, DECODE_STEP)
            except zlib.error as exc:
                raise DamagedObjectError(_UNDECODABLE.format(codec="json+zlib", exc=exc)) from None
            if out:
                yield out
            data = inflater.unconsumed_tail or inflater.unused_data
    if not inflater.eof:
        raise DamagedObjectError(_CUT_SHORT.format(codec="json+zlib"))


def _zstd_pieces(chunks: Iterator[bytes]) -> Iterator[bytes]:
    # zstandard's decompressobj returns all it can in one call (a whole 64 MiB document for a
    # 2 KB body); its stream reader returns at most what is asked for.
    zstd = _zstd()
    source = _ChunkReader(chunks)
    expected = source.content_size()
    reader = zstd.decompressor().stream_reader(
        # zstandard's stubs ask for IO[bytes]; it calls only read(), which a RawIOBase has.
        source,  # type: ignore[arg-type]
        read_size=_ZSTD_READ,
        read_across_frames=False,
        closefd=False,
    )
    produced = 0
    try:
        while piece := reader.read(DECODE_STEP):
            produced += len(piece)
            if expected is not None and produced > expected:
                raise DamagedObjectError(_TRAILING.format(codec="json+zstd"))
            yield piece
    except zstd.error as exc:
        if expected is not None and produced >= expected:
            raise DamagedObjectError(_TRAILING.format(codec="json+zstd")) from None
        raise DamagedObjectError(_UNDECODABLE.format(codec="json+zstd", exc=exc)) from None
    if source.has_more():  # first: an empty frame followed by a document is not cut short
        raise DamagedObjectError(_TRAILING.format(codec="json+zstd"))
    if (expected is not None and produced < expected) or produced == 0:
        raise DamagedObjectError(_CUT_SHORT.format(codec="json+zstd"))


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (for zstandard's stream reader), that
    ends where the body's first zstd frame ends.

    zstandard's reader passes over what follows a frame without a word when it decodes to
    nothing (a skippable frame, an empty frame), so the frame's end is found here, from its
    header and block headers, and the reader never sees what follows: ``has_more`` then tells.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._offset = 0  # into _buffer: no copying a 1 MiB chunk for each small read
        self._allowed = 0  # bytes from _offset known to be the frame's, not handed out yet
        # The length of the unit (header, block, checksum; 0 past the frame) at a position in
        # _buffer, once _needs bytes of it are there.
        self._next_unit: Callable[[int], int] = self._frame_header_unit
        self._needs = _FRAME_HEADER_MAX
        self._checksum = False  # whether the frame ends in a 4-byte content checksum

    def readable(self) -> bool:
        return True

    def _fill(self, size: int) -> None:
        while len(self._buffer) - self._offset < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                return
            self._buffer = self._buffer[self._offset :] + chunk
            self._offset = 0

    def readinto(self, target: Any) -> int:
        if not self._allowed:
            self._allowed = self._units()
        self._fill(1)
        size = min(len(target), len(self._buffer) - self._offset, self._allowed)
        target[:size] = memoryview(self._buffer)[self._offset : self._offset + size]
        self._offset += size
        self._allowed -= size
        return size

    def _units(self) -> int:
        """The next unit's length, with those after it whose headers the buffer holds already
        (a body received whole is handed out in one read)."""
        self._fill(self._needs)
        total = 0
        while True:
            at = self._offset + total
            if total and len(self._buffer) - at < self._needs:
                return total
            length = self._next_unit(at)
            total += length
            if not length or total >= _UNBOUNDED:
                return total

    def _peek(self, size: int) -> bytes:
        self._fill(size)
        return self._buffer[self._offset : self._offset + size]

    def content_size(self) -> int | None:
        """The uncompressed size the zstd frame header records (s3idx always writes it)."""
        try:
            size = _zstd()._module.get_frame_parameters(self._peek(_FRAME_HEADER_MAX)).content_size
        except _zstd().error:
            return None
        return None if size == _zstd()._module.CONTENTSIZE_UNKNOWN else size

    def has_more(self) -> bool:
        return bool(self._peek(1))

    def _frame_header_unit(self, at: int) -> int:
        header = self._buffer[at : at + _FRAME_HEADER_MAX]
        try:
            size: int = _zstd()._module.frame_header_size(header)
        except _zstd().error:
            return _UNBOUNDED
        self._checksum = len(header) > 4 and bool(header[4] & 0x04)  # Content_Checksum_flag
        self._next_unit, self._needs = self._block_unit, 3
        return size

    def _block_unit(self, at: int) -> int:
        """A block: a 3-byte header (last-block bit, type, size), then its content."""
        header = self._buffer[at : at + 3]
        if len(header) < 3:
            return _UNBOUNDED  # cut short: the decoder says so
        value = int.from_bytes(header, "little")
        kind, size = (value >> 1) & 3, value >> 3
        if value & 1:
            self._next_unit = self._checksum_unit if self._checksum else self._frame_end
            self._needs = 0
        return 3 + (1 if kind == 1 else size)  # an RLE block holds one byte, repeated size times

    def _checksum_unit(self, at: int) -> int:
        self._next_unit = self._frame_end
        return 4

    def _frame_end(self, at: int) -> int:
        return 0


_FRAME_HEADER_MAX = 18
_UNBOUNDED = 1 << 62  # a unit whose length cannot be read: the rest, for the decoder to judge


_CUT_SHORT = "body is cut short: its {codec} stream does not end (the object was truncated)"
_TRAILING = "body has bytes after the end of its {codec} stream"
_UNDECODABLE = "body cannot be decompressed as {codec}: {exc}"


# --- keys ------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode Cc: C0, DEL and C1


def is_reserved_key(key: str) -> bool:
    """Whether a key (after the store's prefix) names one of s3idx's own objects."""
    return key.startswith(RESERVED_PREFIX)


def lists_reserved(prefix: str) -> bool:
    """Whether a listing under ``prefix`` yields reserved keys: only when asked for by name, so
    a listing of documents (``prefix=""`` or any document prefix) never sees a manifest."""
    return prefix.startswith(RESERVED_PREFIX)


def json_kind(value: Any) -> str:
    """What a value is, in JSON's words (``a number``, ``an array``), as messages say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def check_key(key: Any, key_field: str = "fs_id") -> str:
    """Return the key if it can name a document; otherwise raise InvalidKeyError saying why."""
    if not isinstance(key, str):
        raise InvalidKeyError(
            f"key field {key_field!r} must be a string, got {json_kind(key)}",
            hint="convert the key to a string in the input, or choose another --key",
        )
    if not key:
        raise InvalidKeyError(f"key field {key_field!r} is empty")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key is {size} bytes; the limit is {MAX_KEY_BYTES} bytes (UTF-8)")
    found = _CONTROL.search(key)
    if found:
        raise InvalidKeyError(f"key contains a control character (U+{ord(found.group()):04X})")
    segments = _segments_problem(key)
    if segments is not None:
        raise InvalidKeyError(f"key {quote_key(key)} has {segments}")
    if not _is_utf8(key):
        raise InvalidKeyError("key contains a lone surrogate (not valid UTF-8)")
    if is_reserved_key(key):
        raise InvalidKeyError(
            f"key {quote_key(key)} starts with {RESERVED_PREFIX!r}, which is reserved for "
            "s3idx's own objects (manifests)",
            hint="choose another key",
        )
    return key


def _segments_problem(path: str) -> str | None:
    """Why ``path`` (a key, or a store's prefix) cannot begin or be an object key, as S3
    clients agree on it: an empty, '.' or '..' segment (obstore refuses them; S3 keys are not
    paths, so nothing resolves them; on a local store they would climb out). None: it can."""
    for segment in path.split("/"):
        if segment in (".", ".."):
            return f"a {segment!r} segment"
        if not segment:
            return "an empty segment (a leading, trailing or double '/')"
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


PREFIX_RULE = (
    "a prefix begins every key, so it follows the rule for keys: no empty, '.' or '..' segment "
    "(S3 keys are not paths, and S3 clients do not agree on such keys), no control character, "
    f"and no {RESERVED_PREFIX.rstrip('/')!r} segment (s3idx's own objects); one '/' at its end "
    "is fine, as in s3://BUCKET/docs/"
)


def check_prefix(bucket: str, prefix: str, store: str | None = None) -> str:
    """The prefix of the S3 store ``s3://BUCKET/PREFIX`` as its keys begin (one '/' at its end
    dropped), or a UsageError naming the store (``store``, as given and fit to print) and why.

    The one rule for prefixes, wherever a store is named (a location, ``S3Store``): the key
    rule (``check_key``) for what every key begins with, and no ``.s3idx`` segment, under which
    the store whose prefix ends before it keeps its manifests (its sync would delete them).
    """
    if not prefix:
        return ""
    body = prefix[:-1] if prefix.endswith("/") else prefix
    problem = _prefix_problem(bucket, body)
    if problem is None:
        return body
    shown = store if store is not None else f"s3://{bucket}/{prefix}"
    raise UsageError(f"store {shown!r}: its prefix {prefix!r} {problem}", hint=PREFIX_RULE)


def _prefix_problem(bucket: str, body: str) -> str | None:
    found = _CONTROL.search(body)
    if found:
        return f"contains a control character (U+{ord(found.group()):04X})"
    segments = _segments_problem(body)
    if segments is not None:
        return f"has {segments}"
    if not _is_utf8(body):
        return "contains a lone surrogate (not valid UTF-8)"
    size = len(body.encode("utf-8"))
    if size + 2 > MAX_KEY_BYTES:  # the '/' after it and a key of one byte
        return (
            f"is {size} bytes (UTF-8): with the '/' after it, no key fits in S3's {MAX_KEY_BYTES}"
        )
    reserved = RESERVED_PREFIX.rstrip("/")
    parts = body.split("/")
    if reserved in parts:
        outer = "/".join(parts[: parts.index(reserved)])
        owner = f"s3://{bucket}/{outer}" if outer else f"s3://{bucket}"
        return (
            f"has a {reserved!r} segment: the store {owner} keeps its own objects (manifests) "
            "there, and its sync would delete this store's"
        )
    return None


def check_key_field(name: Any, given_as: str = "key field") -> str:
    """``name`` when documents can have it as their key field; else a UsageError naming
    ``given_as`` (``--key``, ``S3IDX_KEY``, …) and why. Checked before an index records it:
    a key field no document can have would refuse every later put."""
    reason = _key_field_problem(name)
    if reason is not None:
        shown = repr(name)
        if isinstance(name, str) and len(name) > 40:
            shown = f"{name[:40]!r}... ({len(name):,} characters)"
        raise UsageError(f"invalid {given_as} {shown}: {reason}", hint=KEY_FIELD_RULE)
    return str(name)


def check_new_key_field(name: Any, given_as: str = "key field") -> str:
    """``check_key_field``, and a name every list of fields can name (``unlisted_problem``):
    asked of a key field given now, not of one an older index already records."""
    check_key_field(name, given_as)
    reason = unlisted_problem(name)
    if reason is not None:
        raise UsageError(f"invalid {given_as} {name!r}: {reason}", hint=KEY_FIELD_RULE)
    return str(name)


def unlisted_problem(path: str) -> str | None:
    """Why no comma-separated list of fields (``--fields``, ``--sort``, ``S3IDX_FIELDS``) could
    name ``path``, or None: they split at commas and trim blanks around each item. Asked only
    of paths about to be recorded, so an index an older s3idx wrote stays usable."""
    if "," in path:
        return (
            "',' separates field paths in --fields, --sort and S3IDX_FIELDS, so none could name it"
        )
    if path != path.strip():
        return (
            "blanks at its start or end are trimmed from every list of fields, "
            "so none could name it"
        )
    return None


def _key_field_problem(name: Any) -> str | None:
    if not isinstance(name, str):
        return "it is not a string"
    if not name:
        return "it is empty"
    if "." in name:  # top-level names with '.' are refused in documents (they read as paths)
        return "it contains '.' (a key field is a top-level name, not a path)"
    if name.startswith("$"):
        return "it starts with '$' (MongoDB reserves it)"
    if _CONTROL.search(name):
        return "it contains a control character"
    if len(name) > MAX_FIELD_PATH_CHARS:
        return f"it is over {MAX_FIELD_PATH_CHARS} characters"
    if name in (RESERVED_FIELD, LAST_UPDATED):
        return f"s3idx sets {name!r} itself"
    return None


def check_key_argument(key: Any) -> str:
    """A key asked for by name (``get``, ``delete``): a UsageError, not a rejected record,
    when no document can have it, so that the caller checks every key before using any."""
    try:
        return check_key(key)
    except InvalidKeyError as exc:
        if not isinstance(key, str):
            message = f"a key must be a string, got {json_kind(key)}"
        elif not key:
            message = "key '' is empty"
        elif quote_key(key) not in exc.message:
            message = f"{exc.message}: {quote_key(key)}"
        else:
            message = exc.message
        raise UsageError(
            message, hint="no document can have such a key; nothing was read or deleted"
        ) from None


# --- metadata --------------------------------------------------------------------------------


class MetadataEntry(Frozen):
    """What an object's metadata says: the index entry and how to read the body."""

    __slots__ = ("codec", "entry", "fields", "key_field", "sha256")
    _fields = ("key_field", "fields", "entry", "codec", "sha256")
    key_field: str
    fields: tuple[str, ...]
    entry: dict[str, Any]
    codec: str
    sha256: str | None

    def __init__(
        self,
        key_field: str,
        fields: tuple[str, ...],
        entry: dict[str, Any],
        codec: str,
        sha256: str | None,
    ) -> None:
        init_field(self, "key_field", key_field)
        init_field(self, "fields", fields)
        init_field(self, "entry", entry)
        init_field(self, "codec", codec)
        init_field(self, "sha256", sha256)


def build_metadata(
    entry: Mapping[str, Any],
    key_field: str,
    fields: Sequence[str],
    codec: str,
    sha256: str,
) -> dict[str, str]:
    """The ``s3idx-*`` metadata of an object; ``fields`` are the searchable field paths."""
    return {
        META_FORMAT: FORMAT_VERSION,
        META_CODEC: codec,
        META_SHA256: sha256,
        META_KEY: key_field,
        META_FIELDS: _fields_json(tuple(fields)),
        META_ENTRY: ascii_json(entry),
    }


@functools.lru_cache(maxsize=64)
def _fields_json(fields: tuple[str, ...]) -> str:
    # The same for every document of a put: encoded once.
    return ascii_json(list(fields))


def metadata_size(metadata: Mapping[str, str]) -> int:
    """S3's measure: the UTF-8 bytes of every metadata name and value."""
    # s3idx's names and values are ASCII, where characters are bytes: one join and one test
    # (every put measures its metadata), and an encoding only for the others.
    joined = "".join([*metadata, *metadata.values()])
    return len(joined) if joined.isascii() else len(joined.encode())


def check_metadata_size(
    metadata: Mapping[str, str], key: str, entry: Mapping[str, Any] | None = None
) -> None:
    """Refuse metadata over S3's 2 KB, naming the largest fields of the entry."""
    size = metadata_size(metadata)
    if size <= MAX_METADATA_BYTES:
        return
    if entry is not None:
        sizes = sorted(((len(ascii_json(v)), name) for name, v in entry.items()), reverse=True)
    else:
        sizes = sorted(((len(v.encode()), name) for name, v in metadata.items()), reverse=True)
    largest = ", ".join(f"{name} ({n} bytes)" for n, name in sizes[:3])
    message = (
        f"index entry of {quote_key(key)} needs {size} bytes of metadata; the limit is "
        f"{MAX_METADATA_BYTES} bytes; largest fields: {largest}"
    )
    if "\\u" in metadata.get(META_ENTRY, ""):  # the entry is ASCII JSON: \uXXXX escapes
        message += "; non-ASCII characters take 6 bytes each in metadata (12 beyond U+FFFF)"
    hint = "index fewer or smaller fields (--field), or shorten their values"
    if entry is not None and any(name == metadata.get(META_KEY) for _, name in sizes[:1]):
        hint = "shorten the key: the index entry in the metadata holds it too"
    raise MetadataTooLargeError(message, hint=hint)


def parse_metadata(metadata: Mapping[str, str]) -> MetadataEntry:
    """Read an s3idx object's metadata; raise NotAnS3idxObjectError or
    UndecodableMetadataError."""
    meta = {k.lower(): v for k, v in metadata.items()}
    version = meta.get(META_FORMAT)
    if version is None:
        raise NotAnS3idxObjectError("object has no s3idx metadata")
    if version != FORMAT_VERSION:
        raise UndecodableMetadataError(f"unsupported s3idx format version {version!r}")
    # Every s3idx version wrote the sha256: one without it had its metadata edited, and would
    # otherwise be read unchecked.
    missing = [n for n in (META_CODEC, META_KEY, META_ENTRY, META_SHA256) if n not in meta]
    if missing:
        raise UndecodableMetadataError(f"s3idx metadata lacks {', '.join(missing)}")
    try:
        entry = loads(meta[META_ENTRY])
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise UndecodableMetadataError(f"{META_ENTRY} is not valid JSON: {exc}") from None
    if not isinstance(entry, dict):
        raise UndecodableMetadataError(f"{META_ENTRY} is not a JSON object")
    key_field = meta[META_KEY]
    if key_field not in entry:
        raise UndecodableMetadataError(f"{META_ENTRY} lacks the key field {key_field!r}")
    return MetadataEntry(
        key_field,
        _parse_fields(meta.get(META_FIELDS)),
        entry,
        meta[META_CODEC],
        meta.get(META_SHA256),
    )


def _parse_fields(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    try:
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError:
        fields = None
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise UndecodableMetadataError(f"{META_FIELDS} is not a JSON list of field paths")
    return tuple(fields)
