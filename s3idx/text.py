"""Wording shared by every message: counts said in the singular or the plural."""

from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 document``, ``2 documents``, ``1 entry``, ``3 entries``: counts said one way."""
    word = noun if count == 1 else (plural_form or f"{noun}s")
    return f"{count} {word}"
