"""The Python API's collection arguments, checked before anything is read, written or recorded.

A string is an iterable of its characters, so ``engine.delete("mp-1")`` would delete the keys
"m", "p", "-" and "1", and ``fields="task_id"`` would record seven one-letter fields in the index
for good. A string, bytes, a path or a mapping given where a collection of them is expected is
therefore refused by name (a UsageError, exit status 2), as the command line refuses a bad flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any

from s3idx.errors import UsageError
from s3idx.sharding import Shard


def check_collection(argument: str, value: Any, items: str) -> None:
    """UsageError when ``value``, meant as a collection of ``items``, is one item itself."""
    kind = single_kind(value)
    if kind is None:
        return
    # A string or bytes iterates: say what it would have meant; a path does not.
    meant = "" if kind == "a path" else f": each of its characters would be taken for {_one(items)}"
    raise UsageError(
        f"{argument} must be a list of {items}, not {kind} ({shown_value(value)}){meant}",
        hint=f"give a list, even of one: [{shown_value(value)}]",
    )


def check_documents(documents: Any) -> None:
    """UsageError when ``documents`` is one document, a string or bytes, not an iterable of
    documents (iterating a dict would take each of its field names for a document)."""
    kind = "one document (a mapping)" if isinstance(documents, Mapping) else None
    kind = kind or single_kind(documents)
    if kind is None:
        return
    raise UsageError(
        f"documents must be an iterable of documents (dicts), not {kind}",
        hint="give a list, even of one: put_documents([document])",
    )


def check_backend(argument: str, value: Any) -> None:
    """UsageError when ``Engine`` is given a location (a string or a path) for a backend."""
    kind = single_kind(value)
    if kind is None:
        return
    raise UsageError(
        f"Engine(store, index): {argument} must be a backend object, not {kind} "
        f"({shown_value(value)})",
        hint="for locations (a directory, s3://BUCKET/PREFIX, a SQLite path, mongodb://HOST/DB), "
        "use s3idx.open_engine(store=..., index=...)",
    )


def check_shard(shard: Any) -> None:
    """UsageError unless ``shard`` is None or a Shard ("0/2" would fail deep inside)."""
    if shard is None or isinstance(shard, Shard):
        return
    raise UsageError(
        f"shard must be a s3idx.Shard, not {shown_value(shard)}",
        hint="give Shard(I, N), e.g. Shard(0, 4) for the first of 4; "
        "s3idx.sharding.parse_shard(text, os.environ) reads 'I/N' or 'auto'",
    )


def single_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bytes | bytearray):
        return "bytes"
    if isinstance(value, PathLike):
        return "a path"
    return None


def shown_value(value: Any) -> str:
    # A path as the string it stands for; anything else as Python writes it, cut short.
    shown = repr(str(value)) if isinstance(value, PathLike) else repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _one(items: str) -> str:
    """'keys' -> 'a key', 'field paths' -> 'a field path', 'input files' -> 'an input file'."""
    singular = items.removesuffix("s")
    return f"{'an' if singular[0] in 'aeiou' else 'a'} {singular}"
