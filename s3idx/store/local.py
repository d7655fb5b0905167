"""A local directory as an object store: the embedded default, no server needed.

Layout of a store root::

    s3idx-store.json    marks the directory as a store (format, whether names fold case)
    objects/            one file per object
    tmp/                files being written; renamed into objects/ when complete

A key's ``/``-separated segments become directories; the object file is the last segment plus
``~``. ``%`` and ``~`` inside segments are percent-escaped, so a directory name never ends in
``~`` and no key's file can clash with another key's directory. On a case-insensitive file
system upper-case letters are escaped too, so ``A`` and ``a`` stay two objects.

An object file holds a header line (``s3idx-object 1``), the metadata as one line of JSON, then
the body. It is written to ``tmp/`` and renamed into place, so readers and concurrent writers
only ever see whole objects. The ETag is derived from the file's inode, mtime and size (as nginx
does), so listing needs one ``stat`` per object and no reads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import orjson

from s3idx.codec import check_metadata_size
from s3idx.errors import (
    BackendUnavailableError,
    CorruptObjectError,
    InvalidKeyError,
    ObjectNotFoundError,
    StoreFormatError,
    missing_parent,
    quote_key,
    store_not_found,
)
from s3idx.store.base import (
    DeleteFailure,
    ObjectBody,
    ObjectHead,
    ObjectInfo,
    PutReceipt,
)

MARKER = "s3idx-store.json"
MAGIC = b"s3idx-object 1\n"
MAX_NAME_BYTES = 255
CHUNK = 1 << 16
_HEADER_PROBE = 4096


class LocalStore:
    """Objects as files under a root directory; see the module docstring for the layout."""

    def __init__(
        self, root: str | os.PathLike[str], *, create: bool = True, create_parents: bool = True
    ) -> None:
        self.root = Path(root).expanduser()
        # False: make the store directory only, as mkdir does, so a mistyped path fails.
        self._create_parents = create_parents
        self.location = str(self.root)
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        self._fold_case: bool | None = None
        self._create = create

    # --- layout ------------------------------------------------------------------------------

    def _ready(self, *, for_write: bool) -> bool:
        """Load (or, when writing, create) the store marker; False if there is no store yet."""
        if self._fold_case is not None:
            return True
        marker = self.root / MARKER
        try:
            raw = marker.read_bytes()
        except FileNotFoundError:
            if not for_write:
                return False
            self._initialise()
            return True
        except OSError as exc:
            raise _unavailable(self.root, exc) from None
        try:
            info = orjson.loads(raw)
            if info.get("format") != 1:
                raise StoreFormatError(
                    f"{self.root} is an s3idx store of format {info.get('format')!r}; "
                    "this s3idx reads format 1",
                    hint="upgrade s3idx",
                )
            self._fold_case = bool(info.get("fold_case", False))
        except (orjson.JSONDecodeError, AttributeError):
            raise StoreFormatError(f"{marker} is damaged (not the JSON s3idx wrote)") from None
        return True

    def check_exists(self) -> None:
        """Raise NotFoundError naming the root unless a store is there (for reading commands)."""
        if self._ready(for_write=False):
            return
        detail = "the directory does not exist"
        if self.root.is_dir():
            detail = f"the directory has no {MARKER}"
        raise store_not_found(self.location, detail)

    def _initialise(self) -> None:
        if not self._create:
            raise StoreFormatError(f"{self.root} is not an s3idx store")
        if not self._create_parents and not self.root.parent.is_dir():
            raise missing_parent("store", self.location, str(self.root.parent))
        try:
            if self.root.exists() and any(
                p.name not in (MARKER, "objects", "tmp") for p in self.root.iterdir()
            ):
                raise StoreFormatError(
                    f"{self.root} is not empty and is not an s3idx store (no {MARKER})",
                    hint="choose a new or empty directory for --store",
                )
            self._tmp.mkdir(parents=True, exist_ok=True)
            self._objects.mkdir(exist_ok=True)
            fold = _folds_case(self._tmp)
            data = orjson.dumps({"format": 1, "fold_case": fold}, option=orjson.OPT_INDENT_2)
            fd, tmp = tempfile.mkstemp(dir=self._tmp)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data + b"\n")
            # Two processes may initialise at once; whichever rename lands, the content agrees.
            os.replace(tmp, self.root / MARKER)
        except OSError as exc:
            raise _unavailable(self.root, exc) from None
        self._fold_case = fold

    def _encode_segment(self, segment: str, fold_case: bool) -> str:
        name = segment.replace("%", "%25").replace("~", "%7E")
        if fold_case:
            name = re.sub(r"[A-Z]", lambda m: f"%{ord(m.group()):02X}", name)
        return name

    def _path(self, key: str) -> Path:
        fold = bool(self._fold_case)
        *dirs, leaf = segments = key.split("/")
        if any(segment in ("", ".", "..") for segment in segments):
            # Callers validate keys first; this guard keeps any path inside the root regardless.
            raise InvalidKeyError(f"key {quote_key(key)} has an empty, '.' or '..' part")
        parts = [self._encode_segment(d, fold) for d in dirs]
        parts.append(self._encode_segment(leaf, fold) + "~")
        return self._objects.joinpath(*parts)

    def check_key(self, key: str) -> None:
        # Before the store exists its case folding is unknown; escaping only lengthens names,
        # so checking as if it folds is the safe bound.
        fold = True if self._fold_case is None else self._fold_case
        for segment in key.split("/"):
            size = len(self._encode_segment(segment, fold).encode()) + 1
            if size > MAX_NAME_BYTES:
                raise InvalidKeyError(
                    f"key part {segment[:40]!r}... needs a {size}-byte file name; the local "
                    f"store allows {MAX_NAME_BYTES - 1} bytes per '/'-separated part of a key",
                    hint="use shorter key parts, or an S3 store",
                )

    # --- objects -----------------------------------------------------------------------------

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> PutReceipt:
        self._ready(for_write=True)
        check_metadata_size(metadata, key)
        header = MAGIC + orjson.dumps(dict(metadata)) + b"\n"
        path = self._path(key)
        try:
            fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="put-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(header)
                    fh.write(body)
                    fh.flush()
                    st = os.fstat(fh.fileno())
                self._rename_into_place(tmp, path)
            except BaseException:
                _unlink_quietly(tmp)
                raise
        except OSError as exc:
            raise _unavailable(self.root, exc) from None
        return PutReceipt(_etag(st), st.st_size)

    def _rename_into_place(self, tmp: str, path: Path) -> None:
        # A concurrent delete may remove an emptied parent directory between mkdir and rename.
        for attempt in range(5):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, path)
                return
            except FileNotFoundError:
                if attempt == 4:
                    raise

    def head(self, key: str) -> ObjectHead:
        with self._open_file(key) as fh:
            return self._read_head(key, fh)

    def open(self, key: str) -> ObjectBody:
        fh = self._open_file(key)
        try:
            head = self._read_head(key, fh)
        except BaseException:
            fh.close()
            raise
        return ObjectBody(head, _chunks(fh))

    def _open_file(self, key: str) -> IO[bytes]:
        if not self._ready(for_write=False):
            raise ObjectNotFoundError(key)
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:  # a key no put could have stored
                raise ObjectNotFoundError(key) from None
            raise _unavailable(self.root, exc) from None

    def _read_head(self, key: str, fh: IO[bytes]) -> ObjectHead:
        st = os.fstat(fh.fileno())
        probe = fh.read(_HEADER_PROBE)
        if not probe.startswith(MAGIC):
            raise CorruptObjectError(f"{self._path(key)} is not an s3idx object file")
        end = probe.find(b"\n", len(MAGIC))
        while end < 0:
            more = fh.read(_HEADER_PROBE)
            if not more:
                raise CorruptObjectError(f"{self._path(key)} has a truncated header")
            probe += more
            end = probe.find(b"\n", len(MAGIC))
        try:
            metadata = orjson.loads(probe[len(MAGIC) : end])
        except orjson.JSONDecodeError:
            raise CorruptObjectError(f"{self._path(key)} has damaged metadata") from None
        fh.seek(end + 1)
        modified = datetime.fromtimestamp(st.st_mtime, UTC)
        return ObjectHead(key, _etag(st), st.st_size, metadata, modified)

    def delete(self, keys: Sequence[str]) -> list[DeleteFailure]:
        failures: list[DeleteFailure] = []
        if not self._ready(for_write=False):
            return failures
        for key in keys:
            path = self._path(key)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:  # a key no put could have stored
                    continue
                failures.append(DeleteFailure(key, exc.strerror or str(exc)))
                continue
            self._prune_empty_dirs(path.parent)
        return failures

    def _prune_empty_dirs(self, directory: Path) -> None:
        while directory != self._objects and self._objects in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    # --- listing -----------------------------------------------------------------------------

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        if not self._ready(for_write=False):
            return
        yield from self._walk(self._objects, "", prefix, start_after)

    def _walk(
        self, directory: Path, base: str, prefix: str, start_after: str | None
    ) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _unavailable(self.root, exc) from None
        # Sorting a directory's entries by key (directories as "name/") yields global key order.
        ordered = []
        for entry in entries:
            if entry.name.endswith("~"):
                ordered.append((base + _decode(entry.name[:-1]), False, entry))
            elif entry.is_dir(follow_symlinks=False):
                ordered.append((base + _decode(entry.name) + "/", True, entry))
        ordered.sort(key=lambda item: item[0])
        for name, is_dir, entry in ordered:
            if is_dir:
                if not _may_hold(name, prefix, start_after):
                    continue
                yield from self._walk(Path(entry.path), name, prefix, start_after)
                continue
            if not name.startswith(prefix) or (start_after is not None and name <= start_after):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted while listing
            yield ObjectInfo(name, _etag(st), st.st_size)

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""


def _may_hold(dir_prefix: str, prefix: str, start_after: str | None) -> bool:
    """Whether keys starting with dir_prefix can pass the prefix and start_after filters."""
    if not (dir_prefix.startswith(prefix) or prefix.startswith(dir_prefix)):
        return False
    if start_after is None or start_after.startswith(dir_prefix):
        return True
    return dir_prefix > start_after


def _decode(name: str) -> str:
    if "%" not in name:
        return name
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _chunks(fh: IO[bytes]) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _folds_case(directory: Path) -> bool:
    fd, probe = tempfile.mkstemp(dir=directory, prefix="CaseProbe-")
    os.close(fd)
    try:
        return os.path.exists(os.path.join(directory, os.path.basename(probe).lower()))
    finally:
        os.unlink(probe)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _unavailable(root: Path, exc: OSError) -> BackendUnavailableError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "check the directory's permissions, or choose another --store"
    elif exc.errno == errno.ENOSPC:
        hint = "free disk space, then run the command again"
    else:
        hint = None
    where = exc.filename or root
    return BackendUnavailableError(f"local store {root}: {reason}: {where}", hint=hint)
