"""Manifests: what a batch of writes stored, in one object, so a rebuild needs no HEAD per object.

A manifest is an object under ``<prefix>/.s3idx/manifests/`` named
``<YYYYmmddTHHMMSS.ffffffZ>-<8 hex>.jsonl.gz`` (UTC time of writing, so names sort in writing
order). Its body is gzip of JSON lines: first ``{"s3idx_manifest": 1}``, then one line per
object in key order::

    {"key": K, "etag": E, "size": N, "last_modified": "2026-12-01T20:00:00Z" | null,
     "metadata": {...}}

``metadata`` is the object's metadata exactly as stored (what a HEAD returns), so an entry is
recovered from a line by the same code as from a HEAD (``ManifestLine.head()`` then
``metadata_entry.recover_entry``). A manifest is a claim, never the truth: rebuild-index takes a
line only when the listing shows the same ETag and an object not modified since (see
``vouches``); every other object is HEADed.

Writers: put, reindex/rewrite and sync (``manifest_batches.ManifestBatches``), and
rebuild-index's compaction (``CompactionWriter``: manifests of at most ``COMPACT_LINES`` lines in
key order, then the manifests they replace are deleted).
"""

from __future__ import annotations

import gzip
import secrets
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from s3idx.errors import CorruptObjectError, S3idxError, quote_key
from s3idx.store.base import ObjectHead, ObjectInfo, ObjectStore

MANIFEST_PREFIX = ".s3idx/manifests/"
FORMAT_VERSION = 1
COMPACT_LINES = 10_000
# gzip level 1: a manifest is written once per batch and read once per rebuild; the bytes saved
# by higher levels are worth less than the CPU a put spends on them.
_GZIP_LEVEL = 1
_HEADER = orjson.dumps({"s3idx_manifest": FORMAT_VERSION}) + b"\n"
_SUFFIX = ".jsonl.gz"


@dataclass(frozen=True, slots=True)
class ManifestLine:
    """One object as a manifest records it: enough to recover its entry and to check it."""

    key: str
    etag: str
    size: int
    metadata: dict[str, str]
    # Set when the writer knew the object's LastModified (sync, compaction); a put knows only
    # the receipt's ETag and size, and the manifest's own LastModified bounds the object's.
    last_modified: datetime | None = None

    @classmethod
    def from_head(cls, head: ObjectHead) -> ManifestLine:
        return cls(head.key, head.etag, head.size, dict(head.metadata), head.last_modified)

    def head(self) -> ObjectHead:
        return ObjectHead(self.key, self.etag, self.size, self.metadata, self.last_modified)

    def to_json(self) -> bytes:
        modified = None if self.last_modified is None else _format_time(self.last_modified)
        return orjson.dumps(
            {
                "key": self.key,
                "etag": self.etag,
                "size": self.size,
                "last_modified": modified,
                "metadata": self.metadata,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> ManifestLine:
        """A line parsed back; ValueError (or KeyError/TypeError) when it is not one."""
        data = orjson.loads(raw)
        key, etag, size, metadata = data["key"], data["etag"], data["size"], data["metadata"]
        if not (
            isinstance(key, str)
            and isinstance(etag, str)
            and isinstance(size, int)
            and isinstance(metadata, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            raise ValueError("a manifest line has a field of the wrong type")
        modified = data.get("last_modified")
        return cls(key, etag, size, metadata, None if modified is None else _parse_time(modified))


def vouches(line: ManifestLine, manifest_modified: datetime | None, listed: ObjectInfo) -> bool:
    """Whether a manifest's line may stand for the listed object instead of a HEAD.

    The ETag must match (same body, for S3 also the same upload), and the object must not have
    been stored again since the line was true: a copy with new metadata keeps the ETag but moves
    LastModified. With the line's own LastModified the two must be equal; without it (a put's
    line) the object must be no newer than the manifest, which was written after it. Times are
    compared at whole seconds, S3's resolution. Unknown times never vouch.
    """
    if line.etag != listed.etag or listed.last_modified is None:
        return False
    seen = _seconds(listed.last_modified)
    if line.last_modified is not None:
        return _seconds(line.last_modified) == seen
    return manifest_modified is not None and seen <= _seconds(manifest_modified)


def manifest_name(now: datetime | None = None) -> str:
    """A fresh manifest key: the UTC time of writing (names sort in writing order), then 8
    random hex digits so writers on several machines in one microsecond do not collide."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{MANIFEST_PREFIX}{now:%Y%m%dT%H%M%S.%f}Z-{secrets.token_hex(4)}{_SUFFIX}"


def encode_manifest(lines: Iterable[ManifestLine]) -> bytes:
    """The gzip body of a manifest holding ``lines`` in key order (sorted here)."""
    # One compress call for the whole text: a GzipFile write per line cost ~5 µs a document.
    text = [_HEADER]
    for line in sorted(lines, key=lambda x: x.key):
        text.append(line.to_json())
        text.append(b"\n")
    return gzip.compress(b"".join(text), compresslevel=_GZIP_LEVEL, mtime=0)


def write_manifest(store: ObjectStore, lines: Iterable[ManifestLine]) -> str | None:
    """Write one manifest of ``lines`` (sorted by key); its key, or None when there are none."""
    batch = list(lines)
    if not batch:
        return None
    key = manifest_name()
    store.put(key, encode_manifest(batch), {})
    return key


class CompactionWriter:
    """Writes what is true now as compacted manifests, then removes the manifests they replace.

    ``add`` takes lines in ascending key order (a listing's order) and writes a manifest each
    ``lines_per_manifest`` lines, so at most that many are held. ``finish(replaced)`` writes the
    rest, then deletes ``replaced``: the manifests listed before the lines were gathered, never
    one written meanwhile (its lines may be newer than the listing). New first, old second: a
    crash in between leaves both, and a later manifest wins a key, so nothing is lost.

    With ``on_failure``, a store error ends the compaction instead of being raised: it is
    handed to ``on_failure`` once, ``failed`` is set, and later calls do nothing (so nothing is
    removed). Compaction only spares a later rebuild its HEADs; the command that compacts has
    done its work without it.
    """

    def __init__(
        self,
        store: ObjectStore,
        lines_per_manifest: int = COMPACT_LINES,
        *,
        on_failure: Callable[[S3idxError], None] | None = None,
    ) -> None:
        self._store = store
        self._limit = lines_per_manifest
        self._on_failure = on_failure
        self._lines: list[ManifestLine] = []
        self._last_key: str | None = None
        self.written = 0
        self.removed = 0
        self.failed = False

    def add(self, line: ManifestLine) -> None:
        if self._last_key is not None and line.key <= self._last_key:
            raise ValueError(f"compaction lines out of key order at {quote_key(line.key)}")
        self._last_key = line.key
        if self.failed:
            return  # nothing more is written, so nothing is held
        self._lines.append(line)
        if len(self._lines) >= self._limit:
            self._guarded(self._write)

    def _write(self) -> None:
        if write_manifest(self._store, self._lines) is not None:
            self.written += 1
        self._lines = []

    def finish(self, replaced: Iterable[ObjectInfo]) -> None:
        self._guarded(lambda: self._finish(replaced))

    def _guarded(self, step: Callable[[], None]) -> None:
        if self.failed:
            return
        if self._on_failure is None:
            step()
            return
        try:
            step()
        except S3idxError as exc:
            self.failed = True
            self._lines = []
            self._on_failure(exc)

    def _finish(self, replaced: Iterable[ObjectInfo]) -> None:
        self._write()
        keys = [info.key for info in replaced]
        if not keys:
            return
        # Unconditional, so S3 deletes 1,000 a request: a manifest's name is unique (time and
        # random digits) and no writer ever stores a manifest again under it.
        failures = self._store.delete(keys)
        self.removed += len(keys) - len(failures)


def written_at(info: ObjectInfo) -> datetime | None:
    """When s3idx wrote the manifest ``info`` lists: the earlier of its LastModified and the
    time its name records (``manifest_name``). A manifest copied in place or restored from a
    backup keeps its name but gets a new LastModified, and its lines are no truer for that:
    taken at the new time, they would vouch for objects stored again since (same body, same
    ETag, other metadata)."""
    named = _name_time(info.key)
    if named is None or info.last_modified is None:
        return info.last_modified
    return min(named, info.last_modified)


def _name_time(key: str) -> datetime | None:
    stamp = key.removeprefix(MANIFEST_PREFIX).partition("Z-")[0]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)
    except ValueError:
        return None  # not a name s3idx gave: its LastModified alone


def list_manifests(store: ObjectStore) -> list[ObjectInfo]:
    """Every manifest, oldest first: by (``written_at``, key); a later one wins a key."""
    manifests = [
        info
        for info in store.list_objects(MANIFEST_PREFIX)
        if info.key.startswith(MANIFEST_PREFIX) and info.key.endswith(_SUFFIX)
    ]
    floor = datetime.min.replace(tzinfo=UTC)
    manifests.sort(key=lambda info: (written_at(info) or floor, info.key))
    return manifests


def read_manifest(store: ObjectStore, key: str) -> Iterator[ManifestLine]:
    """A manifest's lines, streamed; CorruptObjectError when it is not a readable manifest.

    Lines read before the damage are yielded first: each still stands or falls by its own
    check against the listing. ObjectNotFoundError when it was removed meanwhile.
    """
    body = store.open(key)
    try:
        yield from parse_manifest(key, body.chunks)
    finally:
        close = getattr(body.chunks, "close", None)
        if close is not None:
            close()


def parse_manifest(key: str, chunks: Iterable[bytes]) -> Iterator[ManifestLine]:
    """The lines of a manifest body given as chunks (``read_manifest`` without the request)."""
    reader = _GunzipLines(chunks)
    try:
        first = next(reader, b"")
        try:
            header: Any = orjson.loads(first)
        except orjson.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("s3idx_manifest") != FORMAT_VERSION:
            raise CorruptObjectError(
                f"manifest {quote_key(key)} does not start with {_HEADER.decode().strip()}"
            )
        for number, raw in enumerate(reader, start=2):
            if not raw.strip():
                continue
            try:
                yield ManifestLine.from_json(raw)
            except (ValueError, KeyError, TypeError):
                raise CorruptObjectError(
                    f"manifest {quote_key(key)} line {number} is not a manifest line"
                ) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptObjectError(f"manifest {quote_key(key)} cannot be read: {exc}") from None


class _GunzipLines:
    """Lines of a gzip stream given as chunks, decompressed as they come.

    Lines are cut at an offset into the decompressed chunk, never by copying what is left of
    it, so a manifest given as one large chunk costs time linear in its size.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._pos = 0
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        while True:
            end = self._pending.find(b"\n", self._pos)
            if end >= 0:
                line = self._pending[self._pos : end]
                self._pos = end + 1
                return line
            rest = self._pending[self._pos :]
            self._pending, self._pos = rest, 0
            if self._done:
                if rest:
                    self._pending = b""
                    return rest
                raise StopIteration
            chunk = next(self._chunks, None)
            if chunk is None:
                self._done = True
                if not self._inflate.eof:
                    raise EOFError("the gzip stream ends early")
                continue
            self._pending = rest + self._inflate.decompress(chunk)


def _format_time(value: datetime) -> str:
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


def _parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError("last_modified is not a string")
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("last_modified has no time zone")
    return value.astimezone(UTC)


def _seconds(value: datetime) -> int:
    return int(value.timestamp() // 1)
