"""Text shared by every command: counts said in the singular or the plural, and arguments read
as UTF-8."""

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
