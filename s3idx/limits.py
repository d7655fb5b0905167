"""Limits every backend shares, and how messages state them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from s3idx.errors import UsageError

T = TypeVar("T")

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A document read is held in memory up to this many bytes of JSON, spooled to a temporary file
# beyond (engine/read.py); here so the engine's default needs no import of the reading code.
SPOOL_THRESHOLD = 8 << 20
# MongoDB nests BSON documents at most 100 levels deep and parses filters at most 100 levels of
# operators deep; s3idx holds every backend to the same, so a filter or an entry that works on
# SQLite works on MongoDB.
MAX_NESTING = 100
# Objects in a row that failed after every retry (or were denied) before a command that goes
# on past one object's failure gives up on the store: more than one object's bad luck, fewer
# than would keep a dead endpoint busy for long. The S3 store's per-key deletes stop sending
# at the same count.
FAILED_IN_A_ROW = 10


NESTING_MESSAGE = f"the filter is nested deeper than {MAX_NESTING} levels (MongoDB's limit)"


def big_integer_message(digits: str) -> str:
    """``holds an integer of N digits, beyond 64-bit integers (MIN to MAX)``."""
    count = len(digits.lstrip("+-"))
    return (
        f"holds an integer of {count} digits, beyond 64-bit integers ({INT64_MIN} to {INT64_MAX})"
    )


def json_depth(value: Any) -> int:
    """How deep objects and arrays nest in a parsed JSON value (without recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_count(name: str, value: Any, low: int, high: int) -> int:
    """``value`` when it is a whole number from ``low`` to ``high``; else a UsageError naming
    ``name``. For counts the library takes (workers, batch sizes, …): one too large would only
    fail later, deep in a backend (an overflow, a thread per unit)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise UsageError(f"{name} must be from {low:,} to {high:,}, got {value}")
    return value


DELETE_BATCH = 1000  # S3 DeleteObjects takes at most 1000 keys


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of at most ``size`` items, in order (``itertools.batched`` from Python 3.12)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
