"""Text shared by every command: counts said in the singular or the plural; arguments read, and
paths shown, as UTF-8 whatever the locale; input in UTF-16 or UTF-32 told from UTF-8."""

from __future__ import annotations

import os


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 document``, ``2 documents``, ``1 entry``, ``3 entries``: counts said one way."""
    word = noun if count == 1 else (plural_form or f"{noun}s")
    return f"{count} {word}"


def argument_text(text: str) -> str:
    """A command-line argument or environment variable as the text typed: UTF-8, whatever the
    locale says.

    Python decodes both in the locale's encoding; bytes it cannot decode there (UTF-8 typed
    under the C or another non-UTF-8 locale) arrive as lone surrogates, which no key, filter
    or field can hold. Those are read again as UTF-8; bytes that are not UTF-8 either stay as
    they came, for the caller's own check to refuse.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(text).decode("utf-8")
    except UnicodeError:
        return text


# (byte order mark or pattern of the first two ASCII characters, name, iconv's name), UTF-32
# first: its marks and patterns begin as UTF-16's do. Without a mark, JSON's first two
# characters are ASCII, so their zero bytes tell the encoding (RFC 4627, section 3).
# iconv's name is the one that converts the text exactly: with a mark, UTF-16 or UTF-32, which
# read the byte order from it and drop it (UTF-16LE would keep it, as a UTF-8 mark); without
# one, the byte order found, since glibc's iconv reads UTF-16 and UTF-32 without a mark as
# little-endian (tests/cli/test_input_encodings.py runs the command given for each).
_WIDE_ENCODINGS = (
    (b"\xff\xfe\x00\x00", "UTF-32LE with BOM", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32BE with BOM", "UTF-32"),
    (b"\xff\xfe", "UTF-16LE with BOM", "UTF-16"),
    (b"\xfe\xff", "UTF-16BE with BOM", "UTF-16"),
)
_WIDE_PATTERNS = (
    ("x000", "UTF-32LE", "UTF-32LE"),
    ("000x", "UTF-32BE", "UTF-32BE"),
    ("x0x0", "UTF-16LE", "UTF-16LE"),
    ("0x0x", "UTF-16BE", "UTF-16BE"),
)


def wide_encoding(head: bytes) -> tuple[str, str] | None:
    """(name, the iconv command that converts it to UTF-8) when text starting with ``head`` (its
    first 4 bytes) is UTF-16 or UTF-32 rather than UTF-8; None otherwise."""
    for mark, name, iconv_name in _WIDE_ENCODINGS:
        if head.startswith(mark):
            return name, f"iconv -f {iconv_name} -t UTF-8"
    if len(head) < 4:
        return None
    shape = "".join("0" if byte == 0 else "x" for byte in head[:4])
    first = next(byte for byte in head[:4] if byte) if shape != "0000" else 0
    if first not in _JSON_STARTS:  # not JSON in any encoding: leave it to the line's reject
        return None
    for pattern, name, iconv_name in _WIDE_PATTERNS:
        if shape == pattern:
            return name, f"iconv -f {iconv_name} -t UTF-8"
    return None


_JSON_STARTS = frozenset(b'{["-0123456789tfn \t\r\n')


def shown_text(text: str) -> str:
    """``text`` as UTF-8 can carry it (in JSON, say): bytes a path or argument held that were
    not UTF-8 (lone surrogates from the file system or the locale) are shown as ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no decoding made: show its code point
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")
