"""Decompressing gzip input as a stream that gives every byte it can before any damage.

``gzip.GzipFile`` raises on damage and loses what the failing read had decompressed (up to a
whole buffer), and a ``zlib`` call that fails loses its output too. ``Gunzip`` never raises for
bad data: it hands on everything that decompresses before the damage, then ends, and says in
``damage`` why it ended early. Several members one after the other are one stream, as in
``gzip -dc``; zero bytes after a member are padding, as in ``GzipFile``.
"""

from __future__ import annotations

import io
import threading
import zlib
from typing import Any

_GZIP = 16 + zlib.MAX_WBITS  # zlib reads the gzip header and checks the CRC-32 and length
_CHUNK = 64 * 1024  # compressed bytes taken at a time

TRUNCATED = "ends early (the file is truncated)"
_DAMAGE = {
    "incorrect data check": "its CRC-32 checksum does not match the data",
    "incorrect length check": "its length field does not match the data",
    "incorrect header check": "what follows a gzip member is not gzip",
}


class Gunzip(io.RawIOBase):
    """The decompressed bytes of ``compressed``: all that decompress before any damage.

    At damage the read in progress returns what decompressed before it; the next read returns
    0 (the end) and ``damage`` says what was wrong (e.g. ``ends early (the file is truncated)``).
    Input that ends because ``stop`` was set is not damage. Memory stays bounded: one chunk of
    input and at most one read's worth of output are held.
    """

    def __init__(self, compressed: io.BufferedIOBase, stop: threading.Event | None = None) -> None:
        self._in = compressed
        self._stop = stop
        self._inflate = zlib.decompressobj(_GZIP)
        self._head = b""  # input read past a member's end: the start of the next member
        self._left = b""  # decompressed bytes salvaged at damage, not yet handed on
        self._ended = False
        self.damage: str | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        while not self._left and not self._ended:
            self._left = self._decompress(size)
        out, self._left = self._left[:size], self._left[size:]
        buffer[: len(out)] = out
        return len(out)

    def _decompress(self, limit: int) -> bytes:
        """Some decompressed bytes (maybe none yet); at the end or at damage, ``_ended`` set."""
        if self._inflate.eof and not self._next_member():
            self._ended = True
            return b""
        data = self._inflate.unconsumed_tail or self._head or self._read()
        self._head = b""
        if not data:
            self._end_of_input()
            return b""
        before = self._inflate.copy()
        try:
            return self._inflate.decompress(data, limit)
        except zlib.error as exc:
            self._ended = True
            self.damage = _damage(exc)
            return _salvage(before, data)

    def _read(self) -> bytes:
        # What has arrived, up to a chunk: a pipe fed slowly is not waited on for a whole chunk.
        return self._in.read1(_CHUNK)

    def _next_member(self) -> bool:
        """After a member: start the next one, if any input (other than zero padding) follows."""
        rest = self._inflate.unused_data.lstrip(b"\0")
        while not rest:
            more = self._read()
            if not more:
                return False
            rest = more.lstrip(b"\0")
        self._inflate = zlib.decompressobj(_GZIP)
        self._head = rest
        return True

    def _end_of_input(self) -> None:
        self._ended = True
        if self._stop is not None and self._stop.is_set():
            return  # reading was stopped: the input did not end, it was left
        self.damage = TRUNCATED


def _salvage(before: Any, data: bytes) -> bytes:
    """What ``data`` decompresses to up to the byte at which it fails, from the decompressor as
    it was before ``data`` (zlib hands on nothing from a call that fails, so it is fed byte by
    byte; at most one chunk, and only once per input)."""
    out = []
    view = memoryview(data)
    for i in range(len(data)):
        try:
            out.append(before.decompress(view[i : i + 1]))
        except zlib.error:
            break
    return b"".join(out)


def _damage(exc: zlib.error) -> str:
    detail = str(exc).rpartition(": ")[2]
    return f"is damaged ({_DAMAGE.get(detail, f'corrupt compressed data: {detail}')})"
