"""A filter as the user types it: JSON text from the command line, a file or stdin.

orjson reads integers beyond 64 bits as floats, silently; a filter holding one is refused here,
as neither MongoDB nor SQLite can hold it. Nesting is bounded before anything recursive runs.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import IO, Any

import orjson

from s3idx import codec
from s3idx.errors import STDIN_CLOSED, STDIN_CLOSED_HINT, UsageError, unreadable_file_hint
from s3idx.limits import (
    INT64_MAX,
    INT64_MIN,
    MAX_NESTING,
    NESTING_MESSAGE,
    big_integer_message,
    json_depth,
)
from s3idx.text import argument_text, wide_encoding

# A filter nested this deep in JSON is deeper than MAX_NESTING levels of operators or values
# (each level takes at most two: an operator object and its array), and is refused before any
# recursive step can run out of stack.
MAX_JSON_DEPTH = 2 * MAX_NESTING + MAX_NESTING + 4
_LONG_DIGITS = re.compile(rb"\d{19}")
STDIN = "-"


def read_filter(
    text: str | None,
    file: str | os.PathLike[str] | None,
    *,
    flag: str = "FILTER",
    stdin: IO[bytes] | None = None,
) -> dict[str, Any]:
    """The filter from ``text`` (named ``flag`` in messages) or from ``file``; {} for neither."""
    if text is not None and file is not None:
        raise UsageError(f"give {flag} or --filter-file, not both")
    if file is not None:
        path = os.fspath(file)
        name = "<stdin>" if path == STDIN else path
        return parse_filter_json(_read(path, stdin), name)
    if text is None or not text.strip():
        return {}
    # Bytes neither the locale nor UTF-8 could read go to the JSON parser as they came: it
    # says they are not UTF-8.
    return parse_filter_json(argument_text(text).encode("utf-8", "surrogateescape"), flag)


def _read(file: str, stdin: IO[bytes] | None) -> bytes:
    try:
        if file == STDIN:
            stream = stdin if stdin is not None else getattr(sys.stdin, "buffer", None)
            if stream is None:  # the process was started without one (`<&-`)
                raise UsageError(f"--filter-file {STDIN_CLOSED}", hint=STDIN_CLOSED_HINT)
            return stream.read()
        with open(file, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise UsageError(
            f"cannot read --filter-file {file}: {exc.strerror or exc}",
            hint=unreadable_file_hint(
                exc, directory="give a file that holds the filter, one JSON object"
            ),
        ) from None


def parse_filter_json(data: bytes, name: str) -> dict[str, Any]:
    """A filter object from JSON; every mistake is a UsageError starting with ``name``."""
    data = data.removeprefix(b"\xef\xbb\xbf")  # a byte order mark, as Windows editors write
    if not data.strip():
        return {}
    if (wide := wide_encoding(data[:4])) is not None:
        encoding, convert = wide
        raise UsageError(f"{name} is {encoding} text, not UTF-8: convert it first, e.g. {convert}")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth limit exceeded" in exc.msg:
            raise UsageError(NESTING_MESSAGE) from None
        if "infinity" in exc.msg and _LONG_DIGITS.search(data):
            _refuse_big_integers(data, name)  # beyond a double: orjson gives up
        raise UsageError(
            f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            hint='write it as a JSON object, e.g. \'{"task_id": "mp-1"}\'',
        ) from None
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")
        raise UsageError(f"{name} must be a JSON object, not {'null' if value is None else kind}")
    if json_depth(value) > MAX_JSON_DEPTH:
        raise UsageError(NESTING_MESSAGE)
    if _LONG_DIGITS.search(data):
        _refuse_big_integers(data, name)
    try:
        untagged = codec.untag(value)
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None
    if not isinstance(untagged, dict):  # {"$date": ...} alone is a date, not an object
        raise UsageError(f"{name} must be a JSON object, not a date")
    return untagged


def _refuse_big_integers(data: bytes, name: str) -> None:
    def check(digits: str) -> int:
        if len(digits) <= 20:
            number = int(digits)
            if INT64_MIN <= number <= INT64_MAX:
                return number
        raise UsageError(f"{name} {big_integer_message(digits)}")

    json.loads(data, parse_int=check)
