"""A local directory as an object store: the embedded default, no server needed.

Layout of a store root::

    s3idx-store.json    marks the directory as a store (format, whether names fold case)
    objects/            one file per object
    tmp/                files being written; renamed into objects/ when complete
    locks/              lock files (``LOCK_STRIPES`` of them, made on first use), never removed

A key's ``/``-separated segments become directories; the object file is the last segment plus
``~``. ``%`` and ``~`` inside segments are percent-escaped, so a directory name never ends in
``~`` and no key's file can clash with another key's directory. On a case-insensitive file
system upper-case letters are escaped too, so ``A`` and ``a`` stay two objects.
File names are the segments' UTF-8 bytes whatever the locale (``_file_name``).

An object file holds a header line (``s3idx-object 1``), the metadata as one line of JSON, then
the body. It is written to ``tmp/`` and renamed into place, so readers and concurrent writers
only ever see whole objects. The ETag is derived from the file's inode, mtime and size (as nginx
does), so listing needs one ``stat`` per object and no reads.

A store whose marker is there is checked once, when first used (``_check_layout``: one
``lstat`` a directory): ``objects/`` missing (deleted, a file system not mounted) or anything but
a directory, or ``tmp/`` or ``locks/`` a file, is a ``DamagedStoreError`` (exit 5), never an
empty store, which ``sync`` would prune the index for. A missing ``tmp/`` or ``locks/`` is made
again when needed; ``objects/`` never is (``_make_directory``), and a key not found, or a listing,
checks again that ``objects/`` is still there.

Symbolic links inside the root are never followed (the root itself may be one): a linked
``objects/``, ``tmp/`` or ``locks/`` is a damaged store, a key whose path crosses a linked
directory cannot be written and is not found, a linked object file is not an object. So nothing
is read or written outside the root, and reads agree with the listing.

A conditional delete's check of the ETag and its unlink, a metadata replacement's or a
conditional put's check and rename, and a put's rename each run under an exclusive ``flock`` of
the key's lock file (``locks/NN``, one of ``LOCK_STRIPES``, chosen by a hash of the key), so a
check and its act are one step for every process on the machine: a conditional delete never
removes an object put between them, nor does a conditional put replace one. Where ``fcntl`` is
missing (Windows) there is no lock, and that window is open.

A temporary file is named ``KIND-TAG-RANDOM``, ``TAG`` naming its writer's process
(``liveness.process_tag``). One left by a writer that died (kill -9, power loss) is removed by
the next put or listing: at once if its writer is known gone from this machine, else once it
is ``STALE_TEMP_SECONDS`` old.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import os
import re
import secrets
import stat
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TypeGuard

import orjson

from s3idx.codec import check_metadata_size, is_reserved_key, lists_reserved, parse_metadata
from s3idx.errors import (
    BackendUnavailableError,
    DamagedStoreError,
    InvalidKeyError,
    ObjectAccessDeniedError,
    ObjectChangedError,
    ObjectNotFoundError,
    S3idxError,
    StoreFormatError,
    UndecodableMetadataError,
    missing_parent,
    quote_key,
    store_not_found,
)
from s3idx.liveness import process_tag, tag_has_died
from s3idx.store.base import (
    CHANGED_REASON,
    DeleteDone,
    DeleteFailure,
    ObjectBody,
    ObjectHead,
    ObjectInfo,
    PutReceipt,
    RequestCounter,
    StillWanted,
    not_reported,
)

if sys.platform != "win32":  # Windows has no flock (see the module docstring)
    import fcntl

MARKER = "s3idx-store.json"
MAGIC = b"s3idx-object 1\n"
MAX_NAME_BYTES = 255
CHUNK = 1 << 16
_HEADER_PROBE = 4096
# A temporary file lives for the milliseconds of one write; one this old was left by a writer
# that died (on another machine, whose processes cannot be checked from here).
STALE_TEMP_SECONDS = 3600
_TEMP_NAME = re.compile(r"[A-Za-z]+-(?P<tag>[0-9]+\.[0-9]+\.[0-9a-z]+)-[^-]+")
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NON_BLOCK = getattr(os, "O_NONBLOCK", 0)
_NEW_FILE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | _NO_FOLLOW | getattr(os, "O_BINARY", 0)
# Names of one directory held in memory while listing it; a larger directory is sorted on disk.
LIST_RUN = 50_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Lock files a key's lock is chosen among: two keys may share one and wait for each other
# (microseconds), in exchange for a fixed number of files.
LOCK_STRIPES = 64


class LocalStore:
    """Objects as files under a root directory; see the module docstring for the layout."""

    def __init__(
        self, root: str | os.PathLike[str], *, create: bool = True, create_parents: bool = True
    ) -> None:
        self.root = Path(root).expanduser()
        # False: make the store directory only, as mkdir does, so a mistyped path fails.
        self._create_parents = create_parents
        self.location = str(self.root)
        # What an index records as the store it describes: one directory however it is named
        # (relative, through links); backends.store_identity says the same unopened.
        self.identity = os.path.realpath(self.root)
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        self._locks = self.root / "locks"
        self._fold_case: bool | None = None
        self._create = create
        self._swept = False
        # One per operation (put, head, open, delete, replace_metadata, listing): a directory
        # has no requests, but the count keeps runs comparable across stores.
        self.requests = RequestCounter()

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
            self._check_layout(marked=False)
            self._initialise()
            return True
        except NotADirectoryError:
            raise _not_a_directory(self.root) from None
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
            fold_case = bool(info.get("fold_case", False))
        except (orjson.JSONDecodeError, AttributeError):
            raise StoreFormatError(f"{marker} is damaged (not the JSON s3idx wrote)") from None
        self._check_layout(marked=True)
        self._fold_case = fold_case
        return True

    def prepare_writes(self) -> None:
        """Create the store now (directory and marker), as its first upload would: a put that
        stores nothing still leaves the store the commands after it read, and a location that
        cannot be a store fails before anything is recorded."""
        self._ready(for_write=True)

    def check_writes(self) -> None:
        """What ``prepare_writes`` would refuse, found without creating anything (a dry run):
        a location that cannot be a store, a missing parent directory, one not writable."""
        try:
            if self._ready(for_write=False):
                return
            self._check_layout(marked=False)
            self._check_creatable()
        except NotADirectoryError:
            raise _not_a_directory(self.root) from None
        except OSError as exc:
            raise _unavailable(self.root, exc) from None
        # The first directory prepare_writes would make, and the existing one it goes in.
        first = self._tmp
        while not first.parent.exists():
            first = first.parent
        if not first.parent.is_dir():
            raise _not_a_directory(self.root)
        if not os.access(first.parent, os.W_OK | os.X_OK):
            denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(first))
            raise _unavailable(self.root, denied)

    def check_exists(self) -> None:
        """Raise NotFoundError naming the root unless a store is there (for reading commands)."""
        if self._ready(for_write=False):
            return
        detail = "the directory does not exist"
        if self.root.is_dir():
            detail = f"the directory has no {MARKER}"
        raise store_not_found(self.location, detail)

    def _check_layout(self, *, marked: bool) -> None:
        """Refuse a damaged layout, once, when the store is first used: one ``lstat`` of each
        directory. ``objects/`` missing from a store with its marker (``marked``) is damage, not
        an empty store (``_initialise`` makes it before the marker); ``tmp/`` and ``locks/``
        missing are made again when needed."""
        for directory in (self._objects, self._tmp, self._locks):
            self._check_directory(directory, missing_is_damage=marked)

    def _check_directory(self, directory: Path, *, missing_is_damage: bool = True) -> None:
        """DamagedStoreError unless ``directory`` (of the layout) is a directory; missing, only
        when ``missing_is_damage`` (``objects/`` always is, once the store has its marker)."""
        try:
            mode = os.lstat(directory).st_mode
        except FileNotFoundError:
            if missing_is_damage and directory == self._objects:
                raise DamagedStoreError(
                    f"the local store {self.root} has no objects/ directory (its {MARKER} is "
                    "there): the store is damaged or not fully mounted",
                    hint="restore objects/ (or mount the file system that holds it); if its "
                    "objects are lost for good, make an empty objects/ directory there and "
                    "delete the index's entries (its file or collection)",
                ) from None
            return
        except NotADirectoryError:
            raise _not_a_directory(self.root) from None
        except OSError as exc:
            raise _unavailable(self.root, exc) from None
        if stat.S_ISLNK(mode):
            raise DamagedStoreError(
                f"{directory} is a symbolic link; the local store follows no links inside its "
                "directory",
                hint="put the directory itself there (the store's root may be a link)",
            )
        if not stat.S_ISDIR(mode):
            kind = "a file" if stat.S_ISREG(mode) else "a special file"
            restore = (
                "put the store's objects/ directory back in its place"
                if directory == self._objects
                else f"s3idx makes {directory.name}/ again"
            )
            raise DamagedStoreError(
                f"the local store {self.root} is damaged: {directory} is {kind}, not a directory",
                hint=f"move {directory} aside; {restore}",
            )

    def _check_creatable(self) -> None:
        """What refuses to make a store here, found without making anything."""
        if not self._create:
            raise StoreFormatError(f"{self.root} is not an s3idx store")
        if not self._create_parents and not self.root.parent.is_dir():
            raise missing_parent("store", self.location, str(self.root.parent))
        if self.root.exists() and any(
            p.name not in (MARKER, "objects", "tmp", "locks") for p in self.root.iterdir()
        ):
            raise StoreFormatError(
                f"{self.root} is not empty and is not an s3idx store (no {MARKER})",
                hint="choose a new or empty directory for --store",
            )

    def _initialise(self) -> None:
        try:
            self._check_creatable()
            self._tmp.mkdir(parents=True, exist_ok=True)
            self._objects.mkdir(exist_ok=True)
            fold = _folds_case(self._tmp)
            data = orjson.dumps({"format": 1, "fold_case": fold}, option=orjson.OPT_INDENT_2)
            fd, tmp = _temp_file(self._tmp, "marker")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data + b"\n")
            # Two processes may initialise at once; whichever rename lands, the content agrees.
            os.replace(tmp, self.root / MARKER)
        except OSError as exc:
            raise _unavailable(self.root, exc) from None
        self._fold_case = fold

    def _temp_file(self, kind: str) -> tuple[int, str]:
        """A new file in ``tmp/``, made again if it is missing (nothing in it outlives a write)."""
        try:
            return _temp_file(self._tmp, kind)
        except (FileNotFoundError, NotADirectoryError):
            self._check_directory(self._tmp, missing_is_damage=False)
            self._tmp.mkdir(exist_ok=True)
            return _temp_file(self._tmp, kind)

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
        return self._objects.joinpath(*map(_file_name, parts))

    def _linked_part(self, path: Path) -> Path | None:
        """The first existing part of ``path`` below ``objects/`` that is a symbolic link."""
        current = self._objects
        for part in path.relative_to(self._objects).parts:
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                raise _unavailable(self.root, exc) from None
            if stat.S_ISLNK(mode):
                return current
        return None

    def check_key(self, key: str) -> None:
        # Before the store exists its case folding is unknown; escaping only lengthens names,
        # so checking as if it folds is the safe bound.
        fold = True if self._fold_case is None else self._fold_case
        for segment in key.split("/"):
            size = len(self._encode_segment(segment, fold).encode()) + 1
            if size > MAX_NAME_BYTES:
                part = "" if segment == key else f": its part {quote_key(segment)}"
                raise InvalidKeyError(
                    f"key {quote_key(key)}{part} needs a {size}-byte file name; the local "
                    f"store allows {MAX_NAME_BYTES - 1} bytes per '/'-separated part of a key",
                    hint="use shorter key parts, or an S3 store",
                )

    # --- objects -----------------------------------------------------------------------------

    def stored_size(self, body: bytes, metadata: Mapping[str, str]) -> int:
        """The size of the file a put of this body and metadata writes (the size it returns):
        the metadata header, then the body."""
        return len(_header(metadata)) + len(body)

    def put(
        self, key: str, body: bytes, metadata: Mapping[str, str], *, if_match: str | None = None
    ) -> PutReceipt:
        self.requests.add()
        self._ready(for_write=True)
        check_metadata_size(metadata, key)
        header = _header(metadata)
        path = self._path(key)
        self._refuse_linked_parent(key, path)
        self._sweep_temp_files()
        try:
            fd, tmp = self._temp_file("put")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(header)
                    fh.write(body)
                    fh.flush()
                    st = os.fstat(fh.fileno())
                with self._key_lock(key):
                    if if_match is not None:
                        self._check_unchanged(key, path, if_match)
                    self._refuse_another_keys_file(key, path)
                    self._rename_into_place(tmp, path)
            except BaseException:
                _unlink_quietly(tmp)
                raise
        except OSError as exc:
            raise _unavailable(self.root, exc) from None
        return PutReceipt(_etag(st), st.st_size)

    def _check_unchanged(self, key: str, path: Path, etag: str) -> None:
        """ObjectChangedError unless the key's file still has ``etag``; called under the key's
        lock, which every rename into place and conditional delete takes, so nothing lands
        between this check and the caller's rename."""
        try:
            current = _etag(os.lstat(path))
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectChangedError(key) from None  # deleted since it was read
        if current != etag:
            raise ObjectChangedError(key)

    def _refuse_another_keys_file(self, key: str, path: Path) -> None:
        """Refuse to replace a file whose metadata names another key.

        A file system that does not tell Unicode normalization (macOS) or the case of
        non-ASCII letters apart (macOS, Windows; only ASCII capitals are escaped) gives two
        keys one file: the put would silently replace the other key's document. Another key's
        file is found only by reading it, so a put racing one of the other key may still
        replace it; the reader then reports that the metadata names another key. An ASCII key
        cannot collide (capitals are escaped where case folds): only others pay for the read.
        """
        if key.isascii():
            return
        try:  # its parents were checked: no links
            with open(path, "rb", opener=_open_no_follow) as fh:
                metadata = self._read_head(key, fh).metadata
        except (OSError, UndecodableMetadataError):
            return  # nothing there, a link, or no object a key owns: the put replaces it
        stored = _stored_key(metadata)
        if stored is not None and stored != key:
            raise InvalidKeyError(
                f"key {quote_key(key)} names the file of another stored key, "
                f"{quote_key(stored)}: this file "
                "system does not tell them apart (Unicode normalization or letter case)",
                hint="store one of them under another key, or use an S3 store",
            )

    def _refuse_linked_parent(self, key: str, path: Path) -> None:
        # A link as the object file itself is harmless: the rename replaces the link.
        linked = self._linked_part(path.parent)
        if linked is not None:
            raise InvalidKeyError(
                f"key {quote_key(key)}: {linked.relative_to(self.root)} is a symbolic link in the "
                f"local store {self.root}, which follows no links inside its directory",
                hint="remove the link, or store the document under another key",
            )

    def _sweep_temp_files(self) -> None:
        """Once per store object: remove temporary files that writers which died left behind."""
        if self._swept:
            return
        self._swept = True
        now = time.time()
        try:
            with os.scandir(self._tmp) as entries:
                for entry in entries:
                    if _is_abandoned(entry, now):
                        _unlink_quietly(entry.path)
        except OSError:
            return  # a read-only or missing tmp/ holds nothing this run could remove

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        """Hold the key's lock file (see the module docstring) exclusively, across processes.

        A new open file each time: flock excludes open files, so threads of one process
        exclude each other too. Raises OSError when the lock cannot be had.
        """
        if sys.platform == "win32":
            yield
            return
        stripe = zlib.crc32(key.encode("utf-8", "surrogatepass")) % LOCK_STRIPES
        path = self._locks / f"{stripe:02d}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NO_FOLLOW, 0o666)
        except (FileNotFoundError, NotADirectoryError):
            self._check_directory(self._locks, missing_is_damage=False)
            self._locks.mkdir(exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NO_FOLLOW, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _rename_into_place(self, tmp: str, path: Path) -> None:
        # A concurrent delete may remove an emptied parent directory between mkdir and rename.
        for attempt in range(5):
            try:
                os.replace(tmp, path)
                return
            except FileNotFoundError:
                if attempt == 4:
                    raise
            with contextlib.suppress(FileNotFoundError):  # its parent removed again: retried
                self._make_directory(path.parent)

    def _make_directory(self, directory: Path) -> None:
        """Make a directory below ``objects/``, and those between: never ``objects/`` itself,
        whose absence from a store with its marker is damage (an empty one made there would
        hide it)."""
        if directory == self._objects:
            self._check_directory(directory)
            return
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise
        except FileNotFoundError:
            self._make_directory(directory.parent)
            directory.mkdir(exist_ok=True)

    def head(self, key: str) -> ObjectHead:
        self.requests.add()
        with self._open_file(key) as fh:
            return self._read_head(key, fh)

    def open(self, key: str) -> ObjectBody:
        self.requests.add()
        fh = self._open_file(key)
        try:
            head = self._read_head(key, fh)
        except BaseException:
            fh.close()
            raise
        return ObjectBody(head, _chunks(fh), head.size - fh.tell())

    def _open_file(self, key: str) -> IO[bytes]:
        if not self._ready(for_write=False):
            raise ObjectNotFoundError(key)
        path = self._path(key)
        if self._linked_part(path.parent) is not None:
            raise ObjectNotFoundError(key)  # not in the store: its listing does not enter links
        try:
            return open(path, "rb", opener=_open_no_follow)
        except (FileNotFoundError, NotADirectoryError):
            self._check_directory(self._objects)  # gone since the store was opened: not empty
            raise ObjectNotFoundError(key) from None
        except OSError as exc:
            # ELOOP: the object file is a link, not an object; ENAMETOOLONG: a key no put
            # could have stored.
            if exc.errno in (errno.ELOOP, errno.ENAMETOOLONG):
                raise ObjectNotFoundError(key) from None
            # EACCES: this file (or a directory above it) only: go on past it.
            raise _object_error(self.root, exc, _DENIED_READ_HINT) from None

    def _read_head(self, key: str, fh: IO[bytes]) -> ObjectHead:
        """The object file's header; UndecodableMetadataError when it cannot be read, as S3
        would give metadata s3idx cannot decode (the file is still listed, with its ETag)."""
        st = os.fstat(fh.fileno())
        probe = fh.read(_HEADER_PROBE)
        if not probe:
            raise UndecodableMetadataError(f"{self._path(key)} is empty")
        if not probe.startswith(MAGIC):
            raise UndecodableMetadataError(f"{self._path(key)} is not an s3idx object file")
        end = probe.find(b"\n", len(MAGIC))
        while end < 0:
            more = fh.read(_HEADER_PROBE)
            if not more:
                raise UndecodableMetadataError(f"{self._path(key)} has a truncated header")
            probe += more
            end = probe.find(b"\n", len(MAGIC))
        try:
            metadata = orjson.loads(probe[len(MAGIC) : end])
        except orjson.JSONDecodeError:
            metadata = None
        if not _is_metadata(metadata):
            raise UndecodableMetadataError(f"{self._path(key)} has damaged metadata")
        fh.seek(end + 1)
        return ObjectHead(key, _etag(st), st.st_size, metadata, _modified(st))

    def delete(
        self,
        keys: Sequence[str],
        *,
        if_match: Mapping[str, str] | None = None,
        done: DeleteDone | None = None,
        still_wanted: StillWanted | None = None,
    ) -> list[DeleteFailure]:
        self.requests.add()
        failures: list[DeleteFailure] = []
        report = done if done is not None else not_reported
        if not self._ready(for_write=False):
            for key in keys:
                report(key, False)
            return failures
        for key in keys:
            path = self._path(key)
            if self._linked_part(path.parent) is not None:
                report(key, False)  # beyond a link: outside the store, so not one of its objects
                continue
            try:
                if if_match is not None and key in if_match:
                    with self._key_lock(key):
                        if still_wanted is not None and not still_wanted(key):
                            report(key, False)
                            continue
                        if _etag(os.lstat(path)) != if_match[key]:
                            failures.append(DeleteFailure(key, CHANGED_REASON, changed=True))
                            continue
                        path.unlink()
                else:
                    path.unlink()
            except (FileNotFoundError, NotADirectoryError):
                self._check_directory(self._objects)  # not every object gone with objects/
                report(key, False)  # already gone (another delete took it)
                continue
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:  # a key no put could have stored
                    report(key, False)
                    continue
                denied = exc.errno in _DENIALS  # its directory's permissions: this key's only
                failures.append(DeleteFailure(key, _object_failure(self.root, exc), denied=denied))
                continue
            report(key, True)
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

    def list_objects(
        self, prefix: str = "", *, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        self.requests.add()
        if not self._ready(for_write=False):
            return
        self._sweep_temp_files()
        yield from self._walk(self._objects, "", prefix, start_after)

    def _walk(
        self, directory: str | Path, base: str, prefix: str, start_after: str | None
    ) -> Iterator[ObjectInfo]:
        hide_reserved = not lists_reserved(prefix)
        for part, name in self._sorted_names(directory, base, prefix, start_after):
            key = base + part
            if hide_reserved and not base and is_reserved_key(key):
                continue  # s3idx's own objects (manifests): not documents
            path = os.path.join(directory, name)
            if not name.endswith("~"):
                yield from self._walk(path, key, prefix, start_after)
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # deleted while listing
            except OSError as exc:
                raise _unavailable(self.root, exc) from None
            if stat.S_ISREG(st.st_mode):
                yield ObjectInfo(key, _etag(st), st.st_size, _modified(st))

    def _sorted_names(
        self, directory: str | Path, base: str, prefix: str, start_after: str | None
    ) -> Iterator[tuple[str, str]]:
        """(key part, file name) of a directory's objects and subdirectories that may pass the
        filters, in key order (a directory's key part is ``name/``): so the whole listing is in
        key order.

        At most ``LIST_RUN`` names are held at once: a larger directory is sorted in runs
        written to anonymous temporary files (gone even if the process is killed), then merged.
        """
        names: list[tuple[str, str]] = []
        runs: list[IO[str]] = []
        try:
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        part = _listed_part(entry, base, prefix, start_after)
                        if part is not None:
                            names.append((part, entry.name))
                            if len(names) >= LIST_RUN:
                                runs.append(_spill_sorted(names))
                                names = []
            except (FileNotFoundError, NotADirectoryError) as exc:
                if not base:  # objects/ itself: a store never lists as empty for its loss
                    self._check_directory(self._objects)
                if isinstance(exc, NotADirectoryError):
                    raise _unavailable(self.root, exc) from None
                return  # a directory deleted while listing
            except OSError as exc:
                raise _unavailable(self.root, exc) from None
            names.sort()
            if not runs:
                yield from names
                return
            yield from heapq.merge(*(_run_names(run) for run in runs), names)
        finally:
            for run in runs:
                run.close()

    def replace_metadata(
        self, key: str, metadata: Mapping[str, str], *, if_match: str
    ) -> PutReceipt:
        """A new file with the new header and the same body bytes, renamed over the old one.

        The ETag is checked when the old file is opened and again, under the key's lock, just
        before the rename: a put's rename takes the same lock, so none lands in between.
        """
        self.requests.add()
        check_metadata_size(metadata, key)
        header = _header(metadata)
        path = self._path(key)
        with self._open_file(key) as old:
            if self._read_head(key, old).etag != if_match:
                raise ObjectChangedError(key)
            try:
                fd, tmp = self._temp_file("meta")
                try:
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(header)
                        while chunk := old.read(CHUNK):
                            fh.write(chunk)
                        fh.flush()
                        st = os.fstat(fh.fileno())
                    with self._key_lock(key):
                        if _etag(os.stat(path)) != if_match:
                            raise ObjectChangedError(key)
                        os.replace(tmp, path)
                except BaseException:
                    _unlink_quietly(tmp)
                    raise
            except FileNotFoundError:
                raise ObjectNotFoundError(key) from None
            except OSError as exc:
                # EACCES: its directory's permissions (all of them: ten in a row).
                raise _object_error(self.root, exc, _DENIED_WRITE_HINT) from None
        return PutReceipt(_etag(st), st.st_size)

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""


def _listed_part(
    entry: os.DirEntry[str], base: str, prefix: str, start_after: str | None
) -> str | None:
    """The key part of an object file or subdirectory (``name/``) the filters may pass."""
    name = _name_text(entry.name)
    if name.endswith("~"):
        if entry.is_symlink():
            return None
        part = _decode(name[:-1])
        key = base + part
        passes = key.startswith(prefix) and (start_after is None or key > start_after)
    elif entry.is_dir(follow_symlinks=False):
        part = _decode(name) + "/"
        passes = _may_hold(base + part, prefix, start_after)
    else:
        return None
    # No key holds a control character (nor can a run file's line) or bytes that are not UTF-8
    # (a file another tool named in Latin-1, say): such a name is not ours.
    return part if passes and not _CONTROL.search(part) and _is_utf8(part) else None


def _stored_key(metadata: Mapping[str, str]) -> str | None:
    """The key an s3idx object's metadata names; None for any other object."""
    try:
        parsed = parse_metadata(metadata)
    except S3idxError:
        return None
    key = parsed.entry.get(parsed.key_field)
    return key if isinstance(key, str) else None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        return False
    return True


def _spill_sorted(names: list[tuple[str, str]]) -> IO[str]:
    # Returned open: the caller merges the runs and closes them.
    run = tempfile.TemporaryFile("w+", encoding="utf-8", errors="surrogateescape", newline="\n")  # noqa: SIM115
    try:
        names.sort()
        run.writelines(f"{part}\0{name}\n" for part, name in names)
        run.seek(0)
    except OSError as exc:
        run.close()
        raise BackendUnavailableError(f"cannot sort a large directory listing: {exc}") from None
    return run


def _run_names(run: IO[str]) -> Iterator[tuple[str, str]]:
    for line in run:
        part, name = line[:-1].split("\0")
        yield part, name


def _may_hold(dir_prefix: str, prefix: str, start_after: str | None) -> bool:
    """Whether keys starting with dir_prefix can pass the prefix and start_after filters."""
    if not (dir_prefix.startswith(prefix) or prefix.startswith(dir_prefix)):
        return False
    if start_after is None or start_after.startswith(dir_prefix):
        return True
    return dir_prefix > start_after


def _file_name(name: str) -> str:
    """The name whose file name is ``name``'s UTF-8 bytes under every locale.

    Python encodes a file name in the locale's encoding: under a Latin-1 or ASCII locale a key
    would name other bytes (another file, or none it can encode) than under a UTF-8 one, so one
    store would hold two objects for one key, or be unreadable. Under UTF-8 this is ``name``.
    """
    return os.fsdecode(name.encode("utf-8"))


def _name_text(file_name: str) -> str:
    """A listed file name's text, its bytes read as UTF-8 whatever the locale (``_file_name``
    in reverse); bytes that are not UTF-8 stay lone surrogates, as under a UTF-8 locale."""
    return os.fsencode(file_name).decode("utf-8", "surrogateescape")


def _decode(name: str) -> str:
    if "%" not in name:
        return name
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def _modified(st: os.stat_result) -> datetime:
    # The same stat gives the ETag, so a listing and a HEAD agree on both.
    return datetime.fromtimestamp(st.st_mtime, UTC)


def _header(metadata: Mapping[str, str]) -> bytes:
    return MAGIC + orjson.dumps(dict(metadata)) + b"\n"


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _is_metadata(value: object) -> TypeGuard[dict[str, str]]:
    """Metadata as put wrote it: names and values are strings (as on S3)."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _chunks(fh: IO[bytes]) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _temp_file(directory: Path, kind: str) -> tuple[int, str]:
    """A new temporary file whose name says who writes it: ``KIND-TAG-RANDOM``.

    Created as mkstemp does, but with mode 0666 less the umask (mkstemp's is 0600), since it
    becomes an object others may share: a store in a group's directory under umask 002.
    """
    prefix = f"{kind}-{process_tag() or os.getpid()}-"
    for _ in range(100):
        path = os.path.join(directory, prefix + secrets.token_hex(4))
        try:
            return os.open(path, _NEW_FILE_FLAGS, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(directory))


def _is_abandoned(entry: os.DirEntry[str], now: float) -> bool:
    """Whether a file in ``tmp/`` was left by a writer that died (see the module docstring)."""
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    if now - st.st_mtime > STALE_TEMP_SECONDS:
        return True
    match = _TEMP_NAME.fullmatch(entry.name)
    return match is not None and tag_has_died(match["tag"])


def _open_no_follow(path: str, flags: int) -> int:
    """A regular file's descriptor; FileNotFoundError for anything else a key's path may name
    (a directory, a FIFO, a device): never an object, as the listing (regular files only) says.
    Opened without blocking, since a FIFO's open would wait for a writer; then blocking again."""
    fd = os.open(path, flags | _NO_FOLLOW | _NON_BLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a regular file", path)
        if _NON_BLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _folds_case(directory: Path) -> bool:
    fd, probe = _temp_file(directory, "CaseProbe")
    os.close(fd)
    try:
        return os.path.exists(os.path.join(directory, os.path.basename(probe).lower()))
    finally:
        os.unlink(probe)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _not_a_directory(root: Path) -> StoreFormatError:
    """A store path that is a file, or lies under one (an input file given as --store): a
    location to correct (exit 2), not a store that cannot be used."""
    file = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), root)
    where = "is a file" if file == root else f"lies under {file}, a file"
    return StoreFormatError(
        f"store {root} {where}, not a directory",
        hint="a local store is a directory: give a new or empty one, or an s3idx store",
    )


# What the operating system says when this user may not open or unlink one file.
_DENIALS = (errno.EACCES, errno.EPERM)
_DENIED_READ_HINT = (
    "check the permissions of the object's file and of the directories above it, or run "
    "s3idx as a user who may read them"
)

_DENIED_WRITE_HINT = (
    "check the permissions of the object's directory, or run s3idx as a user who may write it"
)


def _object_error(root: Path, exc: OSError, denied_hint: str) -> S3idxError:
    """One object's file failing: a denial is that object's (commands go on past it), anything
    else the store's."""
    if exc.errno in _DENIALS:
        return ObjectAccessDeniedError(_object_failure(root, exc), hint=denied_hint)
    return _unavailable(root, exc)


def _object_failure(root: Path, exc: OSError) -> str:
    # A rename's failure names the object file second (its first is the temporary file).
    return f"local store {root}: {exc.strerror or exc}: {exc.filename2 or exc.filename or root}"


def _unavailable(root: Path, exc: OSError) -> BackendUnavailableError:
    reason = exc.strerror or str(exc)
    if exc.errno in (*_DENIALS, errno.EROFS):
        hint = "check the directory's permissions, or choose another --store"
    elif exc.errno == errno.ENOSPC:
        hint = "free disk space, then run the command again"
    else:
        hint = None
    where = exc.filename or root
    return BackendUnavailableError(f"local store {root}: {reason}: {where}", hint=hint)
