"""Is a decoded body the document of its object? The one check every read and ``verify`` make.

A body can pass its sha256 and codec checks and still not be a document of its key: another tool
may put any body under valid s3idx metadata and record its hash. So once a body is decoded and
its hash checked, it must also be a JSON object whose key field is exactly the object's key,
and the index entry its metadata records must be the one derived from it. ``body_problem``
checks a parsed body (reads parse each document held in memory once, and hand that parse on);
``spooled_body_problem`` checks a body too large to hold (a spooled one) as a stream, without
parsing it whole: that it is one JSON object, and its key field (the last one, as a parser keeps
it). The rest (the JSON inside its values, the entry) only ``verify`` checks, parsing it whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from s3idx import codec
from s3idx.query.paths import project

NOT_AN_OBJECT = "body is not a JSON object"


class _Missing:
    pass


_MISSING = _Missing()


class _Kind:
    """A key field holding an object or an array, as the stream check words it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


def not_json(exc: Exception) -> str:
    return f"body is not valid JSON: {exc}"


def body_problem(key: str, body: Any, recorded: codec.MetadataEntry) -> str | None:
    """What makes a parsed body not the document of ``key`` its metadata describes; None if
    nothing does."""
    if not isinstance(body, dict):
        return NOT_AN_OBJECT
    key_field = recorded.key_field
    problem = _key_problem(key, key_field, body.get(key_field, _MISSING))
    if problem is not None:
        return problem
    try:
        derived = codec.untag(project(body, [key_field, *recorded.fields]))
    except ValueError as exc:
        return f"body's indexed fields cannot be read: {exc}"
    in_metadata = {k: v for k, v in recorded.entry.items() if k != codec.LAST_UPDATED}
    differing = differing_fields(in_metadata, derived)
    if differing:
        return (
            f"metadata's index entry differs from the body in {', '.join(differing)} "
            "(the body was replaced or the metadata edited)"
        )
    return None


def _key_problem(key: str, key_field: str, value: Any) -> str | None:
    if value is _MISSING:
        return f"body has no key field {key_field!r}"
    if not isinstance(value, str) or value != key:
        return f"body's key field {key_field!r} is {value!r}, not the object's key"
    return None


def differing_fields(left: dict[str, Any], right: dict[str, Any]) -> list[str]:
    return sorted(
        name
        for name in left.keys() | right.keys()
        if name not in left
        or name not in right
        or codec.canonical(left[name]) != codec.canonical(right[name])
    )


# --- a spooled body, as a stream ------------------------------------------------------------------

# What matters below the top level: brackets, and where a string starts (to skip it).
_DEEP = re.compile(rb'["{}\[\]]')
# Every token of the top level: brackets, commas, colons, a string's start and bare scalars.
_TOP = re.compile(rb'["{}\[\],:]|[^\s"{}\[\],:]+')
# Up to a string's closing quote. Unrolled (runs of plain bytes, then an escape and another
# run): an alternation tried byte by byte read a 50 MB string at ~10 MB/s, this at ~150.
_STRING_PART = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_HELD = 64 << 10  # a top-level name or key value held to be compared; longer is neither


class _Malformed(Exception):
    pass


def spooled_body_problem(key: str, chunks: Iterable[bytes], key_field: str) -> str | None:
    """``body_problem``'s object and key-field checks of a body read as ``chunks``, in bounded
    memory: only the top level is taken apart, strings below it are skipped as they stream."""
    scan = _Scan(key_field)
    try:
        for chunk in chunks:
            scan.feed(chunk)
        value = scan.finish()
    except _Malformed as exc:
        if str(exc) == NOT_AN_OBJECT:
            return NOT_AN_OBJECT
        return not_json(exc)
    return _key_problem(key, key_field, value)


class _Scan:
    """The top level of one JSON object, fed in pieces: the (last) value of its key field."""

    def __init__(self, key_field: str) -> None:
        self._key_field = key_field
        self.found: Any = _MISSING
        self._depth = 0
        # At depth 1: "name" (or "next", after a comma), "colon", "value", "comma"; then "end".
        self._state = "start"
        self._name: Any = None
        self._carry = b""  # a scalar (or a string's last backslash) a piece cut
        self._string: list[bytes] | None = None  # inside a string: its bytes, when held
        self._in_string = False
        self._held = 0

    def feed(self, piece: bytes) -> None:
        buf = self._carry + piece if self._carry else piece
        self._carry = b""
        pos = 0
        end = len(buf)
        while pos < end:
            if self._in_string:
                part = _STRING_PART.match(buf, pos)
                assert part is not None
                stop = part.end()
                if stop < end and buf[stop : stop + 1] == b'"':
                    self._keep(buf[pos:stop])
                    pos = stop + 1
                    self._end_string()
                    continue
                if stop < end:  # a lone backslash at the end: wait for what it escapes
                    self._keep(buf[pos:stop])
                    self._carry = buf[stop:]
                    return
                self._keep(buf[pos:])
                return
            if self._state == "end":
                if buf[pos:].strip():
                    raise _Malformed("bytes after the end of the object")
                return
            match = (_DEEP if self._depth >= 2 else _TOP).search(buf, pos)
            if match is None:
                return  # whitespace, or scalars inside nested values: nothing to see
            token = match.group()
            if match.end() == end and token[:1] not in b'"{}[],:':
                if len(token) > _HELD:
                    raise _Malformed(f"a value of over {_HELD} bytes: {token[:20]!r}")
                self._carry = token  # a scalar the piece may cut
                return
            pos = match.end()
            self._token(token)

    def finish(self) -> Any:
        if self._carry and not self._in_string:
            carry, self._carry = self._carry, b""
            self._token(carry)
        if self._state == "start":
            raise _Malformed("it is empty")
        if self._state != "end":
            raise _Malformed("it ends before its object does")
        return self.found

    def _keep(self, part: bytes) -> None:
        if self._string is not None:
            self._held += len(part)
            if self._held > _HELD:
                self._string = None  # too long to be a field name or a key: not kept
            else:
                self._string.append(part)

    def _end_string(self) -> None:
        self._in_string = False
        if self._depth >= 2:
            return
        held = self._string
        self._string = None
        if held is None:  # too long to be the key field's name or a key
            value: Any = _Kind("a string of over 64 KiB")
        else:
            value = _load(b'"' + b"".join(held) + b'"')
        if self._state in ("name", "next"):
            self._name, self._state = value, "colon"
        elif self._state == "value":
            if self._name == self._key_field:
                self.found = value
            self._state = "comma"
        else:
            raise _Malformed(f"a string where {self._expected()} should be")

    def _token(self, token: bytes) -> None:
        if token == b'"':
            self._in_string = True
            if self._depth < 2:
                self._string, self._held = [], 0
                if self._state == "start":
                    raise _Malformed(NOT_AN_OBJECT)
            return
        if self._depth >= 2:
            if token in (b"{", b"["):
                self._depth += 1
            elif token in (b"}", b"]"):
                self._depth -= 1
                if self._depth == 1:
                    self._state = "comma"
            return
        state = self._state
        if state == "start":
            if token != b"{":
                raise _Malformed(NOT_AN_OBJECT)
            self._depth, self._state = 1, "name"
        elif token == b"}" and state in ("name", "comma"):
            self._depth, self._state = 0, "end"
        elif token == b":" and state == "colon":
            self._state = "value"
        elif token == b"," and state == "comma":
            self._state = "next"
        elif state == "value" and token in (b"{", b"["):
            if self._name == self._key_field:
                self.found = _Kind("an object" if token == b"{" else "an array")
            self._depth = 2
        elif state == "value" and token[:1] not in b"{}[],:":
            value = _load(token)
            if self._name == self._key_field:
                self.found = value
            self._state = "comma"
        else:
            raise _Malformed(f"{token[:20]!r} where {self._expected()} should be")

    def _expected(self) -> str:
        return {
            "name": "a field name",
            "next": "a field name",
            "colon": "':'",
            "value": "a value",
            "comma": "',' or '}'",
        }.get(self._state, "nothing")


def _load(token: bytes) -> Any:
    try:
        return orjson.loads(token)
    except orjson.JSONDecodeError as exc:
        raise _Malformed(str(exc)) from None
