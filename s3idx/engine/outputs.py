"""Output files (``--rejects``, ``get -o``): never one of the command's inputs, however spelled;
and every output, stdout included, says which one failed when a write fails.

Opening an output truncates it, so a check after opening is too late: ``put in.jsonl --rejects
in.jsonl`` would read an empty file and store nothing. Each output is compared, before anything
is opened for writing, with every file the command reads or keeps: its input files (stdin
included), the config file, the SQLite index (and its journal files) and the local store's
directory. A path is compared both by where it leads (symlinks, ``..``, relative spellings
resolved) and by identity (device and inode: hard links, ``/dev/stdin``), found with ``stat``,
never by opening it: a pipe, FIFO or socket has a device and inode too, and opening the pipe on
stdin for writing would hold its write end, so the input would never end (opening a FIFO for
writing may also wait for ever).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from s3idx.backends import parse_index_location, parse_store_location
from s3idx.config import Settings, config_path
from s3idx.errors import OutputError, UsageError, cannot_write_output
from s3idx.frozen import Frozen, init_field

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


class _Kept(Frozen):
    """A file, or with ``tree`` a directory and all it holds, that no output may replace."""

    __slots__ = ("description", "identity", "path", "tree")
    _fields = ("description", "path", "identity", "tree")
    description: str
    path: Path | None
    identity: tuple[int, int] | None
    tree: bool

    def __init__(
        self,
        description: str,
        path: Path | None,
        identity: tuple[int, int] | None = None,
        tree: bool = False,
    ) -> None:
        init_field(self, "description", description)
        init_field(self, "path", path)
        init_field(self, "identity", identity)
        init_field(self, "tree", tree)


def refuse_outputs_over_inputs(
    outputs: Mapping[str, str | os.PathLike[str] | None],
    *,
    settings: Settings,
    config_file: str | os.PathLike[str] | None = None,
    inputs: Sequence[str] = (),
    stdin: IO[bytes] | None = None,
) -> None:
    """Raise UsageError if an output (option name to path) is any file the command keeps.

    ``inputs`` are input paths as given, ``-`` meaning ``stdin``.
    """
    kept = list(_kept_files(settings, config_file, inputs, stdin))
    for option, output in outputs.items():
        if output is None:
            continue
        for item in kept:
            if _overlaps(Path(output), item):
                raise UsageError(
                    f"refusing to write: {option} {output} is {item.description}",
                    hint=f"give {option} a path of its own",
                )


def open_output(
    path: str | os.PathLike[str], option: str, *, replace_when_written: bool = False
) -> IO[bytes]:
    """Open an output file for writing, a user's mistake (a directory, no access) said plainly;
    a write that fails later (a full disk) raises ``OutputError`` naming it.

    With ``replace_when_written`` the file is emptied only when its first byte is written, as
    ``aws s3 cp`` replaces its target only with what it got: a ``get`` that finds nothing leaves
    an existing file as it was, and creates none.
    """
    name = os.fspath(path)
    existed = os.path.lexists(name)
    try:
        opened = open(name, "ab" if replace_when_written else "wb")  # noqa: SIM115
    except OSError as exc:
        raise cannot_write_output(option, name, exc) from None
    if replace_when_written:
        opened = _EmptiedOnFirstWrite(opened, name, created=not existed)  # type: ignore[assignment]
    return guard_output(opened, f"{option} {name}")


def replace_now(opened: IO[bytes]) -> None:
    """For a file ``open_output`` opened with ``replace_when_written``: empty it now even if
    nothing was written (it holds what the run that just ended wrote, maybe nothing)."""
    opened.replace()  # type: ignore[attr-defined]


class _EmptiedOnFirstWrite:
    """A file opened for appending (which neither empties nor, if it exists, creates it) that
    is emptied just before its first write, and removed at close if this run created it and
    wrote nothing."""

    def __init__(self, opened: IO[bytes], path: str, *, created: bool) -> None:
        self._file = opened
        self._path = path
        self._created = created
        self._written = False

    def write(self, data: bytes) -> int:
        if not self._written:
            self._written = True
            if stat.S_ISREG(os.fstat(self._file.fileno()).st_mode):  # not a pipe or /dev/full
                self._file.truncate(0)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def replace(self) -> None:
        """Empty the file now even if nothing was written: it holds what the run that just
        ended wrote, which may be nothing (``put --rejects`` of a run without rejects)."""
        self.write(b"")

    def close(self) -> None:
        self._file.close()
        if self._created and not self._written:
            with contextlib.suppress(OSError):
                os.unlink(self._path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


_Stream = TypeVar("_Stream", bound=IO[Any])


def guard_output(stream: _Stream, name: str) -> _Stream:
    """``stream``, whose failed writes and flushes raise ``OutputError`` naming ``name``.

    A broken pipe stays a ``BrokenPipeError``: the reader left (``| head``), nothing failed.
    """
    return GuardedOutput(stream, name)  # type: ignore[return-value]


class GuardedOutput:
    """A stream's writes with an ``OSError`` turned into an ``OutputError``; the rest of the
    stream as it is. A text stream's ``buffer`` (its bytes) is guarded under the same name."""

    def __init__(self, stream: IO[Any], name: str) -> None:
        self._stream = stream
        self._name = name
        self._buffer: GuardedOutput | None = None

    def write(self, data: Any) -> int:
        return self._guarded(self._stream.write, data)  # type: ignore[no-any-return]

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def close(self) -> None:
        self._guarded(self._stream.close)  # closing flushes what is left

    def _guarded(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(self._name, exc) from None

    @property
    def buffer(self) -> GuardedOutput:
        if self._buffer is None:
            self._buffer = GuardedOutput(self._stream.buffer, self._name)  # type: ignore[attr-defined]
        return self._buffer

    def __enter__(self) -> GuardedOutput:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        # What stopped the command is the error to report, not a close that fails after it.
        with contextlib.suppress(OSError):
            self._stream.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _kept_files(
    settings: Settings,
    config_file: str | os.PathLike[str] | None,
    inputs: Iterable[str],
    stdin: IO[bytes] | None,
) -> Iterable[_Kept]:
    for name in inputs:
        if name == "-":
            identity = _stream_identity(stdin)
            if identity is not None:
                yield _Kept("the input file on stdin", None, identity)
        else:
            yield _kept(f"the input file {name}", Path(name))
    config = Path(config_file) if config_file is not None else config_path()
    yield _kept(f"the config file {config}", config)
    index = parse_index_location(settings.index)
    if index.path is not None:
        yield _kept(f"the SQLite index {index.path}", index.path)
        for suffix in SQLITE_SIDE_FILES:
            side = Path(f"{index.path}{suffix}")
            yield _kept(f"a file of the SQLite index {index.path}", side)
    store = parse_store_location(settings.store)
    if store.path is not None:
        yield _Kept(f"inside the local store {store.path}", store.path, tree=True)


def _kept(description: str, path: Path) -> _Kept:
    return _Kept(description, path, _file_identity(path))


def _overlaps(output: Path, kept: _Kept) -> bool:
    identity = _file_identity(output)
    if identity is not None and identity == kept.identity:
        return True
    if kept.path is None:
        return False
    target, protected = os.path.realpath(output), os.path.realpath(kept.path)
    if kept.tree:
        return target == protected or target.startswith(protected.rstrip(os.sep) + os.sep)
    return target == protected


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what a path leads to (symlinks and ``/proc/self/fd/N`` followed), if it
    is a file, pipe or socket; None otherwise."""
    try:
        return _identity(os.stat(path))
    except (OSError, ValueError):
        return None


def _stream_identity(stream: IO[bytes] | None) -> tuple[int, int] | None:
    """(device, inode) of the file, pipe or socket a stream reads (``< in.jsonl``, ``cat |``),
    else None."""
    if stream is None:
        return None
    try:
        return _identity(os.fstat(stream.fileno()))
    except (AttributeError, OSError, ValueError):
        return None


def _identity(st: os.stat_result) -> tuple[int, int] | None:
    """The one identity rule: a regular file, a pipe or FIFO, or a socket is one thing however
    it is named. A device (``/dev/null``, a terminal) is not: writing there replaces nothing."""
    kept = stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)
    return (st.st_dev, st.st_ino) if kept else None
