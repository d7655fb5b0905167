"""Reading input: JSON lines or one JSON array, from files, gzip files or stdin, as a stream.

Each record keeps where it came from (``FILE:LINE``) and its raw bytes, so a rejected record can
be reported precisely and written to ``--rejects`` exactly as it was.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import select
import stat
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from s3idx.engine.gunzip import Gunzip
from s3idx.errors import BackendUnavailableError, UsageError, unreadable_file_hint
from s3idx.text import wide_encoding

_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
STDIN_NAME = "<stdin>"


@dataclass(slots=True)
class Record:
    """One input record: a parsed document, or the reason it could not be parsed."""

    source: str
    line: int
    raw: bytes
    document: Any = None
    error: str | None = None
    whole_input: bool = False  # ``raw`` is a whole input, its own line ends included
    # The line as read (line end included) when ``raw`` differs: a valid JSON line's ``raw`` is
    # the document without the blanks around it, which a reject must still give back as read.
    read: bytes | None = None

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def as_read(self) -> bytes:
        """The bytes to give back when the record is rejected: exactly as they were read."""
        return self.raw if self.read is None else self.read


@dataclass(frozen=True, slots=True)
class InputSource:
    """A file path, or None for a binary stream (stdin) given separately."""

    name: str
    path: Path | None = None
    stream: IO[bytes] | None = None


@dataclass(slots=True)
class ReadProgress:
    """How far reading got: bytes taken from the sources, and records handed on.

    ``record_bytes`` (each record's bytes and its newline) tracks the position in plain input
    more closely than ``bytes_read``, which runs a read buffer ahead; for compressed input only
    ``bytes_read`` is comparable with ``bytes_total`` (``compressed`` says which applies).
    """

    bytes_read: int = 0
    bytes_total: int | None = None
    records: int = 0
    record_bytes: int = 0
    compressed: bool = False
    finished: bool = False

    def share_read(self) -> float | None:
        """The share of the input read so far, 0 to 1; None when its size is not known."""
        if not self.bytes_total or not self.records:
            return None
        if self.finished:
            return 1.0
        position = self.bytes_read if self.compressed else self.record_bytes
        return min(position / self.bytes_total, 1.0)


def file_source(path: str | Path) -> InputSource:
    return InputSource(str(path), Path(path))


def check_input_file(path: str | Path) -> None:
    """Raise ``UsageError`` unless ``path`` is an input file this user can read: one missing, a
    directory, or one it may not read (or whose directories it may not search) is the user's to
    fix, found before anything is stored. A named pipe (``<(...)``, ``/dev/stdin``) is not
    opened to find out (that would wait for its writer, or take its data): its permissions
    are asked of the system instead.
    """
    try:
        status = os.stat(path)
        if stat.S_ISDIR(status.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if stat.S_ISREG(status.st_mode):
            open(path, "rb").close()  # the one sure answer, at no cost for a regular file
        elif not os.access(path, os.R_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as exc:
        raise input_file_error(str(path), exc) from None
    except ValueError:  # a NUL byte in the name: no file can have it
        raise input_file_error(str(path), FileNotFoundError(errno.ENOENT, "")) from None


def input_file_error(name: str, exc: OSError) -> UsageError:
    """The one message for an input file that cannot be opened, whenever that is found."""
    hint = unreadable_file_hint(
        exc, directory=f"give the files in it, e.g. s3idx put {name.rstrip(os.sep)}/*.jsonl"
    )
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return UsageError(f"input file {name} does not exist", hint=hint)
    if isinstance(exc, IsADirectoryError):
        return UsageError(f"input file {name} is a directory", hint=hint)
    return UsageError(f"input file {name} cannot be read: {exc.strerror or exc}", hint=hint)


def stream_source(stream: IO[bytes], name: str = STDIN_NAME) -> InputSource:
    return InputSource(name, None, stream)


def read_records(
    sources: Iterable[InputSource],
    progress: ReadProgress,
    stop: threading.Event | None = None,
) -> Iterator[Record]:
    """Records from every source in turn; bytes read are counted into ``progress``.

    When ``stop`` is set, reading ends as if the input had ended.
    """
    for source in sources:
        if stop is not None and stop.is_set():
            return
        for record in _read_source(source, progress, stop):
            progress.records += 1
            progress.record_bytes += _with_line_end(record.as_read)
            yield record
    progress.finished = True


def _with_line_end(line: bytes) -> int:
    """The size of a line with the line end it had or that reading it supposed."""
    return len(line) if line.endswith(b"\n") else len(line) + 1


def total_size(sources: Iterable[InputSource]) -> int | None:
    total = 0
    for source in sources:
        if source.path is None:
            return None
        try:
            status = source.path.stat()
        except OSError:
            return None
        if not stat.S_ISREG(status.st_mode):
            return None  # a pipe or device: its size says nothing of what it will give
        total += status.st_size
    return total


def _read_source(
    source: InputSource, progress: ReadProgress, stop: threading.Event | None
) -> Iterator[Record]:
    raw_stream = source.stream if source.stream is not None else _open_file(source)
    counted = _CountingReader(raw_stream, progress, stop)
    try:
        buffered = io.BufferedReader(counted, 1 << 20)
        head = buffered.peek(2)[:2]
        stream: io.BufferedReader[Any] = buffered
        gunzip = None
        if head == _GZIP_MAGIC:
            progress.compressed = True
            gunzip = Gunzip(buffered, stop)
            stream = io.BufferedReader(gunzip, 1 << 20)
        try:
            if (wide := wide_encoding(stream.peek(4)[:4])) is not None:
                yield _wide_input(source.name, stream, *wide)
                return
            yield from _records(source.name, _Lines(stream, gunzip))
        except _Cut as cut:
            # Bad input, not a backend failure: one reject where the data stops.
            yield Record(source.name, cut.line, cut.partial, error=cut.reason())
    except OSError as exc:
        raise BackendUnavailableError(
            f"cannot read {source.name}: {exc}",
            hint="the documents read before it are put as usual (the summary counts them); "
            f"put {source.name} again once it can be read",
        ) from None
    finally:
        if source.stream is None:
            raw_stream.close()


def _wide_input(name: str, stream: IO[bytes], encoding: str, convert: str) -> Record:
    """A UTF-16 or UTF-32 input: one reject, its bytes as read, to convert and put again.
    Its lines cannot be told apart as UTF-8 (a newline's zero bytes start the next line)."""
    reason = (
        f"the input is {encoding} text, not UTF-8; nothing in it was read: convert it first, "
        f"e.g. {convert}"
    )
    return Record(name, 1, stream.read(), error=reason, whole_input=True)


def _open_file(source: InputSource) -> IO[bytes]:
    assert source.path is not None
    try:
        return open(source.path, "rb")
    except OSError as exc:  # changed since check_input_file, or never checked
        raise input_file_error(source.name, exc) from None


class _Cut(Exception):
    """The gzip data stops at damage within line ``line``, of which ``partial`` was read (or
    within the document over several lines that starts there: ``within``)."""

    def __init__(self, line: int, partial: bytes, damage: str, within: str = "line") -> None:
        super().__init__(damage)
        self.line = line
        self.partial = partial
        self.damage = damage
        self.within = within

    def reason(self) -> str:
        size = len(self.partial)
        unit = "this line" if self.within == "line" else "the document starting at this line"
        where = (
            f"{size} byte{'' if size == 1 else 's'} into {unit}"
            if size
            else f"before any byte of {unit}"
        )
        return f"the gzip data {self.damage}, {where}; the lines before it were read"


def _records(name: str, lines: _Lines) -> Iterator[Record]:
    """JSON lines, or one JSON array: decided by the first non-blank line (see README).

    A first line that is a complete JSON value by itself makes the input JSON lines, unless it
    is an array and nothing but blank lines follows it (a one-line array file). A first line
    that starts with ``[`` but is not complete by itself starts a multi-line array; one that
    opens a ``{`` it does not close, documents written over several lines (pretty-printed).
    """
    first = lines.next_non_blank()
    if first is None:
        return
    first_line, first_text = first
    first_raw = lines.consumed[-1]
    value = _parse_alone(first_text)
    if value is _INVALID and first_text.startswith(b"["):
        yield from _array_or_lines(name, lines, first_line)
        return
    if value is _INVALID and first_text.startswith(b"{") and _depth(first_text) > 0:
        yield from _documents_or_lines(name, lines, (first_line, first_raw))
        return
    if isinstance(value, list):
        try:
            following = lines.next_non_blank()
        except _Cut as cut:
            # Damage after the array's line: an array file, unless a line had begun after it.
            if cut.partial.strip(_BLANKS):
                yield from _opt(_line_record(name, first_line, first_raw))
            else:
                yield from _array_records(name, lines.consumed)
            raise
        if following is None:
            yield from _array_records(name, lines.consumed)
            return
        following_raw = (following[0], lines.consumed[-1])
        yield from _line_records(name, [(first_line, first_raw), following_raw], lines)
        return
    yield from _line_records(name, [(first_line, first_raw)], lines)


_INVALID = object()
# JSON's whitespace, and nothing else: bytes.strip() would also take VT and FF, which no JSON
# parser accepts around a document, so such a line would be stored while others are refused.
_BLANKS = b" \t\r\n"


def _parse_alone(text: bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _INVALID


class _Lines:
    """Physical lines of a stream, numbered from 1, without a leading UTF-8 BOM.

    ``consumed`` keeps every line read so far, so a multi-line array can still be parsed whole
    (its error positions are then positions in the file). When ``stream`` decompresses
    ``gunzip`` and that ended at damage, the line it ended in (partial, maybe empty) is not a
    line: reading it raises ``_Cut``.
    """

    def __init__(self, stream: IO[bytes], gunzip: Gunzip | None = None) -> None:
        self._stream = stream
        self._gunzip = gunzip
        self.number = 0
        self.consumed: list[bytes] = []
        self.cut: _Cut | None = None  # set by rest() when the data stopped at damage

    def next(self) -> bytes | None:
        line = self._stream.readline()
        if not line.endswith(b"\n"):  # the end of the stream: see whether it is damage
            damage = self._damage()
            if damage is not None:
                raise _Cut(self.number + 1, line, damage)
        if not line:
            return None
        if self.number == 0 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        self.number += 1
        return line

    def next_non_blank(self) -> tuple[int, bytes] | None:
        """(line number, the line stripped) of the next non-blank line, kept in ``consumed``."""
        while (line := self.next()) is not None:
            self.consumed.append(line)
            if line.strip(_BLANKS):
                return self.number, line.strip(_BLANKS)
        return None

    def _damage(self) -> str | None:
        return None if self._gunzip is None else self._gunzip.damage

    def rest(self) -> bytes:
        """Everything from line 1 on; at damage, up to the last whole line (``cut`` says
        where the data stopped and what was read of that line)."""
        data = b"".join(self.consumed) + self._stream.read()
        damage = self._damage()
        if damage is not None:
            end = data.rfind(b"\n") + 1
            self.cut = _Cut(data.count(b"\n", 0, end) + 1, data[end:], damage)
            data = data[:end]
        return data


def _line_records(
    name: str, read_ahead: list[tuple[int, bytes]], lines: _Lines
) -> Iterator[Record]:
    """JSON lines: the lines already read ahead (number, raw line), then the rest, streamed."""
    lines.consumed.clear()  # nothing more to keep: memory stays bounded
    for lineno, line_read_ahead in read_ahead:
        record = _line_record(name, lineno, line_read_ahead)
        if record is not None:
            yield record
    while (line := lines.next()) is not None:
        record = _line_record(name, lines.number, line)
        if record is not None:
            yield record


# How far ahead to read for the first document over several lines to end: beyond, the input
# is taken for JSON lines whose first line was cut short (which no later line can end).
FIRST_DOCUMENT_LOOKAHEAD = 64 << 20

_UNENDED = (
    "invalid JSON: the document starting at this line does not end (its '{' or '[' is never "
    "closed); nothing after this line was stored"
)


def _documents_or_lines(name: str, lines: _Lines, first: tuple[int, bytes]) -> Iterator[Record]:
    """A first line that opens a ``{`` it does not close.

    Documents over several lines (pretty-printed) when a later line closes it: JSON lines are
    each balanced, so only a line that is no JSON line by itself can. Otherwise JSON lines
    whose first line is broken: that line is rejected, every other stored or rejected alone.
    A later line that is a JSON object by itself says so at once (pretty-printers spread an
    object over lines), so a pipe's lines after a broken first one are not held back; not an
    indented one, nor ``{}``, which pretty-printers do write on a line of their own.
    """
    read_ahead = [first]
    depth, size = _depth(first[1]), len(first[1])
    try:
        while depth > 0 and size <= FIRST_DOCUMENT_LOOKAHEAD:
            line = lines.next()
            if line is None:
                break
            read_ahead.append((lines.number, line))
            if _says_json_lines(line):
                break
            depth, size = depth + _depth(line), size + len(line)
    except _Cut:
        lines.consumed.clear()
        for lineno, raw in read_ahead:
            yield from _opt(_line_record(name, lineno, raw))
        raise
    if depth != 0:
        yield from _line_records(name, read_ahead, lines)
        return
    lines.consumed.clear()
    yield _document_record(name, first[0], b"".join(raw for _, raw in read_ahead))
    yield from _documents(name, lines)


def _documents(name: str, lines: _Lines) -> Iterator[Record]:
    """Documents over one line or several, each ending at the line that closes its first
    ``{`` or ``[``; one that never ends is one reject holding the rest of the input."""
    pending: list[bytes] = []
    start = depth = 0
    try:
        while (line := lines.next()) is not None:
            if not pending:
                if not line.strip(_BLANKS):
                    continue
                start = lines.number
            pending.append(line)
            depth += _depth(line)
            if depth <= 0:
                yield _document_record(name, start, b"".join(pending))
                pending, depth = [], 0
    except _Cut as cut:
        if pending:
            raise _Cut(start, b"".join(pending) + cut.partial, cut.damage, "document") from None
        raise
    if pending:
        yield Record(name, start, b"".join(pending), error=_UNENDED)


def _says_json_lines(line: bytes) -> bool:
    """A line only JSON lines would hold: a JSON object by itself, not indented (pretty-printers
    indent what is nested), and not ``{}`` (an empty element, unindented by ``indent=0``)."""
    text = line.rstrip(_BLANKS)
    return text.startswith(b"{") and text != b"{}" and isinstance(_parse_alone(text), dict)


def _document_record(name: str, start: int, text: bytes) -> Record:
    """A document from its lines (``start`` is the first): every token as written, without
    the whitespace between them when it spans lines, so it is stored (and printed) as one
    JSON line; rejected, its lines as they were."""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        reason = f"invalid JSON: {_json_reason(exc, start - 1)}"
        return Record(name, start, text, error=reason)
    body = text.strip(_BLANKS)
    if b"\n" in body:
        body = _BETWEEN_TOKENS.sub(lambda m: m.group(1) or b"", body)
    return Record(name, start, body, document)


# A string (kept) or whitespace outside strings (dropped), in JSON that parsed.
_BETWEEN_TOKENS = re.compile(rb'("(?:[^"\\]|\\.)*")|[ \t\r\n]+')


def _depth(line: bytes) -> int:
    """How many ``{`` and ``[`` a line leaves open (negative: closes), strings aside."""
    depth = 0
    for match in _TOKENS.finditer(line):
        token = match.group()
        if token in (b"{", b"["):
            depth += 1
        elif token in (b"}", b"]"):
            depth -= 1
    return depth


def _array_or_lines(name: str, lines: _Lines, first_line: int) -> Iterator[Record]:
    """A first line starting with ``[`` that is not complete JSON by itself.

    Usually a multi-line array. If the whole is not valid JSON but every later non-blank line
    is a JSON value by itself, it is JSON lines with a broken first line: those lines are
    stored, not swallowed by the array's error.
    """
    data = lines.rest()
    try:
        items = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        numbered = list(enumerate(data.split(b"\n"), start=1))
        later = [(n, line) for n, line in numbered[first_line:] if line.strip(_BLANKS)]
        if later and all(_parse_alone(line.strip(_BLANKS)) is not _INVALID for _, line in later):
            for lineno, line in numbered[first_line - 1 :]:
                yield from _opt(_line_record(name, lineno, line))
        elif _cut_short(exc, lines) and (begun := _begun_array(data)) is not None:
            yield from _array_items(name, begun, orjson.loads(begun))
        else:
            reason = f"invalid JSON array: {_json_reason(exc)}; nothing in this array was stored"
            yield Record(name, exc.lineno, data, error=reason)
    else:
        yield from _array_items(name, data, items)
    if lines.cut is not None:
        raise lines.cut


def _cut_short(exc: orjson.JSONDecodeError, lines: _Lines) -> bool:
    """Whether the array is wrong only in ending where the gzip data stopped (an error before
    that, or after the array's end, is an error in the array)."""
    return lines.cut is not None and exc.pos >= len(exc.doc.rstrip())


def _begun_array(data: bytes) -> bytes | None:
    """An array cut short at the end of a line (``data``), closed after its last whole
    element; None if it has an error before that. A token cannot go on past a line's end, so
    an element complete before the cut is the element as it was."""
    body = data.rstrip(_BLANKS)
    comma = _last_top_level_comma(body)
    start = body.find(b"[")
    for closed in (body + b"]", body[: comma if comma is not None else start + 1] + b"]"):
        try:
            if isinstance(orjson.loads(closed), list):
                return closed
        except orjson.JSONDecodeError:
            continue
    return None


def _last_top_level_comma(data: bytes) -> int | None:
    depth, last = 0, None
    for match in _TOKENS.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
        elif token in (b"]", b"}"):
            depth -= 1
        elif token == b"," and depth == 1:
            last = match.start()
    return last


def _opt(record: Record | None) -> Iterator[Record]:
    if record is not None:
        yield record


def _line_record(name: str, lineno: int, line: bytes) -> Record | None:
    text = line.strip(_BLANKS)
    if not text:
        return None  # blank lines separate nothing and carry nothing, as in jq and mongoimport
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        reason = f"invalid JSON: {_json_reason(exc)}"
        if b"\r" in text:  # the likeliest cause: lines that end with CR alone, read as one
            reason += f"; {_LONE_CR}"
        elif _another_document_follows(exc, text):
            reason += f"; {_SEVERAL_ON_ONE_LINE}"
        return Record(name, lineno, line, error=reason)
    return Record(name, lineno, text, document, read=None if text == line else line)


_LONE_CR = (
    "the line holds CR characters: if the input's lines end with CR alone (old Mac line ends), "
    "convert them to LF first, e.g. tr '\\r' '\\n'"
)


_SEVERAL_ON_ONE_LINE = (
    "another document follows on the same line: write one document per line, e.g. jq -c . FILE"
)


def _another_document_follows(exc: orjson.JSONDecodeError, text: bytes) -> bool:
    return "unexpected content after document" in exc.msg and text[exc.pos :].lstrip(
        b" \t,"
    ).startswith((b"{", b"["))


_NON_FINITE = re.compile(rb"(?<![\w\".])-?(?:NaN|Infinity)(?![\w\"])")


def _json_reason(exc: orjson.JSONDecodeError, lines_before: int = 0) -> str:
    """Why JSON did not parse, at its line in the input (``lines_before`` the text's first)."""
    if "surrogates not allowed" in exc.msg or "not valid UTF-8" in exc.msg:
        return "not valid UTF-8 text"
    line = exc.lineno + lines_before
    where = f"line {line}, column {exc.colno}" if line > 1 else f"column {exc.colno}"
    if "depth limit exceeded" in exc.msg:
        return f"nested deeper than 1024 levels (at {where})"
    if "failed to allocate memory" in exc.msg:  # orjson's word for unterminated deep nesting
        return f"unterminated or too deeply nested (at {where})"
    if "infinity when parsed as double" in exc.msg:  # e.g. an integer of 400 digits
        return f"a number too large to read, beyond a double's ±1.8e308 (at {where})"
    doc = exc.doc.encode() if isinstance(exc.doc, str) else exc.doc
    if _NON_FINITE.search(doc[max(0, exc.pos - 1) : exc.pos + 10]) or "infinity" in exc.msg:
        return f"NaN and Infinity are not JSON numbers (at {where})"
    return f"{exc.msg} at {where}"


def _array_records(name: str, consumed: list[bytes]) -> Iterator[Record]:
    """A one-line array, alone in its input (blank lines aside)."""
    data = b"".join(consumed)
    yield from _array_items(name, data, orjson.loads(data))


def _array_items(name: str, data: bytes, items: list[Any]) -> Iterator[Record]:
    """The elements of a JSON array read whole, each located at the line where it starts."""
    lines = _element_lines(data, len(items))
    exact = _exact_items(data)
    for i, item in enumerate(items):
        yield Record(name, lines[i], _item_json(item, exact[i] if exact else None), item)


def _exact_items(data: bytes) -> list[Any] | None:
    """The array again with its integers exact, when one may lie beyond 64 bits (orjson reads
    those as floats); None otherwise, or when Python's parser cannot go as deep."""
    if not re.search(rb"\d{19}", data):
        return None
    try:
        return json.loads(data)  # type: ignore[no-any-return]
    except (RecursionError, ValueError):
        return None


def _item_json(item: Any, exact: Any) -> bytes:
    # Each element is written again on its own; from the exact reading it keeps big integers.
    if exact is None:
        return orjson.dumps(item)
    try:
        return orjson.dumps(exact)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: Python's json keeps it
        return json.dumps(exact, ensure_ascii=False, separators=(",", ":")).encode()


_TOKENS = re.compile(rb'"(?:[^"\\\n]|\\.)*"|[\[\]{},\n]')


def _element_lines(data: bytes, count: int) -> list[int]:
    """The line on which each top-level array element starts, for messages like FILE:12."""
    lines = [1] * count
    line, depth, index, expect = 1, 0, 0, False
    for match in _TOKENS.finditer(data):
        token = match.group()
        if token == b"\n":
            line += 1
            continue
        if depth == 1 and expect and index < count:
            lines[index] = line
            expect = False
        if token in (b"[", b"{"):
            depth += 1
            if depth == 1:
                expect = True
        elif token in (b"]", b"}"):
            depth -= 1
        elif token == b"," and depth == 1:
            index += 1
            expect = True
    return lines


class _CountingReader(io.RawIOBase):
    """Counts bytes as they are read; on a pipe, hands over what has arrived and heeds ``stop``.

    A pipe fed slowly (a producer in cron) must not wait for a full buffer before its lines are
    stored, and a stop request must not wait for the producer's next line: so a pipe is polled
    with ``select`` and read with ``os.read``, and a stop request reads as the end of input.
    """

    def __init__(
        self, raw: IO[bytes], progress: ReadProgress, stop: threading.Event | None
    ) -> None:
        self._raw = raw
        self._progress = progress
        self._stop = stop
        self._fd = _pollable_fd(raw)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._fd is not None:
            if not self._wait_readable(self._fd):
                return 0
            data = os.read(self._fd, len(buffer))
        else:
            read1 = getattr(self._raw, "read1", None)
            data = read1(len(buffer)) if read1 is not None else self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._progress.bytes_read += n
        return n

    def _wait_readable(self, fd: int) -> bool:
        while True:
            if self._stop is not None and self._stop.is_set():
                return False
            readable, _, _ = select.select([fd], [], [], 0.2)
            if readable:
                return True


def _pollable_fd(raw: IO[bytes]) -> int | None:
    """The descriptor of a pipe, socket or terminal that select() can wait on, else None."""
    if sys.platform == "win32":
        return None
    try:
        fd = raw.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode):
        return fd
    return None
