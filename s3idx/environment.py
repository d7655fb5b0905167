"""What the command line reads from and writes to, as one object the caller can replace.

The CLI builds one ``Environment`` for the process (``Environment.from_process``) and renders
through it; nothing below the CLI reads ``sys.stdin``/``sys.stdout``/``sys.stderr`` or asks
whether they are terminals. A test or an embedding program passes its own, as httpie's
``Environment`` is passed: ``s3idx.cli.main(args, env=Environment(...))``, or
``obj=Environment(...)`` to a click/Typer runner invoking ``s3idx.cli.app``.
"""

from __future__ import annotations

import errno
import io
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, TextIO, cast


def is_terminal(stream: IO[Any] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@dataclass(frozen=True)
class Environment:
    """Standard streams, whether each is a terminal, the clock and the environment variables.

    ``environ`` is what the CLI reads settings (``S3IDX_*``, via ``config.py``),
    ``S3IDX_PROGRESS_INTERVAL`` and ``S3IDX_DEBUG`` from; the S3 and MongoDB client libraries
    still read the process's own environment (AWS credentials and profiles).

    ``stdout`` is text; ``stdout_binary`` is its byte stream underneath (documents are written
    as bytes), so the two must be flushed in turn, as with ``sys.stdout``. ``stdin`` is bytes
    (input is JSON lines in any encoding the reader accepts), or None when the process has none.
    """

    stdin: BinaryIO | None
    stdout: TextIO
    stderr: TextIO
    stdin_isatty: bool = False
    stdout_isatty: bool = False
    stderr_isatty: bool = False
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    clock: Callable[[], float] = time.monotonic

    @property
    def stdout_binary(self) -> BinaryIO:
        return self.stdout.buffer

    @classmethod
    def from_process(cls) -> Environment:
        """The process's own streams as they are now (a test runner may have replaced them)."""
        return cls(
            stdin=getattr(sys.stdin, "buffer", None),  # None: no stdin (closed, or not a file)
            # A stream the caller closed (`>&-`) is None in sys: output to it fails when
            # written, saying so; messages to a closed stderr have nowhere to go, and the exit
            # status alone says how the command went.
            stdout=sys.stdout if sys.stdout is not None else cast(TextIO, ClosedOutput()),
            stderr=(
                cast(TextIO, MessageStream(sys.stderr))
                if sys.stderr is not None
                else open(os.devnull, "w")
            ),
            stdin_isatty=is_terminal(sys.stdin),
            stdout_isatty=is_terminal(sys.stdout),
            stderr_isatty=is_terminal(sys.stderr),
            environ=os.environ,
        )


class MessageStream:
    """The process's stderr, for messages: a write that fails (its reader went away, as in
    ``2>&1 | head -1``; a full disk) loses that message and every later one, and nothing else.

    Messages say how the work went; the exit status says it too, and must not turn into
    "internal error" (1) because they could not be shown. The descriptor is pointed at
    devnull, so the interpreter's last flush of what the stream still holds succeeds (a
    failing flush at exit would make the status 120).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self._lose()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._lose()

    def _lose(self) -> None:
        self._gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
            self._stream.flush()  # what it held goes to devnull now
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the stream's own
        return getattr(self._stream, name)


class ClosedOutput(io.TextIOBase):
    """The stdout of a process started with it closed: every write fails, as a write to a
    closed descriptor does (EBADF), with a message that says what happened."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "it is closed")

    def flush(self) -> None:
        pass  # nothing was ever written

    @property
    def buffer(self) -> BinaryIO:
        return cast(BinaryIO, _ClosedBinary())


class _ClosedBinary(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise OSError(errno.EBADF, "it is closed")
